//! A pod's container and its image's config turned into the runtime's
//! [`ContainerConfig`], with what the kubelet (`kuberuntime_container.go`
//! generateContainerConfig, `kubelet_pods.go` makeMounts) and containerd's CRI
//! plugin (`containerSpec`) each add:
//!
//! - command: `command` replaces the image's entrypoint and drops its cmd,
//!   `args` replaces the cmd; both have `$(VAR)` expanded with the container's
//!   environment;
//! - environment: `HOSTNAME`, then the image's, then the pod's (pod wins);
//! - working directory: the container's, else the image's;
//! - user: `runAsUser`/`runAsGroup` (container over pod), else the image's
//!   user resolved in the image's `/etc/passwd`/`/etc/group`; supplementary
//!   groups from `/etc/group`, `fsGroup` and `supplementalGroups`;
//!   `runAsNonRoot` checked as the kubelet checks it;
//! - security context: privileged, capabilities, no_new_privs, read-only root,
//!   seccomp; the OOM score from the QoS class;
//! - cgroup limits from requests and limits;
//! - mounts: volumes (`readOnly`, `subPath`, `subPathExpr`,
//!   `mountPropagation`), `/etc/hosts`, `/etc/hostname`, `/etc/resolv.conf`,
//!   the termination-message file, sorted so a parent never hides a child.
//!
//! Every failure is a [`ContainerError`] whose [`ContainerError::reason`] is
//! the container's waiting reason (`CreateContainerConfigError` for what the
//! kubelet rejects, `CreateContainerError` for what containerd rejects).

use std::collections::{BTreeMap, HashMap};
use std::path::{Component, Path, PathBuf};

use armlet_runtime::spec::{
    BindMount, ContainerConfig, DEFAULT_CPU_PERIOD, Namespaces, Resources, Seccomp, Security, User,
    cpu_quota, cpu_shares, effective_capabilities,
};
use k8s_openapi::api::core::v1::{Container, HostAlias, Pod, SeccompProfile};

use crate::env::{ContainerEnv, expand};
use crate::quantity::Quantity;
use crate::volumes::{MountedVolume, SubPaths, VolumeError};

/// Why a container's configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    /// Neither the pod nor the image gives a command (containerd's message).
    #[error("no command specified")]
    NoCommand,
    /// `runAsNonRoot` cannot be honoured (the kubelet's messages).
    #[error("{0}")]
    RunAsNonRoot(String),
    /// The image's user or group is not in its `/etc/passwd` / `/etc/group`.
    #[error("{0}")]
    User(String),
    /// A volumeMount names a volume the pod does not have (or that is not set up).
    #[error("cannot find volume {volume:?} to mount into container {container:?}")]
    VolumeNotFound {
        /// The volume.
        volume: String,
        /// The container.
        container: String,
    },
    /// A `subPath`/`subPathExpr` that cannot be used.
    #[error("{0}")]
    SubPath(String),
    /// Preparing a subPath failed.
    #[error(transparent)]
    Volume(#[from] VolumeError),
    /// A volumeMount the API would have refused (path, propagation).
    #[error("{0}")]
    Mount(String),
    /// A security context the API would have refused, or that cannot be applied.
    #[error("{0}")]
    Security(String),
    /// A resource quantity that does not parse.
    #[error("invalid quantity {value:?} for {what}")]
    Quantity {
        /// Which resource.
        what: String,
        /// The value.
        value: String,
    },
    /// The image's configuration is unusable.
    #[error("image config: {0}")]
    Image(String),
    /// The pod's hostname or subdomain is unusable.
    #[error("{0}")]
    Hostname(String),
}

impl ContainerError {
    /// The waiting reason the container shows for this error.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NoCommand | Self::User(_) | Self::Image(_) => "CreateContainerError",
            _ => "CreateContainerConfigError",
        }
    }
}

/// What an image's configuration says about running it (the OCI image
/// config's `config` object).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageConfig {
    /// `Entrypoint`.
    pub entrypoint: Vec<String>,
    /// `Cmd`.
    pub cmd: Vec<String>,
    /// `Env`, as `NAME=value`.
    pub env: Vec<String>,
    /// `WorkingDir`.
    pub working_dir: Option<String>,
    /// `User` (`uid`, `name`, `uid:gid`, `name:group`).
    pub user: Option<String>,
    /// `StopSignal` (e.g. `SIGQUIT`).
    pub stop_signal: Option<String>,
}

impl ImageConfig {
    /// From an OCI image configuration (the whole blob with its `config`
    /// object, as the image store keeps it, or the `config` object alone).
    pub fn from_oci(value: &serde_json::Value) -> Result<Self, ContainerError> {
        let config = match value.get("config") {
            Some(c) if c.is_object() || c.is_null() => c,
            Some(_) => return Err(ContainerError::Image("\"config\" is not an object".into())),
            None => value,
        };
        if config.is_null() {
            return Ok(Self::default());
        }
        if !config.is_object() {
            return Err(ContainerError::Image("not an object".into()));
        }
        let list = |key: &str| -> Result<Vec<String>, ContainerError> {
            match config.get(key) {
                None | Some(serde_json::Value::Null) => Ok(Vec::new()),
                Some(serde_json::Value::Array(items)) => items
                    .iter()
                    .map(|i| {
                        i.as_str().map(str::to_owned).ok_or_else(|| {
                            ContainerError::Image(format!("{key} holds a non-string"))
                        })
                    })
                    .collect(),
                Some(_) => Err(ContainerError::Image(format!("{key} is not a list"))),
            }
        };
        let string = |key: &str| -> Result<Option<String>, ContainerError> {
            match config.get(key) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(serde_json::Value::String(s)) => Ok(Some(s.clone()).filter(|s| !s.is_empty())),
                Some(_) => Err(ContainerError::Image(format!("{key} is not a string"))),
            }
        };
        Ok(Self {
            entrypoint: list("Entrypoint")?,
            cmd: list("Cmd")?,
            env: list("Env")?,
            working_dir: string("WorkingDir")?,
            user: string("User")?,
            stop_signal: string("StopSignal")?,
        })
    }
}

/// The image's `/etc/passwd` and `/etc/group` (read by the agent from the
/// container's root file system, without following links out of it), for
/// user and group names as containerd resolves them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserDb {
    /// `/etc/passwd`'s content, if the image has one.
    pub passwd: Option<String>,
    /// `/etc/group`'s content, if the image has one.
    pub group: Option<String>,
}

struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
}

struct GroupEntry<'a> {
    name: &'a str,
    gid: u32,
    members: Vec<&'a str>,
}

impl UserDb {
    fn users(&self) -> impl Iterator<Item = PasswdEntry<'_>> {
        self.passwd
            .iter()
            .flat_map(|p| p.lines())
            .filter_map(|line| {
                let f: Vec<&str> = line.split(':').collect();
                if f.len() < 4 || line.starts_with('#') {
                    return None;
                }
                Some(PasswdEntry {
                    name: f[0],
                    uid: f[2].trim().parse().ok()?,
                    gid: f[3].trim().parse().ok()?,
                })
            })
    }

    fn groups(&self) -> impl Iterator<Item = GroupEntry<'_>> {
        self.group
            .iter()
            .flat_map(|g| g.lines())
            .filter_map(|line| {
                let f: Vec<&str> = line.split(':').collect();
                if f.len() < 3 || line.starts_with('#') {
                    return None;
                }
                Some(GroupEntry {
                    name: f[0],
                    gid: f[2].trim().parse().ok()?,
                    members: f
                        .get(3)
                        .map(|m| {
                            m.split(',')
                                .map(str::trim)
                                .filter(|m| !m.is_empty())
                                .collect()
                        })
                        .unwrap_or_default(),
                })
            })
    }
}

/// How a volume mount propagates mounts (`mountPropagation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MountPropagation {
    /// `None`: private (rprivate).
    #[default]
    Private,
    /// `HostToContainer`: rslave.
    HostToContainer,
    /// `Bidirectional`: rshared (privileged containers only).
    Bidirectional,
}

/// What the agent prepared for this container instance and its pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeInputs {
    /// The container's root file system (its snapshot).
    pub rootfs: PathBuf,
    /// Its cgroup (below the pod's).
    pub cgroups_path: PathBuf,
    /// The namespaces to join (the pod sandbox's).
    pub namespaces: Namespaces,
    /// The pod's shared `/dev/shm` (None: hostIPC or a private one).
    pub shm: Option<PathBuf>,
    /// The pod's hostname (see [`pod_hostname`]); the node's for hostNetwork.
    pub hostname: String,
    /// The pod's hosts file (see [`hosts_file`]), if it has one.
    pub etc_hosts: Option<PathBuf>,
    /// The pod's `/etc/hostname` file.
    pub etc_hostname: Option<PathBuf>,
    /// The pod's `/etc/resolv.conf`.
    pub resolv_conf: Option<PathBuf>,
    /// This instance's termination-message file (an empty file, mode 0666).
    pub termination_log: Option<PathBuf>,
    /// The node uses cgroup v2 (asks for `memory.oom.group` as kubelets ≥ 1.28 do).
    pub cgroup_v2: bool,
    /// The node's memory capacity in bytes (OOM score of burstable pods).
    pub memory_capacity: i64,
    /// Where Localhost seccomp profiles live (`<kubelet root>/seccomp`).
    pub seccomp_root: PathBuf,
}

/// Everything a container's configuration is built from.
pub struct ContainerInput<'a> {
    /// The pod.
    pub pod: &'a Pod,
    /// The container (app or init) of the pod.
    pub container: &'a Container,
    /// Its environment ([`crate::env::container_env`]).
    pub env: &'a ContainerEnv,
    /// Its image's configuration.
    pub image: &'a ImageConfig,
    /// Its image's users and groups.
    pub users: &'a UserDb,
    /// The pod's volumes ([`crate::volumes::materialise`]).
    pub volumes: &'a BTreeMap<String, MountedVolume>,
    /// Provides subPath mounts ([`crate::volumes::SafeSubPaths`]).
    pub subpaths: &'a dyn SubPaths,
    /// Paths and facts from the agent.
    pub runtime: &'a RuntimeInputs,
}

/// A container ready for the runtime, plus what its [`ContainerConfig`]
/// cannot carry yet (the agent passes these on once the runtime supports them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerPlan {
    /// The runtime's configuration.
    pub config: ContainerConfig,
    /// The propagation of each of `config.mounts`, index for index.
    pub mount_propagation: Vec<MountPropagation>,
    /// `stdin: true`: keep a stdin open for attach.
    pub stdin: bool,
    /// `stdinOnce: true`: close stdin after the first attach ends.
    pub stdin_once: bool,
    /// A Localhost seccomp profile to load. While set, `config.security.seccomp`
    /// is `RuntimeDefault` as a fail-safe stand-in.
    pub seccomp_localhost: Option<PathBuf>,
    /// The signal that asks the container to stop (the image's `StopSignal`,
    /// else SIGTERM).
    pub stop_signal: i32,
}

/// Checks an RFC 1123 label (`IsDNS1123Label`).
fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A pod's hostname and domain as the kubelet computes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodHostname {
    /// The short hostname (`spec.hostname`, else the pod's name, at most 63 bytes).
    pub hostname: String,
    /// `<subdomain>.<namespace>.svc.<cluster domain>` when `spec.subdomain` is set.
    pub domain: Option<String>,
    /// What the UTS namespace gets: the FQDN with `setHostnameAsFQDN`, else
    /// the short name.
    pub uts_hostname: String,
}

/// `GeneratePodHostNameAndDomain`, with `setHostnameAsFQDN`.
pub fn pod_hostname(pod: &Pod, cluster_domain: &str) -> Result<PodHostname, ContainerError> {
    let spec = pod.spec.as_ref();
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let mut hostname = name.to_owned();
    if let Some(h) = spec
        .and_then(|s| s.hostname.as_deref())
        .filter(|h| !h.is_empty())
    {
        if !is_dns_label(h) {
            return Err(ContainerError::Hostname(format!(
                "pod Hostname {h:?} is not a valid DNS label"
            )));
        }
        hostname = h.to_owned();
    }
    if hostname.len() > 63 {
        // Truncated, without a trailing '-' or '.' (truncatePodHostnameIfNeeded).
        let mut cut = 63;
        while !hostname.is_char_boundary(cut) {
            cut -= 1;
        }
        hostname = hostname[..cut].trim_end_matches(['-', '.']).to_owned();
        tracing::warn!(
            pod = name,
            hostname,
            "hostname for pod was too long, truncated it"
        );
    }
    if hostname.is_empty() {
        return Err(ContainerError::Hostname(format!(
            "hostname for pod {name:?} was invalid: {name:?}"
        )));
    }
    let domain = match spec
        .and_then(|s| s.subdomain.as_deref())
        .filter(|s| !s.is_empty())
    {
        Some(sub) if !is_dns_label(sub) => {
            return Err(ContainerError::Hostname(format!(
                "pod Subdomain {sub:?} is not a valid DNS label"
            )));
        }
        Some(sub) => Some(format!(
            "{sub}.{}.svc.{cluster_domain}",
            pod.metadata.namespace.as_deref().unwrap_or("default")
        )),
        None => None,
    };
    let fqdn = spec.and_then(|s| s.set_hostname_as_fqdn) == Some(true);
    let uts_hostname = match (&domain, fqdn) {
        (Some(d), true) => {
            let full = format!("{hostname}.{d}");
            if full.len() > 64 {
                return Err(ContainerError::Hostname(format!(
                    "failed to construct FQDN from pod hostname and cluster domain, FQDN {full} is too long (64 characters is the max, {} characters requested)",
                    full.len()
                )));
            }
            full
        }
        _ => hostname.clone(),
    };
    Ok(PodHostname {
        hostname,
        domain,
        uts_hostname,
    })
}

fn alias_lines(aliases: &[HostAlias]) -> String {
    if aliases.is_empty() {
        return String::new();
    }
    let mut out = String::from("\n# Entries added by HostAliases.\n");
    for a in aliases {
        let names = a.hostnames.as_deref().unwrap_or_default().join("\t");
        out.push_str(&format!("{}\t{names}\n", a.ip));
    }
    out
}

/// The hosts file the kubelet writes for a pod with its own network
/// (`managedHostsFileContent`).
pub fn hosts_file(
    pod_ips: &[String],
    hostname: &str,
    domain: Option<&str>,
    aliases: &[HostAlias],
) -> String {
    let mut out = String::from(
        "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n",
    );
    for ip in pod_ips {
        match domain {
            Some(d) => out.push_str(&format!("{ip}\t{hostname}.{d}\t{hostname}\n")),
            None => out.push_str(&format!("{ip}\t{hostname}\n")),
        }
    }
    out.push_str(&alias_lines(aliases));
    out
}

/// The hosts file of a hostNetwork pod: the node's, plus the pod's
/// `hostAliases` (`nodeHostsFileContent`).
pub fn host_network_hosts_file(node_hosts: &str, aliases: &[HostAlias]) -> String {
    let mut out = node_hosts.to_owned();
    out.push_str(&alias_lines(aliases));
    out
}

/// One hostPort mapping, as CNI's portmap plugin takes it (`portMappings`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    /// Port on the node.
    pub host_port: i32,
    /// Port in the pod.
    pub container_port: i32,
    /// `tcp`, `udp` or `sctp`.
    pub protocol: String,
    /// Node address to bind (empty: all).
    pub host_ip: String,
}

/// The pod's hostPort mappings (k3s chains CNI `portmap` for these; ServiceLB's
/// `svclb-*` pods rely on them).
pub fn host_ports(pod: &Pod) -> Vec<HostPort> {
    let Some(spec) = pod.spec.as_ref() else {
        return Vec::new();
    };
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            let host_port = p.host_port.filter(|h| *h > 0)?;
            Some(HostPort {
                host_port,
                container_port: p.container_port,
                protocol: p.protocol.as_deref().unwrap_or("TCP").to_lowercase(),
                host_ip: p.host_ip.clone().unwrap_or_default(),
            })
        })
        .collect()
}

/// Parses a signal as images name it (`SIGTERM`, `TERM`, `15`,
/// `SIGRTMIN+3`).
pub fn parse_signal(name: &str) -> Option<i32> {
    let s = name.trim();
    if let Ok(n) = s.parse::<i32>() {
        return (1..=64).contains(&n).then_some(n);
    }
    let upper = s.to_ascii_uppercase();
    let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
    if let Some(rest) = bare.strip_prefix("RTMIN") {
        let min = nix::libc::SIGRTMIN();
        let off: i32 = if rest.is_empty() {
            0
        } else {
            rest.strip_prefix('+')?.parse().ok()?
        };
        let n = min.checked_add(off)?;
        return (n <= nix::libc::SIGRTMAX()).then_some(n);
    }
    if let Some(rest) = bare.strip_prefix("RTMAX") {
        let max = nix::libc::SIGRTMAX();
        let off: i32 = if rest.is_empty() {
            0
        } else {
            rest.strip_prefix('-')?.parse().ok()?
        };
        let n = max.checked_sub(off)?;
        return (n >= nix::libc::SIGRTMIN()).then_some(n);
    }
    format!("SIG{bare}")
        .parse::<nix::sys::signal::Signal>()
        .ok()
        .map(|s| s as i32)
}

/// The effective value of a security-context field: the container's, else the pod's.
fn effective<T: Clone>(container: Option<T>, pod: impl FnOnce() -> Option<T>) -> Option<T> {
    container.or_else(pod)
}

fn quantity(
    container: &Container,
    list: &str,
    name: &str,
) -> Result<Option<Quantity>, ContainerError> {
    let res = container.resources.as_ref();
    let map = match list {
        "limits" => res.and_then(|r| r.limits.as_ref()),
        _ => res.and_then(|r| r.requests.as_ref()),
    };
    map.and_then(|m| m.get(name))
        .map(|q| {
            Quantity::try_from(q).map_err(|_| ContainerError::Quantity {
                what: format!("{list}.{name} of container {}", container.name),
                value: q.0.clone(),
            })
        })
        .transpose()
}

/// Cgroup limits from the container's resources, as the kubelet converts them.
fn resources(input: &ContainerInput<'_>) -> Result<Resources, ContainerError> {
    let c = input.container;
    let cpu_request = quantity(c, "requests", "cpu")?.unwrap_or_default();
    let cpu_limit = quantity(c, "limits", "cpu")?.unwrap_or_default();
    let memory_limit = quantity(c, "limits", "memory")?.unwrap_or_default();
    // A request of zero with a limit takes the limit (the API server defaults it so).
    let shares_from = if cpu_request.is_zero() && cpu_limit.is_positive() {
        cpu_limit
    } else {
        cpu_request
    };
    let mut r = Resources {
        cpu_shares: Some(cpu_shares(
            u64::try_from(shares_from.milli_value()).unwrap_or(0),
        )),
        memory_oom_group: input.runtime.cgroup_v2,
        ..Default::default()
    };
    if cpu_limit.is_positive() {
        let milli = u64::try_from(cpu_limit.milli_value()).unwrap_or(0);
        r.cpu_quota = Some(cpu_quota(milli, DEFAULT_CPU_PERIOD));
        r.cpu_period = Some(DEFAULT_CPU_PERIOD);
    }
    if memory_limit.is_positive() {
        r.memory_limit = Some(memory_limit.value());
    }
    Ok(r)
}

/// `GetContainerOOMScoreAdjust`.
fn oom_score_adj(input: &ContainerInput<'_>) -> Result<i32, ContainerError> {
    const GUARANTEED: i32 = -997;
    const BEST_EFFORT: i32 = 1000;
    let spec = input.pod.spec.as_ref();
    if spec.and_then(|s| s.priority_class_name.as_deref()) == Some("system-node-critical") {
        return Ok(GUARANTEED);
    }
    match crate::status::qos_class(input.pod) {
        "Guaranteed" => return Ok(GUARANTEED),
        "BestEffort" => return Ok(BEST_EFFORT),
        _ => {}
    }
    let request = quantity(input.container, "requests", "memory")?
        .map(|q| q.value())
        .unwrap_or(0);
    let capacity = input.runtime.memory_capacity.max(1);
    let adj = 1000 - (1000i128 * i128::from(request) / i128::from(capacity));
    let adj = i32::try_from(adj.clamp(-1000, 1000)).unwrap_or(1000);
    // Burstable pods always score above guaranteed ones and below best-effort.
    Ok(if adj < 1000 + GUARANTEED {
        1000 + GUARANTEED
    } else if adj == BEST_EFFORT {
        adj - 1
    } else {
        adj
    })
}

/// Seccomp choice: the container's profile, else the pod's; Unconfined when
/// neither says (the kubelet's default without `SeccompDefault`).
fn seccomp(
    input: &ContainerInput<'_>,
    profile: Option<&SeccompProfile>,
) -> Result<(Seccomp, Option<PathBuf>), ContainerError> {
    let Some(p) = profile else {
        return Ok((Seccomp::Unconfined, None));
    };
    let local = p.localhost_profile.as_deref().filter(|l| !l.is_empty());
    match (p.type_.as_str(), local) {
        ("Localhost", Some(l)) => {
            let rel = Path::new(l);
            if rel.is_absolute() || rel.components().any(|c| !matches!(c, Component::Normal(_))) {
                return Err(ContainerError::Security(format!(
                    "seccompProfile.localhostProfile {l:?} must be a relative path without '..'"
                )));
            }
            Ok((
                Seccomp::RuntimeDefault,
                Some(input.runtime.seccomp_root.join(rel)),
            ))
        }
        ("Localhost", None) => Err(ContainerError::Security(
            "seccompProfile.localhostProfile must be set when seccomp type is Localhost".into(),
        )),
        (_, Some(_)) => Err(ContainerError::Security(
            "seccompProfile.localhostProfile can only be set when seccomp type is Localhost".into(),
        )),
        ("RuntimeDefault", None) => Ok((Seccomp::RuntimeDefault, None)),
        ("Unconfined", None) => Ok((Seccomp::Unconfined, None)),
        (other, None) => Err(ContainerError::Security(format!(
            "seccompProfile.type {other:?}: supported values: \"Localhost\", \"RuntimeDefault\", \"Unconfined\""
        ))),
    }
}

fn security(input: &ContainerInput<'_>) -> Result<(Security, Option<PathBuf>), ContainerError> {
    let sc = input.container.security_context.as_ref();
    let pod_sc = input
        .pod
        .spec
        .as_ref()
        .and_then(|s| s.security_context.as_ref());
    let privileged = sc.and_then(|s| s.privileged) == Some(true);
    let caps = sc.and_then(|s| s.capabilities.as_ref());
    let add = caps.and_then(|c| c.add.clone()).unwrap_or_default();
    let drop = caps.and_then(|c| c.drop.clone()).unwrap_or_default();
    let ape = sc.and_then(|s| s.allow_privilege_escalation);
    if ape == Some(false) {
        if privileged {
            return Err(ContainerError::Security(
                "cannot set `allowPrivilegeEscalation` to false and `privileged` to true".into(),
            ));
        }
        if add.iter().any(|c| {
            let u = c.trim().to_ascii_uppercase();
            u == "SYS_ADMIN" || u == "CAP_SYS_ADMIN"
        }) {
            return Err(ContainerError::Security(
                "cannot set `allowPrivilegeEscalation` to false and `capabilities.Add` CAP_SYS_ADMIN".into(),
            ));
        }
    }
    let profile = effective(sc.and_then(|s| s.seccomp_profile.clone()), || {
        pod_sc.and_then(|s| s.seccomp_profile.clone())
    });
    let (seccomp, localhost) = seccomp(input, profile.as_ref())?;
    let security = Security {
        privileged,
        add_capabilities: add,
        drop_capabilities: drop,
        allow_privilege_escalation: ape,
        read_only_root_filesystem: sc.and_then(|s| s.read_only_root_filesystem) == Some(true),
        seccomp,
        oom_score_adj: Some(oom_score_adj(input)?),
    };
    // Unknown capability names fail here rather than at container creation.
    effective_capabilities(&security).map_err(|e| ContainerError::Security(e.to_string()))?;
    Ok((security, localhost))
}

/// Resolves `name` to a uid in the image's passwd (containerd's `WithUsername`).
fn uid_of(users: &UserDb, name: &str) -> Result<(u32, u32), ContainerError> {
    users
        .users()
        .find(|u| u.name == name)
        .map(|u| (u.uid, u.gid))
        .ok_or_else(|| ContainerError::User(format!("no users found: unable to find user {name}")))
}

fn gid_of(users: &UserDb, group: &str) -> Result<u32, ContainerError> {
    if let Ok(g) = group.parse::<u32>() {
        return Ok(g);
    }
    users
        .groups()
        .find(|g| g.name == group)
        .map(|g| g.gid)
        .ok_or_else(|| {
            ContainerError::User(format!("no groups found: unable to find group {group}"))
        })
}

fn id(value: i64, what: &str) -> Result<u32, ContainerError> {
    u32::try_from(value)
        .map_err(|_| ContainerError::Security(format!("{what} {value} is out of range")))
}

/// The user, group and supplementary groups (kubelet + containerd).
fn user(input: &ContainerInput<'_>) -> Result<User, ContainerError> {
    let pod = input.pod;
    let sc = input.container.security_context.as_ref();
    let pod_sc = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let run_as_user = effective(sc.and_then(|s| s.run_as_user), || {
        pod_sc.and_then(|s| s.run_as_user)
    });
    let run_as_group = effective(sc.and_then(|s| s.run_as_group), || {
        pod_sc.and_then(|s| s.run_as_group)
    });
    let non_root = effective(sc.and_then(|s| s.run_as_non_root), || {
        pod_sc.and_then(|s| s.run_as_non_root)
    });

    // getImageUser: the part before ':', a uid if numeric, else a name; an
    // image without a user runs as root.
    let image_user = input.image.user.as_deref().unwrap_or_default();
    let image_user_part = image_user.split(':').next().unwrap_or_default();
    let (image_uid, image_name): (Option<i64>, Option<&str>) = if image_user.is_empty() {
        (Some(0), None)
    } else {
        match image_user_part.parse::<i64>() {
            Ok(uid) => (Some(uid), None),
            Err(_) => (None, Some(image_user_part)),
        }
    };

    if non_root == Some(true) {
        let who = crate::pod_display_name(pod);
        let c = &input.container.name;
        match (run_as_user, image_uid, image_name) {
            (Some(0), _, _) => {
                return Err(ContainerError::RunAsNonRoot(format!(
                    "container's runAsUser breaks non-root policy (pod: {who:?}, container: {c})"
                )));
            }
            (Some(_), _, _) => {}
            (None, Some(0), _) => {
                return Err(ContainerError::RunAsNonRoot(format!(
                    "container has runAsNonRoot and image will run as root (pod: {who:?}, container: {c})"
                )));
            }
            (None, None, Some(name)) => {
                return Err(ContainerError::RunAsNonRoot(format!(
                    "container has runAsNonRoot and image has non-numeric user ({name}), cannot verify user is non-root (pod: {who:?}, container: {c})"
                )));
            }
            _ => {}
        }
    }

    let users = input.users;
    // The kubelet passes a numeric image user as runAsUser (dropping the
    // image's group), a named one as runAsUsername.
    let uid_value = run_as_user.or(image_uid);
    let (uid, mut gid, user_name) = match uid_value {
        Some(u) => {
            let uid = id(u, "runAsUser")?;
            // WithUserID: the primary group from passwd, else 0.
            let entry = users.users().find(|e| e.uid == uid);
            let gid = entry.as_ref().map_or(0, |e| e.gid);
            (uid, gid, entry.map(|e| e.name.to_owned()))
        }
        None => {
            if let Some(g) = run_as_group {
                return Err(ContainerError::User(format!(
                    "user group \"{g}\" is specified without user"
                )));
            }
            // WithUser(image.User): "name" or "name:group".
            let (name, group) = match image_user.split_once(':') {
                Some((n, g)) => (n, Some(g)),
                None => (image_user, None),
            };
            let (uid, primary) = uid_of(users, name)?;
            let gid = match group {
                Some(g) => gid_of(users, g)?,
                None => primary,
            };
            (uid, gid, Some(name.to_owned()))
        }
    };
    if let Some(g) = run_as_group {
        gid = id(g, "runAsGroup")?;
    }
    // WithAdditionalGIDs: the groups listing the user by name, with the
    // primary group first (containerd since the CVE-2023-25173 fix).
    let mut groups = vec![gid];
    if let Some(name) = &user_name {
        groups.extend(
            users
                .groups()
                .filter(|g| g.name != name && g.members.iter().any(|m| m == name))
                .map(|g| g.gid),
        );
    }
    if let Some(psc) = pod_sc {
        if let Some(fs_group) = psc.fs_group {
            groups.push(id(fs_group, "fsGroup")?);
        }
        for g in psc.supplemental_groups.iter().flatten() {
            groups.push(id(*g, "supplementalGroups")?);
        }
    }
    let mut seen = std::collections::HashSet::new();
    groups.retain(|g| seen.insert(*g));
    Ok(User {
        uid,
        gid,
        additional_gids: groups,
    })
}

/// containerd's `WithProcessArgs`.
fn args(input: &ContainerInput<'_>) -> Result<Vec<String>, ContainerError> {
    let c = input.container;
    // ExpandContainerCommandAndArgs: with the kubelet's environment only.
    let lookup = |name: &str| input.env.get(name).map(str::to_owned);
    let command: Vec<String> = c
        .command
        .iter()
        .flatten()
        .map(|s| expand(s, lookup))
        .collect();
    let mut cmd_args: Vec<String> = c.args.iter().flatten().map(|s| expand(s, lookup)).collect();
    let mut argv = command;
    if argv.is_empty() {
        if cmd_args.is_empty() {
            cmd_args = input.image.cmd.clone();
        }
        let ep = &input.image.entrypoint;
        if !(ep.len() == 1 && ep[0].is_empty()) {
            argv = ep.clone();
        }
    }
    argv.extend(cmd_args);
    if argv.is_empty() {
        return Err(ContainerError::NoCommand);
    }
    Ok(argv)
}

/// HOSTNAME, then the image's environment, then the pod's; later values
/// replace earlier ones of the same name in place (containerd's `WithEnv`).
fn environment(input: &ContainerInput<'_>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut set = |entry: String| {
        let Some((key, _)) = entry.split_once('=') else {
            return;
        };
        let key = key.to_owned();
        match index.get(&key) {
            Some(&i) => out[i] = entry,
            None => {
                index.insert(key, out.len());
                out.push(entry);
            }
        }
    };
    set(format!("HOSTNAME={}", input.runtime.hostname));
    for e in &input.image.env {
        set(e.clone());
    }
    for v in &input.env.vars {
        set(format!("{}={}", v.name, v.value));
    }
    out
}

/// A mount destination made absolute and plain.
fn destination(path: &str) -> Result<PathBuf, ContainerError> {
    if path.is_empty() {
        return Err(ContainerError::Mount(
            "volumeMount mountPath must not be empty".into(),
        ));
    }
    let p = Path::new(path);
    // The kubelet makes a relative mountPath absolute (MakeAbsolutePath).
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        Path::new("/").join(p)
    };
    let mut clean = PathBuf::from("/");
    for c in abs.components() {
        match c {
            Component::Normal(n) => clean.push(n),
            Component::RootDir | Component::CurDir => {}
            _ => {
                return Err(ContainerError::Mount(format!(
                    "mountPath {path:?} must not contain '..'"
                )));
            }
        }
    }
    Ok(clean)
}

/// The subPath of a mount: `subPath`, or `subPathExpr` expanded with the
/// container's environment (every reference must be defined and non-empty).
fn sub_path(
    input: &ContainerInput<'_>,
    m: &k8s_openapi::api::core::v1::VolumeMount,
) -> Result<Option<String>, ContainerError> {
    let plain = m.sub_path.as_deref().filter(|s| !s.is_empty());
    let expr = m.sub_path_expr.as_deref().filter(|s| !s.is_empty());
    let sub = match (plain, expr) {
        (Some(_), Some(_)) => {
            return Err(ContainerError::SubPath(
                "subPathExpr and subPath are mutually exclusive".into(),
            ));
        }
        (Some(s), None) => s.to_owned(),
        (None, Some(e)) => {
            let missing = std::cell::RefCell::new(std::collections::BTreeSet::new());
            let value = expand(e, |k| {
                let v = input.env.get(k).unwrap_or_default();
                if v.is_empty() {
                    missing.borrow_mut().insert(k.to_owned());
                }
                Some(v.to_owned())
            });
            let missing = missing.into_inner();
            if !missing.is_empty() {
                return Err(ContainerError::SubPath(format!(
                    "missing value for {}",
                    missing.into_iter().collect::<Vec<_>>().join(", ")
                )));
            }
            value
        }
        (None, None) => return Ok(None),
    };
    if sub.starts_with('/') {
        return Err(ContainerError::SubPath(format!(
            "error SubPath `{sub}` must not be an absolute path"
        )));
    }
    if sub.split('/').any(|part| part == "..") {
        return Err(ContainerError::SubPath(format!(
            "unable to provision SubPath `{sub}`: must not contain '..'"
        )));
    }
    Ok(Some(sub))
}

/// Builds the container's configuration (see the module documentation).
pub fn build(input: &ContainerInput<'_>) -> Result<ContainerPlan, ContainerError> {
    let c = input.container;
    let rt = input.runtime;
    let (security, seccomp_localhost) = security(input)?;
    let user = user(input)?;
    let args = args(input)?;
    let working_dir = c
        .working_dir
        .clone()
        .filter(|w| !w.is_empty())
        .or_else(|| input.image.working_dir.clone());
    if let Some(w) = &working_dir {
        if !w.starts_with('/') {
            return Err(ContainerError::Image(format!(
                "working directory {w:?} is not absolute"
            )));
        }
    }

    let mut mounts: Vec<(BindMount, MountPropagation)> = Vec::new();
    let mut taken = std::collections::HashSet::new();
    for (index, m) in c.volume_mounts.iter().flatten().enumerate() {
        let dest = destination(&m.mount_path)?;
        if !taken.insert(dest.clone()) {
            return Err(ContainerError::Mount(format!(
                "mountPath {:?} must be unique",
                m.mount_path
            )));
        }
        let volume = input
            .volumes
            .get(&m.name)
            .ok_or_else(|| ContainerError::VolumeNotFound {
                volume: m.name.clone(),
                container: c.name.clone(),
            })?;
        let propagation = match m.mount_propagation.as_deref() {
            None | Some("") | Some("None") => MountPropagation::Private,
            Some("HostToContainer") => MountPropagation::HostToContainer,
            Some("Bidirectional") if security.privileged => MountPropagation::Bidirectional,
            Some("Bidirectional") => {
                return Err(ContainerError::Mount(
                    "Bidirectional mount propagation is available only to privileged containers"
                        .into(),
                ));
            }
            Some(other) => {
                return Err(ContainerError::Mount(format!(
                    "invalid MountPropagation mode: {other:?}"
                )));
            }
        };
        let source = match sub_path(input, m)? {
            Some(sub) => input
                .subpaths
                .prepare(&m.name, &volume.path, &sub, &c.name, index)?,
            None => volume.path.clone(),
        };
        mounts.push((
            BindMount {
                source,
                destination: dest,
                read_only: m.read_only == Some(true) || volume.read_only,
            },
            propagation,
        ));
    }
    let mut extra = |path: &Option<PathBuf>, dest: &str, read_only: bool| {
        if let Some(source) = path {
            let dest = PathBuf::from(dest);
            // A volume the container mounts there itself wins.
            if taken.insert(dest.clone()) {
                mounts.push((
                    BindMount {
                        source: source.clone(),
                        destination: dest,
                        read_only,
                    },
                    MountPropagation::Private,
                ));
            }
        }
    };
    let ro_root = security.read_only_root_filesystem;
    extra(&rt.etc_hosts, "/etc/hosts", false);
    let tmp = c
        .termination_message_path
        .clone()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "/dev/termination-log".to_owned());
    let tmp = destination(&tmp)?;
    extra(&rt.termination_log, &tmp.to_string_lossy(), false);
    // containerd: hostname and resolv.conf follow the root's read-only flag.
    extra(&rt.etc_hostname, "/etc/hostname", ro_root);
    extra(&rt.resolv_conf, "/etc/resolv.conf", ro_root);
    // Parents before children, otherwise in order (containerd's orderedMounts).
    mounts.sort_by_key(|(m, _)| m.destination.components().count());

    let stop_signal = match input.image.stop_signal.as_deref() {
        None => nix::libc::SIGTERM,
        Some(s) => parse_signal(s)
            .ok_or_else(|| ContainerError::Image(format!("unknown StopSignal {s:?}")))?,
    };
    let config = ContainerConfig {
        rootfs: rt.rootfs.clone(),
        args,
        env: environment(input),
        working_dir: working_dir.map(PathBuf::from),
        user,
        hostname: Some(rt.hostname.clone()),
        tty: c.tty == Some(true),
        mounts: mounts.iter().map(|(m, _)| m.clone()).collect(),
        shm: rt.shm.clone(),
        namespaces: rt.namespaces.clone(),
        cgroups_path: rt.cgroups_path.clone(),
        resources: resources(input)?,
        security,
    };
    Ok(ContainerPlan {
        config,
        mount_propagation: mounts.iter().map(|(_, p)| *p).collect(),
        stdin: c.stdin == Some(true),
        stdin_once: c.stdin_once == Some(true),
        seccomp_localhost,
        stop_signal,
    })
}

#[cfg(test)]
mod tests {
    use armlet_runtime::spec::Namespace;

    use super::*;
    use crate::env::{EnvVar, NodeAllocatable, PodContext, container_env};
    use crate::objects::MapObjects;
    use crate::testutil::{object, pod};

    /// Joins without any safety: enough for tests that do not mount.
    struct Join;
    impl SubPaths for Join {
        fn prepare(
            &self,
            _: &str,
            volume_path: &Path,
            sub: &str,
            _: &str,
            _: usize,
        ) -> Result<PathBuf, VolumeError> {
            Ok(volume_path.join(sub))
        }
    }

    fn runtime() -> RuntimeInputs {
        RuntimeInputs {
            rootfs: "/run/armlet/rootfs/c1".into(),
            cgroups_path: "/kubepods/besteffort/podu1/c1".into(),
            namespaces: Namespaces {
                net: Namespace::Join("/run/armlet/ns/p/net".into()),
                ipc: Namespace::Join("/run/armlet/ns/p/ipc".into()),
                uts: Namespace::Join("/run/armlet/ns/p/uts".into()),
                pid: Namespace::Private,
                cgroup: Namespace::Private,
            },
            shm: Some("/run/armlet/pods/u1/shm".into()),
            hostname: "busybox".into(),
            etc_hosts: Some("/var/lib/kubelet/pods/u1/etc-hosts".into()),
            etc_hostname: Some("/run/armlet/pods/u1/hostname".into()),
            resolv_conf: Some("/run/armlet/pods/u1/resolv.conf".into()),
            termination_log: Some("/var/lib/kubelet/pods/u1/containers/busybox/abc".into()),
            cgroup_v2: true,
            memory_capacity: 1 << 30,
            seccomp_root: "/var/lib/kubelet/seccomp".into(),
        }
    }

    struct Fixture {
        pod: Pod,
        image: ImageConfig,
        users: UserDb,
        volumes: BTreeMap<String, MountedVolume>,
        env: ContainerEnv,
        runtime: RuntimeInputs,
    }

    impl Fixture {
        fn new(pod_yaml: &str) -> Self {
            Self {
                pod: pod(pod_yaml),
                image: ImageConfig {
                    entrypoint: vec![],
                    cmd: vec!["sh".into()],
                    env: vec!["PATH=/usr/sbin:/usr/bin:/sbin:/bin".into(), "LANG=C".into()],
                    ..Default::default()
                },
                users: UserDb {
                    passwd: Some("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\napp:x:1000:1001::/home/app:/bin/sh\n".into()),
                    group: Some("root:x:0:\napp:x:1001:\nwheel:x:10:app,other\naudio:x:29:app\n".into()),
                },
                volumes: BTreeMap::new(),
                env: ContainerEnv::default(),
                runtime: runtime(),
            }
        }

        fn build(&self) -> Result<ContainerPlan, ContainerError> {
            let c = &self.pod.spec.as_ref().unwrap().containers[0];
            build(&ContainerInput {
                pod: &self.pod,
                container: c,
                env: &self.env,
                image: &self.image,
                users: &self.users,
                volumes: &self.volumes,
                subpaths: &Join,
                runtime: &self.runtime,
            })
        }
    }

    fn one(container_yaml: &str) -> Fixture {
        let indented = container_yaml.lines().fold(String::new(), |mut out, l| {
            out.push_str("    ");
            out.push_str(l);
            out.push('\n');
            out
        });
        Fixture::new(&format!(
            "metadata: {{name: p, namespace: default, uid: u1}}\nspec:\n  containers:\n  - name: c\n    image: busybox\n{indented}"
        ))
    }

    #[test]
    fn recorded_busybox_pod_becomes_a_runtime_config() {
        let mut f = Fixture::new(include_str!("../testdata/busybox-pod-status.yaml"));
        f.volumes.insert(
            "kube-api-access-bpjjl".into(),
            MountedVolume {
                path: "/var/lib/kubelet/pods/cc66/volumes/kubernetes.io~projected/kube-api-access-bpjjl".into(),
                read_only: true,
            },
        );
        let host = vec!["198.18.0.2".to_owned()];
        let ips = vec!["10.42.0.9".to_owned()];
        let node = NodeAllocatable::default();
        let mut objects = MapObjects::default();
        objects.add_service(object("metadata: {name: kubernetes, namespace: default}\nspec: {clusterIP: 10.43.0.1, ports: [{name: https, port: 443}]}"));
        let c = f.pod.spec.as_ref().unwrap().containers[0].clone();
        f.env = container_env(
            &PodContext {
                pod: &f.pod,
                host_ips: &host,
                pod_ips: &ips,
                node: &node,
            },
            &c,
            &objects,
        )
        .unwrap();
        let plan = f.build().unwrap();
        let cfg = &plan.config;
        assert_eq!(
            cfg.args,
            [
                "/bin/sh",
                "-c",
                "echo hello from busybox on $(hostname); ip addr show eth0 | grep inet; while true; do sleep 3600; done"
            ],
            "command replaces the image's cmd; $(hostname) is not a defined var and stays"
        );
        assert!(
            cfg.env
                .contains(&"KUBERNETES_SERVICE_HOST=10.43.0.1".to_owned())
        );
        assert_eq!(cfg.env[0], "HOSTNAME=busybox");
        assert_eq!(
            cfg.user,
            User {
                uid: 0,
                gid: 0,
                additional_gids: vec![0]
            }
        );
        let dests: Vec<_> = cfg
            .mounts
            .iter()
            .map(|m| m.destination.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            dests,
            [
                "/etc/hosts",
                "/dev/termination-log",
                "/etc/hostname",
                "/etc/resolv.conf",
                "/var/run/secrets/kubernetes.io/serviceaccount"
            ]
        );
        let sa = cfg.mounts.last().unwrap();
        assert!(sa.read_only);
        assert_eq!(
            cfg.resources.cpu_shares,
            Some(2),
            "BestEffort: minimum shares"
        );
        assert_eq!(cfg.resources.memory_limit, None);
        assert_eq!(cfg.security.oom_score_adj, Some(1000));
        assert_eq!(cfg.security.seccomp, Seccomp::Unconfined);
        assert_eq!(plan.stop_signal, 15);
        assert_eq!(plan.mount_propagation.len(), cfg.mounts.len());
        // The runtime accepts it.
        armlet_runtime::spec::build_spec(cfg).unwrap();
    }

    #[test]
    fn command_and_args_merge_like_containerd() {
        let mut f = one("");
        f.image.entrypoint = vec!["/entry".into()];
        f.image.cmd = vec!["default-arg".into()];
        assert_eq!(f.build().unwrap().config.args, ["/entry", "default-arg"]);
        // args replaces cmd, keeps the entrypoint.
        let mut g = one("args: [mine]");
        g.image = f.image.clone();
        assert_eq!(g.build().unwrap().config.args, ["/entry", "mine"]);
        // command replaces the entrypoint and drops the image's cmd.
        let mut g = one("command: [/bin/app]");
        g.image = f.image.clone();
        assert_eq!(g.build().unwrap().config.args, ["/bin/app"]);
        let mut g = one("command: [/bin/app]\nargs: [x, y]");
        g.image = f.image.clone();
        assert_eq!(g.build().unwrap().config.args, ["/bin/app", "x", "y"]);
        // An entrypoint of [""] means none.
        let mut g = one("");
        g.image.entrypoint = vec!["".into()];
        g.image.cmd = vec!["/bin/true".into()];
        assert_eq!(g.build().unwrap().config.args, ["/bin/true"]);
        // Nothing at all.
        let mut g = one("");
        g.image.cmd.clear();
        let e = g.build().unwrap_err();
        assert_eq!(e.to_string(), "no command specified");
        assert_eq!(e.reason(), "CreateContainerError");
    }

    #[test]
    fn command_expansion_uses_the_container_env() {
        let mut f = one("command: [echo, \"$(GREETING)\", \"$$(GREETING)\", \"$(UNSET)\"]");
        f.env.vars.push(EnvVar {
            name: "GREETING".into(),
            value: "hi".into(),
        });
        assert_eq!(
            f.build().unwrap().config.args,
            ["echo", "hi", "$(GREETING)", "$(UNSET)"]
        );
    }

    #[test]
    fn env_merges_image_then_pod_values() {
        let mut f = one("");
        f.env.vars.push(EnvVar {
            name: "LANG".into(),
            value: "C.UTF-8".into(),
        });
        f.env.vars.push(EnvVar {
            name: "NEW".into(),
            value: "x=y".into(),
        });
        f.image.env.push("BROKEN".into());
        let env = f.build().unwrap().config.env;
        assert_eq!(
            env,
            [
                "HOSTNAME=busybox",
                "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
                "LANG=C.UTF-8",
                "NEW=x=y"
            ]
        );
    }

    #[test]
    fn working_dir_container_over_image() {
        let mut f = one("");
        f.image.working_dir = Some("/srv".into());
        assert_eq!(f.build().unwrap().config.working_dir, Some("/srv".into()));
        let mut g = one("workingDir: /app");
        g.image.working_dir = Some("/srv".into());
        assert_eq!(g.build().unwrap().config.working_dir, Some("/app".into()));
        let mut g = one("");
        g.image.working_dir = Some("relative".into());
        assert!(g.build().is_err());
    }

    #[test]
    fn users_from_security_context_and_image() {
        // Pod-level defaults, container overrides.
        let mut f = Fixture::new(
            "metadata: {name: p, namespace: default, uid: u1}\nspec:\n  securityContext: {runAsUser: 1000, runAsGroup: 3000, fsGroup: 2000, supplementalGroups: [4000, 3000]}\n  containers:\n  - {name: c, image: x, securityContext: {runAsUser: 1001}}\n",
        );
        let u = f.build().unwrap().config.user;
        assert_eq!((u.uid, u.gid), (1001, 3000));
        assert_eq!(u.additional_gids, [3000, 2000, 4000]);
        // No runAsUser: numeric image user, primary group from passwd,
        // member groups from /etc/group.
        f = one("");
        f.image.user = Some("1000".into());
        let u = f.build().unwrap().config.user;
        assert_eq!((u.uid, u.gid), (1000, 1001));
        assert_eq!(u.additional_gids, [1001, 10, 29]);
        // uid:gid from the image: the kubelet passes only the uid (group dropped).
        f.image.user = Some("1000:50".into());
        let u = f.build().unwrap().config.user;
        assert_eq!((u.uid, u.gid), (1000, 1001));
        // Named image users are resolved in the image.
        f.image.user = Some("app".into());
        let u = f.build().unwrap().config.user;
        assert_eq!((u.uid, u.gid), (1000, 1001));
        f.image.user = Some("app:wheel".into());
        assert_eq!(f.build().unwrap().config.user.gid, 10);
        f.image.user = Some("ghost".into());
        let e = f.build().unwrap_err();
        assert!(e.to_string().contains("no users found"), "{e}");
        assert_eq!(e.reason(), "CreateContainerError");
        f.image.user = Some("app:ghosts".into());
        assert!(
            f.build()
                .unwrap_err()
                .to_string()
                .contains("no groups found")
        );
        // Unknown uid: gid 0.
        f.image.user = Some("4242".into());
        let u = f.build().unwrap().config.user;
        assert_eq!((u.uid, u.gid, u.additional_gids), (4242, 0, vec![0]));
        // A named image user with runAsGroup alone cannot be combined.
        let mut g = Fixture::new(
            "metadata: {name: p, uid: u1}\nspec:\n  containers:\n  - {name: c, securityContext: {runAsGroup: 5}}\n",
        );
        g.image.user = Some("app".into());
        assert!(
            g.build()
                .unwrap_err()
                .to_string()
                .contains("specified without user")
        );
        // …but with an image without user (root) it is fine.
        g.image.user = None;
        assert_eq!(g.build().unwrap().config.user.gid, 5);
        let bad = one("securityContext: {runAsUser: -1}");
        assert!(bad.build().is_err());
    }

    #[test]
    fn run_as_non_root_checks_match_kubelet_messages() {
        let f = one("securityContext: {runAsNonRoot: true, runAsUser: 0}");
        let e = f.build().unwrap_err();
        assert_eq!(
            e.to_string(),
            "container's runAsUser breaks non-root policy (pod: \"p_default(u1)\", container: c)"
        );
        assert_eq!(e.reason(), "CreateContainerConfigError");
        let f = one("securityContext: {runAsNonRoot: true}");
        assert_eq!(
            f.build().unwrap_err().to_string(),
            "container has runAsNonRoot and image will run as root (pod: \"p_default(u1)\", container: c)"
        );
        let mut f = one("securityContext: {runAsNonRoot: true}");
        f.image.user = Some("app".into());
        assert_eq!(
            f.build().unwrap_err().to_string(),
            "container has runAsNonRoot and image has non-numeric user (app), cannot verify user is non-root (pod: \"p_default(u1)\", container: c)"
        );
        f.image.user = Some("1000".into());
        assert!(f.build().is_ok());
        let f = one("securityContext: {runAsNonRoot: true, runAsUser: 7}");
        assert!(f.build().is_ok());
        // Pod-level runAsNonRoot applies too.
        let f = Fixture::new(
            "metadata: {name: p, namespace: default, uid: u1}\nspec:\n  securityContext: {runAsNonRoot: true}\n  containers: [{name: c}]\n",
        );
        assert!(f.build().is_err());
    }

    #[test]
    fn security_context_maps_to_runtime_security() {
        let f = one("securityContext: {privileged: true}");
        assert!(f.build().unwrap().config.security.privileged);
        let f = one(
            "securityContext: {capabilities: {add: [NET_ADMIN], drop: [ALL]}, readOnlyRootFilesystem: true, allowPrivilegeEscalation: false}",
        );
        let s = f.build().unwrap().config.security;
        assert_eq!(s.add_capabilities, ["NET_ADMIN"]);
        assert_eq!(s.drop_capabilities, ["ALL"]);
        assert!(s.read_only_root_filesystem);
        assert_eq!(s.allow_privilege_escalation, Some(false));
        for (yaml, msg) in [
            (
                "securityContext: {privileged: true, allowPrivilegeEscalation: false}",
                "cannot set `allowPrivilegeEscalation` to false and `privileged` to true",
            ),
            (
                "securityContext: {capabilities: {add: [SYS_ADMIN]}, allowPrivilegeEscalation: false}",
                "cannot set `allowPrivilegeEscalation` to false and `capabilities.Add` CAP_SYS_ADMIN",
            ),
            (
                "securityContext: {capabilities: {add: [FLY]}}",
                "unknown capability \"FLY\"",
            ),
            (
                "securityContext: {seccompProfile: {type: Localhost}}",
                "must be set when seccomp type is Localhost",
            ),
            (
                "securityContext: {seccompProfile: {type: RuntimeDefault, localhostProfile: x.json}}",
                "can only be set when seccomp type is Localhost",
            ),
            (
                "securityContext: {seccompProfile: {type: Localhost, localhostProfile: ../../etc/x}}",
                "must be a relative path",
            ),
            (
                "securityContext: {seccompProfile: {type: Strict}}",
                "supported values",
            ),
        ] {
            let e = one(yaml).build().unwrap_err();
            assert!(e.to_string().contains(msg), "{yaml}: {e}");
        }
    }

    #[test]
    fn seccomp_container_over_pod() {
        let f = Fixture::new(
            "metadata: {name: p, uid: u1}\nspec:\n  securityContext: {seccompProfile: {type: RuntimeDefault}}\n  containers: [{name: c}]\n",
        );
        assert_eq!(
            f.build().unwrap().config.security.seccomp,
            Seccomp::RuntimeDefault
        );
        let f = Fixture::new(
            "metadata: {name: p, uid: u1}\nspec:\n  securityContext: {seccompProfile: {type: RuntimeDefault}}\n  containers: [{name: c, securityContext: {seccompProfile: {type: Unconfined}}}]\n",
        );
        assert_eq!(
            f.build().unwrap().config.security.seccomp,
            Seccomp::Unconfined
        );
        let f = one(
            "securityContext: {seccompProfile: {type: Localhost, localhostProfile: profiles/audit.json}}",
        );
        let plan = f.build().unwrap();
        assert_eq!(
            plan.seccomp_localhost,
            Some("/var/lib/kubelet/seccomp/profiles/audit.json".into())
        );
        assert_eq!(
            plan.config.security.seccomp,
            Seccomp::RuntimeDefault,
            "fail-safe stand-in"
        );
    }

    #[test]
    fn resources_become_cgroup_limits_and_oom_scores() {
        let f = one(
            "resources: {requests: {cpu: 250m, memory: 64Mi}, limits: {cpu: 500m, memory: 128Mi}}",
        );
        let cfg = f.build().unwrap().config;
        assert_eq!(cfg.resources.cpu_shares, Some(256));
        assert_eq!(cfg.resources.cpu_quota, Some(50_000));
        assert_eq!(cfg.resources.cpu_period, Some(100_000));
        assert_eq!(cfg.resources.memory_limit, Some(128 << 20));
        assert!(cfg.resources.memory_oom_group);
        // Burstable: 1000 - 1000 * 64Mi / 1Gi.
        assert_eq!(cfg.security.oom_score_adj, Some(938));
        let f = one("resources: {limits: {cpu: '1', memory: 64Mi}}");
        let cfg = f.build().unwrap().config;
        assert_eq!(
            cfg.resources.cpu_shares,
            Some(1024),
            "request defaults to the limit"
        );
        assert_eq!(
            cfg.security.oom_score_adj,
            Some(-997),
            "limits only: Guaranteed"
        );
        let f = one("resources: {requests: {memory: 2Gi}}");
        assert_eq!(
            f.build().unwrap().config.security.oom_score_adj,
            Some(3),
            "floor for burstable"
        );
        let f = one("resources: {requests: {cpu: 10m}}");
        assert_eq!(
            f.build().unwrap().config.security.oom_score_adj,
            Some(999),
            "never BestEffort's 1000"
        );
        let e = one("resources: {limits: {memory: lots}}")
            .build()
            .unwrap_err();
        assert!(matches!(e, ContainerError::Quantity { .. }), "{e}");
    }

    #[test]
    fn volume_mounts_with_sub_paths_and_propagation() {
        let mut f = one(r#"volumeMounts:
- {name: data, mountPath: /data}
- {name: data, mountPath: /data/cache, subPath: cache, readOnly: true}
- {name: data, mountPath: /per-pod, subPathExpr: "logs/$(POD_NAME)"}
- {name: cfg, mountPath: /etc/app/app.conf, subPath: app.conf}
- {name: host, mountPath: /host, mountPropagation: HostToContainer}
- {name: cfg, mountPath: relative/dir}"#);
        f.env.vars.push(EnvVar {
            name: "POD_NAME".into(),
            value: "p".into(),
        });
        f.volumes.insert(
            "data".into(),
            MountedVolume {
                path: "/v/data".into(),
                read_only: false,
            },
        );
        f.volumes.insert(
            "cfg".into(),
            MountedVolume {
                path: "/v/cfg".into(),
                read_only: true,
            },
        );
        f.volumes.insert(
            "host".into(),
            MountedVolume {
                path: "/".into(),
                read_only: false,
            },
        );
        let plan = f.build().unwrap();
        let m: Vec<(String, String, bool)> = plan
            .config
            .mounts
            .iter()
            .map(|m| {
                (
                    m.destination.to_string_lossy().into_owned(),
                    m.source.to_string_lossy().into_owned(),
                    m.read_only,
                )
            })
            .collect();
        let find = |d: &str| m.iter().find(|x| x.0 == d).unwrap().clone();
        assert_eq!(find("/data").1, "/v/data");
        assert_eq!(
            find("/data/cache"),
            ("/data/cache".into(), "/v/data/cache".into(), true)
        );
        assert_eq!(find("/per-pod").1, "/v/data/logs/p");
        assert_eq!(
            find("/etc/app/app.conf"),
            ("/etc/app/app.conf".into(), "/v/cfg/app.conf".into(), true),
            "projections are read-only"
        );
        assert_eq!(find("/relative/dir").1, "/v/cfg");
        let pos = |d: &str| m.iter().position(|x| x.0 == d).unwrap();
        assert!(pos("/data") < pos("/data/cache"), "parents first");
        let host = pos("/host");
        assert_eq!(
            plan.mount_propagation[host],
            MountPropagation::HostToContainer
        );
        assert_eq!(
            plan.mount_propagation[pos("/data")],
            MountPropagation::Private
        );
    }

    #[test]
    fn bad_volume_mounts_are_precise_errors() {
        let cases = [
            (
                "volumeMounts: [{name: ghost, mountPath: /x}]",
                "cannot find volume \"ghost\" to mount into container \"c\"",
            ),
            (
                "volumeMounts: [{name: data, mountPath: /x, subPath: /etc}]",
                "error SubPath `/etc` must not be an absolute path",
            ),
            (
                "volumeMounts: [{name: data, mountPath: /x, subPath: a/../../b}]",
                "unable to provision SubPath `a/../../b`: must not contain '..'",
            ),
            (
                "volumeMounts: [{name: data, mountPath: /x, subPathExpr: \"$(NOPE)/$(ALSO)\"}]",
                "missing value for ALSO, NOPE",
            ),
            (
                "volumeMounts: [{name: data, mountPath: /x, subPathExpr: \"$(EVIL)\"}]",
                "must not contain '..'",
            ),
            (
                "volumeMounts: [{name: data, mountPath: /x, subPath: a, subPathExpr: b}]",
                "mutually exclusive",
            ),
            (
                "volumeMounts: [{name: data, mountPath: /x, mountPropagation: Bidirectional}]",
                "available only to privileged containers",
            ),
            (
                "volumeMounts: [{name: data, mountPath: /x, mountPropagation: Sideways}]",
                "invalid MountPropagation mode: \"Sideways\"",
            ),
            (
                "volumeMounts: [{name: data, mountPath: /x}, {name: data, mountPath: /x/}]",
                "must be unique",
            ),
            (
                "volumeMounts: [{name: data, mountPath: /a/../etc}]",
                "must not contain '..'",
            ),
            (
                "volumeMounts: [{name: data, mountPath: ''}]",
                "must not be empty",
            ),
        ];
        for (yaml, msg) in cases {
            let mut f = one(yaml);
            f.env.vars.push(EnvVar {
                name: "EVIL".into(),
                value: "../..".into(),
            });
            f.volumes.insert(
                "data".into(),
                MountedVolume {
                    path: "/v/data".into(),
                    read_only: false,
                },
            );
            let e = f.build().unwrap_err();
            assert!(e.to_string().contains(msg), "{yaml}: {e}");
            assert_eq!(e.reason(), "CreateContainerConfigError", "{yaml}");
        }
        let mut f = one(
            "securityContext: {privileged: true}\nvolumeMounts: [{name: data, mountPath: /x, mountPropagation: Bidirectional}]",
        );
        f.volumes.insert(
            "data".into(),
            MountedVolume {
                path: "/v/data".into(),
                read_only: false,
            },
        );
        assert_eq!(
            f.build().unwrap().mount_propagation[0],
            MountPropagation::Bidirectional
        );
    }

    #[test]
    fn own_etc_mounts_win_and_termination_path_follows_spec() {
        let mut f = one(
            "terminationMessagePath: /tmp/msg\nvolumeMounts: [{name: h, mountPath: /etc/hosts}, {name: h, mountPath: /etc/resolv.conf}]",
        );
        f.volumes.insert(
            "h".into(),
            MountedVolume {
                path: "/v/h".into(),
                read_only: false,
            },
        );
        let m = f.build().unwrap().config.mounts;
        let hosts: Vec<_> = m
            .iter()
            .filter(|x| x.destination == Path::new("/etc/hosts"))
            .collect();
        assert_eq!(hosts.len(), 1);
        assert_eq!(hosts[0].source, Path::new("/v/h"));
        assert!(m.iter().any(|x| x.destination == Path::new("/tmp/msg")));
        assert!(
            !m.iter()
                .any(|x| x.destination == Path::new("/dev/termination-log"))
        );
        // Read-only root: hostname and resolv.conf read-only too (containerd).
        let f = one("securityContext: {readOnlyRootFilesystem: true}");
        let m = f.build().unwrap().config.mounts;
        let ro = |d: &str| {
            m.iter()
                .find(|x| x.destination == Path::new(d))
                .unwrap()
                .read_only
        };
        assert!(ro("/etc/hostname") && ro("/etc/resolv.conf"));
        assert!(!ro("/etc/hosts"));
    }

    #[test]
    fn tty_stdin_and_stop_signal() {
        let mut f = one("tty: true\nstdin: true\nstdinOnce: true");
        f.image.stop_signal = Some("SIGQUIT".into());
        let plan = f.build().unwrap();
        assert!(plan.config.tty && plan.stdin && plan.stdin_once);
        assert_eq!(plan.stop_signal, 3);
        assert_eq!(parse_signal("TERM"), Some(15));
        assert_eq!(parse_signal("9"), Some(9));
        assert_eq!(parse_signal("SIGRTMIN+3"), Some(nix::libc::SIGRTMIN() + 3));
        assert_eq!(parse_signal("SIGWINCH"), Some(28));
        assert_eq!(parse_signal("nope"), None);
        assert_eq!(parse_signal("99"), None);
        f.image.stop_signal = Some("SIGNOPE".into());
        assert!(f.build().is_err());
    }

    #[test]
    fn image_config_from_oci_json() {
        let v = serde_json::json!({
            "architecture": "arm64",
            "config": {"Entrypoint": ["/docker-entrypoint.sh"], "Cmd": ["nginx", "-g", "daemon off;"],
                       "Env": ["PATH=/usr/bin"], "WorkingDir": "", "User": "101:101", "StopSignal": "SIGQUIT"}
        });
        let c = ImageConfig::from_oci(&v).unwrap();
        assert_eq!(c.entrypoint, ["/docker-entrypoint.sh"]);
        assert_eq!(c.cmd, ["nginx", "-g", "daemon off;"]);
        assert_eq!(c.working_dir, None);
        assert_eq!(c.user.as_deref(), Some("101:101"));
        assert_eq!(c.stop_signal.as_deref(), Some("SIGQUIT"));
        assert_eq!(
            ImageConfig::from_oci(&serde_json::json!({"config": null})).unwrap(),
            ImageConfig::default()
        );
        assert_eq!(
            ImageConfig::from_oci(&serde_json::json!({"Cmd": ["sh"]}))
                .unwrap()
                .cmd,
            ["sh"]
        );
        assert!(ImageConfig::from_oci(&serde_json::json!({"config": {"Cmd": "sh"}})).is_err());
        assert!(ImageConfig::from_oci(&serde_json::json!({"config": {"Env": [1]}})).is_err());
        assert!(ImageConfig::from_oci(&serde_json::json!({"config": 5})).is_err());
        assert!(ImageConfig::from_oci(&serde_json::json!([])).is_err());
    }

    #[test]
    fn hostnames_hosts_files_and_host_ports() {
        let p = pod(
            "metadata: {name: web-0, namespace: shop}\nspec: {hostname: web-0, subdomain: web, containers: []}",
        );
        let h = pod_hostname(&p, "cluster.local").unwrap();
        assert_eq!(h.hostname, "web-0");
        assert_eq!(h.domain.as_deref(), Some("web.shop.svc.cluster.local"));
        assert_eq!(h.uts_hostname, "web-0");
        let mut fq = p.clone();
        fq.spec.as_mut().unwrap().set_hostname_as_fqdn = Some(true);
        assert_eq!(
            pod_hostname(&fq, "cluster.local").unwrap().uts_hostname,
            "web-0.web.shop.svc.cluster.local"
        );
        let long = pod(&format!(
            "metadata: {{name: {}-x}}\nspec: {{containers: []}}",
            "a".repeat(62)
        ));
        assert_eq!(
            pod_hostname(&long, "cluster.local").unwrap().hostname,
            "a".repeat(62),
            "truncated, trailing '-' trimmed"
        );
        let bad = pod("metadata: {name: p}\nspec: {hostname: Bad_Name, containers: []}");
        assert!(pod_hostname(&bad, "cluster.local").is_err());
        let bad = pod("metadata: {name: p}\nspec: {subdomain: '-x', containers: []}");
        assert!(pod_hostname(&bad, "cluster.local").is_err());
        assert!(pod_hostname(&Pod::default(), "cluster.local").is_err());

        let aliases: Vec<HostAlias> =
            vec![object("{ip: 10.1.2.3, hostnames: [foo.local, bar.local]}")];
        let hosts = hosts_file(
            &["10.42.0.9".into()],
            "web-0",
            h.domain.as_deref(),
            &aliases,
        );
        assert_eq!(
            hosts,
            "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n10.42.0.9\tweb-0.web.shop.svc.cluster.local\tweb-0\n\n# Entries added by HostAliases.\n10.1.2.3\tfoo.local\tbar.local\n"
        );
        assert!(
            hosts_file(&["10.42.0.9".into()], "busybox", None, &[])
                .ends_with("10.42.0.9\tbusybox\n")
        );
        assert_eq!(
            host_network_hosts_file("127.0.0.1 localhost\n", &aliases),
            "127.0.0.1 localhost\n\n# Entries added by HostAliases.\n10.1.2.3\tfoo.local\tbar.local\n"
        );

        let lb = pod(
            "spec:\n  containers:\n  - {name: lb, ports: [{containerPort: 80, hostPort: 80}, {containerPort: 443, hostPort: 443, protocol: TCP, hostIP: 192.0.2.1}, {containerPort: 9000}]}\n",
        );
        assert_eq!(
            host_ports(&lb),
            [
                HostPort {
                    host_port: 80,
                    container_port: 80,
                    protocol: "tcp".into(),
                    host_ip: String::new()
                },
                HostPort {
                    host_port: 443,
                    container_port: 443,
                    protocol: "tcp".into(),
                    host_ip: "192.0.2.1".into()
                },
            ]
        );
    }
}
