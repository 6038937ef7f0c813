//! Network namespaces for nodes under test. Each node gets its own namespace,
//! joined to the host by a veth pair on a private /24 (`10.201.<n>.0/24`,
//! host end `.1`, node end `.2`): the devserver and the registry listen on
//! host ends, and a node's bridges, routes and nftables rules live in its
//! namespace, never in the host's. The node has no default route, so nothing
//! it (or a pod) sends can leave this machine; the host has a route to the
//! /24 through the veth only.
//!
//! Needs root and iproute2 (`ip`).

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU8, Ordering};

/// A node's network namespace, deleted (with its veth pair) when dropped.
pub struct NodeNetns {
    /// The namespace's name (`ip netns` name).
    pub name: String,
    /// The host end's address: what the node dials.
    pub host_ip: Ipv4Addr,
    /// The node's address.
    pub node_ip: Ipv4Addr,
    host_if: String,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("running ip (iproute2)");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl NodeNetns {
    /// A fresh namespace with its veth pair up and addressed.
    pub fn create() -> Self {
        static NEXT: AtomicU8 = AtomicU8::new(0);
        // Spread runs over the /16 so a leftover of a killed run rarely collides.
        let n = (std::process::id() % 50) as u8 * 5 + NEXT.fetch_add(1, Ordering::Relaxed) % 5;
        let name = format!("armlet-test-{n}");
        let host_if = format!("armt{n}h");
        // A leftover from a killed run goes first.
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        let _ = Command::new("ip").args(["link", "del", &host_if]).output();
        let host_ip = Ipv4Addr::new(10, 201, n, 1);
        let node_ip = Ipv4Addr::new(10, 201, n, 2);
        ip(&["netns", "add", &name]);
        let netns = Self {
            name: name.clone(),
            host_ip,
            node_ip,
            host_if: host_if.clone(),
        };
        ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", "eth0", "netns", &name,
        ]);
        ip(&["addr", "add", &format!("{host_ip}/24"), "dev", &host_if]);
        ip(&["link", "set", &host_if, "up"]);
        ip(&[
            "-n",
            &name,
            "addr",
            "add",
            &format!("{node_ip}/24"),
            "dev",
            "eth0",
        ]);
        ip(&["-n", &name, "link", "set", "eth0", "up"]);
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        // Other nodes' host ends (multi-node tests), never a default route.
        ip(&[
            "-n",
            &name,
            "route",
            "add",
            "10.201.0.0/16",
            "via",
            &host_ip.to_string(),
        ]);
        netns
    }

    /// `program` run inside the namespace. Only the network namespace is
    /// entered (`nsenter --net`): `ip netns exec` would also give it a mount
    /// namespace with a fresh /sys, without the cgroup file systems a node
    /// needs.
    pub fn command(&self, program: impl AsRef<Path>) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/run/netns/{}", self.name))
            .arg("--")
            .arg(program.as_ref());
        c
    }

    /// Runs `ip <args>` inside the namespace and returns its output.
    pub fn ip_output(&self, args: &[&str]) -> String {
        let out = Command::new("ip")
            .args(["-n", &self.name])
            .args(args)
            .output()
            .expect("running ip");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for NodeNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .output();
    }
}
