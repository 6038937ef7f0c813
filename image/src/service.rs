//! The image service: everything about images under one directory, as the
//! agent and `armlet images` use it.
//!
//! ```text
//! <root>/content/            the content store (blobs by digest, ingest/)
//! <root>/layers/<chain id>/  unpacked layers
//! <root>/snapshots/<id>/     container root filesystems
//! <root>/meta.redb           image names → digests
//! <root>/import-ledger.json  air-gap tarballs already imported
//! ```
//!
//! Garbage collection follows the kubelet: when the file system holding the
//! root is fuller than the high threshold (85 %), images no container uses
//! are removed, oldest first, until it is below the low one (80 %). Removing a
//! name frees the blobs and layers no remaining image refers to; layers a
//! snapshot stands on are kept whatever happened to their image's name.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use oci_spec::image::ImageManifest;
use serde::Serialize;
use tokio::sync::RwLock;

use crate::digest::Digest;
use crate::import::{ImportError, ImportLedger};
use crate::layers::{self, LayersError};
use crate::meta::{ImageRecord, Images, MetaError};
use crate::platform::Platform;
use crate::pull::{Progress, PullError, PullOptions, Pulled, Puller};
use crate::reference::{Reference, ReferenceError};
use crate::registries::Registries;
use crate::registry::Registry;
use crate::snapshot::{SnapshotError, Snapshotter};
use crate::store::{Store, StoreError};

/// How an imported image's record says where it came from; GC leaves these.
const IMPORT_SOURCE: &str = "import ";

/// Age after which a temporary unpack directory is a crash's leftover.
const STALE: Duration = Duration::from_secs(3600);

/// Largest manifest, index or config read while walking images.
const MAX_JSON: u64 = 4 << 20;

/// Why an image operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The image name does not parse.
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    /// No image of that name.
    #[error("no image {0}")]
    NotFound(String),
    /// A container's root filesystem stands on the image.
    #[error("image {0} is in use by a container")]
    InUse(String),
    /// The pull failed (boxed: it is large, and rare).
    #[error(transparent)]
    Pull(Box<PullError>),
    /// The metadata database failed.
    #[error(transparent)]
    Meta(#[from] MetaError),
    /// The content store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The image's layers could not be made ready.
    #[error("{name}: {source}")]
    Layers {
        /// The image.
        name: String,
        /// What went wrong (boxed: it is large, and rare).
        source: Box<LayersError>,
    },
    /// An import failed.
    #[error("importing {}: {source}", path.display())]
    Import {
        /// The tarball.
        path: PathBuf,
        /// What went wrong.
        source: ImportError,
    },
    /// The snapshots could not be read.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    /// A file system operation failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// On what.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

impl From<PullError> for ServiceError {
    fn from(e: PullError) -> Self {
        Self::Pull(Box::new(e))
    }
}

/// Shorthand for service results.
pub type Result<T, E = ServiceError> = std::result::Result<T, E>;

/// One line of `armlet images ls`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImageSummary {
    /// The image name.
    pub name: String,
    /// The digest it points at.
    pub digest: Digest,
    /// Bytes of this platform's manifest, config and (compressed) layers, as
    /// `crictl images` counts; `None` when they are not all known here.
    pub size: Option<u64>,
    /// Where it came from.
    pub source: String,
    /// When it was recorded (seconds since the epoch).
    pub created: u64,
}

/// What an import brought.
#[derive(Debug, Default)]
pub struct ImportReport {
    /// Names recorded (or confirmed) with their digests.
    pub images: Vec<(String, Digest)>,
    /// Images in the tarballs without a name (kept by digest only).
    pub unnamed: Vec<Digest>,
    /// Tarballs or images that failed, with why.
    pub errors: Vec<String>,
}

/// When garbage collection runs and where it stops, in percent of the file
/// system's capacity in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GcPolicy {
    /// Start above this (the kubelet's `imageGCHighThresholdPercent`).
    pub high_percent: u8,
    /// Stop at or below this (`imageGCLowThresholdPercent`).
    pub low_percent: u8,
    /// Never remove an image recorded less than this long ago (the kubelet's
    /// `imageMinimumGCAge`, 2 minutes): it covers the moment between a pull
    /// and its container's start.
    pub min_age: Duration,
}

impl Default for GcPolicy {
    fn default() -> Self {
        Self {
            high_percent: 85,
            low_percent: 80,
            min_age: Duration::from_secs(120),
        }
    }
}

/// What garbage collection did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Use of the file system before, in percent.
    pub before_percent: u8,
    /// And after.
    pub after_percent: u8,
    /// The image names removed.
    pub removed: Vec<String>,
    /// Blobs deleted.
    pub blobs: usize,
    /// Layer directories deleted.
    pub layers: usize,
}

/// What a sweep deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Swept {
    /// Blobs deleted.
    pub blobs: usize,
    /// Layer directories deleted.
    pub layers: usize,
}

/// Images under one root directory.
pub struct ImageService {
    root: PathBuf,
    store: Store,
    meta: Images,
    snapshots: Snapshotter,
    puller: Puller,
    platform: Platform,
    /// Pulls and imports hold it shared, sweeps exclusively: a sweep must not
    /// delete the blobs of an image whose name is not recorded yet.
    sweep_lock: Arc<RwLock<()>>,
}

impl std::fmt::Debug for ImageService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageService")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl ImageService {
    /// Opens (creating) the image directory at `root`, pulling through
    /// `registries`, for this node's platform.
    pub fn open(root: &Path, registries: Registries) -> Result<Self> {
        fs::create_dir_all(root).map_err(|source| ServiceError::Io {
            what: "creating",
            path: root.to_path_buf(),
            source,
        })?;
        // Snapshots record their layers by absolute path: one spelling of the
        // root (no symlink, no relative path) keeps the sweep's comparisons true.
        let root = &fs::canonicalize(root).map_err(|source| ServiceError::Io {
            what: "resolving",
            path: root.to_path_buf(),
            source,
        })?;
        let store = Store::open(root.join("content"))?;
        let meta = Images::open(&root.join("meta.redb"))?;
        let puller = Puller {
            registry: Registry::from_system(),
            registries,
            store: store.clone(),
            layer_root: root.join("layers"),
        };
        Ok(Self {
            root: root.to_path_buf(),
            store,
            meta,
            snapshots: Snapshotter::new(root.join("snapshots")),
            puller,
            platform: Platform::host(),
            sweep_lock: Arc::default(),
        })
    }

    /// Pulls and unpacks images for `platform` instead of this node's (tests,
    /// and preparing images for another board).
    pub fn with_platform(mut self, platform: Platform) -> Self {
        self.platform = platform;
        self
    }

    /// The content store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The snapshotter for container root filesystems.
    pub fn snapshots(&self) -> &Snapshotter {
        &self.snapshots
    }

    /// Where layers are unpacked.
    pub fn layer_root(&self) -> &Path {
        &self.puller.layer_root
    }

    /// The platform images are pulled for.
    pub fn platform(&self) -> &Platform {
        &self.platform
    }

    /// The normalised name for what a user typed (`busybox` →
    /// `docker.io/library/busybox:latest`).
    pub fn normalise(name: &str) -> Result<String> {
        Ok(name.parse::<Reference>()?.to_string())
    }

    /// Pulls `reference` (with `options.platform` replaced by the service's)
    /// and records its name.
    pub async fn pull(
        &self,
        reference: &str,
        options: &PullOptions,
        progress: Arc<dyn Progress>,
    ) -> Result<(String, Pulled)> {
        let reference: Reference = reference.parse()?;
        let name = reference.to_string();
        let _shared = self.sweep_lock.read().await;
        let options = PullOptions {
            platform: self.platform.clone(),
            ..options.clone()
        };
        let pulled = self.puller.pull(&reference, &options, progress).await?;
        self.meta.put(
            &name,
            &ImageRecord {
                digest: pulled.digest,
                source: format!("pull {}", pulled.location),
                created: now(),
            },
        )?;
        Ok((name, pulled))
    }

    /// Imports a tarball, or every tarball in a directory, remembering what was
    /// imported so the next call costs a `stat` per file. Images new to the
    /// store get their layers unpacked for this node's platform (an image
    /// for other platforms only is kept, not unpacked).
    pub async fn import(&self, path: &Path) -> Result<ImportReport> {
        let _shared = self.sweep_lock.read().await;
        let mut ledger = ImportLedger::open(self.root.join("import-ledger.json"));
        let (found, failed) = if path.is_dir() {
            ledger.import_dir(&self.store, path)
        } else {
            match ledger.import_file(&self.store, path) {
                Ok(images) => (images, Vec::new()),
                Err(source) => {
                    return Err(ServiceError::Import {
                        path: path.to_path_buf(),
                        source,
                    });
                }
            }
        };
        let mut report = ImportReport {
            errors: failed
                .into_iter()
                .map(|(p, e)| format!("{}: {e}", p.display()))
                .collect(),
            ..ImportReport::default()
        };
        for image in found {
            // An unnamed image is kept under its digest, or the next sweep
            // would take it.
            let digest_name = [image.digest.to_string()];
            let named = !image.names.is_empty();
            let names: &[String] = if !named {
                report.unnamed.push(image.digest);
                &digest_name
            } else {
                &image.names
            };
            for name in names {
                let known = self.meta.get(name)?;
                // Unchanged names cost a read, not a database commit: this is
                // what keeps a restart with everything imported in milliseconds.
                if known.as_ref().is_some_and(|r| r.digest == image.digest) {
                    if named {
                        report.images.push((name.clone(), image.digest));
                    }
                    continue;
                }
                match layers::unpacked_layers(
                    &self.store,
                    self.layer_root(),
                    &image.digest,
                    &self.platform,
                ) {
                    Ok(_) | Err(LayersError::Platform(_)) => {}
                    Err(e) => {
                        report.errors.push(format!("{name}: {e}"));
                        continue;
                    }
                }
                self.meta.put(
                    name,
                    &ImageRecord {
                        digest: image.digest,
                        source: format!("{IMPORT_SOURCE}{}", path.display()),
                        created: now(),
                    },
                )?;
                if named {
                    report.images.push((name.clone(), image.digest));
                }
            }
        }
        Ok(report)
    }

    /// The record of image `name` (as typed; normalised here).
    pub fn get(&self, name: &str) -> Result<ImageRecord> {
        let normal = Self::normalise(name).unwrap_or_else(|_| name.to_owned());
        self.meta
            .get(&normal)?
            .ok_or_else(|| ServiceError::NotFound(normal))
    }

    /// Every image, sorted by name.
    pub fn list(&self) -> Result<Vec<ImageSummary>> {
        Ok(self
            .meta
            .list()?
            .into_iter()
            .map(|(name, record)| ImageSummary {
                size: self.size(&record.digest),
                name,
                digest: record.digest,
                source: record.source,
                created: record.created,
            })
            .collect())
    }

    fn size(&self, digest: &Digest) -> Option<u64> {
        let (manifest_digest, manifest) =
            layers::manifest_for(&self.store, digest, &self.platform).ok()?;
        let manifest_size = fs::metadata(self.store.blob_path(&manifest_digest))
            .ok()?
            .len();
        // Sizes come from the manifest: hostile ones must not overflow.
        Some(manifest.layers().iter().fold(
            manifest_size.saturating_add(manifest.config().size()),
            |a, l| a.saturating_add(l.size()),
        ))
    }

    /// What `armlet images inspect` shows: the record, this platform's
    /// manifest and config, and each layer with whether it is unpacked.
    pub fn inspect(&self, name: &str) -> Result<serde_json::Value> {
        let record = self.get(name)?;
        let normal = Self::normalise(name).unwrap_or_else(|_| name.to_owned());
        let layers_err = |source| ServiceError::Layers {
            name: normal.clone(),
            source: Box::new(source),
        };
        let (manifest_digest, manifest) =
            layers::manifest_for(&self.store, &record.digest, &self.platform)
                .map_err(layers_err)?;
        let plan = layers::plan(&self.store, &manifest_digest, &manifest, &self.platform)
            .map_err(layers_err)?;
        let config: serde_json::Value = self.store.read_json(&plan.config, MAX_JSON)?;
        let layers: Vec<serde_json::Value> = plan
            .layers
            .iter()
            .map(|l| {
                serde_json::json!({
                    "digest": l.blob,
                    "size": l.size,
                    "diffID": l.diff_id,
                    "chainID": l.chain_id,
                    "unpacked": layers::layer_dir(self.layer_root(), l).is_dir(),
                })
            })
            .collect();
        Ok(serde_json::json!({
            "name": normal,
            "digest": record.digest,
            "source": record.source,
            "created": record.created,
            "platform": self.platform.to_string(),
            "manifest": manifest_digest,
            "size": self.size(&record.digest),
            "layers": layers,
            "config": config,
        }))
    }

    /// The layer directories of image `name`, unpacking any that are not yet
    /// (a container's snapshot stands on them).
    pub fn layers(&self, name: &str) -> Result<Vec<PathBuf>> {
        let record = self.get(name)?;
        layers::unpacked_layers(
            &self.store,
            self.layer_root(),
            &record.digest,
            &self.platform,
        )
        .map_err(|source| ServiceError::Layers {
            name: name.to_owned(),
            source: Box::new(source),
        })
    }

    /// Removes image `name` and whatever only it used. Refused while a
    /// snapshot stands on its top layer.
    pub async fn remove(&self, name: &str) -> Result<Swept> {
        let record = self.get(name)?;
        let normal = Self::normalise(name).unwrap_or_else(|_| name.to_owned());
        let _exclusive = self.sweep_lock.write().await;
        let in_use = self.snapshots.layers_in_use()?;
        if self
            .top_layer(&record.digest)
            .is_some_and(|l| in_use.contains(&l))
        {
            return Err(ServiceError::InUse(normal));
        }
        self.meta.remove(&normal)?;
        self.sweep(&in_use)
    }

    /// The top layer directory of image `digest` on this platform.
    fn top_layer(&self, digest: &Digest) -> Option<PathBuf> {
        let (md, manifest) = layers::manifest_for(&self.store, digest, &self.platform).ok()?;
        let plan = layers::plan(&self.store, &md, &manifest, &self.platform).ok()?;
        plan.layers
            .last()
            .map(|l| layers::layer_dir(self.layer_root(), l))
    }

    /// Garbage collection by disk use (see the module doc). `in_use` holds the
    /// names or digests of images the node's pods need; they are never removed,
    /// nor are images a snapshot stands on.
    pub async fn gc(&self, policy: &GcPolicy, in_use: &BTreeSet<String>) -> Result<GcReport> {
        let before = disk_use_percent(&self.root)?;
        let mut report = GcReport {
            before_percent: before,
            after_percent: before,
            ..GcReport::default()
        };
        if before < policy.high_percent {
            return Ok(report);
        }
        let newest = now().saturating_sub(policy.min_age.as_secs());
        let _exclusive = self.sweep_lock.write().await;
        let snapshot_layers = self.snapshots.layers_in_use()?;
        let mut candidates: Vec<(String, ImageRecord)> = self
            .meta
            .list()?
            .into_iter()
            .filter(|(name, record)| {
                // Air-gap images are pinned, as in k3s: an offline node
                // cannot pull them back.
                !record.source.starts_with(IMPORT_SOURCE)
                    && record.created <= newest
                    && !in_use.contains(name)
                    && !in_use.contains(&record.digest.to_string())
                    && !self
                        .top_layer(&record.digest)
                        .is_some_and(|l| snapshot_layers.contains(&l))
            })
            .collect();
        // Oldest first, as the kubelet frees the least recently used.
        candidates.sort_by_key(|(name, record)| (record.created, name.clone()));
        for (name, _) in candidates {
            if report.after_percent <= policy.low_percent {
                break;
            }
            self.meta.remove(&name)?;
            let swept = self.sweep(&snapshot_layers)?;
            report.removed.push(name);
            report.blobs += swept.blobs;
            report.layers += swept.layers;
            report.after_percent = disk_use_percent(&self.root)?;
        }
        Ok(report)
    }

    /// Deletes blobs and layer directories no recorded image refers to and no
    /// snapshot stands on. The caller holds the sweep lock.
    fn sweep(&self, snapshot_layers: &BTreeSet<PathBuf>) -> Result<Swept> {
        let mut blobs = BTreeSet::new();
        let mut layer_dirs = BTreeSet::new();
        for (_, record) in self.meta.list()? {
            self.mark(&record.digest, &mut blobs, &mut layer_dirs, 0)?;
        }
        let mut swept = Swept::default();
        // Partial downloads nobody resumed for a day.
        self.store.gc_ingest(Duration::from_secs(24 * 3600))?;
        for (digest, _) in self.store.list()? {
            if !blobs.contains(&digest) && self.store.delete(&digest)? {
                swept.blobs += 1;
            }
        }
        let root = self.layer_root();
        let entries = match fs::read_dir(root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(swept),
            Err(source) => {
                return Err(ServiceError::Io {
                    what: "listing",
                    path: root.to_path_buf(),
                    source,
                });
            }
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            // Leftovers of a sweep or an unpack that a crash interrupted. An
            // unpack in progress holds the sweep lock shared, so none runs in
            // this process; one in another process is older than an hour only
            // if it is stuck.
            let stale = name.ends_with(".tmp-gc")
                || (name.contains(".tmp-")
                    && entry
                        .metadata()
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| t.elapsed().ok())
                        .is_some_and(|age| age > STALE));
            if stale {
                let _ = fs::remove_dir_all(&path);
                continue;
            }
            // Only finished layers (64 hex digits).
            if name.len() != 64 || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
                continue;
            }
            if layer_dirs.contains(&path) || snapshot_layers.contains(&path) {
                continue;
            }
            // Renamed away first: a half-deleted layer is never taken for an
            // unpacked one.
            let doomed = path.with_file_name(format!("{name}.tmp-gc"));
            // A leftover of the same name from a crashed sweep is in the way.
            let _ = fs::remove_dir_all(&doomed);
            let io = |what, source| ServiceError::Io {
                what,
                path: path.clone(),
                source,
            };
            fs::rename(&path, &doomed).map_err(|e| io("renaming", e))?;
            fs::remove_dir_all(&doomed).map_err(|e| io("removing", e))?;
            swept.layers += 1;
        }
        Ok(swept)
    }

    /// Marks what image (or index) `digest` refers to: every manifest in the
    /// store under it, their configs and layers, and the layer directories of
    /// those whose config is here. A document that is missing or malformed
    /// refers to nothing more; a read that fails otherwise stops the sweep
    /// (deleting on a guess could take a live image's layers).
    fn mark(
        &self,
        digest: &Digest,
        blobs: &mut BTreeSet<Digest>,
        layer_dirs: &mut BTreeSet<PathBuf>,
        depth: u8,
    ) -> Result<()> {
        if !blobs.insert(*digest) || depth > 4 {
            return Ok(());
        }
        let Some(value) = self.read_for_mark::<serde_json::Value>(digest)? else {
            return Ok(());
        };
        if let Some(children) = value.get("manifests").and_then(|m| m.as_array()) {
            for child in children {
                if let Some(d) = child
                    .get("digest")
                    .and_then(|d| d.as_str())
                    .and_then(|d| d.parse().ok())
                {
                    self.mark(&d, blobs, layer_dirs, depth + 1)?;
                }
            }
            return Ok(());
        }
        let Ok(manifest) = serde_json::from_value::<ImageManifest>(value) else {
            return Ok(());
        };
        let Ok((config, _)) = layers::config_of(digest, &manifest) else {
            return Ok(());
        };
        blobs.insert(config);
        for layer in manifest.layers() {
            if let Ok(d) = layer.digest().as_ref().parse() {
                blobs.insert(d);
            }
        }
        let Some(config) = self.read_for_mark::<oci_spec::image::ImageConfiguration>(&config)?
        else {
            return Ok(());
        };
        let diff_ids: Vec<Digest> = config
            .rootfs()
            .diff_ids()
            .iter()
            .filter_map(|d| d.parse().ok())
            .collect();
        for chain_id in layers::chain_ids(&diff_ids) {
            layer_dirs.insert(self.layer_root().join(chain_id.hex()));
        }
        Ok(())
    }

    /// A JSON blob for marking: `None` when absent or not the JSON expected.
    fn read_for_mark<T: serde::de::DeserializeOwned>(&self, digest: &Digest) -> Result<Option<T>> {
        match self.store.read_json::<T>(digest, MAX_JSON) {
            Ok(v) => Ok(Some(v)),
            Err(
                StoreError::NotFound(_) | StoreError::Json { .. } | StoreError::TooLarge { .. },
            ) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

/// Percent of the file system holding `path` in use, as the kubelet counts
/// it: capacity minus what is available to unprivileged users.
pub fn disk_use_percent(path: &Path) -> Result<u8> {
    let stat = nix::sys::statvfs::statvfs(path).map_err(|e| ServiceError::Io {
        what: "statvfs",
        path: path.to_path_buf(),
        source: e.into(),
    })?;
    let blocks = stat.blocks() as u128;
    if blocks == 0 {
        return Ok(0);
    }
    let used = blocks.saturating_sub(stat.blocks_available() as u128);
    Ok(((used * 100).div_ceil(blocks)).min(100) as u8)
}
