//! The `eureka` plugin: a Eureka v2 REST client implementing [`syncer_plugin_api::Plugin`], for
//! a Netflix / Spring Cloud Eureka server or the built-in core's `/eureka` API.
//!
//! Where it sits (DESIGN.md): the exporter calls [`Plugin::list`] to read the local registry;
//! the importer calls [`Plugin::ensure_service`], [`Plugin::register`], [`Plugin::heartbeat`] and
//! [`Plugin::unregister`] to mirror the other clusters' instances into it.
//!
//! Mapping (the service-center syncer 1.3.0's, `syncer/plugins/eureka`): an Eureka app `NAME`
//! is the service appId `eureka`, serviceName and id `name` (lower case), version `0.0.1`, in
//! `default/default` (or the tenant of [`Config::domain_project`]); an instance's `metadata` is its properties (origin keys included), so an
//! imported instance is recognisable when read back. Differences from 1.3.0: instances of
//! every status are listed (1.3.0 kept only `UP`); the instance id is the one the importer
//! chose (1.3.0 rewrote ids not shaped `a:b:c`); `secureVipAddress` is the service name, not
//! the endpoint URL; metadata is the instance's properties (1.3.0 sent only its source id);
//! the lease comes from the health check. See `wire` for the field-level mapping.
//!
//! Eureka-only fields (VIP addresses, home/status/health URLs, `overriddenStatus`, disabled
//! ports, `countryId`, `dataCenterInfo` with its Amazon metadata) travel through the neutral
//! model in reserved instance properties named `eureka.*` ([`keys`]), so they survive a trip
//! to service-center and back.
//!
//! Reading: [`EurekaPlugin::list`] keeps a local copy of the registry and refreshes it the way
//! Netflix's `DiscoveryClient` does (eureka-notes §5): a full `GET /apps/` first, then
//! `GET /apps/delta` applied to the copy and checked against the delta's `apps__hashcode`, with
//! a full fetch on a mismatch or a failed delta.
//!
//! Requests: `Accept: application/json` and `Content-Type: application/json`, gzip accepted;
//! answers are read as JSON or XML (by `Content-Type`, else by the first byte), since servers
//! and proxies differ. Endpoints are tried in order with failover to the next on transport
//! errors and 5xx, remembering the last good one (eureka-notes §8); `user:pass@` in an endpoint
//! URL is sent as basic auth. Errors map onto [`syncer_plugin_api::Error`]: transport/5xx →
//! `Unavailable`, 404 → `NotFound`, other 4xx → `Rejected` with the server's text, an
//! undecodable body → `Malformed`.

#[cfg(test)]
mod fuzz;
mod wire;

/// The reserved instance property keys that carry Eureka-only fields through the neutral model
/// (and so through service-center, which keeps them as instance `properties`).
///
/// Reading an instance adds a key for each field that is present and not a default; writing a
/// register body takes every `eureka.*` key out of the `metadata` and back into its field. A
/// Eureka metadata key that itself starts with `eureka.` is therefore not sent as metadata.
pub mod keys {
    /// Prefix of every reserved key.
    pub const PREFIX: &str = "eureka.";
    /// `vipAddress`.
    pub const VIP_ADDRESS: &str = "eureka.vipAddress";
    /// `secureVipAddress`.
    pub const SECURE_VIP_ADDRESS: &str = "eureka.secureVipAddress";
    /// `homePageUrl`.
    pub const HOME_PAGE_URL: &str = "eureka.homePageUrl";
    /// `statusPageUrl`.
    pub const STATUS_PAGE_URL: &str = "eureka.statusPageUrl";
    /// `healthCheckUrl` (also the neutral health check's `url`).
    pub const HEALTH_CHECK_URL: &str = "eureka.healthCheckUrl";
    /// `secureHealthCheckUrl`.
    pub const SECURE_HEALTH_CHECK_URL: &str = "eureka.secureHealthCheckUrl";
    /// `appGroupName`.
    pub const APP_GROUP_NAME: &str = "eureka.appGroupName";
    /// `asgName` (AWS auto-scaling group).
    pub const ASG_NAME: &str = "eureka.asgName";
    /// `overriddenStatus` when not `UNKNOWN` (the Eureka spelling, e.g. `OUT_OF_SERVICE`).
    pub const OVERRIDDEN_STATUS: &str = "eureka.overriddenStatus";
    /// `port.$` when the port is disabled (an enabled port is an `http://` endpoint).
    pub const PORT: &str = "eureka.port";
    /// `securePort.$` when the secure port is disabled (enabled: an `https://` endpoint).
    pub const SECURE_PORT: &str = "eureka.securePort";
    /// `hostName` when it differs from `ipAddr` (without the key, a register uses the
    /// endpoint's address as `hostName`: a service-center host name may not resolve elsewhere).
    pub const HOST_NAME: &str = "eureka.hostName";
    /// `countryId` when not 1.
    pub const COUNTRY_ID: &str = "eureka.countryId";
    /// `dataCenterInfo.name` (`MyOwn`, `Amazon`, `Netflix`), when not the default `MyOwn`.
    pub const DATA_CENTER_NAME: &str = "eureka.dataCenterInfo.name";
    /// `dataCenterInfo.@class`, with the name.
    pub const DATA_CENTER_CLASS: &str = "eureka.dataCenterInfo.class";
    /// Prefix of `dataCenterInfo.metadata` entries (Amazon: `instance-id`, `ami-id`, ...).
    pub const DATA_CENTER_METADATA_PREFIX: &str = "eureka.dataCenterInfo.metadata.";
    /// Instance document string fields and their keys.
    pub const STRING_FIELDS: &[(&str, &str)] = &[
        ("vipAddress", VIP_ADDRESS),
        ("secureVipAddress", SECURE_VIP_ADDRESS),
        ("homePageUrl", HOME_PAGE_URL),
        ("statusPageUrl", STATUS_PAGE_URL),
        ("healthCheckUrl", HEALTH_CHECK_URL),
        ("secureHealthCheckUrl", SECURE_HEALTH_CHECK_URL),
        ("appGroupName", APP_GROUP_NAME),
        ("asgName", ASG_NAME),
    ];
}

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use reqwest::{header, Method, StatusCode};
use serde_json::Value;
use syncer_plugin_api::{
    Error, Instance, Plugin, Result, Service, Snapshot, DEFAULT_DOMAIN_PROJECT,
};

use syncer_plugin_http::client::{rustls, segment, Client, Reply};
use syncer_wire_eureka::{field, xml};

/// Configuration of the [`EurekaPlugin`].
#[derive(Debug, Clone)]
pub struct Config {
    /// Eureka base URLs **including** the `/eureka` path, e.g. `http://127.0.0.1:8761/eureka`
    /// (from `--sc-addr`); a missing scheme means `http://`. Tried in order, with failover.
    pub endpoints: Vec<String>,
    /// Timeout of one HTTP request to one endpoint (connect included).
    pub request_timeout: Duration,
    /// TLS for `https://` endpoints: trusted CAs, client certificate, versions, cipher
    /// suites. Required when an endpoint is `https://` (the plugin refuses to build without
    /// it); unused for `http://`. Default: none.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// The tenant, `domain/project`, every listed app's service is reported under (Eureka has
    /// no tenants), so a Eureka site's apps land there at service-center sites
    /// (`--eureka-domain-project`). Not checked here: the daemon validates the shape
    /// ([`valid_domain_project`]). Default [`DEFAULT_DOMAIN_PROJECT`], the service-center
    /// syncer's choice.
    pub domain_project: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            endpoints: vec!["http://127.0.0.1:8761/eureka".to_owned()],
            request_timeout: Duration::from_secs(10),
            tls: None,
            domain_project: DEFAULT_DOMAIN_PROJECT.to_owned(),
        }
    }
}

/// Whether `text` is a `domain/project` pair as service-center accepts them in its
/// `X-Domain-Name` / `X-Domain-Project` headers: two non-empty parts of ASCII letters, digits,
/// `_`, `-` and `.`, each at most 64 bytes, separated by one `/`. `Err` says what is wrong.
///
/// # Errors
/// A sentence naming the fault, for the daemon's config error.
pub fn valid_domain_project(text: &str) -> std::result::Result<(), String> {
    let Some((domain, project)) = text.split_once('/') else {
        return Err("expected domain/project, e.g. default/default".to_owned());
    };
    for (what, part) in [("domain", domain), ("project", project)] {
        if part.is_empty() {
            return Err(format!("the {what} is empty (expected domain/project)"));
        }
        if part.len() > 64 {
            return Err(format!("the {what} is longer than 64 bytes"));
        }
        if !part
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        {
            return Err(format!(
                "the {what} {part:?} may hold only letters, digits, '_', '-' and '.'"
            ));
        }
    }
    Ok(())
}

/// The Eureka plugin. Cheap to share behind an `Arc`; safe to call concurrently.
#[derive(Debug)]
pub struct EurekaPlugin {
    client: Client,
    /// The local copy of the registry that [`Plugin::list`] keeps up to date with deltas. An
    /// async mutex: held across the fetch so concurrent lists do not fetch twice.
    local: tokio::sync::Mutex<LocalRegistry>,
    /// Full fetches done so far (`GET /apps/`).
    full_fetches: AtomicU64,
    /// Deltas applied and confirmed by the hash so far.
    deltas_applied: AtomicU64,
    /// The tenant listed services are reported under ([`Config::domain_project`]).
    domain_project: String,
}

/// The plugin's copy of the registry: app (upper case) → instance id → (Eureka status, for
/// the hash; the instance).
#[derive(Debug, Default)]
struct LocalRegistry {
    /// Whether the copy holds a full fetch (false: the next list fetches in full).
    valid: bool,
    apps: BTreeMap<String, BTreeMap<String, (&'static str, Instance)>>,
}

impl LocalRegistry {
    /// Replaces the copy with a full `applications` document.
    fn replace(&mut self, doc: &Value) -> std::result::Result<(), String> {
        let mut apps: BTreeMap<String, BTreeMap<String, (&'static str, Instance)>> =
            BTreeMap::new();
        for (name, instances) in wire::apps_of(doc)? {
            let service_id = wire::service_name(&name);
            let app = apps.entry(name).or_default();
            for v in instances {
                if let Some(i) = wire::to_instance(v, &service_id) {
                    app.insert(i.instance_id.clone(), (wire::eureka_status(v), i));
                }
            }
        }
        apps.retain(|_, a| !a.is_empty());
        self.apps = apps;
        self.valid = true;
        Ok(())
    }

    /// Applies a delta document (`ADDED`/`MODIFIED` put, `DELETED` remove) and says whether
    /// the copy's hash then equals the delta's `apps__hashcode`.
    fn apply_delta(&mut self, doc: &Value) -> std::result::Result<bool, String> {
        for (name, instances) in wire::apps_of(doc)? {
            let service_id = wire::service_name(&name);
            for v in instances {
                let Some(id) = field::instance_id(v) else {
                    continue;
                };
                match wire::action_type(v).as_str() {
                    "DELETED" => {
                        if let Some(app) = self.apps.get_mut(&name) {
                            app.remove(&id);
                            if app.is_empty() {
                                self.apps.remove(&name);
                            }
                        }
                    }
                    _ => {
                        if let Some(i) = wire::to_instance(v, &service_id) {
                            self.apps
                                .entry(name.clone())
                                .or_default()
                                .insert(id, (wire::eureka_status(v), i));
                        }
                    }
                }
            }
        }
        let expected = wire::apps_field(doc, "apps__hashcode").unwrap_or_default();
        Ok(self.hashcode() == expected)
    }

    fn hashcode(&self) -> String {
        syncer_wire_eureka::hashcode(
            self.apps
                .values()
                .flat_map(|a| a.values().map(|(status, _)| *status)),
        )
    }

    fn snapshot(&self) -> Snapshot {
        let mut snapshot = Snapshot::default();
        for (name, app) in &self.apps {
            snapshot.services.push(wire::app_to_service(name));
            snapshot
                .instances
                .extend(app.values().map(|(_, i)| i.clone()));
        }
        snapshot
    }
}

/// Decodes an answer as JSON or XML: by `Content-Type`, else by its first non-blank byte.
fn decode(reply: &Reply, what: &str) -> Result<Value> {
    let ctype = reply
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let first = reply
        .body
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .copied();
    let result = if ctype.contains("xml") || (!ctype.contains("json") && first == Some(b'<')) {
        xml::parse(&reply.body).map_err(|e| e.to_string())
    } else {
        serde_json::from_slice(&reply.body).map_err(|e| e.to_string())
    };
    result.map_err(|e| {
        Error::Malformed(format!(
            "{what}: {e}: {}",
            reply.text().chars().take(200).collect::<String>()
        ))
    })
}

/// Normalises one `--sc-addr` entry: trimmed, `http://` when the scheme is missing, no
/// trailing `/`.
fn normalise_endpoint(endpoint: &str) -> Option<String> {
    let endpoint = endpoint.trim().trim_end_matches('/');
    if endpoint.is_empty() {
        return None;
    }
    Some(if endpoint.contains("://") {
        endpoint.to_owned()
    } else {
        format!("http://{endpoint}")
    })
}

/// The Eureka app name (upper case) of a service: its serviceName, else its id.
fn app_name(service: &Service) -> String {
    let name = if service.service_name.is_empty() {
        &service.service_id
    } else {
        &service.service_name
    };
    name.to_uppercase()
}

/// The generic mapping of a non-2xx reply: 404 → `NotFound`, anything else → `Rejected`.
fn to_error(reply: &Reply, what: &str) -> Error {
    let message = format!("{what}: {}: {}", reply.status, reply.text());
    if reply.status == StatusCode::NOT_FOUND {
        Error::NotFound(message)
    } else {
        Error::Rejected(message)
    }
}

impl EurekaPlugin {
    /// Builds the plugin; no request is sent yet.
    ///
    /// # Errors
    /// [`Error::Rejected`] when no endpoint is configured or the HTTP client cannot be built.
    pub fn new(config: Config) -> Result<Self> {
        let endpoints = config
            .endpoints
            .iter()
            .filter_map(|e| normalise_endpoint(e))
            .collect();
        Ok(EurekaPlugin {
            client: Client::with_tls(endpoints, config.request_timeout, config.tls.clone())?,
            local: tokio::sync::Mutex::default(),
            full_fetches: AtomicU64::new(0),
            deltas_applied: AtomicU64::new(0),
            domain_project: config.domain_project,
        })
    }

    /// How many full fetches (`GET /apps/`) and confirmed deltas (`GET /apps/delta` whose
    /// hash matched) [`Plugin::list`] has done so far: (full, delta). For tests and metrics.
    pub fn fetch_counts(&self) -> (u64, u64) {
        (
            self.full_fetches.load(Ordering::Relaxed),
            self.deltas_applied.load(Ordering::Relaxed),
        )
    }

    /// Replaces the local copy with `GET {base}/apps/`.
    async fn fetch_full(&self, local: &mut LocalRegistry) -> Result<()> {
        local.valid = false;
        let reply = self.request(Method::GET, "/apps/", None).await?;
        if !reply.status.is_success() {
            return Err(to_error(&reply, "list apps"));
        }
        let doc = decode(&reply, "list apps")?;
        local
            .replace(&doc)
            .map_err(|e| Error::Malformed(format!("list apps: {e}")))?;
        self.full_fetches.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Applies `GET {base}/apps/delta` to the local copy; false when the copy must be fetched
    /// in full (the delta failed, or the hash does not match afterwards).
    async fn fetch_delta(&self, local: &mut LocalRegistry) -> bool {
        let reply = match self.request(Method::GET, "/apps/delta", None).await {
            Ok(reply) if reply.status.is_success() => reply,
            Ok(reply) => {
                tracing::debug!(status = %reply.status, "delta refused, fetching in full");
                return false;
            }
            Err(e) => {
                tracing::debug!(error = %e, "delta failed, fetching in full");
                return false;
            }
        };
        let applied = decode(&reply, "delta")
            .map_err(|e| e.to_string())
            .and_then(|doc| local.apply_delta(&doc));
        match applied {
            Ok(true) => {
                self.deltas_applied.fetch_add(1, Ordering::Relaxed);
                true
            }
            Ok(false) => {
                tracing::debug!("delta hash mismatch, fetching in full");
                false
            }
            Err(e) => {
                tracing::debug!(error = %e, "delta unreadable, fetching in full");
                false
            }
        }
    }

    /// One request: `path` below the base URL.
    async fn request(&self, method: Method, path: &str, body: Option<Vec<u8>>) -> Result<Reply> {
        self.client
            .send(|http, base| {
                let request = http
                    .request(method.clone(), format!("{base}{path}"))
                    .header(header::ACCEPT, "application/json");
                match &body {
                    Some(body) => request
                        .header(header::CONTENT_TYPE, "application/json")
                        .body(body.clone()),
                    None => request,
                }
            })
            .await
    }

    fn instance_path(service: &Service, instance_id: &str) -> String {
        format!(
            "/apps/{}/{}",
            segment(&app_name(service)),
            segment(instance_id)
        )
    }
}

#[async_trait::async_trait]
impl Plugin for EurekaPlugin {
    fn name(&self) -> &'static str {
        "eureka"
    }

    /// Every app and instance, of every status, from the local copy of the registry: the
    /// first call fetches it in full (`GET {base}/apps/`), later calls apply
    /// `GET {base}/apps/delta` and compare the copy's `apps__hashcode` with the delta's,
    /// fetching in full again on a mismatch or a failed delta (Netflix `DiscoveryClient`).
    async fn list(&self) -> Result<Snapshot> {
        let mut local = self.local.lock().await;
        if !(local.valid && self.fetch_delta(&mut local).await) {
            self.fetch_full(&mut local).await?;
        }
        let mut snapshot = local.snapshot();
        drop(local);
        if self.domain_project != DEFAULT_DOMAIN_PROJECT {
            for service in &mut snapshot.services {
                service.domain_project.clone_from(&self.domain_project);
            }
        }
        Ok(snapshot)
    }

    /// Eureka creates apps implicitly: no request, the lower-case service name.
    async fn ensure_service(&self, service: &Service) -> Result<String> {
        Ok(wire::service_name(&app_name(service)))
    }

    /// `POST {base}/apps/{APP}` with the instance document; any 2xx is success (Eureka answers
    /// 204). Returns `instance.instance_id`.
    async fn register(&self, service: &Service, instance: &Instance) -> Result<String> {
        let app = app_name(service);
        let body = serde_json::to_vec(&wire::register_body(&wire::service_name(&app), instance))
            .map_err(|e| Error::Rejected(format!("cannot encode instance: {e}")))?;
        let path = format!("/apps/{}", segment(&app));
        let reply = self.request(Method::POST, &path, Some(body)).await?;
        if !reply.status.is_success() {
            return Err(to_error(&reply, "register instance"));
        }
        if reply.status != StatusCode::NO_CONTENT {
            tracing::debug!(status = %reply.status, app = %app, "register answered other than 204");
        }
        Ok(instance.instance_id.clone())
    }

    /// `PUT {base}/apps/{APP}/{id}`; 404 → [`Error::NotFound`] (register again).
    async fn heartbeat(&self, service: &Service, instance_id: &str) -> Result<()> {
        let path = Self::instance_path(service, instance_id);
        let reply = self.request(Method::PUT, &path, None).await?;
        if reply.status.is_success() {
            Ok(())
        } else {
            Err(to_error(&reply, "heartbeat"))
        }
    }

    /// `DELETE {base}/apps/{APP}/{id}`; 404 (already gone) is success.
    async fn unregister(&self, service: &Service, instance_id: &str) -> Result<()> {
        let path = Self::instance_path(service, instance_id);
        let reply = self.request(Method::DELETE, &path, None).await?;
        if reply.status.is_success() || reply.status == StatusCode::NOT_FOUND {
            Ok(())
        } else {
            Err(to_error(&reply, "unregister"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Value {
        let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        serde_json::from_slice(&std::fs::read(path).expect("fixture")).expect("json")
    }

    #[test]
    fn domain_project_needs_two_plain_non_empty_parts() {
        for good in ["default/default", "a/b", "my-domain/proj_1.x"] {
            assert_eq!(valid_domain_project(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "a",
            "a/",
            "/b",
            "a/b/c",
            "a b/c",
            "a/\u{e9}",
            &"x".repeat(65),
        ] {
            assert!(valid_domain_project(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn a_delta_is_applied_to_the_local_copy_and_checked_against_the_hash() {
        let mut local = LocalRegistry::default();
        local
            .replace(&fixture("apps-response-modern.json"))
            .expect("full");
        assert!(local.valid);
        // A MODIFIED entry whose host name changed; the hash still says UP_1_.
        assert!(local
            .apply_delta(&fixture("delta-response.json"))
            .expect("delta"));
        let snapshot = local.snapshot();
        assert_eq!(snapshot.instances.len(), 1);
        assert_eq!(
            snapshot.instances[0].properties[keys::HOST_NAME],
            "modified-host"
        );
        // An ADDED instance of a new app, and a hash that says two: consistent.
        let added: Value = serde_json::json!({"applications": {"versions__delta": "4",
            "apps__hashcode": "DOWN_1_UP_1_", "application": {"name": "BAR", "instance": {
                "instanceId": "b1", "hostName": "b", "app": "BAR", "ipAddr": "10.0.0.2",
                "status": "DOWN", "actionType": "ADDED"}}}});
        assert!(local.apply_delta(&added).expect("delta"));
        assert_eq!(local.snapshot().services.len(), 2);
        // Deleting it while the server's hash still counts it: a mismatch (fetch in full).
        let mut deleted = added.clone();
        deleted["applications"]["application"]["instance"]["actionType"] = "DELETED".into();
        assert!(!local.apply_delta(&deleted).expect("delta"));
        assert_eq!(local.snapshot().services.len(), 1);
    }

    /// A Eureka server that answers only with basic auth `u:p`: `GET /eureka/apps/` with the
    /// XML fixture (gzip when asked), `GET /eureka/apps/delta` with an empty delta whose hash
    /// does not match.
    async fn xml_server() -> String {
        use axum::http::{header as h, HeaderMap, StatusCode as S};
        use axum::response::IntoResponse;
        use std::io::Write;
        async fn answer(headers: HeaderMap, body: &'static [u8]) -> axum::response::Response {
            // "u:p" in base64.
            if headers.get(h::AUTHORIZATION).and_then(|v| v.to_str().ok()) != Some("Basic dTpw") {
                return S::UNAUTHORIZED.into_response();
            }
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            enc.write_all(body).expect("gzip");
            (
                [
                    (h::CONTENT_TYPE, "application/xml"),
                    (h::CONTENT_ENCODING, "gzip"),
                ],
                enc.finish().expect("gzip"),
            )
                .into_response()
        }
        let full: &'static [u8] = include_bytes!("../tests/fixtures/apps-response.xml");
        let app = axum::Router::new()
            .route(
                "/eureka/apps/",
                axum::routing::get(move |headers: HeaderMap| answer(headers, full)),
            )
            .route(
                "/eureka/apps/delta",
                axum::routing::get(|headers: HeaderMap| {
                    answer(
                        headers,
                        b"<applications><versions__delta>2</versions__delta>\
                          <apps__hashcode>UP_5_</apps__hashcode></applications>",
                    )
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://u:p@{addr}/eureka")
    }

    #[tokio::test]
    async fn xml_gzip_and_basic_auth_from_a_second_server_and_a_hash_mismatch_refetches() {
        let dead = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind")
            .local_addr()
            .expect("addr");
        let plugin = EurekaPlugin::new(Config {
            endpoints: vec![format!("http://{dead}/eureka"), xml_server().await],
            request_timeout: Duration::from_secs(5),
            ..Default::default()
        })
        .expect("builds");
        let snapshot = plugin.list().await.expect("list");
        assert_eq!(snapshot.services.len(), 2);
        assert_eq!(snapshot.instances.len(), 4);
        assert_eq!(plugin.fetch_counts(), (1, 0));
        // The delta leaves the copy at UP_4_, the server says UP_5_: fetch in full again.
        assert_eq!(plugin.list().await.expect("list").instances.len(), 4);
        assert_eq!(plugin.fetch_counts(), (2, 0));
    }

    #[test]
    fn endpoints_are_normalised() {
        assert_eq!(
            normalise_endpoint("127.0.0.1:8761/eureka/").as_deref(),
            Some("http://127.0.0.1:8761/eureka")
        );
        assert_eq!(normalise_endpoint(""), None);
    }

    #[test]
    fn app_names_are_upper_case_service_names() {
        let service = Service {
            service_name: "account-server".into(),
            ..Service::default()
        };
        assert_eq!(app_name(&service), "ACCOUNT-SERVER");
        let service = Service {
            service_id: "hello".into(),
            ..Service::default()
        };
        assert_eq!(app_name(&service), "HELLO");
    }

    #[test]
    fn instance_paths_encode_the_id() {
        let service = Service {
            service_name: "svc".into(),
            ..Service::default()
        };
        assert_eq!(
            EurekaPlugin::instance_path(&service, "10.0.0.1:svc:80"),
            "/apps/SVC/10.0.0.1%3Asvc%3A80"
        );
    }

    #[tokio::test]
    async fn ensure_service_returns_the_lower_case_name_without_a_request() {
        let plugin = EurekaPlugin::new(Config {
            endpoints: vec!["http://127.0.0.1:1/eureka".into()],
            request_timeout: Duration::from_millis(100),
            ..Default::default()
        })
        .expect("builds");
        let service = Service {
            service_name: "Account-Server".into(),
            ..Service::default()
        };
        assert_eq!(
            plugin.ensure_service(&service).await.expect("no request"),
            "account-server"
        );
    }
}
