//! The Node this crate registers, next to the one a real K3s v1.21 kubelet
//! and agent wrote (`fixtures/k3s-agent-node.yaml`), built from that
//! machine's measurements: the same keys, label and annotation names,
//! conditions, capacity and allocatable; what differs is what the server's
//! controllers add later.

use std::collections::BTreeSet;
use std::net::IpAddr;

use k8s_openapi::chrono::{TimeZone, Utc};
use serde_json::Value;

use crate::conditions::Pressures;
use crate::measure::{FsStats, HugePages, MachineInfo, Measurements, MemInfo, PidStats};
use crate::object::{initial_node, redact_args};
use crate::settings::{NodeSettings, go_arch};
use crate::status::desired_status;

fn recorded() -> Value {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/k3s-agent-node.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml_ng::from_str(&text).unwrap()
}

/// The node as this crate registers it on the recorded machine.
fn ours() -> Value {
    let mut settings = NodeSettings::new("k3s-agent-1", IpAddr::from([198, 18, 0, 2]));
    settings.node_args = redact_args(["agent", "--node-name", "k3s-agent-1"]);
    let machine = MachineInfo {
        machine_id: "3d1219c7c4c5404aaa1f6d2a48adfda4".into(),
        system_uuid: "3d1219c7c4c5404aaa1f6d2a48adfda4".into(),
        boot_id: "949cb545-250c-4874-b65f-2ee7e6beaf06".into(),
        kernel_version: "6.18.44-fc-v657".into(),
        os_image: "Debian GNU/Linux 12 (bookworm)".into(),
    };
    let measured = Measurements {
        cpus: Some(2),
        memory: Some(MemInfo {
            total: 24_684_092 * 1024,
            available: 20 << 30,
        }),
        fs: Some(FsStats {
            total: 264_212_084 * 1024,
            available: 200 << 30,
        }),
        pids: Some(PidStats {
            max: 4_194_304,
            running: 300,
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
    };
    let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        Utc.with_ymd_and_hms(2026, 11, 27, 21, 6, 47)
            .single()
            .unwrap(),
    );
    let status = desired_status(
        None,
        &settings,
        &machine,
        &measured,
        &Ok(()),
        Pressures::default(),
        &now,
    );
    serde_json::to_value(initial_node(&settings, status)).unwrap()
}

fn keys(value: &Value, pointer: &str) -> BTreeSet<String> {
    value
        .pointer(pointer)
        .and_then(Value::as_object)
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

#[test]
fn labels_are_the_recorded_kubelets() {
    let (recorded, ours) = (recorded(), ours());
    let mut expected = keys(&recorded, "/metadata/labels");
    // The cloud controller's, added when it initialises the node.
    expected.remove("node.kubernetes.io/instance-type");
    expected.remove("beta.kubernetes.io/instance-type");
    assert_eq!(keys(&ours, "/metadata/labels"), expected);
    assert_eq!(
        ours["metadata"]["labels"]["kubernetes.io/hostname"],
        "k3s-agent-1"
    );
    assert_eq!(ours["metadata"]["labels"]["kubernetes.io/arch"], go_arch());
    assert_eq!(ours["metadata"]["labels"]["kubernetes.io/os"], "linux");
}

#[test]
fn annotations_are_the_recorded_ones() {
    let (recorded, ours) = (recorded(), ours());
    assert_eq!(
        keys(&ours, "/metadata/annotations"),
        keys(&recorded, "/metadata/annotations")
    );
    for key in [
        "k3s.io/hostname",
        "k3s.io/internal-ip",
        "k3s.io/node-env",
        "node.alpha.kubernetes.io/ttl",
        "volumes.kubernetes.io/controller-managed-attach-detach",
    ] {
        assert_eq!(
            ours["metadata"]["annotations"][key], recorded["metadata"]["annotations"][key],
            "{key}"
        );
    }
}

#[test]
fn spec_leaves_the_servers_fields_alone() {
    let ours = ours();
    let spec = ours["spec"].as_object().unwrap();
    // podCIDR(s) and providerID are the server's (recorded: set by it).
    assert_eq!(spec.keys().collect::<Vec<_>>(), ["taints"]);
    assert_eq!(
        ours["spec"]["taints"],
        serde_json::json!([{"effect": "NoSchedule", "key": "node.cloudprovider.kubernetes.io/uninitialized", "value": "true"}])
    );
}

#[test]
fn status_is_the_recorded_kubelets() {
    let (recorded, ours) = (recorded(), ours());
    let mut expected = keys(&recorded, "/status");
    // Image lists are left out (see the crate's report).
    expected.remove("images");
    assert_eq!(keys(&ours, "/status"), expected);
    // The recorded machine's capacity and allocatable, to the byte.
    assert_eq!(ours["status"]["capacity"], recorded["status"]["capacity"]);
    assert_eq!(
        ours["status"]["allocatable"],
        recorded["status"]["allocatable"]
    );
    assert_eq!(ours["status"]["addresses"], recorded["status"]["addresses"]);
    assert_eq!(
        ours["status"]["daemonEndpoints"],
        recorded["status"]["daemonEndpoints"]
    );
    assert_eq!(
        keys(&ours, "/status/nodeInfo"),
        keys(&recorded, "/status/nodeInfo")
    );
    for key in [
        "machineID",
        "systemUUID",
        "bootID",
        "kernelVersion",
        "osImage",
        "operatingSystem",
    ] {
        assert_eq!(
            ours["status"]["nodeInfo"][key], recorded["status"]["nodeInfo"][key],
            "{key}"
        );
    }
    let strip = |c: &Value| {
        let mut c = c.clone();
        let map = c.as_object_mut().unwrap();
        map.remove("lastHeartbeatTime");
        map.remove("lastTransitionTime");
        c
    };
    let conditions = |v: &Value| -> Vec<Value> {
        v["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .map(strip)
            .collect()
    };
    assert_eq!(conditions(&ours), conditions(&recorded));
    for c in ours["status"]["conditions"].as_array().unwrap() {
        assert_eq!(c["lastHeartbeatTime"], "2026-11-27T21:06:47Z");
        assert_eq!(c["lastTransitionTime"], "2026-11-27T21:06:47Z");
    }
}
