//! Air-gap import: image tarballs (`docker save`, `skopeo copy ...
//! docker-archive:`/`oci-archive:`, `ctr images export`) into the content store,
//! as k3s imports `/var/lib/rancher/k3s/agent/images/*.tar`.
//!
//! One streaming pass over the (possibly gzip- or zstd-compressed) tarball:
//! blobs are written to the store as they come, verified against their digest;
//! the small index files are kept in memory; nothing is unpacked here. Two
//! layouts are understood:
//!
//! - **OCI image layout**: `oci-layout`, `index.json`, `blobs/sha256/<hex>`. The
//!   image names come from the index's `org.opencontainers.image.ref.name` or
//!   `io.containerd.image.name` annotations.
//! - **docker-archive**: `manifest.json` listing each image's `Config`,
//!   `Layers` and `RepoTags`. Docker 25+ points these at `blobs/sha256/<hex>`;
//!   older Docker at `<id>/layer.tar` and `<hex>.json`, whose digests are
//!   computed while storing them. An OCI image manifest is then written for
//!   each image, as containerd does when it imports one.
//!
//! [`ImportLedger`] remembers tarballs already imported (by path, size,
//! modification time and inode), so a restart with a gigabyte of tarballs costs
//! a `stat` per file, not a re-read (k3s#9242).

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::digest::{Digest, Hasher};
use crate::store::{Ingesting, Store, StoreError, Waited};
use crate::unpack::Compression;

/// Largest index file read into memory (`index.json`, `manifest.json`,
/// configs of legacy archives): they are small; a huge one is hostile.
const MAX_INDEX_FILE: u64 = 4 << 20;

/// Media type of the manifests written for docker-archive images.
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Media type of an image config.
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";

/// Why a tarball could not be imported.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// Reading the tarball failed (truncated, not a tar, bad compression).
    #[error("reading the archive: {0}")]
    Read(#[from] io::Error),
    /// The store refused a blob (digest mismatch, disk full...).
    #[error("storing {what}: {source}")]
    Store {
        /// Which entry.
        what: String,
        /// The store's error.
        source: StoreError,
    },
    /// The archive is neither an OCI layout nor a docker-archive, or its index
    /// files are malformed; the message says what is wrong.
    #[error("not an image archive: {0}")]
    Format(String),
}

/// One image found in an archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportedImage {
    /// Its names (`docker.io/library/busybox:1.36`, normalised); empty for an
    /// unnamed image.
    pub names: Vec<String>,
    /// The digest of its manifest (or index) in the store.
    pub digest: Digest,
}

/// Imports one image tarball into `store`; returns the images it holds.
pub fn import(store: &Store, archive: impl Read) -> Result<Vec<ImportedImage>, ImportError> {
    let (_, decoded) = crate::unpack::decompress(archive)?;
    let mut tar = tar::Archive::new(decoded);
    let mut small: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    // Legacy docker-archive paths → the digest their content turned out to have.
    let mut by_path: BTreeMap<String, Digest> = BTreeMap::new();
    for entry in tar.entries()? {
        let mut entry = entry?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry
            .path()?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_owned();
        let size = entry.header().size()?;
        if let Some(hex_digits) = path.strip_prefix("blobs/sha256/") {
            let digest: Digest = format!("sha256:{hex_digits}")
                .parse()
                .map_err(|_| ImportError::Format(format!("{path} is not named by a digest")))?;
            store_blob(store, &digest, size, &mut entry, &path)?;
        } else if matches!(
            path.as_str(),
            "index.json" | "manifest.json" | "oci-layout" | "repositories"
        ) || (path.ends_with(".json") && !path.contains('/'))
        {
            if size > MAX_INDEX_FILE {
                return Err(ImportError::Format(format!("{path} is {size} bytes")));
            }
            let mut bytes = Vec::with_capacity(size as usize);
            entry.read_to_end(&mut bytes)?;
            small.insert(path, bytes);
        } else if path.ends_with(".tar") || path.ends_with("/layer.tar") {
            let digest = store_unnamed(store, size, &mut entry, &path)?;
            by_path.insert(path, digest);
        }
    }
    if let Some(index) = small.get("index.json") {
        if small.contains_key("oci-layout") && !small.contains_key("manifest.json") {
            let images = oci_layout_images(index)?;
            if let Some(missing) = images.iter().find(|i| !store.has(&i.digest)) {
                return Err(ImportError::Format(format!(
                    "index.json names {} but the archive does not hold it",
                    missing.digest
                )));
            }
            return Ok(images);
        }
    }
    let Some(manifest) = small.get("manifest.json") else {
        return Err(ImportError::Format(
            "no index.json with oci-layout and no manifest.json".into(),
        ));
    };
    docker_archive_images(store, manifest, &small, &by_path)
}

/// Streams one blob into the store, verified against `digest`.
fn store_blob(
    store: &Store,
    digest: &Digest,
    size: u64,
    content: &mut impl Read,
    what: &str,
) -> Result<(), ImportError> {
    let store_err = |source| ImportError::Store {
        what: what.to_owned(),
        source,
    };
    loop {
        match store.writer(digest, size).map_err(store_err)? {
            Ingesting::Present => {
                // Skip its bytes: the archive is read in one pass.
                io::copy(content, &mut io::sink())?;
                return Ok(());
            }
            Ingesting::Busy => match store
                .wait_for(digest, Duration::from_secs(600))
                .map_err(store_err)?
            {
                Waited::Present => {
                    io::copy(content, &mut io::sink())?;
                    return Ok(());
                }
                Waited::Idle => continue,
            },
            Ingesting::Started(mut ingest) => {
                // A resumed ingest already holds a prefix: skip what it has.
                let have = ingest.offset();
                io::copy(&mut content.take(have), &mut io::sink())?;
                if let Err(e) = io::copy(content, &mut *ingest) {
                    return Err(store_err(ingest.write_error(e)));
                }
                ingest.commit().map_err(store_err)?;
                return Ok(());
            }
        }
    }
}

/// Stores content whose digest is not known in advance (a legacy layer.tar):
/// hashes it into a scratch file, then stores that.
fn store_unnamed(
    store: &Store,
    size: u64,
    content: &mut impl Read,
    what: &str,
) -> Result<Digest, ImportError> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let scratch = store
        .root()
        .join(format!("import-{}-{n}.tmp", std::process::id()));
    let result = (|| {
        let mut file = fs::File::create(&scratch)?;
        let mut hasher = Hasher::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut written = 0u64;
        loop {
            let n = content.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            file.write_all(&buf[..n])?;
            written += n as u64;
        }
        if written != size {
            return Err(ImportError::Format(format!(
                "{what}: {written} bytes, the header says {size}"
            )));
        }
        let digest = hasher.finish();
        let mut file = fs::File::open(&scratch)?;
        store_blob(store, &digest, size, &mut file, what)?;
        Ok(digest)
    })();
    let _ = fs::remove_file(&scratch);
    result
}

#[derive(Deserialize)]
struct OciIndex {
    #[serde(default)]
    manifests: Vec<OciDescriptor>,
}

#[derive(Deserialize)]
struct OciDescriptor {
    digest: Digest,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

fn oci_layout_images(index: &[u8]) -> Result<Vec<ImportedImage>, ImportError> {
    let index: OciIndex = serde_json::from_slice(index)
        .map_err(|e| ImportError::Format(format!("index.json: {e}")))?;
    Ok(index
        .manifests
        .into_iter()
        .map(|m| {
            let name = m
                .annotations
                .get("io.containerd.image.name")
                .or_else(|| m.annotations.get("org.opencontainers.image.ref.name"));
            ImportedImage {
                names: name.and_then(|n| normalise(n)).into_iter().collect(),
                digest: m.digest,
            }
        })
        .collect())
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifestEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

fn docker_archive_images(
    store: &Store,
    manifest: &[u8],
    small: &BTreeMap<String, Vec<u8>>,
    by_path: &BTreeMap<String, Digest>,
) -> Result<Vec<ImportedImage>, ImportError> {
    let entries: Vec<DockerManifestEntry> = serde_json::from_slice(manifest)
        .map_err(|e| ImportError::Format(format!("manifest.json: {e}")))?;
    let mut images = Vec::new();
    for entry in entries {
        // The config: a blob already stored, or a legacy `<hex>.json` kept in memory.
        let config = match blob_digest(&entry.config) {
            Some(d) => d,
            None => {
                let bytes = small.get(&entry.config).ok_or_else(|| {
                    ImportError::Format(format!(
                        "manifest.json names {} but it is missing",
                        entry.config
                    ))
                })?;
                let digest = Digest::of(bytes);
                store
                    .put_bytes(&digest, bytes)
                    .map_err(|source| ImportError::Store {
                        what: entry.config.clone(),
                        source,
                    })?;
                digest
            }
        };
        let config_size = fs::metadata(store.blob_path(&config))?.len();
        let mut layers = Vec::new();
        for layer in &entry.layers {
            let digest = blob_digest(layer)
                .or_else(|| by_path.get(layer).copied())
                .ok_or_else(|| {
                    ImportError::Format(format!("manifest.json names {layer} but it is missing"))
                })?;
            let file = store
                .open_blob(&digest)
                .map_err(|source| ImportError::Store {
                    what: layer.clone(),
                    source,
                })?;
            let size = file.metadata()?.len();
            let mut prefix = [0u8; 4];
            let n = (&file).take(4).read(&mut prefix)?;
            let media_type = match Compression::detect(&prefix[..n]) {
                Compression::None => "application/vnd.oci.image.layer.v1.tar",
                Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
                Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
            };
            layers.push(serde_json::json!({
                "mediaType": media_type, "digest": digest, "size": size,
            }));
        }
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": { "mediaType": OCI_CONFIG, "digest": config, "size": config_size },
            "layers": layers,
        });
        let bytes = serde_json::to_vec(&manifest)
            .map_err(|e| ImportError::Format(format!("writing a manifest: {e}")))?;
        let digest = Digest::of(&bytes);
        store
            .put_bytes(&digest, &bytes)
            .map_err(|source| ImportError::Store {
                what: "the image manifest".into(),
                source,
            })?;
        images.push(ImportedImage {
            names: entry
                .repo_tags
                .unwrap_or_default()
                .iter()
                .filter_map(|t| normalise(t))
                .collect(),
            digest,
        });
    }
    Ok(images)
}

/// `blobs/sha256/<hex>` → its digest.
fn blob_digest(path: &str) -> Option<Digest> {
    let hex_digits = path
        .trim_start_matches("./")
        .strip_prefix("blobs/sha256/")?;
    format!("sha256:{hex_digits}").parse().ok()
}

/// A name as the kubelet will ask for it; names that are not references are
/// dropped (a bare tag in an OCI layout's ref.name, say).
fn normalise(name: &str) -> Option<String> {
    name.parse::<crate::reference::Reference>()
        .ok()
        .map(|r| r.to_string())
}

/// What is known of one tarball, to tell whether it changed since its import.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Seen {
    size: u64,
    mtime_ns: i128,
    inode: u64,
    images: Vec<ImportedImage>,
}

/// The tarballs already imported, kept in a JSON file written atomically.
#[derive(Debug)]
pub struct ImportLedger {
    path: PathBuf,
    seen: BTreeMap<PathBuf, Seen>,
}

impl ImportLedger {
    /// Loads the ledger at `path`; a missing or unreadable one is empty (the
    /// worst case is importing again, which the store makes cheap).
    pub fn open(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        let seen = fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Self { path, seen }
    }

    /// Imports every `*.tar`, `*.tar.gz`, `*.tgz` and `*.tar.zst` in `dir` not
    /// imported before in its current form; returns the images of every
    /// tarball in the directory (remembered or new) and the errors of those
    /// that failed, which are retried next time.
    pub fn import_dir(
        &mut self,
        store: &Store,
        dir: &Path,
    ) -> (Vec<ImportedImage>, Vec<(PathBuf, ImportError)>) {
        let mut images = Vec::new();
        let mut errors = Vec::new();
        let mut files: Vec<PathBuf> = match fs::read_dir(dir) {
            Ok(entries) => entries.flatten().map(|e| e.path()).collect(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                errors.push((dir.to_path_buf(), ImportError::Read(e)));
                Vec::new()
            }
        };
        files.retain(|p| {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default();
            [".tar", ".tar.gz", ".tgz", ".tar.zst"]
                .iter()
                .any(|s| name.ends_with(s))
        });
        files.sort();
        let mut changed = false;
        for file in files {
            changed |= self.import_one(store, file, &mut images, &mut errors);
        }
        if changed {
            if let Err(e) = self.save() {
                errors.push((self.path.clone(), ImportError::Read(e)));
            }
        }
        (images, errors)
    }

    /// Imports one tarball unless it was imported before in its current form
    /// (named on the command line rather than found in the images directory).
    pub fn import_file(
        &mut self,
        store: &Store,
        file: &Path,
    ) -> Result<Vec<ImportedImage>, ImportError> {
        let (mut images, mut errors) = (Vec::new(), Vec::new());
        if self.import_one(store, file.to_path_buf(), &mut images, &mut errors) {
            self.save()?;
        }
        match errors.pop() {
            Some((_, e)) => Err(e),
            None => Ok(images),
        }
    }

    /// One tarball: remembered, or imported and remembered. Returns whether the
    /// ledger changed.
    fn import_one(
        &mut self,
        store: &Store,
        file: PathBuf,
        images: &mut Vec<ImportedImage>,
        errors: &mut Vec<(PathBuf, ImportError)>,
    ) -> bool {
        let meta = match fs::metadata(&file) {
            Ok(m) => m,
            Err(e) => {
                errors.push((file, ImportError::Read(e)));
                return false;
            }
        };
        let stamp = (
            meta.len(),
            meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128,
            meta.ino(),
        );
        if let Some(seen) = self.seen.get(&file) {
            // Unchanged, and its images still in the store (an image removed
            // since, by hand or by GC, comes back from its tarball).
            if (seen.size, seen.mtime_ns, seen.inode) == stamp
                && seen.images.iter().all(|i| store.has(&i.digest))
            {
                images.extend(seen.images.iter().cloned());
                return false;
            }
        }
        match fs::File::open(&file)
            .map_err(ImportError::Read)
            .and_then(|f| import(store, f))
        {
            Ok(found) => {
                images.extend(found.iter().cloned());
                self.seen.insert(
                    file,
                    Seen {
                        size: stamp.0,
                        mtime_ns: stamp.1,
                        inode: stamp.2,
                        images: found,
                    },
                );
                true
            }
            Err(e) => {
                errors.push((file, e));
                false
            }
        }
    }

    fn save(&self) -> io::Result<()> {
        let bytes = serde_json::to_vec_pretty(&self.seen).map_err(io::Error::other)?;
        let temp = self.path.with_extension("tmp");
        let mut file = fs::File::create(&temp)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        fs::rename(&temp, &self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tarball built in memory: (path, content) in order.
    fn tarball(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, content) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_size(content.len() as u64);
            header.set_mode(0o644);
            header.set_entry_type(tar::EntryType::Regular);
            builder.append_data(&mut header, path, *content).unwrap();
        }
        builder.into_inner().unwrap()
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    use crate::testutil::TempDir as Scratch;

    fn blob_name(bytes: &[u8]) -> String {
        format!("blobs/sha256/{}", Digest::of(bytes).hex())
    }

    #[test]
    fn an_oci_layout_is_imported_with_its_names() {
        let s = Scratch::new("oci");
        let store = Store::open(s.path().join("store")).unwrap();
        let layer = gzip(&tarball(&[("hello", b"hi\n")]));
        let config =
            br#"{"architecture":"arm64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
        let manifest = format!(
            r#"{{"schemaVersion":2,"config":{{"digest":"{}","size":{}}},"layers":[{{"digest":"{}","size":{}}}]}}"#,
            Digest::of(config),
            config.len(),
            Digest::of(&layer),
            layer.len()
        );
        let index = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"digest":"{}","size":{},"annotations":{{"io.containerd.image.name":"docker.io/library/app:1","org.opencontainers.image.ref.name":"1"}}}}]}}"#,
            Digest::of(manifest.as_bytes()),
            manifest.len()
        );
        let archive = tarball(&[
            ("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#),
            ("index.json", index.as_bytes()),
            (&blob_name(config), config),
            (&blob_name(&layer), &layer),
            (&blob_name(manifest.as_bytes()), manifest.as_bytes()),
        ]);
        // Compressed as `docker save | gzip` users ship them.
        let images = import(&store, &gzip(&archive)[..]).unwrap();
        assert_eq!(
            images,
            [ImportedImage {
                names: vec!["docker.io/library/app:1".into()],
                digest: Digest::of(manifest.as_bytes()),
            }]
        );
        for blob in [&config[..], &layer, manifest.as_bytes()] {
            assert!(store.has(&Digest::of(blob)));
        }
        // Again: everything is present already, nothing breaks.
        assert_eq!(import(&store, &archive[..]).unwrap(), images);
    }

    #[test]
    fn a_legacy_docker_archive_gets_a_manifest() {
        let s = Scratch::new("docker");
        let store = Store::open(s.path().join("store")).unwrap();
        let layer = tarball(&[("etc/hostname", b"x\n")]);
        let config = br#"{"architecture":"arm","variant":"v7","os":"linux"}"#;
        let config_name = format!("{}.json", Digest::of(config).hex());
        let manifest_json = format!(
            r#"[{{"Config":"{config_name}","RepoTags":["busybox:1.36","not a name"],"Layers":["0123abcd/layer.tar"]}}]"#
        );
        let archive = tarball(&[
            (&config_name, config),
            ("0123abcd/layer.tar", &layer),
            ("0123abcd/VERSION", b"1.0"),
            ("manifest.json", manifest_json.as_bytes()),
            ("repositories", b"{}"),
        ]);
        let images = import(&store, &archive[..]).unwrap();
        assert_eq!(images.len(), 1);
        assert_eq!(images[0].names, ["docker.io/library/busybox:1.36"]);
        let manifest: serde_json::Value = store.read_json(&images[0].digest, 1 << 20).unwrap();
        assert_eq!(manifest["config"]["digest"], Digest::of(config).to_string());
        assert_eq!(
            manifest["layers"][0]["digest"],
            Digest::of(&layer).to_string()
        );
        assert_eq!(
            manifest["layers"][0]["mediaType"],
            "application/vnd.oci.image.layer.v1.tar"
        );
        assert!(store.has(&Digest::of(&layer)));
    }

    #[test]
    fn broken_archives_are_refused_clearly() {
        let s = Scratch::new("broken");
        let store = Store::open(s.path().join("store")).unwrap();
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (tarball(&[("hello.txt", b"x")]), "no index.json"),
            (tarball(&[("manifest.json", b"{not json")]), "manifest.json"),
            (
                tarball(&[("manifest.json", br#"[{"Config":"c.json","Layers":[]}]"#)]),
                "c.json but it is missing",
            ),
            (
                tarball(&[("blobs/sha256/abcd", b"x")]),
                "is not named by a digest",
            ),
            (
                // Content that does not match its name.
                tarball(&[(&blob_name(b"other"), b"tampered")]),
                "storing",
            ),
            (b"garbage that is no tar at all".repeat(20), ""),
        ];
        for (archive, want) in cases {
            let err = import(&store, &archive[..]).unwrap_err().to_string();
            assert!(err.contains(want), "{want:?}: {err}");
        }
        assert!(!store.has(&Digest::of(b"tampered")));
    }

    #[test]
    fn the_ledger_skips_tarballs_already_imported() {
        let s = Scratch::new("ledger");
        let store = Store::open(s.path().join("store")).unwrap();
        let dir = s.path().join("images");
        fs::create_dir_all(&dir).unwrap();
        let config = br#"{"os":"linux"}"#;
        let name = format!("{}.json", Digest::of(config).hex());
        let manifest = format!(r#"[{{"Config":"{name}","RepoTags":["app:v1"],"Layers":[]}}]"#);
        fs::write(
            dir.join("app.tar"),
            tarball(&[(&name, config), ("manifest.json", manifest.as_bytes())]),
        )
        .unwrap();
        fs::write(dir.join("notes.txt"), "not an image").unwrap();
        fs::write(dir.join("broken.tar"), "garbage").unwrap();
        let ledger_path = s.path().join("imported.json");
        let mut ledger = ImportLedger::open(&ledger_path);
        let (images, errors) = ledger.import_dir(&store, &dir);
        assert_eq!(images.len(), 1);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].0.ends_with("broken.tar"));
        // A restart: the remembered tarball is not read again (its blobs being
        // gone from the store proves it), the broken one is retried.
        let config_digest = Digest::of(config);
        store.delete(&config_digest).unwrap();
        let mut ledger = ImportLedger::open(&ledger_path);
        let (again, errors) = ledger.import_dir(&store, &dir);
        assert_eq!(again, images);
        assert_eq!(errors.len(), 1);
        assert!(!store.has(&config_digest));
        // A changed tarball is imported again.
        fs::write(
            dir.join("app.tar"),
            tarball(&[
                (&name, config),
                ("manifest.json", manifest.as_bytes()),
                ("x", b""),
            ]),
        )
        .unwrap();
        let (_, _) = ledger.import_dir(&store, &dir);
        assert!(store.has(&config_digest));
    }
}
