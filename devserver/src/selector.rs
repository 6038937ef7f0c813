//! Label and field selectors (`?labelSelector=`, `?fieldSelector=`) as the API
//! server parses and applies them.
//!
//! Labels: `key`, `!key`, `key=value` (or `==`), `key!=value`,
//! `key in (a,b)`, `key notin (a,b)`, comma-separated, all must hold.
//! Fields: `path=value`, `path==value`, `path!=value` over the few fields each
//! resource supports (`metadata.name`, `metadata.namespace`, and for pods
//! `spec.nodeName`, `status.phase`); any other field is refused, as by the
//! API server ("field label not supported").

use serde_json::Value;

/// Why a selector does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// Malformed label selector.
    #[error("unable to parse requirement: {0}")]
    Label(String),
    /// A field the resource cannot be selected by.
    #[error("field label not supported: {0}")]
    Field(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Requirement {
    Exists(String),
    NotExists(String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

/// A parsed label selector; empty selects everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector(Vec<Requirement>);

/// Splits at commas outside parentheses.
fn split_top(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 317
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/'))
}

fn valid_value(value: &str) -> bool {
    value.len() <= 63
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

impl LabelSelector {
    /// Parses `?labelSelector=` (already URL-decoded).
    pub fn parse(text: &str) -> Result<Self, SelectorError> {
        let bad = |part: &str| SelectorError::Label(part.trim().to_owned());
        let mut requirements = Vec::new();
        if text.trim().is_empty() {
            return Ok(Self(requirements));
        }
        for part in split_top(text) {
            let p = part.trim();
            let requirement = if let Some(key) = p.strip_prefix('!') {
                Requirement::NotExists(key.trim().to_owned())
            } else if let Some((key, value)) = p.split_once("!=") {
                Requirement::NotIn(key.trim().to_owned(), vec![value.trim().to_owned()])
            } else if let Some((key, value)) = p.split_once("==").or_else(|| p.split_once('=')) {
                Requirement::In(key.trim().to_owned(), vec![value.trim().to_owned()])
            } else if let Some((key, set)) = p.split_once(" notin ") {
                Requirement::NotIn(key.trim().to_owned(), parse_set(set).ok_or_else(|| bad(p))?)
            } else if let Some((key, set)) = p.split_once(" in ") {
                Requirement::In(key.trim().to_owned(), parse_set(set).ok_or_else(|| bad(p))?)
            } else {
                Requirement::Exists(p.to_owned())
            };
            let (Requirement::Exists(k)
            | Requirement::NotExists(k)
            | Requirement::In(k, _)
            | Requirement::NotIn(k, _)) = &requirement;
            let values_ok = match &requirement {
                Requirement::In(_, v) | Requirement::NotIn(_, v) => {
                    v.iter().all(|v| valid_value(v))
                }
                _ => true,
            };
            if !valid_key(k) || !values_ok {
                return Err(bad(p));
            }
            requirements.push(requirement);
        }
        Ok(Self(requirements))
    }

    /// Whether the object's labels satisfy every requirement.
    pub fn matches(&self, object: &Value) -> bool {
        let label = |key: &str| {
            object
                .pointer("/metadata/labels")
                .and_then(|l| l.get(key))
                .and_then(Value::as_str)
        };
        self.0.iter().all(|r| match r {
            Requirement::Exists(k) => label(k).is_some(),
            Requirement::NotExists(k) => label(k).is_none(),
            Requirement::In(k, values) => label(k).is_some_and(|v| values.iter().any(|x| x == v)),
            Requirement::NotIn(k, values) => label(k).is_none_or(|v| values.iter().all(|x| x != v)),
        })
    }
}

fn parse_set(set: &str) -> Option<Vec<String>> {
    let inner = set.trim().strip_prefix('(')?.strip_suffix(')')?;
    Some(inner.split(',').map(|v| v.trim().to_owned()).collect())
}

/// A parsed field selector.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector(Vec<(String, bool, String)>);

impl FieldSelector {
    /// Parses `?fieldSelector=` for `resource` (plural).
    pub fn parse(resource: &str, text: &str) -> Result<Self, SelectorError> {
        let mut terms = Vec::new();
        if text.trim().is_empty() {
            return Ok(Self(terms));
        }
        for part in text.split(',') {
            let p = part.trim();
            let (field, equal, value) = if let Some((f, v)) = p.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = p.split_once("==").or_else(|| p.split_once('=')) {
                (f, true, v)
            } else {
                return Err(SelectorError::Field(p.to_owned()));
            };
            let field = field.trim();
            let supported = matches!(field, "metadata.name" | "metadata.namespace")
                || resource_fields(resource).contains(&field);
            if !supported {
                return Err(SelectorError::Field(field.to_owned()));
            }
            terms.push((field.to_owned(), equal, value.trim().to_owned()));
        }
        Ok(Self(terms))
    }

    /// Whether the object's fields satisfy every term (a missing field is "";
    /// a boolean is `true`/`false`, as the API server's field sets write it).
    pub fn matches(&self, object: &Value) -> bool {
        self.0.iter().all(|(field, equal, value)| {
            // An event's `source` is its reporting component.
            let path = match field.as_str() {
                "source" => "source.component",
                other => other,
            };
            let pointer = format!("/{}", path.replace('.', "/"));
            let actual = match object.pointer(&pointer) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Bool(b)) => b.to_string(),
                Some(Value::Number(n)) => n.to_string(),
                _ if field == "spec.unschedulable" => "false".to_owned(),
                _ => String::new(),
            };
            (actual == *value) == *equal
        })
    }
}

/// The fields besides `metadata.name` and `metadata.namespace` a resource
/// can be selected by (the API server's `GetAttrs` per resource, 1.21).
fn resource_fields(resource: &str) -> &'static [&'static str] {
    match resource {
        "pods" => &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
        "events" => &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
        "secrets" => &["type"],
        "nodes" => &["spec.unschedulable"],
        "namespaces" => &["status.phase"],
        _ => &[],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(labels: Value, node: &str) -> Value {
        json!({"metadata": {"name": "p", "namespace": "default", "labels": labels},
               "spec": {"nodeName": node}, "status": {"phase": "Running"}})
    }

    #[test]
    fn label_selectors() {
        let p = pod(json!({"app": "web", "tier": "front"}), "n1");
        let yes = |s: &str| LabelSelector::parse(s).unwrap().matches(&p);
        assert!(yes(""));
        assert!(yes("app=web"));
        assert!(yes("app==web,tier"));
        assert!(yes("app in (web, api),!missing"));
        assert!(yes("tier notin (back)"));
        assert!(yes("missing!=x"));
        assert!(!yes("app=api"));
        assert!(!yes("!app"));
        assert!(!yes("app notin (web)"));
        assert!(!yes("missing"));
        for bad in ["app in web", "a b=c", "=x", "app=(x", "k=v v"] {
            assert!(LabelSelector::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn field_selectors() {
        let p = pod(json!({}), "n1");
        let sel = |s: &str| FieldSelector::parse("pods", s).unwrap().matches(&p);
        assert!(sel("spec.nodeName=n1"));
        assert!(sel("spec.nodeName==n1,metadata.namespace=default"));
        assert!(sel("spec.nodeName!=n2,status.phase=Running"));
        assert!(!sel("metadata.name=q"));
        // What the kubelet asks for on an unscheduled pod.
        assert!(
            !FieldSelector::parse("pods", "spec.nodeName=")
                .unwrap()
                .matches(&p)
        );
        assert_eq!(
            FieldSelector::parse("nodes", "spec.nodeName=n1"),
            Err(SelectorError::Field("spec.nodeName".into()))
        );
        assert!(FieldSelector::parse("pods", "nonsense").is_err());
        assert!(
            FieldSelector::parse("nodes", "metadata.name=n1")
                .unwrap()
                .matches(&json!({"metadata": {"name": "n1"}}))
        );
    }
}
