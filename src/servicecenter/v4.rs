//! The service-center v4 REST API of the built-in core (`/v4/{project}/...`).
//!
//! Behaviour copies service-center 1.3.0 with HEAD's tenant default
//! (servicecomb-notes c.1-c.7): the domain comes from `X-Domain-Name`
//! (default `default`), request JSON field names match case-insensitively and
//! unknown fields are ignored, empty response fields are left out (an empty
//! find answers `{}`), and errors are [`ScError`] bodies.

use std::collections::HashMap;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::Router;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::{ScError, FORBIDDEN};
use super::registry::{now_ms, MicroService, MicroServiceInstance, Props};
use super::Core;

type Query_ = Query<HashMap<String, String>>;

/// The v4 routes.
pub fn router(core: Core) -> Router {
    const P: &str = "/v4/{project}/registry";
    Router::new()
        .route(&format!("{P}/version"), get(version))
        .route(&format!("{P}/health"), get(health))
        .route(
            &format!("{P}/microservices"),
            get(list_services).post(create_service),
        )
        .route(
            &format!("{P}/microservices/{{service_id}}"),
            get(get_service).delete(delete_service),
        )
        .route(&format!("{P}/existence"), get(existence))
        .route(
            &format!("{P}/microservices/{{service_id}}/instances"),
            get(list_instances).post(register_instance),
        )
        .route(
            &format!("{P}/microservices/{{service_id}}/instances/{{instance_id}}"),
            get(get_instance).delete(unregister),
        )
        .route(
            &format!("{P}/microservices/{{service_id}}/instances/{{instance_id}}/heartbeat"),
            put(heartbeat),
        )
        .route(
            &format!("{P}/microservices/{{service_id}}/instances/{{instance_id}}/status"),
            put(set_status),
        )
        .route(
            &format!("{P}/microservices/{{service_id}}/instances/{{instance_id}}/properties"),
            put(set_properties),
        )
        .route(&format!("{P}/instances"), get(find))
        .route("/v4/{project}/admin/dump", get(dump))
        .with_state(core)
}

/// The tenant: `X-Domain-Name` (default `default`) and the path's project.
fn domain(headers: &HeaderMap) -> String {
    headers
        .get("x-domain-name")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .unwrap_or("default")
        .to_string()
}

/// A 200 JSON reply written like service-center (trailing newline).
fn json<T: Serialize>(value: &T) -> Response {
    match serde_json::to_string(value) {
        Ok(mut text) => {
            text.push('\n');
            (
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json; charset=UTF-8"),
                )],
                text,
            )
                .into_response()
        }
        Err(e) => ScError::new(500003, format!("encoding the reply: {e}")).into_response(),
    }
}

/// A 200 reply with an empty body.
fn empty() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=UTF-8"),
        )],
        "",
    )
        .into_response()
}

/// JSON object keys whose values are free maps: their keys are user data.
const FREE_MAPS: &[&str] = &["properties", "tags", "LBStrategy", "property"];
/// Canonical field names of request bodies; other spellings are matched case-insensitively.
const FIELDS: &[&str] = &[
    "service",
    "instance",
    "instances",
    "rules",
    "tags",
    "serviceId",
    "appId",
    "serviceName",
    "version",
    "description",
    "level",
    "schemas",
    "paths",
    "path",
    "property",
    "status",
    "properties",
    "timestamp",
    "alias",
    "LBStrategy",
    "modTimestamp",
    "environment",
    "registerBy",
    "framework",
    "name",
    "instanceId",
    "endpoints",
    "hostName",
    "healthCheck",
    "dataCenterInfo",
    "mode",
    "port",
    "interval",
    "times",
    "url",
    "region",
    "availableZone",
];

/// Renames keys to their canonical spelling and drops `null`s (Go leaves the zero value).
fn canonicalize(v: &mut Value) {
    match v {
        Value::Object(map) => {
            let old = std::mem::take(map);
            for (k, mut val) in old {
                if val.is_null() {
                    continue;
                }
                let key = FIELDS
                    .iter()
                    .find(|f| f.eq_ignore_ascii_case(&k))
                    .map_or(k, |f| (*f).to_string());
                if !FREE_MAPS.contains(&key.as_str()) {
                    canonicalize(&mut val);
                }
                map.insert(key, val);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(canonicalize),
        _ => {}
    }
}

/// Decodes a request body; any failure is 400001 naming the field.
fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, ScError> {
    let mut value: Value = serde_json::from_slice(body)
        .map_err(|e| ScError::invalid(format!("Invalid JSON body: {e}")))?;
    canonicalize(&mut value);
    serde_path_to_error::deserialize(value)
        .map_err(|e| ScError::invalid(format!("Invalid field '{}': {}", e.path(), e.inner())))
}

#[derive(Deserialize)]
struct CreateServiceRequest {
    service: Option<MicroService>,
}

#[derive(Deserialize)]
struct RegisterInstanceRequest {
    instance: Option<MicroServiceInstance>,
}

#[derive(Deserialize)]
struct PropertiesRequest {
    #[serde(default)]
    properties: Props,
}

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
struct IdReply {
    #[serde(skip_serializing_if = "String::is_empty")]
    service_id: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    instance_id: String,
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
    Path(project): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ScError> {
    let req: CreateServiceRequest = decode(&body)?;
    let service = req
        .service
        .ok_or_else(|| ScError::invalid("Invalid field 'service': missing"))?;
    let (id, _) = core
        .lock()
        .create_service(&domain(&headers), &project, service, now_ms())?;
    Ok(json(&IdReply {
        service_id: id,
        ..IdReply::default()
    }))
}

async fn list_services(
    State(core): State<Core>,
    Path(project): Path<String>,
    headers: HeaderMap,
) -> Response {
    let services = core.lock().list_services(&domain(&headers), &project);
    json(&ServicesReply { services })
}

async fn get_service(
    State(core): State<Core>,
    Path((project, sid)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ScError> {
    let service = core
        .lock()
        .service(&domain(&headers), &project, &sid)?
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

async fn delete_service(
    State(core): State<Core>,
    Path((project, sid)): Path<(String, String)>,
    Query(q): Query_,
    headers: HeaderMap,
) -> Result<Response, ScError> {
    let force = flag(&q, "force")?;
    core.lock()
        .delete_service(&domain(&headers), &project, &sid, force)?;
    Ok(empty())
}

fn param<'a>(q: &'a HashMap<String, String>, name: &str) -> &'a str {
    q.get(name).map_or("", String::as_str)
}

async fn existence(
    State(core): State<Core>,
    Path(project): Path<String>,
    Query(q): Query_,
    headers: HeaderMap,
) -> Result<Response, ScError> {
    if param(&q, "type") != "microservice" {
        return Err(ScError::invalid(format!(
            "Invalid type '{}': only microservice is supported",
            param(&q, "type")
        )));
    }
    let id = core.lock().existence(
        &domain(&headers),
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

async fn register_instance(
    State(core): State<Core>,
    Path((project, sid)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ScError> {
    let req: RegisterInstanceRequest = decode(&body)?;
    let instance = req
        .instance
        .ok_or_else(|| ScError::invalid("Invalid field 'instance': missing"))?;
    let id = core.lock().register_instance(
        &domain(&headers),
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

/// Adds `X-Resource-Revision`; 304 when the client's `rev` is current.
fn with_revision(
    core: &Core,
    q: &HashMap<String, String>,
    reply: impl FnOnce() -> Response,
) -> Response {
    let rev = core.revision().to_string();
    if q.get("rev") == Some(&rev) {
        let mut r = StatusCode::NOT_MODIFIED.into_response();
        if let Ok(v) = HeaderValue::from_str(&rev) {
            r.headers_mut().insert("x-resource-revision", v);
        }
        return r;
    }
    let mut r = reply();
    if let Ok(v) = HeaderValue::from_str(&rev) {
        r.headers_mut().insert("x-resource-revision", v);
    }
    r
}

async fn list_instances(
    State(core): State<Core>,
    Path((project, sid)): Path<(String, String)>,
    Query(q): Query_,
    headers: HeaderMap,
) -> Result<Response, ScError> {
    let instances = core
        .lock()
        .list_instances(&domain(&headers), &project, &sid)?;
    Ok(with_revision(&core, &q, || {
        json(&InstancesReply { instances })
    }))
}

async fn get_instance(
    State(core): State<Core>,
    Path((project, sid, iid)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, ScError> {
    let instance = core
        .lock()
        .instance(&domain(&headers), &project, &sid, &iid)?
        .body
        .clone();
    Ok(json(&InstanceReply { instance }))
}

async fn unregister(
    State(core): State<Core>,
    Path((project, sid, iid)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, ScError> {
    core.lock()
        .unregister(&domain(&headers), &project, &sid, &iid)?;
    Ok(empty())
}

async fn heartbeat(
    State(core): State<Core>,
    Path((project, sid, iid)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, ScError> {
    core.lock().heartbeat(
        &domain(&headers),
        &project,
        &sid,
        &iid,
        Instant::now(),
        now_ms(),
    )?;
    Ok(empty())
}

async fn set_status(
    State(core): State<Core>,
    Path((project, sid, iid)): Path<(String, String, String)>,
    Query(q): Query_,
    headers: HeaderMap,
) -> Result<Response, ScError> {
    core.lock().set_instance_status(
        &domain(&headers),
        &project,
        &sid,
        &iid,
        param(&q, "value"),
        now_ms(),
    )?;
    Ok(empty())
}

async fn set_properties(
    State(core): State<Core>,
    Path((project, sid, iid)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ScError> {
    let req: PropertiesRequest = decode(&body)?;
    core.lock().set_instance_properties(
        &domain(&headers),
        &project,
        &sid,
        &iid,
        req.properties,
        now_ms(),
    )?;
    Ok(empty())
}

async fn find(
    State(core): State<Core>,
    Path(project): Path<String>,
    Query(q): Query_,
    headers: HeaderMap,
) -> Result<Response, ScError> {
    let consumer = headers.get("x-consumerid").and_then(|v| v.to_str().ok());
    let instances = core.lock().find(
        &domain(&headers),
        &project,
        param(&q, "env"),
        param(&q, "appId"),
        param(&q, "serviceName"),
        param(&q, "version"),
        consumer,
    )?;
    Ok(with_revision(&core, &q, || {
        json(&InstancesReply { instances })
    }))
}

#[derive(Serialize)]
struct KeyValue<T: Serialize> {
    key: String,
    rev: u64,
    value: T,
}

/// `GET /v4/{project}/admin/dump`: the cache of every tenant (only from default/default).
async fn dump(
    State(core): State<Core>,
    Path(project): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ScError> {
    let dom = domain(&headers);
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
    let mut entries: Vec<_> = reg.all_services().collect();
    entries.sort_by(|a, b| a.service.service_id.cmp(&b.service.service_id));
    for e in entries {
        let s = &e.service;
        services.push(KeyValue {
            key: format!(
                "/cse-sr/ms/files/{}/{}/{}",
                e.domain, e.project, s.service_id
            ),
            rev,
            value: serde_json::to_value(s).unwrap_or_default(),
        });
        indexes.push(KeyValue {
            key: format!(
                "/cse-sr/ms/indexes/{}/{}/{}/{}/{}/{}",
                e.domain, e.project, s.environment, s.app_id, s.service_name, s.version
            ),
            rev,
            value: Value::String(s.service_id.clone()),
        });
        for (iid, r) in &e.instances {
            instances.push(KeyValue {
                key: format!(
                    "/cse-sr/inst/files/{}/{}/{}/{}",
                    e.domain, e.project, s.service_id, iid
                ),
                rev,
                value: serde_json::to_value(&r.body).unwrap_or_default(),
            });
        }
    }
    drop(reg);
    Ok(json(&serde_json::json!({
        "cache": {
            "services": services,
            "serviceIndexes": indexes,
            "instances": instances,
        }
    })))
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
        let resp = super::super::router(core.clone())
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
            super::super::registry::default_service_id(
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
