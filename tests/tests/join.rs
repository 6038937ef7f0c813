//! The join (`armlet-join`) against a real devserver process on loopback:
//! full and short tokens, CA pinning, node-password claims, renewal, retry
//! while the server is down, and kubeconfig mode.

use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use armlet_join::{
    JoinError, JoinSettings, ServerUrl, Source, SupervisorError, Token, certificate_info, join,
    join_with_retry, renew_if_due,
};
use armlet_tests::devserver::{Devserver, PASSWORD};
use armlet_tests::node::TempDir;

const LOOPBACK: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

fn settings(scratch: &Path, url: &str, token: &str, node: &str) -> JoinSettings {
    let mut s = JoinSettings::new(
        Source::Supervisor {
            server: ServerUrl::parse(url).unwrap(),
            token: Token::parse(token).unwrap(),
        },
        node.to_owned(),
        vec![LOOPBACK],
        scratch.join("data"),
    );
    s.node_password_file = scratch.join("etc/rancher/node/password");
    s
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

fn secret(server: &Devserver, node: &str) -> Option<serde_json::Value> {
    server.get(&format!(
        "/api/v1/namespaces/kube-system/secrets/{node}.node-password.k3s"
    ))
}

/// `openssl x509 -noout -subject` of a PEM file: an independent reading.
fn openssl_subject(path: &Path) -> String {
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-subject", "-in"])
        .arg(path)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// curl with a client certificate against the API; the HTTP status.
fn curl_status(ca: &Path, cert: &Path, key: &Path, url: &str) -> u16 {
    let out = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
        .arg(ca)
        .arg("--cert")
        .arg(cert)
        .arg("--key")
        .arg(key)
        .arg(url)
        .output()
        .expect("curl runs");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

#[tokio::test]
async fn full_token_join_writes_what_k3s_writes() {
    let scratch = TempDir::new("join-full");
    let server = Devserver::start(&scratch.path().join("server"));
    let s = settings(scratch.path(), &server.url, &server.token(), "edge-1");
    let joined = join(&s).await.expect("join");

    assert_eq!(joined.node_name, "edge-1");
    assert_eq!(joined.api_server_url.as_deref(), Some(server.url.as_str()));
    assert_eq!(joined.control.cluster_cidrs[0].to_string(), "10.42.0.0/16");
    assert_eq!(joined.control.cluster_domain, "cluster.local");
    let agent = joined.agent.as_ref().expect("agent files");
    let dir = scratch.path().join("data/agent");
    assert_eq!(agent.dir, dir);
    assert_eq!(joined.kubeconfig, dir.join("kubelet.kubeconfig"));

    // k3s's file names, all 0600.
    for name in [
        "server-ca.crt",
        "client-ca.crt",
        "serving-kubelet.crt",
        "serving-kubelet.key",
        "client-kubelet.crt",
        "client-kubelet.key",
        "client-kube-proxy.crt",
        "client-kube-proxy.key",
        "client-k3s-controller.crt",
        "client-k3s-controller.key",
        "kubelet.kubeconfig",
        "kubeproxy.kubeconfig",
        "k3scontroller.kubeconfig",
    ] {
        assert_eq!(mode(&dir.join(name)), 0o600, "{name}");
    }
    // No temporary files left behind.
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 13);
    // The node password: 32 hex digits and a newline, 0600 in a 0755 directory.
    let password = std::fs::read_to_string(&s.node_password_file).unwrap();
    assert_eq!(password.len(), 33);
    assert!(password.ends_with('\n'));
    assert_eq!(mode(&s.node_password_file), 0o600);
    assert_eq!(mode(s.node_password_file.parent().unwrap()), 0o755);

    // The kubelet's client identity.
    let client = dir.join("client-kubelet.crt");
    let info = certificate_info(&std::fs::read(&client).unwrap()).unwrap();
    assert_eq!(info.common_name.as_deref(), Some("system:node:edge-1"));
    assert_eq!(info.organizations, vec!["system:nodes".to_owned()]);
    let subject = openssl_subject(&client);
    assert!(
        subject.contains("O = system:nodes") && subject.contains("CN = system:node:edge-1"),
        "{subject}"
    );
    assert_eq!(
        agent.serving_kubelet.info.common_name.as_deref(),
        Some("edge-1")
    );
    assert_eq!(
        agent.kube_proxy.info.common_name.as_deref(),
        Some("system:kube-proxy")
    );
    assert_eq!(
        agent.k3s_controller.info.common_name.as_deref(),
        Some("system:k3s-controller")
    );
    // The devserver signs requests: every key was made here.
    assert!(
        [
            &agent.serving_kubelet,
            &agent.client_kubelet,
            &agent.kube_proxy,
            &agent.k3s_controller
        ]
        .iter()
        .all(|p| !p.key_from_server && p.key_pem().contains("BEGIN PRIVATE KEY"))
    );

    // The name is claimed.
    let claim = secret(&server, "edge-1").expect("the node-password Secret");
    assert_eq!(claim["immutable"], true);

    // The identity works on the API (404: authenticated and authorised to
    // look for its own Node, which does not exist yet).
    let status = curl_status(
        &dir.join("server-ca.crt"),
        &client,
        &dir.join("client-kubelet.key"),
        &format!("{}/api/v1/nodes/edge-1", server.url),
    );
    assert_eq!(status, 404);

    // The kubeconfig names the server and the files.
    let kubeconfig = std::fs::read_to_string(dir.join("kubelet.kubeconfig")).unwrap();
    assert!(
        kubeconfig.contains(&format!("server: {}", server.url)),
        "{kubeconfig}"
    );
    assert!(
        kubeconfig.contains(&client.display().to_string()),
        "{kubeconfig}"
    );
}

#[tokio::test]
async fn short_token_is_trusted_on_first_use() {
    let scratch = TempDir::new("join-short");
    let server = Devserver::start(&scratch.path().join("server"));
    let s = settings(scratch.path(), &server.url, PASSWORD, "edge-short");
    let joined = join(&s).await.expect("join with the bare password");
    let agent = joined.agent.unwrap();
    // The CA it trusted is the server's.
    assert_eq!(
        agent.server_ca.pem,
        std::fs::read_to_string(server.server_ca()).unwrap()
    );
    assert!(secret(&server, "edge-short").is_some());
}

#[tokio::test]
async fn a_wrong_ca_hash_is_refused_before_credentials_are_sent() {
    let scratch = TempDir::new("join-wrong-hash");
    let server = Devserver::start(&scratch.path().join("server"));
    let token = format!("K10{}::server:{PASSWORD}", "0".repeat(64));
    let s = settings(scratch.path(), &server.url, &token, "edge-mitm");
    let e = join(&s).await.unwrap_err();
    assert!(
        e.to_string()
            .starts_with("token CA hash does not match the Cluster CA certificate hash: 0000"),
        "{e}"
    );
    assert!(!e.is_retryable());
    // Nothing was claimed, made or written.
    assert!(secret(&server, "edge-mitm").is_none());
    assert!(!s.node_password_file.exists());
    assert!(!scratch.path().join("data/agent").exists());
}

#[tokio::test]
async fn a_wrong_token_password_is_a_401() {
    let scratch = TempDir::new("join-wrong-password");
    let server = Devserver::start(&scratch.path().join("server"));
    let token = server.token().replace(PASSWORD, "not-the-password");
    let s = settings(scratch.path(), &server.url, &token, "edge-401");
    let e = join(&s).await.unwrap_err();
    assert!(
        matches!(
            e,
            JoinError::Supervisor(SupervisorError::Unauthorized { .. })
        ),
        "{e}"
    );
    assert!(
        e.to_string().contains("the token's password was refused"),
        "{e}"
    );
    assert!(!e.is_retryable());
}

#[tokio::test]
async fn node_passwords_claim_names_and_rejoins_renew() {
    let scratch = TempDir::new("join-claims");
    let server = Devserver::start(&scratch.path().join("server"));
    let token = server.token();
    let first = settings(&scratch.path().join("a"), &server.url, &token, "edge-dup");
    let joined = join(&first).await.expect("first join");
    let old = joined.agent.unwrap();

    // Another board with the same name (its own node password).
    let other = settings(&scratch.path().join("b"), &server.url, &token, "edge-dup");
    let e = join(&other).await.unwrap_err();
    assert!(
        matches!(
            e,
            JoinError::Supervisor(SupervisorError::NodePasswordRejected { .. })
        ),
        "{e}"
    );
    let text = e.to_string();
    assert!(
        text.contains(&format!(
            "Node password rejected, duplicate hostname or contents of '{}' may not match \
             server node-passwd entry, try enabling a unique node name with the \
             --with-node-id flag",
            other.node_password_file.display()
        )),
        "{text}"
    );
    assert!(!e.is_retryable());
    // The password itself is in no message.
    let password = std::fs::read_to_string(&other.node_password_file).unwrap();
    assert!(!text.contains(password.trim()));

    // The first board again (a restart): new certificates, same local keys.
    let rejoined = join(&first).await.expect("rejoin").agent.unwrap();
    assert_ne!(
        rejoined.client_kubelet.info.serial,
        old.client_kubelet.info.serial
    );
    assert_ne!(
        rejoined.serving_kubelet.info.serial,
        old.serving_kubelet.info.serial
    );
    assert_eq!(
        rejoined.client_kubelet.key_pem(),
        old.client_kubelet.key_pem()
    );

    // Renewal: not due with the default window; due when the window is
    // longer than the certificates' life.
    assert!(renew_if_due(&first).await.unwrap().is_none());
    let mut eager = first.clone();
    eager.renew_before = Duration::from_secs(400 * 24 * 3600);
    let renewed = renew_if_due(&eager).await.unwrap().expect("renewed");
    assert_ne!(
        renewed.agent.unwrap().client_kubelet.info.serial,
        rejoined.client_kubelet.info.serial
    );
}

#[tokio::test]
async fn join_with_retry_waits_for_the_server() {
    let scratch = TempDir::new("join-retry");
    let data: PathBuf = scratch.path().join("server");
    // Start once for the token and the port, then stop.
    let server = Devserver::start(&data);
    let token = server.token();
    let (url, port) = (server.url.clone(), server.port);
    server.stop();

    let s = settings(scratch.path(), &url, &token, "edge-late");
    let data_again = data.clone();
    let starter = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(3));
        Devserver::start_on(&data_again, LOOPBACK, port, &[])
    });
    let started = Instant::now();
    let joined = join_with_retry(
        &s,
        Some(Instant::now() + Duration::from_secs(60)),
        std::future::pending(),
    )
    .await
    .expect("joined once the server is up");
    assert!(started.elapsed() >= Duration::from_secs(3));
    assert_eq!(joined.node_name, "edge-late");
    let server = starter.join().expect("the server started");
    assert!(secret(&server, "edge-late").is_some());
}

#[tokio::test]
async fn kubeconfig_mode_skips_the_supervisor() {
    let scratch = TempDir::new("join-kubeconfig");
    let server = Devserver::start(&scratch.path().join("server"));
    let mut s = settings(scratch.path(), &server.url, PASSWORD, "edge-kc");
    s.source = Source::Kubeconfig(server.kubeconfig());
    let joined = join(&s).await.expect("kubeconfig mode");
    assert_eq!(joined.kubeconfig, server.kubeconfig());
    assert!(joined.agent.is_none());
    assert!(joined.api_server_url.is_some());
    // The supervisor was not asked: no claim, no password, no files.
    assert!(secret(&server, "edge-kc").is_none());
    assert!(!s.node_password_file.exists());
    assert!(!scratch.path().join("data").exists());
}
