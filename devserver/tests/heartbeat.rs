//! transcript3.txt replayed: what a kubelet does after the join, with its
//! own certificate — the Lease renewed by merge patch and the Node status by
//! strategic merge patch, its pods listed and watched by `spec.nodeName`, a
//! pod's status patched to Running (then printed by kubectl as recorded), the
//! recorded refusal to read an unrelated Secret (byte for byte), and the
//! pod's final deletion from the node.

mod common;

use common::{Devserver, join_node, scratch};

const NODE: &str = "rust-edge-1";

/// The recorded 403 for the kubelet reading its own node-password Secret.
const RECORDED_SECRET_REFUSAL: &str = r#"{
  "kind": "Status",
  "apiVersion": "v1",
  "metadata": {
    
  },
  "status": "Failure",
  "message": "secrets \"rust-edge-1.node-password.k3s\" is forbidden: User \"system:node:rust-edge-1\" cannot get resource \"secrets\" in API group \"\" in the namespace \"kube-system\": no relationship found between node 'rust-edge-1' and this object",
  "reason": "Forbidden",
  "details": {
    "name": "rust-edge-1.node-password.k3s",
    "kind": "secrets"
  },
  "code": 403
}"#;

fn json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(body)))
}

#[test]
fn the_recorded_heartbeat_and_pod_lifecycle_replay() {
    let dir = scratch("heartbeat");
    let server = Devserver::start(&dir);
    let node = join_node(&server, NODE);
    let kubelet = |args: &[&str]| server.curl_as(&node.client_crt, &node.client_key, args);

    // Registration: the recorded Node (status included) and Lease.
    let recorded_node: serde_json::Value = serde_yaml_ng::from_str(include_str!(
        "../fixtures/recorded-k3s-v1.21/k3s-agent-node.yaml"
    ))
    .unwrap();
    let mut register = recorded_node.clone();
    for field in [
        "uid",
        "resourceVersion",
        "creationTimestamp",
        "managedFields",
    ] {
        register["metadata"].as_object_mut().unwrap().remove(field);
    }
    // The recorded node was k3s-agent-1; this kubelet is rust-edge-1.
    register["metadata"]["name"] = serde_json::json!(NODE);
    register["metadata"]["labels"]["kubernetes.io/hostname"] = serde_json::json!(NODE);
    register["spec"] = serde_json::json!({"taints": [{"key": "node.cloudprovider.kubernetes.io/uninitialized", "value": "true", "effect": "NoSchedule"}]});
    let body = register.to_string();
    let (status, _, created) = kubelet(&[
        "-X",
        "POST",
        "-H",
        "Content-Type: application/json",
        "--data",
        &body,
        "URL/api/v1/nodes",
    ]);
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&created));
    let created = json(&created);
    let lease = serde_json::json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": NODE, "namespace": "kube-node-lease",
            "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": NODE, "uid": created["metadata"]["uid"]}]},
        "spec": {"holderIdentity": NODE, "leaseDurationSeconds": 40, "renewTime": "2026-11-27T21:03:01.000000Z"}});
    let body = lease.to_string();
    let (status, _, _) = kubelet(&[
        "-X",
        "POST",
        "-H",
        "Content-Type: application/json",
        "--data",
        &body,
        "URL/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases",
    ]);
    assert_eq!(status, 201);

    // Heartbeats as recorded: lease renew (merge) + status (strategic).
    for i in 0..3 {
        let renew = format!(r#"{{"spec":{{"renewTime":"2026-11-27T21:03:1{i}.101288Z"}}}}"#);
        let (status, _, lease) = kubelet(&[
            "-X",
            "PATCH",
            "-H",
            "Content-Type: application/merge-patch+json",
            "--data",
            &renew,
            &format!("URL/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{NODE}"),
        ]);
        assert_eq!(status, 200);
        assert_eq!(
            json(&lease)["spec"]["renewTime"],
            format!("2026-11-27T21:03:1{i}.101288Z")
        );
        let heartbeat = format!(
            r#"{{"status":{{"$setElementOrder/conditions":[{{"type":"MemoryPressure"}},{{"type":"DiskPressure"}},{{"type":"PIDPressure"}},{{"type":"Ready"}}],"conditions":[{{"type":"Ready","lastHeartbeatTime":"2026-11-27T21:03:1{i}Z"}}]}}}}"#
        );
        let (status, _, patched) = kubelet(&[
            "-X",
            "PATCH",
            "-H",
            "Content-Type: application/strategic-merge-patch+json",
            "--data",
            &heartbeat,
            &format!("URL/api/v1/nodes/{NODE}/status"),
        ]);
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&patched));
        let patched = json(&patched);
        let conditions = patched["status"]["conditions"].as_array().unwrap();
        // Merged by type: all four kept, only Ready's heartbeat moved.
        assert_eq!(conditions.len(), 4, "{conditions:?}");
        let ready = conditions.iter().find(|c| c["type"] == "Ready").unwrap();
        assert_eq!(ready["status"], "True");
        assert_eq!(
            ready["lastHeartbeatTime"],
            format!("2026-11-27T21:03:1{i}Z")
        );
    }
    // Another node's Lease is not this kubelet's to renew.
    let (status, _, _) = kubelet(&[
        "-X",
        "PATCH",
        "-H",
        "Content-Type: application/merge-patch+json",
        "--data",
        "{}",
        "URL/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/someone-else",
    ]);
    assert_eq!(status, 403);

    // A pod bound to the node (admin), listed and watched by the kubelet.
    common::admin_credentials(&dir);
    let pod = format!(
        r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"hello"}},"spec":{{"nodeName":"{NODE}","containers":[{{"name":"hello","image":"busybox"}}]}}}}"#
    );
    let (status, _, _) = server.curl_as(
        &dir.join("admin.crt"),
        &dir.join("admin.key"),
        &[
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "--data",
            &pod,
            "URL/api/v1/namespaces/default/pods",
        ],
    );
    assert_eq!(status, 201);
    let selector = format!("fieldSelector=spec.nodeName%3D{NODE}");
    let (status, _, list) = kubelet(&[&format!("URL/api/v1/pods?{selector}")]);
    assert_eq!(status, 200);
    let list = json(&list);
    assert_eq!(list["kind"], "PodList");
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["hello"]);
    let (status, _, watched) = kubelet(&[
        "-N",
        &format!("URL/api/v1/pods?{selector}&watch=true&resourceVersion=0&timeoutSeconds=1"),
    ]);
    assert_eq!(status, 200);
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&watched)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 1);
    assert_eq!(
        (&events[0]["type"], &events[0]["object"]["metadata"]["name"]),
        (&serde_json::json!("ADDED"), &serde_json::json!("hello"))
    );

    // Status to Running (merge patch, as recorded), printed as recorded.
    let running = r#"{"status":{"phase":"Running","podIP":"10.42.0.5","podIPs":[{"ip":"10.42.0.5"}],"hostIP":"198.18.0.2",
        "conditions":[{"type":"Ready","status":"True"},{"type":"ContainersReady","status":"True"}],
        "containerStatuses":[{"name":"hello","ready":true,"restartCount":0,"image":"busybox","imageID":"","started":true,"state":{"running":{"startedAt":"2026-11-27T21:04:14Z"}}}]}}"#;
    let (status, _, _) = kubelet(&[
        "-X",
        "PATCH",
        "-H",
        "Content-Type: application/merge-patch+json",
        "--data",
        running,
        "URL/api/v1/namespaces/default/pods/hello/status",
    ]);
    assert_eq!(status, 200);
    let (ok, out, err) = server.kubectl(&["get", "pods", "-o", "wide"]);
    assert!(ok, "{err}");
    let row: Vec<&str> = out.lines().nth(1).unwrap().split_whitespace().collect();
    let recorded = [
        "hello",
        "1/1",
        "Running",
        "0",
        row[4],
        "10.42.0.5",
        NODE,
        "<none>",
        "<none>",
    ];
    assert_eq!(row, recorded);

    // The recorded refusal, byte for byte (curl asks for pretty output).
    let (status, _, refusal) = kubelet(&[&format!(
        "URL/api/v1/namespaces/kube-system/secrets/{NODE}.node-password.k3s"
    )]);
    assert_eq!(status, 403);
    assert_eq!(String::from_utf8_lossy(&refusal), RECORDED_SECRET_REFUSAL);

    // Deletion: the admin's is graceful, the kubelet's grace-0 one ends it.
    let (status, _, _) = server.curl_as(
        &dir.join("admin.crt"),
        &dir.join("admin.key"),
        &["-X", "DELETE", "URL/api/v1/namespaces/default/pods/hello"],
    );
    assert_eq!(status, 202);
    let (ok, out, _) = server.kubectl(&["get", "pod", "hello"]);
    assert!(ok);
    assert!(out.contains("Terminating"), "{out}");
    let (status, _, _) = kubelet(&[
        "-X",
        "DELETE",
        "-H",
        "Content-Type: application/json",
        "--data",
        r#"{"gracePeriodSeconds":0,"preconditions":{"uid":null}}"#,
        "URL/api/v1/namespaces/default/pods/hello",
    ]);
    assert_eq!(status, 200);
    let (ok, _, err) = server.kubectl(&["get", "pod", "hello"]);
    assert!(!ok);
    assert!(err.contains("NotFound"), "{err}");
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
