//! armlet-net on the real kernel. Every test builds its node in a network
//! namespace of its own and its pods in more, each bound to a file in a
//! temporary directory as `ip netns` binds them: the host's network namespace
//! is never touched (each thread entering one asserts it left the host's).
//!
//! Needs root (namespaces, bridges, nftables). The masquerade test builds its
//! "outside" link with the `ip` command, run from a thread inside the node's
//! namespace (a child process starts in its parent thread's namespaces):
//! test scaffolding only, the crate itself never forks.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use armlet_net::{Ipv4Cidr, NetError, NetworkConfig, PodAddress, PodNetwork};
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::net::if_::if_nametoindex;
use nix::sched::{CloneFlags, setns, unshare};

const TIMEOUT: Duration = Duration::from_secs(20);

/// A network namespace bound to a file, unmounted (and so freed) on drop.
struct Netns {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Netns {
    fn new() -> Netns {
        let dir = tempfile::Builder::new()
            .prefix("armlet-net-test")
            .tempdir()
            .unwrap();
        let path = dir.path().join("netns");
        File::create(&path).unwrap();
        let target = path.clone();
        thread::spawn(move || {
            unshare(CloneFlags::CLONE_NEWNET)
                .expect("these tests need root (CAP_SYS_ADMIN) to make network namespaces");
            // /proc/thread-self: this thread's namespace, not the process's.
            mount(
                Some("/proc/thread-self/ns/net"),
                &target,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .expect("bind-mount the namespace");
        })
        .join()
        .unwrap();
        Netns { path, _dir: dir }
    }

    fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on a new thread inside this namespace.
    fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> thread::JoinHandle<T> {
        let file = File::open(&self.path).unwrap();
        thread::spawn(move || {
            enter(&file);
            f()
        })
    }

    /// Runs `f` inside this namespace and waits for it (panics propagate).
    fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let file = File::open(&self.path).unwrap();
        thread::scope(|s| {
            s.spawn(|| {
                enter(&file);
                f()
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = umount2(&self.path, MntFlags::MNT_DETACH);
    }
}

fn enter(netns: &File) {
    setns(netns, CloneFlags::CLONE_NEWNET).expect("enter the namespace");
    let ns = |path: &str| fs::metadata(path).unwrap().ino();
    // /proc/self is the main thread, which stays in the host's namespace.
    assert_ne!(
        ns("/proc/thread-self/ns/net"),
        ns("/proc/self/ns/net"),
        "a test thread must never work in the host's network namespace"
    );
}

fn cidr(s: &str) -> Ipv4Cidr {
    s.parse().unwrap()
}

fn config(state: &Path, pod_cidr: &str) -> NetworkConfig {
    NetworkConfig {
        bridge: "cni0".into(),
        pod_cidr: cidr(pod_cidr),
        cluster_cidr: vec![cidr("10.42.0.0/16")],
        state_dir: state.to_owned(),
        mtu: 1450,
    }
}

/// The interfaces of the calling thread's namespace (/proc/net would be the
/// main thread's).
fn links() -> BTreeSet<String> {
    fs::read_to_string("/proc/thread-self/net/dev")
        .unwrap()
        .lines()
        .skip(2)
        .filter_map(|line| line.split(':').next())
        .map(|name| name.trim().to_owned())
        .collect()
}

fn veths() -> BTreeSet<String> {
    links()
        .into_iter()
        .filter(|name| name.starts_with("veth"))
        .collect()
}

/// The IPv4 routes of the calling thread's namespace: (interface,
/// destination/prefix, gateway).
fn routes() -> Vec<(String, Ipv4Cidr, Ipv4Addr)> {
    let addr = |hex: &str| Ipv4Addr::from(u32::from_str_radix(hex, 16).unwrap().to_ne_bytes());
    fs::read_to_string("/proc/thread-self/net/route")
        .unwrap()
        .lines()
        .skip(1)
        .map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let prefix = u32::from(addr(f[7])).count_ones() as u8;
            (
                f[0].to_owned(),
                Ipv4Cidr::new(addr(f[1]), prefix).unwrap(),
                addr(f[2]),
            )
        })
        .collect()
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Accepts one TCP connection inside `ns`; the handle gives the peer's address.
fn listen(ns: &Netns) -> (u16, thread::JoinHandle<Ipv4Addr>) {
    let (tx, rx) = mpsc::channel();
    let server = ns.spawn(move || {
        let listener = TcpListener::bind("0.0.0.0:0").unwrap();
        tx.send(listener.local_addr().unwrap().port()).unwrap();
        listener.set_nonblocking(true).unwrap();
        let deadline = Instant::now() + TIMEOUT;
        let (mut stream, peer) = loop {
            match listener.accept() {
                Ok(conn) => break conn,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    assert!(Instant::now() < deadline, "no connection came");
                    thread::sleep(Duration::from_millis(10));
                }
                Err(e) => panic!("accept: {e}"),
            }
        };
        stream.set_nonblocking(false).unwrap();
        stream.write_all(b"hi").unwrap();
        match peer.ip() {
            IpAddr::V4(ip) => ip,
            other => panic!("peer {other}"),
        }
    });
    (rx.recv_timeout(TIMEOUT).unwrap(), server)
}

/// Connects from inside `ns` to `to:port`, reads the greeting, and returns
/// the local address the connection used.
fn connect(ns: &Netns, to: Ipv4Addr, port: u16) -> Ipv4Addr {
    ns.run(|| {
        let mut stream = TcpStream::connect_timeout(&SocketAddr::from((to, port)), TIMEOUT)
            .unwrap_or_else(|e| panic!("connect to {to}:{port}: {e}"));
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        let mut greeting = [0; 2];
        stream.read_exact(&mut greeting).unwrap();
        assert_eq!(&greeting, b"hi");
        match stream.local_addr().unwrap().ip() {
            IpAddr::V4(ip) => ip,
            other => panic!("local {other}"),
        }
    })
}

/// `from` connects to `to_ip` inside `to`: the source address `to` sees.
fn seen_source(from: &Netns, to: &Netns, to_ip: Ipv4Addr) -> Ipv4Addr {
    let (port, server) = listen(to);
    connect(from, to_ip, port);
    server.join().unwrap()
}

#[test]
fn pods_get_distinct_addresses_reach_each_other_and_attach_is_idempotent() {
    let (node, pod_a, pod_b) = (Netns::new(), Netns::new(), Netns::new());
    let state = tempfile::tempdir().unwrap();
    let (a, b) = node.run(|| {
        let net = PodNetwork::open(config(state.path(), "10.42.3.0/24")).unwrap();
        net.ensure_node().unwrap();
        // Set in this namespace (files under /proc/sys/net follow the
        // namespace of the thread that opens them).
        assert_eq!(
            fs::read_to_string("/proc/sys/net/ipv4/ip_forward")
                .unwrap()
                .trim(),
            "1"
        );
        let a = net.attach("pod-a", pod_a.path()).unwrap();
        let b = net.attach("pod-b", pod_b.path()).unwrap();
        let gateway = Ipv4Addr::new(10, 42, 3, 1);
        for pod in [&a, &b] {
            assert!(cidr("10.42.3.0/24").contains(pod.ip), "{pod:?}");
            assert!(pod.ip != gateway && pod.ip != Ipv4Addr::new(10, 42, 3, 0));
            assert_eq!(pod.prefix, 24);
            assert_eq!(pod.gateway, gateway);
            assert!(pod.host_veth.starts_with("veth") && pod.host_veth.len() <= 15);
        }
        assert_ne!(a.ip, b.ip);
        assert_ne!(a.host_veth, b.host_veth);

        // Again: the same answer, and nothing rebuilt.
        let index = if_nametoindex(a.host_veth.as_str()).unwrap();
        assert_eq!(net.attach("pod-a", pod_a.path()).unwrap(), a);
        assert_eq!(if_nametoindex(a.host_veth.as_str()).unwrap(), index);
        assert_eq!(
            veths(),
            BTreeSet::from([a.host_veth.clone(), b.host_veth.clone()])
        );
        assert_eq!(
            net.allocations(),
            BTreeMap::from([("pod-a".to_owned(), a.ip), ("pod-b".to_owned(), b.ip)])
        );
        (a, b)
    });
    pod_a.run(|| {
        assert_eq!(
            links(),
            BTreeSet::from(["lo".to_owned(), "eth0".to_owned()])
        );
        let default = (
            "eth0".to_owned(),
            cidr("0.0.0.0/0"),
            Ipv4Addr::new(10, 42, 3, 1),
        );
        assert!(routes().contains(&default), "{:?}", routes());
    });

    // TCP both ways between the pods, with the pods' own addresses.
    assert_eq!(seen_source(&pod_b, &pod_a, a.ip), b.ip);
    assert_eq!(seen_source(&pod_a, &pod_b, b.ip), a.ip);
    // The gateway is the node itself.
    assert_eq!(seen_source(&pod_a, &node, a.gateway), a.ip);
}

#[test]
fn addresses_survive_reopening_and_detach_releases_them() {
    let (node, pod_a, pod_b) = (Netns::new(), Netns::new(), Netns::new());
    let state = tempfile::tempdir().unwrap();
    node.run(|| {
        let net = PodNetwork::open(config(state.path(), "10.42.3.0/24")).unwrap();
        net.ensure_node().unwrap();
        let a = net.attach("pod-a", pod_a.path()).unwrap();
        let index = if_nametoindex(a.host_veth.as_str()).unwrap();
        assert_eq!(
            fs::read_to_string(state.path().join(a.ip.to_string()))
                .unwrap()
                .trim(),
            "pod-a"
        );
        drop(net);

        // A restarted agent: same records, same pair left as it was.
        let net = PodNetwork::open(config(state.path(), "10.42.3.0/24")).unwrap();
        assert_eq!(
            net.allocations(),
            BTreeMap::from([("pod-a".to_owned(), a.ip)])
        );
        net.ensure_node().unwrap();
        assert_eq!(net.attach("pod-a", pod_a.path()).unwrap(), a);
        assert_eq!(if_nametoindex(a.host_veth.as_str()).unwrap(), index);

        net.detach("pod-a").unwrap();
        assert!(net.allocations().is_empty());
        assert!(veths().is_empty());
        assert!(!state.path().join(a.ip.to_string()).exists());
        net.detach("pod-a").unwrap(); // again: nothing to do
        pod_a.run(|| assert_eq!(links(), BTreeSet::from(["lo".to_owned()])));

        // Round robin: the next pod does not get the address just freed.
        let b = net.attach("pod-b", pod_b.path()).unwrap();
        assert_ne!(b.ip, a.ip);
        // And pod-a can come back, in the same namespace.
        let again = net.attach("pod-a", pod_a.path()).unwrap();
        assert_eq!(veths().len(), 2);
        assert_ne!(again.ip, b.ip);
    });
}

#[test]
fn release_except_frees_the_network_of_dead_pods() {
    let node = Netns::new();
    let pods: Vec<Netns> = (0..4).map(|_| Netns::new()).collect();
    let state = tempfile::tempdir().unwrap();
    let survivor = node.run(|| {
        let net = PodNetwork::open(config(state.path(), "10.42.3.0/24")).unwrap();
        net.ensure_node().unwrap();
        let attached: Vec<PodAddress> = ["pod-a", "pod-b", "pod-c"]
            .iter()
            .zip(&pods)
            .map(|(uid, ns)| net.attach(uid, ns.path()).unwrap())
            .collect();
        let live = BTreeSet::from(["pod-b".to_owned()]);
        assert_eq!(net.release_except(&live).unwrap(), ["pod-a", "pod-c"]);
        assert_eq!(
            net.allocations(),
            BTreeMap::from([("pod-b".to_owned(), attached[1].ip)])
        );
        assert_eq!(veths(), BTreeSet::from([attached[1].host_veth.clone()]));
        assert!(net.release_except(&live).unwrap().is_empty());

        // A pod whose record was lost (say, a state directory restored
        // from an older copy): its veth on the bridge is still found.
        let d = net.attach("pod-d", pods[3].path()).unwrap();
        fs::remove_file(state.path().join(d.ip.to_string())).unwrap();
        let net = PodNetwork::open(config(state.path(), "10.42.3.0/24")).unwrap();
        assert!(!net.allocations().contains_key("pod-d"));
        assert_eq!(net.release_except(&live).unwrap(), ["pod-d"]);
        assert_eq!(veths(), BTreeSet::from([attached[1].host_veth.clone()]));
        attached[1].clone()
    });
    // The survivor still works.
    assert_eq!(seen_source(&pods[1], &node, survivor.gateway), survivor.ip);
}

#[test]
fn a_slash_30_holds_one_pod() {
    let (node, pod_a, pod_b) = (Netns::new(), Netns::new(), Netns::new());
    let state = tempfile::tempdir().unwrap();
    node.run(|| {
        let net = PodNetwork::open(config(state.path(), "10.42.3.0/30")).unwrap();
        net.ensure_node().unwrap();
        let a = net.attach("pod-a", pod_a.path()).unwrap();
        assert_eq!(a.ip, Ipv4Addr::new(10, 42, 3, 2));
        let err = net.attach("pod-b", pod_b.path()).unwrap_err();
        assert!(
            matches!(err, NetError::Exhausted { in_use: 1, .. }),
            "{err}"
        );
        assert_eq!(
            err.to_string(),
            "no free pod address left in 10.42.3.0/30 (1 in use)"
        );
        assert_eq!(veths().len(), 1);
        net.detach("pod-a").unwrap();
        assert_eq!(net.attach("pod-b", pod_b.path()).unwrap().ip, a.ip);
    });
}

#[test]
fn masquerade_applies_only_outside_the_cluster() {
    let (node, outside, pod_a, pod_b) = (Netns::new(), Netns::new(), Netns::new(), Netns::new());
    let state = tempfile::tempdir().unwrap();
    let (a, b) = node.run(|| {
        let net = PodNetwork::open(config(state.path(), "10.42.3.0/24")).unwrap();
        net.ensure_node().unwrap();
        let a = net.attach("pod-a", pod_a.path()).unwrap();
        let b = net.attach("pod-b", pod_b.path()).unwrap();
        // The node's uplink: 192.0.2.0/24 is the outside world, 10.42.9.0/24
        // another node's pods (inside the cluster CIDR).
        let outside_path = outside.path().to_str().unwrap();
        ip(&[
            "link",
            "add",
            "name",
            "uplink",
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            outside_path,
        ]);
        ip(&["addr", "add", "192.0.2.2/24", "dev", "uplink"]);
        ip(&["addr", "add", "10.42.9.2/24", "dev", "uplink"]);
        ip(&["link", "set", "uplink", "up"]);
        (a, b)
    });
    outside.run(|| {
        ip(&["link", "set", "lo", "up"]);
        ip(&["addr", "add", "192.0.2.1/24", "dev", "eth0"]);
        ip(&["addr", "add", "10.42.9.1/24", "dev", "eth0"]);
        ip(&["link", "set", "eth0", "up"]);
        // The other node routes our pods back to us (as flannel does); the
        // outside world knows nothing of them.
        ip(&["route", "add", "10.42.3.0/24", "via", "10.42.9.2"]);
    });

    // Leaving the cluster: the node's address.
    assert_eq!(
        seen_source(&pod_a, &outside, Ipv4Addr::new(192, 0, 2, 1)),
        Ipv4Addr::new(192, 0, 2, 2)
    );
    // To another node's pods, through the same node and link: the pod's own.
    assert_eq!(
        seen_source(&pod_a, &outside, Ipv4Addr::new(10, 42, 9, 1)),
        a.ip
    );
    // Between the node's pods: the pod's own.
    assert_eq!(seen_source(&pod_a, &pod_b, b.ip), a.ip);
}

#[test]
fn ensure_node_twice_leaves_one_set_of_rules_and_follows_a_cidr_change() {
    let (node, pod_a) = (Netns::new(), Netns::new());
    let state = tempfile::tempdir().unwrap();
    node.run(|| {
        let net = PodNetwork::open(config(state.path(), "10.42.3.0/24")).unwrap();
        assert!(net.nft_rules().unwrap().is_empty());
        net.ensure_node().unwrap();
        let first = net.nft_rules().unwrap();
        net.ensure_node().unwrap();
        let rules = net.nft_rules().unwrap();
        let chains: Vec<&str> = rules.iter().map(|r| r.chain.as_str()).collect();
        assert_eq!(chains, ["postrouting", "postrouting", "forward", "forward"]);
        let exprs = |rules: &[armlet_net::NftRule]| {
            rules
                .iter()
                .map(|r| r.expressions.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(exprs(&first), exprs(&rules));
        // saddr 10.42.3.0/24, daddr 10.42.0.0/16: return.
        assert!(
            rules[0]
                .expressions
                .contains(&"cmp eq reg 1 0x0a2a0300".to_owned())
        );
        assert!(
            rules[0]
                .expressions
                .contains(&"cmp eq reg 1 0x0a2a0000".to_owned())
        );
        assert_eq!(
            rules[0].expressions.last().unwrap(),
            "immediate reg 0 return"
        );
        // daddr not multicast: masquerade, fully random.
        assert!(
            rules[1]
                .expressions
                .contains(&"cmp neq reg 1 0xe0000000".to_owned())
        );
        assert_eq!(rules[1].expressions.last().unwrap(), "masq flags 0x10");
        assert!(
            routes().contains(&("cni0".into(), cidr("10.42.3.0/24"), Ipv4Addr::UNSPECIFIED)),
            "{:?}",
            routes()
        );
        net.attach("pod-a", pod_a.path()).unwrap();
        drop(net);

        // The node got another pod CIDR: old records dropped, the bridge
        // readdressed, the rules rewritten.
        let net = PodNetwork::open(config(state.path(), "10.42.7.0/24")).unwrap();
        assert!(net.allocations().is_empty());
        net.ensure_node().unwrap();
        let cni0: Vec<Ipv4Cidr> = routes()
            .into_iter()
            .filter(|r| r.0 == "cni0")
            .map(|r| r.1)
            .collect();
        assert_eq!(cni0, [cidr("10.42.7.0/24")]);
        let rules = net.nft_rules().unwrap();
        assert_eq!(rules.len(), 4);
        assert!(
            rules[1]
                .expressions
                .contains(&"cmp eq reg 1 0x0a2a0700".to_owned())
        );
        // The pod is re-attached with an address of the new CIDR.
        let a = net.attach("pod-a", pod_a.path()).unwrap();
        assert!(cidr("10.42.7.0/24").contains(a.ip));
        assert_eq!(veths().len(), 1);
    });
    pod_a.run(|| {
        let default = (
            "eth0".to_owned(),
            cidr("0.0.0.0/0"),
            Ipv4Addr::new(10, 42, 7, 1),
        );
        assert!(routes().contains(&default), "{:?}", routes());
    });
}

#[test]
fn concurrent_attaches_get_distinct_addresses() {
    let node = Netns::new();
    let pods: Vec<Netns> = (0..8).map(|_| Netns::new()).collect();
    let state = tempfile::tempdir().unwrap();
    node.run(|| {
        let net = PodNetwork::open(config(state.path(), "10.42.3.0/24")).unwrap();
        net.ensure_node().unwrap();
        // Threads spawned here start in the node's namespace.
        let attached: Vec<PodAddress> = thread::scope(|s| {
            let workers: Vec<_> = pods
                .iter()
                .enumerate()
                .map(|(i, ns)| {
                    let net = &net;
                    s.spawn(move || net.attach(&format!("pod-{i}"), ns.path()).unwrap())
                })
                .collect();
            workers.into_iter().map(|w| w.join().unwrap()).collect()
        });
        let ips: BTreeSet<Ipv4Addr> = attached.iter().map(|a| a.ip).collect();
        assert_eq!(ips.len(), 8);
        assert_eq!(net.allocations().len(), 8);
        assert_eq!(veths().len(), 8);
    });
}

#[test]
fn bad_input_gives_errors() {
    let (node, pod) = (Netns::new(), Netns::new());
    let state = tempfile::tempdir().unwrap();
    node.run(|| {
        let net = PodNetwork::open(config(state.path(), "10.42.3.0/24")).unwrap();
        let err = net.attach("pod-a", pod.path()).unwrap_err();
        assert!(matches!(err, NetError::NoBridge(_)), "{err}");
        assert!(net.allocations().is_empty());
        net.ensure_node().unwrap();

        for uid in ["", "../../etc/passwd", "pod a", "pod\n", "pöd"] {
            let err = net.attach(uid, pod.path()).unwrap_err();
            assert!(
                matches!(err, NetError::InvalidPodUid { .. }),
                "{uid:?}: {err}"
            );
            let err = net.detach(uid).unwrap_err();
            assert!(
                matches!(err, NetError::InvalidPodUid { .. }),
                "{uid:?}: {err}"
            );
        }
        let missing = state.path().join("no-such-netns");
        let err = net.attach("pod-a", &missing).unwrap_err();
        assert!(matches!(err, NetError::Namespace { .. }), "{err}");
        assert!(net.allocations().is_empty());
        let not_a_netns = tempfile::NamedTempFile::new().unwrap();
        let err = net.attach("pod-a", not_a_netns.path()).unwrap_err();
        assert!(matches!(err, NetError::Namespace { .. }), "{err}");
        assert!(err.to_string().contains("not a network namespace"), "{err}");
        // Nothing half-made is left on the node; the address stays recorded
        // (a retry would get it) until detach.
        assert!(veths().is_empty());
        assert!(net.allocations().contains_key("pod-a"));
        net.detach("pod-a").unwrap();
        assert!(net.allocations().is_empty());

        // A bridge name taken by another kind of interface.
        let lo = PodNetwork::open(NetworkConfig {
            bridge: "lo".into(),
            ..config(state.path(), "10.42.3.0/24")
        })
        .unwrap();
        let err = lo.ensure_node().unwrap_err();
        assert!(matches!(err, NetError::NotABridge { .. }), "{err}");

        for bad in [
            "10.42.0.0/33",
            "10.42.0.0",
            "10.42.0.1/16",
            "x/8",
            "10.42.0.0/-1",
        ] {
            assert!(bad.parse::<Ipv4Cidr>().is_err(), "{bad}");
        }
    });
}
