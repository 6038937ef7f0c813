//! An `armlet agent` under test: a node in a network namespace of its own
//! ([`NodeNetns`]), every directory it writes under one scratch directory
//! (data, kubelet root, logs, images, the supervisor's root), its pods' cgroups
//! under `/armlet-e2e/<group>`; torn down completely when dropped, however
//! the test ended.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::netns::NodeNetns;
use crate::oci::busybox_index;
use crate::registry::{RegistryOptions, TestRegistry};
use crate::{HOST, release_binary};

/// One node and its agent process.
pub struct AgentNode {
    /// The node's network namespace.
    pub netns: NodeNetns,
    /// Its scratch directory.
    pub dir: PathBuf,
    /// The node name.
    pub name: String,
    group: String,
    agent: Option<Child>,
}

impl AgentNode {
    /// A node named `name` with its directories under `dir` (created).
    pub fn new(dir: &Path, name: &str) -> Self {
        std::fs::create_dir_all(dir).expect("the node's directory");
        std::fs::write(
            dir.join("host-resolv.conf"),
            "nameserver 192.0.2.53\nsearch lan\n",
        )
        .expect("the node's resolv.conf");
        Self {
            netns: NodeNetns::create(),
            dir: dir.to_path_buf(),
            name: name.to_owned(),
            group: format!("{name}-{}", std::process::id()),
            agent: None,
        }
    }

    /// The supervisor's root.
    pub fn runtime_root(&self) -> PathBuf {
        self.dir.join("run")
    }

    /// The cgroup its pods live under (`/armlet-e2e/<group>`).
    pub fn cgroup_parent(&self) -> String {
        format!("/armlet-e2e/{}", self.group)
    }

    /// Where container logs go.
    pub fn pod_logs(&self) -> PathBuf {
        self.dir.join("logs")
    }

    /// `armlet agent` joining the server at `server_url` with `token`,
    /// inside the namespace, with every path in the scratch directory; add
    /// flags, then [`start`](Self::start).
    pub fn command(&self, server_url: &str, token: &str) -> Command {
        let d = &self.dir;
        let mut c = self.netns.command(release_binary(&HOST));
        c.arg("--runtime-root")
            .arg(self.runtime_root())
            .args(["agent", "--server", server_url, "--token", token])
            .args(["--node-name", &self.name, "--node-ip"])
            .arg(self.netns.node_ip.to_string())
            .arg("--data-dir")
            .arg(d.join("data"))
            .arg("--node-password-file")
            .arg(d.join("node-password"))
            .arg("--kubelet-root")
            .arg(d.join("kubelet"))
            .arg("--pod-log-dir")
            .arg(self.pod_logs())
            .arg("--images-root")
            .arg(d.join("images"))
            .arg("--registries")
            .arg(d.join("registries.yaml"))
            .arg("--cgroup-parent")
            .arg(self.cgroup_parent())
            .arg("--resolv-conf")
            .arg(d.join("host-resolv.conf"))
            .env("ARMLET_LOG", "debug");
        c
    }

    /// Starts `command` (from [`command`](Self::command)) with its log in
    /// `agent.log`.
    pub fn start(&mut self, mut command: Command) {
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(self.dir.join("agent.log"))
            .expect("the agent's log");
        let child = command
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting armlet agent");
        self.agent = Some(child);
    }

    /// Sends SIGTERM and waits for the agent to exit; its exit status.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        self.signal_and_wait(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(15))
    }

    /// Sends SIGPWR (the node is shutting down) and waits for the agent to
    /// stop its pods and exit; its exit status.
    pub fn power_off(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        self.signal_and_wait(nix::sys::signal::Signal::SIGPWR, limit)
    }

    fn signal_and_wait(
        &mut self,
        signal: nix::sys::signal::Signal,
        limit: Duration,
    ) -> Option<std::process::ExitStatus> {
        let mut child = self.agent.take()?;
        // The agent runs under nsenter, which execs it: same pid.
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), signal);
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if start.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the agent did not exit within {limit:?} of {signal}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// What a power cut and a reboot do to the node: the agent, the
    /// supervisor and every container killed, every mount gone, the tmpfs
    /// runtime directory emptied, the namespace's bridge and pod veths gone.
    /// What is on "flash" (data dir, kubelet root, images, logs) stays.
    pub fn simulate_reboot(&mut self) {
        if let Some(mut child) = self.agent.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        crate::node::clean_up_node(&self.dir, &self.runtime_root(), &self.group);
        let _ = std::fs::remove_dir_all(self.runtime_root());
        for line in self.netns.ip_output(&["-o", "link"]).lines() {
            let name = line
                .split(':')
                .nth(1)
                .map(|n| n.trim().split('@').next().unwrap_or_default().to_owned())
                .unwrap_or_default();
            if name != "lo" && name != "eth0" && !name.is_empty() {
                let _ = Command::new("ip")
                    .args(["-n", &self.netns.name, "link", "del", &name])
                    .output();
            }
        }
    }

    /// A real registry (plain HTTP) on the node's host end, holding the
    /// busybox test image as `library/busybox:1`, and the node's
    /// registries.yaml pointing at it; with the image's reference.
    pub fn serve_busybox(&self, layout: &Path) -> (TestRegistry, String) {
        let registry = TestRegistry::start_on(RegistryOptions::default(), self.netns.host_ip);
        busybox_index(layout, "1");
        registry.push(layout, "1", "library/busybox:1");
        // A registry off loopback is HTTPS to k3s unless registries.yaml says.
        std::fs::write(
            self.dir.join("registries.yaml"),
            format!(
                "mirrors:\n  \"{h}\":\n    endpoint:\n      - \"http://{h}\"\n",
                h = registry.host()
            ),
        )
        .expect("writing registries.yaml");
        let image = format!("{}/library/busybox:1", registry.host());
        (registry, image)
    }

    /// The agent's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default()
    }
}

/// Prints the last lines of every container log under `dir`, for a failed
/// test's output.
pub fn print_logs(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            print_logs(&path);
        } else {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(20).collect();
            eprintln!("--- {} ---", path.display());
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

impl Drop for AgentNode {
    fn drop(&mut self) {
        if let Some(mut child) = self.agent.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- agent log ({}) ---\n{}", self.name, self.log());
            print_logs(&self.pod_logs());
        }
        // The supervisor, every container and every mount go with the test.
        crate::node::clean_up_node(&self.dir, &self.runtime_root(), &self.group);
    }
}
