//! The metadata service of the built-in core: business rules, validation,
//! leases and the in-memory indexes behind both HTTP surfaces.
//!
//! One [`Registry`] holds every microservice and instance. The SC v4 API
//! (`v4.rs`) and the Eureka v2 API (`eureka.rs`) are two views of the same
//! records: an Eureka application is the set of microservices in tenant
//! `default/default` whose upper-cased `serviceName` is the app name, and an
//! app registered through `/eureka` becomes the microservice
//! (`default`, `default`, env "", appId `eureka`, lower-case name, `0.0.1`).
//!
//! Indexes, so that no request loops over services × instances:
//! - `services`: serviceId → service and its instances (instances by id);
//! - `by_key`: (domain, project, env, appId, serviceName, version) → serviceId;
//! - `by_name`: the same key without version → the serviceIds of every version;
//! - `by_app`: Eureka app name → serviceIds in default/default;
//! - `leases`: (deadline, serviceId, instanceId), ordered, for expiry; lazily kept (an
//!   entry may predate a renewal: `expire` requeues it at the record's deadline).
//!
//! Every function here is synchronous and takes `now` from the caller; the
//! caller holds the lock only for the call (never across `.await`).

pub mod changelog;
pub mod dependencies;
pub mod discovery;
pub mod eureka;
pub mod rbac;
pub mod records;
pub mod rules;
pub mod schemas;
pub mod tags;

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha1::{Digest, Sha1};

use crate::servicecenter::error::{
    ScError, DEPLOYED_INSTANCE, INSTANCE_NOT_EXISTS, SERVICE_ALREADY_EXISTS, SERVICE_NOT_EXISTS,
    SERVICE_VERSION_NOT_EXISTS,
};
use crate::servicecenter::store::{keys, Journal, Mark, Taken, Write};

/// A string map (service/instance `properties`, Eureka `metadata`).
pub type Props = BTreeMap<String, String>;

/// The domain and project that Eureka apps live in.
pub const DEFAULT_TENANT: &str = "default";
/// The appId of microservices created through the Eureka API (the old syncer's mapping).
pub const EUREKA_APP_ID: &str = "eureka";
/// The version of microservices created through the Eureka API.
pub const EUREKA_VERSION: &str = "0.0.1";

fn is_empty_map(m: &Props) -> bool {
    m.is_empty()
}
fn is_zero(v: &i64) -> bool {
    *v == 0
}

/// A service-center microservice as it travels in JSON (`1.3.0:server/core/proto/services.pb.go`).
///
/// Empty fields are left out when written, like Go's `omitempty`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct MicroService {
    /// 1–64 chars, no whitespace; SHA-1 of the index key when not chosen by the client.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub service_id: String,
    /// Application id; `default` when empty at create.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub app_id: String,
    /// Service name (1–128 at create).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub service_name: String,
    /// `x[.y[.z[.w]]]`; `0.0.1` when empty at create.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub version: String,
    /// Free text, ≤ 256 chars.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// `FRONT`, `MIDDLE` or `BACK` (the default).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub level: String,
    /// Schema ids.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub schemas: Vec<String>,
    /// Service paths, kept as given.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<serde_json::Value>,
    /// `UP` (the default) or `DOWN`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub status: String,
    /// Free properties, returned as given.
    #[serde(skip_serializing_if = "is_empty_map")]
    pub properties: Props,
    /// Creation time, unix seconds as a string (set by the server).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub timestamp: String,
    /// Alias name.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub alias: String,
    /// Load-balancing strategy map.
    #[serde(rename = "LBStrategy", skip_serializing_if = "is_empty_map")]
    pub lb_strategy: Props,
    /// Last modification time, unix seconds as a string (set by the server).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub mod_timestamp: String,
    /// Empty or `development`/`testing`/`acceptance`/`production`; part of the identity.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub environment: String,
    /// `SDK`, `SIDECAR` or `PLATFORM`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub register_by: String,
    /// The framework that registered the service.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub framework: Option<Framework>,
}

/// `framework{name, version}` of a microservice.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Framework {
    /// Framework name, e.g. `servicecomb-java-chassis`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Framework version.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub version: String,
}

/// A service-center instance as it travels in JSON.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct MicroServiceInstance {
    /// ≤ 64 chars of `[A-Za-z0-9_.-]`; 32 hex chars when generated.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub instance_id: String,
    /// The owning service (taken from the path at registration).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub service_id: String,
    /// e.g. `rest://127.0.0.1:8080`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<String>,
    /// 1–64 chars, required.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub host_name: String,
    /// `UP` (default), `DOWN`, `STARTING`, `TESTING`, `OUTOFSERVICE`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub status: String,
    /// Free properties; returned exactly as given (the syncer stores its origin markers here).
    #[serde(skip_serializing_if = "is_empty_map")]
    pub properties: Props,
    /// Lease parameters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    /// Registration time, unix seconds as a string.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub timestamp: String,
    /// Where the instance runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_center_info: Option<DataCenterInfo>,
    /// Last modification time, unix seconds as a string.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub mod_timestamp: String,
    /// Always the service's version.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub version: String,
}

/// `healthCheck{mode, port, interval, times, url}`; lease = `interval × (times + 1)` seconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HealthCheck {
    /// `push` (the client heartbeats) or `pull`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub mode: String,
    /// Port to probe, 0–65535.
    #[serde(skip_serializing_if = "is_zero")]
    pub port: i64,
    /// Heartbeat interval in seconds, ≥ 1.
    #[serde(skip_serializing_if = "is_zero")]
    pub interval: i64,
    /// Missed heartbeats tolerated, ≥ 0.
    #[serde(skip_serializing_if = "is_zero")]
    pub times: i64,
    /// URL to probe.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub url: String,
}

/// `dataCenterInfo{name, region, availableZone}` of an SC instance.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DataCenterInfo {
    /// Data-center name.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Region.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub region: String,
    /// Availability zone.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub available_zone: String,
}

/// The Eureka-only fields of an instance registered through `/eureka`, kept
/// beside the SC record so a Eureka client reads back what it registered.
///
/// Status, host name and metadata are *not* here: they live in the SC record
/// (`status`, `hostName`, `properties`) so both APIs see the same values.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EurekaSide {
    /// Upper-cased app name.
    pub app: String,
    /// `ipAddr`.
    pub ip_addr: String,
    /// `sid`, when not `na`.
    pub sid: Option<String>,
    /// The Eureka status as given (e.g. `UNKNOWN`, which SC cannot express).
    pub status: String,
    /// `overriddenStatus`, default `UNKNOWN`.
    pub overridden_status: String,
    /// `port.$` and `port.@enabled`.
    pub port: (i64, bool),
    /// `securePort.$` and `securePort.@enabled`.
    pub secure_port: (i64, bool),
    /// `countryId`, default 1.
    pub country_id: i64,
    /// `dataCenterInfo.@class`.
    pub dc_class: String,
    /// `dataCenterInfo.name`.
    pub dc_name: String,
    /// `dataCenterInfo.metadata` (Amazon).
    pub dc_metadata: Props,
    /// `leaseInfo.renewalIntervalInSecs`, default 30.
    pub renewal_interval_secs: i64,
    /// Optional string fields by their JSON name (`homePageUrl`, `vipAddress`, `appGroupName`, ...).
    pub strings: BTreeMap<&'static str, String>,
    /// `lastDirtyTimestamp`, ms since the epoch.
    pub last_dirty_ms: i64,
}

/// A stored instance with its lease.
#[derive(Debug, Clone)]
pub struct InstanceRecord {
    /// The SC body as stored and returned.
    pub body: MicroServiceInstance,
    /// Eureka-only fields when registered through `/eureka`.
    pub eureka: Option<EurekaSide>,
    /// Lease duration in seconds.
    pub ttl_secs: u64,
    /// When the lease ends unless renewed.
    pub deadline: Instant,
    /// Registration time, ms since the epoch.
    pub registered_ms: i64,
    /// Last renewal time, ms since the epoch.
    pub renewed_ms: i64,
    /// Last change to the record, ms since the epoch.
    pub updated_ms: i64,
}

/// A microservice with its tenant and instances.
#[derive(Debug, Clone)]
pub struct ServiceEntry {
    /// Domain (tenant) from `X-Domain-Name`.
    pub domain: String,
    /// Project from the path.
    pub project: String,
    /// The stored body.
    pub service: MicroService,
    /// Instances by instanceId.
    pub instances: BTreeMap<String, InstanceRecord>,
}

/// (domain, project, env, appId, serviceName).
type NameKey = (String, String, String, String, String);
/// (domain, project, env, appId, serviceName, version).
type ServiceKey = (NameKey, String);

/// What a Eureka register asks for, already validated and mapped (see `eureka.rs`).
#[derive(Debug, Clone)]
pub struct EurekaRegistration {
    /// Instance id (instanceId, else hostName).
    pub instance_id: String,
    /// SC view of the instance (endpoints, hostName, status, properties).
    pub body: MicroServiceInstance,
    /// The Eureka-only fields.
    pub side: EurekaSide,
    /// `leaseInfo.durationInSecs` if > 0, else 90.
    pub lease_secs: u64,
}

/// The in-memory registry. See the module docs for its indexes.
#[derive(Debug, Default)]
pub struct Registry {
    services: HashMap<String, ServiceEntry>,
    by_key: HashMap<ServiceKey, String>,
    by_name: HashMap<NameKey, BTreeSet<String>>,
    by_app: HashMap<String, BTreeSet<String>>,
    leases: BTreeSet<(Instant, String, String)>,
    revision: u64,
    /// Changes not yet written to the store (see `store/mod.rs`); inert without a store.
    pub(crate) journal: Journal,
    /// Schemas and their summaries per service (`schemas.rs`).
    pub(crate) schemas: schemas::Schemas,
    /// Tags per service (`tags.rs`).
    pub(crate) tags: tags::Tags,
    /// Black and white list rules per service (`rules.rs`).
    pub(crate) rules: rules::Rules,
    /// Consumer → provider dependency rules (`dependencies.rs`).
    pub(crate) dependencies: dependencies::Dependencies,
    /// Wakes the watchers on every revision bump (`watch.rs`).
    pub(crate) changes: changelog::ChangeFeed,
    /// Eureka-only state: delta queue, status overrides, self-preservation (`eureka_registry.rs`).
    pub(crate) eureka: eureka::EurekaState,
    /// Finds' JSON of each service's instances at the current revision (`discovery.rs`).
    pub(crate) found: discovery::FoundCache,
    /// What changed at which revision, for readers of `admin/changes` (`changelog.rs`).
    pub(crate) changelog: changelog::ChangeLog,
    /// Accounts, roles and the token key (`rbac/`; empty while RBAC is off).
    pub(crate) rbac: rbac::RbacState,
}

/// Wall-clock now in ms since the epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The default serviceId: lowercase hex SHA-1 of
/// `/cse-sr/ms/indexes/<domain>/<project>/<env>/<appId>/<serviceName>/<version>`
/// (service-center's `context` uuid plugin).
pub fn default_service_id(
    domain: &str,
    project: &str,
    env: &str,
    app_id: &str,
    service_name: &str,
    version: &str,
) -> String {
    let key =
        format!("/cse-sr/ms/indexes/{domain}/{project}/{env}/{app_id}/{service_name}/{version}");
    hex::encode(Sha1::digest(key.as_bytes()))
}

/// Parses `x[.y[.z[.w]]]`, each part 0–32767.
pub fn parse_version(v: &str) -> Option<[u16; 4]> {
    let mut out = [0u16; 4];
    for (n, part) in v.split('.').enumerate() {
        if n == 4 || part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let x: u32 = part.parse().ok()?;
        if x > 32767 {
            return None;
        }
        out[n] = u16::try_from(x).ok()?;
    }
    Some(out)
}

fn name_ok(s: &str, allow_colon: bool) -> bool {
    let b = s.as_bytes();
    if b.iter().all(|c| c.is_ascii_alphanumeric()) {
        return true;
    }
    let inner_ok = |c: &u8| {
        c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.') || (allow_colon && *c == b':')
    };
    b.len() >= 2
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(inner_ok)
}

fn chars(s: &str) -> usize {
    s.chars().count()
}

fn check(ok: bool, detail: impl FnOnce() -> String) -> Result<(), ScError> {
    if ok {
        Ok(())
    } else {
        Err(ScError::invalid(detail()))
    }
}

fn env_ok(env: &str) -> bool {
    // The upstream regex is `^((development|testing|acceptance|production)*)$`.
    let mut rest = env;
    while !rest.is_empty() {
        let next = ["development", "testing", "acceptance", "production"]
            .iter()
            .find_map(|w| rest.strip_prefix(w));
        match next {
            Some(r) => rest = r,
            None => return false,
        }
    }
    true
}

/// Checks a microservice body at create (servicecomb-notes part d).
///
/// # Errors
/// 400001 naming the first bad field.
pub fn validate_service(s: &MicroService) -> Result<(), ScError> {
    check(
        (1..=128).contains(&chars(&s.service_name)) && name_ok(&s.service_name, false),
        || {
            format!(
                "Invalid serviceName '{}': 1-128 chars, letters, digits and inner '_-.'",
                s.service_name
            )
        },
    )?;
    check(chars(&s.app_id) <= 160 && name_ok(&s.app_id, false), || {
        format!(
            "Invalid appId '{}': up to 160 chars, letters, digits and inner '_-.'",
            s.app_id
        )
    })?;
    check(
        chars(&s.version) <= 64 && parse_version(&s.version).is_some(),
        || {
            format!(
                "Invalid version '{}': x[.y[.z[.w]]], each part 0-32767",
                s.version
            )
        },
    )?;
    check(
        chars(&s.service_id) <= 64 && !s.service_id.chars().any(char::is_whitespace),
        || "Invalid serviceId: up to 64 chars without whitespace".to_string(),
    )?;
    check(env_ok(&s.environment), || {
        format!("Invalid environment '{}'", s.environment)
    })?;
    check(
        matches!(s.level.as_str(), "FRONT" | "MIDDLE" | "BACK"),
        || format!("Invalid level '{}': FRONT, MIDDLE or BACK", s.level),
    )?;
    check(matches!(s.status.as_str(), "UP" | "DOWN"), || {
        format!("Invalid status '{}': UP or DOWN", s.status)
    })?;
    check(chars(&s.description) <= 256, || {
        "Invalid description: up to 256 chars".to_string()
    })?;
    check(
        chars(&s.alias) <= 128
            && s.alias
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.' | b':')),
        || format!("Invalid alias '{}'", s.alias),
    )?;
    check(s.schemas.len() <= 100, || {
        "Invalid schemas: at most 100".to_string()
    })?;
    for id in &s.schemas {
        check((1..=160).contains(&chars(id)) && name_ok(id, false), || {
            format!("Invalid schemas item '{id}'")
        })?;
    }
    if let Some(f) = &s.framework {
        check(chars(&f.name) <= 64 && name_ok(&f.name, false), || {
            format!("Invalid framework.name '{}'", f.name)
        })?;
        check(chars(&f.version) <= 64, || {
            "Invalid framework.version: up to 64 chars".to_string()
        })?;
    }
    Ok(())
}

/// Checks an instance body at registration (servicecomb-notes part d).
///
/// # Errors
/// 400001 naming the first bad field.
pub fn validate_instance(i: &MicroServiceInstance) -> Result<(), ScError> {
    check(
        chars(&i.instance_id) <= 64
            && i.instance_id
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.')),
        || {
            format!(
                "Invalid instanceId '{}': up to 64 chars of [A-Za-z0-9_.-]",
                i.instance_id
            )
        },
    )?;
    check(
        (1..=64).contains(&chars(&i.host_name)) && !i.host_name.trim().is_empty(),
        || "Invalid hostName: 1-64 chars, not blank".to_string(),
    )?;
    for e in &i.endpoints {
        check(!e.trim().is_empty(), || {
            "Invalid endpoints: blank item".to_string()
        })?;
    }
    check(
        matches!(
            i.status.as_str(),
            "UP" | "DOWN" | "STARTING" | "TESTING" | "OUTOFSERVICE"
        ),
        || {
            format!(
                "Invalid status '{}': UP, DOWN, STARTING, TESTING or OUTOFSERVICE",
                i.status
            )
        },
    )?;
    if let Some(hc) = &i.health_check {
        check(matches!(hc.mode.as_str(), "push" | "pull"), || {
            format!("Invalid healthCheck.mode '{}': push or pull", hc.mode)
        })?;
        check((0..=65535).contains(&hc.port), || {
            format!("Invalid healthCheck.port {}", hc.port)
        })?;
        check(hc.interval >= 1, || {
            format!("Invalid healthCheck.interval {}: must be >= 1", hc.interval)
        })?;
        check(hc.times >= 0, || {
            format!("Invalid healthCheck.times {}: must be >= 0", hc.times)
        })?;
        let ttl = hc.interval.saturating_mul(hc.times.saturating_add(1));
        check(ttl > 0 && ttl < i64::from(i32::MAX), || {
            "Invalid healthCheck: interval * (times + 1) out of range".to_string()
        })?;
        check(!hc.url.chars().any(char::is_whitespace), || {
            "Invalid healthCheck.url: contains whitespace".to_string()
        })?;
    }
    if let Some(dc) = &i.data_center_info {
        for (field, v) in [
            ("name", &dc.name),
            ("region", &dc.region),
            ("availableZone", &dc.available_zone),
        ] {
            check(
                (1..=128).contains(&chars(v))
                    && v.bytes()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.')),
                || format!("Invalid dataCenterInfo.{field} '{v}'"),
            )?;
        }
    }
    Ok(())
}

/// Checks the find/existence query fields (appId 1–160, serviceName 1–289 with `:`, a version rule).
///
/// # Errors
/// 400001 naming the first bad field.
pub fn validate_find(app_id: &str, service_name: &str, version: &str) -> Result<(), ScError> {
    check(
        (1..=160).contains(&chars(app_id)) && name_ok(app_id, false),
        || format!("Invalid appId '{app_id}'"),
    )?;
    check(
        (1..=289).contains(&chars(service_name)) && name_ok(service_name, true),
        || format!("Invalid serviceName '{service_name}'"),
    )?;
    check(
        (1..=129).contains(&chars(version)) && VersionRule::parse(version).is_some(),
        || format!("Invalid version '{version}': latest, x.y.z, x.y.z+ or a-b"),
    )?;
    Ok(())
}

/// A version rule of find/existence (`1.3.0:server/service/util/versionrule.go`).
#[derive(Debug, Clone, PartialEq)]
enum VersionRule {
    Latest,
    AtLeast([u16; 4]),
    Range([u16; 4], [u16; 4]),
    Exact(String),
}

impl VersionRule {
    fn parse(v: &str) -> Option<VersionRule> {
        if v == "latest" {
            return Some(VersionRule::Latest);
        }
        if let Some(a) = v.strip_suffix('+') {
            return parse_version(a).map(VersionRule::AtLeast);
        }
        if let Some((a, b)) = v.split_once('-') {
            let (a, b) = (parse_version(a)?, parse_version(b)?);
            return Some(if a > b {
                VersionRule::Range(b, a)
            } else {
                VersionRule::Range(a, b)
            });
        }
        parse_version(v).map(|_| VersionRule::Exact(v.to_string()))
    }
}

fn mapped_eureka_app(domain: &str, project: &str, service_name: &str) -> Option<String> {
    (domain == DEFAULT_TENANT && project == DEFAULT_TENANT)
        .then(|| service_name.to_ascii_uppercase())
}

fn secs(now_ms: i64) -> String {
    (now_ms / 1000).to_string()
}

impl Registry {
    /// Bumped on every change of a service or instance (not on heartbeats).
    pub fn revision(&self) -> u64 {
        self.revision
    }

    pub(crate) fn bump(&mut self) {
        self.revision += 1;
        self.changes.notify(self.revision);
    }

    /// Notes in the change log that instance `iid` of service `sid` changes at the coming
    /// revision bump (every instance change passes here through `eureka_touch`/`eureka_gone`).
    fn log_instance(&mut self, sid: &str, iid: &str) {
        self.changelog.note(
            self.revision + 1,
            changelog::Changed::Instance {
                service_id: sid.to_owned(),
                instance_id: iid.to_owned(),
            },
        );
    }

    /// Notes in the change log that service `sid` changes at the coming revision bump.
    fn log_service(&mut self, sid: &str) {
        self.changelog.note(
            self.revision + 1,
            changelog::Changed::Service {
                service_id: sid.to_owned(),
            },
        );
    }

    /// Notes for the Eureka delta (`eureka_registry.rs`) that instance `iid` of service
    /// `sid` changed; nothing outside default/default. O(1). Every path that changes an
    /// instance must call this (or [`Registry::eureka_gone`] when it removes one): the
    /// delta sees nothing else.
    fn eureka_touch(&mut self, sid: &str, iid: &str) {
        self.log_instance(sid, iid);
        if let Some(e) = self.services.get(sid) {
            if let Some(app) = mapped_eureka_app(&e.domain, &e.project, &e.service.service_name) {
                self.eureka.touch(app, iid);
            }
        }
    }

    /// Notes for the Eureka delta that instance `rec` of service `sid` (still known) was
    /// removed; the record is kept until the next delta sync for its `DELETED` entry.
    fn eureka_gone(&mut self, sid: &str, rec: InstanceRecord) {
        self.log_instance(sid, &rec.body.instance_id);
        if let Some(e) = self.services.get(sid) {
            if let Some(app) = mapped_eureka_app(&e.domain, &e.project, &e.service.service_name) {
                self.eureka.removed(app, &e.service.service_name, rec);
            }
        }
    }

    /// [`Registry::eureka_gone`] for every instance of a removed service.
    fn eureka_gone_service(&mut self, entry: ServiceEntry) {
        self.log_service(&entry.service.service_id);
        for iid in entry.instances.keys() {
            self.log_instance(&entry.service.service_id, iid);
        }
        let name = &entry.service.service_name;
        if let Some(app) = mapped_eureka_app(&entry.domain, &entry.project, name) {
            for rec in entry.instances.into_values() {
                self.eureka.removed(app.clone(), name, rec);
            }
        }
    }

    /// Creates a microservice, or returns the id of the one with the same key.
    ///
    /// Fills the defaults (appId `default`, version `0.0.1`, level `BACK`,
    /// status `UP`) and the timestamps. Returns (serviceId, created).
    ///
    /// # Errors
    /// 400001 on a bad field; 400010 when a client-chosen id conflicts.
    pub fn create_service(
        &mut self,
        domain: &str,
        project: &str,
        mut s: MicroService,
        now_ms: i64,
    ) -> Result<(String, bool), ScError> {
        if s.app_id.is_empty() {
            s.app_id = "default".into();
        }
        if s.version.is_empty() {
            s.version = "0.0.1".into();
        }
        if s.level.is_empty() {
            s.level = "BACK".into();
        }
        if s.status.is_empty() {
            s.status = "UP".into();
        }
        validate_service(&s)?;
        let name_key: NameKey = (
            domain.to_string(),
            project.to_string(),
            s.environment.clone(),
            s.app_id.clone(),
            s.service_name.clone(),
        );
        let key: ServiceKey = (name_key.clone(), s.version.clone());
        if let Some(existing) = self.by_key.get(&key) {
            if s.service_id.is_empty() || s.service_id == *existing {
                return Ok((existing.clone(), false));
            }
            return Err(ScError::new(
                SERVICE_ALREADY_EXISTS,
                format!("the key exists with serviceId {existing}"),
            ));
        }
        if s.service_id.is_empty() {
            s.service_id = default_service_id(
                domain,
                project,
                &s.environment,
                &s.app_id,
                &s.service_name,
                &s.version,
            );
        }
        if self.services.contains_key(&s.service_id) {
            return Err(ScError::new(
                SERVICE_ALREADY_EXISTS,
                format!("serviceId {} is used by another key", s.service_id),
            ));
        }
        s.timestamp = secs(now_ms);
        s.mod_timestamp = s.timestamp.clone();
        let id = s.service_id.clone();
        if let Some(app) = mapped_eureka_app(domain, project, &s.service_name) {
            self.by_app.entry(app).or_default().insert(id.clone());
        }
        self.by_name.entry(name_key).or_default().insert(id.clone());
        self.by_key.insert(key, id.clone());
        self.services.insert(
            id.clone(),
            ServiceEntry {
                domain: domain.to_string(),
                project: project.to_string(),
                service: s,
                instances: BTreeMap::new(),
            },
        );
        self.mark_service(&id);
        self.bump();
        Ok((id, true))
    }

    /// The service `id` of this tenant.
    ///
    /// # Errors
    /// 400012 when it does not exist in this tenant.
    pub fn service(&self, domain: &str, project: &str, id: &str) -> Result<&ServiceEntry, ScError> {
        self.services
            .get(id)
            .filter(|e| e.domain == domain && e.project == project)
            .ok_or_else(|| ScError::new(SERVICE_NOT_EXISTS, format!("service {id} does not exist")))
    }

    /// Changes fields of a service that are not part of its key (properties, schemas, ...),
    /// sets `modTimestamp`, notes it for the store and bumps the revision.
    ///
    /// # Errors
    /// 400012 when it does not exist in this tenant.
    pub(crate) fn update_service(
        &mut self,
        domain: &str,
        project: &str,
        id: &str,
        now_ms: i64,
        change: impl FnOnce(&mut MicroService),
    ) -> Result<(), ScError> {
        let entry = self.service_mut(domain, project, id)?;
        change(&mut entry.service);
        entry.service.mod_timestamp = secs(now_ms);
        self.mark_service(id);
        self.bump();
        Ok(())
    }

    fn service_mut(
        &mut self,
        domain: &str,
        project: &str,
        id: &str,
    ) -> Result<&mut ServiceEntry, ScError> {
        self.services
            .get_mut(id)
            .filter(|e| e.domain == domain && e.project == project)
            .ok_or_else(|| ScError::new(SERVICE_NOT_EXISTS, format!("service {id} does not exist")))
    }

    /// Every microservice of this tenant, ordered by serviceId.
    pub fn list_services(&self, domain: &str, project: &str) -> Vec<MicroService> {
        let mut out: Vec<MicroService> = self
            .services
            .values()
            .filter(|e| e.domain == domain && e.project == project)
            .map(|e| e.service.clone())
            .collect();
        out.sort_by(|a, b| a.service_id.cmp(&b.service_id));
        out
    }

    /// The service `id`, whatever its tenant.
    pub(crate) fn entry(&self, id: &str) -> Option<&ServiceEntry> {
        self.services.get(id)
    }

    /// Every service in every tenant (for the admin dump).
    pub fn all_services(&self) -> impl Iterator<Item = &ServiceEntry> {
        self.services.values()
    }

    /// Deletes a microservice and its instances.
    ///
    /// # Errors
    /// 400012 unknown; 400013 when it has instances and `force` is false.
    pub fn delete_service(
        &mut self,
        domain: &str,
        project: &str,
        id: &str,
        force: bool,
    ) -> Result<(), ScError> {
        let entry = self.service(domain, project, id)?;
        if !force && !entry.instances.is_empty() {
            return Err(ScError::new(
                DEPLOYED_INSTANCE,
                format!("service {id} has {} instance(s)", entry.instances.len()),
            ));
        }
        let Some(entry) = self.services.remove(id) else {
            return Ok(());
        };
        self.journal.mark(service_mark(&entry));
        for (iid, rec) in &entry.instances {
            self.leases
                .remove(&(rec.deadline, id.to_string(), iid.clone()));
        }
        let s = &entry.service;
        let name_key: NameKey = (
            entry.domain.clone(),
            entry.project.clone(),
            s.environment.clone(),
            s.app_id.clone(),
            s.service_name.clone(),
        );
        self.by_key.remove(&(name_key.clone(), s.version.clone()));
        if let Some(set) = self.by_name.get_mut(&name_key) {
            set.remove(id);
            if set.is_empty() {
                self.by_name.remove(&name_key);
            }
        }
        if let Some(app) = mapped_eureka_app(&entry.domain, &entry.project, &s.service_name) {
            if let Some(set) = self.by_app.get_mut(&app) {
                set.remove(id);
                if set.is_empty() {
                    self.by_app.remove(&app);
                }
            }
        }
        self.eureka_gone_service(entry);
        self.bump();
        Ok(())
    }

    /// The serviceIds matching a version rule, highest version first.
    ///
    /// # Errors
    /// 400001 bad rule; 400012 when no service has this name, or no exact version.
    pub(crate) fn resolve(&self, name_key: &NameKey, rule: &str) -> Result<Vec<String>, ScError> {
        let rule = VersionRule::parse(rule)
            .ok_or_else(|| ScError::invalid(format!("Invalid version '{rule}'")))?;
        let not_found = || {
            ScError::new(
                SERVICE_NOT_EXISTS,
                format!(
                    "service {}/{}/{} does not exist",
                    name_key.2, name_key.3, name_key.4
                ),
            )
        };
        if let VersionRule::Exact(v) = &rule {
            return self
                .by_key
                .get(&(name_key.clone(), v.clone()))
                .map(|id| vec![id.clone()])
                .ok_or_else(not_found);
        }
        let ids = self.by_name.get(name_key).ok_or_else(not_found)?;
        let mut versions: Vec<([u16; 4], &String)> = ids
            .iter()
            .filter_map(|id| {
                let v = parse_version(&self.services.get(id)?.service.version)?;
                Some((v, id))
            })
            .collect();
        versions.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
        let out = match rule {
            VersionRule::Latest => versions
                .first()
                .map(|(_, id)| vec![(*id).clone()])
                .unwrap_or_default(),
            VersionRule::AtLeast(a) => versions
                .iter()
                .filter(|(v, _)| v.cmp(&a) != Ordering::Less)
                .map(|(_, id)| (*id).clone())
                .collect(),
            VersionRule::Range(a, b) => versions
                .iter()
                .filter(|(v, _)| *v >= a && *v < b)
                .map(|(_, id)| (*id).clone())
                .collect(),
            VersionRule::Exact(_) => Vec::new(),
        };
        Ok(out)
    }

    /// `GET /existence?type=microservice`: the id of the (newest) matching service.
    ///
    /// # Errors
    /// 400001 bad fields; 400012 none by that name/exact version; 400026 a fuzzy rule matched nothing.
    pub fn existence(
        &self,
        domain: &str,
        project: &str,
        env: &str,
        app_id: &str,
        service_name: &str,
        version: &str,
    ) -> Result<String, ScError> {
        validate_find(app_id, service_name, version)?;
        let key = (
            domain.to_string(),
            project.to_string(),
            env.to_string(),
            app_id.to_string(),
            service_name.to_string(),
        );
        self.resolve(&key, version)?
            .into_iter()
            .next()
            .ok_or_else(|| {
                ScError::new(
                    SERVICE_VERSION_NOT_EXISTS,
                    format!("no version of {service_name} matches {version}"),
                )
            })
    }

    /// `GET /instances` (find): the instances of every service matching the rule.
    ///
    /// With a consumer id, the consumer must exist and its environment replaces `env`.
    /// Status is not filtered, as in service-center.
    ///
    /// # Errors
    /// 400001 bad fields; 400012 unknown consumer, no such service, or no exact version.
    #[allow(clippy::too_many_arguments)]
    pub fn find(
        &self,
        domain: &str,
        project: &str,
        env: &str,
        app_id: &str,
        service_name: &str,
        version: &str,
        consumer_id: Option<&str>,
    ) -> Result<Vec<MicroServiceInstance>, ScError> {
        validate_find(app_id, service_name, version)?;
        let mut env = env.to_string();
        if let Some(cid) = consumer_id.filter(|c| !c.is_empty()) {
            let consumer = self.service(domain, project, cid).map_err(|_| {
                ScError::new(SERVICE_NOT_EXISTS, format!("consumer {cid} does not exist"))
            })?;
            env = consumer.service.environment.clone();
        }
        let key = (
            domain.to_string(),
            project.to_string(),
            env,
            app_id.to_string(),
            service_name.to_string(),
        );
        let ids = self.resolve(&key, version)?;
        Ok(ids
            .iter()
            .filter_map(|id| self.services.get(id))
            .flat_map(|e| e.instances.values().map(|r| r.body.clone()))
            .collect())
    }

    /// Registers an SC instance; re-registering an existing id only renews its lease.
    ///
    /// # Errors
    /// 400012 unknown service; 400001 a bad field.
    pub fn register_instance(
        &mut self,
        domain: &str,
        project: &str,
        service_id: &str,
        mut inst: MicroServiceInstance,
        now: Instant,
        now_ms: i64,
    ) -> Result<String, ScError> {
        let version = self
            .service(domain, project, service_id)?
            .service
            .version
            .clone();
        if inst.status.is_empty() {
            inst.status = "UP".into();
        }
        validate_instance(&inst)?;
        let mut hc = inst.health_check.take().unwrap_or(HealthCheck {
            mode: "push".into(),
            interval: 30,
            times: 3,
            ..HealthCheck::default()
        });
        if hc.mode == "pull" {
            hc.interval = 30;
            hc.times = 3;
        }
        let ttl = u64::try_from(hc.interval.saturating_mul(hc.times + 1)).unwrap_or(120);
        inst.health_check = Some(hc);
        if !inst.instance_id.is_empty() && self.renew(service_id, &inst.instance_id, now, now_ms) {
            return Ok(inst.instance_id);
        }
        if inst.instance_id.is_empty() {
            inst.instance_id = uuid::Uuid::new_v4().simple().to_string();
        }
        inst.service_id = service_id.to_string();
        inst.version = version;
        inst.timestamp = secs(now_ms);
        inst.mod_timestamp = inst.timestamp.clone();
        let id = inst.instance_id.clone();
        self.put_instance(service_id, inst, None, ttl, now, now_ms);
        Ok(id)
    }

    fn put_instance(
        &mut self,
        service_id: &str,
        body: MicroServiceInstance,
        eureka: Option<EurekaSide>,
        ttl_secs: u64,
        now: Instant,
        now_ms: i64,
    ) {
        let Some(entry) = self.services.get_mut(service_id) else {
            return;
        };
        let deadline = now + Duration::from_secs(ttl_secs);
        let iid = body.instance_id.clone();
        let rec = InstanceRecord {
            body,
            eureka,
            ttl_secs,
            deadline,
            registered_ms: now_ms,
            renewed_ms: now_ms,
            updated_ms: now_ms,
        };
        if let Some(old) = entry.instances.insert(iid.clone(), rec) {
            self.leases
                .remove(&(old.deadline, service_id.to_string(), iid.clone()));
        }
        self.journal.instance(service_id, &iid);
        self.eureka_touch(service_id, &iid);
        self.leases.insert((deadline, service_id.to_string(), iid));
        self.bump();
    }

    /// Renews a lease; false when the instance is unknown.
    fn renew(&mut self, service_id: &str, instance_id: &str, now: Instant, now_ms: i64) -> bool {
        let Some(rec) = self
            .services
            .get_mut(service_id)
            .and_then(|e| e.instances.get_mut(instance_id))
        else {
            return false;
        };
        // Lazy: the `leases` entry keeps the old deadline and `expire` moves it when it
        // comes due, so a heartbeat costs no allocation and no ordered-set update.
        rec.deadline = now + Duration::from_secs(rec.ttl_secs);
        rec.renewed_ms = now_ms;
        self.journal.renewed(service_id, instance_id);
        true
    }

    /// The instances of one service.
    ///
    /// # Errors
    /// 400012 unknown service.
    pub fn list_instances(
        &self,
        domain: &str,
        project: &str,
        service_id: &str,
    ) -> Result<Vec<MicroServiceInstance>, ScError> {
        Ok(self
            .service(domain, project, service_id)?
            .instances
            .values()
            .map(|r| r.body.clone())
            .collect())
    }

    /// One instance.
    ///
    /// # Errors
    /// 400012 unknown service; 400017 unknown instance.
    pub fn instance(
        &self,
        domain: &str,
        project: &str,
        service_id: &str,
        instance_id: &str,
    ) -> Result<&InstanceRecord, ScError> {
        self.service(domain, project, service_id)?
            .instances
            .get(instance_id)
            .ok_or_else(|| instance_missing(instance_id))
    }

    /// Heartbeat: renews the lease, body unchanged.
    ///
    /// # Errors
    /// 400012 unknown service; 400017 unknown instance.
    pub fn heartbeat(
        &mut self,
        domain: &str,
        project: &str,
        service_id: &str,
        instance_id: &str,
        now: Instant,
        now_ms: i64,
    ) -> Result<(), ScError> {
        self.service(domain, project, service_id)
            .map_err(|_| instance_missing(instance_id))?;
        if self.renew(service_id, instance_id, now, now_ms) {
            Ok(())
        } else {
            Err(instance_missing(instance_id))
        }
    }

    /// Removes an instance.
    ///
    /// # Errors
    /// 400017 unknown instance (or service).
    pub fn unregister(
        &mut self,
        domain: &str,
        project: &str,
        service_id: &str,
        instance_id: &str,
    ) -> Result<(), ScError> {
        let entry = self
            .service_mut(domain, project, service_id)
            .map_err(|_| instance_missing(instance_id))?;
        let rec = entry
            .instances
            .remove(instance_id)
            .ok_or_else(|| instance_missing(instance_id))?;
        self.leases.remove(&(
            rec.deadline,
            service_id.to_string(),
            instance_id.to_string(),
        ));
        self.journal.instance(service_id, instance_id);
        self.eureka_gone(service_id, rec);
        self.bump();
        Ok(())
    }

    /// Replaces an instance's status (`PUT .../status?value=`).
    ///
    /// # Errors
    /// 400001 bad value; 400017 unknown instance.
    pub fn set_instance_status(
        &mut self,
        domain: &str,
        project: &str,
        service_id: &str,
        instance_id: &str,
        status: &str,
        now_ms: i64,
    ) -> Result<(), ScError> {
        check(
            matches!(
                status,
                "UP" | "DOWN" | "STARTING" | "TESTING" | "OUTOFSERVICE"
            ),
            || format!("Invalid value '{status}' for status"),
        )?;
        let rec = self
            .service_mut(domain, project, service_id)
            .map_err(|_| instance_missing(instance_id))?
            .instances
            .get_mut(instance_id)
            .ok_or_else(|| instance_missing(instance_id))?;
        rec.body.status = status.to_string();
        rec.body.mod_timestamp = secs(now_ms);
        rec.updated_ms = now_ms;
        if let Some(side) = rec.eureka.as_mut() {
            side.status = sc_to_eureka_status(status).to_string();
        }
        self.journal.instance(service_id, instance_id);
        self.eureka_touch(service_id, instance_id);
        self.bump();
        Ok(())
    }

    /// Replaces an instance's properties (`PUT .../properties`).
    ///
    /// # Errors
    /// 400017 unknown instance.
    pub fn set_instance_properties(
        &mut self,
        domain: &str,
        project: &str,
        service_id: &str,
        instance_id: &str,
        properties: Props,
        now_ms: i64,
    ) -> Result<(), ScError> {
        let rec = self
            .service_mut(domain, project, service_id)
            .map_err(|_| instance_missing(instance_id))?
            .instances
            .get_mut(instance_id)
            .ok_or_else(|| instance_missing(instance_id))?;
        rec.body.properties = properties;
        rec.body.mod_timestamp = secs(now_ms);
        rec.updated_ms = now_ms;
        self.journal.instance(service_id, instance_id);
        self.eureka_touch(service_id, instance_id);
        self.bump();
        Ok(())
    }

    /// Removes every instance whose lease ended at or before `now`; returns how many.
    ///
    /// The services stay, as in service-center.
    pub fn expire(&mut self, now: Instant) -> usize {
        let mut n = 0;
        while let Some(first) = self.leases.first() {
            if first.0 > now {
                break;
            }
            let Some((_, sid, iid)) = self.leases.pop_first() else {
                break;
            };
            if let Some(entry) = self.services.get_mut(&sid) {
                // Renewed since this entry was made (see `renew`): requeue at the new deadline.
                if let Some(rec) = entry.instances.get(&iid).filter(|r| r.deadline > now) {
                    self.leases.insert((rec.deadline, sid, iid));
                    continue;
                }
                if let Some(rec) = entry.instances.remove(&iid) {
                    self.journal.instance(&sid, &iid);
                    self.eureka_gone(&sid, rec);
                    tracing::debug!(service_id = %sid, instance_id = %iid, "instance lease expired");
                    n += 1;
                }
            }
        }
        if n > 0 {
            self.bump();
        }
        n
    }

    // ---- the Eureka view -------------------------------------------------

    /// Registers (or replaces) an instance of a Eureka app, creating the
    /// microservice (default/default, appId `eureka`, lower-case name, `0.0.1`) on first use.
    pub fn eureka_register(
        &mut self,
        app: &str,
        reg: EurekaRegistration,
        now: Instant,
        now_ms: i64,
    ) {
        let name = app.to_ascii_lowercase();
        let key: ServiceKey = (
            (
                DEFAULT_TENANT.to_string(),
                DEFAULT_TENANT.to_string(),
                String::new(),
                EUREKA_APP_ID.to_string(),
                name.clone(),
            ),
            EUREKA_VERSION.to_string(),
        );
        let sid = match self.by_key.get(&key) {
            Some(id) => id.clone(),
            None => {
                let id = default_service_id(
                    DEFAULT_TENANT,
                    DEFAULT_TENANT,
                    "",
                    EUREKA_APP_ID,
                    &name,
                    EUREKA_VERSION,
                );
                let svc = MicroService {
                    service_id: id.clone(),
                    app_id: EUREKA_APP_ID.into(),
                    service_name: name.clone(),
                    version: EUREKA_VERSION.into(),
                    level: "BACK".into(),
                    status: "UP".into(),
                    timestamp: secs(now_ms),
                    mod_timestamp: secs(now_ms),
                    ..MicroService::default()
                };
                // Direct insert: Eureka names may fail SC's stricter name rule.
                let name_key = key.0.clone();
                self.by_app
                    .entry(app.to_ascii_uppercase())
                    .or_default()
                    .insert(id.clone());
                self.by_name.entry(name_key).or_default().insert(id.clone());
                self.by_key.insert(key, id.clone());
                self.services.insert(
                    id.clone(),
                    ServiceEntry {
                        domain: DEFAULT_TENANT.into(),
                        project: DEFAULT_TENANT.into(),
                        service: svc,
                        instances: BTreeMap::new(),
                    },
                );
                self.mark_service(&id);
                id
            }
        };
        // An id already present under another service of this app moves here.
        if let Some(other) = self.eureka_locate(app, &reg.instance_id) {
            if other != sid {
                if let Some(rec) = self
                    .services
                    .get_mut(&other)
                    .and_then(|e| e.instances.remove(&reg.instance_id))
                {
                    self.leases
                        .remove(&(rec.deadline, other.clone(), reg.instance_id.clone()));
                    self.journal.instance(&other, &reg.instance_id);
                    self.eureka_gone(&other, rec);
                }
            }
        }
        let version = EUREKA_VERSION.to_string();
        let mut body = reg.body;
        body.instance_id = reg.instance_id;
        body.service_id = sid.clone();
        body.version = version;
        body.timestamp = secs(now_ms);
        body.mod_timestamp = body.timestamp.clone();
        let registered = self
            .services
            .get(&sid)
            .and_then(|e| e.instances.get(&body.instance_id))
            .map(|r| (r.registered_ms, r.body.timestamp.clone()));
        let iid = body.instance_id.clone();
        if let Some((_, ts)) = &registered {
            body.timestamp = ts.clone();
        }
        self.put_instance(&sid, body, Some(reg.side), reg.lease_secs, now, now_ms);
        if let Some((reg_ms, _)) = registered {
            if let Some(rec) = self
                .services
                .get_mut(&sid)
                .and_then(|e| e.instances.get_mut(&iid))
            {
                rec.registered_ms = reg_ms;
            }
        }
    }

    /// The serviceId holding instance `id` of Eureka app `app`.
    fn eureka_locate(&self, app: &str, id: &str) -> Option<String> {
        self.by_app.get(app)?.iter().find_map(|sid| {
            self.services
                .get(sid)
                .filter(|e| e.instances.contains_key(id))
                .map(|_| sid.clone())
        })
    }

    /// Renews a Eureka lease; false when unknown (the client then re-registers).
    pub fn eureka_renew(&mut self, app: &str, id: &str, now: Instant, now_ms: i64) -> bool {
        match self.eureka_locate(app, id) {
            Some(sid) => self.renew(&sid, id, now, now_ms),
            None => false,
        }
    }

    /// Sets the Eureka `status` (and, for instances registered through `/eureka`,
    /// `overriddenStatus`, and `lastDirtyTimestamp` raised to `dirty_ms`) of an instance of
    /// app `app`; the SC status follows (`UNKNOWN` → `DOWN`). False when unknown. Used by the
    /// status override rules (`eureka.rs`).
    pub fn eureka_set_status(
        &mut self,
        app: &str,
        id: &str,
        status: &str,
        overridden: &str,
        dirty_ms: Option<i64>,
        now_ms: i64,
    ) -> bool {
        let Some(sid) = self.eureka_locate(app, id) else {
            return false;
        };
        let Some(rec) = self
            .services
            .get_mut(&sid)
            .and_then(|e| e.instances.get_mut(id))
        else {
            return false;
        };
        rec.body.status = eureka_to_sc_status(status).to_string();
        rec.body.mod_timestamp = secs(now_ms);
        rec.updated_ms = now_ms;
        if let Some(side) = rec.eureka.as_mut() {
            side.status = status.to_string();
            side.overridden_status = overridden.to_string();
            if let Some(d) = dirty_ms {
                side.last_dirty_ms = side.last_dirty_ms.max(d);
            }
        }
        self.journal.instance(&sid, id);
        self.eureka_touch(&sid, id);
        self.bump();
        true
    }

    /// Cancels a Eureka instance; false when unknown.
    pub fn eureka_cancel(&mut self, app: &str, id: &str) -> bool {
        let Some(sid) = self.eureka_locate(app, id) else {
            return false;
        };
        self.unregister(DEFAULT_TENANT, DEFAULT_TENANT, &sid, id)
            .is_ok()
    }

    /// Every Eureka app with its instances: (app name, [(service, instance)]), by name.
    pub fn eureka_apps(&self) -> Vec<(String, Vec<(&MicroService, &InstanceRecord)>)> {
        let mut names: Vec<&String> = self.by_app.keys().collect();
        names.sort();
        names
            .into_iter()
            .filter_map(|n| {
                let list = self.eureka_app(n);
                (!list.is_empty()).then(|| (n.clone(), list))
            })
            .collect()
    }

    /// The instances of one Eureka app (empty when unknown).
    pub fn eureka_app(&self, app: &str) -> Vec<(&MicroService, &InstanceRecord)> {
        let Some(ids) = self.by_app.get(app) else {
            return Vec::new();
        };
        ids.iter()
            .filter_map(|sid| self.services.get(sid))
            .flat_map(|e| e.instances.values().map(move |r| (&e.service, r)))
            .collect()
    }

    /// One instance of a Eureka app.
    pub fn eureka_instance(&self, app: &str, id: &str) -> Option<(&MicroService, &InstanceRecord)> {
        let sid = self.eureka_locate(app, id)?;
        let e = self.services.get(&sid)?;
        Some((&e.service, e.instances.get(id)?))
    }

    /// The first instance with this id in any Eureka app (`GET /instances/{id}`).
    pub fn eureka_instance_any(&self, id: &str) -> Option<(&MicroService, &InstanceRecord)> {
        let mut names: Vec<&String> = self.by_app.keys().collect();
        names.sort();
        names
            .into_iter()
            .find_map(|app| self.eureka_instance(app, id))
    }
}

// ---- persistence: the registry's side of the store (see `store/mod.rs`) ----------------

/// The journal mark of a service entry (with its index key, deleted with it).
fn service_mark(e: &ServiceEntry) -> Mark {
    let s = &e.service;
    Mark::Service {
        domain: e.domain.clone(),
        project: e.project.clone(),
        service_id: s.service_id.clone(),
        index: keys::service_index(
            &e.domain,
            &e.project,
            &s.environment,
            &s.app_id,
            &s.service_name,
            &s.version,
        ),
    }
}

/// An instance body's lease length: `interval × (times + 1)` seconds, 120 without a health check.
fn body_ttl_secs(b: &MicroServiceInstance) -> u64 {
    b.health_check
        .as_ref()
        .and_then(|hc| u64::try_from(hc.interval.saturating_mul(hc.times.saturating_add(1))).ok())
        .filter(|t| *t > 0)
        .unwrap_or(120)
}

/// Unix seconds as text (a stored timestamp) → ms; `default` when unreadable.
fn stored_ms(secs_text: &str, default: i64) -> i64 {
    secs_text
        .parse::<i64>()
        .map_or(default, |s| s.saturating_mul(1000))
}

fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

impl Registry {
    /// Notes a created or changed service for the store.
    pub(crate) fn mark_service(&mut self, id: &str) {
        self.log_service(id);
        if let Some(e) = self.services.get(id) {
            let mark = service_mark(e);
            self.journal.mark(mark);
        }
    }

    /// Takes the journal's marks (renewals too when `leases`) and reads the marked records'
    /// current values: one batch for the store, deletes first, then puts and renewals.
    pub(crate) fn take_writes(&mut self, leases: bool) -> (Vec<Write>, Taken) {
        let taken = self.journal.take(leases);
        let now = Instant::now();
        let wall = now_ms();
        let deadline_ms = |d: Instant| -> i64 {
            if d >= now {
                wall.saturating_add(i64::try_from((d - now).as_millis()).unwrap_or(i64::MAX))
            } else {
                wall.saturating_sub(i64::try_from((now - d).as_millis()).unwrap_or(0))
            }
        };
        let mut deletes = Vec::new();
        let mut puts = Vec::with_capacity(taken.changed.len());
        for mark in &taken.changed {
            match mark {
                Mark::Service {
                    domain,
                    project,
                    service_id,
                    index,
                } => match self
                    .services
                    .get(service_id)
                    .filter(|e| e.domain == *domain && e.project == *project)
                {
                    Some(e) => {
                        puts.push(Write::Put {
                            key: keys::service(domain, project, service_id),
                            value: to_json(&e.service),
                        });
                        puts.push(Write::Put {
                            key: index.clone(),
                            value: service_id.as_bytes().to_vec(),
                        });
                    }
                    None => {
                        deletes.push(Write::Delete {
                            key: keys::service(domain, project, service_id),
                        });
                        deletes.push(Write::Delete { key: index.clone() });
                        deletes.push(Write::DeletePrefix {
                            prefix: keys::instances_of(domain, project, service_id),
                        });
                        deletes.push(Write::DeletePrefix {
                            prefix: keys::leases_of(domain, project, service_id),
                        });
                    }
                },
                Mark::Instance {
                    service_id,
                    instance_id,
                } => {
                    // A deleted service's instances go with it (its own mark).
                    let Some(e) = self.services.get(service_id) else {
                        continue;
                    };
                    let key = keys::instance(&e.domain, &e.project, service_id, instance_id);
                    let lease_key = keys::lease(&e.domain, &e.project, service_id, instance_id);
                    match e.instances.get(instance_id) {
                        Some(r) => puts.push(Write::PutInstance {
                            key,
                            value: to_json(&r.body),
                            lease_key,
                            ttl_secs: r.ttl_secs,
                            deadline_ms: deadline_ms(r.deadline),
                        }),
                        None => {
                            deletes.push(Write::Delete { key });
                            deletes.push(Write::Delete { key: lease_key });
                        }
                    }
                }
                Mark::Key(key) => match self.stored_value(key) {
                    Some(value) => puts.push(Write::Put {
                        key: key.clone(),
                        value,
                    }),
                    None => deletes.push(Write::Delete { key: key.clone() }),
                },
            }
        }
        for (sid, ids) in &taken.renewed {
            let Some(e) = self.services.get(sid) else {
                continue;
            };
            for iid in ids {
                if let Some(r) = e.instances.get(iid) {
                    puts.push(Write::Renew {
                        lease_key: keys::lease(&e.domain, &e.project, sid, iid),
                        ttl_secs: r.ttl_secs,
                        deadline_ms: deadline_ms(r.deadline),
                    });
                }
            }
        }
        deletes.append(&mut puts);
        (deletes, taken)
    }

    /// The stored value of a record marked with [`Mark::Key`] (`None`: it is gone). The
    /// extension point for record kinds without their own mark (see `store/mod.rs`).
    pub(crate) fn stored_value(&self, key: &str) -> Option<Vec<u8>> {
        match keys::parse(key) {
            keys::Parsed::Service { .. }
            | keys::Parsed::Index
            | keys::Parsed::Instance { .. }
            | keys::Parsed::Lease { .. } => None,
            // Schemas, tags, rules, dependency rules (`records.rs`).
            keys::Parsed::Other => records::stored_value(self, key),
        }
    }

    /// Applies a stored record to the cache (load, etcd watch events): `Some` creates or
    /// replaces, `None` removes. The journal is not touched (the store already has it).
    /// Returns whether anything changed; the revision is bumped if so.
    pub(crate) fn apply_stored(
        &mut self,
        key: &str,
        value: Option<&[u8]>,
        now: Instant,
        _now_ms: i64,
    ) -> bool {
        let changed = match keys::parse(key) {
            keys::Parsed::Service {
                domain,
                project,
                service_id,
            } => match value {
                Some(v) => match serde_json::from_slice::<MicroService>(v) {
                    Ok(s) => self.restore_service(domain, project, service_id, s),
                    Err(e) => {
                        tracing::warn!(key, error = %e, "unreadable stored service skipped");
                        false
                    }
                },
                None => self.forget_service(service_id),
            },
            keys::Parsed::Instance {
                domain,
                project,
                service_id,
                instance_id,
            } => match value {
                Some(v) => {
                    self.restore_instance(domain, project, service_id, instance_id, v, None, now)
                }
                None => self.forget_instance(service_id, instance_id),
            },
            keys::Parsed::Other => records::apply(self, key, value),
            keys::Parsed::Index | keys::Parsed::Lease { .. } => false,
        };
        if changed {
            self.bump();
        }
        changed
    }

    /// Makes the cache hold exactly `records` (an etcd reload): applies them all and
    /// removes services and instances they do not contain.
    pub(crate) fn retain_stored(
        &mut self,
        records: &[(String, Vec<u8>)],
        now: Instant,
        now_ms: i64,
    ) {
        let present: std::collections::HashSet<&str> =
            records.iter().map(|(k, _)| k.as_str()).collect();
        let gone: Vec<String> = self
            .services
            .iter()
            .filter(|(id, e)| !present.contains(keys::service(&e.domain, &e.project, id).as_str()))
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            self.forget_service(&id);
        }
        let gone: Vec<(String, String)> = self
            .services
            .iter()
            .flat_map(|(sid, e)| {
                e.instances.keys().filter_map(|iid| {
                    let key = keys::instance(&e.domain, &e.project, sid, iid);
                    (!present.contains(key.as_str())).then(|| (sid.clone(), iid.clone()))
                })
            })
            .collect();
        for (sid, iid) in gone {
            self.forget_instance(&sid, &iid);
        }
        for (k, v) in records {
            if let keys::Parsed::Service { .. } = keys::parse(k) {
                self.apply_stored(k, Some(v), now, now_ms);
            }
        }
        for (k, v) in records {
            if !matches!(keys::parse(k), keys::Parsed::Service { .. }) {
                self.apply_stored(k, Some(v), now, now_ms);
            }
        }
        self.changelog.reset(self.revision + 1);
        self.bump();
    }

    /// Inserts or replaces a stored service (indexes rebuilt, instances kept).
    fn restore_service(
        &mut self,
        domain: &str,
        project: &str,
        service_id: &str,
        mut s: MicroService,
    ) -> bool {
        s.service_id = service_id.to_string();
        if let Some(e) = self.services.get(service_id) {
            if e.service == s && e.domain == domain && e.project == project {
                return false;
            }
        }
        self.log_service(service_id);
        let (instances, old_app) = match self.services.remove(service_id) {
            Some(old) => {
                self.unindex(&old);
                let app = mapped_eureka_app(&old.domain, &old.project, &old.service.service_name)
                    .map(|a| (a, old.service.service_name.clone()));
                (old.instances, app)
            }
            None => (BTreeMap::new(), None),
        };
        let new_app = mapped_eureka_app(domain, project, &s.service_name);
        if old_app.as_ref().map(|(a, _)| a) != new_app.as_ref() {
            // Its instances move between Eureka apps (or in or out of them).
            for (iid, rec) in &instances {
                if let Some((app, name)) = &old_app {
                    self.eureka.removed(app.clone(), name, rec.clone());
                }
                if let Some(app) = &new_app {
                    self.eureka.touch(app.clone(), iid);
                }
            }
        }
        let name_key: NameKey = (
            domain.to_string(),
            project.to_string(),
            s.environment.clone(),
            s.app_id.clone(),
            s.service_name.clone(),
        );
        if let Some(app) = mapped_eureka_app(domain, project, &s.service_name) {
            self.by_app
                .entry(app)
                .or_default()
                .insert(service_id.to_string());
        }
        self.by_name
            .entry(name_key.clone())
            .or_default()
            .insert(service_id.to_string());
        self.by_key
            .insert((name_key, s.version.clone()), service_id.to_string());
        self.services.insert(
            service_id.to_string(),
            ServiceEntry {
                domain: domain.to_string(),
                project: project.to_string(),
                service: s,
                instances,
            },
        );
        true
    }

    /// Removes a service's index entries.
    fn unindex(&mut self, entry: &ServiceEntry) {
        let s = &entry.service;
        let id = &s.service_id;
        let name_key: NameKey = (
            entry.domain.clone(),
            entry.project.clone(),
            s.environment.clone(),
            s.app_id.clone(),
            s.service_name.clone(),
        );
        if self.by_key.get(&(name_key.clone(), s.version.clone())) == Some(id) {
            self.by_key.remove(&(name_key.clone(), s.version.clone()));
        }
        if let Some(set) = self.by_name.get_mut(&name_key) {
            set.remove(id);
            if set.is_empty() {
                self.by_name.remove(&name_key);
            }
        }
        if let Some(app) = mapped_eureka_app(&entry.domain, &entry.project, &s.service_name) {
            if let Some(set) = self.by_app.get_mut(&app) {
                set.remove(id);
                if set.is_empty() {
                    self.by_app.remove(&app);
                }
            }
        }
    }

    /// Removes a service and its instances from the cache only.
    fn forget_service(&mut self, id: &str) -> bool {
        let Some(entry) = self.services.remove(id) else {
            return false;
        };
        for (iid, rec) in &entry.instances {
            self.leases
                .remove(&(rec.deadline, id.to_string(), iid.clone()));
        }
        self.unindex(&entry);
        self.eureka_gone_service(entry);
        true
    }

    /// Inserts or replaces a stored instance of a known service. A new one gets the lease
    /// time `remaining` (default: its whole TTL); a known one keeps its lease and Eureka
    /// fields. False when the service is unknown, the body unreadable or unchanged.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn restore_instance(
        &mut self,
        domain: &str,
        project: &str,
        service_id: &str,
        instance_id: &str,
        value: &[u8],
        remaining: Option<Duration>,
        now: Instant,
    ) -> bool {
        let mut body: MicroServiceInstance = match serde_json::from_slice(value) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(service_id, instance_id, error = %e, "unreadable stored instance skipped");
                return false;
            }
        };
        body.instance_id = instance_id.to_string();
        body.service_id = service_id.to_string();
        let Some(entry) = self
            .services
            .get_mut(service_id)
            .filter(|e| e.domain == domain && e.project == project)
        else {
            return false;
        };
        let ttl_secs = body_ttl_secs(&body);
        let wall = now_ms();
        if let Some(rec) = entry.instances.get_mut(instance_id) {
            if rec.body == body {
                return false;
            }
            rec.updated_ms = stored_ms(&body.mod_timestamp, wall);
            rec.ttl_secs = ttl_secs;
            rec.body = body;
            self.eureka_touch(service_id, instance_id);
            return true;
        }
        let full = Duration::from_secs(ttl_secs);
        let left = remaining.unwrap_or(full).min(full);
        let deadline = now + left;
        let rec = InstanceRecord {
            registered_ms: stored_ms(&body.timestamp, wall),
            updated_ms: stored_ms(&body.mod_timestamp, wall),
            renewed_ms: wall,
            body,
            eureka: None,
            ttl_secs,
            deadline,
        };
        entry.instances.insert(instance_id.to_string(), rec);
        self.leases
            .insert((deadline, service_id.to_string(), instance_id.to_string()));
        self.eureka_touch(service_id, instance_id);
        true
    }

    /// Removes an instance from the cache only.
    fn forget_instance(&mut self, service_id: &str, instance_id: &str) -> bool {
        let Some(rec) = self
            .services
            .get_mut(service_id)
            .and_then(|e| e.instances.remove(instance_id))
        else {
            return false;
        };
        self.leases.remove(&(
            rec.deadline,
            service_id.to_string(),
            instance_id.to_string(),
        ));
        self.eureka_gone(service_id, rec);
        true
    }
}

fn instance_missing(id: &str) -> ScError {
    ScError::new(INSTANCE_NOT_EXISTS, format!("instance {id} does not exist"))
}

/// SC status → Eureka status (`TESTING` → `STARTING`, `OUTOFSERVICE` → `OUT_OF_SERVICE`).
pub fn sc_to_eureka_status(s: &str) -> &'static str {
    match s {
        "DOWN" => "DOWN",
        "STARTING" | "TESTING" => "STARTING",
        "OUTOFSERVICE" => "OUT_OF_SERVICE",
        "UP" => "UP",
        _ => "UNKNOWN",
    }
}

/// Eureka status → SC status (`OUT_OF_SERVICE` → `OUTOFSERVICE`; `UNKNOWN` → `DOWN`).
pub fn eureka_to_sc_status(s: &str) -> &'static str {
    match s {
        "UP" => "UP",
        "STARTING" => "STARTING",
        "OUT_OF_SERVICE" => "OUTOFSERVICE",
        _ => "DOWN",
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn svc(name: &str, version: &str) -> MicroService {
        MicroService {
            service_name: name.into(),
            version: version.into(),
            ..MicroService::default()
        }
    }

    fn inst(id: &str) -> MicroServiceInstance {
        MicroServiceInstance {
            instance_id: id.into(),
            host_name: "h".into(),
            endpoints: vec!["rest://127.0.0.1:8080".into()],
            ..MicroServiceInstance::default()
        }
    }

    #[test]
    fn default_service_id_is_sha1_of_the_index_key() {
        let id = default_service_id("default", "default", "", "default", "hello", "0.0.1");
        let expect = hex::encode(Sha1::digest(
            b"/cse-sr/ms/indexes/default/default//default/hello/0.0.1",
        ));
        assert_eq!(id, expect);
        assert_eq!(id.len(), 40);
    }

    #[test]
    fn version_rules_pick_latest_range_and_exact() {
        let mut r = Registry::default();
        for v in ["1.9", "1.10", "0.0.1"] {
            r.create_service("d", "p", svc("s", v), 0).unwrap();
        }
        let key = (
            "d".into(),
            "p".into(),
            String::new(),
            "default".into(),
            "s".into(),
        );
        let latest = r.resolve(&key, "latest").unwrap();
        assert_eq!(r.services[&latest[0]].service.version, "1.10");
        assert_eq!(r.resolve(&key, "1.0+").unwrap().len(), 2);
        assert_eq!(r.resolve(&key, "0.0.1-1.10").unwrap().len(), 2);
        assert_eq!(r.resolve(&key, "1.9").unwrap().len(), 1);
        assert_eq!(r.resolve(&key, "2.0").unwrap_err().code, SERVICE_NOT_EXISTS);
    }

    #[test]
    fn leases_expire_in_deadline_order_and_keep_the_service() {
        let mut r = Registry::default();
        let (sid, _) = r.create_service("d", "p", svc("s", "1"), 0).unwrap();
        let t0 = Instant::now();
        let mut a = inst("a");
        a.health_check = Some(HealthCheck {
            mode: "push".into(),
            interval: 1,
            times: 1,
            ..HealthCheck::default()
        });
        r.register_instance("d", "p", &sid, a, t0, 0).unwrap();
        r.register_instance("d", "p", &sid, inst("b"), t0, 0)
            .unwrap();
        assert_eq!(r.expire(t0 + Duration::from_secs(1)), 0);
        assert_eq!(r.expire(t0 + Duration::from_secs(2)), 1);
        assert_eq!(r.list_instances("d", "p", &sid).unwrap().len(), 1);
        r.heartbeat("d", "p", &sid, "b", t0 + Duration::from_secs(100), 0)
            .unwrap();
        assert_eq!(r.expire(t0 + Duration::from_secs(121)), 0);
        assert_eq!(r.expire(t0 + Duration::from_secs(220)), 1);
        assert!(r.service("d", "p", &sid).is_ok());
    }

    #[test]
    fn names_follow_the_service_center_pattern() {
        assert!(name_ok("a", false));
        assert!(name_ok("hello-server.v2", false));
        assert!(!name_ok("-x", false));
        assert!(!name_ok("x:y", false));
        assert!(name_ok("x:y", true));
        assert!(env_ok("") && env_ok("production") && !env_ok("prod"));
    }
}
