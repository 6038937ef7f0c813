//! What the upkeep is told about the node: its name and addresses, labels
//! and taints, the flags K3s's agent hands its kubelet, and the timings
//! (the kubelet's defaults; tests shorten them).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::Taint;

/// The Kubernetes version whose kubelet armlet behaves as: the one of the
/// recorded K3s (v1.21.2), which armlet's wire protocol follows.
pub const KUBERNETES_VERSION: &str = "v1.21.2";

/// armlet's own version.
pub const ARMLET_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The node's `kubeletVersion`: a real Kubernetes version (tools and
/// version-skew checks parse it) with armlet's as semver build metadata,
/// as K3s reports `v1.21.2+k3s1`.
pub fn kubelet_version() -> String {
    format!("{KUBERNETES_VERSION}+armlet-{ARMLET_VERSION}")
}

/// The node's `containerRuntimeVersion` (`<runtime>://<version>`).
pub fn runtime_version() -> String {
    format!("armlet://{ARMLET_VERSION}")
}

/// The `architecture` and `kubernetes.io/arch` of this build, in Go's
/// names (what every Kubernetes tool and image index uses).
pub fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "aarch64" => "arm64",
        "arm" => "arm",
        "x86_64" => "amd64",
        "x86" => "386",
        "riscv64" => "riscv64",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        other => other,
    }
}

/// Hard eviction thresholds: subtracted from capacity in `allocatable`, and
/// the levels below which the pressure conditions turn True.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EvictionThresholds {
    /// `memory.available` in bytes (MemAvailable).
    pub memory_available: Option<u64>,
    /// `nodefs.available` as a fraction of the data directory's filesystem.
    pub nodefs_available: Option<f32>,
    /// `pid.available` as a fraction of `pid_max`.
    pub pid_available: Option<f32>,
}

impl EvictionThresholds {
    /// K3s's: its agent runs the kubelet with `--eviction-hard
    /// imagefs.available<5%,nodefs.available<5%`, which replaces the
    /// kubelet's defaults (the recorded K3s node's allocatable memory is its
    /// capacity, its ephemeral storage 95 %). No memory or pid threshold:
    /// such a node never reports MemoryPressure or PIDPressure.
    pub const fn k3s() -> Self {
        Self {
            memory_available: None,
            nodefs_available: Some(0.05),
            pid_available: None,
        }
    }

    /// The upstream kubelet's defaults (`memory.available<100Mi`,
    /// `nodefs.available<10%`), plus a pid threshold of 5 %, for boards
    /// where memory pressure should keep new pods away.
    pub const fn kubelet() -> Self {
        Self {
            memory_available: Some(100 << 20),
            nodefs_available: Some(0.10),
            pid_available: Some(0.05),
        }
    }
}

impl Default for EvictionThresholds {
    fn default() -> Self {
        Self::k3s()
    }
}

/// The kubelet's timings (defaults: its 1.21 configuration defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Intervals {
    /// `nodeLeaseDurationSeconds`: the Lease's `leaseDurationSeconds` (40 s).
    pub lease_duration: Duration,
    /// Lease renewal: a quarter of the duration (10 s), with 4 % jitter.
    pub lease_renew: Duration,
    /// `nodeStatusUpdateFrequency`: how often the status is computed (10 s).
    pub status_update: Duration,
    /// `nodeStatusReportFrequency`: how often an unchanged status is still
    /// sent (5 min).
    pub status_report: Duration,
    /// `evictionPressureTransitionPeriod`: how long a pressure condition
    /// stays True after the pressure was last seen (5 min).
    pub pressure_transition: Duration,
    /// Longest wait for one API request: a request hung on a dead
    /// connection must not stop the heartbeat.
    pub request_timeout: Duration,
    /// Registration retries: first wait (the kubelet's 100 ms) …
    pub backoff_initial: Duration,
    /// … doubling up to this (7 s).
    pub backoff_max: Duration,
}

impl Default for Intervals {
    fn default() -> Self {
        Self {
            lease_duration: Duration::from_secs(40),
            lease_renew: Duration::from_secs(10),
            status_update: Duration::from_secs(10),
            status_report: Duration::from_secs(5 * 60),
            pressure_transition: Duration::from_secs(5 * 60),
            request_timeout: Duration::from_secs(10),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(7),
        }
    }
}

/// Everything the upkeep needs to know about the node.
#[derive(Debug, Clone)]
pub struct NodeSettings {
    /// The node name (K3s's `--node-name`, lower case).
    pub name: String,
    /// Node IPs (`--node-ip`): `k3s.io/internal-ip` and the InternalIP
    /// addresses. At least one.
    pub internal_ips: Vec<IpAddr>,
    /// `--node-external-ip`: `k3s.io/external-ip` and ExternalIP addresses.
    pub external_ips: Vec<IpAddr>,
    /// `--node-label`s.
    pub labels: BTreeMap<String, String>,
    /// `--node-taint`s, added at registration.
    pub taints: Vec<Taint>,
    /// K3s's default `--cloud-provider=external`: the node registers with
    /// the `node.cloudprovider.kubernetes.io/uninitialized` taint and leaves
    /// `status.addresses` to the server's cloud controller once it has set
    /// them. `false` (K3s's `--disable-cloud-controller`): no taint, and the
    /// addresses are kept by the upkeep.
    pub external_cloud_provider: bool,
    /// The filesystem holding pods' ephemeral storage (the kubelet's root
    /// directory): `ephemeral-storage` and DiskPressure.
    pub data_dir: PathBuf,
    /// The kubelet port (`daemonEndpoints.kubeletEndpoint.Port`).
    pub kubelet_port: i32,
    /// `maxPods`.
    pub max_pods: u32,
    /// Hard eviction thresholds.
    pub eviction: EvictionThresholds,
    /// `nodeInfo.kubeletVersion` and `kubeProxyVersion`.
    pub kubelet_version: String,
    /// `nodeInfo.containerRuntimeVersion`.
    pub runtime_version: String,
    /// The agent's command line with secrets masked (see
    /// [`crate::object::redact_args`]), for `k3s.io/node-args`.
    pub node_args: Vec<String>,
    /// The agent's configuration environment with secrets masked, for
    /// `k3s.io/node-env`.
    pub node_env: BTreeMap<String, String>,
    /// Timings.
    pub intervals: Intervals,
}

impl NodeSettings {
    /// Settings for `name` at `internal_ip` with K3s's defaults for the rest
    /// (data directory `/var/lib/armlet`, port 10250, 110 pods).
    pub fn new(name: impl Into<String>, internal_ip: IpAddr) -> Self {
        Self {
            name: name.into().to_lowercase(),
            internal_ips: vec![internal_ip],
            external_ips: Vec::new(),
            labels: BTreeMap::new(),
            taints: Vec::new(),
            external_cloud_provider: true,
            data_dir: PathBuf::from("/var/lib/armlet"),
            kubelet_port: 10250,
            max_pods: 110,
            eviction: EvictionThresholds::default(),
            kubelet_version: kubelet_version(),
            runtime_version: runtime_version(),
            node_args: Vec::new(),
            node_env: BTreeMap::new(),
            intervals: Intervals::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_as_kubernetes_versions() {
        // What `k8s.io/apimachinery/pkg/util/version.ParseSemantic` takes:
        // v, three numbers, optional -pre and +build of [0-9A-Za-z-.].
        let v = kubelet_version();
        let rest = v.strip_prefix("v1.21.2+").unwrap();
        assert!(
            rest.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        );
        assert!(runtime_version().starts_with("armlet://"));
    }

    #[test]
    fn this_build_has_a_go_arch() {
        assert!(["arm64", "arm", "amd64"].contains(&go_arch()));
    }
}
