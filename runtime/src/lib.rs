//! armlet's own OCI runtime: turns "run this container of this pod" into Linux
//! containers (namespaces, cgroups, mounts) without containerd, runc or a pause image.
//!
//! Built out by the runtime issue; the crate exists now so the workspace layout,
//! cross builds and ARM unit tests are in place from the start.
