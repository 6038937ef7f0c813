//! The Kubernetes API client: kube-rs over hyper and rustls with the ring
//! provider, from the join's PEM files or from a kubeconfig (K3s's
//! `kubelet.kubeconfig`).

use std::path::Path;

use base64::Engine as _;
use kube::config::{AuthInfo, KubeConfigOptions, Kubeconfig};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;

use crate::Error;

/// Makes ring the process's rustls provider. kube builds its TLS
/// configuration from the process default; with ring the only provider
/// compiled in, rustls would pick it anyway, but a second provider linked in
/// by some other crate would make that choice a panic. An already installed
/// default is left as it is.
fn install_ring() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// kube's client needs a Tokio runtime to start its request buffer: an
/// error, not a panic, without one.
fn require_runtime() -> Result<(), Error> {
    tokio::runtime::Handle::try_current()
        .map(drop)
        .map_err(|_| {
            Error::Config("the Kubernetes client must be created inside a Tokio runtime".into())
        })
}

/// A client for the API at `server_url` (`https://127.0.0.1:6444`, K3s's
/// agent-side load balancer, or a server directly), trusting only
/// `server_ca_pem` (PEM certificates) and authenticating with a client
/// certificate chain and its key (PEM; PKCS#8, PKCS#1 or SEC1), such as the
/// kubelet client certificate of the join. Must be called inside a Tokio
/// runtime.
pub fn client(
    server_url: &str,
    server_ca_pem: &[u8],
    client_cert_pem: &[u8],
    client_key_pem: &[u8],
) -> Result<kube::Client, Error> {
    require_runtime()?;
    install_ring();
    let url = server_url
        .parse()
        .map_err(|e| Error::Config(format!("server URL {server_url:?}: {e}")))?;
    let roots: Vec<Vec<u8>> = CertificateDer::pem_slice_iter(server_ca_pem)
        .map(|c| c.map(|c| c.as_ref().to_vec()))
        .collect::<Result<_, _>>()
        .map_err(|e| Error::Config(format!("server CA: {e}")))?;
    if roots.is_empty() {
        return Err(Error::Config("server CA: no certificate in the PEM".into()));
    }
    // AuthInfo keeps the key as a secret string; built from its kubeconfig
    // form (base64 of the PEM) so that type need not be named here.
    let b64 = base64::engine::general_purpose::STANDARD;
    let auth: AuthInfo = serde_json::from_value(serde_json::json!({
        "client-certificate-data": b64.encode(client_cert_pem),
        "client-key-data": b64.encode(client_key_pem),
    }))
    .map_err(|e| Error::Config(format!("client credentials: {e}")))?;
    let mut config = kube::Config::new(url);
    config.root_cert = Some(roots);
    config.auth_info = auth;
    kube::Client::try_from(config).map_err(Error::from)
}

/// A client from a kubeconfig file (its current context; relative file
/// paths in it are taken from its directory). Must be called inside a Tokio
/// runtime.
pub async fn client_from_kubeconfig(path: &Path) -> Result<kube::Client, Error> {
    require_runtime()?;
    install_ring();
    let kubeconfig = Kubeconfig::read_from(path)
        .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
    kube::Client::try_from(config).map_err(Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error<T>(result: Result<T, Error>) -> Error {
        match result {
            Ok(_) => panic!("expected an error"),
            Err(e) => e,
        }
    }

    #[test]
    fn no_runtime_is_an_error() {
        let e = error(client("https://127.0.0.1:6443", b"", b"", b""));
        assert!(e.to_string().contains("Tokio runtime"), "{e}");
    }

    #[tokio::test]
    async fn bad_inputs_are_errors() {
        let e = error(client("not a url", b"", b"", b""));
        assert!(matches!(e, Error::Config(_)), "{e}");
        let e = error(client("https://127.0.0.1:6443", b"no pem here", b"", b""));
        assert!(e.to_string().contains("no certificate"), "{e}");
        let e = error(client_from_kubeconfig(Path::new("/nonexistent/kubeconfig")).await);
        assert!(matches!(e, Error::Config(_)), "{e}");
    }
}
