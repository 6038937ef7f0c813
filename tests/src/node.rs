//! A container runtime on this machine, for end-to-end tests: a supervisor started
//! from the release `armlet` binary, busybox root filesystems and OCI bundles.
//! Tests using it need root (CI runs as root) and a real kernel.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use armlet_runtime::client::Client;
use armlet_runtime::spec::{
    ContainerConfig, Namespace, Namespaces, Resources, Security, User, build_spec,
};
use armlet_runtime::supervisor::socket_path;

use crate::{HOST, release_binary};

/// Panics unless running as root: these tests create namespaces and cgroups.
pub fn require_root() {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("?");
    assert_eq!(
        uid, "0",
        "runtime end-to-end tests need root (CI runs them as root)"
    );
}

/// A scratch directory removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    /// A fresh directory named after the test.
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("armlet-e2e-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// The busybox applets the tests use, linked into every rootfs.
const APPLETS: &[&str] = &[
    "sh", "echo", "cat", "sleep", "touch", "id", "pwd", "env", "head", "tail", "tr", "dd", "grep",
    "seq", "hostname", "nc", "true", "false", "ls", "kill", "wc", "mkdir", "rm", "tty", "stty",
];

/// Makes a busybox root filesystem (Debian's busybox-static) under `dir`.
pub fn busybox_rootfs(dir: &Path) -> PathBuf {
    let rootfs = dir.join("rootfs");
    for sub in ["bin", "proc", "dev", "sys", "etc", "tmp", "run"] {
        fs::create_dir_all(rootfs.join(sub)).unwrap();
    }
    fs::copy("/bin/busybox", rootfs.join("bin/busybox"))
        .expect("busybox-static (cargo xtask setup installs it)");
    for applet in APPLETS {
        symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
    }
    fs::write(rootfs.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    rootfs
}

/// A container description with test defaults: private namespaces, a cgroup
/// under `/armlet-e2e/<group>/`, the given command.
pub fn container(rootfs: &Path, group: &str, id: &str, args: &[&str]) -> ContainerConfig {
    ContainerConfig {
        rootfs: rootfs.to_path_buf(),
        args: args.iter().map(|a| a.to_string()).collect(),
        env: Vec::new(),
        working_dir: None,
        user: User::default(),
        hostname: Some(id.to_owned()),
        tty: false,
        mounts: Vec::new(),
        shm: None,
        namespaces: Namespaces {
            net: Namespace::Private,
            ipc: Namespace::Private,
            uts: Namespace::Private,
            pid: Namespace::Private,
            // As containerd: a private cgroup namespace on cgroup v2 only.
            cgroup: if armlet_runtime::cgroup::unified() {
                Namespace::Private
            } else {
                Namespace::Host
            },
        },
        cgroups_path: PathBuf::from(format!("/armlet-e2e/{group}/{id}")),
        resources: Resources::default(),
        security: Security::default(),
    }
}

/// Writes an OCI bundle for `config` under `dir/bundles/<id>` and returns it.
pub fn bundle(dir: &Path, id: &str, config: &ContainerConfig) -> PathBuf {
    let bundle = dir.join("bundles").join(id);
    fs::create_dir_all(&bundle).unwrap();
    build_spec(config)
        .unwrap()
        .save(bundle.join("config.json"))
        .unwrap();
    bundle
}

/// Every cgroup hierarchy's root: each v1 controller's and the v2 one.
fn cgroup_roots() -> Vec<PathBuf> {
    let mut roots: Vec<PathBuf> = fs::read_dir("/sys/fs/cgroup")
        .map(|entries| entries.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    roots.push(PathBuf::from("/sys/fs/cgroup"));
    roots
}

/// Removes the test cgroups of `group` from every hierarchy (v1 and v2).
pub fn remove_cgroups(group: &str) {
    for root in cgroup_roots() {
        remove_cgroup_tree(&root.join("armlet-e2e").join(group));
        // The shared parent goes once the last test's group is gone.
        let _ = fs::remove_dir(root.join("armlet-e2e"));
    }
}

/// Removes a cgroup and every cgroup below it, deepest first (a cgroup
/// directory goes with rmdir once it has no children and no processes).
fn remove_cgroup_tree(dir: &Path) {
    if let Ok(children) = fs::read_dir(dir) {
        for child in children.flatten().filter(|c| c.path().is_dir()) {
            remove_cgroup_tree(&child.path());
        }
    }
    let _ = fs::remove_dir(dir);
}

/// Lists the test cgroups of `group` left in any hierarchy.
pub fn leftover_cgroups(group: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for root in cgroup_roots() {
        if let Ok(children) = fs::read_dir(root.join("armlet-e2e").join(group)) {
            found.extend(children.flatten().map(|c| c.path()).filter(|p| p.is_dir()));
        }
    }
    found
}

/// A running `armlet supervise`, stopped (SIGTERM) when dropped.
pub struct Supervisor {
    /// Its root directory.
    pub root: PathBuf,
    child: Child,
}

impl Supervisor {
    /// Starts `armlet supervise` on `root` and waits until it answers.
    pub fn start(root: &Path) -> Self {
        let child = Command::new(release_binary(&HOST))
            .args(["--runtime-root"])
            .arg(root)
            .arg("supervise")
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let sup = Self {
            root: root.to_path_buf(),
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Client::connect(&socket_path(root)).is_err() {
            assert!(
                Instant::now() < deadline,
                "supervisor did not come up on {}",
                root.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        sup
    }

    /// A new connection.
    pub fn client(&self) -> Client {
        Client::connect(&socket_path(&self.root)).unwrap()
    }

    /// The supervisor's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the supervisor with SIGKILL, as a crash would.
    pub fn crash(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::mem::forget(self);
    }

    /// Open file descriptors of the supervisor (to check for leaks).
    pub fn open_fds(&self) -> usize {
        fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .map(|d| d.count())
            .unwrap_or(0)
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

/// A cgroup file of a test container, from the v1 hierarchy of `controller` or
/// from the v2 unified one, whichever the machine has.
pub fn cgroup_file(group: &str, id: &str, controller: &str, file: &str) -> Option<String> {
    let relative = format!("armlet-e2e/{group}/{id}/{file}");
    [
        Path::new("/sys/fs/cgroup").join(controller).join(&relative),
        Path::new("/sys/fs/cgroup").join(&relative),
    ]
    .iter()
    .find_map(|p| fs::read_to_string(p).ok())
}

/// Mount points whose path contains `needle` (from /proc/self/mountinfo).
pub fn mounts_containing(needle: &str) -> Vec<String> {
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .filter(|p| p.contains(needle))
        .map(String::from)
        .collect()
}

/// Tears down what a node under test left on this machine, whatever state
/// the test stopped in: the supervisor started with `runtime_root`, every
/// process in the cgroups below `/armlet-e2e/<group>`, every mount below
/// `dir` (deepest first), then the cgroups.
pub fn clean_up_node(dir: &Path, runtime_root: &Path, group: &str) {
    let _ = Command::new("pkill")
        .args(["-KILL", "-f", "--"])
        .arg(format!(
            "--runtime-root {} supervise",
            runtime_root.display()
        ))
        .output();
    for _ in 0..50 {
        let mut found = false;
        for root in cgroup_roots() {
            found |= kill_cgroup_tree(&root.join("armlet-e2e").join(group));
        }
        if !found {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let prefix = format!("{}/", dir.display());
    let mut mounts: Vec<String> = fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_owned))
        .filter(|m| m.starts_with(&prefix))
        .collect();
    mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in mounts {
        let _ = nix::mount::umount2(m.as_str(), nix::mount::MntFlags::MNT_DETACH);
    }
    remove_cgroups(group);
}

/// SIGKILLs every process of a cgroup tree; true when there was one.
fn kill_cgroup_tree(dir: &Path) -> bool {
    let mut found = false;
    if let Ok(children) = fs::read_dir(dir) {
        for child in children.flatten().filter(|c| c.path().is_dir()) {
            found |= kill_cgroup_tree(&child.path());
        }
    }
    for pid in fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse::<i32>().ok())
    {
        found = true;
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    found
}
