//! Strategic merge patch (`application/strategic-merge-patch+json`) as the
//! Kubernetes API server applies it to the kinds the devserver serves.
//!
//! `kubectl apply` (three-way patches with `$setElementOrder/…`, `$patch:
//! delete`, `$retainKeys`, `$deleteFromPrimitiveList/…`), `kubectl
//! patch/label/annotate/taint/cordon` and kubelets (Node and Pod status) all
//! send this format, and they rely on lists such as containers, env or node
//! conditions being merged element by element rather than replaced.
//!
//! Which lists merge, and on which key, the API server reads from the
//! `patchStrategy`/`patchMergeKey` struct tags of k8s.io/api. The devserver
//! keeps objects as JSON, so those tags are copied into `FIELDS` (checked
//! against kubernetes/api v0.21.2, the devserver's K3s v1.21, up to v0.36.0).
//! A field not in the table merges like JSON merge patch when it is an object
//! and is replaced whole when it is a list.
//!
//! The merge follows k8s.io/apimachinery/pkg/util/strategicpatch (`mergeMap`,
//! `mergeSlice`, `mergePatchIntoOriginal`, `normalizeElementOrder`), its error
//! texts and its ordering quirks included, with the fixes made after 1.21
//! (kubernetes#105689, #107705): a null for a key the object lacks no longer
//! creates it, and directives never end up in the object. Upstream leaned on
//! decoding into Go structs to drop what the patch left behind; an object kept
//! as JSON has no such step, so what upstream copies in raw is cleaned as that
//! decode would (`$`-keys and nulls dropped), and where upstream strips
//! directives itself (a value for a key the object lacks) maps carrying
//! `$patch` go too. Where upstream is not one thing, this picks: a `$patch:
//! replace` map for a key the object lacks keeps its content (1.21; later
//! servers drop it), and a value one patch both adds and deletes is deleted
//! (upstream: Go's random map order decides).

use hyper::StatusCode;
use serde_json::{Map, Number, Value};

type Object = Map<String, Value>;

/// Deepest nesting of a patch, in objects and arrays. serde_json refuses to
/// parse deeper than 128, so no real request comes close; the bound keeps the
/// recursive merge off the end of the stack for values built in code.
const MAX_DEPTH: usize = 128;

const PATCH: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const SET_ELEMENT_ORDER: &str = "$setElementOrder";
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList";

/// Go's names for the types a decoded JSON value has, as errors print them.
const GO_MAP: &str = "map[string]interface {}";
const GO_LIST: &str = "[]interface {}";

/// Longest rendering of a value inside an error message: upstream prints the
/// whole map, which for a hostile patch could be the whole request again.
const MESSAGE_BUDGET: usize = 2048;

/// Why a strategic merge patch cannot be applied. The messages are the API
/// server's (k8s.io/apimachinery/pkg/util/mergepatch/errors.go and
/// strategicpatch/patch.go), Go value formatting included, so clients and
/// tests see what a real server says.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    /// The kind has no strategic-merge schema (upstream: custom resources).
    #[error("strategic merge patch format is not supported")]
    UnsupportedKind,
    /// The patch body is JSON but not an object (Go's json.Unmarshal wording).
    #[error("json: cannot unmarshal {0} into Go value of type map[string]interface {{}}")]
    NotAnObject(&'static str),
    /// The stored object is not a JSON object.
    #[error("invalid JSON document")]
    InvalidDocument,
    /// The patch nests deeper than 128 levels.
    #[error("strategic merge patch nests deeper than {} levels", MAX_DEPTH)]
    TooDeep,
    /// A list that merges has a list as an element.
    #[error("lists of lists are not supported")]
    ListOfLists,
    /// A `$deleteFromPrimitiveList` key without `/<field>`.
    #[error("invalid patch format of primitive list")]
    PrimitiveListFormat,
    /// `$retainKeys` is not a list, or the patch sets a key it does not list.
    #[error("invalid patch format of retainKeys")]
    RetainKeysFormat,
    /// A `$setElementOrder` key without `/<field>`.
    #[error("invalid patch format of setElementOrder list")]
    SetElementOrderFormat,
    /// An element of a list merged by key lacks the key.
    #[error("map: {map} does not contain declared merge key: {key}")]
    MissingMergeKey {
        /// The element, as Go prints a map.
        map: String,
        /// The list's merge key.
        key: String,
    },
    /// A value of the wrong JSON type where a list or a map is needed.
    #[error("expected a {expected}, but received a {actual}")]
    WrongType {
        /// Go's name for the type needed.
        expected: &'static str,
        /// Go's name for the type found.
        actual: &'static str,
    },
    /// A `$patch` other than `replace` or `delete` (or `merge` in a list).
    #[error("unknown patch type: {directive} in map: {map}")]
    UnknownDirective {
        /// The directive's value, as Go prints it with `%s`.
        directive: String,
        /// The map holding it.
        map: String,
    },
    /// `{"$patch": "merge"}` as a list element.
    #[error("merging lists cannot yet be specified in the patch")]
    MergeDirectiveInList,
    /// A list declared `merge` without a key holds maps.
    #[error("cannot merge lists without merge key for {0}")]
    NoDeclaredMergeKey(String),
    /// A merging list mixes element types.
    #[error("list element types are not identical: {0}")]
    MixedElementTypes(String),
    /// `$setElementOrder` over a list that is empty in both object and patch.
    #[error("no elements in any of the given slices")]
    NoElements,
    /// The patch's list is not in the order its `$setElementOrder` gives.
    #[error("The order in patch list:\n{patch}\n doesn't match $setElementOrder list:\n{order}\n")]
    OrderMismatch {
        /// The patch's list, as Go prints it.
        patch: String,
        /// The `$setElementOrder` list.
        order: String,
    },
}

impl PatchError {
    /// The HTTP status and `Status.reason` the API server answers with.
    ///
    /// Its patch handler (`interpretStrategicMergePatchError`) turns malformed
    /// directives into 400 and lists of lists into 422; everything else
    /// reaches the client as a 500 with an empty reason. An unsupported kind is
    /// refused before patching, as for custom resources, with 415.
    pub fn status(&self) -> (StatusCode, &'static str) {
        match self {
            Self::UnsupportedKind => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "UnsupportedMediaType"),
            Self::NotAnObject(_)
            | Self::TooDeep
            | Self::PrimitiveListFormat
            | Self::RetainKeysFormat
            | Self::SetElementOrderFormat => (StatusCode::BAD_REQUEST, "BadRequest"),
            Self::ListOfLists => (StatusCode::UNPROCESSABLE_ENTITY, "Invalid"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, ""),
        }
    }
}

/// Applies `patch` to `target`, an object of kind `kind` (`Pod`, `Node`, …),
/// as the API server applies an `application/strategic-merge-patch+json`
/// body, and returns the patched object. `target` is not changed.
pub fn strategic_merge(target: &Value, patch: &Value, kind: &str) -> Result<Value, PatchError> {
    let ty = kind_schema(kind).ok_or(PatchError::UnsupportedKind)?;
    let Value::Object(original) = target else {
        return Err(PatchError::InvalidDocument);
    };
    let patch = match patch {
        Value::Object(patch) => patch,
        // Go decodes `null` into a nil map: a patch that changes nothing.
        Value::Null => return Ok(target.clone()),
        other => return Err(PatchError::NotAnObject(json_kind(other))),
    };
    check_depth(patch)?;
    merge_map(original.clone(), patch, ty, 1).map(Value::Object)
}

// ---------------------------------------------------------------------------
// The schema: struct tags of k8s.io/api.

/// The Go struct types of k8s.io/api on the way to a tagged field. Every type
/// without a tagged field below it is [`Ty::Untagged`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ty {
    Untagged,
    /// Kinds whose only tagged fields are in `metadata`: ConfigMap, Secret,
    /// Event, coordination/v1 Lease, discovery/v1 EndpointSlice (whose
    /// `endpoints` and `ports` are untagged, so replaced whole).
    MetaOnly,
    ObjectMeta,
    Pod,
    PodSpec,
    Container,
    EphemeralContainer,
    PodStatus,
    Node,
    NodeSpec,
    NodeStatus,
    Namespace,
    NamespaceStatus,
    Service,
    ServiceSpec,
    ServiceStatus,
    ServiceAccount,
}

/// One struct field: its JSON name, its `patchStrategy` and `patchMergeKey`
/// tags verbatim, and the type of the field (of its elements, for a list).
struct Field {
    owner: Ty,
    json: &'static str,
    strategy: &'static str,
    merge_key: &'static str,
    ty: Ty,
}

const fn field(
    owner: Ty,
    json: &'static str,
    strategy: &'static str,
    merge_key: &'static str,
    ty: Ty,
) -> Field {
    Field {
        owner,
        json,
        strategy,
        merge_key,
        ty,
    }
}

/// Every tagged field of the served kinds, and the untagged struct fields
/// that lead to them. Tags as in kubernetes/api core/v1/types.go and
/// apimachinery meta/v1/types.go; coordination/v1 and discovery/v1 have none.
/// Fields added after 1.21 say since when: a 1.21 server drops them as unknown,
/// and merging them as newer servers do is harmless for older clients.
///
/// Deliberately absent (untagged upstream, so replaced whole): PodSpec
/// tolerations, readinessGates, resourceClaims' claims lists; NodeSpec taints;
/// NodeStatus images, volumesInUse, volumesAttached; PodStatus
/// containerStatuses and friends (ContainerStatus has tagged `volumeMounts`
/// and `allocatedResourcesStatus`, but a replaced list never looks inside);
/// ObjectMeta managedFields; NamespaceSpec finalizers; ServiceAccount
/// imagePullSecrets. Unreleased alpha tags on master after v0.36
/// (evictionResponders, nodeAllocatableResourceClaimStatuses) are left out.
static FIELDS: &[Field] = &[
    // The way from each kind to its tagged structs.
    field(Ty::MetaOnly, "metadata", "", "", Ty::ObjectMeta),
    field(Ty::Pod, "metadata", "", "", Ty::ObjectMeta),
    field(Ty::Pod, "spec", "", "", Ty::PodSpec),
    field(Ty::Pod, "status", "", "", Ty::PodStatus),
    field(Ty::Node, "metadata", "", "", Ty::ObjectMeta),
    field(Ty::Node, "spec", "", "", Ty::NodeSpec),
    field(Ty::Node, "status", "", "", Ty::NodeStatus),
    field(Ty::Namespace, "metadata", "", "", Ty::ObjectMeta),
    field(Ty::Namespace, "status", "", "", Ty::NamespaceStatus),
    field(Ty::Service, "metadata", "", "", Ty::ObjectMeta),
    field(Ty::Service, "spec", "", "", Ty::ServiceSpec),
    field(Ty::Service, "status", "", "", Ty::ServiceStatus),
    field(Ty::ServiceAccount, "metadata", "", "", Ty::ObjectMeta),
    // ServiceAccount.
    field(Ty::ServiceAccount, "secrets", "merge", "name", Ty::Untagged),
    // meta/v1 ObjectMeta.
    field(
        Ty::ObjectMeta,
        "ownerReferences",
        "merge",
        "uid",
        Ty::Untagged,
    ),
    field(Ty::ObjectMeta, "finalizers", "merge", "", Ty::Untagged),
    // PodSpec.
    field(
        Ty::PodSpec,
        "volumes",
        "merge,retainKeys",
        "name",
        Ty::Untagged,
    ),
    field(
        Ty::PodSpec,
        "initContainers",
        "merge",
        "name",
        Ty::Container,
    ),
    field(Ty::PodSpec, "containers", "merge", "name", Ty::Container),
    field(
        Ty::PodSpec,
        "ephemeralContainers",
        "merge",
        "name",
        Ty::EphemeralContainer,
    ),
    field(
        Ty::PodSpec,
        "imagePullSecrets",
        "merge",
        "name",
        Ty::Untagged,
    ),
    field(Ty::PodSpec, "hostAliases", "merge", "ip", Ty::Untagged),
    field(
        Ty::PodSpec,
        "topologySpreadConstraints",
        "merge",
        "topologyKey",
        Ty::Untagged,
    ),
    // Since 1.26.
    field(
        Ty::PodSpec,
        "schedulingGates",
        "merge",
        "name",
        Ty::Untagged,
    ),
    field(
        Ty::PodSpec,
        "resourceClaims",
        "merge,retainKeys",
        "name",
        Ty::Untagged,
    ),
    // Container.
    field(
        Ty::Container,
        "ports",
        "merge",
        "containerPort",
        Ty::Untagged,
    ),
    field(Ty::Container, "env", "merge", "name", Ty::Untagged),
    field(
        Ty::Container,
        "volumeMounts",
        "merge",
        "mountPath",
        Ty::Untagged,
    ),
    field(
        Ty::Container,
        "volumeDevices",
        "merge",
        "devicePath",
        Ty::Untagged,
    ),
    // EphemeralContainer (its EphemeralContainerCommon, inline). `ports` is
    // tagged since 1.23 (ephemeral containers may not have ports anyway).
    field(
        Ty::EphemeralContainer,
        "ports",
        "merge",
        "containerPort",
        Ty::Untagged,
    ),
    field(Ty::EphemeralContainer, "env", "merge", "name", Ty::Untagged),
    field(
        Ty::EphemeralContainer,
        "volumeMounts",
        "merge",
        "mountPath",
        Ty::Untagged,
    ),
    field(
        Ty::EphemeralContainer,
        "volumeDevices",
        "merge",
        "devicePath",
        Ty::Untagged,
    ),
    // PodStatus.
    field(Ty::PodStatus, "conditions", "merge", "type", Ty::Untagged),
    field(Ty::PodStatus, "podIPs", "merge", "ip", Ty::Untagged),
    // Since 1.28.
    field(Ty::PodStatus, "hostIPs", "merge", "ip", Ty::Untagged),
    field(
        Ty::PodStatus,
        "resourceClaimStatuses",
        "merge,retainKeys",
        "name",
        Ty::Untagged,
    ),
    // NodeSpec.
    field(Ty::NodeSpec, "podCIDRs", "merge", "", Ty::Untagged),
    // NodeStatus.
    field(Ty::NodeStatus, "conditions", "merge", "type", Ty::Untagged),
    field(Ty::NodeStatus, "addresses", "merge", "type", Ty::Untagged),
    // NamespaceStatus.
    field(
        Ty::NamespaceStatus,
        "conditions",
        "merge",
        "type",
        Ty::Untagged,
    ),
    // ServiceSpec, ServiceStatus (metav1.Condition since 1.20).
    field(Ty::ServiceSpec, "ports", "merge", "port", Ty::Untagged),
    field(
        Ty::ServiceStatus,
        "conditions",
        "merge",
        "type",
        Ty::Untagged,
    ),
];

/// The struct type of each served kind.
fn kind_schema(kind: &str) -> Option<Ty> {
    Some(match kind {
        "Pod" => Ty::Pod,
        "Node" => Ty::Node,
        "Namespace" => Ty::Namespace,
        "Service" => Ty::Service,
        "ServiceAccount" => Ty::ServiceAccount,
        "ConfigMap" | "Secret" | "Event" | "Lease" | "EndpointSlice" => Ty::MetaOnly,
        _ => return None,
    })
}

/// How a field patches, from its tags.
#[derive(Debug, Clone, Copy)]
struct Meta {
    merge: bool,
    replace: bool,
    merge_key: &'static str,
    ty: Ty,
}

fn lookup(owner: Ty, name: &str) -> Meta {
    match FIELDS.iter().find(|f| f.owner == owner && f.json == name) {
        // `retainKeys` in a tag only steers how clients build patches: the
        // server honours `$retainKeys` wherever a patch has it.
        Some(f) => Meta {
            merge: f.strategy.split(',').any(|s| s == "merge"),
            replace: f.strategy.split(',').any(|s| s == "replace"),
            merge_key: f.merge_key,
            ty: f.ty,
        },
        None => Meta {
            merge: false,
            replace: false,
            merge_key: "",
            ty: Ty::Untagged,
        },
    }
}

// ---------------------------------------------------------------------------
// The merge.

/// Rejects a patch nested deeper than [`MAX_DEPTH`], without recursing: every
/// later recursion follows the patch's structure, so this bounds them all.
fn check_depth(patch: &Object) -> Result<(), PatchError> {
    let mut stack: Vec<(&Value, usize)> = patch.values().map(|v| (v, 2)).collect();
    while let Some((value, depth)) = stack.pop() {
        let nested = matches!(value, Value::Object(_) | Value::Array(_));
        if nested && depth > MAX_DEPTH {
            return Err(PatchError::TooDeep);
        }
        match value {
            Value::Object(m) => stack.extend(m.values().map(|c| (c, depth + 1))),
            Value::Array(a) => stack.extend(a.iter().map(|c| (c, depth + 1))),
            _ => {}
        }
    }
    Ok(())
}

/// Merges a patch map into an object map of struct type `ty`.
fn merge_map(
    mut original: Object,
    patch: &Object,
    ty: Ty,
    depth: usize,
) -> Result<Object, PatchError> {
    if depth > MAX_DEPTH {
        return Err(PatchError::TooDeep);
    }
    if let Some(directive) = patch.get(PATCH) {
        return match directive.as_str() {
            Some("replace") => Ok(strip_fields(patch)),
            // Upstream empties the map rather than removing its key.
            Some("delete") => Ok(Object::new()),
            _ => Err(unknown_directive(directive, patch)),
        };
    }
    if let Some(keys) = patch.get(RETAIN_KEYS) {
        retain_keys(&mut original, patch, keys)?;
    }

    // Lists with an order directive are merged and ordered first, then left
    // alone by the loop below (upstream deletes them from the patch).
    let mut ordered: Vec<&str> = Vec::new();
    for (key, order) in patch {
        if !key.starts_with(SET_ELEMENT_ORDER) {
            continue;
        }
        let Value::Array(order) = order else {
            return Err(wrong_type(GO_LIST, order));
        };
        let name =
            directive_target(key, SET_ELEMENT_ORDER).ok_or(PatchError::SetElementOrderFormat)?;
        apply_element_order(&mut original, patch, name, order, ty, depth)?;
        ordered.push(name);
    }

    // Deletion lists go last, so that a value both added and deleted by one
    // patch is gone (upstream visits keys in Go's random map order).
    let (deletions, others): (Vec<_>, Vec<_>) = patch
        .iter()
        .partition(|(key, _)| key.starts_with(DELETE_FROM_PRIMITIVE_LIST));
    for (key, value) in others.into_iter().chain(deletions) {
        if key == RETAIN_KEYS || key.starts_with(SET_ELEMENT_ORDER) {
            continue;
        }
        let (name, delete_list) = if key.starts_with(DELETE_FROM_PRIMITIVE_LIST) {
            let name = directive_target(key, DELETE_FROM_PRIMITIVE_LIST)
                .ok_or(PatchError::PrimitiveListFormat)?;
            (name, true)
        } else {
            (key.as_str(), false)
        };
        // No API field starts with `$`: upstream copies such keys in and the
        // typed decode drops them again.
        if !delete_list && (name.starts_with('$') || ordered.contains(&name)) {
            continue;
        }
        if value.is_null() {
            original.remove(name);
            continue;
        }
        // A stored null is an absent field: a typed object has no nulls.
        let current = original.remove(name).filter(|v| !v.is_null());
        let merged = match (current, value) {
            // A deletion list for a missing list has nothing to delete.
            (None, _) if delete_list => None,
            (None, _) => clean(value),
            (Some(Value::Object(current)), Value::Object(value)) => {
                let meta = lookup(ty, name);
                if meta.replace {
                    Some(Value::Object(strip_fields(value)))
                } else {
                    Some(Value::Object(merge_map(
                        current,
                        value,
                        meta.ty,
                        depth + 1,
                    )?))
                }
            }
            (Some(Value::Array(current)), Value::Array(value)) => {
                let meta = lookup(ty, name);
                let merged = merge_list(current, value, meta, name, delete_list, depth + 1)?;
                Some(Value::Array(merged.list))
            }
            (Some(current), _) if class(&current) == class(value) => clean(value),
            // Different types: the patch's value wins, except from a deletion
            // list, which upstream then ignores.
            (Some(current), _) if delete_list => Some(current),
            (Some(_), _) => clean(value),
        };
        if let Some(merged) = merged {
            original.insert(name.to_owned(), merged);
        }
    }
    Ok(original)
}

/// `$retainKeys`: the patch may only set listed keys, and the object keeps
/// only listed keys (how `kubectl apply` switches a volume's source).
fn retain_keys(original: &mut Object, patch: &Object, keys: &Value) -> Result<(), PatchError> {
    let Value::Array(keys) = keys else {
        return Err(PatchError::RetainKeysFormat);
    };
    let listed = |k: &str| keys.iter().any(|v| v.as_str() == Some(k));
    for (key, value) in patch {
        let directive = key == RETAIN_KEYS
            || key.starts_with(DELETE_FROM_PRIMITIVE_LIST)
            || key.starts_with(SET_ELEMENT_ORDER);
        if !directive && !value.is_null() && !listed(key) {
            return Err(PatchError::RetainKeysFormat);
        }
    }
    original.retain(|k, _| listed(k));
    Ok(())
}

/// `$setElementOrder/<name>`: merges the list `name` as usual, then puts the
/// elements the directive names in its order, each other element staying
/// where it was relative to those (upstream `mergePatchIntoOriginal`).
fn apply_element_order(
    original: &mut Object,
    patch: &Object,
    name: &str,
    order: &[Value],
    ty: Ty,
    depth: usize,
) -> Result<(), PatchError> {
    let current = match original.remove(name) {
        None | Some(Value::Null) => None,
        Some(Value::Array(list)) => Some(list),
        Some(other) => return Err(wrong_type(GO_LIST, &other)),
    };
    let patched = match patch.get(name) {
        None => None,
        Some(Value::Array(list)) => Some(list.as_slice()),
        Some(other) => return Err(wrong_type(GO_LIST, other)),
    };
    let meta = lookup(ty, name);
    let key = meta.merge_key;
    check_order(patched.unwrap_or_default(), order, key)?;
    let present = current.is_some();
    if !present && patched.is_none() {
        // Nothing to order: the directive is dropped.
        return Ok(());
    }
    let current = current.unwrap_or_default();
    let element = element_class(&current, patched.unwrap_or_default())?;
    if key.is_empty() && element == Class::Map {
        // Upstream fails here too (it cannot tell maps apart without a key).
        let first = current
            .iter()
            .chain(patched.unwrap_or_default())
            .find_map(Value::as_object);
        return Err(missing_key(first.unwrap_or(&Object::new()), key));
    }
    let server = identities(&current, key)?;
    let merged = match patched {
        None => Merged {
            ids: server.clone(),
            list: current,
            server_view: None,
        },
        Some(list) if present => merge_list(current, list, meta, name, false, depth + 1)?,
        Some(list) => {
            // Upstream drops the directive elements and compares the rest raw.
            let kept: Vec<Value> = list
                .iter()
                .filter(|v| v.get(PATCH).is_none())
                .cloned()
                .collect();
            Merged {
                ids: identities(&kept, key)?,
                list: clean_items(list),
                server_view: None,
            }
        }
    };
    let server = merged.server_view.unwrap_or(server);
    let wanted = identities(order, key)?;
    let (list, _) = enforce_order(merged.list, merged.ids, &wanted, &server);
    original.insert(name.to_owned(), Value::Array(list));
    Ok(())
}

/// Upstream `validatePatchWithSetOrderList`: the patch's elements (deletions
/// and other directives aside) must appear in `$setElementOrder` in the same
/// relative order.
fn check_order(patch: &[Value], order: &[Value], key: &str) -> Result<(), PatchError> {
    if patch.is_empty() || order.is_empty() {
        return Ok(());
    }
    let mut items = Vec::with_capacity(patch.len());
    for item in patch {
        if !key.is_empty() {
            let Value::Object(m) = item else {
                return Err(wrong_type(GO_MAP, item));
            };
            if m.get(PATCH).and_then(Value::as_str) == Some("delete") {
                continue;
            }
        }
        items.push(item);
    }
    let (mut i, mut j) = (0, 0);
    while i < items.len() && j < order.len() {
        if items[i].get(PATCH).is_some() {
            i += 1;
            continue;
        }
        if key_equal(items[i], &order[j], key)? {
            i += 1;
        }
        j += 1;
    }
    if i < items.len() && j >= order.len() {
        return Err(PatchError::OrderMismatch {
            patch: go_fmt_list(patch),
            order: go_fmt_list(order),
        });
    }
    Ok(())
}

fn key_equal(a: &Value, b: &Value, key: &str) -> Result<bool, PatchError> {
    if key.is_empty() {
        return Ok(same(a, b));
    }
    let merge_value = |v: &'_ Value| -> Result<Value, PatchError> {
        let Value::Object(m) = v else {
            return Err(wrong_type(GO_MAP, v));
        };
        m.get(key).cloned().ok_or_else(|| missing_key(m, key))
    };
    Ok(same(&merge_value(a)?, &merge_value(b)?))
}

/// A merged list, and what upstream's ordering compares its elements by.
struct Merged {
    list: Vec<Value>,
    /// Each element's merge key value (or the element itself), taken before
    /// the element was cleaned, as upstream compares the raw patch values.
    ids: Vec<Value>,
    /// The object's order as `$setElementOrder` sees it afterwards, when that
    /// differs from the list given (see [`merge_list`]).
    server_view: Option<Vec<Value>>,
}

/// Merges a patch list into an object list (upstream `mergeSliceHandler` and
/// `mergeSlice`): replaced whole unless the field merges or the patch is a
/// `$deleteFromPrimitiveList`.
///
/// Upstream deletes elements in place and then appends new ones to the same
/// Go slice, so the new elements land in the slots the deleted ones freed,
/// and `$setElementOrder`, reading the object's list afterwards, sees them
/// there: after the surviving elements, where the object's list was. That
/// view, whatever the slice's capacity, is `server_view`; it decides where
/// an element kept from the object goes relative to a new one.
fn merge_list(
    original: Vec<Value>,
    patch: &[Value],
    meta: Meta,
    name: &str,
    delete_list: bool,
    depth: usize,
) -> Result<Merged, PatchError> {
    let key = meta.merge_key;
    if !(meta.merge || delete_list) {
        return Ok(Merged {
            ids: identities(patch, key)?,
            list: patch.iter().map(strip).collect(),
            server_view: None,
        });
    }
    if original.is_empty() && patch.is_empty() {
        return Ok(Merged {
            list: original,
            ids: Vec::new(),
            server_view: None,
        });
    }
    if element_class(&original, patch)? != Class::Map {
        if delete_list {
            // Deleting keeps the remaining order; upstream does not reorder.
            let list: Vec<Value> = original
                .into_iter()
                .filter(|v| !patch.iter().any(|p| same(p, v)))
                .collect();
            return Ok(Merged {
                ids: identities(&list, key)?,
                list,
                server_view: None,
            });
        }
        // A set union; duplicates already in the object go too.
        let mut merged: Vec<Value> = Vec::with_capacity(original.len() + patch.len());
        for v in original.iter().chain(patch) {
            if !merged.iter().any(|m| same(m, v)) {
                merged.push(v.clone());
            }
        }
        let ids = identities(&merged, key)?;
        let wanted = identities(patch, key)?;
        let server = identities(&original, key)?;
        let (list, ids) = enforce_order(merged, ids, &wanted, &server);
        return Ok(Merged {
            list: list.iter().map(strip).collect(),
            ids,
            server_view: None,
        });
    }
    if key.is_empty() {
        return Err(PatchError::NoDeclaredMergeKey(name.to_owned()));
    }

    // Elements with `$patch` first: deletions, and `replace`, which makes the
    // other elements the whole list.
    let original_len = original.len();
    let mut original = original;
    let mut plain: Vec<&Object> = Vec::with_capacity(patch.len());
    let mut replace = false;
    let mut deleted = false;
    for item in patch {
        let Value::Object(m) = item else {
            return Err(wrong_type(GO_MAP, item));
        };
        let Some(directive) = m.get(PATCH) else {
            plain.push(m);
            continue;
        };
        match directive.as_str() {
            Some("delete") => {
                let gone = m.get(key).ok_or_else(|| missing_key(m, key))?;
                let before = original.len();
                original.retain(|o| !o.get(key).is_some_and(|v| same(v, gone)));
                deleted |= original.len() < before;
            }
            Some("replace") => replace = true,
            Some("merge") => return Err(PatchError::MergeDirectiveInList),
            _ => return Err(unknown_directive(directive, m)),
        }
    }
    let mut view = if deleted {
        Some(identities(&original, key)?)
    } else {
        None
    };
    let mut ids;
    if replace {
        ids = Vec::with_capacity(plain.len());
        for item in &plain {
            ids.push(
                item.get(key)
                    .cloned()
                    .ok_or_else(|| missing_key(item, key))?,
            );
        }
        original = plain
            .iter()
            .map(|m| Value::Object(strip_fields(m)))
            .collect();
        plain.clear();
    } else {
        ids = identities(&original, key)?;
    }

    let server = ids.clone();
    let mut wanted = Vec::with_capacity(plain.len());
    for item in plain {
        let id = item.get(key).ok_or_else(|| missing_key(item, key))?;
        wanted.push(id.clone());
        let found = ids.iter().position(|v| same(v, id));
        match found {
            Some(at) => {
                if let Some(Value::Object(element)) = original.get_mut(at) {
                    let taken = std::mem::take(element);
                    *element = merge_map(taken, item, meta.ty, depth + 1)?;
                }
            }
            None => {
                original.push(Value::Object(strip_fields(item)));
                ids.push(id.clone());
                if let Some(view) = view.as_mut().filter(|v| v.len() < original_len) {
                    view.push(id.clone());
                }
            }
        }
    }
    let (list, ids) = enforce_order(original, ids, &wanted, &server);
    Ok(Merged {
        list,
        ids,
        server_view: view,
    })
}

/// Upstream's ordering of a merged list (`normalizeElementOrder`): the
/// elements named in `wanted` (the patch list, or `$setElementOrder`) come in
/// that order; the others keep the object's order; the two are interleaved by
/// the object's order (`server`) where both elements were in the object, the
/// wanted element first otherwise (which is why a new element lands before
/// the object's remaining ones). `ids` are the elements' identities.
fn enforce_order(
    list: Vec<Value>,
    ids: Vec<Value>,
    wanted: &[Value],
    server: &[Value],
) -> (Vec<Value>, Vec<Value>) {
    let position = |list: &[Value], id: &Value| list.iter().position(|x| same(x, id));
    let mut chosen = Vec::new();
    let mut others = Vec::new();
    for (element, id) in list.into_iter().zip(ids) {
        let in_server = position(server, &id);
        match position(wanted, &id) {
            Some(at) => chosen.push((at, in_server, element, id)),
            None => others.push((in_server, element, id)),
        }
    }
    chosen.sort_by_key(|(at, ..)| *at);
    if others.iter().all(|(in_server, ..)| in_server.is_some()) {
        others.sort_by_key(|(in_server, ..)| *in_server);
    } else {
        // Only after an empty `$setElementOrder` can an element the object
        // lacks be here. Upstream's sort.SliceStable then runs with a "less"
        // that holds whenever either element is missing from the object;
        // the insertion sort Go uses for short lists leaves those elements
        // after the object's, in reverse order. Done the same way for the
        // same result.
        for i in 1..others.len() {
            let mut j = i;
            while j > 0 {
                let less = match (others[j].0, others[j - 1].0) {
                    (Some(a), Some(b)) => a < b,
                    _ => true,
                };
                if !less {
                    break;
                }
                others.swap(j, j - 1);
                j -= 1;
            }
        }
    }

    let total = chosen.len() + others.len();
    let (mut list, mut ids) = (Vec::with_capacity(total), Vec::with_capacity(total));
    let mut others = others.into_iter().peekable();
    let mut chosen = chosen.into_iter().peekable();
    loop {
        let other_first = match (others.peek(), chosen.peek()) {
            (Some((Some(o), ..)), Some((_, Some(c), ..))) => o < c,
            (_, Some(_)) => false,
            (Some(_), None) => true,
            (None, None) => break,
        };
        let next = if other_first {
            others.next().map(|(_, e, id)| (e, id))
        } else {
            chosen.next().map(|(_, _, e, id)| (e, id))
        };
        if let Some((element, id)) = next {
            list.push(element);
            ids.push(id);
        }
    }
    (list, ids)
}

/// What identifies each element: its merge key's value, or itself.
fn identities(list: &[Value], key: &str) -> Result<Vec<Value>, PatchError> {
    if key.is_empty() {
        return Ok(list.to_vec());
    }
    list.iter()
        .map(|item| match item {
            Value::Object(m) => m.get(key).cloned().ok_or_else(|| missing_key(m, key)),
            other => Err(wrong_type(GO_MAP, other)),
        })
        .collect()
}

/// JSON types, as Go's decoded values tell them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Null,
    Bool,
    Number,
    String,
    List,
    Map,
}

fn class(v: &Value) -> Class {
    match v {
        Value::Null => Class::Null,
        Value::Bool(_) => Class::Bool,
        Value::Number(_) => Class::Number,
        Value::String(_) => Class::String,
        Value::Array(_) => Class::List,
        Value::Object(_) => Class::Map,
    }
}

/// The one element type of two lists (upstream `sliceElementType`).
fn element_class(a: &[Value], b: &[Value]) -> Result<Class, PatchError> {
    let mut found = None;
    for v in a.iter().chain(b) {
        let c = class(v);
        match found {
            None if c == Class::List => return Err(PatchError::ListOfLists),
            // Upstream crashes on a null first element; refuse it instead.
            None if c != Class::Null => found = Some(c),
            Some(f) if f == c => {}
            _ => {
                let both = [Value::Array(a.to_vec()), Value::Array(b.to_vec())];
                return Err(PatchError::MixedElementTypes(go_fmt_list(&both)));
            }
        }
    }
    found.ok_or(PatchError::NoElements)
}

/// Equality as Go's `==` on decoded JSON, where 1 and 1.0 are both int64.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => same_number(x, y),
        _ => a == b,
    }
}

fn same_number(x: &Number, y: &Number) -> bool {
    if let (Some(a), Some(b)) = (x.as_i64(), y.as_i64()) {
        return a == b;
    }
    if let (Some(a), Some(b)) = (x.as_u64(), y.as_u64()) {
        return a == b;
    }
    matches!((x.as_f64(), y.as_f64()), (Some(a), Some(b)) if a == b)
}

/// `$setElementOrder/<name>` → `name`; `None` when the prefix is not exact.
fn directive_target<'a>(key: &'a str, prefix: &str) -> Option<&'a str> {
    let (head, name) = key.split_once('/')?;
    (head == prefix).then_some(name)
}

// ---------------------------------------------------------------------------
// Patch values put in place whole.

/// A patch value where the object has nothing to merge it into: nulls go
/// (`None` here), as do maps carrying a `$patch` other than `replace`, and
/// `$`-keys inside (what upstream's `discardNullValuesFromPatch`,
/// `removeDirectives` and the typed decode do between them). Whole numbers
/// written as floats become integers, as the API server's JSON decoder makes
/// them: Go clients cannot read `80.0` into an int32 field.
fn clean(v: &Value) -> Option<Value> {
    match v {
        Value::Null => None,
        Value::Number(n) if n.is_f64() => Some(go_int(n).map_or_else(|| v.clone(), Value::from)),
        Value::Object(m) => match m.get(PATCH) {
            Some(d) if d.as_str() != Some("replace") => None,
            _ => Some(Value::Object(clean_fields(m))),
        },
        Value::Array(a) => Some(Value::Array(clean_items(a))),
        other => Some(other.clone()),
    }
}

fn clean_fields(m: &Object) -> Object {
    m.iter()
        .filter(|(k, _)| !k.starts_with('$'))
        .filter_map(|(k, v)| clean(v).map(|v| (k.clone(), v)))
        .collect()
}

/// List elements: any map with `$patch` is a directive, not an element.
fn clean_items(list: &[Value]) -> Vec<Value> {
    list.iter()
        .filter_map(|v| match v {
            Value::Object(m) if m.contains_key(PATCH) => None,
            Value::Object(m) => Some(Value::Object(clean_fields(m))),
            Value::Array(inner) => Some(Value::Array(clean_items(inner))),
            other => Some(other.clone()),
        })
        .collect()
}

/// What the API server's typed decode leaves of a patch value that upstream
/// puts in place as it is (a `$patch: replace` map or list, a new element of
/// a merging list, a list that is replaced): no `$`-keys and no nulls, every
/// element kept.
fn strip(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(strip_fields(m)),
        Value::Array(a) => Value::Array(a.iter().map(strip).collect()),
        Value::Number(n) if n.is_f64() => go_int(n).map_or_else(|| v.clone(), Value::from),
        other => other.clone(),
    }
}

fn strip_fields(m: &Object) -> Object {
    m.iter()
        .filter(|(k, v)| !k.starts_with('$') && !v.is_null())
        .map(|(k, v)| (k.clone(), strip(v)))
        .collect()
}

// ---------------------------------------------------------------------------
// Errors worded, and values printed, as Go prints them.

fn wrong_type(expected: &'static str, actual: &Value) -> PatchError {
    PatchError::WrongType {
        expected,
        actual: go_type(actual),
    }
}

fn missing_key(m: &Object, key: &str) -> PatchError {
    PatchError::MissingMergeKey {
        map: go_fmt_map(m),
        key: key.to_owned(),
    }
}

fn unknown_directive(directive: &Value, m: &Object) -> PatchError {
    // `%s` of a non-string prints Go's complaint about the verb.
    let directive = match directive {
        Value::String(s) => s.clone(),
        Value::Null => "%!s(<nil>)".to_owned(),
        Value::Bool(_) | Value::Number(_) => {
            format!("%!s({}={})", go_type(directive), go_fmt(directive))
        }
        other => go_fmt(other),
    };
    PatchError::UnknownDirective {
        directive,
        map: go_fmt_map(m),
    }
}

/// The JSON type word of Go's json.Unmarshal errors.
fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Go's `reflect.TypeOf` of a decoded value, printed with `%s`. The API
/// server's decoder turns whole numbers into int64.
fn go_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "%!s(<nil>)",
        Value::Bool(_) => "bool",
        Value::Number(n) if go_int(n).is_some() => "int64",
        Value::Number(_) => "float64",
        Value::String(_) => "string",
        Value::Array(_) => GO_LIST,
        Value::Object(_) => GO_MAP,
    }
}

fn go_int(n: &Number) -> Option<i64> {
    n.as_i64().or_else(|| {
        let f = n.as_f64()?;
        // Within i64 and whole: the decoder's int64 conversion succeeds.
        (f.fract() == 0.0 && f.abs() < 9.2e18).then_some(f as i64)
    })
}

fn go_fmt(v: &Value) -> String {
    let mut out = String::new();
    write_go(v, &mut out, 0);
    bound(out)
}

fn go_fmt_map(m: &Object) -> String {
    let mut out = String::new();
    write_go_map(m, &mut out, 0);
    bound(out)
}

fn go_fmt_list(list: &[Value]) -> String {
    let mut out = String::new();
    write_go_list(list, &mut out, 0);
    bound(out)
}

fn bound(mut out: String) -> String {
    if out.len() > MESSAGE_BUDGET {
        let mut cut = MESSAGE_BUDGET;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push_str("...");
    }
    out
}

/// Go's `%v`: `map[k:v k2:v2]` with sorted keys, `[a b]`, strings bare,
/// `<nil>` for null. Stops writing past the message budget, and below a
/// depth no message needs.
fn write_go(v: &Value, out: &mut String, depth: usize) {
    if out.len() > MESSAGE_BUDGET {
        return;
    }
    match v {
        Value::Null => out.push_str("<nil>"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&go_number(n)),
        Value::String(s) => out.push_str(s),
        Value::Array(a) => write_go_list(a, out, depth + 1),
        Value::Object(m) => write_go_map(m, out, depth + 1),
    }
}

fn write_go_list(list: &[Value], out: &mut String, depth: usize) {
    if depth > 32 {
        out.push_str("[...]");
        return;
    }
    out.push('[');
    for (i, item) in list.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        write_go(item, out, depth);
    }
    out.push(']');
}

fn write_go_map(m: &Object, out: &mut String, depth: usize) {
    if depth > 32 {
        out.push_str("map[...]");
        return;
    }
    let mut keys: Vec<&String> = m.keys().collect();
    keys.sort();
    out.push_str("map[");
    for (i, k) in keys.into_iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(k);
        out.push(':');
        if let Some(v) = m.get(k) {
            write_go(v, out, depth);
        }
    }
    out.push(']');
}

/// Go's `%v` of a number: int64 when whole, else float64 in `%g` with the
/// shortest digits (exponent form below 1e-4 and from 1e6 up).
fn go_number(n: &Number) -> String {
    if let Some(i) = go_int(n) {
        return i.to_string();
    }
    let Some(f) = n.as_f64() else {
        return n.to_string();
    };
    let scientific = format!("{f:e}");
    let Some((mantissa, exponent)) = scientific.split_once('e') else {
        return scientific;
    };
    let Ok(exponent) = exponent.parse::<i32>() else {
        return scientific;
    };
    let sign = if mantissa.starts_with('-') { "-" } else { "" };
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    if digits.is_empty() {
        return scientific;
    }
    if !(-4..6).contains(&exponent) {
        let (first, rest) = digits.split_at(1);
        let point = if rest.is_empty() { "" } else { "." };
        let exponent_sign = if exponent < 0 { '-' } else { '+' };
        return format!(
            "{sign}{first}{point}{rest}e{exponent_sign}{:02}",
            exponent.unsigned_abs()
        );
    }
    let before = exponent + 1;
    if before <= 0 {
        let zeros = "0".repeat(before.unsigned_abs() as usize);
        format!("{sign}0.{zeros}{digits}")
    } else if before as usize >= digits.len() {
        let zeros = "0".repeat(before as usize - digits.len());
        format!("{sign}{digits}{zeros}")
    } else {
        let (whole, fraction) = digits.split_at(before as usize);
        format!("{sign}{whole}.{fraction}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn apply(target: Value, patch: Value, kind: &str) -> Value {
        match strategic_merge(&target, &patch, kind) {
            Ok(v) => v,
            Err(e) => panic!("patch {patch} failed: {e}"),
        }
    }

    fn fail(target: Value, patch: Value, kind: &str) -> PatchError {
        match strategic_merge(&target, &patch, kind) {
            Ok(v) => panic!("patch {patch} applied: {v}"),
            Err(e) => e,
        }
    }

    fn names(list: &Value, key: &str) -> Vec<String> {
        list.as_array()
            .map(|a| {
                a.iter()
                    .map(|e| e[key].to_string().trim_matches('"').to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn pod(spec: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "p", "namespace": "default"}, "spec": spec})
    }

    // ---- maps, nulls, plain lists ----

    #[test]
    fn label_patch_null_deletes() {
        let target = json!({"metadata": {"name": "p", "labels": {"app": "web", "tier": "db"}}});
        let patched = apply(
            target,
            json!({"metadata": {"labels": {"tier": null, "env": "dev", "app": "api"}}}),
            "Pod",
        );
        assert_eq!(
            patched["metadata"]["labels"],
            json!({"app": "api", "env": "dev"})
        );
        assert_eq!(patched["metadata"]["name"], "p");

        // kubernetes#105689: a null for a label the object lacks creates nothing.
        let patched = apply(
            json!({"metadata": {"name": "p"}}),
            json!({"metadata": {"labels": {"gone": null}, "annotations": {"a": "1", "b": null}}}),
            "Pod",
        );
        assert_eq!(patched["metadata"]["labels"], json!({}));
        assert_eq!(patched["metadata"]["annotations"], json!({"a": "1"}));

        // Null at the top of a field removes the whole field.
        let patched = apply(
            json!({"metadata": {"name": "p", "labels": {"a": "b"}}}),
            json!({"metadata": {"labels": null}}),
            "Pod",
        );
        assert_eq!(patched["metadata"], json!({"name": "p"}));
    }

    #[test]
    fn untagged_maps_merge_and_untagged_lists_replace() {
        let target = pod(json!({
            "nodeSelector": {"zone": "a"},
            "tolerations": [{"key": "a", "operator": "Exists"}, {"key": "b", "operator": "Exists"}],
            "containers": [{"name": "c", "image": "i", "args": ["x", "y"]}]
        }));
        let patched = apply(
            target,
            json!({"spec": {"nodeSelector": {"disk": "ssd"},
                            "tolerations": [{"key": "c", "operator": "Exists"}],
                            "containers": [{"name": "c", "args": ["z"]}]}}),
            "Pod",
        );
        assert_eq!(
            patched["spec"]["nodeSelector"],
            json!({"zone": "a", "disk": "ssd"})
        );
        assert_eq!(
            patched["spec"]["tolerations"],
            json!([{"key": "c", "operator": "Exists"}])
        );
        assert_eq!(patched["spec"]["containers"][0]["args"], json!(["z"]));
    }

    #[test]
    fn null_patch_changes_nothing() {
        let target = json!({"metadata": {"name": "p"}});
        assert_eq!(apply(target.clone(), Value::Null, "Pod"), target);
        assert_eq!(apply(target.clone(), json!({}), "Pod"), target);
    }

    // ---- merge key families ----

    #[test]
    fn containers_merge_by_name() {
        let target = pod(json!({"containers": [
            {"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1", "tty": true}]}));
        let patched = apply(
            target,
            json!({"spec": {"containers": [{"name": "b", "image": "b:2"}, {"name": "c", "image": "c:1"}]}}),
            "Pod",
        );
        assert_eq!(
            patched["spec"]["containers"],
            json!([{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:2", "tty": true},
                   {"name": "c", "image": "c:1"}])
        );

        // A new element alone goes in front of the elements the patch does
        // not name, as upstream orders it.
        let target = pod(json!({"containers": [{"name": "a"}, {"name": "b"}]}));
        let patched = apply(
            target,
            json!({"spec": {"containers": [{"name": "new"}]}}),
            "Pod",
        );
        assert_eq!(
            names(&patched["spec"]["containers"], "name"),
            ["new", "a", "b"]
        );
    }

    #[test]
    fn init_and_ephemeral_containers_merge_by_name() {
        let target = pod(json!({
            "initContainers": [{"name": "i1", "image": "x"}, {"name": "i2", "image": "y"}],
            "ephemeralContainers": [{"name": "debug", "image": "busybox",
                                     "env": [{"name": "A", "value": "1"}]}]
        }));
        let patched = apply(
            target,
            json!({"spec": {
                "initContainers": [{"name": "i2", "image": "z"}],
                "ephemeralContainers": [{"name": "debug", "env": [{"name": "B", "value": "2"}]}]
            }}),
            "Pod",
        );
        assert_eq!(
            patched["spec"]["initContainers"],
            json!([{"name": "i1", "image": "x"}, {"name": "i2", "image": "z"}])
        );
        assert_eq!(
            patched["spec"]["ephemeralContainers"][0]["env"],
            json!([{"name": "B", "value": "2"}, {"name": "A", "value": "1"}])
        );
        assert_eq!(
            patched["spec"]["ephemeralContainers"][0]["image"],
            "busybox"
        );
    }

    #[test]
    fn env_merges_by_name_in_patch_order() {
        let target = pod(json!({"containers": [{"name": "c", "env": [
            {"name": "A", "value": "1"}, {"name": "B", "value": "2"}, {"name": "C", "value": "3"}]}]}));
        let patched = apply(
            target,
            json!({"spec": {"containers": [{"name": "c", "env": [
                {"name": "C", "value": "30"}, {"name": "A", "value": "10"}]}]}}),
            "Pod",
        );
        // Patched elements take the patch's order; B keeps its place before C.
        assert_eq!(
            patched["spec"]["containers"][0]["env"],
            json!([{"name": "B", "value": "2"}, {"name": "C", "value": "30"}, {"name": "A", "value": "10"}])
        );
    }

    #[test]
    fn ports_merge_by_container_port() {
        let target = pod(json!({"containers": [{"name": "c", "ports": [
            {"containerPort": 80, "name": "http"}, {"containerPort": 443, "name": "https"}]}]}));
        let patched = apply(
            target,
            // 80.0 is the same key as 80, as after Go's decoding.
            json!({"spec": {"containers": [{"name": "c", "ports": [
                {"containerPort": 80.0, "protocol": "TCP"}, {"containerPort": 8080}]}]}}),
            "Pod",
        );
        let ports = &patched["spec"]["containers"][0]["ports"];
        assert_eq!(ports.as_array().map(Vec::len), Some(3));
        assert_eq!(
            ports[0],
            json!({"containerPort": 80, "name": "http", "protocol": "TCP"})
        );
        assert_eq!(ports[1], json!({"containerPort": 8080}));
        assert_eq!(ports[2], json!({"containerPort": 443, "name": "https"}));
    }

    #[test]
    fn volume_mounts_and_devices_merge_by_path() {
        let target = pod(json!({"containers": [{"name": "c",
            "volumeMounts": [{"name": "data", "mountPath": "/data"}, {"name": "cfg", "mountPath": "/etc/cfg"}],
            "volumeDevices": [{"name": "raw", "devicePath": "/dev/xvda"}]}]}));
        let patched = apply(
            target,
            json!({"spec": {"containers": [{"name": "c",
                "volumeMounts": [{"mountPath": "/etc/cfg", "readOnly": true},
                                 {"mountPath": "/data", "$patch": "delete"}],
                "volumeDevices": [{"devicePath": "/dev/xvda", "name": "raw2"}]}]}}),
            "Pod",
        );
        let c = &patched["spec"]["containers"][0];
        assert_eq!(
            c["volumeMounts"],
            json!([{"name": "cfg", "mountPath": "/etc/cfg", "readOnly": true}])
        );
        assert_eq!(
            c["volumeDevices"],
            json!([{"name": "raw2", "devicePath": "/dev/xvda"}])
        );
    }

    #[test]
    fn volumes_merge_by_name_with_retain_keys() {
        let target = pod(json!({"volumes": [
            {"name": "data", "emptyDir": {}}, {"name": "cfg", "configMap": {"name": "c"}}]}));
        let patched = apply(
            target,
            json!({"spec": {"volumes": [{"name": "data", "hostPath": {"path": "/srv"},
                                         "$retainKeys": ["hostPath", "name"]}]}}),
            "Pod",
        );
        assert_eq!(
            patched["spec"]["volumes"],
            json!([{"name": "data", "hostPath": {"path": "/srv"}},
                   {"name": "cfg", "configMap": {"name": "c"}}])
        );
    }

    #[test]
    fn pod_spec_lists_by_their_keys() {
        let target = pod(json!({
            "imagePullSecrets": [{"name": "reg1"}],
            "hostAliases": [{"ip": "10.0.0.1", "hostnames": ["a"]}],
            "topologySpreadConstraints": [{"topologyKey": "zone", "maxSkew": 1}],
            "schedulingGates": [{"name": "g1"}, {"name": "g2"}]
        }));
        let patched = apply(
            target,
            json!({"spec": {
                "imagePullSecrets": [{"name": "reg1"}, {"name": "reg2"}],
                "hostAliases": [{"ip": "10.0.0.1", "hostnames": ["b"]}],
                "topologySpreadConstraints": [{"topologyKey": "zone", "maxSkew": 2}],
                "schedulingGates": [{"name": "g1", "$patch": "delete"}]
            }}),
            "Pod",
        );
        let spec = &patched["spec"];
        assert_eq!(
            spec["imagePullSecrets"],
            json!([{"name": "reg1"}, {"name": "reg2"}])
        );
        // Untagged inside: the element's hostnames list is replaced.
        assert_eq!(
            spec["hostAliases"],
            json!([{"ip": "10.0.0.1", "hostnames": ["b"]}])
        );
        assert_eq!(
            spec["topologySpreadConstraints"],
            json!([{"topologyKey": "zone", "maxSkew": 2}])
        );
        assert_eq!(spec["schedulingGates"], json!([{"name": "g2"}]));
    }

    #[test]
    fn owner_references_merge_by_uid() {
        let target = json!({"metadata": {"name": "p", "ownerReferences": [
            {"uid": "u1", "kind": "ReplicaSet", "name": "rs1", "controller": true}]}});
        let patched = apply(
            target,
            json!({"metadata": {"ownerReferences": [
                {"uid": "u1", "blockOwnerDeletion": true},
                {"uid": "u2", "kind": "Node", "name": "n1"}]}}),
            "Pod",
        );
        let refs = &patched["metadata"]["ownerReferences"];
        assert_eq!(names(refs, "uid"), ["u1", "u2"]);
        assert_eq!(refs[0]["blockOwnerDeletion"], true);
        assert_eq!(refs[0]["controller"], true);
    }

    #[test]
    fn finalizers_merge_as_a_set_and_delete_from_primitive_list() {
        let target = json!({"metadata": {"name": "p", "finalizers": ["a", "b", "c"]}});
        let patched = apply(
            target.clone(),
            json!({"metadata": {"finalizers": ["c", "d"],
                                "$deleteFromPrimitiveList/finalizers": ["b"]}}),
            "Pod",
        );
        assert_eq!(patched["metadata"]["finalizers"], json!(["a", "c", "d"]));

        // A new value alone goes first, as upstream orders it.
        let patched = apply(
            target.clone(),
            json!({"metadata": {"finalizers": ["z"]}}),
            "Pod",
        );
        assert_eq!(
            patched["metadata"]["finalizers"],
            json!(["z", "a", "b", "c"])
        );

        // Deleting from a missing list adds nothing (kubernetes#107705).
        let patched = apply(
            json!({"metadata": {"name": "p"}}),
            json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["x"]}}),
            "Pod",
        );
        assert_eq!(patched["metadata"], json!({"name": "p"}));

        // Namespace spec.finalizers is untagged: replaced.
        let patched = apply(
            json!({"spec": {"finalizers": ["kubernetes"]}}),
            json!({"spec": {"finalizers": ["other"]}}),
            "Namespace",
        );
        assert_eq!(patched["spec"]["finalizers"], json!(["other"]));
    }

    #[test]
    fn node_pod_cidrs_merge_taints_replace_cordon_sets() {
        let target = json!({"metadata": {"name": "n1"}, "spec": {
            "podCIDR": "10.42.0.0/24", "podCIDRs": ["10.42.0.0/24"],
            "taints": [{"key": "a", "effect": "NoSchedule"}]}});
        let patched = apply(
            target,
            json!({"spec": {"podCIDRs": ["10.42.0.0/24", "fd00::/64"],
                            "taints": [{"key": "b", "effect": "NoExecute"}],
                            "unschedulable": true}}),
            "Node",
        );
        assert_eq!(
            patched["spec"]["podCIDRs"],
            json!(["10.42.0.0/24", "fd00::/64"])
        );
        assert_eq!(
            patched["spec"]["taints"],
            json!([{"key": "b", "effect": "NoExecute"}])
        );
        assert_eq!(patched["spec"]["unschedulable"], true);
    }

    #[test]
    fn pod_status_conditions_by_type_and_pod_ips_by_ip() {
        let target = json!({"metadata": {"name": "p"}, "status": {
            "phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "True"},
                           {"type": "Ready", "status": "False"}],
            "podIPs": [{"ip": "10.42.0.5"}],
            "containerStatuses": [{"name": "c", "ready": false, "restartCount": 0}]}});
        let patched = apply(
            target,
            json!({"metadata": {"uid": "x"}, "status": {
                "$setElementOrder/conditions": [{"type": "PodScheduled"}, {"type": "Initialized"}, {"type": "Ready"}],
                "conditions": [{"type": "Initialized", "status": "True"}, {"type": "Ready", "status": "True"}],
                "podIPs": [{"ip": "fd00::5"}],
                "containerStatuses": [{"name": "c", "ready": true}],
                "phase": "Running"}}),
            "Pod",
        );
        let status = &patched["status"];
        assert_eq!(
            names(&status["conditions"], "type"),
            ["PodScheduled", "Initialized", "Ready"]
        );
        assert_eq!(status["conditions"][2]["status"], "True");
        assert_eq!(names(&status["podIPs"], "ip"), ["fd00::5", "10.42.0.5"]);
        // containerStatuses is untagged: replaced, restartCount gone.
        assert_eq!(
            status["containerStatuses"],
            json!([{"name": "c", "ready": true}])
        );
        assert_eq!(status["phase"], "Running");
    }

    #[test]
    fn kubelet_node_status_patch() {
        let target = json!({
            "metadata": {"name": "n1", "labels": {"kubernetes.io/hostname": "n1"}},
            "status": {
                "conditions": [
                    {"type": "NetworkUnavailable", "status": "False", "reason": "FlannelIsUp"},
                    {"type": "MemoryPressure", "status": "False", "lastHeartbeatTime": "t0"},
                    {"type": "DiskPressure", "status": "False", "lastHeartbeatTime": "t0"},
                    {"type": "PIDPressure", "status": "False", "lastHeartbeatTime": "t0"},
                    {"type": "Ready", "status": "False", "lastHeartbeatTime": "t0", "reason": "KubeletNotReady"}],
                "addresses": [{"type": "InternalIP", "address": "10.0.0.5"},
                              {"type": "Hostname", "address": "n1"}],
                "images": [{"names": ["old"], "sizeBytes": 1}],
                "volumesAttached": [{"name": "v1", "devicePath": "/dev/a"}],
                "nodeInfo": {"kubeletVersion": "v1.21.2", "osImage": "x"}}});
        // What a kubelet's two-way patch looks like: heartbeats of the
        // conditions it owns, in its order; the address that changed.
        let patch = json!({"status": {
            "$setElementOrder/conditions": [{"type": "MemoryPressure"}, {"type": "DiskPressure"},
                                            {"type": "PIDPressure"}, {"type": "Ready"}],
            "conditions": [
                {"type": "MemoryPressure", "lastHeartbeatTime": "t1"},
                {"type": "DiskPressure", "lastHeartbeatTime": "t1"},
                {"type": "PIDPressure", "lastHeartbeatTime": "t1"},
                {"type": "Ready", "status": "True", "lastHeartbeatTime": "t1", "reason": "KubeletReady",
                 "message": "kubelet is posting ready status"}],
            "addresses": [{"type": "InternalIP", "address": "10.0.0.6"}],
            "images": [{"names": ["new"], "sizeBytes": 2}],
            "volumesAttached": null,
            "nodeInfo": {"kubeletVersion": "v1.21.3"}}});
        let patched = apply(target, patch, "Node");
        let status = &patched["status"];
        assert_eq!(
            names(&status["conditions"], "type"),
            [
                "NetworkUnavailable",
                "MemoryPressure",
                "DiskPressure",
                "PIDPressure",
                "Ready"
            ]
        );
        assert_eq!(status["conditions"][0]["reason"], "FlannelIsUp");
        assert_eq!(
            status["conditions"][1],
            json!({"type": "MemoryPressure", "status": "False", "lastHeartbeatTime": "t1"})
        );
        assert_eq!(status["conditions"][4]["status"], "True");
        assert_eq!(status["conditions"][4]["reason"], "KubeletReady");
        assert_eq!(
            status["addresses"],
            json!([{"type": "InternalIP", "address": "10.0.0.6"}, {"type": "Hostname", "address": "n1"}])
        );
        assert_eq!(
            status["images"],
            json!([{"names": ["new"], "sizeBytes": 2}])
        );
        assert!(status.get("volumesAttached").is_none());
        assert_eq!(
            status["nodeInfo"],
            json!({"kubeletVersion": "v1.21.3", "osImage": "x"})
        );
        assert_eq!(
            patched["metadata"]["labels"]["kubernetes.io/hostname"],
            "n1"
        );

        // Changed addresses come as the whole list plus a replace marker
        // (kubelet's fixupPatchForNodeStatusAddresses).
        let patched = apply(
            patched,
            json!({"status": {"addresses": [
                {"type": "InternalIP", "address": "10.0.0.7"},
                {"type": "InternalIP", "address": "fd00::7"},
                {"$patch": "replace"}]}}),
            "Node",
        );
        assert_eq!(
            patched["status"]["addresses"],
            json!([{"type": "InternalIP", "address": "10.0.0.7"}, {"type": "InternalIP", "address": "fd00::7"}])
        );
        assert_eq!(
            patched["status"]["conditions"].as_array().map(Vec::len),
            Some(5)
        );
    }

    #[test]
    fn service_ports_by_port_and_conditions_by_type() {
        let target = json!({"metadata": {"name": "s"}, "spec": {"ports": [
            {"port": 80, "targetPort": 8080, "name": "http"}, {"port": 443, "name": "https"}]},
            "status": {"conditions": [{"type": "A", "status": "True"}]}});
        let patched = apply(
            target,
            json!({"spec": {"ports": [{"port": 443, "targetPort": 8443}]},
                   "status": {"conditions": [{"type": "B", "status": "False"}]}}),
            "Service",
        );
        assert_eq!(
            patched["spec"]["ports"],
            json!([{"port": 80, "targetPort": 8080, "name": "http"},
                   {"port": 443, "name": "https", "targetPort": 8443}])
        );
        assert_eq!(names(&patched["status"]["conditions"], "type"), ["B", "A"]);
    }

    #[test]
    fn service_account_secrets_by_name_and_namespace_conditions() {
        let patched = apply(
            json!({"metadata": {"name": "default"}, "secrets": [{"name": "tok-a"}],
                   "imagePullSecrets": [{"name": "r1"}]}),
            json!({"secrets": [{"name": "tok-b"}], "imagePullSecrets": [{"name": "r2"}]}),
            "ServiceAccount",
        );
        assert_eq!(
            patched["secrets"],
            json!([{"name": "tok-b"}, {"name": "tok-a"}])
        );
        assert_eq!(patched["imagePullSecrets"], json!([{"name": "r2"}]));

        let patched = apply(
            json!({"status": {"phase": "Terminating", "conditions": [
                {"type": "NamespaceDeletionDiscoveryFailure", "status": "False"}]}}),
            json!({"status": {"conditions": [
                {"type": "NamespaceDeletionDiscoveryFailure", "status": "True"},
                {"type": "NamespaceContentRemaining", "status": "True"}]}}),
            "Namespace",
        );
        assert_eq!(
            patched["status"]["conditions"],
            json!([{"type": "NamespaceDeletionDiscoveryFailure", "status": "True"},
                   {"type": "NamespaceContentRemaining", "status": "True"}])
        );
    }

    #[test]
    fn metadata_only_kinds() {
        let patched = apply(
            json!({"metadata": {"name": "n1", "namespace": "kube-node-lease", "finalizers": ["a"]},
                   "spec": {"holderIdentity": "n1", "leaseDurationSeconds": 40, "renewTime": "t0"}}),
            json!({"metadata": {"finalizers": ["b"]}, "spec": {"renewTime": "t1"}}),
            "Lease",
        );
        assert_eq!(
            patched["spec"],
            json!({"holderIdentity": "n1", "leaseDurationSeconds": 40, "renewTime": "t1"})
        );
        assert_eq!(patched["metadata"]["finalizers"], json!(["b", "a"]));

        let patched = apply(
            json!({"addressType": "IPv4", "endpoints": [{"addresses": ["10.42.0.5"]}],
                   "ports": [{"name": "http", "port": 80}]}),
            json!({"endpoints": [{"addresses": ["10.42.0.6"]}], "ports": [{"name": "https", "port": 443}]}),
            "EndpointSlice",
        );
        assert_eq!(patched["endpoints"], json!([{"addresses": ["10.42.0.6"]}]));
        assert_eq!(patched["ports"], json!([{"name": "https", "port": 443}]));

        let patched = apply(
            json!({"data": {"a": "1", "b": "2"}}),
            json!({"data": {"a": null, "c": "3"}}),
            "ConfigMap",
        );
        assert_eq!(patched["data"], json!({"b": "2", "c": "3"}));
        for kind in ["Secret", "Event"] {
            let patched = apply(json!({"x": {"a": 1}}), json!({"x": {"b": 2}}), kind);
            assert_eq!(patched["x"], json!({"a": 1, "b": 2}));
        }
    }

    // ---- directives ----

    #[test]
    fn patch_delete_removes_a_list_element() {
        let target = pod(json!({"containers": [{"name": "a"}, {"name": "b"}, {"name": "c"}]}));
        let patched = apply(
            target,
            json!({"spec": {"containers": [{"name": "b", "$patch": "delete"}]}}),
            "Pod",
        );
        assert_eq!(names(&patched["spec"]["containers"], "name"), ["a", "c"]);
    }

    #[test]
    fn patch_replace_in_a_list_replaces_it() {
        let target = pod(json!({"containers": [{"name": "c", "env": [
            {"name": "A", "value": "1"}, {"name": "B", "value": "2"}]}]}));
        let patched = apply(
            target,
            json!({"spec": {"containers": [{"name": "c", "env": [
                {"name": "X", "value": "9", "valueFrom": null}, {"$patch": "replace"}]}]}}),
            "Pod",
        );
        assert_eq!(
            patched["spec"]["containers"][0]["env"],
            json!([{"name": "X", "value": "9"}])
        );
    }

    #[test]
    fn patch_replace_and_delete_on_maps() {
        let target = pod(json!({"nodeSelector": {"zone": "a"},
                                "affinity": {"nodeAffinity": {"x": 1}},
                                "securityContext": {"runAsUser": 1}}));
        let patched = apply(
            target,
            json!({"spec": {"nodeSelector": {"$patch": "replace", "disk": "ssd"},
                            "affinity": {"$patch": "delete"},
                            // Nothing to delete or replace into: dropped / kept.
                            "dnsConfig": {"$patch": "delete"},
                            "overhead": {"$patch": "replace", "cpu": "1"}}}),
            "Pod",
        );
        let spec = &patched["spec"];
        assert_eq!(spec["nodeSelector"], json!({"disk": "ssd"}));
        // Upstream empties a deleted map rather than removing its key.
        assert_eq!(spec["affinity"], json!({}));
        assert!(spec.get("dnsConfig").is_none());
        assert_eq!(spec["overhead"], json!({"cpu": "1"}));
        assert_eq!(spec["securityContext"], json!({"runAsUser": 1}));
    }

    #[test]
    fn retain_keys_keeps_only_listed_keys() {
        let patched = apply(
            json!({"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}}),
            json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate", "rollingUpdate": null}}}),
            "Pod",
        );
        assert_eq!(patched["spec"]["strategy"], json!({"type": "Recreate"}));
    }

    #[test]
    fn set_element_order_reorders() {
        let target = pod(json!({"containers": [{"name": "a"}, {"name": "b"}, {"name": "c"}]}));
        let patched = apply(
            target,
            json!({"spec": {"$setElementOrder/containers": [{"name": "c"}, {"name": "a"}, {"name": "b"}]}}),
            "Pod",
        );
        assert_eq!(
            names(&patched["spec"]["containers"], "name"),
            ["c", "a", "b"]
        );

        // Elements the directive does not name stay where they were relative
        // to the ones it does.
        let target =
            pod(json!({"containers": [{"name": "a"}, {"name": "b"}, {"name": "sidecar"}]}));
        let patched = apply(
            target,
            json!({"spec": {"$setElementOrder/containers": [{"name": "b"}, {"name": "a"}],
                            "containers": [{"name": "a", "image": "x"}]}}),
            "Pod",
        );
        assert_eq!(
            names(&patched["spec"]["containers"], "name"),
            ["b", "a", "sidecar"]
        );
        assert_eq!(patched["spec"]["containers"][1]["image"], "x");

        // Primitive lists too.
        let patched = apply(
            json!({"metadata": {"finalizers": ["x", "y"]}}),
            json!({"metadata": {"$setElementOrder/finalizers": ["z", "y", "x"], "finalizers": ["z"]}}),
            "Pod",
        );
        assert_eq!(patched["metadata"]["finalizers"], json!(["z", "y", "x"]));

        // For a list the object lacks, the patch's list (directives removed).
        let patched = apply(
            pod(json!({})),
            json!({"spec": {"$setElementOrder/volumes": [{"name": "v"}],
                            "volumes": [{"name": "v", "emptyDir": {}}, {"name": "w", "$patch": "delete"}]}}),
            "Pod",
        );
        assert_eq!(
            patched["spec"]["volumes"],
            json!([{"name": "v", "emptyDir": {}}])
        );
    }

    #[test]
    fn set_element_order_after_a_deletion() {
        // kubectl apply replacing env C by D, B added by someone else: the
        // new element takes the deleted one's place in the object's order as
        // upstream sees it (its Go slice reuses the freed slot), so B stays
        // before D. Checked against apimachinery's own code.
        let target = pod(json!({"containers": [{"name": "app", "env": [
            {"name": "A", "value": "1"}, {"name": "B", "value": "2"}, {"name": "C", "value": "3"}]}]}));
        let patched = apply(
            target,
            json!({"spec": {"containers": [{"name": "app",
                "$setElementOrder/env": [{"name": "A"}, {"name": "D"}],
                "env": [{"name": "D", "value": "4"}, {"$patch": "delete", "name": "C"}]}]}}),
            "Pod",
        );
        assert_eq!(
            names(&patched["spec"]["containers"][0]["env"], "name"),
            ["A", "B", "D"]
        );

        // An empty order list with additions: upstream's comparator leaves
        // the new elements last, reversed.
        let patched = apply(
            json!({"metadata": {"finalizers": ["a", "b"]}}),
            json!({"metadata": {"$setElementOrder/finalizers": [], "finalizers": ["x", "y"]}}),
            "Pod",
        );
        assert_eq!(
            patched["metadata"]["finalizers"],
            json!(["a", "b", "y", "x"])
        );
    }

    #[test]
    fn a_value_added_and_deleted_by_one_patch_is_gone() {
        let patched = apply(
            json!({"spec": {"podCIDRs": ["10.42.0.0/24"]}}),
            json!({"spec": {"podCIDRs": ["10.42.0.0/24", "fd00::/64", "10.43.0.0/24"],
                            "$deleteFromPrimitiveList/podCIDRs": ["10.42.0.0/24", "fd00::/64"]}}),
            "Node",
        );
        assert_eq!(patched["spec"]["podCIDRs"], json!(["10.43.0.0/24"]));
    }

    #[test]
    fn kubectl_1_20_apply_patch() {
        let live = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web", "namespace": "default", "resourceVersion": "7",
                         "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{old}\n"},
                         "labels": {"app": "web", "injected": "yes"}},
            "spec": {
                "containers": [
                    {"name": "app", "image": "web:1", "resources": {},
                     "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}, {"name": "C", "value": "3"}],
                     "ports": [{"containerPort": 80, "protocol": "TCP"}]},
                    {"name": "proxy", "image": "envoy"}],
                "nodeName": "n1",
                "volumes": [{"name": "cache", "emptyDir": {}}]}});
        // As kubectl 1.20 computes it from last-applied (env A changed, C
        // removed, B before A; the label `tier` added, `app` dropped; the
        // cache volume switched to hostPath).
        let patch = json!({
            "metadata": {
                "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{new}\n"},
                "labels": {"app": null, "tier": "front"}},
            "spec": {
                "$setElementOrder/containers": [{"name": "app"}],
                "$setElementOrder/volumes": [{"name": "cache"}],
                "containers": [{
                    "$setElementOrder/env": [{"name": "B"}, {"name": "A"}],
                    "env": [{"name": "A", "value": "10"}, {"$patch": "delete", "name": "C"}],
                    "image": "web:2",
                    "name": "app"}],
                "volumes": [{"$retainKeys": ["hostPath", "name"], "hostPath": {"path": "/var/cache"},
                             "name": "cache"}]}});
        let patched = apply(live, patch, "Pod");
        let meta = &patched["metadata"];
        assert_eq!(meta["labels"], json!({"injected": "yes", "tier": "front"}));
        assert_eq!(
            meta["annotations"]["kubectl.kubernetes.io/last-applied-configuration"],
            "{new}\n"
        );
        assert_eq!(meta["resourceVersion"], "7");
        let containers = &patched["spec"]["containers"];
        assert_eq!(names(containers, "name"), ["app", "proxy"]);
        assert_eq!(containers[0]["image"], "web:2");
        assert_eq!(
            containers[0]["env"],
            json!([{"name": "B", "value": "2"}, {"name": "A", "value": "10"}])
        );
        assert_eq!(
            containers[0]["ports"],
            json!([{"containerPort": 80, "protocol": "TCP"}])
        );
        assert!(containers[0].get("$setElementOrder/env").is_none());
        assert_eq!(containers[1], json!({"name": "proxy", "image": "envoy"}));
        assert_eq!(
            patched["spec"]["volumes"],
            json!([{"name": "cache", "hostPath": {"path": "/var/cache"}}])
        );
        assert_eq!(patched["spec"]["nodeName"], "n1");
    }

    #[test]
    fn new_subtrees_carry_no_directives_or_nulls() {
        let patched = apply(
            pod(json!({})),
            json!({"spec": {"containers": [{
                "name": "c", "image": null, "$setElementOrder/env": [{"name": "A"}],
                "env": [{"name": "A", "value": "1"}, {"name": "B", "$patch": "delete"}]}],
                "$unknown": 1}}),
            "Pod",
        );
        assert_eq!(
            patched["spec"],
            json!({"containers": [{"name": "c", "env": [{"name": "A", "value": "1"}]}]})
        );
    }

    // ---- errors ----

    #[test]
    fn unknown_patch_directive_in_a_map() {
        let e = fail(
            json!({"metadata": {"labels": {}}}),
            json!({"metadata": {"labels": {"$patch": "merge"}}}),
            "Pod",
        );
        assert_eq!(
            e.to_string(),
            "unknown patch type: merge in map: map[$patch:merge]"
        );
        assert_eq!(e.status().0, StatusCode::INTERNAL_SERVER_ERROR);
        let e = fail(
            json!({"metadata": {"labels": {}}}),
            json!({"metadata": {"labels": {"$patch": 1}}}),
            "Pod",
        );
        assert_eq!(
            e.to_string(),
            "unknown patch type: %!s(int64=1) in map: map[$patch:1]"
        );
    }

    #[test]
    fn unknown_patch_directive_in_a_list() {
        let target = pod(json!({"containers": [{"name": "a"}]}));
        let e = fail(
            target.clone(),
            json!({"spec": {"containers": [{"name": "a", "$patch": "frobnicate"}]}}),
            "Pod",
        );
        assert_eq!(
            e.to_string(),
            "unknown patch type: frobnicate in map: map[$patch:frobnicate name:a]"
        );
        let e = fail(
            target,
            json!({"spec": {"containers": [{"name": "a", "$patch": "merge"}]}}),
            "Pod",
        );
        assert_eq!(e, PatchError::MergeDirectiveInList);
    }

    #[test]
    fn list_element_without_its_merge_key() {
        let target = pod(json!({"containers": [{"name": "a"}]}));
        let e = fail(
            target.clone(),
            json!({"spec": {"containers": [{"image": "x", "ports": [1]}]}}),
            "Pod",
        );
        assert_eq!(
            e.to_string(),
            "map: map[image:x ports:[1]] does not contain declared merge key: name"
        );
        let e = fail(
            target,
            json!({"spec": {"containers": [{"$patch": "delete"}]}}),
            "Pod",
        );
        assert_eq!(
            e.to_string(),
            "map: map[$patch:delete] does not contain declared merge key: name"
        );
        assert_eq!(e.status().0, StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[test]
    fn malformed_directives() {
        let mut target = pod(json!({"containers": [{"name": "a"}], "nodeSelector": {"a": "b"}}));
        target["metadata"]["finalizers"] = json!([]);
        let cases = [
            (
                json!({"spec": {"nodeSelector": {"$retainKeys": "a"}}}),
                PatchError::RetainKeysFormat,
            ),
            (
                json!({"spec": {"nodeSelector": {"$retainKeys": ["a"], "b": "c"}}}),
                PatchError::RetainKeysFormat,
            ),
            (
                json!({"spec": {"$setElementOrderX/containers": []}}),
                PatchError::SetElementOrderFormat,
            ),
            (
                json!({"spec": {"$setElementOrder": []}}),
                PatchError::SetElementOrderFormat,
            ),
            (
                json!({"metadata": {"$deleteFromPrimitiveList": ["a"]}}),
                PatchError::PrimitiveListFormat,
            ),
            (
                json!({"metadata": {"finalizers": [["a"]]}}),
                PatchError::ListOfLists,
            ),
        ];
        for (patch, want) in cases {
            let e = fail(target.clone(), patch, "Pod");
            assert_eq!(e, want);
            assert_ne!(e.status().0, StatusCode::INTERNAL_SERVER_ERROR, "{e}");
        }
        assert_eq!(
            PatchError::ListOfLists.status(),
            (StatusCode::UNPROCESSABLE_ENTITY, "Invalid")
        );
        assert_eq!(
            PatchError::RetainKeysFormat.status(),
            (StatusCode::BAD_REQUEST, "BadRequest")
        );

        let e = fail(
            target.clone(),
            json!({"spec": {"$setElementOrder/containers": "a"}}),
            "Pod",
        );
        assert_eq!(
            e.to_string(),
            "expected a []interface {}, but received a string"
        );
        let e = fail(
            target.clone(),
            json!({"spec": {"containers": [{"name": "a"}, "b"]}}),
            "Pod",
        );
        assert_eq!(
            e.to_string(),
            "list element types are not identical: [[map[name:a]] [map[name:a] b]]"
        );
        let e = fail(
            json!({"metadata": {"finalizers": []}}),
            json!({"metadata": {"$setElementOrder/finalizers": ["a"]}}),
            "Pod",
        );
        assert_eq!(e, PatchError::NoElements);
    }

    #[test]
    fn set_element_order_that_contradicts_the_patch() {
        let target = pod(json!({"containers": [{"name": "a"}, {"name": "b"}]}));
        let e = fail(
            target,
            json!({"spec": {"$setElementOrder/containers": [{"name": "b"}, {"name": "a"}],
                            "containers": [{"name": "a"}, {"name": "b"}]}}),
            "Pod",
        );
        assert_eq!(
            e.to_string(),
            "The order in patch list:\n[map[name:a] map[name:b]]\n doesn't match $setElementOrder list:\n[map[name:b] map[name:a]]\n"
        );
    }

    #[test]
    fn bad_documents_and_kinds() {
        let target = json!({"metadata": {}});
        let e = fail(target.clone(), json!([1]), "Pod");
        assert_eq!(
            e.to_string(),
            "json: cannot unmarshal array into Go value of type map[string]interface {}"
        );
        assert_eq!(e.status(), (StatusCode::BAD_REQUEST, "BadRequest"));
        assert_eq!(
            fail(target.clone(), json!({}), "Deployment"),
            PatchError::UnsupportedKind
        );
        assert_eq!(
            PatchError::UnsupportedKind.status().0,
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        );
        assert_eq!(
            fail(json!("x"), json!({}), "Pod"),
            PatchError::InvalidDocument
        );
    }

    #[test]
    fn deep_patches_are_refused_not_overflowed() {
        let mut deep = json!("bottom");
        for i in 0..1000 {
            deep = if i % 2 == 0 {
                json!({"a": deep})
            } else {
                json!([deep])
            };
        }
        let target = json!({"metadata": {"name": "p"}, "spec": {"a": {"a": {}}}});
        let e = fail(target.clone(), json!({"spec": deep.clone()}), "Pod");
        assert_eq!(e, PatchError::TooDeep);
        assert_eq!(e.status().0, StatusCode::BAD_REQUEST);
        // At the limit it still applies.
        let mut fine = json!(1);
        for _ in 0..(MAX_DEPTH - 2) {
            fine = json!({"a": fine});
        }
        assert!(strategic_merge(&target, &json!({"spec": fine}), "Pod").is_ok());
    }

    #[test]
    fn odd_inputs_never_panic() {
        let oddities = [
            json!(null),
            json!(true),
            json!(1),
            json!(1.5),
            json!(-3),
            json!("s"),
            json!([]),
            json!({}),
            json!([null]),
            json!([1, "a"]),
            json!([[1]]),
            json!([{}]),
            json!([{"name": null}]),
            json!([{"$patch": "replace"}]),
            json!([{"$patch": "delete"}]),
            json!([{"name": "a", "$patch": 7}]),
            json!({"$patch": null}),
            json!({"$retainKeys": [1, {}]}),
            json!({"$setElementOrder/x": [{}]}),
            json!({"$deleteFromPrimitiveList/x": {"a": 1}}),
            json!([{"name": {"deep": [1]}}]),
            json!([{"type": [1]}, {"type": [1]}]),
            json!([1e300, 1e-300]),
        ];
        let target = json!({
            "metadata": {"name": "p", "finalizers": ["a", "b"], "labels": {"a": "b"},
                         "ownerReferences": [{"uid": "u"}, {"name": "no-uid"}]},
            "spec": {"containers": [{"name": "a", "env": [{"name": "E"}]}, {"name": "b"}],
                     "volumes": [{"name": "v"}], "tolerations": [{}], "podCIDRs": ["x"]},
            "status": {"conditions": [{"type": "Ready"}], "addresses": [{"type": "Hostname"}]}});
        let places: [fn(Value) -> Value; 12] = [
            |v| json!({"metadata": {"finalizers": v}}),
            |v| json!({"metadata": {"$deleteFromPrimitiveList/finalizers": v}}),
            |v| json!({"metadata": {"$setElementOrder/finalizers": v}}),
            |v| json!({"metadata": {"ownerReferences": v}}),
            |v| json!({"metadata": {"labels": v}}),
            |v| json!({"spec": {"containers": v}}),
            |v| json!({"spec": {"$setElementOrder/containers": v, "containers": [{"name": "a"}]}}),
            |v| json!({"spec": {"containers": [{"name": "a", "env": v}]}}),
            |v| json!({"spec": {"volumes": [{"name": "v", "$retainKeys": v}]}}),
            |v| json!({"status": {"conditions": v, "$setElementOrder/conditions": v}}),
            |v| json!({"spec": v}),
            |v| v,
        ];
        for kind in ["Pod", "Node"] {
            for place in places {
                for odd in &oddities {
                    let patch = place(odd.clone());
                    // Either outcome will do; this is about not panicking.
                    let result = strategic_merge(&target, &patch, kind);
                    if let Err(e) = result {
                        assert!(!e.to_string().is_empty());
                    }
                }
            }
        }
    }

    #[test]
    fn go_formatting_of_values() {
        let m = json!({"b": [1, 2.5, null, true], "a": {"x": "y"}, "c": 1e-7, "d": 1234567.5, "e": 0.25});
        assert_eq!(
            go_fmt(&m),
            "map[a:map[x:y] b:[1 2.5 <nil> true] c:1e-07 d:1.2345675e+06 e:0.25]"
        );
        assert_eq!(go_fmt(&json!(3.0)), "3");
        assert_eq!(go_fmt(&json!(-0.0001)), "-0.0001");
        assert_eq!(go_fmt(&json!(123456.5)), "123456.5");
        let long = json!("x".repeat(10_000));
        assert!(go_fmt(&long).len() <= MESSAGE_BUDGET + 3);
    }
}
