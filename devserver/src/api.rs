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

use crate::serviceaccount::{self, Signer};
use crate::store::{Store, StoreError};
use crate::supervisor::Caller;
use crate::table::{self, Include};
use crate::{authz, defaults, patch, validate};

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
/// How a watch with a selector reports a change: a modification that brings
/// an object into scope is `ADDED`, one that takes it out is `DELETED` (as the
/// API server's watch cache does); out of scope before and after: nothing.
fn scoped_kind(
    event: &crate::store::Event,
    in_scope: impl Fn(&Value) -> bool,
) -> Option<&'static str> {
    let now = in_scope(&event.object);
    match (event.kind, event.previous.as_deref().map(&in_scope)) {
        (crate::store::EventType::Modified, Some(before)) => match (before, now) {
            (true, true) => Some("MODIFIED"),
            (false, true) => Some("ADDED"),
            (true, false) => Some("DELETED"),
            (false, false) => None,
        },
        (kind, _) => now.then(|| kind.as_str()),
    }
}

/// Whether a resource's status is written only through its `status`
/// subresource.
fn has_status(resource: &Resource) -> bool {
    resource.group.is_empty()
        && matches!(
            resource.plural,
            "pods" | "nodes" | "services" | "namespaces"
        )
}

/// A 422 reply when `object` is not a valid `resource`.
fn invalid(resource: &Resource, object: &Value) -> Option<Reply> {
    let causes = validate::check(resource, object);
    if causes.is_empty() {
        return None;
    }
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    Some(json_reply(
        StatusCode::UNPROCESSABLE_ENTITY,
        &validate::status(resource.kind, name, resource.group, &causes),
    ))
}

/// A delete request's preconditions.
#[derive(Debug, Clone, Copy, Default)]
struct Preconditions<'a> {
    uid: Option<&'a str>,
    version: Option<u64>,
}

/// How a deletion ended.
enum Deletion {
    /// The object is gone (200 with its last state).
    Gone(Value),
    /// The object is marked and will go later (202 with it).
    Pending(Value),
}

/// The protobuf encoding of `/openapi/v2`.
const OPENAPI_PROTOBUF: &str = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf";

/// `/openapi/v2`: a Swagger 2.0 document naming the API, without schema
/// definitions. kubectl fetches it (protobuf, as gnostic's `openapi_v2.Document`)
/// to validate what it sends and skips validation for kinds the document does
/// not define, so `kubectl apply` works and the API server's own checks decide.
fn openapi_v2(accept: Option<&str>) -> Reply {
    const TITLE: &str = "Kubernetes";
    const VERSION: &str = "v1.21.2+armlet-devserver";
    if accept.is_some_and(|a| a.contains(OPENAPI_PROTOBUF)) {
        // Length-delimited fields: Document.swagger = 1, Document.info = 2,
        // Info.title = 1, Info.version = 2 (gnostic's OpenAPIv2.proto).
        fn field(number: u8, bytes: &[u8]) -> Vec<u8> {
            let mut out = vec![(number << 3) | 2];
            let mut len = bytes.len();
            while len >= 0x80 {
                out.push((len as u8 & 0x7f) | 0x80);
                len >>= 7;
            }
            out.push(len as u8);
            out.extend_from_slice(bytes);
            out
        }
        let info = [field(1, TITLE.as_bytes()), field(2, VERSION.as_bytes())].concat();
        let document = [field(1, b"2.0"), field(2, &info)].concat();
        // kube-openapi labels the protobuf form `application/octet-stream`
        // (Go's MIME parser rejects the `@` of the type it was asked for).
        return http::body(
            StatusCode::OK,
            "application/octet-stream",
            Bytes::from(document),
        );
    }
    json_reply(
        StatusCode::OK,
        &json!({"swagger": "2.0", "info": {"title": TITLE, "version": VERSION},
                "paths": {}, "definitions": {}}),
    )
}

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

/// The served resource named `plural` (any group), for tests.
#[cfg(test)]
pub fn resource_named(plural: &str) -> &'static Resource {
    RESOURCES
        .iter()
        .find(|r| r.plural == plural)
        .unwrap_or_else(|| panic!("no resource {plural}"))
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
    /// A bearer token (`Authorization: Bearer <token>`), checked when there
    /// is no client certificate.
    pub bearer: Option<&'a str>,
    /// The body.
    pub body: &'a Bytes,
    /// Pretty-print errors (curl, wget, `?pretty`).
    pub pretty: bool,
}

/// The Kubernetes API.
#[derive(Debug)]
pub struct Api {
    store: Arc<Store>,
    /// Signs and checks service-account tokens.
    signer: Signer,
    /// The server CA (PEM): every namespace's `kube-root-ca.crt`.
    root_ca: String,
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
    pub fn over(store: Arc<Store>, signer: Signer, root_ca: String) -> Self {
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
        let api = Self {
            store,
            signer,
            root_ca,
        };
        for ns in INITIAL_NAMESPACES {
            api.furnish_namespace(ns);
        }
        api
    }

    /// What controllers put in every namespace: the `default` ServiceAccount
    /// (serviceaccount controller) and the `kube-root-ca.crt` ConfigMap
    /// (root-ca-cert-publisher), which pods' token volumes read.
    fn furnish_namespace(&self, namespace: &str) {
        if self
            .store
            .get("serviceaccounts", namespace, "default")
            .is_err()
        {
            let _ = self.store.create(
                "serviceaccounts",
                namespace,
                json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}}),
            );
        }
        let data = json!({"ca.crt": self.root_ca});
        match self.store.get("configmaps", namespace, "kube-root-ca.crt") {
            Ok(current) if current["data"] == data => {}
            Ok(mut current) => {
                current["data"] = data;
                let _ = self.store.update("configmaps", namespace, current);
            }
            Err(_) => {
                let _ = self.store.create(
                    "configmaps",
                    namespace,
                    json!({"apiVersion": "v1", "kind": "ConfigMap",
                           "metadata": {"name": "kube-root-ca.crt",
                                        "annotations": {"kubernetes.io/description": "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters."}},
                           "data": data}),
                );
            }
        }
    }

    /// `serviceaccounts/<name>/token`: a TokenRequest answered with a signed
    /// token for the account (bound to a pod when the request says so).
    fn token_request(&self, namespace: &str, name: &str, request: &Value, pretty: bool) -> Reply {
        let resource = find("", "v1", "serviceaccounts").unwrap_or(&RESOURCES[0]);
        let account = match self.store.get("serviceaccounts", namespace, name) {
            Ok(a) => a,
            Err(e) => return store_error(&e, resource, pretty),
        };
        let seconds = request
            .pointer("/spec/expirationSeconds")
            .and_then(Value::as_u64)
            .unwrap_or(3600);
        if seconds < 600 {
            let causes = [validate::Cause {
                reason: "FieldValueInvalid",
                field: "spec.expirationSeconds".into(),
                message: format!(
                    "Invalid value: {seconds}: may not specify a duration less than 10 minutes"
                ),
            }];
            return json_reply(
                StatusCode::UNPROCESSABLE_ENTITY,
                &validate::status("TokenRequest", name, "authentication.k8s.io", &causes),
            );
        }
        let bound = request.pointer("/spec/boundObjectRef");
        let pod = match bound {
            Some(b) if b["kind"] == "Pod" => {
                let pod_name = b["name"].as_str().unwrap_or("");
                match self.store.get("pods", namespace, pod_name) {
                    Ok(p) => {
                        let uid = p
                            .pointer("/metadata/uid")
                            .and_then(Value::as_str)
                            .unwrap_or("");
                        if b["uid"].as_str().is_some_and(|u| !u.is_empty() && u != uid) {
                            return http::status(
                                StatusCode::CONFLICT,
                                "Conflict",
                                &format!(
                                    "the UID in the bound object reference ({}) does not match the UID in record. The object might have been deleted and then recreated",
                                    b["uid"].as_str().unwrap_or("")
                                ),
                                pretty,
                            );
                        }
                        Some((pod_name.to_owned(), uid.to_owned()))
                    }
                    Err(e) => {
                        return store_error(&e, find("", "v1", "pods").unwrap_or(resource), pretty);
                    }
                }
            }
            Some(_) => return bad_request("cannot bind token to object of this kind", pretty),
            None => None,
        };
        let now = crate::store::now();
        let subject = serviceaccount::Subject {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        };
        let binding = serviceaccount::Binding {
            account_uid: account
                .pointer("/metadata/uid")
                .and_then(Value::as_str)
                .unwrap_or(""),
            pod: pod.as_ref().map(|(n, u)| (n.as_str(), u.as_str())),
            audiences: request
                .pointer("/spec/audiences")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
            seconds,
        };
        let token = match self.signer.issue(&subject, &binding, now) {
            Ok(t) => t,
            Err(e) => {
                return http::status(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "InternalError",
                    &e.to_string(),
                    pretty,
                );
            }
        };
        let mut reply = request.clone();
        reply["apiVersion"] = json!("authentication.k8s.io/v1");
        reply["kind"] = json!("TokenRequest");
        reply["metadata"] = json!({"name": name, "namespace": namespace,
                                   "creationTimestamp": crate::store::rfc3339(now)});
        reply["spec"]["expirationSeconds"] = json!(seconds);
        if reply["spec"]["audiences"]
            .as_array()
            .is_none_or(Vec::is_empty)
        {
            reply["spec"]["audiences"] = json!([serviceaccount::ISSUER, "k3s"]);
        }
        reply["status"] =
            json!({"token": token, "expirationTimestamp": crate::store::rfc3339(now + seconds)});
        json_reply(StatusCode::CREATED, &reply)
    }

    /// The caller a bearer token names, if it is a valid service-account
    /// token of ours.
    fn token_caller(&self, bearer: &str) -> Option<Caller> {
        let subject = self.signer.verify(bearer, crate::store::now()).ok()?;
        // A token outlives nothing: its account must still exist.
        self.store
            .get("serviceaccounts", &subject.namespace, &subject.name)
            .ok()?;
        Some(Caller::User {
            name: subject.user(),
            groups: subject.groups(),
        })
    }

    /// Deletes an object as the API server does. Pods bound to a node end
    /// gracefully: they get a `deletionTimestamp` (now + the grace period:
    /// the request's, else `spec.terminationGracePeriodSeconds`, else 30 s)
    /// and stay until their kubelet deletes them with grace 0; unbound or
    /// finished pods go at once. An object with finalizers is only marked,
    /// and goes when an update empties them. A namespace takes its objects
    /// with it.
    fn delete_object(
        &self,
        resource: &'static Resource,
        namespace: &str,
        name: &str,
        grace: Option<i64>,
        preconditions: Preconditions<'_>,
    ) -> Result<Deletion, StoreError> {
        let key = resource.key();
        let current = self.store.get(&key, namespace, name)?;
        let uid_differs = preconditions
            .uid
            .is_some_and(|u| current.pointer("/metadata/uid").and_then(Value::as_str) != Some(u));
        let version_differs = preconditions
            .version
            .is_some_and(|v| crate::store::version_of(&current) != Some(v));
        if uid_differs || version_differs {
            return Err(StoreError::Conflict {
                resource: resource.plural.to_owned(),
                name: name.to_owned(),
            });
        }
        if resource.group.is_empty() && resource.plural == "namespaces" {
            for r in RESOURCES.iter().filter(|r| r.namespaced) {
                let (items, _) = self.store.list(&r.key(), Some(name), |_| true);
                for item in items {
                    if let Some(n) = item.pointer("/metadata/name").and_then(Value::as_str) {
                        // Each object ends as its own deletion would.
                        let _ = self.delete_object(r, name, n, None, Preconditions::default());
                    }
                }
            }
        }
        let mut grace = if resource.group.is_empty() && resource.plural == "pods" {
            let unbound = current
                .pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .unwrap_or("")
                .is_empty();
            let finished = matches!(
                current.pointer("/status/phase").and_then(Value::as_str),
                Some("Succeeded" | "Failed")
            );
            if unbound || finished {
                0
            } else {
                grace
                    .or_else(|| {
                        current
                            .pointer("/spec/terminationGracePeriodSeconds")
                            .and_then(Value::as_i64)
                    })
                    .unwrap_or(30)
                    .max(0)
            }
        } else {
            0
        };
        // Already terminating: a deletion may only shorten the grace period.
        let marked_grace = current
            .pointer("/metadata/deletionGracePeriodSeconds")
            .and_then(Value::as_i64);
        if let Some(existing) = marked_grace {
            grace = grace.min(existing);
        }
        let finalizers = current
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty());
        let namespace_left = resource.plural == "namespaces"
            && RESOURCES
                .iter()
                .filter(|r| r.namespaced)
                .any(|r| !self.store.list(&r.key(), Some(name), |_| true).0.is_empty());
        if grace == 0 && !finalizers && !namespace_left {
            let uid = current.pointer("/metadata/uid").and_then(Value::as_str);
            let gone = self.store.delete(&key, namespace, name, uid, None)?;
            self.finish_namespace(namespace);
            return Ok(Deletion::Gone(gone));
        }
        if marked_grace == Some(grace) {
            return Ok(Deletion::Pending(current));
        }
        let mut marked = current;
        let when = crate::store::rfc3339(crate::store::now() + grace as u64);
        if let Some(meta) = marked.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("deletionTimestamp".into(), json!(when));
            meta.insert("deletionGracePeriodSeconds".into(), json!(grace));
        }
        if namespace_left {
            marked["status"]["phase"] = json!("Terminating");
        }
        Ok(Deletion::Pending(
            self.store.update(&key, namespace, marked)?,
        ))
    }

    /// After an update: an object marked for deletion whose finalizers are
    /// now empty (and whose grace period is over) goes.
    fn finish_deletion(&self, resource: &'static Resource, object: Value) -> Value {
        let marked = object.pointer("/metadata/deletionTimestamp").is_some();
        let finalizers = object
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty());
        let grace = object
            .pointer("/metadata/deletionGracePeriodSeconds")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        if !marked || finalizers || grace > 0 || resource.plural == "namespaces" {
            return object;
        }
        let namespace = object
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let name = object
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("");
        match self
            .store
            .delete(&resource.key(), &namespace, name, None, None)
        {
            Ok(gone) => {
                self.finish_namespace(&namespace);
                gone
            }
            Err(_) => object,
        }
    }

    /// A terminating namespace goes once it is empty.
    fn finish_namespace(&self, namespace: &str) {
        if namespace.is_empty() {
            return;
        }
        let Ok(ns) = self.store.get("namespaces", "", namespace) else {
            return;
        };
        if ns.pointer("/metadata/deletionTimestamp").is_none() {
            return;
        }
        let empty = RESOURCES.iter().filter(|r| r.namespaced).all(|r| {
            self.store
                .list(&r.key(), Some(namespace), |_| true)
                .0
                .is_empty()
        });
        if empty {
            let _ = self.store.delete("namespaces", "", namespace, None, None);
        }
    }

    /// `pods/<name>/binding`: what the scheduler posts to place a pod.
    fn bind(&self, namespace: &str, name: &str, binding: &Value, pretty: bool) -> Reply {
        let node = binding
            .pointer("/target/name")
            .and_then(Value::as_str)
            .unwrap_or("");
        if node.is_empty() {
            let causes = [validate::Cause {
                reason: "FieldValueRequired",
                field: "target.name".into(),
                message: "Required value".into(),
            }];
            return json_reply(
                StatusCode::UNPROCESSABLE_ENTITY,
                &validate::status("Binding", name, "", &causes),
            );
        }
        let resource = find("", "v1", "pods").unwrap_or(&RESOURCES[0]);
        for _ in 0..5 {
            let mut pod = match self.store.get("pods", namespace, name) {
                Ok(p) => p,
                Err(e) => return store_error(&e, resource, pretty),
            };
            let current = pod
                .pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .unwrap_or("");
            if !current.is_empty() {
                return http::status(
                    StatusCode::CONFLICT,
                    "Conflict",
                    &format!(
                        "Operation cannot be fulfilled on pods/binding \"{name}\": pod {name} is already assigned to node \"{current}\""
                    ),
                    pretty,
                );
            }
            pod["spec"]["nodeName"] = json!(node);
            let scheduled = json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null,
                "lastTransitionTime": crate::store::rfc3339(crate::store::now())});
            let conditions = pod["status"]["conditions"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let mut conditions: Vec<Value> = conditions
                .into_iter()
                .filter(|c| c["type"] != "PodScheduled")
                .collect();
            conditions.push(scheduled);
            pod["status"]["conditions"] = json!(conditions);
            match self.store.update("pods", namespace, pod) {
                Ok(_) => {
                    return json_reply(
                        StatusCode::CREATED,
                        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
                    );
                }
                // Changed meanwhile: look again.
                Err(StoreError::Conflict { .. }) => {}
                Err(e) => return store_error(&e, resource, pretty),
            }
        }
        http::status(
            StatusCode::CONFLICT,
            "Conflict",
            "the pod kept changing",
            pretty,
        )
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
            bearer,
            body,
            pretty,
        } = *request;
        let token_caller = match (caller, bearer) {
            (None, Some(token)) => match self.token_caller(token) {
                Some(c) => Some(c),
                None => {
                    return http::status(
                        StatusCode::UNAUTHORIZED,
                        "Unauthorized",
                        "Unauthorized",
                        pretty,
                    );
                }
            },
            _ => None,
        };
        let caller = caller.or(token_caller.as_ref());
        let Some(Caller::User { .. }) = caller else {
            return http::status(
                StatusCode::UNAUTHORIZED,
                "Unauthorized",
                "Unauthorized",
                pretty,
            );
        };
        if path.trim_end_matches('/') == "/openapi/v2" {
            return openapi_v2(accept);
        }
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
        let media = content_type
            .unwrap_or("application/json")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        let parse_body = || -> Result<Value, Reply> {
            // A patch's media type names the patch kind; its body is JSON.
            let media = if *method == Method::PATCH {
                "application/json"
            } else {
                media.as_str()
            };
            let parsed = match media {
                "application/json" | "" => serde_json::from_slice(body).map_err(|e| e.to_string()),
                "application/yaml" => serde_yaml_ng::from_slice(body).map_err(|e| e.to_string()),
                other => {
                    return Err(http::status(
                        StatusCode::UNSUPPORTED_MEDIA_TYPE,
                        "UnsupportedMediaType",
                        &format!(
                            "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml (got {other:?})"
                        ),
                        pretty,
                    ));
                }
            };
            let value: Value = parsed.map_err(|e| {
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
        // Authorization (Node authorizer, RBAC, NodeRestriction): by the
        // verb, and the name from the path, a create's body or a list's
        // `metadata.name` field selector.
        let body_value: Option<Value> = matches!(*method, Method::POST | Method::PUT)
            .then(|| serde_json::from_slice(body).ok())
            .flatten();
        let watching = query_param(query, "watch").is_some_and(|w| w == "true" || w == "1");
        let verb = match (method, target.name) {
            (&Method::GET | &Method::HEAD, Some(_)) => "get",
            (&Method::GET | &Method::HEAD, None) if watching => "watch",
            (&Method::GET | &Method::HEAD, None) => "list",
            (&Method::POST, _) => "create",
            (&Method::PUT, _) => "update",
            (&Method::PATCH, _) => "patch",
            (&Method::DELETE, _) => "delete",
            _ => "unknown",
        };
        let selected_name = query_param(query, "fieldSelector").and_then(|f| {
            f.strip_prefix("metadata.name=")
                .filter(|n| !n.contains(','))
                .map(str::to_owned)
        });
        let name = target
            .name
            .map(str::to_owned)
            .or_else(|| {
                body_value
                    .as_ref()
                    .and_then(|v| v.pointer("/metadata/name"))
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .or(selected_name);
        if let Some(caller) = caller {
            let request = authz::Request {
                verb,
                resource,
                namespace,
                name: name.as_deref(),
                subresource: target.subresource,
                body: body_value.as_ref(),
            };
            if let Err(authz::Forbidden(message)) = authz::authorize(caller, &request, &self.store)
            {
                let details = name.as_deref().map(|name| http::Details {
                    name,
                    group: resource.group,
                    kind: resource.plural,
                });
                return http::status_about(
                    StatusCode::FORBIDDEN,
                    "Forbidden",
                    &message,
                    details,
                    pretty,
                );
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
                    return self.watch(resource, ns, labels, fields, query, accept);
                }
                let (items, version) = self
                    .store
                    .list(&key, ns, |o| labels.matches(o) && fields.matches(o));
                if table::wanted(accept) {
                    let include =
                        Include::from_query(query_param(query, "includeObject").as_deref());
                    return json_reply(
                        StatusCode::OK,
                        &table::table(resource, &items, Some(version), include, accept),
                    );
                }
                json_reply(
                    StatusCode::OK,
                    &json!({"kind": format!("{}List", resource.kind), "apiVersion": resource.api_version(),
                            "metadata": {"resourceVersion": version.to_string()}, "items": items}),
                )
            }
            (&Method::GET, Some(name), None | Some("status")) => {
                match self.store.get(&key, namespace, name) {
                    Ok(o) if table::wanted(accept) => {
                        let include =
                            Include::from_query(query_param(query, "includeObject").as_deref());
                        json_reply(
                            StatusCode::OK,
                            &table::table(resource, &[o], None, include, accept),
                        )
                    }
                    Ok(o) => json_reply(StatusCode::OK, &o),
                    Err(e) => store_error(&e, resource, pretty),
                }
            }
            (&Method::POST, Some(name), Some("binding")) if resource.plural == "pods" => {
                let binding = match parse_body() {
                    Ok(v) => v,
                    Err(r) => return r,
                };
                self.bind(namespace, name, &binding, pretty)
            }
            (&Method::POST, None, None) => {
                let object = match parse_body() {
                    Ok(v) => stamp(v),
                    Err(r) => return r,
                };
                if let Some(reply) = invalid(resource, &object) {
                    return reply;
                }
                let mut object = object;
                defaults::on_create(resource, &mut object);
                match self.store.create(&key, namespace, object) {
                    Ok(o) => {
                        if resource.plural == "namespaces" {
                            if let Some(ns) = o.pointer("/metadata/name").and_then(Value::as_str) {
                                self.furnish_namespace(ns);
                            }
                        }
                        json_reply(StatusCode::CREATED, &o)
                    }
                    Err(e) => store_error(&e, resource, pretty),
                }
            }
            (&Method::POST, Some(name), Some("token")) if resource.plural == "serviceaccounts" => {
                let request = match parse_body() {
                    Ok(v) => v,
                    Err(r) => return r,
                };
                self.token_request(namespace, name, &request, pretty)
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
                if sub.is_none() {
                    if let Some(reply) = invalid(resource, &object) {
                        return reply;
                    }
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
                } else if has_status(resource) {
                    // A replacement of the main resource keeps the status.
                    if let Ok(current) = self.store.get(&key, namespace, name) {
                        match current.get("status") {
                            Some(status) => object["status"] = status.clone(),
                            None => {
                                if let Some(map) = object.as_object_mut() {
                                    map.remove("status");
                                }
                            }
                        }
                    }
                }
                match self.store.update(&key, namespace, object) {
                    Ok(o) => json_reply(StatusCode::OK, &self.finish_deletion(resource, o)),
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
                let before_status = current.get("status").cloned();
                if kind == "application/strategic-merge-patch+json" {
                    match patch::strategic_merge(&current, &patch, resource.kind) {
                        Ok(patched) => current = patched,
                        Err(e) => {
                            let (code, reason) = e.status();
                            return http::status(code, reason, &e.to_string(), pretty);
                        }
                    }
                } else {
                    merge_patch(&mut current, &patch);
                }
                // The main resource does not change the status (the
                // subresource does), as for the API server's Pod, Node,
                // Service and Namespace.
                if sub.is_none() && has_status(resource) {
                    match before_status {
                        Some(status) => current["status"] = status,
                        None => {
                            if let Some(map) = current.as_object_mut() {
                                map.remove("status");
                            }
                        }
                    }
                }
                if wanted.is_none() {
                    if let Some(meta) = current.get_mut("metadata").and_then(Value::as_object_mut) {
                        meta.remove("resourceVersion");
                    }
                }
                match self.store.update(&key, namespace, current) {
                    Ok(o) => json_reply(StatusCode::OK, &self.finish_deletion(resource, o)),
                    Err(e) => store_error(&e, resource, pretty),
                }
            }
            (&Method::DELETE, Some(name), None) => {
                let options: Value = if body.is_empty() {
                    Value::Null
                } else {
                    match serde_json::from_slice(body) {
                        Ok(v) => v,
                        Err(e) => {
                            return bad_request(
                                &format!("the body of the request was in an unknown format: {e}"),
                                pretty,
                            );
                        }
                    }
                };
                let grace = options
                    .get("gracePeriodSeconds")
                    .and_then(Value::as_i64)
                    .or_else(|| {
                        query_param(query, "gracePeriodSeconds").and_then(|g| g.parse().ok())
                    });
                let preconditions = Preconditions {
                    uid: options
                        .pointer("/preconditions/uid")
                        .and_then(Value::as_str),
                    version: options
                        .pointer("/preconditions/resourceVersion")
                        .and_then(Value::as_str)
                        .and_then(|v| v.parse().ok()),
                };
                match self.delete_object(resource, namespace, name, grace, preconditions) {
                    Ok(Deletion::Gone(o)) => json_reply(StatusCode::OK, &o),
                    Ok(Deletion::Pending(o)) => json_reply(StatusCode::ACCEPTED, &o),
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
        accept: Option<&str>,
    ) -> Reply {
        let key = resource.key();
        // kubectl get -w asks for Table rows; everyone else for objects.
        let as_table = table::wanted(accept).then(|| {
            (
                Include::from_query(query_param(query, "includeObject").as_deref()),
                accept.map(str::to_owned),
            )
        });
        let render = move |kind: &str, object: &Value| match &as_table {
            Some((include, accept)) => watch_line(
                kind,
                &table::table(
                    resource,
                    std::slice::from_ref(object),
                    None,
                    *include,
                    accept.as_deref(),
                ),
            ),
            None => watch_line(kind, object),
        };
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
                let line = render("ADDED", &item["object"]);
                if tx.send(line).await.is_err() {
                    return;
                }
            }
            let mut last = 0;
            for event in backlog {
                last = event.version;
                let Some(kind) = scoped_kind(&event, &in_scope) else {
                    continue;
                };
                if tx.send(render(kind, &event.object)).await.is_err() {
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
                            if event.resource != key || event.version <= last {
                                continue;
                            }
                            last = event.version;
                            let Some(kind) = scoped_kind(&event, &in_scope) else {
                                continue;
                            };
                            if tx.send(render(kind, &event.object)).await.is_err() {
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
                // The other subresources, as the API server lists them.
                let extra: &[(&str, &str, &[&str])] = match (r.group, r.plural) {
                    ("", "pods") => &[
                        ("attach", "PodAttachOptions", &["create", "get"]),
                        ("binding", "Binding", &["create"]),
                        ("exec", "PodExecOptions", &["create", "get"]),
                        ("log", "Pod", &["get"]),
                        ("portforward", "PodPortForwardOptions", &["create", "get"]),
                    ],
                    ("", "nodes") => &[(
                        "proxy",
                        "NodeProxyOptions",
                        &["create", "delete", "get", "patch", "update"],
                    )],
                    ("", "serviceaccounts") => &[("token", "TokenRequest", &["create"])],
                    _ => &[],
                };
                for (sub, kind, verbs) in extra {
                    let mut entry = json!({"name": format!("{}/{sub}", r.plural), "singularName": "",
                        "namespaced": r.namespaced, "kind": kind, "verbs": verbs});
                    if *sub == "token" {
                        entry["group"] = json!("authentication.k8s.io");
                        entry["version"] = json!("v1");
                    }
                    list.push(entry);
                }
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
