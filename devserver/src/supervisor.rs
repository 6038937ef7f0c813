//! The K3s supervisor API on the HTTPS port: what an agent calls to join.
//!
//! Routing follows K3s 2021's gorilla/mux tree, because its quirks are what
//! agents see: `/cacerts` and `/ping` are open; the `/v1-k3s/*` files need
//! HTTP Basic credentials of a user in group `k3s:agent` (no credentials: 403,
//! wrong ones: 401, another group: 403, all with empty bodies);
//! `/v1-k3s/connect` needs a `system:nodes` identity (served by
//! `kubelet.rs`, before the body is read); `/db/info` needs
//! `k3s:server`; everything else falls through to the Kubernetes API, which
//! accepts no Basic credentials (401 `Status`).

use base64::Engine as _;
use bytes::Bytes;
use hyper::StatusCode;
use hyper::header::{AUTHORIZATION, HeaderMap};

use crate::config::Settings;
use crate::http::{self, Reply};
use crate::nodepassword;
use crate::pki::Pki;

/// Who a request is from, by its credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// No credentials.
    Anonymous,
    /// Credentials that do not check out.
    Rejected,
    /// An authenticated user.
    User {
        /// The user name.
        name: String,
        /// Its groups.
        groups: Vec<String>,
    },
}

impl Caller {
    fn in_group(&self, group: &str) -> bool {
        matches!(self, Self::User { groups, .. } if groups.iter().any(|g| g == group))
    }
}

/// Compares secrets in time independent of where they differ.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The supervisor's state.
pub struct Supervisor {
    settings: Settings,
    pki: Pki,
    /// The password part of the server token: user `node` (group `k3s:agent`)
    /// and user `server` (group `k3s:server`) both use it, as in K3s without
    /// `--agent-token`.
    password: String,
    ipsec_psk: String,
    node_passwords: NodePasswords,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor").finish_non_exhaustive()
    }
}

/// What a request looks like to the supervisor.
pub struct Call<'a> {
    /// The path.
    pub path: &'a str,
    /// The query string.
    pub query: Option<&'a str>,
    /// The headers.
    pub headers: &'a HeaderMap,
    /// Who sent it, by client certificate, if any.
    pub cert_caller: Option<Caller>,
    /// The body (a CSR for newer agents' certificate requests).
    pub body: &'a Bytes,
}

impl Call<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn pretty(&self) -> bool {
        http::wants_pretty(self.header("user-agent"), self.query)
    }
}

impl Supervisor {
    /// A supervisor for these settings and certificates.
    pub fn new(
        settings: Settings,
        pki: Pki,
        password: String,
        ipsec_psk: String,
        node_passwords: NodePasswords,
    ) -> Self {
        Self {
            settings,
            pki,
            password,
            ipsec_psk,
            node_passwords,
        }
    }

    /// The caller by HTTP Basic credentials (the supervisor's passwd file:
    /// `node` and `server`).
    pub fn basic_caller(&self, headers: &HeaderMap) -> Caller {
        let Some(value) = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
            return Caller::Anonymous;
        };
        let Some(encoded) = value.strip_prefix("Basic ") else {
            // A bearer token is not the supervisor's to check (the API's).
            return Caller::Anonymous;
        };
        let Some(decoded) = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
        else {
            return Caller::Rejected;
        };
        let Some((user, password)) = decoded.split_once(':') else {
            return Caller::Rejected;
        };
        let group = match user {
            "node" => "k3s:agent",
            "server" => "k3s:server",
            _ => return Caller::Rejected,
        };
        if !same_secret(password.as_bytes(), self.password.as_bytes()) {
            return Caller::Rejected;
        }
        Caller::User {
            name: user.to_owned(),
            groups: vec![group.to_owned()],
        }
    }

    /// Answers `call` if it is the supervisor's; `None` hands it to the
    /// Kubernetes API.
    pub fn handle(&self, call: &Call<'_>) -> Option<Reply> {
        match call.path {
            "/cacerts" => {
                return Some(http::body(
                    StatusCode::OK,
                    "text/plain",
                    Bytes::copy_from_slice(self.pki.server_ca_pem().as_bytes()),
                ));
            }
            "/ping" => return Some(http::body(StatusCode::OK, "text/plain", "pong")),
            _ => {}
        }
        let caller = self.basic_caller(call.headers);
        // A route's role check, as K3s's auth middleware does it.
        let gate = |role: &str| -> Option<Reply> {
            match &caller {
                Caller::Rejected => Some(http::empty(StatusCode::UNAUTHORIZED)),
                c if c.in_group(role) => None,
                _ => {
                    // A client certificate may carry the role too.
                    if call.cert_caller.as_ref().is_some_and(|c| c.in_group(role)) {
                        None
                    } else {
                        Some(http::empty(StatusCode::FORBIDDEN))
                    }
                }
            }
        };
        let file = |pem: &str| {
            let mut r = http::body(
                StatusCode::OK,
                "text/plain",
                Bytes::copy_from_slice(pem.as_bytes()),
            );
            r.headers_mut().insert(
                "accept-ranges",
                hyper::header::HeaderValue::from_static("bytes"),
            );
            r
        };
        let reply = match call.path {
            "/db/info" => gate("k3s:server").unwrap_or_else(|| self.api_fallback(call, &caller)),
            "/v1-k3s/config" => gate("k3s:agent").unwrap_or_else(|| {
                let config = self.settings.control_config(&self.ipsec_psk);
                match serde_json::to_vec(&config) {
                    Ok(mut json) => {
                        // Go's json.Encoder ends the document with a newline.
                        json.push(b'\n');
                        http::body(StatusCode::OK, "application/json", json)
                    }
                    Err(e) => http::plain_error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
                }
            }),
            "/v1-k3s/client-ca.crt" => {
                gate("k3s:agent").unwrap_or_else(|| file(self.pki.client_ca_pem()))
            }
            "/v1-k3s/server-ca.crt" => {
                gate("k3s:agent").unwrap_or_else(|| file(self.pki.server_ca_pem()))
            }
            "/v1-k3s/serving-kubelet.crt" => {
                gate("k3s:agent").unwrap_or_else(|| self.node_cert(call, NodeCert::Serving))
            }
            "/v1-k3s/client-kubelet.crt" => {
                gate("k3s:agent").unwrap_or_else(|| self.node_cert(call, NodeCert::Client))
            }
            "/v1-k3s/client-kube-proxy.crt" => gate("k3s:agent")
                .unwrap_or_else(|| self.shared_cert(call, |pki, csr| pki.client_kube_proxy(csr))),
            "/v1-k3s/client-k3s-controller.crt" => gate("k3s:agent").unwrap_or_else(|| {
                self.shared_cert(call, |pki, csr| pki.client_k3s_controller(csr))
            }),
            _ => match caller {
                // Basic credentials reach the API server, which takes none.
                Caller::User { .. } | Caller::Rejected => self.api_fallback(call, &caller),
                Caller::Anonymous => return None,
            },
        };
        Some(reply)
    }

    /// What the Kubernetes API says to a Basic-authenticated request.
    fn api_fallback(&self, call: &Call<'_>, _caller: &Caller) -> Reply {
        http::status(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "Unauthorized",
            call.pretty(),
        )
    }

    /// A CSR in the body (newer agents POST one), else `None` (2021 agents:
    /// the server hands out its shared key).
    fn csr<'b>(call: &'b Call<'_>) -> Option<&'b [u8]> {
        (!call.body.is_empty()).then_some(&call.body[..])
    }

    fn shared_cert(
        &self,
        call: &Call<'_>,
        make: impl FnOnce(&Pki, Option<&[u8]>) -> Result<String, crate::pki::PkiError>,
    ) -> Reply {
        cert_reply(make(&self.pki, Self::csr(call)), "text/plain")
    }

    /// `serving-kubelet.crt` and `client-kubelet.crt`: the node-password
    /// check, then a certificate for the node.
    fn node_cert(&self, call: &Call<'_>, which: NodeCert) -> Reply {
        let Some(name) = call.header("k3s-node-name").filter(|n| !n.is_empty()) else {
            return http::plain_error(StatusCode::BAD_REQUEST, "node name not set");
        };
        let Some(password) = call.header("k3s-node-password").filter(|p| !p.is_empty()) else {
            return http::plain_error(StatusCode::BAD_REQUEST, "node password not set");
        };
        let name = name.to_lowercase();
        if let Err(e) = self.node_passwords.check_or_claim(&name, password) {
            return match e {
                NodePasswordCheck::Mismatch(why) => http::plain_error(
                    StatusCode::FORBIDDEN,
                    &format!("unable to verify hash for node '{name}': {why}"),
                ),
                NodePasswordCheck::Store(why) => {
                    http::plain_error(StatusCode::SERVICE_UNAVAILABLE, &why)
                }
            };
        }
        let result = match which {
            NodeCert::Serving => {
                let ips = match call.header("k3s-node-ip") {
                    None => Vec::new(),
                    Some(list) => match crate::pki::parse_node_ips(list) {
                        Ok(ips) => ips,
                        Err(e) => {
                            return http::plain_error(
                                StatusCode::INTERNAL_SERVER_ERROR,
                                &e.to_string(),
                            );
                        }
                    },
                };
                self.pki.serving_kubelet(&name, &ips, Self::csr(call))
            }
            NodeCert::Client => self.pki.client_kubelet(&name, Self::csr(call)),
        };
        cert_reply(result, "text/plain; charset=utf-8")
    }
}

/// A certificate bundle, or why not: a bad CSR is the caller's fault (400),
/// anything else the server's (500).
fn cert_reply(result: Result<String, crate::pki::PkiError>, content_type: &'static str) -> Reply {
    match result {
        Ok(pem) => http::body(StatusCode::OK, content_type, pem),
        Err(e @ crate::pki::PkiError::InvalidCsr(_)) => {
            http::plain_error(StatusCode::BAD_REQUEST, &e.to_string())
        }
        Err(e) => http::plain_error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

#[derive(Debug, Clone, Copy)]
enum NodeCert {
    Serving,
    Client,
}

/// Why a node password was not accepted.
#[derive(Debug)]
pub enum NodePasswordCheck {
    /// The node name is claimed with another password.
    Mismatch(String),
    /// The record could not be read or written.
    Store(String),
}

/// Node-password hashes, kept where K3s keeps them: Secret
/// `kube-system/<node>.node-password.k3s`, `data.hash`, immutable. Deleting the
/// Secret (`kubectl -n kube-system delete secret ...`) frees the name.
#[derive(Debug)]
pub struct NodePasswords {
    store: std::sync::Arc<crate::store::Store>,
}

impl NodePasswords {
    /// The claims in `store`. Claims an earlier version kept in `legacy` (a
    /// JSON map from Secret name to hash) move into the store, and the file goes.
    pub fn open(
        store: std::sync::Arc<crate::store::Store>,
        legacy: &std::path::Path,
    ) -> std::io::Result<Self> {
        let this = Self { store };
        match std::fs::read(legacy) {
            Ok(bytes) => {
                let hashes: std::collections::BTreeMap<String, String> =
                    serde_json::from_slice(&bytes).map_err(std::io::Error::other)?;
                for (name, hash) in hashes {
                    this.claim(&name, &hash).map_err(|e| match e {
                        NodePasswordCheck::Store(why) | NodePasswordCheck::Mismatch(why) => {
                            std::io::Error::other(why)
                        }
                    })?;
                }
                std::fs::remove_file(legacy)?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        Ok(this)
    }

    /// Creates the Secret holding `hash` (an existing one is left alone).
    fn claim(&self, secret: &str, hash: &str) -> Result<(), NodePasswordCheck> {
        use base64::Engine as _;
        let object = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": secret, "namespace": "kube-system"},
            "immutable": true,
            "data": {"hash": base64::engine::general_purpose::STANDARD.encode(hash)},
            "type": "Opaque",
        });
        match self.store.create("secrets", "kube-system", object) {
            Ok(_) | Err(crate::store::StoreError::AlreadyExists { .. }) => Ok(()),
            Err(e) => Err(NodePasswordCheck::Store(format!(
                "storing the node password: {e}"
            ))),
        }
    }

    /// The hash in a node's Secret, if it has one.
    fn stored(&self, secret: &str) -> Result<Option<String>, NodePasswordCheck> {
        use base64::Engine as _;
        let Ok(object) = self.store.get("secrets", "kube-system", secret) else {
            return Ok(None);
        };
        let encoded = object
            .pointer("/data/hash")
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|e| NodePasswordCheck::Mismatch(format!("stored hash: {e}")))?;
        Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
    }

    /// Accepts `password` for `node`: the first caller claims the name, later
    /// ones must match.
    pub fn check_or_claim(&self, node: &str, password: &str) -> Result<(), NodePasswordCheck> {
        let secret = nodepassword::secret_name(node);
        if let Some(stored) = self.stored(&secret)? {
            return nodepassword::verify(&stored, password)
                .map_err(|e| NodePasswordCheck::Mismatch(e.to_string()));
        }
        self.claim(&secret, &nodepassword::hash(password))?;
        // Two first contacts at once: the Secret that won decides.
        match self.stored(&secret)? {
            Some(stored) => nodepassword::verify(&stored, password)
                .map_err(|e| NodePasswordCheck::Mismatch(e.to_string())),
            None => Err(NodePasswordCheck::Store(
                "node password secret vanished".into(),
            )),
        }
    }
}

/// Writes `bytes` to `path` atomically, mode 0600.
pub fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}
