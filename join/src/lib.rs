//! Joining a K3s cluster: everything a `k3s agent` does before its kubelet
//! starts (protocol notes: `shared/spec/k3s-join.md`).
//!
//! 1. Parse the token ([`Token`]); the agent authenticates as user `node`.
//! 2. Fetch and pin the cluster CA (`/cacerts`: system roots first, then
//!    unverified and checked against the token's hash — or trusted on first
//!    use for a short token —, then verified against the bundle).
//! 3. `GET /v1-k3s/config` → [`ControlConfig`].
//! 4. Fetch `client-ca.crt` and `server-ca.crt`.
//! 5. Ensure the node password (`/etc/rancher/node/password`) and request the
//!    kubelet's serving and client certificates with the `K3s-Node-*`
//!    headers, then the kube-proxy and k3s-controller client certificates —
//!    each by POSTing a request for a local P-256 key, accepting a 2021
//!    server's answer with its shared key.
//! 6. Write them under `<data-dir>/agent/` with k3s's file names, and the
//!    kubeconfigs (`kubelet.kubeconfig`, `kubeproxy.kubeconfig`,
//!    `k3scontroller.kubeconfig`).
//!
//! Certificates are requested anew at every [`join`] (as k3s does at every
//! start); [`renew_if_due`] renews them while running. [`join_with_retry`]
//! retries what may pass (the server down or not ready) with backoff.
//! With [`Source::Kubeconfig`] the supervisor is skipped: a prepared
//! kubeconfig is the node's identity, for any Kubernetes cluster.
//!
//! Secrets (the token's password, the node password, private keys, the
//! server's ipsec PSK) are never logged and never in error messages.

mod cacerts;
mod certs;
mod config;
mod control;
mod files;
mod http;
mod password;
mod token;
mod x509;

use std::future::Future;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use ring::rand::SecureRandom as _;

pub use cacerts::{CaError, ca_hash};
pub use certs::KeyError;
pub use config::{
    AgentArgs, AgentConfig, ConfigError, DEFAULT_CONFIG_FILE, DEFAULT_DATA_DIR, Label, ServerUrl,
    Taint, TaintEffect, default_node_ips, node_name,
};
pub use control::{Cidr, ControlConfig, ControlConfigError, PortRange, Secret};
pub use files::FileError;
pub use http::SupervisorError;
pub use password::{DEFAULT_NODE_PASSWORD_FILE, PasswordError};
pub use token::{Token, TokenError};
pub use x509::{CertError, CertificateInfo, certificate_info};

use certs::{Issued, LocalKey};
use http::Endpoint;

/// Renew certificates this long before they expire, by default.
pub const DEFAULT_RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);

/// First wait of [`join_with_retry`]; it doubles up to [`MAX_RETRY_DELAY`].
pub const INITIAL_RETRY_DELAY: Duration = Duration::from_secs(1);
/// Longest wait of [`join_with_retry`].
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(30);

/// Where the node's identity comes from.
#[derive(Debug, Clone)]
pub enum Source {
    /// A K3s server's supervisor API and a join token.
    Supervisor {
        /// The server (`--server`).
        server: ServerUrl,
        /// The token (`--token`).
        token: Token,
    },
    /// A prepared kubeconfig (`--kubeconfig`): no supervisor is asked, for
    /// clusters that are not K3s or identities made by hand.
    Kubeconfig(PathBuf),
}

/// What [`join`] needs.
#[derive(Debug, Clone)]
pub struct JoinSettings {
    /// Where the identity comes from.
    pub source: Source,
    /// The node name (RFC 1123; [`join`] lower-cases it, as k3s does).
    pub node_name: String,
    /// The node's addresses: the serving certificate's IP SANs (header
    /// `K3s-Node-IP`).
    pub node_ips: Vec<IpAddr>,
    /// armlet's data directory; files go to `<data_dir>/agent/`.
    pub data_dir: PathBuf,
    /// The node password file ([`DEFAULT_NODE_PASSWORD_FILE`]).
    pub node_password_file: PathBuf,
    /// Renew certificates this long before they expire
    /// ([`DEFAULT_RENEW_BEFORE`]).
    pub renew_before: Duration,
}

impl JoinSettings {
    /// Settings with the default node password file and renewal window.
    pub fn new(
        source: Source,
        node_name: String,
        node_ips: Vec<IpAddr>,
        data_dir: PathBuf,
    ) -> Self {
        Self {
            source,
            node_name,
            node_ips,
            data_dir,
            node_password_file: PathBuf::from(DEFAULT_NODE_PASSWORD_FILE),
            renew_before: DEFAULT_RENEW_BEFORE,
        }
    }

    /// `<data_dir>/agent`, where the certificates and kubeconfigs go.
    pub fn agent_dir(&self) -> PathBuf {
        self.data_dir.join("agent")
    }
}

/// Why joining failed.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// The settings cannot work (an invalid node name, ...).
    #[error("invalid join settings: {0}")]
    Settings(String),
    /// The cluster CA could not be trusted.
    #[error(transparent)]
    Ca(#[from] CaError),
    /// A supervisor request failed.
    #[error(transparent)]
    Supervisor(#[from] SupervisorError),
    /// `/v1-k3s/config` is not usable.
    #[error("{url}: {source}")]
    Control {
        /// Where it came from.
        url: String,
        /// What is wrong with it.
        source: ControlConfigError,
    },
    /// The node password could not be read or made.
    #[error("node password: {0}")]
    Password(#[from] PasswordError),
    /// A key could not be made.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// A file could not be written.
    #[error(transparent)]
    File(#[from] FileError),
    /// The `--kubeconfig` file is not usable.
    #[error("kubeconfig {}: {detail}", path.display())]
    Kubeconfig {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The caller cancelled [`join_with_retry`].
    #[error("joining the cluster was cancelled")]
    Cancelled,
    /// [`join_with_retry`]'s deadline passed.
    #[error("gave up joining the cluster after {attempts} attempt(s): {last}")]
    GaveUp {
        /// How many joins were tried.
        attempts: u32,
        /// The last failure.
        last: Box<JoinError>,
    },
}

impl JoinError {
    /// Whether trying again later may help: the server was unreachable or
    /// answered 5xx (its API not up yet). Wrong tokens, refused node
    /// passwords, CA mismatches and local errors are not.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Ca(e) => e.is_retryable(),
            Self::Supervisor(e) => e.is_retryable(),
            _ => false,
        }
    }
}

/// A PEM file written by the join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PemFile {
    /// Where it is.
    pub path: PathBuf,
    /// Its content.
    pub pem: String,
}

/// A certificate and its private key, as written.
#[derive(Clone)]
pub struct CertKeyPair {
    /// The certificate chain (leaf first).
    pub cert: PemFile,
    /// The key file (mode 0600).
    pub key_path: PathBuf,
    key_pem: String,
    /// The leaf, described (subject, serial, validity).
    pub info: CertificateInfo,
    /// Whether the key came from the server (a 2021 server's shared key)
    /// rather than being made on this node.
    pub key_from_server: bool,
}

impl CertKeyPair {
    /// The private key, PEM. Never log it.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }
}

impl std::fmt::Debug for CertKeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertKeyPair")
            .field("cert", &self.cert.path)
            .field("key_path", &self.key_path)
            .field("info", &self.info)
            .field("key_from_server", &self.key_from_server)
            .finish_non_exhaustive()
    }
}

/// The files a supervisor join wrote under `<data-dir>/agent/`.
#[derive(Debug, Clone)]
pub struct AgentFiles {
    /// The directory.
    pub dir: PathBuf,
    /// `server-ca.crt`: trust root of the API and the supervisor.
    pub server_ca: PemFile,
    /// `client-ca.crt`: the kubelet's `clientCAFile`.
    pub client_ca: PemFile,
    /// `serving-kubelet.crt/.key`: the kubelet's server certificate.
    pub serving_kubelet: CertKeyPair,
    /// `client-kubelet.crt/.key`: `system:node:<name>` in `system:nodes`.
    pub client_kubelet: CertKeyPair,
    /// `client-kube-proxy.crt/.key`: `system:kube-proxy`.
    pub kube_proxy: CertKeyPair,
    /// `client-k3s-controller.crt/.key`: `system:k3s-controller`.
    pub k3s_controller: CertKeyPair,
    /// `kubeproxy.kubeconfig`.
    pub kube_proxy_kubeconfig: PathBuf,
    /// `k3scontroller.kubeconfig`.
    pub k3s_controller_kubeconfig: PathBuf,
}

impl AgentFiles {
    fn pairs(&self) -> [&CertKeyPair; 4] {
        [
            &self.serving_kubelet,
            &self.client_kubelet,
            &self.kube_proxy,
            &self.k3s_controller,
        ]
    }
}

/// A joined node.
#[derive(Debug, Clone)]
pub struct Joined {
    /// The node name.
    pub node_name: String,
    /// The node's addresses.
    pub node_ips: Vec<IpAddr>,
    /// What the server says about the cluster (k3s's defaults in
    /// kubeconfig mode).
    pub control: ControlConfig,
    /// The Kubernetes API (`None` when a prepared kubeconfig names none).
    pub api_server_url: Option<String>,
    /// The kubelet's kubeconfig: `<agent>/kubelet.kubeconfig`, or the
    /// prepared one.
    pub kubeconfig: PathBuf,
    /// The files of a supervisor join (`None` in kubeconfig mode).
    pub agent: Option<AgentFiles>,
}

impl Joined {
    /// When the first of the held certificates expires (`None` in kubeconfig
    /// mode, where armlet holds none).
    pub fn earliest_expiry(&self) -> Option<SystemTime> {
        self.agent
            .as_ref()
            .and_then(|a| a.pairs().iter().map(|p| p.info.not_after).min())
    }
}

/// File names under `<data-dir>/agent/`, as k3s's.
mod names {
    pub const SERVER_CA: &str = "server-ca.crt";
    pub const CLIENT_CA: &str = "client-ca.crt";
    pub const SERVING_KUBELET: &str = "serving-kubelet";
    pub const CLIENT_KUBELET: &str = "client-kubelet";
    pub const KUBE_PROXY: &str = "client-kube-proxy";
    pub const K3S_CONTROLLER: &str = "client-k3s-controller";
    pub const KUBELET_KUBECONFIG: &str = "kubelet.kubeconfig";
    pub const KUBE_PROXY_KUBECONFIG: &str = "kubeproxy.kubeconfig";
    pub const K3S_CONTROLLER_KUBECONFIG: &str = "k3scontroller.kubeconfig";
    /// The leaf certificates (`<name>.crt`), renewed together.
    pub const LEAVES: [&str; 4] = [SERVING_KUBELET, CLIENT_KUBELET, KUBE_PROXY, K3S_CONTROLLER];
}

/// Joins the cluster once: see the crate documentation for the steps.
/// Certificates, keys and kubeconfigs are written only once every request
/// has succeeded (the node password file is made, if missing, just before
/// the node certificates are asked for, as k3s does).
pub async fn join(settings: &JoinSettings) -> Result<Joined, JoinError> {
    // k3s lower-cases the node name (the server does too); anything else
    // must already be a valid name.
    let name = node_name(&settings.node_name).map_err(|e| JoinError::Settings(e.to_string()))?;
    let settings = &JoinSettings {
        node_name: name,
        ..settings.clone()
    };
    match &settings.source {
        Source::Kubeconfig(path) => with_kubeconfig(settings, path),
        Source::Supervisor { server, token } => through_supervisor(settings, server, token).await,
    }
}

/// Kubeconfig mode: check the file and name the API it points at.
fn with_kubeconfig(settings: &JoinSettings, path: &Path) -> Result<Joined, JoinError> {
    let fail = |detail: String| JoinError::Kubeconfig {
        path: path.to_path_buf(),
        detail,
    };
    let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
    let doc: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&text).map_err(|e| fail(e.to_string()))?;
    let clusters = doc
        .get("clusters")
        .and_then(|c| c.as_sequence())
        .filter(|c| !c.is_empty())
        .ok_or_else(|| fail("names no cluster".into()))?;
    // The current context's cluster, else the first.
    let wanted = doc
        .get("current-context")
        .and_then(|c| c.as_str())
        .and_then(|current| {
            doc.get("contexts")?.as_sequence()?.iter().find_map(|ctx| {
                (ctx.get("name")?.as_str()? == current)
                    .then(|| ctx.get("context")?.get("cluster")?.as_str())
                    .flatten()
            })
        });
    let cluster = wanted
        .and_then(|w| {
            clusters
                .iter()
                .find(|c| c.get("name").and_then(|n| n.as_str()) == Some(w))
        })
        .unwrap_or(&clusters[0]);
    let api_server_url = cluster
        .get("cluster")
        .and_then(|c| c.get("server"))
        .and_then(|s| s.as_str())
        .map(str::to_owned);
    tracing::info!(
        kubeconfig = %path.display(),
        node = %settings.node_name,
        "using the prepared kubeconfig; the K3s supervisor is not asked"
    );
    Ok(Joined {
        node_name: settings.node_name.clone(),
        node_ips: settings.node_ips.clone(),
        control: ControlConfig::default(),
        api_server_url,
        kubeconfig: path.to_path_buf(),
        agent: None,
    })
}

/// The supervisor join.
async fn through_supervisor(
    settings: &JoinSettings,
    server: &ServerUrl,
    token: &Token,
) -> Result<Joined, JoinError> {
    let resolver = Arc::new(armlet_resolve::Resolver::from_system().unwrap_or_else(|_| {
        armlet_resolve::Resolver::new(armlet_resolve::ResolverConfig::default())
    }));
    let origin = server.origin();
    tracing::info!(server = %origin, node = %settings.node_name, "joining the cluster");
    let http = cacerts::establish(&origin, token, &resolver).await?;

    let get = |path: &str| {
        let url = format!("{origin}{path}");
        let request = token.authorize(http.get(&url));
        async move {
            http::fetch(request, &url, Endpoint::Plain)
                .await
                .map(|b| (url, b))
        }
    };

    let (url, body) = get("/v1-k3s/config").await?;
    let control =
        ControlConfig::parse(&body).map_err(|source| JoinError::Control { url, source })?;
    let (url, body) = get("/v1-k3s/client-ca.crt").await?;
    let client_ca = certs::accept_ca(&url, &body)?;
    let (url, body) = get("/v1-k3s/server-ca.crt").await?;
    let server_ca = certs::accept_ca(&url, &body)?;

    let node_password = password::ensure_node_password(&settings.node_password_file)?;
    let password_file = settings.node_password_file.display().to_string();
    let mut node_headers = HeaderMap::new();
    let ips: Vec<String> = settings.node_ips.iter().map(IpAddr::to_string).collect();
    for (name, value, sensitive) in [
        ("k3s-node-name", settings.node_name.as_str(), false),
        ("k3s-node-password", node_password.as_str(), true),
        ("k3s-node-ip", ips.join(",").as_str(), false),
    ] {
        if value.is_empty() {
            continue;
        }
        let mut value = HeaderValue::from_str(value)
            .map_err(|_| JoinError::Settings(format!("{name}: not sendable in an HTTP header")))?;
        value.set_sensitive(sensitive);
        node_headers.insert(HeaderName::from_static(name), value);
    }

    let agent_dir = settings.agent_dir();
    let node_named = Endpoint::NodeNamed {
        password_file: &password_file,
    };
    let supervisor = Supervisor {
        http: &http,
        token,
        origin: &origin,
        agent_dir: &agent_dir,
    };
    let serving = supervisor
        .certificate(names::SERVING_KUBELET, &node_headers, node_named)
        .await?;
    let client = supervisor
        .certificate(names::CLIENT_KUBELET, &node_headers, node_named)
        .await?;
    let none = HeaderMap::new();
    let kube_proxy = supervisor
        .certificate(names::KUBE_PROXY, &none, Endpoint::Plain)
        .await?;
    let k3s_controller = supervisor
        .certificate(names::K3S_CONTROLLER, &none, Endpoint::Plain)
        .await?;

    // k3s points every kubeconfig at its local client load balancer
    // (https://127.0.0.1:6444), which forwards to the servers it knows.
    // armlet has no load balancer: the kubeconfigs name the server itself
    // (no failover between servers of an HA cluster). A server whose
    // supervisor and API ports differ (RKE2 style) has its API on HTTPSPort.
    let api_server_url = if control.supervisor_port != control.https_port {
        server.with_port(control.https_port)
    } else {
        origin.clone()
    };

    files::create_dir(&agent_dir, 0o700)?;
    let write = |name: &str, content: &str| -> Result<PathBuf, FileError> {
        let path = agent_dir.join(name);
        files::write_atomic(&path, content.as_bytes(), 0o600)?;
        Ok(path)
    };
    let server_ca = PemFile {
        path: write(names::SERVER_CA, &server_ca)?,
        pem: server_ca,
    };
    let client_ca = PemFile {
        path: write(names::CLIENT_CA, &client_ca)?,
        pem: client_ca,
    };
    let pair = |name: &str, issued: Issued| -> Result<CertKeyPair, FileError> {
        // The key first: a certificate must never sit next to another key.
        let key_path = write(&format!("{name}.key"), &issued.key_pem)?;
        let cert_path = write(&format!("{name}.crt"), &issued.cert_pem)?;
        Ok(CertKeyPair {
            cert: PemFile {
                path: cert_path,
                pem: issued.cert_pem,
            },
            key_path,
            key_pem: issued.key_pem,
            info: issued.info,
            key_from_server: issued.key_from_server,
        })
    };
    let serving_kubelet = pair(names::SERVING_KUBELET, serving)?;
    let client_kubelet = pair(names::CLIENT_KUBELET, client)?;
    let kube_proxy = pair(names::KUBE_PROXY, kube_proxy)?;
    let k3s_controller = pair(names::K3S_CONTROLLER, k3s_controller)?;
    let kubeconfig_for = |name: &str, p: &CertKeyPair| {
        write(
            name,
            &certs::kubeconfig(&api_server_url, &server_ca.path, &p.cert.path, &p.key_path),
        )
    };
    let kubeconfig = kubeconfig_for(names::KUBELET_KUBECONFIG, &client_kubelet)?;
    let kube_proxy_kubeconfig = kubeconfig_for(names::KUBE_PROXY_KUBECONFIG, &kube_proxy)?;
    let k3s_controller_kubeconfig =
        kubeconfig_for(names::K3S_CONTROLLER_KUBECONFIG, &k3s_controller)?;

    let agent = AgentFiles {
        dir: agent_dir.clone(),
        server_ca,
        client_ca,
        serving_kubelet,
        client_kubelet,
        kube_proxy,
        k3s_controller,
        kube_proxy_kubeconfig,
        k3s_controller_kubeconfig,
    };
    tracing::info!(
        server = %origin,
        node = %settings.node_name,
        shared_keys = agent.pairs().iter().any(|p| p.key_from_server),
        "joined the cluster; certificates written to {}",
        agent_dir.display()
    );
    Ok(Joined {
        node_name: settings.node_name.clone(),
        node_ips: settings.node_ips.clone(),
        control,
        api_server_url: Some(api_server_url),
        kubeconfig,
        agent: Some(agent),
    })
}

/// The authenticated supervisor, for certificate requests.
struct Supervisor<'a> {
    http: &'a reqwest::Client,
    token: &'a Token,
    origin: &'a str,
    agent_dir: &'a Path,
}

impl Supervisor<'_> {
    /// `/v1-k3s/<name>.crt`: a request for the local key `<name>.key` is
    /// POSTed (newer k3s); a server that refuses POST is asked with GET
    /// (2021), and a key in the answer is used instead of the local one.
    async fn certificate(
        &self,
        name: &str,
        headers: &HeaderMap,
        endpoint: Endpoint<'_>,
    ) -> Result<Issued, JoinError> {
        let url = format!("{}/v1-k3s/{name}.crt", self.origin);
        let local = LocalKey::load_or_generate(&self.agent_dir.join(format!("{name}.key")))?;
        let csr = local.certificate_request()?;
        let build = |post: bool| {
            let request = if post {
                self.http.post(&url).body(csr.clone())
            } else {
                self.http.get(&url)
            };
            self.token.authorize(request.headers(headers.clone()))
        };
        let body = match http::fetch(build(true), &url, endpoint).await {
            Err(SupervisorError::Status { status: 405, .. }) => {
                http::fetch(build(false), &url, endpoint).await?
            }
            other => other?,
        };
        Ok(certs::accept_answer(&url, &body, &local)?)
    }
}

/// When the first certificate held under `<data-dir>/agent/` expires;
/// `None` if one is missing or unreadable (so it is due).
pub fn held_certificates_expiry(settings: &JoinSettings) -> Option<SystemTime> {
    let dir = settings.agent_dir();
    names::LEAVES
        .iter()
        .map(|name| {
            let pem = std::fs::read(dir.join(format!("{name}.crt"))).ok()?;
            certificate_info(&pem).ok().map(|info| info.not_after)
        })
        .collect::<Option<Vec<_>>>()?
        .into_iter()
        .min()
}

/// Renews the certificates when one held is within `renew_before` of its
/// expiry (or missing), by joining again; for the agent to call
/// periodically (hourly is plenty). `Ok(None)`: nothing was due (or
/// kubeconfig mode, where armlet holds no certificates).
pub async fn renew_if_due(settings: &JoinSettings) -> Result<Option<Joined>, JoinError> {
    if matches!(settings.source, Source::Kubeconfig(_)) {
        return Ok(None);
    }
    let now = SystemTime::now();
    match held_certificates_expiry(settings) {
        Some(expiry)
            if now
                .checked_add(settings.renew_before)
                .is_some_and(|due| expiry > due) =>
        {
            return Ok(None);
        }
        Some(expiry) => tracing::info!(
            expires_in_s = expiry.duration_since(now).map(|d| d.as_secs()).unwrap_or(0),
            "a node certificate expires soon: renewing"
        ),
        None => tracing::info!("a node certificate is missing or unreadable: renewing"),
    }
    join(settings).await.map(Some)
}

/// `delay` scaled by a random factor in [0.8, 1.2), so nodes restarted
/// together do not retry in step.
fn jittered(delay: Duration) -> Duration {
    let mut bytes = [0u8; 2];
    let unit = match ring::rand::SystemRandom::new().fill(&mut bytes) {
        Ok(()) => f64::from(u16::from_le_bytes(bytes)) / 65536.0,
        Err(_) => 0.5,
    };
    delay.mul_f64(0.8 + 0.4 * unit)
}

/// [`join`], retried while the failure may pass (server unreachable, 5xx),
/// waiting 1 s, doubling to 30 s, with jitter; each failure is logged.
/// Stops at `deadline` ([`JoinError::GaveUp`] with the last failure) or
/// when `cancel` completes ([`JoinError::Cancelled`]); pass
/// `std::future::pending()` for neither. A failure that will not pass (a
/// wrong token, a refused node password, a CA mismatch) is returned at once.
pub async fn join_with_retry(
    settings: &JoinSettings,
    deadline: Option<Instant>,
    cancel: impl Future<Output = ()>,
) -> Result<Joined, JoinError> {
    tokio::pin!(cancel);
    let deadline = deadline.map(tokio::time::Instant::from_std);
    let until_deadline = || async move {
        match deadline {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    };
    let mut delay = INITIAL_RETRY_DELAY;
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let result = tokio::select! {
            result = join(settings) => result,
            () = &mut cancel => return Err(JoinError::Cancelled),
            () = until_deadline() => Err(JoinError::Supervisor(SupervisorError::Transport {
                url: String::new(),
                detail: "the attempt did not finish before the deadline".into(),
            })),
        };
        let error = match result {
            Ok(joined) => {
                if attempts > 1 {
                    tracing::info!(attempts, "joined the cluster");
                }
                return Ok(joined);
            }
            Err(e) if !e.is_retryable() => {
                tracing::error!(error = %e, "joining the cluster failed");
                return Err(e);
            }
            Err(e) => e,
        };
        let wait = jittered(delay);
        if deadline.is_some_and(|at| tokio::time::Instant::now() + wait >= at) {
            tracing::error!(attempts, error = %error, "joining the cluster failed; giving up");
            return Err(JoinError::GaveUp {
                attempts,
                last: Box::new(error),
            });
        }
        tracing::warn!(
            attempt = attempts,
            retry_in_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
            error = %error,
            "joining the cluster failed; retrying"
        );
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = &mut cancel => return Err(JoinError::Cancelled),
        }
        delay = (delay * 2).min(MAX_RETRY_DELAY);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::tests::TempDir;

    fn settings(dir: &Path, source: Source) -> JoinSettings {
        let mut s = JoinSettings::new(
            source,
            "n1".into(),
            vec![IpAddr::from([127, 0, 0, 1])],
            dir.join("data"),
        );
        s.node_password_file = dir.join("password");
        s
    }

    fn unreachable_server() -> Source {
        // A loopback port nothing listens on: bound, then released.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap();
        Source::Supervisor {
            server: ServerUrl::parse(&format!("https://127.0.0.1:{port}")).unwrap(),
            token: Token::parse("pw").unwrap(),
        }
    }

    #[test]
    fn jitter_stays_near_the_delay() {
        for _ in 0..100 {
            let d = jittered(Duration::from_secs(10));
            assert!(
                d >= Duration::from_secs(8) && d < Duration::from_secs(12),
                "{d:?}"
            );
        }
    }

    #[tokio::test]
    async fn unreachable_servers_are_retryable_and_the_deadline_holds() {
        let dir = TempDir::new("lib-unreachable");
        let s = settings(dir.path(), unreachable_server());
        let e = join(&s).await.unwrap_err();
        assert!(e.is_retryable(), "{e}");
        assert!(e.to_string().contains("failed to get CA certs"), "{e}");
        let started = Instant::now();
        let e = join_with_retry(
            &s,
            Some(Instant::now() + Duration::from_millis(2500)),
            std::future::pending(),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(e, JoinError::GaveUp { attempts, .. } if attempts >= 2),
            "{e}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        // Nothing was written.
        assert!(!s.agent_dir().exists());
        assert!(!s.node_password_file.exists());
    }

    #[tokio::test]
    async fn cancellation_stops_the_retries() {
        let dir = TempDir::new("lib-cancel");
        let s = settings(dir.path(), unreachable_server());
        let e = join_with_retry(&s, None, tokio::time::sleep(Duration::from_millis(300)))
            .await
            .unwrap_err();
        assert!(matches!(e, JoinError::Cancelled), "{e}");
    }

    #[tokio::test]
    async fn settings_are_checked() {
        let dir = TempDir::new("lib-settings");
        let mut s = settings(dir.path(), unreachable_server());
        s.node_name = "bad_name".into();
        let e = join(&s).await.unwrap_err();
        assert!(
            matches!(e, JoinError::Settings(_)) && !e.is_retryable(),
            "{e}"
        );
        // Upper case is lowered, as k3s does.
        let path = dir.path().join("kubeconfig");
        std::fs::write(
            &path,
            "clusters:\n- name: a\n  cluster: {server: https://a:6443}\n",
        )
        .unwrap();
        s.node_name = "Board-1".into();
        s.source = Source::Kubeconfig(path);
        assert_eq!(join(&s).await.unwrap().node_name, "board-1");
    }

    #[tokio::test]
    async fn kubeconfig_mode() {
        let dir = TempDir::new("lib-kubeconfig");
        let path = dir.path().join("node.kubeconfig");
        std::fs::write(
            &path,
            "apiVersion: v1\nkind: Config\nclusters:\n- name: a\n  cluster: {server: https://a:6443}\n\
             - name: b\n  cluster: {server: https://b:6443}\ncontexts:\n- name: c\n  context: {cluster: b, user: u}\n\
             current-context: c\nusers:\n- name: u\n  user: {}\n",
        )
        .unwrap();
        let s = settings(dir.path(), Source::Kubeconfig(path.clone()));
        let joined = join(&s).await.unwrap();
        assert_eq!(joined.api_server_url.as_deref(), Some("https://b:6443"));
        assert_eq!(joined.kubeconfig, path);
        assert!(joined.agent.is_none());
        assert_eq!(joined.control, ControlConfig::default());
        assert!(renew_if_due(&s).await.unwrap().is_none());

        std::fs::write(&path, "kind: Config\n").unwrap();
        let e = join(&s).await.unwrap_err().to_string();
        assert!(e.contains("names no cluster"), "{e}");
        let missing = settings(dir.path(), Source::Kubeconfig(dir.path().join("nope")));
        assert!(join(&missing).await.is_err());
    }

    #[test]
    fn expiry_of_held_certificates() {
        let dir = TempDir::new("lib-expiry");
        let s = settings(dir.path(), unreachable_server());
        assert_eq!(held_certificates_expiry(&s), None);
        std::fs::create_dir_all(s.agent_dir()).unwrap();
        for name in names::LEAVES {
            std::fs::write(
                s.agent_dir().join(format!("{name}.crt")),
                crate::x509::tests::RECORDED_CLIENT_KUBELET,
            )
            .unwrap();
        }
        let expiry = held_certificates_expiry(&s).unwrap();
        assert_eq!(crate::x509::unix_seconds(expiry), 1_827_349_315);
        std::fs::write(s.agent_dir().join("client-kube-proxy.crt"), "garbage").unwrap();
        assert_eq!(held_certificates_expiry(&s), None);
    }
}
