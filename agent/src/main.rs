//! `armlet`: the node daemon and its command-line tools, in one static binary.

use anyhow::Result;
use clap::Parser;

/// The version line: crate version plus the target it was built for, so a user
/// (and the demo) can tell an aarch64 build from an armv7 one.
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("ARMLET_TARGET"), ")");

/// A Kubernetes node for ARM single-board computers that joins K3s clusters.
#[derive(Debug, Parser)]
#[command(name = "armlet", version = VERSION, about, arg_required_else_help = true)]
struct Cli {}

fn main() -> Result<()> {
    let _cli = Cli::parse();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn version_names_the_build_target() {
        assert!(VERSION.starts_with(env!("CARGO_PKG_VERSION")));
        assert!(VERSION.ends_with(&format!("({})", env!("ARMLET_TARGET"))));
    }
}
