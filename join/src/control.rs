//! The server's control configuration, `GET /v1-k3s/config`.
//!
//! The body is k3s's `config.Control` struct as Go's `encoding/json` writes
//! it: Go field names, `net.IP` as strings, `*net.IPNet` as
//! `{"IP":"10.42.0.0","Mask":"//8AAA=="}` (the mask base64 of its bytes),
//! `PortRange` as `{"Base":30000,"Size":2768}`. Only the fields an agent uses
//! are read; the rest (including the 2021 `Datastore` with possible
//! credentials) is skipped and never logged. Missing or null fields take
//! k3s's defaults (`pkg/daemons/control/server.go` `defaults()`); a body
//! that is not a JSON object, or a read field of the wrong type, is an error.

use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;

use base64::Engine as _;
use serde::Deserialize;

/// Why the control configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ControlConfigError {
    /// Not JSON of the expected shape.
    #[error("malformed control configuration: {0}")]
    Malformed(#[from] serde_json::Error),
    /// A field holds an impossible value (a non-contiguous mask, ...).
    #[error("malformed control configuration: {field}: {detail}")]
    Invalid {
        /// The JSON field.
        field: &'static str,
        /// What is wrong with it.
        detail: String,
    },
}

/// An IP network (`10.42.0.0/16`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    /// The network address.
    pub address: IpAddr,
    /// The prefix length.
    pub prefix_len: u8,
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix_len)
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (address, prefix) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not a CIDR (address/prefix)"))?;
        let address: IpAddr = address.parse().map_err(|_| format!("{s:?}: bad address"))?;
        let prefix_len: u8 = prefix.parse().map_err(|_| format!("{s:?}: bad prefix"))?;
        let max = if address.is_ipv4() { 32 } else { 128 };
        if prefix_len > max {
            return Err(format!("{s:?}: prefix longer than {max}"));
        }
        Ok(Self {
            address,
            prefix_len,
        })
    }
}

/// A port range (`Base` and `Size`, as Go's `utilnet.PortRange`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    /// First port.
    pub base: u16,
    /// Number of ports.
    pub size: u32,
}

impl std::fmt::Display for PortRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let last = u32::from(self.base) + self.size.saturating_sub(1);
        write!(f, "{}-{last}", self.base)
    }
}

/// A secret value from the server; `Debug` does not show it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The value.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() {
            "Secret(<empty>)"
        } else {
            "Secret(<redacted>)"
        })
    }
}

/// What the server tells its agents about the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlConfig {
    /// Pod networks (`ClusterIPRanges`, else `ClusterIPRange`): flannel's
    /// Network, kube-proxy's cluster CIDR.
    pub cluster_cidrs: Vec<Cidr>,
    /// Service networks (`ServiceIPRanges`, else `ServiceIPRange`).
    pub service_cidrs: Vec<Cidr>,
    /// NodePort range (`ServiceNodePortRange`).
    pub service_node_port_range: PortRange,
    /// The kubelet's cluster DNS servers (`ClusterDNSs`, else `ClusterDNS`).
    pub cluster_dns: Vec<IpAddr>,
    /// The cluster domain (`ClusterDomain`).
    pub cluster_domain: String,
    /// `vxlan`, `host-gw`, `wireguard-native`, `ipsec`, `none`, ...
    /// (`FlannelBackend`).
    pub flannel_backend: String,
    /// Masquerade IPv6 pod traffic (`FlannelIPv6Masq`, newer servers).
    pub flannel_ipv6_masq: bool,
    /// Use node external IPs for flannel (`FlannelExternalIP`, newer servers).
    pub flannel_external_ip: bool,
    /// The ipsec backend's pre-shared key (`IPSECPSK`).
    pub ipsec_psk: Secret,
    /// The API server's port on the server (`HTTPSPort`).
    pub https_port: u16,
    /// The supervisor's port (`SupervisorPort`); differs from `https_port` on
    /// RKE2-style servers, whose API is then on `https_port` of the same host.
    pub supervisor_port: u16,
    /// Don't run kube-proxy (`DisableKubeProxy`).
    pub disable_kube_proxy: bool,
    /// Don't run the network-policy controller (`DisableNPC`).
    pub disable_npc: bool,
    /// No k3s cloud controller (`DisableCCM`): otherwise the kubelet runs with
    /// `--cloud-provider=external` and the node sets the `k3s.io/*` address
    /// annotations.
    pub disable_ccm: bool,
    /// Registry prefix for system images such as the pause image
    /// (`SystemDefaultRegistry`).
    pub system_default_registry: String,
    /// `agent`, `cluster`, `pod` or `disabled` (`EgressSelectorMode`, newer
    /// servers; empty from 2021 ones).
    pub egress_selector_mode: String,
    /// The server's own node name (`ServerNodeName`, newer servers).
    pub server_node_name: String,
    /// Minimum TLS version for the kubelet, as Go's numeric constant
    /// (`TLSMinVersion`, 771 = TLS 1.2), when the server gives one.
    pub tls_min_version: Option<u16>,
    /// TLS cipher suites for the kubelet, Go's numeric ids (`TLSCipherSuites`).
    pub tls_cipher_suites: Vec<u16>,
}

impl Default for ControlConfig {
    /// k3s's defaults, for fields a server leaves out (and for
    /// `--kubeconfig` mode, which has no server to ask).
    fn default() -> Self {
        Self {
            cluster_cidrs: vec![Cidr {
                address: IpAddr::V4(Ipv4Addr::new(10, 42, 0, 0)),
                prefix_len: 16,
            }],
            service_cidrs: vec![Cidr {
                address: IpAddr::V4(Ipv4Addr::new(10, 43, 0, 0)),
                prefix_len: 16,
            }],
            service_node_port_range: PortRange {
                base: 30000,
                size: 2768,
            },
            cluster_dns: vec![IpAddr::V4(Ipv4Addr::new(10, 43, 0, 10))],
            cluster_domain: "cluster.local".into(),
            flannel_backend: "vxlan".into(),
            flannel_ipv6_masq: false,
            flannel_external_ip: false,
            ipsec_psk: Secret::default(),
            https_port: 6443,
            supervisor_port: 6443,
            disable_kube_proxy: false,
            disable_npc: false,
            disable_ccm: false,
            system_default_registry: String::new(),
            egress_selector_mode: String::new(),
            server_node_name: String::new(),
            tls_min_version: None,
            tls_cipher_suites: Vec::new(),
        }
    }
}

/// Go's JSON for `*net.IPNet`.
#[derive(Deserialize)]
struct GoIpNet {
    #[serde(rename = "IP")]
    ip: String,
    #[serde(rename = "Mask")]
    mask: String,
}

/// Go's JSON for `utilnet.PortRange`.
#[derive(Deserialize)]
struct GoPortRange {
    #[serde(rename = "Base", default)]
    base: i64,
    #[serde(rename = "Size", default)]
    size: i64,
}

/// The fields read, as sent. Unknown fields are ignored; all are optional.
#[derive(Deserialize)]
struct Raw {
    #[serde(rename = "ClusterIPRange", default)]
    cluster_ip_range: Option<GoIpNet>,
    #[serde(rename = "ClusterIPRanges", default)]
    cluster_ip_ranges: Option<Vec<GoIpNet>>,
    #[serde(rename = "ServiceIPRange", default)]
    service_ip_range: Option<GoIpNet>,
    #[serde(rename = "ServiceIPRanges", default)]
    service_ip_ranges: Option<Vec<GoIpNet>>,
    #[serde(rename = "ServiceNodePortRange", default)]
    service_node_port_range: Option<GoPortRange>,
    #[serde(rename = "ClusterDNS", default)]
    cluster_dns: Option<String>,
    #[serde(rename = "ClusterDNSs", default)]
    cluster_dnss: Option<Vec<String>>,
    #[serde(rename = "ClusterDomain", default)]
    cluster_domain: Option<String>,
    #[serde(rename = "FlannelBackend", default)]
    flannel_backend: Option<String>,
    #[serde(rename = "FlannelIPv6Masq", default)]
    flannel_ipv6_masq: Option<bool>,
    #[serde(rename = "FlannelExternalIP", default)]
    flannel_external_ip: Option<bool>,
    #[serde(rename = "IPSECPSK", default)]
    ipsec_psk: Option<String>,
    #[serde(rename = "HTTPSPort", default)]
    https_port: Option<u16>,
    #[serde(rename = "SupervisorPort", default)]
    supervisor_port: Option<u16>,
    #[serde(rename = "DisableKubeProxy", default)]
    disable_kube_proxy: Option<bool>,
    #[serde(rename = "DisableNPC", default)]
    disable_npc: Option<bool>,
    #[serde(rename = "DisableCCM", default)]
    disable_ccm: Option<bool>,
    #[serde(rename = "SystemDefaultRegistry", default)]
    system_default_registry: Option<String>,
    #[serde(rename = "EgressSelectorMode", default)]
    egress_selector_mode: Option<String>,
    #[serde(rename = "ServerNodeName", default)]
    server_node_name: Option<String>,
    // The TLS settings' names and types drifted between k3s versions
    // (numbers in 2021, `MinTLSVersion`/`CipherSuites` strings later): read
    // leniently, never fail on them.
    #[serde(rename = "TLSMinVersion", default)]
    tls_min_version: Option<serde_json::Value>,
    #[serde(rename = "TLSCipherSuites", default)]
    tls_cipher_suites: Option<serde_json::Value>,
}

fn invalid(field: &'static str, detail: impl Into<String>) -> ControlConfigError {
    ControlConfigError::Invalid {
        field,
        detail: detail.into(),
    }
}

/// A Go `net.IPNet` as a CIDR. The mask must be contiguous ones.
fn cidr(field: &'static str, net: &GoIpNet) -> Result<Cidr, ControlConfigError> {
    let address: IpAddr = net
        .ip
        .parse()
        .map_err(|_| invalid(field, format!("bad address {:?}", net.ip)))?;
    let mask = base64::engine::general_purpose::STANDARD
        .decode(&net.mask)
        .map_err(|_| invalid(field, format!("bad mask {:?}", net.mask)))?;
    // Go keeps some IPv4 masks in 16-byte form (the v4-in-v6 prefix all ones).
    let mask = match (address, mask.len()) {
        (IpAddr::V4(_), 16) if mask[..12].iter().all(|b| *b == 0xff) => mask[12..].to_vec(),
        _ => mask,
    };
    let expected = if address.is_ipv4() { 4 } else { 16 };
    if mask.len() != expected {
        return Err(invalid(field, format!("mask of {} bytes", mask.len())));
    }
    let ones: u32 = mask.iter().map(|b| b.count_ones()).sum();
    let contiguous = mask.iter().enumerate().all(|(i, b)| {
        let bits_before = (i as u32) * 8;
        let want = ones.saturating_sub(bits_before).min(8);
        let expected: u8 = if want == 0 { 0 } else { 0xffu8 << (8 - want) };
        *b == expected
    });
    if !contiguous {
        return Err(invalid(field, "mask is not a prefix"));
    }
    Ok(Cidr {
        address,
        prefix_len: ones as u8,
    })
}

fn cidrs(
    plural_field: &'static str,
    plural: Option<&Vec<GoIpNet>>,
    singular_field: &'static str,
    singular: Option<&GoIpNet>,
    default: Vec<Cidr>,
) -> Result<Vec<Cidr>, ControlConfigError> {
    match (plural, singular) {
        (Some(list), _) if !list.is_empty() => list.iter().map(|n| cidr(plural_field, n)).collect(),
        (_, Some(one)) => Ok(vec![cidr(singular_field, one)?]),
        _ => Ok(default),
    }
}

fn ip(field: &'static str, text: &str) -> Result<IpAddr, ControlConfigError> {
    text.parse()
        .map_err(|_| invalid(field, format!("bad address {text:?}")))
}

/// A string unless empty (Go writes unset strings as "").
fn non_empty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.is_empty())
}

impl ControlConfig {
    /// Parses the body of `GET /v1-k3s/config`.
    pub fn parse(body: &[u8]) -> Result<Self, ControlConfigError> {
        // An object, not just anything serde could read a struct from (it
        // would take `[]` as a struct of defaults).
        let object: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(body)?;
        let raw = Raw::deserialize(serde_json::Value::Object(object))?;
        let defaults = Self::default();
        let cluster_cidrs = cidrs(
            "ClusterIPRanges",
            raw.cluster_ip_ranges.as_ref(),
            "ClusterIPRange",
            raw.cluster_ip_range.as_ref(),
            defaults.cluster_cidrs,
        )?;
        let service_cidrs = cidrs(
            "ServiceIPRanges",
            raw.service_ip_ranges.as_ref(),
            "ServiceIPRange",
            raw.service_ip_range.as_ref(),
            defaults.service_cidrs,
        )?;
        let service_node_port_range = match raw.service_node_port_range {
            // Go's zero value: not set.
            None | Some(GoPortRange { size: 0, .. }) => defaults.service_node_port_range,
            Some(range) => {
                let base = u16::try_from(range.base)
                    .map_err(|_| invalid("ServiceNodePortRange", "bad base"))?;
                let size = u32::try_from(range.size)
                    .ok()
                    .filter(|size| u32::from(base) + size <= 65536)
                    .ok_or_else(|| invalid("ServiceNodePortRange", "bad size"))?;
                PortRange { base, size }
            }
        };
        let cluster_dns = match (raw.cluster_dnss, non_empty(raw.cluster_dns)) {
            (Some(list), _) if !list.is_empty() => list
                .iter()
                .map(|s| ip("ClusterDNSs", s))
                .collect::<Result<_, _>>()?,
            (_, Some(one)) => vec![ip("ClusterDNS", &one)?],
            _ => defaults.cluster_dns,
        };
        let tls_min_version = match raw.tls_min_version {
            Some(serde_json::Value::Number(n)) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
            Some(serde_json::Value::String(s)) => match s.as_str() {
                "VersionTLS10" => Some(0x0301),
                "VersionTLS11" => Some(0x0302),
                "VersionTLS12" => Some(0x0303),
                "VersionTLS13" => Some(0x0304),
                _ => None,
            },
            _ => None,
        };
        let tls_cipher_suites = match raw.tls_cipher_suites {
            Some(serde_json::Value::Array(list)) => list
                .iter()
                .filter_map(|v| v.as_u64().and_then(|n| u16::try_from(n).ok()))
                .collect(),
            _ => Vec::new(),
        };
        let port = |p: Option<u16>, default: u16| p.filter(|p| *p != 0).unwrap_or(default);
        Ok(Self {
            cluster_cidrs,
            service_cidrs,
            service_node_port_range,
            cluster_dns,
            cluster_domain: non_empty(raw.cluster_domain).unwrap_or(defaults.cluster_domain),
            flannel_backend: non_empty(raw.flannel_backend).unwrap_or(defaults.flannel_backend),
            flannel_ipv6_masq: raw.flannel_ipv6_masq.unwrap_or(false),
            flannel_external_ip: raw.flannel_external_ip.unwrap_or(false),
            ipsec_psk: Secret(raw.ipsec_psk.unwrap_or_default()),
            https_port: port(raw.https_port, defaults.https_port),
            supervisor_port: port(raw.supervisor_port, defaults.supervisor_port),
            disable_kube_proxy: raw.disable_kube_proxy.unwrap_or(false),
            disable_npc: raw.disable_npc.unwrap_or(false),
            disable_ccm: raw.disable_ccm.unwrap_or(false),
            system_default_registry: raw.system_default_registry.unwrap_or_default(),
            egress_selector_mode: raw.egress_selector_mode.unwrap_or_default(),
            server_node_name: raw.server_node_name.unwrap_or_default(),
            tls_min_version,
            tls_cipher_suites,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RECORDED: &str = include_str!("../fixtures/v1-k3s-config.json");

    #[test]
    fn the_recorded_v1_21_answer() {
        let c = ControlConfig::parse(RECORDED.as_bytes()).unwrap();
        assert_eq!(c.cluster_cidrs, vec!["10.42.0.0/16".parse().unwrap()]);
        assert_eq!(c.service_cidrs, vec!["10.43.0.0/16".parse().unwrap()]);
        assert_eq!(c.service_node_port_range.to_string(), "30000-32767");
        assert_eq!(c.cluster_dns, vec![IpAddr::from([10, 43, 0, 10])]);
        assert_eq!(c.cluster_domain, "cluster.local");
        assert_eq!(c.flannel_backend, "vxlan");
        assert_eq!((c.https_port, c.supervisor_port), (6443, 6443));
        assert!(!c.disable_kube_proxy && !c.disable_npc && !c.disable_ccm);
        assert_eq!(c.tls_min_version, Some(771));
        assert_eq!(
            c.tls_cipher_suites,
            vec![49196, 49200, 49195, 49199, 52393, 52392]
        );
        assert!(c.ipsec_psk.expose().starts_with("1bc775cf"));
        // The PSK stays out of logs.
        assert!(!format!("{c:?}").contains("1bc775cf"));
    }

    #[test]
    fn missing_fields_take_k3s_defaults() {
        let c = ControlConfig::parse(b"{}").unwrap();
        assert_eq!(c, ControlConfig::default());
        let c = ControlConfig::parse(
            br#"{"ClusterIPRange":null,"ClusterDNS":"","ServiceNodePortRange":{"Base":0,"Size":0},"HTTPSPort":0}"#,
        )
        .unwrap();
        assert_eq!(c, ControlConfig::default());
        // Unknown fields, and newer ones, are fine.
        let c = ControlConfig::parse(
            br#"{"Whatever":[1,2],"FlannelBackend":"wireguard-native","EgressSelectorMode":"agent","SupervisorPort":9345,"HTTPSPort":6443,"TLSMinVersion":"VersionTLS13"}"#,
        )
        .unwrap();
        assert_eq!(c.flannel_backend, "wireguard-native");
        assert_eq!(c.egress_selector_mode, "agent");
        assert_eq!((c.https_port, c.supervisor_port), (6443, 9345));
        assert_eq!(c.tls_min_version, Some(0x0304));
    }

    #[test]
    fn singular_fields_and_dual_stack() {
        let c = ControlConfig::parse(
            br#"{"ClusterIPRange":{"IP":"10.10.0.0","Mask":"////AA=="},
                 "ServiceIPRanges":[{"IP":"10.43.0.0","Mask":"//8AAA=="},{"IP":"fd00:43::","Mask":"////////////////AAAAAA=="}],
                 "ClusterDNS":"10.43.0.10","ClusterDNSs":null}"#,
        )
        .unwrap();
        assert_eq!(c.cluster_cidrs[0].to_string(), "10.10.0.0/24");
        assert_eq!(c.service_cidrs[1].to_string(), "fd00:43::/96");
        assert_eq!(c.cluster_dns, vec![IpAddr::from([10, 43, 0, 10])]);
    }

    #[test]
    fn malformed_bodies_are_clear_errors() {
        for body in [
            &b""[..],
            b"not json",
            b"[]",
            b"\"x\"",
            br#"{"ClusterDomain":5}"#,
            br#"{"HTTPSPort":70000}"#,
            br#"{"ClusterIPRange":{"IP":"10.42.0.0","Mask":"/w8AAA=="}}"#,
            br#"{"ClusterIPRange":{"IP":"10.42.0.0","Mask":"*"}}"#,
            br#"{"ClusterIPRange":{"IP":"ten","Mask":"//8AAA=="}}"#,
            br#"{"ClusterDNSs":["10.43.0.10","x"]}"#,
            br#"{"ServiceNodePortRange":{"Base":65000,"Size":1000}}"#,
        ] {
            let e = ControlConfig::parse(body).unwrap_err();
            assert!(
                e.to_string().starts_with("malformed control configuration"),
                "{e}"
            );
        }
    }

    #[test]
    fn cidr_text() {
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("10.0.0.0".parse::<Cidr>().is_err());
        assert_eq!("fd00::/64".parse::<Cidr>().unwrap().prefix_len, 64);
    }
}
