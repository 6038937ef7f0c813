//! Trusting the server: the cluster CA from `/cacerts`, checked against the
//! token's hash, exactly in k3s's order (`pkg/clientaccess/token.go`
//! `getCACerts` and `validateCAHash`):
//!
//! 1. `GET /cacerts` trusting the system's CAs. If that works the server's
//!    certificate is publicly trusted: the system CAs are used from then on
//!    (a hash in the token is then not checked, with a warning, as k3s does).
//! 2. Otherwise `GET /cacerts` trusting anything (handshake signatures still
//!    checked). The body is the cluster CA bundle.
//! 3. If the token has a hash, the bundle must match it — before anything is
//!    sent with credentials. Without one the bundle is trusted on first use
//!    (short tokens; k3s warns the same way).
//! 4. `GET /cacerts` once more, now verifying the server against the bundle.
//!
//! No request here carries credentials.

use std::sync::Arc;
use std::time::SystemTime;

use sha2::{Digest as _, Sha256};

use crate::http::{self, Endpoint, SupervisorError, Trust};
use crate::token::Token;
use crate::x509;

/// Why the server's CA could not be trusted.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// The bundle is not the one the token pins (k3s's message). Someone may
    /// be in the middle, or the token belongs to another cluster.
    #[error("token CA hash does not match the Cluster CA certificate hash: {expected} != {actual}")]
    HashMismatch {
        /// The hash in the token.
        expected: String,
        /// The hash of what the server sent.
        actual: String,
    },
    /// The CA bundle could not be fetched (k3s: "failed to get CA certs").
    #[error("failed to get CA certs: {0}")]
    Fetch(#[source] SupervisorError),
    /// The server's certificate does not verify against the bundle it serves
    /// (k3s: "CA cert validation failed").
    #[error(transparent)]
    Validation(SupervisorError),
    /// The bundle holds no certificate.
    #[error("{url}: the CA bundle holds no certificate")]
    EmptyBundle {
        /// Where it came from.
        url: String,
    },
}

impl CaError {
    /// Whether trying again may help (the server was unreachable or failing).
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Fetch(e) => e.is_retryable(),
            _ => false,
        }
    }
}

/// The SHA-256 (lowercase hex) a secure token carries for `bundle`, as newer
/// k3s computes it (`hashCA`): over the raw bytes for a single certificate
/// (the 2021 rule, and what a self-signed cluster CA is); for a bundle of
/// several, over the DER of the root of the chain built from the first
/// certificate, falling back to the raw bytes when there is no such chain.
pub fn ca_hash(bundle: &[u8]) -> String {
    match x509::bundle_root(bundle, SystemTime::now()) {
        Some(root) => sha256_hex(&root),
        None => sha256_hex(bundle),
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Whether `bundle` matches `expected`, and the hash to report when not.
///
/// Both rules are accepted for multi-certificate bundles: tokens of k3s
/// servers from 2021 carry the raw-bytes hash, newer ones the root's. Either
/// binds the bundle (the root hash binds the root; the server must then
/// still verify against it).
fn hash_matches(bundle: &[u8], expected: &str, now: SystemTime) -> Result<(), String> {
    let raw = sha256_hex(bundle);
    if raw == expected {
        return Ok(());
    }
    match x509::bundle_root(bundle, now) {
        Some(root) => {
            let root = sha256_hex(&root);
            if root == expected { Ok(()) } else { Err(root) }
        }
        None => Err(raw),
    }
}

/// A client with the trust for everything after `/cacerts`.
pub(crate) async fn establish(
    origin: &str,
    token: &Token,
    resolver: &Arc<armlet_resolve::Resolver>,
) -> Result<reqwest::Client, crate::JoinError> {
    let url = format!("{origin}/cacerts");

    // 1. Publicly trusted? (Skipped on a board without CA certificates: it
    //    cannot succeed.)
    if http::has_system_roots() {
        let system = http::client(&Trust::System, resolver)?;
        match http::fetch(system.get(&url), &url, Endpoint::Plain).await {
            Ok(_) => {
                if token.ca_hash().is_some() {
                    tracing::warn!(
                        "Cluster CA certificate is trusted by the host CA bundle. \
                         Token CA hash will not be validated."
                    );
                }
                return Ok(system);
            }
            // Expected for a cluster CA; a server that is down fails again below.
            Err(e) => tracing::debug!(error = %e, "server not trusted by the system CAs"),
        }
    }

    // 2. The bundle, unverified.
    let any = http::client(&Trust::Any, resolver)?;
    let bundle = http::fetch(any.get(&url), &url, Endpoint::Plain)
        .await
        .map_err(CaError::Fetch)?;
    let has_certificate = x509::pem_blocks(&bundle)
        .map(|blocks| blocks.iter().any(|b| b.label == "CERTIFICATE"))
        .unwrap_or(false);
    if !has_certificate {
        return Err(CaError::EmptyBundle { url }.into());
    }

    // 3. Pinned by the token, or trusted on first use.
    match token.ca_hash() {
        Some(expected) => {
            hash_matches(&bundle, expected, SystemTime::now()).map_err(|actual| {
                CaError::HashMismatch {
                    expected: expected.to_owned(),
                    actual,
                }
            })?;
        }
        None => tracing::warn!(
            ca_hash = %ca_hash(&bundle),
            "Cluster CA certificate is not trusted by the host CA bundle, but the token \
             does not include a CA hash. Use the full token from the server's node-token \
             file to enable Cluster CA validation. Trusting this CA on first use."
        ),
    }

    // 4. The server must prove it is the bundle's.
    let trust = Trust::Bundle(bundle);
    let pinned = http::client(&trust, resolver)?;
    http::fetch(pinned.get(&url), &url, Endpoint::Plain)
        .await
        .map_err(|e| match e {
            e @ SupervisorError::Untrusted { .. } => CaError::Validation(e),
            e => CaError::Fetch(e),
        })?;
    Ok(pinned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::x509::tests::{RECORDED_CA, RECORDED_CLIENT_CA, RECORDED_CLIENT_KUBELET};
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn single_certificate_bundles_hash_their_bytes() {
        // The recorded server: sha256 of the 570-byte /cacerts body is the
        // token's hash.
        assert_eq!(
            ca_hash(RECORDED_CA.as_bytes()),
            "df70b3bd61ef657eaa0cd1bc6eef4030328dda72ec0dd6de7c7ff061b7e69cf4"
        );
        assert_eq!(RECORDED_CA.len(), 570);
    }

    #[test]
    fn multi_certificate_bundles_hash_their_root() {
        let at = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let bundle = format!("{RECORDED_CLIENT_KUBELET}{RECORDED_CLIENT_CA}");
        let root_der = x509::pem_blocks(RECORDED_CLIENT_CA.as_bytes())
            .unwrap()
            .remove(0)
            .der;
        let root_hash = sha256_hex(&root_der);
        let raw_hash = sha256_hex(bundle.as_bytes());
        assert_ne!(root_hash, raw_hash);
        // Newer k3s's token hash and a 2021 token's both match.
        assert_eq!(hash_matches(bundle.as_bytes(), &root_hash, at), Ok(()));
        assert_eq!(hash_matches(bundle.as_bytes(), &raw_hash, at), Ok(()));
        // Another hash does not; the reported one is the root's.
        assert_eq!(
            hash_matches(bundle.as_bytes(), &"0".repeat(64), at),
            Err(root_hash)
        );
        // No chain: the raw bytes are all there is.
        let unrelated = format!("{RECORDED_CLIENT_KUBELET}{RECORDED_CA}");
        assert_eq!(
            hash_matches(unrelated.as_bytes(), &"0".repeat(64), at),
            Err(sha256_hex(unrelated.as_bytes()))
        );
    }

    #[test]
    fn mismatch_message_is_k3s_s() {
        let e = CaError::HashMismatch {
            expected: "aa".into(),
            actual: "bb".into(),
        };
        assert_eq!(
            e.to_string(),
            "token CA hash does not match the Cluster CA certificate hash: aa != bb"
        );
        assert!(!e.is_retryable());
    }
}
