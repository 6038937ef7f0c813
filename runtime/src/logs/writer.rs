//! [`LogWriter`]: container output into CRI log records, rotated by size.

use super::{DIR_MODE, FILE_MODE, LogConfig, LogError, RotationKey, Stream, rotated_files};
use crate::time::Timestamp;
use std::fmt;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Formats one record; `content` must not contain `\n` (the writer guarantees
/// it by cutting lines there).
pub(super) fn format_record(
    timestamp: Timestamp,
    stream: Stream,
    partial: bool,
    content: &[u8],
) -> Vec<u8> {
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
    /// `path`, normally from [`container_log_path`](super::container_log_path), for appending. Records are
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::testutil::*;
    use crate::logs::*;
    use std::os::unix::fs::PermissionsExt;

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
}
