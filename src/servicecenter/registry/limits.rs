//! Quotas and size limits of the registry (issue 13 finding 6, DESIGN.md decision 11):
//! how many services, instances, and per service schemas, tags and rules it holds, and how
//! large one instance's free-form text may be.
//!
//! The quotas and their defaults are service-center's (1.3.0 `server/plugin/quota`:
//! `QUOTA_SERVICE` 50,000, `QUOTA_INSTANCE` 150,000, `QUOTA_SCHEMA`, `QUOTA_TAG` and
//! `QUOTA_RULE` 100 per service), and so is the refusal: error 400100 (HTTP 400) with the
//! detail `no quota to create SERVICE, max num is 50000, curNum is 50000, apply num is 1`
//! (`buildin/common.go`, `CommonQuotaCheck`). As in service-center, the service and instance
//! quotas count every tenant together (its count is over the root key of all domains): tenant
//! names are free, so a quota per tenant would bound nothing. Checks are O(1): the registry
//! keeps its instance count ([`Registry::instance_count`]).
//!
//! The instance size limit is this core's own (service-center bounds an instance only by its
//! 5 KiB request body): see [`instance_text_bytes`].

use super::*;
use crate::servicecenter::error::NOT_ENOUGH_QUOTA;

/// service-center's `QUOTA_SERVICE` default: microservices in all tenants.
pub const DEFAULT_QUOTA_SERVICES: usize = 50_000;
/// service-center's `QUOTA_INSTANCE` default: instances in all tenants.
pub const DEFAULT_QUOTA_INSTANCES: usize = 150_000;
/// service-center's `QUOTA_SCHEMA` default: schemas of one microservice.
pub const DEFAULT_QUOTA_SCHEMAS: usize = 100;
/// service-center's `QUOTA_TAG` default: tags of one microservice.
pub const DEFAULT_QUOTA_TAGS: usize = 100;
/// service-center's `QUOTA_RULE` default: black/white list rules of one microservice.
pub const DEFAULT_QUOTA_RULES: usize = 100;
/// Default of [`Limits::instance_metadata_bytes`]: 64 KiB.
pub const DEFAULT_INSTANCE_METADATA_BYTES: usize = 64 * 1024;

/// The quotas and size limits one registry enforces on every write of the v4 and Eureka APIs
/// (the syncer's own copies included: they come through the same API). Loading from the
/// store is not checked, so lowering a quota keeps what is stored and refuses new entries
/// until enough are gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Microservices in all tenants (`--quota-services`).
    pub services: usize,
    /// Instances in all tenants (`--quota-instances`).
    pub instances: usize,
    /// Schemas per microservice (`--quota-schemas-per-service`).
    pub schemas_per_service: usize,
    /// Tags per microservice (`--quota-tags-per-service`).
    pub tags_per_service: usize,
    /// Rules per microservice (`--quota-rules-per-service`).
    pub rules_per_service: usize,
    /// Bytes of one instance's free-form text, see [`instance_text_bytes`]
    /// (`--max-instance-metadata-bytes`).
    pub instance_metadata_bytes: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            services: DEFAULT_QUOTA_SERVICES,
            instances: DEFAULT_QUOTA_INSTANCES,
            schemas_per_service: DEFAULT_QUOTA_SCHEMAS,
            tags_per_service: DEFAULT_QUOTA_TAGS,
            rules_per_service: DEFAULT_QUOTA_RULES,
            instance_metadata_bytes: DEFAULT_INSTANCE_METADATA_BYTES,
        }
    }
}

/// What a quota counts; its name is service-center's `quota.ResourceType` string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quota {
    /// Microservices (`SERVICE`).
    Service,
    /// Instances (`INSTANCE`).
    Instance,
    /// Schemas of a service (`SCHEMA`).
    Schema,
    /// Tags of a service (`TAG`).
    Tag,
    /// Rules of a service (`RULE`).
    Rule,
}

impl Quota {
    /// service-center's name of the resource.
    pub fn name(self) -> &'static str {
        match self {
            Quota::Service => "SERVICE",
            Quota::Instance => "INSTANCE",
            Quota::Schema => "SCHEMA",
            Quota::Tag => "TAG",
            Quota::Rule => "RULE",
        }
    }
}

/// Checks that `current + apply` stays within `max`.
///
/// # Errors
/// 400100 with service-center's detail
/// (`no quota to create {TYPE}, max num is {max}, curNum is {current}, apply num is {apply}`).
pub fn apply_quota(kind: Quota, max: usize, current: usize, apply: usize) -> Result<(), ScError> {
    if current.checked_add(apply).is_none_or(|n| n > max) {
        return Err(ScError::new(
            NOT_ENOUGH_QUOTA,
            format!(
                "no quota to create {}, max num is {max}, curNum is {current}, apply num is {apply}",
                kind.name()
            ),
        ));
    }
    Ok(())
}

/// The bytes of a map's keys and values.
pub(crate) fn props_bytes(p: &Props) -> usize {
    p.iter().map(|(k, v)| k.len() + v.len()).sum()
}

/// The bytes of an instance's free-form text, which no field rule bounds: the keys and
/// values of its `properties` (Eureka `metadata`), its endpoints, `healthCheck.url` and
/// `dataCenterInfo`, and for an instance registered through `/eureka` its URLs, VIP
/// addresses, group name, `ipAddr`, `sid` and `dataCenterInfo` metadata. UTF-8 bytes, no
/// JSON or XML overhead.
pub fn instance_text_bytes(body: &MicroServiceInstance, side: Option<&EurekaSide>) -> usize {
    let mut n = props_bytes(&body.properties);
    n += body.endpoints.iter().map(String::len).sum::<usize>();
    if let Some(hc) = &body.health_check {
        n += hc.url.len();
    }
    if let Some(dc) = &body.data_center_info {
        n += dc.name.len() + dc.region.len() + dc.available_zone.len();
    }
    if let Some(side) = side {
        n += props_bytes(&side.dc_metadata);
        n += side.strings.values().map(String::len).sum::<usize>();
        n += side.ip_addr.len() + side.sid.as_ref().map_or(0, String::len);
        n += side.dc_class.len() + side.dc_name.len();
    }
    n
}

impl Registry {
    /// The quotas and size limits in force (service-center's defaults until
    /// [`Registry::set_limits`]).
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Replaces the quotas and size limits; what is already held stays.
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// Instances held, in all tenants. O(1).
    pub fn instance_count(&self) -> usize {
        self.instance_count
    }

    /// Microservices held, in all tenants. O(1).
    pub fn service_count(&self) -> usize {
        self.services.len()
    }

    /// Checks that one more microservice fits the service quota.
    ///
    /// # Errors
    /// 400100 (service-center's quota error) when it does not.
    pub(crate) fn admit_service(&self) -> Result<(), ScError> {
        apply_quota(Quota::Service, self.limits.services, self.services.len(), 1)
    }

    /// Checks that one more instance fits the instance quota.
    ///
    /// # Errors
    /// 400100 (service-center's quota error) when it does not.
    pub(crate) fn admit_instance(&self) -> Result<(), ScError> {
        apply_quota(
            Quota::Instance,
            self.limits.instances,
            self.instance_count,
            1,
        )
    }

    /// Checks an instance's free-form text against [`Limits::instance_metadata_bytes`].
    ///
    /// # Errors
    /// 400001 (invalid parameter) naming the size and the limit.
    pub(crate) fn check_instance_size(
        &self,
        body: &MicroServiceInstance,
        side: Option<&EurekaSide>,
    ) -> Result<(), ScError> {
        let n = instance_text_bytes(body, side);
        let max = self.limits.instance_metadata_bytes;
        if n > max {
            return Err(ScError::invalid(format!(
                "Invalid instance: its properties (metadata) and other free-form fields take \
                 {n} bytes, more than the limit of {max}"
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn quota_error_is_service_center_s() {
        let e = apply_quota(Quota::Instance, 2, 2, 1).unwrap_err();
        assert_eq!(e.code, 400100);
        assert_eq!(
            e.detail,
            "no quota to create INSTANCE, max num is 2, curNum is 2, apply num is 1"
        );
        assert!(apply_quota(Quota::Tag, 2, 1, 1).is_ok());
        assert!(apply_quota(Quota::Rule, usize::MAX, usize::MAX, 1).is_err());
    }

    fn counted(r: &Registry) -> usize {
        r.all_services().map(|e| e.instances.len()).sum()
    }

    fn inst(id: &str) -> MicroServiceInstance {
        MicroServiceInstance {
            instance_id: id.into(),
            host_name: "h".into(),
            health_check: Some(HealthCheck {
                mode: "push".into(),
                interval: 1,
                times: 1,
                ..HealthCheck::default()
            }),
            ..MicroServiceInstance::default()
        }
    }

    fn eureka(id: &str) -> EurekaRegistration {
        EurekaRegistration {
            instance_id: id.into(),
            body: MicroServiceInstance {
                host_name: "h".into(),
                status: "UP".into(),
                ..MicroServiceInstance::default()
            },
            side: EurekaSide::default(),
            lease_secs: 90,
        }
    }

    #[test]
    fn the_instance_count_follows_every_path_that_adds_or_removes_one() {
        let mut r = Registry::default();
        r.set_limits(Limits {
            instances: 4,
            ..Limits::default()
        });
        let t0 = Instant::now();
        let svc = |name: &str| MicroService {
            service_name: name.into(),
            ..MicroService::default()
        };
        let (a, _) = r.create_service("d", "p", svc("a"), 0).unwrap();
        let (b, _) = r
            .create_service("default", "default", svc("orders"), 0)
            .unwrap();
        for id in ["1", "2"] {
            r.register_instance("d", "p", &a, inst(id), t0, 0).unwrap();
        }
        r.register_instance("d", "p", &a, inst("1"), t0, 0).unwrap();
        r.register_instance("default", "default", &b, inst("3"), t0, 0)
            .unwrap();
        assert_eq!((r.instance_count(), counted(&r)), (3, 3));
        // A Eureka register of an id held by another service of the app moves it.
        r.eureka_register("ORDERS", eureka("3"), t0, 0).unwrap();
        r.eureka_register("ORDERS", eureka("4"), t0, 0).unwrap();
        assert_eq!((r.instance_count(), counted(&r)), (4, 4));
        let full = r.eureka_register("ORDERS", eureka("5"), t0, 0).unwrap_err();
        assert_eq!(full.code, 400100);
        assert_eq!(r.eureka_register("ORDERS", eureka("4"), t0, 0), Ok(()));
        let full = r.register_instance("d", "p", &a, inst("6"), t0, 0);
        assert_eq!(full.unwrap_err().code, 400100);
        r.unregister("d", "p", &a, "2").unwrap();
        assert!(r.eureka_cancel("ORDERS", "4"));
        assert_eq!((r.instance_count(), counted(&r)), (2, 2));
        assert_eq!(r.expire(t0 + Duration::from_secs(3)), 1);
        assert_eq!((r.instance_count(), counted(&r)), (1, 1));
        let e = default_service_id("default", "default", "", "eureka", "orders", "0.0.1");
        r.delete_service("default", "default", &e, true).unwrap();
        assert_eq!((r.instance_count(), counted(&r)), (0, 0));
        assert_eq!(r.service_count(), 2);
        assert!(r.entry(&b).is_some());
    }

    #[test]
    fn instance_text_counts_properties_endpoints_and_eureka_fields() {
        let mut body = MicroServiceInstance {
            endpoints: vec!["rest://1.2.3.4:80".into()],
            ..MicroServiceInstance::default()
        };
        body.properties.insert("ab".into(), "cde".into());
        assert_eq!(instance_text_bytes(&body, None), 5 + 17);
        let mut side = EurekaSide {
            ip_addr: "1.2.3.4".into(),
            ..EurekaSide::default()
        };
        side.strings.insert("homePageUrl", "x".repeat(10));
        assert_eq!(instance_text_bytes(&body, Some(&side)), 5 + 17 + 7 + 10);
    }
}
