//! A real OCI registry for tests: Debian's `docker-registry` (distribution 2.8)
//! on a loopback port, optionally over TLS (a fresh test CA), with HTTP Basic
//! auth (htpasswd) or token auth (a JWT token server run in-process), plus a
//! fault-injecting proxy ([`FaultProxy`]) and `skopeo` to push test images
//! ([`crate::oci`]) into it.
//!
//! Nothing here needs root, and everything listens on 127.0.0.1 only.
//!
//! ```no_run
//! use armlet_tests::oci::busybox_index;
//! use armlet_tests::registry::{RegistryOptions, TestAuth, TestRegistry};
//! # let dir = std::path::Path::new("/tmp/layout");
//! let reg = TestRegistry::start(RegistryOptions {
//!     tls: true,
//!     auth: TestAuth::basic("alice", "secret"),
//! });
//! let image = busybox_index(dir, "1");
//! reg.push(dir, "1", "library/busybox:1");
//! // Pull `<reg.host()>/library/busybox:1` trusting `reg.ca_pem_path()`...
//! ```

use std::collections::HashMap;
use std::fs;
use std::io::{self, BufWriter, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};

use crate::node::TempDir;

/// Debian's registry binary (package `docker-registry`).
pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

/// The token server's `service` (the JWT audience) in token mode.
pub const TOKEN_SERVICE: &str = "test-registry";

/// The token server's issuer (`iss`) in token mode.
pub const TOKEN_ISSUER: &str = "armlet-test-issuer";

/// Lifetime of the tokens handed out, in seconds.
const TOKEN_LIFETIME: u64 = 300;

/// How long a registry may take to answer after it is started.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// Read and write timeout of the helpers' sockets: a stuck peer fails a test
/// instead of hanging it.
const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// Environment variables that would send skopeo's traffic to a proxy: removed,
/// so that nothing a test starts talks to anything but loopback.
const PROXY_VARS: &[&str] = &[
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
];

/// How a [`TestRegistry`] authenticates clients.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum TestAuth {
    /// Anyone may pull and push.
    #[default]
    None,
    /// HTTP Basic auth against an htpasswd file (bcrypt) with one user.
    Basic {
        /// The user name.
        user: String,
        /// The password.
        password: String,
    },
    /// Bearer tokens (the Docker token flow): the registry sends clients to a
    /// token server run in-process (plain HTTP on loopback, even when the
    /// registry serves TLS), which hands a JWT to this one user (HTTP Basic
    /// auth there) granting whatever repository scope was asked for.
    Token {
        /// The user name.
        user: String,
        /// The password.
        password: String,
    },
}

impl TestAuth {
    /// [`TestAuth::Basic`] with this user and password.
    pub fn basic(user: &str, password: &str) -> Self {
        Self::Basic {
            user: user.to_owned(),
            password: password.to_owned(),
        }
    }

    /// [`TestAuth::Token`] with this user and password.
    pub fn token(user: &str, password: &str) -> Self {
        Self::Token {
            user: user.to_owned(),
            password: password.to_owned(),
        }
    }

    /// The user and password, if any.
    pub fn credentials(&self) -> Option<(&str, &str)> {
        match self {
            Self::None => None,
            Self::Basic { user, password } | Self::Token { user, password } => {
                Some((user, password))
            }
        }
    }
}

/// How to start a [`TestRegistry`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistryOptions {
    /// Serve HTTPS with a certificate for `127.0.0.1` and `localhost` signed by
    /// a fresh test CA ([`TestRegistry::ca_pem_path`]); plain HTTP otherwise.
    pub tls: bool,
    /// Client authentication.
    pub auth: TestAuth,
}

/// The TLS material of a registry started with `tls: true`.
struct Tls {
    /// The CA certificate, PEM.
    ca_pem: PathBuf,
    /// The CA certificate, DER (for the readiness check).
    ca_der: Vec<u8>,
    /// A directory with `ca.crt`, as skopeo's `--cert-dir` wants it.
    cert_dir: PathBuf,
}

/// A running `docker-registry serve` on 127.0.0.1, killed (and reaped) when
/// dropped, with its configuration and storage in a scratch directory removed
/// then too.
pub struct TestRegistry {
    options: RegistryOptions,
    address: std::net::Ipv4Addr,
    port: u16,
    config: PathBuf,
    log: PathBuf,
    tls: Option<Tls>,
    token: Option<TokenServer>,
    child: Option<Child>,
    // Last: the directory goes after the process that uses it is gone.
    dir: TempDir,
}

impl TestRegistry {
    /// Starts a registry and waits until `GET /v2/` answers (401 included).
    ///
    /// Panics, with the registry's log, when it does not come up, and says to
    /// run `cargo xtask setup` when the registry, skopeo or htpasswd is missing.
    pub fn start(options: RegistryOptions) -> Self {
        Self::start_on(options, std::net::Ipv4Addr::LOCALHOST)
    }

    /// [`start`](Self::start) on another local address (one of a test's
    /// network namespaces' host ends, for a node inside one to reach).
    pub fn start_on(options: RegistryOptions, address: std::net::Ipv4Addr) -> Self {
        require_tool(REGISTRY_BIN, "docker-registry");
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let n = COUNT.fetch_add(1, Ordering::Relaxed);
        let dir = TempDir::new(&format!("registry-{n}"));
        let storage = dir.path().join("storage");
        fs::create_dir_all(&storage).expect("creating the registry's storage directory");
        let port = free_port(address);
        let tls = options.tls.then(|| make_tls(dir.path()));
        let token = match &options.auth {
            TestAuth::Token { user, password } => {
                Some(TokenServer::start(dir.path(), user, password))
            }
            _ => None,
        };
        if let TestAuth::Basic { user, password } = &options.auth {
            write_htpasswd(&dir.path().join("htpasswd"), user, password);
        }
        let config = dir.path().join("config.yml");
        fs::write(
            &config,
            config_yaml(dir.path(), address, port, tls.is_some(), token.as_ref()),
        )
        .expect("writing the registry's config.yml");
        let mut reg = Self {
            options,
            address,
            port,
            config,
            log: dir.path().join("registry.log"),
            tls,
            token,
            child: None,
            dir,
        };
        reg.spawn();
        reg
    }

    /// A plain-HTTP registry without authentication.
    pub fn plain() -> Self {
        Self::start(RegistryOptions::default())
    }

    /// The options it was started with.
    pub fn options(&self) -> &RegistryOptions {
        &self.options
    }

    /// "127.0.0.1:PORT" (or its other address): the registry part of image
    /// references.
    pub fn host(&self) -> String {
        format!("{}:{}", self.address, self.port)
    }

    /// The socket address it listens on.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((self.address, self.port))
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// "http://127.0.0.1:PORT" or "https://127.0.0.1:PORT".
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.host())
    }

    /// The test CA's certificate (PEM), which signed the server certificate;
    /// `None` when the registry was started without TLS.
    pub fn ca_pem_path(&self) -> Option<&Path> {
        self.tls.as_ref().map(|t| t.ca_pem.as_path())
    }

    /// A directory holding the CA as `ca.crt` (what skopeo's `--cert-dir` and
    /// `/etc/containers/certs.d/<host>/` expect); `None` without TLS.
    pub fn cert_dir(&self) -> Option<&Path> {
        self.tls.as_ref().map(|t| t.cert_dir.as_path())
    }

    /// `GET path` over HTTPS as `server_name` ("127.0.0.1" or "localhost"),
    /// trusting only the test CA (rustls, as armlet's client does); an error
    /// when the registry was started without TLS.
    pub fn https_get(&self, server_name: &str, path: &str) -> io::Result<HttpResponse> {
        let tls = self.tls.as_ref().ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "registry started without TLS")
        })?;
        https_get(self.addr(), server_name, &tls.ca_der, path)
    }

    /// The token server's address ("127.0.0.1:PORT") in token mode.
    pub fn token_host(&self) -> Option<String> {
        self.token.as_ref().map(|t| t.addr.to_string())
    }

    /// Requests to the token server so far (all of them, refused ones too);
    /// 0 unless in token mode.
    pub fn token_requests(&self) -> usize {
        self.token
            .as_ref()
            .map_or(0, |t| t.state.requests.load(Ordering::SeqCst))
    }

    /// Tokens the token server handed out so far; 0 unless in token mode.
    pub fn tokens_issued(&self) -> usize {
        self.token
            .as_ref()
            .map_or(0, |t| t.state.issued.load(Ordering::SeqCst))
    }

    /// Asks the token server (as a client would) for a token for `scope`
    /// ("repository:NAME:pull,push") with these credentials; `Err(status)`
    /// when it refuses. Panics unless in token mode.
    pub fn fetch_token(&self, scope: &str, user: &str, password: &str) -> Result<String, u16> {
        let token = self
            .token
            .as_ref()
            .expect("fetch_token: this TestRegistry is not in token mode");
        let auth = STANDARD.encode(format!("{user}:{password}"));
        let path = format!(
            "/token?service={TOKEN_SERVICE}&scope={}",
            percent_encode(scope)
        );
        let response = http_get(
            token.addr,
            &path,
            &[("Authorization", &format!("Basic {auth}"))],
        )
        .unwrap_or_else(|e| panic!("token server at {}: {e}", token.addr));
        if response.status != 200 {
            return Err(response.status);
        }
        let body: Value = serde_json::from_slice(&response.body).unwrap_or_default();
        body["token"].as_str().map(str::to_owned).ok_or(500)
    }

    /// The registry's storage directory (filesystem driver).
    pub fn storage_dir(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    /// What the registry logged so far (all its runs).
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// True while the registry process runs.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Kills the registry (SIGKILL, no goodbye): the "registry vanishes" case.
    /// Connections are refused until [`restart`](Self::restart).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the registry again on the same port with the same storage (and
    /// certificates, users and token server); stops it first if it runs.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    fn spawn(&mut self) {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("opening the registry's log");
        let child = Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("duplicating a file descriptor"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {REGISTRY_BIN}: {e}"));
        self.child = Some(child);
        self.wait_ready();
    }

    /// Polls `GET /v2/` until it answers 200 or 401.
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "docker-registry exited ({status}) before answering; its log:\n{}",
                    self.log()
                );
            }
            let answer = match &self.tls {
                None => http_get(self.addr(), "/v2/", &[]),
                Some(tls) => https_get(self.addr(), "127.0.0.1", &tls.ca_der, "/v2/"),
            };
            let last = match answer {
                Ok(r) if r.status == 200 || r.status == 401 => return,
                Ok(r) => format!("status {}", r.status),
                Err(e) => e.to_string(),
            };
            if Instant::now() > deadline {
                self.stop();
                panic!(
                    "docker-registry did not answer GET /v2/ on {} within {START_TIMEOUT:?} \
                     ({last}); its log:\n{}",
                    self.url(),
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A `skopeo` command without proxies or signature policy (the images are
    /// the test's own).
    pub fn skopeo() -> Command {
        require_tool("/usr/bin/skopeo", "skopeo");
        let mut c = Command::new("/usr/bin/skopeo");
        for var in PROXY_VARS {
            c.env_remove(var);
        }
        c.arg("--insecure-policy");
        c
    }

    /// skopeo's options to reach this registry, for the side `prefix` names
    /// ("src", "dest", or "" for commands with one image such as `inspect`):
    /// TLS verification off for plain HTTP or the CA directory, and `creds` if
    /// given.
    pub fn skopeo_args(&self, prefix: &str, creds: Option<(&str, &str)>) -> Vec<String> {
        let flag = |name: &str| {
            if prefix.is_empty() {
                format!("--{name}")
            } else {
                format!("--{prefix}-{name}")
            }
        };
        let mut args = match &self.tls {
            None => vec![format!("{}=false", flag("tls-verify"))],
            Some(tls) => vec![
                flag("cert-dir"),
                tls.cert_dir.to_string_lossy().into_owned(),
            ],
        };
        match creds {
            Some((user, password)) => args.extend([flag("creds"), format!("{user}:{password}")]),
            // Nothing from the user's own auth files either.
            None => args.push(flag("no-creds")),
        }
        args
    }

    /// Pushes the image tagged `tag` in the OCI layout `layout_dir` to
    /// `<host>/<repo_and_tag>` with `skopeo copy --all --preserve-digests`
    /// (every platform, digests unchanged), with the registry's credentials if
    /// it has any. Panics with skopeo's error output when that fails.
    pub fn push(&self, layout_dir: &Path, tag: &str, repo_and_tag: &str) {
        let mut c = Self::skopeo();
        c.args(["copy", "--all", "--preserve-digests", "--retry-times", "0"])
            .args(self.skopeo_args("dest", self.options.auth.credentials()))
            .arg(format!("oci:{}:{tag}", layout_dir.display()))
            .arg(format!("docker://{}/{repo_and_tag}", self.host()));
        run_skopeo(&mut c).unwrap_or_else(|e| panic!("pushing {repo_and_tag}: {e}"));
    }

    /// `skopeo inspect --raw` of `<host>/<reference>` (a tag or `@digest`) with
    /// these credentials: the manifest or index bytes as the registry serves
    /// them, or skopeo's error output.
    pub fn inspect_raw(
        &self,
        reference: &str,
        creds: Option<(&str, &str)>,
    ) -> Result<Vec<u8>, String> {
        let mut c = Self::skopeo();
        c.args(["inspect", "--raw", "--retry-times", "0"])
            .args(self.skopeo_args("", creds))
            .arg(format!("docker://{}/{reference}", self.host()));
        run_skopeo(&mut c)
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Panics saying to run `cargo xtask setup` when a tool is missing.
fn require_tool(path: &str, package: &str) {
    assert!(
        Path::new(path).exists(),
        "{path} is missing: run `cargo xtask setup` (it installs Debian's {package})"
    );
}

/// Runs a skopeo command; its stdout, or its stderr as the error.
fn run_skopeo(c: &mut Command) -> Result<Vec<u8>, String> {
    let out = c
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run skopeo: {e}"))?;
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(format!(
            "skopeo failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim_end()
        ))
    }
}

/// A loopback port free right now. The registry binds it a moment later: a
/// race with other processes taking it is possible but needs a port the kernel
/// just handed out to be handed out again.
fn free_port(address: std::net::Ipv4Addr) -> u16 {
    TcpListener::bind((address, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding a loopback port")
}

/// `htpasswd -Bbn`: a bcrypt entry, the only kind distribution accepts.
fn write_htpasswd(path: &Path, user: &str, password: &str) {
    require_tool("/usr/bin/htpasswd", "apache2-utils");
    let out = Command::new("/usr/bin/htpasswd")
        .args(["-Bbn", user, password])
        .output()
        .expect("running htpasswd");
    assert!(
        out.status.success(),
        "htpasswd -Bbn failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    fs::write(path, &out.stdout).expect("writing the htpasswd file");
}

/// The registry's configuration: loopback only, filesystem storage in `dir`,
/// nothing running in the background.
fn config_yaml(
    dir: &Path,
    address: std::net::Ipv4Addr,
    port: u16,
    tls: bool,
    token: Option<&TokenServer>,
) -> String {
    let mut http = format!(
        "http:\n  addr: {address}:{port}\n  \
         # Fixed: upload state stays valid across a restart.\n  \
         secret: armlet-test-secret\n"
    );
    if tls {
        http.push_str(&format!(
            "  tls:\n    certificate: {}\n    key: {}\n",
            dir.join("server.pem").display(),
            dir.join("server-key.pem").display()
        ));
    }
    let auth = if let Some(t) = token {
        format!(
            "auth:\n  token:\n    realm: http://{}/token\n    service: {TOKEN_SERVICE}\n    \
             issuer: {TOKEN_ISSUER}\n    rootcertbundle: {}\n",
            t.addr,
            t.cert_pem.display()
        )
    } else if dir.join("htpasswd").exists() {
        format!(
            "auth:\n  htpasswd:\n    realm: armlet-test\n    path: {}\n",
            dir.join("htpasswd").display()
        )
    } else {
        String::new()
    };
    format!(
        "version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: {storage}
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
{http}health:
  storagedriver:
    enabled: false
{auth}",
        storage = dir.join("storage").display()
    )
}

/// Makes the test CA and the server certificate it signs, in `dir`.
fn make_tls(dir: &Path) -> Tls {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose, SanType,
    };
    let fail = |e: rcgen::Error| -> ! { panic!("generating test certificates: {e}") };
    let ca_key = KeyPair::generate().unwrap_or_else(|e| fail(e));
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap_or_else(|e| fail(e));
    ca.distinguished_name
        .push(DnType::CommonName, "armlet test CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key).unwrap_or_else(|e| fail(e));
    let issuer = Issuer::new(ca, ca_key);

    let key = KeyPair::generate().unwrap_or_else(|e| fail(e));
    let mut server =
        CertificateParams::new(vec!["localhost".to_owned()]).unwrap_or_else(|e| fail(e));
    server
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    server.subject_alt_names.extend([
        SanType::IpAddress([127, 0, 0, 1].into()),
        SanType::IpAddress(std::net::Ipv6Addr::LOCALHOST.into()),
    ]);
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    server.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let cert = server.signed_by(&key, &issuer).unwrap_or_else(|e| fail(e));

    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        fs::write(&path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        path
    };
    write("server.pem", &cert.pem());
    write("server-key.pem", &key.serialize_pem());
    let ca_pem = write("ca.pem", &ca_cert.pem());
    let cert_dir = dir.join("certs.d");
    fs::create_dir_all(&cert_dir).expect("creating the certificate directory");
    fs::write(cert_dir.join("ca.crt"), ca_cert.pem()).expect("writing certs.d/ca.crt");
    Tls {
        ca_pem,
        ca_der: ca_cert.der().to_vec(),
        cert_dir,
    }
}

/// `GET path` over TLS to `addr` as `server_name`, trusting only `ca_der`
/// (rustls, as armlet's client): the readiness check of a TLS registry, and a
/// check that its certificate is valid for that name.
fn https_get(
    addr: SocketAddr,
    server_name: &str,
    ca_der: &[u8],
    path: &str,
) -> io::Result<HttpResponse> {
    use rustls::pki_types::{CertificateDer, ServerName};
    let invalid = |e: String| io::Error::new(io::ErrorKind::InvalidData, e);
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(ca_der.to_vec()))
        .map_err(|e| invalid(e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from(server_name.to_owned()).map_err(|e| invalid(e.to_string()))?;
    let conn = rustls::ClientConnection::new(Arc::new(config), name)
        .map_err(|e| invalid(e.to_string()))?;
    let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    tcp.set_read_timeout(Some(IO_TIMEOUT))?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    tls.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {server_name}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )?;
    let mut raw = Vec::new();
    // Go closes without close_notify at times: what arrived is the answer.
    match tls.read_to_end(&mut raw) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && !raw.is_empty() => {}
        Err(e) => return Err(e),
    }
    HttpResponse::parse(&raw)
}

/// An HTTP response read to its end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// Header names (lowercase) and values, in order.
    pub headers: Vec<(String, String)>,
    /// The body as sent (no chunked decoding: the helpers ask with HTTP/1.1
    /// `Connection: close`, and Go then sends small bodies whole).
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    fn parse(raw: &[u8]) -> io::Result<Self> {
        let bad = || io::Error::new(io::ErrorKind::InvalidData, "malformed HTTP response");
        let end = find(raw, b"\r\n\r\n").ok_or_else(bad)?;
        let head = std::str::from_utf8(&raw[..end]).map_err(|_| bad())?;
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .ok_or_else(bad)?;
        Ok(Self {
            status,
            headers: parse_headers(lines),
            body: raw[end + 4..].to_vec(),
        })
    }
}

/// A plain-HTTP request to `addr` (`Connection: close`), read to its end.
/// `headers` are added to `Host`.
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<HttpResponse> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        req.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() || method == "POST" || method == "PUT" {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    s.write_all(body)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    HttpResponse::parse(&raw)
}

/// A plain-HTTP `GET` (see [`http_request`]).
pub fn http_get(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> io::Result<HttpResponse> {
    http_request(addr, "GET", path, headers, &[])
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn parse_headers<'a>(lines: impl Iterator<Item = &'a str>) -> Vec<(String, String)> {
    lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect()
}

/// The error [`read_head`] gives for a TLS handshake on a plain-HTTP port.
const TLS_ON_PLAIN: &str = "TLS handshake on a plain-HTTP port";

/// Reads an HTTP message head (up to the blank line); returns it and whatever
/// body bytes came with it. `None` when the peer closed before sending any.
fn read_head(s: &mut TcpStream) -> io::Result<Option<(String, Vec<u8>)>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            return Ok(Some((head, buf[end + 4..].to_vec())));
        }
        if buf.len() > 64 << 10 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "HTTP head over 64 KiB",
            ));
        }
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err(io::ErrorKind::UnexpectedEof.into())
            };
        }
        buf.extend_from_slice(&chunk[..n]);
        // A TLS ClientHello (record type 22) never ends in a blank line: say
        // so at once, as Go's plain HTTP server does, so that a client trying
        // HTTPS first falls back to HTTP without waiting for a timeout.
        if buf[0] == 0x16 {
            return Err(io::Error::new(io::ErrorKind::InvalidData, TLS_ON_PLAIN));
        }
    }
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let decoded = match bytes[i] {
            b'%' if i + 2 < bytes.len() => hex(bytes[i + 1])
                .zip(hex(bytes[i + 2]))
                .map(|(h, l)| (h << 4) | l),
            _ => None,
        };
        match (decoded, bytes[i]) {
            (Some(b), _) => {
                out.push(b);
                i += 3;
            }
            (None, b'+') => {
                out.push(b' ');
                i += 1;
            }
            (None, b) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The query parameters of a request target, decoded, in order.
fn query_params(target: &str) -> Vec<(String, String)> {
    let Some((_, query)) = target.split_once('?') else {
        return Vec::new();
    };
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

/// Counters and secrets shared with the token server's thread.
struct TokenState {
    user: String,
    password: String,
    key: ring::signature::EcdsaKeyPair,
    rng: ring::rand::SystemRandom,
    cert_der: Vec<u8>,
    requests: AtomicUsize,
    issued: AtomicUsize,
    stop: AtomicBool,
}

/// The Docker token flow's token server, on its own loopback port and thread:
/// `GET /token?service=...&scope=repository:NAME:pull,push` with HTTP Basic
/// auth → an ES256 JWT the registry trusts through `rootcertbundle`.
struct TokenServer {
    addr: SocketAddr,
    cert_pem: PathBuf,
    state: Arc<TokenState>,
    thread: Option<JoinHandle<()>>,
}

impl TokenServer {
    fn start(dir: &Path, user: &str, password: &str) -> Self {
        use rcgen::{CertificateParams, DnType, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256};
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
            .unwrap_or_else(|e| panic!("generating the token signing key: {e}"));
        let mut params = CertificateParams::new(Vec::<String>::new())
            .unwrap_or_else(|e| panic!("token certificate parameters: {e}"));
        params
            .distinguished_name
            .push(DnType::CommonName, TOKEN_ISSUER);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let cert = params
            .self_signed(&key)
            .unwrap_or_else(|e| panic!("self-signing the token certificate: {e}"));
        let cert_pem = dir.join("token-cert.pem");
        fs::write(&cert_pem, cert.pem()).expect("writing token-cert.pem");
        let rng = ring::rand::SystemRandom::new();
        let signing = ring::signature::EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            key.serialized_der(),
            &rng,
        )
        .unwrap_or_else(|e| panic!("loading the token signing key into ring: {e}"));

        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the token server");
        let addr = listener.local_addr().expect("token server address");
        let state = Arc::new(TokenState {
            user: user.to_owned(),
            password: password.to_owned(),
            key: signing,
            rng,
            cert_der: cert.der().to_vec(),
            requests: AtomicUsize::new(0),
            issued: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
        });
        let shared = Arc::clone(&state);
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if shared.stop.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(mut s) = conn {
                    // One at a time: token requests are few and answered at once.
                    let _ = serve_token(&shared, &mut s);
                }
            }
        });
        Self {
            addr,
            cert_pem,
            state,
            thread: Some(thread),
        }
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so that it sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Answers one token request.
fn serve_token(state: &TokenState, s: &mut TcpStream) -> io::Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    let Some((head, _)) = read_head(s)? else {
        return Ok(());
    };
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default().to_owned();
    let headers = parse_headers(lines);
    let mut parts = request_line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if target.split('?').next() != Some("/token") {
        return respond(s, 404, "text/plain", b"not found\n");
    }
    state.requests.fetch_add(1, Ordering::SeqCst);
    if method != "GET" {
        return respond(s, 405, "text/plain", b"GET only\n");
    }
    let authorized = headers
        .iter()
        .find(|(n, _)| n == "authorization")
        .and_then(|(_, v)| v.strip_prefix("Basic "))
        .and_then(|b| STANDARD.decode(b.trim()).ok())
        .is_some_and(|d| d == format!("{}:{}", state.user, state.password).as_bytes());
    if !authorized {
        return respond(
            s,
            401,
            "application/json",
            br#"{"errors":[{"code":"UNAUTHORIZED","message":"wrong or missing credentials"}]}"#,
        );
    }
    let params = query_params(target);
    // Several `scope` parameters may come, each possibly holding several
    // space-separated scopes.
    let mut access = Vec::new();
    for (_, scope) in params.iter().filter(|(k, _)| k == "scope") {
        for one in scope.split_whitespace() {
            if let Some(grant) = grant(one) {
                access.push(grant);
            }
        }
    }
    let token = jwt(state, &access);
    state.issued.fetch_add(1, Ordering::SeqCst);
    let body = json!({
        "token": token,
        "access_token": token,
        "expires_in": TOKEN_LIFETIME,
        "issued_at": iso8601(now()),
    });
    respond(
        s,
        200,
        "application/json",
        &serde_json::to_vec(&body).expect("JSON values serialize"),
    )
}

/// The access entry granting what a scope (`repository:NAME:ACTIONS`) asks for.
fn grant(scope: &str) -> Option<Value> {
    let (kind, rest) = scope.split_once(':')?;
    let (name, actions) = rest.rsplit_once(':')?;
    if kind != "repository" || name.is_empty() {
        return None;
    }
    let actions: Vec<&str> = actions
        .split(',')
        .filter(|a| matches!(*a, "pull" | "push" | "delete" | "*"))
        .collect();
    Some(json!({"type": kind, "name": name, "actions": actions}))
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Seconds since the epoch as "YYYY-MM-DDTHH:MM:SSZ".
fn iso8601(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Civil from days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// An ES256 JWT as distribution verifies it: the signing certificate in `x5c`
/// (chained to `rootcertbundle`), issuer, audience = service, validity, and
/// the granted access.
fn jwt(state: &TokenState, access: &[Value]) -> String {
    static JTI: AtomicUsize = AtomicUsize::new(0);
    let now = now();
    let header = json!({
        "typ": "JWT",
        "alg": "ES256",
        "x5c": [STANDARD.encode(&state.cert_der)],
    });
    let claims = json!({
        "iss": TOKEN_ISSUER,
        "sub": state.user,
        "aud": TOKEN_SERVICE,
        "exp": now + TOKEN_LIFETIME,
        // A little back: the registry's clock is this one, but a second's
        // rounding must not make a fresh token "not yet valid".
        "nbf": now.saturating_sub(10),
        "iat": now,
        "jti": format!("armlet-test-{}", JTI.fetch_add(1, Ordering::Relaxed)),
        "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).expect("JSON values serialize")),
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).expect("JSON values serialize"))
    );
    // FIXED signing: r||s, 64 bytes, as JWS wants (not DER).
    let signature = state
        .key
        .sign(&state.rng, signing_input.as_bytes())
        .expect("ECDSA signing with ring");
    format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(signature.as_ref())
    )
}

/// Writes a whole response and closes.
fn respond(s: &mut TcpStream, status: u16, content_type: &str, body: &[u8]) -> io::Result<()> {
    let reason = match status {
        200 => "OK",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Error",
    };
    let mut w = BufWriter::new(&*s);
    write!(
        w,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n",
        body.len()
    )?;
    if status == 401 {
        w.write_all(b"WWW-Authenticate: Basic realm=\"armlet-test-token\"\r\n")?;
    }
    w.write_all(b"Connection: close\r\n\r\n")?;
    w.write_all(body)?;
    w.flush()?;
    drop(w);
    s.shutdown(Shutdown::Write)
}

/// What a [`FaultProxy`] does to blob downloads (`GET /v2/.../blobs/sha256:...`
/// answered 200 or 206); everything else passes unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Nothing: a plain proxy.
    None,
    /// Flips one byte (XOR 0xff) in the middle of every blob body; the length
    /// stays the same, so only the digest check can notice.
    CorruptBlobs,
    /// Sends every blob response's full headers (its whole Content-Length) but
    /// only its first N body bytes, then closes the connection.
    CutBlobsAfter(u64),
    /// Like [`CutBlobsAfter`](Self::CutBlobsAfter) for the first blob response
    /// only; later ones pass (a client's resume with `Range: bytes=N-` then
    /// succeeds).
    CutFirstBlobRequestAfter(u64),
}

/// One request a [`FaultProxy`] saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenRequest {
    /// "METHOD TARGET", e.g. "GET /v2/library/busybox/blobs/sha256:…".
    pub line: String,
    /// Header names (lowercase) and values, as the client sent them.
    pub headers: Vec<(String, String)>,
    /// Whether the proxy's fault was applied to its response.
    pub faulted: bool,
}

impl SeenRequest {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// State shared with the proxy's threads.
struct ProxyState {
    upstream: SocketAddr,
    fault: Mutex<Fault>,
    first_blob_taken: AtomicBool,
    seen: Mutex<Vec<SeenRequest>>,
    stop: AtomicBool,
}

/// A plain-HTTP proxy on 127.0.0.1 in front of a plain [`TestRegistry`] that
/// breaks blob downloads on purpose ([`Fault`]). One request per connection:
/// it asks upstream with `Connection: close` and answers the same, forwarding
/// every other request header unchanged (a client's `Range` included). Stops
/// accepting when dropped.
pub struct FaultProxy {
    addr: SocketAddr,
    state: Arc<ProxyState>,
    thread: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// Starts a proxy to `upstream` (e.g. [`TestRegistry::addr`]).
    pub fn start(upstream: SocketAddr, fault: Fault) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the fault proxy");
        let addr = listener.local_addr().expect("fault proxy address");
        let state = Arc::new(ProxyState {
            upstream,
            fault: Mutex::new(fault),
            first_blob_taken: AtomicBool::new(false),
            seen: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
        });
        let shared = Arc::clone(&state);
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if shared.stop.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(s) = conn {
                    // A thread per connection: clients fetch layers in parallel.
                    let shared = Arc::clone(&shared);
                    std::thread::spawn(move || {
                        let _ = proxy_one(&shared, s);
                    });
                }
            }
        });
        Self {
            addr,
            state,
            thread: Some(thread),
        }
    }

    /// "127.0.0.1:PORT": the registry part of image references through it.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Its socket address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Changes the fault for requests from now on (and re-arms
    /// [`Fault::CutFirstBlobRequestAfter`]).
    pub fn set_fault(&self, fault: Fault) {
        *self.state.fault.lock().unwrap_or_else(|e| e.into_inner()) = fault;
        self.state.first_blob_taken.store(false, Ordering::SeqCst);
    }

    /// The request lines seen so far ("GET /v2/..."), in arrival order.
    pub fn requests(&self) -> Vec<String> {
        self.seen().into_iter().map(|r| r.line).collect()
    }

    /// The requests seen so far, with their headers.
    pub fn seen(&self) -> Vec<SeenRequest> {
        self.state
            .seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A message head passed on: its first line, the end-to-end headers, and
/// `Connection: close` (one request per connection).
fn forwarded_head(first_line: &str, headers: &[&str]) -> String {
    let mut out = format!("{first_line}\r\n");
    for h in headers.iter().filter(|h| !is_hop_header(h)) {
        out.push_str(h);
        out.push_str("\r\n");
    }
    out.push_str("Connection: close\r\n\r\n");
    out
}

/// True for the request target of a blob download.
fn is_blob_target(target: &str) -> bool {
    target.starts_with("/v2/") && target.contains("/blobs/sha256:")
}

/// Proxies one request on `client`.
fn proxy_one(state: &ProxyState, mut client: TcpStream) -> io::Result<()> {
    client.set_read_timeout(Some(IO_TIMEOUT))?;
    client.set_write_timeout(Some(IO_TIMEOUT))?;
    let (head, early_body) = match read_head(&mut client) {
        Ok(Some(read)) => read,
        Ok(None) => return Ok(()),
        Err(e) => {
            let _ = client.write_all(b"HTTP/1.0 400 Bad Request\r\nConnection: close\r\n\r\n");
            return Err(e);
        }
    };
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default().to_owned();
    let raw_headers: Vec<&str> = lines.collect();
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let target = parts.next().unwrap_or_default().to_owned();
    let index = {
        let mut seen = state.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.push(SeenRequest {
            line: format!("{method} {target}"),
            headers: parse_headers(raw_headers.iter().copied()),
            faulted: false,
        });
        seen.len() - 1
    };

    let mut upstream = match TcpStream::connect_timeout(&state.upstream, Duration::from_secs(2)) {
        Ok(s) => s,
        Err(e) => {
            // The registry behind is gone (stopped): say so, as a real proxy would.
            let _ = client.write_all(
                b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
            return Err(e);
        }
    };
    upstream.set_read_timeout(Some(IO_TIMEOUT))?;
    upstream.set_write_timeout(Some(IO_TIMEOUT))?;
    upstream.write_all(forwarded_head(&request_line, &raw_headers).as_bytes())?;
    upstream.write_all(&early_body)?;
    // The rest of a request body, whatever its framing, follows as it comes;
    // the copy ends when the client closes (after the response).
    let (mut from_client, mut to_upstream) = (client.try_clone()?, upstream.try_clone()?);
    std::thread::spawn(move || {
        let _ = io::copy(&mut from_client, &mut to_upstream);
    });

    let Some((response_head, mut body_start)) = read_head(&mut upstream)? else {
        return Ok(());
    };
    let mut lines = response_head.split("\r\n");
    let status_line = lines.next().unwrap_or_default().to_owned();
    let response_headers: Vec<&str> = lines.collect();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let content_length: Option<u64> = parse_headers(response_headers.iter().copied())
        .into_iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok());

    let blob = method == "GET" && is_blob_target(&target) && (status == 200 || status == 206);
    let fault = *state.fault.lock().unwrap_or_else(|e| e.into_inner());
    let (mut flip_at, mut cut_after) = (None, None);
    if blob {
        match fault {
            Fault::None => {}
            Fault::CorruptBlobs => flip_at = Some(content_length.unwrap_or(0) / 2),
            Fault::CutBlobsAfter(n) => cut_after = Some(n),
            Fault::CutFirstBlobRequestAfter(n) => {
                if !state.first_blob_taken.swap(true, Ordering::SeqCst) {
                    cut_after = Some(n);
                }
            }
        }
    }
    if flip_at.is_some() || cut_after.is_some() {
        state.seen.lock().unwrap_or_else(|e| e.into_inner())[index].faulted = true;
    }

    client.write_all(forwarded_head(&status_line, &response_headers).as_bytes())?;

    // The body, as it comes, until upstream closes (it was asked to).
    let mut sent: u64 = 0;
    let mut chunk = vec![0u8; 64 << 10];
    loop {
        let mut piece = if body_start.is_empty() {
            let n = upstream.read(&mut chunk)?;
            if n == 0 {
                break;
            }
            chunk[..n].to_vec()
        } else {
            std::mem::take(&mut body_start)
        };
        if let Some(at) = flip_at {
            if at >= sent && at < sent + piece.len() as u64 {
                piece[(at - sent) as usize] ^= 0xff;
            }
        }
        if let Some(limit) = cut_after {
            let room = limit.saturating_sub(sent) as usize;
            if piece.len() >= room {
                client.write_all(&piece[..room])?;
                break;
            }
        }
        client.write_all(&piece)?;
        sent += piece.len() as u64;
    }
    let _ = client.shutdown(Shutdown::Both);
    let _ = upstream.shutdown(Shutdown::Both);
    Ok(())
}

/// Headers about this one connection, which the proxy sets itself.
fn is_hop_header(line: &str) -> bool {
    let name = line
        .split(':')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    matches!(
        name.as_str(),
        "connection" | "keep-alive" | "proxy-connection"
    )
}

/// The hosts a registries.yaml mirror entry must name for a plain-HTTP
/// [`TestRegistry`] or [`FaultProxy`]: `mirrors: {"<host>": {endpoint:
/// ["http://<host>"]}}`, for `armlet images --registries <file>`.
pub fn plain_http_registries_yaml(hosts: &[&str]) -> String {
    let mut y = String::from("mirrors:\n");
    for host in hosts {
        y.push_str(&format!(
            "  \"{host}\":\n    endpoint:\n      - \"http://{host}\"\n"
        ));
    }
    y
}

/// Counts of each request line, for assertions like "each blob fetched once".
pub fn count_requests(lines: &[String]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for l in lines {
        *counts.entry(l.clone()).or_insert(0) += 1;
    }
    counts
}
