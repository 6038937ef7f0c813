//! The node lifecycle controller of kube-controller-manager (v1.21, taint
//! manager on), as far as an agent can see it:
//!
//! - **Health.** A heartbeat is a change of the node's Lease `spec.renewTime`
//!   (`kube-node-lease/<node>`) or of its Ready condition's
//!   `lastHeartbeatTime`, timed by this controller's clock when it sees the
//!   change (as upstream: board clocks without an RTC may be far off). With
//!   none for `--node-monitor-grace-period` (40 s), Ready, MemoryPressure,
//!   DiskPressure and PIDPressure become `Unknown`, reason `NodeStatusUnknown`,
//!   message "Kubelet stopped posting node status." (lastHeartbeatTime kept,
//!   lastTransitionTime now; NetworkUnavailable is left alone). A node that
//!   never posted a Ready condition gets them after
//!   `--node-startup-grace-period` (60 s) from its creation, reason
//!   `NodeStatusNeverUpdated`, "Kubelet never posted node status.". A Ready
//!   node going Unknown gets a `NodeNotReady` Event.
//! - **Taints.** NoSchedule taints follow the conditions (Ready False →
//!   `node.kubernetes.io/not-ready`, Unknown → `node.kubernetes.io/unreachable`,
//!   pressure conditions True → `…/memory-pressure`, `…/disk-pressure`,
//!   `…/pid-pressure`, NetworkUnavailable True → `…/network-unavailable`,
//!   `spec.unschedulable` → `…/unschedulable`); the taint manager's NoExecute
//!   `not-ready`/`unreachable` follow Ready. Added taints carry `timeAdded`, as
//!   the controller's taint swap writes them; taints that no longer apply go.
//! - **Pods.** While a node's Ready is not True, its pods' Ready conditions
//!   are set False (they leave Service endpoints), with a `NodeNotReady` Event.
//!
//! Left out: evicting pods from NoExecute-tainted nodes after their
//! `tolerationSeconds`, zone-based rate limiting.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{
    Controller, EventKind, LEASE_NAMESPACE, LEASES, Report, Taint, condition, log, name_of,
    namespace_of, object_field, record, str_at, taints_of, uid_of, update,
};
use crate::store::{self, Event, Store};

/// The Event source.
const COMPONENT: &str = "node-controller";
/// The conditions a lost node's kubelet no longer vouches for.
const KUBELET_CONDITIONS: [&str; 4] = ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"];
const NOT_READY: &str = "node.kubernetes.io/not-ready";
const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
const UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";
/// (condition, status, NoSchedule taint key), as upstream's
/// `nodeConditionToTaintKeyStatusMap`.
const CONDITION_TAINTS: [(&str, &str, &str); 6] = [
    ("Ready", "False", NOT_READY),
    ("Ready", "Unknown", UNREACHABLE),
    (
        "MemoryPressure",
        "True",
        "node.kubernetes.io/memory-pressure",
    ),
    ("DiskPressure", "True", "node.kubernetes.io/disk-pressure"),
    (
        "NetworkUnavailable",
        "True",
        "node.kubernetes.io/network-unavailable",
    ),
    ("PIDPressure", "True", "node.kubernetes.io/pid-pressure"),
];

/// What was last seen of a node's heartbeats.
#[derive(Debug)]
struct Health {
    /// Which node object (a recreated node starts over).
    uid: String,
    /// The Ready condition's lastHeartbeatTime (`None`: no Ready condition).
    heartbeat: Option<Value>,
    /// The Lease's renewTime (`None`: no Lease).
    renew: Option<Value>,
    /// When the last heartbeat was seen.
    probe: Instant,
}

/// The node lifecycle controller.
#[derive(Debug)]
pub struct NodeLifecycle {
    grace: Duration,
    startup_grace: Duration,
    period: Duration,
    health: HashMap<String, Health>,
}

/// The status of a node's condition of `kind`.
fn status_of<'a>(node: &'a Value, kind: &str) -> Option<&'a str> {
    condition(node, kind).map(|c| str_at(c, "/status"))
}

/// The Ready condition's lastHeartbeatTime, `None` without a Ready condition.
fn heartbeat_of(node: &Value) -> Option<Value> {
    condition(node, "Ready").map(|c| c.get("lastHeartbeatTime").cloned().unwrap_or(Value::Null))
}

/// Sets the kubelet's conditions to Unknown as a lost node's; whether
/// anything changed.
fn mark_unknown(node: &mut Value, now: &str) -> bool {
    let created = node
        .pointer("/metadata/creationTimestamp")
        .cloned()
        .unwrap_or(Value::Null);
    let Some(status) = object_field(node, "status") else {
        return false;
    };
    let conditions = status.entry("conditions").or_insert_with(|| json!([]));
    if !conditions.is_array() {
        *conditions = json!([]);
    }
    let Some(list) = conditions.as_array_mut() else {
        return false;
    };
    let mut changed = false;
    for kind in KUBELET_CONDITIONS {
        let found = list
            .iter_mut()
            .filter_map(Value::as_object_mut)
            .find(|c| c.get("type").and_then(Value::as_str) == Some(kind));
        match found {
            None => {
                list.push(json!({
                    "type": kind, "status": "Unknown", "reason": "NodeStatusNeverUpdated",
                    "message": "Kubelet never posted node status.",
                    "lastHeartbeatTime": created, "lastTransitionTime": now,
                }));
                changed = true;
            }
            Some(c) if c.get("status").and_then(Value::as_str) != Some("Unknown") => {
                c.insert("status".into(), json!("Unknown"));
                c.insert("reason".into(), json!("NodeStatusUnknown"));
                c.insert(
                    "message".into(),
                    json!("Kubelet stopped posting node status."),
                );
                c.insert("lastTransitionTime".into(), json!(now));
                changed = true;
            }
            Some(_) => {}
        }
    }
    changed
}

/// The controller-owned taints `node`'s conditions call for.
fn wanted_taints(node: &Value) -> Vec<Taint> {
    let mut taints: Vec<Taint> = CONDITION_TAINTS
        .iter()
        .filter(|(kind, status, _)| status_of(node, kind) == Some(*status))
        .map(|(_, _, key)| Taint::new(key, "NoSchedule"))
        .collect();
    if node.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
        taints.push(Taint::new(UNSCHEDULABLE, "NoSchedule"));
    }
    match status_of(node, "Ready") {
        Some("False") => taints.push(Taint::new(NOT_READY, "NoExecute")),
        Some("Unknown") => taints.push(Taint::new(UNREACHABLE, "NoExecute")),
        _ => {}
    }
    taints
}

/// Whether this controller owns a taint of that key and effect.
fn managed(taint: &Taint) -> bool {
    match taint.effect.as_str() {
        "NoSchedule" => {
            taint.key == UNSCHEDULABLE || CONDITION_TAINTS.iter().any(|(_, _, k)| *k == taint.key)
        }
        "NoExecute" => taint.key == NOT_READY || taint.key == UNREACHABLE,
        _ => false,
    }
}

/// Adds the taints the conditions call for and removes owned ones they no
/// longer do; others' taints stay as they are. Whether anything changed.
fn reconcile_taints(node: &mut Value, now: &str) -> bool {
    let wanted = wanted_taints(node);
    let current: Vec<Value> = node
        .pointer("/spec/taints")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let same = |a: &Taint, b: &Taint| a.key == b.key && a.effect == b.effect;
    let mut taints: Vec<Value> = current
        .iter()
        .filter(|raw| match Taint::from_json(raw) {
            Some(t) => !managed(&t) || wanted.iter().any(|w| same(w, &t)),
            None => true,
        })
        .cloned()
        .collect();
    let present = taints_of(node);
    for taint in &wanted {
        if !present.iter().any(|p| same(p, taint)) {
            taints.push(json!({"key": taint.key, "effect": taint.effect, "timeAdded": now}));
        }
    }
    if taints == current {
        return false;
    }
    let Some(spec) = object_field(node, "spec") else {
        return false;
    };
    // Go omits an empty taint list.
    if taints.is_empty() {
        spec.remove("taints");
    } else {
        spec.insert("taints".into(), Value::Array(taints));
    }
    true
}

/// Sets a pod's Ready condition False, as on a lost node; whether it was True.
fn mark_pod_not_ready(pod: &mut Value, now: &str) -> bool {
    let Some(conditions) = pod
        .pointer_mut("/status/conditions")
        .and_then(Value::as_array_mut)
    else {
        return false;
    };
    let ready = conditions
        .iter_mut()
        .filter_map(Value::as_object_mut)
        .find(|c| c.get("type").and_then(Value::as_str) == Some("Ready"));
    match ready {
        Some(c) if c.get("status").and_then(Value::as_str) == Some("True") => {
            c.insert("status".into(), json!("False"));
            c.insert("lastTransitionTime".into(), json!(now));
            true
        }
        _ => false,
    }
}

impl NodeLifecycle {
    /// A controller with the grace periods and resync period given.
    pub fn new(grace: Duration, startup_grace: Duration, period: Duration) -> Self {
        Self {
            grace,
            startup_grace,
            period,
            health: HashMap::new(),
        }
    }

    /// One pass at monotonic time `now`, wall-clock seconds `wall`.
    fn pass_at(&mut self, store: &Store, now: Instant, wall: u64) {
        let (nodes, _) = store.list("nodes", None, |n| !name_of(n).is_empty());
        self.health.retain(|name, h| {
            nodes
                .iter()
                .any(|n| name_of(n) == name && uid_of(n) == h.uid)
        });
        for node in &nodes {
            self.check(store, node, now, wall);
        }
    }

    /// Health, taints and pods of one node.
    fn check(&mut self, store: &Store, node: &Value, now: Instant, wall: u64) {
        let name = name_of(node).to_owned();
        let renew = store
            .get(LEASES, LEASE_NAMESPACE, &name)
            .ok()
            .and_then(|lease| lease.pointer("/spec/renewTime").cloned());
        let heartbeat = heartbeat_of(node);
        let never_posted = heartbeat.is_none();
        let health = match self.health.entry(name.clone()) {
            Entry::Occupied(entry) => {
                let health = entry.into_mut();
                if health.heartbeat != heartbeat || health.renew != renew {
                    health.heartbeat = heartbeat;
                    health.renew = renew;
                    health.probe = now;
                }
                health
            }
            Entry::Vacant(entry) => {
                // First sight (or a restart): as upstream, the clock starts
                // now, or at creation for a node that never posted status.
                let created = store::parse_rfc3339(str_at(node, "/metadata/creationTimestamp"));
                let probe = match created {
                    Some(created) if never_posted => now
                        .checked_sub(Duration::from_secs(wall.saturating_sub(created)))
                        .unwrap_or(now),
                    _ => now,
                };
                entry.insert(Health {
                    uid: uid_of(node).to_owned(),
                    heartbeat,
                    renew,
                    probe,
                })
            }
        };
        let grace = if never_posted {
            self.startup_grace
        } else {
            self.grace
        };
        let stale = now.saturating_duration_since(health.probe) > grace;
        let seen = health.heartbeat.clone();
        let stamp = store::rfc3339(wall);
        let mut was_ready = false;
        let mut fresh = false;
        let written = update(store, "nodes", "", &name, |node| {
            was_ready = status_of(node, "Ready") == Some("True");
            // A heartbeat that landed since the list (a 409 sends us here
            // again) is a heartbeat: no marking the node lost over it.
            fresh = heartbeat_of(node) != seen;
            let mut changed = stale && !fresh && mark_unknown(node, &stamp);
            changed |= reconcile_taints(node, &stamp);
            changed
        });
        let current = match written {
            Ok(Some(written)) => {
                // Our own write (a never-posted node's Ready, say) is no heartbeat.
                if let Some(health) = self.health.get_mut(&name) {
                    if fresh {
                        health.probe = now;
                    }
                    health.heartbeat = heartbeat_of(&written);
                }
                if was_ready && status_of(&written, "Ready") != Some("True") {
                    log(
                        COMPONENT,
                        format_args!(
                            "node {name} is now NodeNotReady (no heartbeat for {grace:?})"
                        ),
                    );
                    let message = format!("Node {name} status is now: NodeNotReady");
                    record(
                        store,
                        &Report {
                            component: COMPONENT,
                            kind: "Node",
                            object: &written,
                            event_type: EventKind::Normal,
                            reason: "NodeNotReady",
                            message: &message,
                        },
                    );
                }
                written
            }
            Ok(None) => node.clone(),
            Err(e) => {
                log(COMPONENT, format_args!("cannot update node {name}: {e}"));
                node.clone()
            }
        };
        if matches!(status_of(&current, "Ready"), Some(s) if s != "True") {
            mark_pods_not_ready(store, &name, &stamp);
        }
    }
}

/// Sets the Ready condition of `node`'s pods False.
fn mark_pods_not_ready(store: &Store, node: &str, now: &str) {
    let (pods, _) = store.list("pods", None, |p| {
        str_at(p, "/spec/nodeName") == node && status_of(p, "Ready") == Some("True")
    });
    for pod in pods {
        let (namespace, name) = (namespace_of(&pod), name_of(&pod));
        let written = update(store, "pods", namespace, name, |pod| {
            str_at(pod, "/spec/nodeName") == node && mark_pod_not_ready(pod, now)
        });
        match written {
            Ok(Some(written)) => record(
                store,
                &Report {
                    component: COMPONENT,
                    kind: "Pod",
                    object: &written,
                    event_type: EventKind::Warning,
                    reason: "NodeNotReady",
                    message: "Node is not ready",
                },
            ),
            Ok(None) => {}
            Err(e) => log(
                COMPONENT,
                format_args!("cannot mark pod {namespace}/{name} not ready: {e}"),
            ),
        }
    }
}

impl Controller for NodeLifecycle {
    const NAME: &'static str = COMPONENT;

    fn wants(&self, event: &Event) -> bool {
        matches!(
            event.resource.as_str(),
            "nodes" | "pods" | "leases.coordination.k8s.io"
        )
    }

    fn period(&self) -> Duration {
        self.period
    }

    fn pass(&mut self, store: &Store) {
        self.pass_at(store, Instant::now(), store::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_secs(40);

    fn ready_node(store: &Store, name: &str, ready: &str, heartbeat: &str) {
        let conditions: Vec<Value> = KUBELET_CONDITIONS
            .iter()
            .map(|kind| {
                let status = if *kind == "Ready" { ready } else { "False" };
                json!({"type": kind, "status": status, "reason": "Kubelet", "message": "m",
                       "lastHeartbeatTime": heartbeat, "lastTransitionTime": "2026-01-01T00:00:00Z"})
            })
            .collect();
        store
            .create(
                "nodes",
                "",
                json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
                       "spec": {"taints": [{"key": "dedicated", "value": "edge", "effect": "NoSchedule"}]},
                       "status": {"conditions": conditions}}),
            )
            .unwrap();
    }

    fn lease(store: &Store, name: &str, renew: &str) {
        let object = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": name, "namespace": LEASE_NAMESPACE},
            "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": renew}});
        match store.get(LEASES, LEASE_NAMESPACE, name) {
            Ok(mut current) => {
                current["spec"]["renewTime"] = json!(renew);
                store.update(LEASES, LEASE_NAMESPACE, current).unwrap();
            }
            Err(_) => {
                store.create(LEASES, LEASE_NAMESPACE, object).unwrap();
            }
        }
    }

    fn node(store: &Store, name: &str) -> Value {
        store.get("nodes", "", name).unwrap()
    }

    fn taint_keys(node: &Value) -> Vec<(String, String)> {
        taints_of(node)
            .into_iter()
            .map(|t| (t.key, t.effect))
            .collect()
    }

    fn pair(key: &str, effect: &str) -> (String, String) {
        (key.to_owned(), effect.to_owned())
    }

    #[test]
    fn a_node_without_heartbeats_goes_unknown_and_unreachable() {
        let store = Store::new();
        ready_node(&store, "edge", "True", "2026-01-01T00:00:00Z");
        lease(&store, "edge", "2026-01-01T00:00:00.000000Z");
        let mut controller =
            NodeLifecycle::new(GRACE, Duration::from_secs(60), Duration::from_secs(5));
        let t0 = Instant::now();
        let wall = store::now();
        controller.pass_at(&store, t0, wall);
        // Lease renewals keep it alive past the grace period.
        lease(&store, "edge", "2026-01-01T00:00:30.000000Z");
        controller.pass_at(&store, t0 + Duration::from_secs(30), wall + 30);
        controller.pass_at(&store, t0 + Duration::from_secs(60), wall + 60);
        let alive = node(&store, "edge");
        assert_eq!(status_of(&alive, "Ready"), Some("True"));
        assert_eq!(taint_keys(&alive), [pair("dedicated", "NoSchedule")]);

        controller.pass_at(&store, t0 + Duration::from_secs(71), wall + 71);
        let lost = node(&store, "edge");
        let stamp = store::rfc3339(wall + 71);
        for kind in KUBELET_CONDITIONS {
            let c = condition(&lost, kind).unwrap();
            assert_eq!(c["status"], "Unknown", "{kind}");
            assert_eq!(c["reason"], "NodeStatusUnknown");
            assert_eq!(c["message"], "Kubelet stopped posting node status.");
            assert_eq!(c["lastHeartbeatTime"], "2026-01-01T00:00:00Z");
            assert_eq!(c["lastTransitionTime"], stamp.as_str());
        }
        assert_eq!(
            taint_keys(&lost),
            [
                pair("dedicated", "NoSchedule"),
                pair(UNREACHABLE, "NoSchedule"),
                pair(UNREACHABLE, "NoExecute")
            ]
        );
        let taints = lost["spec"]["taints"].as_array().unwrap();
        assert_eq!(taints[2]["timeAdded"], stamp.as_str());
        assert!(taints[0].get("timeAdded").is_none());
        let (events, _) = store.list("events", Some("default"), |e| e["reason"] == "NodeNotReady");
        assert_eq!(events.len(), 1);
        assert_eq!(
            events[0]["message"],
            "Node edge status is now: NodeNotReady"
        );
        assert_eq!(events[0]["source"]["component"], "node-controller");

        // Stable while lost: no rewrites.
        let version = lost["metadata"]["resourceVersion"].clone();
        controller.pass_at(&store, t0 + Duration::from_secs(80), wall + 80);
        assert_eq!(node(&store, "edge")["metadata"]["resourceVersion"], version);

        // The kubelet comes back and posts Ready: the taints go.
        let mut back = node(&store, "edge");
        for c in back["status"]["conditions"].as_array_mut().unwrap() {
            c["status"] = json!(if c["type"] == "Ready" {
                "True"
            } else {
                "False"
            });
            c["lastHeartbeatTime"] = json!("2026-01-01T00:01:30Z");
        }
        store.update("nodes", "", back).unwrap();
        controller.pass_at(&store, t0 + Duration::from_secs(90), wall + 90);
        let healthy = node(&store, "edge");
        assert_eq!(status_of(&healthy, "Ready"), Some("True"));
        assert_eq!(taint_keys(&healthy), [pair("dedicated", "NoSchedule")]);
    }

    #[test]
    fn condition_taints_follow_the_conditions() {
        let store = Store::new();
        ready_node(&store, "n", "False", "2026-01-01T00:00:00Z");
        let mut controller =
            NodeLifecycle::new(GRACE, Duration::from_secs(60), Duration::from_secs(5));
        let (t0, wall) = (Instant::now(), store::now());
        controller.pass_at(&store, t0, wall);
        assert_eq!(
            taint_keys(&node(&store, "n")),
            [
                pair("dedicated", "NoSchedule"),
                pair(NOT_READY, "NoSchedule"),
                pair(NOT_READY, "NoExecute")
            ]
        );
        // Ready False reported by the kubelet: no NodeNotReady from us.
        assert!(store.list("events", None, |_| true).0.is_empty());

        let mut changed = node(&store, "n");
        changed["spec"]["unschedulable"] = json!(true);
        for c in changed["status"]["conditions"].as_array_mut().unwrap() {
            if c["type"] == "Ready" {
                c["status"] = json!("True");
            }
            if c["type"] == "DiskPressure" {
                c["status"] = json!("True");
            }
        }
        store.update("nodes", "", changed).unwrap();
        controller.pass_at(&store, t0 + Duration::from_secs(1), wall + 1);
        assert_eq!(
            taint_keys(&node(&store, "n")),
            [
                pair("dedicated", "NoSchedule"),
                pair("node.kubernetes.io/disk-pressure", "NoSchedule"),
                pair(UNSCHEDULABLE, "NoSchedule")
            ]
        );
    }

    #[test]
    fn a_node_that_never_posted_status_is_unknown_after_the_startup_grace() {
        let store = Store::new();
        store
            .create(
                "nodes",
                "",
                json!({"metadata": {"name": "mute"}, "status": {"conditions": [
                {"type": "NetworkUnavailable", "status": "False"}]}}),
            )
            .unwrap();
        let created = node(&store, "mute")["metadata"]["creationTimestamp"].clone();
        let mut controller =
            NodeLifecycle::new(GRACE, Duration::from_secs(60), Duration::from_secs(5));
        let (t0, wall) = (Instant::now(), store::now());
        controller.pass_at(&store, t0, wall);
        controller.pass_at(&store, t0 + Duration::from_secs(50), wall + 50);
        assert!(condition(&node(&store, "mute"), "Ready").is_none());
        controller.pass_at(&store, t0 + Duration::from_secs(62), wall + 62);
        let mute = node(&store, "mute");
        let ready = condition(&mute, "Ready").unwrap();
        assert_eq!(ready["status"], "Unknown");
        assert_eq!(ready["reason"], "NodeStatusNeverUpdated");
        assert_eq!(ready["message"], "Kubelet never posted node status.");
        assert_eq!(ready["lastHeartbeatTime"], created);
        assert_eq!(status_of(&mute, "NetworkUnavailable"), Some("False"));
        assert_eq!(mute["status"]["conditions"].as_array().unwrap().len(), 5);
        assert_eq!(
            taint_keys(&mute),
            [
                pair(UNREACHABLE, "NoSchedule"),
                pair(UNREACHABLE, "NoExecute")
            ]
        );
        // Our own Ready condition is not taken for a heartbeat later.
        let version = mute["metadata"]["resourceVersion"].clone();
        controller.pass_at(&store, t0 + Duration::from_secs(200), wall + 200);
        assert_eq!(node(&store, "mute")["metadata"]["resourceVersion"], version);
    }

    #[test]
    fn pods_on_a_lost_node_are_marked_not_ready() {
        let store = Store::new();
        ready_node(&store, "edge", "True", "2026-01-01T00:00:00Z");
        for (name, node_name) in [("on", "edge"), ("elsewhere", "other")] {
            store
                .create("pods", "default", json!({"metadata": {"name": name}, "spec": {"nodeName": node_name},
                    "status": {"conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "x"}]}}))
                .unwrap();
        }
        let mut controller =
            NodeLifecycle::new(GRACE, Duration::from_secs(60), Duration::from_secs(5));
        let (t0, wall) = (Instant::now(), store::now());
        controller.pass_at(&store, t0, wall);
        controller.pass_at(&store, t0 + Duration::from_secs(41), wall + 41);
        let on = store.get("pods", "default", "on").unwrap();
        assert_eq!(status_of(&on, "Ready"), Some("False"));
        let elsewhere = store.get("pods", "default", "elsewhere").unwrap();
        assert_eq!(status_of(&elsewhere, "Ready"), Some("True"));
        let (events, _) = store.list("events", Some("default"), |e| {
            e["involvedObject"]["kind"] == "Pod"
        });
        assert_eq!(events.len(), 1);
        assert_eq!(events[0]["message"], "Node is not ready");
        assert_eq!(events[0]["type"], "Warning");
    }

    #[test]
    fn malformed_nodes_do_not_stop_the_controller() {
        let store = Store::new();
        for (name, extra) in [
            ("a", json!({"status": "nope"})),
            (
                "b",
                json!({"status": {"conditions": "nope"}, "spec": {"taints": "nope"}}),
            ),
            (
                "c",
                json!({"status": {"conditions": [1, {"type": "Ready"}]}, "spec": 5}),
            ),
        ] {
            let mut node = json!({"metadata": {"name": name}});
            if let (Some(node), Some(extra)) = (node.as_object_mut(), extra.as_object()) {
                node.extend(extra.clone());
            }
            store.create("nodes", "", node).unwrap();
        }
        let mut controller =
            NodeLifecycle::new(GRACE, Duration::from_secs(60), Duration::from_secs(5));
        let (t0, wall) = (Instant::now(), store::now());
        controller.pass_at(&store, t0, wall);
        controller.pass_at(&store, t0 + Duration::from_secs(100), wall + 100);
        assert_eq!(status_of(&node(&store, "a"), "Ready"), Some("Unknown"));
        assert_eq!(status_of(&node(&store, "c"), "Ready"), Some("Unknown"));
    }
}
