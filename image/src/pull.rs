//! Pulling an image: from a reference to its layers unpacked on disk.
//!
//! 1. The endpoints come from registries.yaml (mirrors first, then the
//!    registry itself); each is tried in turn until one serves the manifest,
//!    as containerd does. Every failure is kept for the final error.
//! 2. The manifest or index is fetched, verified and stored; from an index
//!    the manifest for this node's platform is chosen ([`crate::platform`]).
//! 3. The config is fetched and checked; it names each layer's diff_id.
//! 4. Layers are downloaded a few at a time into the content store (verified
//!    while written, resumed with a `Range` request after a broken transfer),
//!    and each is unpacked as soon as it is complete, while the others still
//!    download. A layer already unpacked is neither downloaded nor unpacked.
//!
//! Nothing half-done is ever used: blobs appear only whole and verified,
//! layer directories only unpacked and verified. A failed pull leaves at most
//! partial downloads in `ingest/`, which the next pull resumes.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::digest::Digest;
use crate::layers::{self, ImagePlan, LayersError};
use crate::platform::Platform;
use crate::reference::Reference;
use crate::registries::{Endpoint, Registries};
use crate::registry::{Credentials, Registry, RegistryError, Session};
use crate::secrets::PullSecrets;
use crate::store::{Ingesting, Store, StoreError, Waited};

/// Attempts per blob when the transfer breaks (each resumes where the last
/// one stopped).
const BLOB_ATTEMPTS: u32 = 4;

/// How long to wait for another pull writing the same blob.
const WAIT_FOR_OTHER_WRITER: Duration = Duration::from_secs(3600);

/// Why a pull failed. Every variant names the image.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// No endpoint could serve the manifest; one line per endpoint tried.
    #[error("pulling {reference}: {}", attempts.join("; "))]
    Unavailable {
        /// The image.
        reference: String,
        /// What each endpoint answered.
        attempts: Vec<String>,
    },
    /// Fetching a blob failed at every endpoint, after the manifest was found.
    #[error("pulling {reference}: {what}: {}", attempts.join("; "))]
    Blob {
        /// The image.
        reference: String,
        /// Which blob.
        what: String,
        /// What each endpoint answered.
        attempts: Vec<String>,
    },
    /// The content store refused or failed (disk full, content not matching
    /// its digest...).
    #[error("pulling {reference}: storing {what}: {source}")]
    Store {
        /// The image.
        reference: String,
        /// Which blob.
        what: String,
        /// The store's error.
        source: StoreError,
    },
    /// The image does not fit this node or is malformed, or a layer does not
    /// unpack.
    #[error("pulling {reference}: {source}")]
    Layers {
        /// The image.
        reference: String,
        /// What is wrong.
        source: LayersError,
    },
}

/// What a pull reports as it goes, for a progress display.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PullEvent {
    /// Asking this endpoint for the manifest.
    Resolving {
        /// The endpoint's location.
        location: String,
    },
    /// The platform's manifest and config are known.
    Resolved {
        /// The manifest digest.
        manifest: Digest,
        /// The layers (digest, size), bottom first.
        layers: Vec<(Digest, u64)>,
    },
    /// Bytes of a blob so far (sent every few hundred KiB).
    Downloading {
        /// The blob.
        blob: Digest,
        /// Bytes in the store so far (resumed bytes included).
        done: u64,
        /// Its size.
        total: u64,
    },
    /// A layer is unpacked (or already was).
    Unpacked {
        /// The layer's blob.
        blob: Digest,
        /// Whether it was already there.
        cached: bool,
    },
}

/// Receives [`PullEvent`]s; called from several tasks at once.
pub trait Progress: Send + Sync {
    /// One event.
    fn event(&self, event: PullEvent);
}

/// A [`Progress`] that ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn event(&self, _: PullEvent) {}
}

/// What a pull needs besides the reference.
#[derive(Debug, Clone)]
pub struct PullOptions {
    /// The platform to pull for (the node's own).
    pub platform: Platform,
    /// Credentials from the pod's `imagePullSecrets`.
    pub secrets: PullSecrets,
    /// Blobs downloaded at once.
    pub concurrency: usize,
}

impl Default for PullOptions {
    fn default() -> Self {
        Self {
            platform: Platform::host(),
            secrets: PullSecrets::default(),
            // The kubelet's default is serial pulls of images; within one
            // image, three parallel layers is what containerd does.
            concurrency: 3,
        }
    }
}

/// Where a pull reads its configuration and writes its results.
#[derive(Debug, Clone)]
pub struct Puller {
    /// The HTTP side.
    pub registry: Registry,
    /// registries.yaml.
    pub registries: Registries,
    /// The content store.
    pub store: Store,
    /// Where layers are unpacked (by chain id).
    pub layer_root: PathBuf,
}

/// A pulled image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pulled {
    /// The digest the reference resolved to (an index or a manifest).
    pub digest: Digest,
    /// The platform manifest's digest.
    pub manifest: Digest,
    /// The unpacked layer directories, bottom first.
    pub layers: Vec<PathBuf>,
    /// Where it came from.
    pub location: String,
    /// Bytes downloaded by this pull (blobs already present count nothing).
    pub downloaded: u64,
}

/// The credentials to try at `endpoint` for an image of `registry`: the pod's
/// pull secrets when the endpoint is the image's own registry (a mirror has
/// its own, in registries.yaml), else those of registries.yaml.
fn credentials_for(
    endpoint: &Endpoint,
    reference: &Reference,
    secrets: &PullSecrets,
) -> Option<Credentials> {
    let registry = reference.registry();
    let host = endpoint.url.host.as_str();
    let upstream = host.eq_ignore_ascii_case(registry)
        || (registry == "docker.io" && host == "registry-1.docker.io");
    if upstream {
        if let Some(c) = secrets.for_image(registry, reference.repository()) {
            return Some(c);
        }
    }
    let auth = endpoint.auth.as_ref()?;
    if let Some(token) = auth.identitytoken.as_ref().filter(|t| !t.is_empty()) {
        return Some(Credentials::IdentityToken(token.clone()));
    }
    // validate() has checked that `auth` decodes.
    auth.credentials()
        .ok()
        .flatten()
        .map(|(username, password)| Credentials::Basic { username, password })
}

impl Puller {
    /// Pulls `reference` for `options.platform` and unpacks its layers.
    pub async fn pull(
        &self,
        reference: &Reference,
        options: &PullOptions,
        progress: Arc<dyn Progress>,
    ) -> Result<Pulled, PullError> {
        let name = reference.to_string();
        let mut attempts = Vec::new();
        let mut sessions = Vec::new();
        for endpoint in self.registries.endpoints(reference) {
            let credentials = credentials_for(&endpoint, reference, &options.secrets);
            match self.registry.session(&endpoint, credentials) {
                Ok(s) => sessions.push(Arc::new(s)),
                Err(e) => attempts.push(format!("{}: {e}", endpoint.url.api_root())),
            }
        }
        let mut resolved = None;
        for (i, session) in sessions.iter().enumerate() {
            progress.event(PullEvent::Resolving {
                location: session.location(),
            });
            match self.resolve(session, reference, &options.platform).await {
                Ok(found) => {
                    resolved = Some((i, found));
                    break;
                }
                Err(ResolveError::Registry(e)) => attempts.push(e.to_string()),
                // The image is there but unusable here: another mirror will
                // not serve a different image under the same digest.
                Err(ResolveError::Store(what, source)) => {
                    return Err(PullError::Store {
                        reference: name,
                        what,
                        source,
                    });
                }
                Err(ResolveError::Layers(source)) => {
                    return Err(PullError::Layers {
                        reference: name,
                        source,
                    });
                }
            }
        }
        let Some((first, (digest, plan, config_bytes))) = resolved else {
            return Err(PullError::Unavailable {
                reference: name,
                attempts,
            });
        };
        progress.event(PullEvent::Resolved {
            manifest: plan.manifest,
            layers: plan.layers.iter().map(|l| (l.blob, l.size)).collect(),
        });
        let location = sessions[first].location();
        // Blobs from the endpoint that resolved first, then the others in
        // order, as containerd does (a mirror may lack a blob, or be down when
        // the manifest came from the store).
        sessions.swap(0, first);
        if first > 0 {
            sessions[1..=first].rotate_left(1);
        }
        let sources = Arc::new(Sources::new(sessions));
        let (layers, downloaded) = self
            .fetch_layers(sources, &name, &plan, options, progress)
            .await?;
        Ok(Pulled {
            digest,
            manifest: plan.manifest,
            layers,
            location,
            downloaded: downloaded + config_bytes,
        })
    }

    /// Manifest (through the index) and config, into the store.
    async fn resolve(
        &self,
        session: &Session,
        reference: &Reference,
        platform: &Platform,
    ) -> Result<(Digest, ImagePlan, u64), ResolveError> {
        // A tag whose current digest is already here needs no manifest GET.
        let known = match reference.digest() {
            Some(d) => Some(*d),
            None => session
                .manifest_digest(&reference.manifest_reference())
                .await
                // A registry that cannot HEAD still serves the GET below.
                .unwrap_or(None),
        };
        let top = match known {
            // Already here: nothing to fetch.
            Some(d) if self.store.has(&d) => d,
            _ => {
                let m = session.manifest(&reference.manifest_reference()).await?;
                self.put(&m.digest, &m.bytes, "manifest").await?;
                m.digest
            }
        };
        // An index: fetch the platform's manifest, then read both from the store.
        let chosen = match layers::manifest_for(&self.store, &top, platform) {
            Ok(found) => found,
            Err(LayersError::Store {
                source: StoreError::NotFound(child),
                ..
            }) => {
                let m = session.manifest(&child.to_string()).await?;
                self.put(&m.digest, &m.bytes, "manifest").await?;
                layers::manifest_for(&self.store, &top, platform)?
            }
            Err(e) => return Err(e.into()),
        };
        let (manifest_digest, manifest) = chosen;
        let (config, size) = layers::config_of(&manifest_digest, &manifest)?;
        let mut config_bytes = 0;
        if !self.store.has(&config) {
            if size > crate::registry::MAX_MANIFEST {
                return Err(ResolveError::Store(
                    format!("config {config}"),
                    StoreError::TooLarge {
                        digest: config,
                        size,
                        max: crate::registry::MAX_MANIFEST,
                    },
                ));
            }
            config_bytes = fetch_from(session, &self.store, &config, size, &NoProgress)
                .await
                .map_err(|e| match e {
                    BlobError::Registry(e) => ResolveError::Registry(e),
                    BlobError::Store(e) => ResolveError::Store(format!("config {config}"), e),
                })?;
        }
        let plan = layers::plan(&self.store, &manifest_digest, &manifest, platform)?;
        Ok((top, plan, config_bytes))
    }

    /// Stores a document; another pull storing the same one is waited for.
    async fn put(&self, digest: &Digest, bytes: &[u8], what: &str) -> Result<(), ResolveError> {
        let failed = |e| ResolveError::Store(format!("{what} {digest}"), e);
        loop {
            match self.store.put_bytes(digest, bytes) {
                Err(StoreError::InUse(_)) => {
                    if wait_for_writer(&self.store, digest).await.map_err(failed)? {
                        return Ok(());
                    }
                }
                other => return other.map_err(failed),
            }
        }
    }

    /// Downloads and unpacks every layer not unpacked yet, a few at a time.
    async fn fetch_layers(
        &self,
        sources: Arc<Sources>,
        name: &str,
        plan: &ImagePlan,
        options: &PullOptions,
        progress: Arc<dyn Progress>,
    ) -> Result<(Vec<PathBuf>, u64), PullError> {
        let limit = Arc::new(Semaphore::new(options.concurrency.max(1)));
        let mut tasks = JoinSet::new();
        for layer in &plan.layers {
            let dir = layers::layer_dir(&self.layer_root, layer);
            if dir.is_dir() {
                progress.event(PullEvent::Unpacked {
                    blob: layer.blob,
                    cached: true,
                });
                continue;
            }
            let (sources, store, limit, progress) = (
                Arc::clone(&sources),
                self.store.clone(),
                Arc::clone(&limit),
                Arc::clone(&progress),
            );
            let (layer, layer_root, name) =
                (layer.clone(), self.layer_root.clone(), name.to_owned());
            tasks.spawn(async move {
                let downloaded = {
                    // Closed never: the semaphore lives as long as the tasks.
                    let _permit = limit.acquire().await;
                    sources
                        .fetch(&store, &layer.blob, layer.size, &*progress)
                        .await
                        .map_err(|e| e.into_pull_error(&name, &layer.blob))?
                };
                let blob = layer.blob;
                // Unpacking is CPU and file-system work: off the async workers.
                tokio::task::spawn_blocking(move || {
                    layers::unpack_layer(&store, &layer_root, &layer)
                })
                .await
                .map_err(|e| PullError::Layers {
                    reference: name.clone(),
                    source: LayersError::Io {
                        path: PathBuf::from("unpack task"),
                        source: std::io::Error::other(e.to_string()),
                    },
                })?
                .map_err(|source| PullError::Layers {
                    reference: name.clone(),
                    source,
                })?;
                progress.event(PullEvent::Unpacked {
                    blob,
                    cached: false,
                });
                Ok::<u64, PullError>(downloaded)
            });
        }
        let mut downloaded = 0;
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(Ok(n)) => downloaded += n,
                // Dropping the set aborts the other downloads; their partial
                // files stay in ingest/ for the next attempt.
                Ok(Err(e)) => return Err(e),
                Err(e) => {
                    return Err(PullError::Layers {
                        reference: name.to_owned(),
                        source: LayersError::Io {
                            path: PathBuf::from("layer task"),
                            source: std::io::Error::other(e.to_string()),
                        },
                    });
                }
            }
        }
        let dirs = plan
            .layers
            .iter()
            .map(|l| layers::layer_dir(&self.layer_root, l))
            .collect();
        Ok((dirs, downloaded))
    }
}

/// How resolving on one endpoint failed.
enum ResolveError {
    /// The endpoint failed: try the next.
    Registry(RegistryError),
    /// Our side failed.
    Store(String, StoreError),
    /// The image is unusable.
    Layers(LayersError),
}

impl From<RegistryError> for ResolveError {
    fn from(e: RegistryError) -> Self {
        Self::Registry(e)
    }
}

impl From<LayersError> for ResolveError {
    fn from(e: LayersError) -> Self {
        match e {
            LayersError::Store { what, source } => Self::Store(what, source),
            e => Self::Layers(e),
        }
    }
}

/// How fetching one blob failed.
enum BlobError {
    Registry(RegistryError),
    Store(StoreError),
}

/// How fetching one blob failed at every endpoint.
enum BlobsError {
    /// One line per endpoint.
    Registry(Vec<String>),
    Store(StoreError),
}

impl BlobsError {
    fn into_pull_error(self, name: &str, blob: &Digest) -> PullError {
        match self {
            Self::Registry(attempts) => PullError::Blob {
                reference: name.to_owned(),
                what: format!("layer {blob}"),
                attempts,
            },
            Self::Store(source) => PullError::Store {
                reference: name.to_owned(),
                what: format!("layer {blob}"),
                source,
            },
        }
    }
}

/// The endpoints blobs are fetched from, in order; one that could not even
/// be reached is skipped for the rest of the pull.
struct Sources {
    sessions: Vec<Arc<Session>>,
    unreachable: Vec<AtomicBool>,
}

impl Sources {
    fn new(sessions: Vec<Arc<Session>>) -> Self {
        let unreachable = sessions.iter().map(|_| AtomicBool::new(false)).collect();
        Self {
            sessions,
            unreachable,
        }
    }

    /// Fetches a blob from the first endpoint that serves it.
    async fn fetch(
        &self,
        store: &Store,
        digest: &Digest,
        size: u64,
        progress: &dyn Progress,
    ) -> Result<u64, BlobsError> {
        let mut attempts = Vec::new();
        for (session, unreachable) in self.sessions.iter().zip(&self.unreachable) {
            if unreachable.load(Ordering::Relaxed) {
                continue;
            }
            match fetch_from(session, store, digest, size, progress).await {
                Ok(n) => return Ok(n),
                Err(BlobError::Store(e)) => return Err(BlobsError::Store(e)),
                Err(BlobError::Registry(e)) => {
                    if matches!(
                        e,
                        RegistryError::Transport {
                            unreachable: true,
                            ..
                        }
                    ) {
                        unreachable.store(true, Ordering::Relaxed);
                    }
                    attempts.push(e.to_string());
                }
            }
        }
        if attempts.is_empty() {
            attempts.push("no endpoint is reachable".into());
        }
        Err(BlobsError::Registry(attempts))
    }
}

/// Waits for another writer of `digest`; true when the blob is then present
/// (false: the writer gave up, write it yourself).
async fn wait_for_writer(store: &Store, digest: &Digest) -> Result<bool, StoreError> {
    let (store, d) = (store.clone(), *digest);
    let waited = tokio::task::spawn_blocking(move || store.wait_for(&d, WAIT_FOR_OTHER_WRITER))
        .await
        .map_err(|e| StoreError::Io {
            op: "wait for another pull of",
            path: PathBuf::from(digest.to_string()),
            source: std::io::Error::other(e.to_string()),
        })??;
    Ok(waited == Waited::Present)
}

/// Fetches blob `digest` of `size` bytes from one endpoint into the store
/// unless it is there; returns the bytes transferred. Another pull writing
/// the same blob is waited for (and taken over if it gives up).
async fn fetch_from(
    session: &Session,
    store: &Store,
    digest: &Digest,
    size: u64,
    progress: &dyn Progress,
) -> Result<u64, BlobError> {
    loop {
        let mut ingest = match store.writer(digest, size).map_err(BlobError::Store)? {
            Ingesting::Present => return Ok(0),
            Ingesting::Busy => {
                if wait_for_writer(store, digest)
                    .await
                    .map_err(BlobError::Store)?
                {
                    return Ok(0);
                }
                continue;
            }
            Ingesting::Started(ingest) => ingest,
        };
        let mut transferred = 0;
        let mut attempt = 1;
        loop {
            match download(session, &mut ingest, progress, &mut transferred).await {
                Ok(()) => break,
                Err(BlobError::Registry(e)) if e.is_transient() && attempt < BLOB_ATTEMPTS => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(250 * u64::from(attempt))).await;
                }
                // The partial file stays for a later resume (dropping the
                // ingest releases it).
                Err(e) => return Err(e),
            }
        }
        ingest.commit().map_err(BlobError::Store)?;
        return Ok(transferred);
    }
}

/// One transfer attempt: from the ingest's offset to the end.
async fn download(
    session: &Session,
    ingest: &mut crate::store::Ingest,
    progress: &dyn Progress,
    transferred: &mut u64,
) -> Result<(), BlobError> {
    use std::io::Write as _;
    let digest = *ingest.digest();
    let total = ingest.expected_size();
    if ingest.offset() == total {
        return Ok(());
    }
    let mut blob = session
        .blob(&digest, ingest.offset())
        .await
        .map_err(BlobError::Registry)?;
    if ingest.offset() > 0 && !blob.partial {
        // The server sends the whole blob: start over.
        ingest.restart().map_err(BlobError::Store)?;
    }
    let url = session.location();
    let mut reported = ingest.offset();
    loop {
        let chunk = match blob.response.chunk().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(e) => {
                return Err(BlobError::Registry(RegistryError::Transport {
                    url: format!("{url}/blobs/{digest}"),
                    detail: chain(&e),
                    unreachable: false,
                }));
            }
        };
        // Page-cache writes of one chunk (tens of KiB): short enough to do
        // here rather than hop to a blocking thread per chunk.
        ingest
            .write_all(&chunk)
            .map_err(|e| BlobError::Store(ingest.write_error(e)))?;
        *transferred += chunk.len() as u64;
        if ingest.offset() - reported >= 256 << 10 || ingest.offset() == total {
            reported = ingest.offset();
            progress.event(PullEvent::Downloading {
                blob: digest,
                done: reported,
                total,
            });
        }
    }
    if ingest.offset() < total {
        return Err(BlobError::Registry(RegistryError::Transport {
            url: format!("{url}/blobs/{digest}"),
            detail: format!(
                "the transfer ended after {} of {total} bytes",
                ingest.offset()
            ),
            unreachable: false,
        }));
    }
    Ok(())
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let t = s.to_string();
        if !text.contains(&t) {
            text.push_str(": ");
            text.push_str(&t);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registries::EndpointUrl;

    fn endpoint(url: &str, auth: Option<&str>) -> Endpoint {
        Endpoint {
            url: EndpointUrl::parse(url).unwrap(),
            repository: "library/busybox".into(),
            auth: auth.map(|a| crate::registries::Auth {
                auth: Some(a.into()),
                ..Default::default()
            }),
            tls: None,
        }
    }

    #[test]
    fn pull_secrets_go_to_the_image_registry_and_mirrors_keep_their_own() {
        let mut secrets = PullSecrets::default();
        secrets
            .add_docker_config(br#"{"auths":{"docker.io":{"auth":"cG9kOnNlY3JldA=="}}}"#)
            .unwrap();
        let pod = Credentials::Basic {
            username: "pod".into(),
            password: "secret".into(),
        };
        let node = Credentials::Basic {
            username: "node".into(),
            password: "pw".into(),
        };
        // base64("node:pw")
        let hub = endpoint("https://registry-1.docker.io", Some("bm9kZTpwdw=="));
        let busybox: Reference = "busybox".parse().unwrap();
        assert_eq!(credentials_for(&hub, &busybox, &secrets), Some(pod));
        let mirror = endpoint("https://mirror.local:5000", Some("bm9kZTpwdw=="));
        assert_eq!(credentials_for(&mirror, &busybox, &secrets), Some(node));
        let bare = endpoint("https://mirror.local:5000", None);
        assert_eq!(credentials_for(&bare, &busybox, &secrets), None);
        let mut with_token = endpoint("https://ghcr.io", None);
        with_token.auth = Some(crate::registries::Auth {
            identitytoken: Some("refresh".into()),
            ..Default::default()
        });
        assert_eq!(
            credentials_for(
                &with_token,
                &"ghcr.io/org/app:1".parse().unwrap(),
                &PullSecrets::default()
            ),
            Some(Credentials::IdentityToken("refresh".into()))
        );
    }
}
