//! Just enough PEM, DER and X.509 for the join: splitting the server's PEM
//! answers, reading a certificate's names, validity and keys, checking one
//! certificate's signature with another's key (to find the root of a CA
//! bundle, as k3s's `hashCA` does), and writing the PKCS#10 request an agent
//! sends.
//!
//! Hand-written rather than a full X.509 crate: the agent binary must stay
//! small, and these few fields are all it reads. Everything here takes
//! untrusted input and fails with an error, never a panic.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;

/// Why PEM or certificate data could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// The PEM text is broken (unterminated block, bad base64, ...).
    #[error("malformed PEM: {0}")]
    Pem(String),
    /// The DER inside is not a certificate of the expected shape.
    #[error("malformed certificate: {0}")]
    Der(&'static str),
    /// The PEM data holds no `CERTIFICATE` block.
    #[error("no certificate in the PEM data")]
    NoCertificate,
}

// --------------------------------------------------------------------------
// PEM

/// One PEM block: its label (`CERTIFICATE`, `EC PRIVATE KEY`, ...) and DER.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct PemBlock {
    pub label: String,
    pub der: Vec<u8>,
}

impl std::fmt::Debug for PemBlock {
    // The DER may be a private key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PemBlock({}, {} bytes)", self.label, self.der.len())
    }
}

impl PemBlock {
    /// Whether this block holds a private key (any kind), as k3s's
    /// `splitCertKeyPEM` decides: the label contains `PRIVATE KEY`.
    pub fn is_private_key(&self) -> bool {
        self.label.contains("PRIVATE KEY")
    }
}

/// The PEM blocks in `text`, in order. Text between blocks is ignored (as
/// Go's `pem.Decode` does); a block that starts but does not end, or whose
/// body is not base64, is an error.
pub(crate) fn pem_blocks(text: &[u8]) -> Result<Vec<PemBlock>, CertError> {
    let text = String::from_utf8_lossy(text);
    let mut blocks = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let line = line.trim();
        let Some(label) = line
            .strip_prefix("-----BEGIN ")
            .and_then(|l| l.strip_suffix("-----"))
        else {
            continue;
        };
        let end = format!("-----END {label}-----");
        let mut body = String::new();
        let mut ended = false;
        for line in lines.by_ref() {
            let line = line.trim();
            if line == end {
                ended = true;
                break;
            }
            if line.contains(':') {
                // Encrypted keys carry RFC 1421 headers; nothing the join
                // handles is encrypted.
                return Err(CertError::Pem(format!("{label} block has headers")));
            }
            body.push_str(line);
        }
        if !ended {
            return Err(CertError::Pem(format!("{label} block does not end")));
        }
        let der = base64::engine::general_purpose::STANDARD
            .decode(body.as_bytes())
            .map_err(|e| CertError::Pem(format!("{label} block: {e}")))?;
        if der.is_empty() {
            return Err(CertError::Pem(format!("{label} block is empty")));
        }
        blocks.push(PemBlock {
            label: label.to_owned(),
            der,
        });
    }
    Ok(blocks)
}

/// `der` as a PEM block with 64-column lines, as Go's `pem.Encode` writes it.
pub(crate) fn pem_encode(label: &str, der: &[u8]) -> String {
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in body.as_bytes().chunks(64) {
        // Base64 output is ASCII, so every chunk is valid UTF-8.
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

// --------------------------------------------------------------------------
// DER

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const INTEGER: u8 = 0x02;
const BIT_STRING: u8 = 0x03;
const OCTET_STRING: u8 = 0x04;
const OID: u8 = 0x06;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;
const BOOLEAN: u8 = 0x01;

/// A cursor over DER: reads one tag-length-value at a time.
struct Reader<'a> {
    data: &'a [u8],
}

/// One element: its tag, its contents, and the whole encoding.
struct Tlv<'a> {
    tag: u8,
    value: &'a [u8],
    raw: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(data: &'a [u8]) -> Self {
        Self { data }
    }

    fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    fn peek_tag(&self) -> Option<u8> {
        self.data.first().copied()
    }

    fn next(&mut self) -> Result<Tlv<'a>, CertError> {
        let data = self.data;
        let (&tag, rest) = data.split_first().ok_or(CertError::Der("truncated"))?;
        if tag & 0x1f == 0x1f {
            return Err(CertError::Der(
                "high tag numbers are not used in certificates",
            ));
        }
        let (&first, mut rest) = rest.split_first().ok_or(CertError::Der("truncated"))?;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 {
                return Err(CertError::Der("unsupported length encoding"));
            }
            let bytes = rest.get(..n).ok_or(CertError::Der("truncated"))?;
            rest = &rest[n..];
            bytes
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | usize::from(*b))
        };
        let value = rest.get(..len).ok_or(CertError::Der("truncated"))?;
        let header = data.len() - rest.len();
        let raw = &data[..header + len];
        self.data = &rest[len..];
        Ok(Tlv { tag, value, raw })
    }

    fn expect(&mut self, tag: u8, what: &'static str) -> Result<Tlv<'a>, CertError> {
        let tlv = self.next()?;
        if tlv.tag != tag {
            return Err(CertError::Der(what));
        }
        Ok(tlv)
    }
}

/// A DER element with `tag` around `content`.
pub(crate) fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        let significant = &bytes[skip..];
        out.push(0x80 | significant.len() as u8);
        out.extend_from_slice(significant);
    }
    out.extend_from_slice(content);
    out
}

/// The contents of a BIT STRING with no unused bits (keys and signatures).
fn bit_string_bytes(value: &[u8]) -> Result<&[u8], CertError> {
    match value.split_first() {
        Some((0, bits)) => Ok(bits),
        _ => Err(CertError::Der("bit string with unused bits")),
    }
}

// --------------------------------------------------------------------------
// Certificates

/// The parts of a certificate the join looks at, borrowed from its DER.
pub(crate) struct Cert<'a> {
    /// The whole certificate.
    pub der: &'a [u8],
    /// `tbsCertificate`, what the signature covers (whole encoding).
    tbs: &'a [u8],
    serial: &'a [u8],
    /// Issuer and subject names, whole encodings (compared byte for byte,
    /// as Go's certificate pool does).
    issuer: &'a [u8],
    subject: &'a [u8],
    not_before: i64,
    not_after: i64,
    /// The SPKI's AlgorithmIdentifier contents (without its SEQUENCE header,
    /// as rustls' `AlgorithmIdentifier` spells it) and the key bits.
    spki_algorithm: &'a [u8],
    public_key: &'a [u8],
    signature_algorithm: &'a [u8],
    signature: &'a [u8],
    subject_key_id: Option<&'a [u8]>,
    authority_key_id: Option<&'a [u8]>,
}

const OID_SUBJECT_KEY_ID: &[u8] = &[0x55, 0x1d, 0x0e];
const OID_AUTHORITY_KEY_ID: &[u8] = &[0x55, 0x1d, 0x23];
const OID_COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];
const OID_ORGANIZATION: &[u8] = &[0x55, 0x04, 0x0a];

impl<'a> Cert<'a> {
    /// Parses an X.509 certificate (v1 to v3).
    pub fn parse(der: &'a [u8]) -> Result<Self, CertError> {
        let mut outer = Reader::new(der);
        let cert = outer.expect(SEQUENCE, "not a SEQUENCE")?;
        if !outer.is_empty() {
            return Err(CertError::Der("trailing data"));
        }
        let mut parts = Reader::new(cert.value);
        let tbs = parts.expect(SEQUENCE, "no tbsCertificate")?;
        let signature_algorithm = parts.expect(SEQUENCE, "no signatureAlgorithm")?.value;
        let signature = bit_string_bytes(parts.expect(BIT_STRING, "no signature")?.value)?;

        let mut fields = Reader::new(tbs.value);
        if fields.peek_tag() == Some(0xa0) {
            fields.next()?; // version
        }
        let serial = fields.expect(INTEGER, "no serialNumber")?.value;
        fields.expect(SEQUENCE, "no signature algorithm")?;
        let issuer = fields.expect(SEQUENCE, "no issuer")?.raw;
        let validity = fields.expect(SEQUENCE, "no validity")?;
        let mut times = Reader::new(validity.value);
        let not_before = parse_time(&times.next()?)?;
        let not_after = parse_time(&times.next()?)?;
        let subject = fields.expect(SEQUENCE, "no subject")?.raw;
        let spki = fields.expect(SEQUENCE, "no subjectPublicKeyInfo")?;
        let mut key = Reader::new(spki.value);
        let spki_algorithm = key.expect(SEQUENCE, "no key algorithm")?.value;
        let public_key = bit_string_bytes(key.expect(BIT_STRING, "no public key")?.value)?;

        let mut subject_key_id = None;
        let mut authority_key_id = None;
        while !fields.is_empty() {
            let field = fields.next()?;
            if field.tag != 0xa3 {
                continue; // unique identifiers
            }
            let mut list = Reader::new(field.value);
            let mut extensions = Reader::new(list.expect(SEQUENCE, "bad extensions")?.value);
            while !extensions.is_empty() {
                let extension = extensions.expect(SEQUENCE, "bad extension")?;
                let mut ext = Reader::new(extension.value);
                let id = ext.expect(OID, "bad extension id")?.value;
                if ext.peek_tag() == Some(BOOLEAN) {
                    ext.next()?;
                }
                let value = ext.expect(OCTET_STRING, "bad extension value")?.value;
                if id == OID_SUBJECT_KEY_ID {
                    subject_key_id =
                        Some(Reader::new(value).expect(OCTET_STRING, "bad key id")?.value);
                } else if id == OID_AUTHORITY_KEY_ID {
                    let mut aki =
                        Reader::new(Reader::new(value).expect(SEQUENCE, "bad AKI")?.value);
                    while !aki.is_empty() {
                        let part = aki.next()?;
                        if part.tag == 0x80 {
                            authority_key_id = Some(part.value);
                        }
                    }
                }
            }
        }
        Ok(Self {
            der,
            tbs: tbs.raw,
            serial,
            issuer,
            subject,
            not_before,
            not_after,
            spki_algorithm,
            public_key,
            signature_algorithm,
            signature,
            subject_key_id,
            authority_key_id,
        })
    }

    /// The public key bits (for EC keys: the uncompressed point).
    pub fn public_key(&self) -> &'a [u8] {
        self.public_key
    }

    /// Whether `now` (seconds since the epoch) is within the validity period.
    fn valid_at(&self, now: i64) -> bool {
        self.not_before <= now && now <= self.not_after
    }

    /// Whether Go would put this certificate into the roots of `hashCA`'s
    /// verification: no authority key id, or one equal to its own key id.
    fn looks_like_root(&self) -> bool {
        match self.authority_key_id {
            None => true,
            Some(aki) => self.subject_key_id == Some(aki),
        }
    }

    /// Whether `issuer`'s key made this certificate's signature.
    fn signed_by(&self, issuer: &Cert<'_>) -> bool {
        let algorithms = rustls::crypto::ring::default_provider().signature_verification_algorithms;
        algorithms.all.iter().any(|alg| {
            alg.public_key_alg_id().as_ref() == issuer.spki_algorithm
                && alg.signature_alg_id().as_ref() == self.signature_algorithm
                && alg
                    .verify_signature(issuer.public_key, self.tbs, self.signature)
                    .is_ok()
        })
    }

    /// What the join reports about it.
    pub fn info(&self) -> CertificateInfo {
        let mut common_name = None;
        let mut organizations = Vec::new();
        // Name ::= SEQUENCE OF SET OF SEQUENCE { type, value }; a malformed
        // name just yields fewer attributes.
        let mut name = Reader::new(self.subject);
        if let Ok(sequence) = name.expect(SEQUENCE, "") {
            let mut sets = Reader::new(sequence.value);
            while let Ok(set) = sets.expect(SET, "") {
                let mut attributes = Reader::new(set.value);
                while let Ok(attribute) = attributes.expect(SEQUENCE, "") {
                    let mut parts = Reader::new(attribute.value);
                    let (Ok(id), Ok(value)) = (parts.expect(OID, ""), parts.next()) else {
                        continue;
                    };
                    let text = String::from_utf8_lossy(value.value).into_owned();
                    if id.value == OID_COMMON_NAME {
                        common_name = Some(text);
                    } else if id.value == OID_ORGANIZATION {
                        organizations.push(text);
                    }
                }
            }
        }
        CertificateInfo {
            common_name,
            organizations,
            serial: hex::encode(self.serial),
            not_before: to_system_time(self.not_before),
            not_after: to_system_time(self.not_after),
        }
    }
}

/// What a certificate says about itself, as far as the agent cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateInfo {
    /// The subject's CN.
    pub common_name: Option<String>,
    /// The subject's O values (Kubernetes groups for client certificates).
    pub organizations: Vec<String>,
    /// The serial number, hex (a renewed certificate has a new one).
    pub serial: String,
    /// Start of validity.
    pub not_before: SystemTime,
    /// End of validity.
    pub not_after: SystemTime,
}

/// The first certificate in PEM `pem`, described.
pub fn certificate_info(pem: &[u8]) -> Result<CertificateInfo, CertError> {
    let blocks = pem_blocks(pem)?;
    let first = blocks
        .iter()
        .find(|b| b.label == "CERTIFICATE")
        .ok_or(CertError::NoCertificate)?;
    Ok(Cert::parse(&first.der)?.info())
}

fn to_system_time(seconds: i64) -> SystemTime {
    let offset = Duration::from_secs(seconds.unsigned_abs());
    let time = if seconds >= 0 {
        UNIX_EPOCH.checked_add(offset)
    } else {
        UNIX_EPOCH.checked_sub(offset)
    };
    // Beyond what this platform's clock can hold (years 0 to 9999 fit on
    // every Linux target): the epoch, which reads as long expired, so the
    // certificate is renewed rather than trusted forever.
    time.unwrap_or(UNIX_EPOCH)
}

/// Seconds since the epoch for `now`.
pub(crate) fn unix_seconds(now: SystemTime) -> i64 {
    match now.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

/// UTCTime (`YYMMDDHHMMSSZ`) or GeneralizedTime (`YYYYMMDDHHMMSSZ`) as
/// seconds since the epoch.
fn parse_time(tlv: &Tlv<'_>) -> Result<i64, CertError> {
    let text = std::str::from_utf8(tlv.value).map_err(|_| CertError::Der("bad time"))?;
    let text = text
        .strip_suffix('Z')
        .ok_or(CertError::Der("time not in UTC"))?;
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(CertError::Der("bad time"));
    }
    let (year, rest) = match (tlv.tag, text.len()) {
        (UTC_TIME, 12) => {
            let yy: i64 = number(&text[..2]);
            // RFC 5280: 50-99 are 19xx, 00-49 are 20xx.
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &text[2..])
        }
        (GENERALIZED_TIME, 14) => (number(&text[..4]), &text[4..]),
        _ => return Err(CertError::Der("bad time")),
    };
    let month = number(&rest[0..2]);
    let day = number(&rest[2..4]);
    let hour = number(&rest[4..6]);
    let minute = number(&rest[6..8]);
    let second = number(&rest[8..10]);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return Err(CertError::Der("bad time"));
    }
    let days = days_from_civil(year, month, day);
    Ok(days * 86_400 + hour * 3600 + minute * 60 + second)
}

/// Digits to a number (the caller checked they are ASCII digits).
fn number(digits: &str) -> i64 {
    digits
        .bytes()
        .fold(0, |acc, b| acc * 10 + i64::from(b - b'0'))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = if year >= 0 { year } else { year - 399 } / 400;
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

// --------------------------------------------------------------------------
// The CA bundle's root (k3s's hashCA)

/// For a bundle of more than one certificate, the root of the chain built
/// from the first certificate, as newer k3s's `hashCA` finds it: the other
/// certificates are roots (no authority key id, or a self-referencing one)
/// or intermediates; the chain must verify (names, signatures, validity at
/// `now`). `None` when the bundle has one certificate, does not parse, or
/// has no such chain — k3s then hashes the raw bytes.
pub(crate) fn bundle_root(bundle: &[u8], now: SystemTime) -> Option<Vec<u8>> {
    let blocks = pem_blocks(bundle).ok()?;
    let ders: Vec<&[u8]> = blocks
        .iter()
        .filter(|b| b.label == "CERTIFICATE")
        .map(|b| b.der.as_slice())
        .collect();
    if ders.len() < 2 {
        return None;
    }
    let certs: Vec<Cert<'_>> = ders
        .iter()
        .map(|d| Cert::parse(d))
        .collect::<Result<_, _>>()
        .ok()?;
    let now = unix_seconds(now);
    let (first, others) = certs.split_first()?;
    if !first.valid_at(now) {
        return None;
    }
    find_root(first, others, now, 0).map(|root| root.der.to_vec())
}

/// Depth-first search for a chain from `child` to a root among `pool`.
fn find_root<'c, 'a>(
    child: &Cert<'a>,
    pool: &'c [Cert<'a>],
    now: i64,
    depth: usize,
) -> Option<&'c Cert<'a>> {
    // Bounds the search on bundles that loop (A signs B signs A).
    if depth > 8 {
        return None;
    }
    for parent in pool {
        if parent.subject != child.issuer
            || !parent.valid_at(now)
            || std::ptr::eq(parent.der, child.der)
            || !child.signed_by(parent)
        {
            continue;
        }
        if parent.looks_like_root() {
            return Some(parent);
        }
        if let Some(root) = find_root(parent, pool, now, depth + 1) {
            return Some(root);
        }
    }
    None
}

// --------------------------------------------------------------------------
// Certificate requests

/// `id-ecPublicKey` with `prime256v1`: the SubjectPublicKeyInfo algorithm of
/// a P-256 key.
const EC_P256_ALGORITHM: &[u8] = &[
    0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48,
    0xce, 0x3d, 0x03, 0x01, 0x07,
];
/// `ecdsa-with-SHA256`.
const ECDSA_SHA256_ALGORITHM: &[u8] = &[
    0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02,
];

/// A DER PKCS#10 request with an empty subject for the P-256 key `key`, as
/// Go's `x509.CreateCertificateRequest(rand, &x509.CertificateRequest{}, key)`
/// makes it for newer k3s agents: the server takes only the key from it.
pub(crate) fn certificate_request(
    key: &ring::signature::EcdsaKeyPair,
    rng: &dyn ring::rand::SecureRandom,
) -> Result<Vec<u8>, ring::error::Unspecified> {
    use ring::signature::KeyPair as _;
    let mut bits = vec![0u8];
    bits.extend_from_slice(key.public_key().as_ref());
    let spki = der(
        SEQUENCE,
        &[EC_P256_ALGORITHM, &der(BIT_STRING, &bits)].concat(),
    );
    let info = der(
        SEQUENCE,
        &[
            &der(INTEGER, &[0])[..],
            &der(SEQUENCE, &[]),
            &spki,
            // attributes [0]: none
            &[0xa0, 0x00],
        ]
        .concat(),
    );
    let signature = key.sign(rng, &info)?;
    let mut signature_bits = vec![0u8];
    signature_bits.extend_from_slice(signature.as_ref());
    Ok(der(
        SEQUENCE,
        &[
            &info[..],
            ECDSA_SHA256_ALGORITHM,
            &der(BIT_STRING, &signature_bits),
        ]
        .concat(),
    ))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The recorded server CA (`/cacerts` of the recorded K3s v1.21.2).
    pub(crate) const RECORDED_CA: &str = "-----BEGIN CERTIFICATE-----
MIIBdzCCAR2gAwIBAgIBADAKBggqhkjOPQQDAjAjMSEwHwYDVQQDDBhrM3Mtc2Vy
dmVyLWNhQDE3OTU4MTMyMzEwHhcNMjYxMTI3MjEwMDMxWhcNMzYxMTI0MjEwMDMx
WjAjMSEwHwYDVQQDDBhrM3Mtc2VydmVyLWNhQDE3OTU4MTMyMzEwWTATBgcqhkjO
PQIBBggqhkjOPQMBBwNCAATJSrlxUW4DZT8T3dBOEm214wGkgtOhqUxbl4BokyPk
pgolJcLqtZIuZUSgLbwsCnfSdmOwZ9p00JRv0/Zeumgco0IwQDAOBgNVHQ8BAf8E
BAMCAqQwDwYDVR0TAQH/BAUwAwEB/zAdBgNVHQ4EFgQU0fSmZuazqvkrgWo+ghrV
/jHe464wCgYIKoZIzj0EAwIDSAAwRQIhAMmMg11cVI/icHC8Yn1bxGlFTbjG8EzY
h1B2lXfZSxcpAiA9Hgtv0CywESYa2k0iMb6WLvb8KUHcc3chedKSLOYTiA==
-----END CERTIFICATE-----
";

    /// The recorded client-kubelet certificate for node `rust-edge-1`.
    pub(crate) const RECORDED_CLIENT_KUBELET: &str = "-----BEGIN CERTIFICATE-----
MIIBmTCCAUCgAwIBAgIIaQIJIOlXV9cwCgYIKoZIzj0EAwIwIzEhMB8GA1UEAwwY
azNzLWNsaWVudC1jYUAxNzk1ODEzMjMxMB4XDTI2MTEyNzIxMDAzMVoXDTI3MTEy
NzIxMDE1NVowOTEVMBMGA1UEChMMc3lzdGVtOm5vZGVzMSAwHgYDVQQDExdzeXN0
ZW06bm9kZTpydXN0LWVkZ2UtMTBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABM3X
c8afTR1BsTEMuNoPHDF8SyzBGt22oIhcjleNequ8n0wr/ezw+975VEsIo3yzVb68
rrTaLk22wFquEHrDSIKjSDBGMA4GA1UdDwEB/wQEAwIFoDATBgNVHSUEDDAKBggr
BgEFBQcDAjAfBgNVHSMEGDAWgBTuOCB+bE4pCjQXLqVib5cRE0eHEjAKBggqhkjO
PQQDAgNHADBEAiAkP2YHYhuk9kXgVrvSDqZguO4cZ10S8YkKLVZJTmOJ3AIgVyr/
KtHGch91w4r3JBcOpYcMScWex396CrsLHeAZeME=
-----END CERTIFICATE-----
";

    /// The recorded client CA, which signed [`RECORDED_CLIENT_KUBELET`].
    pub(crate) const RECORDED_CLIENT_CA: &str = "-----BEGIN CERTIFICATE-----
MIIBeDCCAR2gAwIBAgIBADAKBggqhkjOPQQDAjAjMSEwHwYDVQQDDBhrM3MtY2xp
ZW50LWNhQDE3OTU4MTMyMzEwHhcNMjYxMTI3MjEwMDMxWhcNMzYxMTI0MjEwMDMx
WjAjMSEwHwYDVQQDDBhrM3MtY2xpZW50LWNhQDE3OTU4MTMyMzEwWTATBgcqhkjO
PQIBBggqhkjOPQMBBwNCAATeSeU5bbDDcJTcD3BZyui0FiC2rpf1S4f9n2OyPnMR
UPPTZuxTxYdtwEGFQ6xUW+l+cF9uBugfCDkREOh8ey6ho0IwQDAOBgNVHQ8BAf8E
BAMCAqQwDwYDVR0TAQH/BAUwAwEB/zAdBgNVHQ4EFgQU7jggfmxOKQo0Fy6lYm+X
ERNHhxIwCgYIKoZIzj0EAwIDSQAwRgIhAPcVm6KOvANLScUXTPHSId/xCZMbxQRT
QZuDM1xe/G64AiEAhuMpi+00KQ0ZbWPXyF3ugJivzL0wkHaIRKAWpGt5rRY=
-----END CERTIFICATE-----
";

    fn der_of(pem: &str) -> Vec<u8> {
        pem_blocks(pem.as_bytes()).unwrap().remove(0).der
    }

    #[test]
    fn pem_round_trip_and_split() {
        let text = format!("junk before\n{RECORDED_CA}between\n{RECORDED_CLIENT_CA}");
        let blocks = pem_blocks(text.as_bytes()).unwrap();
        assert_eq!(blocks.len(), 2);
        assert_eq!(pem_encode("CERTIFICATE", &blocks[0].der), RECORDED_CA);
        assert!(pem_blocks(b"-----BEGIN CERTIFICATE-----\nAAAA\n").is_err());
        assert!(pem_blocks(b"-----BEGIN X-----\n(omitted)\n-----END X-----\n").is_err());
        assert!(pem_blocks(b"no pem here").unwrap().is_empty());
    }

    #[test]
    fn reads_the_recorded_kubelet_client_certificate() {
        let info = certificate_info(RECORDED_CLIENT_KUBELET.as_bytes()).unwrap();
        assert_eq!(info.common_name.as_deref(), Some("system:node:rust-edge-1"));
        assert_eq!(info.organizations, vec!["system:nodes".to_owned()]);
        assert_eq!(info.serial, "69020920e95757d7");
        // notBefore 2026-11-27 21:00:31 UTC, notAfter 2027-11-27 21:01:55 UTC
        assert_eq!(unix_seconds(info.not_before), 1_795_813_231);
        assert_eq!(unix_seconds(info.not_after), 1_827_349_315);
    }

    #[test]
    fn checks_signatures() {
        let ca_der = der_of(RECORDED_CLIENT_CA);
        let leaf_der = der_of(RECORDED_CLIENT_KUBELET);
        let server_ca_der = der_of(RECORDED_CA);
        let ca = Cert::parse(&ca_der).unwrap();
        let leaf = Cert::parse(&leaf_der).unwrap();
        let server_ca = Cert::parse(&server_ca_der).unwrap();
        assert!(leaf.signed_by(&ca));
        assert!(ca.signed_by(&ca));
        assert!(!leaf.signed_by(&server_ca));
        assert!(ca.looks_like_root());
        assert!(!leaf.looks_like_root());
    }

    #[test]
    fn bundle_root_follows_the_chain() {
        let at = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        // leaf, then its CA: the root is the CA.
        let bundle = format!("{RECORDED_CLIENT_KUBELET}{RECORDED_CLIENT_CA}");
        assert_eq!(
            bundle_root(bundle.as_bytes(), at),
            Some(der_of(RECORDED_CLIENT_CA))
        );
        // One certificate: no root (the raw bytes are hashed).
        assert_eq!(bundle_root(RECORDED_CA.as_bytes(), at), None);
        // No chain (wrong CA) or expired: none either.
        let unrelated = format!("{RECORDED_CLIENT_KUBELET}{RECORDED_CA}");
        assert_eq!(bundle_root(unrelated.as_bytes(), at), None);
        let later = UNIX_EPOCH + Duration::from_secs(1_900_000_000);
        assert_eq!(bundle_root(bundle.as_bytes(), later), None);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bad in [
            &b""[..],
            &[0x30],
            &[0x30, 0x84, 0xff, 0xff, 0xff, 0xff],
            &[0x30, 0x03, 0x02, 0x01],
            &[0x1f, 0x01, 0x00],
            &[0x30, 0x80, 0x00, 0x00],
        ] {
            assert!(Cert::parse(bad).is_err());
        }
        let der = der_of(RECORDED_CA);
        for cut in 0..der.len() {
            assert!(Cert::parse(&der[..cut]).is_err());
        }
    }

    #[test]
    fn times_decode() {
        let tlv = |tag, text: &'static str| Tlv {
            tag,
            value: text.as_bytes(),
            raw: &[],
        };
        assert_eq!(parse_time(&tlv(UTC_TIME, "700101000000Z")).unwrap(), 0);
        assert_eq!(
            parse_time(&tlv(GENERALIZED_TIME, "20000301000000Z")).unwrap(),
            951_868_800
        );
        assert_eq!(
            parse_time(&tlv(UTC_TIME, "491231235959Z")).unwrap(),
            2_524_607_999
        );
        assert!(parse_time(&tlv(UTC_TIME, "7001010000Z")).is_err());
        assert!(parse_time(&tlv(UTC_TIME, "701301000000Z")).is_err());
        assert!(parse_time(&tlv(UTC_TIME, "700101000000+0100")).is_err());
    }

    #[test]
    fn certificate_request_is_signed_by_its_key() {
        let rng = ring::rand::SystemRandom::new();
        let alg = &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING;
        let pkcs8 = ring::signature::EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
        let key = ring::signature::EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap();
        let csr = certificate_request(&key, &rng).unwrap();
        // CertificationRequest ::= SEQUENCE { info, algorithm, signature }
        let mut outer = Reader::new(&csr);
        let request = outer.expect(SEQUENCE, "request").unwrap();
        assert!(outer.is_empty());
        let mut parts = Reader::new(request.value);
        let info = parts.expect(SEQUENCE, "info").unwrap();
        let algorithm = parts.expect(SEQUENCE, "alg").unwrap();
        assert_eq!(algorithm.raw, ECDSA_SHA256_ALGORITHM);
        let signature = bit_string_bytes(parts.expect(BIT_STRING, "sig").unwrap().value).unwrap();
        use ring::signature::KeyPair as _;
        ring::signature::UnparsedPublicKey::new(
            &ring::signature::ECDSA_P256_SHA256_ASN1,
            key.public_key().as_ref(),
        )
        .verify(info.raw, signature)
        .unwrap();
        // Version 0, an empty subject.
        let mut fields = Reader::new(info.value);
        assert_eq!(fields.expect(INTEGER, "v").unwrap().value, [0]);
        assert_eq!(
            fields.expect(SEQUENCE, "subject").unwrap().raw,
            [0x30, 0x00]
        );
    }

    #[test]
    fn der_lengths() {
        assert_eq!(der(0x04, &[1, 2]), vec![0x04, 0x02, 1, 2]);
        let long = vec![0u8; 300];
        assert_eq!(&der(0x04, &long)[..4], &[0x04, 0x82, 0x01, 0x2c]);
    }
}
