//! K3s join tokens: `K10<ca-hash>::<username>:<password>`, as the server writes
//! them to `server/token` and as agents take them on `--token`.
//!
//! Parsing follows k3s v1.21's `pkg/clientaccess/token.go` word for word,
//! quirks included (a token without `::` keeps its would-be hash as the
//! username), because the devserver must accept and reject exactly what a real
//! server's agents would. The CA hash follows the newer rule for bundles (see
//! [`ca_hash`]).

use std::fmt;
use std::str::FromStr;

use ring::rand::{SecureRandom, SystemRandom};
use sha2::{Digest, Sha256};

/// The literal every full token starts with.
const PREFIX: &str = "K10";

/// A SHA-256 digest in lowercase hex: the only non-empty hash length k3s takes.
const CA_HASH_LEN: usize = 64;

/// Why a token was refused; the texts are k3s's own.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The token string was empty.
    #[error("token must not be empty")]
    Empty,
    /// The part between `K10` and `::` is neither empty nor 64 characters.
    #[error("invalid token CA hash length")]
    InvalidCaHashLength,
    /// No `user:password` part, or an empty password.
    #[error("invalid token format")]
    InvalidFormat,
}

/// A parsed K3s token.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    /// SHA-256 (hex) of the server CA bundle that agents pin; `None` for a
    /// token without one (`K10::user:pass` or a bare password), which means
    /// "trust whatever /cacerts returns".
    pub ca_hash: Option<String>,
    /// The username part; empty for a bare password. Agents ignore it and send
    /// `node` (k3s `ParseAndValidateTokenForUser`).
    pub username: String,
    /// The password part, never empty.
    pub password: String,
}

impl Token {
    /// Parses a token as k3s does: anything not starting with `K10` is a bare
    /// password (`K10:::<token>`), a hash part must be empty or 64 characters,
    /// and the credentials are split at the first `:`.
    pub fn parse(token: &str) -> Result<Self, TokenError> {
        if token.is_empty() {
            return Err(TokenError::Empty);
        }
        let normalized;
        let token = if token.starts_with(PREFIX) {
            token
        } else {
            normalized = format!("{PREFIX}:::{token}");
            &normalized
        };
        let rest = &token[PREFIX.len()..];

        // Without a "::" the whole rest is credentials, so "K10abc:x:y" has user
        // "abc": k3s reads it that way, and so must we.
        let (ca_hash, credentials) = match rest.split_once("::") {
            Some((hash, creds)) => {
                if !hash.is_empty() && hash.len() != CA_HASH_LEN {
                    return Err(TokenError::InvalidCaHashLength);
                }
                (hash, creds)
            }
            None => ("", rest),
        };

        let (username, password) = credentials
            .split_once(':')
            .ok_or(TokenError::InvalidFormat)?;
        if password.is_empty() {
            return Err(TokenError::InvalidFormat);
        }
        Ok(Self {
            ca_hash: (!ca_hash.is_empty()).then(|| ca_hash.to_owned()),
            username: username.to_owned(),
            password: password.to_owned(),
        })
    }
}

impl FromStr for Token {
    type Err = TokenError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// The full `K10<hash>::<user>:<password>` form (hash empty when unpinned).
impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{PREFIX}{}::{}:{}",
            self.ca_hash.as_deref().unwrap_or(""),
            self.username,
            self.password
        )
    }
}

/// Redacts the password: tokens end up in logs through `{:?}` too easily.
impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("ca_hash", &self.ca_hash)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// A new random secret the way k3s makes its token and node passwords:
/// 16 random bytes as 32 lowercase hex characters.
///
/// # Panics
/// If the operating system's random source fails (getrandom(2) on Linux):
/// there is no secret to fall back to, and it never fails in practice.
pub fn generate_password() -> String {
    let mut bytes = [0u8; 16];
    SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system random number generator failed");
    hex::encode(bytes)
}

/// The CA hash an agent compares with the token's, over the /cacerts body.
///
/// A body with at most one certificate is hashed as raw bytes, newline and
/// all (k3s v1.21, and newer k3s for single-CA clusters). A bundle of several
/// certificates is hashed over the DER of the root that issues the first one
/// (newer k3s `hashCA`, so a CA renewed under the same root keeps the token
/// valid); when no such chain can be built it falls back to the raw bytes, as
/// k3s does when its chain verification fails.
pub fn ca_hash(cacerts_pem: &[u8]) -> String {
    let input = bundle_root_der(cacerts_pem);
    hex::encode(Sha256::digest(input.as_deref().unwrap_or(cacerts_pem)))
}

/// The DER of the root certificate that the first certificate of a
/// multi-certificate bundle chains to, or `None` for a single certificate,
/// unparsable input or no chain.
fn bundle_root_der(pem_bytes: &[u8]) -> Option<Vec<u8>> {
    use x509_parser::prelude::*;

    let blocks = ::pem::parse_many(pem_bytes).ok()?;
    let ders: Vec<&[u8]> = blocks
        .iter()
        .filter(|b| b.tag() == "CERTIFICATE")
        .map(|b| b.contents())
        .collect();
    if ders.len() < 2 {
        return None;
    }
    let certs: Vec<X509Certificate<'_>> = ders
        .iter()
        .map(|der| parse_x509_certificate(der).map(|(_, c)| c).ok())
        .collect::<Option<_>>()?;

    // k3s sorts the other certificates into roots (no AKI, or AKI == SKI) and
    // intermediates, then verifies the first one (signature and validity).
    let ski = |c: &X509Certificate<'_>| -> Option<Vec<u8>> {
        c.iter_extensions()
            .find_map(|e| match e.parsed_extension() {
                ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
                _ => None,
            })
    };
    let aki = |c: &X509Certificate<'_>| -> Option<Vec<u8>> {
        c.iter_extensions()
            .find_map(|e| match e.parsed_extension() {
                ParsedExtension::AuthorityKeyIdentifier(a) => {
                    a.key_identifier.as_ref().map(|k| k.0.to_vec())
                }
                _ => None,
            })
    };
    let is_root = |c: &X509Certificate<'_>| {
        let a = aki(c);
        a.is_none() || a == ski(c)
    };

    let mut current = 0usize;
    // A chain can visit each certificate at most once.
    for _ in 0..certs.len() {
        let cert = &certs[current];
        if !cert.validity().is_valid() {
            return None;
        }
        let issuer = (1..certs.len()).find(|&i| {
            i != current
                && certs[i].subject().as_raw() == cert.issuer().as_raw()
                && certs[i].validity().is_valid()
                && cert.verify_signature(Some(certs[i].public_key())).is_ok()
        })?;
        if is_root(&certs[issuer]) {
            return Some(ders[issuer].to_vec());
        }
        current = issuer;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The /cacerts body of the recorded K3s v1.21.2 server (570 bytes).
    use crate::pki::tests::RECORDED_SERVER_CA as RECORDED_CACERTS;

    /// The recorded server token (transcript.txt header).
    const RECORDED_TOKEN: &str = "K10df70b3bd61ef657eaa0cd1bc6eef4030328dda72ec0dd6de7c7ff061b7e69cf4::server:d6eea178fe9c2f098967fc2ebfdd36bd";
    const RECORDED_HASH: &str = "df70b3bd61ef657eaa0cd1bc6eef4030328dda72ec0dd6de7c7ff061b7e69cf4";

    #[test]
    fn recorded_token_parses_and_round_trips() {
        let t = Token::parse(RECORDED_TOKEN).unwrap();
        assert_eq!(t.ca_hash.as_deref(), Some(RECORDED_HASH));
        assert_eq!(t.username, "server");
        assert_eq!(t.password, "d6eea178fe9c2f098967fc2ebfdd36bd");
        assert_eq!(t.to_string(), RECORDED_TOKEN);
        assert_eq!(RECORDED_TOKEN.parse::<Token>().unwrap(), t);
    }

    #[test]
    fn recorded_cacerts_hash_matches_token() {
        assert_eq!(RECORDED_CACERTS.len(), 570);
        assert_eq!(ca_hash(RECORDED_CACERTS.as_bytes()), RECORDED_HASH);
        let t = Token {
            ca_hash: Some(ca_hash(RECORDED_CACERTS.as_bytes())),
            username: "server".to_owned(),
            password: "d6eea178fe9c2f098967fc2ebfdd36bd".to_owned(),
        };
        assert_eq!(t.to_string(), RECORDED_TOKEN);
    }

    #[test]
    fn unpinned_and_bare_tokens() {
        let t = Token::parse("K10::node:secret").unwrap();
        assert_eq!(t.ca_hash, None);
        assert_eq!(
            (t.username.as_str(), t.password.as_str()),
            ("node", "secret")
        );
        assert_eq!(t.to_string(), "K10::node:secret");

        let t = Token::parse("justapassword").unwrap();
        assert_eq!(t.ca_hash, None);
        assert_eq!(t.username, "");
        assert_eq!(t.password, "justapassword");
        assert_eq!(t.to_string(), "K10:::justapassword");

        // A bare password may contain colons; all of it stays the password.
        let t = Token::parse("a::b:c").unwrap();
        assert_eq!((t.username.as_str(), t.password.as_str()), ("", "a::b:c"));

        // The password is split at the first ':' only.
        let t = Token::parse("K10::user:pa:ss").unwrap();
        assert_eq!(
            (t.username.as_str(), t.password.as_str()),
            ("user", "pa:ss")
        );

        // No "::": k3s takes everything as credentials.
        let t = Token::parse("K10abc:x:y").unwrap();
        assert_eq!(t.ca_hash, None);
        assert_eq!((t.username.as_str(), t.password.as_str()), ("abc", "x:y"));
    }

    #[test]
    fn k3s_error_texts() {
        assert_eq!(
            Token::parse("").unwrap_err().to_string(),
            "token must not be empty"
        );
        assert_eq!(
            Token::parse("K10abcd::server:pw").unwrap_err().to_string(),
            "invalid token CA hash length"
        );
        assert_eq!(
            Token::parse("K10::nocolon").unwrap_err().to_string(),
            "invalid token format"
        );
        assert_eq!(
            Token::parse("K10::user:").unwrap_err().to_string(),
            "invalid token format"
        );
        assert_eq!(Token::parse("K10").unwrap_err(), TokenError::InvalidFormat);
    }

    #[test]
    fn debug_hides_the_password() {
        let t = Token::parse(RECORDED_TOKEN).unwrap();
        let dbg = format!("{t:?}");
        assert!(!dbg.contains("d6eea178"), "{dbg}");
        assert!(dbg.contains("server"));
    }

    #[test]
    fn generated_passwords_are_32_lowercase_hex() {
        let a = generate_password();
        let b = generate_password();
        assert_eq!(a.len(), 32);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
        );
        assert_ne!(a, b);
    }

    /// A CA certificate named `name`, self-signed or signed by `parent`.
    fn ca(
        name: &str,
        parent: Option<&(rcgen::Certificate, rcgen::KeyPair, rcgen::CertificateParams)>,
    ) -> (rcgen::Certificate, rcgen::KeyPair, rcgen::CertificateParams) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.use_authority_key_identifier_extension = parent.is_some();
        let cert = match parent {
            None => params.self_signed(&key).unwrap(),
            Some((_, parent_key, parent_params)) => {
                let issuer = rcgen::Issuer::from_params(parent_params, parent_key);
                params.signed_by(&key, &issuer).unwrap()
            }
        };
        (cert, key, params)
    }

    #[test]
    fn bundles_hash_the_root_der() {
        let root = ca("root", None);
        let mid = ca("intermediate", Some(&root));
        let sub = ca("sub-intermediate", Some(&mid));
        let root_hash = hex::encode(Sha256::digest(root.0.der()));

        let bundle = format!("{}{}", mid.0.pem(), root.0.pem());
        assert_eq!(ca_hash(bundle.as_bytes()), root_hash);
        // Through an intermediate, in any order after the first certificate.
        let bundle = format!("{}{}{}", sub.0.pem(), root.0.pem(), mid.0.pem());
        assert_eq!(ca_hash(bundle.as_bytes()), root_hash);

        // No chain from the first certificate: the raw bytes, as k3s falls
        // back to when verification fails.
        let other = ca("other root", None);
        for bundle in [
            format!("{}{}", mid.0.pem(), other.0.pem()),
            format!("{}{}", root.0.pem(), mid.0.pem()),
        ] {
            let raw = hex::encode(Sha256::digest(bundle.as_bytes()));
            assert_eq!(ca_hash(bundle.as_bytes()), raw);
        }
    }

    #[test]
    fn single_cert_or_garbage_hashes_raw_bytes() {
        let raw = |b: &[u8]| hex::encode(Sha256::digest(b));
        assert_eq!(ca_hash(b""), raw(b""));
        assert_eq!(ca_hash(b"not pem at all"), raw(b"not pem at all"));
        // Same certificate with a different trailing byte: a different hash,
        // because the single-certificate rule hashes the text, not the DER.
        let trimmed = RECORDED_CACERTS.trim_end().as_bytes();
        assert_eq!(ca_hash(trimmed), raw(trimmed));
        assert_ne!(ca_hash(trimmed), RECORDED_HASH);
    }
}
