//! The service-center v4 records as they travel in JSON (`1.3.0:server/core/proto/services.pb.go`):
//! [`MicroService`], [`MicroServiceInstance`] and their parts.
//!
//! Reading is lenient the way service-center's Go decoder is: an absent field (or `null`)
//! is its zero value, unknown fields are ignored. Writing leaves out empty fields, like Go's
//! `omitempty`.

use serde::{Deserialize, Serialize};

pub use crate::props::Props;
pub use crate::stamp::Stamp;

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
    /// Creation time, unix seconds as a string (set by the server; [`Stamp`]).
    #[serde(skip_serializing_if = "Stamp::is_empty")]
    pub timestamp: Stamp,
    /// Alias name.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub alias: String,
    /// Load-balancing strategy map.
    #[serde(rename = "LBStrategy", skip_serializing_if = "is_empty_map")]
    pub lb_strategy: Props,
    /// Last modification time, unix seconds as a string (set by the server).
    #[serde(skip_serializing_if = "Stamp::is_empty")]
    pub mod_timestamp: Stamp,
    /// Empty or `development`/`testing`/`acceptance`/`production`; part of the identity.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub environment: String,
    /// `SDK`, `SIDECAR` or `PLATFORM`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub register_by: String,
    /// The framework that registered the service (boxed: most services have none, and
    /// a registry holds one record per service).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub framework: Option<Box<Framework>>,
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
    /// Registration time, unix seconds as a string ([`Stamp`]).
    #[serde(skip_serializing_if = "Stamp::is_empty")]
    pub timestamp: Stamp,
    /// Where the instance runs (boxed: most instances have none, and a registry holds
    /// one record per instance).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_center_info: Option<Box<DataCenterInfo>>,
    /// Last modification time, unix seconds as a string.
    #[serde(skip_serializing_if = "Stamp::is_empty")]
    pub mod_timestamp: Stamp,
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
