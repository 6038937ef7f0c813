//! One HTTPS listener for everything, as K3s's port 6443: TLS (client
//! certificates optional, verified against the client CA when given), HTTP/1.1,
//! the supervisor API first and the Kubernetes API behind it.

use std::sync::Arc;

use http_body_util::{BodyExt as _, Limited};
use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::net::TcpListener;

use crate::api::{Api, ApiRequest};
use crate::http::{self, Reply};
use crate::kubelet::{self, Kubelets};
use crate::supervisor::{Call, Caller, Supervisor};

/// Largest request body read (the API server's limit is 3 MiB).
pub const MAX_BODY: usize = 3 << 20;

/// Why the listener could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The TLS configuration was refused.
    #[error("TLS setup: {0}")]
    Tls(String),
}

/// The TLS configuration: our serving certificate, and client certificates
/// accepted when signed by the client CA (but not required: agents join with
/// Basic credentials before they have one).
pub fn tls_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    client_ca: CertificateDer<'static>,
) -> Result<rustls::ServerConfig, ServerError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(client_ca)
        .map_err(|e| ServerError::Tls(e.to_string()))?;
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
            .allow_unauthenticated()
            .build()
            .map_err(|e| ServerError::Tls(e.to_string()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ServerError::Tls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| ServerError::Tls(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The identity a verified client certificate carries: CN as user,
/// O as groups (Kubernetes' x509 authenticator).
pub fn cert_caller(der: &[u8]) -> Option<Caller> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let name = subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())?
        .to_owned();
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_owned))
        .collect();
    Some(Caller::User { name, groups })
}

/// Serves connections until the task is dropped.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    supervisor: Arc<Supervisor>,
    api: Arc<Api>,
    kubelets: Arc<Kubelets>,
) -> std::io::Result<()> {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let (tcp, _peer) = listener.accept().await?;
        // As kube-apiserver (Go sets it on every TCP connection): without it
        // a small response waits for the client's delayed ACK (~40 ms).
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let supervisor = Arc::clone(&supervisor);
        let api = Arc::clone(&api);
        let kubelets = Arc::clone(&kubelets);
        tokio::spawn(async move {
            // A client that fails the handshake (wrong CA, not TLS) is simply
            // dropped, as Go's server does; the server carries on.
            let Ok(stream) = acceptor.accept(tcp).await else {
                return;
            };
            let caller = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(|leaf| cert_caller(leaf));
            let service = hyper::service::service_fn(move |request| {
                let supervisor = Arc::clone(&supervisor);
                let api = Arc::clone(&api);
                let kubelets = Arc::clone(&kubelets);
                let caller = caller.clone();
                async move {
                    Ok::<_, std::convert::Infallible>(
                        respond(&supervisor, &api, &kubelets, caller, request).await,
                    )
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await;
        });
    }
}

/// One request: the tunnel's and the kubelets' (before the body is read:
/// upgrades and streams need the raw request), else the supervisor's if it
/// is one, else the Kubernetes API's.
async fn respond(
    supervisor: &Supervisor,
    api: &Api,
    kubelets: &Kubelets,
    caller: Option<Caller>,
    request: Request<Incoming>,
) -> Reply {
    if let Some(route) = kubelet::route(request.uri().path()) {
        return kubelets
            .handle(route, supervisor, api, caller, request)
            .await;
    }
    let (parts, body) = request.into_parts();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return http::status(
                StatusCode::PAYLOAD_TOO_LARGE,
                "RequestEntityTooLarge",
                "the request body is too large",
                false,
            );
        }
    };
    let call = Call {
        path: parts.uri.path(),
        query: parts.uri.query(),
        headers: &parts.headers,
        cert_caller: caller.clone(),
        body: &body,
    };
    // Node-password checks hash with scrypt (tens of milliseconds): let the
    // runtime move other connections off this worker meanwhile.
    if let Some(reply) = tokio::task::block_in_place(|| supervisor.handle(&call)) {
        return reply;
    }
    let pretty = http::wants_pretty(
        parts
            .headers
            .get("user-agent")
            .and_then(|v| v.to_str().ok()),
        parts.uri.query(),
    );
    let content_type = parts
        .headers
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    api.handle(&ApiRequest {
        method: &parts.method,
        path: parts.uri.path(),
        query: parts.uri.query(),
        content_type,
        accept: parts
            .headers
            .get(hyper::header::ACCEPT)
            .and_then(|v| v.to_str().ok()),
        caller: caller.as_ref(),
        bearer: parts
            .headers
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim),
        body: &body,
        pretty,
    })
}
