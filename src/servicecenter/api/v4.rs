//! The service-center v4 REST API of the built-in core (`/v4/{project}/...`).
//!
//! Behaviour copies service-center 1.3.0 with HEAD's tenant default
//! (servicecomb-notes c.1-c.7): the domain comes from `X-Domain-Name`
//! (default `default`), request JSON field names match case-insensitively and
//! unknown fields are ignored, empty response fields are left out (an empty
//! find answers `{}`), and errors are [`ScError`] bodies.
//!
//! Routes: microservices (create with tags/rules/instances, get, list, properties, delete
//! one or many), existence (microservice, schema), schemas ([`registry::schemas`](crate::servicecenter::registry::schemas)), tags
//! ([`registry::tags`](crate::servicecenter::registry::tags)), rules ([`registry::rules`](crate::servicecenter::registry::rules)), dependencies ([`registry::dependencies`](crate::servicecenter::registry::dependencies)),
//! instances (register, get, list, find and batch find ([`registry::discovery`](crate::servicecenter::registry::discovery)), heartbeat and
//! batch heartbeats, status, properties, unregister), watch ([`super::watch`]), governance
//! ([`super::govern`]), version, health and the admin dump.

use std::collections::HashMap;
use std::sync::MutexGuard;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::body::{decode, empty, json, json_reply, to_json};
use super::extract::{check_id, InstanceAt, ServiceAt, Tenant};
use crate::servicecenter::core::Core;
use crate::servicecenter::error::{
    ScError, DEPENDED_ON_BY_CONSUMER, FORBIDDEN, INSTANCE_NOT_EXISTS,
};
use crate::servicecenter::registry::dependencies::{consumers_of, providers_of, DependencyItem};
use crate::servicecenter::registry::discovery::{tag_keys, FindQuery, Found};
use crate::servicecenter::registry::rules::Rule;
use crate::servicecenter::registry::schemas::{self, SchemaItem};
use crate::servicecenter::registry::{now_ms, MicroService, MicroServiceInstance, Props, Registry};

type Query_ = Query<HashMap<String, String>>;

/// The v4 routes of the registry (microservices, instances, schemas, tags, rules,
/// dependencies, the admin dump), without state: [`super::router`] adds the watch, change
/// log and governance routes and the [`Core`].
pub fn routes() -> Router<Core> {
    const P: &str = "/v4/{project}/registry";
    const S: &str = "/v4/{project}/registry/microservices/{service_id}";
    const I: &str = "/v4/{project}/registry/microservices/{service_id}/instances/{instance_id}";
    Router::new()
        .route(&format!("{P}/version"), get(version))
        .route(&format!("{P}/health"), get(health))
        .route(
            &format!("{P}/microservices"),
            get(list_services)
                .post(create_service)
                .delete(delete_services),
        )
        .route(S, get(get_service).delete(delete_service))
        .route(&format!("{S}/properties"), put(set_service_properties))
        .route(&format!("{P}/existence"), get(existence))
        .route(&format!("{S}/tags"), post(add_tags).get(get_tags))
        .route(
            &format!("{S}/tags/{{key}}"),
            put(update_tag).delete(delete_tags),
        )
        .route(&format!("{S}/rules"), post(add_rules).get(get_rules))
        .route(
            &format!("{S}/rules/{{rule_id}}"),
            put(update_rule).delete(delete_rules),
        )
        .route(&format!("{S}/schemas"), post(put_schemas).get(get_schemas))
        .route(
            &format!("{S}/schemas/{{schema_id}}"),
            get(get_schema).put(put_schema).delete(delete_schema),
        )
        .route(
            &format!("{P}/dependencies"),
            post(add_dependencies).put(replace_dependencies),
        )
        .route(&format!("{S}/providers"), get(get_providers))
        .route(&format!("{S}/consumers"), get(get_consumers))
        .route(
            &format!("{S}/instances"),
            get(list_instances).post(register_instance),
        )
        .route(I, get(get_instance).delete(unregister))
        .route(&format!("{I}/heartbeat"), put(heartbeat))
        .route(&format!("{I}/status"), put(set_status))
        .route(&format!("{I}/properties"), put(set_properties))
        .route(&format!("{P}/heartbeats"), put(heartbeats))
        .route(&format!("{P}/instances"), get(find))
        .route(&format!("{P}/instances/action"), post(batch_find))
        .route("/v4/{project}/admin/dump", get(dump))
}

#[derive(Deserialize)]
struct CreateServiceRequest {
    service: Option<MicroService>,
    #[serde(default)]
    rules: Vec<Rule>,
    #[serde(default)]
    tags: Props,
    #[serde(default)]
    instances: Vec<MicroServiceInstance>,
}

#[derive(Deserialize)]
struct RegisterInstanceRequest {
    instance: Option<MicroServiceInstance>,
}

#[derive(Deserialize)]
struct BatchRegisterRequest {
    #[serde(default)]
    services: Vec<MicroService>,
    #[serde(default)]
    instances: Vec<MicroServiceInstance>,
}

/// The outcome of one item of a batch: its id, or service-center's error.
#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
struct BatchRegisterItem {
    #[serde(skip_serializing_if = "String::is_empty")]
    service_id: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    instance_id: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    error_code: String,
    #[serde(skip_serializing_if = "str::is_empty")]
    error_message: &'static str,
    #[serde(skip_serializing_if = "String::is_empty")]
    detail: String,
}

/// The most registrations one batch may carry.
pub const MAX_BATCH_REGISTER: usize = 1000;

#[derive(Deserialize)]
struct PropertiesRequest {
    #[serde(default)]
    properties: Props,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct DeleteServicesRequest {
    #[serde(rename = "serviceIds")]
    service_ids: Vec<String>,
    force: bool,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct TagsRequest {
    tags: Props,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RulesRequest {
    rules: Vec<Rule>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct SchemaRequest {
    schema: String,
    summary: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct SchemasRequest {
    schemas: Vec<SchemaItem>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct DependenciesRequest {
    dependencies: Vec<DependencyItem>,
}

#[derive(Deserialize, Default, Clone)]
#[serde(default, rename_all = "camelCase")]
struct InstanceKey {
    service_id: String,
    instance_id: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct HeartbeatsRequest {
    instances: Vec<InstanceKey>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct FindServiceItem {
    service: Option<crate::servicecenter::registry::dependencies::DependencyKey>,
    rev: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct FindInstanceItem {
    instance: Option<InstanceKey>,
    rev: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct BatchFindRequest {
    services: Vec<FindServiceItem>,
    instances: Vec<FindInstanceItem>,
}

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
struct IdReply {
    #[serde(skip_serializing_if = "String::is_empty")]
    service_id: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    instance_id: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    schema_id: String,
}

#[derive(Serialize)]
struct ServicesReply {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    services: Vec<MicroService>,
}

#[derive(Serialize)]
struct ServiceReply {
    service: MicroService,
}

#[derive(Serialize)]
struct InstancesReply {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    instances: Vec<MicroServiceInstance>,
}

#[derive(Serialize)]
struct InstanceReply {
    instance: MicroServiceInstance,
}

async fn version() -> Response {
    json(&serde_json::json!({
        "version": "1.3.0",
        "buildTag": concat!("syncer-", env!("CARGO_PKG_VERSION")),
        "goVersion": "",
        "os": std::env::consts::OS,
        "arch": std::env::consts::ARCH,
        "apiVersion": "4.0.0",
    }))
}

async fn health() -> Response {
    json(&InstancesReply {
        instances: Vec::new(),
    })
}

async fn create_service(
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

async fn list_services(State(core): State<Core>, Tenant { domain, project }: Tenant) -> Response {
    let services = core.lock().list_services(&domain, &project);
    json(&ServicesReply { services })
}

async fn get_service(
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
        .clone();
    Ok(json(&ServiceReply { service }))
}

fn flag(q: &HashMap<String, String>, name: &str) -> Result<bool, ScError> {
    match q.get(name).map(String::as_str) {
        None | Some("") | Some("false") | Some("0") => Ok(false),
        Some("true") | Some("1") => Ok(true),
        Some(v) => Err(ScError::invalid(format!("Invalid {name} '{v}'"))),
    }
}

/// Deletes one service with its schemas, tags, rules and dependency rules.
/// Without `force`: 400023 when another service depends on it, 400013 with instances.
fn delete_one(
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

async fn delete_service(
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
struct DeleteResult {
    service_id: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    err_message: String,
}

/// `DELETE /registry/microservices` with `{"serviceIds":[…],"force":bool}`: every id is
/// tried; all deleted → 200 `{"services":[{serviceId}]}`, any failure → 400001 naming them
/// (service-center 1.3.0 answers the failure body only).
async fn delete_services(
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

async fn set_service_properties(
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

fn param<'a>(q: &'a HashMap<String, String>, name: &str) -> &'a str {
    q.get(name).map_or("", String::as_str)
}

/// Adds `X-Schema-Summary` when the summary is not empty.
fn with_summary(mut r: Response, summary: &str) -> Response {
    if !summary.is_empty() {
        if let Ok(v) = HeaderValue::from_str(summary) {
            r.headers_mut().insert("x-schema-summary", v);
        }
    }
    r
}

async fn existence(
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

async fn add_tags(
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

async fn get_tags(
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

async fn update_tag(
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

async fn delete_tags(
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

async fn add_rules(
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

async fn get_rules(
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

async fn update_rule(
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

async fn delete_rules(
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

async fn get_schema(
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

async fn put_schema(
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

async fn delete_schema(
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

async fn put_schemas(
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

async fn get_schemas(
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

async fn put_dependencies(
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

async fn add_dependencies(
    State(core): State<Core>,
    tenant: Tenant,
    body: Bytes,
) -> Result<Response, ScError> {
    put_dependencies(core, tenant, body, false).await
}

async fn replace_dependencies(
    State(core): State<Core>,
    tenant: Tenant,
    body: Bytes,
) -> Result<Response, ScError> {
    put_dependencies(core, tenant, body, true).await
}

async fn get_providers(
    State(core): State<Core>,
    ServiceAt {
        tenant: Tenant { domain, project },
        service_id: sid,
    }: ServiceAt,
    Query(q): Query_,
) -> Result<Response, ScError> {
    related(&core, &domain, &project, &sid, &q, Related::Providers)
}

async fn get_consumers(
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
enum Related {
    /// `GET .../microservices/{consumerId}/providers`.
    Providers,
    /// `GET .../microservices/{providerId}/consumers`.
    Consumers,
}

/// `{"providers":[...]}` or `{"consumers":[...]}` of service `sid` (`{}` when none);
/// `noSelf=1` leaves the service itself out, as service-center does.
fn related(
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

async fn register_instance(
    State(core): State<Core>,
    ServiceAt {
        tenant: Tenant { domain, project },
        service_id: sid,
    }: ServiceAt,
    body: Bytes,
) -> Result<Response, ScError> {
    let req: RegisterInstanceRequest = decode(&body)?;
    let instance = req
        .instance
        .ok_or_else(|| ScError::invalid("Invalid field 'instance': missing"))?;
    let id = core.lock().register_instance(
        &domain,
        &project,
        &sid,
        instance,
        Instant::now(),
        now_ms(),
    )?;
    Ok(json(&IdReply {
        instance_id: id,
        ..IdReply::default()
    }))
}

/// `POST /registry/instances/action?type=register` (syncer extension): creates up to
/// [`MAX_BATCH_REGISTER`] microservices as one `POST .../microservices` each would (an
/// existing key answers its id), then registers up to [`MAX_BATCH_REGISTER`] instances,
/// each naming its service in `serviceId`, as one `POST .../instances` each would, under
/// one lock: `{"services":[...], "instances":[...]}` in (either may be left out),
/// `{"services":[{"serviceId"} or {error}], "instances":[{"instanceId"} or {error}]}` out,
/// in order, an error being `{"errorCode","errorMessage","detail"}`. A failing item fails
/// alone. A real service-center answers 400 (unknown type), which tells a client to create
/// and register one by one.
///
/// # Errors
/// 400001 on a malformed body, nothing to do, or a list longer than the limit.
fn batch_register(core: &Core, tenant: &Tenant, body: &[u8]) -> Result<Response, ScError> {
    let req: BatchRegisterRequest = decode(body)?;
    if (req.instances.is_empty() && req.services.is_empty())
        || req.instances.len() > MAX_BATCH_REGISTER
        || req.services.len() > MAX_BATCH_REGISTER
    {
        return Err(ScError::invalid(format!(
            "Invalid fields 'services', 'instances': 1 to {MAX_BATCH_REGISTER} items in all, \
             at most {MAX_BATCH_REGISTER} of each, got {} and {}",
            req.services.len(),
            req.instances.len()
        )));
    }
    let (dom, project) = (&tenant.domain, &tenant.project);
    let (now, wall) = (Instant::now(), now_ms());
    let failed = |e: ScError| BatchRegisterItem {
        error_code: e.code.to_string(),
        error_message: ScError::message(e.code),
        detail: e.detail,
        ..BatchRegisterItem::default()
    };
    let mut reg = core.lock();
    let services: Vec<BatchRegisterItem> = req
        .services
        .into_iter()
        .map(
            |service| match reg.create_service(dom, project, service, wall) {
                Ok((service_id, _)) => BatchRegisterItem {
                    service_id,
                    ..BatchRegisterItem::default()
                },
                Err(e) => failed(e),
            },
        )
        .collect();
    let items: Vec<BatchRegisterItem> = req
        .instances
        .into_iter()
        .map(|instance| {
            let sid = instance.service_id.clone();
            let done = check_id("serviceId", &sid)
                .and_then(|()| reg.register_instance(dom, project, &sid, instance, now, wall));
            match done {
                Ok(instance_id) => BatchRegisterItem {
                    instance_id,
                    ..BatchRegisterItem::default()
                },
                Err(e) => failed(e),
            }
        })
        .collect();
    drop(reg);
    Ok(json(
        &serde_json::json!({ "services": services, "instances": items }),
    ))
}

/// The `rev` a client sent (`?rev=`, else the `X-Resource-Revision` request header).
fn client_rev<'a>(q: &'a HashMap<String, String>, headers: &'a HeaderMap) -> Option<&'a str> {
    q.get("rev")
        .map(String::as_str)
        .or_else(|| {
            headers
                .get("x-resource-revision")
                .and_then(|v| v.to_str().ok())
        })
        .filter(|r| !r.is_empty())
}

/// Whether the client's rev is the revision `rev` (the reply is then a 304 with an empty
/// body; `noCache`/`cacheOnly` make the rev ignored, as in 1.3.0).
fn is_current(rev: u64, q: &HashMap<String, String>, headers: &HeaderMap) -> bool {
    let ignore = flag(q, "noCache").unwrap_or(false) || flag(q, "cacheOnly").unwrap_or(false);
    !ignore && client_rev(q, headers).is_some_and(|c| c == rev.to_string())
}

/// `reply` (`None`: 304 with an empty body) with `X-Resource-Revision: rev`.
fn revision_reply(rev: u64, reply: Option<Response>) -> Response {
    let mut r = reply.unwrap_or_else(|| StatusCode::NOT_MODIFIED.into_response());
    r.headers_mut()
        .insert("x-resource-revision", HeaderValue::from(rev));
    r
}

/// Adds `X-Resource-Revision` (the revision `rev`); 304 with an empty body when the
/// client's rev is current ([`is_current`]).
fn with_revision(
    rev: u64,
    q: &HashMap<String, String>,
    headers: &HeaderMap,
    reply: impl FnOnce() -> Response,
) -> Response {
    let current = is_current(rev, q, headers);
    revision_reply(rev, (!current).then(reply))
}

/// The reply of a find or instance list of the providers `ids`: the JSON parts are taken
/// (or made) under the lock ([`crate::servicecenter::registry::discovery::found_parts`]), joined after it.
fn found_reply(mut reg: MutexGuard<'_, Registry>, ids: &[String], current: bool) -> Response {
    let rev = reg.revision();
    let parts =
        (!current).then(|| crate::servicecenter::registry::discovery::found_parts(&mut reg, ids));
    drop(reg);
    let body = parts.map(|p| {
        p.map(|p| crate::servicecenter::registry::discovery::found_json(&p))
            .map_err(|e| ScError::new(500003, format!("encoding the reply: {e}")))
    });
    revision_reply(rev, body.map(json_reply))
}

fn consumer_header(headers: &HeaderMap) -> Option<&str> {
    headers
        .get("x-consumerid")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
}

async fn list_instances(
    State(core): State<Core>,
    ServiceAt {
        tenant: Tenant { domain, project },
        service_id: sid,
    }: ServiceAt,
    Query(q): Query_,
    headers: HeaderMap,
) -> Result<Response, ScError> {
    let tags = tag_keys(param(&q, "tags"));
    let reg = core.lock();
    let provider = crate::servicecenter::registry::discovery::visible_provider(
        &reg,
        &domain,
        &project,
        &sid,
        consumer_header(&headers),
    )?;
    let ids = if reg.tags.has_all(&sid, &tags) {
        vec![provider.service.service_id.clone()]
    } else {
        Vec::new()
    };
    let current = is_current(reg.revision(), &q, &headers);
    Ok(found_reply(reg, &ids, current))
}

async fn get_instance(
    State(core): State<Core>,
    InstanceAt {
        tenant: Tenant { domain, project },
        service_id: sid,
        instance_id: iid,
    }: InstanceAt,
    Query(q): Query_,
    headers: HeaderMap,
) -> Result<Response, ScError> {
    let tags = tag_keys(param(&q, "tags"));
    let reg = core.lock();
    let provider = crate::servicecenter::registry::discovery::visible_provider(
        &reg,
        &domain,
        &project,
        &sid,
        consumer_header(&headers),
    )?;
    let instance = provider
        .instances
        .get(&iid)
        .filter(|_| reg.tags.has_all(&sid, &tags))
        .map(|r| r.body.clone())
        .ok_or_else(|| {
            ScError::new(
                INSTANCE_NOT_EXISTS,
                format!("instance {iid} does not exist"),
            )
        })?;
    let rev = reg.revision();
    drop(reg);
    Ok(with_revision(rev, &q, &headers, || {
        json(&InstanceReply { instance })
    }))
}

async fn unregister(
    State(core): State<Core>,
    InstanceAt {
        tenant: Tenant { domain, project },
        service_id: sid,
        instance_id: iid,
    }: InstanceAt,
) -> Result<Response, ScError> {
    core.lock().unregister(&domain, &project, &sid, &iid)?;
    Ok(empty())
}

async fn heartbeat(
    State(core): State<Core>,
    InstanceAt {
        tenant: Tenant { domain, project },
        service_id: sid,
        instance_id: iid,
    }: InstanceAt,
) -> Result<Response, ScError> {
    core.lock()
        .heartbeat(&domain, &project, &sid, &iid, Instant::now(), now_ms())?;
    Ok(empty())
}

/// `PUT /registry/heartbeats`: all renewed → 200 empty; any failure → 400017 naming them
/// (1.3.0; the others are renewed all the same).
async fn heartbeats(
    State(core): State<Core>,
    Tenant { domain, project }: Tenant,
    body: Bytes,
) -> Result<Response, ScError> {
    let req: HeartbeatsRequest = decode(&body)?;
    if req.instances.is_empty() {
        return Err(ScError::invalid("Invalid instances: at least one"));
    }
    let dom = domain.clone();
    let (now, wall) = (Instant::now(), now_ms());
    let mut reg = core.lock();
    let failed: Vec<String> = req
        .instances
        .iter()
        .filter(|k| {
            reg.heartbeat(&dom, &project, &k.service_id, &k.instance_id, now, wall)
                .is_err()
        })
        .map(|k| format!("{}/{}", k.service_id, k.instance_id))
        .collect();
    drop(reg);
    if !failed.is_empty() {
        return Err(ScError::new(
            INSTANCE_NOT_EXISTS,
            format!("heartbeat failed for {}", failed.join(",")),
        ));
    }
    Ok(empty())
}

async fn set_status(
    State(core): State<Core>,
    InstanceAt {
        tenant: Tenant { domain, project },
        service_id: sid,
        instance_id: iid,
    }: InstanceAt,
    Query(q): Query_,
) -> Result<Response, ScError> {
    core.lock()
        .set_instance_status(&domain, &project, &sid, &iid, param(&q, "value"), now_ms())?;
    Ok(empty())
}

async fn set_properties(
    State(core): State<Core>,
    InstanceAt {
        tenant: Tenant { domain, project },
        service_id: sid,
        instance_id: iid,
    }: InstanceAt,
    body: Bytes,
) -> Result<Response, ScError> {
    let req: PropertiesRequest = decode(&body)?;
    core.lock()
        .set_instance_properties(&domain, &project, &sid, &iid, req.properties, now_ms())?;
    Ok(empty())
}

async fn find(
    State(core): State<Core>,
    Tenant { domain, project }: Tenant,
    Query(q): Query_,
    headers: HeaderMap,
) -> Result<Response, ScError> {
    let query = FindQuery {
        env: param(&q, "env").to_string(),
        app_id: param(&q, "appId").to_string(),
        service_name: param(&q, "serviceName").to_string(),
        version: param(&q, "version").to_string(),
        tags: tag_keys(param(&q, "tags")),
    };
    let dom = domain.clone();
    let mut reg = core.lock();
    let ids = crate::servicecenter::registry::discovery::find(
        &mut reg,
        &dom,
        &project,
        &query,
        consumer_header(&headers),
    )?;
    let current = is_current(reg.revision(), &q, &headers);
    Ok(found_reply(reg, &ids, current))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct FindResult<'a> {
    index: usize,
    rev: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    instances: Vec<&'a MicroServiceInstance>,
}

#[derive(Serialize)]
struct FailedError {
    #[serde(rename = "errorCode")]
    error_code: String,
    #[serde(rename = "errorMessage")]
    error_message: &'static str,
    #[serde(skip_serializing_if = "String::is_empty")]
    detail: String,
}

#[derive(Serialize)]
struct FindFailed {
    indexes: Vec<usize>,
    error: FailedError,
}

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
struct BatchResult<'a> {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    updated: Vec<FindResult<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    not_modified: Vec<usize>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    failed: Vec<FindFailed>,
}

impl<'a> BatchResult<'a> {
    fn is_empty(&self) -> bool {
        self.updated.is_empty() && self.not_modified.is_empty() && self.failed.is_empty()
    }

    fn add(
        &mut self,
        index: usize,
        rev: &str,
        client_rev: &str,
        r: Result<Vec<&'a MicroServiceInstance>, ScError>,
    ) {
        match r {
            Ok(_) if client_rev == rev => self.not_modified.push(index),
            Ok(instances) => self.updated.push(FindResult {
                index,
                rev: rev.to_string(),
                instances,
            }),
            Err(e) => {
                // Failures with the same error share one entry (as service-center groups them).
                match self.failed.iter_mut().find(|f| {
                    f.error.error_code == e.code.to_string() && f.error.detail == e.detail
                }) {
                    Some(f) => f.indexes.push(index),
                    None => self.failed.push(FindFailed {
                        indexes: vec![index],
                        error: FailedError {
                            error_code: e.code.to_string(),
                            error_message: ScError::message(e.code),
                            detail: e.detail,
                        },
                    }),
                }
            }
        }
    }
}

#[derive(Serialize, Default)]
struct BatchFindReply<'a> {
    #[serde(skip_serializing_if = "BatchResult::is_empty")]
    services: BatchResult<'a>,
    #[serde(skip_serializing_if = "BatchResult::is_empty")]
    instances: BatchResult<'a>,
}

/// `POST /registry/instances/action?type=query`: several finds (by service key) and
/// instance reads (by id) at once; each index is `updated`, `notModified` (its `rev` is
/// current) or `failed`.
async fn batch_find(
    State(core): State<Core>,
    tenant: Tenant,
    Query(q): Query_,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ScError> {
    match param(&q, "type") {
        "query" => {}
        "register" => return batch_register(&core, &tenant, &body),
        other => {
            return Err(ScError::invalid(format!(
                "Invalid type '{other}': query or register"
            )))
        }
    }
    let req: BatchFindRequest = decode(&body)?;
    if req.services.is_empty() && req.instances.is_empty() {
        return Err(ScError::invalid(
            "Invalid request: services and instances are both empty",
        ));
    }
    let Tenant {
        domain: dom,
        project,
    } = tenant;
    let consumer = consumer_header(&headers);
    let mut guard = core.lock();
    let mut reply = BatchFindReply::default();
    let mut outcomes = Vec::new();
    for (i, item) in req.services.iter().enumerate() {
        let r = match &item.service {
            None => Err(ScError::invalid("Invalid service: missing")),
            Some(k) => crate::servicecenter::registry::discovery::find(
                &mut guard,
                &dom,
                &project,
                &FindQuery {
                    env: k.environment.clone(),
                    app_id: k.app_id.clone(),
                    service_name: k.service_name.clone(),
                    version: if k.version.is_empty() {
                        "0+".into()
                    } else {
                        k.version.clone()
                    },
                    tags: Vec::new(),
                },
                consumer,
            ),
        };
        outcomes.push((i, r));
    }
    let reg = &*guard;
    let rev = reg.revision().to_string();
    for (i, r) in &outcomes {
        let r = r
            .as_ref()
            .map(|ids| Found::new(reg, ids).iter().collect())
            .map_err(Clone::clone);
        reply.services.add(*i, &rev, &req.services[*i].rev, r);
    }
    for (i, item) in req.instances.iter().enumerate() {
        let r = match &item.instance {
            None => Err(ScError::invalid("Invalid instance: missing")),
            Some(k) => crate::servicecenter::registry::discovery::visible_provider(
                reg,
                &dom,
                &project,
                &k.service_id,
                consumer,
            )
            .and_then(|p| {
                p.instances
                    .get(&k.instance_id)
                    .map(|r| vec![&r.body])
                    .ok_or_else(|| {
                        ScError::new(
                            INSTANCE_NOT_EXISTS,
                            format!("instance {} does not exist", k.instance_id),
                        )
                    })
            }),
        };
        reply.instances.add(i, &rev, &item.rev, r);
    }
    let body = to_json(&reply, 1024);
    drop(reply);
    drop(guard);
    Ok(json_reply(body))
}

#[derive(Serialize)]
struct KeyValue<T: Serialize> {
    key: String,
    rev: u64,
    value: T,
}

#[derive(Serialize)]
struct DumpReply<'a> {
    cache: DumpCache<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DumpCache<'a> {
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
async fn dump(
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    async fn call(core: &Core, method: &str, uri: &str, body: &str) -> (StatusCode, Value) {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .body(Body::from(body.to_string()))
            .unwrap();
        let resp = crate::servicecenter::router(core.clone())
            .oneshot(req)
            .await
            .unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        let v = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, v)
    }

    #[tokio::test]
    async fn create_is_idempotent_and_case_insensitive() {
        let core = Core::new();
        let body = r#"{"Service":{"ServiceName":"hello","APPID":"app","extra":1}}"#;
        let (s, v) = call(&core, "POST", "/v4/default/registry/microservices", body).await;
        assert_eq!(s, StatusCode::OK);
        let id = v["serviceId"].as_str().unwrap().to_string();
        assert_eq!(
            id,
            crate::servicecenter::registry::default_service_id(
                "default", "default", "", "app", "hello", "0.0.1"
            )
        );
        let (s, v2) = call(&core, "POST", "/v4/default/registry/microservices", body).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(v2["serviceId"], v["serviceId"]);
        let (_, got) = call(
            &core,
            "GET",
            &format!("/v4/default/registry/microservices/{id}"),
            "",
        )
        .await;
        assert_eq!(got["service"]["level"], "BACK");
        assert_eq!(got["service"]["status"], "UP");
        assert!(got["service"]["timestamp"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .is_ok());
    }

    #[tokio::test]
    async fn bad_fields_are_400001_naming_the_field() {
        let core = Core::new();
        let (s, v) = call(
            &core,
            "POST",
            "/v4/default/registry/microservices",
            r#"{"service":{"serviceName":"-bad"}}"#,
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        assert_eq!(v["errorCode"], "400001");
        assert!(v["detail"].as_str().unwrap().contains("serviceName"));
        let (_, v) = call(
            &core,
            "POST",
            "/v4/default/registry/microservices",
            r#"{"service":{"serviceName":"ok"}}"#,
        )
        .await;
        let sid = v["serviceId"].as_str().unwrap();
        let (s, v) = call(
            &core,
            "POST",
            &format!("/v4/default/registry/microservices/{sid}/instances"),
            r#"{"instance":{"hostName":"h","healthCheck":{"mode":"push","interval":"x"}}}"#,
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        assert!(
            v["detail"]
                .as_str()
                .unwrap()
                .contains("healthCheck.interval"),
            "{v}"
        );
        let (s, v) = call(
            &core,
            "POST",
            "/v4/default/registry/microservices",
            "{not json",
        )
        .await;
        assert_eq!(
            (s, v["errorCode"].as_str()),
            (StatusCode::BAD_REQUEST, Some("400001"))
        );
    }

    #[tokio::test]
    async fn find_replies_follow_every_instance_change() {
        let core = Core::new();
        let ms = "/v4/default/registry/microservices";
        let (_, v) = call(&core, "POST", ms, r#"{"service":{"serviceName":"p"}}"#).await;
        let sid = v["serviceId"].as_str().unwrap().to_string();
        let reg = format!("{ms}/{sid}/instances");
        let find = "/v4/default/registry/instances?appId=default&serviceName=p&version=latest";
        let list = format!("{ms}/{sid}/instances");
        for n in ["a", "b"] {
            let body = format!(r#"{{"instance":{{"instanceId":"{n}","hostName":"h{n}"}}}}"#);
            assert_eq!(call(&core, "POST", &reg, &body).await.0, StatusCode::OK);
        }
        let (_, v) = call(&core, "GET", find, "").await;
        let ids: Vec<&str> = v["instances"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["instanceId"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["a", "b"]);
        assert_eq!(call(&core, "GET", &list, "").await.1, v);
        // A heartbeat changes no body and keeps the revision; a status change shows at once.
        let rev = core.revision();
        let hb = format!("{ms}/{sid}/instances/a/heartbeat");
        assert_eq!(call(&core, "PUT", &hb, "").await.0, StatusCode::OK);
        assert_eq!(core.revision(), rev);
        assert_eq!(call(&core, "GET", find, "").await.1, v);
        let st = format!("{ms}/{sid}/instances/a/status?value=DOWN");
        assert_eq!(call(&core, "PUT", &st, "").await.0, StatusCode::OK);
        let (_, v) = call(&core, "GET", find, "").await;
        assert_eq!(v["instances"][0]["status"], "DOWN");
        assert_eq!(call(&core, "GET", &list, "").await.1, v);
        let props = format!("{ms}/{sid}/instances/b/properties");
        let body = r#"{"properties":{"k":"v"}}"#;
        assert_eq!(call(&core, "PUT", &props, body).await.0, StatusCode::OK);
        let (_, v) = call(&core, "GET", find, "").await;
        assert_eq!(v["instances"][1]["properties"]["k"], "v");
        for n in ["a", "b"] {
            let un = format!("{ms}/{sid}/instances/{n}");
            assert_eq!(call(&core, "DELETE", &un, "").await.0, StatusCode::OK);
        }
        let (s, v) = call(&core, "GET", find, "").await;
        assert_eq!((s, v), (StatusCode::OK, serde_json::json!({})));
    }

    #[tokio::test]
    async fn empty_find_answers_empty_object_and_unknown_is_400012() {
        let core = Core::new();
        let (s, v) = call(
            &core,
            "GET",
            "/v4/default/registry/instances?appId=a&serviceName=b&version=latest",
            "",
        )
        .await;
        assert_eq!(
            (s, v["errorCode"].as_str()),
            (StatusCode::BAD_REQUEST, Some("400012"))
        );
        call(
            &core,
            "POST",
            "/v4/default/registry/microservices",
            r#"{"service":{"serviceName":"b","appId":"a"}}"#,
        )
        .await;
        let (s, v) = call(
            &core,
            "GET",
            "/v4/default/registry/instances?appId=a&serviceName=b&version=latest",
            "",
        )
        .await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(v, serde_json::json!({}));
    }
}
