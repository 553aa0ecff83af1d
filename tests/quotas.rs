//! Issue 13, finding 6: the built-in core's quotas (service-center's, with its error 400100)
//! and size limits, against a real `syncer servicecenter` process on loopback. Before them,
//! 200 Eureka registrations of 1.8 MB of metadata each were all accepted (store 546 MB, RSS
//! 570 MB) and one `GET /eureka/apps` then answered 364 MB.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use support::{eventually, free_tcp_port, Proc};

/// A `syncer servicecenter` process with `extra` flags; killed when dropped.
struct Core {
    proc: Proc,
    base: String,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Core {
    async fn start(extra: &[&str]) -> Core {
        let dir = tempfile::tempdir().unwrap();
        let listen = format!("127.0.0.1:{}", free_tcp_port());
        let mut args = vec!["servicecenter", "--listen", &listen];
        args.extend_from_slice(extra);
        let proc = Proc::syncer(dir.path(), "core", &args);
        let base = format!("http://{listen}");
        let http = reqwest::Client::new();
        let health = format!("{base}/v4/default/registry/health");
        eventually(
            Duration::from_secs(60),
            "the core answers",
            &[&proc],
            || {
                let req = http.get(&health).send();
                async move { req.await.ok().filter(|r| r.status().is_success()) }
            },
        )
        .await;
        Core {
            proc,
            base,
            http,
            _dir: dir,
        }
    }

    /// `method path` with a JSON body in domain `domain`: (status, JSON or text as a string).
    async fn send_in(
        &self,
        domain: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("X-Domain-Name", domain);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.send_in("default", method, path, body).await
    }

    async fn create_service(&self, domain: &str, name: &str) -> (StatusCode, Value) {
        self.send_in(
            domain,
            reqwest::Method::POST,
            "/v4/default/registry/microservices",
            Some(json!({"service": {"appId": "app", "serviceName": name, "version": "1.0.0"}})),
        )
        .await
    }

    async fn register(&self, sid: &str, instance: Value) -> (StatusCode, Value) {
        self.send(
            reqwest::Method::POST,
            &format!("/v4/default/registry/microservices/{sid}/instances"),
            Some(json!({ "instance": instance })),
        )
        .await
    }

    async fn eureka_register(&self, app: &str, id: &str, metadata: Value) -> (StatusCode, String) {
        let body = json!({"instance": {"instanceId": id, "hostName": id, "app": app,
            "ipAddr": "10.0.0.5", "status": "UP", "port": {"$": 8080, "@enabled": "true"},
            "dataCenterInfo": {"name": "MyOwn"}, "metadata": metadata}});
        let resp = self
            .http
            .post(format!("{}/eureka/apps/{app}", self.base))
            .header("Content-Type", "application/json")
            // Not kept for the next request: the core answers a body over the limit with 413
            // before reading it, then closes the connection (a pooled one would break the
            // next request with a broken pipe).
            .header("Connection", "close")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        (resp.status(), resp.text().await.unwrap())
    }

    /// The instance ids of Eureka app `app`.
    async fn eureka_ids(&self, app: &str) -> Vec<String> {
        support::eureka_app_instances(&self.http, &self.base, app)
            .await
            .unwrap()
            .iter()
            .map(|i| i["instanceId"].as_str().unwrap().to_owned())
            .collect()
    }
}

fn instance(host: &str) -> Value {
    json!({"hostName": host, "endpoints": [format!("rest://127.0.0.1:80/{host}")],
        "healthCheck": {"mode": "push", "interval": 300, "times": 1}})
}

/// Asserts service-center's quota refusal: HTTP 400, code 400100, its detail.
fn assert_no_quota(status: StatusCode, body: &Value, detail: &str) {
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["errorCode"], "400100", "{body}");
    assert_eq!(body["errorMessage"], "Not enough quota", "{body}");
    assert_eq!(body["detail"], detail, "{body}");
}

#[tokio::test]
async fn regression_13_6_eureka_registrations_with_megabytes_of_metadata_are_refused() {
    let core = Core::start(&[]).await;
    // Finding 6's registration: 1.8 MB of metadata (under the 2 MiB body limit).
    let big = json!({"blob": "x".repeat(1_800_000)});
    let (s, text) = core.eureka_register("HOG", "hog-1", big).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{text}");
    assert!(text.contains("more than the limit of 65536"), "{text}");
    assert!(core.eureka_ids("HOG").await.is_empty());
    // Nothing was created: not even the app's microservice.
    let (s, v) = core
        .send(
            reqwest::Method::GET,
            "/v4/default/registry/existence?type=microservice&appId=eureka&serviceName=hog&version=0.0.1",
            None,
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["errorCode"], "400012", "{v}");
    // Metadata within the limit is fine; the same instance with too much is refused and
    // the stored one stays.
    let (s, text) = core
        .eureka_register("HOG", "hog-1", json!({"k": "x".repeat(60_000)}))
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{text}");
    let (s, text) = core
        .eureka_register("HOG", "hog-1", json!({"k": "x".repeat(70_000)}))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{text}");
    assert_eq!(core.eureka_ids("HOG").await, vec!["hog-1"]);
    // A body over the request limit is refused before it is read whole.
    let (s, _) = core
        .eureka_register("HOG", "hog-2", json!({"k": "x".repeat(3 << 20)}))
        .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);

    // The same limit on /v4: at registration and on a properties update.
    let (_, v) = core.create_service("default", "sized").await;
    let sid = v["serviceId"].as_str().unwrap().to_owned();
    let mut inst = instance("sized-1");
    inst["properties"] = json!({"blob": "x".repeat(70_000)});
    let (s, v) = core.register(&sid, inst).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["errorCode"], "400001", "{v}");
    let (s, v) = core.register(&sid, instance("sized-1")).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let iid = v["instanceId"].as_str().unwrap().to_owned();
    let path = format!("/v4/default/registry/microservices/{sid}/instances/{iid}/properties");
    let (s, v) = core
        .send(
            reqwest::Method::PUT,
            &path,
            Some(json!({"properties": {"blob": "x".repeat(70_000)}})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["errorCode"], "400001", "{v}");
    let (s, v) = core
        .send(
            reqwest::Method::PUT,
            &path,
            Some(json!({"properties": {"small": "x"}})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

#[tokio::test]
async fn regression_13_6_the_instance_quota_refuses_with_service_center_s_error_until_one_goes() {
    let core = Core::start(&["--quota-instances", "3", "--quota-services", "3"]).await;
    let (_, v) = core.create_service("default", "q").await;
    let sid = v["serviceId"].as_str().unwrap().to_owned();
    let mut ids = Vec::new();
    for n in 0..3 {
        let (s, v) = core.register(&sid, instance(&format!("h{n}"))).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        ids.push(v["instanceId"].as_str().unwrap().to_owned());
    }
    let (s, v) = core.register(&sid, instance("h3")).await;
    assert_no_quota(
        s,
        &v,
        "no quota to create INSTANCE, max num is 3, curNum is 3, apply num is 1",
    );
    // Re-registering a known instance is a renewal, not a new one.
    let mut again = instance("h0");
    again["instanceId"] = json!(ids[0]);
    let (s, v) = core.register(&sid, again).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // The Eureka path hits the same quota, and Eureka's way of refusing: 400 with a reason.
    let (s, text) = core.eureka_register("FULL", "full-1", json!({})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{text}");
    assert_eq!(
        text,
        "no quota to create INSTANCE, max num is 3, curNum is 3, apply num is 1"
    );
    // Unregistering one frees a place.
    let (s, v) = core
        .send(
            reqwest::Method::DELETE,
            &format!(
                "/v4/default/registry/microservices/{sid}/instances/{}",
                ids[1]
            ),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, text) = core.eureka_register("FULL", "full-1", json!({})).await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{text}");
    assert_eq!(core.eureka_ids("FULL").await, vec!["full-1"]);
    // Full again; re-registering a Eureka instance (a heartbeat's 404, a restart) still works.
    let (s, text) = core.eureka_register("FULL", "full-2", json!({})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{text}");
    let (s, text) = core
        .eureka_register("FULL", "full-1", json!({"v": "2"}))
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{text}");
    // Cancelling through Eureka frees a place too.
    let resp = core
        .http
        .delete(format!("{}/eureka/apps/FULL/full-1", core.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let (s, v) = core.register(&sid, instance("h3")).await;
    assert_eq!(s, StatusCode::OK, "{v}");

    // Services: the quota counts every tenant together, as service-center's does. Two
    // are held now (q, and FULL's microservice).
    let (s, v) = core.create_service("other", "o").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = core.create_service("third", "t").await;
    assert_no_quota(
        s,
        &v,
        "no quota to create SERVICE, max num is 3, curNum is 3, apply num is 1",
    );
    // An existing key still answers its id.
    let (s, v) = core.create_service("default", "q").await;
    assert_eq!((s, v["serviceId"].as_str()), (StatusCode::OK, Some(&*sid)));
    // A Eureka app needing a new microservice is refused with the same error.
    let (s, text) = core.eureka_register("NEWAPP", "n-1", json!({})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{text}");
    assert!(text.starts_with("no quota to create "), "{text}");
    let oid = core.create_service("other", "o").await.1["serviceId"]
        .as_str()
        .unwrap()
        .to_owned();
    let (s, v) = core
        .send_in(
            "other",
            reqwest::Method::DELETE,
            &format!("/v4/default/registry/microservices/{oid}"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = core.create_service("third", "t").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    drop(core.proc);
}

#[tokio::test]
async fn regression_13_6_schema_tag_and_rule_quotas_per_service_are_configurable() {
    let core = Core::start(&[
        "--quota-schemas-per-service",
        "2",
        "--quota-tags-per-service",
        "2",
        "--quota-rules-per-service",
        "2",
    ])
    .await;
    let (_, v) = core
        .send(
            reqwest::Method::POST,
            "/v4/default/registry/microservices",
            Some(
                json!({"service": {"appId": "app", "serviceName": "s", "version": "1.0.0",
                "environment": "development"}}),
            ),
        )
        .await;
    let sid = v["serviceId"].as_str().unwrap().to_owned();
    let base = format!("/v4/default/registry/microservices/{sid}");
    for id in ["a", "b"] {
        let (s, v) = core
            .send(
                reqwest::Method::PUT,
                &format!("{base}/schemas/{id}"),
                Some(json!({"schema": "x"})),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    let (s, v) = core
        .send(
            reqwest::Method::PUT,
            &format!("{base}/schemas/c"),
            Some(json!({"schema": "x"})),
        )
        .await;
    assert_no_quota(
        s,
        &v,
        "no quota to create SCHEMA, max num is 2, curNum is 2, apply num is 1",
    );
    // Changing a schema it has is no new one.
    let (s, v) = core
        .send(
            reqwest::Method::PUT,
            &format!("{base}/schemas/a"),
            Some(json!({"schema": "y"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // The whole set at once: editable, so it replaces; three are too many.
    let (s, v) = core
        .send(
            reqwest::Method::POST,
            &format!("{base}/schemas"),
            Some(json!({"schemas": [{"schemaId": "a", "schema": "x", "summary": "s1"},
                {"schemaId": "b", "schema": "x", "summary": "s1"}, {"schemaId": "c", "schema": "x", "summary": "s1"}]})),
        )
        .await;
    assert_no_quota(
        s,
        &v,
        "no quota to create SCHEMA, max num is 2, curNum is 0, apply num is 3",
    );

    let (s, v) = core
        .send(
            reqwest::Method::POST,
            &format!("{base}/tags"),
            Some(json!({"tags": {"k1": "v", "k2": "v"}})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = core
        .send(
            reqwest::Method::POST,
            &format!("{base}/tags"),
            Some(json!({"tags": {"k2": "w", "k3": "v"}})),
        )
        .await;
    assert_no_quota(
        s,
        &v,
        "no quota to create TAG, max num is 2, curNum is 2, apply num is 1",
    );
    let (s, v) = core
        .send(reqwest::Method::DELETE, &format!("{base}/tags/k1"), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = core
        .send(
            reqwest::Method::POST,
            &format!("{base}/tags"),
            Some(json!({"tags": {"k2": "w", "k3": "v"}})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");

    let rule = |p: &str| json!({"ruleType": "BLACK", "attribute": "ServiceName", "pattern": p});
    let (s, v) = core
        .send(
            reqwest::Method::POST,
            &format!("{base}/rules"),
            Some(json!({"rules": [rule("a"), rule("b")]})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = core
        .send(
            reqwest::Method::POST,
            &format!("{base}/rules"),
            Some(json!({"rules": [rule("c")]})),
        )
        .await;
    assert_no_quota(
        s,
        &v,
        "no quota to create RULE, max num is 2, curNum is 2, apply num is 1",
    );
}
