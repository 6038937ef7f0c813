//! Tests of the test registry harness itself (`armlet_tests::registry` and
//! `armlet_tests::oci`): a real registry (Debian's docker-registry) takes the
//! images built here, over plain HTTP, TLS with Basic auth, and token auth, and
//! the fault proxy breaks blob downloads as asked. No root needed.

use std::fs;
use std::path::Path;
use std::process::Stdio;

use armlet_image::digest::Digest;
use armlet_tests::node::TempDir;
use armlet_tests::oci::{BuiltImage, INDEX_MEDIA_TYPE, busybox_index};
use armlet_tests::registry::{
    Fault, FaultProxy, RegistryOptions, TOKEN_SERVICE, TestAuth, TestRegistry, http_get,
    http_request,
};
use serde_json::Value;

/// The index built in `dir`, tagged "1".
fn image(dir: &Path) -> BuiltImage {
    busybox_index(&dir.join("layout"), "1")
}

/// Asserts the bytes are the built index, listing all three platforms.
fn assert_is_index(raw: &[u8], image: &BuiltImage) {
    assert_eq!(
        Digest::of(raw).to_string(),
        image.index,
        "index digest changed"
    );
    let index: Value = serde_json::from_slice(raw).unwrap();
    assert_eq!(index["mediaType"], INDEX_MEDIA_TYPE);
    let platforms: Vec<String> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let p = &m["platform"];
            let mut s = format!(
                "{}/{}",
                p["os"].as_str().unwrap(),
                p["architecture"].as_str().unwrap()
            );
            if let Some(v) = p["variant"].as_str() {
                s.push('/');
                s.push_str(v);
            }
            s
        })
        .collect();
    assert_eq!(platforms, ["linux/amd64", "linux/arm64/v8", "linux/arm/v7"]);
}

/// A blob of the layout, by digest.
fn blob(image: &BuiltImage, digest: &str) -> Vec<u8> {
    let hex = digest.strip_prefix("sha256:").unwrap();
    fs::read(image.dir.join("blobs/sha256").join(hex)).unwrap()
}

#[test]
fn plain_registry_serves_the_pushed_index_unchanged() {
    let dir = TempDir::new("harness-plain");
    let reg = TestRegistry::plain();
    let image = image(dir.path());
    reg.push(&image.dir, "1", "library/busybox:1");

    let raw = reg.inspect_raw("library/busybox:1", None).unwrap();
    assert_is_index(&raw, &image);
    let arm64 = image.platform("linux/arm64/v8");
    let manifest = reg
        .inspect_raw(&format!("library/busybox@{}", arm64.manifest), None)
        .unwrap();
    assert_eq!(Digest::of(&manifest).to_string(), arm64.manifest);
    // Layers by plain HTTP, byte for byte.
    let layer = &arm64.layers[1];
    let got = http_get(
        reg.addr(),
        &format!("/v2/library/busybox/blobs/{layer}"),
        &[],
    )
    .unwrap();
    assert_eq!(got.status, 200);
    assert_eq!(got.body, blob(&image, layer));
    // Manifests differ per platform, and the platform layer says which.
    assert_ne!(arm64.manifest, image.platform("linux/amd64").manifest);
    assert_eq!(image.images.len(), 3);
}

#[test]
fn registry_restarts_on_the_same_port_with_its_storage() {
    let dir = TempDir::new("harness-restart");
    let mut reg = TestRegistry::plain();
    let image = image(dir.path());
    reg.push(&image.dir, "1", "library/busybox:1");
    let port = reg.port();
    reg.stop();
    assert!(!reg.is_running());
    assert!(
        http_get(reg.addr(), "/v2/", &[]).is_err(),
        "a stopped registry answered"
    );
    reg.restart();
    assert_eq!(reg.port(), port);
    assert_is_index(&reg.inspect_raw("library/busybox:1", None).unwrap(), &image);
}

#[test]
fn tls_registry_with_basic_auth_wants_the_right_credentials() {
    let dir = TempDir::new("harness-tls-basic");
    let reg = TestRegistry::start(RegistryOptions {
        tls: true,
        auth: TestAuth::basic("alice", "s3cret"),
    });
    assert!(reg.url().starts_with("https://127.0.0.1:"));
    assert!(reg.ca_pem_path().unwrap().is_file());
    // The certificate is valid for both names, through rustls.
    for name in ["127.0.0.1", "localhost"] {
        let r = reg.https_get(name, "/v2/").unwrap();
        assert_eq!(r.status, 401, "GET /v2/ as {name}");
        assert!(r.header("www-authenticate").unwrap().starts_with("Basic "));
    }
    let image = image(dir.path());
    reg.push(&image.dir, "1", "library/busybox:1");
    let raw = reg
        .inspect_raw("library/busybox:1", Some(("alice", "s3cret")))
        .unwrap();
    assert_is_index(&raw, &image);
    let wrong = reg.inspect_raw("library/busybox:1", Some(("alice", "wrong")));
    assert!(wrong.is_err(), "wrong password accepted");
    assert!(reg.inspect_raw("library/busybox:1", None).is_err());
}

#[test]
fn token_registry_hands_out_working_tokens_and_refuses_bad_ones() {
    let dir = TempDir::new("harness-token");
    let reg = TestRegistry::start(RegistryOptions {
        tls: false,
        auth: TestAuth::token("bob", "hunter2"),
    });
    let image = image(dir.path());
    reg.push(&image.dir, "1", "library/busybox:1");
    assert!(
        reg.token_requests() > 0,
        "skopeo did not use the token flow"
    );
    let raw = reg
        .inspect_raw("library/busybox:1", Some(("bob", "hunter2")))
        .unwrap();
    assert_is_index(&raw, &image);
    assert!(
        reg.inspect_raw("library/busybox:1", Some(("bob", "nope")))
            .is_err()
    );

    // The challenge names our token server.
    let challenge = http_get(reg.addr(), "/v2/library/busybox/manifests/1", &[]).unwrap();
    assert_eq!(challenge.status, 401);
    let www = challenge.header("www-authenticate").unwrap();
    let token_host = reg.token_host().unwrap();
    assert!(
        www.starts_with(&format!("Bearer realm=\"http://{token_host}/token\"")),
        "{www}"
    );
    assert!(
        www.contains(&format!("service=\"{TOKEN_SERVICE}\"")),
        "{www}"
    );

    assert_eq!(
        reg.fetch_token("repository:library/busybox:pull", "bob", "nope"),
        Err(401)
    );
    let pull = reg
        .fetch_token("repository:library/busybox:pull", "bob", "hunter2")
        .unwrap();
    let get_manifest = |token: &str| {
        http_get(
            reg.addr(),
            "/v2/library/busybox/manifests/1",
            &[
                ("Authorization", &format!("Bearer {token}")),
                ("Accept", INDEX_MEDIA_TYPE),
            ],
        )
        .unwrap()
    };
    let ok = get_manifest(&pull);
    assert_eq!(ok.status, 200, "{}", String::from_utf8_lossy(&ok.body));
    assert_eq!(ok.body, raw);
    // A token whose signature does not match its content is refused.
    // (A character well inside the signature: the last one of unpadded
    // base64 carries spare bits a decoder may ignore.)
    let mut forged: Vec<char> = pull.chars().collect();
    let at = forged.len() - 10;
    forged[at] = if forged[at] == 'A' { 'B' } else { 'A' };
    let forged: String = forged.into_iter().collect();
    assert_eq!(get_manifest(&forged).status, 401);
    // So is a pull token for another repository.
    let other = reg
        .fetch_token("repository:other/repo:pull", "bob", "hunter2")
        .unwrap();
    assert_eq!(get_manifest(&other).status, 401);
    // Pushing needs push.
    let start_upload = |token: &str| {
        http_request(
            reg.addr(),
            "POST",
            "/v2/library/busybox/blobs/uploads/",
            &[("Authorization", &format!("Bearer {token}"))],
            &[],
        )
        .unwrap()
        .status
    };
    assert_eq!(start_upload(&pull), 401);
    let push = reg
        .fetch_token("repository:library/busybox:pull,push", "bob", "hunter2")
        .unwrap();
    assert_eq!(start_upload(&push), 202);
    assert!(reg.tokens_issued() >= 3);
}

/// `skopeo copy` of the host's image through `proxy` into an OCI layout.
fn copy_through(proxy: &FaultProxy, dir: &Path, name: &str) -> Result<(), String> {
    let out = TestRegistry::skopeo()
        .args(["copy", "--retry-times", "0", "--src-tls-verify=false"])
        .args(["--src-no-creds"])
        .arg(format!("docker://{}/library/busybox:1", proxy.host()))
        .arg(format!("oci:{}:1", dir.join(name).display()))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
fn fault_proxy_passes_corrupts_and_cuts_blob_downloads() {
    let dir = TempDir::new("harness-proxy");
    let reg = TestRegistry::plain();
    let image = image(dir.path());
    reg.push(&image.dir, "1", "library/busybox:1");
    let proxy = FaultProxy::start(reg.addr(), Fault::None);

    copy_through(&proxy, dir.path(), "clean").unwrap();
    let amd64 = image.platform("linux/amd64");
    let blob_line = format!("GET /v2/library/busybox/blobs/{}", amd64.layers[0]);
    assert!(
        proxy.requests().contains(&blob_line),
        "{:?}",
        proxy.requests()
    );

    proxy.set_fault(Fault::CorruptBlobs);
    let err = copy_through(&proxy, dir.path(), "corrupt").unwrap_err();
    assert!(err.to_lowercase().contains("digest"), "{err}");

    proxy.set_fault(Fault::CutBlobsAfter(1000));
    copy_through(&proxy, dir.path(), "cut").unwrap_err();

    // The first blob download is cut, the next passes, and a Range header
    // reaches the registry unchanged.
    proxy.set_fault(Fault::CutFirstBlobRequestAfter(1000));
    let layer = &amd64.layers[0];
    let whole = blob(&image, layer);
    let path = format!("/v2/library/busybox/blobs/{layer}");
    let cut = http_get(proxy.addr(), &path, &[]).unwrap();
    assert_eq!(cut.status, 200);
    assert_eq!(
        cut.header("content-length"),
        Some(whole.len().to_string().as_str())
    );
    assert_eq!(cut.body, whole[..1000]);
    let rest = http_get(proxy.addr(), &path, &[("Range", "bytes=1000-")]).unwrap();
    assert_eq!(rest.status, 206);
    assert_eq!(rest.body, whole[1000..]);
    let seen = proxy.seen();
    let last = seen.last().unwrap();
    assert_eq!(last.header("range"), Some("bytes=1000-"));
    assert!(!last.faulted);
    assert!(seen[seen.len() - 2].faulted);
    // Whatever is not a blob passes even under a fault.
    proxy.set_fault(Fault::CorruptBlobs);
    let manifest = http_get(
        proxy.addr(),
        &format!("/v2/library/busybox/manifests/{}", amd64.manifest),
        &[("Accept", "application/vnd.oci.image.manifest.v1+json")],
    )
    .unwrap();
    assert_eq!(Digest::of(&manifest.body).to_string(), amd64.manifest);
}
