//! The registry's side of the store (see `store/mod.rs`): journal marks, the writes taken
//! for the store, and applying stored or followed records.

use super::*;

// ---- persistence: the registry's side of the store (see `store/mod.rs`) ----------------

/// The journal mark of a service entry (with its index key, deleted with it).
pub(super) fn service_mark(e: &ServiceEntry) -> Mark {
    let s = &e.service;
    Mark::Service {
        domain: e.domain.to_string(),
        project: e.project.to_string(),
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
pub(super) fn body_ttl_secs(b: &MicroServiceInstance) -> u64 {
    b.health_check
        .as_ref()
        .and_then(|hc| u64::try_from(hc.interval.saturating_mul(hc.times.saturating_add(1))).ok())
        .filter(|t| *t > 0)
        .unwrap_or(120)
}

/// Unix seconds as text (a stored timestamp) → ms; `default` when unreadable.
pub(super) fn stored_ms(stamp: &Stamp, default: i64) -> i64 {
    let secs = match stamp.secs() {
        Some(secs) => i64::try_from(secs).ok(),
        None => stamp.to_string().parse::<i64>().ok(),
    };
    secs.map_or(default, |s| s.saturating_mul(1000))
}

pub(super) fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
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
                    .get(service_id.as_str())
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
                    let Some(e) = self.services.get(service_id.as_str()) else {
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
            let Some(e) = self.services.get(sid.as_str()) else {
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
                    Ok(s) => self.restore_service(&domain, &project, &service_id, s),
                    Err(e) => {
                        tracing::warn!(key, error = %e, "unreadable stored service skipped");
                        false
                    }
                },
                None => self.forget_service(&service_id),
            },
            keys::Parsed::Instance {
                domain,
                project,
                service_id,
                instance_id,
            } => match value {
                Some(v) => self.restore_instance(
                    &domain,
                    &project,
                    &service_id,
                    &instance_id,
                    v,
                    None,
                    now,
                ),
                None => self.forget_instance(&service_id, &instance_id),
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
            .map(|(id, _)| id.to_string())
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
                    (!present.contains(key.as_str())).then(|| (sid.to_string(), iid.clone()))
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
    pub(super) fn restore_service(
        &mut self,
        domain: &str,
        project: &str,
        service_id: &str,
        mut s: MicroService,
    ) -> bool {
        s.service_id = service_id.to_string();
        if let Some(e) = self.services.get(service_id) {
            if *e.service == s && e.domain == domain && e.project == project {
                return false;
            }
        }
        self.log_service_in(domain, project, service_id);
        let (instances, old_app) = match self.services.remove(service_id) {
            Some(old) => {
                self.unindex(&old);
                let app = mapped_eureka_app(&old.domain, &old.project, &old.service.service_name)
                    .map(|a| (a, old.service.service_name.clone()));
                (Arc::unwrap_or_clone(old).instances, app)
            }
            None => (Instances::default(), None),
        };
        let new_app = mapped_eureka_app(domain, project, &s.service_name);
        if old_app.as_ref().map(|(a, _)| a) != new_app.as_ref() {
            // Its instances move between Eureka apps (or in or out of them).
            for (iid, rec) in &instances {
                if let Some((app, name)) = &old_app {
                    self.eureka.removed(app, name, (**rec).clone());
                }
                if let Some(app) = &new_app {
                    self.eureka.touch(app, iid);
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
        let key: Arc<str> = Arc::from(service_id);
        if let Some(app) = mapped_eureka_app(domain, project, &s.service_name) {
            self.by_app.entry(app).or_default().insert(key.clone());
        }
        self.by_name
            .entry(name_index(&name_key))
            .or_default()
            .insert(key.clone());
        self.services.insert(
            key,
            Arc::new(ServiceEntry {
                domain: TenantName::new(domain),
                project: TenantName::new(project),
                service: Arc::new(s),
                instances,
            }),
        );
        true
    }

    /// Removes a service's index entries.
    pub(super) fn unindex(&mut self, entry: &ServiceEntry) {
        let s = &entry.service;
        let id = &s.service_id;
        let index = entry_name_index(entry);
        if let Some(set) = self.by_name.get_mut(&index) {
            set.remove(id);
            if set.is_empty() {
                self.by_name.remove(&index);
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
    pub(super) fn forget_service(&mut self, id: &str) -> bool {
        let Some(entry) = self.services.remove(id) else {
            return false;
        };
        self.instance_count = self.instance_count.saturating_sub(entry.instances.len());
        for (iid, rec) in &entry.instances {
            self.leases.remove(rec.deadline, id, iid);
        }
        self.unindex(&entry);
        self.eureka_gone_service(Arc::unwrap_or_clone(entry));
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
            .map(Arc::make_mut)
            .filter(|e| e.domain == domain && e.project == project)
        else {
            return false;
        };
        let ttl_secs = body_ttl_secs(&body);
        let wall = now_ms();
        if let Some(rec) = entry.instances.get_mut(instance_id).map(Arc::make_mut) {
            if rec.body == body {
                return false;
            }
            rec.updated_ms = stored_ms(&body.mod_timestamp, wall);
            rec.ttl_secs = ttl_secs;
            rec.body = body;
            self.eureka_touch(service_id, instance_id);
            return true;
        }
        let full = Duration::from_secs(ttl_secs.min(super::MAX_LEASE_SECS));
        let left = remaining.unwrap_or(full).min(full);
        let deadline = now.checked_add(left).unwrap_or(now);
        let rec = Arc::new(InstanceRecord {
            registered_ms: stored_ms(&body.timestamp, wall),
            updated_ms: stored_ms(&body.mod_timestamp, wall),
            renewed_ms: wall,
            body,
            eureka: None,
            ttl_secs,
            deadline,
        });
        entry.instances.insert(rec);
        self.instance_count += 1;
        self.leases.insert(deadline, service_id, instance_id);
        self.eureka_touch(service_id, instance_id);
        true
    }

    /// Removes an instance from the cache only.
    pub(super) fn forget_instance(&mut self, service_id: &str, instance_id: &str) -> bool {
        let Some(rec) = self
            .services
            .get_mut(service_id)
            .map(Arc::make_mut)
            .and_then(|e| e.instances.remove(instance_id))
        else {
            return false;
        };
        self.instance_count = self.instance_count.saturating_sub(1);
        self.leases.remove(rec.deadline, service_id, instance_id);
        self.eureka_gone(service_id, rec);
        true
    }
}

pub(super) fn instance_missing(id: &str) -> ScError {
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
