//! Helpers shared by the unit tests.

use std::path::PathBuf;

use k8s_openapi::api::core::v1::Pod;

/// A pod from YAML, as `kubectl get -o yaml` shows it.
pub fn pod(yaml: &str) -> Pod {
    serde_yaml_ng::from_str(yaml).expect("test pod YAML")
}

/// Any API object from YAML.
pub fn object<T: serde::de::DeserializeOwned>(yaml: &str) -> T {
    serde_yaml_ng::from_str(yaml).expect("test object YAML")
}

/// A fresh, empty directory for one test.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("armlet-pods-{name}-{}", std::process::id()));
    if dir.exists() {
        // A leftover of an earlier run: tmpfs or bind mounts first.
        crate::volumes::remove_pod_dir(&dir).expect("clean leftover test dir");
    }
    std::fs::create_dir_all(&dir).expect("create test dir");
    dir
}

/// Whether the tests run as root (mounts need it). This machine's tests do; a
/// test needing root fails loudly elsewhere rather than passing silently.
pub fn require_root(test: &str) {
    assert!(
        nix::unistd::geteuid().is_root(),
        "{test} needs root (mounts): run the tests as root"
    );
}
