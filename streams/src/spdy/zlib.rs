//! SPDY/3 header compression: every header block of a connection, in one
//! direction, is a piece of a single zlib stream that starts with SPDY's
//! preset dictionary, each piece ended by a sync flush.
//!
//! Inflating: miniz_oxide (already in the agent through flate2's
//! `rust_backend`) has no preset-dictionary API, and flate2's `zlib-rs`
//! backend would switch every gzip user in the agent to a second, larger
//! inflater. A preset dictionary is nothing but history the first block may
//! point back into, so [`HeaderInflater`] parses the zlib header itself and
//! runs miniz_oxide's core inflater on a 32 KiB wrapping window whose first
//! bytes are the dictionary: back-references into it resolve as zlib's would.
//!
//! Deflating: [`HeaderDeflater`] writes stored (uncompressed) deflate blocks
//! behind a zlib header that names the dictionary. A server's header blocks
//! are tiny (every SYN_REPLY carries none), so compressing them would save a
//! few bytes for a compressor's worth of code. Each piece ends with an empty
//! stored block, the marker zlib's sync flush writes, and that is not
//! optional: Go's flate reader hands out a stored block's bytes only once it
//! has read the next block's header, and spdystream parses each header block
//! as it arrives (without the marker kubectl 1.20 read the first reply, then
//! failed on the second). The marker also ends the frame, so Go's reader,
//! which insists on consuming a frame's whole header block, takes exactly
//! the frame's bytes. Checked end to end with kubectl 1.20
//! (`devserver/tests/exec.rs`) and once with CPython's zlib
//! (`tests/fixtures/README.md`).

use miniz_oxide::inflate::TINFLStatus;
use miniz_oxide::inflate::core::inflate_flags::TINFL_FLAG_HAS_MORE_INPUT;
use miniz_oxide::inflate::core::{DecompressorOxide, decompress};

/// Why a header block could not be inflated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ZlibError {
    /// The first two bytes are not a zlib header (method 8, window ≤ 32 KiB,
    /// check bits right).
    #[error("not a zlib header: {0:#06x}")]
    BadHeader(u16),
    /// The stream asks for a preset dictionary other than SPDY/3's.
    #[error("zlib stream wants dictionary {0:#010x}, not SPDY/3's")]
    UnknownDictionary(u32),
    /// The deflate data is invalid.
    #[error("corrupt deflate data in a header block")]
    Corrupt,
    /// A header block inflates to more than the caller allows.
    #[error("header block inflates to more than {0} bytes")]
    TooLarge(usize),
    /// Data came after the stream's final block.
    #[error("header data after the end of the zlib stream")]
    Ended,
}

/// The words of SPDY/3's dictionary (draft-mbelshe-httpbis-spdy-00,
/// §2.6.10.1), each stored behind its length as a 4-byte big-endian number.
const WORDS: [&str; 65] = [
    "options",
    "head",
    "post",
    "put",
    "delete",
    "trace",
    "accept",
    "accept-charset",
    "accept-encoding",
    "accept-language",
    "accept-ranges",
    "age",
    "allow",
    "authorization",
    "cache-control",
    "connection",
    "content-base",
    "content-encoding",
    "content-language",
    "content-length",
    "content-location",
    "content-md5",
    "content-range",
    "content-type",
    "date",
    "etag",
    "expect",
    "expires",
    "from",
    "host",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-range",
    "if-unmodified-since",
    "last-modified",
    "location",
    "max-forwards",
    "pragma",
    "proxy-authenticate",
    "proxy-authorization",
    "range",
    "referer",
    "retry-after",
    "server",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "user-agent",
    "vary",
    "via",
    "warning",
    "www-authenticate",
    "method",
    "get",
    "status",
    "200 OK",
    "version",
    "HTTP/1.1",
    "url",
    "public",
    "set-cookie",
    "keep-alive",
    "origin",
];

/// The dictionary's tail: status codes, reasons, dates and common values,
/// without length prefixes.
const TAIL: &str = concat!(
    "100101201202205206300302303304305306307402405406407408409410411412413414",
    "415416417502504505203 Non-Authoritative Information204 No Content",
    "301 Moved Permanently400 Bad Request401 Unauthorized403 Forbidden",
    "404 Not Found500 Internal Server Error501 Not Implemented",
    "503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec",
    " 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT",
    "chunked,text/html,image/png,image/jpg,image/gif,application/xml,",
    "application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age=",
    "gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
);

/// The dictionary's length in bytes.
pub const DICTIONARY_LEN: usize = 1423;

/// SPDY/3's zlib dictionary, built at compile time from the spec's words and
/// tail (the build fails if the length is not the spec's).
pub const DICTIONARY: [u8; DICTIONARY_LEN] = build_dictionary();

/// The dictionary's Adler-32, which a zlib header with FDICT names.
pub const DICTIONARY_ID: u32 = adler32(&DICTIONARY);

const fn build_dictionary() -> [u8; DICTIONARY_LEN] {
    let mut out = [0u8; DICTIONARY_LEN];
    let mut at = 0;
    let mut w = 0;
    while w < WORDS.len() {
        let word = WORDS[w].as_bytes();
        let len = (word.len() as u32).to_be_bytes();
        let mut i = 0;
        while i < 4 {
            out[at] = len[i];
            at += 1;
            i += 1;
        }
        let mut i = 0;
        while i < word.len() {
            out[at] = word[i];
            at += 1;
            i += 1;
        }
        w += 1;
    }
    let tail = TAIL.as_bytes();
    let mut i = 0;
    while i < tail.len() {
        out[at] = tail[i];
        at += 1;
        i += 1;
    }
    assert!(at == DICTIONARY_LEN, "SPDY/3 dictionary length");
    out
}

/// Adler-32 (RFC 1950 §9), for the dictionary id.
const fn adler32(data: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    let mut i = 0;
    while i < data.len() {
        a = (a + data[i] as u32) % 65521;
        b = (b + a) % 65521;
        i += 1;
    }
    (b << 16) | a
}

/// The inflater's window: deflate's largest distance, a power of two as
/// miniz_oxide's wrapping mode requires.
const WINDOW: usize = 32 * 1024;

/// Where the inflater is in the zlib stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Reading the 2-byte header, then the 4-byte dictionary id if FDICT.
    Header,
    /// Inflating deflate blocks.
    Body,
    /// The final block has been read: nothing more may come.
    Ended,
}

/// The receiving side of one connection's header compression.
pub struct HeaderInflater {
    inflater: Box<DecompressorOxide>,
    /// Output history, the dictionary first.
    window: Box<[u8]>,
    /// Where the next output byte goes in `window`.
    pos: usize,
    phase: Phase,
    /// Header bytes so far (they may in principle straddle header blocks).
    header: [u8; 6],
    header_len: usize,
}

impl Default for HeaderInflater {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for HeaderInflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeaderInflater")
            .field("phase", &self.phase)
            .finish_non_exhaustive()
    }
}

impl HeaderInflater {
    /// A fresh stream with the dictionary as history.
    pub fn new() -> Self {
        let mut window = vec![0u8; WINDOW].into_boxed_slice();
        window[..DICTIONARY_LEN].copy_from_slice(&DICTIONARY);
        Self {
            inflater: Box::default(),
            window,
            pos: DICTIONARY_LEN,
            phase: Phase::Header,
            header: [0; 6],
            header_len: 0,
        }
    }

    /// Inflates one header block (the next piece of the stream) and appends
    /// the output to `out`, failing once `out` would exceed `limit` bytes.
    /// After an error the stream is unusable: the caller ends the connection.
    pub fn inflate(
        &mut self,
        mut input: &[u8],
        limit: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), ZlibError> {
        if self.phase == Phase::Header {
            input = self.read_header(input)?;
        }
        if input.is_empty() {
            return Ok(());
        }
        if self.phase == Phase::Ended {
            return Err(ZlibError::Ended);
        }
        loop {
            let (status, used, produced) = decompress(
                &mut self.inflater,
                input,
                &mut self.window,
                self.pos,
                TINFL_FLAG_HAS_MORE_INPUT,
            );
            input = input.get(used..).unwrap_or_default();
            if out.len() + produced > limit {
                return Err(ZlibError::TooLarge(limit));
            }
            let end = self.pos + produced;
            out.extend_from_slice(self.window.get(self.pos..end).ok_or(ZlibError::Corrupt)?);
            self.pos = end & (WINDOW - 1);
            match status {
                TINFLStatus::HasMoreOutput => {}
                TINFLStatus::NeedsMoreInput if input.is_empty() => return Ok(()),
                // Input left yet more wanted: only sane if it moved forward.
                TINFLStatus::NeedsMoreInput if used > 0 || produced > 0 => {}
                TINFLStatus::Done => {
                    // Only the Adler-32 trailer may follow a final block.
                    self.phase = Phase::Ended;
                    return if input.len() <= 4 {
                        Ok(())
                    } else {
                        Err(ZlibError::Ended)
                    };
                }
                _ => return Err(ZlibError::Corrupt),
            }
        }
    }

    /// Consumes header bytes from `input`, returning the rest.
    fn read_header<'a>(&mut self, mut input: &'a [u8]) -> Result<&'a [u8], ZlibError> {
        while self.phase == Phase::Header {
            let Some((&byte, rest)) = input.split_first() else {
                return Ok(input);
            };
            self.header[self.header_len] = byte;
            self.header_len += 1;
            input = rest;
            if self.header_len == 2 {
                let (cmf, flg) = (self.header[0], self.header[1]);
                let word = u16::from_be_bytes([cmf, flg]);
                if cmf & 0x0f != 8 || cmf >> 4 > 7 || word % 31 != 0 {
                    return Err(ZlibError::BadHeader(word));
                }
                if flg & 0x20 == 0 {
                    // No dictionary: the preloaded history is never referred
                    // to by a valid stream, so it does no harm.
                    self.phase = Phase::Body;
                }
            } else if self.header_len == 6 {
                let id = u32::from_be_bytes([
                    self.header[2],
                    self.header[3],
                    self.header[4],
                    self.header[5],
                ]);
                if id != DICTIONARY_ID {
                    return Err(ZlibError::UnknownDictionary(id));
                }
                self.phase = Phase::Body;
            }
        }
        Ok(input)
    }
}

/// The sending side of one connection's header compression: stored blocks
/// behind a zlib header naming the dictionary (see the module's notes).
#[derive(Debug, Default)]
pub struct HeaderDeflater {
    started: bool,
}

/// The zlib header: deflate with a 32 KiB window (0x78), FDICT set, level
/// "fastest" (0), check bits making the pair a multiple of 31.
const ZLIB_HEADER: [u8; 2] = [0x78, 0x20];

impl HeaderDeflater {
    /// A fresh stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends `block` to `out` as the next piece of the stream, ended as a
    /// sync flush ends it.
    pub fn deflate(&mut self, block: &[u8], out: &mut Vec<u8>) {
        if !self.started {
            self.started = true;
            out.extend_from_slice(&ZLIB_HEADER);
            out.extend_from_slice(&DICTIONARY_ID.to_be_bytes());
        }
        for chunk in block.chunks(usize::from(u16::MAX)) {
            stored_block(chunk, out);
        }
        // The sync-flush marker (see the module's notes).
        stored_block(&[], out);
    }
}

/// A non-final stored block: BFINAL 0 and BTYPE 00 padded to the byte (one
/// zero byte), LEN and its complement little-endian, the bytes.
fn stored_block(bytes: &[u8], out: &mut Vec<u8>) {
    let len = bytes.len() as u16;
    out.push(0);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&(!len).to_le_bytes());
    out.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dictionary_is_the_one_go_and_kubectl_use() {
        assert_eq!(DICTIONARY.len(), 1423);
        // The id kubectl 1.20's first SYN_STREAM names (78 f9 e3 c6 a7 c2 in
        // tests/fixtures/kubectl-1.20-exec.bin).
        assert_eq!(DICTIONARY_ID, 0xe3c6_a7c2);
        assert_eq!(&DICTIONARY[..11], b"\0\0\0\x07options");
        assert!(DICTIONARY.ends_with(b"utf-,*,enq=0."));
    }

    #[test]
    fn zlib_header_is_valid() {
        assert_eq!(u16::from_be_bytes(ZLIB_HEADER) % 31, 0);
        assert_ne!(ZLIB_HEADER[1] & 0x20, 0);
    }

    #[test]
    fn stored_blocks_golden_bytes() {
        let mut d = HeaderDeflater::new();
        let mut out = Vec::new();
        d.deflate(&[0, 0, 0, 0], &mut out);
        assert_eq!(
            out,
            [
                0x78, 0x20, 0xe3, 0xc6, 0xa7, 0xc2, // header, dictionary id
                0x00, 0x04, 0x00, 0xfb, 0xff, 0, 0, 0, 0, // stored block
                0x00, 0x00, 0x00, 0xff, 0xff, // sync-flush marker
            ]
        );
        out.clear();
        d.deflate(b"ab", &mut out);
        assert_eq!(
            out,
            [
                0x00, 0x02, 0x00, 0xfd, 0xff, b'a', b'b', 0, 0, 0, 0xff, 0xff
            ]
        );
        out.clear();
        d.deflate(b"", &mut out);
        assert_eq!(out, [0, 0, 0, 0xff, 0xff]);
    }

    #[test]
    fn round_trip_across_blocks_and_window_wraps() {
        let mut d = HeaderDeflater::new();
        let mut i = HeaderInflater::new();
        // Over 32 KiB in all, so the window wraps; one piece over 64 KiB so
        // it takes two stored blocks.
        let pieces: Vec<Vec<u8>> = vec![
            b"streamtype".to_vec(),
            (0..70_000u32).map(|n| (n % 251) as u8).collect(),
            Vec::new(),
            b"requestid".to_vec(),
        ];
        for piece in &pieces {
            let mut wire = Vec::new();
            d.deflate(piece, &mut wire);
            let mut out = Vec::new();
            i.inflate(&wire, 100_000, &mut out).unwrap();
            assert_eq!(&out, piece);
        }
    }

    #[test]
    fn inflates_a_stream_split_anywhere() {
        let mut d = HeaderDeflater::new();
        let mut wire = Vec::new();
        d.deflate(b"hello, header", &mut wire);
        for cut in 0..wire.len() {
            let mut i = HeaderInflater::new();
            let mut out = Vec::new();
            i.inflate(&wire[..cut], 100, &mut out).unwrap();
            i.inflate(&wire[cut..], 100, &mut out).unwrap();
            assert_eq!(out, b"hello, header", "cut at {cut}");
        }
    }

    #[test]
    fn rejects_bad_headers_and_dictionaries() {
        let mut out = Vec::new();
        assert_eq!(
            HeaderInflater::new().inflate(&[0x78, 0x21], 10, &mut out),
            Err(ZlibError::BadHeader(0x7821))
        );
        // Method 15 with valid check bits.
        assert!(matches!(
            HeaderInflater::new().inflate(&[0x7f, 0x14], 10, &mut out),
            Err(ZlibError::BadHeader(_))
        ));
        assert_eq!(
            HeaderInflater::new().inflate(&[0x78, 0xbb, 0, 0, 0, 1], 10, &mut out),
            Err(ZlibError::UnknownDictionary(1))
        );
    }

    #[test]
    fn caps_output_and_rejects_garbage() {
        let mut d = HeaderDeflater::new();
        let mut wire = Vec::new();
        d.deflate(&[7u8; 1000], &mut wire);
        let mut out = Vec::new();
        assert_eq!(
            HeaderInflater::new().inflate(&wire, 999, &mut out),
            Err(ZlibError::TooLarge(999))
        );
        // Block type 3 is reserved.
        let mut out = Vec::new();
        assert_eq!(
            HeaderInflater::new().inflate(&[0x78, 0x01, 0x07, 0, 0], 100, &mut out),
            Err(ZlibError::Corrupt)
        );
        // A stored block whose NLEN does not match.
        let mut out = Vec::new();
        assert_eq!(
            HeaderInflater::new().inflate(&[0x78, 0x01, 0, 1, 0, 0, 0, 9], 100, &mut out),
            Err(ZlibError::Corrupt)
        );
    }

    #[test]
    fn final_block_ends_the_stream() {
        // 78 01, a final stored block "x", Adler-32.
        let mut wire = vec![0x78, 0x01, 0x01, 1, 0, 0xfe, 0xff, b'x'];
        wire.extend_from_slice(&adler32(b"x").to_be_bytes());
        let mut i = HeaderInflater::new();
        let mut out = Vec::new();
        i.inflate(&wire, 10, &mut out).unwrap();
        assert_eq!(out, b"x");
        assert_eq!(i.inflate(&[0], 10, &mut out), Err(ZlibError::Ended));
    }
}
