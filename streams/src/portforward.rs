//! `port-forward` (`portforward.k8s.io`), server side, as the kubelet's
//! streaming server (1.21, `pkg/kubelet/cri/streaming/portforward`) runs it
//! over SPDY: for every local connection the client opens an `error` and a
//! `data` stream carrying the same `port` and `requestID` headers; once both
//! are there the pair is a [`Forward`]: the caller connects to the port in
//! the pod, copies bytes both ways on `data`, and writes the reason on
//! `error` if that fails. Streams without a valid `port` or `streamType` are
//! refused (reset) as the kubelet refuses them; a pair not complete within
//! the stream creation timeout is dropped with a message on its error
//! stream.

use std::collections::HashMap;
use std::time::Duration;

use http::{HeaderMap, Response};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _};
use tokio::time::Instant;

use crate::Config;
use crate::handshake::{self, Rejection};
use crate::spdy::{Connection, Headers, SpdyStream};

/// The port-forward subprotocol.
pub const PORT_FORWARD_PROTOCOL: &str = "portforward.k8s.io";

/// Why a forward's error could not be reported.
#[derive(Debug, thiserror::Error)]
pub enum PortForwardError {
    /// Writing on the error stream failed (the client is gone).
    #[error("writing to the error stream: {0}")]
    Io(#[from] std::io::Error),
}

/// A port-forward request that may be upgraded.
#[derive(Debug, Clone)]
pub struct PortForwardRequest {
    negotiated: Option<&'static str>,
}

impl PortForwardRequest {
    /// Checks the subprotocol (403 with the accepted list) and the upgrade
    /// headers (400). The query's `port=` matters to websocket clients only.
    pub fn new(headers: &HeaderMap) -> Result<Self, Rejection> {
        let negotiated = handshake::negotiate(headers, &[PORT_FORWARD_PROTOCOL])?;
        handshake::check_upgrade(headers)?;
        Ok(Self { negotiated })
    }

    /// The `101 Switching Protocols` to send before [`PortForwardRequest::accept`].
    pub fn response(&self) -> Response<()> {
        handshake::switching(self.negotiated)
    }

    /// Runs SPDY on the upgraded transport (`buffered`: bytes already read
    /// past the request head).
    pub fn accept<IO>(self, io: IO, buffered: Vec<u8>, config: &Config) -> PortForwardSession
    where
        IO: AsyncRead + AsyncWrite + Send + 'static,
    {
        PortForwardSession {
            conn: Connection::start(io, buffered, config, acceptable),
            pending: HashMap::new(),
            timeout: config.stream_creation_timeout,
        }
    }
}

/// The kubelet's check on a new stream: a port in 1..=65535, and a stream
/// type of `error` or `data`.
fn acceptable(headers: &Headers) -> bool {
    headers.get("port").and_then(parse_port).is_some()
        && matches!(headers.get("streamtype"), Some("error" | "data"))
}

/// A decimal port above zero (Go's `ParseUint(s, 10, 16)`: digits only).
fn parse_port(s: &str) -> Option<u16> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok().filter(|p| *p > 0)
}

/// One forwarded connection.
#[derive(Debug)]
pub struct Forward {
    /// The port in the pod.
    pub port: u16,
    /// The client's request id.
    pub request_id: String,
    /// The connection's bytes, both ways.
    pub data: SpdyStream,
    /// Where to say why forwarding failed (the client prints it).
    pub error: SpdyStream,
}

impl Forward {
    /// Reports a failure on the error stream and ends both streams.
    pub async fn fail(mut self, message: &str) -> Result<(), PortForwardError> {
        self.error.write_all(message.as_bytes()).await?;
        self.error.shutdown().await?;
        Ok(())
    }
}

/// The kubelet's text for a failed forward.
pub fn forward_error(port: u16, pod: &str, uid: &str, error: &str) -> String {
    format!("error forwarding port {port} to pod {pod}, uid {uid}: {error}")
}

#[derive(Debug)]
struct Pending {
    error: Option<SpdyStream>,
    data: Option<SpdyStream>,
    deadline: Instant,
}

/// A port-forward connection: call [`PortForwardSession::next`] in a loop
/// and serve each [`Forward`] on its own task (streams wait in a small
/// backlog while it is not called).
#[derive(Debug)]
pub struct PortForwardSession {
    conn: Connection,
    pending: HashMap<String, Pending>,
    timeout: Duration,
}

impl PortForwardSession {
    /// The next complete pair, or `None` once the client is gone.
    pub async fn next(&mut self) -> Option<Forward> {
        loop {
            let deadline = self.pending.values().map(|p| p.deadline).min();
            let accepted = match deadline {
                Some(deadline) => tokio::select! {
                    s = self.conn.accept() => Some(s),
                    () = tokio::time::sleep_until(deadline) => None,
                },
                None => Some(self.conn.accept().await),
            };
            match accepted {
                Some(Some(stream)) => {
                    if let Some(forward) = self.pair(stream).await {
                        return Some(forward);
                    }
                }
                Some(None) => return None,
                None => self.expire().await,
            }
        }
    }

    /// Files a stream under its request; the pair once complete.
    async fn pair(&mut self, stream: SpdyStream) -> Option<Forward> {
        let request_id = request_id(&stream);
        let timeout = self.timeout;
        let pending = self
            .pending
            .entry(request_id.clone())
            .or_insert_with(|| Pending {
                error: None,
                data: None,
                deadline: crate::later(Instant::now(), timeout),
            });
        let is_error = stream.headers().get("streamtype") == Some("error");
        let slot = if is_error {
            &mut pending.error
        } else {
            &mut pending.data
        };
        if slot.is_some() {
            let what = if is_error { "error" } else { "data" };
            let message = format!(
                "error processing stream for request {request_id}: {what} stream already assigned"
            );
            if let Some(error) = &mut pending.error {
                let _ = error.write_all(message.as_bytes()).await;
            }
            return None;
        }
        *slot = Some(stream);
        if pending.error.is_none() || pending.data.is_none() {
            return None;
        }
        let pending = self.pending.remove(&request_id)?;
        let (error, data) = (pending.error?, pending.data?);
        let port = data.headers().get("port").and_then(parse_port)?;
        Some(Forward {
            port,
            request_id,
            data,
            error,
        })
    }

    /// Drops the pairs whose time is up, telling their error streams.
    async fn expire(&mut self) {
        let now = Instant::now();
        let late: Vec<String> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in late {
            if let Some(Pending {
                error: Some(mut error),
                ..
            }) = self.pending.remove(&id)
            {
                let message = format!("(request={id}) timed out waiting for streams");
                let _ = error.write_all(message.as_bytes()).await;
            }
        }
    }

    /// Closes the connection (FIN on every stream, GOAWAY).
    pub async fn close(self) {
        self.conn.close().await;
    }
}

/// The stream's `requestID`; for clients too old to send one, the kubelet's
/// guess: the error stream's id, or the data stream's id minus 2.
fn request_id(stream: &SpdyStream) -> String {
    if let Some(id) = stream.headers().get("requestid") {
        return id.to_owned();
    }
    let id = stream.id();
    if stream.headers().get("streamtype") == Some("data") {
        id.saturating_sub(2).to_string()
    } else {
        id.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_checks() {
        let h = |pairs: &[(&str, &str)]| pairs.iter().copied().collect::<Headers>();
        assert!(acceptable(&h(&[("port", "80"), ("streamtype", "data")])));
        assert!(acceptable(&h(&[
            ("port", "65535"),
            ("streamtype", "error")
        ])));
        for bad in [
            h(&[("streamtype", "data")]),
            h(&[("port", "0"), ("streamtype", "data")]),
            h(&[("port", "65536"), ("streamtype", "data")]),
            h(&[("port", "+80"), ("streamtype", "data")]),
            h(&[("port", "80"), ("streamtype", "stdin")]),
            h(&[("port", "80")]),
        ] {
            assert!(!acceptable(&bad), "{bad:?}");
        }
        assert_eq!(
            forward_error(80, "web", "", "connection refused"),
            "error forwarding port 80 to pod web, uid : connection refused"
        );
    }
}
