//! Asking one name server: UDP first, TCP for answers that came back
//! truncated.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hash, Hasher};
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::message::{Message, Name, RCODE_NOERROR, RCODE_NXDOMAIN};

/// One question to send, with its ID and wire form kept for resending.
pub(crate) struct Query {
    pub(crate) name: Name,
    pub(crate) qtype: u16,
    pub(crate) id: u16,
    pub(crate) wire: Vec<u8>,
}

impl Query {
    pub(crate) fn new(name: &Name, qtype: u16, id: u16) -> Self {
        Self {
            name: name.clone(),
            qtype,
            id,
            wire: Message::query(id, name, qtype),
        }
    }
}

/// Why a server gave no usable answer to a query.
#[derive(Debug)]
pub(crate) enum Failure {
    /// No answer in time.
    Timeout,
    /// A socket error, e.g. connection refused (nobody listens there).
    Io(io::Error),
    /// An answer with an error code other than NXDOMAIN (SERVFAIL, REFUSED...).
    Rcode(u8),
    /// An answer to our query that could not be decoded.
    Malformed(&'static str),
}

impl Failure {
    fn from_io(e: io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Self::Timeout,
            _ => Self::Io(e),
        }
    }

    /// Whether the server actually said something; such a failure tells more
    /// than a silent one and is the one worth reporting.
    pub(crate) fn is_answer(&self) -> bool {
        matches!(self, Self::Rcode(_) | Self::Malformed(_))
    }
}

/// An accepted answer (NOERROR or NXDOMAIN), or why there is none.
pub(crate) type Outcome = Result<Message, Failure>;

/// A query ID that an off-path attacker cannot guess, without a rand crate:
/// std's `RandomState` is keyed from the OS's random source once per thread
/// and changes on every call; time, a counter and a stack address are mixed
/// in so that two IDs never come from identical input.
pub(crate) fn query_id() -> u16 {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let mut hasher = RandomState::new().build_hasher();
    COUNTER.fetch_add(1, Ordering::Relaxed).hash(&mut hasher);
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
        .hash(&mut hasher);
    let local = 0u8;
    (&raw const local as usize).hash(&mut hasher);
    hasher.finish() as u16
}

/// Sends every query to `server` and waits up to `timeout` for the answers.
/// The queries go out together on one UDP socket, like glibc's parallel A and
/// AAAA lookups, so a lookup costs one round trip. Returns one outcome per
/// query, in order.
pub(crate) fn exchange(server: SocketAddr, queries: &[&Query], timeout: Duration) -> Vec<Outcome> {
    let mut results: Vec<Option<Outcome>> = queries.iter().map(|_| None).collect();
    let mut use_tcp = vec![false; queries.len()];
    let socket_error = exchange_udp(server, queries, timeout, &mut results, &mut use_tcp).err();
    results
        .into_iter()
        .zip(use_tcp)
        .zip(queries)
        .map(|((result, tcp), query)| match result {
            Some(outcome) => outcome,
            None if tcp => exchange_tcp(server, query, timeout),
            None => Err(match &socket_error {
                Some(e) => Failure::from_io(copy_error(e)),
                None => Failure::Timeout,
            }),
        })
        .collect()
}

/// `io::Error` is not `Clone`; one socket error is reported for each query.
fn copy_error(e: &io::Error) -> io::Error {
    match e.raw_os_error() {
        Some(code) => io::Error::from_raw_os_error(code),
        None => io::Error::new(e.kind(), e.to_string()),
    }
}

/// The time left until `deadline`, `None` once it has passed. Never zero:
/// a zero read timeout is an error for std's sockets.
fn time_left(deadline: Instant) -> Option<Duration> {
    deadline
        .checked_duration_since(Instant::now())
        .filter(|left| !left.is_zero())
}

fn deadline_after(timeout: Duration) -> Instant {
    let now = Instant::now();
    // An absurd timeout must not overflow; a day is "forever" here.
    now.checked_add(timeout)
        .or_else(|| now.checked_add(Duration::from_secs(86_400)))
        .unwrap_or(now)
}

fn exchange_udp(
    server: SocketAddr,
    queries: &[&Query],
    timeout: Duration,
    results: &mut [Option<Outcome>],
    use_tcp: &mut [bool],
) -> io::Result<()> {
    let local = match server {
        SocketAddr::V4(_) => SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
        SocketAddr::V6(_) => SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)),
    };
    // A fresh socket per server gets a fresh random source port, and
    // connect() makes the kernel drop datagrams from any other address and
    // report "port unreachable" as ConnectionRefused, as glibc's is.
    let socket = UdpSocket::bind(local)?;
    socket.connect(server)?;
    for query in queries {
        socket.send(&query.wire)?;
    }
    let deadline = deadline_after(timeout);
    // Without EDNS answers should fit in 512 bytes, but a bigger datagram
    // must not be cut short and then misread.
    let mut buf = vec![0u8; 65_535];
    while results
        .iter()
        .zip(use_tcp.iter())
        .any(|(r, tcp)| r.is_none() && !tcp)
    {
        let Some(left) = time_left(deadline) else {
            return Ok(());
        };
        socket.set_read_timeout(Some(left))?;
        let len = match socket.recv(&mut buf) {
            Ok(len) => len,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let packet = buf.get(..len).unwrap_or_default();
        // Anything that is not an answer to a query still waiting (garbage,
        // a wrong ID, another question, a duplicate) is dropped and we keep
        // waiting: it may be a spoofing attempt racing the real answer.
        let Ok(head) = Message::decode_head(packet) else {
            continue;
        };
        let waiting = queries
            .iter()
            .zip(results.iter_mut().zip(use_tcp.iter_mut()))
            .find(|(query, (result, tcp))| result.is_none() && !**tcp && answers(&head, query));
        let Some((_, (result, tcp))) = waiting else {
            continue;
        };
        if head.truncated() {
            *tcp = true;
        } else {
            *result = Some(accept(packet, &head));
        }
    }
    Ok(())
}

/// The checks glibc makes before believing an answer: our ID, the QR bit,
/// a standard query, and the same single question (error answers may omit
/// the question, which some servers do for REFUSED or FORMERR).
fn answers(head: &Message, query: &Query) -> bool {
    let same_question = match head.questions.as_slice() {
        [q] => {
            q.name == query.name && q.qtype == query.qtype && q.qclass == crate::message::CLASS_IN
        }
        [] => !matches!(head.rcode(), RCODE_NOERROR | RCODE_NXDOMAIN),
        _ => false,
    };
    head.id == query.id && head.is_response() && head.opcode() == 0 && same_question
}

/// Turns an answer to our query into an outcome: NOERROR and NXDOMAIN are
/// final, other codes mean "ask another server".
fn accept(packet: &[u8], head: &Message) -> Outcome {
    match head.rcode() {
        RCODE_NOERROR | RCODE_NXDOMAIN => {
            Message::decode(packet).map_err(|m| Failure::Malformed(m.0))
        }
        rcode => Err(Failure::Rcode(rcode)),
    }
}

/// DNS over TCP (RFC 1035 4.2.2): each message prefixed by its length.
fn exchange_tcp(server: SocketAddr, query: &Query, timeout: Duration) -> Outcome {
    let deadline = deadline_after(timeout);
    let mut stream = TcpStream::connect_timeout(&server, timeout).map_err(Failure::from_io)?;
    let len = u16::try_from(query.wire.len()).map_err(|_| Failure::Malformed("query too long"))?;
    let mut out = Vec::with_capacity(query.wire.len() + 2);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&query.wire);
    stream
        .set_write_timeout(Some(time_left(deadline).ok_or(Failure::Timeout)?))
        .map_err(Failure::from_io)?;
    stream.write_all(&out).map_err(Failure::from_io)?;
    let mut len = [0u8; 2];
    read_full(&mut stream, &mut len, deadline)?;
    let mut packet = vec![0u8; usize::from(u16::from_be_bytes(len))];
    read_full(&mut stream, &mut packet, deadline)?;
    let head = Message::decode_head(&packet).map_err(|m| Failure::Malformed(m.0))?;
    if !answers(&head, query) {
        return Err(Failure::Malformed("TCP answer does not match the query"));
    }
    accept(&packet, &head)
}

/// `read_exact` with an overall deadline rather than one per read call.
fn read_full(stream: &mut TcpStream, buf: &mut [u8], deadline: Instant) -> Result<(), Failure> {
    let mut filled = 0;
    while let Some(rest) = buf.get_mut(filled..).filter(|rest| !rest.is_empty()) {
        let left = time_left(deadline).ok_or(Failure::Timeout)?;
        stream
            .set_read_timeout(Some(left))
            .map_err(Failure::from_io)?;
        match stream.read(rest) {
            Ok(0) => return Err(Failure::Malformed("server closed the TCP connection early")),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Failure::from_io(e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_ids_vary() {
        let ids: std::collections::HashSet<u16> = (0..200).map(|_| query_id()).collect();
        // 200 draws from 65536 values: collisions are possible, a handful at most.
        assert!(ids.len() > 180, "only {} distinct IDs", ids.len());
    }

    #[test]
    fn deadline_never_overflows() {
        assert!(deadline_after(Duration::MAX) > Instant::now());
        assert!(time_left(Instant::now()).is_none());
    }
}
