//! A small synchronous netlink socket shared by rtnetlink (`link.rs`) and
//! nf_tables (`nft.rs`): framing, sequence numbers, acknowledgements and the
//! kernel's extended error messages.
//!
//! A netlink socket stays bound to the network namespace of the thread that
//! created it, so callers open one per operation, on the thread that is in the
//! namespace they mean to change.

use std::io;

use netlink_sys::{Socket, SocketAddr};

/// `struct nlmsghdr` is 16 bytes: length, type, flags, sequence, port.
pub(crate) const HEADER_LEN: usize = 16;
pub(crate) const NLMSG_ERROR: u16 = 2;
pub(crate) const NLMSG_DONE: u16 = 3;
pub(crate) const NLM_F_REQUEST: u16 = 0x1;
pub(crate) const NLM_F_MULTI: u16 = 0x2;
pub(crate) const NLM_F_ACK: u16 = 0x4;
pub(crate) const NLM_F_DUMP: u16 = 0x300;
/// In an NLMSG_ERROR: the echoed request was cut to its header.
const NLM_F_CAPPED: u16 = 0x100;
/// In an NLMSG_ERROR: extended-ack TLVs follow the echoed request.
const NLM_F_ACK_TLVS: u16 = 0x200;
const NLMSGERR_ATTR_MSG: u16 = 1;

/// Big enough for any datagram the kernel sends: dumps are cut into messages
/// of at most 32 KiB (or a page, if larger).
const RECV_BUF: usize = 256 * 1024;

/// A failed netlink request: the errno and the kernel's explanation, if it
/// gave one (extended ack).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NlError {
    pub errno: i32,
    pub message: Option<String>,
}

impl NlError {
    fn io(err: io::Error) -> Self {
        NlError {
            errno: err.raw_os_error().unwrap_or(libc::EIO),
            message: (err.raw_os_error().is_none()).then(|| err.to_string()),
        }
    }

    fn protocol(message: impl Into<String>) -> Self {
        NlError {
            errno: libc::EPROTO,
            message: Some(message.into()),
        }
    }
}

/// One message of a received datagram.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RawMessage<'a> {
    pub kind: u16,
    pub flags: u16,
    pub seq: u32,
    /// The whole message, header included.
    pub bytes: &'a [u8],
    /// What follows the header.
    pub payload: &'a [u8],
}

/// Splits a datagram into its netlink messages.
pub(crate) fn split(mut buf: &[u8]) -> Result<Vec<RawMessage<'_>>, NlError> {
    let mut out = Vec::new();
    while buf.len() >= HEADER_LEN {
        let len = u32::from_ne_bytes(buf[0..4].try_into().expect("4 bytes")) as usize;
        if len < HEADER_LEN || len > buf.len() {
            return Err(NlError::protocol(format!(
                "netlink message of length {len} in a datagram of {}",
                buf.len()
            )));
        }
        out.push(RawMessage {
            kind: u16::from_ne_bytes([buf[4], buf[5]]),
            flags: u16::from_ne_bytes([buf[6], buf[7]]),
            seq: u32::from_ne_bytes(buf[8..12].try_into().expect("4 bytes")),
            bytes: &buf[..len],
            payload: &buf[HEADER_LEN..len],
        });
        buf = &buf[align(len).min(buf.len())..];
    }
    Ok(out)
}

/// Netlink messages and attributes are aligned on 4 bytes.
pub(crate) const fn align(len: usize) -> usize {
    (len + 3) & !3
}

/// Reads an NLMSG_ERROR payload: `None` for an acknowledgement.
fn parse_error(msg: &RawMessage<'_>) -> Result<Option<NlError>, NlError> {
    let p = msg.payload;
    if p.len() < 4 {
        return Err(NlError::protocol("truncated NLMSG_ERROR"));
    }
    let code = i32::from_ne_bytes(p[0..4].try_into().expect("4 bytes"));
    if code == 0 {
        return Ok(None);
    }
    let mut message = None;
    if msg.flags & NLM_F_ACK_TLVS != 0 && p.len() >= 4 + HEADER_LEN {
        // The echoed request: its header only if capped, else all of it.
        let echoed = if msg.flags & NLM_F_CAPPED != 0 {
            HEADER_LEN
        } else {
            u32::from_ne_bytes(p[4..8].try_into().expect("4 bytes")) as usize
        };
        let tlvs = p.get(4 + align(echoed)..).unwrap_or_default();
        for (kind, value) in attributes(tlvs) {
            if kind == NLMSGERR_ATTR_MSG {
                let text = value.split(|b| *b == 0).next().unwrap_or_default();
                message = Some(String::from_utf8_lossy(text).into_owned());
            }
        }
    }
    Ok(Some(NlError {
        errno: -code,
        message,
    }))
}

/// Iterates over the netlink attributes (type without flag bits, value) in
/// `buf`, stopping at the first malformed one.
pub(crate) fn attributes(mut buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if buf.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([buf[0], buf[1]]) as usize;
        let kind = u16::from_ne_bytes([buf[2], buf[3]]) & 0x3fff;
        if len < 4 || len > buf.len() {
            return None;
        }
        let value = &buf[4..len];
        buf = &buf[align(len).min(buf.len())..];
        Some((kind, value))
    })
}

/// A netlink socket of one protocol, bound in the calling thread's network
/// namespace.
pub(crate) struct NlSocket {
    socket: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl NlSocket {
    /// Opens and binds a socket of `protocol` (a `NETLINK_*` constant).
    pub fn open(protocol: isize) -> io::Result<Self> {
        let mut socket = Socket::new(protocol)?;
        socket.bind_auto()?;
        // The kernel's explanations ("Device busy", "Chain not found") make
        // far better errors than a bare errno. Old kernels lack it: ignore.
        let _ = socket.set_ext_ack(true);
        Ok(NlSocket {
            socket,
            // Any start will do; 0 is avoided because it looks unset.
            seq: 1,
            buf: Vec::with_capacity(RECV_BUF),
        })
    }

    /// The next sequence number to put in a request.
    pub fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1).max(1);
        self.seq
    }

    /// Sends one datagram (one or more messages) to the kernel.
    pub fn send(&self, bytes: &[u8]) -> Result<(), NlError> {
        let sent = self
            .socket
            .send_to(bytes, &SocketAddr::new(0, 0), 0)
            .map_err(NlError::io)?;
        if sent != bytes.len() {
            return Err(NlError::protocol("netlink request sent partially"));
        }
        Ok(())
    }

    /// Receives one datagram; `None` if `nonblocking` and nothing is queued.
    fn recv(&mut self, nonblocking: bool) -> Result<Option<&[u8]>, NlError> {
        self.buf.clear();
        let flags = if nonblocking { libc::MSG_DONTWAIT } else { 0 };
        let n = loop {
            match self.socket.recv(&mut self.buf, flags) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if nonblocking && e.kind() == io::ErrorKind::WouldBlock => {
                    return Ok(None);
                }
                Err(e) => return Err(NlError::io(e)),
            }
        };
        if n > self.buf.len() {
            return Err(NlError::protocol("netlink datagram truncated"));
        }
        Ok(Some(&self.buf[..n]))
    }

    /// Sends a request with sequence number `seq` (which must carry
    /// NLM_F_ACK, or be a dump) and returns the replies' messages (header
    /// included) once the kernel acknowledged it or ended the dump.
    pub fn request(&mut self, bytes: &[u8], seq: u32) -> Result<Vec<Vec<u8>>, NlError> {
        self.send(bytes)?;
        let mut replies = Vec::new();
        loop {
            let Some(datagram) = self.recv(false)? else {
                continue;
            };
            for msg in split(datagram)? {
                // Replies to an earlier request that gave up early.
                if msg.seq != seq {
                    continue;
                }
                match msg.kind {
                    NLMSG_ERROR => {
                        return match parse_error(&msg)? {
                            Some(err) => Err(err),
                            None => Ok(replies),
                        };
                    }
                    NLMSG_DONE => return Ok(replies),
                    _ => {
                        replies.push(msg.bytes.to_vec());
                        // A plain reply (a single GET) ends here unless an
                        // ack follows; dumps are marked multipart.
                        if msg.flags & NLM_F_MULTI == 0 && bytes_flags(bytes) & NLM_F_ACK == 0 {
                            return Ok(replies);
                        }
                    }
                }
            }
        }
    }

    /// Sends a batch and collects the outcome of every message in it.
    ///
    /// The kernel handles a netlink request inside `sendmsg`, so by the time
    /// `send` returns every acknowledgement and error is queued: drain them
    /// without blocking. Each sequence number in `acked` must be
    /// acknowledged; the first error is returned.
    pub fn batch(&mut self, bytes: &[u8], acked: &[u32]) -> Result<(), NlError> {
        self.send(bytes)?;
        let mut pending: Vec<u32> = acked.to_vec();
        let mut first_error: Option<NlError> = None;
        while let Some(datagram) = self.recv(true)? {
            for msg in split(datagram)? {
                if msg.kind != NLMSG_ERROR {
                    continue;
                }
                pending.retain(|s| *s != msg.seq);
                if let Some(err) = parse_error(&msg)? {
                    first_error.get_or_insert(err);
                }
            }
        }
        if let Some(err) = first_error {
            return Err(err);
        }
        if !pending.is_empty() {
            return Err(NlError::protocol(format!(
                "no acknowledgement for {} message(s) of the batch",
                pending.len()
            )));
        }
        Ok(())
    }
}

fn bytes_flags(request: &[u8]) -> u16 {
    request
        .get(6..8)
        .map(|b| u16::from_ne_bytes([b[0], b[1]]))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(kind: u16, flags: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        let len = HEADER_LEN + payload.len();
        let mut out = Vec::new();
        out.extend_from_slice(&(len as u32).to_ne_bytes());
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(&flags.to_ne_bytes());
        out.extend_from_slice(&seq.to_ne_bytes());
        out.extend_from_slice(&0u32.to_ne_bytes());
        out.extend_from_slice(payload);
        out.resize(align(out.len()), 0);
        out
    }

    #[test]
    fn splits_messages_and_reads_extended_errors() {
        // An error for seq 7 with a capped echo and an NLMSGERR_ATTR_MSG.
        let echoed = message(16, NLM_F_REQUEST, 7, &[]);
        let mut payload = (-libc::EEXIST).to_ne_bytes().to_vec();
        payload.extend_from_slice(&echoed);
        let text = b"File exists here\0";
        payload.extend_from_slice(&((4 + text.len()) as u16).to_ne_bytes());
        payload.extend_from_slice(&NLMSGERR_ATTR_MSG.to_ne_bytes());
        payload.extend_from_slice(text);
        let mut datagram = message(NLMSG_ERROR, NLM_F_CAPPED | NLM_F_ACK_TLVS, 7, &payload);
        datagram.extend(message(NLMSG_ERROR, 0, 8, &0i32.to_ne_bytes()));

        let msgs = split(&datagram).unwrap();
        assert_eq!(msgs.len(), 2);
        assert_eq!(
            parse_error(&msgs[0]).unwrap(),
            Some(NlError {
                errno: libc::EEXIST,
                message: Some("File exists here".into())
            })
        );
        assert_eq!(parse_error(&msgs[1]).unwrap(), None);
    }

    #[test]
    fn rejects_malformed_datagrams() {
        let mut datagram = message(NLMSG_DONE, 0, 1, &[0; 4]);
        datagram[0] = 200; // longer than the datagram
        assert!(split(&datagram).is_err());
        let short = message(NLMSG_ERROR, 0, 1, &[]);
        assert!(parse_error(&split(&short).unwrap()[0]).is_err());
        // Attributes with a bad length end the iteration instead of panicking.
        assert_eq!(attributes(&[2, 0, 1, 0]).count(), 0);
        assert_eq!(attributes(&[9, 0, 1, 0, 1]).count(), 0);
    }
}
