//! Join tokens, as k3s parses them (`pkg/clientaccess/token.go`).
//!
//! - Secure ("full"): `K10<sha256 of the cluster CA, 64 hex>::<username>:<password>`,
//!   or with newer servers `K10<hash>::<id>.<secret>` (a bootstrap token).
//!   An empty hash (`K10::user:pass`) means no CA pinning.
//! - Short: anything not starting with `K10` is a bare password (or a
//!   bootstrap token when it has that shape), with no CA pinning: the CA the
//!   server presents is trusted on first use.
//!
//! An agent always authenticates as user `node` with the token's password,
//! whatever username the token carries (k3s: `ParseAndValidateTokenForUser(...,
//! "node")`): a server token `K10…::server:abc` is sent as `node:abc`.
//!
//! The password is never printed: `Debug` redacts it and errors never quote
//! the token.

const PREFIX: &str = "K10";
const HASH_LENGTH: usize = 64;

/// Why a token was refused. Messages never contain the token.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    /// Nothing was given.
    #[error("the token is empty")]
    Empty,
    /// The CA hash part is neither empty nor 64 characters (k3s: "invalid
    /// token CA hash length").
    #[error("invalid token CA hash length: {0} characters, expected 64 (or none)")]
    HashLength(usize),
    /// The CA hash part is 64 characters but not hexadecimal.
    #[error("invalid token CA hash: not hexadecimal")]
    HashNotHex,
    /// The credentials part is neither `username:password` with a password
    /// nor a bootstrap token (k3s: "invalid token format").
    #[error(
        "invalid token format: expected K10<ca-hash>::<username>:<password>, \
         K10<ca-hash>::<id>.<secret>, or a bare password"
    )]
    Format,
    /// Control characters (a pasted newline in the middle, ...) cannot be sent
    /// in an HTTP header.
    #[error("the token contains control characters")]
    ControlCharacters,
}

/// How the agent authenticates to the supervisor.
#[derive(Clone, PartialEq, Eq)]
enum Credentials {
    /// HTTP Basic `node:<password>`.
    Password {
        /// The username the token carried (not sent: agents are `node`).
        username: String,
        password: String,
    },
    /// `Authorization: Bearer <id>.<secret>` (newer k3s only).
    Bootstrap(String),
}

/// A parsed join token.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    ca_hash: Option<String>,
    credentials: Credentials,
    short: bool,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut s = f.debug_struct("Token");
        s.field("ca_hash", &self.ca_hash);
        match &self.credentials {
            Credentials::Password { username, .. } => s
                .field("username", username)
                .field("password", &"<redacted>"),
            Credentials::Bootstrap(_) => s.field("bootstrap", &"<redacted>"),
        };
        s.field("short", &self.short).finish()
    }
}

/// Whether `s` is a kubeadm bootstrap token, `[a-z0-9]{6}.[a-z0-9]{16}`.
fn is_bootstrap(s: &str) -> bool {
    let ok = |part: &str, len: usize| {
        part.len() == len
            && part
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    matches!(s.split_once('.'), Some((id, secret)) if ok(id, 6) && ok(secret, 16))
}

impl Token {
    /// Parses a token in any of the forms k3s accepts. Surrounding
    /// whitespace (a token file's newline) is ignored.
    pub fn parse(token: &str) -> Result<Self, TokenError> {
        let token = token.trim();
        if token.is_empty() {
            return Err(TokenError::Empty);
        }
        if token.chars().any(char::is_control) {
            return Err(TokenError::ControlCharacters);
        }
        let Some(rest) = token.strip_prefix(PREFIX) else {
            // Short token: k3s rewrites it to `K10:::<token>` (or `K10::<token>`
            // for a bootstrap token).
            let credentials = if is_bootstrap(token) {
                Credentials::Bootstrap(token.to_owned())
            } else {
                Credentials::Password {
                    username: String::new(),
                    password: token.to_owned(),
                }
            };
            return Ok(Self {
                ca_hash: None,
                credentials,
                short: true,
            });
        };
        // Without `::` the whole rest is the credentials (k3s's SplitN).
        let (hash, credentials) = rest.split_once("::").unwrap_or(("", rest));
        let ca_hash = match hash.len() {
            0 => None,
            HASH_LENGTH if hash.bytes().all(|b| b.is_ascii_hexdigit()) => {
                // k3s compares lowercase hex; accept a hash typed in capitals.
                Some(hash.to_ascii_lowercase())
            }
            HASH_LENGTH => return Err(TokenError::HashNotHex),
            n => return Err(TokenError::HashLength(n)),
        };
        let credentials = if is_bootstrap(credentials) {
            Credentials::Bootstrap(credentials.to_owned())
        } else {
            match credentials.split_once(':') {
                Some((username, password)) if !password.is_empty() => Credentials::Password {
                    username: username.to_owned(),
                    password: password.to_owned(),
                },
                _ => return Err(TokenError::Format),
            }
        };
        Ok(Self {
            ca_hash,
            credentials,
            short: false,
        })
    }

    /// The SHA-256 (lowercase hex) the cluster CA must have, if the token pins it.
    pub fn ca_hash(&self) -> Option<&str> {
        self.ca_hash.as_deref()
    }

    /// Whether this was a short token (a bare password or bootstrap token).
    pub fn is_short(&self) -> bool {
        self.short
    }

    /// Whether the credentials are a bootstrap token (sent as a bearer token).
    pub fn is_bootstrap(&self) -> bool {
        matches!(self.credentials, Credentials::Bootstrap(_))
    }

    /// The username the token carried (`server` in a server's token; empty
    /// in a short one). Not what is sent: agents authenticate as `node`.
    pub fn username(&self) -> Option<&str> {
        match &self.credentials {
            Credentials::Password { username, .. } => Some(username),
            Credentials::Bootstrap(_) => None,
        }
    }

    /// Adds the agent's credentials to a request: Basic `node:<password>`, or
    /// the bootstrap token as a bearer token. reqwest marks both sensitive.
    pub(crate) fn authorize(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.credentials {
            Credentials::Password { password, .. } => request.basic_auth("node", Some(password)),
            Credentials::Bootstrap(token) => request.bearer_auth(token),
        }
    }

    #[cfg(test)]
    fn password(&self) -> Option<&str> {
        match &self.credentials {
            Credentials::Password { password, .. } => Some(password),
            Credentials::Bootstrap(_) => None,
        }
    }
}

impl std::str::FromStr for Token {
    type Err = TokenError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "df70b3bd61ef657eaa0cd1bc6eef4030328dda72ec0dd6de7c7ff061b7e69cf4";

    #[test]
    fn the_recorded_full_token() {
        let t = Token::parse(
            "K10df70b3bd61ef657eaa0cd1bc6eef4030328dda72ec0dd6de7c7ff061b7e69cf4::server:d6eea178fe9c2f098967fc2ebfdd36bd",
        )
        .unwrap();
        assert_eq!(t.ca_hash(), Some(HASH));
        assert_eq!(t.username(), Some("server"));
        assert_eq!(t.password(), Some("d6eea178fe9c2f098967fc2ebfdd36bd"));
        assert!(!t.is_short());
        assert!(!t.is_bootstrap());
    }

    #[test]
    fn short_tokens_are_bare_passwords() {
        let t = Token::parse("  secret with:colons::and more\n").unwrap();
        assert_eq!(t.ca_hash(), None);
        assert_eq!(t.username(), Some(""));
        assert_eq!(t.password(), Some("secret with:colons::and more"));
        assert!(t.is_short());
    }

    #[test]
    fn empty_hash_and_missing_separator() {
        let t = Token::parse("K10::node:pw").unwrap();
        assert_eq!(
            (t.ca_hash(), t.username(), t.password()),
            (None, Some("node"), Some("pw"))
        );
        // No `::`: the rest is the credentials (k3s's SplitN gives one part).
        let t = Token::parse("K10user:pw").unwrap();
        assert_eq!(
            (t.ca_hash(), t.username(), t.password()),
            (None, Some("user"), Some("pw"))
        );
        // The password may contain colons: split at the first.
        let t = Token::parse(&format!("K10{HASH}::server:a:b")).unwrap();
        assert_eq!(t.password(), Some("a:b"));
        // Hashes typed in capitals compare as k3s's lowercase ones.
        let t = Token::parse(&format!("K10{}::s:p", HASH.to_uppercase())).unwrap();
        assert_eq!(t.ca_hash(), Some(HASH));
    }

    #[test]
    fn bootstrap_tokens() {
        let t = Token::parse("abcdef.0123456789abcdef").unwrap();
        assert!(t.is_bootstrap() && t.is_short() && t.ca_hash().is_none());
        let t = Token::parse(&format!("K10{HASH}::abcdef.0123456789abcdef")).unwrap();
        assert!(t.is_bootstrap() && !t.is_short());
        assert_eq!(t.ca_hash(), Some(HASH));
        // Not the shape: a bare password.
        assert!(
            !Token::parse("ABCDEF.0123456789abcdef")
                .unwrap()
                .is_bootstrap()
        );
    }

    #[test]
    fn garbage_is_refused_clearly() {
        assert_eq!(Token::parse(""), Err(TokenError::Empty));
        assert_eq!(Token::parse(" \n"), Err(TokenError::Empty));
        assert_eq!(
            Token::parse("K10abc::server:pw"),
            Err(TokenError::HashLength(3))
        );
        let not_hex = "z".repeat(64);
        assert_eq!(
            Token::parse(&format!("K10{not_hex}::server:pw")),
            Err(TokenError::HashNotHex)
        );
        assert_eq!(
            Token::parse(&format!("K10{HASH}::server:")),
            Err(TokenError::Format)
        );
        assert_eq!(
            Token::parse(&format!("K10{HASH}::nocolon")),
            Err(TokenError::Format)
        );
        assert_eq!(Token::parse("K10"), Err(TokenError::Format));
        assert_eq!(
            Token::parse("pass\nword"),
            Err(TokenError::ControlCharacters)
        );
    }

    #[test]
    fn secrets_stay_out_of_debug_and_errors() {
        let t = Token::parse(&format!("K10{HASH}::server:hunter2")).unwrap();
        let shown = format!("{t:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("server"));
        let t = Token::parse("abcdef.0123456789abcdef").unwrap();
        assert!(!format!("{t:?}").contains("0123456789abcdef"));
        let e = Token::parse("K10hunter2::x:").unwrap_err().to_string();
        assert!(!e.contains("hunter2"), "{e}");
    }
}
