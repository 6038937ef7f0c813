//! The server side against real client bytes (kubectl 1.20's, captured:
//! fixtures/README.md) and against a scripted client on an in-memory pipe:
//! replies, exec and port-forward sessions, statuses, refusals, timeouts,
//! back-pressure, and protocol errors.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use armlet_streams::spdy::Connection;
use armlet_streams::spdy::frame::{
    ControlFrame, Decoder, Frame, Headers, encode_data, flags, goaway, rst,
};
use armlet_streams::spdy::zlib::{HeaderDeflater, HeaderInflater};
use armlet_streams::{Config, ExecError, ExecRequest, ExitStatus, PortForwardRequest};
use http::{HeaderMap, HeaderName, HeaderValue};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _, DuplexStream};

const EXEC: &[u8] = include_bytes!("fixtures/kubectl-1.20-exec.bin");
const TTY: &[u8] = include_bytes!("fixtures/kubectl-1.20-tty.bin");
const PORTFORWARD: &[u8] = include_bytes!("fixtures/kubectl-1.20-portforward.bin");
const PYTHON_BLOCKS: &[u8] = include_bytes!("fixtures/python-zlib-blocks.bin");

fn h(pairs: &[(&str, &str)]) -> Headers {
    pairs.iter().copied().collect()
}

/// Every frame in `bytes`.
fn frames(bytes: &[u8]) -> Vec<Frame> {
    let mut dec = Decoder::new(1 << 20);
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let (frame, used) = dec.decode(&bytes[at..]).unwrap().expect("a whole frame");
        out.extend(frame);
        at += used;
    }
    out
}

fn syn(stream_id: u32, headers: Headers) -> Frame {
    Frame::Control(ControlFrame::SynStream {
        stream_id,
        associated_to: 0,
        priority: 0,
        slot: 0,
        flags: 0,
        headers,
    })
}

fn data(stream_id: u32, fin: bool, bytes: &[u8]) -> Frame {
    Frame::Data {
        stream_id,
        flags: if fin { flags::FIN } else { 0 },
        data: bytes.to_vec(),
    }
}

#[test]
fn decodes_kubectl_exec_frames() {
    assert_eq!(
        frames(EXEC),
        [
            syn(1, h(&[("streamtype", "error")])),
            syn(3, h(&[("streamtype", "stdin")])),
            syn(5, h(&[("streamtype", "stdout")])),
            syn(7, h(&[("streamtype", "stderr")])),
            data(3, false, b"input-bytes"),
            data(3, true, b""),
        ]
    );
}

#[test]
fn decodes_kubectl_tty_frames() {
    let rst = |stream_id| {
        Frame::Control(ControlFrame::RstStream {
            stream_id,
            status: rst::CANCEL,
        })
    };
    assert_eq!(
        frames(TTY),
        [
            syn(1, h(&[("streamtype", "error")])),
            syn(3, h(&[("streamtype", "stdin")])),
            syn(5, h(&[("streamtype", "stdout")])),
            syn(7, h(&[("streamtype", "resize")])),
            data(7, false, b"{\"Width\":101,\"Height\":33}\n"),
            data(3, false, b"\0"),
            rst(1),
            rst(3),
            rst(5),
            rst(7),
            Frame::Control(ControlFrame::GoAway {
                last_good_stream_id: 0,
                status: goaway::OK
            }),
        ]
    );
}

#[test]
fn decodes_kubectl_port_forward_frames() {
    let got = frames(PORTFORWARD);
    let pf = |id, kind, request| {
        syn(
            id,
            h(&[("streamtype", kind), ("port", "80"), ("requestid", request)]),
        )
    };
    // Go writes a map's headers in random order: compare as sets.
    let sorted = |f: &Frame| match f {
        Frame::Control(ControlFrame::SynStream {
            stream_id, headers, ..
        }) => {
            let mut pairs: Vec<(String, String)> = headers
                .iter()
                .map(|(n, v)| (n.to_owned(), v.to_owned()))
                .collect();
            pairs.sort();
            format!("syn {stream_id} {pairs:?}")
        }
        other => format!("{other:?}"),
    };
    let expected = [
        pf(1, "error", "0"),
        data(1, true, b""),
        pf(3, "data", "0"),
        data(3, false, b"ping-1"),
        data(3, true, b""),
        pf(5, "error", "1"),
        data(5, true, b""),
        pf(7, "data", "1"),
        data(7, false, b"ping-2"),
        data(7, true, b""),
    ];
    assert_eq!(
        got.iter().map(sorted).collect::<Vec<_>>(),
        expected.iter().map(sorted).collect::<Vec<_>>()
    );
}

#[test]
fn inflates_blocks_from_c_zlib() {
    let mut inflater = HeaderInflater::new();
    let mut pieces = Vec::new();
    let mut rest = PYTHON_BLOCKS;
    while let Some((len, tail)) = rest.split_first_chunk::<4>() {
        let len = u32::from_be_bytes(*len) as usize;
        let mut out = Vec::new();
        inflater.inflate(&tail[..len], 1 << 16, &mut out).unwrap();
        pieces.push(Headers::decode_block(&out).unwrap());
        rest = &tail[len..];
    }
    let long = "abcdefgh".repeat(600);
    assert_eq!(
        pieces,
        [
            h(&[("streamtype", "error")]),
            h(&[
                ("content-type", "text/plain"),
                ("user-agent", "kubectl/v1.20.2"),
                ("accept-encoding", "gzip,deflate"),
            ]),
            h(&[("streamtype", "data"), ("port", "8080"), ("requestid", "7")]),
            h(&[("x-long", long.as_str())]),
            h(&[("streamtype", "error"), ("port", "80"), ("port", "81")]),
        ]
    );
}

/// A scripted SPDY client on the other end of an in-memory pipe.
struct Client {
    io: DuplexStream,
    deflater: HeaderDeflater,
    decoder: Decoder,
    buf: Vec<u8>,
}

impl Client {
    fn new(io: DuplexStream) -> Self {
        Self {
            io,
            deflater: HeaderDeflater::new(),
            decoder: Decoder::new(1 << 20),
            buf: Vec::new(),
        }
    }

    async fn send(&mut self, frame: ControlFrame) {
        let bytes = frame.encode(&mut self.deflater);
        self.io.write_all(&bytes).await.unwrap();
    }

    async fn open(&mut self, stream_id: u32, headers: &[(&str, &str)]) {
        self.send(ControlFrame::SynStream {
            stream_id,
            associated_to: 0,
            priority: 0,
            slot: 0,
            flags: 0,
            headers: h(headers),
        })
        .await;
    }

    async fn data(&mut self, stream_id: u32, fin: bool, bytes: &[u8]) {
        let f = if fin { flags::FIN } else { 0 };
        self.io
            .write_all(&encode_data(stream_id, f, bytes).unwrap())
            .await
            .unwrap();
    }

    /// The next frame, `None` at the end of the transport.
    async fn next(&mut self) -> Option<Frame> {
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if let Some((frame, used)) = self.decoder.decode(&self.buf).unwrap() {
                    self.buf.drain(..used);
                    if frame.is_some() {
                        return frame;
                    }
                    continue;
                }
                let mut chunk = [0u8; 8192];
                let n = self.io.read(&mut chunk).await.unwrap_or(0);
                if n == 0 {
                    return None;
                }
                self.buf.extend_from_slice(&chunk[..n]);
            }
        })
        .await
        .expect("a frame in time")
    }

    /// Every frame until the server closes.
    async fn rest(&mut self) -> Vec<Frame> {
        let mut all = Vec::new();
        while let Some(f) = self.next().await {
            all.push(f);
        }
        all
    }

    async fn expect_reply(&mut self, stream_id: u32) {
        assert_eq!(
            self.next().await,
            Some(Frame::Control(ControlFrame::SynReply {
                stream_id,
                flags: 0,
                headers: Headers::new()
            }))
        );
    }
}

fn spdy_headers(protocols: &[&str]) -> HeaderMap {
    let mut m = HeaderMap::new();
    m.insert("connection", HeaderValue::from_static("Upgrade"));
    m.insert("upgrade", HeaderValue::from_static("SPDY/3.1"));
    for p in protocols {
        m.append(
            HeaderName::from_static("x-stream-protocol-version"),
            HeaderValue::from_str(p).unwrap(),
        );
    }
    m
}

fn quick() -> Config {
    Config {
        stream_creation_timeout: Duration::from_secs(5),
        linger: Duration::from_millis(200),
        ..Config::default()
    }
}

/// Data sent on `stream` in `frames`, and whether it was FIN'd.
fn stream_data(frames: &[Frame], stream: u32) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let mut fin = false;
    for f in frames {
        if let Frame::Data {
            stream_id,
            flags: fl,
            data,
        } = f
        {
            if *stream_id == stream {
                assert!(!fin, "data after FIN on {stream}");
                out.extend_from_slice(data);
                fin |= fl & flags::FIN != 0;
            }
        }
    }
    (out, fin)
}

#[tokio::test]
async fn replays_kubectl_exec_and_answers_as_the_kubelet() {
    let headers = spdy_headers(&["v4.channel.k8s.io", "v3.channel.k8s.io"]);
    let request = ExecRequest::exec(
        &headers,
        Some("command=sh&command=-c&command=exit+3&error=1&input=1&output=1"),
    )
    .unwrap();
    assert_eq!(request.protocol().name(), "v4.channel.k8s.io");
    let (server, client) = tokio::io::duplex(64 * 1024);
    // The first bytes arrive with the request head, the rest later.
    let (head, tail) = EXEC.split_at(20);
    let mut client = Client::new(client);
    client.io.write_all(tail).await.unwrap();
    let mut session = request
        .accept(server, head.to_vec(), &quick())
        .await
        .unwrap();
    assert!(!session.tty());
    assert!(session.take_resize().is_none());
    let mut stdin = session.take_stdin().unwrap();
    let mut input = Vec::new();
    stdin.read_to_end(&mut input).await.unwrap();
    assert_eq!(input, b"input-bytes");
    let mut stdout = session.take_stdout().unwrap();
    stdout.write_all(b"out\n").await.unwrap();
    drop(stdout);
    let mut stderr = session.take_stderr().unwrap();
    stderr.write_all(b"err\n").await.unwrap();
    stderr.shutdown().await.unwrap();
    session.finish(ExitStatus::Code(3)).await.unwrap();

    let all = client.rest().await;
    for (i, id) in [1u32, 3, 5, 7].into_iter().enumerate() {
        assert_eq!(
            all[i],
            Frame::Control(ControlFrame::SynReply {
                stream_id: id,
                flags: 0,
                headers: Headers::new()
            })
        );
    }
    assert_eq!(stream_data(&all, 5), (b"out\n".to_vec(), true));
    assert_eq!(stream_data(&all, 7), (b"err\n".to_vec(), true));
    assert_eq!(stream_data(&all, 3), (Vec::new(), true));
    let (status, fin) = stream_data(&all, 1);
    assert!(fin);
    assert_eq!(
        String::from_utf8(status).unwrap(),
        r#"{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code: error executing command [sh -c exit 3], exit code 3","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"3"}]}}"#
    );
    assert_eq!(
        all.last(),
        Some(&Frame::Control(ControlFrame::GoAway {
            last_good_stream_id: 7,
            status: goaway::OK
        }))
    );
}

#[tokio::test]
async fn replays_kubectl_tty_exec_with_a_resize() {
    let headers = spdy_headers(&["v4.channel.k8s.io"]);
    let request =
        ExecRequest::exec(&headers, Some("command=sh&input=1&output=1&tty=1&error=1")).unwrap();
    let (server, client) = tokio::io::duplex(64 * 1024);
    let mut client = Client::new(client);
    // Everything up to kubectl's teardown (which comes after the status).
    let teardown = TTY.len() - 5 * 16;
    client.io.write_all(&TTY[..teardown]).await.unwrap();
    let mut session = request.accept(server, Vec::new(), &quick()).await.unwrap();
    assert!(session.tty());
    assert!(session.take_stderr().is_none());
    let mut resize = session.take_resize().unwrap();
    assert_eq!(
        resize.next().await.map(|s| (s.width, s.height)),
        Some((101, 33))
    );
    let mut stdin = session.take_stdin().unwrap();
    let mut byte = [9u8; 1];
    stdin.read_exact(&mut byte).await.unwrap();
    assert_eq!(byte, [0]);
    session.finish(ExitStatus::Code(0)).await.unwrap();
    client.io.write_all(&TTY[teardown..]).await.unwrap();
    let all = client.rest().await;
    assert_eq!(
        stream_data(&all, 1),
        (br#"{"metadata":{},"status":"Success"}"#.to_vec(), true)
    );
    // The resize stream ended when the client reset it.
    assert_eq!(resize.next().await, None);
}

#[tokio::test]
async fn replays_kubectl_port_forward() {
    let headers = spdy_headers(&["portforward.k8s.io"]);
    let request = PortForwardRequest::new(&headers).unwrap();
    assert_eq!(
        request
            .response()
            .headers()
            .get("x-stream-protocol-version")
            .unwrap(),
        "portforward.k8s.io"
    );
    let (server, client) = tokio::io::duplex(64 * 1024);
    let mut client = Client::new(client);
    client.io.write_all(PORTFORWARD).await.unwrap();
    let mut session = request.accept(server, Vec::new(), &quick());
    for (request_id, sent) in [("0", "ping-1"), ("1", "ping-2")] {
        let mut forward = session.next().await.unwrap();
        assert_eq!(
            (forward.port, forward.request_id.as_str()),
            (80, request_id)
        );
        let mut got = Vec::new();
        forward.data.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, sent.as_bytes());
        forward.data.write_all(b"pong").await.unwrap();
        // Dropping both ends them (FIN), as the kubelet closes them.
    }
    drop(session);
    let all = client.rest().await;
    assert_eq!(stream_data(&all, 3), (b"pong".to_vec(), true));
    assert_eq!(stream_data(&all, 7), (b"pong".to_vec(), true));
    assert_eq!(stream_data(&all, 1), (Vec::new(), true));
}

#[tokio::test]
async fn port_forward_refuses_bad_streams_and_times_out_lone_ones() {
    let request = PortForwardRequest::new(&spdy_headers(&["portforward.k8s.io"])).unwrap();
    let (server, client) = tokio::io::duplex(64 * 1024);
    let mut client = Client::new(client);
    let config = Config {
        stream_creation_timeout: Duration::from_millis(300),
        ..quick()
    };
    let mut session = request.accept(server, Vec::new(), &config);
    let serve = tokio::spawn(async move {
        let forward = session.next().await;
        (forward.map(|f| f.port), session)
    });
    client.open(1, &[("streamtype", "data")]).await;
    assert_eq!(
        client.next().await,
        Some(Frame::Control(ControlFrame::RstStream {
            stream_id: 1,
            status: rst::CANCEL
        }))
    );
    client
        .open(3, &[("streamtype", "stdin"), ("port", "80")])
        .await;
    assert!(matches!(
        client.next().await,
        Some(Frame::Control(ControlFrame::RstStream { stream_id: 3, .. }))
    ));
    // An error stream whose data stream never comes.
    client
        .open(
            5,
            &[("streamtype", "error"), ("port", "80"), ("requestid", "9")],
        )
        .await;
    client.expect_reply(5).await;
    assert_eq!(
        client.next().await,
        Some(data(5, false, b"(request=9) timed out waiting for streams"))
    );
    assert_eq!(client.next().await, Some(data(5, true, b"")));
    // A pair without request ids: the kubelet's guess pairs 7 and 9.
    client
        .open(7, &[("streamtype", "error"), ("port", "8080")])
        .await;
    client
        .open(9, &[("streamtype", "data"), ("port", "8080")])
        .await;
    client.expect_reply(7).await;
    client.expect_reply(9).await;
    let (port, session) = serve.await.unwrap();
    assert_eq!(port, Some(8080));
    session.close().await;
}

#[tokio::test]
async fn refusals_as_the_kubelet_words_them() {
    let r = ExecRequest::exec(&spdy_headers(&["v9.channel.k8s.io"]), Some("output=1")).unwrap_err();
    assert_eq!(r.status, 403);
    assert!(r.body.contains(
        "server accepts [v4.channel.k8s.io v3.channel.k8s.io v2.channel.k8s.io channel.k8s.io]"
    ));
    let r = ExecRequest::exec(&spdy_headers(&["v4.channel.k8s.io"]), Some("tty=1")).unwrap_err();
    assert_eq!(
        (r.status.as_u16(), r.body.as_str()),
        (400, "you must specify at least 1 of stdin, stdout, stderr")
    );
    let mut plain = HeaderMap::new();
    plain.append(
        HeaderName::from_static("x-stream-protocol-version"),
        HeaderValue::from_static("portforward.k8s.io"),
    );
    let r = PortForwardRequest::new(&plain).unwrap_err();
    assert_eq!(r.status, 400);
    assert!(
        r.body
            .starts_with("unable to upgrade: missing upgrade headers in request")
    );
    // No protocol offered: v1, and no protocol header in the 101.
    let request = ExecRequest::exec(&spdy_headers(&[]), Some("output=1")).unwrap();
    assert_eq!(request.protocol().name(), "channel.k8s.io");
    assert!(
        request
            .response()
            .headers()
            .get("x-stream-protocol-version")
            .is_none()
    );
    // Attach ignores commands.
    let request = ExecRequest::attach(
        &spdy_headers(&["v4.channel.k8s.io"]),
        Some("output=1&command=ls"),
    )
    .unwrap();
    assert!(request.options().command.is_empty());
}

#[tokio::test]
async fn exec_times_out_waiting_for_streams() {
    let request = ExecRequest::exec(
        &spdy_headers(&["v4.channel.k8s.io"]),
        Some("output=1&input=1"),
    )
    .unwrap();
    let (server, client) = tokio::io::duplex(64 * 1024);
    let mut client = Client::new(client);
    client.open(1, &[("streamtype", "error")]).await;
    client.open(3, &[("streamtype", "stdout")]).await;
    let config = Config {
        stream_creation_timeout: Duration::from_millis(300),
        ..quick()
    };
    let started = std::time::Instant::now();
    let err = request
        .accept(server, Vec::new(), &config)
        .await
        .unwrap_err();
    assert!(matches!(err, ExecError::StreamCreationTimeout), "{err}");
    assert!(started.elapsed() >= Duration::from_millis(300));
    let all = client.rest().await;
    assert_eq!(stream_data(&all, 1), (Vec::new(), true));
    assert_eq!(
        all.last(),
        Some(&Frame::Control(ControlFrame::GoAway {
            last_good_stream_id: 3,
            status: goaway::OK
        }))
    );
}

#[tokio::test]
async fn v3_reports_failures_as_text_and_nothing_on_success() {
    for (exit, text) in [
        (ExitStatus::Code(0), ""),
        (
            ExitStatus::Code(2),
            "command terminated with non-zero exit code: error executing command [false], exit code 2",
        ),
    ] {
        let request = ExecRequest::exec(
            &spdy_headers(&["v3.channel.k8s.io"]),
            Some("command=false&output=1"),
        )
        .unwrap();
        let (server, client) = tokio::io::duplex(64 * 1024);
        let mut client = Client::new(client);
        client.open(1, &[("streamtype", "error")]).await;
        client.open(3, &[("streamtype", "stdout")]).await;
        let session = request.accept(server, Vec::new(), &quick()).await.unwrap();
        session.finish(exit).await.unwrap();
        let all = client.rest().await;
        assert_eq!(stream_data(&all, 1), (text.as_bytes().to_vec(), true));
    }
}

/// A bare connection with a scripted client.
fn connection(config: &Config) -> (Connection, Client) {
    let (server, client) = tokio::io::duplex(16 * 1024);
    let conn = Connection::start(server, Vec::new(), config, |h: &Headers| {
        h.get("reject").is_none()
    });
    (conn, Client::new(client))
}

#[tokio::test]
async fn pings_settings_window_updates_and_stream_ids() {
    let config = Config {
        max_streams: 2,
        ..quick()
    };
    let (mut conn, mut client) = connection(&config);
    client
        .send(ControlFrame::Settings {
            flags: 0,
            entries: Vec::new(),
        })
        .await;
    client
        .send(ControlFrame::WindowUpdate {
            stream_id: 0,
            delta: 1000,
        })
        .await;
    client.send(ControlFrame::Ping { id: 2 }).await;
    client.send(ControlFrame::Ping { id: 1 }).await;
    assert_eq!(
        client.next().await,
        Some(Frame::Control(ControlFrame::Ping { id: 1 }))
    );
    client.open(3, &[("reject", "yes")]).await;
    assert_eq!(
        client.next().await,
        Some(Frame::Control(ControlFrame::RstStream {
            stream_id: 3,
            status: rst::CANCEL
        }))
    );
    // Even, and not increasing: protocol errors on the stream.
    for id in [4, 1] {
        client.open(id, &[]).await;
        assert_eq!(
            client.next().await,
            Some(Frame::Control(ControlFrame::RstStream {
                stream_id: id,
                status: rst::PROTOCOL_ERROR
            }))
        );
    }
    client.open(5, &[("a", "1")]).await;
    client.open(7, &[]).await;
    client.open(9, &[]).await;
    client.expect_reply(5).await;
    client.expect_reply(7).await;
    assert_eq!(
        client.next().await,
        Some(Frame::Control(ControlFrame::RstStream {
            stream_id: 9,
            status: rst::REFUSED_STREAM
        }))
    );
    let first = conn.accept().await.unwrap();
    assert_eq!((first.id(), first.headers().get("a")), (5, Some("1")));
    let second = conn.accept().await.unwrap();
    // A freed slot takes a new stream.
    drop(second);
    assert_eq!(client.next().await, Some(data(7, true, b"")));
    client.open(11, &[]).await;
    client.expect_reply(11).await;
    // The peer's reset: reads end, writes fail.
    let mut third = conn.accept().await.unwrap();
    client
        .send(ControlFrame::RstStream {
            stream_id: 11,
            status: rst::CANCEL,
        })
        .await;
    let mut buf = Vec::new();
    assert_eq!(third.read_to_end(&mut buf).await.unwrap(), 0);
    assert!(third.write_all(b"x").await.is_err());
    drop(first);
    // GOAWAY from the peer: no more streams.
    client
        .send(ControlFrame::GoAway {
            last_good_stream_id: 0,
            status: goaway::OK,
        })
        .await;
    assert!(conn.accept().await.is_none());
}

#[tokio::test]
async fn a_protocol_error_ends_the_connection_with_goaway() {
    let (mut conn, mut client) = connection(&quick());
    client.open(1, &[]).await;
    client.expect_reply(1).await;
    let mut stream = conn.accept().await.unwrap();
    client.data(1, false, b"before").await;
    // RST_STREAM with a 4-byte payload.
    client
        .io
        .write_all(&[0x80, 3, 0, 3, 0, 0, 0, 4, 0, 0, 0, 1])
        .await
        .unwrap();
    let all = client.rest().await;
    assert_eq!(
        all,
        [
            data(1, true, b""),
            Frame::Control(ControlFrame::GoAway {
                last_good_stream_id: 1,
                status: goaway::PROTOCOL_ERROR
            })
        ]
    );
    let mut got = Vec::new();
    stream.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"before");
    assert!(conn.failure().unwrap().contains("control frame type 3"));
    assert!(conn.accept().await.is_none());
}

#[tokio::test]
async fn oversized_control_frames_and_stream_zero_are_fatal() {
    for bytes in [
        vec![0x80, 3, 0, 1, 0, 0x01, 0x00, 0x01],
        vec![0, 0, 0, 0, 0, 0, 0, 1, 7],
        vec![0x80, 2, 0, 6, 0, 0, 0, 4, 0, 0, 0, 1],
    ] {
        let (mut conn, mut client) = connection(&quick());
        client.io.write_all(&bytes).await.unwrap();
        let all = client.rest().await;
        assert!(
            matches!(
                all.last(),
                Some(Frame::Control(ControlFrame::GoAway {
                    status: goaway::PROTOCOL_ERROR,
                    ..
                }))
            ),
            "{bytes:?}: {all:?}"
        );
        assert!(conn.accept().await.is_none());
    }
}

#[tokio::test]
async fn a_slow_reader_holds_the_peer_back_and_loses_nothing() {
    let (mut conn, mut client) = connection(&quick());
    client.open(1, &[]).await;
    client.open(3, &[]).await;
    client.expect_reply(1).await;
    client.expect_reply(3).await;
    let mut slow = conn.accept().await.unwrap();
    let ignored = conn.accept().await.unwrap();
    drop(ignored);
    let sent: Vec<u8> = (0..1_000_000u32).map(|i| (i % 253) as u8).collect();
    let (mut rd, mut wr) = tokio::io::split(client.io);
    // The ignored stream's data is dropped without holding anything up.
    let junk = encode_data(3, 0, &vec![1u8; 300_000]).unwrap();
    tokio::time::timeout(Duration::from_secs(5), wr.write_all(&junk))
        .await
        .expect("data for a dropped stream is discarded")
        .unwrap();
    let payload = sent.clone();
    let writer = tokio::spawn(async move {
        for piece in payload.chunks(100_000) {
            wr.write_all(&encode_data(1, 0, piece).unwrap())
                .await
                .unwrap();
        }
        wr.write_all(&encode_data(1, flags::FIN, &[]).unwrap())
            .await
            .unwrap();
        wr
    });
    // Nobody reads: the connection stops reading once the stream's buffer
    // is full, and the pipe (16 KiB) stops the writer.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !writer.is_finished(),
        "a megabyte went into a {} byte buffer",
        armlet_streams::spdy::STREAM_BUFFER
    );
    let mut got = Vec::new();
    let mut chunk = vec![0u8; 4096];
    loop {
        let n = slow.read(&mut chunk).await.unwrap();
        if n == 0 {
            break;
        }
        got.extend_from_slice(&chunk[..n]);
    }
    assert!(got == sent, "the data differs");
    let _wr = writer.await.unwrap();
    // FIN for the dropped stream came back meanwhile.
    let mut back = vec![0u8; 4096];
    let n = rd.read(&mut back).await.unwrap();
    assert_eq!(frames(&back[..n]), [data(3, true, b"")]);
}

#[tokio::test]
async fn writes_wait_for_a_peer_that_does_not_read() {
    let (mut conn, mut client) = connection(&quick());
    client.open(1, &[]).await;
    client.expect_reply(1).await;
    let mut stream = conn.accept().await.unwrap();
    let sent: Vec<u8> = (0..3_000_000u32).map(|i| (i % 249) as u8).collect();
    let payload = sent.clone();
    let written = Arc::new(AtomicBool::new(false));
    let done = Arc::clone(&written);
    let writer = tokio::spawn(async move {
        stream.write_all(&payload).await.unwrap();
        // Queued, not necessarily sent: the queue must not take it all.
        done.store(true, Ordering::SeqCst);
        stream.shutdown().await.unwrap();
        stream
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !written.load(Ordering::SeqCst),
        "3 MB queued for a peer that reads nothing"
    );
    let mut got = Vec::new();
    loop {
        match client.next().await {
            Some(Frame::Data {
                stream_id: 1,
                flags: f,
                data,
            }) => {
                assert!(data.len() <= 32 * 1024);
                got.extend_from_slice(&data);
                if f & flags::FIN != 0 {
                    break;
                }
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(got == sent, "the data differs");
    drop(writer.await.unwrap());
}

#[tokio::test]
async fn absurd_timeouts_do_not_panic() {
    let config = Config {
        stream_creation_timeout: Duration::MAX,
        idle_timeout: Some(Duration::MAX),
        linger: Duration::from_millis(100),
        ..Config::default()
    };
    let request =
        ExecRequest::exec(&spdy_headers(&["v4.channel.k8s.io"]), Some("output=1")).unwrap();
    let (server, client) = tokio::io::duplex(64 * 1024);
    let mut client = Client::new(client);
    client.open(1, &[("streamtype", "error")]).await;
    client.open(3, &[("streamtype", "stdout")]).await;
    let session = request.accept(server, Vec::new(), &config).await.unwrap();
    session.finish(ExitStatus::Code(0)).await.unwrap();
    let all = client.rest().await;
    assert_eq!(
        stream_data(&all, 1),
        (br#"{"metadata":{},"status":"Success"}"#.to_vec(), true)
    );
}
