//! HTTPS to the supervisor: reqwest over hyper, rustls on the ring provider
//! configured here and handed to reqwest preconfigured (as `armlet-image`
//! does), host names resolved by `armlet-resolve` (the static binary has no
//! NSS), HTTP/1.1 only, k3s's 10-second timeouts.
//!
//! Three trust settings, for the three `/cacerts` steps of k3s's
//! `getCACerts`: the system roots; none at all ([`armlet_tls::AnyServerCert`], used for the
//! single unverified `/cacerts` request whose answer is then pinned by hash
//! or trusted on first use); and the cluster's CA bundle.

use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};

/// k3s's client timeout (`defaultClientTimeout`).
const TIMEOUT: Duration = Duration::from_secs(10);

/// The largest answer read: CA bundles, certificates and the control
/// configuration are a few kilobytes.
const MAX_BODY: usize = 1 << 20;

/// The longest stretch of a server's error text kept in an error.
const MAX_DETAIL: usize = 300;

/// The k3s explanation of a 403 on the node certificates (newer k3s agents'
/// wording, `pkg/agent/config/config.go`).
fn node_password_explanation(password_file: &str) -> String {
    format!(
        "Node password rejected, duplicate hostname or contents of '{password_file}' may not \
         match server node-passwd entry, try enabling a unique node name with the \
         --with-node-id flag"
    )
}

/// Why a request to the supervisor failed.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    /// The TLS settings could not be built (no usable CA in the bundle, ...).
    #[error("TLS configuration: {0}")]
    TlsConfig(String),
    /// No answer: connection refused or reset, timeout, TLS handshake failure.
    /// Retryable.
    #[error("{url}: {detail}")]
    Transport {
        /// What was asked for.
        url: String,
        /// What went wrong, with its causes.
        detail: String,
    },
    /// The server's certificate is not signed by the CA it serves (k3s: "CA
    /// cert validation failed"), or not valid for the URL's host name.
    #[error("{url}: CA cert validation failed: {detail}")]
    Untrusted {
        /// What was asked for.
        url: String,
        /// The TLS error.
        detail: String,
    },
    /// HTTP 401: the token's credentials are wrong.
    #[error("{url}: the token's password was refused (HTTP 401)")]
    Unauthorized {
        /// What was asked for.
        url: String,
    },
    /// HTTP 403 on a node certificate: the node name is claimed with another
    /// node password.
    #[error("{url}: {explanation} (server: {detail})")]
    NodePasswordRejected {
        /// What was asked for.
        url: String,
        /// k3s's explanation, naming the password file.
        explanation: String,
        /// What the server said.
        detail: String,
    },
    /// HTTP 403 elsewhere: the credentials are not an agent's.
    #[error("{url}: forbidden (HTTP 403): the token is not an agent's{}", suffix(.detail))]
    Forbidden {
        /// What was asked for.
        url: String,
        /// What the server said.
        detail: String,
    },
    /// HTTP 400: the request lacked something (node name or password
    /// headers, a usable CSR).
    #[error("{url}: bad request (HTTP 400){}", suffix(.detail))]
    BadRequest {
        /// What was asked for.
        url: String,
        /// What the server said.
        detail: String,
    },
    /// Any other status. 5xx and 429 are retryable.
    #[error("{url}: HTTP {status}{}", suffix(.detail))]
    Status {
        /// What was asked for.
        url: String,
        /// The status code.
        status: u16,
        /// What the server said.
        detail: String,
    },
    /// The answer is unusable (too large, not PEM, a certificate for another
    /// key, ...).
    #[error("{url}: unusable answer: {detail}")]
    BadResponse {
        /// What was asked for.
        url: String,
        /// What is wrong with it.
        detail: String,
    },
}

fn suffix(detail: &str) -> String {
    if detail.is_empty() {
        String::new()
    } else {
        format!(": {detail}")
    }
}

impl SupervisorError {
    /// Whether trying again later may help: the server was unreachable or
    /// answered with a server-side error (its API not up yet: 503).
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Transport { .. } => true,
            Self::Status { status, .. } => *status >= 500 || *status == 429,
            _ => false,
        }
    }
}

/// What kind of endpoint a request went to: the node-named certificates
/// explain a 403 differently.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Endpoint<'a> {
    /// `/cacerts`, `/v1-k3s/config`, the CA files, the shared client certs.
    Plain,
    /// `serving-kubelet.crt` and `client-kubelet.crt`, with the node password
    /// from this file.
    NodeNamed {
        /// Where the node password is kept (for the explanation).
        password_file: &'a str,
    },
}

/// The start of a server's error text, printable and bounded (bodies are
/// server-controlled).
fn detail(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut out: String = text
        .trim()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_DETAIL)
        .collect();
    if text.trim().chars().count() > MAX_DETAIL {
        out.push('…');
    }
    out
}

/// The error for a non-success answer.
pub(crate) fn status_error(
    url: &str,
    status: StatusCode,
    body: &[u8],
    endpoint: Endpoint<'_>,
) -> SupervisorError {
    let url = url.to_owned();
    let detail = detail(body);
    match (status, endpoint) {
        (StatusCode::UNAUTHORIZED, _) => SupervisorError::Unauthorized { url },
        (StatusCode::FORBIDDEN, Endpoint::NodeNamed { password_file }) => {
            SupervisorError::NodePasswordRejected {
                url,
                explanation: node_password_explanation(password_file),
                detail,
            }
        }
        (StatusCode::FORBIDDEN, Endpoint::Plain) => SupervisorError::Forbidden { url, detail },
        (StatusCode::BAD_REQUEST, _) => SupervisorError::BadRequest { url, detail },
        _ => SupervisorError::Status {
            url,
            status: status.as_u16(),
            detail,
        },
    }
}

/// A reqwest error with its causes (reqwest's own text is only "error
/// sending request"); TLS verification failures are told apart, since
/// retrying them does not help.
fn transport(url: &str, e: reqwest::Error) -> SupervisorError {
    let e = e.without_url();
    let mut detail = e.to_string();
    let mut untrusted = false;
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        if let Some(tls) = s.downcast_ref::<rustls::Error>() {
            untrusted |= matches!(tls, rustls::Error::InvalidCertificate(_));
        }
        let text = s.to_string();
        if !detail.contains(&text) {
            detail.push_str(": ");
            detail.push_str(&text);
        }
        source = s.source();
    }
    // The certificate error may also sit inside an io::Error's text only.
    untrusted |= detail.contains("invalid peer certificate");
    let url = url.to_owned();
    if untrusted {
        SupervisorError::Untrusted { url, detail }
    } else {
        SupervisorError::Transport { url, detail }
    }
}

/// How the supervisor's certificate is checked.
#[derive(Debug, Clone)]
pub(crate) enum Trust {
    /// Against the system's CA certificates.
    System,
    /// Not at all (only for the first `/cacerts` fetch).
    Any,
    /// Against the cluster's CA bundle (PEM).
    Bundle(Vec<u8>),
}

/// The system's CA certificates; empty when the board has none.
fn system_roots() -> RootCertStore {
    let mut roots = RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        // One unparsable system certificate must not take the others down.
        let _ = roots.add(cert);
    }
    roots
}

/// Whether the system has any CA certificates at all.
pub(crate) fn has_system_roots() -> bool {
    !system_roots().is_empty()
}

fn tls_config(trust: &Trust) -> Result<ClientConfig, SupervisorError> {
    let provider = armlet_tls::provider();
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| SupervisorError::TlsConfig(e.to_string()))?;
    let mut config = match trust {
        Trust::System => builder.with_root_certificates(system_roots()),
        Trust::Any => builder
            .dangerous()
            // The first `GET /cacerts`, whose body is then pinned by the
            // token's hash (or trusted on first use for a token without one),
            // as k3s's `insecureClient` does.
            .with_custom_certificate_verifier(armlet_tls::AnyServerCert::new(&provider)),
        Trust::Bundle(pem) => {
            let mut roots = RootCertStore::empty();
            let blocks = crate::x509::pem_blocks(pem)
                .map_err(|e| SupervisorError::TlsConfig(format!("cluster CA bundle: {e}")))?;
            for block in blocks.into_iter().filter(|b| b.label == "CERTIFICATE") {
                roots
                    .add(CertificateDer::from(block.der))
                    .map_err(|e| SupervisorError::TlsConfig(format!("cluster CA bundle: {e}")))?;
            }
            if roots.is_empty() {
                return Err(SupervisorError::TlsConfig(
                    "the cluster CA bundle holds no certificate".into(),
                ));
            }
            builder.with_root_certificates(roots)
        }
    }
    .with_no_client_auth();
    // HTTP/1.1 only: k3s's supervisor speaks it, and HTTP/2 is left out of
    // the binary.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// A client for the supervisor with `trust`.
pub(crate) fn client(
    trust: &Trust,
    resolver: &Arc<armlet_resolve::Resolver>,
) -> Result<reqwest::Client, SupervisorError> {
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls_config(trust)?)
        .dns_resolver(armlet_resolve::ReqwestResolver(Arc::clone(resolver)))
        .user_agent(concat!("armlet/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(TIMEOUT)
        .timeout(TIMEOUT)
        .no_proxy()
        .build()
        .map_err(|e| SupervisorError::TlsConfig(e.to_string()))
}

/// Sends `request` to `url` and returns the body of a 2xx answer (at most
/// [`MAX_BODY`] bytes), or the error the status means.
pub(crate) async fn fetch(
    request: reqwest::RequestBuilder,
    url: &str,
    endpoint: Endpoint<'_>,
) -> Result<Vec<u8>, SupervisorError> {
    let mut response = request.send().await.map_err(|e| transport(url, e))?;
    let status = response.status();
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| transport(url, e))? {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(SupervisorError::BadResponse {
                url: url.to_owned(),
                detail: format!("larger than {MAX_BODY} bytes"),
            });
        }
        body.extend_from_slice(&chunk);
    }
    if !status.is_success() {
        return Err(status_error(url, status, &body, endpoint));
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str = "https://10.0.0.1:6443/v1-k3s/client-kubelet.crt";
    const NODE: Endpoint<'static> = Endpoint::NodeNamed {
        password_file: "/etc/rancher/node/password",
    };

    #[test]
    fn status_mapping() {
        let e = status_error(URL, StatusCode::UNAUTHORIZED, b"", NODE);
        assert!(matches!(e, SupervisorError::Unauthorized { .. }));
        assert!(
            e.to_string().contains("the token's password was refused"),
            "{e}"
        );
        assert!(!e.is_retryable());

        let body = b"unable to verify hash for node 'rust-edge-1': hash does not match";
        let e = status_error(URL, StatusCode::FORBIDDEN, body, NODE).to_string();
        assert!(
            e.contains(
                "Node password rejected, duplicate hostname or contents of \
                 '/etc/rancher/node/password' may not match server node-passwd entry, try \
                 enabling a unique node name with the --with-node-id flag"
            ),
            "{e}"
        );
        assert!(e.contains("hash does not match"), "{e}");

        let e = status_error(URL, StatusCode::FORBIDDEN, b"", Endpoint::Plain);
        assert!(matches!(e, SupervisorError::Forbidden { .. }), "{e}");

        let e = status_error(URL, StatusCode::BAD_REQUEST, b"node name not set", NODE);
        assert!(matches!(e, SupervisorError::BadRequest { .. }));
        assert!(e.to_string().ends_with("node name not set"), "{e}");
        assert!(!e.is_retryable());

        for (status, retry) in [
            (StatusCode::SERVICE_UNAVAILABLE, true),
            (StatusCode::INTERNAL_SERVER_ERROR, true),
            (StatusCode::TOO_MANY_REQUESTS, true),
            (StatusCode::NOT_FOUND, false),
        ] {
            assert_eq!(
                status_error(URL, status, b"", Endpoint::Plain).is_retryable(),
                retry,
                "{status}"
            );
        }
    }

    #[test]
    fn server_text_is_bounded_and_printable() {
        let long = vec![b'x'; 5000];
        let e = status_error(URL, StatusCode::BAD_GATEWAY, &long, Endpoint::Plain).to_string();
        assert!(e.len() < 500, "{}", e.len());
        let e = status_error(
            URL,
            StatusCode::BAD_GATEWAY,
            b"a\x1b[31mb\n",
            Endpoint::Plain,
        );
        assert!(!e.to_string().contains('\x1b'));
    }

    #[test]
    fn tls_configs_build() {
        assert!(tls_config(&Trust::Any).is_ok());
        assert!(tls_config(&Trust::System).is_ok());
        let ca = crate::x509::tests::RECORDED_CA.as_bytes().to_vec();
        let config = tls_config(&Trust::Bundle(ca)).unwrap();
        assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
        let e = tls_config(&Trust::Bundle(b"nothing".to_vec())).unwrap_err();
        assert!(e.to_string().contains("no certificate"), "{e}");
    }
}
