//! `armlet-devserver`: a development control plane that speaks the K3s server's
//! wire protocol, for armlet's tests and demo only. Never run it in production.
//!
//! Built out by the devserver issue; this is the binary's entry point.

use anyhow::Result;
use clap::Parser;

/// Development stand-in for a K3s server (tests and demos only).
#[derive(Debug, Parser)]
#[command(name = "armlet-devserver", version, about)]
struct Cli {}

fn main() -> Result<()> {
    let _cli = Cli::parse();
    Ok(())
}
