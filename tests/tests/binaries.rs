//! The release binaries: fully static, built for the right CPU, and running with
//! nothing from the target system (ARM ones under qemu-user with an empty root).

use std::process::Command;

use armlet_tests::{AARCH64, ARMV7, HOST, Target, elf, release_binary};

fn check_static_binary(target: &Target) {
    let bin = release_binary(target);
    let bytes = std::fs::read(&bin).unwrap();
    let info = elf::inspect(&bytes).unwrap();
    assert_eq!(info.machine, target.machine, "{}", bin.display());
    assert!(
        info.is_static(),
        "{} is not static: interpreter {:?}, {} shared libraries",
        bin.display(),
        info.interpreter,
        info.needed_libraries
    );
}

/// Runs `armlet --version`; ARM binaries under qemu-user with `-L` pointing at an
/// empty directory, so a dynamic loader or libc could not be found even by accident.
fn version_output(target: &Target) -> String {
    let bin = release_binary(target);
    let empty_root = std::env::temp_dir().join(format!(
        "armlet-empty-{}-{}",
        target.name,
        std::process::id()
    ));
    std::fs::create_dir_all(&empty_root).unwrap();
    let mut cmd = match target.qemu {
        Some(qemu) => {
            let mut c = Command::new(qemu);
            c.arg("-L").arg(&empty_root).arg(&bin);
            c
        }
        None => Command::new(&bin),
    };
    let out = cmd.arg("--version").env_clear().output().unwrap();
    std::fs::remove_dir_all(&empty_root).unwrap();
    assert!(out.status.success(), "{}: {out:?}", bin.display());
    String::from_utf8(out.stdout).unwrap()
}

fn check_version(target: &Target) {
    let expected = format!("armlet {} ({})\n", env!("CARGO_PKG_VERSION"), target.triple);
    assert_eq!(version_output(target), expected);
}

#[test]
fn host_binary_is_static() {
    check_static_binary(&HOST);
}

#[test]
fn aarch64_binary_is_static() {
    check_static_binary(&AARCH64);
}

#[test]
fn armv7_binary_is_static() {
    check_static_binary(&ARMV7);
}

#[test]
fn host_binary_runs_with_an_empty_environment() {
    check_version(&HOST);
}

#[test]
fn aarch64_binary_runs_under_qemu_with_an_empty_root() {
    check_version(&AARCH64);
}

#[test]
fn armv7_binary_runs_under_qemu_with_an_empty_root() {
    check_version(&ARMV7);
}
