//! Debian's kubectl 1.20 drives the devserver with the admin kubeconfig it
//! wrote: discovery, server-side printing (`get -o wide` reads as the
//! recorded K3s output), apply/label/create/delete, errors, and objects kept
//! across a restart.

mod common;

use common::{Devserver, scratch};

/// The recorded `kubectl get nodes -o wide` header against K3s v1.21
/// (transcript3.txt).
const RECORDED_NODE_HEADER: &str = "NAME          STATUS   ROLES    AGE    VERSION             INTERNAL-IP   EXTERNAL-IP   OS-IMAGE    KERNEL-VERSION   CONTAINER-RUNTIME";
/// Its row, but for the age.
const RECORDED_NODE_ROW: &str = "rust-edge-1   Ready    <none>   115s   v1.21.2-rustagent   198.18.0.2    <none>        <unknown>   <unknown>        none://0";
/// The recorded `kubectl get pods -o wide` header.
const RECORDED_POD_HEADER: &str = "NAME    READY   STATUS    RESTARTS   AGE   IP          NODE          NOMINATED NODE   READINESS GATES";

const NODE: &str = r#"
apiVersion: v1
kind: Node
metadata:
  name: rust-edge-1
  labels:
    kubernetes.io/hostname: rust-edge-1
spec:
  podCIDR: 10.42.0.0/24
status:
  addresses:
  - address: 198.18.0.2
    type: InternalIP
  - address: rust-edge-1
    type: Hostname
  conditions:
  - type: Ready
    status: "True"
    reason: KubeletReady
    message: kubelet is posting ready status
  nodeInfo:
    kubeletVersion: v1.21.2-rustagent
    containerRuntimeVersion: none://0
    architecture: arm64
    operatingSystem: linux
"#;

const POD: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: hello
  labels:
    app: hello
spec:
  containers:
  - name: hello
    image: busybox
    command: ["sleep", "3600"]
"#;

fn words(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

#[test]
fn kubectl_gets_applies_labels_and_deletes() {
    let dir = scratch("kubectl");
    let server = Devserver::start(&dir);

    let (ok, out, err) = server.kubectl(&["version", "-o", "json"]);
    assert!(ok, "{err}");
    let version: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(
        version["serverVersion"]["gitVersion"]
            .as_str()
            .unwrap()
            .starts_with("v1.21")
    );

    let (ok, out, err) = server.kubectl(&["get", "nodes"]);
    assert!(ok, "{err}");
    assert_eq!(out, "");
    assert!(err.contains("No resources found"), "{err}");

    // A node applied (as an admin can), printed as K3s prints it.
    let (ok, out, err) = server.kubectl_with_input(&["apply", "-f", "-"], Some(NODE));
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "node/rust-edge-1 created");
    let (ok, out, err) = server.kubectl(&["get", "nodes", "-o", "wide"]);
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert_eq!(words(lines[0]), words(RECORDED_NODE_HEADER));
    let (mut got, mut want) = (words(lines[1]), words(RECORDED_NODE_ROW));
    // The age differs: 115s in the recording, seconds here.
    assert!(got.remove(3).ends_with('s'));
    want.remove(3);
    assert_eq!(got, want);

    // Namespaces K3s starts with.
    let (ok, out, err) = server.kubectl(&["get", "namespaces"]);
    assert!(ok, "{err}");
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert!(
            out.lines().any(|l| words(l)[..2] == [ns, "Active"]),
            "{ns} missing from:\n{out}"
        );
    }

    // A pod: applied, unchanged, configured, labelled.
    let (ok, out, err) = server.kubectl_with_input(&["apply", "-f", "-"], Some(POD));
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "pod/hello created");
    let (ok, out, _) = server.kubectl_with_input(&["apply", "-f", "-"], Some(POD));
    assert!(ok);
    assert_eq!(out.trim(), "pod/hello unchanged");
    let changed = POD.replace("app: hello", "app: hello\n    tier: front");
    let (ok, out, err) = server.kubectl_with_input(&["apply", "-f", "-"], Some(&changed));
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "pod/hello configured");
    let (ok, out, err) = server.kubectl(&["label", "pod", "hello", "extra=1"]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "pod/hello labeled");
    let (ok, out, err) = server.kubectl(&["get", "pods", "-l", "extra=1,tier=front", "-o", "wide"]);
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(words(lines[0]), words(RECORDED_POD_HEADER));
    assert_eq!(
        words(lines[1]),
        [
            "hello",
            "0/1",
            "Pending",
            "0",
            words(lines[1])[4],
            "<none>",
            "<none>",
            "<none>",
            "<none>"
        ]
    );
    let (ok, out, _) = server.kubectl(&[
        "get",
        "pod",
        "hello",
        "-o",
        "jsonpath={.metadata.annotations.kubectl\\.kubernetes\\.io/last-applied-configuration}",
    ]);
    assert!(ok);
    let applied: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(applied["metadata"]["labels"]["tier"], "front");
    let (ok, out, _) = server.kubectl(&["get", "pods", "-l", "extra=2"]);
    assert!(ok);
    assert_eq!(out, "");

    // kubectl patch is a strategic merge patch: containers merge by name, so
    // the command stays while the image changes.
    let (ok, out, err) = server.kubectl(&[
        "patch",
        "pod",
        "hello",
        "-p",
        r#"{"spec":{"containers":[{"name":"hello","image":"busybox:1.36"}]}}"#,
    ]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "pod/hello patched");
    let (ok, out, _) = server.kubectl(&[
        "get",
        "pod",
        "hello",
        "-o",
        "jsonpath={.spec.containers[0].image} {.spec.containers[0].command}",
    ]);
    assert!(ok);
    assert_eq!(out, r#"busybox:1.36 ["sleep","3600"]"#);

    // Other kinds, and describe (which lists events by field selectors).
    let (ok, out, err) = server.kubectl(&["create", "configmap", "settings", "--from-literal=a=b"]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "configmap/settings created");
    let (ok, out, err) = server.kubectl(&["get", "configmaps"]);
    assert!(ok, "{err}");
    // Every namespace also holds the cluster CA, as K3s's publisher puts it.
    let names: Vec<Vec<&str>> = out
        .lines()
        .skip(1)
        .map(|l| words(l)[..2].to_vec())
        .collect();
    assert_eq!(names, [["kube-root-ca.crt", "1"], ["settings", "1"]]);
    let (ok, out, err) = server.kubectl(&["describe", "node", "rust-edge-1"]);
    assert!(ok, "{err}");
    assert!(out.contains("Name:               rust-edge-1"), "{out}");
    let (ok, _, err) = server.kubectl(&["get", "events", "--all-namespaces"]);
    assert!(ok, "{err}");

    // A service-account token (TokenRequest) authenticates as its account,
    // which RBAC lets do nothing; a forged one is refused.
    let (ok, out, err) = server.kubectl_with_input(
        &["create", "--raw", "/api/v1/namespaces/default/serviceaccounts/default/token", "-f", "-"],
        Some(r#"{"apiVersion":"authentication.k8s.io/v1","kind":"TokenRequest","spec":{"expirationSeconds":3600}}"#),
    );
    assert!(ok, "{err}");
    let request: serde_json::Value = serde_json::from_str(&out).unwrap();
    let token = request["status"]["token"].as_str().unwrap();
    let bearer = |token: &str| {
        let out = std::process::Command::new("curl")
            .args(["-s", "--cacert"])
            .arg(dir.join("ca.crt"))
            .args(["-H", &format!("Authorization: Bearer {token}")])
            .arg(format!("{}/api/v1/namespaces/default/pods", server.url))
            .output()
            .unwrap();
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    common::admin_credentials(&dir);
    let denied = bearer(token);
    assert_eq!(denied["code"], 403);
    assert_eq!(
        denied["message"],
        "pods is forbidden: User \"system:serviceaccount:default:default\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\""
    );
    // The signature's first character changed (never the same one again).
    let (signed, signature) = token.rsplit_once('.').unwrap();
    let first = if signature.starts_with('A') { 'B' } else { 'A' };
    let forged = format!("{signed}.{first}{}", &signature[1..]);
    assert_eq!(bearer(&forged)["code"], 401);

    // Errors read as the API server's.
    let bad = POD.replace("name: hello\n  labels", "name: Hello_There\n  labels");
    let (ok, _, err) = server.kubectl_with_input(&["apply", "-f", "-"], Some(&bad));
    assert!(!ok);
    assert!(
        err.contains("Pod \"Hello_There\" is invalid: metadata.name: Invalid value"),
        "{err}"
    );
    let (ok, _, err) = server.kubectl(&["get", "pod", "nobody"]);
    assert!(!ok);
    assert_eq!(
        err.trim(),
        "Error from server (NotFound): pods \"nobody\" not found"
    );

    // An unbound pod goes at once; kubectl waits for it to be gone.
    let (ok, out, err) = server.kubectl(&["delete", "pod", "hello"]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "pod \"hello\" deleted");
    let (ok, _, _) = server.kubectl(&["get", "pod", "hello"]);
    assert!(!ok);

    // Everything is still there after a restart.
    drop(server);
    let server = Devserver::start(&dir);
    let (ok, out, err) =
        server.kubectl(&["get", "configmap", "settings", "-o", "jsonpath={.data.a}"]);
    assert!(ok, "{err}");
    assert_eq!(out, "b");
    let (ok, out, _) = server.kubectl(&["get", "nodes"]);
    assert!(ok);
    assert!(out.contains("rust-edge-1"));
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
