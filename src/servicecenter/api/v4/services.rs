//! `/v4/{project}/registry/microservices[/{serviceId}]`: create, read, list, properties and
//! delete of microservices, and `existence` of a microservice or schema.

use super::*;

pub(super) async fn create_service(
    State(core): State<Core>,
    Tenant { domain, project }: Tenant,
    body: Bytes,
) -> Result<Response, ScError> {
    let req: CreateServiceRequest = decode(&body)?;
    let service = req
        .service
        .ok_or_else(|| ScError::invalid("Invalid field 'service': missing"))?;
    if !req.tags.is_empty() {
        crate::servicecenter::registry::tags::validate_tags(&req.tags)?;
    }
    for r in &req.rules {
        crate::servicecenter::registry::rules::validate_rule(r)?;
    }
    let dom = domain.clone();
    let mut reg = core.lock();
    let (id, _) = reg.create_service(&dom, &project, service, now_ms())?;
    if !req.tags.is_empty() {
        crate::servicecenter::registry::tags::add(&mut reg, &dom, &project, &id, req.tags)?;
    }
    if !req.rules.is_empty() {
        crate::servicecenter::registry::rules::add(
            &mut reg,
            &dom,
            &project,
            &id,
            req.rules,
            now_ms(),
        )?;
    }
    for inst in req.instances {
        reg.register_instance(&dom, &project, &id, inst, Instant::now(), now_ms())?;
    }
    drop(reg);
    Ok(json(&IdReply {
        service_id: id,
        ..IdReply::default()
    }))
}

pub(super) async fn list_services(
    State(core): State<Core>,
    Tenant { domain, project }: Tenant,
) -> Response {
    let services = core.lock().list_services(&domain, &project);
    json(&ServicesReply { services })
}

pub(super) async fn get_service(
    State(core): State<Core>,
    ServiceAt {
        tenant: Tenant { domain, project },
        service_id: sid,
    }: ServiceAt,
) -> Result<Response, ScError> {
    let service = core
        .lock()
        .service(&domain, &project, &sid)?
        .service
        .as_ref()
        .clone();
    Ok(json(&ServiceReply { service }))
}

pub(super) fn flag(q: &HashMap<String, String>, name: &str) -> Result<bool, ScError> {
    match q.get(name).map(String::as_str) {
        None | Some("") | Some("false") | Some("0") => Ok(false),
        Some("true") | Some("1") => Ok(true),
        Some(v) => Err(ScError::invalid(format!("Invalid {name} '{v}'"))),
    }
}

/// Deletes one service with its schemas, tags, rules and dependency rules.
/// Without `force`: 400023 when another service depends on it, 400013 with instances.
pub(super) fn delete_one(
    reg: &mut Registry,
    domain: &str,
    project: &str,
    sid: &str,
    force: bool,
) -> Result<(), ScError> {
    reg.service(domain, project, sid)?;
    if !force {
        let consumers: Vec<String> = consumers_of(reg, sid)
            .into_iter()
            .filter(|c| c != sid)
            .collect();
        if !consumers.is_empty() {
            return Err(ScError::new(
                DEPENDED_ON_BY_CONSUMER,
                format!("service {sid} is depended on by {}", consumers.join(",")),
            ));
        }
    }
    // The 400013 check first (it changes nothing), so records are noted only for a
    // delete that happens.
    if !force && reg.entry(sid).is_some_and(|e| !e.instances.is_empty()) {
        reg.delete_service(domain, project, sid, force)?;
    }
    crate::servicecenter::registry::records::mark_all(reg, sid);
    reg.delete_service(domain, project, sid, force)?;
    reg.schemas.remove_service(sid);
    reg.tags.remove_service(sid);
    reg.rules.remove_service(sid);
    reg.dependencies.remove_service(sid);
    Ok(())
}

pub(super) async fn delete_service(
    State(core): State<Core>,
    ServiceAt {
        tenant: Tenant { domain, project },
        service_id: sid,
    }: ServiceAt,
    Query(q): Query_,
) -> Result<Response, ScError> {
    let force = flag(&q, "force")?;
    delete_one(&mut core.lock(), &domain, &project, &sid, force)?;
    Ok(empty())
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct DeleteResult {
    service_id: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    err_message: String,
}

/// `DELETE /registry/microservices` with `{"serviceIds":[…],"force":bool}`: every id is
/// tried; all deleted → 200 `{"services":[{serviceId}]}`, any failure → 400001 naming them
/// (service-center 1.3.0 answers the failure body only).
pub(super) async fn delete_services(
    State(core): State<Core>,
    Tenant { domain, project }: Tenant,
    body: Bytes,
) -> Result<Response, ScError> {
    let req: DeleteServicesRequest = decode(&body)?;
    if req.service_ids.is_empty() || req.service_ids.len() > 100 {
        return Err(ScError::invalid("Invalid serviceIds: 1-100 ids"));
    }
    for id in &req.service_ids {
        check_id("serviceIds item", id)?;
    }
    let dom = domain.clone();
    let mut reg = core.lock();
    let mut results = Vec::new();
    let mut failed = Vec::new();
    for id in req.service_ids {
        match delete_one(&mut reg, &dom, &project, &id, req.force) {
            Ok(()) => results.push(DeleteResult {
                service_id: id,
                err_message: String::new(),
            }),
            Err(e) => failed.push(format!("{id}: {}", e.detail)),
        }
    }
    drop(reg);
    if !failed.is_empty() {
        return Err(ScError::invalid(format!(
            "delete failed for {}",
            failed.join("; ")
        )));
    }
    Ok(json(&serde_json::json!({ "services": results })))
}

pub(super) async fn set_service_properties(
    State(core): State<Core>,
    ServiceAt {
        tenant: Tenant { domain, project },
        service_id: sid,
    }: ServiceAt,
    body: Bytes,
) -> Result<Response, ScError> {
    let req: PropertiesRequest = decode(&body)?;
    core.lock()
        .update_service(&domain, &project, &sid, now_ms(), |s| {
            s.properties = req.properties;
        })?;
    Ok(empty())
}

pub(super) fn param<'a>(q: &'a HashMap<String, String>, name: &str) -> &'a str {
    q.get(name).map_or("", String::as_str)
}

/// Adds `X-Schema-Summary` when the summary is not empty.
pub(super) fn with_summary(mut r: Response, summary: &str) -> Response {
    if !summary.is_empty() {
        if let Ok(v) = HeaderValue::from_str(summary) {
            r.headers_mut().insert("x-schema-summary", v);
        }
    }
    r
}

pub(super) async fn existence(
    State(core): State<Core>,
    Tenant { domain, project }: Tenant,
    Query(q): Query_,
) -> Result<Response, ScError> {
    let dom = domain.clone();
    match param(&q, "type") {
        "microservice" => {
            let id = core.lock().existence(
                &dom,
                &project,
                param(&q, "env"),
                param(&q, "appId"),
                param(&q, "serviceName"),
                param(&q, "version"),
            )?;
            Ok(json(&IdReply {
                service_id: id,
                ..IdReply::default()
            }))
        }
        "schema" => {
            let sid = param(&q, "serviceId");
            let schema_id = param(&q, "schemaId");
            check_id("serviceId", sid)?;
            crate::servicecenter::registry::schemas::validate_schema_id(schema_id)?;
            let reg = core.lock();
            reg.service(&dom, &project, sid)?;
            let rec = reg
                .schemas
                .get(sid, schema_id)
                .ok_or_else(|| crate::servicecenter::registry::schemas::missing(schema_id))?;
            let summary = rec.summary.clone();
            drop(reg);
            Ok(with_summary(
                json(&IdReply {
                    schema_id: schema_id.to_string(),
                    ..IdReply::default()
                }),
                &summary,
            ))
        }
        other => Err(ScError::invalid(format!(
            "Invalid type '{other}': microservice or schema"
        ))),
    }
}

// ---- tags -----------------------------------------------------------------------
