//! One pod's worker: makes the node match the pod's spec, again and again
//! (level-triggered and idempotent, like the kubelet's `syncPod`), and reports
//! what it sees as the pod's status.
//!
//! Every pass starts from what is there (the runtime's containers carrying the
//! pod's uid label, the sandbox, the volumes on disk), never from what the
//! worker remembers having done, so a restarted agent adopts running pods as
//! they are. What only the worker knows (the last start failure per container,
//! probe results, stops in progress) is rebuilt from scratch after a restart,
//! as the kubelet rebuilds it.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use armlet_pods::container::{self, ContainerInput, ImageConfig, RuntimeInputs, UserDb};
use armlet_pods::env::{self, PodContext};
use armlet_pods::probes::{self, ProbeKind, ProbeOutcome, ProbeStep, ProbeTarget, ProbeWorker};
use armlet_pods::status::{
    self, LABEL_RESTART_COUNT, ObservedContainer, ProbeResults, StatusInput, Waiting,
};
use armlet_pods::termination::{ContainerStop, KillReason, StopStep};
use armlet_pods::volumes::{self, SafeSubPaths};
use armlet_runtime::protocol::{
    ContainerInfo, ContainerState, LABEL_CONTAINER_NAME, LABEL_POD_NAME, LABEL_POD_NAMESPACE,
    LABEL_POD_UID,
};
use armlet_runtime::sandbox::{Sandbox, SandboxConfig};
use armlet_runtime::spec::{Namespace, Namespaces, Resources};
use k8s_openapi::api::core::v1::{Container, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use sha2::{Digest as _, Sha256};
use tokio::sync::watch;

use crate::Shared;
use crate::runtime::Runtime;

/// Label with the image as the pod spec names it.
pub const LABEL_IMAGE: &str = "io.armlet.image";
/// Label with the image's ID as statuses show it (`<repository>@<digest>`).
pub const LABEL_IMAGE_ID: &str = "io.armlet.image-id";
/// Label with the container's stop signal (a number).
pub const LABEL_STOP_SIGNAL: &str = "io.armlet.stop-signal";

/// How often a pod is looked at when nothing happens (the kubelet's resync).
const RESYNC: Duration = Duration::from_secs(10);
/// Exited instances kept per container: the current one and the previous
/// (`lastState`, `kubectl logs --previous`).
const KEEP_INSTANCES: usize = 2;

/// Where a pod comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The API server (bound to this node).
    Api,
    /// The agent's local state, from before a restart (until the API answers).
    Saved,
    /// A static pod manifest.
    File,
}

/// What the worker is asked to make true.
#[derive(Debug, Clone)]
pub struct Desired {
    /// The pod as last seen.
    pub pod: Arc<Pod>,
    /// Gone from its source: stop everything and clean up.
    pub removed: bool,
    /// Where it comes from.
    pub source: Source,
}

/// What a pass decided about the future.
enum Next {
    /// Pass again at this instant (or on any change before).
    At(Instant),
    /// The pod is gone and cleaned up: the worker ends.
    Finished,
}

/// One pod's worker.
pub struct PodWorker {
    shared: Arc<Shared>,
    uid: String,
    rx: watch::Receiver<Desired>,
    /// The last failure to start each container (the kubelet's reason cache).
    start_failures: BTreeMap<String, Waiting>,
    /// Probe workers by (container name, kind).
    probes: BTreeMap<(String, &'static str), ProbeWorker>,
    /// Stops in progress by container id.
    stops: BTreeMap<String, ContainerStop>,
    /// The pod's IPs once its network is set up.
    pod_ips: Vec<String>,
    /// The pod as the API last showed it (the base of status patches).
    base: Option<Arc<Pod>>,
    /// The node is shutting down: statuses say so.
    shutting_down: bool,
    /// The pod's containers are gone and its object deleted: nothing is
    /// left to do or report until the watch says it is gone.
    finished: bool,
}

fn pod_name(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}

/// The runtime id of `container`'s `restart`-th instance in pod `uid`:
/// deterministic, so a create interrupted by a crash is found again.
pub fn container_id(uid: &str, name: &str, restart: i32) -> String {
    let mut h = Sha256::new();
    h.update(uid.as_bytes());
    h.update(b"/");
    h.update(name.as_bytes());
    h.update(b"/");
    h.update(restart.to_string().as_bytes());
    hex::encode(h.finalize())
}

/// The pod's cgroup: `/kubepods[/<qos>]/pod<uid>`, as the kubelet's cgroupfs
/// driver names it.
pub fn pod_cgroup(parent: &Path, pod: &Pod) -> PathBuf {
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    match status::qos_class(pod) {
        "Guaranteed" => parent.join(format!("pod{uid}")),
        "Burstable" => parent.join("burstable").join(format!("pod{uid}")),
        _ => parent.join("besteffort").join(format!("pod{uid}")),
    }
}

/// The repository part of a normalised image name (no tag, no digest).
fn repository(name: &str) -> &str {
    let name = name.split('@').next().unwrap_or(name);
    let slash = name.rfind('/').map_or(0, |i| i + 1);
    match name[slash..].rfind(':') {
        Some(colon) => &name[..slash + colon],
        None => name,
    }
}

/// Reads a small file of the container's root file system without following
/// a symlink in `etc` or the file itself (it could point anywhere on the node).
fn read_in_rootfs(rootfs: &Path, relative: &str) -> Option<String> {
    let mut path = rootfs.to_path_buf();
    for part in relative.split('/') {
        path.push(part);
        if fs::symlink_metadata(&path).ok()?.file_type().is_symlink() {
            return None;
        }
    }
    let text = fs::read(&path).ok()?;
    // A passwd file bigger than this is not one anyone meant.
    (text.len() <= 1 << 20).then(|| String::from_utf8_lossy(&text).into_owned())
}

fn all_containers(pod: &Pod) -> impl Iterator<Item = &Container> {
    pod.spec.iter().flat_map(|s| {
        s.init_containers
            .iter()
            .flatten()
            .chain(s.containers.iter())
    })
}

fn spec_of<'a>(pod: &'a Pod, name: &str) -> Option<&'a Container> {
    all_containers(pod).find(|c| c.name == name)
}

/// The runtime's containers of one pod, newest instance first per name.
struct Observed {
    infos: Vec<ContainerInfo>,
}

impl Observed {
    fn restart_count(info: &ContainerInfo) -> i32 {
        info.label(LABEL_RESTART_COUNT)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// Instances of container `name`, newest first.
    fn of(&self, name: &str) -> Vec<&ContainerInfo> {
        let mut v: Vec<&ContainerInfo> = self
            .infos
            .iter()
            .filter(|i| i.label(LABEL_CONTAINER_NAME) == Some(name))
            .collect();
        v.sort_by_key(|i| std::cmp::Reverse(Self::restart_count(i)));
        v
    }

    fn latest(&self, name: &str) -> Option<&ContainerInfo> {
        self.of(name).into_iter().next()
    }

    fn live(&self) -> impl Iterator<Item = &ContainerInfo> {
        self.infos
            .iter()
            .filter(|i| i.state != ContainerState::Exited)
    }

    fn for_status(&self) -> Vec<ObservedContainer> {
        self.infos
            .iter()
            .filter_map(|i| {
                let image = i.label(LABEL_IMAGE).unwrap_or_default();
                let image_id = i.label(LABEL_IMAGE_ID).unwrap_or_default();
                match ObservedContainer::from_runtime(i, image, image_id) {
                    Ok(o) => Some(o),
                    Err(e) => {
                        tracing::warn!(container = %i.id, error = %e, "container ignored");
                        None
                    }
                }
            })
            .collect()
    }
}

fn to_system_time(t: &armlet_runtime::time::Timestamp) -> SystemTime {
    let secs = u64::try_from(t.unix_seconds()).unwrap_or(0);
    SystemTime::UNIX_EPOCH + Duration::new(secs, t.subsec_nanos())
}

impl PodWorker {
    /// A worker for pod `uid`, driven by `rx`.
    pub fn new(shared: Arc<Shared>, uid: String, rx: watch::Receiver<Desired>) -> Self {
        Self {
            shared,
            uid,
            rx,
            start_failures: BTreeMap::new(),
            probes: BTreeMap::new(),
            stops: BTreeMap::new(),
            pod_ips: Vec::new(),
            base: None,
            shutting_down: false,
            finished: false,
        }
    }

    /// Runs passes until the pod is gone, or until `stop` says the agent
    /// stops (the pod's containers keep running then).
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        loop {
            let next = self.pass().await;
            let at = match next {
                Next::Finished => break,
                Next::At(at) => at,
            };
            tokio::select! {
                changed = self.rx.changed() => {
                    if changed.is_err() {
                        break;
                    }
                }
                _ = tokio::time::sleep_until(at.into()) => {}
                _ = stop.wait_for(|s| *s) => break,
            }
        }
        self.shared.worker_finished(&self.uid);
    }

    async fn pass(&mut self) -> Next {
        let desired = self.rx.borrow_and_update().clone();
        let pod = desired.pod.clone();
        if desired.source == Source::Api {
            let newer = match &self.base {
                None => true,
                Some(b) => b.metadata.resource_version != pod.metadata.resource_version,
            };
            if newer {
                self.base = Some(pod.clone());
            }
        }
        let observed = match self.observe().await {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(pod = %pod_name(&pod), error = %e, "cannot list containers");
                return Next::At(Instant::now() + Duration::from_secs(1));
            }
        };
        if let Some(grace) = self.shared.node_shutdown() {
            return self.shut_down(&pod, &observed, grace).await;
        }
        if desired.removed || pod.metadata.deletion_timestamp.is_some() {
            return self.terminate(&desired, &observed).await;
        }
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        if matches!(phase, Some("Succeeded") | Some("Failed")) && observed.live().next().is_none() {
            // Terminal pods stay as they are until deleted.
            return Next::At(Instant::now() + RESYNC);
        }
        let mut wake = Instant::now() + RESYNC;
        match self.sync(&pod, &observed, &mut wake).await {
            Ok(()) => {}
            Err(e) => {
                tracing::warn!(pod = %pod_name(&pod), error = %e, "sync failed");
                wake = wake.min(Instant::now() + Duration::from_secs(2));
            }
        }
        // What the containers look like after this pass's actions.
        let observed = self.observe().await.unwrap_or(observed);
        self.report(&pod, &observed, false).await;
        Next::At(wake)
    }

    async fn observe(&self) -> Result<Observed, crate::runtime::RuntimeError> {
        let uid = self.uid.clone();
        let mut infos = self.shared.runtime.list().await?;
        infos.retain(|i| i.label(LABEL_POD_UID) == Some(uid.as_str()));
        Ok(Observed { infos })
    }

    fn pod_dir(&self, pod: &Pod) -> Result<PathBuf, String> {
        volumes::pod_dir(&self.shared.config.kubelet_root, pod).map_err(|e| e.to_string())
    }

    fn host_network(pod: &Pod) -> bool {
        pod.spec
            .as_ref()
            .and_then(|s| s.host_network)
            .unwrap_or(false)
    }

    /// Sandbox, network, files, cgroup, volumes, then containers.
    async fn sync(
        &mut self,
        pod: &Arc<Pod>,
        observed: &Observed,
        wake: &mut Instant,
    ) -> Result<(), String> {
        let shared = self.shared.clone();
        let config = &shared.config;
        let pod_dir = self.pod_dir(pod)?;
        fs::create_dir_all(&pod_dir).map_err(|e| format!("{}: {e}", pod_dir.display()))?;
        let host_network = Self::host_network(pod);
        let host_ipc = pod.spec.as_ref().and_then(|s| s.host_ipc).unwrap_or(false);
        let hostname =
            container::pod_hostname(pod, &config.dns.domain).map_err(|e| e.to_string())?;

        // The sandbox and its network.
        let sandbox_config = SandboxConfig {
            pod_id: self.uid.clone(),
            hostname: hostname.uts_hostname.clone(),
            host_network,
            host_ipc,
        };
        let sandbox_root = config.runtime_root.join("sandboxes");
        let sandbox =
            tokio::task::spawn_blocking(move || Sandbox::create(&sandbox_root, &sandbox_config))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("sandbox: {e}"))?;
        if host_network {
            self.pod_ips = config.host_ips.clone();
        } else if self.pod_ips.is_empty() {
            let network = shared
                .network()
                .ok_or("the node has no pod network yet (no podCIDR)")?;
            let net_path = sandbox
                .net_path()
                .ok_or("the sandbox has no network namespace")?
                .to_path_buf();
            let uid = self.uid.clone();
            let address = tokio::task::spawn_blocking(move || network.attach(&uid, &net_path))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("pod network: {e}"))?;
            self.pod_ips = vec![address.ip.to_string()];
        }

        // /etc/hosts, hostname, resolv.conf.
        let aliases = pod
            .spec
            .as_ref()
            .and_then(|s| s.host_aliases.clone())
            .unwrap_or_default();
        let hosts = if host_network {
            let node_hosts = fs::read_to_string("/etc/hosts").unwrap_or_default();
            container::host_network_hosts_file(&node_hosts, &aliases)
        } else {
            container::hosts_file(
                &self.pod_ips,
                &hostname.hostname,
                hostname.domain.as_deref(),
                &aliases,
            )
        };
        let etc_hosts = pod_dir.join("etc-hosts");
        write_if_changed(&etc_hosts, hosts.as_bytes(), 0o644)?;
        let etc_hostname = pod_dir.join("etc-hostname");
        let node_hostname = nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default();
        let shown_hostname = if host_network {
            node_hostname.clone()
        } else {
            hostname.uts_hostname.clone()
        };
        write_if_changed(
            &etc_hostname,
            format!("{shown_hostname}\n").as_bytes(),
            0o644,
        )?;
        let resolv = pod_dir.join("resolv.conf");
        let host_dns = crate::dns::HostDns::parse(
            &fs::read_to_string(&config.host_resolv_conf).unwrap_or_default(),
        );
        write_if_changed(
            &resolv,
            crate::dns::resolv_conf(pod, &config.dns, &host_dns).as_bytes(),
            0o644,
        )?;

        // The pod cgroup.
        let cgroup = pod_cgroup(&config.cgroup_parent, pod);
        let resources = pod_resources(pod);
        let cgroup_for_task = cgroup.clone();
        tokio::task::spawn_blocking(move || {
            armlet_runtime::cgroup::ensure_pod_cgroup(&cgroup_for_task, &resources)
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("pod cgroup: {e}"))?;

        // Objects the pod uses, then its volumes.
        let host_ips = config.host_ips.clone();
        let node = config.allocatable.clone();
        // Service links need the Services; an unreachable server leaves the
        // last list (or the lookup error) in place.
        let _ = shared.objects.refresh_services().await;
        let objects_error = shared.objects.refresh_for(pod).await.err();
        let tokens_error = shared.tokens.refresh_for(pod).await.err();
        let pod_ips = self.pod_ips.clone();
        let ctx = PodContext {
            pod,
            host_ips: &host_ips,
            pod_ips: &pod_ips,
            node: &node,
        };
        let plan = volumes::plan(
            pod,
            &config.kubelet_root,
            &volumes::PlanOptions {
                secrets_in_memory: true,
                node_allocatable_memory: node.memory,
            },
        )
        .map_err(|e| e.to_string())?;
        let offline = objects_error.is_some() || tokens_error.is_some();
        let mounted = match self.materialise(&plan, &ctx, offline) {
            Ok(m) => m,
            Err(e) => {
                let mut message = format!("MountVolume.SetUp failed: {e}");
                if let Some(err) = objects_error.or(tokens_error) {
                    message.push_str(&format!(" ({err})"));
                }
                for c in all_containers(pod) {
                    self.start_failures
                        .entry(c.name.clone())
                        .or_insert_with(|| Waiting::new("ContainerCreating", message.clone()));
                }
                *wake = (*wake).min(Instant::now() + Duration::from_secs(2));
                return Err(message);
            }
        };
        if offline {
            // Projected files are rewritten once the server answers again.
            *wake = (*wake).min(Instant::now() + Duration::from_secs(5));
        }
        let namespaces = Namespaces {
            net: join_or_host(sandbox.net_path()),
            ipc: join_or_host(sandbox.ipc_path()),
            uts: join_or_host(sandbox.uts_path()),
            pid: Namespace::Private,
            cgroup: if armlet_runtime::cgroup::unified() {
                Namespace::Private
            } else {
                Namespace::Host
            },
        };
        let base_inputs = RuntimeInputs {
            rootfs: PathBuf::new(),
            cgroups_path: cgroup.clone(),
            namespaces,
            shm: None,
            hostname: shown_hostname,
            etc_hosts: Some(etc_hosts),
            etc_hostname: Some(etc_hostname),
            resolv_conf: Some(resolv),
            termination_log: None,
            cgroup_v2: armlet_runtime::cgroup::unified(),
            memory_capacity: config.memory_capacity,
            seccomp_root: config.kubelet_root.join("seccomp"),
        };
        let starter = Starter {
            pod,
            ctx: &ctx,
            mounted: &mounted,
            pod_dir: &pod_dir,
            inputs: &base_inputs,
        };

        // Which containers to start (computePodActions).
        let spec = pod.spec.as_ref().ok_or("the pod has no spec")?;
        let policy = spec.restart_policy.as_deref().unwrap_or("Always");
        let mut init_done = true;
        for c in spec.init_containers.iter().flatten() {
            match observed.latest(&c.name) {
                Some(i) if i.state != ContainerState::Exited => {
                    init_done = false;
                    break;
                }
                Some(i) if i.exit.as_ref().is_some_and(|e| e.exit_code == 0) => continue,
                Some(i) => {
                    init_done = false;
                    if policy != "Never" {
                        self.restart(c, i, &starter, wake).await;
                    }
                    break;
                }
                None => {
                    init_done = false;
                    let first = self.first_restart_count(starter.pod, c);
                    self.start(c, first, &starter).await;
                    break;
                }
            }
        }
        if !init_done {
            return Ok(());
        }
        for c in &spec.containers {
            match observed.latest(&c.name) {
                None => {
                    let first = self.first_restart_count(pod, c);
                    self.start(c, first, &starter).await;
                }
                Some(i) if i.state == ContainerState::Created => {
                    // Created but never started (an interrupted start): go on.
                    let id = i.id.clone();
                    if let Err(e) = shared.runtime.call(move |cl| cl.start(&id)).await {
                        self.start_failures.insert(
                            c.name.clone(),
                            Waiting::new("RunContainerError", e.to_string()),
                        );
                    }
                }
                Some(i) if i.state == ContainerState::Running => {
                    self.check_probes(pod, c, i, wake).await;
                }
                Some(i) => {
                    let failed = i.exit.as_ref().is_none_or(|e| e.exit_code != 0);
                    let again = match policy {
                        "Never" => false,
                        "OnFailure" => failed,
                        _ => true,
                    };
                    if again {
                        self.restart(c, i, &starter, wake).await;
                    }
                }
            }
        }
        self.prune(observed).await;
        Ok(())
    }

    /// Sets the pod's volumes up, one by one. While the API server cannot be
    /// reached (`offline`), a volume of files from API objects that cannot
    /// be written keeps what it holds (or starts empty), so a node that
    /// rebooted without its server still runs its pods; the next passes
    /// write the files as soon as the server answers. Online, any failure
    /// holds the pod back, as the kubelet's does.
    fn materialise(
        &self,
        plan: &volumes::VolumePlan,
        ctx: &PodContext<'_>,
        offline: bool,
    ) -> Result<BTreeMap<String, volumes::MountedVolume>, volumes::VolumeError> {
        let mut mounted = BTreeMap::new();
        for volume in &plan.volumes {
            let one = volumes::VolumePlan {
                pod_dir: plan.pod_dir.clone(),
                volumes: vec![volume.clone()],
            };
            match volumes::materialise(&one, ctx, &self.shared.objects, &self.shared.tokens) {
                Ok(m) => mounted.extend(m),
                Err(e)
                    if offline && matches!(volume.source, volumes::VolumeSource::Files { .. }) =>
                {
                    tracing::warn!(volume = %volume.name, error = %e, "server unreachable: volume kept as it is");
                    fs::create_dir_all(&volume.path).map_err(|source| {
                        volumes::VolumeError::SetUp {
                            volume: volume.name.clone(),
                            message: source.to_string(),
                        }
                    })?;
                    mounted.insert(
                        volume.name.clone(),
                        volumes::MountedVolume {
                            path: volume.path.clone(),
                            read_only: volume.read_only,
                        },
                    );
                }
                Err(e) => return Err(e),
            }
        }
        Ok(mounted)
    }

    /// The restart count of a container the runtime has no instance of: 0 for
    /// a new pod, one more than the last log file's after a reboot (the
    /// runtime's records are on tmpfs; the logs, like containerd's records
    /// for the kubelet, survive it), so counts go on and `--previous` works.
    fn first_restart_count(&self, pod: &Pod, c: &Container) -> i32 {
        let dir = self.log_dir(pod, &c.name);
        let last = fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name();
                let name = name.to_str()?;
                name.strip_suffix(".log")?.parse::<i32>().ok()
            })
            .max();
        last.map_or(0, |n| n.saturating_add(1))
    }

    /// `<pod logs>/<namespace>_<name>_<uid>/<container>`.
    fn log_dir(&self, pod: &Pod, container: &str) -> PathBuf {
        let meta = &pod.metadata;
        self.shared
            .config
            .pod_logs
            .join(format!(
                "{}_{}_{}",
                meta.namespace.as_deref().unwrap_or("default"),
                meta.name.as_deref().unwrap_or_default(),
                self.uid
            ))
            .join(container)
    }

    /// Starts the next instance of an exited container, unless it is in
    /// CrashLoopBackOff.
    async fn restart(
        &mut self,
        c: &Container,
        last: &ContainerInfo,
        starter: &Starter<'_>,
        wake: &mut Instant,
    ) {
        let finished = last
            .exit
            .as_ref()
            .map(|e| to_system_time(&e.finished_at))
            .unwrap_or_else(SystemTime::now);
        let verdict = self
            .shared
            .restart_backoff
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .check(starter.pod, c, finished);
        match verdict {
            Ok(()) => {
                let next = Observed::restart_count(last).saturating_add(1);
                self.start(c, next, starter).await;
            }
            Err(waiting) => {
                let retry = self
                    .shared
                    .restart_backoff
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .retry_at(starter.pod, c, finished);
                if let Some(at) = retry {
                    let left = at.duration_since(SystemTime::now()).unwrap_or_default();
                    *wake = (*wake).min(Instant::now() + left + Duration::from_millis(50));
                }
                self.start_failures.insert(c.name.clone(), waiting);
            }
        }
    }

    /// Creates and starts instance `restart` of container `c`; a failure is
    /// kept as the container's waiting reason.
    async fn start(&mut self, c: &Container, restart: i32, starter: &Starter<'_>) {
        match self.try_start(c, restart, starter).await {
            Ok(()) => {
                self.start_failures.remove(&c.name);
            }
            Err(waiting) => {
                tracing::info!(pod = %pod_name(starter.pod), container = %c.name, reason = %waiting.reason, message = %waiting.message, "container not started");
                self.start_failures.insert(c.name.clone(), waiting);
            }
        }
    }

    async fn try_start(
        &mut self,
        c: &Container,
        restart: i32,
        starter: &Starter<'_>,
    ) -> Result<(), Waiting> {
        let shared = self.shared.clone();
        let pod = starter.pod;
        let (name, image_id) = self.ensure_image(pod, c).await?;
        let images = shared.images.clone();
        let image_name = name.clone();
        let (config, layers) = tokio::task::spawn_blocking(move || {
            let inspect = images.inspect(&image_name)?;
            let layers = images.layers(&image_name)?;
            Ok::<_, armlet_image::service::ServiceError>((inspect["config"].clone(), layers))
        })
        .await
        .map_err(|e| Waiting::new("CreateContainerError", e.to_string()))?
        .map_err(|e| Waiting::new("CreateContainerError", e.to_string()))?;
        let image_config = ImageConfig::from_oci(&config)
            .map_err(|e| Waiting::new("CreateContainerError", e.to_string()))?;

        let id = container_id(&self.uid, &c.name, restart);
        let images = shared.images.clone();
        let snapshot_id = id.clone();
        let rootfs =
            tokio::task::spawn_blocking(move || images.snapshots().prepare(&snapshot_id, &layers))
                .await
                .map_err(|e| Waiting::new("CreateContainerError", e.to_string()))?
                .map_err(|e| Waiting::new("CreateContainerError", format!("snapshot: {e}")))?;
        let users = UserDb {
            passwd: read_in_rootfs(&rootfs, "etc/passwd"),
            group: read_in_rootfs(&rootfs, "etc/group"),
        };
        let env = env::container_env(starter.ctx, c, &shared.objects)
            .map_err(|e| Waiting::new(e.reason(), e.to_string()))?;

        // The termination-message file of this instance.
        let term_dir = starter.pod_dir.join("containers").join(&c.name);
        fs::create_dir_all(&term_dir)
            .map_err(|e| Waiting::new("CreateContainerError", e.to_string()))?;
        let term_file = term_dir.join(&id[..16]);
        fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o666)
            .open(&term_file)
            .and_then(|f| f.set_permissions(fs::Permissions::from_mode(0o666)))
            .map_err(|e| Waiting::new("CreateContainerError", e.to_string()))?;

        let mut inputs = starter.inputs.clone();
        inputs.rootfs = rootfs;
        inputs.cgroups_path = inputs.cgroups_path.join(&id);
        inputs.termination_log = Some(term_file);
        let subpaths = SafeSubPaths {
            pod_dir: starter.pod_dir.to_path_buf(),
        };
        let plan = container::build(&ContainerInput {
            pod,
            container: c,
            env: &env,
            image: &image_config,
            users: &users,
            volumes: starter.mounted,
            subpaths: &subpaths,
            runtime: &inputs,
        })
        .map_err(|e| Waiting::new(e.reason(), e.to_string()))?;
        let spec = armlet_runtime::spec::build_spec(&plan.config)
            .map_err(|e| Waiting::new("CreateContainerConfigError", e.to_string()))?;
        let bundle = shared.config.runtime_root.join("bundles").join(&id);
        fs::create_dir_all(&bundle)
            .map_err(|e| Waiting::new("CreateContainerError", e.to_string()))?;
        spec.save(bundle.join("config.json"))
            .map_err(|e| Waiting::new("CreateContainerError", e.to_string()))?;

        let meta = &pod.metadata;
        let namespace = meta.namespace.clone().unwrap_or_else(|| "default".into());
        let pod_name = meta.name.clone().unwrap_or_default();
        let log_dir = self.log_dir(pod, &c.name);
        fs::create_dir_all(&log_dir)
            .map_err(|e| Waiting::new("CreateContainerError", e.to_string()))?;
        let log_path = log_dir.join(format!("{restart}.log"));
        let labels: BTreeMap<String, String> = [
            (LABEL_POD_UID, self.uid.clone()),
            (LABEL_POD_NAME, pod_name),
            (LABEL_POD_NAMESPACE, namespace),
            (LABEL_CONTAINER_NAME, c.name.clone()),
            (LABEL_RESTART_COUNT, restart.to_string()),
            (LABEL_IMAGE, c.image.clone().unwrap_or_default()),
            (LABEL_IMAGE_ID, image_id),
            (LABEL_STOP_SIGNAL, plan.stop_signal.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let create_id = id.clone();
        let created = shared
            .runtime
            .call(
                move |cl| match cl.create_with_labels(&create_id, &bundle, &log_path, labels) {
                    Err(e)
                        if e.kind() == Some(armlet_runtime::protocol::ErrorKind::AlreadyExists) =>
                    {
                        cl.status(&create_id)
                    }
                    other => other,
                },
            )
            .await
            .map_err(|e| Waiting::new("CreateContainerError", e.to_string()))?;
        if created.state == ContainerState::Created {
            let start_id = id.clone();
            shared
                .runtime
                .call(move |cl| cl.start(&start_id))
                .await
                .map_err(|e| Waiting::new("RunContainerError", e.to_string()))?;
        }
        tracing::info!(pod = %pod_name_of(pod), container = %c.name, id = %&id[..12], restart, "container started");
        Ok(())
    }

    /// Makes sure the container's image is on the node (pulling as its policy
    /// says); returns its normalised name and image ID.
    async fn ensure_image(&self, pod: &Pod, c: &Container) -> Result<(String, String), Waiting> {
        let shared = &self.shared;
        let image = c.image.as_deref().unwrap_or_default();
        let name = armlet_image::service::ImageService::normalise(image).map_err(|e| {
            Waiting::new(
                "InvalidImageName",
                format!("Failed to apply default image tag {image:?}: {e}"),
            )
        })?;
        let present = shared.images.get(&name).is_ok();
        let decision = shared
            .pull_backoff
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .decide(pod, c, present)?;
        if decision == armlet_pods::backoff::PullDecision::Pull {
            let mut options = armlet_image::pull::PullOptions::default();
            self.pull_secrets(pod, &mut options.secrets);
            let result = shared
                .images
                .pull(&name, &options, Arc::new(armlet_image::pull::NoProgress))
                .await;
            let mut backoff = shared
                .pull_backoff
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            match result {
                Ok(_) => backoff.succeeded(pod, c),
                Err(e) => return Err(backoff.failed(pod, c, &e.to_string())),
            }
        }
        let record = shared
            .images
            .get(&name)
            .map_err(|e| Waiting::new("ImageInspectError", e.to_string()))?;
        let image_id = format!("{}@{}", repository(&name), record.digest);
        Ok((name, image_id))
    }

    /// Credentials from the pod's imagePullSecrets (`.dockerconfigjson`, or the
    /// legacy `.dockercfg`).
    fn pull_secrets(&self, pod: &Pod, secrets: &mut armlet_image::secrets::PullSecrets) {
        use armlet_pods::objects::ObjectSource;
        let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
        for reference in pod
            .spec
            .iter()
            .flat_map(|s| s.image_pull_secrets.iter().flatten())
        {
            let Ok(Some(secret)) = self.shared.objects.secret(namespace, &reference.name) else {
                continue;
            };
            for key in [".dockerconfigjson", ".dockercfg"] {
                if let Some(bytes) = secret.data.as_ref().and_then(|d| d.get(key)) {
                    if let Err(e) = secrets.add_docker_config(&bytes.0) {
                        tracing::warn!(secret = %reference.name, error = %e, "pull secret ignored");
                    }
                }
            }
        }
    }

    /// Steps the container's probes; a failed liveness or startup probe
    /// kills the instance (it is then restarted as its policy says).
    async fn check_probes(
        &mut self,
        pod: &Arc<Pod>,
        c: &Container,
        info: &ContainerInfo,
        wake: &mut Instant,
    ) {
        let started_at = info.started_at.as_ref().map(to_system_time);
        let running_for = started_at.map(|t| t.elapsed().unwrap_or_default());
        let startup_passed = match self
            .probes
            .get(&(c.name.clone(), ProbeKind::Startup.name()))
        {
            Some(w) if w.container_id() == info.id => w.result() == Some(true),
            Some(_) => false,
            None => true,
        };
        let pod_ip = self.pod_ips.first().cloned();
        for kind in [
            ProbeKind::Startup,
            ProbeKind::Liveness,
            ProbeKind::Readiness,
        ] {
            let Some(probe) = kind.of(c) else { continue };
            let key = (c.name.clone(), kind.name());
            if !self.probes.contains_key(&key) {
                match ProbeWorker::new(kind, probe) {
                    Ok(w) => {
                        self.probes.insert(key.clone(), w);
                    }
                    Err(e) => {
                        tracing::warn!(pod = %pod_name(pod), container = %c.name, error = %e, "probe ignored");
                        continue;
                    }
                }
            }
            // Liveness and readiness wait for the startup probe.
            if kind != ProbeKind::Startup && !startup_passed {
                continue;
            }
            let Some(worker) = self.probes.get_mut(&key) else {
                continue;
            };
            let target = ProbeTarget {
                container_id: &info.id,
                running_for,
                terminated: false,
                started: startup_passed,
                restart_never: pod.spec.as_ref().and_then(|s| s.restart_policy.as_deref())
                    == Some("Never"),
                deleting: false,
                pod_terminal: false,
            };
            match worker.step(Instant::now(), &target) {
                ProbeStep::Stop => {}
                ProbeStep::WaitUntil(at) => *wake = (*wake).min(at),
                ProbeStep::Probe => {
                    let outcome = match probes::probe_handler(probe, c, pod_ip.as_deref()) {
                        Ok(handler) => {
                            probes::run_with_retries(
                                &handler,
                                &info.id,
                                worker.params().timeout,
                                &self.shared.runtime,
                            )
                            .await
                        }
                        Err(e) => ProbeOutcome::Error(e.to_string()),
                    };
                    tracing::debug!(pod = %pod_name(pod), container = %c.name, probe = kind.name(), outcome = ?outcome, "probed");
                    worker.record(&outcome);
                    *wake = (*wake).min(Instant::now() + worker.params().period);
                    if worker.needs_restart() {
                        tracing::info!(pod = %pod_name(pod), container = %c.name, probe = kind.name(), "probe failed, container will be restarted");
                        self.kill_now(pod, c, info, kind).await;
                    }
                }
            }
        }
    }

    /// Stops one instance with its grace period (a liveness/startup kill),
    /// waiting for it here: the pass that follows restarts it.
    async fn kill_now(&mut self, pod: &Pod, c: &Container, info: &ContainerInfo, kind: ProbeKind) {
        let reason = match kind {
            ProbeKind::Startup => KillReason::StartupProbe,
            _ => KillReason::LivenessProbe,
        };
        let signal = info
            .label(LABEL_STOP_SIGNAL)
            .and_then(|s| s.parse().ok())
            .unwrap_or(15);
        let (mut stop, _) = ContainerStop::for_container(
            pod,
            c,
            reason,
            self.pod_ips.first().map(String::as_str),
            signal,
            None,
        );
        let runtime = &self.shared.runtime;
        while let Some(until) = advance_stop(runtime, &mut stop, &info.id).await {
            // Waiting here: the pass that follows restarts the container.
            let soon = Instant::now() + Duration::from_millis(200);
            tokio::time::sleep_until(until.min(soon).into()).await;
            let id = info.id.clone();
            if let Ok(s) = runtime.call(move |cl| cl.status(&id)).await {
                if s.state == ContainerState::Exited {
                    stop.exited();
                }
            }
        }
    }

    /// Removes exited instances beyond the ones statuses and logs need.
    async fn prune(&self, observed: &Observed) {
        let names: BTreeSet<&str> = observed
            .infos
            .iter()
            .filter_map(|i| i.label(LABEL_CONTAINER_NAME))
            .collect();
        for name in names {
            for old in observed.of(name).into_iter().skip(KEEP_INSTANCES) {
                if old.state == ContainerState::Exited {
                    self.remove_instance(&old.id).await;
                }
            }
        }
    }

    async fn remove_instance(&self, id: &str) {
        if let Err(e) = self.shared.runtime.delete(id).await {
            tracing::warn!(container = %id, error = %e, "cannot remove container");
            return;
        }
        let images = self.shared.images.clone();
        let snapshot = id.to_owned();
        let _ = tokio::task::spawn_blocking(move || images.snapshots().remove(&snapshot)).await;
        let _ = fs::remove_dir_all(self.shared.config.runtime_root.join("bundles").join(id));
    }

    /// Node shutdown: every container stopped with its grace period (at most
    /// the shutdown's), then the pod reported Failed as the kubelet reports
    /// it. Nothing is cleaned up: the node is going down.
    async fn shut_down(&mut self, pod: &Arc<Pod>, observed: &Observed, grace: Duration) -> Next {
        let cap = i64::try_from(grace.as_secs()).unwrap_or(i64::MAX);
        let wake = self.stop_live(pod, observed, Some(cap)).await;
        let running = observed.live().next().is_some();
        self.shutting_down = true;
        self.report(pod, observed, !running).await;
        if running {
            let soon = Instant::now() + Duration::from_millis(200);
            return Next::At(wake.map_or(soon, |w| w.min(soon)));
        }
        Next::At(Instant::now() + RESYNC)
    }

    /// Steps the stop of every live container (preStop, signal, grace,
    /// SIGKILL); the instant the next step is due, if any.
    async fn stop_live(
        &mut self,
        pod: &Pod,
        observed: &Observed,
        cap: Option<i64>,
    ) -> Option<Instant> {
        let mut wake: Option<Instant> = None;
        let pod_ip = self.pod_ips.first().cloned();
        for info in observed.live() {
            let name = info
                .label(LABEL_CONTAINER_NAME)
                .unwrap_or_default()
                .to_owned();
            let default = Container::default();
            let c = spec_of(pod, &name).unwrap_or(&default);
            let signal = info
                .label(LABEL_STOP_SIGNAL)
                .and_then(|s| s.parse().ok())
                .unwrap_or(15);
            let stop = self.stops.entry(info.id.clone()).or_insert_with(|| {
                let grace = armlet_pods::termination::grace_period(pod, c, KillReason::Stop);
                let capped = cap.map(|cap| grace.min(cap));
                ContainerStop::for_container(
                    pod,
                    c,
                    KillReason::Stop,
                    pod_ip.as_deref(),
                    signal,
                    capped,
                )
                .0
            });
            if let Some(at) = advance_stop(&self.shared.runtime, stop, &info.id).await {
                wake = Some(wake.map_or(at, |w| w.min(at)));
            }
        }
        wake
    }

    /// Deletion: stop every container with its grace period, clean up, post
    /// the final status and (for API pods) delete the object.
    async fn terminate(&mut self, desired: &Desired, observed: &Observed) -> Next {
        let pod = desired.pod.clone();
        if self.finished && observed.infos.is_empty() {
            if desired.removed {
                return Next::Finished;
            }
            return Next::At(Instant::now() + RESYNC);
        }
        let wake = self.stop_live(&pod, observed, None).await;
        let running = observed.live().next().is_some();
        if running {
            // Exits are noticed by the runtime's relist; look again soon.
            let soon = Instant::now() + Duration::from_millis(200);
            self.report(&pod, observed, false).await;
            return Next::At(wake.map_or(soon, |w| w.min(soon)));
        }
        self.report(&pod, observed, true).await;
        if let Err(e) = self.clean_up(&pod, observed).await {
            tracing::warn!(pod = %pod_name(&pod), error = %e, "cleanup failed; retrying");
            return Next::At(Instant::now() + Duration::from_secs(2));
        }
        if desired.source == Source::Api && !desired.removed {
            if let Err(e) = self.final_delete(&pod).await {
                tracing::warn!(pod = %pod_name(&pod), error = %e, "final delete failed; retrying");
                return Next::At(Instant::now() + Duration::from_secs(2));
            }
        }
        self.finished = true;
        if !desired.removed {
            // The object is going; the watch's DELETED ends the worker.
            return Next::At(Instant::now() + RESYNC);
        }
        tracing::info!(pod = %pod_name(&pod), "pod removed");
        Next::Finished
    }

    /// Everything the pod had on the node, except its logs.
    async fn clean_up(&mut self, pod: &Pod, observed: &Observed) -> Result<(), String> {
        for info in &observed.infos {
            self.remove_instance(&info.id).await;
        }
        self.stops.clear();
        self.probes.clear();
        let shared = self.shared.clone();
        let uid = self.uid.clone();
        if !Self::host_network(pod) {
            if let Some(network) = shared.network() {
                let uid = uid.clone();
                tokio::task::spawn_blocking(move || network.detach(&uid))
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| format!("pod network: {e}"))?;
            }
        }
        let root = shared.config.runtime_root.join("sandboxes");
        let sandbox_uid = uid.clone();
        tokio::task::spawn_blocking(move || armlet_runtime::sandbox::remove(&root, &sandbox_uid))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("sandbox: {e}"))?;
        let cgroup = pod_cgroup(&shared.config.cgroup_parent, pod);
        let _ =
            tokio::task::spawn_blocking(move || armlet_runtime::cgroup::remove_pod_cgroup(&cgroup))
                .await;
        if let Ok(dir) = self.pod_dir(pod) {
            volumes::remove_pod_dir(&dir).map_err(|e| format!("volumes: {e}"))?;
        }
        shared.tokens.forget(&uid);
        self.pod_ips.clear();
        Ok(())
    }

    async fn final_delete(&self, pod: &Pod) -> Result<(), kube::Error> {
        let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.shared.client.clone(), namespace);
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(self.uid.clone()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match api.delete(name, &params).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Computes the status and patches it when the API shows another.
    async fn report(&mut self, pod: &Arc<Pod>, observed: &Observed, terminal: bool) {
        let base = self.base.clone().unwrap_or_else(|| pod.clone());
        let containers = observed.for_status();
        let probes = self.probe_results(observed);
        let host_ips = self.shared.config.host_ips.clone();
        let mut status = status::pod_status(&StatusInput {
            pod: &base,
            host_ips: &host_ips,
            pod_ips: if Self::host_network(pod) {
                &[]
            } else {
                &self.pod_ips
            },
            containers: &containers,
            start_failures: &self.start_failures,
            probes: &probes,
            terminal,
            now: k8s_openapi::chrono::Utc::now(),
        });
        if self.shutting_down && terminal {
            // The kubelet's node shutdown manager (1.22+ wording).
            status.phase = Some("Failed".into());
            status.reason = Some("Terminated".into());
            status.message =
                Some("Pod was terminated in response to imminent node shutdown.".into());
        }
        let target = match self.shared.status_target(pod) {
            Some(t) => t,
            None => return,
        };
        let old = match &target.current {
            Some(p) => serde_json::to_value(&p.status).unwrap_or_default(),
            None => serde_json::to_value(&base.status).unwrap_or_default(),
        };
        let new = serde_json::to_value(&status).unwrap_or_default();
        let Some(patch) = crate::status_patch::status_patch(&target.uid, &old, &new) else {
            return;
        };
        let api: Api<Pod> = Api::namespaced(self.shared.client.clone(), &target.namespace);
        match api
            .patch_status(
                &target.name,
                &PatchParams::default(),
                &Patch::Strategic(patch),
            )
            .await
        {
            Ok(updated) => {
                if target.current.is_none() {
                    self.base = Some(Arc::new(updated));
                }
            }
            Err(e) => {
                tracing::debug!(pod = %pod_name(pod), error = %e, "status not patched");
            }
        }
    }

    fn probe_results(&self, observed: &Observed) -> ProbeResults {
        let mut results = ProbeResults::default();
        // Keyed by instance, as the kubelet's results manager keys them.
        for ((name, kind), worker) in &self.probes {
            let current = observed.latest(name).map(|i| i.id.as_str());
            if current != Some(worker.container_id()) {
                continue;
            }
            let id = worker.container_id().to_owned();
            let value = worker.result().unwrap_or(false);
            if *kind == ProbeKind::Readiness.name() {
                results.readiness.insert(id, value);
            } else if *kind == ProbeKind::Startup.name() {
                results.startup.insert(id, value);
            }
        }
        results
    }
}

fn pod_name_of(pod: &Pod) -> String {
    pod_name(pod)
}

/// Takes a container's stop as far as it goes now (preStop hook, signals);
/// the instant it must be looked at again, or `None` once it is done.
async fn advance_stop(runtime: &Runtime, stop: &mut ContainerStop, id: &str) -> Option<Instant> {
    loop {
        match stop.poll(Instant::now()) {
            StopStep::Done => return None,
            StopStep::Signal(s) => {
                if let Err(e) = runtime.kill(id, s).await {
                    tracing::warn!(container = %id, error = %e, "cannot signal container");
                }
            }
            StopStep::RunPreStop { handler, deadline } => {
                let timeout = deadline.saturating_duration_since(Instant::now());
                let outcome = probes::run(&handler, id, timeout, runtime).await;
                if !matches!(outcome, ProbeOutcome::Success(_)) {
                    tracing::info!(container = %id, outcome = ?outcome, "preStop hook failed");
                }
                stop.pre_stop_finished(Instant::now());
            }
            StopStep::Wait { until } => {
                return Some(until.unwrap_or_else(|| Instant::now() + Duration::from_secs(1)));
            }
        }
    }
}

/// What a pass hands to each container start.
struct Starter<'a> {
    pod: &'a Pod,
    ctx: &'a PodContext<'a>,
    mounted: &'a BTreeMap<String, volumes::MountedVolume>,
    pod_dir: &'a Path,
    inputs: &'a RuntimeInputs,
}

fn join_or_host(path: Option<&Path>) -> Namespace {
    match path {
        Some(p) => Namespace::Join(p.to_path_buf()),
        None => Namespace::Host,
    }
}

/// The pod cgroup's limits (`ResourceConfigForPod`): CPU shares from the sum
/// of requests; memory and CPU quota only when every container has a limit.
fn pod_resources(pod: &Pod) -> Resources {
    use armlet_pods::quantity::Quantity;
    let Some(spec) = pod.spec.as_ref() else {
        return Resources::default();
    };
    let get = |c: &Container, which: &str, resource: &str| -> Option<Quantity> {
        let r = c.resources.as_ref()?;
        let map = if which == "limits" {
            r.limits.as_ref()
        } else {
            r.requests.as_ref()
        };
        map?.get(resource).and_then(|q| Quantity::try_from(q).ok())
    };
    let mut cpu_request: i64 = 0;
    let mut cpu_limit: Option<i64> = Some(0);
    let mut memory_limit: Option<i64> = Some(0);
    for c in &spec.containers {
        let request = get(c, "requests", "cpu").or_else(|| get(c, "limits", "cpu"));
        cpu_request = cpu_request.saturating_add(request.map_or(0, |q| q.milli_value()));
        cpu_limit = match (cpu_limit, get(c, "limits", "cpu")) {
            (Some(sum), Some(q)) if q.is_positive() => Some(sum.saturating_add(q.milli_value())),
            _ => None,
        };
        memory_limit = match (memory_limit, get(c, "limits", "memory")) {
            (Some(sum), Some(q)) if q.is_positive() => Some(sum.saturating_add(q.value())),
            _ => None,
        };
    }
    let shares = armlet_runtime::spec::cpu_shares(u64::try_from(cpu_request).unwrap_or(0));
    let period = armlet_runtime::spec::DEFAULT_CPU_PERIOD;
    Resources {
        cpu_shares: Some(shares),
        cpu_quota: cpu_limit
            .map(|m| armlet_runtime::spec::cpu_quota(u64::try_from(m).unwrap_or(0), period)),
        cpu_period: cpu_limit.map(|_| period),
        memory_limit,
        ..Resources::default()
    }
}

/// Writes `bytes` unless the file already holds them (flash wear: a pass runs
/// every ten seconds).
fn write_if_changed(path: &Path, bytes: &[u8], mode: u32) -> Result<(), String> {
    if fs::read(path).ok().as_deref() == Some(bytes) {
        return Ok(());
    }
    armlet_runtime::state::write_atomic(path, bytes, mode)
        .map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_ids_are_stable_and_differ_per_instance() {
        let a = container_id("u1", "c", 0);
        assert_eq!(a, container_id("u1", "c", 0));
        assert_ne!(a, container_id("u1", "c", 1));
        assert_ne!(a, container_id("u2", "c", 0));
        assert_eq!(a.len(), 64);
        armlet_runtime::protocol::validate_id(&a).unwrap();
    }

    #[test]
    fn repositories_drop_tags_and_digests_but_keep_ports() {
        assert_eq!(
            repository("docker.io/library/busybox:1.36"),
            "docker.io/library/busybox"
        );
        assert_eq!(
            repository("127.0.0.1:5000/busybox:latest"),
            "127.0.0.1:5000/busybox"
        );
        assert_eq!(
            repository("127.0.0.1:5000/busybox@sha256:ab"),
            "127.0.0.1:5000/busybox"
        );
        assert_eq!(repository("busybox"), "busybox");
    }

    #[test]
    fn pod_cgroups_follow_the_qos_class() {
        let pod: Pod = serde_yaml_ng::from_str(
            "metadata: {uid: u1}\nspec: {containers: [{name: c, resources: {limits: {cpu: 100m, memory: 64Mi}}}]}",
        )
        .unwrap();
        assert_eq!(
            pod_cgroup(Path::new("/kubepods"), &pod),
            Path::new("/kubepods/podu1")
        );
        let r = pod_resources(&pod);
        assert_eq!(r.memory_limit, Some(64 << 20));
        assert_eq!(r.cpu_quota, Some(10_000));
        let pod: Pod =
            serde_yaml_ng::from_str("metadata: {uid: u2}\nspec: {containers: [{name: c}]}")
                .unwrap();
        assert_eq!(
            pod_cgroup(Path::new("/kubepods"), &pod),
            Path::new("/kubepods/besteffort/podu2")
        );
        assert_eq!(pod_resources(&pod).memory_limit, None);
    }
}
