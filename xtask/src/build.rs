//! Building armlet with Debian's Rust 1.85 for the host and the ARM boards.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cmd;
use crate::{Result, fail};

/// An ARM board target armlet ships for.
#[derive(Debug, PartialEq, Eq)]
pub struct Target {
    /// Rust target triple.
    pub triple: &'static str,
    /// Debian architecture of its packages.
    pub deb_arch: &'static str,
    /// The qemu-user emulator that runs its binaries here.
    pub qemu: &'static str,
}

/// 64-bit ARM: Raspberry Pi 3/4/5, Jetson, QEMU virt.
pub const AARCH64: Target = Target {
    triple: "aarch64-unknown-linux-gnu",
    deb_arch: "arm64",
    qemu: "qemu-aarch64-static",
};

/// 32-bit ARM (ARMv7, hard float): Raspberry Pi 2/3 with a 32-bit kernel.
pub const ARMV7: Target = Target {
    triple: "armv7-unknown-linux-gnueabihf",
    deb_arch: "armhf",
    qemu: "qemu-arm-static",
};

/// Every ARM target, in the order builds and tests run.
pub const ARM_TARGETS: &[&Target] = &[&AARCH64, &ARMV7];

/// The targets `cargo xtask build --target` accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuildTarget {
    /// The machine building (x86_64 here).
    Host,
    /// aarch64-unknown-linux-gnu.
    Aarch64,
    /// armv7-unknown-linux-gnueabihf.
    Armv7,
}

impl BuildTarget {
    /// All targets, host first.
    pub const ALL: [BuildTarget; 3] = [BuildTarget::Host, BuildTarget::Aarch64, BuildTarget::Armv7];

    /// Parses the user's spelling.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "host" => Ok(Self::Host),
            "aarch64" | "arm64" | "aarch64-unknown-linux-gnu" => Ok(Self::Aarch64),
            "armv7" | "armhf" | "armv7-unknown-linux-gnueabihf" => Ok(Self::Armv7),
            other => Err(fail!(
                "unknown target `{other}`: use host, aarch64, armv7 or all"
            )),
        }
    }

    /// The ARM target behind this choice, if it is one.
    pub fn arm(self) -> Option<&'static Target> {
        match self {
            Self::Host => None,
            Self::Aarch64 => Some(&AARCH64),
            Self::Armv7 => Some(&ARMV7),
        }
    }
}

/// Debug or release build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// `dev` profile.
    Debug,
    /// `release` profile: static, size-optimised, stripped.
    Release,
}

/// Debian's compiler: the one whose std exists for every target (see setup).
const DEBIAN_CARGO: &str = "/usr/bin/cargo";
const DEBIAN_RUSTC: &str = "/usr/bin/rustc";

/// The workspace being built and where its build output goes.
pub struct Workspace {
    /// The workspace root (where Cargo.toml and README.md are).
    pub root: PathBuf,
    /// Cargo's target directory.
    pub target_dir: PathBuf,
}

impl Workspace {
    /// The workspace at `root`, with the target directory for its builds:
    /// `ARMLET_TARGET_DIR` (CI's cache shared by its clones), else
    /// `CARGO_TARGET_DIR`, else `<root>/target`. A cache shared between clones
    /// is only safe for fresh clones, as CI makes: cargo judges workspace crates by
    /// file times and gives them the same hashes in every clone, so an older
    /// clone's edits can look older than another clone's artifacts.
    pub fn new(root: PathBuf) -> Self {
        let from_env = |name| std::env::var_os(name).filter(|d: &std::ffi::OsString| !d.is_empty());
        let target_dir =
            match from_env("ARMLET_TARGET_DIR").or_else(|| from_env("CARGO_TARGET_DIR")) {
                Some(dir) => PathBuf::from(dir),
                None => root.join("target"),
            };
        Self { root, target_dir }
    }

    /// A `cargo` command on Debian's 1.85 toolchain, in the workspace.
    ///
    /// `cargo xtask` itself usually runs under rustup's cargo, whose environment
    /// would steer a nested cargo back to rustup's compiler; so the compiler is named
    /// explicitly and rustup's variables are dropped.
    pub fn cargo(&self, subcommand: &str) -> Command {
        let mut c = Command::new(DEBIAN_CARGO);
        c.arg(subcommand);
        self.debian_env(&mut c);
        c
    }

    /// Sets the environment that makes a command use Debian's toolchain.
    pub fn debian_env(&self, c: &mut Command) {
        c.current_dir(&self.root)
            .env("RUSTC", DEBIAN_RUSTC)
            .env("RUSTDOC", "/usr/bin/rustdoc")
            .env("CARGO", DEBIAN_CARGO)
            .env("CARGO_TARGET_DIR", &self.target_dir)
            .env_remove("RUSTUP_TOOLCHAIN")
            .env_remove("RUSTC_WRAPPER")
            .env_remove("RUSTC_WORKSPACE_WRAPPER")
            .env_remove("LD_LIBRARY_PATH");
    }

    /// Adds `--locked` under CI, where Cargo.lock must already be right.
    pub fn locked(c: &mut Command) {
        if std::env::var_os("CI").is_some() {
            c.arg("--locked");
        }
    }

    /// The Rust target triple of the machine building.
    pub fn host_triple(&self) -> Result<String> {
        let out = cmd::stdout(Command::new(DEBIAN_RUSTC).arg("-vV"))?;
        out.lines()
            .find_map(|l| l.strip_prefix("host: "))
            .map(|s| s.trim().to_owned())
            .ok_or_else(|| fail!("`{DEBIAN_RUSTC} -vV` did not name the host triple"))
    }

    /// Builds the `armlet` binary and returns its path.
    ///
    /// Every release binary is fully static: ARM targets get `+crt-static` from
    /// `.cargo/config.toml`; the host gets it here, with an explicit `--target` so
    /// build scripts and proc-macros stay dynamic (they cannot be static).
    pub fn build_armlet(&self, target: BuildTarget, profile: Profile) -> Result<PathBuf> {
        let mut c = self.cargo("build");
        c.args(["--package", "armlet-agent", "--bin", "armlet"]);
        Self::locked(&mut c);
        let triple = match (target.arm(), profile) {
            (Some(arm), _) => Some(arm.triple.to_owned()),
            (None, Profile::Release) => {
                let host = self.host_triple()?;
                c.arg("--config").arg(format!(
                    "target.{host}.rustflags=[\"-C\", \"target-feature=+crt-static\"]"
                ));
                Some(host)
            }
            (None, Profile::Debug) => None,
        };
        if let Some(t) = &triple {
            c.args(["--target", t]);
        }
        if profile == Profile::Release {
            c.arg("--release");
        }
        cmd::run(&mut c)?;
        let mut bin = self.target_dir.clone();
        if let Some(t) = &triple {
            bin.push(t);
        }
        bin.push(match profile {
            Profile::Debug => "debug",
            Profile::Release => "release",
        });
        bin.push("armlet");
        if !bin.is_file() {
            return Err(fail!(
                "cargo reported success but {} is missing",
                bin.display()
            ));
        }
        Ok(bin)
    }

    /// Builds release binaries for every target and runs `armlet --version` on each,
    /// the ARM ones under qemu-user with an empty root: proof that they need nothing
    /// from the board but a kernel.
    pub fn demo(&self) -> Result<()> {
        for target in BuildTarget::ALL {
            let bin = self.build_armlet(target, Profile::Release)?;
            report_binary(&bin);
            let out = run_binary(target, &bin, &["--version"])?;
            println!("  $ armlet --version\n  {}", out.trim());
        }
        Ok(())
    }
}

/// Runs a built binary natively or, for ARM, under qemu-user with an empty `-L`
/// root (nothing of the target's libc is available to it), returning its stdout.
pub fn run_binary(target: BuildTarget, bin: &Path, args: &[&str]) -> Result<String> {
    let mut c = match target.arm() {
        Some(arm) => {
            let empty =
                std::env::temp_dir().join(format!("armlet-empty-root-{}", std::process::id()));
            std::fs::create_dir_all(&empty)
                .map_err(|e| fail!("cannot create {}: {e}", empty.display()))?;
            let mut c = Command::new(arm.qemu);
            c.arg("-L").arg(&empty).arg(bin);
            c
        }
        None => Command::new(bin),
    };
    c.args(args);
    let out = cmd::stdout(&mut c);
    if target.arm().is_some() {
        let _ = std::fs::remove_dir(
            std::env::temp_dir().join(format!("armlet-empty-root-{}", std::process::id())),
        );
    }
    out
}

/// Prints where a binary is, its size and what `file` says of it.
pub fn report_binary(bin: &Path) {
    let size = std::fs::metadata(bin).map(|m| m.len()).unwrap_or(0);
    let file = Command::new("file")
        .arg("-b")
        .arg(bin)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    println!("{}: {} ({} bytes)", bin.display(), human_size(size), size);
    if !file.is_empty() {
        println!("  {file}");
    }
}

/// Sizes the way people read them: "7.9 MiB".
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_from_common_spellings() {
        assert_eq!(BuildTarget::parse("arm64").unwrap(), BuildTarget::Aarch64);
        assert_eq!(
            BuildTarget::parse("armv7-unknown-linux-gnueabihf").unwrap(),
            BuildTarget::Armv7
        );
        assert_eq!(BuildTarget::Aarch64.arm(), Some(&AARCH64));
        assert_eq!(BuildTarget::Host.arm(), None);
        let err = BuildTarget::parse("riscv64").unwrap_err().to_string();
        assert!(err.contains("riscv64"), "{err}");
    }

    #[test]
    fn sizes_read_naturally() {
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(2048), "2.0 KiB");
        assert_eq!(human_size(8 * 1024 * 1024 + 300 * 1024), "8.3 MiB");
    }
}
