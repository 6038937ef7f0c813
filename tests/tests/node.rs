//! The Node's upkeep (armlet-node) against a real devserver: registration,
//! the server's controllers initialising the node, the Lease heartbeat, the
//! node going Unknown when the upkeep stops and Ready when it comes back,
//! re-registration after a delete, taking over an existing Node, and the
//! kubelet certificate's limits. Loopback only.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use armlet_node::{NodeAgent, NodeSettings};
use armlet_tests::devserver::{Devserver, NodeCredentials};
use armlet_tests::node::TempDir;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const LOOPBACK: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

/// A devserver whose node controller gives up on a node after 3 s without
/// a heartbeat and looks every second.
fn server(scratch: &TempDir) -> Devserver {
    Devserver::start_on(
        &scratch.path().join("data"),
        LOOPBACK,
        0,
        &[
            "--node-monitor-grace-period",
            "3s",
            "--node-monitor-period",
            "1s",
        ],
    )
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The kubelet's client for `node`'s credentials.
fn kubelet_client(server: &Devserver, credentials: &NodeCredentials) -> kube::Client {
    armlet_node::client(
        &server.url,
        &read(&credentials.server_ca),
        &read(&credentials.client_crt),
        &read(&credentials.client_key),
    )
    .expect("kubelet client")
}

/// The admin's client, from the kubeconfig the server wrote.
async fn admin(server: &Devserver) -> kube::Client {
    armlet_node::client_from_kubeconfig(&server.kubeconfig())
        .await
        .expect("admin client")
}

/// `name`'s settings with the timings shortened: a pass every second.
fn settings(name: &str, data_dir: &Path) -> NodeSettings {
    let mut s = NodeSettings::new(name, LOOPBACK);
    s.data_dir = data_dir.to_path_buf();
    s.labels.insert("example.com/board".into(), "rpi4".into());
    s.node_args = armlet_node::object::redact_args(["agent", "--token", "secret"]);
    s.intervals.lease_renew = Duration::from_secs(1);
    s.intervals.status_update = Duration::from_secs(1);
    s.intervals.request_timeout = Duration::from_secs(5);
    s
}

/// A running upkeep, stopped by [`Upkeep::stop`].
struct Upkeep {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Upkeep {
    fn start(agent: NodeAgent) -> Self {
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(agent.run(async {
            let _ = stopped.await;
        }));
        Self { stop, task }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.expect("the upkeep ends without panicking");
    }
}

/// Waits up to `limit` for `check` to give a value, polling every 200 ms.
async fn until<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn condition<'a>(node: &'a Node, kind: &str) -> Option<(&'a str, &'a str)> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == kind)
        .map(|c| (c.status.as_str(), c.reason.as_deref().unwrap_or("")))
}

fn taint_keys(node: &Node) -> Vec<String> {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .map(|t| {
            t.iter()
                .map(|t| format!("{}:{}", t.key, t.effect))
                .collect()
        })
        .unwrap_or_default()
}

fn is_ready(node: &Node) -> bool {
    condition(node, "Ready") == Some(("True", "KubeletReady"))
}

async fn node_where(
    nodes: &Api<Node>,
    what: &str,
    limit: Duration,
    test: impl Fn(&Node) -> bool,
) -> Node {
    until(what, limit, || async {
        nodes.get_opt("n1").await.ok().flatten().filter(|n| test(n))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_registers_heartbeats_goes_unknown_and_comes_back() {
    let scratch = TempDir::new("node-lifecycle");
    let server = server(&scratch);
    let credentials = server.join_node(&scratch.path().join("n1"), "n1", LOOPBACK);
    let admin = admin(&server).await;
    let nodes: Api<Node> = Api::all(admin.clone());
    let leases: Api<Lease> = Api::namespaced(admin.clone(), "kube-node-lease");

    let agent = NodeAgent::new(
        kubelet_client(&server, &credentials),
        settings("n1", scratch.path()),
        || Ok(()),
    );
    let mut seen = agent.subscribe();
    let upkeep = Upkeep::start(agent);

    // Registered and initialised by the server's controllers: a pod CIDR,
    // the k3s provider ID and instance type, no uninitialised taint, the
    // addresses from the k3s.io annotations; and Ready.
    let node = node_where(
        &nodes,
        "an initialised, ready n1",
        Duration::from_secs(20),
        |n| {
            let spec = n.spec.clone().unwrap_or_default();
            spec.pod_cidr.is_some()
                && spec.provider_id.is_some()
                && taint_keys(n).is_empty()
                && is_ready(n)
        },
    )
    .await;
    let spec = node.spec.clone().unwrap_or_default();
    assert_eq!(spec.provider_id.as_deref(), Some("k3s://n1"));
    assert!(
        spec.pod_cidr
            .as_deref()
            .is_some_and(|c| c.starts_with("10.42.")),
        "{spec:?}"
    );
    let labels = node.metadata.labels.clone().unwrap_or_default();
    assert_eq!(labels["node.kubernetes.io/instance-type"], "k3s");
    assert_eq!(labels["kubernetes.io/hostname"], "n1");
    assert_eq!(labels["example.com/board"], "rpi4");
    let annotations = node.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(annotations["k3s.io/internal-ip"], "127.0.0.1");
    assert_eq!(
        annotations["k3s.io/node-args"],
        r#"["agent","--token","********"]"#
    );
    let status = node.status.clone().unwrap_or_default();
    let addresses: Vec<(String, String)> = status
        .addresses
        .iter()
        .flatten()
        .map(|a| (a.type_.clone(), a.address.clone()))
        .collect();
    assert_eq!(
        addresses,
        [
            ("InternalIP".into(), "127.0.0.1".into()),
            ("Hostname".into(), "n1".into())
        ]
    );
    for kind in ["MemoryPressure", "DiskPressure", "PIDPressure"] {
        assert_eq!(condition(&node, kind).map(|c| c.0), Some("False"), "{kind}");
    }
    let capacity = status.capacity.clone().unwrap_or_default();
    for key in ["cpu", "memory", "pods", "ephemeral-storage"] {
        assert!(capacity.contains_key(key), "capacity {key}: {capacity:?}");
    }
    let info = status.node_info.clone().unwrap_or_default();
    assert!(info.kubelet_version.starts_with("v1.21.2+armlet-"));
    assert!(info.container_runtime_version.starts_with("armlet://"));
    let uid = node.metadata.uid.clone().unwrap_or_default();

    // The upkeep shares what it sees: the pod CIDR reaches its subscribers.
    let cidr = until(
        "the pod CIDR through subscribe()",
        Duration::from_secs(10),
        || {
            let seen = seen.borrow_and_update().clone();
            async move { seen.and_then(|n| n.spec.clone()?.pod_cidr) }
        },
    )
    .await;
    assert_eq!(Some(cidr), spec.pod_cidr);

    // The Lease: held by n1, owned by its Node (from the first renewal
    // after the registration: a Lease created before has no owner yet, as
    // the kubelet's), renewed every second here.
    let renew_time = |lease: &Lease| lease.spec.as_ref().and_then(|s| s.renew_time.clone());
    let first = until(
        "n1's lease with an owner",
        Duration::from_secs(10),
        || async {
            let lease = leases.get_opt("n1").await.ok().flatten()?;
            lease.metadata.owner_references.is_some().then_some(lease)
        },
    )
    .await;
    let spec = first.spec.clone().unwrap_or_default();
    assert_eq!(spec.holder_identity.as_deref(), Some("n1"));
    assert_eq!(spec.lease_duration_seconds, Some(40));
    let owners = first.metadata.owner_references.clone().unwrap_or_default();
    assert_eq!(
        owners
            .iter()
            .map(|o| (o.kind.as_str(), o.uid.as_str()))
            .collect::<Vec<_>>(),
        [("Node", uid.as_str())]
    );
    let before = renew_time(&first);
    until("a renewal", Duration::from_secs(5), || async {
        let lease = leases.get_opt("n1").await.ok().flatten()?;
        (renew_time(&lease) > before).then_some(())
    })
    .await;

    // Stopped: after the 3 s grace period the node controller marks it
    // Unknown and unreachable.
    upkeep.stop().await;
    let lost = node_where(&nodes, "n1 Unknown", Duration::from_secs(20), |n| {
        condition(n, "Ready") == Some(("Unknown", "NodeStatusUnknown"))
            && taint_keys(n).contains(&"node.kubernetes.io/unreachable:NoExecute".to_owned())
    })
    .await;
    assert!(taint_keys(&lost).contains(&"node.kubernetes.io/unreachable:NoSchedule".to_owned()));

    // Restarted (a new process would do the same): Ready again, taints gone.
    let upkeep = Upkeep::start(NodeAgent::new(
        kubelet_client(&server, &credentials),
        settings("n1", scratch.path()),
        || Ok(()),
    ));
    node_where(
        &nodes,
        "n1 Ready again without taints",
        Duration::from_secs(20),
        |n| is_ready(n) && taint_keys(n).is_empty(),
    )
    .await;

    // Deleted by an admin: registered again, as a new object, and the
    // Lease follows the new Node.
    nodes
        .delete("n1", &DeleteParams::default())
        .await
        .expect("delete n1");
    let again = node_where(
        &nodes,
        "n1 registered again",
        Duration::from_secs(20),
        |n| n.metadata.uid.as_deref() != Some(uid.as_str()) && is_ready(n),
    )
    .await;
    let new_uid = again.metadata.uid.clone().unwrap_or_default();
    until(
        "the lease owned by the new Node",
        Duration::from_secs(10),
        || async {
            let lease = leases.get_opt("n1").await.ok().flatten()?;
            let owners = lease.metadata.owner_references.unwrap_or_default();
            owners.iter().any(|o| o.uid == new_uid).then_some(())
        },
    )
    .await;
    upkeep.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_is_reported_with_its_reason() {
    let scratch = TempDir::new("node-readiness");
    let server = server(&scratch);
    let credentials = server.join_node(&scratch.path().join("n1"), "n1", LOOPBACK);
    let nodes: Api<Node> = Api::all(admin(&server).await);

    let runtime_up = Arc::new(AtomicBool::new(false));
    let up = Arc::clone(&runtime_up);
    let upkeep = Upkeep::start(NodeAgent::new(
        kubelet_client(&server, &credentials),
        settings("n1", scratch.path()),
        move || {
            if up.load(Ordering::SeqCst) {
                Ok(())
            } else {
                Err("container runtime is down".to_owned())
            }
        },
    ));
    let down = node_where(&nodes, "n1 NotReady", Duration::from_secs(20), |n| {
        condition(n, "Ready") == Some(("False", "KubeletNotReady"))
            && taint_keys(n).contains(&"node.kubernetes.io/not-ready:NoSchedule".to_owned())
    })
    .await;
    let ready = down
        .status
        .iter()
        .flat_map(|s| s.conditions.iter().flatten())
        .find(|c| c.type_ == "Ready")
        .cloned()
        .unwrap_or_default();
    assert_eq!(ready.message.as_deref(), Some("container runtime is down"));
    let went_down = ready.last_transition_time.clone();

    runtime_up.store(true, Ordering::SeqCst);
    let up = node_where(&nodes, "n1 Ready", Duration::from_secs(20), |n| {
        is_ready(n)
            && !taint_keys(n)
                .iter()
                .any(|t| t.starts_with("node.kubernetes.io/not-ready"))
    })
    .await;
    let ready = up
        .status
        .iter()
        .flat_map(|s| s.conditions.iter().flatten())
        .find(|c| c.type_ == "Ready")
        .cloned()
        .unwrap_or_default();
    assert!(ready.last_transition_time >= went_down);
    upkeep.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_node_is_taken_over() {
    let scratch = TempDir::new("node-takeover");
    let server = server(&scratch);
    let credentials = server.join_node(&scratch.path().join("n1"), "n1", LOOPBACK);
    let nodes: Api<Node> = Api::all(admin(&server).await);
    // Left by an earlier agent of another architecture, with an admin's label.
    let old: Node = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "n1",
            "labels": {"kubernetes.io/arch": "mips", "team": "edge"},
            "annotations": {"k3s.io/internal-ip": "127.0.0.9"}},
    }))
    .expect("a Node");
    nodes
        .create(&PostParams::default(), &old)
        .await
        .expect("create n1");

    let mut agent = NodeAgent::new(
        kubelet_client(&server, &credentials),
        settings("n1", scratch.path()),
        || Ok(()),
    );
    let taken = agent.register().await.expect("take over n1");
    let labels = taken.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels["kubernetes.io/arch"],
        armlet_node::settings::go_arch()
    );
    assert_eq!(labels["team"], "edge");
    assert_eq!(labels["example.com/board"], "rpi4");
    let annotations = taken.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(annotations["k3s.io/internal-ip"], "127.0.0.1");
    // Its status is the new owner's from the first pass.
    assert_eq!(
        agent.sync_status().await.expect("status"),
        armlet_node::StatusSync::Reported { changed: true }
    );
    let node = nodes.get("n1").await.expect("n1");
    assert!(is_ready(&node));
    // Nothing changed since: nothing sent.
    assert_eq!(
        agent.sync_status().await.expect("status"),
        armlet_node::StatusSync::Unchanged
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kubelet_certificate_cannot_touch_another_node() {
    let scratch = TempDir::new("node-forbidden");
    let server = server(&scratch);
    let credentials = server.join_node(&scratch.path().join("n1"), "n1", LOOPBACK);
    // n1's certificate, n2's name.
    let mut agent = NodeAgent::new(
        kubelet_client(&server, &credentials),
        settings("n2", scratch.path()),
        || Ok(()),
    );
    let refused = agent.register().await.expect_err("n1 may not create n2");
    assert_eq!(refused.code(), Some(403), "{refused}");
    assert_eq!(
        agent.sync_status().await.map_err(|e| e.code()),
        Err(Some(403))
    );
    assert_eq!(
        agent.renew_lease().await.map_err(|e| e.code()),
        Err(Some(403))
    );
    // The loop only logs and retries.
    let upkeep = Upkeep::start(agent);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    upkeep.stop().await;
    assert!(server.get("/api/v1/nodes/n2").is_none());

    // A server that is not there: errors, no panic, and a stop still stops.
    let closed = std::net::TcpListener::bind((LOOPBACK, 0))
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let nowhere = armlet_node::client(
        &format!("https://127.0.0.1:{closed}"),
        &read(&credentials.server_ca),
        &read(&credentials.client_crt),
        &read(&credentials.client_key),
    )
    .expect("client");
    let mut agent = NodeAgent::new(nowhere, settings("n1", scratch.path()), || Ok(()));
    let unreachable = agent.register().await.expect_err("nobody listens");
    assert_eq!(unreachable.code(), None, "{unreachable}");
    let upkeep = Upkeep::start(agent);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    upkeep.stop().await;
}
