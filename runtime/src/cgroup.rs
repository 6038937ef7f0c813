//! Pod-level cgroups: the parent of a pod's container cgroups, carrying the pod's
//! own limits as the kubelet sets them (the sum of its containers' limits, plus any
//! overhead), so a pod as a whole cannot exceed what it was admitted with.
//!
//! Container cgroups are made by libcontainer below this one (their `cgroupsPath`
//! is `<pod cgroup>/<container id>`); the pod's is made first and removed last.
//! Only the controllers carrying limits or usage are touched: on cgroup v1 a
//! pod-level `devices` or `cpuset` cgroup would constrain its containers (a
//! privileged one included), so those are left to libcontainer per container.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::spec::Resources;

/// Whether this node uses cgroup v2 alone (the unified hierarchy mounted on
/// `/sys/fs/cgroup`), which decides what a container spec asks for: a private
/// cgroup namespace and `memory.oom.group`, as containerd and the kubelet do there.
pub fn unified() -> bool {
    Path::new(crate::stats::CGROUP_ROOT)
        .join("cgroup.controllers")
        .exists()
}

/// Why a pod cgroup could not be made or removed.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// A cgroup file system operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error (EBUSY: containers or processes still inside).
        source: io::Error,
    },
    /// A pod cgroup path must be absolute and plain.
    #[error("pod cgroup path {0:?} must be absolute, without '.' or '..'")]
    BadPath(PathBuf),
}

/// The v1 controllers a pod cgroup exists in (limits, and usage for stats).
const V1_CONTROLLERS: &[&str] = &["cpu", "cpuacct", "memory", "pids"];

/// The v2 controllers enabled for a pod's subtree.
const V2_CONTROLLERS: &[&str] = &["cpu", "memory", "pids"];

/// Where cgroup file systems are mounted.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

fn relative(path: &Path) -> Result<&Path, CgroupError> {
    let ok = path.is_absolute()
        && path
            .components()
            .skip(1)
            .all(|c| matches!(c, std::path::Component::Normal(_)))
        && path.components().count() > 1;
    if ok {
        Ok(path.strip_prefix("/").unwrap_or(path))
    } else {
        Err(CgroupError::BadPath(path.to_path_buf()))
    }
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> CgroupError + 'a {
    move |source| CgroupError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    fs::write(path, value).map_err(io("write", path))
}

/// Creates (or updates) the pod cgroup at `path` with `resources`. Idempotent:
/// the agent calls it on every sync.
pub fn ensure_pod_cgroup(path: &Path, resources: &Resources) -> Result<(), CgroupError> {
    ensure_under(Path::new(CGROUP_ROOT), path, resources)
}

/// [`ensure_pod_cgroup`] with the cgroup file systems under `root` (for tests).
pub fn ensure_under(root: &Path, path: &Path, r: &Resources) -> Result<(), CgroupError> {
    let rel = relative(path)?;
    if root.join("cgroup.controllers").exists() {
        // v2: controllers must be enabled in every ancestor's subtree_control.
        let mut dir = root.to_path_buf();
        for component in rel.components() {
            let control = dir.join("cgroup.subtree_control");
            let enable: Vec<String> = V2_CONTROLLERS.iter().map(|c| format!("+{c}")).collect();
            write(&control, &enable.join(" "))?;
            dir.push(component);
            fs::create_dir_all(&dir).map_err(io("create", &dir))?;
        }
        if let Some(limit) = r.memory_limit {
            write(&dir.join("memory.max"), &limit.to_string())?;
        }
        if let Some(limit) = r.pids_limit {
            write(&dir.join("pids.max"), &limit.to_string())?;
        }
        if let Some(shares) = r.cpu_shares {
            write(&dir.join("cpu.weight"), &cpu_weight(shares).to_string())?;
        }
        if let Some(quota) = r.cpu_quota {
            let period = r.cpu_period.unwrap_or(crate::spec::DEFAULT_CPU_PERIOD);
            write(&dir.join("cpu.max"), &format!("{quota} {period}"))?;
        }
        return Ok(());
    }
    for controller in V1_CONTROLLERS {
        let base = root.join(controller);
        if !base.exists() {
            continue;
        }
        let dir = base.join(rel);
        fs::create_dir_all(&dir).map_err(io("create", &dir))?;
        match *controller {
            "memory" => {
                if let Some(limit) = r.memory_limit {
                    write(&dir.join("memory.limit_in_bytes"), &limit.to_string())?;
                }
            }
            "pids" => {
                if let Some(limit) = r.pids_limit {
                    write(&dir.join("pids.max"), &limit.to_string())?;
                }
            }
            "cpu" => {
                if let Some(shares) = r.cpu_shares {
                    write(&dir.join("cpu.shares"), &shares.to_string())?;
                }
                if let Some(period) = r.cpu_period {
                    write(&dir.join("cpu.cfs_period_us"), &period.to_string())?;
                }
                if let Some(quota) = r.cpu_quota {
                    write(&dir.join("cpu.cfs_quota_us"), &quota.to_string())?;
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// cgroup v1 `cpu.shares` → v2 `cpu.weight` (the conversion runc and the kubelet use).
pub fn cpu_weight(shares: u64) -> u64 {
    let shares = shares.clamp(2, 262_144);
    1 + ((shares - 2) * 9999) / 262_142
}

/// Removes the pod cgroup once its containers are gone. Fails with EBUSY while
/// anything is still inside; removing one that does not exist is not an error.
pub fn remove_pod_cgroup(path: &Path) -> Result<(), CgroupError> {
    remove_under(Path::new(CGROUP_ROOT), path)
}

/// [`remove_pod_cgroup`] with the cgroup file systems under `root` (for tests).
pub fn remove_under(root: &Path, path: &Path) -> Result<(), CgroupError> {
    let rel = relative(path)?;
    let mut dirs = vec![root.join(rel)];
    dirs.extend(V1_CONTROLLERS.iter().map(|c| root.join(c).join(rel)));
    for dir in dirs {
        match fs::remove_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("remove", &dir)(e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_root(name: &str, v2: bool) -> PathBuf {
        let root =
            std::env::temp_dir().join(format!("armlet-cgroup-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(&root).unwrap();
        if v2 {
            fs::write(root.join("cgroup.controllers"), "cpu memory pids\n").unwrap();
        } else {
            for c in V1_CONTROLLERS {
                fs::create_dir_all(root.join(c)).unwrap();
            }
        }
        root
    }

    fn limits() -> Resources {
        Resources {
            cpu_shares: Some(1024),
            cpu_quota: Some(50_000),
            cpu_period: Some(100_000),
            memory_limit: Some(64 << 20),
            pids_limit: Some(20),
            memory_oom_group: false,
        }
    }

    #[test]
    fn v1_limits_go_to_each_controller() {
        let root = fake_root("v1", false);
        ensure_under(&root, Path::new("/kubepods/pod1"), &limits()).unwrap();
        let read = |p: &str| fs::read_to_string(root.join(p)).unwrap();
        assert_eq!(
            read("memory/kubepods/pod1/memory.limit_in_bytes"),
            "67108864"
        );
        assert_eq!(read("pids/kubepods/pod1/pids.max"), "20");
        assert_eq!(read("cpu/kubepods/pod1/cpu.shares"), "1024");
        assert_eq!(read("cpu/kubepods/pod1/cpu.cfs_quota_us"), "50000");
        assert!(root.join("cpuacct/kubepods/pod1").is_dir());
        assert!(
            !root.join("devices").exists(),
            "never a pod-level devices cgroup"
        );
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn v2_limits_and_subtree_controllers() {
        let root = fake_root("v2", true);
        ensure_under(&root, Path::new("/kubepods/pod1"), &limits()).unwrap();
        let read = |p: &str| fs::read_to_string(root.join(p)).unwrap();
        assert_eq!(read("cgroup.subtree_control"), "+cpu +memory +pids");
        assert_eq!(
            read("kubepods/cgroup.subtree_control"),
            "+cpu +memory +pids"
        );
        assert_eq!(read("kubepods/pod1/memory.max"), "67108864");
        assert_eq!(read("kubepods/pod1/cpu.max"), "50000 100000");
        assert_eq!(read("kubepods/pod1/cpu.weight"), "39");
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn weights_follow_the_standard_conversion() {
        assert_eq!(cpu_weight(2), 1);
        assert_eq!(cpu_weight(1024), 39);
        assert_eq!(cpu_weight(262_144), 10_000);
        assert_eq!(cpu_weight(0), 1);
        assert_eq!(cpu_weight(u64::MAX), 10_000);
    }

    #[test]
    fn paths_must_be_plain_and_absolute() {
        for bad in ["relative/pod", "/", "/a/../b"] {
            assert!(matches!(
                ensure_under(
                    Path::new("/nonexistent"),
                    Path::new(bad),
                    &Resources::default()
                ),
                Err(CgroupError::BadPath(_))
            ));
        }
    }
}
