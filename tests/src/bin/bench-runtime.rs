//! `bench-runtime`: how fast armlet's runtime runs a short-lived container, beside
//! crun and runc, and how much memory its supervisor costs per idle container.
//!
//! Run by `cargo xtask bench runtime` (as root). One bundle (busybox, `/bin/true`,
//! private namespaces) serves all three runtimes. A cycle is create → start → wait
//! → delete; the runtimes take turns within every round (the order rotating), so a
//! concurrent build on this 2-core machine slows all three alike rather than
//! whichever happened to run then.
//!
//! crun: Debian's crun 1.8 refuses the host's hybrid cgroup layout ("cgroups in
//! hybrid mode not supported"), but runs when `/sys/fs/cgroup/unified` is absent. The
//! driver therefore makes a private mount namespace without that mount and switches
//! into it (setns) only around crun's commands; armlet's supervisor (a separate
//! process started before) and runc keep the host's layout.
//!
//! Timings are printed, not judged: a benchmark on a shared machine must not fail
//! a build. The goal (armlet ≤ 1.0× crun) is reported as met or not.

use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;
use std::error::Error;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use armlet_runtime::client::Client;
use armlet_runtime::protocol::ContainerInfo;
use armlet_tests::bench::{BenchArgs, Stats};
use armlet_tests::node::{Supervisor, TempDir, bundle, busybox_rootfs, container, require_root};

/// Errors end the run with a message; the guards clean up on the way out.
type Result<T, E = Box<dyn Error>> = std::result::Result<T, E>;

/// Top of every cgroup the benchmark makes, in every hierarchy.
const CGROUP_TOP: &str = "armlet-bench";

/// Cycles per runtime unless `--runs` says otherwise (the issue asks for ≥ 50).
const DEFAULT_RUNS: usize = 50;

/// Idle containers for the largest memory measurement.
const IDLE_CONTAINERS: usize = 10;

const USAGE: &str = "usage: bench-runtime --armlet <release armlet binary> [--runs N]";

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let args = BenchArgs::parse(std::env::args().skip(1), USAGE, DEFAULT_RUNS)?;
    require_root();
    // `Supervisor::start` runs the binary `ARMLET_BIN_HOST` names.
    // SAFETY: nothing else runs yet: the driver is single-threaded throughout.
    unsafe { std::env::set_var("ARMLET_BIN_HOST", &args.binary) };

    // Declared first so they go last: cgroups are removed once every container is
    // gone, the scratch directory (root filesystems, bundles) after that.
    let dir = TempDir::new("bench-runtime");
    let _cgroups = CgroupCleanup::new();

    let rootfs = busybox_rootfs(dir.path());
    let mut config = container(&rootfs, "bench", "bench", &["/bin/true"]);
    // Every runtime uses the one path, in turn: each removes it on delete.
    config.cgroups_path = PathBuf::from(format!("/{CGROUP_TOP}/cycle"));
    let bundle = bundle(dir.path(), "bench", &config);
    let logs = dir.path().join("logs");
    fs::create_dir_all(&logs)?;
    // Every runtime keeps its state on tmpfs, as in /run on a real system (this
    // VM's /run is on its disk, where each fsync costs milliseconds). Mounted
    // before the private namespace is copied, so crun sees it too.
    let run = RunTmpfs::mount(&dir.path().join("run"))?;

    // The supervisor starts before the driver ever leaves the host's namespace.
    let sup = ArmletGuard::start(&run.path.join("armlet"))?;
    let ns = MountNamespaces::new()?;
    let fresh = Memory::of(sup.sup.pid())?;
    let mut runc = OciRuntime::new("runc", &run.path, None);
    let mut crun = OciRuntime::new("crun", &run.path, Some(&ns));

    // One untimed cycle each: proves the bundle suits every runtime (with its
    // error output if not) and warms the page cache for all alike.
    let mut armlet = Armlet {
        client: sup.sup.client(),
        bundle: &bundle,
        logs: &logs,
    };
    armlet.cycle("warm-up")?;
    runc.warm_up(&bundle)?;
    crun.warm_up(&bundle)?;

    let mut times: [Vec<Duration>; 3] = Default::default();
    for round in 0..args.runs {
        for turn in 0..3 {
            let which = (round + turn) % 3;
            let id = format!("c{round}");
            let took = match which {
                0 => armlet.cycle(&id)?,
                1 => crun.cycle(&bundle, &id)?,
                _ => runc.cycle(&bundle, &id)?,
            };
            times[which].push(took);
        }
    }
    let [armlet_times, crun_times, runc_times] = times;
    let leftovers = bench_cgroups();

    println!();
    println!(
        "create → start → wait → delete of /bin/true, one bundle, {} runs each, interleaved",
        args.runs
    );
    println!(
        "{:<8} {:>5} {:>10} {:>8} {:>8}  cycle",
        "runtime", "runs", "median ms", "p90 ms", "min ms"
    );
    let armlet_stats = Stats::of(&armlet_times).scaled(1e3);
    let crun_stats = Stats::of(&crun_times).scaled(1e3);
    let runc_stats = Stats::of(&runc_times).scaled(1e3);
    for (name, s, steps) in [
        ("armlet", &armlet_stats, "4 socket requests"),
        ("crun", &crun_stats, crun.steps()),
        ("runc", &runc_stats, runc.steps()),
    ] {
        println!(
            "{name:<8} {:>5} {:>10.1} {:>8.1} {:>8.1}  {steps}",
            s.runs, s.median, s.p90, s.min
        );
    }
    let vs_crun = armlet_stats.median / crun_stats.median;
    let vs_runc = armlet_stats.median / runc_stats.median;
    println!(
        "armlet/crun median: {vs_crun:.2}× (goal ≤ 1.0×: {})",
        if vs_crun <= 1.0 { "met" } else { "NOT met" }
    );
    println!("armlet/runc median: {vs_runc:.2}×");
    if !leftovers.is_empty() {
        println!("cgroups left behind after the cycles: {leftovers:?}");
    }

    println!();
    idle_memory(&sup, dir.path(), &rootfs, fresh)?;
    Ok(())
}

/// armlet's side: cycles through the supervisor's socket, as the agent drives it.
struct Armlet<'a> {
    client: Client,
    bundle: &'a Path,
    logs: &'a Path,
}

impl Armlet<'_> {
    /// One create → start → wait → delete, timed; the container must exit 0.
    fn cycle(&mut self, id: &str) -> Result<Duration> {
        let log = self.logs.join(format!("{id}.log"));
        let started = Instant::now();
        self.client.create(id, self.bundle, &log)?;
        self.client.start(id)?;
        let info = self.client.wait(id)?;
        self.client.delete(id)?;
        let took = started.elapsed();
        check_exit(&info, id)?;
        // The CRI log is part of armlet's work (crun and runc write to /dev/null);
        // removing it is not.
        let _ = fs::remove_file(&log);
        Ok(took)
    }
}

fn check_exit(info: &ContainerInfo, id: &str) -> Result<()> {
    match &info.exit {
        Some(exit) if exit.exit_code == 0 => Ok(()),
        other => Err(format!("armlet: /bin/true in {id} ended with {other:?}").into()),
    }
}

/// The supervisor, with every container it holds deleted before it is stopped:
/// stopping it alone would leave them running (a new supervisor would adopt them).
struct ArmletGuard {
    sup: Supervisor,
}

impl ArmletGuard {
    fn start(root: &Path) -> Result<Self> {
        Ok(Self {
            sup: Supervisor::start(root),
        })
    }
}

impl Drop for ArmletGuard {
    fn drop(&mut self) {
        if let Ok(mut client) =
            Client::connect(&armlet_runtime::supervisor::socket_path(&self.sup.root))
        {
            for c in client.list().unwrap_or_default() {
                let _ = client.delete(&c.id);
            }
        }
    }
}

/// crun or runc, driven through its command line with its own state directory.
/// Dropping it force-deletes whatever containers that state directory still holds.
struct OciRuntime<'a> {
    name: &'static str,
    root: PathBuf,
    /// The mount namespace it must run in, if not the host's.
    ns: Option<&'a MountNamespaces>,
    /// Whether a container is still there after a foreground `run` and needs a
    /// `delete` (learnt in the warm-up).
    needs_delete: bool,
}

impl<'a> OciRuntime<'a> {
    fn new(name: &'static str, dir: &Path, ns: Option<&'a MountNamespaces>) -> Self {
        Self {
            name,
            root: dir.join(name),
            ns,
            needs_delete: true,
        }
    }

    fn command(&self) -> Command {
        let mut c = Command::new(self.name);
        c.arg("--root").arg(&self.root);
        c
    }

    /// Runs `f` inside this runtime's mount namespace.
    fn inside<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let Some(ns) = self.ns else {
            return f();
        };
        ns.enter_private()?;
        let result = f();
        ns.enter_host()?;
        result
    }

    /// Runs `sub` on container `id` with stdio on /dev/null (stderr captured
    /// unless `quiet`) and fails unless it exits 0.
    fn invoke(&self, sub: &[&str], id: &str, quiet: bool) -> Result<()> {
        let out = self
            .command()
            .args(sub)
            .arg(id)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(if quiet { Stdio::null() } else { Stdio::piped() })
            .output()?;
        if out.status.success() {
            return Ok(());
        }
        Err(format!(
            "`{} {}` of {id} failed ({}){}{}",
            self.name,
            sub.join(" "),
            out.status,
            if out.stderr.is_empty() { "" } else { ":\n" },
            String::from_utf8_lossy(&out.stderr).trim_end()
        )
        .into())
    }

    /// One cycle: `run` in the foreground, which creates, starts and waits (the
    /// container's stdio is the runtime's: /dev/null), then `delete` if needed.
    fn run_and_delete(&self, bundle: &Path, id: &str, quiet: bool) -> Result<Duration> {
        let bundle = bundle.to_string_lossy();
        let run = ["run", "--bundle", bundle.as_ref()];
        self.inside(|| {
            let started = Instant::now();
            self.invoke(&run, id, quiet)?;
            if self.needs_delete {
                self.invoke(&["delete"], id, quiet)?;
            }
            Ok(started.elapsed())
        })
    }

    /// One untimed cycle that shows the bundle suits this runtime (with its error
    /// output if not) and finds out whether `delete` is part of the cycle: runc
    /// 1.1 and crun 1.8 delete a container themselves when a foreground `run`
    /// ends, and then refuse a `delete` ("container does not exist"); timing a
    /// `delete` that only fails would charge them a process start for nothing.
    fn warm_up(&mut self, bundle: &Path) -> Result<()> {
        let id = "warm-up";
        self.needs_delete = false;
        self.run_and_delete(bundle, id, false)?;
        self.needs_delete = self.inside(|| {
            let out = self.command().args(["list", "-q"]).output()?;
            Ok(String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .any(|c| c == id))
        })?;
        if self.needs_delete {
            self.inside(|| self.invoke(&["delete"], id, false))?;
        }
        Ok(())
    }

    fn cycle(&self, bundle: &Path, id: &str) -> Result<Duration> {
        self.run_and_delete(bundle, id, true)
    }

    /// What one cycle consists of, for the table's legend.
    fn steps(&self) -> &'static str {
        if self.needs_delete {
            "run + delete"
        } else {
            "run (deletes itself)"
        }
    }
}

impl Drop for OciRuntime<'_> {
    fn drop(&mut self) {
        let _ = self.inside(|| {
            let out = self.command().args(["list", "-q"]).output()?;
            for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = self
                    .command()
                    .args(["delete", "--force", id])
                    .stderr(Stdio::null())
                    .status();
            }
            Ok(())
        });
    }
}

/// The host's mount namespace and a private one without `/sys/fs/cgroup/unified`
/// (for crun), with the driver in the host's between switches. The private one
/// lives as long as its descriptor: it goes with this value, or with the process.
/// A tmpfs for the runtimes' state, unmounted when dropped.
struct RunTmpfs {
    path: PathBuf,
}

impl RunTmpfs {
    fn mount(path: &Path) -> Result<Self> {
        fs::create_dir_all(path)?;
        nix::mount::mount(
            Some("tmpfs"),
            path,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=0700,size=64m"),
        )
        .map_err(sys("mounting a tmpfs for the runtimes' state"))?;
        Ok(Self {
            path: path.to_path_buf(),
        })
    }
}

impl Drop for RunTmpfs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.path, MntFlags::MNT_DETACH);
    }
}

struct MountNamespaces {
    host: File,
    private: File,
}

fn sys(what: &str) -> impl FnOnce(nix::Error) -> Box<dyn std::error::Error> + '_ {
    move |e| format!("{what}: {e}").into()
}

impl MountNamespaces {
    fn new() -> Result<Self> {
        let host = File::open("/proc/self/ns/mnt")?;
        // unshare and setns of a mount namespace need a single-threaded process,
        // which the driver is.
        nix::sched::unshare(CloneFlags::CLONE_NEWNS).map_err(sys("unshare(CLONE_NEWNS)"))?;
        // Private first, so the unmount below cannot propagate to the host.
        nix::mount::mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&str>,
        )
        .map_err(sys("making / rprivate"))?;
        nix::mount::umount2("/sys/fs/cgroup/unified", MntFlags::MNT_DETACH)
            .map_err(sys("unmounting /sys/fs/cgroup/unified"))?;
        let private = File::open("/proc/self/ns/mnt")?;
        let ns = Self { host, private };
        ns.enter_host()?;
        Ok(ns)
    }

    fn enter(fd: &File, which: &str) -> Result<()> {
        nix::sched::setns(fd, CloneFlags::CLONE_NEWNS)
            .map_err(|e| format!("entering the {which} mount namespace: {e}").into())
    }

    fn enter_private(&self) -> Result<()> {
        Self::enter(&self.private, "private")
    }

    fn enter_host(&self) -> Result<()> {
        Self::enter(&self.host, "host's")
    }
}

impl Drop for MountNamespaces {
    fn drop(&mut self) {
        // An error inside crun's turn may leave the driver in the private namespace;
        // the cleanup after this (cgroups) must see the host's.
        let _ = self.enter_host();
    }
}

/// Resident and proportional set size of a process, in KiB.
#[derive(Clone, Copy)]
struct Memory {
    rss: u64,
    pss: u64,
}

impl Memory {
    fn of(pid: u32) -> Result<Self> {
        let text = fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))?;
        let field = |name: &str| -> Result<u64> {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("no {name} in /proc/{pid}/smaps_rollup").into())
        };
        Ok(Self {
            rss: field("Rss:")?,
            pss: field("Pss:")?,
        })
    }
}

/// The supervisor's memory with 0, 1 and 10 idle containers (`sleep 3600`), then
/// deletes them.
fn idle_memory(sup: &ArmletGuard, dir: &Path, rootfs: &Path, fresh: Memory) -> Result<()> {
    let pid = sup.sup.pid();
    let mut client = sup.sup.client();
    let logs = dir.join("logs");
    let mut rows = vec![("0 (fresh start)".to_owned(), fresh)];
    rows.push(("0 (after the cycles)".to_owned(), Memory::of(pid)?));
    let mut ids = Vec::new();
    for n in 1..=IDLE_CONTAINERS {
        let id = format!("idle-{n}");
        let mut config = container(rootfs, "bench", &id, &["/bin/sleep", "3600"]);
        config.cgroups_path = PathBuf::from(format!("/{CGROUP_TOP}/idle/{id}"));
        let b = bundle(dir, &id, &config);
        client.create(&id, &b, &logs.join(format!("{id}.log")))?;
        ids.push(id.clone());
        client.start(&id)?;
        if n == 1 || n == IDLE_CONTAINERS {
            rows.push((n.to_string(), Memory::of(pid)?));
        }
    }
    // One process supervises them all: its children are the containers' own
    // processes, no per-container shim.
    let children = fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .map(|s| s.split_whitespace().count())
        .unwrap_or(0);
    println!("armlet supervisor (pid {pid}) memory with idle containers (sleep 3600)");
    println!(
        "{:<22} {:>8} {:>8}",
        "idle containers", "PSS KiB", "RSS KiB"
    );
    for (label, m) in &rows {
        println!("{label:<22} {:>8} {:>8}", m.pss, m.rss);
    }
    let (first, last) = (rows[2].1, rows[rows.len() - 1].1);
    println!(
        "per extra idle container: {:.0} KiB PSS; supervisor's child processes: {children}",
        (last.pss as f64 - first.pss as f64) / (IDLE_CONTAINERS - 1) as f64
    );
    for id in &ids {
        client.delete(id)?;
    }
    Ok(())
}

/// Removes the benchmark's cgroups from every hierarchy, on creation (what a
/// crashed earlier run left) and on drop.
struct CgroupCleanup;

impl CgroupCleanup {
    fn new() -> Self {
        remove_bench_cgroups();
        Self
    }
}

impl Drop for CgroupCleanup {
    fn drop(&mut self) {
        remove_bench_cgroups();
    }
}

/// The `armlet-bench` directory of every cgroup hierarchy (v1 controllers, the
/// unified one, or a pure v2 root).
fn bench_roots() -> Vec<PathBuf> {
    let mut roots: Vec<PathBuf> = fs::read_dir("/sys/fs/cgroup")
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    roots.push(PathBuf::from("/sys/fs/cgroup"));
    roots
        .into_iter()
        .map(|r| r.join(CGROUP_TOP))
        .filter(|p| p.is_dir())
        .collect()
}

/// Cgroups below `armlet-bench` in any hierarchy (what runtimes left behind).
fn bench_cgroups() -> Vec<PathBuf> {
    fn walk(dir: &Path, found: &mut Vec<PathBuf>) {
        for sub in fs::read_dir(dir).into_iter().flatten().flatten() {
            if sub.file_type().is_ok_and(|t| t.is_dir()) {
                found.push(sub.path());
                walk(&sub.path(), found);
            }
        }
    }
    let mut found = Vec::new();
    for root in bench_roots() {
        walk(&root, &mut found);
    }
    found
}

fn remove_bench_cgroups() {
    // Deepest first: a cgroup directory can only be removed once it has no children
    // (its control files go with it).
    let mut dirs = bench_cgroups();
    dirs.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    dirs.extend(bench_roots());
    for dir in dirs {
        let _ = fs::remove_dir(dir);
    }
}
