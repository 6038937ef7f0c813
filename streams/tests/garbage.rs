//! Whatever a peer sends, the connection neither panics nor hangs: valid
//! frames, kubectl's real ones, and random corruptions of both, from a
//! small deterministic generator (a stand-in for a fuzzer that runs in
//! every test run). Its own test binary: it counts panics process-wide.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use armlet_streams::Config;
use armlet_streams::spdy::Connection;
use armlet_streams::spdy::frame::{ControlFrame, Headers, encode_data, flags};
use armlet_streams::spdy::zlib::HeaderDeflater;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const KUBECTL: &[&[u8]] = &[
    include_bytes!("fixtures/kubectl-1.20-exec.bin"),
    include_bytes!("fixtures/kubectl-1.20-tty.bin"),
    include_bytes!("fixtures/kubectl-1.20-portforward.bin"),
];

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A client byte stream: well-formed frames, then damage.
fn input(rng: &mut Rng) -> Vec<u8> {
    let mut out = Vec::new();
    if rng.below(3) == 0 {
        out.extend_from_slice(KUBECTL[rng.below(3) as usize]);
    } else {
        let mut d = HeaderDeflater::new();
        let mut id = 1u32;
        for _ in 0..rng.below(12) {
            match rng.below(6) {
                0 | 1 => {
                    let mut headers = Headers::new();
                    headers.push(
                        "streamtype",
                        ["error", "stdin", "data"][rng.below(3) as usize],
                    );
                    headers.push("port", "80");
                    out.extend(
                        ControlFrame::SynStream {
                            stream_id: id,
                            associated_to: 0,
                            priority: 0,
                            slot: 0,
                            flags: (rng.below(4)) as u8,
                            headers,
                        }
                        .encode(&mut d),
                    );
                    id += 2;
                }
                2 | 3 => {
                    let len = rng.below(100_000) as usize;
                    let stream = (rng.below(u64::from(id)) as u32) | 1;
                    let f = if rng.below(2) == 0 { flags::FIN } else { 0 };
                    out.extend(encode_data(stream, f, &vec![7u8; len]).unwrap_or_default());
                }
                4 => out.extend(
                    ControlFrame::Ping {
                        id: rng.next() as u32,
                    }
                    .encode(&mut d),
                ),
                _ => {
                    // Any control type with any payload.
                    let len = rng.below(40) as usize;
                    out.extend_from_slice(&[0x80, 3, 0, rng.below(12) as u8]);
                    out.push(rng.next() as u8);
                    out.extend_from_slice(&(len as u32).to_be_bytes()[1..]);
                    out.extend((0..len).map(|_| rng.next() as u8));
                }
            }
        }
    }
    for _ in 0..rng.below(6) {
        if out.is_empty() {
            break;
        }
        let at = rng.below(out.len() as u64) as usize;
        match rng.below(3) {
            0 => out[at] = rng.next() as u8,
            1 => out.truncate(at),
            _ => out.insert(at, rng.next() as u8),
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_input_never_panics_or_hangs() {
    let panics = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&panics);
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        counter.fetch_add(1, Ordering::SeqCst);
        default(info);
    }));
    let config = Config {
        stream_creation_timeout: Duration::from_secs(1),
        linger: Duration::from_millis(50),
        max_streams: 8,
        ..Config::default()
    };
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (mut streams, mut failures) = (0, 0);
    for round in 0..400 {
        let bytes = input(&mut rng);
        let (server, mut client) = tokio::io::duplex(8 * 1024);
        let mut conn = Connection::start(server, Vec::new(), &config, |_: &Headers| true);
        // The server side: read every stream to its end, answer on some.
        let serve = tokio::spawn(async move {
            let mut accepted = 0;
            while let Some(mut stream) = conn.accept().await {
                accepted += 1;
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    while let Ok(n) = stream.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        let _ = stream.write_all(&buf[..n.min(10)]).await;
                    }
                });
            }
            let failed = conn.failure().is_some();
            conn.close().await;
            (accepted, failed)
        });
        let exchange = async {
            let (mut rd, mut wr) = tokio::io::split(&mut client);
            let write = async {
                let _ = wr.write_all(&bytes).await;
                let _ = wr.shutdown().await;
            };
            let mut sink = Vec::new();
            let read = rd.read_to_end(&mut sink);
            let _ = tokio::join!(write, read);
        };
        tokio::time::timeout(Duration::from_secs(10), exchange)
            .await
            .unwrap_or_else(|_| panic!("round {round} hung"));
        let (accepted, failed) = tokio::time::timeout(Duration::from_secs(10), serve)
            .await
            .unwrap_or_else(|_| panic!("round {round}: the connection did not end"))
            .unwrap();
        streams += accepted;
        failures += usize::from(failed);
    }
    assert_eq!(panics.load(Ordering::SeqCst), 0);
    // Not vacuous: streams were served, and bad input was caught.
    assert!(streams > 200, "{streams} streams");
    assert!(
        failures > 50 && failures < 400,
        "{failures} failed connections"
    );
}
