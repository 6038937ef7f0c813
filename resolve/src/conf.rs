//! Resolver configuration: `/etc/resolv.conf` read with glibc's rules and
//! defaults, plus the hosts table.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::path::Path;
use std::time::Duration;

use crate::HostsFile;

/// Where glibc reads the resolver configuration.
pub const RESOLV_CONF_PATH: &str = "/etc/resolv.conf";
/// Where glibc reads the static host table.
pub const HOSTS_PATH: &str = "/etc/hosts";

/// glibc's MAXNS: further `nameserver` lines are ignored.
const MAX_NAMESERVERS: usize = 3;
/// glibc's RES_MAXNDOTS.
const MAX_NDOTS: u32 = 15;
/// glibc's RES_MAXRETRANS (seconds).
const MAX_TIMEOUT_SECS: u32 = 30;
/// glibc's RES_MAXRETRY.
const MAX_ATTEMPTS: u32 = 5;
const DNS_PORT: u16 = 53;

/// Everything a [`Resolver`](crate::Resolver) needs to know.
///
/// The fields are public so that a caller (or a test) can build a
/// configuration by hand, e.g. pointing at a local test server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolverConfig {
    /// Name servers, tried in this order for every try.
    pub nameservers: Vec<SocketAddr>,
    /// Search domains appended to short names, in order.
    pub search: Vec<String>,
    /// Names with at least this many dots are tried as-is before the search
    /// domains.
    pub ndots: u8,
    /// How long to wait for one server to answer one try.
    pub timeout: Duration,
    /// How many times the whole list of servers is tried.
    pub attempts: u8,
    /// The static host table, consulted before DNS.
    pub hosts: HostsFile,
}

impl Default for ResolverConfig {
    /// glibc's defaults when resolv.conf is missing: a server on the local
    /// host, no search domains, ndots 1, timeout 5 s, 2 attempts.
    fn default() -> Self {
        Self {
            nameservers: vec![SocketAddr::new(Ipv4Addr::LOCALHOST.into(), DNS_PORT)],
            search: Vec::new(),
            ndots: 1,
            timeout: Duration::from_secs(5),
            attempts: 2,
            hosts: HostsFile::default(),
        }
    }
}

impl ResolverConfig {
    /// Reads `/etc/resolv.conf` and `/etc/hosts`.
    pub fn from_system() -> io::Result<Self> {
        Self::from_paths(RESOLV_CONF_PATH, HOSTS_PATH)
    }

    /// Reads a resolv.conf and a hosts file from the given paths. A missing
    /// (or unreadable) resolv.conf gives glibc's defaults, a missing hosts
    /// file an empty table; other I/O errors are returned.
    pub fn from_paths(resolv_conf: impl AsRef<Path>, hosts: impl AsRef<Path>) -> io::Result<Self> {
        let mut config = match read_optional(resolv_conf.as_ref())? {
            Some(text) => Self::parse_resolv_conf(&text),
            None => Self::default(),
        };
        config.hosts = HostsFile::load(hosts)?;
        Ok(config)
    }

    /// Parses resolv.conf text (the hosts table is left empty).
    ///
    /// Like glibc: a keyword counts only at the very start of a line and
    /// followed by a space or tab; lines starting with `#` or `;` and
    /// unknown lines are ignored; at most 3 name servers are kept and with
    /// none the local host is used; the last `search` or `domain` line wins;
    /// `options` values are clamped (ndots ≤ 15, timeout ≤ 30 s,
    /// attempts ≤ 5). Timeout and attempts are also raised to at least 1,
    /// since 0 would mean never asking anyone.
    pub fn parse_resolv_conf(text: &str) -> Self {
        let mut config = Self {
            nameservers: Vec::new(),
            ..Self::default()
        };
        for line in text.lines() {
            if let Some(rest) = directive(line, "nameserver") {
                if config.nameservers.len() < MAX_NAMESERVERS {
                    config.nameservers.extend(parse_nameserver(rest));
                }
            } else if let Some(rest) = directive(line, "domain") {
                if let Some(domain) = rest.split_whitespace().next() {
                    config.search = vec![domain.to_owned()];
                }
            } else if let Some(rest) = directive(line, "search") {
                let list: Vec<String> = rest.split_whitespace().map(str::to_owned).collect();
                if !list.is_empty() {
                    config.search = list;
                }
            } else if let Some(rest) = directive(line, "options") {
                for option in rest.split_whitespace() {
                    config.apply_option(option);
                }
            }
        }
        if config.nameservers.is_empty() {
            config.nameservers = Self::default().nameservers;
        }
        config
    }

    fn apply_option(&mut self, option: &str) {
        if let Some(value) = option.strip_prefix("ndots:") {
            self.ndots = atoi(value).min(MAX_NDOTS) as u8;
        } else if let Some(value) = option.strip_prefix("timeout:") {
            self.timeout = Duration::from_secs(atoi(value).clamp(1, MAX_TIMEOUT_SECS).into());
        } else if let Some(value) = option.strip_prefix("attempts:") {
            self.attempts = atoi(value).clamp(1, MAX_ATTEMPTS) as u8;
        }
        // rotate, edns0, single-request, ...: not implemented, ignored.
    }
}

/// Reads a whole configuration file; `None` when it is absent or may not be
/// read, which glibc treats as "not configured" rather than as an error.
/// Invalid UTF-8 is replaced rather than rejected: the parsers skip lines
/// they do not understand anyway.
pub(crate) fn read_optional(path: &Path) -> io::Result<Option<String>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(String::from_utf8_lossy(&bytes).into_owned())),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound
                    | io::ErrorKind::PermissionDenied
                    | io::ErrorKind::NotADirectory
                    | io::ErrorKind::IsADirectory
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// glibc's MATCH(): `keyword` at the start of the line, then a blank.
fn directive<'a>(line: &'a str, keyword: &str) -> Option<&'a str> {
    let rest = line.strip_prefix(keyword)?;
    rest.starts_with([' ', '\t']).then_some(rest)
}

/// An IPv4 or IPv6 address, the latter optionally with `%scope` (an
/// interface name or number, as glibc accepts); trailing words ignored.
fn parse_nameserver(rest: &str) -> Option<SocketAddr> {
    let token = rest.split_whitespace().next()?;
    if let Ok(v4) = token.parse::<Ipv4Addr>() {
        return Some(SocketAddr::new(IpAddr::V4(v4), DNS_PORT));
    }
    let (addr, scope) = match token.split_once('%') {
        Some((addr, scope)) => (addr, Some(scope)),
        None => (token, None),
    };
    let v6 = addr.parse::<Ipv6Addr>().ok()?;
    let scope_id = scope.map_or(0, interface_index);
    Some(SocketAddr::V6(SocketAddrV6::new(v6, DNS_PORT, 0, scope_id)))
}

/// glibc tries `if_nametoindex` first, then a number. Without libc's NSS-free
/// `if_nametoindex` at hand, sysfs gives the same index on Linux.
fn interface_index(scope: &str) -> u32 {
    let plain = !scope.is_empty() && !scope.contains('/') && !scope.starts_with('.');
    if plain {
        let path = format!("/sys/class/net/{scope}/ifindex");
        if let Ok(Ok(index)) = std::fs::read_to_string(path).map(|s| s.trim().parse()) {
            return index;
        }
    }
    atoi(scope)
}

/// C's `atoi` for the non-negative numbers resolv.conf holds: leading
/// digits, saturating, 0 when there are none.
fn atoi(text: &str) -> u32 {
    text.bytes()
        .take_while(u8::is_ascii_digit)
        .fold(0u32, |n, d| {
            n.saturating_mul(10).saturating_add(u32::from(d - b'0'))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(text: &str) -> SocketAddr {
        SocketAddr::new(text.parse().unwrap(), 53)
    }

    #[test]
    fn empty_file_gives_glibc_defaults() {
        let config = ResolverConfig::parse_resolv_conf("");
        assert_eq!(config, ResolverConfig::default());
        assert_eq!(config.nameservers, vec![v4("127.0.0.1")]);
        assert!(config.search.is_empty());
        assert_eq!(config.ndots, 1);
        assert_eq!(config.timeout, Duration::from_secs(5));
        assert_eq!(config.attempts, 2);
    }

    #[test]
    fn nameservers() {
        let config = ResolverConfig::parse_resolv_conf(
            "# generated\n\
             ; another comment\n\
             nameserver 192.0.2.1\n\
             nameserver\tbogus\n\
             \x20nameserver 192.0.2.99\n\
             nameserver 2001:db8::53  # trailing words\n\
             nameservers 192.0.2.98\n\
             nameserver fe80::1%7\n\
             nameserver 192.0.2.4\n",
        );
        assert_eq!(
            config.nameservers,
            vec![
                v4("192.0.2.1"),
                v4("2001:db8::53"),
                SocketAddr::V6(SocketAddrV6::new("fe80::1".parse().unwrap(), 53, 0, 7)),
            ]
        );
    }

    #[test]
    fn scope_by_interface_name() {
        let config = ResolverConfig::parse_resolv_conf("nameserver fe80::1%lo\n");
        let SocketAddr::V6(addr) = config.nameservers[0] else {
            panic!("not IPv6");
        };
        let expected = std::fs::read_to_string("/sys/class/net/lo/ifindex")
            .map_or(0, |s| s.trim().parse().unwrap());
        assert_eq!(addr.scope_id(), expected);
    }

    #[test]
    fn no_usable_nameserver_falls_back_to_localhost() {
        let config = ResolverConfig::parse_resolv_conf("nameserver not.an.ip\nsearch lan\n");
        assert_eq!(config.nameservers, vec![v4("127.0.0.1")]);
        assert_eq!(config.search, vec!["lan"]);
    }

    #[test]
    fn last_search_or_domain_wins() {
        let conf = ResolverConfig::parse_resolv_conf;
        assert_eq!(
            conf("domain a.lan\nsearch b.lan c.lan\n").search,
            vec!["b.lan", "c.lan"]
        );
        assert_eq!(
            conf("search b.lan c.lan\ndomain a.lan extra\n").search,
            vec!["a.lan"]
        );
        assert_eq!(conf("search b.lan\nsearch\n").search, vec!["b.lan"]);
        assert_eq!(
            conf("search x\tY.lan\n#search z\n").search,
            vec!["x", "Y.lan"]
        );
    }

    #[test]
    fn options_and_clamps() {
        let conf = ResolverConfig::parse_resolv_conf;
        let c = conf("options ndots:3 timeout:2 attempts:4 rotate edns0\n");
        assert_eq!(
            (c.ndots, c.timeout, c.attempts),
            (3, Duration::from_secs(2), 4)
        );
        let c = conf("options ndots:99 timeout:100\noptions attempts:9\n");
        assert_eq!(
            (c.ndots, c.timeout, c.attempts),
            (15, Duration::from_secs(30), 5)
        );
        let c = conf("options ndots:0 timeout:0 attempts:0\n");
        assert_eq!(
            (c.ndots, c.timeout, c.attempts),
            (0, Duration::from_secs(1), 1)
        );
        let c = conf("options ndots:x timeout:99999999999999999999 attempts:2junk\n");
        assert_eq!(
            (c.ndots, c.timeout, c.attempts),
            (0, Duration::from_secs(30), 2)
        );
        // Not an options line: no blank after the keyword, or indented.
        let c = conf("options:ndots:5\n options ndots:5\n");
        assert_eq!(c.ndots, 1);
    }

    #[test]
    fn files_read_from_paths() {
        let dir = std::env::temp_dir().join(format!("armlet-resolve-conf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let resolv = dir.join("resolv.conf");
        let hosts = dir.join("hosts");
        std::fs::write(&resolv, "nameserver 192.0.2.53\nsearch lan\n").unwrap();
        std::fs::write(&hosts, "10.9.9.9 nas\n").unwrap();
        let config = ResolverConfig::from_paths(&resolv, &hosts).unwrap();
        assert_eq!(config.nameservers, vec![v4("192.0.2.53")]);
        assert_eq!(config.search, vec!["lan"]);
        assert_eq!(
            config.hosts.lookup("NAS"),
            vec![IpAddr::from([10, 9, 9, 9])]
        );
        std::fs::remove_dir_all(&dir).unwrap();

        let missing = ResolverConfig::from_paths(dir.join("nope"), dir.join("nope")).unwrap();
        assert_eq!(missing, ResolverConfig::default());
    }
}
