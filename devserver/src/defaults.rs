//! What the API server fills in when an object is created: the defaulting
//! functions of `k8s.io/api` and the admission plugins K3s enables
//! (ServiceAccount, DefaultTolerationSeconds) for pods, whose spec a kubelet
//! reads as given; and a pod's initial status (`Pending`, its QoS class).
//! Pods get the `kube-api-access-<suffix>` volume the ServiceAccount
//! admission plugin adds (a projected service-account token, the cluster CA
//! from `kube-root-ca.crt` and the namespace), mounted in every container.

use serde_json::{Map, Value, json};

use crate::api::Resource;

fn set_default(map: &mut Map<String, Value>, key: &str, value: Value) {
    if map.get(key).is_none_or(Value::is_null) {
        map.insert(key.to_owned(), value);
    }
}

/// `Always` for an image without a tag or with `:latest`, else
/// `IfNotPresent` (a digest counts as a tag).
fn pull_policy(image: &str) -> &'static str {
    let last = image.rsplit('/').next().unwrap_or(image);
    if last.contains('@') {
        return "IfNotPresent";
    }
    match last.rsplit_once(':') {
        Some((_, "latest")) | None => "Always",
        Some(_) => "IfNotPresent",
    }
}

fn default_container(container: &mut Value) {
    let Some(c) = container.as_object_mut() else {
        return;
    };
    let image = c
        .get("image")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    set_default(c, "imagePullPolicy", json!(pull_policy(&image)));
    set_default(c, "terminationMessagePath", json!("/dev/termination-log"));
    set_default(c, "terminationMessagePolicy", json!("File"));
    set_default(c, "resources", json!({}));
    if let Some(ports) = c.get_mut("ports").and_then(Value::as_array_mut) {
        for port in ports.iter_mut().filter_map(Value::as_object_mut) {
            set_default(port, "protocol", json!("TCP"));
        }
    }
}

/// The QoS class: Guaranteed when every container limits CPU and memory and
/// requests (if given) equal the limits; BestEffort when nothing is requested
/// or limited; Burstable otherwise.
fn qos_class(spec: &Value) -> &'static str {
    let containers: Vec<&Value> = ["initContainers", "containers"]
        .iter()
        .filter_map(|f| spec.get(*f).and_then(Value::as_array))
        .flatten()
        .collect();
    let amounts = |c: &Value, kind: &str| -> Map<String, Value> {
        c.pointer(&format!("/resources/{kind}"))
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default()
    };
    let relevant = |m: &Map<String, Value>| {
        m.iter()
            .filter(|(k, _)| matches!(k.as_str(), "cpu" | "memory"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<Map<String, Value>>()
    };
    let mut any = false;
    let mut guaranteed = !containers.is_empty();
    for c in &containers {
        let requests = relevant(&amounts(c, "requests"));
        let limits = relevant(&amounts(c, "limits"));
        any |= !requests.is_empty() || !limits.is_empty();
        let full_limits = limits.contains_key("cpu") && limits.contains_key("memory");
        let same = requests.iter().all(|(k, v)| limits.get(k) == Some(v));
        guaranteed &= full_limits && same;
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// Fills in what the API server would on create.
pub fn on_create(resource: &Resource, object: &mut Value) {
    if !(resource.group.is_empty() && resource.plural == "pods") {
        return;
    }
    let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    set_default(spec, "restartPolicy", json!("Always"));
    set_default(spec, "terminationGracePeriodSeconds", json!(30));
    set_default(spec, "dnsPolicy", json!("ClusterFirst"));
    set_default(spec, "schedulerName", json!("default-scheduler"));
    set_default(spec, "securityContext", json!({}));
    set_default(spec, "enableServiceLinks", json!(true));
    set_default(spec, "priority", json!(0));
    set_default(spec, "preemptionPolicy", json!("PreemptLowerPriority"));
    set_default(spec, "serviceAccountName", json!("default"));
    let account = spec
        .get("serviceAccountName")
        .cloned()
        .unwrap_or(Value::Null);
    spec.insert("serviceAccount".into(), account);
    for field in ["initContainers", "containers", "ephemeralContainers"] {
        if let Some(list) = spec.get_mut(field).and_then(Value::as_array_mut) {
            list.iter_mut().for_each(default_container);
        }
    }
    // DefaultTolerationSeconds: ride out 5 minutes of a not-ready or
    // unreachable node before eviction.
    let tolerations = spec.entry("tolerations").or_insert_with(|| json!([]));
    if let Some(list) = tolerations.as_array_mut() {
        for key in [
            "node.kubernetes.io/not-ready",
            "node.kubernetes.io/unreachable",
        ] {
            let present = list
                .iter()
                .any(|t| t["key"] == key && t["effect"].as_str().is_none_or(|e| e == "NoExecute"));
            if !present {
                list.push(
                    json!({"key": key, "operator": "Exists", "effect": "NoExecute",
                                 "tolerationSeconds": 300}),
                );
            }
        }
    }
    add_api_access(spec);
    let qos = qos_class(&Value::Object(spec.clone()));
    if let Some(map) = object.as_object_mut() {
        map.insert(
            "status".into(),
            json!({"phase": "Pending", "qosClass": qos}),
        );
    }
}

/// Where the service-account volume is mounted.
const API_ACCESS_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// The ServiceAccount admission plugin's token volume (1.21, bound tokens):
/// unless the pod opts out or already mounts something there.
fn add_api_access(spec: &mut Map<String, Value>) {
    if spec.get("automountServiceAccountToken") == Some(&Value::Bool(false)) {
        return;
    }
    let containers = || {
        ["initContainers", "containers", "ephemeralContainers"]
            .into_iter()
            .filter_map(|f| spec.get(f).and_then(Value::as_array))
            .flatten()
    };
    let mounted = containers().any(|c| {
        c["volumeMounts"]
            .as_array()
            .is_some_and(|m| m.iter().any(|m| m["mountPath"] == API_ACCESS_PATH))
    });
    if mounted {
        return;
    }
    let suffix: String = crate::store::uuid()
        .chars()
        .filter(char::is_ascii_lowercase)
        .chain("abcde".chars())
        .take(5)
        .collect();
    let name = format!("kube-api-access-{suffix}");
    let volume = json!({
        "name": name,
        "projected": {
            "defaultMode": 420,
            "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {"configMap": {"items": [{"key": "ca.crt", "path": "ca.crt"}], "name": "kube-root-ca.crt"}},
                {"downwardAPI": {"items": [{"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}, "path": "namespace"}]}},
            ],
        },
    });
    let volumes = spec.entry("volumes").or_insert_with(|| json!([]));
    if let Some(list) = volumes.as_array_mut() {
        list.push(volume);
    }
    for field in ["initContainers", "containers"] {
        let Some(list) = spec.get_mut(field).and_then(Value::as_array_mut) else {
            continue;
        };
        for container in list.iter_mut().filter_map(Value::as_object_mut) {
            let mounts = container.entry("volumeMounts").or_insert_with(|| json!([]));
            if let Some(mounts) = mounts.as_array_mut() {
                mounts.push(json!({"mountPath": API_ACCESS_PATH, "name": name, "readOnly": true}));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pods() -> &'static Resource {
        crate::api::resource_named("pods")
    }

    #[test]
    fn a_created_pod_is_pending_with_the_api_servers_defaults() {
        let mut pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [
            {"name": "a", "image": "busybox", "ports": [{"containerPort": 80}]},
            {"name": "b", "image": "registry.local:5000/x:1.2"}]},
            "status": {"phase": "Running"}});
        on_create(pods(), &mut pod);
        assert_eq!(
            pod["status"],
            json!({"phase": "Pending", "qosClass": "BestEffort"})
        );
        assert_eq!(pod["spec"]["restartPolicy"], "Always");
        assert_eq!(pod["spec"]["serviceAccount"], "default");
        assert_eq!(pod["spec"]["containers"][0]["imagePullPolicy"], "Always");
        assert_eq!(
            pod["spec"]["containers"][1]["imagePullPolicy"],
            "IfNotPresent"
        );
        assert_eq!(pod["spec"]["containers"][0]["ports"][0]["protocol"], "TCP");
        assert_eq!(pod["spec"]["tolerations"].as_array().unwrap().len(), 2);
        // Again: nothing doubles.
        on_create(pods(), &mut pod);
        assert_eq!(pod["spec"]["tolerations"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn the_recorded_pods_spec_is_what_its_manifest_becomes() {
        let text = include_str!("../fixtures/recorded-k3s-v1.21/busybox-pod-status.yaml");
        let recorded: Value = serde_yaml_ng::from_str(text).unwrap();
        let applied =
            recorded["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
                .as_str()
                .unwrap();
        let mut pod: Value = serde_json::from_str(applied).unwrap();
        on_create(pods(), &mut pod);
        // The volume's suffix is random: name it as recorded.
        let recorded_name = recorded["spec"]["volumes"][0]["name"].clone();
        let ours = pod["spec"]["volumes"][0]["name"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(
            ours.starts_with("kube-api-access-")
                && ours.len() == recorded_name.as_str().unwrap().len()
        );
        pod["spec"]["volumes"][0]["name"] = recorded_name.clone();
        pod["spec"]["containers"][0]["volumeMounts"][0]["name"] = recorded_name;
        assert_eq!(pod["spec"], recorded["spec"]);
        assert_eq!(pod["status"]["phase"], "Pending");
        // Opting out, or mounting something there, leaves it be.
        let mut own = json!({"spec": {"automountServiceAccountToken": false, "containers": [{"name": "c", "image": "x"}]}});
        on_create(pods(), &mut own);
        assert!(own["spec"].get("volumes").is_none());
    }

    #[test]
    fn qos_classes_follow_requests_and_limits() {
        let both = json!({"cpu": "100m", "memory": "64Mi"});
        assert_eq!(
            qos_class(&json!({"containers": [{"resources": {"limits": both}}]})),
            "Guaranteed"
        );
        assert_eq!(
            qos_class(
                &json!({"containers": [{"resources": {"limits": both, "requests": {"cpu": "50m"}}}]})
            ),
            "Burstable"
        );
        assert_eq!(
            qos_class(&json!({"containers": [{"resources": {"limits": both}}, {}]})),
            "Burstable"
        );
        assert_eq!(qos_class(&json!({"containers": [{}]})), "BestEffort");
        assert_eq!(pull_policy("busybox@sha256:abc"), "IfNotPresent");
        assert_eq!(pull_policy("host:5000/busybox"), "Always");
    }
}
