//! Helpers for armlet's end-to-end tests: finding the built binaries, examining
//! them, running containers on this machine ([`node`]) and booting ARM guests
//! under qemu-system ([`qemu`]).
//!
//! `cargo xtask test` builds the release binaries first and tells the tests where
//! they are (`ARMLET_BIN_HOST`, `ARMLET_BIN_AARCH64`, `ARMLET_BIN_ARMV7`).

pub mod agent_node;
pub mod bench;
pub mod devserver;
pub mod elf;
pub mod netns;
pub mod node;
pub mod oci;
pub mod qemu;
pub mod registry;

use std::path::{Path, PathBuf};

/// A target whose binary the end-to-end tests examine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    /// Short name, as `cargo xtask build --target` spells it.
    pub name: &'static str,
    /// Rust target triple.
    pub triple: &'static str,
    /// ELF machine the binary must be built for.
    pub machine: elf::Machine,
    /// qemu-user emulator that runs it here, or `None` for the host.
    pub qemu: Option<&'static str>,
}

/// The host build (x86_64 here).
pub const HOST: Target = Target {
    name: "host",
    triple: "x86_64-unknown-linux-gnu",
    machine: elf::Machine::X86_64,
    qemu: None,
};

/// The aarch64 board build.
pub const AARCH64: Target = Target {
    name: "aarch64",
    triple: "aarch64-unknown-linux-gnu",
    machine: elf::Machine::Aarch64,
    qemu: Some("qemu-aarch64-static"),
};

/// The armv7 board build.
pub const ARMV7: Target = Target {
    name: "armv7",
    triple: "armv7-unknown-linux-gnueabihf",
    machine: elf::Machine::Arm,
    qemu: Some("qemu-arm-static"),
};

/// The release `armlet` binary for `target`.
///
/// Taken from `ARMLET_BIN_<NAME>` when set (as `cargo xtask test` does), else from
/// where `cargo xtask build --release` puts it. Panics with what to run when it is
/// missing: a test of a binary that was never built must fail, not pass quietly.
pub fn release_binary(target: &Target) -> PathBuf {
    let var = format!("ARMLET_BIN_{}", target.name.to_uppercase());
    let path = match std::env::var_os(&var) {
        Some(p) => PathBuf::from(p),
        None => target_dir()
            .join(target.triple)
            .join("release")
            .join("armlet"),
    };
    assert!(
        path.is_file(),
        "{} is missing: run `cargo xtask build --target {} --release` first \
         (or the whole suite with `cargo xtask test`), or set {var}",
        path.display(),
        target.name
    );
    path
}

/// Cargo's target directory as `cargo xtask` chooses it.
fn target_dir() -> PathBuf {
    for name in ["ARMLET_TARGET_DIR", "CARGO_TARGET_DIR"] {
        if let Some(dir) = std::env::var_os(name).filter(|d| !d.is_empty()) {
            return PathBuf::from(dir);
        }
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or(Path::new("."))
        .join("target")
}
