//! Mutual TLS for the exchange: the settings (`tls_config`, `--tls-*`), the certificate
//! material read from files, and the rustls configurations built from it.
//!
//! A site's certificate names its cluster as a DNS Subject Alternative Name (DESIGN.md
//! decision 10). Both sides of every exchange connection present a certificate and verify the
//! other's against `ca_file`: the client connects to a member of cluster `X` with server
//! name `X` (so a certificate that does not name `X` fails the handshake), and the server
//! compares the cluster a caller claims with the names of its client certificate
//! ([`check_names`]).
//!
//! [`ExchangeTls`] holds the current configurations; [`ExchangeTls::follow`] reads the files
//! again on SIGHUP and when they change ([`crate::reload`]): new connections use the new
//! certificate, connections already up keep theirs. A bad new file is refused with an error
//! logged, and the old material stays in use.
//!
//! Settings copy the service-center syncer's `tls_config` block (1.3.0
//! `syncer/config/tlsconfig.go`): `enabled`, `verify_peer`, `min_version`, `passphrase`,
//! `ca_file`, `cert_file`, `key_file`, `ciphers`, with its default files
//! `$SSL_ROOT/{trust.cer, server.cer, server_key.pem}` (`./certs/...` without `SSL_ROOT`).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{
    ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme,
    SupportedProtocolVersion,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use tokio_util::sync::CancellationToken;

use crate::reload::{FileWatch, Reloaded};

/// The default CA file name (the service-center syncer's).
pub const DEFAULT_CA_FILE: &str = "trust.cer";
/// The default certificate file name (the service-center syncer's).
pub const DEFAULT_CERT_FILE: &str = "server.cer";
/// The default private key file name (the service-center syncer's).
pub const DEFAULT_KEY_FILE: &str = "server_key.pem";

/// The directory of the default files: `$SSL_ROOT`, else `./certs`, as the service-center
/// syncer.
pub fn default_dir() -> PathBuf {
    match std::env::var_os("SSL_ROOT") {
        Some(root) if !root.is_empty() => PathBuf::from(root),
        _ => PathBuf::from("certs"),
    }
}

/// A secret string (the key's passphrase): `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps `text`.
    pub fn new(text: String) -> Secret {
        Secret(text)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The lowest TLS version accepted (`min_version`, `--tls-min-version`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    /// TLS 1.2 (the service-center syncer's default).
    Tls12,
    /// TLS 1.3.
    Tls13,
}

impl TlsVersion {
    /// Parses `TLSv1.2`/`TLSv1.3` (the service-center syncer's spelling), also `1.2`, `1.3`,
    /// `tls1.2`, `tls1.3`, in any case.
    ///
    /// # Errors
    /// A message listing the accepted values.
    pub fn parse(text: &str) -> Result<TlsVersion, String> {
        let t = text.trim().to_ascii_lowercase();
        let t = t
            .strip_prefix("tlsv")
            .or_else(|| t.strip_prefix("tls"))
            .unwrap_or(&t);
        match t {
            "1.2" => Ok(TlsVersion::Tls12),
            "1.3" => Ok(TlsVersion::Tls13),
            _ => Err("expected TLSv1.2 or TLSv1.3 (TLS 1.0 and 1.1 are not supported)".into()),
        }
    }
}

/// Validated TLS settings of the exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// PEM file of the CA certificate(s) that sign the sites' certificates.
    pub ca_file: PathBuf,
    /// PEM file of this site's certificate (chain), naming the cluster as a DNS SAN.
    pub cert_file: PathBuf,
    /// PEM file of the certificate's private key (PKCS#8, PKCS#1 or SEC1; encrypted PKCS#8
    /// with `passphrase`).
    pub key_file: PathBuf,
    /// Passphrase of an encrypted key file.
    pub passphrase: Option<Secret>,
    /// Lowest TLS version accepted, both ways.
    pub min_version: TlsVersion,
    /// Cipher suites allowed (IANA names, e.g. `TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256`,
    /// `TLS_AES_128_GCM_SHA256`); empty: rustls' defaults.
    pub ciphers: Vec<String>,
}

impl TlsConfig {
    /// The service-center syncer's defaults: the files of [`default_dir`], TLS 1.2 and up,
    /// every cipher suite rustls offers.
    pub fn defaults() -> TlsConfig {
        let dir = default_dir();
        TlsConfig {
            ca_file: dir.join(DEFAULT_CA_FILE),
            cert_file: dir.join(DEFAULT_CERT_FILE),
            key_file: dir.join(DEFAULT_KEY_FILE),
            passphrase: None,
            min_version: TlsVersion::Tls12,
            ciphers: Vec::new(),
        }
    }
}

/// Why TLS material could not be used; nothing changed (at a reload, the old material stays).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read.
    #[error("cannot read the TLS file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A file holds no usable PEM item of the kind needed.
    #[error("{path}: {reason}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is missing or wrong.
        reason: String,
    },
    /// This site's own certificate does not name its cluster.
    #[error("the certificate {path} names {names:?}, not this cluster {cluster:?}: a site's certificate must carry its --cluster-name as a DNS subject alternative name (docs/security.md)")]
    NotForCluster {
        /// The certificate file.
        path: PathBuf,
        /// The cluster name.
        cluster: String,
        /// The DNS names the certificate carries.
        names: Vec<String>,
    },
    /// The cluster name cannot be a certificate's DNS name.
    #[error("with TLS, the cluster name {0:?} must be a DNS name (letters, digits, '-' and '.')")]
    ClusterName(String),
    /// A cipher suite name is unknown.
    #[error("unknown cipher suite {name:?}; supported: {supported}")]
    Cipher {
        /// The name given.
        name: String,
        /// The names rustls supports, comma separated.
        supported: String,
    },
    /// rustls refused the configuration (e.g. no cipher suite for the versions, a key that
    /// does not match the certificate).
    #[error("invalid TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The CA file cannot make a client-certificate verifier.
    #[error("invalid CA certificates: {0}")]
    Verifier(String),
}

/// The configurations built from one reading of the files.
#[derive(Debug)]
struct Current {
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    names: Vec<String>,
}

/// The exchange's TLS state: current server and client configurations, replaced on reload.
#[derive(Debug)]
pub struct ExchangeTls {
    settings: TlsConfig,
    cluster: String,
    current: Reloaded<Current>,
}

impl ExchangeTls {
    /// Reads the files of `settings` and checks that the certificate names `cluster`.
    ///
    /// # Errors
    /// [`Error`] naming the file or setting at fault.
    pub fn load(settings: TlsConfig, cluster: &str) -> Result<Arc<ExchangeTls>, Error> {
        if ServerName::try_from(cluster.to_owned()).is_err() {
            return Err(Error::ClusterName(cluster.to_owned()));
        }
        let current = build(&settings, cluster)?;
        Ok(Arc::new(ExchangeTls {
            settings,
            cluster: cluster.to_owned(),
            current: Reloaded::new(current),
        }))
    }

    fn current(&self) -> Arc<Current> {
        self.current.get()
    }

    /// The server configuration for the next accepted connection.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.current().server.clone()
    }

    /// The client configuration for the next connection to a peer.
    pub fn client_config(&self) -> Arc<ClientConfig> {
        self.current().client.clone()
    }

    /// The DNS names of this site's current certificate.
    pub fn names(&self) -> Vec<String> {
        self.current().names.clone()
    }

    /// The files watched for a reload.
    pub fn files(&self) -> Vec<PathBuf> {
        vec![
            self.settings.ca_file.clone(),
            self.settings.cert_file.clone(),
            self.settings.key_file.clone(),
        ]
    }

    /// Reads the files again; on success new connections use them.
    ///
    /// # Errors
    /// [`Error`]; the material in use stays.
    pub fn reload(&self) -> Result<(), Error> {
        self.current.replace(build(&self.settings, &self.cluster)?);
        Ok(())
    }

    /// Reloads whenever `watch` fires, until `shutdown`; logs each outcome
    /// ([`crate::reload::follow`]).
    pub async fn follow(self: Arc<Self>, watch: FileWatch, shutdown: CancellationToken) {
        let tls = self.clone();
        crate::reload::follow(watch, shutdown, "exchange TLS certificate", move || {
            tls.reload().map(|()| {
                format!(
                    "names {:?} from {}",
                    tls.names(),
                    tls.settings.cert_file.display()
                )
            })
        })
        .await;
    }
}

fn read(path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|source| Error::Read {
        path: path.to_owned(),
        source,
    })
}

fn pem_error(path: &Path, reason: impl Into<String>) -> Error {
    Error::Pem {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

/// Every certificate of a PEM file.
///
/// # Errors
/// [`Error::Read`], or [`Error::Pem`] when it holds none.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let bytes = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(pem_error(path, "no CERTIFICATE in the file"));
    }
    Ok(certs)
}

/// The CA certificates of a PEM file as a root store.
///
/// # Errors
/// [`Error::Read`], or [`Error::Pem`] when it holds no usable CA certificate.
pub fn read_roots(path: &Path) -> Result<RootCertStore, Error> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(path)? {
        roots
            .add(cert)
            .map_err(|e| pem_error(path, format!("not a usable CA certificate: {e}")))?;
    }
    Ok(roots)
}

/// The private key of a PEM file, decrypting an `ENCRYPTED PRIVATE KEY` with `passphrase`.
///
/// # Errors
/// [`Error::Read`], or [`Error::Pem`] naming the file and what is wrong (no key, an
/// encrypted key without a passphrase or with a wrong one, the legacy OpenSSL format).
pub fn read_key(path: &Path, passphrase: Option<&Secret>) -> Result<PrivateKeyDer<'static>, Error> {
    let bytes = read(path)?;
    let text = String::from_utf8_lossy(&bytes);
    if text.contains("Proc-Type: 4,ENCRYPTED") {
        return Err(pem_error(
            path,
            "a legacy OpenSSL-encrypted key is not supported; convert it to encrypted PKCS#8: \
             openssl pkcs8 -topk8 -v2 aes-256-cbc -in OLD -out NEW",
        ));
    }
    if text.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----") {
        let Some(passphrase) = passphrase else {
            return Err(pem_error(
                path,
                "the key is encrypted: set its passphrase (exchange: tls_config.passphrase or \
                 SYNCER_TLS_PASSPHRASE; registry client: servicecenter.tls_config.passphrase or \
                 SYNCER_SC_TLS_PASSPHRASE)",
            ));
        };
        let (label, doc) = pkcs8::SecretDocument::from_pem(&text)
            .map_err(|e| pem_error(path, format!("not a PEM key: {e}")))?;
        if label != "ENCRYPTED PRIVATE KEY" {
            return Err(pem_error(path, format!("unexpected PEM item {label}")));
        }
        let info = pkcs8::EncryptedPrivateKeyInfo::try_from(doc.as_bytes())
            .map_err(|e| pem_error(path, format!("not an encrypted PKCS#8 key: {e}")))?;
        let plain = info
            .decrypt(passphrase.0.as_bytes())
            .map_err(|_| pem_error(path, "cannot decrypt the key: wrong passphrase?"))?;
        return Ok(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            plain.as_bytes().to_vec(),
        )));
    }
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| {
        pem_error(
            path,
            format!("no usable PRIVATE KEY (PKCS#8, RSA or EC) in the file: {e}"),
        )
    })
}

/// The DNS names (subject alternative names) of a certificate; empty when it cannot be parsed.
pub fn dns_names(cert: &CertificateDer<'_>) -> Vec<String> {
    match webpki::EndEntityCert::try_from(cert) {
        Ok(parsed) => parsed.valid_dns_names().map(str::to_owned).collect(),
        Err(_) => Vec::new(),
    }
}

/// Whether `cert` names `cluster` (a DNS SAN matching it, wildcards as in server
/// authentication).
///
/// # Errors
/// The DNS names the certificate carries, when none matches.
pub fn check_names(cert: &CertificateDer<'_>, cluster: &str) -> Result<(), Vec<String>> {
    let Ok(name) = ServerName::try_from(cluster) else {
        return Err(dns_names(cert));
    };
    let Ok(parsed) = webpki::EndEntityCert::try_from(cert) else {
        return Err(Vec::new());
    };
    match parsed.verify_is_valid_for_subject_name(&name) {
        Ok(()) => Ok(()),
        Err(_) => Err(parsed.valid_dns_names().map(str::to_owned).collect()),
    }
}

/// The crypto provider restricted to `ciphers` (none: all of ring's).
///
/// # Errors
/// [`Error::Cipher`] for a name rustls does not know, with the supported ones.
pub fn provider(ciphers: &[String]) -> Result<CryptoProvider, Error> {
    let mut provider = rustls::crypto::ring::default_provider();
    if ciphers.is_empty() {
        return Ok(provider);
    }
    let all = provider.cipher_suites.clone();
    let name = |s: &rustls::SupportedCipherSuite| s.suite().as_str().unwrap_or("").to_owned();
    let mut chosen = Vec::new();
    for wanted in ciphers {
        let wanted = wanted.trim();
        // Go and IANA spell the TLS 1.3 suites TLS_AES_..., rustls TLS13_AES_....
        let alt = wanted.replacen("TLS_", "TLS13_", 1);
        match all
            .iter()
            .find(|s| name(s).eq_ignore_ascii_case(wanted) || name(s).eq_ignore_ascii_case(&alt))
        {
            Some(suite) => chosen.push(*suite),
            None => {
                return Err(Error::Cipher {
                    name: wanted.to_owned(),
                    supported: all.iter().map(name).collect::<Vec<_>>().join(", "),
                })
            }
        }
    }
    provider.cipher_suites = chosen;
    Ok(provider)
}

/// The versions from `min` up that have at least one of `provider`'s suites.
pub fn versions(
    provider: &CryptoProvider,
    min: TlsVersion,
) -> Vec<&'static SupportedProtocolVersion> {
    let mut out = Vec::new();
    for (version, at) in [
        (&rustls::version::TLS12, TlsVersion::Tls12),
        (&rustls::version::TLS13, TlsVersion::Tls13),
    ] {
        if at >= min
            && provider
                .cipher_suites
                .iter()
                .any(|s| s.version() == version)
        {
            out.push(version);
        }
    }
    out
}

fn build(settings: &TlsConfig, cluster: &str) -> Result<Current, Error> {
    let roots = Arc::new(read_roots(&settings.ca_file)?);
    let chain = read_certs(&settings.cert_file)?;
    let key = read_key(&settings.key_file, settings.passphrase.as_ref())?;
    let names = match check_names(&chain[0], cluster) {
        Ok(()) => dns_names(&chain[0]),
        Err(names) => {
            return Err(Error::NotForCluster {
                path: settings.cert_file.clone(),
                cluster: cluster.to_owned(),
                names,
            })
        }
    };
    let provider = Arc::new(provider(&settings.ciphers)?);
    let versions = versions(&provider, settings.min_version);
    if versions.is_empty() {
        return Err(Error::Rustls(rustls::Error::General(format!(
            "no cipher suite of {:?} or later is allowed by ciphers",
            settings.min_version
        ))));
    }
    let client_verifier =
        WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|e| Error::Verifier(e.to_string()))?;
    let mut server = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)?
        .with_client_cert_verifier(client_verifier)
        .with_single_cert(chain.clone(), key.clone_key())?;
    server.alpn_protocols = vec![b"h2".to_vec()];
    let server_verifier =
        WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|e| Error::Verifier(e.to_string()))?;
    let mut client = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&versions)?
        .with_webpki_verifier(server_verifier)
        .with_client_auth_cert(chain, key)?;
    client.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Current {
        server: Arc::new(server),
        client: Arc::new(client),
        names,
    })
}

/// A server-certificate verifier for the two places that do not verify against a CA: it
/// accepts the end-entity certificate `accepts` says yes to (whatever its name and issuer),
/// and still checks the handshake signatures with `provider`'s algorithms, so the peer holds
/// the key of the certificate it sent. Used for the registry's `verify_peer: false`
/// ([`crate::registry_tls`]) and for the daemon's pinned loopback to its own core
/// ([`crate::servicecenter::tls`]).
pub struct EndEntityVerifier {
    provider: Arc<CryptoProvider>,
    accepts: Box<dyn Fn(&CertificateDer<'_>) -> bool + Send + Sync>,
}

impl EndEntityVerifier {
    /// A verifier accepting what `accepts` accepts.
    pub fn new(
        provider: Arc<CryptoProvider>,
        accepts: impl Fn(&CertificateDer<'_>) -> bool + Send + Sync + 'static,
    ) -> EndEntityVerifier {
        EndEntityVerifier {
            provider,
            accepts: Box::new(accepts),
        }
    }
}

impl fmt::Debug for EndEntityVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EndEntityVerifier")
    }
}

impl ServerCertVerifier for EndEntityVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if (self.accepts)(end_entity) {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_in_the_service_center_syncers_spelling() {
        assert_eq!(TlsVersion::parse("TLSv1.2"), Ok(TlsVersion::Tls12));
        assert_eq!(TlsVersion::parse("tlsv1.3"), Ok(TlsVersion::Tls13));
        assert_eq!(TlsVersion::parse("1.3"), Ok(TlsVersion::Tls13));
        assert!(TlsVersion::parse("TLSv1.0").is_err());
    }

    #[test]
    fn ciphers_are_chosen_by_name_and_unknown_ones_are_refused() {
        let p = provider(&["TLS_AES_128_GCM_SHA256".into()]).expect("known");
        assert_eq!(p.cipher_suites.len(), 1);
        assert_eq!(
            versions(&p, TlsVersion::Tls12),
            vec![&rustls::version::TLS13]
        );
        let p = provider(&["TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256".into()]).expect("known");
        assert!(versions(&p, TlsVersion::Tls13).is_empty());
        let err = provider(&["TLS_RSA_WITH_RC4_128_MD5".into()]).expect_err("unknown");
        assert!(
            err.to_string().contains("TLS13_AES_128_GCM_SHA256"),
            "{err}"
        );
    }

    /// A CA and a certificate naming `names`, written as the default files into `dir`.
    fn site(dir: &Path, names: &[&str]) -> TlsConfig {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("params");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().expect("key")).expect("ca");
        let mut params =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
                .expect("params");
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &ca).expect("sign");
        let settings = TlsConfig {
            ca_file: dir.join(DEFAULT_CA_FILE),
            cert_file: dir.join(DEFAULT_CERT_FILE),
            key_file: dir.join(DEFAULT_KEY_FILE),
            ..TlsConfig::defaults()
        };
        std::fs::write(&settings.ca_file, ca.pem()).expect("write");
        std::fs::write(&settings.cert_file, cert.pem()).expect("write");
        std::fs::write(&settings.key_file, key.serialize_pem()).expect("write");
        settings
    }

    #[test]
    fn a_certificate_must_name_the_cluster_it_serves() {
        let dir = tempfile::tempdir().expect("tempdir");
        let settings = site(dir.path(), &["site-a", "a1.site-a"]);
        let tls = ExchangeTls::load(settings.clone(), "site-a").expect("names site-a");
        assert_eq!(tls.names(), ["site-a", "a1.site-a"]);
        let cert = &read_certs(&settings.cert_file).expect("cert")[0];
        assert_eq!(check_names(cert, "site-a"), Ok(()));
        assert_eq!(
            check_names(cert, "site-b"),
            Err(vec!["site-a".to_owned(), "a1.site-a".to_owned()])
        );
        match ExchangeTls::load(settings.clone(), "site-b") {
            Err(Error::NotForCluster { cluster, names, .. }) => {
                assert_eq!(cluster, "site-b");
                assert_eq!(names, ["site-a", "a1.site-a"]);
            }
            other => panic!("expected NotForCluster, got {other:?}"),
        }
        assert!(matches!(
            ExchangeTls::load(settings, "not a dns name!"),
            Err(Error::ClusterName(_))
        ));
    }

    #[test]
    fn missing_or_junk_files_name_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let settings = site(dir.path(), &["site-a"]);
        std::fs::write(&settings.key_file, "junk").expect("write");
        let err = ExchangeTls::load(settings.clone(), "site-a").expect_err("junk key");
        assert!(err.to_string().contains("server_key.pem"), "{err}");
        std::fs::remove_file(&settings.ca_file).expect("rm");
        let err = ExchangeTls::load(settings, "site-a").expect_err("no ca");
        assert!(err.to_string().contains("trust.cer"), "{err}");
    }

    #[test]
    fn the_passphrase_never_shows() {
        let s = TlsConfig {
            passphrase: Some(Secret::new("hunter2".into())),
            ..TlsConfig::defaults()
        };
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
