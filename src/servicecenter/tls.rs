//! The built-in core over HTTPS: the server configuration from `--tls-cert-file`,
//! `--tls-key-file` and `--tls-client-ca-file` (`syncer servicecenter`; `--builtin-tls-*` of
//! `syncer daemon`), and [`TlsListener`], the accept loop that [`super::serve`] hands to axum.
//!
//! With a client CA, every client must present a certificate signed by it (mutual TLS). The
//! daemon's own servicecenter plugin reaches its in-process core with
//! [`CoreTls::loopback_client_config`]: it trusts exactly the certificate the core serves
//! (whatever names it carries) and, when client certificates are required, presents that
//! same certificate, which the core accepts as its own (only a holder of the core's key can).
//!
//! TLS handshakes run beside the accept loop, at most [`MAX_HANDSHAKES`] at once and each
//! within [`HANDSHAKE_TIMEOUT`]; a refused handshake is logged at WARN, at most once per
//! client address and [`crate::exchange::transport::WARN_EVERY`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    ClientConfig, DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::exchange::transport::LogLimit;
use crate::tls::{error_chain, read_certs, read_key, read_roots, Error};

/// Longest time a TLS handshake may take before the connection is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Most TLS handshakes in progress at once; further connections wait to be accepted.
pub const MAX_HANDSHAKES: usize = 128;

/// Connections whose handshake completed, waiting for axum to take them.
const ACCEPTED_QUEUE: usize = 64;

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

/// The core's TLS material, read once.
#[derive(Debug)]
pub struct CoreTls {
    server: Arc<ServerConfig>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    client_auth: bool,
}

impl CoreTls {
    /// Reads the files of `settings`.
    ///
    /// # Errors
    /// [`Error`] naming the file at fault, or rustls' refusal (a key that does not match the
    /// certificate).
    pub fn load(settings: &CoreTlsConfig) -> Result<Arc<CoreTls>, Error> {
        let chain = read_certs(&settings.cert_file)?;
        let key = read_key(&settings.key_file, None)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
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
        let mut server = builder.with_single_cert(chain.clone(), key.clone_key())?;
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(CoreTls {
            server: Arc::new(server),
            chain,
            key,
            client_auth: settings.client_ca_file.is_some(),
        }))
    }

    /// Whether clients must present a certificate (a client CA is set).
    pub fn requires_client_certificates(&self) -> bool {
        self.client_auth
    }

    /// The server configuration.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.server.clone()
    }

    /// A client configuration for this process's plugin to reach this core: it trusts
    /// exactly this core's certificate, and presents it when client certificates are required.
    ///
    /// # Errors
    /// rustls' refusal of the certificate and key as a client certificate.
    pub fn loopback_client_config(&self) -> Result<Arc<ClientConfig>, Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(rustls::DEFAULT_VERSIONS)?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Pinned {
                own: self.chain[0].clone(),
                provider,
            }));
        let config = if self.client_auth {
            builder.with_client_auth_cert(self.chain.clone(), self.key.clone_key())?
        } else {
            builder.with_no_client_auth()
        };
        Ok(Arc::new(config))
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

/// Trusts exactly one server certificate (the in-process core's), for any name.
#[derive(Debug)]
struct Pinned {
    own: CertificateDer<'static>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.own.as_ref() {
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

/// A listener yielding connections whose TLS handshake completed, for `axum::serve`.
///
/// The accept loop runs in its own task until `shutdown` (or until this listener is dropped).
#[derive(Debug)]
pub struct TlsListener {
    accepted: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Starts accepting on `listener` with `tls`.
    ///
    /// # Errors
    /// The listener's local address cannot be read.
    pub fn new(
        listener: TcpListener,
        tls: Arc<CoreTls>,
        shutdown: CancellationToken,
    ) -> std::io::Result<TlsListener> {
        let local = listener.local_addr()?;
        let (tx, rx) = mpsc::channel(ACCEPTED_QUEUE);
        tokio::spawn(accept_loop(listener, tls, tx, shutdown));
        Ok(TlsListener {
            accepted: rx,
            local,
        })
    }
}

async fn accept_loop(
    listener: TcpListener,
    tls: Arc<CoreTls>,
    tx: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
    shutdown: CancellationToken,
) {
    let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    let refused = Arc::new(LogLimit::default());
    let mut backoff = Duration::from_millis(5);
    loop {
        let permit = tokio::select! {
            () = shutdown.cancelled() => return,
            () = tx.closed() => return,
            permit = handshakes.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let accepted = tokio::select! {
            () = shutdown.cancelled() => return,
            () = tx.closed() => return,
            accepted = listener.accept() => accepted,
        };
        let (tcp, remote) = match accepted {
            Ok(conn) => {
                backoff = Duration::from_millis(5);
                conn
            }
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                if refused.ready("accept") {
                    warn!(error = %e, "service-center core: accept failed");
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        // Small request/response pairs: Nagle's algorithm would add delayed-ACK stalls.
        if let Err(e) = tcp.set_nodelay(true) {
            debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let (tx, refused, config) = (tx.clone(), refused.clone(), tls.server_config());
        tokio::spawn(async move {
            let acceptor = tokio_rustls::TlsAcceptor::from(config);
            let outcome = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await;
            drop(permit);
            match outcome {
                Ok(Ok(stream)) => {
                    let _ = tx.send((stream, remote)).await;
                }
                Ok(Err(e)) => {
                    if refused.ready(&remote.ip().to_string()) {
                        warn!(from = %remote, error = %error_chain(&e),
                            "service-center core: TLS handshake refused (plaintext, no client certificate, or one not signed by the client CA?)");
                    }
                }
                Err(_) => debug!(from = %remote, "service-center core: TLS handshake timed out"),
            }
        });
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.accepted.recv().await {
            Some(conn) => conn,
            // The accept loop ended (shutdown): axum's graceful shutdown stops asking.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
