//! The devserver's certificate authority, laid out like K3s v1.21's
//! `<data-dir>/server/tls/` and issuing what its supervisor API hands agents.
//!
//! What is on disk (keys 0600, certificates 0644, directory created 0700):
//! - `server-ca.{crt,key}`, `client-ca.{crt,key}`: self-signed EC P-256 CAs,
//!   CN `k3s-server-ca@<unix time>` / `k3s-client-ca@<unix time>`, serial 0,
//!   ten years, KeyUsage digitalSignature+keyEncipherment+keyCertSign and
//!   BasicConstraints CA:TRUE (both critical), SubjectKeyIdentifier.
//!   `server-ca.crt` is the /cacerts body, so keeping it keeps the token's
//!   CA hash.
//! - `serving-kubelet.key`, `client-kubelet.key`: the ONE key every node's
//!   kubelet certificate is issued for, sent back to agents that do not send a
//!   CSR (the 2021 protocol).
//! - `client-kube-proxy.{crt,key}`, `client-k3s-controller.{crt,key}`,
//!   `client-admin.{crt,key}`: fixed client certificates (`.crt` = leaf then
//!   client CA, as k3s writes them).
//! - `serving-kube-apiserver.{crt,key}`: the HTTPS listener's certificate
//!   (see [`Pki::listener`]).
//!
//! Certificates are byte-for-byte shaped like Go's `crypto/x509` output from
//! k3s (checked against the recorded v1.21.2 server in the tests): the same
//! extensions in the same order and criticality, PrintableString subjects
//! unless a character forces UTF8String, O before CN, AKI from the CA's SKI,
//! SKI = SHA-1 of the public key, `notBefore` of a leaf = the CA's
//! `notBefore`, private keys as SEC1 `EC PRIVATE KEY` blocks.
//!
//! A CA is regenerated only when its files are missing. When that happens,
//! every key and certificate issued from it is regenerated too, as k3s does.

use std::collections::HashSet;
use std::fmt;
use std::fs;
use std::io::{self, Write as _};
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use rcgen::{
    CertificateParams, CustomExtension, DistinguishedName, DnType, DnValue, Issuer, KeyPair,
    PKCS_ECDSA_P256_SHA256, PublicKeyData, SerialNumber, SubjectPublicKeyInfo,
};
use ring::rand::{SecureRandom, SystemRandom};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::{Duration, OffsetDateTime};
use x509_parser::certificate::X509Certificate;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::der_parser::asn1_rs::Tag;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer as _;

const SERVER_CA: &str = "server-ca";
const CLIENT_CA: &str = "client-ca";
const SERVING_KUBELET_KEY: &str = "serving-kubelet.key";
const CLIENT_KUBELET_KEY: &str = "client-kubelet.key";
const KUBE_PROXY: &str = "client-kube-proxy";
const K3S_CONTROLLER: &str = "client-k3s-controller";
const ADMIN: &str = "client-admin";
const LISTENER: &str = "serving-kube-apiserver";
const KUBE_APISERVER_CLIENT: &str = "client-kube-apiserver";

/// Go's `duration365d * 10` for CAs.
const CA_DAYS: i64 = 3650;
/// dynamiclistener's `NewSignedCert`: leaves live 365 days.
const LEAF_DAYS: i64 = 365;
/// The listener certificate is renewed when fewer days than this are left,
/// as dynamiclistener does with k3s's default `CertificateRenewDays`.
const LISTENER_RENEW_DAYS: i64 = 90;

/// The names k3s's dynamiclistener always puts on the supervisor/apiserver
/// certificate, besides the configured SANs.
const LISTENER_DNS: [&str; 5] = [
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
    "localhost",
];

/// Why certificate material could not be loaded, stored or issued.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// Reading or writing a file under the TLS directory failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A file under the TLS directory holds something unusable (not PEM, no
    /// certificate, a key that does not match its certificate, ...).
    #[error("{}: {reason}", path.display())]
    BadFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A `K3s-Node-IP` entry is not an IP address. The text is exactly the
    /// body k3s v1.21 answers with (HTTP 500): Go prints the failed parse as
    /// `<nil>`, whatever the input was.
    #[error("invalid IP address <nil>")]
    InvalidNodeIp {
        /// The entry that did not parse (for logs; k3s does not show it).
        value: String,
    },
    /// A node or subject name that cannot go into a certificate (empty, or not
    /// ASCII and so not a DNS name).
    #[error("invalid certificate name {0:?}")]
    InvalidName(String),
    /// The request body is not a validly signed PKCS#10 CSR with a supported
    /// key. Answer 400: the client sent something unusable.
    #[error("invalid certificate signing request: {0}")]
    InvalidCsr(String),
    /// rcgen refused to build or sign a certificate.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// The system random number generator failed.
    #[error("the system random number generator failed")]
    Random,
}

/// Parses a `K3s-Node-IP` header value as k3s does: comma-separated, no
/// trimming, every entry must be an IP address. An empty header means "no
/// extra IPs".
pub fn parse_node_ips(header: &str) -> Result<Vec<IpAddr>, PkiError> {
    if header.is_empty() {
        return Ok(Vec::new());
    }
    header
        .split(',')
        .map(|v| {
            v.parse::<IpAddr>().map_err(|_| PkiError::InvalidNodeIp {
                value: v.to_owned(),
            })
        })
        .collect()
}

/// A loaded CA: its certificate as served and what signing needs.
struct Ca {
    /// The certificate file exactly as on disk: /cacerts and the `*-ca.crt`
    /// endpoints serve these bytes, and the token hash is taken over them.
    file_pem: String,
    /// The first certificate of the file, PEM-encoded the way Go's
    /// `EncodeCertPEM` does; what k3s appends after issued leaves.
    cert_pem: String,
    der: CertificateDer<'static>,
    key: KeyPair,
    subject: DistinguishedName,
    /// Raw DER of the subject, to recognise certificates it issued.
    subject_raw: Vec<u8>,
    ski: Option<Vec<u8>>,
    not_before: OffsetDateTime,
}

/// What a leaf certificate says, besides its key.
struct LeafSpec<'a> {
    common_name: &'a str,
    organization: Option<&'a str>,
    usage: Usage,
    dns_names: &'a [String],
    ips: &'a [IpAddr],
}

#[derive(Clone, Copy)]
enum Usage {
    ServerAuth,
    ClientAuth,
}

/// The CAs and shared material of one devserver, loaded from (or created in)
/// its TLS directory.
pub struct Pki {
    dir: PathBuf,
    server_ca: Ca,
    client_ca: Ca,
    serving_kubelet_key: (String, KeyPair),
    client_kubelet_key: (String, KeyPair),
    kube_proxy: (String, String),
    k3s_controller: (String, String),
    admin: (String, String),
}

/// Shows where the material lives, never a key.
impl fmt::Debug for Pki {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pki")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Pki {
    /// Loads the CAs, shared keys and fixed client certificates from
    /// `tls_dir`, creating whatever is missing. Existing CAs are reused as
    /// they are, so the token's CA hash survives restarts; certificates that
    /// expired or no longer chain to their CA are reissued.
    pub fn load_or_create(tls_dir: &Path) -> Result<Self, PkiError> {
        Self::load_or_create_at(tls_dir, now())
    }

    fn load_or_create_at(dir: &Path, now: OffsetDateTime) -> Result<Self, PkiError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| PkiError::Io {
                path: dir.to_owned(),
                source,
            })?;

        let (server_ca, server_new) = load_or_create_ca(dir, SERVER_CA, "k3s-server", now)?;
        let (client_ca, client_new) = load_or_create_ca(dir, CLIENT_CA, "k3s-client", now)?;
        let serving_kubelet_key = load_or_generate_key(&dir.join(SERVING_KUBELET_KEY), server_new)?;
        let client_kubelet_key = load_or_generate_key(&dir.join(CLIENT_KUBELET_KEY), client_new)?;

        let client_cert = |name: &str, cn: &str, org: Option<&str>| {
            let spec = LeafSpec {
                common_name: cn,
                organization: org,
                usage: Usage::ClientAuth,
                dns_names: &[],
                ips: &[],
            };
            ensure_cert_file(dir, name, &client_ca, &spec, client_new, None, now)
        };
        let kube_proxy = client_cert(KUBE_PROXY, "system:kube-proxy", None)?;
        let k3s_controller = client_cert(K3S_CONTROLLER, "system:k3s-controller", None)?;
        let admin = client_cert(ADMIN, "system:admin", Some("system:masters"))?;

        Ok(Self {
            dir: dir.to_owned(),
            server_ca,
            client_ca,
            serving_kubelet_key,
            client_kubelet_key,
            kube_proxy: (kube_proxy.0, kube_proxy.1),
            k3s_controller: (k3s_controller.0, k3s_controller.1),
            admin: (admin.0, admin.1),
        })
    }

    /// `server-ca.crt` exactly as on disk: the body of `/cacerts` and
    /// `/v1-k3s/server-ca.crt`, and what the token's CA hash is taken over.
    pub fn server_ca_pem(&self) -> &str {
        &self.server_ca.file_pem
    }

    /// `client-ca.crt` exactly as on disk: the body of `/v1-k3s/client-ca.crt`.
    pub fn client_ca_pem(&self) -> &str {
        &self.client_ca.file_pem
    }

    /// The client CA certificate (first of its file): the root for a rustls
    /// `WebPkiClientVerifier`, so kubelet/kube-proxy/admin client
    /// certificates authenticate on the HTTPS port.
    pub fn client_ca_der(&self) -> &CertificateDer<'static> {
        &self.client_ca.der
    }

    /// Certificate chain (leaf, server CA) and key for the HTTPS listener,
    /// shaped like k3s's dynamiclistener certificate: CN `k3s`, O `k3s`,
    /// serverAuth, DNS SANs `kubernetes`, `kubernetes.default`,
    /// `kubernetes.default.svc`, `kubernetes.default.svc.cluster.local`,
    /// `localhost`, IP SAN 127.0.0.1, plus `sans` (IPs and names, e.g. the
    /// configured `SANs` including the service IP 10.43.0.1).
    ///
    /// Persisted as `serving-kube-apiserver.{crt,key}`; the stored certificate
    /// is reused while it covers every requested name, chains to the current
    /// server CA and has more than 90 days left, and is reissued (same key)
    /// otherwise.
    pub fn listener(
        &self,
        sans: &[String],
    ) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), PkiError> {
        self.listener_at(sans, now())
    }

    fn listener_at(
        &self,
        sans: &[String],
        now: OffsetDateTime,
    ) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), PkiError> {
        let mut dns_names: Vec<String> = LISTENER_DNS.iter().map(|s| (*s).to_owned()).collect();
        let mut ips: Vec<IpAddr> = vec![IpAddr::from([127, 0, 0, 1])];
        for san in sans {
            match san.parse::<IpAddr>() {
                Ok(ip) => ips.push(go_ip(ip)),
                Err(_) => dns_names.push(san.clone()),
            }
        }
        dedup(&mut dns_names);
        dedup(&mut ips);
        let spec = LeafSpec {
            common_name: "k3s",
            organization: Some("k3s"),
            usage: Usage::ServerAuth,
            dns_names: &dns_names,
            ips: &ips,
        };
        let renew_before = now + Duration::days(LISTENER_RENEW_DAYS);
        let (crt_pem, key_pem, _) = ensure_cert_file(
            &self.dir,
            LISTENER,
            &self.server_ca,
            &spec,
            false,
            Some(renew_before),
            now,
        )?;
        let crt_path = self.dir.join(format!("{LISTENER}.crt"));
        let chain = read_certs_from(&crt_path, crt_pem.as_bytes())?;
        // From the file's text, so a restarted server hands rustls the same
        // bytes as the one that generated the key.
        let key_path = self.dir.join(format!("{LISTENER}.key"));
        let key = pkcs8_of_pem(&key_pem).ok_or_else(|| PkiError::BadFile {
            path: key_path,
            reason: "no usable PRIVATE KEY block".to_owned(),
        })?;
        Ok((chain, PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key))))
    }

    /// Body of `/v1-k3s/serving-kubelet.crt`: a serverAuth certificate for
    /// `node` (lower-cased, as k3s does) with DNS SANs [node, `localhost`] and
    /// IP SANs [127.0.0.1, `ips`...], signed by the server CA for 365 days.
    ///
    /// Without a CSR it is issued for the shared `serving-kubelet.key` and the
    /// body is leaf PEM + server CA PEM + that key's PEM (the 2021 layout).
    /// With a CSR (DER PKCS#10, or PEM) only its public key is used and the
    /// body is leaf + CA, no key.
    pub fn serving_kubelet(
        &self,
        node: &str,
        ips: &[IpAddr],
        csr: Option<&[u8]>,
    ) -> Result<String, PkiError> {
        self.serving_kubelet_at(node, ips, csr, now())
    }

    fn serving_kubelet_at(
        &self,
        node: &str,
        ips: &[IpAddr],
        csr: Option<&[u8]>,
        now: OffsetDateTime,
    ) -> Result<String, PkiError> {
        let node = node_name(node)?;
        let mut all_ips = vec![IpAddr::from([127, 0, 0, 1])];
        all_ips.extend(ips.iter().copied().map(go_ip));
        let dns_names = [node.clone(), "localhost".to_owned()];
        let spec = LeafSpec {
            common_name: &node,
            organization: None,
            usage: Usage::ServerAuth,
            dns_names: &dns_names,
            ips: &all_ips,
        };
        issue(&self.server_ca, &spec, &self.serving_kubelet_key, csr, now)
    }

    /// Body of `/v1-k3s/client-kubelet.crt`: CN `system:node:<node>` (node
    /// lower-cased), O `system:nodes`, clientAuth, signed by the client CA for
    /// 365 days. Key handling and layout as for
    /// [`serving_kubelet`](Self::serving_kubelet), with `client-kubelet.key`.
    pub fn client_kubelet(&self, node: &str, csr: Option<&[u8]>) -> Result<String, PkiError> {
        self.client_kubelet_at(node, csr, now())
    }

    fn client_kubelet_at(
        &self,
        node: &str,
        csr: Option<&[u8]>,
        now: OffsetDateTime,
    ) -> Result<String, PkiError> {
        let cn = format!("system:node:{}", node_name(node)?);
        let spec = LeafSpec {
            common_name: &cn,
            organization: Some("system:nodes"),
            usage: Usage::ClientAuth,
            dns_names: &[],
            ips: &[],
        };
        issue(&self.client_ca, &spec, &self.client_kubelet_key, csr, now)
    }

    /// Body of `/v1-k3s/client-kube-proxy.crt`. Without a CSR: the fixed
    /// `client-kube-proxy.crt` (leaf + client CA) followed by its key, as k3s
    /// v1.21 serves the two files. With a CSR: a new certificate for the CSR's
    /// key, CN `system:kube-proxy`, leaf + CA.
    pub fn client_kube_proxy(&self, csr: Option<&[u8]>) -> Result<String, PkiError> {
        self.fixed_client(&self.kube_proxy, "system:kube-proxy", csr)
    }

    /// Body of `/v1-k3s/client-k3s-controller.crt`, like
    /// [`client_kube_proxy`](Self::client_kube_proxy) with CN
    /// `system:k3s-controller`.
    pub fn client_k3s_controller(&self, csr: Option<&[u8]>) -> Result<String, PkiError> {
        self.fixed_client(&self.k3s_controller, "system:k3s-controller", csr)
    }

    fn fixed_client(
        &self,
        files: &(String, String),
        cn: &str,
        csr: Option<&[u8]>,
    ) -> Result<String, PkiError> {
        match csr {
            None => Ok(format!("{}{}", files.0, files.1)),
            Some(csr) => {
                let spec = LeafSpec {
                    common_name: cn,
                    organization: None,
                    usage: Usage::ClientAuth,
                    dns_names: &[],
                    ips: &[],
                };
                let public_key = csr_public_key(csr)?;
                let leaf = sign_leaf(&self.client_ca, &spec, &public_key, now())?;
                Ok(format!("{leaf}{}", self.client_ca.cert_pem))
            }
        }
    }

    /// The client certificate the API server shows kubelets (k3s's
    /// `client-kube-apiserver.{crt,key}`: CN `kube-apiserver`, no O,
    /// clientAuth, client CA): the chain (leaf, CA) and key for rustls.
    ///
    /// Persisted like the other fixed client certificates, but made on first
    /// use (so data dirs from before it get one) and reissued with the same
    /// key when it no longer chains to the client CA or has expired.
    pub fn client_kube_apiserver(
        &self,
    ) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), PkiError> {
        let spec = LeafSpec {
            common_name: "kube-apiserver",
            organization: None,
            usage: Usage::ClientAuth,
            dns_names: &[],
            ips: &[],
        };
        let (crt_pem, key_pem, _) = ensure_cert_file(
            &self.dir,
            KUBE_APISERVER_CLIENT,
            &self.client_ca,
            &spec,
            false,
            None,
            now(),
        )?;
        let crt_path = self.dir.join(format!("{KUBE_APISERVER_CLIENT}.crt"));
        let chain = read_certs_from(&crt_path, crt_pem.as_bytes())?;
        let key = pkcs8_of_pem(&key_pem).ok_or_else(|| PkiError::BadFile {
            path: self.dir.join(format!("{KUBE_APISERVER_CLIENT}.key")),
            reason: "no usable PRIVATE KEY block".to_owned(),
        })?;
        Ok((chain, PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key))))
    }

    /// The server CA certificate (first of its file): what kubelet serving
    /// certificates are checked against.
    pub fn server_ca_der(&self) -> &CertificateDer<'static> {
        &self.server_ca.der
    }

    /// The admin client certificate (CN `system:admin`, O `system:masters`,
    /// client CA) for the admin kubeconfig: the `client-admin.crt` file (leaf
    /// + client CA) and the `client-admin.key` PEM.
    pub fn admin_client(&self) -> (&str, &str) {
        (&self.admin.0, &self.admin.1)
    }
}

/// Issues a leaf for a node endpoint: for the CSR's key if there is one,
/// else for the shared key, which then goes into the body too.
fn issue(
    ca: &Ca,
    spec: &LeafSpec<'_>,
    shared_key: &(String, KeyPair),
    csr: Option<&[u8]>,
    now: OffsetDateTime,
) -> Result<String, PkiError> {
    match csr {
        Some(csr) => {
            let public_key = csr_public_key(csr)?;
            let leaf = sign_leaf(ca, spec, &public_key, now)?;
            Ok(format!("{leaf}{}", ca.cert_pem))
        }
        None => {
            let leaf = sign_leaf(ca, spec, &shared_key.1, now)?;
            Ok(format!("{leaf}{}{}", ca.cert_pem, shared_key.0))
        }
    }
}

/// The node name as k3s uses it: lower-cased, and usable as a DNS SAN.
fn node_name(node: &str) -> Result<String, PkiError> {
    if node.is_empty() || !node.is_ascii() {
        return Err(PkiError::InvalidName(node.to_owned()));
    }
    Ok(node.to_ascii_lowercase())
}

/// The public key of a CSR whose self-signature verifies. Accepts DER (what
/// k3s agents send) or a PEM `CERTIFICATE REQUEST`.
fn csr_public_key(csr: &[u8]) -> Result<SubjectPublicKeyInfo, PkiError> {
    let bad = |why: &str| PkiError::InvalidCsr(why.to_owned());
    let pem_der;
    let der = if csr.starts_with(b"-----BEGIN") {
        let block = pem::parse(csr).map_err(|e| bad(&e.to_string()))?;
        if block.tag() != "CERTIFICATE REQUEST" {
            return Err(bad("PEM block is not a CERTIFICATE REQUEST"));
        }
        pem_der = block.into_contents();
        &pem_der[..]
    } else {
        csr
    };
    let (rest, request) =
        X509CertificationRequest::from_der(der).map_err(|e| bad(&e.to_string()))?;
    if !rest.is_empty() {
        return Err(bad("trailing data after the request"));
    }
    // Proof that the sender holds the private key; Go's parser alone would
    // not check it, but nothing legitimate sends a badly signed request.
    request
        .verify_signature()
        .map_err(|e| bad(&format!("signature: {e}")))?;
    SubjectPublicKeyInfo::from_der(request.certification_request_info.subject_pki.raw)
        .map_err(|e| bad(&format!("public key: {e}")))
}

/// Signs a leaf certificate with `ca` for `public_key`, shaped like
/// dynamiclistener's `NewSignedCert`; returns its PEM.
fn sign_leaf(
    ca: &Ca,
    spec: &LeafSpec<'_>,
    public_key: &impl PublicKeyData,
    now: OffsetDateTime,
) -> Result<String, PkiError> {
    if spec.common_name.is_empty() {
        return Err(PkiError::InvalidName(String::new()));
    }
    let mut params = CertificateParams::default();
    params.not_before = ca.not_before;
    params.not_after = now + Duration::days(LEAF_DAYS);
    params.serial_number = Some(random_serial()?);
    params.distinguished_name = go_name(spec.organization, spec.common_name);

    // Go's order: KeyUsage, ExtKeyUsage, AuthorityKeyId, SubjectAltName.
    let mut extensions = vec![
        extension(
            OID_KEY_USAGE,
            true,
            key_usage(KU_DIGITAL_SIGNATURE | KU_KEY_ENCIPHERMENT),
        ),
        extension(
            OID_EXT_KEY_USAGE,
            false,
            der::tlv(
                der::SEQUENCE,
                match spec.usage {
                    Usage::ServerAuth => OID_SERVER_AUTH,
                    Usage::ClientAuth => OID_CLIENT_AUTH,
                },
            ),
        ),
    ];
    if let Some(ski) = &ca.ski {
        extensions.push(extension(
            OID_AUTHORITY_KEY_ID,
            false,
            der::tlv(der::SEQUENCE, &der::tlv(0x80, ski)),
        ));
    }
    if !spec.dns_names.is_empty() || !spec.ips.is_empty() {
        let mut names = Vec::new();
        for name in spec.dns_names {
            if !name.is_ascii() {
                return Err(PkiError::InvalidName(name.clone()));
            }
            names.extend(der::tlv(0x82, name.as_bytes()));
        }
        for ip in spec.ips {
            match go_ip(*ip) {
                IpAddr::V4(v4) => names.extend(der::tlv(0x87, &v4.octets())),
                IpAddr::V6(v6) => names.extend(der::tlv(0x87, &v6.octets())),
            }
        }
        extensions.push(extension(
            OID_SUBJECT_ALT_NAME,
            false,
            der::tlv(der::SEQUENCE, &names),
        ));
    }
    params.custom_extensions = extensions;

    let mut issuer_params = CertificateParams::default();
    issuer_params.distinguished_name = ca.subject.clone();
    let issuer = Issuer::new(issuer_params, &ca.key);
    let cert = params.signed_by(public_key, &issuer)?;
    Ok(pem_encode("CERTIFICATE", cert.der()))
}

/// A self-signed CA shaped like dynamiclistener's `NewSignedCACert`.
fn create_ca_cert(key: &KeyPair, prefix: &str, now: OffsetDateTime) -> Result<String, PkiError> {
    let mut params = CertificateParams::default();
    params.not_before = now;
    params.not_after = now + Duration::days(CA_DAYS);
    params.serial_number = Some(SerialNumber::from_slice(&[0]));
    params.distinguished_name = go_name(None, &format!("{prefix}-ca@{}", now.unix_timestamp()));
    // Go's order: KeyUsage, BasicConstraints, SubjectKeyId.
    params.custom_extensions = vec![
        extension(
            OID_KEY_USAGE,
            true,
            key_usage(KU_DIGITAL_SIGNATURE | KU_KEY_ENCIPHERMENT | KU_CERT_SIGN),
        ),
        extension(
            OID_BASIC_CONSTRAINTS,
            true,
            der::tlv(der::SEQUENCE, &der::tlv(der::BOOLEAN, &[0xff])),
        ),
        extension(
            OID_SUBJECT_KEY_ID,
            false,
            der::tlv(der::OCTET_STRING, &go_key_id(key.public_key_raw())),
        ),
    ];
    let cert = params.self_signed(key)?;
    Ok(pem_encode("CERTIFICATE", cert.der()))
}

/// Loads `<name>.crt`/`<name>.key`, or creates the CA (reusing an existing
/// key file) when either is missing. Returns whether it was created.
fn load_or_create_ca(
    dir: &Path,
    name: &str,
    prefix: &str,
    now: OffsetDateTime,
) -> Result<(Ca, bool), PkiError> {
    let crt_path = dir.join(format!("{name}.crt"));
    let key_path = dir.join(format!("{name}.key"));
    let created = !(crt_path.exists() && key_path.exists());
    if created {
        let (_, key) = load_or_generate_key(&key_path, false)?;
        let pem_text = create_ca_cert(&key, prefix, now)?;
        write_file(&crt_path, pem_text.as_bytes(), 0o644)?;
    }
    let file_pem = read_text(&crt_path)?;
    let (_, key) = load_key(&key_path)?;
    Ok((load_ca(&crt_path, file_pem, key)?, created))
}

fn load_ca(path: &Path, file_pem: String, key: KeyPair) -> Result<Ca, PkiError> {
    let bad = |reason: String| PkiError::BadFile {
        path: path.to_owned(),
        reason,
    };
    let der = first_cert(path, file_pem.as_bytes())?;
    let (_, cert) = X509Certificate::from_der(&der).map_err(|e| bad(e.to_string()))?;
    if cert.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
        return Err(bad(
            "the CA key file does not match this certificate".to_owned()
        ));
    }
    let subject = rcgen_name(&cert).map_err(bad)?;
    let ski = subject_key_id(&cert);
    let not_before = OffsetDateTime::from_unix_timestamp(cert.validity().not_before.timestamp())
        .map_err(|e| bad(e.to_string()))?;
    let subject_raw = cert.subject().as_raw().to_vec();
    let cert_pem = pem_encode("CERTIFICATE", &der);
    Ok(Ca {
        file_pem,
        cert_pem,
        der: CertificateDer::from(der),
        key,
        subject,
        subject_raw,
        ski,
        not_before,
    })
}

/// Makes sure `<name>.crt` (leaf + CA) and `<name>.key` hold a certificate
/// for `spec` from `ca`, like k3s's `createClientCertKey`: kept while it
/// chains to `ca`, is valid now (and, with `renew_before`, still then) and
/// carries every requested SAN; reissued otherwise, with a new key only when
/// `regenerate` (its CA is new) or the key file is missing. Returns the two
/// files' texts and the key.
fn ensure_cert_file(
    dir: &Path,
    name: &str,
    ca: &Ca,
    spec: &LeafSpec<'_>,
    regenerate: bool,
    renew_before: Option<OffsetDateTime>,
    now: OffsetDateTime,
) -> Result<(String, String, KeyPair), PkiError> {
    let crt_path = dir.join(format!("{name}.crt"));
    let key_path = dir.join(format!("{name}.key"));
    if !regenerate && crt_path.exists() && key_path.exists() {
        let (key_pem, key) = load_key(&key_path)?;
        let crt_pem = read_text(&crt_path)?;
        if still_good(&crt_pem, ca, &key, spec, renew_before.unwrap_or(now), now) {
            return Ok((crt_pem, key_pem, key));
        }
    }
    let (key_pem, key) = load_or_generate_key(&key_path, regenerate)?;
    let crt_pem = format!("{}{}", sign_leaf(ca, spec, &key, now)?, ca.cert_pem);
    write_file(&crt_path, crt_pem.as_bytes(), 0o644)?;
    Ok((crt_pem, key_pem, key))
}

/// Whether a stored leaf can be kept: issued by `ca` (name and signature),
/// for `key`, valid now and at `until`, with every SAN of `spec`.
fn still_good(
    crt_pem: &str,
    ca: &Ca,
    key: &KeyPair,
    spec: &LeafSpec<'_>,
    until: OffsetDateTime,
    now: OffsetDateTime,
) -> bool {
    let Some(der) = pem::parse_many(crt_pem)
        .ok()
        .and_then(|blocks| blocks.into_iter().find(|b| b.tag() == "CERTIFICATE"))
    else {
        return false;
    };
    let Ok((_, cert)) = X509Certificate::from_der(der.contents()) else {
        return false;
    };
    let Ok((_, ca_cert)) = X509Certificate::from_der(&ca.der) else {
        return false;
    };
    let validity = cert.validity();
    let valid = validity.not_before.timestamp() <= now.unix_timestamp()
        && validity.not_after.timestamp() > until.unix_timestamp();
    if !valid
        || cert.issuer().as_raw() != ca.subject_raw.as_slice()
        || cert.verify_signature(Some(ca_cert.public_key())).is_err()
        || cert.public_key().subject_public_key.data.as_ref() != key.public_key_raw()
    {
        return false;
    }
    let (mut dns, mut ips) = (HashSet::new(), HashSet::new());
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(d) => {
                    dns.insert((*d).to_owned());
                }
                GeneralName::IPAddress(b) => {
                    ips.insert(b.to_vec());
                }
                _ => {}
            }
        }
    }
    spec.dns_names.iter().all(|d| dns.contains(d))
        && spec
            .ips
            .iter()
            .all(|ip| ips.contains(&ip_bytes(go_ip(*ip))))
}

fn ip_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

/// Go writes an IPv4-mapped IPv6 address as the 4-byte IPv4 address.
fn go_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

fn dedup<T: Clone + Eq + std::hash::Hash>(items: &mut Vec<T>) {
    let mut seen = HashSet::new();
    items.retain(|item| seen.insert(item.clone()));
}

/// A subject as Go's `pkix.Name` marshals it: O before CN, each a
/// PrintableString when every character allows it, else a UTF8String.
fn go_name(organization: Option<&str>, common_name: &str) -> DistinguishedName {
    let value = |s: &str| {
        if s.bytes().all(go_printable) {
            if let Ok(p) = rcgen::string::PrintableString::try_from(s) {
                return DnValue::PrintableString(p);
            }
        }
        // Go also allows '*' in a PrintableString; rcgen does not, so such a
        // name becomes a UTF8String here. Either is valid X.509.
        DnValue::Utf8String(s.to_owned())
    };
    let mut name = DistinguishedName::new();
    if let Some(org) = organization {
        name.push(DnType::OrganizationName, value(org));
    }
    name.push(DnType::CommonName, value(common_name));
    name
}

/// Go's `encoding/asn1` PrintableString alphabet (as used for marshalling).
fn go_printable(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b' ' | b'\''
                | b'('
                | b')'
                | b'+'
                | b','
                | b'-'
                | b'.'
                | b'/'
                | b':'
                | b'='
                | b'?'
                | b'*'
        )
}

/// The subject of a parsed certificate as an rcgen name with the same
/// attribute order and string types, so issued certificates name their
/// issuer byte-for-byte as the CA names itself.
fn rcgen_name(cert: &X509Certificate<'_>) -> Result<DistinguishedName, String> {
    let mut name = DistinguishedName::new();
    for rdn in cert.subject().iter() {
        let mut attrs = rdn.iter();
        let (Some(attr), None) = (attrs.next(), attrs.next()) else {
            return Err("CA subject has a multi-valued or empty RDN".to_owned());
        };
        let oid: Vec<u64> = attr
            .attr_type()
            .iter()
            .ok_or("CA subject has an oversized OID")?
            .collect();
        let text = std::str::from_utf8(attr.attr_value().data)
            .map_err(|_| "CA subject is not UTF-8".to_owned())?;
        let value = match attr.attr_value().header.tag() {
            Tag::PrintableString => DnValue::PrintableString(
                rcgen::string::PrintableString::try_from(text).map_err(|e| e.to_string())?,
            ),
            Tag::Utf8String => DnValue::Utf8String(text.to_owned()),
            _ => return Err("CA subject uses an unsupported string type".to_owned()),
        };
        name.push(DnType::from_oid(&oid), value);
    }
    Ok(name)
}

fn subject_key_id(cert: &X509Certificate<'_>) -> Option<Vec<u8>> {
    cert.iter_extensions()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
            _ => None,
        })
}

/// Go's key identifier: SHA-1 of the subjectPublicKey bits (RFC 5280 method 1).
fn go_key_id(public_key: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, public_key)
        .as_ref()
        .to_vec()
}

/// A positive serial below 2^63, as Go's `rand.Int(rand.Reader, MaxInt64)`.
fn random_serial() -> Result<SerialNumber, PkiError> {
    let mut bytes = [0u8; 8];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| PkiError::Random)?;
    bytes[0] &= 0x7f;
    Ok(SerialNumber::from_slice(&bytes))
}

const KU_DIGITAL_SIGNATURE: u8 = 0x80;
const KU_KEY_ENCIPHERMENT: u8 = 0x20;
const KU_CERT_SIGN: u8 = 0x04;

/// KeyUsage as a minimal BIT STRING (trailing zero bits not counted), as Go
/// encodes it.
fn key_usage(bits: u8) -> Vec<u8> {
    let unused = u8::try_from(bits.trailing_zeros().min(7)).unwrap_or(0);
    der::tlv(der::BIT_STRING, &[unused, bits])
}

fn extension(oid: &[u64], critical: bool, value: Vec<u8>) -> CustomExtension {
    let mut ext = CustomExtension::from_oid_content(oid, value);
    ext.set_criticality(critical);
    ext
}

const OID_KEY_USAGE: &[u64] = &[2, 5, 29, 15];
const OID_SUBJECT_ALT_NAME: &[u64] = &[2, 5, 29, 17];
const OID_BASIC_CONSTRAINTS: &[u64] = &[2, 5, 29, 19];
const OID_SUBJECT_KEY_ID: &[u64] = &[2, 5, 29, 14];
const OID_AUTHORITY_KEY_ID: &[u64] = &[2, 5, 29, 35];
const OID_EXT_KEY_USAGE: &[u64] = &[2, 5, 29, 37];
/// DER of the OIDs id-kp-serverAuth / id-kp-clientAuth.
const OID_SERVER_AUTH: &[u8] = &[0x06, 0x08, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x01];
const OID_CLIENT_AUTH: &[u8] = &[0x06, 0x08, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x02];
/// DER of the OIDs id-ecPublicKey and prime256v1.
const OID_EC_PUBLIC_KEY: &[u8] = &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const OID_P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// Just enough DER to write extension values and convert EC key formats.
mod der {
    pub const BOOLEAN: u8 = 0x01;
    pub const INTEGER: u8 = 0x02;
    pub const BIT_STRING: u8 = 0x03;
    pub const OCTET_STRING: u8 = 0x04;
    pub const SEQUENCE: u8 = 0x30;

    /// One tag-length-value with a single-byte tag.
    pub fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        let len = content.len();
        if len < 0x80 {
            out.push(len as u8);
        } else {
            let bytes = len.to_be_bytes();
            let skip = bytes.iter().take_while(|b| **b == 0).count();
            out.push(0x80 | (bytes.len() - skip) as u8);
            out.extend_from_slice(&bytes[skip..]);
        }
        out.extend_from_slice(content);
        out
    }

    /// Reads consecutive TLVs (single-byte tags, definite lengths).
    pub struct Reader<'a>(pub &'a [u8]);

    impl<'a> Reader<'a> {
        /// The next (tag, content), or `None` at the end or on bad input.
        pub fn next_tlv(&mut self) -> Option<(u8, &'a [u8])> {
            let (&tag, rest) = self.0.split_first()?;
            let (&first, mut rest) = rest.split_first()?;
            let len = if first < 0x80 {
                usize::from(first)
            } else {
                let n = usize::from(first & 0x7f);
                if n == 0 || n > 4 || rest.len() < n {
                    return None;
                }
                let (len_bytes, after) = rest.split_at(n);
                rest = after;
                len_bytes
                    .iter()
                    .fold(0usize, |acc, b| (acc << 8) | usize::from(*b))
            };
            if rest.len() < len {
                return None;
            }
            let (content, after) = rest.split_at(len);
            self.0 = after;
            Some((tag, content))
        }

        /// The next TLV's content if it has `tag`.
        pub fn expect(&mut self, tag: u8) -> Option<&'a [u8]> {
            match self.next_tlv()? {
                (t, content) if t == tag => Some(content),
                _ => None,
            }
        }
    }
}

/// Wraps a SEC1 `ECPrivateKey` (P-256) in PKCS#8, which ring reads.
fn sec1_to_pkcs8(sec1: &[u8]) -> Vec<u8> {
    let algorithm = der::tlv(der::SEQUENCE, &[OID_EC_PUBLIC_KEY, OID_P256].concat());
    der::tlv(
        der::SEQUENCE,
        &[
            &[der::INTEGER, 1, 0][..],
            &algorithm,
            &der::tlv(der::OCTET_STRING, sec1),
        ]
        .concat(),
    )
}

/// Unwraps ring's PKCS#8 P-256 key into the SEC1 form Go's
/// `MarshalECPrivateKey` writes (with the curve parameters and public key).
fn pkcs8_to_sec1(pkcs8: &[u8]) -> Option<Vec<u8>> {
    let mut outer = der::Reader(der::Reader(pkcs8).expect(der::SEQUENCE)?);
    outer.expect(der::INTEGER)?;
    if outer.expect(der::SEQUENCE)? != [OID_EC_PUBLIC_KEY, OID_P256].concat().as_slice() {
        return None;
    }
    let inner = der::Reader(outer.expect(der::OCTET_STRING)?).expect(der::SEQUENCE)?;
    let mut inner = der::Reader(inner);
    if inner.expect(der::INTEGER)? != [1] {
        return None;
    }
    let private = inner.expect(der::OCTET_STRING)?;
    let mut public = None;
    while let Some((tag, content)) = inner.next_tlv() {
        if tag == 0xa1 {
            public = Some(content);
        }
    }
    let content = [
        der::tlv(der::INTEGER, &[1]),
        der::tlv(der::OCTET_STRING, private),
        der::tlv(0xa0, OID_P256),
        der::tlv(0xa1, public?),
    ]
    .concat();
    Some(der::tlv(der::SEQUENCE, &content))
}

/// A new P-256 key and its `EC PRIVATE KEY` PEM.
fn generate_key() -> Result<(String, KeyPair), PkiError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    // ring's PKCS#8 layout is fixed; failing here would be a ring change.
    let sec1 = pkcs8_to_sec1(key.serialized_der())
        .ok_or(PkiError::Generate(rcgen::Error::CouldNotParseKeyPair))?;
    Ok((pem_encode("EC PRIVATE KEY", &sec1), key))
}

/// `certutil.LoadOrGenerateKeyFile`: the key in `path`, or a new one written
/// there (0600) when it is missing or `regenerate` is set.
fn load_or_generate_key(path: &Path, regenerate: bool) -> Result<(String, KeyPair), PkiError> {
    if !regenerate && path.exists() {
        return load_key(path);
    }
    let (pem_text, key) = generate_key()?;
    write_file(path, pem_text.as_bytes(), 0o600)?;
    Ok((pem_text, key))
}

/// Reads a key file: SEC1 `EC PRIVATE KEY` (P-256, as k3s writes) or PKCS#8
/// `PRIVATE KEY`. Returns the file text as it is, and the key.
fn load_key(path: &Path) -> Result<(String, KeyPair), PkiError> {
    let bad = |reason: String| PkiError::BadFile {
        path: path.to_owned(),
        reason,
    };
    let text = read_text(path)?;
    let blocks = pem::parse_many(&text).map_err(|e| bad(e.to_string()))?;
    let block = blocks
        .iter()
        .find(|b| b.tag().ends_with("PRIVATE KEY"))
        .ok_or_else(|| bad("no PRIVATE KEY block".to_owned()))?;
    let key = match block.tag() {
        "EC PRIVATE KEY" => KeyPair::from_pkcs8_der_and_sign_algo(
            &PrivatePkcs8KeyDer::from(sec1_to_pkcs8(block.contents())),
            &PKCS_ECDSA_P256_SHA256,
        ),
        "PRIVATE KEY" => KeyPair::try_from(block.contents()),
        other => return Err(bad(format!("unsupported key type {other}"))),
    }
    .map_err(|e| bad(format!("unusable key: {e}")))?;
    Ok((text, key))
}

/// The PKCS#8 DER of the first private key in a PEM text (SEC1 wrapped).
fn pkcs8_of_pem(pem_text: &str) -> Option<Vec<u8>> {
    let blocks = pem::parse_many(pem_text).ok()?;
    blocks.iter().find_map(|b| match b.tag() {
        "EC PRIVATE KEY" => Some(sec1_to_pkcs8(b.contents())),
        "PRIVATE KEY" => Some(b.contents().to_vec()),
        _ => None,
    })
}

fn first_cert(path: &Path, pem_bytes: &[u8]) -> Result<Vec<u8>, PkiError> {
    read_certs_from(path, pem_bytes)?
        .into_iter()
        .next()
        .map(|c| c.to_vec())
        .ok_or_else(|| PkiError::BadFile {
            path: path.to_owned(),
            reason: "no CERTIFICATE block".to_owned(),
        })
}

fn read_certs_from(
    path: &Path,
    pem_bytes: &[u8],
) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    let blocks = pem::parse_many(pem_bytes).map_err(|e| PkiError::BadFile {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    Ok(blocks
        .into_iter()
        .filter(|b| b.tag() == "CERTIFICATE")
        .map(|b| CertificateDer::from(b.into_contents()))
        .collect())
}

/// PEM as Go's `pem.EncodeToMemory` writes it: 64-column base64, LF endings.
fn pem_encode(tag: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {tag}-----\n");
    // base64 output is ASCII, so every 64-byte chunk is valid UTF-8.
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {tag}-----\n"));
    out
}

fn read_text(path: &Path) -> Result<String, PkiError> {
    fs::read_to_string(path).map_err(|source| PkiError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Writes through a temporary file and a rename, so a crash never leaves a
/// half-written key or certificate, and the file has `mode` from the start.
fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), PkiError> {
    let io_err = |source| PkiError::Io {
        path: path.to_owned(),
        source,
    };
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io_err)?;
    // A leftover temporary file keeps its old mode through open(): set it.
    file.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(io_err)?;
    file.write_all(contents).map_err(io_err)?;
    file.sync_all().map_err(io_err)?;
    fs::rename(&tmp, path).map_err(io_err)
}

fn now() -> OffsetDateTime {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    OffsetDateTime::from_unix_timestamp(i64::try_from(secs).unwrap_or(0))
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use rustls::RootCertStore;
    use rustls::client::WebPkiServerVerifier;
    use rustls::client::danger::ServerCertVerifier as _;
    use rustls::pki_types::{ServerName, UnixTime};
    use rustls::server::WebPkiClientVerifier;

    // From the recorded K3s v1.21.2 server (transcript.txt, transcript2.txt).
    // Its CAs were made at 1795813231 (2026-11-27 21:00:31 UTC).
    const RECORDED_CA_TIME: i64 = 1795813231;
    /// The recorded server CA: also the recorded `/cacerts` body (570 bytes).
    pub(crate) const RECORDED_SERVER_CA: &str = "-----BEGIN CERTIFICATE-----
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
    const RECORDED_CLIENT_CA: &str = "-----BEGIN CERTIFICATE-----
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
    /// serving-kubelet.crt leaf for rust-edge-1, K3s-Node-IP 198.18.0.2,
    /// issued at 1795813314 (21:01:54).
    const RECORDED_SERVING_KUBELET: &str = "-----BEGIN CERTIFICATE-----
MIIBpzCCAUygAwIBAgIIJE3xukYxKb0wCgYIKoZIzj0EAwIwIzEhMB8GA1UEAwwY
azNzLXNlcnZlci1jYUAxNzk1ODEzMjMxMB4XDTI2MTEyNzIxMDAzMVoXDTI3MTEy
NzIxMDE1NFowFjEUMBIGA1UEAxMLcnVzdC1lZGdlLTEwWTATBgcqhkjOPQIBBggq
hkjOPQMBBwNCAASKhfrp5i3e8DyF84uDXN2+eUNqjqaOxXJQBzM9979ezD2gb6Vt
dbRyGca0n92GzvgzSvOqnH5Npnf29JBvwPKto3cwdTAOBgNVHQ8BAf8EBAMCBaAw
EwYDVR0lBAwwCgYIKwYBBQUHAwEwHwYDVR0jBBgwFoAU0fSmZuazqvkrgWo+ghrV
/jHe464wLQYDVR0RBCYwJIILcnVzdC1lZGdlLTGCCWxvY2FsaG9zdIcEfwAAAYcE
xhIAAjAKBggqhkjOPQQDAgNJADBGAiEArQ2jpaXXyq3jL97ZksyrCYjLmsthra81
nArqJCb33IgCIQCPfeytAtyPZDjG9UaM6/yOYio93a75FEoCiz7toPAFdw==
-----END CERTIFICATE-----
";
    /// serving-kubelet.crt leaf for `Rust-Edge-1`, K3s-Node-IP
    /// `198.18.0.2,fd00::2`, issued at 1795813336 (21:02:16).
    const RECORDED_SERVING_KUBELET_V6: &str = "-----BEGIN CERTIFICATE-----
MIIBujCCAWCgAwIBAgIITj7ZtF+ZhfwwCgYIKoZIzj0EAwIwIzEhMB8GA1UEAwwY
azNzLXNlcnZlci1jYUAxNzk1ODEzMjMxMB4XDTI2MTEyNzIxMDAzMVoXDTI3MTEy
NzIxMDIxNlowFjEUMBIGA1UEAxMLcnVzdC1lZGdlLTEwWTATBgcqhkjOPQIBBggq
hkjOPQMBBwNCAASKhfrp5i3e8DyF84uDXN2+eUNqjqaOxXJQBzM9979ezD2gb6Vt
dbRyGca0n92GzvgzSvOqnH5Npnf29JBvwPKto4GKMIGHMA4GA1UdDwEB/wQEAwIF
oDATBgNVHSUEDDAKBggrBgEFBQcDATAfBgNVHSMEGDAWgBTR9KZm5rOq+SuBaj6C
GtX+Md7jrjA/BgNVHREEODA2ggtydXN0LWVkZ2UtMYIJbG9jYWxob3N0hwR/AAAB
hwTGEgAChxD9AAAAAAAAAAAAAAAAAAACMAoGCCqGSM49BAMCA0gAMEUCIQChCVGp
BAgGVeit7WL/wfiM1TB73O2yJgY968px+8IcDQIgMbGzquK2sQ+BTLiiHCkUnIan
Yo6k/SDSCfhyq5fHj3U=
-----END CERTIFICATE-----
";
    /// client-kubelet.crt leaf for rust-edge-1, issued at 1795813315 (21:01:55).
    const RECORDED_CLIENT_KUBELET: &str = "-----BEGIN CERTIFICATE-----
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
    /// client-kube-proxy.crt leaf, made with the CAs.
    const RECORDED_KUBE_PROXY: &str = "-----BEGIN CERTIFICATE-----
MIIBfTCCASOgAwIBAgIITe8PV+69QWcwCgYIKoZIzj0EAwIwIzEhMB8GA1UEAwwY
azNzLWNsaWVudC1jYUAxNzk1ODEzMjMxMB4XDTI2MTEyNzIxMDAzMVoXDTI3MTEy
NzIxMDAzMVowHDEaMBgGA1UEAxMRc3lzdGVtOmt1YmUtcHJveHkwWTATBgcqhkjO
PQIBBggqhkjOPQMBBwNCAARh7n2vuEXxznUh/sKA4DBdDHniViCiRilERCHZC/KJ
YMAeIvTbW5ceT+ILs5YULNzW23tp3B7DysnFO8OdXMGao0gwRjAOBgNVHQ8BAf8E
BAMCBaAwEwYDVR0lBAwwCgYIKwYBBQUHAwIwHwYDVR0jBBgwFoAU7jggfmxOKQo0
Fy6lYm+XERNHhxIwCgYIKoZIzj0EAwIDSAAwRQIhALYFJ8Y2tqXgceWK5CW4CJRH
f31kgKPBhrjyN0xAXCf6AiBgeaaPvZ4lGm4c/4kFFQGo9WlBiEhvGIT85z7v9K19
Yw==
-----END CERTIFICATE-----
";

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> Self {
            static COUNTER: AtomicUsize = AtomicUsize::new(0);
            let path = std::env::temp_dir().join(format!(
                "armlet-devserver-pki-{}-{}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = fs::remove_dir_all(&path);
            Self(path.join("server").join("tls"))
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            if let Some(root) = self.0.parent().and_then(Path::parent) {
                let _ = fs::remove_dir_all(root);
            }
        }
    }

    fn at(unix: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(unix).unwrap()
    }

    fn der_of(pem_text: &str) -> Vec<u8> {
        pem::parse(pem_text).unwrap().into_contents()
    }

    fn blocks(body: &str) -> Vec<pem::Pem> {
        pem::parse_many(body).unwrap()
    }

    fn tags(body: &str) -> Vec<String> {
        blocks(body).iter().map(|b| b.tag().to_owned()).collect()
    }

    /// (OID, critical, value) of every extension, in order.
    fn extensions(cert: &X509Certificate<'_>) -> Vec<(String, bool, Vec<u8>)> {
        cert.extensions()
            .iter()
            .map(|e| (e.oid.to_id_string(), e.critical, e.value.to_vec()))
            .collect()
    }

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    fn roots(ca: &CertificateDer<'static>) -> Arc<RootCertStore> {
        let mut store = RootCertStore::empty();
        store.add(ca.clone()).unwrap();
        Arc::new(store)
    }

    fn verify_server(
        ca: &CertificateDer<'static>,
        chain: &[CertificateDer<'static>],
        name: &str,
    ) -> Result<(), rustls::Error> {
        let verifier = WebPkiServerVerifier::builder_with_provider(roots(ca), provider())
            .build()
            .unwrap();
        let name = ServerName::try_from(name.to_owned()).unwrap();
        verifier
            .verify_server_cert(&chain[0], &chain[1..], &name, &[], UnixTime::now())
            .map(|_| ())
    }

    fn verify_client(
        ca: &CertificateDer<'static>,
        chain: &[CertificateDer<'static>],
    ) -> Result<(), rustls::Error> {
        let verifier = WebPkiClientVerifier::builder_with_provider(roots(ca), provider())
            .build()
            .unwrap();
        verifier
            .verify_client_cert(&chain[0], &chain[1..], UnixTime::now())
            .map(|_| ())
    }

    fn chain_of(body: &str) -> Vec<CertificateDer<'static>> {
        blocks(body)
            .into_iter()
            .filter(|b| b.tag() == "CERTIFICATE")
            .map(|b| CertificateDer::from(b.into_contents()))
            .collect()
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn pki_can_be_shared_between_tasks() {
        fn shareable<T: Send + Sync>() {}
        shareable::<Pki>();
    }

    #[test]
    fn pem_layout_and_key_ids_are_gos() {
        for recorded in [
            RECORDED_SERVER_CA,
            RECORDED_CLIENT_CA,
            RECORDED_SERVING_KUBELET,
        ] {
            assert_eq!(pem_encode("CERTIFICATE", &der_of(recorded)), recorded);
        }
        let der = der_of(RECORDED_SERVER_CA);
        let (_, ca) = X509Certificate::from_der(&der).unwrap();
        let ski = subject_key_id(&ca).unwrap();
        assert_eq!(go_key_id(&ca.public_key().subject_public_key.data), ski);
    }

    #[test]
    fn new_cas_match_the_recorded_ones_but_for_keys() {
        let dir = TempDir::new();
        let pki = Pki::load_or_create_at(&dir.0, at(RECORDED_CA_TIME)).unwrap();
        for (ours, recorded) in [
            (pki.server_ca_pem(), RECORDED_SERVER_CA),
            (pki.client_ca_pem(), RECORDED_CLIENT_CA),
        ] {
            assert_eq!(tags(ours), ["CERTIFICATE"]);
            let (ours_der, recorded_der) = (der_of(ours), der_of(recorded));
            let (_, a) = X509Certificate::from_der(&ours_der).unwrap();
            let (_, b) = X509Certificate::from_der(&recorded_der).unwrap();
            assert_eq!(a.version(), b.version());
            assert_eq!(a.raw_serial(), [0]);
            assert_eq!(a.raw_serial(), b.raw_serial());
            assert_eq!(a.signature_algorithm, b.signature_algorithm);
            // Same name bytes: CN k3s-*-ca@1795813231 as a UTF8String.
            assert_eq!(a.subject().as_raw(), b.subject().as_raw());
            assert_eq!(a.issuer().as_raw(), b.issuer().as_raw());
            assert_eq!(a.validity().not_before, b.validity().not_before);
            assert_eq!(a.validity().not_after, b.validity().not_after);
            assert_eq!(a.public_key().algorithm, b.public_key().algorithm);
            // KeyUsage and BasicConstraints identical, SKI at the same place
            // (its value is the key's own SHA-1).
            let (ea, eb) = (extensions(&a), extensions(&b));
            assert_eq!(ea.len(), 3);
            assert_eq!(ea[..2], eb[..2]);
            assert_eq!((&ea[2].0, ea[2].1), (&eb[2].0, eb[2].1));
            let ski = der::tlv(
                der::OCTET_STRING,
                &go_key_id(&a.public_key().subject_public_key.data),
            );
            assert_eq!(ea[2].2, ski);
            assert!(a.verify_signature(None).is_ok());
            // Everything signed has the same size; only the signature's DER
            // length varies with its value.
            assert_eq!(
                a.tbs_certificate.as_ref().len(),
                b.tbs_certificate.as_ref().len()
            );
        }
    }

    #[test]
    fn leaves_match_the_recorded_ones_but_for_keys_and_serials() {
        let dir = TempDir::new();
        let pki = Pki::load_or_create_at(&dir.0, at(RECORDED_CA_TIME)).unwrap();
        let ca_der = der_of(pki.server_ca_pem());
        let (_, ca) = X509Certificate::from_der(&ca_der).unwrap();
        let ca_ski = subject_key_id(&ca).unwrap();

        let ip4: IpAddr = "198.18.0.2".parse().unwrap();
        let ip6: IpAddr = "fd00::2".parse().unwrap();
        let cases = [
            (
                pki.serving_kubelet_at("rust-edge-1", &[ip4], None, at(1795813314))
                    .unwrap(),
                RECORDED_SERVING_KUBELET,
                Some(&ca_ski),
            ),
            (
                pki.serving_kubelet_at("Rust-Edge-1", &[ip4, ip6], None, at(1795813336))
                    .unwrap(),
                RECORDED_SERVING_KUBELET_V6,
                Some(&ca_ski),
            ),
            (
                pki.client_kubelet_at("rust-edge-1", None, at(1795813315))
                    .unwrap(),
                RECORDED_CLIENT_KUBELET,
                None,
            ),
            (
                pki.client_kube_proxy(None).unwrap(),
                RECORDED_KUBE_PROXY,
                None,
            ),
        ];
        for (body, recorded, server_ski) in cases {
            let ours_der = blocks(&body)[0].contents().to_vec();
            let recorded_der = der_of(recorded);
            let (_, a) = X509Certificate::from_der(&ours_der).unwrap();
            let (_, b) = X509Certificate::from_der(&recorded_der).unwrap();
            assert_eq!(a.subject().as_raw(), b.subject().as_raw(), "{recorded}");
            assert_eq!(a.issuer().as_raw(), b.issuer().as_raw());
            assert_eq!(a.validity().not_before, b.validity().not_before);
            assert_eq!(a.validity().not_after, b.validity().not_after);
            assert_eq!(a.signature_algorithm, b.signature_algorithm);
            // Go's serials: positive, below 2^63.
            assert!(a.raw_serial().len() <= 8 && a.raw_serial()[0] < 0x80);
            let (ea, eb) = (extensions(&a), extensions(&b));
            assert_eq!(ea.len(), eb.len());
            for (x, y) in ea.iter().zip(&eb) {
                assert_eq!((&x.0, x.1), (&y.0, y.1));
                // Only the AKI differs: it names our CA's key.
                if x.0 != "2.5.29.35" {
                    assert_eq!(x.2, y.2, "extension {}", x.0);
                }
            }
            if let Some(ski) = server_ski {
                let aki = ea.iter().find(|e| e.0 == "2.5.29.35").unwrap();
                assert_eq!(aki.2, der::tlv(der::SEQUENCE, &der::tlv(0x80, ski)));
            }
        }
    }

    #[test]
    fn reloads_identically_with_private_files() {
        let dir = TempDir::new();
        let first = Pki::load_or_create(&dir.0).unwrap();
        let second = Pki::load_or_create(&dir.0).unwrap();
        assert_eq!(first.server_ca_pem(), second.server_ca_pem());
        assert_eq!(first.client_ca_pem(), second.client_ca_pem());
        assert_eq!(
            crate::token::ca_hash(first.server_ca_pem().as_bytes()),
            crate::token::ca_hash(second.server_ca_pem().as_bytes())
        );
        assert_eq!(
            first.client_kube_proxy(None).unwrap(),
            second.client_kube_proxy(None).unwrap()
        );
        assert_eq!(
            first.client_k3s_controller(None).unwrap(),
            second.client_k3s_controller(None).unwrap()
        );
        assert_eq!(first.admin_client(), second.admin_client());
        assert_eq!(first.serving_kubelet_key.0, second.serving_kubelet_key.0);
        assert_eq!(first.client_kubelet_key.0, second.client_kubelet_key.0);

        assert_eq!(mode(&dir.0), 0o700);
        let mut keys = 0;
        for entry in fs::read_dir(&dir.0).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            assert!(!name.ends_with(".tmp"), "{name}");
            if name.ends_with(".key") {
                keys += 1;
                assert_eq!(mode(&path), 0o600, "{name}");
                assert_eq!(
                    tags(&read_text(&path).unwrap()),
                    ["EC PRIVATE KEY"],
                    "{name}"
                );
            } else {
                assert_eq!(mode(&path), 0o644, "{name}");
            }
        }
        // Two CAs, two shared kubelet keys, kube-proxy, k3s-controller, admin.
        assert_eq!(keys, 7);

        // Go's SEC1 layout for P-256: version 1, 32-byte key, curve, public key.
        let sec1 = der_of(&first.serving_kubelet_key.0);
        assert_eq!(sec1.len(), 121);
        assert_eq!(sec1[..7], [0x30, 0x77, 0x02, 0x01, 0x01, 0x04, 0x20]);
        assert_eq!(sec1[39..41], [0xa0, 0x0a]);
        assert_eq!(&sec1[41..51], OID_P256);
    }

    #[test]
    fn fixed_client_certificates() {
        let dir = TempDir::new();
        let pki = Pki::load_or_create(&dir.0).unwrap();
        for (body, cn) in [
            (pki.client_kube_proxy(None).unwrap(), "system:kube-proxy"),
            (
                pki.client_k3s_controller(None).unwrap(),
                "system:k3s-controller",
            ),
        ] {
            assert_eq!(
                tags(&body),
                ["CERTIFICATE", "CERTIFICATE", "EC PRIVATE KEY"]
            );
            let chain = chain_of(&body);
            assert_eq!(chain[1].as_ref(), pki.client_ca_der().as_ref());
            verify_client(pki.client_ca_der(), &chain).unwrap();
            let (_, leaf) = X509Certificate::from_der(&chain[0]).unwrap();
            let cns: Vec<_> = leaf
                .subject()
                .iter_common_name()
                .map(|c| c.as_str().unwrap())
                .collect();
            assert_eq!(cns, [cn]);
        }
        let (cert, key) = pki.admin_client();
        assert_eq!(tags(cert), ["CERTIFICATE", "CERTIFICATE"]);
        assert_eq!(tags(key), ["EC PRIVATE KEY"]);
        let chain = chain_of(cert);
        verify_client(pki.client_ca_der(), &chain).unwrap();
        let (_, leaf) = X509Certificate::from_der(&chain[0]).unwrap();
        assert_eq!(
            leaf.subject().to_string(),
            "O=system:masters, CN=system:admin"
        );
        // The admin key is the key of the admin certificate.
        let (_, pair) = load_key(&dir.0.join("client-admin.key")).unwrap();
        assert_eq!(
            leaf.public_key().subject_public_key.data.as_ref(),
            pair.public_key_raw()
        );
    }

    #[test]
    fn the_kube_apiserver_client_certificate_is_made_once_and_kept() {
        let dir = TempDir::new();
        let pki = Pki::load_or_create(&dir.0).unwrap();
        let (chain, _key) = pki.client_kube_apiserver().unwrap();
        assert_eq!(chain.len(), 2);
        assert_eq!(chain[1].as_ref(), pki.client_ca_der().as_ref());
        verify_client(pki.client_ca_der(), &chain).unwrap();
        let (_, leaf) = X509Certificate::from_der(&chain[0]).unwrap();
        assert_eq!(leaf.subject().to_string(), "CN=kube-apiserver");
        assert_eq!(mode(&dir.0.join("client-kube-apiserver.key")) & 0o077, 0);
        // The same certificate from the same files, after a reload too.
        assert_eq!(pki.client_kube_apiserver().unwrap().0, chain);
        let again = Pki::load_or_create(&dir.0).unwrap();
        assert_eq!(again.client_kube_apiserver().unwrap().0, chain);
    }

    #[test]
    fn serving_kubelet_bundle_verifies_for_its_names() {
        let dir = TempDir::new();
        let pki = Pki::load_or_create(&dir.0).unwrap();
        let ips = parse_node_ips("198.18.0.2,fd00::2").unwrap();
        let body = pki.serving_kubelet("Rust-Edge-1", &ips, None).unwrap();
        assert_eq!(
            tags(&body),
            ["CERTIFICATE", "CERTIFICATE", "EC PRIVATE KEY"]
        );
        // The key block is the shared serving-kubelet.key file, verbatim, and
        // the CA block the server CA.
        assert!(body.ends_with(&read_text(&dir.0.join(SERVING_KUBELET_KEY)).unwrap()));
        let chain = chain_of(&body);
        assert_eq!(chain[1].as_ref(), pki.server_ca.der.as_ref());

        for name in [
            "rust-edge-1",
            "localhost",
            "127.0.0.1",
            "198.18.0.2",
            "fd00::2",
        ] {
            verify_server(&pki.server_ca.der, &chain, name).unwrap();
        }
        assert!(verify_server(&pki.server_ca.der, &chain, "other-node").is_err());
        assert!(verify_server(pki.client_ca_der(), &chain, "rust-edge-1").is_err());

        let (_, leaf) = X509Certificate::from_der(&chain[0]).unwrap();
        assert_eq!(leaf.subject().to_string(), "CN=rust-edge-1");
        let eku = leaf.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && !eku.client_auth);
        let ku = leaf.key_usage().unwrap().unwrap();
        assert!(ku.critical && ku.value.digital_signature() && ku.value.key_encipherment());
        let sans: Vec<String> = leaf
            .subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names
            .iter()
            .map(|n| match n {
                GeneralName::DNSName(d) => format!("DNS:{d}"),
                GeneralName::IPAddress(b) => match b.len() {
                    4 => format!("IP:{}", IpAddr::from(<[u8; 4]>::try_from(*b).unwrap())),
                    _ => format!("IP:{}", IpAddr::from(<[u8; 16]>::try_from(*b).unwrap())),
                },
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(
            sans,
            [
                "DNS:rust-edge-1",
                "DNS:localhost",
                "IP:127.0.0.1",
                "IP:198.18.0.2",
                "IP:fd00::2"
            ]
        );
        let days = (leaf.validity().not_after.timestamp() - now().unix_timestamp()) / 86400;
        assert!((364..=365).contains(&days), "{days}");

        let body = pki.client_kubelet("Rust-Edge-1", None).unwrap();
        assert_eq!(
            tags(&body),
            ["CERTIFICATE", "CERTIFICATE", "EC PRIVATE KEY"]
        );
        let chain = chain_of(&body);
        verify_client(pki.client_ca_der(), &chain).unwrap();
        assert!(verify_client(&pki.server_ca.der, &chain).is_err());
        let (_, leaf) = X509Certificate::from_der(&chain[0]).unwrap();
        assert_eq!(
            leaf.subject().to_string(),
            "O=system:nodes, CN=system:node:rust-edge-1"
        );
    }

    #[test]
    fn csr_certificates_carry_the_csr_key_and_no_key_block() {
        let dir = TempDir::new();
        let pki = Pki::load_or_create(&dir.0).unwrap();
        let agent_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        // What a newer k3s agent sends: an empty-subject CSR.
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        let csr = params.serialize_request(&agent_key).unwrap();
        let csr_der = csr.der().to_vec();
        let csr_pem = csr.pem().unwrap();

        let ip: IpAddr = "198.18.0.2".parse().unwrap();
        let bodies = [
            pki.serving_kubelet("rust-edge-1", &[ip], Some(&csr_der))
                .unwrap(),
            pki.serving_kubelet("rust-edge-1", &[ip], Some(csr_pem.as_bytes()))
                .unwrap(),
            pki.client_kubelet("rust-edge-1", Some(&csr_der)).unwrap(),
            pki.client_kube_proxy(Some(&csr_der)).unwrap(),
            pki.client_k3s_controller(Some(&csr_der)).unwrap(),
        ];
        for (i, body) in bodies.iter().enumerate() {
            assert_eq!(tags(body), ["CERTIFICATE", "CERTIFICATE"], "body {i}");
            let chain = chain_of(body);
            let (_, leaf) = X509Certificate::from_der(&chain[0]).unwrap();
            assert_eq!(
                leaf.public_key().subject_public_key.data.as_ref(),
                agent_key.public_key_raw(),
                "body {i}"
            );
            if i < 2 {
                verify_server(&pki.server_ca.der, &chain, "rust-edge-1").unwrap();
            } else {
                verify_client(pki.client_ca_der(), &chain).unwrap();
            }
        }
        let proxy_chain = chain_of(&bodies[3]);
        let (_, proxy) = X509Certificate::from_der(&proxy_chain[0]).unwrap();
        assert_eq!(proxy.subject().to_string(), "CN=system:kube-proxy");

        // A tampered signature, garbage and trailing bytes are refused.
        let mut tampered = csr_der.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        let mut trailing = csr_der.clone();
        trailing.push(0);
        for bad in [
            &tampered[..],
            b"garbage",
            &trailing[..],
            b"-----BEGIN CERTIFICATE-----\n",
        ] {
            assert!(matches!(
                pki.serving_kubelet("rust-edge-1", &[], Some(bad)),
                Err(PkiError::InvalidCsr(_))
            ));
            assert!(matches!(
                pki.client_kube_proxy(Some(bad)),
                Err(PkiError::InvalidCsr(_))
            ));
        }
    }

    #[test]
    fn node_ip_header_parsing() {
        let ips = parse_node_ips("198.18.0.2,fd00::2").unwrap();
        assert_eq!(ips.len(), 2);
        assert!(parse_node_ips("").unwrap().is_empty());
        for bad in ["not-an-ip", "1.2.3.4,", " 1.2.3.4", "1.2.3.4, 5.6.7.8"] {
            let err = parse_node_ips(bad).unwrap_err();
            assert_eq!(err.to_string(), "invalid IP address <nil>", "{bad:?}");
        }
        // An IPv4-mapped address goes into the certificate as 4 bytes, as Go does.
        assert_eq!(
            go_ip("::ffff:10.0.0.1".parse().unwrap()),
            IpAddr::from([10, 0, 0, 1])
        );
    }

    #[test]
    fn bad_node_names_are_errors() {
        let dir = TempDir::new();
        let pki = Pki::load_or_create(&dir.0).unwrap();
        assert!(matches!(
            pki.serving_kubelet("", &[], None),
            Err(PkiError::InvalidName(_))
        ));
        assert!(matches!(
            pki.client_kubelet("nöde", None),
            Err(PkiError::InvalidName(_))
        ));
    }

    #[test]
    fn listener_certificate_is_persisted_and_follows_sans() {
        let dir = TempDir::new();
        let pki = Pki::load_or_create(&dir.0).unwrap();
        let sans: Vec<String> = ["127.0.0.1", "192.0.2.2", "127.0.0.1", "10.43.0.1"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        let (chain, key) = pki.listener(&sans).unwrap();
        assert_eq!(chain.len(), 2);
        assert_eq!(chain[1].as_ref(), pki.server_ca.der.as_ref());
        for name in [
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
            "localhost",
            "127.0.0.1",
            "192.0.2.2",
            "10.43.0.1",
        ] {
            verify_server(&pki.server_ca.der, &chain, name).unwrap();
        }
        assert!(verify_server(&pki.server_ca.der, &chain, "example.com").is_err());
        let (_, leaf) = X509Certificate::from_der(&chain[0]).unwrap();
        assert_eq!(leaf.subject().to_string(), "O=k3s, CN=k3s");
        assert!(matches!(key, PrivateKeyDer::Pkcs8(_)));
        assert_eq!(mode(&dir.0.join("serving-kube-apiserver.key")), 0o600);

        // Same SANs (or fewer): the stored certificate is reused, even by a
        // restarted server.
        let again = Pki::load_or_create(&dir.0).unwrap();
        let (chain2, key2) = again.listener(&sans[..1]).unwrap();
        assert_eq!(chain2, chain);
        assert_eq!(key2.secret_der(), key.secret_der());

        // A new SAN: reissued for the same key, old names kept.
        let mut more = sans.clone();
        more.push("devserver.example".to_owned());
        let (chain3, key3) = again.listener(&more).unwrap();
        assert_ne!(chain3[0], chain[0]);
        assert_eq!(key3.secret_der(), key.secret_der());
        verify_server(&again.server_ca.der, &chain3, "devserver.example").unwrap();
        verify_server(&again.server_ca.der, &chain3, "192.0.2.2").unwrap();

        // Close to expiry: reissued.
        let late = now() + Duration::days(LEAF_DAYS - 30);
        let (chain4, _) = again.listener_at(&more, late).unwrap();
        assert_ne!(chain4[0], chain3[0]);
    }

    #[test]
    fn a_new_ca_reissues_what_it_signed() {
        let dir = TempDir::new();
        let first = Pki::load_or_create(&dir.0).unwrap();
        let (listener, _) = first.listener(&[]).unwrap();
        fs::remove_file(dir.0.join("client-ca.crt")).unwrap();
        let second = Pki::load_or_create(&dir.0).unwrap();
        // The server side is untouched...
        assert_eq!(first.server_ca_pem(), second.server_ca_pem());
        assert_eq!(first.serving_kubelet_key.0, second.serving_kubelet_key.0);
        assert_eq!(second.listener(&[]).unwrap().0, listener);
        // ...the client CA is new (its key file was kept, as k3s does), and
        // everything it signed was reissued with new keys.
        assert_ne!(first.client_ca_pem(), second.client_ca_pem());
        assert_ne!(first.client_kubelet_key.0, second.client_kubelet_key.0);
        assert_ne!(first.admin_client().1, second.admin_client().1);
        assert_ne!(
            first.client_kube_proxy(None).unwrap(),
            second.client_kube_proxy(None).unwrap()
        );
        let chain = chain_of(&second.client_kube_proxy(None).unwrap());
        verify_client(second.client_ca_der(), &chain).unwrap();
    }

    #[test]
    fn broken_files_are_errors_not_panics() {
        let dir = TempDir::new();
        drop(Pki::load_or_create(&dir.0).unwrap());
        let key_path = dir.0.join("server-ca.key");
        let good_key = read_text(&key_path).unwrap();

        fs::write(&key_path, "not a key").unwrap();
        assert!(matches!(
            Pki::load_or_create(&dir.0),
            Err(PkiError::BadFile { .. })
        ));

        // A valid key that is not the CA's.
        fs::write(&key_path, generate_key().unwrap().0).unwrap();
        let err = Pki::load_or_create(&dir.0).unwrap_err();
        assert!(err.to_string().contains("does not match"), "{err}");

        fs::write(&key_path, &good_key).unwrap();
        fs::write(
            dir.0.join("server-ca.crt"),
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        assert!(matches!(
            Pki::load_or_create(&dir.0),
            Err(PkiError::BadFile { .. })
        ));
    }

    #[test]
    fn ec_keys_convert_both_ways() {
        let (pem_text, key) = generate_key().unwrap();
        let sec1 = der_of(&pem_text);
        let back = KeyPair::from_pkcs8_der_and_sign_algo(
            &PrivatePkcs8KeyDer::from(sec1_to_pkcs8(&sec1)),
            &PKCS_ECDSA_P256_SHA256,
        )
        .unwrap();
        assert_eq!(back.public_key_raw(), key.public_key_raw());
        assert_eq!(pkcs8_to_sec1(back.serialized_der()).unwrap(), sec1);
        assert!(pkcs8_to_sec1(b"\x30\x03\x02\x01\x00").is_none());
        assert!(pkcs8_to_sec1(b"").is_none());
        // Lengths in long form read back.
        let long = der::tlv(der::OCTET_STRING, &[7u8; 300]);
        assert_eq!(
            der::Reader(&long).expect(der::OCTET_STRING).unwrap().len(),
            300
        );
    }
}
