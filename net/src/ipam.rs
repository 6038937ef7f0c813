//! Pod address allocation, kept on disk as CNI's host-local IPAM keeps it: one
//! file per allocated address, named after it and holding the owner (here the
//! pod uid), plus `last_reserved_ip` so allocation goes round-robin and a
//! freed address is not handed out again at once.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use crate::{Ipv4Cidr, NetError};

const LAST_RESERVED: &str = "last_reserved_ip";
const TMP_SUFFIX: &str = ".tmp";

/// The allocations of one pod CIDR, mirrored in memory.
#[derive(Debug)]
pub(crate) struct Ipam {
    dir: PathBuf,
    cidr: Ipv4Cidr,
    by_ip: BTreeMap<Ipv4Addr, String>,
    by_uid: BTreeMap<String, Ipv4Addr>,
    last: Option<Ipv4Addr>,
}

impl Ipam {
    /// Loads the records of `dir` (created if missing), dropping those that
    /// are not pod addresses of `cidr`: the node's pod CIDR changed since
    /// they were written, so they can only mislead.
    pub fn open(dir: &Path, cidr: Ipv4Cidr) -> Result<Self, NetError> {
        let state = |path: &Path| {
            let path = path.to_owned();
            move |source| NetError::State { path, source }
        };
        fs::create_dir_all(dir).map_err(state(dir))?;
        let mut ipam = Ipam {
            dir: dir.to_owned(),
            cidr,
            by_ip: BTreeMap::new(),
            by_uid: BTreeMap::new(),
            last: None,
        };
        let mut entries: Vec<(Ipv4Addr, PathBuf)> = Vec::new();
        for entry in fs::read_dir(dir).map_err(state(dir))? {
            let entry = entry.map_err(state(dir))?;
            let path = entry.path();
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.ends_with(TMP_SUFFIX) {
                // A write that did not reach its rename: never a record.
                remove(&path)?;
            } else if let Ok(ip) = name.parse::<Ipv4Addr>() {
                entries.push((ip, path));
            }
        }
        // Sorted, so that which duplicate survives does not depend on the
        // directory's order.
        entries.sort();
        for (ip, path) in entries {
            if !ipam.is_pod_address(ip) {
                tracing::info!(%ip, cidr = %cidr, "dropping an address record outside the pod CIDR");
                remove(&path)?;
                continue;
            }
            let uid = fs::read_to_string(&path).map_err(state(&path))?;
            let uid = uid.lines().next().unwrap_or_default().trim().to_owned();
            if crate::check_uid(&uid).is_err() {
                tracing::warn!(%ip, path = %path.display(), "dropping an unreadable address record");
                remove(&path)?;
                continue;
            }
            if let Some(first) = ipam.by_uid.get(&uid) {
                tracing::warn!(%ip, %first, %uid, "dropping a second address record of a pod");
                remove(&path)?;
                continue;
            }
            ipam.by_uid.insert(uid.clone(), ip);
            ipam.by_ip.insert(ip, uid);
        }
        let last_path = dir.join(LAST_RESERVED);
        ipam.last = match fs::read_to_string(&last_path) {
            Ok(text) => text.trim().parse().ok(),
            Err(err) if err.kind() == io::ErrorKind::NotFound => None,
            Err(source) => {
                return Err(NetError::State {
                    path: last_path,
                    source,
                });
            }
        };
        Ok(ipam)
    }

    /// The address pods never get: network, gateway and broadcast excluded.
    fn range(&self) -> (u32, u32) {
        (
            u32::from(self.cidr.network()).saturating_add(2),
            u32::from(self.cidr.broadcast()).saturating_sub(1),
        )
    }

    fn is_pod_address(&self, ip: Ipv4Addr) -> bool {
        let (first, last) = self.range();
        self.cidr.contains(ip) && (first..=last).contains(&u32::from(ip))
    }

    /// The address of `uid`, if it has one.
    pub fn get(&self, uid: &str) -> Option<Ipv4Addr> {
        self.by_uid.get(uid).copied()
    }

    /// Every allocation, by pod uid.
    pub fn allocations(&self) -> BTreeMap<String, Ipv4Addr> {
        self.by_uid.clone()
    }

    /// The address of `uid`: the recorded one, else the next free one after
    /// the last handed out, wrapping around.
    pub fn allocate(&mut self, uid: &str) -> Result<Ipv4Addr, NetError> {
        if let Some(ip) = self.get(uid) {
            return Ok(ip);
        }
        let (first, last) = self.range();
        if first > last {
            return Err(NetError::Exhausted {
                cidr: self.cidr,
                in_use: 0,
            });
        }
        let size = last - first + 1;
        let start = match self.last {
            Some(ip) if self.is_pod_address(ip) => u32::from(ip) - first + 1,
            _ => 0,
        };
        let free = (0..size)
            .map(|i| Ipv4Addr::from(first + (start + i) % size))
            .find(|ip| !self.by_ip.contains_key(ip));
        let Some(ip) = free else {
            return Err(NetError::Exhausted {
                cidr: self.cidr,
                in_use: self.by_ip.len(),
            });
        };
        // The record first: once it is on disk the address is taken, even if
        // remembering the round-robin position fails.
        write_atomic(&self.dir, &ip.to_string(), uid)?;
        self.by_ip.insert(ip, uid.to_owned());
        self.by_uid.insert(uid.to_owned(), ip);
        self.last = Some(ip);
        write_atomic(&self.dir, LAST_RESERVED, &ip.to_string())?;
        tracing::debug!(%ip, %uid, "allocated a pod address");
        Ok(ip)
    }

    /// Frees the address of `uid`, returning it.
    pub fn release(&mut self, uid: &str) -> Result<Option<Ipv4Addr>, NetError> {
        let Some(ip) = self.get(uid) else {
            return Ok(None);
        };
        remove(&self.dir.join(ip.to_string()))?;
        sync_dir(&self.dir)?;
        self.by_ip.remove(&ip);
        self.by_uid.remove(uid);
        tracing::debug!(%ip, %uid, "released a pod address");
        Ok(Some(ip))
    }
}

fn remove(path: &Path) -> Result<(), NetError> {
    match fs::remove_file(path) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => Err(NetError::State {
            path: path.to_owned(),
            source: err,
        }),
        _ => Ok(()),
    }
}

/// Writes `dir/name` so that it holds either the old or the new contents
/// after a crash or power cut: a temporary file, synced, renamed over it,
/// then the directory synced so the rename itself is durable.
fn write_atomic(dir: &Path, name: &str, contents: &str) -> Result<(), NetError> {
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}{TMP_SUFFIX}"));
    let result = (|| {
        let mut file = File::create(&tmp)?;
        file.write_all(contents.as_bytes())?;
        file.write_all(b"\n")?;
        file.sync_all()?;
        fs::rename(&tmp, &path)
    })();
    if let Err(source) = result {
        let _ = fs::remove_file(&tmp);
        return Err(NetError::State { path, source });
    }
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<(), NetError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| NetError::State {
            path: dir.to_owned(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Ipv4Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn allocates_round_robin_skipping_reserved_addresses() {
        let dir = tempfile::tempdir().unwrap();
        let mut ipam = Ipam::open(dir.path(), cidr("10.42.3.0/29")).unwrap();
        // .0 network, .1 gateway, .7 broadcast: .2 to .6 for pods.
        let a = ipam.allocate("a").unwrap();
        let b = ipam.allocate("b").unwrap();
        assert_eq!(a, Ipv4Addr::new(10, 42, 3, 2));
        assert_eq!(b, Ipv4Addr::new(10, 42, 3, 3));
        assert_eq!(ipam.allocate("a").unwrap(), a, "reused");
        ipam.release("a").unwrap();
        // Round robin: the freed .2 is not reused while others are free.
        assert_eq!(ipam.allocate("c").unwrap(), Ipv4Addr::new(10, 42, 3, 4));
        for uid in ["d", "e"] {
            ipam.allocate(uid).unwrap();
        }
        // Wraps around to the freed .2.
        assert_eq!(ipam.allocate("f").unwrap(), Ipv4Addr::new(10, 42, 3, 2));
        let err = ipam.allocate("g").unwrap_err();
        assert!(
            matches!(err, NetError::Exhausted { in_use: 5, .. }),
            "{err}"
        );

        let on_disk = fs::read_to_string(dir.path().join("10.42.3.4")).unwrap();
        assert_eq!(on_disk.trim(), "c");
        let last = fs::read_to_string(dir.path().join(LAST_RESERVED)).unwrap();
        assert_eq!(last.trim(), "10.42.3.2");
    }

    #[test]
    fn reopening_keeps_records_and_drops_stale_ones() {
        let dir = tempfile::tempdir().unwrap();
        let mut ipam = Ipam::open(dir.path(), cidr("10.42.3.0/24")).unwrap();
        let a = ipam.allocate("a").unwrap();
        let b = ipam.allocate("b").unwrap();
        drop(ipam);
        // Debris: a half-written record, a record of another CIDR, a second
        // record of "a", a record with garbage, the gateway.
        fs::write(dir.path().join("10.42.3.9.tmp"), "x").unwrap();
        fs::write(dir.path().join("10.99.0.5"), "old\n").unwrap();
        fs::write(dir.path().join("10.42.3.200"), "a\n").unwrap();
        fs::write(dir.path().join("10.42.3.201"), "../../etc\n").unwrap();
        fs::write(dir.path().join("10.42.3.1"), "gw\n").unwrap();

        let mut ipam = Ipam::open(dir.path(), cidr("10.42.3.0/24")).unwrap();
        let expected: BTreeMap<_, _> = [("a".to_owned(), a), ("b".to_owned(), b)].into();
        assert_eq!(ipam.allocations(), expected);
        for gone in [
            "10.42.3.9.tmp",
            "10.99.0.5",
            "10.42.3.200",
            "10.42.3.201",
            "10.42.3.1",
        ] {
            assert!(!dir.path().join(gone).exists(), "{gone}");
        }
        // Continues after the last one handed out.
        assert_eq!(ipam.allocate("c").unwrap(), Ipv4Addr::new(10, 42, 3, 4));

        // The pod CIDR changed: every record is dropped.
        let ipam = Ipam::open(dir.path(), cidr("10.42.7.0/24")).unwrap();
        assert!(ipam.allocations().is_empty());
    }

    #[test]
    fn tiny_networks() {
        let dir = tempfile::tempdir().unwrap();
        let mut ipam = Ipam::open(dir.path(), cidr("10.0.0.0/30")).unwrap();
        assert_eq!(ipam.allocate("a").unwrap(), Ipv4Addr::new(10, 0, 0, 2));
        assert!(matches!(
            ipam.allocate("b"),
            Err(NetError::Exhausted { in_use: 1, .. })
        ));
        let mut ipam = Ipam::open(dir.path(), cidr("10.0.0.0/31")).unwrap();
        assert!(matches!(
            ipam.allocate("b"),
            Err(NetError::Exhausted { in_use: 0, .. })
        ));
        let mut ipam = Ipam::open(dir.path(), cidr("10.0.0.0/32")).unwrap();
        assert!(ipam.allocate("b").is_err());
    }
}
