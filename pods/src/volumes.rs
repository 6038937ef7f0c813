//! A pod's volumes: planned from the spec, materialised under the pod directory
//! as the kubelet lays it out (`<root>/pods/<uid>/volumes/<plugin>/<name>`, the
//! plugin's name escaped, e.g. `kubernetes.io~empty-dir`), and removed with it.
//!
//! - `emptyDir`: a directory (mode 0777); `medium: Memory` is a tmpfs sized
//!   like the kubelet sizes it (the smallest of `sizeLimit`, the pod's memory
//!   limit and the node's allocatable memory).
//! - `hostPath`: the node path itself, after the `type` check.
//! - `configMap`, `secret`, `downwardAPI`, `projected` (ConfigMaps, Secrets,
//!   downward API and service-account tokens): files written with the
//!   kubelet's AtomicWriter scheme ([`AtomicWriter`]), mounted read-only;
//!   secrets and projected volumes on tmpfs when the agent asks for it.
//!
//! Payload paths are checked as the kubelet's AtomicWriter checks them: a key
//! like `../../etc/passwd` or `/etc/passwd` is refused, and nothing is ever
//! written through a symlink. `subPath` mounts are resolved inside the volume
//! and bind-mounted from an open file descriptor ([`SafeSubPaths`]), so a
//! container cannot swap a path component for a symlink out of the volume.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::hash::{BuildHasher, Hasher};
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt, symlink};
use std::path::{Component, Path, PathBuf};

use k8s_openapi::api::core::v1::{
    ConfigMap, DownwardAPIVolumeFile, KeyToPath, Pod, Secret, Volume,
};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::mount::{MntFlags, MsFlags};
use nix::sys::stat::{Mode, SFlag};

use crate::env::{PodContext, field_value, resource_field_value};
use crate::objects::{LookupError, ObjectSource};
use crate::quantity::Quantity;

/// Why a volume could not be planned, set up or removed.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// A pod UID or volume name that cannot be one path component.
    #[error("{what} {name:?} cannot name a directory")]
    InvalidName {
        /// What it names.
        what: &'static str,
        /// The name.
        name: String,
    },
    /// A volume type armlet does not provide.
    #[error("volume {volume:?}: {kind} volumes are not supported on this node")]
    Unsupported {
        /// The volume.
        volume: String,
        /// Its type.
        kind: String,
    },
    /// A file mode outside 0..=0777.
    #[error(
        "volume {volume:?}: mode {mode} must be a number between 0 and 0777 (octal), both inclusive"
    )]
    InvalidMode {
        /// The volume.
        volume: String,
        /// The mode.
        mode: i32,
    },
    /// A payload path the kubelet's AtomicWriter refuses (absolute, `..`,
    /// too long, starting with `..`).
    #[error("invalid path: {0}")]
    InvalidPath(String),
    /// Setting the volume up failed for a reason the user can act on
    /// (missing ConfigMap or key, hostPath type mismatch, …); displayed as the
    /// kubelet's `FailedMount` event message.
    #[error("MountVolume.SetUp failed for volume {volume:?} : {message}")]
    SetUp {
        /// The volume.
        volume: String,
        /// The reason.
        message: String,
    },
    /// The object cache could not answer.
    #[error("volume {volume:?}: {source}")]
    Lookup {
        /// The volume.
        volume: String,
        /// The lookup error.
        source: LookupError,
    },
    /// A `subPath` that cannot be provided.
    #[error("{0}")]
    SubPath(String),
    /// A file system operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// Something is still mounted where a directory tree was to be removed.
    #[error("{0} is (or holds) a mount point still in use; not removing across it")]
    Busy(PathBuf),
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> VolumeError + 'a {
    move |source| VolumeError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

fn nix_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(Errno) -> VolumeError + 'a {
    move |e| VolumeError::Io {
        op,
        path: path.to_path_buf(),
        source: io::Error::from(e),
    }
}

/// Plugin directory names, as the kubelet escapes them (`/` → `~`).
pub mod plugins {
    /// emptyDir.
    pub const EMPTY_DIR: &str = "kubernetes.io~empty-dir";
    /// configMap.
    pub const CONFIG_MAP: &str = "kubernetes.io~configmap";
    /// secret.
    pub const SECRET: &str = "kubernetes.io~secret";
    /// downwardAPI.
    pub const DOWNWARD_API: &str = "kubernetes.io~downward-api";
    /// projected.
    pub const PROJECTED: &str = "kubernetes.io~projected";
}

/// Default file mode of configMap, secret, downwardAPI and projected files (0644).
pub const DEFAULT_MODE: u32 = 0o644;

/// A hostPath volume's `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostPathType {
    /// `""`: no check.
    Unset,
    /// Create an empty directory (0755) if missing.
    DirectoryOrCreate,
    /// Must be a directory.
    Directory,
    /// Create an empty file (0644) if missing.
    FileOrCreate,
    /// Must be a file.
    File,
    /// Must be a Unix socket.
    Socket,
    /// Must be a character device.
    CharDevice,
    /// Must be a block device.
    BlockDevice,
}

impl HostPathType {
    fn parse(volume: &str, s: Option<&str>) -> Result<Self, VolumeError> {
        Ok(match s.unwrap_or_default() {
            "" => Self::Unset,
            "DirectoryOrCreate" => Self::DirectoryOrCreate,
            "Directory" => Self::Directory,
            "FileOrCreate" => Self::FileOrCreate,
            "File" => Self::File,
            "Socket" => Self::Socket,
            "CharDevice" => Self::CharDevice,
            "BlockDevice" => Self::BlockDevice,
            other => {
                return Err(VolumeError::SetUp {
                    volume: volume.to_owned(),
                    message: format!("{other} is an invalid volume type"),
                });
            }
        })
    }
}

/// How a planned volume is provided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeSource {
    /// An emptyDir: a directory, or a tmpfs of `size` bytes (None: tmpfs default).
    EmptyDir {
        /// `medium: Memory`.
        memory: bool,
        /// The tmpfs size in bytes.
        size: Option<i64>,
    },
    /// A node path.
    HostPath {
        /// The required type.
        kind: HostPathType,
    },
    /// Files projected from API objects (configMap, secret, downwardAPI,
    /// projected), written by the [`AtomicWriter`].
    Files {
        /// On tmpfs.
        memory: bool,
    },
}

/// One volume of the plan.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedVolume {
    /// The volume's name.
    pub name: String,
    /// Its path on the node (what containers bind-mount).
    pub path: PathBuf,
    /// Always mounted read-only (projections, as the kubelet forces since
    /// CVE-2017-1002102).
    pub read_only: bool,
    /// How it is provided.
    pub source: VolumeSource,
    /// The volume as the pod declares it.
    pub spec: Volume,
}

/// Where a pod's volumes go and how.
#[derive(Debug, Clone, PartialEq)]
pub struct VolumePlan {
    /// `<root>/pods/<uid>`.
    pub pod_dir: PathBuf,
    /// The volumes, in spec order.
    pub volumes: Vec<PlannedVolume>,
}

/// Choices the agent makes for its node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlanOptions {
    /// Secrets and projected volumes (service-account tokens) on tmpfs, never
    /// touching the SD card, as the kubelet keeps them.
    pub secrets_in_memory: bool,
    /// The node's allocatable memory: the upper bound of a memory emptyDir.
    pub node_allocatable_memory: Option<Quantity>,
}

/// A volume ready to be mounted into containers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountedVolume {
    /// Its path on the node.
    pub path: PathBuf,
    /// Must be mounted read-only whatever the volumeMount says.
    pub read_only: bool,
}

/// Checks that `name` can be one path component.
fn component(what: &'static str, name: &str) -> Result<(), VolumeError> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && name != "."
        && name != ".."
        && !name.contains(['/', '\0']);
    if ok {
        Ok(())
    } else {
        Err(VolumeError::InvalidName {
            what,
            name: name.to_owned(),
        })
    }
}

/// The pod's directory: `<root>/pods/<uid>`.
pub fn pod_dir(kubelet_root: &Path, pod: &Pod) -> Result<PathBuf, VolumeError> {
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    component("pod UID", uid)?;
    Ok(kubelet_root.join("pods").join(uid))
}

/// The pod's memory limit as its cgroup would have it (`ResourceConfigForPod`):
/// the sum of the app containers' limits, at least the largest init
/// container's; `None` when any container has no limit.
fn pod_memory_limit(pod: &Pod) -> Option<i64> {
    let spec = pod.spec.as_ref()?;
    let limit = |c: &k8s_openapi::api::core::v1::Container| {
        c.resources
            .as_ref()
            .and_then(|r| r.limits.as_ref())
            .and_then(|l| l.get("memory"))
            .and_then(|q| Quantity::try_from(q).ok())
            .map(|q| q.value())
            .filter(|v| *v > 0)
    };
    let mut sum: i64 = 0;
    for c in &spec.containers {
        sum = sum.saturating_add(limit(c)?);
    }
    let mut max_init: i64 = 0;
    for c in spec.init_containers.iter().flatten() {
        max_init = max_init.max(limit(c)?);
    }
    Some(sum.max(max_init))
}

/// Plans `pod`'s volumes under `kubelet_root` (`/var/lib/kubelet` on k3s).
pub fn plan(
    pod: &Pod,
    kubelet_root: &Path,
    options: &PlanOptions,
) -> Result<VolumePlan, VolumeError> {
    let pod_dir = pod_dir(kubelet_root, pod)?;
    let volumes_dir = pod_dir.join("volumes");
    let mut volumes = Vec::new();
    let mut seen = BTreeSet::new();
    for v in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        component("volume name", &v.name)?;
        if !seen.insert(v.name.clone()) {
            return Err(VolumeError::SetUp {
                volume: v.name.clone(),
                message: "duplicate volume name".to_owned(),
            });
        }
        let in_plugin = |plugin: &str| volumes_dir.join(plugin).join(&v.name);
        let (path, read_only, source) = if let Some(e) = &v.empty_dir {
            let memory = e.medium.as_deref() == Some("Memory");
            let size = if memory {
                // calculateEmptyDirMemorySize: node allocatable, lowered to the
                // pod's memory limit, lowered to the volume's sizeLimit.
                let mut size = options.node_allocatable_memory.map(|q| q.value());
                if let Some(pod_limit) = pod_memory_limit(pod) {
                    if size.is_none_or(|s| pod_limit <= s) {
                        size = Some(pod_limit);
                    }
                }
                if let Some(q) = &e.size_limit {
                    let limit = Quantity::try_from(q).map_err(|err| VolumeError::SetUp {
                        volume: v.name.clone(),
                        message: format!("invalid sizeLimit: {err}"),
                    })?;
                    let limit = limit.value();
                    if limit > 0 && size.is_none_or(|s| limit <= s) {
                        size = Some(limit);
                    }
                }
                size
            } else {
                None
            };
            (
                in_plugin(plugins::EMPTY_DIR),
                false,
                VolumeSource::EmptyDir { memory, size },
            )
        } else if let Some(h) = &v.host_path {
            let path = PathBuf::from(&h.path);
            if !path.is_absolute() {
                return Err(VolumeError::SetUp {
                    volume: v.name.clone(),
                    message: format!("hostPath {:?} must be an absolute path", h.path),
                });
            }
            let kind = HostPathType::parse(&v.name, h.type_.as_deref())?;
            (path, false, VolumeSource::HostPath { kind })
        } else if v.config_map.is_some() {
            (
                in_plugin(plugins::CONFIG_MAP),
                true,
                VolumeSource::Files { memory: false },
            )
        } else if v.secret.is_some() {
            let memory = options.secrets_in_memory;
            (
                in_plugin(plugins::SECRET),
                true,
                VolumeSource::Files { memory },
            )
        } else if v.downward_api.is_some() {
            (
                in_plugin(plugins::DOWNWARD_API),
                true,
                VolumeSource::Files { memory: false },
            )
        } else if v.projected.is_some() {
            let memory = options.secrets_in_memory;
            (
                in_plugin(plugins::PROJECTED),
                true,
                VolumeSource::Files { memory },
            )
        } else {
            return Err(VolumeError::Unsupported {
                volume: v.name.clone(),
                kind: volume_kind(v).to_owned(),
            });
        };
        volumes.push(PlannedVolume {
            name: v.name.clone(),
            path,
            read_only,
            source,
            spec: v.clone(),
        });
    }
    Ok(VolumePlan { pod_dir, volumes })
}

/// The API name of a volume's type, for messages.
fn volume_kind(v: &Volume) -> &'static str {
    let kinds: [(&str, bool); 19] = [
        ("persistentVolumeClaim", v.persistent_volume_claim.is_some()),
        ("csi", v.csi.is_some()),
        ("ephemeral", v.ephemeral.is_some()),
        ("nfs", v.nfs.is_some()),
        ("iscsi", v.iscsi.is_some()),
        ("rbd", v.rbd.is_some()),
        ("cephfs", v.cephfs.is_some()),
        ("glusterfs", v.glusterfs.is_some()),
        ("fc", v.fc.is_some()),
        ("gitRepo", v.git_repo.is_some()),
        ("awsElasticBlockStore", v.aws_elastic_block_store.is_some()),
        ("gcePersistentDisk", v.gce_persistent_disk.is_some()),
        ("azureDisk", v.azure_disk.is_some()),
        ("azureFile", v.azure_file.is_some()),
        ("flexVolume", v.flex_volume.is_some()),
        ("image", false),
        ("cinder", v.cinder.is_some()),
        ("vsphereVolume", v.vsphere_volume.is_some()),
        ("portworxVolume", v.portworx_volume.is_some()),
    ];
    kinds
        .iter()
        .find(|(_, set)| *set)
        .map_or("unknown", |(k, _)| k)
}

/// One file of a projection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileProjection {
    /// Its content.
    pub data: Vec<u8>,
    /// Its permission bits.
    pub mode: u32,
}

/// Files to write, by path relative to the volume.
pub type Payload = BTreeMap<String, FileProjection>;

/// A service-account token request, as the agent sends it to the API
/// (`POST …/serviceaccounts/<sa>/token`, bound to the pod).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRequest<'a> {
    /// The pod's namespace.
    pub namespace: &'a str,
    /// The pod's service account.
    pub service_account: &'a str,
    /// The pod's name (bound object).
    pub pod_name: &'a str,
    /// The pod's UID (bound object).
    pub pod_uid: &'a str,
    /// The audience; `None` is the API server's.
    pub audience: Option<&'a str>,
    /// Requested lifetime (the projection's `expirationSeconds`, default 3600).
    pub expiration_seconds: i64,
}

/// Hands out service-account tokens; the agent's token manager implements it
/// over the TokenRequest API (refreshing at 80 % of the lifetime).
pub trait TokenSource {
    /// A token for `request`.
    fn token(&self, request: &TokenRequest<'_>) -> Result<String, LookupError>;
}

fn mode_of(volume: &str, mode: Option<i32>, default: u32) -> Result<u32, VolumeError> {
    match mode {
        None => Ok(default),
        Some(m) if (0..=0o777).contains(&m) => Ok(m.unsigned_abs()),
        Some(m) => Err(VolumeError::InvalidMode {
            volume: volume.to_owned(),
            mode: m,
        }),
    }
}

fn setup_err(volume: &str, message: impl Into<String>) -> VolumeError {
    VolumeError::SetUp {
        volume: volume.to_owned(),
        message: message.into(),
    }
}

/// `configmap.MakePayload`: every key, or the listed items.
fn config_map_payload(
    volume: &str,
    cm: &ConfigMap,
    items: Option<&[KeyToPath]>,
    default_mode: u32,
    optional: bool,
) -> Result<Payload, VolumeError> {
    let mut out = Payload::new();
    let value = |key: &str| {
        cm.data
            .as_ref()
            .and_then(|d| d.get(key))
            .map(|s| s.as_bytes().to_vec())
            .or_else(|| {
                cm.binary_data
                    .as_ref()
                    .and_then(|d| d.get(key))
                    .map(|b| b.0.clone())
            })
    };
    match items.filter(|i| !i.is_empty()) {
        None => {
            let keys = cm
                .data
                .iter()
                .flat_map(|d| d.keys())
                .chain(cm.binary_data.iter().flat_map(|d| d.keys()));
            for key in keys {
                if let Some(data) = value(key) {
                    out.insert(
                        key.clone(),
                        FileProjection {
                            data,
                            mode: default_mode,
                        },
                    );
                }
            }
        }
        Some(items) => {
            for item in items {
                let Some(data) = value(&item.key) else {
                    if optional {
                        continue;
                    }
                    return Err(setup_err(
                        volume,
                        format!("configmap references non-existent config key: {}", item.key),
                    ));
                };
                let mode = mode_of(volume, item.mode, default_mode)?;
                out.insert(item.path.clone(), FileProjection { data, mode });
            }
        }
    }
    Ok(out)
}

/// `secret.MakePayload`.
fn secret_payload(
    volume: &str,
    secret: &Secret,
    items: Option<&[KeyToPath]>,
    default_mode: u32,
    optional: bool,
) -> Result<Payload, VolumeError> {
    let mut out = Payload::new();
    let data = secret.data.clone().unwrap_or_default();
    match items.filter(|i| !i.is_empty()) {
        None => {
            for (key, value) in data {
                out.insert(
                    key,
                    FileProjection {
                        data: value.0,
                        mode: default_mode,
                    },
                );
            }
        }
        Some(items) => {
            for item in items {
                let Some(value) = data.get(&item.key) else {
                    if optional {
                        continue;
                    }
                    return Err(setup_err(
                        volume,
                        format!("references non-existent secret key: {}", item.key),
                    ));
                };
                let mode = mode_of(volume, item.mode, default_mode)?;
                out.insert(
                    item.path.clone(),
                    FileProjection {
                        data: value.0.clone(),
                        mode,
                    },
                );
            }
        }
    }
    Ok(out)
}

/// `downwardapi.CollectData`: metadata fields and container resources.
fn downward_payload(
    volume: &str,
    ctx: &PodContext<'_>,
    items: &[DownwardAPIVolumeFile],
    default_mode: u32,
) -> Result<Payload, VolumeError> {
    let mut out = Payload::new();
    let mut errors = Vec::new();
    for item in items {
        let mode = mode_of(volume, item.mode, default_mode)?;
        let data = if let Some(field) = &item.field_ref {
            field_value(ctx.pod, ctx.host_ips, ctx.pod_ips, field, true)
        } else if let Some(res) = &item.resource_field_ref {
            resource_field_value(ctx.pod, None, res, ctx.node)
        } else {
            Ok(String::new())
        };
        match data {
            Ok(d) => {
                out.insert(
                    item.path.clone(),
                    FileProjection {
                        data: d.into_bytes(),
                        mode,
                    },
                );
            }
            Err(e) => errors.push(e.to_string()),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        // The kubelet aggregates these: `[e1, e2]` for several.
        let message = if errors.len() == 1 {
            errors.remove(0)
        } else {
            format!("[{}]", errors.join(", "))
        };
        Err(setup_err(volume, message))
    }
}

fn lookup_err(volume: &str) -> impl FnOnce(LookupError) -> VolumeError + '_ {
    move |source| VolumeError::Lookup {
        volume: volume.to_owned(),
        source,
    }
}

/// The files of a projection volume (configMap, secret, downwardAPI,
/// projected), as the kubelet's volume plugins collect them; `Ok(None)` for
/// other volume types.
pub fn payload(
    volume: &Volume,
    ctx: &PodContext<'_>,
    objects: &dyn ObjectSource,
    tokens: &dyn TokenSource,
) -> Result<Option<Payload>, VolumeError> {
    let name = volume.name.as_str();
    let pod = ctx.pod;
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    if let Some(src) = &volume.config_map {
        let optional = src.optional == Some(true);
        let mode = mode_of(name, src.default_mode, DEFAULT_MODE)?;
        let cm = match objects
            .config_map(namespace, &src.name)
            .map_err(lookup_err(name))?
        {
            Some(cm) => cm,
            None if optional => ConfigMap::default(),
            None => {
                return Err(setup_err(
                    name,
                    format!("configmap {:?} not found", src.name),
                ));
            }
        };
        return config_map_payload(name, &cm, src.items.as_deref(), mode, optional).map(Some);
    }
    if let Some(src) = &volume.secret {
        let optional = src.optional == Some(true);
        let mode = mode_of(name, src.default_mode, DEFAULT_MODE)?;
        let secret_name = src.secret_name.as_deref().unwrap_or_default();
        let secret = match objects
            .secret(namespace, secret_name)
            .map_err(lookup_err(name))?
        {
            Some(s) => s,
            None if optional => Secret::default(),
            None => return Err(setup_err(name, format!("secret {secret_name:?} not found"))),
        };
        return secret_payload(name, &secret, src.items.as_deref(), mode, optional).map(Some);
    }
    if let Some(src) = &volume.downward_api {
        let mode = mode_of(name, src.default_mode, DEFAULT_MODE)?;
        return downward_payload(name, ctx, src.items.as_deref().unwrap_or_default(), mode)
            .map(Some);
    }
    let Some(src) = &volume.projected else {
        return Ok(None);
    };
    let default_mode = mode_of(name, src.default_mode, DEFAULT_MODE)?;
    let mut out = Payload::new();
    let mut errors: Vec<String> = Vec::new();
    for source in src.sources.iter().flatten() {
        let part = if let Some(cm_src) = &source.config_map {
            let optional = cm_src.optional == Some(true);
            match objects
                .config_map(namespace, &cm_src.name)
                .map_err(lookup_err(name))?
            {
                Some(cm) => {
                    config_map_payload(name, &cm, cm_src.items.as_deref(), default_mode, optional)
                }
                None if optional => Ok(Payload::new()),
                None => Err(setup_err(
                    name,
                    format!("configmap {:?} not found", cm_src.name),
                )),
            }
        } else if let Some(s_src) = &source.secret {
            let optional = s_src.optional == Some(true);
            match objects
                .secret(namespace, &s_src.name)
                .map_err(lookup_err(name))?
            {
                Some(s) => secret_payload(name, &s, s_src.items.as_deref(), default_mode, optional),
                None if optional => Ok(Payload::new()),
                None => Err(setup_err(
                    name,
                    format!("secret {:?} not found", s_src.name),
                )),
            }
        } else if let Some(d_src) = &source.downward_api {
            downward_payload(
                name,
                ctx,
                d_src.items.as_deref().unwrap_or_default(),
                default_mode,
            )
        } else if let Some(t_src) = &source.service_account_token {
            let spec = pod.spec.as_ref();
            let sa = spec
                .and_then(|s| s.service_account_name.as_deref())
                .filter(|s| !s.is_empty())
                .unwrap_or("default");
            let request = TokenRequest {
                namespace,
                service_account: sa,
                pod_name: pod.metadata.name.as_deref().unwrap_or_default(),
                pod_uid: pod.metadata.uid.as_deref().unwrap_or_default(),
                audience: t_src.audience.as_deref().filter(|a| !a.is_empty()),
                expiration_seconds: t_src.expiration_seconds.unwrap_or(3600),
            };
            let token = tokens.token(&request).map_err(lookup_err(name))?;
            Ok(Payload::from([(
                t_src.path.clone(),
                FileProjection {
                    data: token.into_bytes(),
                    mode: default_mode,
                },
            )]))
        } else if source.cluster_trust_bundle.is_some() {
            return Err(VolumeError::Unsupported {
                volume: name.to_owned(),
                kind: "projected clusterTrustBundle".to_owned(),
            });
        } else {
            Ok(Payload::new())
        };
        match part {
            Ok(files) => out.extend(files),
            Err(VolumeError::SetUp { message, .. }) => errors.push(message),
            Err(e) => return Err(e),
        }
    }
    if !errors.is_empty() {
        let message = if errors.len() == 1 {
            errors.remove(0)
        } else {
            format!("[{}]", errors.join(", "))
        };
        return Err(setup_err(name, message));
    }
    Ok(Some(out))
}

/// Sets every planned volume up (idempotent: the agent calls it on every sync,
/// which also refreshes projected files) and returns what containers mount.
pub fn materialise(
    plan: &VolumePlan,
    ctx: &PodContext<'_>,
    objects: &dyn ObjectSource,
    tokens: &dyn TokenSource,
) -> Result<BTreeMap<String, MountedVolume>, VolumeError> {
    let fs_group = ctx
        .pod
        .spec
        .as_ref()
        .and_then(|s| s.security_context.as_ref())
        .and_then(|sc| sc.fs_group)
        .and_then(|g| u32::try_from(g).ok());
    let mut out = BTreeMap::new();
    for v in &plan.volumes {
        match &v.source {
            VolumeSource::EmptyDir { memory, size } => {
                create_dir_all(&v.path, 0o777)?;
                if *memory && !is_tmpfs_mount(&v.path)? {
                    mount_tmpfs(&v.path, *size)?;
                }
                // SetVolumeOwnership when the volume is set up; files the
                // containers create later inherit the group (setgid).
                if let Some(gid) = fs_group {
                    let meta = fs::metadata(&v.path).map_err(io_err("stat", &v.path))?;
                    if meta.gid() != gid || meta.mode() & 0o2000 == 0 {
                        own_tree(&v.path, gid, false)?;
                    }
                }
            }
            VolumeSource::HostPath { kind } => check_host_path(&v.name, &v.path, *kind)?,
            VolumeSource::Files { memory } => {
                let files = payload(&v.spec, ctx, objects, tokens)?.unwrap_or_default();
                create_dir_all(&v.path, 0o755)?;
                if *memory && !is_tmpfs_mount(&v.path)? {
                    mount_tmpfs(&v.path, None)?;
                }
                AtomicWriter::new(&v.path).write(&files, fs_group)?;
            }
        }
        out.insert(
            v.name.clone(),
            MountedVolume {
                path: v.path.clone(),
                read_only: v.read_only,
            },
        );
    }
    Ok(out)
}

fn create_dir_all(path: &Path, mode: u32) -> Result<(), VolumeError> {
    fs::create_dir_all(path).map_err(io_err("create", path))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io_err("chmod", path))
}

/// `hostPathTypeChecker`: the kubelet's checks and messages.
fn check_host_path(volume: &str, path: &Path, kind: HostPathType) -> Result<(), VolumeError> {
    let fail = |what: &str| {
        Err(setup_err(
            volume,
            format!(
                "hostPath type check failed: {} is not {what}",
                path.display()
            ),
        ))
    };
    let meta = fs::metadata(path);
    let exists = meta.is_ok();
    use std::os::unix::fs::FileTypeExt;
    match kind {
        HostPathType::Unset => {
            // containerd creates a missing bind source as a directory.
            if !exists {
                fs::create_dir_all(path).map_err(io_err("create", path))?;
            }
        }
        HostPathType::DirectoryOrCreate if !exists => {
            fs::create_dir_all(path).map_err(io_err("create", path))?;
            fs::set_permissions(path, fs::Permissions::from_mode(0o755))
                .map_err(io_err("chmod", path))?;
        }
        HostPathType::DirectoryOrCreate | HostPathType::Directory => {
            if !meta.is_ok_and(|m| m.is_dir()) {
                return fail("a directory");
            }
        }
        HostPathType::FileOrCreate if !exists => {
            OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o644)
                .open(path)
                .map_err(io_err("create", path))?;
        }
        HostPathType::FileOrCreate | HostPathType::File => {
            if !meta.is_ok_and(|m| m.is_file()) {
                return fail("a file");
            }
        }
        HostPathType::Socket => {
            if !meta.is_ok_and(|m| m.file_type().is_socket()) {
                return fail("a socket file");
            }
        }
        HostPathType::CharDevice => {
            if !meta.is_ok_and(|m| m.file_type().is_char_device()) {
                return fail("a character device");
            }
        }
        HostPathType::BlockDevice => {
            if !meta.is_ok_and(|m| m.file_type().is_block_device()) {
                return fail("a block device");
            }
        }
    }
    Ok(())
}

/// Gives a volume tree to `gid` (fsGroup) as `SetVolumeOwnership` does: group
/// `gid`, group read (and write when not read-only) added, directories setgid.
fn own_tree(root: &Path, gid: u32, read_only: bool) -> Result<(), VolumeError> {
    let mask = if read_only { 0o440 } else { 0o660 };
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = fs::symlink_metadata(&path).map_err(io_err("stat", &path))?;
        if meta.file_type().is_symlink() {
            continue;
        }
        nix::unistd::chown(&path, None, Some(nix::unistd::Gid::from_raw(gid)))
            .map_err(nix_err("chown", &path))?;
        let mut mode = (meta.mode() & 0o7777) | mask;
        if meta.is_dir() {
            mode |= 0o2000 | 0o110;
            for entry in fs::read_dir(&path).map_err(io_err("list", &path))? {
                stack.push(entry.map_err(io_err("list", &path))?.path());
            }
        }
        fs::set_permissions(&path, fs::Permissions::from_mode(mode))
            .map_err(io_err("chmod", &path))?;
    }
    Ok(())
}

/// The AtomicWriter's path checks (`validatePath`): not empty, relative, at
/// most 4096 bytes, no `..` element, elements at most 255 bytes, and not
/// starting with `..` (which names the writer's own entries). Returns the
/// cleaned path.
pub fn validate_payload_path(path: &str) -> Result<String, VolumeError> {
    let bad = |m: String| Err(VolumeError::InvalidPath(m));
    if path.is_empty() {
        return bad(format!("must not be empty: {path:?}"));
    }
    if path.starts_with('/') {
        return bad(format!("must be relative path: {path}"));
    }
    if path.len() > 4096 {
        return bad("must be less than or equal to 4096 characters".to_owned());
    }
    if path.contains('\0') {
        return bad(format!("must not contain NUL: {path:?}"));
    }
    let items: Vec<&str> = path.split('/').collect();
    for item in &items {
        if *item == ".." {
            return bad(format!("must not contain '..': {path}"));
        }
        if item.len() > 255 {
            return bad("filenames must be less than or equal to 255 characters".to_owned());
        }
    }
    if items[0].starts_with("..") && items[0].len() > 2 {
        return bad(format!("must not start with '..': {path}"));
    }
    let clean: Vec<&str> = items
        .into_iter()
        .filter(|i| !i.is_empty() && *i != ".")
        .collect();
    if clean.is_empty() {
        return bad(format!("must not be empty: {path:?}"));
    }
    Ok(clean.join("/"))
}

/// The name of the symlink to the current payload.
const DATA_DIR: &str = "..data";
/// Its temporary name while swapped.
const DATA_DIR_TMP: &str = "..data_tmp";

/// The kubelet's AtomicWriter: a payload is written to a fresh
/// `..<timestamp>` directory, `..data` is re-pointed at it with one rename,
/// and user-visible names are symlinks through `..data`. Readers see the old
/// files or the new ones, never a mix or a half-written file.
#[derive(Debug)]
pub struct AtomicWriter<'a> {
    dir: &'a Path,
}

impl<'a> AtomicWriter<'a> {
    /// A writer for the volume directory `dir` (which must exist).
    pub fn new(dir: &'a Path) -> Self {
        Self { dir }
    }

    /// Makes the volume hold exactly `payload`; files owned by group `fs_group`
    /// when given. Nothing changes when the payload is what is there already.
    pub fn write(&self, payload: &Payload, fs_group: Option<u32>) -> Result<(), VolumeError> {
        let mut clean = BTreeMap::new();
        for (path, file) in payload {
            clean.insert(validate_payload_path(path)?, file);
        }
        // A path that is both a file and a directory of another cannot be written.
        for path in clean.keys() {
            let mut prefix = String::new();
            for part in path.split('/') {
                if !prefix.is_empty() && clean.contains_key(&prefix) {
                    return Err(VolumeError::InvalidPath(format!(
                        "{prefix} is both a file and a directory in the payload"
                    )));
                }
                if !prefix.is_empty() {
                    prefix.push('/');
                }
                prefix.push_str(part);
            }
        }
        let old = self.current_dir();
        let unchanged = match &old {
            Some(old_name) => self
                .read_tree(&self.dir.join(old_name))?
                .is_some_and(|tree| {
                    tree.len() == clean.len()
                        && clean.iter().all(|(p, f)| {
                            tree.get(p).is_some_and(|(data, mode)| {
                                *data == f.data && (fs_group.is_some() || *mode == f.mode)
                            })
                        })
                }),
            None => false,
        };
        let new_top: BTreeSet<&str> = clean.keys().filter_map(|p| p.split('/').next()).collect();
        if !unchanged {
            let ts_name = self.write_timestamped(&clean, fs_group)?;
            // Swap `..data` atomically.
            let tmp = self.dir.join(DATA_DIR_TMP);
            let _ = fs::remove_file(&tmp);
            symlink(&ts_name, &tmp).map_err(io_err("symlink", &tmp))?;
            let data = self.dir.join(DATA_DIR);
            fs::rename(&tmp, &data).map_err(io_err("rename into", &data))?;
            sync_dir(self.dir)?;
        }
        // User-visible names: `<top>` → `..data/<top>`.
        for top in &new_top {
            let visible = self.dir.join(top);
            let target = Path::new(DATA_DIR).join(top);
            match fs::read_link(&visible) {
                Ok(t) if t == target => {}
                Ok(_) => {
                    fs::remove_file(&visible).map_err(io_err("remove", &visible))?;
                    symlink(&target, &visible).map_err(io_err("symlink", &visible))?;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    symlink(&target, &visible).map_err(io_err("symlink", &visible))?;
                }
                Err(_) => {
                    // Something that is not a symlink where a name goes: not ours.
                    return Err(VolumeError::InvalidPath(format!(
                        "{} exists and is not a symlink the writer made",
                        visible.display()
                    )));
                }
            }
        }
        // Names of removed keys, and timestamped directories no longer current
        // (the previous payload, or leftovers of an interrupted write).
        let current = self.current_dir();
        for entry in fs::read_dir(self.dir).map_err(io_err("list", self.dir))? {
            let entry = entry.map_err(io_err("list", self.dir))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let path = entry.path();
            let is_link = entry.file_type().map(|t| t.is_symlink()).unwrap_or(false);
            if name == DATA_DIR {
                continue;
            }
            if name == DATA_DIR_TMP {
                // Left by an interrupted swap.
                fs::remove_file(&path).map_err(io_err("remove", &path))?;
                continue;
            }
            if name.starts_with("..") {
                if current.as_deref() != Some(&*name) && !is_link {
                    remove_tree(&path)?;
                }
                continue;
            }
            if is_link && !new_top.contains(&*name) {
                fs::remove_file(&path).map_err(io_err("remove", &path))?;
            }
        }
        Ok(())
    }

    /// The directory `..data` points to, if it is one of ours.
    fn current_dir(&self) -> Option<String> {
        let target = fs::read_link(self.dir.join(DATA_DIR)).ok()?;
        let name = target.to_str()?;
        let ok = name.starts_with("..")
            && name != ".."
            && !name.contains('/')
            && name != DATA_DIR
            && name != DATA_DIR_TMP;
        ok.then(|| name.to_owned())
    }

    /// Files under `dir`: relative path → (content, mode). `None` if it is not
    /// a plain tree (a symlink inside: not ours).
    #[allow(clippy::type_complexity)]
    fn read_tree(
        &self,
        dir: &Path,
    ) -> Result<Option<BTreeMap<String, (Vec<u8>, u32)>>, VolumeError> {
        let mut out = BTreeMap::new();
        let mut stack = vec![(dir.to_path_buf(), String::new())];
        while let Some((path, rel)) = stack.pop() {
            let entries = match fs::read_dir(&path) {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(io_err("list", &path)(e)),
            };
            for entry in entries {
                let entry = entry.map_err(io_err("list", &path))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                let child_rel = if rel.is_empty() {
                    name
                } else {
                    format!("{rel}/{name}")
                };
                let meta =
                    fs::symlink_metadata(entry.path()).map_err(io_err("stat", &entry.path()))?;
                if meta.is_dir() {
                    stack.push((entry.path(), child_rel));
                } else if meta.is_file() {
                    let data = fs::read(entry.path()).map_err(io_err("read", &entry.path()))?;
                    out.insert(child_rel, (data, meta.mode() & 0o777));
                } else {
                    return Ok(None);
                }
            }
        }
        Ok(Some(out))
    }

    /// Writes the payload into a new `..<timestamp>.<random>` directory;
    /// returns its name.
    fn write_timestamped(
        &self,
        payload: &BTreeMap<String, &FileProjection>,
        fs_group: Option<u32>,
    ) -> Result<String, VolumeError> {
        let random = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish()
            % 1_000_000_000;
        let name = format!(
            "{}{random:09}",
            k8s_openapi::chrono::Utc::now().format("..%Y_%m_%d_%H_%M_%S.")
        );
        let ts_dir = self.dir.join(&name);
        fs::create_dir(&ts_dir).map_err(io_err("create", &ts_dir))?;
        fs::set_permissions(&ts_dir, fs::Permissions::from_mode(0o755))
            .map_err(io_err("chmod", &ts_dir))?;
        for (rel, file) in payload {
            let full = ts_dir.join(rel);
            if let Some(parent) = full.parent() {
                if parent != ts_dir {
                    // Only inside our own fresh directory: no symlink can be there.
                    fs::create_dir_all(parent).map_err(io_err("create", parent))?;
                }
            }
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(file.mode)
                .custom_flags(nix::libc::O_NOFOLLOW)
                .open(&full)
                .map_err(io_err("create", &full))?;
            f.write_all(&file.data).map_err(io_err("write", &full))?;
            // The mode exactly as asked, whatever the umask.
            f.set_permissions(fs::Permissions::from_mode(file.mode))
                .map_err(io_err("chmod", &full))?;
            f.sync_all().map_err(io_err("sync", &full))?;
        }
        if let Some(gid) = fs_group {
            own_tree(&ts_dir, gid, true)?;
        }
        sync_dir(&ts_dir)?;
        Ok(name)
    }
}

fn sync_dir(dir: &Path) -> Result<(), VolumeError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("sync", dir))
}

/// Whether `path` is the root of a tmpfs mount.
pub fn is_tmpfs_mount(path: &Path) -> Result<bool, VolumeError> {
    let fs = nix::sys::statfs::statfs(path).map_err(nix_err("statfs", path))?;
    if fs.filesystem_type() != nix::sys::statfs::TMPFS_MAGIC {
        return Ok(false);
    }
    let parent = path.parent().unwrap_or(Path::new("/"));
    let (me, up) = (
        fs::metadata(path).map_err(io_err("stat", path))?,
        fs::metadata(parent).map_err(io_err("stat", parent))?,
    );
    // A tmpfs below a tmpfs (e.g. /tmp) is a mount point only if the devices differ.
    Ok(me.dev() != up.dev() || path == Path::new("/"))
}

/// Mounts a tmpfs of `size` bytes (unbounded: the kernel's default, half the
/// RAM) on `dir`, as the kubelet does for `medium: Memory` emptyDirs and
/// memory-backed secrets. Needs root.
pub fn mount_tmpfs(dir: &Path, size: Option<i64>) -> Result<(), VolumeError> {
    let options = size.filter(|s| *s > 0).map(|s| format!("size={s}"));
    nix::mount::mount(
        Some("tmpfs"),
        dir,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        options.as_deref(),
    )
    .map_err(nix_err("mount tmpfs on", dir))?;
    tracing::debug!(dir = %dir.display(), ?size, "mounted tmpfs");
    Ok(())
}

/// Unmounts whatever is mounted on `dir` (lazily, so a container still using
/// it keeps it until it lets go).
pub fn unmount(dir: &Path) -> Result<(), VolumeError> {
    nix::mount::umount2(dir, MntFlags::MNT_DETACH).map_err(nix_err("unmount", dir))
}

/// Decodes mountinfo's octal escapes (`\040` for a space).
fn unescape_mountinfo(s: &str) -> OsString {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    OsString::from(std::ffi::OsStr::from_bytes(&out))
}

/// Mount points at or below `dir`, deepest first.
fn mounts_under(dir: &Path) -> Result<Vec<PathBuf>, VolumeError> {
    let info = Path::new("/proc/self/mountinfo");
    let text = fs::read_to_string(info).map_err(io_err("read", info))?;
    let mut found: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_mountinfo(p)))
        .filter(|p| p.starts_with(dir))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found.dedup();
    Ok(found)
}

/// Removes a pod's directory: unmounts every tmpfs and subPath bind mount
/// under it, then deletes the tree without following symlinks and without
/// crossing into another file system (a mount that survived would otherwise
/// have its content — a hostPath's! — deleted).
pub fn remove_pod_dir(pod_dir: &Path) -> Result<(), VolumeError> {
    let Ok(meta) = fs::symlink_metadata(pod_dir) else {
        return Ok(());
    };
    if !meta.is_dir() {
        // A symlink (or file) in its place goes, never what it points to.
        return fs::remove_file(pod_dir).map_err(io_err("remove", pod_dir));
    }
    // Mount points are listed by canonical paths: resolve the parent only.
    let canonical = match (pod_dir.parent(), pod_dir.file_name()) {
        (Some(parent), Some(name)) if !parent.as_os_str().is_empty() => fs::canonicalize(parent)
            .map_err(io_err("resolve", parent))?
            .join(name),
        _ => pod_dir.to_path_buf(),
    };
    let pod_dir = canonical.as_path();
    for m in mounts_under(pod_dir)? {
        // Stacked mounts: unmount until nothing is left there.
        for _ in 0..16 {
            match nix::mount::umount2(&m, MntFlags::MNT_DETACH) {
                Ok(()) => {}
                Err(Errno::EINVAL | Errno::ENOENT) => break,
                Err(e) => return Err(nix_err("unmount", &m)(e)),
            }
        }
    }
    if !mounts_under(pod_dir)?.is_empty() {
        return Err(VolumeError::Busy(pod_dir.to_path_buf()));
    }
    remove_tree(pod_dir)
}

/// Deletes a tree on one file system, never following symlinks.
fn remove_tree(root: &Path) -> Result<(), VolumeError> {
    let top = fs::symlink_metadata(root).map_err(io_err("stat", root))?;
    if !top.is_dir() {
        return fs::remove_file(root).map_err(io_err("remove", root));
    }
    let dev = top.dev();
    // Depth-first: (path, children listed?)
    let mut stack = vec![(root.to_path_buf(), false)];
    while let Some((path, listed)) = stack.pop() {
        if listed {
            fs::remove_dir(&path).map_err(io_err("remove", &path))?;
            continue;
        }
        stack.push((path.clone(), true));
        for entry in fs::read_dir(&path).map_err(io_err("list", &path))? {
            let entry = entry.map_err(io_err("list", &path))?;
            let child = entry.path();
            let meta = fs::symlink_metadata(&child).map_err(io_err("stat", &child))?;
            if meta.is_dir() {
                if meta.dev() != dev {
                    return Err(VolumeError::Busy(child));
                }
                stack.push((child, false));
            } else {
                fs::remove_file(&child).map_err(io_err("remove", &child))?;
            }
        }
    }
    Ok(())
}

/// Provides `subPath` mounts: turns (volume, sub path) into a node path that is
/// safe to bind-mount into a container.
pub trait SubPaths {
    /// A node path for `sub_path` (already checked relative, without `..`) of
    /// the volume at `volume_path`, mounted for `container` as its
    /// `index`-th volumeMount.
    fn prepare(
        &self,
        volume: &str,
        volume_path: &Path,
        sub_path: &str,
        container: &str,
        index: usize,
    ) -> Result<PathBuf, VolumeError>;
}

/// The kubelet's safe subpaths: the sub path is resolved inside the volume
/// (symlinks followed only while they stay inside), missing directories are
/// created with the volume root's mode, each component is opened without
/// following symlinks, and the result is bind-mounted from its file
/// descriptor to `<pod dir>/volume-subpaths/<volume>/<container>/<index>`.
/// Needs root.
#[derive(Debug, Clone)]
pub struct SafeSubPaths {
    /// The pod's directory.
    pub pod_dir: PathBuf,
}

fn open_at(dir: Option<&OwnedFd>, path: &Path, flags: OFlag) -> Result<OwnedFd, Errno> {
    let fd = nix::fcntl::openat(
        dir.map(|d| d.as_raw_fd()),
        path,
        flags | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    // SAFETY: openat just returned this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Resolves `sub_path` below the directory `base`, following symlinks only
/// while they stay inside; returns the symlink-free relative components.
fn resolve_inside(base: &OwnedFd, sub_path: &str) -> Result<Vec<OsString>, VolumeError> {
    let escape = || VolumeError::SubPath(format!("subpath {sub_path:?} not within volume path"));
    let mut queue: std::collections::VecDeque<OsString> = Path::new(sub_path)
        .components()
        .map(|c| c.as_os_str().to_owned())
        .collect();
    let mut resolved: Vec<OsString> = Vec::new();
    let mut links = 0;
    while let Some(part) = queue.pop_front() {
        if part == "." {
            continue;
        }
        if part == ".." {
            resolved.pop().ok_or_else(escape)?;
            continue;
        }
        let mut so_far: PathBuf = resolved.iter().collect();
        so_far.push(&part);
        match nix::sys::stat::fstatat(
            Some(base.as_raw_fd()),
            &so_far,
            AtFlags::AT_SYMLINK_NOFOLLOW,
        ) {
            Ok(st) if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFLNK => {
                links += 1;
                if links > 40 {
                    return Err(VolumeError::SubPath(format!(
                        "subpath {sub_path:?}: too many levels of symbolic links"
                    )));
                }
                let target = nix::fcntl::readlinkat(Some(base.as_raw_fd()), &so_far)
                    .map_err(|e| VolumeError::SubPath(format!("subpath {sub_path:?}: {e}")))?;
                let target = PathBuf::from(target);
                if target.is_absolute() {
                    return Err(escape());
                }
                for c in target.components().rev() {
                    match c {
                        Component::Normal(n) => queue.push_front(n.to_owned()),
                        Component::ParentDir => queue.push_front("..".into()),
                        _ => {}
                    }
                }
            }
            Ok(_) | Err(Errno::ENOENT) => resolved.push(part),
            Err(e) => return Err(VolumeError::SubPath(format!("subpath {sub_path:?}: {e}"))),
        }
    }
    Ok(resolved)
}

impl SubPaths for SafeSubPaths {
    fn prepare(
        &self,
        volume: &str,
        volume_path: &Path,
        sub_path: &str,
        container: &str,
        index: usize,
    ) -> Result<PathBuf, VolumeError> {
        component("volume name", volume)?;
        component("container name", container)?;
        let base = open_at(None, volume_path, OFlag::O_PATH | OFlag::O_DIRECTORY)
            .map_err(nix_err("open", volume_path))?;
        let base_mode = fs::metadata(volume_path)
            .map_err(io_err("stat", volume_path))?
            .mode()
            & 0o7777;
        let parts = resolve_inside(&base, sub_path)?;
        // Walk without following anything, creating what is missing.
        let mut fd = base;
        let mut is_dir = true;
        for (i, part) in parts.iter().enumerate() {
            let last = i + 1 == parts.len();
            let flags = OFlag::O_PATH | OFlag::O_NOFOLLOW;
            let opened = match open_at(Some(&fd), Path::new(part), flags) {
                Err(Errno::ENOENT) => {
                    let mode = Mode::from_bits_truncate(base_mode);
                    let made = nix::sys::stat::mkdirat(Some(fd.as_raw_fd()), Path::new(part), mode)
                        .and_then(|()| {
                            // The volume root's mode whatever the umask (SafeMakeDir),
                            // through a descriptor: a path could be swapped.
                            let dir = open_at(Some(&fd), Path::new(part), OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW)?;
                            nix::sys::stat::fchmod(dir.as_raw_fd(), mode)?;
                            Ok(dir)
                        });
                    match made {
                        Ok(dir) => Ok(dir),
                        Err(Errno::EEXIST) => open_at(Some(&fd), Path::new(part), flags),
                        Err(e) => {
                            return Err(VolumeError::SubPath(format!(
                                "failed to create subPath directory for volumeMount {volume:?} of container {container:?}: {e}"
                            )));
                        }
                    }
                }
                other => other,
            }
            .map_err(|e| VolumeError::SubPath(format!("subpath {sub_path:?}: {e}")))?;
            let st = nix::sys::stat::fstat(opened.as_raw_fd())
                .map_err(|e| VolumeError::SubPath(format!("subpath {sub_path:?}: {e}")))?;
            let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
            if kind == SFlag::S_IFLNK {
                // Swapped for a symlink since it was resolved.
                return Err(VolumeError::SubPath(format!(
                    "subpath {sub_path:?} not within volume path (symlink raced in)"
                )));
            }
            is_dir = kind == SFlag::S_IFDIR;
            if !last && !is_dir {
                return Err(VolumeError::SubPath(format!(
                    "subpath {sub_path:?}: not a directory"
                )));
            }
            fd = opened;
        }
        let target_dir = self
            .pod_dir
            .join("volume-subpaths")
            .join(volume)
            .join(container);
        fs::create_dir_all(&target_dir).map_err(io_err("create", &target_dir))?;
        let target = target_dir.join(index.to_string());
        if fs::symlink_metadata(&target).is_ok() {
            // A previous instance's bind: replace it.
            let _ = nix::mount::umount2(&target, MntFlags::MNT_DETACH);
            remove_tree(&target)?;
        }
        if is_dir {
            fs::create_dir(&target).map_err(io_err("create", &target))?;
        } else {
            File::create(&target).map_err(io_err("create", &target))?;
        }
        let source = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
        nix::mount::mount(
            Some(&source),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(nix_err("bind subPath onto", &target))?;
        Ok(target)
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;
    use crate::env::NodeAllocatable;
    use crate::objects::MapObjects;
    use crate::testutil::{object, pod, require_root, temp_dir};

    struct Tokens;
    impl TokenSource for Tokens {
        fn token(&self, r: &TokenRequest<'_>) -> Result<String, LookupError> {
            Ok(format!(
                "token-for-{}/{}-{}-{}s",
                r.namespace, r.service_account, r.pod_uid, r.expiration_seconds
            ))
        }
    }

    fn files(pairs: &[(&str, &str)]) -> Payload {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    FileProjection {
                        data: v.as_bytes().to_vec(),
                        mode: 0o644,
                    },
                )
            })
            .collect()
    }

    fn objects() -> MapObjects {
        let mut o = MapObjects::default();
        o.add_config_map(object::<ConfigMap>(
            "metadata: {name: kube-root-ca.crt, namespace: default}\ndata: {ca.crt: CERT}",
        ));
        o.add_config_map(object::<ConfigMap>(
            "metadata: {name: app, namespace: default}\ndata: {a.conf: A, b.conf: B}\nbinaryData: {blob: AAEC}",
        ));
        o.add_secret(object::<Secret>(
            "metadata: {name: creds, namespace: default}\ndata: {user: YWRtaW4=, pass: aHVudGVyMg==}",
        ));
        o
    }

    const POD: &str = include_str!("../testdata/busybox-pod-status.yaml");

    fn with_ctx<R>(pod: &Pod, f: impl FnOnce(&PodContext<'_>) -> R) -> R {
        let host = vec!["198.18.0.2".to_owned()];
        let ips = vec!["10.42.0.9".to_owned()];
        let node = NodeAllocatable::default();
        f(&PodContext {
            pod,
            host_ips: &host,
            pod_ips: &ips,
            node: &node,
        })
    }

    #[test]
    fn payload_paths_refuse_traversal_like_atomic_writer() {
        for (bad, msg) in [
            ("../../etc/passwd", "must not contain '..'"),
            ("a/../../b", "must not contain '..'"),
            ("..", "must not contain '..'"),
            ("/etc/passwd", "must be relative path"),
            ("", "must not be empty"),
            ("..data", "must not start with '..'"),
            ("..2021_01_01/x", "must not start with '..'"),
            (".", "must not be empty"),
            ("a\0b", "must not contain NUL"),
        ] {
            let e = validate_payload_path(bad).unwrap_err().to_string();
            assert!(e.contains(msg), "{bad:?}: {e}");
        }
        assert!(validate_payload_path(&"x".repeat(256)).is_err());
        assert!(validate_payload_path(&"a/".repeat(2100)).is_err());
        assert_eq!(validate_payload_path("a//b/./c").unwrap(), "a/b/c");
        assert_eq!(
            validate_payload_path("..a").unwrap_err().to_string(),
            "invalid path: must not start with '..': ..a"
        );
        assert_eq!(validate_payload_path(".hidden").unwrap(), ".hidden");
    }

    #[test]
    fn atomic_writer_layout_and_update() {
        let dir = temp_dir("atomic");
        let w = AtomicWriter::new(&dir);
        w.write(&files(&[("a", "1"), ("sub/b", "2"), ("gone", "x")]), None)
            .unwrap();
        let data = fs::read_link(dir.join("..data")).unwrap();
        let ts = data.to_str().unwrap().to_owned();
        assert!(ts.starts_with("..") && ts.len() > 20, "{ts}");
        assert_eq!(fs::read_link(dir.join("a")).unwrap(), Path::new("..data/a"));
        assert_eq!(
            fs::read_link(dir.join("sub")).unwrap(),
            Path::new("..data/sub")
        );
        assert_eq!(fs::read_to_string(dir.join("sub/b")).unwrap(), "2");
        let mode = fs::metadata(dir.join(&ts).join("a")).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o644);

        // Same payload: nothing rewritten.
        w.write(&files(&[("a", "1"), ("sub/b", "2"), ("gone", "x")]), None)
            .unwrap();
        assert_eq!(
            fs::read_link(dir.join("..data")).unwrap().to_str().unwrap(),
            ts
        );

        // Update: changed file replaced, removed key gone, old dir removed.
        let mut next = files(&[("a", "1 changed"), ("sub/b", "2"), ("new", "n")]);
        next.get_mut("new").unwrap().mode = 0o400;
        w.write(&next, None).unwrap();
        let ts2 = fs::read_link(dir.join("..data")).unwrap();
        assert_ne!(ts2.to_str().unwrap(), ts);
        assert_eq!(fs::read_to_string(dir.join("a")).unwrap(), "1 changed");
        assert_eq!(fs::read_to_string(dir.join("new")).unwrap(), "n");
        assert_eq!(fs::metadata(dir.join("new")).unwrap().mode() & 0o777, 0o400);
        assert!(
            fs::symlink_metadata(dir.join("gone")).is_err(),
            "removed key's name gone"
        );
        assert!(!dir.join(&ts).exists(), "previous payload removed");
        let mut names: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let mut want = vec![
            "..data".to_owned(),
            ts2.to_str().unwrap().to_owned(),
            "a".into(),
            "new".into(),
            "sub".into(),
        ];
        want.sort();
        assert_eq!(names, want);

        // Mode change alone rewrites too.
        let mut again = next.clone();
        again.get_mut("new").unwrap().mode = 0o440;
        w.write(&again, None).unwrap();
        assert_eq!(fs::metadata(dir.join("new")).unwrap().mode() & 0o777, 0o440);

        // Empty payload: empty volume.
        w.write(&Payload::new(), None).unwrap();
        let left: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left.len(), 2, "only ..data and its directory: {left:?}");
        remove_pod_dir(&dir).unwrap();
    }

    #[test]
    fn atomic_writer_refuses_bad_payloads_without_touching_the_volume() {
        let dir = temp_dir("atomic-bad");
        let w = AtomicWriter::new(&dir);
        w.write(&files(&[("ok", "1")]), None).unwrap();
        let before = fs::read_link(dir.join("..data")).unwrap();
        for bad in ["../../etc/passwd", "/etc/passwd", "..data", "x/../../y"] {
            let e = w
                .write(&files(&[("ok", "2"), (bad, "evil")]), None)
                .unwrap_err();
            assert!(matches!(e, VolumeError::InvalidPath(_)), "{bad}: {e}");
        }
        let e = w
            .write(&files(&[("a", "1"), ("a/b", "2")]), None)
            .unwrap_err();
        assert!(matches!(e, VolumeError::InvalidPath(_)), "{e}");
        assert_eq!(fs::read_link(dir.join("..data")).unwrap(), before);
        assert_eq!(fs::read_to_string(dir.join("ok")).unwrap(), "1");
        assert!(!Path::new("/etc/passwd.evil").exists());
        remove_pod_dir(&dir).unwrap();
    }

    #[test]
    fn atomic_writer_never_follows_a_planted_data_link() {
        let dir = temp_dir("atomic-link");
        let outside = temp_dir("atomic-outside");
        // Someone points ..data outside: the writer treats it as foreign,
        // writes a fresh directory and re-points the link inside.
        symlink(&outside, dir.join("..data")).unwrap();
        AtomicWriter::new(&dir)
            .write(&files(&[("a", "1")]), None)
            .unwrap();
        assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
        let target = fs::read_link(dir.join("..data")).unwrap();
        assert!(target.to_str().unwrap().starts_with(".."));
        assert!(outside.exists(), "not removed either");
        remove_pod_dir(&dir).unwrap();
        remove_pod_dir(&outside).unwrap();
    }

    #[test]
    fn config_map_secret_and_items_payloads() {
        let p = pod(POD);
        let o = objects();
        let v: Volume = object("name: cfg\nconfigMap: {name: app}");
        let got = with_ctx(&p, |ctx| payload(&v, ctx, &o, &Tokens))
            .unwrap()
            .unwrap();
        assert_eq!(got.keys().collect::<Vec<_>>(), ["a.conf", "b.conf", "blob"]);
        assert_eq!(got["blob"].data, [0, 1, 2]);
        let v: Volume = object(
            "name: cfg\nconfigMap: {name: app, defaultMode: 256, items: [{key: a.conf, path: conf/a}, {key: b.conf, path: b, mode: 384}]}",
        );
        let got = with_ctx(&p, |ctx| payload(&v, ctx, &o, &Tokens))
            .unwrap()
            .unwrap();
        assert_eq!(
            got["conf/a"],
            FileProjection {
                data: b"A".to_vec(),
                mode: 0o400
            }
        );
        assert_eq!(got["b"].mode, 0o600);
        let v: Volume = object("name: cfg\nconfigMap: {name: app, items: [{key: nope, path: x}]}");
        let e = with_ctx(&p, |ctx| payload(&v, ctx, &o, &Tokens)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "MountVolume.SetUp failed for volume \"cfg\" : configmap references non-existent config key: nope"
        );
        let v: Volume = object(
            "name: cfg\nconfigMap: {name: app, optional: true, items: [{key: nope, path: x}]}",
        );
        assert!(
            with_ctx(&p, |ctx| payload(&v, ctx, &o, &Tokens))
                .unwrap()
                .unwrap()
                .is_empty()
        );
        let v: Volume = object("name: cfg\nconfigMap: {name: ghost}");
        let e = with_ctx(&p, |ctx| payload(&v, ctx, &o, &Tokens)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "MountVolume.SetUp failed for volume \"cfg\" : configmap \"ghost\" not found"
        );
        let v: Volume = object("name: cfg\nconfigMap: {name: ghost, optional: true}");
        assert!(
            with_ctx(&p, |ctx| payload(&v, ctx, &o, &Tokens))
                .unwrap()
                .unwrap()
                .is_empty()
        );

        let v: Volume = object("name: s\nsecret: {secretName: creds}");
        let got = with_ctx(&p, |ctx| payload(&v, ctx, &o, &Tokens))
            .unwrap()
            .unwrap();
        assert_eq!(got["pass"].data, b"hunter2");
        let v: Volume =
            object("name: s\nsecret: {secretName: creds, items: [{key: missing, path: m}]}");
        let e = with_ctx(&p, |ctx| payload(&v, ctx, &o, &Tokens)).unwrap_err();
        assert!(
            e.to_string()
                .ends_with("references non-existent secret key: missing"),
            "{e}"
        );
        let v: Volume = object("name: s\nsecret: {secretName: nope}");
        let e = with_ctx(&p, |ctx| payload(&v, ctx, &o, &Tokens)).unwrap_err();
        assert!(e.to_string().ends_with("secret \"nope\" not found"), "{e}");
        let v: Volume = object("name: s\nsecret: {secretName: creds, defaultMode: 4096}");
        assert!(matches!(
            with_ctx(&p, |ctx| payload(&v, ctx, &o, &Tokens)),
            Err(VolumeError::InvalidMode { .. })
        ));
        let v: Volume =
            object("name: s\nsecret: {secretName: creds, items: [{key: user, path: u, mode: -1}]}");
        assert!(matches!(
            with_ctx(&p, |ctx| payload(&v, ctx, &o, &Tokens)),
            Err(VolumeError::InvalidMode { .. })
        ));
    }

    #[test]
    fn downward_api_volume_only_projects_metadata() {
        let mut p = pod(POD);
        p.metadata.labels = Some(BTreeMap::from([
            ("b".into(), "2".into()),
            ("a".into(), "1".into()),
        ]));
        let o = objects();
        let v: Volume = object(
            "name: info\ndownwardAPI:\n  items:\n  - {path: labels, fieldRef: {fieldPath: metadata.labels}}\n  - {path: ns, fieldRef: {fieldPath: metadata.namespace}}\n  - {path: mem, resourceFieldRef: {containerName: busybox, resource: requests.memory}}",
        );
        let got = with_ctx(&p, |ctx| payload(&v, ctx, &o, &Tokens))
            .unwrap()
            .unwrap();
        assert_eq!(got["labels"].data, b"a=\"1\"\nb=\"2\"");
        assert_eq!(got["ns"].data, b"default");
        assert_eq!(got["mem"].data, b"0");
        let v: Volume = object(
            "name: info\ndownwardAPI:\n  items:\n  - {path: node, fieldRef: {fieldPath: spec.nodeName}}",
        );
        let e = with_ctx(&p, |ctx| payload(&v, ctx, &o, &Tokens)).unwrap_err();
        assert!(
            e.to_string()
                .ends_with("unsupported fieldPath: spec.nodeName"),
            "{e}"
        );
    }

    #[test]
    fn projected_service_account_volume_of_the_recorded_pod() {
        let p = pod(POD);
        let v = p.spec.as_ref().unwrap().volumes.as_ref().unwrap()[0].clone();
        let got = with_ctx(&p, |ctx| payload(&v, ctx, &objects(), &Tokens))
            .unwrap()
            .unwrap();
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            ["ca.crt", "namespace", "token"]
        );
        assert_eq!(got["ca.crt"].data, b"CERT");
        assert_eq!(got["namespace"].data, b"default");
        assert_eq!(
            String::from_utf8_lossy(&got["token"].data),
            "token-for-default/default-cc66e7e4-f128-4a46-a7a3-7ee4ef474e41-3607s"
        );
        assert!(got.values().all(|f| f.mode == 0o644), "defaultMode 420");
        // Without the CA ConfigMap the volume cannot be set up.
        let e = with_ctx(&p, |ctx| payload(&v, ctx, &MapObjects::default(), &Tokens)).unwrap_err();
        assert!(
            e.to_string()
                .ends_with("configmap \"kube-root-ca.crt\" not found"),
            "{e}"
        );
    }

    #[test]
    fn plan_lays_volumes_out_like_the_kubelet() {
        let p = pod(r#"
metadata: {name: p, namespace: default, uid: 1234}
spec:
  containers:
  - {name: a, resources: {limits: {memory: 256Mi}}}
  volumes:
  - {name: scratch, emptyDir: {}}
  - {name: shm, emptyDir: {medium: Memory}}
  - {name: small, emptyDir: {medium: Memory, sizeLimit: 64Mi}}
  - {name: big, emptyDir: {medium: Memory, sizeLimit: 1Gi}}
  - {name: logs, hostPath: {path: /var/log, type: Directory}}
  - {name: cfg, configMap: {name: app}}
  - {name: s, secret: {secretName: creds}}
  - {name: info, downwardAPI: {items: []}}
  - {name: token, projected: {sources: []}}
"#);
        let opts = PlanOptions {
            secrets_in_memory: true,
            node_allocatable_memory: Some(Quantity::parse("1Gi").unwrap()),
        };
        let plan = plan(&p, Path::new("/var/lib/kubelet"), &opts).unwrap();
        assert_eq!(plan.pod_dir, Path::new("/var/lib/kubelet/pods/1234"));
        let get = |n: &str| plan.volumes.iter().find(|v| v.name == n).unwrap();
        assert_eq!(
            get("scratch").path,
            Path::new("/var/lib/kubelet/pods/1234/volumes/kubernetes.io~empty-dir/scratch")
        );
        assert_eq!(
            get("scratch").source,
            VolumeSource::EmptyDir {
                memory: false,
                size: None
            }
        );
        assert_eq!(
            get("shm").source,
            VolumeSource::EmptyDir {
                memory: true,
                size: Some(256 << 20)
            },
            "pod limit below allocatable"
        );
        assert_eq!(
            get("small").source,
            VolumeSource::EmptyDir {
                memory: true,
                size: Some(64 << 20)
            }
        );
        assert_eq!(
            get("big").source,
            VolumeSource::EmptyDir {
                memory: true,
                size: Some(256 << 20)
            },
            "sizeLimit above the pod limit is ignored"
        );
        assert_eq!(get("logs").path, Path::new("/var/log"));
        assert_eq!(
            get("cfg").path,
            Path::new("/var/lib/kubelet/pods/1234/volumes/kubernetes.io~configmap/cfg")
        );
        assert!(
            get("cfg").read_only
                && get("s").read_only
                && get("info").read_only
                && get("token").read_only
        );
        assert_eq!(
            get("s").path,
            Path::new("/var/lib/kubelet/pods/1234/volumes/kubernetes.io~secret/s")
        );
        assert_eq!(get("s").source, VolumeSource::Files { memory: true });
        assert_eq!(
            get("info").path,
            Path::new("/var/lib/kubelet/pods/1234/volumes/kubernetes.io~downward-api/info")
        );
        assert_eq!(
            get("token").path,
            Path::new("/var/lib/kubelet/pods/1234/volumes/kubernetes.io~projected/token")
        );
        assert_eq!(get("cfg").source, VolumeSource::Files { memory: false });
    }

    #[test]
    fn plan_refuses_malformed_pods() {
        let root = Path::new("/var/lib/kubelet");
        let opts = PlanOptions::default();
        for (yaml, want) in [
            ("metadata: {uid: '../x'}\nspec: {containers: []}", "pod UID"),
            ("metadata: {uid: ''}\nspec: {containers: []}", "pod UID"),
            (
                "metadata: {uid: u}\nspec: {containers: [], volumes: [{name: '..', emptyDir: {}}]}",
                "volume name",
            ),
            (
                "metadata: {uid: u}\nspec: {containers: [], volumes: [{name: 'a/b', emptyDir: {}}]}",
                "volume name",
            ),
            (
                "metadata: {uid: u}\nspec: {containers: [], volumes: [{name: v, hostPath: {path: rel}}]}",
                "absolute",
            ),
            (
                "metadata: {uid: u}\nspec: {containers: [], volumes: [{name: v, hostPath: {path: /x, type: Weird}}]}",
                "Weird is an invalid volume type",
            ),
            (
                "metadata: {uid: u}\nspec: {containers: [], volumes: [{name: v, nfs: {server: s, path: /}}]}",
                "nfs volumes are not supported",
            ),
            (
                "metadata: {uid: u}\nspec: {containers: [], volumes: [{name: v}]}",
                "unknown volumes are not supported",
            ),
            (
                "metadata: {uid: u}\nspec: {containers: [], volumes: [{name: v, emptyDir: {}}, {name: v, emptyDir: {}}]}",
                "duplicate",
            ),
            (
                "metadata: {uid: u}\nspec: {containers: [], volumes: [{name: v, emptyDir: {medium: Memory, sizeLimit: huge}}]}",
                "invalid sizeLimit",
            ),
        ] {
            let e = plan(&pod(yaml), root, &opts).unwrap_err().to_string();
            assert!(e.contains(want), "{yaml}: {e}");
        }
    }

    #[test]
    fn host_path_type_checks() {
        let dir = temp_dir("hostpath");
        let file = dir.join("file");
        fs::write(&file, "x").unwrap();
        let check = |p: &Path, k| check_host_path("v", p, k).map_err(|e| e.to_string());
        assert!(check(&dir, HostPathType::Directory).is_ok());
        assert_eq!(
            check(&file, HostPathType::Directory).unwrap_err(),
            format!(
                "MountVolume.SetUp failed for volume \"v\" : hostPath type check failed: {} is not a directory",
                file.display()
            )
        );
        assert!(check(&dir.join("missing"), HostPathType::Directory).is_err());
        assert!(check(&file, HostPathType::File).is_ok());
        assert!(
            check(&dir, HostPathType::File)
                .unwrap_err()
                .ends_with("is not a file")
        );
        let created = dir.join("made/deep");
        check(&created, HostPathType::DirectoryOrCreate).unwrap();
        assert_eq!(fs::metadata(&created).unwrap().mode() & 0o777, 0o755);
        let new_file = dir.join("new-file");
        check(&new_file, HostPathType::FileOrCreate).unwrap();
        assert!(new_file.is_file());
        assert!(
            check(&dir, HostPathType::FileOrCreate)
                .unwrap_err()
                .ends_with("is not a file")
        );
        assert!(
            check(&file, HostPathType::Socket)
                .unwrap_err()
                .ends_with("is not a socket file")
        );
        let sock = dir.join("sock");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        assert!(check(&sock, HostPathType::Socket).is_ok());
        assert!(check(Path::new("/dev/null"), HostPathType::CharDevice).is_ok());
        assert!(
            check(&file, HostPathType::CharDevice)
                .unwrap_err()
                .ends_with("is not a character device")
        );
        assert!(
            check(Path::new("/dev/null"), HostPathType::BlockDevice)
                .unwrap_err()
                .ends_with("is not a block device")
        );
        check(&dir.join("unset"), HostPathType::Unset).unwrap();
        assert!(dir.join("unset").is_dir());
        remove_pod_dir(&dir).unwrap();
    }

    #[test]
    fn tmpfs_mount_as_root() {
        require_root("tmpfs_mount_as_root");
        let dir = temp_dir("tmpfs");
        let mnt = dir.join("m");
        fs::create_dir(&mnt).unwrap();
        assert!(!is_tmpfs_mount(&mnt).unwrap());
        mount_tmpfs(&mnt, Some(1 << 20)).unwrap();
        assert!(is_tmpfs_mount(&mnt).unwrap());
        let st = nix::sys::statvfs::statvfs(&mnt).unwrap();
        assert_eq!(
            st.blocks() as u64 * st.fragment_size() as u64,
            1 << 20,
            "size= honoured"
        );
        // Writing more than the size fails: the limit is real.
        let too_big = vec![0u8; 2 << 20];
        assert!(fs::write(mnt.join("big"), &too_big).is_err());
        fs::remove_file(mnt.join("big")).unwrap();
        fs::write(mnt.join("f"), "x").unwrap();
        // Removing the pod dir unmounts first and never crosses the mount.
        remove_pod_dir(&dir).unwrap();
        assert!(!dir.exists());
    }

    #[test]
    fn materialise_pod_volumes_as_root() {
        require_root("materialise_pod_volumes_as_root");
        let root = temp_dir("materialise");
        let mut p = pod(POD);
        p.spec.as_mut().unwrap().volumes.as_mut().unwrap().extend([
            object::<Volume>("name: scratch\nemptyDir: {}"),
            object::<Volume>("name: mem\nemptyDir: {medium: Memory, sizeLimit: 2Mi}"),
            object::<Volume>("name: creds\nsecret: {secretName: creds}"),
        ]);
        p.spec.as_mut().unwrap().security_context = Some(object("fsGroup: 2000"));
        let opts = PlanOptions {
            secrets_in_memory: true,
            node_allocatable_memory: None,
        };
        let plan = plan(&p, &root, &opts).unwrap();
        let o = objects();
        let mounted = with_ctx(&p, |ctx| materialise(&plan, ctx, &o, &Tokens)).unwrap();
        let token = &mounted["kube-api-access-bpjjl"];
        assert!(token.read_only);
        assert_eq!(
            fs::read_to_string(token.path.join("namespace")).unwrap(),
            "default"
        );
        assert!(
            is_tmpfs_mount(&token.path).unwrap(),
            "projected token on tmpfs"
        );
        let ca = token.path.join("ca.crt");
        assert_eq!(
            fs::metadata(&ca).unwrap().gid(),
            2000,
            "fsGroup owns projected files"
        );
        assert_eq!(fs::metadata(&ca).unwrap().mode() & 0o777, 0o644);
        let creds = &mounted["creds"];
        assert!(is_tmpfs_mount(&creds.path).unwrap());
        assert_eq!(
            fs::read_to_string(creds.path.join("user")).unwrap(),
            "admin"
        );
        let scratch = &mounted["scratch"];
        assert!(!scratch.read_only);
        let meta = fs::metadata(&scratch.path).unwrap();
        assert_eq!(meta.mode() & 0o7777, 0o2777, "0777 plus setgid for fsGroup");
        assert_eq!(meta.gid(), 2000);
        assert!(is_tmpfs_mount(&mounted["mem"].path).unwrap());

        // Idempotent: a second sync mounts nothing twice and keeps files.
        fs::write(scratch.path.join("keep"), "k").unwrap();
        with_ctx(&p, |ctx| materialise(&plan, ctx, &o, &Tokens)).unwrap();
        assert_eq!(fs::read_to_string(scratch.path.join("keep")).unwrap(), "k");
        let mem_mounts = mounts_under(&mounted["mem"].path).unwrap();
        assert_eq!(mem_mounts.len(), 1, "{mem_mounts:?}");

        remove_pod_dir(&plan.pod_dir).unwrap();
        assert!(!plan.pod_dir.exists());
        remove_pod_dir(&root).unwrap();
    }

    #[test]
    fn subpaths_stay_inside_the_volume_as_root() {
        require_root("subpaths_stay_inside_the_volume_as_root");
        let root = temp_dir("subpath");
        let volume = root.join("vol");
        let outside = root.join("outside");
        fs::create_dir_all(&volume).unwrap();
        fs::create_dir_all(&outside).unwrap();
        fs::write(outside.join("secret"), "host secret").unwrap();
        fs::write(volume.join("file"), "in volume").unwrap();
        fs::create_dir(volume.join("dir")).unwrap();
        // A configMap-style link inside the volume is fine.
        fs::create_dir(volume.join("..data")).unwrap();
        fs::write(volume.join("..data/conf"), "conf").unwrap();
        symlink("..data/conf", volume.join("conf")).unwrap();
        // Links out are not.
        symlink(&outside, volume.join("abs-escape")).unwrap();
        symlink("../outside", volume.join("rel-escape")).unwrap();
        symlink("dir/../../outside/secret", volume.join("sneaky")).unwrap();

        let sp = SafeSubPaths {
            pod_dir: root.join("pod"),
        };
        let t = sp.prepare("vol", &volume, "file", "c", 0).unwrap();
        assert_eq!(t, root.join("pod/volume-subpaths/vol/c/0"));
        assert_eq!(fs::read_to_string(&t).unwrap(), "in volume");
        let t = sp.prepare("vol", &volume, "conf", "c", 1).unwrap();
        assert_eq!(fs::read_to_string(&t).unwrap(), "conf");
        let t = sp.prepare("vol", &volume, "new/nested", "c", 2).unwrap();
        assert!(
            volume.join("new/nested").is_dir(),
            "missing subPath directories created"
        );
        fs::write(t.join("x"), "via bind").unwrap();
        assert_eq!(
            fs::read_to_string(volume.join("new/nested/x")).unwrap(),
            "via bind"
        );
        // Re-preparing (container restart) replaces the old bind.
        sp.prepare("vol", &volume, "file", "c", 0).unwrap();

        for escape in [
            "abs-escape/secret",
            "rel-escape/secret",
            "sneaky",
            "dir/../../outside",
        ] {
            let e = sp.prepare("vol", &volume, escape, "c", 9).unwrap_err();
            assert!(
                e.to_string().contains("not within volume path"),
                "{escape}: {e}"
            );
        }
        assert!(sp.prepare("../x", &volume, "file", "c", 0).is_err());

        // Removing the pod dir unmounts the binds and leaves the volume alone.
        remove_pod_dir(&root.join("pod")).unwrap();
        assert_eq!(
            fs::read_to_string(volume.join("file")).unwrap(),
            "in volume"
        );
        assert_eq!(
            fs::read_to_string(outside.join("secret")).unwrap(),
            "host secret"
        );
        remove_pod_dir(&root).unwrap();
    }

    #[test]
    fn remove_never_follows_symlinks() {
        let root = temp_dir("remove");
        let keep = temp_dir("remove-keep");
        fs::write(keep.join("precious"), "x").unwrap();
        let pod_dir = root.join("pod");
        fs::create_dir_all(pod_dir.join("a/b")).unwrap();
        symlink(&keep, pod_dir.join("a/b/link")).unwrap();
        remove_pod_dir(&pod_dir).unwrap();
        assert!(!pod_dir.exists());
        assert_eq!(fs::read_to_string(keep.join("precious")).unwrap(), "x");
        remove_pod_dir(&root).unwrap();
        remove_pod_dir(&keep).unwrap();
        remove_pod_dir(&root).unwrap();
    }

    #[test]
    fn remove_pod_dir_symlinked_away_removes_only_the_link() {
        let root = temp_dir("remove-link");
        let target = temp_dir("remove-link-target");
        fs::write(target.join("keep"), "x").unwrap();
        symlink(&target, root.join("pod")).unwrap();
        remove_pod_dir(&root.join("pod")).unwrap();
        assert!(fs::symlink_metadata(root.join("pod")).is_err());
        assert_eq!(fs::read_to_string(target.join("keep")).unwrap(), "x");
        remove_pod_dir(&root).unwrap();
        remove_pod_dir(&target).unwrap();
    }

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_mountinfo("/a\\040b"), OsString::from("/a b"));
        assert_eq!(unescape_mountinfo("/plain"), OsString::from("/plain"));
        assert_eq!(unescape_mountinfo("/x\\"), OsString::from("/x\\"));
    }
}
