//! The agent's k3s-compatible configuration: the `k3s agent` flags that
//! concern joining, their `K3S_*` environment variables, and the YAML config
//! file whose keys are the long flag names without dashes (as k3s's
//! `/etc/rancher/k3s/config.yaml`).
//!
//! Precedence follows k3s (`pkg/configfilearg`): the file's values are
//! inserted as flags before the command line's, so a flag given on the
//! command line wins over the file, and a value the file sets wins over the
//! environment (urfave/cli applies an environment variable only to a flag
//! that is not set). Repeatable flags (`--node-label`, `--node-taint`,
//! `--node-ip`) add to the file's values instead of replacing them.

use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;

use crate::token::{Token, TokenError};
use crate::{JoinSettings, Source};

/// armlet's data directory (k3s: `/var/lib/rancher/k3s`).
pub const DEFAULT_DATA_DIR: &str = "/var/lib/armlet";
/// armlet's config file (k3s: `/etc/rancher/k3s/config.yaml`).
pub const DEFAULT_CONFIG_FILE: &str = "/etc/armlet/config.yaml";

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The server URL is not usable (the URL itself is not repeated: it may
    /// hold credentials).
    #[error("server URL: {0}")]
    Server(String),
    /// No server was given (and no `--kubeconfig`).
    #[error("no server: give --server, K3S_URL or `server:` in the config file (or --kubeconfig)")]
    NoServer,
    /// No token was given (and no `--kubeconfig`).
    #[error(
        "no token: give --token, --token-file, K3S_TOKEN, K3S_TOKEN_FILE or `token:` in the \
         config file (or --kubeconfig)"
    )]
    NoToken,
    /// The token is malformed.
    #[error("token: {0}")]
    Token(#[from] TokenError),
    /// The token file could not be read.
    #[error("token file {}: {source}", path.display())]
    TokenFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The config file could not be read or is not the expected YAML.
    #[error("config file {}: {detail}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The node name is not a valid Kubernetes node name.
    #[error("node name {name:?}: {detail}")]
    NodeName {
        /// The name (lower-cased).
        name: String,
        /// What is wrong.
        detail: String,
    },
    /// The system's hostname could not be read.
    #[error("reading the hostname: {0}")]
    Hostname(String),
    /// A `--node-ip` value is not an IP address.
    #[error("node IP {0:?}: not an IP address")]
    NodeIp(String),
    /// No node IP was given and none could be found.
    #[error("no node IP found ({0}): give --node-ip")]
    NoNodeIp(String),
    /// A `--node-label` is malformed.
    #[error("node label {value:?}: {detail}")]
    Label {
        /// The value given.
        value: String,
        /// What is wrong.
        detail: String,
    },
    /// A `--node-taint` is malformed.
    #[error("node taint {value:?}: {detail}")]
    Taint {
        /// The value given.
        value: String,
        /// What is wrong.
        detail: String,
    },
}

// --------------------------------------------------------------------------
// Server URL

/// The server's URL: `https://`, a host, a port (443 if none; k3s servers
/// use 6443). Any path is dropped, as k3s does.
#[derive(Clone, PartialEq, Eq)]
pub struct ServerUrl {
    host: String,
    port: u16,
}

impl ServerUrl {
    /// Parses and checks a `--server` value.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let url = reqwest::Url::parse(text.trim())
            .map_err(|e| ConfigError::Server(format!("cannot parse: {e}")))?;
        if url.scheme() != "https" {
            // k3s: "only https:// URLs are supported, invalid scheme".
            return Err(ConfigError::Server(format!(
                "only https:// URLs are supported, invalid scheme: {}",
                url.scheme()
            )));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(ConfigError::Server(
                "credentials belong in the token, not in the URL".into(),
            ));
        }
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| ConfigError::Server("no host".into()))?
            .to_owned();
        let port = url.port_or_known_default().unwrap_or(443);
        Ok(Self { host, port })
    }

    /// `https://host:port`, the base of every request.
    pub fn origin(&self) -> String {
        self.with_port(self.port)
    }

    /// The same host on another port (the API server of a server whose
    /// supervisor port differs, RKE2 style).
    pub fn with_port(&self, port: u16) -> String {
        format!("https://{}:{port}", self.host)
    }

    /// The host (IPv6 addresses in brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl std::fmt::Display for ServerUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.origin())
    }
}

impl std::fmt::Debug for ServerUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ServerUrl({})", self.origin())
    }
}

impl FromStr for ServerUrl {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

// --------------------------------------------------------------------------
// Names, labels, taints

/// Checks a DNS-1123 subdomain (a Kubernetes node name): lowercase letters,
/// digits, `-` and `.`, labels starting and ending alphanumeric, 253 at most.
fn dns_subdomain(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if name.len() > 253 {
        return Err("longer than 253 characters".into());
    }
    for label in name.split('.') {
        let bytes = label.as_bytes();
        let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
        if bytes.is_empty() || bytes.len() > 63 {
            return Err("each dot-separated part must be 1 to 63 characters".into());
        }
        if !bytes.iter().all(|b| alnum(b) || *b == b'-')
            || !bytes.first().is_some_and(alnum)
            || !bytes.last().is_some_and(alnum)
        {
            return Err(
                "must be lowercase letters, digits, '-' and '.', each part starting and \
                 ending with a letter or digit (RFC 1123)"
                    .into(),
            );
        }
    }
    Ok(())
}

/// The node name as k3s uses it: lower-cased, then a DNS-1123 subdomain.
pub fn node_name(name: &str) -> Result<String, ConfigError> {
    let name = name.trim().to_lowercase();
    dns_subdomain(&name).map_err(|detail| ConfigError::NodeName {
        name: name.clone(),
        detail,
    })?;
    Ok(name)
}

/// A label name part or value: `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`, 63 at most.
fn name_part(s: &str) -> Result<(), String> {
    let bytes = s.as_bytes();
    let alnum = |b: &u8| b.is_ascii_alphanumeric();
    if bytes.len() > 63 {
        return Err("longer than 63 characters".into());
    }
    if bytes.is_empty()
        || !bytes.first().is_some_and(alnum)
        || !bytes.last().is_some_and(alnum)
        || !bytes
            .iter()
            .all(|b| alnum(b) || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(format!(
            "{s:?} must be letters, digits, '-', '_' and '.', starting and ending with a \
             letter or digit"
        ));
    }
    Ok(())
}

/// A Kubernetes qualified name (`prefix/name` or `name`), as label keys and
/// taint keys are.
fn qualified_name(key: &str) -> Result<(), String> {
    match key.split_once('/') {
        Some((prefix, name)) => {
            dns_subdomain(prefix).map_err(|e| format!("prefix {prefix:?}: {e}"))?;
            name_part(name)
        }
        None => name_part(key),
    }
}

/// A label value: empty, or a name part.
fn label_value(value: &str) -> Result<(), String> {
    if value.is_empty() {
        Ok(())
    } else {
        name_part(value)
    }
}

/// A node label, `key=value` (`--node-label`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label {
    /// The key (`example.com/role`).
    pub key: String,
    /// The value (may be empty).
    pub value: String,
}

impl FromStr for Label {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let fail = |detail: String| ConfigError::Label {
            value: s.to_owned(),
            detail,
        };
        let (key, value) = s
            .split_once('=')
            .ok_or_else(|| fail("expected key=value".into()))?;
        qualified_name(key).map_err(|e| fail(format!("key: {e}")))?;
        label_value(value).map_err(|e| fail(format!("value: {e}")))?;
        Ok(Self {
            key: key.to_owned(),
            value: value.to_owned(),
        })
    }
}

impl std::fmt::Display for Label {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}={}", self.key, self.value)
    }
}

/// What a taint does to pods that do not tolerate it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaintEffect {
    /// New pods are not scheduled here.
    NoSchedule,
    /// The scheduler avoids this node.
    PreferNoSchedule,
    /// Running pods are evicted too.
    NoExecute,
}

impl TaintEffect {
    /// The name Kubernetes uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoSchedule => "NoSchedule",
            Self::PreferNoSchedule => "PreferNoSchedule",
            Self::NoExecute => "NoExecute",
        }
    }
}

/// A node taint, `key=value:Effect` or `key:Effect` (`--node-taint`, as the
/// kubelet's `--register-with-taints`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taint {
    /// The key.
    pub key: String,
    /// The value (may be empty).
    pub value: String,
    /// The effect.
    pub effect: TaintEffect,
}

impl FromStr for Taint {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let fail = |detail: String| ConfigError::Taint {
            value: s.to_owned(),
            detail,
        };
        let (spec, effect) = s
            .rsplit_once(':')
            .ok_or_else(|| fail("expected key=value:Effect or key:Effect".into()))?;
        let effect = match effect {
            "NoSchedule" => TaintEffect::NoSchedule,
            "PreferNoSchedule" => TaintEffect::PreferNoSchedule,
            "NoExecute" => TaintEffect::NoExecute,
            other => {
                return Err(fail(format!(
                    "effect {other:?} is not NoSchedule, PreferNoSchedule or NoExecute"
                )));
            }
        };
        let (key, value) = spec.split_once('=').unwrap_or((spec, ""));
        qualified_name(key).map_err(|e| fail(format!("key: {e}")))?;
        label_value(value).map_err(|e| fail(format!("value: {e}")))?;
        Ok(Self {
            key: key.to_owned(),
            value: value.to_owned(),
            effect,
        })
    }
}

impl std::fmt::Display for Taint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.value.is_empty() {
            write!(f, "{}:{}", self.key, self.effect.as_str())
        } else {
            write!(f, "{}={}:{}", self.key, self.value, self.effect.as_str())
        }
    }
}

// --------------------------------------------------------------------------
// Flags and file

/// The join flags of `k3s agent`, for the agent binary to flatten into its
/// command line. Each may also come from the config file (same name without
/// dashes) and some from the environment, see [`AgentConfig::load`].
#[derive(Debug, Clone, Default, clap::Args)]
pub struct AgentArgs {
    /// Server to connect to, https://host:6443 [env: K3S_URL]
    #[arg(short = 's', long, value_name = "URL")]
    pub server: Option<String>,
    /// Token to join the cluster with: the full K10... token, or the bare
    /// password [env: K3S_TOKEN]
    #[arg(short = 't', long, value_name = "TOKEN")]
    pub token: Option<String>,
    /// File holding the token [env: K3S_TOKEN_FILE]
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Node name (default: the hostname, lower-cased) [env: K3S_NODE_NAME]
    #[arg(long, value_name = "NAME")]
    pub node_name: Option<String>,
    /// IP address(es) to advertise for the node, comma-separated or repeated
    /// (default: the address of the default route's interface)
    #[arg(short = 'i', long, value_name = "IP")]
    pub node_ip: Vec<String>,
    /// Label to register the node with, key=value (repeatable)
    #[arg(long, value_name = "KEY=VALUE")]
    pub node_label: Vec<String>,
    /// Taint to register the node with, key=value:Effect (repeatable)
    #[arg(long, value_name = "KEY=VALUE:EFFECT")]
    pub node_taint: Vec<String>,
    /// Folder to hold state [default: /var/lib/armlet]
    #[arg(short = 'd', long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Join any Kubernetes cluster with this prepared kubeconfig (the node's
    /// identity) instead of a K3s server and token
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// Config file (YAML, keys as the long flags without dashes)
    /// [default: /etc/armlet/config.yaml] [env: K3S_CONFIG_FILE]
    #[arg(short = 'c', long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// The keys the join reads from the config file; others belong to the rest
/// of the agent and are left alone.
#[derive(Debug, Default)]
struct FileValues {
    server: Option<String>,
    token: Option<String>,
    token_file: Option<String>,
    node_name: Option<String>,
    node_ip: Vec<String>,
    node_label: Vec<String>,
    node_taint: Vec<String>,
    data_dir: Option<String>,
    kubeconfig: Option<String>,
}

/// A YAML scalar as k3s's `convert.ToString` gives it (`token: 12345` is a
/// string to k3s too). `None` for null.
fn scalar(value: &serde_yaml_ng::Value) -> Result<Option<String>, String> {
    use serde_yaml_ng::Value;
    match value {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        Value::Number(n) => Ok(Some(n.to_string())),
        Value::Bool(b) => Ok(Some(b.to_string())),
        _ => Err("expected a single value".into()),
    }
}

/// A list key: a sequence of scalars, or one scalar.
fn list(value: &serde_yaml_ng::Value) -> Result<Vec<String>, String> {
    match value {
        serde_yaml_ng::Value::Sequence(items) => items
            .iter()
            .filter_map(|item| scalar(item).transpose())
            .collect(),
        other => Ok(scalar(other)?.into_iter().collect()),
    }
}

fn parse_file(text: &str) -> Result<FileValues, String> {
    let document: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(text).map_err(|e| e.to_string())?;
    let mut values = FileValues::default();
    let map = match document {
        serde_yaml_ng::Value::Null => return Ok(values),
        serde_yaml_ng::Value::Mapping(map) => map,
        _ => return Err("expected a mapping of flag names to values".into()),
    };
    for (key, value) in &map {
        let Some(key) = key.as_str() else {
            return Err("keys must be strings".into());
        };
        let at = |e: String| format!("{key}: {e}");
        match key {
            "server" => values.server = scalar(value).map_err(at)?,
            "token" => values.token = scalar(value).map_err(at)?,
            "token-file" => values.token_file = scalar(value).map_err(at)?,
            "node-name" => values.node_name = scalar(value).map_err(at)?,
            "node-ip" => values.node_ip = list(value).map_err(at)?,
            "node-label" => values.node_label = list(value).map_err(at)?,
            "node-taint" => values.node_taint = list(value).map_err(at)?,
            "data-dir" => values.data_dir = scalar(value).map_err(at)?,
            "kubeconfig" => values.kubeconfig = scalar(value).map_err(at)?,
            _ => tracing::debug!(key, "config file key not used by the join"),
        }
    }
    Ok(values)
}

/// The validated configuration of the join.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Where the node's identity comes from.
    pub source: Source,
    /// The node name (lower-cased, RFC 1123).
    pub node_name: String,
    /// The node's addresses (at least one).
    pub node_ips: Vec<IpAddr>,
    /// Labels to register the node with.
    pub node_labels: Vec<Label>,
    /// Taints to register the node with.
    pub node_taints: Vec<Taint>,
    /// armlet's data directory.
    pub data_dir: PathBuf,
    /// The config file that was read, if any.
    pub config_file: Option<PathBuf>,
}

/// What [`AgentConfig::load_with`] needs from the system (replaced in tests).
pub(crate) struct System<'a> {
    pub env: &'a dyn Fn(&str) -> Option<String>,
    pub hostname: &'a dyn Fn() -> Result<String, String>,
    pub node_ips: &'a dyn Fn() -> Result<Vec<IpAddr>, String>,
}

impl AgentConfig {
    /// Resolves `args` with the config file and the environment (see the
    /// module documentation for the precedence), and validates the result.
    pub fn load(args: &AgentArgs) -> Result<Self, ConfigError> {
        let env = |name: &str| std::env::var(name).ok();
        let hostname = || {
            nix::unistd::gethostname()
                .map_err(|e| e.to_string())
                .map(|h| h.to_string_lossy().into_owned())
        };
        Self::load_with(
            args,
            &System {
                env: &env,
                hostname: &hostname,
                node_ips: &default_node_ips,
            },
        )
    }

    pub(crate) fn load_with(args: &AgentArgs, system: &System<'_>) -> Result<Self, ConfigError> {
        // Empty variables count as unset (install scripts export K3S_TOKEN="").
        let env = |name: &str| (system.env)(name).filter(|v| !v.is_empty());

        // The config file: given (must exist), or the default (may be absent).
        let (config_path, required) = match (&args.config, env("K3S_CONFIG_FILE")) {
            (Some(path), _) => (path.clone(), true),
            (None, Some(path)) => (PathBuf::from(path), true),
            (None, None) => (PathBuf::from(DEFAULT_CONFIG_FILE), false),
        };
        let (file, config_file) = match std::fs::read_to_string(&config_path) {
            Ok(text) => {
                let values = parse_file(&text).map_err(|detail| ConfigError::File {
                    path: config_path.clone(),
                    detail,
                })?;
                (values, Some(config_path))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
                (FileValues::default(), None)
            }
            Err(e) => {
                return Err(ConfigError::File {
                    path: config_path,
                    detail: e.to_string(),
                });
            }
        };

        // Command line, then file, then environment.
        let pick = |flag: &Option<String>, file: &Option<String>, var: &str| {
            flag.clone().or_else(|| file.clone()).or_else(|| env(var))
        };
        let path_flag = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
        let server = pick(&args.server, &file.server, "K3S_URL");
        let token = pick(&args.token, &file.token, "K3S_TOKEN");
        let token_file = pick(
            &path_flag(&args.token_file),
            &file.token_file,
            "K3S_TOKEN_FILE",
        );
        let node_name_value = pick(&args.node_name, &file.node_name, "K3S_NODE_NAME");
        let data_dir = path_flag(&args.data_dir)
            .or(file.data_dir)
            .unwrap_or_else(|| DEFAULT_DATA_DIR.to_owned());
        let kubeconfig = path_flag(&args.kubeconfig).or(file.kubeconfig);

        let source = match kubeconfig {
            Some(path) => {
                if server.is_some() {
                    tracing::info!("--kubeconfig given: the server and token are not used");
                }
                Source::Kubeconfig(PathBuf::from(path))
            }
            None => {
                let server = ServerUrl::parse(&server.ok_or(ConfigError::NoServer)?)?;
                // k3s: the token wins; the token file is read only without one.
                let token = match (token, token_file) {
                    (Some(token), _) => token,
                    (None, Some(path)) => {
                        std::fs::read_to_string(&path).map_err(|source| ConfigError::TokenFile {
                            path: PathBuf::from(&path),
                            source,
                        })?
                    }
                    (None, None) => return Err(ConfigError::NoToken),
                };
                Source::Supervisor {
                    server,
                    token: Token::parse(&token)?,
                }
            }
        };

        let node_name = match node_name_value {
            Some(name) => node_name(&name)?,
            None => {
                let host = (system.hostname)().map_err(ConfigError::Hostname)?;
                node_name(&host).map_err(|e| match e {
                    ConfigError::NodeName { name, detail } => ConfigError::NodeName {
                        name,
                        detail: format!("{detail} (the hostname; give --node-name)"),
                    },
                    other => other,
                })?
            }
        };

        let mut node_ips = Vec::new();
        for value in file.node_ip.iter().chain(&args.node_ip) {
            for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                let ip = part
                    .parse::<IpAddr>()
                    .map_err(|_| ConfigError::NodeIp(part.to_owned()))?;
                if !node_ips.contains(&ip) {
                    node_ips.push(ip);
                }
            }
        }
        if node_ips.is_empty() {
            node_ips = (system.node_ips)().map_err(ConfigError::NoNodeIp)?;
        }

        let node_labels = file
            .node_label
            .iter()
            .chain(&args.node_label)
            .map(|s| s.parse())
            .collect::<Result<_, _>>()?;
        let node_taints = file
            .node_taint
            .iter()
            .chain(&args.node_taint)
            .map(|s| s.parse())
            .collect::<Result<_, _>>()?;

        Ok(Self {
            source,
            node_name,
            node_ips,
            node_labels,
            node_taints,
            data_dir: PathBuf::from(data_dir),
            config_file,
        })
    }

    /// The settings of [`crate::join`] for this configuration (node
    /// password file and renewal window at their defaults).
    pub fn join_settings(&self) -> JoinSettings {
        JoinSettings::new(
            self.source.clone(),
            self.node_name.clone(),
            self.node_ips.clone(),
            self.data_dir.clone(),
        )
    }
}

// --------------------------------------------------------------------------
// The default node IP

/// The interface of the default IPv4 route in `/proc/net/route` text: up,
/// destination and mask 0, the lowest metric.
fn default_route_v4(table: &str) -> Option<String> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let flags = u32::from_str_radix(f.get(3)?, 16).ok()?;
            let metric: u32 = f.get(6)?.parse().ok()?;
            let iface = (*f.first()?).to_owned();
            (*f.get(1)? == "00000000" && *f.get(7)? == "00000000" && flags & 1 != 0)
                .then_some((metric, iface))
        })
        .min()
        .map(|(_, iface)| iface)
}

/// The interface of the default IPv6 route in `/proc/net/ipv6_route` text
/// (up, not a reject route, not on `lo`).
fn default_route_v6(table: &str) -> Option<String> {
    const RTF_UP: u32 = 0x1;
    const RTF_REJECT: u32 = 0x200;
    table
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let metric = u32::from_str_radix(f.get(5)?, 16).ok()?;
            let flags = u32::from_str_radix(f.get(8)?, 16).ok()?;
            let iface = *f.get(9)?;
            (f.first()?.bytes().all(|b| b == b'0')
                && *f.get(1)? == "00"
                && flags & RTF_UP != 0
                && flags & RTF_REJECT == 0
                && iface != "lo")
                .then(|| (metric, iface.to_owned()))
        })
        .min()
        .map(|(_, iface)| iface)
}

/// Whether `ip` is a global unicast address (as Go's `IsGlobalUnicast`, so
/// private ranges count: they are what boards have).
fn global_unicast(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            !(v4.is_loopback()
                || v4.is_link_local()
                || v4.is_multicast()
                || v4.is_unspecified()
                || v4.is_broadcast())
        }
        IpAddr::V6(v6) => {
            let link_local = (v6.segments()[0] & 0xffc0) == 0xfe80;
            !(v6.is_loopback() || v6.is_multicast() || v6.is_unspecified() || link_local)
        }
    }
}

/// The node's address as k3s finds it (Kubernetes' `ChooseHostInterface`):
/// the first global IPv4 address of the default route's interface; else
/// IPv6 likewise; else the first global IPv4 address of any interface that
/// is up.
pub fn default_node_ips() -> Result<Vec<IpAddr>, String> {
    use nix::net::if_::InterfaceFlags;
    let addresses: Vec<(String, IpAddr, bool)> = nix::ifaddrs::getifaddrs()
        .map_err(|e| format!("listing interfaces: {e}"))?
        .filter_map(|a| {
            let address = a.address?;
            let ip = if let Some(v4) = address.as_sockaddr_in() {
                IpAddr::V4(v4.ip())
            } else {
                IpAddr::V6(address.as_sockaddr_in6()?.ip())
            };
            let up = a.flags.contains(InterfaceFlags::IFF_UP)
                && !a.flags.contains(InterfaceFlags::IFF_LOOPBACK);
            Some((a.interface_name, ip, up))
        })
        .collect();
    let on = |iface: &str, v4: bool| {
        addresses
            .iter()
            .find(|(name, ip, _)| name == iface && ip.is_ipv4() == v4 && global_unicast(ip))
            .map(|(_, ip, _)| *ip)
    };
    let routes = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    if let Some(ip) = default_route_v4(&routes).and_then(|iface| on(&iface, true)) {
        return Ok(vec![ip]);
    }
    let routes = std::fs::read_to_string("/proc/net/ipv6_route").unwrap_or_default();
    if let Some(ip) = default_route_v6(&routes).and_then(|iface| on(&iface, false)) {
        return Ok(vec![ip]);
    }
    addresses
        .iter()
        .find(|(_, ip, up)| *up && ip.is_ipv4() && global_unicast(ip))
        .map(|(_, ip, _)| vec![*ip])
        .ok_or_else(|| "no default route and no global address on any interface".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::tests::TempDir;
    use std::collections::HashMap;

    const HASH: &str = "df70b3bd61ef657eaa0cd1bc6eef4030328dda72ec0dd6de7c7ff061b7e69cf4";

    fn load(args: &AgentArgs, env: &[(&str, &str)]) -> Result<AgentConfig, ConfigError> {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let lookup = move |name: &str| env.get(name).cloned();
        AgentConfig::load_with(
            args,
            &System {
                env: &lookup,
                hostname: &|| Ok("Board-1".to_owned()),
                node_ips: &|| Ok(vec![IpAddr::from([192, 0, 2, 10])]),
            },
        )
    }

    fn supervisor(c: &AgentConfig) -> (&ServerUrl, &Token) {
        match &c.source {
            Source::Supervisor { server, token } => (server, token),
            Source::Kubeconfig(_) => panic!("not a supervisor join"),
        }
    }

    fn args_with_file(dir: &TempDir, yaml: &str) -> AgentArgs {
        let path = dir.path().join("config.yaml");
        std::fs::write(&path, yaml).unwrap();
        AgentArgs {
            config: Some(path),
            ..AgentArgs::default()
        }
    }

    #[test]
    fn flags_over_file_over_environment() {
        let dir = TempDir::new("config-precedence");
        let mut args = args_with_file(
            &dir,
            &format!(
                "server: https://file.example:6443\ntoken: K10{HASH}::server:filepw\n\
                 node-label: [from=file]\nnode-taint: dedicated=edge:NoSchedule\n\
                 node-ip: 10.0.0.5,fd00::5\ndata-dir: /srv/armlet\nunknown-key: ignored\n"
            ),
        );
        let env = [
            ("K3S_URL", "https://env.example:6443"),
            ("K3S_TOKEN", "envpw"),
            ("K3S_NODE_NAME", "Env-Node"),
        ];
        let c = load(&args, &env).unwrap();
        let (server, token) = supervisor(&c);
        // The file beats the environment...
        assert_eq!(server.origin(), "https://file.example:6443");
        assert_eq!(token.ca_hash(), Some(HASH));
        // ...which still fills what the file leaves out.
        assert_eq!(c.node_name, "env-node");
        assert_eq!(c.data_dir, PathBuf::from("/srv/armlet"));
        assert_eq!(
            c.node_ips,
            vec![IpAddr::from([10, 0, 0, 5]), "fd00::5".parse().unwrap()]
        );
        assert_eq!(c.node_taints[0].to_string(), "dedicated=edge:NoSchedule");

        // Flags beat both; repeatable flags add to the file's values.
        args.server = Some("https://flag.example:6443".into());
        args.node_name = Some("Flag-Node".into());
        args.node_label = vec!["from=flag".into()];
        args.node_ip = vec!["10.0.0.6".into()];
        let c = load(&args, &env).unwrap();
        assert_eq!(supervisor(&c).0.origin(), "https://flag.example:6443");
        assert_eq!(c.node_name, "flag-node");
        let labels: Vec<String> = c.node_labels.iter().map(Label::to_string).collect();
        assert_eq!(labels, ["from=file", "from=flag"]);
        assert_eq!(c.node_ips.len(), 3);
        assert_eq!(c.config_file.as_deref(), args.config.as_deref());
    }

    #[test]
    fn environment_and_defaults_alone() {
        let args = AgentArgs {
            // A missing default file is fine; this one is absent too, but
            // named through the environment it must exist.
            ..AgentArgs::default()
        };
        let env = [
            ("K3S_URL", "https://10.0.0.1:6443"),
            ("K3S_TOKEN", "bare-password"),
        ];
        let c = load(&args, &env).unwrap();
        let (server, token) = supervisor(&c);
        assert_eq!(server.origin(), "https://10.0.0.1:6443");
        assert!(token.is_short());
        // The hostname, lower-cased; the detected address.
        assert_eq!(c.node_name, "board-1");
        assert_eq!(c.node_ips, vec![IpAddr::from([192, 0, 2, 10])]);
        assert_eq!(c.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        assert!(c.node_labels.is_empty());

        let missing = [("K3S_CONFIG_FILE", "/nonexistent/armlet.yaml")];
        let e = load(&args, &missing).unwrap_err().to_string();
        assert!(e.contains("/nonexistent/armlet.yaml"), "{e}");
    }

    #[test]
    fn token_file_and_scalars() {
        let dir = TempDir::new("config-token-file");
        let token_path = dir.path().join("token");
        std::fs::write(&token_path, "from-file-pw\n").unwrap();
        // A numeric token in YAML is a string to k3s too.
        let args = args_with_file(
            &dir,
            &format!(
                "server: https://s:6443\ntoken-file: {}\nnode-label: a=b\n",
                token_path.display()
            ),
        );
        let c = load(&args, &[]).unwrap();
        assert!(supervisor(&c).1.is_short());
        assert_eq!(c.node_labels[0].to_string(), "a=b");
        let args = args_with_file(&dir, "server: https://s:6443\ntoken: 12345\n");
        assert!(load(&args, &[]).is_ok());
        // The token wins over the token file.
        let args = args_with_file(
            &dir,
            "server: https://s:6443\ntoken: K10::server:pw\ntoken-file: /nonexistent\n",
        );
        assert!(!supervisor(&load(&args, &[]).unwrap()).1.is_short());
    }

    #[test]
    fn kubeconfig_mode_needs_no_server() {
        let args = AgentArgs {
            kubeconfig: Some(PathBuf::from("/etc/armlet/node.kubeconfig")),
            node_name: Some("n1".into()),
            ..AgentArgs::default()
        };
        let c = load(&args, &[]).unwrap();
        assert!(matches!(c.source, Source::Kubeconfig(ref p) if p.ends_with("node.kubeconfig")));
    }

    #[test]
    fn clear_errors() {
        let cases: &[(AgentArgs, &str)] = &[
            (AgentArgs::default(), "no server"),
            (
                AgentArgs {
                    server: Some("https://s:6443".into()),
                    ..AgentArgs::default()
                },
                "no token",
            ),
            (
                AgentArgs {
                    server: Some("http://s:6443".into()),
                    token: Some("pw".into()),
                    ..AgentArgs::default()
                },
                "only https:// URLs are supported",
            ),
            (
                AgentArgs {
                    server: Some("https://s:6443".into()),
                    token: Some("K10abc::x:y".into()),
                    ..AgentArgs::default()
                },
                "invalid token CA hash length",
            ),
            (
                AgentArgs {
                    server: Some("https://s:6443".into()),
                    token: Some("pw".into()),
                    node_name: Some("bad_name".into()),
                    ..AgentArgs::default()
                },
                "RFC 1123",
            ),
            (
                AgentArgs {
                    server: Some("https://s:6443".into()),
                    token: Some("pw".into()),
                    node_label: vec!["novalue".into()],
                    ..AgentArgs::default()
                },
                "expected key=value",
            ),
            (
                AgentArgs {
                    server: Some("https://s:6443".into()),
                    token: Some("pw".into()),
                    node_taint: vec!["k=v:Sometimes".into()],
                    ..AgentArgs::default()
                },
                "is not NoSchedule",
            ),
            (
                AgentArgs {
                    server: Some("https://s:6443".into()),
                    token: Some("pw".into()),
                    node_ip: vec!["10.0.0.300".into()],
                    ..AgentArgs::default()
                },
                "not an IP address",
            ),
        ];
        for (args, expected) in cases {
            let e = load(args, &[]).unwrap_err().to_string();
            assert!(e.contains(expected), "{e} (expected {expected})");
        }
        let dir = TempDir::new("config-bad-yaml");
        for (yaml, expected) in [
            ("- a\n- b\n", "expected a mapping"),
            ("server: [a, b]\n", "server: expected a single value"),
            ("server: {\n", "config file"),
        ] {
            let e = load(&args_with_file(&dir, yaml), &[])
                .unwrap_err()
                .to_string();
            assert!(e.contains(expected), "{e} (expected {expected})");
        }
    }

    #[test]
    fn server_urls() {
        let u = ServerUrl::parse("https://k3s.lan:6443/some/path/").unwrap();
        assert_eq!(u.origin(), "https://k3s.lan:6443");
        assert_eq!(u.with_port(9345), "https://k3s.lan:9345");
        assert_eq!(
            ServerUrl::parse("https://[fd00::1]:6443").unwrap().host(),
            "[fd00::1]"
        );
        assert_eq!(ServerUrl::parse("https://k3s.lan").unwrap().port(), 443);
        let e = ServerUrl::parse("https://admin:secret@k3s.lan:6443")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("secret"), "{e}");
        assert!(ServerUrl::parse("k3s.lan:6443").is_err());
        assert!(ServerUrl::parse("").is_err());
    }

    #[test]
    fn labels_and_taints() {
        for ok in ["a=b", "example.com/role=edge", "k=", "K_1.x=V-2"] {
            assert!(ok.parse::<Label>().is_ok(), "{ok}");
        }
        for bad in [
            "=v",
            "-a=b",
            "a=b c",
            "a/b/c=d",
            "Example.com/x=y",
            &format!("k={}", "v".repeat(64)),
        ] {
            assert!(bad.parse::<Label>().is_err(), "{bad}");
        }
        let t: Taint = "node-role.kubernetes.io/edge:NoExecute".parse().unwrap();
        assert_eq!(
            (t.key.as_str(), t.value.as_str(), t.effect),
            ("node-role.kubernetes.io/edge", "", TaintEffect::NoExecute)
        );
        assert_eq!(t.to_string(), "node-role.kubernetes.io/edge:NoExecute");
        assert!("k=v".parse::<Taint>().is_err());
        assert!("k=v:noschedule".parse::<Taint>().is_err());
        assert_eq!(
            "k=v:PreferNoSchedule".parse::<Taint>().unwrap().effect,
            TaintEffect::PreferNoSchedule
        );
    }

    #[test]
    fn node_names() {
        assert_eq!(node_name("Rust-Edge-1").unwrap(), "rust-edge-1");
        assert_eq!(node_name("pi.lan").unwrap(), "pi.lan");
        for bad in ["", "-a", "a-", "a..b", "a_b", &"a".repeat(64), "é"] {
            assert!(node_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn default_routes() {
        let v4 = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                  wlan0\t00000000\t0102A8C0\t0003\t0\t0\t600\t00000000\t0\t0\t0\n\
                  eth0\t00000000\t0101A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n\
                  eth0\t0001A8C0\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0\n";
        assert_eq!(default_route_v4(v4).as_deref(), Some("eth0"));
        assert_eq!(default_route_v4("Iface\tDestination\n"), None);
        let v6 = "00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo\n\
                  00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe800000000000000000000000000001 00000400 00000001 00000000 00000003     eth0\n";
        assert_eq!(default_route_v6(v6).as_deref(), Some("eth0"));
        assert!(global_unicast(&IpAddr::from([192, 168, 1, 5])));
        assert!(!global_unicast(&IpAddr::from([169, 254, 1, 5])));
        assert!(!global_unicast(&"fe80::1".parse().unwrap()));
    }
}
