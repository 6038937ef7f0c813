//! The controllers of a running devserver, driven as an agent and `kubectl`
//! would drive a K3s server, over its API with the admin certificate: node
//! initialisation by the cloud controller, pod CIDRs, scheduling, and the
//! node lifecycle when heartbeats stop and resume.

mod common;

use std::time::{Duration, Instant};

use common::{Devserver, PASSWORD, admin_credentials, scratch};
use serde_json::{Value, json};

/// An API client with the admin certificate.
struct Client<'a> {
    server: &'a Devserver,
    args: Vec<String>,
}

impl<'a> Client<'a> {
    fn new(server: &'a Devserver) -> Self {
        let (cert, key) = admin_credentials(&server.dir);
        let args = vec![
            "--cacert".into(),
            server.dir.join("ca.crt").display().to_string(),
            "--cert".into(),
            cert.display().to_string(),
            "--key".into(),
            key.display().to_string(),
        ];
        Self { server, args }
    }

    /// One request; (status, JSON body).
    fn call(&self, method: &str, path: &str, body: Option<(&str, &Value)>) -> (u16, Value) {
        let mut args = self.args.clone();
        args.extend(["-X".into(), method.into()]);
        if let Some((content_type, body)) = body {
            args.extend([
                "-H".into(),
                format!("Content-Type: {content_type}"),
                "--data".into(),
                body.to_string(),
            ]);
        }
        args.push(format!("{}{path}", self.server.url));
        let (status, _, bytes) = self.server.curl(&args);
        let value = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!("{method} {path}: {e}: {}", String::from_utf8_lossy(&bytes))
        });
        (status, value)
    }

    fn get(&self, path: &str) -> Value {
        let (status, value) = self.call("GET", path, None);
        assert_eq!(status, 200, "GET {path}: {value}");
        value
    }

    fn create(&self, path: &str, object: &Value) -> Value {
        let (status, value) = self.call("POST", path, Some(("application/json", object)));
        assert_eq!(status, 201, "POST {path}: {value}");
        value
    }

    fn patch(&self, path: &str, patch: &Value) -> Value {
        let (status, value) =
            self.call("PATCH", path, Some(("application/merge-patch+json", patch)));
        assert_eq!(status, 200, "PATCH {path}: {value}");
        value
    }
}

/// Polls `probe` until it yields, running `tick` before each try (a kubelet's
/// heartbeat, say); panics after `timeout` with `what`.
fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut tick: impl FnMut(),
    mut probe: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        tick();
        if let Some(found) = probe() {
            return found;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Now as a Kubernetes MicroTime (`2026-11-27T21:13:50.384202Z`).
fn micro_time() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let (secs, micros) = (now.as_secs() as i64, now.subsec_micros());
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The kubelet's four conditions, healthy or with Ready False.
fn conditions(ready: bool, heartbeat: &str) -> Value {
    let (status, reason, message) = if ready {
        ("True", "KubeletReady", "kubelet is posting ready status")
    } else {
        (
            "False",
            "KubeletNotReady",
            "container runtime network not ready: NetworkReady=false",
        )
    };
    json!([
        {"type": "MemoryPressure", "status": "False", "reason": "KubeletHasSufficientMemory",
         "message": "kubelet has sufficient memory available",
         "lastHeartbeatTime": heartbeat, "lastTransitionTime": "2026-11-27T21:06:47Z"},
        {"type": "DiskPressure", "status": "False", "reason": "KubeletHasNoDiskPressure",
         "message": "kubelet has no disk pressure",
         "lastHeartbeatTime": heartbeat, "lastTransitionTime": "2026-11-27T21:06:47Z"},
        {"type": "PIDPressure", "status": "False", "reason": "KubeletHasSufficientPID",
         "message": "kubelet has sufficient PID available",
         "lastHeartbeatTime": heartbeat, "lastTransitionTime": "2026-11-27T21:06:47Z"},
        {"type": "Ready", "status": status, "reason": reason, "message": message,
         "lastHeartbeatTime": heartbeat, "lastTransitionTime": "2026-11-27T21:06:57Z"}
    ])
}

/// A Node as a k3s agent's kubelet registers it (external cloud provider:
/// the uninitialized taint), with its address annotations already added.
fn agent_node(name: &str, ip: &str, board: &str, extra_taints: &[Value]) -> Value {
    let mut taints = vec![
        json!({"key": "node.cloudprovider.kubernetes.io/uninitialized",
                                 "value": "true", "effect": "NoSchedule"}),
    ];
    taints.extend(extra_taints.iter().cloned());
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                       "kubernetes.io/arch": "arm64", "example.com/board": board},
            "annotations": {"k3s.io/internal-ip": ip, "k3s.io/hostname": name,
                            "volumes.kubernetes.io/controller-managed-attach-detach": "true"}
        },
        "spec": {"taints": taints},
        "status": {
            "capacity": {"cpu": "4", "memory": "3884376Ki", "pods": "110", "ephemeral-storage": "30Gi"},
            "allocatable": {"cpu": "4", "memory": "3884376Ki", "pods": "110", "ephemeral-storage": "28Gi"},
            "conditions": conditions(true, &micro_time()),
            "addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}],
            "nodeInfo": {"architecture": "arm64", "operatingSystem": "linux", "kubeletVersion": "v1.21.2+k3s1"}
        }
    })
}

fn pod(name: &str, board: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "nodeSelector": {"example.com/board": board},
            "containers": [{"name": "c", "image": "busybox:1.36",
                            "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]
        }
    })
}

fn condition<'a>(object: &'a Value, kind: &str) -> Option<&'a Value> {
    object["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
}

fn taint_pairs(node: &Value) -> Vec<(String, String)> {
    node["spec"]["taints"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|t| {
                    (
                        t["key"].as_str().unwrap_or("").to_owned(),
                        t["effect"].as_str().unwrap_or("").to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn pair(key: &str, effect: &str) -> (String, String) {
    (key.to_owned(), effect.to_owned())
}

#[test]
fn nodes_are_initialised_given_cidrs_and_pods_scheduled() {
    let dir = scratch("controllers");
    let server = Devserver::start(&dir);
    let api = Client::new(&server);
    let timeout = Duration::from_secs(15);

    api.create(
        "/api/v1/nodes",
        &agent_node("agent-1", "10.0.0.11", "rpi4", &[]),
    );
    let dedicated = json!({"key": "dedicated", "value": "edge", "effect": "NoSchedule"});
    api.create(
        "/api/v1/nodes",
        &agent_node("agent-2", "10.0.0.12", "other", &[dedicated.clone()]),
    );

    // The cloud controller and the range allocator.
    let initialised = |name: &str| {
        wait_for(
            &format!("{name} initialised"),
            timeout,
            || {},
            || {
                let node = api.get(&format!("/api/v1/nodes/{name}"));
                let done = node["spec"]["providerID"].is_string()
                    && node["spec"]["podCIDR"].is_string()
                    && !taint_pairs(&node)
                        .iter()
                        .any(|(k, _)| k == "node.cloudprovider.kubernetes.io/uninitialized");
                done.then_some(node)
            },
        )
    };
    let one = initialised("agent-1");
    assert_eq!(one["spec"]["providerID"], "k3s://agent-1");
    assert_eq!(one["spec"]["podCIDR"], "10.42.0.0/24");
    assert_eq!(one["spec"]["podCIDRs"], json!(["10.42.0.0/24"]));
    assert!(one["spec"].get("taints").is_none(), "{}", one["spec"]);
    let labels = &one["metadata"]["labels"];
    assert_eq!(labels["node.kubernetes.io/instance-type"], "k3s");
    assert_eq!(labels["beta.kubernetes.io/instance-type"], "k3s");
    assert_eq!(
        one["status"]["addresses"],
        json!([{"address": "10.0.0.11", "type": "InternalIP"}, {"address": "agent-1", "type": "Hostname"}])
    );
    let two = initialised("agent-2");
    assert_eq!(two["spec"]["providerID"], "k3s://agent-2");
    assert_eq!(two["spec"]["podCIDR"], "10.42.1.0/24");
    assert_eq!(two["spec"]["podCIDRs"], json!(["10.42.1.0/24"]));
    assert_eq!(two["spec"]["taints"], json!([dedicated]));

    // The scheduler: one pod fits the Ready node its selector names...
    api.create("/api/v1/namespaces/default/pods", &pod("web", "rpi4"));
    let web = wait_for(
        "web bound",
        timeout,
        || {},
        || {
            let pod = api.get("/api/v1/namespaces/default/pods/web");
            pod["spec"]["nodeName"].is_string().then_some(pod)
        },
    );
    assert_eq!(web["spec"]["nodeName"], "agent-1");
    assert_eq!(condition(&web, "PodScheduled").unwrap()["status"], "True");

    // ...the other's node has a taint it does not tolerate.
    api.create("/api/v1/namespaces/default/pods", &pod("picky", "other"));
    let picky = wait_for(
        "picky unschedulable",
        timeout,
        || {},
        || {
            let pod = api.get("/api/v1/namespaces/default/pods/picky");
            condition(&pod, "PodScheduled").is_some().then_some(pod)
        },
    );
    assert!(picky["spec"].get("nodeName").is_none());
    assert_eq!(picky["status"]["phase"], "Pending");
    let scheduled = condition(&picky, "PodScheduled").unwrap();
    assert_eq!(scheduled["status"], "False");
    assert_eq!(scheduled["reason"], "Unschedulable");
    assert_eq!(
        scheduled["message"],
        "0/2 nodes are available: 1 node(s) didn't match Pod's node affinity, 1 node(s) had taint {dedicated: edge}, that the pod didn't tolerate."
    );

    // The Events, as the scheduler writes them.
    let events = api.get("/api/v1/namespaces/default/events");
    let find = |reason: &str, name: &str| {
        events["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["reason"] == reason && e["involvedObject"]["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no {reason} event for {name}: {events}"))
    };
    let bound = find("Scheduled", "web");
    assert_eq!(
        bound["message"],
        "Successfully assigned default/web to agent-1"
    );
    assert_eq!(bound["type"], "Normal");
    assert_eq!(bound["source"]["component"], "default-scheduler");
    assert_eq!(bound["involvedObject"]["kind"], "Pod");
    assert_eq!(bound["involvedObject"]["uid"], web["metadata"]["uid"]);
    assert!(
        bound["metadata"]["name"]
            .as_str()
            .unwrap()
            .starts_with("web.")
    );
    let failed = find("FailedScheduling", "picky");
    assert_eq!(failed["type"], "Warning");
    assert_eq!(failed["message"], scheduled["message"]);
    assert!(failed["count"].as_i64().unwrap() >= 1);

    // When the taint goes, the pending pod is retried and bound.
    api.patch("/api/v1/nodes/agent-2", &json!({"spec": {"taints": []}}));
    let picky = wait_for(
        "picky bound",
        timeout,
        || {},
        || {
            let pod = api.get("/api/v1/namespaces/default/pods/picky");
            pod["spec"]["nodeName"].is_string().then_some(pod)
        },
    );
    assert_eq!(picky["spec"]["nodeName"], "agent-2");
    assert_eq!(condition(&picky, "PodScheduled").unwrap()["status"], "True");

    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_node_whose_heartbeats_stop_goes_unknown_and_comes_back() {
    let dir = scratch("lifecycle");
    let server = Devserver::start_with(
        &dir,
        &[
            "--token",
            PASSWORD,
            "--node-monitor-grace-period",
            "3s",
            "--node-monitor-period",
            "500ms",
        ],
    );
    let api = Client::new(&server);
    let heartbeat = micro_time();
    let mut node = agent_node("edge", "10.0.0.21", "rpi4", &[]);
    node["status"]["conditions"] = conditions(true, &heartbeat);
    api.create("/api/v1/nodes", &node);
    let leases = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases";
    api.create(
        leases,
        &json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": "edge", "namespace": "kube-node-lease"},
                "spec": {"holderIdentity": "edge", "leaseDurationSeconds": 40,
                         "renewTime": micro_time()}}),
    );
    let renew = || {
        api.patch(
            &format!("{leases}/edge"),
            &json!({"spec": {"renewTime": micro_time()}}),
        );
    };
    let get_node = || api.get("/api/v1/nodes/edge");
    let unreachable = "node.kubernetes.io/unreachable";
    let not_ready = "node.kubernetes.io/not-ready";

    // Lease renewals alone keep it alive well past the grace period.
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        renew();
        std::thread::sleep(Duration::from_millis(400));
    }
    let alive = get_node();
    assert_eq!(condition(&alive, "Ready").unwrap()["status"], "True");
    assert!(!taint_pairs(&alive).iter().any(|(k, _)| k == unreachable));

    // Silence: Unknown and unreachable after the (shortened) grace period.
    renew();
    let silent_since = Instant::now();
    let lost = wait_for(
        "edge Unknown",
        Duration::from_secs(15),
        || {},
        || {
            let node = get_node();
            let unknown = condition(&node, "Ready").is_some_and(|c| c["status"] == "Unknown");
            let tainted = taint_pairs(&node).contains(&pair(unreachable, "NoExecute"));
            (unknown && tainted).then_some(node)
        },
    );
    assert!(
        silent_since.elapsed() >= Duration::from_millis(2900),
        "lost after {:?}",
        silent_since.elapsed()
    );
    for kind in ["MemoryPressure", "DiskPressure", "PIDPressure", "Ready"] {
        let c = condition(&lost, kind).unwrap();
        assert_eq!(c["status"], "Unknown", "{kind}");
        assert_eq!(c["reason"], "NodeStatusUnknown", "{kind}");
        assert_eq!(
            c["message"], "Kubelet stopped posting node status.",
            "{kind}"
        );
        assert_eq!(c["lastHeartbeatTime"], heartbeat.as_str(), "{kind}");
    }
    let taints = lost["spec"]["taints"].as_array().unwrap();
    assert_eq!(
        taint_pairs(&lost),
        [
            pair(unreachable, "NoSchedule"),
            pair(unreachable, "NoExecute")
        ]
    );
    assert!(taints[1]["timeAdded"].is_string());
    let events = api.get("/api/v1/namespaces/default/events");
    assert!(
        events["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["reason"] == "NodeNotReady"
                && e["message"] == "Node edge status is now: NodeNotReady"
                && e["source"]["component"] == "node-controller"),
        "{events}"
    );

    // The kubelet is back: Lease renewed, Ready posted; the taints go.
    let post_status = |ready: bool| {
        renew();
        api.patch(
            "/api/v1/nodes/edge/status",
            &json!({"status": {"conditions": conditions(ready, &micro_time())}}),
        );
    };
    post_status(true);
    let back = wait_for("edge healthy", Duration::from_secs(10), renew, || {
        let node = get_node();
        taint_pairs(&node).is_empty().then_some(node)
    });
    assert_eq!(condition(&back, "Ready").unwrap()["status"], "True");

    // A kubelet reporting Ready False gets the not-ready taints, still
    // heartbeating; Ready again removes them.
    post_status(false);
    let down = wait_for("edge not ready", Duration::from_secs(10), renew, || {
        let node = get_node();
        (taint_pairs(&node).len() == 2).then_some(node)
    });
    assert_eq!(
        taint_pairs(&down),
        [pair(not_ready, "NoSchedule"), pair(not_ready, "NoExecute")]
    );
    assert_eq!(
        condition(&down, "Ready").unwrap()["reason"],
        "KubeletNotReady"
    );
    post_status(true);
    wait_for("edge ready again", Duration::from_secs(10), renew, || {
        taint_pairs(&get_node()).is_empty().then_some(())
    });

    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
