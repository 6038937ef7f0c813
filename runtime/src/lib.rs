//! armlet's own OCI runtime: turns "run this container of this pod" into Linux
//! containers (namespaces, cgroups, mounts) without containerd, runc, a shim
//! binary or a pause image.
//!
//! Split by concern, like youki's libcontainer:
//! - [`spec`]: a container description turned into an OCI runtime spec with the
//!   defaults containerd gives a Kubernetes container;
//! - [`sandbox`]: a pod's network, IPC and UTS namespaces, kept alive as
//!   bind-mounted namespace files instead of a pause container;
//! - [`cgroup`]: the pod-level cgroup that holds a pod's containers;
//! - [`devices`]: the device allowlist on cgroup v2, an eBPF program of our own;
//! - [`logs`]: stdout/stderr in the Kubernetes CRI log format, rotated by size;
//! - [`state`]: crash-safe records on disk (exit status survives agent restarts);
//! - [`stats`]: CPU and memory usage from cgroups, for `kubectl top`;
//! - [`time`]: RFC 3339 timestamps with nanoseconds, as CRI logs and statuses use;
//! - [`supervisor`]: the single-threaded process that owns every container,
//!   spoken to over [`protocol`] with a [`client`].

pub mod cgroup;
pub mod client;
pub mod devices;
pub mod logs;
pub mod protocol;
pub mod sandbox;
pub mod spec;
pub mod state;
pub mod stats;
pub mod supervisor;
pub mod time;
