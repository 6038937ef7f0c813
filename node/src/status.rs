//! The node status as the kubelet keeps it (`tryUpdateNodeStatus`): the
//! status it wants from the server's current one, whether that differs in
//! anything but heartbeat times, when it is sent anyway (the report
//! frequency), and the strategic merge patch that sends it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{NodeCondition, NodeStatus};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{Map, Value, json};

use crate::conditions::{
    KUBELET_CONDITIONS, Observation, Pressures, conditions, not_ready_reasons,
};
use crate::measure::{MachineInfo, Measurements};
use crate::object::{addresses, allocatable, capacity, daemon_endpoints, node_info};
use crate::quantity::same;
use crate::settings::NodeSettings;

/// Resources the kubelet manages in capacity and allocatable: a key of
/// these it no longer reports is removed (a huge page size gone after a
/// kernel change); anything else (device plugins, admins' extended
/// resources) is left alone.
fn kubelet_resource(name: &str) -> bool {
    matches!(name, "cpu" | "memory" | "pods" | "ephemeral-storage")
        || name.starts_with("hugepages-")
}

/// `ours` over `current`, with the kubelet's resources that `ours` lacks
/// taken out.
fn merge_resources(
    current: Option<&BTreeMap<String, Quantity>>,
    ours: BTreeMap<String, Quantity>,
) -> BTreeMap<String, Quantity> {
    let mut merged: BTreeMap<String, Quantity> = current
        .into_iter()
        .flatten()
        .filter(|(k, _)| !kubelet_resource(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    merged.extend(ours);
    merged
}

/// The status the kubelet would now post, from the server's `current`
/// status (`None` for a Node not created yet): conditions from the
/// observation (transition times kept from `current`), capacity,
/// allocatable, nodeInfo, daemon endpoints, and the addresses unless the
/// cloud provider owns them. What the kubelet does not own is kept.
#[allow(clippy::too_many_arguments)] // the kubelet's inputs, each distinct
pub fn desired_status(
    current: Option<&NodeStatus>,
    settings: &NodeSettings,
    machine: &MachineInfo,
    m: &Measurements,
    readiness: &Result<(), String>,
    pressures: Pressures,
    now: &Time,
) -> NodeStatus {
    let mut status = current.cloned().unwrap_or_default();
    let ours = capacity(settings, m);
    let observation = Observation {
        pressures,
        not_ready: not_ready_reasons(readiness, &ours),
    };
    status.conditions = Some(conditions(
        status.conditions.as_deref().unwrap_or(&[]),
        &observation,
        now,
    ));
    status.capacity = Some(merge_resources(
        current.and_then(|s| s.capacity.as_ref()),
        ours,
    ));
    status.allocatable = Some(merge_resources(
        current.and_then(|s| s.allocatable.as_ref()),
        allocatable(settings, m),
    ));
    status.node_info = Some(node_info(settings, machine));
    status.daemon_endpoints = Some(daemon_endpoints(settings));
    // With an external cloud provider the kubelet writes addresses only
    // while there are none (the cloud controller replaces them from the
    // k3s.io annotations); without, they are the kubelet's.
    let has_addresses = status.addresses.as_ref().is_some_and(|a| !a.is_empty());
    if !(settings.external_cloud_provider && has_addresses) {
        status.addresses = Some(addresses(settings));
    }
    status
}

/// A condition without its heartbeat (and transition: it follows the
/// status) for comparison.
fn condition_key(c: &NodeCondition) -> (&str, &str, Option<&str>, Option<&str>) {
    (
        c.type_.as_str(),
        c.status.as_str(),
        c.reason.as_deref(),
        c.message.as_deref(),
    )
}

fn same_resources(
    a: Option<&BTreeMap<String, Quantity>>,
    b: Option<&BTreeMap<String, Quantity>>,
) -> bool {
    let empty = BTreeMap::new();
    let (a, b) = (a.unwrap_or(&empty), b.unwrap_or(&empty));
    a.len() == b.len() && a.iter().all(|(k, v)| b.get(k).is_some_and(|w| same(v, w)))
}

/// Whether `desired` differs from `current` in what the kubelet owns,
/// heartbeat times aside (`nodeStatusHasChanged`); quantities by value.
pub fn changed(current: &NodeStatus, desired: &NodeStatus) -> bool {
    let ours = |s: &NodeStatus| -> Vec<(String, String, Option<String>, Option<String>)> {
        KUBELET_CONDITIONS
            .iter()
            .filter_map(|kind| {
                s.conditions
                    .iter()
                    .flatten()
                    .find(|c| c.type_ == *kind)
                    .map(condition_key)
                    .map(|(t, s, r, m)| {
                        (
                            t.to_owned(),
                            s.to_owned(),
                            r.map(str::to_owned),
                            m.map(str::to_owned),
                        )
                    })
            })
            .collect()
    };
    ours(current) != ours(desired)
        || !same_resources(current.capacity.as_ref(), desired.capacity.as_ref())
        || !same_resources(current.allocatable.as_ref(), desired.allocatable.as_ref())
        || current.node_info != desired.node_info
        || current.daemon_endpoints != desired.daemon_endpoints
        || current.addresses != desired.addresses
}

/// Whether to send the status now: when it changed, or when the report
/// frequency has passed since the last report (or there was none since the
/// upkeep started).
pub fn report_due(
    changed: bool,
    last_report: Option<Instant>,
    now: Instant,
    frequency: Duration,
) -> bool {
    changed || last_report.is_none_or(|t| now.saturating_duration_since(t) >= frequency)
}

fn to_json<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

/// A resource map as a patch: the kubelet's resources of `desired`, `null`
/// for those `current` has and `desired` does not; other resources are not
/// the kubelet's to send.
fn resources_patch(
    current: Option<&BTreeMap<String, Quantity>>,
    desired: Option<&BTreeMap<String, Quantity>>,
) -> Value {
    let mut map = Map::new();
    for k in current.into_iter().flatten().map(|(k, _)| k) {
        if kubelet_resource(k) && !desired.is_some_and(|d| d.contains_key(k)) {
            map.insert(k.clone(), Value::Null);
        }
    }
    for (k, v) in desired.into_iter().flatten() {
        if kubelet_resource(k) {
            map.insert(k.clone(), Value::String(v.0.clone()));
        }
    }
    Value::Object(map)
}

/// The strategic merge patch of `nodes/<name>/status` taking `current` to
/// `desired`, shaped as the kubelet's two-way patch: the kubelet's
/// conditions merged by type with `$setElementOrder/conditions` giving the
/// whole list's order (other conditions are named there, not sent), its
/// resources, nodeInfo and daemon endpoints, and the addresses, when they
/// change, as a replacement (several InternalIPs share the merge key).
pub fn status_patch(current: &NodeStatus, desired: &NodeStatus) -> Value {
    let all = desired.conditions.as_deref().unwrap_or(&[]);
    let order: Vec<Value> = all.iter().map(|c| json!({"type": c.type_})).collect();
    let ours: Vec<Value> = all
        .iter()
        .filter(|c| KUBELET_CONDITIONS.contains(&c.type_.as_str()))
        .map(to_json)
        .collect();
    let mut status = Map::new();
    status.insert("$setElementOrder/conditions".into(), Value::Array(order));
    status.insert("conditions".into(), Value::Array(ours));
    status.insert(
        "capacity".into(),
        resources_patch(current.capacity.as_ref(), desired.capacity.as_ref()),
    );
    status.insert(
        "allocatable".into(),
        resources_patch(current.allocatable.as_ref(), desired.allocatable.as_ref()),
    );
    status.insert("nodeInfo".into(), to_json(&desired.node_info));
    status.insert("daemonEndpoints".into(), to_json(&desired.daemon_endpoints));
    if current.addresses != desired.addresses {
        let mut list: Vec<Value> = desired.addresses.iter().flatten().map(to_json).collect();
        list.push(json!({"$patch": "replace"}));
        status.insert("addresses".into(), Value::Array(list));
    }
    json!({ "status": status })
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use k8s_openapi::api::core::v1::NodeAddress;
    use k8s_openapi::chrono::{TimeZone, Utc};

    use super::*;
    use crate::measure::{FsStats, HugePages, MemInfo, PidStats};

    fn at(second: u32) -> Time {
        Time(
            Utc.with_ymd_and_hms(2026, 11, 27, 21, 0, second)
                .single()
                .unwrap(),
        )
    }

    fn settings() -> NodeSettings {
        NodeSettings::new("n1", IpAddr::from([127, 0, 0, 2]))
    }

    fn measurements() -> Measurements {
        Measurements {
            cpus: Some(4),
            memory: Some(MemInfo {
                total: 1 << 30,
                available: 1 << 29,
            }),
            fs: Some(FsStats {
                total: 10 << 30,
                available: 5 << 30,
            }),
            pids: Some(PidStats {
                max: 32768,
                running: 100,
            }),
            hugepages: vec![HugePages {
                size: 2 << 20,
                total: 0,
            }],
        }
    }

    fn desired(current: Option<&NodeStatus>, second: u32) -> NodeStatus {
        desired_status(
            current,
            &settings(),
            &MachineInfo::default(),
            &measurements(),
            &Ok(()),
            Pressures::default(),
            &at(second),
        )
    }

    #[test]
    fn only_heartbeats_are_not_a_change() {
        let first = desired(None, 0);
        assert!(changed(&NodeStatus::default(), &first));
        let second = desired(Some(&first), 10);
        assert!(!changed(&first, &second));
        let ready = |s: &NodeStatus| {
            s.conditions
                .iter()
                .flatten()
                .find(|c| c.type_ == "Ready")
                .cloned()
                .unwrap()
        };
        assert_eq!(ready(&second).last_heartbeat_time, Some(at(10)));
        assert_eq!(ready(&second).last_transition_time, Some(at(0)));
        // The server's spelling of the same value is no change either.
        let mut respelled = first.clone();
        if let Some(c) = respelled.capacity.as_mut() {
            c.insert("memory".into(), Quantity("1Gi".into()));
            c.insert("pods".into(), Quantity("110".into()));
        }
        assert!(!changed(&respelled, &desired(Some(&respelled), 20)));
        // A real change is.
        let mut fewer = first.clone();
        if let Some(c) = fewer.capacity.as_mut() {
            c.insert("cpu".into(), Quantity("2".into()));
        }
        assert!(changed(&fewer, &desired(Some(&fewer), 20)));
    }

    #[test]
    fn readiness_change_is_a_change() {
        let first = desired(None, 0);
        let broken = desired_status(
            Some(&first),
            &settings(),
            &MachineInfo::default(),
            &measurements(),
            &Err("container runtime is down".into()),
            Pressures::default(),
            &at(10),
        );
        assert!(changed(&first, &broken));
    }

    #[test]
    fn report_frequency() {
        let now = Instant::now();
        let five = Duration::from_secs(300);
        assert!(report_due(false, None, now, five));
        assert!(report_due(true, Some(now), now, five));
        assert!(!report_due(
            false,
            Some(now),
            now + Duration::from_secs(299),
            five
        ));
        assert!(report_due(false, Some(now), now + five, five));
    }

    #[test]
    fn cloud_provider_addresses_are_left_alone() {
        let mut current = desired(None, 0);
        assert_eq!(
            current
                .addresses
                .as_ref()
                .map(|a| a.iter().map(|a| a.type_.as_str()).collect::<Vec<_>>()),
            Some(vec!["InternalIP", "Hostname"])
        );
        let cloud = vec![
            NodeAddress {
                address: "127.0.0.2".into(),
                type_: "InternalIP".into(),
            },
            NodeAddress {
                address: "203.0.113.1".into(),
                type_: "ExternalIP".into(),
            },
            NodeAddress {
                address: "n1".into(),
                type_: "Hostname".into(),
            },
        ];
        current.addresses = Some(cloud.clone());
        let next = desired(Some(&current), 10);
        assert_eq!(next.addresses, Some(cloud));
        assert!(!changed(&current, &next));
        assert!(
            status_patch(&current, &next)["status"]
                .get("addresses")
                .is_none()
        );
        // Without the cloud controller the kubelet's addresses win.
        let mut own = settings();
        own.external_cloud_provider = false;
        let next = desired_status(
            Some(&current),
            &own,
            &MachineInfo::default(),
            &measurements(),
            &Ok(()),
            Pressures::default(),
            &at(10),
        );
        assert!(changed(&current, &next));
        let patch = status_patch(&current, &next);
        assert_eq!(
            patch["status"]["addresses"],
            json!([{"address": "127.0.0.2", "type": "InternalIP"},
                   {"address": "n1", "type": "Hostname"},
                   {"$patch": "replace"}])
        );
    }

    #[test]
    fn the_patch_is_shaped_as_the_kubelets() {
        let mut current = desired(None, 0);
        // Flannel's condition first, a device plugin's resource, a huge
        // page size the kernel no longer has.
        let mut list = vec![NodeCondition {
            type_: "NetworkUnavailable".into(),
            status: "False".into(),
            reason: Some("FlannelIsUp".into()),
            ..NodeCondition::default()
        }];
        list.extend(current.conditions.take().unwrap_or_default());
        current.conditions = Some(list);
        for map in [current.capacity.as_mut(), current.allocatable.as_mut()]
            .into_iter()
            .flatten()
        {
            map.insert("example.com/gpu".into(), Quantity("1".into()));
            map.insert("hugepages-1Gi".into(), Quantity("0".into()));
        }
        let next = desired(Some(&current), 10);
        let patch = status_patch(&current, &next);
        let status = &patch["status"];
        assert_eq!(
            status["$setElementOrder/conditions"],
            json!([{"type": "NetworkUnavailable"}, {"type": "MemoryPressure"}, {"type": "DiskPressure"},
                   {"type": "PIDPressure"}, {"type": "Ready"}])
        );
        let kinds: Vec<&str> = status["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["type"].as_str().unwrap())
            .collect();
        assert_eq!(
            kinds,
            ["MemoryPressure", "DiskPressure", "PIDPressure", "Ready"]
        );
        assert_eq!(
            status["conditions"][3]["lastHeartbeatTime"],
            "2026-11-27T21:00:10Z"
        );
        assert_eq!(
            status["conditions"][3]["lastTransitionTime"],
            "2026-11-27T21:00:00Z"
        );
        assert_eq!(status["capacity"]["hugepages-1Gi"], Value::Null);
        assert!(status["capacity"].get("example.com/gpu").is_none());
        assert_eq!(status["capacity"]["cpu"], "4");
        assert_eq!(status["allocatable"]["hugepages-1Gi"], Value::Null);
        assert_eq!(
            status["daemonEndpoints"],
            json!({"kubeletEndpoint": {"Port": 10250}})
        );
        assert_eq!(status["nodeInfo"]["operatingSystem"], "linux");
        // The device plugin's resource survives in what the server keeps.
        assert_eq!(next.capacity.as_ref().unwrap()["example.com/gpu"].0, "1");
    }
}
