//! hello-server: the service-center-side app of the demo, after the Go original
//! (`syncer/samples/multi-servicecenters/servicecenter/hello-server`, notes b.2).
//!
//! [`run`] serves `POST /login` at once and, meanwhile: makes sure the microservice
//! `eureka/hello-server/0.0.1` exists, registers an instance with the advertised
//! `rest://` endpoint (retrying until the registry answers), keeps it alive with heartbeats
//! (registering again when the registry forgot it), and discovers `eureka/account-server/0.0.1`,
//! the Eureka app the syncer imports, retrying until it shows up and answers `/checkHealth`.
//! On shutdown it unregisters the instance.
//!
//! `POST /login` forwards the body to account-server's `/login` and answers with its status
//! and text. Differences from the original, on purpose: before discovery it answers 503, and
//! when account-server cannot be reached it discovers again and retries once, then answers 502
//! (the original answered 200 with an empty body, and did not listen at all until discovery).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use anyhow::Context as _;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::lifecycle::{sleep_or_shutdown, Backoff};
use crate::servicecenter::{rest_endpoint_to_url, ScClient, ScError, ServiceKey};

/// Per-request timeout of calls to account-server.
const PROVIDER_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait between two registration attempts.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(10);

/// What hello-server needs to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// service-center address, e.g. `http://127.0.0.1:30100`.
    pub registry_url: String,
    /// The endpoint registered for this instance, e.g. `rest://127.0.0.1:8091`.
    pub advertised_endpoint: String,
    /// Host name registered for this instance (the OS host name).
    pub host_name: String,
    /// Time between two instance heartbeats.
    pub heartbeat_interval: Duration,
    /// Time between two discovery attempts of account-server.
    pub discovery_retry_interval: Duration,
    /// Give up (and exit with an error) when account-server is not found within this time;
    /// `None` waits forever.
    pub discovery_timeout: Option<Duration>,
}

/// This app's microservice: `eureka/hello-server/0.0.1`.
pub fn hello_service() -> ServiceKey {
    ServiceKey {
        app_id: "eureka".to_owned(),
        service_name: "hello-server".to_owned(),
        version: "0.0.1".to_owned(),
    }
}

/// The provider, as the syncer imports the Eureka app: `eureka/account-server/0.0.1`.
pub fn provider_service() -> ServiceKey {
    ServiceKey {
        app_id: "eureka".to_owned(),
        service_name: "account-server".to_owned(),
        version: "0.0.1".to_owned(),
    }
}

/// The `rest://` endpoint for a bound address; an unspecified IP (`0.0.0.0`, `::`) is
/// advertised as `127.0.0.1`, since a peer cannot dial it.
pub fn advertised_endpoint(addr: SocketAddr) -> String {
    let ip = if addr.ip().is_unspecified() {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        addr.ip()
    };
    format!("rest://{}", SocketAddr::new(ip, addr.port()))
}

/// Our registration in service-center.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    pub service_id: String,
    pub instance_id: String,
}

/// Why one discovery attempt did not give a usable account-server.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryMiss {
    #[error("hello-server is not registered yet")]
    NotRegistered,
    #[error(transparent)]
    Registry(#[from] ScError),
    #[error("no instances")]
    NoInstances,
    #[error("no rest or http endpoint in {0:?}")]
    NoUsableEndpoint(Vec<String>),
    #[error("{url}/checkHealth failed: {reason}")]
    Unhealthy { url: String, reason: String },
}

struct Shared {
    sc: ScClient,
    /// Client for account-server calls.
    http: reqwest::Client,
    provider_key: ServiceKey,
    /// Set once registered, replaced on re-registration; discovery needs the service id as
    /// `X-ConsumerId` and shutdown needs both to unregister. Never held across `.await`.
    registration: Mutex<Option<Registered>>,
    /// account-server's base URL once discovered; replaced when a forward fails and discovery
    /// finds it elsewhere. Never held across `.await`.
    provider: RwLock<Option<String>>,
}

/// State shared by the `/login` handler and the background tasks.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    /// State for a hello-server that talks to `sc` and looks for `provider_key`.
    ///
    /// # Errors
    /// When the HTTP client cannot be built.
    pub fn new(sc: ScClient, provider_key: ServiceKey) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(PROVIDER_TIMEOUT)
            .build()
            .context("building the account-server http client")?;
        Ok(Self(Arc::new(Shared {
            sc,
            http,
            provider_key,
            registration: Mutex::new(None),
            provider: RwLock::new(None),
        })))
    }

    /// The current registration, if any.
    pub fn registration(&self) -> Option<Registered> {
        self.0
            .registration
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set_registration(&self, registered: Option<Registered>) {
        *self
            .0
            .registration
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = registered;
    }

    /// account-server's base URL, once discovered.
    pub fn provider(&self) -> Option<String> {
        self.0
            .provider
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Sets account-server's base URL (discovery does this; tests may too).
    pub fn set_provider(&self, url: Option<String>) {
        *self
            .0
            .provider
            .write()
            .unwrap_or_else(PoisonError::into_inner) = url;
    }

    /// Ensures the service and registers one instance, once.
    async fn register_once(&self, config: &Config) -> Result<Registered, ScError> {
        let service_id = self.0.sc.ensure_service(&hello_service()).await?;
        let instance_id = self
            .0
            .sc
            .register_instance(
                &service_id,
                &config.host_name,
                std::slice::from_ref(&config.advertised_endpoint),
            )
            .await?;
        let registered = Registered {
            service_id,
            instance_id,
        };
        self.set_registration(Some(registered.clone()));
        Ok(registered)
    }

    /// Registers, retrying with backoff until it works; `None` if shut down first.
    async fn register(&self, config: &Config, shutdown: &CancellationToken) -> Option<Registered> {
        let mut backoff = Backoff::new(MAX_RETRY_DELAY);
        loop {
            let result = tokio::select! {
                result = self.register_once(config) => result,
                () = shutdown.cancelled() => return None,
            };
            match result {
                Ok(registered) => {
                    tracing::info!(
                        service_id = %registered.service_id,
                        instance_id = %registered.instance_id,
                        endpoint = %config.advertised_endpoint,
                        "registered to service-center"
                    );
                    return Some(registered);
                }
                Err(error) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(%error, retry_in_secs = delay.as_secs(), "service-center registration failed");
                    if !sleep_or_shutdown(delay, shutdown).await {
                        return None;
                    }
                }
            }
        }
    }

    /// Heartbeats every interval until shutdown; registers again when the registry forgot
    /// the instance (400017, 400012 or 404).
    async fn keep_alive(self, config: Config, shutdown: CancellationToken) {
        while sleep_or_shutdown(config.heartbeat_interval, &shutdown).await {
            let Some(registered) = self.registration() else {
                continue;
            };
            let result = tokio::select! {
                result = self.0.sc.heartbeat(&registered.service_id, &registered.instance_id) => result,
                () = shutdown.cancelled() => return,
            };
            match result {
                Ok(()) => tracing::debug!(instance_id = %registered.instance_id, "heartbeat sent"),
                Err(error) if error.is_instance_gone() => {
                    tracing::info!(%error, "service-center forgot the instance, registering again");
                    match self.register_once(&config).await {
                        Ok(again) => tracing::info!(
                            service_id = %again.service_id,
                            instance_id = %again.instance_id,
                            "registered to service-center again"
                        ),
                        Err(error) => {
                            tracing::warn!(%error, "service-center re-registration failed")
                        }
                    }
                }
                Err(error) => tracing::warn!(%error, "heartbeat failed"),
            }
        }
    }

    /// One discovery attempt: find account-server's instances, take the first usable
    /// endpoint, and check its health.
    ///
    /// # Errors
    /// Why this attempt did not give a usable account-server.
    pub async fn discover_once(&self) -> Result<String, DiscoveryMiss> {
        let consumer = self.registration().ok_or(DiscoveryMiss::NotRegistered)?;
        let instances = self
            .0
            .sc
            .find_instances(&consumer.service_id, &self.0.provider_key)
            .await?;
        if instances.is_empty() {
            return Err(DiscoveryMiss::NoInstances);
        }
        let endpoints: Vec<String> = instances
            .into_iter()
            .flat_map(|instance| instance.endpoints)
            .collect();
        let url = endpoints
            .iter()
            .find_map(|endpoint| rest_endpoint_to_url(endpoint))
            .ok_or_else(|| DiscoveryMiss::NoUsableEndpoint(endpoints.clone()))?;
        self.check_health(&url).await?;
        Ok(url)
    }

    async fn check_health(&self, url: &str) -> Result<(), DiscoveryMiss> {
        let unhealthy = |reason: String| DiscoveryMiss::Unhealthy {
            url: url.to_owned(),
            reason,
        };
        let response = self
            .0
            .http
            .get(format!("{url}/checkHealth"))
            .send()
            .await
            .map_err(|error| unhealthy(error.to_string()))?;
        let status = response.status();
        if !status.is_success() {
            return Err(unhealthy(format!("status {status}")));
        }
        let text = response.text().await.unwrap_or_default();
        tracing::debug!(%url, answer = %text, "account-server health checked");
        Ok(())
    }

    /// Retries [`Self::discover_once`] until it works, the timeout passes or shutdown fires.
    ///
    /// # Errors
    /// When the timeout passes first.
    async fn discover(
        &self,
        config: &Config,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<Option<String>> {
        let deadline = config.discovery_timeout.map(|t| Instant::now() + t);
        loop {
            let result = tokio::select! {
                result = self.discover_once() => result,
                () = shutdown.cancelled() => return Ok(None),
            };
            match result {
                Ok(url) => return Ok(Some(url)),
                Err(reason) => {
                    tracing::info!(%reason, "account-server not found yet, retrying")
                }
            }
            if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
                anyhow::bail!(
                    "account-server not found within {} s",
                    config.discovery_timeout.unwrap_or_default().as_secs()
                );
            }
            if !sleep_or_shutdown(config.discovery_retry_interval, shutdown).await {
                return Ok(None);
            }
        }
    }

    /// `POST {url}/login` with `body`; the provider's status and text.
    async fn forward(
        &self,
        url: &str,
        body: Bytes,
    ) -> Result<(StatusCode, String), reqwest::Error> {
        let response = self
            .0
            .http
            .post(format!("{url}/login"))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await?;
        let status = response.status();
        Ok((status, response.text().await?))
    }
}

/// The hello-server routes.
pub fn router(state: AppState) -> Router {
    Router::new().route("/login", post(login)).with_state(state)
}

async fn login(State(state): State<AppState>, body: Bytes) -> (StatusCode, String) {
    let Some(url) = state.provider() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "account-server not discovered yet".to_owned(),
        );
    };
    let error = match state.forward(&url, body.clone()).await {
        Ok(answer) => return answer,
        Err(error) => error,
    };
    tracing::warn!(%url, %error, "account-server call failed, discovering again");
    match state.discover_once().await {
        Ok(new_url) if new_url != url => {
            tracing::info!(old = %url, new = %new_url, "account-server moved");
            state.set_provider(Some(new_url.clone()));
            match state.forward(&new_url, body).await {
                Ok(answer) => answer,
                Err(error) => bad_gateway(&new_url, &error),
            }
        }
        Ok(_) => bad_gateway(&url, &error),
        Err(reason) => {
            tracing::debug!(%reason, "rediscovery found nothing better");
            bad_gateway(&url, &error)
        }
    }
}

fn bad_gateway(url: &str, error: &reqwest::Error) -> (StatusCode, String) {
    (
        StatusCode::BAD_GATEWAY,
        format!("account-server at {url} failed: {error}"),
    )
}

/// Runs hello-server on `listener` until `shutdown` fires or discovery times out, then
/// unregisters the instance.
///
/// # Errors
/// When the clients cannot be built, the server fails, or discovery times out.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let sc = ScClient::new(&config.registry_url).context("building the service-center client")?;
    let state = AppState::new(sc.clone(), provider_service())?;
    let app = router(state.clone());
    let stop_serving = shutdown.clone().cancelled_owned();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(stop_serving)
            .await
    });

    let mut keep_alive = None;
    let result = async {
        if state.register(&config, &shutdown).await.is_none() {
            return Ok(());
        }
        keep_alive = Some(tokio::spawn(
            state.clone().keep_alive(config.clone(), shutdown.clone()),
        ));
        let Some(url) = state.discover(&config, &shutdown).await? else {
            return Ok(());
        };
        tracing::info!(%url, "account-server discovered, serving /login");
        state.set_provider(Some(url));
        shutdown.cancelled().await;
        Ok(())
    }
    .await;

    shutdown.cancel();
    if let Some(task) = keep_alive {
        let _ = task.await;
    }
    if let Some(registered) = state.registration() {
        match sc
            .unregister(&registered.service_id, &registered.instance_id)
            .await
        {
            Ok(()) => {
                tracing::info!(instance_id = %registered.instance_id, "unregistered from service-center")
            }
            Err(error) => tracing::warn!(%error, "service-center unregister failed"),
        }
    }
    match server.await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => return Err(error).context("serving hello-server"),
        Err(error) => return Err(error).context("hello-server task"),
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::extract::Path;
    use axum::http::HeaderMap;
    use axum::response::IntoResponse;
    use axum::routing::{delete, get, put};
    use axum::Json;
    use serde_json::{json, Value};

    /// A throwaway service-center that knows just what hello-server calls.
    #[derive(Default)]
    struct FakeSc {
        hello_id: Option<String>,
        registrations: usize,
        /// Answer the next heartbeat with 400017, as after a registry restart.
        forget_next_heartbeat: bool,
        /// account-server's endpoints; empty = not imported yet.
        provider_endpoints: Vec<String>,
        unregistered: Vec<String>,
    }

    type Fake = Arc<Mutex<FakeSc>>;

    fn lock(fake: &Fake) -> std::sync::MutexGuard<'_, FakeSc> {
        fake.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn sc_error(code: &str) -> axum::response::Response {
        (
            StatusCode::BAD_REQUEST,
            Json(json!({"errorCode": code, "errorMessage": "fake"})),
        )
            .into_response()
    }

    fn fake_sc_router(fake: Fake) -> Router {
        let p = "/v4/default/registry";
        Router::new()
            .route(
                &format!("{p}/existence"),
                get(|State(fake): State<Fake>| async move {
                    match lock(&fake).hello_id.clone() {
                        Some(id) => Json(json!({ "serviceId": id })).into_response(),
                        None => sc_error("400012"),
                    }
                }),
            )
            .route(
                &format!("{p}/microservices"),
                post(|State(fake): State<Fake>, Json(body): Json<Value>| async move {
                    assert_eq!(body["service"]["serviceName"], "hello-server");
                    lock(&fake).hello_id = Some("sid-hello".to_owned());
                    Json(json!({"serviceId": "sid-hello"}))
                }),
            )
            .route(
                &format!("{p}/microservices/{{sid}}/instances"),
                post(|State(fake): State<Fake>, Json(body): Json<Value>| async move {
                    assert!(body["instance"]["endpoints"][0]
                        .as_str()
                        .is_some_and(|e| e.starts_with("rest://127.0.0.1:")));
                    let mut fake = lock(&fake);
                    fake.registrations += 1;
                    Json(json!({"instanceId": format!("iid-{}", fake.registrations)}))
                }),
            )
            .route(
                &format!("{p}/microservices/{{sid}}/instances/{{iid}}/heartbeat"),
                put(|State(fake): State<Fake>| async move {
                    let mut fake = lock(&fake);
                    if std::mem::take(&mut fake.forget_next_heartbeat) {
                        sc_error("400017")
                    } else {
                        StatusCode::OK.into_response()
                    }
                }),
            )
            .route(
                &format!("{p}/microservices/{{sid}}/instances/{{iid}}"),
                delete(
                    |State(fake): State<Fake>, Path((_, iid)): Path<(String, String)>| async move {
                        lock(&fake).unregistered.push(iid);
                    },
                ),
            )
            .route(
                &format!("{p}/instances"),
                get(|State(fake): State<Fake>, headers: HeaderMap| async move {
                    let fake = lock(&fake);
                    let consumer = headers.get("x-consumerid").and_then(|v| v.to_str().ok());
                    if consumer != fake.hello_id.as_deref() || fake.provider_endpoints.is_empty() {
                        return sc_error("400012");
                    }
                    Json(json!({"instances": [{"instanceId": "a", "endpoints": fake.provider_endpoints}]}))
                        .into_response()
                }),
            )
            .with_state(fake)
    }

    async fn serve(router: Router) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
        let addr = listener.local_addr().expect("has an address");
        tokio::spawn(async move { axum::serve(listener, router).await });
        addr
    }

    /// An address nobody listens on.
    async fn dead_addr() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
        listener.local_addr().expect("has an address")
    }

    async fn post_login(addr: SocketAddr, body: &'static str) -> (StatusCode, String) {
        let response = reqwest::Client::new()
            .post(format!("http://{addr}/login"))
            .body(body)
            .send()
            .await
            .expect("hello-server answers");
        let status = response.status();
        (status, response.text().await.expect("body reads"))
    }

    async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(value) = probe().await {
                return value;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn config(registry: SocketAddr, listen: SocketAddr) -> Config {
        Config {
            registry_url: format!("http://{registry}"),
            advertised_endpoint: advertised_endpoint(listen),
            host_name: "test-host".to_owned(),
            heartbeat_interval: Duration::from_millis(50),
            discovery_retry_interval: Duration::from_millis(50),
            discovery_timeout: None,
        }
    }

    /// A hello-server state already pointed at `provider`, with an unreachable registry.
    async fn state_with_provider(provider: SocketAddr) -> AppState {
        let sc = ScClient::new(&format!("http://{}", dead_addr().await)).expect("client");
        let state = AppState::new(sc, provider_service()).expect("state");
        state.set_provider(Some(format!("http://{provider}")));
        state
    }

    #[test]
    fn unspecified_listen_addresses_are_advertised_as_loopback() {
        let addr: SocketAddr = "0.0.0.0:8091".parse().expect("parses");
        assert_eq!(advertised_endpoint(addr), "rest://127.0.0.1:8091");
        let addr: SocketAddr = "127.0.0.2:8091".parse().expect("parses");
        assert_eq!(advertised_endpoint(addr), "rest://127.0.0.2:8091");
    }

    #[tokio::test]
    async fn login_forwards_the_providers_status_and_text() {
        let account = serve(crate::account::router()).await;
        let hello = serve(router(state_with_provider(account).await)).await;
        assert_eq!(
            post_login(hello, r#"{"user":"Jack","password":"123456"}"#).await,
            (StatusCode::OK, "welcome Jack".to_owned())
        );
        assert_eq!(
            post_login(hello, r#"{"user":"Jack","password":""}"#).await,
            (StatusCode::UNAUTHORIZED, "password is empty".to_owned())
        );
    }

    #[tokio::test]
    async fn login_answers_bad_gateway_when_the_provider_is_down() {
        let hello = serve(router(state_with_provider(dead_addr().await).await)).await;
        let (status, text) = post_login(hello, r#"{"user":"Jack","password":"1"}"#).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY);
        assert!(
            text.starts_with("account-server at http://127.0.0.1:"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn login_answers_unavailable_before_discovery() {
        let sc = ScClient::new(&format!("http://{}", dead_addr().await)).expect("client");
        let state = AppState::new(sc, provider_service()).expect("state");
        let hello = serve(router(state)).await;
        assert_eq!(
            post_login(hello, "{}").await,
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "account-server not discovered yet".to_owned()
            )
        );
    }

    #[tokio::test]
    async fn login_follows_the_provider_when_it_moved() {
        let fake = Fake::default();
        let registry = serve(fake_sc_router(fake.clone())).await;
        let account = serve(crate::account::router()).await;
        {
            let mut fake = lock(&fake);
            fake.hello_id = Some("sid-hello".to_owned());
            fake.provider_endpoints = vec![format!("rest://{account}")];
        }
        let sc = ScClient::new(&format!("http://{registry}")).expect("client");
        let state = AppState::new(sc, provider_service()).expect("state");
        state.set_registration(Some(Registered {
            service_id: "sid-hello".to_owned(),
            instance_id: "iid-1".to_owned(),
        }));
        state.set_provider(Some(format!("http://{}", dead_addr().await)));
        let hello = serve(router(state.clone())).await;
        assert_eq!(
            post_login(hello, r#"{"user":"Jack","password":"1"}"#).await,
            (StatusCode::OK, "welcome Jack".to_owned())
        );
        assert_eq!(state.provider(), Some(format!("http://{account}")));
    }

    #[tokio::test]
    async fn hello_server_registers_discovers_forwards_and_unregisters() {
        let fake = Fake::default();
        let registry = serve(fake_sc_router(fake.clone())).await;
        let account = serve(crate::account::router()).await;
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
        let hello = listener.local_addr().expect("has an address");
        let shutdown = CancellationToken::new();
        let running = tokio::spawn(run(config(registry, hello), listener, shutdown.clone()));

        eventually("registration", || async {
            (lock(&fake).registrations > 0).then_some(())
        })
        .await;
        assert_eq!(
            post_login(hello, "{}").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );

        // The syncer imports account-server, with a query as Java chassis writes it.
        lock(&fake).provider_endpoints = vec![
            "highway://127.0.0.1:7070".to_owned(),
            format!("rest://{account}?sslEnabled=false"),
        ];
        let answer = eventually("a forwarded login", || async {
            let answer = post_login(hello, r#"{"user":"Jack","password":"123456"}"#).await;
            (answer.0 == StatusCode::OK).then_some(answer.1)
        })
        .await;
        assert_eq!(answer, "welcome Jack");

        // The registry forgets the instance: hello-server registers again.
        lock(&fake).forget_next_heartbeat = true;
        eventually("re-registration", || async {
            (lock(&fake).registrations > 1).then_some(())
        })
        .await;

        shutdown.cancel();
        running.await.expect("joins").expect("stops cleanly");
        assert_eq!(lock(&fake).unregistered, ["iid-2"]);
    }

    #[tokio::test]
    async fn hello_server_gives_up_after_the_discovery_timeout() {
        let fake = Fake::default();
        let registry = serve(fake_sc_router(fake.clone())).await;
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
        let hello = listener.local_addr().expect("has an address");
        let config = Config {
            discovery_timeout: Some(Duration::from_millis(200)),
            ..config(registry, hello)
        };
        let error = run(config, listener, CancellationToken::new())
            .await
            .expect_err("times out");
        assert!(error.to_string().contains("not found within"), "{error}");
        assert_eq!(lock(&fake).unregistered, ["iid-1"]);
    }
}
