//! armlet's kubelet: the pods bound to this node, watched and run.
//!
//! The shape is kube-rs's watcher → store → reconcile loop, with the kubelet's
//! parts:
//! - a list+watch of pods with `spec.nodeName=<node>` (the only pods the Node
//!   authorizer lets a node see) feeds a store of desired pods, one entry per
//!   pod uid, each with its own worker ([`pod_worker`]) that makes the node
//!   match and reports status;
//! - the pods last seen are kept in [`local_state`], so a restarted agent (or a
//!   rebooted board with no server) brings them back at once; the server's
//!   first answer wins;
//! - a relist of the runtime every second (the kubelet's PLEG) wakes the
//!   worker of any pod whose containers changed, and cleans up containers and
//!   sandboxes of pods nobody wants any more;
//! - the node's podCIDR (from its Node object) sets up the pod network.
//!
//! [`dns`] writes resolv.conf, [`status_patch`] the status diffs, [`objects`]
//! and [`tokens`] read ConfigMaps, Secrets, Services and service-account
//! tokens for the pods, [`static_pods`] reads the manifest directory and
//! [`runtime`] talks to the container supervisor.

pub mod dns;
pub mod local_state;
pub mod objects;
pub mod pod_worker;
pub mod runtime;
pub mod static_pods;
pub mod status_patch;
pub mod tokens;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use armlet_image::service::ImageService;
use armlet_net::{NetworkConfig, PodNetwork};
use armlet_pods::backoff::{ImagePullBackoff, RestartBackoff, SystemClock};
use armlet_pods::env::NodeAllocatable;
use armlet_runtime::protocol::{ContainerInfo, LABEL_POD_NAME, LABEL_POD_NAMESPACE, LABEL_POD_UID};
use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams, WatchEvent, WatchParams};
use tokio::sync::watch;

use crate::local_state::LocalState;
use crate::objects::ApiObjects;
use crate::pod_worker::{Desired, PodWorker, Source};
use crate::runtime::Runtime;
use crate::tokens::TokenManager;

/// How the kubelet runs pods on this node.
#[derive(Debug, Clone)]
pub struct KubeletConfig {
    /// This node's name.
    pub node_name: String,
    /// The node's IPs, primary first (`status.hostIP`).
    pub host_ips: Vec<String>,
    /// The kubelet's directory (`/var/lib/kubelet`): pod directories and volumes.
    pub kubelet_root: PathBuf,
    /// Container logs (`/var/log/pods`).
    pub pod_logs: PathBuf,
    /// The container supervisor's directory (tmpfs): sandboxes and bundles too.
    pub runtime_root: PathBuf,
    /// The `armlet` program, which starts the supervisor when none runs.
    pub armlet_binary: PathBuf,
    /// The cgroup all pods live under (`/kubepods`).
    pub cgroup_parent: PathBuf,
    /// The cluster's DNS (from `/v1-k3s/config`).
    pub dns: dns::ClusterDns,
    /// The node's resolv.conf (dnsPolicy Default and host search domains).
    pub host_resolv_conf: PathBuf,
    /// The node's allocatable resources (downward API defaults, memory volumes).
    pub allocatable: NodeAllocatable,
    /// The node's memory capacity in bytes.
    pub memory_capacity: i64,
    /// The agent's local state database.
    pub state_path: PathBuf,
    /// The bridge pods attach to (k3s: `cni0`).
    pub bridge: String,
    /// The cluster's pod CIDRs (traffic to them is not masqueraded).
    pub cluster_cidrs: Vec<armlet_net::Ipv4Cidr>,
    /// The pod network's MTU.
    pub mtu: u32,
    /// Where pod addresses are recorded (persistent).
    pub ipam_dir: PathBuf,
    /// The static pod manifests (k3s: `<data-dir>/agent/pod-manifests`).
    pub manifests_dir: Option<PathBuf>,
}

/// Why the kubelet could not start.
#[derive(Debug, thiserror::Error)]
pub enum KubeletError {
    /// The local state database could not be opened.
    #[error("local state: {0}")]
    State(#[from] local_state::StateError),
}

/// What a worker reports status to.
pub(crate) struct StatusTarget {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// For a mirror pod: the mirror as the API shows it (the base of the diff).
    pub current: Option<Arc<Pod>>,
}

struct Entry {
    tx: watch::Sender<Desired>,
    source: Source,
}

/// What the workers share.
pub struct Shared {
    pub(crate) config: KubeletConfig,
    pub(crate) client: kube::Client,
    pub(crate) runtime: Runtime,
    pub(crate) images: Arc<ImageService>,
    pub(crate) objects: ApiObjects,
    pub(crate) tokens: TokenManager,
    pub(crate) restart_backoff: Mutex<RestartBackoff<SystemClock>>,
    pub(crate) pull_backoff: Mutex<ImagePullBackoff<SystemClock>>,
    network: Mutex<Option<Arc<PodNetwork>>>,
    network_error: Mutex<Option<String>>,
    runtime_error: Mutex<Option<String>>,
    /// Set when the node is shutting down: the grace period pods get.
    node_shutdown: Mutex<Option<Duration>>,
    pods: Mutex<HashMap<String, Entry>>,
    /// Mirror pods as the API shows them, by (namespace, name).
    mirrors: Mutex<HashMap<(String, String), Arc<Pod>>>,
    state: Option<LocalState>,
    stop: watch::Receiver<bool>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every guarded value stays consistent between statements; a panic
    // elsewhere must not wedge the kubelet.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    pub(crate) fn network(&self) -> Option<Arc<PodNetwork>> {
        lock(&self.network).clone()
    }

    /// The grace period of a node shutdown in progress.
    pub(crate) fn node_shutdown(&self) -> Option<Duration> {
        *lock(&self.node_shutdown)
    }

    pub(crate) fn status_target(&self, pod: &Pod) -> Option<StatusTarget> {
        let meta = &pod.metadata;
        pod.spec.as_ref()?;
        if static_pods::is_static_pod(pod) {
            // A static pod's status goes to its mirror, once there is one.
            let key = mirror_key(pod);
            let mirror = lock(&self.mirrors).get(&key).cloned()?;
            if mirror.metadata.deletion_timestamp.is_some() {
                return None;
            }
            return Some(StatusTarget {
                namespace: key.0,
                name: key.1,
                uid: mirror.metadata.uid.clone()?,
                current: Some(mirror),
            });
        }
        Some(StatusTarget {
            namespace: meta.namespace.clone().unwrap_or_else(|| "default".into()),
            name: meta.name.clone()?,
            uid: meta.uid.clone()?,
            current: None,
        })
    }

    /// A worker ended: forget its pod.
    pub(crate) fn worker_finished(&self, uid: &str) {
        let mut pods = lock(&self.pods);
        if pods.get(uid).is_some_and(|e| e.tx.borrow().removed) {
            pods.remove(uid);
            if let Some(state) = &self.state {
                if let Err(e) = state.remove_pod(uid) {
                    tracing::warn!(error = %e, "local state: pod not removed");
                }
            }
        }
    }

    /// Hands `pod` to its worker, starting one for a new pod. Mirror pods
    /// only stand for static pods: they are remembered, never run.
    fn upsert(self: &Arc<Self>, pod: Pod, source: Source) {
        if source != Source::File && static_pods::is_mirror_pod(&pod) {
            lock(&self.mirrors).insert(mirror_key(&pod), Arc::new(pod));
            return;
        }
        let Some(uid) = pod.metadata.uid.clone() else {
            tracing::warn!(pod = ?pod.metadata.name, "pod without uid ignored");
            return;
        };
        if source == Source::Api {
            if let Some(state) = &self.state {
                if let Err(e) = state.save_pod(&pod) {
                    tracing::warn!(error = %e, "local state: pod not saved");
                }
            }
        }
        let desired = Desired {
            pod: Arc::new(pod),
            removed: false,
            source,
        };
        let mut pods = lock(&self.pods);
        if let Some(entry) = pods.get_mut(&uid) {
            if entry.tx.borrow().removed && source != Source::Api {
                return;
            }
            entry.source = source;
            entry.tx.send_replace(desired);
            return;
        }
        let (tx, rx) = watch::channel(desired);
        pods.insert(uid.clone(), Entry { tx, source });
        let worker = PodWorker::new(self.clone(), uid, rx);
        tokio::spawn(worker.run(self.stop.clone()));
    }

    /// Tells the worker of `uid` its pod is gone.
    fn remove(&self, uid: &str) {
        let pods = lock(&self.pods);
        if let Some(entry) = pods.get(uid) {
            entry.tx.send_modify(|d| d.removed = true);
        }
    }

    /// The API's full list: everything from the API or local state that is
    /// not in it is gone.
    fn replace_api_pods(self: &Arc<Self>, items: Vec<Pod>) {
        lock(&self.mirrors).clear();
        let listed: BTreeSet<String> = items
            .iter()
            .filter_map(|p| p.metadata.uid.clone())
            .collect();
        let gone: Vec<String> = lock(&self.pods)
            .iter()
            .filter(|(uid, e)| e.source != Source::File && !listed.contains(*uid))
            .map(|(uid, _)| uid.clone())
            .collect();
        for uid in gone {
            self.remove(&uid);
        }
        for pod in items {
            self.upsert(pod, Source::Api);
        }
        if let Some(state) = &self.state {
            if let Err(e) = state.retain_pods(&listed) {
                tracing::warn!(error = %e, "local state: old pods not dropped");
            }
        }
    }

    /// Wakes the worker of `uid`; false when no worker has it.
    fn wake(&self, uid: &str) -> bool {
        match lock(&self.pods).get(uid) {
            Some(entry) => {
                entry.tx.send_modify(|_| {});
                true
            }
            None => false,
        }
    }
}

/// The kubelet.
pub struct Kubelet {
    shared: Arc<Shared>,
    stop_tx: watch::Sender<bool>,
}

/// Starts a graceful node shutdown of a running [`Kubelet`].
#[derive(Clone)]
pub struct ShutdownHandle {
    shared: Arc<Shared>,
}

impl ShutdownHandle {
    /// The node is shutting down (the kubelet's graceful node shutdown): the
    /// node turns NotReady, every pod's containers are stopped with their
    /// grace periods, at most `grace`, and each pod is reported Failed with
    /// the kubelet's reason; returns once no container runs, or `grace` plus
    /// a few seconds later. The pods' objects stay (their controllers
    /// replace them elsewhere).
    pub async fn shut_down_node(&self, grace: Duration) {
        *lock(&self.shared.node_shutdown) = Some(grace);
        tracing::info!(grace_s = grace.as_secs(), "node shutdown: stopping pods");
        let uids: Vec<String> = lock(&self.shared.pods).keys().cloned().collect();
        for uid in uids {
            self.shared.wake(&uid);
        }
        let deadline = std::time::Instant::now() + grace + Duration::from_secs(5);
        loop {
            let live = match self.shared.runtime.list().await {
                Ok(infos) => infos
                    .iter()
                    .filter(|i| {
                        i.label(LABEL_POD_UID).is_some()
                            && i.state != armlet_runtime::protocol::ContainerState::Exited
                    })
                    .count(),
                Err(_) => 0,
            };
            if live == 0 || std::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // The workers post the final statuses as they see the exits.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        tracing::info!("node shutdown: pods stopped");
    }
}

impl Kubelet {
    /// A kubelet for the node, using `client` (the node's identity) and the
    /// node's image service.
    pub fn new(
        config: KubeletConfig,
        client: kube::Client,
        images: Arc<ImageService>,
    ) -> Result<Self, KubeletError> {
        let (state, reset) = LocalState::open_or_reset(&config.state_path)?;
        if let Some(why) = reset {
            tracing::warn!(path = %config.state_path.display(), why = %why, "local state was unreadable and starts empty");
        }
        let (stop_tx, stop) = watch::channel(false);
        let runtime = Runtime::new(&config.armlet_binary, &config.runtime_root);
        let shared = Arc::new(Shared {
            objects: ApiObjects::new(client.clone()),
            tokens: TokenManager::new(client.clone()),
            restart_backoff: Mutex::new(RestartBackoff::new(SystemClock)),
            pull_backoff: Mutex::new(ImagePullBackoff::new(SystemClock)),
            network: Mutex::new(None),
            network_error: Mutex::new(Some(
                "network not ready: the node has no podCIDR yet".into(),
            )),
            runtime_error: Mutex::new(None),
            node_shutdown: Mutex::new(None),
            pods: Mutex::new(HashMap::new()),
            mirrors: Mutex::new(HashMap::new()),
            state: Some(state),
            stop,
            config,
            client,
            runtime,
            images,
        });
        Ok(Self { shared, stop_tx })
    }

    /// A handle to start a graceful node shutdown while [`run`](Self::run) runs.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            shared: self.shared.clone(),
        }
    }

    /// The node's readiness as the kubelet sees it (runtime and network up),
    /// for the Node's Ready condition.
    pub fn readiness(&self) -> impl Fn() -> Result<(), String> + Send + Sync + 'static {
        let shared = self.shared.clone();
        move || {
            if shared.node_shutdown().is_some() {
                return Err("node is shutting down".to_owned());
            }
            if let Some(e) = lock(&shared.runtime_error).clone() {
                return Err(e);
            }
            if let Some(e) = lock(&shared.network_error).clone() {
                return Err(e);
            }
            Ok(())
        }
    }

    /// Runs until `shutdown` resolves. Pods keep running when the agent stops:
    /// the next agent adopts them.
    pub async fn run(
        self,
        node: watch::Receiver<Option<Arc<Node>>>,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        let shared = self.shared.clone();
        // Local state first: the node's pods come back before the server
        // answers, with the ConfigMaps and Services they used.
        if let Some(state) = &shared.state {
            match (state.config_maps(), state.services()) {
                (Ok(config_maps), Ok(services)) => shared.objects.seed(config_maps, services),
                (Err(e), _) | (_, Err(e)) => {
                    tracing::warn!(error = %e, "local state: objects not read");
                }
            }
            match state.pods() {
                Ok(pods) => {
                    if !pods.is_empty() {
                        tracing::info!(count = pods.len(), "pods from local state");
                    }
                    for pod in pods {
                        shared.upsert(pod, Source::Saved);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "local state: pods not read"),
            }
        }
        let (synced_tx, synced_rx) = watch::channel(false);
        let tasks = [
            tokio::spawn(network_loop(shared.clone(), node.clone())),
            tokio::spawn(watch_pods(shared.clone(), synced_tx)),
            tokio::spawn(relist_loop(shared.clone(), synced_rx.clone())),
            tokio::spawn(static_pods_loop(shared.clone(), node, synced_rx)),
        ];
        shutdown.await;
        let _ = self.stop_tx.send(true);
        for t in tasks {
            t.abort();
        }
    }
}

/// (namespace, name) of a pod: how a static pod and its mirror find each other.
fn mirror_key(pod: &Pod) -> (String, String) {
    (
        pod.metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into()),
        pod.metadata.name.clone().unwrap_or_default(),
    )
}

/// How often the manifest directory is read (the kubelet's
/// `fileCheckFrequency`).
const MANIFEST_SCAN_EVERY: Duration = Duration::from_secs(20);

/// Runs the static pods of the manifest directory and keeps a mirror pod in
/// the API for each (`pkg/kubelet/pod/mirror_client.go`): created once the
/// Node is known, replaced when the manifest changed or the mirror is being
/// deleted, removed when the manifest is gone.
async fn static_pods_loop(
    shared: Arc<Shared>,
    node: watch::Receiver<Option<Arc<Node>>>,
    synced: watch::Receiver<bool>,
) {
    let Some(dir) = shared.config.manifests_dir.clone() else {
        return;
    };
    let mut manifests = static_pods::ManifestDir::new(dir, shared.config.node_name.clone());
    let mut current: BTreeMap<String, Pod> = BTreeMap::new();
    let mut scanned: Option<std::time::Instant> = None;
    loop {
        if scanned.is_none_or(|t| t.elapsed() >= MANIFEST_SCAN_EVERY) {
            scanned = Some(std::time::Instant::now());
            if let Some(pods) = manifests.scan() {
                let next: BTreeMap<String, Pod> = pods
                    .into_iter()
                    .filter_map(|p| Some((p.metadata.uid.clone()?, p)))
                    .collect();
                for uid in current.keys().filter(|u| !next.contains_key(*u)) {
                    shared.remove(uid);
                }
                for pod in next.values() {
                    shared.upsert(pod.clone(), Source::File);
                }
                current = next;
            }
        }
        let node_uid = node.borrow().as_ref().and_then(|n| n.metadata.uid.clone());
        let api_synced = *synced.borrow();
        if let (Some(node_uid), true) = (node_uid, api_synced) {
            sync_mirrors(&shared, &current, &node_uid).await;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Makes the mirror pods match the static pods.
async fn sync_mirrors(shared: &Arc<Shared>, statics: &BTreeMap<String, Pod>, node_uid: &str) {
    let mirrors: Vec<((String, String), Arc<Pod>)> = lock(&shared.mirrors)
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let wanted: BTreeMap<(String, String), &Pod> =
        statics.values().map(|p| (mirror_key(p), p)).collect();
    for (key, mirror) in &mirrors {
        let mirrored = mirror
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(static_pods::CONFIG_MIRROR_ANNOTATION))
            .map(String::as_str);
        let current = wanted
            .get(key)
            .is_some_and(|p| static_pods::config_hash(p) == mirrored);
        if current && mirror.metadata.deletion_timestamp.is_none() {
            continue;
        }
        let api: Api<Pod> = Api::namespaced(shared.client.clone(), &key.0);
        let params = kube::api::DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(kube::api::Preconditions {
                uid: mirror.metadata.uid.clone(),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(&key.1, &params).await {
            Ok(_) => {
                lock(&shared.mirrors).remove(key);
            }
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {
                lock(&shared.mirrors).remove(key);
            }
            Err(e) => tracing::warn!(pod = %key.1, error = %e, "mirror pod not deleted"),
        }
    }
    for (key, pod) in wanted {
        if lock(&shared.mirrors).contains_key(&key) {
            continue;
        }
        let mirror = static_pods::mirror_pod(pod, &shared.config.node_name, node_uid);
        let api: Api<Pod> = Api::namespaced(shared.client.clone(), &key.0);
        match api.create(&kube::api::PostParams::default(), &mirror).await {
            Ok(created) => {
                tracing::info!(pod = %key.1, "mirror pod created");
                lock(&shared.mirrors).insert(key, Arc::new(created));
            }
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => tracing::warn!(pod = %key.1, error = %e, "mirror pod not created"),
        }
    }
}

/// Sets the pod network up once the Node has a podCIDR (and again if it
/// changes).
async fn network_loop(shared: Arc<Shared>, mut node: watch::Receiver<Option<Arc<Node>>>) {
    let mut current: Option<String> = None;
    // The podCIDR last seen, so a node starting without its server has its
    // pod network (and its pods their addresses) back at once.
    let saved_path = shared.config.ipam_dir.with_file_name("pod-cidr");
    let saved = std::fs::read_to_string(&saved_path)
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty());
    loop {
        let cidr = node
            .borrow_and_update()
            .as_ref()
            .and_then(|n| n.spec.as_ref())
            .and_then(|s| s.pod_cidr.clone())
            .or_else(|| current.is_none().then(|| saved.clone()).flatten());
        if let Some(cidr) = cidr.filter(|c| current.as_ref() != Some(c)) {
            let result = match cidr.parse::<armlet_net::Ipv4Cidr>() {
                Err(e) => Err(format!("podCIDR {cidr:?}: {e}")),
                Ok(pod_cidr) => {
                    let c = &shared.config;
                    let config = NetworkConfig {
                        bridge: c.bridge.clone(),
                        pod_cidr,
                        cluster_cidr: c.cluster_cidrs.clone(),
                        state_dir: c.ipam_dir.clone(),
                        mtu: c.mtu,
                    };
                    tokio::task::spawn_blocking(move || {
                        let network = PodNetwork::open(config)?;
                        network.ensure_node()?;
                        Ok::<_, armlet_net::NetError>(network)
                    })
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|r| r.map_err(|e| e.to_string()))
                }
            };
            match result {
                Ok(network) => {
                    tracing::info!(pod_cidr = %cidr, "pod network ready");
                    if saved.as_deref() != Some(cidr.as_str()) {
                        if let Err(e) =
                            armlet_runtime::state::write_atomic(&saved_path, cidr.as_bytes(), 0o644)
                        {
                            tracing::warn!(error = %e, "podCIDR not saved");
                        }
                    }
                    *lock(&shared.network) = Some(Arc::new(network));
                    *lock(&shared.network_error) = None;
                    current = Some(cidr);
                    // Pods waiting for an address can go on.
                    let uids: Vec<String> = lock(&shared.pods).keys().cloned().collect();
                    for uid in uids {
                        shared.wake(&uid);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "pod network not ready");
                    *lock(&shared.network_error) = Some(format!("network not ready: {e}"));
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    continue;
                }
            }
        }
        if node.changed().await.is_err() {
            return;
        }
    }
}

/// The list+watch of this node's pods, relisting after errors and on
/// `410 Gone`, with back-off while the server is unreachable.
async fn watch_pods(shared: Arc<Shared>, synced: watch::Sender<bool>) {
    let api: Api<Pod> = Api::all(shared.client.clone());
    let selector = format!("spec.nodeName={}", shared.config.node_name);
    let mut delay = Duration::from_millis(500);
    loop {
        let list = match api.list(&ListParams::default().fields(&selector)).await {
            Ok(list) => list,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list pods; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(30));
                continue;
            }
        };
        delay = Duration::from_millis(500);
        let mut version = list.metadata.resource_version.clone().unwrap_or_default();
        shared.replace_api_pods(list.items);
        let _ = synced.send(true);
        'watch: loop {
            let params = WatchParams::default().fields(&selector).timeout(290);
            let stream = match api.watch(&params, &version).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "pod watch failed; relisting");
                    tokio::time::sleep(delay).await;
                    break 'watch;
                }
            };
            futures::pin_mut!(stream);
            while let Some(event) = stream.next().await {
                match event {
                    Ok(WatchEvent::Added(pod)) | Ok(WatchEvent::Modified(pod)) => {
                        if let Some(v) = &pod.metadata.resource_version {
                            version = v.clone();
                        }
                        shared.upsert(pod, Source::Api);
                    }
                    Ok(WatchEvent::Deleted(pod)) => {
                        if let Some(v) = &pod.metadata.resource_version {
                            version = v.clone();
                        }
                        if static_pods::is_mirror_pod(&pod) {
                            lock(&shared.mirrors).remove(&mirror_key(&pod));
                        } else if let Some(uid) = &pod.metadata.uid {
                            shared.remove(uid);
                        }
                    }
                    Ok(WatchEvent::Bookmark(b)) => version = b.metadata.resource_version,
                    Ok(WatchEvent::Error(e)) => {
                        if e.code != 410 {
                            tracing::warn!(error = %e.message, "pod watch error; relisting");
                        }
                        break 'watch;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "pod watch broke; relisting");
                        break 'watch;
                    }
                }
            }
        }
    }
}

/// The kubelet's PLEG: relists the runtime every second, wakes the workers
/// of pods whose containers changed, and (once the API has answered) cleans
/// up what belongs to no pod.
async fn relist_loop(shared: Arc<Shared>, synced: watch::Receiver<bool>) {
    let mut last: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    let mut persisted = std::time::Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let infos = match shared.runtime.list().await {
            Ok(i) => {
                *lock(&shared.runtime_error) = None;
                i
            }
            Err(e) => {
                *lock(&shared.runtime_error) = Some(format!("container runtime is down: {e}"));
                continue;
            }
        };
        let mut now: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
        let mut example: BTreeMap<String, &ContainerInfo> = BTreeMap::new();
        for info in &infos {
            let Some(uid) = info.label(LABEL_POD_UID) else {
                continue;
            };
            now.entry(uid.to_owned())
                .or_default()
                .push((info.id.clone(), format!("{:?}", info.state)));
            example.entry(uid.to_owned()).or_insert(info);
        }
        for (uid, states) in &now {
            if last.get(uid) != Some(states) && !shared.wake(uid) && *synced.borrow() {
                // Nobody wants this pod: a removal worker stops and cleans it.
                if let Some(info) = example.get(uid) {
                    adopt_orphan(&shared, uid, info);
                }
            }
        }
        if *synced.borrow() {
            let root = shared.config.runtime_root.join("sandboxes");
            if let Ok(sandboxes) = armlet_runtime::sandbox::list(&root) {
                for uid in sandboxes {
                    if !now.contains_key(&uid) && !lock(&shared.pods).contains_key(&uid) {
                        let pod = orphan_pod(&uid, None, None);
                        shared.upsert(pod, Source::Saved);
                        shared.remove(&uid);
                    }
                }
            }
        }
        last = now;
        if *synced.borrow() && persisted.elapsed() >= PERSIST_OBJECTS_EVERY {
            persisted = std::time::Instant::now();
            persist_objects(&shared);
            release_addresses(&shared).await;
        }
    }
}

/// How often the objects pods use are compared with the saved ones (and
/// written when they changed).
const PERSIST_OBJECTS_EVERY: Duration = Duration::from_secs(30);

/// Frees the addresses (and veths) of pods no worker has: what a crash
/// between an attach and its record, or a pod removed while the agent was
/// down, would otherwise leak.
async fn release_addresses(shared: &Arc<Shared>) {
    let Some(network) = shared.network() else {
        return;
    };
    let shared = shared.clone();
    // The pod table stays locked throughout: no new pod can be admitted (and
    // attach) between taking the live set and releasing the rest.
    let release = move || {
        let pods = lock(&shared.pods);
        let live: BTreeSet<String> = pods.keys().cloned().collect();
        network.release_except(&live)
    };
    match tokio::task::spawn_blocking(release).await {
        Ok(Ok(freed)) if !freed.is_empty() => {
            tracing::info!(pods = ?freed, "released the addresses of pods that are gone");
        }
        Ok(Err(e)) => tracing::warn!(error = %e, "pod addresses not checked"),
        _ => {}
    }
}

/// Saves the ConfigMaps and Services the node's pods use (never Secrets) for
/// a start without the server.
fn persist_objects(shared: &Arc<Shared>) {
    let Some(state) = &shared.state else { return };
    let pods: Vec<Arc<Pod>> = lock(&shared.pods)
        .values()
        .map(|e| e.tx.borrow().pod.clone())
        .collect();
    let live: Vec<&Pod> = pods.iter().map(|p| p.as_ref()).collect();
    shared.objects.forget_unused(&live);
    let config_maps = shared.objects.snapshot_config_maps(&live);
    if let Err(e) = state.sync_config_maps(&config_maps) {
        tracing::warn!(error = %e, "local state: ConfigMaps not saved");
    }
    if let Some(services) = shared.objects.snapshot_services() {
        if let Err(e) = state.sync_services(&services) {
            tracing::warn!(error = %e, "local state: Services not saved");
        }
    }
}

fn orphan_pod(uid: &str, name: Option<&str>, namespace: Option<&str>) -> Pod {
    let mut pod = Pod::default();
    pod.metadata.uid = Some(uid.to_owned());
    pod.metadata.name = Some(name.unwrap_or("orphan").to_owned());
    pod.metadata.namespace = namespace.map(str::to_owned);
    pod
}

fn adopt_orphan(shared: &Arc<Shared>, uid: &str, info: &ContainerInfo) {
    tracing::info!(pod_uid = %uid, "containers of an unknown pod will be removed");
    let pod = orphan_pod(
        uid,
        info.label(LABEL_POD_NAME),
        info.label(LABEL_POD_NAMESPACE),
    );
    shared.upsert(pod, Source::Saved);
    shared.remove(uid);
}
