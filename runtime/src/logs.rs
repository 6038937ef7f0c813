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

use crate::time::{TimeError, Timestamp};
use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

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

/// Formats one record; `content` must not contain `\n` (the writer guarantees
/// it by cutting lines there).
fn format_record(timestamp: Timestamp, stream: Stream, partial: bool, content: &[u8]) -> Vec<u8> {
    let time = timestamp.format_rfc3339_nano();
    let stream = stream.as_str();
    let mut out = Vec::with_capacity(time.len() + stream.len() + content.len() + 5);
    out.extend_from_slice(time.as_bytes());
    out.push(b' ');
    out.extend_from_slice(stream.as_bytes());
    out.push(b' ');
    out.push(if partial { b'P' } else { b'F' });
    out.push(b' ');
    out.extend_from_slice(content);
    out.push(b'\n');
    out
}

/// Keeps the first error of several steps, so that one failed record does not
/// stop the rest of a chunk from being written.
fn keep_first(result: &mut Result<(), LogError>, next: Result<(), LogError>) {
    if result.is_ok() {
        *result = next;
    }
}

/// Writes a container's stdout and stderr into one CRI log file, rotating it.
///
/// Feed it the bytes read from the container's pipes with
/// [`write_chunk`](Self::write_chunk), in whatever pieces they arrive. Each
/// stream has its own buffer for an unfinished line, so stdout and stderr
/// records interleave in the file without mixing their contents. Every record is
/// written with one `write` to a file opened in append mode, so a concurrent
/// reader (`kubectl logs -f`) sees whole records, except possibly a last one
/// still being written.
///
/// Buffered text is only written by [`flush_partial`](Self::flush_partial),
/// [`end_of_stream`](Self::end_of_stream) or [`finish`](Self::finish):
/// dropping the writer loses an unfinished line, because a destructor cannot
/// report a failed write.
///
/// On a write or rotation error the record concerned is lost (as containerd
/// does, so that the container's output keeps draining), the rest of the input
/// is still processed, the first error is returned, and the writer stays usable:
/// it reopens the file on the next record if it has none.
pub struct LogWriter {
    path: PathBuf,
    config: LogConfig,
    clock: Box<dyn FnMut() -> Timestamp + Send>,
    file: Option<File>,
    size: u64,
    pending: [Vec<u8>; 2],
}

impl fmt::Debug for LogWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogWriter")
            .field("path", &self.path)
            .field("config", &self.config)
            .field("size", &self.size)
            .field("pending_stdout", &self.pending[0].len())
            .field("pending_stderr", &self.pending[1].len())
            .finish_non_exhaustive()
    }
}

impl LogWriter {
    /// Opens (creating it and its directories if needed) the log file at
    /// `path`, normally from [`container_log_path`], for appending. Records are
    /// stamped with [`Timestamp::now`].
    pub fn open(path: impl Into<PathBuf>, config: LogConfig) -> Result<Self, LogError> {
        Self::with_clock(path, config, Timestamp::now)
    }

    /// Like [`open`](Self::open), with the clock that stamps records and names
    /// rotated files given by the caller (tests use a fake one so that the bytes
    /// written are predictable).
    pub fn with_clock<C>(
        path: impl Into<PathBuf>,
        config: LogConfig,
        clock: C,
    ) -> Result<Self, LogError>
    where
        C: FnMut() -> Timestamp + Send + 'static,
    {
        config.validate()?;
        let path = path.into();
        if path.file_name().is_none() {
            return Err(LogError::InvalidPath {
                path,
                reason: "no file name",
            });
        }
        let mut writer = LogWriter {
            path,
            config,
            clock: Box::new(clock),
            file: None,
            size: 0,
            pending: [Vec::new(), Vec::new()],
        };
        writer.reopen()?;
        Ok(writer)
    }

    /// The current log file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The writer's limits.
    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// Takes the next bytes read from `stream`: writes a record for each line
    /// they complete and for each `max_line_size` bytes of an over-long line,
    /// and buffers the rest of an unfinished line.
    ///
    /// The records written do not depend on how the output was cut into
    /// chunks. A `\r` before `\n` is dropped with it (containerd does the
    /// same); any other `\r` is content.
    pub fn write_chunk(&mut self, stream: Stream, chunk: &[u8]) -> Result<(), LogError> {
        let index = stream.index();
        let mut buf = std::mem::take(&mut self.pending[index]);
        let result = self.feed(stream, &mut buf, chunk);
        self.pending[index] = buf;
        result
    }

    /// Writes the unfinished line of each stream, if any, as a `P` record: the
    /// text shows up in `kubectl logs -f` (a prompt, a progress bar) and the
    /// line is completed by later records. Meant for a timer, so that output
    /// without a newline is not held back indefinitely.
    ///
    /// A trailing `\r` stays buffered, because it is dropped if `\n` follows.
    pub fn flush_partial(&mut self) -> Result<(), LogError> {
        let mut result = Ok(());
        for stream in [Stream::Stdout, Stream::Stderr] {
            let index = stream.index();
            let mut buf = std::mem::take(&mut self.pending[index]);
            let held_cr = buf.last() == Some(&b'\r');
            if held_cr {
                buf.pop();
            }
            if !buf.is_empty() {
                keep_first(&mut result, self.write_record(stream, true, &buf));
            }
            buf.clear();
            if held_cr {
                buf.push(b'\r');
            }
            self.pending[index] = buf;
        }
        result
    }

    /// The stream has ended (its pipe reached end of file): writes its
    /// unfinished line, if any, as an `F` record.
    ///
    /// containerd writes that last fragment as `P` instead. `F` is deliberate:
    /// readers that reassemble `P` records (fluent-bit, promtail) would
    /// otherwise hold the container's last words back waiting for an `F` that
    /// never comes. The cost is that `kubectl logs` shows a newline the
    /// container did not print.
    pub fn end_of_stream(&mut self, stream: Stream) -> Result<(), LogError> {
        let index = stream.index();
        let mut buf = std::mem::take(&mut self.pending[index]);
        let result = if buf.is_empty() {
            Ok(())
        } else {
            self.write_record(stream, false, &buf)
        };
        buf.clear();
        self.pending[index] = buf;
        result
    }

    /// Ends both streams ([`end_of_stream`](Self::end_of_stream)) and closes
    /// the file.
    pub fn finish(mut self) -> Result<(), LogError> {
        let mut result = self.end_of_stream(Stream::Stdout);
        keep_first(&mut result, self.end_of_stream(Stream::Stderr));
        result
    }

    fn feed(
        &mut self,
        stream: Stream,
        buf: &mut Vec<u8>,
        mut chunk: &[u8],
    ) -> Result<(), LogError> {
        let mut result = Ok(());
        while let Some(newline) = chunk.iter().position(|&b| b == b'\n') {
            buf.extend_from_slice(&chunk[..newline]);
            chunk = &chunk[newline + 1..];
            keep_first(&mut result, self.write_overflow(stream, buf));
            if buf.last() == Some(&b'\r') {
                buf.pop();
            }
            // write_overflow left at most max_line_size bytes besides a final
            // '\r', so this is the line's last (or only) record.
            keep_first(&mut result, self.write_record(stream, false, buf));
            buf.clear();
        }
        buf.extend_from_slice(chunk);
        keep_first(&mut result, self.write_overflow(stream, buf));
        result
    }

    /// Writes `P` records of `max_line_size` bytes from the front of an
    /// unfinished line while more than that is known to be content. A final
    /// `\r` does not count yet: if `\n` follows, it is not content, and a line
    /// of exactly `max_line_size` bytes must stay a single `F` record whatever
    /// the chunking.
    fn write_overflow(&mut self, stream: Stream, buf: &mut Vec<u8>) -> Result<(), LogError> {
        let max = self.config.max_line_size;
        let mut result = Ok(());
        let mut start = 0;
        loop {
            let known = buf
                .len()
                .saturating_sub(start)
                .saturating_sub(usize::from(buf.last() == Some(&b'\r')));
            if known <= max {
                break;
            }
            let end = start.saturating_add(max).min(buf.len());
            keep_first(
                &mut result,
                self.write_record(stream, true, &buf[start..end]),
            );
            start = end;
        }
        buf.drain(..start);
        result
    }

    /// Stamps and writes one record, rotating first if it would not fit.
    fn write_record(
        &mut self,
        stream: Stream,
        partial: bool,
        content: &[u8],
    ) -> Result<(), LogError> {
        let now = (self.clock)();
        let record = format_record(now, stream, partial, content);
        let len = u64::try_from(record.len()).unwrap_or(u64::MAX);
        if self.file.is_some()
            && self.size > 0
            && self.size.saturating_add(len) > self.config.max_size
        {
            self.rotate(now)?;
        }
        if self.file.is_none() {
            self.reopen()?;
        }
        let Some(file) = self.file.as_mut() else {
            return Ok(()); // unreachable: reopen() set it or returned an error
        };
        // One write(2) for the whole record on a regular file; write_all only
        // loops after a short write (disk full), where a torn record cannot be
        // avoided anyway.
        match file.write_all(&record) {
            Ok(()) => {
                self.size = self.size.saturating_add(len);
                Ok(())
            }
            Err(source) => {
                // Part of the record may have been written: recount.
                if let Ok(meta) = file.metadata() {
                    self.size = meta.len();
                }
                Err(LogError::Write {
                    path: self.path.clone(),
                    source,
                })
            }
        }
    }

    /// Opens the current log file for appending, creating it (and its
    /// directories) with private permissions.
    fn reopen(&mut self) -> Result<(), LogError> {
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            DirBuilder::new()
                .recursive(true)
                .mode(DIR_MODE)
                .create(dir)
                .map_err(|source| LogError::CreateDir {
                    path: dir.to_path_buf(),
                    source,
                })?;
        }
        let open_error = |source| LogError::Open {
            path: self.path.clone(),
            source,
        };
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(FILE_MODE)
            .open(&self.path)
            .map_err(open_error)?;
        let size = file.metadata().map_err(open_error)?.len();
        self.file = Some(file);
        self.size = size;
        Ok(())
    }

    /// Renames the current file to its rotated name, starts a new one and
    /// deletes rotated files beyond `max_files`.
    fn rotate(&mut self, now: Timestamp) -> Result<(), LogError> {
        let target = self.rotation_target(now)?;
        match fs::rename(&self.path, &target) {
            Ok(()) => {}
            // Someone removed the file: nothing to keep, just start anew.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(LogError::Rotate {
                    from: self.path.clone(),
                    to: target,
                    source,
                });
            }
        }
        self.file = None;
        self.size = 0;
        self.reopen()?;
        self.remove_old_files()
    }

    /// `<name>.<YYYYMMDD-HHMMSS>`, the kubelet's rotated name. If that would not
    /// sort after every existing rotated file (two rotations in one second, or
    /// the clock stepped back), a numeric suffix `.<n>` is added instead, so
    /// that name order stays rotation order; readers depend on it.
    fn rotation_target(&self, now: Timestamp) -> Result<PathBuf, LogError> {
        let d = now.to_utc();
        let stamp = format!(
            "{:04}{:02}{:02}-{:02}{:02}{:02}",
            d.year, d.month, d.day, d.hour, d.minute, d.second
        );
        let mut key = RotationKey { stamp, suffix: 0 };
        if let Some((newest, _)) = rotated_files(&self.path)?.pop() {
            if newest >= key {
                key = RotationKey {
                    suffix: newest.suffix.saturating_add(1),
                    stamp: newest.stamp,
                };
            }
        }
        // A stray file of that name (not one we parse, e.g. a directory): skip
        // past it rather than overwrite it. Bounded so this cannot spin.
        for _ in 0..1000 {
            let candidate = key.path_for(&self.path);
            if fs::symlink_metadata(&candidate).is_err() {
                return Ok(candidate);
            }
            key.suffix = key.suffix.saturating_add(1);
        }
        Err(LogError::InvalidPath {
            path: self.path.clone(),
            reason: "no free name for the rotated file",
        })
    }

    fn remove_old_files(&mut self) -> Result<(), LogError> {
        let rotated = rotated_files(&self.path)?;
        let keep = self.config.max_files.saturating_sub(1);
        let excess = rotated.len().saturating_sub(keep);
        for (_, path) in rotated.into_iter().take(excess) {
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => return Err(LogError::Remove { path, source }),
            }
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

/// One parsed record of a CRI log file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    /// When the record was written.
    pub timestamp: Timestamp,
    /// Which stream it came from.
    pub stream: Stream,
    /// `P` tag: the line continues in the stream's next record.
    pub partial: bool,
    /// The bytes of the line (or fragment), without newline.
    pub content: Vec<u8>,
}

impl LogRecord {
    /// The record as a line of a log file, newline included (the timestamp with
    /// nine fractional digits whatever precision it was read with).
    pub fn to_bytes(&self) -> Vec<u8> {
        format_record(self.timestamp, self.stream, self.partial, &self.content)
    }
}

/// Splits at the first space: the field and the rest after the space.
fn split_field<'a>(
    line: &'a [u8],
    name: &'static str,
) -> Result<(&'a [u8], &'a [u8]), RecordError> {
    let space = line
        .iter()
        .position(|&b| b == b' ')
        .ok_or(RecordError::MissingField(name))?;
    Ok((&line[..space], &line[space + 1..]))
}

/// Shortened, printable copy of a rejected field for an error message.
fn quote(field: &[u8]) -> String {
    String::from_utf8_lossy(&field[..field.len().min(32)]).into_owned()
}

/// Parses one line of a CRI log file, with or without its final `\n`.
///
/// Accepts what the kubelet accepts: any RFC 3339 timestamp precision, and
/// further `:`-separated tags after the first (`F:x`), which are ignored. The
/// space after the tag is required even for empty content, as the kubelet
/// requires it.
pub fn parse_record(line: &[u8]) -> Result<LogRecord, RecordError> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    if line.contains(&b'\n') {
        return Err(RecordError::EmbeddedNewline);
    }
    let (time, rest) = split_field(line, "space after the timestamp")?;
    let timestamp =
        Timestamp::parse_rfc3339(&String::from_utf8_lossy(time)).map_err(RecordError::Timestamp)?;
    let (stream, rest) = split_field(rest, "space after the stream")?;
    let stream = match stream {
        b"stdout" => Stream::Stdout,
        b"stderr" => Stream::Stderr,
        other => return Err(RecordError::UnknownStream(quote(other))),
    };
    let (tags, content) = split_field(rest, "space after the tag")?;
    let first_tag = tags.split(|&b| b == b':').next().unwrap_or(tags);
    let partial = match first_tag {
        b"P" => true,
        b"F" => false,
        other => return Err(RecordError::UnknownTag(quote(other))),
    };
    Ok(LogRecord {
        timestamp,
        stream,
        partial,
        content: content.to_vec(),
    })
}

/// Where a [`LogReader`] stands: the file it reads and the offset of the next
/// unread byte (the start of the next record). Follow mode resumes from here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogPosition {
    /// The file being read.
    pub path: PathBuf,
    /// Byte offset of the next unread record.
    pub offset: u64,
}

struct OpenLog {
    path: PathBuf,
    reader: BufReader<File>,
    offset: u64,
}

/// Reads the records of a log across its rotated files, oldest first, then the
/// current file: an iterator of `Result<LogRecord, LogError>`.
///
/// A malformed line yields [`LogError::Malformed`] and reading goes on with the
/// next line (the kubelet skips such lines too). A rotated file deleted by
/// rotation before the reader got to it is skipped.
///
/// In the last file, an unterminated tail is a record still being written: the
/// reader stops before it and keeps the file open, so calling `next()` again
/// after `None` returns records appended since. That, with
/// [`position`](Self::position), is the basis for follow mode; following across
/// a rotation (reopening the new current file) is not done yet.
pub struct LogReader {
    pending: VecDeque<PathBuf>,
    current: Option<OpenLog>,
    max_record_len: usize,
    line: Vec<u8>,
}

impl fmt::Debug for LogReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogReader")
            .field("pending", &self.pending)
            .field("position", &self.position())
            .field("max_record_len", &self.max_record_len)
            .finish()
    }
}

/// Outcome of reading one line with a length limit.
enum LineRead {
    /// A full line (newline consumed): bytes consumed, and whether it was
    /// longer than the limit (then `buf` is left empty).
    Line { consumed: u64, too_long: bool },
    /// End of file after `consumed` bytes without a newline.
    Eof { consumed: u64 },
}

/// Reads up to and including the next `\n` into `buf` (without it), storing at
/// most `limit` bytes: a longer line is consumed but not kept.
fn read_line_limited(
    reader: &mut impl BufRead,
    buf: &mut Vec<u8>,
    limit: usize,
) -> io::Result<LineRead> {
    buf.clear();
    let mut consumed: u64 = 0;
    let mut too_long = false;
    loop {
        let available = match reader.fill_buf() {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            return Ok(LineRead::Eof { consumed });
        }
        let (take, found) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (i, true),
            None => (available.len(), false),
        };
        if !too_long {
            if buf.len().saturating_add(take) > limit {
                too_long = true;
                buf.clear();
            } else {
                buf.extend_from_slice(&available[..take]);
            }
        }
        let used = if found { take + 1 } else { take };
        reader.consume(used);
        consumed = consumed.saturating_add(used as u64);
        if found {
            return Ok(LineRead::Line { consumed, too_long });
        }
    }
}

impl LogReader {
    /// Reads the log at `log_path` (rotated files, then the file itself; see
    /// [`log_files`]).
    pub fn open(log_path: &Path) -> Result<Self, LogError> {
        Ok(Self::from_files(log_files(log_path)?))
    }

    /// Reads the given files in order; the last is treated as the one still
    /// being written.
    pub fn from_files(files: Vec<PathBuf>) -> Self {
        LogReader {
            pending: files.into(),
            current: None,
            max_record_len: DEFAULT_MAX_RECORD_LEN,
            line: Vec::new(),
        }
    }

    /// Sets the longest line accepted as a record (default
    /// [`DEFAULT_MAX_RECORD_LEN`]); longer ones yield
    /// [`RecordError::TooLong`] and are skipped.
    pub fn with_max_record_len(mut self, limit: usize) -> Self {
        self.max_record_len = limit;
        self
    }

    /// The file being read and the offset of its next record; `None` before
    /// the first file is opened or after the last one failed.
    pub fn position(&self) -> Option<LogPosition> {
        self.current.as_ref().map(|c| LogPosition {
            path: c.path.clone(),
            offset: c.offset,
        })
    }
}

impl Iterator for LogReader {
    type Item = Result<LogRecord, LogError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.current.is_none() {
                let path = self.pending.pop_front()?;
                match File::open(&path) {
                    Ok(file) => {
                        self.current = Some(OpenLog {
                            path,
                            reader: BufReader::new(file),
                            offset: 0,
                        });
                    }
                    // Deleted by rotation since it was listed, or not created yet.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(source) => return Some(Err(LogError::Open { path, source })),
                }
            }
            let is_last = self.pending.is_empty();
            let current = self.current.as_mut()?;
            let start = current.offset;
            match read_line_limited(&mut current.reader, &mut self.line, self.max_record_len) {
                Err(source) => {
                    let path = current.path.clone();
                    self.current = None;
                    return Some(Err(LogError::Read { path, source }));
                }
                Ok(LineRead::Line { consumed, too_long }) => {
                    current.offset = start.saturating_add(consumed);
                    let result = if too_long {
                        Err(RecordError::TooLong {
                            limit: self.max_record_len,
                        })
                    } else {
                        parse_record(&self.line)
                    };
                    return Some(result.map_err(|source| LogError::Malformed {
                        path: current.path.clone(),
                        offset: start,
                        source,
                    }));
                }
                Ok(LineRead::Eof { consumed: 0 }) if is_last => return None,
                Ok(LineRead::Eof { consumed: 0 }) => self.current = None,
                Ok(LineRead::Eof { .. }) if is_last => {
                    // A record being written: leave it for the next call.
                    if let Err(source) = current.reader.seek(SeekFrom::Start(start)) {
                        let path = current.path.clone();
                        self.current = None;
                        return Some(Err(LogError::Read { path, source }));
                    }
                    return None;
                }
                Ok(LineRead::Eof { consumed }) => {
                    current.offset = start.saturating_add(consumed);
                    let path = current.path.clone();
                    self.current = None;
                    return Some(Err(LogError::Malformed {
                        path,
                        offset: start,
                        source: RecordError::Unterminated,
                    }));
                }
            }
        }
    }
}

/// Opens the log at `log_path` for reading; same as [`LogReader::open`].
pub fn read_records(log_path: &Path) -> Result<LogReader, LogError> {
    LogReader::open(log_path)
}

/// A line of container output, reassembled from its `P` records and final `F`
/// record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// Timestamp of the line's last record, i.e. when it was completed. Lines
    /// come out in completion order, so their timestamps never go back, and a
    /// `since` filter cuts the output at one point.
    pub timestamp: Timestamp,
    /// The stream the line was written to.
    pub stream: Stream,
    /// The line without its newline.
    pub content: Vec<u8>,
    /// `false` for a line whose final `F` record has not been seen (the log
    /// ends in `P` records).
    pub complete: bool,
}

/// Joins `P` records with the record that completes them, per stream (stdout
/// and stderr fragments interleave in a file).
#[derive(Debug, Default)]
pub struct LineAssembler {
    pending: [Option<LogLine>; 2],
}

impl LineAssembler {
    /// An assembler with no pending fragments.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a record; returns the line it completes, if it is an `F` record.
    pub fn push(&mut self, record: LogRecord) -> Option<LogLine> {
        let slot = &mut self.pending[record.stream.index()];
        let mut line = slot.take().unwrap_or_else(|| LogLine {
            timestamp: record.timestamp,
            stream: record.stream,
            content: Vec::new(),
            complete: false,
        });
        line.timestamp = record.timestamp;
        line.content.extend_from_slice(&record.content);
        if record.partial {
            *slot = Some(line);
            None
        } else {
            line.complete = true;
            Some(line)
        }
    }

    /// Takes the lines still waiting for their `F` record (marked incomplete),
    /// oldest last fragment first.
    pub fn finish(&mut self) -> Vec<LogLine> {
        let mut lines: Vec<LogLine> = self.pending.iter_mut().filter_map(Option::take).collect();
        lines.sort_by_key(|line| line.timestamp);
        lines
    }
}

/// Reassembles records into lines, ending with any incomplete ones.
pub fn reassemble(records: impl IntoIterator<Item = LogRecord>) -> Vec<LogLine> {
    let mut assembler = LineAssembler::new();
    let mut lines: Vec<LogLine> = records
        .into_iter()
        .filter_map(|r| assembler.push(r))
        .collect();
    lines.extend(assembler.finish());
    lines
}

/// Which lines [`collect_lines`] keeps, as in `kubectl logs --tail --since-time`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CollectOptions {
    /// Keep only the last this many lines (after the `since` filter).
    pub tail_lines: Option<usize>,
    /// Keep only lines with a timestamp at or after this instant.
    pub since: Option<Timestamp>,
}

/// What [`collect_lines`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CollectedLines {
    /// The selected lines, oldest first; incomplete ones last.
    pub lines: Vec<LogLine>,
    /// How many malformed records were skipped.
    pub malformed: usize,
}

/// Reassembles the records (as from a [`LogReader`]) into lines and selects
/// them by `options`.
///
/// Malformed records are skipped and counted, as the kubelet skips them, so one
/// torn line (a crash mid-write) does not hide the whole log; any other error
/// is returned. With `tail_lines`, only that many lines are held in memory.
pub fn collect_lines<I>(records: I, options: &CollectOptions) -> Result<CollectedLines, LogError>
where
    I: IntoIterator<Item = Result<LogRecord, LogError>>,
{
    let mut assembler = LineAssembler::new();
    let mut kept = VecDeque::new();
    let mut malformed = 0usize;
    let keep = |line: LogLine, kept: &mut VecDeque<LogLine>| {
        if options.since.is_some_and(|since| line.timestamp < since) {
            return;
        }
        kept.push_back(line);
        if let Some(tail) = options.tail_lines {
            while kept.len() > tail {
                kept.pop_front();
            }
        }
    };
    for record in records {
        match record {
            Ok(record) => {
                if let Some(line) = assembler.push(record) {
                    keep(line, &mut kept);
                }
            }
            Err(LogError::Malformed { .. }) => malformed = malformed.saturating_add(1),
            Err(e) => return Err(e),
        }
    }
    for line in assembler.finish() {
        keep(line, &mut kept);
    }
    Ok(CollectedLines {
        lines: kept.into(),
        malformed,
    })
}

/// Reads the log at `log_path` and selects lines; [`LogReader::open`] then
/// [`collect_lines`].
pub fn read_lines(log_path: &Path, options: &CollectOptions) -> Result<CollectedLines, LogError> {
    collect_lines(LogReader::open(log_path)?, options)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A directory under the system temp dir, unique per process and test,
    /// removed when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> Self {
            static COUNTER: AtomicUsize = AtomicUsize::new(0);
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let path =
                std::env::temp_dir().join(format!("armlet-logs-{name}-{}-{n}", std::process::id()));
            let _ = fs::remove_dir_all(&path);
            fs::create_dir_all(&path).unwrap();
            TempDir(path)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    const T0: &str = "2021-07-15T19:28:47.123456789Z";

    fn t0() -> Timestamp {
        Timestamp::parse_rfc3339(T0).unwrap()
    }

    /// A clock starting at `start` that moves `step_nanos` (possibly negative)
    /// per call.
    fn stepping_clock(
        start: Timestamp,
        step_nanos: i64,
    ) -> impl FnMut() -> Timestamp + Send + 'static {
        let mut now =
            i128::from(start.unix_seconds()) * 1_000_000_000 + i128::from(start.subsec_nanos());
        move || {
            let t = Timestamp::from_unix(
                i64::try_from(now.div_euclid(1_000_000_000)).unwrap(),
                u32::try_from(now.rem_euclid(1_000_000_000)).unwrap(),
            )
            .unwrap();
            now += i128::from(step_nanos);
            t
        }
    }

    fn config(max_line_size: usize) -> LogConfig {
        LogConfig {
            max_line_size,
            ..LogConfig::default()
        }
    }

    fn writer(path: &Path, config: LogConfig) -> LogWriter {
        LogWriter::with_clock(path, config, stepping_clock(t0(), 1)).unwrap()
    }

    fn read_all(path: &Path) -> Vec<LogRecord> {
        LogReader::open(path).unwrap().map(Result::unwrap).collect()
    }

    fn content_of(records: &[LogRecord]) -> Vec<(Stream, bool, Vec<u8>)> {
        records
            .iter()
            .map(|r| (r.stream, r.partial, r.content.clone()))
            .collect()
    }

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
    fn record_bytes_are_exact() {
        let dir = TempDir::new("exact");
        let path = dir.0.join("pod/c/0.log");
        let mut w = writer(&path, config(16));
        w.write_chunk(Stream::Stdout, b"hello world\n").unwrap();
        w.write_chunk(Stream::Stderr, b"oops\r\n\n").unwrap();
        w.write_chunk(Stream::Stdout, b"0123456789abcdefXYZ\nno newline")
            .unwrap();
        w.finish().unwrap();
        let expected = "\
2021-07-15T19:28:47.123456789Z stdout F hello world
2021-07-15T19:28:47.123456790Z stderr F oops
2021-07-15T19:28:47.123456791Z stderr F \n\
2021-07-15T19:28:47.123456792Z stdout P 0123456789abcdef
2021-07-15T19:28:47.123456793Z stdout F XYZ
2021-07-15T19:28:47.123456794Z stdout F no newline
";
        assert_eq!(
            String::from_utf8(fs::read(&path).unwrap()).unwrap(),
            expected
        );
    }

    /// Feeds `input` to a fresh writer in the given pieces (stdout only) and
    /// returns the file's bytes; ends the stream so the tail is included.
    fn written_bytes(dir: &Path, name: &str, pieces: &[&[u8]], max_line_size: usize) -> Vec<u8> {
        let path = dir.join(name);
        let mut w = writer(&path, config(max_line_size));
        for piece in pieces {
            w.write_chunk(Stream::Stdout, piece).unwrap();
        }
        w.finish().unwrap();
        let bytes = fs::read(&path).unwrap();
        fs::remove_file(&path).unwrap();
        bytes
    }

    #[test]
    fn chunk_boundaries_do_not_change_records() {
        let dir = TempDir::new("chunks");
        // Short, empty, CRLF, exactly-max (8), max+1, a '\r' at the max
        // boundary, a lone '\r', long lines and an unterminated tail.
        let input: &[u8] = b"a\n\nbc\r\n12345678\n123456789\r\n1234567\r\r\nx\ry\n\
                             abcdefghijklmnopqrstuvwxyz0123456789\n12345678\r\n\r\ntail";
        let whole = written_bytes(&dir.0, "whole", &[input], 8);
        // Sanity: the reference itself has the expected records.
        let records: Vec<LogRecord> = whole
            .split_inclusive(|&b| b == b'\n')
            .map(|l| parse_record(l).unwrap())
            .collect();
        let contents: Vec<&[u8]> = records.iter().map(|r| r.content.as_slice()).collect();
        assert_eq!(
            contents,
            [
                &b"a"[..],
                b"",
                b"bc",
                b"12345678",
                b"12345678",
                b"9",
                b"1234567\r",
                b"x\ry",
                b"abcdefgh",
                b"ijklmnop",
                b"qrstuvwx",
                b"yz012345",
                b"6789",
                b"12345678",
                b"",
                b"tail",
            ]
        );
        for split in 0..=input.len() {
            let (a, b) = input.split_at(split);
            assert_eq!(
                written_bytes(&dir.0, "split", &[a, b], 8),
                whole,
                "split at {split}"
            );
        }
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(
            written_bytes(&dir.0, "bytes", &bytes, 8),
            whole,
            "byte by byte"
        );
        // Three pieces, every pair of cut points, on a shorter input.
        let short: &[u8] = b"12345678\r\nab\r\r\n123456789\n";
        let short_whole = written_bytes(&dir.0, "short", &[short], 8);
        for i in 0..=short.len() {
            for j in i..=short.len() {
                let pieces = [&short[..i], &short[i..j], &short[j..]];
                assert_eq!(
                    written_bytes(&dir.0, "three", &pieces, 8),
                    short_whole,
                    "cuts {i} {j}"
                );
            }
        }
    }

    #[test]
    fn long_line_split_into_partial_records() {
        let dir = TempDir::new("long");
        let path = dir.0.join("0.log");
        let line: Vec<u8> = (0..40_000u32).map(|i| b'a' + (i % 26) as u8).collect();
        let mut w = writer(&path, LogConfig::default());
        w.write_chunk(Stream::Stdout, &line).unwrap();
        w.write_chunk(Stream::Stdout, b"\n").unwrap();
        // Exactly max_line_size: one F record; one more byte: P then F.
        w.write_chunk(Stream::Stdout, &[b'x'; DEFAULT_MAX_LINE_SIZE])
            .unwrap();
        w.write_chunk(Stream::Stdout, b"\n").unwrap();
        w.write_chunk(Stream::Stdout, &[b'y'; DEFAULT_MAX_LINE_SIZE + 1])
            .unwrap();
        w.write_chunk(Stream::Stdout, b"\n").unwrap();
        w.finish().unwrap();

        let records = read_all(&path);
        let shape: Vec<(bool, usize)> = records
            .iter()
            .map(|r| (r.partial, r.content.len()))
            .collect();
        assert_eq!(
            shape,
            [
                (true, 16_384),
                (true, 16_384),
                (false, 40_000 - 2 * 16_384),
                (false, 16_384),
                (true, 16_384),
                (false, 1),
            ]
        );
        let lines = reassemble(records);
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0].content, line);
        assert!(lines.iter().all(|l| l.complete));
        assert_eq!(lines[2].content, vec![b'y'; DEFAULT_MAX_LINE_SIZE + 1]);
    }

    #[test]
    fn crlf_and_empty_lines() {
        let dir = TempDir::new("crlf");
        let path = dir.0.join("0.log");
        let mut w = writer(&path, config(64));
        w.write_chunk(Stream::Stdout, b"dos\r\n\r\n\n\nmid\rdle\nend\r\r\n")
            .unwrap();
        // A '\r' ending one chunk, with its '\n' in the next.
        w.write_chunk(Stream::Stdout, b"split\r").unwrap();
        w.write_chunk(Stream::Stdout, b"\nlast\r").unwrap();
        w.finish().unwrap();
        let got: Vec<Vec<u8>> = read_all(&path).into_iter().map(|r| r.content).collect();
        let want: Vec<&[u8]> = vec![
            b"dos",
            b"",
            b"",
            b"",
            b"mid\rdle",
            b"end\r",
            b"split",
            b"last\r",
        ];
        assert_eq!(got, want);
        let raw = fs::read_to_string(&path).unwrap();
        assert!(raw.lines().nth(1).unwrap().ends_with(" stdout F "), "{raw}");
    }

    #[test]
    fn stdout_stderr_interleave_with_separate_buffers() {
        let dir = TempDir::new("interleave");
        let path = dir.0.join("0.log");
        let mut w = writer(&path, config(4));
        w.write_chunk(Stream::Stdout, b"out-").unwrap(); // 4 bytes: held
        w.write_chunk(Stream::Stderr, b"err-1\n").unwrap();
        w.write_chunk(Stream::Stdout, b"line\nsecond").unwrap();
        w.write_chunk(Stream::Stderr, b"e2").unwrap();
        w.write_chunk(Stream::Stdout, b"\n").unwrap();
        w.write_chunk(Stream::Stderr, b"\n").unwrap();
        w.finish().unwrap();
        let records = read_all(&path);
        let o = Stream::Stdout;
        let e = Stream::Stderr;
        assert_eq!(
            content_of(&records),
            [
                (e, true, b"err-".to_vec()),
                (e, false, b"1".to_vec()),
                (o, true, b"out-".to_vec()),
                (o, false, b"line".to_vec()),
                (o, true, b"seco".to_vec()),
                (o, false, b"nd".to_vec()),
                (e, false, b"e2".to_vec()),
            ]
        );
        let lines: Vec<(Stream, Vec<u8>)> = reassemble(records)
            .into_iter()
            .map(|l| (l.stream, l.content))
            .collect();
        assert_eq!(
            lines,
            [
                (e, b"err-1".to_vec()),
                (o, b"out-line".to_vec()),
                (o, b"second".to_vec()),
                (e, b"e2".to_vec()),
            ]
        );
        // Fragments of the two streams interleaved in the file still join per
        // stream.
        let mixed = [
            LogRecord {
                timestamp: t0(),
                stream: o,
                partial: true,
                content: b"o1 ".to_vec(),
            },
            LogRecord {
                timestamp: t0(),
                stream: e,
                partial: true,
                content: b"e1 ".to_vec(),
            },
            LogRecord {
                timestamp: t0(),
                stream: o,
                partial: false,
                content: b"o2".to_vec(),
            },
            LogRecord {
                timestamp: t0(),
                stream: e,
                partial: false,
                content: b"e2".to_vec(),
            },
        ];
        let lines: Vec<Vec<u8>> = reassemble(mixed).into_iter().map(|l| l.content).collect();
        assert_eq!(lines, [b"o1 o2".to_vec(), b"e1 e2".to_vec()]);
    }

    #[test]
    fn flush_partial_writes_p_records() {
        let dir = TempDir::new("flush");
        let path = dir.0.join("0.log");
        let mut w = writer(&path, config(64));
        w.write_chunk(Stream::Stdout, b"prompt> ").unwrap();
        w.write_chunk(Stream::Stderr, b"almost\r").unwrap();
        w.flush_partial().unwrap();
        w.flush_partial().unwrap(); // nothing new: no empty records
        assert_eq!(
            content_of(&read_all(&path)),
            [
                (Stream::Stdout, true, b"prompt> ".to_vec()),
                (Stream::Stderr, true, b"almost".to_vec()),
            ]
        );
        w.write_chunk(Stream::Stdout, b"yes\n").unwrap();
        w.write_chunk(Stream::Stderr, b"\n").unwrap();
        w.finish().unwrap();
        let lines: Vec<(Vec<u8>, bool)> = reassemble(read_all(&path))
            .into_iter()
            .map(|l| (l.content, l.complete))
            .collect();
        assert_eq!(
            lines,
            [(b"prompt> yes".to_vec(), true), (b"almost".to_vec(), true)]
        );
    }

    #[test]
    fn end_of_stream_writes_unterminated_line_as_full() {
        let dir = TempDir::new("eof");
        let path = dir.0.join("0.log");
        let mut w = writer(&path, config(64));
        w.write_chunk(Stream::Stdout, b"done\nbye").unwrap();
        w.write_chunk(Stream::Stderr, b"err without newline")
            .unwrap();
        assert_eq!(
            read_all(&path).len(),
            1,
            "the tail is buffered until end of stream"
        );
        w.end_of_stream(Stream::Stderr).unwrap();
        w.end_of_stream(Stream::Stderr).unwrap(); // idempotent
        w.finish().unwrap();
        assert_eq!(
            content_of(&read_all(&path)),
            [
                (Stream::Stdout, false, b"done".to_vec()),
                (Stream::Stderr, false, b"err without newline".to_vec()),
                (Stream::Stdout, false, b"bye".to_vec()),
            ]
        );
    }

    /// Content of every file of the log, for debugging messages.
    fn listing(path: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn rotation_keeps_max_files_and_reader_returns_newest_in_order() {
        let dir = TempDir::new("rotate");
        let path = dir.0.join("c/1.log");
        // An earlier restart's file in the same directory is not touched.
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(dir.0.join("c/0.log"), b"").unwrap();
        let cfg = LogConfig {
            max_line_size: 64,
            max_size: 300,
            max_files: 3,
        };
        // Records are 40 + 9 bytes: six fit in 300 bytes.
        let mut w = LogWriter::with_clock(&path, cfg, stepping_clock(t0(), 1_000_000_000)).unwrap();
        for i in 0..100 {
            w.write_chunk(Stream::Stdout, format!("line {i:03}\n").as_bytes())
                .unwrap();
        }
        w.finish().unwrap();

        let names = listing(&path);
        let ours: Vec<&String> = names.iter().filter(|n| n.starts_with("1.log")).collect();
        assert_eq!(ours.len(), 3, "{names:?}");
        assert!(names.contains(&"0.log".to_owned()), "{names:?}");
        let files = log_files(&path).unwrap();
        assert_eq!(files.len(), 3);
        assert_eq!(files[2], path);
        for f in &files {
            let len = fs::metadata(f).unwrap().len();
            assert!(len <= 300, "{} is {len} bytes", f.display());
            let name = f.file_name().unwrap().to_str().unwrap();
            // kubelet's rotated name: 1.log.YYYYMMDD-HHMMSS (UTC).
            assert!(
                f == &path
                    || (name.len() == "1.log.20210715-192847".len()
                        && name.starts_with("1.log.2021")),
                "{name}"
            );
        }
        assert!(files[0] < files[1], "{files:?}");

        let lines: Vec<String> = read_all(&path)
            .into_iter()
            .map(|r| String::from_utf8(r.content).unwrap())
            .collect();
        // 100 records, 6 per file: the last three files hold 6 + 6 + 4 lines,
        // 84 to 99.
        let want: Vec<String> = (84..100).map(|i| format!("line {i:03}")).collect();
        assert_eq!(lines, want);
    }

    #[test]
    fn rotation_in_one_second_or_backwards_keeps_order() {
        for (name, step) in [("same-second", 1i64), ("backwards", -3_600_000_000_000)] {
            let dir = TempDir::new(name);
            let path = dir.0.join("0.log");
            let cfg = LogConfig {
                max_line_size: 64,
                max_size: 60,
                max_files: 15,
            };
            // One record per file: 20 rotations within one second (suffixes
            // past .9 must sort numerically) or with the clock going back.
            let mut w = LogWriter::with_clock(&path, cfg, stepping_clock(t0(), step)).unwrap();
            for i in 0..20 {
                w.write_chunk(Stream::Stderr, format!("n{i:02}\n").as_bytes())
                    .unwrap();
            }
            w.finish().unwrap();
            let names = listing(&path);
            assert_eq!(names.len(), 15, "{names:?}");
            if step == 1 {
                // 19 rotations named .20210715-192847, then .1 to .18; the
                // oldest five are gone.
                assert!(
                    !names.contains(&"0.log.20210715-192847".to_owned()),
                    "{names:?}"
                );
                assert!(
                    !names.contains(&"0.log.20210715-192847.4".to_owned()),
                    "{names:?}"
                );
                assert!(
                    names.contains(&"0.log.20210715-192847.5".to_owned()),
                    "{names:?}"
                );
                assert!(
                    names.contains(&"0.log.20210715-192847.18".to_owned()),
                    "{names:?}"
                );
            }
            let got: Vec<Vec<u8>> = read_all(&path).into_iter().map(|r| r.content).collect();
            let want: Vec<Vec<u8>> = (5..20).map(|i| format!("n{i:02}").into_bytes()).collect();
            assert_eq!(got, want, "{name}: {names:?}");
        }
    }

    #[test]
    fn max_files_one_keeps_only_current() {
        let dir = TempDir::new("one");
        let path = dir.0.join("0.log");
        let cfg = LogConfig {
            max_line_size: 64,
            max_size: 100,
            max_files: 1,
        };
        let mut w = LogWriter::with_clock(&path, cfg, stepping_clock(t0(), 1_000_000_000)).unwrap();
        for i in 0..10 {
            w.write_chunk(Stream::Stdout, format!("{i}\n").as_bytes())
                .unwrap();
        }
        w.finish().unwrap();
        assert_eq!(listing(&path), ["0.log"]);
        let got: Vec<Vec<u8>> = read_all(&path).into_iter().map(|r| r.content).collect();
        assert_eq!(got, [b"8".to_vec(), b"9".to_vec()]);
    }

    #[test]
    fn reopening_appends_and_counts_existing_size() {
        let dir = TempDir::new("reopen");
        let path = dir.0.join("0.log");
        let cfg = LogConfig {
            max_line_size: 64,
            max_size: 80,
            max_files: 5,
        };
        let mut w = LogWriter::with_clock(&path, cfg.clone(), stepping_clock(t0(), 1)).unwrap();
        w.write_chunk(Stream::Stdout, b"first\n").unwrap();
        drop(w);
        let mut w = LogWriter::with_clock(&path, cfg, stepping_clock(t0(), 1)).unwrap();
        w.write_chunk(Stream::Stdout, b"second\n").unwrap(); // 46 + 47 > 80: rotates
        drop(w);
        assert_eq!(listing(&path).len(), 2);
        let got: Vec<Vec<u8>> = read_all(&path).into_iter().map(|r| r.content).collect();
        assert_eq!(got, [b"first".to_vec(), b"second".to_vec()]);
    }

    #[test]
    fn files_and_dirs_are_private() {
        let dir = TempDir::new("perms");
        let path = dir.0.join("ns_pod_uid/c/0.log");
        let cfg = LogConfig {
            max_line_size: 64,
            max_size: 60,
            max_files: 5,
        };
        let mut w = LogWriter::with_clock(&path, cfg, stepping_clock(t0(), 1_000_000_000)).unwrap();
        w.write_chunk(Stream::Stdout, b"secret\nsecret\n").unwrap();
        w.finish().unwrap();
        let mut checked = 0;
        for f in log_files(&path).unwrap() {
            let mode = fs::metadata(&f).unwrap().permissions().mode() & 0o777;
            // The umask may remove more bits, never add any.
            assert_eq!(mode & !FILE_MODE, 0, "{} has mode {mode:o}", f.display());
            checked += 1;
        }
        assert_eq!(checked, 2, "a rotated file and the current one");
        for d in [dir.0.join("ns_pod_uid"), dir.0.join("ns_pod_uid/c")] {
            let mode = fs::metadata(&d).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode & !DIR_MODE, 0, "{} has mode {mode:o}", d.display());
        }
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

    #[test]
    fn parses_valid_records() {
        let r = parse_record(b"2021-07-15T19:28:47.123456789Z stdout F hello world\n").unwrap();
        assert_eq!(r.timestamp, t0());
        assert_eq!(r.stream, Stream::Stdout);
        assert!(!r.partial);
        assert_eq!(r.content, b"hello world");
        assert_eq!(
            r.to_bytes(),
            b"2021-07-15T19:28:47.123456789Z stdout F hello world\n"
        );
        let r = parse_record(b"2021-07-15T19:28:47Z stderr P:extra  two spaces ").unwrap();
        assert!(r.partial);
        assert_eq!(r.stream, Stream::Stderr);
        assert_eq!(r.content, b" two spaces ");
        let r = parse_record(b"2021-07-15T21:28:47.5+02:00 stdout F ").unwrap();
        assert_eq!(r.content, b"");
        assert_eq!(
            r.timestamp,
            Timestamp::from_unix(t0().unix_seconds(), 500_000_000).unwrap()
        );
        let r = parse_record(b"2021-07-15T19:28:47Z stdout F \xff\xfe binary").unwrap();
        assert_eq!(r.content, b"\xff\xfe binary");
    }

    #[test]
    fn malformed_lines_rejected() {
        type Check = fn(&RecordError) -> bool;
        let cases: [(&[u8], Check); 14] = [
            (b"", |e| matches!(e, RecordError::MissingField(_))),
            (b"\n", |e| matches!(e, RecordError::MissingField(_))),
            (b"garbage", |e| matches!(e, RecordError::MissingField(_))),
            (b"2021-07-15T19:28:47Z", |e| {
                matches!(e, RecordError::MissingField(_))
            }),
            (b"2021-07-15T19:28:47Z stdout", |e| {
                matches!(e, RecordError::MissingField(_))
            }),
            (b"2021-07-15T19:28:47Z stdout F", |e| {
                matches!(e, RecordError::MissingField(_))
            }),
            (b"yesterday stdout F hi", |e| {
                matches!(e, RecordError::Timestamp(_))
            }),
            (b"2021-02-30T19:28:47Z stdout F hi", |e| {
                matches!(e, RecordError::Timestamp(_))
            }),
            (b"\xff\xff stdout F hi", |e| {
                matches!(e, RecordError::Timestamp(_))
            }),
            (b"2021-07-15T19:28:47Z stdin F hi", |e| {
                matches!(e, RecordError::UnknownStream(_))
            }),
            (b"2021-07-15T19:28:47Z  stdout F hi", |e| {
                matches!(e, RecordError::UnknownStream(_))
            }),
            (b"2021-07-15T19:28:47Z stdout X hi", |e| {
                matches!(e, RecordError::UnknownTag(_))
            }),
            (b"2021-07-15T19:28:47Z stdout  hi", |e| {
                matches!(e, RecordError::UnknownTag(_))
            }),
            (b"2021-07-15T19:28:47Z stdout F a\nb", |e| {
                matches!(e, RecordError::EmbeddedNewline)
            }),
        ];
        for (line, check) in cases {
            let err = parse_record(line).expect_err(&String::from_utf8_lossy(line));
            assert!(check(&err), "{:?}: {err:?}", String::from_utf8_lossy(line));
        }
        // Every strict prefix of a valid record without its content's space is
        // rejected; arbitrary truncations and corruptions never panic.
        let good = b"2021-07-15T19:28:47.123456789Z stdout F hello";
        for end in 0..=good.len() - "hello".len() - 1 {
            assert!(
                parse_record(&good[..end]).is_err(),
                "{}",
                String::from_utf8_lossy(&good[..end])
            );
        }
        for at in 0..good.len() {
            for byte in [b' ', b'\n', b':', b'0', 0xff] {
                let mut bad = good.to_vec();
                bad[at] = byte;
                let _ = parse_record(&bad);
            }
        }
    }

    #[test]
    fn reader_reports_malformed_lines_and_goes_on() {
        let dir = TempDir::new("malformed");
        let rotated = dir.0.join("0.log.20210715-192847");
        let path = dir.0.join("0.log");
        let good = "2021-07-15T19:28:47.123456789Z stdout F ok\n";
        // A rotated file torn at the end (crash mid-write).
        fs::write(
            &rotated,
            format!("{good}notarecord\n{good}2021-07-15T19:28:47Z std"),
        )
        .unwrap();
        fs::write(&path, format!("{good}x\n{}\n{good}", "y".repeat(200))).unwrap();
        let results: Vec<Result<LogRecord, LogError>> = LogReader::open(&path)
            .unwrap()
            .with_max_record_len(100)
            .collect();
        let summary: Vec<String> = results
            .iter()
            .map(|r| match r {
                Ok(r) => String::from_utf8_lossy(&r.content).into_owned(),
                Err(LogError::Malformed {
                    path,
                    offset,
                    source,
                }) => {
                    format!(
                        "{} @{offset}: {source}",
                        path.file_name().unwrap().to_string_lossy()
                    )
                }
                Err(e) => panic!("{e}"),
            })
            .collect();
        let g = good.len();
        assert_eq!(
            summary,
            [
                "ok".to_owned(),
                format!("0.log.20210715-192847 @{g}: missing space after the timestamp"),
                "ok".to_owned(),
                format!(
                    "0.log.20210715-192847 @{}: record not terminated by a newline",
                    2 * g + 11
                ),
                "ok".to_owned(),
                format!("0.log @{g}: missing space after the timestamp"),
                format!("0.log @{}: record longer than 100 bytes", g + 2),
                "ok".to_owned(),
            ]
        );
        let message = results[1].as_ref().unwrap_err().to_string();
        assert!(
            message.contains(&rotated.display().to_string()),
            "{message}"
        );
        let collected = read_lines(&path, &CollectOptions::default());
        // The default limit accepts the 200-byte line; both bad lines of the
        // current file and both of the rotated one are counted.
        let collected = collected.unwrap();
        assert_eq!(collected.malformed, 4);
        assert_eq!(collected.lines.len(), 4);
    }

    #[test]
    fn reader_leaves_incomplete_tail_for_later() {
        let dir = TempDir::new("tail");
        let path = dir.0.join("0.log");
        let first = "2021-07-15T19:28:47.123456789Z stdout F one\n";
        let second = "2021-07-15T19:28:48.000000000Z stdout F two\n";
        fs::write(&path, format!("{first}{}", &second[..20])).unwrap();
        let mut reader = LogReader::open(&path).unwrap();
        assert_eq!(reader.next().unwrap().unwrap().content, b"one");
        assert!(reader.next().is_none());
        assert_eq!(
            reader.position(),
            Some(LogPosition {
                path: path.clone(),
                offset: first.len() as u64
            })
        );
        // The writer completes the record: the same reader picks it up.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&second.as_bytes()[20..]).unwrap();
        let next = reader.next().unwrap().unwrap();
        assert_eq!(next.content, b"two");
        assert_eq!(
            next.timestamp,
            Timestamp::parse_rfc3339("2021-07-15T19:28:48Z").unwrap()
        );
        assert!(reader.next().is_none());
        assert_eq!(
            reader.position().unwrap().offset,
            (first.len() + second.len()) as u64
        );
    }

    #[test]
    fn reader_skips_missing_files() {
        let dir = TempDir::new("missing");
        let path = dir.0.join("0.log");
        fs::write(&path, "2021-07-15T19:28:47Z stdout F here\n").unwrap();
        let reader = LogReader::from_files(vec![dir.0.join("0.log.20200101-000000"), path.clone()]);
        let got: Vec<Vec<u8>> = reader.map(|r| r.unwrap().content).collect();
        assert_eq!(got, [b"here".to_vec()]);
        // A log that does not exist yet reads as empty.
        assert!(read_all(&dir.0.join("1.log")).is_empty());
        // A directory that does not exist is an error naming it.
        let err = LogReader::open(&dir.0.join("nope/0.log")).unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
    }

    #[test]
    fn tail_lines_and_since() {
        let dir = TempDir::new("select");
        let path = dir.0.join("0.log");
        // One record per second; line 3 is split in three records, and the
        // log ends with an incomplete stderr line.
        let mut w =
            LogWriter::with_clock(&path, config(4), stepping_clock(t0(), 1_000_000_000)).unwrap();
        for i in 0..10 {
            let text = if i == 3 {
                "3333333333\n".to_owned()
            } else {
                format!("{i}\n")
            };
            w.write_chunk(Stream::Stdout, text.as_bytes()).unwrap();
        }
        w.write_chunk(Stream::Stderr, b"cut").unwrap();
        w.flush_partial().unwrap();
        drop(w);
        let select = |tail_lines, since: Option<u32>| -> Vec<String> {
            let since =
                since.map(|s| Timestamp::from_unix(t0().unix_seconds() + i64::from(s), 0).unwrap());
            read_lines(&path, &CollectOptions { tail_lines, since })
                .unwrap()
                .lines
                .into_iter()
                .map(|l| {
                    String::from_utf8(l.content).unwrap() + if l.complete { "" } else { "…" }
                })
                .collect()
        };
        let all = [
            "0",
            "1",
            "2",
            "3333333333",
            "4",
            "5",
            "6",
            "7",
            "8",
            "9",
            "cut…",
        ];
        assert_eq!(select(None, None), all);
        assert_eq!(select(Some(3), None), ["8", "9", "cut…"]);
        assert_eq!(select(Some(0), None), Vec::<String>::new());
        assert_eq!(select(Some(100), None), all);
        // Records at t0, t0+1s, ...; line 3 completes with the record at
        // t0+5s, line i > 3 at t0+(i+2)s. `since` t0+5s keeps line 3 on.
        assert_eq!(
            select(None, Some(5)),
            ["3333333333", "4", "5", "6", "7", "8", "9", "cut…"]
        );
        assert_eq!(select(None, Some(11)), ["9", "cut…"]);
        assert_eq!(select(Some(2), Some(5)), ["9", "cut…"]);
        assert_eq!(select(None, Some(100)), Vec::<String>::new());
        // `since` is inclusive: a line stamped exactly then is kept.
        let exact = Timestamp::from_unix(t0().unix_seconds() + 5, t0().subsec_nanos()).unwrap();
        let options = CollectOptions {
            tail_lines: None,
            since: Some(exact),
        };
        let lines = read_lines(&path, &options).unwrap().lines;
        assert_eq!(lines.len(), 8);
        assert_eq!(lines[0].content, b"3333333333");
        assert_eq!(lines[0].timestamp, exact);
    }

    #[test]
    fn collect_lines_passes_io_errors_on() {
        let err = LogError::Read {
            path: PathBuf::from("/x"),
            source: io::Error::other("boom"),
        };
        let result = collect_lines(vec![Err(err)], &CollectOptions::default());
        assert!(matches!(result, Err(LogError::Read { .. })));
    }
}
