//! Following a log as it is written (`kubectl logs -f`), across rotations.
//!
//! A [`LogFollower`] reads the log's files through descriptors it keeps open,
//! so a rotation never takes the rest of a file away from it: when the log file
//! is renamed to its rotated name, the follower reads the old file to its end
//! through the descriptor it has, then goes on with the rotated files that came
//! after it (rotated names sort in rotation order, see
//! [`LogWriter`](super::LogWriter)) and finally with the new log file.
//!
//! Whether the file being read is still the log file is decided by inode: the
//! path is `stat`ed before each read, and a different inode (or none) means the
//! writer has moved on. Since the writer never writes to a file after renaming
//! it, everything up to the end of the old file is then final. The follower
//! then lists the directory and finds its file among the rotated ones by inode:
//! the files after it come next, in name order.
//!
//! # Gaps
//! The writer deletes the oldest rotated files first. So while the last file
//! the follower read is still there, nothing after it has been deleted, and
//! the listing holds every file that came after it; files listed are opened at
//! once, and the log file is held open while older files are read, so later
//! deletions cannot take them away either. A follower that falls
//! `max_files - 1` rotations behind can find its last file deleted: it then
//! cannot tell whether files after it were deleted too, and says so with
//! [`LogGap::Untracked`] rather than carry on silently; a file listed but
//! deleted before it could be opened is [`LogGap::Deleted`].
//!
//! Reading is non-blocking ([`LogFollower::poll`]), so an async server can call
//! it from a timer without a thread per follower; [`LogFollower::wait`] blocks
//! (on inotify, or short sleeps where inotify is not available) for a
//! synchronous caller such as the CLI.

use super::reader::{LineRead, read_line_limited};
use super::{
    CollectOptions, CollectedLines, DEFAULT_MAX_RECORD_LEN, LineAssembler, LogError, LogLine,
    RecordError, RotationKey, parse_record, rotated_files,
};
use crate::time::Timestamp;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use std::collections::VecDeque;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, BufReader, Seek, SeekFrom};
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How many bytes of records [`LogFollower::poll`] reads, by default, before it
/// returns what it has: a follower that is far behind catches up in bounded
/// steps instead of loading a whole log into memory at once.
pub const DEFAULT_FOLLOW_BATCH_BYTES: usize = 256 * 1024;

/// At most this many queued rotated files are opened as soon as they are
/// listed (so that their deletion by later rotations cannot take them away);
/// more are opened by name when their turn comes. Bounds a follower's
/// descriptors in a directory with many rotated files.
const MAX_HELD_FILES: usize = 16;

/// How long [`LogFollower::wait`] sleeps between polls without inotify.
const FALLBACK_POLL_INTERVAL: Duration = Duration::from_millis(100);

/// The longest single sleep on inotify: a safety net should an event be missed
/// (the directory replaced, the queue overflowed).
const MAX_INOTIFY_SLEEP: Duration = Duration::from_secs(1);

/// Log content a [`LogFollower`] could not read: the writer deleted it (its
/// `max_files` limit) before the follower got to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogGap {
    /// A rotated file that came next was deleted before the follower could
    /// open it: its lines are lost.
    Deleted {
        /// The rotated file.
        path: PathBuf,
    },
    /// A file the follower has read to its end was deleted before the
    /// follower knew which file came after it: rotated files in between may
    /// have been deleted unread. The writer deletes the oldest files first, so
    /// this takes at least `max_files - 1` rotations between two polls (any
    /// rotation with `max_files` = 1): lines were probably lost.
    Untracked {
        /// The name the file was read under.
        path: PathBuf,
    },
}

impl fmt::Display for LogGap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LogGap::Deleted { path } => write!(
                f,
                "log lines lost: rotated file {} was deleted before it was read",
                path.display()
            ),
            LogGap::Untracked { path } => write!(
                f,
                "log lines may be lost: {} was rotated away and deleted before the \
                 files after it were found",
                path.display()
            ),
        }
    }
}

/// What [`LogFollower::poll`] found, in log order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FollowEvent {
    /// A line (or, past the follower's line limit, a piece of one: see
    /// [`LogLine::complete`]).
    Line(LogLine),
    /// Lines missing at this point of the log.
    Gap(LogGap),
}

/// Device and inode: what identifies a file across renames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    fn of(meta: &fs::Metadata) -> Self {
        FileId {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }
}

/// What the follower knows of the file it reads.
#[derive(Debug)]
enum Role {
    /// It was the log file itself when last checked: the writer may append.
    Live,
    /// A rotated file: complete, read to its end and then left.
    Rotated,
}

/// The file being read.
struct Source {
    reader: BufReader<File>,
    /// The name it was opened under, for errors and gaps.
    path: PathBuf,
    id: FileId,
    /// Offset of the next unread record.
    offset: u64,
    role: Role,
    /// What came right after this file is unknown: report a gap after it.
    untracked_after: bool,
}

impl Source {
    fn new(file: File, path: PathBuf, id: FileId, role: Role) -> Self {
        Source {
            reader: BufReader::new(file),
            path,
            id,
            offset: 0,
            role,
            untracked_after: false,
        }
    }
}

/// The last file read whose successor is to be found by listing the
/// directory: while it is still there, the writer (which deletes the oldest
/// rotated files first) has deleted nothing that came after it.
struct Anchor {
    /// Its rotated name.
    path: PathBuf,
    id: FileId,
    /// Held open so that its inode number cannot be reused by a new file
    /// under the same name (the writer reuses a name once its file is gone).
    _file: File,
}

/// A rotated file waiting for its turn, open already if it was among the first
/// [`MAX_HELD_FILES`].
struct Queued {
    key: RotationKey,
    path: PathBuf,
    file: Option<File>,
}

/// The inotify watch [`LogFollower::wait`] sleeps on: the log's directory, which
/// reports writes to its files as well as renames and new files.
struct Watch {
    inotify: Inotify,
    armed: bool,
}

/// Why a read of the current file stopped.
enum Step {
    /// Done with this file; go on with the next one.
    Next,
    /// Everything written so far has been read.
    CaughtUp,
    /// The batch is full; more may be there.
    BatchFull,
}

/// Follows a CRI log as it is written: returns new lines as they are completed,
/// across rotations, never repeating one, never losing one the writer has not
/// deleted first, and reporting where lines may be missing ([`LogGap`]).
///
/// Start it with [`collect`](Self::collect), which reads the lines selected by
/// `--tail`/`--since` and leaves the follower exactly after them, or with
/// [`new`](Self::new) to follow from the oldest line. The log need not exist
/// yet: a follower of a container that has not started waits for its file, and
/// starts at the oldest line there when it first finds it.
///
/// `P` records are joined as [`collect_lines`](super::collect_lines) joins
/// them; a line is returned once its `F` record is there, except that a line
/// longer than the line limit (default [`DEFAULT_MAX_RECORD_LEN`]) is returned
/// in pieces marked incomplete, so that memory stays bounded. Malformed
/// records are skipped and counted ([`malformed`](Self::malformed)), as
/// `collect_lines` does.
///
/// Memory is bounded: a poll returns about
/// [`DEFAULT_FOLLOW_BATCH_BYTES`] of lines at most, one record is held up to
/// the record limit, one unfinished line per stream up to the line limit; and
/// at most about 20 files are held open (16 queued, plus the one being read,
/// the last one read, the log file and an inotify instance).
pub struct LogFollower {
    path: PathBuf,
    /// Every rotated file whose key is at most this has been read (or is being
    /// read, or came before the follower's start).
    floor: Option<RotationKey>,
    anchor: Option<Anchor>,
    current: Option<Source>,
    queue: VecDeque<Queued>,
    /// What was the log file when the queue was listed, to read after it.
    next_live: Option<(File, FileId)>,
    assembler: LineAssembler,
    since: Option<Timestamp>,
    max_record_len: usize,
    batch_bytes: usize,
    hold_files: usize,
    line: Vec<u8>,
    /// Gaps met by [`collect`](Self::collect), returned by the next poll.
    pending: Vec<FollowEvent>,
    malformed: usize,
    gaps: usize,
    watch: Option<Watch>,
}

impl fmt::Debug for LogFollower {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogFollower")
            .field("path", &self.path)
            .field("floor", &self.floor)
            .field(
                "current",
                &self.current.as_ref().map(|c| (&c.path, c.offset)),
            )
            .field("queued", &self.queue.len())
            .field("malformed", &self.malformed)
            .field("gaps", &self.gaps)
            .finish_non_exhaustive()
    }
}

impl LogFollower {
    /// Follows the log at `log_path` (as from
    /// [`container_log_path`](super::container_log_path)) from its oldest line:
    /// the first poll returns the rotated files' lines, then the log file's.
    /// Nothing is opened until then; the log need not exist yet.
    pub fn new(log_path: impl Into<PathBuf>) -> Self {
        LogFollower {
            path: log_path.into(),
            floor: None,
            anchor: None,
            current: None,
            queue: VecDeque::new(),
            next_live: None,
            assembler: LineAssembler::with_max_line_len(DEFAULT_MAX_RECORD_LEN),
            since: None,
            max_record_len: DEFAULT_MAX_RECORD_LEN,
            batch_bytes: DEFAULT_FOLLOW_BATCH_BYTES,
            hold_files: MAX_HELD_FILES,
            line: Vec::new(),
            pending: Vec::new(),
            malformed: 0,
            gaps: 0,
            watch: None,
        }
    }

    /// Reads the log's lines selected by `options`, as
    /// [`read_lines`](super::read_lines) does, and returns them with a
    /// follower positioned right after them: `kubectl logs -f --tail 10`
    /// prints these lines, then what the follower returns, and no line is lost
    /// or repeated at the seam (both come from one reader).
    ///
    /// Differences from `read_lines`: a line still unfinished at the end of the
    /// log (`P` records waiting for their `F`) is not collected; the follower
    /// returns it, whole, once it is finished. `options.since` also applies to
    /// the lines followed. Gaps met while collecting are returned by the first
    /// poll.
    pub fn collect(
        log_path: impl Into<PathBuf>,
        options: &CollectOptions,
    ) -> Result<(CollectedLines, Self), LogError> {
        let mut follower = Self::new(log_path);
        follower.since = options.since;
        let mut kept = VecDeque::new();
        let mut gaps = Vec::new();
        loop {
            let events = follower.poll()?;
            if events.is_empty() {
                break;
            }
            for event in events {
                match event {
                    FollowEvent::Line(line) => {
                        kept.push_back(line);
                        if let Some(tail) = options.tail_lines {
                            while kept.len() > tail {
                                kept.pop_front();
                            }
                        }
                    }
                    gap @ FollowEvent::Gap(_) => gaps.push(gap),
                }
            }
        }
        follower.pending = gaps;
        let collected = CollectedLines {
            lines: kept.into(),
            malformed: follower.malformed,
        };
        Ok((collected, follower))
    }

    /// Sets the longest record accepted (default [`DEFAULT_MAX_RECORD_LEN`]);
    /// longer ones are skipped as malformed, as by
    /// [`LogReader::with_max_record_len`](super::LogReader::with_max_record_len).
    pub fn with_max_record_len(mut self, limit: usize) -> Self {
        self.max_record_len = limit;
        self
    }

    /// Sets the most bytes of one line held while waiting for its end (default
    /// [`DEFAULT_MAX_RECORD_LEN`]); see [`LineAssembler::with_max_line_len`].
    pub fn with_max_line_len(mut self, limit: usize) -> Self {
        self.assembler.set_max_line_len(limit);
        self
    }

    /// Sets about how many bytes of records one poll reads before returning
    /// (default [`DEFAULT_FOLLOW_BATCH_BYTES`]; at least one line is returned
    /// if there is one).
    pub fn with_batch_bytes(mut self, bytes: usize) -> Self {
        self.batch_bytes = bytes;
        self
    }

    /// The log file followed.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many malformed records have been skipped since the follower was
    /// created (those of [`collect`](Self::collect) included).
    pub fn malformed(&self) -> usize {
        self.malformed
    }

    /// How many gaps have been found since the follower was created.
    pub fn gaps(&self) -> usize {
        self.gaps
    }

    /// Reads what has been written since the last call, without blocking, and
    /// returns the lines completed (and gaps met), oldest first.
    ///
    /// An empty result means the follower has caught up with the writer. A
    /// full batch (see [`with_batch_bytes`](Self::with_batch_bytes)) returns
    /// early: call again until the result is empty.
    ///
    /// An I/O error is returned when it stops the follower before it found
    /// anything; after something was found, that is returned and the next
    /// call meets the error again (if it persists). Either way the follower
    /// stays where it was, and a later call retries.
    pub fn poll(&mut self) -> Result<Vec<FollowEvent>, LogError> {
        let mut out = std::mem::take(&mut self.pending);
        let mut read = 0usize;
        loop {
            let step = if self.current.is_none() {
                self.advance(&mut out)
                    .map(|found| if found { Step::Next } else { Step::CaughtUp })
            } else {
                self.read_current(&mut out, &mut read)
            };
            match step {
                Ok(Step::Next) => {}
                Ok(Step::CaughtUp | Step::BatchFull) => return Ok(out),
                Err(_) if !out.is_empty() => return Ok(out),
                Err(e) => return Err(e),
            }
        }
    }

    /// Like [`poll`](Self::poll), but blocks until there is something to
    /// return or `timeout` has passed (then the result is empty).
    ///
    /// Sleeps on an inotify watch of the log's directory, woken by writes,
    /// renames and new files there; where inotify is not available (the
    /// directory does not exist yet, the per-user instance limit is reached)
    /// it polls every 100 ms.
    pub fn wait(&mut self, timeout: Duration) -> Result<Vec<FollowEvent>, LogError> {
        let deadline = Instant::now().checked_add(timeout);
        loop {
            // The watch goes up before the poll, so that a write between the
            // poll and the sleep still wakes the sleep.
            self.arm_watch();
            let events = self.poll()?;
            if !events.is_empty() {
                return Ok(events);
            }
            let left = match deadline {
                Some(deadline) => deadline.saturating_duration_since(Instant::now()),
                None => Duration::MAX,
            };
            if left.is_zero() {
                return Ok(events);
            }
            self.sleep(left);
        }
    }

    /// Takes the lines still waiting for their `F` record, marked incomplete,
    /// as [`collect_lines`](super::collect_lines) ends with them: for the end
    /// of following, once the container has exited and the log is drained.
    pub fn finish(&mut self) -> Vec<LogLine> {
        let since = self.since;
        self.assembler
            .finish()
            .into_iter()
            .filter(|line| since.is_none_or(|since| line.timestamp >= since))
            .collect()
    }

    /// Picks the next file when none is being read; false when there is
    /// nothing to read yet.
    fn advance(&mut self, out: &mut Vec<FollowEvent>) -> Result<bool, LogError> {
        if let Some(next) = self.queue.pop_front() {
            self.open_queued(next, out)?;
            return Ok(true);
        }
        if let Some((file, id)) = self.next_live.take() {
            // Held since the queue just read was listed: it comes right after.
            self.current = Some(Source::new(file, self.path.clone(), id, Role::Live));
            return Ok(true);
        }
        // Nothing known to come next: list the directory. The log file is
        // opened first, so that the listing tells whether it was rotated since.
        let file = match File::open(&self.path) {
            Ok(file) => Some(file),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(source) => {
                return Err(LogError::Open {
                    path: self.path.clone(),
                    source,
                });
            }
        };
        let rotated = self.list_rotated()?;
        self.check_continuity(out);
        let Some(file) = file else {
            // Not created yet, or between a rotation's rename and the new file.
            if rotated.is_empty() {
                return Ok(false);
            }
            self.enqueue(rotated, None);
            return Ok(true);
        };
        let id = file
            .metadata()
            .map(|meta| FileId::of(&meta))
            .map_err(|source| LogError::Open {
                path: self.path.clone(),
                source,
            })?;
        match position_of(id, &rotated) {
            // Rotated since it was opened: read it as a rotated file, after
            // any older ones, keeping the descriptor.
            Some(index) => self.enqueue(rotated, Some((index, file))),
            None if rotated.is_empty() => {
                self.current = Some(Source::new(file, self.path.clone(), id, Role::Live));
            }
            // Not rotated when listed (it would be there): every rotated file
            // listed is older. They come first; it is kept open for after
            // them, and found again by inode if it is rotated meanwhile.
            None if !is_deleted(&file, &self.path)? => {
                self.enqueue(rotated, None);
                self.next_live = Some((file, id));
            }
            // Rotated and deleted in the meantime (a burst of rotations): its
            // lines are final, and since the writer deletes the oldest files
            // first, every rotated file there once it is read came after it
            // (the listing above may hold older ones: it is dropped). Whether
            // some in between were deleted is unknown.
            None => {
                let mut source = Source::new(file, self.path.clone(), id, Role::Rotated);
                source.untracked_after = true;
                self.current = Some(source);
            }
        }
        Ok(true)
    }

    /// Called with a fresh listing, before choosing from it: if the last file
    /// read is gone, files that came after it may have been deleted unread.
    fn check_continuity(&mut self, out: &mut Vec<FollowEvent>) {
        let Some(anchor) = &self.anchor else {
            return;
        };
        let present = fs::metadata(&anchor.path).is_ok_and(|meta| FileId::of(&meta) == anchor.id);
        if !present {
            let path = anchor.path.clone();
            self.anchor = None;
            self.gap(out, LogGap::Untracked { path });
        }
    }

    /// Makes a queued rotated file the current one; a file deleted before it
    /// could be opened is a gap.
    fn open_queued(&mut self, next: Queued, out: &mut Vec<FollowEvent>) -> Result<(), LogError> {
        let file = match next.file {
            Some(file) => file,
            None => match File::open(&next.path) {
                Ok(file) => file,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    self.floor = Some(next.key);
                    self.anchor = None;
                    self.gap(out, LogGap::Deleted { path: next.path });
                    return Ok(());
                }
                Err(source) => {
                    let path = next.path.clone();
                    self.queue.push_front(next);
                    return Err(LogError::Open { path, source });
                }
            },
        };
        let opened = file
            .metadata()
            .and_then(|meta| Ok((FileId::of(&meta), file.try_clone()?)));
        let (id, held) = match opened {
            Ok(opened) => opened,
            Err(source) => {
                // Its turn again on the next poll.
                let path = next.path.clone();
                self.queue.push_front(Queued {
                    key: next.key,
                    path: next.path,
                    file: Some(file),
                });
                return Err(LogError::Open { path, source });
            }
        };
        self.floor = Some(next.key);
        self.anchor = Some(Anchor {
            path: next.path.clone(),
            id,
            _file: held,
        });
        self.current = Some(Source::new(file, next.path, id, Role::Rotated));
        Ok(())
    }

    /// Queues rotated files, oldest first, opening the first few at once;
    /// `held` is one of them opened already.
    fn enqueue(&mut self, rotated: Vec<(RotationKey, PathBuf)>, held: Option<(usize, File)>) {
        let (held_index, mut held_file) = match held {
            Some((index, file)) => (Some(index), Some(file)),
            None => (None, None),
        };
        for (index, (key, path)) in rotated.into_iter().enumerate() {
            let file = if Some(index) == held_index {
                held_file.take()
            } else if self.queue.len() < self.hold_files {
                // A failure is retried, and reported, when its turn comes.
                File::open(&path).ok()
            } else {
                None
            };
            self.queue.push_back(Queued { key, path, file });
        }
    }

    /// Reads records from the current file until its end, a full batch, or
    /// (for the log file) the end of what is written so far.
    fn read_current(
        &mut self,
        out: &mut Vec<FollowEvent>,
        read: &mut usize,
    ) -> Result<Step, LogError> {
        let Some(source) = self.current.as_mut() else {
            return Ok(Step::Next);
        };
        // Checked before reading: if the file is no longer the log file, the
        // writer has finished with it, and reading to its end below reads all.
        let still_written = match source.role {
            Role::Live => is_log_file(&self.path, source.id)?,
            Role::Rotated => false,
        };
        loop {
            if *read >= self.batch_bytes && !out.is_empty() {
                return Ok(Step::BatchFull);
            }
            let start = source.offset;
            let result = read_line_limited(&mut source.reader, &mut self.line, self.max_record_len);
            match result {
                Err(source_error) => {
                    // Start over at the record on the next poll.
                    let _ = source.reader.seek(SeekFrom::Start(start));
                    return Err(LogError::Read {
                        path: source.path.clone(),
                        source: source_error,
                    });
                }
                Ok(LineRead::Line { consumed, too_long }) => {
                    source.offset = start.saturating_add(consumed);
                    *read = read.saturating_add(usize::try_from(consumed).unwrap_or(usize::MAX));
                    let record = if too_long {
                        Err(RecordError::TooLong {
                            limit: self.max_record_len,
                        })
                    } else {
                        parse_record(&self.line)
                    };
                    match record {
                        Ok(record) => {
                            if let Some(line) = self.assembler.push(record) {
                                if self.since.is_none_or(|since| line.timestamp >= since) {
                                    out.push(FollowEvent::Line(line));
                                }
                            }
                        }
                        Err(_) => self.malformed = self.malformed.saturating_add(1),
                    }
                }
                Ok(LineRead::Eof { consumed: 0 }) => break,
                Ok(LineRead::Eof { .. }) if still_written => {
                    // A record being written: read it whole on a later poll.
                    if let Err(source_error) = source.reader.seek(SeekFrom::Start(start)) {
                        return Err(LogError::Read {
                            path: source.path.clone(),
                            source: source_error,
                        });
                    }
                    return Ok(Step::CaughtUp);
                }
                Ok(LineRead::Eof { consumed }) => {
                    // The end of a finished file without a newline: a record
                    // torn by a crash, malformed as the reader reports it.
                    source.offset = start.saturating_add(consumed);
                    self.malformed = self.malformed.saturating_add(1);
                    break;
                }
            }
        }
        if still_written {
            return Ok(Step::CaughtUp);
        }
        let Some(finished) = self.current.take() else {
            return Ok(Step::Next);
        };
        match finished.role {
            Role::Live => self.after_rotation(finished, out)?,
            Role::Rotated if finished.untracked_after => {
                self.anchor = None;
                self.gap(
                    out,
                    LogGap::Untracked {
                        path: finished.path,
                    },
                );
            }
            Role::Rotated => {}
        }
        Ok(Step::Next)
    }

    /// The log file being read has been rotated and read to its end: queues
    /// the rotated files that came after it.
    fn after_rotation(
        &mut self,
        finished: Source,
        out: &mut Vec<FollowEvent>,
    ) -> Result<(), LogError> {
        let mut rotated = match self.list_rotated() {
            Ok(rotated) => rotated,
            Err(e) => {
                // Done on the next poll: the file is read to its end already.
                self.current = Some(finished);
                return Err(e);
            }
        };
        match position_of(finished.id, &rotated) {
            Some(index) => {
                // Older entries cannot be there: every file listed when this
                // one became the log file is read, and the first rotation
                // since was this one's. The newer ones are all there (the
                // oldest go first) and come next.
                let after = rotated.split_off(index + 1);
                if let Some((key, path)) = rotated.pop() {
                    self.floor = Some(key);
                    self.anchor = Some(Anchor {
                        path,
                        id: finished.id,
                        _file: finished.reader.into_inner(),
                    });
                }
                self.enqueue(after, None);
            }
            None => {
                // Deleted (or moved away) already: the writer deletes the
                // oldest first, so all rotated files left are newer, but some
                // between may be gone.
                self.anchor = None;
                self.gap(
                    out,
                    LogGap::Untracked {
                        path: finished.path,
                    },
                );
                self.enqueue(rotated, None);
            }
        }
        Ok(())
    }

    fn gap(&mut self, out: &mut Vec<FollowEvent>, gap: LogGap) {
        self.gaps = self.gaps.saturating_add(1);
        out.push(FollowEvent::Gap(gap));
    }

    /// The rotated files newer than those read, oldest first; none while the
    /// log's directory does not exist.
    fn list_rotated(&self) -> Result<Vec<(RotationKey, PathBuf)>, LogError> {
        let mut rotated = match rotated_files(&self.path) {
            Ok(rotated) => rotated,
            Err(LogError::ListDir { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                Vec::new()
            }
            Err(e) => return Err(e),
        };
        if let Some(floor) = &self.floor {
            rotated.retain(|(key, _)| key > floor);
        }
        Ok(rotated)
    }

    /// Sets up the inotify watch on the log's directory if it is not up yet;
    /// without it, [`sleep`](Self::sleep) polls.
    fn arm_watch(&mut self) {
        if self.watch.is_none() {
            self.watch = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
                .ok()
                .map(|inotify| Watch {
                    inotify,
                    armed: false,
                });
        }
        let Some(watch) = self.watch.as_mut() else {
            return;
        };
        if watch.armed {
            return;
        }
        let dir = match self.path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        let flags = AddWatchFlags::IN_MODIFY
            | AddWatchFlags::IN_CREATE
            | AddWatchFlags::IN_MOVED_FROM
            | AddWatchFlags::IN_MOVED_TO
            | AddWatchFlags::IN_DELETE
            | AddWatchFlags::IN_DELETE_SELF
            | AddWatchFlags::IN_MOVE_SELF;
        watch.armed = watch.inotify.add_watch(dir, flags).is_ok();
    }

    /// Sleeps until the log's directory changes (or for a short while without
    /// a watch), at most `limit`.
    fn sleep(&mut self, limit: Duration) {
        let Some(watch) = self.watch.as_mut().filter(|w| w.armed) else {
            std::thread::sleep(limit.min(FALLBACK_POLL_INTERVAL));
            return;
        };
        let timeout =
            PollTimeout::try_from(limit.min(MAX_INOTIFY_SLEEP)).unwrap_or(PollTimeout::MAX);
        let mut fds = [PollFd::new(watch.inotify.as_fd(), PollFlags::POLLIN)];
        if poll(&mut fds, timeout).is_err() {
            // EINTR and the like: the caller polls the log and comes back.
            return;
        }
        // Drain the queue: the events themselves do not matter, the next poll
        // looks at the files. A directory deleted or moved ends the watch;
        // arm_watch sets up a new one.
        while let Ok(events) = watch.inotify.read_events() {
            if events.is_empty() {
                break;
            }
            let gone = AddWatchFlags::IN_IGNORED
                | AddWatchFlags::IN_MOVE_SELF
                | AddWatchFlags::IN_DELETE_SELF;
            if events.iter().any(|e| e.mask.intersects(gone)) {
                self.watch = None;
                break;
            }
        }
    }
}

/// Whether `path` is (still) the file `id`.
fn is_log_file(path: &Path, id: FileId) -> Result<bool, LogError> {
    match fs::metadata(path) {
        Ok(meta) => Ok(FileId::of(&meta) == id),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(LogError::Open {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Whether `file` (opened as `path`) has no name left.
fn is_deleted(file: &File, path: &Path) -> Result<bool, LogError> {
    match file.metadata() {
        Ok(meta) => Ok(meta.nlink() == 0),
        Err(source) => Err(LogError::Open {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Where the file `id` is among `rotated`, if it is there.
fn position_of(id: FileId, rotated: &[(RotationKey, PathBuf)]) -> Option<usize> {
    rotated.iter().position(|(_, path)| {
        fs::metadata(path)
            .map(|meta| FileId::of(&meta) == id)
            .unwrap_or(false)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::testutil::*;
    use crate::logs::{LogConfig, LogWriter, Stream, read_lines};
    use std::fs::OpenOptions;
    use std::io::Write;

    /// Records are 44 bytes with a three-byte line: four fit in 200 bytes.
    fn small_files(max_files: usize) -> LogConfig {
        LogConfig {
            max_line_size: 64,
            max_size: 200,
            max_files,
        }
    }

    /// A writer whose clock moves one second per record, or one nanosecond
    /// (then rotated names get `.N` suffixes within one second).
    fn writer_at(path: &Path, config: LogConfig, step_nanos: i64) -> LogWriter {
        LogWriter::with_clock(path, config, stepping_clock(t0(), step_nanos)).unwrap()
    }

    fn write_lines(w: &mut LogWriter, range: std::ops::Range<u32>) {
        for i in range {
            w.write_chunk(Stream::Stdout, format!("l{i:02}\n").as_bytes())
                .unwrap();
        }
    }

    fn names(range: std::ops::Range<u32>) -> Vec<String> {
        range.map(|i| format!("l{i:02}")).collect()
    }

    /// Lines as text, gaps as `<gap …>`, unfinished pieces with `…`.
    fn summary(events: &[FollowEvent]) -> Vec<String> {
        events
            .iter()
            .map(|e| match e {
                FollowEvent::Line(l) => {
                    String::from_utf8_lossy(&l.content).into_owned()
                        + if l.complete { "" } else { "…" }
                }
                FollowEvent::Gap(LogGap::Deleted { path }) => {
                    format!("<deleted {}>", path.file_name().unwrap().to_string_lossy())
                }
                FollowEvent::Gap(LogGap::Untracked { .. }) => "<untracked>".to_owned(),
            })
            .collect()
    }

    /// Polls until caught up.
    fn drain(f: &mut LogFollower) -> Vec<String> {
        let mut all = Vec::new();
        loop {
            let events = f.poll().unwrap();
            if events.is_empty() {
                return all;
            }
            all.extend(summary(&events));
        }
    }

    fn rotated_count(path: &Path) -> usize {
        rotated_files(path).unwrap().len()
    }

    #[test]
    fn follows_one_rotation_between_polls() {
        let dir = TempDir::new("follow-one");
        let path = dir.0.join("c/0.log");
        let mut w = writer_at(&path, small_files(5), 1_000_000_000);
        let mut f = LogFollower::new(&path);
        write_lines(&mut w, 0..3);
        assert_eq!(drain(&mut f), names(0..3));
        assert_eq!(drain(&mut f), Vec::<String>::new());
        // l04 does not fit in the first file: one rotation.
        write_lines(&mut w, 3..7);
        assert_eq!(rotated_count(&path), 1, "{:?}", listing(&path));
        assert_eq!(drain(&mut f), names(3..7));
        write_lines(&mut w, 7..8);
        assert_eq!(drain(&mut f), names(7..8));
        assert_eq!((f.gaps(), f.malformed()), (0, 0));
    }

    #[test]
    fn follows_several_rotations_between_polls() {
        for (name, step) in [("seconds", 1_000_000_000), ("same-second", 1)] {
            let dir = TempDir::new(name);
            let path = dir.0.join("0.log");
            let mut w = writer_at(&path, small_files(5), step);
            let mut f = LogFollower::new(&path);
            write_lines(&mut w, 0..2);
            assert_eq!(drain(&mut f), names(0..2));
            // Three rotations: the follower's file and two more are rotated.
            write_lines(&mut w, 2..14);
            assert_eq!(rotated_count(&path), 3, "{:?}", listing(&path));
            assert_eq!(drain(&mut f), names(2..14), "{name}");
            // Up to max_files - 1 = 4 rotations between polls lose nothing:
            // the follower's file is still there under its rotated name.
            write_lines(&mut w, 14..30);
            assert_eq!(drain(&mut f), names(14..30), "{name}");
            assert_eq!(f.gaps(), 0, "{name}");
            // Many rotations while reading in small batches.
            let mut f = LogFollower::new(&path).with_batch_bytes(1);
            let mut got = Vec::new();
            for i in 30..50 {
                write_lines(&mut w, i..i + 1);
                got.extend(summary(&f.poll().unwrap()));
            }
            got.extend(drain(&mut f));
            // It started at the oldest file left when it first polled (l12 to
            // l15; l28 to l30 were in the log file) and fell behind, but the
            // files it had queued were open already: no line is lost. The log
            // file it held (l28 to l31) was rotated and deleted meanwhile,
            // though, so it cannot tell whether files after it were deleted
            // too (exactly max_files - 1 rotations since: none was).
            let want = [names(12..32), vec!["<untracked>".to_owned()], names(32..50)].concat();
            assert_eq!(got, want, "{name}: {:?}", listing(&path));
            assert_eq!(f.gaps(), 1, "{name}");
        }
    }

    #[test]
    fn partial_records_split_by_rotation_make_one_line() {
        let dir = TempDir::new("follow-partial");
        let path = dir.0.join("0.log");
        // P records are 49 bytes: two per file.
        let cfg = LogConfig {
            max_line_size: 8,
            max_size: 100,
            max_files: 10,
        };
        let mut w = writer_at(&path, cfg, 1_000_000_000);
        let mut f = LogFollower::new(&path);
        w.write_chunk(Stream::Stdout, b"first\n0123456789abcdefghij")
            .unwrap();
        w.write_chunk(Stream::Stderr, b"err").unwrap();
        w.flush_partial().unwrap();
        // "first" and two P records; two P records; stderr's P record.
        assert_eq!(rotated_count(&path), 2, "{:?}", listing(&path));
        assert_eq!(drain(&mut f), ["first"]);
        w.write_chunk(Stream::Stdout, b"klmnopqrstuvwxyz\nnext\n")
            .unwrap();
        w.write_chunk(Stream::Stderr, b"or\n").unwrap();
        assert!(rotated_count(&path) >= 3, "{:?}", listing(&path));
        assert_eq!(
            drain(&mut f),
            ["0123456789abcdefghijklmnopqrstuvwxyz", "next", "error"]
        );
        // The same as the reader's reassembly.
        let all: Vec<Vec<u8>> = read_lines(&path, &CollectOptions::default())
            .unwrap()
            .lines
            .into_iter()
            .map(|l| l.content)
            .collect();
        assert_eq!(
            all,
            [
                b"first".to_vec(),
                b"0123456789abcdefghijklmnopqrstuvwxyz".to_vec(),
                b"next".to_vec(),
                b"error".to_vec()
            ]
        );
    }

    #[test]
    fn tail_then_follow_has_no_seam() {
        let dir = TempDir::new("follow-seam");
        let path = dir.0.join("0.log");
        let mut w = writer_at(&path, small_files(5), 1_000_000_000);
        write_lines(&mut w, 0..10);
        w.write_chunk(Stream::Stdout, b"prompt> ").unwrap();
        w.flush_partial().unwrap();
        let options = CollectOptions {
            tail_lines: Some(3),
            since: None,
        };
        let (collected, mut f) = LogFollower::collect(&path, &options).unwrap();
        let text = |lines: &[LogLine]| -> Vec<String> {
            lines
                .iter()
                .map(|l| String::from_utf8_lossy(&l.content).into_owned())
                .collect()
        };
        assert_eq!(text(&collected.lines), names(7..10));
        // The reader shows the unfinished line; the follower keeps it for later.
        let read = read_lines(&path, &options).unwrap();
        assert_eq!(text(&read.lines), ["l08", "l09", "prompt> "]);
        assert!(!read.lines[2].complete);
        assert_eq!(drain(&mut f), Vec::<String>::new());
        w.write_chunk(Stream::Stdout, b"yes\n").unwrap();
        write_lines(&mut w, 10..20);
        assert_eq!(
            drain(&mut f),
            [vec!["prompt> yes".to_owned()], names(10..20)].concat()
        );

        // With no tail, collect and follow together return what read_lines does.
        for tail_lines in [None, Some(0), Some(1), Some(5), Some(100)] {
            let options = CollectOptions {
                tail_lines,
                since: None,
            };
            let (collected, mut f) = LogFollower::collect(&path, &options).unwrap();
            assert_eq!(
                collected.lines,
                read_lines(&path, &options).unwrap().lines,
                "{tail_lines:?}"
            );
            assert_eq!(drain(&mut f), Vec::<String>::new());
        }
        // `since` applies to the collected and to the followed lines.
        let since = Timestamp::from_unix(t0().unix_seconds() + 12, 0).unwrap();
        let options = CollectOptions {
            tail_lines: None,
            since: Some(since),
        };
        let (collected, mut f) = LogFollower::collect(&path, &options).unwrap();
        assert_eq!(collected.lines, read_lines(&path, &options).unwrap().lines);
        write_lines(&mut w, 20..21);
        assert_eq!(drain(&mut f), names(20..21));
    }

    #[test]
    fn malformed_records_are_skipped_and_counted() {
        let dir = TempDir::new("follow-malformed");
        let path = dir.0.join("0.log");
        let mut w = writer_at(&path, small_files(5), 1_000_000_000);
        let mut f = LogFollower::new(&path);
        write_lines(&mut w, 0..2);
        assert_eq!(drain(&mut f), names(0..2));
        let mut raw = OpenOptions::new().append(true).open(&path).unwrap();
        raw.write_all(b"garbage in the middle\n").unwrap();
        write_lines(&mut w, 2..3);
        assert_eq!(drain(&mut f), names(2..3));
        assert_eq!(f.malformed(), 1);
        assert_eq!(
            read_lines(&path, &CollectOptions::default())
                .unwrap()
                .malformed,
            1
        );

        // A rotated file torn at its end (crash mid-write), and a record of
        // the current file still being written.
        let dir = TempDir::new("follow-torn");
        let path = dir.0.join("0.log");
        let good = |text: &str| format!("2021-07-15T19:28:47.123456789Z stdout F {text}\n");
        fs::write(
            dir.0.join("0.log.20210715-192847"),
            format!("{}2021-07-15T19:28:47Z std", good("a")),
        )
        .unwrap();
        let second = good("b");
        fs::write(&path, &second[..20]).unwrap();
        let mut f = LogFollower::new(&path);
        assert_eq!(drain(&mut f), ["a"]);
        assert_eq!(f.malformed(), 1);
        let mut raw = OpenOptions::new().append(true).open(&path).unwrap();
        raw.write_all(&second.as_bytes()[20..]).unwrap();
        assert_eq!(drain(&mut f), ["b"]);
        let collected = read_lines(&path, &CollectOptions::default()).unwrap();
        assert_eq!((collected.lines.len(), collected.malformed), (2, 1));
        // An over-long record is skipped as the reader skips it.
        raw.write_all(format!("{}\n", "x".repeat(300)).as_bytes())
            .unwrap();
        raw.write_all(good("c").as_bytes()).unwrap();
        let mut f = LogFollower::new(&path).with_max_record_len(100);
        assert_eq!(drain(&mut f), ["a", "b", "c"]);
        assert_eq!(f.malformed(), 2);
    }

    #[test]
    fn record_torn_at_rotation_is_read_whole_from_the_old_file() {
        let dir = TempDir::new("follow-torn-rotation");
        let path = dir.0.join("0.log");
        let record = |text: &str| format!("2021-07-15T19:28:47.123456789Z stdout F {text}\n");
        let second = record("two");
        fs::write(&path, format!("{}{}", record("one"), &second[..25])).unwrap();
        let mut f = LogFollower::new(&path);
        assert_eq!(drain(&mut f), ["one"]);
        // The writer completes the record, rotates, and starts a new file.
        let mut raw = OpenOptions::new().append(true).open(&path).unwrap();
        raw.write_all(&second.as_bytes()[25..]).unwrap();
        fs::rename(&path, dir.0.join("0.log.20210715-192847")).unwrap();
        fs::write(&path, record("three")).unwrap();
        assert_eq!(drain(&mut f), ["two", "three"]);
        assert_eq!((f.gaps(), f.malformed()), (0, 0));
    }

    #[test]
    fn deleted_files_are_reported_as_gaps() {
        // The follower's own file rotated and deleted between two polls.
        let dir = TempDir::new("follow-untracked");
        let path = dir.0.join("0.log");
        let mut w = writer_at(&path, small_files(3), 1_000_000_000);
        let mut f = LogFollower::new(&path);
        write_lines(&mut w, 0..2);
        assert_eq!(drain(&mut f), names(0..2));
        // Five rotations; two rotated files (l12..l19) and l20, l21 remain.
        write_lines(&mut w, 2..22);
        let got = drain(&mut f);
        // The rest of the follower's file comes from its descriptor.
        let want = [names(2..4), vec!["<untracked>".to_owned()], names(12..22)].concat();
        assert_eq!(got, want, "{:?}", listing(&path));
        assert_eq!(f.gaps(), 1);
        write_lines(&mut w, 22..23);
        assert_eq!(drain(&mut f), names(22..23));

        // A rotated file listed as next, deleted before it was opened.
        let dir = TempDir::new("follow-deleted");
        let path = dir.0.join("0.log");
        let mut w = writer_at(&path, small_files(5), 1_000_000_000);
        write_lines(&mut w, 0..10);
        let rotated = rotated_files(&path).unwrap();
        assert_eq!(rotated.len(), 2);
        let mut f = LogFollower::new(&path).with_batch_bytes(1);
        f.hold_files = 0;
        assert_eq!(summary(&f.poll().unwrap()), names(0..1));
        fs::remove_file(&rotated[1].1).unwrap();
        let deleted = format!(
            "<deleted {}>",
            rotated[1].1.file_name().unwrap().to_string_lossy()
        );
        assert_eq!(
            drain(&mut f),
            [names(1..4), vec![deleted], names(8..10)].concat()
        );
        assert_eq!(f.gaps(), 1);
        let message = LogGap::Deleted {
            path: rotated[1].1.clone(),
        }
        .to_string();
        assert!(
            message.contains("lost") && message.contains(&rotated[1].1.display().to_string()),
            "{message}"
        );

        // Files queued are held open: deleting them then loses nothing.
        let mut f = LogFollower::new(&path).with_batch_bytes(1);
        write_lines(&mut w, 10..14);
        let rotated = rotated_files(&path).unwrap();
        assert_eq!(summary(&f.poll().unwrap()), names(0..1));
        for (_, file) in &rotated[1..] {
            fs::remove_file(file).unwrap();
        }
        assert_eq!(
            drain(&mut f),
            [names(1..4), names(8..14)].concat(),
            "{rotated:?}"
        );
        assert_eq!(f.gaps(), 0);
    }

    /// A writer in another thread rotating hundreds of times while the
    /// follower reads: lines come in order, never twice, and a line is
    /// missing only where a gap is reported.
    #[test]
    fn concurrent_writer_never_loses_lines_silently() {
        // "roomy" never deletes a file (5000 lines make about 460 files).
        // "one" deletes each rotated file at once, and reuses rotated names.
        for (name, max_files, pause_every) in [
            ("roomy", 1000, 50),
            ("tight", 2, 1_000_000),
            ("one", 1, 1_000_000),
            ("three", 3, 7),
        ] {
            let dir = TempDir::new(name);
            let path = dir.0.join("0.log");
            let cfg = LogConfig {
                max_line_size: 64,
                max_size: 500,
                max_files,
            };
            let writer_path = path.clone();
            let writer = std::thread::spawn(move || {
                let mut w = LogWriter::open(&writer_path, cfg).unwrap();
                for i in 0..5000u32 {
                    w.write_chunk(Stream::Stdout, format!("{i:05}\n").as_bytes())
                        .unwrap();
                    if i % pause_every == 0 {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
            });
            let mut f = LogFollower::new(&path).with_batch_bytes(2048);
            let mut events = Vec::new();
            while !writer.is_finished() {
                events.extend(f.wait(Duration::from_millis(20)).unwrap());
            }
            writer.join().unwrap();
            loop {
                let more = f.poll().unwrap();
                if more.is_empty() {
                    break;
                }
                events.extend(more);
            }
            let mut last: Option<u32> = None;
            let mut gap_since_last = false;
            let mut lines = 0;
            for event in &events {
                match event {
                    FollowEvent::Gap(_) => gap_since_last = true,
                    FollowEvent::Line(line) => {
                        let n: u32 = std::str::from_utf8(&line.content).unwrap().parse().unwrap();
                        // The follower starts at the oldest line there when it
                        // first finds the log.
                        let expected =
                            last.map_or(if max_files == 1000 { 0 } else { n }, |l| l + 1);
                        assert!(n >= expected, "{name}: {n} after {last:?}");
                        assert!(
                            n == expected || gap_since_last,
                            "{name}: {n} after {last:?} without a gap"
                        );
                        last = Some(n);
                        gap_since_last = false;
                        lines += 1;
                    }
                }
            }
            assert!(
                last == Some(4999) || gap_since_last,
                "{name}: ended at {last:?}"
            );
            assert_eq!(f.malformed(), 0, "{name}");
            if max_files == 1000 {
                // The follower keeps up: every line, no gap.
                assert_eq!((lines, f.gaps()), (5000, 0), "{name}");
            }
        }
    }

    #[test]
    fn log_that_does_not_exist_yet() {
        let dir = TempDir::new("follow-later");
        let path = dir.0.join("ns_pod_uid/c/0.log");
        let mut f = LogFollower::new(&path);
        assert!(f.poll().unwrap().is_empty());
        let started = Instant::now();
        assert!(f.wait(Duration::from_millis(50)).unwrap().is_empty());
        assert!(started.elapsed() >= Duration::from_millis(50));
        let writer_path = path.clone();
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            let mut w = writer_at(&writer_path, small_files(5), 1_000_000_000);
            write_lines(&mut w, 0..1);
            std::thread::sleep(Duration::from_millis(200));
            write_lines(&mut w, 1..2);
        });
        let started = Instant::now();
        let got = summary(&f.wait(Duration::from_secs(20)).unwrap());
        assert_eq!(got, names(0..1));
        // The directory exists now: the second line wakes the inotify watch.
        let got = summary(&f.wait(Duration::from_secs(20)).unwrap());
        assert_eq!(got, names(1..2));
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(f.watch.as_ref().is_some_and(|w| w.armed));
        writer.join().unwrap();
        assert!(f.wait(Duration::ZERO).unwrap().is_empty());
    }

    #[test]
    fn batches_are_bounded() {
        let dir = TempDir::new("follow-batch");
        let path = dir.0.join("0.log");
        let cfg = LogConfig {
            max_size: 20_000,
            max_files: 100,
            ..small_files(5)
        };
        let mut w = writer_at(&path, cfg, 1);
        for i in 0..1000u32 {
            w.write_chunk(Stream::Stdout, format!("{i:04}\n").as_bytes())
                .unwrap();
        }
        let mut f = LogFollower::new(&path).with_batch_bytes(4096);
        let mut got = Vec::new();
        loop {
            let events = f.poll().unwrap();
            if events.is_empty() {
                break;
            }
            // 45-byte records: a batch stops at the first record past 4096.
            assert!(events.len() <= 4096 / 45 + 1, "{}", events.len());
            got.extend(summary(&events));
        }
        let want: Vec<String> = (0..1000).map(|i| format!("{i:04}")).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn long_lines_come_in_bounded_pieces() {
        let dir = TempDir::new("follow-long");
        let path = dir.0.join("0.log");
        let cfg = LogConfig {
            max_line_size: 8,
            ..LogConfig::default()
        };
        let mut w = writer_at(&path, cfg, 1);
        let line: String = ('a'..='z').chain('A'..='X').collect();
        w.write_chunk(Stream::Stdout, format!("{line}\nshort\n").as_bytes())
            .unwrap();
        w.write_chunk(Stream::Stdout, b"cut").unwrap();
        w.flush_partial().unwrap();
        let mut f = LogFollower::new(&path).with_max_line_len(20);
        // 8-byte P records: a piece is returned once 24 bytes are held.
        assert_eq!(
            drain(&mut f),
            [
                format!("{}…", &line[..24]),
                format!("{}…", &line[24..48]),
                line[48..].to_owned(),
                "short".to_owned()
            ]
        );
        // The unfinished line is given up by finish(), marked incomplete.
        let rest = f.finish();
        assert_eq!(rest.len(), 1);
        assert_eq!(
            (rest[0].content.as_slice(), rest[0].complete),
            (&b"cut"[..], false)
        );
        assert!(f.finish().is_empty());
    }
}
