//! Service-account tokens: the JWTs the API server's TokenRequest API issues
//! (`POST .../serviceaccounts/<name>/token`, what a kubelet fills a pod's
//! `kube-api-access-*` volume with) and the bearer authentication that
//! accepts them back.
//!
//! Tokens are ES256 JWTs (the API server accepts ECDSA service-account keys;
//! K3s generates an RSA one) signed with `server/tls/service.key`, kept across
//! restarts, with the claims of bound tokens: `iss` and `aud` the in-cluster
//! API URL (plus `k3s`), `sub` `system:serviceaccount:<ns>:<name>`, and
//! `kubernetes.io` naming the namespace, the service account and the pod the
//! token is bound to.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair as _};
use serde_json::{Value, json};

/// The issuer, and the default audience, of the tokens (K3s's).
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// Why a key could not be loaded or a token not issued or accepted.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The key file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The key file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// The key file does not hold a P-256 PKCS#8 key.
    #[error("{path}: not an ECDSA P-256 private key: {why}")]
    Key {
        /// The key file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// Signing failed.
    #[error("signing the token failed")]
    Sign,
    /// A presented token is not one of ours, or no longer valid.
    #[error("invalid bearer token")]
    Invalid,
}

/// The service-account signing key.
pub struct Signer {
    key: EcdsaKeyPair,
    /// The key id in the JWT header: the hash of the public key.
    kid: String,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// Who a valid token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    /// The namespace.
    pub namespace: String,
    /// The service account's name.
    pub name: String,
}

impl Subject {
    /// The user name (`system:serviceaccount:<ns>:<name>`).
    pub fn user(&self) -> String {
        format!("system:serviceaccount:{}:{}", self.namespace, self.name)
    }

    /// Its groups.
    pub fn groups(&self) -> Vec<String> {
        vec![
            "system:serviceaccounts".into(),
            format!("system:serviceaccounts:{}", self.namespace),
            "system:authenticated".into(),
        ]
    }
}

/// What a token is bound to.
#[derive(Debug, Clone, Default)]
pub struct Binding<'a> {
    /// The service account's uid.
    pub account_uid: &'a str,
    /// The pod (name, uid) the token is bound to, if any.
    pub pod: Option<(&'a str, &'a str)>,
    /// Audiences (default: the issuer and `k3s`).
    pub audiences: Vec<String>,
    /// Lifetime in seconds.
    pub seconds: u64,
}

impl Signer {
    /// Loads the key at `path`, or makes one and writes it there (0600).
    pub fn load_or_create(path: &Path) -> Result<Self, TokenError> {
        let io = |source| TokenError::Io {
            path: path.to_owned(),
            source,
        };
        let rng = SystemRandom::new();
        let der = match std::fs::read_to_string(path) {
            Ok(text) => pem::parse(text.as_bytes())
                .map_err(|e| TokenError::Key {
                    path: path.to_owned(),
                    why: e.to_string(),
                })?
                .into_contents(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let pkcs8 =
                    EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                        .map_err(|_| TokenError::Sign)?;
                let text = pem::encode(&pem::Pem::new("PRIVATE KEY", pkcs8.as_ref().to_vec()));
                crate::supervisor::write_private(path, text.as_bytes()).map_err(io)?;
                pkcs8.as_ref().to_vec()
            }
            Err(e) => return Err(io(e)),
        };
        let key = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &der, &rng)
            .map_err(|e| TokenError::Key {
                path: path.to_owned(),
                why: e.to_string(),
            })?;
        let digest = ring::digest::digest(&ring::digest::SHA256, key.public_key().as_ref());
        let kid = URL_SAFE_NO_PAD.encode(&digest.as_ref()[..16]);
        Ok(Self { key, kid })
    }

    /// A token for `subject`, valid from `now` (seconds since the epoch).
    pub fn issue(
        &self,
        subject: &Subject,
        binding: &Binding<'_>,
        now: u64,
    ) -> Result<String, TokenError> {
        let audiences = if binding.audiences.is_empty() {
            vec![ISSUER.to_owned(), "k3s".to_owned()]
        } else {
            binding.audiences.clone()
        };
        let mut scope = json!({
            "namespace": subject.namespace,
            "serviceaccount": {"name": subject.name, "uid": binding.account_uid},
        });
        if let Some((name, uid)) = binding.pod {
            scope["pod"] = json!({"name": name, "uid": uid});
        }
        let claims = json!({
            "aud": audiences,
            "exp": now + binding.seconds,
            "iat": now,
            "iss": ISSUER,
            "kubernetes.io": scope,
            "nbf": now,
            "sub": subject.user(),
        });
        let header = json!({"alg": "ES256", "kid": self.kid});
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = self
            .key
            .sign(&SystemRandom::new(), signing_input.as_bytes())
            .map_err(|_| TokenError::Sign)?;
        Ok(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature.as_ref())
        ))
    }

    /// The subject of a token this signer issued, if it is still valid at
    /// `now`.
    pub fn verify(&self, token: &str, now: u64) -> Result<Subject, TokenError> {
        let mut parts = token.trim().splitn(3, '.');
        let (Some(header), Some(claims), Some(signature)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Invalid);
        };
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| TokenError::Invalid)?;
        let public = signature::UnparsedPublicKey::new(
            &signature::ECDSA_P256_SHA256_FIXED,
            self.key.public_key().as_ref(),
        );
        public
            .verify(format!("{header}.{claims}").as_bytes(), &signature)
            .map_err(|_| TokenError::Invalid)?;
        let claims: Value = URL_SAFE_NO_PAD
            .decode(claims)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(TokenError::Invalid)?;
        let exp = claims["exp"].as_u64().ok_or(TokenError::Invalid)?;
        let nbf = claims["nbf"].as_u64().unwrap_or(0);
        if now >= exp || now + 60 < nbf {
            return Err(TokenError::Invalid);
        }
        let sub = claims["sub"].as_str().ok_or(TokenError::Invalid)?;
        let rest = sub
            .strip_prefix("system:serviceaccount:")
            .ok_or(TokenError::Invalid)?;
        let (namespace, name) = rest.split_once(':').ok_or(TokenError::Invalid)?;
        Ok(Subject {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("armlet-sa-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn tokens_verify_until_they_expire_and_survive_a_reload() {
        let dir = scratch("roundtrip");
        let path = dir.join("service.key");
        let signer = Signer::load_or_create(&path).unwrap();
        let subject = Subject {
            namespace: "default".into(),
            name: "default".into(),
        };
        let binding = Binding {
            account_uid: "sa-uid",
            pod: Some(("web", "pod-uid")),
            audiences: vec![],
            seconds: 3607,
        };
        let token = signer.issue(&subject, &binding, 1000).unwrap();
        assert_eq!(signer.verify(&token, 1001).unwrap(), subject);
        assert!(signer.verify(&token, 1000 + 3607).is_err());
        let claims: Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(token.split('.').nth(1).unwrap())
                .unwrap(),
        )
        .unwrap();
        assert_eq!(claims["sub"], "system:serviceaccount:default:default");
        assert_eq!(claims["kubernetes.io"]["pod"]["uid"], "pod-uid");
        assert_eq!(claims["aud"][0], ISSUER);

        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&path).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        let reloaded = Signer::load_or_create(&path).unwrap();
        assert_eq!(reloaded.verify(&token, 1001).unwrap(), subject);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn forged_and_malformed_tokens_are_refused() {
        let dir = scratch("forged");
        let signer = Signer::load_or_create(&dir.join("a.key")).unwrap();
        let other = Signer::load_or_create(&dir.join("b.key")).unwrap();
        let subject = Subject {
            namespace: "kube-system".into(),
            name: "admin".into(),
        };
        let binding = Binding {
            seconds: 60,
            ..Binding::default()
        };
        let foreign = other.issue(&subject, &binding, 10).unwrap();
        assert!(signer.verify(&foreign, 11).is_err());
        let mine = signer.issue(&subject, &binding, 10).unwrap();
        let mut parts: Vec<&str> = mine.split('.').collect();
        let forged_claims = URL_SAFE_NO_PAD.encode(
            json!({"sub": "system:serviceaccount:kube-system:root", "exp": 99}).to_string(),
        );
        parts[1] = &forged_claims;
        assert!(signer.verify(&parts.join("."), 11).is_err());
        for bad in ["", "a", "a.b", "a.b.c", "...", "é.é.é"] {
            assert!(signer.verify(bad, 11).is_err(), "{bad}");
        }
        std::fs::write(dir.join("bad.key"), "not a key").unwrap();
        assert!(Signer::load_or_create(&dir.join("bad.key")).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
