//! Liveness, readiness and startup probes (`pkg/kubelet/prober`): a state
//! machine per probe and container ([`ProbeWorker`], the kubelet's `worker`)
//! that the agent ticks, and the checks themselves ([`run`]): `httpGet` (plain
//! HTTP/1.1, or HTTPS without certificate verification as the kubelet does;
//! 2xx and 3xx succeed), `tcpSocket`, and `exec` through [`ExecProber`],
//! which the agent implements with its runtime. The same handlers serve
//! lifecycle hooks ([`lifecycle_handler`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, HTTPGetAction, LifecycleHandler, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// Why a probe or hook cannot be set up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    /// The probe sets none (or several) of exec, httpGet, tcpSocket, grpc.
    #[error("{0}")]
    Handler(String),
    /// A named port the container does not declare, or a number out of range.
    #[error("{0}")]
    Port(String),
    /// A timing or threshold the API would refuse.
    #[error("{0}")]
    Params(String),
    /// A check armlet does not perform.
    #[error("{0} is not supported on this node")]
    Unsupported(&'static str),
    /// The pod has no IP to probe yet.
    #[error("pod has no IP address to probe")]
    NoPodIp,
}

/// Which probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProbeKind {
    /// Restarts the container when it fails.
    Liveness,
    /// Gates the container's readiness.
    Readiness,
    /// Holds the other probes back until it succeeds; restarts on failure.
    Startup,
}

impl ProbeKind {
    /// As the kubelet names it in events (`Liveness probe failed: …`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Liveness => "Liveness",
            Self::Readiness => "Readiness",
            Self::Startup => "Startup",
        }
    }

    /// The container's probe of this kind.
    pub fn of(self, container: &Container) -> Option<&Probe> {
        match self {
            Self::Liveness => container.liveness_probe.as_ref(),
            Self::Readiness => container.readiness_probe.as_ref(),
            Self::Startup => container.startup_probe.as_ref(),
        }
    }
}

/// `http` or `https`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Plain HTTP.
    Http,
    /// HTTPS, certificate not verified.
    Https,
}

/// An `httpGet` check, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpGet {
    /// Scheme.
    pub scheme: Scheme,
    /// Host to connect to (the pod IP unless the spec names one).
    pub host: String,
    /// Port.
    pub port: u16,
    /// Path and query (`/` when empty).
    pub path: String,
    /// Extra headers, in order (a `Host` header replaces the default).
    pub headers: Vec<(String, String)>,
}

/// What a probe or hook does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handler {
    /// Run a command in the container.
    Exec(Vec<String>),
    /// An HTTP GET.
    HttpGet(HttpGet),
    /// A TCP connection.
    TcpSocket {
        /// Host.
        host: String,
        /// Port.
        port: u16,
    },
    /// Sleep (lifecycle `sleep` action).
    Sleep(Duration),
}

/// The `User-Agent` of probes and hooks (`kube-probe/<major>.<minor>`).
pub const USER_AGENT: &str = "kube-probe/1.30";

/// Largest body read from an HTTP check (the kubelet's 10 KiB).
const MAX_BODY: usize = 10 * 1024;
/// Largest response head accepted.
const MAX_HEAD: usize = 16 * 1024;
/// Redirects followed to the same host.
const MAX_REDIRECTS: usize = 10;

/// `extractPort`/`findPortByName`: a number, or a port name of the container
/// (a numeric string counts as a number).
fn resolve_port(port: &IntOrString, container: &Container) -> Result<u16, ProbeError> {
    let n = match port {
        IntOrString::Int(n) => i64::from(*n),
        IntOrString::String(name) => {
            let by_name = container
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .map(|p| i64::from(p.container_port));
            match by_name.or_else(|| name.parse::<i64>().ok()) {
                Some(n) => n,
                None => return Err(ProbeError::Port(format!("port {name} not found"))),
            }
        }
    };
    u16::try_from(n)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| ProbeError::Port(format!("invalid port number: {n}")))
}

fn host_or_pod_ip(host: Option<&str>, pod_ip: Option<&str>) -> Result<String, ProbeError> {
    match host.filter(|h| !h.is_empty()) {
        Some(h) => Ok(h.to_owned()),
        None => pod_ip
            .filter(|ip| !ip.is_empty())
            .map(str::to_owned)
            .ok_or(ProbeError::NoPodIp),
    }
}

fn http_get(
    a: &HTTPGetAction,
    container: &Container,
    pod_ip: Option<&str>,
) -> Result<HttpGet, ProbeError> {
    let scheme = match a
        .scheme
        .as_deref()
        .unwrap_or("HTTP")
        .to_ascii_uppercase()
        .as_str()
    {
        "HTTP" => Scheme::Http,
        "HTTPS" => Scheme::Https,
        other => {
            return Err(ProbeError::Handler(format!(
                "unsupported HTTP scheme {other:?}"
            )));
        }
    };
    let path = a.path.clone().unwrap_or_default();
    let path = if path.is_empty() {
        "/".to_owned()
    } else if path.starts_with('/') {
        path
    } else {
        format!("/{path}")
    };
    if path.contains(['\r', '\n', ' ']) {
        return Err(ProbeError::Handler(format!("invalid path {path:?}")));
    }
    let mut headers = Vec::new();
    for h in a.http_headers.iter().flatten() {
        let bad = |s: &str| s.contains(['\r', '\n']);
        if h.name.is_empty() || h.name.contains(':') || bad(&h.name) || bad(&h.value) {
            return Err(ProbeError::Handler(format!(
                "invalid HTTP header {:?}",
                h.name
            )));
        }
        headers.push((h.name.clone(), h.value.clone()));
    }
    Ok(HttpGet {
        scheme,
        host: host_or_pod_ip(a.host.as_deref(), pod_ip)?,
        port: resolve_port(&a.port, container)?,
        path,
        headers,
    })
}

/// The check a probe performs. `pod_ip` is the pod's primary IP (the node's
/// for hostNetwork pods).
pub fn probe_handler(
    probe: &Probe,
    container: &Container,
    pod_ip: Option<&str>,
) -> Result<Handler, ProbeError> {
    let set = [
        probe.exec.is_some(),
        probe.http_get.is_some(),
        probe.tcp_socket.is_some(),
        probe.grpc.is_some(),
    ]
    .iter()
    .filter(|s| **s)
    .count();
    if set != 1 {
        return Err(ProbeError::Handler(
            "must specify exactly one handler type".into(),
        ));
    }
    if let Some(e) = &probe.exec {
        return Ok(Handler::Exec(e.command.clone().unwrap_or_default()));
    }
    if let Some(h) = &probe.http_get {
        return http_get(h, container, pod_ip).map(Handler::HttpGet);
    }
    if let Some(t) = &probe.tcp_socket {
        return Ok(Handler::TcpSocket {
            host: host_or_pod_ip(t.host.as_deref(), pod_ip)?,
            port: resolve_port(&t.port, container)?,
        });
    }
    Err(ProbeError::Unsupported("gRPC probing"))
}

/// The action of a lifecycle hook (postStart, preStop).
pub fn lifecycle_handler(
    h: &LifecycleHandler,
    container: &Container,
    pod_ip: Option<&str>,
) -> Result<Handler, ProbeError> {
    let set = [
        h.exec.is_some(),
        h.http_get.is_some(),
        h.tcp_socket.is_some(),
        h.sleep.is_some(),
    ]
    .iter()
    .filter(|s| **s)
    .count();
    if set != 1 {
        return Err(ProbeError::Handler(
            "must specify exactly one handler type".into(),
        ));
    }
    if let Some(e) = &h.exec {
        return Ok(Handler::Exec(e.command.clone().unwrap_or_default()));
    }
    if let Some(g) = &h.http_get {
        return http_get(g, container, pod_ip).map(Handler::HttpGet);
    }
    if let Some(s) = &h.sleep {
        let secs = u64::try_from(s.seconds)
            .map_err(|_| ProbeError::Params("sleep seconds must be non-negative".into()))?;
        return Ok(Handler::Sleep(Duration::from_secs(secs)));
    }
    // The kubelet never implemented tcpSocket hooks (deprecated, ignored).
    Err(ProbeError::Unsupported("tcpSocket lifecycle hooks"))
}

/// A probe's timing, defaulted and checked as the API does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeParams {
    /// `initialDelaySeconds` (0).
    pub initial_delay: Duration,
    /// `periodSeconds` (10).
    pub period: Duration,
    /// `timeoutSeconds` (1).
    pub timeout: Duration,
    /// `successThreshold` (1; must be 1 for liveness and startup).
    pub success_threshold: u32,
    /// `failureThreshold` (3).
    pub failure_threshold: u32,
    /// `terminationGracePeriodSeconds` of the probe (liveness, startup kills).
    pub termination_grace_period: Option<i64>,
}

impl ProbeParams {
    /// From the probe's spec.
    pub fn new(kind: ProbeKind, probe: &Probe) -> Result<Self, ProbeError> {
        let field =
            |v: Option<i32>, default: i32, min: i32, name: &str| -> Result<u32, ProbeError> {
                let v = v.unwrap_or(default);
                if v < min {
                    return Err(ProbeError::Params(format!(
                        "{name} must be greater than or equal to {min}, got {v}"
                    )));
                }
                Ok(v.unsigned_abs())
            };
        let success = field(probe.success_threshold, 1, 1, "successThreshold")?;
        if success != 1 && kind != ProbeKind::Readiness {
            return Err(ProbeError::Params("successThreshold must be 1".into()));
        }
        Ok(Self {
            initial_delay: Duration::from_secs(
                field(probe.initial_delay_seconds, 0, 0, "initialDelaySeconds")?.into(),
            ),
            period: Duration::from_secs(
                field(probe.period_seconds, 10, 1, "periodSeconds")?.into(),
            ),
            timeout: Duration::from_secs(
                field(probe.timeout_seconds, 1, 1, "timeoutSeconds")?.into(),
            ),
            success_threshold: success,
            failure_threshold: field(probe.failure_threshold, 3, 1, "failureThreshold")?,
            termination_grace_period: probe.termination_grace_period_seconds,
        })
    }
}

/// The result of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// Passed (a `Warning` of the kubelet too, e.g. a redirect off the host).
    Success(String),
    /// Failed, with the kubelet's message.
    Failure(String),
    /// Could not be performed; the kubelet discards such results.
    Error(String),
}

/// What an exec check returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecResult {
    /// The command's exit code.
    pub exit_code: i32,
    /// Its combined output (for messages).
    pub output: Vec<u8>,
}

/// A boxed future, for [`ExecProber`].
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Runs commands in containers (`kubectl exec` without a terminal); the agent
/// implements it with its runtime's exec.
pub trait ExecProber: Send + Sync {
    /// Runs `command` in container `container_id`; an `Err` is a failure to run
    /// it at all (not a non-zero exit).
    fn exec<'a>(
        &'a self,
        container_id: &'a str,
        command: &'a [String],
    ) -> BoxFuture<'a, Result<ExecResult, String>>;
}

/// Performs one check within `timeout` (`prober.runProbe`). `container_id` is
/// for exec checks.
pub async fn run(
    handler: &Handler,
    container_id: &str,
    timeout: Duration,
    exec: &dyn ExecProber,
) -> ProbeOutcome {
    match handler {
        Handler::Exec(command) => {
            match tokio::time::timeout(timeout, exec.exec(container_id, command)).await {
                Err(_) => ProbeOutcome::Failure(format!("command {command:?} timed out")),
                Ok(Err(e)) => ProbeOutcome::Error(e),
                Ok(Ok(r)) => {
                    let out = String::from_utf8_lossy(&r.output).into_owned();
                    if r.exit_code == 0 {
                        ProbeOutcome::Success(out)
                    } else {
                        ProbeOutcome::Failure(out)
                    }
                }
            }
        }
        Handler::HttpGet(get) => {
            let url = format!(
                "{}://{}{}",
                if get.scheme == Scheme::Https {
                    "https"
                } else {
                    "http"
                },
                join_host_port(&get.host, get.port),
                get.path
            );
            match tokio::time::timeout(timeout, http_probe(get)).await {
                Err(_) => ProbeOutcome::Failure(format!(
                    "Get {url:?}: context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
                )),
                Ok(o) => o,
            }
        }
        Handler::TcpSocket { host, port } => {
            let addr = join_host_port(host, *port);
            match tokio::time::timeout(timeout, TcpStream::connect((host.as_str(), *port))).await {
                Err(_) => ProbeOutcome::Failure(format!("dial tcp {addr}: i/o timeout")),
                Ok(Err(e)) => ProbeOutcome::Failure(format!("dial tcp {addr}: connect: {e}")),
                Ok(Ok(_)) => ProbeOutcome::Success(String::new()),
            }
        }
        Handler::Sleep(d) => {
            tokio::time::sleep(*d).await;
            ProbeOutcome::Success(String::new())
        }
    }
}

/// [`run`], retried up to three times while it errors (`runProbeWithRetries`).
pub async fn run_with_retries(
    handler: &Handler,
    container_id: &str,
    timeout: Duration,
    exec: &dyn ExecProber,
) -> ProbeOutcome {
    let mut outcome = ProbeOutcome::Error("not run".into());
    for _ in 0..3 {
        outcome = run(handler, container_id, timeout, exec).await;
        if !matches!(outcome, ProbeOutcome::Error(_)) {
            break;
        }
    }
    outcome
}

fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// A response's status line and what matters of its headers and body.
struct Response {
    status: u16,
    location: Option<String>,
    body: Vec<u8>,
}

/// Where a redirect goes.
struct Target {
    scheme: Scheme,
    host: String,
    port: u16,
    path: String,
}

/// Resolves a `Location` against the request (absolute URL or absolute path).
fn redirect_target(current: &Target, location: &str) -> Option<Target> {
    if let Some(path) = location
        .strip_prefix('/')
        .filter(|_| !location.starts_with("//"))
    {
        return Some(Target {
            scheme: current.scheme,
            host: current.host.clone(),
            port: current.port,
            path: format!("/{path}"),
        });
    }
    let (scheme, rest) = if let Some(r) = location.strip_prefix("http://") {
        (Scheme::Http, r)
    } else if let Some(r) = location.strip_prefix("https://") {
        (Scheme::Https, r)
    } else {
        return None;
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let default_port = if scheme == Scheme::Https { 443 } else { 80 };
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None => default_port,
        };
        (h.to_owned(), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), p.parse().ok()?),
            None => (authority.to_owned(), default_port),
        }
    };
    Some(Target {
        scheme,
        host,
        port,
        path: path.to_owned(),
    })
}

/// `DoHTTPProbe`: follows redirects to the same host (up to 10); a redirect
/// elsewhere ends the check successfully, as the kubelet treats it.
async fn http_probe(get: &HttpGet) -> ProbeOutcome {
    let mut target = Target {
        scheme: get.scheme,
        host: get.host.clone(),
        port: get.port,
        path: get.path.clone(),
    };
    for _ in 0..=MAX_REDIRECTS {
        let url = format!(
            "{}://{}{}",
            if target.scheme == Scheme::Https {
                "https"
            } else {
                "http"
            },
            join_host_port(&target.host, target.port),
            target.path
        );
        let response = match http_once(&target, &get.headers).await {
            Ok(r) => r,
            Err(e) => return ProbeOutcome::Failure(format!("Get {url:?}: {e}")),
        };
        let body = String::from_utf8_lossy(&response.body).into_owned();
        if (300..400).contains(&response.status) {
            let next = response
                .location
                .as_deref()
                .and_then(|l| redirect_target(&target, l));
            match next {
                Some(next) if next.host == target.host => {
                    target = next;
                    continue;
                }
                _ => {
                    return ProbeOutcome::Success(format!(
                        "Probe terminated redirects, Response body: {body}"
                    ));
                }
            }
        }
        if (200..400).contains(&response.status) {
            return ProbeOutcome::Success(body);
        }
        return ProbeOutcome::Failure(format!(
            "HTTP probe failed with statuscode: {}",
            response.status
        ));
    }
    ProbeOutcome::Failure(format!("Get {:?}: stopped after 10 redirects", get.path))
}

async fn http_once(target: &Target, headers: &[(String, String)]) -> Result<Response, String> {
    let stream = TcpStream::connect((target.host.as_str(), target.port))
        .await
        .map_err(|e| {
            format!(
                "dial tcp {}: connect: {e}",
                join_host_port(&target.host, target.port)
            )
        })?;
    let mut request = format!("GET {} HTTP/1.1\r\n", target.path);
    let host_header = headers.iter().find(|(k, _)| k.eq_ignore_ascii_case("host"));
    match host_header {
        Some((_, v)) => request.push_str(&format!("Host: {v}\r\n")),
        None => request.push_str(&format!(
            "Host: {}\r\n",
            join_host_port(&target.host, target.port)
        )),
    }
    if !headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("user-agent"))
    {
        request.push_str(&format!("User-Agent: {USER_AGENT}\r\n"));
    }
    if !headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("accept"))
    {
        request.push_str("Accept: */*\r\n");
    }
    for (k, v) in headers {
        if !k.eq_ignore_ascii_case("host") {
            request.push_str(&format!("{k}: {v}\r\n"));
        }
    }
    request.push_str("Connection: close\r\n\r\n");
    match target.scheme {
        Scheme::Http => exchange(stream, request.as_bytes()).await,
        Scheme::Https => {
            let connector = tokio_rustls::TlsConnector::from(tls_config()?);
            let name = rustls::pki_types::ServerName::try_from(target.host.clone())
                .map_err(|e| format!("invalid server name {:?}: {e}", target.host))?;
            let tls = connector
                .connect(name, stream)
                .await
                .map_err(|e| format!("tls: {e}"))?;
            exchange(tls, request.as_bytes()).await
        }
    }
}

/// Sends the request and reads the response head and (some of) its body.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    request: &[u8],
) -> Result<Response, String> {
    stream.write_all(request).await.map_err(|e| e.to_string())?;
    stream.flush().await.map_err(|e| e.to_string())?;
    let mut buf = Vec::with_capacity(1024);
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > MAX_HEAD {
            return Err("malformed HTTP response: header too large".into());
        }
        let mut chunk = [0u8; 2048];
        let n = stream.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("EOF".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.split_whitespace();
    let version = parts.next().unwrap_or_default();
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .filter(|s| (100..1000).contains(s))
        .ok_or_else(|| format!("malformed HTTP response {status_line:?}"))?;
    if !version.starts_with("HTTP/1.") {
        return Err(format!("malformed HTTP response {status_line:?}"));
    }
    let mut location = None;
    let mut length: Option<usize> = None;
    for line in lines {
        if let Some((k, v)) = line.split_once(':') {
            let v = v.trim();
            if k.eq_ignore_ascii_case("location") {
                location = Some(v.to_owned());
            } else if k.eq_ignore_ascii_case("content-length") {
                length = v.parse().ok();
            }
        }
    }
    let mut body = buf[head_end..].to_vec();
    let want = length.unwrap_or(MAX_BODY).min(MAX_BODY);
    while body.len() < want {
        let mut chunk = [0u8; 2048];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
        }
    }
    body.truncate(MAX_BODY);
    Ok(Response {
        status,
        location,
        body,
    })
}

/// Accepts any server certificate (the kubelet's probes use
/// `InsecureSkipVerify`), while still checking the handshake's signatures.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn tls_config() -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The container a probe worker looks at, as the agent sees it now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeTarget<'a> {
    /// The current instance's runtime ID (empty: not created yet).
    pub container_id: &'a str,
    /// How long it has been running (`None`: not running).
    pub running_for: Option<Duration>,
    /// It has exited.
    pub terminated: bool,
    /// Its startup probe passed (or it has none).
    pub started: bool,
    /// The pod's `restartPolicy` is `Never`.
    pub restart_never: bool,
    /// The pod is being deleted.
    pub deleting: bool,
    /// The pod reached Succeeded or Failed.
    pub pod_terminal: bool,
}

/// What a worker wants done now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeStep {
    /// Run the check now (then [`ProbeWorker::record`] its outcome).
    Probe,
    /// Nothing to do before this instant.
    WaitUntil(Instant),
    /// The worker is done for good (drop it).
    Stop,
}

/// One probe of one container (`prober/worker.go`), ticked by the agent.
#[derive(Debug, Clone)]
pub struct ProbeWorker {
    kind: ProbeKind,
    params: ProbeParams,
    container_id: String,
    result: Option<bool>,
    last: Option<bool>,
    run: u32,
    on_hold: bool,
    next_at: Option<Instant>,
}

impl ProbeWorker {
    /// A worker for `kind` with the probe's parameters.
    pub fn new(kind: ProbeKind, probe: &Probe) -> Result<Self, ProbeError> {
        Ok(Self {
            kind,
            params: ProbeParams::new(kind, probe)?,
            container_id: String::new(),
            result: None,
            last: None,
            run: 0,
            on_hold: false,
            next_at: None,
        })
    }

    /// The probe's parameters.
    pub fn params(&self) -> &ProbeParams {
        &self.params
    }

    /// The kind of probe.
    pub fn kind(&self) -> ProbeKind {
        self.kind
    }

    /// The current result for the current instance (`None`: unknown, which a
    /// startup probe starts with).
    pub fn result(&self) -> Option<bool> {
        self.result
    }

    /// The instance the result belongs to.
    pub fn container_id(&self) -> &str {
        &self.container_id
    }

    /// A liveness or startup failure: the agent must restart the container
    /// (`Container <c> failed <kind> probe, will be restarted`).
    pub fn needs_restart(&self) -> bool {
        matches!(self.kind, ProbeKind::Liveness | ProbeKind::Startup)
            && self.result == Some(false)
            && self.on_hold
    }

    fn initial(kind: ProbeKind) -> Option<bool> {
        match kind {
            ProbeKind::Readiness => Some(false),
            ProbeKind::Liveness => Some(true),
            ProbeKind::Startup => None,
        }
    }

    /// Decides what to do at `now` (`doProbe`'s preconditions). A new
    /// container ID resets the result to the probe's initial value (readiness
    /// false, liveness true, startup unknown) and resumes a worker on hold.
    pub fn step(&mut self, now: Instant, target: &ProbeTarget<'_>) -> ProbeStep {
        if target.pod_terminal {
            return ProbeStep::Stop;
        }
        if let Some(at) = self.next_at {
            if now < at {
                return ProbeStep::WaitUntil(at);
            }
        }
        let next = now + self.params.period;
        self.next_at = Some(next);
        if target.container_id.is_empty() {
            return ProbeStep::WaitUntil(next);
        }
        if target.container_id != self.container_id {
            self.container_id = target.container_id.to_owned();
            self.result = Self::initial(self.kind);
            self.last = None;
            self.run = 0;
            self.on_hold = false;
        }
        if self.on_hold {
            return ProbeStep::WaitUntil(next);
        }
        let Some(running_for) = target.running_for else {
            self.result = Some(false);
            // Nothing more to learn from a container that will not restart.
            if target.terminated && target.restart_never {
                return ProbeStep::Stop;
            }
            return ProbeStep::WaitUntil(next);
        };
        if target.deleting && matches!(self.kind, ProbeKind::Liveness | ProbeKind::Startup) {
            // A quiet shutdown: no restart for a container being stopped.
            self.result = Some(true);
            return ProbeStep::Stop;
        }
        // Whole seconds, as the kubelet compares them.
        if Duration::from_secs(running_for.as_secs()) < self.params.initial_delay {
            return ProbeStep::WaitUntil(next);
        }
        match (target.started, self.kind) {
            (true, ProbeKind::Startup) => return ProbeStep::WaitUntil(next),
            (false, ProbeKind::Liveness | ProbeKind::Readiness) => {
                return ProbeStep::WaitUntil(next);
            }
            _ => {}
        }
        ProbeStep::Probe
    }

    /// Records a check's outcome; returns the new result when it changed.
    /// Errors are discarded as the kubelet discards them; a result changes
    /// only after `successThreshold` successes or `failureThreshold` failures
    /// in a row.
    pub fn record(&mut self, outcome: &ProbeOutcome) -> Option<bool> {
        let ok = match outcome {
            ProbeOutcome::Success(_) => true,
            ProbeOutcome::Failure(_) => false,
            ProbeOutcome::Error(e) => {
                tracing::debug!(kind = self.kind.name(), container = %self.container_id, "probe errored: {e}");
                return None;
            }
        };
        if self.last == Some(ok) {
            self.run = self.run.saturating_add(1);
        } else {
            self.last = Some(ok);
            self.run = 1;
        }
        let threshold = if ok {
            self.params.success_threshold
        } else {
            self.params.failure_threshold
        };
        if self.run < threshold {
            return None;
        }
        let changed = self.result != Some(ok);
        self.result = Some(ok);
        if !ok && matches!(self.kind, ProbeKind::Liveness | ProbeKind::Startup) {
            // Stop probing until a new instance replaces this one.
            self.on_hold = true;
            self.run = 0;
        }
        changed.then_some(ok)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::net::TcpListener;

    use super::*;
    use crate::testutil::object;

    fn container(yaml: &str) -> Container {
        object(&format!("name: c\nimage: x\n{yaml}"))
    }

    fn probe(yaml: &str) -> Probe {
        object(yaml)
    }

    struct FakeExec {
        code: i32,
        calls: AtomicUsize,
        fail_first: usize,
        hang: bool,
    }

    impl ExecProber for FakeExec {
        fn exec<'a>(
            &'a self,
            _id: &'a str,
            command: &'a [String],
        ) -> BoxFuture<'a, Result<ExecResult, String>> {
            Box::pin(async move {
                let n = self.calls.fetch_add(1, Ordering::SeqCst);
                if self.hang {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                }
                if n < self.fail_first {
                    return Err("exec failed: container not running".into());
                }
                Ok(ExecResult {
                    exit_code: self.code,
                    output: command.join(" ").into_bytes(),
                })
            })
        }
    }

    fn exec(code: i32) -> FakeExec {
        FakeExec {
            code,
            calls: AtomicUsize::new(0),
            fail_first: 0,
            hang: false,
        }
    }

    #[test]
    fn handlers_resolve_ports_hosts_and_defaults() {
        let c = container("ports: [{name: http, containerPort: 8080}]");
        let h = probe_handler(
            &probe(
                "httpGet: {port: http, path: healthz, httpHeaders: [{name: X-Probe, value: '1'}]}",
            ),
            &c,
            Some("10.42.0.9"),
        )
        .unwrap();
        assert_eq!(
            h,
            Handler::HttpGet(HttpGet {
                scheme: Scheme::Http,
                host: "10.42.0.9".into(),
                port: 8080,
                path: "/healthz".into(),
                headers: vec![("X-Probe".into(), "1".into())],
            })
        );
        let h = probe_handler(
            &probe("httpGet: {port: '9000', scheme: HTTPS, host: example.com}"),
            &c,
            Some("10.42.0.9"),
        )
        .unwrap();
        assert!(
            matches!(h, Handler::HttpGet(HttpGet { scheme: Scheme::Https, port: 9000, ref host, ref path, .. }) if host == "example.com" && path == "/")
        );
        assert_eq!(
            probe_handler(&probe("tcpSocket: {port: 22}"), &c, Some("10.42.0.9")).unwrap(),
            Handler::TcpSocket {
                host: "10.42.0.9".into(),
                port: 22
            }
        );
        assert_eq!(
            probe_handler(&probe("exec: {command: [cat, /tmp/ok]}"), &c, None).unwrap(),
            Handler::Exec(vec!["cat".into(), "/tmp/ok".into()])
        );
        for (p, msg) in [
            ("httpGet: {port: nope}", "port nope not found"),
            ("tcpSocket: {port: 70000}", "invalid port number: 70000"),
            ("tcpSocket: {port: 0}", "invalid port number: 0"),
            ("{}", "exactly one handler"),
            (
                "{exec: {command: [x]}, tcpSocket: {port: 1}}",
                "exactly one handler",
            ),
            ("grpc: {port: 9090}", "gRPC probing is not supported"),
            (
                "httpGet: {port: 80, scheme: FTP}",
                "unsupported HTTP scheme",
            ),
            (
                "httpGet: {port: 80, httpHeaders: [{name: \"X\\r\\nEvil\", value: v}]}",
                "invalid HTTP header",
            ),
        ] {
            let e = probe_handler(&probe(p), &c, Some("10.42.0.9")).unwrap_err();
            assert!(e.to_string().contains(msg), "{p}: {e}");
        }
        assert_eq!(
            probe_handler(&probe("tcpSocket: {port: 22}"), &c, None).unwrap_err(),
            ProbeError::NoPodIp
        );
        let hook: LifecycleHandler = object("sleep: {seconds: 5}");
        assert_eq!(
            lifecycle_handler(&hook, &c, None).unwrap(),
            Handler::Sleep(Duration::from_secs(5))
        );
        let hook: LifecycleHandler = object("httpGet: {port: 8080, path: /shutdown}");
        assert!(matches!(
            lifecycle_handler(&hook, &c, Some("10.0.0.1")).unwrap(),
            Handler::HttpGet(_)
        ));
    }

    #[test]
    fn params_default_and_validate() {
        let p = ProbeParams::new(ProbeKind::Readiness, &probe("exec: {command: [x]}")).unwrap();
        assert_eq!(p.period, Duration::from_secs(10));
        assert_eq!(p.timeout, Duration::from_secs(1));
        assert_eq!((p.success_threshold, p.failure_threshold), (1, 3));
        assert_eq!(p.initial_delay, Duration::ZERO);
        assert!(ProbeParams::new(ProbeKind::Liveness, &probe("{successThreshold: 2}")).is_err());
        assert!(ProbeParams::new(ProbeKind::Readiness, &probe("{successThreshold: 2}")).is_ok());
        assert!(ProbeParams::new(ProbeKind::Readiness, &probe("{periodSeconds: 0}")).is_err());
        assert!(
            ProbeParams::new(ProbeKind::Readiness, &probe("{initialDelaySeconds: -1}")).is_err()
        );
    }

    fn target(id: &str, running: Option<u64>, started: bool) -> ProbeTarget<'_> {
        ProbeTarget {
            container_id: id,
            running_for: running.map(Duration::from_secs),
            terminated: false,
            started,
            restart_never: false,
            deleting: false,
            pod_terminal: false,
        }
    }

    #[test]
    fn readiness_thresholds_and_periods() {
        let mut w = ProbeWorker::new(ProbeKind::Readiness, &probe("{exec: {command: [x]}, initialDelaySeconds: 5, periodSeconds: 2, successThreshold: 2, failureThreshold: 2}")).unwrap();
        let t0 = Instant::now();
        // Not created yet.
        assert_eq!(
            w.step(t0, &target("", None, false)),
            ProbeStep::WaitUntil(t0 + Duration::from_secs(2))
        );
        assert_eq!(
            w.step(t0 + Duration::from_secs(1), &target("c1", Some(1), true)),
            ProbeStep::WaitUntil(t0 + Duration::from_secs(2)),
            "period not elapsed"
        );
        // Initial delay.
        assert!(matches!(
            w.step(t0 + Duration::from_secs(2), &target("c1", Some(2), true)),
            ProbeStep::WaitUntil(_)
        ));
        assert_eq!(w.result(), Some(false), "readiness starts false");
        let t = t0 + Duration::from_secs(6);
        assert_eq!(w.step(t, &target("c1", Some(6), true)), ProbeStep::Probe);
        assert_eq!(
            w.record(&ProbeOutcome::Success(String::new())),
            None,
            "one success of two"
        );
        assert_eq!(
            w.step(t + Duration::from_secs(2), &target("c1", Some(8), true)),
            ProbeStep::Probe
        );
        assert_eq!(w.record(&ProbeOutcome::Success(String::new())), Some(true));
        assert_eq!(w.record(&ProbeOutcome::Failure("x".into())), None);
        assert_eq!(
            w.record(&ProbeOutcome::Error("x".into())),
            None,
            "errors are discarded"
        );
        assert_eq!(w.record(&ProbeOutcome::Failure("x".into())), Some(false));
        assert!(!w.needs_restart(), "readiness never restarts");
        // A new instance starts over.
        w.step(t + Duration::from_secs(10), &target("c2", Some(0), true));
        assert_eq!(w.container_id(), "c2");
        assert_eq!(w.result(), Some(false));
    }

    #[test]
    fn liveness_failure_restarts_and_holds_until_new_instance() {
        let mut w = ProbeWorker::new(
            ProbeKind::Liveness,
            &probe("{exec: {command: [x]}, periodSeconds: 1, failureThreshold: 3}"),
        )
        .unwrap();
        let t0 = Instant::now();
        let mut now = t0;
        assert_eq!(w.step(now, &target("c1", Some(0), true)), ProbeStep::Probe);
        assert_eq!(w.result(), Some(true), "liveness starts true");
        for i in 0..3 {
            let changed = w.record(&ProbeOutcome::Failure(
                "HTTP probe failed with statuscode: 500".into(),
            ));
            assert_eq!(changed, if i == 2 { Some(false) } else { None });
            now += Duration::from_secs(1);
            w.step(now, &target("c1", Some(i + 1), true));
        }
        assert!(w.needs_restart());
        // On hold: no more probes of this instance.
        now += Duration::from_secs(1);
        assert!(matches!(
            w.step(now, &target("c1", Some(9), true)),
            ProbeStep::WaitUntil(_)
        ));
        now += Duration::from_secs(1);
        assert_eq!(w.step(now, &target("c2", Some(0), true)), ProbeStep::Probe);
        assert!(!w.needs_restart());
        assert_eq!(w.result(), Some(true));
    }

    #[test]
    fn startup_gates_other_probes() {
        let mut s = ProbeWorker::new(
            ProbeKind::Startup,
            &probe("{exec: {command: [x]}, periodSeconds: 1}"),
        )
        .unwrap();
        let mut l = ProbeWorker::new(
            ProbeKind::Liveness,
            &probe("{exec: {command: [x]}, periodSeconds: 1}"),
        )
        .unwrap();
        let now = Instant::now();
        assert_eq!(
            l.step(now, &target("c1", Some(0), false)),
            ProbeStep::WaitUntil(now + Duration::from_secs(1)),
            "liveness waits for startup"
        );
        assert_eq!(s.step(now, &target("c1", Some(0), false)), ProbeStep::Probe);
        assert_eq!(s.result(), None, "startup starts unknown");
        assert_eq!(s.record(&ProbeOutcome::Success(String::new())), Some(true));
        let later = now + Duration::from_secs(1);
        assert!(
            matches!(
                s.step(later, &target("c1", Some(1), true)),
                ProbeStep::WaitUntil(_)
            ),
            "startup stops once started"
        );
        assert_eq!(
            l.step(later, &target("c1", Some(1), true)),
            ProbeStep::Probe
        );
    }

    #[test]
    fn non_running_deleting_and_terminal_targets() {
        let mut r =
            ProbeWorker::new(ProbeKind::Readiness, &probe("{exec: {command: [x]}}")).unwrap();
        let now = Instant::now();
        let mut t = target("c1", None, false);
        t.terminated = true;
        assert!(matches!(r.step(now, &t), ProbeStep::WaitUntil(_)));
        assert_eq!(r.result(), Some(false));
        t.restart_never = true;
        assert_eq!(r.step(now + Duration::from_secs(10), &t), ProbeStep::Stop);
        let mut l =
            ProbeWorker::new(ProbeKind::Liveness, &probe("{exec: {command: [x]}}")).unwrap();
        let mut t = target("c1", Some(100), true);
        t.deleting = true;
        assert_eq!(l.step(now, &t), ProbeStep::Stop);
        assert_eq!(l.result(), Some(true), "quiet shutdown");
        let mut t = target("c1", Some(1), true);
        t.pod_terminal = true;
        assert_eq!(r.step(now + Duration::from_secs(20), &t), ProbeStep::Stop);
    }

    #[tokio::test]
    async fn exec_checks_with_timeout_and_retries() {
        let h = Handler::Exec(vec!["true".into()]);
        assert_eq!(
            run(&h, "c", Duration::from_secs(1), &exec(0)).await,
            ProbeOutcome::Success("true".into())
        );
        assert_eq!(
            run(&h, "c", Duration::from_secs(1), &exec(1)).await,
            ProbeOutcome::Failure("true".into())
        );
        let flaky = FakeExec {
            fail_first: 2,
            ..exec(0)
        };
        assert!(matches!(
            run_with_retries(&h, "c", Duration::from_secs(1), &flaky).await,
            ProbeOutcome::Success(_)
        ));
        assert_eq!(flaky.calls.load(Ordering::SeqCst), 3);
        let broken = FakeExec {
            fail_first: 9,
            ..exec(0)
        };
        assert!(matches!(
            run_with_retries(&h, "c", Duration::from_secs(1), &broken).await,
            ProbeOutcome::Error(_)
        ));
        assert_eq!(broken.calls.load(Ordering::SeqCst), 3, "three tries");
        let hung = FakeExec {
            hang: true,
            ..exec(0)
        };
        let o = run(&h, "c", Duration::from_millis(50), &hung).await;
        assert!(
            matches!(o, ProbeOutcome::Failure(ref m) if m.contains("timed out")),
            "{o:?}"
        );
    }

    /// Serves `responses` (one per connection) on loopback; returns the port
    /// and the requests received.
    async fn server(responses: Vec<String>) -> (u16, tokio::task::JoinHandle<Vec<String>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let mut seen = Vec::new();
            for r in responses {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = vec![0u8; 4096];
                let n = s.read(&mut buf).await.unwrap();
                seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
                s.write_all(r.as_bytes()).await.unwrap();
                s.shutdown().await.ok();
            }
            seen
        });
        (port, task)
    }

    fn get(port: u16, path: &str) -> Handler {
        Handler::HttpGet(HttpGet {
            scheme: Scheme::Http,
            host: "127.0.0.1".into(),
            port,
            path: path.into(),
            headers: vec![("X-Custom".into(), "yes".into())],
        })
    }

    #[tokio::test]
    async fn http_get_status_codes_headers_and_redirects() {
        let (port, task) = server(vec![
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".into(),
            "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n".into(),
            "HTTP/1.0 302 Found\r\nLocation: /next\r\n\r\n".into(),
            "HTTP/1.1 204 No Content\r\n\r\n".into(),
            "HTTP/1.1 301 Moved\r\nLocation: http://elsewhere.example:8080/\r\nContent-Length: 3\r\n\r\nbye".into(),
            "garbage\r\n\r\n".into(),
        ])
        .await;
        let e = exec(0);
        let t = Duration::from_secs(2);
        assert_eq!(
            run(&get(port, "/healthz?x=1"), "c", t, &e).await,
            ProbeOutcome::Success("ok".into())
        );
        assert_eq!(
            run(&get(port, "/"), "c", t, &e).await,
            ProbeOutcome::Failure("HTTP probe failed with statuscode: 500".into())
        );
        assert!(
            matches!(
                run(&get(port, "/old"), "c", t, &e).await,
                ProbeOutcome::Success(_)
            ),
            "same-host redirect followed"
        );
        assert_eq!(
            run(&get(port, "/"), "c", t, &e).await,
            ProbeOutcome::Success("Probe terminated redirects, Response body: bye".into()),
            "off-host redirect: success (the kubelet's warning)"
        );
        assert!(
            matches!(run(&get(port, "/"), "c", t, &e).await, ProbeOutcome::Failure(ref m) if m.contains("malformed"))
        );
        let seen = task.await.unwrap();
        assert!(
            seen[0].starts_with("GET /healthz?x=1 HTTP/1.1\r\n"),
            "{}",
            seen[0]
        );
        assert!(seen[0].contains(&format!("Host: 127.0.0.1:{port}\r\n")));
        assert!(seen[0].contains("User-Agent: kube-probe/1.30\r\n"));
        assert!(seen[0].contains("Accept: */*\r\n"));
        assert!(seen[0].contains("X-Custom: yes\r\n"));
        assert!(seen[3].starts_with("GET /next "), "{}", seen[3]);
    }

    #[tokio::test]
    async fn http_get_connection_refused_and_timeout() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let o = run(&get(port, "/"), "c", Duration::from_secs(1), &exec(0)).await;
        assert!(
            matches!(o, ProbeOutcome::Failure(ref m) if m.contains("connect")),
            "{o:?}"
        );
        // A server that accepts and never answers: the timeout fails the check.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let hold = tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(5)).await;
            drop(s);
        });
        let o = run(&get(port, "/"), "c", Duration::from_millis(200), &exec(0)).await;
        assert!(
            matches!(o, ProbeOutcome::Failure(ref m) if m.contains("deadline exceeded")),
            "{o:?}"
        );
        hold.abort();
    }

    #[tokio::test]
    async fn tcp_socket_checks() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let h = Handler::TcpSocket {
            host: "127.0.0.1".into(),
            port,
        };
        assert!(matches!(
            run(&h, "c", Duration::from_secs(1), &exec(0)).await,
            ProbeOutcome::Success(_)
        ));
        drop(listener);
        let o = run(&h, "c", Duration::from_secs(1), &exec(0)).await;
        assert!(
            matches!(o, ProbeOutcome::Failure(ref m) if m.starts_with(&format!("dial tcp 127.0.0.1:{port}: connect:"))),
            "{o:?}"
        );
    }

    #[tokio::test]
    async fn https_get_without_certificate_verification() {
        let key = rcgen::generate_simple_self_signed(vec!["pod.invalid".to_owned()]).unwrap();
        let cert = key.cert.der().clone();
        let private =
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.signing_key.serialize_der().into());
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], private)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            let mut tls = acceptor.accept(s).await.unwrap();
            let mut buf = vec![0u8; 4096];
            let n = tls.read(&mut buf).await.unwrap();
            tls.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecure")
                .await
                .unwrap();
            tls.shutdown().await.ok();
            String::from_utf8_lossy(&buf[..n]).into_owned()
        });
        let h = Handler::HttpGet(HttpGet {
            scheme: Scheme::Https,
            host: "127.0.0.1".into(),
            port,
            path: "/".into(),
            headers: vec![],
        });
        assert_eq!(
            run(&h, "c", Duration::from_secs(5), &exec(0)).await,
            ProbeOutcome::Success("secure".into())
        );
        assert!(task.await.unwrap().starts_with("GET / HTTP/1.1"));
    }

    #[test]
    fn redirect_targets() {
        let cur = Target {
            scheme: Scheme::Http,
            host: "10.0.0.1".into(),
            port: 80,
            path: "/a".into(),
        };
        let t = redirect_target(&cur, "/b?c").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("10.0.0.1", 80, "/b?c")
        );
        let t = redirect_target(&cur, "https://[fd00::1]:8443/x").unwrap();
        assert_eq!(
            (t.scheme, t.host.as_str(), t.port, t.path.as_str()),
            (Scheme::Https, "fd00::1", 8443, "/x")
        );
        let t = redirect_target(&cur, "http://host").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("host", 80, "/")
        );
        assert!(redirect_target(&cur, "ftp://x/").is_none());
        assert!(redirect_target(&cur, "http://h:notaport/").is_none());
    }
}
