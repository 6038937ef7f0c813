//! Host name resolution without `getaddrinfo`.
//!
//! armlet ships as a fully static glibc binary, and static glibc cannot load
//! NSS modules, so `getaddrinfo` (and std's `ToSocketAddrs` for names) does
//! not work there. This crate resolves names the way glibc does for
//! `hosts: files dns`, in plain Rust: IP literals, then `/etc/hosts`, then
//! DNS (A and AAAA over UDP, TCP when truncated) using the servers, search
//! list and options of `/etc/resolv.conf`.
//!
//! ```no_run
//! let resolver = armlet_resolve::Resolver::from_system()?;
//! let addrs = resolver.lookup_socket_addrs("k3s.lan", 6443)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod conf;
mod hosts;
mod message;
#[cfg(feature = "reqwest")]
mod reqwest_dns;
mod transport;

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

pub use conf::{HOSTS_PATH, RESOLV_CONF_PATH, ResolverConfig};
pub use hosts::HostsFile;
pub use message::NameError;
#[cfg(feature = "reqwest")]
pub use reqwest_dns::ReqwestResolver;

use message::{Name, RCODE_NXDOMAIN, RCODE_SERVFAIL, TYPE_A, TYPE_AAAA};
use transport::{Failure, Query};

/// Why a name could not be resolved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ResolveError {
    /// The name is not a valid host name; nothing was sent anywhere.
    #[error("invalid host name {name:?}: {reason}")]
    InvalidName {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        reason: NameError,
    },
    /// The name does not exist (NXDOMAIN, or no address records) under any
    /// search domain.
    #[error("host {host:?} not found")]
    NotFound {
        /// The name as given.
        host: String,
    },
    /// No name server answered in time.
    #[error("no answer for {host:?} from DNS server(s) {}: timed out", list(.servers))]
    Timeout {
        /// The name as given.
        host: String,
        /// The servers that were asked.
        servers: Vec<SocketAddr>,
    },
    /// The servers answered with an error code such as SERVFAIL or REFUSED.
    #[error("DNS server failure for {host:?}: {} (rcode {rcode})", rcode_name(*.rcode))]
    ServerFailure {
        /// The name as given.
        host: String,
        /// The DNS response code.
        rcode: u8,
    },
    /// An answer to our query could not be decoded.
    #[error("malformed DNS response for {host:?}: {what}")]
    Malformed {
        /// The name as given.
        host: String,
        /// What was wrong with the response.
        what: String,
    },
    /// A socket error, e.g. "connection refused" when no server listens.
    #[error("I/O error resolving {host:?}: {source}")]
    Io {
        /// The name as given.
        host: String,
        /// The underlying error.
        source: io::Error,
    },
    /// The configuration lists no name server and the name needs DNS.
    #[error("cannot resolve {host:?}: no DNS server configured")]
    NoNameservers {
        /// The name as given.
        host: String,
    },
}

fn list(servers: &[SocketAddr]) -> String {
    let names: Vec<String> = servers.iter().map(SocketAddr::to_string).collect();
    names.join(", ")
}

fn rcode_name(rcode: u8) -> &'static str {
    match rcode {
        1 => "FORMERR",
        2 => "SERVFAIL",
        4 => "NOTIMP",
        5 => "REFUSED",
        _ => "error",
    }
}

/// What DNS said about one candidate name (one entry of the search list).
enum Answer {
    Found(Vec<IpAddr>),
    /// NXDOMAIN, or a name with no A/AAAA records: try the next candidate.
    Missing,
    Failed(Failure),
}

/// A stub resolver: hosts file first, then the configured DNS servers.
///
/// It holds only its configuration, so it is cheap to clone and can be
/// shared between threads; each lookup opens its own sockets.
#[derive(Debug, Clone)]
pub struct Resolver {
    config: ResolverConfig,
}

impl Resolver {
    /// A resolver using `config`.
    pub fn new(config: ResolverConfig) -> Self {
        Self { config }
    }

    /// A resolver configured from `/etc/resolv.conf` and `/etc/hosts`.
    /// The files are read once; build a new resolver to pick up changes.
    pub fn from_system() -> io::Result<Self> {
        ResolverConfig::from_system().map(Self::new)
    }

    /// The configuration in use.
    pub fn config(&self) -> &ResolverConfig {
        &self.config
    }

    /// Resolves `host` to its addresses: IPv4 first, then IPv6, without
    /// duplicates, each family in the order the source gave.
    ///
    /// Order of sources: an IP literal (`[::1]` too) is returned as-is;
    /// then the hosts table; `localhost` then always means the loopback
    /// addresses; then DNS, through the search list as glibc walks it.
    pub fn lookup(&self, host: &str) -> Result<Vec<IpAddr>, ResolveError> {
        if let Some(ip) = ip_literal(host) {
            return Ok(vec![ip]);
        }
        let name = Name::parse(host).map_err(|reason| ResolveError::InvalidName {
            name: host.to_owned(),
            reason,
        })?;
        let listed = self.config.hosts.lookup(host);
        if !listed.is_empty() {
            return Ok(sorted(listed));
        }
        if host
            .strip_suffix('.')
            .unwrap_or(host)
            .eq_ignore_ascii_case("localhost")
        {
            return Ok(vec![Ipv4Addr::LOCALHOST.into(), Ipv6Addr::LOCALHOST.into()]);
        }
        self.lookup_dns(host, &name).map(sorted)
    }

    /// [`lookup`](Self::lookup), with `port` attached to every address.
    pub fn lookup_socket_addrs(
        &self,
        host: &str,
        port: u16,
    ) -> Result<Vec<SocketAddr>, ResolveError> {
        Ok(self
            .lookup(host)?
            .into_iter()
            .map(|ip| SocketAddr::new(ip, port))
            .collect())
    }

    /// glibc's `res_nsearch`: which candidate names to ask for, in which
    /// order, and when to stop.
    fn lookup_dns(&self, host: &str, name: &Name) -> Result<Vec<IpAddr>, ResolveError> {
        if self.config.nameservers.is_empty() {
            return Err(ResolveError::NoNameservers {
                host: host.to_owned(),
            });
        }
        if host.ends_with('.') {
            // Absolute: never combined with a search domain.
            return match self.query(name) {
                Answer::Found(addrs) => Ok(addrs),
                Answer::Missing => Err(self.not_found(host)),
                Answer::Failed(failure) => Err(self.error(host, failure)),
            };
        }
        let dots = host.bytes().filter(|&b| b == b'.').count();
        let mut tried_as_is = false;
        // glibc reports the as-is answer when that was tried first.
        let mut as_is_error = None;
        if dots >= usize::from(self.config.ndots) {
            match self.query(name) {
                Answer::Found(addrs) => return Ok(addrs),
                Answer::Missing => as_is_error = Some(self.not_found(host)),
                Answer::Failed(failure) => as_is_error = Some(self.error(host, failure)),
            }
            tried_as_is = true;
        }
        // NXDOMAIN, no data and SERVFAIL move on to the next domain; any
        // other failure (timeout, REFUSED...) ends the search, as in glibc.
        let mut servfail = None;
        let mut hard_failure = None;
        // Remembers a failure; true when it must end the search.
        let mut record = |failure: Failure| match failure {
            Failure::Rcode(RCODE_SERVFAIL) => {
                servfail = Some(failure);
                false
            }
            failure => {
                hard_failure.get_or_insert(failure);
                true
            }
        };
        for domain in &self.config.search {
            let domain = domain.strip_suffix('.').unwrap_or(domain);
            let candidate = if domain.is_empty() {
                // "." in the search list stands for the name as-is.
                if tried_as_is {
                    continue;
                }
                tried_as_is = true;
                name.clone()
            } else {
                // A suffix that makes the name invalid (too long, bad
                // characters) just is not a candidate.
                match Name::parse(&format!("{host}.{domain}")) {
                    Ok(candidate) => candidate,
                    Err(_) => continue,
                }
            };
            match self.query(&candidate) {
                Answer::Found(addrs) => return Ok(addrs),
                Answer::Missing => {}
                Answer::Failed(failure) => {
                    if record(failure) {
                        break;
                    }
                }
            }
        }
        if !tried_as_is {
            match self.query(name) {
                Answer::Found(addrs) => return Ok(addrs),
                Answer::Missing => {}
                Answer::Failed(failure) => {
                    record(failure);
                }
            }
        }
        Err(match (as_is_error, hard_failure.or(servfail)) {
            (Some(error), _) => error,
            (None, Some(failure)) => self.error(host, failure),
            (None, None) => self.not_found(host),
        })
    }

    /// Asks for A and AAAA records of one candidate name: every server in
    /// turn, `attempts` rounds, until each query has a final answer.
    fn query(&self, name: &Name) -> Answer {
        let id_a = transport::query_id();
        let mut id_aaaa = transport::query_id();
        if id_aaaa == id_a {
            id_aaaa = id_a.wrapping_add(1);
        }
        let queries = [
            Query::new(name, TYPE_A, id_a),
            Query::new(name, TYPE_AAAA, id_aaaa),
        ];
        let mut answers = [None, None];
        let mut failures = [None, None];
        'rounds: for _ in 0..self.config.attempts.max(1) {
            for &server in &self.config.nameservers {
                let pending: Vec<usize> = (0..queries.len())
                    .filter(|&i| answers[i].is_none())
                    .collect();
                if pending.is_empty() {
                    break 'rounds;
                }
                let asked: Vec<&Query> = pending.iter().map(|&i| &queries[i]).collect();
                let outcomes = transport::exchange(server, &asked, self.config.timeout);
                for (i, outcome) in pending.into_iter().zip(outcomes) {
                    match outcome {
                        Ok(message) => answers[i] = Some(message),
                        // An error a server said beats silence from another.
                        Err(failure) => {
                            if failure.is_answer()
                                || !failures[i].as_ref().is_some_and(Failure::is_answer)
                            {
                                failures[i] = Some(failure);
                            }
                        }
                    }
                }
            }
        }
        let mut addrs = Vec::new();
        let mut nxdomain = false;
        let mut failure = None;
        for ((query, answer), failed) in queries.iter().zip(answers).zip(failures) {
            match answer {
                Some(message) if message.rcode() == RCODE_NXDOMAIN => nxdomain = true,
                Some(message) => addrs.extend(message.addresses(name, query.qtype)),
                None => failure = failure.or(failed),
            }
        }
        // One family is enough (an IPv4-only host has no AAAA), and an
        // NXDOMAIN says the name does not exist for any type.
        match (addrs.is_empty(), nxdomain, failure) {
            (false, _, _) => Answer::Found(addrs),
            (true, true, _) | (true, false, None) => Answer::Missing,
            (true, false, Some(failure)) => Answer::Failed(failure),
        }
    }

    fn not_found(&self, host: &str) -> ResolveError {
        ResolveError::NotFound {
            host: host.to_owned(),
        }
    }

    fn error(&self, host: &str, failure: Failure) -> ResolveError {
        let host = host.to_owned();
        match failure {
            Failure::Timeout => ResolveError::Timeout {
                host,
                servers: self.config.nameservers.clone(),
            },
            Failure::Io(source) => ResolveError::Io { host, source },
            Failure::Rcode(rcode) => ResolveError::ServerFailure { host, rcode },
            Failure::Malformed(what) => ResolveError::Malformed {
                host,
                what: what.to_owned(),
            },
        }
    }
}

/// An IPv4 or IPv6 literal, the latter also in URL brackets (`[::1]`).
fn ip_literal(host: &str) -> Option<IpAddr> {
    match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(inner) => inner.parse::<Ipv6Addr>().ok().map(IpAddr::V6),
        None => host.parse().ok(),
    }
}

/// IPv4 first (what most clients here can reach), then IPv6, keeping each
/// family's order and dropping repeats.
fn sorted(addrs: Vec<IpAddr>) -> Vec<IpAddr> {
    let (v4, v6): (Vec<IpAddr>, Vec<IpAddr>) = addrs.into_iter().partition(IpAddr::is_ipv4);
    let mut out: Vec<IpAddr> = Vec::with_capacity(v4.len() + v6.len());
    for addr in v4.into_iter().chain(v6) {
        if !out.contains(&addr) {
            out.push(addr);
        }
    }
    out
}

#[cfg(test)]
mod tests;
