//! Records the target triple so `armlet --version` says which build is running
//! (the same version string is built for three targets), and the build time,
//! which `armlet check-config` takes as the earliest plausible system time.

fn main() {
    let target = std::env::var("TARGET").unwrap_or_else(|_| "unknown".to_owned());
    println!("cargo:rustc-env=ARMLET_TARGET={target}");
    // SOURCE_DATE_EPOCH for a reproducible build, else now. This script reruns
    // only when it or that variable changes, so the value is a lower bound of
    // the build time: what a clock check needs.
    let build_time = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
        });
    println!("cargo:rustc-env=ARMLET_BUILD_TIME={build_time}");
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    println!("cargo:rerun-if-changed=build.rs");
}
