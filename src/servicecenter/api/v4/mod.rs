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

mod dump;
mod find;
mod instances;
mod meta;
mod services;

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

use syncer_wire_servicecenter::{
    IdReply, InstanceReply, InstancesReply, ServiceReply, ServicesReply,
};

use super::body::{decode, empty, json, json_reply, to_json};
use super::commit::lazy;
use super::extract::{all_tenants, check_id, InstanceAt, ServiceAt, Tenant};
use crate::servicecenter::core::Core;
use crate::servicecenter::error::{
    ScError, DEPENDED_ON_BY_CONSUMER, FORBIDDEN, INSTANCE_NOT_EXISTS,
};
use crate::servicecenter::registry::dependencies::{consumers_of, providers_of, DependencyItem};
use crate::servicecenter::registry::discovery::{tag_keys, FindQuery, Found};
use crate::servicecenter::registry::rules::Rule;
use crate::servicecenter::registry::schemas::{self, SchemaItem};
use crate::servicecenter::registry::{
    check_instance_id, now_ms, MicroService, MicroServiceInstance, Props, Registry,
};

use dump::*;
use find::*;
use instances::*;
use meta::*;
use services::*;

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
        .route("/version", get(root_version))
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

async fn version() -> Response {
    json(&version_body("4.0.0"))
}

/// `GET /version` (service-center's v3 router, still served by 1.3.0): the version set of
/// `/v4/{project}/registry/version` with `apiVersion` `3.0.0` (servicecomb-notes c.1).
async fn root_version() -> Response {
    json(&version_body("3.0.0"))
}

fn version_body(api_version: &str) -> Value {
    serde_json::json!({
        "version": "1.3.0",
        "buildTag": concat!("syncer-", env!("CARGO_PKG_VERSION")),
        "goVersion": "",
        "os": std::env::consts::OS,
        "arch": std::env::consts::ARCH,
        "apiVersion": api_version,
    })
}

async fn health() -> Response {
    json(&InstancesReply {
        instances: Vec::new(),
    })
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
