//! The node Lease (`kube-node-lease/<node>`), the heartbeat the node
//! lifecycle controller watches: held by the node, 40 s long, renewed every
//! 10 s, owned by the Node so it goes when the Node does.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference};

/// The namespace of node leases.
pub const NAMESPACE: &str = "kube-node-lease";

/// The owner reference a node's Lease carries (`SetNodeOwnerFunc`), `None`
/// for a Node without a name or uid.
pub fn node_owner(node: &Node) -> Option<OwnerReference> {
    Some(OwnerReference {
        api_version: "v1".to_owned(),
        kind: "Node".to_owned(),
        name: node.metadata.name.clone()?,
        uid: node.metadata.uid.clone()?,
        ..OwnerReference::default()
    })
}

fn seconds(duration: Duration) -> i32 {
    i32::try_from(duration.as_secs()).unwrap_or(i32::MAX)
}

/// A new Lease for `node`.
pub fn new_lease(
    node: &str,
    owner: Option<OwnerReference>,
    duration: Duration,
    now: MicroTime,
) -> Lease {
    renewed(
        Lease {
            metadata: ObjectMeta {
                name: Some(node.to_owned()),
                namespace: Some(NAMESPACE.to_owned()),
                ..ObjectMeta::default()
            },
            spec: None,
        },
        node,
        owner,
        duration,
        now,
    )
}

/// `lease` renewed at `now` by `node`: holder, duration, renew time, and
/// the Node as owner once it is known. A Node owner reference of another
/// uid (a Node deleted and registered again) is replaced: the garbage
/// collector would otherwise delete the live node's Lease.
pub fn renewed(
    mut lease: Lease,
    node: &str,
    owner: Option<OwnerReference>,
    duration: Duration,
    now: MicroTime,
) -> Lease {
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    spec.holder_identity = Some(node.to_owned());
    spec.lease_duration_seconds = Some(seconds(duration));
    spec.renew_time = Some(now);
    if let Some(owner) = owner {
        let refs = lease.metadata.owner_references.get_or_insert_with(Vec::new);
        refs.retain(|r| !(r.kind == "Node" && r.api_version == "v1" && r.uid != owner.uid));
        if !refs.iter().any(|r| r.uid == owner.uid) {
            refs.push(owner);
        }
    }
    lease
}

#[cfg(test)]
mod tests {
    use k8s_openapi::chrono::{TimeZone, Utc};

    use super::*;

    fn at(micro: u32) -> MicroTime {
        MicroTime(
            Utc.with_ymd_and_hms(2026, 11, 27, 21, 13, 50)
                .single()
                .unwrap()
                + k8s_openapi::chrono::Duration::microseconds(i64::from(micro)),
        )
    }

    fn node(uid: &str) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some("k3s-agent-1".into()),
                uid: Some(uid.into()),
                ..ObjectMeta::default()
            },
            ..Node::default()
        }
    }

    #[test]
    fn shaped_as_the_recorded_lease() {
        let fixture = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/k3s-agent-lease.yaml"),
        )
        .unwrap();
        let mut recorded: serde_json::Value = serde_yaml_ng::from_str(&fixture).unwrap();
        let owner = node_owner(&node("8c2e3ae3-45be-45a1-bedf-174cf2ddd353"));
        let ours = new_lease("k3s-agent-1", owner, Duration::from_secs(40), at(384_202));
        let mut ours = serde_json::to_value(&ours).unwrap();
        // What the server adds.
        for key in ["creationTimestamp", "resourceVersion", "uid"] {
            recorded["metadata"].as_object_mut().unwrap().remove(key);
        }
        for value in [&mut recorded, &mut ours] {
            value.as_object_mut().unwrap().remove("apiVersion");
            value.as_object_mut().unwrap().remove("kind");
        }
        assert_eq!(ours, recorded);
    }

    #[test]
    fn renewal_keeps_other_owners_and_replaces_a_stale_node() {
        let first = new_lease("n", None, Duration::from_secs(40), at(1));
        assert!(first.metadata.owner_references.is_none());
        let owned = renewed(
            first,
            "n",
            node_owner(&node("old")),
            Duration::from_secs(40),
            at(2),
        );
        let mut with_other = owned.clone();
        with_other
            .metadata
            .owner_references
            .get_or_insert_with(Vec::new)
            .push(OwnerReference {
                api_version: "example.com/v1".into(),
                kind: "Thing".into(),
                name: "t".into(),
                uid: "t-uid".into(),
                ..OwnerReference::default()
            });
        let again = renewed(
            with_other,
            "n",
            node_owner(&node("new")),
            Duration::from_secs(40),
            at(3),
        );
        let uids: Vec<&str> = again
            .metadata
            .owner_references
            .iter()
            .flatten()
            .map(|r| r.uid.as_str())
            .collect();
        assert_eq!(uids, ["t-uid", "new"]);
        let spec = again.spec.unwrap();
        assert_eq!(spec.renew_time, Some(at(3)));
        assert_eq!(spec.holder_identity.as_deref(), Some("n"));
        // Renewing with an unknown owner keeps what is there.
        let kept = renewed(owned, "n", None, Duration::from_secs(40), at(4));
        assert_eq!(kept.metadata.owner_references.unwrap().len(), 1);
    }
}
