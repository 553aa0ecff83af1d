//! `GET /v4/{project}/admin/dump`: the whole registry as service-center's admin dump.

use super::*;
use crate::servicecenter::registry::ServiceEntry;
use crate::servicecenter::store::keys;

#[derive(Serialize)]
pub(super) struct KeyValue<T: Serialize, K: Serialize = String> {
    key: K,
    rev: u64,
    value: T,
}

/// The services, their indexes or their instances of a dump, written from the registry
/// as the reply is rendered: no list of records and no key strings in between.
pub(super) struct DumpRecords<'a> {
    /// Every service, by serviceId.
    entries: &'a [&'a ServiceEntry],
    rev: u64,
    what: DumpPart,
}

#[derive(Clone, Copy)]
pub(super) enum DumpPart {
    Services,
    Indexes,
    Instances,
}

impl Serialize for DumpRecords<'_> {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let rev = self.rev;
        let entries = self.entries.iter();
        match self.what {
            DumpPart::Services => ser.collect_seq(entries.map(|e| KeyValue {
                key: keys::service_key(&e.domain, &e.project, &e.service.service_id),
                rev,
                value: &e.service,
            })),
            DumpPart::Indexes => ser.collect_seq(entries.map(|e| {
                let s = &e.service;
                KeyValue {
                    key: keys::service_index_key(
                        &e.domain,
                        &e.project,
                        &s.environment,
                        &s.app_id,
                        &s.service_name,
                        &s.version,
                    ),
                    rev,
                    value: s.service_id.as_str(),
                }
            })),
            DumpPart::Instances => ser.collect_seq(entries.flat_map(|e| {
                e.instances.iter().map(move |(iid, r)| KeyValue {
                    key: keys::instance_key(&e.domain, &e.project, &e.service.service_id, iid),
                    rev,
                    value: &r.body,
                })
            })),
        }
    }
}

#[derive(Serialize)]
pub(super) struct DumpReply<'a> {
    cache: DumpCache<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct DumpCache<'a> {
    services: DumpRecords<'a>,
    service_indexes: DumpRecords<'a>,
    service_tags: Vec<KeyValue<Value>>,
    service_rules: Vec<KeyValue<Value>>,
    service_rule_indexes: Vec<KeyValue<Value>>,
    dependency_rules: Vec<KeyValue<Value>>,
    summaries: Vec<KeyValue<Value>>,
    instances: DumpRecords<'a>,
}

/// `GET /v4/{project}/admin/dump[?scope=all]`: the cache of the caller's tenant, or with
/// `scope=all` of every tenant (service-center 1.3.0 always dumps every tenant; the
/// syncer's plugin asks for that explicitly, [`all_tenants`]); only from default/default,
/// with the registry revision it was read at in `X-Resource-Revision`.
///
/// # Errors
/// 403001 outside default/default; 400001 for a bad `scope`.
pub(super) async fn dump(
    State(core): State<Core>,
    Tenant { domain, project }: Tenant,
    Query(q): Query_,
) -> Result<Response, ScError> {
    let all = all_tenants(&q)?;
    let dom = domain.clone();
    if dom != "default" || project != "default" {
        return Err(ScError::new(
            FORBIDDEN,
            "dump is only allowed for default/default",
        ));
    }
    let reg = core.lock();
    let rev = reg.revision();
    let mut tags = Vec::new();
    let mut rules = Vec::new();
    let mut rule_indexes = Vec::new();
    let mut dependency_rules = Vec::new();
    let mut summaries = Vec::new();
    let scope = (!all).then_some((dom.as_str(), project.as_str()));
    let mut entries: Vec<_> = reg.services_in(scope).collect();
    entries.sort_by(|a, b| a.service.service_id.cmp(&b.service.service_id));
    for e in &entries {
        let s = &e.service;
        let (d, p, sid) = (&e.domain, &e.project, &s.service_id);
        let t = reg.tags.of(sid);
        if !t.is_empty() {
            tags.push(KeyValue {
                key: format!("/cse-sr/ms/tags/{d}/{p}/{sid}"),
                rev,
                value: serde_json::to_value(&t).unwrap_or_default(),
            });
        }
        for r in reg.rules.of(sid) {
            rules.push(KeyValue {
                key: format!("/cse-sr/ms/rules/{d}/{p}/{sid}/{}", r.rule_id),
                rev,
                value: serde_json::to_value(r).unwrap_or_default(),
            });
            rule_indexes.push(KeyValue {
                key: format!(
                    "/cse-sr/ms/rule-indexes/{d}/{p}/{sid}/{}/{}",
                    r.attribute, r.pattern
                ),
                rev,
                value: Value::String(r.rule_id.clone()),
            });
        }
        if let Some(deps) = reg.dependencies.of(sid) {
            dependency_rules.push(KeyValue {
                key: format!(
                    "/cse-sr/ms/dep-rules/{d}/{p}/c/{}/{}/{}/{}",
                    s.environment, s.app_id, s.service_name, s.version
                ),
                rev,
                value: serde_json::json!({ "Dependency": deps }),
            });
        }
        if let Some(schemas) = reg.schemas.of(sid) {
            for (schema_id, rec) in schemas.iter().filter(|(_, r)| !r.summary.is_empty()) {
                summaries.push(KeyValue {
                    key: format!("/cse-sr/ms/schema-sum/{d}/{p}/{sid}/{schema_id}"),
                    rev,
                    value: Value::String(rec.summary.clone()),
                });
            }
        }
    }
    let instance_count: usize = entries.iter().map(|e| e.instances.len()).sum();
    let part = |what| DumpRecords {
        entries: &entries,
        rev,
        what,
    };
    // Written straight from the registry (no JSON tree, no list of records in between),
    // under the lock.
    let capacity = 64 + 700 * instance_count + 400 * entries.len();
    let body = to_json(
        &DumpReply {
            cache: DumpCache {
                services: part(DumpPart::Services),
                service_indexes: part(DumpPart::Indexes),
                service_tags: tags,
                service_rules: rules,
                service_rule_indexes: rule_indexes,
                dependency_rules,
                summaries,
                instances: part(DumpPart::Instances),
            },
        },
        capacity,
    );
    drop(reg);
    let mut resp = json_reply(body);
    // The revision of this dump, for `admin/changes?since=` (`changelog.rs`).
    if let Ok(v) = HeaderValue::from_str(&rev.to_string()) {
        resp.headers_mut().insert("x-resource-revision", v);
    }
    Ok(resp)
}
