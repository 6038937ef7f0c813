//! `armlet agent`: the node daemon. So far: the join (token, CA pinned by its
//! hash, node password, certificates) and the Node's upkeep (registration,
//! Lease, conditions); pods come next.

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

/// Runs the agent until SIGTERM/SIGINT.
pub fn run(cmd: &AgentCmd) -> Result<()> {
    init_logging();
    let config = armlet_join::AgentConfig::load(&cmd.join).context("configuration")?;
    let mut settings = config.join_settings();
    if let Some(path) = &cmd.node_password_file {
        settings.node_password_file = path.clone();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            shutdown_signal().await;
            let _ = stop_tx.send(true);
        });
        let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let joined = armlet_join::join_with_retry(&settings, None, stopped(stop_rx.clone()))
            .await
            .context("joining the cluster")?;
        tracing::info!(node = %joined.node_name, "joined");
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
        // Pods are not run yet: the node is ready as soon as it is registered.
        let agent = armlet_node::NodeAgent::new(client, node, || Ok::<(), String>(()));
        agent.run(stopped(stop_rx)).await;
        tracing::info!("stopped");
        Ok(())
    })
}
