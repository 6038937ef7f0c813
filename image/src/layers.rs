//! From an image in the content store to the layer directories a snapshot
//! stacks: the manifest for this node's platform, its config checked, each layer
//! unpacked once and verified against the config's `diff_ids`.
//!
//! Unpacked layers are keyed by their **chain id** (OCI: the chain id of the first
//! layer is its diff_id; each next one is `sha256(<parent chain id> + " " +
//! <diff_id>)`), as containerd keys its snapshots: one directory per distinct
//! stack prefix, shared by every image that starts with the same layers.

use std::fs;
use std::path::{Path, PathBuf};

use oci_spec::image::{ImageConfiguration, ImageManifest};

use crate::digest::Digest;
use crate::platform::{self, Platform, PlatformError};
use crate::store::{Store, StoreError};
use crate::unpack::{UnpackError, UnpackOptions, unpack_into_new};

/// Largest manifest, index or config read (they are small JSON documents).
const MAX_JSON: u64 = 4 << 20;

/// Why an image's layers could not be made ready.
#[derive(Debug, thiserror::Error)]
pub enum LayersError {
    /// A blob is missing or unreadable.
    #[error("{what}: {source}")]
    Store {
        /// Which blob.
        what: String,
        /// The store's error.
        source: StoreError,
    },
    /// The manifest, index or config is malformed.
    #[error("{what} {digest} is not valid: {reason}")]
    Invalid {
        /// Which document.
        what: &'static str,
        /// Its digest.
        digest: Digest,
        /// What is wrong.
        reason: String,
    },
    /// The layer directory could not be made.
    #[error("creating {path}: {source}")]
    Io {
        /// The directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// No image for this node's platform.
    #[error(transparent)]
    Platform(#[from] PlatformError),
    /// A layer could not be unpacked (hostile, corrupt, or its diff_id differs).
    #[error("layer {digest}: {source}")]
    Unpack {
        /// The layer blob.
        digest: Digest,
        /// What went wrong.
        source: UnpackError,
    },
}

/// The chain ids of a stack of layers with these diff_ids, bottom first.
pub fn chain_ids(diff_ids: &[Digest]) -> Vec<Digest> {
    let mut chain: Vec<Digest> = Vec::with_capacity(diff_ids.len());
    for diff_id in diff_ids {
        let next = match chain.last() {
            None => *diff_id,
            Some(parent) => Digest::of(format!("{parent} {diff_id}").as_bytes()),
        };
        chain.push(next);
    }
    chain
}

fn parse_digest(what: &'static str, at: &Digest, text: &str) -> Result<Digest, LayersError> {
    text.parse().map_err(|e| LayersError::Invalid {
        what,
        digest: *at,
        reason: format!("{e}"),
    })
}

fn read_blob(store: &Store, what: &str, digest: &Digest) -> Result<Vec<u8>, LayersError> {
    use std::io::Read as _;
    let store_err = |source| LayersError::Store {
        what: format!("{what} {digest}"),
        source,
    };
    let file = store.open_blob(digest).map_err(store_err)?;
    let mut bytes = Vec::new();
    file.take(MAX_JSON + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| LayersError::Invalid {
            what: "document",
            digest: *digest,
            reason: e.to_string(),
        })?;
    if bytes.len() as u64 > MAX_JSON {
        return Err(LayersError::Invalid {
            what: "document",
            digest: *digest,
            reason: format!("larger than {MAX_JSON} bytes"),
        });
    }
    Ok(bytes)
}

/// The manifest of image `digest` for `want`: the digest itself when it names a
/// manifest, the platform's entry when it names an index.
pub fn manifest_for(
    store: &Store,
    digest: &Digest,
    want: &Platform,
) -> Result<(Digest, ImageManifest), LayersError> {
    let bytes = read_blob(store, "image", digest)?;
    let value: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| LayersError::Invalid {
            what: "image",
            digest: *digest,
            reason: e.to_string(),
        })?;
    if value.get("manifests").is_some() {
        let index = platform::parse_index(&bytes)?;
        let chosen = platform::select(&index, want)?;
        let chosen = parse_digest("index", digest, chosen.digest().as_ref())?;
        return manifest_for(store, &chosen, want);
    }
    let manifest: ImageManifest =
        serde_json::from_slice(&bytes).map_err(|e| LayersError::Invalid {
            what: "manifest",
            digest: *digest,
            reason: e.to_string(),
        })?;
    Ok((*digest, manifest))
}

/// One layer of an image, with everything needed to fetch and unpack it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedLayer {
    /// The (usually compressed) blob in the store or registry.
    pub blob: Digest,
    /// The blob's size from the manifest.
    pub size: u64,
    /// The uncompressed tar's digest, from the config.
    pub diff_id: Digest,
    /// The stack's chain id up to this layer: its directory's name.
    pub chain_id: Digest,
}

/// An image's manifest and config, checked against each other and the
/// platform: what a pull fetches and what unpacking needs.
#[derive(Debug, Clone)]
pub struct ImagePlan {
    /// The platform manifest's digest.
    pub manifest: Digest,
    /// The config blob's digest.
    pub config: Digest,
    /// The config blob's size.
    pub config_size: u64,
    /// The layers, bottom first.
    pub layers: Vec<PlannedLayer>,
}

/// Parses a manifest that is already in the store.
pub fn read_manifest(store: &Store, digest: &Digest) -> Result<ImageManifest, LayersError> {
    let bytes = read_blob(store, "manifest", digest)?;
    serde_json::from_slice(&bytes).map_err(|e| LayersError::Invalid {
        what: "manifest",
        digest: *digest,
        reason: e.to_string(),
    })
}

/// The config digest and size a manifest names.
pub fn config_of(
    manifest_digest: &Digest,
    manifest: &ImageManifest,
) -> Result<(Digest, u64), LayersError> {
    let digest = parse_digest(
        "manifest",
        manifest_digest,
        manifest.config().digest().as_ref(),
    )?;
    Ok((digest, manifest.config().size()))
}

/// Checks the config (in the store) against `want` and the manifest, and
/// lists the layers with their diff_ids and chain ids.
pub fn plan(
    store: &Store,
    manifest_digest: &Digest,
    manifest: &ImageManifest,
    want: &Platform,
) -> Result<ImagePlan, LayersError> {
    let (config_digest, config_size) = config_of(manifest_digest, manifest)?;
    let config_bytes = read_blob(store, "config", &config_digest)?;
    let config: ImageConfiguration =
        serde_json::from_slice(&config_bytes).map_err(|e| LayersError::Invalid {
            what: "config",
            digest: config_digest,
            reason: e.to_string(),
        })?;
    platform::check_config(&config, want)?;
    let diff_ids = config
        .rootfs()
        .diff_ids()
        .iter()
        .map(|d| parse_digest("config", &config_digest, d))
        .collect::<Result<Vec<_>, _>>()?;
    if diff_ids.len() != manifest.layers().len() {
        return Err(LayersError::Invalid {
            what: "config",
            digest: config_digest,
            reason: format!(
                "{} diff_ids for {} layers",
                diff_ids.len(),
                manifest.layers().len()
            ),
        });
    }
    let mut layers = Vec::with_capacity(diff_ids.len());
    for ((layer, diff_id), chain_id) in manifest
        .layers()
        .iter()
        .zip(&diff_ids)
        .zip(chain_ids(&diff_ids))
    {
        let media_type = layer.media_type().to_string();
        if media_type.contains("encrypted") {
            return Err(LayersError::Invalid {
                what: "manifest",
                digest: *manifest_digest,
                reason: format!(
                    "layer media type {media_type} (encrypted layers are not supported)"
                ),
            });
        }
        layers.push(PlannedLayer {
            blob: parse_digest("manifest", manifest_digest, layer.digest().as_ref())?,
            size: layer.size(),
            diff_id: *diff_id,
            chain_id,
        });
    }
    Ok(ImagePlan {
        manifest: *manifest_digest,
        config: config_digest,
        config_size,
        layers,
    })
}

/// The directory layer `layer` is (or will be) unpacked in.
pub fn layer_dir(layer_root: &Path, layer: &PlannedLayer) -> PathBuf {
    layer_root.join(layer.chain_id.hex())
}

/// Unpacks one layer (its blob must be in the store) unless it already is,
/// verified against its diff_id before it becomes visible. Two callers
/// unpacking the same layer at once both succeed: one rename wins.
pub fn unpack_layer(
    store: &Store,
    layer_root: &Path,
    layer: &PlannedLayer,
) -> Result<PathBuf, LayersError> {
    let dir = layer_dir(layer_root, layer);
    if dir.is_dir() {
        return Ok(dir);
    }
    fs::create_dir_all(layer_root).map_err(|source| LayersError::Io {
        path: layer_root.to_path_buf(),
        source,
    })?;
    let file = store
        .open_blob(&layer.blob)
        .map_err(|source| LayersError::Store {
            what: format!("layer {}", layer.blob),
            source,
        })?;
    let options = UnpackOptions {
        expected_diff_id: Some(layer.diff_id),
        ..UnpackOptions::default()
    };
    match unpack_into_new(file, &dir, &options) {
        Ok(_) => Ok(dir),
        // Someone else unpacked the same layer meanwhile.
        Err(UnpackError::Destination { .. }) if dir.is_dir() => Ok(dir),
        Err(source) => Err(LayersError::Unpack {
            digest: layer.blob,
            source,
        }),
    }
}

/// Makes sure every layer of image `digest` is unpacked under `layer_root`
/// and returns their directories, bottom first (as [`crate::snapshot`] takes
/// them). Layers already unpacked are reused; each new one is verified against
/// the config's diff_id before it becomes visible.
pub fn unpacked_layers(
    store: &Store,
    layer_root: &Path,
    digest: &Digest,
    want: &Platform,
) -> Result<Vec<PathBuf>, LayersError> {
    let (manifest_digest, manifest) = manifest_for(store, digest, want)?;
    let plan = plan(store, &manifest_digest, &manifest, want)?;
    plan.layers
        .iter()
        .map(|layer| unpack_layer(store, layer_root, layer))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_follow_the_oci_definition() {
        let a = Digest::of(b"a");
        let b = Digest::of(b"b");
        let c = Digest::of(b"c");
        let chain = chain_ids(&[a, b, c]);
        assert_eq!(chain[0], a);
        assert_eq!(chain[1], Digest::of(format!("{a} {b}").as_bytes()));
        assert_eq!(chain[2], Digest::of(format!("{} {c}", chain[1]).as_bytes()));
        assert!(chain_ids(&[]).is_empty());
    }
}
