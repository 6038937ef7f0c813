//! Reading a log: records across rotated files ([`LogReader`]), lines
//! reassembled from `P` records ([`LineAssembler`]), and `--tail`/`--since`
//! selection ([`collect_lines`]).

use super::writer::format_record;
use super::{DEFAULT_MAX_RECORD_LEN, LogError, RecordError, Stream, log_files};
use crate::time::Timestamp;
use std::collections::VecDeque;
use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};

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
/// unread byte (the start of the next record).
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
/// after `None` returns records appended since; it does not notice a rotation
/// of that file. [`LogFollower`](super::LogFollower) follows a log across
/// rotations.
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
pub(super) enum LineRead {
    /// A full line (newline consumed): bytes consumed, and whether it was
    /// longer than the limit (then `buf` is left empty).
    Line { consumed: u64, too_long: bool },
    /// End of file after `consumed` bytes without a newline.
    Eof { consumed: u64 },
}

/// Reads up to and including the next `\n` into `buf` (without it), storing at
/// most `limit` bytes: a longer line is consumed but not kept.
pub(super) fn read_line_limited(
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
    /// ends in `P` records), or for a piece of a line longer than a
    /// [`LineAssembler`]'s limit (more of the line follows).
    pub complete: bool,
}

/// Joins `P` records with the record that completes them, per stream (stdout
/// and stderr fragments interleave in a file).
#[derive(Debug, Default)]
pub struct LineAssembler {
    pending: [Option<LogLine>; 2],
    max_line_len: Option<usize>,
}

impl LineAssembler {
    /// An assembler with no pending fragments and no limit on line length.
    pub fn new() -> Self {
        Self::default()
    }

    /// An assembler that holds at most about `limit` bytes of an unfinished
    /// line per stream: once a line's `P` records reach `limit` bytes, they are
    /// returned as an incomplete [`LogLine`] and the rest of the line starts a
    /// new one. The writer cuts long lines into `P` records, so without a limit
    /// a container printing one endless line would grow a reader's memory
    /// without bound.
    pub fn with_max_line_len(limit: usize) -> Self {
        LineAssembler {
            pending: [None, None],
            max_line_len: Some(limit),
        }
    }

    /// Changes the limit of [`with_max_line_len`](Self::with_max_line_len);
    /// a pending line already longer is returned with its next record.
    pub(super) fn set_max_line_len(&mut self, limit: usize) {
        self.max_line_len = Some(limit);
    }

    /// Adds a record; returns the line it completes, if it is an `F` record,
    /// or the piece of a line that reached the limit.
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
            if self
                .max_line_len
                .is_some_and(|limit| line.content.len() >= limit)
            {
                return Some(line);
            }
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
    use crate::logs::testutil::*;
    use crate::logs::*;
    use std::fs::{self, OpenOptions};
    use std::io::Write;

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
