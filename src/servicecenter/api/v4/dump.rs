//! `GET /v4/{project}/admin/dump`: the whole registry as service-center's admin dump.

use super::*;

#[derive(Serialize)]
pub(super) struct KeyValue<T: Serialize> {
    key: String,
    rev: u64,
    value: T,
}

#[derive(Serialize)]
pub(super) struct DumpReply<'a> {
    cache: DumpCache<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct DumpCache<'a> {
    services: Vec<KeyValue<&'a MicroService>>,
    service_indexes: Vec<KeyValue<Value>>,
    service_tags: Vec<KeyValue<Value>>,
    service_rules: Vec<KeyValue<Value>>,
    service_rule_indexes: Vec<KeyValue<Value>>,
    dependency_rules: Vec<KeyValue<Value>>,
    summaries: Vec<KeyValue<Value>>,
    instances: Vec<KeyValue<&'a MicroServiceInstance>>,
}

/// `GET /v4/{project}/admin/dump`: the cache of every tenant (only from default/default),
/// with the registry revision it was read at in `X-Resource-Revision`.
pub(super) async fn dump(
    State(core): State<Core>,
    Tenant { domain, project }: Tenant,
) -> Result<Response, ScError> {
    let dom = domain.clone();
    if dom != "default" || project != "default" {
        return Err(ScError::new(
            FORBIDDEN,
            "dump is only allowed for default/default",
        ));
    }
    let reg = core.lock();
    let rev = reg.revision();
    let mut services = Vec::new();
    let mut indexes = Vec::new();
    let mut instances = Vec::new();
    let mut tags = Vec::new();
    let mut rules = Vec::new();
    let mut rule_indexes = Vec::new();
    let mut dependency_rules = Vec::new();
    let mut summaries = Vec::new();
    let mut entries: Vec<_> = reg.all_services().collect();
    entries.sort_by(|a, b| a.service.service_id.cmp(&b.service.service_id));
    for e in entries {
        let s = &e.service;
        services.push(KeyValue {
            key: crate::servicecenter::store::keys::service(&e.domain, &e.project, &s.service_id),
            rev,
            value: s,
        });
        indexes.push(KeyValue {
            key: format!(
                "/cse-sr/ms/indexes/{}/{}/{}/{}/{}/{}",
                e.domain, e.project, s.environment, s.app_id, s.service_name, s.version
            ),
            rev,
            value: Value::String(s.service_id.clone()),
        });
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
        for (iid, r) in &e.instances {
            instances.push(KeyValue {
                key: crate::servicecenter::store::keys::instance(
                    &e.domain,
                    &e.project,
                    &s.service_id,
                    iid,
                ),
                rev,
                value: &r.body,
            });
        }
    }
    // Written straight from the registry (no JSON tree in between), under the lock.
    let capacity = 64 + 700 * instances.len() + 400 * services.len();
    let body = to_json(
        &DumpReply {
            cache: DumpCache {
                services,
                service_indexes: indexes,
                service_tags: tags,
                service_rules: rules,
                service_rule_indexes: rule_indexes,
                dependency_rules,
                summaries,
                instances,
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
