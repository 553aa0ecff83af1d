//! Schemas of microservices (`.../microservices/{serviceId}/schemas`), with their summaries.
//!
//! The edit rule of service-center 1.3.0 (`server/service/schema.go`, servicecomb-notes
//! c.10): a service is *editable* when its environment is non-empty and not `production`.
//! A non-editable service accepts a new schema id only while its `schemas` list is empty
//! (the list is then filled in) or when the id is listed (else 400014), and an existing
//! schema only when it has no summary yet and the request brings one (else 400015).
//! Main type: [`Schemas`].

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::limits::{apply_quota, Quota};
use super::Registry;
use crate::servicecenter::error::{
    ScError, MODIFY_SCHEMA_NOT_ALLOWED, SCHEMA_NOT_EXISTS, UNDEFINED_SCHEMA_ID,
};

/// At most this many schemas in one request (service-center's validator of a service's
/// `schemas`). How many a service holds is the quota
/// [`Limits::schemas_per_service`](super::Limits::schemas_per_service).
pub const MAX_SCHEMAS: usize = 100;

/// A stored schema.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SchemaRecord {
    /// The schema text (non-empty).
    pub schema: String,
    /// Its summary (≤ 128 alphanumerics), empty when not given.
    pub summary: String,
}

/// One item of `POST .../schemas` and of `GET .../schemas`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SchemaItem {
    /// The schema id.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub schema_id: String,
    /// The schema text; left out of `GET .../schemas` unless `withSchema=1`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub schema: String,
    /// The summary.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub summary: String,
}

/// Schemas per serviceId, by schemaId.
#[derive(Debug, Default)]
pub struct Schemas {
    by_service: HashMap<String, BTreeMap<String, SchemaRecord>>,
}

impl Schemas {
    /// One schema.
    pub fn get(&self, service_id: &str, schema_id: &str) -> Option<&SchemaRecord> {
        self.by_service.get(service_id)?.get(schema_id)
    }

    /// The stored schemas of a service, by id.
    pub fn of(&self, service_id: &str) -> Option<&BTreeMap<String, SchemaRecord>> {
        self.by_service.get(service_id)
    }

    /// Every service with schemas (for the dump).
    pub fn all(&self) -> impl Iterator<Item = (&String, &BTreeMap<String, SchemaRecord>)> {
        self.by_service.iter()
    }

    /// Sets or (`None`) removes one schema from the store; true when it changed.
    pub fn replace(
        &mut self,
        service_id: &str,
        schema_id: &str,
        rec: Option<SchemaRecord>,
    ) -> bool {
        let set = self.by_service.entry(service_id.to_string()).or_default();
        let changed = match rec {
            Some(r) => set.insert(schema_id.to_string(), r.clone()) != Some(r),
            None => set.remove(schema_id).is_some(),
        };
        if set.is_empty() {
            self.by_service.remove(service_id);
        }
        changed
    }

    /// Forgets a deleted service's schemas.
    pub fn remove_service(&mut self, service_id: &str) {
        self.by_service.remove(service_id);
    }
}

/// Whether a service's schemas may change freely (environment set and not `production`).
pub fn editable(environment: &str) -> bool {
    !environment.is_empty() && environment != "production"
}

/// Checks a schema id: 1–160 chars, alphanumeric at both ends, `_-.` inside.
///
/// # Errors
/// 400001 naming the id.
pub fn validate_schema_id(id: &str) -> Result<(), ScError> {
    let b = id.as_bytes();
    let ok = !b.is_empty()
        && id.chars().count() <= 160
        && (b.iter().all(u8::is_ascii_alphanumeric)
            || (b.len() >= 2
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.'))));
    if ok {
        Ok(())
    } else {
        Err(ScError::invalid(format!(
            "Invalid schemaId '{id}': 1-160 chars, letters, digits and inner '_-.'"
        )))
    }
}

fn validate_body(schema: &str, summary: &str, summary_required: bool) -> Result<(), ScError> {
    if schema.is_empty() {
        return Err(ScError::invalid("Invalid schema: must not be empty"));
    }
    let n = summary.chars().count();
    if n > 128
        || (summary_required && n == 0)
        || !summary.bytes().all(|c| c.is_ascii_alphanumeric())
    {
        return Err(ScError::invalid(format!(
            "Invalid summary '{summary}': up to 128 letters and digits"
        )));
    }
    Ok(())
}

/// `PUT .../schemas/{schemaId}`: creates or replaces one schema (the edit rule above).
///
/// # Errors
/// 400001 bad fields; 400012 unknown service; 400014, 400015 the edit rule; 400100 quota.
#[allow(clippy::too_many_arguments)]
pub fn put(
    reg: &mut Registry,
    domain: &str,
    project: &str,
    service_id: &str,
    schema_id: &str,
    schema: String,
    summary: String,
    now_ms: i64,
) -> Result<(), ScError> {
    validate_schema_id(schema_id)?;
    validate_body(&schema, &summary, false)?;
    let svc = (*reg.service(domain, project, service_id)?.service).clone();
    let existing = reg.schemas.get(service_id, schema_id).cloned();
    let listed = svc.schemas.iter().any(|s| s == schema_id);
    if !editable(&svc.environment) {
        match &existing {
            Some(old) if !old.summary.is_empty() || summary.is_empty() => {
                if *old
                    != (SchemaRecord {
                        schema: schema.clone(),
                        summary: summary.clone(),
                    })
                {
                    return Err(ScError::new(
                        MODIFY_SCHEMA_NOT_ALLOWED,
                        format!("schema {schema_id} exists and the environment is not editable"),
                    ));
                }
                return Ok(());
            }
            Some(_) => {}
            None if listed || svc.schemas.is_empty() => {}
            None => {
                return Err(ScError::new(
                    UNDEFINED_SCHEMA_ID,
                    format!("schema id {schema_id} is not in the service's schemas"),
                ))
            }
        }
    }
    let count = reg.schemas.of(service_id).map_or(0, BTreeMap::len);
    if existing.is_none() {
        apply_quota(Quota::Schema, reg.limits().schemas_per_service, count, 1)?;
    }
    reg.schemas
        .by_service
        .entry(service_id.to_string())
        .or_default()
        .insert(schema_id.to_string(), SchemaRecord { schema, summary });
    mark_schema(reg, service_id, schema_id);
    if listed {
        reg.bump();
    } else {
        let id = schema_id.to_string();
        reg.update_service(domain, project, service_id, now_ms, |s| s.schemas.push(id))?;
    }
    Ok(())
}

/// `POST .../schemas`: the full set of a service's schemas. Editable: the set replaces
/// the stored schemas and the service's list. Not editable: as [`put`] for each item,
/// checked all before any is written.
///
/// # Errors
/// 400001 bad items; 400012 unknown service; 400014, 400015 the edit rule; 400100 more
/// schemas than the quota.
pub fn put_all(
    reg: &mut Registry,
    domain: &str,
    project: &str,
    service_id: &str,
    items: Vec<SchemaItem>,
    now_ms: i64,
) -> Result<(), ScError> {
    if items.is_empty() || items.len() > MAX_SCHEMAS {
        return Err(ScError::invalid("Invalid schemas: 1-100 items"));
    }
    for it in &items {
        validate_schema_id(&it.schema_id)?;
        validate_body(&it.schema, &it.summary, true)?;
    }
    let mut seen = std::collections::HashSet::new();
    if let Some(dup) = items.iter().find(|i| !seen.insert(i.schema_id.as_str())) {
        return Err(ScError::invalid(format!(
            "Invalid schemas: schemaId '{}' given twice",
            dup.schema_id
        )));
    }
    let svc = (*reg.service(domain, project, service_id)?.service).clone();
    if !editable(&svc.environment) && !svc.schemas.is_empty() {
        for it in &items {
            if !svc.schemas.contains(&it.schema_id) {
                return Err(ScError::new(
                    UNDEFINED_SCHEMA_ID,
                    format!("schema id {} is not in the service's schemas", it.schema_id),
                ));
            }
            if let Some(old) = reg.schemas.get(service_id, &it.schema_id) {
                if !old.summary.is_empty() && (old.summary != it.summary || old.schema != it.schema)
                {
                    return Err(ScError::new(
                        MODIFY_SCHEMA_NOT_ALLOWED,
                        format!(
                            "schema {} exists and the environment is not editable",
                            it.schema_id
                        ),
                    ));
                }
            }
        }
    }
    let old: Vec<String> = reg
        .schemas
        .of(service_id)
        .map(|s| s.keys().cloned().collect())
        .unwrap_or_default();
    let (current, added) = if editable(&svc.environment) {
        (0, items.len())
    } else {
        let fresh = items
            .iter()
            .filter(|i| old.binary_search(&i.schema_id).is_err())
            .count();
        (old.len(), fresh)
    };
    if added > 0 {
        apply_quota(
            Quota::Schema,
            reg.limits().schemas_per_service,
            current,
            added,
        )?;
    }
    let ids: Vec<String> = items.iter().map(|i| i.schema_id.clone()).collect();
    for id in old.iter().chain(ids.iter()) {
        mark_schema(reg, service_id, id);
    }
    let set = reg
        .schemas
        .by_service
        .entry(service_id.to_string())
        .or_default();
    if editable(&svc.environment) {
        set.clear();
    }
    for it in items {
        set.insert(
            it.schema_id,
            SchemaRecord {
                schema: it.schema,
                summary: it.summary,
            },
        );
    }
    if editable(&svc.environment) || svc.schemas.is_empty() {
        reg.update_service(domain, project, service_id, now_ms, |s| s.schemas = ids)?;
    } else {
        reg.bump();
    }
    Ok(())
}

/// `DELETE .../schemas/{schemaId}`.
///
/// # Errors
/// 400012 unknown service; 400016 unknown schema.
pub fn delete(
    reg: &mut Registry,
    domain: &str,
    project: &str,
    service_id: &str,
    schema_id: &str,
) -> Result<(), ScError> {
    reg.service(domain, project, service_id)?;
    let set = reg.schemas.by_service.get_mut(service_id);
    if set.and_then(|s| s.remove(schema_id)).is_none() {
        return Err(missing(schema_id));
    }
    if reg
        .schemas
        .by_service
        .get(service_id)
        .is_some_and(BTreeMap::is_empty)
    {
        reg.schemas.by_service.remove(service_id);
    }
    mark_schema(reg, service_id, schema_id);
    reg.bump();
    Ok(())
}

fn mark_schema(reg: &mut Registry, service_id: &str, schema_id: &str) {
    super::records::mark(reg, service_id, |d, p, _| {
        super::records::schema_key(d, p, service_id, schema_id)
    });
    super::records::mark(reg, service_id, |d, p, _| {
        super::records::summary_key(d, p, service_id, schema_id)
    });
}

/// The 400016 error for a schema id.
pub fn missing(schema_id: &str) -> ScError {
    ScError::new(
        SCHEMA_NOT_EXISTS,
        format!("schema {schema_id} does not exist"),
    )
}

/// The schemas of a service: its listed ids first, then stored ones not listed.
pub(crate) fn schema_items(reg: &super::Registry, sid: &str, with_schema: bool) -> Vec<SchemaItem> {
    let Some(e) = reg.entry(sid) else {
        return Vec::new();
    };
    let stored = reg.schemas.of(sid);
    let mut ids: Vec<&String> = e.service.schemas.iter().collect();
    if let Some(st) = stored {
        ids.extend(st.keys().filter(|k| !e.service.schemas.contains(k)));
    }
    ids.into_iter()
        .map(|id| {
            let rec = stored.and_then(|s| s.get(id));
            SchemaItem {
                schema_id: id.clone(),
                summary: rec.map(|r| r.summary.clone()).unwrap_or_default(),
                schema: rec
                    .filter(|_| with_schema)
                    .map(|r| r.schema.clone())
                    .unwrap_or_default(),
            }
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::servicecenter::registry::MicroService;

    #[test]
    fn production_schemas_are_frozen_once_they_have_a_summary() {
        let mut r = Registry::default();
        let (sid, _) = r
            .create_service(
                "d",
                "p",
                MicroService {
                    service_name: "s".into(),
                    ..MicroService::default()
                },
                0,
            )
            .unwrap();
        put(&mut r, "d", "p", &sid, "a", "x".into(), String::new(), 0).unwrap();
        put(&mut r, "d", "p", &sid, "a", "y".into(), "sum".into(), 0).unwrap();
        let e = put(&mut r, "d", "p", &sid, "a", "z".into(), "sum2".into(), 0).unwrap_err();
        assert_eq!(e.code, MODIFY_SCHEMA_NOT_ALLOWED);
        let e = put(&mut r, "d", "p", &sid, "b", "z".into(), String::new(), 0).unwrap_err();
        assert_eq!(e.code, UNDEFINED_SCHEMA_ID);
        assert_eq!(
            r.service("d", "p", &sid).unwrap().service.schemas,
            vec!["a"]
        );
        assert!(editable("development") && !editable("") && !editable("production"));
    }
}
