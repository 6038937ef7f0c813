//! IPv4 networks in CIDR notation.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use crate::NetError;

/// An IPv4 network: a network address and a prefix length, as in
/// `10.42.3.0/24`.
///
/// [`Ipv4Cidr::new`] and [`FromStr`] check it (prefix at most 32, no host
/// bits set); the fields are public for convenience, and every method stays
/// panic-free on a value built by hand with a longer prefix (it counts as 32).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv4Cidr {
    /// The network address (the first address of the range).
    pub addr: Ipv4Addr,
    /// The prefix length, 0 to 32.
    pub prefix: u8,
}

impl Ipv4Cidr {
    /// A checked network: `prefix` must be at most 32 and `addr` must be the
    /// network's first address (`10.42.3.0/24`, not `10.42.3.7/24`).
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Result<Self, NetError> {
        let cidr = Ipv4Cidr { addr, prefix };
        cidr.check().map_err(|reason| NetError::InvalidCidr {
            input: cidr.to_string(),
            reason,
        })?;
        Ok(cidr)
    }

    /// Why the network is not a proper one, if it is not.
    pub(crate) fn check(&self) -> Result<(), String> {
        if self.prefix > 32 {
            return Err(format!("prefix length {} is over 32", self.prefix));
        }
        if self.addr != self.network() {
            return Err(format!(
                "host bits are set (the network is {}/{})",
                self.network(),
                self.prefix
            ));
        }
        Ok(())
    }

    /// The netmask as a number (`/24` is `0xffffff00`).
    pub fn mask(&self) -> u32 {
        u32::MAX
            .checked_shl(32 - u32::from(self.prefix.min(32)))
            .unwrap_or(0)
    }

    /// The first address of the network.
    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) & self.mask())
    }

    /// The last address of the network (its broadcast address).
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) | !self.mask())
    }

    /// Whether `ip` is inside the network.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.network())
    }

    /// Whether the whole of `other` is inside this network.
    pub fn contains_cidr(&self, other: &Ipv4Cidr) -> bool {
        other.prefix.min(32) >= self.prefix.min(32) && self.contains(other.network())
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Ipv4Cidr {
    type Err = NetError;

    /// Parses `a.b.c.d/n`; the prefix is mandatory and host bits must be zero.
    fn from_str(input: &str) -> Result<Self, NetError> {
        let invalid = |reason: &str| NetError::InvalidCidr {
            input: input.to_owned(),
            reason: reason.to_owned(),
        };
        let (addr, prefix) = input
            .trim()
            .split_once('/')
            .ok_or_else(|| invalid("expected an address and a prefix length, like 10.42.0.0/16"))?;
        let addr: Ipv4Addr = addr
            .parse()
            .map_err(|_| invalid("not an IPv4 address before the '/'"))?;
        // u8's parser takes a leading '+', which no CIDR has.
        if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid("the prefix length is not a number"));
        }
        let prefix: u8 = prefix
            .parse()
            .map_err(|_| invalid("the prefix length is over 32"))?;
        let cidr = Ipv4Cidr { addr, prefix };
        cidr.check().map_err(|reason| invalid(&reason))?;
        Ok(cidr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let cidr: Ipv4Cidr = "10.42.3.0/24".parse().unwrap();
        assert_eq!(cidr.addr, Ipv4Addr::new(10, 42, 3, 0));
        assert_eq!(cidr.prefix, 24);
        assert_eq!(cidr.to_string(), "10.42.3.0/24");
        assert_eq!(cidr.broadcast(), Ipv4Addr::new(10, 42, 3, 255));
        assert_eq!("0.0.0.0/0".parse::<Ipv4Cidr>().unwrap().mask(), 0);
        assert_eq!("10.1.2.3/32".parse::<Ipv4Cidr>().unwrap().mask(), u32::MAX);
    }

    #[test]
    fn contains() {
        let cluster: Ipv4Cidr = "10.42.0.0/16".parse().unwrap();
        let pods: Ipv4Cidr = "10.42.3.0/24".parse().unwrap();
        assert!(cluster.contains(Ipv4Addr::new(10, 42, 200, 1)));
        assert!(!cluster.contains(Ipv4Addr::new(10, 43, 0, 1)));
        assert!(cluster.contains_cidr(&pods));
        assert!(!pods.contains_cidr(&cluster));
        let all: Ipv4Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(Ipv4Addr::new(192, 0, 2, 1)));
    }

    #[test]
    fn malformed_input_is_an_error() {
        for bad in [
            "",
            "/",
            "10.42.0.0",
            "10.42.0.0/",
            "10.42.0.0/33",
            "10.42.0.0/255",
            "10.42.0.0/256",
            "10.42.0.0/-1",
            "10.42.0.0/+8",
            "10.42.0.0/1/2",
            "10.42.0.0/a",
            "10.42.0/16",
            "10.42.0.256/24",
            "::1/128",
            "10.42.3.7/24",
            "hello",
            "10.42.0.0/99999999999999999999",
        ] {
            let err = bad.parse::<Ipv4Cidr>().unwrap_err();
            assert!(matches!(err, NetError::InvalidCidr { .. }), "{bad}: {err}");
        }
        assert!(Ipv4Cidr::new(Ipv4Addr::new(10, 0, 0, 0), 33).is_err());
        assert!(Ipv4Cidr::new(Ipv4Addr::new(10, 0, 0, 1), 8).is_err());
        // Hand-built values with a bad prefix do not panic.
        let odd = Ipv4Cidr {
            addr: Ipv4Addr::new(10, 0, 0, 0),
            prefix: 200,
        };
        assert_eq!(odd.mask(), u32::MAX);
        assert!(odd.contains(Ipv4Addr::new(10, 0, 0, 0)));
        assert!(odd.check().is_err());
    }
}
