//! Image references as Kubernetes and containerd read them: `busybox` means
//! `docker.io/library/busybox:latest`, `rancher/k3s:v1.30` means
//! `docker.io/rancher/k3s:v1.30`, and a first component with a `.` or `:` (or
//! `localhost`) is a registry host.
//!
//! The normalisation is Docker's (the `reference` package containerd and the
//! kubelet use): a pod spec's `image:` field names the same image on armlet as on
//! a k3s node, and `registries.yaml` mirrors match on the normalised host.

use std::fmt;
use std::str::FromStr;

use crate::digest::Digest;

/// The registry an unqualified name lives on.
pub const DEFAULT_REGISTRY: &str = "docker.io";
/// The tag an untagged, undigested reference means.
pub const DEFAULT_TAG: &str = "latest";

/// Longest reference accepted (Docker's limit on a repository name is 255; the
/// host, tag and digest come on top).
const MAX_LEN: usize = 512;

/// Why a reference was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    /// The text is not an image reference; the reason says which part is wrong.
    #[error("invalid image reference {reference:?}: {reason}")]
    Invalid {
        /// The text given.
        reference: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// A normalised image reference: registry host, repository path, and a tag
/// and/or digest (a digest, when present, decides what is pulled).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

impl Reference {
    /// The registry host, with a port if one was given (`docker.io`,
    /// `registry.local:5000`).
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The repository path on that registry (`library/busybox`).
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The tag; `latest` when neither tag nor digest was given.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest, when the reference pins one.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// What to ask the registry's manifest endpoint for: the digest if pinned,
    /// else the tag.
    pub fn manifest_reference(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => DEFAULT_TAG.to_owned(),
        }
    }

    /// The same image on another repository path (a mirror's rewrite).
    pub fn with_repository(&self, repository: String) -> Self {
        Self {
            repository,
            ..self.clone()
        }
    }
}

impl fmt::Display for Reference {
    /// The fully qualified form, as `crictl images` shows it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = |reason| ReferenceError::Invalid {
            reference: s.to_owned(),
            reason,
        };
        if s.is_empty() {
            return Err(invalid("it is empty"));
        }
        if s.len() > MAX_LEN {
            return Err(invalid("it is too long"));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((rest, d)) => (
                rest,
                Some(
                    d.parse::<Digest>()
                        .map_err(|_| invalid("the digest is not sha256:<64 hex digits>"))?,
                ),
            ),
            None => (s, None),
        };
        // A tag follows the last ':' after the last '/' (a ':' before it is a port).
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(tag) = tag {
            if !valid_tag(tag) {
                return Err(invalid(
                    "the tag must be 1 to 128 of [A-Za-z0-9_.-], not starting with . or -",
                ));
            }
        }
        let (registry, repository) = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_owned(), rest.to_owned())
            }
            _ => (DEFAULT_REGISTRY.to_owned(), name.to_owned()),
        };
        if !valid_host(&registry) {
            return Err(invalid(
                "the registry is not a host name with an optional port",
            ));
        }
        let registry = if registry == "index.docker.io" {
            DEFAULT_REGISTRY.to_owned()
        } else {
            registry
        };
        if repository.is_empty() || !repository.split('/').all(valid_path_component) {
            return Err(invalid(
                "the repository must be lowercase [a-z0-9] parts joined by '/', '.', '_', '__' or '-'",
            ));
        }
        // Docker Hub's official images live under library/.
        let repository = if registry == DEFAULT_REGISTRY && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_owned()),
            (None, None) => Some(DEFAULT_TAG.to_owned()),
            (None, Some(_)) => None,
        };
        Ok(Self {
            registry,
            repository,
            tag,
            digest,
        })
    }
}

fn valid_tag(tag: &str) -> bool {
    (1..=128).contains(&tag.len())
        && !tag.starts_with(['.', '-'])
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

fn valid_host(host: &str) -> bool {
    let (name, port) = match host.rsplit_once(':') {
        Some((n, p)) => (n, Some(p)),
        None => (host, None),
    };
    if port.is_some_and(|p| p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit())) {
        return false;
    }
    !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// A path component: lowercase alphanumerics separated by `.`, `_`, `__` or
/// runs of `-` (Docker's grammar).
fn valid_path_component(part: &str) -> bool {
    let bytes = part.as_bytes();
    if bytes.is_empty()
        || !bytes[0].is_ascii_lowercase() && !bytes[0].is_ascii_digit()
        || !bytes[bytes.len() - 1].is_ascii_lowercase() && !bytes[bytes.len() - 1].is_ascii_digit()
    {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b.is_ascii_lowercase() || b.is_ascii_digit() {
            i += 1;
            continue;
        }
        // A separator: '.', '_', '__' or one or more '-', followed by alphanumerics.
        let run_end = match b {
            b'.' => i + 1,
            b'_' if bytes.get(i + 1) == Some(&b'_') => i + 2,
            b'_' => i + 1,
            b'-' => bytes[i..]
                .iter()
                .position(|&c| c != b'-')
                .map_or(bytes.len(), |n| i + n),
            _ => return false,
        };
        match bytes.get(run_end) {
            Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit() => i = run_end,
            _ => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn norm(s: &str) -> String {
        s.parse::<Reference>().unwrap().to_string()
    }

    #[test]
    fn names_are_normalised_as_docker_does() {
        assert_eq!(norm("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(norm("busybox:1.36"), "docker.io/library/busybox:1.36");
        assert_eq!(
            norm("rancher/k3s:v1.30.2-k3s1"),
            "docker.io/rancher/k3s:v1.30.2-k3s1"
        );
        assert_eq!(
            norm("index.docker.io/library/nginx"),
            "docker.io/library/nginx:latest"
        );
        assert_eq!(norm("docker.io/nginx"), "docker.io/library/nginx:latest");
        assert_eq!(norm("localhost/app"), "localhost/app:latest");
        assert_eq!(norm("localhost:5000/app:v2"), "localhost:5000/app:v2");
        assert_eq!(
            norm("registry.local:5000/team/app"),
            "registry.local:5000/team/app:latest"
        );
        assert_eq!(norm("quay.io/a/b/c:x_y.z-1"), "quay.io/a/b/c:x_y.z-1");
        assert_eq!(
            norm(&format!("busybox@{D}")),
            format!("docker.io/library/busybox@{D}")
        );
        assert_eq!(
            norm(&format!("ghcr.io/o/r:v1@{D}")),
            format!("ghcr.io/o/r:v1@{D}")
        );
        // A first component without '.' or ':' is a Docker Hub user, not a host.
        let r: Reference = "myregistry/app".parse().unwrap();
        assert_eq!(
            (r.registry(), r.repository()),
            ("docker.io", "myregistry/app")
        );
        let r: Reference = format!("ghcr.io/o/r:v1@{D}").parse().unwrap();
        assert_eq!(r.manifest_reference(), D);
        let r: Reference = "ghcr.io/o/r:v1".parse().unwrap();
        assert_eq!(r.manifest_reference(), "v1");
    }

    #[test]
    fn malformed_references_are_refused() {
        for bad in [
            "",
            "Busybox",
            "busybox:",
            "busybox:-x",
            "busybox:.x",
            "a//b",
            "a/",
            "/a",
            "a__-b",
            "a-",
            "-a",
            "busybox@sha256:abc",
            "busybox@md5:00",
            "host:99999999/app",
            "ho_st.io/app",
            "a b",
            "../../etc",
            "x:y:z",
        ] {
            assert!(bad.parse::<Reference>().is_err(), "{bad:?} was accepted");
        }
        assert!("a".repeat(600).parse::<Reference>().is_err());
        assert!(
            format!("a:{}", "t".repeat(129))
                .parse::<Reference>()
                .is_err()
        );
        let err = "Busybox".parse::<Reference>().unwrap_err().to_string();
        assert!(
            err.contains("\"Busybox\"") && err.contains("lowercase"),
            "{err}"
        );
    }
}
