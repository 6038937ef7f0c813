//! The registry client: OCI distribution / Docker registry v2 over HTTPS (or
//! plain HTTP when registries.yaml says so), with anonymous, basic and
//! bearer-token authentication.
//!
//! A [`Session`] talks to one [`Endpoint`] for one repository. It answers a
//! `401` once per request by authenticating as the challenge asks
//! ([`auth`]) and keeps the resulting `Authorization` for later requests;
//! a token that expires is simply renewed on the next `401`. HTTP clients are
//! shared per TLS configuration, so blobs of one pull reuse connections.
//!
//! Host names are resolved by `armlet-resolve` (hosts file, then DNS), not by
//! `getaddrinfo`: the binary is static and has no NSS.

mod auth;
mod tls;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderValue, RANGE, WWW_AUTHENTICATE};

pub use auth::Credentials;
use auth::{Challenge, TokenResponse, form_encode, parse_challenge};

use crate::digest::Digest;
use crate::registries::{Endpoint, Tls};

/// Media types asked for when fetching a manifest: indexes first, so a tag
/// resolves to the multi-platform index and the platform is chosen here.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// Largest manifest or index accepted (they are small JSON documents; the
/// distribution spec suggests registries refuse those over 4 MiB).
pub const MAX_MANIFEST: u64 = 4 << 20;

/// Largest token service answer read.
const MAX_TOKEN_RESPONSE: u64 = 1 << 20;

/// Why a registry request failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The TLS settings could not be used (unreadable CA file, ...).
    #[error("TLS configuration: {0}")]
    TlsConfig(String),
    /// The request did not complete (connection refused, reset, timeout, TLS).
    #[error("{url}: {detail}")]
    Transport {
        /// What was asked for.
        url: String,
        /// What went wrong, with its causes.
        detail: String,
        /// No connection could be made at all (refused, unreachable, TLS
        /// handshake failed): the endpoint is down, not just this transfer.
        unreachable: bool,
    },
    /// The registry refused our credentials, or wants some and we have none.
    #[error("{url}: not authorized ({detail})")]
    Unauthorized {
        /// What was asked for.
        url: String,
        /// Why, as far as we know.
        detail: String,
    },
    /// The registry does not have it.
    #[error("{url}: not found")]
    NotFound {
        /// What was asked for.
        url: String,
    },
    /// Any other unexpected answer.
    #[error("{url}: HTTP {status}{}", if body.is_empty() { String::new() } else { format!(": {body}") })]
    Status {
        /// What was asked for.
        url: String,
        /// The status code.
        status: u16,
        /// The start of the body (registries explain errors there).
        body: String,
    },
    /// The registry sent something unusable (a manifest too large, content
    /// not matching its digest, an unsupported media type).
    #[error("{url}: {detail}")]
    BadResponse {
        /// What was asked for.
        url: String,
        /// What is wrong with it.
        detail: String,
    },
}

impl RegistryError {
    /// Whether retrying the same request may help (the transfer broke, the
    /// server had a transient error); auth and not-found answers will not change.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Transport { .. } => true,
            Self::Status { status, .. } => *status >= 500 || *status == 429,
            _ => false,
        }
    }
}

/// A reqwest error with its chain of causes (reqwest's own Display says only
/// "error sending request").
fn transport(url: &str, e: reqwest::Error) -> RegistryError {
    // The URL leads the message already.
    let unreachable = e.is_connect();
    let e = e.without_url();
    let mut detail = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        let text = s.to_string();
        if !detail.contains(&text) {
            detail.push_str(": ");
            detail.push_str(&text);
        }
        source = s.source();
    }
    RegistryError::Transport {
        url: url.to_owned(),
        detail,
        unreachable,
    }
}

/// Builds HTTP clients, one per distinct TLS configuration, shared by all
/// sessions.
#[derive(Clone)]
pub struct Registry {
    resolver: Arc<armlet_resolve::Resolver>,
    clients: Arc<Mutex<HashMap<String, (reqwest::Client, bool)>>>,
    user_agent: String,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").finish_non_exhaustive()
    }
}

impl Registry {
    /// A client resolving names with `resolver`.
    pub fn new(resolver: armlet_resolve::Resolver) -> Self {
        Self {
            resolver: Arc::new(resolver),
            clients: Arc::default(),
            user_agent: format!("armlet/{}", env!("CARGO_PKG_VERSION")),
        }
    }

    /// A client resolving names from this system's `/etc/hosts` and
    /// `/etc/resolv.conf`; without them, IP addresses and `localhost` still work.
    pub fn from_system() -> Self {
        let resolver = armlet_resolve::Resolver::from_system().unwrap_or_else(|_| {
            armlet_resolve::Resolver::new(armlet_resolve::ResolverConfig::default())
        });
        Self::new(resolver)
    }

    /// The client for these TLS settings, and whether it can verify HTTPS
    /// servers (it has CA roots, or verification is off).
    fn client(&self, tls: Option<&Tls>) -> Result<(reqwest::Client, bool), RegistryError> {
        let key = format!("{tls:?}");
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(found) = clients.get(&key) {
            return Ok(found.clone());
        }
        let (config, verifies) = tls::client_config(tls)?;
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(config)
            .dns_resolver(armlet_resolve::ReqwestResolver(Arc::clone(&self.resolver)))
            .user_agent(self.user_agent.clone())
            .connect_timeout(Duration::from_secs(30))
            // Per read, not per request: a large layer may take minutes on a
            // slow link, but a stalled one is noticed.
            .read_timeout(Duration::from_secs(60))
            .no_proxy()
            .build()
            .map_err(|e| RegistryError::TlsConfig(e.to_string()))?;
        clients.insert(key, (client.clone(), verifies));
        Ok((client, verifies))
    }

    /// A session for `endpoint`, authenticating with `credentials` when the
    /// registry asks.
    pub fn session(
        &self,
        endpoint: &Endpoint,
        credentials: Option<Credentials>,
    ) -> Result<Session, RegistryError> {
        let (http, verifies) = self.client(endpoint.tls.as_ref())?;
        if !endpoint.url.plain_http && !verifies {
            return Err(RegistryError::TlsConfig(format!(
                "{}: no CA certificates to check it with: the system has none \
                 (install ca-certificates) and registries.yaml gives no ca_file",
                endpoint.url.api_root()
            )));
        }
        Ok(Session {
            http,
            api_root: endpoint.url.api_root(),
            repository: endpoint.repository.clone(),
            credentials,
            authorization: Mutex::default(),
        })
    }
}

/// One endpoint and repository, with the authorization earned so far.
#[derive(Debug)]
pub struct Session {
    http: reqwest::Client,
    api_root: String,
    repository: String,
    credentials: Option<Credentials>,
    authorization: Mutex<Option<HeaderValue>>,
}

/// A fetched manifest or index.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// Its digest (verified).
    pub digest: Digest,
    /// The media type the registry gave.
    pub media_type: String,
    /// The bytes, exactly as served.
    pub bytes: Vec<u8>,
}

/// An open blob download.
#[derive(Debug)]
pub struct BlobResponse {
    /// The response, body still to be read.
    pub response: reqwest::Response,
    /// Whether the server honoured the range (the body starts at the offset
    /// asked for); otherwise it starts at zero.
    pub partial: bool,
}

impl Session {
    /// Where this session pulls from (`https://host/v2/repo`), for messages.
    pub fn location(&self) -> String {
        format!("{}{}", self.api_root, self.repository)
    }

    fn url(&self, kind: &str, reference: &str) -> String {
        format!("{}{}/{kind}/{reference}", self.api_root, self.repository)
    }

    /// Fetches the manifest or index `reference` (a tag or a digest). Its
    /// digest is computed from the bytes and must match `reference` when that
    /// is a digest, and the registry's `Docker-Content-Digest` when given.
    pub async fn manifest(&self, reference: &str) -> Result<Manifest, RegistryError> {
        let url = self.url("manifests", reference);
        let response = self.send(&url, Some(MANIFEST_ACCEPT), None).await?;
        let media_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_owned();
        let announced = response
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let bytes = read_limited(&url, response, MAX_MANIFEST).await?;
        let digest = Digest::of(&bytes);
        let bad = |detail: String| RegistryError::BadResponse {
            url: url.clone(),
            detail,
        };
        if let Ok(wanted) = reference.parse::<Digest>() {
            if wanted != digest {
                return Err(bad(format!("content hashes to {digest}, not {wanted}")));
            }
        } else if let Some(announced) = announced {
            // Only sha256 is ours to check; another algorithm is not a lie.
            if announced.starts_with("sha256:") && announced != digest.to_string() {
                return Err(bad(format!(
                    "content hashes to {digest}, the registry says {announced}"
                )));
            }
        }
        if media_type == "application/vnd.docker.distribution.manifest.v1+prettyjws"
            || media_type == "application/vnd.docker.distribution.manifest.v1+json"
        {
            return Err(bad(format!(
                "{media_type} (Docker schema 1) is not supported; push the image again \
                 with a current tool"
            )));
        }
        Ok(Manifest {
            digest,
            media_type,
            bytes,
        })
    }

    /// Starts downloading blob `digest` from byte `offset`.
    pub async fn blob(&self, digest: &Digest, offset: u64) -> Result<BlobResponse, RegistryError> {
        let url = self.url("blobs", &digest.to_string());
        let range = (offset > 0).then(|| format!("bytes={offset}-"));
        let response = self.send(&url, None, range.as_deref()).await?;
        let partial = response.status() == StatusCode::PARTIAL_CONTENT;
        if partial {
            // A range other than the one asked for would only be caught by the
            // digest, after a whole download.
            let content_range = response
                .headers()
                .get(reqwest::header::CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let start = content_range
                .strip_prefix("bytes ")
                .and_then(|r| r.split('-').next())
                .and_then(|n| n.trim().parse::<u64>().ok());
            if start != Some(offset) {
                return Err(RegistryError::BadResponse {
                    url,
                    detail: format!(
                        "asked for bytes from {offset}, got Content-Range {content_range:?}"
                    ),
                });
            }
        }
        Ok(BlobResponse { response, partial })
    }

    /// Sends a GET, authenticating once if the registry answers `401`, and
    /// turns error statuses into [`RegistryError`]s.
    async fn send(
        &self,
        url: &str,
        accept: Option<&str>,
        range: Option<&str>,
    ) -> Result<reqwest::Response, RegistryError> {
        self.request(reqwest::Method::GET, url, accept, range).await
    }

    /// What a tag points at now, by a `HEAD` request (Docker Hub counts
    /// `GET`s of manifests against its pull limit, not `HEAD`s). `None` when
    /// the registry does not say (no sha256 `Docker-Content-Digest`): then
    /// fetch the manifest.
    pub async fn manifest_digest(&self, reference: &str) -> Result<Option<Digest>, RegistryError> {
        let url = self.url("manifests", reference);
        let response = self
            .request(reqwest::Method::HEAD, &url, Some(MANIFEST_ACCEPT), None)
            .await?;
        Ok(response
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok()))
    }

    async fn request(
        &self,
        method: reqwest::Method,
        url: &str,
        accept: Option<&str>,
        range: Option<&str>,
    ) -> Result<reqwest::Response, RegistryError> {
        let mut authenticated = false;
        loop {
            let mut request = self.http.request(method.clone(), url);
            if let Some(accept) = accept {
                request = request.header(ACCEPT, accept);
            }
            if let Some(range) = range {
                request = request.header(RANGE, range);
            }
            let current = self
                .authorization
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            if let Some(auth) = current {
                request = request.header(AUTHORIZATION, auth);
            }
            let response = request.send().await.map_err(|e| transport(url, e))?;
            let status = response.status();
            if status == StatusCode::UNAUTHORIZED && !authenticated {
                let challenge = response
                    .headers()
                    .get_all(WWW_AUTHENTICATE)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .find_map(parse_challenge);
                let header = self.authenticate(url, challenge).await?;
                *self.authorization.lock().unwrap_or_else(|e| e.into_inner()) = Some(header);
                authenticated = true;
                continue;
            }
            if status.is_success() {
                return Ok(response);
            }
            let body = error_body(response).await;
            return Err(match status {
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => RegistryError::Unauthorized {
                    url: url.to_owned(),
                    detail: if body.is_empty() {
                        format!("HTTP {}", status.as_u16())
                    } else {
                        body
                    },
                },
                StatusCode::NOT_FOUND => RegistryError::NotFound {
                    url: url.to_owned(),
                },
                _ => RegistryError::Status {
                    url: url.to_owned(),
                    status: status.as_u16(),
                    body,
                },
            });
        }
    }

    /// The `Authorization` header that answers `challenge`.
    async fn authenticate(
        &self,
        url: &str,
        challenge: Option<Challenge>,
    ) -> Result<HeaderValue, RegistryError> {
        let unauthorized = |detail: String| RegistryError::Unauthorized {
            url: url.to_owned(),
            detail,
        };
        let header = match challenge {
            None => {
                return Err(unauthorized(
                    "the registry asks for authentication without a usable challenge".into(),
                ));
            }
            Some(Challenge::Basic) => {
                match self.credentials.as_ref().and_then(|c| c.basic_header()) {
                    Some(h) => h,
                    None => {
                        return Err(unauthorized(
                            "the registry wants a user name and password and none is configured"
                                .into(),
                        ));
                    }
                }
            }
            Some(Challenge::Bearer {
                realm,
                service,
                scope,
            }) => {
                let scope = scope.unwrap_or_else(|| format!("repository:{}:pull", self.repository));
                let token = self.token(&realm, service.as_deref(), &scope).await?;
                format!("Bearer {token}")
            }
        };
        HeaderValue::from_str(&header)
            .map_err(|_| unauthorized("the token is not a valid header value".into()))
    }

    /// A token from the realm for `scope`.
    async fn token(
        &self,
        realm: &str,
        service: Option<&str>,
        scope: &str,
    ) -> Result<String, RegistryError> {
        if !(realm.starts_with("https://") || realm.starts_with("http://")) {
            return Err(RegistryError::BadResponse {
                url: realm.to_owned(),
                detail: "the token realm is not an http(s) URL".into(),
            });
        }
        let mut params = vec![("scope", scope)];
        if let Some(service) = service {
            params.push(("service", service));
        }
        let request = match &self.credentials {
            Some(Credentials::IdentityToken(refresh)) => {
                params.extend([
                    ("grant_type", "refresh_token"),
                    ("refresh_token", refresh.as_str()),
                    ("client_id", "armlet"),
                ]);
                self.http
                    .post(realm)
                    .header(
                        reqwest::header::CONTENT_TYPE,
                        "application/x-www-form-urlencoded",
                    )
                    .body(encode_pairs(&params))
            }
            credentials => {
                let sep = if realm.contains('?') { '&' } else { '?' };
                let mut request = self
                    .http
                    .get(format!("{realm}{sep}{}", encode_pairs(&params)));
                if let Some(basic) = credentials.as_ref().and_then(|c| c.basic_header()) {
                    request = request.header(AUTHORIZATION, basic);
                }
                request
            }
        };
        let response = request.send().await.map_err(|e| transport(realm, e))?;
        let status = response.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            let body = error_body(response).await;
            return Err(RegistryError::Unauthorized {
                url: realm.to_owned(),
                detail: if self.credentials.is_some() {
                    format!("the token service refused the credentials: {body}")
                } else {
                    format!("the token service wants credentials and none are configured: {body}")
                },
            });
        }
        if !status.is_success() {
            return Err(RegistryError::Status {
                url: realm.to_owned(),
                status: status.as_u16(),
                body: error_body(response).await,
            });
        }
        let bytes = read_limited(realm, response, MAX_TOKEN_RESPONSE).await?;
        serde_json::from_slice::<TokenResponse>(&bytes)
            .ok()
            .and_then(TokenResponse::into_token)
            .ok_or_else(|| RegistryError::BadResponse {
                url: realm.to_owned(),
                detail: "the token service answered without a token".into(),
            })
    }
}

fn encode_pairs(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", form_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Reads a whole body, refusing one over `max` bytes.
async fn read_limited(
    url: &str,
    mut response: reqwest::Response,
    max: u64,
) -> Result<Vec<u8>, RegistryError> {
    let too_large = || RegistryError::BadResponse {
        url: url.to_owned(),
        detail: format!("more than {max} bytes"),
    };
    if response.content_length().is_some_and(|l| l > max) {
        return Err(too_large());
    }
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| transport(url, e))? {
        if bytes.len() as u64 + chunk.len() as u64 > max {
            return Err(too_large());
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

/// The start of an error body, as one line of text (registries put a JSON
/// `errors` list there).
async fn error_body(mut response: reqwest::Response) -> String {
    let mut bytes = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        bytes.extend_from_slice(&chunk);
        if bytes.len() > 512 {
            break;
        }
    }
    let text = String::from_utf8_lossy(&bytes);
    let mut line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.len() > 300 {
        let mut end = 300;
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        line.truncate(end);
        line.push('…');
    }
    line
}
