//! `armlet agent` running pods end to end: the node in a network namespace of
//! its own, the devserver and a real registry (Debian's docker-registry) on the
//! host end of its veth, the real runtime (namespaces, cgroups, overlayfs), the
//! pod network (bridge, veth, nftables) inside the node's namespace.
//!
//! Observed through the API: phases, container states and reasons, restart
//! counts, pod IPs, conditions; through the node: logs, the pod's files, its
//! network; and across an agent restart (no container restarted).

use std::net::IpAddr;
use std::time::{Duration, Instant};

use armlet_tests::agent_node::AgentNode;
use armlet_tests::devserver::Devserver;
use armlet_tests::node::{TempDir, require_root};
use armlet_tests::registry::TestRegistry;
use serde_json::{Value, json};

fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn create(server: &Devserver, pod: Value) {
    let ns = pod["metadata"]["namespace"].as_str().unwrap_or("default");
    let (status, body) = server.admin_curl(&[
        "-X",
        "POST",
        "-H",
        "Content-Type: application/json",
        "-d",
        &pod.to_string(),
        &format!("URL/api/v1/namespaces/{ns}/pods"),
    ]);
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
}

fn pod(server: &Devserver, name: &str) -> Option<Value> {
    server.get(&format!("/api/v1/namespaces/default/pods/{name}"))
}

fn container_status(p: &Value) -> &Value {
    &p["status"]["containerStatuses"][0]
}

/// A node under test, the devserver and a registry with the busybox image,
/// torn down in that order.
struct Cluster {
    node: AgentNode,
    server: Devserver,
    _registry: TestRegistry,
    image: String,
    scratch: TempDir,
}

impl Cluster {
    fn new(test: &str, node_name: &str) -> Self {
        require_root();
        let scratch = TempDir::new(test);
        let node = AgentNode::new(&scratch.path().join("node"), node_name);
        let server = Devserver::start_on(
            &scratch.path().join("server"),
            IpAddr::V4(node.netns.host_ip),
            0,
            &[],
        );
        let (registry, image) = node.serve_busybox(&scratch.path().join("layout"));
        Self {
            node,
            server,
            _registry: registry,
            image,
            scratch,
        }
    }
}

#[test]
fn the_agent_runs_pods_reports_them_and_deletes_them() {
    // Bindings drop in reverse: the node first, the scratch directory last.
    let Cluster {
        scratch: _scratch,
        image,
        _registry: registry,
        server,
        mut node,
    } = Cluster::new("pods", "pod-node");
    let token = server.token();
    let agent = |node: &AgentNode| {
        let mut c = node.command(&server.url, &token);
        c.args(["--lease-interval", "2"]);
        c
    };
    node.start(agent(&node));
    wait_for("the node to be Ready", Duration::from_secs(60), || {
        server.get("/api/v1/nodes/pod-node").and_then(|n| {
            n["status"]["conditions"]
                .as_array()?
                .iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
                .then_some(())
        })
    });

    // A ConfigMap used by env and a volume.
    let (status, body) = server.admin_curl(&[
        "-X",
        "POST",
        "-H",
        "Content-Type: application/json",
        "-d",
        &json!({"metadata": {"name": "settings"}, "data": {"greeting": "hello-from-cm"}})
            .to_string(),
        "URL/api/v1/namespaces/default/configmaps",
    ]);
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));

    let script = "echo start; echo env=$GREETING; cat /etc/settings/greeting; echo; \
                  cat /var/run/secrets/kubernetes.io/serviceaccount/namespace; echo; \
                  head -c 20 /var/run/secrets/kubernetes.io/serviceaccount/token; echo; \
                  cat /etc/resolv.conf; hostname; \
                  echo ok > /www/index.html; exec /bin/busybox httpd -f -p 8080 -h /www";
    create(
        &server,
        json!({
            "metadata": {"name": "web"},
            "spec": {
                "nodeName": "pod-node",
                "terminationGracePeriodSeconds": 5,
                "containers": [{
                    "name": "web",
                    "image": image,
                    "command": ["/bin/busybox", "sh", "-c", script],
                    "env": [{"name": "GREETING", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "greeting"}}}],
                    "volumeMounts": [
                        {"name": "settings", "mountPath": "/etc/settings"},
                        {"name": "www", "mountPath": "/www"}
                    ],
                    "readinessProbe": {"httpGet": {"path": "/index.html", "port": 8080}, "periodSeconds": 1}
                }],
                "volumes": [
                    {"name": "settings", "configMap": {"name": "settings"}},
                    {"name": "www", "emptyDir": {}}
                ]
            }
        }),
    );
    create(
        &server,
        json!({
            "metadata": {"name": "once"},
            "spec": {
                "nodeName": "pod-node",
                "restartPolicy": "Never",
                "containers": [{"name": "once", "image": image, "command": ["/bin/busybox", "true"]}]
            }
        }),
    );
    create(
        &server,
        json!({
            "metadata": {"name": "crash"},
            "spec": {
                "nodeName": "pod-node",
                "containers": [{"name": "crash", "image": image, "command": ["/bin/busybox", "sh", "-c", "exit 3"]}]
            }
        }),
    );
    create(
        &server,
        json!({
            "metadata": {"name": "no-image"},
            "spec": {
                "nodeName": "pod-node",
                "containers": [{"name": "c", "image": format!("{}/library/nothing:1", registry.host())}]
            }
        }),
    );
    create(
        &server,
        json!({
            "metadata": {"name": "no-key"},
            "spec": {
                "nodeName": "pod-node",
                "containers": [{
                    "name": "c", "image": image, "command": ["/bin/busybox", "true"],
                    "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "missing"}}}]
                }]
            }
        }),
    );

    // web: Running and Ready, with an address on the node's pod network.
    let web = wait_for("web to be Ready", Duration::from_secs(90), || {
        let p = pod(&server, "web")?;
        let ready = p["status"]["conditions"]
            .as_array()?
            .iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        ready.then_some(p)
    });
    assert_eq!(web["status"]["phase"], "Running");
    let cs = container_status(&web);
    assert!(cs["state"]["running"]["startedAt"].is_string(), "{cs}");
    assert_eq!(cs["restartCount"], 0);
    assert_eq!(cs["ready"], true);
    assert!(
        cs["containerID"].as_str().unwrap().starts_with("armlet://"),
        "{cs}"
    );
    assert!(
        cs["imageID"]
            .as_str()
            .unwrap()
            .contains("/library/busybox@sha256:"),
        "{cs}"
    );
    assert_eq!(web["status"]["hostIP"], node.netns.node_ip.to_string());
    let pod_ip = web["status"]["podIP"].as_str().unwrap().to_owned();
    let node_obj = server.get("/api/v1/nodes/pod-node").unwrap();
    let cidr = node_obj["spec"]["podCIDR"].as_str().unwrap();
    let prefix = cidr.rsplit_once('.').unwrap().0;
    assert!(
        pod_ip.starts_with(&format!("{prefix}.")),
        "{pod_ip} not in {cidr}"
    );
    assert_eq!(web["status"]["podIPs"][0]["ip"], pod_ip.as_str());

    // The node reaches the pod over the bridge.
    assert_eq!(
        curl_in(&node, &format!("http://{pod_ip}:8080/index.html")),
        "ok\n"
    );

    // What the container saw, from its log file.
    let uid = web["metadata"]["uid"].as_str().unwrap();
    let log_file = node
        .pod_logs()
        .join(format!("default_web_{uid}"))
        .join("web/0.log");
    let log = std::fs::read_to_string(&log_file).unwrap();
    for expected in [
        "stdout F start",
        "stdout F env=hello-from-cm",
        "stdout F hello-from-cm",
        "stdout F default",
        "stdout F eyJ", // the service-account token: a JWT
        "stdout F search default.svc.cluster.local svc.cluster.local cluster.local lan",
        "stdout F nameserver 10.43.0.10",
        "stdout F options ndots:5",
        "stdout F web",
    ] {
        assert!(log.contains(expected), "{expected:?} not in\n{log}");
    }

    // once: Succeeded, Completed.
    let once = wait_for("once to succeed", Duration::from_secs(60), || {
        let p = pod(&server, "once")?;
        (p["status"]["phase"] == "Succeeded").then_some(p)
    });
    let term = &container_status(&once)["state"]["terminated"];
    assert_eq!(term["reason"], "Completed");
    assert_eq!(term["exitCode"], 0);

    // crash: restarted, then in CrashLoopBackOff with the last exit kept.
    let crash = wait_for("crash to back off", Duration::from_secs(60), || {
        let p = pod(&server, "crash")?;
        let cs = container_status(&p);
        (cs["state"]["waiting"]["reason"] == "CrashLoopBackOff"
            && cs["restartCount"].as_i64()? >= 1)
            .then_some(p)
    });
    let cs = container_status(&crash);
    assert_eq!(cs["lastState"]["terminated"]["exitCode"], 3);
    assert_eq!(cs["lastState"]["terminated"]["reason"], "Error");
    assert!(
        cs["state"]["waiting"]["message"]
            .as_str()
            .unwrap()
            .starts_with("back-off 10s restarting failed container=crash pod=crash_default("),
        "{cs}"
    );
    assert_eq!(crash["status"]["phase"], "Running");

    // no-image: ErrImagePull, then ImagePullBackOff.
    wait_for("no-image to fail its pull", Duration::from_secs(60), || {
        let p = pod(&server, "no-image")?;
        let reason = container_status(&p)["state"]["waiting"]["reason"].clone();
        (reason == "ErrImagePull" || reason == "ImagePullBackOff").then_some(())
    });
    assert_eq!(
        pod(&server, "no-image").unwrap()["status"]["phase"],
        "Pending"
    );

    // no-key: CreateContainerConfigError naming the key.
    let no_key = wait_for("no-key to be refused", Duration::from_secs(60), || {
        let p = pod(&server, "no-key")?;
        (container_status(&p)["state"]["waiting"]["reason"] == "CreateContainerConfigError")
            .then_some(p)
    });
    let message = container_status(&no_key)["state"]["waiting"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(message.contains("missing"), "{message}");

    // An agent restart: web keeps running, same container, same start.
    let before = container_status(&pod(&server, "web").unwrap()).clone();
    node.stop();
    node.start(agent(&node));
    std::thread::sleep(Duration::from_secs(4));
    wait_for(
        "the node to be Ready again",
        Duration::from_secs(30),
        || {
            server.get("/api/v1/nodes/pod-node").and_then(|n| {
                n["status"]["conditions"]
                    .as_array()?
                    .iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
                    .then_some(())
            })
        },
    );
    let after = container_status(&pod(&server, "web").unwrap()).clone();
    assert_eq!(after["containerID"], before["containerID"]);
    assert_eq!(after["restartCount"], 0);
    assert_eq!(
        after["state"]["running"]["startedAt"],
        before["state"]["running"]["startedAt"]
    );
    assert_eq!(
        curl_in(&node, &format!("http://{pod_ip}:8080/index.html")),
        "ok\n"
    );

    // Graceful deletion: httpd ends on SIGTERM, the agent deletes the object.
    let (status, body) =
        server.admin_curl(&["-X", "DELETE", "URL/api/v1/namespaces/default/pods/web"]);
    // 202: accepted, the kubelet finishes it.
    assert_eq!(status, 202, "{}", String::from_utf8_lossy(&body));
    let start = Instant::now();
    wait_for("web to be gone", Duration::from_secs(30), || {
        pod(&server, "web").is_none().then_some(())
    });
    assert!(
        start.elapsed() < Duration::from_secs(15),
        "{:?}",
        start.elapsed()
    );
    // Its network end is gone from the node.
    let links = node.netns.ip_output(&["-o", "link"]);
    let addrs = node.netns.ip_output(&["-o", "addr"]);
    assert!(!addrs.contains(&format!("{pod_ip}/")), "{addrs}");
    assert!(links.contains("cni0"), "{links}");
    // Its log stays (the kubelet keeps them until the pod is gone for good).
    assert!(log_file.exists());

    for name in ["once", "crash", "no-image", "no-key"] {
        let (status, _) = server.admin_curl(&[
            "-X",
            "DELETE",
            &format!("URL/api/v1/namespaces/default/pods/{name}"),
        ]);
        // 200 for a pod in a terminal phase: the API server deletes it at once.
        assert!(status == 200 || status == 202, "{name}: {status}");
    }
    wait_for("every pod to be gone", Duration::from_secs(30), || {
        let list = server.get("/api/v1/namespaces/default/pods")?;
        list["items"].as_array()?.is_empty().then_some(())
    });
}

/// Ready=True on the Node.
fn node_ready(server: &Devserver, name: &str) -> bool {
    server
        .get(&format!("/api/v1/nodes/{name}"))
        .and_then(|n| {
            n["status"]["conditions"]
                .as_array()?
                .iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
                .then_some(())
        })
        .is_some()
}

/// `curl` from inside the node's namespace; the body, or "" on failure.
fn curl_in(node: &AgentNode, url: &str) -> String {
    let out = node
        .netns
        .command("curl")
        .args(["-s", "--max-time", "2", url])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_node_rebooting_while_its_server_is_down_brings_its_pods_back() {
    let Cluster {
        scratch,
        image,
        _registry,
        server,
        mut node,
    } = Cluster::new("pods-offline", "offline-node");
    let server_dir = scratch.path().join("server");
    let address = IpAddr::V4(node.netns.host_ip);
    let port = server.port;
    let token = server.token();
    let server_url = server.url.clone();
    let start_agent = |node: &mut AgentNode| {
        let mut c = node.command(&server_url, &token);
        c.args(["--lease-interval", "2"]);
        node.start(c);
    };
    start_agent(&mut node);
    wait_for("the node to be Ready", Duration::from_secs(60), || {
        node_ready(&server, "offline-node").then_some(())
    });
    create(
        &server,
        json!({
            "metadata": {"name": "keeper"},
            "spec": {
                "nodeName": "offline-node",
                "containers": [{
                    "name": "web",
                    "image": image,
                    "command": ["/bin/busybox", "sh", "-c",
                        "echo up > /www/index.html; exec /bin/busybox httpd -f -p 8080 -h /www"],
                    "volumeMounts": [{"name": "www", "mountPath": "/www"}]
                }],
                "volumes": [{"name": "www", "emptyDir": {}}]
            }
        }),
    );
    let keeper = wait_for("keeper to run", Duration::from_secs(60), || {
        let p = pod(&server, "keeper")?;
        (p["status"]["phase"] == "Running").then_some(p)
    });
    let pod_ip = keeper["status"]["podIP"].as_str().unwrap().to_owned();
    let url = format!("http://{pod_ip}:8080/index.html");
    wait_for("keeper to answer", Duration::from_secs(20), || {
        (curl_in(&node, &url) == "up\n").then_some(())
    });

    // The server goes away, then the board loses power and reboots.
    let down_since = Instant::now();
    server.stop();
    node.stop();
    node.simulate_reboot();
    assert_eq!(
        curl_in(&node, &url),
        "",
        "the pod survived the simulated reboot"
    );
    start_agent(&mut node);

    // Back from local state, with the same address, no server needed.
    wait_for(
        "keeper to answer again without its server",
        Duration::from_secs(60),
        || (curl_in(&node, &url) == "up\n").then_some(()),
    );

    // Two minutes without the server, then it returns: the node is Ready
    // again and the pod's status catches up; the pod was left running.
    let rest = Duration::from_secs(120).saturating_sub(down_since.elapsed());
    std::thread::sleep(rest);
    assert_eq!(curl_in(&node, &url), "up\n");
    let server = Devserver::start_on(&server_dir, address, port, &[]);
    wait_for(
        "the node to be Ready again",
        Duration::from_secs(90),
        || node_ready(&server, "offline-node").then_some(()),
    );
    let before = container_status(&keeper)["containerID"].clone();
    // The reboot's new instance counts as a restart (the log files say how
    // many came before), with a container ID of its own.
    let keeper = wait_for(
        "keeper's status to catch up",
        Duration::from_secs(90),
        || {
            let p = pod(&server, "keeper")?;
            let cs = container_status(&p);
            (p["status"]["phase"] == "Running"
                && cs["ready"] == true
                && cs["restartCount"] == 1
                && cs["containerID"] != before)
                .then_some(p)
        },
    );
    assert_eq!(keeper["status"]["podIP"], pod_ip.as_str());
    assert_eq!(curl_in(&node, &url), "up\n");

    // The node shuts down (SIGPWR): the pod is stopped and reported Failed
    // as the kubelet reports it, and the agent exits.
    let status = node
        .power_off(Duration::from_secs(60))
        .expect("the agent ran");
    assert!(status.success(), "{status}");
    assert_eq!(curl_in(&node, &url), "", "the pod still answers");
    let keeper = pod(&server, "keeper").unwrap();
    assert_eq!(keeper["status"]["phase"], "Failed", "{keeper}");
    assert_eq!(keeper["status"]["reason"], "Terminated");
    assert!(
        container_status(&keeper)["state"]["terminated"].is_object(),
        "{keeper}"
    );
}

/// A cgroup file of the pod's container, from cgroup v1's `controller`
/// hierarchy or the v2 one.
fn container_cgroup_file(relative: &str, controller: &str, v1: &str, v2: &str) -> Option<String> {
    std::fs::read_to_string(format!("/sys/fs/cgroup/{controller}{relative}/{v1}"))
        .or_else(|_| std::fs::read_to_string(format!("/sys/fs/cgroup{relative}/{v2}")))
        .ok()
        .map(|s| s.trim().to_owned())
}

#[test]
fn static_pods_init_containers_probes_hooks_limits_and_kubectl() {
    let Cluster {
        scratch: _scratch,
        image,
        _registry,
        server,
        mut node,
    } = Cluster::new("pods-features", "feature-node");
    // A static pod, there before the agent starts.
    let manifests = node.dir.join("data/agent/pod-manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    let manifest = manifests.join("static.yaml");
    std::fs::write(
        &manifest,
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: static\nspec:\n  containers:\n  - name: main\n    image: {image}\n    command: [/bin/busybox, sleep, '3600']\n"
        ),
    )
    .unwrap();
    let mut c = node.command(&server.url, &server.token());
    c.args(["--lease-interval", "2"]);
    node.start(c);

    // Its mirror pod shows it running, owned by the Node.
    let mirror = wait_for("the mirror pod to run", Duration::from_secs(90), || {
        let p = pod(&server, "static-feature-node")?;
        (p["status"]["phase"] == "Running").then_some(p)
    });
    assert_eq!(mirror["metadata"]["ownerReferences"][0]["kind"], "Node");
    assert_eq!(
        mirror["metadata"]["ownerReferences"][0]["name"],
        "feature-node"
    );
    assert!(mirror["metadata"]["annotations"]["kubernetes.io/config.mirror"].is_string());
    let static_id = container_status(&mirror)["containerID"].clone();
    assert!(static_id.is_string(), "{mirror}");

    // Deleting the mirror does not stop the static pod: it is mirrored again.
    let (status, _) = server.admin_curl(&[
        "-X",
        "DELETE",
        "URL/api/v1/namespaces/default/pods/static-feature-node",
    ]);
    assert!(status == 200 || status == 202, "{status}");
    let again = wait_for("a new mirror pod", Duration::from_secs(60), || {
        let p = pod(&server, "static-feature-node")?;
        (p["metadata"]["uid"] != mirror["metadata"]["uid"]
            && p["metadata"]["deletionTimestamp"].is_null()
            && container_status(&p)["containerID"] == static_id)
            .then_some(p)
    });
    assert_eq!(container_status(&again)["restartCount"], 0);

    // Init containers, subPath, limits, a liveness probe, a preStop hook.
    let (status, body) = server.admin_curl(&[
        "-X",
        "POST",
        "-H",
        "Content-Type: application/json",
        "-d",
        &json!({"metadata": {"name": "settings"}, "data": {"motd": "welcome"}}).to_string(),
        "URL/api/v1/namespaces/default/configmaps",
    ]);
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    let host_dir = node.dir.join("hostpath");
    create(
        &server,
        json!({
            "metadata": {"name": "features"},
            "spec": {
                "nodeName": "feature-node",
                "terminationGracePeriodSeconds": 3,
                "initContainers": [{
                    "name": "init", "image": image,
                    "command": ["/bin/busybox", "sh", "-c", "echo from-init > /work/msg"],
                    "volumeMounts": [{"name": "work", "mountPath": "/work"}]
                }],
                "containers": [
                    {
                        "name": "main", "image": image,
                        "command": ["/bin/busybox", "sh", "-c",
                            "cat /work/msg; cat /etc/motd; echo; trap 'exit 0' TERM; while true; do /bin/busybox sleep 1; done"],
                        "resources": {"limits": {"memory": "64Mi", "cpu": "200m"}},
                        "volumeMounts": [
                            {"name": "work", "mountPath": "/work"},
                            {"name": "settings", "mountPath": "/etc/motd", "subPath": "motd"},
                            {"name": "host", "mountPath": "/host"}
                        ],
                        "lifecycle": {"preStop": {"exec": {"command": ["/bin/busybox", "sh", "-c", "echo prestop > /host/prestop"]}}}
                    },
                    {
                        "name": "flaky", "image": image,
                        "command": ["/bin/busybox", "sleep", "3600"],
                        "livenessProbe": {"exec": {"command": ["/bin/busybox", "false"]}, "periodSeconds": 1, "failureThreshold": 2}
                    }
                ],
                "volumes": [
                    {"name": "work", "emptyDir": {}},
                    {"name": "settings", "configMap": {"name": "settings"}},
                    {"name": "host", "hostPath": {"path": host_dir.to_str().unwrap(), "type": "DirectoryOrCreate"}}
                ]
            }
        }),
    );
    create(
        &server,
        json!({
            "metadata": {"name": "hostnet"},
            "spec": {
                "nodeName": "feature-node",
                "hostNetwork": true,
                "containers": [{"name": "c", "image": image, "command": ["/bin/busybox", "sleep", "3600"]}]
            }
        }),
    );

    // The liveness probe fails: flaky is killed and restarted.
    let features = wait_for("flaky to be restarted", Duration::from_secs(90), || {
        let p = pod(&server, "features")?;
        let flaky = p["status"]["containerStatuses"]
            .as_array()?
            .iter()
            .find(|c| c["name"] == "flaky")?
            .clone();
        (flaky["restartCount"].as_i64()? >= 1).then_some(p)
    });
    let statuses = features["status"]["containerStatuses"].as_array().unwrap();
    let flaky = statuses.iter().find(|c| c["name"] == "flaky").unwrap();
    assert_eq!(flaky["lastState"]["terminated"]["exitCode"], 137, "{flaky}");
    let main = statuses.iter().find(|c| c["name"] == "main").unwrap();
    assert!(main["state"]["running"].is_object(), "{main}");
    assert_eq!(main["restartCount"], 0);
    let init = &features["status"]["initContainerStatuses"][0];
    assert_eq!(init["state"]["terminated"]["reason"], "Completed", "{init}");
    assert_eq!(features["status"]["qosClass"], "Burstable");

    // What main saw: the init container's file and the subPath'd key.
    let uid = features["metadata"]["uid"].as_str().unwrap();
    let log = std::fs::read_to_string(
        node.pod_logs()
            .join(format!("default_features_{uid}"))
            .join("main/0.log"),
    )
    .unwrap();
    assert!(log.contains("stdout F from-init"), "{log}");
    assert!(log.contains("stdout F welcome"), "{log}");

    // Its limits are in its cgroup.
    let id = main["containerID"]
        .as_str()
        .unwrap()
        .strip_prefix("armlet://")
        .unwrap();
    let relative = format!("{}/burstable/pod{uid}/{id}", node.cgroup_parent());
    assert_eq!(
        container_cgroup_file(&relative, "memory", "memory.limit_in_bytes", "memory.max")
            .as_deref(),
        Some("67108864")
    );
    let quota = container_cgroup_file(&relative, "cpu", "cpu.cfs_quota_us", "cpu.max").unwrap();
    assert!(quota == "20000" || quota.starts_with("20000 "), "{quota}");

    // A hostNetwork pod has the node's address.
    let hostnet = wait_for("hostnet to run", Duration::from_secs(60), || {
        let p = pod(&server, "hostnet")?;
        (p["status"]["phase"] == "Running").then_some(p)
    });
    assert_eq!(hostnet["status"]["podIP"], node.netns.node_ip.to_string());

    // Debian's kubectl sees it all.
    let (ok, out, err) = server.kubectl(&["get", "pods", "-o", "wide"]);
    assert!(ok, "{err}");
    for name in ["features", "hostnet", "static-feature-node"] {
        let line = out
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name} not in\n{out}"));
        assert!(line.contains("Running"), "{line}");
        assert!(line.contains("feature-node"), "{line}");
    }
    let (ok, out, err) = server.kubectl(&["describe", "pod", "features"]);
    assert!(ok, "{err}");
    for expected in ["Init Containers:", "Liveness:", "armlet://", "Burstable"] {
        assert!(out.contains(expected), "{expected:?} not in\n{out}");
    }

    // Deletion runs the preStop hook, then main ends on SIGTERM.
    let (status, _) = server.admin_curl(&[
        "-X",
        "DELETE",
        "URL/api/v1/namespaces/default/pods/features",
    ]);
    assert_eq!(status, 202);
    wait_for("features to be gone", Duration::from_secs(30), || {
        pod(&server, "features").is_none().then_some(())
    });
    assert_eq!(
        std::fs::read_to_string(host_dir.join("prestop")).unwrap(),
        "prestop\n"
    );

    // The manifest removed: the static pod stops and its mirror goes.
    std::fs::remove_file(&manifest).unwrap();
    wait_for("the mirror pod to go", Duration::from_secs(60), || {
        pod(&server, "static-feature-node").is_none().then_some(())
    });
}
