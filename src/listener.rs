//! Accepting connections under limits, for the exchange ([`crate::exchange::transport`]) and
//! the built-in core over HTTPS ([`crate::servicecenter::tls`]).
//!
//! [`accept`] runs one task that takes TCP connections (TCP_NODELAY set; an accept error such
//! as running out of file descriptors backs off from 5 ms to 1 s instead of spinning, with a
//! rate-limited warning), holds at most `max_connections` open when asked to (at the limit,
//! the connection idle the longest, for at least [`EVICT_AFTER`], is closed to make room:
//! see [`accept`]), and, with a
//! TLS configuration, runs the handshakes beside it: at most [`MAX_HANDSHAKES`] at once, each
//! within [`HANDSHAKE_TIMEOUT`], a refused one logged at WARN at most once per client address
//! and [`WARN_EVERY`]. What completes is handed on as an [`Accepted`] connection.
//!
//! Each connection carries an [`Activity`]: the requests in flight on it ([`TrackRequests`]
//! counts them, whatever the protocol) and a token that closes it. With an idle timeout, a
//! connection with no request in flight for that long is closed, and a server may close one
//! itself (the exchange drops a peer that reads nothing). [`http`] serves an axum router on
//! such connections with hyper's timeouts and HTTP/2 limits.

pub mod http;

use std::collections::HashMap;
use std::future::Future;
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
use tokio_util::sync::{CancellationToken, DropGuard, WaitForCancellationFutureOwned};
use tracing::{debug, warn};

use crate::errors::error_chain;

/// Longest time a TLS handshake may take before the connection is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Most TLS handshakes in progress at once; further connections wait to be accepted.
pub const MAX_HANDSHAKES: usize = 128;

/// Accepted connections queued for the server that takes them.
const ACCEPTED_QUEUE: usize = 64;

/// At the connection limit, a connection with no request in flight (idle between requests,
/// or still sending its first request's head) for this long may be closed to make room for
/// a new one.
pub const EVICT_AFTER: Duration = Duration::from_secs(2);

/// After closing a connection to make room, how long to wait for its place before closing
/// another.
pub const EVICT_WAIT: Duration = Duration::from_secs(1);

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
    /// A connection with no request in flight for this long is closed; `None`: never (the
    /// server's own timeouts apply).
    pub idle_timeout: Option<Duration>,
    /// A connection whose first request has not arrived this long after it was handed on is
    /// closed (a client that connects and sends nothing: HTTP/2's preface and hyper's
    /// protocol detection have no timer of their own); `None`: `idle_timeout` applies.
    pub first_request_timeout: Option<Duration>,
    /// HTTP/1.1: a request head whose first byte arrived this long ago and that is still not
    /// whole closes the connection (a slowloris client on a connection it kept alive); the
    /// wait for that first byte is `idle_timeout`. `None`: no such timer (HTTP/2, whose
    /// pings and window updates arrive between requests, never has one).
    pub head_timeout: Option<Duration>,
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
///
/// Read and write it as the byte stream: once its [`Activity`] is closed, every read and
/// write fails (`ConnectionAborted`), which ends the connection in hyper and tonic, and with
/// it every stream and buffer it holds.
pub struct Accepted {
    /// The byte stream.
    pub stream: Stream,
    /// The client's address.
    pub remote: SocketAddr,
    /// The connection's place, given back when dropped.
    pub place: Option<OwnedSemaphorePermit>,
    /// What the connection is doing, and its close switch.
    pub activity: Arc<Activity>,
    /// Wakes a pending read when the activity is closed.
    closed: Pin<Box<WaitForCancellationFutureOwned>>,
    /// Stops the idle watchdog when the connection goes.
    _gone: DropGuard,
    /// Whether reads are noted for a request head timeout ([`Activity::read`]).
    watch_heads: bool,
}

impl Accepted {
    fn new(stream: Stream, remote: SocketAddr, place: Option<OwnedSemaphorePermit>) -> Self {
        let activity = Activity::new();
        Accepted {
            stream,
            remote,
            place,
            closed: Box::pin(activity.close.clone().cancelled_owned()),
            _gone: activity.close.clone().drop_guard(),
            activity,
            watch_heads: false,
        }
    }

    fn aborted() -> io::Error {
        io::Error::new(
            io::ErrorKind::ConnectionAborted,
            "connection closed by the server (idle, or its peer stalled)",
        )
    }
}

/// What one connection is doing: the requests in flight on it, since when none is, and the
/// token that closes it. Shared by the connection's I/O ([`Accepted`]), its requests
/// ([`Activity::request`], through [`TrackRequests`]) and its idle watchdog.
#[derive(Debug)]
pub struct Activity {
    state: Mutex<ActivityState>,
    close: CancellationToken,
}

#[derive(Debug)]
struct ActivityState {
    in_flight: usize,
    /// Whether a request has arrived yet.
    served: bool,
    idle_since: tokio::time::Instant,
    /// Upgraded to another protocol (a WebSocket): no longer timed as idle here.
    upgraded: bool,
    /// What the first bytes read said: `Some(true)` HTTP/1.x, `Some(false)` HTTP/2 (its
    /// preface, `PRI * HTTP/2.0`, or too few bytes to tell); `None` before any.
    http1: Option<bool>,
    /// When the first byte of a request head arrived on an HTTP/1.x connection that has
    /// served a request and has none in flight; `None` while no head is arriving.
    head_since: Option<tokio::time::Instant>,
}

/// How long a connection may wait, for [`Activity::close_when_idle`].
#[derive(Debug, Clone, Copy)]
struct Timeouts {
    /// Until its first request.
    first: Duration,
    /// Between requests.
    idle: Duration,
    /// HTTP/1.x: from a request head's first byte until it is whole.
    head: Option<Duration>,
}

impl Activity {
    fn new() -> Arc<Self> {
        Arc::new(Activity {
            state: Mutex::new(ActivityState {
                in_flight: 0,
                served: false,
                idle_since: tokio::time::Instant::now(),
                upgraded: false,
                http1: None,
                head_since: None,
            }),
            close: CancellationToken::new(),
        })
    }

    /// A detached activity, for a connection that is not one of [`accept`]'s (tests).
    pub fn detached() -> Arc<Self> {
        Activity::new()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ActivityState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Closes the connection now: its next read or write fails.
    pub fn close(&self) {
        self.close.cancel();
    }

    /// Whether the connection was closed (or has gone).
    pub fn is_closed(&self) -> bool {
        self.close.is_cancelled()
    }

    /// Counts one request in flight until the returned guard is dropped.
    pub fn request(self: &Arc<Self>) -> InFlight {
        let mut state = self.lock();
        state.in_flight += 1;
        state.served = true;
        state.head_since = None;
        drop(state);
        InFlight {
            activity: self.clone(),
        }
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> usize {
        self.lock().in_flight
    }

    /// How long the connection has had no request in flight, if it may be closed to make
    /// room: not upgraded, not closed, nothing in flight (a request head still arriving
    /// counts as nothing: hyper hands a request on once its head is whole).
    fn evictable_for(&self) -> Option<Duration> {
        let state = self.lock();
        (!state.upgraded && state.in_flight == 0 && !self.close.is_cancelled())
            .then(|| state.idle_since.elapsed())
    }

    /// Notes `bytes` read from the connection: the protocol from the first ones, and the
    /// start of a request head on an HTTP/1.x connection between requests. False once the
    /// connection is known not to be HTTP/1.x (nothing more to note).
    fn read(&self, bytes: &[u8]) -> bool {
        if bytes.is_empty() {
            return true;
        }
        let mut state = self.lock();
        let http1 = *state.http1.get_or_insert_with(|| {
            let n = bytes.len().min(3);
            bytes[..n] != b"PRI"[..n]
        });
        if http1
            && state.served
            && state.in_flight == 0
            && !state.upgraded
            && state.head_since.is_none()
        {
            // Not a wake-up of the watchdog per request (that cost heartbeats a task switch
            // and a timer each): it looks at least every head timeout while idle.
            state.head_since = Some(tokio::time::Instant::now());
        }
        http1
    }

    /// When the connection is to be closed if nothing changes, `None` when it is upgraded
    /// (no longer timed here).
    fn deadline(&self, t: Timeouts) -> Option<tokio::time::Instant> {
        let state = self.lock();
        if state.upgraded {
            return None;
        }
        if state.in_flight > 0 {
            // Looked at again then (within a head timeout, as when idle: a head that starts
            // after this request is then seen while it is due).
            let again = t.head.map_or(t.idle, |head| head.min(t.idle));
            return Some(tokio::time::Instant::now() + again);
        }
        if !state.served {
            return Some(state.idle_since + t.first);
        }
        let idle = state.idle_since + t.idle;
        Some(match (t.head, state.head_since) {
            (Some(head), Some(since)) => idle.min(since + head),
            // No head arriving yet: look again within a head timeout, so a head that starts
            // meanwhile is seen while it is still due (then its own deadline applies).
            (Some(head), None) => idle.min(tokio::time::Instant::now() + head),
            (None, _) => idle,
        })
    }

    /// Closes the connection once it has had no request in flight for `t.idle` (`t.first`
    /// until its first request), or, on HTTP/1.x, once a request head has been arriving for
    /// `t.head`, unless it is upgraded first; returns when it is closed or gone.
    async fn close_when_idle(self: Arc<Self>, t: Timeouts) {
        loop {
            let Some(wake) = self.deadline(t) else {
                return;
            };
            tokio::select! {
                () = self.close.cancelled() => return,
                () = tokio::time::sleep_until(wake) => {}
            }
            let Some(due) = self.deadline(t) else {
                return;
            };
            if due <= tokio::time::Instant::now() {
                debug!(
                    idle_secs = t.idle.as_secs_f32(),
                    "connection closed: idle, or a request head not whole in time"
                );
                self.close();
                return;
            }
        }
    }
}

/// One request in flight on a connection (see [`Activity::request`]).
#[derive(Debug)]
pub struct InFlight {
    activity: Arc<Activity>,
}

impl InFlight {
    /// The connection was upgraded by this request's response (HTTP 101).
    pub fn upgraded(&self) {
        self.activity.lock().upgraded = true;
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut state = self.activity.lock();
        state.in_flight -= 1;
        if state.in_flight == 0 {
            state.idle_since = tokio::time::Instant::now();
        }
    }
}

/// Finds the [`Activity`] of a request's connection in its extensions.
pub type FindActivity = fn(&axum::http::Extensions) -> Option<Arc<Activity>>;

/// A tower layer counting each request as in flight on its connection ([`Activity`]) from
/// its arrival until its response body is done or dropped; a streaming response (an
/// exchange watch) counts for as long as it streams.
#[derive(Debug, Clone)]
pub struct TrackRequestsLayer {
    source: ActivitySource,
}

/// Where [`TrackRequests`] finds a request's connection.
#[derive(Debug, Clone)]
enum ActivitySource {
    /// The service serves one connection (a service per connection, as hyper's).
    Connection(Arc<Activity>),
    /// In the request's extensions (a service shared by every connection, as tonic's).
    Find(FindActivity),
}

impl TrackRequestsLayer {
    /// Finds each request's connection with `find`.
    pub fn new(find: FindActivity) -> Self {
        TrackRequestsLayer {
            source: ActivitySource::Find(find),
        }
    }

    /// Counts every request on `activity`: for a service made for one connection.
    pub fn connection(activity: Arc<Activity>) -> Self {
        TrackRequestsLayer {
            source: ActivitySource::Connection(activity),
        }
    }
}

impl<S> tower::Layer<S> for TrackRequestsLayer {
    type Service = TrackRequests<S>;

    fn layer(&self, inner: S) -> TrackRequests<S> {
        TrackRequests {
            inner,
            source: self.source.clone(),
        }
    }
}

/// See [`TrackRequestsLayer`].
#[derive(Debug, Clone)]
pub struct TrackRequests<S> {
    inner: S,
    source: ActivitySource,
}

impl<S, B, ResBody> tower::Service<axum::http::Request<B>> for TrackRequests<S>
where
    S: tower::Service<axum::http::Request<B>, Response = axum::http::Response<ResBody>>,
{
    type Response = axum::http::Response<Tracked<ResBody>>;
    type Error = S::Error;
    type Future = TrackedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: axum::http::Request<B>) -> Self::Future {
        let in_flight = match &self.source {
            ActivitySource::Connection(activity) => Some(activity.request()),
            ActivitySource::Find(find) => find(request.extensions()).map(|a| a.request()),
        };
        TrackedFuture {
            response: self.inner.call(request),
            in_flight,
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`TrackRequests`]: the response, its body counted as in flight.
    pub struct TrackedFuture<F> {
        #[pin]
        response: F,
        in_flight: Option<InFlight>,
    }
}

impl<F, ResBody, E> Future for TrackedFuture<F>
where
    F: Future<Output = Result<axum::http::Response<ResBody>, E>>,
{
    type Output = Result<axum::http::Response<Tracked<ResBody>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = match this.response.poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(response) => response?,
        };
        let in_flight = this.in_flight.take();
        if response.status() == axum::http::StatusCode::SWITCHING_PROTOCOLS {
            if let Some(in_flight) = &in_flight {
                in_flight.upgraded();
            }
        }
        Poll::Ready(Ok(response.map(|body| Tracked {
            body,
            _in_flight: in_flight,
        })))
    }
}

/// A response body that keeps its request counted as in flight until it is dropped.
#[derive(Debug)]
pub struct Tracked<B> {
    body: B,
    _in_flight: Option<InFlight>,
}

impl<B> hyper::body::Body for Tracked<B>
where
    B: hyper::body::Body + Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// The open connections of one listener, to choose which to close at the limit.
#[derive(Default)]
struct OpenConnections(Mutex<Vec<std::sync::Weak<Activity>>>);

impl OpenConnections {
    fn add(&self, activity: &Arc<Activity>, max: usize) {
        let mut open = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if open.len() >= max.saturating_mul(2).max(64) {
            open.retain(|a| a.upgrade().is_some_and(|a| !a.is_closed()));
        }
        open.push(Arc::downgrade(activity));
    }

    /// Closes the connection idle the longest, if one was idle for [`EVICT_AFTER`]; returns
    /// how long it was idle.
    fn evict_idlest(&self) -> Option<Duration> {
        let mut open = self.0.lock().unwrap_or_else(|e| e.into_inner());
        open.retain(|a| a.upgrade().is_some_and(|a| !a.is_closed()));
        let (idlest, idle) = open
            .iter()
            .filter_map(|a| {
                let a = a.upgrade()?;
                let idle = a.evictable_for()?;
                Some((a, idle))
            })
            .max_by_key(|(_, idle)| *idle)?;
        if idle < EVICT_AFTER {
            return None;
        }
        idlest.close();
        Some(idle)
    }
}

/// Accepts on `listener` until `shutdown` or until the receiver is dropped; see the module
/// doc.
///
/// At `max_connections`, a new connection waits in the kernel's backlog until a place frees;
/// meanwhile the open connection with no request in flight for the longest time (at least
/// [`EVICT_AFTER`]) is closed to make room, one every [`EVICT_WAIT`] at most. Without that,
/// 2,000 slowloris clients held all 512 places of the built-in core, each until its 10 s
/// head timeout, and a real client connecting during the attack waited 11 s (p50; hostile
/// bench, finding 5). Connections that are serving (a request in flight, a WebSocket, an
/// exchange watch stream) are never closed for room.
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
    let max = config.max_connections.unwrap_or(0);
    let open = Arc::new(OpenConnections::default());
    let refused = Arc::new(LogLimit::default());
    let mut backoff = Duration::from_millis(5);
    loop {
        let place = match &places {
            None => None,
            Some(places) => {
                Some(match places.clone().try_acquire_owned() {
                    Ok(place) => place,
                    Err(_) => {
                        if refused.ready("connections") {
                            warn!(limit = ?config.max_connections, "{what}: connection limit reached; new connections wait, and the connection idle the longest is closed to make room");
                        }
                        loop {
                            let wait = match open.evict_idlest() {
                                Some(idle) => {
                                    debug!(idle_ms = idle.as_millis() as u64, "{what}: closed the connection idle the longest, to make room");
                                    EVICT_WAIT
                                }
                                None => Duration::from_millis(250),
                            };
                            tokio::select! {
                                () = shutdown.cancelled() => return,
                                place = places.clone().acquire_owned() => break match place {
                                    Ok(p) => p,
                                    Err(_) => return,
                                },
                                () = tokio::time::sleep(wait) => {}
                            }
                        }
                    }
                })
            }
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
        let idle = config.idle_timeout.map(|idle| Timeouts {
            first: config.first_request_timeout.unwrap_or(idle),
            idle,
            head: config.head_timeout,
        });
        let Some(tls) = &config.tls else {
            drop(permit);
            let mut conn = Accepted::new(Stream::Plain(tcp), remote, place);
            if places.is_some() {
                open.add(&conn.activity, max);
            }
            watch_idle(&mut conn, idle);
            if tx.send(conn).await.is_err() {
                return;
            }
            continue;
        };
        let (tx, refused, server_config) = (tx.clone(), refused.clone(), tls());
        let (open, limited) = (open.clone(), places.is_some());
        tokio::spawn(async move {
            let acceptor = tokio_rustls::TlsAcceptor::from(server_config);
            let outcome = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await;
            drop(permit);
            match outcome {
                Ok(Ok(stream)) => {
                    let mut conn = Accepted::new(Stream::Tls(Box::new(stream)), remote, place);
                    if limited {
                        open.add(&conn.activity, max);
                    }
                    watch_idle(&mut conn, idle);
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

/// Starts `conn`'s idle watchdog, with its timeouts.
fn watch_idle(conn: &mut Accepted, timeouts: Option<Timeouts>) {
    if let Some(t) = timeouts {
        conn.watch_heads = t.head.is_some();
        conn.activity.lock().idle_since = tokio::time::Instant::now();
        tokio::spawn(conn.activity.clone().close_when_idle(t));
    }
}

impl AsyncRead for Accepted {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // Polled while the connection waits for its peer: the close token wakes it.
        if this.activity.is_closed() || this.closed.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(Accepted::aborted()));
        }
        let before = buf.filled().len();
        let read = Pin::new(&mut this.stream).poll_read(cx, buf);
        if this.watch_heads && matches!(read, Poll::Ready(Ok(()))) {
            this.watch_heads = this.activity.read(&buf.filled()[before..]);
        }
        read
    }
}

impl AsyncWrite for Accepted {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.activity.is_closed() {
            return Poll::Ready(Err(Accepted::aborted()));
        }
        Pin::new(&mut this.stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.activity.is_closed() {
            return Poll::Ready(Err(Accepted::aborted()));
        }
        Pin::new(&mut this.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
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
