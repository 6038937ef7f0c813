//! The node password: the secret with which a node claims its name.
//!
//! The server keeps a hash of the first password it saw for each node name
//! (Secret `kube-system/<node>.node-password.k3s`) and refuses certificates
//! for that name with any other (HTTP 403). So the password must survive
//! restarts and reinstalls: it lives where k3s keeps it,
//! `/etc/rancher/node/password` (directory 0755, file 0600), created on
//! first use as 16 random bytes in lowercase hex plus a newline, read back
//! with whitespace trimmed (k3s `ensureNodePassword`).

use std::path::{Path, PathBuf};

use ring::rand::SecureRandom as _;

use crate::files::{self, FileError};

/// Where k3s keeps the node password.
pub const DEFAULT_NODE_PASSWORD_FILE: &str = "/etc/rancher/node/password";

/// Why the node password could not be had.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    /// The file or its directory could not be read or written.
    #[error(transparent)]
    File(#[from] FileError),
    /// The file exists but holds nothing: it cannot match any claim, and
    /// replacing it silently could lock the node out of its own name.
    #[error(
        "{} is empty: restore the node's password, or delete the file to make a new one \
         (and the node's node-password Secret on the server)", .0.display()
    )]
    Empty(PathBuf),
    /// The system's random generator failed.
    #[error("no randomness for a new node password")]
    Random,
}

/// The node password. `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct NodePassword(String);

impl std::fmt::Debug for NodePassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NodePassword(<redacted>)")
    }
}

impl NodePassword {
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

/// The password in `path`, made and saved first if the file does not exist.
pub(crate) fn ensure_node_password(path: &Path) -> Result<NodePassword, PasswordError> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let password = text.trim();
            if password.is_empty() {
                return Err(PasswordError::Empty(path.to_path_buf()));
            }
            return Ok(NodePassword(password.to_owned()));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(FileError::new("reading", path, e).into()),
    }
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| PasswordError::Random)?;
    let password = hex::encode(bytes);
    if let Some(dir) = path.parent() {
        files::create_dir(dir, 0o755)?;
    }
    files::write_atomic(path, format!("{password}\n").as_bytes(), 0o600)?;
    tracing::info!(path = %path.display(), "created a new node password");
    Ok(NodePassword(password))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::tests::{TempDir, mode};

    #[test]
    fn created_once_then_reused() {
        let dir = TempDir::new("password");
        let path = dir.path().join("etc/rancher/node/password");
        let first = ensure_node_password(&path).unwrap();
        assert_eq!(first.as_str().len(), 32);
        assert!(
            first
                .as_str()
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("{}\n", first.as_str())
        );
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o755);
        let again = ensure_node_password(&path).unwrap();
        assert_eq!(first, again);
    }

    #[test]
    fn an_existing_password_is_read_trimmed() {
        let dir = TempDir::new("password-existing");
        let path = dir.path().join("password");
        std::fs::write(&path, "  d40ec29d35d20252721863fdefdbe4e8 \n").unwrap();
        assert_eq!(
            ensure_node_password(&path).unwrap().as_str(),
            "d40ec29d35d20252721863fdefdbe4e8"
        );
        std::fs::write(&path, "\n").unwrap();
        let e = ensure_node_password(&path).unwrap_err().to_string();
        assert!(e.contains("is empty"), "{e}");
    }

    #[test]
    fn debug_hides_it() {
        let p = NodePassword("d40ec29d35d20252721863fdefdbe4e8".into());
        assert!(!format!("{p:?}").contains("d40e"));
    }
}
