//! The agent's own small store (redb, one file, e.g.
//! `<data-dir>/agent/kubelet.redb`): the pods bound to the node, and the
//! ConfigMaps and Services they use, so that a restarted agent, or a rebooted
//! board that cannot reach the API server, brings its pods back without
//! waiting for the server. Once the server answers, the server wins: this is
//! a cache, never a source of truth.
//!
//! Written to an SD card, so bytes matter: objects are stored without what
//! changes without meaning to the node (`status`, `resourceVersion`,
//! `managedFields`, kubectl's last-applied annotation), every save compares
//! with the stored bytes first, and a transaction is committed only when
//! something changed. Commits are durable (fsync) and redb's copy-on-write
//! pages survive power loss mid-commit.
//!
//! Secrets are never stored: they must not reach flash.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{DirBuilder, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use redb::{DatabaseError, ReadableTable, StorageError, TableDefinition, TableError};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Pods by uid.
const PODS: TableDefinition<&str, &[u8]> = TableDefinition::new("pods");
/// ConfigMaps by `<namespace>/<name>`.
const CONFIG_MAPS: TableDefinition<&str, &[u8]> = TableDefinition::new("config_maps");
/// Services by `<namespace>/<name>`.
const SERVICES: TableDefinition<&str, &[u8]> = TableDefinition::new("services");

/// redb's page cache: the database holds a few pods and objects; the default
/// (up to a GiB) is not for a board with 1 GiB of RAM.
const CACHE_BYTES: usize = 1 << 20;

/// kubectl's copy of the applied object: as large as the object, and of no
/// use to the node.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Why the local state could not be opened, read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The file or its directory could not be created, opened or renamed.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// What failed.
        source: io::Error,
    },
    /// The file is not a database this agent can use (damaged, not a redb
    /// file, or an unsupported format); [`LocalState::open_or_reset`] moves
    /// it aside.
    #[error("{path}: not a usable agent state database: {why}")]
    Unusable {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// Another process (another agent) has the database open.
    #[error("{0}: the agent state database is in use by another process")]
    InUse(PathBuf),
    /// An object that cannot be stored (no uid, no name).
    #[error("cannot store {0}")]
    Invalid(String),
    /// An object could not be encoded.
    #[error("encoding {what}: {source}")]
    Encode {
        /// The object.
        what: String,
        /// What failed.
        source: serde_json::Error,
    },
    /// A database operation failed.
    #[error("agent state database: {0}")]
    Db(#[source] redb::Error),
}

impl StateError {
    /// Whether the database itself is damaged (as found on open, or while
    /// reading): the caller may move it aside and start over.
    pub fn is_unusable(&self) -> bool {
        matches!(
            self,
            Self::Unusable { .. } | Self::Db(redb::Error::Corrupted(_))
        )
    }
}

fn db_err(e: impl Into<redb::Error>) -> StateError {
    StateError::Db(e.into())
}

/// Sorts an open failure: damage (moved aside by `open_or_reset`) from
/// everything else (permissions, a full disk, a second agent), which moving
/// the file would not fix.
fn open_error(path: &Path, e: DatabaseError) -> StateError {
    let unusable = |why: String| StateError::Unusable {
        path: path.to_owned(),
        why,
    };
    match e {
        DatabaseError::DatabaseAlreadyOpen => StateError::InUse(path.to_owned()),
        DatabaseError::UpgradeRequired(v) => {
            unusable(format!("file format version {v} needs an upgrade"))
        }
        DatabaseError::RepairAborted => unusable("repair aborted".to_owned()),
        DatabaseError::Storage(StorageError::Corrupted(why)) => unusable(why),
        DatabaseError::Storage(StorageError::Io(e))
            if matches!(
                e.kind(),
                io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof
            ) =>
        {
            unusable(e.to_string())
        }
        DatabaseError::Storage(StorageError::Io(source)) => StateError::Io {
            path: path.to_owned(),
            source,
        },
        other => db_err(other),
    }
}

/// The agent's local store. See the module documentation.
pub struct LocalState {
    db: redb::Database,
    path: PathBuf,
}

impl std::fmt::Debug for LocalState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalState")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl LocalState {
    /// Opens the database at `path`, creating it (mode 0600, parent
    /// directories 0700) if missing; an existing file readable by others is
    /// made 0600. Fails with [`StateError::Unusable`] if the file is not a
    /// usable database, [`StateError::InUse`] if another process has it open.
    /// After a power loss redb checks and repairs the file on open.
    pub fn open(path: &Path) -> Result<Self, StateError> {
        let io_err = |path: &Path| {
            let path = path.to_owned();
            move |source| StateError::Io { path, source }
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io_err(dir))?;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            // A symlink planted in the data directory must not redirect the
            // agent's writes.
            .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
            .open(path)
            .map_err(io_err(path))?;
        let mode = file.metadata().map_err(io_err(path))?.permissions().mode();
        if mode & 0o077 != 0 {
            file.set_permissions(Permissions::from_mode(0o600))
                .map_err(io_err(path))?;
        }
        let db = redb::Builder::new()
            .set_cache_size(CACHE_BYTES)
            .create_file(file)
            .map_err(|e| open_error(path, e))?;
        Ok(Self {
            db,
            path: path.to_owned(),
        })
    }

    /// [`LocalState::open`], but a file that is not a usable database is
    /// renamed to `<name>.corrupt` (replacing an older one) and an empty
    /// database is started; the second value then says why (for the agent's
    /// log). Other failures are returned as they are.
    pub fn open_or_reset(path: &Path) -> Result<(Self, Option<String>), StateError> {
        match Self::open(path) {
            Ok(state) => Ok((state, None)),
            Err(e @ StateError::Unusable { .. }) => {
                let mut name = path.as_os_str().to_owned();
                name.push(".corrupt");
                let aside = PathBuf::from(name);
                std::fs::rename(path, &aside).map_err(|source| StateError::Io {
                    path: path.to_owned(),
                    source,
                })?;
                let why = format!("{e}; moved to {}", aside.display());
                // The caller logs `why`, once, where it decides what to do.
                tracing::debug!("{why}; starting with an empty local state");
                Ok((Self::open(path)?, Some(why)))
            }
            Err(e) => Err(e),
        }
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stores `pod` under its uid, unless the stored copy has the same
    /// meaning (only its status, resourceVersion or managedFields differ).
    /// Returns whether anything was written.
    pub fn save_pod(&self, pod: &Pod) -> Result<bool, StateError> {
        let uid = pod
            .metadata
            .uid
            .as_deref()
            .filter(|u| !u.is_empty())
            .ok_or_else(|| StateError::Invalid(format!("pod {} without a uid", name_of(pod))))?;
        let bytes = encode(pod, || format!("pod {}", name_of(pod)))?;
        self.put(PODS, uid, &bytes)
    }

    /// Removes the pod `uid`; returns whether it was stored.
    pub fn remove_pod(&self, uid: &str) -> Result<bool, StateError> {
        self.remove(PODS, uid)
    }

    /// Every stored pod (without status). A record that no longer decodes
    /// (written by another version) is skipped and logged.
    pub fn pods(&self) -> Result<Vec<Pod>, StateError> {
        self.all(PODS)
    }

    /// Removes every pod whose uid is not in `live_uids`, in one transaction
    /// (none when there is nothing to remove). Returns how many went.
    pub fn retain_pods(&self, live_uids: &BTreeSet<String>) -> Result<usize, StateError> {
        let stale: Vec<String> = self
            .raw(PODS)?
            .into_keys()
            .filter(|uid| !live_uids.contains(uid))
            .collect();
        self.apply(PODS, &[], &stale)?;
        Ok(stale.len())
    }

    /// Stores `config_map` under its namespace and name, unless the stored
    /// copy has the same meaning. Returns whether anything was written.
    pub fn save_config_map(&self, config_map: &ConfigMap) -> Result<bool, StateError> {
        let key = object_key("configmap", config_map)?;
        let bytes = encode(config_map, || format!("configmap {key}"))?;
        self.put(CONFIG_MAPS, &key, &bytes)
    }

    /// Removes the ConfigMap `namespace/name`; returns whether it was stored.
    pub fn remove_config_map(&self, namespace: &str, name: &str) -> Result<bool, StateError> {
        self.remove(CONFIG_MAPS, &format!("{namespace}/{name}"))
    }

    /// Every stored ConfigMap (for [`crate::objects::ApiObjects::seed`]).
    pub fn config_maps(&self) -> Result<Vec<ConfigMap>, StateError> {
        self.all(CONFIG_MAPS)
    }

    /// Makes the stored ConfigMaps exactly `config_maps` (typically
    /// [`crate::objects::ApiObjects::snapshot_config_maps`] of the live pods),
    /// in one transaction, writing only what changed. Returns whether
    /// anything was written.
    pub fn sync_config_maps(&self, config_maps: &[ConfigMap]) -> Result<bool, StateError> {
        self.sync(CONFIG_MAPS, "configmap", config_maps)
    }

    /// Makes the stored Services exactly `services` (every namespace, for the
    /// service environment variables), as [`LocalState::sync_config_maps`].
    pub fn sync_services(&self, services: &[Service]) -> Result<bool, StateError> {
        self.sync(SERVICES, "service", services)
    }

    /// Every stored Service (without status).
    pub fn services(&self) -> Result<Vec<Service>, StateError> {
        self.all(SERVICES)
    }

    /// Writes `bytes` under `key` unless they are already there. The
    /// comparison happens inside the write transaction (so it is atomic);
    /// an unchanged record aborts it, which writes nothing.
    fn put(
        &self,
        table: TableDefinition<&str, &[u8]>,
        key: &str,
        bytes: &[u8],
    ) -> Result<bool, StateError> {
        let tx = self.db.begin_write().map_err(db_err)?;
        {
            let mut t = tx.open_table(table).map_err(db_err)?;
            let same = t
                .get(key)
                .map_err(db_err)?
                .is_some_and(|stored| stored.value() == bytes);
            if same {
                drop(t);
                tx.abort().map_err(db_err)?;
                return Ok(false);
            }
            t.insert(key, bytes).map_err(db_err)?;
        }
        tx.commit().map_err(db_err)?;
        Ok(true)
    }

    fn remove(&self, table: TableDefinition<&str, &[u8]>, key: &str) -> Result<bool, StateError> {
        if !self.raw(table)?.contains_key(key) {
            return Ok(false);
        }
        self.apply(table, &[], &[key.to_owned()])?;
        Ok(true)
    }

    /// Every record of `table`, raw. A table never written to reads empty
    /// (tables are created by their first write, not on open, so that opening
    /// writes nothing).
    fn raw(
        &self,
        table: TableDefinition<&str, &[u8]>,
    ) -> Result<BTreeMap<String, Vec<u8>>, StateError> {
        let tx = self.db.begin_read().map_err(db_err)?;
        let t = match tx.open_table(table) {
            Ok(t) => t,
            Err(TableError::TableDoesNotExist(_)) => return Ok(BTreeMap::new()),
            Err(e) => return Err(db_err(e)),
        };
        let mut out = BTreeMap::new();
        for record in t.iter().map_err(db_err)? {
            let (k, v) = record.map_err(db_err)?;
            out.insert(k.value().to_owned(), v.value().to_vec());
        }
        Ok(out)
    }

    fn all<T: DeserializeOwned>(
        &self,
        table: TableDefinition<&str, &[u8]>,
    ) -> Result<Vec<T>, StateError> {
        let mut out = Vec::new();
        for (key, bytes) in self.raw(table)? {
            match serde_json::from_slice(&bytes) {
                Ok(object) => out.push(object),
                Err(e) => tracing::warn!(
                    table = table.to_string(),
                    key,
                    error = %e,
                    "skipping a local record that does not decode"
                ),
            }
        }
        Ok(out)
    }

    fn sync<T: Serialize + kube::Resource>(
        &self,
        table: TableDefinition<&str, &[u8]>,
        kind: &str,
        objects: &[T],
    ) -> Result<bool, StateError> {
        let mut wanted = BTreeMap::new();
        for object in objects {
            let key = object_key(kind, object)?;
            let bytes = encode(object, || format!("{kind} {key}"))?;
            wanted.insert(key, bytes);
        }
        let stored = self.raw(table)?;
        let stale: Vec<String> = stored
            .keys()
            .filter(|k| !wanted.contains_key(*k))
            .cloned()
            .collect();
        let changed: Vec<(String, Vec<u8>)> = wanted
            .into_iter()
            .filter(|(k, v)| stored.get(k) != Some(v))
            .collect();
        self.apply(table, &changed, &stale)
    }

    /// Inserts `put` and removes `delete` in one transaction; none at all
    /// when both are empty. Returns whether it committed.
    fn apply(
        &self,
        table: TableDefinition<&str, &[u8]>,
        put: &[(String, Vec<u8>)],
        delete: &[String],
    ) -> Result<bool, StateError> {
        if put.is_empty() && delete.is_empty() {
            return Ok(false);
        }
        let tx = self.db.begin_write().map_err(db_err)?;
        {
            let mut t = tx.open_table(table).map_err(db_err)?;
            for (k, v) in put {
                t.insert(k.as_str(), v.as_slice()).map_err(db_err)?;
            }
            for k in delete {
                t.remove(k.as_str()).map_err(db_err)?;
            }
        }
        tx.commit().map_err(db_err)?;
        Ok(true)
    }
}

fn name_of(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}

/// `<namespace>/<name>` of a namespaced object (names cannot hold `/`).
fn object_key<T: kube::Resource>(kind: &str, object: &T) -> Result<String, StateError> {
    let meta = object.meta();
    match (meta.namespace.as_deref(), meta.name.as_deref()) {
        (Some(ns), Some(name)) if !ns.is_empty() && !name.is_empty() => Ok(format!("{ns}/{name}")),
        _ => Err(StateError::Invalid(format!(
            "a {kind} without a namespace and a name"
        ))),
    }
}

/// The bytes stored for `object`: its JSON without what changes without
/// meaning to the node. Deterministic (maps are sorted), so equal meaning is
/// equal bytes.
fn encode<T: Serialize>(object: &T, what: impl Fn() -> String) -> Result<Vec<u8>, StateError> {
    let err = |source| StateError::Encode {
        what: what(),
        source,
    };
    let mut value = serde_json::to_value(object).map_err(err)?;
    strip(&mut value);
    serde_json::to_vec(&value).map_err(err)
}

fn strip(value: &mut Value) {
    let Some(object) = value.as_object_mut() else {
        return;
    };
    object.remove("status");
    let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    meta.remove("resourceVersion");
    meta.remove("managedFields");
    if let Some(annotations) = meta.get_mut("annotations").and_then(Value::as_object_mut) {
        annotations.remove(LAST_APPLIED);
        if annotations.is_empty() {
            meta.remove("annotations");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// A scratch directory, removed when dropped (`tempfile` is not a
    /// dependency of this crate).
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Self {
            static N: AtomicUsize = AtomicUsize::new(0);
            let dir = std::env::temp_dir().join(format!(
                "armlet-local-state-{name}-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::SeqCst)
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }

        fn db(&self) -> PathBuf {
            self.0.join("agent").join("kubelet.redb")
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn pod(uid: &str, rv: &str, phase: &str) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": format!("web-{uid}"), "namespace": "shop", "uid": uid,
                "resourceVersion": rv, "generation": 1,
                "managedFields": [{"manager": "kubectl", "operation": "Update"}],
                "annotations": {LAST_APPLIED: "{...}", "team": "a"}
            },
            "spec": {"nodeName": "pi", "containers": [{"name": "app", "image": "nginx"}]},
            "status": {"phase": phase}
        }))
        .unwrap()
    }

    fn cm(name: &str, value: &str) -> ConfigMap {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "shop", "resourceVersion": value},
            "data": {"k": value}
        }))
        .unwrap()
    }

    #[test]
    fn pods_round_trip_without_what_changes_without_meaning() {
        let dir = Scratch::new("roundtrip");
        let state = LocalState::open(&dir.db()).unwrap();
        assert!(state.pods().unwrap().is_empty());
        assert!(state.save_pod(&pod("u1", "10", "Pending")).unwrap());
        let pods = state.pods().unwrap();
        assert_eq!(pods.len(), 1);
        let stored = &pods[0];
        assert_eq!(stored.metadata.uid.as_deref(), Some("u1"));
        assert_eq!(stored.metadata.generation, Some(1));
        assert!(stored.status.is_none());
        assert!(stored.metadata.resource_version.is_none());
        assert!(stored.metadata.managed_fields.is_none());
        let annotations = stored.metadata.annotations.clone().unwrap();
        assert_eq!(annotations.keys().collect::<Vec<_>>(), ["team"]);
        assert_eq!(stored.spec, pod("u1", "10", "Pending").spec);

        // Same meaning, new resourceVersion and status: nothing written, not
        // a byte.
        let before = std::fs::read(dir.db()).unwrap();
        assert!(!state.save_pod(&pod("u1", "11", "Running")).unwrap());
        assert!(!state.sync_config_maps(&[]).unwrap());
        assert_eq!(state.retain_pods(&["u1".to_owned()].into()).unwrap(), 0);
        assert!(std::fs::read(dir.db()).unwrap() == before);
        // A real change is written.
        let mut changed = pod("u1", "12", "Running");
        changed.metadata.labels = Some([("app".to_owned(), "web".to_owned())].into());
        assert!(state.save_pod(&changed).unwrap());
        assert!(!state.save_pod(&changed).unwrap());

        assert!(state.remove_pod("u1").unwrap());
        assert!(!state.remove_pod("u1").unwrap());
        assert!(state.pods().unwrap().is_empty());

        let mut no_uid = pod("u1", "1", "Pending");
        no_uid.metadata.uid = None;
        assert!(matches!(
            state.save_pod(&no_uid),
            Err(StateError::Invalid(_))
        ));
    }

    #[test]
    fn a_reopened_database_keeps_its_pods_and_objects() {
        let dir = Scratch::new("reopen");
        {
            let state = LocalState::open(&dir.db()).unwrap();
            state.save_pod(&pod("u1", "1", "Running")).unwrap();
            state.save_pod(&pod("u2", "1", "Running")).unwrap();
            assert!(state.sync_config_maps(&[cm("cfg", "1")]).unwrap());
        }
        let state = LocalState::open(&dir.db()).unwrap();
        let uids: Vec<String> = state
            .pods()
            .unwrap()
            .into_iter()
            .filter_map(|p| p.metadata.uid)
            .collect();
        assert_eq!(uids, ["u1", "u2"]);
        assert_eq!(state.config_maps().unwrap()[0].data, cm("cfg", "1").data);
        // Unchanged after the restart: no write.
        assert!(!state.save_pod(&pod("u2", "7", "Failed")).unwrap());
    }

    #[test]
    fn retain_pods_removes_the_rest_and_writes_nothing_when_nothing_goes() {
        let dir = Scratch::new("retain");
        let state = LocalState::open(&dir.db()).unwrap();
        for uid in ["a", "b", "c"] {
            state.save_pod(&pod(uid, "1", "Running")).unwrap();
        }
        let live: BTreeSet<String> = ["b".to_owned(), "x".to_owned()].into();
        assert_eq!(state.retain_pods(&live).unwrap(), 2);
        assert_eq!(state.retain_pods(&live).unwrap(), 0);
        let left: Vec<_> = state
            .pods()
            .unwrap()
            .into_iter()
            .filter_map(|p| p.metadata.uid)
            .collect();
        assert_eq!(left, ["b"]);
    }

    #[test]
    fn config_maps_and_services_sync_to_the_given_set() {
        let dir = Scratch::new("sync");
        let state = LocalState::open(&dir.db()).unwrap();
        assert!(state.save_config_map(&cm("a", "1")).unwrap());
        assert!(!state.save_config_map(&cm("a", "1")).unwrap());
        assert!(
            state
                .sync_config_maps(&[cm("a", "1"), cm("b", "1")])
                .unwrap()
        );
        assert!(
            !state
                .sync_config_maps(&[cm("b", "1"), cm("a", "1")])
                .unwrap()
        );
        assert!(state.sync_config_maps(&[cm("b", "2")]).unwrap());
        let names: Vec<_> = state
            .config_maps()
            .unwrap()
            .into_iter()
            .filter_map(|c| c.metadata.name)
            .collect();
        assert_eq!(names, ["b"]);
        assert!(state.remove_config_map("shop", "b").unwrap());

        let svc: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "kubernetes", "namespace": "default", "resourceVersion": "5"},
            "spec": {"clusterIP": "10.43.0.1", "ports": [{"port": 443}]},
            "status": {"loadBalancer": {}}
        }))
        .unwrap();
        assert!(state.sync_services(std::slice::from_ref(&svc)).unwrap());
        let mut again = svc.clone();
        again.metadata.resource_version = Some("6".into());
        assert!(!state.sync_services(&[again]).unwrap());
        let stored = state.services().unwrap();
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].spec, svc.spec);
        assert!(stored[0].status.is_none());

        assert!(matches!(
            state.save_config_map(&ConfigMap::default()),
            Err(StateError::Invalid(_))
        ));
    }

    #[test]
    fn the_file_is_private() {
        let dir = Scratch::new("mode");
        let path = dir.db();
        drop(LocalState::open(&path).unwrap());
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        assert_eq!(
            std::fs::metadata(path.parent().unwrap()).unwrap().mode() & 0o777,
            0o700
        );
        // An existing file readable by others is tightened.
        std::fs::set_permissions(&path, Permissions::from_mode(0o644)).unwrap();
        drop(LocalState::open(&path).unwrap());
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
    }

    #[test]
    fn a_corrupt_file_is_moved_aside() {
        for (case, garbage) in [("long", vec![0xab_u8; 8192]), ("short", b"hello".to_vec())] {
            let dir = Scratch::new(case);
            let path = dir.db();
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &garbage).unwrap();
            let err = LocalState::open(&path).unwrap_err();
            assert!(err.is_unusable(), "{case}: {err}");
            let (state, why) = LocalState::open_or_reset(&path).unwrap();
            assert!(why.unwrap().contains("kubelet.redb.corrupt"), "{case}");
            assert!(state.pods().unwrap().is_empty());
            assert!(state.save_pod(&pod("u1", "1", "Running")).unwrap());
            assert_eq!(
                std::fs::read(path.with_extension("redb.corrupt")).unwrap(),
                garbage
            );
        }
    }

    #[test]
    fn a_database_in_use_is_not_moved_aside() {
        let dir = Scratch::new("inuse");
        let path = dir.db();
        let _first = LocalState::open(&path).unwrap();
        assert!(matches!(
            LocalState::open_or_reset(&path),
            Err(StateError::InUse(_))
        ));
        assert!(!path.with_extension("redb.corrupt").exists());
    }

    #[test]
    fn a_symlink_is_not_followed() {
        let dir = Scratch::new("symlink");
        let path = dir.db();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let target = dir.0.join("elsewhere");
        std::os::unix::fs::symlink(&target, &path).unwrap();
        assert!(matches!(
            LocalState::open(&path),
            Err(StateError::Io { .. })
        ));
        assert!(!target.exists());
    }
}
