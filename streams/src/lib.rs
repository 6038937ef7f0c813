//! The kubelet's streaming protocols, server side: what `kubectl exec`,
//! `attach` and `port-forward` reach through the API server, spoken over
//! SPDY/3.1 exactly as Kubernetes' Go stack (moby/spdystream, apimachinery's
//! httpstream, the kubelet's streaming server) speaks it.
//!
//! - [`spdy`]: frames, header compression, and [`spdy::Connection`], which
//!   turns an upgraded transport into [`spdy::SpdyStream`]s (tokio
//!   `AsyncRead + AsyncWrite`) with bounded memory.
//! - [`remotecommand`]: exec and attach. [`ExecRequest`] checks a request and
//!   gives the 101 answer (or the kubelet's refusal); [`ExecRequest::accept`]
//!   waits for the client's streams and returns an [`ExecSession`] (stdin,
//!   stdout, stderr, resize events, tty); [`ExecSession::finish`] writes the
//!   exit status the way the kubelet does.
//! - [`portforward`]: [`PortForwardRequest`] likewise, then
//!   [`PortForwardSession::next`] hands out one [`Forward`] (port, data
//!   stream, error stream) per forwarded connection.
//!
//! HTTP stays with the caller: it passes the request's headers and query,
//! sends the returned `http::Response` head (hyper, or by hand with
//! [`encode_head`]), then hands over the upgraded transport and any bytes it
//! already read past the head.
//!
//! ```no_run
//! # async fn serve(headers: http::HeaderMap, query: Option<&str>,
//! #     io: tokio::net::TcpStream) -> Result<(), Box<dyn std::error::Error>> {
//! use armlet_streams::{Config, ExecRequest, ExitStatus};
//! use tokio::io::AsyncWriteExt as _;
//! let request = match ExecRequest::exec(&headers, query) {
//!     Ok(request) => request,
//!     Err(rejection) => { /* send rejection.into_response() */ return Ok(()) }
//! };
//! // ... send request.response() (101), then:
//! let mut session = request.accept(io, Vec::new(), &Config::default()).await?;
//! if let Some(mut out) = session.take_stdout() {
//!     out.write_all(b"hi\n").await?;
//!     out.shutdown().await?;
//! }
//! session.finish(ExitStatus::Code(0)).await?;
//! # Ok(()) }
//! ```

use std::time::Duration;

mod handshake;
pub mod portforward;
pub mod remotecommand;
pub mod spdy;

pub use handshake::{ACCEPTED_PROTOCOLS_HEADER, PROTOCOL_HEADER, Rejection, SPDY_31, encode_head};
pub use portforward::{Forward, PortForwardRequest, PortForwardSession};
pub use remotecommand::{
    ExecError, ExecOptions, ExecProtocol, ExecRequest, ExecSession, ExitStatus, ResizeEvents,
    TerminalSize,
};

/// Timeouts and limits of a streaming connection.
#[derive(Debug, Clone)]
pub struct Config {
    /// How long exec/attach wait for the client's streams, and port-forward
    /// for the second stream of a pair (the kubelet's 30 s).
    pub stream_creation_timeout: Duration,
    /// A connection with nothing read or written for this long is closed
    /// (the kubelet's `streamingConnectionIdleTimeout`, 4 h by default);
    /// also the longest a single write to the transport may take.
    pub idle_timeout: Option<Duration>,
    /// Streams open at once on one connection; more are refused
    /// (RST_STREAM REFUSED_STREAM). Each buffers at most
    /// [`spdy::STREAM_BUFFER`] bytes.
    pub max_streams: usize,
    /// After closing, how long to wait for the peer to close first before
    /// dropping the transport.
    pub linger: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            stream_creation_timeout: Duration::from_secs(30),
            idle_timeout: Some(Duration::from_secs(4 * 60 * 60)),
            max_streams: 128,
            linger: Duration::from_secs(2),
        }
    }
}

/// `from + d`, or ten years on when `d` is absurdly large (a caller's
/// `Duration::MAX` must not make `Instant` arithmetic panic).
pub(crate) fn later(from: tokio::time::Instant, d: Duration) -> tokio::time::Instant {
    from.checked_add(d)
        .or_else(|| from.checked_add(Duration::from_secs(10 * 365 * 24 * 3600)))
        .unwrap_or(from)
}
