//! The exchange's connections: plain TCP, or mutual TLS with [`crate::tls::ExchangeTls`].
//!
//! Server side, [`incoming`] accepts TCP connections, runs the TLS handshake (bounded in time
//! and in number at once) and hands tonic each connection with a [`PeerIdentity`]: the
//! caller's address and the DNS names of its verified client certificate, which the handlers
//! find in the request's extensions and compare with the cluster the caller claims.
//!
//! Client side, [`channel`] builds a lazily connected tonic channel whose connections are made
//! by a [`TlsConnector`]: TCP, then TLS with the peer's cluster name as the server name, so
//! only a certificate naming that cluster (signed by the CA) completes the handshake. A TLS
//! syncer never falls back to plaintext.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tonic::transport::server::Connected;
use tonic::transport::{Channel, Endpoint, Uri};

pub use crate::listener::LogLimit;
use crate::listener::{AcceptConfig, Accepted, Activity, ServerConfigSource, Stream};
use crate::tls::{dns_names, ExchangeTls};

/// Most exchange connections open at once, the default of [`incoming`]'s limit
/// (`--rpc-max-connections`; a few per peer leader and verifying member are needed); further
/// connections wait in the kernel's backlog until one closes, with a rate-limited warning.
pub const MAX_CONNECTIONS: usize = 256;

/// Who is calling, as far as the connection tells: set on every request's extensions.
#[derive(Debug, Clone)]
pub struct PeerIdentity {
    /// The caller's address.
    pub remote: Option<SocketAddr>,
    /// `Some` on a TLS connection: the DNS names of the caller's verified client certificate.
    pub names: Option<Arc<[String]>>,
    /// The connection's requests in flight and its close switch; `None` for a connection not
    /// accepted by [`incoming`].
    pub activity: Option<Arc<Activity>>,
}

impl PeerIdentity {
    /// Whether the caller may speak for `cluster`: always on a plaintext server (no TLS
    /// configured), else only when its certificate names it.
    ///
    /// # Errors
    /// The names the certificate carries, when none is `cluster`.
    pub fn may_speak_for(&self, cluster: &str) -> Result<(), Vec<String>> {
        match &self.names {
            None => Ok(()),
            Some(names) => {
                if names.iter().any(|n| n.eq_ignore_ascii_case(cluster)) {
                    Ok(())
                } else {
                    Err(names.to_vec())
                }
            }
        }
    }
}

/// One accepted exchange connection; it holds one of the [`MAX_CONNECTIONS`] places until
/// it is dropped.
pub struct Conn {
    accepted: Accepted,
    identity: PeerIdentity,
}

impl Connected for Conn {
    type ConnectInfo = PeerIdentity;

    fn connect_info(&self) -> PeerIdentity {
        self.identity.clone()
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().accepted).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().accepted).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().accepted).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().accepted).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().accepted).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.accepted.is_write_vectored()
    }
}

/// Accepts connections on `listener` until `shutdown`, with mutual TLS when `tls` is set, and
/// yields them for tonic's `serve_with_incoming` ([`crate::listener::accept`]: handshakes
/// bounded in time and number; a failed one (plaintext, no client certificate, another CA, a
/// timeout) closes the connection with a rate-limited warning). At most `max_connections`
/// are open at once (see [`MAX_CONNECTIONS`]); one without a request in flight for
/// `idle_timeout`, or without a first request for `first_request_timeout`, is closed.
pub fn incoming(
    listener: TcpListener,
    tls: Option<Arc<ExchangeTls>>,
    max_connections: usize,
    (first_request_timeout, idle_timeout): (std::time::Duration, std::time::Duration),
    shutdown: CancellationToken,
) -> impl tokio_stream::Stream<Item = io::Result<Conn>> {
    let config = AcceptConfig {
        what: "exchange",
        max_connections: Some(max_connections),
        tls: tls.map(|tls| -> ServerConfigSource { Arc::new(move || tls.server_config()) }),
        idle_timeout: Some(idle_timeout),
        first_request_timeout: Some(first_request_timeout),
        head_timeout: None,
    };
    let accepted = crate::listener::accept(listener, config, shutdown);
    tokio_stream::StreamExt::map(
        tokio_stream::wrappers::ReceiverStream::new(accepted),
        |accepted| {
            let names = match &accepted.stream {
                Stream::Plain(_) => None,
                Stream::Tls(_) => Some(
                    accepted
                        .stream
                        .peer_certificates()
                        .and_then(|certs| certs.first())
                        .map(dns_names)
                        .unwrap_or_default()
                        .into(),
                ),
            };
            let identity = PeerIdentity {
                remote: Some(accepted.remote),
                names,
                activity: Some(accepted.activity.clone()),
            };
            Ok(Conn { accepted, identity })
        },
    )
}

/// Makes client connections to one peer cluster's member: TCP, then TLS naming `cluster`.
#[derive(Debug, Clone)]
pub struct TlsConnector {
    tls: Arc<ExchangeTls>,
    server_name: ServerName<'static>,
}

impl tower::Service<Uri> for TlsConnector {
    type Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let config = self.tls.client_config();
        let server_name = self.server_name.clone();
        Box::pin(async move {
            let authority = uri
                .authority()
                .map(|a| a.as_str().to_owned())
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no address"))?;
            let tcp = TcpStream::connect(authority).await?;
            let _ = tcp.set_nodelay(true);
            let stream = tokio_rustls::TlsConnector::from(config)
                .connect(server_name, tcp)
                .await?;
            Ok(TokioIo::new(stream))
        })
    }
}

/// A lazily connected channel to the member of `cluster` serving the exchange at `addr`:
/// mutual TLS naming `cluster` when `tls` is set, else plaintext.
///
/// # Errors
/// A message when `cluster` cannot be a TLS server name or `addr` a URI.
pub fn channel(
    endpoint: impl FnOnce(Endpoint) -> Endpoint,
    addr: SocketAddr,
    cluster: &str,
    tls: Option<&Arc<ExchangeTls>>,
) -> Result<Channel, String> {
    let base = Endpoint::from_shared(format!("http://{addr}")).map_err(|e| e.to_string())?;
    let endpoint = endpoint(base);
    match tls {
        None => Ok(endpoint.connect_lazy()),
        Some(tls) => {
            let server_name = ServerName::try_from(cluster.to_owned())
                .map_err(|_| format!("cluster name {cluster:?} is not a DNS name"))?;
            Ok(endpoint.connect_with_connector_lazy(TlsConnector {
                tls: tls.clone(),
                server_name,
            }))
        }
    }
}
