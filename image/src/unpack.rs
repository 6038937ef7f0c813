//! Unpacking one image layer (a tar stream, plain, gzip or zstd) into an empty
//! directory that overlayfs then uses as a lower directory.
//!
//! The layer is hostile until proven otherwise. Every path is resolved component
//! by component from a directory fd of the layer root, with `openat(O_NOFOLLOW)`:
//! no symlink is ever followed, whether it came with this layer or was swapped in
//! mid-archive, so nothing is written outside the layer directory. Symlinks are
//! created with their targets as given: they are only ever interpreted later, by
//! the kernel, inside the container's root.
//!
//! Path policy, as containerd's archive package: a leading `/` is dropped (paths
//! are relative to the layer root, as they are in every layer `docker` writes);
//! `.` components are dropped; `..` is resolved lexically and an entry whose path
//! climbs above the root is refused (containerd clamps it at the root instead;
//! no honest layer contains one, so refusing says more).
//!
//! OCI whiteouts become overlayfs ones: `.wh.<name>` a 0:0 character device named
//! `<name>`, `.wh..wh..opq` the `trusted.overlay.opaque=y` xattr on its directory.
//! Nothing is deleted: overlayfs does the merging.
//!
//! While unpacking, the uncompressed stream is hashed: the result is the layer's
//! diff_id, which the caller checks against the image config's `rootfs.diff_ids`.

use std::cell::Cell;
use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};

use nix::errno::Errno;
use nix::fcntl::AtFlags;
use nix::fcntl::{OFlag, RenameFlags};
use nix::libc;
use nix::sys::stat::{FileStat, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, UnlinkatFlags};
use tar::EntryType;

use crate::digest::{Digest, Hasher};

/// Longest path accepted for an entry or a link target, as Linux's `PATH_MAX`.
const PATH_MAX: usize = 4096;

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar stream.
    None,
    /// gzip (one or more members).
    Gzip,
    /// Zstandard (one or more frames, skippable frames skipped).
    Zstd,
}

impl Compression {
    /// The compression whose magic number starts `prefix`; `None` (plain tar)
    /// when no magic matches. Four bytes are enough to decide.
    pub fn detect(prefix: &[u8]) -> Self {
        match prefix {
            [0x1f, 0x8b, ..] => Self::Gzip,
            [0x28, 0xb5, 0x2f, 0xfd, ..] => Self::Zstd,
            // A zstd skippable frame (magic 0x184D2A5?, little-endian): only zstd
            // streams start with one (zstd:chunked puts metadata there).
            [b0, 0x2a, 0x4d, 0x18, ..] if b0 & 0xf0 == 0x50 => Self::Zstd,
            _ => Self::None,
        }
    }

    /// The compression an OCI or Docker layer media type announces, or `None`
    /// for a media type that is not a layer tarball we can read (for example
    /// `+bzip2`, or a non-layer type). A hint only: [`unpack`] goes by the magic
    /// bytes, because mislabelled layers exist and containerd reads them too.
    pub fn from_media_type(media_type: &str) -> Option<Self> {
        match media_type {
            "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar"
            | "application/vnd.docker.image.rootfs.diff.tar" => Some(Self::None),
            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Some(Self::Gzip),
            "application/vnd.oci.image.layer.v1.tar+zstd"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd" => Some(Self::Zstd),
            _ => None,
        }
    }
}

/// Most bytes of headers one entry may have: its 512-byte header, a GNU long
/// name and link, PAX records, sparse maps, and the previous entry's padding.
/// Real ones are a few KiB (PATH_MAX is 4096); the `tar` crate holds them in
/// memory, so a hostile layer must not make them gigabytes.
pub const MAX_ENTRY_HEADERS: u64 = 1 << 20;

/// Limits and checks for one unpack.
#[derive(Debug, Clone)]
pub struct UnpackOptions {
    /// Most bytes the *uncompressed* tar stream may have (headers included):
    /// bounds disk use and decompression bombs. Default 16 GiB. It also bounds
    /// the memory a GNU long-name or PAX record may take: the `tar` crate reads
    /// those whole before the entry they describe.
    pub max_total_bytes: u64,
    /// Most entries (files, directories, links, ...) a layer may have.
    /// Default one million.
    pub max_entries: u64,
    /// The diff_id the image config names for this layer; when given, a stream
    /// with another digest is an error ([`UnpackError::DiffIdMismatch`]).
    pub expected_diff_id: Option<Digest>,
}

impl Default for UnpackOptions {
    fn default() -> Self {
        Self {
            max_total_bytes: 16 << 30,
            max_entries: 1_000_000,
            expected_diff_id: None,
        }
    }
}

/// What an unpack did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnpackStats {
    /// sha256 of the uncompressed tar stream: the layer's diff_id.
    pub diff_id: Digest,
    /// Length of the uncompressed tar stream.
    pub bytes: u64,
    /// Number of tar entries (after long-name and PAX records are merged).
    pub entries: u64,
    /// The compression the stream turned out to have.
    pub compression: Compression,
}

/// Why a layer could not be unpacked. Every entry-level error names the entry.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// The layer directory could not be opened or created.
    #[error("layer directory {path}: {source}")]
    Destination {
        /// The directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The stream could not be read, decompressed or parsed as tar (truncated,
    /// corrupt, not an archive).
    #[error("reading the layer stream: {0}")]
    Stream(#[source] io::Error),
    /// The uncompressed stream is longer than [`UnpackOptions::max_total_bytes`].
    #[error("layer is larger than the limit of {limit} bytes uncompressed")]
    TooLarge {
        /// The limit.
        limit: u64,
    },
    /// The headers of one entry (GNU long names, PAX records, sparse maps)
    /// are larger than any real archive's: the `tar` crate would hold them
    /// in memory.
    #[error("an entry's headers (long name, PAX records) exceed {limit} bytes")]
    HeadersTooLarge {
        /// The limit.
        limit: u64,
    },
    /// An entry claims more data than the whole layer may have.
    #[error("{path}: entry of {size} bytes exceeds the layer limit of {limit} bytes")]
    EntryTooLarge {
        /// The entry.
        path: String,
        /// Its claimed size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// More entries than [`UnpackOptions::max_entries`].
    #[error("layer has more than {limit} entries")]
    TooManyEntries {
        /// The limit.
        limit: u64,
    },
    /// The entry would reach outside the layer or is malformed: a `..` escaping
    /// the root, a parent that is a symlink or not a directory, a path too long.
    #[error("{path}: refused: {reason}")]
    Unsafe {
        /// The entry.
        path: String,
        /// What was wrong.
        reason: String,
    },
    /// An entry type we do not unpack (sparse files, unknown types).
    #[error("{path}: unsupported tar entry type {kind:?}")]
    Unsupported {
        /// The entry.
        path: String,
        /// Its type byte.
        kind: u8,
    },
    /// Device nodes (other than whiteouts' 0:0) need root.
    #[error("{path}: device nodes can only be created as root")]
    DeviceNeedsRoot {
        /// The entry.
        path: String,
    },
    /// A system call on an entry failed.
    #[error("{path}: {op}: {source}")]
    Os {
        /// The entry.
        path: String,
        /// What was being done.
        op: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The uncompressed stream's digest is not the expected diff_id.
    #[error("layer diff_id mismatch: expected {expected}, got {actual}")]
    DiffIdMismatch {
        /// From the image config.
        expected: Digest,
        /// Of the stream read.
        actual: Digest,
    },
}

/// The decompressed stream of `reader` (plain, gzip or zstd, detected by its
/// magic bytes), with the compression found. Also what air-gap import reads
/// image tarballs through.
pub fn decompress<'a>(mut reader: impl Read + 'a) -> io::Result<(Compression, Box<dyn Read + 'a>)> {
    // Read the magic by hand (a short read from a pipe must not decide) and
    // put it back in front of the rest.
    let mut magic = [0u8; 4];
    let mut got = 0;
    while got < magic.len() {
        match reader.read(&mut magic[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let compression = Compression::detect(&magic[..got]);
    let reader = BufReader::with_capacity(
        64 * 1024,
        io::Cursor::new(magic).take(got as u64).chain(reader),
    );
    let decoded: Box<dyn Read + 'a> = match compression {
        Compression::None => Box::new(reader),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(reader)),
        Compression::Zstd => Box::new(ZstdFrames::new(reader)),
    };
    Ok((compression, decoded))
}

/// Unpacks the layer read from `reader` (plain, gzip or zstd tar, detected by its
/// magic bytes) into `dir`, which must exist and should be empty.
///
/// On error `dir` is left half-written: use [`unpack_into_new`] to never expose
/// that. The whole stream is read (trailing padding too) so that the diff_id
/// covers it all.
pub fn unpack(
    reader: impl Read,
    dir: &Path,
    opts: &UnpackOptions,
) -> Result<UnpackStats, UnpackError> {
    let root = nix::fcntl::open(
        dir,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| UnpackError::Destination {
        path: dir.to_owned(),
        source: e.into(),
    })?;
    // SAFETY: `open` just returned this fd and nothing else owns it.
    let root = unsafe { OwnedFd::from_raw_fd(root) };

    let (compression, decoded) = decompress(reader).map_err(UnpackError::Stream)?;
    let over_limit = Rc::new(Cell::new(false));
    let header_budget = Rc::new(Cell::new(None));
    let over_headers = Rc::new(Cell::new(false));
    let counted = Counted {
        inner: decoded,
        hasher: Hasher::new(),
        bytes: 0,
        limit: opts.max_total_bytes,
        over_limit: over_limit.clone(),
        header_budget: header_budget.clone(),
        over_headers: over_headers.clone(),
    };
    let stream_error = |e: io::Error| {
        if over_limit.get() {
            UnpackError::TooLarge {
                limit: opts.max_total_bytes,
            }
        } else if over_headers.get() {
            UnpackError::HeadersTooLarge {
                limit: MAX_ENTRY_HEADERS,
            }
        } else {
            UnpackError::Stream(e)
        }
    };

    let mut archive = tar::Archive::new(counted);
    let mut unpacker = Unpacker {
        root: root.as_raw_fd(),
        is_root: nix::unistd::geteuid().is_root(),
        dir_times: Vec::new(),
    };
    let mut entries = 0u64;
    let mut iter = archive.entries().map_err(stream_error)?;
    loop {
        // Only headers are read while the next entry is looked for (the one
        // before was read to its end below), so that is what the budget bounds.
        header_budget.set(Some(MAX_ENTRY_HEADERS));
        let next = iter.next();
        header_budget.set(None);
        let Some(entry) = next else {
            break;
        };
        let mut entry = entry.map_err(stream_error)?;
        entries += 1;
        if entries > opts.max_entries {
            return Err(UnpackError::TooManyEntries {
                limit: opts.max_entries,
            });
        }
        if let Err(e) = unpacker.entry(&mut entry, opts) {
            // Whatever failed, a stream over its limit is the real reason.
            return Err(if over_limit.get() {
                UnpackError::TooLarge {
                    limit: opts.max_total_bytes,
                }
            } else {
                e
            });
        }
        // Data the unpacker did not need (a whiteout's, say) is read here, not
        // counted as headers by the next look.
        io::copy(&mut entry, &mut io::sink()).map_err(stream_error)?;
    }
    unpacker.finish()?;

    let mut counted = archive.into_inner();
    io::copy(&mut counted, &mut io::sink()).map_err(stream_error)?;
    let stats = UnpackStats {
        diff_id: counted.hasher.finish(),
        bytes: counted.bytes,
        entries,
        compression,
    };
    if let Some(expected) = opts.expected_diff_id {
        if expected != stats.diff_id {
            return Err(UnpackError::DiffIdMismatch {
                expected,
                actual: stats.diff_id,
            });
        }
    }
    Ok(stats)
}

/// Unpacks into a fresh sibling `dir.tmp-*` and renames it to `dir` only on
/// success, so a half-unpacked layer is never seen under `dir`; on error the
/// temporary directory is removed. `dir` must not exist yet.
pub fn unpack_into_new(
    reader: impl Read,
    dir: &Path,
    opts: &UnpackOptions,
) -> Result<UnpackStats, UnpackError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let destination = |source: io::Error| UnpackError::Destination {
        path: dir.to_owned(),
        source,
    };
    let Some(name) = dir.file_name() else {
        return Err(destination(io::Error::new(
            io::ErrorKind::InvalidInput,
            "no final component",
        )));
    };
    let mut tmp_name = name.to_owned();
    tmp_name.push(format!(
        ".tmp-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let tmp = dir.with_file_name(tmp_name);
    std::fs::create_dir(&tmp).map_err(destination)?;
    let result = unpack(reader, &tmp, opts).and_then(|stats| {
        // The rename must not reach the disk before the files do: after a
        // power cut the layer is either absent or whole, never a directory of
        // empty files. One syncfs per layer, not an fsync per file.
        std::fs::File::open(&tmp)
            .and_then(|d| {
                use std::os::fd::AsRawFd as _;
                nix::unistd::syncfs(d.as_raw_fd()).map_err(io::Error::from)
            })
            .map_err(destination)?;
        nix::fcntl::renameat2(None, &tmp, None, dir, RenameFlags::RENAME_NOREPLACE)
            .map_err(|e| destination(e.into()))?;
        Ok(stats)
    });
    if result.is_err() {
        // remove_dir_all does not follow symlinks: safe on a hostile tree.
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result
}

/// The uncompressed stream: counted against the limit and hashed as it is read.
struct Counted<R> {
    inner: R,
    hasher: Hasher,
    bytes: u64,
    limit: u64,
    over_limit: Rc<Cell<bool>>,
    /// While the `tar` crate looks for the next entry: the bytes it may still
    /// read. All it reads then is headers and their extensions, which it keeps
    /// in memory; this bounds them.
    header_budget: Rc<Cell<Option<u64>>>,
    over_headers: Rc<Cell<bool>>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes += n as u64;
        if self.bytes > self.limit {
            self.over_limit.set(true);
            return Err(io::Error::other("layer exceeds its size limit"));
        }
        if let Some(budget) = self.header_budget.get() {
            let Some(left) = budget.checked_sub(n as u64) else {
                self.over_headers.set(true);
                return Err(io::Error::other("entry headers exceed their limit"));
            };
            self.header_budget.set(Some(left));
        }
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// A zstd stream of one or more frames. ruzstd's `StreamingDecoder` reads one
/// frame; zstd layers (zstd:chunked in particular) may have several, and
/// skippable frames.
struct ZstdFrames<R: Read> {
    current: Option<ruzstd::decoding::StreamingDecoder<Peek<R>, ruzstd::decoding::FrameDecoder>>,
    /// The compressed stream between frames.
    source: Option<Peek<R>>,
}

impl<R: Read> ZstdFrames<R> {
    fn new(source: R) -> Self {
        Self {
            current: None,
            source: Some(Peek {
                inner: source,
                pending: Vec::new(),
            }),
        }
    }

    /// Starts the next frame; false at the end of the stream.
    fn next_frame(&mut self) -> io::Result<bool> {
        loop {
            let Some(mut source) = self.source.take() else {
                return Ok(false);
            };
            // Skippable frames are recognised here: ruzstd reports them only
            // after consuming their header, together with the source.
            let header = source.peek(8)?;
            if header.is_empty() {
                return Ok(false);
            }
            if Compression::detect(header) == Compression::Zstd
                && header[0] != 0x28
                && header.len() == 8
            {
                let length = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
                let length = u64::from(length) + 8;
                let skipped = io::copy(&mut (&mut source).take(length), &mut io::sink())?;
                if skipped != length {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "truncated zstd skippable frame",
                    ));
                }
                self.source = Some(source);
                continue;
            }
            let decoder = ruzstd::decoding::StreamingDecoder::new(source)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            self.current = Some(decoder);
            return Ok(true);
        }
    }
}

impl<R: Read> Read for ZstdFrames<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if let Some(mut decoder) = self.current.take() {
                match decoder.read(buf) {
                    Ok(0) => self.source = Some(decoder.into_inner()),
                    result => {
                        // Data, or an error that a retry would see again.
                        self.current = Some(decoder);
                        return result;
                    }
                }
            }
            if !self.next_frame()? {
                return Ok(0);
            }
        }
    }
}

/// A reader that can look ahead a few bytes without consuming them.
struct Peek<R> {
    inner: R,
    /// Bytes read ahead, served before `inner`'s.
    pending: Vec<u8>,
}

impl<R: Read> Peek<R> {
    /// Up to `n` next bytes (fewer only at the end of the stream).
    fn peek(&mut self, n: usize) -> io::Result<&[u8]> {
        while self.pending.len() < n {
            let mut byte = [0u8; 64];
            let want = (n - self.pending.len()).min(byte.len());
            match self.inner.read(&mut byte[..want]) {
                Ok(0) => break,
                Ok(got) => self.pending.extend_from_slice(&byte[..got]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(&self.pending[..self.pending.len().min(n)])
    }
}

impl<R: Read> Read for Peek<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pending.is_empty() {
            return self.inner.read(buf);
        }
        let n = self.pending.len().min(buf.len());
        buf[..n].copy_from_slice(&self.pending[..n]);
        self.pending.drain(..n);
        Ok(n)
    }
}

/// Copies a file's `size` bytes of data from the archive, telling the
/// archive's errors (a stream error) from the file's (ENOSPC, EIO: an OS error).
fn copy_data(
    entry: &mut impl Read,
    file: &mut File,
    size: u64,
    path: &str,
) -> Result<(), UnpackError> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut copied = 0u64;
    loop {
        let n = match entry.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(UnpackError::Stream(io::Error::new(
                    e.kind(),
                    format!("{path}: {e}"),
                )));
            }
        };
        file.write_all(&buf[..n])
            .map_err(|source| UnpackError::Os {
                path: path.to_owned(),
                op: "writing file",
                source,
            })?;
        copied += n as u64;
    }
    if copied != size {
        return Err(UnpackError::Stream(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("{path}: archive ends inside the file's data"),
        )));
    }
    Ok(())
}

/// Unpacking state: the root fd and the directory mtimes set at the end.
struct Unpacker {
    root: RawFd,
    is_root: bool,
    /// Directories (as path components) and their mtimes, applied after every
    /// entry is written since writing into a directory changes its mtime.
    dir_times: Vec<(Vec<Vec<u8>>, TimeSpec)>,
}

/// An entry's metadata, from its header and PAX records.
struct Meta {
    uid: libc::uid_t,
    gid: libc::gid_t,
    mode: libc::mode_t,
    mtime: TimeSpec,
    xattrs: Vec<(CString, Vec<u8>)>,
}

impl Unpacker {
    fn entry<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        opts: &UnpackOptions,
    ) -> Result<(), UnpackError> {
        let raw_path = entry.path_bytes().into_owned();
        let path = String::from_utf8_lossy(&raw_path).into_owned();
        let kind = entry.header().entry_type();
        if matches!(kind, EntryType::XGlobalHeader) {
            // Global PAX records (a comment, a charset) say nothing we use.
            return Ok(());
        }
        if !matches!(
            kind,
            EntryType::Regular
                | EntryType::Continuous
                | EntryType::Directory
                | EntryType::Symlink
                | EntryType::Link
                | EntryType::Char
                | EntryType::Block
                | EntryType::Fifo
        ) {
            // Sparse files (whose data would need expanding), GNU volume and
            // multi-volume headers: nothing a layer builder writes.
            return Err(UnpackError::Unsupported {
                path,
                kind: kind.as_byte(),
            });
        }
        let size = entry.size();
        if size > opts.max_total_bytes {
            return Err(UnpackError::EntryTooLarge {
                path,
                size,
                limit: opts.max_total_bytes,
            });
        }
        let unsafe_entry = |reason: &str| UnpackError::Unsafe {
            path: path.clone(),
            reason: reason.to_owned(),
        };
        let mut components = clean_path(&raw_path).map_err(unsafe_entry)?;
        let meta = self.meta(entry, &path)?;

        let Some(name) = components.pop() else {
            // The layer root itself ("./" or "/"): its metadata is the merged
            // root's when this is the top layer.
            if kind != EntryType::Directory {
                return Err(unsafe_entry("the layer root can only be a directory"));
            }
            let fd = self.dup_root(&path)?;
            self.apply_meta(&fd, &meta, &path)?;
            self.dir_times.push((Vec::new(), meta.mtime));
            return Ok(());
        };
        let parent = self.open_dirs(&components, true, &path)?;
        let os = |op, e: Errno| UnpackError::Os {
            path: path.clone(),
            op,
            source: e.into(),
        };

        if let Some(hidden) = name.strip_prefix(b".wh.") {
            if hidden.starts_with(b".wh.") {
                if hidden == b".wh..opq" {
                    set_xattr(parent.as_raw_fd(), c"trusted.overlay.opaque", b"y", false)
                        .map_err(|e| os("setting trusted.overlay.opaque", e))?;
                }
                // Other `.wh..wh.` names are aufs bookkeeping (hardlink dirs):
                // not content.
                return Ok(());
            }
            if hidden.is_empty() || hidden == b"." || hidden == b".." {
                return Err(unsafe_entry("whiteout of no name"));
            }
            let hidden = OsStr::from_bytes(hidden);
            make_room(parent.as_raw_fd(), hidden, false).map_err(|e| os("replacing", e))?;
            nix::sys::stat::mknodat(
                Some(parent.as_raw_fd()),
                hidden,
                SFlag::S_IFCHR,
                Mode::empty(),
                nix::sys::stat::makedev(0, 0),
            )
            .map_err(|e| os("creating whiteout", e))?;
            nix::unistd::fchownat(
                Some(parent.as_raw_fd()),
                hidden,
                Some(Uid::from_raw(meta.uid)),
                Some(Gid::from_raw(meta.gid)),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(|e| os("chown", e))?;
            return Ok(());
        }

        let dirfd = parent.as_raw_fd();
        let name_os = OsStr::from_bytes(&name);
        match kind {
            EntryType::Regular | EntryType::Continuous => {
                make_room(dirfd, name_os, false).map_err(|e| os("replacing", e))?;
                let fd = nix::fcntl::openat(
                    Some(dirfd),
                    name_os,
                    OFlag::O_WRONLY
                        | OFlag::O_CREAT
                        | OFlag::O_EXCL
                        | OFlag::O_NOFOLLOW
                        | OFlag::O_CLOEXEC,
                    Mode::from_bits_truncate(0o600),
                )
                .map_err(|e| os("creating file", e))?;
                // SAFETY: `openat` just returned this fd and nothing else owns it.
                let mut file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
                copy_data(entry, &mut file, size, &path)?;
                self.apply_meta(&OwnedFd::from(file), &meta, &path)?;
            }
            EntryType::Directory => {
                let existed = make_room(dirfd, name_os, true).map_err(|e| os("replacing", e))?;
                if !existed {
                    nix::sys::stat::mkdirat(Some(dirfd), name_os, Mode::from_bits_truncate(0o700))
                        .map_err(|e| os("creating directory", e))?;
                }
                let fd = open_dir_at(dirfd, name_os).map_err(|e| os("opening directory", e))?;
                self.apply_meta(&fd, &meta, &path)?;
                components.push(name);
                self.dir_times.push((components, meta.mtime));
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| unsafe_entry("symlink without a target"))?
                    .into_owned();
                if target.len() >= PATH_MAX || target.contains(&0) {
                    return Err(unsafe_entry("symlink target too long or has a NUL"));
                }
                make_room(dirfd, name_os, false).map_err(|e| os("replacing", e))?;
                nix::unistd::symlinkat(OsStr::from_bytes(&target), Some(dirfd), name_os)
                    .map_err(|e| os("creating symlink", e))?;
                self.apply_meta_at(dirfd, name_os, &meta, false)
                    .map_err(|(op, e)| os(op, e))?;
            }
            EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| unsafe_entry("hardlink without a target"))?
                    .into_owned();
                let mut target = clean_path(&target)
                    .map_err(|reason| unsafe_entry(&format!("hardlink target: {reason}")))?;
                let Some(target_name) = target.pop() else {
                    return Err(unsafe_entry("hardlink to the layer root"));
                };
                let target_parent = self.open_dirs(&target, false, &path)?;
                if target == components && target_name == name {
                    // A link to itself: tar leaves the file as it is.
                    return Ok(());
                }
                make_room(dirfd, name_os, false).map_err(|e| os("replacing", e))?;
                // No AT_SYMLINK_FOLLOW: a link to a symlink links the symlink
                // itself, never what it points at.
                nix::unistd::linkat(
                    Some(target_parent.as_raw_fd()),
                    OsStr::from_bytes(&target_name),
                    Some(dirfd),
                    name_os,
                    AtFlags::empty(),
                )
                .map_err(|e| os("creating hardlink", e))?;
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let sflag = match kind {
                    EntryType::Char => SFlag::S_IFCHR,
                    EntryType::Block => SFlag::S_IFBLK,
                    _ => SFlag::S_IFIFO,
                };
                if sflag != SFlag::S_IFIFO && !self.is_root {
                    return Err(UnpackError::DeviceNeedsRoot { path });
                }
                let header = entry.header();
                let major = header.device_major().ok().flatten().unwrap_or(0);
                let minor = header.device_minor().ok().flatten().unwrap_or(0);
                make_room(dirfd, name_os, false).map_err(|e| os("replacing", e))?;
                nix::sys::stat::mknodat(
                    Some(dirfd),
                    name_os,
                    sflag,
                    Mode::empty(),
                    nix::sys::stat::makedev(major.into(), minor.into()),
                )
                .map_err(|e| os("mknod", e))?;
                self.apply_meta_at(dirfd, name_os, &meta, true)
                    .map_err(|(op, e)| os(op, e))?;
            }
            // Refused above.
            _ => {}
        }
        Ok(())
    }

    /// Reads the entry's ownership, mode, mtime (PAX's, with its fraction, when
    /// present) and the xattrs we restore.
    fn meta<R: Read>(
        &self,
        entry: &mut tar::Entry<'_, R>,
        path: &str,
    ) -> Result<Meta, UnpackError> {
        let header = entry.header();
        let bad = |what: &str| UnpackError::Unsafe {
            path: path.to_owned(),
            reason: format!("bad {what} in header"),
        };
        // tar merges PAX uid/gid into the header already.
        let uid = header
            .uid()
            .ok()
            .and_then(|u| u.try_into().ok())
            .ok_or_else(|| bad("uid"))?;
        let gid = header
            .gid()
            .ok()
            .and_then(|g| g.try_into().ok())
            .ok_or_else(|| bad("gid"))?;
        let mode = header.mode().map_err(|_| bad("mode"))? & 0o7777;
        let mut mtime = (
            i64::try_from(header.mtime().map_err(|_| bad("mtime"))?).unwrap_or(i64::MAX),
            0i64,
        );
        let mut xattrs = Vec::new();
        if let Some(pax) = entry.pax_extensions().map_err(UnpackError::Stream)? {
            for record in pax {
                let record = record.map_err(|_| bad("PAX record"))?;
                let key = record.key_bytes();
                if key == b"mtime" {
                    if let Some(t) = std::str::from_utf8(record.value_bytes())
                        .ok()
                        .and_then(parse_pax_time)
                    {
                        mtime = t;
                    }
                } else if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                    // Only what a container image legitimately carries: file
                    // capabilities and user xattrs. trusted.* (overlay's own
                    // whiteout and redirect markers) and security.selinux (the
                    // host's policy) must not come from a layer.
                    if name == b"security.capability" || name.starts_with(b"user.") {
                        if let Ok(name) = CString::new(name) {
                            xattrs.push((name, record.value_bytes().to_vec()));
                        }
                    }
                }
            }
        }
        Ok(Meta {
            uid,
            gid,
            mode: mode as libc::mode_t,
            mtime: TimeSpec::new(
                libc::time_t::try_from(mtime.0).unwrap_or(libc::time_t::MAX),
                mtime.1 as libc::c_long,
            ),
            xattrs,
        })
    }

    /// Ownership, then mode (chown clears setuid/setgid), then xattrs (chown
    /// clears security.capability), then the mtime, on an open file or directory.
    fn apply_meta(&self, fd: &OwnedFd, meta: &Meta, path: &str) -> Result<(), UnpackError> {
        let raw = fd.as_raw_fd();
        let os = |op, e: Errno| UnpackError::Os {
            path: path.to_owned(),
            op,
            source: e.into(),
        };
        nix::unistd::fchown(
            raw,
            Some(Uid::from_raw(meta.uid)),
            Some(Gid::from_raw(meta.gid)),
        )
        .map_err(|e| os("chown", e))?;
        nix::sys::stat::fchmod(raw, Mode::from_bits_truncate(meta.mode))
            .map_err(|e| os("chmod", e))?;
        for (name, value) in &meta.xattrs {
            set_xattr(raw, name, value, true).map_err(|e| os("setting xattr", e))?;
        }
        nix::sys::stat::futimens(raw, &meta.mtime, &meta.mtime).map_err(|e| os("utimens", e))?;
        Ok(())
    }

    /// Ownership, mode (when `chmod`) and mtime of a symlink or device, by name
    /// in its directory, never following it. Xattrs are not restored on these:
    /// Linux refuses user.* on them and capabilities only mean something on
    /// regular files.
    fn apply_meta_at(
        &self,
        dirfd: RawFd,
        name: &OsStr,
        meta: &Meta,
        chmod: bool,
    ) -> Result<(), (&'static str, Errno)> {
        nix::unistd::fchownat(
            Some(dirfd),
            name,
            Some(Uid::from_raw(meta.uid)),
            Some(Gid::from_raw(meta.gid)),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(|e| ("chown", e))?;
        if chmod {
            // A device or FIFO cannot be a symlink (we just made it), so
            // fchmodat's following of the final component is harmless here.
            nix::sys::stat::fchmodat(
                Some(dirfd),
                name,
                Mode::from_bits_truncate(meta.mode),
                nix::sys::stat::FchmodatFlags::FollowSymlink,
            )
            .map_err(|e| ("chmod", e))?;
        }
        nix::sys::stat::utimensat(
            Some(dirfd),
            name,
            &meta.mtime,
            &meta.mtime,
            UtimensatFlags::NoFollowSymlink,
        )
        .map_err(|e| ("utimens", e))?;
        Ok(())
    }

    fn dup_root(&self, path: &str) -> Result<OwnedFd, UnpackError> {
        open_dir_at(self.root, OsStr::new(".")).map_err(|e| UnpackError::Os {
            path: path.to_owned(),
            op: "opening the layer root",
            source: e.into(),
        })
    }

    /// Opens the directory `components` under the root, one component at a
    /// time without following symlinks; missing ones are created (mode 0755, as
    /// tar does for parents the archive does not list) when `create`.
    fn open_dirs(
        &self,
        components: &[Vec<u8>],
        create: bool,
        path: &str,
    ) -> Result<OwnedFd, UnpackError> {
        let mut dir = self.dup_root(path)?;
        for component in components {
            let name = OsStr::from_bytes(component);
            let opened = match open_dir_at(dir.as_raw_fd(), name) {
                Err(Errno::ENOENT) if create => {
                    match nix::sys::stat::mkdirat(
                        Some(dir.as_raw_fd()),
                        name,
                        Mode::from_bits_truncate(0o755),
                    ) {
                        Ok(()) | Err(Errno::EEXIST) => {}
                        Err(e) => {
                            return Err(UnpackError::Os {
                                path: path.to_owned(),
                                op: "creating parent directory",
                                source: e.into(),
                            });
                        }
                    }
                    open_dir_at(dir.as_raw_fd(), name)
                }
                other => other,
            };
            dir = match opened {
                Ok(fd) => fd,
                Err(Errno::ELOOP | Errno::ENOTDIR) => {
                    return Err(UnpackError::Unsafe {
                        path: path.to_owned(),
                        reason: format!(
                            "{:?} is a symlink or not a directory",
                            String::from_utf8_lossy(component)
                        ),
                    });
                }
                Err(e) => {
                    return Err(UnpackError::Os {
                        path: path.to_owned(),
                        op: "opening parent directory",
                        source: e.into(),
                    });
                }
            };
        }
        Ok(dir)
    }

    /// Sets the directories' mtimes, now that nothing more is written into them.
    fn finish(&mut self) -> Result<(), UnpackError> {
        for (components, mtime) in std::mem::take(&mut self.dir_times) {
            let path = String::from_utf8_lossy(&components.join(&b'/')).into_owned();
            // A directory a later entry replaced (by a file, say) is gone: its
            // mtime went with it.
            let Ok(fd) = self.open_dirs(&components, false, &path) else {
                continue;
            };
            nix::sys::stat::futimens(fd.as_raw_fd(), &mtime, &mtime).map_err(|e| {
                UnpackError::Os {
                    path,
                    op: "utimens",
                    source: e.into(),
                }
            })?;
        }
        Ok(())
    }
}

/// Opens `name` in `dirfd` as a directory, failing (ELOOP/ENOTDIR) on a
/// symlink or anything else.
fn open_dir_at(dirfd: RawFd, name: &OsStr) -> Result<OwnedFd, Errno> {
    let fd = nix::fcntl::openat(
        Some(dirfd),
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    // SAFETY: `openat` just returned this fd and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Clears `name` in `dirfd` for a new entry, with tar's semantics: an existing
/// non-directory is removed; an existing directory is kept when the new entry
/// is a directory too (returns true) and otherwise removed only if empty.
fn make_room(dirfd: RawFd, name: &OsStr, new_is_dir: bool) -> Result<bool, Errno> {
    let stat: FileStat =
        match nix::sys::stat::fstatat(Some(dirfd), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(stat) => stat,
            Err(Errno::ENOENT) => return Ok(false),
            Err(e) => return Err(e),
        };
    let is_dir = stat.st_mode & libc::S_IFMT == libc::S_IFDIR;
    if is_dir && new_is_dir {
        return Ok(true);
    }
    let flag = if is_dir {
        UnlinkatFlags::RemoveDir
    } else {
        UnlinkatFlags::NoRemoveDir
    };
    nix::unistd::unlinkat(Some(dirfd), name, flag)?;
    Ok(false)
}

/// Sets an xattr on an open file. With `tolerant`, a filesystem that does not
/// support it (ENOTSUP) is not an error: the file is still usable.
fn set_xattr(fd: RawFd, name: &std::ffi::CStr, value: &[u8], tolerant: bool) -> Result<(), Errno> {
    // SAFETY: `name` is NUL-terminated, `value` is valid for `value.len()`
    // bytes, and `fd` is an open descriptor the caller owns.
    let rc = unsafe { libc::fsetxattr(fd, name.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
    match Errno::result(rc) {
        Ok(_) => Ok(()),
        Err(Errno::ENOTSUP) if tolerant => Ok(()),
        Err(e) => Err(e),
    }
}

/// Splits an entry path into its components, relative to the layer root: a
/// leading `/` and `.` components are dropped, `..` removes the previous
/// component and is refused above the root.
fn clean_path(raw: &[u8]) -> Result<Vec<Vec<u8>>, &'static str> {
    if raw.len() >= PATH_MAX {
        return Err("path longer than PATH_MAX");
    }
    if raw.contains(&0) {
        return Err("path contains a NUL byte");
    }
    let mut components: Vec<Vec<u8>> = Vec::new();
    for component in raw.split(|&b| b == b'/') {
        match component {
            b"" | b"." => {}
            b".." => {
                if components.pop().is_none() {
                    return Err("path escapes the layer root with ..");
                }
            }
            _ => components.push(component.to_vec()),
        }
    }
    Ok(components)
}

/// Parses a PAX time (`seconds[.fraction]`, possibly negative) into seconds and
/// nanoseconds.
fn parse_pax_time(value: &str) -> Option<(i64, i64)> {
    let (secs, frac) = value.split_once('.').unwrap_or((value, ""));
    let secs: i64 = secs.parse().ok()?;
    let mut nanos: i64 = 0;
    for (i, digit) in frac.bytes().take(9).enumerate() {
        if !digit.is_ascii_digit() {
            return None;
        }
        nanos += i64::from(digit - b'0') * 10i64.pow(8 - i as u32);
    }
    if value.starts_with('-') && nanos > 0 {
        // "-1.5" is 1.5 s before the epoch: -2 s + 0.5 s.
        return Some((secs - 1, 1_000_000_000 - nanos));
    }
    Some((secs, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};

    /// A scratch directory with an empty `layer` and an `outside` holding one
    /// file that hostile layers must not reach; removed on drop.
    struct Scratch(crate::testutil::TempDir);

    impl Scratch {
        fn new() -> Self {
            let dir = crate::testutil::TempDir::new("unpack");
            std::fs::create_dir_all(dir.path().join("layer")).unwrap();
            std::fs::create_dir_all(dir.path().join("outside")).unwrap();
            std::fs::write(dir.path().join("outside/secret"), b"untouched").unwrap();
            Self(dir)
        }
        fn path(&self) -> &Path {
            self.0.path()
        }
        fn layer(&self) -> PathBuf {
            self.path().join("layer")
        }
        fn outside(&self) -> PathBuf {
            self.path().join("outside")
        }
        /// The outside directory is exactly as it was created.
        fn assert_outside_untouched(&self) {
            let names: Vec<_> = std::fs::read_dir(self.outside())
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert_eq!(names, vec![OsStr::new("secret").to_owned()]);
            assert_eq!(
                std::fs::read(self.outside().join("secret")).unwrap(),
                b"untouched"
            );
        }
    }

    /// Builds tars with raw headers: the names and link names are written as
    /// given, so hostile ones (`..`, absolute) are possible.
    struct Tar(tar::Builder<Vec<u8>>);

    impl Tar {
        fn new() -> Self {
            Self(tar::Builder::new(Vec::new()))
        }

        fn entry(&mut self, kind: EntryType, name: &str, link: &str, data: &[u8]) -> &mut Self {
            self.full(kind, name, link, data, 0o644, 0, 0, 1_600_000_000)
        }

        #[allow(clippy::too_many_arguments)]
        fn full(
            &mut self,
            kind: EntryType,
            name: &str,
            link: &str,
            data: &[u8],
            mode: u32,
            uid: u64,
            gid: u64,
            mtime: u64,
        ) -> &mut Self {
            let mut header = tar::Header::new_gnu();
            {
                let old = header.as_old_mut();
                old.name[..name.len()].copy_from_slice(name.as_bytes());
                old.linkname[..link.len()].copy_from_slice(link.as_bytes());
            }
            header.set_entry_type(kind);
            header.set_size(data.len() as u64);
            header.set_mode(mode);
            header.set_uid(uid);
            header.set_gid(gid);
            header.set_mtime(mtime);
            header.set_cksum();
            self.0.append(&header, data).unwrap();
            self
        }

        fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
            self.entry(EntryType::Regular, name, "", data)
        }

        fn dir(&mut self, name: &str) -> &mut Self {
            self.full(
                EntryType::Directory,
                name,
                "",
                b"",
                0o755,
                0,
                0,
                1_600_000_000,
            )
        }

        fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
            self.entry(EntryType::Symlink, name, target, b"")
        }

        fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
            self.entry(EntryType::Link, name, target, b"")
        }

        /// A PAX header whose records apply to the next entry.
        fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Self {
            let mut data = Vec::new();
            for (key, value) in records {
                let body_len = key.len() + value.len() + 3; // ' ', '=', '\n'
                let mut len = body_len + 1;
                while len.to_string().len() + body_len != len {
                    len = len.to_string().len() + body_len;
                }
                data.extend_from_slice(format!("{len} {key}=").as_bytes());
                data.extend_from_slice(value);
                data.push(b'\n');
            }
            self.entry(EntryType::XHeader, "PaxHeader", "", &data)
        }

        fn bytes(&mut self) -> Vec<u8> {
            let builder = std::mem::replace(&mut self.0, tar::Builder::new(Vec::new()));
            builder.into_inner().unwrap()
        }
    }

    fn run(tar: &[u8], dir: &Path) -> Result<UnpackStats, UnpackError> {
        unpack(tar, dir, &UnpackOptions::default())
    }

    fn refused(result: Result<UnpackStats, UnpackError>) -> String {
        match result {
            Err(e @ UnpackError::Unsafe { .. }) => e.to_string(),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    }

    fn zstd(bytes: &[u8]) -> Vec<u8> {
        ruzstd::encoding::compress_to_vec(bytes, ruzstd::encoding::CompressionLevel::Fastest)
    }

    fn lstat(path: &Path) -> std::fs::Metadata {
        std::fs::symlink_metadata(path).unwrap()
    }

    fn xattr(path: &Path, name: &std::ffi::CStr) -> Option<Vec<u8>> {
        let path = CString::new(path.as_os_str().as_bytes()).unwrap();
        let mut buf = vec![0u8; 256];
        // SAFETY: both strings are NUL-terminated and buf is valid for its length.
        let n = unsafe {
            libc::lgetxattr(
                path.as_ptr(),
                name.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        (n >= 0).then(|| buf[..n as usize].to_vec())
    }

    #[test]
    fn ordinary_entries_with_metadata_and_diff_id() {
        let s = Scratch::new();
        let cap =
            b"\x01\x00\x00\x02\x00\x04\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00";
        let tar = Tar::new()
            .full(
                EntryType::Directory,
                "./",
                "",
                b"",
                0o755,
                0,
                0,
                1_500_000_000,
            )
            .full(
                EntryType::Directory,
                "etc/",
                "",
                b"",
                0o750,
                1000,
                1001,
                1_500_000_001,
            )
            .pax(&[
                ("SCHILY.xattr.user.note", b"hello"),
                ("SCHILY.xattr.security.capability", cap),
                ("SCHILY.xattr.trusted.overlay.opaque", b"y"),
                ("mtime", b"1500000002.25"),
            ])
            .full(
                EntryType::Regular,
                "etc/tool",
                "",
                b"binary",
                0o4755,
                1000,
                1001,
                7,
            )
            .full(
                EntryType::Symlink,
                "etc/link",
                "../tmp/nowhere",
                b"",
                0o777,
                1000,
                1001,
                9,
            )
            .hardlink("etc/hard", "etc/tool")
            .full(EntryType::Fifo, "fifo", "", b"", 0o640, 5, 6, 1_500_000_003)
            .dir("dev")
            .entry(EntryType::Char, "dev/null", "", b"")
            .entry(EntryType::Block, "dev/loop0", "", b"")
            .full(
                EntryType::Directory,
                "sticky",
                "",
                b"",
                0o1777,
                0,
                0,
                1_500_000_004,
            )
            .file("sticky/inside", b"x")
            .bytes();
        // Device numbers: set on the raw bytes' headers via a second tar.
        let mut with_dev = Tar::new();
        for entry in tar::Archive::new(&tar[..]).entries().unwrap() {
            let mut entry = entry.unwrap();
            let mut header = entry.header().clone();
            if header.entry_type() == EntryType::Char {
                header.set_device_major(1).unwrap();
                header.set_device_minor(3).unwrap();
            }
            if header.entry_type() == EntryType::Block {
                header.set_device_major(7).unwrap();
                header.set_device_minor(0).unwrap();
            }
            header.set_cksum();
            let mut data = Vec::new();
            entry.read_to_end(&mut data).unwrap();
            if header.entry_type() != EntryType::XHeader {
                // The PAX records were merged into the entry: rebuild them.
                if let Some(pax) = entry.pax_extensions().unwrap() {
                    let records: Vec<(String, Vec<u8>)> = pax
                        .map(|r| {
                            let r = r.unwrap();
                            (r.key().unwrap().to_owned(), r.value_bytes().to_vec())
                        })
                        .collect();
                    let refs: Vec<(&str, &[u8])> =
                        records.iter().map(|(k, v)| (k.as_str(), &v[..])).collect();
                    with_dev.pax(&refs);
                }
                with_dev.0.append(&header, &data[..]).unwrap();
            }
        }
        let tar = with_dev.bytes();

        let layer = s.layer();
        let stats = run(&tar, &layer).unwrap();
        assert_eq!(stats.diff_id, Digest::of(&tar));
        assert_eq!(stats.bytes, tar.len() as u64);
        assert_eq!(stats.entries, 11);
        assert_eq!(stats.compression, Compression::None);

        let etc = lstat(&layer.join("etc"));
        assert!(etc.is_dir());
        assert_eq!(
            (etc.uid(), etc.gid(), etc.mode() & 0o7777),
            (1000, 1001, 0o750)
        );
        assert_eq!(
            etc.mtime(),
            1_500_000_001,
            "dir mtime set after its contents"
        );

        let tool = lstat(&layer.join("etc/tool"));
        assert_eq!(std::fs::read(layer.join("etc/tool")).unwrap(), b"binary");
        assert_eq!((tool.uid(), tool.gid()), (1000, 1001));
        assert_eq!(tool.mode() & 0o7777, 0o4755, "setuid survives the chown");
        assert_eq!(
            (tool.mtime(), tool.mtime_nsec()),
            (1_500_000_002, 250_000_000)
        );
        assert_eq!(tool.nlink(), 2);
        assert_eq!(
            xattr(&layer.join("etc/tool"), c"user.note").unwrap(),
            b"hello"
        );
        assert_eq!(
            xattr(&layer.join("etc/tool"), c"security.capability").unwrap(),
            cap
        );
        assert_eq!(
            xattr(&layer.join("etc/tool"), c"trusted.overlay.opaque"),
            None
        );
        assert_eq!(lstat(&layer.join("etc/hard")).ino(), tool.ino());

        let link = lstat(&layer.join("etc/link"));
        assert!(link.file_type().is_symlink());
        assert_eq!((link.uid(), link.mtime()), (1000, 9));
        assert_eq!(
            std::fs::read_link(layer.join("etc/link")).unwrap(),
            Path::new("../tmp/nowhere")
        );

        let fifo = lstat(&layer.join("fifo"));
        assert!(fifo.file_type().is_fifo());
        assert_eq!(
            (fifo.uid(), fifo.gid(), fifo.mode() & 0o7777),
            (5, 6, 0o640)
        );
        let null = lstat(&layer.join("dev/null"));
        assert!(null.file_type().is_char_device());
        assert_eq!(null.rdev(), nix::sys::stat::makedev(1, 3));
        let loop0 = lstat(&layer.join("dev/loop0"));
        assert!(loop0.file_type().is_block_device());
        assert_eq!(loop0.rdev(), nix::sys::stat::makedev(7, 0));

        let sticky = lstat(&layer.join("sticky"));
        assert_eq!(sticky.mode() & 0o7777, 0o1777);
        assert_eq!(sticky.mtime(), 1_500_000_004);
        let root = lstat(&layer);
        assert_eq!((root.mode() & 0o7777, root.mtime()), (0o755, 1_500_000_000));
        s.assert_outside_untouched();
    }

    #[test]
    fn compressed_layers_give_the_same_tree_and_diff_id() {
        let tar = Tar::new().dir("a").file("a/b", &vec![7u8; 100_000]).bytes();
        let mut two_frames = zstd(&tar[..3000]);
        // A skippable frame between the two, as zstd:chunked writes metadata.
        two_frames.extend_from_slice(&[0x50, 0x2a, 0x4d, 0x18, 3, 0, 0, 0, 1, 2, 3]);
        two_frames.extend_from_slice(&zstd(&tar[3000..]));
        let mut two_members = gzip(&tar[..1000]);
        two_members.extend_from_slice(&gzip(&tar[1000..]));
        let mut skippable_first = vec![0x5f, 0x2a, 0x4d, 0x18, 2, 0, 0, 0, 9, 9];
        skippable_first.extend_from_slice(&zstd(&tar));
        for (blob, kind) in [
            (skippable_first, Compression::Zstd),
            (tar.clone(), Compression::None),
            (gzip(&tar), Compression::Gzip),
            (two_members, Compression::Gzip),
            (zstd(&tar), Compression::Zstd),
            (two_frames, Compression::Zstd),
        ] {
            let s = Scratch::new();
            let stats = run(&blob, &s.layer()).unwrap();
            assert_eq!(stats.compression, kind);
            assert_eq!(stats.diff_id, Digest::of(&tar));
            assert_eq!(
                std::fs::read(s.layer().join("a/b")).unwrap(),
                vec![7u8; 100_000]
            );
        }
        assert_eq!(
            Compression::from_media_type("application/vnd.oci.image.layer.v1.tar+zstd"),
            Some(Compression::Zstd)
        );
        assert_eq!(
            Compression::from_media_type("application/vnd.docker.image.rootfs.diff.tar.gzip"),
            Some(Compression::Gzip)
        );
        assert_eq!(Compression::from_media_type("application/x-bzip2"), None);
        assert_eq!(Compression::detect(b""), Compression::None);
    }

    #[test]
    fn whiteouts_become_overlay_whiteouts() {
        let s = Scratch::new();
        let tar = Tar::new()
            .dir("usr")
            .file("usr/.wh.gone", b"")
            .file("opaque/.wh..wh..opq", b"")
            .file("opaque/kept", b"k")
            .file(".wh..wh.plnk", b"")
            .bytes();
        run(&tar, &s.layer()).unwrap();
        let gone = lstat(&s.layer().join("usr/gone"));
        assert!(gone.file_type().is_char_device());
        assert_eq!(gone.rdev(), 0);
        assert!(!s.layer().join("usr/.wh.gone").exists());
        assert_eq!(
            xattr(&s.layer().join("opaque"), c"trusted.overlay.opaque").unwrap(),
            b"y"
        );
        assert!(!s.layer().join("opaque/.wh..wh..opq").exists());
        assert!(s.layer().join("opaque/kept").exists());
        assert!(!s.layer().join(".wh..wh.plnk").exists());
        assert!(!s.layer().join("usr/.wh.gone").exists());
        for bad in [".wh.", "a/.wh..."] {
            let s = Scratch::new();
            refused(run(&Tar::new().file(bad, b"").bytes(), &s.layer()));
        }
    }

    #[test]
    fn absolute_paths_are_taken_relative_to_the_layer_root() {
        let s = Scratch::new();
        let outside = s.outside().join("abs");
        let name = outside.to_str().unwrap();
        run(&Tar::new().file(name, b"inside").bytes(), &s.layer()).unwrap();
        assert_eq!(
            std::fs::read(s.layer().join(name.trim_start_matches('/'))).unwrap(),
            b"inside"
        );
        s.assert_outside_untouched();
    }

    #[test]
    fn dotdot_escaping_the_root_is_refused() {
        let s = Scratch::new();
        // The layer is two levels below the scratch dir: ../outside/x would hit it.
        for name in ["../outside/x", "a/../../outside/x", "/../outside/x", ".."] {
            let why = refused(run(&Tar::new().file(name, b"evil").bytes(), &s.layer()));
            assert!(why.contains(".."), "{why}");
        }
        s.assert_outside_untouched();
        // `..` that stays inside is resolved lexically.
        run(&Tar::new().file("a/../b", b"ok").bytes(), &s.layer()).unwrap();
        assert_eq!(std::fs::read(s.layer().join("b")).unwrap(), b"ok");
    }

    #[test]
    fn writing_through_a_symlink_is_refused() {
        let s = Scratch::new();
        let outside = s.outside();
        for target in [outside.to_str().unwrap(), "../outside", "/"] {
            let layer = s.path().join(format!("l{}", target.len()));
            std::fs::create_dir(&layer).unwrap();
            let tar = Tar::new()
                .symlink("evil", target)
                .file("evil/secret", b"pwned")
                .bytes();
            let why = refused(run(&tar, &layer));
            assert!(why.contains("symlink"), "{why}");
            // An entry at the symlink's own name replaces the symlink.
            let tar = Tar::new()
                .symlink("evil", target)
                .file("evil", b"replaced")
                .symlink("evil2", target)
                .dir("evil2")
                .file("evil2/x", b"inside")
                .bytes();
            let replaced = s.path().join(format!("r{}", target.len()));
            std::fs::create_dir(&replaced).unwrap();
            run(&tar, &replaced).unwrap();
            assert_eq!(std::fs::read(replaced.join("evil")).unwrap(), b"replaced");
            assert!(lstat(&replaced.join("evil2")).is_dir());
            // Nor as a hardlink's or a directory's parent.
            let tar = Tar::new().symlink("evil", target).dir("evil/sub").bytes();
            refused(run(&tar, &layer));
        }
        s.assert_outside_untouched();
    }

    #[test]
    fn a_directory_swapped_for_a_symlink_mid_archive_is_not_followed() {
        let s = Scratch::new();
        let tar = Tar::new().dir("a").file("a/first", b"1").bytes();
        run(&tar, &s.layer()).unwrap();
        // Non-empty directory: a symlink cannot replace it (tar semantics).
        let s2 = Scratch::new();
        let tar = Tar::new()
            .dir("a")
            .file("a/first", b"1")
            .symlink("a", s2.outside().to_str().unwrap())
            .bytes();
        assert!(matches!(
            run(&tar, &s2.layer()),
            Err(UnpackError::Os {
                op: "replacing",
                ..
            })
        ));
        // Empty directory: replaced by the symlink, which is then not followed.
        let tar = Tar::new()
            .dir("a")
            .symlink("a", s.outside().to_str().unwrap())
            .file("a/secret", b"pwned")
            .bytes();
        let s3 = Scratch::new();
        refused(run(&tar, &s3.layer()));
        assert!(lstat(&s3.layer().join("a")).file_type().is_symlink());
        s3.assert_outside_untouched();
        s2.assert_outside_untouched();
    }

    #[test]
    fn hardlinks_cannot_reach_outside() {
        let s = Scratch::new();
        // Escaping with ..: refused outright.
        let why = refused(run(
            &Tar::new().hardlink("link", "../outside/secret").bytes(),
            &s.layer(),
        ));
        assert!(why.contains("hardlink target"), "{why}");
        // Absolute: relative to the layer root, where there is no such file.
        let abs = s.outside().join("secret");
        let result = run(
            &Tar::new().hardlink("link", abs.to_str().unwrap()).bytes(),
            &s.layer(),
        );
        assert!(
            matches!(
                result,
                Err(UnpackError::Os { .. } | UnpackError::Unsafe { .. })
            ),
            "{result:?}"
        );
        assert!(!s.layer().join("link").exists());
        // Through a symlinked directory: refused.
        let tar = Tar::new()
            .symlink("out", s.outside().to_str().unwrap())
            .hardlink("link", "out/secret")
            .bytes();
        refused(run(&tar, &s.layer()));
        // To a symlink pointing outside: links the symlink itself, and a file
        // written at that name later replaces the link instead of writing out.
        let s2 = Scratch::new();
        let tar = Tar::new()
            .symlink("sym", abs.to_str().unwrap())
            .hardlink("hard", "sym")
            .file("hard", b"pwned")
            .bytes();
        run(&tar, &s2.layer()).unwrap();
        assert!(lstat(&s2.layer().join("sym")).file_type().is_symlink());
        assert_eq!(std::fs::read(s2.layer().join("hard")).unwrap(), b"pwned");
        let tar = Tar::new()
            .symlink("sym", abs.to_str().unwrap())
            .hardlink("hard", "sym")
            .bytes();
        let s3 = Scratch::new();
        run(&tar, &s3.layer()).unwrap();
        assert!(lstat(&s3.layer().join("hard")).file_type().is_symlink());
        s.assert_outside_untouched();
        s2.assert_outside_untouched();
        s3.assert_outside_untouched();
    }

    #[test]
    fn absurd_sizes_and_counts_are_refused() {
        let s = Scratch::new();
        // A header claiming 100 TB, with no data behind it.
        let mut header = tar::Header::new_gnu();
        header.set_path("huge").unwrap();
        header.set_size(100 << 40);
        header.set_entry_type(EntryType::Regular);
        header.set_cksum();
        let mut tar = header.as_bytes().to_vec();
        tar.extend_from_slice(&[0u8; 1024]);
        assert!(matches!(
            run(&tar, &s.layer()),
            Err(UnpackError::EntryTooLarge { size, .. }) if size == 100 << 40
        ));

        // A path longer than PATH_MAX (a GNU long name).
        let long = "d/".repeat(2100) + "f";
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(1);
        header.set_entry_type(EntryType::Regular);
        builder.append_data(&mut header, &long, &b"x"[..]).unwrap();
        let why = refused(run(&builder.into_inner().unwrap(), &s.layer()));
        assert!(why.contains("PATH_MAX"), "{why}");

        // Headers the tar crate would hold in memory, gigantic: a GNU long
        // name and a PAX record of 2 MiB each are refused before the entry
        // they describe; the same sizes as file data are fine.
        let big = vec![b'a'; 2 << 20];
        let too_large = |tar: &[u8]| {
            matches!(
                run(tar, &Scratch::new().layer()),
                Err(UnpackError::HeadersTooLarge {
                    limit: MAX_ENTRY_HEADERS
                })
            )
        };
        let long_name = Tar::new()
            .entry(EntryType::GNULongName, "././@LongLink", "", &big)
            .file("f", b"1")
            .bytes();
        assert!(too_large(&long_name));
        let pax = Tar::new().pax(&[("comment", &big)]).file("f", b"1").bytes();
        assert!(too_large(&pax));
        let data = Tar::new().file("f", &big).file(".wh.g", &big).bytes();
        run(&data, &Scratch::new().layer()).unwrap();

        let tar = Tar::new()
            .file("a", b"1")
            .file("b", b"2")
            .file("c", b"3")
            .bytes();
        let opts = UnpackOptions {
            max_entries: 2,
            ..UnpackOptions::default()
        };
        assert!(matches!(
            unpack(&tar[..], &Scratch::new().layer(), &opts),
            Err(UnpackError::TooManyEntries { limit: 2 })
        ));
        let opts = UnpackOptions {
            max_total_bytes: 2000,
            ..UnpackOptions::default()
        };
        assert!(matches!(
            unpack(&tar[..], &Scratch::new().layer(), &opts),
            Err(UnpackError::TooLarge { limit: 2000 })
        ));
        // A gzip bomb: small compressed, large uncompressed.
        let big = Tar::new().file("zeros", &vec![0u8; 1 << 20]).bytes();
        let opts = UnpackOptions {
            max_total_bytes: 100_000,
            ..UnpackOptions::default()
        };
        assert!(matches!(
            unpack(&gzip(&big)[..], &Scratch::new().layer(), &opts),
            Err(UnpackError::TooLarge { .. } | UnpackError::EntryTooLarge { .. })
        ));
    }

    #[test]
    fn later_entries_replace_earlier_ones() {
        let s = Scratch::new();
        let tar = Tar::new()
            .file("f", b"old")
            .file("f", b"new")
            .file("d", b"file first")
            .dir("d")
            .file("d/x", b"x")
            .symlink("s", "somewhere")
            .file("s", b"regular now")
            .dir("e")
            .file("e", b"empty dir replaced")
            .dir("d")
            .bytes();
        run(&tar, &s.layer()).unwrap();
        assert_eq!(std::fs::read(s.layer().join("f")).unwrap(), b"new");
        assert_eq!(std::fs::read(s.layer().join("d/x")).unwrap(), b"x");
        assert!(lstat(&s.layer().join("s")).is_file());
        assert_eq!(
            std::fs::read(s.layer().join("e")).unwrap(),
            b"empty dir replaced"
        );
        // A non-empty directory is not removed for a file.
        let tar = Tar::new()
            .dir("d")
            .file("d/x", b"x")
            .file("d", b"no")
            .bytes();
        assert!(run(&tar, &Scratch::new().layer()).is_err());
        // A file where a parent directory is needed.
        let tar = Tar::new().file("p", b"file").file("p/child", b"x").bytes();
        refused(run(&tar, &Scratch::new().layer()));
    }

    #[test]
    fn diff_id_is_checked() {
        let s = Scratch::new();
        let tar = Tar::new().file("a", b"1").bytes();
        let wrong = Digest::of(b"something else");
        let opts = UnpackOptions {
            expected_diff_id: Some(wrong),
            ..UnpackOptions::default()
        };
        match unpack(&gzip(&tar)[..], &s.layer(), &opts) {
            Err(UnpackError::DiffIdMismatch { expected, actual }) => {
                assert_eq!(expected, wrong);
                assert_eq!(actual, Digest::of(&tar));
            }
            other => panic!("{other:?}"),
        }
        let opts = UnpackOptions {
            expected_diff_id: Some(Digest::of(&tar)),
            ..UnpackOptions::default()
        };
        unpack(&gzip(&tar)[..], &Scratch::new().layer(), &opts).unwrap();
    }

    #[test]
    fn unpack_into_new_is_all_or_nothing() {
        let s = Scratch::new();
        let good = Tar::new().file("a", b"1").bytes();
        let dir = s.path().join("sha256-good");
        unpack_into_new(&good[..], &dir, &UnpackOptions::default()).unwrap();
        assert_eq!(std::fs::read(dir.join("a")).unwrap(), b"1");
        // Not over an existing layer.
        assert!(matches!(
            unpack_into_new(&good[..], &dir, &UnpackOptions::default()),
            Err(UnpackError::Destination { .. })
        ));

        let bad = Tar::new().file("a", b"1").file("../x", b"2").bytes();
        let dir = s.path().join("sha256-bad");
        refused(unpack_into_new(&bad[..], &dir, &UnpackOptions::default()));
        assert!(!dir.exists());
        let leftovers: Vec<_> = std::fs::read_dir(s.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.contains(".tmp-"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn broken_streams_are_errors_not_panics() {
        let tar = Tar::new()
            .dir("d")
            .pax(&[("SCHILY.xattr.user.a", b"b")])
            .file("d/f", &vec![1u8; 5000])
            .symlink("l", "d/f")
            .bytes();
        let gz = gzip(&tar);
        let zs = zstd(&tar);
        for blob in [&tar, &gz, &zs] {
            for cut in (0..blob.len()).step_by(97).chain([blob.len() - 1]) {
                let s = Scratch::new();
                // Some cuts fall at an entry boundary and read as a shorter
                // archive (tar ends at EOF): only panics and escapes matter.
                let _ = run(&blob[..cut], &s.layer());
            }
        }
        // A skippable frame claiming more than there is.
        let s = Scratch::new();
        assert!(
            run(
                &[0x50, 0x2a, 0x4d, 0x18, 0xff, 0xff, 0xff, 0xff, 0],
                &s.layer()
            )
            .is_err()
        );
        // Compressed streams cut short are errors.
        for blob in [&gz, &zs] {
            let s = Scratch::new();
            assert!(run(&blob[..blob.len() / 2], &s.layer()).is_err());
        }
        // Garbage, and garbage behind a valid magic.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut garbage = vec![0u8; 4096];
        for b in &mut garbage {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            *b = seed as u8;
        }
        for prefix in [&b""[..], &[0x1f, 0x8b], &[0x28, 0xb5, 0x2f, 0xfd]] {
            let mut blob = prefix.to_vec();
            blob.extend_from_slice(&garbage);
            let s = Scratch::new();
            assert!(run(&blob, &s.layer()).is_err());
        }
        // Flipped bytes inside a valid tar's headers.
        for at in (0..1536).step_by(31) {
            let mut blob = tar.clone();
            blob[at] ^= 0x5a;
            let _ = run(&blob, &Scratch::new().layer());
        }
        // An empty stream is an empty layer.
        let stats = run(b"", &Scratch::new().layer()).unwrap();
        assert_eq!((stats.entries, stats.diff_id), (0, Digest::of(b"")));
    }

    #[test]
    fn sparse_and_unknown_entries_are_unsupported() {
        let mut sparse = tar::Header::new_gnu();
        sparse.set_path("sparse").unwrap();
        sparse.set_entry_type(EntryType::GNUSparse);
        sparse.set_size(0);
        sparse.as_gnu_mut().unwrap().set_real_size(0);
        sparse.set_cksum();
        let mut volume = tar::Header::new_gnu();
        volume.set_path("volume").unwrap();
        volume.set_entry_type(EntryType::new(b'V'));
        volume.set_size(0);
        volume.set_cksum();
        for header in [sparse, volume] {
            let mut builder = tar::Builder::new(Vec::new());
            builder.append(&header, &b""[..]).unwrap();
            let tar = builder.into_inner().unwrap();
            let result = run(&tar, &Scratch::new().layer());
            assert!(
                matches!(result, Err(UnpackError::Unsupported { .. })),
                "{result:?}"
            );
        }
    }

    #[test]
    fn pax_times_parse() {
        assert_eq!(parse_pax_time("12"), Some((12, 0)));
        assert_eq!(parse_pax_time("12.5"), Some((12, 500_000_000)));
        assert_eq!(parse_pax_time("12.0000000019"), Some((12, 1)));
        assert_eq!(parse_pax_time("-1.5"), Some((-2, 500_000_000)));
        assert_eq!(parse_pax_time("-0.25"), Some((-1, 750_000_000)));
        assert_eq!(parse_pax_time("x"), None);
        assert_eq!(parse_pax_time("1.x"), None);
    }

    /// Every path under `root` with what unpacking must preserve.
    fn describe(root: &Path) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = vec![root.to_owned()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                let m = lstat(&path);
                let rel = path.strip_prefix(root).unwrap().display().to_string();
                let content = if m.is_file() {
                    Digest::of(&std::fs::read(&path).unwrap()).hex()
                } else if m.file_type().is_symlink() {
                    std::fs::read_link(&path).unwrap().display().to_string()
                } else {
                    String::new()
                };
                let note = xattr(&path, c"user.note").unwrap_or_default();
                out.push(format!(
                    "{rel} {:o} {}:{} mtime={} nlink={} rdev={} {content} {note:?}",
                    m.mode(),
                    m.uid(),
                    m.gid(),
                    m.mtime(),
                    m.nlink(),
                    m.rdev()
                ));
                if m.is_dir() {
                    stack.push(path);
                }
            }
        }
        out.sort();
        out
    }

    /// GNU tar, when installed, extracts an ordinary layer exactly as we do.
    #[test]
    fn agrees_with_gnu_tar_on_ordinary_layers() {
        let tar_ok = std::process::Command::new("tar")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success() && o.stdout.starts_with(b"tar (GNU tar)"));
        if !tar_ok {
            eprintln!("GNU tar not installed: peer check skipped");
            return;
        }
        let s = Scratch::new();
        let src = s.path().join("src");
        std::fs::create_dir_all(src.join("usr/bin")).unwrap();
        std::fs::create_dir_all(src.join("var/empty")).unwrap();
        std::fs::write(src.join("usr/bin/tool"), b"#!/bin/sh\n").unwrap();
        std::fs::set_permissions(src.join("usr/bin/tool"), PermissionsExt::from_mode(0o4711))
            .unwrap();
        std::fs::hard_link(src.join("usr/bin/tool"), src.join("usr/bin/alias")).unwrap();
        std::os::unix::fs::symlink("bin/tool", src.join("usr/link")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", src.join("abs")).unwrap();
        nix::unistd::mkfifo(&src.join("var/fifo"), Mode::from_bits_truncate(0o620)).unwrap();
        std::os::unix::fs::chown(src.join("var"), Some(33), Some(34)).unwrap();
        std::os::unix::fs::lchown(src.join("abs"), Some(7), Some(8)).unwrap();
        std::fs::set_permissions(src.join("var/empty"), PermissionsExt::from_mode(0o1730)).unwrap();
        let note = CString::new(src.join("usr/bin").as_os_str().as_bytes()).unwrap();
        // SAFETY: NUL-terminated strings and a valid value buffer.
        let rc = unsafe {
            libc::setxattr(
                note.as_ptr(),
                c"user.note".as_ptr(),
                b"hi".as_ptr().cast(),
                2,
                0,
            )
        };
        assert_eq!(rc, 0);
        let archive = s.path().join("layer.tar");
        let status = std::process::Command::new("tar")
            .args(["--format=pax", "--xattrs", "--numeric-owner", "-cf"])
            .arg(&archive)
            .arg("-C")
            .arg(&src)
            .arg(".")
            .status()
            .unwrap();
        assert!(status.success());
        let reference = s.path().join("reference");
        std::fs::create_dir(&reference).unwrap();
        let status = std::process::Command::new("tar")
            .args([
                "--xattrs",
                "--xattrs-include=user.*",
                "--numeric-owner",
                "-xpf",
            ])
            .arg(&archive)
            .arg("-C")
            .arg(&reference)
            .status()
            .unwrap();
        assert!(status.success());
        let bytes = std::fs::read(&archive).unwrap();
        let stats = run(&bytes, &s.layer()).unwrap();
        assert_eq!(stats.diff_id, Digest::of(&bytes));
        assert_eq!(describe(&s.layer()), describe(&reference));
        assert_eq!(describe(&s.layer()), describe(&src));
    }

    #[test]
    fn permissions_of_implicit_parents() {
        let s = Scratch::new();
        run(&Tar::new().file("x/y/z", b"1").bytes(), &s.layer()).unwrap();
        assert_eq!(
            lstat(&s.layer().join("x/y")).permissions().mode() & 0o7777,
            0o755
        );
    }
}
