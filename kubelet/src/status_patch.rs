//! The status patch a kubelet sends: a two-way strategic merge diff between the
//! status the API shows and the new one, with `metadata.uid` as a precondition
//! (`pkg/util/pod/pod.go` PatchPodStatus, preparePatchBytesForPodStatus).
//!
//! A plain merge of the new status would not do: strategic merge keeps keys
//! the patch does not mention, so a field that went away must be sent as
//! `null`, and a list merged by key (conditions by `type`, pod IPs by `ip`)
//! must name the elements it changes. Container statuses carry no merge tag
//! in `core/v1` (`containerStatuses` is replaced whole), so a change sends
//! the whole list.

use serde_json::{Map, Value, json};

/// Lists of a PodStatus merged by a key, and the key (the API's
/// `patchMergeKey` tags).
const MERGE_KEYS: &[(&str, &str)] = &[("conditions", "type"), ("podIPs", "ip"), ("hostIPs", "ip")];

/// The patch turning `old` (the API's status) into `new`, for the pod with
/// `uid`; `None` when they are equal.
pub fn status_patch(uid: &str, old: &Value, new: &Value) -> Option<Value> {
    let diff = diff_object(old.as_object(), new.as_object()?, true)?;
    Some(json!({"metadata": {"uid": uid}, "status": diff}))
}

fn merge_key(field: &str) -> Option<&'static str> {
    MERGE_KEYS
        .iter()
        .find(|(f, _)| *f == field)
        .map(|(_, k)| *k)
}

/// The diff of two objects; `top` enables the merge-keyed lists (they only
/// appear at the top of a status).
fn diff_object(
    old: Option<&Map<String, Value>>,
    new: &Map<String, Value>,
    top: bool,
) -> Option<Value> {
    let empty = Map::new();
    let old = old.unwrap_or(&empty);
    let mut out = Map::new();
    for (key, value) in new {
        let before = old.get(key);
        if before == Some(value) {
            continue;
        }
        match (before, value) {
            (Some(Value::Object(b)), Value::Object(v)) => {
                if let Some(d) = diff_object(Some(b), v, false) {
                    out.insert(key.clone(), d);
                }
            }
            (before, Value::Array(items)) if top && merge_key(key).is_some() => {
                let merge = merge_key(key).unwrap_or_default();
                let before = before
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                if let Some((list, order)) = diff_list(&before, items, merge) {
                    out.insert(key.clone(), Value::Array(list));
                    out.insert(format!("$setElementOrder/{key}"), Value::Array(order));
                }
            }
            _ => {
                out.insert(key.clone(), value.clone());
            }
        }
    }
    for key in old.keys() {
        if !new.contains_key(key) {
            out.insert(key.clone(), Value::Null);
        }
    }
    (!out.is_empty()).then_some(Value::Object(out))
}

/// A merge-keyed list's diff: changed or new elements (as diffs carrying the
/// key), removed ones as `$patch: delete`, and the new order.
fn diff_list(old: &[Value], new: &[Value], key: &str) -> Option<(Vec<Value>, Vec<Value>)> {
    let key_of = |v: &Value| v.get(key).cloned();
    let mut changes = Vec::new();
    let mut order = Vec::new();
    for item in new {
        let Some(k) = key_of(item) else {
            // No key: nothing to merge by; send the element whole.
            changes.push(item.clone());
            continue;
        };
        order.push(json!({ key: k.clone() }));
        match old.iter().find(|o| key_of(o).as_ref() == Some(&k)) {
            Some(o) if o == item => {}
            Some(o) => {
                if let (Some(Value::Object(mut d)), true) = (
                    diff_object(o.as_object(), item.as_object()?, false),
                    item.is_object(),
                ) {
                    d.insert(key.to_owned(), k);
                    changes.push(Value::Object(d));
                }
            }
            None => changes.push(item.clone()),
        }
    }
    for o in old {
        if let Some(k) = key_of(o) {
            if !new.iter().any(|n| key_of(n).as_ref() == Some(&k)) {
                changes.push(json!({ key: k, "$patch": "delete" }));
            }
        }
    }
    (!changes.is_empty()).then_some((changes, order))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_statuses_need_no_patch() {
        let s = json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]});
        assert_eq!(status_patch("u", &s, &s), None);
    }

    #[test]
    fn container_statuses_are_replaced_whole() {
        let old = json!({
            "phase": "Pending",
            "containerStatuses": [{"name": "c", "ready": false, "state": {"waiting": {"reason": "ContainerCreating"}}}]
        });
        let new = json!({
            "phase": "Running",
            "containerStatuses": [{"name": "c", "ready": true, "state": {"running": {"startedAt": "t"}}}]
        });
        assert_eq!(
            status_patch("u1", &old, &new).unwrap(),
            json!({
                "metadata": {"uid": "u1"},
                "status": {
                    "phase": "Running",
                    "containerStatuses": [{"name": "c", "ready": true, "state": {"running": {"startedAt": "t"}}}]
                }
            })
        );
    }

    #[test]
    fn conditions_merge_by_type_and_removed_elements_are_deleted() {
        let old = json!({"conditions": [
            {"type": "Ready", "status": "False", "reason": "ContainersNotReady"},
            {"type": "Old", "status": "True"}
        ]});
        let new = json!({"conditions": [
            {"type": "PodScheduled", "status": "True"},
            {"type": "Ready", "status": "True"}
        ]});
        let patch = status_patch("u", &old, &new).unwrap();
        assert_eq!(
            patch["status"]["conditions"],
            json!([
                {"type": "PodScheduled", "status": "True"},
                {"type": "Ready", "status": "True", "reason": null},
                {"type": "Old", "$patch": "delete"}
            ])
        );
        assert_eq!(
            patch["status"]["$setElementOrder/conditions"],
            json!([{"type": "PodScheduled"}, {"type": "Ready"}])
        );
    }

    #[test]
    fn an_empty_old_status_gets_everything() {
        let new = json!({"phase": "Pending", "podIPs": [{"ip": "10.42.0.5"}]});
        let patch = status_patch("u", &Value::Null, &new).unwrap();
        assert_eq!(patch["status"]["phase"], "Pending");
        assert_eq!(patch["status"]["podIPs"], json!([{"ip": "10.42.0.5"}]));
    }
}
