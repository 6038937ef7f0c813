//! Crash-safe records on disk.
//!
//! Every record is written to a temporary file beside its final name, flushed,
//! renamed over the old one and the directory flushed, so after a crash or power
//! loss (a board unplugged) a reader finds either the old record or the new one,
//! never half of one. Leftover temporary files are ignored by readers and
//! removed by [`remove_leftovers`].

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::time::Timestamp;

/// Why a record could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// A file system operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file concerned.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A record exists but does not parse (edited by hand, or from a newer armlet).
    #[error("record {path} is unreadable: {source}")]
    Corrupt {
        /// The file concerned.
        path: PathBuf,
        /// What the parser said.
        source: serde_json::Error,
    },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StateError + 'a {
    move |source| StateError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Marks temporary files: `.<name>.tmp`. Readers never open them.
const TEMP_SUFFIX: &str = ".tmp";

fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}{TEMP_SUFFIX}"))
}

/// Writes `bytes` to `path` atomically with permissions `mode` (e.g. 0o600).
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), StateError> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let temp = temp_path(path);
    // A leftover from a crash may have other permissions; start afresh.
    let _ = fs::remove_file(&temp);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&temp)
        .map_err(io_err("create", &temp))?;
    file.write_all(bytes).map_err(io_err("write", &temp))?;
    file.sync_all().map_err(io_err("sync", &temp))?;
    drop(file);
    fs::rename(&temp, path).map_err(io_err("rename into", path))?;
    // The rename itself is only durable once the directory is flushed.
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("sync directory", dir))
}

/// Writes `value` as JSON to `path` atomically.
pub fn write_json<T: Serialize>(path: &Path, value: &T, mode: u32) -> Result<(), StateError> {
    let bytes = serde_json::to_vec(value).map_err(|source| StateError::Corrupt {
        path: path.to_path_buf(),
        source,
    })?;
    write_atomic(path, &bytes, mode)
}

/// Reads a JSON record; `Ok(None)` when there is none.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, StateError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("read", path)(e)),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|source| StateError::Corrupt {
            path: path.to_path_buf(),
            source,
        })
}

/// Removes temporary files a crash left in `dir`; returns how many.
pub fn remove_leftovers(dir: &Path) -> Result<usize, StateError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io_err("list", dir)(e)),
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') && name.ends_with(TEMP_SUFFIX) {
            let path = entry.path();
            fs::remove_file(&path).map_err(io_err("remove", &path))?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// How a container's process ended: what the kubelet reports as
/// `state.terminated` (exitCode, signal, reason OOMKilled, startedAt, finishedAt).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ExitStatus {
    /// Exit code as a shell reports it: the code, or 128 + signal number.
    pub exit_code: i32,
    /// The signal that killed it, if one did.
    pub signal: Option<i32>,
    /// The kernel's OOM killer ended it (seen in the cgroup's OOM-kill counter).
    pub oom_killed: bool,
    /// When the process started.
    pub started_at: Timestamp,
    /// When it ended (when its exit was collected).
    pub finished_at: Timestamp,
}

impl ExitStatus {
    /// The Kubernetes `reason` for this termination.
    pub fn reason(&self) -> &'static str {
        if self.oom_killed {
            "OOMKilled"
        } else if self.exit_code == 0 {
            "Completed"
        } else {
            "Error"
        }
    }

    /// Exit code for a process killed by `signal`, as shells and the kubelet report it.
    pub fn code_for_signal(signal: i32) -> i32 {
        128i32.saturating_add(signal)
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("armlet-state-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn status() -> ExitStatus {
        ExitStatus {
            exit_code: 137,
            signal: Some(9),
            oom_killed: true,
            started_at: Timestamp::parse_rfc3339("2021-07-15T19:28:47.123456789Z").unwrap(),
            finished_at: Timestamp::parse_rfc3339("2021-07-15T19:29:00Z").unwrap(),
        }
    }

    #[test]
    fn records_round_trip_with_their_mode() {
        let dir = temp_dir("roundtrip");
        let path = dir.join("exit.json");
        assert_eq!(read_json::<ExitStatus>(&path).unwrap(), None);
        write_json(&path, &status(), 0o600).unwrap();
        assert_eq!(read_json::<ExitStatus>(&path).unwrap(), Some(status()));
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // Overwrite keeps exactly one file and no temporaries.
        let mut second = status();
        second.exit_code = 0;
        write_json(&path, &second, 0o600).unwrap();
        assert_eq!(read_json::<ExitStatus>(&path).unwrap(), Some(second));
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_crash_mid_write_leaves_the_old_record_readable() {
        let dir = temp_dir("crash");
        let path = dir.join("exit.json");
        write_json(&path, &status(), 0o600).unwrap();
        // What a crash between create and rename leaves behind.
        fs::write(temp_path(&path), b"{\"exit_code\": 1, \"sig").unwrap();
        assert_eq!(read_json::<ExitStatus>(&path).unwrap(), Some(status()));
        assert_eq!(remove_leftovers(&dir).unwrap(), 1);
        assert_eq!(remove_leftovers(&dir).unwrap(), 0);
        // And a later write is not blocked by a leftover either.
        fs::write(temp_path(&path), b"junk").unwrap();
        write_json(&path, &status(), 0o600).unwrap();
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn corrupt_records_are_errors_naming_the_file() {
        let dir = temp_dir("corrupt");
        let path = dir.join("exit.json");
        fs::write(&path, b"{not json").unwrap();
        let err = read_json::<ExitStatus>(&path).unwrap_err();
        assert!(matches!(err, StateError::Corrupt { .. }));
        assert!(err.to_string().contains("exit.json"), "{err}");
        fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            remove_leftovers(&dir).unwrap(),
            0,
            "a missing dir has nothing to clean"
        );
    }

    #[test]
    fn kubernetes_reasons() {
        let mut s = status();
        assert_eq!(s.reason(), "OOMKilled");
        s.oom_killed = false;
        assert_eq!(s.reason(), "Error");
        s.exit_code = 0;
        assert_eq!(s.reason(), "Completed");
        assert_eq!(ExitStatus::code_for_signal(15), 143);
        assert_eq!(ExitStatus::code_for_signal(i32::MAX), i32::MAX);
    }
}
