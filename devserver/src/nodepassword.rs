//! Node passwords: the scrypt hash K3s keeps in Secret
//! `kube-system/<node>.node-password.k3s` (`data.hash`), so that the first
//! agent to present a node name "claims" it and later agents with another
//! password are refused.
//!
//! The format is k3s's (`pkg/authenticator/hash/scrypt.go`, v1.21):
//! `$1:<salt hex>:<log2 N>:<r>:<p>:<key base64>` with 8 random salt bytes
//! (the hex is decoded back to those bytes before hashing), N = 2^15, r = 8,
//! p = 1, a 64-byte key and unpadded standard base64. Checked against the
//! hash a real v1.21.2 server stored (see the tests).
//!
//! scrypt at these parameters costs 32 MiB and tens of milliseconds (much more
//! in debug builds): callers on an async runtime should run [`hash`] and
//! [`verify`] on a blocking thread.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use ring::rand::{SecureRandom, SystemRandom};

/// The only format version k3s knows.
const VERSION: u32 = 1;
const LOG_N: u8 = 15;
const R: u32 = 8;
const P: u32 = 1;
const KEY_LEN: usize = 64;
const SALT_LEN: usize = 8;

/// The most memory one verification may take (128·r·N bytes). A stored hash
/// is data anyone with Secret write access can change: without a bound, one
/// edited Secret could make the devserver allocate gigabytes per request.
/// k3s's own parameters need 32 MiB.
const MAX_MEMORY: u64 = 256 << 20;
/// Bound on p for the same reason (time instead of memory).
const MAX_P: u32 = 16;

/// Why a node password was not accepted or could not be hashed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodePasswordError {
    /// The password is not the one the hash was made from. k3s answers 403
    /// with `unable to verify hash for node '<node>': hash does not match`.
    #[error("hash does not match")]
    Mismatch,
    /// The stored hash has another format version (k3s's text).
    #[error("hash version {0} does not match package version {VERSION}")]
    Version(u64),
    /// The stored hash is not `$1:<hex>:<n>:<r>:<p>:<base64>`.
    #[error("malformed node password hash: {0}")]
    Malformed(&'static str),
    /// The stored hash asks for scrypt parameters that are invalid or beyond
    /// what this server will spend on one check.
    #[error("unsupported scrypt parameters in node password hash: {0}")]
    Parameters(&'static str),
}

/// Name of the Secret holding a node's password hash, as k3s names it: the
/// whole name lower-cased.
pub fn secret_name(node: &str) -> String {
    format!("{node}.node-password.k3s").to_lowercase()
}

/// Hashes a node password with a fresh random salt, in k3s's format.
///
/// # Panics
/// If the operating system's random source fails (getrandom(2) on Linux),
/// which never happens in practice and leaves no salt to use.
pub fn hash(password: &str) -> String {
    let mut salt = [0u8; SALT_LEN];
    SystemRandom::new()
        .fill(&mut salt)
        .expect("the system random number generator failed");
    hash_with_salt(password, &salt)
}

fn hash_with_salt(password: &str, salt: &[u8]) -> String {
    let mut key = [0u8; KEY_LEN];
    // k3s's own parameters are within every bound `derive` checks, and the
    // output length is fixed, so this cannot fail.
    let derived = derive(password, salt, LOG_N, R, P, &mut key);
    debug_assert!(derived.is_ok(), "{derived:?}");
    format!(
        "${VERSION}:{}:{LOG_N}:{R}:{P}:{}",
        hex::encode(salt),
        STANDARD_NO_PAD.encode(key)
    )
}

/// Checks `password` against a stored hash; `Ok(())` when it matches.
pub fn verify(stored: &str, password: &str) -> Result<(), NodePasswordError> {
    let parsed = Parsed::parse(stored)?;
    let mut key = vec![0u8; parsed.key.len()];
    derive(
        password,
        &parsed.salt,
        parsed.log_n,
        parsed.r,
        parsed.p,
        &mut key,
    )?;
    if constant_time_eq(&key, &parsed.key) {
        Ok(())
    } else {
        Err(NodePasswordError::Mismatch)
    }
}

/// The fields of a stored hash.
struct Parsed {
    salt: Vec<u8>,
    log_n: u8,
    r: u32,
    p: u32,
    key: Vec<u8>,
}

impl Parsed {
    fn parse(stored: &str) -> Result<Self, NodePasswordError> {
        use NodePasswordError::Malformed;

        let rest = stored
            .strip_prefix('$')
            .ok_or(Malformed("no leading '$'"))?;
        let mut fields = rest.splitn(6, ':');
        let mut next = |what: &'static str| fields.next().ok_or(Malformed(what));
        let version = next("no version")?;
        let salt = next("no salt")?;
        let log_n = next("no N")?;
        let r = next("no r")?;
        let p = next("no p")?;
        // k3s reads the key with %s, which stops at white space: a trailing
        // newline in the Secret is tolerated there, so here too.
        let key = next("no key")?.split_whitespace().next().unwrap_or("");

        let version: u64 = version
            .parse()
            .map_err(|_| Malformed("version is not a number"))?;
        if version != u64::from(VERSION) {
            return Err(NodePasswordError::Version(version));
        }
        let salt = hex::decode(salt).map_err(|_| Malformed("salt is not hex"))?;
        let log_n: u8 = log_n.parse().map_err(|_| Malformed("N is not a number"))?;
        let r: u32 = r.parse().map_err(|_| Malformed("r is not a number"))?;
        let p: u32 = p.parse().map_err(|_| Malformed("p is not a number"))?;
        let key = STANDARD_NO_PAD
            .decode(key)
            .map_err(|_| Malformed("key is not unpadded base64"))?;
        Ok(Self {
            salt,
            log_n,
            r,
            p,
            key,
        })
    }
}

/// scrypt into `out`, refusing parameters outside the bounds above.
fn derive(
    password: &str,
    salt: &[u8],
    log_n: u8,
    r: u32,
    p: u32,
    out: &mut [u8],
) -> Result<(), NodePasswordError> {
    use NodePasswordError::Parameters;

    if log_n >= 64 {
        return Err(Parameters("N too large"));
    }
    let memory = 128u64
        .checked_mul(u64::from(r))
        .and_then(|m| m.checked_mul(1u64 << log_n))
        .ok_or(Parameters("N·r too large"))?;
    if memory > MAX_MEMORY {
        return Err(Parameters("needs more than 256 MiB"));
    }
    if p > MAX_P {
        return Err(Parameters("p too large"));
    }
    // The scrypt crate also bounds the key length (10..=64 bytes); k3s's is 64.
    let params = scrypt::Params::new(log_n, r, p, out.len())
        .map_err(|_| Parameters("invalid N, r, p or key length"))?;
    scrypt::scrypt(password.as_bytes(), salt, &params, out)
        .map_err(|_| Parameters("invalid key length"))
}

/// Compares without an early exit, so the time taken does not tell how many
/// leading bytes of a guess were right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `data.hash` of Secret `kube-system/rust-edge-1.node-password.k3s` as the
    /// recorded K3s v1.21.2 server created it (transcript2.txt), base64 as in
    /// the Secret.
    const RECORDED_SECRET_HASH_B64: &str = "JDE6ZjY4YjFjODI0NmRhMDk0ZDoxNTo4OjE6aEpLRjBDN0ZXaFRCMzFlYXZob1VHVmxVbWxFVk5HN05BMHdPSlN3cjFWRFNzSGRZeTg2dmJOQ1UrSFdjcDFySkNJOEhabWZOQ3c0eElSNnFTbitaalE=";
    /// The node password the recorded agent sent (transcript.txt header).
    const RECORDED_PASSWORD: &str = "d40ec29d35d20252721863fdefdbe4e8";

    fn recorded_hash() -> String {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(RECORDED_SECRET_HASH_B64)
            .unwrap();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn recorded_hash_verifies_and_rejects_a_wrong_password() {
        let stored = recorded_hash();
        assert!(
            stored.starts_with("$1:f68b1c8246da094d:15:8:1:hJKF"),
            "{stored}"
        );
        assert_eq!(verify(&stored, RECORDED_PASSWORD), Ok(()));
        let err = verify(&stored, "00000000000000000000000000000000").unwrap_err();
        assert_eq!(err, NodePasswordError::Mismatch);
        // The 403 body k3s sends wraps exactly this text.
        assert_eq!(
            format!("unable to verify hash for node 'rust-edge-1': {err}"),
            "unable to verify hash for node 'rust-edge-1': hash does not match"
        );
    }

    #[test]
    fn same_salt_reproduces_the_recorded_hash() {
        // Proves the format, not just verification: salt bytes, parameters,
        // key length and base64 flavour all as k3s writes them.
        let salt = hex::decode("f68b1c8246da094d").unwrap();
        assert_eq!(hash_with_salt(RECORDED_PASSWORD, &salt), recorded_hash());
    }

    #[test]
    fn new_hashes_have_k3s_shape_and_random_salt() {
        let stored = hash("some-node-password");
        let fields: Vec<&str> = stored.split(':').collect();
        assert_eq!(fields.len(), 6, "{stored}");
        assert_eq!(&fields[..1], &["$1"]);
        assert_eq!(fields[1].len(), 16);
        assert_eq!(&fields[2..5], &["15", "8", "1"]);
        assert_eq!(STANDARD_NO_PAD.decode(fields[5]).unwrap().len(), 64);
        // Only the salt is random; a second hash would cost another scrypt
        // run in a debug build, so compare salts of parsed copies instead.
        assert_ne!(fields[1], "f68b1c8246da094d");
    }

    #[test]
    fn malformed_hashes_are_errors_not_panics() {
        let cases = [
            "",
            "1:00:15:8:1:AAAA",
            "$",
            "$1",
            "$1:zz:15:8:1:AAAAAAAAAAAAAA",
            "$1:00:x:8:1:AAAAAAAAAAAAAA",
            "$1:00:15:8:1:!!!",
            "$1:00:15:8:1:AAAAAAAAAAAAAAA=",
        ];
        for case in cases {
            assert!(
                matches!(verify(case, "pw"), Err(NodePasswordError::Malformed(_))),
                "{case:?}: {:?}",
                verify(case, "pw")
            );
        }
        assert_eq!(
            verify("$2:00:15:8:1:AAAAAAAAAAAAAA", "pw"),
            Err(NodePasswordError::Version(2))
        );
        assert_eq!(
            verify("$2:00:15:8:1:AAAA", "pw").unwrap_err().to_string(),
            "hash version 2 does not match package version 1"
        );
        // Parameters that would cost gigabytes or are invalid for scrypt are
        // refused before any work is done.
        for case in [
            "$1:00:30:8:1:AAAAAAAAAAAAAA",
            "$1:00:99:8:1:AAAAAAAAAAAAAA",
            "$1:00:4:8:1000:AAAAAAAAAAAAAA",
            "$1:00:4:0:1:AAAAAAAAAAAAAA",
            "$1:00:4:8:1:AAAA",
        ] {
            assert!(
                matches!(verify(case, "pw"), Err(NodePasswordError::Parameters(_))),
                "{case:?}: {:?}",
                verify(case, "pw")
            );
        }
    }

    #[test]
    fn cheap_parameters_round_trip() {
        // A hash with small N is still k3s-valid (k3s reads N from the text).
        let salt = [1u8, 2, 3, 4, 5, 6, 7, 8];
        let mut key = [0u8; 64];
        derive("pw", &salt, 4, 8, 1, &mut key).unwrap();
        let stored = format!(
            "$1:{}:4:8:1:{}\n",
            hex::encode(salt),
            STANDARD_NO_PAD.encode(key)
        );
        assert_eq!(verify(&stored, "pw"), Ok(()));
        assert_eq!(verify(&stored, "pW"), Err(NodePasswordError::Mismatch));
    }

    #[test]
    fn secret_names_are_lower_case() {
        assert_eq!(secret_name("rust-edge-1"), "rust-edge-1.node-password.k3s");
        assert_eq!(secret_name("Rust-Edge-1"), "rust-edge-1.node-password.k3s");
    }
}
