//! One SPDY/3.1 connection, server side, run the way spdystream (the only
//! peer Kubernetes has: kubectl, client-go, the apiserver's kubelet client)
//! runs it: the client opens streams, the server answers each with an empty
//! SYN_REPLY at once (or RST_STREAM if it refuses it), data flows both ways,
//! and FIN half-closes a direction.
//!
//! Two tasks drive the transport: a reader that decodes frames and files
//! data into per-stream buffers, and a writer that sends what streams and
//! the reader queue, in order (the order matters: header compression state
//! runs across frames).
//!
//! Flow control: spdystream implements none. It never sends WINDOW_UPDATE,
//! ignores those it gets (the 2016 copy in kubectl 1.20 and today's alike),
//! writes a whole `Write` as one data frame whatever the window, and bounds
//! its memory by blocking its frame reader until the stream's reader takes
//! the data. Enforcing SPDY/3.1's 64 KiB windows on our sends would stall
//! every peer after 64 KiB; sending updates would be ignored. So memory is
//! bounded the same way here: a stream buffers at most [`STREAM_BUFFER`]
//! bytes, then the reader stops reading the transport until the stream's
//! owner reads (TCP pushes back on the peer), data for a stream nobody holds
//! any more is dropped, and writes wait once [`QUEUE_SOFT`] bytes are queued.
//! WINDOW_UPDATE frames are parsed (and checked) and otherwise ignored.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::sync::{Notify, mpsc, watch};
use tokio::time::Instant;

use super::frame::{
    self, ControlFrame, FrameError, FrameHead, Headers, MAX_CONTROL_PAYLOAD, flags, goaway, rst,
};
use super::zlib::{HeaderDeflater, HeaderInflater};
use crate::Config;

/// Bytes a stream buffers before the connection stops reading.
pub const STREAM_BUFFER: usize = 64 * 1024;
/// The largest data frame sent (what Go's `io.Copy` writes at a time).
pub const MAX_OUT_FRAME: usize = 32 * 1024;
/// Queued outgoing bytes beyond which stream writes wait.
pub const QUEUE_SOFT: usize = 256 * 1024;
/// Queued outgoing bytes beyond which the connection's own frames (replies,
/// resets, pings) wait too, so a peer that never reads cannot grow the
/// queue with pings.
const QUEUE_HARD: usize = 1024 * 1024;
/// Data frame payloads are read in pieces of at most this.
const CHUNK: usize = 16 * 1024;
/// What one transport write gathers.
const BATCH: usize = 64 * 1024;
/// Read size for the transport.
const READ_SIZE: usize = 16 * 1024;
/// Accepted streams not yet taken by [`Connection::accept`].
const BACKLOG: usize = 16;

/// Why a connection ended abnormally.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    /// The transport failed.
    #[error("transport: {0}")]
    Io(#[from] io::Error),
    /// The peer sent something that is not SPDY/3.1.
    #[error("protocol: {0}")]
    Frame(#[from] FrameError),
    /// Nothing was read or written for the idle timeout (seconds; printed
    /// as a number, since `Duration`'s `Debug` drags floating point
    /// formatting into the binary).
    #[error("idle for {0} s")]
    Idle(u64),
}

/// One stream's state, shared by the connection and the stream's handle.
#[derive(Debug, Default)]
struct StreamState {
    recv: VecDeque<u8>,
    /// The peer's FIN arrived (or the peer went away).
    recv_fin: bool,
    /// Our FIN is queued.
    sent_fin: bool,
    /// RST_STREAM in either direction.
    reset: bool,
    read_waker: Option<Waker>,
}

#[derive(Debug)]
struct State {
    streams: HashMap<u32, StreamState>,
    out: VecDeque<(u64, Vec<u8>)>,
    out_bytes: usize,
    /// Sequence number of the last queued frame.
    queued_seq: u64,
    /// Sequence number of the last frame written and flushed.
    written_seq: u64,
    write_waiters: Vec<Waker>,
    flush_waiters: Vec<Waker>,
    deflater: HeaderDeflater,
    /// The stream whose full buffer holds the reader up.
    reader_waiting: Option<u32>,
    /// The last stream accepted (GOAWAY's last good stream).
    last_stream: u32,
    /// No more frames will be read.
    remote_done: bool,
    /// GOAWAY is queued: no new streams, every stream's FIN sent.
    closing: bool,
    /// The writer is gone: nothing queued from now on is sent.
    writer_exited: bool,
    /// The transport failed.
    broken: bool,
    last_activity: Instant,
    failure: Option<String>,
}

impl State {
    fn push(&mut self, frame: Vec<u8>) -> u64 {
        self.queued_seq += 1;
        self.out_bytes += frame.len();
        self.out.push_back((self.queued_seq, frame));
        self.queued_seq
    }

    fn push_fin(&mut self, id: u32) -> u64 {
        match frame::encode_data(id, flags::FIN, &[]) {
            Some(frame) => self.push(frame),
            None => self.queued_seq,
        }
    }

    /// Queues FIN on every open stream and GOAWAY; false if already done.
    fn begin_close(&mut self, status: u32) -> bool {
        if self.closing {
            return false;
        }
        self.closing = true;
        let open: Vec<u32> = self
            .streams
            .iter()
            .filter(|(_, s)| !s.sent_fin && !s.reset)
            .map(|(id, _)| *id)
            .collect();
        for id in open {
            self.push_fin(id);
            if let Some(s) = self.streams.get_mut(&id) {
                s.sent_fin = true;
            }
        }
        let frame = ControlFrame::GoAway {
            last_good_stream_id: self.last_stream,
            status,
        }
        .encode(&mut self.deflater);
        self.push(frame);
        true
    }

    fn wake_all(&mut self) {
        for s in self.streams.values_mut() {
            if let Some(w) = s.read_waker.take() {
                w.wake();
            }
        }
        for w in self
            .write_waiters
            .drain(..)
            .chain(self.flush_waiters.drain(..))
        {
            w.wake();
        }
    }
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// Frames were queued, or the connection is closing.
    writer_wake: Notify,
    /// A stream the reader waits on has room (or is gone).
    reader_wake: Notify,
    /// The writer took frames off the queue.
    space: Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere must not wedge the connection; the state stays
        // consistent between statements.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts a graceful close and tells both tasks.
    fn close(&self, status: u32) {
        let began = self.lock().begin_close(status);
        if began {
            self.writer_wake.notify_one();
            self.reader_wake.notify_one();
        }
    }
}

/// A SPDY connection: accepted streams come out of [`Connection::accept`].
/// Dropping it closes the connection (FIN on every stream, GOAWAY, then the
/// transport once written).
#[derive(Debug)]
pub struct Connection {
    shared: Arc<Shared>,
    incoming: mpsc::Receiver<SpdyStream>,
    writer_done: watch::Receiver<bool>,
}

impl Connection {
    /// Runs SPDY over `io` (what came after the 101), with `buffered`, bytes
    /// already read from it past the HTTP head. `accept` sees each new
    /// stream's headers: `false` refuses it (RST_STREAM CANCEL, as the
    /// apiserver's stream handler does on an error). Needs a tokio runtime.
    pub fn start<IO, F>(io: IO, buffered: Vec<u8>, config: &Config, accept: F) -> Self
    where
        IO: AsyncRead + AsyncWrite + Send + 'static,
        F: Fn(&Headers) -> bool + Send + 'static,
    {
        let (rd, wr) = tokio::io::split(io);
        Self::start_boxed(
            Box::pin(rd),
            Box::pin(wr),
            buffered,
            config,
            Box::new(accept),
        )
    }

    /// The connection's machinery, compiled once whatever the transport and
    /// filter types (footprint: the tasks are most of the crate's code).
    fn start_boxed(
        rd: BoxedRead,
        wr: BoxedWrite,
        buffered: Vec<u8>,
        config: &Config,
        accept: AcceptFn,
    ) -> Self {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                streams: HashMap::new(),
                out: VecDeque::new(),
                out_bytes: 0,
                queued_seq: 0,
                written_seq: 0,
                write_waiters: Vec::new(),
                flush_waiters: Vec::new(),
                deflater: HeaderDeflater::new(),
                reader_waiting: None,
                last_stream: 0,
                remote_done: false,
                closing: false,
                writer_exited: false,
                broken: false,
                last_activity: Instant::now(),
                failure: None,
            }),
            writer_wake: Notify::new(),
            reader_wake: Notify::new(),
            space: Notify::new(),
        });
        let (tx, incoming) = mpsc::channel(BACKLOG);
        let (writer_done_tx, writer_done) = watch::channel(false);
        let (reader_done_tx, reader_done) = watch::channel(false);
        let (stop_tx, stop) = watch::channel(false);
        let reader = Reader {
            shared: Arc::clone(&shared),
            io: BufferedRead {
                io: rd,
                buf: buffered,
                start: 0,
            },
            inflater: HeaderInflater::new(),
            next_id: 1,
            max_streams: config.max_streams,
            accept,
            tx,
        };
        tokio::spawn(run_reader(
            reader,
            config.idle_timeout,
            reader_done_tx,
            stop,
        ));
        tokio::spawn(run_writer(
            Arc::clone(&shared),
            wr,
            Writer {
                done: writer_done_tx,
                reader_done,
                stop: stop_tx,
                linger: config.linger,
                write_timeout: config.idle_timeout,
            },
        ));
        Self {
            shared,
            incoming,
            writer_done,
        }
    }

    /// The next stream the peer opened (already answered), or `None` once
    /// the peer can open no more (GOAWAY, end of transport, error, close).
    pub async fn accept(&mut self) -> Option<SpdyStream> {
        self.incoming.recv().await
    }

    /// Closes gracefully: FIN on every stream still open, GOAWAY, and waits
    /// until that is written and the transport's write side shut down. The
    /// transport is dropped once the peer closes too, or after the linger
    /// time.
    pub async fn close(mut self) {
        self.shared.close(goaway::OK);
        let _ = self.writer_done.wait_for(|done| *done).await;
    }

    /// Why the connection failed, if it did.
    pub fn failure(&self) -> Option<String> {
        self.shared.lock().failure.clone()
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.shared.close(goaway::OK);
    }
}

/// One stream: read what the peer sends, write to the peer. Shutting down
/// the write side (or dropping the handle) sends FIN; data that arrives for
/// a dropped stream is discarded.
#[derive(Debug)]
pub struct SpdyStream {
    shared: Arc<Shared>,
    id: u32,
    headers: Headers,
    /// The sequence number of this stream's last queued frame.
    last_seq: u64,
    write_closed: bool,
}

impl SpdyStream {
    /// The stream id.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The headers the peer opened the stream with.
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// Queues FIN (our side is done) without waiting for it to be written.
    pub fn close_write(&mut self) {
        if self.write_closed {
            return;
        }
        self.write_closed = true;
        let mut guard = self.shared.lock();
        let st = &mut *guard;
        if let Some(s) = st.streams.get_mut(&self.id) {
            if !s.sent_fin && !s.reset {
                s.sent_fin = true;
                self.last_seq = st.push_fin(self.id);
            }
        }
        drop(guard);
        self.shared.writer_wake.notify_one();
    }

    /// Aborts the stream both ways (RST_STREAM CANCEL, as spdystream's
    /// `Reset`).
    pub fn reset(&mut self) {
        self.write_closed = true;
        let mut guard = self.shared.lock();
        let st = &mut *guard;
        let Some(s) = st.streams.get_mut(&self.id) else {
            return;
        };
        if s.reset {
            return;
        }
        s.reset = true;
        s.recv.clear();
        let frame = ControlFrame::RstStream {
            stream_id: self.id,
            status: rst::CANCEL,
        }
        .encode(&mut st.deflater);
        self.last_seq = st.push(frame);
        if st.reader_waiting == Some(self.id) {
            self.shared.reader_wake.notify_one();
        }
        drop(guard);
        self.shared.writer_wake.notify_one();
    }
}

impl Drop for SpdyStream {
    fn drop(&mut self) {
        let mut guard = self.shared.lock();
        let st = &mut *guard;
        if let Some(s) = st.streams.remove(&self.id) {
            if !s.sent_fin && !s.reset {
                st.push_fin(self.id);
            }
        }
        if st.reader_waiting == Some(self.id) {
            self.shared.reader_wake.notify_one();
        }
        drop(guard);
        self.shared.writer_wake.notify_one();
    }
}

impl AsyncRead for SpdyStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let mut guard = this.shared.lock();
        let st = &mut *guard;
        let remote_done = st.remote_done;
        let Some(s) = st.streams.get_mut(&this.id) else {
            return Poll::Ready(Ok(()));
        };
        if !s.recv.is_empty() {
            let n = buf.remaining().min(s.recv.len());
            let (a, b) = s.recv.as_slices();
            let from_a = n.min(a.len());
            buf.put_slice(&a[..from_a]);
            buf.put_slice(&b[..n - from_a]);
            s.recv.drain(..n);
            if st.reader_waiting == Some(this.id) && s.recv.len() < STREAM_BUFFER {
                st.reader_waiting = None;
                this.shared.reader_wake.notify_one();
            }
            return Poll::Ready(Ok(()));
        }
        if s.recv_fin || s.reset || remote_done {
            return Poll::Ready(Ok(()));
        }
        s.read_waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

fn closed(what: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, what)
}

impl AsyncWrite for SpdyStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let mut guard = this.shared.lock();
        let st = &mut *guard;
        if st.broken || st.writer_exited {
            return Poll::Ready(Err(closed("SPDY connection closed")));
        }
        let open = st
            .streams
            .get(&this.id)
            .is_some_and(|s| !s.sent_fin && !s.reset);
        if !open || this.write_closed {
            return Poll::Ready(Err(closed("SPDY stream closed")));
        }
        if st.out_bytes >= QUEUE_SOFT {
            if !st.write_waiters.iter().any(|w| w.will_wake(cx.waker())) {
                st.write_waiters.push(cx.waker().clone());
            }
            return Poll::Pending;
        }
        let n = data.len().min(MAX_OUT_FRAME);
        let Some(frame) = frame::encode_data(this.id, 0, &data[..n]) else {
            return Poll::Ready(Err(closed("SPDY stream id out of range")));
        };
        this.last_seq = st.push(frame);
        drop(guard);
        this.shared.writer_wake.notify_one();
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let mut st = this.shared.lock();
        if st.written_seq >= this.last_seq {
            return Poll::Ready(Ok(()));
        }
        if st.broken || st.writer_exited {
            return Poll::Ready(Err(closed("SPDY connection closed")));
        }
        if !st.flush_waiters.iter().any(|w| w.will_wake(cx.waker())) {
            st.flush_waiters.push(cx.waker().clone());
        }
        Poll::Pending
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.close_write();
        self.poll_flush(cx)
    }
}

/// The transport's read half with a buffer frames are parsed from.
struct BufferedRead<R> {
    io: R,
    buf: Vec<u8>,
    start: usize,
}

impl<R: AsyncRead + Unpin> BufferedRead<R> {
    fn available(&self) -> &[u8] {
        self.buf.get(self.start..).unwrap_or_default()
    }

    fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.buf.len());
    }

    /// Reads until `n` bytes are buffered. `Ok(false)`: the transport ended
    /// with nothing buffered (a clean end between frames).
    async fn fill(&mut self, n: usize) -> io::Result<bool> {
        while self.available().len() < n {
            if self.start > 0 {
                self.buf.drain(..self.start);
                self.start = 0;
            }
            let want = n - self.buf.len();
            self.buf.reserve(want.max(READ_SIZE));
            if self.io.read_buf(&mut self.buf).await? == 0 {
                return if self.buf.is_empty() {
                    Ok(false)
                } else {
                    Err(io::ErrorKind::UnexpectedEof.into())
                };
            }
        }
        Ok(true)
    }

    /// As `fill`, but the end of the transport is an error.
    async fn need(&mut self, n: usize) -> io::Result<()> {
        if self.fill(n).await? {
            Ok(())
        } else {
            Err(io::ErrorKind::UnexpectedEof.into())
        }
    }
}

/// The transport's halves and the stream filter, boxed (see `start_boxed`).
type BoxedRead = Pin<Box<dyn AsyncRead + Send>>;
type BoxedWrite = Pin<Box<dyn AsyncWrite + Send>>;
type AcceptFn = Box<dyn Fn(&Headers) -> bool + Send>;

struct Reader {
    shared: Arc<Shared>,
    io: BufferedRead<BoxedRead>,
    inflater: HeaderInflater,
    /// The lowest id the peer's next stream may have.
    next_id: u32,
    max_streams: usize,
    accept: AcceptFn,
    tx: mpsc::Sender<SpdyStream>,
}

async fn run_reader(
    mut reader: Reader,
    idle: Option<Duration>,
    done: watch::Sender<bool>,
    mut stop: watch::Receiver<bool>,
) {
    let shared = Arc::clone(&reader.shared);
    let result = tokio::select! {
        r = reader.run() => r,
        _ = stop.wait_for(|s| *s) => Ok(()),
        () = idle_watch(&shared, idle) => {
            Err(ConnError::Idle(idle.unwrap_or_default().as_secs()))
        }
    };
    // Dropping the reader ends `accept` and releases the read half.
    drop(reader);
    let mut guard = shared.lock();
    let st = &mut *guard;
    st.remote_done = true;
    if let Err(e) = &result {
        st.failure.get_or_insert_with(|| e.to_string());
        match e {
            ConnError::Io(_) => st.broken = true,
            ConnError::Frame(_) => {
                st.begin_close(goaway::PROTOCOL_ERROR);
            }
            ConnError::Idle(_) => {
                st.begin_close(goaway::OK);
            }
        }
    }
    st.wake_all();
    drop(guard);
    shared.writer_wake.notify_one();
    let _ = done.send(true);
}

/// Returns once nothing was read or written for `idle`.
async fn idle_watch(shared: &Shared, idle: Option<Duration>) {
    let Some(idle) = idle else {
        return std::future::pending().await;
    };
    loop {
        let deadline = crate::later(shared.lock().last_activity, idle);
        if Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep_until(deadline).await;
    }
}

impl Reader {
    async fn run(&mut self) -> Result<(), ConnError> {
        loop {
            if !self.io.fill(8).await? {
                return Ok(());
            }
            let Some(&head) = self.io.available().first_chunk::<8>() else {
                return Ok(());
            };
            self.io.consume(8);
            self.shared.lock().last_activity = Instant::now();
            match FrameHead::parse(head) {
                FrameHead::Control {
                    version,
                    kind,
                    flags,
                    length,
                } => {
                    if length > MAX_CONTROL_PAYLOAD {
                        return Err(FrameError::TooLarge(length).into());
                    }
                    self.io.need(length).await?;
                    let payload = self.io.available().get(..length).unwrap_or_default();
                    let frame =
                        frame::parse_control(version, kind, flags, payload, &mut self.inflater)?;
                    self.io.consume(length);
                    if let Some(frame) = frame {
                        if !self.control(frame).await {
                            return Ok(());
                        }
                    }
                }
                FrameHead::Data {
                    stream_id,
                    flags: f,
                    length,
                } => {
                    if stream_id == 0 {
                        return Err(FrameError::ZeroStreamId.into());
                    }
                    self.data(stream_id, length).await?;
                    if f & flags::FIN != 0 {
                        self.remote_fin(stream_id);
                    }
                }
            }
        }
    }

    /// Files a data frame's payload into its stream, piece by piece, waiting
    /// whenever the stream's buffer is full.
    async fn data(&mut self, id: u32, mut remaining: usize) -> Result<(), ConnError> {
        while remaining > 0 {
            if self.io.available().is_empty() {
                self.io.need(1).await?;
            }
            let piece = self.io.available();
            let n = piece.len().min(remaining).min(CHUNK);
            let piece = &piece[..n];
            loop {
                let full = {
                    let mut guard = self.shared.lock();
                    let st = &mut *guard;
                    let closing = st.closing;
                    match st.streams.get_mut(&id) {
                        Some(s) if !s.reset && !s.recv_fin && !closing => {
                            if s.recv.len() >= STREAM_BUFFER {
                                st.reader_waiting = Some(id);
                                true
                            } else {
                                s.recv.extend(piece);
                                if let Some(w) = s.read_waker.take() {
                                    w.wake();
                                }
                                false
                            }
                        }
                        // Nobody holds the stream, it is over, or the
                        // connection is closing: dropped, as spdystream does.
                        _ => false,
                    }
                };
                if !full {
                    break;
                }
                self.shared.reader_wake.notified().await;
            }
            self.shared.lock().reader_waiting = None;
            self.io.consume(n);
            remaining -= n;
        }
        Ok(())
    }

    fn remote_fin(&self, id: u32) {
        if let Some(s) = self.shared.lock().streams.get_mut(&id) {
            s.recv_fin = true;
            if let Some(w) = s.read_waker.take() {
                w.wake();
            }
        }
    }

    /// Handles a control frame; false once the peer has gone away.
    async fn control(&mut self, frame: ControlFrame) -> bool {
        match frame {
            ControlFrame::SynStream {
                stream_id,
                flags: f,
                headers,
                ..
            } => self.syn_stream(stream_id, f, headers).await,
            ControlFrame::RstStream { stream_id, .. } => {
                if let Some(s) = self.shared.lock().streams.get_mut(&stream_id) {
                    s.reset = true;
                    s.recv.clear();
                    if let Some(w) = s.read_waker.take() {
                        w.wake();
                    }
                }
            }
            ControlFrame::Ping { id } => {
                // Odd ids are the client's own pings: echo them. Even ones
                // would answer ours, and we send none.
                if id % 2 == 1 {
                    enqueue(&self.shared, ControlFrame::Ping { id }).await;
                }
            }
            ControlFrame::GoAway { .. } => return false,
            ControlFrame::Headers {
                stream_id,
                flags: f,
                ..
            } => {
                if f & flags::FIN != 0 {
                    self.remote_fin(stream_id);
                }
            }
            // A server opens no streams, so no reply is expected; SETTINGS
            // change nothing a server that opens no streams uses (spdystream
            // ignores them too); flow control: see the module's notes.
            ControlFrame::SynReply { .. }
            | ControlFrame::Settings { .. }
            | ControlFrame::WindowUpdate { .. } => {}
        }
        true
    }

    async fn syn_stream(&mut self, id: u32, f: u8, headers: Headers) {
        // Client streams are odd and increase (SPDY/3 §2.3.2).
        if id % 2 == 0 || id < self.next_id {
            refuse(&self.shared, id, rst::PROTOCOL_ERROR).await;
            return;
        }
        self.next_id = id.saturating_add(2);
        let refused = {
            let st = self.shared.lock();
            st.closing || st.streams.len() >= self.max_streams
        };
        if refused {
            refuse(&self.shared, id, rst::REFUSED_STREAM).await;
            return;
        }
        if !(self.accept)(&headers) {
            refuse(&self.shared, id, rst::CANCEL).await;
            return;
        }
        {
            let mut st = self.shared.lock();
            st.streams.insert(
                id,
                StreamState {
                    recv_fin: f & flags::FIN != 0,
                    sent_fin: f & flags::UNIDIRECTIONAL != 0,
                    ..StreamState::default()
                },
            );
            st.last_stream = id;
        }
        // The reply is queued before anyone can write on the stream, so it
        // precedes the stream's data on the wire.
        enqueue(
            &self.shared,
            ControlFrame::SynReply {
                stream_id: id,
                flags: 0,
                headers: Headers::new(),
            },
        )
        .await;
        let stream = SpdyStream {
            shared: Arc::clone(&self.shared),
            id,
            headers,
            last_seq: 0,
            write_closed: f & flags::UNIDIRECTIONAL != 0,
        };
        // Nobody accepting any more: dropping the stream closes it.
        let _ = self.tx.send(stream).await;
    }
}

/// Answers a stream with RST_STREAM.
async fn refuse(shared: &Shared, id: u32, status: u32) {
    enqueue(
        shared,
        ControlFrame::RstStream {
            stream_id: id,
            status,
        },
    )
    .await;
}

/// Queues a frame of the connection's own, waiting while the queue is over
/// [`QUEUE_HARD`]. (A free function: a future holding `&Reader` across an
/// await would need the transport to be `Sync`.)
async fn enqueue(shared: &Shared, frame: ControlFrame) {
    loop {
        {
            let mut guard = shared.lock();
            let st = &mut *guard;
            if st.broken || st.writer_exited {
                return;
            }
            if st.out_bytes < QUEUE_HARD {
                let bytes = frame.encode(&mut st.deflater);
                st.push(bytes);
                drop(guard);
                shared.writer_wake.notify_one();
                return;
            }
        }
        shared.space.notified().await;
    }
}

struct Writer {
    done: watch::Sender<bool>,
    reader_done: watch::Receiver<bool>,
    stop: watch::Sender<bool>,
    linger: Duration,
    write_timeout: Option<Duration>,
}

async fn run_writer(shared: Arc<Shared>, mut wr: BoxedWrite, mut w: Writer) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut clean = true;
    loop {
        batch.clear();
        let (seq, finished) = {
            let mut guard = shared.lock();
            let st = &mut *guard;
            let mut seq = None;
            while batch.len() < BATCH {
                let Some((s, frame)) = st.out.pop_front() else {
                    break;
                };
                st.out_bytes -= frame.len();
                batch.extend_from_slice(&frame);
                seq = Some(s);
            }
            if seq.is_some() {
                for waker in st.write_waiters.drain(..) {
                    waker.wake();
                }
            }
            (seq, st.broken || (st.closing && st.out.is_empty()))
        };
        let Some(seq) = seq else {
            if finished {
                break;
            }
            shared.writer_wake.notified().await;
            continue;
        };
        shared.space.notify_one();
        let write = async {
            wr.write_all(&batch).await?;
            wr.flush().await
        };
        let result = match w.write_timeout {
            Some(limit) => tokio::time::timeout(limit, write)
                .await
                .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into())),
            None => write.await,
        };
        let mut guard = shared.lock();
        match result {
            Ok(()) => {
                guard.written_seq = seq;
                guard.last_activity = Instant::now();
                for waker in guard.flush_waiters.drain(..) {
                    waker.wake();
                }
            }
            Err(e) => {
                guard.broken = true;
                guard.failure.get_or_insert_with(|| e.to_string());
                guard.wake_all();
                clean = false;
                break;
            }
        }
    }
    if clean {
        let _ = tokio::time::timeout(w.linger, wr.shutdown()).await;
    }
    {
        let mut st = shared.lock();
        st.writer_exited = true;
        st.wake_all();
    }
    let _ = w.done.send(true);
    // Give the peer time to read everything and close first: closing with
    // unread input would make the kernel answer with a reset, which can
    // destroy data the peer has not read yet.
    let _ = tokio::time::timeout(w.linger, w.reader_done.wait_for(|d| *d)).await;
    let _ = w.stop.send(true);
}
