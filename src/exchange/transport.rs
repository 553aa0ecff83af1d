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

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tonic::transport::server::Connected;
use tonic::transport::{Channel, Endpoint, Uri};
use tracing::{debug, warn};

use crate::tls::{dns_names, error_chain, ExchangeTls};

/// Longest time a TLS handshake may take before the connection is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Most TLS handshakes in progress at once; further connections wait to be accepted.
pub const MAX_HANDSHAKES: usize = 128;

/// Most exchange connections open at once, the default of [`incoming`]'s limit (a few per
/// peer leader and verifying member are needed); further connections wait in the kernel's
/// backlog until one closes, with a rate-limited warning.
pub const MAX_CONNECTIONS: usize = 512;

/// Accepted connections queued for the gRPC server.
const ACCEPTED_QUEUE: usize = 64;

/// Shortest time between two warnings of one kind (per source or claimed cluster).
pub const WARN_EVERY: Duration = Duration::from_secs(10);

/// Most keys a [`LogLimit`] remembers; when full it forgets them all (a burst of new keys
/// then logs once each again).
const LOG_LIMIT_KEYS: usize = 1024;

/// A rate limit for warnings, per key (a peer address, a claimed cluster): at most one per
/// [`WARN_EVERY`] and key.
#[derive(Debug, Default)]
pub struct LogLimit {
    last: Mutex<HashMap<String, Instant>>,
}

impl LogLimit {
    /// Whether to log for `key` now.
    pub fn ready(&self, key: &str) -> bool {
        let mut last = self
            .last
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = Instant::now();
        if let Some(at) = last.get(key) {
            if now.duration_since(*at) < WARN_EVERY {
                return false;
            }
        }
        if last.len() >= LOG_LIMIT_KEYS {
            last.clear();
        }
        last.insert(key.to_owned(), now);
        true
    }
}

/// Who is calling, as far as the connection tells: set on every request's extensions.
#[derive(Debug, Clone)]
pub struct PeerIdentity {
    /// The caller's address.
    pub remote: Option<SocketAddr>,
    /// `Some` on a TLS connection: the DNS names of the caller's verified client certificate.
    pub names: Option<Arc<[String]>>,
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
    io: Io,
    identity: PeerIdentity,
    _place: OwnedSemaphorePermit,
}

/// The byte stream of a [`Conn`].
enum Io {
    /// Plaintext (no TLS configured).
    Plain(TcpStream),
    /// After a completed mutual TLS handshake.
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
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
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }
}

/// Accepts connections on `listener` until `shutdown`, with mutual TLS when `tls` is set, and
/// yields them for tonic's `serve_with_incoming`. Handshakes that fail (plaintext, no client
/// certificate, another CA, a timeout) close the connection with a rate-limited warning.
///
/// At most `max_connections` connections are open at once (see [`MAX_CONNECTIONS`]).
pub fn incoming(
    listener: TcpListener,
    tls: Option<Arc<ExchangeTls>>,
    max_connections: usize,
    shutdown: CancellationToken,
) -> tokio_stream::wrappers::ReceiverStream<io::Result<Conn>> {
    let (tx, rx) = mpsc::channel(ACCEPTED_QUEUE);
    tokio::spawn(async move {
        let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
        let places = Arc::new(Semaphore::new(max_connections));
        let refused = Arc::new(LogLimit::default());
        let mut accept_backoff = Duration::from_millis(5);
        loop {
            let place = match places.clone().try_acquire_owned() {
                Ok(place) => place,
                Err(_) => {
                    if refused.ready("connections") {
                        warn!(
                            limit = max_connections,
                            "exchange: connection limit reached; new connections wait"
                        );
                    }
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        place = places.clone().acquire_owned() => match place {
                            Ok(p) => p,
                            Err(_) => return,
                        },
                    }
                }
            };
            let permit = tokio::select! {
                () = shutdown.cancelled() => return,
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
                    accept_backoff = Duration::from_millis(5);
                    conn
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    if refused.ready("accept") {
                        warn!(error = %e, "exchange: accept failed");
                    }
                    tokio::time::sleep(accept_backoff).await;
                    accept_backoff = (accept_backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            };
            // Export events are small writes on a long-lived stream: without TCP_NODELAY
            // each could wait for the peer's delayed ACK (~40 ms).
            let _ = tcp.set_nodelay(true);
            let Some(tls) = tls.clone() else {
                drop(permit);
                let conn = Conn {
                    io: Io::Plain(tcp),
                    identity: PeerIdentity {
                        remote: Some(remote),
                        names: None,
                    },
                    _place: place,
                };
                if tx.send(Ok(conn)).await.is_err() {
                    return;
                }
                continue;
            };
            let (tx, refused) = (tx.clone(), refused.clone());
            tokio::spawn(async move {
                let acceptor = tokio_rustls::TlsAcceptor::from(tls.server_config());
                let outcome = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await;
                drop(permit);
                match outcome {
                    Ok(Ok(stream)) => {
                        let names: Vec<String> = stream
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(|certs| certs.first())
                            .map(dns_names)
                            .unwrap_or_default();
                        let identity = PeerIdentity {
                            remote: Some(remote),
                            names: Some(names.into()),
                        };
                        let conn = Conn {
                            io: Io::Tls(Box::new(stream)),
                            identity,
                            _place: place,
                        };
                        let _ = tx.send(Ok(conn)).await;
                    }
                    Ok(Err(e)) => {
                        if refused.ready(&remote.ip().to_string()) {
                            warn!(from = %remote, error = %error_chain(&e),
                                "exchange: TLS handshake refused (plaintext, no client certificate, or one not signed by the CA?)");
                        }
                    }
                    Err(_) => {
                        debug!(from = %remote, "exchange: TLS handshake timed out");
                    }
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
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
