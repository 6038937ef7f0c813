//! The upkeep loop: register the Node (or take over the one of its name),
//! renew the Lease every 10 s, recompute the status every 10 s and send it
//! when it changed or every 5 minutes. Level-triggered: each pass starts
//! from what the server has, so a deleted Node is registered again, a
//! deleted Lease created again, and an unreachable server only delays the
//! next pass (with backoff).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use k8s_openapi::chrono::{SubsecRound as _, Utc};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use tokio::sync::watch;

use crate::Error;
use crate::conditions::{PressureDamper, pressures};
use crate::lease::{NAMESPACE, new_lease, node_owner, renewed};
use crate::measure::{Host, MachineInfo};
use crate::object::{initial_node, takeover_patch};
use crate::settings::NodeSettings;
use crate::status::{changed, desired_status, report_due, status_patch};

/// The kubelet's attempts per status update (`nodeStatusUpdateRetry`) and
/// per lease renewal (`maxUpdateRetries`).
const RETRIES: usize = 5;

/// Whether the node is ready as far as the caller knows (the container
/// runtime answers, the pod network is up): `Err` carries the message of
/// the Ready=False condition, e.g. "container runtime network not ready:
/// cni plugin not initialized". Called on every status pass: it must not
/// block.
pub trait Readiness: Send + Sync {
    /// `Ok` when ready, else why not.
    fn check(&self) -> Result<(), String>;
}

impl<F> Readiness for F
where
    F: Fn() -> Result<(), String> + Send + Sync,
{
    fn check(&self) -> Result<(), String> {
        self()
    }
}

/// What a status pass did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusSync {
    /// Nothing changed and no report was due: nothing sent.
    Unchanged,
    /// The status was sent (`changed`: because it changed, else because
    /// the report frequency had passed).
    Reported {
        /// Whether anything but heartbeat times differed.
        changed: bool,
    },
}

/// Now, truncated to the second the API's `Time` keeps.
fn now_time() -> Time {
    Time(Utc::now().trunc_subsecs(0))
}

/// Runs one request with the request timeout: a connection the server
/// stopped answering on must not hold up the heartbeat.
async fn bounded<T>(
    limit: Duration,
    request: impl Future<Output = Result<T, kube::Error>>,
) -> Result<T, Error> {
    match tokio::time::timeout(limit, request).await {
        Ok(result) => result.map_err(Error::from),
        Err(_) => Err(Error::Timeout(limit)),
    }
}

/// The kubelet's registration backoff: doubling from the first wait to a
/// ceiling, back to the start after a success.
#[derive(Debug, Clone)]
struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            next: initial,
        }
    }

    fn next(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(self.max);
        wait
    }

    fn reset(&mut self) {
        self.next = self.initial;
    }
}

/// `base` plus up to 4 % (the kubelet's lease jitter), so that nodes
/// started together do not renew together. The clock's nanoseconds are
/// random enough for that.
fn jittered(base: Duration) -> Duration {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    base + base.mul_f64(0.04 * f64::from(nanos % 1000) / 1000.0)
}

/// Logs a failure at `warn` when it differs from the previous one and at
/// `debug` when it repeats, so a server down for an hour does not fill the
/// log with the same line every few seconds.
#[derive(Debug, Default)]
struct Complaints {
    last: Option<String>,
}

impl Complaints {
    fn failed(&mut self, what: &str, error: &Error) {
        let text = error.to_string();
        if self.last.as_deref() == Some(text.as_str()) {
            tracing::debug!(error = %text, "{what} failed again");
        } else {
            tracing::warn!(error = %text, "{what} failed; retrying");
            self.last = Some(text);
        }
    }

    fn succeeded(&mut self, what: &str) {
        if self.last.take().is_some() {
            tracing::info!("{what} works again");
        }
    }
}

/// The Node's registration and status.
struct StatusKeeper {
    nodes: Api<Node>,
    settings: Arc<NodeSettings>,
    host: Host,
    machine: MachineInfo,
    readiness: Box<dyn Readiness>,
    damper: PressureDamper,
    last_report: Option<Instant>,
    /// The Node as last seen; `None` until registered (again).
    node: watch::Sender<Option<Arc<Node>>>,
    registered: bool,
}

impl StatusKeeper {
    fn limit(&self) -> Duration {
        self.settings.intervals.request_timeout
    }

    fn name(&self) -> &str {
        &self.settings.name
    }

    fn publish(&self, node: Node) -> Arc<Node> {
        let node = Arc::new(node);
        self.node.send_replace(Some(Arc::clone(&node)));
        node
    }

    /// The status the node would post now over `current`.
    fn desired(&mut self, current: Option<&Node>) -> k8s_openapi::api::core::v1::NodeStatus {
        let measured = self.host.measure();
        let seen = pressures(&measured, &self.settings.eviction);
        let reported = self.damper.damp(
            seen,
            Instant::now(),
            self.settings.intervals.pressure_transition,
        );
        let readiness = self.readiness.check();
        desired_status(
            current.and_then(|n| n.status.as_ref()),
            &self.settings,
            &self.machine,
            &measured,
            &readiness,
            reported,
            &now_time(),
        )
    }

    /// One registration attempt: create the Node, or take over the one of
    /// its name.
    async fn register(&mut self) -> Result<Arc<Node>, Error> {
        let status = self.desired(None);
        let node = initial_node(&self.settings, status);
        let created = bounded(
            self.limit(),
            self.nodes.create(&PostParams::default(), &node),
        )
        .await;
        let node = match created {
            Ok(node) => {
                tracing::info!(node = self.name(), "registered the Node");
                // The status went with the create.
                self.last_report = Some(Instant::now());
                node
            }
            Err(e) if e.code() == Some(409) => {
                let existing = bounded(self.limit(), self.nodes.get(self.name())).await?;
                let node = match takeover_patch(&existing, &self.settings) {
                    Some(patch) => {
                        let params = PatchParams::default();
                        bounded(
                            self.limit(),
                            self.nodes
                                .patch(self.name(), &params, &Patch::Merge(&patch)),
                        )
                        .await?
                    }
                    None => existing,
                };
                tracing::info!(node = self.name(), "took over the existing Node");
                // Its status is whatever the previous owner left: send ours.
                self.last_report = None;
                node
            }
            Err(e) => return Err(e),
        };
        self.registered = true;
        Ok(self.publish(node))
    }

    /// One status pass: register if needed, read the Node, send the status
    /// if it changed or a report is due. Retries conflicts and server errors
    /// as the kubelet does; a deleted Node is registered again.
    async fn sync(&mut self) -> Result<StatusSync, Error> {
        let mut last = None;
        for _ in 0..RETRIES {
            match self.try_sync().await {
                Ok(done) => return Ok(done),
                Err(e) if e.is_transient_api_error() => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or(Error::Retries(RETRIES)))
    }

    async fn try_sync(&mut self) -> Result<StatusSync, Error> {
        if !self.registered {
            self.register().await?;
        }
        let current = match bounded(self.limit(), self.nodes.get_opt(self.name())).await? {
            Some(node) => node,
            None => {
                tracing::warn!(node = self.name(), "the Node is gone: registering it again");
                self.registered = false;
                self.node.send_replace(None);
                let node = self.register().await?;
                Node::clone(&node)
            }
        };
        let desired = self.desired(Some(&current));
        let status = current.status.clone().unwrap_or_default();
        let changed = changed(&status, &desired);
        let frequency = self.settings.intervals.status_report;
        if !report_due(changed, self.last_report, Instant::now(), frequency) {
            self.publish(current);
            return Ok(StatusSync::Unchanged);
        }
        let patch = status_patch(&status, &desired);
        let params = PatchParams::default();
        let patched = bounded(
            self.limit(),
            self.nodes
                .patch_status(self.name(), &params, &Patch::Strategic(&patch)),
        )
        .await;
        let updated = match patched {
            Ok(node) => node,
            Err(e) if e.code() == Some(404) => {
                // Deleted between the read and the patch: next pass.
                self.registered = false;
                self.node.send_replace(None);
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        self.last_report = Some(Instant::now());
        tracing::debug!(node = self.name(), changed, "posted the node status");
        self.publish(updated);
        Ok(StatusSync::Reported { changed })
    }
}

/// The Lease.
struct LeaseKeeper {
    leases: Api<Lease>,
    settings: Arc<NodeSettings>,
    /// The Lease as last written: renewed without reading it first.
    cached: Option<Lease>,
    node: watch::Receiver<Option<Arc<Node>>>,
}

impl LeaseKeeper {
    fn limit(&self) -> Duration {
        self.settings.intervals.request_timeout
    }

    fn renewal(&self, lease: Lease) -> Lease {
        let owner = self.node.borrow().as_deref().and_then(node_owner);
        renewed(
            lease,
            &self.settings.name,
            owner,
            self.settings.intervals.lease_duration,
            MicroTime(Utc::now()),
        )
    }

    /// One renewal (`lease/controller.go`): update the cached Lease; when
    /// that fails, read it (create it when missing) and update that, again
    /// after conflicts.
    async fn renew(&mut self) -> Result<Lease, Error> {
        let name = self.settings.name.clone();
        let params = PostParams::default();
        if let Some(cached) = self.cached.take() {
            let lease = self.renewal(cached);
            match bounded(self.limit(), self.leases.replace(&name, &params, &lease)).await {
                Ok(lease) => {
                    self.cached = Some(lease.clone());
                    return Ok(lease);
                }
                Err(e) if e.code().is_some() => {
                    tracing::debug!(error = %e, "renewing the cached Lease failed; reading it");
                }
                // No answer: reading would not get one either.
                Err(e) => return Err(e),
            }
        }
        let mut last = None;
        for _ in 0..RETRIES {
            let written = match bounded(self.limit(), self.leases.get_opt(&name)).await? {
                None => {
                    let owner = self.node.borrow().as_deref().and_then(node_owner);
                    let lease = new_lease(
                        &name,
                        owner,
                        self.settings.intervals.lease_duration,
                        MicroTime(Utc::now()),
                    );
                    bounded(self.limit(), self.leases.create(&params, &lease)).await
                }
                Some(current) => {
                    let lease = self.renewal(current);
                    bounded(self.limit(), self.leases.replace(&name, &params, &lease)).await
                }
            };
            match written {
                Ok(lease) => {
                    self.cached = Some(lease.clone());
                    return Ok(lease);
                }
                // Someone else wrote it (or created it) meanwhile.
                Err(e) if e.code() == Some(409) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or(Error::Retries(RETRIES)))
    }
}

/// The Node's upkeep: registration, Lease and status, as K3s's kubelet
/// does them.
///
/// ```no_run
/// # async fn example(client: kube::Client) {
/// use armlet_node::{NodeAgent, NodeSettings};
/// let settings = NodeSettings::new("board-1", std::net::Ipv4Addr::new(192, 168, 1, 20).into());
/// let agent = NodeAgent::new(client, settings, || Ok(()));
/// let node = agent.subscribe(); // the Node as last seen: podCIDR, taints
/// let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
/// agent.run(async { let _ = stopped.await; }).await;
/// # drop((node, stop));
/// # }
/// ```
pub struct NodeAgent {
    status: StatusKeeper,
    lease: LeaseKeeper,
    nudge: Arc<tokio::sync::Notify>,
}

impl std::fmt::Debug for NodeAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeAgent")
            .field("node", &self.status.settings.name)
            .field("registered", &self.status.registered)
            .finish_non_exhaustive()
    }
}

impl NodeAgent {
    /// The upkeep of the node `settings` describes, through `client` (the
    /// kubelet's credentials), reading this machine (`/proc`, `/sys`, the
    /// data directory's filesystem); `readiness` says whether the node is
    /// ready beyond what the upkeep measures itself.
    pub fn new(
        client: kube::Client,
        settings: NodeSettings,
        readiness: impl Readiness + 'static,
    ) -> Self {
        let host = Host::new(&settings.data_dir);
        Self::with_host(client, settings, readiness, host)
    }

    /// The same, reading the machine from `host` (tests: a fixture tree).
    pub fn with_host(
        client: kube::Client,
        settings: NodeSettings,
        readiness: impl Readiness + 'static,
        host: Host,
    ) -> Self {
        let settings = Arc::new(settings);
        let (tx, rx) = watch::channel(None);
        let machine = host.machine_info();
        Self {
            status: StatusKeeper {
                nodes: Api::all(client.clone()),
                settings: Arc::clone(&settings),
                host,
                machine,
                readiness: Box::new(readiness),
                damper: PressureDamper::new(),
                last_report: None,
                node: tx,
                registered: false,
            },
            lease: LeaseKeeper {
                leases: Api::namespaced(client, NAMESPACE),
                settings,
                cached: None,
                node: rx,
            },
            nudge: Arc::new(tokio::sync::Notify::new()),
        }
    }

    /// Wakes the status loop for a pass now (the readiness it reports
    /// changed: the kubelet's fast status update), instead of at the next
    /// interval.
    pub fn status_nudge(&self) -> Arc<tokio::sync::Notify> {
        Arc::clone(&self.nudge)
    }

    /// The Node as the upkeep last saw it (after each status pass; `None`
    /// before registration): its `spec.podCIDR`, taints and uid.
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<Node>>> {
        self.status.node.subscribe()
    }

    /// One registration attempt: creates the Node, or on 409 takes over the
    /// existing Node of this name (labels and annotations as the kubelet and
    /// K3s's agent set them; taints and spec left alone).
    pub async fn register(&mut self) -> Result<Arc<Node>, Error> {
        self.status.register().await
    }

    /// One status pass (registering first if needed).
    pub async fn sync_status(&mut self) -> Result<StatusSync, Error> {
        self.status.sync().await
    }

    /// One Lease renewal (creating it if needed).
    pub async fn renew_lease(&mut self) -> Result<Lease, Error> {
        self.lease.renew().await
    }

    /// Keeps the Node up until `shutdown` completes, then returns (the Node
    /// and Lease stay: a restarted agent takes them over; the server marks
    /// the node unreachable if it does not come back). Never fails: errors
    /// are logged and retried.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let Self {
            mut status,
            mut lease,
            nudge,
        } = self;
        let intervals = status.settings.intervals;
        let status_loop = async {
            let mut backoff = Backoff::new(intervals.backoff_initial, intervals.backoff_max);
            let mut complaints = Complaints::default();
            loop {
                let wait = match status.sync().await {
                    Ok(_) => {
                        complaints.succeeded("node status update");
                        backoff.reset();
                        intervals.status_update
                    }
                    Err(e) => {
                        complaints.failed("node status update", &e);
                        // Registration retries quickly at first (the
                        // kubelet's backoff); a registered node just waits
                        // for its next pass.
                        if status.registered {
                            intervals.status_update
                        } else {
                            backoff.next().min(intervals.status_update)
                        }
                    }
                };
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = nudge.notified() => {}
                }
            }
        };
        let lease_loop = async {
            let mut backoff = Backoff::new(intervals.backoff_initial, intervals.backoff_max);
            let mut complaints = Complaints::default();
            loop {
                let wait = match lease.renew().await {
                    Ok(_) => {
                        complaints.succeeded("node lease renewal");
                        backoff.reset();
                        jittered(intervals.lease_renew)
                    }
                    Err(e) => {
                        complaints.failed("node lease renewal", &e);
                        backoff.next().min(intervals.lease_renew)
                    }
                };
                tokio::time::sleep(wait).await;
            }
        };
        tokio::select! {
            () = shutdown => tracing::info!("node upkeep stopped"),
            () = status_loop => {}
            () = lease_loop => {}
        }
    }
}

/// Runs the upkeep of the node `settings` describes until `shutdown`
/// completes (see [`NodeAgent::run`]).
pub async fn run(
    client: kube::Client,
    settings: NodeSettings,
    readiness: impl Readiness + 'static,
    shutdown: impl Future<Output = ()>,
) {
    NodeAgent::new(client, settings, readiness)
        .run(shutdown)
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_ceiling_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(7));
        let waits: Vec<u128> = (0..9).map(|_| b.next().as_millis()).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1600, 3200, 6400, 7000, 7000]);
        b.reset();
        assert_eq!(b.next(), Duration::from_millis(100));
    }

    #[test]
    fn jitter_is_at_most_four_percent() {
        for _ in 0..100 {
            let j = jittered(Duration::from_secs(10));
            assert!(
                j >= Duration::from_secs(10) && j <= Duration::from_millis(10_400),
                "{j:?}"
            );
        }
    }

    #[test]
    fn closures_are_readiness_checks() {
        let down = || Err::<(), _>("container runtime is down".to_owned());
        assert_eq!(down.check(), Err("container runtime is down".to_owned()));
    }
}
