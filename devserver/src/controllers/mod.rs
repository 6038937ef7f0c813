//! The controllers a K3s server runs that an agent depends on, working on the
//! devserver's [`Store`] directly:
//!
//! - [`podcidr`]: node IPAM's range allocator (`spec.podCIDR(s)` from
//!   `--cluster-cidr`), as kube-controller-manager runs it for K3s;
//! - [`cloud`]: the node part of K3s's embedded cloud controller (providerID
//!   `k3s://<node>`, the instance-type labels, addresses from the `k3s.io/*`
//!   annotations, and the `uninitialized` taint removed);
//! - [`lifecycle`]: the node lifecycle controller (conditions to `Unknown`
//!   when heartbeats stop, the condition taints, pods on a not-ready node
//!   marked not ready);
//! - [`scheduler`]: the default scheduler (filters, least-allocated score,
//!   binding, the `PodScheduled` condition).
//!
//! Each is level-triggered, like a kube-rs watcher feeding a reconciler:
//! every relevant change, and a periodic resync, runs a pass that reads the
//! current state and writes only what differs. A write that loses a race (409)
//! is redone from a fresh read, so a missed or coalesced change costs nothing
//! but latency. Objects in the store are external input (anything a client
//! sent): missing or mistyped fields are skipped, never a crash.
//!
//! The Events they write are core/v1 Events as client-go's event recorder
//! writes them (name `<object>.<hex nanoseconds>`, `source.component`,
//! `firstTimestamp`/`lastTimestamp`, `count` raised for a repeat).

mod cloud;
mod lifecycle;
mod podcidr;
mod scheduler;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

use crate::config::Cidr;
use crate::store::{self, Event, Store, StoreError};

/// The store's name for Leases.
const LEASES: &str = "leases.coordination.k8s.io";
/// Where kubelets keep their Leases.
const LEASE_NAMESPACE: &str = "kube-node-lease";
/// Rereads after a 409 before a write is left to the next pass.
const CONFLICT_RETRIES: usize = 5;

/// Why the controllers cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// A duration flag that is not a Go duration.
    #[error("{0:?} is not a duration (Go syntax: 300ms, 40s, 1m30s, 1h)")]
    Duration(String),
    /// A node mask the cluster CIDR cannot be cut into (kube-controller-manager
    /// refuses the same).
    #[error(
        "--node-cidr-mask-size {mask} does not fit --cluster-cidr {cluster}: it must be between the cluster's prefix and 32, and at most 16 bits longer"
    )]
    MaskSize {
        /// The node mask size.
        mask: u8,
        /// The cluster CIDR.
        cluster: Cidr,
    },
}

/// The controller flags the devserver takes, spelled as kube-controller-manager
/// spells them. Hidden: the defaults are K3s's; tests shorten the timings.
#[derive(Debug, Clone, clap::Args)]
pub struct Flags {
    /// How long a node may go without a heartbeat (Lease renewal or Ready
    /// heartbeat) before its conditions become Unknown.
    #[arg(long, hide = true, default_value = "40s", value_parser = parse_duration)]
    pub node_monitor_grace_period: Duration,
    /// The same for a node that never posted a Ready condition, from its
    /// creation.
    #[arg(long, hide = true, default_value = "1m", value_parser = parse_duration)]
    pub node_startup_grace_period: Duration,
    /// How often node health is checked without any change to react to.
    #[arg(long, hide = true, default_value = "5s", value_parser = parse_duration)]
    pub node_monitor_period: Duration,
    /// Prefix length of each node's pod CIDR.
    #[arg(long, hide = true, default_value_t = 24)]
    pub node_cidr_mask_size: u8,
}

/// What the controllers run with.
#[derive(Debug, Clone)]
pub struct Config {
    /// The pod network nodes' CIDRs are cut from (`--cluster-cidr`).
    pub cluster_cidr: Cidr,
    /// Prefix length of each node's CIDR.
    pub node_mask: u8,
    /// Heartbeat grace period of a node that has posted status.
    pub grace: Duration,
    /// Grace period of a node that never did, from its creation.
    pub startup_grace: Duration,
    /// Node health resync period.
    pub monitor_period: Duration,
}

impl Config {
    /// The configuration for `cluster_cidr` and the flags; refuses a node mask
    /// the cluster CIDR cannot be divided into.
    pub fn new(cluster_cidr: Cidr, flags: &Flags) -> Result<Self, ControllerError> {
        let mask = flags.node_cidr_mask_size;
        // A subnet larger than the cluster, smaller than an address, or more
        // than 2^16 of them (the allocator's bitmap limit upstream).
        if mask < cluster_cidr.prefix || mask > 32 || mask - cluster_cidr.prefix > 16 {
            return Err(ControllerError::MaskSize {
                mask,
                cluster: cluster_cidr,
            });
        }
        Ok(Self {
            cluster_cidr,
            node_mask: mask,
            grace: flags.node_monitor_grace_period,
            startup_grace: flags.node_startup_grace_period,
            // A zero period would spin.
            monitor_period: flags.node_monitor_period.max(Duration::from_millis(100)),
        })
    }
}

/// Starts the controllers as tasks on the current tokio runtime; they run
/// until the runtime stops.
pub fn spawn(store: Arc<Store>, config: Config) {
    let allocator = podcidr::RangeAllocator::new(config.cluster_cidr, config.node_mask);
    match allocator {
        Ok(allocator) => {
            tokio::spawn(drive(Arc::clone(&store), allocator));
        }
        // Config::new has checked the mask: this cannot happen, but no panic.
        Err(e) => log("cidrAllocator", format_args!("not started: {e}")),
    }
    tokio::spawn(drive(Arc::clone(&store), cloud::CloudNodes::new()));
    tokio::spawn(drive(
        Arc::clone(&store),
        lifecycle::NodeLifecycle::new(config.grace, config.startup_grace, config.monitor_period),
    ));
    tokio::spawn(drive(store, scheduler::Scheduler::new()));
}

/// One controller: which changes wake it, how long it may sleep, and a pass
/// that reconciles everything from the store's current state.
trait Controller: Send + 'static {
    /// Its name in log lines.
    const NAME: &'static str;
    /// Whether this change can matter to it.
    fn wants(&self, event: &Event) -> bool;
    /// The longest it waits between passes (the resync).
    fn period(&self) -> Duration;
    /// Reconciles from the current state.
    fn pass(&mut self, store: &Store);
}

/// Runs `controller`: a pass at once, then one after each batch of relevant
/// changes or when its period has passed without any.
async fn drive<C: Controller>(store: Arc<Store>, mut controller: C) {
    // From now on (since 0: no backlog, no 410); the receiver carries every
    // resource's changes, whichever resource is named.
    let mut events = match store.watch("nodes", 0) {
        Ok((_, events)) => events,
        Err(e) => {
            log(C::NAME, format_args!("cannot watch the store: {e}"));
            return;
        }
    };
    loop {
        controller.pass(&store);
        let woke = tokio::select! {
            _ = tokio::time::sleep(controller.period()) => true,
            woke = relevant(&mut events, &controller) => woke,
        };
        if !woke {
            return;
        }
        // Changes already queued are covered by the next pass: one pass for
        // a burst. Missed ones (lagged) too, since the pass reads everything.
        loop {
            match events.try_recv() {
                Ok(_) | Err(TryRecvError::Lagged(_)) => {}
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Closed) => return,
            }
        }
    }
}

/// Waits for a change `controller` wants; false when the store is gone.
async fn relevant<C: Controller>(
    events: &mut tokio::sync::broadcast::Receiver<std::sync::Arc<Event>>,
    controller: &C,
) -> bool {
    loop {
        match events.recv().await {
            Ok(event) if controller.wants(&event) => return true,
            Ok(_) => {}
            // Changes were dropped: a pass rereads everything anyway.
            Err(RecvError::Lagged(_)) => return true,
            Err(RecvError::Closed) => return false,
        }
    }
}

/// A log line on the devserver's stderr.
fn log(component: &str, message: std::fmt::Arguments<'_>) {
    eprintln!("armlet-devserver: {component}: {message}");
}

/// Rewrites one object from a fresh read: `change` edits the current object
/// and says whether it changed anything (nothing is written otherwise). After
/// a 409 it rereads and asks again, so `change` must decide from the object
/// it is given. `Ok(None)`: nothing to write, or the object is gone.
fn update(
    store: &Store,
    resource: &str,
    namespace: &str,
    name: &str,
    mut change: impl FnMut(&mut Value) -> bool,
) -> Result<Option<Value>, StoreError> {
    let mut last = None;
    for _ in 0..CONFLICT_RETRIES {
        let mut object = match store.get(resource, namespace, name) {
            Ok(object) => object,
            Err(StoreError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        if !change(&mut object) {
            return Ok(None);
        }
        // The object carries the version it was read at: optimistic.
        match store.update(resource, namespace, object) {
            Ok(written) => return Ok(Some(written)),
            Err(e @ StoreError::Conflict { .. }) => last = Some(e),
            Err(StoreError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| StoreError::Conflict {
        resource: resource.to_owned(),
        name: name.to_owned(),
    }))
}

/// `metadata.name`, or "".
fn name_of(object: &Value) -> &str {
    str_at(object, "/metadata/name")
}

/// `metadata.namespace`, or "".
fn namespace_of(object: &Value) -> &str {
    str_at(object, "/metadata/namespace")
}

/// `metadata.uid`, or "".
fn uid_of(object: &Value) -> &str {
    str_at(object, "/metadata/uid")
}

/// The string at a JSON pointer, or "" (absent or not a string).
fn str_at<'a>(object: &'a Value, pointer: &str) -> &'a str {
    object
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// The mutable object at `field` of `parent`, created (or replaced, if it is
/// not an object) as an empty one; `None` when `parent` is not an object.
fn object_field<'a>(
    parent: &'a mut Value,
    field: &str,
) -> Option<&'a mut serde_json::Map<String, Value>> {
    let map = parent.as_object_mut()?;
    let slot = map.entry(field.to_owned()).or_insert_with(|| json!({}));
    if !slot.is_object() {
        *slot = json!({});
    }
    slot.as_object_mut()
}

/// The condition of `type` in `status.conditions`, if any.
fn condition<'a>(object: &'a Value, kind: &str) -> Option<&'a Value> {
    object
        .pointer("/status/conditions")
        .and_then(Value::as_array)?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(kind))
}

/// A taint or a toleration's target: key, value, effect.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Taint {
    key: String,
    value: String,
    effect: String,
}

impl Taint {
    /// A taint from its JSON; `None` when it has no key.
    fn from_json(taint: &Value) -> Option<Self> {
        let key = taint.get("key").and_then(Value::as_str)?;
        Some(Self {
            key: key.to_owned(),
            value: str_at(taint, "/value").to_owned(),
            effect: str_at(taint, "/effect").to_owned(),
        })
    }

    /// A valueless taint with `key` and `effect`.
    fn new(key: &str, effect: &str) -> Self {
        Self {
            key: key.to_owned(),
            value: String::new(),
            effect: effect.to_owned(),
        }
    }
}

/// A node's taints (malformed entries skipped).
fn taints_of(node: &Value) -> Vec<Taint> {
    node.pointer("/spec/taints")
        .and_then(Value::as_array)
        .map(|list| list.iter().filter_map(Taint::from_json).collect())
        .unwrap_or_default()
}

/// Whether an Event is routine or needs attention.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EventKind {
    /// `Normal`.
    Normal,
    /// `Warning`.
    Warning,
}

impl EventKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Normal => "Normal",
            Self::Warning => "Warning",
        }
    }
}

/// What an Event reports, about which object, from which component.
#[derive(Debug, Clone, Copy)]
struct Report<'a> {
    /// `source.component`: `default-scheduler`, `node-controller`, `cidrAllocator`.
    component: &'a str,
    /// The involved object's kind (`Pod`, `Node`).
    kind: &'a str,
    /// The involved object as read from the store.
    object: &'a Value,
    /// Normal or Warning.
    event_type: EventKind,
    /// The machine-readable reason.
    reason: &'a str,
    /// The human-readable message.
    message: &'a str,
}

/// Records an Event as client-go's recorder does: a repeat of the same
/// report (same object, component, type, reason and message) raises the
/// existing Event's `count` and `lastTimestamp` instead of adding one. Events
/// are advisory: a failure is logged, never an error for the caller.
fn record(store: &Store, report: &Report<'_>) {
    if let Err(e) = try_record(store, report) {
        log(
            report.component,
            format_args!("cannot record event {}: {e}", report.reason),
        );
    }
}

fn try_record(store: &Store, report: &Report<'_>) -> Result<(), StoreError> {
    let object = report.object;
    let name = name_of(object);
    // Cluster-scoped objects' Events go to "default", as client-go puts them.
    let namespace = match namespace_of(object) {
        "" => "default",
        ns => ns,
    };
    let mut involved = json!({"kind": report.kind, "name": name, "apiVersion": "v1"});
    if !namespace_of(object).is_empty() {
        involved["namespace"] = json!(namespace_of(object));
    }
    if !uid_of(object).is_empty() {
        involved["uid"] = json!(uid_of(object));
    }
    // Pods are referenced at their version (GetReference); node status
    // changes are recorded without one (RecordNodeStatusChange).
    if report.kind != "Node" {
        if let Some(version) = object.pointer("/metadata/resourceVersion") {
            involved["resourceVersion"] = version.clone();
        }
    }
    let now = store::rfc3339(store::now());
    let same = |event: &Value| {
        let refers =
            |field: &str| event.pointer(&format!("/involvedObject/{field}")) == involved.get(field);
        refers("kind")
            && refers("name")
            && refers("namespace")
            && refers("uid")
            && str_at(event, "/source/component") == report.component
            && str_at(event, "/type") == report.event_type.as_str()
            && str_at(event, "/reason") == report.reason
            && str_at(event, "/message") == report.message
    };
    let (existing, _) = store.list("events", Some(namespace), same);
    if let Some(event) = existing.first() {
        update(store, "events", namespace, name_of(event), |event| {
            let count = event.get("count").and_then(Value::as_i64).unwrap_or(1);
            let Some(map) = event.as_object_mut() else {
                return false;
            };
            map.insert("count".into(), json!(count.saturating_add(1)));
            map.insert("lastTimestamp".into(), json!(now));
            true
        })?;
        return Ok(());
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let event = |nanos: u128| {
        json!({
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": format!("{name}.{nanos:x}"), "namespace": namespace},
            "involvedObject": involved,
            "reason": report.reason,
            "message": report.message,
            "source": {"component": report.component},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
            "type": report.event_type.as_str(),
            "eventTime": null,
            "reportingComponent": "",
            "reportingInstance": "",
        })
    };
    // Two Events for one object in the same nanosecond: the next name.
    let mut attempt = 0;
    loop {
        match store.create("events", namespace, event(nanos + attempt)) {
            Err(StoreError::AlreadyExists { .. }) if attempt < 8 => attempt += 1,
            other => return other.map(|_| ()),
        }
    }
}

/// Parses a Go duration (`300ms`, `40s`, `1m30s`, `1.5h`, `0`), as
/// kube-controller-manager's duration flags take them.
pub fn parse_duration(text: &str) -> Result<Duration, ControllerError> {
    let bad = || ControllerError::Duration(text.to_owned());
    let body = text.strip_prefix('+').unwrap_or(text);
    if body == "0" {
        return Ok(Duration::ZERO);
    }
    if body.is_empty() {
        return Err(bad());
    }
    let mut nanos: u128 = 0;
    let mut rest = body;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (int_part, after) = rest.split_at(int_len);
        let (frac_part, after) = match after.strip_prefix('.') {
            Some(f) => {
                let len = f.bytes().take_while(u8::is_ascii_digit).count();
                f.split_at(len)
            }
            None => ("", after),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(bad());
        }
        let unit_len = after
            .char_indices()
            .find(|(_, c)| c.is_ascii_digit() || *c == '.')
            .map_or(after.len(), |(i, _)| i);
        let (unit, after) = after.split_at(unit_len);
        let scale: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(bad()),
        };
        let whole: u128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().map_err(|_| bad())?
        };
        let mut part = whole.checked_mul(scale).ok_or_else(bad)?;
        // The fraction, digit by digit: exact to the nanosecond, no floats.
        let mut place = scale;
        for digit in frac_part.bytes() {
            place /= 10;
            part += u128::from(digit - b'0') * place;
        }
        nanos = nanos.checked_add(part).ok_or_else(bad)?;
        rest = after;
    }
    let secs = u64::try_from(nanos / 1_000_000_000).map_err(|_| bad())?;
    // The remainder is below 10^9: it fits.
    let sub = u32::try_from(nanos % 1_000_000_000).unwrap_or(0);
    Ok(Duration::new(secs, sub))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        let ok = |s: &str| parse_duration(s).unwrap();
        assert_eq!(ok("40s"), Duration::from_secs(40));
        assert_eq!(ok("0"), Duration::ZERO);
        assert_eq!(ok("1m30s"), Duration::from_secs(90));
        assert_eq!(ok("1.5h"), Duration::from_secs(5400));
        assert_eq!(ok("300ms"), Duration::from_millis(300));
        assert_eq!(ok("2h45m0.5s"), Duration::from_millis(9_900_500));
        assert_eq!(ok("1us"), Duration::from_micros(1));
        assert_eq!(ok(".5s"), Duration::from_millis(500));
        for bad in [
            "",
            "40",
            "s",
            "-1s",
            "1x",
            "1.s.",
            "1e3s",
            "99999999999999999999999h",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn config_refuses_masks_the_cluster_cannot_hold() {
        let flags = |mask| Flags {
            node_monitor_grace_period: Duration::from_secs(40),
            node_startup_grace_period: Duration::from_secs(60),
            node_monitor_period: Duration::from_secs(5),
            node_cidr_mask_size: mask,
        };
        let cluster = Cidr::parse("c", "10.42.0.0/16").unwrap();
        assert!(Config::new(cluster, &flags(24)).is_ok());
        assert!(Config::new(cluster, &flags(32)).is_ok());
        assert!(Config::new(cluster, &flags(15)).is_err());
        assert!(Config::new(cluster, &flags(33)).is_err());
        let wide = Cidr::parse("c", "10.0.0.0/8").unwrap();
        assert!(Config::new(wide, &flags(25)).is_err());
    }

    #[test]
    fn events_are_recorded_once_and_then_counted() {
        let store = Store::new();
        let pod = store
            .create(
                "pods",
                "default",
                json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"}}),
            )
            .unwrap();
        let report = Report {
            component: "default-scheduler",
            kind: "Pod",
            object: &pod,
            event_type: EventKind::Warning,
            reason: "FailedScheduling",
            message: "0/0 nodes are available",
        };
        record(&store, &report);
        record(&store, &report);
        let (events, _) = store.list("events", Some("default"), |_| true);
        assert_eq!(events.len(), 1);
        let event = &events[0];
        assert!(name_of(event).starts_with("web."));
        assert_eq!(event["count"], 2);
        assert_eq!(event["type"], "Warning");
        assert_eq!(event["source"]["component"], "default-scheduler");
        assert_eq!(event["involvedObject"]["uid"], pod["metadata"]["uid"]);
        assert_eq!(event["involvedObject"]["namespace"], "default");

        // A node's Event lives in "default", without a resourceVersion.
        let node = store
            .create("nodes", "", json!({"metadata": {"name": "n1"}}))
            .unwrap();
        record(
            &store,
            &Report {
                component: "cidrAllocator",
                kind: "Node",
                object: &node,
                event_type: EventKind::Normal,
                reason: "CIDRNotAvailable",
                message: "Node n1 status is now: CIDRNotAvailable",
            },
        );
        let (events, _) = store.list("events", Some("default"), |e| {
            e["reason"] == "CIDRNotAvailable"
        });
        assert_eq!(events.len(), 1);
        assert!(events[0]["involvedObject"].get("namespace").is_none());
        assert!(events[0]["involvedObject"].get("resourceVersion").is_none());
    }

    #[test]
    fn updates_retry_from_a_fresh_read_and_skip_when_unchanged() {
        let store = Store::new();
        store
            .create("nodes", "", json!({"metadata": {"name": "n1"}, "spec": {}}))
            .unwrap();
        let mut calls = 0;
        let written = update(&store, "nodes", "", "n1", |node| {
            calls += 1;
            if calls == 1 {
                // Someone else writes between our read and our write.
                let mut other = store.get("nodes", "", "n1").unwrap();
                other["metadata"]["labels"] = json!({"x": "y"});
                store.update("nodes", "", other).unwrap();
            }
            node["spec"]["podCIDR"] = json!("10.42.0.0/24");
            true
        })
        .unwrap()
        .unwrap();
        assert_eq!(calls, 2);
        assert_eq!(written["metadata"]["labels"]["x"], "y");
        assert_eq!(written["spec"]["podCIDR"], "10.42.0.0/24");
        assert!(
            update(&store, "nodes", "", "n1", |_| false)
                .unwrap()
                .is_none()
        );
        assert!(
            update(&store, "nodes", "", "gone", |_| true)
                .unwrap()
                .is_none()
        );
    }
}
