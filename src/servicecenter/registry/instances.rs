//! Instances and their leases: register, read, heartbeat, status and properties,
//! unregister, and expiry.

use super::*;

impl Registry {
    /// Registers an SC instance; re-registering an existing id only renews its lease.
    ///
    /// # Errors
    /// 400012 unknown service; 400001 a bad field, or more free-form text than
    /// [`Limits::instance_metadata_bytes`]; 400100 when a new instance would go over the
    /// instance quota ([`Limits::instances`]).
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
        self.check_instance_size(&inst, None)?;
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
        self.admit_instance()?;
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

    pub(super) fn put_instance(
        &mut self,
        service_id: &str,
        body: MicroServiceInstance,
        eureka: Option<EurekaSide>,
        ttl_secs: u64,
        now: Instant,
        now_ms: i64,
    ) {
        let Some(entry) = self.services.get_mut(service_id).map(Arc::make_mut) else {
            return;
        };
        let deadline = lease_deadline(now, ttl_secs);
        let iid = body.instance_id.clone();
        let rec = Arc::new(InstanceRecord {
            body,
            eureka: eureka.map(Box::new),
            ttl_secs,
            deadline,
            registered_ms: now_ms,
            renewed_ms: now_ms,
            updated_ms: now_ms,
        });
        match entry.instances.insert(rec) {
            Some(old) => {
                self.leases.remove(old.deadline, service_id, &iid);
            }
            None => self.instance_count += 1,
        }
        self.journal.instance(service_id, &iid);
        self.eureka_touch(service_id, &iid);
        self.leases.insert(deadline, service_id, &iid);
        self.bump();
    }

    /// Renews a lease; false when the instance is unknown.
    pub(super) fn renew(
        &mut self,
        service_id: &str,
        instance_id: &str,
        now: Instant,
        now_ms: i64,
    ) -> bool {
        self.renew_if(service_id, instance_id, now, now_ms, |_| true)
    }

    /// Renews a lease when its service passes `in_tenant`; false when the instance is
    /// unknown or its service does not pass. One lookup of the service, checked before
    /// anything is copied (a heartbeat is the hottest request: no second hash of the
    /// serviceId). Lazy: the `leases` entry keeps the old deadline and `expire` moves it
    /// when it comes due, so a renewal costs no allocation and no ordered-set update.
    fn renew_if(
        &mut self,
        service_id: &str,
        instance_id: &str,
        now: Instant,
        now_ms: i64,
        in_tenant: impl FnOnce(&ServiceEntry) -> bool,
    ) -> bool {
        let Some(rec) = self
            .services
            .get_mut(service_id)
            .filter(|e| in_tenant(e))
            .map(Arc::make_mut)
            .and_then(|e| e.instances.get_mut(instance_id).map(Arc::make_mut))
        else {
            return false;
        };
        rec.deadline = lease_deadline(now, rec.ttl_secs);
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
            .map(|r| &**r)
            .ok_or_else(|| instance_missing(instance_id))
    }

    /// Heartbeat: renews the lease, body unchanged.
    ///
    /// # Errors
    /// 400017 unknown instance, also when its service is unknown in this tenant.
    pub fn heartbeat(
        &mut self,
        domain: &str,
        project: &str,
        service_id: &str,
        instance_id: &str,
        now: Instant,
        now_ms: i64,
    ) -> Result<(), ScError> {
        let in_tenant = |e: &ServiceEntry| e.domain == domain && e.project == project;
        if self.renew_if(service_id, instance_id, now, now_ms, in_tenant) {
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
        self.instance_count = self.instance_count.saturating_sub(1);
        self.leases.remove(rec.deadline, service_id, instance_id);
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
            .map(Arc::make_mut)
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
    /// 400017 unknown instance; 400001 when the instance would hold more free-form text
    /// than [`Limits::instance_metadata_bytes`].
    pub fn set_instance_properties(
        &mut self,
        domain: &str,
        project: &str,
        service_id: &str,
        instance_id: &str,
        properties: Props,
        now_ms: i64,
    ) -> Result<(), ScError> {
        let max = self.limits().instance_metadata_bytes;
        let rec = self
            .service_mut(domain, project, service_id)
            .map_err(|_| instance_missing(instance_id))?
            .instances
            .get_mut(instance_id)
            .map(Arc::make_mut)
            .ok_or_else(|| instance_missing(instance_id))?;
        let size = limits::instance_text_bytes(&rec.body, rec.eureka.as_deref())
            - limits::props_bytes(&rec.body.properties)
            + limits::props_bytes(&properties);
        if size > max {
            return Err(ScError::invalid(format!(
                "Invalid properties: the instance's properties (metadata) and other free-form \
                 fields would take {size} bytes, more than the limit of {max}"
            )));
        }
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
        while let Some((_, sid, iid)) = self.leases.pop_due(now) {
            // Renewed since this entry was made (see `renew`): requeue at the new deadline
            // (read first: a write would copy an entry that a snapshot shares).
            let renewed = self
                .services
                .get(sid.as_str())
                .and_then(|e| e.instances.get(&iid))
                .map(|r| r.deadline)
                .filter(|d| *d > now);
            if let Some(deadline) = renewed {
                self.leases.insert(deadline, &sid, &iid);
                continue;
            }
            if let Some(entry) = self.services.get_mut(sid.as_str()).map(Arc::make_mut) {
                if let Some(rec) = entry.instances.remove(&iid) {
                    self.instance_count = self.instance_count.saturating_sub(1);
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
}
