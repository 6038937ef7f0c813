//! Unit tests of the crate's checks, and of its netlink layers on the real
//! kernel, always inside network namespaces of their own (never the host's).

use std::fs::File;
use std::sync::mpsc;

use nix::sched::{CloneFlags, unshare};

use super::*;

fn config(dir: &Path) -> NetworkConfig {
    NetworkConfig {
        bridge: DEFAULT_BRIDGE.into(),
        pod_cidr: "10.42.3.0/24".parse().unwrap(),
        cluster_cidr: vec!["10.42.0.0/16".parse().unwrap()],
        state_dir: dir.to_owned(),
        mtu: DEFAULT_MTU,
    }
}

#[test]
fn host_veth_names_are_stable_and_short() {
    let name = host_veth_name("6f0c5a3e-1b2d-4c5e-8f90-123456789abc");
    assert_eq!(name, host_veth_name("6f0c5a3e-1b2d-4c5e-8f90-123456789abc"));
    assert_ne!(name, host_veth_name("6f0c5a3e-1b2d-4c5e-8f90-123456789abd"));
    assert!(name.len() <= MAX_IFNAME);
    assert!(name.starts_with("veth"));
    assert!(name[4..].bytes().all(|b| b.is_ascii_hexdigit()));
    // FNV-1a is fixed: a name must not change between armlet versions, or a
    // restarted agent would lose track of its pods' veths.
    assert_eq!(host_veth_name("a"), "vethe40c292c");
}

#[test]
fn odd_pod_uids_are_errors() {
    for uid in ["pod-a", "6f0c5a3e-1b2d-4c5e-8f90-123456789abc", "A_b.c"] {
        check_uid(uid).unwrap();
    }
    let long = "x".repeat(MAX_UID + 1);
    for uid in [
        "",
        "../etc",
        "a b",
        "a/b",
        "a\nb",
        "é",
        "a\0b",
        long.as_str(),
    ] {
        let err = check_uid(uid).unwrap_err();
        assert!(
            matches!(err, NetError::InvalidPodUid { .. }),
            "{uid:?}: {err}"
        );
    }
}

#[test]
fn unusable_configs_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let good = config(dir.path());
    PodNetwork::open(good.clone()).unwrap();
    let bad_configs = [
        NetworkConfig {
            bridge: String::new(),
            ..good.clone()
        },
        NetworkConfig {
            bridge: "a-very-long-bridge-name".into(),
            ..good.clone()
        },
        NetworkConfig {
            bridge: "cni/0".into(),
            ..good.clone()
        },
        NetworkConfig {
            pod_cidr: Ipv4Cidr {
                addr: Ipv4Addr::new(10, 42, 3, 0),
                prefix: 40,
            },
            ..good.clone()
        },
        NetworkConfig {
            pod_cidr: Ipv4Cidr {
                addr: Ipv4Addr::new(10, 42, 3, 9),
                prefix: 24,
            },
            ..good.clone()
        },
        NetworkConfig {
            pod_cidr: "10.42.3.0/31".parse().unwrap(),
            ..good.clone()
        },
        NetworkConfig {
            cluster_cidr: vec![Ipv4Cidr {
                addr: Ipv4Addr::new(10, 42, 0, 0),
                prefix: 33,
            }],
            ..good.clone()
        },
        NetworkConfig {
            mtu: 0,
            ..good.clone()
        },
        NetworkConfig {
            mtu: 70000,
            ..good.clone()
        },
    ];
    for bad in bad_configs {
        let err = PodNetwork::open(bad.clone()).unwrap_err();
        assert!(matches!(err, NetError::InvalidConfig(_)), "{bad:?}: {err}");
    }
    // A state directory that cannot be created.
    let file = dir.path().join("file");
    fs::write(&file, "").unwrap();
    let err = PodNetwork::open(NetworkConfig {
        state_dir: file.join("sub"),
        ..good
    })
    .unwrap_err();
    assert!(matches!(err, NetError::State { .. }), "{err}");
}

#[test]
fn errors_read_well() {
    let err = NetError::Netlink {
        op: "create bridge cni0".into(),
        source: io::Error::from_raw_os_error(libc::EEXIST),
        detail: Some("Device exists".into()),
    };
    assert_eq!(
        err.to_string(),
        "create bridge cni0: File exists (os error 17) (Device exists)"
    );
    let err = NetError::Exhausted {
        cidr: "10.42.3.0/30".parse().unwrap(),
        in_use: 1,
    };
    assert_eq!(
        err.to_string(),
        "no free pod address left in 10.42.3.0/30 (1 in use)"
    );
}

/// Runs `f` on a thread of its own in a new, empty network namespace.
fn in_new_netns<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            unshare(CloneFlags::CLONE_NEWNET)
                .expect("these tests need root (CAP_SYS_ADMIN) to make network namespaces");
            f()
        })
        .join()
        .unwrap()
    })
}

/// A namespace kept alive by an open descriptor, on a parked thread's
/// behalf; `in_netns` enters it by that descriptor.
fn new_netns_file() -> File {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        unshare(CloneFlags::CLONE_NEWNET).expect("need root to make network namespaces");
        tx.send(File::open("/proc/thread-self/ns/net").unwrap())
            .unwrap();
    })
    .join()
    .unwrap();
    rx.recv().unwrap()
}

#[test]
fn links_addresses_and_routes_over_rtnetlink() {
    let pod = new_netns_file();
    in_new_netns(|| {
        let mut rtnl = Rtnl::open().unwrap();
        assert!(rtnl.link_by_name("nothere0").unwrap().is_none());
        rtnl.add_bridge("br-test", 1400).unwrap();
        let bridge = rtnl.link_by_name("br-test").unwrap().unwrap();
        assert_eq!(bridge.kind.as_deref(), Some("bridge"));
        assert_eq!(bridge.mtu, 1400);
        assert!(!bridge.up);
        let err = rtnl.add_bridge("br-test", 1400).unwrap_err();
        assert!(err.to_string().contains("create bridge br-test"), "{err}");

        rtnl.add_veth("vtest", 1400, "eth0", &pod).unwrap();
        let host = rtnl.link_by_name("vtest").unwrap().unwrap();
        assert_eq!(host.kind.as_deref(), Some("veth"));
        rtnl.set_link(
            &host,
            &LinkChange {
                up: Some(true),
                master: Some(bridge.index),
                alias: Some("uid-1"),
                ..LinkChange::default()
            },
        )
        .unwrap();
        rtnl.set_hairpin(&host).unwrap();
        let host = rtnl.link_by_name("vtest").unwrap().unwrap();
        assert_eq!(host.master, Some(bridge.index));
        assert_eq!(host.alias.as_deref(), Some("uid-1"));
        assert!(host.up);
        assert!(rtnl.links().unwrap().iter().any(|l| l.name == "vtest"));

        let peer = in_netns(&pod, "test", || {
            let mut rtnl = Rtnl::open()?;
            let eth0 = rtnl.link_by_name("eth0")?.expect("eth0 in the pod");
            configure_pod(
                Ipv4Addr::new(10, 9, 0, 2),
                24,
                Ipv4Addr::new(10, 9, 0, 1),
                1400,
            )?;
            // Twice: nothing to change the second time.
            configure_pod(
                Ipv4Addr::new(10, 9, 0, 2),
                24,
                Ipv4Addr::new(10, 9, 0, 1),
                1400,
            )?;
            assert_eq!(
                rtnl.addresses(eth0.index)?,
                [(Ipv4Addr::new(10, 9, 0, 2), 24)]
            );
            assert_eq!(
                rtnl.default_route()?,
                Some(DefaultRoute {
                    gateway: Some(Ipv4Addr::new(10, 9, 0, 1)),
                    oif: Some(eth0.index)
                })
            );
            assert!(rtnl.link_by_name("lo")?.unwrap().up);
            Ok(eth0)
        })
        .unwrap();
        assert_eq!(peer.peer, Some(host.index));
        assert_eq!(host.peer, Some(peer.index));

        rtnl.add_address(&bridge, Ipv4Addr::new(10, 9, 0, 1), 24)
            .unwrap();
        assert_eq!(
            rtnl.addresses(bridge.index).unwrap(),
            [(Ipv4Addr::new(10, 9, 0, 1), 24)]
        );
        rtnl.del_address(&bridge, Ipv4Addr::new(10, 9, 0, 1), 24)
            .unwrap();
        assert!(rtnl.addresses(bridge.index).unwrap().is_empty());

        rtnl.del_link(&host).unwrap();
        rtnl.del_link(&host).unwrap(); // already gone: fine
        assert!(rtnl.link_by_name("vtest").unwrap().is_none());
    });
    // Deleting the host end took the pod's end with it.
    let eth0 = in_netns(&pod, "test", || Rtnl::open()?.link_by_name("eth0")).unwrap();
    assert!(eth0.is_none());
}

#[test]
fn entering_something_that_is_not_a_netns_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("f"), "").unwrap();
    let file = File::open(dir.path().join("f")).unwrap();
    let err = in_netns(&file, "f", || Ok(())).unwrap_err();
    assert!(matches!(err, NetError::Namespace { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "network namespace f: not a network namespace (setns: EINVAL)"
    );
    // A panic on the worker is reported, not propagated.
    let ns = new_netns_file();
    let err = in_netns(&ns, "ns", || -> Result<(), NetError> { panic!("boom") }).unwrap_err();
    assert!(matches!(err, NetError::Worker(_)), "{err}");
}

#[test]
fn nftables_table_is_replaced_not_duplicated() {
    in_new_netns(|| {
        assert!(nft::list_rules().unwrap().is_empty(), "no table yet");
        let cluster = [
            "10.42.0.0/16".parse().unwrap(),
            "10.43.0.0/16".parse().unwrap(),
        ];
        let ruleset = nft::Ruleset {
            pod_cidr: "10.42.3.0/24".parse().unwrap(),
            cluster_cidrs: &cluster,
        };
        nft::replace_table(&ruleset).unwrap();
        let first = nft::list_rules().unwrap();
        nft::replace_table(&ruleset).unwrap();
        let second = nft::list_rules().unwrap();
        let chains = |rules: &[NftRule]| rules.iter().map(|r| r.chain.clone()).collect::<Vec<_>>();
        // Returns for 10.42/16 (which holds the pods' /24) and 10.43/16,
        // masquerade, 2 accepts.
        assert_eq!(
            chains(&second),
            [
                "postrouting",
                "postrouting",
                "postrouting",
                "forward",
                "forward"
            ]
        );
        let exprs = |rules: &[NftRule]| {
            rules
                .iter()
                .map(|r| r.expressions.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(exprs(&first), exprs(&second));
        assert_eq!(second[2].expressions.last().unwrap(), "masq flags 0x10");
    });
}
