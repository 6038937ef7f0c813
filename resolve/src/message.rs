//! DNS wire format (RFC 1035): just enough to send A/AAAA queries and read
//! the answers.
//!
//! Everything read from the network goes through [`Reader`] or
//! [`read_name`], which return an error instead of panicking when data runs
//! out, and every offset sum is checked: a hostile or corrupt response must
//! never crash the agent, and `usize` is only 32 bits on armv7.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub(crate) const TYPE_A: u16 = 1;
pub(crate) const TYPE_CNAME: u16 = 5;
pub(crate) const TYPE_AAAA: u16 = 28;
pub(crate) const CLASS_IN: u16 = 1;
pub(crate) const RCODE_NOERROR: u8 = 0;
pub(crate) const RCODE_SERVFAIL: u8 = 2;
pub(crate) const RCODE_NXDOMAIN: u8 = 3;

pub(crate) const FLAG_QR: u16 = 0x8000;
pub(crate) const FLAG_TC: u16 = 0x0200;
const FLAG_RD: u16 = 0x0100;
const HEADER_LEN: usize = 12;
/// RFC 1035 limit on a name in wire form, length bytes and final zero included.
const MAX_NAME_WIRE: usize = 255;
/// A real CNAME chain is a handful of hops; more is a loop or abuse.
const MAX_CNAME_HOPS: usize = 16;

/// Why a host name cannot be looked up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameError {
    /// The name is empty (or just ".").
    #[error("the name is empty")]
    Empty,
    /// Two dots in a row, or a leading dot.
    #[error("the name has an empty label")]
    EmptyLabel,
    /// A label (the part between dots) is longer than 63 bytes.
    #[error("a label is longer than 63 bytes")]
    LabelTooLong,
    /// The whole name is longer than 253 bytes.
    #[error("the name is longer than 253 bytes")]
    NameTooLong,
    /// A character other than ASCII letters, digits, '-' and '_'.
    #[error("the character {0:?} is not allowed in a host name")]
    BadChar(char),
}

/// A response that cannot be decoded; the text says what was wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Malformed(pub(crate) &'static str);

const TRUNCATED: Malformed = Malformed("message ends too early");

/// A domain name in uncompressed wire form, final zero byte included,
/// lower-cased so that `==` is DNS's case-insensitive comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Name(Vec<u8>);

impl Name {
    /// Validates a host name in text form; one trailing dot is allowed.
    pub(crate) fn parse(text: &str) -> Result<Self, NameError> {
        let body = text.strip_suffix('.').unwrap_or(text);
        if body.is_empty() {
            return Err(NameError::Empty);
        }
        if body.len() > 253 {
            return Err(NameError::NameTooLong);
        }
        let mut wire = Vec::with_capacity(body.len() + 2);
        for label in body.split('.') {
            if label.is_empty() {
                return Err(NameError::EmptyLabel);
            }
            if label.len() > 63 {
                return Err(NameError::LabelTooLong);
            }
            // The host name rules (RFC 952/1123) plus '_', which service
            // names use; anything else is a typo or an injection attempt.
            if let Some(c) = label
                .chars()
                .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
            {
                return Err(NameError::BadChar(c));
            }
            wire.push(label.len() as u8);
            wire.extend(label.bytes().map(|b| b.to_ascii_lowercase()));
        }
        wire.push(0);
        Ok(Self(wire))
    }

    /// The name as dotted text, without the trailing dot.
    #[cfg(test)]
    pub(crate) fn to_text(&self) -> String {
        let mut labels = Vec::new();
        let mut rest = self.0.as_slice();
        while let Some((&len, tail)) = rest.split_first() {
            let Some(label) = tail.get(..usize::from(len)) else {
                break;
            };
            if len > 0 {
                labels.push(String::from_utf8_lossy(label).into_owned());
            }
            rest = tail.get(usize::from(len)..).unwrap_or_default();
        }
        labels.join(".")
    }
}

/// One entry of the question section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Question {
    pub(crate) name: Name,
    pub(crate) qtype: u16,
    pub(crate) qclass: u16,
}

/// The data of a resource record; only the types the resolver uses are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RData {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    Cname(Name),
    /// Any other type (or class): skipped, only its type is remembered.
    Other(u16),
}

/// One resource record of the answer section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Record {
    pub(crate) name: Name,
    pub(crate) class: u16,
    pub(crate) ttl: u32,
    pub(crate) data: RData,
}

/// A DNS message. Authority and additional sections are not decoded: an
/// address lookup never needs them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Message {
    pub(crate) id: u16,
    pub(crate) flags: u16,
    pub(crate) questions: Vec<Question>,
    pub(crate) answers: Vec<Record>,
}

/// Bounds-checked cursor over a received message.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        let end = self.pos.checked_add(n).ok_or(TRUNCATED)?;
        let bytes = self.buf.get(self.pos..end).ok_or(TRUNCATED)?;
        self.pos = end;
        Ok(bytes)
    }

    fn u16(&mut self) -> Result<u16, Malformed> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, Malformed> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn name(&mut self) -> Result<Name, Malformed> {
        let (name, end) = read_name(self.buf, self.pos)?;
        self.pos = end;
        Ok(name)
    }
}

/// Reads a possibly compressed name starting at `start`; returns it and the
/// offset just after it in place (after the first pointer, if any).
///
/// Loop protection: each compression pointer must jump strictly before the
/// previous jump target (the first one before `start`). Offsets therefore
/// only shrink and decoding always ends, whatever the message holds; real
/// encoders only point back to earlier names, so nothing valid is refused.
fn read_name(buf: &[u8], start: usize) -> Result<(Name, usize), Malformed> {
    let mut wire = Vec::new();
    let mut pos = start;
    let mut bound = start;
    let mut end = None;
    loop {
        let len = *buf.get(pos).ok_or(TRUNCATED)?;
        let next = pos.checked_add(1).ok_or(TRUNCATED)?;
        match len & 0xC0 {
            0x00 => {
                let label_end = next.checked_add(usize::from(len)).ok_or(TRUNCATED)?;
                let label = buf.get(next..label_end).ok_or(TRUNCATED)?;
                wire.push(len);
                if len == 0 {
                    return Ok((Name(wire), end.unwrap_or(label_end)));
                }
                wire.extend(label.iter().map(u8::to_ascii_lowercase));
                // Keep room for the final zero byte.
                if wire.len() >= MAX_NAME_WIRE {
                    return Err(Malformed("name longer than 255 bytes"));
                }
                pos = label_end;
            }
            0xC0 => {
                let low = *buf.get(next).ok_or(TRUNCATED)?;
                let target = (usize::from(len & 0x3F) << 8) | usize::from(low);
                if target >= bound {
                    return Err(Malformed("compression pointer does not point backwards"));
                }
                if end.is_none() {
                    end = Some(next.checked_add(1).ok_or(TRUNCATED)?);
                }
                bound = target;
                pos = target;
            }
            _ => return Err(Malformed("unsupported label type")),
        }
    }
}

fn put_u16(out: &mut Vec<u8>, value: u16) {
    out.extend_from_slice(&value.to_be_bytes());
}

/// A count for the header; saturates instead of panicking (our own messages
/// never come close to 65535 entries).
fn count(n: usize) -> u16 {
    u16::try_from(n).unwrap_or(u16::MAX)
}

impl Message {
    /// The wire form of a recursive query for `name`/`qtype`, class IN.
    pub(crate) fn query(id: u16, name: &Name, qtype: u16) -> Vec<u8> {
        Self {
            id,
            flags: FLAG_RD,
            questions: vec![Question {
                name: name.clone(),
                qtype,
                qclass: CLASS_IN,
            }],
            answers: Vec::new(),
        }
        .encode()
    }

    /// Encodes the message without compression (a query holds one name, so
    /// compression would gain nothing).
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(512);
        put_u16(&mut out, self.id);
        put_u16(&mut out, self.flags);
        put_u16(&mut out, count(self.questions.len()));
        put_u16(&mut out, count(self.answers.len()));
        put_u16(&mut out, 0);
        put_u16(&mut out, 0);
        for q in &self.questions {
            out.extend_from_slice(&q.name.0);
            put_u16(&mut out, q.qtype);
            put_u16(&mut out, q.qclass);
        }
        for r in &self.answers {
            out.extend_from_slice(&r.name.0);
            let (rtype, rdata): (u16, &[u8]) = match &r.data {
                RData::A(a) => (TYPE_A, &a.octets()),
                RData::Aaaa(a) => (TYPE_AAAA, &a.octets()),
                RData::Cname(n) => (TYPE_CNAME, &n.0),
                RData::Other(t) => (*t, &[]),
            };
            put_u16(&mut out, rtype);
            put_u16(&mut out, r.class);
            out.extend_from_slice(&r.ttl.to_be_bytes());
            put_u16(&mut out, count(rdata.len()));
            out.extend_from_slice(rdata);
        }
        out
    }

    /// Decodes the header and question section only: enough to tell whether
    /// a datagram answers one of our queries before trusting the rest.
    pub(crate) fn decode_head(buf: &[u8]) -> Result<Self, Malformed> {
        Self::decode_sections(buf, false)
    }

    /// Decodes header, questions and answers.
    pub(crate) fn decode(buf: &[u8]) -> Result<Self, Malformed> {
        Self::decode_sections(buf, true)
    }

    fn decode_sections(buf: &[u8], with_answers: bool) -> Result<Self, Malformed> {
        if buf.len() < HEADER_LEN {
            return Err(Malformed("shorter than a DNS header"));
        }
        let mut r = Reader { buf, pos: 0 };
        let id = r.u16()?;
        let flags = r.u16()?;
        let qdcount = r.u16()?;
        let ancount = r.u16()?;
        r.take(4)?; // authority and additional counts: not used
        // No Vec::with_capacity(count): a hostile count must not reserve
        // memory; each entry is at least 5 bytes, so the buffer bounds the loops.
        let mut questions = Vec::new();
        for _ in 0..qdcount {
            questions.push(Question {
                name: r.name()?,
                qtype: r.u16()?,
                qclass: r.u16()?,
            });
        }
        let mut answers = Vec::new();
        if with_answers {
            for _ in 0..ancount {
                answers.push(read_record(&mut r)?);
            }
        }
        Ok(Self {
            id,
            flags,
            questions,
            answers,
        })
    }

    pub(crate) fn is_response(&self) -> bool {
        self.flags & FLAG_QR != 0
    }

    pub(crate) fn opcode(&self) -> u8 {
        ((self.flags >> 11) & 0xF) as u8
    }

    pub(crate) fn truncated(&self) -> bool {
        self.flags & FLAG_TC != 0
    }

    pub(crate) fn rcode(&self) -> u8 {
        (self.flags & 0xF) as u8
    }

    /// The addresses of type `qtype` for `qname`, following CNAMEs inside
    /// the answer section (a recursive server sends the whole chain). Records
    /// for other owners are ignored so that an answer cannot slip in
    /// addresses for names nobody asked about.
    pub(crate) fn addresses(&self, qname: &Name, qtype: u16) -> Vec<IpAddr> {
        let mut target = qname;
        for _ in 0..MAX_CNAME_HOPS {
            let next = self.answers.iter().find_map(|r| match &r.data {
                RData::Cname(alias) if r.class == CLASS_IN && r.name == *target => Some(alias),
                _ => None,
            });
            match next {
                Some(alias) => target = alias,
                None => break,
            }
        }
        self.answers
            .iter()
            .filter(|r| r.class == CLASS_IN && r.name == *target)
            .filter_map(|r| match (&r.data, qtype) {
                (RData::A(a), TYPE_A) => Some(IpAddr::V4(*a)),
                (RData::Aaaa(a), TYPE_AAAA) => Some(IpAddr::V6(*a)),
                _ => None,
            })
            .collect()
    }
}

fn read_record(r: &mut Reader<'_>) -> Result<Record, Malformed> {
    let name = r.name()?;
    let rtype = r.u16()?;
    let class = r.u16()?;
    let ttl = r.u32()?;
    let rdlength = usize::from(r.u16()?);
    let rdata_start = r.pos;
    let rdata = r.take(rdlength)?;
    let data = match (rtype, class) {
        (TYPE_A, CLASS_IN) => RData::A(Ipv4Addr::from(
            <[u8; 4]>::try_from(rdata).map_err(|_| Malformed("A record is not 4 bytes"))?,
        )),
        (TYPE_AAAA, CLASS_IN) => RData::Aaaa(Ipv6Addr::from(
            <[u8; 16]>::try_from(rdata).map_err(|_| Malformed("AAAA record is not 16 bytes"))?,
        )),
        (TYPE_CNAME, CLASS_IN) => {
            // The target may point anywhere earlier in the message, but its
            // in-place part must stay inside this record's data.
            let (alias, end) = read_name(r.buf, rdata_start)?;
            if end != r.pos {
                return Err(Malformed("CNAME target does not fill its record"));
            }
            RData::Cname(alias)
        }
        _ => RData::Other(rtype),
    };
    Ok(Record {
        name,
        class,
        ttl,
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(text: &str) -> Name {
        Name::parse(text).unwrap()
    }

    fn record(owner: &str, data: RData) -> Record {
        Record {
            name: name(owner),
            class: CLASS_IN,
            ttl: 300,
            data,
        }
    }

    /// A response for www.example.com A: a CNAME to web.example.com, its
    /// address, and an unrelated record that must not be picked up.
    fn sample() -> Message {
        Message {
            id: 0x1234,
            flags: FLAG_QR | FLAG_RD | 0x0080,
            questions: vec![Question {
                name: name("www.example.com"),
                qtype: TYPE_A,
                qclass: CLASS_IN,
            }],
            answers: vec![
                record("www.example.com", RData::Cname(name("web.example.com"))),
                record("web.example.com", RData::A(Ipv4Addr::new(192, 0, 2, 7))),
                record("evil.example.net", RData::A(Ipv4Addr::new(203, 0, 113, 9))),
                record(
                    "web.example.com",
                    RData::Aaaa("2001:db8::7".parse().unwrap()),
                ),
            ],
        }
    }

    /// A response using compression: the answer owner points at the
    /// question name, the CNAME target is "web" + a pointer to "example.com".
    fn compressed() -> Vec<u8> {
        let mut m = vec![0xab, 0xcd, 0x81, 0x80, 0, 1, 0, 2, 0, 0, 0, 0];
        m.extend_from_slice(b"\x03www\x07example\x03com\x00\x00\x01\x00\x01");
        // answer 1: CNAME, owner = pointer to offset 12
        m.extend_from_slice(&[0xC0, 12, 0, 5, 0, 1, 0, 0, 0, 60, 0, 6]);
        m.extend_from_slice(b"\x03web\xC0\x10"); // offset 16 = "example.com"
        // answer 2: A, owner = pointer to the CNAME target (offset 45)
        assert_eq!(m.len(), 51);
        m.extend_from_slice(&[0xC0, 45, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 1, 2, 3]);
        m
    }

    #[test]
    fn name_validation() {
        assert_eq!(Name::parse("Example.COM.").unwrap(), name("example.com"));
        assert_eq!(name("a.b").to_text(), "a.b");
        assert_eq!(Name::parse(""), Err(NameError::Empty));
        assert_eq!(Name::parse("."), Err(NameError::Empty));
        assert_eq!(Name::parse("a..b"), Err(NameError::EmptyLabel));
        assert_eq!(Name::parse(".a"), Err(NameError::EmptyLabel));
        assert_eq!(Name::parse(&"x".repeat(64)), Err(NameError::LabelTooLong));
        assert!(Name::parse(&"x".repeat(63)).is_ok());
        let long = [
            "a".repeat(63),
            "b".repeat(63),
            "c".repeat(63),
            "d".repeat(62),
        ]
        .join(".");
        assert_eq!(long.len(), 254);
        assert_eq!(Name::parse(&long), Err(NameError::NameTooLong));
        assert!(Name::parse(&long[1..]).is_ok());
        assert_eq!(Name::parse("a b"), Err(NameError::BadChar(' ')));
        assert_eq!(Name::parse("é.com"), Err(NameError::BadChar('é')));
        assert!(Name::parse("_srv-1.x").is_ok());
    }

    #[test]
    fn query_wire_form() {
        let q = Message::query(0x0102, &name("Ab.c"), TYPE_AAAA);
        assert_eq!(
            q,
            b"\x01\x02\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x02ab\x01c\x00\x00\x1c\x00\x01"
        );
        let back = Message::decode(&q).unwrap();
        assert!(!back.is_response());
        assert_eq!(back.questions[0].qtype, TYPE_AAAA);
    }

    #[test]
    fn encode_decode_round_trip() {
        let m = sample();
        let decoded = Message::decode(&m.encode()).unwrap();
        assert_eq!(decoded, m);
        assert!(decoded.is_response());
        assert_eq!(decoded.rcode(), RCODE_NOERROR);
        assert_eq!(decoded.opcode(), 0);
        assert!(!decoded.truncated());
        let head = Message::decode_head(&m.encode()).unwrap();
        assert_eq!(head.questions, m.questions);
        assert!(head.answers.is_empty());
    }

    #[test]
    fn cname_chain_followed_and_strangers_ignored() {
        let m = sample();
        let www = name("www.example.com");
        assert_eq!(
            m.addresses(&www, TYPE_A),
            vec![IpAddr::from([192, 0, 2, 7])]
        );
        assert_eq!(
            m.addresses(&www, TYPE_AAAA),
            vec!["2001:db8::7".parse::<IpAddr>().unwrap()]
        );
        assert!(m.addresses(&name("other.example.com"), TYPE_A).is_empty());
        // A CNAME loop ends after a bounded number of hops with no answer.
        let mut looped = sample();
        looped.answers = vec![
            record("a.x", RData::Cname(name("b.x"))),
            record("b.x", RData::Cname(name("a.x"))),
        ];
        assert!(looped.addresses(&name("a.x"), TYPE_A).is_empty());
    }

    #[test]
    fn decodes_compression_pointers() {
        let m = Message::decode(&compressed()).unwrap();
        assert_eq!(m.id, 0xabcd);
        assert_eq!(m.answers[0].name, name("www.example.com"));
        assert_eq!(m.answers[0].data, RData::Cname(name("web.example.com")));
        assert_eq!(m.answers[1].name, name("web.example.com"));
        assert_eq!(
            m.addresses(&name("WWW.example.com"), TYPE_A),
            vec![IpAddr::from([10, 1, 2, 3])]
        );
    }

    #[test]
    fn every_truncation_is_an_error() {
        for full in [sample().encode(), compressed()] {
            assert!(Message::decode(&full).is_ok());
            for cut in 0..full.len() {
                assert!(Message::decode(&full[..cut]).is_err(), "cut at {cut}");
            }
        }
    }

    #[test]
    fn pointer_loops_and_bad_pointers_are_errors() {
        let header = [0u8, 1, 0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0];
        let with = |name: &[u8]| {
            let mut m = header.to_vec();
            m.extend_from_slice(name);
            m.extend_from_slice(&[0, 1, 0, 1]);
            m
        };
        // Pointer to itself.
        assert!(Message::decode(&with(&[0xC0, 12])).is_err());
        // Label then a pointer back to the start of the same name.
        assert!(Message::decode(&with(&[1, b'a', 0xC0, 12])).is_err());
        // Pointer past the end of the message.
        assert!(Message::decode(&with(&[0xFF, 0xFF])).is_err());
        // Forward pointer (to the final zero of the question's type field).
        assert!(Message::decode(&with(&[0xC0, 20, 0])).is_err());
        // Reserved label types 0x40 and 0x80.
        assert!(Message::decode(&with(&[0x41, 0])).is_err());
        assert!(Message::decode(&with(&[0x81, 0])).is_err());
        // Two pointers pointing at each other (offsets 12 and 14); the
        // answer owner starts at 14.
        let mut m = header.to_vec();
        m.extend_from_slice(&[0xC0, 14, 0xC0, 12]);
        assert!(read_name(&m, 12).is_err());
        assert!(read_name(&m, 14).is_err());
        // A name longer than 255 bytes made of valid labels, built through
        // backward pointers: each name is 63 bytes of label plus a pointer
        // to the previous one.
        let mut m = header.to_vec();
        let mut starts = vec![m.len()];
        m.push(63);
        m.extend_from_slice(&[b'x'; 63]);
        m.push(0);
        for _ in 0..3 {
            let previous = *starts.last().unwrap();
            starts.push(m.len());
            m.push(63);
            m.extend_from_slice(&[b'y'; 63]);
            m.extend_from_slice(&[0xC0 | (previous >> 8) as u8, previous as u8]);
        }
        let (ok, end) = read_name(&m, starts[2]).unwrap();
        assert_eq!(ok.0.len(), 193);
        assert_eq!(end, starts[3]);
        assert_eq!(
            read_name(&m, starts[3]),
            Err(Malformed("name longer than 255 bytes"))
        );
    }

    #[test]
    fn huge_counts_fail_fast() {
        let mut m = sample().encode();
        m[4..12].copy_from_slice(&[0xFF; 8]);
        assert!(Message::decode(&m).is_err());
        assert!(Message::decode_head(&m).is_err());
        let mut m = sample().encode();
        m[6] = 0xFF; // 65284+ answers announced, 4 present
        assert!(Message::decode(&m).is_err());
    }

    #[test]
    fn bad_record_lengths_are_errors() {
        let mut m = sample();
        m.answers = vec![record("x.y", RData::A(Ipv4Addr::LOCALHOST))];
        let mut wire = m.encode();
        // Announce 3 bytes of rdata instead of 4 and drop one byte.
        let len_at = wire.len() - 6;
        wire[len_at + 1] = 3;
        wire.pop();
        assert_eq!(
            Message::decode(&wire),
            Err(Malformed("A record is not 4 bytes"))
        );
        // A CNAME whose target runs past its rdata.
        m.answers = vec![record("x.y", RData::Cname(name("a.b")))];
        let mut wire = m.encode();
        let len_at = wire.len() - 5 - 2;
        wire[len_at + 1] = 2;
        assert!(Message::decode(&wire).is_err());
    }

    /// Random byte mutations and cuts of valid responses must never panic.
    #[test]
    fn mutated_messages_never_panic() {
        let mut state: u32 = 0x9e37_79b9;
        let mut next = move || {
            // xorshift32: deterministic, so a failure is reproducible.
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state
        };
        let www = name("www.example.com");
        for base in [sample().encode(), compressed()] {
            for _ in 0..20_000 {
                let mut m = base.clone();
                for _ in 0..=(next() % 4) {
                    let at = next() as usize % m.len();
                    m[at] = next() as u8;
                }
                if next() % 4 == 0 {
                    m.truncate(next() as usize % (m.len() + 1));
                }
                let _ = Message::decode_head(&m);
                if let Ok(decoded) = Message::decode(&m) {
                    let _ = decoded.addresses(&www, TYPE_A);
                    let _ = decoded.addresses(&www, TYPE_AAAA);
                }
            }
        }
    }
}
