//! Issue 13, findings 8, 9, 10 and 12: what a client sends to the built-in core (a real
//! `syncer servicecenter` process with its embedded store, on loopback) cannot leak another
//! tenant, be acknowledged and then lost at a restart, panic the core, or answer other than
//! service-center 1.3.0 does.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};
use support::{free_tcp_port, Proc};

/// A client of one core process.
struct Sc {
    base: String,
    http: reqwest::Client,
}

/// A reply: status, body text, and the body as JSON (`Null` when it is not JSON).
struct Reply {
    status: StatusCode,
    text: String,
    json: Value,
}

impl Sc {
    fn new(port: u16) -> Sc {
        Sc {
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
        }
    }

    /// `method path` with `X-Domain-Name: domain` and a JSON body (or `raw` text).
    async fn send(
        &self,
        method: &str,
        domain: &str,
        path: &str,
        body: Option<Value>,
        raw: Option<&str>,
    ) -> Reply {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("X-Domain-Name", domain)
            .header("Accept", "application/json");
        if let Some(b) = body {
            req = req.json(&b);
        }
        if let Some(r) = raw {
            req = req
                .header("Content-Type", "application/json")
                .body(r.to_owned());
        }
        // A panic in the core shows as a transport error (connection closed): status 599.
        match req.send().await {
            Ok(resp) => {
                let status = resp.status();
                let text = resp.text().await.unwrap_or_default();
                let json = serde_json::from_str(&text).unwrap_or(Value::Null);
                Reply { status, text, json }
            }
            Err(e) => Reply {
                status: StatusCode::from_u16(599).unwrap(),
                text: e.to_string(),
                json: Value::Null,
            },
        }
    }

    async fn up(&self) -> bool {
        self.send("GET", "default", "/v4/default/registry/version", None, None)
            .await
            .status
            == StatusCode::OK
    }

    /// Creates a service in `domain/project`; the reply.
    async fn create(&self, domain: &str, project: &str, service: Value) -> Reply {
        self.send(
            "POST",
            domain,
            &format!("/v4/{project}/registry/microservices"),
            Some(json!({ "service": service })),
            None,
        )
        .await
    }

    /// A Eureka registration of app `APP` with `instance` fields over a valid base.
    async fn eureka_register(&self, id: &str, extra: &str) -> Reply {
        let body = format!(
            r#"{{"instance":{{"instanceId":{id},"hostName":"h1","app":"APP","ipAddr":"10.0.0.1",
            "port":{{"$":8080,"@enabled":true}},"dataCenterInfo":{{"name":"MyOwn"}}{extra}}}}}"#,
            id = serde_json::to_string(id).unwrap()
        );
        self.send("POST", "default", "/eureka/apps/APP", None, Some(&body))
            .await
    }
}

/// Starts `syncer servicecenter` with its embedded store in `data`, and waits until it
/// answers.
async fn start(dir: &Path, port: u16, data: &Path) -> (Proc, Sc) {
    let core = Proc::syncer(
        dir,
        "core",
        &[
            "servicecenter",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
            &data.to_string_lossy(),
        ],
    );
    let sc = Sc::new(port);
    let started = Instant::now();
    while !sc.up().await {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the core does not answer:\n{}",
            core.tail(30)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (core, sc)
}

fn assert_sc_error(r: &Reply, code: &str, what: &str) {
    let status: u16 = code[..3].parse().unwrap();
    assert_eq!(r.status.as_u16(), status, "{what}: {}", r.text);
    assert_eq!(r.json["errorCode"], code, "{what}: {}", r.text);
}

#[tokio::test]
async fn regression_13_8_dump_and_changes_show_only_the_callers_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let (core, sc) = start(dir.path(), free_tcp_port(), &dir.path().join("data")).await;
    let secret = json!({"appId": "app", "serviceName": "vault", "version": "1.0.0",
        "properties": {"dbPassword": "s3cret-tenant2"}});
    let r = sc.create("tenant2", "default", secret).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let t2_sid = r.json["serviceId"].as_str().unwrap().to_owned();
    let r = sc
        .create(
            "default",
            "default",
            json!({"appId": "app", "serviceName": "mine", "version": "1.0.0"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let mine = r.json["serviceId"].as_str().unwrap().to_owned();

    // The dump as default/default: its own service only.
    let dump = sc
        .send("GET", "default", "/v4/default/admin/dump", None, None)
        .await;
    assert_eq!(dump.status, StatusCode::OK, "{}", dump.text);
    assert!(!dump.text.contains("s3cret-tenant2"), "{}", dump.text);
    assert!(!dump.text.contains("tenant2"), "{}", dump.text);
    let services = dump.json["cache"]["services"].as_array().unwrap();
    assert_eq!(services.len(), 1, "{}", dump.text);
    assert_eq!(services[0]["value"]["serviceId"], mine.as_str());
    assert_eq!(
        dump.json["cache"]["serviceIndexes"]
            .as_array()
            .unwrap()
            .len(),
        1,
        "{}",
        dump.text
    );

    // The change log as default/default: its own changes only, removals included.
    let r = sc
        .send(
            "DELETE",
            "tenant2",
            &format!("/v4/default/registry/microservices/{t2_sid}"),
            None,
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = sc
        .create(
            "tenant2",
            "default",
            json!({"appId": "app", "serviceName": "vault2", "version": "1.0.0",
            "properties": {"dbPassword": "s3cret-tenant2"}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let changes = sc
        .send(
            "GET",
            "default",
            "/v4/default/admin/changes?since=0",
            None,
            None,
        )
        .await;
    assert_eq!(changes.status, StatusCode::OK, "{}", changes.text);
    assert!(!changes.text.contains("s3cret"), "{}", changes.text);
    assert!(!changes.text.contains(&t2_sid), "{}", changes.text);
    assert_eq!(changes.json["services"].as_array().unwrap().len(), 1);
    assert_eq!(
        changes.json["services"][0]["value"]["serviceId"],
        mine.as_str()
    );

    // The whole registry is read only when asked for (the syncer's plugin does).
    let all = sc
        .send(
            "GET",
            "default",
            "/v4/default/admin/dump?scope=all",
            None,
            None,
        )
        .await;
    assert_eq!(all.status, StatusCode::OK, "{}", all.text);
    assert_eq!(all.json["cache"]["services"].as_array().unwrap().len(), 2);
    let all = sc
        .send(
            "GET",
            "default",
            "/v4/default/admin/changes?since=0&scope=all",
            None,
            None,
        )
        .await;
    assert_eq!(
        all.json["services"].as_array().unwrap().len(),
        2,
        "{}",
        all.text
    );
    assert_eq!(all.json["removedServices"], json!([t2_sid]), "{}", all.text);
    for path in [
        "/v4/default/admin/dump?scope=everything",
        "/v4/default/admin/changes?since=0&scope=tenant2",
    ] {
        let r = sc.send("GET", "default", path, None, None).await;
        assert_sc_error(&r, "400001", path);
    }
    // Other tenants still may not read the dump at all (service-center: 403001).
    let r = sc
        .send("GET", "tenant2", "/v4/default/admin/dump", None, None)
        .await;
    assert_sc_error(&r, "403001", "dump from tenant2");
    drop(core);
}

#[tokio::test]
async fn regression_13_9_what_is_acknowledged_survives_a_restart_or_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (port, data) = (free_tcp_port(), dir.path().join("data"));
    let (mut core, sc) = start(dir.path(), port, &data).await;
    let svc = json!({"appId": "app", "serviceName": "s", "version": "1.0.0"});

    // What no path can address and no key can hold is refused, not acknowledged.
    let r = sc.create("evil/x", "default", svc.clone()).await;
    assert_sc_error(&r, "400001", "domain with a slash");
    let r = sc.create("default", "a%2Fb", svc.clone()).await;
    assert_sc_error(&r, "400001", "project with a slash");
    let mut with_id = svc.clone();
    with_id["serviceId"] = json!("a/b");
    let r = sc.create("default", "default", with_id).await;
    assert_sc_error(&r, "400001", "serviceId with a slash");

    // What clients legitimately send is kept: a Eureka instanceId with '/' and '%', and a
    // domain with '%'.
    for id in ["host/a:b", "50%:x"] {
        let r = sc.eureka_register(id, "").await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{id}: {}", r.text);
    }
    let r = sc.create("dom%1", "default", svc.clone()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let pct_sid = r.json["serviceId"].as_str().unwrap().to_owned();
    // Written within milliseconds; a clean stop flushes anyway.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(core.terminate(Duration::from_secs(10)), "clean stop");

    let (core, sc) = start(dir.path(), port, &data).await;
    for path in ["/eureka/apps/APP/host%2Fa:b", "/eureka/apps/APP/50%25:x"] {
        let r = sc.send("GET", "default", path, None, None).await;
        assert_eq!(
            r.status,
            StatusCode::OK,
            "{path} after a restart: {}\n{}",
            r.text,
            core.tail(20)
        );
    }
    let r = sc
        .send(
            "GET",
            "dom%1",
            &format!("/v4/default/registry/microservices/{pct_sid}"),
            None,
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}\n{}", r.text, core.tail(20));
    let log = std::fs::read_to_string(&core.log).unwrap();
    assert!(
        log.contains("dropped=0") && !log.contains("not loaded"),
        "nothing dropped at load:\n{}",
        core.tail(20)
    );
}

#[tokio::test]
async fn regression_13_10_out_of_range_lease_numbers_are_refused_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let (core, sc) = start(dir.path(), free_tcp_port(), &dir.path().join("data")).await;
    // Java's int range is what Eureka takes (its `LeaseInfo` fields are `int`).
    for lease in [
        r#""leaseInfo":{"durationInSecs":9223372036854775807}"#,
        r#""leaseInfo":{"durationInSecs":2147483648}"#,
        r#""leaseInfo":{"durationInSecs":1e300}"#,
        r#""leaseInfo":{"renewalIntervalInSecs":9223372036854775807}"#,
        r#""leaseInfo":{"durationInSecs":"-9223372036854775808"}"#,
    ] {
        let r = sc.eureka_register("i-big", &format!(",{lease}")).await;
        assert_eq!(
            r.status,
            StatusCode::BAD_REQUEST,
            "{lease}: {}\n{}",
            r.text,
            core.tail(10)
        );
        assert!(r.text.contains("out of range"), "{lease}: {}", r.text);
    }
    // The core is whole: the app has no half-registered instance, and a registration at
    // the limit (and huge timestamps) works, renews and reads back.
    let r = sc
        .send("GET", "default", "/eureka/apps/APP", None, None)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
    let r = sc
        .eureka_register(
            "i-max",
            r#","leaseInfo":{"durationInSecs":2147483647,"renewalIntervalInSecs":2147483647},
            "lastDirtyTimestamp":"9223372036854775807""#,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    let r = sc
        .send(
            "PUT",
            "default",
            "/eureka/apps/APP/i-max?status=UP&lastDirtyTimestamp=-9223372036854775808",
            None,
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = sc
        .send("GET", "default", "/eureka/apps/APP/i-max", None, None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        r.json["instance"]["leaseInfo"]["durationInSecs"], 2147483647,
        "{}",
        r.text
    );
    // v4: a lease beyond int32 seconds is refused (service-center: 400001).
    let r = sc
        .create(
            "default",
            "default",
            json!({"appId": "app", "serviceName": "s", "version": "1.0.0"}),
        )
        .await;
    let sid = r.json["serviceId"].as_str().unwrap().to_owned();
    let r = sc
        .send(
            "POST",
            "default",
            &format!("/v4/default/registry/microservices/{sid}/instances"),
            Some(
                json!({"instance": {"hostName": "h", "endpoints": ["rest://1.2.3.4:80"],
                "healthCheck": {"mode": "push", "interval": 9_223_372_036_854_775_807_i64,
                "times": 9_223_372_036_854_775_807_i64}}}),
            ),
            None,
        )
        .await;
    assert_sc_error(&r, "400001", "huge healthCheck");
    // Revisions far ahead are told to relist, not an overflow.
    let r = sc
        .send(
            "GET",
            "default",
            "/v4/default/admin/changes?since=18446744073709551615&wait=18446744073709551615",
            None,
            None,
        )
        .await;
    assert_sc_error(&r, "410001", "since far ahead");
    assert!(sc.up().await, "still answering:\n{}", core.tail(20));
}

#[tokio::test]
async fn regression_13_12_version_heartbeat_ids_and_rule_types_answer_as_service_center() {
    let dir = tempfile::tempdir().unwrap();
    let (_core, sc) = start(dir.path(), free_tcp_port(), &dir.path().join("data")).await;
    // `GET /version` (service-center's v3 router): the version set, apiVersion 3.0.0.
    let r = sc.send("GET", "default", "/version", None, None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["apiVersion"], "3.0.0", "{}", r.text);
    assert!(r.json["version"].is_string(), "{}", r.text);

    let r = sc
        .create(
            "default",
            "default",
            json!({"appId": "app", "serviceName": "s", "version": "1.0.0"}),
        )
        .await;
    let sid = r.json["serviceId"].as_str().unwrap().to_owned();
    // An instanceId no registration can have is a bad parameter on a heartbeat as on a
    // registration (400001), not "no such instance".
    let r = sc
        .send(
            "POST",
            "default",
            &format!("/v4/default/registry/microservices/{sid}/instances"),
            Some(json!({"instance": {"instanceId": "a:b", "hostName": "h",
                "endpoints": ["rest://1.2.3.4:80"]}})),
            None,
        )
        .await;
    assert_sc_error(&r, "400001", "register a:b");
    let r = sc
        .send(
            "PUT",
            "default",
            &format!("/v4/default/registry/microservices/{sid}/instances/a:b/heartbeat"),
            None,
            None,
        )
        .await;
    assert_sc_error(&r, "400001", "heartbeat a:b");
    let r = sc
        .send(
            "PUT",
            "default",
            &format!("/v4/default/registry/microservices/{sid}/instances/nope/heartbeat"),
            None,
            None,
        )
        .await;
    assert_sc_error(&r, "400017", "heartbeat of an unknown instance");

    // A rule's type never changes, even while it is the service's only rule.
    let rules = format!("/v4/default/registry/microservices/{sid}/rules");
    let r = sc
        .send(
            "POST",
            "default",
            &rules,
            Some(
                json!({"rules": [{"ruleType": "BLACK", "attribute": "ServiceName",
                "pattern": "^x$"}]}),
            ),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let rule_id = r.json["RuleIds"][0].as_str().unwrap().to_owned();
    let r = sc
        .send(
            "PUT",
            "default",
            &format!("{rules}/{rule_id}"),
            Some(json!({"ruleType": "WHITE", "attribute": "ServiceName", "pattern": "^x$"})),
            None,
        )
        .await;
    assert_sc_error(&r, "400021", "rule type change");
    let r = sc
        .send(
            "PUT",
            "default",
            &format!("{rules}/{rule_id}"),
            Some(json!({"ruleType": "BLACK", "attribute": "ServiceName", "pattern": "^y$"})),
            None,
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "same type, new pattern: {}",
        r.text
    );
    let r = sc.send("GET", "default", &rules, None, None).await;
    assert_eq!(r.json["rules"][0]["ruleType"], "BLACK", "{}", r.text);
    assert_eq!(r.json["rules"][0]["pattern"], "^y$", "{}", r.text);
}
