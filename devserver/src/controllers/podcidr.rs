//! Node IPAM's range allocator, as kube-controller-manager runs it for K3s
//! (`--allocate-node-cidrs --cluster-cidr=<cluster CIDR>`, node mask /24 by
//! default): a Node without `spec.podCIDR` gets the next free subnet of the
//! cluster CIDR in `spec.podCIDR` and `spec.podCIDRs`; flannel and the kubelet
//! wait for it.
//!
//! Which subnets are taken is read from the Nodes themselves on every pass, so
//! CIDRs of nodes that exist after a restart are never handed out twice and a
//! deleted node's CIDR is free again. As upstream's `cidrset`, the search for
//! a free subnet starts after the last one handed out (round robin, so a
//! just-freed CIDR is not given to the next node while routes to its old
//! owner may linger) and wraps around; after a start that is the lowest free
//! one. When none is left the node gets a `CIDRNotAvailable` Event and waits.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::time::Duration;

use serde_json::{Value, json};

use super::{
    Controller, ControllerError, EventKind, Report, log, name_of, object_field, record, str_at,
    update,
};
use crate::config::Cidr;
use crate::store::{Event, Store};

/// The allocator's Event source, as upstream names it.
const COMPONENT: &str = "cidrAllocator";

/// The subnets of a cluster CIDR and which are taken.
#[derive(Debug, Clone)]
pub struct CidrSet {
    /// The cluster network's first address.
    base: u64,
    /// The cluster network's prefix length.
    prefix: u8,
    /// Each subnet's prefix length.
    mask: u8,
    /// Taken, by subnet index.
    used: Vec<bool>,
    /// Where the next search starts.
    next: usize,
}

impl CidrSet {
    /// The subnets of `cluster` with prefix length `mask`.
    pub fn new(cluster: Cidr, mask: u8) -> Result<Self, ControllerError> {
        if mask < cluster.prefix || mask > 32 || mask - cluster.prefix > 16 {
            return Err(ControllerError::MaskSize { mask, cluster });
        }
        Ok(Self {
            base: u64::from(u32::from(cluster.addr)),
            prefix: cluster.prefix,
            mask,
            used: vec![false; 1 << (mask - cluster.prefix)],
            next: 0,
        })
    }

    /// Addresses per subnet.
    fn subnet_size(&self) -> u64 {
        1 << (32 - u32::from(self.mask))
    }

    /// The `index`th subnet.
    fn subnet(&self, index: usize) -> Cidr {
        let addr = self.base + index as u64 * self.subnet_size();
        Cidr {
            // Within the cluster network, which is within IPv4.
            addr: Ipv4Addr::from(u32::try_from(addr).unwrap_or(u32::MAX)),
            prefix: self.mask,
        }
    }

    /// The indices of the subnets `cidr` overlaps; `None` when it lies
    /// outside the cluster network.
    fn span(&self, cidr: Cidr) -> Option<std::ops::RangeInclusive<usize>> {
        let start = u64::from(u32::from(cidr.addr));
        let end = start + (1u64 << (32 - u32::from(cidr.prefix)));
        let cluster_end = self.base + (1u64 << (32 - u32::from(self.prefix)));
        let (from, to) = (start.max(self.base), end.min(cluster_end));
        if from >= to {
            return None;
        }
        let size = self.subnet_size();
        let first = usize::try_from((from - self.base) / size).ok()?;
        let last = usize::try_from((to - 1 - self.base) / size).ok()?;
        Some(first..=last)
    }

    /// Marks every subnet `cidr` overlaps as taken; false when it lies
    /// outside the cluster network.
    pub fn occupy(&mut self, cidr: Cidr) -> bool {
        let Some(span) = self.span(cidr) else {
            return false;
        };
        for slot in self.used.get_mut(span).into_iter().flatten() {
            *slot = true;
        }
        true
    }

    /// Takes the next free subnet, searching from after the last one taken.
    pub fn allocate(&mut self) -> Option<Cidr> {
        let count = self.used.len();
        let index = (0..count)
            .map(|i| (self.next + i) % count)
            .find(|&i| !self.used[i])?;
        self.used[index] = true;
        self.next = (index + 1) % count;
        Some(self.subnet(index))
    }

    /// Frees the subnets `cidr` overlaps (the search position stays).
    pub fn release(&mut self, cidr: Cidr) {
        if let Some(span) = self.span(cidr) {
            for slot in self.used.get_mut(span).into_iter().flatten() {
                *slot = false;
            }
        }
    }

    /// Frees everything (the search position stays).
    fn clear(&mut self) {
        self.used.iter_mut().for_each(|u| *u = false);
    }
}

/// The pod CIDRs a node carries (`spec.podCIDR` and `spec.podCIDRs`).
fn pod_cidrs(node: &Value) -> Vec<&str> {
    let mut cidrs: Vec<&str> = node
        .pointer("/spec/podCIDRs")
        .and_then(Value::as_array)
        .map(|list| list.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let single = str_at(node, "/spec/podCIDR");
    if !single.is_empty() && !cidrs.contains(&single) {
        cidrs.push(single);
    }
    cidrs.retain(|c| !c.is_empty());
    cidrs
}

/// The range allocator controller.
#[derive(Debug)]
pub struct RangeAllocator {
    set: CidrSet,
    /// Nodes told about exhaustion (logged once, until they get a CIDR).
    starved: HashSet<String>,
}

impl RangeAllocator {
    /// An allocator over `cluster`, `mask`-sized subnets.
    pub fn new(cluster: Cidr, mask: u8) -> Result<Self, ControllerError> {
        Ok(Self {
            set: CidrSet::new(cluster, mask)?,
            starved: HashSet::new(),
        })
    }

    /// Gives `node` a CIDR.
    fn allocate_for(&mut self, store: &Store, node: &Value) {
        let name = name_of(node).to_owned();
        let Some(cidr) = self.set.allocate() else {
            if self.starved.insert(name.clone()) {
                log(
                    COMPONENT,
                    format_args!(
                        "no CIDR for node {name}: CIDR allocation failed; there are no remaining CIDRs left to allocate in the accepted range"
                    ),
                );
            }
            let message = format!("Node {name} status is now: CIDRNotAvailable");
            record(
                store,
                &Report {
                    component: COMPONENT,
                    kind: "Node",
                    object: node,
                    event_type: EventKind::Normal,
                    reason: "CIDRNotAvailable",
                    message: &message,
                },
            );
            return;
        };
        let text = cidr.to_string();
        let written = update(store, "nodes", "", &name, |node| {
            // Someone (an earlier pass, an admin) was first: theirs stands.
            if !pod_cidrs(node).is_empty() {
                return false;
            }
            let Some(spec) = object_field(node, "spec") else {
                return false;
            };
            spec.insert("podCIDR".into(), json!(text));
            spec.insert("podCIDRs".into(), json!([text]));
            true
        });
        match written {
            Ok(Some(_)) => {
                self.starved.remove(&name);
                log(COMPONENT, format_args!("node {name} gets pod CIDR {text}"));
            }
            // Gone, or given one meanwhile: the next pass counts what it has.
            Ok(None) => self.set.release(cidr),
            Err(e) => {
                self.set.release(cidr);
                log(
                    COMPONENT,
                    format_args!("cannot set node {name}'s pod CIDR: {e}"),
                );
            }
        }
    }
}

impl Controller for RangeAllocator {
    const NAME: &'static str = COMPONENT;

    fn wants(&self, event: &Event) -> bool {
        event.resource == "nodes"
    }

    fn period(&self) -> Duration {
        Duration::from_secs(30)
    }

    fn pass(&mut self, store: &Store) {
        let (nodes, _) = store.list("nodes", None, |n| !name_of(n).is_empty());
        // What is taken is what nodes carry now: restarts and deletions need
        // no bookkeeping of their own.
        self.set.clear();
        let mut waiting = Vec::new();
        for node in &nodes {
            let cidrs = pod_cidrs(node);
            if cidrs.is_empty() {
                waiting.push(node);
            }
            // IPv6 and foreign CIDRs are not this allocator's to track.
            for cidr in cidrs
                .into_iter()
                .filter_map(|c| Cidr::parse("podCIDR", c).ok())
            {
                self.set.occupy(cidr);
            }
        }
        self.starved
            .retain(|n| waiting.iter().any(|w| name_of(w) == n));
        // Oldest first, as they registered.
        waiting.sort_by_key(|n| {
            (
                crate::store::parse_rfc3339(str_at(n, "/metadata/creationTimestamp")).unwrap_or(0),
                name_of(n).to_owned(),
            )
        });
        for node in waiting {
            self.allocate_for(store, node);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(text: &str) -> Cidr {
        Cidr::parse("t", text).unwrap()
    }

    #[test]
    fn subnets_are_handed_out_in_order_and_wrap_around() {
        let mut set = CidrSet::new(cidr("10.42.0.0/16"), 24).unwrap();
        assert_eq!(set.allocate(), Some(cidr("10.42.0.0/24")));
        assert_eq!(set.allocate(), Some(cidr("10.42.1.0/24")));
        assert!(set.occupy(cidr("10.42.2.0/24")));
        assert_eq!(set.allocate(), Some(cidr("10.42.3.0/24")));
        // Freed, but the search goes on from where it was.
        set.release(cidr("10.42.0.0/24"));
        assert_eq!(set.allocate(), Some(cidr("10.42.4.0/24")));

        let mut small = CidrSet::new(cidr("10.42.0.0/23"), 24).unwrap();
        assert_eq!(small.allocate(), Some(cidr("10.42.0.0/24")));
        assert_eq!(small.allocate(), Some(cidr("10.42.1.0/24")));
        assert_eq!(small.allocate(), None);
        small.release(cidr("10.42.0.0/24"));
        assert_eq!(small.allocate(), Some(cidr("10.42.0.0/24")));
    }

    #[test]
    fn occupied_ranges_cover_every_overlapped_subnet() {
        let mut set = CidrSet::new(cidr("10.42.0.0/16"), 24).unwrap();
        assert!(!set.occupy(cidr("10.43.0.0/24")));
        assert!(set.occupy(cidr("10.42.0.0/23")));
        // A larger CIDR around the cluster takes all of it.
        let mut all = CidrSet::new(cidr("10.42.0.0/22"), 24).unwrap();
        assert!(all.occupy(cidr("10.0.0.0/8")));
        assert_eq!(all.allocate(), None);
        assert_eq!(set.allocate(), Some(cidr("10.42.2.0/24")));
        // Extremes: the whole IPv4 space cut in /16s, and /32s.
        let mut wide = CidrSet::new(cidr("0.0.0.0/0"), 16).unwrap();
        assert_eq!(wide.subnet(65_535), cidr("255.255.0.0/16"));
        assert!(wide.occupy(cidr("255.255.255.255/32")));
        assert!(wide.used[65_535]);
        let mut hosts = CidrSet::new(cidr("10.0.0.0/30"), 32).unwrap();
        assert_eq!(hosts.allocate(), Some(cidr("10.0.0.0/32")));
        assert!(CidrSet::new(cidr("10.0.0.0/8"), 25).is_err());
        assert!(CidrSet::new(cidr("10.0.0.0/24"), 16).is_err());
    }

    fn node(store: &Store, name: &str, spec: Value) {
        store
            .create(
                "nodes",
                "",
                json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}, "spec": spec}),
            )
            .unwrap();
    }

    fn cidr_of(store: &Store, name: &str) -> Value {
        let node = store.get("nodes", "", name).unwrap();
        assert_eq!(node["spec"]["podCIDRs"], json!([node["spec"]["podCIDR"]]));
        node["spec"]["podCIDR"].clone()
    }

    #[test]
    fn nodes_get_cidrs_and_existing_ones_are_never_reused() {
        let store = Store::new();
        node(&store, "a", json!({}));
        node(&store, "b", json!({"taints": []}));
        let mut allocator = RangeAllocator::new(cidr("10.42.0.0/16"), 24).unwrap();
        allocator.pass(&store);
        assert_eq!(cidr_of(&store, "a"), "10.42.0.0/24");
        assert_eq!(cidr_of(&store, "b"), "10.42.1.0/24");
        // Idempotent: nothing changes on another pass.
        let version = store.get("nodes", "", "a").unwrap()["metadata"]["resourceVersion"].clone();
        allocator.pass(&store);
        assert_eq!(
            store.get("nodes", "", "a").unwrap()["metadata"]["resourceVersion"],
            version
        );

        // A restart: a new allocator over nodes that have CIDRs (one of them
        // set by hand, out of order) does not hand them out again.
        node(&store, "manual", json!({"podCIDR": "10.42.2.0/24"}));
        let mut restarted = RangeAllocator::new(cidr("10.42.0.0/16"), 24).unwrap();
        node(&store, "c", json!(null));
        restarted.pass(&store);
        assert_eq!(cidr_of(&store, "c"), "10.42.3.0/24");
        assert_eq!(
            store.get("nodes", "", "manual").unwrap()["spec"]["podCIDR"],
            "10.42.2.0/24"
        );
    }

    #[test]
    fn exhaustion_is_an_event_and_a_deleted_nodes_cidr_is_free_again() {
        let store = Store::new();
        let mut allocator = RangeAllocator::new(cidr("10.42.0.0/23"), 24).unwrap();
        for name in ["a", "b", "c"] {
            node(&store, name, json!({}));
        }
        allocator.pass(&store);
        allocator.pass(&store);
        assert_eq!(cidr_of(&store, "a"), "10.42.0.0/24");
        assert_eq!(cidr_of(&store, "b"), "10.42.1.0/24");
        assert!(
            store.get("nodes", "", "c").unwrap()["spec"]
                .get("podCIDR")
                .is_none()
        );
        let (events, _) = store.list("events", Some("default"), |_| true);
        assert_eq!(events.len(), 1);
        let event = &events[0];
        assert_eq!(event["reason"], "CIDRNotAvailable");
        assert_eq!(event["message"], "Node c status is now: CIDRNotAvailable");
        assert_eq!(event["source"]["component"], "cidrAllocator");
        assert_eq!(event["involvedObject"]["kind"], "Node");
        assert_eq!(event["involvedObject"]["name"], "c");
        assert_eq!(event["count"], 2);

        store.delete("nodes", "", "a", None, None).unwrap();
        allocator.pass(&store);
        assert_eq!(cidr_of(&store, "c"), "10.42.0.0/24");
    }

    #[test]
    fn malformed_nodes_are_skipped() {
        let store = Store::new();
        node(&store, "odd", json!("not an object"));
        node(
            &store,
            "v6",
            json!({"podCIDR": "fd00::/64", "podCIDRs": [7, "fd00::/64"]}),
        );
        node(&store, "bad", json!({"podCIDR": "nonsense"}));
        let mut allocator = RangeAllocator::new(cidr("10.42.0.0/16"), 24).unwrap();
        allocator.pass(&store);
        // A spec that is not an object is replaced by one with the CIDR.
        assert_eq!(cidr_of(&store, "odd"), "10.42.0.0/24");
        assert_eq!(
            store.get("nodes", "", "v6").unwrap()["spec"]["podCIDR"],
            "fd00::/64"
        );
        assert_eq!(
            store.get("nodes", "", "bad").unwrap()["spec"]["podCIDR"],
            "nonsense"
        );
    }
}
