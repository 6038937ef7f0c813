//! `cargo xtask setup`: makes a fresh Debian 12 machine ready to build and test armlet.
//!
//! What it installs:
//! - Debian packages the build and tests need (cross gcc, qemu-user, qemu-system,
//!   docker-registry and skopeo, ...); the system-wide registry service the
//!   docker-registry package enables is stopped and disabled (tests start their own);
//! - Debian's Rust 1.85 (`rustc-web`, `cargo-web`, `rust-web-clippy`), the compiler
//!   every build uses, because the target std for arm64 and armhf exists only for it;
//! - that target std, fetched with `apt-get download` and unpacked with `dpkg-deb -x`:
//!   multiarch `apt-get install` breaks on version skew between architectures, so
//!   the version taken is the newest one published for all three alike;
//! - a sysroot per ARM target with the C libraries crates link (libseccomp);
//! - a QEMU guest per ARM target for the tests that boot a real kernel
//!   (`tests/src/qemu.rs`): Debian's kernel of that architecture (arm64, and
//!   armmp-lpae for armhf, which QEMU's `virt` board runs) and its busybox-static,
//!   fetched like the std and unpacked into [`guest_dir`].
//!
//! A machine that is already ready is recognised from installed packages and stamp
//! files alone (no apt calls), so the step is quiet and costs milliseconds.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::build::{ARM_TARGETS, Target};
use crate::cmd;
use crate::{Result, fail};

/// Debian packages for the host, whatever their version.
const HOST_PACKAGES: &[&str] = &[
    "gcc-aarch64-linux-gnu",
    "gcc-arm-linux-gnueabihf",
    "libc6-dev-arm64-cross",
    "libc6-dev-armhf-cross",
    "qemu-user-static",
    "qemu-system-arm",
    "file",
    "xz-utils",
    // The host build links libseccomp statically, like the board builds.
    "libseccomp-dev",
    "pkg-config",
    // Root filesystems for runtime tests.
    "busybox-static",
    // The devserver's tests replay recorded K3s joins with the recording's own
    // client (curl 7.88.1) and read certificates with openssl.
    "curl",
    "openssl",
    // The runtimes armlet's is measured against (`cargo xtask bench runtime`).
    "crun",
    "runc",
    // A real registry (distribution 2.8) that the image tests start on loopback
    // ports of their own (tests/src/registry.rs); its system service is disabled.
    "docker-registry",
    // Pushes the tests' images into it; pulls beside armlet in `bench image`.
    "skopeo",
    // Unpacks images beside armlet in `cargo xtask bench image`.
    "umoci",
    // `htpasswd -B`: the bcrypt password file of the Basic-auth test registry.
    "apache2-utils",
    // `ip netns`: the network namespaces the agent's end-to-end tests put
    // each node in.
    "iproute2",
];

/// Debian's Rust toolchain packages, installed at one chosen version.
const RUST_PACKAGES: &[&str] = &[
    "rustc-web",
    "cargo-web",
    "rust-web-clippy",
    "libstd-rust-web-dev",
];

/// C libraries (runtime and development files) unpacked into each target's sysroot.
const SYSROOT_PACKAGES: &[&str] = &["libseccomp-dev", "libseccomp2"];

/// Where setup keeps its own state: stamps and the per-target sysroots.
pub const STATE_DIR: &str = "/var/lib/armlet-dev";

/// The layout of a guest directory, recorded in its stamp: bump it when the files
/// `tests/src/qemu.rs` expects change, so that setup redoes them.
const GUEST_LAYOUT: &str = "guest-layout=1";

/// A target's QEMU guest files: `vmlinuz` (the kernel qemu boots), `config` (its
/// build configuration) and `busybox` (static). `tests/src/qemu.rs` reads them here.
pub fn guest_dir(target: &Target) -> PathBuf {
    Path::new(STATE_DIR).join("qemu").join(target.deb_arch)
}

/// The Debian metapackage naming a target's current guest kernel: the generic
/// arm64 one, and for armhf the LPAE flavour, made for Cortex-A15-class CPUs like
/// the one the guest emulates (QEMU's `virt` board then places devices above
/// 4 GiB, which only an LPAE kernel can address) and like the Raspberry Pi's
/// 32-bit `v7l` kernels.
fn guest_kernel_metapackage(target: &Target) -> String {
    match target.deb_arch {
        "armhf" => "linux-image-armmp-lpae".to_owned(),
        arch => format!("linux-image-{arch}"),
    }
}

/// Debian's `kubectl` (package kubernetes-client, 1.20), unpacked here rather than
/// installed: on some machines `/usr/bin/kubectl` belongs to another package (the
/// Cloud SDK's dispatcher). The devserver's tests drive this one.
pub fn kubectl_path() -> PathBuf {
    Path::new(STATE_DIR).join("kubectl/usr/bin/kubectl")
}

/// The sysroot holding a target's C libraries (`usr/lib/<multiarch>/...`).
pub fn sysroot(target: &Target) -> PathBuf {
    Path::new(STATE_DIR).join("sysroot").join(target.triple)
}

/// Makes the machine ready; quiet when it already is.
pub fn run() -> Result<()> {
    let missing = missing_parts()?;
    if missing.is_empty() {
        return disable_registry_service();
    }
    println!("setup: missing {}", missing.join(", "));
    check_machine()?;
    ensure_foreign_architectures()?;
    apt_update()?;

    let version = choose_rust_version()?;
    println!("setup: Debian Rust toolchain {version}");
    install_host_packages(&version)?;
    for target in ARM_TARGETS {
        install_target_std(target, &version)?;
        install_sysroot(target)?;
        install_guest(target)?;
    }
    install_kubectl()?;
    disable_registry_service()?;
    let still = missing_parts()?;
    if !still.is_empty() {
        return Err(fail!(
            "setup finished but these are still missing: {}",
            still.join(", ")
        ));
    }
    println!("setup: done");
    Ok(())
}

/// What is not in place yet, named for the user; empty when the machine is ready.
fn missing_parts() -> Result<Vec<String>> {
    let mut missing = Vec::new();
    let installed = installed_versions(HOST_PACKAGES.iter().chain(RUST_PACKAGES))?;
    for pkg in HOST_PACKAGES.iter().chain(RUST_PACKAGES) {
        if !installed.iter().any(|(name, _)| name == pkg) {
            missing.push(pkg.to_string());
        }
    }
    let rustc = installed
        .iter()
        .find(|(name, _)| name == "rustc-web")
        .map(|(_, v)| v.clone());
    if !kubectl_path().is_file() {
        missing.push("kubectl 1.20 (kubernetes-client)".to_owned());
    }
    for target in ARM_TARGETS {
        let std_ok = match &rustc {
            Some(v) => read_stamp(&std_stamp(target)).as_deref() == Some(v.as_str()),
            None => false,
        };
        if !std_ok
            || !Path::new("/usr/lib/rustlib")
                .join(target.triple)
                .join("lib")
                .is_dir()
        {
            missing.push(format!("Rust std for {}", target.triple));
        }
        if read_stamp(&sysroot_stamp(target)).as_deref() != Some(&SYSROOT_PACKAGES.join(" ")) {
            missing.push(format!("sysroot for {}", target.triple));
        }
        if !guest_ready(target) {
            missing.push(format!("QEMU guest kernel for {}", target.deb_arch));
        }
    }
    Ok(missing)
}

/// Installed versions of the given packages (only those fully installed).
fn installed_versions<'a>(
    pkgs: impl Iterator<Item = &'a &'a str>,
) -> Result<Vec<(String, String)>> {
    if !Path::new("/usr/bin/dpkg-query").exists() {
        return Err(fail!(
            "dpkg-query not found: `cargo xtask setup` needs Debian 12 or a Debian-like system"
        ));
    }
    // dpkg-query exits 1 when some package is unknown; its output still lists the rest.
    let out = Command::new("dpkg-query")
        .args(["-W", "-f", "${Package} ${db:Status-Abbrev} ${Version}\n"])
        .args(pkgs.map(|p| p.to_string()))
        .output()
        .map_err(|e| fail!("cannot run dpkg-query: {e}"))?;
    Ok(parse_dpkg_query(&String::from_utf8_lossy(&out.stdout)))
}

/// Parses `dpkg-query -W -f '${Package} ${db:Status-Abbrev} ${Version}\n'` output,
/// keeping packages whose status is "installed" (`ii`).
fn parse_dpkg_query(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (name, status, version) = (fields.next()?, fields.next()?, fields.next()?);
            (status == "ii").then(|| (name.to_owned(), version.to_owned()))
        })
        .collect()
}

fn check_machine() -> Result<()> {
    let os_release = fs::read_to_string("/etc/os-release").unwrap_or_default();
    if !is_debian_like(&os_release) || !Path::new("/usr/bin/apt-get").exists() {
        return Err(fail!(
            "setup needs Debian 12 (or a Debian-like system with apt-get); this machine's \
             /etc/os-release does not say so. Install by hand what `xtask/src/setup.rs` lists."
        ));
    }
    let uid = cmd::stdout(Command::new("id").arg("-u"))?;
    if uid.trim() != "0" {
        return Err(fail!(
            "setup installs packages and must run as root (you are uid {}); \
             try `sudo -E cargo xtask setup`",
            uid.trim()
        ));
    }
    Ok(())
}

/// True when os-release names Debian as the system or one it is like.
fn is_debian_like(os_release: &str) -> bool {
    os_release.lines().any(|line| {
        let Some((key, value)) = line.split_once('=') else {
            return false;
        };
        (key == "ID" || key == "ID_LIKE")
            && value
                .trim_matches('"')
                .split_whitespace()
                .any(|id| id == "debian")
    })
}

fn ensure_foreign_architectures() -> Result<()> {
    let have = cmd::stdout(Command::new("dpkg").arg("--print-foreign-architectures"))?;
    for target in ARM_TARGETS {
        if !have.split_whitespace().any(|a| a == target.deb_arch) {
            println!("setup: dpkg --add-architecture {}", target.deb_arch);
            cmd::capture(Command::new("dpkg").args(["--add-architecture", target.deb_arch]))?;
        }
    }
    Ok(())
}

/// `apt-get update`, retried: mirrors here are sometimes caught mid-sync. An index
/// that still fails is tolerated when the packages we need resolve from the rest.
fn apt_update() -> Result<()> {
    println!("setup: apt-get update");
    for attempt in 1..=2 {
        let out = Command::new("apt-get")
            .args(["update", "-q"])
            .output()
            .map_err(|e| fail!("cannot run apt-get: {e}"))?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.success() && !stderr.lines().any(|l| l.starts_with("E:")) {
            return Ok(());
        }
        eprintln!(
            "setup: apt-get update attempt {attempt} reported errors:\n{}",
            cmd::tail(&out.stderr, 6)
        );
        std::thread::sleep(std::time::Duration::from_secs(3));
    }
    eprintln!("setup: going on with the package lists that did load");
    Ok(())
}

/// The versions of `pkg` apt knows for one architecture.
fn apt_versions(pkg: &str, arch: &str) -> Result<Vec<String>> {
    let out = cmd::stdout(Command::new("apt-cache").args(["madison", &format!("{pkg}:{arch}")]))?;
    Ok(parse_madison(&out))
}

/// Parses `apt-cache madison` lines: `pkg | version | source`.
fn parse_madison(text: &str) -> Vec<String> {
    let mut versions: Vec<String> = text
        .lines()
        .filter_map(|l| l.split('|').nth(1).map(|v| v.trim().to_owned()))
        .filter(|v| !v.is_empty())
        .collect();
    versions.dedup();
    versions
}

/// The newest Debian Rust version whose compiler exists for the host and whose
/// std exists for every ARM target.
fn choose_rust_version() -> Result<String> {
    let host_arch = cmd::stdout(Command::new("dpkg").arg("--print-architecture"))?;
    let host_arch = host_arch.trim();
    let mut common = apt_versions("rustc-web", host_arch)?;
    for pkg in ["cargo-web", "rust-web-clippy"] {
        let v = apt_versions(pkg, host_arch)?;
        common.retain(|c| v.contains(c));
    }
    for target in ARM_TARGETS {
        let v = apt_versions("libstd-rust-web-dev", target.deb_arch)?;
        common.retain(|c| v.contains(c));
    }
    let mut best: Option<String> = None;
    for v in common {
        if best.as_ref().is_none_or(|b| dpkg_newer(&v, b)) {
            best = Some(v);
        }
    }
    best.ok_or_else(|| {
        fail!(
            "no version of Debian's rustc-web is published for {host_arch} with a matching \
             libstd-rust-web-dev for arm64 and armhf; check /etc/apt/sources.list \
             (bookworm and bookworm-security are needed)"
        )
    })
}

/// True when Debian version `a` is newer than `b`.
fn dpkg_newer(a: &str, b: &str) -> bool {
    Command::new("dpkg")
        .args(["--compare-versions", a, "gt", b])
        .status()
        .is_ok_and(|s| s.success())
}

/// "1.85.0+dfsg3-1~deb12u3" → "1.85": the suffix of the versioned std package name.
fn major_minor(version: &str) -> Option<String> {
    let mut parts = version.split('.');
    let (major, minor) = (parts.next()?, parts.next()?);
    let minor: String = minor.chars().take_while(|c| c.is_ascii_digit()).collect();
    (!major.is_empty() && !minor.is_empty()).then(|| format!("{major}.{minor}"))
}

fn std_package(version: &str) -> Result<String> {
    let mm =
        major_minor(version).ok_or_else(|| fail!("unexpected rustc-web version `{version}`"))?;
    Ok(format!("libstd-rust-web-{mm}"))
}

fn install_host_packages(version: &str) -> Result<()> {
    let std_pkg = std_package(version)?;
    let mut args: Vec<String> = HOST_PACKAGES.iter().map(|p| p.to_string()).collect();
    // Every Rust package pinned: apt would otherwise take a newer compiler for the
    // host than the std published for the boards.
    args.extend(RUST_PACKAGES.iter().map(|p| format!("{p}={version}")));
    args.push(format!("{std_pkg}={version}"));
    println!("setup: apt-get install {}", args.join(" "));
    cmd::capture(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args([
                "install",
                "-y",
                "-q",
                "--no-install-recommends",
                "--allow-downgrades",
            ])
            .args(&args),
    )?;
    Ok(())
}

/// Where the docker-registry package enables its system service: systemd's
/// link, and the SysV start links of the runlevels a Debian system boots into.
fn registry_service_links() -> Vec<PathBuf> {
    let mut links = vec![PathBuf::from(
        "/etc/systemd/system/multi-user.target.wants/docker-registry.service",
    )];
    for level in 2..=5 {
        let dir = PathBuf::from(format!("/etc/rc{level}.d"));
        links.extend(
            fs::read_dir(&dir)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .map(|n| n.to_string_lossy())
                        .is_some_and(|n| n.starts_with('S') && n.ends_with("docker-registry"))
                }),
        );
    }
    links
        .into_iter()
        .filter(|l| l.symlink_metadata().is_ok())
        .collect()
}

/// Stops and disables the system-wide registry that installing docker-registry
/// enables (and, where services may start, starts) on :5000: the tests run
/// their own on free loopback ports, and a registry listening on every address
/// of a developer's machine is nothing they asked for. Quiet (a few `stat`s)
/// when already disabled.
fn disable_registry_service() -> Result<()> {
    if registry_service_links().is_empty() {
        return Ok(());
    }
    println!("setup: systemctl disable --now docker-registry");
    // Removes the systemd and SysV links even where systemd is not PID 1 (a
    // container); only the "--now" part fails there, and is done below.
    let _ = Command::new("systemctl")
        .args(["disable", "--now", "docker-registry"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !Path::new("/run/systemd/system").exists() {
        // Without systemd, the package's SysV script is what started it.
        let _ = Command::new("/etc/init.d/docker-registry")
            .arg("stop")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    let left = registry_service_links();
    if !left.is_empty() {
        return Err(fail!(
            "could not disable the docker-registry system service; remove {} by hand",
            left.iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    Ok(())
}

/// Downloads `pkgs` (already `name:arch=version` or `name:arch`) into a scratch
/// directory and returns the .deb paths.
fn download_debs(pkgs: &[String], scratch: &Path) -> Result<Vec<PathBuf>> {
    let _ = fs::remove_dir_all(scratch);
    fs::create_dir_all(scratch).map_err(|e| fail!("cannot create {}: {e}", scratch.display()))?;
    // apt drops privileges to `_apt` for downloads; let it write here.
    let _ = Command::new("chmod")
        .args(["0777", &scratch.to_string_lossy()])
        .status();
    cmd::capture(
        Command::new("apt-get")
            .current_dir(scratch)
            .arg("download")
            .args(pkgs),
    )?;
    let mut debs: Vec<PathBuf> = fs::read_dir(scratch)
        .map_err(|e| fail!("cannot read {}: {e}", scratch.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "deb"))
        .collect();
    debs.sort();
    if debs.len() != pkgs.len() {
        return Err(fail!(
            "apt-get download {} gave {} files",
            pkgs.join(" "),
            debs.len()
        ));
    }
    Ok(debs)
}

fn unpack_debs(debs: &[PathBuf], into: &Path) -> Result<()> {
    for deb in debs {
        cmd::capture(Command::new("dpkg-deb").arg("-x").arg(deb).arg(into))?;
    }
    Ok(())
}

fn install_target_std(target: &Target, version: &str) -> Result<()> {
    if read_stamp(&std_stamp(target)).as_deref() == Some(version)
        && Path::new("/usr/lib/rustlib")
            .join(target.triple)
            .join("lib")
            .is_dir()
    {
        return Ok(());
    }
    println!("setup: Rust std {version} for {}", target.triple);
    let std_pkg = std_package(version)?;
    let pkgs = [
        format!("libstd-rust-web-dev:{}={version}", target.deb_arch),
        format!("{std_pkg}:{}={version}", target.deb_arch),
    ];
    let scratch = Path::new(STATE_DIR).join("debs").join(target.deb_arch);
    let debs = download_debs(&pkgs, &scratch)?;
    // A std from an earlier version would sit beside the new one and confuse rustc.
    let _ = fs::remove_dir_all(Path::new("/usr/lib/rustlib").join(target.triple));
    unpack_debs(&debs, Path::new("/"))?;
    let _ = fs::remove_dir_all(&scratch);
    write_stamp(&std_stamp(target), version)
}

/// Unpacks kubernetes-client's kubectl into [`kubectl_path`]'s tree.
fn install_kubectl() -> Result<()> {
    if kubectl_path().is_file() {
        return Ok(());
    }
    println!("setup: kubectl from kubernetes-client");
    let scratch = Path::new(STATE_DIR).join("debs").join("kubectl");
    let debs = download_debs(&["kubernetes-client".to_owned()], &scratch)?;
    let root = Path::new(STATE_DIR).join("kubectl");
    let _ = fs::remove_dir_all(&root);
    fs::create_dir_all(&root).map_err(|e| fail!("cannot create {}: {e}", root.display()))?;
    unpack_debs(&debs, &root)?;
    let _ = fs::remove_dir_all(&scratch);
    Ok(())
}

fn install_sysroot(target: &Target) -> Result<()> {
    let want = SYSROOT_PACKAGES.join(" ");
    if read_stamp(&sysroot_stamp(target)).as_deref() == Some(want.as_str()) {
        return Ok(());
    }
    println!("setup: sysroot for {} ({want})", target.triple);
    let pkgs: Vec<String> = SYSROOT_PACKAGES
        .iter()
        .map(|p| format!("{p}:{}", target.deb_arch))
        .collect();
    let scratch = Path::new(STATE_DIR).join("debs").join(target.deb_arch);
    let debs = download_debs(&pkgs, &scratch)?;
    let root = sysroot(target);
    let _ = fs::remove_dir_all(&root);
    fs::create_dir_all(&root).map_err(|e| fail!("cannot create {}: {e}", root.display()))?;
    unpack_debs(&debs, &root)?;
    let _ = fs::remove_dir_all(&scratch);
    write_stamp(&sysroot_stamp(target), &want)
}

/// True when the target's guest files are in place as this version of setup lays
/// them out (stamp and files alone: no apt calls).
fn guest_ready(target: &Target) -> bool {
    let stamp_ok = read_stamp(&guest_stamp(target))
        .is_some_and(|s| s.split_whitespace().next() == Some(GUEST_LAYOUT));
    let dir = guest_dir(target);
    stamp_ok
        && ["vmlinuz", "config", "busybox"]
            .iter()
            .all(|f| dir.join(f).is_file())
}

/// Fetches the target's guest kernel and busybox-static and unpacks the three
/// files the tests need (the kernel's modules are not needed: what the tests use
/// is built in, and leaving them out saves ~300 MB).
fn install_guest(target: &Target) -> Result<()> {
    if guest_ready(target) {
        return Ok(());
    }
    let meta = guest_kernel_metapackage(target);
    let kernel_pkg = kernel_package_of(target, &meta)?;
    println!(
        "setup: QEMU guest for {}: {kernel_pkg} and busybox-static",
        target.deb_arch
    );
    let pkgs = [
        format!("{kernel_pkg}:{}", target.deb_arch),
        format!("busybox-static:{}", target.deb_arch),
    ];
    let scratch = Path::new(STATE_DIR).join("debs").join(target.deb_arch);
    let debs = download_debs(&pkgs, &scratch)?;
    let unpacked = scratch.join("unpacked");
    fs::create_dir_all(&unpacked)
        .map_err(|e| fail!("cannot create {}: {e}", unpacked.display()))?;
    let mut versions = Vec::new();
    for deb in &debs {
        let fields = cmd::stdout(
            Command::new("dpkg-deb")
                .arg("-f")
                .arg(deb)
                .args(["Package", "Version"]),
        )?;
        let (package, version) = parse_deb_fields(&fields);
        let members: &[&str] = if package == "busybox-static" {
            &["./bin/busybox"]
        } else {
            &["./boot"]
        };
        extract_members(deb, &unpacked, members)?;
        versions.push(format!("{package}={version}"));
    }
    let boot = unpacked.join("boot");
    let find_boot = |prefix: &str| -> Result<PathBuf> {
        fs::read_dir(&boot)
            .map_err(|e| fail!("{kernel_pkg} has no /boot ({e})"))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
            })
            .ok_or_else(|| fail!("{kernel_pkg} has no /boot/{prefix}*"))
    };
    let (kernel, config) = (find_boot("vmlinuz-")?, find_boot("config-")?);
    let busybox = unpacked.join("bin/busybox");
    // Built aside and renamed into place: an interrupted setup leaves no half guest.
    let dir = guest_dir(target);
    let fresh = dir.with_extension("new");
    let _ = fs::remove_dir_all(&fresh);
    fs::create_dir_all(&fresh).map_err(|e| fail!("cannot create {}: {e}", fresh.display()))?;
    for (from, name) in [
        (&kernel, "vmlinuz"),
        (&config, "config"),
        (&busybox, "busybox"),
    ] {
        let to = fresh.join(name);
        fs::copy(from, &to)
            .map_err(|e| fail!("cannot copy {} to {}: {e}", from.display(), to.display()))?;
    }
    let _ = fs::remove_dir_all(&dir);
    fs::rename(&fresh, &dir)
        .map_err(|e| fail!("cannot move {} to {}: {e}", fresh.display(), dir.display()))?;
    let _ = fs::remove_dir_all(&scratch);
    write_stamp(
        &guest_stamp(target),
        &format!("{GUEST_LAYOUT} {}", versions.join(" ")),
    )
}

/// The versioned kernel package a metapackage points to today (e.g.
/// `linux-image-arm64` → `linux-image-6.1.0-50-arm64`): asked of apt rather than
/// written here, as Debian drops old kernel ABIs from the archive.
fn kernel_package_of(target: &Target, meta: &str) -> Result<String> {
    let arch = target.deb_arch;
    let out = cmd::stdout(Command::new("apt-cache").args(["depends", &format!("{meta}:{arch}")]))
        .map_err(|e| fail!("{e}\nis the {arch} package index loaded? (apt-get update)"))?;
    parse_kernel_dependency(&out).ok_or_else(|| {
        fail!("apt knows {meta}:{arch} but names no linux-image package it depends on:\n{out}")
    })
}

/// The first `Depends: linux-image-...` of `apt-cache depends` output, without
/// its `:arch` suffix.
fn parse_kernel_dependency(text: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let dep = l.trim().strip_prefix("Depends:")?.trim();
        let name = dep
            .split(':')
            .next()?
            .trim_start_matches('<')
            .trim_end_matches('>');
        name.starts_with("linux-image-").then(|| name.to_owned())
    })
}

/// `dpkg-deb -f DEB Package Version` output → (package, version).
fn parse_deb_fields(text: &str) -> (String, String) {
    let field = |key: &str| {
        text.lines()
            .find_map(|l| {
                l.strip_prefix(key)?
                    .strip_prefix(':')
                    .map(|v| v.trim().to_owned())
            })
            .unwrap_or_else(|| "?".to_owned())
    };
    (field("Package"), field("Version"))
}

/// Extracts the given members (directories or files, spelled as in the package,
/// `./boot`) of a .deb into `into`, leaving the rest of it packed.
fn extract_members(deb: &Path, into: &Path, members: &[&str]) -> Result<()> {
    let what = format!(
        "dpkg-deb --fsys-tarfile {} | tar -x {}",
        deb.display(),
        members.join(" ")
    );
    let mut dpkg = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(deb)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| fail!("cannot start `{what}`: {e}"))?;
    let tar_input = dpkg
        .stdout
        .take()
        .ok_or_else(|| fail!("`{what}`: no pipe from dpkg-deb"))?;
    let tar = Command::new("tar")
        .arg("-x")
        .arg("-C")
        .arg(into)
        .args(members)
        .stdin(tar_input)
        .output();
    let dpkg_status = dpkg.wait().map_err(|e| fail!("`{what}`: {e}"))?;
    let tar = tar.map_err(|e| fail!("cannot start `{what}`: {e}"))?;
    if !dpkg_status.success() || !tar.status.success() {
        return Err(fail!(
            "`{what}` failed (dpkg-deb {dpkg_status}, tar {}):\n{}",
            tar.status,
            cmd::tail(&tar.stderr, 10)
        ));
    }
    Ok(())
}

fn guest_stamp(target: &Target) -> PathBuf {
    Path::new(STATE_DIR)
        .join("stamps")
        .join(format!("guest-{}", target.deb_arch))
}

fn std_stamp(target: &Target) -> PathBuf {
    Path::new(STATE_DIR)
        .join("stamps")
        .join(format!("std-{}", target.triple))
}

fn sysroot_stamp(target: &Target) -> PathBuf {
    Path::new(STATE_DIR)
        .join("stamps")
        .join(format!("sysroot-{}", target.triple))
}

fn read_stamp(path: &Path) -> Option<String> {
    fs::read_to_string(path).ok().map(|s| s.trim().to_owned())
}

fn write_stamp(path: &Path, value: &str) -> Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(|e| fail!("cannot create {}: {e}", dir.display()))?;
    }
    fs::write(path, format!("{value}\n")).map_err(|e| fail!("cannot write {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dpkg_query_output_keeps_installed_packages_only() {
        let text = "file ii 1:5.44-3\nqemu-user-static un \nrustc-web ii 1.85.0+dfsg3-1~deb12u3\nfoo rc 1.0\n";
        assert_eq!(
            parse_dpkg_query(text),
            vec![
                ("file".to_owned(), "1:5.44-3".to_owned()),
                ("rustc-web".to_owned(), "1.85.0+dfsg3-1~deb12u3".to_owned()),
            ]
        );
    }

    #[test]
    fn madison_lines_give_versions() {
        let text = " rustc-web | 1.96.0+dfsg1-1~deb12u2 | http://deb.debian.org/debian-security bookworm-security/main amd64 Packages\n rustc-web | 1.85.0+dfsg3-1~deb12u3 | http://deb.debian.org/debian bookworm/main amd64 Packages\n";
        assert_eq!(
            parse_madison(text),
            vec!["1.96.0+dfsg1-1~deb12u2", "1.85.0+dfsg3-1~deb12u3"]
        );
        assert!(parse_madison("").is_empty());
    }

    #[test]
    fn std_package_name_follows_the_rust_version() {
        assert_eq!(
            major_minor("1.85.0+dfsg3-1~deb12u3").as_deref(),
            Some("1.85")
        );
        assert_eq!(
            major_minor("1.96.0+dfsg1-1~deb12u2").as_deref(),
            Some("1.96")
        );
        assert_eq!(major_minor("garbage"), None);
        assert_eq!(
            std_package("1.85.0+dfsg3-1~deb12u3").unwrap(),
            "libstd-rust-web-1.85"
        );
    }

    #[test]
    fn guest_kernel_package_comes_from_the_metapackage() {
        let text = "linux-image-arm64:arm64\n  Depends: linux-image-6.1.0-50-arm64:arm64\n";
        assert_eq!(
            parse_kernel_dependency(text).as_deref(),
            Some("linux-image-6.1.0-50-arm64")
        );
        let text = "linux-image-armmp-lpae:armhf\n  Depends: <linux-image-6.1.0-9-armmp-lpae>\n";
        assert_eq!(
            parse_kernel_dependency(text).as_deref(),
            Some("linux-image-6.1.0-9-armmp-lpae")
        );
        assert_eq!(parse_kernel_dependency("foo\n  Depends: libc6\n"), None);
        assert_eq!(
            guest_kernel_metapackage(&crate::build::AARCH64),
            "linux-image-arm64"
        );
        assert_eq!(
            guest_kernel_metapackage(&crate::build::ARMV7),
            "linux-image-armmp-lpae"
        );
    }

    #[test]
    fn deb_fields_give_package_and_version() {
        let (p, v) = parse_deb_fields("Package: busybox-static\nVersion: 1:1.35.0-4+deb12u1+b1\n");
        assert_eq!(
            (p.as_str(), v.as_str()),
            ("busybox-static", "1:1.35.0-4+deb12u1+b1")
        );
        assert_eq!(parse_deb_fields(""), ("?".to_owned(), "?".to_owned()));
    }

    #[test]
    fn debian_and_derivatives_are_recognised() {
        assert!(is_debian_like("ID=debian\nVERSION_ID=\"12\"\n"));
        assert!(is_debian_like("ID=ubuntu\nID_LIKE=debian\n"));
        assert!(is_debian_like("ID=raspbian\nID_LIKE=\"debian foo\"\n"));
        assert!(!is_debian_like("ID=fedora\nID_LIKE=\"rhel centos\"\n"));
        assert!(!is_debian_like(""));
    }
}
