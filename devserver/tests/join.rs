//! The join, replayed from the recordings of a real K3s v1.21.2 server: every
//! `curl` in `transcript.txt` (the happy path) and `transcript2.txt` (the
//! error cases) is run again, unchanged but for the port, against a devserver
//! started with the recorded token password, with Debian's curl 7.88.1 (the
//! client of the recording). Status, content type and body must match: bodies
//! byte for byte, except certificates (fresh keys: same PEM block layout, and
//! the subject checked) and the config document (same fields and types).
//!
//! API calls with client certificates in transcript2 (after the join) are for
//! the Kubernetes API part of the devserver and are skipped here by name.

use std::process::{Child, Command, Stdio};

/// The recorded server's token password and host.
mod common;

use common::{Devserver, PASSWORD, admin_credentials, scratch};

struct Exchange {
    title: String,
    args: Vec<String>,
    status: u16,
    content_type: Option<String>,
    body: Vec<u8>,
}

/// The exchanges of a transcript, in order.
fn exchanges(text: &str) -> Vec<Exchange> {
    let mut out: Vec<Exchange> = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("################ ") {
        rest = &rest[start + 17..];
        let (title, after) = rest.split_once('\n').unwrap_or((rest, ""));
        let section_end = after.find("################ ").unwrap_or(after.len());
        let section = &after[..section_end];
        let Some(command) = section.lines().find_map(|l| l.strip_prefix("$ curl ")) else {
            continue;
        };
        let Some(status) = section.lines().find_map(|l| {
            l.strip_prefix("< HTTP/1.1 ")
                .and_then(|s| s.split(' ').next())
                .and_then(|s| s.parse().ok())
        }) else {
            continue;
        };
        let content_type = section
            .lines()
            .find_map(|l| l.strip_prefix("< Content-Type: "))
            .map(str::to_owned);
        let body = section.find("---- body (out/").map_or(Vec::new(), |b| {
            let line = &section[b..];
            let (head, tail) = line.split_once('\n').unwrap();
            let len: usize = head
                .rsplit_once(", ")
                .and_then(|(_, n)| n.split(' ').next())
                .and_then(|n| n.parse().ok())
                .unwrap();
            // Redacted bodies (`<k3s-host>` for paths) can be shorter than
            // the count recorded before redaction.
            tail.as_bytes()[..len.min(tail.len())].to_vec()
        });
        out.push(Exchange {
            title: title.trim().to_owned(),
            args: curl_args(command),
            status,
            content_type,
            body,
        });
        rest = after;
    }
    out
}

/// The transcript prints `-H Name: value` unquoted: a header value runs to
/// the next flag or URL.
fn curl_args(command: &str) -> Vec<String> {
    let mut args: Vec<String> = Vec::new();
    let mut tokens = command.split_whitespace().peekable();
    while let Some(t) = tokens.next() {
        args.push(t.to_owned());
        if t == "-H" {
            let mut value: Vec<&str> = Vec::new();
            while let Some(next) = tokens.peek() {
                if next.starts_with('-') || next.starts_with("https://") {
                    break;
                }
                value.push(tokens.next().unwrap());
            }
            args.push(value.join(" "));
        }
    }
    args
}

fn pem_types(bytes: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(bytes)
        .lines()
        .filter_map(|l| l.strip_prefix("-----BEGIN "))
        .map(|l| l.trim_end_matches('-').to_owned())
        .collect()
}

fn subject(pem: &[u8]) -> String {
    let mut child = Command::new("openssl")
        .args(["x509", "-noout", "-subject"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child.stdin.take().unwrap().write_all(pem).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn the_recorded_join_and_its_errors_replay_identically() {
    let dir = scratch("replay");
    let server = Devserver::start(&dir);
    // The request bodies the recording read from files (not shown in it).
    std::fs::create_dir_all(dir.join("out")).unwrap();
    for (file, body) in [
        (
            "node.json",
            r#"{"apiVersion":"v1","kind":"Node","metadata":{"name":"rust-edge-1","labels":{"kubernetes.io/hostname":"rust-edge-1"}}}"#,
        ),
        (
            "status.json",
            r#"{"status":{"conditions":[{"type":"Ready","status":"True","reason":"KubeletReady"}]}}"#,
        ),
        (
            "lease.json",
            r#"{"apiVersion":"coordination.k8s.io/v1","kind":"Lease","metadata":{"name":"rust-edge-1","namespace":"kube-node-lease"},"spec":{"holderIdentity":"rust-edge-1","leaseDurationSeconds":40}}"#,
        ),
    ] {
        std::fs::write(dir.join("out").join(file), body).unwrap();
    }
    let mut replayed = 0;
    for (file, text) in [
        (
            "transcript.txt",
            include_str!("../fixtures/recorded-k3s-v1.21/transcript.txt"),
        ),
        (
            "transcript2.txt",
            include_str!("../fixtures/recorded-k3s-v1.21/transcript2.txt"),
        ),
    ] {
        for exchange in exchanges(text) {
            let what = format!("{file}: {}", exchange.title);
            // The internal apiserver port of K3s (6444) has no counterpart.
            if exchange.args.iter().any(|a| a.contains(":6444")) {
                continue;
            }
            let (status, content_type, body) = server.curl(&exchange.args);
            assert_eq!(status, exchange.status, "{what}");
            if exchange.title.starts_with("GET /v1-k3s/client-kubelet.crt") && status == 200 {
                // The kubelet's identity for the API calls that follow.
                let text = String::from_utf8_lossy(&body).into_owned();
                let (key_at, _) = text
                    .match_indices("-----BEGIN EC PRIVATE KEY")
                    .next()
                    .unwrap();
                std::fs::write(dir.join("out/kubelet-client.crt"), &text[..key_at]).unwrap();
                std::fs::write(dir.join("out/kubelet-client.key"), &text[key_at..]).unwrap();
            }
            assert_eq!(content_type, exchange.content_type, "{what}");
            if exchange.title.starts_with("GET /cacerts") {
                // What the rest of the replay pins its TLS on, as the agent does.
                std::fs::write(dir.join("out/cacerts.pem"), &body).unwrap();
            }
            let recorded_pem = pem_types(&exchange.body);
            if !recorded_pem.is_empty() {
                assert_eq!(pem_types(&body), recorded_pem, "{what}");
                // The leaf's subject, where the recording has a node cert.
                if exchange.title.contains("kubelet.crt") && status == 200 {
                    let s = subject(&body);
                    if exchange.title.contains("client-kubelet") {
                        assert!(
                            s.contains("system:nodes") && s.contains("system:node:rust-edge-1"),
                            "{what}: {s}"
                        );
                    } else {
                        assert!(s.contains("CN = rust-edge-1"), "{what}: {s}");
                    }
                }
            } else if String::from_utf8_lossy(&exchange.body).contains("\"kind\": \"Status\"") {
                // API errors: byte for byte.
                assert_eq!(
                    String::from_utf8_lossy(&body),
                    String::from_utf8_lossy(&exchange.body),
                    "{what}"
                );
            } else if exchange.args.iter().any(|a| a == "--cert") {
                // API objects: fresh uids and times, the same kind.
                let ours: serde_json::Value = serde_json::from_slice(&body).unwrap();
                let theirs: serde_json::Value = serde_json::from_slice(&exchange.body).unwrap();
                assert_eq!(ours["kind"], theirs["kind"], "{what}");
                assert_eq!(
                    ours["metadata"]["name"], theirs["metadata"]["name"],
                    "{what}"
                );
            } else if exchange.body.starts_with(b"{\"AdvertisePort\"") {
                let ours: serde_json::Value = serde_json::from_slice(&body).unwrap();
                let theirs: serde_json::Value = serde_json::from_slice(&exchange.body).unwrap();
                for (key, value) in ours.as_object().unwrap() {
                    let recorded = &theirs[key];
                    assert_eq!(
                        std::mem::discriminant(value),
                        std::mem::discriminant(recorded),
                        "{what}: {key}"
                    );
                }
            } else {
                assert_eq!(
                    String::from_utf8_lossy(&body),
                    String::from_utf8_lossy(&exchange.body),
                    "{what}"
                );
            }
            replayed += 1;
        }
    }
    // 9 join calls, 14 error cases and 7 API calls (the node-password secret
    // is not a call; the 6444 one is skipped).
    assert!(replayed >= 29, "only {replayed} exchanges replayed");
    let token = std::fs::read_to_string(dir.join("data/server/token")).unwrap();
    let cacerts = std::fs::read(dir.join("out/cacerts.pem")).unwrap();
    let hash = {
        use sha2::Digest as _;
        hex::encode(sha2::Sha256::digest(&cacerts))
    };
    assert_eq!(token.trim(), format!("K10{hash}::server:{PASSWORD}"));
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_restart_keeps_the_cas_the_token_and_the_node_claims() {
    let dir = scratch("restart");
    let read = |name: &str| std::fs::read_to_string(dir.join("data").join(name)).unwrap();
    let first = Devserver::start_with(&dir, &[]);
    let (status, _, cacerts) = first.curl(&["-k".into(), format!("{}/cacerts", first.url)]);
    assert_eq!(status, 200);
    let token = read("server/token");
    assert_eq!(read("token"), token);
    let password = token.trim().rsplit_once(':').unwrap().1.to_owned();
    let claim = |server: &Devserver, node_password: &str| {
        std::fs::write(dir.join("ca.pem"), &cacerts).unwrap();
        server
            .curl(&[
                "--cacert".into(),
                dir.join("ca.pem").display().to_string(),
                "-u".into(),
                format!("node:{password}"),
                "-H".into(),
                "k3s-Node-Name: board-1".into(),
                "-H".into(),
                format!("k3s-Node-Password: {node_password}"),
                format!("{}/v1-k3s/client-kubelet.crt", server.url),
            ])
            .0
    };
    assert_eq!(claim(&first, "first-password"), 200);
    drop(first);
    // Keys are private.
    use std::os::unix::fs::PermissionsExt as _;
    for key in [
        "server/tls/server-ca.key",
        "server/tls/client-ca.key",
        "server/token",
    ] {
        let mode = std::fs::metadata(dir.join("data").join(key))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{key} is {mode:o}");
    }

    let second = Devserver::start_with(&dir, &[]);
    let (_, _, again) = second.curl(&["-k".into(), format!("{}/cacerts", second.url)]);
    assert_eq!(again, cacerts, "the CA changed across a restart");
    assert_eq!(read("server/token"), token);
    // The node name stays claimed by its password.
    assert_eq!(claim(&second, "another-password"), 403);
    assert_eq!(claim(&second, "first-password"), 200);
    drop(second);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_input_gets_an_error_and_the_server_carries_on() {
    let dir = scratch("bad-input");
    let server = Devserver::start(&dir);
    let url = |path: &str| format!("{}{path}", server.url);
    let alive = || {
        let (status, _, body) = server.curl(&["-k".into(), url("/ping")]);
        assert_eq!((status, body.as_slice()), (200, &b"pong"[..]));
    };

    // A client certificate from a CA the server does not know: the handshake
    // fails, the server goes on.
    let openssl = Command::new("openssl")
        .current_dir(&dir)
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "evil.key",
            "-out",
            "evil.crt",
            "-subj",
            "/CN=system:admin/O=system:masters",
            "-days",
            "1",
        ])
        .output()
        .unwrap();
    assert!(openssl.status.success());
    let refused = Command::new("curl")
        .current_dir(&dir)
        .args(["-sk", "--cert", "evil.crt", "--key", "evil.key"])
        .arg(url("/api/v1/nodes"))
        .output()
        .unwrap();
    assert!(
        !refused.status.success(),
        "a foreign client certificate was accepted"
    );
    alive();

    // Plain HTTP on the TLS port.
    let plain = Command::new("curl")
        .args(["-s", "--max-time", "5"])
        .arg(url("/ping").replace("https://", "http://"))
        .output()
        .unwrap();
    assert!(!plain.status.success());
    alive();

    // Credentials that are not base64, a body larger than the API takes.
    let (status, _, _) = server.curl(&[
        "-k".into(),
        "-H".into(),
        "Authorization: Basic !!!".into(),
        url("/v1-k3s/config"),
    ]);
    assert_eq!(status, 401);
    std::fs::write(dir.join("big"), vec![b'x'; 4 << 20]).unwrap();
    let (status, content_type, body) = server.curl(&[
        "-k".into(),
        "-u".into(),
        format!("node:{PASSWORD}"),
        "--data-binary".into(),
        "@big".into(),
        url("/v1-k3s/client-kube-proxy.crt"),
    ]);
    assert_eq!(status, 413);
    assert_eq!(content_type.as_deref(), Some("application/json"));
    assert!(String::from_utf8_lossy(&body).contains("\"code\":413"));
    // A CSR that is not one is the caller's error.
    std::fs::write(dir.join("notcsr"), b"hello").unwrap();
    let (status, _, body) = server.curl(&[
        "-k".into(),
        "-u".into(),
        format!("node:{PASSWORD}"),
        "--data-binary".into(),
        "@notcsr".into(),
        url("/v1-k3s/client-kube-proxy.crt"),
    ]);
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
    alive();
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_api_serves_objects_to_certificate_holders_only() {
    let dir = scratch("api");
    let server = Devserver::start(&dir);
    let (cert, key) = admin_credentials(&dir);
    let api = |extra: &[&str]| -> (u16, serde_json::Value) {
        let mut args: Vec<String> = vec![
            "--cacert".into(),
            dir.join("ca.crt").display().to_string(),
            "--cert".into(),
            cert.display().to_string(),
            "--key".into(),
            key.display().to_string(),
        ];
        args.extend(extra.iter().map(|a| a.replace("URL", &server.url)));
        let (status, content_type, body) = server.curl(&args);
        assert_eq!(
            content_type.as_deref(),
            Some("application/json"),
            "{extra:?}"
        );
        (status, serde_json::from_slice(&body).unwrap())
    };

    // Discovery, and the namespaces K3s starts with.
    let (status, v1) = api(&["URL/api/v1"]);
    assert_eq!(status, 200);
    assert!(
        v1["resources"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["name"] == "pods")
    );
    let (_, groups) = api(&["URL/apis"]);
    assert!(groups.to_string().contains("coordination.k8s.io/v1"));
    let (_, namespaces) = api(&["URL/api/v1/namespaces"]);
    let names: Vec<&str> = namespaces["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["default", "kube-node-lease", "kube-public", "kube-system"]
    );

    // A pod's life: create, select, patch (spec and status), conflict, delete.
    let pod = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"web","labels":{"app":"web"}},"spec":{"containers":[{"name":"c","image":"busybox"}]}}"#;
    let post = [
        "-X",
        "POST",
        "-H",
        "Content-Type: application/json",
        "--data",
        pod,
    ];
    let (status, created) = api(&[&post[..], &["URL/api/v1/namespaces/default/pods"]].concat());
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["metadata"]["namespace"], "default");
    assert_eq!(created["metadata"]["uid"].as_str().unwrap().len(), 36);
    let (status, again) = api(&[&post[..], &["URL/api/v1/namespaces/default/pods"]].concat());
    assert_eq!(
        (status, again["reason"].as_str()),
        (409, Some("AlreadyExists"))
    );
    let on_node = "URL/api/v1/pods?fieldSelector=spec.nodeName%3Dn1";
    assert_eq!(api(&[on_node]).1["items"].as_array().unwrap().len(), 0);
    let merge = [
        "-X",
        "PATCH",
        "-H",
        "Content-Type: application/merge-patch+json",
        "--data",
    ];
    let (status, _) = api(&[
        &merge[..],
        &[
            r#"{"spec":{"nodeName":"n1"}}"#,
            "URL/api/v1/namespaces/default/pods/web",
        ],
    ]
    .concat());
    assert_eq!(status, 200);
    let (_, listed) = api(&[on_node]);
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
    assert_eq!(listed["kind"], "PodList");
    let (_, labelled) =
        api(&["URL/api/v1/namespaces/default/pods?labelSelector=app%20in%20(web,api)"]);
    assert_eq!(labelled["items"].as_array().unwrap().len(), 1);
    let (status, patched) = api(&[
        &merge[..],
        &[
            r#"{"status":{"phase":"Running"},"spec":{"nodeName":"ignored"}}"#,
            "URL/api/v1/namespaces/default/pods/web/status",
        ],
    ]
    .concat());
    assert_eq!(status, 200);
    assert_eq!(patched["status"]["phase"], "Running");
    assert_eq!(
        patched["spec"]["nodeName"], "n1",
        "status patches change only the status"
    );
    let mut stale = created.clone();
    stale["spec"]["nodeName"] = serde_json::json!("n2");
    let stale = stale.to_string();
    let put = [
        "-X",
        "PUT",
        "-H",
        "Content-Type: application/json",
        "--data",
        &stale,
    ];
    let (status, conflict) = api(&[&put[..], &["URL/api/v1/namespaces/default/pods/web"]].concat());
    assert_eq!(
        (status, conflict["reason"].as_str()),
        (409, Some("Conflict"))
    );
    // A bound pod ends gracefully: marked, then gone when its kubelet
    // deletes it with grace 0.
    let (status, marked) = api(&["-X", "DELETE", "URL/api/v1/namespaces/default/pods/web"]);
    assert_eq!(status, 202);
    assert_eq!(marked["metadata"]["deletionGracePeriodSeconds"], 30);
    assert!(marked["metadata"]["deletionTimestamp"].is_string());
    let (status, still) = api(&["URL/api/v1/namespaces/default/pods/web"]);
    assert_eq!(
        (status, &still["metadata"]["deletionTimestamp"]),
        (200, &marked["metadata"]["deletionTimestamp"])
    );
    let (status, _) = api(&[
        "-X",
        "DELETE",
        "URL/api/v1/namespaces/default/pods/web?gracePeriodSeconds=0",
    ]);
    assert_eq!(status, 200);
    let (status, gone) = api(&["URL/api/v1/namespaces/default/pods/web"]);
    assert_eq!(
        (status, gone["message"].as_str()),
        (404, Some("pods \"web\" not found"))
    );

    // Bad requests.
    let (status, _) = api(&[
        &post[..5],
        &["{not json", "URL/api/v1/namespaces/default/pods"],
    ]
    .concat());
    assert_eq!(status, 400);
    let (status, _) = api(&[&post[..], &["URL/api/v1/namespaces/nowhere/pods"]].concat());
    assert_eq!(status, 404);
    let (status, _) = api(&["URL/api/v1/pods?fieldSelector=spec.unknown%3Dx"]);
    assert_eq!(status, 400);
    let json_patch = [
        "-X",
        "PATCH",
        "-H",
        "Content-Type: application/json-patch+json",
        "--data",
        "[]",
    ];
    let (status, _) = api(&[&json_patch[..], &["URL/api/v1/namespaces/default"]].concat());
    assert_eq!(status, 415);

    // No client certificate: 401, as K3s's API server allows no anonymous requests.
    let (status, content_type, _) = server.curl(&[
        "--cacert".into(),
        dir.join("ca.crt").display().to_string(),
        format!("{}/api/v1/nodes", server.url),
    ]);
    assert_eq!(
        (status, content_type.as_deref()),
        (401, Some("application/json"))
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn watches_stream_changes_from_a_version_and_end_at_their_timeout() {
    let dir = scratch("watch");
    let server = Devserver::start(&dir);
    let (cert, key) = admin_credentials(&dir);
    let base_args = |url: String| -> Vec<String> {
        vec![
            "-s".into(),
            "-N".into(),
            "--cacert".into(),
            dir.join("ca.crt").display().to_string(),
            "--cert".into(),
            cert.display().to_string(),
            "--key".into(),
            key.display().to_string(),
            url,
        ]
    };
    let call = |extra: &[&str], path: &str| -> serde_json::Value {
        let mut args = base_args(format!("{}{path}", server.url));
        args.splice(0..0, extra.iter().map(|s| s.to_string()));
        let out = Command::new("curl").args(&args).output().unwrap();
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let create = |ns: &str, name: &str| {
        let body = format!(
            // Another scheduler's pod: the devserver's scheduler leaves it be.
            r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"{name}"}},"spec":{{"schedulerName":"elsewhere","containers":[{{"name":"c","image":"busybox"}}]}}}}"#
        );
        call(
            &[
                "-X",
                "POST",
                "-H",
                "Content-Type: application/json",
                "--data",
                &body,
            ],
            &format!("/api/v1/namespaces/{ns}/pods"),
        )
    };
    let before = create("default", "before");
    let version = before["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_owned();

    // Two watches: one from now (initial ADDED for what exists), one from the
    // version after `before` (only later changes).
    let watch = |query: String| {
        Command::new("curl")
            .args(base_args(format!(
                "{}/api/v1/namespaces/default/pods?watch=true&timeoutSeconds=3{query}",
                server.url
            )))
            .stdout(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let fresh = watch(String::new());
    let resumed = watch(format!("&resourceVersion={version}"));
    std::thread::sleep(std::time::Duration::from_millis(500));
    create("default", "w1");
    create("kube-system", "elsewhere");
    call(
        &[
            "-X",
            "PATCH",
            "-H",
            "Content-Type: application/merge-patch+json",
            "--data",
            r#"{"metadata":{"labels":{"x":"y"}}}"#,
        ],
        "/api/v1/namespaces/default/pods/w1",
    );
    call(&["-X", "DELETE"], "/api/v1/namespaces/default/pods/w1");
    let events = |child: Child| -> Vec<(String, String)> {
        let out = child.wait_with_output().unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| {
                let e: serde_json::Value = serde_json::from_str(l).unwrap();
                (
                    e["type"].as_str().unwrap().to_owned(),
                    e["object"]["metadata"]["name"]
                        .as_str()
                        .unwrap_or("")
                        .to_owned(),
                )
            })
            .collect()
    };
    let pairs = |list: &[(&str, &str)]| -> Vec<(String, String)> {
        list.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    };
    assert_eq!(
        events(fresh),
        pairs(&[
            ("ADDED", "before"),
            ("ADDED", "w1"),
            ("MODIFIED", "w1"),
            ("DELETED", "w1")
        ])
    );
    assert_eq!(
        events(resumed),
        pairs(&[("ADDED", "w1"), ("MODIFIED", "w1"), ("DELETED", "w1")])
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_api_answers_bad_requests_as_the_api_server_and_carries_on() {
    let dir = scratch("api-bad-input");
    let server = Devserver::start(&dir);
    let (cert, key) = admin_credentials(&dir);
    let send =
        |content_type: &str, method: &str, body: &str, path: &str| -> (u16, serde_json::Value) {
            let (status, _, body) = server.curl_as(
                &cert,
                &key,
                &[
                    "-X",
                    method,
                    "-H",
                    &format!("Content-Type: {content_type}"),
                    "--data-binary",
                    body,
                    &format!("URL{path}"),
                ],
            );
            (
                status,
                serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
            )
        };
    let pods = "/api/v1/namespaces/default/pods";
    // YAML is a body format the API server takes; broken YAML is a 400.
    let yaml = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: from-yaml\ndata:\n  a: b\n";
    let (status, created) = send(
        "application/yaml",
        "POST",
        yaml,
        "/api/v1/namespaces/default/configmaps",
    );
    assert_eq!(
        (status, &created["data"]["a"]),
        (201, &serde_json::json!("b"))
    );
    let (status, error) = send("application/yaml", "POST", "metadata: [unclosed", pods);
    assert_eq!(
        (status, error["reason"].as_str()),
        (400, Some("BadRequest"))
    );
    // A media type it does not take.
    let (status, error) = send("text/plain", "POST", "{}", pods);
    assert_eq!(
        (status, error["reason"].as_str()),
        (415, Some("UnsupportedMediaType"))
    );
    // Nesting deeper than any object: refused, not a crash.
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let (status, _) = send("application/json", "POST", &deep, pods);
    assert_eq!(status, 400);
    // A strategic merge patch with a list element missing its merge key.
    let (status, _) = send(
        "application/json",
        "POST",
        r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{"schedulerName":"elsewhere","containers":[{"name":"c","image":"busybox"}]}}"#,
        pods,
    );
    assert_eq!(status, 201);
    let (status, error) = send(
        "application/strategic-merge-patch+json",
        "PATCH",
        r#"{"spec":{"containers":[{"image":"other"}]}}"#,
        &format!("{pods}/p"),
    );
    assert_eq!(status, 500, "{error}");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("does not contain declared merge key: name"),
        "{error}"
    );
    // Invalid objects: 422 with the field.
    let (status, error) = send(
        "application/json",
        "POST",
        r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"q"},"spec":{"containers":[{"name":"c"}]}}"#,
        pods,
    );
    assert_eq!(status, 422);
    assert_eq!(
        error["details"]["causes"][0]["field"],
        "spec.containers[0].image"
    );
    // A watch from a version that is not a number.
    let (status, _, body) = server.curl_as(
        &cert,
        &key,
        &[&format!(
            "URL{pods}?watch=1&resourceVersion=abc&timeoutSeconds=1"
        )],
    );
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&body).contains("\"ERROR\""));
    // A bearer token that is no token.
    let (status, _, _) = server.curl(&[
        "--cacert".into(),
        dir.join("ca.crt").display().to_string(),
        "-H".into(),
        "Authorization: Bearer not.a.token".into(),
        format!("{}{pods}", server.url),
    ]);
    assert_eq!(status, 401);
    // Still serving.
    let (status, _, _) = server.curl_as(&cert, &key, &[&format!("URL{pods}/p")]);
    assert_eq!(status, 200);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
