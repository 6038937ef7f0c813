//! The API server's validation of what is created or replaced, for the checks
//! a client is likely to trip over: object names (RFC 1123 subdomains, labels
//! for namespaces and services), label keys and values, and the parts of a pod
//! spec without which no kubelet can run it. A failure is a `422 Invalid`
//! Status whose message and causes read as the API server's.

use serde_json::{Value, json};

use crate::api::Resource;

/// One invalid field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    /// `FieldValueInvalid`, `FieldValueRequired`, ...
    pub reason: &'static str,
    /// The field path (`metadata.name`, `spec.containers[0].image`).
    pub field: String,
    /// The cause's message (`Invalid value: "X": ...`, `Required value`).
    pub message: String,
}

const SUBDOMAIN_HELP: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const LABEL_HELP: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const LABEL_VALUE_HELP: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";

fn is_dns_label(text: &str) -> bool {
    let bytes = text.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
}

fn is_dns_subdomain(text: &str) -> bool {
    text.len() <= 253 && text.split('.').all(is_dns_label)
}

/// A label value: empty, or up to 63 of `[A-Za-z0-9-_.]` starting and ending
/// alphanumeric.
fn is_label_value(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.is_empty()
        || (bytes.len() <= 63
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
            && bytes.last().is_some_and(u8::is_ascii_alphanumeric))
}

/// A qualified name (label and annotation keys): `[prefix/]name`, the
/// prefix a DNS subdomain and the name like a label value but non-empty.
fn is_qualified_name(text: &str) -> bool {
    let (prefix, name) = match text.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, text),
    };
    prefix.is_none_or(is_dns_subdomain) && !name.is_empty() && is_label_value(name)
}

fn invalid(field: &str, value: &str, help: &str) -> Cause {
    Cause {
        reason: "FieldValueInvalid",
        field: field.to_owned(),
        message: format!(
            "Invalid value: {}: {help}",
            serde_json::to_string(value).unwrap_or_default()
        ),
    }
}

fn required(field: &str) -> Cause {
    Cause {
        reason: "FieldValueRequired",
        field: field.to_owned(),
        message: "Required value".to_owned(),
    }
}

/// What is wrong with `object` as a `resource` (empty: nothing).
pub fn check(resource: &Resource, object: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let label_named =
        resource.group.is_empty() && matches!(resource.plural, "namespaces" | "services");
    if !name.is_empty() {
        if label_named && !is_dns_label(name) {
            causes.push(invalid("metadata.name", name, LABEL_HELP));
        } else if !label_named && !is_dns_subdomain(name) {
            causes.push(invalid("metadata.name", name, SUBDOMAIN_HELP));
        }
    }
    if let Some(labels) = object
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
    {
        for (key, value) in labels {
            if !is_qualified_name(key) {
                causes.push(invalid("metadata.labels", key, "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"));
            }
            match value.as_str() {
                Some(v) if is_label_value(v) => {}
                _ => causes.push(invalid(
                    "metadata.labels",
                    value.as_str().unwrap_or(""),
                    LABEL_VALUE_HELP,
                )),
            }
        }
    }
    if resource.group.is_empty() && resource.plural == "pods" {
        check_pod(object, &mut causes);
    }
    causes
}

fn check_pod(pod: &Value, causes: &mut Vec<Cause>) {
    let containers = pod.pointer("/spec/containers").and_then(Value::as_array);
    let Some(containers) = containers.filter(|c| !c.is_empty()) else {
        causes.push(required("spec.containers"));
        return;
    };
    let mut seen = Vec::new();
    for (i, c) in containers.iter().enumerate() {
        let name = c["name"].as_str().unwrap_or("");
        if name.is_empty() {
            causes.push(required(&format!("spec.containers[{i}].name")));
        } else if !is_dns_label(name) {
            causes.push(invalid(
                &format!("spec.containers[{i}].name"),
                name,
                LABEL_HELP,
            ));
        } else if seen.contains(&name) {
            causes.push(Cause {
                reason: "FieldValueDuplicate",
                field: format!("spec.containers[{i}].name"),
                message: format!(
                    "Duplicate value: {}",
                    serde_json::to_string(name).unwrap_or_default()
                ),
            });
        }
        seen.push(name);
        if c["image"].as_str().unwrap_or("").is_empty() {
            causes.push(required(&format!("spec.containers[{i}].image")));
        }
    }
}

/// The 422 Status for `causes` about the object `name` of `kind`.
pub fn status(kind: &str, name: &str, group: &str, causes: &[Cause]) -> Value {
    let summary: Vec<String> = causes
        .iter()
        .map(|c| format!("{}: {}", c.field, c.message))
        .collect();
    let summary = if summary.len() == 1 {
        summary.concat()
    } else {
        format!("[{}]", summary.join(", "))
    };
    let mut details = json!({
        "name": name,
        "kind": kind,
        "causes": causes.iter().map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field})).collect::<Vec<_>>(),
    });
    if !group.is_empty() {
        details["group"] = json!(group);
    }
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": format!("{kind} {} is invalid: {summary}", serde_json::to_string(name).unwrap_or_default()),
        "reason": "Invalid",
        "details": details,
        "code": 422,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::api::resource_named as resource;

    #[test]
    fn names_follow_rfc_1123() {
        assert!(is_dns_subdomain("web-1.example"));
        assert!(!is_dns_subdomain("Web"));
        assert!(!is_dns_subdomain("-web"));
        assert!(!is_dns_subdomain("web..x"));
        assert!(!is_dns_label("a.b"));
        assert!(is_qualified_name("app.kubernetes.io/name"));
        assert!(is_qualified_name("App_1"));
        assert!(!is_qualified_name("bad key"));
        assert!(!is_qualified_name("/x"));
        let causes = check(
            resource("pods"),
            &json!({"metadata": {"name": "Foo_bar"}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}),
        );
        assert_eq!(causes.len(), 1);
        let status = status("Pod", "Foo_bar", "", &causes);
        assert_eq!(
            status["message"],
            format!(
                "Pod \"Foo_bar\" is invalid: metadata.name: Invalid value: \"Foo_bar\": {SUBDOMAIN_HELP}"
            )
        );
        assert_eq!(status["details"]["causes"][0]["field"], "metadata.name");
        assert!(
            check(
                resource("namespaces"),
                &json!({"metadata": {"name": "a.b"}})
            )
            .len()
                == 1
        );
        assert!(
            check(
                resource("configmaps"),
                &json!({"metadata": {"name": "a.b"}})
            )
            .is_empty()
        );
    }

    #[test]
    fn a_pod_needs_named_containers_with_images() {
        let pods = resource("pods");
        let none = check(pods, &json!({"metadata": {"name": "p"}, "spec": {}}));
        assert_eq!(none, vec![required("spec.containers")]);
        let bad = check(
            pods,
            &json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"}, {"name": "a", "image": "x"}, {"image": "y"}]}}),
        );
        let fields: Vec<&str> = bad.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.containers[0].image",
                "spec.containers[1].name",
                "spec.containers[2].name"
            ]
        );
        let status = status("Pod", "p", "", &bad);
        assert!(
            status["message"]
                .as_str()
                .unwrap()
                .starts_with("Pod \"p\" is invalid: [")
        );
        let labels = check(
            resource("configmaps"),
            &json!({"metadata": {"name": "c", "labels": {"ok": "fine", "bad key": "x", "k": "no spaces"}}}),
        );
        assert_eq!(labels.len(), 2);
        // Not objects at all: nothing to panic over.
        assert!(!check(pods, &json!(null)).is_empty());
        assert!(check(resource("nodes"), &json!([1, 2])).is_empty());
    }
}
