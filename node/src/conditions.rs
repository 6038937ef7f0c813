//! The kubelet's node conditions (MemoryPressure, DiskPressure, PIDPressure,
//! Ready: Ready last, as the kubelet orders them) from measurements, the
//! eviction thresholds and the caller's readiness, with the kubelet's
//! reasons and messages and its transition rules: `lastTransitionTime`
//! moves only when the status does, pressure stays reported for the
//! transition period after it was last seen. NetworkUnavailable (flannel's)
//! and any other condition is kept as the server has it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::NodeCondition;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::measure::Measurements;
use crate::object::percent_of;
use crate::settings::EvictionThresholds;

/// The Ready condition's type.
pub const READY: &str = "Ready";
/// Memory pressure.
pub const MEMORY_PRESSURE: &str = "MemoryPressure";
/// Disk pressure.
pub const DISK_PRESSURE: &str = "DiskPressure";
/// PID pressure.
pub const PID_PRESSURE: &str = "PIDPressure";
/// The kubelet's conditions, in its order.
pub const KUBELET_CONDITIONS: [&str; 4] = [MEMORY_PRESSURE, DISK_PRESSURE, PID_PRESSURE, READY];

/// The capacities without which the kubelet calls a node not ready
/// (`ReadyCondition`: cpu, memory, pods, and ephemeral-storage with local
/// storage capacity isolation, on by default).
const REQUIRED_CAPACITY: [&str; 4] = ["cpu", "memory", "pods", "ephemeral-storage"];

/// Which resources are under pressure.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pressures {
    /// `memory.available` below its threshold.
    pub memory: bool,
    /// `nodefs.available` below its threshold.
    pub disk: bool,
    /// `pid.available` below its threshold.
    pub pid: bool,
}

/// The pressures one reading shows: a resource not measured, or without a
/// threshold, is never under pressure.
pub fn pressures(m: &Measurements, thresholds: &EvictionThresholds) -> Pressures {
    let memory = match (m.memory, thresholds.memory_available) {
        (Some(mem), Some(threshold)) => mem.available < threshold,
        _ => false,
    };
    let disk = match (m.fs, thresholds.nodefs_available) {
        (Some(fs), Some(fraction)) => fs.available < percent_of(fs.total, fraction),
        _ => false,
    };
    let pid = match (m.pids, thresholds.pid_available) {
        (Some(p), Some(fraction)) => p.max.saturating_sub(p.running) < percent_of(p.max, fraction),
        _ => false,
    };
    Pressures { memory, disk, pid }
}

/// The kubelet's `evictionPressureTransitionPeriod`: a pressure is
/// reported until it has not been seen for the period, so a node hovering
/// at a threshold does not flap between schedulable and not.
#[derive(Debug, Clone, Default)]
pub struct PressureDamper {
    last_seen: [Option<Instant>; 3],
}

impl PressureDamper {
    /// Nothing seen yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The pressures to report at `now`, given those observed now.
    pub fn damp(&mut self, observed: Pressures, now: Instant, period: Duration) -> Pressures {
        let mut out = [false; 3];
        for (i, seen) in [observed.memory, observed.disk, observed.pid]
            .into_iter()
            .enumerate()
        {
            if seen {
                self.last_seen[i] = Some(now);
            }
            out[i] = self.last_seen[i].is_some_and(|t| now.saturating_duration_since(t) < period);
        }
        Pressures {
            memory: out[0],
            disk: out[1],
            pid: out[2],
        }
    }
}

/// Why the node is not ready: the caller's readiness problem first (the
/// kubelet puts runtime and network errors first), then missing
/// capacities. Empty: ready.
pub fn not_ready_reasons(
    readiness: &Result<(), String>,
    capacity: &BTreeMap<String, Quantity>,
) -> Vec<String> {
    let mut reasons = Vec::new();
    if let Err(why) = readiness {
        reasons.push(why.clone());
    }
    let missing: Vec<&str> = REQUIRED_CAPACITY
        .into_iter()
        .filter(|r| !capacity.contains_key(*r))
        .collect();
    if !missing.is_empty() {
        reasons.push(format!(
            "missing node capacity for resources: {}",
            missing.join(", ")
        ));
    }
    reasons
}

/// Several errors as Go's `utilerrors.NewAggregate(errs).Error()` prints
/// them: one alone, more as `[a, b]`.
fn aggregate(reasons: &[String]) -> String {
    match reasons {
        [one] => one.clone(),
        many => format!("[{}]", many.join(", ")),
    }
}

/// What the conditions are computed from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observation {
    /// Pressures to report (already damped).
    pub pressures: Pressures,
    /// Why the node is not ready (empty: ready).
    pub not_ready: Vec<String>,
}

/// (type, status, reason, message) of each kubelet condition, in order.
fn wanted(obs: &Observation) -> [(&'static str, &'static str, &'static str, String); 4] {
    type Words = (&'static str, &'static str);
    let pressure = |kind: &'static str, under: bool, yes: Words, no: Words| {
        let (status, (reason, message)) = if under { ("True", yes) } else { ("False", no) };
        (kind, status, reason, message.to_owned())
    };
    let ready = if obs.not_ready.is_empty() {
        (
            READY,
            "True",
            "KubeletReady",
            "kubelet is posting ready status".to_owned(),
        )
    } else {
        (READY, "False", "KubeletNotReady", aggregate(&obs.not_ready))
    };
    [
        pressure(
            MEMORY_PRESSURE,
            obs.pressures.memory,
            (
                "KubeletHasInsufficientMemory",
                "kubelet has insufficient memory available",
            ),
            (
                "KubeletHasSufficientMemory",
                "kubelet has sufficient memory available",
            ),
        ),
        pressure(
            DISK_PRESSURE,
            obs.pressures.disk,
            ("KubeletHasDiskPressure", "kubelet has disk pressure"),
            ("KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
        ),
        pressure(
            PID_PRESSURE,
            obs.pressures.pid,
            (
                "KubeletHasInsufficientPID",
                "kubelet has insufficient PID available",
            ),
            (
                "KubeletHasSufficientPID",
                "kubelet has sufficient PID available",
            ),
        ),
        ready,
    ]
}

/// The node's conditions after this observation: the server's list with the
/// kubelet's four replaced in place (appended in the kubelet's order when
/// missing), each with `lastHeartbeatTime` now and `lastTransitionTime`
/// kept unless its status changed. Other conditions are untouched.
pub fn conditions(existing: &[NodeCondition], obs: &Observation, now: &Time) -> Vec<NodeCondition> {
    let mut list = existing.to_vec();
    for (kind, status, reason, message) in wanted(obs) {
        let position = list.iter().position(|c| c.type_ == kind);
        let transition = match position.map(|i| &list[i]) {
            Some(old) if old.status == status => old
                .last_transition_time
                .clone()
                .unwrap_or_else(|| now.clone()),
            _ => now.clone(),
        };
        let condition = NodeCondition {
            type_: kind.to_owned(),
            status: status.to_owned(),
            reason: Some(reason.to_owned()),
            message: Some(message),
            last_heartbeat_time: Some(now.clone()),
            last_transition_time: Some(transition),
        };
        match position {
            Some(i) => list[i] = condition,
            None => list.push(condition),
        }
    }
    list
}

#[cfg(test)]
mod tests {
    use k8s_openapi::chrono::{TimeZone, Utc};

    use super::*;
    use crate::measure::{FsStats, MemInfo, PidStats};

    fn at(second: u32) -> Time {
        Time(
            Utc.with_ymd_and_hms(2026, 11, 27, 21, 0, second)
                .single()
                .unwrap(),
        )
    }

    fn find<'a>(list: &'a [NodeCondition], kind: &str) -> &'a NodeCondition {
        list.iter().find(|c| c.type_ == kind).unwrap()
    }

    fn ready() -> Observation {
        Observation::default()
    }

    #[test]
    fn healthy_conditions_read_as_the_recorded_kubelets() {
        let list = conditions(&[], &ready(), &at(0));
        let summary: Vec<(&str, &str, &str, &str)> = list
            .iter()
            .map(|c| {
                (
                    c.type_.as_str(),
                    c.status.as_str(),
                    c.reason.as_deref().unwrap(),
                    c.message.as_deref().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                (
                    "MemoryPressure",
                    "False",
                    "KubeletHasSufficientMemory",
                    "kubelet has sufficient memory available"
                ),
                (
                    "DiskPressure",
                    "False",
                    "KubeletHasNoDiskPressure",
                    "kubelet has no disk pressure"
                ),
                (
                    "PIDPressure",
                    "False",
                    "KubeletHasSufficientPID",
                    "kubelet has sufficient PID available"
                ),
                (
                    "Ready",
                    "True",
                    "KubeletReady",
                    "kubelet is posting ready status"
                ),
            ]
        );
        assert!(list.iter().all(|c| c.last_transition_time == Some(at(0))));
    }

    #[test]
    fn transition_time_moves_only_with_the_status() {
        let first = conditions(&[], &ready(), &at(0));
        let second = conditions(&first, &ready(), &at(10));
        let r = find(&second, READY);
        assert_eq!(r.last_heartbeat_time, Some(at(10)));
        assert_eq!(r.last_transition_time, Some(at(0)));

        let broken = Observation {
            not_ready: vec!["container runtime is down".into()],
            ..ready()
        };
        let third = conditions(&second, &broken, &at(20));
        let r = find(&third, READY);
        assert_eq!(
            (r.status.as_str(), r.reason.as_deref()),
            ("False", Some("KubeletNotReady"))
        );
        assert_eq!(r.message.as_deref(), Some("container runtime is down"));
        assert_eq!(r.last_transition_time, Some(at(20)));
        // A new message, same status: no transition.
        let other = Observation {
            not_ready: vec!["a".into(), "b".into()],
            ..ready()
        };
        let fourth = conditions(&third, &other, &at(30));
        let r = find(&fourth, READY);
        assert_eq!(r.message.as_deref(), Some("[a, b]"));
        assert_eq!(r.last_transition_time, Some(at(20)));
        // Pressure conditions did not move.
        assert_eq!(
            find(&fourth, MEMORY_PRESSURE).last_transition_time,
            Some(at(0))
        );
    }

    #[test]
    fn unknown_from_the_node_controller_transitions_back() {
        let mut list = conditions(&[], &ready(), &at(0));
        for c in &mut list {
            c.status = "Unknown".into();
            c.reason = Some("NodeStatusUnknown".into());
            c.last_transition_time = Some(at(40));
        }
        let back = conditions(&list, &ready(), &at(50));
        assert!(back.iter().all(|c| c.last_transition_time == Some(at(50))));
        assert_eq!(find(&back, READY).status, "True");
    }

    #[test]
    fn other_conditions_stay_where_they_are() {
        let flannel = NodeCondition {
            type_: "NetworkUnavailable".into(),
            status: "False".into(),
            reason: Some("FlannelIsUp".into()),
            message: Some("Flannel is running on this node".into()),
            last_heartbeat_time: Some(at(1)),
            last_transition_time: Some(at(1)),
        };
        let list = conditions(std::slice::from_ref(&flannel), &ready(), &at(5));
        assert_eq!(list[0], flannel);
        let kinds: Vec<&str> = list.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(
            kinds,
            [
                "NetworkUnavailable",
                "MemoryPressure",
                "DiskPressure",
                "PIDPressure",
                "Ready"
            ]
        );
    }

    fn machine(mem_available: u64, fs_available: u64, pids_running: u64) -> Measurements {
        Measurements {
            cpus: Some(4),
            memory: Some(MemInfo {
                total: 1 << 30,
                available: mem_available,
            }),
            fs: Some(FsStats {
                total: 1000 << 20,
                available: fs_available,
            }),
            pids: Some(PidStats {
                max: 1000,
                running: pids_running,
            }),
            hugepages: Vec::new(),
        }
    }

    #[test]
    fn pressure_thresholds() {
        let kubelet = EvictionThresholds::kubelet();
        let k3s = EvictionThresholds::k3s();
        let fine = machine(500 << 20, 500 << 20, 10);
        assert_eq!(pressures(&fine, &kubelet), Pressures::default());
        // 100Mi of memory, 10 % of disk, 5 % of pids left, exactly: fine.
        // (10 % as the kubelet's float32 takes it: a little over.)
        let tenth = percent_of(1000 << 20, 0.1);
        assert_eq!(tenth, 104_857_601);
        let edge = machine(100 << 20, tenth, 950);
        assert_eq!(pressures(&edge, &kubelet), Pressures::default());
        let low = machine((100 << 20) - 1, tenth - 1, 951);
        assert_eq!(
            pressures(&low, &kubelet),
            Pressures {
                memory: true,
                disk: true,
                pid: true
            }
        );
        // K3s's thresholds: disk below 5 % only.
        assert_eq!(pressures(&low, &k3s), Pressures::default());
        let full = machine(0, 10 << 20, 1000);
        assert_eq!(
            pressures(&full, &k3s),
            Pressures {
                memory: false,
                disk: true,
                pid: false
            }
        );
        // Nothing measured: no pressure.
        assert_eq!(
            pressures(&Measurements::default(), &kubelet),
            Pressures::default()
        );
        // More tasks than pid_max (a racy reading): pressure, no overflow.
        assert!(pressures(&machine(1 << 30, 1 << 30, 5000), &kubelet).pid);
    }

    #[test]
    fn pressure_is_held_for_the_transition_period() {
        let period = Duration::from_secs(300);
        let start = Instant::now();
        let mut damper = PressureDamper::new();
        let seen = Pressures {
            memory: true,
            ..Pressures::default()
        };
        assert!(damper.damp(seen, start, period).memory);
        let later = start + Duration::from_secs(299);
        assert!(damper.damp(Pressures::default(), later, period).memory);
        let after = start + Duration::from_secs(300);
        assert!(!damper.damp(Pressures::default(), after, period).memory);
        // Seen again: held again from then.
        assert!(damper.damp(seen, after, period).memory);
        assert!(
            !damper
                .damp(Pressures::default(), after, Duration::ZERO)
                .memory
        );
    }

    #[test]
    fn readiness_and_missing_capacity() {
        let full: BTreeMap<String, Quantity> = ["cpu", "memory", "pods", "ephemeral-storage"]
            .into_iter()
            .map(|k| (k.to_owned(), Quantity("1".into())))
            .collect();
        assert!(not_ready_reasons(&Ok(()), &full).is_empty());
        let mut partial = full.clone();
        partial.remove("cpu");
        partial.remove("ephemeral-storage");
        assert_eq!(
            not_ready_reasons(&Err("container runtime is down".into()), &partial),
            vec![
                "container runtime is down".to_owned(),
                "missing node capacity for resources: cpu, ephemeral-storage".to_owned()
            ]
        );
    }
}
