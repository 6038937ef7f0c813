//! A small RFC 6455 websocket: the client handshake, the server's accept key,
//! and frames (binary and text messages, fragmentation, ping/pong/close,
//! masking client to server, a message size limit).
//!
//! Why not tokio-tungstenite: the tunnel needs one fixed use of the protocol
//! (binary messages, pings, no extensions, no subprotocols), and the agent is
//! a ~6 MiB static binary read from an SD card. tokio-tungstenite 0.30 (the
//! newest; it builds with Rust 1.85, and with default features off and only
//! `handshake` it pulls no OpenSSL or aws-lc) still brings twelve crates:
//! `rand` with `chacha20` and a second `getrandom`, `sha1`/`digest`, `http`,
//! `httparse`, `data-encoding`, `futures-util`, `log`... This module uses
//! only what the agent already links: ring (SHA-1 for the accept key, the
//! system random generator for keys and masks, both there for rustls) and
//! base64. Measured on aarch64 (static, opt-level "z", LTO, stripped; a TLS
//! client that opens the websocket, pings and echoes binary messages), over
//! the same client without a websocket: this module +68 KB of text and data,
//! tokio-tungstenite +124 KB; the whole tunnel client on this module
//! (sessions, dials, piping) +123 KB.
//!
//! Reading is cancel-safe: the only await in [`WsReader::next`] is a read
//! into the reader's own buffer, and every parse state lives in the reader, so
//! a session can `select!` on it next to timers and channels.

use base64::Engine as _;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

/// The GUID RFC 6455 appends to the key for `Sec-WebSocket-Accept`.
const ACCEPT_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Largest message accepted by default. remotedialer sends at most 8 KiB of
/// data per message (newer versions 32 KiB); this leaves room for anything
/// reasonable without letting a peer make us buffer without bound.
pub const DEFAULT_MAX_MESSAGE: usize = 4 << 20;

/// Largest handshake response head read.
const MAX_HEAD: usize = 16 << 10;

/// Why the websocket failed.
#[derive(Debug, thiserror::Error)]
pub enum WsError {
    /// Reading or writing the stream failed.
    #[error("websocket I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The server did not switch protocols. `status` is the HTTP status (0 if
    /// the answer was not HTTP), `body` what came with it.
    #[error("websocket: bad handshake: HTTP {status}: {body}")]
    Handshake {
        /// The HTTP status.
        status: u16,
        /// The start of the response body (or what is wrong with the answer).
        body: String,
    },
    /// The peer broke the framing rules.
    #[error("websocket protocol error: {0}")]
    Protocol(&'static str),
    /// A message larger than the limit.
    #[error("websocket message of {0} bytes or more is over the limit")]
    TooLarge(u64),
    /// The system random generator failed.
    #[error("no randomness for the websocket key or mask")]
    Random,
}

/// Which end of the connection this is: a client masks what it sends and
/// expects unmasked frames; a server the other way round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The side that sent the upgrade request.
    Client,
    /// The side that answered 101.
    Server,
}

/// A message read from the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A binary message (all fragments joined).
    Binary(Vec<u8>),
    /// A text message (all fragments joined; not checked for UTF-8, as the
    /// tunnel refuses text anyway).
    Text(Vec<u8>),
    /// A ping; [`WsReader`] does not answer it itself.
    Ping(Vec<u8>),
    /// A pong.
    Pong(Vec<u8>),
    /// The peer closes, with a status code if it gave one.
    Close(Option<u16>),
}

/// Frame opcodes.
mod opcode {
    pub const CONTINUATION: u8 = 0x0;
    pub const TEXT: u8 = 0x1;
    pub const BINARY: u8 = 0x2;
    pub const CLOSE: u8 = 0x8;
    pub const PING: u8 = 0x9;
    pub const PONG: u8 = 0xa;
}

/// An open websocket: a stream after a successful handshake, with whatever
/// bytes were read past the handshake.
#[derive(Debug)]
pub struct WebSocket<S> {
    io: S,
    role: Role,
    leftover: Vec<u8>,
    max_message: usize,
}

impl<S> WebSocket<S>
where
    S: AsyncRead + AsyncWrite,
{
    /// A websocket over a stream whose handshake is done (the server side,
    /// after answering 101). `leftover` are bytes already read past the
    /// handshake.
    pub fn from_upgraded(io: S, role: Role, leftover: Vec<u8>) -> Self {
        Self {
            io,
            role,
            leftover,
            max_message: DEFAULT_MAX_MESSAGE,
        }
    }

    /// Changes the message size limit.
    pub fn with_max_message(mut self, max: usize) -> Self {
        self.max_message = max;
        self
    }

    /// This end's role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Splits into a reader and a writer that can be used from two tasks.
    pub fn split(
        self,
    ) -> (
        WsReader<tokio::io::ReadHalf<S>>,
        WsWriter<tokio::io::WriteHalf<S>>,
    ) {
        let (read, write) = tokio::io::split(self.io);
        (
            WsReader {
                io: read,
                role: self.role,
                buf: self.leftover,
                start: 0,
                max_message: self.max_message,
                fragments: None,
            },
            WsWriter {
                io: write,
                role: self.role,
            },
        )
    }
}

/// The `Sec-WebSocket-Accept` value for a `Sec-WebSocket-Key`.
pub fn accept_key(key: &str) -> String {
    let mut context = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
    context.update(key.trim().as_bytes());
    context.update(ACCEPT_GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(context.finish().as_ref())
}

fn random<const N: usize>() -> Result<[u8; N], WsError> {
    use ring::rand::SecureRandom as _;
    let mut bytes = [0u8; N];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| WsError::Random)?;
    Ok(bytes)
}

/// Opens a websocket as a client: sends the upgrade request for `path` with
/// `Host: host` and `extra_headers` (full `Name: value` lines, without line
/// ends), and checks the 101 answer and its accept key.
pub async fn client_handshake<S>(
    mut io: S,
    host: &str,
    path: &str,
    extra_headers: &[String],
) -> Result<WebSocket<S>, WsError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let key = base64::engine::general_purpose::STANDARD.encode(random::<16>()?);
    let mut request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
    );
    for header in extra_headers {
        request.push_str(header);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    io.write_all(request.as_bytes()).await?;
    io.flush().await?;

    // The response head, byte-exact up to the blank line; what follows is
    // either the start of the frames (101) or an error body.
    let mut buf = Vec::with_capacity(1024);
    let head_end = loop {
        if let Some(at) = find(&buf, b"\r\n\r\n") {
            break at + 4;
        }
        if buf.len() > MAX_HEAD {
            return Err(WsError::Handshake {
                status: 0,
                body: "response head too large".to_owned(),
            });
        }
        let n = io.read_buf(&mut buf).await?;
        if n == 0 {
            return Err(WsError::Handshake {
                status: 0,
                body: "connection closed during the handshake".to_owned(),
            });
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| {
            l.strip_prefix("HTTP/1.1 ")
                .or_else(|| l.strip_prefix("HTTP/1.0 "))
        })
        .and_then(|l| l.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    let rest = buf[head_end..].to_vec();
    if status != 101 {
        // The body as far as it came with the head: enough for the short
        // error texts servers answer with, without waiting for more.
        let mut body = String::from_utf8_lossy(&rest).into_owned();
        body.truncate(512);
        return Err(WsError::Handshake { status, body });
    }
    let has_token = |name: &str, token: &str| {
        header(name).is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    };
    if !has_token("upgrade", "websocket") || !has_token("connection", "upgrade") {
        return Err(WsError::Handshake {
            status,
            body: "101 without Upgrade: websocket".to_owned(),
        });
    }
    if header("sec-websocket-accept") != Some(accept_key(&key).as_str()) {
        return Err(WsError::Handshake {
            status,
            body: "wrong Sec-WebSocket-Accept".to_owned(),
        });
    }
    Ok(WebSocket::from_upgraded(io, Role::Client, rest))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The reading half.
#[derive(Debug)]
pub struct WsReader<R> {
    io: R,
    role: Role,
    /// Bytes read and not yet consumed start at `start`.
    buf: Vec<u8>,
    start: usize,
    max_message: usize,
    /// A fragmented data message being joined: its opcode and bytes so far.
    fragments: Option<(u8, Vec<u8>)>,
}

/// One parsed frame header.
struct Header {
    fin: bool,
    opcode: u8,
    mask: Option<[u8; 4]>,
    len: usize,
    header_len: usize,
}

impl<R: AsyncRead + Unpin> WsReader<R> {
    /// The next message, or `None` when the stream ends between frames.
    /// Pings and pongs are returned (even inside a fragmented message);
    /// answering them is the caller's business.
    pub async fn next(&mut self) -> Result<Option<Message>, WsError> {
        loop {
            if let Some(message) = self.parse()? {
                return Ok(Some(message));
            }
            if self.start > 0 && self.start == self.buf.len() {
                self.buf.clear();
                self.start = 0;
            } else if self.start > 64 << 10 {
                self.buf.drain(..self.start);
                self.start = 0;
            }
            self.buf.reserve(16 << 10);
            let n = self.io.read_buf(&mut self.buf).await?;
            if n == 0 {
                if self.start == self.buf.len() && self.fragments.is_none() {
                    return Ok(None);
                }
                return Err(WsError::Io(std::io::ErrorKind::UnexpectedEof.into()));
            }
        }
    }

    /// Takes one message out of the buffer if a whole one is there.
    fn parse(&mut self) -> Result<Option<Message>, WsError> {
        loop {
            let Some(header) = self.header()? else {
                return Ok(None);
            };
            let available = self.buf.len() - self.start;
            if available < header.header_len + header.len {
                return Ok(None);
            }
            let from = self.start + header.header_len;
            let payload = &mut self.buf[from..from + header.len];
            if let Some(mask) = header.mask {
                for (i, b) in payload.iter_mut().enumerate() {
                    *b ^= mask[i % 4];
                }
            }
            let payload = payload.to_vec();
            self.start = from + header.len;
            match header.opcode {
                opcode::PING => return Ok(Some(Message::Ping(payload))),
                opcode::PONG => return Ok(Some(Message::Pong(payload))),
                opcode::CLOSE => {
                    let code =
                        (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
                    return Ok(Some(Message::Close(code)));
                }
                opcode::CONTINUATION => {
                    let Some((_, joined)) = self.fragments.as_mut() else {
                        return Err(WsError::Protocol("continuation frame without a message"));
                    };
                    joined.extend_from_slice(&payload);
                    if joined.len() > self.max_message {
                        return Err(WsError::TooLarge(joined.len() as u64));
                    }
                    if header.fin {
                        if let Some((op, joined)) = self.fragments.take() {
                            return Ok(Some(data_message(op, joined)));
                        }
                    }
                }
                op @ (opcode::TEXT | opcode::BINARY) => {
                    if self.fragments.is_some() {
                        return Err(WsError::Protocol("new message inside a fragmented one"));
                    }
                    if header.fin {
                        return Ok(Some(data_message(op, payload)));
                    }
                    self.fragments = Some((op, payload));
                }
                _ => return Err(WsError::Protocol("unknown opcode")),
            }
        }
    }

    /// The header at the front of the buffer, if all of it is there.
    fn header(&self) -> Result<Option<Header>, WsError> {
        let b = &self.buf[self.start..];
        if b.len() < 2 {
            return Ok(None);
        }
        let fin = b[0] & 0x80 != 0;
        if b[0] & 0x70 != 0 {
            return Err(WsError::Protocol("reserved bits set"));
        }
        let opcode = b[0] & 0x0f;
        let masked = b[1] & 0x80 != 0;
        match (self.role, masked) {
            (Role::Server, false) => return Err(WsError::Protocol("unmasked client frame")),
            (Role::Client, true) => return Err(WsError::Protocol("masked server frame")),
            _ => {}
        }
        let (len, mut at) = match b[1] & 0x7f {
            126 => {
                if b.len() < 4 {
                    return Ok(None);
                }
                (u64::from(u16::from_be_bytes([b[2], b[3]])), 4)
            }
            127 => {
                if b.len() < 10 {
                    return Ok(None);
                }
                let mut eight = [0u8; 8];
                eight.copy_from_slice(&b[2..10]);
                (u64::from_be_bytes(eight), 10)
            }
            n => (u64::from(n), 2),
        };
        if opcode >= opcode::CLOSE && (len > 125 || !fin) {
            return Err(WsError::Protocol("bad control frame"));
        }
        let limit = self.max_message as u64;
        if len > limit {
            return Err(WsError::TooLarge(len));
        }
        let mask = if masked {
            if b.len() < at + 4 {
                return Ok(None);
            }
            let key = [b[at], b[at + 1], b[at + 2], b[at + 3]];
            at += 4;
            Some(key)
        } else {
            None
        };
        Ok(Some(Header {
            fin,
            opcode,
            mask,
            // Below the limit, which is a usize.
            len: usize::try_from(len).map_err(|_| WsError::TooLarge(len))?,
            header_len: at,
        }))
    }
}

fn data_message(op: u8, payload: Vec<u8>) -> Message {
    if op == opcode::TEXT {
        Message::Text(payload)
    } else {
        Message::Binary(payload)
    }
}

/// The writing half. Every message goes out as one frame.
#[derive(Debug)]
pub struct WsWriter<W> {
    io: W,
    role: Role,
}

impl<W: AsyncWrite + Unpin> WsWriter<W> {
    /// Queues a binary message (written, not yet flushed).
    pub async fn binary(&mut self, payload: &[u8]) -> Result<(), WsError> {
        self.frame(opcode::BINARY, payload).await
    }

    /// Queues a ping.
    pub async fn ping(&mut self, payload: &[u8]) -> Result<(), WsError> {
        self.frame(opcode::PING, &payload[..payload.len().min(125)])
            .await
    }

    /// Queues a pong (the answer to a ping, with its payload).
    pub async fn pong(&mut self, payload: &[u8]) -> Result<(), WsError> {
        self.frame(opcode::PONG, &payload[..payload.len().min(125)])
            .await
    }

    /// Queues a close frame with a status code (1000 = normal).
    pub async fn close(&mut self, code: u16) -> Result<(), WsError> {
        self.frame(opcode::CLOSE, &code.to_be_bytes()).await
    }

    /// Sends what was queued.
    pub async fn flush(&mut self) -> Result<(), WsError> {
        Ok(self.io.flush().await?)
    }

    /// Ends the stream (after a close frame).
    pub async fn shutdown(&mut self) -> Result<(), WsError> {
        Ok(self.io.shutdown().await?)
    }

    async fn frame(&mut self, op: u8, payload: &[u8]) -> Result<(), WsError> {
        let mut out = Vec::with_capacity(payload.len() + 14);
        out.push(0x80 | op);
        let mask_bit = if self.role == Role::Client { 0x80 } else { 0 };
        match payload.len() {
            n @ 0..=125 => out.push(mask_bit | n as u8),
            n @ 126..=0xffff => {
                out.push(mask_bit | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(mask_bit | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        if self.role == Role::Client {
            let mask = random::<4>()?;
            out.extend_from_slice(&mask);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        } else {
            out.extend_from_slice(payload);
        }
        Ok(self.io.write_all(&out).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_key_is_the_rfc_example_and_the_recorded_one() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        // ws_probe.txt: K3s v1.21.2's answer.
        assert_eq!(
            accept_key("f/ISCSn7M1RwvSQO/q2d1Q=="),
            "a3hT3Cruf0PhFowZHvs27kEJQao="
        );
    }

    fn reader(role: Role, bytes: Vec<u8>) -> WsReader<&'static [u8]> {
        WsReader {
            io: &[],
            role,
            buf: bytes,
            start: 0,
            max_message: 1 << 16,
            fragments: None,
        }
    }

    #[tokio::test]
    async fn client_frames_are_masked_and_read_back() {
        let (a, b) = tokio::io::duplex(1 << 20);
        let (_, mut writer) = WebSocket::from_upgraded(a, Role::Client, Vec::new()).split();
        let (mut reader, _) = WebSocket::from_upgraded(b, Role::Server, Vec::new()).split();
        let big = vec![7u8; 70_000];
        writer.binary(b"hello").await.unwrap();
        writer.ping(b"p").await.unwrap();
        writer.binary(&big).await.unwrap();
        writer.binary(&[]).await.unwrap();
        writer.close(1000).await.unwrap();
        writer.flush().await.unwrap();
        assert_eq!(
            reader.next().await.unwrap(),
            Some(Message::Binary(b"hello".to_vec()))
        );
        assert_eq!(
            reader.next().await.unwrap(),
            Some(Message::Ping(b"p".to_vec()))
        );
        let reader_limit = reader.max_message;
        assert!(reader_limit >= big.len());
        assert_eq!(reader.next().await.unwrap(), Some(Message::Binary(big)));
        assert_eq!(
            reader.next().await.unwrap(),
            Some(Message::Binary(Vec::new()))
        );
        assert_eq!(
            reader.next().await.unwrap(),
            Some(Message::Close(Some(1000)))
        );
    }

    #[tokio::test]
    async fn fragments_join_around_control_frames() {
        // Unmasked server frames: "he" + ping + "llo".
        let mut bytes = vec![0x02, 0x02, b'h', b'e'];
        bytes.extend_from_slice(&[0x89, 0x00]);
        bytes.extend_from_slice(&[0x80, 0x03, b'l', b'l', b'o']);
        let mut r = reader(Role::Client, bytes);
        assert_eq!(r.next().await.unwrap(), Some(Message::Ping(Vec::new())));
        assert_eq!(
            r.next().await.unwrap(),
            Some(Message::Binary(b"hello".to_vec()))
        );
        assert_eq!(r.next().await.unwrap(), None);
    }

    #[tokio::test]
    async fn broken_framing_is_an_error() {
        let cases: Vec<(Role, Vec<u8>)> = vec![
            // Unmasked frame to a server, masked frame to a client.
            (Role::Server, vec![0x82, 0x01, 0x00]),
            (Role::Client, vec![0x82, 0x81, 1, 2, 3, 4, 0]),
            // Reserved bits, unknown opcode, continuation out of nowhere.
            (Role::Client, vec![0xc2, 0x00]),
            (Role::Client, vec![0x83, 0x00]),
            (Role::Client, vec![0x80, 0x00]),
            // A long or fragmented control frame.
            (
                Role::Client,
                [vec![0x89, 0x7e, 0x00, 0x7e], vec![0; 126]].concat(),
            ),
            (Role::Client, vec![0x09, 0x00]),
            // Over the limit, a 64-bit length.
            (
                Role::Client,
                vec![0x82, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
            ),
            // A new message inside a fragmented one.
            (Role::Client, vec![0x02, 0x00, 0x82, 0x00]),
            // Cut in the middle of a frame.
            (Role::Client, vec![0x82, 0x05, b'a']),
        ];
        for (role, bytes) in cases {
            let mut r = reader(role, bytes.clone());
            assert!(r.next().await.is_err(), "{bytes:02x?}");
        }
    }

    #[tokio::test]
    async fn random_bytes_never_panic() {
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        for _ in 0..5_000 {
            let mut bytes = Vec::new();
            for _ in 0..(state % 64) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                bytes.push(state as u8);
            }
            state = state.wrapping_add(1);
            for role in [Role::Client, Role::Server] {
                let mut r = reader(role, bytes.clone());
                while let Ok(Some(_)) = r.next().await {}
            }
        }
    }

    #[tokio::test]
    async fn handshake_against_a_recorded_style_server() {
        let (client, mut server) = tokio::io::duplex(1 << 16);
        let serve = tokio::spawn(async move {
            let mut head = Vec::new();
            while find(&head, b"\r\n\r\n").is_none() {
                server.read_buf(&mut head).await.unwrap();
            }
            let text = String::from_utf8(head).unwrap();
            assert!(text.starts_with("GET /v1-k3s/connect HTTP/1.1\r\n"));
            assert!(text.contains("Host: 127.0.0.1:6443\r\n"));
            let key = text
                .lines()
                .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
                .unwrap();
            let answer = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
                accept_key(key)
            );
            // The first frame right behind the head, in the same write.
            let mut bytes = answer.into_bytes();
            bytes.extend_from_slice(&[0x82, 0x02, 0xab, 0xcd]);
            server.write_all(&bytes).await.unwrap();
            server
        });
        let ws = client_handshake(client, "127.0.0.1:6443", "/v1-k3s/connect", &[])
            .await
            .unwrap();
        let _server = serve.await.unwrap();
        let (mut reader, _) = ws.split();
        assert_eq!(
            reader.next().await.unwrap(),
            Some(Message::Binary(vec![0xab, 0xcd]))
        );
    }

    #[tokio::test]
    async fn a_refused_handshake_reports_status_and_body() {
        let (client, mut server) = tokio::io::duplex(1 << 16);
        tokio::spawn(async move {
            let mut head = Vec::new();
            while find(&head, b"\r\n\r\n").is_none() {
                server.read_buf(&mut head).await.unwrap();
            }
            server
                .write_all(
                    b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 21\r\n\r\nfailed authentication",
                )
                .await
                .unwrap();
        });
        match client_handshake(client, "h", "/v1-k3s/connect", &[]).await {
            Err(WsError::Handshake { status, body }) => {
                assert_eq!(status, 401);
                assert!(body.starts_with("failed authentication"));
            }
            other => panic!("{other:?}"),
        }
    }
}
