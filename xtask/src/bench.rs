//! `cargo xtask bench`: measurements printed side by side with the alternatives,
//! never pass/fail (timings on a shared 2-core machine are too noisy to gate on).
//!
//! `bench runtime`: container create → start → wait → delete of `/bin/true` with
//! armlet, crun and runc, and the memory of armlet's supervisor with idle
//! containers. The measuring is done by `tests/src/bin/bench-runtime.rs` (it needs
//! armlet's client library, which xtask must not depend on); this builds what it
//! needs and runs it.

use std::process::Command;

use crate::build::{BuildTarget, Profile, Workspace, report_binary};
use crate::{Result, cmd, fail, setup};

/// Cycles per runtime: the issue asks for at least 50.
const RUNS: u32 = 50;

/// The benchmarks there are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bench {
    /// armlet's container runtime against crun and runc.
    Runtime,
}

impl Bench {
    /// Parses the command line after `bench`: exactly one benchmark name.
    pub fn parse(args: &[String]) -> Result<Self> {
        match args {
            [name] if name == "runtime" => Ok(Self::Runtime),
            [name] => Err(fail!("unknown benchmark `{name}`: there is `runtime`")),
            _ => Err(fail!("`bench` takes one argument: runtime")),
        }
    }

    /// Runs the benchmark, installing and building what it needs first.
    pub fn run(self, ws: &Workspace) -> Result<()> {
        match self {
            Self::Runtime => runtime(ws),
        }
    }
}

fn runtime(ws: &Workspace) -> Result<()> {
    // Setup installs crun and runc (Debian's) with the rest of the host packages.
    setup::run()?;
    let bin = ws.build_armlet(BuildTarget::Host, Profile::Release)?;
    for tool in ["crun", "runc"] {
        let out = cmd::stdout(Command::new(tool).arg("--version"))?;
        println!("{}", out.lines().next().unwrap_or(tool));
    }
    report_binary(&bin);
    let mut c = ws.cargo("run");
    c.args(["--package", "armlet-tests", "--bin", "bench-runtime"]);
    Workspace::locked(&mut c);
    c.arg("--")
        .arg("--armlet")
        .arg(&bin)
        .args(["--runs", &RUNS.to_string()]);
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
        assert!(Bench::parse(&args(&[])).is_err());
        assert!(Bench::parse(&args(&["image"])).is_err());
        assert!(Bench::parse(&args(&["runtime", "extra"])).is_err());
    }
}
