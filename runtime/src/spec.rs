//! A container description turned into an OCI runtime spec.
//!
//! The defaults are those containerd's CRI plugin gives a Kubernetes container
//! (`oci.populateDefaultUnixSpec` and the CRI `containerSpec` options), so a pod
//! behaves on armlet as it does on a k3s node: the same default capability set,
//! masked and read-only `/proc` paths, `/dev` setup, device cgroup rules and
//! `RLIMIT_NOFILE`. What Kubernetes decides per pod (command, env, user, mounts,
//! resources, security context) comes in through [`ContainerConfig`].

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use oci_spec::OciSpecError;
use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxDeviceCgroup,
    LinuxDeviceCgroupBuilder, LinuxDeviceType, LinuxMemoryBuilder, LinuxNamespaceBuilder,
    LinuxNamespaceType, LinuxPidsBuilder, LinuxResourcesBuilder, Mount, MountBuilder,
    PosixRlimitBuilder, PosixRlimitType, ProcessBuilder, RootBuilder, Spec, SpecBuilder,
    UserBuilder,
};

/// Where a pod-level namespace comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Namespace {
    /// The host's own namespace (hostNetwork, hostIPC, hostPID).
    Host,
    /// A fresh one for this container alone.
    Private,
    /// Join an existing namespace file (the pod sandbox's).
    Join(PathBuf),
}

/// The namespaces a container runs in besides its own mount namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespaces {
    /// Network namespace (shared by the pod).
    pub net: Namespace,
    /// IPC namespace (shared by the pod).
    pub ipc: Namespace,
    /// UTS namespace (shared by the pod: its hostname).
    pub uts: Namespace,
    /// PID namespace: `Private` per container as Kubernetes does by default,
    /// `Host` for hostPID (shareProcessNamespace is a later addition).
    pub pid: Namespace,
    /// Cgroup namespace: `Private` on cgroup v2 nodes, as containerd's CRI
    /// gives every container there (it sees its own cgroup as `/`); `Host` on
    /// v1 and for privileged containers, as containerd does.
    pub cgroup: Namespace,
}

/// A bind mount into the container (volumes, /etc/hosts, service account tokens...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindMount {
    /// Path on the node.
    pub source: PathBuf,
    /// Absolute path inside the container.
    pub destination: PathBuf,
    /// Mounted read-only.
    pub read_only: bool,
}

/// User and groups the container's process runs as.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct User {
    /// Numeric user id.
    pub uid: u32,
    /// Numeric primary group id.
    pub gid: u32,
    /// Supplementary groups (pod `supplementalGroups`, `fsGroup`).
    pub additional_gids: Vec<u32>,
}

/// Cgroup limits, already in cgroup units (see [`cpu_shares`] and [`cpu_quota`]
/// for the Kubernetes conversions).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    /// CPU weight (cgroup v1 `cpu.shares`; converted to `cpu.weight` on v2).
    pub cpu_shares: Option<u64>,
    /// CFS quota in microseconds per `cpu_period`.
    pub cpu_quota: Option<i64>,
    /// CFS period in microseconds.
    pub cpu_period: Option<u64>,
    /// Memory limit in bytes.
    pub memory_limit: Option<i64>,
    /// Maximum number of tasks.
    pub pids_limit: Option<i64>,
    /// Kill every process of the container when one of them hits the memory
    /// limit (`memory.oom.group`, cgroup v2 only): the kubelet asks for it on
    /// v2 nodes since Kubernetes 1.28, so an OOM never leaves a container
    /// half-dead. Must stay `false` on v1, which has no such file.
    pub memory_oom_group: bool,
}

/// Seccomp profile choice, as in a pod's `securityContext.seccompProfile`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Seccomp {
    /// No filter (Kubernetes' default before 1.27's `SeccompDefault`).
    #[default]
    Unconfined,
    /// The runtime's default filter.
    RuntimeDefault,
}

/// The security-relevant parts of a container's `securityContext`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Security {
    /// `privileged: true`: all capabilities, all devices, no masked paths.
    pub privileged: bool,
    /// `capabilities.add` (Kubernetes spelling, e.g. `NET_ADMIN`, or `ALL`).
    pub add_capabilities: Vec<String>,
    /// `capabilities.drop` (e.g. `ALL`).
    pub drop_capabilities: Vec<String>,
    /// `allowPrivilegeEscalation`; `None` means Kubernetes' default (allowed).
    pub allow_privilege_escalation: Option<bool>,
    /// `readOnlyRootFilesystem`.
    pub read_only_root_filesystem: bool,
    /// Seccomp profile.
    pub seccomp: Seccomp,
    /// OOM score adjustment the kubelet computes from the pod's QoS class.
    pub oom_score_adj: Option<i32>,
}

/// Everything needed to describe one container to the runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerConfig {
    /// Root filesystem (the overlay mount prepared by the image store).
    pub rootfs: PathBuf,
    /// Command and arguments, already merged with the image's entrypoint/cmd.
    pub args: Vec<String>,
    /// Environment as `NAME=value`, already merged with the image's.
    pub env: Vec<String>,
    /// Working directory; `/` when empty, like containerd.
    pub working_dir: Option<PathBuf>,
    /// User and groups.
    pub user: User,
    /// Hostname (the pod's), set when the UTS namespace is not the host's.
    pub hostname: Option<String>,
    /// Allocate a terminal (`tty: true`).
    pub tty: bool,
    /// Bind mounts supplied by the caller, in order (including /etc/hosts,
    /// /etc/hostname, /etc/resolv.conf and /dev/termination-log).
    pub mounts: Vec<BindMount>,
    /// The pod's shared `/dev/shm`; `None` gives the container its own.
    pub shm: Option<PathBuf>,
    /// Namespaces.
    pub namespaces: Namespaces,
    /// Cgroup path (absolute, below the pod's cgroup).
    pub cgroups_path: PathBuf,
    /// Cgroup limits.
    pub resources: Resources,
    /// Security context.
    pub security: Security,
}

/// Why a container description could not become a spec.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The description has no command to run.
    #[error("container has no command: neither the pod nor the image gives one")]
    NoCommand,
    /// A capability name Linux does not know.
    #[error("unknown capability {0:?}")]
    UnknownCapability(String),
    /// A path that must be absolute is not.
    #[error("{what} must be an absolute path, got {path:?}")]
    RelativePath {
        /// Which field.
        what: &'static str,
        /// The offending path.
        path: PathBuf,
    },
    /// An environment entry without `=`.
    #[error("environment entry {0:?} has no '='")]
    BadEnv(String),
    /// oci-spec refused a value.
    #[error("building the OCI spec: {0}")]
    Oci(#[from] OciSpecError),
}

/// The PATH containerd sets when neither image nor pod gives one.
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// containerd's default capability set for containers (`oci.defaultUnixCaps`).
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

/// Every capability Linux defines, for `ALL` and privileged containers.
const ALL_CAPABILITIES: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// Paths masked in `/proc` and `/sys` (containerd's defaults).
pub const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Paths made read-only in `/proc` (containerd's defaults).
pub const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Kubernetes' CPU request in millicores → cgroup v1 `cpu.shares`
/// (kubelet's `MilliCPUToShares`: 1024 per core, at least 2).
pub fn cpu_shares(milli_cpu: u64) -> u64 {
    const MIN_SHARES: u64 = 2;
    const MAX_SHARES: u64 = 262_144;
    if milli_cpu == 0 {
        return MIN_SHARES;
    }
    (milli_cpu.saturating_mul(1024) / 1000).clamp(MIN_SHARES, MAX_SHARES)
}

/// Kubernetes' CPU limit in millicores → CFS quota for `period` microseconds
/// (kubelet's `MilliCPUToQuota`: at least 1 ms).
pub fn cpu_quota(milli_cpu: u64, period: u64) -> i64 {
    const MIN_QUOTA: u64 = 1000;
    if milli_cpu == 0 {
        return 0;
    }
    let quota = (milli_cpu.saturating_mul(period) / 1000).max(MIN_QUOTA);
    i64::try_from(quota).unwrap_or(i64::MAX)
}

/// The CFS period Kubernetes uses (100 ms).
pub const DEFAULT_CPU_PERIOD: u64 = 100_000;

/// Parses a Kubernetes capability name (`NET_ADMIN` or `CAP_NET_ADMIN`).
fn parse_capability(name: &str) -> Result<Capability, SpecError> {
    let upper = name.trim().to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    bare.parse::<Capability>()
        .map_err(|_| SpecError::UnknownCapability(name.to_owned()))
}

fn capability_set(names: &[&str]) -> Result<HashSet<Capability>, SpecError> {
    names.iter().map(|n| parse_capability(n)).collect()
}

/// The capability set a container ends up with, resolved the way containerd does:
/// privileged → all; otherwise the defaults, minus `drop` (`ALL` drops every
/// default), plus `add` (`ALL` adds everything).
pub fn effective_capabilities(security: &Security) -> Result<HashSet<Capability>, SpecError> {
    if security.privileged {
        return capability_set(ALL_CAPABILITIES);
    }
    let is_all = |n: &String| n.trim().eq_ignore_ascii_case("ALL");
    let mut caps = if security.drop_capabilities.iter().any(is_all) {
        HashSet::new()
    } else {
        let mut caps = capability_set(DEFAULT_CAPABILITIES)?;
        for name in &security.drop_capabilities {
            caps.remove(&parse_capability(name)?);
        }
        caps
    };
    if security.add_capabilities.iter().any(is_all) {
        caps.extend(capability_set(ALL_CAPABILITIES)?);
    } else {
        for name in &security.add_capabilities {
            caps.insert(parse_capability(name)?);
        }
    }
    Ok(caps)
}

fn mount(dest: &str, typ: &str, source: &str, options: &[&str]) -> Result<Mount, SpecError> {
    Ok(MountBuilder::default()
        .destination(dest)
        .typ(typ)
        .source(source)
        .options(options.iter().map(|o| o.to_string()).collect::<Vec<_>>())
        .build()?)
}

/// The mounts every container gets, before the caller's.
fn default_mounts(config: &ContainerConfig) -> Result<Vec<Mount>, SpecError> {
    let privileged = config.security.privileged;
    let sys_mode = if privileged { "rw" } else { "ro" };
    let mut mounts = vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        )?,
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        )?,
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        )?,
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", sys_mode],
        )?,
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["nosuid", "noexec", "nodev", "relatime", sys_mode],
        )?,
    ];
    mounts.push(match &config.shm {
        Some(shared) => bind(shared, "/dev/shm", false)?,
        None => mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        )?,
    });
    Ok(mounts)
}

fn bind(source: &std::path::Path, dest: &str, read_only: bool) -> Result<Mount, SpecError> {
    let mut options = vec!["rbind", "rprivate"];
    options.push(if read_only { "ro" } else { "rw" });
    Ok(MountBuilder::default()
        .destination(dest)
        .typ("bind")
        .source(source)
        .options(options.into_iter().map(String::from).collect::<Vec<_>>())
        .build()?)
}

fn absolute(what: &'static str, path: &std::path::Path) -> Result<(), SpecError> {
    if path.is_absolute() {
        Ok(())
    } else {
        Err(SpecError::RelativePath {
            what,
            path: path.to_path_buf(),
        })
    }
}

/// Device cgroup rules: deny everything, then allow what containerd allows
/// (`oci.WithDefaultUnixDevices` plus mknod of anything); privileged allows all.
fn device_rules(privileged: bool) -> Result<Vec<LinuxDeviceCgroup>, SpecError> {
    let rule = |allow: bool,
                typ: Option<LinuxDeviceType>,
                major: Option<i64>,
                minor: Option<i64>,
                access: &str| {
        let mut b = LinuxDeviceCgroupBuilder::default()
            .allow(allow)
            .access(access);
        if let Some(t) = typ {
            b = b.typ(t);
        }
        if let Some(m) = major {
            b = b.major(m);
        }
        if let Some(m) = minor {
            b = b.minor(m);
        }
        b.build()
    };
    if privileged {
        return Ok(vec![rule(true, None, None, None, "rwm")?]);
    }
    let c = Some(LinuxDeviceType::C);
    Ok(vec![
        rule(false, None, None, None, "rwm")?,
        rule(true, c, None, None, "m")?,
        rule(true, Some(LinuxDeviceType::B), None, None, "m")?,
        rule(true, c, Some(1), Some(3), "rwm")?, // /dev/null
        rule(true, c, Some(1), Some(8), "rwm")?, // /dev/random
        rule(true, c, Some(1), Some(7), "rwm")?, // /dev/full
        rule(true, c, Some(5), Some(0), "rwm")?, // /dev/tty
        rule(true, c, Some(1), Some(5), "rwm")?, // /dev/zero
        rule(true, c, Some(1), Some(9), "rwm")?, // /dev/urandom
        rule(true, c, Some(5), Some(1), "rwm")?, // /dev/console
        rule(true, c, Some(136), None, "rwm")?,  // /dev/pts/*
        rule(true, c, Some(5), Some(2), "rwm")?, // /dev/ptmx
        rule(true, c, Some(10), Some(200), "rwm")?, // /dev/net/tun
    ])
}

fn namespace(
    typ: LinuxNamespaceType,
    ns: &Namespace,
) -> Result<Option<oci_spec::runtime::LinuxNamespace>, SpecError> {
    let b = LinuxNamespaceBuilder::default().typ(typ);
    Ok(match ns {
        Namespace::Host => None,
        Namespace::Private => Some(b.build()?),
        Namespace::Join(path) => {
            absolute("namespace path", path)?;
            Some(b.path(path.clone()).build()?)
        }
    })
}

/// Cgroup limits in OCI form, with device rules when given (pod cgroups have none:
/// device access is decided per container).
pub fn linux_resources(
    r: &Resources,
    devices: Option<Vec<LinuxDeviceCgroup>>,
) -> Result<oci_spec::runtime::LinuxResources, SpecError> {
    let mut cpu = LinuxCpuBuilder::default();
    if let Some(shares) = r.cpu_shares {
        cpu = cpu.shares(shares);
    }
    if let Some(quota) = r.cpu_quota {
        cpu = cpu.quota(quota);
    }
    if let Some(period) = r.cpu_period {
        cpu = cpu.period(period);
    }
    let mut resources = LinuxResourcesBuilder::default().cpu(cpu.build()?);
    if let Some(devices) = devices {
        resources = resources.devices(devices);
    }
    if let Some(limit) = r.memory_limit {
        // As the kubelet does: swap limited to the memory limit, i.e. no swap.
        resources = resources.memory(
            LinuxMemoryBuilder::default()
                .limit(limit)
                .swap(limit)
                .build()?,
        );
    }
    if let Some(limit) = r.pids_limit {
        resources = resources.pids(LinuxPidsBuilder::default().limit(limit).build()?);
    }
    if r.memory_oom_group {
        resources = resources.unified(HashMap::from([(
            "memory.oom.group".to_owned(),
            "1".to_owned(),
        )]));
    }
    let mut built = resources.build()?;
    if built.devices().as_ref().is_some_and(|d| d.is_empty()) {
        built.set_devices(None);
    }
    Ok(built)
}

/// Builds the OCI runtime spec for one container.
pub fn build_spec(config: &ContainerConfig) -> Result<Spec, SpecError> {
    if config.args.is_empty() {
        return Err(SpecError::NoCommand);
    }
    absolute("rootfs", &config.rootfs)?;
    absolute("cgroups path", &config.cgroups_path)?;
    for entry in &config.env {
        if !entry.contains('=') {
            return Err(SpecError::BadEnv(entry.clone()));
        }
    }
    let security = &config.security;

    let mut env = config.env.clone();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(0, DEFAULT_PATH.to_owned());
    }
    let caps = effective_capabilities(security)?;
    let caps_for_seccomp = caps.clone();
    // Inheritable and ambient stay empty, as containerd leaves them; oci-spec's
    // builder would otherwise fill them from runc's example spec.
    let capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(caps.clone())
        .effective(caps.clone())
        .permitted(caps)
        .inheritable(HashSet::new())
        .ambient(HashSet::new())
        .build()?;
    // Kubernetes: privilege escalation is allowed unless the pod says otherwise;
    // a privileged container always may.
    let no_new_privileges =
        !security.privileged && security.allow_privilege_escalation == Some(false);
    let mut process = ProcessBuilder::default()
        .terminal(config.tty)
        .user(
            UserBuilder::default()
                .uid(config.user.uid)
                .gid(config.user.gid)
                .additional_gids(config.user.additional_gids.clone())
                .build()?,
        )
        .args(config.args.clone())
        .env(env)
        .cwd(
            config
                .working_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from("/")),
        )
        .capabilities(capabilities)
        .rlimits(vec![
            PosixRlimitBuilder::default()
                .typ(PosixRlimitType::RlimitNofile)
                .hard(1024u64)
                .soft(1024u64)
                .build()?,
        ]);
    if let Some(dir) = &config.working_dir {
        absolute("working directory", dir)?;
    }
    if let Some(adj) = security.oom_score_adj {
        process = process.oom_score_adj(adj);
    }
    let mut process = process.build()?;
    // Absent rather than `false`: libcontainer 0.6 takes any present value as
    // "set", loads the seccomp filter only after dropping capabilities, and then
    // the kernel refuses it (filters need no_new_privs or CAP_SYS_ADMIN).
    process.set_no_new_privileges(no_new_privileges.then_some(true));

    let mut mounts = default_mounts(config)?;
    for m in &config.mounts {
        absolute("mount destination", &m.destination)?;
        absolute("mount source", &m.source)?;
        mounts.push(bind(
            &m.source,
            &m.destination.to_string_lossy(),
            m.read_only,
        )?);
    }

    let mut namespaces = vec![
        LinuxNamespaceBuilder::default()
            .typ(LinuxNamespaceType::Mount)
            .build()?,
    ];
    let ns = &config.namespaces;
    for (typ, which) in [
        (LinuxNamespaceType::Network, &ns.net),
        (LinuxNamespaceType::Ipc, &ns.ipc),
        (LinuxNamespaceType::Uts, &ns.uts),
        (LinuxNamespaceType::Pid, &ns.pid),
        (LinuxNamespaceType::Cgroup, &ns.cgroup),
    ] {
        namespaces.extend(namespace(typ, which)?);
    }

    let resources = linux_resources(&config.resources, Some(device_rules(security.privileged)?))?;

    let mut linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .cgroups_path(config.cgroups_path.clone())
        .resources(resources)
        .build()?;
    // Set (or cleared) explicitly: oci-spec's builders start from runc's example
    // spec, whose values are not containerd's.
    let (masked, readonly) = if security.privileged {
        (None, None)
    } else {
        let list = |paths: &[&str]| Some(paths.iter().map(|p| p.to_string()).collect::<Vec<_>>());
        (list(MASKED_PATHS), list(READONLY_PATHS))
    };
    linux.set_masked_paths(masked);
    linux.set_readonly_paths(readonly);
    if security.seccomp == Seccomp::RuntimeDefault && !security.privileged {
        linux.set_seccomp(Some(seccomp::runtime_default(&caps_for_seccomp)?));
    }

    let mut spec = SpecBuilder::default()
        .version("1.0.2")
        .root(
            RootBuilder::default()
                .path(config.rootfs.clone())
                .readonly(security.read_only_root_filesystem)
                .build()?,
        )
        .process(process)
        .mounts(mounts)
        .linux(linux)
        .build()?;
    // The host's UTS namespace keeps the node's name.
    let hostname = match ns.uts {
        Namespace::Host => None,
        _ => config.hostname.clone(),
    };
    spec.set_hostname(hostname);
    spec.set_annotations(None);
    Ok(spec)
}

pub mod seccomp;

#[cfg(test)]
mod tests;
