//! OCI images for armlet: registry pulls, a digest-addressed content store,
//! safe layer unpacking, overlay snapshots and air-gap import.
//!
//! Built out by the image issue; the crate exists now so the workspace layout and
//! cross builds are in place from the start.
