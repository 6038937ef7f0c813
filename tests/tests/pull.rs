//! Pulls from a real registry (Debian's docker-registry, distribution v2.8) on
//! loopback: plain HTTP when registries.yaml says so, TLS with basic auth, and
//! bearer tokens from a token service. Multi-arch test indexes are built here
//! from busybox-static for amd64, arm64/v8 and arm/v7 and pushed with skopeo.
//! Failures (bad credentials, a registry serving wrong bytes, a transfer cut
//! mid-blob, a full disk) must each give a clear error and leave the content
//! store consistent: every blob whole and verified, no image recorded.

use std::fs;
use std::path::Path;
use std::sync::Arc;

use armlet_image::platform::Platform;
use armlet_image::pull::{NoProgress, PullOptions};
use armlet_image::registries::Registries;
use armlet_image::secrets::PullSecrets;
use armlet_image::service::{GcPolicy, ImageService, ServiceError};
use armlet_tests::node::{TempDir, require_root};
use armlet_tests::oci::{BuiltImage, busybox_index, sized_image};
use armlet_tests::registry::{Fault, FaultProxy, RegistryOptions, TestAuth, TestRegistry};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A registries.yaml mirroring `host` to itself over plain HTTP.
fn plain_http(host: &str) -> Registries {
    Registries::parse(&format!(
        "mirrors:\n  \"{host}\":\n    endpoint:\n      - \"http://{host}\"\n"
    ))
    .unwrap()
}

fn open(root: &Path, registries: Registries) -> ImageService {
    ImageService::open(root, registries).unwrap()
}

fn pull(service: &ImageService, reference: &str) -> Result<String, ServiceError> {
    pull_with(service, reference, PullOptions::default())
}

fn pull_with(
    service: &ImageService,
    reference: &str,
    options: PullOptions,
) -> Result<String, ServiceError> {
    rt().block_on(service.pull(reference, &options, Arc::new(NoProgress)))
        .map(|(name, pulled)| format!("{name} {}", pulled.digest))
}

/// Every blob hashes to its name, nothing half-unpacked is visible, and no
/// ingest file is bigger than its blob could be.
fn assert_consistent(service: &ImageService) {
    for (digest, _) in service.store().list().unwrap() {
        service
            .store()
            .verify(&digest)
            .unwrap_or_else(|e| panic!("blob {digest} is not intact: {e}"));
    }
    if let Ok(entries) = fs::read_dir(service.layer_root()) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            assert!(
                name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit()),
                "leftover in the layer directory: {name}"
            );
        }
    }
}

/// The platform file of the pulled image's top layer.
fn platform_file(service: &ImageService, name: &str) -> String {
    let layers = service.layers(name).unwrap();
    fs::read_to_string(layers.last().unwrap().join("etc/armlet-test")).unwrap()
}

fn pushed_busybox(registry: &TestRegistry, scratch: &Path, repo_tag: &str) -> BuiltImage {
    let image = busybox_index(&scratch.join("layout"), "1");
    registry.push(&image.dir, &image.tag, repo_tag);
    image
}

#[test]
fn pull_by_tag_and_digest_for_each_platform_over_configured_plain_http() {
    let registry = TestRegistry::start(RegistryOptions::default());
    let scratch = TempDir::new("pull-plain");
    let image = pushed_busybox(&registry, scratch.path(), "test/busybox:1");
    let host = registry.host();
    let reference = format!("{host}/test/busybox:1");

    for (platform, expected) in [
        ("linux/amd64", "linux/amd64"),
        ("linux/arm64", "linux/arm64/v8"),
        ("linux/arm/v7", "linux/arm/v7"),
    ] {
        let root = scratch.path().join(platform.replace('/', "-"));
        let service =
            open(&root, plain_http(&host)).with_platform(platform.parse::<Platform>().unwrap());
        let line = pull(&service, &reference).unwrap();
        assert_eq!(line, format!("{reference} {}", image.index));
        assert_eq!(platform_file(&service, &reference).trim(), expected);
        let inspected = service.inspect(&reference).unwrap();
        assert_eq!(
            inspected["manifest"].as_str().unwrap(),
            image.platform(expected).manifest
        );
        // Only this platform's layers were fetched: two layers, plus the index,
        // the manifest and the config.
        assert_eq!(service.store().list().unwrap().len(), 5, "{platform}");
        assert_consistent(&service);
    }

    // By digest: the same image, nothing downloaded again.
    let root = scratch.path().join("linux-amd64");
    let service = open(&root, plain_http(&host));
    let by_digest = format!("{host}/test/busybox@{}", image.index);
    let (name, pulled) = rt()
        .block_on(service.pull(&by_digest, &PullOptions::default(), Arc::new(NoProgress)))
        .unwrap();
    assert_eq!(name, by_digest);
    assert_eq!(pulled.digest.to_string(), image.index);
    assert_eq!(pulled.downloaded, 0);
    // A digest the registry does not have is an error naming the endpoint.
    let missing = format!("{host}/test/busybox@sha256:{}", "0".repeat(64));
    let err = pull(&service, &missing).unwrap_err().to_string();
    assert!(err.contains("not found") && err.contains(&host), "{err}");
}

#[test]
fn plain_http_is_never_used_unless_configured() {
    let registry = TestRegistry::start(RegistryOptions::default());
    let scratch = TempDir::new("pull-no-plain");
    pushed_busybox(&registry, scratch.path(), "test/busybox:1");
    let service = open(&scratch.path().join("root"), Registries::default());
    let err = pull(&service, &format!("{}/test/busybox:1", registry.host()))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!("https://{}", registry.host())),
        "{err}"
    );
    assert!(service.list().unwrap().is_empty());
}

#[test]
fn tls_with_basic_auth_from_registries_yaml_or_pull_secrets() {
    let registry = TestRegistry::start(RegistryOptions {
        tls: true,
        auth: TestAuth::Basic {
            user: "alice".into(),
            password: "s3cret".into(),
        },
    });
    let scratch = TempDir::new("pull-tls");
    let image = pushed_busybox(&registry, scratch.path(), "private/busybox:1");
    let host = registry.host();
    let ca = registry.ca_pem_path().unwrap();
    let reference = format!("{host}/private/busybox:1");
    let yaml = |auth: &str| {
        Registries::parse(&format!(
            "configs:\n  \"{host}\":\n    tls:\n      ca_file: {}\n{auth}",
            ca.display()
        ))
        .unwrap()
    };

    // Right credentials in registries.yaml.
    let service = open(
        &scratch.path().join("ok"),
        yaml("    auth:\n      username: alice\n      password: s3cret\n"),
    );
    assert_eq!(
        pull(&service, &reference).unwrap(),
        format!("{reference} {}", image.index)
    );
    assert_consistent(&service);

    // Wrong ones, and none: refused with a clear word, nothing recorded.
    let service = open(
        &scratch.path().join("wrong"),
        yaml("    auth:\n      username: alice\n      password: nope\n"),
    );
    let err = pull(&service, &reference).unwrap_err().to_string();
    assert!(err.contains("not authorized"), "{err}");
    assert!(service.list().unwrap().is_empty());
    let anonymous = open(&scratch.path().join("anon"), yaml(""));
    let err = pull(&anonymous, &reference).unwrap_err().to_string();
    assert!(err.contains("none is configured"), "{err}");

    // The pod's imagePullSecrets supply what registries.yaml does not.
    let mut secrets = PullSecrets::default();
    secrets
        .add_docker_config(
            format!(r#"{{"auths":{{"{host}":{{"username":"alice","password":"s3cret"}}}}}}"#)
                .as_bytes(),
        )
        .unwrap();
    let options = PullOptions {
        secrets,
        ..PullOptions::default()
    };
    pull_with(&anonymous, &reference, options).unwrap();

    // Without the CA the certificate is not trusted.
    let untrusted = open(&scratch.path().join("untrusted"), Registries::default());
    let err = pull(&untrusted, &reference).unwrap_err().to_string();
    assert!(err.to_lowercase().contains("certificate"), "{err}");
}

#[test]
fn insecure_skip_verify_trusts_any_certificate_but_still_speaks_tls() {
    let registry = TestRegistry::start(RegistryOptions {
        tls: true,
        auth: TestAuth::None,
    });
    let scratch = TempDir::new("pull-insecure");
    let image = pushed_busybox(&registry, scratch.path(), "test/busybox:1");
    let host = registry.host();
    let reference = format!("{host}/test/busybox:1");
    // No CA for the registry's certificate: refused...
    let service = open(&scratch.path().join("verified"), Registries::default());
    let err = pull(&service, &reference).unwrap_err().to_string();
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    // ...unless verification is off for it, as k3s's registries.yaml allows.
    let yaml = format!("configs:\n  \"{host}\":\n    tls:\n      insecure_skip_verify: true\n");
    let service = open(
        &scratch.path().join("insecure"),
        Registries::parse(&yaml).unwrap(),
    );
    assert_eq!(
        pull(&service, &reference).unwrap(),
        format!("{reference} {}", image.index)
    );
    assert_consistent(&service);
}

#[test]
fn bearer_tokens_from_the_token_service() {
    let registry = TestRegistry::start(RegistryOptions {
        tls: false,
        auth: TestAuth::Token {
            user: "bob".into(),
            password: "t0ken".into(),
        },
    });
    let scratch = TempDir::new("pull-token");
    let image = pushed_busybox(&registry, scratch.path(), "team/busybox:1");
    let host = registry.host();
    let reference = format!("{host}/team/busybox:1");
    let with_auth = |password: &str| {
        Registries::parse(&format!(
            "mirrors:\n  \"{host}\":\n    endpoint: [\"http://{host}\"]\nconfigs:\n  \"{host}\":\n    auth:\n      username: bob\n      password: {password}\n"
        ))
        .unwrap()
    };
    let before = registry.token_requests();
    let service = open(&scratch.path().join("ok"), with_auth("t0ken"));
    assert_eq!(
        pull(&service, &reference).unwrap(),
        format!("{reference} {}", image.index)
    );
    assert!(registry.token_requests() > before);

    let service = open(&scratch.path().join("bad"), with_auth("wrong"));
    let err = pull(&service, &reference).unwrap_err().to_string();
    assert!(err.contains("refused the credentials"), "{err}");
    assert_consistent(&service);
}

#[test]
fn wrong_bytes_served_are_refused_and_nothing_is_kept() {
    let registry = TestRegistry::start(RegistryOptions::default());
    let scratch = TempDir::new("pull-corrupt");
    pushed_busybox(&registry, scratch.path(), "test/busybox:1");
    let proxy = FaultProxy::start(registry.addr(), Fault::CorruptBlobs);
    let host = proxy.host();
    let service = open(&scratch.path().join("root"), plain_http(&host));
    let err = pull(&service, &format!("{host}/test/busybox:1"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("hashes to"), "{err}");
    assert!(service.list().unwrap().is_empty());
    assert_consistent(&service);
    assert_eq!(
        fs::read_dir(service.store().root().join("ingest"))
            .unwrap()
            .count(),
        0,
        "a corrupt download must not be kept for resume"
    );
}

#[test]
fn a_transfer_cut_mid_blob_resumes_and_a_vanished_registry_is_a_clear_error() {
    let mut registry = TestRegistry::start(RegistryOptions::default());
    let scratch = TempDir::new("pull-cut");
    let image = sized_image(&scratch.path().join("layout"), "1", 2, 6 << 20);
    registry.push(&image.dir, &image.tag, "test/big:1");
    let ranged = |proxy: &FaultProxy| -> Vec<String> {
        proxy
            .seen()
            .into_iter()
            .filter_map(|r| r.header("range").map(|v| format!("{} {v}", r.line)))
            .collect()
    };

    // The first blob transfer breaks after 100 bytes: the pull retries it from
    // there with a Range request and succeeds.
    let proxy = FaultProxy::start(registry.addr(), Fault::CutFirstBlobRequestAfter(100));
    let host = proxy.host();
    let service = open(&scratch.path().join("root"), plain_http(&host));
    pull(&service, &format!("{host}/test/big:1")).unwrap();
    assert_consistent(&service);
    let resumed = ranged(&proxy);
    assert!(
        resumed.len() == 1 && resumed[0].ends_with("bytes=100-"),
        "{resumed:?}"
    );

    // Every transfer breaks after 50 kB: the pull gives up with the reason,
    // keeping the partial downloads (not blobs) ...
    let proxy = FaultProxy::start(registry.addr(), Fault::CutBlobsAfter(50_000));
    let host = proxy.host();
    let root = scratch.path().join("cut");
    let service = open(&root, plain_http(&host));
    let reference = format!("{host}/test/big:1");
    let err = pull(&service, &reference).unwrap_err().to_string();
    assert!(err.contains("/blobs/sha256:"), "{err}");
    assert!(service.list().unwrap().is_empty());
    assert_consistent(&service);
    assert!(fs::read_dir(root.join("content/ingest")).unwrap().count() > 0);
    drop(service);
    // ... which the next pull continues instead of starting over.
    proxy.set_fault(Fault::None);
    let service = open(&root, plain_http(&host));
    let (_, pulled) = rt()
        .block_on(service.pull(&reference, &PullOptions::default(), Arc::new(NoProgress)))
        .unwrap();
    assert!(!ranged(&proxy).is_empty());
    let stored: u64 = service.store().list().unwrap().iter().map(|(_, s)| s).sum();
    assert!(
        pulled.downloaded + 50_000 <= stored,
        "{} downloaded of {stored}: nothing was resumed",
        pulled.downloaded
    );
    assert_consistent(&service);

    // The registry gone altogether.
    registry.stop();
    let host = registry.host();
    let service = open(&scratch.path().join("gone"), plain_http(&host));
    let err = pull(&service, &format!("{host}/test/big:1"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&host) && err.to_lowercase().contains("connect"),
        "{err}"
    );
    registry.restart();
    pull(&service, &format!("{host}/test/big:1")).unwrap();
    assert_consistent(&service);
}

/// A small tmpfs mounted for the test, unmounted on drop.
struct Tmpfs(TempDir);

impl Tmpfs {
    fn new(name: &str, bytes: u64) -> Self {
        let dir = TempDir::new(name);
        nix::mount::mount(
            Some("tmpfs"),
            dir.path(),
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some(format!("size={bytes}").as_str()),
        )
        .unwrap();
        Self(dir)
    }

    fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(self.0.path(), nix::mount::MntFlags::MNT_DETACH);
    }
}

#[test]
fn a_full_disk_fails_the_pull_cleanly() {
    require_root();
    let registry = TestRegistry::start(RegistryOptions::default());
    let scratch = TempDir::new("pull-full");
    let image = sized_image(&scratch.path().join("layout"), "1", 2, 8 << 20);
    registry.push(&image.dir, &image.tag, "test/big:1");
    let disk = Tmpfs::new("pull-full-disk", 3 << 20);
    let host = registry.host();
    let service = open(&disk.path().join("images"), plain_http(&host));
    let err = pull(&service, &format!("{host}/test/big:1"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("No space left on device"), "{err}");
    assert!(service.list().unwrap().is_empty());
    assert_consistent(&service);
}

#[test]
fn gc_frees_unused_images_down_to_the_low_threshold() {
    require_root();
    let registry = TestRegistry::start(RegistryOptions::default());
    let scratch = TempDir::new("pull-gc");
    // Three images with distinct data layers, about 1.5 MiB on disk each
    // (compressed blob + unpacked layer).
    for (i, tag) in ["a", "b", "c"].iter().enumerate() {
        let image = sized_image(
            &scratch.path().join(format!("layout-{tag}")),
            tag,
            1,
            (600 + i as u64) << 10,
        );
        registry.push(&image.dir, &image.tag, &format!("test/gc:{tag}"));
    }
    let disk = Tmpfs::new("pull-gc-disk", 16 << 20);
    let host = registry.host();
    let service = open(&disk.path().join("images"), plain_http(&host));
    for tag in ["a", "b", "c"] {
        pull(&service, &format!("{host}/test/gc:{tag}")).unwrap();
    }
    // An air-gap image: pinned, as in k3s (an offline node cannot pull it back).
    let archive = scratch.path().join("airgap.tar");
    armlet_tests::oci::docker_archive(&archive, "example.com/airgap/app:1", 300 << 10, 7);
    let imported = rt().block_on(service.import(&archive)).unwrap();
    assert_eq!(imported.images.len(), 1, "{:?}", imported.errors);
    let used = armlet_image::service::disk_use_percent(disk.path()).unwrap();
    assert!(used > 10, "{used}%");
    // Below the high threshold nothing happens.
    let calm = GcPolicy {
        high_percent: used + 1,
        low_percent: 0,
        min_age: std::time::Duration::ZERO,
    };
    let report = rt()
        .block_on(service.gc(&calm, &Default::default()))
        .unwrap();
    assert!(report.removed.is_empty());
    // Above it, but every image younger than the minimum age: nothing goes.
    let young = GcPolicy {
        high_percent: used - 1,
        low_percent: 1,
        ..GcPolicy::default()
    };
    let report = rt()
        .block_on(service.gc(&young, &Default::default()))
        .unwrap();
    assert!(report.removed.is_empty(), "{report:?}");
    // A container's root filesystem stands on c.
    let c = format!("{host}/test/gc:c");
    let rootfs = service
        .snapshots()
        .prepare("ctr-on-c", &service.layers(&c).unwrap())
        .unwrap();
    // Above it: everything not in use goes, oldest first, until below low;
    // the image the pods need (b) and the one under a container (c) stay.
    let keep: std::collections::BTreeSet<String> = [format!("{host}/test/gc:b")].into();
    let policy = GcPolicy {
        high_percent: used - 1,
        low_percent: 1,
        min_age: std::time::Duration::ZERO,
    };
    let report = rt().block_on(service.gc(&policy, &keep)).unwrap();
    assert_eq!(report.removed, vec![format!("{host}/test/gc:a")]);
    assert!(report.after_percent < report.before_percent, "{report:?}");
    assert!(report.blobs >= 3 && report.layers >= 1, "{report:?}");
    let names: Vec<String> = service
        .list()
        .unwrap()
        .into_iter()
        .map(|i| i.name)
        .collect();
    assert_eq!(
        names,
        vec![
            format!("{host}/test/gc:b"),
            c.clone(),
            "example.com/airgap/app:1".to_owned()
        ]
    );
    // What stays is whole: layers still unpacked, blobs intact, the
    // container's files readable.
    for name in &names {
        assert!(service.layers(name).unwrap().iter().all(|l| l.is_dir()));
    }
    assert!(rootfs.join("bin/busybox").is_file());
    assert_consistent(&service);
    // Removing c by hand is refused while the container stands on it.
    let err = rt().block_on(service.remove(&c)).unwrap_err().to_string();
    assert!(err.contains("in use"), "{err}");
    service.snapshots().remove("ctr-on-c").unwrap();
    rt().block_on(service.remove(&c)).unwrap();
}

fn armlet(args: &[&str]) -> std::process::Output {
    let bin = armlet_tests::release_binary(&armlet_tests::HOST);
    std::process::Command::new(bin)
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn armlet_images_cli_pulls_lists_inspects_imports_peer_archives_and_removes() {
    let registry = TestRegistry::start(RegistryOptions::default());
    let scratch = TempDir::new("pull-cli");
    let image = pushed_busybox(&registry, scratch.path(), "test/busybox:1");
    let host = registry.host();
    let reference = format!("{host}/test/busybox:1");
    let registries = scratch.path().join("registries.yaml");
    fs::write(
        &registries,
        format!("mirrors:\n  \"{host}\":\n    endpoint: [\"http://{host}\"]\n"),
    )
    .unwrap();
    let root = scratch.path().join("root");
    let base = [
        "images",
        "--root",
        root.to_str().unwrap(),
        "--registries",
        registries.to_str().unwrap(),
    ];
    let run = |extra: &[&str]| {
        let args: Vec<&str> = base.iter().chain(extra).copied().collect();
        armlet(&args)
    };

    // Pull: plain progress lines on a pipe, the result on stdout.
    let out = run(&["pull", &reference]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.starts_with(&format!("{reference} {}", image.index)),
        "{stdout}"
    );
    let stderr = text(&out.stderr);
    for expected in [
        format!("resolving at http://{host}/v2/test/busybox"),
        format!(
            "manifest {}: 2 layers",
            image.platform("linux/amd64").manifest
        ),
        "downloaded".to_owned(),
        ": done".to_owned(),
    ] {
        assert!(stderr.contains(&expected), "{expected:?} not in:\n{stderr}");
    }
    assert!(!stderr.contains('\x1b'), "no terminal codes on a pipe");

    // Peers' archives: skopeo's docker-archive and oci-archive of the image.
    let archives = scratch.path().join("archives");
    fs::create_dir(&archives).unwrap();
    for (transport, file, name) in [
        ("docker-archive", "docker.tar", "example.com/peer/docker:1"),
        ("oci-archive", "oci.tar", "example.com/peer/oci:1"),
    ] {
        let dest = format!("{transport}:{}:{name}", archives.join(file).display());
        let out = TestRegistry::skopeo()
            .args(["copy", "--quiet", "--src-tls-verify=false"])
            .arg(format!("docker://{reference}"))
            .arg(&dest)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "skopeo copy to {dest}: {}",
            text(&out.stderr)
        );
    }
    for round in 0..2 {
        let out = run(&["import", archives.to_str().unwrap()]);
        assert!(out.status.success(), "round {round}: {}", text(&out.stderr));
        let stdout = text(&out.stdout);
        for name in ["example.com/peer/docker:1", "example.com/peer/oci:1"] {
            assert!(
                stdout.contains(name),
                "round {round}: {name} not in {stdout}"
            );
        }
    }

    // ls and inspect.
    let out = run(&["ls", "-q"]);
    assert_eq!(
        text(&out.stdout).lines().collect::<Vec<_>>(),
        vec![
            reference.as_str(),
            "example.com/peer/docker:1",
            "example.com/peer/oci:1"
        ]
    );
    for name in [
        reference.as_str(),
        "example.com/peer/docker:1",
        "example.com/peer/oci:1",
    ] {
        let out = run(&["inspect", name]);
        assert!(out.status.success(), "{name}: {}", text(&out.stderr));
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(json["platform"], "linux/amd64");
        let layers = json["layers"].as_array().unwrap();
        assert_eq!(layers.len(), 2, "{name}");
        assert!(
            layers.iter().all(|l| l["unpacked"] == true),
            "{name}: {json}"
        );
        assert_eq!(json["config"]["architecture"], "amd64");
    }

    // An imported image removed by hand comes back from its tarball, although
    // the tarball itself is unchanged (and so remembered).
    let out = run(&["rm", "example.com/peer/docker:1"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = run(&["import", archives.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = run(&["inspect", "example.com/peer/docker:1"]);
    assert!(out.status.success(), "not restored: {}", text(&out.stderr));

    // rm: gone from the list, a second rm fails clearly.
    let out = run(&["rm", &reference]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!text(&run(&["ls", "-q"]).stdout).contains(&reference));
    let out = run(&["rm", &reference]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("no image"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn concurrent_pulls_of_one_image_share_each_download() {
    let registry = TestRegistry::start(RegistryOptions::default());
    let scratch = TempDir::new("pull-shared");
    let image = sized_image(&scratch.path().join("layout"), "1", 3, 6 << 20);
    registry.push(&image.dir, &image.tag, "test/shared:1");
    let proxy = FaultProxy::start(registry.addr(), Fault::None);
    let host = proxy.host();
    let service = open(&scratch.path().join("root"), plain_http(&host));
    let reference = format!("{host}/test/shared:1");
    let options = PullOptions::default();
    let (a, b) = rt().block_on(async {
        tokio::join!(
            service.pull(&reference, &options, Arc::new(NoProgress)),
            service.pull(&reference, &options, Arc::new(NoProgress)),
        )
    });
    let (a, b) = (a.unwrap().1, b.unwrap().1);
    assert_eq!(a.layers, b.layers);
    // Pulled again, the tag is checked with a HEAD: no manifest GET counts
    // against a registry's pull limit when nothing changed.
    let before = proxy.requests().len();
    pull(&service, &reference).unwrap();
    let again = proxy.requests()[before..].to_vec();
    assert!(
        again
            .iter()
            .any(|r| r.starts_with("HEAD ") && r.ends_with("/manifests/1")),
        "{again:?}"
    );
    assert!(!again.iter().any(|r| r.starts_with("GET ")), "{again:?}");
    let amd64 = image.platform("linux/amd64");
    for blob in amd64.layers.iter().chain([&amd64.config]) {
        let gets = proxy
            .requests()
            .iter()
            .filter(|r| r.ends_with(&format!("/blobs/{blob}")))
            .count();
        assert_eq!(gets, 1, "{blob} fetched {gets} times");
    }
    assert_eq!(a.downloaded + b.downloaded, {
        let layers: u64 = service
            .store()
            .list()
            .unwrap()
            .iter()
            .filter(|(d, _)| amd64.layers.contains(&d.to_string()) || amd64.config == d.to_string())
            .map(|(_, s)| s)
            .sum();
        layers
    });
    assert_consistent(&service);
}

#[test]
fn blobs_come_from_the_next_endpoint_when_a_mirror_fails_or_is_down() {
    let registry = TestRegistry::start(RegistryOptions::default());
    let scratch = TempDir::new("pull-fallback");
    let image = sized_image(&scratch.path().join("layout"), "1", 2, 4 << 20);
    registry.push(&image.dir, &image.tag, "test/app:1");
    let real = registry.host();
    // A mirror that serves manifests but breaks every blob transfer.
    let mirror = FaultProxy::start(registry.addr(), Fault::CutBlobsAfter(20_000));
    let cut = mirror.host();
    // An address where nothing listens.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let through = |first: &str| {
        Registries::parse(&format!(
            "mirrors:\n  \"{real}\":\n    endpoint: [\"http://{first}\", \"http://{real}\"]\n"
        ))
        .unwrap()
    };
    let reference = format!("{real}/test/app:1");

    // The mirror resolves the manifest; its blobs fail, the registry serves them.
    let root = scratch.path().join("root");
    let service = open(&root, through(&cut));
    let (_, pulled) = rt()
        .block_on(service.pull(&reference, &PullOptions::default(), Arc::new(NoProgress)))
        .unwrap();
    assert_eq!(pulled.location, format!("http://{cut}/v2/test/app"));
    assert!(mirror.requests().iter().any(|r| r.contains("/blobs/")));
    assert_consistent(&service);
    rt().block_on(service.remove(&reference)).unwrap();
    drop(service);

    // By digest with the manifests still in the store (its layers gone): the
    // first mirror is never asked for them, and being down does not stop the
    // pull.
    let only_cut = Registries::parse(&format!(
        "mirrors:\n  \"{real}\":\n    endpoint: [\"http://{cut}\"]\n"
    ))
    .unwrap();
    let service = open(&root, only_cut);
    let by_digest = format!("{real}/test/app@{}", image.index);
    // Through the cutting mirror alone (its upstream https fails): the
    // manifests and config land, the layers do not.
    assert!(pull(&service, &by_digest).is_err());
    drop(service);
    let service = open(&root, through(&dead));
    let (_, pulled) = rt()
        .block_on(service.pull(&by_digest, &PullOptions::default(), Arc::new(NoProgress)))
        .unwrap();
    assert_eq!(pulled.digest.to_string(), image.index);
    assert_consistent(&service);
}
