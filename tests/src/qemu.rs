//! Booting a real ARM Linux kernel under qemu-system, for tests that need more than
//! qemu-user gives: a kernel of the board's architecture, its cgroups and
//! namespaces (armv7 containers cannot run under qemu-user at all), pure cgroup v2.
//!
//! The pieces, each usable on its own:
//! - [`GuestKit`]: Debian's arm64 / armhf (LPAE) kernel and busybox, which
//!   `cargo xtask setup` unpacks under [`GUEST_DIR`];
//! - [`Cpio`]: a small writer of the kernel's initramfs format (newc, uncompressed);
//! - [`guest_initramfs`]: busybox plus a two-stage `/init` that mounts the usual
//!   file systems and cgroup2 alone, runs a caller's script and powers off;
//! - [`Vm`]: runs qemu-system with no network device, the serial console captured
//!   to a file and a hard timeout;
//! - [`Console`] and [`Check`]: the captured console and the `ARMLET-CHECK` result
//!   markers a guest script prints.
//!
//! Emulation is TCG (there is no KVM for ARM on an x86 host): a boot to `/init`
//! takes 1–2 s, but every process a guest script starts costs milliseconds of
//! emulated work, so scripts should do little more than what they check.

use std::collections::BTreeSet;
use std::fmt;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::{AARCH64, ARMV7, Target};

/// Where `cargo xtask setup` unpacks each architecture's guest kernel and busybox:
/// `<GUEST_DIR>/<Debian arch>/{vmlinuz,config,busybox}` (xtask/src/setup.rs keeps
/// the same layout; the two crates cannot share the constant).
pub const GUEST_DIR: &str = "/var/lib/armlet-dev/qemu";

/// The kernel command line [`Vm::new`] starts from. `rdinit=/init` runs the
/// initramfs' script; `panic=-1` with qemu's `-no-reboot` turns a kernel panic
/// (or `/init` exiting) into qemu exiting instead of a hang until the timeout;
/// `cgroup_no_v1=all` makes sure nothing can use a v1 hierarchy, so the guest is
/// pure cgroup v2 like current Raspberry Pi OS; `quiet` keeps boot messages from
/// burying the script's output (panics are still printed).
pub const DEFAULT_CMDLINE: &str = "console=ttyAMA0 panic=-1 rdinit=/init cgroup_no_v1=all quiet";

/// What a guest script prints for each check: `ARMLET-CHECK <name>=<ok|fail> <detail>`.
pub const CHECK_MARKER: &str = "ARMLET-CHECK ";

/// Printed by [`guest_initramfs`]'s `/init` when the caller's script has returned.
pub const DONE_MARKER: &str = "ARMLET-GUEST-DONE";

/// A guest architecture: which kernel, which qemu and which CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// 64-bit ARM: Debian's `arm64` kernel on a Cortex-A57.
    Aarch64,
    /// 32-bit ARMv7: Debian's `armmp-lpae` kernel on a Cortex-A15.
    Armv7,
}

impl Arch {
    /// Both guest architectures.
    pub const ALL: [Arch; 2] = [Arch::Aarch64, Arch::Armv7];

    /// The armlet build target whose binaries run in this guest.
    pub fn target(self) -> &'static Target {
        match self {
            Arch::Aarch64 => &AARCH64,
            Arch::Armv7 => &ARMV7,
        }
    }

    /// Debian's name for the architecture (of the kernel and busybox packages).
    pub fn deb_arch(self) -> &'static str {
        match self {
            Arch::Aarch64 => "arm64",
            Arch::Armv7 => "armhf",
        }
    }

    /// What `uname -m` says in the guest.
    pub fn uname_machine(self) -> &'static str {
        match self {
            Arch::Aarch64 => "aarch64",
            Arch::Armv7 => "armv7l",
        }
    }

    /// The qemu-system emulator for the architecture.
    pub fn qemu_system(self) -> &'static str {
        match self {
            Arch::Aarch64 => "qemu-system-aarch64",
            Arch::Armv7 => "qemu-system-arm",
        }
    }

    /// Machine and CPU: QEMU's generic `virt` board (PL011 serial on ttyAMA0,
    /// PL031 clock, PSCI power-off), which Debian's generic kernels support.
    fn machine_args(self) -> [&'static str; 4] {
        match self {
            Arch::Aarch64 => ["-M", "virt", "-cpu", "cortex-a57"],
            // The A15 has LPAE, which the armmp-lpae kernel requires.
            Arch::Armv7 => ["-M", "virt", "-cpu", "cortex-a15"],
        }
    }
}

/// The files a guest boots from, as `cargo xtask setup` prepared them.
#[derive(Debug, Clone)]
pub struct GuestKit {
    /// Architecture.
    pub arch: Arch,
    /// The kernel image qemu loads (`-kernel`).
    pub kernel: PathBuf,
    /// The kernel's build configuration, to see what is built in.
    pub config: PathBuf,
    /// A static busybox of the guest's architecture, for `/init` and root filesystems.
    pub busybox: PathBuf,
}

/// A guest file that is not where `cargo xtask setup` puts it.
#[derive(Debug)]
pub struct MissingKit {
    arch: Arch,
    path: PathBuf,
}

impl fmt::Display for MissingKit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} is missing: the {} QEMU guest (Debian's {} kernel and busybox) is not \
             prepared; run `cargo xtask setup` as root (or the whole suite with \
             `cargo xtask test`)",
            self.path.display(),
            self.arch.uname_machine(),
            self.arch.deb_arch()
        )
    }
}

impl std::error::Error for MissingKit {}

impl GuestKit {
    /// The kit under [`GUEST_DIR`]; an error naming the missing file and the
    /// command that fetches it otherwise.
    pub fn find(arch: Arch) -> Result<Self, MissingKit> {
        Self::find_in(Path::new(GUEST_DIR), arch)
    }

    /// The kit under `dir` (laid out as under [`GUEST_DIR`]).
    pub fn find_in(dir: &Path, arch: Arch) -> Result<Self, MissingKit> {
        let base = dir.join(arch.deb_arch());
        let kit = Self {
            arch,
            kernel: base.join("vmlinuz"),
            config: base.join("config"),
            busybox: base.join("busybox"),
        };
        for path in [&kit.kernel, &kit.config, &kit.busybox] {
            if !path.is_file() {
                return Err(MissingKit {
                    arch,
                    path: path.clone(),
                });
            }
        }
        Ok(kit)
    }

    /// Whether the kernel has `option` built in (`CONFIG_<option>=y`).
    pub fn kernel_has(&self, option: &str) -> bool {
        let line = format!("CONFIG_{option}=y");
        fs::read_to_string(&self.config)
            .map(|c| c.lines().any(|l| l == line))
            .unwrap_or(false)
    }
}

/// The fields of a newc header after the magic, in order.
struct Header {
    mode: u32,
    nlink: u32,
    size: u32,
    rdev_major: u32,
    rdev_minor: u32,
}

/// A writer of the kernel's initramfs format: a newc ("070701") cpio archive,
/// uncompressed (the kernel unpacks that as it is).
///
/// Entries are owned by root with modification time 0 (archives are reproducible).
/// Parent directories are added (mode 0755) when an entry needs them, as the
/// kernel's unpacker does not create them. Paths are archive paths: a leading `/`
/// and `.` components are dropped; nothing else is interpreted. Adding methods
/// never fail: the first error (an unreadable host file, an entry too large for
/// the format) is kept and returned by [`Cpio::finish`].
#[derive(Debug, Default)]
pub struct Cpio {
    out: Vec<u8>,
    next_ino: u32,
    dirs: BTreeSet<String>,
    error: Option<io::Error>,
}

const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFCHR: u32 = 0o020_000;

impl Cpio {
    /// An empty archive.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a directory (and its missing parents).
    pub fn dir(&mut self, path: &str, mode: u32) -> &mut Self {
        let name = normalise(path);
        if name.is_empty() || self.dirs.contains(&name) {
            return self;
        }
        self.parents(&name);
        self.entry(
            &name,
            Header {
                mode: S_IFDIR | (mode & 0o7777),
                nlink: 2,
                size: 0,
                rdev_major: 0,
                rdev_minor: 0,
            },
            &[],
        );
        self.dirs.insert(name);
        self
    }

    /// Adds a regular file with `data` and permission bits `mode` (e.g. 0o755).
    pub fn file(&mut self, path: &str, mode: u32, data: &[u8]) -> &mut Self {
        let name = normalise(path);
        let Ok(size) = u32::try_from(data.len()) else {
            self.fail(io::Error::other(format!(
                "{name}: {} bytes is more than a newc archive can hold",
                data.len()
            )));
            return self;
        };
        self.parents(&name);
        self.entry(
            &name,
            Header {
                mode: S_IFREG | (mode & 0o7777),
                nlink: 1,
                size,
                rdev_major: 0,
                rdev_minor: 0,
            },
            data,
        );
        self
    }

    /// Adds a file with the contents and permission bits of `host`.
    pub fn copy(&mut self, path: &str, host: &Path) -> &mut Self {
        match fs::read(host).and_then(|data| Ok((data, fs::metadata(host)?))) {
            Ok((data, meta)) => self.file(path, meta.permissions().mode(), &data),
            Err(e) => {
                self.fail(io::Error::new(e.kind(), format!("{}: {e}", host.display())));
                self
            }
        }
    }

    /// Adds a symbolic link at `path` pointing to `target` (taken verbatim).
    pub fn symlink(&mut self, path: &str, target: &str) -> &mut Self {
        let name = normalise(path);
        self.parents(&name);
        // A target is a few bytes: it fits in the size field.
        let size = u32::try_from(target.len()).unwrap_or(u32::MAX);
        self.entry(
            &name,
            Header {
                mode: S_IFLNK | 0o777,
                nlink: 1,
                size,
                rdev_major: 0,
                rdev_minor: 0,
            },
            target.as_bytes(),
        );
        self
    }

    /// Adds a character device node (e.g. `/dev/console`, 5:1, which the kernel
    /// opens for `/init`'s standard streams before any devtmpfs is mounted).
    pub fn char_device(&mut self, path: &str, mode: u32, major: u32, minor: u32) -> &mut Self {
        let name = normalise(path);
        self.parents(&name);
        self.entry(
            &name,
            Header {
                mode: S_IFCHR | (mode & 0o7777),
                nlink: 1,
                size: 0,
                rdev_major: major,
                rdev_minor: minor,
            },
            &[],
        );
        self
    }

    /// Adds the host directory `host` as `path`, recursively: directories, regular
    /// files (with their permission bits) and symbolic links. Anything else (a
    /// socket, a device) is an error, as it has no place in an image built by a test.
    pub fn tree(&mut self, path: &str, host: &Path) -> &mut Self {
        if let Err(e) = self.add_tree(path, host) {
            self.fail(e);
        }
        self
    }

    fn add_tree(&mut self, path: &str, host: &Path) -> io::Result<()> {
        let meta = fs::symlink_metadata(host)?;
        let kind = meta.file_type();
        if kind.is_symlink() {
            let target = fs::read_link(host)?;
            self.symlink(path, &target.to_string_lossy());
        } else if kind.is_file() {
            self.copy(path, host);
        } else if kind.is_dir() {
            self.dir(path, meta.permissions().mode());
            let mut entries: Vec<_> = fs::read_dir(host)?.collect::<Result<_, _>>()?;
            // Sorted: the same tree always gives the same archive.
            entries.sort_by_key(|e| e.file_name());
            for entry in entries {
                let name = entry.file_name();
                let child = format!("{}/{}", normalise(path), name.to_string_lossy());
                self.add_tree(&child, &entry.path())?;
            }
        } else {
            let what = if kind.is_socket() {
                "a socket"
            } else {
                "a special file"
            };
            return Err(io::Error::other(format!(
                "{} is {what}: not copied into an initramfs",
                host.display()
            )));
        }
        Ok(())
    }

    /// Ends the archive (the `TRAILER!!!` entry) and returns its bytes, or the
    /// first error met while adding entries.
    pub fn finish(mut self) -> io::Result<Vec<u8>> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        self.next_ino = 0;
        self.entry(
            "TRAILER!!!",
            Header {
                mode: 0,
                nlink: 1,
                size: 0,
                rdev_major: 0,
                rdev_minor: 0,
            },
            &[],
        );
        Ok(self.out)
    }

    /// [`Cpio::finish`], written to `path`.
    pub fn write_to(self, path: &Path) -> io::Result<()> {
        let bytes = self.finish()?;
        fs::write(path, bytes)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
    }

    fn fail(&mut self, e: io::Error) {
        self.error.get_or_insert(e);
    }

    fn parents(&mut self, name: &str) {
        if let Some((parent, _)) = name.rsplit_once('/') {
            if !self.dirs.contains(parent) {
                self.dir(parent, 0o755);
            }
        }
    }

    fn entry(&mut self, name: &str, h: Header, data: &[u8]) {
        self.next_ino += 1;
        let fields = [
            self.next_ino,
            h.mode,
            0, // uid
            0, // gid
            h.nlink,
            0, // mtime
            h.size,
            0, // dev major
            0, // dev minor
            h.rdev_major,
            h.rdev_minor,
            // The name's length counts its terminating NUL.
            u32::try_from(name.len() + 1).unwrap_or(u32::MAX),
            0, // check (unused by newc)
        ];
        self.out.extend_from_slice(b"070701");
        for field in fields {
            self.out
                .extend_from_slice(format!("{field:08X}").as_bytes());
        }
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
    }

    /// Header plus name, and data, each end on a 4-byte boundary.
    fn pad(&mut self) {
        while self.out.len() % 4 != 0 {
            self.out.push(0);
        }
    }
}

/// An archive path: no leading `/`, no empty or `.` components.
fn normalise(path: &str) -> String {
    path.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect::<Vec<_>>()
        .join("/")
}

/// Stage one of the guest's `/init`. Every OCI runtime `pivot_root`s into a
/// container's root, and the kernel refuses `pivot_root` while the root is the
/// initramfs itself (rootfs cannot be unmounted): so the initramfs is copied into a
/// tmpfs that becomes the root (`switch_root`), as a real system's root would be.
const INIT_STAGE1: &str = r#"#!/bin/sh
/bin/busybox mkdir -p /newroot
/bin/busybox mount -t tmpfs -o mode=0755 root /newroot
for entry in /*; do
    [ "$entry" = /newroot ] || /bin/busybox cp -a "$entry" /newroot/
done
exec /bin/busybox switch_root /newroot /init-stage2
"#;

/// Stage two: the file systems a board's init would mount, cgroup2 alone on
/// /sys/fs/cgroup, then the caller's script, then power off (qemu exits).
const INIT_STAGE2: &str = r#"#!/bin/sh
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs -o mode=0755 run /run
mount -t tmpfs -o mode=1777 tmp /tmp
mount -t cgroup2 cgroup2 /sys/fs/cgroup
exec </dev/console >/dev/console 2>&1
# Kernel messages (an OOM kill report, say) would land in the middle of the
# script's marker lines: keep them in dmesg only.
echo 1 > /proc/sys/kernel/printk

# check NAME STATUS DETAIL...: one result marker; STATUS 0 is success.
check() {
    name=$1
    status=$2
    shift 2
    if [ "$status" = 0 ]; then result=ok; else result=fail; fi
    echo "ARMLET-CHECK $name=$result $(echo "$*" | tr '\n' ' ')"
}

echo "ARMLET-GUEST-START machine=$(uname -m) kernel=$(uname -r) uptime=$(cut -d' ' -f1 /proc/uptime)"
. /guest-script
echo "ARMLET-GUEST-DONE uptime=$(cut -d' ' -f1 /proc/uptime)"
poweroff -f
"#;

/// An initramfs for `kit`'s architecture: busybox as `/bin/busybox` (every applet
/// installed at boot), the two-stage `/init`, and `script`, a busybox `sh` script
/// that stage two sources with this set up:
///
/// - proc, sysfs, devtmpfs (+ devpts), tmpfs on `/run` and `/tmp`, and cgroup2 on
///   `/sys/fs/cgroup` (no v1 hierarchy: the kernel runs with `cgroup_no_v1=all`);
/// - kernel messages kept off the console;
/// - a shell function `check NAME STATUS DETAIL...` printing
///   `ARMLET-CHECK NAME=ok|fail DETAIL` (ok when STATUS is 0), which
///   [`Console::checks`] parses.
///
/// After the script, `/init` prints [`DONE_MARKER`] and powers the machine off.
/// The caller adds its own files (binaries, bundles) before writing the archive.
pub fn guest_initramfs(kit: &GuestKit, script: &str) -> Cpio {
    let mut cpio = Cpio::new();
    for dir in [
        "proc", "sys", "dev", "run", "tmp", "mnt", "sbin", "usr/bin", "usr/sbin",
    ] {
        cpio.dir(dir, 0o755);
    }
    cpio.char_device("dev/console", 0o600, 5, 1)
        .copy("bin/busybox", &kit.busybox)
        .symlink("bin/sh", "busybox")
        .file("init", 0o755, INIT_STAGE1.as_bytes())
        .file("init-stage2", 0o755, INIT_STAGE2.as_bytes())
        .file("guest-script", 0o644, script.as_bytes());
    cpio
}

/// One qemu-system run: a kernel, an initramfs, a command line, limits.
#[derive(Debug, Clone)]
pub struct Vm {
    /// Guest architecture.
    pub arch: Arch,
    /// Kernel image.
    pub kernel: PathBuf,
    /// Initramfs (an uncompressed or gzip'd cpio archive).
    pub initramfs: PathBuf,
    /// Kernel command line.
    pub cmdline: String,
    /// Guest memory in MiB.
    pub memory_mib: u32,
    /// Virtual CPUs.
    pub cpus: u32,
    /// How long qemu may run before it is killed and the run fails.
    pub timeout: Duration,
    /// More qemu arguments, after the standard ones (a disk image, say). Keep
    /// to the rule [`Vm::command`] follows: no network device.
    pub extra_args: Vec<String>,
}

impl Vm {
    /// A run of `kit`'s kernel with `initramfs`: [`DEFAULT_CMDLINE`], 512 MiB,
    /// one CPU (TCG runs each on a host thread; a 2-core host often runs two
    /// guests at once) and a 90 s timeout.
    pub fn new(kit: &GuestKit, initramfs: &Path) -> Self {
        Self {
            arch: kit.arch,
            kernel: kit.kernel.clone(),
            initramfs: initramfs.to_path_buf(),
            cmdline: DEFAULT_CMDLINE.to_owned(),
            memory_mib: 512,
            cpus: 1,
            timeout: Duration::from_secs(90),
            extra_args: Vec::new(),
        }
    }

    /// The qemu command line. The guest gets no network device at all
    /// (`-nic none`): nothing it does can leave this machine.
    pub fn command(&self) -> Command {
        let mut c = Command::new(self.arch.qemu_system());
        c.args(self.arch.machine_args())
            .args(["-accel", "tcg"])
            .args(["-m", &self.memory_mib.to_string()])
            .args(["-smp", &self.cpus.to_string()])
            .args(["-nographic", "-no-reboot", "-nic", "none"])
            .arg("-kernel")
            .arg(&self.kernel)
            .arg("-initrd")
            .arg(&self.initramfs)
            .args(["-append", &self.cmdline])
            .args(&self.extra_args);
        c
    }

    /// Boots the guest and waits for qemu to exit (the guest powered off, or its
    /// kernel panicked), with the serial console (and qemu's own messages) written
    /// to `console_log` as they come. Past the timeout qemu is killed and the
    /// error carries the end of the console.
    pub fn run(&self, console_log: &Path) -> Result<Console, BootError> {
        let log = File::create(console_log).map_err(|e| BootError::Io {
            what: format!("creating {}", console_log.display()),
            source: e,
        })?;
        let log_err = log.try_clone().map_err(|e| BootError::Io {
            what: format!("duplicating {}", console_log.display()),
            source: e,
        })?;
        let started = Instant::now();
        let mut child = self
            .command()
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|e| BootError::Io {
                what: format!(
                    "starting {} (`cargo xtask setup` installs qemu-system-arm)",
                    self.arch.qemu_system()
                ),
                source: e,
            })?;
        let read_console =
            || String::from_utf8_lossy(&fs::read(console_log).unwrap_or_default()).into_owned();
        loop {
            match child.try_wait() {
                Ok(Some(status)) => {
                    return Ok(Console {
                        text: read_console(),
                        elapsed: started.elapsed(),
                        status,
                    });
                }
                Ok(None) if started.elapsed() < self.timeout => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(BootError::Timeout {
                        after: self.timeout,
                        console_tail: tail(&read_console(), 40),
                    });
                }
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(BootError::Io {
                        what: "waiting for qemu".to_owned(),
                        source: e,
                    });
                }
            }
        }
    }
}

/// Why a guest run did not complete.
#[derive(Debug)]
pub enum BootError {
    /// qemu could not be started or watched, or the log not written.
    Io {
        /// What was being done.
        what: String,
        /// The underlying error.
        source: io::Error,
    },
    /// qemu was still running at the timeout and was killed.
    Timeout {
        /// The timeout.
        after: Duration,
        /// The last lines of the console.
        console_tail: String,
    },
}

impl fmt::Display for BootError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BootError::Io { what, source } => write!(f, "{what}: {source}"),
            BootError::Timeout {
                after,
                console_tail,
            } => write!(
                f,
                "the guest was still running after {after:?} and was killed; console ends with:\n{console_tail}"
            ),
        }
    }
}

impl std::error::Error for BootError {}

/// A finished guest run.
#[derive(Debug, Clone)]
pub struct Console {
    /// Everything the serial console (and qemu) printed.
    pub text: String,
    /// From qemu's start to its exit.
    pub elapsed: Duration,
    /// qemu's exit status.
    pub status: ExitStatus,
}

impl Console {
    /// The result markers the guest printed, in order.
    pub fn checks(&self) -> Vec<Check> {
        parse_checks(&self.text)
    }

    /// Whether the guest's script ran to its end ([`DONE_MARKER`] was printed).
    pub fn completed(&self) -> bool {
        self.text.lines().any(|l| l.contains(DONE_MARKER))
    }

    /// The last `lines` lines of the console.
    pub fn tail(&self, lines: usize) -> String {
        tail(&self.text, lines)
    }
}

/// One check's result, from an `ARMLET-CHECK <name>=<ok|fail> <detail>` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// The check's name.
    pub name: String,
    /// True for `ok`; anything else is a failure.
    pub ok: bool,
    /// The rest of the line: what the guest saw.
    pub detail: String,
}

/// Every `ARMLET-CHECK` marker in a console text. A marker may start anywhere in
/// a line (console output can be interleaved); serial line ends (`\r`) are dropped.
pub fn parse_checks(text: &str) -> Vec<Check> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim_end_matches('\r');
            let rest = &line[line.find(CHECK_MARKER)? + CHECK_MARKER.len()..];
            let (head, detail) = rest.split_once(' ').unwrap_or((rest, ""));
            let (name, result) = head.split_once('=')?;
            Some(Check {
                name: name.to_owned(),
                ok: result == "ok",
                detail: detail.trim().to_owned(),
            })
        })
        .collect()
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One archive entry read back: name, mode, (rdev major, minor), data.
    type Entry = (String, u32, (u32, u32), Vec<u8>);

    /// Reads a newc archive back.
    fn entries(archive: &[u8]) -> Vec<Entry> {
        let mut out = Vec::new();
        let mut pos = 0;
        let field = |at: usize, i: usize| {
            let s = std::str::from_utf8(&archive[at + 6 + 8 * i..at + 14 + 8 * i]).unwrap();
            u32::from_str_radix(s, 16).unwrap()
        };
        let align = |n: usize| n.div_ceil(4) * 4;
        loop {
            assert_eq!(&archive[pos..pos + 6], b"070701", "magic at {pos}");
            let (mode, size, namesize) = (field(pos, 1), field(pos, 6), field(pos, 11));
            let rdev = (field(pos, 9), field(pos, 10));
            let name_start = pos + 110;
            let name =
                String::from_utf8(archive[name_start..name_start + namesize as usize - 1].to_vec())
                    .unwrap();
            assert_eq!(archive[name_start + namesize as usize - 1], 0);
            let data_start = align(name_start + namesize as usize);
            let data = archive[data_start..data_start + size as usize].to_vec();
            pos = align(data_start + size as usize);
            if name == "TRAILER!!!" {
                assert_eq!(pos, archive.len());
                return out;
            }
            out.push((name, mode, rdev, data));
        }
    }

    #[test]
    fn newc_archive_holds_dirs_files_links_and_devices() {
        let mut cpio = Cpio::new();
        cpio.file("/bin/busybox", 0o755, b"elf")
            .symlink("bin/sh", "busybox")
            .dir("/bin", 0o700)
            .char_device("dev/console", 0o600, 5, 1)
            .file("./etc//passwd", 0o644, b"root:x:0:0::/:/bin/sh\n");
        let archive = cpio.finish().unwrap();
        assert_eq!(archive.len() % 4, 0);
        let got: Vec<_> = entries(&archive)
            .into_iter()
            .map(|(name, mode, rdev, data)| (name, format!("{mode:o}"), rdev, data))
            .collect();
        let want = vec![
            // The parent comes first, added for the file; the later `dir` is a no-op.
            ("bin".to_owned(), "40755".to_owned(), (0, 0), vec![]),
            (
                "bin/busybox".into(),
                "100755".into(),
                (0, 0),
                b"elf".to_vec(),
            ),
            (
                "bin/sh".into(),
                "120777".into(),
                (0, 0),
                b"busybox".to_vec(),
            ),
            ("dev".into(), "40755".into(), (0, 0), vec![]),
            ("dev/console".into(), "20600".into(), (5, 1), vec![]),
            ("etc".into(), "40755".into(), (0, 0), vec![]),
            (
                "etc/passwd".into(),
                "100644".into(),
                (0, 0),
                b"root:x:0:0::/:/bin/sh\n".to_vec(),
            ),
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn host_trees_are_copied_with_modes_and_links() {
        let dir = std::env::temp_dir().join(format!("armlet-cpio-tree-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("b/sub")).unwrap();
        fs::write(dir.join("b/run.sh"), "echo hi\n").unwrap();
        fs::set_permissions(dir.join("b/run.sh"), fs::Permissions::from_mode(0o750)).unwrap();
        std::os::unix::fs::symlink("../run.sh", dir.join("b/sub/link")).unwrap();
        let mut cpio = Cpio::new();
        cpio.tree("/bundles/x", &dir.join("b"));
        let got: Vec<_> = entries(&cpio.finish().unwrap())
            .into_iter()
            .map(|(name, mode, _, data)| (name, mode & 0o170_777, data))
            .collect();
        assert_eq!(
            got,
            vec![
                ("bundles".to_owned(), S_IFDIR | 0o755, vec![]),
                ("bundles/x".into(), S_IFDIR | 0o755, vec![]),
                (
                    "bundles/x/run.sh".into(),
                    S_IFREG | 0o750,
                    b"echo hi\n".to_vec()
                ),
                ("bundles/x/sub".into(), S_IFDIR | 0o755, vec![]),
                (
                    "bundles/x/sub/link".into(),
                    S_IFLNK | 0o777,
                    b"../run.sh".to_vec()
                ),
            ]
        );
        // A missing host file is reported at the end, not panicked on.
        let mut cpio = Cpio::new();
        cpio.copy("x", &dir.join("missing")).file("y", 0o644, b"");
        let err = cpio.finish().unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn check_markers_are_parsed_from_a_noisy_console() {
        let text = "[    1.0] booting\r\nARMLET-CHECK exit-code=ok rc=7 out=hi\r\n\
                    junkARMLET-CHECK oom=fail rc=0 ps=\nARMLET-CHECK bare=ok\n\
                    ARMLET-CHECK weird=maybe x\nARMLET-CHECK no-result\nARMLET-GUEST-DONE\n";
        let checks = parse_checks(text);
        let summary: Vec<(&str, bool, &str)> = checks
            .iter()
            .map(|c| (c.name.as_str(), c.ok, c.detail.as_str()))
            .collect();
        assert_eq!(
            summary,
            vec![
                ("exit-code", true, "rc=7 out=hi"),
                ("oom", false, "rc=0 ps="),
                ("bare", true, ""),
                ("weird", false, "x"),
            ]
        );
        assert_eq!(tail(text, 2), "ARMLET-CHECK no-result\nARMLET-GUEST-DONE");
    }

    #[test]
    fn missing_kit_says_how_to_get_it() {
        let err = GuestKit::find_in(Path::new("/nonexistent-armlet-guest"), Arch::Armv7)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("/nonexistent-armlet-guest/armhf/vmlinuz"),
            "{err}"
        );
        assert!(err.contains("cargo xtask setup"), "{err}");
    }

    #[test]
    fn the_guest_never_gets_a_network_device() {
        let kit = GuestKit {
            arch: Arch::Aarch64,
            kernel: "/k".into(),
            config: "/c".into(),
            busybox: "/b".into(),
        };
        let vm = Vm::new(&kit, Path::new("/i"));
        let args: Vec<String> = vm
            .command()
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let nic = args.iter().position(|a| a == "-nic").unwrap();
        assert_eq!(args[nic + 1], "none");
        assert!(!args.iter().any(|a| a == "-netdev" || a.starts_with("-net")));
        assert!(args.windows(2).any(|w| w == ["-accel", "tcg"]));
    }
}
