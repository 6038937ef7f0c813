//! `cargo xtask test`: the whole suite, in stages, each timed.
//!
//! Order: cheap checks first (fmt, clippy) so a typo fails in seconds; then the
//! release binaries for every target, which the end-to-end tests examine; then
//! every host test; then the unit tests of the crates with architecture-specific
//! code, cross-built and run under qemu-user.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::build::{ARM_TARGETS, BuildTarget, Profile, Workspace};
use crate::{Result, cmd, fail, setup};

/// Crates whose unit tests also run on the ARM targets: those with code that
/// depends on the architecture (word size, syscalls, byte-level formats).
const ARM_TEST_CRATES: &[&str] = &[
    "armlet-agent",
    "armlet-image",
    "armlet-join",
    "armlet-kubelet",
    "armlet-node",
    "armlet-pods",
    "armlet-resolve",
    "armlet-runtime",
    "armlet-streams",
    "armlet-tls",
    "armlet-tunnel",
];

/// Runs every stage, printing how long each took, and fails on the first failure.
pub fn run(ws: &Workspace) -> Result<()> {
    let mut stages = Stages::default();
    let result = run_stages(ws, &mut stages);
    stages.print_summary(result.is_ok());
    result
}

fn run_stages(ws: &Workspace, stages: &mut Stages) -> Result<()> {
    stages.run("setup", setup::run)?;

    stages.run("fmt", || {
        // rustfmt is not packaged with Debian's rustc-web: the rustup toolchain's
        // formatter is used; formatting does not depend on the compiler version.
        cmd::run(
            Command::new("cargo")
                .current_dir(&ws.root)
                .args(["fmt", "--all", "--", "--check"]),
        )
        .map_err(|e| fail!("{e}\nrun `cargo fmt --all` and commit the result"))
    })?;

    stages.run("clippy", || {
        let mut c = Command::new("/usr/bin/cargo-clippy");
        ws.debian_env(&mut c);
        c.args(["clippy", "--workspace", "--all-targets"]);
        Workspace::locked(&mut c);
        c.args(["--", "-D", "warnings"]);
        cmd::run(&mut c)
    })?;

    let mut binaries = Vec::new();
    for target in BuildTarget::ALL {
        let name = format!("build release {}", target_name(target));
        let bin = stages.run(&name, || ws.build_armlet(target, Profile::Release))?;
        crate::build::report_binary(&bin);
        binaries.push((target, bin));
    }

    // The agent's end-to-end tests join the development control plane.
    let devserver = stages.run("build devserver", || {
        let mut c = ws.cargo("build");
        c.args(["--package", "armlet-devserver"]);
        Workspace::locked(&mut c);
        cmd::run(&mut c)?;
        Ok(ws.target_dir.join("debug").join("armlet-devserver"))
    })?;

    stages.run("host tests", || {
        let mut c = ws.cargo("test");
        c.env("ARMLET_DEVSERVER", &devserver);
        c.arg("--workspace");
        Workspace::locked(&mut c);
        // The devserver's tests drive Debian's kubectl 1.20, which setup unpacked.
        c.env("ARMLET_KUBECTL", setup::kubectl_path());
        // The end-to-end tests examine the release binaries just built.
        for (target, bin) in &binaries {
            c.env(
                format!("ARMLET_BIN_{}", target_name(*target).to_uppercase()),
                bin,
            );
        }
        cmd::run(&mut c)
    })?;

    for target in ARM_TARGETS {
        stages.run(&format!("unit tests {} (qemu-user)", target.triple), || {
            let mut c = ws.cargo("test");
            c.args(["--target", target.triple, "--lib", "--bins"]);
            for krate in ARM_TEST_CRATES {
                c.args(["--package", krate]);
            }
            Workspace::locked(&mut c);
            cmd::run(&mut c)
        })?;
    }
    Ok(())
}

fn target_name(target: BuildTarget) -> &'static str {
    match target {
        BuildTarget::Host => "host",
        BuildTarget::Aarch64 => "aarch64",
        BuildTarget::Armv7 => "armv7",
    }
}

/// Stage timings, for the summary printed at the end (CI's time is limited, so
/// where it goes must be visible in every run).
#[derive(Default)]
struct Stages {
    done: Vec<(String, Duration, bool)>,
    started: Option<Instant>,
}

impl Stages {
    fn run<T>(&mut self, name: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
        self.started.get_or_insert_with(Instant::now);
        println!("==> {name}");
        let start = Instant::now();
        let result = f();
        self.done
            .push((name.to_owned(), start.elapsed(), result.is_ok()));
        result.map_err(|e| fail!("stage `{name}` failed: {e}"))
    }

    fn print_summary(&self, ok: bool) {
        println!("\n==> stage times");
        for (name, took, passed) in &self.done {
            let mark = if *passed { "ok    " } else { "FAILED" };
            println!("  {mark} {:>7.1}s  {name}", took.as_secs_f64());
        }
        if let Some(start) = self.started {
            let verdict = if ok { "passed" } else { "failed" };
            println!(
                "  total  {:>7.1}s  ({verdict})",
                start.elapsed().as_secs_f64()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_stage_is_recorded_and_named() {
        let mut stages = Stages::default();
        assert_eq!(stages.run("one", || Ok(1)).unwrap(), 1);
        let err = stages
            .run("two", || -> Result<()> { Err(fail!("broke")) })
            .unwrap_err();
        assert_eq!(err.to_string(), "stage `two` failed: broke");
        let names: Vec<_> = stages
            .done
            .iter()
            .map(|(n, _, ok)| (n.as_str(), *ok))
            .collect();
        assert_eq!(names, vec![("one", true), ("two", false)]);
    }
}
