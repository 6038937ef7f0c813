//! The development control plane for agent tests: `armlet-devserver` started
//! on a loopback port (or an address of a network namespace the test made)
//! in a scratch data directory, its token and admin kubeconfig, and a node
//! joined by hand (curl, as the recorded transcript does) for tests of what
//! comes after the join.
//!
//! The binary comes from `ARMLET_DEVSERVER` (`cargo xtask test` builds it and
//! sets it), else from the target directory's debug build.

use std::io::{BufRead as _, BufReader};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The password part of the token the tests start servers with.
pub const PASSWORD: &str = "armlet-test-password-0123456789ab";

/// The devserver binary. Panics with what to run when it is missing: a test
/// against a server that was never built must fail, not pass quietly.
pub fn binary() -> PathBuf {
    let path = std::env::var_os("ARMLET_DEVSERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::target_dir().join("debug").join("armlet-devserver"));
    assert!(
        path.is_file(),
        "{} is missing: run `cargo build -p armlet-devserver` (or the whole suite with \
         `cargo xtask test`), or set ARMLET_DEVSERVER",
        path.display()
    );
    path
}

/// A running devserver, stopped on drop.
#[derive(Debug)]
pub struct Devserver {
    child: Child,
    /// `https://<address>:<port>`.
    pub url: String,
    /// The address it listens on.
    pub address: IpAddr,
    /// The port.
    pub port: u16,
    /// Its data directory.
    pub data_dir: PathBuf,
}

impl Devserver {
    /// Starts a server with `data_dir` on 127.0.0.1 and a free port.
    pub fn start(data_dir: &Path) -> Self {
        Self::start_on(data_dir, IpAddr::from([127, 0, 0, 1]), 0, &[])
    }

    /// Starts a server on `address`:`port` (0: a free loopback port) with
    /// extra flags (`--cluster-cidr`, ...).
    pub fn start_on(data_dir: &Path, address: IpAddr, port: u16, extra: &[&str]) -> Self {
        let port = if port == 0 {
            std::net::TcpListener::bind((address, 0))
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .unwrap_or_else(|e| panic!("no free port on {address}: {e}"))
        } else {
            port
        };
        let mut child = Command::new(binary())
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--bind-address", &address.to_string()])
            .args(["--https-listen-port", &port.to_string()])
            .args(["--token", PASSWORD])
            .args(extra)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", binary().display()));
        let stderr = child.stderr.take().expect("piped stderr");
        let mut lines = BufReader::new(stderr).lines();
        loop {
            match lines.next() {
                Some(Ok(line)) if line.contains("ready on") => break,
                Some(Ok(_)) => {}
                _ => panic!("the devserver exited before it was ready"),
            }
        }
        // Keep draining its log so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let host = match address {
            IpAddr::V6(v6) => format!("[{v6}]"),
            IpAddr::V4(v4) => v4.to_string(),
        };
        Self {
            child,
            url: format!("https://{host}:{port}"),
            address,
            port,
            data_dir: data_dir.to_path_buf(),
        }
    }

    /// The full (K10, CA-pinned) token, as `k3s token` prints it.
    pub fn token(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("token"))
            .expect("the devserver writes <data-dir>/token")
            .trim()
            .to_owned()
    }

    /// The admin kubeconfig the server wrote.
    pub fn kubeconfig(&self) -> PathBuf {
        self.data_dir.join("kubeconfig.yaml")
    }

    /// The server CA (PEM file).
    pub fn server_ca(&self) -> PathBuf {
        self.data_dir.join("server/tls/server-ca.crt")
    }

    /// The admin client certificate and key (PEM files).
    pub fn admin_credentials(&self) -> (PathBuf, PathBuf) {
        let dir = self.data_dir.join("server/tls");
        (dir.join("client-admin.crt"), dir.join("client-admin.key"))
    }

    /// Stops the server (it can be started again on the same data dir).
    pub fn stop(mut self) {
        self.kill();
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Debian's kubectl 1.20 (`ARMLET_KUBECTL`, else where `cargo xtask
    /// setup` unpacks it) as the admin: (success, stdout, stderr).
    pub fn kubectl(&self, args: &[&str]) -> (bool, String, String) {
        let kubectl = std::env::var_os("ARMLET_KUBECTL")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/var/lib/armlet-dev/kubectl/usr/bin/kubectl"));
        // Its own HOME: no cache shared between tests.
        let home = self.data_dir.join("kubectl-home");
        let _ = std::fs::create_dir_all(&home);
        let out = Command::new(&kubectl)
            .env("HOME", &home)
            .env("KUBECONFIG", self.kubeconfig())
            .args(["--request-timeout", "20s"])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{}: {e} (run `cargo xtask setup`)", kubectl.display()));
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// curl as the admin against the API; (HTTP status, body).
    pub fn admin_curl(&self, args: &[&str]) -> (u16, Vec<u8>) {
        let (cert, key) = self.admin_credentials();
        let out = Command::new("curl")
            .args(["-s", "-w", "\n%{http_code}", "--cacert"])
            .arg(self.server_ca())
            .arg("--cert")
            .arg(cert)
            .arg("--key")
            .arg(key)
            .args(args.iter().map(|a| a.replace("URL", &self.url)))
            .output()
            .expect("curl runs");
        let mut body = out.stdout;
        let split = body.iter().rposition(|b| *b == b'\n').unwrap_or(0);
        let status = String::from_utf8_lossy(&body[split..])
            .trim()
            .parse()
            .unwrap_or(0);
        body.truncate(split);
        (status, body)
    }

    /// An object from the API as the admin sees it (`/api/v1/nodes/n1`).
    pub fn get(&self, path: &str) -> Option<serde_json::Value> {
        let (status, body) = self.admin_curl(&[&format!("URL{path}")]);
        (status == 200)
            .then(|| serde_json::from_slice(&body).ok())
            .flatten()
    }

    /// Joins `node` by hand as the recorded transcript does (node password
    /// `<node>-password`, node IP `ip`) and writes its kubelet client and
    /// serving certificates and keys into `dir`.
    pub fn join_node(&self, dir: &Path, node: &str, ip: IpAddr) -> NodeCredentials {
        std::fs::create_dir_all(dir).expect("credentials directory");
        let fetch = |what: &str| -> (PathBuf, PathBuf) {
            let out = Command::new("curl")
                .args(["-sf", "--cacert"])
                .arg(self.server_ca())
                .args(["-u", &format!("node:{PASSWORD}")])
                .args(["-H", &format!("K3s-Node-Name: {node}")])
                .args(["-H", &format!("K3s-Node-Password: {node}-password")])
                .args(["-H", &format!("K3s-Node-IP: {ip}")])
                .arg(format!("{}/v1-k3s/{what}-kubelet.crt", self.url))
                .output()
                .expect("curl runs");
            assert!(
                out.status.success(),
                "joining {node}: {what} certificate refused"
            );
            // Certificates first, the (2021-style shared) key last.
            let text = String::from_utf8(out.stdout).expect("PEM");
            let at = text
                .find("-----BEGIN EC PRIVATE KEY")
                .expect("the key follows the certificates");
            let crt = dir.join(format!("{what}-kubelet.crt"));
            let key = dir.join(format!("{what}-kubelet.key"));
            std::fs::write(&crt, &text[..at]).expect("write certificate");
            std::fs::write(&key, &text[at..]).expect("write key");
            (crt, key)
        };
        let (serving_crt, serving_key) = fetch("serving");
        let (client_crt, client_key) = fetch("client");
        NodeCredentials {
            server_ca: self.server_ca(),
            serving_crt,
            serving_key,
            client_crt,
            client_key,
        }
    }
}

impl Drop for Devserver {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A joined node's identity (PEM files).
#[derive(Debug, Clone)]
pub struct NodeCredentials {
    /// The server CA: the trust root for the API.
    pub server_ca: PathBuf,
    /// The kubelet serving certificate chain.
    pub serving_crt: PathBuf,
    /// Its key.
    pub serving_key: PathBuf,
    /// The kubelet client certificate chain (`system:node:<node>`).
    pub client_crt: PathBuf,
    /// Its key.
    pub client_key: PathBuf,
}
