//! rustls pieces armlet's TLS clients share (registry pulls, the join's first
//! `/cacerts` fetch, the devserver's kubelet client):
//!
//! - [`provider`]: the ring crypto provider, the only one armlet builds with
//!   (no aws-lc, no OpenSSL: nothing to cross-compile in C);
//! - [`AnyServerCert`]: a verifier that accepts any server certificate but
//!   still checks the handshake signatures, so the peer proves it holds the
//!   key of the certificate it shows. It is what k3s's `insecure_skip_verify`,
//!   the API server's `insecureSkipTLSVerifyBackend` and the k3s agent's
//!   unverified `/cacerts` fetch (whose answer is then pinned by the token's
//!   hash) mean: not "no TLS", only "no chain of trust".

use std::sync::Arc;

use rustls::DigitallySignedStruct;
use rustls::SignatureScheme;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

/// The ring provider.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Accepts any server certificate; verifies handshake signatures with the
/// provider's algorithms.
#[derive(Debug)]
pub struct AnyServerCert(WebPkiSupportedAlgorithms);

impl AnyServerCert {
    /// The verifier for `provider`'s signature algorithms.
    pub fn new(provider: &CryptoProvider) -> Arc<Self> {
        Arc::new(Self(provider.signature_verification_algorithms))
    }
}

impl ServerCertVerifier for AnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The signature checks are exercised by real handshakes: the registry
    // tests' `insecure_skip_verify` pulls and the devserver's kubelet client.
    #[test]
    fn any_certificate_passes_with_the_providers_schemes() {
        let provider = provider();
        let verifier = AnyServerCert::new(&provider);
        let cert = CertificateDer::from(vec![0x30, 0x00]);
        let name = ServerName::try_from("kubelet").unwrap();
        assert!(
            verifier
                .verify_server_cert(&cert, &[], &name, &[], UnixTime::now())
                .is_ok()
        );
        assert_eq!(
            verifier.supported_verify_schemes(),
            provider
                .signature_verification_algorithms
                .supported_schemes()
        );
    }
}
