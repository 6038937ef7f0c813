//! `armlet check-config`: whether this kernel and system can run armlet, in the
//! spirit of `k3s check-config` and Docker's `check-config.sh`. The kernel's
//! build configuration is read when the kernel publishes it; live checks
//! (cgroups, filesystems, loaded modules, a netfilter netlink socket, the
//! clock) run either way. Nothing on the system is changed.
//!
//! Every reader takes its roots from [`Paths`], so the tests run on fake
//! `/proc`, `/sys` and `/boot` trees.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs;
use std::io::Read;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use nix::errno::Errno;
use nix::libc;

/// Where the checks read the system: `/proc`, `/sys` and `/boot` on a real
/// one.
#[derive(Debug, Clone)]
pub(crate) struct Paths {
    /// procfs.
    pub(crate) proc: PathBuf,
    /// sysfs.
    pub(crate) sys: PathBuf,
    /// Where distributions keep `config-<release>`.
    pub(crate) boot: PathBuf,
}

impl Paths {
    /// This system's.
    pub(crate) fn host() -> Self {
        Self {
            proc: "/proc".into(),
            sys: "/sys".into(),
            boot: "/boot".into(),
        }
    }
}

/// What the live checks saw that is not a file: the time and the netfilter
/// socket (separate so tests can choose them).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Live {
    /// The system time.
    pub(crate) now: SystemTime,
    /// Whether a `NETLINK_NETFILTER` socket could be opened.
    pub(crate) netfilter_socket: Result<(), Errno>,
}

impl Live {
    /// Looks at this system.
    pub(crate) fn probe() -> Self {
        Self {
            now: SystemTime::now(),
            netfilter_socket: open_netfilter_socket(),
        }
    }
}

/// Opens and closes a netfilter netlink socket: nftables speaks to the kernel
/// through it, and the kernel refuses it with `EPROTONOSUPPORT` when it has no
/// nfnetlink. Nothing is sent, so nothing changes.
fn open_netfilter_socket() -> Result<(), Errno> {
    // SAFETY: socket(2) takes no pointers; the descriptor is closed below.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_NETFILTER,
        )
    };
    if fd < 0 {
        return Err(Errno::last());
    }
    // SAFETY: `fd` was opened above and is not used afterwards.
    unsafe { libc::close(fd) };
    Ok(())
}

/// A check's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    /// Fine.
    Ok,
    /// Required and absent: armlet cannot run pods properly.
    Missing,
    /// Optional and absent, or cannot be told.
    Warn,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Self::Ok => "OK",
            Self::Missing => "MISSING",
            Self::Warn => "WARN",
        })
    }
}

/// One checked item: printed as one line, `STATUS name (detail): hint`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Check {
    /// The outcome.
    pub(crate) status: Status,
    /// What was checked (`CONFIG_VXLAN`, `cgroup memory controller`).
    pub(crate) name: String,
    /// What was found, when worth saying (`module`, `v2`).
    pub(crate) detail: Option<String>,
    /// How to fix it; printed for non-OK lines only.
    pub(crate) hint: Option<String>,
}

impl Check {
    fn new(status: Status, name: impl Into<String>) -> Self {
        Self {
            status,
            name: name.into(),
            detail: None,
            hint: None,
        }
    }

    fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // MISSING is the widest status: names line up in a column.
        write!(f, "{:<7} {}", self.status, self.name)?;
        if let Some(detail) = &self.detail {
            write!(f, " ({detail})")?;
        }
        match &self.hint {
            Some(hint) if self.status != Status::Ok => write!(f, ": {hint}"),
            _ => Ok(()),
        }
    }
}

/// Every check's outcome, in the order run.
#[derive(Debug, Clone)]
pub(crate) struct Report {
    /// The checks.
    pub(crate) checks: Vec<Check>,
}

impl Report {
    fn count(&self, status: Status) -> usize {
        self.checks.iter().filter(|c| c.status == status).count()
    }

    /// 0 when nothing required is missing, else 1.
    pub(crate) fn exit_code(&self) -> i32 {
        i32::from(self.count(Status::Missing) > 0)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for check in &self.checks {
            writeln!(f, "{check}")?;
        }
        let (missing, warn) = (self.count(Status::Missing), self.count(Status::Warn));
        if missing > 0 {
            writeln!(
                f,
                "{missing} required item(s) missing, {warn} warning(s): armlet cannot run pods properly here"
            )
        } else {
            writeln!(
                f,
                "nothing required is missing ({warn} warning(s)): armlet can run here"
            )
        }
    }
}

/// `armlet check-config`: checks this system, prints one line per check and
/// returns the exit code.
pub(crate) fn run() -> i32 {
    let report = check(&Paths::host(), &Live::probe());
    print!("{report}");
    report.exit_code()
}

/// Runs every check.
pub(crate) fn check(paths: &Paths, live: &Live) -> Report {
    let mut checks = Vec::new();
    let release = kernel_release(paths);
    let config = read_kernel_config(paths, release.as_deref());
    checks.extend(kernel_config_checks(&config, release.as_deref()));
    let config = config.ok();
    let config = config.as_ref().map(|(_, options)| options);
    checks.extend(cgroup_checks(paths, config));
    checks.push(overlay_check(paths, config));
    for (name, option, module) in [
        ("vxlan", "VXLAN", "vxlan"),
        ("bridge", "BRIDGE", "bridge"),
        ("veth", "VETH", "veth"),
        ("nf_tables", "NF_TABLES", "nf_tables"),
    ] {
        checks.push(module_check(paths, config, name, option, module));
    }
    checks.push(netfilter_socket_check(live.netfilter_socket));
    checks.push(clock_check(live.now));
    Report { checks }
}

/// `uname -r`, from procfs (so a fake tree can set it).
fn kernel_release(paths: &Paths) -> Option<String> {
    let release = fs::read_to_string(paths.proc.join("sys/kernel/osrelease")).ok()?;
    Some(release.trim().to_owned()).filter(|r| !r.is_empty())
}

/// `(major, minor)` of a release such as `6.1.0-rpi7-rpi-v8`.
fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// Option name (without `CONFIG_`) → value (`y`, `m`, a number, a string).
type KernelOptions = BTreeMap<String, String>;

/// Where the kernel configuration came from and what it says; or the paths
/// tried, and why each failed.
type ConfigResult = Result<(PathBuf, KernelOptions), Vec<String>>;

fn read_kernel_config(paths: &Paths, release: Option<&str>) -> ConfigResult {
    let mut tried = Vec::new();
    let gz = paths.proc.join("config.gz");
    match fs::File::open(&gz) {
        Ok(file) => {
            let mut text = String::new();
            match flate2::read::GzDecoder::new(file).read_to_string(&mut text) {
                Ok(_) => return Ok((gz, parse_kernel_config(&text))),
                Err(err) => tried.push(format!("{}: {err}", gz.display())),
            }
        }
        Err(_) => tried.push(format!("no {}", gz.display())),
    }
    match release {
        Some(release) => {
            let boot = paths.boot.join(format!("config-{release}"));
            match fs::read_to_string(&boot) {
                Ok(text) => return Ok((boot, parse_kernel_config(&text))),
                Err(_) => tried.push(format!("no {}", boot.display())),
            }
        }
        None => tried.push("no kernel release to find /boot/config-<release>".to_owned()),
    }
    Err(tried)
}

/// `CONFIG_X=value` lines; `# CONFIG_X is not set` needs no entry (absent
/// means not set).
fn parse_kernel_config(text: &str) -> KernelOptions {
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("CONFIG_")?.split_once('='))
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect()
}

/// How an option is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Built {
    In,
    Module,
    No,
}

fn built(options: &KernelOptions, name: &str) -> Built {
    match options.get(name).map(String::as_str) {
        Some("y") => Built::In,
        Some("m") => Built::Module,
        _ => Built::No,
    }
}

/// A kernel option armlet needs, or is better off with.
struct KernelOption {
    /// Alternative names (without `CONFIG_`): any one will do. Kernels renamed
    /// some options.
    names: &'static [&'static str],
    required: bool,
    /// What it is for, said in the hint when it is missing.
    purpose: &'static str,
}

const fn required(names: &'static [&'static str], purpose: &'static str) -> KernelOption {
    KernelOption {
        names,
        required: true,
        purpose,
    }
}

const fn optional(names: &'static [&'static str], purpose: &'static str) -> KernelOption {
    KernelOption {
        names,
        required: false,
        purpose,
    }
}

/// The options checked, the list of `k3s check-config` and Docker's
/// `check-config.sh` narrowed to what armlet uses (nftables, not iptables).
const KERNEL_OPTIONS: &[KernelOption] = &[
    required(&["NAMESPACES"], "containers are isolated in namespaces"),
    required(&["NET_NS"], "each pod has its own network namespace"),
    required(&["PID_NS"], "containers have their own process IDs"),
    required(&["IPC_NS"], "pods have their own IPC namespace"),
    required(&["UTS_NS"], "pods have their own host name"),
    required(
        &["CGROUPS"],
        "pods and containers are accounted and limited in cgroups",
    ),
    required(
        &["CGROUP_CPUACCT"],
        "container CPU usage is read from the cpuacct controller",
    ),
    required(
        &["CGROUP_DEVICE"],
        "containers reach only the devices they are given",
    ),
    required(
        &["CGROUP_FREEZER"],
        "containers are frozen while they are stopped",
    ),
    required(
        &["CGROUP_SCHED"],
        "CPU requests and limits are set through the cpu controller",
    ),
    required(
        &["CGROUP_PIDS"],
        "process limits are set through the pids controller",
    ),
    required(&["CPUSETS"], "the cpuset controller"),
    required(
        &["MEMCG"],
        "memory limits and memory usage need the memory controller",
    ),
    required(
        &["VETH"],
        "a pod's network interface is one end of a veth pair",
    ),
    required(&["BRIDGE"], "the node's pods share the cni0 bridge"),
    required(
        &["NETFILTER"],
        "Services and masquerading are netfilter rules",
    ),
    required(
        &["NF_TABLES"],
        "armlet writes its netfilter rules with nftables",
    ),
    required(
        &["NFT_NAT"],
        "Service addresses are translated by nftables NAT",
    ),
    required(
        &["NFT_MASQ", "NF_NAT_MASQUERADE"],
        "traffic leaving the pod network is masqueraded",
    ),
    required(&["NF_NAT"], "network address translation for Services"),
    required(&["NF_CONNTRACK"], "NAT needs connection tracking"),
    required(
        &["VXLAN"],
        "pods on different nodes talk over the VXLAN overlay",
    ),
    required(
        &["OVERLAY_FS"],
        "container root filesystems are overlay mounts",
    ),
    required(&["POSIX_MQUEUE"], "containers get their own /dev/mqueue"),
    required(&["SECCOMP"], "the RuntimeDefault seccomp profile"),
    required(&["KEYS"], "containers get their own session keyring"),
    optional(
        &["BRIDGE_NETFILTER"],
        "traffic between pods of one node passes netfilter (Services and network policies on the bridge)",
    ),
    optional(&["CGROUP_BPF"], "device access control under cgroup v2"),
    optional(&["BPF_SYSCALL"], "eBPF programs (cgroup v2 device control)"),
    optional(&["CFS_BANDWIDTH"], "CPU limits are enforced (CFS quota)"),
    optional(&["MEMCG_SWAP"], "swap usage is accounted to containers"),
    optional(&["SQUASHFS"], "squashfs images"),
];

fn option_names(names: &[&str]) -> String {
    let names: Vec<String> = names.iter().map(|n| format!("CONFIG_{n}")).collect();
    names.join(" or ")
}

fn kernel_config_checks(config: &ConfigResult, release: Option<&str>) -> Vec<Check> {
    let linux = release.map_or_else(|| "Linux".to_owned(), |r| format!("Linux {r}"));
    let (source, options) = match config {
        Ok(found) => found,
        Err(tried) => {
            return vec![
                Check::new(Status::Warn, "kernel config")
                    .detail(format!("{linux}; {}", tried.join(", ")))
                    .hint(
                        "`modprobe configs` provides /proc/config.gz (CONFIG_IKCONFIG_PROC); \
                         until then only the live checks below tell",
                    ),
            ];
        }
    };
    let mut checks = vec![
        Check::new(Status::Ok, "kernel config").detail(format!("{linux}, {}", source.display())),
    ];
    // Since Linux 6.1 swap accounting is part of MEMCG: MEMCG_SWAP is gone.
    let swap_in_memcg = release
        .and_then(kernel_version)
        .is_some_and(|v| v >= (6, 1));
    for option in KERNEL_OPTIONS {
        let name = option_names(option.names);
        let found = option
            .names
            .iter()
            .map(|n| (*n, built(options, n)))
            .find(|(_, b)| *b != Built::No);
        let check = match found {
            Some((which, how)) => {
                let mut check = Check::new(Status::Ok, name);
                let mut details = Vec::new();
                if option.names.len() > 1 {
                    details.push(format!("CONFIG_{which}"));
                }
                if how == Built::Module {
                    details.push("module".to_owned());
                }
                if !details.is_empty() {
                    check = check.detail(details.join(", "));
                }
                check
            }
            None if option.names == ["MEMCG_SWAP"]
                && swap_in_memcg
                && built(options, "MEMCG") != Built::No =>
            {
                Check::new(Status::Ok, name).detail("part of CONFIG_MEMCG since Linux 6.1")
            }
            None => {
                let fix = format!(
                    "{}; build the kernel with {}=y{}",
                    option.purpose,
                    option_names(&option.names[..1]),
                    if option.required { " or =m" } else { "" }
                );
                if option.required {
                    Check::new(Status::Missing, name).hint(fix)
                } else {
                    Check::new(Status::Warn, name).detail("optional").hint(fix)
                }
            }
        };
        checks.push(check);
    }
    checks
}

/// The fix when the memory controller is disabled: the Raspberry Pi OS
/// kernel boots with it off unless told otherwise.
const MEMORY_CGROUP_HINT: &str = "add `cgroup_memory=1 cgroup_enable=memory` to the kernel \
     command line and reboot (Raspberry Pi: append them to the single line of \
     /boot/firmware/cmdline.txt, or /boot/cmdline.txt on older images)";

/// `/proc/cgroups`: controller → enabled.
fn proc_cgroups(paths: &Paths) -> Option<BTreeMap<String, bool>> {
    let text = fs::read_to_string(paths.proc.join("cgroups")).ok()?;
    Some(
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let fields: Vec<&str> = l.split_whitespace().collect();
                Some((fields.first()?.to_string(), *fields.get(3)? == "1"))
            })
            .collect(),
    )
}

/// The cgroup filesystems mounted, from `/proc/self/mountinfo`: whether a
/// cgroup2 is mounted, and the controllers of the cgroup (v1) mounts.
fn cgroup_mounts(paths: &Paths) -> (bool, BTreeSet<String>) {
    let text = fs::read_to_string(paths.proc.join("self/mountinfo")).unwrap_or_default();
    let mut v2 = false;
    let mut v1 = BTreeSet::new();
    for line in text.lines() {
        // "36 25 0:31 / /sys/fs/cgroup/memory rw,… shared:14 - cgroup cgroup rw,memory"
        let Some((_, fs_part)) = line.split_once(" - ") else {
            continue;
        };
        let fields: Vec<&str> = fs_part.split_whitespace().collect();
        match fields.first() {
            Some(&"cgroup2") => v2 = true,
            Some(&"cgroup") => {
                let opts = fields.get(2).copied().unwrap_or_default();
                v1.extend(opts.split(',').map(str::to_owned));
            }
            _ => {}
        }
    }
    (v2, v1)
}

/// The line for a controller that is not available, with why and the fix.
/// `state` is its `/proc/cgroups` entry: `None` without that file,
/// `Some(None)` when the kernel does not list it, else whether it is enabled.
fn absent_controller(
    controller: &str,
    state: Option<Option<bool>>,
    cmdline: &str,
    v2: bool,
) -> Check {
    let check = Check::new(Status::Missing, format!("cgroup {controller} controller"));
    let disabled_by = cmdline
        .split_whitespace()
        .find(|arg| {
            arg.strip_prefix("cgroup_disable=")
                .is_some_and(|list| list.split(',').any(|c| c == controller))
        })
        .map_or_else(|| "disabled".to_owned(), |arg| format!("disabled by {arg}"));
    match state {
        Some(None) => {
            let option = match controller {
                "memory" => "CONFIG_MEMCG",
                "cpu" => "CONFIG_CGROUP_SCHED",
                "cpuacct" => "CONFIG_CGROUP_CPUACCT",
                "cpuset" => "CONFIG_CPUSETS",
                "pids" => "CONFIG_CGROUP_PIDS",
                "devices" => "CONFIG_CGROUP_DEVICE",
                "freezer" => "CONFIG_CGROUP_FREEZER",
                _ => "it",
            };
            check
                .detail("not in this kernel")
                .hint(format!("build the kernel with {option}"))
        }
        Some(Some(true)) if v2 => check
            .detail("enabled, but bound to a cgroup v1 hierarchy")
            .hint("unmount its v1 hierarchy, or boot with systemd.unified_cgroup_hierarchy=1"),
        Some(Some(true)) => check.detail("enabled but not mounted").hint(format!(
            "mount it (mount -t cgroup -o {controller} cgroup /sys/fs/cgroup/{controller})"
        )),
        // Disabled, or no /proc/cgroups to tell: disabled at boot is the
        // common case (the Raspberry Pi's memory controller).
        Some(Some(false)) | None if controller == "memory" => {
            check.detail(disabled_by).hint(MEMORY_CGROUP_HINT)
        }
        Some(Some(false)) | None => check.detail(disabled_by).hint(format!(
            "remove cgroup_disable={controller} from the kernel command line, or add \
             cgroup_enable={controller}, and reboot"
        )),
    }
}

fn cgroup_checks(paths: &Paths, config: Option<&KernelOptions>) -> Vec<Check> {
    let enabled = proc_cgroups(paths);
    let cmdline = fs::read_to_string(paths.proc.join("cmdline")).unwrap_or_default();
    let state = |controller: &str| enabled.as_ref().map(|e| e.get(controller).copied());
    let mut checks = Vec::new();
    let unified = paths.sys.join("fs/cgroup/cgroup.controllers");
    if let Ok(text) = fs::read_to_string(&unified) {
        checks.push(Check::new(Status::Ok, "cgroup hierarchy").detail("v2, unified"));
        let available: BTreeSet<&str> = text.split_whitespace().collect();
        for controller in ["cpu", "cpuset", "memory", "pids"] {
            if available.contains(controller) {
                checks.push(Check::new(
                    Status::Ok,
                    format!("cgroup {controller} controller"),
                ));
            } else {
                checks.push(absent_controller(
                    controller,
                    state(controller),
                    &cmdline,
                    true,
                ));
            }
        }
        // cgroup v2 has no devices controller: runtimes attach an eBPF filter.
        let devices = "cgroup device control";
        checks.push(match config.map(|c| built(c, "CGROUP_BPF")) {
            Some(Built::In) => Check::new(Status::Ok, devices).detail("eBPF"),
            Some(_) => Check::new(Status::Warn, devices)
                .detail("no CONFIG_CGROUP_BPF")
                .hint("containers' device access cannot be restricted under cgroup v2 without it"),
            None => Check::new(Status::Warn, devices)
                .detail("cannot tell without the kernel config")
                .hint("cgroup v2 needs CONFIG_CGROUP_BPF to restrict containers' device access"),
        });
        return checks;
    }
    let (v2, v1) = cgroup_mounts(paths);
    if v1.is_empty() {
        checks.push(
            Check::new(Status::Missing, "cgroup hierarchy")
                .detail("no cgroup filesystem mounted")
                .hint("mount cgroup v2 at /sys/fs/cgroup (mount -t cgroup2 cgroup2 /sys/fs/cgroup); the init system normally does"),
        );
        return checks;
    }
    let kind = if v2 { "v1 and v2, hybrid" } else { "v1" };
    checks.push(Check::new(Status::Ok, "cgroup hierarchy").detail(kind));
    for controller in [
        "cpu", "cpuacct", "cpuset", "memory", "pids", "devices", "freezer",
    ] {
        let state = state(controller);
        if state == Some(Some(true)) && v1.contains(controller) {
            checks.push(Check::new(
                Status::Ok,
                format!("cgroup {controller} controller"),
            ));
        } else {
            checks.push(absent_controller(controller, state, &cmdline, false));
        }
    }
    checks
}

/// Whether a module-capable feature is there: loaded (or built in with
/// parameters: both show in `/sys/module`), else what the config says.
fn module_state(
    paths: &Paths,
    config: Option<&KernelOptions>,
    option: &str,
    module: &str,
) -> (Status, &'static str) {
    if paths.sys.join("module").join(module).exists() {
        return (Status::Ok, "loaded");
    }
    match config.map(|c| built(c, option)) {
        Some(Built::In) => (Status::Ok, "built in"),
        // The kernel loads it on first use (a link, a mount, a table).
        Some(Built::Module) => (Status::Ok, "module, not loaded yet"),
        Some(Built::No) => (Status::Missing, "not in this kernel"),
        None => (Status::Warn, "not loaded, and no kernel config to tell"),
    }
}

fn module_check(
    paths: &Paths,
    config: Option<&KernelOptions>,
    name: &str,
    option: &str,
    module: &str,
) -> Check {
    let (status, detail) = module_state(paths, config, option, module);
    let check = Check::new(status, name).detail(detail);
    match status {
        Status::Ok => check,
        Status::Missing => check.hint(format!("build the kernel with CONFIG_{option}=y or =m")),
        Status::Warn => check.hint(format!("`modprobe {module}` tells")),
    }
}

/// overlay: in `/proc/filesystems` once registered, else as a module.
fn overlay_check(paths: &Paths, config: Option<&KernelOptions>) -> Check {
    let name = "overlay filesystem";
    let filesystems = fs::read_to_string(paths.proc.join("filesystems")).unwrap_or_default();
    if filesystems
        .lines()
        .any(|l| l.split_whitespace().last() == Some("overlay"))
    {
        return Check::new(Status::Ok, name);
    }
    module_check(paths, config, name, "OVERLAY_FS", "overlay")
}

fn netfilter_socket_check(result: Result<(), Errno>) -> Check {
    let name = "netfilter netlink";
    match result {
        Ok(()) => Check::new(Status::Ok, name),
        Err(Errno::EPROTONOSUPPORT) => Check::new(Status::Missing, name)
            .detail("EPROTONOSUPPORT")
            .hint("nftables talks to the kernel over nfnetlink: build the kernel with CONFIG_NETFILTER_NETLINK and CONFIG_NF_TABLES"),
        Err(err) => Check::new(Status::Warn, name)
            .detail(format!("cannot open a NETLINK_NETFILTER socket: {}", err.desc()))
            .hint("run as root on the host to check"),
    }
}

/// 2025-01-01T00:00:00Z: the earliest time armlet can have been built, should
/// the build-time stamp be unreadable.
const CLOCK_FLOOR: u64 = 1_735_689_600;
/// 2101-01-01T00:00:00Z: later than that, the clock is wrong.
const CLOCK_CEILING: u64 = 4_133_980_800;

/// The earliest plausible time: when this armlet was built (build.rs).
fn build_time() -> u64 {
    env!("ARMLET_BUILD_TIME")
        .parse::<u64>()
        .unwrap_or(0)
        .max(CLOCK_FLOOR)
}

fn rfc3339(secs: u64) -> String {
    i64::try_from(secs)
        .ok()
        .and_then(|s| k8s_openapi::chrono::DateTime::from_timestamp(s, 0))
        .map_or_else(
            || format!("{secs} s after the epoch"),
            |t| t.to_rfc3339_opts(k8s_openapi::chrono::SecondsFormat::Secs, true),
        )
}

fn clock_check(now: SystemTime) -> Check {
    clock_check_against(now, build_time())
}

fn clock_check_against(now: SystemTime, floor: u64) -> Check {
    let name = "clock";
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    if secs < floor {
        // Certificates are not valid yet at such a time: joining fails.
        Check::new(Status::Missing, name)
            .detail(format!("{} is before this armlet was built, {}", rfc3339(secs), rfc3339(floor)))
            .hint("set the time (NTP: systemd-timesyncd or chrony; boards without a real-time clock boot in the past); TLS certificates are not valid before their start")
    } else if secs >= CLOCK_CEILING {
        Check::new(Status::Warn, name)
            .detail(format!("{} is after 2100", rfc3339(secs)))
            .hint("set the time (NTP: systemd-timesyncd or chrony)")
    } else {
        Check::new(Status::Ok, name).detail(rfc3339(secs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::time::Duration;

    /// Fake `/proc`, `/sys` and `/boot` under a temporary directory.
    struct Tree {
        root: PathBuf,
        paths: Paths,
    }

    impl Tree {
        fn new(tag: &str) -> Self {
            use std::sync::atomic::{AtomicU32, Ordering};
            static N: AtomicU32 = AtomicU32::new(0);
            let root = std::env::temp_dir().join(format!(
                "armlet-check-config-{tag}-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = fs::remove_dir_all(&root);
            let paths = Paths {
                proc: root.join("proc"),
                sys: root.join("sys"),
                boot: root.join("boot"),
            };
            for dir in [&paths.proc, &paths.sys, &paths.boot] {
                fs::create_dir_all(dir).unwrap();
            }
            let tree = Self { root, paths };
            tree.write("proc/sys/kernel/osrelease", "6.6.31+rpt-rpi-v8\n");
            tree
        }

        fn write(&self, rel: &str, content: &str) {
            let path = self.root.join(rel);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, content).unwrap();
        }

        fn mkdir(&self, rel: &str) {
            fs::create_dir_all(self.root.join(rel)).unwrap();
        }

        /// A cgroup v2 system with everything enabled.
        fn v2(&self) {
            self.write(
                "sys/fs/cgroup/cgroup.controllers",
                "cpuset cpu io memory pids\n",
            );
            self.write(
                "proc/self/mountinfo",
                "30 22 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n",
            );
            self.write(
                "proc/cgroups",
                "#subsys_name\thierarchy\tnum_cgroups\tenabled\ncpu\t0\t1\t1\nmemory\t0\t1\t1\n",
            );
        }

        fn report(&self) -> Report {
            check(&self.paths, &live())
        }
    }

    impl Drop for Tree {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.root);
        }
    }

    fn live() -> Live {
        Live {
            now: UNIX_EPOCH + Duration::from_secs(1_800_000_000),
            netfilter_socket: Ok(()),
        }
    }

    /// Every option of the list built in, some as modules.
    fn full_config() -> String {
        let mut text = String::from("#\n# Automatically generated file; DO NOT EDIT.\n");
        for option in KERNEL_OPTIONS {
            let value = if option.names[0] == "VXLAN" { "m" } else { "y" };
            text.push_str(&format!("CONFIG_{}={value}\n", option.names[0]));
        }
        text
    }

    fn find<'a>(report: &'a Report, name: &str) -> &'a Check {
        report
            .checks
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no check {name} in\n{report}"))
    }

    #[test]
    fn kernel_options_built_in_as_modules_or_missing() {
        let tree = Tree::new("options");
        tree.v2();
        let config = full_config()
            .replace("CONFIG_NFT_MASQ=y\n", "CONFIG_NF_NAT_MASQUERADE=m\n")
            .replace("CONFIG_NF_TABLES=y\n", "# CONFIG_NF_TABLES is not set\n")
            .replace("CONFIG_CFS_BANDWIDTH=y\n", "")
            .replace("CONFIG_MEMCG_SWAP=y\n", "");
        tree.write("boot/config-6.6.31+rpt-rpi-v8", &config);
        let report = tree.report();
        let kernel = find(&report, "kernel config");
        assert_eq!(kernel.status, Status::Ok);
        assert!(
            kernel
                .detail
                .as_ref()
                .unwrap()
                .contains("Linux 6.6.31+rpt-rpi-v8")
        );
        assert_eq!(find(&report, "CONFIG_NAMESPACES").status, Status::Ok);
        let vxlan = find(&report, "CONFIG_VXLAN");
        assert_eq!(
            (vxlan.status, vxlan.detail.as_deref()),
            (Status::Ok, Some("module"))
        );
        let masq = find(&report, "CONFIG_NFT_MASQ or CONFIG_NF_NAT_MASQUERADE");
        assert_eq!(masq.status, Status::Ok);
        assert_eq!(
            masq.detail.as_deref(),
            Some("CONFIG_NF_NAT_MASQUERADE, module")
        );
        let nft = find(&report, "CONFIG_NF_TABLES");
        assert_eq!(nft.status, Status::Missing);
        assert!(
            nft.hint
                .as_ref()
                .unwrap()
                .contains("CONFIG_NF_TABLES=y or =m")
        );
        let cfs = find(&report, "CONFIG_CFS_BANDWIDTH");
        assert_eq!(cfs.status, Status::Warn);
        assert_eq!(cfs.detail.as_deref(), Some("optional"));
        // 6.6 has swap accounting in MEMCG.
        assert_eq!(find(&report, "CONFIG_MEMCG_SWAP").status, Status::Ok);
        // The live nf_tables check agrees with the config.
        assert_eq!(find(&report, "nf_tables").status, Status::Missing);
        assert_eq!(report.exit_code(), 1);
    }

    #[test]
    fn gzipped_proc_config_is_preferred() {
        let tree = Tree::new("gz");
        tree.v2();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(full_config().as_bytes()).unwrap();
        fs::write(tree.paths.proc.join("config.gz"), gz.finish().unwrap()).unwrap();
        // A /boot config saying otherwise is not read.
        tree.write("boot/config-6.6.31+rpt-rpi-v8", "");
        tree.mkdir("sys/module/bridge");
        tree.write("proc/filesystems", "nodev\tsysfs\nnodev\toverlay\n\text4\n");
        let report = tree.report();
        let kernel = find(&report, "kernel config");
        assert!(kernel.detail.as_ref().unwrap().ends_with("proc/config.gz"));
        assert_eq!(
            find(&report, "CONFIG_VXLAN").detail.as_deref(),
            Some("module")
        );
        assert_eq!(
            find(&report, "vxlan").detail.as_deref(),
            Some("module, not loaded yet")
        );
        assert_eq!(find(&report, "bridge").detail.as_deref(), Some("loaded"));
        assert_eq!(find(&report, "veth").detail.as_deref(), Some("built in"));
        assert_eq!(find(&report, "overlay filesystem").status, Status::Ok);
        assert_eq!(report.exit_code(), 0, "{report}");
    }

    #[test]
    fn no_kernel_config_is_a_warning_and_live_checks_still_run() {
        let tree = Tree::new("noconfig");
        tree.v2();
        tree.mkdir("sys/module/vxlan");
        let report = tree.report();
        let kernel = find(&report, "kernel config");
        assert_eq!(kernel.status, Status::Warn);
        let detail = kernel.detail.as_ref().unwrap();
        assert!(
            detail.contains("proc/config.gz") && detail.contains("boot/config-6.6.31+rpt-rpi-v8")
        );
        assert!(kernel.hint.as_ref().unwrap().contains("modprobe configs"));
        assert!(!report.checks.iter().any(|c| c.name.starts_with("CONFIG_")));
        assert_eq!(find(&report, "vxlan").status, Status::Ok);
        let veth = find(&report, "veth");
        assert_eq!(veth.status, Status::Warn);
        assert_eq!(veth.hint.as_deref(), Some("`modprobe veth` tells"));
        let overlay = find(&report, "overlay filesystem");
        assert_eq!(overlay.status, Status::Warn);
        assert_eq!(find(&report, "cgroup memory controller").status, Status::Ok);
        // Warnings only: nothing required is known to be missing.
        assert_eq!(report.exit_code(), 0, "{report}");
    }

    #[test]
    fn cgroup_v1_with_memory_disabled_gets_the_raspberry_pi_hint() {
        let tree = Tree::new("v1");
        let mut mountinfo = String::new();
        for (i, c) in [
            "cpu,cpuacct",
            "cpuset",
            "memory",
            "pids",
            "devices",
            "freezer",
        ]
        .iter()
        .enumerate()
        {
            mountinfo.push_str(&format!(
                "{} 25 0:{} / /sys/fs/cgroup/{c} rw,nosuid shared:{i} - cgroup cgroup rw,{c}\n",
                30 + i,
                40 + i
            ));
        }
        tree.write("proc/self/mountinfo", &mountinfo);
        tree.write(
            "proc/cgroups",
            "#subsys_name\thierarchy\tnum_cgroups\tenabled\n\
             cpuset\t2\t1\t1\ncpu\t3\t1\t1\ncpuacct\t3\t1\t1\ndevices\t6\t1\t1\n\
             freezer\t7\t1\t1\npids\t5\t1\t1\nmemory\t0\t1\t0\n",
        );
        tree.write(
            "proc/cmdline",
            "coherent_pool=1M console=tty1 cgroup_disable=memory root=PARTUUID=1-02 rootwait\n",
        );
        let report = tree.report();
        assert_eq!(
            find(&report, "cgroup hierarchy").detail.as_deref(),
            Some("v1")
        );
        assert_eq!(find(&report, "cgroup cpu controller").status, Status::Ok);
        let memory = find(&report, "cgroup memory controller");
        assert_eq!(memory.status, Status::Missing);
        assert_eq!(
            memory.detail.as_deref(),
            Some("disabled by cgroup_disable=memory")
        );
        assert!(
            memory
                .hint
                .as_ref()
                .unwrap()
                .contains("cgroup_memory=1 cgroup_enable=memory")
        );
        assert!(memory.to_string().contains("cmdline.txt"));
        assert_eq!(report.exit_code(), 1);
    }

    #[test]
    fn cgroup_v2_controllers_are_read_from_the_root() {
        let tree = Tree::new("v2");
        tree.v2();
        tree.write("sys/fs/cgroup/cgroup.controllers", "cpuset cpu io pids\n");
        tree.write(
            "proc/cgroups",
            "#subsys_name\thierarchy\tnum_cgroups\tenabled\ncpu\t0\t1\t1\nmemory\t0\t1\t0\n",
        );
        let report = tree.report();
        assert_eq!(
            find(&report, "cgroup hierarchy").detail.as_deref(),
            Some("v2, unified")
        );
        for ok in ["cpu", "cpuset", "pids"] {
            assert_eq!(
                find(&report, &format!("cgroup {ok} controller")).status,
                Status::Ok
            );
        }
        let memory = find(&report, "cgroup memory controller");
        assert_eq!(memory.status, Status::Missing);
        assert_eq!(memory.hint.as_deref(), Some(MEMORY_CGROUP_HINT));
        // Without a kernel config, v2 device control cannot be told.
        assert_eq!(find(&report, "cgroup device control").status, Status::Warn);
        assert_eq!(report.exit_code(), 1);
    }

    #[test]
    fn no_cgroup_mounted_is_missing() {
        let tree = Tree::new("nocgroup");
        tree.write(
            "proc/self/mountinfo",
            "22 27 0:21 / /proc rw - proc proc rw\n",
        );
        let report = tree.report();
        let hierarchy = find(&report, "cgroup hierarchy");
        assert_eq!(hierarchy.status, Status::Missing);
        assert!(
            hierarchy
                .hint
                .as_ref()
                .unwrap()
                .contains("mount -t cgroup2")
        );
    }

    #[test]
    fn netfilter_socket_and_clock() {
        assert_eq!(netfilter_socket_check(Ok(())).status, Status::Ok);
        let missing = netfilter_socket_check(Err(Errno::EPROTONOSUPPORT));
        assert_eq!(missing.status, Status::Missing);
        assert_eq!(
            netfilter_socket_check(Err(Errno::EPERM)).status,
            Status::Warn
        );

        let at = |secs| UNIX_EPOCH + Duration::from_secs(secs);
        let floor = 1_750_000_000;
        let early = clock_check_against(at(86_400), floor);
        assert_eq!(early.status, Status::Missing);
        assert!(
            early
                .detail
                .as_ref()
                .unwrap()
                .starts_with("1970-01-02T00:00:00Z is before")
        );
        assert_eq!(clock_check_against(at(floor), floor).status, Status::Ok);
        assert_eq!(
            clock_check_against(at(CLOCK_CEILING), floor).status,
            Status::Warn
        );
        assert_eq!(
            clock_check_against(at(CLOCK_CEILING - 1), floor).status,
            Status::Ok
        );
        // The build stamp is read and is no earlier than the fixed floor.
        assert!(build_time() >= CLOCK_FLOOR);
        assert_eq!(
            clock_check(UNIX_EPOCH + Duration::from_secs(CLOCK_FLOOR - 1)).status,
            Status::Missing
        );
    }

    #[test]
    fn output_lines() {
        let ok = Check::new(Status::Ok, "CONFIG_VXLAN")
            .detail("module")
            .hint("not shown");
        assert_eq!(ok.to_string(), "OK      CONFIG_VXLAN (module)");
        let missing = Check::new(Status::Missing, "CONFIG_VETH").hint("build it");
        assert_eq!(missing.to_string(), "MISSING CONFIG_VETH: build it");
        let warn = Check::new(Status::Warn, "CONFIG_SQUASHFS")
            .detail("optional")
            .hint("build it");
        assert_eq!(
            warn.to_string(),
            "WARN    CONFIG_SQUASHFS (optional): build it"
        );

        let report = Report {
            checks: vec![ok.clone(), warn.clone()],
        };
        assert_eq!(report.exit_code(), 0);
        let text = report.to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[..2],
            [
                "OK      CONFIG_VXLAN (module)",
                "WARN    CONFIG_SQUASHFS (optional): build it"
            ]
        );
        assert!(lines[2].starts_with("nothing required is missing (1 warning(s))"));
        let report = Report {
            checks: vec![ok, missing],
        };
        assert_eq!(report.exit_code(), 1);
        assert!(
            report
                .to_string()
                .lines()
                .last()
                .unwrap()
                .starts_with("1 required item(s) missing")
        );
    }

    #[test]
    fn kernel_versions_parse() {
        assert_eq!(kernel_version("6.1.0-rpi7-rpi-v8"), Some((6, 1)));
        assert_eq!(kernel_version("5.15.92-tegra"), Some((5, 15)));
        assert_eq!(kernel_version("6"), None);
    }
}
