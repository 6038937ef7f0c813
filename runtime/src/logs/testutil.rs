//! Helpers shared by the log module's unit tests.

use super::*;
use crate::time::Timestamp;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A directory under the system temp dir, unique per process and test,
/// removed when dropped.
pub(super) struct TempDir(pub(super) PathBuf);

impl TempDir {
    pub(super) fn new(name: &str) -> Self {
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

pub(super) const T0: &str = "2021-07-15T19:28:47.123456789Z";

pub(super) fn t0() -> Timestamp {
    Timestamp::parse_rfc3339(T0).unwrap()
}

/// A clock starting at `start` that moves `step_nanos` (possibly negative)
/// per call.
pub(super) fn stepping_clock(
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

pub(super) fn config(max_line_size: usize) -> LogConfig {
    LogConfig {
        max_line_size,
        ..LogConfig::default()
    }
}

pub(super) fn writer(path: &Path, config: LogConfig) -> LogWriter {
    LogWriter::with_clock(path, config, stepping_clock(t0(), 1)).unwrap()
}

pub(super) fn read_all(path: &Path) -> Vec<LogRecord> {
    LogReader::open(path).unwrap().map(Result::unwrap).collect()
}

pub(super) fn content_of(records: &[LogRecord]) -> Vec<(Stream, bool, Vec<u8>)> {
    records
        .iter()
        .map(|r| (r.stream, r.partial, r.content.clone()))
        .collect()
}

/// Content of every file of the log, for debugging messages.
pub(super) fn listing(path: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}
