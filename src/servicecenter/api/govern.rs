//! The governance API of the built-in core (`/v4/{project}/govern/...`): read-only
//! overviews for dashboards, as service-center 1.3.0's `server/govern/*`.
//!
//! - `GET govern/microservices/{serviceId}`: `{"service": ServiceDetail}`;
//! - `GET govern/microservices?options=all,tags,rules,instances,schemas,dependencies,statistics`:
//!   `{"allServicesDetail": [ServiceDetail], "statistics": Statistics}` (no options: the
//!   services only);
//! - `GET govern/microservices/statistics`: `Statistics`;
//! - `GET govern/relations`: `{"nodes": [...], "lines": [...]}` (consumer → provider);
//! - `GET govern/apps?env=`: `{"appIds": [...]}`.
//!
//! `ServiceDetail` uses service-center's JSON names (`microService`, `instances`,
//! `schemaInfos`, `rules`, `providers`, `consumers`, `tags` as a map,
//! `microServiceVersions`); empty fields are left out.

use std::collections::{BTreeSet, HashMap};

use axum::extract::{Query, State};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use serde::Serialize;

use super::body::json;
use super::extract::{ServiceAt, Tenant};
use crate::servicecenter::core::Core;
use crate::servicecenter::error::ScError;
use crate::servicecenter::registry::dependencies::{consumers_of, providers_of, services};
use crate::servicecenter::registry::rules::Rule;
use crate::servicecenter::registry::schemas::SchemaItem;
use crate::servicecenter::registry::{
    MicroService, MicroServiceInstance, Props, Registry, ServiceEntry,
};

/// The governance routes (state: [`Core`]).
pub fn routes() -> Router<Core> {
    const G: &str = "/v4/{project}/govern";
    Router::new()
        .route(&format!("{G}/microservices"), get(all_details))
        .route(&format!("{G}/microservices/statistics"), get(statistics))
        .route(&format!("{G}/microservices/{{service_id}}"), get(detail))
        .route(&format!("{G}/relations"), get(relations))
        .route(&format!("{G}/apps"), get(apps))
}

/// Everything known about one service.
#[derive(Debug, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ServiceDetail {
    /// The service.
    #[serde(rename = "microService", skip_serializing_if = "Option::is_none")]
    pub micro_service: Option<MicroService>,
    /// Its instances.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub instances: Vec<MicroServiceInstance>,
    /// Its schemas, with their text.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub schema_infos: Vec<SchemaItem>,
    /// Its rules.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<Rule>,
    /// The services it depends on.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub providers: Vec<MicroService>,
    /// The services that depend on it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub consumers: Vec<MicroService>,
    /// Its tags.
    #[serde(skip_serializing_if = "Props::is_empty")]
    pub tags: Props,
    /// Every version of the same (env, appId, serviceName).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub micro_service_versions: Vec<String>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Options {
    tags: bool,
    rules: bool,
    instances: bool,
    schemas: bool,
    dependencies: bool,
    statistics: bool,
}

impl Options {
    fn all() -> Options {
        Options {
            tags: true,
            rules: true,
            instances: true,
            schemas: true,
            dependencies: true,
            statistics: true,
        }
    }

    fn parse(s: &str) -> Result<Options, ScError> {
        let mut o = Options::default();
        for opt in s.split(',').map(str::trim).filter(|x| !x.is_empty()) {
            match opt {
                "all" => return Ok(Options::all()),
                "tags" => o.tags = true,
                "rules" => o.rules = true,
                "instances" => o.instances = true,
                "schemas" => o.schemas = true,
                "dependencies" => o.dependencies = true,
                "statistics" => o.statistics = true,
                other => {
                    return Err(ScError::invalid(format!(
                        "Invalid options '{other}': all, tags, rules, instances, schemas, dependencies or statistics"
                    )))
                }
            }
        }
        Ok(o)
    }
}

fn detail_of(reg: &Registry, e: &ServiceEntry, o: Options) -> ServiceDetail {
    let s = &*e.service;
    let sid = &s.service_id;
    let mut d = ServiceDetail {
        micro_service: Some(s.clone()),
        ..ServiceDetail::default()
    };
    if o.instances {
        d.instances = e.instances.values().map(|r| r.body.clone()).collect();
    }
    if o.schemas {
        d.schema_infos = crate::servicecenter::registry::schemas::schema_items(reg, sid, true);
    }
    if o.rules {
        d.rules = reg.rules.of(sid).to_vec();
    }
    if o.tags {
        d.tags = reg.tags.of(sid);
    }
    if o.dependencies {
        d.providers = services(reg, &providers_of(reg, sid));
        d.consumers = services(reg, &consumers_of(reg, sid));
    }
    if o.instances || o.dependencies {
        let mut versions: Vec<String> = reg
            .all_services()
            .filter(|x| {
                x.domain == e.domain
                    && x.project == e.project
                    && x.service.environment == s.environment
                    && x.service.app_id == s.app_id
                    && x.service.service_name == s.service_name
            })
            .map(|x| x.service.version.clone())
            .collect();
        versions.sort_by(|a, b| {
            crate::servicecenter::registry::parse_version(b)
                .cmp(&crate::servicecenter::registry::parse_version(a))
        });
        d.micro_service_versions = versions;
    }
    d
}

type Q = Query<HashMap<String, String>>;

async fn detail(
    State(core): State<Core>,
    ServiceAt {
        tenant: Tenant { domain, project },
        service_id: sid,
    }: ServiceAt,
) -> Result<Response, ScError> {
    let reg = core.lock();
    let e = reg.service(&domain, &project, &sid)?;
    let d = detail_of(&reg, e, Options::all());
    drop(reg);
    Ok(json(&serde_json::json!({ "service": d })))
}

/// The service and instance counts of a tenant.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Statistics {
    services: serde_json::Value,
    instances: serde_json::Value,
    apps: serde_json::Value,
}

fn statistics_of(reg: &Registry, domain: &str, project: &str) -> Statistics {
    let mine: Vec<&ServiceEntry> = reg
        .all_services()
        .filter(|e| e.domain == domain && e.project == project)
        .collect();
    let online = mine
        .iter()
        .filter(|e| e.instances.values().any(|r| r.body.status == "UP"))
        .count();
    let instances: usize = mine.iter().map(|e| e.instances.len()).sum();
    let by_domain: usize = reg
        .all_services()
        .filter(|e| e.domain == domain)
        .map(|e| e.instances.len())
        .sum();
    let apps: BTreeSet<&str> = mine.iter().map(|e| e.service.app_id.as_str()).collect();
    Statistics {
        services: serde_json::json!({ "count": mine.len(), "onlineCount": online }),
        instances: serde_json::json!({ "count": instances, "countByDomain": by_domain }),
        apps: serde_json::json!({ "count": apps.len() }),
    }
}

async fn all_details(
    State(core): State<Core>,
    Tenant { domain, project }: Tenant,
    Query(q): Q,
) -> Result<Response, ScError> {
    let o = Options::parse(q.get("options").map_or("", String::as_str))?;
    let dom = domain.clone();
    let reg = core.lock();
    let mut entries: Vec<&ServiceEntry> = reg
        .all_services()
        .filter(|e| e.domain == dom && e.project == project)
        .collect();
    entries.sort_by(|a, b| a.service.service_id.cmp(&b.service.service_id));
    let details: Vec<ServiceDetail> = entries.iter().map(|e| detail_of(&reg, e, o)).collect();
    let stats = o.statistics.then(|| statistics_of(&reg, &dom, &project));
    drop(reg);
    let mut body = serde_json::Map::new();
    if !details.is_empty() {
        body.insert(
            "allServicesDetail".into(),
            serde_json::to_value(details).unwrap_or_default(),
        );
    }
    if let Some(s) = stats {
        body.insert(
            "statistics".into(),
            serde_json::to_value(s).unwrap_or_default(),
        );
    }
    Ok(json(&body))
}

async fn statistics(State(core): State<Core>, Tenant { domain, project }: Tenant) -> Response {
    let s = statistics_of(&core.lock(), &domain, &project);
    json(&s)
}

#[derive(Debug, Serialize, Clone)]
struct Node {
    id: String,
    name: String,
    #[serde(rename = "appID")]
    app_id: String,
    version: String,
}

fn node(s: &MicroService) -> Node {
    Node {
        id: s.service_id.clone(),
        name: s.service_name.clone(),
        app_id: s.app_id.clone(),
        version: s.version.clone(),
    }
}

async fn relations(State(core): State<Core>, Tenant { domain, project }: Tenant) -> Response {
    let dom = domain.clone();
    let reg = core.lock();
    let mut entries: Vec<&ServiceEntry> = reg
        .all_services()
        .filter(|e| e.domain == dom && e.project == project)
        .collect();
    entries.sort_by(|a, b| a.service.service_id.cmp(&b.service.service_id));
    let nodes: Vec<Node> = entries.iter().map(|e| node(&e.service)).collect();
    let mut lines = Vec::new();
    for e in &entries {
        for p in services(&reg, &providers_of(&reg, &e.service.service_id)) {
            lines.push(serde_json::json!({
                "from": node(&e.service),
                "to": node(&p),
                "type": "connection",
            }));
        }
    }
    drop(reg);
    let mut body = serde_json::Map::new();
    if !nodes.is_empty() {
        body.insert(
            "nodes".into(),
            serde_json::to_value(nodes).unwrap_or_default(),
        );
    }
    if !lines.is_empty() {
        body.insert("lines".into(), serde_json::Value::Array(lines));
    }
    json(&body)
}

async fn apps(
    State(core): State<Core>,
    Tenant { domain, project }: Tenant,
    Query(q): Q,
) -> Response {
    let dom = domain.clone();
    let env = q.get("env").map_or("", String::as_str);
    let reg = core.lock();
    let ids: BTreeSet<String> = reg
        .all_services()
        .filter(|e| e.domain == dom && e.project == project && e.service.environment == env)
        .map(|e| e.service.app_id.clone())
        .collect();
    drop(reg);
    if ids.is_empty() {
        return json(&serde_json::json!({}));
    }
    json(&serde_json::json!({ "appIds": ids }))
}
