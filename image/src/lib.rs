//! OCI images for armlet: registry pulls, a digest-addressed content store,
//! safe layer unpacking, overlay snapshots and air-gap import.
//!
//! - [`digest`]: `sha256:<hex>` digests, parsed and verified;
//! - [`store`]: the content store: blobs by digest, verified while written,
//!   committed by atomic rename;
//! - [`import`]: air-gap import of OCI-layout and docker-archive tarballs,
//!   remembered so a restart does not read them again;
//! - [`layers`]: an image's layers unpacked once each, keyed by chain id;
//! - [`meta`]: image names and what they point at, in an embedded database (redb);
//! - [`platform`]: choosing the manifest for this node from an image index;
//! - [`reference`]: image references normalised as Docker and the kubelet do;
//! - [`registries`]: k3s's `registries.yaml` (mirrors, rewrites, auth, TLS) and
//!   the endpoints to try for a reference;
//! - [`registry`]: the registry client (distribution API, auth, TLS);
//! - [`pull`]: a reference to unpacked layers, through mirrors, resumable;
//! - [`secrets`]: pod `imagePullSecrets` (Docker config JSON) as credentials;
//! - [`service`]: all of it under one directory, with garbage collection;
//! - [`snapshot`]: a container's root filesystem as an overlay of the image's
//!   layers and a writable layer of its own;
//! - [`unpack`]: layer tarballs (gzip, zstd, plain) into per-layer directories for
//!   overlayfs, OCI whiteouts converted, nothing written outside the layer.

pub mod digest;
pub mod import;
pub mod layers;
pub mod meta;
pub mod platform;
pub mod pull;
pub mod reference;
pub mod registries;
pub mod registry;
pub mod secrets;
pub mod service;
pub mod snapshot;
pub mod store;
pub mod unpack;

#[cfg(test)]
mod testutil;
