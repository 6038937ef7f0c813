//! End-to-end tests against a fake DNS server on 127.0.0.1.
//!
//! Network rule: every configuration here names its servers explicitly and
//! only loopback test servers (or a closed loopback port), so no test ever
//! sends a packet anywhere else.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::*;
use crate::message::{CLASS_IN, FLAG_QR, FLAG_TC, Message, RData, Record};

/// What the fake server does with one query.
#[derive(Clone)]
enum Reply {
    Records(Vec<Record>),
    Rcode(u8),
    /// Never answers.
    Silent,
    /// Over UDP: a truncated answer holding a bogus address; over TCP: these.
    Truncated(Vec<Record>),
    /// First three forged answers (wrong ID, wrong question, QR bit clear)
    /// with a bogus address, then the real one.
    ForgedFirst(Vec<Record>),
}

type Handler = dyn Fn(&str, u16) -> Reply + Send + Sync;

/// One query the server saw: name, type, and whether it came over TCP.
type Seen = (String, u16, bool);

struct FakeDns {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

const BOGUS: Ipv4Addr = Ipv4Addr::new(6, 6, 6, 6);

fn a(owner: &str, ip: [u8; 4]) -> Record {
    rec(owner, RData::A(Ipv4Addr::from(ip)))
}

fn aaaa(owner: &str, ip: &str) -> Record {
    rec(owner, RData::Aaaa(ip.parse().unwrap()))
}

fn cname(owner: &str, target: &str) -> Record {
    rec(owner, RData::Cname(Name::parse(target).unwrap()))
}

fn rec(owner: &str, data: RData) -> Record {
    Record {
        name: Name::parse(owner).unwrap(),
        class: CLASS_IN,
        ttl: 60,
        data,
    }
}

/// The records of `records` a real server would send for `qtype`: CNAMEs and
/// that type only.
fn answer(query: &Message, qtype: u16, records: &[Record], flags: u16) -> Vec<u8> {
    Message {
        id: query.id,
        flags: FLAG_QR | 0x0180 | flags,
        questions: query.questions.clone(),
        answers: records
            .iter()
            .filter(|r| match r.data {
                RData::A(_) => qtype == TYPE_A,
                RData::Aaaa(_) => qtype == TYPE_AAAA,
                _ => true,
            })
            .cloned()
            .collect(),
    }
    .encode()
}

impl FakeDns {
    fn start(handler: impl Fn(&str, u16) -> Reply + Send + Sync + 'static) -> Self {
        // UDP first on a free port, then TCP on the same port number; if
        // someone else holds that TCP port, start over.
        let (udp, tcp) = (0..50)
            .find_map(|_| {
                let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
                let tcp = TcpListener::bind(udp.local_addr().unwrap()).ok()?;
                Some((udp, tcp))
            })
            .expect("no free UDP+TCP port pair on 127.0.0.1");
        let addr = udp.local_addr().unwrap();
        let handler: Arc<Handler> = Arc::new(handler);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        udp.set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        tcp.set_nonblocking(true).unwrap();
        let udp_thread = {
            let (handler, seen, stop) = (handler.clone(), seen.clone(), stop.clone());
            std::thread::spawn(move || serve_udp(&udp, &*handler, &seen, &stop))
        };
        let tcp_thread = {
            let (seen, stop) = (seen.clone(), stop.clone());
            std::thread::spawn(move || serve_tcp(&tcp, &*handler, &seen, &stop))
        };
        Self {
            addr,
            seen,
            stop,
            threads: vec![udp_thread, tcp_thread],
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// The distinct names asked for, in first-asked order.
    fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for (name, _, _) in self.seen() {
            if !names.contains(&name) {
                names.push(name);
            }
        }
        names
    }

    fn config(&self) -> ResolverConfig {
        ResolverConfig {
            nameservers: vec![self.addr],
            search: Vec::new(),
            ndots: 1,
            timeout: Duration::from_secs(3),
            attempts: 1,
            hosts: HostsFile::default(),
        }
    }

    fn resolver(&self, search: &[&str]) -> Resolver {
        let mut config = self.config();
        config.search = search.iter().map(|s| s.to_string()).collect();
        Resolver::new(config)
    }
}

impl Drop for FakeDns {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

fn decode_query(packet: &[u8]) -> Option<(Message, String, u16)> {
    let query = Message::decode(packet).ok()?;
    let q = query.questions.first()?;
    let (name, qtype) = (q.name.to_text(), q.qtype);
    Some((query, name, qtype))
}

fn serve_udp(socket: &UdpSocket, handler: &Handler, seen: &Mutex<Vec<Seen>>, stop: &AtomicBool) {
    let mut buf = [0u8; 512];
    while !stop.load(Ordering::Relaxed) {
        let Ok((len, peer)) = socket.recv_from(&mut buf) else {
            continue;
        };
        let Some((query, name, qtype)) = decode_query(&buf[..len]) else {
            continue;
        };
        seen.lock().unwrap().push((name.clone(), qtype, false));
        let send = |packet: Vec<u8>| {
            let _ = socket.send_to(&packet, peer);
        };
        match handler(&name, qtype) {
            Reply::Records(records) => send(answer(&query, qtype, &records, 0)),
            Reply::Rcode(rcode) => send(answer(&query, qtype, &[], u16::from(rcode))),
            Reply::Silent => {}
            Reply::Truncated(_) => {
                send(answer(&query, qtype, &[a(&name, BOGUS.octets())], FLAG_TC));
            }
            Reply::ForgedFirst(records) => {
                let bogus = [a(&name, BOGUS.octets()), aaaa(&name, "2001:db8::bad")];
                let mut wrong_id = query.clone();
                wrong_id.id ^= 0x5555;
                send(answer(&wrong_id, qtype, &bogus, 0));
                let mut wrong_question = query.clone();
                wrong_question.questions[0].name = Name::parse("other.test").unwrap();
                send(answer(&wrong_question, qtype, &bogus, 0));
                let mut not_response = answer(&query, qtype, &bogus, 0);
                not_response[2] &= 0x7F; // clear QR
                send(not_response);
                send(answer(&query, qtype, &records, 0));
            }
        }
    }
}

fn serve_tcp(
    listener: &TcpListener,
    handler: &Handler,
    seen: &Mutex<Vec<Seen>>,
    stop: &AtomicBool,
) {
    while !stop.load(Ordering::Relaxed) {
        let Ok((stream, _)) = listener.accept() else {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        };
        let _ = serve_tcp_client(stream, handler, seen);
    }
}

fn serve_tcp_client(
    mut stream: TcpStream,
    handler: &Handler,
    seen: &Mutex<Vec<Seen>>,
) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut len = [0u8; 2];
    stream.read_exact(&mut len)?;
    let mut packet = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut packet)?;
    let Some((query, name, qtype)) = decode_query(&packet) else {
        return Ok(());
    };
    seen.lock().unwrap().push((name.clone(), qtype, true));
    let reply = match handler(&name, qtype) {
        Reply::Truncated(records) | Reply::Records(records) => answer(&query, qtype, &records, 0),
        _ => return Ok(()),
    };
    let mut out = u16::try_from(reply.len()).unwrap().to_be_bytes().to_vec();
    out.extend_from_slice(&reply);
    stream.write_all(&out)
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// A resolver with no server at all: any attempt to use DNS fails with
/// NoNameservers, so a success proves no query was made.
fn offline(hosts: &str) -> Resolver {
    Resolver::new(ResolverConfig {
        nameservers: Vec::new(),
        hosts: HostsFile::parse(hosts),
        ..ResolverConfig::default()
    })
}

#[test]
fn ip_literals_need_no_query() {
    let r = offline("");
    assert_eq!(r.lookup("192.0.2.1").unwrap(), vec![ip("192.0.2.1")]);
    assert_eq!(r.lookup("2001:db8::1").unwrap(), vec![ip("2001:db8::1")]);
    assert_eq!(r.lookup("[::1]").unwrap(), vec![ip("::1")]);
    assert!(matches!(
        r.lookup("[192.0.2.1]"),
        Err(ResolveError::InvalidName { .. })
    ));
    assert!(matches!(
        r.lookup("nas.lan"),
        Err(ResolveError::NoNameservers { .. })
    ));
}

#[test]
fn localhost_without_hosts_entry() {
    let r = offline("");
    let loopback = vec![ip("127.0.0.1"), ip("::1")];
    assert_eq!(r.lookup("localhost").unwrap(), loopback);
    assert_eq!(r.lookup("LocalHost.").unwrap(), loopback);
    // A hosts entry for localhost is honoured, like glibc.
    assert_eq!(
        offline("127.0.1.1 localhost\n")
            .lookup("localhost")
            .unwrap(),
        vec![ip("127.0.1.1")]
    );
}

#[test]
fn hosts_file_before_dns_ipv4_first_deduplicated() {
    let r = offline("fd00::5 nas\n10.0.0.5 nas.lan nas\n10.0.0.5 nas\n10.0.0.6 NAS\n");
    assert_eq!(
        r.lookup("nas").unwrap(),
        vec![ip("10.0.0.5"), ip("10.0.0.6"), ip("fd00::5")]
    );
    let server = FakeDns::start(|_, _| Reply::Records(vec![a("nas", [9, 9, 9, 9])]));
    let mut config = server.config();
    config.hosts = HostsFile::parse("10.0.0.5 nas\n");
    assert_eq!(
        Resolver::new(config).lookup("nas").unwrap(),
        vec![ip("10.0.0.5")]
    );
    assert!(server.seen().is_empty());
}

#[test]
fn invalid_names_are_rejected_before_any_query() {
    let server = FakeDns::start(|_, _| Reply::Rcode(RCODE_NXDOMAIN));
    let r = server.resolver(&[]);
    for (bad, reason) in [
        ("", NameError::Empty),
        ("a..b", NameError::EmptyLabel),
        (&*"x".repeat(64), NameError::LabelTooLong),
        (&*["y"; 128].join("."), NameError::NameTooLong),
        ("bad name", NameError::BadChar(' ')),
        ("ex%mple.com", NameError::BadChar('%')),
    ] {
        match r.lookup(bad) {
            Err(ResolveError::InvalidName { name, reason: got }) => {
                assert_eq!((name.as_str(), got), (bad, reason));
            }
            other => panic!("{bad:?}: {other:?}"),
        }
    }
    assert!(server.seen().is_empty());
}

#[test]
fn a_and_aaaa_ipv4_first() {
    let server = FakeDns::start(|name, _| match name {
        "dual.test" => Reply::Records(vec![
            aaaa("dual.test", "2001:db8::1"),
            a("dual.test", [192, 0, 2, 2]),
            a("dual.test", [192, 0, 2, 1]),
            a("dual.test", [192, 0, 2, 2]),
        ]),
        "v6only.test" => Reply::Records(vec![aaaa("v6only.test", "2001:db8::6")]),
        _ => Reply::Rcode(RCODE_NXDOMAIN),
    });
    let r = server.resolver(&[]);
    assert_eq!(
        r.lookup("Dual.Test").unwrap(),
        vec![ip("192.0.2.2"), ip("192.0.2.1"), ip("2001:db8::1")]
    );
    assert_eq!(r.lookup("v6only.test").unwrap(), vec![ip("2001:db8::6")]);
    let mut types: Vec<u16> = server.seen().iter().map(|s| s.1).collect();
    types.sort_unstable();
    assert_eq!(types, vec![TYPE_A, TYPE_A, TYPE_AAAA, TYPE_AAAA]);
    assert_eq!(
        r.lookup_socket_addrs("dual.test", 6443).unwrap()[0],
        "192.0.2.2:6443".parse().unwrap()
    );
}

#[test]
fn cname_chain_followed() {
    let server = FakeDns::start(|name, _| match name {
        "www.test" => Reply::Records(vec![
            cname("www.test", "edge.cdn.test"),
            cname("edge.cdn.test", "node7.cdn.test"),
            a("node7.cdn.test", [198, 51, 100, 7]),
            a("unrelated.test", [6, 6, 6, 6]),
        ]),
        _ => Reply::Rcode(RCODE_NXDOMAIN),
    });
    assert_eq!(
        server.resolver(&[]).lookup("www.test").unwrap(),
        vec![ip("198.51.100.7")]
    );
}

fn nxdomain_except(found: &'static str) -> impl Fn(&str, u16) -> Reply + Send + Sync {
    move |name, _| {
        if name == found {
            Reply::Records(vec![a(found, [10, 0, 0, 1])])
        } else {
            Reply::Rcode(RCODE_NXDOMAIN)
        }
    }
}

#[test]
fn search_list_order_for_short_names() {
    let server = FakeDns::start(nxdomain_except("host"));
    let r = server.resolver(&["a.test", "b.test."]);
    assert_eq!(r.lookup("host").unwrap(), vec![ip("10.0.0.1")]);
    assert_eq!(server.names(), vec!["host.a.test", "host.b.test", "host"]);
}

#[test]
fn search_list_order_for_names_with_enough_dots() {
    let server = FakeDns::start(nxdomain_except("db.x.b.test"));
    let r = server.resolver(&["a.test", "b.test"]);
    assert_eq!(r.lookup("db.x").unwrap(), vec![ip("10.0.0.1")]);
    assert_eq!(server.names(), vec!["db.x", "db.x.a.test", "db.x.b.test"]);
}

#[test]
fn ndots_decides_the_first_candidate() {
    let server = FakeDns::start(|_, _| Reply::Rcode(RCODE_NXDOMAIN));
    let mut config = server.config();
    config.search = vec!["lan".into()];
    config.ndots = 2;
    let err = Resolver::new(config).lookup("db.x").unwrap_err();
    assert!(
        matches!(err, ResolveError::NotFound { ref host } if host == "db.x"),
        "{err}"
    );
    assert_eq!(server.names(), vec!["db.x.lan", "db.x"]);
}

#[test]
fn absolute_names_skip_the_search_list() {
    let server = FakeDns::start(|_, _| Reply::Rcode(RCODE_NXDOMAIN));
    let err = server.resolver(&["a.test"]).lookup("host.").unwrap_err();
    assert_eq!(err.to_string(), "host \"host.\" not found");
    assert_eq!(server.names(), vec!["host"]);
}

#[test]
fn servfail_moves_on_but_refused_stops_the_search() {
    let server = FakeDns::start(|name, _| match name {
        "h.a.test" => Reply::Rcode(RCODE_SERVFAIL),
        "h.b.test" => Reply::Records(vec![a("h.b.test", [10, 2, 2, 2])]),
        _ => Reply::Rcode(RCODE_NXDOMAIN),
    });
    assert_eq!(
        server.resolver(&["a.test", "b.test"]).lookup("h").unwrap(),
        vec![ip("10.2.2.2")]
    );

    let server = FakeDns::start(|name, _| match name {
        "h.a.test" => Reply::Rcode(5),
        "h.b.test" => Reply::Records(vec![a("h.b.test", [10, 2, 2, 2])]),
        _ => Reply::Rcode(RCODE_NXDOMAIN),
    });
    let err = server
        .resolver(&["a.test", "b.test"])
        .lookup("h")
        .unwrap_err();
    assert!(
        matches!(err, ResolveError::ServerFailure { rcode: 5, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("REFUSED"), "{err}");
    // glibc still tries the name as-is after a search domain failed hard.
    assert_eq!(server.names(), vec!["h.a.test", "h"]);
}

#[test]
fn servfail_everywhere_is_reported() {
    let server = FakeDns::start(|_, _| Reply::Rcode(RCODE_SERVFAIL));
    let err = server.resolver(&["a.test"]).lookup("h").unwrap_err();
    assert!(
        matches!(err, ResolveError::ServerFailure { rcode: 2, .. }),
        "{err}"
    );
}

#[test]
fn forged_answers_are_ignored() {
    let server = FakeDns::start(|name, _| Reply::ForgedFirst(vec![a(name, [10, 3, 3, 3])]));
    assert_eq!(
        server.resolver(&[]).lookup("real.test").unwrap(),
        vec![ip("10.3.3.3")]
    );
}

#[test]
fn truncated_answer_retried_over_tcp() {
    let server = FakeDns::start(|name, _| {
        Reply::Truncated(vec![a(name, [10, 4, 4, 4]), aaaa(name, "2001:db8::44")])
    });
    assert_eq!(
        server.resolver(&[]).lookup("big.test").unwrap(),
        vec![ip("10.4.4.4"), ip("2001:db8::44")]
    );
    let seen = server.seen();
    for qtype in [TYPE_A, TYPE_AAAA] {
        assert!(
            seen.contains(&("big.test".into(), qtype, false)),
            "{seen:?}"
        );
        assert!(seen.contains(&("big.test".into(), qtype, true)), "{seen:?}");
    }
}

#[test]
fn silent_server_times_out() {
    let server = FakeDns::start(|_, _| Reply::Silent);
    let mut config = server.config();
    config.timeout = Duration::from_millis(100);
    config.attempts = 2;
    let started = Instant::now();
    let err = Resolver::new(config).lookup("quiet.test").unwrap_err();
    let elapsed = started.elapsed();
    match &err {
        ResolveError::Timeout { host, servers } => {
            assert_eq!(host, "quiet.test");
            assert_eq!(servers, &vec![server.addr]);
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains(&server.addr.to_string()), "{err}");
    // Two tries of 100 ms, A and AAAA in parallel.
    assert!(elapsed >= Duration::from_millis(200), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
    // Both tries were made, each asking A and AAAA.
    assert_eq!(server.seen().len(), 4);
}

#[test]
fn dead_server_skipped_for_the_next_one() {
    // A loopback port nobody listens on: the kernel answers "port
    // unreachable", seen as connection refused, so no timeout is waited.
    let dead = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let server = FakeDns::start(|name, _| Reply::Records(vec![a(name, [10, 5, 5, 5])]));
    let mut config = server.config();
    config.nameservers = vec![dead, server.addr];
    config.timeout = Duration::from_secs(5);
    let started = Instant::now();
    assert_eq!(
        Resolver::new(config.clone()).lookup("up.test").unwrap(),
        vec![ip("10.5.5.5")]
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );

    config.nameservers = vec![dead];
    let err = Resolver::new(config).lookup("up.test").unwrap_err();
    assert!(matches!(err, ResolveError::Io { .. }), "{err}");
}

#[test]
fn ipv6_loopback_server() {
    // Skipped where the sandbox has no IPv6 loopback.
    let Ok(udp) = UdpSocket::bind("[::1]:0") else {
        return;
    };
    let addr = udp.local_addr().unwrap();
    let thread = std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        udp.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        for _ in 0..2 {
            let Ok((len, peer)) = udp.recv_from(&mut buf) else {
                return;
            };
            let (query, name, qtype) = decode_query(&buf[..len]).unwrap();
            let reply = answer(&query, qtype, &[aaaa(&name, "2001:db8::66")], 0);
            udp.send_to(&reply, peer).unwrap();
        }
    });
    let r = Resolver::new(ResolverConfig {
        nameservers: vec![addr],
        attempts: 1,
        ..ResolverConfig::default()
    });
    assert_eq!(r.lookup("six.test.").unwrap(), vec![ip("2001:db8::66")]);
    thread.join().unwrap();
}
