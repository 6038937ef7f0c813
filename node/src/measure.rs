//! What the node's status reports about the machine, read from `/proc`, `/sys`,
//! `/etc` and the data directory's filesystem: the parsers are pure (and
//! tested on fixtures, malformed ones included); [`Host`] reads the files
//! under a root directory, `/` on a board.
//!
//! A value that cannot be read or parsed is `None`, never a panic or a guess:
//! a missing capacity makes the node NotReady ("missing node capacity for
//! resources: …", as the kubelet says), a missing usage means no pressure.

use std::path::{Path, PathBuf};

/// What `/proc/meminfo` says, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemInfo {
    /// `MemTotal`: the node's memory capacity.
    pub total: u64,
    /// `MemAvailable` (kernels before 3.14: `MemFree + Buffers + Cached`):
    /// what the memory-pressure threshold is compared with.
    pub available: u64,
}

/// Size and free space of a filesystem, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsStats {
    /// Total size: the node's `ephemeral-storage` capacity.
    pub total: u64,
    /// Space available to unprivileged users (`f_bavail`), as cAdvisor
    /// reports `nodefs.available`.
    pub available: u64,
}

/// Process ids in use against the kernel's limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PidStats {
    /// `/proc/sys/kernel/pid_max`.
    pub max: u64,
    /// Tasks (processes and threads: each takes a pid) now, from
    /// `/proc/loadavg`.
    pub running: u64,
}

/// Pages of one huge page size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HugePages {
    /// Page size in bytes.
    pub size: u64,
    /// Bytes reserved in pages of this size (`nr_hugepages × size`).
    pub total: u64,
}

/// One reading of everything the status is computed from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Measurements {
    /// Online logical CPUs.
    pub cpus: Option<u32>,
    /// Memory.
    pub memory: Option<MemInfo>,
    /// The data directory's filesystem.
    pub fs: Option<FsStats>,
    /// Process ids.
    pub pids: Option<PidStats>,
    /// Huge page sizes the kernel supports (each one a `hugepages-<size>`
    /// resource, "0" when none are reserved).
    pub hugepages: Vec<HugePages>,
}

/// The node's identity as `status.nodeInfo` reports it (read once: none of it
/// changes while the agent runs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MachineInfo {
    /// `/etc/machine-id`.
    pub machine_id: String,
    /// DMI product UUID; empty on most ARM boards (no DMI), as the kubelet
    /// leaves it.
    pub system_uuid: String,
    /// `/proc/sys/kernel/random/boot_id`.
    pub boot_id: String,
    /// `uname -r`.
    pub kernel_version: String,
    /// `PRETTY_NAME` of `/etc/os-release`.
    pub os_image: String,
}

/// A line of input that is not what the kernel writes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {why}")]
pub struct ParseError {
    /// Which file.
    pub file: &'static str,
    /// What is wrong with it.
    pub why: String,
}

fn parse_error(file: &'static str, why: impl Into<String>) -> ParseError {
    ParseError {
        file,
        why: why.into(),
    }
}

/// Parses `/proc/meminfo`.
pub fn parse_meminfo(text: &str) -> Result<MemInfo, ParseError> {
    const FILE: &str = "/proc/meminfo";
    let field = |name: &str| -> Result<Option<u64>, ParseError> {
        let Some(line) = text.lines().find(|l| l.split(':').next() == Some(name)) else {
            return Ok(None);
        };
        let rest = line.split_once(':').map_or("", |(_, r)| r).trim();
        let mut words = rest.split_whitespace();
        let number = words
            .next()
            .and_then(|n| n.parse::<u64>().ok())
            .ok_or_else(|| parse_error(FILE, format!("{name}: not a number: {rest:?}")))?;
        // The kernel writes every size in kB (KiB); anything else is not
        // a meminfo this parser understands.
        match words.next() {
            Some("kB") => number
                .checked_mul(1024)
                .map(Some)
                .ok_or_else(|| parse_error(FILE, format!("{name}: out of range"))),
            _ => Err(parse_error(FILE, format!("{name}: not in kB: {rest:?}"))),
        }
    };
    let total = field("MemTotal")?.ok_or_else(|| parse_error(FILE, "no MemTotal"))?;
    let available = match field("MemAvailable")? {
        Some(a) => a,
        None => {
            // Before Linux 3.14: the usual approximation.
            let free = field("MemFree")?.ok_or_else(|| parse_error(FILE, "no MemFree"))?;
            let buffers = field("Buffers")?.unwrap_or(0);
            let cached = field("Cached")?.unwrap_or(0);
            free.saturating_add(buffers).saturating_add(cached)
        }
    };
    if total == 0 {
        return Err(parse_error(FILE, "MemTotal is 0"));
    }
    Ok(MemInfo { total, available })
}

/// Counts the CPUs of a kernel CPU list (`/sys/devices/system/cpu/online`,
/// e.g. `0-3,6`).
pub fn parse_cpu_list(text: &str) -> Result<u32, ParseError> {
    const FILE: &str = "/sys/devices/system/cpu/online";
    let text = text.trim();
    if text.is_empty() {
        return Err(parse_error(FILE, "empty"));
    }
    let mut count: u32 = 0;
    for part in text.split(',') {
        let bad = || parse_error(FILE, format!("bad range {part:?}"));
        let (first, last) = match part.split_once('-') {
            Some((a, b)) => (
                a.parse::<u32>().map_err(|_| bad())?,
                b.parse::<u32>().map_err(|_| bad())?,
            ),
            None => {
                let n = part.parse::<u32>().map_err(|_| bad())?;
                (n, n)
            }
        };
        if last < first {
            return Err(bad());
        }
        count = (last - first)
            .checked_add(1)
            .and_then(|n| count.checked_add(n))
            .ok_or_else(|| parse_error(FILE, "too many CPUs"))?;
    }
    Ok(count)
}

/// The number of tasks from `/proc/loadavg` (`0.00 0.01 0.05 1/123 4567`:
/// the fourth field's second half).
pub fn parse_loadavg_tasks(text: &str) -> Result<u64, ParseError> {
    const FILE: &str = "/proc/loadavg";
    text.split_whitespace()
        .nth(3)
        .and_then(|f| f.split_once('/'))
        .and_then(|(_, total)| total.parse().ok())
        .ok_or_else(|| parse_error(FILE, format!("no task count in {:?}", text.trim())))
}

/// A single number file such as `/proc/sys/kernel/pid_max`.
pub fn parse_number(file: &'static str, text: &str) -> Result<u64, ParseError> {
    text.trim()
        .parse()
        .map_err(|_| parse_error(file, format!("not a number: {:?}", text.trim())))
}

/// `PRETTY_NAME` from an os-release file (shell-style value: quoted or
/// not, backslash escapes inside double quotes).
pub fn parse_os_release(text: &str) -> Option<String> {
    let raw = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("PRETTY_NAME="))?;
    let value = if let Some(inner) = raw.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            match c {
                '"' => break,
                '\\' => out.extend(chars.next()),
                c => out.push(c),
            }
        }
        out
    } else if let Some(inner) = raw.strip_prefix('\'') {
        inner.split('\'').next().unwrap_or("").to_owned()
    } else {
        raw.trim().to_owned()
    };
    (!value.is_empty()).then_some(value)
}

/// The page size of a `/sys/kernel/mm/hugepages` entry name
/// (`hugepages-2048kB` → 2 MiB).
pub fn parse_hugepages_dir(name: &str) -> Option<u64> {
    name.strip_prefix("hugepages-")?
        .strip_suffix("kB")?
        .parse::<u64>()
        .ok()?
        .checked_mul(1024)
}

/// The first line of an identifier file (machine-id, boot_id, product_uuid),
/// trimmed; empty when unreadable.
fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or("").trim().to_owned()
}

/// Reads the machine under a root directory (`/` on a board; a fixture tree
/// in tests) and a data directory whose filesystem is the node's
/// ephemeral storage.
#[derive(Debug, Clone)]
pub struct Host {
    root: PathBuf,
    data_dir: PathBuf,
}

impl Host {
    /// The machine itself, `data_dir` holding pods' ephemeral storage.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self::under("/", data_dir)
    }

    /// The files of a machine under `root` (`root/proc/meminfo`, …).
    pub fn under(root: impl Into<PathBuf>, data_dir: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            data_dir: data_dir.into(),
        }
    }

    fn path(&self, absolute: &str) -> PathBuf {
        self.root.join(absolute.trim_start_matches('/'))
    }

    fn read(&self, absolute: &str) -> Option<String> {
        std::fs::read_to_string(self.path(absolute)).ok()
    }

    /// Logs an unreadable or malformed file once per reading, and drops it.
    fn parsed<T>(
        &self,
        absolute: &'static str,
        parse: impl Fn(&str) -> Result<T, ParseError>,
    ) -> Option<T> {
        let text = match std::fs::read_to_string(self.path(absolute)) {
            Ok(t) => t,
            Err(e) => {
                tracing::debug!(file = absolute, error = %e, "cannot read");
                return None;
            }
        };
        parse(&text)
            .map_err(|e| tracing::warn!(error = %e, "ignoring a malformed reading"))
            .ok()
    }

    /// Online CPUs; the scheduler's view of this process as a fallback where
    /// sysfs is not mounted.
    pub fn cpus(&self) -> Option<u32> {
        self.parsed("/sys/devices/system/cpu/online", parse_cpu_list)
            .or_else(|| {
                std::thread::available_parallelism()
                    .ok()
                    .and_then(|n| u32::try_from(n.get()).ok())
            })
    }

    /// Memory.
    pub fn memory(&self) -> Option<MemInfo> {
        self.parsed("/proc/meminfo", parse_meminfo)
    }

    /// Process ids.
    pub fn pids(&self) -> Option<PidStats> {
        let max = self.parsed("/proc/sys/kernel/pid_max", |t| {
            parse_number("/proc/sys/kernel/pid_max", t)
        })?;
        let running = self.parsed("/proc/loadavg", parse_loadavg_tasks)?;
        Some(PidStats { max, running })
    }

    /// The data directory's filesystem (statvfs).
    // The statvfs fields are 32-bit on 32-bit ARM, 64-bit elsewhere.
    #[allow(clippy::useless_conversion)]
    pub fn fs(&self) -> Option<FsStats> {
        match nix::sys::statvfs::statvfs(&self.data_dir) {
            Ok(s) => {
                let fragment = u64::from(s.fragment_size());
                let (blocks, available) = (u64::from(s.blocks()), u64::from(s.blocks_available()));
                Some(FsStats {
                    total: blocks.saturating_mul(fragment),
                    available: available.saturating_mul(fragment),
                })
            }
            Err(e) => {
                tracing::warn!(dir = %self.data_dir.display(), error = %e, "statvfs failed");
                None
            }
        }
    }

    /// Huge page sizes and reservations, sorted by size.
    pub fn hugepages(&self) -> Vec<HugePages> {
        let dir = self.path("/sys/kernel/mm/hugepages");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Vec::new();
        };
        let mut pages: Vec<HugePages> = entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let size = parse_hugepages_dir(e.file_name().to_str()?)?;
                let count = std::fs::read_to_string(e.path().join("nr_hugepages"))
                    .ok()
                    .and_then(|t| t.trim().parse::<u64>().ok())
                    .unwrap_or(0);
                Some(HugePages {
                    size,
                    total: count.saturating_mul(size),
                })
            })
            .collect();
        pages.sort_by_key(|p| p.size);
        pages
    }

    /// Everything at once.
    pub fn measure(&self) -> Measurements {
        Measurements {
            cpus: self.cpus(),
            memory: self.memory(),
            fs: self.fs(),
            pids: self.pids(),
            hugepages: self.hugepages(),
        }
    }

    /// The node's identity.
    pub fn machine_info(&self) -> MachineInfo {
        let kernel_version = if self.root == Path::new("/") {
            nix::sys::utsname::uname()
                .map(|u| u.release().to_string_lossy().into_owned())
                .unwrap_or_default()
        } else {
            // A fixture tree: what `uname -r` would say is in osrelease.
            self.read("/proc/sys/kernel/osrelease")
                .map(|t| first_line(&t))
                .unwrap_or_default()
        };
        MachineInfo {
            machine_id: self
                .read("/etc/machine-id")
                .map(|t| first_line(&t))
                .unwrap_or_default(),
            system_uuid: self
                .read("/sys/class/dmi/id/product_uuid")
                .map(|t| first_line(&t))
                .unwrap_or_default(),
            boot_id: self
                .read("/proc/sys/kernel/random/boot_id")
                .map(|t| first_line(&t))
                .unwrap_or_default(),
            kernel_version,
            // cAdvisor's answer without an os-release.
            os_image: self
                .read("/etc/os-release")
                .or_else(|| self.read("/usr/lib/os-release"))
                .and_then(|t| parse_os_release(&t))
                .unwrap_or_else(|| "Linux".to_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures")
            .join(name);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    #[test]
    fn meminfo_of_a_pi() {
        let m = parse_meminfo(&fixture("meminfo-rpi4")).unwrap();
        assert_eq!(m.total, 3_884_376 * 1024);
        assert_eq!(m.available, 3_307_236 * 1024);
    }

    #[test]
    fn meminfo_before_memavailable() {
        let text = "MemTotal:  1000 kB\nMemFree:  100 kB\nBuffers:  10 kB\nCached:  20 kB\n";
        let m = parse_meminfo(text).unwrap();
        assert_eq!(m.available, 130 * 1024);
    }

    #[test]
    fn malformed_meminfo_is_an_error() {
        for text in [
            "",
            "garbage",
            "MemTotal: lots kB\nMemAvailable: 1 kB\n",
            "MemTotal: 1000 MB\nMemAvailable: 1 kB\n",
            "MemTotal: 0 kB\nMemAvailable: 0 kB\n",
            "MemTotal: 99999999999999999999 kB\n",
            "MemTotal: 18446744073709551615 kB\nMemAvailable: 1 kB\n",
            "MemTotal: 1000 kB\n",
        ] {
            assert!(parse_meminfo(text).is_err(), "{text:?}");
        }
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0-3\n"), Ok(4));
        assert_eq!(parse_cpu_list("0"), Ok(1));
        assert_eq!(parse_cpu_list("0-1,4,6-7"), Ok(5));
        for bad in [
            "",
            "\n",
            "3-1",
            "a-b",
            "0-",
            "-",
            "0,,1",
            "0-4294967295,1-4294967295",
        ] {
            assert!(parse_cpu_list(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn loadavg_tasks() {
        assert_eq!(parse_loadavg_tasks(&fixture("loadavg")), Ok(312));
        for bad in ["", "0.1 0.2 0.3", "0.1 0.2 0.3 4 5", "0.1 0.2 0.3 1/x 5"] {
            assert!(parse_loadavg_tasks(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn os_release_pretty_names() {
        assert_eq!(
            parse_os_release(&fixture("os-release")).as_deref(),
            Some("Debian GNU/Linux 12 (bookworm)")
        );
        assert_eq!(
            parse_os_release("PRETTY_NAME='Alpine Linux v3.19'").as_deref(),
            Some("Alpine Linux v3.19")
        );
        assert_eq!(
            parse_os_release("NAME=x\nPRETTY_NAME=Buildroot\n").as_deref(),
            Some("Buildroot")
        );
        assert_eq!(
            parse_os_release(r#"PRETTY_NAME="say \"hi\"""#).as_deref(),
            Some(r#"say "hi""#)
        );
        assert_eq!(parse_os_release("PRETTY_NAME=\"\""), None);
        assert_eq!(parse_os_release("NAME=x"), None);
        assert_eq!(
            parse_os_release("PRETTY_NAME=\"unterminated"),
            Some("unterminated".into())
        );
    }

    #[test]
    fn hugepage_sizes() {
        assert_eq!(parse_hugepages_dir("hugepages-2048kB"), Some(2 << 20));
        assert_eq!(parse_hugepages_dir("hugepages-1048576kB"), Some(1 << 30));
        assert_eq!(parse_hugepages_dir("hugepages-64kB"), Some(64 << 10));
        assert_eq!(parse_hugepages_dir("hugepages-x"), None);
        assert_eq!(parse_hugepages_dir("other"), None);
    }

    #[test]
    fn a_fixture_machine() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/root");
        let host = Host::under(&root, &root);
        let m = host.measure();
        assert_eq!(m.cpus, Some(4));
        assert_eq!(m.memory.map(|m| m.total), Some(3_884_376 * 1024));
        assert_eq!(
            m.pids,
            Some(PidStats {
                max: 32768,
                running: 312
            })
        );
        assert_eq!(
            m.hugepages,
            vec![
                HugePages {
                    size: 64 << 10,
                    total: 0
                },
                HugePages {
                    size: 2 << 20,
                    total: 4 << 20
                },
                HugePages {
                    size: 32 << 20,
                    total: 0
                },
                HugePages {
                    size: 1 << 30,
                    total: 0
                },
            ]
        );
        assert!(m.fs.is_some_and(|f| f.total >= f.available && f.total > 0));
        let info = host.machine_info();
        assert_eq!(info.machine_id, "3d1219c7c4c5404aaa1f6d2a48adfda4");
        assert_eq!(info.boot_id, "949cb545-250c-4874-b65f-2ee7e6beaf06");
        assert_eq!(info.system_uuid, "");
        assert_eq!(info.kernel_version, "6.1.21-v8+");
        assert_eq!(info.os_image, "Debian GNU/Linux 12 (bookworm)");
    }

    #[test]
    fn a_machine_with_nothing_readable() {
        let host = Host::under("/nonexistent-armlet-root", "/nonexistent-armlet-root");
        let m = host.measure();
        assert_eq!((m.memory, m.fs, m.pids), (None, None, None));
        assert!(m.hugepages.is_empty());
        assert_eq!(host.machine_info().os_image, "Linux");
    }
}
