//! Container stdout/stderr as Kubernetes CRI log files, rotated by size, and
//! the reading side the kubelet API (`kubectl logs`) needs.
//!
//! # Layout
//! `<pods-log-root>/<namespace>_<pod-name>_<pod-uid>/<container-name>/<restartCount>.log`
//! (see [`container_log_path`]), the layout the kubelet and log shippers
//! (fluent-bit, promtail, the `/var/log/containers` symlinks) expect.
//!
//! # Record format
//! One record per line: `<timestamp> <stream> <tag> <content>\n`, for example
//! `2021-07-15T19:28:47.123456789Z stdout F hello world`. The timestamp is
//! RFC 3339 in UTC with nine fractional digits; the stream is `stdout` or
//! `stderr`; the tag is `F` (a full line, or the last fragment of one) or `P`
//! (partial: the line goes on in the stream's next record; readers drop the
//! record's newline and concatenate). The content is the raw bytes of the line
//! without its `\n`, or `\r\n` as containerd strips too.
//!
//! Lines longer than [`LogConfig::max_line_size`] are cut into `P` records of
//! exactly that many bytes followed by an `F` record with the rest, like
//! containerd's `max_container_log_line_size`: a container cannot make the agent
//! buffer an unbounded line in memory.
//!
//! # Rotation
//! [`LogWriter`] rotates by size itself, before the record that would make the
//! file exceed [`LogConfig::max_size`], instead of the kubelet's 10-second poll:
//! here the agent is the kubelet, and checking on write keeps files within their
//! limit even when a container logs fast. The full file is renamed to
//! `<restartCount>.log.<YYYYMMDD-HHMMSS>` as the kubelet names it (in UTC, since
//! the agent has no time zone database) and the oldest rotated files are deleted
//! so that at most [`LogConfig::max_files`] files remain.
//!
//! Rotated files are **not** gzip-compressed as the kubelet does: no compression
//! crate is available to the firmware. The reader ignores `.gz` files.
//!
//! # Reading
//! [`read_lines`] serves `kubectl logs [--tail] [--since]`: records of the
//! rotated files then the current one ([`LogReader`]), joined into lines.
//! [`LogFollower`] serves `-f`: it starts where such a collection ends and
//! returns new lines as they are written, across rotations, with memory and
//! descriptors bounded whatever the container prints.
//!
//! # Parts
//! `writer.rs` (records, rotation), `reader.rs` (parsing, reading, selection),
//! `follow.rs` (following); paths, limits, errors and rotated names here.

use crate::time::TimeError;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

mod follow;
mod reader;
#[cfg(test)]
mod testutil;
mod writer;

pub use follow::{DEFAULT_FOLLOW_BATCH_BYTES, FollowEvent, LogFollower, LogGap};
pub use reader::{
    CollectOptions, CollectedLines, LineAssembler, LogLine, LogPosition, LogReader, LogRecord,
    collect_lines, parse_record, read_lines, read_records, reassemble,
};
pub use writer::LogWriter;

/// containerd's default maximum line size (`max_container_log_line_size`).
pub const DEFAULT_MAX_LINE_SIZE: usize = 16 * 1024;
/// The kubelet's default `containerLogMaxSize` (10 MiB).
pub const DEFAULT_MAX_SIZE: u64 = 10 * 1024 * 1024;
/// The kubelet's default `containerLogMaxFiles`.
pub const DEFAULT_MAX_FILES: usize = 5;
/// The longest record a [`LogReader`] accepts by default. Generous next to what
/// [`LogWriter`] writes (a record is `max_line_size` plus about 45 bytes), but
/// bounded, so a corrupt file without newlines cannot exhaust a 1 GiB board.
pub const DEFAULT_MAX_RECORD_LEN: usize = 4 * 1024 * 1024;

/// Log files can hold secrets a container prints: owner read-write, group read
/// (for a log-shipping group), nothing for others.
const FILE_MODE: u32 = 0o640;
/// Directories likewise: no listing or traversal for others.
const DIR_MODE: u32 = 0o750;
/// `YYYYMMDD-HHMMSS`, the kubelet's rotation timestamp.
const ROTATION_STAMP_LEN: usize = 15;

/// Errors from writing, rotating and reading log files.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// A name that would not make a single, safe path component.
    #[error("invalid {what} {value:?} for a log path: {reason}")]
    InvalidComponent {
        /// Which argument (namespace, pod name, ...).
        what: &'static str,
        /// The rejected value.
        value: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// A log file path without a file name or parent directory.
    #[error("invalid log file path {}: {reason}", .path.display())]
    InvalidPath {
        /// The rejected path.
        path: PathBuf,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// A [`LogConfig`] limit that cannot work.
    #[error("invalid log configuration: {0}")]
    InvalidConfig(&'static str),
    /// Creating the log directory failed.
    #[error("cannot create log directory {}: {source}", .path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// Opening a log file failed.
    #[error("cannot open log file {}: {source}", .path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// Writing a record failed; the record is lost.
    #[error("cannot write to log file {}: {source}", .path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// Reading a log file failed.
    #[error("cannot read log file {}: {source}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// Listing the log directory (to find rotated files) failed.
    #[error("cannot list log directory {}: {source}", .path.display())]
    ListDir {
        /// The directory.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// Renaming the full log file during rotation failed.
    #[error("cannot rotate log file {} to {}: {source}", .from.display(), .to.display())]
    Rotate {
        /// The current log file.
        from: PathBuf,
        /// The rotated name it was to get.
        to: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// Deleting a rotated file beyond [`LogConfig::max_files`] failed.
    #[error("cannot remove old log file {}: {source}", .path.display())]
    Remove {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A line of a log file is not a valid record.
    #[error("malformed log record in {} at byte {offset}: {source}", .path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// Byte offset of the start of the line.
        offset: u64,
        /// What is wrong with it.
        source: RecordError,
    },
}

/// Why one line is not a valid CRI log record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The line ends before the named field (or its following space).
    #[error("missing {0}")]
    MissingField(&'static str),
    /// The first field is not an RFC 3339 timestamp.
    #[error("invalid timestamp: {0}")]
    Timestamp(#[source] TimeError),
    /// The second field is neither `stdout` nor `stderr`.
    #[error("unknown stream {0:?} (expected stdout or stderr)")]
    UnknownStream(String),
    /// The first tag is neither `P` nor `F`.
    #[error("unknown tag {0:?} (expected P or F)")]
    UnknownTag(String),
    /// The text holds more than one line.
    #[error("newline inside a record")]
    EmbeddedNewline,
    /// The line is longer than the reader's limit.
    #[error("record longer than {limit} bytes")]
    TooLong {
        /// The reader's limit.
        limit: usize,
    },
    /// A rotated (no longer written) file ends in the middle of a record, as
    /// after a crash during a write.
    #[error("record not terminated by a newline")]
    Unterminated,
}

/// Which of a container's output streams a record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

impl Stream {
    /// The name in the record: `stdout` or `stderr`.
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }

    /// Index into per-stream arrays.
    fn index(self) -> usize {
        match self {
            Stream::Stdout => 0,
            Stream::Stderr => 1,
        }
    }
}

impl fmt::Display for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Rejects values that are not one plain path component, so that names coming
/// from the API server can never point a log file elsewhere (`..`, `/`).
fn check_component(what: &'static str, value: &str) -> Result<(), LogError> {
    let reason = if value.is_empty() {
        "is empty"
    } else if value == "." || value == ".." {
        "is '.' or '..'"
    } else if value.contains('/') {
        "contains '/'"
    } else if value.contains('\0') {
        "contains a NUL byte"
    } else {
        return Ok(());
    };
    Err(LogError::InvalidComponent {
        what,
        value: value.to_owned(),
        reason,
    })
}

/// A pod's log directory: `<root>/<namespace>_<pod-name>_<pod-uid>`.
pub fn pod_log_dir(
    root: &Path,
    namespace: &str,
    pod_name: &str,
    pod_uid: &str,
) -> Result<PathBuf, LogError> {
    check_component("namespace", namespace)?;
    check_component("pod name", pod_name)?;
    check_component("pod UID", pod_uid)?;
    Ok(root.join(format!("{namespace}_{pod_name}_{pod_uid}")))
}

/// A container's log directory: `<pod log dir>/<container-name>`; it holds one
/// log file per restart plus rotated files.
pub fn container_log_dir(
    root: &Path,
    namespace: &str,
    pod_name: &str,
    pod_uid: &str,
    container_name: &str,
) -> Result<PathBuf, LogError> {
    check_component("container name", container_name)?;
    Ok(pod_log_dir(root, namespace, pod_name, pod_uid)?.join(container_name))
}

/// The log file of one run of a container:
/// `<root>/<namespace>_<pod-name>_<pod-uid>/<container-name>/<restart_count>.log`.
///
/// Each component is checked (not empty, not `.` or `..`, no `/` or NUL) and an
/// error returned rather than a path outside the pod's directory.
pub fn container_log_path(
    root: &Path,
    namespace: &str,
    pod_name: &str,
    pod_uid: &str,
    container_name: &str,
    restart_count: u32,
) -> Result<PathBuf, LogError> {
    Ok(
        container_log_dir(root, namespace, pod_name, pod_uid, container_name)?
            .join(format!("{restart_count}.log")),
    )
}

/// Limits of a [`LogWriter`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// Longest content of one record in bytes; longer lines become `P` records
    /// of exactly this size followed by an `F` record. Default 16 KiB.
    pub max_line_size: usize,
    /// Size in bytes at which the current file is rotated: a record that would
    /// take the file past it goes to a new file. A single record larger than
    /// this still goes whole into a fresh file. Default 10 MiB.
    pub max_size: u64,
    /// Most files kept for one log file: the current one plus rotated ones.
    /// With 1, rotated files are deleted at once. Default 5.
    pub max_files: usize,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            max_line_size: DEFAULT_MAX_LINE_SIZE,
            max_size: DEFAULT_MAX_SIZE,
            max_files: DEFAULT_MAX_FILES,
        }
    }
}

impl LogConfig {
    /// Checks that every limit is at least 1.
    pub fn validate(&self) -> Result<(), LogError> {
        if self.max_line_size == 0 {
            return Err(LogError::InvalidConfig("max_line_size must be at least 1"));
        }
        if self.max_size == 0 {
            return Err(LogError::InvalidConfig("max_size must be at least 1"));
        }
        if self.max_files == 0 {
            return Err(LogError::InvalidConfig("max_files must be at least 1"));
        }
        Ok(())
    }
}

/// Sort key of a rotated file: its timestamp text (which sorts like the time)
/// then its numeric suffix (numerically: `.10` after `.9`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct RotationKey {
    stamp: String,
    suffix: u32,
}

impl RotationKey {
    /// Parses `<base>.<YYYYMMDD-HHMMSS>[.<n>]`; anything else (`.gz` files,
    /// other restarts' files) is not ours.
    fn parse(base: &[u8], name: &[u8]) -> Option<Self> {
        let rest = name.strip_prefix(base)?.strip_prefix(b".")?;
        let stamp = rest.get(..ROTATION_STAMP_LEN)?;
        let stamp_ok = stamp.iter().enumerate().all(|(i, &b)| {
            if i == 8 {
                b == b'-'
            } else {
                b.is_ascii_digit()
            }
        });
        if !stamp_ok {
            return None;
        }
        let suffix = match rest.get(ROTATION_STAMP_LEN..)? {
            [] => 0,
            [b'.', digits @ ..] if !digits.is_empty() && digits.iter().all(u8::is_ascii_digit) => {
                std::str::from_utf8(digits).ok()?.parse().ok()?
            }
            _ => return None,
        };
        Some(RotationKey {
            stamp: String::from_utf8(stamp.to_vec()).ok()?,
            suffix,
        })
    }

    fn path_for(&self, log_path: &Path) -> PathBuf {
        let mut name = log_path
            .file_name()
            .map(OsStr::to_os_string)
            .unwrap_or_default();
        name.push(".");
        name.push(&self.stamp);
        if self.suffix > 0 {
            name.push(format!(".{}", self.suffix));
        }
        log_path.with_file_name(name)
    }
}

/// The rotated files of `log_path`, oldest first.
fn rotated_files(log_path: &Path) -> Result<Vec<(RotationKey, PathBuf)>, LogError> {
    let base: OsString = match log_path.file_name() {
        Some(name) => name.to_os_string(),
        None => {
            return Err(LogError::InvalidPath {
                path: log_path.to_path_buf(),
                reason: "no file name",
            });
        }
    };
    let dir = match log_path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let list_error = |source| LogError::ListDir {
        path: dir.to_path_buf(),
        source,
    };
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).map_err(list_error)? {
        let entry = entry.map_err(list_error)?;
        if let Some(key) = RotationKey::parse(base.as_bytes(), entry.file_name().as_bytes()) {
            found.push((key, entry.path()));
        }
    }
    found.sort();
    Ok(found)
}

/// The files that make up the log at `log_path` (as from
/// [`container_log_path`]): its rotated files oldest first, then the file
/// itself (listed even if it does not exist yet).
pub fn log_files(log_path: &Path) -> Result<Vec<PathBuf>, LogError> {
    let mut files: Vec<PathBuf> = rotated_files(log_path)?
        .into_iter()
        .map(|(_, p)| p)
        .collect();
    files.push(log_path.to_path_buf());
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::testutil::*;

    #[test]
    fn log_path_layout_and_validation() {
        let root = Path::new("/var/log/pods");
        assert_eq!(
            container_log_path(root, "default", "web-0", "1f2e-33", "nginx", 2).unwrap(),
            Path::new("/var/log/pods/default_web-0_1f2e-33/nginx/2.log")
        );
        assert_eq!(
            container_log_dir(root, "kube-system", "dns", "u", "coredns").unwrap(),
            Path::new("/var/log/pods/kube-system_dns_u/coredns")
        );
        for (ns, pod, uid, container) in [
            ("", "p", "u", "c"),
            ("n", "..", "u", "c"),
            ("n", "p", ".", "c"),
            ("n", "p", "u", "a/b"),
            ("n", "p", "u", "/"),
            ("n/..", "p", "u", "c"),
            ("n", "p", "u\0", "c"),
            ("n", "p", "u", ""),
        ] {
            let err = container_log_path(root, ns, pod, uid, container, 0).unwrap_err();
            assert!(matches!(err, LogError::InvalidComponent { .. }), "{err}");
        }
        let message = container_log_path(root, "n", "p", "u", "../etc", 0)
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("container name") && message.contains("../etc"),
            "{message}"
        );
    }

    #[test]
    fn invalid_config_rejected() {
        let dir = TempDir::new("config");
        for cfg in [
            LogConfig {
                max_line_size: 0,
                ..LogConfig::default()
            },
            LogConfig {
                max_size: 0,
                ..LogConfig::default()
            },
            LogConfig {
                max_files: 0,
                ..LogConfig::default()
            },
        ] {
            let err = LogWriter::open(dir.0.join("0.log"), cfg).unwrap_err();
            assert!(matches!(err, LogError::InvalidConfig(_)), "{err}");
        }
        assert!(LogConfig::default().validate().is_ok());
    }
}
