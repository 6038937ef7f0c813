//! From an image tarball to a running container, with real parts throughout: an
//! air-gap import into the content store, the layers unpacked and verified
//! against their diff_ids, an overlay snapshot on the real overlayfs (whiteouts
//! and opaque directories included) and armlet's runtime running a container on
//! it. Needs root, as CI runs.

use std::fs;
use std::io::Write;
use std::path::Path;

use armlet_image::digest::Digest;
use armlet_image::import::ImportLedger;
use armlet_image::layers::unpacked_layers;
use armlet_image::platform::Platform;
use armlet_image::snapshot::Snapshotter;
use armlet_image::store::Store;
use armlet_runtime::logs::{CollectOptions, read_lines};
use armlet_tests::node::{Supervisor, TempDir, bundle, container, remove_cgroups, require_root};

/// A layer tarball: directories, files (path, mode, content), symlinks and
/// character devices (overlay's 0:0 whiteouts are written by the unpacker from
/// `.wh.` names, so the layers here use OCI's spelling).
#[derive(Default)]
struct Layer {
    builder: Option<tar::Builder<Vec<u8>>>,
}

impl Layer {
    fn new() -> Self {
        Self {
            builder: Some(tar::Builder::new(Vec::new())),
        }
    }

    fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h
    }

    fn dir(mut self, path: &str) -> Self {
        let mut h = Self::header(tar::EntryType::Directory, 0o755, 0);
        let b = self.builder.as_mut().unwrap();
        b.append_data(&mut h, path, &[][..]).unwrap();
        self
    }

    fn file(mut self, path: &str, mode: u32, content: &[u8]) -> Self {
        let mut h = Self::header(tar::EntryType::Regular, mode, content.len() as u64);
        let b = self.builder.as_mut().unwrap();
        b.append_data(&mut h, path, content).unwrap();
        self
    }

    fn symlink(mut self, path: &str, target: &str) -> Self {
        let mut h = Self::header(tar::EntryType::Symlink, 0o777, 0);
        let b = self.builder.as_mut().unwrap();
        b.append_link(&mut h, path, target).unwrap();
        self
    }

    fn finish(mut self) -> Vec<u8> {
        self.builder.take().unwrap().into_inner().unwrap()
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// A `docker save`-style tarball (legacy layout: `<id>/layer.tar`,
/// `<config hex>.json`, `manifest.json`) of a two-layer busybox image.
fn image_tarball() -> Vec<u8> {
    let busybox = fs::read("/bin/busybox").expect("busybox-static (cargo xtask setup)");
    let mut base = Layer::new()
        .dir("bin")
        .file("bin/busybox", 0o755, &busybox)
        .dir("etc")
        .file("etc/passwd", 0o644, b"root:x:0:0:root:/root:/bin/sh\n")
        .file("etc/removed", 0o644, b"only in the base layer\n")
        .dir("data")
        .file("data/old", 0o644, b"hidden by the opaque top layer\n");
    for applet in ["sh", "cat", "ls", "echo", "test", "["] {
        base = base.symlink(&format!("bin/{applet}"), "busybox");
    }
    for d in ["proc", "dev", "sys", "tmp"] {
        base = base.dir(d);
    }
    let base = base.finish();
    let top = Layer::new()
        .dir("etc")
        .file("etc/.wh.removed", 0o644, b"")
        .file("etc/motd", 0o644, b"hello from the top layer\n")
        .dir("data")
        .file("data/.wh..wh..opq", 0o644, b"")
        .file("data/new", 0o644, b"new\n")
        .finish();
    let config = serde_json::json!({
        "architecture": Platform::host().architecture,
        "os": "linux",
        "config": { "Cmd": ["/bin/sh"] },
        "rootfs": {
            "type": "layers",
            "diff_ids": [Digest::of(&base).to_string(), Digest::of(&top).to_string()],
        },
    });
    let config = serde_json::to_vec(&config).unwrap();
    let config_name = format!("{}.json", Digest::of(&config).hex());
    let manifest = serde_json::json!([{
        "Config": config_name,
        "RepoTags": ["armlet-test/app:v1"],
        "Layers": ["aaaa/layer.tar", "bbbb/layer.tar"],
    }]);
    let archive = Layer::new()
        .file(&config_name, 0o644, &config)
        .dir("aaaa")
        .file("aaaa/layer.tar", 0o644, &base)
        .dir("bbbb")
        .file("bbbb/layer.tar", 0o644, &top)
        .file(
            "manifest.json",
            0o644,
            &serde_json::to_vec(&manifest).unwrap(),
        )
        .finish();
    gzip(&archive)
}

#[test]
fn an_imported_image_runs_as_a_container_on_an_overlay_snapshot() {
    require_root();
    let group = "image";
    remove_cgroups(group);
    let dir = TempDir::new("image");
    let images = dir.path().join("images");
    fs::create_dir_all(&images).unwrap();
    fs::write(images.join("app.tar.gz"), image_tarball()).unwrap();

    // Air-gap import, as at start-up.
    let store = Store::open(dir.path().join("content")).unwrap();
    let mut ledger = ImportLedger::open(dir.path().join("imported.json"));
    let (imported, errors) = ledger.import_dir(&store, &images);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(imported.len(), 1);
    assert_eq!(imported[0].names, ["docker.io/armlet-test/app:v1"]);

    // Layers unpacked once, verified, shared.
    let layer_root = dir.path().join("layers");
    let layers =
        unpacked_layers(&store, &layer_root, &imported[0].digest, &Platform::host()).unwrap();
    assert_eq!(layers.len(), 2);
    let again =
        unpacked_layers(&store, &layer_root, &imported[0].digest, &Platform::host()).unwrap();
    assert_eq!(layers, again);

    // The container's root filesystem: an overlay of both layers.
    let snapshots = Snapshotter::new(dir.path().join("snapshots"));
    struct Cleanup<'a>(&'a Snapshotter);
    impl Drop for Cleanup<'_> {
        fn drop(&mut self) {
            let _ = self.0.remove("c-image");
        }
    }
    let _cleanup = Cleanup(&snapshots);
    let rootfs = snapshots.prepare("c-image", &layers).unwrap();

    let sup = Supervisor::start(&dir.path().join("runtime"));
    let script = "cat /etc/motd; ls /data; [ -e /etc/removed ] || echo removed-is-gone; \
                  echo written > /data/x && echo wrote";
    let config = container(&rootfs, group, "c-image", &["/bin/sh", "-c", script]);
    let b = bundle(dir.path(), "c-image", &config);
    let log = dir.path().join("logs/c-image.log");
    let mut client = sup.client();
    client.create("c-image", &b, &log).unwrap();
    client.start("c-image").unwrap();
    let info = client.wait("c-image").unwrap();
    let lines: Vec<String> = read_lines(&log, &CollectOptions::default())
        .unwrap()
        .lines
        .into_iter()
        .map(|l| String::from_utf8_lossy(&l.content).into_owned())
        .collect();
    assert_eq!(
        info.exit.as_ref().map(|e| e.exit_code),
        Some(0),
        "{lines:?}"
    );
    assert_eq!(
        lines,
        [
            "hello from the top layer",
            "new",
            "removed-is-gone",
            "wrote"
        ]
    );
    client.delete("c-image").unwrap();
    // The write went to the container's own layer; the image's are untouched.
    assert!(snapshots.dir("c-image").join("upper/data/x").exists());
    assert!(layers.iter().all(|l| !l.join("data/x").exists()));
    snapshots.remove("c-image").unwrap();
    assert!(!Path::new(&rootfs).exists());
    drop(sup);
    remove_cgroups(group);
}
