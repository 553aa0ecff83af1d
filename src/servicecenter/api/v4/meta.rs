//! Tags, rules, schemas and dependencies of a microservice.

use super::*;

pub(super) async fn add_tags(
    State(core): State<Core>,
    ServiceAt {
        tenant: Tenant { domain, project },
        service_id: sid,
    }: ServiceAt,
    body: Bytes,
) -> Result<Response, ScError> {
    let req: TagsRequest = decode(&body)?;
    crate::servicecenter::registry::tags::add(&mut core.lock(), &domain, &project, &sid, req.tags)?;
    Ok(empty())
}

pub(super) async fn get_tags(
    State(core): State<Core>,
    ServiceAt {
        tenant: Tenant { domain, project },
        service_id: sid,
    }: ServiceAt,
) -> Result<Response, ScError> {
    let reg = core.lock();
    reg.service(&domain, &project, &sid)?;
    let tags = reg.tags.of(&sid);
    drop(reg);
    if tags.is_empty() {
        return Ok(json(&serde_json::json!({})));
    }
    Ok(json(&serde_json::json!({ "tags": tags })))
}

pub(super) async fn update_tag(
    State(core): State<Core>,
    ServiceAt {
        tenant: Tenant { domain, project },
        service_id: sid,
    }: ServiceAt,
    Path((_, _, key)): Path<(String, String, String)>,
    Query(q): Query_,
) -> Result<Response, ScError> {
    crate::servicecenter::registry::tags::update(
        &mut core.lock(),
        &domain,
        &project,
        &sid,
        &key,
        param(&q, "value"),
    )?;
    Ok(empty())
}

pub(super) async fn delete_tags(
    State(core): State<Core>,
    ServiceAt {
        tenant: Tenant { domain, project },
        service_id: sid,
    }: ServiceAt,
    Path((_, _, keys)): Path<(String, String, String)>,
) -> Result<Response, ScError> {
    let keys: Vec<&str> = keys.split(',').collect();
    crate::servicecenter::registry::tags::delete(&mut core.lock(), &domain, &project, &sid, &keys)?;
    Ok(empty())
}

// ---- rules ----------------------------------------------------------------------

pub(super) async fn add_rules(
    State(core): State<Core>,
    ServiceAt {
        tenant: Tenant { domain, project },
        service_id: sid,
    }: ServiceAt,
    body: Bytes,
) -> Result<Response, ScError> {
    let req: RulesRequest = decode(&body)?;
    let ids = crate::servicecenter::registry::rules::add(
        &mut core.lock(),
        &domain,
        &project,
        &sid,
        req.rules,
        now_ms(),
    )?;
    if ids.is_empty() {
        return Ok(json(&serde_json::json!({})));
    }
    Ok(json(&serde_json::json!({ "RuleIds": ids })))
}

pub(super) async fn get_rules(
    State(core): State<Core>,
    ServiceAt {
        tenant: Tenant { domain, project },
        service_id: sid,
    }: ServiceAt,
) -> Result<Response, ScError> {
    let reg = core.lock();
    reg.service(&domain, &project, &sid)?;
    let rules = reg.rules.of(&sid).to_vec();
    drop(reg);
    if rules.is_empty() {
        return Ok(json(&serde_json::json!({})));
    }
    Ok(json(&serde_json::json!({ "rules": rules })))
}

pub(super) async fn update_rule(
    State(core): State<Core>,
    ServiceAt {
        tenant: Tenant { domain, project },
        service_id: sid,
    }: ServiceAt,
    Path((_, _, rule_id)): Path<(String, String, String)>,
    body: Bytes,
) -> Result<Response, ScError> {
    let rule: Rule = decode(&body)?;
    crate::servicecenter::registry::rules::update(
        &mut core.lock(),
        &domain,
        &project,
        &sid,
        &rule_id,
        rule,
        now_ms(),
    )?;
    Ok(empty())
}

pub(super) async fn delete_rules(
    State(core): State<Core>,
    ServiceAt {
        tenant: Tenant { domain, project },
        service_id: sid,
    }: ServiceAt,
    Path((_, _, ids)): Path<(String, String, String)>,
) -> Result<Response, ScError> {
    let ids: Vec<&str> = ids.split(',').collect();
    crate::servicecenter::registry::rules::delete(&mut core.lock(), &domain, &project, &sid, &ids)?;
    Ok(empty())
}

// ---- schemas --------------------------------------------------------------------

pub(super) async fn get_schema(
    State(core): State<Core>,
    ServiceAt {
        tenant: Tenant { domain, project },
        service_id: sid,
    }: ServiceAt,
    Path((_, _, schema_id)): Path<(String, String, String)>,
) -> Result<Response, ScError> {
    crate::servicecenter::registry::schemas::validate_schema_id(&schema_id)?;
    let reg = core.lock();
    reg.service(&domain, &project, &sid)?;
    let rec = reg
        .schemas
        .get(&sid, &schema_id)
        .cloned()
        .ok_or_else(|| crate::servicecenter::registry::schemas::missing(&schema_id))?;
    drop(reg);
    Ok(with_summary(
        json(&serde_json::json!({ "schema": rec.schema })),
        &rec.summary,
    ))
}

pub(super) async fn put_schema(
    State(core): State<Core>,
    ServiceAt {
        tenant: Tenant { domain, project },
        service_id: sid,
    }: ServiceAt,
    Path((_, _, schema_id)): Path<(String, String, String)>,
    body: Bytes,
) -> Result<Response, ScError> {
    let req: SchemaRequest = decode(&body)?;
    crate::servicecenter::registry::schemas::put(
        &mut core.lock(),
        &domain,
        &project,
        &sid,
        &schema_id,
        req.schema,
        req.summary,
        now_ms(),
    )?;
    Ok(empty())
}

pub(super) async fn delete_schema(
    State(core): State<Core>,
    ServiceAt {
        tenant: Tenant { domain, project },
        service_id: sid,
    }: ServiceAt,
    Path((_, _, schema_id)): Path<(String, String, String)>,
) -> Result<Response, ScError> {
    crate::servicecenter::registry::schemas::validate_schema_id(&schema_id)?;
    crate::servicecenter::registry::schemas::delete(
        &mut core.lock(),
        &domain,
        &project,
        &sid,
        &schema_id,
    )?;
    Ok(empty())
}

pub(super) async fn put_schemas(
    State(core): State<Core>,
    ServiceAt {
        tenant: Tenant { domain, project },
        service_id: sid,
    }: ServiceAt,
    body: Bytes,
) -> Result<Response, ScError> {
    let req: SchemasRequest = decode(&body)?;
    crate::servicecenter::registry::schemas::put_all(
        &mut core.lock(),
        &domain,
        &project,
        &sid,
        req.schemas,
        now_ms(),
    )?;
    Ok(empty())
}

pub(super) async fn get_schemas(
    State(core): State<Core>,
    ServiceAt {
        tenant: Tenant { domain, project },
        service_id: sid,
    }: ServiceAt,
    Query(q): Query_,
) -> Result<Response, ScError> {
    let with_schema = match param(&q, "withSchema") {
        "" | "0" => false,
        "1" => true,
        v => {
            return Err(ScError::invalid(format!(
                "Invalid withSchema '{v}': 0 or 1"
            )))
        }
    };
    let reg = core.lock();
    reg.service(&domain, &project, &sid)?;
    let items = schemas::schema_items(&reg, &sid, with_schema);
    drop(reg);
    if items.is_empty() {
        return Ok(json(&serde_json::json!({})));
    }
    Ok(json(&serde_json::json!({ "schemas": items })))
}

// ---- dependencies ---------------------------------------------------------------

pub(super) async fn put_dependencies(
    core: Core,
    tenant: Tenant,
    body: Bytes,
    replace: bool,
) -> Result<Response, ScError> {
    let req: DependenciesRequest = decode(&body)?;
    crate::servicecenter::registry::dependencies::put_rules(
        &mut core.lock(),
        &tenant.domain,
        &tenant.project,
        req.dependencies,
        replace,
    )?;
    Ok(empty())
}

pub(super) async fn add_dependencies(
    State(core): State<Core>,
    tenant: Tenant,
    body: Bytes,
) -> Result<Response, ScError> {
    put_dependencies(core, tenant, body, false).await
}

pub(super) async fn replace_dependencies(
    State(core): State<Core>,
    tenant: Tenant,
    body: Bytes,
) -> Result<Response, ScError> {
    put_dependencies(core, tenant, body, true).await
}

pub(super) async fn get_providers(
    State(core): State<Core>,
    ServiceAt {
        tenant: Tenant { domain, project },
        service_id: sid,
    }: ServiceAt,
    Query(q): Query_,
) -> Result<Response, ScError> {
    related(&core, &domain, &project, &sid, &q, Related::Providers)
}

pub(super) async fn get_consumers(
    State(core): State<Core>,
    ServiceAt {
        tenant: Tenant { domain, project },
        service_id: sid,
    }: ServiceAt,
    Query(q): Query_,
) -> Result<Response, ScError> {
    related(&core, &domain, &project, &sid, &q, Related::Consumers)
}

/// Which side of a service's dependencies to list.
#[derive(Clone, Copy)]
pub(super) enum Related {
    /// `GET .../microservices/{consumerId}/providers`.
    Providers,
    /// `GET .../microservices/{providerId}/consumers`.
    Consumers,
}

/// `{"providers":[...]}` or `{"consumers":[...]}` of service `sid` (`{}` when none);
/// `noSelf=1` leaves the service itself out, as service-center does.
pub(super) fn related(
    core: &Core,
    domain: &str,
    project: &str,
    sid: &str,
    q: &HashMap<String, String>,
    which: Related,
) -> Result<Response, ScError> {
    let (id_name, key) = match which {
        Related::Providers => ("consumerId", "providers"),
        Related::Consumers => ("providerId", "consumers"),
    };
    check_id(id_name, sid)?;
    let no_self = flag(q, "noSelf")?;
    let reg = core.lock();
    reg.service(domain, project, sid)?;
    let ids: Vec<String> = match which {
        Related::Providers => providers_of(&reg, sid),
        Related::Consumers => consumers_of(&reg, sid),
    }
    .into_iter()
    .filter(|id| !no_self || id != sid)
    .collect();
    let services = crate::servicecenter::registry::dependencies::services(&reg, &ids);
    drop(reg);
    if services.is_empty() {
        return Ok(json(&serde_json::json!({})));
    }
    Ok(json(&serde_json::json!({ key: services })))
}

// ---- instances ------------------------------------------------------------------
