//! `exec` and `attach` (remotecommand), server side, as the kubelet's
//! streaming server (1.21, `pkg/kubelet/cri/streaming/remotecommand`) runs
//! them over SPDY:
//!
//! 1. [`ExecRequest::exec`] / [`ExecRequest::attach`] read the query
//!    (`input=1`, `output=1`, `error=1`, `tty=1`, `command=`…) and the
//!    upgrade headers, and negotiate the subprotocol; a refusal is a
//!    [`Rejection`] to answer with.
//! 2. The caller sends [`ExecRequest::response`] (101) and hands the
//!    upgraded transport to [`ExecRequest::accept`], which waits, up to the
//!    stream creation timeout, for as many streams as the kubelet waits for:
//!    the error stream plus one per requested stream (`tty` turns stderr off
//!    and, from v3 on, adds `resize`).
//! 3. The command runs on [`ExecSession`]'s streams; [`ExecSession::finish`]
//!    reports how it ended on the error stream (v4: a `metav1.Status` as
//!    JSON; v1–v3: the failure's text, nothing on success) and closes.

use http::{HeaderMap, Response, StatusCode};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::Config;
use crate::handshake::{self, Rejection};
use crate::spdy::{Connection, SpdyStream};

/// `v4.channel.k8s.io`: v3 with a JSON `metav1.Status` on the error stream.
pub const STREAM_PROTOCOL_V4: &str = "v4.channel.k8s.io";
/// `v3.channel.k8s.io`: v2 plus the resize stream.
pub const STREAM_PROTOCOL_V3: &str = "v3.channel.k8s.io";
/// `v2.channel.k8s.io`: separate error stream, streams waited for.
pub const STREAM_PROTOCOL_V2: &str = "v2.channel.k8s.io";
/// `channel.k8s.io`: the original protocol.
pub const STREAM_PROTOCOL_V1: &str = "channel.k8s.io";
/// What the kubelet supports, most preferred first.
pub const EXEC_PROTOCOLS: [&str; 4] = [
    STREAM_PROTOCOL_V4,
    STREAM_PROTOCOL_V3,
    STREAM_PROTOCOL_V2,
    STREAM_PROTOCOL_V1,
];

/// Why an exec or attach session could not be set up or ended badly.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The client did not open the expected streams in time (the kubelet's
    /// words).
    #[error("timed out waiting for client to create streams")]
    StreamCreationTimeout,
    /// The connection ended before the streams were there.
    #[error("connection closed while waiting for streams")]
    ConnectionClosed,
    /// Writing the final status failed.
    #[error("writing the exit status: {0}")]
    Io(#[from] std::io::Error),
}

/// A remotecommand subprotocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecProtocol {
    /// `channel.k8s.io`.
    V1,
    /// `v2.channel.k8s.io`.
    V2,
    /// `v3.channel.k8s.io`.
    V3,
    /// `v4.channel.k8s.io`.
    V4,
}

impl ExecProtocol {
    /// The name in `X-Stream-Protocol-Version`.
    pub fn name(self) -> &'static str {
        match self {
            Self::V1 => STREAM_PROTOCOL_V1,
            Self::V2 => STREAM_PROTOCOL_V2,
            Self::V3 => STREAM_PROTOCOL_V3,
            Self::V4 => STREAM_PROTOCOL_V4,
        }
    }

    fn from_name(name: &str) -> Self {
        match name {
            STREAM_PROTOCOL_V4 => Self::V4,
            STREAM_PROTOCOL_V3 => Self::V3,
            STREAM_PROTOCOL_V2 => Self::V2,
            _ => Self::V1,
        }
    }

    /// Whether a terminal's size comes on a resize stream (v3 and v4).
    pub fn supports_resize(self) -> bool {
        matches!(self, Self::V3 | Self::V4)
    }
}

/// Exec or attach: they differ in the command and in the error texts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandKind {
    /// `/exec/…`: run `command`.
    Exec,
    /// `/attach/…`: join the container's main process.
    Attach,
}

/// The streams asked for, as the kubelet's `NewOptions` reads them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOptions {
    /// `input=1`.
    pub stdin: bool,
    /// `output=1`.
    pub stdout: bool,
    /// `error=1`, forced off by `tty`.
    pub stderr: bool,
    /// `tty=1`.
    pub tty: bool,
    /// Every `command=`, in order (empty for attach).
    pub command: Vec<String>,
}

impl ExecOptions {
    /// Parses the kubelet's query parameters (a flag is on only when its
    /// first value is exactly `1`).
    pub fn from_query(query: &str) -> Result<Self, Rejection> {
        let flag = |key: &str| {
            handshake::query_values(query, key)
                .first()
                .is_some_and(|v| v == "1")
        };
        let tty = flag("tty");
        let stdin = flag("input");
        let stdout = flag("output");
        // The kubelet bypasses stderr under a terminal rather than refusing.
        let stderr = flag("error") && !tty;
        if !stdin && !stdout && !stderr {
            return Err(Rejection::new(
                StatusCode::BAD_REQUEST,
                "you must specify at least 1 of stdin, stdout, stderr",
            ));
        }
        Ok(Self {
            stdin,
            stdout,
            stderr,
            tty,
            command: handshake::query_values(query, "command"),
        })
    }
}

/// An exec or attach request that may be upgraded.
#[derive(Debug, Clone)]
pub struct ExecRequest {
    kind: CommandKind,
    options: ExecOptions,
    /// `None`: the client offered no subprotocol.
    negotiated: Option<&'static str>,
}

impl ExecRequest {
    /// Checks an `/exec/…` request: its query (400), the subprotocol (403
    /// with the accepted list), the upgrade headers (400), in the kubelet's
    /// order.
    pub fn exec(headers: &HeaderMap, query: Option<&str>) -> Result<Self, Rejection> {
        Self::new(CommandKind::Exec, headers, query)
    }

    /// As [`ExecRequest::exec`], for `/attach/…` (any `command` is ignored).
    pub fn attach(headers: &HeaderMap, query: Option<&str>) -> Result<Self, Rejection> {
        Self::new(CommandKind::Attach, headers, query)
    }

    fn new(kind: CommandKind, headers: &HeaderMap, query: Option<&str>) -> Result<Self, Rejection> {
        let mut options = ExecOptions::from_query(query.unwrap_or(""))?;
        if kind == CommandKind::Attach {
            options.command.clear();
        }
        let negotiated = handshake::negotiate(headers, &EXEC_PROTOCOLS)?;
        handshake::check_upgrade(headers)?;
        Ok(Self {
            kind,
            options,
            negotiated,
        })
    }

    /// What the client asked for.
    pub fn options(&self) -> &ExecOptions {
        &self.options
    }

    /// The subprotocol spoken (v1 when the client offered none, as the
    /// kubelet falls back).
    pub fn protocol(&self) -> ExecProtocol {
        self.negotiated
            .map_or(ExecProtocol::V1, ExecProtocol::from_name)
    }

    /// The `101 Switching Protocols` to send before [`ExecRequest::accept`].
    pub fn response(&self) -> Response<()> {
        handshake::switching(self.negotiated)
    }

    /// Runs SPDY on the upgraded transport (`buffered`: bytes already read
    /// past the request head) and waits for the client's streams.
    pub async fn accept<IO>(
        self,
        io: IO,
        buffered: Vec<u8>,
        config: &Config,
    ) -> Result<ExecSession, ExecError>
    where
        IO: AsyncRead + AsyncWrite + Send + 'static,
    {
        let conn = Connection::start(io, buffered, config, |_| true);
        self.wait_for_streams(conn, config).await
    }

    /// The kubelet's `waitForStreams` (not generic: compiled once).
    async fn wait_for_streams(
        self,
        mut conn: Connection,
        config: &Config,
    ) -> Result<ExecSession, ExecError> {
        let protocol = self.protocol();
        // The error stream always, then one per requested stream; resize
        // under a terminal when the protocol has it.
        let o = &self.options;
        let expected = 1
            + usize::from(o.stdin)
            + usize::from(o.stdout)
            + usize::from(o.stderr)
            + usize::from(o.tty && protocol.supports_resize());
        let deadline = crate::later(Instant::now(), config.stream_creation_timeout);
        let mut session = ExecSession {
            kind: self.kind,
            protocol,
            options: self.options,
            error: None,
            stdin: None,
            stdout: None,
            stderr: None,
            resize: None,
            conn: None,
        };
        let mut resize = None;
        // Every stream counts, unknown types too: the kubelet counts replies.
        for _ in 0..expected {
            let stream = match tokio::time::timeout_at(deadline, conn.accept()).await {
                Ok(Some(stream)) => stream,
                Ok(None) => return Err(ExecError::ConnectionClosed),
                Err(_) => return Err(ExecError::StreamCreationTimeout),
            };
            match stream.headers().get("streamtype") {
                Some("error") => session.error = Some(stream),
                Some("stdin") => session.stdin = Some(stream),
                Some("stdout") => session.stdout = Some(stream),
                Some("stderr") => session.stderr = Some(stream),
                Some("resize") if protocol.supports_resize() => resize = Some(stream),
                _ => {}
            }
        }
        if protocol == ExecProtocol::V1 {
            // What 1.0 kubelets did, kept by today's for v1 clients.
            if let Some(stdin) = &mut session.stdin {
                stdin.close_write();
            }
        }
        if let Some(stream) = resize {
            let (tx, rx) = watch::channel(None);
            tokio::spawn(read_resizes(stream, tx));
            session.resize = Some(ResizeEvents { rx });
        }
        session.conn = Some(conn);
        Ok(session)
    }
}

/// A terminal size, as kubectl sends it on the resize stream
/// (`{"Width":80,"Height":24}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct TerminalSize {
    /// Columns.
    #[serde(rename = "Width", alias = "width")]
    pub width: u16,
    /// Rows.
    #[serde(rename = "Height", alias = "height")]
    pub height: u16,
}

/// The terminal sizes the client sends. Only the latest size is kept, so a
/// command that never asks does not hold the connection up (the kubelet's
/// unbuffered channel would).
#[derive(Debug)]
pub struct ResizeEvents {
    rx: watch::Receiver<Option<TerminalSize>>,
}

impl ResizeEvents {
    /// The next size not yet seen, or `None` once the stream has ended.
    pub async fn next(&mut self) -> Option<TerminalSize> {
        loop {
            self.rx.changed().await.ok()?;
            if let Some(size) = *self.rx.borrow_and_update() {
                return Some(size);
            }
        }
    }
}

/// Longest unparsed resize input kept (a message is about 30 bytes).
const MAX_RESIZE_INPUT: usize = 4096;

/// Decodes the resize stream's JSON values until it ends or holds
/// something else (the kubelet's decoder stops there too).
async fn read_resizes(mut stream: SpdyStream, tx: watch::Sender<Option<TerminalSize>>) {
    let mut pending = Vec::new();
    let mut chunk = [0u8; 512];
    loop {
        let mut values = serde_json::Deserializer::from_slice(&pending).into_iter::<TerminalSize>();
        let used = loop {
            match values.next() {
                Some(Ok(size)) => {
                    tx.send_replace(Some(size));
                }
                Some(Err(e)) if e.is_eof() => break values.byte_offset(),
                Some(Err(_)) => return,
                None => break values.byte_offset(),
            }
        };
        pending.drain(..used);
        if pending.len() > MAX_RESIZE_INPUT {
            return;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => pending.extend_from_slice(&chunk[..n]),
        }
    }
}

/// How the command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitStatus {
    /// It exited with this code (0: success).
    Code(i32),
    /// It could not be run or attached to; the text says why.
    Error(String),
}

/// `metav1.Status` with the fields the kubelet fills, in Go's field order
/// (so the JSON is byte for byte the kubelet's).
#[derive(Serialize)]
struct Status {
    metadata: Empty,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<Details>,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<u16>,
}

#[derive(Serialize)]
struct Empty {}

#[derive(Serialize)]
struct Details {
    causes: Vec<Cause>,
}

#[derive(Serialize)]
struct Cause {
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
    message: String,
}

impl Status {
    fn of(kind: CommandKind, command: &[String], exit: &ExitStatus) -> Self {
        match exit {
            ExitStatus::Code(0) => Self {
                metadata: Empty {},
                status: "Success",
                message: None,
                reason: None,
                details: None,
                code: None,
            },
            // containerd's words inside the kubelet's (`%v` of a []string).
            ExitStatus::Code(code) => Self {
                metadata: Empty {},
                status: "Failure",
                message: Some(format!(
                    "command terminated with non-zero exit code: error executing command [{}], exit code {code}",
                    command.join(" ")
                )),
                reason: Some("NonZeroExitCode"),
                details: Some(Details {
                    causes: vec![Cause {
                        reason: Some("ExitCode"),
                        message: code.to_string(),
                    }],
                }),
                code: None,
            },
            ExitStatus::Error(why) => {
                let error = match kind {
                    CommandKind::Exec => format!("error executing command in container: {why}"),
                    CommandKind::Attach => format!("error attaching to container: {why}"),
                };
                // apierrors.NewInternalError.
                Self {
                    metadata: Empty {},
                    status: "Failure",
                    message: Some(format!("Internal error occurred: {error}")),
                    reason: Some("InternalError"),
                    details: Some(Details {
                        causes: vec![Cause {
                            reason: None,
                            message: error,
                        }],
                    }),
                    code: Some(500),
                }
            }
        }
    }
}

/// What goes on the error stream at the end, per protocol.
pub fn status_bytes(
    protocol: ExecProtocol,
    kind: CommandKind,
    command: &[String],
    exit: &ExitStatus,
) -> Vec<u8> {
    let status = Status::of(kind, command, exit);
    if protocol == ExecProtocol::V4 {
        // Plain structs of strings and numbers always serialize.
        serde_json::to_vec(&status).unwrap_or_default()
    } else {
        status.message.unwrap_or_default().into_bytes()
    }
}

/// A running exec or attach: take the streams, run the command, then
/// [`ExecSession::finish`].
#[derive(Debug)]
pub struct ExecSession {
    kind: CommandKind,
    protocol: ExecProtocol,
    options: ExecOptions,
    error: Option<SpdyStream>,
    stdin: Option<SpdyStream>,
    stdout: Option<SpdyStream>,
    stderr: Option<SpdyStream>,
    resize: Option<ResizeEvents>,
    conn: Option<Connection>,
}

impl ExecSession {
    /// The negotiated subprotocol.
    pub fn protocol(&self) -> ExecProtocol {
        self.protocol
    }

    /// The request's options, the command among them.
    pub fn options(&self) -> &ExecOptions {
        &self.options
    }

    /// Whether the client asked for a terminal.
    pub fn tty(&self) -> bool {
        self.options.tty
    }

    /// The command's input (read it; EOF when the client closes its stdin).
    pub fn take_stdin(&mut self) -> Option<SpdyStream> {
        self.stdin.take()
    }

    /// The command's output (write it; shutting down or dropping sends EOF).
    pub fn take_stdout(&mut self) -> Option<SpdyStream> {
        self.stdout.take()
    }

    /// The command's error output (never under a terminal).
    pub fn take_stderr(&mut self) -> Option<SpdyStream> {
        self.stderr.take()
    }

    /// Terminal size changes (terminal sessions on v3 and v4).
    pub fn take_resize(&mut self) -> Option<ResizeEvents> {
        self.resize.take()
    }

    /// Reports `exit` on the error stream and closes the connection: FIN on
    /// every stream still open (stdout and stderr taken and still held are
    /// cut off: drop or shut them down first so nothing is lost), GOAWAY,
    /// and the transport once written.
    pub async fn finish(mut self, exit: ExitStatus) -> Result<(), ExecError> {
        self.stdout = None;
        self.stderr = None;
        self.stdin = None;
        self.resize = None;
        let mut result = Ok(());
        if let Some(mut error) = self.error.take() {
            let bytes = status_bytes(self.protocol, self.kind, &self.options.command, &exit);
            if !bytes.is_empty() {
                result = error.write_all(&bytes).await.map_err(ExecError::from);
            }
            if self.protocol == ExecProtocol::V1 {
                // 1.0 kubelets reset the error stream; kept for v1.
                error.reset();
            } else {
                error.close_write();
            }
        }
        if let Some(conn) = self.conn.take() {
            conn.close().await;
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_as_the_kubelet_reads_them() {
        let o = ExecOptions::from_query(
            "command=sh&command=-c&command=exit+3&error=1&input=1&output=1",
        )
        .unwrap();
        assert_eq!(
            o,
            ExecOptions {
                stdin: true,
                stdout: true,
                stderr: true,
                tty: false,
                command: vec!["sh".into(), "-c".into(), "exit 3".into()],
            }
        );
        let o = ExecOptions::from_query("tty=1&error=1&output=1").unwrap();
        assert!(o.tty && o.stdout && !o.stderr && !o.stdin);
        // Only exactly "1" counts.
        let r = ExecOptions::from_query("input=true&output=yes&error=0").unwrap_err();
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            r.body,
            "you must specify at least 1 of stdin, stdout, stderr"
        );
        // tty alone turns stderr off and leaves nothing.
        assert!(ExecOptions::from_query("tty=1&error=1").is_err());
    }

    fn text(b: Vec<u8>) -> String {
        String::from_utf8(b).unwrap()
    }

    #[test]
    fn v4_status_is_the_kubelets_json() {
        let cmd = ["sh".to_owned(), "-c".to_owned(), "exit 3".to_owned()];
        let exec = |exit: &ExitStatus| {
            text(status_bytes(
                ExecProtocol::V4,
                CommandKind::Exec,
                &cmd,
                exit,
            ))
        };
        assert_eq!(
            exec(&ExitStatus::Code(0)),
            r#"{"metadata":{},"status":"Success"}"#
        );
        assert_eq!(
            exec(&ExitStatus::Code(3)),
            r#"{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code: error executing command [sh -c exit 3], exit code 3","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"3"}]}}"#
        );
        assert_eq!(
            exec(&ExitStatus::Error("no such \"file\"".into())),
            r#"{"metadata":{},"status":"Failure","message":"Internal error occurred: error executing command in container: no such \"file\"","reason":"InternalError","details":{"causes":[{"message":"error executing command in container: no such \"file\""}]},"code":500}"#
        );
        let attach = text(status_bytes(
            ExecProtocol::V4,
            CommandKind::Attach,
            &[],
            &ExitStatus::Error("gone".into()),
        ));
        assert!(attach.contains(
            r#""message":"Internal error occurred: error attaching to container: gone""#
        ));
    }

    #[test]
    fn older_protocols_send_text_only_on_failure() {
        for p in [ExecProtocol::V1, ExecProtocol::V2, ExecProtocol::V3] {
            assert!(status_bytes(p, CommandKind::Exec, &[], &ExitStatus::Code(0)).is_empty());
            assert_eq!(
                text(status_bytes(
                    p,
                    CommandKind::Exec,
                    &["false".into()],
                    &ExitStatus::Code(1)
                )),
                "command terminated with non-zero exit code: error executing command [false], exit code 1"
            );
        }
    }

    #[test]
    fn terminal_size_json() {
        let s: TerminalSize = serde_json::from_str(r#"{"Width":101,"Height":33}"#).unwrap();
        assert_eq!(
            s,
            TerminalSize {
                width: 101,
                height: 33
            }
        );
        let s: TerminalSize = serde_json::from_str(r#"{"width":1,"height":2}"#).unwrap();
        assert_eq!((s.width, s.height), (1, 2));
        assert!(serde_json::from_str::<TerminalSize>(r#"{"Width":70000,"Height":1}"#).is_err());
    }
}
