//! The remotedialer message codec: one message per binary websocket message,
//!
//! ```text
//! varint(id) varint(connID) varint(type) [varint(deadline) if Data or Connect] payload
//! ```
//!
//! with Go's `binary.PutVarint` (zig-zag, then LEB128, at most 10 bytes).
//! The payload runs to the end of the websocket message. `Connect` carries
//! `<proto>/<address>`; `Error` carries the error text (`EOF` = a graceful
//! close). Types this side does not know (the newer Pause, Resume,
//! SyncConnections, or anything later) decode with no deadline and their
//! bytes as payload, as remotedialer v0.2.0 reads them, so a session can
//! ignore them.

/// Longest `Connect` payload accepted: current remotedialer reads at most 266
/// bytes (`tcp/` + a 255-byte host name + `:65535` and a little slack). v0.2.0
/// read 100; longer addresses are refused rather than cut.
pub const MAX_CONNECT_PAYLOAD: usize = 266;

/// The longest Go varint: 10 bytes for 64 bits.
const MAX_VARINT_LEN: usize = 10;

/// Why bytes are not a remotedialer message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The message ended inside a varint (or before one).
    #[error("truncated remotedialer message: {0} missing")]
    Truncated(&'static str),
    /// A varint longer than 64 bits (Go: "varint overflows a 64-bit integer").
    #[error("varint overflows a 64-bit integer")]
    Overflow,
    /// A `Connect` payload longer than [`MAX_CONNECT_PAYLOAD`].
    #[error("connect address is {0} bytes, more than {MAX_CONNECT_PAYLOAD}")]
    ConnectTooLong(usize),
    /// A `Connect` payload that is not `<proto>/<address>`.
    #[error("failed to parse connect address")]
    BadConnect,
}

/// A message type. The numbers are remotedialer's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// 1: bytes for a connection.
    Data,
    /// 2: open a connection to `<proto>/<address>`.
    Connect,
    /// 3: a connection ended; the payload is the reason (`EOF` = graceful).
    Error,
    /// 4: peer-to-peer client announcement (not used between agent and server).
    AddClient,
    /// 5: peer-to-peer client removal (not used between agent and server).
    RemoveClient,
    /// Anything else (6 Pause, 7 Resume, 8 SyncConnections in newer versions):
    /// to be ignored.
    Other(i64),
}

impl Kind {
    /// The wire number.
    pub fn number(self) -> i64 {
        match self {
            Self::Data => 1,
            Self::Connect => 2,
            Self::Error => 3,
            Self::AddClient => 4,
            Self::RemoveClient => 5,
            Self::Other(n) => n,
        }
    }

    /// The type for a wire number.
    pub fn from_number(n: i64) -> Self {
        match n {
            1 => Self::Data,
            2 => Self::Connect,
            3 => Self::Error,
            4 => Self::AddClient,
            5 => Self::RemoveClient,
            n => Self::Other(n),
        }
    }

    /// Whether a deadline varint follows the type.
    fn has_deadline(self) -> bool {
        matches!(self, Self::Data | Self::Connect)
    }
}

/// One remotedialer message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The message id (remotedialer counts up from a random start; nothing
    /// reads it back).
    pub id: i64,
    /// The connection it is about.
    pub conn_id: i64,
    /// Its type.
    pub kind: Kind,
    /// Milliseconds: the dial timeout of a `Connect`, the sender's write
    /// deadline of a `Data` (0 = none). Present only for those two types.
    pub deadline: Option<i64>,
    /// Everything after the header.
    pub payload: Vec<u8>,
}

impl Message {
    /// A `Data` message (deadline 0, as current remotedialer sends).
    pub fn data(id: i64, conn_id: i64, payload: Vec<u8>) -> Self {
        Self {
            id,
            conn_id,
            kind: Kind::Data,
            deadline: Some(0),
            payload,
        }
    }

    /// A `Connect` message for `target` (`<proto>/<address>`) with a dial
    /// timeout in milliseconds.
    pub fn connect(id: i64, conn_id: i64, deadline_ms: i64, target: &str) -> Self {
        Self {
            id,
            conn_id,
            kind: Kind::Connect,
            deadline: Some(deadline_ms),
            payload: target.as_bytes().to_vec(),
        }
    }

    /// An `Error` message with a reason (`EOF` for a graceful close).
    pub fn error(id: i64, conn_id: i64, reason: &str) -> Self {
        Self {
            id,
            conn_id,
            kind: Kind::Error,
            deadline: None,
            payload: reason.as_bytes().to_vec(),
        }
    }

    /// The bytes of the message.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(3 * MAX_VARINT_LEN + 10 + self.payload.len());
        put_varint(&mut out, self.id);
        put_varint(&mut out, self.conn_id);
        put_varint(&mut out, self.kind.number());
        if self.kind.has_deadline() {
            put_varint(&mut out, self.deadline.unwrap_or(0));
        }
        out.extend_from_slice(&self.payload);
        out
    }

    /// Reads one message. A `Connect` must be `<proto>/<address>` of at
    /// most [`MAX_CONNECT_PAYLOAD`] bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, FrameError> {
        let mut rest = bytes;
        let id = read_varint(&mut rest, "id")?;
        let conn_id = read_varint(&mut rest, "connection id")?;
        let kind = Kind::from_number(read_varint(&mut rest, "type")?);
        let deadline = if kind.has_deadline() {
            Some(read_varint(&mut rest, "deadline")?)
        } else {
            None
        };
        if kind == Kind::Connect {
            if rest.len() > MAX_CONNECT_PAYLOAD {
                return Err(FrameError::ConnectTooLong(rest.len()));
            }
            if !rest.contains(&b'/') {
                return Err(FrameError::BadConnect);
            }
        }
        Ok(Self {
            id,
            conn_id,
            kind,
            deadline,
            payload: rest.to_vec(),
        })
    }

    /// A `Connect`'s protocol and address (`tcp`, `127.0.0.1:10250`).
    pub fn target(&self) -> Result<(&str, &str), FrameError> {
        std::str::from_utf8(&self.payload)
            .ok()
            .and_then(|text| text.split_once('/'))
            .ok_or(FrameError::BadConnect)
    }

    /// The payload as text (an `Error`'s reason), lossily.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }
}

/// Go's `binary.PutVarint`: zig-zag, then unsigned LEB128.
pub fn put_varint(out: &mut Vec<u8>, value: i64) {
    // Zig-zag as Go writes it: `ux := uint64(x) << 1; if x < 0 { ux = ^ux }`.
    let mut ux = (value as u64) << 1;
    if value < 0 {
        ux = !ux;
    }
    while ux >= 0x80 {
        out.push((ux as u8) | 0x80);
        ux >>= 7;
    }
    out.push(ux as u8);
}

/// Go's `binary.ReadVarint` over a slice, advancing it. Fails on a varint
/// that does not end, and, as Go does, on one longer than 10 bytes or whose
/// 10th byte carries more than the 64th bit.
pub fn read_varint(input: &mut &[u8], what: &'static str) -> Result<i64, FrameError> {
    let mut ux: u64 = 0;
    let mut shift = 0u32;
    for (i, &byte) in input.iter().enumerate() {
        if i == MAX_VARINT_LEN {
            return Err(FrameError::Overflow);
        }
        if byte < 0x80 {
            if i == MAX_VARINT_LEN - 1 && byte > 1 {
                return Err(FrameError::Overflow);
            }
            ux |= u64::from(byte) << shift;
            *input = &input[i + 1..];
            let mut x = (ux >> 1) as i64;
            if ux & 1 != 0 {
                x = !x;
            }
            return Ok(x);
        }
        ux |= u64::from(byte & 0x7f) << shift;
        shift += 7;
    }
    if input.len() >= MAX_VARINT_LEN {
        return Err(FrameError::Overflow);
    }
    Err(FrameError::Truncated(what))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    }

    /// The frames a real K3s v1.21.2 server exchanged with a probe
    /// (`recorded-k3s-v1.21/ws_probe.txt`; the Data frame's raw bytes were
    /// cut there, so its payload is the recorded prefix).
    const CONNECT: &str = "888c95ccec86bffd090404b0ea017463702f3132372e302e302e313a3130323530";
    const SENT_ERROR: &str =
        "9ca0f2d9efa53e040670726f62653a207265667573696e6720636f6e6e656374696f6e";
    const DATA: &str = "8a8c95ccec86bffd0904020016030100fe010000fa0303851141c0774a9c76f43f3417082f35ab9de65dd3eb415c1b0621b8911208b3ec202a5220a93dbc517c";
    const ECHOED_ERROR: &str =
        "8c8c95ccec86bffd09040670726f62653a207265667573696e6720636f6e6e656374696f6e";

    #[test]
    fn recorded_connect_decodes_and_reencodes_byte_for_byte() {
        let raw = hex(CONNECT);
        let m = Message::decode(&raw).unwrap();
        assert_eq!(m.id, 359582201379201796);
        assert_eq!(m.conn_id, 2);
        assert_eq!(m.kind, Kind::Connect);
        assert_eq!(m.deadline, Some(15000));
        assert_eq!(m.payload, b"tcp/127.0.0.1:10250");
        assert_eq!(m.target().unwrap(), ("tcp", "127.0.0.1:10250"));
        assert_eq!(m.encode(), raw);
        assert_eq!(
            Message::connect(359582201379201796, 2, 15000, "tcp/127.0.0.1:10250").encode(),
            raw
        );
    }

    #[test]
    fn recorded_error_and_data_frames() {
        let sent = Message::decode(&hex(SENT_ERROR)).unwrap();
        assert_eq!(sent.conn_id, 2);
        assert_eq!(sent.kind, Kind::Error);
        assert_eq!(sent.deadline, None);
        assert_eq!(sent.text(), "probe: refusing connection");
        assert_eq!(
            Message::error(sent.id, 2, "probe: refusing connection").encode(),
            hex(SENT_ERROR)
        );

        let data = Message::decode(&hex(DATA)).unwrap();
        assert_eq!(data.id, 359582201379201797);
        assert_eq!(
            (data.conn_id, data.kind, data.deadline),
            (2, Kind::Data, Some(0))
        );
        // A TLS ClientHello: the server's TLS to the kubelet, through the tunnel.
        assert_eq!(&data.payload[..3], &[0x16, 0x03, 0x01]);
        assert_eq!(
            Message::data(data.id, 2, data.payload.clone()).encode(),
            hex(DATA)
        );

        let echoed = Message::decode(&hex(ECHOED_ERROR)).unwrap();
        assert_eq!(echoed.id, 359582201379201798);
        assert_eq!(echoed.text(), "probe: refusing connection");
        assert_eq!(echoed.encode(), hex(ECHOED_ERROR));
    }

    #[test]
    fn varints_are_gos() {
        // Values from Go's binary.PutVarint.
        let cases: &[(i64, &[u8])] = &[
            (0, &[0x00]),
            (1, &[0x02]),
            (-1, &[0x01]),
            (63, &[0x7e]),
            (-64, &[0x7f]),
            (64, &[0x80, 0x01]),
            (15000, &[0xb0, 0xea, 0x01]),
            (
                i64::MAX,
                &[0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
            ),
            (
                i64::MIN,
                &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
            ),
        ];
        for (value, bytes) in cases {
            let mut out = Vec::new();
            put_varint(&mut out, *value);
            assert_eq!(out, *bytes, "{value}");
            let mut slice = *bytes;
            assert_eq!(read_varint(&mut slice, "x").unwrap(), *value);
            assert!(slice.is_empty());
        }
        // Go's overflow rules: an 11th byte, or a 10th byte above 1.
        let mut long: &[u8] = &[0xff; 11];
        assert_eq!(read_varint(&mut long, "x"), Err(FrameError::Overflow));
        let mut big: &[u8] = &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02];
        assert_eq!(read_varint(&mut big, "x"), Err(FrameError::Overflow));
        let mut cut: &[u8] = &[0x80, 0x80];
        assert_eq!(read_varint(&mut cut, "x"), Err(FrameError::Truncated("x")));
    }

    #[test]
    fn connect_payload_is_capped_and_must_name_a_protocol() {
        let ok = format!("tcp/{}", "a".repeat(MAX_CONNECT_PAYLOAD - 4));
        assert!(Message::decode(&Message::connect(1, 1, 15000, &ok).encode()).is_ok());
        let long = format!("tcp/{}", "a".repeat(MAX_CONNECT_PAYLOAD - 3));
        assert_eq!(
            Message::decode(&Message::connect(1, 1, 15000, &long).encode()),
            Err(FrameError::ConnectTooLong(MAX_CONNECT_PAYLOAD + 1))
        );
        assert_eq!(
            Message::decode(&Message::connect(1, 1, 15000, "127.0.0.1:10250").encode()),
            Err(FrameError::BadConnect)
        );
    }

    #[test]
    fn unknown_types_keep_their_bytes_and_have_no_deadline() {
        let mut raw = Vec::new();
        put_varint(&mut raw, 7);
        put_varint(&mut raw, 0);
        put_varint(&mut raw, 8);
        raw.extend_from_slice(b"\x04\x06");
        let m = Message::decode(&raw).unwrap();
        assert_eq!(m.kind, Kind::Other(8));
        assert_eq!(m.deadline, None);
        assert_eq!(m.payload, b"\x04\x06");
        assert_eq!(m.encode(), raw);
    }

    #[test]
    fn random_and_truncated_input_never_panics() {
        // A small xorshift: deterministic, no dependency.
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..20_000 {
            let len = (next() % 48) as usize;
            let bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            let _ = Message::decode(&bytes);
        }
        for fixture in [CONNECT, SENT_ERROR, DATA, ECHOED_ERROR] {
            let raw = hex(fixture);
            for cut in 0..raw.len() {
                if let Ok(m) = Message::decode(&raw[..cut]) {
                    // Whatever decodes re-encodes to the same bytes.
                    assert_eq!(m.encode(), &raw[..cut]);
                }
            }
            for flip in 0..raw.len() {
                let mut bad = raw.clone();
                bad[flip] ^= 0xa5;
                let _ = Message::decode(&bad);
            }
        }
    }
}
