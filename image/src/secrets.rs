//! Pod `imagePullSecrets`: Secrets of type `kubernetes.io/dockerconfigjson`
//! (`.dockerconfigjson`, `{"auths": {...}}`) or the older
//! `kubernetes.io/dockercfg` (`.dockercfg`, the map without `auths`), turned
//! into credentials per registry as the kubelet matches them: the key's host
//! (scheme and path dropped, `index.docker.io` meaning Docker Hub), with `*`
//! standing for one DNS label.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::registry::Credentials;

/// Largest secret payload read.
const MAX_SECRET: usize = 1 << 20;

/// Why a pull secret is unusable.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// Not JSON of the Docker config shape.
    #[error("pull secret is not a Docker config: {0}")]
    Format(String),
    /// An entry's `auth` is not base64 of `user:password`.
    #[error("pull secret entry {0:?}: auth is not base64 of user:password")]
    BadAuth(String),
}

#[derive(Deserialize)]
struct ConfigJson {
    auths: BTreeMap<String, Entry>,
}

#[derive(Deserialize, Default)]
struct Entry {
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
}

/// One secret entry: the host pattern, the repository path prefix (may be
/// empty) and the credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SecretEntry {
    host: String,
    path: String,
    credentials: Credentials,
}

/// Credentials from a pod's pull secrets, in the order given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PullSecrets {
    entries: Vec<SecretEntry>,
}

impl PullSecrets {
    /// Adds the entries of one secret's data (`.dockerconfigjson` or
    /// `.dockercfg`, already base64-decoded as the API's `data` is).
    pub fn add_docker_config(&mut self, bytes: &[u8]) -> Result<(), SecretError> {
        if bytes.len() > MAX_SECRET {
            return Err(SecretError::Format(format!(
                "larger than {MAX_SECRET} bytes"
            )));
        }
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| SecretError::Format(e.to_string()))?;
        let auths: BTreeMap<String, Entry> = if value.get("auths").is_some() {
            serde_json::from_value::<ConfigJson>(value)
                .map_err(|e| SecretError::Format(e.to_string()))?
                .auths
        } else {
            serde_json::from_value(value).map_err(|e| SecretError::Format(e.to_string()))?
        };
        for (key, entry) in auths {
            let Some(credentials) = entry_credentials(&key, entry)? else {
                continue;
            };
            let (host, path) = registry_key(&key);
            self.entries.push(SecretEntry {
                host,
                path,
                credentials,
            });
        }
        Ok(())
    }

    /// The credentials for an image of `registry` (`docker.io` for Docker
    /// Hub) and `repository`, as the kubelet picks them: among keys whose
    /// host matches and whose path (if any) is a prefix of the repository at
    /// a `/` boundary, the most specific (longest path) first; ties keep the
    /// order given.
    pub fn for_image(&self, registry: &str, repository: &str) -> Option<Credentials> {
        let registry = registry.to_ascii_lowercase();
        self.entries
            .iter()
            .filter(|e| host_matches(&e.host, &registry))
            .filter(|e| {
                e.path.is_empty()
                    || repository == e.path
                    || repository
                        .strip_prefix(e.path.as_str())
                        .is_some_and(|rest| rest.starts_with('/'))
            })
            // max_by_key keeps the last of equals: reverse to keep the first.
            .rev()
            .max_by_key(|e| e.path.len())
            .map(|e| e.credentials.clone())
    }

    /// [`for_image`](Self::for_image) for credentials that name no path.
    pub fn for_registry(&self, registry: &str) -> Option<Credentials> {
        self.for_image(registry, "")
    }

    /// Whether no credentials were given.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

fn entry_credentials(key: &str, entry: Entry) -> Result<Option<Credentials>, SecretError> {
    if let Some(token) = entry.identitytoken.filter(|t| !t.is_empty()) {
        return Ok(Some(Credentials::IdentityToken(token)));
    }
    if let (Some(username), Some(password)) = (&entry.username, &entry.password) {
        if !username.is_empty() || !password.is_empty() {
            return Ok(Some(Credentials::Basic {
                username: username.clone(),
                password: password.clone(),
            }));
        }
    }
    let Some(auth) = entry.auth.filter(|a| !a.is_empty()) else {
        return Ok(None);
    };
    use base64::Engine as _;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| SecretError::BadAuth(key.to_owned()))?;
    let (username, password) = decoded
        .split_once(':')
        .ok_or_else(|| SecretError::BadAuth(key.to_owned()))?;
    Ok(Some(Credentials::Basic {
        username: username.to_owned(),
        password: password.to_owned(),
    }))
}

/// The host and path of a config key: `https://index.docker.io/v1/` →
/// (`docker.io`, ``), `ghcr.io/org` → (`ghcr.io`, `org`).
fn registry_key(key: &str) -> (String, String) {
    let key = key.trim();
    let lower = key.to_ascii_lowercase();
    let rest = if lower.starts_with("https://") {
        &key[8..]
    } else if lower.starts_with("http://") {
        &key[7..]
    } else {
        key
    };
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let host = host.to_ascii_lowercase();
    match host.as_str() {
        // Docker Hub's keys carry an API path (`/v1/`), not a repository.
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" | "docker.io" => {
            ("docker.io".to_owned(), String::new())
        }
        _ => (host, path.trim_matches('/').to_owned()),
    }
}

/// `pattern` (a host, labels may be `*`) against `host`; ports must match.
fn host_matches(pattern: &str, host: &str) -> bool {
    let split = |s: &str| match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') || h.ends_with(']') => (h.to_owned(), Some(p.to_owned())),
        _ => (s.to_owned(), None),
    };
    let (pattern_host, pattern_port) = split(pattern);
    let (host, port) = split(host);
    if pattern_port != port {
        return false;
    }
    let pattern_labels: Vec<&str> = pattern_host.split('.').collect();
    let labels: Vec<&str> = host.split('.').collect();
    pattern_labels.len() == labels.len()
        && pattern_labels
            .iter()
            .zip(&labels)
            .all(|(p, l)| *p == "*" || p == l)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(u: &str, p: &str) -> Credentials {
        Credentials::Basic {
            username: u.into(),
            password: p.into(),
        }
    }

    #[test]
    fn dockerconfigjson_as_kubectl_writes_it() {
        // kubectl create secret docker-registry --docker-server=... writes both
        // the fields and `auth`.
        let json = br#"{"auths":{"https://index.docker.io/v1/":{"username":"u","password":"p","auth":"dTpw"},
            "registry.example.com:5000":{"auth":"YWxpY2U6czNjcjN0OndpdGg6Y29sb25z"},
            "*.corp.example":{"identitytoken":"refresh"},
            "empty.example":{}}}"#;
        let mut s = PullSecrets::default();
        s.add_docker_config(json).unwrap();
        assert_eq!(s.for_registry("docker.io"), Some(basic("u", "p")));
        assert_eq!(
            s.for_registry("registry.example.com:5000"),
            Some(basic("alice", "s3cr3t:with:colons"))
        );
        // The port is part of the match.
        assert_eq!(s.for_registry("registry.example.com"), None);
        assert_eq!(
            s.for_registry("eu.corp.example"),
            Some(Credentials::IdentityToken("refresh".into()))
        );
        // `*` is one label, not several.
        assert_eq!(s.for_registry("a.b.corp.example"), None);
        assert_eq!(s.for_registry("empty.example"), None);
        assert_eq!(s.for_registry("ghcr.io"), None);
    }

    #[test]
    fn legacy_dockercfg_and_first_match_wins() {
        let mut s = PullSecrets::default();
        s.add_docker_config(br#"{"ghcr.io":{"auth":"YTpi"}}"#)
            .unwrap();
        s.add_docker_config(br#"{"auths":{"ghcr.io":{"auth":"Yzpk"}}}"#)
            .unwrap();
        assert_eq!(s.for_registry("GHCR.io"), Some(basic("a", "b")));
    }

    #[test]
    fn paths_pick_the_most_specific_key() {
        let mut s = PullSecrets::default();
        s.add_docker_config(
            br#"{"auths":{"ghcr.io":{"auth":"YTpi"},"ghcr.io/org-b":{"auth":"Yzpk"},
                "https://ghcr.io/org-b/team/":{"auth":"ZTpm"}}}"#,
        )
        .unwrap();
        assert_eq!(s.for_image("ghcr.io", "org-a/app"), Some(basic("a", "b")));
        assert_eq!(s.for_image("ghcr.io", "org-b/app"), Some(basic("c", "d")));
        assert_eq!(
            s.for_image("ghcr.io", "org-b/team/x"),
            Some(basic("e", "f"))
        );
        // A prefix only counts at a '/' boundary.
        assert_eq!(s.for_image("ghcr.io", "org-bb/app"), Some(basic("a", "b")));
        let mut only_path = PullSecrets::default();
        only_path
            .add_docker_config(br#"{"auths":{"ghcr.io/org-b":{"auth":"Yzpk"}}}"#)
            .unwrap();
        assert_eq!(only_path.for_image("ghcr.io", "org-a/app"), None);
    }

    #[test]
    fn malformed_secrets_are_errors() {
        let mut s = PullSecrets::default();
        for bad in [
            &b"not json"[..],
            br#"{"auths": 3}"#,
            br#"{"auths":{"x":{"auth":"!!!"}}}"#,
            br#"{"auths":{"x":{"auth":"bm9jb2xvbg=="}}}"#,
            br#"[1,2]"#,
        ] {
            assert!(
                s.add_docker_config(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(s.is_empty());
        assert!(s.add_docker_config(&vec![b' '; MAX_SECRET + 1]).is_err());
    }
}
