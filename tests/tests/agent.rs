//! `armlet agent` end to end against the devserver: it joins with the token
//! (CA pinned by its hash), registers its Node, which the server's
//! controllers initialise and which goes Ready with a Lease renewed; it stops
//! on SIGTERM and the node then goes Unknown; a token naming another CA is
//! refused before anything is sent.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use armlet_tests::agent_node::AgentNode;
use armlet_tests::devserver::Devserver;
use armlet_tests::node::{TempDir, require_root};

fn wait_for(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn the_agent_joins_registers_a_ready_node_and_stops_on_sigterm() {
    require_root();
    let scratch = TempDir::new("agent-join");
    let mut node = AgentNode::new(&scratch.path().join("node"), "Edge-1");
    // A short grace period: the stopped node goes Unknown within seconds.
    let server = Devserver::start_on(
        &scratch.path().join("server"),
        IpAddr::V4(node.netns.host_ip),
        0,
        &[
            "--node-monitor-grace-period",
            "4s",
            "--node-monitor-period",
            "1s",
        ],
    );
    let data = node.dir.join("data");
    // The config file k3s agents read (`--config`), with the flags' keys.
    let config = scratch.path().join("config.yaml");
    std::fs::write(&config, "node-label:\n  - armlet.dev/role=edge\n").unwrap();
    let agent = |node: &AgentNode, token: &str| {
        let mut c = node.command(&server.url, token);
        c.args(["--lease-interval", "1"])
            .arg("--config")
            .arg(&config);
        c
    };

    // A token naming another CA: refused, nothing claimed.
    let token = server.token();
    let (hash, rest) = token.split_once("::").unwrap();
    let wrong = format!("K10{}::{rest}", "0".repeat(hash.len() - 3));
    let out = agent(&node, &wrong).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("does not match the Cluster CA certificate hash"),
        "{err}"
    );
    assert!(
        server
            .get("/api/v1/namespaces/kube-system/secrets/edge-1.node-password.k3s")
            .is_none()
    );

    node.start(agent(&node, &token));
    let node_object = |path: &str| server.get(&format!("/api/v1/nodes/edge-1{path}"));
    wait_for(
        "the node to be Ready and initialised",
        Duration::from_secs(30),
        || {
            node_object("").is_some_and(|n| {
                let ready = n["status"]["conditions"].as_array().is_some_and(|c| {
                    c.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                });
                ready
                    && n["spec"]["providerID"] == "k3s://edge-1"
                    && n["spec"]["podCIDR"].is_string()
            })
        },
    );
    let lease = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/edge-1";
    let renewed = || server.get(lease).map(|l| l["spec"]["renewTime"].clone());
    let first = renewed().expect("the Lease");
    wait_for("a Lease renewal", Duration::from_secs(10), || {
        renewed().is_some_and(|t| t != first)
    });
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(data.join("agent/client-kubelet.key"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);

    let status = node.stop().expect("the agent ran");
    assert!(status.success(), "{status}");

    // Nobody renews the Lease any more: the server marks the node Unknown.
    wait_for("the node to go Unknown", Duration::from_secs(30), || {
        node_object("").is_some_and(|n| {
            n["status"]["conditions"].as_array().is_some_and(|c| {
                c.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "Unknown")
            })
        })
    });
}
