//! Serving an axum router on [`super::accept`]'s connections, with hyper's limits: the HTTP
//! listener of the built-in core (plain or HTTPS).
//!
//! `axum::serve` has no timer, hence no request-head timeout, and no connection limit: a
//! client sending one header line every few seconds (slowloris) or opening connections and
//! sending nothing held them for ever (issue 13 finding 5). Here each connection is served by
//! hyper-util's `auto` builder (HTTP/1.1 and HTTP/2, upgrades for WebSockets) with the
//! [`HttpLimits`]: at most `max_connections` open (further ones wait in the kernel's backlog),
//! a request head whole within `header_read_timeout` of the connection's start or of the
//! head's first byte (timed by [`super::Activity`]'s watchdog: hyper's own timer starts when
//! a connection starts waiting for a head, so it would also close a kept-alive HTTP/1.1
//! connection that pauses that long, racing a client that reuses it), a connection without a
//! request for `idle_timeout` closed (HTTP/1.1 and HTTP/2), HTTP/2 keepalive pings
//! and at most `max_streams_per_connection` streams.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use tracing::debug;

use super::{AcceptConfig, Activity, ServerConfigSource, TrackRequestsLayer};

/// Default of [`HttpLimits::max_connections`] (`--max-connections`,
/// `--builtin-max-connections`).
pub const MAX_CONNECTIONS: usize = 512;

/// Default of [`HttpLimits::max_body_bytes`] (`--max-body-bytes`,
/// `--builtin-max-body-bytes`): 2 MiB, service-center's `max_body_bytes` default (and
/// axum's).
pub const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;

/// How long open connections may take to finish their requests at shutdown.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Limits of an HTTP listener against slow, idle or greedy clients (DESIGN.md decision 11).
#[derive(Debug, Clone)]
pub struct HttpLimits {
    /// Connections open at once; further ones wait in the kernel's backlog until one closes,
    /// with a rate-limited warning.
    pub max_connections: usize,
    /// A request head (request line and headers) must be whole within this long of the
    /// connection's start (its first request) or of the head's first byte (later ones), else
    /// the connection is closed: slowloris, and connections that send nothing.
    pub header_read_timeout: Duration,
    /// A connection with no request in flight (and, on HTTP/1.1, no request head arriving)
    /// for this long is closed. Kept-alive HTTP/1.1
    /// connections are not closed sooner, so a client that reuses one after a pause does not
    /// race the server's close. An upgraded connection (a WebSocket) is not timed here.
    pub idle_timeout: Duration,
    /// HTTP/2 pings every this long; one unanswered within `keepalive_timeout` closes the
    /// connection.
    pub keepalive_interval: Duration,
    /// See `keepalive_interval`.
    pub keepalive_timeout: Duration,
    /// HTTP/2 streams (requests) at once on one connection.
    pub max_streams_per_connection: u32,
    /// Largest HTTP/2 header list, in bytes (HTTP/1.1: hyper's 100 headers and 400 KiB
    /// buffer).
    pub max_header_list_bytes: u32,
    /// Largest request body a handler reads, in bytes; a larger one is answered 413
    /// (`length limit exceeded`) before it is buffered. Applied by the server's router
    /// (the built-in core's [`serve_with`](crate::servicecenter::serve_with)).
    pub max_body_bytes: usize,
}

impl Default for HttpLimits {
    /// 512 connections, request heads within 10 s, idle connections closed after 60 s,
    /// HTTP/2 pings every 20 s answered within 10 s, 128 streams per connection, 16 KiB of
    /// HTTP/2 headers, request bodies up to [`MAX_BODY_BYTES`].
    fn default() -> Self {
        HttpLimits {
            max_connections: MAX_CONNECTIONS,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            keepalive_interval: Duration::from_secs(20),
            keepalive_timeout: Duration::from_secs(10),
            max_streams_per_connection: 128,
            max_header_list_bytes: 16 * 1024,
            max_body_bytes: MAX_BODY_BYTES,
        }
    }
}

/// Serves `router` on `listener` (over TLS with `tls`) within `limits` until `shutdown`, then
/// lets open connections finish their requests for up to [`SHUTDOWN_GRACE`]. `what` names the
/// listener in logs. Each request carries `axum::extract::ConnectInfo<SocketAddr>`.
pub async fn serve(
    listener: TcpListener,
    what: &'static str,
    tls: Option<ServerConfigSource>,
    router: axum::Router,
    limits: HttpLimits,
    shutdown: CancellationToken,
) {
    let config = AcceptConfig {
        what,
        max_connections: Some(limits.max_connections),
        tls,
        idle_timeout: Some(limits.idle_timeout),
        first_request_timeout: Some(limits.header_read_timeout),
        head_timeout: Some(limits.header_read_timeout),
    };
    let stop_accepting = shutdown.child_token();
    let mut accepted = super::accept(listener, config, stop_accepting.clone());
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // hyper's timer runs from the end of a response to the end of the next head, so it
        // would close a kept-alive connection idle for 10 s, while a client that reuses it
        // then gets a broken request (reqwest: `IncompleteMessage`). It bounds the idle wait
        // only; the listener times the head itself from its first byte (`head_timeout`).
        .header_read_timeout(limits.idle_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(limits.keepalive_interval)
        .keep_alive_timeout(limits.keepalive_timeout)
        .max_concurrent_streams(limits.max_streams_per_connection)
        .max_header_list_size(limits.max_header_list_bytes)
        // WebSockets over HTTP/2 (RFC 8441), as axum::serve.
        .enable_connect_protocol();
    let graceful = GracefulShutdown::new();
    loop {
        let conn = tokio::select! {
            () = shutdown.cancelled() => break,
            conn = accepted.recv() => match conn {
                Some(conn) => conn,
                None => break,
            },
        };
        let remote = conn.remote;
        let service = service(router.clone(), remote, conn.activity.clone());
        let served = builder
            .serve_connection_with_upgrades(TokioIo::new(conn), service)
            .into_owned();
        let served = graceful.watch(served);
        tokio::spawn(async move {
            if let Err(e) = served.await {
                debug!(from = %remote, error = %e, "{what}: connection ended");
            }
        });
    }
    stop_accepting.cancel();
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        debug!("{what}: connections still open after the shutdown grace period");
    }
}

/// `router` for one connection from `remote`: each request carries its address and counts
/// as in flight on `activity`.
fn service(
    router: axum::Router,
    remote: SocketAddr,
    activity: Arc<Activity>,
) -> TowerToHyperService<
    impl tower::Service<
            axum::http::Request<hyper::body::Incoming>,
            Response = axum::http::Response<super::Tracked<axum::body::Body>>,
            Error = std::convert::Infallible,
            Future: Send,
        > + Clone
        + Send,
> {
    let tracked = tower::Layer::layer(&TrackRequestsLayer::connection(activity), router);
    TowerToHyperService::new(tracked.map_request(
        move |mut request: axum::http::Request<hyper::body::Incoming>| {
            request
                .extensions_mut()
                .insert(axum::extract::ConnectInfo(remote));
            request.map(axum::body::Body::new)
        },
    ))
}
