//! The `servicecenter` plugin: a service-center v4 REST client implementing
//! [`syncer_plugin_api::Plugin`], for a real Apache ServiceComb service-center or the syncer's
//! built-in core.
//!
//! Where it sits (DESIGN.md): the exporter calls [`Plugin::list`] to read the local registry;
//! the importer calls [`Plugin::ensure_service`], [`Plugin::register`], [`Plugin::heartbeat`] and
//! [`Plugin::unregister`] to mirror the other clusters' instances into it.
//!
//! What it sends, and how that differs from the service-center syncer 1.3.0
//! (`syncer/plugins/servicecenter`):
//! - the tenant goes in the `X-Domain-Name` header (domain) and the path (project), from
//!   [`Service::domain_project`] (`domain/project`);
//! - [`Plugin::list`] reads `GET /v4/{project}/registry/microservices` and each service's
//!   `.../instances` for every configured tenant ([`Config::tenants`]), or the all-tenant
//!   `GET /v4/default/admin/dump?scope=all` when [`Config::use_admin_dump`] is set (the
//!   built-in core dumps only the caller's tenant without `scope=all`; service-center
//!   ignores the parameter and always dumps every tenant). Instances of **every**
//!   status are listed (1.3.0 kept only `UP`); service-center's own `SERVICECENTER` service is
//!   left out (1.3.0 exported it);
//! - the client chooses the ids: the service id (when [`Service::service_id`] is set) and the
//!   instance id ([`Instance::instance_id`]), so writes are idempotent (DESIGN.md decision 3;
//!   1.3.0 let the server pick new instance ids);
//! - resolved service ids are cached, so a steady-state tick costs one heartbeat per instance,
//!   not an existence check per instance (1.3.0 weakness, servicecomb-notes a.12);
//! - endpoints are tried in order with failover to the next, remembering the last good one
//!   (see `client`);
//! - [`Plugin::changes`] reads `GET /v4/default/admin/changes?since=R&wait=MS&scope=all`, the built-in
//!   core's change log (a syncer extension), so a change costs O(change) instead of a whole
//!   dump; a registry without it (404: a real service-center) is asked once, then the caller
//!   lists as before;
//! - [`Plugin::register_batch`] sends up to 1000 registrations of one tenant in one
//!   `POST /v4/{project}/registry/instances/action?type=register` (a syncer extension of the
//!   built-in core); a registry that refuses it (a real service-center: unknown type) is
//!   asked once, then registrations go one by one;
//! - with [`Config::auth`], it logs in to a service-center with RBAC on (`POST /v4/token`)
//!   and sends `Authorization: Bearer` on every request; the token is renewed before it
//!   expires and a 401 logs in again and retries the request once (see `login`). 1.3.0 had
//!   no login.
//!
//! Errors map onto [`syncer_plugin_api::Error`]: transport errors and 5xx →
//! `Unavailable`; `404`, `400017` (instance does not exist) and `400012` (micro-service does not
//! exist) on a heartbeat → `NotFound`; other 4xx → `Rejected` with the registry's
//! `errorCode`/`errorMessage`/`detail`; an undecodable body → `Malformed`.

mod endpoint;
mod login;
mod wire;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use reqwest::{header, Method};
use syncer_plugin_api::{Changes, Error, Instance, Listed, Plugin, Result, Service, Snapshot};

pub use login::{Credentials, Password};
use syncer_plugin_http::client::{rustls, segment, Client, Reply};
use wire::{
    failure, CreateServiceRequest, ErrorBody, IdReply, InstanceExt, InstancesReply, MicroService,
    MicroServiceInstance, RegisterInstanceRequest, ServiceExt, ServicesReply,
};

use syncer_wire_servicecenter::error::{
    INSTANCE_NOT_EXISTS as INSTANCE_NOT_EXIST, SERVICE_ALREADY_EXISTS,
    SERVICE_NOT_EXISTS as SERVICE_NOT_EXIST, SERVICE_VERSION_NOT_EXISTS as VERSION_NOT_EXIST,
};

/// Configuration of the [`ServiceCenterPlugin`].
#[derive(Debug, Clone)]
pub struct Config {
    /// Registry base URLs, e.g. `http://127.0.0.1:30100` (from `--sc-addr`); a missing scheme
    /// means `http://`. Tried in order, with failover.
    pub endpoints: Vec<String>,
    /// Timeout of one HTTP request to one endpoint (connect included).
    pub request_timeout: Duration,
    /// Tenants (`domain/project`) that [`Plugin::list`] reads with the per-tenant listing.
    /// Default: `["default/default"]`.
    pub tenants: Vec<String>,
    /// Read the whole registry, all tenants, with `GET /v4/default/admin/dump` (service-center
    /// 1.3.0 and later) instead of the per-tenant listing. Default `false`: the built-in core
    /// does not promise the dump.
    pub use_admin_dump: bool,
    /// TLS for `https://` endpoints: trusted CAs, client certificate, versions, cipher
    /// suites. Required when an endpoint is `https://` (the plugin refuses to build without
    /// it); unused for `http://`. Default: none.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// The service-center account (RBAC) to log in as: the plugin gets a token with
    /// `POST /v4/token` before its first request and sends it as `Authorization: Bearer` on
    /// every request, renewing it before it expires. Do not combine with `user:pass@` in an
    /// endpoint (that is sent as `Authorization: Basic`). Default: none (no login).
    pub auth: Option<Credentials>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            endpoints: vec!["http://127.0.0.1:30100".to_owned()],
            request_timeout: Duration::from_secs(10),
            tenants: vec![syncer_plugin_api::DEFAULT_DOMAIN_PROJECT.to_owned()],
            use_admin_dump: false,
            tls: None,
            auth: None,
        }
    }
}

/// What identifies a service for the existence check: a 128-bit hash of tenant, appId,
/// serviceName, version and environment (16 bytes a key where the strings were 300: at
/// 100,000 imported services the cache is that many entries). The hashers' keys are random
/// per process, so names cannot be chosen to collide.
type ServiceKey = (u64, u64);

fn service_key(service: &Service) -> ServiceKey {
    use std::hash::{BuildHasher, Hash, Hasher};
    static HASHERS: std::sync::OnceLock<(
        std::collections::hash_map::RandomState,
        std::collections::hash_map::RandomState,
    )> = std::sync::OnceLock::new();
    let (a, b) = HASHERS.get_or_init(Default::default);
    let (domain, project) = wire::split_domain_project(&service.domain_project);
    let parts = [
        domain,
        project,
        &service.app_id,
        &service.service_name,
        &service.version,
        &service.environment,
    ];
    let (mut ha, mut hb) = (a.build_hasher(), b.build_hasher());
    parts.hash(&mut ha);
    parts.hash(&mut hb);
    (ha.finish(), hb.finish())
}

/// The service-center plugin. Cheap to share behind an `Arc`; safe to call concurrently.
#[derive(Debug)]
pub struct ServiceCenterPlugin {
    client: Arc<Client>,
    tenants: Vec<String>,
    use_admin_dump: bool,
    /// Service ids already resolved by [`Plugin::ensure_service`], so steady state does not
    /// re-check existence each tick. A std mutex: it is never held across an await.
    service_ids: Mutex<HashMap<ServiceKey, String>>,
    /// The service whose find answers carry the revision token (see [`Plugin::revision`]),
    /// taken from the last listing, and the last token seen. A std mutex, never held across
    /// an await.
    revision_probe: Mutex<(Option<Service>, Option<String>)>,
    /// Timeout of one request; a change read waits at most half of it.
    request_timeout: Duration,
    /// Set once the registry answered a change read with 404 (no change log).
    no_change_log: AtomicBool,
    /// Set once the registry refused a batch registration (no batch registration).
    no_batch_register: AtomicBool,
    /// The account's login and token, with [`Config::auth`].
    session: Option<login::Session>,
}

/// Registrations per batch request (the built-in core takes up to 1000).
const BATCH_REGISTER: usize = 1000;

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

/// Decodes a 2xx JSON body.
fn decode<T: serde::de::DeserializeOwned>(reply: &Reply, what: &str) -> Result<T> {
    serde_json::from_slice(&reply.body).map_err(|e| {
        Error::Malformed(format!(
            "{what}: {e}: {}",
            reply.text().chars().take(200).collect::<String>()
        ))
    })
}

/// The generic mapping of a non-2xx reply: 404 → `NotFound`, anything else → `Rejected`.
fn to_error(reply: &Reply, what: &str) -> Error {
    let (_, message) = failure(reply);
    if reply.status == reqwest::StatusCode::NOT_FOUND {
        Error::NotFound(format!("{what}: {message}"))
    } else {
        Error::Rejected(format!("{what}: {message}"))
    }
}

/// Item positions grouped by tenant and cut into requests of at most [`BATCH_REGISTER`].
fn tenant_chunks<'a>(items: impl Iterator<Item = (usize, &'a str)>) -> Vec<(&'a str, Vec<usize>)> {
    let mut by_tenant: HashMap<&str, Vec<usize>> = HashMap::new();
    for (n, tenant) in items {
        by_tenant.entry(tenant).or_default().push(n);
    }
    by_tenant
        .into_iter()
        .flat_map(|(tenant, positions)| {
            positions
                .chunks(BATCH_REGISTER)
                .map(|chunk| (tenant, chunk.to_vec()))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// `answers` when there is one per item sent, else [`Error::Malformed`].
fn same_length<T>(answers: Vec<T>, sent: usize, what: &str) -> Result<Vec<T>> {
    if answers.len() == sent {
        Ok(answers)
    } else {
        Err(Error::Malformed(format!(
            "{what}: {} answers for {sent} items",
            answers.len()
        )))
    }
}

/// Every item's result; an item no request answered is [`Error::Malformed`] (not expected).
fn answered<T>(results: Vec<Option<Result<T>>>) -> Vec<Result<T>> {
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(Error::Malformed("no answer".into()))))
        .collect()
}

impl ServiceCenterPlugin {
    /// One request of the built-in core's batch (`POST P/instances/action?type=register`)
    /// for `tenant`. `Ok(None)` when the registry refuses it (4xx: a real service-center
    /// has no such batch), remembered so that later batches are not tried.
    async fn batch(
        &self,
        tenant: &str,
        request: &wire::BatchRegisterRequest,
        what: &str,
    ) -> Result<Option<wire::BatchRegisterReply>> {
        if self.no_batch_register.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let (domain, project) = wire::split_domain_project(tenant);
        let path = format!("/v4/{}/registry/instances/action", segment(project));
        let body = serde_json::to_vec(request)
            .map_err(|e| Error::Rejected(format!("{what}: cannot encode: {e}")))?;
        let reply = self
            .request(
                Method::POST,
                domain,
                &path,
                &[("type", "register")],
                Some(body),
            )
            .await?;
        if reply.status.is_client_error() {
            self.no_batch_register.store(true, Ordering::Relaxed);
            let (_, message) = failure(&reply);
            tracing::info!(reason = %message, "the registry has no batch creation and registration; writing one by one");
            return Ok(None);
        }
        if !reply.status.is_success() {
            return Err(to_error(&reply, what));
        }
        Ok(Some(decode(&reply, what)?))
    }

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
        let mut tenants = config.tenants;
        if tenants.is_empty() {
            tenants.push(syncer_plugin_api::DEFAULT_DOMAIN_PROJECT.to_owned());
        }
        Ok(ServiceCenterPlugin {
            client: Arc::new(Client::with_tls(
                endpoints,
                config.request_timeout,
                config.tls.clone(),
            )?),
            tenants,
            use_admin_dump: config.use_admin_dump,
            service_ids: Mutex::new(HashMap::new()),
            revision_probe: Mutex::new((None, None)),
            request_timeout: config.request_timeout,
            no_change_log: AtomicBool::new(false),
            no_batch_register: AtomicBool::new(false),
            session: config.auth.map(login::Session::new),
        })
    }

    /// [`Client::send`], with the account's token when the plugin logs in: a 401 logs in
    /// again and sends the request once more.
    async fn send<F>(&self, build: F) -> Result<Reply>
    where
        F: Fn(&reqwest::Client, &str) -> reqwest::RequestBuilder,
    {
        let Some(session) = &self.session else {
            return self.client.send(build).await;
        };
        let token = session.token(&self.client).await?;
        let reply = self
            .client
            .send(|http, base| token.authorize(build(http, base)))
            .await?;
        if reply.status != reqwest::StatusCode::UNAUTHORIZED {
            return Ok(reply);
        }
        self.token_refused(session, &reply);
        let token = session.refused(&self.client, &token).await?;
        self.client
            .send(|http, base| token.authorize(build(http, base)))
            .await
    }

    /// [`Client::send_streaming`], with the account's token as [`ServiceCenterPlugin::send`].
    async fn send_streaming<F>(
        &self,
        build: F,
    ) -> Result<std::result::Result<reqwest::Response, Reply>>
    where
        F: Fn(&reqwest::Client, &str) -> reqwest::RequestBuilder,
    {
        let Some(session) = &self.session else {
            return self.client.send_streaming(build).await;
        };
        let token = session.token(&self.client).await?;
        let answer = self
            .client
            .send_streaming(|http, base| token.authorize(build(http, base)))
            .await?;
        match answer {
            Err(reply) if reply.status == reqwest::StatusCode::UNAUTHORIZED => {
                self.token_refused(session, &reply);
                let token = session.refused(&self.client, &token).await?;
                self.client
                    .send_streaming(|http, base| token.authorize(build(http, base)))
                    .await
            }
            answer => Ok(answer),
        }
    }

    fn token_refused(&self, session: &login::Session, reply: &Reply) {
        let (_, reason) = failure(reply);
        tracing::debug!(account = %session.account(), %reason, "the registry refused the token; logging in again");
    }

    /// One request: `path` below the base URL, the tenant's domain in `X-Domain-Name`.
    async fn request(
        &self,
        method: Method,
        domain: &str,
        path: &str,
        query: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Result<Reply> {
        self.send(|http, base| {
            let mut request = http
                .request(method.clone(), format!("{base}{path}"))
                .header("X-Domain-Name", domain)
                .header(header::ACCEPT, "application/json");
            if !query.is_empty() {
                request = request.query(query);
            }
            if let Some(body) = &body {
                request = request
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(body.clone());
            }
            request
        })
        .await
    }

    fn cached_service_id(&self, key: &ServiceKey) -> Option<String> {
        self.service_ids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned()
    }

    fn cache_service_id(&self, key: ServiceKey, service_id: &str) {
        self.service_ids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, service_id.to_owned());
    }

    fn forget_service_id(&self, service: &Service) {
        let key = service_key(service);
        let mut ids = self.service_ids.lock().unwrap_or_else(|p| p.into_inner());
        ids.remove(&key);
        // Also drop any entry that resolved to this id under another key.
        if !service.service_id.is_empty() {
            ids.retain(|_, id| *id != service.service_id);
        }
    }

    /// `GET P/existence?type=microservice...` → the service id, `None` when absent.
    async fn existence(&self, service: &Service) -> Result<Option<String>> {
        let (domain, project) = wire::split_domain_project(&service.domain_project);
        let path = format!("/v4/{}/registry/existence", segment(project));
        let reply = self
            .request(
                Method::GET,
                domain,
                &path,
                &[
                    ("type", "microservice"),
                    ("appId", &service.app_id),
                    ("serviceName", &service.service_name),
                    ("version", &service.version),
                    ("env", &service.environment),
                ],
                None,
            )
            .await?;
        if reply.status.is_success() {
            let id: IdReply = decode(&reply, "existence")?;
            return Ok(Some(id.service_id).filter(|id| !id.is_empty()));
        }
        match failure(&reply) {
            (Some(SERVICE_NOT_EXIST | VERSION_NOT_EXIST), _) => Ok(None),
            _ => Err(to_error(&reply, "service existence")),
        }
    }

    /// `POST P/microservices` → the service id; `Ok(None)` on 400010 (the id or index is taken).
    async fn create_service(&self, service: &Service) -> Result<Option<String>> {
        let (domain, project) = wire::split_domain_project(&service.domain_project);
        let path = format!("/v4/{}/registry/microservices", segment(project));
        let body = serde_json::to_vec(&CreateServiceRequest {
            service: &MicroService::from_service(service),
        })
        .map_err(|e| Error::Rejected(format!("cannot encode service: {e}")))?;
        let reply = self
            .request(Method::POST, domain, &path, &[], Some(body))
            .await?;
        if reply.status.is_success() {
            let id: IdReply = decode(&reply, "create service")?;
            if id.service_id.is_empty() {
                return Err(Error::Malformed("create service: empty serviceId".into()));
            }
            return Ok(Some(id.service_id));
        }
        match failure(&reply) {
            (Some(SERVICE_ALREADY_EXISTS), _) => Ok(None),
            _ => Err(to_error(&reply, "create service")),
        }
    }

    /// `POST S/instances` → the instance id.
    async fn register_once(
        &self,
        service: &Service,
        service_id: &str,
        instance: &Instance,
    ) -> Result<String> {
        let (domain, project) = wire::split_domain_project(&service.domain_project);
        let path = format!(
            "/v4/{}/registry/microservices/{}/instances",
            segment(project),
            segment(service_id)
        );
        let body = serde_json::to_vec(&RegisterInstanceRequest {
            instance: MicroServiceInstance::from_instance(instance),
        })
        .map_err(|e| Error::Rejected(format!("cannot encode instance: {e}")))?;
        let reply = self
            .request(Method::POST, domain, &path, &[], Some(body))
            .await?;
        if reply.status.is_success() {
            let id: IdReply = decode(&reply, "register instance")?;
            return Ok(if id.instance_id.is_empty() {
                instance.instance_id.clone()
            } else {
                id.instance_id
            });
        }
        match failure(&reply) {
            (Some(SERVICE_NOT_EXIST), message) => Err(Error::NotFound(message)),
            _ => Err(to_error(&reply, "register instance")),
        }
    }

    /// The per-tenant listing of one tenant into `snapshot`.
    async fn list_tenant(&self, domain_project: &str, snapshot: &mut Snapshot) -> Result<()> {
        let (domain, project) = wire::split_domain_project(domain_project);
        let tenant = format!("{domain}/{project}");
        let base = format!("/v4/{}/registry/microservices", segment(project));
        let reply = self.request(Method::GET, domain, &base, &[], None).await?;
        if !reply.status.is_success() {
            return Err(to_error(&reply, "list services"));
        }
        let services: ServicesReply = decode(&reply, "list services")?;
        for service in services.services {
            if wire::is_servicecenter_itself(&service) || service.service_id.is_empty() {
                continue;
            }
            let path = format!("{base}/{}/instances", segment(&service.service_id));
            let reply = self.request(Method::GET, domain, &path, &[], None).await?;
            if !reply.status.is_success() {
                match failure(&reply) {
                    // Deleted between the two reads: leave it out.
                    (Some(SERVICE_NOT_EXIST), _) => continue,
                    _ => return Err(to_error(&reply, "list instances")),
                }
            }
            let instances: InstancesReply = decode(&reply, "list instances")?;
            snapshot.instances.extend(
                instances
                    .instances
                    .iter()
                    .map(|i| i.to_instance(&service.service_id)),
            );
            snapshot.services.push(service.to_service(&tenant));
        }
        Ok(())
    }

    /// The all-tenant `admin/dump` read, record by record as the body arrives (it is parsed
    /// on a blocking thread, never held whole), and its `X-Resource-Revision` (the built-in
    /// core sends one).
    async fn dump_each(&self, visit: &mut (dyn FnMut(Listed) + Send)) -> Result<Option<u64>> {
        let answer = self
            .send_streaming(|http, base| {
                // `scope=all`: the built-in core dumps only the caller's tenant unless
                // asked for all; service-center ignores it (its dump is all tenants).
                http.get(format!("{base}/v4/default/admin/dump?scope=all"))
                    .header("X-Domain-Name", "default")
                    .header(header::ACCEPT, "application/json")
            })
            .await?;
        let mut response = match answer {
            Ok(response) => response,
            Err(reply) => return Err(to_error(&reply, "admin dump")),
        };
        let revision = response
            .headers()
            .get("X-Resource-Revision")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok());
        let endpoint = response.url().origin().ascii_serialization();
        let (chunks_tx, chunks_rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(DUMP_CHUNKS);
        let (records_tx, mut records_rx) = tokio::sync::mpsc::channel::<Vec<Listed>>(DUMP_CHUNKS);
        let parser = tokio::task::spawn_blocking(move || {
            wire::parse_dump(ChunkReader::new(chunks_rx), &mut |batch| {
                records_tx.blocking_send(batch).is_ok()
            })
        });
        let feed = async move {
            loop {
                match response.chunk().await {
                    Ok(Some(chunk)) => {
                        if chunks_tx.send(chunk).await.is_err() {
                            return Ok(()); // the parser stopped; it says why
                        }
                    }
                    Ok(None) => return Ok(()),
                    Err(e) => return Err(e),
                }
            }
        };
        let consume = async {
            while let Some(batch) = records_rx.recv().await {
                for record in batch {
                    visit(record);
                }
            }
        };
        let (fed, ()) = tokio::join!(feed, consume);
        let parsed = parser
            .await
            .map_err(|e| Error::Malformed(format!("admin dump: parser failed: {e}")))?;
        if let Err(e) = fed {
            return Err(Error::Unavailable {
                endpoint,
                message: format!("reading the admin dump: {e}"),
            });
        }
        parsed.map_err(|e| Error::Malformed(format!("admin dump: {e}")))?;
        Ok(revision)
    }

    /// The all-tenant `admin/dump` read as a snapshot, and its revision.
    async fn list_dump(&self) -> Result<(Snapshot, Option<u64>)> {
        let mut snapshot = Snapshot::default();
        let revision = self
            .dump_each(&mut |record| match record {
                Listed::Service(s) => snapshot.services.push(s),
                Listed::Instance(i) => snapshot.instances.push(i),
            })
            .await?;
        let services: HashSet<&str> = snapshot
            .services
            .iter()
            .map(|s| s.service_id.as_str())
            .collect();
        let instances = std::mem::take(&mut snapshot.instances)
            .into_iter()
            .filter(|i| services.contains(i.service_id.as_str()))
            .collect();
        drop(services);
        snapshot.instances = instances;
        Ok((snapshot, revision))
    }
}

/// Body chunks of a dump in flight between the reading task and the parser.
const DUMP_CHUNKS: usize = 8;

/// A blocking [`std::io::Read`] over body chunks sent from an async task (for a parser on a
/// blocking thread); the end of the channel is the end of the body.
struct ChunkReader {
    chunks: tokio::sync::mpsc::Receiver<bytes::Bytes>,
    current: bytes::Bytes,
}

impl ChunkReader {
    fn new(chunks: tokio::sync::mpsc::Receiver<bytes::Bytes>) -> ChunkReader {
        ChunkReader {
            chunks,
            current: bytes::Bytes::new(),
        }
    }
}

impl std::io::Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.chunks.blocking_recv() {
                Some(chunk) => self.current = chunk,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        bytes::Buf::advance(&mut self.current, n);
        Ok(n)
    }
}

#[async_trait::async_trait]
impl Plugin for ServiceCenterPlugin {
    fn name(&self) -> &'static str {
        "servicecenter"
    }

    async fn list(&self) -> Result<Snapshot> {
        Ok(self.list_with_revision().await?.0)
    }

    /// With the admin dump, parsed as it arrives; otherwise the per-tenant listing.
    async fn list_each(&self, visit: &mut (dyn FnMut(Listed) + Send)) -> Result<Option<u64>> {
        if !self.use_admin_dump {
            let (snapshot, revision) = self.list_with_revision().await?;
            syncer_plugin_api::visit_snapshot(snapshot, visit);
            return Ok(revision);
        }
        self.dump_each(visit).await
    }

    /// The revision is known with the admin dump of the built-in core only.
    async fn list_with_revision(&self) -> Result<(Snapshot, Option<u64>)> {
        let (snapshot, revision) = if self.use_admin_dump {
            self.list_dump().await?
        } else {
            let mut snapshot = Snapshot::default();
            for tenant in &self.tenants {
                self.list_tenant(tenant, &mut snapshot).await?;
            }
            (snapshot, None)
        };
        let mut probe = self
            .revision_probe
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let still_there = probe.0.as_ref().is_some_and(|p| {
            snapshot
                .services
                .iter()
                .any(|s| s.service_id == p.service_id)
        });
        if !still_there {
            *probe = (snapshot.services.first().cloned(), None);
        }
        drop(probe);
        Ok((snapshot, revision))
    }

    /// `GET /v4/default/admin/changes?since=R&wait=MS` (wait capped at half the request
    /// timeout): 200 → the changes, 410 → relist, 404 → `None` from then on.
    async fn changes(&self, since: u64, wait: Duration, imported: bool) -> Result<Option<Changes>> {
        if !self.use_admin_dump || self.no_change_log.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let wait = wait.min(self.request_timeout / 2);
        let (since_text, wait_text) = (since.to_string(), wait.as_millis().to_string());
        let mut query = vec![
            ("since", since_text.as_str()),
            ("wait", wait_text.as_str()),
            ("scope", "all"),
        ];
        if !imported {
            query.push(("exceptProperty", syncer_plugin_api::ORIGIN_CLUSTER));
        }
        let reply = self
            .request(
                Method::GET,
                "default",
                "/v4/default/admin/changes",
                &query,
                None,
            )
            .await?;
        match reply.status {
            s if s.is_success() => {
                let changes: wire::ChangesReply = decode(&reply, "change read")?;
                Ok(Some(Changes::Since(changes.into_change_set())))
            }
            reqwest::StatusCode::GONE => Ok(Some(Changes::Relist)),
            reqwest::StatusCode::NOT_FOUND => {
                self.no_change_log.store(true, Ordering::Relaxed);
                tracing::info!("the registry has no change log; following it by listing");
                Ok(None)
            }
            _ => Err(to_error(&reply, "change read")),
        }
    }

    /// The `X-Resource-Revision` of a find for one known service (with `rev`, so an
    /// unchanged registry answers 304 with no body). The built-in core's revision covers the
    /// whole registry; service-center 1.3.0's covers the found instances only, so against a
    /// real service-center the token catches that service's changes and the caller's
    /// periodic listing catches the rest. `None` until a listing has found a service.
    async fn revision(&self) -> Result<Option<String>> {
        let (service, last) = self
            .revision_probe
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let Some(service) = service else {
            return Ok(None);
        };
        let (domain, project) = wire::split_domain_project(&service.domain_project);
        let mut query = vec![
            ("appId", service.app_id.as_str()),
            ("serviceName", service.service_name.as_str()),
            ("version", service.version.as_str()),
            ("env", service.environment.as_str()),
        ];
        if let Some(last) = last.as_deref() {
            query.push(("rev", last));
        }
        let path = format!("/v4/{}/registry/instances", segment(project));
        let reply = self
            .request(Method::GET, domain, &path, &query, None)
            .await?;
        let token = reply
            .headers
            .get("X-Resource-Revision")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut probe = self
            .revision_probe
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match token {
            Some(token)
                if reply.status.is_success()
                    || reply.status == reqwest::StatusCode::NOT_MODIFIED =>
            {
                probe.1 = Some(token.clone());
                Ok(Some(token))
            }
            // The probed service went away or the registry gives no token: list next time.
            _ => {
                *probe = (None, None);
                Ok(None)
            }
        }
    }

    /// Create (with `service.service_id` as the chosen id when set), existence check when
    /// the create conflicts; cached per (tenant, appId, serviceName, version, environment).
    async fn ensure_service(&self, service: &Service) -> Result<String> {
        let key = service_key(service);
        if let Some(id) = self.cached_service_id(&key) {
            return Ok(id);
        }
        // Create first: service-center answers a create of an existing key with its id
        // (200), or 400010 when the chosen id conflicts; only then ask for the existing id.
        // One request per new service instead of two.
        let id = match self.create_service(service).await? {
            Some(id) => id,
            None => self.existence(service).await?.ok_or_else(|| {
                Error::Rejected(format!(
                    "service id {} is taken by another service",
                    service.service_id
                ))
            })?,
        };
        self.cache_service_id(key, &id);
        Ok(id)
    }

    /// Registers under `service.service_id` (resolving it with `ensure_service` when empty).
    /// When service-center says the service is gone (400012), forgets the cached id, ensures
    /// the service again and retries once.
    async fn register(&self, service: &Service, instance: &Instance) -> Result<String> {
        let service_id = if service.service_id.is_empty() {
            self.ensure_service(service).await?
        } else {
            service.service_id.clone()
        };
        match self.register_once(service, &service_id, instance).await {
            Err(Error::NotFound(message)) => {
                tracing::debug!(service_id = %service_id, %message, "service gone, creating it again");
                self.forget_service_id(service);
                let service_id = self.ensure_service(service).await?;
                self.register_once(service, &service_id, instance).await
            }
            other => other,
        }
    }

    /// Up to `BATCH_REGISTER` (1000) services of one tenant per request (the built-in core's
    /// batch, `services` part), cached like [`Plugin::ensure_service`]'s; a refused item
    /// (e.g. 400010, its chosen id taken) is an error: ensure it alone.
    async fn ensure_services(&self, services: &[&Service]) -> Result<Option<Vec<Result<String>>>> {
        let mut results: Vec<Option<Result<String>>> = services
            .iter()
            .map(|s| self.cached_service_id(&service_key(s)).map(Ok))
            .collect();
        let missing = services
            .iter()
            .enumerate()
            .filter(|(n, _)| results[*n].is_none())
            .map(|(n, s)| (n, s.domain_project.as_str()));
        for (tenant, chunk) in tenant_chunks(missing) {
            let request = wire::BatchRegisterRequest {
                services: chunk
                    .iter()
                    .map(|&n| MicroService::from_service(services[n]))
                    .collect(),
                instances: Vec::new(),
            };
            let Some(answer) = self
                .batch(tenant, &request, "batch service creation")
                .await?
            else {
                return Ok(None);
            };
            let answers = same_length(answer.services, chunk.len(), "batch service creation")?;
            for (&n, item) in chunk.iter().zip(answers) {
                results[n] = Some(if item.service_id.is_empty() {
                    Err(Error::Rejected(format!(
                        "create service: {} {} ({})",
                        item.error_code, item.error_message, item.detail
                    )))
                } else {
                    self.cache_service_id(service_key(services[n]), &item.service_id);
                    Ok(item.service_id)
                });
            }
        }
        Ok(Some(answered(results)))
    }

    /// Up to `BATCH_REGISTER` (1000) items of one tenant per request, tenants in turn. An item
    /// whose service is gone (400012) is `NotFound`: register it alone, which recreates it.
    async fn register_batch(
        &self,
        items: &[(&Service, &Instance)],
    ) -> Result<Option<Vec<Result<String>>>> {
        let mut results: Vec<Option<Result<String>>> = items.iter().map(|_| None).collect();
        let all = items
            .iter()
            .enumerate()
            .map(|(n, (service, _))| (n, service.domain_project.as_str()));
        for (tenant, chunk) in tenant_chunks(all) {
            let request = wire::BatchRegisterRequest {
                services: Vec::new(),
                instances: chunk
                    .iter()
                    .map(|&n| {
                        let (service, instance) = items[n];
                        let mut body = MicroServiceInstance::from_instance(instance);
                        body.service_id = service.service_id.clone();
                        body
                    })
                    .collect(),
            };
            let Some(answer) = self.batch(tenant, &request, "batch registration").await? else {
                return Ok(None);
            };
            let answers = same_length(answer.instances, chunk.len(), "batch registration")?;
            for (&n, item) in chunk.iter().zip(answers) {
                let code: Option<u32> = item.error_code.trim().parse().ok();
                results[n] = Some(match code {
                    None if !item.instance_id.is_empty() => Ok(item.instance_id),
                    None => Ok(items[n].1.instance_id.clone()),
                    Some(SERVICE_NOT_EXIST) => {
                        self.forget_service_id(items[n].0);
                        Err(Error::NotFound(item.detail))
                    }
                    Some(code) => Err(Error::Rejected(format!(
                        "register instance: {code} {} ({})",
                        item.error_message, item.detail
                    ))),
                });
            }
        }
        Ok(Some(answered(results)))
    }

    /// `PUT /v4/{project}/registry/heartbeats` (service-center's batch heartbeat), up to
    /// `BATCH_REGISTER` (1000) items of one tenant per request. 200: all renewed; 400017 names
    /// the unknown ones in its detail (`heartbeat failed for sid/iid,...`, the built-in
    /// core's wording): those are `NotFound`, the rest renewed. Another answer fails the
    /// request's items (`Rejected`): the caller heartbeats them one by one.
    async fn heartbeat_batch(&self, items: &[(&Service, &str)]) -> Result<Option<Vec<Result<()>>>> {
        let mut results: Vec<Option<Result<()>>> = items.iter().map(|_| None).collect();
        let all = items
            .iter()
            .enumerate()
            .map(|(n, (service, _))| (n, service.domain_project.as_str()));
        for (tenant, chunk) in tenant_chunks(all) {
            let (domain, project) = wire::split_domain_project(tenant);
            let path = format!("/v4/{}/registry/heartbeats", segment(project));
            let request = wire::HeartbeatsRequest {
                instances: chunk
                    .iter()
                    .map(|&n| wire::InstanceKey {
                        service_id: items[n].0.service_id.as_str(),
                        instance_id: items[n].1,
                    })
                    .collect(),
            };
            let body = serde_json::to_vec(&request)
                .map_err(|e| Error::Rejected(format!("cannot encode heartbeats: {e}")))?;
            let reply = self
                .request(Method::PUT, domain, &path, &[], Some(body))
                .await?;
            let unknown: Option<HashSet<String>> = if reply.status.is_success() {
                Some(HashSet::new())
            } else {
                match failure(&reply) {
                    (Some(INSTANCE_NOT_EXIST), _) => {
                        let body: Option<ErrorBody> = serde_json::from_slice(&reply.body).ok();
                        body.and_then(|b| {
                            b.detail
                                .strip_prefix("heartbeat failed for ")
                                .map(|list| list.split(',').map(str::to_owned).collect())
                        })
                    }
                    _ => None,
                }
            };
            for &n in &chunk {
                let (service, instance_id) = items[n];
                results[n] = Some(match &unknown {
                    Some(set) if set.contains(&format!("{}/{instance_id}", service.service_id)) => {
                        Err(Error::NotFound(format!("instance {instance_id}")))
                    }
                    Some(_) => Ok(()),
                    None => Err(Error::Rejected("batch heartbeat refused".into())),
                });
            }
        }
        Ok(Some(answered(results)))
    }

    async fn heartbeat(&self, service: &Service, instance_id: &str) -> Result<()> {
        let (domain, project) = wire::split_domain_project(&service.domain_project);
        let path = format!(
            "/v4/{}/registry/microservices/{}/instances/{}/heartbeat",
            segment(project),
            segment(&service.service_id),
            segment(instance_id)
        );
        let reply = self.request(Method::PUT, domain, &path, &[], None).await?;
        if reply.status.is_success() {
            return Ok(());
        }
        match failure(&reply) {
            (Some(INSTANCE_NOT_EXIST | SERVICE_NOT_EXIST), message) => {
                Err(Error::NotFound(format!("heartbeat: {message}")))
            }
            _ => Err(to_error(&reply, "heartbeat")),
        }
    }

    async fn unregister(&self, service: &Service, instance_id: &str) -> Result<()> {
        let (domain, project) = wire::split_domain_project(&service.domain_project);
        let path = format!(
            "/v4/{}/registry/microservices/{}/instances/{}",
            segment(project),
            segment(&service.service_id),
            segment(instance_id)
        );
        let reply = self
            .request(Method::DELETE, domain, &path, &[], None)
            .await?;
        if reply.status.is_success() || reply.status == reqwest::StatusCode::NOT_FOUND {
            return Ok(());
        }
        match failure(&reply) {
            (Some(INSTANCE_NOT_EXIST | SERVICE_NOT_EXIST), _) => Ok(()),
            _ => Err(to_error(&reply, "unregister")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_normalised() {
        assert_eq!(
            normalise_endpoint(" 127.0.0.1:30100/ ").as_deref(),
            Some("http://127.0.0.1:30100")
        );
        assert_eq!(
            normalise_endpoint("https://sc:30100").as_deref(),
            Some("https://sc:30100")
        );
        assert_eq!(normalise_endpoint("  "), None);
    }

    #[test]
    fn a_plugin_without_endpoints_is_rejected() {
        let config = Config {
            endpoints: vec![" ".into()],
            ..Config::default()
        };
        assert!(matches!(
            ServiceCenterPlugin::new(config),
            Err(Error::Rejected(_))
        ));
    }

    #[test]
    fn service_keys_normalise_the_tenant() {
        let a = Service {
            domain_project: String::new(),
            ..Service::default()
        };
        let b = Service {
            domain_project: "default/default".into(),
            ..Service::default()
        };
        assert_eq!(service_key(&a), service_key(&b));
        let c = Service {
            version: "1.0.1".into(),
            ..b.clone()
        };
        assert_ne!(service_key(&b), service_key(&c));
    }
}
