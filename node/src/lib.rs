//! The upkeep of armlet's Node object, as K3s's kubelet keeps it (run by
//! K3s's agent with `--cloud-provider=external`): registration with the
//! kubelet's labels, K3s's annotations and the uninitialised-node taint;
//! the node Lease renewed every 10 s; node status (conditions, capacity,
//! allocatable, nodeInfo) recomputed every 10 s from `/proc`, `/sys` and the
//! data directory's filesystem and sent by strategic merge patch when it
//! changed or every 5 minutes.
//!
//! The pure parts (the Node object, conditions, the status patch, the
//! Lease, the readings of `/proc`) are separate from the loop
//! ([`NodeAgent`]) that talks to the API server through kube-rs
//! ([`client()`]). Protocol notes: `shared/spec/node-lifecycle.md`.

mod agent;
pub mod client;
pub mod conditions;
pub mod lease;
pub mod measure;
pub mod object;
pub mod quantity;
pub mod settings;
pub mod status;

#[cfg(test)]
mod recorded_tests;

use std::time::Duration;

pub use agent::{NodeAgent, Readiness, StatusSync, run};
pub use client::{client, client_from_kubeconfig};
pub use settings::{EvictionThresholds, Intervals, NodeSettings};

/// Why an API call of the upkeep failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server answered with an error, or the request could not be made.
    #[error(transparent)]
    Kube(#[from] kube::Error),
    /// No answer within the request timeout.
    #[error("the API server did not answer within {0:?}")]
    Timeout(Duration),
    /// Still conflicting after the kubelet's number of attempts.
    #[error("gave up after {0} attempts")]
    Retries(usize),
    /// The client could not be configured (URL, CA, credentials).
    #[error("Kubernetes client configuration: {0}")]
    Config(String),
}

impl Error {
    /// The HTTP status the server answered with (403: forbidden, 404: not
    /// found, 409: conflict or already exists, …), if it answered.
    pub fn code(&self) -> Option<u16> {
        match self {
            Self::Kube(kube::Error::Api(response)) => Some(response.code),
            _ => None,
        }
    }

    /// A conflict or a server-side failure, worth an immediate retry from a
    /// fresh read (as opposed to a refusal, or no answer at all).
    pub fn is_transient_api_error(&self) -> bool {
        self.code()
            .is_some_and(|c| c == 409 || c == 429 || c >= 500)
    }
}
