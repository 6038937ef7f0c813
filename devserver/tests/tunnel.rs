//! `kubectl logs` and `exec` through a node's tunnel, end to end: a node
//! joins as an agent does, opens `/v1-k3s/connect` with `armlet-tunnel`'s
//! client and its kubelet client certificate, and a fake kubelet (TLS with
//! the node's serving certificate, client certificates from the client CA
//! required, on a loopback port) answers what the devserver forwards.
//! Nothing is dialled but loopback: the devserver reaches the fake kubelet
//! only through the tunnel.

mod common;

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use armlet_tunnel::client;
use common::{
    Devserver, NodeCredentials, admin_credentials, join_node, kubectl_path, pem_file, provider,
    roots, scratch,
};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

/// A TLS client of the devserver with a client certificate.
fn client_tls(server: &Devserver, cert: &Path, key: &Path) -> tokio_rustls::TlsConnector {
    let (chain, _) = pem_file(cert);
    let (_, key) = pem_file(key);
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots(&server.dir.join("data/server/tls/server-ca.crt")))
        .with_client_auth_cert(chain, key.unwrap())
        .unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

async fn connect_tls(
    server: &Devserver,
    cert: &Path,
    key: &Path,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let port = server.url.rsplit(':').next().unwrap();
    let tcp = TcpStream::connect(format!("127.0.0.1:{port}"))
        .await
        .unwrap();
    client_tls(server, cert, key)
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .unwrap()
}

/// What the fake kubelet was asked.
#[derive(Debug, Clone)]
struct Seen {
    /// `GET /containerLogs/... HTTP/1.1`.
    line: String,
    /// The header lines, lower-cased names.
    headers: Vec<String>,
    /// The client certificate's subject.
    client: String,
}

/// A kubelet stand-in: `/containerLogs` (three lines, `tailLines` honoured;
/// `follow` streams a line every 100 ms; container `side` is not started),
/// `/exec` (101, then echo), `/healthz`.
struct FakeKubelet {
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl FakeKubelet {
    async fn start(dir: &Path, node: &NodeCredentials) -> Self {
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
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&seen);
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let record = Arc::clone(&record);
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(tcp).await {
                        serve_kubelet(tls, record).await;
                    }
                });
            }
        });
        Self { port, seen }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn last(&self, prefix: &str) -> Seen {
        self.seen()
            .into_iter()
            .rev()
            .find(|s| s.line.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix}… request in {:?}", self.seen()))
    }
}

async fn serve_kubelet(
    mut tls: tokio_rustls::server::TlsStream<TcpStream>,
    record: Arc<Mutex<Vec<Seen>>>,
) {
    let client = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|der| {
            let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
            cert.subject().to_string()
        })
        .unwrap_or_default();
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
    let headers: Vec<String> = lines
        .filter(|l| !l.is_empty())
        .map(|l| match l.split_once(':') {
            Some((n, v)) => format!("{}:{v}", n.to_ascii_lowercase()),
            None => l.to_owned(),
        })
        .collect();
    record.lock().unwrap().push(Seen {
        line: line.clone(),
        headers,
        client,
    });
    let target = line.split(' ').nth(1).unwrap_or("").to_owned();
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let param = |key: &str| {
        query
            .split('&')
            .find_map(|p| p.strip_prefix(&format!("{key}=")))
            .map(str::to_owned)
    };
    if path.starts_with("/containerLogs/") {
        if path.ends_with("/side") {
            let body = "container \"side\" in pod \"web\" is waiting to start: ContainerCreating";
            let answer = format!(
                "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = tls.write_all(answer.as_bytes()).await;
        } else if param("follow").as_deref() == Some("true") {
            let _ = tls
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n")
                .await;
            for n in 1..=100 {
                let line = format!("line {n}\n");
                let chunk = format!("{:x}\r\n{line}\r\n", line.len());
                if tls.write_all(chunk.as_bytes()).await.is_err() || tls.flush().await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let _ = tls.write_all(b"0\r\n\r\n").await;
        } else {
            let all = ["line 1\n", "line 2\n", "line 3\n"];
            let tail: usize = param("tailLines").and_then(|t| t.parse().ok()).unwrap_or(3);
            let body: String = all[3 - tail.min(3)..].concat();
            let answer = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = tls.write_all(answer.as_bytes()).await;
        }
    } else if path.starts_with("/exec/") {
        let _ = tls
            .write_all(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\n\r\n")
            .await;
        let _ = tls.flush().await;
        // Anything that came with the head, then everything after.
        let _ = tls.write_all(&head[end..]).await;
        let mut buf = vec![0u8; 16384];
        loop {
            match tls.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tls.write_all(&buf[..n]).await.is_err() || tls.flush().await.is_err() {
                        break;
                    }
                }
            }
        }
    } else if path == "/healthz" {
        let _ = tls
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            .await;
    } else {
        let _ = tls
            .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .await;
    }
    let _ = tls.shutdown().await;
}

/// Registers `node` with its kubelet port (with its own certificate, as a
/// kubelet does) and creates pods (as the admin).
fn create_node(server: &Devserver, node: &str, creds: &NodeCredentials, port: u16) {
    let status = format!(r#"{{"daemonEndpoints":{{"kubeletEndpoint":{{"Port":{port}}}}}}}"#);
    let body = format!(
        r#"{{"apiVersion":"v1","kind":"Node","metadata":{{"name":"{node}"}},"status":{status}}}"#
    );
    let (code, _, out) = server.curl_as(
        &creds.client_crt,
        &creds.client_key,
        &[
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "--data",
            &body,
            "URL/api/v1/nodes",
        ],
    );
    assert_eq!(code, 201, "{}", String::from_utf8_lossy(&out));
    // Kubelets publish the port in the status; whether or not creation kept it.
    let (code, _, out) = server.curl_as(
        &creds.client_crt,
        &creds.client_key,
        &[
            "-X",
            "PATCH",
            "-H",
            "Content-Type: application/merge-patch+json",
            "--data",
            &format!(r#"{{"status":{status}}}"#),
            &format!("URL/api/v1/nodes/{node}/status"),
        ],
    );
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&out));
}

fn create_pod(
    server: &Devserver,
    admin: &(std::path::PathBuf, std::path::PathBuf),
    name: &str,
    node: Option<&str>,
    containers: &[&str],
) {
    let containers: Vec<String> = containers
        .iter()
        .map(|c| format!(r#"{{"name":"{c}","image":"busybox"}}"#))
        .collect();
    let node = node.map_or(String::new(), |n| format!(r#""nodeName":"{n}","#));
    let body = format!(
        r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"{name}"}},"spec":{{{node}"containers":[{}]}}}}"#,
        containers.join(",")
    );
    let (code, _, out) = server.curl_as(
        &admin.0,
        &admin.1,
        &[
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "--data",
            &body,
            "URL/api/v1/namespaces/default/pods",
        ],
    );
    assert_eq!(code, 201, "{}", String::from_utf8_lossy(&out));
}

/// Opens `node`'s tunnel as the agent will, allowing only `port`.
async fn open_tunnel(
    server: &Devserver,
    creds: &NodeCredentials,
    port: u16,
) -> tokio::task::JoinHandle<Result<(), client::ClientError>> {
    let tls = connect_tls(server, &creds.client_crt, &creds.client_key).await;
    let host = server.url.trim_start_matches("https://").to_owned();
    let ws = client::connect(tls, &host).await.unwrap();
    let allowed = format!("127.0.0.1:{port}");
    tokio::spawn(client::serve(ws, move |address: &str| address == allowed))
}

/// `GET` as the admin until the tunnel is registered (the 101 reaches the
/// agent just before the server files the session).
fn wait_for_tunnel(
    server: &Devserver,
    admin: &(std::path::PathBuf, std::path::PathBuf),
    node: &str,
) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (code, _, _) = server.curl_as(
            &admin.0,
            &admin.1,
            &[&format!("URL/api/v1/nodes/{node}/proxy/healthz")],
        );
        if code == 200 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the tunnel of {node} never came up"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn message(body: &[u8]) -> String {
    let status: serde_json::Value = serde_json::from_slice(body)
        .unwrap_or_else(|_| panic!("not a Status: {}", String::from_utf8_lossy(body)));
    status["message"].as_str().unwrap_or_default().to_owned()
}

#[test]
fn kubectl_logs_and_exec_reach_a_kubelet_through_its_tunnel() {
    let dir = scratch("tunnel");
    let server = Devserver::start(&dir);
    let admin = admin_credentials(&dir);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let node = join_node(&server, "n1");
    let kubelet = runtime.block_on(FakeKubelet::start(&dir, &node));
    let agent = runtime.block_on(open_tunnel(&server, &node, kubelet.port));
    create_node(&server, "n1", &node, kubelet.port);
    create_pod(&server, &admin, "web", Some("n1"), &["main", "side"]);
    wait_for_tunnel(&server, &admin, "n1");

    // Node proxy: the kubelet's path, through the tunnel, as kube-apiserver.
    let (code, _, body) =
        server.curl_as(&admin.0, &admin.1, &["URL/api/v1/nodes/n1/proxy/healthz"]);
    assert_eq!((code, body.as_slice()), (200, &b"ok"[..]));
    let healthz = kubelet.last("GET /healthz");
    assert_eq!(healthz.client, "CN=kube-apiserver");
    assert!(
        healthz
            .headers
            .iter()
            .all(|h| !h.starts_with("authorization:"))
    );

    // kubectl logs, with the container and tailLines forwarded.
    let (ok, out, err) = server.kubectl(&["logs", "web", "-c", "main", "--tail=2"]);
    assert!(ok, "{err}");
    assert_eq!(out, "line 2\nline 3\n");
    assert_eq!(
        kubelet.last("GET /containerLogs").line,
        "GET /containerLogs/default/web/main?tailLines=2 HTTP/1.1"
    );
    let (ok, out, err) = server.kubectl(&["logs", "web", "-c", "main"]);
    assert!(ok, "{err}");
    assert_eq!(out, "line 1\nline 2\nline 3\n");

    // The kubelet's refusal reaches kubectl as the apiserver words it.
    let (ok, _, err) = server.kubectl(&["logs", "web", "-c", "side"]);
    assert!(!ok);
    assert_eq!(
        err.trim(),
        "Error from server (BadRequest): container \"side\" in pod \"web\" is waiting to start: ContainerCreating"
    );

    // The pod's containers, checked before anything is dialled.
    let logs = |query: &str| {
        server.curl_as(
            &admin.0,
            &admin.1,
            &[&format!(
                "URL/api/v1/namespaces/default/pods/web/log{query}"
            )],
        )
    };
    let (code, _, body) = logs("");
    assert_eq!(code, 400);
    assert_eq!(
        message(&body),
        "a container name must be specified for pod web, choose one of: [main side]"
    );
    let (code, _, body) = logs("?container=nope");
    assert_eq!(
        (code, message(&body)),
        (400, "container nope is not valid for pod web".to_owned())
    );
    let (code, _, body) = logs("?container=main&tailLines=-1");
    assert_eq!(code, 422, "{}", String::from_utf8_lossy(&body));
    let (code, _, body) = server.curl_as(
        &admin.0,
        &admin.1,
        &["URL/api/v1/namespaces/default/pods/ghost/log"],
    );
    assert_eq!(
        (code, message(&body)),
        (404, "pods \"ghost\" not found".to_owned())
    );

    // kubectl logs -f streams: lines arrive while the kubelet is still writing
    // (one every 100 ms, 100 in all).
    let home = dir.join("home");
    std::fs::create_dir_all(&home).unwrap();
    let started = Instant::now();
    let mut follow = Command::new(kubectl_path())
        .env("HOME", &home)
        .env("KUBECONFIG", dir.join("data/kubeconfig.yaml"))
        .args(["logs", "-f", "web", "-c", "main"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(follow.stdout.take().unwrap()).lines();
    for n in 1..=3 {
        assert_eq!(lines.next().unwrap().unwrap(), format!("line {n}"));
    }
    let took = started.elapsed();
    let _ = follow.kill();
    let _ = follow.wait();
    assert!(took < Duration::from_secs(8), "not streamed: {took:?}");
    assert_eq!(
        kubelet.last("GET /containerLogs").line,
        "GET /containerLogs/default/web/main?follow=true HTTP/1.1"
    );

    // exec: the upgrade goes to the kubelet with its headers, the 101 comes
    // back with the kubelet's, and the bytes after it are spliced exactly.
    runtime.block_on(async {
        let mut tls = connect_tls(&server, &admin.0, &admin.1).await;
        let host = server.url.trim_start_matches("https://");
        let request = format!(
            "POST /api/v1/namespaces/default/pods/web/exec?command=sh&command=-c&command=echo%20hi&container=main&stdin=true&stdout=true&stderr=true HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\nX-Stream-Protocol-Version: v3.channel.k8s.io\r\nContent-Length: 0\r\n\r\n"
        );
        tls.write_all(request.as_bytes()).await.unwrap();
        let mut head = Vec::new();
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            assert_ne!(tls.read_buf(&mut head).await.unwrap(), 0, "no answer");
        }
        let end = head.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let answer = String::from_utf8_lossy(&head[..end]).to_ascii_lowercase();
        assert!(answer.starts_with("http/1.1 101"), "{answer}");
        assert!(answer.contains("x-stream-protocol-version: v4.channel.k8s.io\r\n"), "{answer}");
        assert!(answer.contains("upgrade: spdy/3.1\r\n"), "{answer}");
        let sent: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let mut got = head[end..].to_vec();
        let (mut r, mut w) = tokio::io::split(tls);
        let expected = sent.clone();
        let writer = tokio::spawn(async move {
            w.write_all(&sent).await.unwrap();
            w.flush().await.unwrap();
            w
        });
        let read = async {
            while got.len() < expected.len() {
                let mut buf = vec![0u8; 32768];
                let n = r.read(&mut buf).await.unwrap();
                assert_ne!(n, 0, "closed after {} bytes", got.len());
                got.extend_from_slice(&buf[..n]);
            }
        };
        tokio::time::timeout(Duration::from_secs(20), read)
            .await
            .expect("echo");
        assert!(got == expected, "the echo differs");
        drop(writer.await.unwrap());
    });
    let exec = kubelet.last("POST /exec");
    assert_eq!(
        exec.line,
        "POST /exec/default/web/main?command=sh&command=-c&command=echo+hi&error=1&input=1&output=1 HTTP/1.1"
    );
    assert!(
        exec.headers.contains(&"upgrade: SPDY/3.1".to_owned()),
        "{exec:?}"
    );
    assert!(
        exec.headers
            .iter()
            .filter(|h| h.starts_with("x-stream-protocol-version:"))
            .count()
            == 2,
        "{exec:?}"
    );
    assert_eq!(exec.client, "CN=kube-apiserver");

    // exec without an upgrade is refused before the kubelet is asked.
    let asked = kubelet.seen().len();
    let (code, _, body) = server.curl_as(
        &admin.0,
        &admin.1,
        &[
            "-X",
            "POST",
            "URL/api/v1/namespaces/default/pods/web/exec?command=ls&container=main",
        ],
    );
    assert_eq!(
        (code, message(&body)),
        (400, "Upgrade request required".to_owned())
    );
    assert_eq!(kubelet.seen().len(), asked);

    assert!(!agent.is_finished(), "the tunnel ended");
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn without_a_tunnel_or_the_right_identity_nothing_reaches_a_kubelet() {
    let dir = scratch("tunnel-refused");
    let server = Devserver::start(&dir);
    let admin = admin_credentials(&dir);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let node = join_node(&server, "n2");
    create_node(&server, "n2", &node, 10250);
    create_pod(&server, &admin, "lonely", Some("n2"), &["c"]);
    create_pod(&server, &admin, "pending", None, &["c"]);

    // No tunnel: a clear error, nothing dialled.
    let (code, _, body) = server.curl_as(
        &admin.0,
        &admin.1,
        &["URL/api/v1/namespaces/default/pods/lonely/log"],
    );
    assert_eq!(code, 500);
    assert_eq!(
        message(&body),
        "Get \"https://n2:10250/containerLogs/default/lonely/c\": failed to find Session for client n2"
    );
    let (ok, _, err) = server.kubectl(&["logs", "lonely"]);
    assert!(!ok);
    assert!(
        err.contains("failed to find Session for client n2"),
        "{err}"
    );
    let (ok, _, err) = server.kubectl(&["exec", "lonely", "--", "true"]);
    assert!(!ok);
    assert!(
        err.contains("error dialing backend: failed to find Session for client n2"),
        "{err}"
    );

    // Not bound yet: exec is refused, logs are empty (as upstream).
    let (code, _, body) = server.curl_as(
        &admin.0,
        &admin.1,
        &[
            "-X",
            "POST",
            "-H",
            "Connection: Upgrade",
            "-H",
            "Upgrade: SPDY/3.1",
            "URL/api/v1/namespaces/default/pods/pending/exec?command=true",
        ],
    );
    assert_eq!(
        (code, message(&body)),
        (400, "pod pending does not have a host assigned".to_owned())
    );
    let (code, _, body) = server.curl_as(
        &admin.0,
        &admin.1,
        &["URL/api/v1/namespaces/default/pods/pending/log"],
    );
    assert_eq!((code, body.len()), (200, 0));

    // A node may not read pods' logs or proxy to kubelets.
    let (code, _, body) = server.curl_as(
        &node.client_crt,
        &node.client_key,
        &["URL/api/v1/namespaces/default/pods/lonely/log"],
    );
    assert_eq!(code, 403);
    assert_eq!(
        message(&body),
        "pods \"lonely\" is forbidden: User \"system:node:n2\" cannot get resource \"pods/log\" in API group \"\" in the namespace \"default\""
    );
    let (code, _, _) = server.curl_as(
        &node.client_crt,
        &node.client_key,
        &["URL/api/v1/nodes/n2/proxy/healthz"],
    );
    assert_eq!(code, 403);
    // No certificate at all: 401.
    let (code, _, _) = server.curl(&[
        "--cacert".into(),
        dir.join("data/server/tls/server-ca.crt")
            .display()
            .to_string(),
        format!("{}/api/v1/namespaces/default/pods/lonely/log", server.url),
    ]);
    assert_eq!(code, 401);

    // Only a node's certificate opens a tunnel: the admin's is refused (403,
    // not in system:nodes), as is no certificate; a node's works.
    runtime.block_on(async {
        let host = server.url.trim_start_matches("https://").to_owned();
        let tls = connect_tls(&server, &admin.0, &admin.1).await;
        match client::connect(tls, &host).await {
            Err(client::ClientError::Handshake(armlet_tunnel::ws::WsError::Handshake {
                status,
                ..
            })) => assert_eq!(status, 403),
            other => panic!("the admin opened a tunnel: {other:?}"),
        }
        let tls = connect_tls(&server, &node.client_crt, &node.client_key).await;
        let ws = client::connect(tls, &host).await.unwrap();
        drop(ws);
    });
    let (code, _, _) = server.curl(&[
        "--cacert".into(),
        dir.join("data/server/tls/server-ca.crt")
            .display()
            .to_string(),
        "-H".into(),
        "Connection: Upgrade".into(),
        "-H".into(),
        "Upgrade: websocket".into(),
        "-H".into(),
        "Sec-WebSocket-Version: 13".into(),
        "-H".into(),
        "Sec-WebSocket-Key: f/ISCSn7M1RwvSQO/q2d1Q==".into(),
        format!("{}/v1-k3s/connect", server.url),
    ]);
    assert_eq!(code, 403);
    // A node certificate without the websocket handshake: gorilla's 400.
    let (code, _, body) =
        server.curl_as(&node.client_crt, &node.client_key, &["URL/v1-k3s/connect"]);
    assert_eq!(code, 400);
    assert!(
        String::from_utf8_lossy(&body)
            .starts_with("websocket: the client is not using the websocket protocol")
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
