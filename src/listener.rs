//! Accepting connections under limits, for the exchange ([`crate::exchange::transport`]) and
//! the built-in core over HTTPS ([`crate::servicecenter::tls`]).
//!
//! [`accept`] runs one task that takes TCP connections (TCP_NODELAY set; an accept error such
//! as running out of file descriptors backs off from 5 ms to 1 s instead of spinning, with a
//! rate-limited warning), holds at most `max_connections` open when asked to, and, with a
//! TLS configuration, runs the handshakes beside it: at most [`MAX_HANDSHAKES`] at once, each
//! within [`HANDSHAKE_TIMEOUT`], a refused one logged at WARN at most once per client address
//! and [`WARN_EVERY`]. What completes is handed on as an [`Accepted`] connection.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::errors::error_chain;

/// Longest time a TLS handshake may take before the connection is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Most TLS handshakes in progress at once; further connections wait to be accepted.
pub const MAX_HANDSHAKES: usize = 128;

/// Accepted connections queued for the server that takes them.
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

/// The current TLS server configuration, asked for at each handshake (so a reloaded
/// certificate serves the next connection).
pub type ServerConfigSource = Arc<dyn Fn() -> Arc<ServerConfig> + Send + Sync>;

/// How [`accept`] accepts.
#[derive(Clone)]
pub struct AcceptConfig {
    /// Who accepts, for the logs (`exchange`, `service-center core`).
    pub what: &'static str,
    /// Most connections open at once; `None`: no limit here.
    pub max_connections: Option<usize>,
    /// TLS handshakes with this configuration; `None`: plaintext.
    pub tls: Option<ServerConfigSource>,
}

/// A connection's byte stream.
pub enum Stream {
    /// Plaintext.
    Plain(TcpStream),
    /// After a completed TLS handshake.
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl Stream {
    /// The client's certificate chain, after a TLS handshake that asked for one.
    pub fn peer_certificates(&self) -> Option<&[rustls_pki_types::CertificateDer<'static>]> {
        match self {
            Stream::Plain(_) => None,
            Stream::Tls(tls) => tls.get_ref().1.peer_certificates(),
        }
    }
}

/// One accepted connection; it holds its place among the `max_connections` until dropped.
pub struct Accepted {
    /// The byte stream.
    pub stream: Stream,
    /// The client's address.
    pub remote: SocketAddr,
    /// The connection's place, given back when dropped.
    pub place: Option<OwnedSemaphorePermit>,
}

/// Accepts on `listener` until `shutdown` or until the receiver is dropped; see the module
/// doc.
pub fn accept(
    listener: TcpListener,
    config: AcceptConfig,
    shutdown: CancellationToken,
) -> mpsc::Receiver<Accepted> {
    let (tx, rx) = mpsc::channel(ACCEPTED_QUEUE);
    tokio::spawn(accept_loop(listener, config, tx, shutdown));
    rx
}

async fn accept_loop(
    listener: TcpListener,
    config: AcceptConfig,
    tx: mpsc::Sender<Accepted>,
    shutdown: CancellationToken,
) {
    let what = config.what;
    let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    let places = config.max_connections.map(|n| Arc::new(Semaphore::new(n)));
    let refused = Arc::new(LogLimit::default());
    let mut backoff = Duration::from_millis(5);
    loop {
        let place = match &places {
            None => None,
            Some(places) => Some(match places.clone().try_acquire_owned() {
                Ok(place) => place,
                Err(_) => {
                    if refused.ready("connections") {
                        warn!(limit = ?config.max_connections, "{what}: connection limit reached; new connections wait");
                    }
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        place = places.clone().acquire_owned() => match place {
                            Ok(p) => p,
                            Err(_) => return,
                        },
                    }
                }
            }),
        };
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
                    warn!(error = %e, "{what}: accept failed");
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        // Small writes (export events, request/response pairs): without TCP_NODELAY each
        // could wait for the peer's delayed ACK (~40 ms).
        if let Err(e) = tcp.set_nodelay(true) {
            debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let Some(tls) = &config.tls else {
            drop(permit);
            let conn = Accepted {
                stream: Stream::Plain(tcp),
                remote,
                place,
            };
            if tx.send(conn).await.is_err() {
                return;
            }
            continue;
        };
        let (tx, refused, server_config) = (tx.clone(), refused.clone(), tls());
        tokio::spawn(async move {
            let acceptor = tokio_rustls::TlsAcceptor::from(server_config);
            let outcome = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await;
            drop(permit);
            match outcome {
                Ok(Ok(stream)) => {
                    let conn = Accepted {
                        stream: Stream::Tls(Box::new(stream)),
                        remote,
                        place,
                    };
                    let _ = tx.send(conn).await;
                }
                Ok(Err(e)) => {
                    if refused.ready(&remote.ip().to_string()) {
                        warn!(from = %remote, error = %error_chain(&e),
                            "{what}: TLS handshake refused (plaintext, no client certificate, or one not signed by the CA?)");
                    }
                }
                Err(_) => debug!(from = %remote, "{what}: TLS handshake timed out"),
            }
        });
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }
}
