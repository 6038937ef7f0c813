//! Image metadata: which names point at which image, kept in an embedded
//! database (redb) next to the content store.
//!
//! Why redb: it is maintained, pure Rust (nothing to cross-build), and
//! crash-safe by design (copy-on-write B-trees with checksummed commits: a power
//! cut leaves the last committed state, never a torn one), which matters on an
//! SD card whose board can lose power at any time. sled, the original wish, is
//! an unmaintained beta whose on-disk format was never declared stable.
//!
//! Records are JSON (small, few, read rarely): the schema can grow fields
//! without a migration, old records still load.

use std::path::Path;

use redb::{Database, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::digest::Digest;

/// Image name (normalised reference) → JSON [`ImageRecord`].
const IMAGES: TableDefinition<&str, &[u8]> = TableDefinition::new("images");

/// Why the metadata database failed.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    /// The database could not be opened, read or written.
    #[error("image metadata: {0}")]
    Db(#[from] redb::Error),
    /// Another process has the database open (an agent, or another
    /// `armlet images` still running).
    #[error("{0} is in use by another armlet process")]
    Busy(std::path::PathBuf),
    /// A record does not decode (written by a newer, incompatible armlet?).
    #[error("image metadata record for {name}: {source}")]
    Corrupt {
        /// The image name.
        name: String,
        /// The decoding error.
        source: serde_json::Error,
    },
}

/// What is known of one image name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// The manifest or index the name points at.
    pub digest: Digest,
    /// Where it came from (`pull`, `import:<file>`), for `armlet images`.
    pub source: String,
    /// When it was recorded, seconds since the epoch.
    pub created: u64,
}

/// The image database.
pub struct Images {
    db: Database,
}

impl std::fmt::Debug for Images {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Images").finish_non_exhaustive()
    }
}

fn db_err(e: impl Into<redb::Error>) -> MetaError {
    MetaError::Db(e.into())
}

impl Images {
    /// Opens (creating if needed) the database file at `path`.
    pub fn open(path: &Path) -> Result<Self, MetaError> {
        let db = Database::create(path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => MetaError::Busy(path.to_path_buf()),
            e => db_err(e),
        })?;
        // Create the table once, so read transactions always find it.
        let txn = db.begin_write().map_err(db_err)?;
        txn.open_table(IMAGES).map_err(db_err)?;
        txn.commit().map_err(db_err)?;
        Ok(Self { db })
    }

    /// Points `name` at `record` (replacing what it pointed at).
    pub fn put(&self, name: &str, record: &ImageRecord) -> Result<(), MetaError> {
        let bytes = serde_json::to_vec(record).map_err(|source| MetaError::Corrupt {
            name: name.to_owned(),
            source,
        })?;
        let txn = self.db.begin_write().map_err(db_err)?;
        {
            let mut table = txn.open_table(IMAGES).map_err(db_err)?;
            table.insert(name, bytes.as_slice()).map_err(db_err)?;
        }
        txn.commit().map_err(db_err)
    }

    /// The record of `name`, if any.
    pub fn get(&self, name: &str) -> Result<Option<ImageRecord>, MetaError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let table = txn.open_table(IMAGES).map_err(db_err)?;
        let Some(value) = table.get(name).map_err(db_err)? else {
            return Ok(None);
        };
        decode(name, value.value()).map(Some)
    }

    /// Every name with its record, sorted by name.
    pub fn list(&self) -> Result<Vec<(String, ImageRecord)>, MetaError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let table = txn.open_table(IMAGES).map_err(db_err)?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(db_err)? {
            let (key, value) = entry.map_err(db_err)?;
            let name = key.value().to_owned();
            let record = decode(&name, value.value())?;
            out.push((name, record));
        }
        Ok(out)
    }

    /// Removes `name`; `false` when it was not there.
    pub fn remove(&self, name: &str) -> Result<bool, MetaError> {
        let txn = self.db.begin_write().map_err(db_err)?;
        let removed = {
            let mut table = txn.open_table(IMAGES).map_err(db_err)?;
            table.remove(name).map_err(db_err)?.is_some()
        };
        txn.commit().map_err(db_err)?;
        Ok(removed)
    }
}

fn decode(name: &str, bytes: &[u8]) -> Result<ImageRecord, MetaError> {
    serde_json::from_slice(bytes).map_err(|source| MetaError::Corrupt {
        name: name.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(content: &[u8], source: &str) -> ImageRecord {
        ImageRecord {
            digest: Digest::of(content),
            source: source.into(),
            created: 1_700_000_000,
        }
    }

    #[test]
    fn names_point_at_images_and_survive_a_reopen() {
        let scratch = crate::testutil::TempDir::new("meta");
        let dir = scratch.path();
        let path = dir.join("images.redb");
        {
            let images = Images::open(&path).unwrap();
            assert!(images.list().unwrap().is_empty());
            assert_eq!(images.get("docker.io/library/busybox:1.36").unwrap(), None);
            images
                .put("docker.io/library/busybox:1.36", &record(b"a", "pull"))
                .unwrap();
            images
                .put("docker.io/library/app:v1", &record(b"b", "import:app.tar"))
                .unwrap();
            // A tag moves: the later record wins.
            images
                .put("docker.io/library/busybox:1.36", &record(b"c", "pull"))
                .unwrap();
        }
        let images = Images::open(&path).unwrap();
        let names: Vec<String> = images.list().unwrap().into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            ["docker.io/library/app:v1", "docker.io/library/busybox:1.36"]
        );
        assert_eq!(
            images.get("docker.io/library/busybox:1.36").unwrap(),
            Some(record(b"c", "pull"))
        );
        assert!(images.remove("docker.io/library/app:v1").unwrap());
        assert!(!images.remove("docker.io/library/app:v1").unwrap());
        assert_eq!(images.list().unwrap().len(), 1);
        // A file that is not a database is a clear error, not a panic.
        std::fs::write(dir.join("bad.redb"), b"definitely not redb").unwrap();
        let err = Images::open(&dir.join("bad.redb")).unwrap_err().to_string();
        assert!(err.starts_with("image metadata:"), "{err}");
    }
}
