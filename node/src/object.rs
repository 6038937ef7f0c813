//! The Node object as K3s's kubelet (`--cloud-provider=external`) and agent
//! write it: labels, annotations, taints, capacity, allocatable, nodeInfo,
//! daemon endpoints; and what a re-registering node changes on an existing
//! Node. Pure functions of the settings and measurements.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    DaemonEndpoint, Node, NodeAddress, NodeDaemonEndpoints, NodeSpec, NodeStatus, NodeSystemInfo,
    Taint,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::measure::{MachineInfo, Measurements};
use crate::quantity::{binary_si, count};
use crate::settings::{NodeSettings, go_arch};

/// The taint a kubelet with an external cloud provider registers with; the
/// cloud controller removes it once it has initialised the node.
pub const UNINITIALIZED_TAINT: &str = "node.cloudprovider.kubernetes.io/uninitialized";
/// The kubelet's annotation: volumes are attached by the controller.
pub const CONTROLLER_MANAGED_ATTACH_DETACH: &str =
    "volumes.kubernetes.io/controller-managed-attach-detach";
/// The TTL controller's annotation (secret/configmap cache TTL for the node).
pub const TTL: &str = "node.alpha.kubernetes.io/ttl";
/// K3s agent annotations (`pkg/nodeconfig`, `pkg/agent/run.go`).
pub const K3S_HOSTNAME: &str = "k3s.io/hostname";
/// The node's IPs, comma-separated: what K3s's cloud provider makes the
/// InternalIP addresses of (and newer K3s waits for before initialising).
pub const K3S_INTERNAL_IP: &str = "k3s.io/internal-ip";
/// External IPs, comma-separated.
pub const K3S_EXTERNAL_IP: &str = "k3s.io/external-ip";
/// The agent's command line (JSON list).
pub const K3S_NODE_ARGS: &str = "k3s.io/node-args";
/// The agent's environment (JSON map).
pub const K3S_NODE_ENV: &str = "k3s.io/node-env";
/// Base32 SHA-256 of args and env.
pub const K3S_NODE_CONFIG_HASH: &str = "k3s.io/node-config-hash";

/// The labels the kubelet owns (`updateDefaultLabels`) that armlet sets.
/// The instance-type labels belong to the cloud controller and the zone and
/// region ones to a cloud provider: not set here, never fought over.
pub const DEFAULT_LABELS: [&str; 5] = [
    "kubernetes.io/hostname",
    "kubernetes.io/os",
    "kubernetes.io/arch",
    "beta.kubernetes.io/os",
    "beta.kubernetes.io/arch",
];

/// The kubelet's labels for this node, then the user's (`--node-label`),
/// which may not change the kubelet's.
pub fn labels(settings: &NodeSettings) -> BTreeMap<String, String> {
    let mut labels = settings.labels.clone();
    let arch = go_arch();
    for (key, value) in [
        ("kubernetes.io/hostname", settings.name.as_str()),
        ("kubernetes.io/os", "linux"),
        ("kubernetes.io/arch", arch),
        ("beta.kubernetes.io/os", "linux"),
        ("beta.kubernetes.io/arch", arch),
    ] {
        labels.insert(key.to_owned(), value.to_owned());
    }
    labels
}

fn join_ips(ips: &[std::net::IpAddr]) -> String {
    ips.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// JSON as Go's `encoding/json` writes it (what K3s's annotations hold):
/// `<`, `>`, `&`, U+2028 and U+2029 escaped. They only occur inside strings.
fn go_json(value: &Value) -> String {
    let text = value.to_string();
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

/// RFC 4648 base32 with padding (Go's `base32.StdEncoding`).
pub fn base32(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    for chunk in bytes.chunks(5) {
        let mut buf = [0u8; 5];
        buf[..chunk.len()].copy_from_slice(chunk);
        let bits = buf.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
        // Characters carrying data: ceil(bits / 5).
        let used = (chunk.len() * 8).div_ceil(5);
        for i in 0..8 {
            if i < used {
                let index = (bits >> (35 - 5 * i)) & 0x1f;
                out.push(char::from(ALPHABET[index as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The command-line flags whose values K3s masks in `k3s.io/node-args`.
const SECRET_FLAGS: [&str; 5] = [
    "--token",
    "-t",
    "--agent-token",
    "--server-token",
    "--node-password",
];

/// The agent's arguments as K3s records them: `--flag=value` split in two,
/// the values of secret flags (`--token`, …) replaced by `********`.
pub fn redact_args<I, S>(args: I) -> Vec<String>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let mut out: Vec<String> = Vec::new();
    for arg in args {
        let arg = arg.into();
        match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with('-') => {
                out.push(flag.to_owned());
                out.push(value.to_owned());
            }
            _ => out.push(arg),
        }
    }
    for i in 1..out.len() {
        if SECRET_FLAGS.contains(&out[i - 1].as_str()) {
            out[i] = "********".to_owned();
        }
    }
    out
}

/// The agent's configuration environment as K3s records it: the variables
/// with `prefix` (K3s: `K3S_`), values of tokens, passwords and secrets
/// replaced by `********`.
pub fn redact_env<I, K, V>(vars: I, prefix: &str) -> BTreeMap<String, String>
where
    I: IntoIterator<Item = (K, V)>,
    K: Into<String>,
    V: Into<String>,
{
    vars.into_iter()
        .map(|(k, v)| (k.into(), v.into()))
        .filter(|(k, _)| k.starts_with(prefix))
        .map(|(k, v)| {
            let secret = ["TOKEN", "PASSWORD", "SECRET"]
                .iter()
                .any(|s| k.to_ascii_uppercase().contains(s));
            let v = if secret { "********".to_owned() } else { v };
            (k, v)
        })
        .collect()
}

/// The annotations K3s's agent and kubelet give the node (all but the TTL
/// controller's, which [`initial_node`] adds at creation only).
pub fn annotations(settings: &NodeSettings) -> BTreeMap<String, String> {
    let mut annotations = BTreeMap::new();
    annotations.insert(
        CONTROLLER_MANAGED_ATTACH_DETACH.to_owned(),
        "true".to_owned(),
    );
    if settings.external_cloud_provider {
        annotations.insert(K3S_HOSTNAME.to_owned(), settings.name.clone());
        annotations.insert(K3S_INTERNAL_IP.to_owned(), join_ips(&settings.internal_ips));
        if !settings.external_ips.is_empty() {
            annotations.insert(K3S_EXTERNAL_IP.to_owned(), join_ips(&settings.external_ips));
        }
    }
    let args = go_json(&json!(settings.node_args));
    let env = go_json(&json!(settings.node_env));
    let hash = base32(&Sha256::digest(format!("{args}{env}").as_bytes()));
    annotations.insert(K3S_NODE_ARGS.to_owned(), args);
    annotations.insert(K3S_NODE_ENV.to_owned(), env);
    annotations.insert(K3S_NODE_CONFIG_HASH.to_owned(), hash);
    annotations
}

/// The taints a new Node registers with.
pub fn registration_taints(settings: &NodeSettings) -> Vec<Taint> {
    let mut taints = settings.taints.clone();
    if settings.external_cloud_provider && !taints.iter().any(|t| t.key == UNINITIALIZED_TAINT) {
        taints.push(Taint {
            key: UNINITIALIZED_TAINT.to_owned(),
            value: Some("true".to_owned()),
            effect: "NoSchedule".to_owned(),
            time_added: None,
        });
    }
    taints
}

/// The addresses the kubelet reports itself: InternalIPs, ExternalIPs,
/// Hostname (the order K3s's cloud provider writes them in, so a node it
/// has not reached yet does not flip-flop).
pub fn addresses(settings: &NodeSettings) -> Vec<NodeAddress> {
    let ips = |ips: &[std::net::IpAddr], kind: &str| {
        ips.iter()
            .map(|ip| NodeAddress {
                address: ip.to_string(),
                type_: kind.to_owned(),
            })
            .collect::<Vec<_>>()
    };
    let mut list = ips(&settings.internal_ips, "InternalIP");
    list.extend(ips(&settings.external_ips, "ExternalIP"));
    list.push(NodeAddress {
        address: settings.name.clone(),
        type_: "Hostname".to_owned(),
    });
    list
}

/// The name of the huge page resource of `size` bytes (`hugepages-2Mi`).
pub fn hugepages_resource(size: u64) -> String {
    format!("hugepages-{}", binary_si(size).0)
}

/// `status.capacity`: only what was measured (a missing key makes the node
/// NotReady, as a kubelet without cAdvisor data).
pub fn capacity(settings: &NodeSettings, m: &Measurements) -> BTreeMap<String, Quantity> {
    let mut capacity = BTreeMap::new();
    if let Some(cpus) = m.cpus {
        capacity.insert("cpu".to_owned(), count(u64::from(cpus)));
    }
    if let Some(memory) = m.memory {
        capacity.insert("memory".to_owned(), binary_si(memory.total));
    }
    capacity.insert("pods".to_owned(), count(u64::from(settings.max_pods)));
    if let Some(fs) = m.fs {
        capacity.insert("ephemeral-storage".to_owned(), binary_si(fs.total));
    }
    for pages in &m.hugepages {
        capacity.insert(hugepages_resource(pages.size), binary_si(pages.total));
    }
    capacity
}

/// A percentage threshold as the kubelet computes it: a `float32`
/// percentage times the capacity, truncated (`GetThresholdQuantity`). The
/// recorded node's 5 % of 270553174016 bytes is 13527658902, not …700.
pub fn percent_of(capacity: u64, fraction: f32) -> u64 {
    let exact = capacity as f64 * f64::from(fraction);
    if exact.is_finite() && exact > 0.0 {
        // Saturating float-to-int: a threshold over the capacity leaves 0.
        exact as u64
    } else {
        0
    }
}

/// `status.allocatable`: capacity less the hard eviction thresholds (no
/// kube- or system-reserved, as K3s) and, for memory, the huge pages.
pub fn allocatable(settings: &NodeSettings, m: &Measurements) -> BTreeMap<String, Quantity> {
    let mut allocatable = capacity(settings, m);
    if let Some(memory) = m.memory {
        let reserved = settings.eviction.memory_available.unwrap_or(0);
        let pages: u64 = m.hugepages.iter().map(|p| p.total).sum();
        let left = memory.total.saturating_sub(reserved).saturating_sub(pages);
        allocatable.insert("memory".to_owned(), binary_si(left));
    }
    if let (Some(fs), Some(fraction)) = (m.fs, settings.eviction.nodefs_available) {
        let left = fs.total.saturating_sub(percent_of(fs.total, fraction));
        allocatable.insert("ephemeral-storage".to_owned(), binary_si(left));
    }
    allocatable
}

/// `status.nodeInfo`.
pub fn node_info(settings: &NodeSettings, machine: &MachineInfo) -> NodeSystemInfo {
    NodeSystemInfo {
        architecture: go_arch().to_owned(),
        boot_id: machine.boot_id.clone(),
        container_runtime_version: settings.runtime_version.clone(),
        kernel_version: machine.kernel_version.clone(),
        kube_proxy_version: settings.kubelet_version.clone(),
        kubelet_version: settings.kubelet_version.clone(),
        machine_id: machine.machine_id.clone(),
        operating_system: "linux".to_owned(),
        os_image: machine.os_image.clone(),
        system_uuid: machine.system_uuid.clone(),
    }
}

/// `status.daemonEndpoints`.
pub fn daemon_endpoints(settings: &NodeSettings) -> NodeDaemonEndpoints {
    NodeDaemonEndpoints {
        kubelet_endpoint: Some(DaemonEndpoint {
            port: settings.kubelet_port,
        }),
    }
}

/// The Node a new node registers as, with `status` (computed by
/// [`crate::status::desired_status`] against no previous node) and the
/// TTL controller's annotation (K3s's clusters are small: "0"; only at
/// creation, the controller owns it after).
pub fn initial_node(settings: &NodeSettings, status: NodeStatus) -> Node {
    let mut annotations = annotations(settings);
    annotations.insert(TTL.to_owned(), "0".to_owned());
    let taints = registration_taints(settings);
    Node {
        metadata: ObjectMeta {
            name: Some(settings.name.clone()),
            labels: Some(labels(settings)),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        },
        spec: Some(NodeSpec {
            taints: (!taints.is_empty()).then_some(taints),
            ..NodeSpec::default()
        }),
        status: Some(status),
    }
}

/// Labels K3s agents before v1.21 set and now keeps as annotations: a
/// re-registering node drops them (`updateLegacyAddressLabels`).
const LEGACY_ADDRESS_LABELS: [&str; 3] = [K3S_HOSTNAME, K3S_INTERNAL_IP, K3S_EXTERNAL_IP];

/// What a node taking over an existing Node of its name changes in its
/// metadata (JSON merge patch of the Node), `None` when nothing: the
/// kubelet's default labels and attach-detach annotation
/// (`reconcileCMADAnnotationWithExistingNode`, `updateDefaultLabels`) and
/// K3s's node labels and annotations (`configureNode`). Taints are left
/// alone, as the kubelet does with an existing Node.
pub fn takeover_patch(existing: &Node, settings: &NodeSettings) -> Option<Value> {
    let current_labels = existing.metadata.labels.clone().unwrap_or_default();
    let current_annotations = existing.metadata.annotations.clone().unwrap_or_default();
    let mut label_patch = Map::new();
    for (key, value) in labels(settings) {
        if current_labels.get(&key) != Some(&value) {
            label_patch.insert(key, Value::String(value));
        }
    }
    if settings.external_cloud_provider {
        for key in LEGACY_ADDRESS_LABELS {
            if current_labels.contains_key(key) {
                label_patch.insert(key.to_owned(), Value::Null);
            }
        }
    }
    let mut annotation_patch = Map::new();
    for (key, value) in annotations(settings) {
        if current_annotations.get(&key) != Some(&value) {
            annotation_patch.insert(key, Value::String(value));
        }
    }
    // An external IP the node no longer has: the cloud controller would
    // keep reporting it.
    if settings.external_cloud_provider
        && settings.external_ips.is_empty()
        && current_annotations.contains_key(K3S_EXTERNAL_IP)
    {
        annotation_patch.insert(K3S_EXTERNAL_IP.to_owned(), Value::Null);
    }
    if label_patch.is_empty() && annotation_patch.is_empty() {
        return None;
    }
    let mut metadata = Map::new();
    if !label_patch.is_empty() {
        metadata.insert("labels".to_owned(), Value::Object(label_patch));
    }
    if !annotation_patch.is_empty() {
        metadata.insert("annotations".to_owned(), Value::Object(annotation_patch));
    }
    Some(json!({ "metadata": metadata }))
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;
    use crate::measure::{FsStats, HugePages, MemInfo, PidStats};

    pub(crate) fn settings() -> NodeSettings {
        let mut s = NodeSettings::new("k3s-agent-1", IpAddr::from([198, 18, 0, 2]));
        s.node_args = redact_args([
            "agent",
            "--server",
            "https://127.0.0.1:6443",
            "--token=K10secret::server:abc",
            "--node-name",
            "k3s-agent-1",
        ]);
        s
    }

    pub(crate) fn measurements() -> Measurements {
        // The recorded K3s node's machine.
        Measurements {
            cpus: Some(2),
            memory: Some(MemInfo {
                total: 24_684_092 * 1024,
                available: 20 << 30,
            }),
            fs: Some(FsStats {
                total: 264_212_084 * 1024,
                available: 100 << 30,
            }),
            pids: Some(PidStats {
                max: 4_194_304,
                running: 500,
            }),
            hugepages: vec![
                HugePages {
                    size: 2 << 20,
                    total: 0,
                },
                HugePages {
                    size: 1 << 30,
                    total: 0,
                },
            ],
        }
    }

    fn strings(map: &BTreeMap<String, Quantity>) -> BTreeMap<&str, &str> {
        map.iter()
            .map(|(k, v)| (k.as_str(), v.0.as_str()))
            .collect()
    }

    #[test]
    fn capacity_and_allocatable_as_recorded() {
        let s = settings();
        let m = measurements();
        let expected_capacity = BTreeMap::from([
            ("cpu", "2"),
            ("ephemeral-storage", "264212084Ki"),
            ("hugepages-1Gi", "0"),
            ("hugepages-2Mi", "0"),
            ("memory", "24684092Ki"),
            ("pods", "110"),
        ]);
        assert_eq!(strings(&capacity(&s, &m)), expected_capacity);
        // K3s's eviction thresholds: the recorded allocatable exactly.
        let mut expected_allocatable = expected_capacity.clone();
        expected_allocatable.insert("ephemeral-storage", "257025515114");
        assert_eq!(strings(&allocatable(&s, &m)), expected_allocatable);
    }

    #[test]
    fn allocatable_less_the_kubelets_thresholds_and_huge_pages() {
        let mut s = settings();
        s.eviction = crate::settings::EvictionThresholds::kubelet();
        let mut m = measurements();
        m.hugepages[0].total = 4 << 20;
        let a = allocatable(&s, &m);
        assert_eq!(
            a["memory"].0,
            binary_si(24_684_092 * 1024 - (100 << 20) - (4 << 20)).0
        );
        assert_eq!(a["hugepages-2Mi"].0, "4Mi");
        let total = 264_212_084u64 * 1024;
        assert_eq!(
            a["ephemeral-storage"].0,
            binary_si(total - percent_of(total, 0.1)).0
        );
        // A machine smaller than its thresholds has nothing allocatable.
        m.memory = Some(MemInfo {
            total: 50 << 20,
            available: 0,
        });
        assert_eq!(allocatable(&s, &m)["memory"].0, "0");
    }

    #[test]
    fn unmeasured_resources_are_left_out() {
        let a = capacity(&settings(), &Measurements::default());
        assert_eq!(strings(&a), BTreeMap::from([("pods", "110")]));
    }

    #[test]
    fn base32_rfc4648_vectors() {
        for (input, output) in [
            ("", ""),
            ("f", "MY======"),
            ("fo", "MZXQ===="),
            ("foo", "MZXW6==="),
            ("foob", "MZXW6YQ="),
            ("fooba", "MZXW6YTB"),
            ("foobar", "MZXW6YTBOI======"),
        ] {
            assert_eq!(base32(input.as_bytes()), output);
        }
    }

    #[test]
    fn node_config_annotations_shaped_as_k3s() {
        let a = annotations(&settings());
        assert_eq!(
            a[K3S_NODE_ARGS],
            r#"["agent","--server","https://127.0.0.1:6443","--token","********","--node-name","k3s-agent-1"]"#
        );
        assert_eq!(a[K3S_NODE_ENV], "{}");
        // Base32 of a SHA-256 with its padding, as the recorded
        // `DSM4S4CE6OBKJRN65OWG7UX33E3EJ7X5ZLPD2A3JA4PYWFC557FQ====`.
        let hash = &a[K3S_NODE_CONFIG_HASH];
        assert_eq!(hash.len(), 56);
        assert!(hash.ends_with("===="));
        assert_eq!(a[K3S_INTERNAL_IP], "198.18.0.2");
        assert_eq!(a[K3S_HOSTNAME], "k3s-agent-1");
        assert!(!a.contains_key(K3S_EXTERNAL_IP));
    }

    #[test]
    fn go_json_escapes_html() {
        assert_eq!(go_json(&json!(["<a>&"])), r#"["\u003ca\u003e\u0026"]"#);
    }

    #[test]
    fn secrets_are_masked() {
        assert_eq!(
            redact_args([
                "-t",
                "x",
                "--agent-token=y",
                "--token-file",
                "/f",
                "--node-label",
                "a=b"
            ]),
            vec![
                "-t",
                "********",
                "--agent-token",
                "********",
                "--token-file",
                "/f",
                "--node-label",
                "a=b"
            ]
        );
        let env = redact_env(
            [
                ("ARMLET_TOKEN", "s"),
                ("ARMLET_URL", "u"),
                ("HOME", "/root"),
            ],
            "ARMLET_",
        );
        assert_eq!(
            env,
            BTreeMap::from([
                ("ARMLET_TOKEN".to_owned(), "********".to_owned()),
                ("ARMLET_URL".to_owned(), "u".to_owned())
            ])
        );
    }

    #[test]
    fn user_labels_cannot_override_the_kubelets() {
        let mut s = settings();
        s.labels
            .insert("kubernetes.io/hostname".into(), "other".into());
        s.labels.insert("example.com/board".into(), "rpi4".into());
        let l = labels(&s);
        assert_eq!(l["kubernetes.io/hostname"], "k3s-agent-1");
        assert_eq!(l["example.com/board"], "rpi4");
    }

    #[test]
    fn registration_taints_with_and_without_the_cloud_provider() {
        let mut s = settings();
        s.taints.push(Taint {
            key: "example.com/dedicated".into(),
            value: Some("edge".into()),
            effect: "NoExecute".into(),
            time_added: None,
        });
        let keys = |s: &NodeSettings| -> Vec<String> {
            registration_taints(s).into_iter().map(|t| t.key).collect()
        };
        assert_eq!(keys(&s), vec!["example.com/dedicated", UNINITIALIZED_TAINT]);
        s.external_cloud_provider = false;
        assert_eq!(keys(&s), vec!["example.com/dedicated"]);
    }

    #[test]
    fn takeover_changes_only_what_differs() {
        let s = settings();
        let status = NodeStatus::default();
        let node = initial_node(&s, status);
        assert_eq!(takeover_patch(&node, &s), None);

        let mut old = node.clone();
        let labels = old.metadata.labels.get_or_insert_with(BTreeMap::new);
        labels.insert("kubernetes.io/arch".into(), "mips".into());
        labels.insert(K3S_INTERNAL_IP.into(), "10.0.0.1".into());
        labels.insert("node.kubernetes.io/instance-type".into(), "k3s".into());
        let annotations = old.metadata.annotations.get_or_insert_with(BTreeMap::new);
        annotations.remove(CONTROLLER_MANAGED_ATTACH_DETACH);
        annotations.insert(K3S_INTERNAL_IP.into(), "10.0.0.1".into());
        annotations.insert(K3S_EXTERNAL_IP.into(), "1.2.3.4".into());
        annotations.insert(
            "flannel.alpha.coreos.com/public-ip".into(),
            "10.0.0.1".into(),
        );
        let patch = takeover_patch(&old, &s).unwrap();
        assert_eq!(
            patch,
            json!({"metadata": {
                "labels": {"kubernetes.io/arch": go_arch(), K3S_INTERNAL_IP: null},
                "annotations": {
                    CONTROLLER_MANAGED_ATTACH_DETACH: "true",
                    K3S_INTERNAL_IP: "198.18.0.2",
                    K3S_EXTERNAL_IP: null,
                },
            }})
        );
    }
}
