//! TLS for registry connections: rustls on the ring provider, with the system's
//! CA certificates plus a registry's own `ca_file`, an optional client
//! certificate, and k3s's `insecure_skip_verify` (which still checks that the
//! server holds the key it presents, only not who signed it).

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

use super::RegistryError;
use crate::registries::Tls;

fn bad(path: &Path, why: impl std::fmt::Display) -> RegistryError {
    RegistryError::TlsConfig(format!("{}: {why}", path.display()))
}

/// Certificates from a PEM file; an empty file is an error (a typo in the
/// path of a CA bundle must not silently mean "trust the system only").
fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, RegistryError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(path, e))?;
    if certs.is_empty() {
        return Err(bad(path, "holds no PEM certificate"));
    }
    Ok(certs)
}

/// The rustls client configuration for one registry host's settings, and
/// whether it can verify any server at all (some CA, or verification off).
pub(super) fn client_config(tls: Option<&Tls>) -> Result<(ClientConfig, bool), RegistryError> {
    let provider = armlet_tls::provider();
    let mut roots = RootCertStore::empty();
    // System roots first; a board without ca-certificates still reaches a
    // registry whose CA is configured.
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        // One unparsable system certificate must not take the others down.
        let _ = roots.add(cert);
    }
    if let Some(ca) = tls.and_then(|t| t.ca_file.as_deref()) {
        for cert in certificates(ca)? {
            roots.add(cert).map_err(|e| bad(ca, e))?;
        }
    }
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| RegistryError::TlsConfig(e.to_string()))?;
    let insecure = tls.is_some_and(|t| t.insecure_skip_verify);
    let builder = if insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(armlet_tls::AnyServerCert::new(&provider))
    } else {
        // Without roots the client still serves plain-HTTP endpoints; the
        // session refuses HTTPS ones with the reason (see `has_roots`).
        builder.with_root_certificates(roots.clone())
    };
    let cert_file = tls.and_then(|t| t.cert_file.as_deref());
    let key_file = tls.and_then(|t| t.key_file.as_deref());
    let mut config = match (cert_file, key_file) {
        (Some(cert), Some(key)) => {
            let chain = certificates(cert)?;
            let key = PrivateKeyDer::from_pem_file(key).map_err(|e| bad(key, e))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| RegistryError::TlsConfig(format!("client certificate: {e}")))?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => {
            return Err(RegistryError::TlsConfig(
                "cert_file and key_file must be given together".into(),
            ));
        }
    };
    // HTTP/1.1 only: registries all speak it, and leaving HTTP/2 out keeps the
    // binary smaller; parallel blob downloads use separate connections.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((config, insecure || !roots.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;

    #[test]
    fn missing_or_empty_ca_file_is_a_clear_error() {
        let dir = TempDir::new("tls");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        for path in [dir.path().join("missing.pem"), empty] {
            let tls = Tls {
                ca_file: Some(path.clone()),
                ..Tls::default()
            };
            let err = client_config(Some(&tls)).unwrap_err().to_string();
            assert!(err.contains(&path.display().to_string()), "{err}");
        }
    }

    #[test]
    fn client_cert_needs_its_key() {
        let dir = TempDir::new("tls");
        let tls = Tls {
            cert_file: Some(dir.path().join("c.pem")),
            ..Tls::default()
        };
        let err = client_config(Some(&tls)).unwrap_err().to_string();
        assert!(err.contains("together"), "{err}");
    }

    #[test]
    fn insecure_needs_no_roots_and_offers_http11() {
        let tls = Tls {
            insecure_skip_verify: true,
            ..Tls::default()
        };
        let (config, usable) = client_config(Some(&tls)).unwrap();
        assert!(usable);
        assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
    }
}
