//! `cargo xtask`: armlet's build and test driver.
//!
//! One entry point for a newcomer and for CI: `setup` makes a Debian 12 machine
//! ready, `build` cross-builds the static binary, `demo` shows it run on every
//! target, `test` runs the whole suite, `bench` measures armlet beside the
//! alternatives.

mod bench;
mod build;
mod cmd;
mod setup;
mod test;

use std::path::PathBuf;
use std::process::ExitCode;

use build::{BuildTarget, Profile};

const USAGE: &str = "\
usage: cargo xtask <command> [options]

commands:
  setup                       install what builds and tests need (Debian 12, root); quiet when done
  build [--target T] [--release]
                              build the armlet binary; T is host, aarch64, armv7 or all (default host)
  demo                        build release binaries for all targets and run `armlet --version` on each
                              (ARM ones under qemu-user with an empty root)
  test                        the whole suite: fmt, clippy, release builds, host tests, ARM unit tests
  bench runtime               container create/start/wait/delete with armlet, crun and runc side by
                              side, and the armlet supervisor's memory with idle containers (root)
  bench image                 pull + unpack of a ~100 MB, 5-layer image from a local registry with
                              armlet and with skopeo + umoci, and a restart's re-import of 1 GB of
                              air-gap tarballs (root)
  bench agent                 armlet agent against the devserver in a network namespace: pod created →
                              Running p50/p99 over 100 pods, agent + supervisor memory with idle pods,
                              stripped aarch64 size, agent start → node Ready (root)
";

/// An error that ends the xtask with a message (no backtrace: these are user-facing).
#[derive(Debug)]
pub struct Error(String);

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Shorthand for xtask results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Builds an [`Error`] from format arguments.
#[macro_export]
macro_rules! fail {
    ($($arg:tt)*) => { $crate::Error(format!($($arg)*)) };
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &[String]) -> Result<()> {
    let root = workspace_root();
    let Some((command, rest)) = args.split_first() else {
        print!("{USAGE}");
        return Ok(());
    };
    match command.as_str() {
        "setup" => {
            no_options(rest)?;
            setup::run()
        }
        "build" => {
            let (targets, profile) = parse_build_options(rest)?;
            setup::run()?;
            let ws = build::Workspace::new(root);
            for target in targets {
                let bin = ws.build_armlet(target, profile)?;
                build::report_binary(&bin);
            }
            Ok(())
        }
        "demo" => {
            no_options(rest)?;
            setup::run()?;
            build::Workspace::new(root).demo()
        }
        "test" => {
            no_options(rest)?;
            test::run(&build::Workspace::new(root))
        }
        "bench" => {
            let bench = bench::Bench::parse(rest).map_err(|e| fail!("{e}\n\n{USAGE}"))?;
            bench.run(&build::Workspace::new(root))
        }
        "help" | "--help" | "-h" => {
            print!("{USAGE}");
            Ok(())
        }
        other => Err(fail!("unknown command `{other}`\n\n{USAGE}")),
    }
}

fn no_options(rest: &[String]) -> Result<()> {
    match rest.first() {
        None => Ok(()),
        Some(arg) => Err(fail!("unexpected argument `{arg}`\n\n{USAGE}")),
    }
}

fn parse_build_options(rest: &[String]) -> Result<(Vec<BuildTarget>, Profile)> {
    let mut targets = vec![BuildTarget::Host];
    let mut profile = Profile::Debug;
    let mut it = rest.iter();
    while let Some(arg) = it.next() {
        let value = if let Some(v) = arg.strip_prefix("--target=") {
            Some(v.to_owned())
        } else if arg == "--target" {
            Some(
                it.next()
                    .ok_or_else(|| fail!("--target needs a value: host, aarch64, armv7 or all"))?
                    .clone(),
            )
        } else {
            None
        };
        match (arg.as_str(), value) {
            (_, Some(v)) if v == "all" => targets = BuildTarget::ALL.to_vec(),
            (_, Some(v)) => targets = vec![BuildTarget::parse(&v)?],
            ("--release", None) => profile = Profile::Release,
            (other, None) => return Err(fail!("unexpected argument `{other}`\n\n{USAGE}")),
        }
    }
    Ok((targets, profile))
}

/// The workspace root: xtask lives one level below it.
///
/// Taken from the `CARGO_MANIFEST_DIR` cargo sets when it runs the binary, not the
/// one compiled in: with a target directory shared between clones, the xtask
/// binary cargo runs may have been built from another clone.
fn workspace_root() -> PathBuf {
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    manifest_dir
        .parent()
        .map(PathBuf::from)
        .unwrap_or(manifest_dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn build_options_default_to_a_debug_host_build() {
        let (targets, profile) = parse_build_options(&[]).unwrap();
        assert_eq!(targets, vec![BuildTarget::Host]);
        assert_eq!(profile, Profile::Debug);
    }

    #[test]
    fn build_options_accept_both_target_spellings() {
        let (t, p) = parse_build_options(&args(&["--target", "armv7", "--release"])).unwrap();
        assert_eq!((t, p), (vec![BuildTarget::Armv7], Profile::Release));
        let (t, _) = parse_build_options(&args(&["--target=aarch64"])).unwrap();
        assert_eq!(t, vec![BuildTarget::Aarch64]);
        let (t, _) = parse_build_options(&args(&["--target", "all"])).unwrap();
        assert_eq!(t, BuildTarget::ALL.to_vec());
    }

    #[test]
    fn build_options_reject_unknown_input() {
        assert!(parse_build_options(&args(&["--target", "mips"])).is_err());
        assert!(parse_build_options(&args(&["--target"])).is_err());
        assert!(parse_build_options(&args(&["--fast"])).is_err());
        assert!(run(&args(&["frobnicate"])).is_err());
        assert!(run(&args(&["bench"])).is_err());
        assert!(run(&args(&["bench", "nothing"])).is_err());
    }
}
