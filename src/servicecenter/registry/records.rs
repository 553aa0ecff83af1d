//! The store side of schemas, tags, rules and dependency rules: their keys (service-center
//! 1.3.0's layout, servicecomb-notes c.9) and values, for the storage adaptors
//! (`store/mod.rs`, "Adding a record kind").
//!
//! | key | value |
//! |---|---|
//! | `/cse-sr/ms/tags/{domain}/{project}/{serviceId}` | tag map JSON |
//! | `/cse-sr/ms/rules/{domain}/{project}/{serviceId}/{ruleId}` | rule JSON |
//! | `/cse-sr/ms/schemas/{domain}/{project}/{serviceId}/{schemaId}` | schema text |
//! | `/cse-sr/ms/schema-sum/{domain}/{project}/{serviceId}/{schemaId}` | summary text |
//! | `/cse-sr/ms/dep-rules/{domain}/{project}/c/{env}/{appId}/{serviceName}/{version}` | `{"Dependency":[key…]}` of the consumer |
//! | `/cse-sr/accounts/{name}`, `/cse-sr/roles/{name}`, `/cse-sr/rbac/secret` | RBAC records (`rbac/`) |
//!
//! Registry methods note a changed key with `journal.key(..)`; the writer then asks
//! `stored_value` for its current value, and a load or an etcd watch event goes through
//! `apply`.

use std::collections::BTreeSet;

use super::dependencies::DependencyKey;
use super::rules::Rule;
use super::{MicroService, Props, Registry};

const TAGS: &str = "/cse-sr/ms/tags/";
const RULES: &str = "/cse-sr/ms/rules/";
const SCHEMAS: &str = "/cse-sr/ms/schemas/";
const SUMMARIES: &str = "/cse-sr/ms/schema-sum/";
const DEP_RULES: &str = "/cse-sr/ms/dep-rules/";

/// `/cse-sr/ms/tags/{domain}/{project}/{serviceId}`.
pub fn tags_key(domain: &str, project: &str, service_id: &str) -> String {
    format!("{TAGS}{domain}/{project}/{service_id}")
}

/// `/cse-sr/ms/rules/{domain}/{project}/{serviceId}/{ruleId}`.
pub fn rule_key(domain: &str, project: &str, service_id: &str, rule_id: &str) -> String {
    format!("{RULES}{domain}/{project}/{service_id}/{rule_id}")
}

/// `/cse-sr/ms/schemas/{domain}/{project}/{serviceId}/{schemaId}`.
pub fn schema_key(domain: &str, project: &str, service_id: &str, schema_id: &str) -> String {
    format!("{SCHEMAS}{domain}/{project}/{service_id}/{schema_id}")
}

/// `/cse-sr/ms/schema-sum/{domain}/{project}/{serviceId}/{schemaId}`.
pub fn summary_key(domain: &str, project: &str, service_id: &str, schema_id: &str) -> String {
    format!("{SUMMARIES}{domain}/{project}/{service_id}/{schema_id}")
}

/// `/cse-sr/ms/dep-rules/{domain}/{project}/c/{env}/{appId}/{serviceName}/{version}` of a consumer.
pub fn dep_key(domain: &str, project: &str, consumer: &MicroService) -> String {
    format!(
        "{DEP_RULES}{domain}/{project}/c/{}/{}/{}/{}",
        consumer.environment, consumer.app_id, consumer.service_name, consumer.version
    )
}

/// Notes one key of service `service_id` for the store (no-op without a store).
pub(crate) fn mark(
    reg: &mut Registry,
    service_id: &str,
    key: impl FnOnce(&str, &str, &MicroService) -> String,
) {
    if let Some(e) = reg.entry(service_id) {
        let k = key(&e.domain, &e.project, &e.service);
        reg.journal.key(k);
    }
}

/// Notes every record of a service (before it is deleted: the writer then deletes them).
pub(crate) fn mark_all(reg: &mut Registry, service_id: &str) {
    let Some(e) = reg.entry(service_id) else {
        return;
    };
    let (d, p) = (e.domain.clone(), e.project.clone());
    let mut keys = vec![tags_key(&d, &p, service_id), dep_key(&d, &p, &e.service)];
    keys.extend(
        reg.rules
            .of(service_id)
            .iter()
            .map(|r| rule_key(&d, &p, service_id, &r.rule_id)),
    );
    if let Some(s) = reg.schemas.of(service_id) {
        for id in s.keys() {
            keys.push(schema_key(&d, &p, service_id, id));
            keys.push(summary_key(&d, &p, service_id, id));
        }
    }
    for k in keys {
        reg.journal.key(k);
    }
}

/// A parsed key of this module: (kind prefix, domain, project, rest segments).
fn split<'a>(key: &'a str, prefix: &str) -> Option<(&'a str, &'a str, Vec<&'a str>)> {
    let rest = key.strip_prefix(prefix)?;
    let mut it = rest.split('/');
    let d = it.next().filter(|s| !s.is_empty())?;
    let p = it.next().filter(|s| !s.is_empty())?;
    Some((d, p, it.collect()))
}

/// The consumer serviceId of a dep-rules key (`c/{env}/{app}/{name}/{version}`).
fn dep_consumer(reg: &Registry, d: &str, p: &str, rest: &[&str]) -> Option<String> {
    let [c, env, app, name, version] = rest else {
        return None;
    };
    if *c != "c" {
        return None;
    }
    let key = (
        d.to_string(),
        p.to_string(),
        (*env).to_string(),
        (*app).to_string(),
        (*name).to_string(),
    );
    reg.resolve(&key, version).ok()?.into_iter().next()
}

/// The current value of one of this module's keys (`None`: gone, or not such a key).
pub(crate) fn stored_value(reg: &Registry, key: &str) -> Option<Vec<u8>> {
    if let Some(value) = super::rbac::stored_value(reg, key) {
        return value;
    }
    if let Some((_, _, rest)) = split(key, TAGS) {
        let t = reg.tags.of(rest.first()?);
        return (!t.is_empty()).then(|| serde_json::to_vec(&t).unwrap_or_default());
    }
    if let Some((_, _, rest)) = split(key, RULES) {
        let [sid, rid] = rest.as_slice() else {
            return None;
        };
        let r = reg.rules.of(sid).iter().find(|r| r.rule_id == *rid)?;
        return serde_json::to_vec(r).ok();
    }
    if let Some((_, _, rest)) = split(key, SCHEMAS) {
        let [sid, id] = rest.as_slice() else {
            return None;
        };
        return reg
            .schemas
            .get(sid, id)
            .map(|r| r.schema.clone().into_bytes());
    }
    if let Some((_, _, rest)) = split(key, SUMMARIES) {
        let [sid, id] = rest.as_slice() else {
            return None;
        };
        return reg
            .schemas
            .get(sid, id)
            .filter(|r| !r.summary.is_empty())
            .map(|r| r.summary.clone().into_bytes());
    }
    if let Some((d, p, rest)) = split(key, DEP_RULES) {
        let cid = dep_consumer(reg, d, p, &rest)?;
        let deps = reg.dependencies.of(&cid).filter(|s| !s.is_empty())?;
        return serde_json::to_vec(&serde_json::json!({ "Dependency": deps })).ok();
    }
    None
}

/// Applies a stored value of one of this module's keys to the registry (load, etcd watch):
/// `Some` sets, `None` removes. Returns whether anything changed; false for other keys.
pub(crate) fn apply(reg: &mut Registry, key: &str, value: Option<&[u8]>) -> bool {
    if let Some(changed) = super::rbac::apply(reg, key, value) {
        return changed;
    }
    let service_known =
        |reg: &Registry, d: &str, p: &str, sid: &str| reg.service(d, p, sid).is_ok();
    if let Some((d, p, rest)) = split(key, TAGS) {
        let Some(sid) = rest.first().copied() else {
            return false;
        };
        if !service_known(reg, d, p, sid) {
            return false;
        }
        let tags: Props = value
            .and_then(|v| serde_json::from_slice(v).ok())
            .unwrap_or_default();
        return reg.tags.replace(sid, tags);
    }
    if let Some((d, p, rest)) = split(key, RULES) {
        let [sid, rid] = rest.as_slice() else {
            return false;
        };
        if !service_known(reg, d, p, sid) {
            return false;
        }
        let rule: Option<Rule> = value.and_then(|v| serde_json::from_slice(v).ok());
        return reg.rules.replace(sid, rid, rule);
    }
    let schema_part = split(key, SCHEMAS)
        .map(|x| (x, false))
        .or_else(|| split(key, SUMMARIES).map(|x| (x, true)));
    if let Some(((d, p, rest), is_summary)) = schema_part {
        let [sid, id] = rest.as_slice() else {
            return false;
        };
        if !service_known(reg, d, p, sid) {
            return false;
        }
        let text = value.map(|v| String::from_utf8_lossy(v).into_owned());
        let mut rec = reg.schemas.get(sid, id).cloned().unwrap_or_default();
        // A summary may load before its schema (keys sort `schema-sum` < `schemas`): a
        // record is kept while either part is there.
        if is_summary {
            rec.summary = text.unwrap_or_default();
        } else {
            rec.schema = text.unwrap_or_default();
        }
        let keep = !rec.schema.is_empty() || !rec.summary.is_empty();
        return reg.schemas.replace(sid, id, keep.then_some(rec));
    }
    if let Some((d, p, rest)) = split(key, DEP_RULES) {
        let Some(cid) = dep_consumer(reg, d, p, &rest) else {
            return false;
        };
        #[derive(serde::Deserialize)]
        struct Stored {
            #[serde(rename = "Dependency", default)]
            dependency: BTreeSet<DependencyKey>,
        }
        let set = value
            .and_then(|v| serde_json::from_slice::<Stored>(v).ok())
            .map(|s| s.dependency)
            .unwrap_or_default();
        return reg.dependencies.replace(&cid, set);
    }
    false
}
