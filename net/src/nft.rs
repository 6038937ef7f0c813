//! armlet's nftables table, written as nf_tables netlink messages (there is
//! no `nft` binary on the firmware, and the agent must not fork).
//!
//! The table is replaced atomically in one batch: add it (so that it exists),
//! delete it, add it again with its chains and rules. The kernel applies the
//! batch as one transaction, so there is never a moment without masquerade,
//! and running it again leaves exactly one copy of every rule.
//!
//! The rules are those of flannel's masquerade (`FLANNEL-POSTRTG`) for the
//! node's own pods, in table `ip armlet`:
//!
//! ```text
//! chain postrouting { type nat hook postrouting priority srcnat; policy accept;
//!     ip saddr <pod cidr> ip daddr <each cluster cidr, and the pod cidr> return
//!     ip saddr <pod cidr> ip daddr != 224.0.0.0/4 masquerade fully-random }
//! chain forward { type filter hook forward priority filter; policy accept;
//!     ip saddr <pod cidr> accept
//!     ip daddr <pod cidr> accept }
//! ```

use std::fmt::Write as _;
use std::net::Ipv4Addr;

use crate::nl::{self, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NlError, NlSocket};
use crate::{Ipv4Cidr, NetError};

/// The table's name (family `ip`).
pub(crate) const TABLE: &str = "armlet";
const POSTROUTING: &str = "postrouting";
const FORWARD: &str = "forward";

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;

const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_DELTABLE: u16 = 2;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_GETRULE: u16 = 7;

const NLM_F_CREATE: u16 = 0x400;
const NLM_F_APPEND: u16 = 0x800;
const NLA_F_NESTED: u16 = 0x8000;

const NFTA_TABLE_NAME: u16 = 1;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_POLICY: u16 = 5;
const NFTA_CHAIN_TYPE: u16 = 7;
const NFTA_HOOK_HOOKNUM: u16 = 1;
const NFTA_HOOK_PRIORITY: u16 = 2;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_HANDLE: u16 = 3;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_PAYLOAD_DREG: u16 = 1;
const NFTA_PAYLOAD_BASE: u16 = 2;
const NFTA_PAYLOAD_OFFSET: u16 = 3;
const NFTA_PAYLOAD_LEN: u16 = 4;
const NFTA_BITWISE_SREG: u16 = 1;
const NFTA_BITWISE_DREG: u16 = 2;
const NFTA_BITWISE_LEN: u16 = 3;
const NFTA_BITWISE_MASK: u16 = 4;
const NFTA_BITWISE_XOR: u16 = 5;
const NFTA_CMP_SREG: u16 = 1;
const NFTA_CMP_OP: u16 = 2;
const NFTA_CMP_DATA: u16 = 3;
const NFTA_IMMEDIATE_DREG: u16 = 1;
const NFTA_IMMEDIATE_DATA: u16 = 2;
const NFTA_MASQ_FLAGS: u16 = 1;

const NFT_REG_VERDICT: u32 = 0;
const NFT_REG_1: u32 = 1;
const NFT_PAYLOAD_NETWORK_HEADER: u32 = 1;
const NFT_CMP_EQ: u32 = 0;
const NFT_CMP_NEQ: u32 = 1;
const NF_ACCEPT: u32 = 1;
const NFT_RETURN: i32 = -5;
const NF_INET_FORWARD: u32 = 2;
const NF_INET_POST_ROUTING: u32 = 4;
/// `srcnat` and `filter` in nft's priority names.
const PRIORITY_SRCNAT: i32 = 100;
const PRIORITY_FILTER: i32 = 0;
/// `fully-random`, as flannel's `--random-fully`: ports picked at random so
/// that two pods' connections to one server do not race for a port.
const NF_NAT_RANGE_PROTO_RANDOM_FULLY: u32 = 1 << 4;

/// Offsets of the addresses in the IPv4 header.
const IPV4_SADDR: u32 = 12;
const IPV4_DADDR: u32 = 16;

/// One rule of armlet's nftables table, as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NftRule {
    /// The chain holding it: `postrouting` or `forward`.
    pub chain: String,
    /// Its handle, unique within the table.
    pub handle: u64,
    /// Its expressions in order, described as `nft --debug=netlink` does
    /// (`payload load 4b @ network header + 12 => reg 1`, `cmp eq reg 1
    /// 0x0a2a0300`, `masq flags 0x10`...).
    pub expressions: Vec<String>,
}

/// What the table is built from.
pub(crate) struct Ruleset<'a> {
    pub pod_cidr: Ipv4Cidr,
    pub cluster_cidrs: &'a [Ipv4Cidr],
}

/// Builds a datagram of netlink messages with nested attributes.
struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    fn new() -> Self {
        Writer { buf: Vec::new() }
    }

    /// Starts a message: netlink header, then `struct nfgenmsg`.
    fn begin(&mut self, kind: u16, flags: u16, seq: u32, family: u8, res_id: u16) -> usize {
        let start = self.buf.len();
        self.buf.extend_from_slice(&0u32.to_ne_bytes()); // length, patched in end()
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf
            .extend_from_slice(&(flags | NLM_F_REQUEST).to_ne_bytes());
        self.buf.extend_from_slice(&seq.to_ne_bytes());
        self.buf.extend_from_slice(&0u32.to_ne_bytes()); // port: the kernel
        self.buf.push(family);
        self.buf.push(0); // NFNETLINK_V0
        self.buf.extend_from_slice(&res_id.to_be_bytes());
        start
    }

    fn end(&mut self, start: usize) {
        let len = (self.buf.len() - start) as u32;
        self.buf[start..start + 4].copy_from_slice(&len.to_ne_bytes());
    }

    fn attr(&mut self, kind: u16, value: &[u8]) {
        let len = u16::try_from(4 + value.len()).expect("attributes of a few bytes");
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(value);
        self.buf.resize(nl::align(self.buf.len()), 0);
    }

    /// Strings go with their NUL, which nf_tables requires of some.
    fn str(&mut self, kind: u16, value: &str) {
        let mut bytes = value.as_bytes().to_vec();
        bytes.push(0);
        self.attr(kind, &bytes);
    }

    /// nf_tables numbers are big-endian.
    fn u32(&mut self, kind: u16, value: u32) {
        self.attr(kind, &value.to_be_bytes());
    }

    fn nest(&mut self, kind: u16, body: impl FnOnce(&mut Self)) {
        let start = self.buf.len();
        self.buf.extend_from_slice(&[0, 0]);
        self.buf
            .extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
        body(self);
        let len = u16::try_from(self.buf.len() - start).expect("nested attributes under 64 KiB");
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
    }

    fn expr(&mut self, name: &str, data: impl FnOnce(&mut Self)) {
        self.nest(NFTA_LIST_ELEM, |w| {
            w.str(NFTA_EXPR_NAME, name);
            w.nest(NFTA_EXPR_DATA, data);
        });
    }

    fn data_value(&mut self, kind: u16, value: &[u8]) {
        self.nest(kind, |w| w.attr(NFTA_DATA_VALUE, value));
    }

    /// `ip saddr|daddr [!=] cidr`: load the address, mask it, compare.
    fn match_cidr(&mut self, offset: u32, cidr: Ipv4Cidr, equal: bool) {
        if cidr.prefix == 0 && equal {
            return; // matches everything
        }
        self.expr("payload", |w| {
            w.u32(NFTA_PAYLOAD_DREG, NFT_REG_1);
            w.u32(NFTA_PAYLOAD_BASE, NFT_PAYLOAD_NETWORK_HEADER);
            w.u32(NFTA_PAYLOAD_OFFSET, offset);
            w.u32(NFTA_PAYLOAD_LEN, 4);
        });
        if cidr.prefix < 32 {
            self.expr("bitwise", |w| {
                w.u32(NFTA_BITWISE_SREG, NFT_REG_1);
                w.u32(NFTA_BITWISE_DREG, NFT_REG_1);
                w.u32(NFTA_BITWISE_LEN, 4);
                w.data_value(NFTA_BITWISE_MASK, &cidr.mask().to_be_bytes());
                w.data_value(NFTA_BITWISE_XOR, &[0; 4]);
            });
        }
        self.expr("cmp", |w| {
            w.u32(NFTA_CMP_SREG, NFT_REG_1);
            w.u32(NFTA_CMP_OP, if equal { NFT_CMP_EQ } else { NFT_CMP_NEQ });
            w.data_value(NFTA_CMP_DATA, &cidr.network().octets());
        });
    }

    fn verdict(&mut self, code: i32) {
        self.expr("immediate", |w| {
            w.u32(NFTA_IMMEDIATE_DREG, NFT_REG_VERDICT);
            w.nest(NFTA_IMMEDIATE_DATA, |w| {
                w.nest(NFTA_DATA_VERDICT, |w| {
                    w.u32(NFTA_VERDICT_CODE, code as u32);
                });
            });
        });
    }
}

/// The destinations that keep the pods' source address: the cluster CIDRs
/// and the pod CIDR itself (so that, with no cluster CIDR given, the node's
/// pods are still not masqueraded to one another), without the networks
/// that another one holds.
fn internal_networks(pods: Ipv4Cidr, cluster: &[Ipv4Cidr]) -> Vec<Ipv4Cidr> {
    let mut out: Vec<Ipv4Cidr> = Vec::new();
    for cidr in std::iter::once(pods).chain(cluster.iter().copied()) {
        if out.iter().any(|c| c.contains_cidr(&cidr)) {
            continue;
        }
        out.retain(|c| !cidr.contains_cidr(c));
        out.push(cidr);
    }
    out
}

fn nft_type(msg: u16) -> u16 {
    (NFNL_SUBSYS_NFTABLES << 8) | msg
}

const AF_INET: u8 = libc::AF_INET as u8;

/// Builds the batch that replaces the table; returns it with the sequence
/// numbers of its acknowledged messages.
fn build_batch(next_seq: &mut dyn FnMut() -> u32, ruleset: &Ruleset<'_>) -> (Vec<u8>, Vec<u32>) {
    let mut w = Writer::new();
    let mut acked = Vec::new();
    let seq = next_seq();
    let m = w.begin(NFNL_MSG_BATCH_BEGIN, 0, seq, 0, NFNL_SUBSYS_NFTABLES);
    w.end(m);

    let mut message = |w: &mut Writer, kind: u16, flags: u16, body: &dyn Fn(&mut Writer)| {
        let seq = next_seq();
        acked.push(seq);
        let m = w.begin(nft_type(kind), flags | NLM_F_ACK, seq, AF_INET, 0);
        body(w);
        w.end(m);
    };
    let table = |w: &mut Writer| w.str(NFTA_TABLE_NAME, TABLE);
    message(&mut w, NFT_MSG_NEWTABLE, NLM_F_CREATE, &table);
    message(&mut w, NFT_MSG_DELTABLE, 0, &table);
    message(&mut w, NFT_MSG_NEWTABLE, NLM_F_CREATE, &table);
    for (name, kind, hook, priority) in [
        (POSTROUTING, "nat", NF_INET_POST_ROUTING, PRIORITY_SRCNAT),
        (FORWARD, "filter", NF_INET_FORWARD, PRIORITY_FILTER),
    ] {
        message(&mut w, NFT_MSG_NEWCHAIN, NLM_F_CREATE, &|w| {
            w.str(NFTA_CHAIN_TABLE, TABLE);
            w.str(NFTA_CHAIN_NAME, name);
            w.nest(NFTA_CHAIN_HOOK, |w| {
                w.u32(NFTA_HOOK_HOOKNUM, hook);
                w.u32(NFTA_HOOK_PRIORITY, priority as u32);
            });
            w.u32(NFTA_CHAIN_POLICY, NF_ACCEPT);
            w.str(NFTA_CHAIN_TYPE, kind);
        });
    }

    let mut rule = |w: &mut Writer, chain: &str, exprs: &dyn Fn(&mut Writer)| {
        message(w, NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND, &|w| {
            w.str(NFTA_RULE_TABLE, TABLE);
            w.str(NFTA_RULE_CHAIN, chain);
            w.nest(NFTA_RULE_EXPRESSIONS, exprs);
        });
    };
    let pods = ruleset.pod_cidr;
    let internal = internal_networks(pods, ruleset.cluster_cidrs);
    for cidr in internal {
        rule(&mut w, POSTROUTING, &|w| {
            w.match_cidr(IPV4_SADDR, pods, true);
            w.match_cidr(IPV4_DADDR, cidr, true);
            w.verdict(NFT_RETURN);
        });
    }
    let multicast = Ipv4Cidr {
        addr: Ipv4Addr::new(224, 0, 0, 0),
        prefix: 4,
    };
    rule(&mut w, POSTROUTING, &|w| {
        w.match_cidr(IPV4_SADDR, pods, true);
        w.match_cidr(IPV4_DADDR, multicast, false);
        w.expr("masq", |w| {
            w.u32(NFTA_MASQ_FLAGS, NF_NAT_RANGE_PROTO_RANDOM_FULLY)
        });
    });
    for offset in [IPV4_SADDR, IPV4_DADDR] {
        rule(&mut w, FORWARD, &|w| {
            w.match_cidr(offset, pods, true);
            w.verdict(NF_ACCEPT as i32);
        });
    }

    let seq = next_seq();
    let m = w.begin(NFNL_MSG_BATCH_END, 0, seq, 0, NFNL_SUBSYS_NFTABLES);
    w.end(m);
    (w.buf, acked)
}

fn open() -> Result<NlSocket, NetError> {
    NlSocket::open(netlink_sys::protocols::NETLINK_NETFILTER).map_err(|source| NetError::Netlink {
        op: "open an nfnetlink socket".into(),
        source,
        detail: None,
    })
}

fn nft_error(op: &str, err: NlError) -> NetError {
    NetError::Netlink {
        op: format!("nftables: {op}"),
        source: std::io::Error::from_raw_os_error(err.errno),
        detail: err.message,
    }
}

/// Replaces the contents of table `ip armlet` in the calling thread's
/// network namespace with the rules for `ruleset`.
pub(crate) fn replace_table(ruleset: &Ruleset<'_>) -> Result<(), NetError> {
    let mut socket = open()?;
    let (batch, acked) = build_batch(&mut || socket.next_seq(), ruleset);
    socket
        .batch(&batch, &acked)
        .map_err(|err| nft_error(&format!("replace table ip {TABLE}"), err))
}

/// The rules of table `ip armlet` in the calling thread's network namespace
/// (none if the table does not exist).
pub(crate) fn list_rules() -> Result<Vec<NftRule>, NetError> {
    let mut socket = open()?;
    let mut w = Writer::new();
    let seq = socket.next_seq();
    let m = w.begin(nft_type(NFT_MSG_GETRULE), NLM_F_DUMP, seq, AF_INET, 0);
    // The kernel only dumps this table's rules.
    w.str(NFTA_RULE_TABLE, TABLE);
    w.end(m);
    let replies = match socket.request(&w.buf, seq) {
        Ok(replies) => replies,
        Err(err) if err.errno == libc::ENOENT => return Ok(Vec::new()),
        Err(err) => return Err(nft_error(&format!("list table ip {TABLE}"), err)),
    };
    let mut rules = Vec::new();
    for reply in &replies {
        for msg in nl::split(reply).map_err(|err| nft_error("parse a rule", err))? {
            if msg.kind != nft_type(NFT_MSG_NEWRULE) || msg.payload.len() < 4 {
                continue;
            }
            rules.push(parse_rule(&msg.payload[4..]));
        }
    }
    Ok(rules)
}

fn parse_rule(attrs: &[u8]) -> NftRule {
    let mut rule = NftRule {
        chain: String::new(),
        handle: 0,
        expressions: Vec::new(),
    };
    for (kind, value) in nl::attributes(attrs) {
        match kind {
            NFTA_RULE_CHAIN => rule.chain = string(value),
            NFTA_RULE_HANDLE if value.len() == 8 => {
                rule.handle = u64::from_be_bytes(value.try_into().expect("8 bytes"));
            }
            NFTA_RULE_EXPRESSIONS => {
                for (elem, expr) in nl::attributes(value) {
                    if elem == NFTA_LIST_ELEM {
                        rule.expressions.push(describe_expr(expr));
                    }
                }
            }
            _ => {}
        }
    }
    rule
}

fn string(value: &[u8]) -> String {
    let text = value.split(|b| *b == 0).next().unwrap_or_default();
    String::from_utf8_lossy(text).into_owned()
}

fn be32(value: &[u8]) -> u32 {
    value
        .get(..4)
        .map(|b| u32::from_be_bytes(b.try_into().expect("4 bytes")))
        .unwrap_or_default()
}

/// The NFTA_DATA_VALUE inside a nested data attribute, as hex.
fn data_hex(value: &[u8]) -> String {
    nl::attributes(value)
        .find(|(kind, _)| *kind == NFTA_DATA_VALUE)
        .map(|(_, bytes)| {
            bytes.iter().fold("0x".to_owned(), |mut hex, b| {
                let _ = write!(hex, "{b:02x}");
                hex
            })
        })
        .unwrap_or_default()
}

/// Describes one expression roughly as `nft --debug=netlink` prints it.
fn describe_expr(expr: &[u8]) -> String {
    let mut name = String::new();
    let mut data: &[u8] = &[];
    for (kind, value) in nl::attributes(expr) {
        match kind {
            NFTA_EXPR_NAME => name = string(value),
            NFTA_EXPR_DATA => data = value,
            _ => {}
        }
    }
    let get = |wanted: u16| {
        nl::attributes(data)
            .find(|(kind, _)| *kind == wanted)
            .map(|(_, value)| value)
            .unwrap_or_default()
    };
    match name.as_str() {
        "payload" => {
            let base = match be32(get(NFTA_PAYLOAD_BASE)) {
                0 => "link",
                1 => "network",
                2 => "transport",
                _ => "inner",
            };
            format!(
                "payload load {}b @ {base} header + {} => reg {}",
                be32(get(NFTA_PAYLOAD_LEN)),
                be32(get(NFTA_PAYLOAD_OFFSET)),
                be32(get(NFTA_PAYLOAD_DREG)),
            )
        }
        "bitwise" => format!(
            "bitwise reg {} = (reg {} & {}) ^ {}",
            be32(get(NFTA_BITWISE_DREG)),
            be32(get(NFTA_BITWISE_SREG)),
            data_hex(get(NFTA_BITWISE_MASK)),
            data_hex(get(NFTA_BITWISE_XOR)),
        ),
        "cmp" => {
            let op = ["eq", "neq", "lt", "lte", "gt", "gte"]
                .get(be32(get(NFTA_CMP_OP)) as usize)
                .unwrap_or(&"?");
            format!(
                "cmp {op} reg {} {}",
                be32(get(NFTA_CMP_SREG)),
                data_hex(get(NFTA_CMP_DATA))
            )
        }
        "immediate" => {
            let verdict = nl::attributes(get(NFTA_IMMEDIATE_DATA))
                .find(|(kind, _)| *kind == NFTA_DATA_VERDICT)
                .and_then(|(_, v)| nl::attributes(v).find(|(kind, _)| *kind == NFTA_VERDICT_CODE))
                .map(|(_, code)| match be32(code) as i32 {
                    0 => "drop".to_owned(),
                    1 => "accept".to_owned(),
                    NFT_RETURN => "return".to_owned(),
                    -1 => "continue".to_owned(),
                    -3 => "jump".to_owned(),
                    -4 => "goto".to_owned(),
                    other => other.to_string(),
                });
            match verdict {
                Some(verdict) => {
                    format!("immediate reg {} {verdict}", be32(get(NFTA_IMMEDIATE_DREG)))
                }
                None => format!(
                    "immediate reg {} {}",
                    be32(get(NFTA_IMMEDIATE_DREG)),
                    data_hex(get(NFTA_IMMEDIATE_DATA))
                ),
            }
        }
        "masq" => format!("masq flags 0x{:x}", be32(get(NFTA_MASQ_FLAGS))),
        _ => name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The batch's own messages, as the kernel will read them.
    #[test]
    fn batch_layout() {
        let mut seq = 0;
        let ruleset = Ruleset {
            pod_cidr: "10.42.3.0/24".parse().unwrap(),
            cluster_cidrs: &[
                "10.42.0.0/16".parse().unwrap(),
                "10.42.3.0/24".parse().unwrap(),
            ],
        };
        let (batch, acked) = build_batch(
            &mut || {
                seq += 1;
                seq
            },
            &ruleset,
        );
        let msgs = nl::split(&batch).unwrap();
        let kinds: Vec<u16> = msgs.iter().map(|m| m.kind).collect();
        let n = nft_type;
        assert_eq!(
            kinds,
            [
                NFNL_MSG_BATCH_BEGIN,
                n(NFT_MSG_NEWTABLE),
                n(NFT_MSG_DELTABLE),
                n(NFT_MSG_NEWTABLE),
                n(NFT_MSG_NEWCHAIN),
                n(NFT_MSG_NEWCHAIN),
                // One return (10.42.0.0/16 holds the pod CIDR, listed or
                // not), masquerade, 2 forward accepts.
                n(NFT_MSG_NEWRULE),
                n(NFT_MSG_NEWRULE),
                n(NFT_MSG_NEWRULE),
                n(NFT_MSG_NEWRULE),
                NFNL_MSG_BATCH_END,
            ]
        );
        assert_eq!(acked.len(), kinds.len() - 2);
        // Batch markers address the nftables subsystem in res_id.
        assert_eq!(&msgs[0].payload[2..4], &NFNL_SUBSYS_NFTABLES.to_be_bytes());

        // The masquerade rule reads back as nft would print it.
        let masq = parse_rule(&msgs[7].payload[4..]);
        assert_eq!(masq.chain, POSTROUTING);
        assert_eq!(
            masq.expressions,
            [
                "payload load 4b @ network header + 12 => reg 1",
                "bitwise reg 1 = (reg 1 & 0xffffff00) ^ 0x00000000",
                "cmp eq reg 1 0x0a2a0300",
                "payload load 4b @ network header + 16 => reg 1",
                "bitwise reg 1 = (reg 1 & 0xf0000000) ^ 0x00000000",
                "cmp neq reg 1 0xe0000000",
                "masq flags 0x10",
            ]
        );
        let ret = parse_rule(&msgs[6].payload[4..]);
        assert_eq!(
            ret.expressions,
            [
                "payload load 4b @ network header + 12 => reg 1",
                "bitwise reg 1 = (reg 1 & 0xffffff00) ^ 0x00000000",
                "cmp eq reg 1 0x0a2a0300",
                "payload load 4b @ network header + 16 => reg 1",
                "bitwise reg 1 = (reg 1 & 0xffff0000) ^ 0x00000000",
                "cmp eq reg 1 0x0a2a0000",
                "immediate reg 0 return",
            ]
        );
        let accept = parse_rule(&msgs[9].payload[4..]);
        assert_eq!(accept.chain, FORWARD);
        assert_eq!(
            accept.expressions[0],
            "payload load 4b @ network header + 16 => reg 1"
        );
        assert_eq!(accept.expressions.last().unwrap(), "immediate reg 0 accept");
    }

    #[test]
    fn internal_networks_fold_nested_ones() {
        let c = |s: &str| s.parse::<Ipv4Cidr>().unwrap();
        let pods = c("10.42.3.0/24");
        assert_eq!(internal_networks(pods, &[]), [pods]);
        assert_eq!(
            internal_networks(pods, &[c("10.42.0.0/16")]),
            [c("10.42.0.0/16")]
        );
        assert_eq!(
            internal_networks(
                pods,
                &[c("10.43.0.0/16"), c("10.0.0.0/8"), c("10.43.0.0/16")]
            ),
            [c("10.0.0.0/8")]
        );
        assert_eq!(
            internal_networks(pods, &[c("192.168.0.0/16")]),
            [pods, c("192.168.0.0/16")]
        );
    }

    #[test]
    fn describes_malformed_expressions_without_panicking() {
        assert_eq!(describe_expr(&[]), "");
        assert_eq!(parse_rule(&[1, 2, 3]).expressions.len(), 0);
        let mut w = Writer::new();
        w.expr("cmp", |w| w.attr(NFTA_CMP_OP, &[9]));
        let (_, expr) = nl::attributes(&w.buf).next().unwrap();
        assert_eq!(describe_expr(expr), "cmp eq reg 0 ");
    }
}
