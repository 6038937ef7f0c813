//! The real client end to end: Debian's kubectl 1.20 → devserver → a node's
//! `armlet-tunnel` → a fake kubelet whose `/exec` and `/portForward` are
//! served by `armlet-streams` (the SPDY server side armlet's kubelet API
//! uses). The kubelet runs a few built-in commands instead of processes:
//! `echo`, `cat` (stdin to stdout), `warn` (to stderr), `sh -c 'exit N'`,
//! `printenv TERM` and `stty size` (terminal sessions), anything else is
//! "not found". Port 80 of the pod echoes; port 81 refuses. Only loopback.

mod common;

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream as StdTcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use armlet_streams::portforward::forward_error;
use armlet_streams::{
    Config, ExecRequest, ExecSession, ExitStatus, Forward, PortForwardRequest, encode_head,
};
use armlet_tunnel::client;
use common::{
    Devserver, NodeCredentials, admin_credentials, join_node, kubectl_path, pem_file, provider,
    roots, scratch,
};
use hyper::HeaderMap;
use hyper::header::{HeaderName, HeaderValue};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

/// What the kubelet was asked: the request line of each request.
type Seen = Arc<Mutex<Vec<String>>>;

/// A kubelet stand-in on loopback: TLS with the node's serving certificate,
/// client certificates from the client CA required.
async fn start_kubelet(dir: &Path, node: &NodeCredentials) -> (u16, Seen) {
    let (chain, key) = pem_file(&node.serving_crt);
    let key = key.or_else(|| pem_file(&node.serving_key).1).unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        roots(&dir.join("data/server/tls/client-ca.crt")),
        provider(),
    )
    .build()
    .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen: Seen = Arc::default();
    let record = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let record = Arc::clone(&record);
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(tcp).await {
                    serve(tls, record).await;
                }
            });
        }
    });
    (port, seen)
}

fn streams_config() -> Config {
    Config {
        stream_creation_timeout: Duration::from_secs(10),
        linger: Duration::from_secs(1),
        ..Config::default()
    }
}

async fn serve(mut tls: tokio_rustls::server::TlsStream<TcpStream>, seen: Seen) {
    let mut head = Vec::new();
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if tls.read_buf(&mut head).await.unwrap_or(0) == 0 {
            return;
        }
    }
    let end = head.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let text = String::from_utf8_lossy(&head[..end]).into_owned();
    let mut lines = text.split("\r\n");
    let line = lines.next().unwrap().to_owned();
    let mut headers = HeaderMap::new();
    for l in lines.filter(|l| !l.is_empty()) {
        let (name, value) = l.split_once(':').unwrap();
        headers.append(
            HeaderName::from_bytes(name.trim().as_bytes()).unwrap(),
            HeaderValue::from_str(value.trim()).unwrap(),
        );
    }
    seen.lock().unwrap().push(line.clone());
    let buffered = head[end..].to_vec();
    let target = line.split(' ').nth(1).unwrap_or("").to_owned();
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target.as_str(), None),
    };
    if path.starts_with("/exec/") {
        let request = match ExecRequest::exec(&headers, query) {
            Ok(request) => request,
            Err(rejection) => {
                let response = rejection.into_response();
                let _ = tls.write_all(&encode_head(&response)).await;
                let _ = tls.write_all(response.body().as_bytes()).await;
                return;
            }
        };
        if tls
            .write_all(&encode_head(&request.response()))
            .await
            .is_err()
        {
            return;
        }
        if let Ok(session) = request.accept(tls, buffered, &streams_config()).await {
            run(session).await;
        }
    } else if path.starts_with("/portForward/") {
        let request = match PortForwardRequest::new(&headers) {
            Ok(request) => request,
            Err(rejection) => {
                let response = rejection.into_response();
                let _ = tls.write_all(&encode_head(&response)).await;
                let _ = tls.write_all(response.body().as_bytes()).await;
                return;
            }
        };
        if tls
            .write_all(&encode_head(&request.response()))
            .await
            .is_err()
        {
            return;
        }
        let mut session = request.accept(tls, buffered, &streams_config());
        while let Some(forward) = session.next().await {
            tokio::spawn(forward_to_pod(forward));
        }
    } else if path == "/healthz" {
        let _ = tls
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            .await;
        let _ = tls.shutdown().await;
    } else {
        let _ = tls
            .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .await;
        let _ = tls.shutdown().await;
    }
}

/// The built-in commands, on the session's streams.
async fn run(mut session: ExecSession) {
    let command = session.options().command.clone();
    let tty = session.tty();
    let mut stdin = session.take_stdin();
    let mut stdout = session.take_stdout();
    let mut stderr = session.take_stderr();
    let mut resize = session.take_resize();
    // A terminal's line discipline turns \n into \r\n.
    let nl = if tty { "\r\n" } else { "\n" };
    let args: Vec<&str> = command.iter().map(String::as_str).collect();
    let exit = match args.as_slice() {
        ["echo", words @ ..] => {
            if let Some(out) = &mut stdout {
                let _ = out
                    .write_all(format!("{}{nl}", words.join(" ")).as_bytes())
                    .await;
            }
            ExitStatus::Code(0)
        }
        ["warn", words @ ..] => {
            if let Some(err) = &mut stderr {
                let _ = err
                    .write_all(format!("{}{nl}", words.join(" ")).as_bytes())
                    .await;
            }
            ExitStatus::Code(0)
        }
        ["cat"] => {
            if let (Some(input), Some(out)) = (&mut stdin, &mut stdout) {
                let _ = tokio::io::copy(input, out).await;
            }
            ExitStatus::Code(0)
        }
        ["sh", "-c", script] if script.starts_with("exit ") => {
            ExitStatus::Code(script[5..].trim().parse().unwrap_or(2))
        }
        ["printenv", "TERM"] if tty => {
            if let Some(out) = &mut stdout {
                let _ = out.write_all(format!("xterm{nl}").as_bytes()).await;
            }
            ExitStatus::Code(0)
        }
        ["printenv", "TERM"] => ExitStatus::Code(1),
        ["stty", "size"] => {
            let size = match &mut resize {
                Some(r) => tokio::time::timeout(Duration::from_secs(10), r.next())
                    .await
                    .ok()
                    .flatten(),
                None => None,
            };
            match (size, &mut stdout) {
                (Some(size), Some(out)) => {
                    let line = format!("{} {}{nl}", size.height, size.width);
                    let _ = out.write_all(line.as_bytes()).await;
                    ExitStatus::Code(0)
                }
                _ => ExitStatus::Code(1),
            }
        }
        _ => ExitStatus::Error(format!(
            "exec: \"{}\": executable file not found in $PATH",
            args.first().unwrap_or(&"")
        )),
    };
    // Output first, then the status.
    for out in [&mut stdout, &mut stderr].into_iter().flatten() {
        let _ = out.shutdown().await;
    }
    drop((stdin, stdout, stderr, resize));
    let _ = session.finish(exit).await;
}

/// Port 80 echoes; anything else refuses, as a pod with nothing listening.
async fn forward_to_pod(mut forward: Forward) {
    if forward.port != 80 {
        let message = forward_error(
            forward.port,
            "web",
            "",
            &format!(
                "dial tcp4 127.0.0.1:{}: connect: connection refused",
                forward.port
            ),
        );
        let _ = forward.fail(&message).await;
        return;
    }
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match forward.data.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if forward.data.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        }
    }
}

/// A node with its tunnel up, a fake kubelet behind it, and pod `web`
/// (container `main`) bound to it.
struct Cluster {
    server: Devserver,
    dir: PathBuf,
    seen: Seen,
    /// Runs the kubelet and the tunnel.
    _runtime: tokio::runtime::Runtime,
    _tunnel: tokio::task::JoinHandle<Result<(), client::ClientError>>,
}

impl Cluster {
    fn start(name: &str) -> Self {
        let dir = scratch(name);
        let server = Devserver::start(&dir);
        let admin = admin_credentials(&dir);
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let node = join_node(&server, "n1");
        let (port, seen) = runtime.block_on(start_kubelet(&dir, &node));
        let ws = runtime.block_on(async {
            let tcp_port = server.url.rsplit(':').next().unwrap().to_owned();
            let tcp = TcpStream::connect(format!("127.0.0.1:{tcp_port}"))
                .await
                .unwrap();
            let (chain, _) = pem_file(&node.client_crt);
            let (_, key) = pem_file(&node.client_key);
            let config = rustls::ClientConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots(&dir.join("data/server/tls/server-ca.crt")))
                .with_client_auth_cert(chain, key.unwrap())
                .unwrap();
            let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
                .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
                .await
                .unwrap();
            let host = server.url.trim_start_matches("https://").to_owned();
            client::connect(tls, &host).await.unwrap()
        });
        let allowed = format!("127.0.0.1:{port}");
        let tunnel = runtime.spawn(client::serve(ws, move |address: &str| address == allowed));
        let cluster = Self {
            server,
            dir,
            seen,
            _runtime: runtime,
            _tunnel: tunnel,
        };
        let status = format!(r#"{{"daemonEndpoints":{{"kubeletEndpoint":{{"Port":{port}}}}}}}"#);
        cluster.as_node(&node, "POST", "application/json", "URL/api/v1/nodes", &format!(
            r#"{{"apiVersion":"v1","kind":"Node","metadata":{{"name":"n1"}},"status":{status}}}"#
        ), 201);
        cluster.as_node(
            &node,
            "PATCH",
            "application/merge-patch+json",
            "URL/api/v1/nodes/n1/status",
            &format!(r#"{{"status":{status}}}"#),
            200,
        );
        cluster.as_admin(
            &admin,
            "POST",
            "application/json",
            "URL/api/v1/namespaces/default/pods",
            r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"web"},"spec":{"nodeName":"n1","containers":[{"name":"main","image":"busybox"}]}}"#,
            201,
        );
        // port-forward wants a running pod.
        cluster.as_admin(
            &admin,
            "PATCH",
            "application/merge-patch+json",
            "URL/api/v1/namespaces/default/pods/web/status",
            r#"{"status":{"phase":"Running"}}"#,
            200,
        );
        // The tunnel is registered just after its 101 reaches the agent.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (code, _, _) =
                cluster
                    .server
                    .curl_as(&admin.0, &admin.1, &["URL/api/v1/nodes/n1/proxy/healthz"]);
            if code == 200 {
                break;
            }
            assert!(Instant::now() < deadline, "the tunnel never came up");
            std::thread::sleep(Duration::from_millis(50));
        }
        cluster
    }

    fn as_node(
        &self,
        node: &NodeCredentials,
        method: &str,
        ct: &str,
        url: &str,
        body: &str,
        want: u16,
    ) {
        self.send(
            &node.client_crt,
            &node.client_key,
            method,
            ct,
            url,
            body,
            want,
        );
    }

    fn as_admin(
        &self,
        admin: &(PathBuf, PathBuf),
        method: &str,
        ct: &str,
        url: &str,
        body: &str,
        want: u16,
    ) {
        self.send(&admin.0, &admin.1, method, ct, url, body, want);
    }

    #[allow(clippy::too_many_arguments)]
    fn send(
        &self,
        cert: &Path,
        key: &Path,
        method: &str,
        ct: &str,
        url: &str,
        body: &str,
        want: u16,
    ) {
        let content_type = format!("Content-Type: {ct}");
        let (code, _, out) = self.server.curl_as(
            cert,
            key,
            &["-X", method, "-H", &content_type, "--data", body, url],
        );
        assert_eq!(
            code,
            want,
            "{method} {url}: {}",
            String::from_utf8_lossy(&out)
        );
    }

    /// The kubelet's request lines that start with `prefix`.
    fn seen(&self, prefix: &str) -> Vec<String> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.starts_with(prefix))
            .cloned()
            .collect()
    }

    /// kubectl with the admin kubeconfig, not yet started.
    fn kubectl(&self, args: &[&str]) -> Command {
        let home = self.dir.join("home");
        std::fs::create_dir_all(&home).unwrap();
        let mut c = Command::new(kubectl_path());
        c.env("HOME", &home)
            .env("KUBECONFIG", self.dir.join("data/kubeconfig.yaml"))
            .args(args);
        c
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// kubectl's exit code, stdout and stderr.
fn output(mut command: Command, input: &[u8]) -> (i32, String, String) {
    let mut child = command
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
    let input = input.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn kubectl_exec_runs_through_the_streams_crate() {
    let cluster = Cluster::start("exec");
    let exec = |args: &[&str], input: &[u8]| {
        let mut all = vec!["--request-timeout", "30s", "exec"];
        all.extend_from_slice(args);
        output(cluster.kubectl(&all), input)
    };

    // Output, exit 0; the kubelet saw the command and no stdin.
    let (code, out, err) = exec(&["web", "--", "echo", "hi"], b"");
    assert_eq!((code, out.as_str()), (0, "hi\n"), "{err}");
    assert_eq!(
        cluster.seen("POST /exec/").last().unwrap(),
        "POST /exec/default/web/main?command=echo&command=hi&error=1&output=1 HTTP/1.1"
    );

    // stdin, piped: echoed through cat, a quarter megabyte of it.
    let mut input = String::new();
    for i in 0..20_000 {
        input.push_str(&format!("line {i}\n"));
    }
    let (code, out, err) = exec(&["-i", "web", "--", "cat"], input.as_bytes());
    assert_eq!(code, 0, "{err}");
    assert!(
        out == input,
        "cat gave {} bytes of {}",
        out.len(),
        input.len()
    );
    assert_eq!(
        cluster.seen("POST /exec/").last().unwrap(),
        "POST /exec/default/web/main?command=cat&error=1&input=1&output=1 HTTP/1.1"
    );

    // stderr apart from stdout.
    let (code, out, err) = exec(&["web", "--", "warn", "oops"], b"");
    assert_eq!((code, out.as_str(), err.as_str()), (0, "", "oops\n"));

    // A non-zero exit comes back as kubectl's own.
    let (code, out, err) = exec(&["web", "--", "sh", "-c", "exit 3"], b"");
    assert_eq!(code, 3, "{out}{err}");
    assert_eq!(err.trim(), "command terminated with exit code 3");

    // What could not be run: the kubelet's internal error.
    let (code, _, err) = exec(&["web", "--", "nope"], b"");
    assert_eq!(code, 1);
    assert_eq!(
        err.trim(),
        "error: Internal error occurred: error executing command in container: exec: \"nope\": executable file not found in $PATH"
    );
}

#[test]
fn kubectl_exec_with_a_terminal_gets_tty_and_resize() {
    if Command::new("script").arg("--version").output().is_err() {
        panic!("script (util-linux) is needed for a terminal");
    }
    let cluster = Cluster::start("exec-tty");
    let kubectl = kubectl_path();
    let run = |inner: &str| {
        // script gives kubectl a terminal of a known size; -e returns its code.
        let line = format!(
            "stty cols 101 rows 33; exec {} --request-timeout 30s exec -it web -- {inner}",
            kubectl.display()
        );
        let mut script = Command::new("script");
        script
            .args(["-qec", &line, "/dev/null"])
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", cluster.dir.join("home"))
            .env("KUBECONFIG", cluster.dir.join("data/kubeconfig.yaml"))
            .env("TERM", "xterm");
        output(script, b"")
    };
    let (code, out, err) = run("stty size");
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("33 101\r\n"), "{out:?}");
    let (code, out, err) = run("printenv TERM");
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("xterm\r\n"), "{out:?}");
    // A terminal: tty=1 (and error=1, which the kubelet drops under one).
    let lines = cluster.seen("POST /exec/");
    assert_eq!(
        lines.last().unwrap(),
        "POST /exec/default/web/main?command=printenv&command=TERM&error=1&input=1&output=1&tty=1 HTTP/1.1"
    );
}

#[test]
fn kubectl_port_forward_carries_bytes_to_the_pod_and_back() {
    let cluster = Cluster::start("port-forward");
    let mut child = cluster
        .kubectl(&["port-forward", "web", ":80", ":81"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // "Forwarding from 127.0.0.1:<local> -> 80" (and [::1], and for 81).
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut local = std::collections::HashMap::new();
    while local.len() < 2 {
        let line = lines.next().expect("kubectl stopped").unwrap();
        if let Some(rest) = line.strip_prefix("Forwarding from 127.0.0.1:") {
            let (port, remote) = rest.split_once(" -> ").unwrap();
            local.insert(remote.to_owned(), port.parse::<u16>().unwrap());
        }
    }
    let stderr = child.stderr.take().unwrap();
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = BufReader::new(stderr).read_to_string(&mut text);
        text
    });

    for round in 0..3 {
        let mut tcp = StdTcpStream::connect(("127.0.0.1", local["80"])).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let sent: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8 ^ round).collect();
        let mut writer = tcp.try_clone().unwrap();
        let payload = sent.clone();
        let feeder = std::thread::spawn(move || writer.write_all(&payload));
        let mut got = vec![0u8; sent.len()];
        tcp.read_exact(&mut got).unwrap();
        feeder.join().unwrap().unwrap();
        assert!(got == sent, "round {round}: the echo differs");
        tcp.shutdown(std::net::Shutdown::Write).unwrap();
        // The pod side ends when we do.
        let mut rest = Vec::new();
        assert_eq!(tcp.read_to_end(&mut rest).unwrap(), 0);
    }

    // Port 81 refuses: the connection ends, kubectl reports the kubelet's
    // message.
    let mut tcp = StdTcpStream::connect(("127.0.0.1", local["81"])).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = tcp.write_all(b"anyone?");
    let mut rest = Vec::new();
    let _ = tcp.read_to_end(&mut rest);
    assert!(rest.is_empty());

    // Every forward went over one upgraded connection to the kubelet.
    assert_eq!(
        cluster.seen("POST /portForward/"),
        ["POST /portForward/default/web HTTP/1.1"]
    );
    std::thread::sleep(Duration::from_millis(500));
    let _ = child.kill();
    let _ = child.wait();
    let errors = errors.join().unwrap();
    assert!(
        errors.contains(&format!(
            "an error occurred forwarding {} -> 81: error forwarding port 81 to pod web, uid : dial tcp4 127.0.0.1:81: connect: connection refused",
            local["81"]
        )),
        "{errors}"
    );
}
