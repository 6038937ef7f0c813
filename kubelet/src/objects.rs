//! The ConfigMaps, Secrets and Services the node's pods use, read from the API
//! server and cached, so that [`armlet_pods`] (which does no I/O) can look them
//! up synchronously through [`ObjectSource`].
//!
//! ConfigMaps and Secrets follow the kubelet's "Get"/"Cache" strategy
//! (`k8s121:pkg/kubelet/util/manager/cache_based_manager.go`): the pod worker
//! awaits [`ApiObjects::refresh_for`] before it builds a pod's containers and
//! volumes, which GETs every object the pod references whose cached copy is
//! older than a short TTL. Only referenced objects are read, one by one, in the
//! pod's namespace: the Node authorizer lets a node read exactly the objects
//! its pods reference, never list them.
//!
//! Services are LISTed across all namespaces at most every
//! [`DEFAULT_SERVICES_TTL`] (the kubelet watches them; they only feed the
//! service environment variables of containers being started).
//!
//! When the API server cannot be reached the last answer is kept: a restarted
//! agent on a board that lost its network seeds the cache with the ConfigMaps
//! and Services it saved locally ([`ApiObjects::seed`]), so its pods can start
//! again. Secrets are never saved (they must not reach the SD card), so pods
//! using them wait for the server.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use armlet_pods::objects::{LookupError, ObjectSource};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use kube::api::{Api, ListParams};

/// How long a fetched ConfigMap or Secret is used before it is read again.
/// Short, so that an edited ConfigMap reaches the pods that start (or remount)
/// after the edit within seconds, as with the kubelet's watches.
pub const DEFAULT_TTL: Duration = Duration::from_secs(5);

/// How long a Service list is used before the Services are listed again.
pub const DEFAULT_SERVICES_TTL: Duration = Duration::from_secs(30);

/// How long one request may take before the server counts as unreachable.
/// Bounded, because the pod worker waits for the refresh before it starts
/// containers: a board whose network is gone must not wait for TCP timeouts.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The ConfigMaps and Secrets a pod refers to, by name, in its namespace (as
/// `podutil.VisitPodConfigmapNames`/`VisitPodSecretNames` walk a pod, and as
/// the Node authorizer's graph records them).
///
/// Walked: every container's (init, regular, ephemeral) `env[].valueFrom`
/// `configMapKeyRef`/`secretKeyRef` and `envFrom` `configMapRef`/`secretRef`;
/// `configMap` and `secret` volumes and the `configMap`/`secret` sources of
/// `projected` volumes; `imagePullSecrets`. The Secrets of volume plugins
/// armlet does not provide (CSI, CephFS, iSCSI, …) are left out: such pods
/// fail at volume setup anyway.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodReferences {
    /// The pod's namespace (`default` when unset).
    pub namespace: String,
    /// Names of the ConfigMaps referenced.
    pub config_maps: BTreeSet<String>,
    /// Names of the Secrets referenced.
    pub secrets: BTreeSet<String>,
}

impl PodReferences {
    /// Walks `pod`.
    pub fn of(pod: &Pod) -> Self {
        let mut refs = Self {
            namespace: namespace_of(pod).to_owned(),
            ..Self::default()
        };
        let Some(spec) = pod.spec.as_ref() else {
            return refs;
        };
        // An empty name is no reference: a GET of "" would be a LIST.
        fn add(set: &mut BTreeSet<String>, name: &str) {
            if !name.is_empty() {
                set.insert(name.to_owned());
            }
        }
        for pull in spec.image_pull_secrets.iter().flatten() {
            add(&mut refs.secrets, &pull.name);
        }
        let envs = spec
            .init_containers
            .iter()
            .flatten()
            .chain(&spec.containers)
            .map(|c| (c.env.as_deref(), c.env_from.as_deref()))
            .chain(
                spec.ephemeral_containers
                    .iter()
                    .flatten()
                    .map(|c| (c.env.as_deref(), c.env_from.as_deref())),
            );
        for (env, env_from) in envs {
            for var in env.unwrap_or_default() {
                let Some(from) = &var.value_from else {
                    continue;
                };
                if let Some(r) = &from.config_map_key_ref {
                    add(&mut refs.config_maps, &r.name);
                }
                if let Some(r) = &from.secret_key_ref {
                    add(&mut refs.secrets, &r.name);
                }
            }
            for from in env_from.unwrap_or_default() {
                if let Some(r) = &from.config_map_ref {
                    add(&mut refs.config_maps, &r.name);
                }
                if let Some(r) = &from.secret_ref {
                    add(&mut refs.secrets, &r.name);
                }
            }
        }
        for volume in spec.volumes.iter().flatten() {
            if let Some(cm) = &volume.config_map {
                add(&mut refs.config_maps, &cm.name);
            }
            if let Some(name) = volume
                .secret
                .as_ref()
                .and_then(|s| s.secret_name.as_deref())
            {
                add(&mut refs.secrets, name);
            }
            let sources = volume.projected.as_ref().and_then(|p| p.sources.as_deref());
            for source in sources.unwrap_or_default() {
                if let Some(cm) = &source.config_map {
                    add(&mut refs.config_maps, &cm.name);
                }
                if let Some(s) = &source.secret {
                    add(&mut refs.secrets, &s.name);
                }
            }
        }
        refs
    }
}

/// The namespace armlet-pods looks a pod's objects up in (exactly as it
/// derives it, so that the cache keys match its lookups).
pub(crate) fn namespace_of(pod: &Pod) -> &str {
    pod.metadata.namespace.as_deref().unwrap_or("default")
}

/// The text a failed request is reported with: the API server's own message
/// when it answered (`configmaps "x" is forbidden: …`, as the kubelet shows
/// it), else the client error with its causes.
pub(crate) fn error_text(error: &kube::Error) -> String {
    if let kube::Error::Api(response) = error {
        if !response.message.is_empty() {
            return response.message.clone();
        }
        return format!("{} ({})", response.reason, response.code);
    }
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let more = cause.to_string();
        // kube's and hyper's messages often embed their source already.
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    text
}

/// Awaits `request`, at most `limit`, turning every failure into its text.
pub(crate) async fn bounded<T>(
    limit: Duration,
    request: impl Future<Output = Result<T, kube::Error>>,
) -> Result<T, String> {
    match tokio::time::timeout(limit, request).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(error_text(&e)),
        Err(_) => Err(format!(
            "the API server did not answer within {}s",
            limit.as_secs()
        )),
    }
}

/// Locks `mutex`, recovering from a panic elsewhere (the cache holds plain
/// data, valid between any two statements).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What the cache knows of one object.
#[derive(Debug, Clone)]
struct Entry<T> {
    /// The server's last answer: `Some(None)` is "does not exist"; `None` is
    /// "never answered".
    answer: Option<Option<T>>,
    /// When the object was last asked for (answered or not); `None` for
    /// entries seeded from local state, which are read again first thing.
    checked_at: Option<Instant>,
    /// Why the last request failed; cleared by an answer.
    error: Option<String>,
}

impl<T> Default for Entry<T> {
    fn default() -> Self {
        Self {
            answer: None,
            checked_at: None,
            error: None,
        }
    }
}

impl<T: Clone> Entry<T> {
    /// Whether the object should be read again at `now`. An object the server
    /// never answered for is always read again: the pod cannot proceed without
    /// it, and the pod worker's back-off paces the attempts.
    fn due(&self, now: Instant, ttl: Duration) -> bool {
        self.answer.is_none()
            || self
                .checked_at
                .is_none_or(|at| now.saturating_duration_since(at) >= ttl)
    }

    fn record(&mut self, outcome: Result<Option<T>, String>, now: Instant) {
        self.checked_at = Some(now);
        match outcome {
            Ok(answer) => {
                self.answer = Some(answer);
                self.error = None;
            }
            Err(e) => self.error = Some(e),
        }
    }

    fn lookup(&self, namespace: &str, name: &str) -> Result<Option<T>, LookupError> {
        match (&self.answer, &self.error) {
            (Some(answer), _) => Ok(answer.clone()),
            (None, Some(e)) => Err(LookupError::Unavailable(e.clone())),
            // The kubelet's words for an object its manager was never asked
            // to fetch.
            (None, None) => Err(LookupError::Unavailable(format!(
                "object {namespace:?}/{name:?} not registered"
            ))),
        }
    }
}

/// The kubelet's message when the Service list was never read.
const SERVICES_NOT_SYNCED: &str =
    "services have not yet been read at least once, cannot construct envvars";

/// The cached Service list.
#[derive(Debug, Default)]
struct ServiceList {
    /// Every Service of the cluster, from the last successful list or the seed.
    items: Option<Vec<Service>>,
    /// When the last list was attempted, and whether it succeeded.
    checked: Option<(Instant, bool)>,
    /// Why the last list failed.
    error: Option<String>,
}

impl ServiceList {
    /// Whether to list at `now`: `fresh` after a success, `retry` after a
    /// failure, at once when never listed (or only seeded).
    fn due(&self, now: Instant, fresh: Duration, retry: Duration) -> bool {
        match self.checked {
            None => true,
            Some((at, ok)) => now.saturating_duration_since(at) >= if ok { fresh } else { retry },
        }
    }
}

type Key = (String, String);

#[derive(Debug, Default)]
struct Cache {
    config_maps: BTreeMap<Key, Entry<ConfigMap>>,
    secrets: BTreeMap<Key, Entry<Secret>>,
    services: ServiceList,
}

fn key(namespace: &str, name: &str) -> Key {
    (namespace.to_owned(), name.to_owned())
}

/// The API objects the node's pods use, cached: a cheap, cloneable handle
/// (clones share the cache). See the module documentation.
#[derive(Clone)]
pub struct ApiObjects {
    client: kube::Client,
    cache: Arc<Mutex<Cache>>,
    /// One Service list at a time: the pod workers of a node that just started
    /// would otherwise all list at once.
    services_gate: Arc<futures::lock::Mutex<()>>,
    ttl: Duration,
    services_ttl: Duration,
    timeout: Duration,
}

impl fmt::Debug for ApiObjects {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the cache: it holds Secrets.
        f.debug_struct("ApiObjects")
            .field("ttl", &self.ttl)
            .field("services_ttl", &self.services_ttl)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl ApiObjects {
    /// An empty cache reading through `client` (the node's identity), with
    /// [`DEFAULT_TTL`], [`DEFAULT_SERVICES_TTL`] and
    /// [`DEFAULT_REQUEST_TIMEOUT`].
    pub fn new(client: kube::Client) -> Self {
        Self {
            client,
            cache: Arc::default(),
            services_gate: Arc::default(),
            ttl: DEFAULT_TTL,
            services_ttl: DEFAULT_SERVICES_TTL,
            timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }

    /// Sets how long a fetched ConfigMap or Secret is reused (also the retry
    /// interval of a failed Service list).
    #[must_use]
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Sets how long a Service list is reused.
    #[must_use]
    pub fn with_services_ttl(mut self, ttl: Duration) -> Self {
        self.services_ttl = ttl;
        self
    }

    /// Sets how long one request may take.
    #[must_use]
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Reads the ConfigMaps and Secrets `pod` references (see
    /// [`PodReferences`]) whose cached copy is older than the TTL, or missing.
    ///
    /// A 404 is recorded as "does not exist"; any other failure keeps the
    /// previous answer (logged). Errors with an object the server never
    /// answered for, as [`LookupError::Unavailable`] with the API error text
    /// (the lookups then answer the same); the other objects are refreshed
    /// all the same.
    pub async fn refresh_for(&self, pod: &Pod) -> Result<(), LookupError> {
        let refs = PodReferences::of(pod);
        let ns = refs.namespace.as_str();
        let now = Instant::now();
        let (config_maps, secrets) = {
            let cache = lock(&self.cache);
            let config_maps: Vec<&String> = (refs.config_maps.iter())
                .filter(|name| {
                    let entry = cache.config_maps.get(&key(ns, name));
                    entry.is_none_or(|e| e.due(now, self.ttl))
                })
                .collect();
            let secrets: Vec<&String> = (refs.secrets.iter())
                .filter(|name| {
                    let entry = cache.secrets.get(&key(ns, name));
                    entry.is_none_or(|e| e.due(now, self.ttl))
                })
                .collect();
            (config_maps, secrets)
        };
        if !config_maps.is_empty() || !secrets.is_empty() {
            let cm_api = Api::<ConfigMap>::namespaced(self.client.clone(), ns);
            let secret_api = Api::<Secret>::namespaced(self.client.clone(), ns);
            let (cm_answers, secret_answers) = futures::future::join(
                futures::future::join_all(
                    config_maps
                        .iter()
                        .map(|name| bounded(self.timeout, cm_api.get_opt(name))),
                ),
                futures::future::join_all(
                    secrets
                        .iter()
                        .map(|name| bounded(self.timeout, secret_api.get_opt(name))),
                ),
            )
            .await;
            let now = Instant::now();
            let mut cache = lock(&self.cache);
            for (name, outcome) in config_maps.into_iter().zip(cm_answers) {
                let entry = cache.config_maps.entry(key(ns, name)).or_default();
                log_outcome("configmap", ns, name, entry, &outcome);
                entry.record(outcome, now);
            }
            for (name, outcome) in secrets.into_iter().zip(secret_answers) {
                let entry = cache.secrets.entry(key(ns, name)).or_default();
                log_outcome("secret", ns, name, entry, &outcome);
                entry.record(outcome, now);
            }
        }
        // Report the first object the pod cannot have, whether it failed now
        // or earlier (an entry checked within the TTL is not asked again).
        let cache = lock(&self.cache);
        for name in &refs.config_maps {
            if let Some(entry) = cache.config_maps.get(&key(ns, name)) {
                entry.lookup(ns, name)?;
            }
        }
        for name in &refs.secrets {
            if let Some(entry) = cache.secrets.get(&key(ns, name)) {
                entry.lookup(ns, name)?;
            }
        }
        Ok(())
    }

    /// Lists every Service of the cluster when the last list is older than
    /// the Services TTL (or failed more than the TTL ago, or never happened).
    /// On failure the previous list stays in use; errors only when there is
    /// none, with the API error text.
    pub async fn refresh_services(&self) -> Result<(), LookupError> {
        let due = |cache: &Cache| {
            cache
                .services
                .due(Instant::now(), self.services_ttl, self.ttl)
        };
        if !due(&lock(&self.cache)) {
            return services_state(&lock(&self.cache));
        }
        let _gate = self.services_gate.lock().await;
        // Whoever held the gate may just have listed.
        if !due(&lock(&self.cache)) {
            return services_state(&lock(&self.cache));
        }
        let api = Api::<Service>::all(self.client.clone());
        let outcome = bounded(self.timeout, api.list(&ListParams::default())).await;
        let now = Instant::now();
        let mut cache = lock(&self.cache);
        let services = &mut cache.services;
        match outcome {
            Ok(list) => {
                tracing::debug!(services = list.items.len(), "listed services");
                services.items = Some(list.items);
                services.checked = Some((now, true));
                services.error = None;
            }
            Err(e) => {
                if services.items.is_some() {
                    tracing::warn!(error = %e, "listing services failed; keeping the previous list");
                } else {
                    tracing::debug!(error = %e, "listing services failed");
                }
                services.checked = Some((now, false));
                services.error = Some(e);
            }
        }
        services_state(&cache)
    }

    /// Fills the cache with objects saved locally, for an agent that starts
    /// while the API server is unreachable. An object the server already
    /// answered for is left alone (the server wins); seeded objects are read
    /// again at the next refresh, and kept if the server cannot be reached.
    pub fn seed(&self, config_maps: Vec<ConfigMap>, services: Vec<Service>) {
        let mut cache = lock(&self.cache);
        let mut seeded = 0usize;
        for cm in config_maps {
            let (Some(ns), Some(name)) = (&cm.metadata.namespace, &cm.metadata.name) else {
                continue;
            };
            let entry = cache.config_maps.entry(key(ns, name)).or_default();
            if entry.answer.is_none() {
                entry.answer = Some(Some(cm));
                seeded += 1;
            }
        }
        if cache.services.items.is_none() {
            cache.services.items = Some(services);
        }
        tracing::debug!(
            config_maps = seeded,
            "seeded the object cache from local state"
        );
    }

    /// The cached ConfigMaps that `pods` reference and that exist, for the
    /// agent to save locally. Secrets have no such accessor: they never go
    /// to flash.
    pub fn snapshot_config_maps(&self, pods: &[&Pod]) -> Vec<ConfigMap> {
        let cache = lock(&self.cache);
        let mut keys = BTreeSet::new();
        for pod in pods {
            let refs = PodReferences::of(pod);
            for name in refs.config_maps {
                keys.insert(key(&refs.namespace, &name));
            }
        }
        keys.iter()
            .filter_map(|k| cache.config_maps.get(k))
            .filter_map(|e| e.answer.clone().flatten())
            .collect()
    }

    /// The cached Service list (every namespace), if there is one, for the
    /// agent to save locally.
    pub fn snapshot_services(&self) -> Option<Vec<Service>> {
        lock(&self.cache).services.items.clone()
    }

    /// Drops the ConfigMaps and Secrets that none of `live` references (pods
    /// deleted, or changed to use other objects), so that the cache neither
    /// grows nor keeps Secrets in memory longer than a pod needs them.
    pub fn forget_unused(&self, live: &[&Pod]) {
        let mut config_maps = BTreeSet::new();
        let mut secrets = BTreeSet::new();
        for pod in live {
            let refs = PodReferences::of(pod);
            for name in refs.config_maps {
                config_maps.insert(key(&refs.namespace, &name));
            }
            for name in refs.secrets {
                secrets.insert(key(&refs.namespace, &name));
            }
        }
        let mut cache = lock(&self.cache);
        cache.config_maps.retain(|k, _| config_maps.contains(k));
        cache.secrets.retain(|k, _| secrets.contains(k));
    }
}

fn services_state(cache: &Cache) -> Result<(), LookupError> {
    cache.services.items.as_ref().map(|_| ()).ok_or_else(|| {
        LookupError::Unavailable(
            cache
                .services
                .error
                .clone()
                .unwrap_or_else(|| SERVICES_NOT_SYNCED.to_owned()),
        )
    })
}

fn log_outcome<T: kube::Resource>(
    kind: &str,
    ns: &str,
    name: &str,
    entry: &Entry<T>,
    outcome: &Result<Option<T>, String>,
) {
    match outcome {
        Err(e) if matches!(entry.answer, Some(Some(_))) => {
            tracing::warn!(kind, namespace = ns, name, error = %e, "reading failed; keeping the cached copy");
        }
        Err(e) => tracing::debug!(kind, namespace = ns, name, error = %e, "reading failed"),
        Ok(new) => {
            let version = |o: Option<&T>| o.and_then(|o| o.meta().resource_version.clone());
            let old = entry.answer.as_ref().map(|a| version(a.as_ref()));
            let new = version(new.as_ref());
            if old.as_ref() != Some(&new) {
                tracing::debug!(kind, namespace = ns, name, resource_version = ?new, "read");
            }
        }
    }
}

impl ObjectSource for ApiObjects {
    fn config_map(&self, namespace: &str, name: &str) -> Result<Option<ConfigMap>, LookupError> {
        match lock(&self.cache).config_maps.get(&key(namespace, name)) {
            Some(entry) => entry.lookup(namespace, name),
            None => Entry::<ConfigMap>::default().lookup(namespace, name),
        }
    }

    fn secret(&self, namespace: &str, name: &str) -> Result<Option<Secret>, LookupError> {
        match lock(&self.cache).secrets.get(&key(namespace, name)) {
            Some(entry) => entry.lookup(namespace, name),
            None => Entry::<Secret>::default().lookup(namespace, name),
        }
    }

    fn services(&self, namespace: &str) -> Result<Vec<Service>, LookupError> {
        let cache = lock(&self.cache);
        services_state(&cache)?;
        Ok(cache
            .services
            .items
            .iter()
            .flatten()
            .filter(|s| s.metadata.namespace.as_deref() == Some(namespace))
            .cloned()
            .collect())
    }
}

/// A minimal HTTP/1.1 API server for tests: answers each request with what
/// `handler` returns and records the requests.
#[cfg(test)]
pub(crate) mod fake_api {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;
    use std::sync::{Arc, Mutex};

    /// One request: method, path (with query), body.
    pub(crate) type Request = (String, String, Vec<u8>);

    /// Serves until the test process exits; returns the client and the log.
    pub(crate) fn serve(
        handler: impl Fn(&str, &str, &[u8]) -> (u16, String) + Send + 'static,
    ) -> (kube::Client, Arc<Mutex<Vec<Request>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&log);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                let mut parts = line.split_whitespace();
                let method = parts.next().unwrap_or_default().to_owned();
                let path = parts.next().unwrap_or_default().to_owned();
                let mut length = 0usize;
                loop {
                    let mut header = String::new();
                    if reader.read_line(&mut header).unwrap_or(0) == 0 || header.trim().is_empty() {
                        break;
                    }
                    if let Some((k, v)) = header.split_once(':') {
                        if k.eq_ignore_ascii_case("content-length") {
                            length = v.trim().parse().unwrap_or(0);
                        }
                    }
                }
                let mut body = vec![0; length];
                let _ = reader.read_exact(&mut body);
                let (code, reply) = handler(&method, &path, &body);
                seen.lock().unwrap().push((method, path, body));
                let _ = write!(
                    stream,
                    "HTTP/1.1 {code} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
                    reply.len()
                );
            }
        });
        let config = kube::Config::new(format!("http://{addr}").parse().unwrap());
        (kube::Client::try_from(config).unwrap(), log)
    }

    /// A Kubernetes NotFound status.
    pub(crate) fn not_found(kind: &str, name: &str) -> (u16, String) {
        (
            404,
            serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                "message": format!("{kind} {name:?} not found"), "reason": "NotFound", "code": 404})
            .to_string(),
        )
    }

    /// A client for a server that refuses connections.
    pub(crate) fn unreachable() -> kube::Client {
        // Bind then drop: the port is free, so connecting is refused at once.
        let addr = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let config = kube::Config::new(format!("http://{addr}").parse().unwrap());
        kube::Client::try_from(config).unwrap()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn pod(yaml: &str) -> Pod {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    fn cm(ns: &str, name: &str, value: &str) -> ConfigMap {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": ns, "resourceVersion": "1"},
            "data": {"k": value}
        }))
        .unwrap()
    }

    fn names(set: &BTreeSet<String>) -> Vec<&str> {
        set.iter().map(String::as_str).collect()
    }

    const EVERYTHING: &str = r#"
metadata: {name: web, namespace: shop, uid: u1}
spec:
  imagePullSecrets: [{name: regcred}, {name: ""}]
  initContainers:
  - name: init
    envFrom: [{configMapRef: {name: init-env}}]
  containers:
  - name: app
    env:
    - {name: A, value: plain}
    - {name: B, valueFrom: {configMapKeyRef: {name: cfg, key: b}}}
    - {name: C, valueFrom: {secretKeyRef: {name: creds, key: c, optional: true}}}
    - {name: D, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
    envFrom: [{secretRef: {name: env-secret}}, {configMapRef: {name: cfg}}]
  ephemeralContainers:
  - name: debug
    env: [{name: E, valueFrom: {secretKeyRef: {name: debug-secret, key: e}}}]
  volumes:
  - {name: v1, configMap: {name: files}}
  - {name: v2, secret: {secretName: certs}}
  - {name: v3, emptyDir: {}}
  - name: kube-api-access-x
    projected:
      sources:
      - serviceAccountToken: {path: token, expirationSeconds: 3607}
      - configMap: {name: kube-root-ca.crt, items: [{key: ca.crt, path: ca.crt}]}
      - secret: {name: projected-secret}
      - downwardAPI: {items: [{path: namespace, fieldRef: {fieldPath: metadata.namespace}}]}
"#;

    #[test]
    fn the_walk_finds_every_reference() {
        let refs = PodReferences::of(&pod(EVERYTHING));
        assert_eq!(refs.namespace, "shop");
        assert_eq!(
            names(&refs.config_maps),
            ["cfg", "files", "init-env", "kube-root-ca.crt"]
        );
        assert_eq!(
            names(&refs.secrets),
            [
                "certs",
                "creds",
                "debug-secret",
                "env-secret",
                "projected-secret",
                "regcred"
            ]
        );
    }

    #[test]
    fn a_bare_pod_references_nothing_in_the_default_namespace() {
        let refs = PodReferences::of(&pod("metadata: {name: p}"));
        assert_eq!(
            refs,
            PodReferences {
                namespace: "default".into(),
                ..PodReferences::default()
            }
        );
        let refs = PodReferences::of(&pod(
            "metadata: {name: p}\nspec: {containers: [{name: c, image: i}]}",
        ));
        assert!(refs.config_maps.is_empty() && refs.secrets.is_empty());
    }

    #[test]
    fn entries_are_due_after_the_ttl_or_until_answered() {
        let t0 = Instant::now();
        let ttl = Duration::from_secs(5);
        let mut e = Entry::<ConfigMap>::default();
        assert!(e.due(t0, ttl));
        e.record(Err("down".into()), t0);
        // Never answered: asked again at once, and reported as the error.
        assert!(e.due(t0, ttl));
        assert_eq!(
            e.lookup("ns", "x"),
            Err(LookupError::Unavailable("down".into()))
        );
        e.record(Ok(None), t0);
        assert!(!e.due(t0 + Duration::from_secs(4), ttl));
        assert!(e.due(t0 + ttl, ttl));
        assert_eq!(e.lookup("ns", "x"), Ok(None));
        e.record(Ok(Some(cm("ns", "x", "1"))), t0);
        e.record(Err("down".into()), t0 + ttl);
        // The previous value survives a failure, and is not asked for again
        // before the TTL.
        assert_eq!(e.lookup("ns", "x"), Ok(Some(cm("ns", "x", "1"))));
        assert!(!e.due(t0 + ttl, ttl));
    }

    #[test]
    fn services_are_listed_again_after_their_ttl_or_the_retry_interval() {
        let t0 = Instant::now();
        let (fresh, retry) = (Duration::from_secs(30), Duration::from_secs(5));
        let mut s = ServiceList::default();
        assert!(s.due(t0, fresh, retry));
        s.checked = Some((t0, true));
        assert!(!s.due(t0 + retry, fresh, retry));
        assert!(s.due(t0 + fresh, fresh, retry));
        s.checked = Some((t0, false));
        assert!(s.due(t0 + retry, fresh, retry));
    }

    #[tokio::test]
    async fn lookups_before_any_refresh_are_unavailable_with_the_kubelets_words() {
        let objects = ApiObjects::new(fake_api::unreachable());
        assert_eq!(
            objects.config_map("default", "kube-root-ca.crt"),
            Err(LookupError::Unavailable(
                "object \"default\"/\"kube-root-ca.crt\" not registered".into()
            ))
        );
        assert_eq!(
            objects.services("default"),
            Err(LookupError::Unavailable(SERVICES_NOT_SYNCED.into()))
        );
    }

    #[tokio::test]
    async fn refresh_gets_referenced_objects_and_records_not_found() {
        let served = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&served);
        let (client, log) = fake_api::serve(move |method, path, _| {
            count.fetch_add(1, Ordering::SeqCst);
            assert_eq!(method, "GET");
            match path.split('?').next().unwrap_or_default() {
                "/api/v1/namespaces/shop/configmaps/cfg" => (
                    200,
                    serde_json::to_string(&cm("shop", "cfg", "v")).unwrap(),
                ),
                "/api/v1/namespaces/shop/secrets/creds" => (
                    200,
                    r#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"creds","namespace":"shop"},"data":{"c":"eA=="}}"#.into(),
                ),
                "/api/v1/namespaces/shop/secrets/gone" => fake_api::not_found("secrets", "gone"),
                _ => (
                    403,
                    r#"{"kind":"Status","apiVersion":"v1","status":"Failure","message":"forbidden here","reason":"Forbidden","code":403}"#.into(),
                ),
            }
        });
        let objects = ApiObjects::new(client);
        let p = pod(r#"
metadata: {name: web, namespace: shop}
spec:
  containers:
  - name: app
    env:
    - {name: B, valueFrom: {configMapKeyRef: {name: cfg, key: k}}}
    - {name: C, valueFrom: {secretKeyRef: {name: creds, key: c}}}
    - {name: D, valueFrom: {secretKeyRef: {name: gone, key: c, optional: true}}}
"#);
        objects.refresh_for(&p).await.unwrap();
        assert_eq!(served.load(Ordering::SeqCst), 3);
        assert_eq!(
            objects.config_map("shop", "cfg").unwrap(),
            Some(cm("shop", "cfg", "v"))
        );
        assert!(objects.secret("shop", "creds").unwrap().is_some());
        assert_eq!(objects.secret("shop", "gone"), Ok(None));
        // Within the TTL nothing is read again.
        objects.refresh_for(&p).await.unwrap();
        assert_eq!(served.load(Ordering::SeqCst), 3);
        let paths: BTreeSet<String> = log.lock().unwrap().iter().map(|r| r.1.clone()).collect();
        assert_eq!(paths.len(), 3);

        // A reference the node may not read: the server's message.
        let denied = pod(r#"
metadata: {name: other, namespace: shop}
spec: {volumes: [{name: v, configMap: {name: secret-plans}}], containers: []}
"#);
        assert_eq!(
            objects.refresh_for(&denied).await,
            Err(LookupError::Unavailable("forbidden here".into()))
        );
        assert_eq!(
            objects.config_map("shop", "secret-plans"),
            Err(LookupError::Unavailable("forbidden here".into()))
        );

        // Forgetting: only what live pods reference stays.
        objects.forget_unused(&[&denied]);
        assert!(objects.secret("shop", "creds").is_err());
        assert_eq!(objects.snapshot_config_maps(&[&p]), Vec::<ConfigMap>::new());
    }

    #[tokio::test]
    async fn an_unreachable_server_keeps_seeded_objects() {
        let objects = ApiObjects::new(fake_api::unreachable());
        let svc: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "kubernetes", "namespace": "default"},
            "spec": {"clusterIP": "10.43.0.1", "ports": [{"port": 443}]}
        }))
        .unwrap();
        objects.seed(vec![cm("shop", "cfg", "saved")], vec![svc.clone()]);
        let p = pod(r#"
metadata: {name: web, namespace: shop}
spec:
  containers: [{name: app, envFrom: [{configMapRef: {name: cfg}}]}]
"#);
        objects.refresh_for(&p).await.unwrap();
        assert_eq!(
            objects.config_map("shop", "cfg").unwrap(),
            Some(cm("shop", "cfg", "saved"))
        );
        assert_eq!(
            objects.snapshot_config_maps(&[&p]),
            [cm("shop", "cfg", "saved")]
        );
        // The seeded list answers although listing fails.
        objects.refresh_services().await.unwrap();
        assert_eq!(objects.services("default").unwrap(), [svc]);
        assert!(objects.services("shop").unwrap().is_empty());

        // What was never seen is unavailable, with the client's error.
        let q = pod(r#"
metadata: {name: q, namespace: shop}
spec:
  containers: [{name: app, envFrom: [{configMapRef: {name: other}}]}]
"#);
        let Err(LookupError::Unavailable(why)) = objects.refresh_for(&q).await else {
            panic!("expected an error");
        };
        assert!(!why.is_empty());
        assert_eq!(
            objects.config_map("shop", "other"),
            Err(LookupError::Unavailable(why))
        );
    }

    #[tokio::test]
    async fn services_are_listed_from_all_namespaces() {
        let (client, log) = fake_api::serve(|_, path, _| {
            assert!(path.starts_with("/api/v1/services"), "{path}");
            (
                200,
                serde_json::json!({"apiVersion": "v1", "kind": "ServiceList", "metadata": {},
                    "items": [
                        {"metadata": {"name": "kubernetes", "namespace": "default"},
                         "spec": {"clusterIP": "10.43.0.1"}},
                        {"metadata": {"name": "redis", "namespace": "shop"},
                         "spec": {"clusterIP": "10.43.7.7"}}]})
                .to_string(),
            )
        });
        let objects = ApiObjects::new(client);
        let failing = ApiObjects::new(fake_api::unreachable());
        let Err(LookupError::Unavailable(why)) = failing.refresh_services().await else {
            panic!("expected an error");
        };
        assert_eq!(
            failing.services("default"),
            Err(LookupError::Unavailable(why))
        );

        objects.refresh_services().await.unwrap();
        objects.refresh_services().await.unwrap();
        assert_eq!(log.lock().unwrap().len(), 1);
        let shop = objects.services("shop").unwrap();
        assert_eq!(shop.len(), 1);
        assert_eq!(shop[0].metadata.name.as_deref(), Some("redis"));
        assert_eq!(objects.snapshot_services().map(|s| s.len()), Some(2));
    }
}
