//! The Kubernetes API's object store: objects as JSON by resource, namespace
//! and name, one cluster-wide `resourceVersion` counter, and a history of
//! changes for watches (a watch from a version older than the history gets
//! `410 Gone`, as from etcd after compaction).
//!
//! Semantics follow the API server: `create` fills `uid`,
//! `creationTimestamp`, `resourceVersion` and `generation` (and a name from
//! `generateName`); `update` with a `resourceVersion` is optimistic (409 on a
//! mismatch); `delete` may carry preconditions; every change is an event.
//!
//! A store opened on a file keeps its objects across restarts, as K3s's
//! datastore does: every change is appended to a journal (one JSON line)
//! before it is applied, and opening replays the journal and rewrites it
//! compacted. The watch history is not kept: a watch from before a restart
//! gets `410 Gone` and relists, as after an etcd compaction.

use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use tokio::sync::broadcast;

/// How many changes the watch history keeps.
const HISTORY: usize = 1024;

/// Why a store operation failed; each maps to an API status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// 404.
    #[error("{resource} \"{name}\" not found")]
    NotFound {
        /// The resource (plural).
        resource: String,
        /// The name.
        name: String,
    },
    /// 409 on create.
    #[error("{resource} \"{name}\" already exists")]
    AlreadyExists {
        /// The resource.
        resource: String,
        /// The name.
        name: String,
    },
    /// 409 on update or delete with a stale version or another uid.
    #[error(
        "Operation cannot be fulfilled on {resource} \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
    )]
    Conflict {
        /// The resource.
        resource: String,
        /// The name.
        name: String,
    },
    /// 422 / 400: the object is not acceptable.
    #[error("{0}")]
    Invalid(String),
    /// 410: the watch starts before the history.
    #[error("too old resource version: {requested} ({oldest})")]
    Gone {
        /// The version asked for.
        requested: u64,
        /// The oldest version still known.
        oldest: u64,
    },
    /// 500: the change could not be written to the journal (and was not made).
    #[error("storage error: {0}")]
    Storage(String),
}

/// Why a store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The journal could not be read or rewritten.
    #[error("{path}: {source}")]
    Io {
        /// The journal.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// A line other than a torn last one is not a journal record.
    #[error("{path} line {line}: not a journal record: {reason}")]
    Corrupt {
        /// The journal.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
}

/// A watch's start: the changes already in the history, then a receiver
/// for later ones.
pub type Subscription = (Vec<Arc<Event>>, broadcast::Receiver<Arc<Event>>);

/// What happened to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// Created.
    Added,
    /// Changed.
    Modified,
    /// Removed.
    Deleted,
}

impl EventType {
    /// The watch event's `type`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Added => "ADDED",
            Self::Modified => "MODIFIED",
            Self::Deleted => "DELETED",
        }
    }
}

/// One change, as watches see it.
#[derive(Debug, Clone)]
pub struct Event {
    /// What happened.
    pub kind: EventType,
    /// The resource (plural, with group for non-core: `leases.coordination.k8s.io`).
    pub resource: String,
    /// The object after the change (before, for a deletion), carrying the
    /// change's resourceVersion; shared with the store and later events.
    pub object: Arc<Value>,
    /// The change's version.
    pub version: u64,
    /// For a modification, the object before it (a watch with a selector
    /// turns a change into or out of its scope into `ADDED` or `DELETED`).
    pub previous: Option<Arc<Value>>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    resource: String,
    namespace: String,
    name: String,
}

impl Key {
    fn new(resource: &str, namespace: &str, name: &str) -> Self {
        Self {
            resource: resource.to_owned(),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }
}

impl StoreError {
    fn not_found(resource: &str, name: &str) -> Self {
        Self::NotFound {
            resource: resource.to_owned(),
            name: name.to_owned(),
        }
    }
}

#[derive(Default)]
struct Inner {
    version: u64,
    /// Each version is one allocation, shared with the history's events.
    objects: BTreeMap<Key, Arc<Value>>,
    /// Shared with the broadcast channel's slots: one copy of each change.
    history: VecDeque<Arc<Event>>,
    /// Where changes are appended; `None` for a store kept in memory only.
    journal: Option<std::fs::File>,
}

/// One journal line: the store's version after the change, and the object
/// written (`object` absent: the key was deleted).
#[derive(serde::Serialize, serde::Deserialize)]
struct Record {
    version: u64,
    resource: String,
    namespace: String,
    name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    object: Option<Value>,
}

impl Record {
    fn line(&self) -> Result<Vec<u8>, StoreError> {
        let mut line = serde_json::to_vec(self).map_err(|e| StoreError::Storage(e.to_string()))?;
        line.push(b'\n');
        Ok(line)
    }
}

/// The store.
pub struct Store {
    inner: Mutex<Inner>,
    events: broadcast::Sender<Arc<Event>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

impl Default for Store {
    fn default() -> Self {
        Self::new()
    }
}

/// RFC 3339 UTC time of `secs` since the epoch, as Kubernetes writes
/// timestamps (`2026-11-27T21:01:54Z`).
pub fn rfc3339(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Howard Hinnant's civil-from-days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Seconds since the epoch of an RFC 3339 time (`2026-11-27T21:06:47Z`, with
/// optional fraction and offset), as Kubernetes writes timestamps.
pub fn parse_rfc3339(text: &str) -> Option<u64> {
    let bytes = text.as_bytes();
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = text.get(range)?;
        if part.bytes().all(|b| b.is_ascii_digit()) {
            part.parse().ok()
        } else {
            None
        }
    };
    if bytes.len() < 20
        || bytes.get(4) != Some(&b'-')
        || bytes.get(7) != Some(&b'-')
        || !matches!(bytes.get(10), Some(b'T' | b't'))
        || bytes.get(13) != Some(&b':')
        || bytes.get(16) != Some(&b':')
    {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    let mut rest = text.get(19..)?;
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        rest = fraction.get(digits..)?;
    }
    let offset = match rest {
        "Z" | "z" => 0,
        zone if zone.len() == 6 && zone.as_bytes().get(3) == Some(&b':') => {
            let sign = match zone.as_bytes().first() {
                Some(b'+') => 1,
                Some(b'-') => -1,
                _ => return None,
            };
            let part = |range: std::ops::Range<usize>| -> Option<i64> {
                let digits = zone.get(range)?;
                if digits.bytes().all(|b| b.is_ascii_digit()) {
                    digits.parse().ok()
                } else {
                    None
                }
            };
            let (h, m) = (part(1..3)?, part(4..6)?);
            sign * (h * 3600 + m * 60)
        }
        _ => return None,
    };
    // Howard Hinnant's days-from-civil.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset;
    u64::try_from(secs).ok()
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A random version-4 UUID, as object uids are.
pub fn uuid() -> String {
    use ring::rand::SecureRandom as _;
    let mut b = [0u8; 16];
    // The system RNG failing leaves zeros: still a well-formed uid.
    let _ = ring::rand::SystemRandom::new().fill(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

fn name_of(object: &Value) -> Option<&str> {
    object.pointer("/metadata/name").and_then(Value::as_str)
}

fn set_version(object: &mut Value, version: u64) {
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("resourceVersion".into(), json!(version.to_string()));
    }
}

/// The `resourceVersion` an object carries, if any.
pub fn version_of(object: &Value) -> Option<u64> {
    object
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .filter(|v| !v.is_empty())
        .and_then(|v| v.parse().ok())
}

impl Store {
    /// An empty store.
    pub fn new() -> Self {
        let (events, _) = broadcast::channel(1024);
        Self {
            inner: Mutex::default(),
            events,
        }
    }

    /// A store kept in `journal` (created if missing): its objects are
    /// replayed, the file rewritten compacted, and later changes appended.
    pub fn open(journal: &Path) -> Result<Self, OpenError> {
        let io = |source| OpenError::Io {
            path: journal.to_owned(),
            source,
        };
        let mut inner = Inner::default();
        match std::fs::File::open(journal) {
            Ok(file) => {
                let lines: Vec<String> = std::io::BufReader::new(file)
                    .lines()
                    .collect::<Result<_, _>>()
                    .map_err(io)?;
                let count = lines.len();
                for (index, line) in lines.iter().enumerate() {
                    let record: Record = match serde_json::from_str(line) {
                        Ok(r) => r,
                        // A crash mid-append leaves a torn last line: that
                        // change was never acknowledged.
                        Err(_) if index + 1 == count => break,
                        Err(e) => {
                            return Err(OpenError::Corrupt {
                                path: journal.to_owned(),
                                line: index + 1,
                                reason: e.to_string(),
                            });
                        }
                    };
                    let key = Key::new(&record.resource, &record.namespace, &record.name);
                    inner.version = inner.version.max(record.version);
                    match record.object {
                        Some(object) => inner.objects.insert(key, Arc::new(object)),
                        None => inner.objects.remove(&key),
                    };
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        }
        // Compacted: the live objects, and the version counter (kept even
        // when its last change was a deletion, so versions never go back).
        let mut text = Vec::new();
        let header = Record {
            version: inner.version,
            resource: String::new(),
            namespace: String::new(),
            name: String::new(),
            object: None,
        };
        let records = std::iter::once(header).chain(inner.objects.iter().map(|(k, v)| Record {
            version: version_of(v).unwrap_or(0),
            resource: k.resource.clone(),
            namespace: k.namespace.clone(),
            name: k.name.clone(),
            object: Some(Value::clone(v)),
        }));
        for record in records {
            text.extend(
                record
                    .line()
                    .map_err(|e| io(std::io::Error::other(e.to_string())))?,
            );
        }
        let tmp = journal.with_extension("tmp");
        crate::supervisor::write_private(&tmp, &text).map_err(io)?;
        std::fs::rename(&tmp, journal).map_err(io)?;
        inner.journal = Some(
            std::fs::OpenOptions::new()
                .append(true)
                .open(journal)
                .map_err(io)?,
        );
        let (events, _) = broadcast::channel(1024);
        Ok(Self {
            inner: Mutex::new(inner),
            events,
        })
    }

    /// Writes a change to the journal (if any) before it is made: a change
    /// that cannot be kept is refused.
    fn persist(inner: &mut Inner, key: &Key, object: Option<&Value>) -> Result<(), StoreError> {
        let Some(journal) = inner.journal.as_mut() else {
            return Ok(());
        };
        let line = Record {
            version: inner.version + 1,
            resource: key.resource.clone(),
            namespace: key.namespace.clone(),
            name: key.name.clone(),
            object: object.cloned(),
        }
        .line()?;
        journal
            .write_all(&line)
            .map_err(|e| StoreError::Storage(e.to_string()))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The current version (a list's `resourceVersion`).
    #[cfg(test)]
    pub fn version(&self) -> u64 {
        self.lock().version
    }

    fn record(
        &self,
        inner: &mut Inner,
        kind: EventType,
        resource: &str,
        object: Arc<Value>,
        previous: Option<Arc<Value>>,
    ) {
        let event = Event {
            kind,
            resource: resource.to_owned(),
            version: inner.version,
            object,
            previous,
        };
        let event = Arc::new(event);
        inner.history.push_back(Arc::clone(&event));
        while inner.history.len() > HISTORY {
            inner.history.pop_front();
        }
        // Nobody watching is fine.
        let _ = self.events.send(event);
    }

    /// Creates `object` in `namespace` ("" for cluster-scoped resources).
    pub fn create(
        &self,
        resource: &str,
        namespace: &str,
        mut object: Value,
    ) -> Result<Value, StoreError> {
        let meta = object
            .get_mut("metadata")
            .and_then(Value::as_object_mut)
            .ok_or_else(|| StoreError::Invalid("metadata: Required value".into()))?;
        if meta
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .is_empty()
        {
            let Some(prefix) = meta.get("generateName").and_then(Value::as_str) else {
                return Err(StoreError::Invalid(
                    "metadata.name: Required value: name or generateName is required".into(),
                ));
            };
            let suffix: String = uuid()
                .chars()
                .filter(char::is_ascii_alphanumeric)
                .take(5)
                .collect();
            meta.insert("name".into(), json!(format!("{prefix}{suffix}")));
        }
        if !namespace.is_empty() {
            meta.insert("namespace".into(), json!(namespace));
        }
        meta.insert("uid".into(), json!(uuid()));
        meta.insert("creationTimestamp".into(), json!(rfc3339(now())));
        meta.remove("deletionTimestamp");
        if !meta.contains_key("generation") {
            meta.insert("generation".into(), json!(1));
        }
        let name = name_of(&object).unwrap_or_default().to_owned();
        let key = Key::new(resource, namespace, &name);
        let mut inner = self.lock();
        if inner.objects.contains_key(&key) {
            return Err(StoreError::AlreadyExists {
                resource: resource.to_owned(),
                name,
            });
        }
        set_version(&mut object, inner.version + 1);
        Self::persist(&mut inner, &key, Some(&object))?;
        inner.version += 1;
        let shared = Arc::new(object);
        inner.objects.insert(key, Arc::clone(&shared));
        self.record(
            &mut inner,
            EventType::Added,
            resource,
            Arc::clone(&shared),
            None,
        );
        Ok(Value::clone(&shared))
    }

    /// One object.
    pub fn get(&self, resource: &str, namespace: &str, name: &str) -> Result<Value, StoreError> {
        let key = Key::new(resource, namespace, name);
        self.lock()
            .objects
            .get(&key)
            .map(|v| Value::clone(v))
            .ok_or_else(|| StoreError::not_found(resource, name))
    }

    /// Every object of `resource` (in `namespace`, or all namespaces when
    /// `None`) that `keep` accepts, with the store's version.
    pub fn list(
        &self,
        resource: &str,
        namespace: Option<&str>,
        keep: impl Fn(&Value) -> bool,
    ) -> (Vec<Value>, u64) {
        let inner = self.lock();
        let items = inner
            .objects
            .iter()
            .filter(|(k, _)| k.resource == resource && namespace.is_none_or(|ns| k.namespace == ns))
            .map(|(_, v)| v)
            .filter(|v| keep(v))
            .map(|v| Value::clone(v))
            .collect();
        (items, inner.version)
    }

    /// Replaces an object. A `resourceVersion` in `object` must be the
    /// current one; system fields the caller cannot change are kept.
    pub fn update(
        &self,
        resource: &str,
        namespace: &str,
        mut object: Value,
    ) -> Result<Value, StoreError> {
        let name = name_of(&object)
            .ok_or_else(|| StoreError::Invalid("metadata.name: Required value".into()))?
            .to_owned();
        let key = Key::new(resource, namespace, &name);
        let mut inner = self.lock();
        let current = inner
            .objects
            .get(&key)
            .ok_or_else(|| StoreError::not_found(resource, &name))?;
        if let Some(v) = version_of(&object) {
            if Some(v) != version_of(current) {
                return Err(StoreError::Conflict {
                    resource: resource.to_owned(),
                    name,
                });
            }
        }
        // uid, creationTimestamp and namespace are the server's.
        for field in ["uid", "creationTimestamp", "namespace", "generation"] {
            if let Some(value) = current.pointer(&format!("/metadata/{field}")).cloned() {
                if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
                    meta.insert(field.into(), value);
                }
            }
        }
        if current.get("spec") != object.get("spec") {
            let generation = current
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
                meta.insert("generation".into(), json!(generation + 1));
            }
        }
        set_version(&mut object, inner.version + 1);
        Self::persist(&mut inner, &key, Some(&object))?;
        inner.version += 1;
        let shared = Arc::new(object);
        let previous = inner.objects.insert(key, Arc::clone(&shared));
        self.record(
            &mut inner,
            EventType::Modified,
            resource,
            Arc::clone(&shared),
            previous,
        );
        Ok(Value::clone(&shared))
    }

    /// Removes an object; `uid` and `version` are the request's
    /// preconditions.
    pub fn delete(
        &self,
        resource: &str,
        namespace: &str,
        name: &str,
        uid: Option<&str>,
        version: Option<u64>,
    ) -> Result<Value, StoreError> {
        let key = Key::new(resource, namespace, name);
        let mut inner = self.lock();
        let current = inner
            .objects
            .get(&key)
            .ok_or_else(|| StoreError::not_found(resource, name))?;
        let uid_differs = uid
            .is_some_and(|u| current.pointer("/metadata/uid").and_then(Value::as_str) != Some(u));
        let version_differs = version.is_some_and(|v| version_of(current) != Some(v));
        if uid_differs || version_differs {
            return Err(StoreError::Conflict {
                resource: resource.to_owned(),
                name: name.to_owned(),
            });
        }
        Self::persist(&mut inner, &key, None)?;
        let mut object = inner
            .objects
            .remove(&key)
            .map(|o| Value::clone(&o))
            .unwrap_or_default();
        inner.version += 1;
        set_version(&mut object, inner.version);
        self.record(
            &mut inner,
            EventType::Deleted,
            resource,
            Arc::new(object.clone()),
            None,
        );
        Ok(object)
    }

    /// A watch of `resource` from `since` (exclusive): the changes already in
    /// the history, then a receiver for later ones. `since` 0 means "from
    /// now". Older than the history: [`StoreError::Gone`].
    pub fn watch(&self, resource: &str, since: u64) -> Result<Subscription, StoreError> {
        let inner = self.lock();
        // Subscribed under the lock: no change falls between backlog and stream.
        let receiver = self.events.subscribe();
        if since == 0 {
            return Ok((Vec::new(), receiver));
        }
        let oldest = inner
            .history
            .front()
            .map_or(inner.version, |e| e.version.saturating_sub(1));
        if since < oldest {
            return Err(StoreError::Gone {
                requested: since,
                oldest,
            });
        }
        let backlog = inner
            .history
            .iter()
            .filter(|e| e.version > since && e.resource == resource)
            .cloned()
            .collect();
        Ok((backlog, receiver))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": {"nodeName": ""}})
    }

    #[test]
    fn rfc3339_round_trips_the_stores_timestamps() {
        for secs in [0, 951_782_400, 1_795_813_314] {
            assert_eq!(parse_rfc3339(&rfc3339(secs)), Some(secs));
        }
        assert_eq!(
            parse_rfc3339("2026-11-27T21:13:50.384202Z"),
            Some(1_795_814_030)
        );
        assert_eq!(
            parse_rfc3339("2026-11-27T23:13:50+02:00"),
            Some(1_795_814_030)
        );
        assert_eq!(
            parse_rfc3339("2026-11-27T19:13:50.5-02:00"),
            Some(1_795_814_030)
        );
        for bad in [
            "",
            "2026-11-27",
            "2026-13-27T21:13:50Z",
            "2026-11-27T21:13:50",
            "x026-11-27T21:13:50Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn timestamps_and_uids_look_like_kubernetes_ones() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_795_813_314), "2026-11-27T21:01:54Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        let u = uuid();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert_ne!(uuid(), u);
    }

    #[test]
    fn create_get_update_delete_with_versions() {
        let store = Store::new();
        let created = store.create("pods", "default", pod("a")).unwrap();
        assert_eq!(created["metadata"]["namespace"], "default");
        assert_eq!(created["metadata"]["resourceVersion"], "1");
        assert_eq!(created["metadata"]["generation"], 1);
        assert!(matches!(
            store.create("pods", "default", pod("a")),
            Err(StoreError::AlreadyExists { .. })
        ));
        // Same name, other namespace: another object.
        store.create("pods", "kube-system", pod("a")).unwrap();
        let generated = store
            .create(
                "pods",
                "default",
                json!({"metadata": {"generateName": "web-"}}),
            )
            .unwrap();
        assert!(
            generated["metadata"]["name"]
                .as_str()
                .unwrap()
                .starts_with("web-")
        );

        let mut changed = created.clone();
        changed["spec"]["nodeName"] = json!("n1");
        changed["metadata"]["uid"] = json!("forged");
        let updated = store.update("pods", "default", changed.clone()).unwrap();
        assert_eq!(updated["metadata"]["uid"], created["metadata"]["uid"]);
        assert_eq!(updated["metadata"]["generation"], 2);
        assert_eq!(updated["metadata"]["resourceVersion"], "4");
        // The stale version is refused.
        assert!(matches!(
            store.update("pods", "default", changed),
            Err(StoreError::Conflict { .. })
        ));
        let (all, version) = store.list("pods", None, |_| true);
        assert_eq!((all.len(), version), (3, 4));
        let (mine, _) = store.list("pods", Some("default"), |p| p["spec"]["nodeName"] == "n1");
        assert_eq!(mine.len(), 1);

        assert!(matches!(
            store.delete("pods", "default", "a", Some("other-uid"), None),
            Err(StoreError::Conflict { .. })
        ));
        let uid = updated["metadata"]["uid"].as_str().unwrap();
        let deleted = store
            .delete("pods", "default", "a", Some(uid), Some(4))
            .unwrap();
        assert_eq!(deleted["metadata"]["resourceVersion"], "5");
        assert!(matches!(
            store.get("pods", "default", "a"),
            Err(StoreError::NotFound { .. })
        ));
        assert!(
            store
                .create("pods", "default", json!({"metadata": {}}))
                .is_err()
        );
        assert!(
            store
                .create("pods", "default", json!({"spec": {}}))
                .is_err()
        );
    }

    #[test]
    fn an_opened_store_keeps_objects_and_versions_across_reopening() {
        let dir = std::env::temp_dir().join(format!("armlet-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("objects.jsonl");
        let store = Store::open(&path).unwrap();
        let a = store.create("pods", "default", pod("a")).unwrap();
        store.create("pods", "default", pod("b")).unwrap();
        let mut changed = a.clone();
        changed["spec"]["nodeName"] = json!("n1");
        store.update("pods", "default", changed).unwrap();
        store.delete("pods", "default", "b", None, None).unwrap();
        drop(store);

        let store = Store::open(&path).unwrap();
        let kept = store.get("pods", "default", "a").unwrap();
        assert_eq!(kept["spec"]["nodeName"], "n1");
        assert_eq!(kept["metadata"]["uid"], a["metadata"]["uid"]);
        assert!(store.get("pods", "default", "b").is_err());
        // The deletion's version is not reused.
        assert_eq!(store.version(), 4);
        // History is gone: a watch from before the restart relists.
        assert!(matches!(
            store.watch("pods", 2),
            Err(StoreError::Gone { .. })
        ));
        let c = store.create("pods", "default", pod("c")).unwrap();
        assert_eq!(c["metadata"]["resourceVersion"], "5");
        drop(store);

        // A torn last line (a crash mid-append) is dropped; a bad line
        // elsewhere is an error naming it.
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("{\"version\": 9, \"reso");
        std::fs::write(&path, &text).unwrap();
        let store = Store::open(&path).unwrap();
        assert!(store.get("pods", "default", "c").is_ok());
        assert_eq!(store.version(), 5);
        drop(store);
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, format!("garbage\n{text}")).unwrap();
        let err = Store::open(&path).unwrap_err().to_string();
        assert!(err.contains("line 1"), "{err}");
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&path).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn watches_replay_history_then_stream_and_old_versions_are_gone() {
        let store = Store::new();
        store.create("pods", "default", pod("a")).unwrap();
        store
            .create("nodes", "", json!({"metadata": {"name": "n"}}))
            .unwrap();
        store.create("pods", "default", pod("b")).unwrap();
        let (backlog, mut rx) = store.watch("pods", 1).unwrap();
        assert_eq!(backlog.len(), 1);
        assert_eq!(backlog[0].object["metadata"]["name"], "b");
        store.delete("pods", "default", "a", None, None).unwrap();
        let event = rx.recv().await.unwrap();
        assert_eq!((event.kind, event.version), (EventType::Deleted, 4));
        assert_eq!(event.kind.as_str(), "DELETED");

        for i in 0..HISTORY + 10 {
            store
                .create(
                    "configmaps",
                    "default",
                    json!({"metadata": {"name": format!("c{i}")}}),
                )
                .unwrap();
        }
        assert!(matches!(
            store.watch("pods", 2),
            Err(StoreError::Gone { .. })
        ));
        assert!(store.watch("pods", store.version()).unwrap().0.is_empty());
    }
}
