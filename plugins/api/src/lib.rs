//! The plugin API: the [`Plugin`] trait through which a syncer reads and writes its local
//! registry, and the registry-neutral model types it exchanges ([`Service`], [`Instance`],
//! [`Snapshot`]).
//!
//! Data flow (DESIGN.md): the exporter calls [`Plugin::list`] to learn what the local registry
//! holds; the importer calls [`Plugin::ensure_service`], [`Plugin::register`],
//! [`Plugin::heartbeat`] and [`Plugin::unregister`] to mirror the other clusters' instances.
//!
//! Imported instances carry their origin in their own metadata (service-center instance
//! `properties`, Eureka instance `metadata`) under the keys [`ORIGIN_CLUSTER`],
//! [`ORIGIN_SERVICE_ID`] and [`ORIGIN_INSTANCE_ID`]; plugins pass these maps through
//! unchanged in both directions, which is how a restarted syncer rebuilds its mapping and how
//! an exporter recognises (and skips) what it imported.

use std::collections::BTreeMap;
use std::fmt;

/// Metadata key naming the cluster an imported instance came from.
pub const ORIGIN_CLUSTER: &str = "syncerOriginCluster";
/// Metadata key holding the instance's service id in its origin registry.
pub const ORIGIN_SERVICE_ID: &str = "syncerOriginServiceId";
/// Metadata key holding the instance's id in its origin registry.
pub const ORIGIN_INSTANCE_ID: &str = "syncerOriginInstanceId";

/// Domain/project every registry without tenants (Eureka) lives in: `default/default`.
pub const DEFAULT_DOMAIN_PROJECT: &str = "default/default";

/// A microservice as both registries understand it.
///
/// Eureka has no versions, environments or app ids: its plugin maps an application `NAME`
/// to appId `eureka`, serviceName `name` (lower case), version `0.0.1`, as the
/// service-center syncer 1.3.0 did.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Service {
    /// Tenant, `domain/project` (e.g. `default/default`).
    pub domain_project: String,
    /// The service's id in the registry it was read from.
    pub service_id: String,
    /// ServiceComb `appId`.
    pub app_id: String,
    /// ServiceComb `serviceName`.
    pub service_name: String,
    /// Version, `x[.y[.z[.w]]]`.
    pub version: String,
    /// Environment: empty, `development`, `testing`, `acceptance` or `production`.
    pub environment: String,
    /// Free-form service properties.
    pub properties: BTreeMap<String, String>,
}

/// Status of an instance, the union of both registries' values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum InstanceStatus {
    /// Serving traffic.
    #[default]
    Up,
    /// Not serving.
    Down,
    /// Starting up.
    Starting,
    /// Taken out of service by an operator (SC `OUTOFSERVICE`, Eureka `OUT_OF_SERVICE`).
    OutOfService,
    /// SC `TESTING`.
    Testing,
    /// Anything else.
    Unknown,
}

impl InstanceStatus {
    /// The service-center spelling (`UP`, `DOWN`, `STARTING`, `OUTOFSERVICE`, `TESTING`).
    /// service-center has no `UNKNOWN` (its validator rejects it), so `Unknown` is written as
    /// `DOWN`: not serving, as far as anyone knows.
    pub fn as_servicecenter(self) -> &'static str {
        match self {
            InstanceStatus::Up => "UP",
            InstanceStatus::Down => "DOWN",
            InstanceStatus::Starting => "STARTING",
            InstanceStatus::OutOfService => "OUTOFSERVICE",
            InstanceStatus::Testing => "TESTING",
            InstanceStatus::Unknown => "DOWN",
        }
    }

    /// The Eureka spelling (`UP`, `DOWN`, `STARTING`, `OUT_OF_SERVICE`, `UNKNOWN`); SC's
    /// `TESTING` has no Eureka value and becomes `STARTING`.
    pub fn as_eureka(self) -> &'static str {
        match self {
            InstanceStatus::Up => "UP",
            InstanceStatus::Down => "DOWN",
            InstanceStatus::Starting | InstanceStatus::Testing => "STARTING",
            InstanceStatus::OutOfService => "OUT_OF_SERVICE",
            InstanceStatus::Unknown => "UNKNOWN",
        }
    }

    /// Parses either registry's spelling, case-insensitively; anything unrecognised is
    /// `Unknown` (Eureka's body decoders do the same).
    pub fn parse(s: &str) -> Self {
        match s.to_ascii_uppercase().as_str() {
            "UP" => InstanceStatus::Up,
            "DOWN" => InstanceStatus::Down,
            "STARTING" => InstanceStatus::Starting,
            "OUTOFSERVICE" | "OUT_OF_SERVICE" => InstanceStatus::OutOfService,
            "TESTING" => InstanceStatus::Testing,
            _ => InstanceStatus::Unknown,
        }
    }
}

/// How an instance proves it is alive.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HealthCheck {
    /// Seconds between heartbeats.
    pub interval_secs: u32,
    /// Missed heartbeats tolerated; the lease is `interval_secs * (times + 1)` seconds.
    pub times: u32,
    /// Health-check URL, if the registry knows one (Eureka `healthCheckUrl`).
    pub url: String,
}

/// One running copy of a service.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Instance {
    /// The instance's id in the registry it was read from.
    pub instance_id: String,
    /// The id of its service in the same registry.
    pub service_id: String,
    /// Host name.
    pub host_name: String,
    /// Endpoints as URLs with a neutral scheme: `http://host:port` or `https://host:port`
    /// (service-center's `rest://` becomes `http://`, `rest://..?sslEnabled=true` becomes
    /// `https://`, as the service-center syncer did).
    pub endpoints: Vec<String>,
    /// Status.
    pub status: InstanceStatus,
    /// Health check, if the registry knows one.
    pub health_check: Option<HealthCheck>,
    /// Metadata (SC `properties`, Eureka `metadata`), including the origin keys of imported
    /// instances.
    pub properties: BTreeMap<String, String>,
}

impl Instance {
    /// The origin cluster recorded in this instance's metadata, if it was imported by a syncer.
    pub fn origin_cluster(&self) -> Option<&str> {
        self.properties.get(ORIGIN_CLUSTER).map(String::as_str)
    }
}

/// Everything a registry holds: services, and instances referring to them by `service_id`.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Snapshot {
    /// Services.
    pub services: Vec<Service>,
    /// Instances; each `service_id` names one of `services`.
    pub instances: Vec<Instance>,
}

/// One record of a listing read record by record ([`Plugin::list_each`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listed {
    /// A service.
    Service(Service),
    /// An instance; its service may come before or after it.
    Instance(Instance),
}

/// Hands every record of `snapshot` to `visit`, services first (the default
/// [`Plugin::list_each`]).
pub fn visit_snapshot(snapshot: Snapshot, visit: &mut (dyn FnMut(Listed) + Send)) {
    for s in snapshot.services {
        visit(Listed::Service(s));
    }
    for i in snapshot.instances {
        visit(Listed::Instance(i));
    }
}

/// What changed in a registry after a revision ([`Plugin::changes`]): the current bodies of
/// what changed, not the steps.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChangeSet {
    /// The registry revision these changes bring the reader to; the `since` of the next read.
    pub revision: u64,
    /// Services created or changed, and the services of the instances below.
    pub services: Vec<Service>,
    /// Instances registered or changed.
    pub instances: Vec<Instance>,
    /// Instances removed, as (serviceId, instanceId).
    pub removed: Vec<(String, String)>,
    /// Services removed (their instances with them), by serviceId.
    pub removed_services: Vec<String>,
}

/// The answer of [`Plugin::changes`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Changes {
    /// What changed since the revision asked about (possibly nothing).
    Since(ChangeSet),
    /// The registry no longer knows what changed since then (too far behind, or the registry
    /// restarted): list everything again ([`Plugin::list_with_revision`]).
    Relist,
}

/// Errors of a plugin call. Each variant says whether retrying can help.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The registry could not be reached or answered 5xx; nothing was changed that we know of.
    /// Retry later.
    #[error("registry unavailable at {endpoint}: {message}")]
    Unavailable {
        /// The endpoint that failed.
        endpoint: String,
        /// What went wrong.
        message: String,
    },
    /// The instance (or service) does not exist at the registry: a heartbeat answered 404 /
    /// 400017. The caller should register it again.
    #[error("not found: {0}")]
    NotFound(String),
    /// The registry refused the request (4xx other than not-found). Retrying the same request
    /// will not help.
    #[error("registry rejected the request: {0}")]
    Rejected(String),
    /// The registry's answer could not be decoded.
    #[error("malformed registry response: {0}")]
    Malformed(String),
}

/// Result of plugin calls.
pub type Result<T> = std::result::Result<T, Error>;

/// The adapter through which a syncer reads and writes its local registry.
///
/// Implementations are cheap to share (`Arc<dyn Plugin>`) and safe to call concurrently.
/// Every call is one or a few HTTP requests; none retries forever (the importer retries).
#[async_trait::async_trait]
pub trait Plugin: Send + Sync + fmt::Debug {
    /// The plugin's name: `servicecenter` or `eureka`.
    fn name(&self) -> &'static str;

    /// Reads every service and instance of the registry (all tenants where the registry has
    /// them), imported ones included.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when no endpoint answers, [`Error::Malformed`] on a bad body.
    async fn list(&self) -> Result<Snapshot>;

    /// A cheap token that changes whenever the registry's content changes, for noticing
    /// changes without listing everything; `Ok(None)` when the registry offers no such
    /// token (the caller then lists periodically). Tokens are opaque and only compared for
    /// equality.
    ///
    /// # Errors
    /// As [`Plugin::list`].
    async fn revision(&self) -> Result<Option<String>> {
        Ok(None)
    }

    /// [`Plugin::list`], and the registry revision the listing was read at when the
    /// registry numbers its changes (then [`Plugin::changes`] can follow from it).
    ///
    /// # Errors
    /// As [`Plugin::list`].
    async fn list_with_revision(&self) -> Result<(Snapshot, Option<u64>)> {
        Ok((self.list().await?, None))
    }

    /// [`Plugin::list_with_revision`], handed to `visit` one record at a time as it is read,
    /// so the caller keeps what it needs in its own form instead of a whole [`Snapshot`]
    /// (at 100,000 instances a listing is a hundred MB as a body and again as a snapshot).
    /// An instance may come before its service. Returns the registry revision the listing
    /// was read at, when known. The default lists, then visits.
    ///
    /// # Errors
    /// As [`Plugin::list`]; what was visited before an error is partial: discard it.
    async fn list_each(&self, visit: &mut (dyn FnMut(Listed) + Send)) -> Result<Option<u64>> {
        let (snapshot, revision) = self.list_with_revision().await?;
        visit_snapshot(snapshot, visit);
        Ok(revision)
    }

    /// What changed after registry revision `since` (from [`Plugin::list_with_revision`] or
    /// an earlier [`ChangeSet::revision`]), waiting up to about `wait` for a change when
    /// there is none yet, so a caller follows the registry in O(change) per change. With
    /// `imported` false, instances carrying [`ORIGIN_CLUSTER`] are left out of
    /// [`ChangeSet::instances`] (their removals are still listed): an exporter has no use
    /// for the copies it imported, and at 100,000 of them their bodies are most of the
    /// traffic.
    /// `Ok(None)` when the registry cannot tell (the default; a real service-center): the
    /// caller lists instead.
    ///
    /// # Errors
    /// As [`Plugin::list`].
    async fn changes(
        &self,
        since: u64,
        wait: std::time::Duration,
        imported: bool,
    ) -> Result<Option<Changes>> {
        let _ = (since, wait, imported);
        Ok(None)
    }

    /// Makes sure a service like `service` (same tenant, appId, serviceName, version,
    /// environment) exists and returns its local service id. `service.service_id` is the
    /// id to use if the registry lets the client choose one (deterministic ids, DESIGN.md
    /// decision 3). Eureka creates apps implicitly and returns the lower-case app name.
    async fn ensure_service(&self, service: &Service) -> Result<String>;

    /// Registers `instance` under the local service `service` (as returned by
    /// [`Plugin::ensure_service`]) and returns the local instance id. `instance.instance_id` is
    /// the id to use; registering an id that already exists renews it instead of duplicating.
    async fn register(&self, service: &Service, instance: &Instance) -> Result<String>;

    /// Makes sure several services exist in one call where the registry can, as
    /// [`Plugin::ensure_service`] would each; one result per service, in order (an error:
    /// ensure that one alone). `Ok(None)` when the registry has no batch creation (the
    /// default): ensure one by one.
    ///
    /// # Errors
    /// As [`Plugin::list`] for the call as a whole.
    async fn ensure_services(&self, services: &[&Service]) -> Result<Option<Vec<Result<String>>>> {
        let _ = services;
        Ok(None)
    }

    /// Registers several instances in one call where the registry can, as
    /// [`Plugin::register`] would each: `items` are (local service as returned by
    /// [`Plugin::ensure_service`], instance). One result per item, in order; `Ok(None)` when
    /// the registry has no batch registration (the default): register one by one.
    ///
    /// # Errors
    /// As [`Plugin::list`] for the call as a whole; an item's own refusal is its result.
    async fn register_batch(
        &self,
        items: &[(&Service, &Instance)],
    ) -> Result<Option<Vec<Result<String>>>> {
        let _ = items;
        Ok(None)
    }

    /// Renews the lease of a registered instance.
    ///
    /// # Errors
    /// [`Error::NotFound`] when the registry does not know the instance (expired or removed):
    /// register it again.
    async fn heartbeat(&self, service: &Service, instance_id: &str) -> Result<()>;

    /// Renews several leases in one call where the registry can, as [`Plugin::heartbeat`]
    /// would each: `items` are (local service, instanceId). One result per item, in order
    /// ([`Error::NotFound`]: register it again); `Ok(None)` when the registry has no batch
    /// heartbeat (the default): heartbeat one by one.
    ///
    /// # Errors
    /// As [`Plugin::list`] for the call as a whole.
    async fn heartbeat_batch(&self, items: &[(&Service, &str)]) -> Result<Option<Vec<Result<()>>>> {
        let _ = items;
        Ok(None)
    }

    /// Removes a registered instance. Removing an unknown instance is not an error.
    async fn unregister(&self, service: &Service, instance_id: &str) -> Result<()>;
}
