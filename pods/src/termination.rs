//! Stopping a container as the kubelet and containerd do it
//! (`kuberuntime_container.go` killContainer, CRI StopContainer):
//!
//! 1. the grace period: the pod's `deletionGracePeriodSeconds`, else its
//!    `terminationGracePeriodSeconds` (a liveness or startup probe's own
//!    `terminationGracePeriodSeconds` for kills it caused), else 2 s;
//! 2. the `preStop` hook, if any and the grace period is positive, for at most
//!    the grace period; its duration (whole seconds) is taken off the grace;
//! 3. at least 2 s are left for the container (`minimumGracePeriodInSeconds`),
//!    unless an override (eviction, force) says otherwise;
//! 4. the stop signal (the image's `StopSignal`, else SIGTERM) — skipped when
//!    the grace is 0 — then SIGKILL once the grace has passed.
//!
//! [`ContainerStop`] is a state machine the agent polls with the current
//! time; it says what to do next and is told what happened.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Pod};

use crate::probes::{Handler, ProbeError, lifecycle_handler};

/// Why a stop could not be planned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TerminationError {
    /// The preStop hook is malformed; the kubelet records `FailedPreStopHook`
    /// and stops the container anyway (see [`ContainerStop::for_container`]).
    #[error("invalid preStop hook: {0}")]
    Hook(#[from] ProbeError),
}

/// The kubelet's minimum grace period after a preStop hook.
pub const MINIMUM_GRACE_PERIOD: i64 = 2;

/// SIGKILL's number.
const SIGKILL: i32 = 9;

/// Why a container is being stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillReason {
    /// The pod is being deleted, evicted or its spec changed.
    Stop,
    /// Its liveness probe failed.
    LivenessProbe,
    /// Its startup probe failed.
    StartupProbe,
}

/// The grace period, in seconds, before the preStop hook runs (step 1).
pub fn grace_period(pod: &Pod, container: &Container, reason: KillReason) -> i64 {
    if let Some(g) = pod.metadata.deletion_grace_period_seconds {
        return g.max(0);
    }
    let Some(g) = pod
        .spec
        .as_ref()
        .and_then(|s| s.termination_grace_period_seconds)
    else {
        return MINIMUM_GRACE_PERIOD;
    };
    let probe = match reason {
        KillReason::LivenessProbe => container.liveness_probe.as_ref(),
        KillReason::StartupProbe => container.startup_probe.as_ref(),
        KillReason::Stop => None,
    };
    probe
        .and_then(|p| p.termination_grace_period_seconds)
        .unwrap_or(g)
        .max(0)
}

/// What the agent should do next for a stopping container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopStep {
    /// Start the preStop hook now (exec in the container, HTTP GET, or
    /// sleep), then report [`ContainerStop::pre_stop_finished`]; give up on it
    /// at the deadline.
    RunPreStop {
        /// The hook.
        handler: Handler,
        /// When to stop waiting for it.
        deadline: Instant,
    },
    /// Send this signal to the container now.
    Signal(i32),
    /// Nothing to do before `until` (or before the container exits, when
    /// `None`); poll again then, or on exit.
    Wait {
        /// When to poll again.
        until: Option<Instant>,
    },
    /// The container has exited: done.
    Done,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    PreStop(Handler),
    PreStopRunning { started: Instant, deadline: Instant },
    Signal,
    Grace { deadline: Instant },
    Killed,
    Done,
}

/// Stopping one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerStop {
    state: State,
    grace: i64,
    override_grace: Option<i64>,
    stop_signal: i32,
}

impl ContainerStop {
    /// A stop with `grace` seconds (see [`grace_period`]), an optional preStop
    /// hook, the container's stop signal and an optional override of the
    /// grace left after the hook.
    pub fn new(
        grace: i64,
        pre_stop: Option<Handler>,
        stop_signal: i32,
        override_grace: Option<i64>,
    ) -> Self {
        let grace = grace.max(0);
        let state = match pre_stop {
            Some(h) if grace > 0 => State::PreStop(h),
            _ => State::Signal,
        };
        Self {
            state,
            grace,
            override_grace,
            stop_signal,
        }
        .settle_grace_if_no_hook()
    }

    /// The stop of `container` of `pod` for `reason`. A malformed preStop hook
    /// is skipped (the kubelet logs `FailedPreStopHook` and goes on) and
    /// returned as an error to report beside the stop.
    pub fn for_container(
        pod: &Pod,
        container: &Container,
        reason: KillReason,
        pod_ip: Option<&str>,
        stop_signal: i32,
        override_grace: Option<i64>,
    ) -> (Self, Option<TerminationError>) {
        let grace = grace_period(pod, container, reason);
        let hook = container
            .lifecycle
            .as_ref()
            .and_then(|l| l.pre_stop.as_ref())
            .map(|h| lifecycle_handler(h, container, pod_ip));
        let (handler, error) = match hook {
            None => (None, None),
            Some(Ok(h)) => (Some(h), None),
            Some(Err(e)) => (None, Some(TerminationError::Hook(e))),
        };
        (
            Self::new(grace, handler, stop_signal, override_grace),
            error,
        )
    }

    /// Without a hook, the grace left is decided at once.
    fn settle_grace_if_no_hook(mut self) -> Self {
        if self.state == State::Signal {
            self.grace = self.final_grace(self.grace);
        }
        self
    }

    /// Steps 3: the minimum, then the override.
    fn final_grace(&self, left: i64) -> i64 {
        let g = left.max(MINIMUM_GRACE_PERIOD);
        self.override_grace.map_or(g, |o| o.max(0))
    }

    /// The grace period the container gets after the hook (once known).
    pub fn grace(&self) -> i64 {
        self.grace
    }

    /// What to do at `now`. Call again after doing it, when the wait ends, and
    /// after reporting events.
    pub fn poll(&mut self, now: Instant) -> StopStep {
        loop {
            match &self.state {
                State::PreStop(h) => {
                    let handler = h.clone();
                    let deadline = after(now, self.grace);
                    self.state = State::PreStopRunning {
                        started: now,
                        deadline,
                    };
                    return StopStep::RunPreStop { handler, deadline };
                }
                State::PreStopRunning { deadline, .. } => {
                    if now < *deadline {
                        return StopStep::Wait {
                            until: Some(*deadline),
                        };
                    }
                    tracing::debug!("preStop hook ran out of the grace period");
                    self.pre_stop_finished(now);
                }
                State::Signal => {
                    if self.grace == 0 {
                        // StopContainer with timeout 0: straight to SIGKILL.
                        self.state = State::Killed;
                        return StopStep::Signal(SIGKILL);
                    }
                    self.state = State::Grace {
                        deadline: after(now, self.grace),
                    };
                    return StopStep::Signal(self.stop_signal);
                }
                State::Grace { deadline } => {
                    if now < *deadline {
                        return StopStep::Wait {
                            until: Some(*deadline),
                        };
                    }
                    self.state = State::Killed;
                    return StopStep::Signal(SIGKILL);
                }
                State::Killed => return StopStep::Wait { until: None },
                State::Done => return StopStep::Done,
            }
        }
    }

    /// The preStop hook returned (or failed: the kubelet goes on either way).
    pub fn pre_stop_finished(&mut self, now: Instant) {
        if let State::PreStopRunning { started, .. } = self.state {
            // Whole seconds, as the kubelet counts the hook's time.
            let took =
                i64::try_from(now.saturating_duration_since(started).as_secs()).unwrap_or(i64::MAX);
            self.grace = self.final_grace(self.grace.saturating_sub(took).max(0));
            self.state = State::Signal;
        }
    }

    /// The container exited.
    pub fn exited(&mut self) {
        self.state = State::Done;
    }
}

/// `now` plus `secs` seconds; a grace period beyond what an `Instant` can
/// hold (pods are external input) waits "forever" instead of panicking.
fn after(now: Instant, secs: i64) -> Instant {
    let d = Duration::from_secs(u64::try_from(secs).unwrap_or(0));
    now.checked_add(d)
        .or_else(|| now.checked_add(Duration::from_secs(100 * 365 * 86_400)))
        .unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{object, pod};

    fn p(yaml: &str) -> Pod {
        pod(yaml)
    }

    #[test]
    fn grace_period_sources_in_kubelet_order() {
        let c: Container = object(
            "name: c\nlivenessProbe: {exec: {command: [x]}, terminationGracePeriodSeconds: 5}",
        );
        let mut pod =
            p("metadata: {name: p}\nspec: {terminationGracePeriodSeconds: 30, containers: []}");
        assert_eq!(grace_period(&pod, &c, KillReason::Stop), 30);
        assert_eq!(
            grace_period(&pod, &c, KillReason::LivenessProbe),
            5,
            "probe-level grace"
        );
        assert_eq!(grace_period(&pod, &c, KillReason::StartupProbe), 30);
        pod.metadata.deletion_grace_period_seconds = Some(10);
        assert_eq!(
            grace_period(&pod, &c, KillReason::LivenessProbe),
            10,
            "deletion grace wins"
        );
        let bare = p("metadata: {name: p}\nspec: {containers: []}");
        assert_eq!(grace_period(&bare, &c, KillReason::Stop), 2);
        pod.metadata.deletion_grace_period_seconds = Some(-5);
        assert_eq!(
            grace_period(&pod, &c, KillReason::Stop),
            0,
            "negative clamped"
        );
    }

    #[test]
    fn sigterm_then_sigkill_after_the_grace_period() {
        let t0 = Instant::now();
        let mut s = ContainerStop::new(30, None, 15, None);
        assert_eq!(s.poll(t0), StopStep::Signal(15));
        let deadline = t0 + Duration::from_secs(30);
        assert_eq!(
            s.poll(t0 + Duration::from_secs(1)),
            StopStep::Wait {
                until: Some(deadline)
            }
        );
        assert_eq!(s.poll(deadline), StopStep::Signal(9));
        assert_eq!(s.poll(deadline), StopStep::Wait { until: None });
        s.exited();
        assert_eq!(s.poll(deadline), StopStep::Done);
    }

    #[test]
    fn exit_within_grace_needs_no_kill() {
        let t0 = Instant::now();
        let mut s = ContainerStop::new(30, None, 3, None);
        assert_eq!(s.poll(t0), StopStep::Signal(3), "the image's StopSignal");
        s.exited();
        assert_eq!(s.poll(t0 + Duration::from_secs(60)), StopStep::Done);
    }

    #[test]
    fn pre_stop_time_is_taken_off_the_grace_with_a_two_second_floor() {
        let t0 = Instant::now();
        let hook = Handler::Exec(vec!["nginx".into(), "-s".into(), "quit".into()]);
        let mut s = ContainerStop::new(30, Some(hook.clone()), 15, None);
        assert_eq!(
            s.poll(t0),
            StopStep::RunPreStop {
                handler: hook.clone(),
                deadline: t0 + Duration::from_secs(30)
            }
        );
        assert_eq!(
            s.poll(t0 + Duration::from_secs(1)),
            StopStep::Wait {
                until: Some(t0 + Duration::from_secs(30))
            }
        );
        s.pre_stop_finished(t0 + Duration::from_millis(10_900));
        assert_eq!(s.grace(), 20, "10.9 s counts as 10");
        let t1 = t0 + Duration::from_secs(11);
        assert_eq!(s.poll(t1), StopStep::Signal(15));
        assert_eq!(s.poll(t1 + Duration::from_secs(20)), StopStep::Signal(9));

        // A hook that overruns: the grace is used up, the floor leaves 2 s.
        let mut s = ContainerStop::new(5, Some(hook.clone()), 15, None);
        s.poll(t0);
        assert_eq!(s.poll(t0 + Duration::from_secs(5)), StopStep::Signal(15));
        assert_eq!(s.grace(), 2);
        assert_eq!(
            s.poll(t0 + Duration::from_secs(6)),
            StopStep::Wait {
                until: Some(t0 + Duration::from_secs(7))
            }
        );
        assert_eq!(s.poll(t0 + Duration::from_secs(7)), StopStep::Signal(9));
    }

    #[test]
    fn zero_grace_skips_the_hook_and_override_applies_last() {
        let t0 = Instant::now();
        let hook = Handler::Exec(vec!["x".into()]);
        // Grace 0 (deletion with 0): no hook, but the 2 s floor still applies.
        let mut s = ContainerStop::new(0, Some(hook.clone()), 15, None);
        assert_eq!(s.poll(t0), StopStep::Signal(15));
        assert_eq!(s.grace(), 2);
        // An override of 0 (force): SIGKILL at once, no stop signal.
        let mut s = ContainerStop::new(30, None, 15, Some(0));
        assert_eq!(s.poll(t0), StopStep::Signal(9));
        assert_eq!(s.poll(t0), StopStep::Wait { until: None });
        // An override after the hook.
        let mut s = ContainerStop::new(30, Some(hook), 15, Some(1));
        s.poll(t0);
        s.pre_stop_finished(t0);
        assert_eq!(s.grace(), 1, "the override wins over the floor");
    }

    #[test]
    fn absurd_grace_periods_do_not_panic() {
        let t0 = Instant::now();
        let mut s = ContainerStop::new(i64::MAX, Some(Handler::Exec(vec!["x".into()])), 15, None);
        assert!(matches!(s.poll(t0), StopStep::RunPreStop { .. }));
        s.pre_stop_finished(t0 + Duration::from_secs(3));
        assert_eq!(s.poll(t0), StopStep::Signal(15));
        assert!(matches!(s.poll(t0), StopStep::Wait { until: Some(_) }));
    }

    #[test]
    fn for_container_reads_the_spec() {
        let pod = p(
            "metadata: {name: p}\nspec:\n  terminationGracePeriodSeconds: 45\n  containers:\n  - name: web\n    lifecycle: {preStop: {httpGet: {port: 8080, path: /drain}}}\n",
        );
        let c = &pod.spec.as_ref().unwrap().containers[0];
        let (mut s, err) =
            ContainerStop::for_container(&pod, c, KillReason::Stop, Some("10.42.0.9"), 15, None);
        assert!(err.is_none());
        match s.poll(Instant::now()) {
            StopStep::RunPreStop {
                handler: Handler::HttpGet(g),
                ..
            } => {
                assert_eq!(
                    (g.host.as_str(), g.port, g.path.as_str()),
                    ("10.42.0.9", 8080, "/drain")
                );
            }
            other => panic!("{other:?}"),
        }
        let bad = p(
            "metadata: {name: p}\nspec:\n  containers:\n  - name: web\n    lifecycle: {preStop: {httpGet: {port: nope}}}\n",
        );
        let c = &bad.spec.as_ref().unwrap().containers[0];
        let (mut s, err) =
            ContainerStop::for_container(&bad, c, KillReason::Stop, Some("10.42.0.9"), 15, None);
        assert!(err.unwrap().to_string().contains("port nope not found"));
        assert_eq!(
            s.poll(Instant::now()),
            StopStep::Signal(15),
            "stopped anyway"
        );
    }
}
