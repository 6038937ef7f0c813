//! The default scheduler (kube-scheduler v1.21's default profile, the parts a
//! small cluster meets). A pod is pending when it has no `spec.nodeName`, its
//! `spec.schedulerName` is absent or `default-scheduler`, it is not being
//! deleted and not finished. Pending pods are taken by priority, then age.
//!
//! Filters, in the default plugin order, each node stopping at the first that
//! fails (the failure messages are v1.21's):
//! 1. NodeUnschedulable: `spec.unschedulable` unless the pod tolerates
//!    `node.kubernetes.io/unschedulable:NoSchedule` — "node(s) were unschedulable";
//! 2. TaintToleration: every NoSchedule/NoExecute taint tolerated — "node(s)
//!    had taint {key: value}, that the pod didn't tolerate". A node whose Ready
//!    condition is not True counts as tainted `node.kubernetes.io/not-ready`
//!    (`…/unreachable` when Unknown) even before the lifecycle controller has
//!    written the taint, as the API server's admission taints new nodes;
//! 3. NodeAffinity: `spec.nodeSelector` and required node affinity
//!    (`matchExpressions` on labels, `matchFields` on `metadata.name`) —
//!    "node(s) didn't match Pod's node affinity";
//! 4. NodeResourcesFit: pod count against `allocatable.pods` ("Too many
//!    pods"), then each requested resource against allocatable minus what
//!    the node's unfinished pods request ("Insufficient cpu", …). Requests are
//!    the containers' sum or the largest init container's, whichever is more;
//!    a limit without a request counts as the request (API defaulting).
//!
//! Of the nodes that pass, the least allocated wins (upstream's
//! NodeResourcesLeastAllocated over cpu and memory, counting 100m and 200Mi
//! for containers that request nothing); ties go to the first name, where
//! upstream picks at random. Binding sets `spec.nodeName` and a True
//! `PodScheduled` condition (as the `binding` subresource does) with a
//! `Scheduled` Event. A pod that fits nowhere gets `PodScheduled` False, reason
//! `Unschedulable`, message "0/N nodes are available: <count> <reason>, …."
//! and a `FailedScheduling` Event; it is retried after a back-off (1 s doubling
//! to 10 s) once a node's scheduling-relevant fields change, a pod on a node
//! goes away, or its own spec changes, and at the latest after 60 s.
//!
//! Left out: preemption, inter-pod (anti-)affinity, topology spread, host
//! ports, volumes, preferred affinities and the other scores.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{
    Controller, EventKind, Report, Taint, condition, log, name_of, namespace_of, object_field,
    record, str_at, taints_of, uid_of, update,
};
use crate::store::{self, Event, Store};

/// The scheduler's name in pods and its Event source.
const COMPONENT: &str = "default-scheduler";
/// The first retry delay of an unschedulable pod.
const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
/// The longest.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// How long an unschedulable pod waits for a change before it is retried anyway.
const UNSCHEDULABLE_FLUSH: Duration = Duration::from_secs(60);
/// What a container without a cpu request counts as when scoring (millicores).
const DEFAULT_MILLI_CPU: i64 = 100;
/// The same for memory (bytes).
const DEFAULT_MEMORY: i64 = 200 * 1024 * 1024;
const NOT_READY: &str = "node.kubernetes.io/not-ready";
const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
const UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";

/// A Kubernetes resource quantity (`100m`, `1.5`, `64Mi`, `1G`, `1e3`), kept
/// exactly: `digits` × 10^`exp10` × 2^`exp2`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quantity {
    negative: bool,
    digits: u128,
    exp10: i32,
    exp2: u32,
}

impl Quantity {
    /// Parses the API's quantity syntax: a signed decimal number, then a
    /// binary suffix (`Ki` … `Ei`), a decimal one (`n`, `u`, `m`, `k`, `M`,
    /// `G`, `T`, `P`, `E`) or an exponent (`e3`, `E-2`).
    pub fn parse(text: &str) -> Option<Self> {
        let (negative, body) = match text.as_bytes().first() {
            Some(b'-') => (true, &text[1..]),
            Some(b'+') => (false, &text[1..]),
            _ => (false, text),
        };
        let number_len = body
            .bytes()
            .take_while(|b| b.is_ascii_digit() || *b == b'.')
            .count();
        let (number, suffix) = body.split_at(number_len);
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if (whole.is_empty() && fraction.is_empty()) || fraction.contains('.') {
            return None;
        }
        let mut digits: u128 = 0;
        for b in whole.bytes().chain(fraction.bytes()) {
            digits = digits.checked_mul(10)?.checked_add(u128::from(b - b'0'))?;
        }
        let mut exp10 = -i32::try_from(fraction.len()).ok()?;
        let mut exp2 = 0;
        match suffix {
            "" => {}
            "Ki" => exp2 = 10,
            "Mi" => exp2 = 20,
            "Gi" => exp2 = 30,
            "Ti" => exp2 = 40,
            "Pi" => exp2 = 50,
            "Ei" => exp2 = 60,
            "n" => exp10 -= 9,
            "u" => exp10 -= 6,
            "m" => exp10 -= 3,
            "k" => exp10 += 3,
            "M" => exp10 += 6,
            "G" => exp10 += 9,
            "T" => exp10 += 12,
            "P" => exp10 += 15,
            "E" => exp10 += 18,
            exponent => {
                let power = exponent
                    .strip_prefix('e')
                    .or_else(|| exponent.strip_prefix('E'))?;
                let unsigned = power.strip_prefix(['+', '-']).unwrap_or(power);
                if unsigned.is_empty() || !unsigned.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                let power: i32 = power.parse().ok()?;
                // Beyond any int64 either way; keeps the arithmetic bounded.
                if power.abs() > 1000 {
                    return None;
                }
                exp10 += power;
            }
        }
        Some(Self {
            negative,
            digits,
            exp10,
            exp2,
        })
    }

    /// The value × 10^`scale`, rounded up (away from zero) and saturated to
    /// int64, as Go's `ScaledValue`: `scaled(3)` is millis, `scaled(0)` units.
    pub fn scaled(&self, scale: i32) -> i64 {
        let magnitude = self.magnitude(scale);
        let clamped = i64::try_from(magnitude).unwrap_or(i64::MAX);
        if self.negative { -clamped } else { clamped }
    }

    fn magnitude(&self, scale: i32) -> u128 {
        if self.digits == 0 {
            return 0;
        }
        let exp = self.exp10 + scale;
        let pow10 = |n: i32| u32::try_from(n).ok().and_then(|n| 10u128.checked_pow(n));
        let pow2 = 1u128.checked_shl(self.exp2).unwrap_or(u128::MAX);
        if exp >= 0 {
            return pow10(exp)
                .and_then(|p| self.digits.checked_mul(p))
                .and_then(|v| v.checked_mul(pow2))
                .unwrap_or(u128::MAX);
        }
        let Some(divisor) = pow10(-exp) else {
            // Smaller than any unit: rounds up to one.
            return 1;
        };
        let ceil_div = |n: u128| n / divisor + u128::from(n % divisor != 0);
        match self.digits.checked_mul(pow2) {
            Some(n) => ceil_div(n),
            // Huge mantissa: divide first (a slight overestimate, then).
            None => ceil_div(self.digits).saturating_mul(pow2),
        }
    }

    /// Millicores for cpu, whole units for everything else.
    fn amount(&self, resource: &str) -> i64 {
        if resource == "cpu" {
            self.scaled(3)
        } else {
            self.scaled(0)
        }
    }
}

/// A quantity in JSON: a string, or a bare number (Go accepts both).
fn quantity_of(value: &Value) -> Option<Quantity> {
    match value {
        Value::String(text) => Quantity::parse(text),
        Value::Number(number) => Quantity::parse(&number.to_string()),
        _ => None,
    }
}

/// Amounts by resource name (cpu in millicores, the rest in units).
type Resources = BTreeMap<String, i64>;

/// One container's requests: `resources.requests`, falling back to
/// `resources.limits` per resource, as API defaulting fills them.
/// Unparseable amounts count as zero (the API server would have refused them).
fn container_requests(container: &Value) -> Resources {
    let mut out = Resources::new();
    for field in ["limits", "requests"] {
        let Some(map) = container
            .pointer(&format!("/resources/{field}"))
            .and_then(Value::as_object)
        else {
            continue;
        };
        for (resource, amount) in map {
            if let Some(q) = quantity_of(amount) {
                // Requests, read second, win over limits.
                out.insert(resource.clone(), q.amount(resource));
            }
        }
    }
    out
}

/// The containers of `list` (`containers`, `initContainers`).
fn containers<'a>(pod: &'a Value, list: &str) -> impl Iterator<Item = &'a Value> {
    pod.pointer(&format!("/spec/{list}"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

/// A pod's requests: the containers' sum, raised to any init container's
/// (init containers run one at a time, before the others).
fn pod_requests(pod: &Value) -> Resources {
    let mut total = Resources::new();
    for container in containers(pod, "containers") {
        for (resource, amount) in container_requests(container) {
            let slot = total.entry(resource).or_insert(0);
            *slot = slot.saturating_add(amount);
        }
    }
    for container in containers(pod, "initContainers") {
        for (resource, amount) in container_requests(container) {
            let slot = total.entry(resource).or_insert(0);
            *slot = (*slot).max(amount);
        }
    }
    total
}

/// A pod's cpu and memory for scoring: as requested, but 100m and 200Mi for
/// containers that request none (so empty pods still spread).
fn scoring_requests(pod: &Value) -> (i64, i64) {
    let of = |container: &Value| {
        let requests = container_requests(container);
        (
            requests.get("cpu").copied().unwrap_or(DEFAULT_MILLI_CPU),
            requests.get("memory").copied().unwrap_or(DEFAULT_MEMORY),
        )
    };
    let (mut cpu, mut memory) = (0i64, 0i64);
    for container in containers(pod, "containers") {
        let (c, m) = of(container);
        cpu = cpu.saturating_add(c);
        memory = memory.saturating_add(m);
    }
    for container in containers(pod, "initContainers") {
        let (c, m) = of(container);
        cpu = cpu.max(c);
        memory = memory.max(m);
    }
    (cpu, memory)
}

/// One toleration of a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Toleration {
    key: String,
    operator: String,
    value: String,
    effect: String,
}

impl Toleration {
    /// A toleration from its JSON (missing fields are empty).
    fn from_json(value: &Value) -> Self {
        Self {
            key: str_at(value, "/key").to_owned(),
            operator: str_at(value, "/operator").to_owned(),
            value: str_at(value, "/value").to_owned(),
            effect: str_at(value, "/effect").to_owned(),
        }
    }

    /// Whether it tolerates `taint`: an empty effect matches every effect, an
    /// empty key every key (meant with `Exists`), `Exists` any value, `Equal`
    /// (or no operator) only the same value.
    fn tolerates(&self, taint: &Taint) -> bool {
        if !self.effect.is_empty() && self.effect != taint.effect {
            return false;
        }
        if !self.key.is_empty() && self.key != taint.key {
            return false;
        }
        match self.operator.as_str() {
            "" | "Equal" => self.value == taint.value,
            "Exists" => true,
            _ => false,
        }
    }
}

/// A pod's tolerations.
fn tolerations_of(pod: &Value) -> Vec<Toleration> {
    pod.pointer("/spec/tolerations")
        .and_then(Value::as_array)
        .map(|list| list.iter().map(Toleration::from_json).collect())
        .unwrap_or_default()
}

/// A node as the filters and score see it.
#[derive(Debug)]
struct NodeInfo<'a> {
    node: &'a Value,
    name: &'a str,
    /// Its taints, and the readiness taint its conditions imply.
    taints: Vec<Taint>,
    allocatable: Resources,
    /// What its unfinished pods request.
    requested: Resources,
    /// The same, for scoring.
    scoring: (i64, i64),
    pods: i64,
}

impl<'a> NodeInfo<'a> {
    fn new(node: &'a Value) -> Self {
        let mut taints = taints_of(node);
        let implied = match condition(node, "Ready").map(|c| str_at(c, "/status")) {
            Some("True") => None,
            Some("Unknown") => Some(UNREACHABLE),
            _ => Some(NOT_READY),
        };
        if let Some(key) = implied {
            if !taints
                .iter()
                .any(|t| t.key == key && t.effect == "NoSchedule")
            {
                taints.push(Taint::new(key, "NoSchedule"));
            }
        }
        let allocatable = node
            .pointer("/status/allocatable")
            .and_then(Value::as_object)
            .map(|map| {
                map.iter()
                    .filter_map(|(r, v)| quantity_of(v).map(|q| (r.clone(), q.amount(r))))
                    .collect()
            })
            .unwrap_or_default();
        Self {
            node,
            name: name_of(node),
            taints,
            allocatable,
            requested: Resources::new(),
            scoring: (0, 0),
            pods: 0,
        }
    }

    /// Counts a pod as running here.
    fn add(&mut self, pod: &Value) {
        for (resource, amount) in pod_requests(pod) {
            let slot = self.requested.entry(resource).or_insert(0);
            *slot = slot.saturating_add(amount);
        }
        let (cpu, memory) = scoring_requests(pod);
        self.scoring = (
            self.scoring.0.saturating_add(cpu),
            self.scoring.1.saturating_add(memory),
        );
        self.pods += 1;
    }

    fn allocatable(&self, resource: &str) -> i64 {
        self.allocatable.get(resource).copied().unwrap_or(0)
    }
}

/// Whether one node selector requirement holds for `value` (the label's or
/// field's value, `None` if absent).
fn requirement_holds(requirement: &Value, value: Option<&str>) -> bool {
    let values: Vec<&str> = requirement
        .get("values")
        .and_then(Value::as_array)
        .map(|list| list.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let number = |text: &str| text.parse::<i64>().ok();
    match str_at(requirement, "/operator") {
        "In" => value.is_some_and(|v| values.contains(&v)),
        "NotIn" => !value.is_some_and(|v| values.contains(&v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        op @ ("Gt" | "Lt") => {
            let (Some(have), [bound]) = (value.and_then(number), values.as_slice()) else {
                return false;
            };
            let Some(bound) = number(bound) else {
                return false;
            };
            if op == "Gt" {
                have > bound
            } else {
                have < bound
            }
        }
        _ => false,
    }
}

/// Whether `node` satisfies the pod's `nodeSelector` and required node affinity.
fn matches_affinity(pod: &Value, node: &Value) -> bool {
    let labels = node.pointer("/metadata/labels").and_then(Value::as_object);
    let label = |key: &str| labels.and_then(|l| l.get(key)).and_then(Value::as_str);
    if let Some(selector) = pod.pointer("/spec/nodeSelector").and_then(Value::as_object) {
        if !selector
            .iter()
            .all(|(key, want)| want.as_str().is_some_and(|w| label(key) == Some(w)))
        {
            return false;
        }
    }
    let Some(required) =
        pod.pointer("/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution")
    else {
        return true;
    };
    if required.is_null() {
        return true;
    }
    let terms = required
        .get("nodeSelectorTerms")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    // Terms are ORed; a term's requirements ANDed; an empty term matches nothing.
    terms.iter().any(|term| {
        let list = |field: &str| {
            term.get(field)
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or_default()
        };
        let (expressions, fields) = (list("matchExpressions"), list("matchFields"));
        (!expressions.is_empty() || !fields.is_empty())
            && expressions
                .iter()
                .all(|r| requirement_holds(r, label(str_at(r, "/key"))))
            && fields.iter().all(|r| {
                str_at(r, "/key") == "metadata.name" && requirement_holds(r, Some(name_of(node)))
            })
    })
}

/// Why `node` cannot take `pod`, if it cannot: the first failing filter's reasons.
fn filter(
    pod: &Value,
    requests: &Resources,
    tolerations: &[Toleration],
    node: &NodeInfo<'_>,
) -> Vec<String> {
    let tolerated = |taint: &Taint| tolerations.iter().any(|t| t.tolerates(taint));
    if node
        .node
        .pointer("/spec/unschedulable")
        .and_then(Value::as_bool)
        == Some(true)
        && !tolerated(&Taint::new(UNSCHEDULABLE, "NoSchedule"))
    {
        return vec!["node(s) were unschedulable".to_owned()];
    }
    if let Some(taint) = node
        .taints
        .iter()
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        .find(|t| !tolerated(t))
    {
        return vec![format!(
            "node(s) had taint {{{}: {}}}, that the pod didn't tolerate",
            taint.key, taint.value
        )];
    }
    if !matches_affinity(pod, node.node) {
        return vec!["node(s) didn't match Pod's node affinity".to_owned()];
    }
    let mut reasons = Vec::new();
    if node.pods + 1 > node.allocatable("pods") {
        reasons.push("Too many pods".to_owned());
    }
    // cpu, memory, ephemeral-storage first, as upstream, then the rest by name.
    let order = ["cpu", "memory", "ephemeral-storage"];
    let mut names: Vec<&str> = requests
        .keys()
        .map(String::as_str)
        .filter(|r| *r != "pods")
        .collect();
    names.sort_by_key(|r| (order.iter().position(|o| o == r).unwrap_or(order.len()), *r));
    for resource in names {
        let want = requests.get(resource).copied().unwrap_or(0);
        let used = node.requested.get(resource).copied().unwrap_or(0);
        if want > 0 && want > node.allocatable(resource).saturating_sub(used) {
            reasons.push(format!("Insufficient {resource}"));
        }
    }
    reasons
}

/// Upstream's least-requested score of one resource, 0..=100.
fn least_requested(requested: i64, capacity: i64) -> i64 {
    if capacity <= 0 || requested > capacity {
        return 0;
    }
    let free = i128::from(capacity - requested) * 100 / i128::from(capacity);
    i64::try_from(free).unwrap_or(0)
}

/// The node for `pod`, or the unschedulable message.
fn choose(pod: &Value, nodes: &[NodeInfo<'_>]) -> Result<usize, String> {
    if nodes.is_empty() {
        return Err("no nodes available to schedule pods".to_owned());
    }
    let requests = pod_requests(pod);
    let tolerations = tolerations_of(pod);
    let (cpu, memory) = scoring_requests(pod);
    let mut reasons: HashMap<String, usize> = HashMap::new();
    let mut best: Option<(i64, usize)> = None;
    for (index, node) in nodes.iter().enumerate() {
        let failed = filter(pod, &requests, &tolerations, node);
        if !failed.is_empty() {
            for reason in failed {
                *reasons.entry(reason).or_insert(0) += 1;
            }
            continue;
        }
        let score = (least_requested(node.scoring.0.saturating_add(cpu), node.allocatable("cpu"))
            + least_requested(
                node.scoring.1.saturating_add(memory),
                node.allocatable("memory"),
            ))
            / 2;
        // Strictly better only: the first (by name) of equals stays.
        if best.is_none_or(|(top, _)| score > top) {
            best = Some((score, index));
        }
    }
    if let Some((_, index)) = best {
        return Ok(index);
    }
    // "<count> <reason>" sorted as strings, as upstream's FitError.
    let mut histogram: Vec<String> = reasons
        .into_iter()
        .map(|(reason, count)| format!("{count} {reason}"))
        .collect();
    histogram.sort();
    Err(format!(
        "0/{} nodes are available: {}.",
        nodes.len(),
        histogram.join(", ")
    ))
}

/// Whether the scheduler should take this pod.
fn is_pending(pod: &Value) -> bool {
    str_at(pod, "/spec/nodeName").is_empty()
        && matches!(str_at(pod, "/spec/schedulerName"), "" | COMPONENT)
        && pod
            .pointer("/metadata/deletionTimestamp")
            .is_none_or(Value::is_null)
        && !is_finished(pod)
        && !name_of(pod).is_empty()
}

/// Succeeded or Failed: its resources are free.
fn is_finished(pod: &Value) -> bool {
    matches!(str_at(pod, "/status/phase"), "Succeeded" | "Failed")
}

/// Sets a pod condition as upstream's `UpdatePodCondition`: the transition
/// time stays when the status does; whether anything changed.
fn set_condition(pod: &mut Value, mut wanted: Value) -> bool {
    let Some(status) = object_field(pod, "status") else {
        return false;
    };
    let conditions = status.entry("conditions").or_insert_with(|| json!([]));
    if !conditions.is_array() {
        *conditions = json!([]);
    }
    let Some(list) = conditions.as_array_mut() else {
        return false;
    };
    let kind = wanted.get("type").cloned();
    let Some(existing) = list.iter_mut().find(|c| c.get("type") == kind.as_ref()) else {
        list.push(wanted);
        return true;
    };
    let field = |c: &Value, f: &str| str_at(c, &format!("/{f}")).to_owned();
    if field(existing, "status") == field(&wanted, "status") {
        if let Some(time) = existing.get("lastTransitionTime").cloned() {
            wanted["lastTransitionTime"] = time;
        }
    }
    let same = ["status", "reason", "message", "lastTransitionTime"]
        .iter()
        .all(|f| field(existing, f) == field(&wanted, f));
    if same {
        return false;
    }
    *existing = wanted;
    true
}

/// A pod that did not fit, waiting for its retry.
#[derive(Debug)]
struct Parked {
    failures: u32,
    /// Not before.
    retry_at: Instant,
    /// When it last failed.
    since: Instant,
    /// The cluster's state then.
    world: u64,
    /// Its spec then.
    spec: Value,
    /// Why it did not fit.
    message: String,
}

/// The scheduler.
#[derive(Debug, Default)]
pub struct Scheduler {
    parked: HashMap<String, Parked>,
    /// Each node's scheduling-relevant fields at the last pass.
    nodes: BTreeMap<String, Value>,
    /// Uids of the pods that held resources at the last pass.
    assigned: HashSet<String>,
    /// Raised whenever a node changes in a way that matters or resources are
    /// freed: parked pods are worth another try.
    world: u64,
}

/// What a node change must touch to be worth retrying pods over.
fn signature(node: &Value) -> Value {
    let conditions: Vec<Value> = node
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .map(|c| json!([c.get("type"), c.get("status")]))
                .collect()
        })
        .unwrap_or_default();
    json!({
        "uid": node.pointer("/metadata/uid"),
        "labels": node.pointer("/metadata/labels"),
        "taints": node.pointer("/spec/taints"),
        "unschedulable": node.pointer("/spec/unschedulable"),
        "allocatable": node.pointer("/status/allocatable"),
        "conditions": conditions,
    })
}

impl Scheduler {
    /// A scheduler with nothing seen yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Notes changes that can make a parked pod fit.
    fn observe(&mut self, nodes: &[Value], pods: &[Value]) {
        let signatures: BTreeMap<String, Value> = nodes
            .iter()
            .map(|n| (name_of(n).to_owned(), signature(n)))
            .collect();
        if signatures != self.nodes {
            self.world += 1;
            self.nodes = signatures;
        }
        let assigned: HashSet<String> = pods
            .iter()
            .filter(|p| !str_at(p, "/spec/nodeName").is_empty() && !is_finished(p))
            .map(|p| uid_of(p).to_owned())
            .collect();
        if self.assigned.iter().any(|uid| !assigned.contains(uid)) {
            self.world += 1;
        }
        self.assigned = assigned;
    }

    /// One pass at `now`.
    fn pass_at(&mut self, store: &Store, now: Instant) {
        let (mut nodes, _) = store.list("nodes", None, |n| {
            !name_of(n).is_empty()
                && n.pointer("/metadata/deletionTimestamp")
                    .is_none_or(Value::is_null)
        });
        nodes.sort_by(|a, b| name_of(a).cmp(name_of(b)));
        let (pods, _) = store.list("pods", None, |_| true);
        self.observe(&nodes, &pods);
        let mut infos: Vec<NodeInfo<'_>> = nodes.iter().map(NodeInfo::new).collect();
        let index: HashMap<String, usize> = infos
            .iter()
            .enumerate()
            .map(|(i, n)| (n.name.to_owned(), i))
            .collect();
        for pod in &pods {
            let node = str_at(pod, "/spec/nodeName");
            if node.is_empty() || is_finished(pod) {
                continue;
            }
            if let Some(&i) = index.get(node) {
                infos[i].add(pod);
            }
        }
        let mut pending: Vec<&Value> = pods.iter().filter(|p| is_pending(p)).collect();
        pending.sort_by_key(|p| {
            (
                std::cmp::Reverse(
                    p.pointer("/spec/priority")
                        .and_then(Value::as_i64)
                        .unwrap_or(0),
                ),
                store::parse_rfc3339(str_at(p, "/metadata/creationTimestamp")).unwrap_or(0),
                namespace_of(p).to_owned(),
                name_of(p).to_owned(),
            )
        });
        self.parked
            .retain(|uid, _| pending.iter().any(|p| uid_of(p) == uid));
        for pod in pending {
            let spec = pod.get("spec").cloned().unwrap_or(Value::Null);
            if let Some(parked) = self.parked.get(uid_of(pod)) {
                let changed = parked.world != self.world || parked.spec != spec;
                let due = now >= parked.retry_at
                    && (changed
                        || now.saturating_duration_since(parked.since) >= UNSCHEDULABLE_FLUSH);
                if !due {
                    continue;
                }
            }
            match choose(pod, &infos) {
                Ok(i) => {
                    if bind(store, pod, infos[i].name) {
                        infos[i].add(pod);
                        self.assigned.insert(uid_of(pod).to_owned());
                    }
                    self.parked.remove(uid_of(pod));
                }
                Err(message) => self.park(store, pod, spec, message, now),
            }
        }
    }

    /// Records a pod that fits nowhere and schedules its retry.
    fn park(&mut self, store: &Store, pod: &Value, spec: Value, message: String, now: Instant) {
        let uid = uid_of(pod).to_owned();
        let failures = self.parked.get(&uid).map_or(0, |p| p.failures) + 1;
        let backoff = INITIAL_BACKOFF
            .saturating_mul(1 << (failures - 1).min(8))
            .min(MAX_BACKOFF);
        let repeated = self.parked.get(&uid).is_some_and(|p| p.message == message);
        let (namespace, name) = (namespace_of(pod), name_of(pod));
        if !repeated {
            log(
                COMPONENT,
                format_args!("pod {namespace}/{name} is unschedulable: {message}"),
            );
        }
        let stamp = store::rfc3339(store::now());
        let mut present = false;
        let written = update(store, "pods", namespace, name, |current| {
            present = uid_of(current) == uid && is_pending(current);
            present
                && set_condition(
                    current,
                    json!({"type": "PodScheduled", "status": "False", "lastProbeTime": null,
                           "lastTransitionTime": stamp, "reason": "Unschedulable", "message": message}),
                )
        });
        match written {
            Err(e) => log(
                COMPONENT,
                format_args!("cannot update pod {namespace}/{name}: {e}"),
            ),
            Ok(written) if present => record(
                store,
                &Report {
                    component: COMPONENT,
                    kind: "Pod",
                    object: written.as_ref().unwrap_or(pod),
                    event_type: EventKind::Warning,
                    reason: "FailedScheduling",
                    message: &message,
                },
            ),
            Ok(_) => {}
        }
        self.parked.insert(
            uid,
            Parked {
                failures,
                retry_at: now + backoff,
                since: now,
                world: self.world,
                spec,
                message,
            },
        );
    }
}

/// Binds `pod` to `node` as the `binding` subresource does; whether it did.
fn bind(store: &Store, pod: &Value, node: &str) -> bool {
    let uid = uid_of(pod).to_owned();
    let (namespace, name) = (namespace_of(pod), name_of(pod));
    let stamp = store::rfc3339(store::now());
    let written = update(store, "pods", namespace, name, |current| {
        // Recreated, bound or deleted meanwhile: not ours to bind.
        if uid_of(current) != uid || !is_pending(current) {
            return false;
        }
        let Some(spec) = object_field(current, "spec") else {
            return false;
        };
        spec.insert("nodeName".into(), json!(node));
        set_condition(
            current,
            json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null,
                   "lastTransitionTime": stamp}),
        );
        true
    });
    match written {
        Ok(Some(written)) => {
            let message = format!("Successfully assigned {namespace}/{name} to {node}");
            log(COMPONENT, format_args!("{message}"));
            record(
                store,
                &Report {
                    component: COMPONENT,
                    kind: "Pod",
                    object: &written,
                    event_type: EventKind::Normal,
                    reason: "Scheduled",
                    message: &message,
                },
            );
            true
        }
        Ok(None) => false,
        Err(e) => {
            log(
                COMPONENT,
                format_args!("cannot bind pod {namespace}/{name} to {node}: {e}"),
            );
            false
        }
    }
}

impl Controller for Scheduler {
    const NAME: &'static str = COMPONENT;

    fn wants(&self, event: &Event) -> bool {
        event.resource == "nodes" || event.resource == "pods"
    }

    fn period(&self) -> Duration {
        // Parked pods' back-offs end between changes.
        INITIAL_BACKOFF
    }

    fn pass(&mut self, store: &Store) {
        self.pass_at(store, Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_parse_as_kubernetes_parses_them() {
        let milli = |s: &str| Quantity::parse(s).unwrap().scaled(3);
        let value = |s: &str| Quantity::parse(s).unwrap().scaled(0);
        assert_eq!(milli("100m"), 100);
        assert_eq!(milli("1.5"), 1500);
        assert_eq!(milli("2"), 2000);
        assert_eq!(milli("0.0001"), 1, "rounded up");
        assert_eq!(milli("250000u"), 250);
        assert_eq!(value("64Mi"), 64 << 20);
        assert_eq!(value("1.5Gi"), 3 << 29);
        assert_eq!(value("1G"), 1_000_000_000);
        assert_eq!(value("1e3"), 1000);
        assert_eq!(value("1E3"), 1000);
        assert_eq!(value("12e-1"), 2, "rounded up");
        assert_eq!(
            value("1E"),
            1_000_000_000_000_000_000,
            "exa, not an exponent"
        );
        assert_eq!(value("3884376Ki"), 3_977_601_024);
        assert_eq!(value("257025515114"), 257_025_515_114);
        assert_eq!(value(".5"), 1);
        assert_eq!(value("5."), 5);
        assert_eq!(value("+7"), 7);
        assert_eq!(value("-7"), -7);
        assert_eq!(value("0"), 0);
        assert_eq!(value("8Ei"), i64::MAX, "saturated");
        assert_eq!(value("1e999"), i64::MAX);
        assert_eq!(value("1e-999"), 1);
        assert_eq!(value("123456789012345678901234567890123456e-30"), 123_457);
        for bad in [
            "", "m", ".", "1..2", "1.2.3", "1Mb", "1e", "1e+", "e3", "1 ", " 1", "1KiB", "--1",
            "1e1001",
        ] {
            assert_eq!(Quantity::parse(bad), None, "{bad:?}");
        }
        assert_eq!(quantity_of(&json!(2)).unwrap().scaled(3), 2000);
        assert_eq!(quantity_of(&json!(0.5)).unwrap().scaled(3), 500);
        assert_eq!(quantity_of(&json!(null)), None);
    }

    fn toleration(value: Value) -> Toleration {
        Toleration::from_json(&value)
    }

    #[test]
    fn tolerations_match_as_the_api_defines() {
        let taint = Taint {
            key: "dedicated".into(),
            value: "edge".into(),
            effect: "NoSchedule".into(),
        };
        let yes = |t: Value| assert!(toleration(t.clone()).tolerates(&taint), "{t}");
        let no = |t: Value| assert!(!toleration(t.clone()).tolerates(&taint), "{t}");
        yes(
            json!({"key": "dedicated", "operator": "Equal", "value": "edge", "effect": "NoSchedule"}),
        );
        yes(json!({"key": "dedicated", "value": "edge"}));
        yes(json!({"key": "dedicated", "operator": "Exists"}));
        yes(json!({"operator": "Exists"}));
        yes(json!({"operator": "Exists", "effect": "NoSchedule"}));
        no(json!({"operator": "Exists", "effect": "NoExecute"}));
        no(json!({"key": "dedicated", "value": "cloud"}));
        no(json!({"key": "dedicated"}));
        no(json!({"key": "other", "operator": "Exists"}));
        no(json!({"key": "dedicated", "operator": "Bogus"}));
        no(json!({"key": "dedicated", "operator": "Exists", "effect": "PreferNoSchedule"}));
        no(json!("garbage"));
    }

    fn node(
        name: &str,
        labels: Value,
        taints: Value,
        ready: &str,
        cpu: &str,
        memory: &str,
    ) -> Value {
        json!({"metadata": {"name": name, "uid": format!("uid-{name}"), "labels": labels},
               "spec": {"taints": taints},
               "status": {"allocatable": {"cpu": cpu, "memory": memory, "pods": "110"},
                          "conditions": [{"type": "Ready", "status": ready}]}})
    }

    fn pod(name: &str, spec: Value) -> Value {
        let mut spec = spec;
        if spec.get("containers").is_none() {
            spec["containers"] = json!([{"name": "c", "image": "busybox"}]);
        }
        json!({"metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")}, "spec": spec})
    }

    fn requesting(name: &str, cpu: &str, memory: &str) -> Value {
        pod(
            name,
            json!({"containers": [{"name": "c", "resources": {"requests": {"cpu": cpu, "memory": memory}}}]}),
        )
    }

    #[test]
    fn requests_sum_containers_and_raise_to_init_containers() {
        let p = pod(
            "p",
            json!({
                "containers": [
                    {"resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}},
                    {"resources": {"limits": {"cpu": "200m", "example.com/gpu": "1"}}},
                    {"resources": {"requests": {"cpu": "bad"}}}
                ],
                "initContainers": [{"resources": {"requests": {"cpu": "1", "memory": "1Mi"}}}]
            }),
        );
        let requests = pod_requests(&p);
        assert_eq!(requests.get("cpu"), Some(&1000));
        assert_eq!(requests.get("memory"), Some(&(64 << 20)));
        assert_eq!(requests.get("example.com/gpu"), Some(&1));
        // Scoring counts defaults for what is not requested.
        assert_eq!(
            scoring_requests(&p),
            (1000, (64 << 20) + 2 * DEFAULT_MEMORY)
        );
        assert_eq!(
            scoring_requests(&pod("e", json!({}))),
            (DEFAULT_MILLI_CPU, DEFAULT_MEMORY)
        );
    }

    #[test]
    fn filters_report_the_first_failure_per_node() {
        let nodes = [
            node("a-cordoned", json!({}), json!([]), "True", "4", "4Gi"),
            node(
                "b-tainted",
                json!({}),
                json!([{"key": "dedicated", "value": "x", "effect": "NoSchedule"}]),
                "True",
                "4",
                "4Gi",
            ),
            node(
                "c-other",
                json!({"board": "other"}),
                json!([]),
                "True",
                "4",
                "4Gi",
            ),
            node(
                "d-small",
                json!({"board": "rpi4"}),
                json!([]),
                "True",
                "100m",
                "64Mi",
            ),
            node(
                "e-down",
                json!({"board": "rpi4"}),
                json!([]),
                "Unknown",
                "4",
                "4Gi",
            ),
            node(
                "f-prefer",
                json!({"board": "rpi4"}),
                json!([{"key": "soft", "effect": "PreferNoSchedule"}]),
                "False",
                "4",
                "4Gi",
            ),
        ];
        let mut nodes = nodes.to_vec();
        nodes[0]["spec"]["unschedulable"] = json!(true);
        let infos: Vec<NodeInfo<'_>> = nodes.iter().map(NodeInfo::new).collect();
        let big = requesting("big", "500m", "128Mi");
        let mut selective = big.clone();
        selective["spec"]["nodeSelector"] = json!({"board": "rpi4"});
        let message = choose(&selective, &infos).unwrap_err();
        assert_eq!(
            message,
            "0/6 nodes are available: 1 Insufficient cpu, 1 Insufficient memory, 1 node(s) didn't match Pod's node affinity, 1 node(s) had taint {dedicated: x}, that the pod didn't tolerate, 1 node(s) had taint {node.kubernetes.io/not-ready: }, that the pod didn't tolerate, 1 node(s) had taint {node.kubernetes.io/unreachable: }, that the pod didn't tolerate, 1 node(s) were unschedulable."
        );
        assert_eq!(
            choose(&big, &[]).unwrap_err(),
            "no nodes available to schedule pods"
        );

        // Tolerating everything opens every node that fits.
        let mut tolerant = selective.clone();
        tolerant["spec"]["tolerations"] = json!([{"operator": "Exists"}]);
        assert_eq!(infos[choose(&tolerant, &infos).unwrap()].name, "e-down");
        tolerant["spec"]["nodeSelector"] = json!({});
        assert_eq!(infos[choose(&tolerant, &infos).unwrap()].name, "a-cordoned");
    }

    #[test]
    fn node_affinity_terms() {
        let n = node(
            "n1",
            json!({"board": "rpi4", "cores": "4"}),
            json!([]),
            "True",
            "4",
            "4Gi",
        );
        let with = |required: Value| {
            let p = pod(
                "p",
                json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": required}}}),
            );
            matches_affinity(&p, &n)
        };
        let expr = |key: &str, op: &str, values: Value| json!({"nodeSelectorTerms": [{"matchExpressions": [{"key": key, "operator": op, "values": values}]}]});
        assert!(with(expr("board", "In", json!(["rpi3", "rpi4"]))));
        assert!(!with(expr("board", "NotIn", json!(["rpi4"]))));
        assert!(with(expr("missing", "NotIn", json!(["x"]))));
        assert!(with(expr("board", "Exists", json!(null))));
        assert!(with(expr("missing", "DoesNotExist", json!(null))));
        assert!(with(expr("cores", "Gt", json!(["2"]))));
        assert!(!with(expr("cores", "Lt", json!(["2"]))));
        assert!(!with(expr("cores", "Gt", json!(["x"]))));
        assert!(!with(expr("board", "Sideways", json!([]))));
        assert!(with(
            json!({"nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]}]})
        ));
        assert!(!with(
            json!({"nodeSelectorTerms": [{"matchFields": [{"key": "metadata.uid", "operator": "In", "values": ["n1"]}]}]})
        ));
        // ORed terms; an empty term or list matches nothing.
        assert!(with(
            json!({"nodeSelectorTerms": [{}, {"matchExpressions": [{"key": "board", "operator": "Exists"}]}]})
        ));
        assert!(!with(json!({"nodeSelectorTerms": [{}]})));
        assert!(!with(json!({"nodeSelectorTerms": []})));
        assert!(with(json!(null)));
        let selector = pod("p", json!({"nodeSelector": {"board": "rpi4", "cores": 4}}));
        assert!(
            !matches_affinity(&selector, &n),
            "a non-string value matches nothing"
        );
    }

    #[test]
    fn resources_in_use_count_and_the_least_allocated_node_wins() {
        let nodes = [
            node("a", json!({}), json!([]), "True", "2", "2Gi"),
            node("b", json!({}), json!([]), "True", "2", "2Gi"),
            node("c", json!({}), json!([]), "True", "1", "1Gi"),
        ];
        let mut infos: Vec<NodeInfo<'_>> = nodes.iter().map(NodeInfo::new).collect();
        let small = requesting("s", "500m", "256Mi");
        // Equal scores: the first name.
        assert_eq!(infos[choose(&small, &infos).unwrap()].name, "a");
        infos[0].add(&requesting("busy", "1", "1Gi"));
        assert_eq!(infos[choose(&small, &infos).unwrap()].name, "b");
        // Only a and b could hold 1.5 cores, a no longer can.
        let big = requesting("big", "1500m", "100Mi");
        assert_eq!(infos[choose(&big, &infos).unwrap()].name, "b");
        infos[1].add(&requesting("busy2", "1", "100Mi"));
        assert_eq!(
            choose(&big, &infos).unwrap_err(),
            "0/3 nodes are available: 3 Insufficient cpu."
        );
        // The pod count is a resource too.
        let mut full = node("full", json!({}), json!([]), "True", "2", "2Gi");
        full["status"]["allocatable"]["pods"] = json!("1");
        let mut full = NodeInfo::new(&full);
        full.add(&pod("other", json!({})));
        assert_eq!(
            choose(&pod("p", json!({})), &[full]).unwrap_err(),
            "0/1 nodes are available: 1 Too many pods."
        );
    }

    fn create(store: &Store, resource: &str, mut object: Value) -> Value {
        if let Some(meta) = object["metadata"].as_object_mut() {
            meta.remove("uid");
        }
        let namespace = if resource == "pods" { "default" } else { "" };
        store.create(resource, namespace, object).unwrap()
    }

    fn get_pod(store: &Store, name: &str) -> Value {
        store.get("pods", "default", name).unwrap()
    }

    #[test]
    fn pending_pods_are_bound_or_marked_unschedulable_and_retried() {
        let store = Store::new();
        create(
            &store,
            "nodes",
            node(
                "rpi",
                json!({"board": "rpi4"}),
                json!([]),
                "True",
                "4",
                "4Gi",
            ),
        );
        create(
            &store,
            "nodes",
            node(
                "tainted",
                json!({"board": "other"}),
                json!([{"key": "dedicated", "value": "x", "effect": "NoSchedule"}]),
                "True",
                "4",
                "4Gi",
            ),
        );
        create(
            &store,
            "pods",
            pod("web", json!({"nodeSelector": {"board": "rpi4"}})),
        );
        create(
            &store,
            "pods",
            pod("picky", json!({"nodeSelector": {"board": "other"}})),
        );
        create(
            &store,
            "pods",
            pod("other-scheduler", json!({"schedulerName": "custom"})),
        );
        create(
            &store,
            "pods",
            pod("preset", json!({"nodeName": "elsewhere"})),
        );

        let mut scheduler = Scheduler::new();
        let t0 = Instant::now();
        scheduler.pass_at(&store, t0);
        let web = get_pod(&store, "web");
        assert_eq!(web["spec"]["nodeName"], "rpi");
        let scheduled = condition(&web, "PodScheduled").unwrap();
        assert_eq!(scheduled["status"], "True");
        assert!(scheduled["lastProbeTime"].is_null());

        let picky = get_pod(&store, "picky");
        assert!(picky["spec"].get("nodeName").is_none());
        let failed = condition(&picky, "PodScheduled").unwrap();
        assert_eq!(failed["status"], "False");
        assert_eq!(failed["reason"], "Unschedulable");
        assert_eq!(
            failed["message"],
            "0/2 nodes are available: 1 node(s) didn't match Pod's node affinity, 1 node(s) had taint {dedicated: x}, that the pod didn't tolerate."
        );
        assert!(
            get_pod(&store, "other-scheduler")["spec"]
                .get("nodeName")
                .is_none()
        );
        assert!(condition(&get_pod(&store, "other-scheduler"), "PodScheduled").is_none());
        assert_eq!(get_pod(&store, "preset")["spec"]["nodeName"], "elsewhere");

        let (events, _) = store.list("events", Some("default"), |_| true);
        let reasons: Vec<(&str, &str)> = events
            .iter()
            .map(|e| (str_at(e, "/reason"), str_at(e, "/message")))
            .collect();
        assert!(reasons.contains(&("Scheduled", "Successfully assigned default/web to rpi")));
        assert!(reasons.iter().any(|(r, _)| *r == "FailedScheduling"));

        // Nothing changed: no retry, no rewrite, even after the back-off.
        let version = picky["metadata"]["resourceVersion"].clone();
        scheduler.pass_at(&store, t0 + Duration::from_secs(5));
        assert_eq!(
            get_pod(&store, "picky")["metadata"]["resourceVersion"],
            version
        );

        // A heartbeat is no reason to retry; the taint going is.
        let mut tainted = store.get("nodes", "", "tainted").unwrap();
        tainted["status"]["conditions"][0]["lastHeartbeatTime"] = json!("2026-01-01T00:00:00Z");
        store.update("nodes", "", tainted).unwrap();
        scheduler.pass_at(&store, t0 + Duration::from_secs(6));
        let (events, _) = store.list("events", Some("default"), |e| {
            e["reason"] == "FailedScheduling"
        });
        assert_eq!(events[0]["count"], 1);
        let mut tainted = store.get("nodes", "", "tainted").unwrap();
        tainted["spec"]["taints"] = json!([]);
        store.update("nodes", "", tainted).unwrap();
        // Within the back-off: not yet.
        scheduler.pass_at(&store, t0 + Duration::from_millis(500));
        assert!(get_pod(&store, "picky")["spec"].get("nodeName").is_none());
        scheduler.pass_at(&store, t0 + Duration::from_secs(7));
        let picky = get_pod(&store, "picky");
        assert_eq!(picky["spec"]["nodeName"], "tainted");
        let scheduled = condition(&picky, "PodScheduled").unwrap();
        assert_eq!(scheduled["status"], "True");
        assert!(scheduled.get("reason").is_none());
    }

    #[test]
    fn finished_and_deleted_pods_free_their_resources() {
        let store = Store::new();
        create(
            &store,
            "nodes",
            node("n", json!({}), json!([]), "True", "1", "1Gi"),
        );
        let mut done = requesting("done", "1", "100Mi");
        done["spec"]["nodeName"] = json!("n");
        done["status"] = json!({"phase": "Succeeded"});
        create(&store, "pods", done);
        let mut running = requesting("running", "1", "100Mi");
        running["spec"]["nodeName"] = json!("n");
        create(&store, "pods", running);
        create(&store, "pods", requesting("next", "1", "100Mi"));
        let mut scheduler = Scheduler::new();
        let t0 = Instant::now();
        scheduler.pass_at(&store, t0);
        assert_eq!(
            condition(&get_pod(&store, "next"), "PodScheduled").unwrap()["message"],
            "0/1 nodes are available: 1 Insufficient cpu."
        );
        store
            .delete("pods", "default", "running", None, None)
            .unwrap();
        scheduler.pass_at(&store, t0 + Duration::from_secs(2));
        assert_eq!(get_pod(&store, "next")["spec"]["nodeName"], "n");
    }

    #[test]
    fn garbage_pods_and_nodes_are_skipped() {
        let store = Store::new();
        store
            .create(
                "nodes",
                "",
                json!({"metadata": {"name": "odd"}, "spec": 3, "status": {"allocatable": "x"}}),
            )
            .unwrap();
        store
            .create(
                "pods",
                "default",
                json!({"metadata": {"name": "p"}, "spec": {"containers": 5, "tolerations": [1]}}),
            )
            .unwrap();
        store
            .create(
                "pods",
                "default",
                json!({"metadata": {"name": "q"}, "spec": "nope", "status": 4}),
            )
            .unwrap();
        let mut scheduler = Scheduler::new();
        scheduler.pass_at(&store, Instant::now());
        // An all-empty toleration tolerates valueless taints (Equal on "").
        assert_eq!(
            condition(&get_pod(&store, "p"), "PodScheduled").unwrap()["message"],
            "0/1 nodes are available: 1 Too many pods."
        );
        assert_eq!(
            condition(&get_pod(&store, "q"), "PodScheduled").unwrap()["message"],
            "0/1 nodes are available: 1 node(s) had taint {node.kubernetes.io/not-ready: }, that the pod didn't tolerate."
        );
    }
}
