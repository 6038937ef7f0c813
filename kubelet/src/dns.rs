//! A pod's `/etc/resolv.conf`, as the kubelet writes it
//! (`pkg/kubelet/network/dns/dns.go`: GetPodDNS, formDNSConfigFitsLimits).

use std::net::IpAddr;

use k8s_openapi::api::core::v1::Pod;

/// Most nameservers a resolver reads.
const MAX_NAMESERVERS: usize = 3;
/// Most search domains (Kubernetes 1.28+ `ExpandedDNSConfig`).
const MAX_SEARCH: usize = 32;
/// Most characters in the search line (the same).
const MAX_SEARCH_CHARS: usize = 2048;

/// The node's resolver settings (its resolv.conf, parsed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostDns {
    /// `nameserver` lines.
    pub nameservers: Vec<String>,
    /// `search` domains.
    pub search: Vec<String>,
    /// `options`.
    pub options: Vec<String>,
}

impl HostDns {
    /// Parses a resolv.conf (comments and unknown lines ignored; the last
    /// `search`/`domain` line wins, as in glibc).
    pub fn parse(text: &str) -> Self {
        let mut out = Self::default();
        for line in text.lines() {
            let line = line.split(['#', ';']).next().unwrap_or_default();
            let mut words = line.split_whitespace();
            match words.next() {
                Some("nameserver") => out.nameservers.extend(words.next().map(str::to_owned)),
                Some("search") | Some("domain") => {
                    out.search = words.map(str::to_owned).collect();
                }
                Some("options") => out.options.extend(words.map(str::to_owned)),
                _ => {}
            }
        }
        out
    }
}

/// The cluster's DNS settings (from `/v1-k3s/config`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterDns {
    /// The cluster DNS service addresses (k3s: 10.43.0.10).
    pub servers: Vec<IpAddr>,
    /// The cluster domain (k3s: cluster.local).
    pub domain: String,
}

fn push_unique(list: &mut Vec<String>, item: &str) {
    if !item.is_empty() && !list.iter().any(|i| i == item) {
        list.push(item.to_owned());
    }
}

/// The resolv.conf content for `pod`.
pub fn resolv_conf(pod: &Pod, cluster: &ClusterDns, host: &HostDns) -> String {
    let spec = pod.spec.as_ref();
    let host_network = spec.and_then(|s| s.host_network).unwrap_or(false);
    let policy = spec
        .and_then(|s| s.dns_policy.as_deref())
        .unwrap_or("ClusterFirst");
    let cluster_first = match policy {
        "ClusterFirstWithHostNet" => true,
        "ClusterFirst" => !host_network,
        _ => false,
    } && !cluster.servers.is_empty();
    let (mut nameservers, mut search, mut options): (Vec<String>, Vec<String>, Vec<String>) =
        if policy == "None" {
            Default::default()
        } else if cluster_first {
            let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
            let d = &cluster.domain;
            let mut search = vec![format!("{ns}.svc.{d}"), format!("svc.{d}"), d.clone()];
            for s in &host.search {
                push_unique(&mut search, s);
            }
            (
                cluster.servers.iter().map(ToString::to_string).collect(),
                search,
                vec!["ndots:5".to_owned()],
            )
        } else {
            (
                host.nameservers.clone(),
                host.search.clone(),
                host.options.clone(),
            )
        };
    if let Some(config) = spec.and_then(|s| s.dns_config.as_ref()) {
        for n in config.nameservers.iter().flatten() {
            push_unique(&mut nameservers, n);
        }
        for s in config.searches.iter().flatten() {
            push_unique(&mut search, s);
        }
        for o in config.options.iter().flatten() {
            let rendered = match &o.value {
                Some(v) => format!("{}:{v}", o.name.as_deref().unwrap_or_default()),
                None => o.name.clone().unwrap_or_default(),
            };
            let name = rendered.split(':').next().unwrap_or_default().to_owned();
            // Merged by name: the pod's value wins.
            options.retain(|existing| existing.split(':').next() != Some(name.as_str()));
            push_unique(&mut options, &rendered);
        }
    }
    nameservers.truncate(MAX_NAMESERVERS);
    search.truncate(MAX_SEARCH);
    while search.iter().map(|s| s.len() + 1).sum::<usize>() > MAX_SEARCH_CHARS {
        search.pop();
    }
    let mut out = String::new();
    if !search.is_empty() {
        out.push_str(&format!("search {}\n", search.join(" ")));
    }
    for n in &nameservers {
        out.push_str(&format!("nameserver {n}\n"));
    }
    if !options.is_empty() {
        out.push_str(&format!("options {}\n", options.join(" ")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(yaml: &str) -> Pod {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    fn cluster() -> ClusterDns {
        ClusterDns {
            servers: vec!["10.43.0.10".parse().unwrap()],
            domain: "cluster.local".into(),
        }
    }

    #[test]
    fn cluster_first_matches_the_spec_example() {
        let host = HostDns::parse("# x\nnameserver 192.168.1.1\nsearch lan\noptions edns0\n");
        let p = pod("metadata: {namespace: default}\nspec: {containers: []}");
        assert_eq!(
            resolv_conf(&p, &cluster(), &host),
            "search default.svc.cluster.local svc.cluster.local cluster.local lan\nnameserver 10.43.0.10\noptions ndots:5\n"
        );
    }

    #[test]
    fn host_network_falls_back_to_the_node_unless_with_host_net() {
        let host = HostDns::parse("nameserver 192.168.1.1\nsearch lan\n");
        let p =
            pod("metadata: {namespace: kube-system}\nspec: {hostNetwork: true, containers: []}");
        assert_eq!(
            resolv_conf(&p, &cluster(), &host),
            "search lan\nnameserver 192.168.1.1\n"
        );
        let p = pod(
            "metadata: {namespace: kube-system}\nspec: {hostNetwork: true, dnsPolicy: ClusterFirstWithHostNet, containers: []}",
        );
        assert!(resolv_conf(&p, &cluster(), &host).starts_with("search kube-system.svc"));
    }

    #[test]
    fn none_takes_everything_from_dns_config_and_options_merge_by_name() {
        let host = HostDns::parse("nameserver 192.168.1.1\n");
        let p = pod(
            "spec:\n  dnsPolicy: None\n  dnsConfig: {nameservers: [1.1.1.1, 1.1.1.1], searches: [a.b], options: [{name: ndots, value: '2'}, {name: edns0}]}\n  containers: []",
        );
        assert_eq!(
            resolv_conf(&p, &cluster(), &host),
            "search a.b\nnameserver 1.1.1.1\noptions ndots:2 edns0\n"
        );
        let p = pod("spec:\n  dnsConfig: {options: [{name: ndots, value: '1'}]}\n  containers: []");
        assert!(resolv_conf(&p, &cluster(), &host).ends_with("options ndots:1\n"));
    }

    #[test]
    fn limits_apply() {
        let host = HostDns::default();
        let servers: Vec<String> = (1..=5).map(|i| format!("10.0.0.{i}")).collect();
        let yaml = format!(
            "spec:\n  dnsPolicy: None\n  dnsConfig: {{nameservers: [{}]}}\n  containers: []",
            servers.join(", ")
        );
        let out = resolv_conf(&pod(&yaml), &cluster(), &host);
        assert_eq!(out.matches("nameserver").count(), 3);
    }
}
