//! The Eureka operations on the registry: register, renew, status, cancel, and the reads
//! of apps and instances (the Eureka view's state and delta are in [`super::eureka`]).

use super::*;

/// The key of the microservice holding Eureka app `app` (see the module docs of
/// [`super`]).
fn eureka_service_key(app: &str) -> ServiceKey {
    (
        (
            DEFAULT_TENANT.to_string(),
            DEFAULT_TENANT.to_string(),
            String::new(),
            EUREKA_APP_ID.to_string(),
            app.to_ascii_lowercase(),
        ),
        EUREKA_VERSION.to_string(),
    )
}

impl Registry {
    /// Checks that registering `reg` in Eureka app `app` fits the limits: its free-form
    /// text within [`Limits::instance_metadata_bytes`], and, when it adds them, one more
    /// service and one more instance within the quotas. Replacing an instance (or moving
    /// it between the services of its app) adds none.
    ///
    /// # Errors
    /// 400001 too much free-form text; 400100 a quota is full (service-center's error).
    pub fn eureka_admit(&self, app: &str, reg: &EurekaRegistration) -> Result<(), ScError> {
        self.check_instance_size(&reg.body, Some(&reg.side))?;
        if self.id_of_key(&eureka_service_key(app)).is_none() {
            self.admit_service()?;
        }
        if self.eureka_locate(app, &reg.instance_id).is_none() {
            self.admit_instance()?;
        }
        Ok(())
    }

    /// Registers (or replaces) an instance of a Eureka app, creating the
    /// microservice (default/default, appId `eureka`, lower-case name, `0.0.1`) on first use.
    ///
    /// # Errors
    /// As [`Registry::eureka_admit`], checked first: nothing changes on an error.
    pub fn eureka_register(
        &mut self,
        app: &str,
        reg: EurekaRegistration,
        now: Instant,
        now_ms: i64,
    ) -> Result<(), ScError> {
        self.eureka_admit(app, &reg)?;
        let name = app.to_ascii_lowercase();
        let key = eureka_service_key(app);
        let sid = match self.id_of_key(&key) {
            Some(id) => id.to_owned(),
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
                let shared: Arc<str> = Arc::from(id.as_str());
                self.by_app
                    .entry(app.to_ascii_uppercase())
                    .or_default()
                    .insert(shared.clone());
                self.by_name
                    .entry(name_index(&key.0))
                    .or_default()
                    .insert(shared.clone());
                self.services.insert(
                    shared,
                    Arc::new(ServiceEntry {
                        domain: TenantName::new(DEFAULT_TENANT),
                        project: TenantName::new(DEFAULT_TENANT),
                        service: Arc::new(svc),
                        instances: Instances::default(),
                    }),
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
                    .get_mut(other.as_str())
                    .map(Arc::make_mut)
                    .and_then(|e| e.instances.remove(&reg.instance_id))
                {
                    self.instance_count = self.instance_count.saturating_sub(1);
                    self.leases.remove(rec.deadline, &other, &reg.instance_id);
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
            .get(sid.as_str())
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
                .get_mut(sid.as_str())
                .map(Arc::make_mut)
                .and_then(|e| e.instances.get_mut(&iid).map(Arc::make_mut))
            {
                rec.registered_ms = reg_ms;
            }
        }
        Ok(())
    }

    /// The serviceId holding instance `id` of Eureka app `app`.
    pub(super) fn eureka_locate(&self, app: &str, id: &str) -> Option<String> {
        self.by_app.get(app)?.iter().find_map(|sid| {
            self.services
                .get(sid)
                .filter(|e| e.instances.contains_key(id))
                .map(|_| sid.to_string())
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
            .get_mut(sid.as_str())
            .map(Arc::make_mut)
            .and_then(|e| e.instances.get_mut(id).map(Arc::make_mut))
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
            .flat_map(|e| e.instances.values().map(move |r| (&*e.service, &**r)))
            .collect()
    }

    /// One instance of a Eureka app.
    pub fn eureka_instance(&self, app: &str, id: &str) -> Option<(&MicroService, &InstanceRecord)> {
        let sid = self.eureka_locate(app, id)?;
        let e = self.services.get(sid.as_str())?;
        Some((&*e.service, &**e.instances.get(id)?))
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
