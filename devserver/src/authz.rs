//! Who may do what: the decisions K3s's API server makes with its Node
//! authorizer, RBAC's bootstrap roles and the NodeRestriction admission
//! plugin, for the identities the devserver hands out.
//!
//! - `system:masters` (the admin kubeconfig): everything.
//! - Nodes (`system:node:<name>` in `system:nodes`): read nodes, pods,
//!   services and endpoints; write only their own Node, their own Lease in
//!   `kube-node-lease`, the status of pods bound to them, mirror pods bound to
//!   them and events; read a Secret or ConfigMap only when a pod bound to them
//!   refers to it (the Node authorizer's graph).
//! - Anyone else authenticated (kube-proxy, the k3s controller): read
//!   anything but Secrets, and create events.
//!
//! Refusals read as the API server's (`<resource> "<name>" is forbidden:
//! User "..." cannot <verb> resource ...`, the Node authorizer's reason after
//! a colon, NodeRestriction's own wording).

use serde_json::Value;

use crate::api::Resource;
use crate::store::Store;
use crate::supervisor::Caller;

/// What a request asks to do.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// `get`, `list`, `watch`, `create`, `update`, `patch` or `delete`.
    pub verb: &'a str,
    /// The resource.
    pub resource: &'static Resource,
    /// The namespace ("" for cluster scope).
    pub namespace: &'a str,
    /// The object's name: from the path, a create's body, or a list's
    /// `metadata.name` field selector.
    pub name: Option<&'a str>,
    /// `status`, `binding`, ...
    pub subresource: Option<&'a str>,
    /// The object a create or update sends.
    pub body: Option<&'a Value>,
}

/// A refusal: the message of a 403 `Forbidden` Status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forbidden(pub String);

/// The node a kubelet certificate speaks for (`system:node:<name>` in group
/// `system:nodes`).
pub fn node_of(caller: &Caller) -> Option<&str> {
    match caller {
        Caller::User { name, groups } if groups.iter().any(|g| g == "system:nodes") => {
            name.strip_prefix("system:node:")
        }
        _ => None,
    }
}

fn is_admin(caller: &Caller) -> bool {
    matches!(caller, Caller::User { groups, .. } if groups.iter().any(|g| g == "system:masters"))
}

/// `pods "x"` or `leases.coordination.k8s.io` as the API server names the
/// target of a refusal.
fn target(request: &Request<'_>) -> String {
    let resource = if request.resource.group.is_empty() {
        request.resource.plural.to_owned()
    } else {
        format!("{}.{}", request.resource.plural, request.resource.group)
    };
    match request.name {
        Some(name) => format!("{resource} \"{name}\""),
        None => resource,
    }
}

/// RBAC's refusal, with the Node authorizer's reason when it had one.
fn rbac_denied(user: &str, request: &Request<'_>, reason: Option<&str>) -> Forbidden {
    let resource = match request.subresource {
        Some(sub) => format!("{}/{sub}", request.resource.plural),
        None => request.resource.plural.to_owned(),
    };
    let scope = if request.namespace.is_empty() {
        "at the cluster scope".to_owned()
    } else {
        format!("in the namespace \"{}\"", request.namespace)
    };
    let mut message = format!(
        "{} is forbidden: User \"{user}\" cannot {} resource \"{resource}\" in API group \"{}\" {scope}",
        target(request),
        request.verb,
        request.resource.group
    );
    if let Some(reason) = reason {
        message.push_str(": ");
        message.push_str(reason);
    }
    Forbidden(message)
}

/// Admission's refusal (NodeRestriction).
fn admission_denied(request: &Request<'_>, why: &str) -> Forbidden {
    Forbidden(format!("{} is forbidden: {why}", target(request)))
}

fn is_read(verb: &str) -> bool {
    matches!(verb, "get" | "list" | "watch")
}

/// Decides one request; `Ok` lets it through.
pub fn authorize(caller: &Caller, request: &Request<'_>, store: &Store) -> Result<(), Forbidden> {
    let Caller::User { name: user, .. } = caller else {
        return Err(Forbidden("Unauthorized".into()));
    };
    if is_admin(caller) {
        return Ok(());
    }
    if let Some(node) = node_of(caller) {
        return authorize_node(user, node, request, store);
    }
    // RBAC gives service accounts nothing by default (discovery is served
    // before authorization).
    if user.starts_with("system:serviceaccount:") {
        return Err(rbac_denied(user, request, None));
    }
    let allowed = (is_read(request.verb) && request.resource.plural != "secrets")
        || (request.resource.plural == "events"
            && matches!(request.verb, "create" | "update" | "patch"));
    if allowed {
        Ok(())
    } else {
        Err(rbac_denied(user, request, None))
    }
}

fn bound_to(pod: &Value, node: &str) -> bool {
    pod.pointer("/spec/nodeName").and_then(Value::as_str) == Some(node)
}

fn authorize_node(
    user: &str,
    node: &str,
    request: &Request<'_>,
    store: &Store,
) -> Result<(), Forbidden> {
    let verb = request.verb;
    let group = request.resource.group;
    match (group, request.resource.plural, request.subresource) {
        ("", "nodes", None | Some("status")) => {
            if is_read(verb) {
                return Ok(());
            }
            if verb == "delete" && request.subresource.is_none() {
                return Err(rbac_denied(user, request, None));
            }
            match request.name {
                Some(other) if other != node => Err(admission_denied(
                    request,
                    &format!("node \"{node}\" is not allowed to modify node \"{other}\""),
                )),
                _ => Ok(()),
            }
        }
        ("", "pods", None) => match verb {
            "get" | "list" | "watch" => Ok(()),
            "create" => {
                let pod = request.body.unwrap_or(&Value::Null);
                let mirror = pod
                    .pointer("/metadata/annotations/kubernetes.io~1config.mirror")
                    .is_some();
                if !mirror {
                    return Err(admission_denied(
                        request,
                        &format!(
                            "pod does not have \"kubernetes.io/config.mirror\" annotation, node \"{node}\" can only create mirror pods"
                        ),
                    ));
                }
                if !bound_to(pod, node) {
                    return Err(admission_denied(
                        request,
                        &format!(
                            "node \"{node}\" can only create pods with spec.nodeName set to itself"
                        ),
                    ));
                }
                Ok(())
            }
            "delete" => {
                let bound = request
                    .name
                    .and_then(|name| store.get("pods", request.namespace, name).ok())
                    .is_none_or(|pod| bound_to(&pod, node));
                if bound {
                    Ok(())
                } else {
                    Err(admission_denied(
                        request,
                        &format!(
                            "node \"{node}\" can only delete pods with spec.nodeName set to itself"
                        ),
                    ))
                }
            }
            _ => Err(rbac_denied(user, request, None)),
        },
        ("", "pods", Some("status")) => {
            if verb == "get" {
                return Ok(());
            }
            if !matches!(verb, "update" | "patch") {
                return Err(rbac_denied(user, request, None));
            }
            let bound = request
                .name
                .and_then(|name| store.get("pods", request.namespace, name).ok())
                .is_none_or(|pod| bound_to(&pod, node));
            if bound {
                Ok(())
            } else {
                Err(admission_denied(
                    request,
                    &format!(
                        "node \"{node}\" can only update pod status for pods with spec.nodeName set to itself"
                    ),
                ))
            }
        }
        ("coordination.k8s.io", "leases", None) => {
            if !matches!(verb, "get" | "create" | "update" | "patch" | "delete") {
                return Err(rbac_denied(
                    user,
                    request,
                    Some("can only get, create, update, patch, or delete a node lease"),
                ));
            }
            if request.namespace != "kube-node-lease" {
                return Err(rbac_denied(
                    user,
                    request,
                    Some("can only access leases in this namespace"),
                ));
            }
            if request.name.is_some_and(|n| n != node) {
                return Err(rbac_denied(
                    user,
                    request,
                    Some("can only access node lease with the same name as the requesting node"),
                ));
            }
            Ok(())
        }
        ("", "secrets" | "configmaps", sub) => {
            if !is_read(verb) {
                return Err(rbac_denied(
                    user,
                    request,
                    Some("can only read resources of this type"),
                ));
            }
            if sub.is_some() {
                return Err(rbac_denied(user, request, Some("cannot read subresource")));
            }
            if request.namespace.is_empty() {
                return Err(rbac_denied(
                    user,
                    request,
                    Some("can only read namespaced object of this type"),
                ));
            }
            let Some(name) = request.name else {
                return Err(rbac_denied(user, request, Some("No Object name found")));
            };
            let (pods, _) = store.list("pods", Some(request.namespace), |p| bound_to(p, node));
            let related = pods.iter().any(|pod| {
                let kind = if request.resource.plural == "secrets" {
                    Referenced::Secret
                } else {
                    Referenced::ConfigMap
                };
                referenced_names(pod, kind).any(|n| n == name)
            });
            if related {
                Ok(())
            } else {
                Err(rbac_denied(
                    user,
                    request,
                    Some(&format!(
                        "no relationship found between node '{node}' and this object"
                    )),
                ))
            }
        }
        ("", "serviceaccounts", Some("token")) if verb == "create" => {
            let bound = request.body.and_then(|b| b.pointer("/spec/boundObjectRef"));
            let Some(pod_name) = bound
                .filter(|b| b["kind"] == "Pod")
                .and_then(|b| b["name"].as_str())
            else {
                return Err(admission_denied(
                    request,
                    "node requested token not bound to a pod",
                ));
            };
            let no_relation = || {
                rbac_denied(
                    user,
                    request,
                    Some(&format!(
                        "no relationship found between node '{node}' and this object"
                    )),
                )
            };
            let Ok(pod) = store.get("pods", request.namespace, pod_name) else {
                return Err(no_relation());
            };
            if !bound_to(&pod, node) {
                return Err(admission_denied(
                    request,
                    "node requested token bound to a pod scheduled on a different node",
                ));
            }
            let account = pod
                .pointer("/spec/serviceAccountName")
                .and_then(Value::as_str)
                .unwrap_or("default");
            if request.name.is_some_and(|n| n != account) {
                return Err(no_relation());
            }
            Ok(())
        }
        ("", "services" | "namespaces", None) if is_read(verb) => Ok(()),
        ("", "events", None) if matches!(verb, "create" | "update" | "patch") => Ok(()),
        ("discovery.k8s.io", "endpointslices", None) => Err(rbac_denied(user, request, None)),
        _ if is_read(verb) && request.resource.plural == "serviceaccounts" => Ok(()),
        _ => Err(rbac_denied(user, request, None)),
    }
}

/// Every container of a pod: init, regular and ephemeral.
fn containers(pod: &Value) -> impl Iterator<Item = &Value> {
    ["initContainers", "containers", "ephemeralContainers"]
        .into_iter()
        .flat_map(move |field| {
            pod.pointer(&format!("/spec/{field}"))
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
        })
}

fn volumes(pod: &Value) -> impl Iterator<Item = &Value> {
    pod.pointer("/spec/volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

/// What a pod reference names: a Secret or a ConfigMap.
#[derive(Clone, Copy)]
enum Referenced {
    Secret,
    ConfigMap,
}

impl Referenced {
    /// Where a volume, a projected source, an env `valueFrom` and an
    /// `envFrom` name an object of this kind.
    fn pointers(self) -> [&'static str; 4] {
        match self {
            Self::Secret => [
                "/secret/secretName",
                "/secret/name",
                "/valueFrom/secretKeyRef/name",
                "/secretRef/name",
            ],
            Self::ConfigMap => [
                "/configMap/name",
                "/configMap/name",
                "/valueFrom/configMapKeyRef/name",
                "/configMapRef/name",
            ],
        }
    }
}

/// The Secrets or ConfigMaps a pod refers to (as the Node authorizer's graph
/// records them): volumes (direct and projected), env and envFrom, and for
/// Secrets the image pull secrets.
fn referenced_names(pod: &Value, kind: Referenced) -> impl Iterator<Item = &str> {
    let [volume, projected, env, env_from] = kind.pointers();
    let pull = pod
        .pointer("/spec/imagePullSecrets")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(move |_| matches!(kind, Referenced::Secret))
        .filter_map(|s| s["name"].as_str());
    let from_volumes = volumes(pod).flat_map(move |v| {
        let direct = v.pointer(volume).and_then(Value::as_str);
        let sources = v
            .pointer("/projected/sources")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(move |s| s.pointer(projected).and_then(Value::as_str));
        direct.into_iter().chain(sources)
    });
    let from_env = containers(pod).flat_map(move |c| {
        let list = |field: &str| c[field].as_array().into_iter().flatten();
        let env = list("env").filter_map(move |e| e.pointer(env).and_then(Value::as_str));
        let env_from =
            list("envFrom").filter_map(move |e| e.pointer(env_from).and_then(Value::as_str));
        env.chain(env_from)
    });
    pull.chain(from_volumes).chain(from_env)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn resource(group: &str, plural: &str) -> &'static Resource {
        crate::api::RESOURCES
            .iter()
            .find(|r| r.group == group && r.plural == plural)
            .unwrap()
    }

    fn kubelet(node: &str) -> Caller {
        Caller::User {
            name: format!("system:node:{node}"),
            groups: vec!["system:nodes".into(), "system:authenticated".into()],
        }
    }

    fn request<'a>(
        verb: &'a str,
        resource: &'static Resource,
        namespace: &'a str,
        name: Option<&'a str>,
    ) -> Request<'a> {
        Request {
            verb,
            resource,
            namespace,
            name,
            subresource: None,
            body: None,
        }
    }

    fn store_with_pods() -> Store {
        let store = Store::new();
        store
            .create(
                "pods",
                "default",
                json!({"metadata": {"name": "mine"}, "spec": {"nodeName": "n1",
                    "imagePullSecrets": [{"name": "pull"}],
                    "volumes": [{"name": "v", "configMap": {"name": "settings"}},
                                {"name": "p", "projected": {"sources": [{"secret": {"name": "projected"}}]}}],
                    "containers": [{"name": "c", "envFrom": [{"secretRef": {"name": "env"}}]}]}}),
            )
            .unwrap();
        store
            .create(
                "pods",
                "default",
                json!({"metadata": {"name": "theirs"}, "spec": {"nodeName": "n2",
                    "volumes": [{"name": "v", "secret": {"secretName": "other"}}]}}),
            )
            .unwrap();
        store
    }

    #[test]
    fn the_recorded_secret_refusal_reads_the_same() {
        let store = store_with_pods();
        let caller = kubelet("rust-edge-1");
        let denied = authorize(
            &caller,
            &request(
                "get",
                resource("", "secrets"),
                "kube-system",
                Some("rust-edge-1.node-password.k3s"),
            ),
            &store,
        )
        .unwrap_err();
        assert_eq!(
            denied.0,
            "secrets \"rust-edge-1.node-password.k3s\" is forbidden: User \"system:node:rust-edge-1\" cannot get resource \"secrets\" in API group \"\" in the namespace \"kube-system\": no relationship found between node 'rust-edge-1' and this object"
        );
    }

    #[test]
    fn a_node_reads_what_its_pods_refer_to_and_nothing_else() {
        let store = store_with_pods();
        let n1 = kubelet("n1");
        let secrets = resource("", "secrets");
        for name in ["pull", "projected", "env"] {
            authorize(&n1, &request("get", secrets, "default", Some(name)), &store)
                .unwrap_or_else(|e| panic!("{name}: {}", e.0));
        }
        authorize(
            &n1,
            &request("watch", secrets, "default", Some("env")),
            &store,
        )
        .unwrap();
        authorize(
            &n1,
            &request(
                "get",
                resource("", "configmaps"),
                "default",
                Some("settings"),
            ),
            &store,
        )
        .unwrap();
        assert!(
            authorize(
                &n1,
                &request("get", secrets, "default", Some("other")),
                &store
            )
            .is_err()
        );
        let listed =
            authorize(&n1, &request("list", secrets, "default", None), &store).unwrap_err();
        assert!(listed.0.ends_with(": No Object name found"), "{}", listed.0);
        assert!(
            authorize(
                &n1,
                &request("update", secrets, "default", Some("env")),
                &store
            )
            .is_err()
        );
    }

    #[test]
    fn a_node_writes_its_own_node_lease_and_pod_status_only() {
        let store = store_with_pods();
        let n1 = kubelet("n1");
        let nodes = resource("", "nodes");
        let leases = resource("coordination.k8s.io", "leases");
        let pods = resource("", "pods");
        authorize(&n1, &request("patch", nodes, "", Some("n1")), &store).unwrap();
        let other = authorize(&n1, &request("patch", nodes, "", Some("n2")), &store).unwrap_err();
        assert_eq!(
            other.0,
            "nodes \"n2\" is forbidden: node \"n1\" is not allowed to modify node \"n2\""
        );
        authorize(
            &n1,
            &request("update", leases, "kube-node-lease", Some("n1")),
            &store,
        )
        .unwrap();
        let lease = authorize(
            &n1,
            &request("update", leases, "kube-node-lease", Some("n2")),
            &store,
        )
        .unwrap_err();
        assert_eq!(
            lease.0,
            "leases.coordination.k8s.io \"n2\" is forbidden: User \"system:node:n1\" cannot update resource \"leases\" in API group \"coordination.k8s.io\" in the namespace \"kube-node-lease\": can only access node lease with the same name as the requesting node"
        );
        assert!(
            authorize(
                &n1,
                &request("create", leases, "default", Some("n1")),
                &store
            )
            .is_err()
        );

        let mut status = request("patch", pods, "default", Some("mine"));
        status.subresource = Some("status");
        authorize(&n1, &status, &store).unwrap();
        status.name = Some("theirs");
        let denied = authorize(&n1, &status, &store).unwrap_err();
        assert_eq!(
            denied.0,
            "pods \"theirs\" is forbidden: node \"n1\" can only update pod status for pods with spec.nodeName set to itself"
        );
        let spec = authorize(
            &n1,
            &request("patch", pods, "default", Some("mine")),
            &store,
        )
        .unwrap_err();
        assert_eq!(
            spec.0,
            "pods \"mine\" is forbidden: User \"system:node:n1\" cannot patch resource \"pods\" in API group \"\" in the namespace \"default\""
        );
        authorize(
            &n1,
            &request("delete", pods, "default", Some("mine")),
            &store,
        )
        .unwrap();
        assert!(
            authorize(
                &n1,
                &request("delete", pods, "default", Some("theirs")),
                &store
            )
            .is_err()
        );

        let plain = json!({"metadata": {"name": "x"}, "spec": {"nodeName": "n1"}});
        let mut create = request("create", pods, "default", Some("x"));
        create.body = Some(&plain);
        assert!(
            authorize(&n1, &create, &store)
                .unwrap_err()
                .0
                .contains("can only create mirror pods")
        );
        let mirror = json!({"metadata": {"name": "x", "annotations": {"kubernetes.io/config.mirror": "h"}},
            "spec": {"nodeName": "n1"}});
        create.body = Some(&mirror);
        authorize(&n1, &create, &store).unwrap();
        authorize(
            &n1,
            &request("create", resource("", "events"), "default", None),
            &store,
        )
        .unwrap();
        assert!(
            authorize(
                &n1,
                &request(
                    "list",
                    resource("discovery.k8s.io", "endpointslices"),
                    "",
                    None
                ),
                &store
            )
            .is_err()
        );
    }

    #[test]
    fn a_node_asks_tokens_only_for_its_pods_accounts() {
        let store = store_with_pods();
        let n1 = kubelet("n1");
        let accounts = resource("", "serviceaccounts");
        let ask = |pod: &str| json!({"spec": {"boundObjectRef": {"kind": "Pod", "name": pod}}});
        let mine = ask("mine");
        let mut token = request("create", accounts, "default", Some("default"));
        token.subresource = Some("token");
        token.body = Some(&mine);
        authorize(&n1, &token, &store).unwrap();
        let theirs = ask("theirs");
        token.body = Some(&theirs);
        assert!(
            authorize(&n1, &token, &store)
                .unwrap_err()
                .0
                .contains("a different node")
        );
        let unbound = json!({"spec": {}});
        token.body = Some(&unbound);
        assert!(
            authorize(&n1, &token, &store)
                .unwrap_err()
                .0
                .contains("not bound to a pod")
        );
        token.body = Some(&mine);
        token.name = Some("builder");
        assert!(authorize(&n1, &token, &store).is_err());
    }

    #[test]
    fn other_identities_read_all_but_secrets_and_the_admin_does_anything() {
        let store = Store::new();
        let proxy = Caller::User {
            name: "system:kube-proxy".into(),
            groups: vec![],
        };
        let slices = resource("discovery.k8s.io", "endpointslices");
        authorize(&proxy, &request("watch", slices, "", None), &store).unwrap();
        assert!(
            authorize(
                &proxy,
                &request("list", resource("", "secrets"), "", None),
                &store
            )
            .is_err()
        );
        assert!(
            authorize(
                &proxy,
                &request("delete", resource("", "pods"), "default", Some("x")),
                &store
            )
            .is_err()
        );
        let admin = Caller::User {
            name: "system:admin".into(),
            groups: vec!["system:masters".into()],
        };
        authorize(
            &admin,
            &request("delete", resource("", "nodes"), "", Some("n")),
            &store,
        )
        .unwrap();
        let account = Caller::User {
            name: "system:serviceaccount:default:default".into(),
            groups: vec!["system:serviceaccounts".into()],
        };
        assert!(
            authorize(
                &account,
                &request("list", resource("", "pods"), "default", None),
                &store
            )
            .is_err()
        );
        assert!(
            authorize(
                &Caller::Anonymous,
                &request("get", slices, "", None),
                &store
            )
            .is_err()
        );
    }
}
