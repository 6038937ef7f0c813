//! One remotedialer session over one websocket, the same on both ends: the
//! connections multiplexed over it, the reading loop that dispatches
//! messages, and the writing loop that sends them.
//!
//! Semantics follow remotedialer v0.2.0 (what K3s v1.21 servers run), with
//! its wire behaviour and none of its failure modes we can avoid:
//! - a connection is a byte stream in both directions; an `Error` message
//!   ends it in both directions (no half-close: `EOF` is a graceful end);
//! - `Data` for a connection we do not know is answered with an `Error`;
//! - types we do not know are ignored;
//! - a connection's incoming queue is bounded, and a full queue stalls the
//!   session's reader, as v0.2.0's read buffer blocks its reader. Outgoing
//!   data is bounded per session ([`FRAMES_IN_FLIGHT`]).

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{AcquireError, OwnedSemaphorePermit, Semaphore, TryAcquireError, mpsc};
use tokio::time::Instant;

use crate::frame::{FrameError, Kind, Message};
use crate::ws::{self, WebSocket, WsError, WsReader, WsWriter};

/// Most bytes sent in one `Data` message (remotedialer's `MaxRead`).
pub const MAX_DATA: usize = 8192;
/// The dial timeout sent with every `Connect`, in milliseconds (K3s's 15 s).
pub const CONNECT_DEADLINE_MS: i64 = 15_000;
/// A session with nothing from the peer (not even a ping or pong) for this
/// long is dead (current remotedialer's `PingWaitDuration`).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How often a client pings (remotedialer's `PingWriteInterval`; a v0.2.0
/// server drops a client silent for 10 s).
pub const PING_INTERVAL: Duration = Duration::from_secs(5);
/// A websocket write that takes longer than this ends the session.
const WRITE_TIMEOUT: Duration = Duration::from_secs(15);
/// `Data` messages queued for the websocket and not yet written, per
/// session: writers wait beyond this.
pub const FRAMES_IN_FLIGHT: usize = 32;
/// `Data` messages received and not yet read, per connection.
const CONN_QUEUE: usize = 64;
/// The text a connection's reader sees when its session goes away.
const SESSION_CLOSED: &str = "tunnel session closed";

/// Why a session ended other than by a close from either side.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The websocket failed (I/O, framing, or the peer vanished).
    #[error(transparent)]
    Ws(#[from] WsError),
    /// The peer sent bytes that are not a remotedialer message.
    #[error("bad remotedialer message: {0}")]
    Frame(#[from] FrameError),
    /// The peer sent a text message (remotedialer: "wrong websocket message type").
    #[error("wrong websocket message type")]
    TextMessage,
    /// Nothing came from the peer for [`IDLE_TIMEOUT`].
    #[error("no message from the peer for {0:?}")]
    Idle(Duration),
    /// A websocket write did not complete in time.
    #[error("websocket write timed out")]
    WriteTimeout,
    /// The websocket ended without a close frame.
    #[error("websocket closed by the peer without a close frame")]
    Eof,
}

/// What the writing loop sends.
enum Outgoing {
    /// An encoded remotedialer message, with the permit it holds while queued.
    Frame(Vec<u8>, Option<OwnedSemaphorePermit>),
    Ping,
    Pong(Vec<u8>),
    Close,
}

/// What a connection's reader gets.
enum Incoming {
    Data(Vec<u8>),
    /// The peer's `Error` text (`EOF` = graceful end).
    Closed(String),
}

/// The state both loops and every connection share.
pub struct Shared {
    out: mpsc::UnboundedSender<Outgoing>,
    conns: Mutex<HashMap<i64, mpsc::Sender<Incoming>>>,
    budget: Arc<Semaphore>,
    next_conn: AtomicI64,
    next_id: AtomicI64,
    closed: AtomicBool,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("connections", &self.lock().len())
            .field("closed", &self.is_closed())
            .finish_non_exhaustive()
    }
}

/// A first message id: remotedialer starts from a random 63-bit number;
/// nothing depends on it but uniqueness.
fn first_id() -> i64 {
    use ring::rand::SecureRandom as _;
    let mut bytes = [0u8; 8];
    if ring::rand::SystemRandom::new().fill(&mut bytes).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.subsec_nanos());
        return i64::from(nanos);
    }
    (u64::from_le_bytes(bytes) >> 2) as i64
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, HashMap<i64, mpsc::Sender<Incoming>>> {
        self.conns.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn message_id(&self) -> i64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Whether the session is over.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Queues an `Error` message for a connection.
    pub fn send_error(&self, conn_id: i64, reason: &str) {
        let m = Message::error(self.message_id(), conn_id, reason);
        let _ = self.out.send(Outgoing::Frame(m.encode(), None));
    }

    /// Registers connection `conn_id` and returns its stream. Data for it
    /// that arrives from now on is queued for the stream.
    pub fn open(self: &Arc<Self>, conn_id: i64) -> TunnelStream {
        let (tx, rx) = mpsc::channel(CONN_QUEUE);
        self.lock().insert(conn_id, tx);
        TunnelStream {
            shared: Arc::clone(self),
            conn_id,
            rx,
            pending: Vec::new(),
            pending_at: 0,
            read_end: None,
            acquire: None,
            closed_sent: false,
        }
    }

    /// Opens a connection through the peer to `target` (`<proto>/<address>`):
    /// sends `Connect` and returns the stream at once, as remotedialer does
    /// (a failed dial shows as the stream's read error).
    pub fn dial(self: &Arc<Self>, target: &str) -> TunnelStream {
        let conn_id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let stream = self.open(conn_id);
        let m = Message::connect(self.message_id(), conn_id, CONNECT_DEADLINE_MS, target);
        let _ = self.out.send(Outgoing::Frame(m.encode(), None));
        stream
    }

    fn is_open(&self, conn_id: i64) -> bool {
        self.lock().contains_key(&conn_id)
    }
}

/// What to do with a `Connect` from the peer.
pub trait OnConnect: Send {
    /// Handles one `Connect` (already checked to be `<proto>/<address>`).
    fn connect(&mut self, shared: &Arc<Shared>, message: Message);
}

/// A session ready to run: the websocket's two halves and the shared state.
pub struct Session<S> {
    shared: Arc<Shared>,
    reader: WsReader<tokio::io::ReadHalf<S>>,
    writer: WsWriter<tokio::io::WriteHalf<S>>,
    rx: mpsc::UnboundedReceiver<Outgoing>,
}

impl<S> std::fmt::Debug for Session<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("shared", &self.shared)
            .finish_non_exhaustive()
    }
}

impl<S> Session<S>
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    /// A session over an open websocket.
    pub fn new(ws: WebSocket<S>) -> Self {
        let (reader, writer) = ws.split();
        let (out, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            out,
            conns: Mutex::new(HashMap::new()),
            budget: Arc::new(Semaphore::new(FRAMES_IN_FLIGHT)),
            // remotedialer's server counts connection ids from 1.
            next_conn: AtomicI64::new(1),
            next_id: AtomicI64::new(first_id()),
            closed: AtomicBool::new(false),
        });
        Self {
            shared,
            reader,
            writer,
            rx,
        }
    }

    /// The state connections are opened on.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Runs until the websocket ends, an error, or `stop` completes. Pings
    /// every [`PING_INTERVAL`] when `ping` (the client's job). A close from
    /// either side is `Ok`. Every connection still open then fails.
    pub async fn run(
        self,
        ping: bool,
        mut on_connect: impl OnConnect,
        stop: impl Future<Output = ()>,
    ) -> Result<(), SessionError> {
        let Self {
            shared,
            mut reader,
            writer,
            rx,
        } = self;
        let write = write_loop(writer, rx);
        tokio::pin!(write);
        let mut write_done = false;
        let read = read_loop(&shared, &mut reader, ping, &mut on_connect);
        tokio::pin!(stop);
        let outcome = tokio::select! {
            result = &mut write => {
                write_done = true;
                result
            }
            result = read => result,
            () = &mut stop => Ok(()),
        };

        // Fail what is left, then say goodbye if the websocket still works.
        shared.closed.store(true, Ordering::Release);
        shared.budget.close();
        let conns: Vec<_> = shared.lock().drain().collect();
        for (_, tx) in conns {
            let _ = tx.try_send(Incoming::Closed(SESSION_CLOSED.to_owned()));
        }
        if !write_done {
            let _ = shared.out.send(Outgoing::Close);
            let _ = tokio::time::timeout(Duration::from_secs(1), &mut write).await;
        }
        outcome
    }
}

async fn read_loop<R: AsyncRead + Unpin>(
    shared: &Arc<Shared>,
    reader: &mut WsReader<R>,
    ping: bool,
    on_connect: &mut impl OnConnect,
) -> Result<(), SessionError> {
    let mut pings = tokio::time::interval_at(Instant::now() + PING_INTERVAL, PING_INTERVAL);
    pings.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_heard = Instant::now();
    loop {
        let message = tokio::select! {
            message = reader.next() => message?,
            _ = pings.tick(), if ping => {
                let _ = shared.out.send(Outgoing::Ping);
                continue;
            }
            () = tokio::time::sleep_until(last_heard + IDLE_TIMEOUT) => {
                return Err(SessionError::Idle(IDLE_TIMEOUT));
            }
        };
        last_heard = Instant::now();
        match message {
            None => return Err(SessionError::Eof),
            Some(ws::Message::Close(_)) => return Ok(()),
            Some(ws::Message::Text(_)) => return Err(SessionError::TextMessage),
            Some(ws::Message::Ping(payload)) => {
                let _ = shared.out.send(Outgoing::Pong(payload));
            }
            Some(ws::Message::Pong(_)) => {}
            Some(ws::Message::Binary(bytes)) => {
                dispatch(shared, Message::decode(&bytes)?, on_connect).await;
            }
        }
    }
}

async fn dispatch(shared: &Arc<Shared>, message: Message, on_connect: &mut impl OnConnect) {
    match message.kind {
        Kind::Data => {
            let tx = shared.lock().get(&message.conn_id).cloned();
            match tx {
                Some(tx) => {
                    // A full queue waits here: back-pressure on the whole
                    // session, as in remotedialer v0.2.0.
                    let _ = tx.send(Incoming::Data(message.payload)).await;
                }
                None => shared.send_error(
                    message.conn_id,
                    &format!("connection not found {}", message.conn_id),
                ),
            }
        }
        Kind::Error => {
            let tx = shared.lock().remove(&message.conn_id);
            if let Some(tx) = tx {
                let _ = tx.send(Incoming::Closed(message.text())).await;
            }
        }
        Kind::Connect => on_connect.connect(shared, message),
        Kind::AddClient | Kind::RemoveClient | Kind::Other(_) => {}
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(
    mut writer: WsWriter<W>,
    mut rx: mpsc::UnboundedReceiver<Outgoing>,
) -> Result<(), SessionError> {
    async fn timed<T>(f: impl Future<Output = Result<T, WsError>>) -> Result<T, SessionError> {
        match tokio::time::timeout(WRITE_TIMEOUT, f).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(SessionError::WriteTimeout),
        }
    }
    while let Some(first) = rx.recv().await {
        // Write everything queued, then flush once.
        let mut next = Some(first);
        while let Some(item) = next.take() {
            match item {
                Outgoing::Frame(bytes, permit) => {
                    timed(writer.binary(&bytes)).await?;
                    drop(permit);
                }
                Outgoing::Ping => timed(writer.ping(b"")).await?,
                Outgoing::Pong(payload) => timed(writer.pong(&payload)).await?,
                Outgoing::Close => {
                    timed(writer.close(1000)).await?;
                    timed(writer.flush()).await?;
                    let _ = timed(writer.shutdown()).await;
                    return Ok(());
                }
            }
            next = rx.try_recv().ok();
        }
        timed(writer.flush()).await?;
    }
    Ok(())
}

/// One connection through a tunnel: bytes written go to the peer's end of
/// it as `Data` messages of at most [`MAX_DATA`] bytes; shutting down (or
/// dropping) sends `Error` `EOF`. Reads end with EOF when the peer closes
/// with `EOF`, and fail with the peer's text when it closes with anything
/// else (a refused dial, say).
///
/// A close is a close of both directions, as remotedialer's peers treat
/// it: after shutting down, reads return what had arrived, then EOF; after
/// the peer's `EOF`, writes fail.
pub struct TunnelStream {
    shared: Arc<Shared>,
    conn_id: i64,
    rx: mpsc::Receiver<Incoming>,
    pending: Vec<u8>,
    pending_at: usize,
    read_end: Option<Result<(), String>>,
    acquire: Option<Pin<Box<PermitFuture>>>,
    closed_sent: bool,
}

type PermitFuture = dyn Future<Output = Result<OwnedSemaphorePermit, AcquireError>> + Send;

impl std::fmt::Debug for TunnelStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TunnelStream")
            .field("conn_id", &self.conn_id)
            .field("closed_sent", &self.closed_sent)
            .finish_non_exhaustive()
    }
}

fn broken() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "tunnel connection closed")
}

impl TunnelStream {
    /// The connection id on the wire.
    pub fn conn_id(&self) -> i64 {
        self.conn_id
    }

    /// Ends the connection with an error text for the peer (a failed dial).
    pub fn fail(mut self, reason: &str) {
        if self.shared.lock().remove(&self.conn_id).is_some() {
            self.shared.send_error(self.conn_id, reason);
        }
        self.closed_sent = true;
    }

    fn poll_permit(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<OwnedSemaphorePermit>> {
        loop {
            if let Some(pending) = self.acquire.as_mut() {
                let result = ready!(pending.as_mut().poll(cx));
                self.acquire = None;
                return Poll::Ready(result.map_err(|_| broken()));
            }
            match Arc::clone(&self.shared.budget).try_acquire_owned() {
                Ok(permit) => return Poll::Ready(Ok(permit)),
                Err(TryAcquireError::Closed) => return Poll::Ready(Err(broken())),
                Err(TryAcquireError::NoPermits) => {
                    let budget = Arc::clone(&self.shared.budget);
                    self.acquire = Some(Box::pin(budget.acquire_owned()));
                }
            }
        }
    }
}

impl AsyncRead for TunnelStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if this.pending_at < this.pending.len() {
                let n = buf.remaining().min(this.pending.len() - this.pending_at);
                buf.put_slice(&this.pending[this.pending_at..this.pending_at + n]);
                this.pending_at += n;
                return Poll::Ready(Ok(()));
            }
            match &this.read_end {
                Some(Ok(())) => return Poll::Ready(Ok(())),
                Some(Err(text)) => return Poll::Ready(Err(io::Error::other(text.clone()))),
                None => {}
            }
            match ready!(this.rx.poll_recv(cx)) {
                Some(Incoming::Data(bytes)) => {
                    this.pending = bytes;
                    this.pending_at = 0;
                }
                Some(Incoming::Closed(text)) => {
                    this.read_end = Some(if text == "EOF" { Ok(()) } else { Err(text) });
                }
                // Unregistered: by our own shutdown (a clean end), or by
                // the session going away.
                None if this.closed_sent => this.read_end = Some(Ok(())),
                None => this.read_end = Some(Err(SESSION_CLOSED.to_owned())),
            }
        }
    }
}

impl AsyncWrite for TunnelStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.closed_sent || this.shared.is_closed() || !this.shared.is_open(this.conn_id) {
            return Poll::Ready(Err(broken()));
        }
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let permit = ready!(this.poll_permit(cx))?;
        let n = buf.len().min(MAX_DATA);
        let m = Message::data(this.shared.message_id(), this.conn_id, buf[..n].to_vec());
        this.shared
            .out
            .send(Outgoing::Frame(m.encode(), Some(permit)))
            .map_err(|_| broken())?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Messages are queued in order for the websocket, which flushes
        // whenever its queue runs dry.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.closed_sent {
            this.closed_sent = true;
            // remotedialer has no half-close: its peer closes the whole
            // connection on EOF, so this one stops taking data too. What
            // already arrived can still be read, then EOF.
            if this.shared.lock().remove(&this.conn_id).is_some() {
                this.shared.send_error(this.conn_id, "EOF");
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl Drop for TunnelStream {
    fn drop(&mut self) {
        let was_open = self.shared.lock().remove(&self.conn_id).is_some();
        if was_open && !self.closed_sent && !self.shared.is_closed() {
            self.shared.send_error(self.conn_id, "EOF");
        }
    }
}
