//! The built-in core over HTTPS: the server configuration from `--tls-cert-file`,
//! `--tls-key-file` and `--tls-client-ca-file` (`syncer servicecenter`; `--builtin-tls-*` of
//! `syncer daemon`).
//!
//! With a client CA, every client must present a certificate signed by it (mutual TLS). The
//! daemon's own servicecenter plugin reaches its in-process core with
//! [`CoreTls::loopback_client_config`]: it trusts exactly the certificate the core serves
//! (whatever names it carries) and, when client certificates are required, presents that
//! same certificate, which the core accepts as its own (only a holder of the core's key can).
//!
//! TLS handshakes run beside the accept loop, at most [`crate::listener::MAX_HANDSHAKES`] at
//! once and each within [`crate::listener::HANDSHAKE_TIMEOUT`]; a refused handshake is logged
//! at WARN, at most once per client address and [`crate::listener::WARN_EVERY`].

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::client::ResolvesClientCert;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;
use rustls::{
    ClientConfig, DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme,
};
use rustls_pki_types::{CertificateDer, UnixTime};
use tokio_util::sync::CancellationToken;

use crate::reload::{FileWatch, Reloaded};
use crate::tls::{read_certs, read_key, read_roots, EndEntityVerifier, Error};

/// The core's TLS settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoreTlsConfig {
    /// PEM file of the core's certificate (chain).
    pub cert_file: PathBuf,
    /// PEM file of its private key (PKCS#8, RSA or EC).
    pub key_file: PathBuf,
    /// PEM file of the CA(s) whose client certificates are accepted; `None`: no client
    /// certificate is asked for.
    pub client_ca_file: Option<PathBuf>,
}

/// One reading of the core's files.
#[derive(Debug)]
struct Material {
    server: Arc<ServerConfig>,
    /// The certificate (chain) and its signing key, as a client certificate for the
    /// daemon's own plugin.
    certified: Arc<CertifiedKey>,
}

/// The core's TLS material: read at start, read again when the files change and on SIGHUP
/// ([`CoreTls::follow`]); new connections use the new certificate, a bad new file is refused
/// and the certificate in use stays.
#[derive(Debug)]
pub struct CoreTls {
    settings: CoreTlsConfig,
    current: Reloaded<Material>,
}

impl CoreTls {
    /// Reads the files of `settings`.
    ///
    /// # Errors
    /// [`Error`] naming the file at fault, or rustls' refusal (a key that does not match the
    /// certificate).
    pub fn load(settings: &CoreTlsConfig) -> Result<Arc<CoreTls>, Error> {
        let material = read_material(settings)?;
        Ok(Arc::new(CoreTls {
            settings: settings.clone(),
            current: Reloaded::new(material),
        }))
    }

    fn current(&self) -> Arc<Material> {
        self.current.get()
    }

    /// Whether clients must present a certificate (a client CA is set).
    pub fn requires_client_certificates(&self) -> bool {
        self.settings.client_ca_file.is_some()
    }

    /// The server configuration for the next accepted connection.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.current().server.clone()
    }

    /// The files watched for a reload.
    pub fn files(&self) -> Vec<PathBuf> {
        let mut files = vec![
            self.settings.cert_file.clone(),
            self.settings.key_file.clone(),
        ];
        files.extend(self.settings.client_ca_file.clone());
        files
    }

    /// Reads the files again; on success new connections use them.
    ///
    /// # Errors
    /// [`Error`]; the material in use stays.
    pub fn reload(&self) -> Result<(), Error> {
        self.current.replace(read_material(&self.settings)?);
        Ok(())
    }

    /// Reloads whenever `watch` fires, until `shutdown`; logs each outcome
    /// ([`crate::reload::follow`]).
    pub async fn follow(self: Arc<Self>, watch: FileWatch, shutdown: CancellationToken) {
        let tls = self.clone();
        crate::reload::follow(
            watch,
            shutdown,
            "service-center core TLS certificate",
            move || {
                tls.reload()
                    .map(|()| tls.settings.cert_file.display().to_string())
            },
        )
        .await;
    }

    /// A client configuration for this process's plugin to reach this core: it trusts
    /// exactly the certificate the core currently serves, and presents it when client
    /// certificates are required (both follow a reload).
    ///
    /// # Errors
    /// rustls' refusal of the configuration.
    pub fn loopback_client_config(self: &Arc<Self>) -> Result<Arc<ClientConfig>, Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(rustls::DEFAULT_VERSIONS)?
            .dangerous()
            // Trusts exactly the certificate the core serves now, for any name.
            .with_custom_certificate_verifier(Arc::new(EndEntityVerifier::new(provider, {
                let core = self.clone();
                move |end_entity| {
                    core.current().certified.cert.first().map(|c| c.as_ref())
                        == Some(end_entity.as_ref())
                }
            })));
        let config = if self.requires_client_certificates() {
            builder.with_client_cert_resolver(Arc::new(OwnCertificate(self.clone())))
        } else {
            builder.with_no_client_auth()
        };
        Ok(Arc::new(config))
    }
}

/// Reads the files of `settings` into a server configuration and a client certified key.
fn read_material(settings: &CoreTlsConfig) -> Result<Material, Error> {
    let chain = read_certs(&settings.cert_file)?;
    let key = read_key(&settings.key_file, None)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let signing = provider
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(Error::Rustls)?;
    let certified = Arc::new(CertifiedKey::new(chain.clone(), signing));
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(rustls::DEFAULT_VERSIONS)?;
    let builder = match &settings.client_ca_file {
        Some(path) => {
            let roots = Arc::new(read_roots(path)?);
            let inner = WebPkiClientVerifier::builder_with_provider(roots, provider)
                .build()
                .map_err(|e| Error::Verifier(e.to_string()))?;
            builder.with_client_cert_verifier(Arc::new(CaOrOwn {
                inner,
                own: chain[0].clone(),
            }))
        }
        None => builder.with_no_client_auth(),
    };
    let mut server = builder.with_single_cert(chain, key)?;
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Material {
        server: Arc::new(server),
        certified,
    })
}

/// The core's current certificate as the loopback client's certificate.
#[derive(Debug)]
struct OwnCertificate(Arc<CoreTls>);

impl ResolvesClientCert for OwnCertificate {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current().certified.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Client certificates signed by the client CA, or the core's own certificate.
#[derive(Debug)]
struct CaOrOwn {
    inner: Arc<dyn ClientCertVerifier>,
    own: CertificateDer<'static>,
}

impl ClientCertVerifier for CaOrOwn {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.own.as_ref() {
            return Ok(ClientCertVerified::assertion());
        }
        self.inner
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
