//! The server's settings, spelled as `k3s server`'s flags, and the
//! `/v1-k3s/config` document an agent reads at join: K3s's `config.Control`
//! struct as Go's `encoding/json` writes it (Go field names in declaration
//! order, `*net.IPNet` as `{"IP": ..., "Mask": <base64 of the mask bytes>}`,
//! `utilnet.PortRange` as `{"Base": ..., "Size": ...}`), matching the body
//! recorded from K3s v1.21.2.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use serde::Serialize;

/// Why a setting is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A CIDR flag that does not parse.
    #[error("{flag}: {value:?} is not an IPv4 CIDR (a.b.c.d/n)")]
    Cidr {
        /// The flag.
        flag: &'static str,
        /// What was given.
        value: String,
    },
}

/// An IPv4 network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// The network address (host bits cleared).
    pub addr: Ipv4Addr,
    /// The prefix length.
    pub prefix: u8,
}

impl Cidr {
    /// Parses `a.b.c.d/n`, clearing host bits as Go's `net.ParseCIDR` does.
    pub fn parse(flag: &'static str, text: &str) -> Result<Self, ConfigError> {
        let bad = || ConfigError::Cidr {
            flag,
            value: text.to_owned(),
        };
        let (addr, prefix) = text.trim().split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        if prefix > 32 {
            return Err(bad());
        }
        let mask = Self::mask_bits(prefix);
        Ok(Self {
            addr: Ipv4Addr::from(u32::from(addr) & mask),
            prefix,
        })
    }

    fn mask_bits(prefix: u8) -> u32 {
        if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(prefix))
        }
    }

    /// The mask's four bytes.
    pub fn mask(&self) -> [u8; 4] {
        Self::mask_bits(self.prefix).to_be_bytes()
    }

    /// The `n`th address in the network (the service CIDR's first address is
    /// the `kubernetes` Service's cluster IP).
    pub fn nth(&self, n: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr).wrapping_add(n))
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Go's JSON form of a `*net.IPNet`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct GoIpNet {
    #[serde(rename = "IP")]
    ip: String,
    mask: String,
}

impl From<Cidr> for GoIpNet {
    fn from(c: Cidr) -> Self {
        use base64::Engine as _;
        Self {
            ip: c.addr.to_string(),
            mask: base64::engine::general_purpose::STANDARD.encode(c.mask()),
        }
    }
}

/// The server's settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `--data-dir`.
    pub data_dir: PathBuf,
    /// `--bind-address`.
    pub bind_address: IpAddr,
    /// `--https-listen-port`.
    pub https_port: u16,
    /// `--advertise-address` (the bind address when unset).
    pub advertise_address: IpAddr,
    /// `--cluster-cidr`.
    pub cluster_cidr: Cidr,
    /// `--service-cidr`.
    pub service_cidr: Cidr,
    /// `--cluster-dns`.
    pub cluster_dns: Ipv4Addr,
    /// `--cluster-domain`.
    pub cluster_domain: String,
    /// `--write-kubeconfig`.
    pub kubeconfig: PathBuf,
    /// Extra names and addresses for the serving certificate (`--tls-san`).
    pub tls_sans: Vec<String>,
}

/// `config.Control` as a 2021 server sends it (fields an agent may read, in
/// the struct's order; secrets of the datastore are not ours to send).
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ControlConfig {
    advertise_port: u16,
    #[serde(rename = "AdvertiseIP")]
    advertise_ip: String,
    #[serde(rename = "HTTPSPort")]
    https_port: u16,
    supervisor_port: u16,
    #[serde(rename = "APIServerPort")]
    api_server_port: u16,
    #[serde(rename = "APIServerBindAddress")]
    api_server_bind_address: String,
    #[serde(rename = "ClusterIPRange")]
    cluster_ip_range: GoIpNet,
    #[serde(rename = "ClusterIPRanges")]
    cluster_ip_ranges: Vec<GoIpNet>,
    #[serde(rename = "ServiceIPRange")]
    service_ip_range: GoIpNet,
    #[serde(rename = "ServiceIPRanges")]
    service_ip_ranges: Vec<GoIpNet>,
    service_node_port_range: PortRange,
    #[serde(rename = "ClusterDNS")]
    cluster_dns: String,
    #[serde(rename = "ClusterDNSs")]
    cluster_dnss: Vec<String>,
    cluster_domain: String,
    #[serde(rename = "NoCoreDNS")]
    no_core_dns: bool,
    kube_config_output: String,
    kube_config_mode: String,
    data_dir: String,
    skips: BTreeMap<String, bool>,
    disables: BTreeMap<String, bool>,
    no_leader_elect: bool,
    #[serde(rename = "JoinURL")]
    join_url: String,
    flannel_backend: String,
    #[serde(rename = "IPSECPSK")]
    ipsec_psk: String,
    default_local_storage_path: String,
    system_default_registry: String,
    #[serde(rename = "DisableCCM")]
    disable_ccm: bool,
    #[serde(rename = "DisableNPC")]
    disable_npc: bool,
    disable_helm_controller: bool,
    disable_kube_proxy: bool,
    #[serde(rename = "DisableAPIServer")]
    disable_api_server: bool,
    disable_controller_manager: bool,
    disable_scheduler: bool,
    #[serde(rename = "DisableETCD")]
    disable_etcd: bool,
    cluster_init: bool,
    cluster_reset: bool,
    cluster_reset_restore_path: String,
    encrypt_secrets: bool,
    #[serde(rename = "TLSMinVersion")]
    tls_min_version: u16,
    #[serde(rename = "TLSCipherSuites")]
    tls_cipher_suites: Vec<u16>,
    bind_address: String,
    #[serde(rename = "SANs")]
    sans: Vec<String>,
    #[serde(rename = "PrivateIP")]
    private_ip: String,
}

/// Go's JSON form of `utilnet.PortRange`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct PortRange {
    base: u16,
    size: u16,
}

impl Settings {
    /// The `/v1-k3s/config` document. `ipsec_psk` is the cluster's persisted
    /// random secret (K3s generates one even for vxlan).
    pub fn control_config(&self, ipsec_psk: &str) -> ControlConfig {
        // What the devserver does not run, it reports disabled, as a
        // `k3s server --disable ...` would.
        let skipped: BTreeMap<String, bool> =
            ["local-storage", "metrics-server", "servicelb", "traefik"]
                .iter()
                .map(|s| ((*s).to_owned(), true))
                .collect();
        let data_dir = self.data_dir.join("server");
        ControlConfig {
            advertise_port: self.https_port,
            advertise_ip: self.advertise_address.to_string(),
            https_port: self.https_port,
            supervisor_port: self.https_port,
            // K3s's apiserver listens here behind the supervisor; ours is the
            // same listener, but agents only read it to compare with HTTPSPort.
            api_server_port: self.https_port.wrapping_add(1),
            api_server_bind_address: String::new(),
            cluster_ip_range: self.cluster_cidr.into(),
            cluster_ip_ranges: vec![self.cluster_cidr.into()],
            service_ip_range: self.service_cidr.into(),
            service_ip_ranges: vec![self.service_cidr.into()],
            service_node_port_range: PortRange {
                base: 30000,
                size: 2768,
            },
            cluster_dns: self.cluster_dns.to_string(),
            cluster_dnss: vec![self.cluster_dns.to_string()],
            cluster_domain: self.cluster_domain.clone(),
            no_core_dns: false,
            kube_config_output: self.kubeconfig.display().to_string(),
            kube_config_mode: "0600".into(),
            data_dir: data_dir.display().to_string(),
            skips: skipped.clone(),
            disables: skipped,
            no_leader_elect: true,
            join_url: String::new(),
            flannel_backend: "vxlan".into(),
            ipsec_psk: ipsec_psk.to_owned(),
            default_local_storage_path: self.data_dir.join("storage").display().to_string(),
            system_default_registry: String::new(),
            disable_ccm: false,
            disable_npc: false,
            disable_helm_controller: true,
            disable_kube_proxy: false,
            disable_api_server: false,
            disable_controller_manager: false,
            disable_scheduler: false,
            disable_etcd: false,
            cluster_init: false,
            cluster_reset: false,
            cluster_reset_restore_path: String::new(),
            encrypt_secrets: false,
            // TLS 1.2 and the ECDHE suites, as K3s 1.21's defaults.
            tls_min_version: 0x0303,
            tls_cipher_suites: vec![49196, 49200, 49195, 49199, 52393, 52392],
            bind_address: self.bind_address.to_string(),
            sans: self.sans(),
            private_ip: String::new(),
        }
    }

    /// Names and addresses the serving certificate must carry (as K3s: the
    /// bind and advertise addresses, the `kubernetes` Service IP, `--tls-san`).
    pub fn sans(&self) -> Vec<String> {
        let mut sans = vec![
            "127.0.0.1".to_owned(),
            self.bind_address.to_string(),
            self.advertise_address.to_string(),
            self.service_cidr.nth(1).to_string(),
        ];
        sans.extend(self.tls_sans.iter().cloned());
        let mut seen = std::collections::BTreeSet::new();
        sans.retain(|s| seen.insert(s.clone()));
        sans
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            data_dir: "/var/lib/armlet-devserver".into(),
            bind_address: "127.0.0.1".parse().unwrap(),
            https_port: 6443,
            advertise_address: "127.0.0.1".parse().unwrap(),
            cluster_cidr: Cidr::parse("c", "10.42.0.0/16").unwrap(),
            service_cidr: Cidr::parse("s", "10.43.0.0/16").unwrap(),
            cluster_dns: "10.43.0.10".parse().unwrap(),
            cluster_domain: "cluster.local".into(),
            kubeconfig: "/tmp/kubeconfig.yaml".into(),
            tls_sans: vec![],
        }
    }

    #[test]
    fn cidrs_as_go_writes_them() {
        let c = Cidr::parse("f", "10.42.7.9/16").unwrap();
        assert_eq!(c.to_string(), "10.42.0.0/16");
        let go = GoIpNet::from(c);
        assert_eq!(
            serde_json::to_value(&go).unwrap(),
            serde_json::json!({"IP": "10.42.0.0", "Mask": "//8AAA=="})
        );
        assert_eq!(
            GoIpNet::from(Cidr::parse("f", "10.42.3.0/24").unwrap()).mask,
            "////AA=="
        );
        for bad in ["10.42.0.0", "10.42.0.0/33", "x/8", "::1/64"] {
            assert!(Cidr::parse("f", bad).is_err(), "{bad}");
        }
        assert_eq!(c.nth(1), Ipv4Addr::new(10, 42, 0, 1));
    }

    #[test]
    fn control_config_has_the_recorded_shape() {
        let recorded: serde_json::Value = serde_json::from_str(include_str!(
            "../fixtures/recorded-k3s-v1.21/v1-k3s-config.json"
        ))
        .unwrap();
        let ours = serde_json::to_value(settings().control_config("psk")).unwrap();
        let recorded = recorded.as_object().unwrap();
        let ours = ours.as_object().unwrap();
        // Every field we send is one K3s sends, with the same JSON type, and
        // the ones an agent reads have the recorded values for the defaults.
        for (key, value) in ours {
            let theirs = recorded
                .get(key)
                .unwrap_or_else(|| panic!("{key} is not in the recorded config"));
            assert_eq!(
                std::mem::discriminant(value),
                std::mem::discriminant(theirs),
                "{key}: {value} vs {theirs}"
            );
        }
        for key in [
            "HTTPSPort",
            "SupervisorPort",
            "ClusterIPRange",
            "ClusterIPRanges",
            "ServiceIPRange",
            "ServiceIPRanges",
            "ServiceNodePortRange",
            "ClusterDNS",
            "ClusterDNSs",
            "ClusterDomain",
            "FlannelBackend",
            "DisableCCM",
            "DisableNPC",
            "DisableKubeProxy",
            "SystemDefaultRegistry",
            "TLSMinVersion",
            "TLSCipherSuites",
        ] {
            assert_eq!(ours.get(key), recorded.get(key), "{key}");
        }
        // The datastore (credentials, in K3s 2021) is never sent.
        assert!(!ours.contains_key("Datastore"));
    }
}
