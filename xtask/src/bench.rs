//! `cargo xtask bench`: measurements printed side by side with the alternatives,
//! never pass/fail (timings on a shared 2-core machine are too noisy to gate on).
//!
//! `bench runtime`: container create → start → wait → delete of `/bin/true` with
//! armlet, crun and runc, and the memory of armlet's supervisor with idle
//! containers.
//!
//! `bench image`: pull + unpack of a ~100 MB, five-layer image from a local
//! registry (Debian's docker-registry on loopback) with `armlet images pull`
//! beside `skopeo copy` + `umoci unpack`, and `armlet images import` of a
//! gigabyte of air-gap tarballs, first and again (already imported).
//!
//! `bench agent`: `armlet agent` against the release devserver in a network
//! namespace: pod created → Running (p50/p99 over 100 pods), the memory of
//! the agent and its supervisor with idle pods, the stripped aarch64 binary's
//! size, and agent start → node Ready (first join and restart).
//!
//! The measuring is done by `tests/src/bin/bench-<name>.rs` (they need armlet's
//! libraries and the test harness, which xtask must not depend on); this
//! installs and builds what they need and runs them.

use std::path::PathBuf;
use std::process::Command;

use crate::build::{BuildTarget, Profile, Workspace, report_binary};
use crate::{Result, cmd, fail, setup};

/// Cycles per runtime: the issue asks for at least 50.
const RUNTIME_RUNS: u32 = 50;

/// Pulls per tool: each moves ~45 MB and writes ~150 MB.
const IMAGE_RUNS: u32 = 5;

/// Pods created and timed: the issue asks for p99 over 100.
const AGENT_PODS: u32 = 100;

/// The benchmarks there are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bench {
    /// armlet's container runtime against crun and runc.
    Runtime,
    /// armlet's image pull against skopeo + umoci, and air-gap re-imports.
    Image,
    /// The development control plane's start-up time and memory.
    Devserver,
    /// The node agent: pod start latency, memory, binary size, start-up.
    Agent,
}

impl Bench {
    /// Parses the command line after `bench`: exactly one benchmark name.
    pub fn parse(args: &[String]) -> Result<Self> {
        match args {
            [name] if name == "runtime" => Ok(Self::Runtime),
            [name] if name == "image" => Ok(Self::Image),
            [name] if name == "devserver" => Ok(Self::Devserver),
            [name] if name == "agent" => Ok(Self::Agent),
            [name] => Err(fail!(
                "unknown benchmark `{name}`: there are `runtime`, `image`, `devserver` and `agent`"
            )),
            _ => Err(fail!(
                "`bench` takes one argument: runtime, image, devserver or agent"
            )),
        }
    }

    /// Runs the benchmark, installing and building what it needs first.
    pub fn run(self, ws: &Workspace) -> Result<()> {
        match self {
            Self::Runtime => measure(ws, "bench-runtime", &["crun", "runc"], RUNTIME_RUNS),
            Self::Image => measure(ws, "bench-image", &["skopeo", "umoci"], IMAGE_RUNS),
            Self::Devserver => measure_devserver(ws),
            Self::Agent => measure_agent(ws),
        }
    }
}

/// Builds the release armlet, prints the peers' versions, and runs the driver
/// binary `driver` of armlet-tests on it.
fn measure(ws: &Workspace, driver: &str, peers: &[&str], runs: u32) -> Result<()> {
    // Setup installs the peers (Debian's crun, runc, skopeo, umoci) and the test
    // registry with the rest of the host packages.
    setup::run()?;
    let bin = ws.build_armlet(BuildTarget::Host, Profile::Release)?;
    for tool in peers {
        let out = cmd::stdout(Command::new(tool).arg("--version"))?;
        println!("{}", out.lines().next().unwrap_or(tool));
    }
    report_binary(&bin);
    let mut c = ws.cargo("run");
    c.args(["--package", "armlet-tests", "--bin", driver]);
    Workspace::locked(&mut c);
    c.arg("--")
        .arg("--armlet")
        .arg(&bin)
        .args(["--runs", &runs.to_string()]);
    cmd::run(&mut c)
}

/// Builds the release devserver and returns its path.
fn build_devserver(ws: &Workspace) -> Result<PathBuf> {
    let mut c = ws.cargo("build");
    c.args(["--package", "armlet-devserver", "--release"]);
    Workspace::locked(&mut c);
    cmd::run(&mut c)?;
    Ok(ws.target_dir.join("release").join("armlet-devserver"))
}

/// Builds the release devserver and runs `bench-devserver` on it.
fn measure_devserver(ws: &Workspace) -> Result<()> {
    // Setup unpacks Debian's kubectl, which the workload drives.
    setup::run()?;
    let bin = build_devserver(ws)?;
    let mut c = ws.cargo("run");
    c.args(["--package", "armlet-tests", "--bin", "bench-devserver"]);
    Workspace::locked(&mut c);
    c.env("ARMLET_KUBECTL", setup::kubectl_path());
    c.arg("--").arg("--devserver").arg(&bin);
    cmd::run(&mut c)
}

/// Builds the release armlet for the host (the agent measured) and for
/// aarch64 (the size measured) and the release devserver, and runs
/// `bench-agent` on them.
fn measure_agent(ws: &Workspace) -> Result<()> {
    // Setup installs the test registry, skopeo and busybox-static the pods'
    // image is made of.
    setup::run()?;
    let host = ws.build_armlet(BuildTarget::Host, Profile::Release)?;
    let aarch64 = ws.build_armlet(BuildTarget::Aarch64, Profile::Release)?;
    let devserver = build_devserver(ws)?;
    report_binary(&host);
    report_binary(&aarch64);
    let mut c = ws.cargo("run");
    c.args(["--package", "armlet-tests", "--bin", "bench-agent"]);
    Workspace::locked(&mut c);
    c.env("ARMLET_DEVSERVER", &devserver)
        .env("ARMLET_BIN_AARCH64", &aarch64);
    c.arg("--")
        .arg("--armlet")
        .arg(&host)
        .args(["--runs", &AGENT_PODS.to_string()]);
    cmd::run(&mut c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn bench_takes_exactly_one_known_name() {
        assert_eq!(Bench::parse(&args(&["runtime"])).unwrap(), Bench::Runtime);
        assert_eq!(Bench::parse(&args(&["image"])).unwrap(), Bench::Image);
        assert_eq!(
            Bench::parse(&args(&["devserver"])).unwrap(),
            Bench::Devserver
        );
        assert_eq!(Bench::parse(&args(&["agent"])).unwrap(), Bench::Agent);
        assert!(Bench::parse(&args(&[])).is_err());
        assert!(Bench::parse(&args(&["images"])).is_err());
        assert!(Bench::parse(&args(&["image", "extra"])).is_err());
        assert!(Bench::parse(&args(&["runtime", "extra"])).is_err());
    }
}
