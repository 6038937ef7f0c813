//! A container's environment, built as the kubelet builds it
//! (`kubelet_pods.go` makeEnvironmentVariables):
//!
//! 1. `envFrom` sources, in order, keys prefixed; keys that are not valid
//!    variable names are skipped and reported (the kubelet's
//!    `InvalidEnvironmentVariableNames` event);
//! 2. `env` entries in order: a `value` has its `$(VAR)` references expanded
//!    against what is defined so far and the service variables; a `valueFrom`
//!    is resolved (downward API fields, container resources, ConfigMap and
//!    Secret keys) and never expanded;
//! 3. the service variables (`<SVC>_SERVICE_HOST`, docker-link style
//!    `<SVC>_PORT_…`) not already defined: for every Service with a cluster IP
//!    in the pod's namespace when `enableServiceLinks`, and always for
//!    `default/kubernetes`.
//!
//! A missing ConfigMap, Secret or key that is not optional fails the container
//! with `CreateContainerConfigError` and the kubelet's message.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{
    ConfigMap, Container, ObjectFieldSelector, Pod, ResourceFieldSelector, Secret, Service,
};

use crate::objects::{LookupError, ObjectSource};
use crate::quantity::{Quantity, QuantityError};

/// Why a container's environment could not be built. Every variant is a
/// `CreateContainerConfigError` for the container, with this message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    /// A referenced ConfigMap does not exist (not optional).
    #[error("configmap {name:?} not found")]
    ConfigMapNotFound {
        /// Its name.
        name: String,
    },
    /// A referenced Secret does not exist (not optional).
    #[error("secret {name:?} not found")]
    SecretNotFound {
        /// Its name.
        name: String,
    },
    /// A `configMapKeyRef` names a key the ConfigMap lacks.
    #[error("couldn't find key {key} in ConfigMap {namespace}/{name}")]
    ConfigMapKeyNotFound {
        /// The key.
        key: String,
        /// The pod's namespace.
        namespace: String,
        /// The ConfigMap.
        name: String,
    },
    /// A `secretKeyRef` names a key the Secret lacks.
    #[error("couldn't find key {key} in Secret {namespace}/{name}")]
    SecretKeyNotFound {
        /// The key.
        key: String,
        /// The pod's namespace.
        namespace: String,
        /// The Secret.
        name: String,
    },
    /// The object cache could not answer.
    #[error(transparent)]
    Lookup(#[from] LookupError),
    /// A downward API `fieldRef` the kubelet does not resolve.
    #[error("{0}")]
    FieldRef(String),
    /// A `resourceFieldRef` the kubelet does not resolve.
    #[error("{0}")]
    ResourceFieldRef(String),
    /// A resource quantity in the pod (or a divisor) does not parse.
    #[error("invalid quantity in {what}: {source}")]
    Quantity {
        /// Where it was.
        what: String,
        /// The parse error.
        source: QuantityError,
    },
    /// The pod has no spec (malformed input).
    #[error("pod has no spec")]
    NoSpec,
}

impl EnvError {
    /// The container waiting reason this error reports.
    pub fn reason(&self) -> &'static str {
        "CreateContainerConfigError"
    }
}

/// The node's allocatable resources: the limits the downward API reports for a
/// container without its own (`defaultPodLimitsForDownwardAPI`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeAllocatable {
    /// Allocatable CPU.
    pub cpu: Option<Quantity>,
    /// Allocatable memory.
    pub memory: Option<Quantity>,
    /// Allocatable ephemeral storage.
    pub ephemeral_storage: Option<Quantity>,
}

/// What the kubelet knows about a pod besides its object: addresses from the
/// node and the sandbox, and the node's allocatable resources.
#[derive(Debug, Clone, Copy)]
pub struct PodContext<'a> {
    /// The pod.
    pub pod: &'a Pod,
    /// The node's IPs, primary first (`status.hostIP`, `status.hostIPs`).
    pub host_ips: &'a [String],
    /// The pod's IPs, primary first (`status.podIP`, `status.podIPs`); the
    /// node's for hostNetwork pods.
    pub pod_ips: &'a [String],
    /// The node's allocatable resources.
    pub node: &'a NodeAllocatable,
}

/// One environment variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvVar {
    /// Its name.
    pub name: String,
    /// Its value.
    pub value: String,
}

/// A container's environment and what is worth an event about it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerEnv {
    /// The variables: `envFrom` and `env` in declaration order (a redefinition
    /// keeps the first position), then service variables by name.
    pub vars: Vec<EnvVar>,
    /// Warnings the kubelet turns into events, e.g. `Keys [1x] from the EnvFrom
    /// configMap default/cm were skipped since they are considered invalid
    /// environment variable names.` (reason `InvalidEnvironmentVariableNames`).
    pub warnings: Vec<String>,
}

impl ContainerEnv {
    /// The value of `name`, if defined.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .iter()
            .find(|v| v.name == name)
            .map(|v| v.value.as_str())
    }

    /// As `NAME=value` strings, the runtime's form.
    pub fn to_strings(&self) -> Vec<String> {
        self.vars
            .iter()
            .map(|v| format!("{}={}", v.name, v.value))
            .collect()
    }
}

/// Expands `$(VAR)` references in `input` as Kubernetes does
/// (`third_party/forked/golang/expansion`): `$$` is an escaped `$`, a reference
/// to an unknown variable is left as written, and an unterminated `$(` or a `$`
/// before anything else stays literal.
pub fn expand(input: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        let mut chars = after.chars();
        match chars.next() {
            // A lone `$` at the end is kept.
            None => {
                out.push('$');
                rest = after;
            }
            Some('$') => {
                out.push('$');
                rest = &after[1..];
            }
            Some('(') => match after.find(')') {
                Some(close) => {
                    let name = &after[1..close];
                    match lookup(name) {
                        Some(value) => out.push_str(&value),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &after[close + 1..];
                }
                // Incomplete reference: `$(` kept, scanning goes on after it.
                None => {
                    out.push_str("$(");
                    rest = &after[1..];
                }
            },
            Some(c) => {
                out.push('$');
                out.push(c);
                rest = &after[c.len_utf8()..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Whether `name` is a valid environment variable name for the API
/// (`IsEnvVarName`: `[-._a-zA-Z][-._a-zA-Z0-9]*`, not `.`, `..` or `..*`).
pub fn is_env_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || matches!(c, '-' | '.' | '_'));
    first_ok
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
        && !name.starts_with("..")
        && name != "."
}

/// An ordered map: declaration order, a redefinition replaces in place.
#[derive(Default)]
struct Ordered {
    vars: Vec<EnvVar>,
    index: HashMap<String, usize>,
}

impl Ordered {
    fn set(&mut self, name: String, value: String) {
        match self.index.get(&name) {
            Some(&i) => self.vars[i].value = value,
            None => {
                self.index.insert(name.clone(), self.vars.len());
                self.vars.push(EnvVar { name, value });
            }
        }
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.index.get(name).map(|&i| self.vars[i].value.as_str())
    }
}

/// Caches objects per build, as the kubelet does within one call (a
/// ConfigMap read once even when several variables use it).
struct Objects<'a> {
    source: &'a dyn ObjectSource,
    namespace: &'a str,
    config_maps: HashMap<String, Option<ConfigMap>>,
    secrets: HashMap<String, Option<Secret>>,
}

impl Objects<'_> {
    fn config_map(&mut self, name: &str) -> Result<Option<&ConfigMap>, EnvError> {
        if !self.config_maps.contains_key(name) {
            let found = self.source.config_map(self.namespace, name)?;
            self.config_maps.insert(name.to_owned(), found);
        }
        Ok(self.config_maps.get(name).and_then(Option::as_ref))
    }

    fn secret(&mut self, name: &str) -> Result<Option<&Secret>, EnvError> {
        if !self.secrets.contains_key(name) {
            let found = self.source.secret(self.namespace, name)?;
            self.secrets.insert(name.to_owned(), found);
        }
        Ok(self.secrets.get(name).and_then(Option::as_ref))
    }
}

/// Builds `container`'s environment (see the module documentation).
pub fn container_env(
    ctx: &PodContext<'_>,
    container: &Container,
    objects: &dyn ObjectSource,
) -> Result<ContainerEnv, EnvError> {
    let pod = ctx.pod;
    let spec = pod.spec.as_ref().ok_or(EnvError::NoSpec)?;
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    // The API server defaults enableServiceLinks to true; a pod without it
    // (a file pod not defaulted) is treated the same rather than refused.
    let links = spec.enable_service_links.unwrap_or(true);
    let mut service_env = service_env(namespace, links, objects)?;
    let mut cache = Objects {
        source: objects,
        namespace,
        config_maps: HashMap::new(),
        secrets: HashMap::new(),
    };
    let mut env = Ordered::default();
    let mut warnings = Vec::new();

    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.as_deref().unwrap_or_default();
        let (kind, name, entries): (&str, &str, Vec<(String, String)>) =
            if let Some(cm_ref) = &from.config_map_ref {
                let name = cm_ref.name.as_str();
                let Some(cm) = cache.config_map(name)? else {
                    if cm_ref.optional == Some(true) {
                        continue;
                    }
                    return Err(EnvError::ConfigMapNotFound {
                        name: name.to_owned(),
                    });
                };
                let mut entries: Vec<(String, String)> = cm
                    .data
                    .iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                entries.sort();
                ("configMap", name, entries)
            } else if let Some(secret_ref) = &from.secret_ref {
                let name = secret_ref.name.as_str();
                let Some(secret) = cache.secret(name)? else {
                    if secret_ref.optional == Some(true) {
                        continue;
                    }
                    return Err(EnvError::SecretNotFound {
                        name: name.to_owned(),
                    });
                };
                let entries = secret
                    .data
                    .iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), String::from_utf8_lossy(&v.0).into_owned()))
                    .collect();
                ("secret", name, entries)
            } else {
                continue;
            };
        let mut invalid = Vec::new();
        for (key, value) in entries {
            let full = format!("{prefix}{key}");
            if is_env_var_name(&full) {
                env.set(full, value);
            } else {
                invalid.push(full);
            }
        }
        if !invalid.is_empty() {
            invalid.sort();
            let note = format!(
                "Keys [{}] from the EnvFrom {kind} {namespace}/{name} were skipped since they are considered invalid environment variable names.",
                invalid.join(", ")
            );
            tracing::warn!(pod = %crate::pod_display_name(pod), container = %container.name, "{note}");
            warnings.push(note);
        }
    }

    for var in container.env.iter().flatten() {
        let value = match (var.value.as_deref(), &var.value_from) {
            (Some(v), _) if !v.is_empty() => expand(v, |name| {
                env.get(name)
                    .or_else(|| service_env.get(name).map(String::as_str))
                    .map(str::to_owned)
            }),
            (_, Some(from)) => {
                if let Some(field) = &from.field_ref {
                    field_ref_value(ctx, field)?
                } else if let Some(res) = &from.resource_field_ref {
                    resource_field_value(pod, Some(container), res, ctx.node)?
                } else if let Some(key_ref) = &from.config_map_key_ref {
                    let optional = key_ref.optional == Some(true);
                    let Some(cm) = cache.config_map(&key_ref.name)? else {
                        if optional {
                            continue;
                        }
                        return Err(EnvError::ConfigMapNotFound {
                            name: key_ref.name.clone(),
                        });
                    };
                    match cm.data.as_ref().and_then(|d| d.get(&key_ref.key)) {
                        Some(v) => v.clone(),
                        None if optional => continue,
                        None => {
                            return Err(EnvError::ConfigMapKeyNotFound {
                                key: key_ref.key.clone(),
                                namespace: namespace.to_owned(),
                                name: key_ref.name.clone(),
                            });
                        }
                    }
                } else if let Some(key_ref) = &from.secret_key_ref {
                    let optional = key_ref.optional == Some(true);
                    let Some(secret) = cache.secret(&key_ref.name)? else {
                        if optional {
                            continue;
                        }
                        return Err(EnvError::SecretNotFound {
                            name: key_ref.name.clone(),
                        });
                    };
                    match secret.data.as_ref().and_then(|d| d.get(&key_ref.key)) {
                        Some(v) => String::from_utf8_lossy(&v.0).into_owned(),
                        None if optional => continue,
                        None => {
                            return Err(EnvError::SecretKeyNotFound {
                                key: key_ref.key.clone(),
                                namespace: namespace.to_owned(),
                                name: key_ref.name.clone(),
                            });
                        }
                    }
                } else {
                    String::new()
                }
            }
            _ => String::new(),
        };
        // A variable the pod defines shadows the service variable of that name.
        service_env.remove(&var.name);
        env.set(var.name.clone(), value);
    }

    let mut vars = env.vars;
    for (name, value) in service_env {
        if !env.index.contains_key(&name) {
            vars.push(EnvVar { name, value });
        }
    }
    Ok(ContainerEnv { vars, warnings })
}

/// `makeEnvVariableName`: upper case, `-` → `_`.
fn env_name(name: &str) -> String {
    name.replace('-', "_").to_uppercase()
}

/// The service environment variables a pod in `namespace` gets
/// (`getServiceEnvVarMap` + `envvars.FromServices`): every Service with a
/// cluster IP in the namespace when `enable_service_links`, and always
/// `default/kubernetes`.
pub fn service_env(
    namespace: &str,
    enable_service_links: bool,
    objects: &dyn ObjectSource,
) -> Result<BTreeMap<String, String>, EnvError> {
    let mut chosen: BTreeMap<String, Service> = BTreeMap::new();
    for svc in objects.services("default")? {
        if svc.metadata.name.as_deref() == Some("kubernetes") && cluster_ip(&svc).is_some() {
            chosen.insert("kubernetes".to_owned(), svc);
        }
    }
    if enable_service_links {
        for svc in objects.services(namespace)? {
            if cluster_ip(&svc).is_none() {
                continue;
            }
            if let Some(name) = svc.metadata.name.clone() {
                chosen.insert(name, svc);
            }
        }
    }
    let mut out = BTreeMap::new();
    for (name, svc) in &chosen {
        let Some(ip) = cluster_ip(svc) else { continue };
        let prefix = env_name(name);
        out.insert(format!("{prefix}_SERVICE_HOST"), ip.to_owned());
        let ports = svc
            .spec
            .as_ref()
            .and_then(|s| s.ports.as_deref())
            .unwrap_or_default();
        // Validation guarantees a port for a ClusterIP service; without one
        // there is simply nothing more to say (the kubelet would index [0]).
        if let Some(first) = ports.first() {
            out.insert(format!("{prefix}_SERVICE_PORT"), first.port.to_string());
        }
        for p in ports {
            if let Some(port_name) = p.name.as_deref().filter(|n| !n.is_empty()) {
                out.insert(
                    format!("{prefix}_SERVICE_PORT_{}", env_name(port_name)),
                    p.port.to_string(),
                );
            }
        }
        for (i, p) in ports.iter().enumerate() {
            let proto = p.protocol.as_deref().unwrap_or("TCP");
            let lower = proto.to_lowercase();
            let host_port = if ip.contains(':') {
                format!("[{ip}]:{}", p.port)
            } else {
                format!("{ip}:{}", p.port)
            };
            let url = format!("{lower}://{host_port}");
            if i == 0 {
                // Docker special-cases the first port.
                out.insert(format!("{prefix}_PORT"), url.clone());
            }
            let port_prefix = format!("{prefix}_PORT_{}_{}", p.port, proto.to_uppercase());
            out.insert(format!("{port_prefix}_PROTO"), lower);
            out.insert(format!("{port_prefix}_PORT"), p.port.to_string());
            out.insert(format!("{port_prefix}_ADDR"), ip.to_owned());
            out.insert(port_prefix, url);
        }
    }
    Ok(out)
}

/// The cluster IP if set (`IsServiceIPSet`: not empty, not `None`).
fn cluster_ip(svc: &Service) -> Option<&str> {
    svc.spec
        .as_ref()
        .and_then(|s| s.cluster_ip.as_deref())
        .filter(|ip| !ip.is_empty() && *ip != "None")
}

/// Splits `metadata.labels['key']` into (`metadata.labels`, `key`)
/// (`SplitMaybeSubscriptedPath`).
fn split_subscript(path: &str) -> Option<(&str, &str)> {
    let inner = path.strip_suffix("']")?;
    let (base, key) = inner.split_once("['")?;
    (!base.is_empty()).then_some((base, key))
}

/// Why `key` is not a qualified name (`IsQualifiedName`), if it is not.
fn qualified_name_error(key: &str) -> Option<String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if key.matches('/').count() > 1 {
        return Some("a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character with an optional DNS subdomain prefix and '/'".to_owned());
    }
    if let Some(p) = prefix {
        let ok = !p.is_empty()
            && p.len() <= 253
            && p.split('.').all(|label| {
                !label.is_empty()
                    && label
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            });
        if !ok {
            return Some("prefix part must be a lowercase RFC 1123 subdomain".to_owned());
        }
    }
    if name.is_empty() {
        return Some("name part must be non-empty".to_owned());
    }
    if name.len() > 63 {
        return Some("name part must be no more than 63 characters".to_owned());
    }
    let alnum = |c: char| c.is_ascii_alphanumeric();
    let ok = name.starts_with(alnum)
        && name.ends_with(alnum)
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    (!ok).then(|| "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character".to_owned())
}

/// Go's `%q` of a string (`strconv.Quote`), as `FormatMap` writes label values.
fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if c.is_control() || (c.is_whitespace() && c != ' ') => {
                if (c as u32) < 0x10000 {
                    out.push_str(&format!("\\u{:04x}", c as u32));
                } else {
                    out.push_str(&format!("\\U{:08x}", c as u32));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `FormatMap`: `key="value"` lines sorted by key, no trailing newline.
fn format_map(map: Option<&BTreeMap<String, String>>) -> String {
    map.into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", go_quote(v)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The value of a downward API field. `metadata_only` restricts to what a
/// downwardAPI volume may project (`fieldpath.ExtractFieldPathAsString`); env
/// vars also get spec and status fields (`podFieldSelectorRuntimeValue`).
pub(crate) fn field_value(
    pod: &Pod,
    host_ips: &[String],
    pod_ips: &[String],
    selector: &ObjectFieldSelector,
    metadata_only: bool,
) -> Result<String, EnvError> {
    let err = |m: String| Err(EnvError::FieldRef(m));
    let version = selector.api_version.as_deref().unwrap_or("v1");
    if !version.is_empty() && version != "v1" {
        return err(format!("unsupported pod version: {version}"));
    }
    let path = selector.field_path.as_str();
    let meta = &pod.metadata;
    if let Some((base, key)) = split_subscript(path) {
        return match base {
            "metadata.annotations" => match qualified_name_error(&key.to_lowercase()) {
                Some(e) => err(format!("invalid key subscript in {path}: {e}")),
                None => Ok(meta
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(key))
                    .cloned()
                    .unwrap_or_default()),
            },
            "metadata.labels" => match qualified_name_error(key) {
                Some(e) => err(format!("invalid key subscript in {path}: {e}")),
                None => Ok(meta
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(key))
                    .cloned()
                    .unwrap_or_default()),
            },
            _ => err(format!("field label does not support subscript: {path}")),
        };
    }
    let spec = pod.spec.as_ref();
    match path {
        "metadata.annotations" => return Ok(format_map(meta.annotations.as_ref())),
        "metadata.labels" => return Ok(format_map(meta.labels.as_ref())),
        "metadata.name" => return Ok(meta.name.clone().unwrap_or_default()),
        "metadata.namespace" => return Ok(meta.namespace.clone().unwrap_or_default()),
        "metadata.uid" => return Ok(meta.uid.clone().unwrap_or_default()),
        _ => {}
    }
    if metadata_only {
        return err(format!("unsupported fieldPath: {path}"));
    }
    match path {
        // `spec.host` is the old v1 spelling the API still converts.
        "spec.nodeName" | "spec.host" => {
            Ok(spec.and_then(|s| s.node_name.clone()).unwrap_or_default())
        }
        "spec.serviceAccountName" => Ok(spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default()),
        "status.hostIP" => match host_ips.first() {
            Some(ip) => Ok(ip.clone()),
            None => err("cannot get host IP: the node has no address yet".to_owned()),
        },
        // Newer kubelets (1.28+): every host IP.
        "status.hostIPs" => Ok(host_ips.join(",")),
        "status.podIP" => Ok(pod_ips.first().cloned().unwrap_or_default()),
        "status.podIPs" => Ok(pod_ips.join(",")),
        "spec.restartPolicy" | "spec.schedulerName" | "status.phase" => {
            err(format!("unsupported fieldPath: {path}"))
        }
        _ => err(format!("field label not supported: {path}")),
    }
}

fn field_ref_value(
    ctx: &PodContext<'_>,
    selector: &ObjectFieldSelector,
) -> Result<String, EnvError> {
    field_value(ctx.pod, ctx.host_ips, ctx.pod_ips, selector, false)
}

/// Parses the quantity under `name` in a resource list.
fn list_quantity(
    list: Option<&BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
    name: &str,
    what: &str,
) -> Result<Option<Quantity>, EnvError> {
    list.and_then(|l| l.get(name))
        .map(|q| {
            Quantity::try_from(q).map_err(|source| EnvError::Quantity {
                what: what.to_owned(),
                source,
            })
        })
        .transpose()
}

/// `ceil(a / b)` for non-negative `a` and positive `b`.
fn ceil_div(a: i64, b: i64) -> i64 {
    let (a, b) = (i128::from(a), i128::from(b));
    let q = a.div_euclid(b) + i128::from(a.rem_euclid(b) != 0);
    i64::try_from(q).unwrap_or(i64::MAX)
}

/// The value of a `resourceFieldRef` (`ExtractContainerResourceValue` with the
/// node's allocatable resources as the limits a container does not set):
/// CPU as `ceil(milli / divisor milli)`, memory, ephemeral storage and huge
/// pages as `ceil(bytes / divisor bytes)`. `default_container` is the container
/// whose env is being built; volumes name theirs in the selector.
pub(crate) fn resource_field_value(
    pod: &Pod,
    default_container: Option<&Container>,
    selector: &ResourceFieldSelector,
    node: &NodeAllocatable,
) -> Result<String, EnvError> {
    let err = |m: String| Err(EnvError::ResourceFieldRef(m));
    let container = match selector.container_name.as_deref().filter(|n| !n.is_empty()) {
        Some(name) => {
            let spec = pod.spec.as_ref().ok_or(EnvError::NoSpec)?;
            match spec
                .containers
                .iter()
                .chain(spec.init_containers.iter().flatten())
                .find(|c| c.name == name)
            {
                Some(c) => c,
                None => return err(format!("container {name} not found")),
            }
        }
        None => match default_container {
            Some(c) => c,
            None => return err("resourceFieldRef needs a containerName".to_owned()),
        },
    };
    let divisor = match &selector.divisor {
        Some(d) => Quantity::try_from(d).map_err(|source| EnvError::Quantity {
            what: format!("divisor of {}", selector.resource),
            source,
        })?,
        None => Quantity::ZERO,
    };
    // A zero divisor means the default, 1.
    let divisor = if divisor.is_zero() {
        Quantity::from_units(1)
    } else {
        divisor
    };
    let resources = container.resources.as_ref();
    let limits = resources.and_then(|r| r.limits.as_ref());
    let requests = resources.and_then(|r| r.requests.as_ref());
    let Some((kind, name)) = selector.resource.split_once('.') else {
        return err(format!(
            "unsupported container resource : {}",
            selector.resource
        ));
    };
    let what = format!("{} of container {}", selector.resource, container.name);
    let quantity = match kind {
        "limits" => {
            let own = list_quantity(limits, name, &what)?;
            // defaultPodLimitsForDownwardAPI: no limit → node allocatable.
            own.or(match name {
                "cpu" => node.cpu,
                "memory" => node.memory,
                "ephemeral-storage" => node.ephemeral_storage,
                _ => None,
            })
        }
        "requests" => list_quantity(requests, name, &what)?,
        _ => {
            return err(format!(
                "unsupported container resource : {}",
                selector.resource
            ));
        }
    }
    .unwrap_or_default();
    match name {
        "cpu" => {
            let d = divisor.milli_value();
            if d <= 0 {
                return err(format!(
                    "invalid divisor {divisor} for {}",
                    selector.resource
                ));
            }
            Ok(ceil_div(quantity.milli_value().max(0), d).to_string())
        }
        "memory" | "ephemeral-storage" => {
            let d = divisor.value();
            if d <= 0 {
                return err(format!(
                    "invalid divisor {divisor} for {}",
                    selector.resource
                ));
            }
            Ok(ceil_div(quantity.value().max(0), d).to_string())
        }
        n if n.starts_with("hugepages-") => {
            let d = divisor.value();
            if d <= 0 {
                return err(format!(
                    "invalid divisor {divisor} for {}",
                    selector.resource
                ));
            }
            Ok(ceil_div(quantity.value().max(0), d).to_string())
        }
        _ => err(format!(
            "unsupported container resource : {}",
            selector.resource
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};

    use super::*;
    use crate::objects::MapObjects;
    use crate::testutil::{object, pod};

    fn vars(map: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let owned: HashMap<String, String> = map
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| owned.get(name).cloned()
    }

    #[test]
    fn expansion_follows_kubelet_rules() {
        let m = vars(&[("VAR_A", "A"), ("VAR_B", "B"), ("EMPTY", "")]);
        // Cases from the kubelet's expansion tests.
        assert_eq!(expand("$(VAR_A)", &m), "A");
        assert_eq!(expand("___$(VAR_B)___", &m), "___B___");
        assert_eq!(expand("$(VAR_A)-$(VAR_B)", &m), "A-B");
        assert_eq!(expand("$(EMPTY)x", &m), "x");
        assert_eq!(expand("$$(VAR_A)", &m), "$(VAR_A)", "escaped reference");
        assert_eq!(expand("$$$(VAR_A)", &m), "$A");
        assert_eq!(expand("$$$$(VAR_A)", &m), "$$(VAR_A)");
        assert_eq!(expand("$(UNDEFINED)", &m), "$(UNDEFINED)", "undefined kept");
        assert_eq!(expand("$()", &m), "$()");
        assert_eq!(expand("$(VAR_A", &m), "$(VAR_A", "unterminated kept");
        assert_eq!(expand("$(VAR_A$(VAR_B)", &m), "$(VAR_A$(VAR_B)");
        assert_eq!(
            expand("$VAR_A", &m),
            "$VAR_A",
            "shell syntax is not expanded"
        );
        assert_eq!(expand("$", &m), "$");
        assert_eq!(expand("a$", &m), "a$");
        assert_eq!(
            expand("$é$(VAR_A)", &m),
            "$éA",
            "multi-byte after $ is safe"
        );
        assert_eq!(expand("no refs", &m), "no refs");
        assert_eq!(expand("", &m), "");
        assert_eq!(expand("$(VAR_A)$(VAR_A)", &m), "AA");
    }

    #[test]
    fn env_var_names_follow_is_env_var_name() {
        for ok in [
            "A",
            "a_b",
            "my.env-name",
            "MY_ENV.NAME",
            "MyEnvName1",
            "_x",
            "-x",
            ".x",
        ] {
            assert!(is_env_var_name(ok), "{ok}");
        }
        for bad in ["", "1x", "a b", "a=b", ".", "..", "..x", "ä"] {
            assert!(!is_env_var_name(bad), "{bad}");
        }
    }

    const POD: &str = r#"
metadata:
  name: web
  namespace: shop
  uid: 1234-abcd
  labels: {app: web, "tier": "front\"end"}
  annotations: {"example.com/note": "hi"}
spec:
  nodeName: edge-1
  serviceAccountName: web-sa
  containers:
  - name: app
    image: busybox
    resources:
      limits: {cpu: 500m, memory: 64Mi}
      requests: {cpu: 250m, memory: 32Mi}
  - name: nolimits
    image: busybox
"#;

    /// Runs `f` with a context for `pod` on a dual-stack node.
    fn with_ctx<R>(pod: &Pod, f: impl FnOnce(&PodContext<'_>) -> R) -> R {
        let host_ips = vec!["198.18.0.2".to_owned(), "fd00::2".to_owned()];
        let pod_ips = vec!["10.42.0.9".to_owned(), "fd42::9".to_owned()];
        let node = node();
        f(&PodContext {
            pod,
            host_ips: &host_ips,
            pod_ips: &pod_ips,
            node: &node,
        })
    }

    fn node() -> NodeAllocatable {
        NodeAllocatable {
            cpu: Some(Quantity::parse("4").unwrap()),
            memory: Some(Quantity::parse("1Gi").unwrap()),
            ephemeral_storage: Some(Quantity::parse("10Gi").unwrap()),
        }
    }

    fn build(pod: &Pod, container: &str, objects: &MapObjects) -> Result<ContainerEnv, EnvError> {
        let c = pod
            .spec
            .as_ref()
            .unwrap()
            .containers
            .iter()
            .find(|c| c.name == container)
            .unwrap();
        with_ctx(pod, |ctx| container_env(ctx, c, objects))
    }

    fn with_env(env_yaml: &str) -> Pod {
        let mut p = pod(POD);
        let c: Container = object(&format!(
            "name: app\nimage: busybox\nresources:\n  limits: {{cpu: 500m, memory: 64Mi}}\n  requests: {{cpu: 250m, memory: 32Mi}}\n{env_yaml}"
        ));
        p.spec.as_mut().unwrap().containers[0] = c;
        p
    }

    fn objects() -> MapObjects {
        let mut o = MapObjects::default();
        o.add_config_map(object::<ConfigMap>(
            "metadata: {name: cfg, namespace: shop}\ndata: {LEVEL: debug, URL: 'http://$(HOST)', '1bad': x, 'also bad': y}",
        ));
        o.add_secret(object::<Secret>(
            "metadata: {name: creds, namespace: shop}\ndata: {PASSWORD: aHVudGVyMg==}",
        ));
        o.add_service(object::<Service>(
            "metadata: {name: kubernetes, namespace: default}\nspec: {clusterIP: 10.43.0.1, ports: [{name: https, port: 443, protocol: TCP}]}",
        ));
        o.add_service(object::<Service>(
            "metadata: {name: redis-master, namespace: shop}\nspec: {clusterIP: 10.43.7.7, ports: [{port: 6379}, {name: metrics, port: 9121, protocol: UDP}]}",
        ));
        o.add_service(object::<Service>(
            "metadata: {name: headless, namespace: shop}\nspec: {clusterIP: None, ports: [{port: 80}]}",
        ));
        o.add_service(object::<Service>(
            "metadata: {name: other, namespace: elsewhere}\nspec: {clusterIP: 10.43.9.9, ports: [{port: 80}]}",
        ));
        o
    }

    #[test]
    fn env_in_declaration_order_with_expansion_against_earlier_vars() {
        let p = with_env(
            r#"env:
- {name: FIRST, value: one}
- {name: SECOND, value: "$(FIRST)-two"}
- {name: LATER_REF, value: "$(THIRD)"}
- {name: THIRD, value: three}
- {name: ESCAPED, value: "$$(FIRST)"}
- {name: SVC, value: "$(REDIS_MASTER_SERVICE_HOST):$(REDIS_MASTER_SERVICE_PORT)"}
- {name: FIRST, value: redefined}
"#,
        );
        let env = build(&p, "app", &objects()).unwrap();
        assert_eq!(env.get("SECOND"), Some("one-two"));
        assert_eq!(
            env.get("LATER_REF"),
            Some("$(THIRD)"),
            "a reference to a later var is left as is"
        );
        assert_eq!(env.get("ESCAPED"), Some("$(FIRST)"));
        assert_eq!(env.get("SVC"), Some("10.43.7.7:6379"));
        assert_eq!(env.get("FIRST"), Some("redefined"));
        let names: Vec<&str> = env.vars.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(
            &names[..6],
            ["FIRST", "SECOND", "LATER_REF", "THIRD", "ESCAPED", "SVC"]
        );
    }

    #[test]
    fn service_links_for_namespace_and_always_kubernetes() {
        let p = with_env("");
        let env = build(&p, "app", &objects()).unwrap();
        // default/kubernetes always.
        assert_eq!(env.get("KUBERNETES_SERVICE_HOST"), Some("10.43.0.1"));
        assert_eq!(env.get("KUBERNETES_SERVICE_PORT"), Some("443"));
        assert_eq!(env.get("KUBERNETES_SERVICE_PORT_HTTPS"), Some("443"));
        assert_eq!(env.get("KUBERNETES_PORT"), Some("tcp://10.43.0.1:443"));
        assert_eq!(
            env.get("KUBERNETES_PORT_443_TCP"),
            Some("tcp://10.43.0.1:443")
        );
        assert_eq!(env.get("KUBERNETES_PORT_443_TCP_PROTO"), Some("tcp"));
        assert_eq!(env.get("KUBERNETES_PORT_443_TCP_PORT"), Some("443"));
        assert_eq!(env.get("KUBERNETES_PORT_443_TCP_ADDR"), Some("10.43.0.1"));
        // Same-namespace service: name upper-cased, '-' → '_'; only the first
        // port gets <SVC>_PORT; named ports get _SERVICE_PORT_<NAME>.
        assert_eq!(env.get("REDIS_MASTER_SERVICE_HOST"), Some("10.43.7.7"));
        assert_eq!(env.get("REDIS_MASTER_SERVICE_PORT"), Some("6379"));
        assert_eq!(env.get("REDIS_MASTER_SERVICE_PORT_METRICS"), Some("9121"));
        assert_eq!(env.get("REDIS_MASTER_PORT"), Some("tcp://10.43.7.7:6379"));
        assert_eq!(
            env.get("REDIS_MASTER_PORT_9121_UDP"),
            Some("udp://10.43.7.7:9121")
        );
        assert_eq!(env.get("REDIS_MASTER_PORT_9121_UDP_PROTO"), Some("udp"));
        // Headless services and other namespaces: nothing.
        assert!(env.get("HEADLESS_SERVICE_HOST").is_none());
        assert!(env.get("OTHER_SERVICE_HOST").is_none());
        // Service vars come after the pod's own, sorted.
        let services: Vec<&str> = env.vars.iter().map(|v| v.name.as_str()).collect();
        let mut sorted = services.clone();
        sorted.sort();
        assert_eq!(services, sorted);
    }

    #[test]
    fn enable_service_links_false_keeps_only_kubernetes() {
        let mut p = with_env("");
        p.spec.as_mut().unwrap().enable_service_links = Some(false);
        let env = build(&p, "app", &objects()).unwrap();
        assert_eq!(env.get("KUBERNETES_SERVICE_HOST"), Some("10.43.0.1"));
        assert!(env.get("REDIS_MASTER_SERVICE_HOST").is_none());
    }

    #[test]
    fn pod_env_shadows_service_env() {
        let p = with_env("env:\n- {name: KUBERNETES_SERVICE_HOST, value: mine}\n");
        let env = build(&p, "app", &objects()).unwrap();
        assert_eq!(env.get("KUBERNETES_SERVICE_HOST"), Some("mine"));
        assert_eq!(
            env.vars
                .iter()
                .filter(|v| v.name == "KUBERNETES_SERVICE_HOST")
                .count(),
            1
        );
    }

    #[test]
    fn service_ipv6_cluster_ip_is_bracketed() {
        let mut o = MapObjects::default();
        o.add_service(object::<Service>(
            "metadata: {name: kubernetes, namespace: default}\nspec: {clusterIP: 'fd43::1', ports: [{port: 443}]}",
        ));
        let env = service_env("default", true, &o).unwrap();
        assert_eq!(env["KUBERNETES_PORT"], "tcp://[fd43::1]:443");
        assert_eq!(env["KUBERNETES_SERVICE_HOST"], "fd43::1");
    }

    #[test]
    fn service_without_ports_does_not_panic() {
        let mut o = MapObjects::default();
        o.add_service(object::<Service>(
            "metadata: {name: odd, namespace: default}\nspec: {clusterIP: 10.0.0.1}",
        ));
        let env = service_env("default", true, &o).unwrap();
        assert_eq!(env.len(), 1);
        assert_eq!(env["ODD_SERVICE_HOST"], "10.0.0.1");
    }

    #[test]
    fn field_refs_resolve_like_pod_field_selector_runtime_value() {
        let p = with_env(
            r#"env:
- {name: NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
- {name: NS, valueFrom: {fieldRef: {apiVersion: v1, fieldPath: metadata.namespace}}}
- {name: UID, valueFrom: {fieldRef: {fieldPath: metadata.uid}}}
- {name: APP, valueFrom: {fieldRef: {fieldPath: "metadata.labels['app']"}}}
- {name: NOTE, valueFrom: {fieldRef: {fieldPath: "metadata.annotations['example.com/note']"}}}
- {name: MISSING_LABEL, valueFrom: {fieldRef: {fieldPath: "metadata.labels['nope']"}}}
- {name: LABELS, valueFrom: {fieldRef: {fieldPath: metadata.labels}}}
- {name: NODE, valueFrom: {fieldRef: {fieldPath: spec.nodeName}}}
- {name: SA, valueFrom: {fieldRef: {fieldPath: spec.serviceAccountName}}}
- {name: HOST_IP, valueFrom: {fieldRef: {fieldPath: status.hostIP}}}
- {name: POD_IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}
- {name: POD_IPS, valueFrom: {fieldRef: {fieldPath: status.podIPs}}}
- {name: NOT_EXPANDED, valueFrom: {fieldRef: {fieldPath: metadata.name}}, value: ""}
"#,
        );
        let env = build(&p, "app", &objects()).unwrap();
        assert_eq!(env.get("NAME"), Some("web"));
        assert_eq!(env.get("NS"), Some("shop"));
        assert_eq!(env.get("UID"), Some("1234-abcd"));
        assert_eq!(env.get("APP"), Some("web"));
        assert_eq!(env.get("NOTE"), Some("hi"));
        assert_eq!(env.get("MISSING_LABEL"), Some(""));
        assert_eq!(
            env.get("LABELS"),
            Some("app=\"web\"\ntier=\"front\\\"end\"")
        );
        assert_eq!(env.get("NODE"), Some("edge-1"));
        assert_eq!(env.get("SA"), Some("web-sa"));
        assert_eq!(env.get("HOST_IP"), Some("198.18.0.2"));
        assert_eq!(env.get("POD_IP"), Some("10.42.0.9"));
        assert_eq!(env.get("POD_IPS"), Some("10.42.0.9,fd42::9"));
    }

    #[test]
    fn bad_field_refs_are_precise_errors() {
        for (path, msg) in [
            ("spec.bogus", "field label not supported: spec.bogus"),
            ("status.phase", "unsupported fieldPath: status.phase"),
            (
                "metadata.name['x']",
                "field label does not support subscript: metadata.name['x']",
            ),
            (
                "metadata.labels['-bad-']",
                "invalid key subscript in metadata.labels['-bad-']",
            ),
        ] {
            let p = with_env(&format!(
                "env:\n- {{name: X, valueFrom: {{fieldRef: {{fieldPath: \"{path}\"}}}}}}\n"
            ));
            let e = build(&p, "app", &objects()).unwrap_err();
            assert!(e.to_string().starts_with(msg), "{path}: {e}");
            assert_eq!(e.reason(), "CreateContainerConfigError");
        }
        let p = with_env(
            "env:\n- {name: X, valueFrom: {fieldRef: {apiVersion: v2, fieldPath: metadata.name}}}\n",
        );
        assert_eq!(
            build(&p, "app", &objects()).unwrap_err().to_string(),
            "unsupported pod version: v2"
        );
    }

    #[test]
    fn resource_field_refs_round_up_with_divisors() {
        let p = with_env(
            r#"env:
- {name: CPU_LIMIT, valueFrom: {resourceFieldRef: {resource: limits.cpu}}}
- {name: CPU_LIMIT_M, valueFrom: {resourceFieldRef: {resource: limits.cpu, divisor: 1m}}}
- {name: CPU_REQ, valueFrom: {resourceFieldRef: {resource: requests.cpu}}}
- {name: MEM_LIMIT, valueFrom: {resourceFieldRef: {resource: limits.memory}}}
- {name: MEM_LIMIT_MI, valueFrom: {resourceFieldRef: {resource: limits.memory, divisor: 1Mi}}}
- {name: MEM_REQ_G, valueFrom: {resourceFieldRef: {resource: requests.memory, divisor: 1G}}}
- {name: EPH, valueFrom: {resourceFieldRef: {resource: limits.ephemeral-storage, divisor: 1Gi}}}
- {name: OTHER, valueFrom: {resourceFieldRef: {containerName: nolimits, resource: limits.memory, divisor: 1Mi}}}
- {name: OTHER_REQ, valueFrom: {resourceFieldRef: {containerName: nolimits, resource: requests.cpu}}}
"#,
        );
        let env = build(&p, "app", &objects()).unwrap();
        assert_eq!(env.get("CPU_LIMIT"), Some("1"), "500m rounds up to 1");
        assert_eq!(env.get("CPU_LIMIT_M"), Some("500"));
        assert_eq!(env.get("CPU_REQ"), Some("1"));
        assert_eq!(env.get("MEM_LIMIT"), Some("67108864"));
        assert_eq!(env.get("MEM_LIMIT_MI"), Some("64"));
        assert_eq!(env.get("MEM_REQ_G"), Some("1"), "32Mi/1G rounds up");
        assert_eq!(env.get("EPH"), Some("10"), "no limit: node allocatable");
        assert_eq!(env.get("OTHER"), Some("1024"), "no limit: node allocatable");
        assert_eq!(env.get("OTHER_REQ"), Some("0"));
        let p =
            with_env("env:\n- {name: X, valueFrom: {resourceFieldRef: {resource: limits.gpu}}}\n");
        assert_eq!(
            build(&p, "app", &objects()).unwrap_err().to_string(),
            "unsupported container resource : limits.gpu"
        );
        let p = with_env(
            "env:\n- {name: X, valueFrom: {resourceFieldRef: {containerName: ghost, resource: limits.cpu}}}\n",
        );
        assert_eq!(
            build(&p, "app", &objects()).unwrap_err().to_string(),
            "container ghost not found"
        );
        let p = with_env(
            "env:\n- {name: X, valueFrom: {resourceFieldRef: {resource: limits.cpu, divisor: bogus}}}\n",
        );
        assert!(matches!(
            build(&p, "app", &objects()).unwrap_err(),
            EnvError::Quantity { .. }
        ));
    }

    #[test]
    fn config_map_and_secret_keys_with_kubelet_messages() {
        let p = with_env(
            r#"env:
- {name: LEVEL, valueFrom: {configMapKeyRef: {name: cfg, key: LEVEL}}}
- {name: PASSWORD, valueFrom: {secretKeyRef: {name: creds, key: PASSWORD}}}
- {name: OPT_KEY, valueFrom: {configMapKeyRef: {name: cfg, key: nope, optional: true}}}
- {name: OPT_CM, valueFrom: {configMapKeyRef: {name: ghost, key: x, optional: true}}}
- {name: OPT_SECRET, valueFrom: {secretKeyRef: {name: ghost, key: x, optional: true}}}
- {name: URL, valueFrom: {configMapKeyRef: {name: cfg, key: URL}}}
"#,
        );
        let env = build(&p, "app", &objects()).unwrap();
        assert_eq!(env.get("LEVEL"), Some("debug"));
        assert_eq!(env.get("PASSWORD"), Some("hunter2"));
        assert_eq!(env.get("OPT_KEY"), None, "optional missing key: unset");
        assert_eq!(env.get("OPT_CM"), None);
        assert_eq!(env.get("OPT_SECRET"), None);
        assert_eq!(
            env.get("URL"),
            Some("http://$(HOST)"),
            "valueFrom is not expanded"
        );

        let cases = [
            (
                "{configMapKeyRef: {name: x, key: y}}",
                "configmap \"x\" not found",
            ),
            (
                "{configMapKeyRef: {name: cfg, key: y}}",
                "couldn't find key y in ConfigMap shop/cfg",
            ),
            (
                "{secretKeyRef: {name: x, key: y}}",
                "secret \"x\" not found",
            ),
            (
                "{secretKeyRef: {name: creds, key: y}}",
                "couldn't find key y in Secret shop/creds",
            ),
        ];
        for (from, msg) in cases {
            let p = with_env(&format!("env:\n- {{name: X, valueFrom: {from}}}\n"));
            let e = build(&p, "app", &objects()).unwrap_err();
            assert_eq!(e.to_string(), msg);
            assert_eq!(e.reason(), "CreateContainerConfigError");
        }
    }

    #[test]
    fn env_from_with_prefix_skips_invalid_names_and_env_wins() {
        let p = with_env(
            r#"envFrom:
- configMapRef: {name: cfg}
- prefix: S_
  secretRef: {name: creds}
- configMapRef: {name: ghost, optional: true}
env:
- {name: LEVEL, value: override}
"#,
        );
        let env = build(&p, "app", &objects()).unwrap();
        assert_eq!(env.get("LEVEL"), Some("override"), "env wins over envFrom");
        assert_eq!(env.get("URL"), Some("http://$(HOST)"));
        assert_eq!(env.get("S_PASSWORD"), Some("hunter2"));
        assert_eq!(env.get("1bad"), None);
        assert_eq!(
            env.warnings,
            vec![
                "Keys [1bad, also bad] from the EnvFrom configMap shop/cfg were skipped since they are considered invalid environment variable names."
            ]
        );
        let p = with_env("envFrom:\n- configMapRef: {name: ghost}\n");
        assert_eq!(
            build(&p, "app", &objects()).unwrap_err().to_string(),
            "configmap \"ghost\" not found"
        );
        let p = with_env("envFrom:\n- secretRef: {name: ghost}\n");
        assert_eq!(
            build(&p, "app", &objects()).unwrap_err().to_string(),
            "secret \"ghost\" not found"
        );
    }

    #[test]
    fn config_maps_are_read_once_per_build() {
        struct Counting {
            inner: MapObjects,
            reads: Cell<usize>,
        }
        impl ObjectSource for Counting {
            fn config_map(&self, ns: &str, name: &str) -> Result<Option<ConfigMap>, LookupError> {
                self.reads.set(self.reads.get() + 1);
                self.inner.config_map(ns, name)
            }
            fn secret(&self, ns: &str, name: &str) -> Result<Option<Secret>, LookupError> {
                self.inner.secret(ns, name)
            }
            fn services(&self, ns: &str) -> Result<Vec<Service>, LookupError> {
                self.inner.services(ns)
            }
        }
        let source = Counting {
            inner: objects(),
            reads: Cell::new(0),
        };
        let p = with_env(
            "envFrom:\n- configMapRef: {name: cfg}\nenv:\n- {name: A, valueFrom: {configMapKeyRef: {name: cfg, key: LEVEL}}}\n",
        );
        with_ctx(&p, |ctx| {
            container_env(ctx, &p.spec.as_ref().unwrap().containers[0], &source)
        })
        .unwrap();
        assert_eq!(source.reads.get(), 1);
    }

    #[test]
    fn lookup_failures_propagate() {
        struct Down;
        impl ObjectSource for Down {
            fn config_map(&self, _: &str, _: &str) -> Result<Option<ConfigMap>, LookupError> {
                Err(LookupError::Unavailable("cache not synced".into()))
            }
            fn secret(&self, _: &str, _: &str) -> Result<Option<Secret>, LookupError> {
                Err(LookupError::Unavailable("cache not synced".into()))
            }
            fn services(&self, _: &str) -> Result<Vec<Service>, LookupError> {
                Ok(vec![])
            }
        }
        let p = with_env(
            "env:\n- {name: A, valueFrom: {configMapKeyRef: {name: cfg, key: LEVEL, optional: true}}}\n",
        );
        let e = with_ctx(&p, |ctx| {
            container_env(ctx, &p.spec.as_ref().unwrap().containers[0], &Down)
        })
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "cache not synced",
            "optional does not hide errors"
        );
    }

    #[test]
    fn go_quoting_of_label_values() {
        assert_eq!(go_quote("plain"), "\"plain\"");
        assert_eq!(go_quote("a\"b\\c\n\t"), "\"a\\\"b\\\\c\\n\\t\"");
        assert_eq!(go_quote("\u{1}"), "\"\\x01\"");
        assert_eq!(go_quote("é ☃"), "\"é ☃\"");
        assert_eq!(go_quote("\u{a0}"), "\"\\u00a0\"");
    }
}
