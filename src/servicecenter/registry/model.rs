//! The records of the registry: microservices and instances as they travel in service-center
//! v4 JSON, the Eureka side record, and an instance with its lease.

use super::*;

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
pub(super) type NameKey = (String, String, String, String, String);
/// (domain, project, env, appId, serviceName, version).
pub(super) type ServiceKey = (NameKey, String);

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
