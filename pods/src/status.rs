//! The `PodStatus` a kubelet reports, computed from what ran
//! (`kubelet_pods.go` generateAPIPodStatus / convertToAPIContainerStatuses /
//! getPhase, `status/generate.go`, and the status manager's bookkeeping of
//! `lastTransitionTime` and `startTime`).
//!
//! Inputs are plain values: the pod as the API shows it (its current status is
//! the "old" status the kubelet merges with), every container instance the
//! runtime still knows of the pod ([`ObservedContainer`], with an adapter from
//! the runtime's [`ContainerInfo`]), the last start failure per container (the
//! kubelet's reason cache: `CrashLoopBackOff`, `ErrImagePull`,
//! `CreateContainerConfigError`…) and probe results.

use std::collections::BTreeMap;

use armlet_runtime::protocol::{
    ContainerInfo, ContainerState as RuntimeState, LABEL_CONTAINER_NAME,
};
use armlet_runtime::time::Timestamp;
use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, HostIP, Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::chrono::{DateTime, SubsecRound, Utc};

use crate::quantity::Quantity;

/// The scheme of container IDs in statuses: `armlet://<id>` (containerd's
/// would be `containerd://`; the control plane treats it as opaque).
pub const CONTAINER_ID_SCHEME: &str = "armlet";

/// The label (CRI annotation in the kubelet) carrying an instance's restart
/// count; the agent sets it when creating the container.
pub const LABEL_RESTART_COUNT: &str = "io.kubernetes.container.restartCount";

/// Why runtime information could not become an observation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatusError {
    /// A label the agent sets on every container is missing.
    #[error("container {id} has no {label} label: not created by armlet's agent")]
    MissingLabel {
        /// The container.
        id: String,
        /// The label.
        label: &'static str,
    },
    /// A label does not hold what it should.
    #[error("container {id}: label {label} = {value:?} is not a count")]
    BadLabel {
        /// The container.
        id: String,
        /// The label.
        label: &'static str,
        /// Its value.
        value: String,
    },
    /// A runtime timestamp is outside what the API can show.
    #[error("container {id}: timestamp out of range")]
    BadTime {
        /// The container.
        id: String,
    },
}

/// A container's waiting state: `reason` (a kubelet constant) and `message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    /// E.g. `CrashLoopBackOff`, `ErrImagePull`, `CreateContainerConfigError`.
    pub reason: String,
    /// What the kubelet says about it.
    pub message: String,
}

impl Waiting {
    /// A waiting state.
    pub fn new(reason: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            message: message.into(),
        }
    }
}

/// Where one container instance is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    /// Created, not started.
    Created,
    /// Running.
    Running,
    /// Exited.
    Exited,
}

/// How an instance ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedExit {
    /// Exit code (128 + signal when killed by one).
    pub exit_code: i32,
    /// The signal that killed it.
    pub signal: Option<i32>,
    /// The OOM killer ended it.
    pub oom_killed: bool,
    /// When it ended.
    pub finished_at: DateTime<Utc>,
    /// The termination message (see [`termination_message`]).
    pub message: Option<String>,
    /// A reason overriding the usual Completed/Error/OOMKilled (e.g.
    /// `StartError` when the process could not be started, exit code 128).
    pub reason: Option<String>,
}

impl ObservedExit {
    /// The reason reported, as containerd's CRI gives it.
    pub fn reason(&self) -> &str {
        if let Some(r) = &self.reason {
            return r;
        }
        if self.oom_killed {
            "OOMKilled"
        } else if self.exit_code == 0 {
            "Completed"
        } else {
            "Error"
        }
    }
}

/// One container instance the runtime knows of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedContainer {
    /// The container's name in the pod spec.
    pub name: String,
    /// Runtime container ID (without scheme).
    pub id: String,
    /// How many instances of this container ran before this one.
    pub restart_count: i32,
    /// Its state.
    pub state: RunState,
    /// When it was created (orders instances: the newest is current).
    pub created_at: DateTime<Utc>,
    /// When its process started.
    pub started_at: Option<DateTime<Utc>>,
    /// How it ended.
    pub exit: Option<ObservedExit>,
    /// The image as the runtime resolved it (e.g.
    /// `docker.io/library/busybox:1.36`).
    pub image: String,
    /// The image's ID: `docker.io/library/busybox@sha256:<manifest digest>`
    /// when pulled, `sha256:<config digest>` for an import without repo digest.
    pub image_id: String,
}

fn to_chrono(id: &str, t: &Timestamp) -> Result<DateTime<Utc>, StatusError> {
    DateTime::from_timestamp(t.unix_seconds(), t.subsec_nanos())
        .ok_or_else(|| StatusError::BadTime { id: id.to_owned() })
}

impl ObservedContainer {
    /// From the runtime's view of a container. The agent labels every
    /// container with its name ([`LABEL_CONTAINER_NAME`]) and restart count
    /// ([`LABEL_RESTART_COUNT`]); image and image ID come from the image store.
    pub fn from_runtime(
        info: &ContainerInfo,
        image: &str,
        image_id: &str,
    ) -> Result<Self, StatusError> {
        let id = info.id.as_str();
        let name = info
            .label(LABEL_CONTAINER_NAME)
            .ok_or(StatusError::MissingLabel {
                id: id.to_owned(),
                label: LABEL_CONTAINER_NAME,
            })?;
        let restart_count =
            match info.label(LABEL_RESTART_COUNT) {
                None => 0,
                Some(v) => v.parse::<i32>().ok().filter(|n| *n >= 0).ok_or_else(|| {
                    StatusError::BadLabel {
                        id: id.to_owned(),
                        label: LABEL_RESTART_COUNT,
                        value: v.to_owned(),
                    }
                })?,
            };
        let exit = info
            .exit
            .as_ref()
            .map(|e| {
                Ok::<_, StatusError>(ObservedExit {
                    exit_code: e.exit_code,
                    signal: e.signal,
                    oom_killed: e.oom_killed,
                    finished_at: to_chrono(id, &e.finished_at)?,
                    message: None,
                    reason: None,
                })
            })
            .transpose()?;
        let started_at = match (&info.started_at, &info.exit) {
            (Some(t), _) => Some(to_chrono(id, t)?),
            (None, Some(e)) => Some(to_chrono(id, &e.started_at)?),
            (None, None) => None,
        };
        Ok(Self {
            name: name.to_owned(),
            id: id.to_owned(),
            restart_count,
            state: match info.state {
                RuntimeState::Created => RunState::Created,
                RuntimeState::Running => RunState::Running,
                RuntimeState::Exited => RunState::Exited,
            },
            created_at: to_chrono(id, &info.created_at)?,
            started_at,
            exit,
            image: image.to_owned(),
            image_id: image_id.to_owned(),
        })
    }

    /// `armlet://<id>`.
    pub fn container_id(&self) -> String {
        format!("{CONTAINER_ID_SCHEME}://{}", self.id)
    }
}

/// Probe results for the current instances, keyed by runtime container ID (a
/// result belongs to one instance, as the kubelet's results manager keys them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProbeResults {
    /// Readiness probe results (true: success).
    pub readiness: BTreeMap<String, bool>,
    /// Startup probe results (true: success).
    pub startup: BTreeMap<String, bool>,
}

/// Everything the status is computed from.
#[derive(Debug, Clone, Copy)]
pub struct StatusInput<'a> {
    /// The pod as the API shows it; its `status` is the previous status.
    pub pod: &'a Pod,
    /// The node's IPs, primary first.
    pub host_ips: &'a [String],
    /// The sandbox's IPs, primary first (empty for hostNetwork pods: the
    /// node's are reported).
    pub pod_ips: &'a [String],
    /// Every instance of the pod's containers the runtime knows (current and
    /// at least the previous one of each, for `lastState`).
    pub containers: &'a [ObservedContainer],
    /// The last failure to start each container, by name (the kubelet's reason
    /// cache); cleared by the agent when a start succeeds.
    pub start_failures: &'a BTreeMap<String, Waiting>,
    /// Probe results.
    pub probes: &'a ProbeResults,
    /// The pod worker has finished with the pod (deleted or evicted, all
    /// containers stopped): report a terminal phase (newer kubelets, 1.27+).
    pub terminal: bool,
    /// Now (transition times, start time).
    pub now: DateTime<Utc>,
}

/// Reasons the kubelet puts in conditions.
mod reasons {
    pub const CONTAINERS_NOT_READY: &str = "ContainersNotReady";
    pub const CONTAINERS_NOT_INITIALIZED: &str = "ContainersNotInitialized";
    pub const READINESS_GATES_NOT_READY: &str = "ReadinessGatesNotReady";
    pub const POD_COMPLETED: &str = "PodCompleted";
    pub const CONTAINER_CREATING: &str = "ContainerCreating";
    pub const POD_INITIALIZING: &str = "PodInitializing";
}

/// Condition types the kubelet owns; others (readiness gates' conditions set
/// by controllers) are carried over from the previous status.
const KUBELET_CONDITIONS: &[&str] = &["PodScheduled", "Ready", "Initialized", "ContainersReady"];

fn time(t: DateTime<Utc>) -> Time {
    // The API stores seconds: normalise so unchanged statuses compare equal.
    Time(t.trunc_subsecs(0))
}

/// A sidecar: an init container with `restartPolicy: Always` (1.29+).
fn is_sidecar(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

/// `ShouldContainerBeRestarted` for the latest instance.
fn should_restart(pod: &Pod, container: &Container, latest: Option<&ObservedContainer>) -> bool {
    if pod.metadata.deletion_timestamp.is_some() {
        return false;
    }
    let Some(latest) = latest else { return true };
    match latest.state {
        RunState::Running => false,
        RunState::Created => true,
        RunState::Exited => {
            if is_sidecar(container) {
                return true;
            }
            let policy = pod
                .spec
                .as_ref()
                .and_then(|s| s.restart_policy.as_deref())
                .unwrap_or("Always");
            match policy {
                "Never" => false,
                "OnFailure" => latest.exit.as_ref().is_some_and(|e| e.exit_code != 0),
                _ => true,
            }
        }
    }
}

fn terminated_state(o: &ObservedContainer) -> ContainerState {
    let exit = o.exit.as_ref();
    ContainerState {
        terminated: Some(ContainerStateTerminated {
            container_id: Some(o.container_id()),
            exit_code: exit.map_or(0, |e| e.exit_code),
            signal: exit.and_then(|e| e.signal),
            reason: exit.map(|e| e.reason().to_owned()),
            message: exit
                .and_then(|e| e.message.clone())
                .filter(|m| !m.is_empty()),
            started_at: o.started_at.map(time),
            finished_at: exit.map(|e| time(e.finished_at)),
        }),
        ..Default::default()
    }
}

/// `convertContainerStatus`: one instance as a status.
fn convert(o: &ObservedContainer) -> ContainerStatus {
    let state = match o.state {
        RunState::Running => ContainerState {
            running: Some(ContainerStateRunning {
                started_at: o.started_at.map(time),
            }),
            ..Default::default()
        },
        RunState::Exited => terminated_state(o),
        // The kubelet folds "created" into "exited"; an instance the agent
        // created but has not started yet is reported as still being created,
        // which is what it is.
        RunState::Created => waiting_state(reasons::CONTAINER_CREATING, None),
    };
    ContainerStatus {
        name: o.name.clone(),
        restart_count: o.restart_count,
        image: o.image.clone(),
        image_id: o.image_id.clone(),
        container_id: Some(o.container_id()),
        state: Some(state),
        ..Default::default()
    }
}

fn waiting_state(reason: &str, message: Option<&str>) -> ContainerState {
    ContainerState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(reason.to_owned()),
            message: message.filter(|m| !m.is_empty()).map(str::to_owned),
        }),
        ..Default::default()
    }
}

fn instances_of<'a>(all: &'a [ObservedContainer], name: &str) -> Vec<&'a ObservedContainer> {
    let mut v: Vec<&ObservedContainer> = all.iter().filter(|o| o.name == name).collect();
    // Newest first, as the kubelet sorts by creation time.
    v.sort_by(|a, b| {
        b.created_at
            .cmp(&a.created_at)
            .then(b.restart_count.cmp(&a.restart_count))
    });
    v
}

/// `convertToAPIContainerStatuses` for one list (app or init containers).
fn container_statuses(
    input: &StatusInput<'_>,
    containers: &[Container],
    old: &[ContainerStatus],
    has_init: bool,
    is_init: bool,
) -> Vec<ContainerStatus> {
    let pod = input.pod;
    let default_reason = if has_init {
        reasons::POD_INITIALIZING
    } else {
        reasons::CONTAINER_CREATING
    };
    let mut out = Vec::with_capacity(containers.len());
    for c in containers {
        let old_status = old.iter().find(|s| s.name == c.name);
        let mut status = ContainerStatus {
            name: c.name.clone(),
            image: c.image.clone().unwrap_or_default(),
            state: Some(waiting_state(default_reason, None)),
            ..Default::default()
        };
        if let Some(old_status) = old_status {
            if old_status
                .state
                .as_ref()
                .is_some_and(|s| s.terminated.is_some())
            {
                status = old_status.clone();
            } else {
                status.restart_count = old_status.restart_count;
                status.last_state = old_status.last_state.clone();
            }
        }
        let instances = instances_of(input.containers, &c.name);
        if instances.is_empty() {
            // A container that was running and vanished while the pod is being
            // deleted: report a termination rather than "waiting", which would
            // turn the pod back to Pending.
            let was_running = old_status
                .and_then(|s| s.state.as_ref())
                .is_some_and(|s| s.running.is_some());
            let is_default = status
                .state
                .as_ref()
                .and_then(|s| s.waiting.as_ref())
                .is_some_and(|w| w.reason.as_deref() == Some(default_reason));
            let has_last = status
                .last_state
                .as_ref()
                .is_some_and(|s| s.terminated.is_some());
            if was_running && pod.metadata.deletion_timestamp.is_some() && is_default && !has_last {
                status.last_state = Some(ContainerState {
                    terminated: Some(ContainerStateTerminated {
                        reason: Some("ContainerStatusUnknown".to_owned()),
                        message: Some("The container could not be located when the pod was deleted.  The container used to be Running".to_owned()),
                        exit_code: 137,
                        ..Default::default()
                    }),
                    ..Default::default()
                });
            }
        }
        if let Some(latest) = instances.first() {
            status = convert(latest);
            if let Some(previous) = instances.get(1) {
                status.last_state = match previous.state {
                    RunState::Running | RunState::Exited => convert(previous).state,
                    RunState::Created => None,
                };
            }
        }
        let latest = instances.first().copied();
        let init_done = is_init
            && latest.is_some_and(|l| {
                l.state == RunState::Exited && l.exit.as_ref().is_some_and(|e| e.exit_code == 0)
            });
        if !init_done && should_restart(pod, c, latest) {
            if let Some(failure) = input.start_failures.get(&c.name) {
                if status
                    .state
                    .as_ref()
                    .is_some_and(|s| s.terminated.is_some())
                {
                    status.last_state = status.state.take();
                }
                status.state = Some(waiting_state(&failure.reason, Some(&failure.message)));
            }
        }
        set_readiness(input, c, latest, &mut status, is_init);
        if status.last_state.is_none() {
            status.last_state = Some(ContainerState::default());
        }
        out.push(status);
    }
    if !is_init {
        // App container statuses are sorted by name; init ones keep spec order.
        out.sort_by(|a, b| a.name.cmp(&b.name));
    }
    out
}

/// `probeManager.UpdatePodStatus`: `started` and `ready`.
fn set_readiness(
    input: &StatusInput<'_>,
    c: &Container,
    latest: Option<&ObservedContainer>,
    status: &mut ContainerStatus,
    is_init: bool,
) {
    let running = status.state.as_ref().is_some_and(|s| s.running.is_some());
    let id = latest.map(|l| l.id.as_str()).unwrap_or_default();
    let started = running
        && match &c.startup_probe {
            Some(_) => input.probes.startup.get(id) == Some(&true),
            None => true,
        };
    let readiness = || match &c.readiness_probe {
        Some(_) => input.probes.readiness.get(id) == Some(&true),
        None => true,
    };
    if is_init && !is_sidecar(c) {
        // Init containers are ready once they succeeded.
        status.ready = status
            .state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .is_some_and(|t| t.exit_code == 0);
        status.started = Some(running);
        return;
    }
    status.started = Some(started);
    status.ready = started && readiness();
}

fn state_of(s: &ContainerStatus) -> (&Option<ContainerState>, Option<&ContainerStateTerminated>) {
    (
        &s.state,
        s.last_state.as_ref().and_then(|l| l.terminated.as_ref()),
    )
}

/// `getPhase` (1.21, with the newer terminal-pod rule and sidecars).
fn phase(
    pod: &Pod,
    init: &[ContainerStatus],
    app: &[ContainerStatus],
    terminal: bool,
) -> &'static str {
    let Some(spec) = pod.spec.as_ref() else {
        return "Pending";
    };
    let policy = spec.restart_policy.as_deref().unwrap_or("Always");
    let mut pending_init = 0;
    let mut failed_init = 0;
    for c in spec.init_containers.iter().flatten() {
        let Some(s) = init.iter().find(|s| s.name == c.name) else {
            pending_init += 1;
            continue;
        };
        let (state, last) = state_of(s);
        let state = state.as_ref();
        if is_sidecar(c) {
            // A sidecar lets the pod go on once it runs and has started.
            if !(state.is_some_and(|st| st.running.is_some()) && s.started == Some(true)) {
                pending_init += 1;
            }
            continue;
        }
        match state {
            Some(st) if st.running.is_some() => pending_init += 1,
            Some(st) if st.terminated.is_some() => {
                if st.terminated.as_ref().is_some_and(|t| t.exit_code != 0) {
                    failed_init += 1;
                }
            }
            Some(st) if st.waiting.is_some() => match last {
                Some(t) if t.exit_code != 0 => failed_init += 1,
                Some(_) => {}
                None => pending_init += 1,
            },
            _ => pending_init += 1,
        }
    }
    let (mut unknown, mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0, 0);
    for c in &spec.containers {
        let Some(s) = app.iter().find(|s| s.name == c.name) else {
            unknown += 1;
            continue;
        };
        let (state, last) = state_of(s);
        match state.as_ref() {
            Some(st) if st.running.is_some() => running += 1,
            Some(st) if st.terminated.is_some() => {
                stopped += 1;
                if st.terminated.as_ref().is_some_and(|t| t.exit_code == 0) {
                    succeeded += 1;
                }
            }
            Some(st) if st.waiting.is_some() => {
                if last.is_some() {
                    stopped += 1;
                } else {
                    waiting += 1;
                }
            }
            _ => unknown += 1,
        }
    }
    if failed_init > 0 && policy == "Never" {
        return "Failed";
    }
    if pending_init > 0 || waiting > 0 {
        if terminal {
            return "Failed";
        }
        return "Pending";
    }
    if running > 0 && unknown == 0 {
        return "Running";
    }
    if running == 0 && stopped > 0 && unknown == 0 {
        if terminal {
            // Deleted pods that will not restart get a terminal phase (1.27+).
            return if stopped == succeeded {
                "Succeeded"
            } else {
                "Failed"
            };
        }
        if policy == "Always" {
            return "Running";
        }
        if stopped == succeeded {
            return "Succeeded";
        }
        if policy == "Never" {
            return "Failed";
        }
        return "Running";
    }
    if terminal { "Failed" } else { "Pending" }
}

fn condition(type_: &str, ok: bool, reason: Option<&str>, message: Option<String>) -> PodCondition {
    PodCondition {
        type_: type_.to_owned(),
        status: if ok { "True" } else { "False" }.to_owned(),
        reason: reason.map(str::to_owned),
        message: message.filter(|m| !m.is_empty()),
        ..Default::default()
    }
}

/// Go's `%s` of a `[]string`: `[a b]`.
fn go_list(names: &[&str]) -> String {
    format!("[{}]", names.join(" "))
}

/// `GenerateContainersReadyCondition`.
fn containers_ready(
    spec_containers: &[Container],
    statuses: &[ContainerStatus],
    phase: &str,
) -> PodCondition {
    let mut unknown = Vec::new();
    let mut unready = Vec::new();
    for c in spec_containers {
        match statuses.iter().find(|s| s.name == c.name) {
            Some(s) if !s.ready => unready.push(c.name.as_str()),
            Some(_) => {}
            None => unknown.push(c.name.as_str()),
        }
    }
    if phase == "Succeeded" && unknown.is_empty() {
        return condition("ContainersReady", false, Some(reasons::POD_COMPLETED), None);
    }
    let mut messages = Vec::new();
    if !unknown.is_empty() {
        messages.push(format!(
            "containers with unknown status: {}",
            go_list(&unknown)
        ));
    }
    if !unready.is_empty() {
        messages.push(format!(
            "containers with unready status: {}",
            go_list(&unready)
        ));
    }
    if messages.is_empty() {
        condition("ContainersReady", true, None, None)
    } else {
        condition(
            "ContainersReady",
            false,
            Some(reasons::CONTAINERS_NOT_READY),
            Some(messages.join(", ")),
        )
    }
}

/// `GeneratePodInitializedCondition`.
fn initialized(
    init_containers: &[Container],
    statuses: &[ContainerStatus],
    phase: &str,
) -> PodCondition {
    let mut unknown = Vec::new();
    let mut incomplete = Vec::new();
    for c in init_containers {
        match statuses.iter().find(|s| s.name == c.name) {
            Some(s) => {
                let done = if is_sidecar(c) {
                    s.started == Some(true)
                } else {
                    s.ready
                };
                if !done {
                    incomplete.push(c.name.as_str());
                }
            }
            None => unknown.push(c.name.as_str()),
        }
    }
    if phase == "Succeeded" && unknown.is_empty() {
        return condition("Initialized", true, Some(reasons::POD_COMPLETED), None);
    }
    let mut messages = Vec::new();
    if !unknown.is_empty() {
        messages.push(format!(
            "containers with unknown status: {}",
            go_list(&unknown)
        ));
    }
    if !incomplete.is_empty() {
        messages.push(format!(
            "containers with incomplete status: {}",
            go_list(&incomplete)
        ));
    }
    if messages.is_empty() {
        condition("Initialized", true, None, None)
    } else {
        condition(
            "Initialized",
            false,
            Some(reasons::CONTAINERS_NOT_INITIALIZED),
            Some(messages.join(", ")),
        )
    }
}

/// `GeneratePodReadyCondition`: ContainersReady and every readiness gate.
fn ready(pod: &Pod, containers_ready: &PodCondition, old: &[PodCondition]) -> PodCondition {
    if containers_ready.status != "True" {
        return PodCondition {
            type_: "Ready".to_owned(),
            ..containers_ready.clone()
        };
    }
    let mut messages = Vec::new();
    for gate in pod
        .spec
        .as_ref()
        .and_then(|s| s.readiness_gates.as_deref())
        .unwrap_or_default()
    {
        match old.iter().find(|c| c.type_ == gate.condition_type) {
            None => messages.push(format!(
                "corresponding condition of pod readiness gate {:?} does not exist.",
                gate.condition_type
            )),
            Some(c) if c.status != "True" => messages.push(format!(
                "the status of pod readiness gate {:?} is not \"True\", but {}",
                gate.condition_type, c.status
            )),
            Some(_) => {}
        }
    }
    if messages.is_empty() {
        condition("Ready", true, None, None)
    } else {
        condition(
            "Ready",
            false,
            Some(reasons::READINESS_GATES_NOT_READY),
            Some(messages.join(", ")),
        )
    }
}

/// The pod's QoS class (`GetPodQOS`): `Guaranteed` when every container sets
/// CPU and memory limits and the summed requests equal the summed limits,
/// `BestEffort` when nothing is requested or limited, else `Burstable`.
/// Unparsable quantities (rejected by the API server anyway) count as unset.
pub fn qos_class(pod: &Pod) -> &'static str {
    let Some(spec) = pod.spec.as_ref() else {
        return "BestEffort";
    };
    let mut requests: BTreeMap<&str, Quantity> = BTreeMap::new();
    let mut limits: BTreeMap<&str, Quantity> = BTreeMap::new();
    let mut guaranteed = true;
    for c in spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
    {
        let res = c.resources.as_ref();
        let own_requests = res.and_then(|r| r.requests.as_ref());
        // The API server defaults a missing request to the limit; pods that did
        // not go through it (tests, file pods) are read the same way.
        let defaulted = res
            .and_then(|r| r.limits.as_ref())
            .into_iter()
            .flatten()
            .filter(|(name, _)| !own_requests.is_some_and(|r| r.contains_key(*name)));
        for (name, q) in own_requests.into_iter().flatten().chain(defaulted) {
            let name = name.as_str();
            if name != "cpu" && name != "memory" {
                continue;
            }
            if let Some(q) = Quantity::try_from(q).ok().filter(Quantity::is_positive) {
                let e = requests.entry(name).or_default();
                *e = e.saturating_add(q);
            }
        }
        let mut found = (false, false);
        for (name, q) in res.and_then(|r| r.limits.as_ref()).into_iter().flatten() {
            let name = name.as_str();
            if name != "cpu" && name != "memory" {
                continue;
            }
            if let Some(q) = Quantity::try_from(q).ok().filter(Quantity::is_positive) {
                if name == "cpu" {
                    found.0 = true;
                } else {
                    found.1 = true;
                }
                let e = limits.entry(name).or_default();
                *e = e.saturating_add(q);
            }
        }
        if !(found.0 && found.1) {
            guaranteed = false;
        }
    }
    if requests.is_empty() && limits.is_empty() {
        return "BestEffort";
    }
    if guaranteed {
        for (name, req) in &requests {
            if limits.get(name) != Some(req) {
                guaranteed = false;
                break;
            }
        }
    }
    if guaranteed && requests.len() == limits.len() {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// The status the kubelet would report now. Transition times and the start
/// time are kept from the pod's current status where they still apply, as the
/// status manager does; a terminal phase already shown is never changed.
pub fn pod_status(input: &StatusInput<'_>) -> PodStatus {
    let pod = input.pod;
    let empty = PodStatus::default();
    let old = pod.status.as_ref().unwrap_or(&empty);
    let no_containers = Vec::new();
    let (containers, init_containers) = match pod.spec.as_ref() {
        Some(s) => (
            &s.containers,
            s.init_containers.as_ref().unwrap_or(&no_containers),
        ),
        None => (&no_containers, &no_containers),
    };
    let has_init = !init_containers.is_empty();
    let old_app = old.container_statuses.as_deref().unwrap_or_default();
    let old_init = old.init_container_statuses.as_deref().unwrap_or_default();
    let app = container_statuses(input, containers, old_app, has_init, false);
    let init = container_statuses(input, init_containers, old_init, has_init, true);

    let mut phase = phase(pod, &init, &app, input.terminal).to_owned();
    if let Some(old_phase) = old.phase.as_deref() {
        if (old_phase == "Succeeded" || old_phase == "Failed") && old_phase != phase {
            tracing::warn!(pod = %crate::pod_display_name(pod), from = old_phase, to = %phase, "refusing an illegal phase transition from a terminal phase");
            phase = old_phase.to_owned();
        }
    }
    let old_conditions = old.conditions.as_deref().unwrap_or_default();
    let initialized = initialized(init_containers, &init, &phase);
    let containers_ready = containers_ready(containers, &app, &phase);
    let ready = ready(pod, &containers_ready, old_conditions);
    let mut conditions = vec![
        initialized,
        ready,
        containers_ready,
        condition("PodScheduled", true, None, None),
    ];
    for c in &mut conditions {
        let kept = old_conditions
            .iter()
            .find(|o| o.type_ == c.type_ && o.status == c.status)
            .and_then(|o| o.last_transition_time.clone());
        c.last_transition_time = Some(kept.unwrap_or_else(|| time(input.now)));
    }
    conditions.extend(
        old_conditions
            .iter()
            .filter(|c| !KUBELET_CONDITIONS.contains(&c.type_.as_str()))
            .cloned(),
    );

    let host_network = pod
        .spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false);
    let pod_ips: Vec<String> = if input.pod_ips.is_empty() && host_network {
        input.host_ips.to_vec()
    } else {
        input.pod_ips.to_vec()
    };
    let start_time = old.start_time.clone().unwrap_or_else(|| time(input.now));
    PodStatus {
        phase: Some(phase),
        conditions: Some(conditions),
        host_ip: input.host_ips.first().cloned(),
        host_ips: (!input.host_ips.is_empty()).then(|| {
            input
                .host_ips
                .iter()
                .map(|ip| HostIP { ip: ip.clone() })
                .collect()
        }),
        pod_ip: pod_ips.first().cloned(),
        pod_ips: (!pod_ips.is_empty())
            .then(|| pod_ips.iter().map(|ip| PodIP { ip: ip.clone() }).collect()),
        start_time: Some(start_time),
        qos_class: Some(
            old.qos_class
                .clone()
                .filter(|q| !q.is_empty())
                .unwrap_or_else(|| qos_class(pod).to_owned()),
        ),
        container_statuses: Some(app),
        init_container_statuses: has_init.then_some(init),
        // Eviction and admission reasons are the agent's to set.
        reason: old.reason.clone(),
        message: old.message.clone(),
        nominated_node_name: old.nominated_node_name.clone(),
        ..Default::default()
    }
}

/// Longest termination message read from the file (`MaxContainerTerminationMessageLength`).
pub const MAX_TERMINATION_MESSAGE: usize = 4096;
/// Lines of log used for `FallbackToLogsOnError`.
pub const MAX_TERMINATION_LOG_LINES: usize = 80;
/// Bytes of log used for `FallbackToLogsOnError`.
pub const MAX_TERMINATION_LOG_BYTES: usize = 2048;

/// A terminated container's message (`getTerminationMessage`): the end of the
/// termination-message file (at most 4 KiB); with
/// `terminationMessagePolicy: FallbackToLogsOnError`, a failed container whose
/// file is empty or missing gets its last 80 log lines (at most 2 KiB).
pub fn termination_message(
    file: Option<&[u8]>,
    policy: Option<&str>,
    exit_code: i32,
    log: Option<&str>,
) -> String {
    let from_file = file
        .map(|b| {
            let start = b.len().saturating_sub(MAX_TERMINATION_MESSAGE);
            String::from_utf8_lossy(&b[start..]).into_owned()
        })
        .unwrap_or_default();
    let fallback = policy == Some("FallbackToLogsOnError") && exit_code != 0;
    if !from_file.is_empty() || !fallback {
        return from_file;
    }
    let Some(log) = log else {
        return String::new();
    };
    let lines: Vec<&str> = log.lines().collect();
    let tail = lines[lines.len().saturating_sub(MAX_TERMINATION_LOG_LINES)..].join("\n");
    let bytes = tail.as_bytes();
    let start = bytes.len().saturating_sub(MAX_TERMINATION_LOG_BYTES);
    String::from_utf8_lossy(&bytes[start..]).into_owned()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    use armlet_runtime::state::ExitStatus;

    use super::*;
    use crate::testutil::pod;

    const RECORDED: &str = include_str!("../testdata/busybox-pod-status.yaml");

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn running(
        name: &str,
        id: &str,
        created: &str,
        started: &str,
        restarts: i32,
    ) -> ObservedContainer {
        ObservedContainer {
            name: name.into(),
            id: id.into(),
            restart_count: restarts,
            state: RunState::Running,
            created_at: at(created),
            started_at: Some(at(started)),
            exit: None,
            image: "docker.io/library/busybox:1.36".into(),
            image_id: "docker.io/library/busybox@sha256:abc".into(),
        }
    }

    fn exited(
        name: &str,
        id: &str,
        created: &str,
        finished: &str,
        code: i32,
        restarts: i32,
    ) -> ObservedContainer {
        ObservedContainer {
            state: RunState::Exited,
            exit: Some(ObservedExit {
                exit_code: code,
                signal: None,
                oom_killed: false,
                finished_at: at(finished),
                message: None,
                reason: None,
            }),
            ..running(name, id, created, created, restarts)
        }
    }

    struct Run<'a> {
        pod: &'a Pod,
        containers: Vec<ObservedContainer>,
        failures: BTreeMap<String, Waiting>,
        probes: ProbeResults,
        terminal: bool,
        now: &'a str,
    }

    impl<'a> Run<'a> {
        fn new(pod: &'a Pod, now: &'a str) -> Self {
            Self {
                pod,
                containers: vec![],
                failures: BTreeMap::new(),
                probes: ProbeResults::default(),
                terminal: false,
                now,
            }
        }
        fn status(&self) -> PodStatus {
            let host = vec!["198.18.0.2".to_owned()];
            let ips = vec!["10.42.0.9".to_owned()];
            pod_status(&StatusInput {
                pod: self.pod,
                host_ips: &host,
                pod_ips: &ips,
                containers: &self.containers,
                start_failures: &self.failures,
                probes: &self.probes,
                terminal: self.terminal,
                now: at(self.now),
            })
        }
    }

    fn cond<'s>(s: &'s PodStatus, t: &str) -> &'s PodCondition {
        s.conditions
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.type_ == t)
            .unwrap()
    }

    fn cs<'s>(s: &'s PodStatus, name: &str) -> &'s ContainerStatus {
        s.container_statuses
            .as_ref()
            .unwrap()
            .iter()
            .chain(s.init_container_statuses.iter().flatten())
            .find(|c| c.name == name)
            .unwrap()
    }

    /// The recorded pod's life replayed: accepted at 21:07:38 while its
    /// container is created, running from 21:09:21; the second status must be
    /// what the real kubelet reported (container ID scheme aside).
    #[test]
    fn busybox_status_matches_the_recorded_k3s_kubelet() {
        let recorded = pod(RECORDED);
        let mut p = recorded.clone();
        p.status = None;

        let first = Run::new(&p, "2026-11-27T21:07:38Z").status();
        assert_eq!(first.phase.as_deref(), Some("Pending"));
        let c = cs(&first, "busybox");
        let w = c.state.as_ref().unwrap().waiting.as_ref().unwrap();
        assert_eq!(w.reason.as_deref(), Some("ContainerCreating"));
        assert_eq!(c.image, "docker.io/library/busybox:local");
        assert!(!c.ready);
        assert_eq!(c.started, Some(false));
        let r = cond(&first, "Ready");
        assert_eq!(r.status, "False");
        assert_eq!(r.reason.as_deref(), Some("ContainersNotReady"));
        assert_eq!(
            r.message.as_deref(),
            Some("containers with unready status: [busybox]")
        );
        assert_eq!(cond(&first, "Initialized").status, "True");

        // The API now shows the first status; the container starts.
        p.status = Some(first);
        let mut run = Run::new(&p, "2026-11-27T21:09:21Z");
        run.containers.push(ObservedContainer {
            name: "busybox".into(),
            id: "314987204103e60d94eb0caa09d26f1fa50580e67eaffa886c8f3fd5411898e4".into(),
            restart_count: 0,
            state: RunState::Running,
            created_at: at("2026-11-27T21:09:20Z"),
            started_at: Some(at("2026-11-27T21:09:21Z")),
            exit: None,
            image: "docker.io/library/busybox:local".into(),
            image_id: "sha256:cd147358116b0f16c1903f9ec7a41384aa41c4c54518194f0119f6a31b0792e2"
                .into(),
        });
        let second = run.status();

        let mut ours = serde_json::to_value(&second).unwrap();
        let mut theirs = serde_json::to_value(recorded.status.as_ref().unwrap()).unwrap();
        // Ours names the runtime, and adds the newer `hostIPs` list.
        ours["containerStatuses"][0]["containerID"] =
            theirs["containerStatuses"][0]["containerID"].clone();
        assert_eq!(ours["hostIPs"], serde_json::json!([{"ip": "198.18.0.2"}]));
        ours.as_object_mut().unwrap().remove("hostIPs");
        theirs.as_object_mut().unwrap().remove("hostIPs");
        assert_eq!(
            second.container_statuses.as_ref().unwrap()[0]
                .container_id
                .as_deref(),
            Some("armlet://314987204103e60d94eb0caa09d26f1fa50580e67eaffa886c8f3fd5411898e4")
        );
        assert_eq!(ours, theirs);

        // A later sync with nothing new changes nothing (no spurious patches).
        let observed = run.containers.clone();
        p.status = Some(second.clone());
        let mut again = Run::new(&p, "2026-11-27T22:00:00Z");
        again.containers = observed;
        assert_eq!(again.status(), second);
    }

    fn simple(policy: &str) -> Pod {
        pod(&format!(
            "metadata: {{name: p, namespace: default, uid: u1}}\nspec:\n  restartPolicy: {policy}\n  containers: [{{name: a, image: busybox}}, {{name: b, image: busybox}}]\n"
        ))
    }

    #[test]
    fn phase_per_restart_policy_as_get_phase() {
        let t = "2026-01-01T00:00:00Z";
        let both_exited = |ca: i32, cb: i32| {
            vec![
                exited("a", "a1", t, t, ca, 0),
                exited("b", "b1", t, t, cb, 0),
            ]
        };
        for (policy, codes, want) in [
            ("Always", (0, 0), "Running"),
            ("Always", (1, 0), "Running"),
            ("OnFailure", (0, 0), "Succeeded"),
            ("OnFailure", (1, 0), "Running"),
            ("Never", (0, 0), "Succeeded"),
            ("Never", (0, 2), "Failed"),
        ] {
            let p = simple(policy);
            let mut run = Run::new(&p, t);
            run.containers = both_exited(codes.0, codes.1);
            assert_eq!(
                run.status().phase.as_deref(),
                Some(want),
                "{policy} {codes:?}"
            );
        }
        // One running, one exited: Running.
        let p = simple("Never");
        let mut run = Run::new(&p, t);
        run.containers = vec![running("a", "a1", t, t, 0), exited("b", "b1", t, t, 1, 0)];
        assert_eq!(run.status().phase.as_deref(), Some("Running"));
        // One not started yet: Pending.
        run.containers = vec![running("a", "a1", t, t, 0)];
        assert_eq!(run.status().phase.as_deref(), Some("Pending"));
    }

    #[test]
    fn terminal_phase_is_sticky() {
        let t = "2026-01-01T00:00:00Z";
        let mut p = simple("Always");
        p.status = Some(PodStatus {
            phase: Some("Succeeded".into()),
            ..Default::default()
        });
        let mut run = Run::new(&p, t);
        run.containers = vec![running("a", "a1", t, t, 0), running("b", "b1", t, t, 0)];
        assert_eq!(run.status().phase.as_deref(), Some("Succeeded"));
    }

    #[test]
    fn deleted_pod_gets_terminal_phase_when_done() {
        let t = "2026-01-01T00:00:00Z";
        let p = simple("Always");
        let mut run = Run::new(&p, t);
        run.containers = vec![
            exited("a", "a1", t, t, 0, 0),
            exited("b", "b1", t, t, 143, 0),
        ];
        assert_eq!(
            run.status().phase.as_deref(),
            Some("Running"),
            "Always restarts"
        );
        run.terminal = true;
        assert_eq!(run.status().phase.as_deref(), Some("Failed"));
        run.containers = vec![exited("a", "a1", t, t, 0, 0), exited("b", "b1", t, t, 0, 0)];
        assert_eq!(run.status().phase.as_deref(), Some("Succeeded"));
    }

    #[test]
    fn crash_loop_back_off_waiting_with_last_state_and_restart_count() {
        let p = simple("Always");
        let mut run = Run::new(&p, "2026-01-01T00:02:00Z");
        run.containers = vec![
            running("a", "a1", "2026-01-01T00:00:00Z", "2026-01-01T00:00:01Z", 0),
            exited(
                "b",
                "b1",
                "2026-01-01T00:00:00Z",
                "2026-01-01T00:00:05Z",
                1,
                0,
            ),
            exited(
                "b",
                "b2",
                "2026-01-01T00:00:06Z",
                "2026-01-01T00:00:09Z",
                2,
                1,
            ),
        ];
        run.failures.insert(
            "b".into(),
            Waiting::new(
                "CrashLoopBackOff",
                "back-off 10s restarting failed container=b pod=p_default(u1)",
            ),
        );
        let s = run.status();
        let b = cs(&s, "b");
        let w = b.state.as_ref().unwrap().waiting.as_ref().unwrap();
        assert_eq!(w.reason.as_deref(), Some("CrashLoopBackOff"));
        assert_eq!(
            w.message.as_deref(),
            Some("back-off 10s restarting failed container=b pod=p_default(u1)")
        );
        assert_eq!(b.restart_count, 1);
        let last = b.last_state.as_ref().unwrap().terminated.as_ref().unwrap();
        assert_eq!(last.exit_code, 2, "the latest instance's exit is lastState");
        assert_eq!(last.reason.as_deref(), Some("Error"));
        assert_eq!(last.container_id.as_deref(), Some("armlet://b2"));
        assert!(!b.ready);
        // Waiting with a previous termination counts as stopped: Running.
        assert_eq!(s.phase.as_deref(), Some("Running"));
        let ready = cond(&s, "Ready");
        assert_eq!(
            ready.message.as_deref(),
            Some("containers with unready status: [b]")
        );
        // Statuses sorted by name.
        let names: Vec<_> = s
            .container_statuses
            .unwrap()
            .into_iter()
            .map(|c| c.name)
            .collect();
        assert_eq!(names, ["a", "b"]);
    }

    #[test]
    fn running_container_shows_previous_instance_as_last_state() {
        let p = simple("Always");
        let mut run = Run::new(&p, "2026-01-01T00:02:00Z");
        run.containers = vec![
            exited(
                "a",
                "a1",
                "2026-01-01T00:00:00Z",
                "2026-01-01T00:00:05Z",
                137,
                0,
            ),
            running("a", "a2", "2026-01-01T00:00:20Z", "2026-01-01T00:00:21Z", 1),
        ];
        run.containers[0].exit.as_mut().unwrap().oom_killed = true;
        let s = run.status();
        let a = cs(&s, "a");
        assert!(a.state.as_ref().unwrap().running.is_some());
        assert_eq!(a.restart_count, 1);
        let last = a.last_state.as_ref().unwrap().terminated.as_ref().unwrap();
        assert_eq!(last.reason.as_deref(), Some("OOMKilled"));
        assert_eq!(last.exit_code, 137);
        assert_eq!(last.finished_at, Some(Time(at("2026-01-01T00:00:05Z"))));
    }

    #[test]
    fn start_failures_show_as_waiting_reasons() {
        let p = simple("Always");
        let mut run = Run::new(&p, "2026-01-01T00:00:00Z");
        run.failures.insert(
            "a".into(),
            Waiting::new("CreateContainerConfigError", "configmap \"x\" not found"),
        );
        run.failures.insert(
            "b".into(),
            Waiting::new("ErrImagePull", "failed to pull image"),
        );
        let s = run.status();
        let wa = cs(&s, "a").state.as_ref().unwrap().waiting.clone().unwrap();
        assert_eq!(wa.reason.as_deref(), Some("CreateContainerConfigError"));
        assert_eq!(wa.message.as_deref(), Some("configmap \"x\" not found"));
        let wb = cs(&s, "b").state.as_ref().unwrap().waiting.clone().unwrap();
        assert_eq!(wb.reason.as_deref(), Some("ErrImagePull"));
        assert_eq!(s.phase.as_deref(), Some("Pending"));
        // A running container is not overridden by a stale failure.
        let mut run = Run::new(&p, "2026-01-01T00:00:00Z");
        run.containers = vec![running(
            "a",
            "a1",
            "2026-01-01T00:00:00Z",
            "2026-01-01T00:00:00Z",
            0,
        )];
        run.failures
            .insert("a".into(), Waiting::new("ErrImagePull", "x"));
        assert!(
            cs(&run.status(), "a")
                .state
                .as_ref()
                .unwrap()
                .running
                .is_some()
        );
    }

    #[test]
    fn never_policy_does_not_show_restart_failures_for_exited() {
        let p = simple("Never");
        let t = "2026-01-01T00:00:00Z";
        let mut run = Run::new(&p, t);
        run.containers = vec![exited("a", "a1", t, t, 1, 0)];
        run.failures
            .insert("a".into(), Waiting::new("CrashLoopBackOff", "x"));
        let s = run.status();
        let a = cs(&s, "a");
        assert_eq!(
            a.state
                .as_ref()
                .unwrap()
                .terminated
                .as_ref()
                .unwrap()
                .exit_code,
            1
        );
    }

    const WITH_INIT: &str = r#"
metadata: {name: p, namespace: default, uid: u1}
spec:
  restartPolicy: Always
  initContainers: [{name: init1, image: busybox}, {name: init2, image: busybox}]
  containers: [{name: app, image: busybox}]
"#;

    #[test]
    fn init_containers_pod_initializing_and_conditions() {
        let p = pod(WITH_INIT);
        let t = "2026-01-01T00:00:00Z";
        let mut run = Run::new(&p, t);
        run.containers = vec![running("init1", "i1", t, t, 0)];
        let s = run.status();
        assert_eq!(s.phase.as_deref(), Some("Pending"));
        let app = cs(&s, "app").state.clone().unwrap().waiting.unwrap();
        assert_eq!(app.reason.as_deref(), Some("PodInitializing"));
        let init2 = cs(&s, "init2").state.clone().unwrap().waiting.unwrap();
        assert_eq!(init2.reason.as_deref(), Some("PodInitializing"));
        let i = cond(&s, "Initialized");
        assert_eq!(i.status, "False");
        assert_eq!(i.reason.as_deref(), Some("ContainersNotInitialized"));
        assert_eq!(
            i.message.as_deref(),
            Some("containers with incomplete status: [init1 init2]")
        );
        // Init statuses keep spec order.
        let names: Vec<_> = s
            .init_container_statuses
            .unwrap()
            .into_iter()
            .map(|c| c.name)
            .collect();
        assert_eq!(names, ["init1", "init2"]);

        run.containers = vec![
            exited("init1", "i1", t, t, 0, 0),
            exited("init2", "i2", t, t, 0, 0),
            running("app", "a1", t, t, 0),
        ];
        let s = run.status();
        assert_eq!(s.phase.as_deref(), Some("Running"));
        assert_eq!(cond(&s, "Initialized").status, "True");
        assert!(cs(&s, "init1").ready);
        assert_eq!(cond(&s, "Ready").status, "True");
    }

    #[test]
    fn failed_init_container_with_never_fails_the_pod() {
        let mut p = pod(WITH_INIT);
        p.spec.as_mut().unwrap().restart_policy = Some("Never".into());
        let t = "2026-01-01T00:00:00Z";
        let mut run = Run::new(&p, t);
        run.containers = vec![exited("init1", "i1", t, t, 3, 0)];
        assert_eq!(run.status().phase.as_deref(), Some("Failed"));
        // With Always it is retried: Pending, with CrashLoopBackOff shown.
        let p = pod(WITH_INIT);
        let mut run = Run::new(&p, t);
        run.containers = vec![exited("init1", "i1", t, t, 3, 0)];
        run.failures
            .insert("init1".into(), Waiting::new("CrashLoopBackOff", "back-off"));
        let s = run.status();
        assert_eq!(s.phase.as_deref(), Some("Pending"));
        let i = cs(&s, "init1");
        assert_eq!(
            i.state
                .as_ref()
                .unwrap()
                .waiting
                .as_ref()
                .unwrap()
                .reason
                .as_deref(),
            Some("CrashLoopBackOff")
        );
        assert_eq!(
            i.last_state
                .as_ref()
                .unwrap()
                .terminated
                .as_ref()
                .unwrap()
                .exit_code,
            3
        );
    }

    #[test]
    fn readiness_and_startup_probes_gate_ready_and_started() {
        let p = pod(r#"
metadata: {name: p, namespace: default, uid: u1}
spec:
  containers:
  - name: a
    image: busybox
    readinessProbe: {exec: {command: ["true"]}}
    startupProbe: {exec: {command: ["true"]}}
"#);
        let t = "2026-01-01T00:00:00Z";
        let mut run = Run::new(&p, t);
        run.containers = vec![running("a", "a1", t, t, 0)];
        let s = run.status();
        assert_eq!(
            cs(&s, "a").started,
            Some(false),
            "startup probe not passed yet"
        );
        assert!(!cs(&s, "a").ready);
        run.probes.startup.insert("a1".into(), true);
        let s = run.status();
        assert_eq!(cs(&s, "a").started, Some(true));
        assert!(!cs(&s, "a").ready, "no readiness result yet");
        run.probes.readiness.insert("a1".into(), true);
        assert!(cs(&run.status(), "a").ready);
        // Results of another instance do not count.
        run.probes.readiness.clear();
        run.probes.readiness.insert("old-instance".into(), true);
        assert!(!cs(&run.status(), "a").ready);
    }

    #[test]
    fn readiness_gates_and_foreign_conditions() {
        let mut p = pod(r#"
metadata: {name: p, namespace: default, uid: u1}
spec:
  readinessGates: [{conditionType: "example.com/lb"}]
  containers: [{name: a, image: busybox}]
"#);
        let t = "2026-01-01T00:00:00Z";
        let mut run = Run::new(&p, t);
        run.containers = vec![running("a", "a1", t, t, 0)];
        let s = run.status();
        let r = cond(&s, "Ready");
        assert_eq!(r.reason.as_deref(), Some("ReadinessGatesNotReady"));
        assert_eq!(
            r.message.as_deref(),
            Some(
                "corresponding condition of pod readiness gate \"example.com/lb\" does not exist."
            )
        );
        assert_eq!(cond(&s, "ContainersReady").status, "True");
        p.status = Some(PodStatus {
            conditions: Some(vec![PodCondition {
                type_: "example.com/lb".into(),
                status: "False".into(),
                ..Default::default()
            }]),
            ..Default::default()
        });
        let mut run = Run::new(&p, t);
        run.containers = vec![running("a", "a1", t, t, 0)];
        let s = run.status();
        assert_eq!(
            cond(&s, "Ready").message.as_deref(),
            Some("the status of pod readiness gate \"example.com/lb\" is not \"True\", but False")
        );
        assert_eq!(cond(&s, "example.com/lb").status, "False", "kept as is");
        p.status.as_mut().unwrap().conditions.as_mut().unwrap()[0].status = "True".into();
        let mut run = Run::new(&p, t);
        run.containers = vec![running("a", "a1", t, t, 0)];
        assert_eq!(cond(&run.status(), "Ready").status, "True");
    }

    #[test]
    fn succeeded_pods_report_pod_completed() {
        let p = simple("Never");
        let t = "2026-01-01T00:00:00Z";
        let mut run = Run::new(&p, t);
        run.containers = vec![exited("a", "a1", t, t, 0, 0), exited("b", "b1", t, t, 0, 0)];
        let s = run.status();
        assert_eq!(s.phase.as_deref(), Some("Succeeded"));
        let r = cond(&s, "Ready");
        assert_eq!(
            (r.status.as_str(), r.reason.as_deref()),
            ("False", Some("PodCompleted"))
        );
        let i = cond(&s, "Initialized");
        assert_eq!(
            (i.status.as_str(), i.reason.as_deref()),
            ("True", Some("PodCompleted"))
        );
        let t = cs(&s, "a").state.clone().unwrap().terminated.unwrap();
        assert_eq!(t.reason.as_deref(), Some("Completed"));
    }

    #[test]
    fn vanished_running_container_of_deleted_pod_is_unknown_not_pending() {
        let mut p = simple("Always");
        p.metadata.deletion_timestamp = Some(Time(at("2026-01-01T00:00:00Z")));
        p.status = Some(PodStatus {
            container_statuses: Some(vec![ContainerStatus {
                name: "a".into(),
                state: Some(ContainerState {
                    running: Some(ContainerStateRunning::default()),
                    ..Default::default()
                }),
                ..Default::default()
            }]),
            ..Default::default()
        });
        let run = Run::new(&p, "2026-01-01T00:00:10Z");
        let s = run.status();
        let last = cs(&s, "a").last_state.clone().unwrap().terminated.unwrap();
        assert_eq!(last.reason.as_deref(), Some("ContainerStatusUnknown"));
        assert_eq!(last.exit_code, 137);
    }

    #[test]
    fn host_network_pods_report_node_ips_and_qos_classes() {
        let p = pod(r#"
metadata: {name: p, namespace: default, uid: u1}
spec:
  hostNetwork: true
  containers:
  - {name: a, image: busybox, resources: {limits: {cpu: "1", memory: 1Gi}, requests: {cpu: 1000m, memory: 1024Mi}}}
"#);
        let host = vec!["198.18.0.2".to_owned()];
        let s = pod_status(&StatusInput {
            pod: &p,
            host_ips: &host,
            pod_ips: &[],
            containers: &[],
            start_failures: &BTreeMap::new(),
            probes: &ProbeResults::default(),
            terminal: false,
            now: at("2026-01-01T00:00:00Z"),
        });
        assert_eq!(s.pod_ip.as_deref(), Some("198.18.0.2"));
        assert_eq!(s.qos_class.as_deref(), Some("Guaranteed"));
        assert_eq!(s.start_time, Some(Time(at("2026-01-01T00:00:00Z"))));

        let burstable =
            pod("spec:\n  containers: [{name: a, resources: {requests: {memory: 1Mi}}}]\n");
        assert_eq!(qos_class(&burstable), "Burstable");
        let partial = pod("spec:\n  containers: [{name: a, resources: {limits: {cpu: '1'}}}]\n");
        assert_eq!(qos_class(&partial), "Burstable");
        let limits_only =
            pod("spec:\n  containers: [{name: a, resources: {limits: {cpu: '1', memory: 1Gi}}}]\n");
        assert_eq!(
            qos_class(&limits_only),
            "Guaranteed",
            "requests default to limits"
        );
        let unequal = pod(
            "spec:\n  containers: [{name: a, resources: {limits: {cpu: '1', memory: 1Gi}, requests: {cpu: 500m, memory: 1Gi}}}]\n",
        );
        assert_eq!(qos_class(&unequal), "Burstable");
        let best = pod("spec:\n  containers: [{name: a, resources: {requests: {cpu: '0'}}}]\n");
        assert_eq!(qos_class(&best), "BestEffort");
        let garbage = pod("spec:\n  containers: [{name: a, resources: {requests: {cpu: lots}}}]\n");
        assert_eq!(
            qos_class(&garbage),
            "BestEffort",
            "no panic on bad quantities"
        );
        assert_eq!(qos_class(&Pod::default()), "BestEffort");
    }

    #[test]
    fn malformed_pods_do_not_panic() {
        let p = Pod::default();
        let s = Run::new(&p, "2026-01-01T00:00:00Z").status();
        assert_eq!(s.phase.as_deref(), Some("Pending"));
        let mut run = Run::new(&p, "2026-01-01T00:00:00Z");
        run.containers = vec![running(
            "ghost",
            "g",
            "2026-01-01T00:00:00Z",
            "2026-01-01T00:00:00Z",
            0,
        )];
        assert_eq!(run.status().container_statuses, Some(vec![]));
    }

    #[test]
    fn adapter_from_runtime_container_info() {
        let ts = |s: &str| Timestamp::parse_rfc3339(s).unwrap();
        let info = ContainerInfo {
            id: "abc".into(),
            state: RuntimeState::Exited,
            pid: 0,
            bundle: PathBuf::from("/b"),
            log_path: PathBuf::from("/l"),
            created_at: ts("2026-01-01T00:00:00Z"),
            started_at: None,
            exit: Some(ExitStatus {
                exit_code: 143,
                signal: Some(15),
                oom_killed: false,
                started_at: ts("2026-01-01T00:00:01Z"),
                finished_at: ts("2026-01-01T00:00:09.5Z"),
            }),
            labels: BTreeMap::from([
                (LABEL_CONTAINER_NAME.to_owned(), "web".to_owned()),
                (LABEL_RESTART_COUNT.to_owned(), "3".to_owned()),
            ]),
            cgroup: PathBuf::new(),
        };
        let o = ObservedContainer::from_runtime(&info, "docker.io/library/nginx:1.25", "sha256:x")
            .unwrap();
        assert_eq!(o.name, "web");
        assert_eq!(o.restart_count, 3);
        assert_eq!(o.state, RunState::Exited);
        assert_eq!(o.started_at, Some(at("2026-01-01T00:00:01Z")));
        let e = o.exit.as_ref().unwrap();
        assert_eq!(
            (e.exit_code, e.signal, e.reason()),
            (143, Some(15), "Error")
        );
        assert_eq!(o.container_id(), "armlet://abc");
        // Termination state in the API: seconds only.
        let st = terminated_state(&o).terminated.unwrap();
        assert_eq!(st.finished_at, Some(Time(at("2026-01-01T00:00:09Z"))));
        assert_eq!(st.signal, Some(15));

        let mut bad = info.clone();
        bad.labels.remove(LABEL_CONTAINER_NAME);
        assert!(matches!(
            ObservedContainer::from_runtime(&bad, "", ""),
            Err(StatusError::MissingLabel { .. })
        ));
        let mut bad = info;
        bad.labels.insert(LABEL_RESTART_COUNT.into(), "-1".into());
        assert!(matches!(
            ObservedContainer::from_runtime(&bad, "", ""),
            Err(StatusError::BadLabel { .. })
        ));
    }

    #[test]
    fn termination_messages_from_file_or_logs() {
        assert_eq!(
            termination_message(Some(b"bye"), None, 1, Some("log")),
            "bye"
        );
        assert_eq!(termination_message(None, None, 1, Some("log")), "");
        assert_eq!(
            termination_message(Some(b""), Some("FallbackToLogsOnError"), 1, Some("a\nb\n")),
            "a\nb"
        );
        assert_eq!(
            termination_message(None, Some("FallbackToLogsOnError"), 0, Some("a")),
            "",
            "only failed containers fall back to logs"
        );
        let big = vec![b'x'; 10_000];
        assert_eq!(termination_message(Some(&big), None, 0, None).len(), 4096);
        let many = (0..200).fold(String::new(), |out, i| out + &format!("line {i}\n"));
        let m = termination_message(None, Some("FallbackToLogsOnError"), 2, Some(&many));
        assert!(
            m.starts_with("line 120\n") && m.ends_with("line 199"),
            "{m}"
        );
        let long: String = "y".repeat(5000);
        let m = termination_message(None, Some("FallbackToLogsOnError"), 2, Some(&long));
        assert_eq!(m.len(), 2048);
    }
}
