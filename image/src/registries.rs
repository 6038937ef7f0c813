//! Registry configuration in k3s's `registries.yaml` format, so a K3s user can
//! drop their existing file in (`/etc/rancher/k3s/registries.yaml`, where
//! `armlet images` also reads it by default):
//!
//! ```yaml
//! mirrors:
//!   docker.io:
//!     endpoint: ["https://mirror.local:5000", "http://10.0.0.5:5000"]
//!     rewrite:
//!       "^rancher/(.*)": "mirrored/rancher/$1"
//!   "*":
//!     endpoint: ["https://catch-all.local"]
//! configs:
//!   "mirror.local:5000":
//!     auth: { username: u, password: p }
//!     tls: { ca_file: /etc/ssl/mirror-ca.pem, insecure_skip_verify: false }
//! ```
//!
//! [`Registries::endpoints`] turns a reference into the endpoints to try, in
//! order, as k3s's generated containerd configuration does: the registry's own
//! mirror entry (or the `"*"` entry when it has none), each endpoint with the
//! mirror's rewrites applied to the repository, then the registry itself as the
//! last resort, with no rewrite. Credentials and TLS settings are looked up by
//! each endpoint's host (with port), as k3s's `configs` are keyed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::reference::{DEFAULT_REGISTRY, Reference};

/// Largest registries.yaml read: it is a small hand-written file.
const MAX_FILE: u64 = 1 << 20;

/// Why registries.yaml could not be used.
#[derive(Debug, thiserror::Error)]
pub enum RegistriesError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// It is not valid YAML of the expected shape.
    #[error("registries.yaml: {0}")]
    Parse(#[from] serde_yaml_ng::Error),
    /// A value is wrong; the message names the key.
    #[error("registries.yaml: {0}")]
    Invalid(String),
}

/// The whole file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registries {
    /// Mirrors by registry host (`docker.io`, `registry.local:5000`, `*`).
    #[serde(default)]
    pub mirrors: BTreeMap<String, Mirror>,
    /// Credentials and TLS settings by endpoint host.
    #[serde(default)]
    pub configs: BTreeMap<String, RegistryConfig>,
}

/// One registry's mirrors.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mirror {
    /// Endpoint URLs, tried in order.
    #[serde(default)]
    pub endpoint: Vec<String>,
    /// Repository rewrites for these endpoints: regular expression → replacement
    /// (`$1` refers to a group).
    #[serde(default)]
    pub rewrite: BTreeMap<String, String>,
}

/// Settings for one endpoint host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// Credentials.
    #[serde(default)]
    pub auth: Option<Auth>,
    /// TLS settings.
    #[serde(default)]
    pub tls: Option<Tls>,
}

/// Credentials, as k3s accepts them: user and password, or `auth`
/// (base64 of `user:password`), or an identity token.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Auth {
    /// User name.
    #[serde(default)]
    pub username: Option<String>,
    /// Password.
    #[serde(default)]
    pub password: Option<String>,
    /// base64 of `username:password`.
    #[serde(default)]
    pub auth: Option<String>,
    /// An OAuth2 refresh token for the registry's token service.
    #[serde(default)]
    pub identitytoken: Option<String>,
}

impl std::fmt::Debug for Auth {
    /// Never prints a secret (these end up in logs).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("auth", &self.auth.as_ref().map(|_| "<redacted>"))
            .field(
                "identitytoken",
                &self.identitytoken.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

impl Auth {
    /// User name and password, from the fields or decoded from `auth`.
    pub fn credentials(&self) -> Result<Option<(String, String)>, RegistriesError> {
        if let (Some(u), Some(p)) = (&self.username, &self.password) {
            return Ok(Some((u.clone(), p.clone())));
        }
        let Some(encoded) = &self.auth else {
            return Ok(None);
        };
        use base64::Engine as _;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| RegistriesError::Invalid("auth.auth is not base64 text".into()))?;
        let (user, password) = decoded.split_once(':').ok_or_else(|| {
            RegistriesError::Invalid("auth.auth does not decode to user:password".into())
        })?;
        Ok(Some((user.to_owned(), password.to_owned())))
    }
}

/// TLS settings for an endpoint host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    /// Client certificate (PEM).
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// Client key (PEM).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// CA bundle to trust instead of the system roots (PEM).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Accept any certificate (k3s allows it; say so loudly in logs).
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

/// Where an endpoint is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointUrl {
    /// `http` for plain HTTP (only when configured so), else `https`.
    pub plain_http: bool,
    /// Host with optional port: the key for `configs`.
    pub host: String,
    /// Path prefix before `/v2/` (empty for most registries).
    pub prefix: String,
}

impl EndpointUrl {
    /// Parses `https://host[:port][/prefix]` or `http://...`; a bare host means
    /// https, as in k3s.
    pub fn parse(url: &str) -> Result<Self, RegistriesError> {
        let invalid = |why: &str| RegistriesError::Invalid(format!("endpoint {url:?}: {why}"));
        let (plain_http, rest) = if let Some(r) = url.strip_prefix("https://") {
            (false, r)
        } else if let Some(r) = url.strip_prefix("http://") {
            (true, r)
        } else if url.contains("://") {
            return Err(invalid("only http:// and https:// are supported"));
        } else {
            (false, url)
        };
        let (host, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if host.is_empty()
            || !host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
        {
            return Err(invalid("no valid host"));
        }
        // containerd accepts endpoints written with their /v2 suffix.
        let path = path.trim_end_matches('/');
        let prefix = path.strip_suffix("/v2").unwrap_or(path).to_owned();
        if prefix.contains("..") || prefix.contains(['?', '#', ' ']) {
            return Err(invalid("the path must be a plain prefix"));
        }
        Ok(Self {
            plain_http,
            host: host.to_owned(),
            prefix,
        })
    }

    /// The URL of the registry API root (`https://host/prefix/v2/`).
    pub fn api_root(&self) -> String {
        let scheme = if self.plain_http { "http" } else { "https" };
        format!("{scheme}://{}{}/v2/", self.host, self.prefix)
    }
}

/// One place to pull an image from, with everything needed to talk to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Where.
    pub url: EndpointUrl,
    /// The repository path to ask for there (after a mirror's rewrite).
    pub repository: String,
    /// Credentials for this host, if configured.
    pub auth: Option<Auth>,
    /// TLS settings for this host, if configured.
    pub tls: Option<Tls>,
}

impl Registries {
    /// Parses and checks a registries.yaml text.
    pub fn parse(yaml: &str) -> Result<Self, RegistriesError> {
        // An empty file is "no configuration", as in k3s.
        if yaml.trim().is_empty() {
            return Ok(Self::default());
        }
        let registries: Self = serde_yaml_ng::from_str(yaml)?;
        registries.validate()?;
        Ok(registries)
    }

    /// Reads registries.yaml; a missing file is no configuration.
    pub fn load(path: &Path) -> Result<Self, RegistriesError> {
        use std::io::Read as _;
        let read_err = |source| RegistriesError::Read {
            path: path.to_path_buf(),
            source,
        };
        let file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(read_err(e)),
        };
        let mut text = String::new();
        file.take(MAX_FILE + 1)
            .read_to_string(&mut text)
            .map_err(read_err)?;
        if text.len() as u64 > MAX_FILE {
            return Err(RegistriesError::Invalid(format!(
                "{} is larger than {MAX_FILE} bytes",
                path.display()
            )));
        }
        Self::parse(&text)
    }

    fn validate(&self) -> Result<(), RegistriesError> {
        for (registry, mirror) in &self.mirrors {
            for endpoint in &mirror.endpoint {
                EndpointUrl::parse(endpoint)
                    .map_err(|e| RegistriesError::Invalid(format!("mirrors.{registry}: {e}")))?;
            }
            for pattern in mirror.rewrite.keys() {
                regex_lite::Regex::new(pattern).map_err(|e| {
                    RegistriesError::Invalid(format!(
                        "mirrors.{registry}.rewrite: {pattern:?} is not a valid pattern: {e}"
                    ))
                })?;
            }
        }
        for (host, config) in &self.configs {
            if let Some(auth) = &config.auth {
                auth.credentials()
                    .map_err(|e| RegistriesError::Invalid(format!("configs.{host}: {e}")))?;
            }
        }
        Ok(())
    }

    /// The endpoints to try for `reference`, in order.
    pub fn endpoints(&self, reference: &Reference) -> Vec<Endpoint> {
        let registry = reference.registry();
        let mirror = self.mirrors.get(registry).or_else(|| self.mirrors.get("*"));
        let mut endpoints = Vec::new();
        if let Some(mirror) = mirror {
            let repository = rewrite(&mirror.rewrite, reference.repository());
            for url in &mirror.endpoint {
                // Checked by validate(); an unparsable one is skipped, not fatal.
                if let Ok(url) = EndpointUrl::parse(url) {
                    endpoints.push(self.endpoint(url, repository.clone()));
                }
            }
        }
        let upstream = EndpointUrl {
            plain_http: false,
            host: if registry == DEFAULT_REGISTRY {
                "registry-1.docker.io".to_owned()
            } else {
                registry.to_owned()
            },
            prefix: String::new(),
        };
        if !endpoints.iter().any(|e| e.url == upstream) {
            let mut last = self.endpoint(upstream, reference.repository().to_owned());
            // Credentials for Docker Hub are written under docker.io in k3s.
            if last.auth.is_none() && last.tls.is_none() {
                if let Some(c) = self.config_for(registry) {
                    last.auth = c.auth.clone();
                    last.tls = c.tls.clone();
                }
            }
            endpoints.push(last);
        }
        endpoints
    }

    /// The `configs` entry for `host`; k3s takes `"*"` for hosts without
    /// one of their own (a specific entry, even empty, wins).
    fn config_for(&self, host: &str) -> Option<&RegistryConfig> {
        self.configs.get(host).or_else(|| self.configs.get("*"))
    }

    fn endpoint(&self, url: EndpointUrl, repository: String) -> Endpoint {
        let config = self.config_for(&url.host);
        Endpoint {
            repository,
            auth: config.and_then(|c| c.auth.clone()),
            tls: config.and_then(|c| c.tls.clone()),
            url,
        }
    }
}

/// Applies the first rewrite whose pattern matches (patterns in name order, as
/// the map is sorted; k3s users write one per repository prefix).
fn rewrite(rules: &BTreeMap<String, String>, repository: &str) -> String {
    for (pattern, replacement) in rules {
        if let Ok(re) = regex_lite::Regex::new(pattern) {
            if re.is_match(repository) {
                return re.replace(repository, replacement.as_str()).into_owned();
            }
        }
    }
    repository.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const K3S_EXAMPLE: &str = r#"
mirrors:
  docker.io:
    endpoint:
      - "https://mirror.local:5000"
      - "http://10.0.0.5:5000/v2"
    rewrite:
      "^rancher/(.*)": "mirrored/rancher/$1"
  "*":
    endpoint:
      - "https://catch-all.local/prefix"
configs:
  "mirror.local:5000":
    auth:
      username: xxxxxx
      password: yyyyyy
    tls:
      ca_file: /etc/ssl/mirror-ca.pem
  "10.0.0.5:5000":
    auth:
      auth: dXNlcjpwYXNz
  "ghcr.io":
    tls:
      insecure_skip_verify: true
"#;

    fn r(s: &str) -> Reference {
        s.parse().unwrap()
    }

    #[test]
    fn mirrors_rewrites_and_the_upstream_fallback() {
        let reg = Registries::parse(K3S_EXAMPLE).unwrap();
        let eps = reg.endpoints(&r("rancher/k3s:v1.30"));
        let urls: Vec<String> = eps.iter().map(|e| e.url.api_root()).collect();
        assert_eq!(
            urls,
            [
                "https://mirror.local:5000/v2/",
                "http://10.0.0.5:5000/v2/",
                "https://registry-1.docker.io/v2/"
            ]
        );
        // Rewrites apply on the mirrors, never upstream.
        assert_eq!(eps[0].repository, "mirrored/rancher/k3s");
        assert_eq!(eps[1].repository, "mirrored/rancher/k3s");
        assert_eq!(eps[2].repository, "rancher/k3s");
        assert_eq!(
            eps[0].auth.as_ref().unwrap().credentials().unwrap(),
            Some(("xxxxxx".into(), "yyyyyy".into()))
        );
        assert_eq!(
            eps[0].tls.as_ref().unwrap().ca_file.as_deref(),
            Some(Path::new("/etc/ssl/mirror-ca.pem"))
        );
        assert_eq!(
            eps[1].auth.as_ref().unwrap().credentials().unwrap(),
            Some(("user".into(), "pass".into()))
        );
        assert!(eps[2].auth.is_none());
        // A repository the rewrite does not match keeps its path.
        assert_eq!(
            reg.endpoints(&r("busybox"))[0].repository,
            "library/busybox"
        );
        // "*" serves registries without an entry of their own, then upstream.
        let eps = reg.endpoints(&r("ghcr.io/o/app:v1"));
        assert_eq!(eps.len(), 2);
        assert_eq!(eps[0].url.api_root(), "https://catch-all.local/prefix/v2/");
        assert_eq!(eps[1].url.api_root(), "https://ghcr.io/v2/");
        assert!(eps[1].tls.as_ref().unwrap().insecure_skip_verify);
    }

    #[test]
    fn the_star_config_applies_where_no_host_has_its_own() {
        let reg = Registries::parse(
            "configs:\n  \"*\":\n    tls:\n      insecure_skip_verify: true\n  \
             own.example:\n    auth:\n      username: u\n      password: p\n",
        )
        .unwrap();
        let eps = reg.endpoints(&r("other.example/app"));
        assert!(eps[0].tls.as_ref().unwrap().insecure_skip_verify);
        let eps = reg.endpoints(&r("own.example/app"));
        assert!(eps[0].tls.is_none());
        assert!(eps[0].auth.is_some());
    }

    #[test]
    fn no_file_means_upstream_only() {
        let reg = Registries::load(Path::new("/nonexistent/registries.yaml")).unwrap();
        assert_eq!(reg, Registries::default());
        assert_eq!(Registries::parse("").unwrap(), Registries::default());
        let eps = reg.endpoints(&r("localhost:5000/app"));
        assert_eq!(eps.len(), 1);
        assert_eq!(eps[0].url.api_root(), "https://localhost:5000/v2/");
    }

    #[test]
    fn bad_files_say_what_is_wrong() {
        let cases = [
            ("mirrors: [1, 2]", "invalid type"),
            (
                "mirrors:\n  docker.io:\n    endpoints: [x]",
                "unknown field",
            ),
            (
                "mirrors:\n  docker.io:\n    endpoint: [\"ftp://x\"]",
                "only http",
            ),
            (
                "mirrors:\n  docker.io:\n    endpoint: [\"https://\"]",
                "no valid host",
            ),
            (
                "mirrors:\n  d:\n    rewrite: {\"(\": x}",
                "not a valid pattern",
            ),
            ("configs:\n  h:\n    auth: {auth: \"!!\"}", "not base64"),
            (
                "configs:\n  h:\n    auth: {auth: dXNlcg==}",
                "user:password",
            ),
            ("configs:\n  h:\n    tls: {insecure: true}", "unknown field"),
            (":\n- [", ""),
        ];
        for (yaml, want) in cases {
            let err = Registries::parse(yaml).unwrap_err().to_string();
            assert!(err.contains(want), "{yaml:?}: {err}");
        }
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let reg = Registries::parse(K3S_EXAMPLE).unwrap();
        let text = format!("{reg:?}");
        assert!(
            !text.contains("yyyyyy") && !text.contains("dXNlcjpwYXNz"),
            "{text}"
        );
        assert!(text.contains("xxxxxx"));
    }
}
