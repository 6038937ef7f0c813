//! armlet's pod network: what k3s's flannel CNI chain (bridge, host-local
//! IPAM, masquerade) gives each pod, done in-process over netlink.
//!
//! - The node: a bridge (`cni0`) holding the gateway address, the first host
//!   of the node's pod CIDR; IPv4 forwarding on; an nftables table `ip
//!   armlet` that masquerades pod traffic leaving the cluster CIDR, as
//!   flannel's rules do, and accepts pod traffic in the forward hook.
//! - Each pod: an address from the pod CIDR, recorded on disk so it survives
//!   restarts; a veth pair, the host end (named from the pod uid) a port of
//!   the bridge, the other end `eth0` in the pod's network namespace with the
//!   address, and a default route through the gateway.
//!
//! Everything is blocking and synchronous (the agent calls it from
//! `spawn_blocking`). The node is configured in the network namespace of the
//! calling thread; a pod's namespace is entered on a short-lived thread of
//! its own, never by forking.
//!
//! ```no_run
//! use std::path::Path;
//! use armlet_net::{DEFAULT_BRIDGE, DEFAULT_MTU, NetworkConfig, PodNetwork};
//!
//! let network = PodNetwork::open(NetworkConfig {
//!     bridge: DEFAULT_BRIDGE.into(),
//!     pod_cidr: "10.42.3.0/24".parse()?,
//!     cluster_cidr: vec!["10.42.0.0/16".parse()?],
//!     state_dir: "/var/lib/armlet/ipam".into(),
//!     mtu: DEFAULT_MTU,
//! })?;
//! network.ensure_node()?;
//! let pod = network.attach("6f0c5a3e-1b2d-4c5e-8f90-123456789abc", Path::new("/run/netns/pod"))?;
//! println!("{}/{} via {} on {}", pod.ip, pod.prefix, pod.gateway, pod.host_veth);
//! network.detach("6f0c5a3e-1b2d-4c5e-8f90-123456789abc")?;
//! # Ok::<(), armlet_net::NetError>(())
//! ```

mod cidr;
mod ipam;
mod link;
mod nft;
mod nl;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

pub use cidr::Ipv4Cidr;
pub use nft::NftRule;

use ipam::Ipam;
use link::{DefaultRoute, Link, LinkChange, Rtnl, in_netns};

/// The bridge k3s's flannel CNI configuration uses.
pub const DEFAULT_BRIDGE: &str = "cni0";
/// The MTU of pod interfaces over flannel's VXLAN (1500 less 50 bytes of
/// encapsulation).
pub const DEFAULT_MTU: u32 = 1450;
/// The interface name of a pod's end of its veth pair.
const POD_IFNAME: &str = "eth0";
/// Longest interface name the kernel takes (IFNAMSIZ less the NUL).
const MAX_IFNAME: usize = 15;
/// Longest pod uid taken (Kubernetes uses 36-character UUIDs, static pods
/// 32 hex digits).
const MAX_UID: usize = 128;
/// Where the calling thread's network namespace keeps IPv4 forwarding: files
/// under /proc/sys/net belong to the namespace of the thread opening them.
const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

/// What can go wrong configuring the pod network.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetError {
    /// A string that is not an IPv4 network in CIDR notation.
    #[error("invalid CIDR {input:?}: {reason}")]
    InvalidCidr {
        /// What was given.
        input: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A [`NetworkConfig`] that cannot work.
    #[error("invalid network configuration: {0}")]
    InvalidConfig(String),
    /// A pod uid armlet will not use in a file or an interface alias.
    #[error("invalid pod uid {uid:?}: {reason}")]
    InvalidPodUid {
        /// What was given.
        uid: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Every pod address of the pod CIDR is taken.
    #[error("no free pod address left in {cidr} ({in_use} in use)")]
    Exhausted {
        /// The node's pod CIDR.
        cidr: Ipv4Cidr,
        /// How many pods hold an address.
        in_use: usize,
    },
    /// Reading or writing the address records failed.
    #[error("pod address records at {}: {source}", path.display())]
    State {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// A netlink request (rtnetlink or nftables) failed.
    #[error("{op}: {source}{}", detail_suffix(.detail))]
    Netlink {
        /// What was being done.
        op: String,
        /// The kernel's errno.
        source: io::Error,
        /// The kernel's explanation (extended ack), when it gave one.
        detail: Option<String>,
    },
    /// A pod's network namespace could not be opened or entered.
    #[error("network namespace {what}: {source}")]
    Namespace {
        /// The namespace (its path, and the pod).
        what: String,
        /// The error.
        source: io::Error,
    },
    /// Turning IPv4 forwarding on failed.
    #[error("sysctl {}: {source}", path.display())]
    Sysctl {
        /// The /proc/sys file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The bridge is missing: [`PodNetwork::ensure_node`] has not run (or
    /// someone deleted it).
    #[error("bridge {0} does not exist: PodNetwork::ensure_node must run first")]
    NoBridge(String),
    /// The bridge's name is taken by another kind of interface.
    #[error("interface {name} exists but is a {kind}, not a bridge")]
    NotABridge {
        /// The interface.
        name: String,
        /// Its kind ("veth", "dummy", or "device" for hardware).
        kind: String,
    },
    /// Two pod uids hash to the same host veth name (32 bits of hash: about
    /// one chance in a million with 100 pods on the node).
    #[error("host veth {name} belongs to pod {owner}, and pod {uid} hashes to the same name")]
    VethCollision {
        /// The interface name.
        name: String,
        /// The pod it belongs to.
        owner: String,
        /// The pod being attached.
        uid: String,
    },
    /// An interface vanished while armlet configured it.
    #[error("interface {0} vanished while being configured")]
    Vanished(String),
    /// The thread working inside a pod's network namespace panicked.
    #[error("the thread configuring network namespace {0} panicked")]
    Worker(String),
}

fn detail_suffix(detail: &Option<String>) -> String {
    detail
        .as_deref()
        .map(|d| format!(" ({d})"))
        .unwrap_or_default()
}

/// How the node's pod network is laid out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkConfig {
    /// The bridge pods are attached to ([`DEFAULT_BRIDGE`], `cni0`, as k3s).
    pub bridge: String,
    /// The node's `spec.podCIDR`, e.g. `10.42.3.0/24`. Its first host is the
    /// gateway (the bridge's address); pods get the ones after it.
    pub pod_cidr: Ipv4Cidr,
    /// The cluster CIDRs (k3s: `10.42.0.0/16`): traffic from pods to these
    /// keeps its pod source address, everything else leaving the node is
    /// masqueraded.
    pub cluster_cidr: Vec<Ipv4Cidr>,
    /// Where address records are kept; on persistent storage, so pods keep
    /// their addresses across agent restarts and reboots.
    pub state_dir: PathBuf,
    /// The MTU of the bridge and of both ends of every pod's veth pair
    /// ([`DEFAULT_MTU`] under flannel's VXLAN).
    pub mtu: u32,
}

/// The network a pod was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodAddress {
    /// The pod's address, on its `eth0`.
    pub ip: Ipv4Addr,
    /// The prefix length of the pod CIDR.
    pub prefix: u8,
    /// The pod's default gateway: the bridge's address.
    pub gateway: Ipv4Addr,
    /// The host end of the pod's veth pair.
    pub host_veth: String,
}

/// The node's pod network: its configuration and its address records.
///
/// Safe to share between threads: the operations that change the network
/// take turns on one lock, so two attaches never pick the same address and
/// an attach never interleaves with a detach of the same pod. Each takes
/// milliseconds; pods start seconds apart.
#[derive(Debug)]
pub struct PodNetwork {
    config: NetworkConfig,
    gateway: Ipv4Addr,
    ipam: Mutex<Ipam>,
}

impl PodNetwork {
    /// Checks `config` and loads the address records of its `state_dir`
    /// (created if missing; records outside the pod CIDR are dropped).
    /// Touches no network.
    pub fn open(config: NetworkConfig) -> Result<Self, NetError> {
        check_ifname(&config.bridge)?;
        let invalid = NetError::InvalidConfig;
        config
            .pod_cidr
            .check()
            .map_err(|reason| invalid(format!("pod CIDR {}: {reason}", config.pod_cidr)))?;
        if config.pod_cidr.prefix > 30 {
            return Err(invalid(format!(
                "pod CIDR {} leaves no address for a pod next to the gateway (at most /30)",
                config.pod_cidr
            )));
        }
        for cidr in &config.cluster_cidr {
            cidr.check()
                .map_err(|reason| invalid(format!("cluster CIDR {cidr}: {reason}")))?;
        }
        if !(68..=65535).contains(&config.mtu) {
            return Err(invalid(format!(
                "MTU {} is outside 68 to 65535",
                config.mtu
            )));
        }
        if !config
            .cluster_cidr
            .iter()
            .any(|c| c.contains_cidr(&config.pod_cidr))
        {
            tracing::warn!(
                pod_cidr = %config.pod_cidr,
                "the pod CIDR is in no cluster CIDR: traffic to other nodes' pods will be masqueraded"
            );
        }
        let gateway = Ipv4Addr::from(u32::from(config.pod_cidr.network()) + 1);
        let ipam = Ipam::open(&config.state_dir, config.pod_cidr)?;
        Ok(PodNetwork {
            config,
            gateway,
            ipam: Mutex::new(ipam),
        })
    }

    /// The configuration this network was opened with.
    pub fn config(&self) -> &NetworkConfig {
        &self.config
    }

    /// The pods' gateway: the first host of the pod CIDR, on the bridge.
    pub fn gateway(&self) -> Ipv4Addr {
        self.gateway
    }

    fn lock(&self) -> MutexGuard<'_, Ipam> {
        // A panic elsewhere cannot leave the records half-changed (each is
        // written to disk before memory is updated), so carry on.
        self.ipam.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sets up the node side, in the calling thread's network namespace:
    /// IPv4 forwarding on; the bridge present, up, with the gateway address
    /// (any other IPv4 address removed, as after a pod CIDR change) and the
    /// MTU; table `ip armlet` holding exactly the masquerade and forward
    /// rules (replaced atomically). Safe to run again at any time.
    pub fn ensure_node(&self) -> Result<(), NetError> {
        let _guard = self.lock();
        enable_ip_forward()?;
        let mut rtnl = Rtnl::open()?;
        let name = &self.config.bridge;
        let bridge = match rtnl.link_by_name(name)? {
            Some(link) => link,
            None => {
                tracing::info!(bridge = %name, "creating the pod bridge");
                rtnl.add_bridge(name, self.config.mtu)?;
                rtnl.link_by_name(name)?
                    .ok_or_else(|| NetError::Vanished(name.clone()))?
            }
        };
        check_bridge(&bridge)?;
        if bridge.mtu != self.config.mtu {
            rtnl.set_link(
                &bridge,
                &LinkChange {
                    mtu: Some(self.config.mtu),
                    ..LinkChange::default()
                },
            )?;
        }
        let prefix = self.config.pod_cidr.prefix;
        let addresses = rtnl.addresses(bridge.index)?;
        for &(ip, len) in &addresses {
            if (ip, len) != (self.gateway, prefix) {
                tracing::warn!(bridge = %name, address = %format!("{ip}/{len}"), "removing a stale bridge address");
                rtnl.del_address(&bridge, ip, len)?;
            }
        }
        if !addresses.contains(&(self.gateway, prefix)) {
            rtnl.add_address(&bridge, self.gateway, prefix)?;
        }
        if !bridge.up {
            rtnl.set_link(
                &bridge,
                &LinkChange {
                    up: Some(true),
                    ..LinkChange::default()
                },
            )?;
        }
        nft::replace_table(&nft::Ruleset {
            pod_cidr: self.config.pod_cidr,
            cluster_cidrs: &self.config.cluster_cidr,
        })?;
        tracing::debug!(bridge = %name, gateway = %self.gateway, "node network ready");
        Ok(())
    }

    /// Gives pod `pod_uid` its network inside the namespace bound at `netns`
    /// (a bind-mounted namespace file such as `/run/netns/<id>`): its address
    /// (the recorded one, else a new one), a veth pair whose host end is a
    /// port of the bridge and whose other end is `eth0` in the pod with the
    /// address, the MTU and a default route via the gateway; `lo` up.
    ///
    /// Idempotent: whatever is already right is left alone, a half-made
    /// pair is rebuilt. The address stays recorded if attaching fails, so a
    /// retry gets the same one; [`PodNetwork::detach`] or
    /// [`PodNetwork::release_except`] frees it.
    pub fn attach(&self, pod_uid: &str, netns: &Path) -> Result<PodAddress, NetError> {
        check_uid(pod_uid)?;
        let what = format!("{} (pod {pod_uid})", netns.display());
        let ns = File::open(netns).map_err(|source| NetError::Namespace {
            what: what.clone(),
            source,
        })?;
        let mut ipam = self.lock();
        let mut rtnl = Rtnl::open()?;
        let bridge = rtnl
            .link_by_name(&self.config.bridge)?
            .ok_or_else(|| NetError::NoBridge(self.config.bridge.clone()))?;
        check_bridge(&bridge)?;
        let ip = ipam.allocate(pod_uid)?;
        let mtu = self.config.mtu;

        let name = host_veth_name(pod_uid);
        let mut host = rtnl.link_by_name(&name)?;
        if let Some(link) = &host {
            let keep = match link.alias.as_deref() {
                Some(owner) if owner != pod_uid => {
                    return Err(NetError::VethCollision {
                        name,
                        owner: owner.to_owned(),
                        uid: pod_uid.to_owned(),
                    });
                }
                // Ours and complete on the host side: is its peer this
                // namespace's eth0 (not that of a namespace since replaced)?
                Some(_) => {
                    let eth0 = in_netns(&ns, &what, || Rtnl::open()?.link_by_name(POD_IFNAME))?;
                    eth0.is_some_and(|eth0| {
                        eth0.peer == Some(link.index) && link.peer == Some(eth0.index)
                    })
                }
                // No alias: an attach stopped before finishing the host side.
                None => false,
            };
            if !keep {
                tracing::info!(veth = %name, pod = %pod_uid, "replacing a stale or half-made veth pair");
                rtnl.del_link(link)?;
                host = None;
            }
        }
        let host = match host {
            Some(link) => link,
            None => {
                // An eth0 left in the pod (not the peer of our host end, which
                // is gone) would make the creation fail.
                in_netns(&ns, &what, || {
                    let mut rtnl = Rtnl::open()?;
                    if let Some(stale) = rtnl.link_by_name(POD_IFNAME)? {
                        tracing::info!(pod = %pod_uid, "removing a stale eth0 from the pod");
                        rtnl.del_link(&stale)?;
                    }
                    Ok(())
                })?;
                rtnl.add_veth(&name, mtu, POD_IFNAME, &ns)?;
                rtnl.link_by_name(&name)?
                    .ok_or_else(|| NetError::Vanished(name.clone()))?
            }
        };

        let enslave = host.master != Some(bridge.index);
        let change = LinkChange {
            up: (!host.up).then_some(true),
            mtu: (host.mtu != mtu).then_some(mtu),
            master: enslave.then_some(bridge.index),
            alias: None,
        };
        if change.up.is_some() || change.mtu.is_some() || change.master.is_some() {
            rtnl.set_link(&host, &change)?;
        }
        if enslave {
            rtnl.set_hairpin(&host)?;
        }
        // The alias last: it marks the host side finished (see above).
        if host.alias.as_deref() != Some(pod_uid) {
            rtnl.set_link(
                &host,
                &LinkChange {
                    alias: Some(pod_uid),
                    ..LinkChange::default()
                },
            )?;
        }

        let prefix = self.config.pod_cidr.prefix;
        let gateway = self.gateway;
        in_netns(&ns, &what, || configure_pod(ip, prefix, gateway, mtu))?;
        drop(ipam);
        tracing::debug!(pod = %pod_uid, %ip, veth = %name, "pod network attached");
        Ok(PodAddress {
            ip,
            prefix,
            gateway,
            host_veth: name,
        })
    }

    /// Takes pod `pod_uid` off the network: deletes its veth pair if it is
    /// still there and frees its address. Idempotent.
    pub fn detach(&self, pod_uid: &str) -> Result<(), NetError> {
        check_uid(pod_uid)?;
        let mut ipam = self.lock();
        let mut rtnl = Rtnl::open()?;
        delete_host_veth(&mut rtnl, pod_uid)?;
        if let Some(ip) = ipam.release(pod_uid)? {
            tracing::debug!(pod = %pod_uid, %ip, "pod network detached");
        }
        Ok(())
    }

    /// The recorded addresses, by pod uid.
    pub fn allocations(&self) -> BTreeMap<String, Ipv4Addr> {
        self.lock().allocations()
    }

    /// Frees the network of every pod not in `live`: for after a restart,
    /// when pods went away unseen. Releases their addresses, deletes their
    /// veth pairs, and deletes any pod veth on the bridge whose pod is
    /// neither live nor recorded. Returns the uids released, sorted.
    pub fn release_except(&self, live: &BTreeSet<String>) -> Result<Vec<String>, NetError> {
        let mut ipam = self.lock();
        let mut rtnl = Rtnl::open()?;
        let mut released = BTreeSet::new();
        for uid in ipam.allocations().into_keys() {
            if live.contains(&uid) {
                continue;
            }
            delete_host_veth(&mut rtnl, &uid)?;
            ipam.release(&uid)?;
            released.insert(uid);
        }
        if let Some(bridge) = rtnl.link_by_name(&self.config.bridge)? {
            for link in rtnl.links()? {
                let Some(owner) = link.alias.as_deref() else {
                    continue;
                };
                let ours = link.master == Some(bridge.index)
                    && link.kind.as_deref() == Some("veth")
                    && link.name == host_veth_name(owner);
                if ours && !live.contains(owner) {
                    tracing::info!(veth = %link.name, pod = %owner, "deleting the veth of a gone pod");
                    rtnl.del_link(&link)?;
                    released.insert(owner.to_owned());
                }
            }
        }
        if !released.is_empty() {
            tracing::info!(count = released.len(), "released the network of gone pods");
        }
        Ok(released.into_iter().collect())
    }

    /// The rules of table `ip armlet` in the calling thread's network
    /// namespace, as the kernel holds them (for diagnostics and tests).
    pub fn nft_rules(&self) -> Result<Vec<NftRule>, NetError> {
        nft::list_rules()
    }
}

/// Deletes the host veth of `uid` if it is there and is the pod's (not that
/// of another pod whose uid hashes to the same name).
fn delete_host_veth(rtnl: &mut Rtnl, uid: &str) -> Result<(), NetError> {
    let name = host_veth_name(uid);
    if let Some(link) = rtnl.link_by_name(&name)? {
        if link.alias.as_deref().is_none_or(|owner| owner == uid) {
            rtnl.del_link(&link)?;
        }
    }
    Ok(())
}

/// Configures the pod's side; runs inside the pod's network namespace.
fn configure_pod(ip: Ipv4Addr, prefix: u8, gateway: Ipv4Addr, mtu: u32) -> Result<(), NetError> {
    let mut rtnl = Rtnl::open()?;
    let up = LinkChange {
        up: Some(true),
        ..LinkChange::default()
    };
    if let Some(lo) = rtnl.link_by_name("lo")? {
        if !lo.up {
            rtnl.set_link(&lo, &up)?;
        }
    }
    let eth0 = rtnl
        .link_by_name(POD_IFNAME)?
        .ok_or_else(|| NetError::Vanished(POD_IFNAME.into()))?;
    if eth0.mtu != mtu {
        rtnl.set_link(
            &eth0,
            &LinkChange {
                mtu: Some(mtu),
                ..LinkChange::default()
            },
        )?;
    }
    let addresses = rtnl.addresses(eth0.index)?;
    for &(other, len) in addresses.iter().filter(|a| **a != (ip, prefix)) {
        rtnl.del_address(&eth0, other, len)?;
    }
    if !addresses.contains(&(ip, prefix)) {
        rtnl.add_address(&eth0, ip, prefix)?;
    }
    // Up before the route: the kernel refuses a gateway on a down link.
    if !eth0.up {
        rtnl.set_link(&eth0, &up)?;
    }
    let wanted = DefaultRoute {
        gateway: Some(gateway),
        oif: Some(eth0.index),
    };
    if rtnl.default_route()? != Some(wanted) {
        rtnl.replace_default_route(&eth0, gateway)?;
    }
    Ok(())
}

fn check_bridge(link: &Link) -> Result<(), NetError> {
    match link.kind.as_deref() {
        Some("bridge") => Ok(()),
        kind => Err(NetError::NotABridge {
            name: link.name.clone(),
            kind: kind.unwrap_or("device").to_owned(),
        }),
    }
}

/// Turns IPv4 forwarding on in the calling thread's network namespace.
fn enable_ip_forward() -> Result<(), NetError> {
    let path = Path::new(IP_FORWARD);
    let error = |source| NetError::Sysctl {
        path: path.to_owned(),
        source,
    };
    if fs::read_to_string(path).map_err(error)?.trim() != "1" {
        fs::write(path, "1").map_err(error)?;
    }
    Ok(())
}

/// The host end's name for a pod: "veth" and 8 hex digits of a hash of the
/// uid, so a restarted agent finds it again. FNV-1a rather than std's
/// hasher, whose output may change between Rust releases.
fn host_veth_name(uid: &str) -> String {
    let hash = uid.bytes().fold(0x811c_9dc5_u32, |hash, byte| {
        (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
    });
    format!("veth{hash:08x}")
}

/// Pod uids end up in file contents and interface aliases: keep them to
/// what Kubernetes produces.
pub(crate) fn check_uid(uid: &str) -> Result<(), NetError> {
    let invalid = |reason| NetError::InvalidPodUid {
        uid: uid.to_owned(),
        reason,
    };
    if uid.is_empty() {
        return Err(invalid("it is empty"));
    }
    if uid.len() > MAX_UID {
        return Err(invalid("it is over 128 bytes"));
    }
    if !uid
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(invalid(
            "only letters, digits, '-', '_' and '.' are allowed",
        ));
    }
    Ok(())
}

fn check_ifname(name: &str) -> Result<(), NetError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_IFNAME
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'/' && b != b':');
    if ok {
        Ok(())
    } else {
        Err(NetError::InvalidConfig(format!(
            "{name:?} is not a valid interface name (1 to 15 printable characters, no '/' or ':')"
        )))
    }
}

#[cfg(test)]
mod tests;
