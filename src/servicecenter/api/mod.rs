//! The HTTP layer of the core: service-center v4 under `/v4` ([`v4`], [`govern`], [`watch`],
//! [`changelog`], [`rbac`]) and Eureka v2 under `/eureka` and `/eureka/v2` ([`eureka`]). A
//! handler extracts ([`extract`]), checks the shape, calls the registry under
//! [`Core::lock`](super::core::Core) and renders; it holds no state of its own. A write's
//! 2xx leaves only once its change is committed to the store ([`commit`]).

pub mod body;
pub mod changelog;
pub mod commit;
pub mod eureka;
pub mod extract;
pub mod govern;
pub mod metrics;
pub mod rbac;
pub mod status;
pub mod v4;
pub mod watch;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::core::Core;
use super::tls;
pub use crate::listener::http::HttpLimits;
use crate::listener::ServerConfigSource;

/// The HTTP API: SC v4 under `/v4` and Eureka v2 under `/eureka` and `/eureka/v2`, the
/// metrics at `/metrics` ([`metrics`]) and the status page at `/` ([`status`]), reading
/// request bodies up to [`MAX_BODY_BYTES`](crate::listener::http::MAX_BODY_BYTES) (413
/// beyond); [`router_with`] sets another limit.
pub fn router(core: Core) -> axum::Router {
    router_with(core, crate::listener::http::MAX_BODY_BYTES)
}

/// [`router`], reading request bodies up to `max_body_bytes` (413 beyond).
///
/// With RBAC on ([`Core::enable_rbac`]) the RBAC routes are added and every request passes
/// [`rbac::guard`]. Every write's 2xx waits for its commit (`commit::CommitLayer`). Every
/// request is counted and timed for `/metrics` (`metrics::MeasureLayer`, the outermost
/// layer: the time includes the guard and the commit wait).
///
/// The layers are one stack, applied once: axum wraps every route in each layer given to
/// `Router::layer` separately, each wrapping a boxed service that a request clones and
/// whose future it boxes, so one stack instead of three or four saves a heartbeat about a
/// microsecond (`cargo bench --bench servicecenter`).
pub fn router_with(core: Core, max_body_bytes: usize) -> axum::Router {
    let routes = v4::routes()
        .merge(watch::routes())
        .merge(changelog::routes())
        .merge(govern::routes())
        .route("/metrics", axum::routing::get(metrics::scrape))
        .route("/", axum::routing::get(status::page))
        .with_state(core.clone())
        .merge(eureka::router(core.clone()));
    let (routes, guard) = if core.rbac_enabled() {
        (
            routes.merge(rbac::routes(core.clone())),
            Some(axum::middleware::from_fn_with_state(
                core.clone(),
                rbac::guard,
            )),
        )
    } else {
        (routes, None)
    };
    let stack = tower::ServiceBuilder::new()
        .layer(metrics::MeasureLayer::new(&core))
        .layer(commit::CommitLayer::new(core))
        .layer(axum::extract::DefaultBodyLimit::max(max_body_bytes))
        .option_layer(guard);
    routes.layer(stack)
}

/// Serves `router(core)` on `listener` until `shutdown` is cancelled, and runs
/// the lease-expiry task (every second) for as long.
///
/// # Errors
/// The listener's I/O error, if serving fails.
pub async fn serve(
    listener: tokio::net::TcpListener,
    core: Core,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    serve_tls(listener, core, None, shutdown).await
}

/// [`serve`], over HTTPS when `tls` is set, within the default [`HttpLimits`].
///
/// # Errors
/// The listener's I/O error, if serving fails.
pub async fn serve_tls(
    listener: tokio::net::TcpListener,
    core: Core,
    tls: Option<Arc<tls::CoreTls>>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    serve_with(listener, core, tls, HttpLimits::default(), shutdown).await
}

/// [`serve`], over HTTPS when `tls` is set (its certificate re-read when its files change and
/// on SIGHUP), within `limits`: connections, request-head and idle timeouts, HTTP/2
/// keepalive and streams ([`crate::listener::http`]), and request bodies up to
/// `limits.max_body_bytes` (413 beyond). The registry's quotas and size limits are the
/// core's ([`Core::set_limits`]).
///
/// # Errors
/// The listener's I/O error, if serving fails.
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    core: Core,
    tls: Option<Arc<tls::CoreTls>>,
    limits: HttpLimits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    core.metrics().set_instance(addr.to_string());
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(%addr, scheme, client_certificates = tls.as_ref().is_some_and(|t| t.requires_client_certificates()),
        max_connections = limits.max_connections, max_body_bytes = limits.max_body_bytes, header_read_timeout_secs = limits.header_read_timeout.as_secs_f32(),
        idle_timeout_secs = limits.idle_timeout.as_secs_f32(), "service-center core listening");
    // A child token: stopping the expiry task must not cancel the caller's token.
    let stop = shutdown.child_token();
    // The certificate is read again when its files change and on SIGHUP.
    let reload = tokio_util::task::TaskTracker::new();
    if let Some(tls) = &tls {
        let hup = crate::reload::sighup(&reload, stop.clone());
        reload.spawn(tls.clone().follow(
            crate::reload::FileWatch::new(tls.files(), hup),
            stop.clone(),
        ));
    }
    reload.close();
    // The store writer, the etcd watch and lease expiry; stopped after the HTTP server, so
    // the last requests' changes are written too.
    let background_stop = CancellationToken::new();
    let background = tokio::spawn(core.clone().run(background_stop.clone()));
    let tls = tls.map(|tls| -> ServerConfigSource { Arc::new(move || tls.server_config()) });
    let routes = router_with(core, limits.max_body_bytes);
    crate::listener::http::serve(
        listener,
        "service-center core",
        tls,
        routes,
        limits,
        shutdown.clone(),
    )
    .await;
    stop.cancel();
    reload.wait().await;
    background_stop.cancel();
    let _ = background.await;
    tracing::info!(%addr, "service-center core stopped");
    Ok(())
}
