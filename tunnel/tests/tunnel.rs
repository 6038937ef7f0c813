//! Client and server against each other over in-memory pipes, and against a
//! raw websocket peer speaking the recorded wire format. Dialled targets are
//! loopback listeners of the test itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use armlet_tunnel::frame::{Kind, Message};
use armlet_tunnel::ws::{self, Role, WebSocket};
use armlet_tunnel::{SessionError, TunnelError, Tunnels, client};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _, DuplexStream};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

const WAIT: Duration = Duration::from_secs(10);

/// A loopback echo server; counts its connections.
async fn echo_server() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let (mut r, mut w) = socket.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    (address, accepted)
}

/// A server registry with one agent session for `node` over a pipe, the
/// agent allowing `allowed` only.
async fn connected(
    tunnels: &Tunnels,
    node: &str,
    allowed: Vec<String>,
) -> (
    JoinHandle<Result<(), TunnelError>>,
    JoinHandle<Result<(), client::ClientError>>,
) {
    let (agent_io, server_io) = tokio::io::duplex(1 << 16);
    let server_ws = WebSocket::from_upgraded(server_io, Role::Server, Vec::new());
    let registry = tunnels.clone();
    let node_name = node.to_owned();
    let server = tokio::spawn(async move { registry.serve(node_name, server_ws).await });
    let agent_ws = WebSocket::from_upgraded(agent_io, Role::Client, Vec::new());
    let agent = tokio::spawn(client::serve(agent_ws, move |address: &str| {
        allowed.iter().any(|a| a == address)
    }));
    let deadline = tokio::time::Instant::now() + WAIT;
    while !tunnels.has(node) {
        assert!(tokio::time::Instant::now() < deadline, "no session");
        tokio::task::yield_now().await;
    }
    (server, agent)
}

#[tokio::test]
async fn bytes_go_both_ways_through_a_dial() {
    let (echo, _) = echo_server().await;
    let tunnels = Tunnels::new();
    let (_server, _agent) = connected(&tunnels, "n1", vec![echo.clone()]).await;
    let mut stream = tunnels.dial("n1", &format!("tcp/{echo}")).unwrap();
    // More than many Data messages and the in-flight budget.
    let sent: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7 + i / 255) as u8).collect();
    let (mut r, mut w) = tokio::io::split(&mut stream);
    let expected = sent.clone();
    let write = async move {
        w.write_all(&sent).await.unwrap();
        w
    };
    let read = async move {
        let mut got = vec![0u8; expected.len()];
        r.read_exact(&mut got).await.unwrap();
        assert!(got == expected, "echo differs");
        r
    };
    let (_w, _r) = tokio::time::timeout(WAIT, async { tokio::join!(write, read) })
        .await
        .unwrap();
}

#[tokio::test]
async fn eof_goes_through_in_both_directions() {
    // A server that greets, then reports how much it read until EOF.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let (report, mut reported) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            let report = report.clone();
            tokio::spawn(async move {
                socket.write_all(b"hello").await.unwrap();
                let mut all = Vec::new();
                let _ = socket.read_to_end(&mut all).await;
                let _ = report.send(all.len());
            });
        }
    });
    let tunnels = Tunnels::new();
    let (_server, _agent) = connected(&tunnels, "n1", vec![address.clone()]).await;

    // Our EOF reaches the far socket as a read of 0, after all the data;
    // what had arrived before can still be read.
    let mut stream = tunnels.dial("n1", &format!("tcp/{address}")).unwrap();
    let mut hello = [0u8; 5];
    stream.read_exact(&mut hello).await.unwrap();
    stream.write_all(&[1u8; 20_000]).await.unwrap();
    stream.shutdown().await.unwrap();
    let got = tokio::time::timeout(WAIT, reported.recv()).await.unwrap();
    assert_eq!(got, Some(20_000));
    let mut rest = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    assert!(stream.write_all(b"more").await.is_err());

    // The far socket's close comes back as our EOF.
    let closer = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closer_address = closer.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let (mut socket, _) = closer.accept().await.unwrap();
        socket.write_all(b"bye").await.unwrap();
    });
    let (_server2, _agent2) = connected(&tunnels, "n2", vec![closer_address.clone()]).await;
    let mut stream = tunnels
        .dial("n2", &format!("tcp/{closer_address}"))
        .unwrap();
    let mut answer = String::new();
    tokio::time::timeout(WAIT, stream.read_to_string(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(answer, "bye");
}

#[tokio::test]
async fn a_refused_dial_reads_as_the_agents_error_text() {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let tunnels = Tunnels::new();
    let (_server, _agent) = connected(&tunnels, "n1", vec![closed.clone()]).await;
    let mut stream = tunnels.dial("n1", &format!("tcp/{closed}")).unwrap();
    let mut buf = [0u8; 16];
    let err = tokio::time::timeout(WAIT, stream.read(&mut buf))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("dial tcp {closed}: connect: connection refused")
    );
}

#[tokio::test]
async fn an_unauthorised_address_fails_that_dial_only() {
    let (echo, accepted) = echo_server().await;
    let (other, other_accepted) = echo_server().await;
    let tunnels = Tunnels::new();
    let (server, agent) = connected(&tunnels, "n1", vec![echo.clone()]).await;
    let mut refused = tunnels.dial("n1", &format!("tcp/{other}")).unwrap();
    let mut buf = [0u8; 4];
    let err = tokio::time::timeout(WAIT, refused.read(&mut buf))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.to_string(), "connect not allowed");
    assert_eq!(other_accepted.load(Ordering::SeqCst), 0);
    // Only tcp is dialled.
    let mut udp = tunnels.dial("n1", &format!("udp/{echo}")).unwrap();
    let err = tokio::time::timeout(WAIT, udp.read(&mut buf))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.to_string(), "connect not allowed");

    // The session goes on.
    assert!(tunnels.has("n1"));
    assert!(!server.is_finished() && !agent.is_finished());
    let mut fine = tunnels.dial("n1", &format!("tcp/{echo}")).unwrap();
    fine.write_all(b"ping").await.unwrap();
    tokio::time::timeout(WAIT, fine.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"ping");
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

/// Echoes 300 000 bytes of `byte` through `stream`, writing and reading at once.
async fn run(stream: &mut armlet_tunnel::TunnelStream, byte: u8) {
    let payload = vec![byte; 300_000];
    let (mut r, mut w) = tokio::io::split(stream);
    let expected = payload.clone();
    let (_, got) = tokio::join!(async { w.write_all(&payload).await.unwrap() }, async {
        let mut got = vec![0u8; expected.len()];
        r.read_exact(&mut got).await.unwrap();
        got
    });
    assert!(got == expected, "mixed up");
}

#[tokio::test]
async fn two_connections_at_once_stay_apart() {
    let (echo, accepted) = echo_server().await;
    let tunnels = Tunnels::new();
    let (_server, _agent) = connected(&tunnels, "n1", vec![echo.clone()]).await;
    let mut a = tunnels.dial("n1", &format!("tcp/{echo}")).unwrap();
    let mut b = tunnels.dial("n1", &format!("tcp/{echo}")).unwrap();
    assert_ne!(a.conn_id(), b.conn_id());
    tokio::time::timeout(WAIT, async {
        tokio::join!(run(&mut a, b'a'), run(&mut b, b'b'))
    })
    .await
    .unwrap();
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
    // Closing one leaves the other working.
    drop(a);
    b.write_all(b"still").await.unwrap();
    let mut five = [0u8; 5];
    tokio::time::timeout(WAIT, b.read_exact(&mut five))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&five, b"still");
}

#[tokio::test]
async fn a_newer_session_replaces_the_older_one() {
    let (echo, _) = echo_server().await;
    let tunnels = Tunnels::new();
    let (old_server, old_agent) = connected(&tunnels, "n1", vec![echo.clone()]).await;
    let mut on_old = tunnels.dial("n1", &format!("tcp/{echo}")).unwrap();
    on_old.write_all(b"x").await.unwrap();
    let mut one = [0u8; 1];
    on_old.read_exact(&mut one).await.unwrap();

    let (_new_server, _new_agent) = connected(&tunnels, "n1", vec![echo.clone()]).await;
    // The old session ends cleanly on both sides; its connection fails.
    tokio::time::timeout(WAIT, old_server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    tokio::time::timeout(WAIT, old_agent)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let err = on_old.read(&mut one).await.unwrap_err();
    assert_eq!(err.to_string(), "tunnel session closed");
    assert!(on_old.write_all(b"y").await.is_err());
    // The registry kept the new one.
    assert!(tunnels.has("n1"));
    let mut on_new = tunnels.dial("n1", &format!("tcp/{echo}")).unwrap();
    on_new.write_all(b"z").await.unwrap();
    tokio::time::timeout(WAIT, on_new.read_exact(&mut one))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&one, b"z");
}

#[tokio::test]
async fn no_session_and_bad_targets_are_errors() {
    let tunnels = Tunnels::new();
    assert!(!tunnels.has("n1"));
    let err = tunnels.dial("n1", "tcp/127.0.0.1:10250").unwrap_err();
    assert_eq!(err.to_string(), "failed to find Session for client n1");
    let (_server, _agent) = connected(&tunnels, "n1", vec![]).await;
    assert!(matches!(
        tunnels.dial("n1", "127.0.0.1:10250"),
        Err(TunnelError::BadTarget(_))
    ));
    let long = format!("tcp/{}", "a".repeat(300));
    assert!(matches!(
        tunnels.dial("n1", &long),
        Err(TunnelError::BadTarget(_))
    ));
}

/// A raw peer: the websocket halves, to send and read remotedialer messages
/// by hand.
struct Raw {
    reader: ws::WsReader<tokio::io::ReadHalf<DuplexStream>>,
    writer: ws::WsWriter<tokio::io::WriteHalf<DuplexStream>>,
}

impl Raw {
    async fn send(&mut self, m: &Message) {
        self.writer.binary(&m.encode()).await.unwrap();
        self.writer.flush().await.unwrap();
    }

    /// The next websocket message, binary ones decoded.
    async fn next(&mut self) -> ws::Message {
        tokio::time::timeout(WAIT, self.reader.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
    }

    async fn next_message(&mut self) -> Message {
        loop {
            match self.next().await {
                ws::Message::Binary(b) => return Message::decode(&b).unwrap(),
                ws::Message::Ping(_) | ws::Message::Pong(_) => {}
                other => panic!("{other:?}"),
            }
        }
    }
}

fn raw(io: DuplexStream, role: Role) -> Raw {
    let (reader, writer) = WebSocket::from_upgraded(io, role, Vec::new()).split();
    Raw { reader, writer }
}

#[tokio::test]
async fn the_server_speaks_the_recorded_wire_format() {
    let tunnels = Tunnels::new();
    let (agent_io, server_io) = tokio::io::duplex(1 << 16);
    let registry = tunnels.clone();
    let server = tokio::spawn(async move {
        registry
            .serve(
                "n1".into(),
                WebSocket::from_upgraded(server_io, Role::Server, Vec::new()),
            )
            .await
    });
    let mut agent = raw(agent_io, Role::Client);
    while !tunnels.has("n1") {
        tokio::task::yield_now().await;
    }

    // Connect: deadline 15000, `tcp/<address>`, as K3s sends it.
    let mut stream = tunnels.dial("n1", "tcp/127.0.0.1:10250").unwrap();
    let connect = agent.next_message().await;
    assert_eq!(connect.kind, Kind::Connect);
    assert_eq!(connect.deadline, Some(15000));
    assert_eq!(connect.payload, b"tcp/127.0.0.1:10250");
    let conn = connect.conn_id;

    // Data both ways; writes are cut into 8192-byte messages.
    agent.send(&Message::data(1, conn, b"hello".to_vec())).await;
    let mut five = [0u8; 5];
    stream.read_exact(&mut five).await.unwrap();
    assert_eq!(&five, b"hello");
    stream.write_all(&vec![9u8; 20_000]).await.unwrap();
    let sizes: Vec<usize> = [
        agent.next_message().await,
        agent.next_message().await,
        agent.next_message().await,
    ]
    .iter()
    .map(|m| {
        assert_eq!((m.kind, m.conn_id, m.deadline), (Kind::Data, conn, Some(0)));
        m.payload.len()
    })
    .collect();
    assert_eq!(sizes, [8192, 8192, 3616]);

    // Data for a connection nobody has: an Error back.
    agent.send(&Message::data(2, 999, b"lost".to_vec())).await;
    let error = agent.next_message().await;
    assert_eq!((error.kind, error.conn_id), (Kind::Error, 999));
    assert_eq!(error.text(), "connection not found 999");

    // Newer types (Pause 6, Resume 7, SyncConnections 8) and AddClient are
    // ignored; a Connect from the agent is refused for its connection only.
    for kind in [4, 6, 7, 8, 42] {
        agent
            .send(&Message {
                id: 3,
                conn_id: conn,
                kind: Kind::from_number(kind),
                deadline: None,
                payload: b"\x02\x04".to_vec(),
            })
            .await;
    }
    agent
        .send(&Message::connect(4, 77, 15000, "tcp/127.0.0.1:22"))
        .await;
    let refused = agent.next_message().await;
    assert_eq!((refused.kind, refused.conn_id), (Kind::Error, 77));

    // Pings are answered with their payload.
    agent.writer.ping(b"are you there").await.unwrap();
    agent.writer.flush().await.unwrap();
    assert_eq!(
        agent.next().await,
        ws::Message::Pong(b"are you there".to_vec())
    );

    // The peer's EOF ends reads; our shutdown is an Error "EOF".
    agent.send(&Message::error(5, conn, "EOF")).await;
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());
    let mut second = tunnels.dial("n1", "tcp/127.0.0.1:10250").unwrap();
    let c2 = agent.next_message().await.conn_id;
    second.shutdown().await.unwrap();
    let eof = agent.next_message().await;
    assert_eq!(
        (eof.kind, eof.conn_id, eof.text().as_str()),
        (Kind::Error, c2, "EOF")
    );

    // The agent going away without a close frame ends the session.
    drop(agent);
    let result = tokio::time::timeout(WAIT, server).await.unwrap().unwrap();
    assert!(matches!(
        result,
        Err(TunnelError::Session(
            SessionError::Eof | SessionError::Ws(_)
        ))
    ));
    assert!(!tunnels.has("n1"));
}

#[tokio::test(start_paused = true)]
async fn the_agent_pings_every_five_seconds_and_silent_sessions_end() {
    // Agent side: pings on its own.
    let (agent_io, server_io) = tokio::io::duplex(1 << 16);
    let agent = tokio::spawn(client::serve(
        WebSocket::from_upgraded(agent_io, Role::Client, Vec::new()),
        |_: &str| false,
    ));
    let mut server = raw(server_io, Role::Server);
    let start = tokio::time::Instant::now();
    for n in 1..=3u64 {
        assert_eq!(server.next().await, ws::Message::Ping(Vec::new()));
        let elapsed = start.elapsed();
        assert!(
            elapsed >= Duration::from_secs(5 * n) && elapsed < Duration::from_secs(5 * n + 1),
            "{elapsed:?}"
        );
    }
    // A server close ends the agent's session cleanly.
    server.writer.close(1000).await.unwrap();
    server.writer.flush().await.unwrap();
    tokio::time::timeout(WAIT, agent)
        .await
        .unwrap()
        .unwrap()
        .unwrap();

    // Server side: a session that hears nothing for a minute is dropped.
    let tunnels = Tunnels::new();
    let (agent_io, server_io) = tokio::io::duplex(1 << 16);
    let _silent_agent = raw(agent_io, Role::Client);
    let result = tunnels
        .serve(
            "n1".into(),
            WebSocket::from_upgraded(server_io, Role::Server, Vec::new()),
        )
        .await;
    assert!(matches!(
        result,
        Err(TunnelError::Session(SessionError::Idle(_)))
    ));
}

#[tokio::test]
async fn a_text_message_ends_the_session() {
    let tunnels = Tunnels::new();
    let (agent_io, server_io) = tokio::io::duplex(1 << 16);
    let registry = tunnels.clone();
    let server = tokio::spawn(async move {
        registry
            .serve(
                "n1".into(),
                WebSocket::from_upgraded(server_io, Role::Server, Vec::new()),
            )
            .await
    });
    // A masked text frame "hi", by hand.
    let mut agent = agent_io;
    agent
        .write_all(&[0x81, 0x82, 0, 0, 0, 0, b'h', b'i'])
        .await
        .unwrap();
    let result = tokio::time::timeout(WAIT, server).await.unwrap().unwrap();
    assert!(matches!(
        result,
        Err(TunnelError::Session(SessionError::TextMessage))
    ));
}
