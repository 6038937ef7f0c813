//! `armlet agent`: the node daemon: the join (token, CA pinned by its hash,
//! node password, certificates), the Node's upkeep (registration, Lease,
//! conditions) and the kubelet (the node's pods, their network and status).

use std::path::PathBuf;

use anyhow::{Context as _, Result};

/// `armlet agent` flags: k3s agent's, plus what tests need.
#[derive(Debug, clap::Args)]
pub struct AgentCmd {
    /// The k3s-agent-compatible flags and config file.
    #[command(flatten)]
    pub join: armlet_join::AgentArgs,
    /// The node password file (k3s: /etc/rancher/node/password; tests keep
    /// theirs elsewhere).
    #[arg(long, hide = true, value_name = "FILE")]
    pub node_password_file: Option<PathBuf>,
    /// Seconds between Lease renewals (kubelet: 10).
    #[arg(long, hide = true, default_value_t = 10)]
    pub lease_interval: u64,
    /// The resolv.conf whose settings pods with dnsPolicy Default get, and
    /// whose search domains others add (k3s agent's `--resolv-conf`).
    #[arg(long, value_name = "FILE", default_value = "/etc/resolv.conf")]
    pub resolv_conf: PathBuf,
    /// The kubelet's directory: pod directories and volumes.
    #[arg(
        long,
        hide = true,
        value_name = "DIR",
        default_value = "/var/lib/kubelet"
    )]
    pub kubelet_root: PathBuf,
    /// Where container logs go.
    #[arg(long, hide = true, value_name = "DIR", default_value = "/var/log/pods")]
    pub pod_log_dir: PathBuf,
    /// The image directory (as `armlet images --root`).
    #[arg(long, hide = true, value_name = "DIR", default_value = crate::images::DEFAULT_IMAGES_ROOT, env = "ARMLET_IMAGES_ROOT")]
    pub images_root: PathBuf,
    /// k3s's registries.yaml (mirrors, rewrites, credentials, TLS).
    #[arg(long, hide = true, value_name = "FILE", default_value = crate::images::DEFAULT_REGISTRIES, env = "ARMLET_REGISTRIES")]
    pub registries: PathBuf,
    /// Seconds pods get to stop when the node shuts down (SIGPWR, sent by
    /// the firmware's shutdown script; the kubelet's `shutdownGracePeriod`).
    /// SIGTERM only stops the agent: its pods keep running for the next one.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    pub shutdown_grace_period: u64,
    /// The cgroup all pods live under.
    #[arg(long, hide = true, value_name = "PATH", default_value = "/kubepods")]
    pub cgroup_parent: PathBuf,
}

/// A tracing subscriber on stderr, filtered by `ARMLET_LOG` (default
/// `info`).
fn init_logging() {
    let level = match std::env::var("ARMLET_LOG").as_deref() {
        Ok("trace") => tracing::Level::TRACE,
        Ok("debug") => tracing::Level::DEBUG,
        Ok("warn") => tracing::Level::WARN,
        Ok("error") => tracing::Level::ERROR,
        _ => tracing::Level::INFO,
    };
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

/// SIGPWR's number (30 on x86 and ARM Linux).
fn libc_sigpwr() -> i32 {
    nix::sys::signal::Signal::SIGPWR as i32
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
}

/// What the last successful join learnt that the kubelet needs, kept in
/// `<data-dir>/agent/armlet-join.json`: a board that reboots while the server
/// is unreachable starts its pods from it (no secrets in it; the credentials
/// stay in the kubeconfig and key files the join wrote).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct LastJoin {
    node_name: String,
    node_ips: Vec<std::net::IpAddr>,
    kubeconfig: PathBuf,
    cluster_dns: Vec<std::net::IpAddr>,
    cluster_domain: String,
    cluster_cidrs: Vec<String>,
}

impl LastJoin {
    fn path(data_dir: &std::path::Path) -> PathBuf {
        data_dir.join("agent").join("armlet-join.json")
    }

    fn of(joined: &armlet_join::Joined) -> Self {
        let control = &joined.control;
        Self {
            node_name: joined.node_name.clone(),
            node_ips: joined.node_ips.clone(),
            kubeconfig: joined.kubeconfig.clone(),
            cluster_dns: control.cluster_dns.clone(),
            cluster_domain: control.cluster_domain.clone(),
            cluster_cidrs: control
                .cluster_cidrs
                .iter()
                .map(ToString::to_string)
                .collect(),
        }
    }

    /// The record of an earlier join of this node, if it is usable.
    fn load(data_dir: &std::path::Path, node_name: &str) -> Option<Self> {
        let path = Self::path(data_dir);
        let bytes = std::fs::read(&path).ok()?;
        match serde_json::from_slice::<Self>(&bytes) {
            Ok(last) if last.node_name == node_name && last.kubeconfig.is_file() => Some(last),
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "ignoring an unreadable join record");
                None
            }
        }
    }

    /// Written only when it changed (flash wear).
    fn save(&self, data_dir: &std::path::Path) -> Result<()> {
        let path = Self::path(data_dir);
        let bytes = serde_json::to_vec_pretty(self)?;
        if std::fs::read(&path).ok().as_deref() == Some(bytes.as_slice()) {
            return Ok(());
        }
        armlet_runtime::state::write_atomic(&path, &bytes, 0o644)
            .with_context(|| format!("writing {}", path.display()))
    }
}

/// The kubelet's settings from the flags and what the join learnt.
fn kubelet_config(
    cmd: &AgentCmd,
    runtime_root: &std::path::Path,
    config: &armlet_join::AgentConfig,
    last: &LastJoin,
) -> Result<armlet_kubelet::KubeletConfig> {
    let host = armlet_node::measure::Host::new(&config.data_dir);
    let memory = host.memory().map(|m| m.total).unwrap_or(0);
    let cluster_cidrs = last
        .cluster_cidrs
        .iter()
        .filter_map(|c| c.parse().ok())
        .collect();
    Ok(armlet_kubelet::KubeletConfig {
        node_name: last.node_name.clone(),
        host_ips: last.node_ips.iter().map(ToString::to_string).collect(),
        kubelet_root: cmd.kubelet_root.clone(),
        pod_logs: cmd.pod_log_dir.clone(),
        runtime_root: runtime_root.to_path_buf(),
        armlet_binary: std::env::current_exe().context("finding the armlet program")?,
        cgroup_parent: cmd.cgroup_parent.clone(),
        dns: armlet_kubelet::dns::ClusterDns {
            servers: last.cluster_dns.clone(),
            domain: if last.cluster_domain.is_empty() {
                "cluster.local".into()
            } else {
                last.cluster_domain.clone()
            },
        },
        host_resolv_conf: cmd.resolv_conf.clone(),
        allocatable: armlet_pods::env::NodeAllocatable {
            memory: Some(armlet_pods::quantity::Quantity::from_units(
                i64::try_from(memory).unwrap_or(i64::MAX),
            )),
            ..Default::default()
        },
        memory_capacity: i64::try_from(memory).unwrap_or(i64::MAX),
        state_path: config.data_dir.join("agent").join("kubelet.redb"),
        bridge: "cni0".into(),
        cluster_cidrs,
        mtu: 1450,
        ipam_dir: config.data_dir.join("agent").join("ipam"),
        manifests_dir: Some(config.data_dir.join("agent").join("pod-manifests")),
    })
}

/// The node's image service, as `armlet images` opens it.
fn image_service(cmd: &AgentCmd) -> Result<armlet_image::service::ImageService> {
    let registries = armlet_image::registries::Registries::load(&cmd.registries)
        .with_context(|| format!("reading {}", cmd.registries.display()))?;
    armlet_image::service::ImageService::open(&cmd.images_root, registries)
        .with_context(|| format!("opening the image directory {}", cmd.images_root.display()))
}

/// Runs the agent until SIGTERM/SIGINT.
pub fn run(cmd: &AgentCmd, runtime_root: &std::path::Path) -> Result<()> {
    init_logging();
    let config = armlet_join::AgentConfig::load(&cmd.join).context("configuration")?;
    let mut settings = config.join_settings();
    if let Some(path) = &cmd.node_password_file {
        settings.node_password_file = path.clone();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        // Runtime, sandbox, network and store calls block: a burst of pods
        // queues on a few dozen threads instead of growing hundreds (an exec
        // probe that hangs holds one until its process ends).
        .max_blocking_threads(32)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let stop_tx = std::sync::Arc::new(stop_tx);
        let on_signal = stop_tx.clone();
        tokio::spawn(async move {
            shutdown_signal().await;
            let _ = on_signal.send(true);
        });
        let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let images = std::sync::Arc::new(image_service(cmd)?);
        // A node that joined before runs its pods at once, from its local
        // state, while the join is retried (a board rebooting with the server
        // out of reach); a new node joins first.
        let (last, joined_now) = match LastJoin::load(&config.data_dir, &config.node_name) {
            Some(last) => (last, None),
            None => {
                let joined =
                    armlet_join::join_with_retry(&settings, None, stopped(stop_rx.clone()))
                        .await
                        .context("joining the cluster")?;
                let last = LastJoin::of(&joined);
                last.save(&config.data_dir)?;
                (last, Some(joined))
            }
        };
        let client = armlet_node::client_from_kubeconfig(&last.kubeconfig)
            .await
            .context("the kubelet's API client")?;
        let kubelet = armlet_kubelet::Kubelet::new(
            kubelet_config(cmd, runtime_root, &config, &last)?,
            client,
            images,
        )
        .context("starting the kubelet")?;
        let readiness = kubelet.readiness();
        let ready_probe = kubelet.readiness();
        // SIGPWR: the node is going down. Pods are stopped with their grace
        // periods and reported, then the agent stops.
        let node_shutdown = kubelet.shutdown_handle();
        let grace = std::time::Duration::from_secs(cmd.shutdown_grace_period);
        let on_power = stop_tx.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let Ok(mut power) = signal(SignalKind::from_raw(libc_sigpwr())) else {
                return;
            };
            if power.recv().await.is_some() {
                node_shutdown.shut_down_node(grace).await;
                let _ = on_power.send(true);
            }
        });
        let (node_tx, node_rx) = tokio::sync::watch::channel(None);
        let kubelet_task = tokio::spawn(kubelet.run(node_rx, stopped(stop_rx.clone())));

        let rejoined = match joined_now {
            Some(joined) => Ok(joined),
            None => armlet_join::join_with_retry(&settings, None, stopped(stop_rx.clone())).await,
        };
        let joined = match rejoined {
            Ok(joined) => joined,
            Err(armlet_join::JoinError::Cancelled) => {
                let _ = kubelet_task.await;
                tracing::info!("stopped");
                return Ok(());
            }
            Err(e) => return Err(e).context("joining the cluster"),
        };
        tracing::info!(node = %joined.node_name, "joined");
        if let Err(e) = LastJoin::of(&joined).save(&config.data_dir) {
            tracing::warn!(error = %e, "the join record was not saved");
        }
        let client = armlet_node::client_from_kubeconfig(&joined.kubeconfig)
            .await
            .context("the kubelet's API client")?;
        let internal = joined
            .node_ips
            .first()
            .copied()
            .context("the node has no address")?;
        let mut node = armlet_node::NodeSettings::new(joined.node_name.clone(), internal);
        node.internal_ips = joined.node_ips.clone();
        node.data_dir = config.data_dir.clone();
        node.labels = config
            .node_labels
            .iter()
            .map(|l| (l.key.clone(), l.value.clone()))
            .collect();
        node.taints = config
            .node_taints
            .iter()
            .map(|t| k8s_openapi::api::core::v1::Taint {
                key: t.key.clone(),
                value: (!t.value.is_empty()).then(|| t.value.clone()),
                effect: t.effect.as_str().to_owned(),
                time_added: None,
            })
            .collect();
        node.node_args = armlet_node::object::redact_args(std::env::args().skip(1));
        node.node_env = armlet_node::object::redact_env(std::env::vars(), "ARMLET_");
        let renew = std::time::Duration::from_secs(cmd.lease_interval.max(1));
        node.intervals.lease_renew = renew;
        node.intervals.status_update = renew;
        let agent = armlet_node::NodeAgent::new(client, node, readiness);
        // A readiness change (the pod network coming up after the podCIDR
        // arrives) is reported at once, not at the next status interval.
        let nudge = agent.status_nudge();
        tokio::spawn(async move {
            let mut last = ready_probe().is_ok();
            loop {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                let now = ready_probe().is_ok();
                if now != last {
                    nudge.notify_one();
                    last = now;
                }
            }
        });
        // The kubelet follows the Node (its podCIDR) as the upkeep sees it.
        let mut node_updates = agent.subscribe();
        tokio::spawn(async move {
            loop {
                let current = node_updates.borrow_and_update().clone();
                if current.is_some() && node_tx.send(current).is_err() {
                    return;
                }
                if node_updates.changed().await.is_err() {
                    return;
                }
            }
        });
        agent.run(stopped(stop_rx)).await;
        let _ = kubelet_task.await;
        tracing::info!("stopped");
        Ok(())
    })
}
