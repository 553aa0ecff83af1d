//! service-center v4 JSON shapes (`1.3.0:server/core/proto/services.pb.go`) and their
//! conversion to and from the neutral model. Only the fields the syncer reads or writes are
//! modelled; unknown fields are ignored, absent ones (Go `omitempty`) default.

use serde::{Deserialize, Serialize};
use syncer_plugin_api::{HealthCheck, Instance, InstanceStatus, Listed, Service, Snapshot};

use syncer_plugin_http::client::Reply;

pub(crate) use syncer_wire_servicecenter::error::ErrorBody;
pub(crate) use syncer_wire_servicecenter::{
    HealthCheck as WireHealthCheck, IdReply, InstancesReply, MicroService, MicroServiceInstance,
    RegisterInstanceRequest, ServicesReply,
};

use crate::endpoint;

/// Default heartbeat interval, seconds (service-center's instance default).
pub(crate) const DEFAULT_INTERVAL_SECS: u32 = 30;
/// Default tolerated missed heartbeats (service-center's instance default).
pub(crate) const DEFAULT_TIMES: u32 = 3;

/// The service-center error code of a non-2xx reply, and a message naming it.
pub(crate) fn failure(reply: &Reply) -> (Option<u32>, String) {
    match serde_json::from_slice::<ErrorBody>(&reply.body) {
        Ok(body) if body.error_code.is_some() => {
            let code = body.error_code;
            let mut message = format!(
                "{} {}: {}",
                reply.status,
                code.map(|c| c.to_string()).unwrap_or_default(),
                body.error_message
            );
            if !body.detail.is_empty() {
                message.push_str(&format!(" ({})", body.detail));
            }
            (code, message)
        }
        _ => (None, format!("{}: {}", reply.status, reply.text())),
    }
}

/// `POST .../microservices` body.
#[derive(Debug, Serialize)]
pub(crate) struct CreateServiceRequest<'a> {
    pub service: &'a MicroService,
}

/// One `{key, rev, value}` entry of the admin dump's cache.
#[derive(Debug, Deserialize)]
pub(crate) struct DumpEntry<T> {
    #[serde(default)]
    pub key: String,
    pub value: Option<T>,
}

/// Services and instances of dump entries (of the admin dump or the change log) as the
/// neutral model, by [`parse_dump`]'s rules: the tenant from the key, service-center's own
/// service and its instances left out.
pub(crate) fn from_entries(
    services: Vec<DumpEntry<MicroService>>,
    instances: Vec<DumpEntry<MicroServiceInstance>>,
) -> Snapshot {
    let mut snapshot = Snapshot::default();
    let mut emit = |batch: Vec<Listed>| {
        for record in batch {
            match record {
                Listed::Service(s) => snapshot.services.push(s),
                Listed::Instance(i) => snapshot.instances.push(i),
            }
        }
        true
    };
    let mut sink = DumpSink {
        batch: Vec::new(),
        emit: &mut emit,
        skipped: std::collections::HashSet::new(),
    };
    // Collecting never stops the sink, so these cannot fail.
    let converted: Result<(), serde_json::Error> = services
        .into_iter()
        .try_for_each(|e| sink.service(e))
        .and_then(|()| instances.into_iter().try_for_each(|e| sink.instance(e)))
        .and_then(|()| sink.flush());
    debug_assert!(converted.is_ok());
    snapshot
}

/// Records a streamed dump parse hands over at a time.
const DUMP_BATCH: usize = 512;

/// Where [`parse_dump`] puts records: batches of [`DUMP_BATCH`], handed to `emit`, which
/// answers false when nobody takes them any more (the parse then stops).
struct DumpSink<'e> {
    batch: Vec<Listed>,
    emit: &'e mut dyn FnMut(Vec<Listed>) -> bool,
    /// Ids of services left out (service-center's own), whose instances go with them.
    skipped: std::collections::HashSet<String>,
}

impl DumpSink<'_> {
    fn push<E: serde::de::Error>(&mut self, record: Listed) -> Result<(), E> {
        self.batch.push(record);
        if self.batch.len() >= DUMP_BATCH {
            return self.flush();
        }
        Ok(())
    }

    fn flush<E: serde::de::Error>(&mut self) -> Result<(), E> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(DUMP_BATCH));
        if (self.emit)(batch) {
            Ok(())
        } else {
            Err(E::custom("listing abandoned"))
        }
    }

    fn service<E: serde::de::Error>(&mut self, entry: DumpEntry<MicroService>) -> Result<(), E> {
        let Some(service) = entry.value else {
            return Ok(());
        };
        if is_servicecenter_itself(&service) || service.service_id.is_empty() {
            self.skipped.insert(service.service_id);
            return Ok(());
        }
        self.push(Listed::Service(
            service.to_service(&dump_tenant(&entry.key)),
        ))
    }

    fn instance<E: serde::de::Error>(
        &mut self,
        entry: DumpEntry<MicroServiceInstance>,
    ) -> Result<(), E> {
        let Some(instance) = entry.value else {
            return Ok(());
        };
        // /cse-sr/inst/files/<domain>/<project>/<serviceId>/<instanceId>
        let from_key = entry.key.split('/').nth(6).unwrap_or_default();
        let instance = instance.to_instance(from_key);
        if self.skipped.contains(&instance.service_id) {
            return Ok(());
        }
        self.push(Listed::Instance(instance))
    }
}

/// The tenant of a dump entry's key `/cse-sr/ms/files/<domain>/<project>/<serviceId>`.
fn dump_tenant(key: &str) -> String {
    let parts: Vec<&str> = key.split('/').collect();
    match (parts.get(4), parts.get(5)) {
        (Some(d), Some(p)) if !d.is_empty() && !p.is_empty() => {
            format!("{}/{}", key_segment(d), key_segment(p))
        }
        _ => syncer_plugin_api::DEFAULT_DOMAIN_PROJECT.to_owned(),
    }
}

/// A key segment as the built-in core escapes it (`%25` → `%`, `%2F` → `/`; its
/// `store::keys`), unescaped. service-center does not escape; a name of its holding `%25`
/// or `%2F` would be misread (none of its own names do).
fn key_segment(s: &str) -> String {
    s.replace("%2F", "/")
        .replace("%2f", "/")
        .replace("%25", "%")
}

/// Walks `{"cache": {"services": [...], "instances": [...]}}`, converting each entry as it is
/// read; every other field is skipped unread.
struct DumpSeed<'s, 'e>(&'s mut DumpSink<'e>);

/// Which list of the cache a [`EntriesSeed`] walks.
#[derive(Clone, Copy)]
enum Entries {
    Services,
    Instances,
}

struct CacheSeed<'s, 'e>(&'s mut DumpSink<'e>);
struct EntriesSeed<'s, 'e>(&'s mut DumpSink<'e>, Entries);

impl<'de> serde::de::DeserializeSeed<'de> for DumpSeed<'_, '_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for DumpSeed<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an admin dump object")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if key == "cache" {
                map.next_value_seed(CacheSeed(&mut *self.0))?;
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for CacheSeed<'_, '_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for CacheSeed<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the dump's cache object")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            match key.as_ref() {
                "services" => map.next_value_seed(EntriesSeed(&mut *self.0, Entries::Services))?,
                "instances" => {
                    map.next_value_seed(EntriesSeed(&mut *self.0, Entries::Instances))?
                }
                _ => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for EntriesSeed<'_, '_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for EntriesSeed<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a list of dump entries")
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        Ok(()) // null: no entries
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        match self.1 {
            Entries::Services => {
                while let Some(entry) = seq.next_element::<DumpEntry<MicroService>>()? {
                    self.0.service(entry)?;
                }
            }
            Entries::Instances => {
                while let Some(entry) = seq.next_element::<DumpEntry<MicroServiceInstance>>()? {
                    self.0.instance(entry)?;
                }
            }
        }
        Ok(())
    }
}

/// Parses an admin dump from `reader` without holding it: each service and instance is
/// converted as it is read and handed to `emit` in
/// batches; `emit` answering false stops the parse. Service-center's own service and its
/// instances are left out; instances may come before their service.
///
/// # Errors
/// The JSON error where the body is not an admin dump (or `emit` stopped it).
pub(crate) fn parse_dump(
    reader: impl std::io::Read,
    emit: &mut dyn FnMut(Vec<Listed>) -> bool,
) -> Result<(), serde_json::Error> {
    use serde::de::DeserializeSeed;
    let mut sink = DumpSink {
        batch: Vec::with_capacity(DUMP_BATCH),
        emit,
        skipped: std::collections::HashSet::new(),
    };
    let mut de =
        serde_json::Deserializer::from_reader(std::io::BufReader::with_capacity(64 * 1024, reader));
    DumpSeed(&mut sink).deserialize(&mut de)?;
    de.end()?;
    sink.flush()
}

/// `POST .../instances/action?type=register` body (the built-in core's batch creation and
/// registration).
#[derive(Debug, Serialize)]
pub(crate) struct BatchRegisterRequest {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<MicroService>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub instances: Vec<MicroServiceInstance>,
}

/// One instance of a batch heartbeat.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct InstanceKey<'a> {
    pub service_id: &'a str,
    pub instance_id: &'a str,
}

/// `PUT .../heartbeats` body (service-center's batch heartbeat).
#[derive(Debug, Serialize)]
pub(crate) struct HeartbeatsRequest<'a> {
    pub instances: Vec<InstanceKey<'a>>,
}

/// One item of the batch reply: the service or instance id, or an error.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct BatchRegisterItem {
    #[serde(default)]
    pub service_id: String,
    #[serde(default)]
    pub instance_id: String,
    #[serde(default)]
    pub error_code: String,
    #[serde(default)]
    pub error_message: String,
    #[serde(default)]
    pub detail: String,
}

/// The batch reply.
#[derive(Debug, Deserialize)]
pub(crate) struct BatchRegisterReply {
    #[serde(default)]
    pub services: Vec<BatchRegisterItem>,
    #[serde(default)]
    pub instances: Vec<BatchRegisterItem>,
}

/// One instance removed, in a change read.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RemovedInstance {
    pub service_id: String,
    pub instance_id: String,
}

/// `GET /v4/default/admin/changes` (the built-in core's change log).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ChangesReply {
    pub revision: u64,
    #[serde(default)]
    pub services: Vec<DumpEntry<MicroService>>,
    #[serde(default)]
    pub instances: Vec<DumpEntry<MicroServiceInstance>>,
    #[serde(default)]
    pub removed: Vec<RemovedInstance>,
    #[serde(default)]
    pub removed_services: Vec<String>,
}

impl ChangesReply {
    /// To a change set, with the dump's rules (tenant from the key, service-center's own
    /// service and its instances left out).
    pub(crate) fn into_change_set(self) -> syncer_plugin_api::ChangeSet {
        let snapshot = from_entries(self.services, self.instances);
        syncer_plugin_api::ChangeSet {
            revision: self.revision,
            services: snapshot.services,
            instances: snapshot.instances,
            removed: self
                .removed
                .into_iter()
                .map(|r| (r.service_id, r.instance_id))
                .collect(),
            removed_services: self.removed_services,
        }
    }
}

/// Splits `domain/project`; a missing part is `default`.
pub(crate) fn split_domain_project(domain_project: &str) -> (&str, &str) {
    let (domain, project) = domain_project
        .split_once('/')
        .unwrap_or((domain_project, ""));
    (
        if domain.is_empty() { "default" } else { domain },
        if project.is_empty() {
            "default"
        } else {
            project
        },
    )
}

/// Whether a service is service-center's own registration, which is never exported.
pub(crate) fn is_servicecenter_itself(service: &MicroService) -> bool {
    service.app_id == "default" && service.service_name == "SERVICECENTER"
}

/// Conversion of a [`MicroService`] to and from the neutral model.
pub(crate) trait ServiceExt {
    /// To the neutral model, in tenant `domain_project`.
    fn to_service(&self, domain_project: &str) -> Service;
    /// From the neutral model: the body of a create.
    fn from_service(service: &Service) -> Self;
}

impl ServiceExt for MicroService {
    /// To the neutral model, in tenant `domain_project`.
    fn to_service(&self, domain_project: &str) -> Service {
        Service {
            domain_project: domain_project.to_owned(),
            service_id: self.service_id.clone(),
            app_id: self.app_id.clone(),
            service_name: self.service_name.clone(),
            version: self.version.clone(),
            environment: self.environment.clone(),
            properties: self.properties.clone().into(),
        }
    }

    /// From the neutral model: the body of a create (the serviceId only when the caller chose one).
    fn from_service(service: &Service) -> Self {
        MicroService {
            service_id: service.service_id.clone(),
            app_id: service.app_id.clone(),
            service_name: service.service_name.clone(),
            version: service.version.clone(),
            environment: service.environment.clone(),
            properties: service.properties.clone().into(),
            ..MicroService::default()
        }
    }
}

/// Clamps a wire integer into `u32` (negative → 0).
fn to_u32(v: i64) -> u32 {
    u32::try_from(v.max(0)).unwrap_or(u32::MAX)
}

/// Conversion of a [`MicroServiceInstance`] to and from the neutral model.
pub(crate) trait InstanceExt {
    /// To the neutral model; `service_id` when the body names none.
    fn to_instance(&self, service_id: &str) -> Instance;
    /// From the neutral model: the body of a register.
    fn from_instance(instance: &Instance) -> Self;
}

impl InstanceExt for MicroServiceInstance {
    /// To the neutral model. `service_id` fills in an instance body that lacks its own.
    fn to_instance(&self, service_id: &str) -> Instance {
        Instance {
            instance_id: self.instance_id.clone(),
            service_id: if self.service_id.is_empty() {
                service_id.to_owned()
            } else {
                self.service_id.clone()
            },
            host_name: self.host_name.clone(),
            endpoints: self
                .endpoints
                .iter()
                .map(|e| endpoint::to_neutral(e))
                .collect(),
            status: InstanceStatus::parse(&self.status),
            // 0 is what an absent field reads as (service-center omits zeros): the default.
            health_check: self.health_check.as_ref().map(|h| HealthCheck {
                interval_secs: if h.interval > 0 {
                    to_u32(h.interval)
                } else {
                    DEFAULT_INTERVAL_SECS
                },
                times: if h.times > 0 {
                    to_u32(h.times)
                } else {
                    DEFAULT_TIMES
                },
                url: h.url.clone(),
            }),
            properties: self.properties.clone().into(),
        }
    }

    /// From the neutral model: the body of a register. The health check is always `push`
    /// (the syncer heartbeats); without one it is service-center's default 30 s × 3.
    fn from_instance(instance: &Instance) -> Self {
        let (interval, times, url) = match &instance.health_check {
            Some(h) => (h.interval_secs.max(1), h.times, h.url.clone()),
            None => (DEFAULT_INTERVAL_SECS, DEFAULT_TIMES, String::new()),
        };
        let host_name = if instance.host_name.is_empty() {
            instance
                .endpoints
                .iter()
                .find_map(|e| {
                    syncer_plugin_http::endpoint::Endpoint::parse(e).map(|e| e.host.to_owned())
                })
                .unwrap_or_else(|| "unknown".to_owned())
        } else {
            instance.host_name.clone()
        };
        MicroServiceInstance {
            instance_id: instance.instance_id.clone(),
            service_id: String::new(),
            endpoints: instance
                .endpoints
                .iter()
                .map(|e| endpoint::to_servicecenter(e))
                .collect(),
            host_name,
            status: instance.status.as_servicecenter().to_owned(),
            health_check: Some(WireHealthCheck {
                mode: "push".to_owned(),
                interval: i64::from(interval),
                times: i64::from(times),
                url,
                ..WireHealthCheck::default()
            }),
            properties: instance.properties.clone().into(),
            ..MicroServiceInstance::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use syncer_plugin_api::{ORIGIN_CLUSTER, ORIGIN_INSTANCE_ID, ORIGIN_SERVICE_ID};

    const INSTANCE_JSON: &str = r#"{
        "instanceId": "4d41a637471f11e9888cfa163eca30e0",
        "serviceId": "b7ca4e4c3d7c2e1e5f1a",
        "endpoints": ["rest://10.0.0.5:8080", "rest://10.0.0.5:8443?sslEnabled=true", "highway://10.0.0.5:7070"],
        "hostName": "node-5",
        "status": "OUTOFSERVICE",
        "properties": {"syncerOriginCluster": "dc1", "syncerOriginServiceId": "s1",
                       "syncerOriginInstanceId": "i1", "engineID": "default"},
        "healthCheck": {"mode": "push", "interval": 10, "times": 2},
        "timestamp": "1556000000", "modTimestamp": "1556000000", "version": "1.0.0",
        "dataCenterInfo": {"name": "dc", "region": "r", "availableZone": "z"}
    }"#;

    #[test]
    fn an_instance_body_becomes_a_neutral_instance() {
        let wire: MicroServiceInstance = serde_json::from_str(INSTANCE_JSON).expect("decodes");
        let instance = wire.to_instance("ignored");
        assert_eq!(instance.instance_id, "4d41a637471f11e9888cfa163eca30e0");
        assert_eq!(instance.service_id, "b7ca4e4c3d7c2e1e5f1a");
        assert_eq!(instance.host_name, "node-5");
        assert_eq!(
            instance.endpoints,
            [
                "http://10.0.0.5:8080",
                "https://10.0.0.5:8443",
                "highway://10.0.0.5:7070"
            ]
        );
        assert_eq!(instance.status, InstanceStatus::OutOfService);
        assert_eq!(
            instance.health_check,
            Some(HealthCheck {
                interval_secs: 10,
                times: 2,
                url: String::new()
            })
        );
        assert_eq!(instance.properties[ORIGIN_CLUSTER], "dc1");
        assert_eq!(instance.properties[ORIGIN_SERVICE_ID], "s1");
        assert_eq!(instance.properties[ORIGIN_INSTANCE_ID], "i1");
        assert_eq!(instance.properties.len(), 4);
    }

    #[test]
    fn a_minimal_instance_body_decodes_with_defaults() {
        let wire: MicroServiceInstance =
            serde_json::from_str(r#"{"instanceId":"i","status":"UP"}"#).expect("decodes");
        let instance = wire.to_instance("sid");
        assert_eq!(instance.service_id, "sid");
        assert!(instance.endpoints.is_empty());
        assert_eq!(instance.health_check, None);
        assert_eq!(instance.status, InstanceStatus::Up);
    }

    #[test]
    fn a_neutral_instance_becomes_a_register_body() {
        let mut instance = Instance {
            instance_id: "abc".into(),
            service_id: "x".into(),
            host_name: String::new(),
            endpoints: vec!["http://[::1]:80".into(), "https://h:8443".into()],
            status: InstanceStatus::Unknown,
            health_check: None,
            properties: BTreeMap::from([(ORIGIN_CLUSTER.to_owned(), "dc2".to_owned())]),
        };
        let body = serde_json::to_value(RegisterInstanceRequest {
            instance: MicroServiceInstance::from_instance(&instance),
        })
        .expect("encodes");
        assert_eq!(
            body,
            serde_json::json!({"instance": {
                "instanceId": "abc",
                "endpoints": ["rest://[::1]:80", "rest://h:8443?sslEnabled=true"],
                "hostName": "::1",
                "status": "DOWN",
                "healthCheck": {"mode": "push", "interval": 30, "times": 3},
                "properties": {"syncerOriginCluster": "dc2"}
            }})
        );
        instance.health_check = Some(HealthCheck {
            interval_secs: 5,
            times: 1,
            url: "http://h/health".into(),
        });
        instance.host_name = "h".into();
        let wire = MicroServiceInstance::from_instance(&instance);
        let hc = wire.health_check.expect("health check");
        assert_eq!((hc.interval, hc.times), (5, 1));
        assert_eq!(hc.url, "http://h/health");
        assert_eq!(wire.host_name, "h");
    }

    #[test]
    fn service_bodies_convert_both_ways() {
        let wire: MicroService = serde_json::from_str(
            r#"{"serviceId":"s","appId":"a","serviceName":"n","version":"1.0.0",
                "environment":"production","properties":{"k":"v"},"level":"BACK","status":"UP"}"#,
        )
        .expect("decodes");
        let service = wire.to_service("d/p");
        assert_eq!(service.domain_project, "d/p");
        assert_eq!(
            (service.app_id.as_str(), service.service_name.as_str()),
            ("a", "n")
        );
        assert_eq!(service.environment, "production");
        let body = serde_json::to_value(CreateServiceRequest {
            service: &MicroService::from_service(&Service {
                service_id: String::new(),
                ..service
            }),
        })
        .expect("encodes");
        assert_eq!(
            body,
            serde_json::json!({"service": {"appId": "a", "serviceName": "n", "version": "1.0.0",
                "environment": "production", "properties": {"k": "v"}}})
        );
    }

    #[test]
    fn error_codes_decode_from_strings_and_numbers() {
        let e: ErrorBody = serde_json::from_str(
            r#"{"errorCode":"400012","errorMessage":"Micro-service does not exist"}"#,
        )
        .expect("decodes");
        assert_eq!(e.error_code, Some(400012));
        let e: ErrorBody = serde_json::from_str(r#"{"errorCode":400017}"#).expect("decodes");
        assert_eq!(e.error_code, Some(400017));
    }

    #[test]
    fn a_dump_key_tenant_is_unescaped_as_the_core_escapes_it() {
        assert_eq!(dump_tenant("/cse-sr/ms/files/dom%251/p/s"), "dom%1/p");
        assert_eq!(dump_tenant("/cse-sr/ms/files/d/p/s"), "d/p");
    }

    #[test]
    fn domain_project_splits_with_defaults() {
        assert_eq!(split_domain_project("d/p"), ("d", "p"));
        assert_eq!(split_domain_project("d"), ("d", "default"));
        assert_eq!(split_domain_project(""), ("default", "default"));
    }

    #[test]
    fn a_large_dump_is_handed_over_in_batches() {
        let instances: Vec<String> = (0..1100)
            .map(|n| {
                format!(
                    r#"{{"key":"/cse-sr/inst/files/default/default/s1/i{n}","value":{{"instanceId":"i{n}","endpoints":["rest://h:{n}"],"status":"UP"}}}}"#
                )
            })
            .collect();
        let body = format!(
            r#"{{"cache":{{"instances":[{}],"services":[{{"key":"/cse-sr/ms/files/default/default/s1","value":{{"serviceId":"s1","appId":"a","serviceName":"n","version":"1.0.0"}}}}]}}}}"#,
            instances.join(",")
        );
        let mut batches = Vec::new();
        parse_dump(body.as_bytes(), &mut |batch| {
            batches.push(batch);
            true
        })
        .expect("decodes");
        let sizes: Vec<usize> = batches.iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![DUMP_BATCH, DUMP_BATCH, 1101 - 2 * DUMP_BATCH]);
        let last = batches.last().and_then(|b| b.last());
        assert!(
            matches!(last, Some(Listed::Service(s)) if s.service_id == "s1"),
            "instances before their service are handed over as they come"
        );
    }

    #[test]
    fn an_admin_dump_becomes_a_snapshot_of_all_tenants() {
        let body = r#"{"cache":{"services":[
                {"key":"/cse-sr/ms/files/default/default/sc","rev":1,"value":
                    {"serviceId":"sc","appId":"default","serviceName":"SERVICECENTER","version":"1.3.0"}},
                {"key":"/cse-sr/ms/files/acme/prod/s1","rev":2,"value":
                    {"serviceId":"s1","appId":"a","serviceName":"n","version":"1.0.0"}}],
              "instances":[
                {"key":"/cse-sr/inst/files/default/default/sc/i0","rev":3,"value":
                    {"instanceId":"i0","serviceId":"sc","endpoints":["rest://h:30100"],"status":"UP"}},
                {"key":"/cse-sr/inst/files/acme/prod/s1/i1","rev":4,"value":
                    {"instanceId":"i1","endpoints":["rest://h:1"],"status":"DOWN"}}]},
              "other":{"ignored":[1,2]}}"#;
        let mut snapshot = Snapshot::default();
        parse_dump(body.as_bytes(), &mut |batch| {
            for record in batch {
                match record {
                    Listed::Service(s) => snapshot.services.push(s),
                    Listed::Instance(i) => snapshot.instances.push(i),
                }
            }
            true
        })
        .expect("decodes");
        assert_eq!(snapshot.services.len(), 1);
        assert_eq!(snapshot.services[0].domain_project, "acme/prod");
        assert_eq!(snapshot.instances.len(), 1);
        assert_eq!(snapshot.instances[0].service_id, "s1");
        assert_eq!(snapshot.instances[0].status, InstanceStatus::Down);
        assert!(
            parse_dump(&b"{\"cache\":{\"services\":[{]}}"[..], &mut |_| true).is_err(),
            "a broken body is an error"
        );
        assert!(
            parse_dump(body.as_bytes(), &mut |_| false).is_err(),
            "a consumer that stops the parse stops it"
        );
    }
}
