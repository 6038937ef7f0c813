//! Records the target triple so `armlet --version` says which build is running
//! (the same version string is built for three targets).

fn main() {
    let target = std::env::var("TARGET").unwrap_or_else(|_| "unknown".to_owned());
    println!("cargo:rustc-env=ARMLET_TARGET={target}");
    println!("cargo:rerun-if-changed=build.rs");
}
