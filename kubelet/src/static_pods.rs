//! Static pods: the pods of the manifest directory (k3s's
//! `<data-dir>/agent/pod-manifests`), read and defaulted as the kubelet's file
//! source does (`k8s121:pkg/kubelet/config/file.go` and `common.go`, spec
//! pod-sync §6), and the mirror pods that represent them in the API.
//!
//! Everything here is pure: files in, `Pod` objects out. Watching the
//! directory, running the pods and POSTing the mirrors is the caller's job.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use k8s_openapi::api::core::v1::{
    Container, HTTPGetAction, LifecycleHandler, Pod, PodSecurityContext, Probe, Toleration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::chrono::{DateTime, SecondsFormat};
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// Annotation holding a static pod's config hash (its UID); a mirror pod
/// carries the same value.
pub const CONFIG_HASH_ANNOTATION: &str = "kubernetes.io/config.hash";
/// Annotation naming where the kubelet learnt of a pod: `file` for a static
/// pod of the manifest directory, `api` for a pod bound through the API.
pub const CONFIG_SOURCE_ANNOTATION: &str = "kubernetes.io/config.source";
/// Annotation with the time the kubelet first saw the pod (RFC 3339, nanoseconds).
pub const CONFIG_SEEN_ANNOTATION: &str = "kubernetes.io/config.seen";
/// Annotation that makes a pod a mirror pod: the static pod's config hash.
pub const CONFIG_MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";
/// The `config.source` of pods read from the manifest directory.
pub const FILE_SOURCE: &str = "file";
/// The `config.source` of pods bound through the API server.
pub const API_SOURCE: &str = "api";

/// Why a manifest (or the manifest directory) could not be read. Every
/// variant names the file, so a log line says which manifest to fix.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The directory exists but could not be listed.
    #[error("cannot list static pod directory {}: {source}", dir.display())]
    ReadDir {
        /// The manifest directory.
        dir: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// A manifest could not be read.
    #[error("cannot read static pod manifest {}: {source}", path.display())]
    Read {
        /// The manifest file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// A directory entry that is neither a regular file nor a directory (a
    /// socket, a FIFO, a dangling symlink).
    #[error("static pod manifest {} is not a regular file", path.display())]
    NotAFile {
        /// The entry.
        path: PathBuf,
    },
    /// Not YAML or JSON, or not a Pod's shape.
    #[error("cannot parse static pod manifest {}: {message}", path.display())]
    Parse {
        /// The manifest file.
        path: PathBuf,
        /// The parser's message (with the line where it has one).
        message: String,
    },
    /// An object other than a v1 Pod.
    #[error("static pod manifest {} is not a v1 Pod (apiVersion {api_version:?}, kind {kind:?})", path.display())]
    WrongKind {
        /// The manifest file.
        path: PathBuf,
        /// The object's `apiVersion` (empty when missing).
        api_version: String,
        /// The object's `kind` (empty when missing).
        kind: String,
    },
    /// A Pod the API server would reject (names, containers).
    #[error("invalid static pod in {}: {reason}", path.display())]
    Invalid {
        /// The manifest file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

impl ManifestError {
    /// The manifest file (or, for [`ManifestError::ReadDir`], the directory)
    /// the error is about.
    pub fn path(&self) -> &Path {
        match self {
            Self::ReadDir { dir, .. } => dir,
            Self::Read { path, .. }
            | Self::NotAFile { path }
            | Self::Parse { path, .. }
            | Self::WrongKind { path, .. }
            | Self::Invalid { path, .. } => path,
        }
    }
}

/// Reads the static pods of `dir` as the kubelet's file source does: every
/// regular file whose name does not start with `.` (subdirectories are not
/// entered), in name order, one Pod per file, YAML or JSON, defaulted for
/// node `node_name` (see the module docs and [`ManifestDir`] for rescans).
///
/// A missing directory holds no pods. As in the kubelet, `dir` may also be a
/// single manifest file. The outer error is for a directory that cannot be
/// listed; each file's own problem is its entry's error, so one bad manifest
/// does not hide the others.
pub fn read_manifests(
    dir: &Path,
    node_name: &str,
) -> Result<Vec<Result<Pod, ManifestError>>, ManifestError> {
    let seen = rfc3339_nano(SystemTime::now());
    Ok(list_files(dir)?
        .into_iter()
        .map(|file| {
            let content = file?;
            decode_manifest(&content.path, &content.data, node_name, &seen)
        })
        .collect())
}

/// The mirror pod of `static_pod` as the kubelet POSTs it
/// (`k8s121:pkg/kubelet/pod/mirror_client.go` CreateMirrorPod): the static
/// pod's metadata and spec with the `config.mirror` annotation set to its
/// config hash and the Node as controlling owner (which NodeRestriction
/// requires). The UID and resourceVersion are dropped (the API server assigns
/// them and rejects a create that carries a resourceVersion), and so is the
/// status, which the API server resets on create.
pub fn mirror_pod(static_pod: &Pod, node_name: &str, node_uid: &str) -> Pod {
    let mut mirror = static_pod.clone();
    mirror.metadata.uid = None;
    mirror.metadata.resource_version = None;
    mirror.status = None;
    let hash = config_hash(static_pod).unwrap_or_default().to_owned();
    mirror
        .metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(CONFIG_MIRROR_ANNOTATION.to_owned(), hash);
    mirror.metadata.owner_references = Some(vec![OwnerReference {
        api_version: "v1".to_owned(),
        kind: "Node".to_owned(),
        name: node_name.to_owned(),
        uid: node_uid.to_owned(),
        controller: Some(true),
        block_owner_deletion: None,
    }]);
    mirror
}

fn annotation<'a>(pod: &'a Pod, key: &str) -> Option<&'a str> {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
}

/// Whether `pod` is a mirror pod (it has the `config.mirror` annotation).
pub fn is_mirror_pod(pod: &Pod) -> bool {
    annotation(pod, CONFIG_MIRROR_ANNOTATION).is_some()
}

/// Whether `pod` is a static pod: its `config.source` is set and is not
/// `api`. The kubelet overwrites the source of every pod it gets from the
/// API with `api`; a mirror pod fetched from the API still carries the
/// static pod's `file`, so mirror pods are excluded here explicitly.
pub fn is_static_pod(pod: &Pod) -> bool {
    annotation(pod, CONFIG_SOURCE_ANNOTATION).is_some_and(|s| s != API_SOURCE)
        && !is_mirror_pod(pod)
}

/// The pod's `config.hash` annotation: a static pod's UID, also carried by
/// its mirror (whose `config.mirror` names the static pod version it mirrors).
pub fn config_hash(pod: &Pod) -> Option<&str> {
    annotation(pod, CONFIG_HASH_ANNOTATION)
}

/// A manifest directory rescanned periodically (the kubelet does every 20 s
/// and on inotify events): [`scan`](Self::scan) reports the pod set only when
/// a file was added, removed or changed.
#[derive(Debug)]
pub struct ManifestDir {
    dir: PathBuf,
    node_name: String,
    /// File name → content digest, as of the last scan; `None` before the first.
    files: Option<BTreeMap<PathBuf, [u8; 32]>>,
    /// First-seen time per file version, so an unchanged file's pod keeps its
    /// `config.seen` (the kubelet keeps the first one: it does not count in
    /// its comparison of pod versions).
    seen: HashMap<(PathBuf, [u8; 32]), String>,
    errors: Vec<ManifestError>,
}

impl ManifestDir {
    /// Watches `dir` for node `node_name`; nothing is read until
    /// [`scan`](Self::scan).
    pub fn new(dir: impl Into<PathBuf>, node_name: impl Into<String>) -> Self {
        Self {
            dir: dir.into(),
            node_name: node_name.into(),
            files: None,
            seen: HashMap::new(),
            errors: Vec::new(),
        }
    }

    /// Rereads the directory. Returns the whole new set of valid static pods
    /// when the first scan is done or when file names or contents changed
    /// since the last scan, `None` otherwise (and when the directory cannot be
    /// listed: the last set stays). Bad manifests are left out of the set
    /// and logged once per change; [`errors`](Self::errors) keeps them.
    pub fn scan(&mut self) -> Option<Vec<Pod>> {
        let entries = match list_files(&self.dir) {
            Ok(entries) => entries,
            Err(err) => {
                tracing::warn!(%err, "static pods: keeping the last set");
                return None;
            }
        };
        // Each entry with its content digest; an entry that could not be read
        // counts with an all-zero digest (no real content has that SHA-256),
        // so becoming unreadable, or readable again, is a change too.
        let mut files = BTreeMap::new();
        let mut contents = Vec::new();
        for entry in entries {
            let (path, digest) = match &entry {
                Ok(file) => (file.path.clone(), Sha256::digest(&file.data).into()),
                Err(err) => (err.path().to_owned(), [0; 32]),
            };
            files.insert(path, digest);
            contents.push((entry, digest));
        }
        if self.files.as_ref() == Some(&files) {
            return None;
        }
        let now = rfc3339_nano(SystemTime::now());
        let mut seen = HashMap::new();
        let mut pods = Vec::new();
        self.errors.clear();
        for (entry, digest) in contents {
            let decoded = entry.and_then(|file| {
                let key = (file.path, digest);
                let first_seen = self.seen.remove(&key).unwrap_or_else(|| now.clone());
                let pod = decode_manifest(&key.0, &file.data, &self.node_name, &first_seen);
                seen.insert(key, first_seen);
                pod
            });
            match decoded {
                Ok(pod) => pods.push(pod),
                Err(err) => {
                    tracing::warn!(%err, "static pod manifest skipped");
                    self.errors.push(err);
                }
            }
        }
        self.seen = seen;
        self.files = Some(files);
        Some(pods)
    }

    /// The bad manifests of the last scan that reported a change.
    pub fn errors(&self) -> &[ManifestError] {
        &self.errors
    }
}

/// One manifest file's content.
#[derive(Debug)]
struct ManifestFile {
    path: PathBuf,
    data: Vec<u8>,
}

/// The manifest files of `dir` with their contents, in name order (the
/// kubelet's `filepath.Glob(dir/[^.]*)`): dotfiles are skipped (editors'
/// swap files, `..data` links), subdirectories are not entered, symlinks are
/// followed.
fn list_files(dir: &Path) -> Result<Vec<Result<ManifestFile, ManifestError>>, ManifestError> {
    let read = |path: PathBuf| match fs::read(&path) {
        Ok(data) => Ok(ManifestFile { path, data }),
        Err(source) => Err(ManifestError::Read { path, source }),
    };
    let meta = match fs::metadata(dir) {
        Ok(meta) => meta,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(ManifestError::ReadDir {
                dir: dir.to_owned(),
                source,
            });
        }
    };
    if meta.is_file() {
        return Ok(vec![read(dir.to_owned())]);
    }
    let read_dir = |source| ManifestError::ReadDir {
        dir: dir.to_owned(),
        source,
    };
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).map_err(read_dir)? {
        let name = entry.map_err(read_dir)?.file_name();
        if !name.as_bytes().starts_with(b".") {
            names.push(name);
        }
    }
    names.sort();
    let mut files = Vec::new();
    for name in names {
        let path = dir.join(name);
        match fs::metadata(&path) {
            Ok(meta) if meta.is_dir() => {
                tracing::debug!(path = %path.display(), "not recursing into manifest directory");
            }
            Ok(meta) if meta.is_file() => files.push(read(path)),
            // Removed between listing and stat: as if never listed.
            Err(err)
                if err.kind() == io::ErrorKind::NotFound && path.symlink_metadata().is_err() => {}
            Ok(_) | Err(_) => files.push(Err(ManifestError::NotAFile { path })),
        }
    }
    Ok(files)
}

/// The type fields, read first so another kind is named as such rather than
/// reported as whatever field the Pod decoder trips on.
#[derive(Deserialize)]
struct TypeMeta {
    #[serde(rename = "apiVersion", default)]
    api_version: Option<String>,
    #[serde(default)]
    kind: Option<String>,
}

/// Decodes one manifest (YAML, of which JSON is a subset) into a defaulted
/// static pod for `node_name`, first seen at `seen`.
fn decode_manifest(
    path: &Path,
    data: &[u8],
    node_name: &str,
    seen: &str,
) -> Result<Pod, ManifestError> {
    let parse = |err: serde_yaml_ng::Error| ManifestError::Parse {
        path: path.to_owned(),
        message: err.to_string(),
    };
    if data.iter().all(u8::is_ascii_whitespace) {
        return Err(ManifestError::Parse {
            path: path.to_owned(),
            message: "the file is empty".to_owned(),
        });
    }
    let meta: TypeMeta = serde_yaml_ng::from_slice(data).map_err(parse)?;
    let api_version = meta.api_version.unwrap_or_default();
    let kind = meta.kind.unwrap_or_default();
    if api_version != "v1" || kind != "Pod" {
        return Err(ManifestError::WrongKind {
            path: path.to_owned(),
            api_version,
            kind,
        });
    }
    let mut pod: Pod = serde_yaml_ng::from_slice(data).map_err(parse)?;
    if pod.metadata.name.as_deref().is_none_or(str::is_empty) {
        return Err(ManifestError::Invalid {
            path: path.to_owned(),
            reason: "metadata.name is required".to_owned(),
        });
    }
    let uid = pod
        .metadata
        .uid
        .clone()
        .filter(|uid| !uid.is_empty())
        .unwrap_or_else(|| file_pod_uid(&pod, node_name, path));
    apply_api_defaults(&mut pod);
    apply_file_defaults(&mut pod, &uid, node_name, seen);
    validate(&pod).map_err(|reason| ManifestError::Invalid {
        path: path.to_owned(),
        reason,
    })?;
    Ok(pod)
}

/// The UID of a file pod: a hash of the decoded pod, then `host:<node>` and
/// `file:<path>`, as in the kubelet's applyDefaults. The kubelet hashes with
/// MD5 over a go-spew dump of its internal Go object, which cannot be
/// reproduced outside Go; this is SHA-256 over the pod's JSON as decoded
/// (before any defaulting, so a newer armlet with more defaults keeps the
/// UIDs, and the pods, of unchanged manifests), cut to 32 hex digits: the
/// length of the kubelet's UIDs. Like the kubelet's, it changes when the pod
/// does but not with comments or formatting; it differs per node and path.
fn file_pod_uid(pod: &Pod, node_name: &str, path: &Path) -> String {
    let mut hasher = Sha256::new();
    // A Pod always serializes (string keys, no non-finite floats).
    hasher.update(serde_json::to_vec(pod).unwrap_or_default());
    hasher.update(b"host:");
    hasher.update(node_name.as_bytes());
    hasher.update(b"file:");
    hasher.update(path.as_os_str().as_bytes());
    let digest = hasher.finalize();
    digest[..16]
        .iter()
        .fold(String::with_capacity(32), |mut hex, b| {
            let _ = write!(hex, "{b:02x}");
            hex
        })
}

/// The kubelet's applyDefaults for a file pod, plus the `config.source` and
/// `config.seen` annotations its config merger adds.
fn apply_file_defaults(pod: &mut Pod, uid: &str, node_name: &str, seen: &str) {
    let meta = &mut pod.metadata;
    meta.uid = Some(uid.to_owned());
    let name = meta.name.take().unwrap_or_default();
    meta.name = Some(format!("{name}-{}", node_name.to_lowercase()));
    if meta.namespace.as_deref().is_none_or(str::is_empty) {
        meta.namespace = Some("default".to_owned());
    }
    let annotations = meta.annotations.get_or_insert_with(BTreeMap::new);
    annotations.insert(CONFIG_HASH_ANNOTATION.to_owned(), uid.to_owned());
    annotations.insert(CONFIG_SOURCE_ANNOTATION.to_owned(), FILE_SOURCE.to_owned());
    annotations.insert(CONFIG_SEEN_ANNOTATION.to_owned(), seen.to_owned());
    let spec = pod.spec.get_or_insert_with(Default::default);
    spec.node_name = Some(node_name.to_owned());
    // Static pods tolerate every NoExecute taint, so node problems never evict
    // them (AddOrUpdateTolerationInPod: an equal toleration is not repeated).
    let tolerate = Toleration {
        operator: Some("Exists".to_owned()),
        effect: Some("NoExecute".to_owned()),
        ..Default::default()
    };
    let tolerations = spec.tolerations.get_or_insert_with(Vec::new);
    if !tolerations.contains(&tolerate) {
        tolerations.push(tolerate);
    }
    pod.status.get_or_insert_with(Default::default).phase = Some("Pending".to_owned());
}

fn default_str(field: &mut Option<String>, value: &str) {
    if field.as_deref().is_none_or(str::is_empty) {
        *field = Some(value.to_owned());
    }
}

/// The defaults of `k8s.io/kubernetes/pkg/apis/core/v1` (defaults.go) that
/// the kubelet's decoder applies to a v1 Pod, so a static pod looks as it
/// would had it come from the API server: the same containers, the same
/// config as the pod sync sees for API pods. The defaults of cloud volume
/// plugins are left out (armlet runs none of them).
fn apply_api_defaults(pod: &mut Pod) {
    let spec = pod.spec.get_or_insert_with(Default::default);
    default_str(&mut spec.restart_policy, "Always");
    default_str(&mut spec.dns_policy, "ClusterFirst");
    default_str(&mut spec.scheduler_name, "default-scheduler");
    spec.termination_grace_period_seconds.get_or_insert(30);
    spec.security_context
        .get_or_insert_with(PodSecurityContext::default);
    spec.enable_service_links.get_or_insert(true);
    let host_network = spec.host_network == Some(true);
    let init = spec.init_containers.iter_mut().flatten();
    for container in spec.containers.iter_mut().chain(init) {
        default_container(container, host_network);
    }
    for volume in spec.volumes.iter_mut().flatten() {
        // A volume without a source is an emptyDir (SetDefaults_Volume);
        // serialized, such a volume has its name only.
        let sourceless = serde_json::to_value(&*volume)
            .ok()
            .and_then(|v| v.as_object().map(|o| o.len() == 1));
        if sourceless == Some(true) {
            volume.empty_dir = Some(Default::default());
        }
        // 0644, the default file mode of projected-style volumes.
        const MODE: i32 = 0o644;
        if let Some(s) = &mut volume.secret {
            s.default_mode.get_or_insert(MODE);
        }
        if let Some(s) = &mut volume.config_map {
            s.default_mode.get_or_insert(MODE);
        }
        if let Some(s) = &mut volume.downward_api {
            s.default_mode.get_or_insert(MODE);
            for item in s.items.iter_mut().flatten() {
                if let Some(f) = &mut item.field_ref {
                    default_str(&mut f.api_version, "v1");
                }
            }
        }
        if let Some(s) = &mut volume.projected {
            s.default_mode.get_or_insert(MODE);
        }
        if let Some(s) = &mut volume.host_path {
            s.type_.get_or_insert_with(String::new);
        }
    }
}

fn default_container(c: &mut Container, host_network: bool) {
    if c.image_pull_policy.as_deref().is_none_or(str::is_empty) {
        // The rule the pod sync and the devserver use: `Always` for
        // `:latest` or no tag, else `IfNotPresent`.
        use armlet_pods::backoff::PullPolicy;
        let policy = match PullPolicy::default_for(c.image.as_deref().unwrap_or_default()) {
            PullPolicy::Always => "Always",
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Never => "Never",
        };
        c.image_pull_policy = Some(policy.to_owned());
    }
    default_str(&mut c.termination_message_path, "/dev/termination-log");
    default_str(&mut c.termination_message_policy, "File");
    for port in c.ports.iter_mut().flatten() {
        default_str(&mut port.protocol, "TCP");
        // With the host's network the container port is the host port.
        if host_network && port.host_port.is_none_or(|p| p == 0) {
            port.host_port = Some(port.container_port);
        }
    }
    // Limits without requests request the limits (SetDefaults_Pod).
    if let Some(resources) = &mut c.resources {
        if let Some(limits) = &resources.limits {
            let requests = resources.requests.get_or_insert_with(BTreeMap::new);
            for (name, amount) in limits {
                requests
                    .entry(name.clone())
                    .or_insert_with(|| amount.clone());
            }
        }
    }
    for probe in [
        &mut c.liveness_probe,
        &mut c.readiness_probe,
        &mut c.startup_probe,
    ]
    .into_iter()
    .flatten()
    {
        default_probe(probe);
    }
    if let Some(lifecycle) = &mut c.lifecycle {
        let handlers = [&mut lifecycle.post_start, &mut lifecycle.pre_stop];
        for LifecycleHandler { http_get, .. } in handlers.into_iter().flatten() {
            if let Some(get) = http_get {
                default_http_get(get);
            }
        }
    }
    for env in c.env.iter_mut().flatten() {
        if let Some(f) = env.value_from.as_mut().and_then(|v| v.field_ref.as_mut()) {
            default_str(&mut f.api_version, "v1");
        }
    }
}

fn default_probe(probe: &mut Probe) {
    let default = |field: &mut Option<i32>, value| {
        if field.is_none_or(|v| v == 0) {
            *field = Some(value);
        }
    };
    default(&mut probe.timeout_seconds, 1);
    default(&mut probe.period_seconds, 10);
    default(&mut probe.success_threshold, 1);
    default(&mut probe.failure_threshold, 3);
    if let Some(get) = &mut probe.http_get {
        default_http_get(get);
    }
}

fn default_http_get(get: &mut HTTPGetAction) {
    default_str(&mut get.path, "/");
    default_str(&mut get.scheme, "HTTP");
}

/// The part of the API server's pod validation a manifest most often fails:
/// names (after defaulting, so the node suffix counts) and containers.
fn validate(pod: &Pod) -> Result<(), String> {
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    check_name("metadata.name", name, is_dns1123_subdomain, SUBDOMAIN_RULE)?;
    let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
    check_name(
        "metadata.namespace",
        namespace,
        is_dns1123_label,
        LABEL_RULE,
    )?;
    let spec = pod.spec.as_ref();
    let containers = spec.map(|s| s.containers.as_slice()).unwrap_or_default();
    if containers.is_empty() {
        return Err("spec.containers: at least one container is required".to_owned());
    }
    let init = spec
        .and_then(|s| s.init_containers.as_deref())
        .unwrap_or_default();
    let mut names = HashSet::new();
    for c in init.iter().chain(containers) {
        check_name("container name", &c.name, is_dns1123_label, LABEL_RULE)?;
        if !names.insert(c.name.as_str()) {
            return Err(format!("container name {:?} is used twice", c.name));
        }
        if c.image.as_deref().is_none_or(|i| i.trim().is_empty()) {
            return Err(format!("container {:?}: image is required", c.name));
        }
    }
    Ok(())
}

const SUBDOMAIN_RULE: &str = "DNS-1123 subdomain (at most 253 characters: lower-case letters, \
     digits, '-' and '.', each dot-separated part starting and ending with a letter or digit)";
const LABEL_RULE: &str = "DNS-1123 label (at most 63 characters: lower-case letters, digits \
     and '-', starting and ending with a letter or digit)";

fn check_name(what: &str, name: &str, valid: fn(&str) -> bool, rule: &str) -> Result<(), String> {
    if valid(name) {
        Ok(())
    } else {
        Err(format!("{what} {name:?} is not a valid {rule}"))
    }
}

/// RFC 1123 label: at most 63 of `[a-z0-9-]`, alphanumeric at both ends.
fn is_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    let alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    !b.is_empty()
        && b.len() <= 63
        && b.iter().all(|c| alnum(c) || *c == b'-')
        && alnum(&b[0])
        && alnum(&b[b.len() - 1])
}

/// RFC 1123 subdomain: at most 253 characters of dot-separated labels.
fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns1123_label)
}

/// Go's RFC3339Nano in UTC: trailing zeros of the fraction (and a bare `.`)
/// dropped, as `kubetypes.NewTimestamp().GetString()` writes `config.seen`.
fn rfc3339_nano(t: SystemTime) -> String {
    // Before 1970 (a clock that is that wrong) reads as the epoch.
    let since = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = i64::try_from(since.as_secs()).unwrap_or(i64::MAX);
    let time = DateTime::from_timestamp(secs, since.subsec_nanos()).unwrap_or_default();
    let full = time.to_rfc3339_opts(SecondsFormat::Nanos, true);
    // "…:05.120000000Z" → "…:05.12Z"; "…:05.000000000Z" → "…:05Z".
    let body = full.trim_end_matches('Z').trim_end_matches('0');
    format!("{}Z", body.trim_end_matches('.'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const POD_YAML: &str = "\
apiVersion: v1
kind: Pod
metadata:
  name: web
  labels:
    app: web
spec:
  containers:
  - name: nginx
    image: nginx:1.25
    ports:
    - containerPort: 80
  - name: side
    image: busybox
";

    const POD_JSON: &str = r#"{"apiVersion":"v1","kind":"Pod",
        "metadata":{"name":"api","namespace":"kube-system"},
        "spec":{"containers":[{"name":"c","image":"registry:5000/app:latest",
          "livenessProbe":{"httpGet":{"port":8080}}}]}}"#;

    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> Self {
            use std::sync::atomic::{AtomicU32, Ordering};
            static N: AtomicU32 = AtomicU32::new(0);
            let n = N.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir().join(format!(
                "armlet-static-pods-{tag}-{}-{n}",
                std::process::id()
            ));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }

        fn write(&self, name: &str, content: &str) -> PathBuf {
            let path = self.0.join(name);
            fs::write(&path, content).unwrap();
            path
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn ok_pods(dir: &Path, node: &str) -> Vec<Pod> {
        read_manifests(dir, node)
            .unwrap()
            .into_iter()
            .map(Result::unwrap)
            .collect()
    }

    fn errors(dir: &Path, node: &str) -> Vec<String> {
        read_manifests(dir, node)
            .unwrap()
            .into_iter()
            .filter_map(Result::err)
            .map(|e| e.to_string())
            .collect()
    }

    #[test]
    fn yaml_manifest_is_defaulted_as_the_kubelet_does() {
        let dir = TempDir::new("yaml");
        let path = dir.write("web.yaml", POD_YAML);
        let pods = ok_pods(&dir.0, "Pi-Node1");
        assert_eq!(pods.len(), 1);
        let pod = &pods[0];
        let meta = &pod.metadata;
        assert_eq!(meta.name.as_deref(), Some("web-pi-node1"));
        assert_eq!(meta.namespace.as_deref(), Some("default"));
        let uid = meta.uid.as_deref().unwrap();
        assert_eq!(uid.len(), 32);
        assert!(uid.bytes().all(|b| b.is_ascii_hexdigit()));
        let ann = meta.annotations.as_ref().unwrap();
        assert_eq!(ann[CONFIG_HASH_ANNOTATION], uid);
        assert_eq!(ann[CONFIG_SOURCE_ANNOTATION], "file");
        let seen = &ann[CONFIG_SEEN_ANNOTATION];
        assert!(seen.ends_with('Z') && DateTime::parse_from_rfc3339(seen).is_ok());
        assert_eq!(meta.labels.as_ref().unwrap()["app"], "web");
        assert!(is_static_pod(pod) && !is_mirror_pod(pod));
        assert_eq!(config_hash(pod), Some(uid));

        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(spec.node_name.as_deref(), Some("Pi-Node1"));
        assert_eq!(spec.restart_policy.as_deref(), Some("Always"));
        assert_eq!(spec.dns_policy.as_deref(), Some("ClusterFirst"));
        assert_eq!(spec.termination_grace_period_seconds, Some(30));
        assert_eq!(spec.scheduler_name.as_deref(), Some("default-scheduler"));
        assert_eq!(spec.security_context, Some(PodSecurityContext::default()));
        assert_eq!(spec.enable_service_links, Some(true));
        assert_eq!(
            spec.tolerations.as_deref(),
            Some(
                &[Toleration {
                    operator: Some("Exists".into()),
                    effect: Some("NoExecute".into()),
                    ..Default::default()
                }][..]
            )
        );
        let [nginx, side] = &spec.containers[..] else {
            panic!("two containers");
        };
        assert_eq!(nginx.image_pull_policy.as_deref(), Some("IfNotPresent"));
        assert_eq!(side.image_pull_policy.as_deref(), Some("Always"));
        for c in [nginx, side] {
            assert_eq!(
                c.termination_message_path.as_deref(),
                Some("/dev/termination-log")
            );
            assert_eq!(c.termination_message_policy.as_deref(), Some("File"));
        }
        let port = &nginx.ports.as_ref().unwrap()[0];
        assert_eq!(port.protocol.as_deref(), Some("TCP"));
        assert_eq!(port.host_port, None);
        assert_eq!(
            pod.status.as_ref().unwrap().phase.as_deref(),
            Some("Pending")
        );
        // The UID covers the node and the path as given.
        assert_eq!(
            uid,
            file_pod_uid(
                &serde_yaml_ng::from_str(POD_YAML).unwrap(),
                "Pi-Node1",
                &path
            )
        );
    }

    #[test]
    fn json_manifest_keeps_its_namespace_and_gets_probe_defaults() {
        let dir = TempDir::new("json");
        dir.write("api.json", POD_JSON);
        let pods = ok_pods(&dir.0, "n1");
        let pod = &pods[0];
        assert_eq!(pod.metadata.name.as_deref(), Some("api-n1"));
        assert_eq!(pod.metadata.namespace.as_deref(), Some("kube-system"));
        let c = &pod.spec.as_ref().unwrap().containers[0];
        // A registry port is not a tag: `:latest` is.
        assert_eq!(c.image_pull_policy.as_deref(), Some("Always"));
        let probe = c.liveness_probe.as_ref().unwrap();
        assert_eq!(probe.timeout_seconds, Some(1));
        assert_eq!(probe.period_seconds, Some(10));
        assert_eq!(probe.success_threshold, Some(1));
        assert_eq!(probe.failure_threshold, Some(3));
        let get = probe.http_get.as_ref().unwrap();
        assert_eq!(get.path.as_deref(), Some("/"));
        assert_eq!(get.scheme.as_deref(), Some("HTTP"));
    }

    #[test]
    fn host_network_ports_limits_and_volumes_are_defaulted() {
        let dir = TempDir::new("extra");
        dir.write(
            "p.yaml",
            "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  hostNetwork: true\n  \
             containers:\n  - name: c\n    image: app@sha256:abc\n    ports: [{containerPort: 9100}]\n    \
             resources: {limits: {memory: 64Mi}}\n  \
             volumes: [{name: scratch}, {name: cfg, configMap: {name: x}}, {name: h, hostPath: {path: /x}}]\n",
        );
        let pod = &ok_pods(&dir.0, "n")[0];
        let spec = pod.spec.as_ref().unwrap();
        let c = &spec.containers[0];
        assert_eq!(c.image_pull_policy.as_deref(), Some("IfNotPresent"));
        assert_eq!(c.ports.as_ref().unwrap()[0].host_port, Some(9100));
        let requests = c.resources.as_ref().unwrap().requests.as_ref().unwrap();
        assert_eq!(requests["memory"].0, "64Mi");
        let volumes = spec.volumes.as_ref().unwrap();
        assert!(volumes[0].empty_dir.is_some());
        assert_eq!(
            volumes[1].config_map.as_ref().unwrap().default_mode,
            Some(0o644)
        );
        assert!(volumes[1].empty_dir.is_none());
        assert_eq!(
            volumes[2].host_path.as_ref().unwrap().type_.as_deref(),
            Some("")
        );
    }

    #[test]
    fn uid_is_stable_and_differs_between_nodes_and_paths() {
        let dir = TempDir::new("uid");
        dir.write("a.yaml", POD_YAML);
        // Same pod, other formatting and a comment: same object, same UID.
        let reformatted = POD_YAML.replace("  name: web\n", "  name: \"web\"   # the site\n");
        dir.write("b.yaml", &reformatted);
        let uid = |pod: &Pod| pod.metadata.uid.clone().unwrap();
        let first = ok_pods(&dir.0, "n1");
        let again = ok_pods(&dir.0, "n1");
        assert_eq!(uid(&first[0]), uid(&again[0]));
        assert_eq!(uid(&first[1]), uid(&again[1]));
        assert_ne!(uid(&first[0]), uid(&first[1]), "paths differ");
        let other_node = ok_pods(&dir.0, "n2");
        assert_ne!(uid(&first[0]), uid(&other_node[0]));

        // A change to the pod is a new UID.
        dir.write("a.yaml", &POD_YAML.replace("nginx:1.25", "nginx:1.26"));
        assert_ne!(uid(&ok_pods(&dir.0, "n1")[0]), uid(&first[0]));
        // A UID in the manifest is kept, and is the config hash.
        dir.write(
            "a.yaml",
            &POD_YAML.replace("  name: web\n", "  name: web\n  uid: fixed-1\n"),
        );
        let pod = &ok_pods(&dir.0, "n1")[0];
        assert_eq!(uid(pod), "fixed-1");
        assert_eq!(config_hash(pod), Some("fixed-1"));
    }

    #[test]
    fn existing_no_execute_toleration_is_not_repeated() {
        let dir = TempDir::new("tol");
        dir.write(
            "p.yaml",
            &format!("{POD_YAML}  tolerations:\n  - operator: Exists\n    effect: NoExecute\n  - key: k\n    operator: Exists\n"),
        );
        let pod = &ok_pods(&dir.0, "n")[0];
        assert_eq!(
            pod.spec
                .as_ref()
                .unwrap()
                .tolerations
                .as_ref()
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn bad_manifests_are_named_by_file() {
        let dir = TempDir::new("bad");
        dir.write("1-bad.yaml", "apiVersion: v1\nkind: Pod\nmetadata: [\n");
        dir.write(
            "2-deploy.yaml",
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n",
        );
        dir.write(
            "3-upper.yaml",
            &POD_YAML.replace("name: web", "name: Web_1"),
        );
        dir.write(
            "4-ns.yaml",
            &POD_YAML.replace("  name: web\n", "  name: web\n  namespace: a.b\n"),
        );
        dir.write("5-empty.yaml", "");
        dir.write(
            "6-nocontainers.json",
            r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"x"},"spec":{"containers":[]}}"#,
        );
        dir.write(
            "7-noname.yaml",
            "apiVersion: v1\nkind: Pod\nspec: {containers: [{name: c, image: i}]}\n",
        );
        dir.write(
            "8-types.yaml",
            "apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec: {containers: 3}\n",
        );
        dir.write("9-good.yaml", POD_YAML);
        let results = read_manifests(&dir.0, "node").unwrap();
        assert_eq!(results.len(), 9);
        assert!(results[8].is_ok());
        let errs = errors(&dir.0, "node");
        assert_eq!(errs.len(), 8, "{errs:#?}");
        for (err, file) in errs.iter().zip([
            "1-bad.yaml",
            "2-deploy.yaml",
            "3-upper.yaml",
            "4-ns.yaml",
            "5-empty.yaml",
            "6-nocontainers.json",
            "7-noname.yaml",
            "8-types.yaml",
        ]) {
            assert!(err.contains(file), "{err} names {file}");
        }
        assert!(errs[0].contains("cannot parse"), "{}", errs[0]);
        assert!(errs[1].contains("\"Deployment\""), "{}", errs[1]);
        assert!(
            errs[2].contains("metadata.name \"Web_1-node\""),
            "{}",
            errs[2]
        );
        assert!(
            errs[3].contains("metadata.namespace \"a.b\""),
            "{}",
            errs[3]
        );
        assert!(errs[5].contains("at least one container"), "{}", errs[5]);
        assert!(errs[6].contains("metadata.name is required"), "{}", errs[6]);
        assert!(matches!(
            &results[1],
            Err(ManifestError::WrongKind { kind, .. }) if kind == "Deployment"
        ));
    }

    #[test]
    fn dotfiles_and_subdirectories_are_skipped() {
        let dir = TempDir::new("dot");
        dir.write(".web.yaml.swp", "garbage");
        dir.write(".hidden.yaml", POD_YAML);
        fs::create_dir(dir.0.join("sub")).unwrap();
        fs::write(dir.0.join("sub/p.yaml"), POD_YAML).unwrap();
        dir.write("web.yaml", POD_YAML);
        let results = read_manifests(&dir.0, "n").unwrap();
        assert_eq!(results.len(), 1);
        assert!(results[0].is_ok());
    }

    #[test]
    fn missing_directory_is_empty_and_a_file_path_is_one_manifest() {
        let dir = TempDir::new("missing");
        assert!(read_manifests(&dir.0.join("none"), "n").unwrap().is_empty());
        let file = dir.write("only.yaml", POD_YAML);
        assert_eq!(ok_pods(&file, "n").len(), 1);
    }

    #[test]
    fn scan_reports_only_changes_and_keeps_first_seen() {
        let dir = TempDir::new("scan");
        let mut source = ManifestDir::new(dir.0.join("manifests"), "n");
        // Before the directory exists: an empty set, reported once.
        assert_eq!(source.scan(), Some(vec![]));
        assert_eq!(source.scan(), None);
        fs::create_dir(dir.0.join("manifests")).unwrap();
        assert_eq!(source.scan(), None, "an empty directory is no change");

        let m = dir.0.join("manifests");
        fs::write(m.join("web.yaml"), POD_YAML).unwrap();
        let first = source.scan().unwrap();
        assert_eq!(first.len(), 1);
        let seen = |pods: &[Pod]| {
            pods[0].metadata.annotations.as_ref().unwrap()[CONFIG_SEEN_ANNOTATION].clone()
        };
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(source.scan(), None);

        // Another file: the set is reported again; web keeps its seen time.
        fs::write(m.join("api.json"), POD_JSON).unwrap();
        let second = source.scan().unwrap();
        assert_eq!(second.len(), 2);
        let web: Vec<Pod> = second
            .iter()
            .filter(|p| p.metadata.name.as_deref() == Some("web-n"))
            .cloned()
            .collect();
        assert_eq!(seen(&web), seen(&first));
        assert_eq!(web[0], first[0]);

        // A bad file is a change, left out of the set and kept as an error.
        fs::write(m.join("bad.yaml"), "kind: Service\n").unwrap();
        assert_eq!(source.scan().unwrap().len(), 2);
        assert_eq!(source.errors().len(), 1);
        assert!(source.errors()[0].to_string().contains("bad.yaml"));
        assert_eq!(source.scan(), None);

        // Changed content: new pod version, seen anew.
        fs::write(m.join("web.yaml"), POD_YAML.replace("1.25", "1.26")).unwrap();
        let third = source.scan().unwrap();
        let web = third
            .iter()
            .find(|p| p.metadata.name.as_deref() == Some("web-n"))
            .unwrap();
        assert_ne!(web.metadata.uid, first[0].metadata.uid);
        assert_ne!(
            web.metadata.annotations.as_ref().unwrap()[CONFIG_SEEN_ANNOTATION],
            seen(&first)
        );

        // Removal.
        fs::remove_file(m.join("web.yaml")).unwrap();
        fs::remove_file(m.join("bad.yaml")).unwrap();
        let fourth = source.scan().unwrap();
        assert_eq!(fourth.len(), 1);
        assert!(source.errors().is_empty());
        assert_eq!(source.scan(), None);
    }

    #[test]
    fn mirror_pod_is_what_the_kubelet_posts() {
        let dir = TempDir::new("mirror");
        dir.write("web.yaml", POD_YAML);
        let mut pod = ok_pods(&dir.0, "n1").remove(0);
        pod.metadata.resource_version = Some("12".into());
        let hash = config_hash(&pod).unwrap().to_owned();
        let mirror = mirror_pod(&pod, "n1", "node-uid-1");
        assert_eq!(mirror.metadata.uid, None);
        assert_eq!(mirror.metadata.resource_version, None);
        assert_eq!(mirror.status, None);
        assert_eq!(mirror.metadata.name, pod.metadata.name);
        assert_eq!(mirror.metadata.namespace.as_deref(), Some("default"));
        assert_eq!(mirror.spec, pod.spec);
        let ann = mirror.metadata.annotations.as_ref().unwrap();
        assert_eq!(ann[CONFIG_MIRROR_ANNOTATION], hash);
        assert_eq!(ann[CONFIG_HASH_ANNOTATION], hash);
        assert_eq!(ann[CONFIG_SOURCE_ANNOTATION], "file");
        assert_eq!(
            mirror.metadata.owner_references,
            Some(vec![OwnerReference {
                api_version: "v1".into(),
                kind: "Node".into(),
                name: "n1".into(),
                uid: "node-uid-1".into(),
                controller: Some(true),
                block_owner_deletion: None,
            }])
        );
        assert!(is_mirror_pod(&mirror));
        assert!(!is_static_pod(&mirror));
        assert_eq!(config_hash(&mirror), Some(hash.as_str()));
        // What the kubelet gets from the API is neither.
        let mut api = Pod::default();
        assert!(!is_static_pod(&api) && !is_mirror_pod(&api));
        api.metadata.annotations = Some([(CONFIG_SOURCE_ANNOTATION.into(), "api".into())].into());
        assert!(!is_static_pod(&api));
    }

    #[test]
    fn names_and_timestamps() {
        assert!(is_dns1123_label("a-1"));
        assert!(!is_dns1123_label("-a") && !is_dns1123_label("a-") && !is_dns1123_label(""));
        assert!(!is_dns1123_label(&"a".repeat(64)));
        assert!(is_dns1123_subdomain("a.b-c.d"));
        assert!(!is_dns1123_subdomain("a..b") && !is_dns1123_subdomain("A"));
        let t = SystemTime::UNIX_EPOCH + Duration::new(1_700_000_000, 120_000_000);
        assert_eq!(rfc3339_nano(t), "2023-11-14T22:13:20.12Z");
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(rfc3339_nano(t), "2023-11-14T22:13:20Z");
    }
}
