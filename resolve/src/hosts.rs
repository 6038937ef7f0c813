//! The static host table, `/etc/hosts`, read the way glibc's `files`
//! backend reads it.

use std::io;
use std::net::IpAddr;
use std::path::Path;

/// A parsed hosts file: lines of `address name [aliases...]`.
///
/// Lookups are case-insensitive and return the addresses of every matching
/// line in file order, as glibc's `getaddrinfo` does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostsFile {
    /// One entry per usable line: the address and its names, lower-cased.
    entries: Vec<(IpAddr, Vec<String>)>,
}

impl HostsFile {
    /// Parses hosts-file text. Comments run from `#` to the end of the line;
    /// lines without a valid address or without any name are skipped, like
    /// glibc does, rather than failing the whole table.
    pub fn parse(text: &str) -> Self {
        let entries = text
            .lines()
            .filter_map(|line| {
                let line = line.split('#').next().unwrap_or_default();
                let mut fields = line.split_whitespace();
                let addr = fields.next()?.parse::<IpAddr>().ok()?;
                let names: Vec<String> = fields.map(str::to_ascii_lowercase).collect();
                (!names.is_empty()).then_some((addr, names))
            })
            .collect();
        Self { entries }
    }

    /// Reads and parses a hosts file. A file that does not exist or may not
    /// be read gives an empty table (glibc then just goes on to DNS); other
    /// read errors are returned.
    pub fn load(path: impl AsRef<Path>) -> io::Result<Self> {
        Ok(crate::conf::read_optional(path.as_ref())?
            .map(|text| Self::parse(&text))
            .unwrap_or_default())
    }

    /// The addresses listed for `name` (case-insensitive, one trailing dot
    /// ignored), in file order; empty when the name is not in the table.
    pub fn lookup(&self, name: &str) -> Vec<IpAddr> {
        let name = name.strip_suffix('.').unwrap_or(name);
        self.entries
            .iter()
            .filter(|(_, names)| names.iter().any(|n| n.eq_ignore_ascii_case(name)))
            .map(|(addr, _)| *addr)
            .collect()
    }

    /// True when the table has no usable line.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
# The board's own names
127.0.0.1\tlocalhost
::1 localhost ip6-localhost ip6-loopback
10.0.0.5   Server.LAN server   # trailing comment
10.0.0.6 server.lan
fe80::5 server.lan
not-an-address broken.lan
10.0.0.7
   10.0.0.8 indented.lan
#10.0.0.9 commented.lan
";

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn aliases_and_case() {
        let hosts = HostsFile::parse(SAMPLE);
        assert_eq!(hosts.lookup("server"), vec![ip("10.0.0.5")]);
        assert_eq!(hosts.lookup("ip6-loopback"), vec![ip("::1")]);
        assert_eq!(hosts.lookup("IP6-Localhost"), vec![ip("::1")]);
        assert_eq!(hosts.lookup("indented.lan."), vec![ip("10.0.0.8")]);
    }

    #[test]
    fn every_matching_line_in_file_order() {
        let hosts = HostsFile::parse(SAMPLE);
        assert_eq!(
            hosts.lookup("SERVER.lan"),
            vec![ip("10.0.0.5"), ip("10.0.0.6"), ip("fe80::5")]
        );
        assert_eq!(hosts.lookup("localhost"), vec![ip("127.0.0.1"), ip("::1")]);
    }

    #[test]
    fn comments_and_bad_lines_skipped() {
        let hosts = HostsFile::parse(SAMPLE);
        assert!(hosts.lookup("commented.lan").is_empty());
        assert!(hosts.lookup("broken.lan").is_empty());
        assert!(hosts.lookup("trailing").is_empty());
        assert!(hosts.lookup("comment").is_empty());
        assert!(hosts.lookup("").is_empty());
        assert!(!hosts.is_empty());
        assert!(HostsFile::parse("# nothing\n\n10.1.1.1\n").is_empty());
    }

    #[test]
    fn missing_file_is_empty() {
        let hosts = HostsFile::load("/nonexistent/armlet-resolve/hosts").unwrap();
        assert!(hosts.is_empty());
    }
}
