//! The agent's certificates: local keys, the requests sent for them, the
//! server's answers, and the kubeconfigs that use them.
//!
//! Newer k3s agents POST a PKCS#10 request made with a locally generated
//! P-256 key and get back `[leaf][CA chain]`; a 2021 server ignores the body
//! and answers `[leaf][CA][shared private key]`, and then that key must be
//! used (k3s `splitCertKeyPEM`: every block whose type contains `PRIVATE
//! KEY` goes to the key file, the others to the certificate file).

use std::path::Path;

use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair as _};
use serde::Serialize;

use crate::http::SupervisorError;
use crate::x509::{self, CertificateInfo, PemBlock};

/// The PEM label of the keys armlet makes (PKCS#8).
const LOCAL_KEY_LABEL: &str = "PRIVATE KEY";

/// Why a local key could not be made or used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// ring could not generate a key or sign (no randomness).
    #[error("generating a key or signing a certificate request failed")]
    Crypto,
}

/// A P-256 key made on this node, for a certificate request.
pub(crate) struct LocalKey {
    pkcs8: Vec<u8>,
    pair: EcdsaKeyPair,
}

impl std::fmt::Debug for LocalKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LocalKey(<redacted>)")
    }
}

impl LocalKey {
    /// The key in `path` if it is one armlet made (a PKCS#8 P-256 key), else
    /// a new one. As k3s's `LoadOrGenerateKeyFile`, a key is kept across
    /// renewals — except the shared key a 2021 server hands out (SEC1, `EC
    /// PRIVATE KEY`): every node of such a cluster holds it, so it is never
    /// offered to a server that would sign a request for it.
    pub(crate) fn load_or_generate(path: &Path) -> Result<Self, KeyError> {
        let rng = ring::rand::SystemRandom::new();
        if let Ok(text) = std::fs::read(path) {
            if let Ok([block]) = x509::pem_blocks(&text).as_deref() {
                if block.label == LOCAL_KEY_LABEL {
                    if let Ok(pair) =
                        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &block.der, &rng)
                    {
                        return Ok(Self {
                            pkcs8: block.der.clone(),
                            pair,
                        });
                    }
                }
            }
        }
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
            .map_err(|_| KeyError::Crypto)?;
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng)
            .map_err(|_| KeyError::Crypto)?;
        Ok(Self {
            pkcs8: pkcs8.as_ref().to_vec(),
            pair,
        })
    }

    /// A DER certificate request for this key (empty subject, as k3s's).
    pub(crate) fn certificate_request(&self) -> Result<Vec<u8>, KeyError> {
        x509::certificate_request(&self.pair, &ring::rand::SystemRandom::new())
            .map_err(|_| KeyError::Crypto)
    }

    fn pem(&self) -> String {
        x509::pem_encode(LOCAL_KEY_LABEL, &self.pkcs8)
    }
}

/// A certificate the server issued, with the key it is for.
#[derive(Clone)]
pub(crate) struct Issued {
    /// `[leaf][chain...]`, PEM.
    pub cert_pem: String,
    /// The key, PEM.
    pub key_pem: String,
    /// Whether the server sent the key (a 2021 server's shared key).
    pub key_from_server: bool,
    /// The leaf, described.
    pub info: CertificateInfo,
}

impl std::fmt::Debug for Issued {
    // The key stays out.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued")
            .field("info", &self.info)
            .field("key_from_server", &self.key_from_server)
            .finish_non_exhaustive()
    }
}

fn bad(url: &str, detail: impl Into<String>) -> SupervisorError {
    SupervisorError::BadResponse {
        url: url.to_owned(),
        detail: detail.into(),
    }
}

/// Splits the server's answer into certificates and key and checks it:
/// at least one certificate, the first a parsable leaf; without a key in the
/// answer, the leaf must be for `local`.
pub(crate) fn accept_answer(
    url: &str,
    body: &[u8],
    local: &LocalKey,
) -> Result<Issued, SupervisorError> {
    let blocks = x509::pem_blocks(body).map_err(|e| bad(url, e.to_string()))?;
    let (keys, certs): (Vec<&PemBlock>, Vec<&PemBlock>) =
        blocks.iter().partition(|b| b.is_private_key());
    let leaf = certs
        .first()
        .filter(|b| b.label == "CERTIFICATE")
        .ok_or_else(|| bad(url, "no certificate"))?;
    let parsed = x509::Cert::parse(&leaf.der).map_err(|e| bad(url, e.to_string()))?;
    let info = parsed.info();
    let cert_pem: String = certs
        .iter()
        .map(|b| x509::pem_encode(&b.label, &b.der))
        .collect();
    let (key_pem, key_from_server) = if keys.is_empty() {
        if parsed.public_key() != local.pair.public_key().as_ref() {
            return Err(bad(
                url,
                "the certificate is not for the key of the request, and no key came with it",
            ));
        }
        (local.pem(), false)
    } else {
        let pem = keys
            .iter()
            .map(|b| x509::pem_encode(&b.label, &b.der))
            .collect();
        (pem, true)
    };
    Ok(Issued {
        cert_pem,
        key_pem,
        key_from_server,
        info,
    })
}

/// The certificate files from the server's CA answers, checked to hold a
/// certificate and written as Go's `pem.Encode` would.
pub(crate) fn accept_ca(url: &str, body: &[u8]) -> Result<String, SupervisorError> {
    let blocks = x509::pem_blocks(body).map_err(|e| bad(url, e.to_string()))?;
    let certs: Vec<&PemBlock> = blocks.iter().filter(|b| b.label == "CERTIFICATE").collect();
    if certs.is_empty() {
        return Err(bad(url, "no certificate"));
    }
    for cert in &certs {
        x509::Cert::parse(&cert.der).map_err(|e| bad(url, e.to_string()))?;
    }
    // As served: the server CA file is also what the token hash was taken
    // over, so its bytes are kept exactly.
    Ok(String::from_utf8_lossy(body).into_owned())
}

#[derive(Serialize)]
struct Kubeconfig<'a> {
    #[serde(rename = "apiVersion")]
    api_version: &'a str,
    clusters: [NamedCluster<'a>; 1],
    contexts: [NamedContext<'a>; 1],
    #[serde(rename = "current-context")]
    current_context: &'a str,
    kind: &'a str,
    preferences: Empty,
    users: [NamedUser<'a>; 1],
}

#[derive(Serialize)]
struct Empty {}

#[derive(Serialize)]
struct NamedCluster<'a> {
    cluster: Cluster<'a>,
    name: &'a str,
}

#[derive(Serialize)]
struct Cluster<'a> {
    server: &'a str,
    #[serde(rename = "certificate-authority")]
    certificate_authority: String,
}

#[derive(Serialize)]
struct NamedContext<'a> {
    context: Context<'a>,
    name: &'a str,
}

#[derive(Serialize)]
struct Context<'a> {
    cluster: &'a str,
    namespace: &'a str,
    user: &'a str,
}

#[derive(Serialize)]
struct NamedUser<'a> {
    name: &'a str,
    user: User,
}

#[derive(Serialize)]
struct User {
    #[serde(rename = "client-certificate")]
    client_certificate: String,
    #[serde(rename = "client-key")]
    client_key: String,
}

/// A kubeconfig as k3s's `deps.KubeConfig` writes it: cluster `local`
/// (`server`, CA file), user `user` (certificate and key files), context
/// `Default`.
pub(crate) fn kubeconfig(server: &str, ca: &Path, cert: &Path, key: &Path) -> String {
    let config = Kubeconfig {
        api_version: "v1",
        clusters: [NamedCluster {
            cluster: Cluster {
                server,
                certificate_authority: ca.display().to_string(),
            },
            name: "local",
        }],
        contexts: [NamedContext {
            context: Context {
                cluster: "local",
                namespace: "default",
                user: "user",
            },
            name: "Default",
        }],
        current_context: "Default",
        kind: "Config",
        preferences: Empty {},
        users: [NamedUser {
            name: "user",
            user: User {
                client_certificate: cert.display().to_string(),
                client_key: key.display().to_string(),
            },
        }],
    };
    // Serialising plain strings into YAML cannot fail; an empty document
    // would be refused by every reader anyway.
    serde_yaml_ng::to_string(&config).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::tests::TempDir;
    use crate::x509::tests::{RECORDED_CA, RECORDED_CLIENT_CA, RECORDED_CLIENT_KUBELET};

    const URL: &str = "https://127.0.0.1:6443/v1-k3s/client-kubelet.crt";

    #[test]
    fn the_2021_answer_brings_its_key() {
        let dir = TempDir::new("certs-2021");
        let local = LocalKey::load_or_generate(&dir.path().join("k")).unwrap();
        // As recorded: leaf, CA, then the shared key (a made-up body here).
        let key = x509::pem_encode("EC PRIVATE KEY", b"not really a key");
        let body = format!("{RECORDED_CLIENT_KUBELET}{RECORDED_CLIENT_CA}{key}");
        let issued = accept_answer(URL, body.as_bytes(), &local).unwrap();
        assert!(issued.key_from_server);
        assert_eq!(issued.key_pem, key);
        assert_eq!(
            issued.cert_pem,
            format!("{RECORDED_CLIENT_KUBELET}{RECORDED_CLIENT_CA}")
        );
        assert_eq!(
            issued.info.common_name.as_deref(),
            Some("system:node:rust-edge-1")
        );
    }

    #[test]
    fn a_certificate_for_another_key_without_a_key_is_refused() {
        let dir = TempDir::new("certs-other");
        let local = LocalKey::load_or_generate(&dir.path().join("k")).unwrap();
        let body = format!("{RECORDED_CLIENT_KUBELET}{RECORDED_CLIENT_CA}");
        let e = accept_answer(URL, body.as_bytes(), &local).unwrap_err();
        assert!(e.to_string().contains("not for the key"), "{e}");
        for junk in [
            &b""[..],
            b"<html>oops</html>",
            b"-----BEGIN CERTIFICATE-----\nAAAA\n",
        ] {
            assert!(accept_answer(URL, junk, &local).is_err());
        }
    }

    #[test]
    fn local_keys_are_reused_but_shared_ones_are_not() {
        let dir = TempDir::new("certs-keys");
        let path = dir.path().join("client.key");
        let first = LocalKey::load_or_generate(&path).unwrap();
        std::fs::write(&path, first.pem()).unwrap();
        let again = LocalKey::load_or_generate(&path).unwrap();
        assert_eq!(first.pkcs8, again.pkcs8);
        // A server's SEC1 key in the file: a new local key instead.
        std::fs::write(&path, x509::pem_encode("EC PRIVATE KEY", b"shared")).unwrap();
        let fresh = LocalKey::load_or_generate(&path).unwrap();
        assert_ne!(fresh.pkcs8, first.pkcs8);
        assert!(!format!("{fresh:?}").contains("PRIVATE"));
    }

    #[test]
    fn ca_answers_must_hold_certificates() {
        assert_eq!(accept_ca(URL, RECORDED_CA.as_bytes()).unwrap(), RECORDED_CA);
        assert!(accept_ca(URL, b"").is_err());
        assert!(accept_ca(URL, b"{\"kind\":\"Status\"}").is_err());
    }

    #[test]
    fn kubeconfig_has_k3s_s_shape() {
        let text = kubeconfig(
            "https://10.0.0.1:6443",
            Path::new("/var/lib/armlet/agent/server-ca.crt"),
            Path::new("/var/lib/armlet/agent/client-kubelet.crt"),
            Path::new("/var/lib/armlet/agent/client-kubelet.key"),
        );
        let v: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
        assert_eq!(v["kind"].as_str(), Some("Config"));
        assert_eq!(v["current-context"].as_str(), Some("Default"));
        assert_eq!(
            v["clusters"][0]["cluster"]["server"].as_str(),
            Some("https://10.0.0.1:6443")
        );
        assert_eq!(
            v["clusters"][0]["cluster"]["certificate-authority"].as_str(),
            Some("/var/lib/armlet/agent/server-ca.crt")
        );
        assert_eq!(
            v["users"][0]["user"]["client-key"].as_str(),
            Some("/var/lib/armlet/agent/client-kubelet.key")
        );
        assert_eq!(v["contexts"][0]["context"]["user"].as_str(), Some("user"));
    }
}
