//! The built-in service-center core over a real socket: SC v4 and Eureka v2
//! clients (reqwest, real Eureka payloads, and the third-party
//! py-eureka-client) against `syncer::servicecenter::serve` on 127.0.0.1.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};
use syncer::servicecenter::serve;
use tokio_util::sync::CancellationToken;

/// A running core on an OS-chosen loopback port; stopped on drop.
struct Server {
    base: String,
    http: reqwest::Client,
    shutdown: CancellationToken,
    /// The core and what keeps its store alive (store: `support::current_store()`).
    _core: support::TestCore,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Server {
    async fn start() -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let core = support::open_core(support::current_store()).await;
        tokio::spawn(serve(listener, core.core.clone(), shutdown.clone()));
        Server {
            base,
            http: reqwest::Client::new(),
            shutdown,
            _core: core,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    async fn send(&self, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self.http.request(method, self.url(path));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn create_service(&self, name: &str, version: &str) -> String {
        let (s, v) = self
            .send(
                "POST",
                "/v4/default/registry/microservices",
                Some(json!({"service": {"appId": "app", "serviceName": name, "version": version}})),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v["serviceId"].as_str().unwrap().to_string()
    }

    async fn find(&self, app: &str, name: &str, version: &str) -> (StatusCode, Value) {
        self.send(
            "GET",
            &format!(
                "/v4/default/registry/instances?appId={app}&serviceName={name}&version={version}"
            ),
            None,
        )
        .await
    }

    async fn eureka_get(&self, path: &str, accept_json: bool) -> (StatusCode, String) {
        let mut req = self.http.get(self.url(path));
        if accept_json {
            req = req.header("accept", "application/json");
        }
        let resp = req.send().await.unwrap();
        (resp.status(), resp.text().await.unwrap())
    }

    async fn eureka_post(&self, app: &str, ctype: &str, body: String) -> (StatusCode, String) {
        let resp = self
            .http
            .post(self.url(&format!("/eureka/apps/{app}")))
            .header("content-type", ctype)
            .body(body)
            .send()
            .await
            .unwrap();
        (resp.status(), resp.text().await.unwrap())
    }
}

/// Polls `cond` every 100 ms until it holds or `limit` passes.
async fn eventually<F, Fut>(limit: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if cond().await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn fixture(name: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read_to_string(p).unwrap()
}

fn instance_ids(find: &Value) -> Vec<String> {
    find["instances"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|i| i["instanceId"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

async fn sc_create_register_find_heartbeat_and_unregister_work_over_http() {
    let sc = Server::start().await;
    let v1 = sc.create_service("hello", "1.0.0").await;
    let v2 = sc.create_service("hello", "1.10.0").await;
    assert_eq!(v1.len(), 40);
    assert_eq!(
        sc.create_service("hello", "1.0.0").await,
        v1,
        "create is idempotent"
    );

    let (s, v) = sc
        .send(
            "GET",
            "/v4/default/registry/existence?type=microservice&appId=app&serviceName=hello&version=1.10.0",
            None,
        )
        .await;
    assert_eq!(
        (s, v["serviceId"].as_str()),
        (StatusCode::OK, Some(v2.as_str()))
    );
    let (s, v) = sc
        .send(
            "GET",
            "/v4/default/registry/existence?type=microservice&appId=app&serviceName=nope&version=1.0.0",
            None,
        )
        .await;
    assert_eq!(
        (s, v["errorCode"].as_str()),
        (StatusCode::BAD_REQUEST, Some("400012"))
    );
    assert_eq!(v["errorMessage"], "Micro-service does not exist");

    let (s, v) = sc
        .send(
            "POST",
            &format!("/v4/default/registry/microservices/{v1}/instances"),
            Some(json!({"instance": {"instanceId": "old-1", "hostName": "h1",
                "endpoints": ["rest://127.0.0.1:8080"],
                "properties": {"syncerOriginCluster": "c1", "syncerOriginInstanceId": "x:y"}}})),
        )
        .await;
    assert_eq!(
        (s, v["instanceId"].as_str()),
        (StatusCode::OK, Some("old-1"))
    );
    let (s, v) = sc
        .send(
            "POST",
            &format!("/v4/default/registry/microservices/{v2}/instances"),
            Some(json!({"instance": {"hostName": "h2", "endpoints": ["rest://127.0.0.1:8081"]}})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let new_id = v["instanceId"].as_str().unwrap().to_string();
    assert_eq!(new_id.len(), 32);

    let (s, latest) = sc.find("app", "hello", "latest").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(instance_ids(&latest), vec![new_id.clone()]);
    assert_eq!(latest["instances"][0]["version"], "1.10.0");
    assert_eq!(
        latest["instances"][0]["healthCheck"],
        json!({"mode": "push", "interval": 30, "times": 3})
    );
    let (_, exact) = sc.find("app", "hello", "1.0.0").await;
    assert_eq!(instance_ids(&exact), vec!["old-1".to_string()]);
    assert_eq!(
        exact["instances"][0]["properties"]["syncerOriginInstanceId"],
        "x:y"
    );
    let (s, v) = sc.find("app", "hello", "2.0.0").await;
    assert_eq!(
        (s, v["errorCode"].as_str()),
        (StatusCode::BAD_REQUEST, Some("400012"))
    );

    let hb = format!("/v4/default/registry/microservices/{v1}/instances/old-1/heartbeat");
    assert_eq!(sc.send("PUT", &hb, None).await.0, StatusCode::OK);
    let (s, v) = sc
        .send(
            "PUT",
            &format!("/v4/default/registry/microservices/{v1}/instances/nope/heartbeat"),
            None,
        )
        .await;
    assert_eq!(
        (s, v["errorCode"].as_str()),
        (StatusCode::BAD_REQUEST, Some("400017"))
    );

    let inst = format!("/v4/default/registry/microservices/{v1}/instances/old-1");
    assert_eq!(sc.send("DELETE", &inst, None).await.0, StatusCode::OK);
    let (s, v) = sc.send("DELETE", &inst, None).await;
    assert_eq!(
        (s, v["errorCode"].as_str()),
        (StatusCode::BAD_REQUEST, Some("400017"))
    );
    let (s, v) = sc.find("app", "hello", "1.0.0").await;
    assert_eq!(
        (s, v),
        (StatusCode::OK, json!({})),
        "an empty find answers {{}}"
    );

    let (s, v) = sc
        .send(
            "POST",
            &format!("/v4/default/registry/microservices/{v1}/instances"),
            Some(json!({"instance": {"hostName": "h", "status": "up"}})),
        )
        .await;
    assert_eq!(
        (s, v["errorCode"].as_str()),
        (StatusCode::BAD_REQUEST, Some("400001"))
    );
    assert!(v["detail"].as_str().unwrap().contains("status"), "{v}");
    let (s, v) = sc
        .send(
            "POST",
            &format!("/v4/default/registry/microservices/{v1}/instances"),
            Some(json!({"instance": {"hostName": "h", "healthCheck": {"mode": "push", "interval": 0, "times": 1}}})),
        )
        .await;
    assert_eq!(
        (s, v["errorCode"].as_str()),
        (StatusCode::BAD_REQUEST, Some("400001"))
    );
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .contains("healthCheck.interval"),
        "{v}"
    );
    let (s, v) = sc
        .send(
            "POST",
            "/v4/default/registry/microservices/nope/instances",
            Some(json!({"instance": {"hostName": "h"}})),
        )
        .await;
    assert_eq!(
        (s, v["errorCode"].as_str()),
        (StatusCode::BAD_REQUEST, Some("400012"))
    );
}

async fn sc_instance_expires_after_interval_times_plus_one_without_heartbeat() {
    let sc = Server::start().await;
    let sid = sc.create_service("short", "1.0.0").await;
    let (s, _) = sc
        .send(
            "POST",
            &format!("/v4/default/registry/microservices/{sid}/instances"),
            Some(json!({"instance": {"instanceId": "i1", "hostName": "h",
                "healthCheck": {"mode": "push", "interval": 1, "times": 1}}})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let started = Instant::now();
    assert_eq!(
        instance_ids(&sc.find("app", "short", "latest").await.1),
        vec!["i1"]
    );
    eventually(Duration::from_secs(6), "instance i1 expires", || async {
        instance_ids(&sc.find("app", "short", "latest").await.1).is_empty()
    })
    .await;
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "expired too early"
    );
    let (s, _) = sc
        .send(
            "GET",
            &format!("/v4/default/registry/microservices/{sid}"),
            None,
        )
        .await;
    assert_eq!(
        s,
        StatusCode::OK,
        "the service stays after its instances expire"
    );
}

async fn eureka_json_and_xml_registrations_are_sc_instances_of_app_eureka() {
    let sc = Server::start().await;
    let body = json!({"instance": {"instanceId": "10.0.0.5:orders:8080", "hostName": "orders-host",
        "app": "ORDERS", "ipAddr": "10.0.0.5", "status": "OUT_OF_SERVICE",
        "port": {"$": 8080, "@enabled": "true"}, "securePort": {"$": 8443, "@enabled": "true"},
        "dataCenterInfo": {"name": "MyOwn"}, "vipAddress": "orders",
        "metadata": {"syncerOriginCluster": "east", "syncerOriginServiceId": "s1", "syncerOriginInstanceId": "i1"}}});
    let (s, text) = sc
        .eureka_post("orders", "application/json", body.to_string())
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{text}");
    let (s, text) = sc
        .eureka_post(
            "TestApp",
            "application/xml",
            fixture("register-request.xml"),
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{text}");

    let (s, found) = sc.find("eureka", "orders", "0.0.1").await;
    assert_eq!(s, StatusCode::OK, "{found}");
    let inst = &found["instances"][0];
    assert_eq!(inst["instanceId"], "10.0.0.5:orders:8080");
    assert_eq!(inst["hostName"], "orders-host");
    assert_eq!(inst["status"], "OUTOFSERVICE");
    assert_eq!(
        inst["endpoints"],
        json!([
            "rest://10.0.0.5:8080",
            "rest://10.0.0.5:8443?sslEnabled=true"
        ])
    );
    assert_eq!(inst["properties"], body["instance"]["metadata"]);
    let (_, latest) = sc.find("eureka", "testapp", "latest").await;
    assert_eq!(instance_ids(&latest), vec!["localhost:test-app:8760"]);
    assert_eq!(latest["instances"][0]["properties"]["user.name"], "admin");

    // And back through /eureka, JSON: what the client registered.
    let (s, text) = sc
        .eureka_get("/eureka/apps/ORDERS/10.0.0.5%3Aorders%3A8080", true)
        .await;
    assert_eq!(s, StatusCode::OK);
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["instance"]["status"], "OUT_OF_SERVICE");
    assert_eq!(v["instance"]["vipAddress"], "orders");
    assert_eq!(
        v["instance"]["securePort"],
        json!({"$": 8443, "@enabled": "true"})
    );
    assert_eq!(v["instance"]["metadata"], body["instance"]["metadata"]);
    let (_, xml) = sc.eureka_get("/eureka/apps/TESTAPP", false).await;
    assert!(xml.starts_with("<application>"), "{xml}");
    assert!(xml.contains("<user.name>admin</user.name>"), "{xml}");
    assert!(xml.contains("<durationInSecs>10</durationInSecs>"), "{xml}");
}

async fn sc_instances_of_default_tenant_are_visible_as_eureka_apps() {
    let sc = Server::start().await;
    let sid = sc.create_service("hello-server", "0.1.0").await;
    let props = json!({"syncerOriginCluster": "west", "syncerOriginServiceId": "abc", "syncerOriginInstanceId": "def"});
    let (s, _) = sc
        .send(
            "POST",
            &format!("/v4/default/registry/microservices/{sid}/instances"),
            Some(json!({"instance": {"instanceId": "hello-1", "hostName": "hello-host", "status": "TESTING",
                "endpoints": ["highway://10.1.1.1:7070", "rest://10.1.1.1:8080"], "properties": props}})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);

    let (s, text) = sc.eureka_get("/eureka/apps/", true).await;
    assert_eq!(s, StatusCode::OK);
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["applications"]["apps__hashcode"], "STARTING_1_");
    let app = &v["applications"]["application"][0];
    assert_eq!(app["name"], "HELLO-SERVER");
    let inst = &app["instance"][0];
    assert_eq!(inst["instanceId"], "hello-1");
    assert_eq!(inst["hostName"], "hello-host");
    assert_eq!(inst["ipAddr"], "10.1.1.1");
    assert_eq!(inst["port"], json!({"$": 8080, "@enabled": "true"}));
    assert_eq!(inst["status"], "STARTING");
    assert_eq!(inst["metadata"], props);

    let (s, xml) = sc.eureka_get("/eureka/apps", false).await;
    assert_eq!(s, StatusCode::OK);
    assert!(xml.starts_with("<applications>"), "{xml}");
    assert!(xml.contains("<name>HELLO-SERVER</name>"));
    assert!(xml.contains("<instanceId>hello-1</instanceId>"));
    assert!(xml.contains("<syncerOriginCluster>west</syncerOriginCluster>"));
    assert!(xml.contains(
        "<dataCenterInfo class=\"com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo\">"
    ));
}

async fn eureka_renew_of_unknown_is_404_and_cancel_removes_the_instance() {
    let sc = Server::start().await;
    let (s, _) = sc
        .eureka_post(
            "ACCOUNT-SERVER",
            "application/json",
            fixture("register-request-py-eureka-client.json"),
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let id = "/eureka/v2/apps/ACCOUNT-SERVER/127.0.0.1%3Aaccount-server%3A9090";
    let put = |p: String| sc.http.put(sc.url(&p)).send();
    assert_eq!(
        put(format!("{id}?status=UP&lastDirtyTimestamp=1"))
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        put("/eureka/apps/ACCOUNT-SERVER/unknown".into())
            .await
            .unwrap()
            .status(),
        StatusCode::NOT_FOUND
    );
    let del = sc.http.delete(sc.url(id)).send().await.unwrap();
    assert_eq!(del.status(), StatusCode::OK);
    let del = sc.http.delete(sc.url(id)).send().await.unwrap();
    assert_eq!(del.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        sc.eureka_get("/eureka/apps/ACCOUNT-SERVER", false).await.0,
        StatusCode::NOT_FOUND
    );
    let (s, v) = sc.find("eureka", "account-server", "0.0.1").await;
    assert_eq!((s, v), (StatusCode::OK, json!({})));
}

async fn real_eureka_register_payloads_are_accepted_and_listed() {
    let sc = Server::start().await;
    for (app, file, ctype, id) in [
        (
            "ACCOUNT-SERVER",
            "register-request-py-eureka-client.json",
            "application/json",
            "127.0.0.1:account-server:9090",
        ),
        (
            "ACCOUNT-SERVER",
            "register-request-eureka-js-client.json",
            "application/json",
            "127.0.0.1:account-server:9091",
        ),
        (
            "FOOBAR",
            "register-request-steeltoe.json",
            "application/json",
            "DESKTOP-GNQ5SUT",
        ),
        (
            "TestApp",
            "register-request.xml",
            "application/xml",
            "localhost:test-app:8760",
        ),
    ] {
        let (s, text) = sc.eureka_post(app, ctype, fixture(file)).await;
        assert_eq!(s, StatusCode::NO_CONTENT, "{file}: {text}");
        let (s, xml) = sc.eureka_get("/eureka/apps/", false).await;
        assert_eq!(s, StatusCode::OK);
        assert!(
            xml.contains(&format!("<instanceId>{id}</instanceId>")),
            "{file} not listed: {xml}"
        );
    }
    let (_, text) = sc.eureka_get("/eureka/apps/", true).await;
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["applications"]["apps__hashcode"], "UP_4_");
    let (_, text) = sc.eureka_get("/eureka/apps/FOOBAR", true).await;
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        v["application"]["instance"][0]["metadata"],
        json!({"@class": "java.util.Collections$EmptyMap"})
    );
}

/// The child process is killed if the test fails before it stops it.
struct Script(Child);

impl Drop for Script {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn py_eureka_client_registers_heartbeats_and_cancels_on_sigterm() {
    let python = std::env::var("SYNCER_TEST_PYTHON").unwrap_or_else(|_| {
        panic!(
            "SYNCER_TEST_PYTHON is not set: run `scripts/test.sh`, which creates \
             target/test-venv with py-eureka-client==0.13.3 and exports it"
        )
    });
    let sc = Server::start().await;
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients/py_account_server.py");
    let out = tempfile::NamedTempFile::new().unwrap();
    let err = tempfile::NamedTempFile::new().unwrap();
    let child = Command::new(&python)
        .arg(&script)
        .env("EUREKA_URL", sc.url("/eureka"))
        .env("APP_NAME", "account-server")
        .env("APP_PORT", "9090")
        .env("INTERVAL", "1")
        .stdout(Stdio::from(out.reopen().unwrap()))
        .stderr(Stdio::from(err.reopen().unwrap()))
        .spawn()
        .unwrap_or_else(|e| panic!("starting {python}: {e}"));
    let mut script_proc = Script(child);
    let id = "127.0.0.1:account-server:9090";

    eventually(
        Duration::from_secs(20),
        "py-eureka-client registers",
        || async {
            let (_, v) = sc.find("eureka", "account-server", "0.0.1").await;
            instance_ids(&v) == vec![id.to_string()]
        },
    )
    .await;
    let (s, xml) = sc.eureka_get("/eureka/apps/ACCOUNT-SERVER", false).await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        xml.contains(&format!("<instanceId>{id}</instanceId>")),
        "{xml}"
    );

    // Heartbeats arrive (lease 3 s, renewal 1 s): the lease is renewed and the
    // instance outlives its first lease.
    let registered = Instant::now();
    eventually(
        Duration::from_secs(15),
        "heartbeats keep the instance past its lease",
        || async {
            let (s, text) = sc
                .eureka_get(
                    "/eureka/apps/ACCOUNT-SERVER/127.0.0.1%3Aaccount-server%3A9090",
                    true,
                )
                .await;
            if s != StatusCode::OK {
                return false;
            }
            let v: Value = serde_json::from_str(&text).unwrap();
            let lease = &v["instance"]["leaseInfo"];
            registered.elapsed() > Duration::from_secs(4)
                && lease["lastRenewalTimestamp"].as_i64() > lease["registrationTimestamp"].as_i64()
        },
    )
    .await;

    // The client parsed our XML registry: its own copy lists itself.
    let logs = || {
        format!(
            "stdout:\n{}\nstderr:\n{}",
            std::fs::read_to_string(out.path()).unwrap_or_default(),
            std::fs::read_to_string(err.path()).unwrap_or_default()
        )
    };
    eventually(
        Duration::from_secs(10),
        "py-eureka-client sees itself in its registry copy",
        || {
            let seen = std::fs::read_to_string(out.path())
                .unwrap_or_default()
                .contains(&format!("seen {id} 127.0.0.1:9090 UP"));
            async move { seen }
        },
    )
    .await;

    let pid = script_proc.0.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    eventually(Duration::from_secs(15), "py-eureka-client exits", || {
        let done = matches!(script_proc.0.try_wait(), Ok(Some(_)));
        async move { done }
    })
    .await;
    let stdout = std::fs::read_to_string(out.path()).unwrap_or_default();
    assert!(
        stdout.contains("unregistered"),
        "the client did not cancel: {}",
        logs()
    );
    // Right after the cancel, well within the 3 s lease: gone by cancel, not expiry.
    assert_eq!(
        sc.eureka_get("/eureka/apps/ACCOUNT-SERVER", false).await.0,
        StatusCode::NOT_FOUND,
        "{}",
        logs()
    );
    assert!(instance_ids(&sc.find("eureka", "account-server", "0.0.1").await.1).is_empty());
    let stderr = std::fs::read_to_string(err.path()).unwrap_or_default();
    assert!(
        !stderr.contains("Traceback"),
        "the client raised: {}",
        logs()
    );
}

/// Runs every test above on each store: `memory::...`, `embedded::...`, `etcd::...`.
macro_rules! on_every_store {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $( #[tokio::test]
            async fn $name() {
                super::support::STORE.scope(super::support::Store::Memory, super::$name()).await
            } )*
        }
        mod embedded {
            $( #[tokio::test]
            async fn $name() {
                super::support::STORE.scope(super::support::Store::Embedded, super::$name()).await
            } )*
        }
        mod etcd {
            $( #[tokio::test]
            async fn $name() {
                super::support::STORE.scope(super::support::Store::Etcd, super::$name()).await
            } )*
        }
    };
}

on_every_store!(
    sc_create_register_find_heartbeat_and_unregister_work_over_http,
    sc_instance_expires_after_interval_times_plus_one_without_heartbeat,
    eureka_json_and_xml_registrations_are_sc_instances_of_app_eureka,
    sc_instances_of_default_tenant_are_visible_as_eureka_apps,
    eureka_renew_of_unknown_is_404_and_cancel_removes_the_instance,
    real_eureka_register_payloads_are_accepted_and_listed,
    py_eureka_client_registers_heartbeats_and_cancels_on_sigterm,
);
