//! The node part of K3s's embedded cloud controller (k8s.io/cloud-provider's
//! node controller over K3s's `k3s` provider, v1.21): a Node registered with
//! the `node.cloudprovider.kubernetes.io/uninitialized` taint (kubelets with
//! `--cloud-provider=external`, K3s's default) gets `spec.providerID`
//! `k3s://<node>` (unless it has one), the instance-type labels
//! `node.kubernetes.io/instance-type` and `beta.kubernetes.io/instance-type`
//! = `k3s`, and loses the taint; K3s has no zones, so no topology labels.
//!
//! Addresses come from the agent's annotations (labels in older agents):
//! InternalIPs from `k3s.io/internal-ip` and ExternalIPs from
//! `k3s.io/external-ip` (comma lists), the Hostname from `k3s.io/hostname`
//! (the kubelet's Hostname address is kept when there is none). They replace
//! `status.addresses` of every initialised node that has any, at
//! initialisation and whenever they change (upstream also rechecks every 5
//! minutes; reacting to the change is the same end state, sooner). With no
//! address annotations yet, a 2021 K3s initialises anyway and fills the
//! addresses later, as here. When the kubelet was given `--node-ip`
//! (annotation `alpha.kubernetes.io/provided-node-ip`), that IP must be among
//! them: until it is, the node stays uninitialised and its addresses alone.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{Value, json};

use super::{Controller, log, name_of, object_field, str_at, taints_of, update};
use crate::store::{Event, Store};

/// The log name (upstream's Event source; it records no Events on success).
const COMPONENT: &str = "cloud-node-controller";
/// The taint a kubelet with an external cloud provider registers with.
pub const UNINITIALIZED: &str = "node.cloudprovider.kubernetes.io/uninitialized";
/// The kubelet's `--node-ip`, with an external cloud provider.
const PROVIDED_IP: &str = "alpha.kubernetes.io/provided-node-ip";
/// K3s's provider name and instance type.
const PROVIDER: &str = "k3s";
/// The agent's address annotations.
const INTERNAL_IP: &str = "k3s.io/internal-ip";
const EXTERNAL_IP: &str = "k3s.io/external-ip";
const HOSTNAME: &str = "k3s.io/hostname";

/// What a pass did to one node.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    /// Nothing to do.
    Unchanged,
    /// Taint removed, providerID and labels set (and addresses, if any).
    Initialized,
    /// Addresses replaced.
    Addresses,
    /// Not yet: why.
    Waiting(&'static str),
}

/// The cloud node controller.
#[derive(Debug, Default)]
pub struct CloudNodes {
    /// Nodes whose wait was logged (once, until it ends).
    waiting: HashSet<String>,
}

impl CloudNodes {
    /// A controller with nothing seen yet.
    pub fn new() -> Self {
        Self::default()
    }
}

/// The value of an annotation, else of a label, with that key ("" if neither).
fn annotation_or_label<'a>(node: &'a Value, key: &str) -> &'a str {
    let from = |field: &str| {
        node.pointer(&format!("/metadata/{field}"))
            .and_then(|m| m.get(key))
            .and_then(Value::as_str)
            .unwrap_or("")
    };
    match from("annotations") {
        "" => from("labels"),
        value => value,
    }
}

/// The addresses K3s's provider reports for `node`: InternalIPs,
/// ExternalIPs, Hostname, in that order, as (type, address).
fn provider_addresses(node: &Value) -> Vec<(String, String)> {
    let mut addresses = Vec::new();
    for (key, kind) in [(INTERNAL_IP, "InternalIP"), (EXTERNAL_IP, "ExternalIP")] {
        for ip in annotation_or_label(node, key).split(',') {
            let ip = ip.trim();
            if !ip.is_empty() {
                addresses.push((kind.to_owned(), ip.to_owned()));
            }
        }
    }
    let hostname = annotation_or_label(node, HOSTNAME);
    if !hostname.is_empty() {
        addresses.push(("Hostname".to_owned(), hostname.to_owned()));
    }
    addresses
}

/// `status.addresses` as (type, address).
fn current_addresses(node: &Value) -> Vec<(String, String)> {
    node.pointer("/status/addresses")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .map(|a| {
                    (
                        str_at(a, "/type").to_owned(),
                        str_at(a, "/address").to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The addresses `node` should have, if the provider has any for it and they
/// include the kubelet's `--node-ip`; `Err` when they lack it.
fn wanted_addresses(node: &Value) -> Result<Option<Vec<(String, String)>>, &'static str> {
    let mut addresses = provider_addresses(node);
    let provided = node
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(PROVIDED_IP))
        .and_then(Value::as_str);
    if let Some(ip) = provided {
        if !addresses.iter().any(|(_, a)| a == ip) {
            return Err("failed to find kubelet node IP from cloud provider");
        }
    }
    if addresses.is_empty() {
        return Ok(None);
    }
    if !addresses.iter().any(|(kind, _)| kind == "Hostname") {
        addresses.extend(
            current_addresses(node)
                .into_iter()
                .filter(|(kind, _)| kind == "Hostname"),
        );
    }
    Ok(Some(addresses))
}

/// Brings one node to what the cloud controller wants of it.
fn reconcile(node: &mut Value) -> Outcome {
    let name = name_of(node).to_owned();
    let tainted = taints_of(node).iter().any(|t| t.key == UNINITIALIZED);
    let addresses = match wanted_addresses(node) {
        Ok(addresses) => addresses,
        // Upstream retries the initialisation later; an initialised node
        // just keeps its addresses.
        Err(why) if tainted => return Outcome::Waiting(why),
        Err(_) => None,
    };
    let mut outcome = Outcome::Unchanged;
    if tainted {
        let Some(spec) = object_field(node, "spec") else {
            return Outcome::Unchanged;
        };
        // A providerID the kubelet was given (`--provider-id`) stands.
        if spec
            .get("providerID")
            .and_then(Value::as_str)
            .unwrap_or("")
            .is_empty()
        {
            spec.insert("providerID".into(), json!(format!("{PROVIDER}://{name}")));
        }
        let kept: Vec<Value> = spec
            .get("taints")
            .and_then(Value::as_array)
            .map(|list| {
                list.iter()
                    .filter(|t| t.get("key").and_then(Value::as_str) != Some(UNINITIALIZED))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        // Go omits an empty taint list.
        if kept.is_empty() {
            spec.remove("taints");
        } else {
            spec.insert("taints".into(), Value::Array(kept));
        }
        let Some(metadata) = object_field(node, "metadata") else {
            return Outcome::Unchanged;
        };
        let labels = metadata.entry("labels").or_insert_with(|| json!({}));
        if !labels.is_object() {
            *labels = json!({});
        }
        if let Some(labels) = labels.as_object_mut() {
            labels.insert("beta.kubernetes.io/instance-type".into(), json!(PROVIDER));
            labels.insert("node.kubernetes.io/instance-type".into(), json!(PROVIDER));
        }
        outcome = Outcome::Initialized;
    }
    if let Some(addresses) = addresses {
        if addresses != current_addresses(node) {
            let list: Vec<Value> = addresses
                .into_iter()
                .map(|(kind, address)| json!({"address": address, "type": kind}))
                .collect();
            if let Some(status) = object_field(node, "status") {
                status.insert("addresses".into(), Value::Array(list));
                if outcome == Outcome::Unchanged {
                    outcome = Outcome::Addresses;
                }
            }
        }
    }
    outcome
}

impl Controller for CloudNodes {
    const NAME: &'static str = COMPONENT;

    fn wants(&self, event: &Event) -> bool {
        event.resource == "nodes"
    }

    fn period(&self) -> Duration {
        Duration::from_secs(30)
    }

    fn pass(&mut self, store: &Store) {
        let (nodes, _) = store.list("nodes", None, |n| !name_of(n).is_empty());
        self.waiting
            .retain(|w| nodes.iter().any(|n| name_of(n) == w));
        for node in &nodes {
            let name = name_of(node);
            let mut outcome = Outcome::Unchanged;
            let written = update(store, "nodes", "", name, |node| {
                outcome = reconcile(node);
                matches!(outcome, Outcome::Initialized | Outcome::Addresses)
            });
            match (written, outcome) {
                (Ok(Some(_)), Outcome::Initialized) => {
                    self.waiting.remove(name);
                    log(
                        COMPONENT,
                        format_args!("initialized node {name} (providerID {PROVIDER}://{name})"),
                    );
                }
                (Ok(_), Outcome::Waiting(why)) => {
                    if self.waiting.insert(name.to_owned()) {
                        log(
                            COMPONENT,
                            format_args!("node {name} not initialized yet: {why}"),
                        );
                    }
                }
                (Err(e), _) => log(COMPONENT, format_args!("cannot update node {name}: {e}")),
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tainted(annotations: Value) -> Value {
        json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": "board1", "labels": {"kubernetes.io/hostname": "board1"},
                         "annotations": annotations},
            "spec": {"taints": [
                {"key": UNINITIALIZED, "value": "true", "effect": "NoSchedule"},
                {"key": "dedicated", "value": "x", "effect": "NoSchedule"}
            ]},
            "status": {"addresses": [
                {"type": "InternalIP", "address": "192.168.1.9"},
                {"type": "Hostname", "address": "board1"}
            ]}
        })
    }

    #[test]
    fn initialisation_sets_provider_id_labels_addresses_and_drops_the_taint() {
        let mut node = tainted(json!({
            INTERNAL_IP: "10.0.0.5,fd00::5", EXTERNAL_IP: "203.0.113.7", HOSTNAME: "board1.lan"
        }));
        assert_eq!(reconcile(&mut node), Outcome::Initialized);
        assert_eq!(node["spec"]["providerID"], "k3s://board1");
        assert_eq!(
            node["spec"]["taints"],
            json!([{"key": "dedicated", "value": "x", "effect": "NoSchedule"}])
        );
        assert_eq!(
            node["metadata"]["labels"]["node.kubernetes.io/instance-type"],
            "k3s"
        );
        assert_eq!(
            node["metadata"]["labels"]["beta.kubernetes.io/instance-type"],
            "k3s"
        );
        assert_eq!(
            node["metadata"]["labels"]["kubernetes.io/hostname"],
            "board1"
        );
        assert_eq!(
            node["status"]["addresses"],
            json!([
                {"type": "InternalIP", "address": "10.0.0.5"},
                {"type": "InternalIP", "address": "fd00::5"},
                {"type": "ExternalIP", "address": "203.0.113.7"},
                {"type": "Hostname", "address": "board1.lan"}
            ])
        );
        // Idempotent.
        assert_eq!(reconcile(&mut node), Outcome::Unchanged);

        // Later address changes follow the annotations.
        node["metadata"]["annotations"][INTERNAL_IP] = json!("10.0.0.6");
        assert_eq!(reconcile(&mut node), Outcome::Addresses);
        assert_eq!(node["status"]["addresses"][0]["address"], "10.0.0.6");
        assert_eq!(node["status"]["addresses"].as_array().unwrap().len(), 3);
    }

    #[test]
    fn without_annotations_the_kubelets_addresses_stay() {
        let mut node = tainted(json!({}));
        node["spec"]["providerID"] = json!("aws:///i-123");
        node["spec"]["taints"].as_array_mut().unwrap().pop();
        assert_eq!(reconcile(&mut node), Outcome::Initialized);
        assert_eq!(node["spec"]["providerID"], "aws:///i-123");
        assert!(node["spec"].get("taints").is_none());
        assert_eq!(node["status"]["addresses"][0]["address"], "192.168.1.9");

        // Labels (older agents) work too; the kubelet's Hostname is kept.
        let mut labelled = tainted(Value::Null);
        labelled["metadata"]["labels"][INTERNAL_IP] = json!("10.0.0.8");
        assert_eq!(reconcile(&mut labelled), Outcome::Initialized);
        assert_eq!(
            labelled["status"]["addresses"],
            json!([{"type": "InternalIP", "address": "10.0.0.8"}, {"type": "Hostname", "address": "board1"}])
        );
    }

    #[test]
    fn a_provided_node_ip_must_be_among_the_addresses() {
        let mut node = tainted(json!({PROVIDED_IP: "10.0.0.5"}));
        assert!(matches!(reconcile(&mut node), Outcome::Waiting(_)));
        assert!(node["spec"].get("providerID").is_none());
        node["metadata"]["annotations"][INTERNAL_IP] = json!("10.0.0.5");
        assert_eq!(reconcile(&mut node), Outcome::Initialized);
        // Initialised: a mismatch later leaves the addresses alone.
        node["metadata"]["annotations"][INTERNAL_IP] = json!("10.0.0.99");
        assert_eq!(reconcile(&mut node), Outcome::Unchanged);
        assert_eq!(node["status"]["addresses"][0]["address"], "10.0.0.5");
    }

    #[test]
    fn untainted_nodes_are_not_initialised_and_garbage_is_survived() {
        let mut plain =
            json!({"metadata": {"name": "n", "annotations": {INTERNAL_IP: "10.0.0.1"}}});
        assert_eq!(reconcile(&mut plain), Outcome::Addresses);
        assert!(plain.get("spec").is_none());
        assert!(plain["metadata"].get("labels").is_none());
        for mut odd in [
            json!(null),
            json!({"metadata": 5, "spec": {"taints": [{"key": UNINITIALIZED}]}}),
            json!({"metadata": {"name": "x", "labels": 3}, "spec": {"taints": 7}, "status": []}),
        ] {
            reconcile(&mut odd);
        }
    }

    #[test]
    fn a_pass_over_the_store() {
        let store = Store::new();
        store
            .create("nodes", "", tainted(json!({INTERNAL_IP: "10.0.0.5"})))
            .unwrap();
        let mut controller = CloudNodes::new();
        controller.pass(&store);
        let node = store.get("nodes", "", "board1").unwrap();
        assert_eq!(node["spec"]["providerID"], "k3s://board1");
        assert_eq!(node["spec"]["taints"].as_array().unwrap().len(), 1);
        assert_eq!(
            node["status"]["addresses"][1],
            json!({"type": "Hostname", "address": "board1"})
        );
        let version = node["metadata"]["resourceVersion"].clone();
        controller.pass(&store);
        assert_eq!(
            store.get("nodes", "", "board1").unwrap()["metadata"]["resourceVersion"],
            version
        );
    }
}
