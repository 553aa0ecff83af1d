//! TLS toward the registry: the rustls client configuration the plugins use for `https://`
//! registry addresses (`--sc-addr`), built from `servicecenter.tls_config` / `--sc-tls-*`
//! ([`RegistryTlsConfig`]), and a start-up probe that names a certificate problem at once.
//!
//! Trust: the CA file when one is given (or service-center's default file exists), else the
//! operating system's trust store read by `rustls-native-certs` (`/etc/ssl/certs` and the
//! like, `SSL_CERT_FILE` / `SSL_CERT_DIR` honoured). A client certificate is presented when a
//! certificate and key are set. `verify_peer: false` (allowed for the registry, as
//! service-center allows it; the daemon logs a WARN at start) still checks the handshake's
//! signatures but accepts any certificate for any name.
//!
//! The building blocks (PEM reading, encrypted keys, cipher suites, versions) are the
//! exchange's, in [`crate::tls`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::WebPkiServerVerifier;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::ServerName;
use syncer_plugin_http::client::chain;
use syncer_plugin_http::endpoint::Endpoint;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::errors::error_chain;
use crate::tls::{provider, read_certs, read_key, read_roots, versions, EndEntityVerifier, Error};
use crate::tls::{Secret, TlsVersion};

/// The directory of service-center 1.3.0's default registry-client files:
/// `$SSL_ROOT/servicecenter`, else `./certs/servicecenter`.
pub fn default_dir() -> PathBuf {
    crate::tls::default_dir().join("servicecenter")
}

/// Validated TLS settings of the registry client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryTlsConfig {
    /// PEM file of the CA certificate(s) the registry's certificate must chain to; `None`:
    /// the operating system's trust store.
    pub ca_file: Option<PathBuf>,
    /// PEM file of the client certificate (chain) to present; with `key_file`.
    pub cert_file: Option<PathBuf>,
    /// PEM file of the client certificate's key (PKCS#8, RSA or EC; encrypted PKCS#8 with
    /// `passphrase`).
    pub key_file: Option<PathBuf>,
    /// Passphrase of an encrypted key file.
    pub passphrase: Option<Secret>,
    /// Verify the registry's certificate (chain and name). `false` accepts any certificate.
    pub verify_peer: bool,
    /// Lowest TLS version.
    pub min_version: TlsVersion,
    /// Cipher suites allowed (IANA names); empty: rustls' defaults.
    pub ciphers: Vec<String>,
}

impl Default for RegistryTlsConfig {
    fn default() -> Self {
        RegistryTlsConfig {
            ca_file: None,
            cert_file: None,
            key_file: None,
            passphrase: None,
            verify_peer: true,
            min_version: TlsVersion::Tls12,
            ciphers: Vec::new(),
        }
    }
}

/// Builds the client configuration of `settings` (reads the files now).
///
/// # Errors
/// [`Error`] naming the file or setting at fault; [`Error::Verifier`] when no CA file is
/// given and the system has no usable CA certificate.
pub fn client_config(settings: &RegistryTlsConfig) -> Result<ClientConfig, Error> {
    let provider = Arc::new(provider(&settings.ciphers)?);
    let versions = versions(&provider, settings.min_version);
    if versions.is_empty() {
        return Err(Error::Rustls(rustls::Error::General(format!(
            "no cipher suite of {:?} or later is allowed by ciphers",
            settings.min_version
        ))));
    }
    let builder =
        ClientConfig::builder_with_provider(provider.clone()).with_protocol_versions(&versions)?;
    let builder = if settings.verify_peer {
        let roots = match &settings.ca_file {
            Some(path) => read_roots(path)?,
            None => system_roots()?,
        };
        let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| Error::Verifier(e.to_string()))?;
        builder.with_webpki_verifier(verifier)
    } else {
        builder
            .dangerous()
            // `verify_peer: false`: any certificate, any name; the handshake signatures are still
            // checked (the peer holds the key of the certificate it sent).
            .with_custom_certificate_verifier(Arc::new(EndEntityVerifier::new(provider, |_| true)))
    };
    let config = match (&settings.cert_file, &settings.key_file) {
        (Some(cert), Some(key)) => {
            let chain = read_certs(cert)?;
            let key = read_key(key, settings.passphrase.as_ref())?;
            builder.with_client_auth_cert(chain, key)?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(config)
}

/// The operating system's CA certificates (rustls-native-certs).
fn system_roots() -> Result<RootCertStore, Error> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let errors: Vec<String> = found.errors.iter().map(ToString::to_string).collect();
        return Err(Error::Verifier(format!(
            "no CA file given for the registry (--sc-tls-ca-file) and no usable CA certificate \
             in the system's trust store{}",
            if errors.is_empty() {
                String::new()
            } else {
                format!(": {}", errors.join("; "))
            }
        )));
    }
    Ok(roots)
}

/// How long the start-up probe waits for one registry endpoint.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a TLS probe of a registry endpoint failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The endpoint is not an `https://host[:port]` URL.
    #[error("not an https address")]
    Address,
    /// TCP did not connect (the registry may not be up yet).
    #[error("cannot connect to {addr}: {reason}")]
    Connect {
        /// Host and port.
        addr: String,
        /// The cause, with its sources.
        reason: String,
    },
    /// The TLS handshake failed: a certificate or protocol problem, not a passing outage.
    #[error("{0}")]
    Handshake(String),
}

/// Whether an I/O error carries a TLS error (an alert, a certificate refused), possibly
/// inside another I/O error.
fn is_tls_error(e: &std::io::Error) -> bool {
    let mut inner = e.get_ref();
    for _ in 0..8 {
        let Some(current) = inner else { return false };
        if current.downcast_ref::<rustls::Error>().is_some() {
            return true;
        }
        inner = current
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref);
    }
    false
}

/// Connects to the `https://` endpoint `url` and completes a TLS handshake with `config`, as
/// the plugin's requests will; the error names what failed (unknown CA, name mismatch,
/// expired, a client certificate required).
///
/// # Errors
/// [`ProbeError`].
pub async fn probe(url: &str, config: Arc<ClientConfig>) -> Result<(), ProbeError> {
    let endpoint = Endpoint::parse(url).ok_or(ProbeError::Address)?;
    if !endpoint.scheme.eq_ignore_ascii_case("https") {
        return Err(ProbeError::Address);
    }
    let host = endpoint.host.to_owned();
    let port = endpoint.port_or_default().ok_or(ProbeError::Address)?;
    let name = ServerName::try_from(host.clone()).map_err(|_| ProbeError::Address)?;
    let addr = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let work = async {
        let tcp = tokio::net::TcpStream::connect(&addr)
            .await
            .map_err(|e| ProbeError::Connect {
                addr: addr.clone(),
                reason: error_chain(&e),
            })?;
        let connector = tokio_rustls::TlsConnector::from(config);
        let mut tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| ProbeError::Handshake(chain(&e)))?;
        // With TLS 1.3 the server checks the client's certificate after the client is done:
        // a refusal arrives as an alert on the first read. One small request shows it.
        let request = format!(
            "GET / HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            endpoint.host
        );
        let mut first = [0u8; 1];
        let answered = async {
            tls.write_all(request.as_bytes()).await?;
            tls.flush().await?;
            tls.read(&mut first).await
        }
        .await;
        match answered {
            Ok(_) => Ok(()),
            Err(e) if is_tls_error(&e) => Err(ProbeError::Handshake(chain(&e))),
            Err(e) => Err(ProbeError::Connect {
                addr: addr.clone(),
                reason: error_chain(&e),
            }),
        }
    };
    match tokio::time::timeout(PROBE_TIMEOUT, work).await {
        Ok(outcome) => outcome,
        Err(_) => Err(ProbeError::Connect {
            addr,
            reason: format!("no answer within {} s", PROBE_TIMEOUT.as_secs()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_ca_file_is_an_error_naming_it() {
        let err = client_config(&RegistryTlsConfig {
            ca_file: Some("/nonexistent/trust.cer".into()),
            ..RegistryTlsConfig::default()
        })
        .expect_err("no such file");
        assert!(
            error_chain(&err).contains("/nonexistent/trust.cer"),
            "{err}"
        );
    }

    #[test]
    fn versions_and_ciphers_are_checked_and_verify_peer_false_builds() {
        let err = client_config(&RegistryTlsConfig {
            verify_peer: false,
            min_version: TlsVersion::Tls13,
            ciphers: vec!["TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256".into()],
            ..RegistryTlsConfig::default()
        })
        .expect_err("no TLS 1.3 suite allowed");
        assert!(err.to_string().contains("no cipher suite"), "{err}");
        let config = client_config(&RegistryTlsConfig {
            verify_peer: false,
            ..RegistryTlsConfig::default()
        })
        .expect("any certificate");
        assert!(!config.client_auth_cert_resolver.has_certs());
    }

    #[tokio::test]
    async fn a_probe_of_a_closed_port_is_a_connect_error_not_a_tls_one() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        let config = Arc::new(
            client_config(&RegistryTlsConfig {
                verify_peer: false,
                ..RegistryTlsConfig::default()
            })
            .expect("config"),
        );
        let err = probe(&format!("https://{addr}"), config.clone())
            .await
            .expect_err("closed");
        assert!(matches!(err, ProbeError::Connect { .. }), "{err}");
        let err = probe("http://127.0.0.1:1", config)
            .await
            .expect_err("not https");
        assert!(matches!(err, ProbeError::Address), "{err}");
    }
}
