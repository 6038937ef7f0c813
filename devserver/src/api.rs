//! The Kubernetes API subset an agent and `kubectl` use, over [`Store`]:
//! discovery, and get/list/create/update/patch/delete on the resources in
//! [`RESOURCES`] (with the `status` subresource), by client-certificate
//! identity. Watches, the Node authorizer's per-node rules, `binding`, `log`
//! and `exec` come next.

use bytes::Bytes;
use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use crate::http::{self, Reply};
use crate::selector::{FieldSelector, LabelSelector};
use std::sync::Arc;

use crate::store::{Store, StoreError};
use crate::supervisor::Caller;

/// One served resource.
#[derive(Debug, Clone, Copy)]
pub struct Resource {
    /// API group ("" for core).
    pub group: &'static str,
    /// Version.
    pub version: &'static str,
    /// Plural name in URLs.
    pub plural: &'static str,
    /// Kind.
    pub kind: &'static str,
    /// Whether objects live in namespaces.
    pub namespaced: bool,
    /// kubectl's short names.
    pub short: &'static [&'static str],
}

impl Resource {
    /// The store's name for it (`pods`, `leases.coordination.k8s.io`).
    pub fn key(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_owned()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// `apiVersion` of its objects.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

/// What is served.
pub const RESOURCES: &[Resource] = &[
    Resource {
        group: "",
        version: "v1",
        plural: "namespaces",
        kind: "Namespace",
        namespaced: false,
        short: &["ns"],
    },
    Resource {
        group: "",
        version: "v1",
        plural: "nodes",
        kind: "Node",
        namespaced: false,
        short: &["no"],
    },
    Resource {
        group: "",
        version: "v1",
        plural: "pods",
        kind: "Pod",
        namespaced: true,
        short: &["po"],
    },
    Resource {
        group: "",
        version: "v1",
        plural: "configmaps",
        kind: "ConfigMap",
        namespaced: true,
        short: &["cm"],
    },
    Resource {
        group: "",
        version: "v1",
        plural: "secrets",
        kind: "Secret",
        namespaced: true,
        short: &[],
    },
    Resource {
        group: "",
        version: "v1",
        plural: "services",
        kind: "Service",
        namespaced: true,
        short: &["svc"],
    },
    Resource {
        group: "",
        version: "v1",
        plural: "serviceaccounts",
        kind: "ServiceAccount",
        namespaced: true,
        short: &["sa"],
    },
    Resource {
        group: "",
        version: "v1",
        plural: "events",
        kind: "Event",
        namespaced: true,
        short: &["ev"],
    },
    Resource {
        group: "coordination.k8s.io",
        version: "v1",
        plural: "leases",
        kind: "Lease",
        namespaced: true,
        short: &[],
    },
    Resource {
        group: "discovery.k8s.io",
        version: "v1",
        plural: "endpointslices",
        kind: "EndpointSlice",
        namespaced: true,
        short: &[],
    },
];

/// Seconds between watch bookmarks (the API server sends them about once a
/// minute; sooner keeps a client's resume point fresh in tests too).
const BOOKMARK_SECONDS: u64 = 10;

/// One watch event, newline-terminated.
fn watch_line(kind: &str, object: &Value) -> Bytes {
    let mut b = serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
    b.push(b'\n');
    Bytes::from(b)
}

/// The `Status` a watch's `ERROR` event carries when it cannot go on.
fn expired(message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": "Expired", "code": 410})
}

/// The namespaces a K3s server starts with.
pub const INITIAL_NAMESPACES: &[&str] =
    &["default", "kube-system", "kube-public", "kube-node-lease"];

/// A request to the API, parsed from its path.
#[derive(Debug)]
struct Target<'a> {
    resource: &'static Resource,
    namespace: Option<&'a str>,
    name: Option<&'a str>,
    subresource: Option<&'a str>,
}

fn find(group: &str, version: &str, plural: &str) -> Option<&'static Resource> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// `/api/v1/...` or `/apis/<group>/<version>/...` to a target.
fn target(path: &str) -> Option<Target<'_>> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match parts.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, plural, rest @ ..] => (Some(*ns), [&[*plural][..], rest].concat()),
        other => (None, other.to_vec()),
    };
    let (plural, name, subresource) = match rest.as_slice() {
        [plural] => (*plural, None, None),
        [plural, name] => (*plural, Some(*name), None),
        [plural, name, sub] => (*plural, Some(*name), Some(*sub)),
        // `/api/v1/namespaces/<name>` itself.
        [] => match namespace {
            Some(ns) => {
                return find(group, version, "namespaces").map(|resource| Target {
                    resource,
                    namespace: None,
                    name: Some(ns),
                    subresource: None,
                });
            }
            None => return None,
        },
        _ => return None,
    };
    let resource = find(group, version, plural)?;
    Some(Target {
        resource,
        namespace,
        name,
        subresource,
    })
}

fn query_param(query: Option<&str>, key: &str) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == key).then(|| percent_decode(v))
    })
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let escaped = (b == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (escaped, b) {
            (Some(decoded), _) => {
                out.push(decoded);
                i += 3;
            }
            (None, b'+') => {
                out.push(b' ');
                i += 1;
            }
            (None, other) => {
                out.push(other);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// RFC 7386 JSON merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    if let Value::Object(map) = target {
        for (key, value) in patch {
            if value.is_null() {
                map.remove(key);
            } else {
                merge_patch(map.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

/// One request to the API.
#[derive(Debug, Clone, Copy)]
pub struct ApiRequest<'a> {
    /// The method.
    pub method: &'a Method,
    /// The path.
    pub path: &'a str,
    /// The query string.
    pub query: Option<&'a str>,
    /// The body's content type.
    pub content_type: Option<&'a str>,
    /// What the client accepts (`as=Table` asks for server-side printing).
    pub accept: Option<&'a str>,
    /// Who sent it, by client certificate.
    pub caller: Option<&'a Caller>,
    /// The body.
    pub body: &'a Bytes,
    /// Pretty-print errors (curl, wget, `?pretty`).
    pub pretty: bool,
}

/// The Kubernetes API.
#[derive(Debug)]
pub struct Api {
    store: Arc<Store>,
}

fn store_error(e: &StoreError, resource: &Resource, pretty: bool) -> Reply {
    let (code, reason, name) = match e {
        StoreError::NotFound { name, .. } => (StatusCode::NOT_FOUND, "NotFound", Some(name)),
        StoreError::AlreadyExists { name, .. } => {
            (StatusCode::CONFLICT, "AlreadyExists", Some(name))
        }
        StoreError::Conflict { name, .. } => (StatusCode::CONFLICT, "Conflict", Some(name)),
        StoreError::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "Invalid", None),
        StoreError::Gone { .. } => (StatusCode::GONE, "Expired", None),
        StoreError::Storage(_) => (StatusCode::INTERNAL_SERVER_ERROR, "InternalError", None),
    };
    let details = name.map(|name| http::Details {
        name,
        group: resource.group,
        kind: resource.plural,
    });
    http::status_about(code, reason, &e.to_string(), details, pretty)
}

/// A 400 `Status`.
fn bad_request(message: &str, pretty: bool) -> Reply {
    http::status(StatusCode::BAD_REQUEST, "BadRequest", message, pretty)
}

/// The node a kubelet certificate speaks for (`system:node:<name>` in group
/// `system:nodes`).
fn node_of(caller: &Caller) -> Option<&str> {
    match caller {
        Caller::User { name, groups } if groups.iter().any(|g| g == "system:nodes") => {
            name.strip_prefix("system:node:")
        }
        _ => None,
    }
}

fn json_reply(code: StatusCode, value: &Value) -> Reply {
    let mut bytes = serde_json::to_vec(value).unwrap_or_default();
    bytes.push(b'\n');
    let mut r = http::body(code, "application/json", Bytes::from(bytes));
    r.headers_mut().insert(
        hyper::header::CACHE_CONTROL,
        hyper::header::HeaderValue::from_static("no-cache, private"),
    );
    r
}

impl Api {
    /// An API over `store`, which gets K3s's initial namespaces if it lacks
    /// them.
    pub fn over(store: Arc<Store>) -> Self {
        for ns in INITIAL_NAMESPACES {
            if store.get("namespaces", "", ns).is_ok() {
                continue;
            }
            // Only a concurrent creation could collide: nothing runs yet.
            let _ = store.create(
                "namespaces",
                "",
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns},
                       "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}),
            );
        }
        Self { store }
    }

    /// The object store behind the API (controllers work on it directly).
    #[allow(dead_code)] // until the controllers land
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Answers one API request.
    pub fn handle(&self, request: &ApiRequest<'_>) -> Reply {
        let ApiRequest {
            method,
            path,
            query,
            content_type,
            accept,
            caller,
            body,
            pretty,
        } = *request;
        let Some(Caller::User { .. }) = caller else {
            return http::status(
                StatusCode::UNAUTHORIZED,
                "Unauthorized",
                "Unauthorized",
                pretty,
            );
        };
        if let Some(reply) = self.discovery(path) {
            return reply;
        }
        let Some(target) = target(path) else {
            return http::status(
                StatusCode::NOT_FOUND,
                "NotFound",
                "the server could not find the requested resource",
                pretty,
            );
        };
        let resource = target.resource;
        let key = resource.key();
        let namespace = if resource.namespaced {
            target.namespace.unwrap_or("")
        } else {
            ""
        };
        if resource.namespaced && target.name.is_some() && namespace.is_empty() {
            return http::status(
                StatusCode::NOT_FOUND,
                "NotFound",
                "the server could not find the requested resource",
                pretty,
            );
        }
        if !namespace.is_empty()
            && self.store.get("namespaces", "", namespace).is_err()
            && *method == Method::POST
        {
            return http::status(
                StatusCode::NOT_FOUND,
                "NotFound",
                &format!("namespaces \"{namespace}\" not found"),
                pretty,
            );
        }
        let parse_body = || -> Result<Value, Reply> {
            let value: Value = serde_json::from_slice(body).map_err(|e| {
                bad_request(
                    &format!("the body of the request was in an unknown format: {e}"),
                    pretty,
                )
            })?;
            if !value.is_object() {
                return Err(bad_request("the body must be a JSON object", pretty));
            }
            Ok(value)
        };
        let stamp = |mut object: Value| {
            if let Some(map) = object.as_object_mut() {
                map.insert("apiVersion".into(), json!(resource.api_version()));
                map.insert("kind".into(), json!(resource.kind));
            }
            object
        };
        // NodeRestriction: a kubelet writes only its own Node.
        if let Some(node) = caller.and_then(node_of) {
            let writes = matches!(
                *method,
                Method::POST | Method::PUT | Method::PATCH | Method::DELETE
            );
            if writes && resource.group.is_empty() && resource.plural == "nodes" {
                let named = target.name.map(str::to_owned).or_else(|| {
                    serde_json::from_slice::<Value>(body).ok().and_then(|v| {
                        v.pointer("/metadata/name")
                            .and_then(Value::as_str)
                            .map(str::to_owned)
                    })
                });
                if let Some(other) = named.filter(|n| n != node) {
                    return http::status_about(
                        StatusCode::FORBIDDEN,
                        "Forbidden",
                        &format!(
                            "nodes \"{other}\" is forbidden: node \"{node}\" is not allowed to modify node \"{other}\""
                        ),
                        Some(http::Details {
                            name: &other,
                            group: "",
                            kind: "nodes",
                        }),
                        pretty,
                    );
                }
            }
        }
        match (method, target.name, target.subresource) {
            (&Method::GET, None, None) => {
                let labels = match LabelSelector::parse(
                    &query_param(query, "labelSelector").unwrap_or_default(),
                ) {
                    Ok(s) => s,
                    Err(e) => {
                        return bad_request(&e.to_string(), pretty);
                    }
                };
                let fields = match FieldSelector::parse(
                    resource.plural,
                    &query_param(query, "fieldSelector").unwrap_or_default(),
                ) {
                    Ok(s) => s,
                    Err(e) => {
                        return bad_request(&e.to_string(), pretty);
                    }
                };
                let ns = (!namespace.is_empty()).then_some(namespace);
                if query_param(query, "watch").is_some_and(|w| w == "true" || w == "1") {
                    return self.watch(resource, ns, labels, fields, query);
                }
                let (items, version) = self
                    .store
                    .list(&key, ns, |o| labels.matches(o) && fields.matches(o));
                json_reply(
                    StatusCode::OK,
                    &json!({"kind": format!("{}List", resource.kind), "apiVersion": resource.api_version(),
                            "metadata": {"resourceVersion": version.to_string()}, "items": items}),
                )
            }
            (&Method::GET, Some(name), None | Some("status")) => {
                match self.store.get(&key, namespace, name) {
                    Ok(o) => json_reply(StatusCode::OK, &o),
                    Err(e) => store_error(&e, resource, pretty),
                }
            }
            (&Method::POST, None, None) => {
                let object = match parse_body() {
                    Ok(v) => stamp(v),
                    Err(r) => return r,
                };
                match self.store.create(&key, namespace, object) {
                    Ok(o) => json_reply(StatusCode::CREATED, &o),
                    Err(e) => store_error(&e, resource, pretty),
                }
            }
            (&Method::PUT, Some(name), sub @ (None | Some("status"))) => {
                let mut object = match parse_body() {
                    Ok(v) => stamp(v),
                    Err(r) => return r,
                };
                if object.pointer("/metadata/name").and_then(Value::as_str) != Some(name) {
                    return bad_request(
                        "the name of the object does not match the name in the URL",
                        pretty,
                    );
                }
                if sub == Some("status") {
                    // Only the status changes through the subresource.
                    match self.store.get(&key, namespace, name) {
                        Ok(mut current) => {
                            current["status"] =
                                object.get("status").cloned().unwrap_or(Value::Null);
                            if let Some(v) = object.pointer("/metadata/resourceVersion").cloned() {
                                current["metadata"]["resourceVersion"] = v;
                            }
                            object = current;
                        }
                        Err(e) => return store_error(&e, resource, pretty),
                    }
                }
                match self.store.update(&key, namespace, object) {
                    Ok(o) => json_reply(StatusCode::OK, &o),
                    Err(e) => store_error(&e, resource, pretty),
                }
            }
            (&Method::PATCH, Some(name), sub @ (None | Some("status"))) => {
                let kind = content_type
                    .unwrap_or("")
                    .split(';')
                    .next()
                    .unwrap_or("")
                    .trim();
                if !matches!(
                    kind,
                    "application/merge-patch+json" | "application/strategic-merge-patch+json"
                ) {
                    return http::status(
                        StatusCode::UNSUPPORTED_MEDIA_TYPE,
                        "UnsupportedMediaType",
                        &format!(
                            "the body of the request was in an unknown format - accepted media types include: application/merge-patch+json, application/strategic-merge-patch+json (got {kind:?})"
                        ),
                        pretty,
                    );
                }
                let patch = match parse_body() {
                    Ok(v) => v,
                    Err(r) => return r,
                };
                let mut current = match self.store.get(&key, namespace, name) {
                    Ok(o) => o,
                    Err(e) => return store_error(&e, resource, pretty),
                };
                let patch = if sub == Some("status") {
                    json!({"status": patch.get("status").cloned().unwrap_or(Value::Null)})
                } else {
                    patch
                };
                // A patch never carries the version check unless it says so.
                let wanted = patch.pointer("/metadata/resourceVersion").cloned();
                merge_patch(&mut current, &patch);
                if wanted.is_none() {
                    if let Some(meta) = current.get_mut("metadata").and_then(Value::as_object_mut) {
                        meta.remove("resourceVersion");
                    }
                }
                match self.store.update(&key, namespace, current) {
                    Ok(o) => json_reply(StatusCode::OK, &o),
                    Err(e) => store_error(&e, resource, pretty),
                }
            }
            (&Method::DELETE, Some(name), None) => {
                let options: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
                let uid = options
                    .pointer("/preconditions/uid")
                    .and_then(Value::as_str);
                let version = options
                    .pointer("/preconditions/resourceVersion")
                    .and_then(Value::as_str)
                    .and_then(|v| v.parse().ok());
                match self.store.delete(&key, namespace, name, uid, version) {
                    Ok(o) => json_reply(StatusCode::OK, &o),
                    Err(e) => store_error(&e, resource, pretty),
                }
            }
            _ => http::status(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource",
                pretty,
            ),
        }
    }

    /// A watch: newline-delimited JSON events, streamed. Without a
    /// `resourceVersion` (or with "0") it starts with an `ADDED` event per
    /// current object, as the API server does; from a version too old for
    /// the history it sends one `ERROR` event with a 410 `Status` and ends.
    /// `timeoutSeconds` ends it; `allowWatchBookmarks` adds `BOOKMARK`s.
    fn watch(
        &self,
        resource: &'static Resource,
        namespace: Option<&str>,
        labels: LabelSelector,
        fields: FieldSelector,
        query: Option<&str>,
    ) -> Reply {
        let key = resource.key();
        let namespace = namespace.map(str::to_owned);
        let in_scope = move |o: &Value| {
            namespace.as_deref().is_none_or(|ns| {
                o.pointer("/metadata/namespace").and_then(Value::as_str) == Some(ns)
            }) && labels.matches(o)
                && fields.matches(o)
        };
        let since = query_param(query, "resourceVersion").unwrap_or_default();
        let mut first: Vec<Value> = Vec::new();
        let subscribed = match since.as_str() {
            "" | "0" => {
                let (items, version) = self.store.list(&key, None, &in_scope);
                first.extend(
                    items
                        .into_iter()
                        .map(|o| json!({"type": "ADDED", "object": o})),
                );
                self.store.watch(&key, version)
            }
            v => match v.parse::<u64>() {
                Ok(n) => self.store.watch(&key, n),
                Err(_) => Err(StoreError::Invalid(format!(
                    "invalid resourceVersion {v:?}"
                ))),
            },
        };
        let timeout = query_param(query, "timeoutSeconds")
            .and_then(|t| t.parse::<u64>().ok())
            .unwrap_or(1800)
            .min(3600);
        let bookmarks = query_param(query, "allowWatchBookmarks").is_some_and(|b| b == "true");
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
        let (backlog, mut events) = match subscribed {
            Ok(found) => found,
            Err(e) => {
                let _ = tx.try_send(watch_line("ERROR", &expired(&e.to_string())));
                return http::stream("application/json", rx);
            }
        };
        let bookmark_kind = resource.kind;
        let api_version = resource.api_version();
        tokio::spawn(async move {
            for item in first {
                let line = watch_line("ADDED", &item["object"]);
                if tx.send(line).await.is_err() {
                    return;
                }
            }
            let mut last = 0;
            for event in backlog.into_iter().filter(|e| in_scope(&e.object)) {
                last = event.version;
                if tx
                    .send(watch_line(event.kind.as_str(), &event.object))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            let deadline = tokio::time::sleep(std::time::Duration::from_secs(timeout));
            tokio::pin!(deadline);
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(BOOKMARK_SECONDS));
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = &mut deadline => return,
                    _ = tick.tick(), if bookmarks => {
                        let mark = json!({"kind": bookmark_kind, "apiVersion": api_version,
                            "metadata": {"resourceVersion": last.to_string()}});
                        if tx.send(watch_line("BOOKMARK", &mark)).await.is_err() {
                            return;
                        }
                    }
                    received = events.recv() => match received {
                        Ok(event) => {
                            // Backlog and stream may overlap by a change.
                            if event.resource != key || event.version <= last || !in_scope(&event.object) {
                                continue;
                            }
                            last = event.version;
                            if tx.send(watch_line(event.kind.as_str(), &event.object)).await.is_err() {
                                return;
                            }
                        }
                        // Too slow a reader: what it missed cannot be told.
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                            let _ = tx.send(watch_line("ERROR", &expired("watch fell behind"))).await;
                            return;
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    },
                }
            }
        });
        http::stream("application/json", rx)
    }

    /// Discovery documents and `/version`.
    fn discovery(&self, path: &str) -> Option<Reply> {
        let resources_of = |group: &str, version: &str| -> Vec<Value> {
            let mut list = Vec::new();
            for r in RESOURCES
                .iter()
                .filter(|r| r.group == group && r.version == version)
            {
                list.push(json!({"name": r.plural, "singularName": r.kind.to_lowercase(), "namespaced": r.namespaced,
                    "kind": r.kind, "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
                    "shortNames": r.short}));
                list.push(json!({"name": format!("{}/status", r.plural), "singularName": "", "namespaced": r.namespaced,
                    "kind": r.kind, "verbs": ["get", "patch", "update"]}));
            }
            list
        };
        let value = match path.trim_end_matches('/') {
            "/version" => {
                json!({"major": "1", "minor": "21", "gitVersion": "v1.21.2+armlet-devserver",
                "gitCommit": "", "gitTreeState": "clean", "buildDate": "", "goVersion": "", "compiler": "rustc",
                "platform": "linux/amd64"})
            }
            "/api" => {
                json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []})
            }
            "/api/v1" => {
                json!({"kind": "APIResourceList", "groupVersion": "v1", "resources": resources_of("", "v1")})
            }
            "/apis" => {
                let groups: Vec<Value> = ["coordination.k8s.io", "discovery.k8s.io"]
                    .iter()
                    .map(|g| {
                        let gv = json!({"groupVersion": format!("{g}/v1"), "version": "v1"});
                        json!({"name": g, "versions": [gv.clone()], "preferredVersion": gv})
                    })
                    .collect();
                json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
            }
            p => {
                let rest = p.strip_prefix("/apis/")?;
                let (group, version) = rest.split_once('/')?;
                if version.contains('/')
                    || !RESOURCES
                        .iter()
                        .any(|r| r.group == group && r.version == version)
                {
                    return None;
                }
                json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": format!("{group}/{version}"),
                       "resources": resources_of(group, version)})
            }
        };
        Some(json_reply(StatusCode::OK, &value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_to_targets() {
        let t = target("/api/v1/namespaces/default/pods/web/status").unwrap();
        assert_eq!(
            (t.resource.plural, t.namespace, t.name, t.subresource),
            ("pods", Some("default"), Some("web"), Some("status"))
        );
        let t = target("/api/v1/nodes/n1").unwrap();
        assert_eq!(
            (t.resource.plural, t.namespace, t.name),
            ("nodes", None, Some("n1"))
        );
        let t =
            target("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/n1").unwrap();
        assert_eq!(t.resource.key(), "leases.coordination.k8s.io");
        let t = target("/api/v1/namespaces/kube-system").unwrap();
        assert_eq!(
            (t.resource.plural, t.name),
            ("namespaces", Some("kube-system"))
        );
        assert!(target("/api/v1/widgets").is_none());
        assert!(target("/apis/apps/v1/deployments").is_none());
        assert!(target("/healthz").is_none());
    }

    #[test]
    fn merge_patches_follow_rfc_7386() {
        let mut doc = json!({"a": 1, "b": {"c": 2, "d": 3}, "l": [1, 2]});
        merge_patch(
            &mut doc,
            &json!({"a": null, "b": {"c": 4}, "l": [3], "n": {"x": true}}),
        );
        assert_eq!(
            doc,
            json!({"b": {"c": 4, "d": 3}, "l": [3], "n": {"x": true}})
        );
        assert_eq!(
            percent_decode("spec.nodeName%3Dn1%2Cx+y"),
            "spec.nodeName=n1,x y"
        );
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}
