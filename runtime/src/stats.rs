//! Resource usage of a container or pod cgroup, as `kubectl top` and the kubelet's
//! `/stats/summary` report it: cumulative CPU time and the memory working set
//! (usage minus inactive file cache, the figure the kubelet evicts on).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::time::Timestamp;

/// A cgroup's usage at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// When it was read.
    pub timestamp: Timestamp,
    /// CPU time used since the cgroup was created, in nanoseconds.
    pub cpu_usage_ns: u64,
    /// Memory in use that the kernel could not simply drop, in bytes.
    pub memory_working_set_bytes: u64,
}

/// Why usage could not be read.
#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    /// A cgroup file could not be read (the cgroup is gone, or never existed).
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A cgroup file did not hold what the kernel documents.
    #[error("{path} does not hold {what}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What was looked for.
        what: &'static str,
    },
}

/// Where cgroup file systems are mounted.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Reads the usage of the cgroup at `path` (as in a spec's `cgroupsPath`), from
/// cgroup v2 when the machine has the unified hierarchy, else from v1.
pub fn read(path: &Path) -> Result<Usage, StatsError> {
    read_under(Path::new(CGROUP_ROOT), path)
}

/// [`read`] with the cgroup file systems mounted under `root` (for tests).
pub fn read_under(root: &Path, path: &Path) -> Result<Usage, StatsError> {
    let relative = path.strip_prefix("/").unwrap_or(path);
    let timestamp = Timestamp::now();
    if root.join("cgroup.controllers").exists() {
        let dir = root.join(relative);
        let cpu_usec = keyed(&dir.join("cpu.stat"), "usage_usec")?;
        let usage = single(&dir.join("memory.current"))?;
        let inactive = keyed(&dir.join("memory.stat"), "inactive_file")?;
        Ok(Usage {
            timestamp,
            cpu_usage_ns: cpu_usec.saturating_mul(1000),
            memory_working_set_bytes: usage.saturating_sub(inactive),
        })
    } else {
        let cpu = single(&root.join("cpuacct").join(relative).join("cpuacct.usage"))?;
        let memory = root.join("memory").join(relative);
        let usage = single(&memory.join("memory.usage_in_bytes"))?;
        let inactive = keyed(&memory.join("memory.stat"), "total_inactive_file")?;
        Ok(Usage {
            timestamp,
            cpu_usage_ns: cpu,
            memory_working_set_bytes: usage.saturating_sub(inactive),
        })
    }
}

fn read_file(path: &Path) -> Result<String, StatsError> {
    fs::read_to_string(path).map_err(|source| StatsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// A file holding one number.
fn single(path: &Path) -> Result<u64, StatsError> {
    read_file(path)?
        .trim()
        .parse()
        .map_err(|_| StatsError::Format {
            path: path.to_path_buf(),
            what: "a number",
        })
}

/// A `key value` line of a flat-keyed file (cpu.stat, memory.stat).
fn keyed(path: &Path, key: &'static str) -> Result<u64, StatsError> {
    read_file(path)?
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(' ')?;
            (k == key).then(|| v.trim().parse().ok()).flatten()
        })
        .ok_or_else(|| StatsError::Format {
            path: path.to_path_buf(),
            what: key,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(name: &str, files: &[(&str, &str)]) -> PathBuf {
        let root = std::env::temp_dir().join(format!("armlet-stats-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        for (path, content) in files {
            let p = root.join(path);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, content).unwrap();
        }
        root
    }

    #[test]
    fn cgroup_v2_usage() {
        let root = tree(
            "v2",
            &[
                ("cgroup.controllers", "cpu memory pids\n"),
                (
                    "pod/c1/cpu.stat",
                    "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n",
                ),
                ("pod/c1/memory.current", "10485760\n"),
                (
                    "pod/c1/memory.stat",
                    "anon 4096\nfile 8192\ninactive_file 2097152\n",
                ),
            ],
        );
        let u = read_under(&root, Path::new("/pod/c1")).unwrap();
        assert_eq!(u.cpu_usage_ns, 1_500_000);
        assert_eq!(u.memory_working_set_bytes, 10_485_760 - 2_097_152);
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn cgroup_v1_usage() {
        let root = tree(
            "v1",
            &[
                ("cpuacct/pod/c1/cpuacct.usage", "123456789\n"),
                ("memory/pod/c1/memory.usage_in_bytes", "4096\n"),
                // More inactive cache than usage: the kubelet reports zero.
                (
                    "memory/pod/c1/memory.stat",
                    "cache 0\ntotal_inactive_file 8192\n",
                ),
            ],
        );
        let u = read_under(&root, Path::new("/pod/c1")).unwrap();
        assert_eq!(u.cpu_usage_ns, 123_456_789);
        assert_eq!(u.memory_working_set_bytes, 0);
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn missing_and_garbled_files_are_errors() {
        let root = tree(
            "bad",
            &[
                ("cpuacct/c/cpuacct.usage", "lots\n"),
                ("memory/c/memory.usage_in_bytes", "1\n"),
            ],
        );
        let err = read_under(&root, Path::new("/c")).unwrap_err();
        assert!(
            matches!(
                err,
                StatsError::Format {
                    what: "a number",
                    ..
                }
            ),
            "{err}"
        );
        let err = read_under(&root, Path::new("/gone")).unwrap_err();
        assert!(matches!(err, StatsError::Read { .. }), "{err}");
        fs::remove_dir_all(root).unwrap();
    }
}
