//! The agent's side: open `wss://<server>/v1-k3s/connect` over a stream the
//! caller set up (TLS with the kubelet client certificate, in the agent), then
//! serve the server's `Connect`s: dial what the authoriser allows and pipe
//! bytes both ways until either end closes. Reconnecting is the caller's
//! loop (K3s's agent retries after a second).

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::frame::Message;
use crate::session::{OnConnect, Session, SessionError, Shared};
use crate::ws::{self, WebSocket, WsError};

/// The path of the tunnel on the supervisor port.
pub const CONNECT_PATH: &str = "/v1-k3s/connect";
/// Longest dial: a `Connect`'s deadline is used up to this (current
/// remotedialer always waits a minute).
pub const MAX_DIAL: Duration = Duration::from_secs(60);

/// Why the tunnel could not be opened or ended badly.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The websocket handshake failed (the server's status and text are in
    /// it: 401/403 for a certificate it does not accept).
    #[error("tunnel handshake: {0}")]
    Handshake(#[source] WsError),
    /// The session ended with an error.
    #[error("tunnel session: {0}")]
    Session(#[from] SessionError),
}

/// Opens the websocket: `GET /v1-k3s/connect` with `Host: host` (the
/// server's `host:port`) over `io`.
pub async fn connect<S>(io: S, host: &str) -> Result<WebSocket<S>, ClientError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    ws::client_handshake(io, host, CONNECT_PATH, &[])
        .await
        .map_err(ClientError::Handshake)
}

/// Serves the session until it ends: pings every 5 s, answers `Connect`s.
/// `authorise` gets the address of each `tcp` dial (`127.0.0.1:10250`); a
/// refused one gets an `Error` (`connect not allowed`) and the session goes
/// on. A close from the server is `Ok`.
pub async fn serve<S, A>(ws: WebSocket<S>, authorise: A) -> Result<(), ClientError>
where
    S: AsyncRead + AsyncWrite + Send + 'static,
    A: Fn(&str) -> bool + Send + Sync + 'static,
{
    let dialer = Dialer {
        authorise: Arc::new(authorise),
    };
    Session::new(ws)
        .run(true, dialer, std::future::pending())
        .await?;
    Ok(())
}

/// [`connect`] then [`serve`].
pub async fn run<S, A>(io: S, host: &str, authorise: A) -> Result<(), ClientError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    A: Fn(&str) -> bool + Send + Sync + 'static,
{
    serve(connect(io, host).await?, authorise).await
}

struct Dialer<A> {
    authorise: Arc<A>,
}

/// The dial timeout for a `Connect` deadline in milliseconds: that long up
/// to [`MAX_DIAL`]; none given means the maximum.
fn dial_timeout(deadline_ms: Option<i64>) -> Duration {
    match deadline_ms {
        Some(ms) if ms > 0 => Duration::from_millis(ms.unsigned_abs()).min(MAX_DIAL),
        _ => MAX_DIAL,
    }
}

/// An I/O error as Go prints the errno (`connection refused`), else ours.
fn go_text(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
        std::io::ErrorKind::ConnectionReset => "connection reset by peer".to_owned(),
        std::io::ErrorKind::TimedOut => "connection timed out".to_owned(),
        _ => e.to_string(),
    }
}

impl<A> OnConnect for Dialer<A>
where
    A: Fn(&str) -> bool + Send + Sync + 'static,
{
    fn connect(&mut self, shared: &Arc<Shared>, message: Message) {
        let allowed = match message.target() {
            Ok(("tcp", address)) if (self.authorise)(address) => Some(address.to_owned()),
            _ => None,
        };
        let Some(address) = allowed else {
            shared.send_error(message.conn_id, "connect not allowed");
            return;
        };
        // Registered before the dial, so data the server sends right behind
        // its Connect waits for the socket.
        let mut stream = shared.open(message.conn_id);
        let timeout = dial_timeout(message.deadline);
        tokio::spawn(async move {
            let tcp = match tokio::time::timeout(timeout, TcpStream::connect(&address)).await {
                Ok(Ok(tcp)) => tcp,
                Ok(Err(e)) => {
                    // Go's wording, which the server shows to its user.
                    stream.fail(&format!("dial tcp {address}: connect: {}", go_text(&e)));
                    return;
                }
                Err(_) => {
                    stream.fail(&format!("dial tcp {address}: i/o timeout"));
                    return;
                }
            };
            let mut tcp = tcp;
            // Ends when both directions have (EOF both ways) or either fails;
            // dropping the stream then tells the server.
            let _ = tokio::io::copy_bidirectional(&mut tcp, &mut stream).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dial_timeouts_follow_the_deadline_up_to_a_minute() {
        assert_eq!(dial_timeout(Some(15_000)), Duration::from_secs(15));
        assert_eq!(dial_timeout(Some(600_000)), MAX_DIAL);
        assert_eq!(dial_timeout(Some(0)), MAX_DIAL);
        assert_eq!(dial_timeout(Some(-5)), MAX_DIAL);
        assert_eq!(dial_timeout(None), MAX_DIAL);
    }
}
