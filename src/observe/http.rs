//! The daemon's HTTP listener (`--http-addr`, default `127.0.0.1:30300`).
//!
//! | Path | What |
//! |---|---|
//! | `GET /healthz` | 200 while the process answers |
//! | `GET /readyz` | 200 when the registry answers, its first listing is done and a leader is known; else 503 with the reasons |
//! | `GET /metrics` | Prometheus metrics ([`super::metrics`]) |
//! | `GET /v1/syncer/health` | the peers in the shape of service-center's syncer (`{"peers":[{name,kind,mode,endpoints,status}]}`) |
//! | `GET /v1/syncer/status` | this member, its cluster, leader, members, export, registry, and per peer cluster its state |
//! | `GET /v1/syncer/services?limit=` | per service of the peers: copies expected against present, last change and error |
//! | `GET /v1/syncer/instances?cluster=&service=&limit=` | per instance of the peers: origin ids, local id, lease left |
//! | `GET /v1/syncer/events?after=&limit=` | the last writes, with reasons ([`super::events`]) |
//! | `GET /v1/syncer/stream` | server-sent events: `status` (at most once a second when it changes) and `event` (each write) |
//! | `GET /v1/syncer/config` | the effective settings, secrets hidden, and the last reload's outcome |
//! | `GET /` | the dashboard (static files compiled in; no CDN) |
//!
//! Admin endpoints (see [`Admin`] for who may call them):
//!
//! | Path | What |
//! |---|---|
//! | `POST /v1/syncer/resync?cluster=` | a full reconcile now; with `cluster`, that peer's whole export is fetched again |
//! | `GET /v1/syncer/full-synchronization` | the same (service-center syncer's path) |
//! | `POST /v1/syncer/suspend?copies=keep\|drop` | stops importing: `keep` heartbeats the copies as they are, `drop` removes them |
//! | `POST /v1/syncer/resume` | ends a suspension with a full reconcile |
//! | `GET`, `PUT /v1/syncer/log-level` | the log filter; `PUT` takes the new one as the body (`info,syncer::sync=debug`) |
//!
//! With a token (`--http-token-file`) every request but `/healthz`, `/readyz` and the
//! dashboard's static files must carry it, as `Authorization: Bearer <token>` or the
//! `syncer_token` cookie the dashboard sets; without one the listener stays on loopback
//! (the configuration refuses anything else unless `--insecure`).
//!
//! Served with [`crate::listener::http::serve`]'s limits (connections, head timeout, idle
//! timeout); live streams are capped at [`MAX_STREAMS`] and end at shutdown.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query as QueryString, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::stream::Stream;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch, Semaphore};
use tokio_util::sync::CancellationToken;

use super::status::{
    CopiesWhileSuspended, InstancesReport, Query, ResyncError, ResyncReport, ServicesReport,
    Suspension, SyncStatus,
};
use super::Observer;
use crate::membership::Member;

/// Most live streams (`/v1/syncer/stream`) open at once; more get 503.
pub const MAX_STREAMS: usize = 64;

/// Default and largest `limit` of `/v1/syncer/services` and `/v1/syncer/instances`.
pub const DEFAULT_LIMIT: usize = 1000;
/// See [`DEFAULT_LIMIT`].
pub const MAX_LIMIT: usize = 10_000;

/// How long a question waits for the reconcile loop before 503.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// How long an admin command waits for the reconcile it asked for before 503 (the command
/// still runs; `/v1/syncer/status` shows when it ended).
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

/// Largest body of `PUT /v1/syncer/log-level`, bytes.
pub const MAX_LOG_FILTER_BODY: usize = 4096;

/// Who may call the admin endpoints (resync, suspend, resume, log-level).
///
/// * A request a browser makes (it has an `Origin` or a `Sec-Fetch-*` header) is refused
///   with 403: a web page must not steer a syncer on its visitor's machine (cross-site
///   requests and DNS rebinding against a loopback listener).
/// * With a token (`--admin-token-file`) the request must carry it as
///   `Authorization: Bearer <token>` (401 otherwise); cookies are not read.
/// * Without one, only a loopback listener answers them (403 otherwise), and only with
///   `--http-token-file`'s token as a bearer token when that is set.
#[derive(Debug, Clone, Default)]
pub struct Admin {
    /// `--admin-token-file`'s token.
    pub token: Option<Token>,
    /// Whether the listener is bound to a loopback address.
    pub loopback: bool,
}

/// Shortest time between two `status` messages of a live stream.
pub const STATUS_EVERY: Duration = Duration::from_secs(1);

/// Longest token file accepted, in bytes.
const MAX_TOKEN_BYTES: u64 = 4096;

/// A bearer token, kept as its SHA-256 (never logged, never shown: `Debug` prints `***`).
#[derive(Clone, PartialEq, Eq)]
pub struct Token([u8; 32]);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl Token {
    /// The token in `text` (surrounding whitespace removed).
    ///
    /// # Errors
    /// A message when it is empty.
    pub fn new(text: &str) -> Result<Token, String> {
        let text = text.trim();
        if text.is_empty() {
            return Err("the token is empty".into());
        }
        Ok(Token(Sha256::digest(text.as_bytes()).into()))
    }

    /// Reads the token from `path` (at most 4 KiB, surrounding whitespace removed).
    ///
    /// # Errors
    /// A message when the file cannot be read, is too big or is empty.
    pub fn read(path: &Path) -> Result<Token, String> {
        let size = std::fs::metadata(path)
            .map_err(|e| format!("cannot read it: {e}"))?
            .len();
        if size > MAX_TOKEN_BYTES {
            return Err(format!(
                "{size} bytes; a token file holds at most {MAX_TOKEN_BYTES}"
            ));
        }
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read it: {e}"))?;
        Token::new(&text)
    }

    /// Whether `given` is this token (compared as SHA-256 digests).
    pub fn matches(&self, given: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(given.trim().as_bytes()).into();
        digest == self.0
    }
}

/// The export of this member, as the status shows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ExportSummary {
    /// The exporter's run (a string in JSON: it is above 2^53, which a JavaScript number
    /// cannot hold exactly).
    #[serde(serialize_with = "super::status::as_string")]
    pub epoch: u64,
    /// The export's revision (0 until the registry was first listed).
    pub revision: u64,
    /// Services exported.
    pub services: usize,
    /// Instances exported (copies of other sites' instances are never exported).
    pub instances: usize,
}

/// What the listener shows of this member besides the loop's status.
#[derive(Clone)]
pub struct Site {
    /// `--node`.
    pub node: String,
    /// `--cluster-name`.
    pub cluster: String,
    /// The registry plugin (`servicecenter` or `eureka`).
    pub plugin: &'static str,
    /// The registry's endpoints (credentials removed).
    pub registry: Vec<String>,
    /// The exchange's address.
    pub rpc_addr: SocketAddr,
    /// Alive gossip members, this one included.
    pub members: watch::Receiver<Vec<Member>>,
    /// The export now.
    pub export: Arc<dyn Fn() -> ExportSummary + Send + Sync>,
    /// The effective settings, secrets hidden, with the last reload's outcome (updated by
    /// each reload).
    pub config: watch::Receiver<serde_json::Value>,
}

impl std::fmt::Debug for Site {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Site")
            .field("node", &self.node)
            .field("cluster", &self.cluster)
            .finish_non_exhaustive()
    }
}

struct App {
    observer: Observer,
    site: Site,
    token: Option<Token>,
    admin: Admin,
    streams: Arc<Semaphore>,
    shutdown: CancellationToken,
}

/// The listener's routes.
pub fn router(
    observer: Observer,
    site: Site,
    token: Option<Token>,
    admin: Admin,
    shutdown: CancellationToken,
) -> Router {
    let app = Arc::new(App {
        observer,
        site,
        token,
        admin,
        streams: Arc::new(Semaphore::new(MAX_STREAMS)),
        shutdown,
    });
    let guarded = Router::new()
        .route("/metrics", get(metrics))
        .route("/v1/syncer/health", get(health))
        .route("/v1/syncer/status", get(status))
        .route("/v1/syncer/services", get(services))
        .route("/v1/syncer/instances", get(instances))
        .route("/v1/syncer/events", get(events))
        .route("/v1/syncer/stream", get(stream))
        .route("/v1/syncer/config", get(config))
        .route_layer(middleware::from_fn_with_state(app.clone(), authenticate));
    let admin = Router::new()
        .route("/v1/syncer/resync", post(resync))
        .route("/v1/syncer/full-synchronization", get(full_synchronization))
        .route("/v1/syncer/suspend", post(suspend))
        .route("/v1/syncer/resume", post(resume))
        .route(
            "/v1/syncer/log-level",
            get(log_level)
                .put(set_log_level)
                .layer(axum::extract::DefaultBodyLimit::max(MAX_LOG_FILTER_BODY)),
        )
        .route_layer(middleware::from_fn_with_state(app.clone(), authorize_admin));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/", get(dashboard))
        .route("/dashboard.js", get(dashboard_js))
        .route("/dashboard.css", get(dashboard_css))
        .merge(guarded)
        .merge(admin)
        .fallback(not_found)
        .layer(middleware::map_response(security_headers))
        .with_state(app)
}

/// The dashboard loads only its own script and style and talks only to this listener; no
/// page may frame it, and no response is sniffed as another type.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self' data:; form-action 'none'; frame-ancestors 'none'; \
     base-uri 'none'";

async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// Serves [`router`] on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    observer: Observer,
    site: Site,
    token: Option<Token>,
    admin: Admin,
    shutdown: CancellationToken,
) {
    let router = router(observer, site, token, admin, shutdown.clone());
    crate::listener::http::serve(
        listener,
        "daemon HTTP",
        None,
        router,
        crate::listener::http::HttpLimits {
            max_connections: 64,
            ..Default::default()
        },
        shutdown,
    )
    .await;
}

/// A JSON error: `{"error": message}`.
fn error(status: StatusCode, message: impl Into<String>) -> Response {
    ApiError(status, message.into()).into_response()
}

/// A refusal: its status and message, answered as `{"error": message}`.
#[derive(Debug)]
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

async fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "no such path; see /v1/syncer/status, /metrics, /healthz, /readyz or the dashboard at /",
    )
}

async fn authenticate(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    let Some(token) = &app.token else {
        return next.run(request).await;
    };
    if presented(request.headers()).is_some_and(|given| token.matches(&given)) {
        return next.run(request).await;
    }
    let mut response = error(
        StatusCode::UNAUTHORIZED,
        "this listener needs the token of --http-token-file, as `Authorization: Bearer <token>`",
    );
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

/// The admin endpoints' guard ([`Admin`]).
async fn authorize_admin(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    let headers = request.headers();
    let from_browser = headers.contains_key(header::ORIGIN)
        || headers
            .keys()
            .any(|name| name.as_str().starts_with("sec-fetch-"));
    if from_browser {
        return error(
            StatusCode::FORBIDDEN,
            "admin endpoints do not answer requests made by a web browser (Origin or \
             Sec-Fetch-* header); call them with curl or a script",
        );
    }
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let (token, which) = match (&app.admin.token, &app.token) {
        (Some(admin), _) => (Some(admin), "--admin-token-file"),
        (None, _) if !app.admin.loopback => {
            return error(
                StatusCode::FORBIDDEN,
                "admin endpoints answer beyond loopback only with --admin-token-file set",
            );
        }
        (None, read) => (read.as_ref(), "--http-token-file"),
    };
    if let Some(token) = token {
        if !bearer.is_some_and(|given| token.matches(given)) {
            let mut response = error(
                StatusCode::UNAUTHORIZED,
                format!(
                    "admin endpoints need the token of {which}, as `Authorization: Bearer \
                     <token>`"
                ),
            );
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return response;
        }
    }
    next.run(request).await
}

/// The token a request carries: its bearer token, else its `syncer_token` cookie
/// (percent-decoded).
fn presented(headers: &HeaderMap) -> Option<Cow<'_, str>> {
    if let Some(bearer) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    {
        return Some(Cow::Borrowed(bearer));
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix("syncer_token="))
        .map(|v| {
            // The dashboard percent-encodes the token (a cookie value cannot hold `;`, `,`,
            // space...).
            percent_encoding::percent_decode_str(v)
                .decode_utf8()
                .unwrap_or(Cow::Borrowed(v))
        })
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// Why this member is not ready; empty when it is.
fn not_ready(app: &App, status: &SyncStatus) -> Vec<String> {
    let mut reasons = Vec::new();
    let registry = app.observer.metrics.registry_health();
    if !registry.reachable() {
        reasons.push(match registry.last_error {
            Some(e) => format!("the registry does not answer: {e}"),
            None => "the registry has not answered yet".to_owned(),
        });
    }
    if (app.site.export)().revision == 0 {
        reasons.push("the registry's first full listing is not done".to_owned());
    }
    if status.leader.is_none() {
        reasons.push("no leader of this cluster is known".to_owned());
    }
    reasons
}

async fn readyz(State(app): State<Arc<App>>) -> Response {
    let status = app.observer.status();
    let reasons = not_ready(&app, &status);
    if reasons.is_empty() {
        Json(json!({ "ready": true })).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "ready": false, "reasons": reasons })),
        )
            .into_response()
    }
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    let text = app.observer.metrics.encode();
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// Members of each cluster: node → exchange address.
fn members_by_cluster(members: &[Member]) -> BTreeMap<&str, Vec<&Member>> {
    let mut out: BTreeMap<&str, Vec<&Member>> = BTreeMap::new();
    for m in members {
        out.entry(m.cluster_name.as_str()).or_default().push(m);
    }
    out
}

/// service-center's syncer answers `GET /v1/syncer/health` with its peers and their
/// state (`CONNECTED` or `ABNORMAL`); here the peers are the other clusters.
async fn health(State(app): State<Arc<App>>) -> Json<serde_json::Value> {
    let status = app.observer.status();
    let members = app.site.members.borrow().clone();
    let by_cluster = members_by_cluster(&members);
    let peers: Vec<_> = status
        .peers
        .iter()
        .map(|p| {
            let endpoints: Vec<String> = by_cluster
                .get(p.cluster.as_str())
                .map(|ms| ms.iter().map(|m| m.rpc_addr.to_string()).collect())
                .unwrap_or_default();
            json!({
                "name": p.cluster,
                "kind": "syncer",
                "mode": [if p.state == "pulled" { "pull" } else { "watch" }],
                "endpoints": endpoints,
                "status": if matches!(p.state.as_str(), "following" | "pulled") {
                    "CONNECTED"
                } else {
                    "ABNORMAL"
                },
            })
        })
        .collect();
    Json(json!({ "peers": peers }))
}

fn status_json(app: &App) -> serde_json::Value {
    let status = app.observer.status();
    let members = app.site.members.borrow().clone();
    let reasons = not_ready(app, &status);
    let members: Vec<_> = members
        .iter()
        .map(|m| {
            json!({
                "node": m.node,
                "cluster": m.cluster_name,
                "gossip_addr": m.gossip_addr.to_string(),
                "rpc_addr": m.rpc_addr.to_string(),
                "leader": status.leader.as_deref() == Some(m.node.as_str())
                    && m.cluster_name == app.site.cluster,
            })
        })
        .collect();
    json!({
        "node": app.site.node,
        "cluster": app.site.cluster,
        "version": env!("CARGO_PKG_VERSION"),
        "leader": status.leader,
        "is_leader": status.is_leader,
        "ready": reasons.is_empty(),
        "not_ready": reasons,
        "rpc_addr": app.site.rpc_addr.to_string(),
        "registry": {
            "plugin": app.site.plugin,
            "endpoints": app.site.registry,
            "health": app.observer.metrics.registry_health(),
        },
        "export": (app.site.export)(),
        "members": members,
        "reconciles": status.reconciles,
        "reconciled_at_ms": status.reconciled_at_ms,
        "reconcile_ms": status.reconcile_ms,
        "lease_secs": status.lease_secs,
        "suspended": status.suspended,
        "peers": status.peers,
        "dry_run": status.dry_run,
        "pending": status.pending,
        "last_event": app.observer.events.last_seq(),
        "now_ms": super::events::now_ms(),
    })
}

async fn status(State(app): State<Arc<App>>) -> Json<serde_json::Value> {
    Json(status_json(&app))
}

#[derive(Debug, Deserialize)]
struct ListParams {
    limit: Option<usize>,
    cluster: Option<String>,
    service: Option<String>,
}

fn limit(given: Option<usize>) -> Result<usize, ApiError> {
    match given {
        None => Ok(DEFAULT_LIMIT),
        Some(0) => Err(ApiError(
            StatusCode::BAD_REQUEST,
            "limit must be at least 1".into(),
        )),
        Some(n) if n > MAX_LIMIT => Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!("limit is at most {MAX_LIMIT}"),
        )),
        Some(n) => Ok(n),
    }
}

/// Asks the reconcile loop; 503 when it does not answer within [`QUERY_TIMEOUT`].
async fn ask<T>(app: &App, query: impl FnOnce(oneshot::Sender<T>) -> Query) -> Result<T, ApiError> {
    ask_within(app, QUERY_TIMEOUT, query).await
}

/// [`ask`], waiting up to `wait` for the answer.
async fn ask_within<T>(
    app: &App,
    wait: Duration,
    query: impl FnOnce(oneshot::Sender<T>) -> Query,
) -> Result<T, ApiError> {
    let (tx, rx) = oneshot::channel();
    let busy = || {
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "the reconcile loop did not answer in time (busy applying a change); try again".into(),
        )
    };
    let sent = tokio::time::timeout(QUERY_TIMEOUT, app.observer.queries().send(query(tx))).await;
    if !matches!(sent, Ok(Ok(()))) {
        return Err(busy());
    }
    match tokio::time::timeout(wait, rx).await {
        Ok(Ok(answer)) => Ok(answer),
        _ => Err(busy()),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResyncParams {
    cluster: Option<String>,
}

async fn resync(
    State(app): State<Arc<App>>,
    q: Result<QueryString<ResyncParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let p = params(q)?;
    if p.cluster.as_ref().is_some_and(|c| c.len() > 256) {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "cluster names are at most 256 bytes".into(),
        ));
    }
    do_resync(&app, p.cluster).await
}

/// service-center syncer's `GET /v1/syncer/full-synchronization`: a full reconcile.
async fn full_synchronization(
    State(app): State<Arc<App>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    do_resync(&app, None).await
}

async fn do_resync(
    app: &App,
    cluster: Option<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let report: Result<ResyncReport, ResyncError> = ask_within(app, COMMAND_TIMEOUT, |reply| {
        Query::Resync { cluster, reply }
    })
    .await?;
    match report {
        Ok(report) => Ok(Json(json!({ "resync": report }))),
        Err(e @ ResyncError::UnknownCluster(_)) => {
            Err(ApiError(StatusCode::NOT_FOUND, e.to_string()))
        }
        Err(e @ ResyncError::ListingFailed) => {
            Err(ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SuspendParams {
    copies: Option<CopiesWhileSuspended>,
}

async fn suspend(
    State(app): State<Arc<App>>,
    q: Result<QueryString<SuspendParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let p = params(q)?;
    let copies = p.copies.unwrap_or(CopiesWhileSuspended::Keep);
    let (suspension, removed): (Suspension, usize) = ask_within(&app, COMMAND_TIMEOUT, |reply| {
        Query::Suspend { copies, reply }
    })
    .await?;
    Ok(Json(json!({ "suspended": suspension, "removed": removed })))
}

async fn resume(State(app): State<Arc<App>>) -> Result<Json<serde_json::Value>, ApiError> {
    let (ended, report): (Option<Suspension>, Option<ResyncReport>) =
        ask_within(&app, COMMAND_TIMEOUT, |reply| Query::Resume { reply }).await?;
    Ok(Json(json!({
        "resumed": ended.is_some(),
        "was": ended,
        "resync": report,
    })))
}

async fn log_level() -> Json<serde_json::Value> {
    Json(json!({ "filter": crate::logging::filter() }))
}

/// The new filter is the body: the text itself, or JSON `{"filter": "..."}`.
async fn set_log_level(body: String) -> Result<Json<serde_json::Value>, ApiError> {
    let text = match serde_json::from_str::<serde_json::Value>(&body) {
        Ok(serde_json::Value::Object(o)) => match o.get("filter") {
            Some(serde_json::Value::String(f)) => f.clone(),
            _ => {
                return Err(ApiError(
                    StatusCode::BAD_REQUEST,
                    "a JSON body is {\"filter\": \"info,syncer::sync=debug\"}".into(),
                ))
            }
        },
        _ => body,
    };
    let filter = crate::logging::set_filter(&text)
        .map_err(|reason| ApiError(StatusCode::BAD_REQUEST, reason))?;
    Ok(Json(json!({ "filter": filter })))
}

/// Query strings this listener reads: a bad one is a 400 with the reason.
fn params<T: serde::de::DeserializeOwned>(
    q: Result<QueryString<T>, axum::extract::rejection::QueryRejection>,
) -> Result<T, ApiError> {
    q.map(|QueryString(p)| p)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.body_text()))
}

async fn services(
    State(app): State<Arc<App>>,
    q: Result<QueryString<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<ServicesReport>, ApiError> {
    let p = params(q)?;
    let limit = limit(p.limit)?;
    Ok(Json(
        ask(&app, |reply| Query::Services { limit, reply }).await?,
    ))
}

async fn instances(
    State(app): State<Arc<App>>,
    q: Result<QueryString<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<InstancesReport>, ApiError> {
    let p = params(q)?;
    let limit = limit(p.limit)?;
    Ok(Json(
        ask(&app, |reply| Query::Instances {
            cluster: p.cluster,
            service: p.service,
            limit,
            reply,
        })
        .await?,
    ))
}

#[derive(Debug, Deserialize)]
struct EventParams {
    after: Option<u64>,
    limit: Option<usize>,
}

async fn events(
    State(app): State<Arc<App>>,
    q: Result<QueryString<EventParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let p = match params(q) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let limit = match p.limit {
        None => super::events::EVENTS_KEPT,
        Some(0) => return error(StatusCode::BAD_REQUEST, "limit must be at least 1"),
        Some(n) => n.min(super::events::EVENTS_KEPT),
    };
    let events: Vec<super::events::Event> = app
        .observer
        .events
        .since(p.after.unwrap_or(0), limit)
        .iter()
        .map(|e| (**e).clone())
        .collect();
    Json(json!({ "last": app.observer.events.last_seq(), "events": events })).into_response()
}

async fn config(State(app): State<Arc<App>>) -> Json<serde_json::Value> {
    Json(app.site.config.borrow().clone())
}

/// What a live stream sends next.
enum Outgoing {
    Status,
    Event(Arc<super::events::Event>),
    Lagged(u64),
    End,
}

async fn stream(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    let Ok(permit) = app.streams.clone().try_acquire_owned() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{MAX_STREAMS} live streams are open already; try again later"),
        );
    };
    // A reconnecting EventSource says where it was: replay what it missed that is kept.
    let after = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let live = app.observer.events.follow();
    let backlog = after
        .map(|after| app.observer.events.since(after, super::events::EVENTS_KEPT))
        .unwrap_or_default();
    let status_rx = app.observer.follow_status();
    let state = StreamState {
        app: app.clone(),
        live,
        status_rx,
        backlog: backlog.into(),
        first: true,
        last_status: None,
        _permit: permit,
    };
    Sse::new(live_stream(state))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

struct StreamState {
    app: Arc<App>,
    live: tokio::sync::broadcast::Receiver<Arc<super::events::Event>>,
    status_rx: watch::Receiver<SyncStatus>,
    backlog: std::collections::VecDeque<Arc<super::events::Event>>,
    first: bool,
    last_status: Option<tokio::time::Instant>,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

fn live_stream(
    state: StreamState,
) -> impl Stream<Item = Result<SseEvent, std::convert::Infallible>> {
    futures::stream::unfold(state, |mut s| async move {
        let next = if s.first {
            s.first = false;
            Outgoing::Status
        } else if let Some(event) = s.backlog.pop_front() {
            Outgoing::Event(event)
        } else {
            // Status at most every STATUS_EVERY: wait out the rest before looking again.
            let status_due = async {
                if let Some(at) = s.last_status {
                    tokio::time::sleep_until(at + STATUS_EVERY).await;
                }
                s.status_rx.changed().await
            };
            tokio::select! {
                () = s.app.shutdown.cancelled() => Outgoing::End,
                received = s.live.recv() => match received {
                    Ok(event) => Outgoing::Event(event),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => Outgoing::Lagged(n),
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => Outgoing::End,
                },
                changed = status_due => match changed {
                    Ok(()) => Outgoing::Status,
                    Err(_) => Outgoing::End,
                },
            }
        };
        let message = match next {
            Outgoing::End => return None,
            Outgoing::Status => {
                s.status_rx.borrow_and_update();
                s.last_status = Some(tokio::time::Instant::now());
                SseEvent::default()
                    .event("status")
                    .json_data(status_json(&s.app))
                    .unwrap_or_else(|_| SseEvent::default().event("status"))
            }
            Outgoing::Event(event) => SseEvent::default()
                .event("event")
                .id(event.seq.to_string())
                .json_data(&*event)
                .unwrap_or_else(|_| SseEvent::default().event("event")),
            Outgoing::Lagged(n) => SseEvent::default().event("lagged").data(n.to_string()),
        };
        Some((Ok(message), s))
    })
}

const DASHBOARD_HTML: &str = include_str!("dashboard/index.html");
const DASHBOARD_JS: &str = include_str!("dashboard/dashboard.js");
const DASHBOARD_CSS: &str = include_str!("dashboard/dashboard.css");

async fn dashboard() -> Html<&'static str> {
    Html(DASHBOARD_HTML)
}

async fn dashboard_js() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        DASHBOARD_JS,
    )
        .into_response()
}

async fn dashboard_css() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        DASHBOARD_CSS,
    )
        .into_response()
}
