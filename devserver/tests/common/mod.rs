//! The devserver harness the integration tests share: start the binary on a free
//! loopback port in a scratch directory, talk to it with curl, read the admin
//! credentials it wrote.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The password the tests join with (the recorded one).
pub const PASSWORD: &str = "d6eea178fe9c2f098967fc2ebfdd36bd";
/// The server URL in the recordings, replaced by the test server's.
pub const RECORDED_URL: &str = "https://127.0.0.1:6443";

/// A running devserver, killed on drop.
pub struct Devserver {
    /// The process.
    pub child: Child,
    /// `https://127.0.0.1:<port>`.
    pub url: String,
    /// The scratch directory (`data/` is its data dir).
    pub dir: PathBuf,
}

impl Devserver {
    /// Starts with the recorded password as token.
    pub fn start(dir: &Path) -> Self {
        Self::start_with(dir, &["--token", PASSWORD])
    }

    /// Starts with extra flags.
    pub fn start_with(dir: &Path, extra: &[&str]) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut child = Command::new(env!("CARGO_BIN_EXE_armlet-devserver"))
            .arg("--data-dir")
            .arg(dir.join("data"))
            .args(["--https-listen-port", &port.to_string()])
            .args(extra)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        loop {
            let line = lines
                .next()
                .expect("devserver exited before it was ready")
                .unwrap();
            if line.contains("ready on") {
                break;
            }
        }
        std::thread::spawn(move || for _ in lines {});
        Self {
            child,
            url: format!("https://127.0.0.1:{port}"),
            dir: dir.to_path_buf(),
        }
    }

    /// Runs a recorded curl command against this server; (status, content
    /// type, body).
    pub fn curl(&self, args: &[String]) -> (u16, Option<String>, Vec<u8>) {
        let out_dir = self.dir.join("out");
        std::fs::create_dir_all(&out_dir).unwrap();
        let body_file = self.dir.join("body");
        let output = Command::new("curl")
            .current_dir(&self.dir)
            .args(["-s", "-D", "-", "-o"])
            .arg(&body_file)
            .args(args.iter().map(|a| a.replace(RECORDED_URL, &self.url)))
            .output()
            .unwrap();
        let all = String::from_utf8_lossy(&output.stdout).into_owned();
        // After an interim `100 Continue`, the final response's headers.
        let headers = all
            .rsplit_once("HTTP/1.1 ")
            .map_or(String::new(), |(_, h)| format!("HTTP/1.1 {h}"));
        let status = headers
            .lines()
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no response to {args:?}: {all}"));
        let content_type = headers.lines().find_map(|l| {
            let (name, value) = l.split_once(": ")?;
            name.eq_ignore_ascii_case("content-type")
                .then(|| value.trim().to_owned())
        });
        let body = std::fs::read(&body_file).unwrap_or_default();
        (status, content_type, body)
    }
}

impl Drop for Devserver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fresh scratch directory for one test.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("armlet-devserver-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The admin client certificate and key from the written kubeconfig, as files.
pub fn admin_credentials(dir: &Path) -> (PathBuf, PathBuf) {
    use base64::Engine as _;
    let kubeconfig = std::fs::read_to_string(dir.join("data/kubeconfig.yaml")).unwrap();
    let field = |name: &str| {
        let line = kubeconfig
            .lines()
            .find_map(|l| l.trim().strip_prefix(&format!("{name}: ")))
            .unwrap_or_else(|| panic!("{name} missing from the kubeconfig"));
        base64::engine::general_purpose::STANDARD
            .decode(line)
            .unwrap()
    };
    let (cert, key) = (dir.join("admin.crt"), dir.join("admin.key"));
    std::fs::write(&cert, field("client-certificate-data")).unwrap();
    std::fs::write(&key, field("client-key-data")).unwrap();
    std::fs::write(dir.join("ca.crt"), field("certificate-authority-data")).unwrap();
    (cert, key)
}

/// Debian's kubectl 1.20, as setup unpacks it (or `ARMLET_KUBECTL`).
pub fn kubectl_path() -> PathBuf {
    std::env::var_os("ARMLET_KUBECTL")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/lib/armlet-dev/kubectl/usr/bin/kubectl"))
}

impl Devserver {
    /// Runs kubectl with the admin kubeconfig the server wrote (its own
    /// HOME, so no cache is shared between tests); (success, stdout, stderr).
    pub fn kubectl(&self, args: &[&str]) -> (bool, String, String) {
        self.kubectl_with_input(args, None)
    }

    /// As [`Devserver::kubectl`], with `input` on its standard input.
    pub fn kubectl_with_input(&self, args: &[&str], input: Option<&str>) -> (bool, String, String) {
        use std::io::Write as _;
        let home = self.dir.join("home");
        std::fs::create_dir_all(&home).unwrap();
        let mut child = Command::new(kubectl_path())
            .env("HOME", &home)
            .env("KUBECONFIG", self.dir.join("data/kubeconfig.yaml"))
            .args(["--request-timeout", "20s"])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "{}: {e} (run `cargo xtask setup`)",
                    kubectl_path().display()
                )
            });
        let mut stdin = child.stdin.take().unwrap();
        if let Some(text) = input {
            stdin.write_all(text.as_bytes()).unwrap();
        }
        drop(stdin);
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

/// A node's kubelet certificates, fetched as an agent fetches them (Basic
/// `node:<token password>` and the node headers), each written as
/// `<dir>/<node>-{serving,client}.{crt,key}`.
pub struct NodeCredentials {
    /// The serving certificate chain (leaf, server CA), PEM.
    pub serving_crt: PathBuf,
    /// Its key, PEM.
    pub serving_key: PathBuf,
    /// The client certificate chain (CN `system:node:<node>`), PEM.
    pub client_crt: PathBuf,
    /// Its key, PEM.
    pub client_key: PathBuf,
}

/// Joins `node` (node password `<node>-password`, node IP 127.0.0.1) and
/// keeps the two kubelet certificates the supervisor hands out.
pub fn join_node(server: &Devserver, node: &str) -> NodeCredentials {
    let ca = server.dir.join("data/server/tls/server-ca.crt");
    let fetch = |what: &str| -> (PathBuf, PathBuf) {
        let (status, _, body) = server.curl(&[
            "--cacert".into(),
            ca.display().to_string(),
            "-u".into(),
            format!("node:{PASSWORD}"),
            "-H".into(),
            format!("k3s-Node-Name: {node}"),
            "-H".into(),
            format!("k3s-Node-Password: {node}-password"),
            "-H".into(),
            "k3s-Node-IP: 127.0.0.1".into(),
            format!("{}/v1-k3s/{what}-kubelet.crt", server.url),
        ]);
        assert_eq!(status, 200, "{what}: {}", String::from_utf8_lossy(&body));
        // Certificates first, the (2021-style shared) key last.
        let text = String::from_utf8(body).unwrap();
        let at = text.find("-----BEGIN EC PRIVATE KEY").unwrap();
        let crt = server.dir.join(format!("{node}-{what}.crt"));
        let key = server.dir.join(format!("{node}-{what}.key"));
        std::fs::write(&crt, &text[..at]).unwrap();
        std::fs::write(&key, &text[at..]).unwrap();
        (crt, key)
    };
    let (serving_crt, serving_key) = fetch("serving");
    let (client_crt, client_key) = fetch("client");
    NodeCredentials {
        serving_crt,
        serving_key,
        client_crt,
        client_key,
    }
}

impl Devserver {
    /// curl with a client certificate against the API, trusting the server
    /// CA; (status, content type, body).
    pub fn curl_as(
        &self,
        cert: &Path,
        key: &Path,
        args: &[&str],
    ) -> (u16, Option<String>, Vec<u8>) {
        let mut all: Vec<String> = vec![
            "--cacert".into(),
            self.dir
                .join("data/server/tls/server-ca.crt")
                .display()
                .to_string(),
            "--cert".into(),
            cert.display().to_string(),
            "--key".into(),
            key.display().to_string(),
        ];
        all.extend(args.iter().map(|a| a.replace("URL", &self.url)));
        self.curl(&all)
    }
}

/// The certificates and key of a PEM file.
pub fn pem_file(
    path: &Path,
) -> (
    Vec<rustls::pki_types::CertificateDer<'static>>,
    Option<rustls::pki_types::PrivateKeyDer<'static>>,
) {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivateSec1KeyDer};
    let text = std::fs::read(path).unwrap();
    let mut certs = Vec::new();
    let mut key = None;
    for block in pem::parse_many(text).unwrap() {
        match block.tag() {
            "CERTIFICATE" => certs.push(CertificateDer::from(block.contents().to_vec())),
            "EC PRIVATE KEY" => {
                key = Some(PrivateKeyDer::Sec1(PrivateSec1KeyDer::from(
                    block.contents().to_vec(),
                )));
            }
            _ => {}
        }
    }
    (certs, key)
}

/// The ring provider.
pub fn provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::ring::default_provider())
}

/// A root store of the certificates in a PEM file.
pub fn roots(ca_file: &Path) -> std::sync::Arc<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in pem_file(ca_file).0 {
        roots.add(cert).unwrap();
    }
    std::sync::Arc::new(roots)
}
