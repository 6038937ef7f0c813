//! Choosing the manifest for this node from an image index.
//!
//! The matching follows containerd's `platforms` package: names are normalised
//! (`aarch64` is `arm64`, an `arm` entry without a variant is `arm/v7`, amd64
//! `v1` is plain amd64) and a node accepts, in order of preference, the images
//! its CPU can run: an `arm/v7` node takes v7, then v6, then v5, never v8. When
//! nothing fits, the error lists every platform the image has, so a user reads
//! "no linux/arm/v7 image" at pull time instead of "exec format error" at start.

use std::fmt;
use std::str::FromStr;

use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex};

/// The annotation BuildKit puts on the index entries that carry build
/// attestations (SBOM, provenance) rather than a runnable image.
const REFERENCE_TYPE: &str = "vnd.docker.reference.type";
/// The value of [`REFERENCE_TYPE`] for attestation manifests.
const ATTESTATION: &str = "attestation-manifest";

/// Why no manifest could be chosen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlatformError {
    /// Nothing in the index (or the single image's config) runs on this node.
    #[error("no {want} image in {within}; it has: {}", list(available))]
    NoMatch {
        /// The platform this node needs.
        want: Platform,
        /// Where we looked: "index" or "image config".
        within: &'static str,
        /// Every runnable platform the image offers, in index order.
        available: Vec<Platform>,
    },
    /// The bytes are not an image index / manifest list.
    #[error("image index is not valid JSON of the expected shape: {0}")]
    Parse(String),
    /// A platform string that is not `os/arch[/variant]`.
    #[error("platform {0:?} is not of the form os/arch[/variant]")]
    Malformed(String),
}

/// Formats the available platforms for [`PlatformError::NoMatch`].
fn list(available: &[Platform]) -> String {
    if available.is_empty() {
        return "no platform-specific images".to_owned();
    }
    available
        .iter()
        .map(Platform::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// An OS/architecture/variant triple, normalised as containerd does.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Platform {
    /// Operating system, as Go's GOOS (`linux`).
    pub os: String,
    /// CPU architecture, as Go's GOARCH (`amd64`, `arm64`, `arm`).
    pub architecture: String,
    /// CPU variant (`v7`, `v8`), empty when none applies.
    pub variant: String,
}

impl Platform {
    /// A platform from its parts, normalised (`aarch64` → `arm64`,
    /// `arm` without variant → `arm/v7`, amd64 `v1` → no variant, `7` → `v7`).
    pub fn new(os: &str, architecture: &str, variant: &str) -> Self {
        let os = os.to_ascii_lowercase();
        let architecture = architecture.to_ascii_lowercase();
        let variant = variant.to_ascii_lowercase();
        let (architecture, variant) = match (architecture.as_str(), variant.as_str()) {
            ("x86_64" | "x86-64" | "amd64", "v1") => ("amd64".to_owned(), String::new()),
            ("x86_64" | "x86-64", v) => ("amd64".to_owned(), v.to_owned()),
            ("i386" | "i686", v) => ("386".to_owned(), v.to_owned()),
            ("aarch64" | "arm64", "8") => ("arm64".to_owned(), "v8".to_owned()),
            ("aarch64", v) => ("arm64".to_owned(), v.to_owned()),
            ("armhf", _) => ("arm".to_owned(), "v7".to_owned()),
            ("armel", _) => ("arm".to_owned(), "v6".to_owned()),
            // An arm image without a variant is, by containerd's convention, v7:
            // that is what nearly every such image was built for.
            ("arm", "" | "7") => ("arm".to_owned(), "v7".to_owned()),
            ("arm", v @ ("5" | "6" | "8")) => ("arm".to_owned(), format!("v{v}")),
            (a, v) => (a.to_owned(), v.to_owned()),
        };
        Self {
            os,
            architecture,
            variant,
        }
    }

    /// The platform this binary was built for: the node's own.
    pub fn host() -> Self {
        if cfg!(target_arch = "aarch64") {
            Self::new("linux", "arm64", "v8")
        } else if cfg!(target_arch = "arm") {
            Self::new("linux", "arm", "v7")
        } else if cfg!(target_arch = "x86_64") {
            Self::new("linux", "amd64", "")
        } else {
            // Not a target armlet ships for; the name still makes errors readable.
            Self::new("linux", std::env::consts::ARCH, "")
        }
    }

    /// The platform of an index entry, if it has one.
    fn of_descriptor(descriptor: &Descriptor) -> Option<Self> {
        let p = descriptor.platform().as_ref()?;
        Some(Self::new(
            &p.os().to_string(),
            &p.architecture().to_string(),
            p.variant().as_deref().unwrap_or(""),
        ))
    }

    /// How well an image built for `have` suits a node that is `self`: `None`
    /// if it cannot run, otherwise lower is better.
    fn rank(&self, have: &Platform) -> Option<usize> {
        if self.os != have.os || self.architecture != have.architecture {
            return None;
        }
        let preference: Vec<&str> = match self.architecture.as_str() {
            // An exact v8 first, then an arm64 image that names no variant.
            "arm64" => match self.variant.as_str() {
                "" | "v8" => vec!["v8", ""],
                v => vec![v, "v8", ""],
            },
            // A 32-bit ARM CPU runs code for its own and older variants only.
            "arm" => match self.variant.as_str() {
                "v8" => vec!["v8", "v7", "v6", "v5"],
                "v7" => vec!["v7", "v6", "v5"],
                "v6" => vec!["v6", "v5"],
                v => vec![v],
            },
            // amd64 microarchitecture levels are backwards compatible.
            "amd64" => match self.variant.as_str() {
                "v4" => vec!["v4", "v3", "v2", ""],
                "v3" => vec!["v3", "v2", ""],
                "v2" => vec!["v2", ""],
                v => vec![v],
            },
            _ => vec![self.variant.as_str()],
        };
        preference.iter().position(|v| *v == have.variant)
    }

    /// Whether this entry is not a runnable image (unknown/unknown is how
    /// BuildKit marks attestation manifests).
    fn is_placeholder(&self) -> bool {
        self.os == "unknown" || self.architecture == "unknown"
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if !self.variant.is_empty() {
            write!(f, "/{}", self.variant)?;
        }
        Ok(())
    }
}

impl FromStr for Platform {
    type Err = PlatformError;

    /// Parses `os/arch` or `os/arch/variant` (as in `--platform`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split('/').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err(PlatformError::Malformed(s.to_owned()));
        }
        match parts.as_slice() {
            [os, arch] => Ok(Self::new(os, arch, "")),
            [os, arch, variant] => Ok(Self::new(os, arch, variant)),
            _ => Err(PlatformError::Malformed(s.to_owned())),
        }
    }
}

/// Whether an index entry is a build attestation rather than an image.
fn is_attestation(descriptor: &Descriptor) -> bool {
    descriptor
        .annotations()
        .as_ref()
        .and_then(|a| a.get(REFERENCE_TYPE))
        .is_some_and(|v| v == ATTESTATION)
}

/// Parses an OCI image index or a Docker manifest list (same JSON shape), so
/// that garbage from a registry is an error and never a panic.
pub fn parse_index(json: &[u8]) -> Result<ImageIndex, PlatformError> {
    serde_json::from_slice(json).map_err(|e| PlatformError::Parse(e.to_string()))
}

/// Picks the manifest in `index` that best suits a node of platform `want`.
///
/// Entries without a platform and attestation manifests are skipped; among
/// the rest the best-ranked wins, and on a tie the first in the index.
pub fn select<'a>(index: &'a ImageIndex, want: &Platform) -> Result<&'a Descriptor, PlatformError> {
    let mut best: Option<(usize, &Descriptor)> = None;
    let mut available: Vec<Platform> = Vec::new();
    for descriptor in index.manifests() {
        if is_attestation(descriptor) {
            continue;
        }
        let Some(have) = Platform::of_descriptor(descriptor) else {
            continue;
        };
        if have.is_placeholder() {
            continue;
        }
        if let Some(rank) = want.rank(&have) {
            if best.is_none_or(|(r, _)| rank < r) {
                best = Some((rank, descriptor));
            }
        }
        if !available.contains(&have) {
            available.push(have);
        }
    }
    match best {
        Some((_, descriptor)) => Ok(descriptor),
        None => Err(PlatformError::NoMatch {
            want: want.clone(),
            within: "index",
            available,
        }),
    }
}

/// Checks that a single-platform image (one pulled without an index) was
/// built for `want`: its config names the architecture, and a mismatch here is
/// the only warning before "exec format error".
pub fn check_config(config: &ImageConfiguration, want: &Platform) -> Result<(), PlatformError> {
    let have = Platform::new(
        &config.os().to_string(),
        &config.architecture().to_string(),
        config.variant().as_deref().unwrap_or(""),
    );
    if want.rank(&have).is_some() {
        Ok(())
    } else {
        Err(PlatformError::NoMatch {
            want: want.clone(),
            within: "image config",
            available: vec![have],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGESTS: [&str; 16] = [
        "0000000000000000000000000000000000000000000000000000000000000000",
        "1111111111111111111111111111111111111111111111111111111111111111",
        "2222222222222222222222222222222222222222222222222222222222222222",
        "3333333333333333333333333333333333333333333333333333333333333333",
        "4444444444444444444444444444444444444444444444444444444444444444",
        "5555555555555555555555555555555555555555555555555555555555555555",
        "6666666666666666666666666666666666666666666666666666666666666666",
        "7777777777777777777777777777777777777777777777777777777777777777",
        "8888888888888888888888888888888888888888888888888888888888888888",
        "9999999999999999999999999999999999999999999999999999999999999999",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
        "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc",
        "dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd",
        "eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee",
        "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
    ];

    /// An OCI index entry for `arch[/variant]`.
    fn entry(i: usize, platform: &str) -> String {
        let mut parts = platform.split('/');
        let arch = parts.next().unwrap_or_default();
        let variant = match parts.next() {
            Some(v) => format!(r#", "variant": "{v}""#),
            None => String::new(),
        };
        format!(
            r#"{{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": "sha256:{}", "size": 610,
                "platform": {{"architecture": "{arch}", "os": "linux"{variant}}}}}"#,
            DIGESTS[i]
        )
    }

    /// A BuildKit attestation entry pointing at image entry `of`.
    fn attestation(i: usize, of: usize) -> String {
        format!(
            r#"{{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": "sha256:{}", "size": 839,
                "annotations": {{
                  "vnd.docker.reference.digest": "sha256:{}",
                  "vnd.docker.reference.type": "attestation-manifest"}},
                "platform": {{"architecture": "unknown", "os": "unknown"}}}}"#,
            DIGESTS[i], DIGESTS[of]
        )
    }

    fn index(platforms: &[&str]) -> ImageIndex {
        let entries: Vec<String> = platforms
            .iter()
            .enumerate()
            .map(|(i, p)| entry(i, p))
            .collect();
        let json = format!(
            r#"{{"schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "manifests": [{}]}}"#,
            entries.join(",")
        );
        parse_index(json.as_bytes()).unwrap()
    }

    /// The digest hex of the entry chosen for `want`, as its index position.
    fn chosen(ix: &ImageIndex, want: &str) -> Result<usize, PlatformError> {
        let d = select(ix, &want.parse().unwrap())?;
        Ok(DIGESTS
            .iter()
            .position(|h| d.digest().to_string().ends_with(h))
            .unwrap())
    }

    /// Modelled on docker.io/library/busybox: an OCI index with BuildKit
    /// attestations after the images.
    fn busybox_oci() -> String {
        let images = [
            "amd64", "arm/v5", "arm/v6", "arm/v7", "arm64/v8", "386", "ppc64le", "riscv64", "s390x",
        ];
        let mut entries: Vec<String> = images
            .iter()
            .enumerate()
            .map(|(i, p)| entry(i, p))
            .collect();
        for i in 0..images.len().min(6) {
            entries.push(attestation(images.len() + i, i));
        }
        format!(
            r#"{{"schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "manifests": [{}],
                "annotations": {{"org.opencontainers.image.ref.name": "latest"}}}}"#,
            entries.join(",\n")
        )
    }

    /// A Docker manifest list as the Docker Hub served busybox before OCI.
    const DOCKER_LIST: &str = r#"{
      "manifests": [
        {"digest": "sha256:0000000000000000000000000000000000000000000000000000000000000000",
         "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
         "platform": {"architecture": "amd64", "os": "linux"}, "size": 527},
        {"digest": "sha256:1111111111111111111111111111111111111111111111111111111111111111",
         "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
         "platform": {"architecture": "arm", "os": "linux", "variant": "v5"}, "size": 527},
        {"digest": "sha256:2222222222222222222222222222222222222222222222222222222222222222",
         "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
         "platform": {"architecture": "arm", "os": "linux", "variant": "v6"}, "size": 527},
        {"digest": "sha256:3333333333333333333333333333333333333333333333333333333333333333",
         "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
         "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"}, "size": 527},
        {"digest": "sha256:4444444444444444444444444444444444444444444444444444444444444444",
         "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
         "platform": {"architecture": "amd64", "os": "windows",
                      "os.version": "10.0.17763.1879", "os.features": ["win32k"]}, "size": 527}
      ],
      "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json",
      "schemaVersion": 2
    }"#;

    #[test]
    fn host_platform_matches_build_target() {
        let host = Platform::host();
        assert_eq!(host.os, "linux");
        #[cfg(target_arch = "x86_64")]
        assert_eq!(host.to_string(), "linux/amd64");
        #[cfg(target_arch = "aarch64")]
        assert_eq!(host.to_string(), "linux/arm64/v8");
        #[cfg(target_arch = "arm")]
        assert_eq!(host.to_string(), "linux/arm/v7");
    }

    #[test]
    fn names_are_normalised() {
        let p = |s: &str| s.parse::<Platform>().unwrap().to_string();
        assert_eq!(p("linux/aarch64"), "linux/arm64");
        assert_eq!(p("linux/arm64/8"), "linux/arm64/v8");
        assert_eq!(p("linux/arm"), "linux/arm/v7");
        assert_eq!(p("linux/armhf"), "linux/arm/v7");
        assert_eq!(p("linux/arm/6"), "linux/arm/v6");
        assert_eq!(p("linux/x86_64"), "linux/amd64");
        assert_eq!(p("linux/amd64/v1"), "linux/amd64");
        for bad in ["", "linux", "linux/", "/amd64", "a/b/c/d", "linux//v7"] {
            assert!(bad.parse::<Platform>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn busybox_index_picks_each_node_its_image() {
        let ix = parse_index(busybox_oci().as_bytes()).unwrap();
        assert_eq!(chosen(&ix, "linux/amd64"), Ok(0));
        assert_eq!(chosen(&ix, "linux/arm/v5"), Ok(1));
        assert_eq!(chosen(&ix, "linux/arm/v6"), Ok(2));
        assert_eq!(chosen(&ix, "linux/arm/v7"), Ok(3));
        assert_eq!(chosen(&ix, "linux/arm64/v8"), Ok(4));
        assert_eq!(chosen(&ix, "linux/arm64"), Ok(4));
        assert_eq!(chosen(&ix, "linux/s390x"), Ok(8));
        assert!(select(&ix, &Platform::host()).is_ok());
    }

    #[test]
    fn docker_manifest_list_is_accepted() {
        let ix = parse_index(DOCKER_LIST.as_bytes()).unwrap();
        assert_eq!(chosen(&ix, "linux/amd64"), Ok(0));
        // No v7 entry: the v6 one is the best a v7 CPU can run.
        assert_eq!(chosen(&ix, "linux/arm/v7"), Ok(2));
        assert_eq!(chosen(&ix, "linux/arm64/v8"), Ok(3));
        // The Windows entry is listed but never chosen for Linux.
        let err = select(&ix, &"linux/s390x".parse().unwrap()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "no linux/s390x image in index; it has: linux/amd64, linux/arm/v5, \
             linux/arm/v6, linux/arm64/v8, windows/amd64"
        );
    }

    #[test]
    fn arm32_fallback_table() {
        // v7 node, only v6 → v6.
        assert_eq!(chosen(&index(&["amd64", "arm/v6"]), "linux/arm/v7"), Ok(1));
        // v5 and v6 → v6, whatever the order.
        assert_eq!(chosen(&index(&["arm/v5", "arm/v6"]), "linux/arm/v7"), Ok(1));
        assert_eq!(chosen(&index(&["arm/v6", "arm/v5"]), "linux/arm/v7"), Ok(0));
        // v7 beats everything older.
        assert_eq!(
            chosen(&index(&["arm/v5", "arm/v6", "arm/v7"]), "linux/arm/v7"),
            Ok(2)
        );
        // An arm entry without a variant counts as v7.
        assert_eq!(chosen(&index(&["arm/v6", "arm"]), "linux/arm/v7"), Ok(1));
        // ...and so is too new for a v6 node.
        assert!(chosen(&index(&["arm"]), "linux/arm/v6").is_err());
        // Only v8 (32-bit arm on an ARMv8 CPU): a v7 node cannot run it.
        let err = chosen(&index(&["arm/v8"]), "linux/arm/v7").unwrap_err();
        assert_eq!(
            err.to_string(),
            "no linux/arm/v7 image in index; it has: linux/arm/v8"
        );
        // A v7 node never takes arm64.
        assert!(chosen(&index(&["arm64/v8", "amd64"]), "linux/arm/v7").is_err());
    }

    #[test]
    fn arm64_and_amd64_variants() {
        // arm64 without variant is fine for a v8 node...
        assert_eq!(chosen(&index(&["amd64", "arm64"]), "linux/arm64/v8"), Ok(1));
        // ...but an explicit v8 is preferred.
        assert_eq!(
            chosen(&index(&["arm64", "arm64/v8"]), "linux/arm64/v8"),
            Ok(1)
        );
        assert_eq!(chosen(&index(&["arm64/v8"]), "linux/arm64"), Ok(0));
        assert_eq!(chosen(&index(&["arm64/8"]), "linux/arm64/v8"), Ok(0));
        // amd64 v1 is plain amd64; v3 needs a v3 node.
        assert_eq!(chosen(&index(&["amd64/v1"]), "linux/amd64"), Ok(0));
        assert!(chosen(&index(&["amd64/v3"]), "linux/amd64").is_err());
        assert_eq!(
            chosen(&index(&["amd64", "amd64/v3"]), "linux/amd64/v3"),
            Ok(1)
        );
    }

    #[test]
    fn attestations_and_platformless_entries_are_skipped() {
        let json = format!(
            r#"{{"schemaVersion": 2, "manifests": [
                {{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                  "digest": "sha256:{}", "size": 1}},
                {},
                {{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                  "digest": "sha256:{}", "size": 1,
                  "annotations": {{"vnd.docker.reference.type": "attestation-manifest"}},
                  "platform": {{"architecture": "arm64", "os": "linux"}}}},
                {}]}}"#,
            DIGESTS[10],
            attestation(11, 3),
            DIGESTS[12],
            entry(3, "amd64")
        );
        let ix = parse_index(json.as_bytes()).unwrap();
        assert_eq!(chosen(&ix, "linux/amd64"), Ok(3));
        // The attestation says arm64 but is not an image: not chosen, not listed.
        let err = chosen(&ix, "linux/arm64/v8").unwrap_err();
        assert_eq!(
            err.to_string(),
            "no linux/arm64/v8 image in index; it has: linux/amd64"
        );
        let empty = index(&[]);
        assert_eq!(
            chosen(&empty, "linux/amd64").unwrap_err().to_string(),
            "no linux/amd64 image in index; it has: no platform-specific images"
        );
    }

    #[test]
    fn error_lists_every_platform_once() {
        let ix = index(&["amd64", "arm64/v8", "s390x", "amd64"]);
        let err = chosen(&ix, "linux/arm/v7").unwrap_err();
        assert_eq!(
            err.to_string(),
            "no linux/arm/v7 image in index; it has: linux/amd64, linux/arm64/v8, linux/s390x"
        );
    }

    #[test]
    fn garbage_index_is_an_error() {
        for bad in [
            &b""[..],
            b"null",
            b"{}",
            b"[1,2]",
            b"{\"schemaVersion\": 2, \"manifests\": [{\"digest\": 7}]}",
            b"\xff\xfe",
        ] {
            assert!(
                matches!(parse_index(bad), Err(PlatformError::Parse(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn config_architecture_is_checked() {
        let config = |arch: &str, variant: &str| -> ImageConfiguration {
            let variant = if variant.is_empty() {
                String::new()
            } else {
                format!(r#", "variant": "{variant}""#)
            };
            serde_json::from_str(&format!(
                r#"{{"architecture": "{arch}", "os": "linux"{variant},
                    "rootfs": {{"type": "layers", "diff_ids": []}}}}"#
            ))
            .unwrap()
        };
        let v7: Platform = "linux/arm/v7".parse().unwrap();
        assert!(check_config(&config("arm", "v7"), &v7).is_ok());
        assert!(check_config(&config("arm", ""), &v7).is_ok());
        assert!(check_config(&config("arm", "v6"), &v7).is_ok());
        let err = check_config(&config("amd64", ""), &v7).unwrap_err();
        assert_eq!(
            err.to_string(),
            "no linux/arm/v7 image in image config; it has: linux/amd64"
        );
        let arm64: Platform = "linux/arm64/v8".parse().unwrap();
        assert!(check_config(&config("arm64", ""), &arm64).is_ok());
        assert!(check_config(&config("arm", "v7"), &arm64).is_err());
    }
}
