//! rtnetlink requests (links, addresses, routes) on the typed messages of
//! `netlink-packet-route`, sent over [`crate::nl::NlSocket`].
//!
//! Every function works in the network namespace of the calling thread (that
//! is where the socket is opened); `in_netns` runs a closure in another one.

use std::fs::File;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;

use netlink_packet_core::{
    DefaultNla, NLA_F_NESTED, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use nix::errno::Errno;
use nix::sched::{CloneFlags, setns};

use crate::NetError;
use crate::nl::{NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NlError, NlSocket};

const NLM_F_REPLACE: u16 = 0x100;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const IFLA_PROTINFO: u16 = 12;
const IFLA_BRPORT_MODE: u16 = 4;

/// What armlet needs to know of a network interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Link {
    pub index: u32,
    pub name: String,
    /// The rtnetlink kind ("bridge", "veth"), if the link has one.
    pub kind: Option<String>,
    pub up: bool,
    pub mtu: u32,
    /// The index of the bridge the link is a port of.
    pub master: Option<u32>,
    /// IFLA_IFALIAS: armlet writes the pod uid on a pod's host veth.
    pub alias: Option<String>,
    /// IFLA_LINK: for a veth, the peer's index (in the peer's namespace).
    pub peer: Option<u32>,
}

impl Link {
    fn from_message(msg: &LinkMessage) -> Self {
        let mut link = Link {
            index: msg.header.index,
            name: String::new(),
            kind: None,
            up: msg.header.flags.contains(LinkFlags::Up),
            mtu: 0,
            master: None,
            alias: None,
            peer: None,
        };
        for attr in &msg.attributes {
            match attr {
                LinkAttribute::IfName(name) => link.name.clone_from(name),
                LinkAttribute::Mtu(mtu) => link.mtu = *mtu,
                LinkAttribute::Controller(index) => link.master = Some(*index),
                LinkAttribute::IfAlias(alias) if !alias.is_empty() => {
                    link.alias = Some(alias.clone());
                }
                LinkAttribute::Link(index) => link.peer = Some(*index),
                LinkAttribute::LinkInfo(infos) => {
                    for info in infos {
                        if let LinkInfo::Kind(kind) = info {
                            link.kind = Some(kind.to_string());
                        }
                    }
                }
                _ => {}
            }
        }
        link
    }
}

/// The IPv4 default route of the main table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DefaultRoute {
    pub gateway: Option<Ipv4Addr>,
    /// The output link's index.
    pub oif: Option<u32>,
}

/// Changes to apply to an existing link; `None` leaves a property alone.
#[derive(Debug, Default)]
pub(crate) struct LinkChange<'a> {
    pub up: Option<bool>,
    pub mtu: Option<u32>,
    pub master: Option<u32>,
    pub alias: Option<&'a str>,
}

/// An rtnetlink socket in the calling thread's network namespace.
pub(crate) struct Rtnl {
    socket: NlSocket,
}

impl Rtnl {
    /// Opens an rtnetlink socket in the calling thread's network namespace.
    pub fn open() -> Result<Self, NetError> {
        let socket = NlSocket::open(netlink_sys::protocols::NETLINK_ROUTE).map_err(|source| {
            NetError::Netlink {
                op: "open an rtnetlink socket".into(),
                source,
                detail: None,
            }
        })?;
        Ok(Rtnl { socket })
    }

    /// Sends `msg` and returns the parsed replies.
    fn request(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<Vec<RouteNetlinkMessage>, NlError> {
        let seq = self.socket.next_seq();
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        header.sequence_number = seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
        packet.finalize();
        let mut bytes = vec![0; packet.buffer_len()];
        packet.serialize(&mut bytes);
        let mut out = Vec::new();
        for reply in self.socket.request(&bytes, seq)? {
            match NetlinkMessage::<RouteNetlinkMessage>::deserialize(&reply) {
                Ok(NetlinkMessage {
                    payload: NetlinkPayload::InnerMessage(inner),
                    ..
                }) => out.push(inner),
                Ok(_) => {}
                // One entry of a dump this crate cannot parse (a newer kernel's
                // attribute, say) must not hide all the others.
                Err(err) => tracing::debug!(%err, "skipping an unparsable rtnetlink reply"),
            }
        }
        Ok(out)
    }

    /// A request that only needs an acknowledgement.
    fn execute(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
        op: impl FnOnce() -> String,
    ) -> Result<(), NetError> {
        self.request(msg, NLM_F_REQUEST | NLM_F_ACK | flags)
            .map(drop)
            .map_err(|err| netlink_error(op(), err))
    }

    /// The link called `name`, if there is one.
    pub fn link_by_name(&mut self, name: &str) -> Result<Option<Link>, NetError> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_owned()));
        match self.request(RouteNetlinkMessage::GetLink(msg), NLM_F_REQUEST | NLM_F_ACK) {
            Ok(replies) => Ok(replies.iter().find_map(|reply| match reply {
                RouteNetlinkMessage::NewLink(link) => Some(Link::from_message(link)),
                _ => None,
            })),
            Err(err) if err.errno == libc::ENODEV => Ok(None),
            Err(err) => Err(netlink_error(format!("look up link {name}"), err)),
        }
    }

    /// Every link of the namespace.
    pub fn links(&mut self) -> Result<Vec<Link>, NetError> {
        let replies = self
            .request(
                RouteNetlinkMessage::GetLink(LinkMessage::default()),
                NLM_F_REQUEST | NLM_F_DUMP,
            )
            .map_err(|err| netlink_error("list links".into(), err))?;
        Ok(replies
            .iter()
            .filter_map(|reply| match reply {
                RouteNetlinkMessage::NewLink(link) => Some(Link::from_message(link)),
                _ => None,
            })
            .collect())
    }

    /// Creates a bridge (down, as the kernel creates every link).
    pub fn add_bridge(&mut self, name: &str, mtu: u32) -> Result<(), NetError> {
        let mut msg = LinkMessage::default();
        msg.attributes = vec![
            LinkAttribute::IfName(name.to_owned()),
            LinkAttribute::Mtu(mtu),
            LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Bridge)]),
        ];
        self.execute(
            RouteNetlinkMessage::NewLink(msg),
            NLM_F_CREATE | NLM_F_EXCL,
            || format!("create bridge {name}"),
        )
    }

    /// Creates a veth pair: `name` here, `peer_name` directly inside the
    /// namespace `peer_netns`, so the peer's name never clashes with a link
    /// of this namespace.
    pub fn add_veth(
        &mut self,
        name: &str,
        mtu: u32,
        peer_name: &str,
        peer_netns: &File,
    ) -> Result<(), NetError> {
        let mut peer = LinkMessage::default();
        peer.attributes = vec![
            LinkAttribute::IfName(peer_name.to_owned()),
            LinkAttribute::Mtu(mtu),
            LinkAttribute::NetNsFd(peer_netns.as_raw_fd()),
        ];
        let mut msg = LinkMessage::default();
        msg.attributes = vec![
            LinkAttribute::IfName(name.to_owned()),
            LinkAttribute::Mtu(mtu),
            LinkAttribute::LinkInfo(vec![
                LinkInfo::Kind(InfoKind::Veth),
                LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
            ]),
        ];
        self.execute(
            RouteNetlinkMessage::NewLink(msg),
            NLM_F_CREATE | NLM_F_EXCL,
            || format!("create veth pair {name} / {peer_name}"),
        )
    }

    /// Applies `change` to the link `link`.
    pub fn set_link(&mut self, link: &Link, change: &LinkChange<'_>) -> Result<(), NetError> {
        let mut msg = LinkMessage::default();
        msg.header.index = link.index;
        if let Some(up) = change.up {
            msg.header.change_mask = LinkFlags::Up;
            if up {
                msg.header.flags = LinkFlags::Up;
            }
        }
        if let Some(mtu) = change.mtu {
            msg.attributes.push(LinkAttribute::Mtu(mtu));
        }
        if let Some(master) = change.master {
            msg.attributes.push(LinkAttribute::Controller(master));
        }
        if let Some(alias) = change.alias {
            msg.attributes
                .push(LinkAttribute::IfAlias(alias.to_owned()));
        }
        self.execute(RouteNetlinkMessage::SetLink(msg), 0, || {
            format!("configure link {} ({change:?})", link.name)
        })
    }

    /// Turns hairpin mode on for a bridge port, as k3s's flannel CNI
    /// configuration does (`hairpinMode: true`): a pod reaching a Service
    /// that load-balances back to itself gets its packets reflected.
    pub fn set_hairpin(&mut self, link: &Link) -> Result<(), NetError> {
        let mut msg = LinkMessage::default();
        msg.header.interface_family = AddressFamily::Bridge;
        msg.header.index = link.index;
        // IFLA_PROTINFO { IFLA_BRPORT_MODE: u8 = 1 }: the bridge only reads
        // it as a nested attribute when NLA_F_NESTED is set, which the typed
        // attribute does not set, hence the raw bytes.
        let mut mode = Vec::with_capacity(8);
        mode.extend_from_slice(&5u16.to_ne_bytes());
        mode.extend_from_slice(&IFLA_BRPORT_MODE.to_ne_bytes());
        mode.extend_from_slice(&[1, 0, 0, 0]);
        msg.attributes.push(LinkAttribute::Other(DefaultNla::new(
            IFLA_PROTINFO | NLA_F_NESTED,
            mode,
        )));
        self.execute(RouteNetlinkMessage::SetLink(msg), 0, || {
            format!("turn hairpin mode on for {}", link.name)
        })
    }

    /// Deletes a link (both ends, for a veth).
    pub fn del_link(&mut self, link: &Link) -> Result<(), NetError> {
        let mut msg = LinkMessage::default();
        msg.header.index = link.index;
        match self.request(RouteNetlinkMessage::DelLink(msg), NLM_F_REQUEST | NLM_F_ACK) {
            // Already gone (its pod's namespace went away meanwhile).
            Err(err) if err.errno == libc::ENODEV => Ok(()),
            other => other
                .map(drop)
                .map_err(|err| netlink_error(format!("delete link {}", link.name), err)),
        }
    }

    /// The IPv4 addresses (address, prefix length) of link `index`.
    pub fn addresses(&mut self, index: u32) -> Result<Vec<(Ipv4Addr, u8)>, NetError> {
        let mut msg = AddressMessage::default();
        msg.header.family = AddressFamily::Inet;
        let replies = self
            .request(
                RouteNetlinkMessage::GetAddress(msg),
                NLM_F_REQUEST | NLM_F_DUMP,
            )
            .map_err(|err| netlink_error("list addresses".into(), err))?;
        let mut out = Vec::new();
        for reply in &replies {
            let RouteNetlinkMessage::NewAddress(addr) = reply else {
                continue;
            };
            if addr.header.index != index || addr.header.family != AddressFamily::Inet {
                continue;
            }
            // IFA_LOCAL is the interface's own address (IFA_ADDRESS is the
            // peer's on point-to-point links).
            let local = addr.attributes.iter().find_map(|a| match a {
                AddressAttribute::Local(IpAddr::V4(ip)) => Some(*ip),
                _ => None,
            });
            let address = addr.attributes.iter().find_map(|a| match a {
                AddressAttribute::Address(IpAddr::V4(ip)) => Some(*ip),
                _ => None,
            });
            if let Some(ip) = local.or(address) {
                out.push((ip, addr.header.prefix_len));
            }
        }
        Ok(out)
    }

    fn address_message(index: u32, ip: Ipv4Addr, prefix: u8) -> AddressMessage {
        let mut msg = AddressMessage::default();
        msg.header.family = AddressFamily::Inet;
        msg.header.prefix_len = prefix;
        msg.header.index = index;
        msg.attributes.push(AddressAttribute::Local(IpAddr::V4(ip)));
        msg.attributes
            .push(AddressAttribute::Address(IpAddr::V4(ip)));
        if prefix < 31 {
            let host_mask = u32::MAX.checked_shr(u32::from(prefix)).unwrap_or(0);
            let broadcast = Ipv4Addr::from(u32::from(ip) | host_mask);
            msg.attributes.push(AddressAttribute::Broadcast(broadcast));
        }
        msg
    }

    /// Adds `ip/prefix` to link `link`.
    pub fn add_address(&mut self, link: &Link, ip: Ipv4Addr, prefix: u8) -> Result<(), NetError> {
        let msg = Self::address_message(link.index, ip, prefix);
        self.execute(
            RouteNetlinkMessage::NewAddress(msg),
            NLM_F_CREATE | NLM_F_REPLACE,
            || format!("add address {ip}/{prefix} to {}", link.name),
        )
    }

    /// Removes `ip/prefix` from link `link`.
    pub fn del_address(&mut self, link: &Link, ip: Ipv4Addr, prefix: u8) -> Result<(), NetError> {
        let msg = Self::address_message(link.index, ip, prefix);
        self.execute(RouteNetlinkMessage::DelAddress(msg), 0, || {
            format!("remove address {ip}/{prefix} from {}", link.name)
        })
    }

    /// The IPv4 default route of the main table: (gateway, output link).
    pub fn default_route(&mut self) -> Result<Option<DefaultRoute>, NetError> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = AddressFamily::Inet;
        let replies = self
            .request(
                RouteNetlinkMessage::GetRoute(msg),
                NLM_F_REQUEST | NLM_F_DUMP,
            )
            .map_err(|err| netlink_error("list routes".into(), err))?;
        for reply in &replies {
            let RouteNetlinkMessage::NewRoute(route) = reply else {
                continue;
            };
            let table = route
                .attributes
                .iter()
                .find_map(|a| match a {
                    RouteAttribute::Table(t) => Some(*t),
                    _ => None,
                })
                .unwrap_or(u32::from(route.header.table));
            if table != u32::from(RouteHeader::RT_TABLE_MAIN)
                || route.header.destination_prefix_length != 0
                || route.header.address_family != AddressFamily::Inet
            {
                continue;
            }
            let gateway = route.attributes.iter().find_map(|a| match a {
                RouteAttribute::Gateway(RouteAddress::Inet(ip)) => Some(*ip),
                _ => None,
            });
            let oif = route.attributes.iter().find_map(|a| match a {
                RouteAttribute::Oif(index) => Some(*index),
                _ => None,
            });
            return Ok(Some(DefaultRoute { gateway, oif }));
        }
        Ok(None)
    }

    /// Sets the IPv4 default route to `gateway` through link `link`,
    /// replacing any other.
    pub fn replace_default_route(
        &mut self,
        link: &Link,
        gateway: Ipv4Addr,
    ) -> Result<(), NetError> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = AddressFamily::Inet;
        msg.header.table = RouteHeader::RT_TABLE_MAIN;
        msg.header.protocol = RouteProtocol::Boot;
        msg.header.scope = RouteScope::Universe;
        msg.header.kind = RouteType::Unicast;
        msg.attributes
            .push(RouteAttribute::Gateway(RouteAddress::Inet(gateway)));
        msg.attributes.push(RouteAttribute::Oif(link.index));
        self.execute(
            RouteNetlinkMessage::NewRoute(msg),
            NLM_F_CREATE | NLM_F_REPLACE,
            || format!("set default route via {gateway} dev {}", link.name),
        )
    }
}

fn netlink_error(op: String, err: NlError) -> NetError {
    NetError::Netlink {
        op,
        source: io::Error::from_raw_os_error(err.errno),
        detail: err.message,
    }
}

/// Runs `f` on a short-lived thread that joined the network namespace
/// `netns` (an open `/proc/<pid>/ns/net` or a bind mount of one).
///
/// Namespaces belong to threads: joining one on a thread of our own leaves
/// the caller (and the process) where they were, and nothing forks. The
/// thread ends with `f`, so nothing else ever runs in the pod's namespace.
pub(crate) fn in_netns<T: Send>(
    netns: &File,
    what: &str,
    f: impl FnOnce() -> Result<T, NetError> + Send,
) -> Result<T, NetError> {
    std::thread::scope(|scope| {
        let worker = std::thread::Builder::new()
            .name("armlet-netns".into())
            .spawn_scoped(scope, || {
                setns(netns, CloneFlags::CLONE_NEWNET).map_err(|errno| NetError::Namespace {
                    what: what.to_owned(),
                    source: if errno == Errno::EINVAL {
                        io::Error::new(
                            io::ErrorKind::InvalidInput,
                            "not a network namespace (setns: EINVAL)",
                        )
                    } else {
                        errno.into()
                    },
                })?;
                f()
            })
            .map_err(|source| NetError::Namespace {
                what: what.to_owned(),
                source,
            })?;
        worker
            .join()
            .map_err(|_| NetError::Worker(what.to_owned()))?
    })
}
