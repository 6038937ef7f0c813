//! Server-side printing: the `meta.k8s.io/v1` `Table` the API server returns
//! when a client asks for `application/json;as=Table;v=v1;g=meta.k8s.io`
//! (kubectl's `get` always does, and prints the columns it is given). The
//! columns and cells follow the API server's printers for each resource
//! (`pkg/printers/internalversion` in Kubernetes 1.21), so `kubectl get nodes
//! -o wide` reads as it does against K3s.

use serde_json::{Value, json};

use crate::api::Resource;

/// Whether an `Accept` header asks for a Table (any of its alternatives).
pub fn wanted(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| {
        a.split(',').any(|alt| {
            let params: Vec<&str> = alt.split(';').map(str::trim).collect();
            params.contains(&"as=Table")
                && params.contains(&"g=meta.k8s.io")
                && (params.contains(&"v=v1") || params.contains(&"v=v1beta1"))
        })
    })
}

/// The table version the client named first (v1 unless only v1beta1 is
/// acceptable).
fn api_version(accept: Option<&str>) -> &'static str {
    let v1 = accept.is_some_and(|a| {
        a.split(',')
            .any(|alt| alt.contains("as=Table") && alt.split(';').any(|p| p.trim() == "v=v1"))
    });
    if v1 {
        "meta.k8s.io/v1"
    } else {
        "meta.k8s.io/v1beta1"
    }
}

/// What each row carries besides its cells (`includeObject`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Include {
    /// Nothing.
    None,
    /// A `PartialObjectMetadata` (the default).
    Metadata,
    /// The whole object.
    Object,
}

impl Include {
    /// From the `includeObject` query parameter.
    pub fn from_query(value: Option<&str>) -> Self {
        match value {
            Some("None") => Self::None,
            Some("Object") => Self::Object,
            _ => Self::Metadata,
        }
    }
}

/// One column: name, type, priority (1 = only with `-o wide`), description.
type Column = (&'static str, &'static str, u8, &'static str);

const NAME: Column = (
    "Name",
    "string",
    0,
    "Name must be unique within a namespace.",
);
const AGE: Column = (
    "Age",
    "string",
    0,
    "CreationTimestamp is a timestamp representing the server time when this object was created.",
);

fn columns(resource: &Resource) -> Vec<Column> {
    match (resource.group, resource.plural) {
        ("", "nodes") => vec![
            NAME,
            ("Status", "string", 0, "The status of the node"),
            ("Roles", "string", 0, "The roles of the node"),
            AGE,
            (
                "Version",
                "string",
                0,
                "Kubelet Version reported by the node.",
            ),
            (
                "Internal-IP",
                "string",
                1,
                "List of internal IPs for the node.",
            ),
            (
                "External-IP",
                "string",
                1,
                "List of external IPs for the node.",
            ),
            ("OS-Image", "string", 1, "OS Image reported by the node."),
            (
                "Kernel-Version",
                "string",
                1,
                "Kernel Version reported by the node.",
            ),
            (
                "Container-Runtime",
                "string",
                1,
                "Container Runtime Version reported by the node.",
            ),
        ],
        ("", "pods") => vec![
            NAME,
            (
                "Ready",
                "string",
                0,
                "The aggregate readiness state of this pod for accepting traffic.",
            ),
            (
                "Status",
                "string",
                0,
                "The aggregate status of the containers in this pod.",
            ),
            (
                "Restarts",
                "integer",
                0,
                "The number of times the containers in this pod have been restarted.",
            ),
            AGE,
            ("IP", "string", 1, "IP address allocated to the pod."),
            (
                "Node",
                "string",
                1,
                "Name of the Node this pod is bound to.",
            ),
            (
                "Nominated Node",
                "string",
                1,
                "Name of the node the scheduler nominated for preemption.",
            ),
            (
                "Readiness Gates",
                "string",
                1,
                "Readiness gates met, of those the pod declares.",
            ),
        ],
        ("", "namespaces") => vec![
            NAME,
            ("Status", "string", 0, "The status of the namespace"),
            AGE,
        ],
        ("", "configmaps") => vec![
            NAME,
            ("Data", "string", 0, "Data contains the configuration data."),
            AGE,
        ],
        ("", "secrets") => vec![
            NAME,
            ("Type", "string", 0, "The type of secret"),
            ("Data", "string", 0, "Data contains the secret data."),
            AGE,
        ],
        ("", "services") => vec![
            NAME,
            ("Type", "string", 0, "The type of the service."),
            ("Cluster-IP", "string", 0, "The IP address of the service."),
            (
                "External-IP",
                "string",
                0,
                "The external IP addresses of the service.",
            ),
            ("Port(s)", "string", 0, "The ports exposed by the service."),
            AGE,
            (
                "Selector",
                "string",
                1,
                "Route service traffic to pods with label keys and values matching this selector.",
            ),
        ],
        ("", "serviceaccounts") => vec![
            NAME,
            (
                "Secrets",
                "string",
                0,
                "Secrets is the list of secrets allowed to be used by pods running using this ServiceAccount.",
            ),
            AGE,
        ],
        ("", "events") => vec![
            (
                "Last Seen",
                "string",
                0,
                "The last time the event was seen.",
            ),
            ("Type", "string", 0, "The type of the event."),
            (
                "Reason",
                "string",
                0,
                "Why the event happened, in machine-readable form.",
            ),
            ("Object", "string", 0, "The object the event is about."),
            (
                "Subobject",
                "string",
                1,
                "The part of the object the event is about.",
            ),
            ("Source", "string", 1, "The component reporting the event."),
            (
                "Message",
                "string",
                0,
                "A human-readable description of the event.",
            ),
            (
                "First Seen",
                "string",
                1,
                "The first time the event was seen.",
            ),
            (
                "Count",
                "string",
                1,
                "How many times the event has occurred.",
            ),
            ("Name", "string", 1, "The event's name."),
        ],
        ("coordination.k8s.io", "leases") => vec![
            NAME,
            ("Holder", "string", 0, "The holder of the lease."),
            AGE,
        ],
        ("discovery.k8s.io", "endpointslices") => vec![
            NAME,
            (
                "AddressType",
                "string",
                0,
                "The type of address carried by this EndpointSlice.",
            ),
            ("Ports", "string", 0, "Ports served by this EndpointSlice."),
            ("Endpoints", "string", 0, "Endpoints in this EndpointSlice."),
            AGE,
        ],
        _ => vec![
            NAME,
            (
                "Created At",
                "date",
                0,
                "CreationTimestamp is a timestamp representing the server time when this object was created.",
            ),
        ],
    }
}

fn str_at<'a>(object: &'a Value, pointer: &str) -> &'a str {
    object
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn array_at<'a>(object: &'a Value, pointer: &str) -> &'a [Value] {
    object
        .pointer(pointer)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

fn or_none(text: String) -> String {
    if text.is_empty() {
        "<none>".to_owned()
    } else {
        text
    }
}

/// A duration as kubectl prints ages (`duration.HumanDuration`): `45s`,
/// `3m12s`, `5h2m`, `3d4h`, `2y10d`.
pub fn human_duration(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".to_owned();
    }
    if seconds < 0 {
        return "0s".to_owned();
    }
    if seconds < 120 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = seconds / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let d = (hours / 24) % 365;
        return if d == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{d}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

fn age(timestamp: &str, now: i64) -> String {
    match crate::store::parse_rfc3339(timestamp) {
        Some(t) => human_duration(now - t as i64),
        None => "<unknown>".to_owned(),
    }
}

fn node_cells(node: &Value, now: i64) -> Vec<Value> {
    let conditions = array_at(node, "/status/conditions");
    let mut status: Vec<String> = conditions
        .iter()
        .filter(|c| c["type"] == "Ready")
        .map(|c| match c["status"].as_str() {
            Some("True") => "Ready".to_owned(),
            Some("False") => "NotReady".to_owned(),
            _ => "Unknown".to_owned(),
        })
        .collect();
    if status.is_empty() {
        status.push("Unknown".to_owned());
    }
    if node.pointer("/spec/unschedulable") == Some(&Value::Bool(true)) {
        status.push("SchedulingDisabled".to_owned());
    }
    let mut roles: Vec<String> = node
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| {
            if let Some(role) = k.strip_prefix("node-role.kubernetes.io/") {
                (!role.is_empty()).then(|| role.to_owned())
            } else if k == "kubernetes.io/role" {
                v.as_str().map(str::to_owned)
            } else {
                None
            }
        })
        .collect();
    roles.sort();
    roles.dedup();
    let address = |kind: &str| {
        array_at(node, "/status/addresses")
            .iter()
            .find(|a| a["type"] == kind)
            .and_then(|a| a["address"].as_str())
            .unwrap_or("<none>")
            .to_owned()
    };
    let info = |field: &str| {
        let value = str_at(node, &format!("/status/nodeInfo/{field}"));
        if value.is_empty() {
            "<unknown>".to_owned()
        } else {
            value.to_owned()
        }
    };
    vec![
        json!(str_at(node, "/metadata/name")),
        json!(status.join(",")),
        json!(or_none(roles.join(","))),
        json!(age(str_at(node, "/metadata/creationTimestamp"), now)),
        json!(str_at(node, "/status/nodeInfo/kubeletVersion")),
        json!(address("InternalIP")),
        json!(address("ExternalIP")),
        json!(info("osImage")),
        json!(info("kernelVersion")),
        json!(info("containerRuntimeVersion")),
    ]
}

/// The STATUS column's logic (`printPod`): phase, then the pod's reason, then
/// init containers, then containers' waiting/terminated reasons.
fn pod_status(pod: &Value) -> (String, usize, i64) {
    let mut reason = str_at(pod, "/status/phase").to_owned();
    let pod_reason = str_at(pod, "/status/reason");
    if !pod_reason.is_empty() {
        reason = pod_reason.to_owned();
    }
    let mut restarts = 0;
    let mut initializing = false;
    let init_specs = array_at(pod, "/spec/initContainers").len();
    for (i, c) in array_at(pod, "/status/initContainerStatuses")
        .iter()
        .enumerate()
    {
        restarts += c["restartCount"].as_i64().unwrap_or(0);
        let terminated = &c["state"]["terminated"];
        let waiting = &c["state"]["waiting"];
        if terminated.is_object() && terminated["exitCode"].as_i64() == Some(0) {
            continue;
        }
        if terminated.is_object() {
            let r = terminated["reason"].as_str().unwrap_or("");
            reason = if !r.is_empty() {
                format!("Init:{r}")
            } else if let Some(signal) = terminated["signal"].as_i64().filter(|s| *s != 0) {
                format!("Init:Signal:{signal}")
            } else {
                format!(
                    "Init:ExitCode:{}",
                    terminated["exitCode"].as_i64().unwrap_or(0)
                )
            };
        } else if let Some(r) = waiting["reason"]
            .as_str()
            .filter(|r| !r.is_empty() && *r != "PodInitializing")
        {
            reason = format!("Init:{r}");
        } else {
            reason = format!("Init:{i}/{init_specs}");
        }
        initializing = true;
        break;
    }
    let mut ready = 0;
    if !initializing {
        restarts = 0;
        let mut running = false;
        for c in array_at(pod, "/status/containerStatuses").iter().rev() {
            restarts += c["restartCount"].as_i64().unwrap_or(0);
            let waiting = &c["state"]["waiting"];
            let terminated = &c["state"]["terminated"];
            if let Some(r) = waiting["reason"].as_str().filter(|r| !r.is_empty()) {
                reason = r.to_owned();
            } else if let Some(r) = terminated["reason"].as_str().filter(|r| !r.is_empty()) {
                reason = r.to_owned();
            } else if terminated.is_object() {
                reason = match terminated["signal"].as_i64().filter(|s| *s != 0) {
                    Some(signal) => format!("Signal:{signal}"),
                    None => format!("ExitCode:{}", terminated["exitCode"].as_i64().unwrap_or(0)),
                };
            } else if c["ready"] == true && c["state"]["running"].is_object() {
                running = true;
                ready += 1;
            }
        }
        if reason == "Completed" && running {
            let pod_ready = array_at(pod, "/status/conditions")
                .iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            reason = if pod_ready { "Running" } else { "NotReady" }.to_owned();
        }
    }
    if pod.pointer("/metadata/deletionTimestamp").is_some() {
        reason = if pod_reason == "NodeLost" {
            "Unknown".to_owned()
        } else {
            "Terminating".to_owned()
        };
    }
    (reason, ready, restarts)
}

fn pod_cells(pod: &Value, now: i64) -> Vec<Value> {
    let (status, ready, restarts) = pod_status(pod);
    let total = array_at(pod, "/spec/containers").len();
    let gates = array_at(pod, "/spec/readinessGates");
    let gates_cell = if gates.is_empty() {
        "<none>".to_owned()
    } else {
        let conditions = array_at(pod, "/status/conditions");
        let met = gates
            .iter()
            .filter(|g| {
                conditions
                    .iter()
                    .any(|c| c["type"] == g["conditionType"] && c["status"] == "True")
            })
            .count();
        format!("{met}/{}", gates.len())
    };
    vec![
        json!(str_at(pod, "/metadata/name")),
        json!(format!("{ready}/{total}")),
        json!(status),
        json!(restarts),
        json!(age(str_at(pod, "/metadata/creationTimestamp"), now)),
        json!(or_none(str_at(pod, "/status/podIP").to_owned())),
        json!(or_none(str_at(pod, "/spec/nodeName").to_owned())),
        json!(or_none(str_at(pod, "/status/nominatedNodeName").to_owned())),
        json!(gates_cell),
    ]
}

fn service_cells(service: &Value, now: i64) -> Vec<Value> {
    let kind = match str_at(service, "/spec/type") {
        "" => "ClusterIP",
        k => k,
    };
    let external_ips: Vec<&str> = array_at(service, "/spec/externalIPs")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let external = match kind {
        "ExternalName" => str_at(service, "/spec/externalName").to_owned(),
        "LoadBalancer" => {
            let mut ips: Vec<&str> = array_at(service, "/status/loadBalancer/ingress")
                .iter()
                .filter_map(|i| i["ip"].as_str().or_else(|| i["hostname"].as_str()))
                .collect();
            ips.extend(&external_ips);
            if ips.is_empty() {
                "<pending>".to_owned()
            } else {
                ips.join(",")
            }
        }
        _ => or_none(external_ips.join(",")),
    };
    let ports: Vec<String> = array_at(service, "/spec/ports")
        .iter()
        .map(|p| {
            let protocol = p["protocol"].as_str().unwrap_or("TCP");
            match p["nodePort"].as_i64().filter(|n| *n != 0) {
                Some(node_port) => format!("{}:{node_port}/{protocol}", p["port"]),
                None => format!("{}/{protocol}", p["port"]),
            }
        })
        .collect();
    let selector = labels_text(service.pointer("/spec/selector"));
    vec![
        json!(str_at(service, "/metadata/name")),
        json!(kind),
        json!(or_none(str_at(service, "/spec/clusterIP").to_owned())),
        json!(external),
        json!(or_none(ports.join(","))),
        json!(age(str_at(service, "/metadata/creationTimestamp"), now)),
        json!(or_none(selector)),
    ]
}

fn labels_text(map: Option<&Value>) -> String {
    map.and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
        .collect::<Vec<_>>()
        .join(",")
}

fn event_cells(event: &Value, now: i64) -> Vec<Value> {
    let last = [
        "/lastTimestamp",
        "/eventTime",
        "/metadata/creationTimestamp",
    ]
    .iter()
    .map(|p| str_at(event, p))
    .find(|t| !t.is_empty())
    .unwrap_or("");
    let first = match str_at(event, "/firstTimestamp") {
        "" => str_at(event, "/eventTime"),
        t => t,
    };
    let object = format!(
        "{}/{}",
        str_at(event, "/involvedObject/kind").to_lowercase(),
        str_at(event, "/involvedObject/name")
    );
    let component = str_at(event, "/source/component");
    let host = str_at(event, "/source/host");
    let source = match (component, host) {
        ("", "") => "<none>".to_owned(),
        (c, "") => c.to_owned(),
        (c, h) => format!("{c}, {h}"),
    };
    vec![
        json!(age(last, now)),
        json!(str_at(event, "/type")),
        json!(str_at(event, "/reason")),
        json!(object),
        json!(str_at(event, "/involvedObject/fieldPath")),
        json!(source),
        json!(str_at(event, "/message").trim()),
        json!(age(first, now)),
        json!(event["count"].as_i64().unwrap_or(1)),
        json!(str_at(event, "/metadata/name")),
    ]
}

fn endpoint_slice_cells(slice: &Value, now: i64) -> Vec<Value> {
    let ports: Vec<String> = array_at(slice, "/ports")
        .iter()
        .filter_map(|p| p["port"].as_i64().map(|n| n.to_string()))
        .collect();
    let addresses: Vec<&str> = array_at(slice, "/endpoints")
        .iter()
        .flat_map(|e| array_at(e, "/addresses"))
        .filter_map(Value::as_str)
        .collect();
    let endpoints = match addresses.len() {
        0 => "<unset>".to_owned(),
        n if n > 3 => format!("{} + {} more...", addresses[..3].join(","), n - 3),
        _ => addresses.join(","),
    };
    vec![
        json!(str_at(slice, "/metadata/name")),
        json!(str_at(slice, "/addressType")),
        json!(if ports.is_empty() {
            "<unset>".to_owned()
        } else {
            ports.join(",")
        }),
        json!(endpoints),
        json!(age(str_at(slice, "/metadata/creationTimestamp"), now)),
    ]
}

fn cells(resource: &Resource, object: &Value, now: i64) -> Vec<Value> {
    let name = || json!(str_at(object, "/metadata/name"));
    let created = str_at(object, "/metadata/creationTimestamp");
    let data_count = |field: &str| {
        object
            .get(field)
            .and_then(Value::as_object)
            .map_or(0, serde_json::Map::len)
    };
    match (resource.group, resource.plural) {
        ("", "nodes") => node_cells(object, now),
        ("", "pods") => pod_cells(object, now),
        ("", "namespaces") => vec![
            name(),
            json!(str_at(object, "/status/phase")),
            json!(age(created, now)),
        ],
        ("", "configmaps") => vec![
            name(),
            json!(data_count("data") + data_count("binaryData")),
            json!(age(created, now)),
        ],
        ("", "secrets") => vec![
            name(),
            json!(str_at(object, "/type")),
            json!(data_count("data")),
            json!(age(created, now)),
        ],
        ("", "services") => service_cells(object, now),
        ("", "serviceaccounts") => vec![
            name(),
            json!(array_at(object, "/secrets").len()),
            json!(age(created, now)),
        ],
        ("", "events") => event_cells(object, now),
        ("coordination.k8s.io", "leases") => vec![
            name(),
            json!(str_at(object, "/spec/holderIdentity")),
            json!(age(created, now)),
        ],
        ("discovery.k8s.io", "endpointslices") => endpoint_slice_cells(object, now),
        _ => vec![name(), json!(created)],
    }
}

fn row(resource: &Resource, object: &Value, include: Include, now: i64) -> Value {
    let mut row = json!({"cells": cells(resource, object, now)});
    match include {
        Include::None => {}
        Include::Metadata => {
            row["object"] = json!({
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": object.get("metadata").cloned().unwrap_or_else(|| json!({})),
            });
        }
        Include::Object => row["object"] = object.clone(),
    }
    row
}

/// A Table of `items` (one row each), carrying `version` as its
/// resourceVersion.
pub fn table(
    resource: &Resource,
    items: &[Value],
    version: Option<u64>,
    include: Include,
    accept: Option<&str>,
) -> Value {
    let now = crate::store::now() as i64;
    let definitions: Vec<Value> = columns(resource)
        .into_iter()
        .map(|(name, kind, priority, description)| {
            let mut c = json!({"name": name, "type": kind, "format": "", "description": description, "priority": priority});
            if name == "Name" && priority == 0 {
                c["format"] = json!("name");
            }
            c
        })
        .collect();
    let mut metadata = json!({});
    if let Some(v) = version {
        metadata["resourceVersion"] = json!(v.to_string());
    }
    json!({
        "kind": "Table",
        "apiVersion": api_version(accept),
        "metadata": metadata,
        "columnDefinitions": definitions,
        "rows": items.iter().map(|o| row(resource, o, include, now)).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::api::resource_named as resource;

    #[test]
    fn kubectl_accept_headers_ask_for_tables() {
        let kubectl = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
        assert!(wanted(Some(kubectl)));
        assert_eq!(api_version(Some(kubectl)), "meta.k8s.io/v1");
        let old = "application/json;as=Table;v=v1beta1;g=meta.k8s.io, application/json";
        assert!(wanted(Some(old)));
        assert_eq!(api_version(Some(old)), "meta.k8s.io/v1beta1");
        assert!(!wanted(Some("application/json")));
        assert!(!wanted(None));
    }

    #[test]
    fn ages_read_as_kubectl_prints_them() {
        assert_eq!(human_duration(-5), "<invalid>");
        assert_eq!(human_duration(-1), "0s");
        assert_eq!(human_duration(45), "45s");
        assert_eq!(human_duration(119), "119s");
        assert_eq!(human_duration(192), "3m12s");
        assert_eq!(human_duration(300), "5m");
        assert_eq!(human_duration(30 * 60), "30m");
        assert_eq!(human_duration(5 * 3600 + 120), "5h2m");
        assert_eq!(human_duration(20 * 3600), "20h");
        assert_eq!(human_duration(3 * 86_400 + 4 * 3600), "3d4h");
        assert_eq!(human_duration(100 * 86_400), "100d");
        assert_eq!(human_duration((365 * 2 + 10) * 86_400), "2y10d");
        assert_eq!(human_duration(365 * 9 * 86_400), "9y");
    }

    #[test]
    fn the_recorded_node_prints_as_kubectl_shows_it() {
        let text = include_str!("../fixtures/recorded-k3s-v1.21/k3s-agent-node.yaml");
        let node: Value = serde_yaml_ng::from_str(text).unwrap();
        let t = table(resource("nodes"), &[node], Some(7), Include::Metadata, None);
        let cells = t["rows"][0]["cells"].as_array().unwrap();
        assert_eq!(
            cells.len(),
            t["columnDefinitions"].as_array().unwrap().len()
        );
        assert_eq!(cells[1], "Ready");
        assert_eq!(cells[2], "<none>");
        assert!(cells[4].as_str().unwrap().starts_with("v1.21"));
        assert!(cells[5].as_str().unwrap().starts_with("198.18."));
        assert_eq!(t["rows"][0]["object"]["kind"], "PartialObjectMetadata");
        assert_eq!(t["metadata"]["resourceVersion"], "7");
    }

    #[test]
    fn pod_status_follows_the_printer() {
        let text = include_str!("../fixtures/recorded-k3s-v1.21/busybox-pod-status.yaml");
        let pod: Value = serde_yaml_ng::from_str(text).unwrap();
        let cells = pod_cells(&pod, 0);
        assert_eq!(cells[1], "1/1");
        assert_eq!(cells[2], "Running");
        let waiting = json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}]},
            "status": {"phase": "Pending", "containerStatuses": [
                {"name": "a", "restartCount": 3, "ready": false, "state": {"waiting": {"reason": "CrashLoopBackOff"}}},
                {"name": "b", "restartCount": 1, "ready": true, "state": {"running": {}}}]}});
        let cells = pod_cells(&waiting, 0);
        assert_eq!(cells[1], "1/2");
        assert_eq!(cells[2], "CrashLoopBackOff");
        assert_eq!(cells[3], 4);
        assert_eq!(cells[6], "<none>");
        let init = json!({"spec": {"initContainers": [{"name": "i"}], "containers": [{"name": "a"}]},
            "status": {"phase": "Pending", "initContainerStatuses": [
                {"name": "i", "restartCount": 0, "state": {"waiting": {"reason": "PodInitializing"}}}]}});
        assert_eq!(pod_cells(&init, 0)[2], "Init:0/1");
        let deleting = json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"},
            "status": {"phase": "Running"}});
        assert_eq!(pod_cells(&deleting, 0)[2], "Terminating");
        let signalled = json!({"status": {"phase": "Failed", "containerStatuses": [
            {"state": {"terminated": {"exitCode": 137, "signal": 9}}}]}});
        assert_eq!(pod_cells(&signalled, 0)[2], "Signal:9");
    }

    #[test]
    fn services_and_slices_print_ports_and_addresses() {
        let svc = json!({"metadata": {"name": "web"}, "spec": {"type": "NodePort", "clusterIP": "10.43.0.10",
            "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}],
            "selector": {"app": "web"}}});
        let cells = service_cells(&svc, 0);
        assert_eq!(cells[3], "<none>");
        assert_eq!(cells[4], "80:30080/TCP,53/UDP");
        assert_eq!(cells[6], "app=web");
        let lb = json!({"spec": {"type": "LoadBalancer"}});
        assert_eq!(service_cells(&lb, 0)[3], "<pending>");
        let slice = json!({"addressType": "IPv4", "ports": [{"port": 80}],
            "endpoints": [{"addresses": ["10.42.0.1"]}, {"addresses": ["10.42.0.2"]},
                          {"addresses": ["10.42.0.3"]}, {"addresses": ["10.42.0.4"]}]});
        let cells = endpoint_slice_cells(&slice, 0);
        assert_eq!(cells[2], "80");
        assert_eq!(cells[3], "10.42.0.1,10.42.0.2,10.42.0.3 + 1 more...");
    }

    #[test]
    fn every_resource_has_a_cell_per_column_and_no_input_panics() {
        for resource in crate::api::RESOURCES {
            for object in [
                json!({}),
                json!(null),
                json!({"metadata": 5, "status": "x", "spec": []}),
            ] {
                let t = table(resource, &[object], None, Include::Object, None);
                assert_eq!(
                    t["rows"][0]["cells"].as_array().unwrap().len(),
                    t["columnDefinitions"].as_array().unwrap().len(),
                    "{}",
                    resource.plural
                );
            }
        }
    }
}
