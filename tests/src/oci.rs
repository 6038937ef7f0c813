//! Test images built here, byte for byte, as OCI image layouts (`oci-layout`,
//! `index.json`, `blobs/sha256/<hex>`) that `skopeo copy oci:<dir>:<tag>` pushes
//! to a [`TestRegistry`](crate::registry::TestRegistry), and docker-archive
//! tarballs for air-gap imports.
//!
//! Written with the `tar` and `flate2` crates rather than by a tool, so every
//! digest is known to the test before anything is pushed: a test can tell which
//! platform's manifest, config and layers a client fetched. Tar headers are
//! deterministic (mtime 0, owner 0:0), so the same input always gives the same
//! digests.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use armlet_image::digest::{Digest, Hasher};
use flate2::Compression;
use flate2::write::GzEncoder;
use serde_json::{Value, json};

/// Media type of an OCI image index.
pub const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";
/// Media type of an OCI image manifest.
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// Media type of an OCI image config.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
/// Media type of a gzip-compressed OCI layer.
pub const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// The annotation naming a tag in an OCI layout's `index.json`.
const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// Where `cargo xtask setup` puts the guests' static busybox binaries.
const GUEST_DIR: &str = "/var/lib/armlet-dev/qemu";

/// One platform the test images are built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Platform {
    /// `os` of the config and index entry.
    pub os: &'static str,
    /// `architecture` (OCI/Go spelling: amd64, arm64, arm).
    pub architecture: &'static str,
    /// `variant`, if any (v8, v7).
    pub variant: Option<&'static str>,
    /// The static busybox binary put into this platform's image.
    pub busybox: &'static str,
}

impl Platform {
    /// "os/architecture[/variant]", as `docker --platform` spells it.
    pub fn name(&self) -> String {
        match self.variant {
            Some(v) => format!("{}/{}/{v}", self.os, self.architecture),
            None => format!("{}/{}", self.os, self.architecture),
        }
    }

    /// The `platform` object of an index entry (also the config's fields).
    fn json(&self) -> Value {
        let mut p = json!({"os": self.os, "architecture": self.architecture});
        if let Some(v) = self.variant {
            p["variant"] = json!(v);
        }
        p
    }
}

/// linux/amd64: the host's busybox-static (this machine is x86_64).
pub const AMD64: Platform = Platform {
    os: "linux",
    architecture: "amd64",
    variant: None,
    busybox: "/bin/busybox",
};

/// linux/arm64/v8: the arm64 guest's busybox-static.
pub const ARM64: Platform = Platform {
    os: "linux",
    architecture: "arm64",
    variant: Some("v8"),
    busybox: "/var/lib/armlet-dev/qemu/arm64/busybox",
};

/// linux/arm/v7: the armhf guest's busybox-static.
pub const ARMV7: Platform = Platform {
    os: "linux",
    architecture: "arm",
    variant: Some("v7"),
    busybox: "/var/lib/armlet-dev/qemu/armhf/busybox",
};

/// The platforms of every multi-platform test image, in index order.
pub const PLATFORMS: [Platform; 3] = [AMD64, ARM64, ARMV7];

/// One platform's image in a [`BuiltImage`]; digests are "sha256:<hex>".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformImage {
    /// "linux/arm64/v8" and the like.
    pub platform: String,
    /// The platform it was built for.
    pub spec: Platform,
    /// Digest of its image manifest.
    pub manifest: String,
    /// Size of its image manifest in bytes.
    pub manifest_size: u64,
    /// Digest of its config.
    pub config: String,
    /// Digests of its (gzip) layers, bottom first.
    pub layers: Vec<String>,
    /// Digests of the uncompressed layers (`rootfs.diff_ids`), bottom first.
    pub diff_ids: Vec<String>,
}

/// An image index written to an OCI layout directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltImage {
    /// The layout directory.
    pub dir: PathBuf,
    /// The tag it has in that layout (`oci:<dir>:<tag>`).
    pub tag: String,
    /// Digest of the image index.
    pub index: String,
    /// Size of the image index in bytes.
    pub index_size: u64,
    /// Its images, in index order.
    pub images: Vec<PlatformImage>,
    /// Total size of the distinct compressed layers, in bytes.
    pub compressed_bytes: u64,
    /// Total size of the distinct uncompressed layers (tar streams), in bytes.
    pub uncompressed_bytes: u64,
}

impl BuiltImage {
    /// The image for `platform` ("linux/arm64/v8"); panics if there is none.
    pub fn platform(&self, platform: &str) -> &PlatformImage {
        self.images
            .iter()
            .find(|i| i.platform == platform)
            .unwrap_or_else(|| {
                panic!(
                    "test image {} has no {platform} image (it has {:?})",
                    self.tag,
                    self.images.iter().map(|i| &i.platform).collect::<Vec<_>>()
                )
            })
    }
}

/// An OCI image layout directory being written.
struct Layout {
    dir: PathBuf,
}

impl Layout {
    /// Opens `dir` as a layout, creating it (and `oci-layout`) if needed.
    fn open(dir: &Path) -> Self {
        let blobs = dir.join("blobs/sha256");
        fs::create_dir_all(&blobs)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", blobs.display()));
        fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)
            .unwrap_or_else(|e| panic!("cannot write {}/oci-layout: {e}", dir.display()));
        Self {
            dir: dir.to_path_buf(),
        }
    }

    /// Stores a blob; returns its digest and size.
    fn put(&self, bytes: &[u8]) -> (String, u64) {
        let digest = Digest::of(bytes);
        let path = self.dir.join("blobs/sha256").join(digest.hex());
        if !path.exists() {
            fs::write(&path, bytes)
                .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        }
        (digest.to_string(), bytes.len() as u64)
    }

    /// Stores a JSON document as a blob.
    fn put_json(&self, value: &Value) -> (String, u64) {
        self.put(&serde_json::to_vec(value).expect("JSON values serialize"))
    }

    /// Points `tag` in `index.json` at a descriptor, replacing an older one.
    fn tag(&self, tag: &str, media_type: &str, digest: &str, size: u64) {
        let path = self.dir.join("index.json");
        let mut index: Value = fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_else(|| json!({"schemaVersion": 2, "manifests": []}));
        let manifests = index["manifests"]
            .as_array_mut()
            .expect("index.json written by this module has a manifests array");
        manifests.retain(|m| m["annotations"][REF_NAME] != tag);
        manifests.push(json!({
            "mediaType": media_type,
            "digest": digest,
            "size": size,
            "annotations": {REF_NAME: tag},
        }));
        fs::write(
            &path,
            serde_json::to_vec(&index).expect("JSON values serialize"),
        )
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    }
}

/// A layer: its gzip blob and the digest of the tar stream inside.
#[derive(Clone)]
pub struct Layer {
    /// The gzip-compressed tar.
    pub gzip: Vec<u8>,
    /// sha256 of the uncompressed tar ("sha256:<hex>"): the config's diff_id.
    pub diff_id: String,
    /// Size of the uncompressed tar in bytes.
    pub tar_size: u64,
}

/// Builds a layer's tar stream with deterministic headers.
pub struct LayerBuilder {
    tar: tar::Builder<Vec<u8>>,
}

impl Default for LayerBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl LayerBuilder {
    /// An empty layer.
    pub fn new() -> Self {
        let mut tar = tar::Builder::new(Vec::new());
        tar.mode(tar::HeaderMode::Deterministic);
        Self { tar }
    }

    fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h
    }

    /// Adds a directory (`path` without a trailing slash).
    pub fn dir(&mut self, path: &str, mode: u32) -> &mut Self {
        let mut h = Self::header(tar::EntryType::Directory, mode, 0);
        self.tar
            .append_data(&mut h, format!("{path}/"), io::empty())
            .expect("writing a tar to memory cannot fail");
        self
    }

    /// Adds a regular file.
    pub fn file(&mut self, path: &str, mode: u32, content: &[u8]) -> &mut Self {
        let mut h = Self::header(tar::EntryType::Regular, mode, content.len() as u64);
        self.tar
            .append_data(&mut h, path, content)
            .expect("writing a tar to memory cannot fail");
        self
    }

    /// Adds a symbolic link `path` → `target`.
    pub fn symlink(&mut self, path: &str, target: &str) -> &mut Self {
        let mut h = Self::header(tar::EntryType::Symlink, 0o777, 0);
        self.tar
            .append_link(&mut h, path, target)
            .expect("writing a tar to memory cannot fail");
        self
    }

    /// The finished tar stream, uncompressed.
    pub fn into_tar(self) -> Vec<u8> {
        self.tar
            .into_inner()
            .expect("writing a tar to memory cannot fail")
    }

    /// The finished layer, gzip-compressed.
    pub fn finish(self) -> Layer {
        let tar = self.into_tar();
        let mut gz = GzEncoder::new(Vec::with_capacity(tar.len() / 2), Compression::default());
        gz.write_all(&tar)
            .expect("compressing to memory cannot fail");
        Layer {
            gzip: gz.finish().expect("compressing to memory cannot fail"),
            diff_id: Digest::of(&tar).to_string(),
            tar_size: tar.len() as u64,
        }
    }
}

/// Applets linked to busybox in every test image.
pub const APPLETS: &[&str] = &["sh", "echo", "cat", "ls"];

/// Reads a platform's busybox binary; panics with what to run when it is missing.
fn busybox_binary(platform: &Platform) -> Vec<u8> {
    fs::read(platform.busybox).unwrap_or_else(|e| {
        panic!(
            "{} ({}): {e}; run `cargo xtask setup` (it installs busybox-static and the \
             QEMU guests' busybox under {GUEST_DIR})",
            platform.busybox,
            platform.name()
        )
    })
}

/// The bottom layer of every test image: `bin/busybox` (0755) and its applets
/// as symlinks. Built once per process and platform: the binaries are ~2 MB and
/// compressing them is most of the cost of a small image.
pub fn busybox_layer(platform: &Platform) -> Layer {
    static CACHE: OnceLock<Mutex<HashMap<Platform, Layer>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(layer) = cache
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(platform)
    {
        return layer.clone();
    }
    let busybox = busybox_binary(platform);
    let mut b = LayerBuilder::new();
    b.dir("bin", 0o755).file("bin/busybox", 0o755, &busybox);
    for applet in APPLETS {
        b.symlink(&format!("bin/{applet}"), "busybox");
    }
    let layer = b.finish();
    cache
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(*platform, layer.clone());
    layer
}

/// The small layer naming the platform: `etc/armlet-test` holds e.g.
/// "linux/arm64/v8\n", so a test can read from the unpacked image which one
/// was pulled.
pub fn platform_layer(platform: &Platform) -> Layer {
    let mut b = LayerBuilder::new();
    b.dir("etc", 0o755).file(
        "etc/armlet-test",
        0o644,
        format!("{}\n", platform.name()).as_bytes(),
    );
    b.finish()
}

/// Writes one platform's config and manifest over `layers` (already stored).
fn write_image(
    layout: &Layout,
    platform: &Platform,
    layers: &[(&Layer, String, u64)],
    cmd: &[&str],
) -> PlatformImage {
    let diff_ids: Vec<String> = layers.iter().map(|(l, _, _)| l.diff_id.clone()).collect();
    let mut config = json!({
        "created": "1970-01-01T00:00:00Z",
        "architecture": platform.architecture,
        "os": platform.os,
        "config": {
            "Cmd": cmd,
            "Env": ["PATH=/bin"],
            "WorkingDir": "/",
        },
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": layers.iter().map(|_| json!({"created_by": "armlet-tests"})).collect::<Vec<_>>(),
    });
    if let Some(v) = platform.variant {
        config["variant"] = json!(v);
    }
    let (config_digest, config_size) = layout.put_json(&config);
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": {"mediaType": CONFIG_MEDIA_TYPE, "digest": config_digest, "size": config_size},
        "layers": layers.iter().map(|(_, digest, size)| json!({
            "mediaType": LAYER_MEDIA_TYPE, "digest": digest, "size": size,
        })).collect::<Vec<_>>(),
    });
    let (manifest_digest, manifest_size) = layout.put_json(&manifest);
    PlatformImage {
        platform: platform.name(),
        spec: *platform,
        manifest: manifest_digest,
        manifest_size,
        config: config_digest,
        layers: layers.iter().map(|(_, d, _)| d.clone()).collect(),
        diff_ids,
    }
}

/// Writes an index over per-platform images, each made of the given layers,
/// and tags it.
fn write_index(
    dir: &Path,
    tag: &str,
    images: Vec<(Platform, Vec<Layer>)>,
    cmd: &[&str],
) -> BuiltImage {
    let layout = Layout::open(dir);
    let mut seen: HashMap<String, (u64, u64)> = HashMap::new();
    let mut built = Vec::new();
    for (platform, layers) in &images {
        let stored: Vec<(&Layer, String, u64)> = layers
            .iter()
            .map(|l| {
                let (digest, size) = layout.put(&l.gzip);
                seen.insert(digest.clone(), (size, l.tar_size));
                (l, digest, size)
            })
            .collect();
        built.push(write_image(&layout, platform, &stored, cmd));
    }
    let index = json!({
        "schemaVersion": 2,
        "mediaType": INDEX_MEDIA_TYPE,
        "manifests": built.iter().map(|i| json!({
            "mediaType": MANIFEST_MEDIA_TYPE,
            "digest": i.manifest,
            "size": i.manifest_size,
            "platform": i.spec.json(),
        })).collect::<Vec<_>>(),
    });
    let (index_digest, index_size) = layout.put_json(&index);
    layout.tag(tag, INDEX_MEDIA_TYPE, &index_digest, index_size);
    BuiltImage {
        dir: dir.to_path_buf(),
        tag: tag.to_owned(),
        index: index_digest,
        index_size,
        images: built,
        compressed_bytes: seen.values().map(|(c, _)| c).sum(),
        uncompressed_bytes: seen.values().map(|(_, u)| u).sum(),
    }
}

/// Writes to the OCI layout `dir` (created if needed; other tags kept) an image
/// index tagged `tag` with three images: linux/amd64, linux/arm64/v8 and
/// linux/arm/v7. Each is a busybox layer (`bin/busybox`, `bin/sh`, `bin/echo`,
/// `bin/cat`, `bin/ls`) and a layer with `etc/armlet-test` holding its platform
/// string; its command is `cat /etc/armlet-test`.
///
/// Panics (saying to run `cargo xtask setup`) when a busybox binary is missing.
pub fn busybox_index(dir: &Path, tag: &str) -> BuiltImage {
    let images = PLATFORMS
        .iter()
        .map(|p| (*p, vec![busybox_layer(p), platform_layer(p)]))
        .collect();
    write_index(dir, tag, images, &["/bin/cat", "/etc/armlet-test"])
}

/// Files per data layer of [`sized_image`].
const FILES_PER_LAYER: usize = 4;

/// Writes to the OCI layout `dir` an image index tagged `tag` whose images
/// (linux/amd64, arm64/v8, arm/v7) are each their platform's busybox layer and
/// `layers` data layers shared by all three. The data layers hold
/// [`FILES_PER_LAYER`] files each of pseudo-random, text-like content
/// ([`TextGenerator`]: gzip shrinks it about 2.5×), `total_bytes` in all.
///
/// The same arguments always give the same digests.
pub fn sized_image(dir: &Path, tag: &str, layers: usize, total_bytes: u64) -> BuiltImage {
    let per_layer = total_bytes / layers.max(1) as u64;
    let data: Vec<Layer> = (0..layers)
        .map(|l| {
            let mut b = LayerBuilder::new();
            b.dir("data", 0o755);
            b.dir(&format!("data/layer{l}"), 0o755);
            for f in 0..FILES_PER_LAYER {
                let size = per_layer / FILES_PER_LAYER as u64;
                let seed = ((l as u64) << 32) | f as u64;
                let content = TextGenerator::new(seed).take(size as usize);
                b.file(&format!("data/layer{l}/file{f}.txt"), 0o644, &content);
            }
            b.finish()
        })
        .collect();
    let images = PLATFORMS
        .iter()
        .map(|p| {
            let mut layers = vec![busybox_layer(p)];
            layers.extend(data.iter().cloned());
            (*p, layers)
        })
        .collect();
    write_index(dir, tag, images, &["/bin/ls", "-R", "/data"])
}

/// Pseudo-random text: words from a fixed vocabulary of random letters,
/// separated by spaces, newlines and numbers. Cheap (xorshift) and compressible
/// about as much as real files (gzip: ~2.5×), so compression and decompression
/// do real work in benchmarks.
pub struct TextGenerator {
    state: u64,
    words: Vec<Vec<u8>>,
}

impl TextGenerator {
    /// A generator; the same seed always gives the same text.
    pub fn new(seed: u64) -> Self {
        // The vocabulary comes from a fixed seed: every file shares it, as files
        // of one program share their words.
        let mut vocab = Self {
            state: 0x9e37_79b9_7f4a_7c15,
            words: Vec::new(),
        };
        let words = (0..2048)
            .map(|_| {
                let len = 2 + (vocab.next() % 9) as usize;
                (0..len).map(|_| b'a' + (vocab.next() % 26) as u8).collect()
            })
            .collect();
        Self {
            // xorshift must not start at 0.
            state: seed.wrapping_mul(0x2545_f491_4f6c_dd1d) | 1,
            words,
        }
    }

    /// The next 64 random bits (xorshift64*).
    fn next(&mut self) -> u64 {
        let mut x = self.state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.state = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// The next `len` bytes of text.
    pub fn take(&mut self, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 16);
        while out.len() < len {
            let r = self.next();
            out.extend_from_slice(&self.words[(r & 2047) as usize]);
            match (r >> 11) % 16 {
                0 => out.push(b'\n'),
                1 | 2 => {
                    out.push(b' ');
                    out.extend_from_slice(((r >> 16) % 100_000).to_string().as_bytes());
                    out.push(b' ');
                }
                _ => out.push(b' '),
            }
        }
        out.truncate(len);
        out
    }
}

/// Writes `path`, a docker-archive tarball (`docker save` before Docker 25:
/// `manifest.json`, `<config hex>.json`, `<id>/layer.tar`) of one linux/amd64
/// image named `name` (e.g. "docker.io/library/bench:1"). Its single
/// uncompressed layer holds files of pseudo-random bytes, `bytes` in all,
/// different for every `seed`. Returns the layer's diff_id.
///
/// Streams: memory stays small whatever the size.
pub fn docker_archive(path: &Path, name: &str, bytes: u64, seed: u64) -> String {
    let fail = |e: io::Error| -> ! { panic!("cannot write {}: {e}", path.display()) };
    // The layer goes to a scratch file first: its digest names it in the archive.
    let scratch = path.with_extension("layer-scratch");
    let layer_digest = {
        let file = fs::File::create(&scratch).unwrap_or_else(|e| fail(e));
        let mut hashing = HashingWriter {
            inner: io::BufWriter::with_capacity(1 << 20, file),
            hasher: Hasher::new(),
        };
        let mut tar = tar::Builder::new(&mut hashing);
        const FILE_SIZE: u64 = 64 << 20;
        let mut rng = seed.wrapping_mul(0x2545_f491_4f6c_dd1d) | 1;
        let mut left = bytes;
        let mut n = 0;
        while left > 0 {
            let size = left.min(FILE_SIZE);
            let mut h = LayerBuilder::header(tar::EntryType::Regular, 0o644, size);
            let reader = RandomReader {
                state: &mut rng,
                left: size,
            };
            tar.append_data(&mut h, format!("data/blob{n}.bin"), reader)
                .unwrap_or_else(|e| fail(e));
            left -= size;
            n += 1;
        }
        tar.finish().unwrap_or_else(|e| fail(e));
        drop(tar);
        hashing.inner.flush().unwrap_or_else(|e| fail(e));
        hashing.hasher.finish()
    };
    let config = json!({
        "created": "1970-01-01T00:00:00Z",
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest.to_string()]},
    });
    let config = serde_json::to_vec(&config).expect("JSON values serialize");
    let config_name = format!("{}.json", Digest::of(&config).hex());
    let layer_name = format!("{}/layer.tar", layer_digest.hex());
    let manifest = serde_json::to_vec(&json!([{
        "Config": config_name,
        "RepoTags": [name],
        "Layers": [layer_name],
    }]))
    .expect("JSON values serialize");

    let out = fs::File::create(path).unwrap_or_else(|e| fail(e));
    let mut tar = tar::Builder::new(io::BufWriter::with_capacity(1 << 20, out));
    tar.mode(tar::HeaderMode::Deterministic);
    let mut dir = LayerBuilder::header(tar::EntryType::Directory, 0o755, 0);
    tar.append_data(&mut dir, format!("{}/", layer_digest.hex()), io::empty())
        .unwrap_or_else(|e| fail(e));
    let mut layer = fs::File::open(&scratch).unwrap_or_else(|e| fail(e));
    tar.append_file(&layer_name, &mut layer)
        .unwrap_or_else(|e| fail(e));
    for (file, content) in [
        (config_name.as_str(), &config),
        ("manifest.json", &manifest),
    ] {
        let mut h = LayerBuilder::header(tar::EntryType::Regular, 0o644, content.len() as u64);
        tar.append_data(&mut h, file, content.as_slice())
            .unwrap_or_else(|e| fail(e));
    }
    tar.into_inner()
        .and_then(|mut w| w.flush())
        .unwrap_or_else(|e| fail(e));
    let _ = fs::remove_file(&scratch);
    layer_digest.to_string()
}

/// Passes writes through while hashing them.
struct HashingWriter<W> {
    inner: W,
    hasher: Hasher,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// `left` pseudo-random (incompressible) bytes from a xorshift state.
struct RandomReader<'a> {
    state: &'a mut u64,
    left: u64,
}

impl io::Read for RandomReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = (buf.len() as u64).min(self.left) as usize;
        for chunk in buf[..n].chunks_mut(8) {
            let mut x = *self.state;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *self.state = x;
            chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
        }
        self.left -= n as u64;
        Ok(n)
    }
}
