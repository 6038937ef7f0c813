//! Restart and image-pull back-off, as the kubelet does them
//! (`client-go/util/flowcontrol/backoff.go` with the kubelet's 10 s initial and
//! 300 s maximum delays).
//!
//! - Container restarts (`doBackOff`): keyed per pod and container spec. The
//!   first exit restarts at once; each later one waits 10 s, 20 s, 40 s, 80 s,
//!   160 s, then 300 s, counted from the exit's `finishedAt`, while the status
//!   says `CrashLoopBackOff`. A container that last exited more than 10 minutes
//!   (2 × max) after the previous back-off update starts again from 10 s.
//! - Image pulls (`EnsureImageExists`): keyed by pod UID and image; the first
//!   failure is `ErrImagePull`, attempts within the window `ImagePullBackOff`.
//!
//! Time comes from a [`Clock`], so tests (and the agent's simulations) can move it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::{Container, Pod};

use crate::status::Waiting;

/// Why a back-off input was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackoffError {
    /// An `imagePullPolicy` the API does not define.
    #[error("invalid imagePullPolicy {0:?}: must be Always, IfNotPresent or Never")]
    PullPolicy(String),
    /// The initial delay must be positive and at most the maximum.
    #[error("back-off delays must satisfy 0 < initial <= max")]
    Limits,
}

/// Wall-clock time, injectable. Wall time rather than monotonic because delays
/// are measured from container `finishedAt` timestamps, as the kubelet does.
pub trait Clock {
    /// The current time.
    fn now(&self) -> SystemTime;
}

/// The system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that moves only when told to.
#[derive(Debug)]
pub struct ManualClock(Mutex<SystemTime>);

impl ManualClock {
    /// A clock showing `at`.
    pub fn new(at: SystemTime) -> Self {
        Self(Mutex::new(at))
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let mut t = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *t += by;
    }

    /// Sets the clock to `at`.
    pub fn set(&self, at: SystemTime) {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = at;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl<C: Clock + ?Sized> Clock for &C {
    fn now(&self) -> SystemTime {
        (**self).now()
    }
}

impl<C: Clock + ?Sized> Clock for std::sync::Arc<C> {
    fn now(&self) -> SystemTime {
        (**self).now()
    }
}

/// The kubelet's initial back-off (`backOffPeriod`).
pub const INITIAL_BACKOFF: Duration = Duration::from_secs(10);
/// The kubelet's maximum back-off (`MaxContainerBackOff`).
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Copy)]
struct Entry {
    backoff: Duration,
    last_update: SystemTime,
}

/// Per-key exponential back-off (`flowcontrol.Backoff`, without jitter).
#[derive(Debug)]
pub struct Backoff<C: Clock = SystemClock> {
    clock: C,
    initial: Duration,
    max: Duration,
    entries: HashMap<String, Entry>,
}

/// `eventTime.Sub(lastUpdate) > 2*max`: the key has been quiet long enough to
/// start again from the initial delay.
fn has_expired(event_time: SystemTime, last_update: SystemTime, max: Duration) -> bool {
    event_time
        .duration_since(last_update)
        .is_ok_and(|d| d > max.saturating_mul(2))
}

impl<C: Clock> Backoff<C> {
    /// The kubelet's back-off: 10 s doubling to 300 s.
    pub fn new(clock: C) -> Self {
        Self {
            clock,
            initial: INITIAL_BACKOFF,
            max: MAX_BACKOFF,
            entries: HashMap::new(),
        }
    }

    /// A back-off with other delays.
    pub fn with_limits(clock: C, initial: Duration, max: Duration) -> Result<Self, BackoffError> {
        if initial.is_zero() || initial > max {
            return Err(BackoffError::Limits);
        }
        Ok(Self {
            clock,
            initial,
            max,
            entries: HashMap::new(),
        })
    }

    /// The clock.
    pub fn clock(&self) -> &C {
        &self.clock
    }

    /// The current delay for `key` (zero when it has none).
    pub fn get(&self, key: &str) -> Duration {
        self.entries.get(key).map_or(Duration::ZERO, |e| e.backoff)
    }

    /// Records an event for `key` that happened at `event_time`: the first one
    /// (or the first after a quiet period) sets the initial delay, later ones
    /// double it up to the maximum (`Backoff.Next`).
    pub fn next(&mut self, key: &str, event_time: SystemTime) {
        let now = self.clock.now();
        let (initial, max) = (self.initial, self.max);
        match self.entries.get_mut(key) {
            Some(e) if !has_expired(event_time, e.last_update, max) => {
                e.backoff = e.backoff.saturating_mul(2).min(max);
                e.last_update = now;
            }
            _ => {
                self.entries.insert(
                    key.to_owned(),
                    Entry {
                        backoff: initial,
                        last_update: now,
                    },
                );
            }
        }
    }

    /// Whether less than the delay has passed since `event_time`
    /// (`IsInBackOffSince`, used with a container's `finishedAt`).
    pub fn is_in_backoff_since(&self, key: &str, event_time: SystemTime) -> bool {
        let Some(e) = self.entries.get(key) else {
            return false;
        };
        if has_expired(event_time, e.last_update, self.max) {
            return false;
        }
        // An event in the future (clock skew) counts as just now.
        let since = self
            .clock
            .now()
            .duration_since(event_time)
            .unwrap_or(Duration::ZERO);
        since < e.backoff
    }

    /// Whether less than the delay has passed since the last update
    /// (`IsInBackOffSinceUpdate`, used for image pulls with `event_time` = now).
    pub fn is_in_backoff_since_update(&self, key: &str, event_time: SystemTime) -> bool {
        let Some(e) = self.entries.get(key) else {
            return false;
        };
        if has_expired(event_time, e.last_update, self.max) {
            return false;
        }
        event_time
            .duration_since(e.last_update)
            .map_or(true, |d| d < e.backoff)
    }

    /// Forgets `key`.
    pub fn reset(&mut self, key: &str) {
        self.entries.remove(key);
    }

    /// Drops keys not updated for 2 × max (`Backoff.GC`).
    pub fn gc(&mut self) {
        let now = self.clock.now();
        let max = self.max;
        self.entries.retain(|_, e| {
            !now.duration_since(e.last_update)
                .is_ok_and(|d| d > max.saturating_mul(2))
        });
    }

    /// How many keys are tracked.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Go's `time.Duration.String()` for the delays in messages (`10s`, `1m20s`,
/// `5m0s`).
pub fn go_duration(d: Duration) -> String {
    let total = d.as_nanos();
    if total == 0 {
        return "0s".to_owned();
    }
    if total < 1_000 {
        return format!("{total}ns");
    }
    if total < 1_000_000 {
        return format!("{}µs", trim_fraction(total, 1_000));
    }
    if total < 1_000_000_000 {
        return format!("{}ms", trim_fraction(total, 1_000_000));
    }
    let secs_total = d.as_secs();
    let (h, m) = (secs_total / 3600, (secs_total / 60) % 60);
    let s = trim_fraction(
        u128::from(secs_total % 60) * 1_000_000_000 + u128::from(d.subsec_nanos()),
        1_000_000_000,
    );
    if h > 0 {
        format!("{h}h{m}m{s}s")
    } else if m > 0 {
        format!("{m}m{s}s")
    } else {
        format!("{s}s")
    }
}

/// `value / unit` with the fraction's trailing zeros dropped.
fn trim_fraction(value: u128, unit: u128) -> String {
    let whole = value / unit;
    let frac = value % unit;
    if frac == 0 {
        return whole.to_string();
    }
    let width = unit.ilog10() as usize;
    let digits = format!("{frac:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

/// FNV-1a, 32 bits: the kubelet hashes container specs with FNV-32a
/// (`HashContainer`); the value only has to be stable for one spec.
fn fnv32a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

/// The hash of a container's spec, as hex (`HashContainer`): a changed spec
/// starts a fresh back-off.
pub fn container_hash(container: &Container) -> String {
    // Serialising a k8s-openapi struct cannot fail; an empty input would
    // still give a stable (if shared) key.
    let json = serde_json::to_vec(container).unwrap_or_default();
    format!("{:x}", fnv32a(&json))
}

/// The restart back-off key of a container (`getStableKey`:
/// `<pod>_<namespace>_<uid>_<container>_<hash>`).
pub fn container_key(pod: &Pod, container: &Container) -> String {
    let m = &pod.metadata;
    format!(
        "{}_{}_{}_{}_{}",
        m.name.as_deref().unwrap_or_default(),
        m.namespace.as_deref().unwrap_or_default(),
        m.uid.as_deref().unwrap_or_default(),
        container.name,
        container_hash(container)
    )
}

/// CrashLoopBackOff bookkeeping for every container of every pod.
#[derive(Debug)]
pub struct RestartBackoff<C: Clock = SystemClock> {
    backoff: Backoff<C>,
}

impl<C: Clock> RestartBackoff<C> {
    /// With the kubelet's delays.
    pub fn new(clock: C) -> Self {
        Self {
            backoff: Backoff::new(clock),
        }
    }

    /// With other delays (tests, simulations).
    pub fn with_backoff(backoff: Backoff<C>) -> Self {
        Self { backoff }
    }

    /// Decides whether an exited container may be restarted now
    /// (`doBackOff`), given its last instance's `finished_at`. `Ok` means
    /// restart now (and the delay for the next exit grows); `Err` is the
    /// `CrashLoopBackOff` waiting state to report until the window has passed.
    pub fn check(
        &mut self,
        pod: &Pod,
        container: &Container,
        finished_at: SystemTime,
    ) -> Result<(), Waiting> {
        let key = container_key(pod, container);
        if self.backoff.is_in_backoff_since(&key, finished_at) {
            let delay = self.backoff.get(&key);
            let message = format!(
                "back-off {} restarting failed container={} pod={}",
                go_duration(delay),
                container.name,
                crate::pod_display_name(pod)
            );
            tracing::debug!("{message}");
            return Err(Waiting::new("CrashLoopBackOff", message));
        }
        self.backoff.next(&key, finished_at);
        Ok(())
    }

    /// When the container may be restarted, if it is in back-off.
    pub fn retry_at(
        &self,
        pod: &Pod,
        container: &Container,
        finished_at: SystemTime,
    ) -> Option<SystemTime> {
        let key = container_key(pod, container);
        self.backoff
            .is_in_backoff_since(&key, finished_at)
            .then(|| finished_at + self.backoff.get(&key))
    }

    /// Drops entries unused for 10 minutes.
    pub fn gc(&mut self) {
        self.backoff.gc();
    }

    /// The underlying back-off.
    pub fn backoff(&self) -> &Backoff<C> {
        &self.backoff
    }
}

/// A container's `imagePullPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullPolicy {
    /// Pull on every container start.
    Always,
    /// Pull only when the image is missing.
    IfNotPresent,
    /// Never pull.
    Never,
}

impl PullPolicy {
    /// The container's policy, defaulted as the API server does when unset:
    /// `Always` for `:latest` or untagged images (without a digest), else
    /// `IfNotPresent`.
    pub fn of(container: &Container) -> Result<Self, BackoffError> {
        match container.image_pull_policy.as_deref() {
            Some("Always") => Ok(Self::Always),
            Some("IfNotPresent") => Ok(Self::IfNotPresent),
            Some("Never") => Ok(Self::Never),
            None | Some("") => Ok(Self::default_for(
                container.image.as_deref().unwrap_or_default(),
            )),
            Some(other) => Err(BackoffError::PullPolicy(other.to_owned())),
        }
    }

    /// The API server's default for `image`.
    pub fn default_for(image: &str) -> Self {
        if image.contains('@') {
            return Self::IfNotPresent;
        }
        // The tag is after the last ':' that follows the last '/' (a ':' before
        // it is a registry port).
        let last = image.rsplit('/').next().unwrap_or(image);
        match last.rsplit_once(':') {
            Some((_, "latest")) | None => Self::Always,
            Some(_) => Self::IfNotPresent,
        }
    }
}

/// What to do about a container's image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullDecision {
    /// Use the image on the node.
    UsePresent,
    /// Pull it (then report the outcome with [`ImagePullBackoff::failed`] or
    /// [`ImagePullBackoff::succeeded`]).
    Pull,
}

/// Image-pull decisions and back-off (`imageManager.EnsureImageExists`).
#[derive(Debug)]
pub struct ImagePullBackoff<C: Clock = SystemClock> {
    backoff: Backoff<C>,
}

fn pull_key(pod: &Pod, image: &str) -> String {
    format!(
        "{}_{image}",
        pod.metadata.uid.as_deref().unwrap_or_default()
    )
}

impl<C: Clock> ImagePullBackoff<C> {
    /// With the kubelet's delays.
    pub fn new(clock: C) -> Self {
        Self {
            backoff: Backoff::new(clock),
        }
    }

    /// With other delays.
    pub fn with_backoff(backoff: Backoff<C>) -> Self {
        Self { backoff }
    }

    /// Whether to pull `container`'s image given whether it is `present`, or the
    /// waiting state to report instead (`ErrImageNeverPull`,
    /// `ImagePullBackOff`).
    pub fn decide(
        &self,
        pod: &Pod,
        container: &Container,
        present: bool,
    ) -> Result<PullDecision, Waiting> {
        let image = container.image.as_deref().unwrap_or_default();
        let policy = PullPolicy::of(container)
            .map_err(|e| Waiting::new("InvalidImageName", e.to_string()))?;
        let pull = match policy {
            PullPolicy::Always => true,
            PullPolicy::IfNotPresent => !present,
            PullPolicy::Never => false,
        };
        if !pull {
            if present {
                return Ok(PullDecision::UsePresent);
            }
            return Err(Waiting::new(
                "ErrImageNeverPull",
                format!("Container image {image:?} is not present with pull policy of Never"),
            ));
        }
        let now = self.backoff.clock().now();
        if self
            .backoff
            .is_in_backoff_since_update(&pull_key(pod, image), now)
        {
            return Err(Waiting::new(
                "ImagePullBackOff",
                format!("Back-off pulling image {image:?}"),
            ));
        }
        Ok(PullDecision::Pull)
    }

    /// Records a failed pull of `container`'s image and returns the waiting
    /// state to report (`ErrImagePull` with the error's message).
    pub fn failed(&mut self, pod: &Pod, container: &Container, error: &str) -> Waiting {
        let image = container.image.as_deref().unwrap_or_default();
        let now = self.backoff.clock().now();
        self.backoff.next(&pull_key(pod, image), now);
        Waiting::new("ErrImagePull", error.to_owned())
    }

    /// Records a successful pull (and collects stale entries, as the kubelet does).
    pub fn succeeded(&mut self, pod: &Pod, container: &Container) {
        let image = container.image.as_deref().unwrap_or_default();
        self.backoff.reset(&pull_key(pod, image));
        self.backoff.gc();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::testutil::{object, pod};

    fn t0() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    fn busybox() -> (Pod, Container) {
        let p = pod(
            "metadata: {name: bb, namespace: default, uid: u-1}\nspec:\n  containers: [{name: c, image: busybox}]\n",
        );
        let c = p.spec.as_ref().unwrap().containers[0].clone();
        (p, c)
    }

    #[test]
    fn crash_loop_delays_double_from_10s_to_300s() {
        let clock = Arc::new(ManualClock::new(t0()));
        let mut rb = RestartBackoff::new(clock.clone());
        let (p, c) = busybox();
        // First exit: restart at once (no entry yet), delay set to 10 s.
        assert!(rb.check(&p, &c, clock.now()).is_ok());
        let mut seen = Vec::new();
        for _ in 0..8 {
            // The container runs 1 s and exits again.
            clock.advance(Duration::from_secs(1));
            let finished = clock.now();
            let waiting = rb.check(&p, &c, finished).unwrap_err();
            assert_eq!(waiting.reason, "CrashLoopBackOff");
            let delay = rb.backoff().get(&container_key(&p, &c));
            seen.push(delay.as_secs());
            assert_eq!(
                rb.retry_at(&p, &c, finished),
                Some(finished + delay),
                "restart allowed once the window from finishedAt has passed"
            );
            clock.advance(delay - Duration::from_millis(1));
            assert!(
                rb.check(&p, &c, finished).is_err(),
                "still inside the window"
            );
            clock.advance(Duration::from_millis(1));
            assert!(rb.check(&p, &c, finished).is_ok());
        }
        assert_eq!(seen, [10, 20, 40, 80, 160, 300, 300, 300]);
    }

    #[test]
    fn crash_loop_message_matches_kubelet() {
        let clock = Arc::new(ManualClock::new(t0()));
        let mut rb = RestartBackoff::new(clock.clone());
        let (p, c) = busybox();
        rb.check(&p, &c, clock.now()).unwrap();
        clock.advance(Duration::from_secs(20));
        rb.check(&p, &c, clock.now() - Duration::from_secs(11))
            .unwrap();
        let w = rb.check(&p, &c, clock.now()).unwrap_err();
        assert_eq!(
            w.message,
            "back-off 20s restarting failed container=c pod=bb_default(u-1)"
        );
    }

    #[test]
    fn back_off_resets_after_ten_minutes_of_running() {
        let clock = Arc::new(ManualClock::new(t0()));
        let mut rb = RestartBackoff::new(clock.clone());
        let (p, c) = busybox();
        let key = container_key(&p, &c);
        rb.check(&p, &c, clock.now()).unwrap();
        clock.advance(Duration::from_secs(30));
        rb.check(&p, &c, clock.now() - Duration::from_secs(15))
            .unwrap();
        assert_eq!(rb.backoff().get(&key), Duration::from_secs(20));
        // Runs stably for more than 2 × 300 s, then exits: starts over at 10 s.
        clock.advance(Duration::from_secs(601));
        let finished = clock.now();
        assert!(
            rb.check(&p, &c, finished).is_ok(),
            "no back-off after a long run"
        );
        assert_eq!(rb.backoff().get(&key), Duration::from_secs(10));
        // Exactly 10 minutes is not enough (strictly greater, as hasExpired):
        // the entry still holds and the exit is inside its window.
        clock.advance(Duration::from_secs(600));
        assert!(rb.check(&p, &c, clock.now()).is_err());
    }

    #[test]
    fn keys_are_per_container_and_spec() {
        let clock = Arc::new(ManualClock::new(t0()));
        let mut rb = RestartBackoff::new(clock.clone());
        let (p, c) = busybox();
        rb.check(&p, &c, clock.now()).unwrap();
        clock.advance(Duration::from_secs(1));
        assert!(rb.check(&p, &c, clock.now()).is_err());
        let mut changed = c.clone();
        changed.image = Some("busybox:1.36".into());
        assert!(
            rb.check(&p, &changed, clock.now()).is_ok(),
            "new spec, new key"
        );
        let other: Container = object("name: d\nimage: busybox");
        assert!(rb.check(&p, &other, clock.now()).is_ok());
    }

    #[test]
    fn gc_drops_quiet_entries() {
        let clock = Arc::new(ManualClock::new(t0()));
        let mut b = Backoff::new(clock.clone());
        b.next("a", clock.now());
        clock.advance(Duration::from_secs(300));
        b.next("b", clock.now());
        clock.advance(Duration::from_secs(301));
        b.gc();
        assert_eq!(b.len(), 1);
        assert_eq!(b.get("a"), Duration::ZERO);
        assert_eq!(b.get("b"), INITIAL_BACKOFF);
    }

    #[test]
    fn image_pull_back_off_after_err_image_pull() {
        let clock = Arc::new(ManualClock::new(t0()));
        let mut ib = ImagePullBackoff::new(clock.clone());
        let (p, c) = busybox();
        assert_eq!(ib.decide(&p, &c, false), Ok(PullDecision::Pull));
        let w = ib.failed(
            &p,
            &c,
            "failed to resolve reference \"docker.io/library/busybox:latest\"",
        );
        assert_eq!(w.reason, "ErrImagePull");
        let w = ib.decide(&p, &c, false).unwrap_err();
        assert_eq!(w.reason, "ImagePullBackOff");
        assert_eq!(w.message, "Back-off pulling image \"busybox\"");
        clock.advance(Duration::from_secs(10));
        assert_eq!(ib.decide(&p, &c, false), Ok(PullDecision::Pull));
        ib.failed(&p, &c, "again");
        clock.advance(Duration::from_secs(19));
        assert!(ib.decide(&p, &c, false).is_err(), "second delay is 20 s");
        clock.advance(Duration::from_secs(1));
        assert_eq!(ib.decide(&p, &c, false), Ok(PullDecision::Pull));
        ib.succeeded(&p, &c);
        assert_eq!(ib.decide(&p, &c, false), Ok(PullDecision::Pull));
    }

    #[test]
    fn pull_policies_as_should_pull_image() {
        let clock = ManualClock::new(t0());
        let ib = ImagePullBackoff::new(&clock);
        let (p, _) = busybox();
        let c = |image: &str, policy: Option<&str>| {
            let mut c: Container = object(&format!("name: c\nimage: {image}"));
            c.image_pull_policy = policy.map(str::to_owned);
            c
        };
        // The recorded busybox pod: imagePullPolicy Never, image imported.
        let never = c("docker.io/library/busybox:local", Some("Never"));
        assert_eq!(ib.decide(&p, &never, true), Ok(PullDecision::UsePresent));
        let w = ib.decide(&p, &never, false).unwrap_err();
        assert_eq!(w.reason, "ErrImageNeverPull");
        assert_eq!(
            w.message,
            "Container image \"docker.io/library/busybox:local\" is not present with pull policy of Never"
        );
        assert_eq!(
            ib.decide(&p, &c("busybox:1.36", Some("Always")), true),
            Ok(PullDecision::Pull)
        );
        assert_eq!(
            ib.decide(&p, &c("busybox:1.36", Some("IfNotPresent")), true),
            Ok(PullDecision::UsePresent)
        );
        assert_eq!(
            ib.decide(&p, &c("busybox:1.36", None), true),
            Ok(PullDecision::UsePresent)
        );
        assert_eq!(
            ib.decide(&p, &c("busybox", None), true),
            Ok(PullDecision::Pull)
        );
        assert_eq!(
            ib.decide(&p, &c("busybox:latest", None), true),
            Ok(PullDecision::Pull)
        );
        assert_eq!(
            ib.decide(&p, &c("reg:5000/busybox", None), true),
            Ok(PullDecision::Pull),
            "a registry port is not a tag"
        );
        assert_eq!(
            ib.decide(&p, &c("busybox@sha256:abcd", None), true),
            Ok(PullDecision::UsePresent)
        );
        let w = ib
            .decide(&p, &c("busybox", Some("Sometimes")), true)
            .unwrap_err();
        assert_eq!(w.reason, "InvalidImageName");
    }

    #[test]
    fn go_duration_strings() {
        assert_eq!(go_duration(Duration::from_secs(10)), "10s");
        assert_eq!(go_duration(Duration::from_secs(80)), "1m20s");
        assert_eq!(go_duration(Duration::from_secs(300)), "5m0s");
        assert_eq!(go_duration(Duration::from_secs(3600)), "1h0m0s");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(go_duration(Duration::from_millis(5)), "5ms");
        assert_eq!(go_duration(Duration::ZERO), "0s");
    }

    #[test]
    fn limits_are_checked() {
        assert!(Backoff::with_limits(SystemClock, Duration::ZERO, MAX_BACKOFF).is_err());
        assert!(Backoff::with_limits(SystemClock, MAX_BACKOFF * 2, MAX_BACKOFF).is_err());
        assert!(Backoff::with_limits(SystemClock, INITIAL_BACKOFF, MAX_BACKOFF).is_ok());
    }
}
