//! `armlet-devserver`: a development control plane that speaks the K3s
//! server's wire protocol, for armlet's tests and demo only. **Never run it in
//! production**: it keeps its state in a data directory without a real
//! datastore, and implements only what an agent and `kubectl` need.
//!
//! Flags are spelled as `k3s server` spells them. On start it creates (or
//! reloads) its CAs and token under `--data-dir`, writes the admin kubeconfig,
//! and serves the supervisor API and the Kubernetes API on one HTTPS port.

mod api;
mod authz;
mod config;
mod controllers;
mod defaults;
mod http;
mod kubelet;
mod nodepassword;
mod patch;
mod pki;
mod selector;
mod server;
mod serviceaccount;
mod store;
mod supervisor;
mod table;
mod token;
mod validate;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use base64::Engine as _;
use clap::Parser;

use crate::config::{Cidr, Settings};
use crate::supervisor::{NodePasswords, Supervisor, write_private};

/// Development stand-in for a K3s server (tests and demos only; never
/// production).
#[derive(Debug, Parser)]
#[command(name = "armlet-devserver", version, about)]
struct Cli {
    /// Folder to hold state (K3s: /var/lib/rancher/k3s).
    #[arg(short = 'd', long, default_value = "/var/lib/armlet-devserver")]
    data_dir: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    bind_address: IpAddr,
    /// HTTPS listen port (supervisor and Kubernetes API).
    #[arg(long, default_value_t = 6443)]
    https_listen_port: u16,
    /// Address agents are told to use (the bind address by default).
    #[arg(long)]
    advertise_address: Option<IpAddr>,
    /// Shared secret used to join agents (K10 form or a bare password);
    /// generated and kept in the data dir when not given.
    #[arg(short = 't', long, env = "K3S_TOKEN")]
    token: Option<String>,
    /// Write the admin kubeconfig to this file (default <data-dir>/kubeconfig.yaml).
    #[arg(short = 'o', long, env = "K3S_KUBECONFIG_OUTPUT")]
    write_kubeconfig: Option<PathBuf>,
    /// Pod network.
    #[arg(long, default_value = "10.42.0.0/16")]
    cluster_cidr: String,
    /// Service network.
    #[arg(long, default_value = "10.43.0.0/16")]
    service_cidr: String,
    /// Cluster DNS address handed to kubelets.
    #[arg(long, default_value = "10.43.0.10")]
    cluster_dns: std::net::Ipv4Addr,
    /// Cluster domain.
    #[arg(long, default_value = "cluster.local")]
    cluster_domain: String,
    /// Extra names or addresses for the serving certificate (repeatable).
    #[arg(long)]
    tls_san: Vec<String>,
    /// Controller timings and the node CIDR size (hidden, spelled as
    /// kube-controller-manager's flags).
    #[command(flatten)]
    controllers: controllers::Flags,
}

fn main() -> Result<()> {
    // glibc gives each thread that allocates its own arena, and freed memory
    // stays in them: two arenas keep the resident set near what is in use.
    // SAFETY: called before any other thread exists; mallopt only sets a
    // tunable.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
    let cli = Cli::parse();
    let settings = Settings {
        kubeconfig: cli
            .write_kubeconfig
            .clone()
            .unwrap_or_else(|| cli.data_dir.join("kubeconfig.yaml")),
        data_dir: cli.data_dir.clone(),
        bind_address: cli.bind_address,
        https_port: cli.https_listen_port,
        advertise_address: cli.advertise_address.unwrap_or(cli.bind_address),
        cluster_cidr: Cidr::parse("--cluster-cidr", &cli.cluster_cidr)?,
        service_cidr: Cidr::parse("--service-cidr", &cli.service_cidr)?,
        cluster_dns: cli.cluster_dns,
        cluster_domain: cli.cluster_domain.clone(),
        tls_sans: cli.tls_san.clone(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let controller_config = controllers::Config::new(settings.cluster_cidr, &cli.controllers)?;
    runtime.block_on(run(settings, cli.token, controller_config))
}

/// Creates a private directory (0700) and its parents.
fn private_dir(path: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .with_context(|| format!("creating {}", path.display()))
}

/// A secret kept in a file: read if there, else made and written (0600).
fn kept_secret(path: &Path, make: impl FnOnce() -> String) -> Result<String> {
    match std::fs::read_to_string(path) {
        Ok(text) if !text.trim().is_empty() => Ok(text.trim().to_owned()),
        Ok(_) => anyhow::bail!("{} is empty", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let value = make();
            write_private(path, format!("{value}\n").as_bytes())
                .with_context(|| format!("writing {}", path.display()))?;
            Ok(value)
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

async fn run(
    settings: Settings,
    token_flag: Option<String>,
    controller_config: controllers::Config,
) -> Result<()> {
    let server_dir = settings.data_dir.join("server");
    let tls_dir = server_dir.join("tls");
    let cred_dir = server_dir.join("cred");
    for dir in [&server_dir, &tls_dir, &cred_dir] {
        private_dir(dir)?;
    }
    let pki = pki::Pki::load_or_create(&tls_dir).context("certificates")?;
    let ca_hash = token::ca_hash(pki.server_ca_pem().as_bytes());

    // The password: from --token (whose CA hash, if any, must be ours), else
    // the one kept from an earlier start, else a new one.
    let password = match &token_flag {
        Some(text) => {
            let given = token::Token::parse(text).context("--token")?;
            if let Some(hash) = given.ca_hash.as_deref().filter(|h| !h.is_empty()) {
                anyhow::ensure!(
                    hash == ca_hash,
                    "--token names CA hash {hash}, but this server's CA hashes to {ca_hash}"
                );
            }
            given.password
        }
        None => kept_secret(&cred_dir.join("passwd-token"), token::generate_password)?,
    };
    let full = token::Token {
        ca_hash: Some(ca_hash),
        username: "server".into(),
        password: password.clone(),
    }
    .to_string();
    write_private(&server_dir.join("token"), format!("{full}\n").as_bytes())?;
    write_private(
        &server_dir.join("node-token"),
        format!("{full}\n").as_bytes(),
    )?;
    write_private(
        &settings.data_dir.join("token"),
        format!("{full}\n").as_bytes(),
    )?;
    let ipsec_psk = kept_secret(&cred_dir.join("ipsec.psk"), || {
        token::generate_password() + &token::generate_password() + &token::generate_password()
    })?;

    write_kubeconfig(&settings, &pki)?;

    let (chain, key) = pki
        .listener(&settings.sans())
        .context("serving certificate")?;
    let tls = server::tls_config(chain, key, pki.client_ca_der().clone())?;
    let addr = SocketAddr::new(settings.bind_address, settings.https_port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening on {addr}"))?;
    // K3s keeps its objects in <data-dir>/server/db (kine over SQLite).
    let db_dir = server_dir.join("db");
    private_dir(&db_dir)?;
    let store =
        Arc::new(store::Store::open(&db_dir.join("objects.jsonl")).context("object store")?);
    let node_passwords =
        NodePasswords::open(Arc::clone(&store), &cred_dir.join("node-passwords.json"))
            .context("node passwords")?;
    // Agents' tunnels, and the apiserver's kubelet client that dials through them.
    let kubelets = Arc::new(
        kubelet::Kubelets::new(&pki, armlet_tunnel::Tunnels::new()).context("kubelet client")?,
    );
    let root_ca = pki.server_ca_pem().to_owned();
    let supervisor = Arc::new(Supervisor::new(
        settings.clone(),
        pki,
        password,
        ipsec_psk,
        node_passwords,
    ));
    // Tests wait for this line.
    eprintln!(
        "armlet-devserver: ready on https://{} (token in {}, kubeconfig {})",
        listener.local_addr().unwrap_or(addr),
        server_dir.join("token").display(),
        settings.kubeconfig.display()
    );
    let signer = serviceaccount::Signer::load_or_create(&tls_dir.join("service.key"))
        .context("service-account key")?;
    let api = Arc::new(api::Api::over(Arc::clone(&store), signer, root_ca));
    controllers::spawn(Arc::clone(&store), controller_config);
    tokio::select! {
        result = server::serve(listener, Arc::new(tls), supervisor, api, kubelets) => result.context("serving")?,
        _ = shutdown() => eprintln!("armlet-devserver: stopping"),
    }
    Ok(())
}

/// SIGTERM or SIGINT.
async fn shutdown() {
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

/// The admin kubeconfig, as K3s writes it (`default` cluster, context and
/// user; certificates inline), mode 0600.
fn write_kubeconfig(settings: &Settings, pki: &pki::Pki) -> Result<()> {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
    let (cert, key) = pki.admin_client();
    let host = match settings.advertise_address {
        IpAddr::V6(v6) => format!("[{v6}]"),
        IpAddr::V4(v4) => v4.to_string(),
    };
    let text = format!(
        "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: {}\n    server: https://{host}:{}\n  name: default\ncontexts:\n- context:\n    cluster: default\n    user: default\n  name: default\ncurrent-context: default\nkind: Config\npreferences: {{}}\nusers:\n- name: default\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\n",
        b64(pki.server_ca_pem()),
        settings.https_port,
        b64(cert),
        b64(key),
    );
    if let Some(parent) = settings
        .kubeconfig
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
    {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    write_private(&settings.kubeconfig, text.as_bytes())
        .with_context(|| format!("writing {}", settings.kubeconfig.display()))
}
