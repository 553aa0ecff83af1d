//! The servicecenter plugin logs in to a service-center with RBAC on (issue 12, part 4).
//!
//! A small fake service-center on `127.0.0.1:0` (axum) speaks service-center 2.x's RBAC
//! contract: `POST /v4/token` answers a JWT-shaped token (`header.payload.signature`, the
//! payload's `exp` a few seconds ahead), every other `/v4` request needs
//! `Authorization: Bearer` with a live token or is answered 401, a wrong password is 401
//! (401202) and the account locks (403201) after three. It counts logins and refusals, keeps
//! every token it issued, and serves enough of the registry API (create, register, heartbeat,
//! list, admin dump) for the plugin's calls. The plugin is the real one, over real sockets.
//!
//! The daemon's settings (`--sc-account`, `--sc-password-file`, `servicecenter.auth`) are
//! read through the library's own `DaemonConfig::resolve`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::{json, Value};
use syncer_plugin_api::{Error, Instance, Plugin, Service};
use syncer_plugin_servicecenter::{Config, Credentials, Password, ServiceCenterPlugin};
use tokio_util::sync::CancellationToken;

const ACCOUNT: &str = "syncer-account";
const PASSWORD: &str = "Pw-s3cret!42";
const WRONG_PASSWORD: &str = "wrong-Pa55word";

/// The fake service-center's state.
struct Registry {
    /// Seconds a token lives (`exp - iat`).
    lifetime_secs: u64,
    /// Live tokens and their `exp` (unix seconds).
    tokens: Mutex<HashMap<String, f64>>,
    /// Every token ever issued, for the checks that none leaks.
    issued: Mutex<Vec<String>>,
    /// Successful logins.
    logins: AtomicUsize,
    /// Refused logins (wrong password or locked).
    failed_logins: AtomicUsize,
    /// While set, `POST /v4/token` answers 503 (the attempts are counted).
    login_down: std::sync::atomic::AtomicBool,
    /// Logins answered 503.
    logins_while_down: AtomicUsize,
    /// Requests other than a login answered 401.
    refused: AtomicUsize,
    /// Requests other than a login answered with a live token.
    served: AtomicUsize,
    /// Services by id (the service-center body).
    services: Mutex<Vec<Value>>,
    /// Instances by service id.
    instances: Mutex<HashMap<String, Vec<Value>>>,
}

/// A running fake service-center; stops when dropped.
struct FakeServiceCenter {
    addr: SocketAddr,
    state: Arc<Registry>,
    shutdown: CancellationToken,
}

impl Drop for FakeServiceCenter {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl FakeServiceCenter {
    async fn start(lifetime_secs: u64) -> FakeServiceCenter {
        let state = Arc::new(Registry {
            lifetime_secs,
            tokens: Mutex::new(HashMap::new()),
            issued: Mutex::new(Vec::new()),
            logins: AtomicUsize::new(0),
            failed_logins: AtomicUsize::new(0),
            login_down: std::sync::atomic::AtomicBool::new(false),
            logins_while_down: AtomicUsize::new(0),
            refused: AtomicUsize::new(0),
            served: AtomicUsize::new(0),
            services: Mutex::new(Vec::new()),
            instances: Mutex::new(HashMap::new()),
        });
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
        });
        FakeServiceCenter {
            addr,
            state,
            shutdown,
        }
    }

    fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn logins(&self) -> usize {
        self.state.logins.load(Ordering::SeqCst)
    }

    fn refused(&self) -> usize {
        self.state.refused.load(Ordering::SeqCst)
    }

    /// Every token issued so far.
    fn issued(&self) -> Vec<String> {
        self.state.issued.lock().expect("lock").clone()
    }

    /// Forgets every live token: the next request with one is answered 401.
    fn revoke_all(&self) {
        self.state.tokens.lock().expect("lock").clear();
    }

    /// A plugin for this registry logging in with `password` (none: no login).
    fn plugin(&self, password: Option<&str>, use_admin_dump: bool) -> ServiceCenterPlugin {
        ServiceCenterPlugin::new(Config {
            endpoints: vec![self.base()],
            request_timeout: Duration::from_secs(5),
            use_admin_dump,
            auth: password.map(|p| Credentials {
                account: ACCOUNT.into(),
                password: Password::new(p),
            }),
            ..Config::default()
        })
        .expect("plugin builds")
    }
}

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64()
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"errorCode": code, "errorMessage": message, "detail": ""})),
    )
        .into_response()
}

/// A JWT-shaped token: `{"alg":"HS256"}`, the payload with `iat` (whole seconds, as
/// service-center's) and `exp`, and a signature unique to the token.
fn issue(state: &Registry) -> String {
    let n = state.issued.lock().expect("lock").len();
    let iat = now_secs().floor();
    let exp = iat + state.lifetime_secs as f64;
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    let payload =
        json!({"account": ACCOUNT, "sub": ACCOUNT, "iat": iat as u64, "exp": exp as u64, "jti": n});
    let token = format!(
        "{}.{}.{}",
        b64(r#"{"alg":"HS256","typ":"JWT"}"#),
        b64(&payload.to_string()),
        b64(&format!("signature-{n}-{}", rand_part()))
    );
    state
        .tokens
        .lock()
        .expect("lock")
        .insert(token.clone(), exp);
    state.issued.lock().expect("lock").push(token.clone());
    token
}

/// A few bytes that differ between runs.
fn rand_part() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_nanos()
}

async fn handle(
    State(state): State<Arc<Registry>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    if path == "/v4/token" && method == Method::POST {
        if state.login_down.load(Ordering::SeqCst) {
            state.logins_while_down.fetch_add(1, Ordering::SeqCst);
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "500003",
                "login backend unavailable",
            );
        }
        let Ok(login) = serde_json::from_slice::<Value>(&body) else {
            return error(StatusCode::BAD_REQUEST, "400001", "Invalid parameter(s)");
        };
        if state.failed_logins.load(Ordering::SeqCst) >= 3 {
            return error(
                StatusCode::FORBIDDEN,
                "403201",
                "account is locked, try again later",
            );
        }
        if login["name"] != ACCOUNT || login["password"] != PASSWORD {
            state.failed_logins.fetch_add(1, Ordering::SeqCst);
            return error(
                StatusCode::UNAUTHORIZED,
                "401202",
                "User name or password is wrong",
            );
        }
        state.logins.fetch_add(1, Ordering::SeqCst);
        return axum::Json(json!({"token": issue(&state)})).into_response();
    }
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let live = token.and_then(|t| state.tokens.lock().expect("lock").get(t).copied());
    match (token, live) {
        (None, _) => {
            state.refused.fetch_add(1, Ordering::SeqCst);
            return error(StatusCode::UNAUTHORIZED, "401201", "Request unauthorized");
        }
        (Some(_), None) => {
            state.refused.fetch_add(1, Ordering::SeqCst);
            return error(StatusCode::UNAUTHORIZED, "401204", "Invalid token");
        }
        (Some(_), Some(exp)) if now_secs() >= exp => {
            state.refused.fetch_add(1, Ordering::SeqCst);
            return error(StatusCode::UNAUTHORIZED, "401206", "Token is expired");
        }
        _ => {}
    }
    state.served.fetch_add(1, Ordering::SeqCst);
    registry_api(&state, &method, &path, &body)
}

/// Just enough of the v4 registry API for the plugin's calls, tenant default/default.
fn registry_api(state: &Registry, method: &Method, path: &str, body: &[u8]) -> Response {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let json_body = || serde_json::from_slice::<Value>(body).unwrap_or(Value::Null);
    match (method.as_str(), parts.as_slice()) {
        ("GET", ["v4", "default", "admin", "dump"]) => {
            let services = state.services.lock().expect("lock");
            let entries: Vec<Value> = services
                .iter()
                .map(|s| {
                    json!({
                        "key": format!("/cse-sr/ms/files/default/default/{}", s["serviceId"].as_str().unwrap_or_default()),
                        "value": s,
                    })
                })
                .collect();
            axum::Json(json!({"cache": {"services": entries, "instances": []}})).into_response()
        }
        ("GET", ["v4", _, "registry", "microservices"]) => {
            let services = state.services.lock().expect("lock").clone();
            axum::Json(json!({ "services": services })).into_response()
        }
        ("POST", ["v4", _, "registry", "microservices"]) => {
            let mut service = json_body()["service"].clone();
            let mut services = state.services.lock().expect("lock");
            let id = match service["serviceId"].as_str() {
                Some(id) if !id.is_empty() => id.to_owned(),
                _ => format!("service-{}", services.len() + 1),
            };
            service["serviceId"] = json!(id);
            if !services.iter().any(|s| s["serviceId"] == id.as_str()) {
                services.push(service);
            }
            axum::Json(json!({ "serviceId": id })).into_response()
        }
        ("GET", ["v4", _, "registry", "microservices", sid, "instances"]) => {
            let instances = state
                .instances
                .lock()
                .expect("lock")
                .get(*sid)
                .cloned()
                .unwrap_or_default();
            axum::Json(json!({ "instances": instances })).into_response()
        }
        ("POST", ["v4", _, "registry", "microservices", sid, "instances"]) => {
            let mut instance = json_body()["instance"].clone();
            let id = instance["instanceId"]
                .as_str()
                .unwrap_or("instance")
                .to_owned();
            instance["serviceId"] = json!(sid);
            let mut instances = state.instances.lock().expect("lock");
            let list = instances.entry((*sid).to_owned()).or_default();
            list.retain(|i| i["instanceId"] != id.as_str());
            list.push(instance);
            axum::Json(json!({ "instanceId": id })).into_response()
        }
        ("PUT", ["v4", _, "registry", "microservices", sid, "instances", iid, "heartbeat"]) => {
            let known = state
                .instances
                .lock()
                .expect("lock")
                .get(*sid)
                .is_some_and(|l| l.iter().any(|i| i["instanceId"] == *iid));
            if known {
                StatusCode::OK.into_response()
            } else {
                error(
                    StatusCode::BAD_REQUEST,
                    "400017",
                    "Instance does not exist.",
                )
            }
        }
        _ => error(StatusCode::NOT_FOUND, "404", "no such route in the fake"),
    }
}

fn hello_service() -> Service {
    Service {
        domain_project: "default/default".into(),
        app_id: "demo".into(),
        service_name: "hello-server".into(),
        version: "1.0.0".into(),
        ..Service::default()
    }
}

fn instance(id: &str) -> Instance {
    Instance {
        instance_id: id.into(),
        host_name: "node-1".into(),
        endpoints: vec!["http://10.0.0.1:8080".into()],
        ..Instance::default()
    }
}

/// Registers hello-server with one instance; returns the service with its id.
async fn register_hello(plugin: &ServiceCenterPlugin) -> Service {
    let service_id = plugin
        .ensure_service(&hello_service())
        .await
        .expect("service created with the token");
    let service = Service {
        service_id,
        ..hello_service()
    };
    plugin
        .register(&service, &instance("hello-1"))
        .await
        .expect("instance registered with the token");
    service
}

#[tokio::test]
async fn the_plugin_logs_in_once_for_concurrent_requests_and_sends_its_token_on_each() {
    let sc = FakeServiceCenter::start(60).await;
    // Without an account the registry refuses the plugin: the fake checks tokens.
    let anonymous = sc.plugin(None, false);
    match anonymous.list().await {
        Err(Error::Rejected(message)) => assert!(message.contains("401"), "{message}"),
        other => panic!("a request without a token must be refused: {other:?}"),
    }
    let refused_before = sc.refused();

    let plugin = Arc::new(sc.plugin(Some(PASSWORD), false));
    let lists: Vec<_> = (0..16)
        .map(|_| {
            let plugin = plugin.clone();
            tokio::spawn(async move { plugin.list().await })
        })
        .collect();
    for list in lists {
        list.await.expect("task").expect("listed with the token");
    }
    assert_eq!(sc.logins(), 1, "one login shared by 16 concurrent requests");

    let service = register_hello(&plugin).await;
    plugin
        .heartbeat(&service, "hello-1")
        .await
        .expect("heartbeat with the token");
    let snapshot = plugin.list().await.expect("listed");
    assert_eq!(snapshot.services.len(), 1);
    assert_eq!(snapshot.instances.len(), 1);
    assert_eq!(snapshot.instances[0].instance_id, "hello-1");
    assert_eq!(sc.logins(), 1);
    assert_eq!(
        sc.refused(),
        refused_before,
        "no request went without a token"
    );

    // The admin dump (a streamed read) carries the token too.
    let dump = sc.plugin(Some(PASSWORD), true);
    let snapshot = dump.list().await.expect("dump read with the token");
    assert_eq!(snapshot.services.len(), 1);
    assert_eq!(sc.refused(), refused_before);
}

#[tokio::test]
async fn the_token_is_renewed_before_it_expires() {
    // Tokens live 2 s (1 to 2 s in fact: iat is rounded down to a second).
    let sc = FakeServiceCenter::start(2).await;
    let plugin = sc.plugin(Some(PASSWORD), false);
    let service = register_hello(&plugin).await;
    let started = Instant::now();
    let mut calls = 0;
    // Over three lifetimes and more, a call every 50 ms: every one succeeds.
    while started.elapsed() < Duration::from_millis(6500) {
        if calls % 2 == 0 {
            plugin
                .heartbeat(&service, "hello-1")
                .await
                .unwrap_or_else(|e| panic!("heartbeat {calls} failed: {e}"));
        } else {
            plugin
                .list()
                .await
                .unwrap_or_else(|e| panic!("list {calls} failed: {e}"));
        }
        calls += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let logins = sc.logins();
    assert_eq!(
        sc.refused(),
        0,
        "no request was refused: each token was renewed before it expired ({logins} logins, {calls} calls)"
    );
    // At least one renewal per lifetime, at most one per 0.8 s (80 % of the shortest life).
    assert!((4..=10).contains(&logins), "{logins} logins in 6.5 s");
}

#[tokio::test]
async fn a_token_that_cannot_be_renewed_is_used_until_it_expires_then_the_error_shows() {
    // Tokens live 3 s (2 to 3 s: iat is rounded down); renewal is tried after 80 %.
    let sc = FakeServiceCenter::start(3).await;
    let plugin = sc.plugin(Some(PASSWORD), false);
    plugin.list().await.expect("logged in");
    let token = sc.issued().pop().expect("one token");
    let payload = token.split('.').nth(1).expect("payload");
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .expect("base64url"),
    )
    .expect("json");
    let exp = claims["exp"].as_f64().expect("exp");

    sc.state.login_down.store(true, Ordering::SeqCst);
    // Until shortly before it expires, the token keeps working although renewals fail.
    while now_secs() < exp - 0.15 {
        plugin
            .list()
            .await
            .expect("the current token is used while it is valid");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        sc.state.logins_while_down.load(Ordering::SeqCst) >= 1,
        "a renewal was tried before the token expired"
    );
    assert_eq!(sc.refused(), 0);
    // Once it has expired, the login's failure is the call's error.
    while now_secs() < exp + 0.05 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    match plugin.list().await {
        Err(Error::Unavailable { endpoint, message }) => {
            assert_eq!(endpoint, sc.base());
            assert!(message.contains(ACCOUNT), "{message}");
        }
        other => panic!("an expired token and no login is unavailable: {other:?}"),
    }
    // The login comes back: so does the plugin.
    sc.state.login_down.store(false, Ordering::SeqCst);
    plugin.list().await.expect("logged in again");
    assert_eq!(sc.logins(), 2);
}

#[tokio::test]
async fn after_the_registry_revokes_the_token_the_plugin_logs_in_again_and_the_call_succeeds() {
    let sc = FakeServiceCenter::start(60).await;
    let plugin = Arc::new(sc.plugin(Some(PASSWORD), false));
    register_hello(&plugin).await;
    assert_eq!(sc.logins(), 1);

    sc.revoke_all();
    let snapshot = plugin.list().await.expect("listed after a new login");
    assert_eq!(snapshot.services.len(), 1);
    assert_eq!(sc.logins(), 2, "one new login");
    assert_eq!(sc.refused(), 1, "one 401, answered by the retry");

    // Many requests refused at once log in again once.
    sc.revoke_all();
    let lists: Vec<_> = (0..8)
        .map(|_| {
            let plugin = plugin.clone();
            tokio::spawn(async move { plugin.list().await })
        })
        .collect();
    for list in lists {
        list.await.expect("task").expect("listed after a new login");
    }
    assert_eq!(sc.logins(), 3, "one new login for 8 refused requests");

    // The admin dump's streamed read logs in again the same way.
    let dump = sc.plugin(Some(PASSWORD), true);
    dump.list().await.expect("dump read");
    let logins = sc.logins();
    sc.revoke_all();
    let snapshot = dump.list().await.expect("dump read after a new login");
    assert_eq!(snapshot.services.len(), 1);
    assert_eq!(sc.logins(), logins + 1);
}

#[tokio::test]
async fn a_wrong_password_is_an_error_naming_the_registry_and_the_account_but_no_secret() {
    let sc = FakeServiceCenter::start(60).await;
    // A good plugin first, so that there are tokens that must not appear anywhere.
    sc.plugin(Some(PASSWORD), false)
        .list()
        .await
        .expect("listed");
    let plugin = sc.plugin(Some(WRONG_PASSWORD), false);
    let message = match plugin.list().await {
        Err(Error::Rejected(message)) => message,
        other => panic!("a wrong password is a refused login: {other:?}"),
    };
    assert!(message.contains(ACCOUNT), "{message}");
    assert!(message.contains(&sc.base()), "{message}");
    assert!(
        message.contains("User name or password is wrong"),
        "{message}"
    );
    assert!(message.contains("401202"), "{message}");
    let shown = format!("{message} {plugin:?}");
    assert!(!shown.contains(WRONG_PASSWORD), "{shown}");
    assert!(!shown.contains(PASSWORD), "{shown}");
    for token in sc.issued() {
        assert!(!shown.contains(&token), "{shown}");
    }

    // A refused login is not tried again at once: the next calls get the same error
    // without a request, so a polling syncer does not lock the account.
    for _ in 0..3 {
        match plugin.list().await {
            Err(Error::Rejected(again)) => {
                assert!(again.contains("User name or password is wrong"), "{again}");
                assert!(again.contains("next login attempt in"), "{again}");
            }
            other => panic!("still refused: {other:?}"),
        }
    }
    assert_eq!(sc.state.failed_logins.load(Ordering::SeqCst), 1);

    // The registry's own reason comes through, e.g. a locked account (after 3 failures).
    for _ in 0..2 {
        let _ = sc.plugin(Some(WRONG_PASSWORD), false).list().await;
    }
    match sc.plugin(Some(PASSWORD), false).list().await {
        Err(Error::Rejected(message)) => {
            assert!(message.contains("403201"), "{message}");
            assert!(message.contains("locked"), "{message}");
            assert!(message.contains(ACCOUNT), "{message}");
        }
        other => panic!("a locked account is a refused login: {other:?}"),
    }
}

#[tokio::test]
async fn an_unreachable_registry_is_unavailable_naming_the_account() {
    let sc = FakeServiceCenter::start(60).await;
    let base = sc.base();
    drop(sc);
    let plugin = ServiceCenterPlugin::new(Config {
        endpoints: vec![base.clone()],
        request_timeout: Duration::from_secs(2),
        auth: Some(Credentials {
            account: ACCOUNT.into(),
            password: Password::new(PASSWORD),
        }),
        ..Config::default()
    })
    .expect("plugin builds");
    // The listener may take a moment to close after the shutdown signal.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match plugin.list().await {
            Err(Error::Unavailable { endpoint, message }) => {
                assert_eq!(endpoint, base);
                assert!(message.contains(ACCOUNT), "{message}");
                assert!(!message.contains(PASSWORD), "{message}");
                break;
            }
            other if Instant::now() > deadline => {
                panic!("a closed registry is unavailable: {other:?}")
            }
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// A `tracing` writer into a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

#[tokio::test]
async fn neither_the_password_nor_a_token_reaches_the_log_at_any_level() {
    let log = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(log.clone())
        .with_ansi(false)
        .finish();
    // This test's runtime runs on this thread only: the plugin, reqwest's connections and
    // the fake all log here.
    let _guard = tracing::subscriber::set_default(subscriber);

    let sc = FakeServiceCenter::start(2).await;
    let plugin = sc.plugin(Some(PASSWORD), true);
    plugin.list().await.expect("logged in");
    sc.revoke_all();
    plugin.list().await.expect("logged in again");
    // Past the renewal point of a 2 s token.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    plugin.list().await.expect("renewed");
    let _ = sc.plugin(Some(WRONG_PASSWORD), false).list().await;

    let text = String::from_utf8_lossy(&log.0.lock().expect("lock")).into_owned();
    assert!(text.contains("logged in to the registry"), "{text}");
    assert!(text.contains("TRACE") || text.contains("DEBUG"), "{text}");
    assert!(!text.contains(PASSWORD), "{text}");
    assert!(!text.contains(WRONG_PASSWORD), "{text}");
    let issued = sc.issued();
    assert!(issued.len() >= 3, "{issued:?}");
    for token in issued {
        // Nor any part of it that is secret: the signature.
        let signature = token.rsplit('.').next().unwrap_or_default().to_owned();
        assert!(!text.contains(&signature), "{text}");
    }
}

fn write(dir: &std::path::Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    path
}

#[test]
fn the_account_comes_from_the_servicecenter_auth_block_and_the_flags_win() {
    use clap::Parser;
    use syncer::cli::{Cli, Command, DaemonArgs};
    use syncer::config::DaemonConfig;

    let dir = tempfile::tempdir().expect("tempdir");
    let yaml_password = write(dir.path(), "yaml-password", "yamlPW-1\n");
    let flag_password = write(dir.path(), "flag-password", "flagPW-2\n");
    let yaml = write(
        dir.path(),
        "syncer.yaml",
        &format!(
            "servicecenter:\n  addr: http://127.0.0.1:30100\n  auth:\n    account: yaml-account\n    password_file: {}\n",
            yaml_password.display()
        ),
    );
    let c = DaemonConfig::resolve(DaemonArgs {
        node: Some("n1".into()),
        config: Some(yaml.clone()),
        ..Default::default()
    })
    .expect("valid");
    let auth = c.registry_auth.as_ref().expect("an account");
    assert_eq!(auth.account, "yaml-account");
    assert_eq!(auth.password.expose(), "yamlPW-1");
    assert!(!format!("{c:?}").contains("yamlPW-1"), "{c:?}");

    // The flags, as parsed from a command line, win over the file.
    let cli = Cli::try_parse_from([
        "syncer".into(),
        "daemon".into(),
        "--node".into(),
        "n1".into(),
        "--config".into(),
        yaml.display().to_string(),
        "--sc-account".into(),
        "flag-account".into(),
        "--sc-password-file".into(),
        flag_password.display().to_string(),
    ])
    .expect("flags parse");
    let Command::Daemon(args) = cli.command else {
        panic!("the daemon command")
    };
    let c = DaemonConfig::resolve(*args).expect("valid");
    let auth = c.registry_auth.as_ref().expect("an account");
    assert_eq!(auth.account, "flag-account");
    assert_eq!(auth.password.expose(), "flagPW-2");

    // Unknown keys in the block are refused.
    let typo = write(
        dir.path(),
        "typo.yaml",
        "servicecenter:\n  addr: http://127.0.0.1:30100\n  auth:\n    account: a\n    password: inline\n",
    );
    let err = DaemonConfig::resolve(DaemonArgs {
        node: Some("n1".into()),
        config: Some(typo),
        ..Default::default()
    })
    .expect_err("unknown key");
    assert!(err.to_string().contains("password"), "{err}");
    assert!(!err.to_string().contains("inline"), "{err}");
}

#[test]
fn an_account_is_refused_where_it_cannot_apply_and_without_a_password() {
    use syncer::cli::{DaemonArgs, PluginKind, RegistryArgs};
    use syncer::config::DaemonConfig;

    let dir = tempfile::tempdir().expect("tempdir");
    let password = write(dir.path(), "password", "PW-3\n");
    let args = |sc_addr: Option<&str>, plugin: Option<PluginKind>| DaemonArgs {
        node: Some("n1".into()),
        registry: RegistryArgs {
            sc_addr: sc_addr.map(str::to_owned),
            sc_plugin: plugin,
            sc_account: Some("syncer".into()),
            sc_password_file: Some(password.clone()),
            ..Default::default()
        },
        ..Default::default()
    };
    for (case, sc_addr, plugin, expected) in [
        ("the built-in core", None, None, "built-in core"),
        (
            "eureka",
            Some("http://127.0.0.1:8761/eureka"),
            Some(PluginKind::Eureka),
            "servicecenter plugin only",
        ),
        (
            "credentials in the address",
            Some("http://u:addrPW@127.0.0.1:30100"),
            None,
            "user:pass@",
        ),
    ] {
        let err = DaemonConfig::resolve(args(sc_addr, plugin)).expect_err(case);
        let text = err.to_string();
        assert!(text.contains("--sc-account"), "{case}: {text}");
        assert!(text.contains(expected), "{case}: {text}");
        assert!(
            !text.contains("PW-3") && !text.contains("addrPW"),
            "{case}: {text}"
        );
    }
    // An account without any password source.
    let mut no_password = args(Some("http://127.0.0.1:30100"), None);
    no_password.registry.sc_password_file = None;
    let err = DaemonConfig::resolve(no_password).expect_err("no password");
    assert!(err.to_string().contains("--sc-password-file"), "{err}");
}
