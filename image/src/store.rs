//! The content store: blobs addressed by digest, verified while written.
//!
//! Layout under the store root:
//!
//! - `blobs/sha256/<hex>`: committed blobs. A file only gets here by an atomic
//!   rename after its size and digest were checked and its bytes fsynced, so
//!   everything under `blobs/` is trusted and never re-hashed on start-up.
//! - `ingest/<hex>`: the blob being written, named by the digest it should
//!   have so that an interrupted pull finds its bytes again and resumes. Each
//!   ingest file is held under an exclusive `flock` while written, which keeps
//!   a second process off it; within this process a set of active digests does
//!   the same without touching the file system.
//!
//! A partial file left by a crash may end in garbage (it was never fsynced):
//! resuming re-hashes it, and a bad prefix shows up as a digest mismatch at
//! commit, which removes it so the next pull starts afresh.

use std::collections::HashSet;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use crate::digest::{Digest, Hasher};

/// How often [`Store::wait_for`] looks again.
const POLL: Duration = Duration::from_millis(20);

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file system operation failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The blob is not in the store.
    #[error("blob {0} is not in the content store")]
    NotFound(Digest),
    /// Another pull is writing this blob right now.
    #[error("blob {0} is being written by another pull")]
    InUse(Digest),
    /// The stream brought more bytes than the descriptor announced; the
    /// partial file was removed.
    #[error("blob {digest} is larger than the {expected} bytes its descriptor says")]
    SizeExceeded {
        /// The blob's expected digest.
        digest: Digest,
        /// The size from the descriptor.
        expected: u64,
    },
    /// Commit was called before all bytes arrived (the partial file is kept for
    /// resume).
    #[error("blob {digest} is incomplete: {actual} of {expected} bytes")]
    Incomplete {
        /// The blob's expected digest.
        digest: Digest,
        /// The size from the descriptor.
        expected: u64,
        /// The bytes written so far.
        actual: u64,
    },
    /// The bytes do not hash to the expected digest; the file was removed.
    #[error("blob content hashes to {actual}, not the expected {expected}")]
    DigestMismatch {
        /// The digest the descriptor promised.
        expected: Digest,
        /// The digest of what arrived.
        actual: Digest,
    },
    /// A blob is bigger than the caller is willing to read into memory.
    #[error("blob {digest} is {size} bytes, more than the {max} allowed here")]
    TooLarge {
        /// The blob.
        digest: Digest,
        /// Its size.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// A blob is not the JSON document expected.
    #[error("blob {digest} is not the expected JSON: {source}")]
    Json {
        /// The blob.
        digest: Digest,
        /// The parse error.
        source: serde_json::Error,
    },
    /// An earlier write on this ingest failed; it cannot be committed.
    #[error("ingest of {0} failed earlier and cannot be committed")]
    Failed(Digest),
    /// [`Store::wait_for`] gave up.
    #[error("timed out waiting for blob {0}")]
    Timeout(Digest),
}

/// Shorthand for store results.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Attaches the operation and path to an I/O error.
fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

/// A content store rooted at one directory. Cheap to clone; clones share the
/// set of ingests in flight, so concurrent pulls in one process coordinate.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
    active: Arc<Mutex<HashSet<Digest>>>,
}

/// The answer of [`Store::writer`].
#[derive(Debug)]
pub enum Ingesting {
    /// This caller writes the blob. (Boxed: the hash state makes an
    /// `Ingest` a few hundred bytes, the other answers none.)
    Started(Box<Ingest>),
    /// Someone else (a task here or another process) is writing it: wait with
    /// [`Store::wait_for`], then ask again.
    Busy,
    /// The blob is already in the store.
    Present,
}

/// What [`Store::wait_for`] saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waited {
    /// The blob is in the store now.
    Present,
    /// Nobody is writing it any more but it is not there (the writer failed
    /// or gave up): call [`Store::writer`] again to take over.
    Idle,
}

impl Store {
    /// Opens (creating if needed) the store at `root`. Directories are 0700:
    /// image content can hold secrets baked into layers.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let store = Self {
            root: root.into(),
            active: Arc::default(),
        };
        for dir in [store.blob_dir(), store.ingest_dir()] {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .map_err(io_err("create directory", &dir))?;
        }
        Ok(store)
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn blob_dir(&self) -> PathBuf {
        self.root.join("blobs").join("sha256")
    }

    fn ingest_dir(&self) -> PathBuf {
        self.root.join("ingest")
    }

    /// Where a committed blob lives.
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.blob_dir().join(digest.hex())
    }

    fn ingest_path(&self, digest: &Digest) -> PathBuf {
        self.ingest_dir().join(digest.hex())
    }

    /// The set of in-flight ingests. A panic elsewhere while it was held
    /// leaves the set itself consistent (single inserts/removes), so a
    /// poisoned lock is simply taken over.
    fn active(&self) -> MutexGuard<'_, HashSet<Digest>> {
        self.active.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the blob is in the store.
    pub fn has(&self, digest: &Digest) -> bool {
        fs::metadata(self.blob_path(digest)).is_ok_and(|m| m.is_file())
    }

    /// Opens a committed blob for reading.
    pub fn open_blob(&self, digest: &Digest) -> Result<File> {
        let path = self.blob_path(digest);
        File::open(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => StoreError::NotFound(*digest),
            _ => io_err("open blob", &path)(e),
        })
    }

    /// Reads a blob as JSON (a manifest, an index, a config), refusing blobs
    /// larger than `max_len` so a hostile manifest cannot exhaust memory.
    pub fn read_json<T: serde::de::DeserializeOwned>(
        &self,
        digest: &Digest,
        max_len: u64,
    ) -> Result<T> {
        let file = self.open_blob(digest)?;
        let path = self.blob_path(digest);
        let size = file.metadata().map_err(io_err("stat blob", &path))?.len();
        if size > max_len {
            return Err(StoreError::TooLarge {
                digest: *digest,
                size,
                max: max_len,
            });
        }
        let mut bytes = Vec::new();
        // take() as well: the size check and the read are not atomic.
        file.take(max_len)
            .read_to_end(&mut bytes)
            .map_err(io_err("read blob", &path))?;
        serde_json::from_slice(&bytes).map_err(|source| StoreError::Json {
            digest: *digest,
            source,
        })
    }

    /// Starts (or resumes) writing the blob `expected` of `expected_size`
    /// bytes. Only one writer per digest exists at a time, in this process
    /// and across processes; the others get [`Ingesting::Busy`].
    pub fn writer(&self, expected: &Digest, expected_size: u64) -> Result<Ingesting> {
        if self.has(expected) {
            return Ok(Ingesting::Present);
        }
        if !self.active().insert(*expected) {
            return Ok(Ingesting::Busy);
        }
        // From here on the digest is ours in this process: the guard gives it
        // back on every early return.
        let claim = Claim {
            active: Arc::clone(&self.active),
            digest: *expected,
        };
        let path = self.ingest_path(expected);
        // Two rounds at most: the file we opened can be renamed into blobs/
        // or removed by gc between our open and our lock.
        for _ in 0..2 {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(&path)
                .map_err(io_err("open ingest file", &path))?;
            let file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(locked) => locked,
                Err((_, Errno::EWOULDBLOCK)) => return Ok(Ingesting::Busy),
                Err((_, errno)) => {
                    return Err(io_err("lock ingest file", &path)(io::Error::from(errno)));
                }
            };
            // Another process may have committed while we opened. The file we
            // hold is then either that blob (renamed away: leave it) or one we
            // just created for nothing (remove it).
            if self.has(expected) {
                if same_file(&file, &path) {
                    let _ = fs::remove_file(&path);
                }
                return Ok(Ingesting::Present);
            }
            if !same_file(&file, &path) {
                continue;
            }
            let mut ingest = Ingest {
                file,
                path: path.clone(),
                blob_dir: self.blob_dir(),
                digest: *expected,
                size: expected_size,
                offset: 0,
                hasher: Hasher::new(),
                failed: false,
                gone: false,
                _claim: claim,
            };
            ingest.resume()?;
            return Ok(Ingesting::Started(Box::new(ingest)));
        }
        Ok(Ingesting::Busy)
    }

    /// Waits until the blob is present or nobody writes it any more, polling.
    /// A blocking call: from async code run it with `spawn_blocking`.
    pub fn wait_for(&self, digest: &Digest, timeout: Duration) -> Result<Waited> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.has(digest) {
                return Ok(Waited::Present);
            }
            if !self.active().contains(digest) && !self.locked_elsewhere(digest) {
                // The writer may have committed between the two checks.
                return Ok(if self.has(digest) {
                    Waited::Present
                } else {
                    Waited::Idle
                });
            }
            if Instant::now() >= deadline {
                return Err(StoreError::Timeout(*digest));
            }
            std::thread::sleep(POLL);
        }
    }

    /// Whether some process holds the lock on the blob's ingest file.
    fn locked_elsewhere(&self, digest: &Digest) -> bool {
        let Ok(file) = File::open(self.ingest_path(digest)) else {
            return false;
        };
        matches!(
            Flock::lock(file, FlockArg::LockSharedNonblock),
            Err((_, Errno::EWOULDBLOCK))
        )
    }

    /// Stores `bytes` as blob `expected` (manifests, configs: small documents
    /// already in memory). Already present is success.
    pub fn put_bytes(&self, expected: &Digest, bytes: &[u8]) -> Result<()> {
        match self.writer(expected, bytes.len() as u64)? {
            Ingesting::Present => Ok(()),
            Ingesting::Busy => Err(StoreError::InUse(*expected)),
            Ingesting::Started(mut ingest) => {
                // Any earlier partial file is worthless when we hold it all.
                ingest.restart()?;
                ingest.write_all(bytes).map_err(|e| ingest.write_error(e))?;
                ingest.commit().map(drop)
            }
        }
    }

    /// Removes a blob; `false` if it was not there.
    pub fn delete(&self, digest: &Digest) -> Result<bool> {
        let path = self.blob_path(digest);
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_err("remove blob", &path)(e)),
        }
    }

    /// Every committed blob and its size, sorted by digest. Names under
    /// `blobs/sha256/` that are not digests are ignored.
    pub fn list(&self) -> Result<Vec<(Digest, u64)>> {
        let dir = self.blob_dir();
        let mut blobs = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_err("list", &dir))? {
            let entry = entry.map_err(io_err("list", &dir))?;
            let Some(digest) = entry
                .file_name()
                .to_str()
                .and_then(|name| format!("sha256:{name}").parse::<Digest>().ok())
            else {
                continue;
            };
            match entry.metadata() {
                Ok(meta) if meta.is_file() => blobs.push((digest, meta.len())),
                Ok(_) => {}
                // Deleted since read_dir saw it.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("stat", &entry.path())(e)),
            }
        }
        blobs.sort_unstable();
        Ok(blobs)
    }

    /// Bytes on disk: committed blobs plus partial ingests.
    pub fn usage(&self) -> Result<u64> {
        let blobs: u64 = self.list()?.iter().map(|(_, size)| size).sum();
        let dir = self.ingest_dir();
        let mut ingest = 0u64;
        for entry in fs::read_dir(&dir).map_err(io_err("list", &dir))? {
            let entry = entry.map_err(io_err("list", &dir))?;
            if let Ok(meta) = entry.metadata() {
                if meta.is_file() {
                    ingest = ingest.saturating_add(meta.len());
                }
            }
        }
        Ok(blobs.saturating_add(ingest))
    }

    /// Removes ingest files untouched for longer than `max_age` and not being
    /// written (interrupted pulls nobody resumed). Returns how many went.
    pub fn gc_ingest(&self, max_age: Duration) -> Result<usize> {
        let dir = self.ingest_dir();
        let now = SystemTime::now();
        let mut removed = 0;
        for entry in fs::read_dir(&dir).map_err(io_err("list", &dir))? {
            let entry = entry.map_err(io_err("list", &dir))?;
            let path = entry.path();
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            let age = meta
                .modified()
                .ok()
                .and_then(|m| now.duration_since(m).ok())
                .unwrap_or_default();
            if age <= max_age {
                continue;
            }
            if !meta.is_file() {
                // Not something the store writes; leave it to the operator.
                continue;
            }
            let digest = entry
                .file_name()
                .to_str()
                .and_then(|name| format!("sha256:{name}").parse::<Digest>().ok());
            if digest.is_some_and(|d| self.active().contains(&d)) {
                continue;
            }
            let Ok(file) = File::open(&path) else {
                continue;
            };
            // Held across the removal: a writer that opens the file meanwhile
            // finds on locking that the path no longer names its file.
            let Ok(_lock) = Flock::lock(file, FlockArg::LockExclusiveNonblock) else {
                continue;
            };
            match fs::remove_file(&path) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("remove ingest file", &path)(e)),
            }
        }
        Ok(removed)
    }

    /// Re-hashes a committed blob (for an explicit integrity check; blobs are
    /// not re-hashed routinely). A mismatch is reported, not repaired: the
    /// caller decides whether to delete and pull again.
    pub fn verify(&self, digest: &Digest) -> Result<()> {
        let mut file = self.open_blob(digest)?;
        let mut hasher = Hasher::new();
        io::copy(&mut file, &mut hasher).map_err(io_err("read blob", &self.blob_path(digest)))?;
        let actual = hasher.finish();
        if actual == *digest {
            Ok(())
        } else {
            Err(StoreError::DigestMismatch {
                expected: *digest,
                actual,
            })
        }
    }
}

/// Whether `path` still names the open file `file` (same device and inode).
fn same_file(file: &File, path: &Path) -> bool {
    match (file.metadata(), fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// A digest's place in the in-process set of active ingests, released on drop.
#[derive(Debug)]
struct Claim {
    active: Arc<Mutex<HashSet<Digest>>>,
    digest: Digest,
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.active
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.digest);
    }
}

/// A blob being written. Bytes go in with [`Write`]; [`Ingest::commit`]
/// verifies and publishes them. Dropped without commit, the partial file
/// stays for a later resume; [`Ingest::abort`] removes it.
pub struct Ingest {
    file: Flock<File>,
    path: PathBuf,
    blob_dir: PathBuf,
    digest: Digest,
    size: u64,
    offset: u64,
    hasher: Hasher,
    failed: bool,
    /// The file was removed (size overrun): nothing can be written any more.
    gone: bool,
    // Held only for its Drop; declared last so the digest leaves the active
    // set after the file lock is released.
    _claim: Claim,
}

impl std::fmt::Debug for Ingest {
    // By hand: the hash state has nothing worth showing.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ingest")
            .field("digest", &self.digest)
            .field("size", &self.size)
            .field("offset", &self.offset)
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

impl Ingest {
    /// Bytes already in the file: where a resumed download continues (an
    /// HTTP `Range: bytes=<offset>-` request).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The digest this ingest must produce.
    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    /// The size this ingest must reach.
    pub fn expected_size(&self) -> u64 {
        self.size
    }

    /// Re-hashes what an earlier attempt left, continuing after it. A file
    /// longer than the blob cannot be a prefix of it and is discarded.
    fn resume(&mut self) -> Result<()> {
        let len = self
            .file
            .metadata()
            .map_err(io_err("stat ingest file", &self.path))?
            .len();
        if len > self.size {
            return self.restart();
        }
        self.file
            .seek(SeekFrom::Start(0))
            .map_err(io_err("read ingest file", &self.path))?;
        let mut hasher = Hasher::new();
        let copied = io::copy(&mut (&*self.file).take(len), &mut hasher)
            .map_err(io_err("read ingest file", &self.path))?;
        self.hasher = hasher;
        self.offset = copied;
        // Writes continue exactly after the bytes hashed.
        self.file
            .set_len(copied)
            .and_then(|()| self.file.seek(SeekFrom::Start(copied)).map(drop))
            .map_err(io_err("seek ingest file", &self.path))
    }

    /// Throws away the bytes written so far and starts from zero (for a
    /// server that cannot resume, or a caller holding the whole blob).
    pub fn restart(&mut self) -> Result<()> {
        if self.gone {
            return Err(StoreError::Failed(self.digest));
        }
        self.file
            .set_len(0)
            .and_then(|()| self.file.seek(SeekFrom::Start(0)).map(drop))
            .map_err(io_err("truncate ingest file", &self.path))?;
        self.offset = 0;
        self.hasher = Hasher::new();
        self.failed = false;
        Ok(())
    }

    /// Verifies size and digest, makes the bytes durable and moves them into
    /// `blobs/` in one rename. On a digest mismatch the file is removed; if
    /// bytes are merely missing it stays for a resume.
    pub fn commit(mut self) -> Result<Digest> {
        if self.failed {
            return Err(StoreError::Failed(self.digest));
        }
        if self.offset != self.size {
            return Err(StoreError::Incomplete {
                digest: self.digest,
                expected: self.size,
                actual: self.offset,
            });
        }
        let actual = std::mem::take(&mut self.hasher).finish();
        if actual != self.digest {
            self.remove();
            return Err(StoreError::DigestMismatch {
                expected: self.digest,
                actual,
            });
        }
        // Readable by all like any installed file; the content is public to
        // anyone who can reach the 0700 directories anyway.
        self.file
            .set_permissions(fs::Permissions::from_mode(0o644))
            .map_err(io_err("chmod ingest file", &self.path))?;
        self.file
            .sync_all()
            .map_err(io_err("fsync ingest file", &self.path))?;
        let target = self.blob_dir.join(self.digest.hex());
        fs::rename(&self.path, &target).map_err(io_err("rename into blobs", &target))?;
        // The rename itself is durable only once the directory is synced.
        File::open(&self.blob_dir)
            .and_then(|dir| dir.sync_all())
            .map_err(io_err("fsync directory", &self.blob_dir))?;
        Ok(self.digest)
    }

    /// Gives up and removes the partial file.
    pub fn abort(self) {
        self.remove();
    }

    /// Removes the ingest file (still under our lock, so nobody else has
    /// it open for writing). Best effort: a leftover is collected by gc.
    fn remove(&self) {
        let _ = fs::remove_file(&self.path);
    }

    /// Turns an I/O error from writing into this ingest (say, out of
    /// `io::copy`) back into the [`StoreError`] it carries, if any.
    pub fn write_error(&self, e: io::Error) -> StoreError {
        let is_store_error = e
            .get_ref()
            .is_some_and(|inner| inner.downcast_ref::<StoreError>().is_some());
        if is_store_error {
            if let Some(inner) = e.into_inner() {
                if let Ok(store_error) = inner.downcast::<StoreError>() {
                    return *store_error;
                }
            }
            return StoreError::Failed(self.digest);
        }
        io_err("write ingest file", &self.path)(e)
    }
}

impl Write for Ingest {
    /// Appends bytes, hashing them. More bytes than the descriptor announced
    /// fail at once, before any is written, and remove the file: the error is
    /// an [`io::ErrorKind::InvalidData`] wrapping [`StoreError::SizeExceeded`].
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.failed {
            return Err(io::Error::other(StoreError::Failed(self.digest)));
        }
        let fits = self
            .offset
            .checked_add(buf.len() as u64)
            .is_some_and(|end| end <= self.size);
        if !fits {
            self.failed = true;
            self.gone = true;
            self.remove();
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                StoreError::SizeExceeded {
                    digest: self.digest,
                    expected: self.size,
                },
            ));
        }
        let written = match self.file.write(buf) {
            Ok(n) => n,
            Err(e) => {
                // The file position is now unknown; a resume re-reads it.
                self.failed = true;
                return Err(e);
            }
        };
        let Some(done) = buf.get(..written) else {
            self.failed = true;
            return Err(io::Error::other("write reported more bytes than given"));
        };
        self.hasher.update(done);
        self.offset += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::testutil::TempDir;

    fn started(i: Ingesting) -> Ingest {
        match i {
            Ingesting::Started(ingest) => *ingest,
            other => panic!("expected Started, got {other:?}"),
        }
    }

    fn ingest_files(store: &Store) -> Vec<String> {
        fs::read_dir(store.ingest_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect()
    }

    #[test]
    fn commit_then_read_back() {
        let tmp = TempDir::new("commit");
        let store = Store::open(tmp.path().join("store")).unwrap();
        let data = b"{\"schemaVersion\": 2}";
        let digest = Digest::of(data);
        assert!(!store.has(&digest));
        let mut w = started(store.writer(&digest, data.len() as u64).unwrap());
        assert_eq!(w.offset(), 0);
        w.write_all(&data[..5]).unwrap();
        w.write_all(&data[5..]).unwrap();
        assert_eq!(w.offset(), data.len() as u64);
        assert_eq!(w.commit().unwrap(), digest);
        assert!(store.has(&digest));
        let mut back = Vec::new();
        store
            .open_blob(&digest)
            .unwrap()
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, data);
        let v: serde_json::Value = store.read_json(&digest, 1024).unwrap();
        assert_eq!(v["schemaVersion"], 2);
        assert!(matches!(
            store.read_json::<serde_json::Value>(&digest, 4),
            Err(StoreError::TooLarge { .. })
        ));
        assert_eq!(store.list().unwrap(), vec![(digest, data.len() as u64)]);
        assert_eq!(store.usage().unwrap(), data.len() as u64);
        store.verify(&digest).unwrap();
        assert!(ingest_files(&store).is_empty());
        // Already there: nothing to write.
        assert!(matches!(
            store.writer(&digest, data.len() as u64).unwrap(),
            Ingesting::Present
        ));
        assert!(store.delete(&digest).unwrap());
        assert!(!store.delete(&digest).unwrap());
        assert!(!store.has(&digest));
        assert!(matches!(
            store.open_blob(&digest),
            Err(StoreError::NotFound(_))
        ));
    }

    #[test]
    fn put_bytes_and_bad_json() {
        let tmp = TempDir::new("put");
        let store = Store::open(tmp.path()).unwrap();
        let data = b"not json";
        let digest = Digest::of(data);
        store.put_bytes(&digest, data).unwrap();
        store.put_bytes(&digest, data).unwrap();
        assert!(matches!(
            store.read_json::<serde_json::Value>(&digest, 100),
            Err(StoreError::Json { .. })
        ));
        let wrong = Digest::of(b"other");
        assert!(matches!(
            store.put_bytes(&wrong, data),
            Err(StoreError::DigestMismatch { .. })
        ));
        assert!(!store.has(&wrong));
        assert!(ingest_files(&store).is_empty());
    }

    #[test]
    fn resume_after_partial_write() {
        let tmp = TempDir::new("resume");
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let digest = Digest::of(&data);
        let size = data.len() as u64;
        {
            let store = Store::open(tmp.path()).unwrap();
            let mut w = started(store.writer(&digest, size).unwrap());
            w.write_all(&data[..30_000]).unwrap();
            // Dropped: the pull was interrupted.
        }
        // A new process opens the store and resumes.
        let store = Store::open(tmp.path()).unwrap();
        assert!(!store.has(&digest));
        assert!(store.list().unwrap().is_empty());
        let mut w = started(store.writer(&digest, size).unwrap());
        assert_eq!(w.offset(), 30_000);
        let offset = usize::try_from(w.offset()).unwrap();
        w.write_all(&data[offset..]).unwrap();
        assert_eq!(w.commit().unwrap(), digest);
        store.verify(&digest).unwrap();
        let mut back = Vec::new();
        store
            .open_blob(&digest)
            .unwrap()
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, data);
    }

    #[test]
    fn corrupt_partial_fails_at_commit_and_is_removed() {
        let tmp = TempDir::new("corrupt");
        let store = Store::open(tmp.path()).unwrap();
        let data = b"0123456789";
        let digest = Digest::of(data);
        // A crash left garbage where the prefix should be.
        fs::write(store.ingest_path(&digest), b"xxxx").unwrap();
        let mut w = started(store.writer(&digest, 10).unwrap());
        assert_eq!(w.offset(), 4);
        w.write_all(&data[4..]).unwrap();
        assert!(matches!(w.commit(), Err(StoreError::DigestMismatch { .. })));
        assert!(ingest_files(&store).is_empty());
        // A leftover longer than the blob is discarded at once.
        fs::write(store.ingest_path(&digest), [0u8; 50]).unwrap();
        let mut w = started(store.writer(&digest, 10).unwrap());
        assert_eq!(w.offset(), 0);
        w.write_all(data).unwrap();
        w.commit().unwrap();
        assert!(store.has(&digest));
    }

    #[test]
    fn wrong_digest_is_refused_and_cleaned_up() {
        let tmp = TempDir::new("wrong");
        let store = Store::open(tmp.path()).unwrap();
        let expected = Digest::of(b"the real thing");
        let mut w = started(store.writer(&expected, 14).unwrap());
        w.write_all(b"a fake thing!!").unwrap();
        let err = w.commit().unwrap_err();
        assert!(matches!(err, StoreError::DigestMismatch { .. }), "{err}");
        assert!(err.to_string().contains(&expected.to_string()));
        assert!(!store.has(&expected));
        assert!(store.list().unwrap().is_empty());
        assert!(ingest_files(&store).is_empty());
    }

    #[test]
    fn oversized_stream_stops_at_once() {
        let tmp = TempDir::new("oversize");
        let store = Store::open(tmp.path()).unwrap();
        let data = vec![7u8; 1000];
        let digest = Digest::of(&data[..100]);
        let mut w = started(store.writer(&digest, 100).unwrap());
        w.write_all(&data[..60]).unwrap();
        // io::copy as a pull would use it, with an endless source.
        let err = io::copy(&mut io::repeat(7), &mut w).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        let err = w.write_error(err);
        assert!(
            matches!(err, StoreError::SizeExceeded { expected: 100, .. }),
            "{err}"
        );
        assert!(w.offset() <= 100);
        assert!(ingest_files(&store).is_empty());
        assert!(matches!(w.restart(), Err(StoreError::Failed(_))));
        assert!(matches!(w.commit(), Err(StoreError::Failed(_))));
        assert!(!store.has(&digest));
        assert!(ingest_files(&store).is_empty());
    }

    #[test]
    fn short_commit_keeps_partial_for_resume() {
        let tmp = TempDir::new("short");
        let store = Store::open(tmp.path()).unwrap();
        let data = b"abcdef";
        let digest = Digest::of(data);
        let mut w = started(store.writer(&digest, 6).unwrap());
        w.write_all(b"abc").unwrap();
        assert!(matches!(
            w.commit(),
            Err(StoreError::Incomplete {
                expected: 6,
                actual: 3,
                ..
            })
        ));
        let mut w = started(store.writer(&digest, 6).unwrap());
        assert_eq!(w.offset(), 3);
        w.write_all(b"def").unwrap();
        w.commit().unwrap();
        // abort removes.
        let other = Digest::of(b"zz");
        let mut w = started(store.writer(&other, 2).unwrap());
        w.write_all(b"z").unwrap();
        w.abort();
        assert_eq!(ingest_files(&store), Vec::<String>::new());
    }

    #[test]
    fn concurrent_writers_of_one_blob() {
        let tmp = TempDir::new("concurrent");
        let store = Store::open(tmp.path()).unwrap();
        let data: Vec<u8> = vec![42; 64 * 1024];
        let digest = Digest::of(&data);
        let barrier = Arc::new(std::sync::Barrier::new(8));
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let store = store.clone();
                let data = data.clone();
                let barrier = Arc::clone(&barrier);
                std::thread::spawn(move || {
                    barrier.wait();
                    let size = data.len() as u64;
                    match store.writer(&digest, size).unwrap() {
                        Ingesting::Started(mut w) => {
                            for chunk in data.chunks(4096) {
                                w.write_all(chunk).unwrap();
                                std::thread::sleep(Duration::from_millis(1));
                            }
                            w.commit().unwrap();
                            1
                        }
                        Ingesting::Busy => {
                            let waited = store.wait_for(&digest, Duration::from_secs(30)).unwrap();
                            assert_eq!(waited, Waited::Present);
                            0
                        }
                        Ingesting::Present => 0,
                    }
                })
            })
            .collect();
        let writers: i32 = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(writers, 1);
        assert!(store.has(&digest));
        store.verify(&digest).unwrap();
    }

    #[test]
    fn separate_store_handles_are_locked_out_by_flock() {
        // Two Store values do not share the in-process set: as two processes
        // would, they meet at the flock.
        let tmp = TempDir::new("flock");
        let a = Store::open(tmp.path()).unwrap();
        let b = Store::open(tmp.path()).unwrap();
        let digest = Digest::of(b"x");
        let mut w = started(a.writer(&digest, 1).unwrap());
        assert!(matches!(b.writer(&digest, 1).unwrap(), Ingesting::Busy));
        assert!(matches!(a.writer(&digest, 1).unwrap(), Ingesting::Busy));
        assert!(matches!(
            b.wait_for(&digest, Duration::from_millis(50)),
            Err(StoreError::Timeout(_))
        ));
        w.write_all(b"x").unwrap();
        w.commit().unwrap();
        assert_eq!(
            b.wait_for(&digest, Duration::from_secs(1)).unwrap(),
            Waited::Present
        );
        assert!(matches!(b.writer(&digest, 1).unwrap(), Ingesting::Present));
    }

    #[test]
    fn waiter_takes_over_when_writer_gives_up() {
        let tmp = TempDir::new("takeover");
        let store = Store::open(tmp.path()).unwrap();
        let digest = Digest::of(b"hello");
        let mut w = started(store.writer(&digest, 5).unwrap());
        w.write_all(b"he").unwrap();
        let waiter = {
            let store = store.clone();
            std::thread::spawn(move || store.wait_for(&digest, Duration::from_secs(30)))
        };
        std::thread::sleep(Duration::from_millis(50));
        drop(w);
        assert_eq!(waiter.join().unwrap().unwrap(), Waited::Idle);
        let mut w = started(store.writer(&digest, 5).unwrap());
        assert_eq!(w.offset(), 2);
        w.write_all(b"llo").unwrap();
        w.commit().unwrap();
    }

    #[test]
    fn crash_leftovers_are_not_blobs_and_gc_removes_them() {
        let tmp = TempDir::new("crash");
        let store = Store::open(tmp.path()).unwrap();
        let digest = Digest::of(b"complete content");
        // A crash mid-pull: a full-length but never committed ingest file, and junk.
        fs::write(store.ingest_path(&digest), b"complete content").unwrap();
        fs::write(store.ingest_dir().join("junk"), b"?").unwrap();
        // And junk in blobs/ that is not a digest name.
        fs::write(store.blob_dir().join("not-a-digest"), b"?").unwrap();
        assert!(!store.has(&digest));
        assert!(store.list().unwrap().is_empty());
        assert!(matches!(
            store.open_blob(&digest),
            Err(StoreError::NotFound(_))
        ));
        // Fresh files survive gc; a file being written survives any gc.
        assert_eq!(store.gc_ingest(Duration::from_secs(3600)).unwrap(), 0);
        let other = Digest::of(b"in flight");
        let w = started(store.writer(&other, 9).unwrap());
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(store.gc_ingest(Duration::ZERO).unwrap(), 2);
        assert_eq!(ingest_files(&store), vec![other.hex()]);
        drop(w);
    }

    #[test]
    fn permissions() {
        let tmp = TempDir::new("perm");
        let store = Store::open(tmp.path().join("s")).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&store.blob_dir()), 0o700);
        assert_eq!(mode(&store.ingest_dir()), 0o700);
        let digest = Digest::of(b"p");
        store.put_bytes(&digest, b"p").unwrap();
        assert_eq!(mode(&store.blob_path(&digest)), 0o644);
    }

    #[test]
    fn verify_detects_tampering() {
        let tmp = TempDir::new("verify");
        let store = Store::open(tmp.path()).unwrap();
        let digest = Digest::of(b"good");
        store.put_bytes(&digest, b"good").unwrap();
        fs::write(store.blob_path(&digest), b"evil").unwrap();
        assert!(matches!(
            store.verify(&digest),
            Err(StoreError::DigestMismatch { .. })
        ));
    }
}
