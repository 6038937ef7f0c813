//! The API server's way to kubelets, as on K3s: agents open the
//! `/v1-k3s/connect` websocket tunnel with their kubelet client certificate,
//! and the pod subresources that need the node (`log`, `exec`, `attach`,
//! `portforward`) and `nodes/<name>/proxy` go to the node's kubelet through
//! its tunnel, never to a node address (newer K3s requires the tunnel the
//! same way: "failed to find Session for client").
//!
//! Towards the kubelet the devserver is the apiserver's kubelet client: TLS
//! with the `client-kube-apiserver` certificate, the kubelet's serving
//! certificate checked against the server CA for the node's name, HTTP/1.1.
//! Logs stream back as they come; `exec`, `attach` and `portforward` are an
//! upgrade-aware proxy (the kubelet's 101 and its headers go to the client,
//! then bytes are spliced both ways), as the apiserver's `UpgradeAwareHandler`.
//!
//! Routed before the request body is read: upgrades need the raw request.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use armlet_tunnel::ws::{self, Role, WebSocket};
use armlet_tunnel::{TunnelStream, Tunnels};
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Empty};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use serde_json::Value;

use crate::api::Api;
use crate::http::{self as replies, Details, Reply};
use crate::pki::{Pki, PkiError};
use crate::supervisor::{Caller, Supervisor};

/// The kubelet port when the Node publishes none (upstream's default).
const DEFAULT_KUBELET_PORT: u16 = 10250;
/// Dial plus TLS handshake through the tunnel (the apiserver's kubelet
/// client dials with a 30 s timeout).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How much of a failed kubelet answer goes into the Status (the
/// apiserver's `maxReadLength`).
const MAX_ERROR_BODY: usize = 50_000;

/// Why the kubelet client could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum KubeletError {
    /// The `client-kube-apiserver` certificate could not be made or read.
    #[error("kube-apiserver client certificate: {0}")]
    Pki(#[from] PkiError),
    /// rustls refused the configuration.
    #[error("kubelet client TLS: {0}")]
    Tls(#[from] rustls::Error),
}

/// A pod subresource served by the kubelet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodSub {
    /// `log` → `/containerLogs`.
    Log,
    /// `exec` → `/exec`.
    Exec,
    /// `attach` → `/attach`.
    Attach,
    /// `portforward` → `/portForward`.
    PortForward,
}

impl PodSub {
    fn name(self) -> &'static str {
        match self {
            Self::Log => "log",
            Self::Exec => "exec",
            Self::Attach => "attach",
            Self::PortForward => "portforward",
        }
    }
}

/// A request this module serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/v1-k3s/connect`: an agent's tunnel.
    Connect,
    /// `/api/v1/namespaces/<ns>/pods/<name>/<sub>`.
    Pod {
        /// The namespace.
        namespace: String,
        /// The pod.
        name: String,
        /// The subresource.
        sub: PodSub,
    },
    /// `/api/v1/nodes/<name>/proxy[/<path>]`.
    NodeProxy {
        /// The node.
        name: String,
        /// The kubelet path (`/` at least), still percent-encoded.
        path: String,
    },
}

/// Which requests are this module's, by path.
pub fn route(path: &str) -> Option<Route> {
    if path == "/v1-k3s/connect" {
        return Some(Route::Connect);
    }
    let rest = path.strip_prefix("/api/v1/")?;
    let parts: Vec<&str> = rest.split('/').collect();
    match parts.as_slice() {
        ["namespaces", ns, "pods", name, sub] if !ns.is_empty() && !name.is_empty() => {
            let sub = match *sub {
                "log" => PodSub::Log,
                "exec" => PodSub::Exec,
                "attach" => PodSub::Attach,
                "portforward" => PodSub::PortForward,
                _ => return None,
            };
            Some(Route::Pod {
                namespace: (*ns).to_owned(),
                name: (*name).to_owned(),
                sub,
            })
        }
        ["nodes", name, "proxy", tail @ ..] if !name.is_empty() => Some(Route::NodeProxy {
            name: (*name).to_owned(),
            path: format!("/{}", tail.join("/")),
        }),
        _ => None,
    }
}

/// The apiserver's kubelet client and the tunnels it dials through.
#[derive(Debug)]
pub struct Kubelets {
    tunnels: Tunnels,
    /// Checks the kubelet's serving certificate against the server CA.
    verified: Arc<rustls::ClientConfig>,
    /// For `insecureSkipTLSVerifyBackend=true` (logs only, as upstream).
    unverified: Arc<rustls::ClientConfig>,
}

/// The body type sent to kubelets.
type ProxyBody = BoxBody<Bytes, hyper::Error>;

impl Kubelets {
    /// The kubelet client of this server's PKI, dialling through `tunnels`.
    pub fn new(pki: &Pki, tunnels: Tunnels) -> Result<Self, KubeletError> {
        let provider = armlet_tls::provider();
        let (chain, key) = pki.client_kube_apiserver()?;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(pki.server_ca_der().clone())?;
        let builder = || {
            rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
                .with_safe_default_protocol_versions()
        };
        let mut verified = builder()?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain.clone(), key.clone_key())?;
        let mut unverified = builder()?
            .dangerous()
            .with_custom_certificate_verifier(armlet_tls::AnyServerCert::new(&provider))
            .with_client_auth_cert(chain, key)?;
        for config in [&mut verified, &mut unverified] {
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
        }
        Ok(Self {
            tunnels,
            verified: Arc::new(verified),
            unverified: Arc::new(unverified),
        })
    }

    /// Serves a request [`route`] matched. `caller` is the client
    /// certificate's identity, if any.
    pub async fn handle(
        &self,
        route: Route,
        supervisor: &Supervisor,
        api: &Api,
        caller: Option<Caller>,
        request: Request<Incoming>,
    ) -> Reply {
        let pretty = replies::wants_pretty(
            request
                .headers()
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok()),
            request.uri().query(),
        );
        if route == Route::Connect {
            return self.connect(supervisor, caller, request);
        }
        // The Kubernetes API: client certificates only, and only admins may
        // reach kubelets (nodes and other identities have no RBAC for it).
        let Some(Caller::User { name: user, groups }) = &caller else {
            return replies::status(
                StatusCode::UNAUTHORIZED,
                "Unauthorized",
                "Unauthorized",
                pretty,
            );
        };
        if !groups.iter().any(|g| g == "system:masters") {
            return forbidden(&route, user, request.method(), pretty);
        }
        match route {
            Route::Connect => self.connect(supervisor, caller, request),
            Route::Pod {
                namespace,
                name,
                sub,
            } => self.pod(api, &namespace, &name, sub, request, pretty).await,
            Route::NodeProxy { name, path } => {
                self.node_proxy(api, &name, &path, request, pretty).await
            }
        }
    }

    /// `/v1-k3s/connect`: K3s's role check (a `system:nodes` identity, by
    /// certificate; Basic credentials that do not check out: 401), then its
    /// tunnel authoriser (a `system:node:<name>` user, else 401 `failed
    /// authentication`), then the websocket upgrade (gorilla's checks and
    /// texts). The session runs until the agent goes or reconnects.
    fn connect(
        &self,
        supervisor: &Supervisor,
        caller: Option<Caller>,
        mut request: Request<Incoming>,
    ) -> Reply {
        if supervisor.basic_caller(request.headers()) == Caller::Rejected {
            return replies::empty(StatusCode::UNAUTHORIZED);
        }
        let Some(Caller::User { name, groups }) = caller else {
            return replies::empty(StatusCode::FORBIDDEN);
        };
        if !groups.iter().any(|g| g == "system:nodes") {
            return replies::empty(StatusCode::FORBIDDEN);
        }
        let Some(node) = name.strip_prefix("system:node:").filter(|n| !n.is_empty()) else {
            return replies::plain_error(StatusCode::UNAUTHORIZED, "failed authentication");
        };
        let node = node.to_owned();
        let headers = request.headers();
        let bad = |status, text: &str| replies::plain_error(status, &format!("websocket: {text}"));
        if request.method() != Method::GET {
            return bad(
                StatusCode::METHOD_NOT_ALLOWED,
                "the client is not using the websocket protocol: request method is not GET",
            );
        }
        if !has_token(headers, header::CONNECTION, "upgrade") {
            return bad(
                StatusCode::BAD_REQUEST,
                "the client is not using the websocket protocol: 'upgrade' token not found in 'Connection' header",
            );
        }
        if !has_token(headers, header::UPGRADE, "websocket") {
            return bad(
                StatusCode::BAD_REQUEST,
                "the client is not using the websocket protocol: 'websocket' token not found in 'Upgrade' header",
            );
        }
        if !has_token(headers, header::SEC_WEBSOCKET_VERSION, "13") {
            return bad(
                StatusCode::BAD_REQUEST,
                "unsupported version: 13 not found in 'Sec-Websocket-Version' header",
            );
        }
        let Some(key) = headers
            .get(header::SEC_WEBSOCKET_KEY)
            .and_then(|v| v.to_str().ok())
            .filter(|k| !k.trim().is_empty())
        else {
            return bad(
                StatusCode::BAD_REQUEST,
                "not a websocket handshake: 'Sec-WebSocket-Key' header is missing or blank",
            );
        };
        let Ok(accept) = HeaderValue::from_str(&ws::accept_key(key)) else {
            return bad(StatusCode::BAD_REQUEST, "bad Sec-WebSocket-Key");
        };
        let on_upgrade = hyper::upgrade::on(&mut request);
        let tunnels = self.tunnels.clone();
        tokio::spawn(async move {
            let Ok(upgraded) = on_upgrade.await else {
                return;
            };
            let ws = WebSocket::from_upgraded(TokioIo::new(upgraded), Role::Server, Vec::new());
            if let Err(e) = tunnels.serve(node.clone(), ws).await {
                eprintln!("armlet-devserver: tunnel of node {node} ended: {e}");
            }
        });
        let mut reply = replies::empty(StatusCode::SWITCHING_PROTOCOLS);
        let h = reply.headers_mut();
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
        reply
    }

    /// A pod subresource: the pod's container and node as the apiserver's
    /// `LogLocation`/`streamLocation` find them, then the kubelet.
    async fn pod(
        &self,
        api: &Api,
        namespace: &str,
        name: &str,
        sub: PodSub,
        request: Request<Incoming>,
        pretty: bool,
    ) -> Reply {
        let method = request.method();
        let allowed = match sub {
            PodSub::Log => *method == Method::GET,
            _ => *method == Method::GET || *method == Method::POST,
        };
        if !allowed {
            return replies::status(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                &format!(
                    "the server does not allow this method on the requested resource (pods {name})"
                ),
                pretty,
            );
        }
        let query = Query::parse(request.uri().query());
        let Ok(pod) = api.store().get("pods", namespace, name) else {
            return replies::status_about(
                StatusCode::NOT_FOUND,
                "NotFound",
                &format!("pods \"{name}\" not found"),
                Some(Details {
                    name,
                    group: "",
                    kind: "pods",
                }),
                pretty,
            );
        };
        let container = if sub == PodSub::PortForward {
            String::new()
        } else {
            match pick_container(&pod, name, query.first("container")) {
                Ok(c) => c,
                Err(message) => return bad_request(&message, pretty),
            }
        };
        let node = pod
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty());
        let Some(node) = node else {
            if sub == PodSub::Log {
                // Upstream's empty location: an empty log.
                return replies::body(StatusCode::OK, "text/plain", Bytes::new());
            }
            return bad_request(&format!("pod {name} does not have a host assigned"), pretty);
        };
        let port = match kubelet_port(api, node, pretty) {
            Ok(port) => port,
            Err(reply) => return reply,
        };
        let target = match sub {
            PodSub::Log => match log_params(&query, name, pretty) {
                Ok(params) => {
                    format!("/containerLogs/{namespace}/{name}/{container}{params}")
                }
                Err(reply) => return reply,
            },
            PodSub::Exec | PodSub::Attach => {
                let mut params: Vec<(&str, String)> = Vec::new();
                // PodExecOptions/PodAttachOptions default stdout and stderr on.
                for (param, kubelet, default) in [
                    ("stdin", "input", false),
                    ("stdout", "output", true),
                    ("stderr", "error", true),
                    ("tty", "tty", false),
                ] {
                    if query.flag(param).unwrap_or(default) {
                        params.push((kubelet, "1".to_owned()));
                    }
                }
                if sub == PodSub::Exec {
                    params.extend(
                        query
                            .all("command")
                            .into_iter()
                            .map(|c| ("command", c.to_owned())),
                    );
                }
                let path = if sub == PodSub::Exec {
                    "exec"
                } else {
                    "attach"
                };
                format!(
                    "/{path}/{namespace}/{name}/{container}{}",
                    encode_query(params)
                )
            }
            PodSub::PortForward => {
                let ports = query.all("ports");
                // PodPortForwardOptions.Ports are int32s.
                if let Some(bad) = ports.iter().find(|p| p.parse::<i32>().is_err()) {
                    return bad_request(
                        &format!("strconv.ParseInt: parsing {bad:?}: invalid syntax"),
                        pretty,
                    );
                }
                let params = if ports.is_empty() {
                    Vec::new()
                } else {
                    vec![("port", ports.join(","))]
                };
                format!("/portForward/{namespace}/{name}{}", encode_query(params))
            }
        };
        match sub {
            PodSub::Log => {
                let insecure = query.flag("insecureSkipTLSVerifyBackend").unwrap_or(false);
                self.logs(node, port, &target, insecure, name, pretty).await
            }
            _ => self.proxy(node, port, &target, request, true, pretty).await,
        }
    }

    /// `nodes/<name>/proxy/<path>`: any method, upgrades too, to the
    /// kubelet's `<path>` with the request's query.
    async fn node_proxy(
        &self,
        api: &Api,
        node: &str,
        path: &str,
        request: Request<Incoming>,
        pretty: bool,
    ) -> Reply {
        let port = match kubelet_port(api, node, pretty) {
            Ok(port) => port,
            Err(reply) => return reply,
        };
        let target = match request.uri().query() {
            Some(q) => format!("{path}?{q}"),
            None => path.to_owned(),
        };
        self.proxy(node, port, &target, request, false, pretty)
            .await
    }

    /// An HTTP/1.1 connection to `node`'s kubelet through its tunnel.
    async fn kubelet(
        &self,
        node: &str,
        port: u16,
        insecure: bool,
    ) -> Result<SendRequest<ProxyBody>, String> {
        let stream: TunnelStream = self
            .tunnels
            .dial(node, &format!("tcp/127.0.0.1:{port}"))
            .map_err(|e| e.to_string())?;
        let server_name = ServerName::try_from(node.to_owned()).map_err(|e| e.to_string())?;
        let config = if insecure {
            &self.unverified
        } else {
            &self.verified
        };
        let connector = tokio_rustls::TlsConnector::from(Arc::clone(config));
        let tls =
            match tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(server_name, stream))
                .await
            {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => return Err(e.to_string()),
                Err(_) => return Err("net/http: TLS handshake timeout".to_owned()),
            };
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            let _ = connection.with_upgrades().await;
        });
        Ok(sender)
    }

    /// `pods/log`: a GET to the kubelet, its body streamed back as it comes
    /// (`follow` streams); a failed answer becomes a Status as the
    /// apiserver's `GenericHttpResponseChecker` makes it.
    async fn logs(
        &self,
        node: &str,
        port: u16,
        target: &str,
        insecure: bool,
        pod: &str,
        pretty: bool,
    ) -> Reply {
        let url = format!("https://{node}:{port}{target}");
        let mut sender = match self.kubelet(node, port, insecure).await {
            Ok(sender) => sender,
            Err(e) => return unknown_status(&format!("Get \"{url}\": {e}"), pretty),
        };
        let request = Request::get(target)
            .header(header::HOST, format!("{node}:{port}"))
            .header(header::USER_AGENT, "armlet-devserver")
            .body(empty_body());
        let response = match request {
            Ok(request) => sender.send_request(request).await,
            Err(e) => return unknown_status(&format!("Get \"{url}\": {e}"), pretty),
        };
        let response = match response {
            Ok(response) => response,
            Err(e) => return unknown_status(&format!("Get \"{url}\": {e}"), pretty),
        };
        let status = response.status();
        if !(200..=206).contains(&status.as_u16()) {
            let body = BodyStart(response.into_body(), MAX_ERROR_BODY).text().await;
            return kubelet_failure(status, &body, pod, pretty);
        }
        let mut reply = Response::new(Relay(response.into_body()).boxed());
        reply
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        reply
    }

    /// The upgrade-aware proxy: the request to the kubelet with the
    /// client's headers (Upgrade, Connection, X-Stream-Protocol-Version...);
    /// a 101 goes back with the kubelet's headers and the two upgraded
    /// connections are spliced; anything else is relayed as it is.
    async fn proxy(
        &self,
        node: &str,
        port: u16,
        target: &str,
        mut request: Request<Incoming>,
        upgrade_required: bool,
        pretty: bool,
    ) -> Reply {
        let upgrading = has_token(request.headers(), header::CONNECTION, "upgrade")
            && request.headers().contains_key(header::UPGRADE);
        if upgrade_required && !upgrading {
            return bad_request("Upgrade request required", pretty);
        }
        let client_upgrade = upgrading.then(|| hyper::upgrade::on(&mut request));
        let (parts, body) = request.into_parts();
        let mut sender = match self.kubelet(node, port, false).await {
            Ok(sender) => sender,
            Err(e) => return unknown_status(&format!("error dialing backend: {e}"), pretty),
        };
        let mut out = Request::new(if upgrading {
            empty_body()
        } else {
            body.boxed()
        });
        *out.method_mut() = parts.method;
        *out.uri_mut() = match target.parse() {
            Ok(uri) => uri,
            Err(_) => return bad_request(&format!("invalid kubelet path {target}"), pretty),
        };
        let headers = out.headers_mut();
        for (name, value) in &parts.headers {
            if forwarded(name, upgrading) {
                headers.append(name.clone(), value.clone());
            }
        }
        if let Ok(host) = HeaderValue::from_str(&format!("{node}:{port}")) {
            headers.insert(header::HOST, host);
        }
        let mut response = match sender.send_request(out).await {
            Ok(response) => response,
            Err(e) => {
                return unknown_status(&format!("error proxying to the kubelet: {e}"), pretty);
            }
        };
        if let (Some(client_upgrade), StatusCode::SWITCHING_PROTOCOLS) =
            (client_upgrade, response.status())
        {
            let kubelet_upgrade = hyper::upgrade::on(&mut response);
            let mut reply = replies::empty(StatusCode::SWITCHING_PROTOCOLS);
            *reply.headers_mut() = response.headers().clone();
            tokio::spawn(async move {
                let (Ok(client), Ok(kubelet)) = tokio::join!(client_upgrade, kubelet_upgrade)
                else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(
                    &mut TokioIo::new(client),
                    &mut TokioIo::new(kubelet),
                )
                .await;
            });
            return reply;
        }
        let (mut head, body) = response.into_parts();
        for name in HOP_BY_HOP {
            head.headers.remove(*name);
        }
        Response::from_parts(head, Relay(body).boxed())
    }
}

/// Headers of a connection, not of the request (RFC 9110 7.6.1), and those
/// the kubelet must not see.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Whether a client header goes on to the kubelet: end-to-end headers, the
/// upgrade's own when upgrading; never the client's credentials or Host
/// (the apiserver's authentication filter removes Authorization).
fn forwarded(name: &header::HeaderName, upgrading: bool) -> bool {
    let name = name.as_str();
    if name == "host" || name == "authorization" || name == "content-length" {
        return false;
    }
    if upgrading && (name == "connection" || name == "upgrade") {
        return true;
    }
    !HOP_BY_HOP.contains(&name)
}

fn empty_body() -> ProxyBody {
    Empty::<Bytes>::new()
        .map_err(|never: Infallible| match never {})
        .boxed()
}

/// Whether a comma-separated header has a token (case-insensitively).
fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
}

/// The RBAC verb of a request.
fn verb_of(method: &Method) -> &'static str {
    match *method {
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => "get",
    }
}

/// RBAC's denial: what the user may not do, to which object.
fn forbidden(route: &Route, user: &str, method: &Method, pretty: bool) -> Reply {
    let verb = verb_of(method);
    let (message, name, kind) = match route {
        Route::Pod {
            namespace,
            name,
            sub,
        } => (
            format!(
                "pods \"{name}\" is forbidden: User \"{user}\" cannot {verb} resource \"pods/{}\" in API group \"\" in the namespace \"{namespace}\"",
                sub.name()
            ),
            name,
            "pods",
        ),
        // The tunnel has its own checks; never asked here.
        Route::Connect => return replies::empty(StatusCode::FORBIDDEN),
        Route::NodeProxy { name, .. } => (
            format!(
                "nodes \"{name}\" is forbidden: User \"{user}\" cannot {verb} resource \"nodes/proxy\" in API group \"\" at the cluster scope"
            ),
            name,
            "nodes",
        ),
    };
    replies::status_about(
        StatusCode::FORBIDDEN,
        "Forbidden",
        &message,
        Some(Details {
            name,
            group: "",
            kind,
        }),
        pretty,
    )
}

fn bad_request(message: &str, pretty: bool) -> Reply {
    replies::status(StatusCode::BAD_REQUEST, "BadRequest", message, pretty)
}

fn not_found_node(node: &str, pretty: bool) -> Reply {
    replies::status_about(
        StatusCode::NOT_FOUND,
        "NotFound",
        &format!("nodes \"{node}\" not found"),
        Some(Details {
            name: node,
            group: "",
            kind: "nodes",
        }),
        pretty,
    )
}

/// A 500 `Status` with no reason, as the apiserver writes errors that are
/// not API errors (a failed dial): kubectl shows `Error from server: <message>`.
fn unknown_status(message: &str, pretty: bool) -> Reply {
    let quoted = serde_json::to_string(message).unwrap_or_else(|_| "\"\"".into());
    let text = if pretty {
        format!(
            "{{\n  \"kind\": \"Status\",\n  \"apiVersion\": \"v1\",\n  \"metadata\": {{\n    \n  }},\n  \"status\": \"Failure\",\n  \"message\": {quoted},\n  \"code\": 500\n}}"
        )
    } else {
        format!(
            "{{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{{}},\"status\":\"Failure\",\"message\":{quoted},\"code\":500}}\n"
        )
    };
    let mut reply = replies::body(StatusCode::INTERNAL_SERVER_ERROR, "application/json", text);
    reply.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, private"),
    );
    reply
}

/// A kubelet's failed log answer as the apiserver reports it.
fn kubelet_failure(status: StatusCode, body: &str, pod: &str, pretty: bool) -> Reply {
    let code = status.as_u16();
    let (reason, message) = match code {
        400 => return bad_request(body, pretty),
        500 => {
            return replies::status(
                status,
                "InternalError",
                &format!("Internal error occurred: {body}"),
                pretty,
            );
        }
        404 => ("NotFound", "the server could not find the requested resource".to_owned()),
        401 => (
            "Unauthorized",
            "the server has asked for the client to provide credentials".to_owned(),
        ),
        403 => ("Forbidden", body.to_owned()),
        503 => (
            "ServiceUnavailable",
            "the server is currently unable to handle the request".to_owned(),
        ),
        504 => (
            "Timeout",
            "the server was unable to return a response in the time allotted, but may still be processing the request".to_owned(),
        ),
        c if c >= 500 => (
            "InternalError",
            format!("an error on the server ({body:?}) has prevented the request from succeeding"),
        ),
        c => (
            "",
            format!("the server responded with the status code {c} but did not return more information"),
        ),
    };
    replies::status_about(
        status,
        reason,
        &format!("{message} ( pods/log {pod})"),
        Some(Details {
            name: pod,
            group: "",
            kind: "pods/log",
        }),
        pretty,
    )
}

/// The kubelet port the Node publishes (`status.daemonEndpoints`), or 10250.
fn kubelet_port(api: &Api, node: &str, pretty: bool) -> Result<u16, Reply> {
    let Ok(object) = api.store().get("nodes", "", node) else {
        return Err(not_found_node(node, pretty));
    };
    Ok(object
        .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
        .and_then(Value::as_u64)
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p > 0)
        .unwrap_or(DEFAULT_KUBELET_PORT))
}

/// The container a request is for, as upstream picks it: the one given (a
/// container or init container of the pod), or the only one.
fn pick_container(pod: &Value, name: &str, given: Option<&str>) -> Result<String, String> {
    let names = |field: &str| -> Vec<String> {
        pod.pointer(&format!("/spec/{field}"))
            .and_then(Value::as_array)
            .map(|list| {
                list.iter()
                    .filter_map(|c| c.get("name").and_then(Value::as_str))
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    };
    let containers = names("containers");
    let init = names("initContainers");
    match given.filter(|c| !c.is_empty()) {
        Some(c) if containers.iter().chain(&init).any(|n| n == c) => Ok(c.to_owned()),
        Some(c) => Err(format!("container {c} is not valid for pod {name}")),
        None => match containers.as_slice() {
            [only] => Ok(only.clone()),
            [] => Err(format!("a container name must be specified for pod {name}")),
            many => {
                let mut message = format!(
                    "a container name must be specified for pod {name}, choose one of: [{}]",
                    many.join(" ")
                );
                if !init.is_empty() {
                    message.push_str(&format!(
                        " or one of the init containers: [{}]",
                        init.join(" ")
                    ));
                }
                Err(message)
            }
        },
    }
}

/// `PodLogOptions` from the query, checked as the apiserver checks them,
/// as the kubelet's query (Go's `url.Values.Encode`: keys sorted).
fn log_params(query: &Query, pod: &str, pretty: bool) -> Result<String, Reply> {
    let int = |key: &str| -> Result<Option<i64>, Reply> {
        match query.first(key) {
            None => Ok(None),
            Some(text) => text.parse::<i64>().map(Some).map_err(|_| {
                bad_request(
                    &format!("strconv.ParseInt: parsing {text:?}: invalid syntax"),
                    pretty,
                )
            }),
        }
    };
    let since_seconds = int("sinceSeconds")?;
    let tail_lines = int("tailLines")?;
    let limit_bytes = int("limitBytes")?;
    let since_time = query.first("sinceTime");
    if let Some(t) = since_time {
        if !is_rfc3339(t) {
            return Err(bad_request(
                &format!(
                    "parsing time {t:?} as \"2006-01-02T15:04:05Z07:00\": cannot parse {t:?} as \"2006\""
                ),
                pretty,
            ));
        }
    }
    let invalid = |field: &str, value: i64, why: &str| {
        replies::status_about(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            &format!("PodLogOptions \"{pod}\" is invalid: {field}: Invalid value: {value}: {why}"),
            Some(Details {
                name: pod,
                group: "",
                kind: "PodLogOptions",
            }),
            pretty,
        )
    };
    if let Some(n) = tail_lines.filter(|n| *n < 0) {
        return Err(invalid(
            "tailLines",
            n,
            "must be greater than or equal to 0",
        ));
    }
    if let Some(n) = limit_bytes.filter(|n| *n < 1) {
        return Err(invalid("limitBytes", n, "must be greater than 0"));
    }
    if let Some(n) = since_seconds.filter(|n| *n < 1) {
        return Err(invalid("sinceSeconds", n, "must be greater than 0"));
    }
    if since_seconds.is_some() && since_time.is_some() {
        return Err(replies::status_about(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            &format!(
                "PodLogOptions \"{pod}\" is invalid: : Forbidden: at most one of `sinceTime` or `sinceSeconds` may be specified"
            ),
            Some(Details {
                name: pod,
                group: "",
                kind: "PodLogOptions",
            }),
            pretty,
        ));
    }
    let mut params: Vec<(&str, String)> = Vec::new();
    for flag in ["follow", "previous", "timestamps"] {
        if query.flag(flag).unwrap_or(false) {
            params.push((flag, "true".to_owned()));
        }
    }
    if let Some(n) = since_seconds {
        params.push(("sinceSeconds", n.to_string()));
    }
    if let Some(t) = since_time {
        params.push(("sinceTime", t.to_owned()));
    }
    if let Some(n) = tail_lines {
        params.push(("tailLines", n.to_string()));
    }
    if let Some(n) = limit_bytes {
        params.push(("limitBytes", n.to_string()));
    }
    Ok(encode_query(params))
}

/// `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`, Go's RFC 3339 layout.
fn is_rfc3339(text: &str) -> bool {
    let b = text.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|s| s.iter().all(u8::is_ascii_digit));
    if b.len() < 20
        || !digits(0..4)
        || b[4] != b'-'
        || !digits(5..7)
        || b[7] != b'-'
        || !digits(8..10)
        || !matches!(b[10], b'T' | b't')
        || !digits(11..13)
        || b[13] != b':'
        || !digits(14..16)
        || b[16] != b':'
        || !digits(17..19)
    {
        return false;
    }
    let mut rest = &text[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let n = frac.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return false;
        }
        rest = &frac[n..];
    }
    match rest.as_bytes() {
        [b'Z' | b'z'] => true,
        [b'+' | b'-', h1, h2, b':', m1, m2] => [h1, h2, m1, m2].iter().all(|c| c.is_ascii_digit()),
        _ => false,
    }
}

/// A query string's pairs, decoded.
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(query: Option<&str>) -> Self {
        Self(
            query
                .unwrap_or("")
                .split('&')
                .filter(|p| !p.is_empty())
                .map(|pair| {
                    let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                    (unescape(k), unescape(v))
                })
                .collect(),
        )
    }

    fn first(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn all(&self, key: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// A boolean parameter as the apiserver converts it: absent is `None`;
    /// `false` and `0` are false, anything else (even empty) true.
    fn flag(&self, key: &str) -> Option<bool> {
        self.first(key)
            .map(|v| !matches!(v.to_ascii_lowercase().as_str(), "false" | "0"))
    }
}

/// Query decoding: `+` is a space, `%XX` a byte; bad escapes stay as they are.
fn unescape(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                if let Some(byte) = hex {
                    out.push(byte);
                    i += 2;
                } else {
                    out.push(b'%');
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `?k=v&...` as Go's `url.Values.Encode` writes it: keys sorted (values in
/// order), `url.QueryEscape`d; empty when there is nothing.
fn encode_query(mut params: Vec<(&str, String)>) -> String {
    if params.is_empty() {
        return String::new();
    }
    params.sort_by(|a, b| a.0.cmp(b.0));
    let escape = |s: &str| {
        let mut out = String::with_capacity(s.len());
        for b in s.bytes() {
            match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    out.push(char::from(b));
                }
                b' ' => out.push('+'),
                b => out.push_str(&format!("%{b:02X}")),
            }
        }
        out
    };
    let pairs: Vec<String> = params
        .iter()
        .map(|(k, v)| format!("{}={}", escape(k), escape(v)))
        .collect();
    format!("?{}", pairs.join("&"))
}

/// A kubelet body relayed to the client: frames as they come; a failure
/// mid-way ends the body (the apiserver stops copying then too).
struct Relay(Incoming);

impl Body for Relay {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match ready!(Pin::new(&mut self.0).poll_frame(cx)) {
            Some(Ok(frame)) => Poll::Ready(Some(Ok(frame))),
            Some(Err(_)) | None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.0.size_hint()
    }
}

/// The start of a body, as text.
struct BodyStart(Incoming, usize);

impl BodyStart {
    async fn text(mut self) -> String {
        let mut out = Vec::new();
        while out.len() < self.1 {
            match self.0.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        out.extend_from_slice(&data);
                    }
                }
                Some(Err(_)) | None => break,
            }
        }
        out.truncate(self.1);
        String::from_utf8_lossy(&out).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn routes() {
        assert_eq!(route("/v1-k3s/connect"), Some(Route::Connect));
        assert_eq!(
            route("/api/v1/namespaces/default/pods/web/log"),
            Some(Route::Pod {
                namespace: "default".into(),
                name: "web".into(),
                sub: PodSub::Log
            })
        );
        assert_eq!(
            route("/api/v1/namespaces/default/pods/web/portforward"),
            Some(Route::Pod {
                namespace: "default".into(),
                name: "web".into(),
                sub: PodSub::PortForward
            })
        );
        assert_eq!(route("/api/v1/namespaces/default/pods/web/status"), None);
        assert_eq!(route("/api/v1/namespaces/default/pods/web"), None);
        assert_eq!(
            route("/api/v1/nodes/n1/proxy/stats/summary"),
            Some(Route::NodeProxy {
                name: "n1".into(),
                path: "/stats/summary".into()
            })
        );
        assert_eq!(
            route("/api/v1/nodes/n1/proxy"),
            Some(Route::NodeProxy {
                name: "n1".into(),
                path: "/".into()
            })
        );
        assert_eq!(route("/api/v1/nodes/n1"), None);
        assert_eq!(route("/v1-k3s/config"), None);
    }

    #[test]
    fn containers_are_picked_as_upstream_does() {
        let pod = json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}],
                                  "initContainers": [{"name": "i"}]}});
        assert_eq!(
            pick_container(&pod, "web", None),
            Err("a container name must be specified for pod web, choose one of: [a b] or one of the init containers: [i]".into())
        );
        assert_eq!(pick_container(&pod, "web", Some("b")), Ok("b".into()));
        assert_eq!(pick_container(&pod, "web", Some("i")), Ok("i".into()));
        assert_eq!(
            pick_container(&pod, "web", Some("c")),
            Err("container c is not valid for pod web".into())
        );
        let one = json!({"spec": {"containers": [{"name": "only"}]}});
        assert_eq!(pick_container(&one, "web", None), Ok("only".into()));
        assert_eq!(
            pick_container(&json!({}), "web", None),
            Err("a container name must be specified for pod web".into())
        );
    }

    #[test]
    fn queries_decode_and_encode_as_go_does() {
        let q = Query::parse(Some(
            "command=sh&command=-c&command=echo+hi%21&stdin=true&tty&follow=false&x=%zz",
        ));
        assert_eq!(q.all("command"), ["sh", "-c", "echo hi!"]);
        assert_eq!(q.flag("stdin"), Some(true));
        assert_eq!(q.flag("tty"), Some(true));
        assert_eq!(q.flag("follow"), Some(false));
        assert_eq!(q.flag("stdout"), None);
        assert_eq!(q.first("x"), Some("%zz"));
        assert_eq!(
            encode_query(vec![
                ("output", "1".into()),
                ("command", "echo hi!".into()),
                ("command", "a/b".into()),
                ("error", "1".into()),
            ]),
            "?command=echo+hi%21&command=a%2Fb&error=1&output=1"
        );
        assert_eq!(encode_query(Vec::new()), "");
    }

    #[test]
    fn log_options_are_checked_and_forwarded_sorted() {
        let params = |q: &str| log_params(&Query::parse(Some(q)), "web", false);
        assert_eq!(
            params("follow=true&tailLines=10&timestamps=1&limitBytes=5&previous=false").ok(),
            Some("?follow=true&limitBytes=5&tailLines=10&timestamps=true".to_owned())
        );
        assert_eq!(
            params("sinceTime=2021-07-01T10:00:00Z").ok(),
            Some("?sinceTime=2021-07-01T10%3A00%3A00Z".to_owned())
        );
        assert_eq!(params("").ok(), Some(String::new()));
        for (bad, code) in [
            ("tailLines=-1", 422),
            ("limitBytes=0", 422),
            ("sinceSeconds=0", 422),
            ("sinceSeconds=5&sinceTime=2021-07-01T10:00:00Z", 422),
            ("tailLines=x", 400),
            ("sinceTime=yesterday", 400),
        ] {
            assert_eq!(
                params(bad).err().map(|r| r.status().as_u16()),
                Some(code),
                "{bad}"
            );
        }
    }

    #[test]
    fn rfc3339_times() {
        for good in [
            "2021-07-01T10:00:00Z",
            "2021-07-01T10:00:00.123456789Z",
            "2021-07-01T10:00:00+02:00",
        ] {
            assert!(is_rfc3339(good), "{good}");
        }
        for bad in [
            "2021-07-01",
            "2021-07-01 10:00:00Z",
            "2021-07-01T10:00:00",
            "2021-07-01T10:00:00.Z",
            "2021-07-01T10:00:00+0200",
        ] {
            assert!(!is_rfc3339(bad), "{bad}");
        }
    }

    #[test]
    fn only_end_to_end_headers_reach_the_kubelet() {
        let name = |n: &'static str| header::HeaderName::from_static(n);
        assert!(forwarded(&name("x-stream-protocol-version"), true));
        assert!(forwarded(&name("upgrade"), true));
        assert!(forwarded(&name("connection"), true));
        assert!(!forwarded(&name("upgrade"), false));
        assert!(!forwarded(&name("authorization"), true));
        assert!(!forwarded(&name("host"), false));
        assert!(forwarded(&name("accept"), false));
    }
}
