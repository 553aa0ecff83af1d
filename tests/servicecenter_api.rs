//! The built-in core's whole SC v4 API over a real socket (reqwest, and tokio-tungstenite
//! for watch): microservices, existence, schemas, tags, rules, dependencies, instances,
//! find and its version rules, revisions and 304, cross-app access, watch, governance and
//! the dump, with service-center's status codes, error codes and body shapes
//! (servicecomb-notes c.1-c.12, d). Runs on the store of `support::current_store()`.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{json, Value};
use syncer::servicecenter::serve;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

const P: &str = "/v4/default/registry";

/// A running core on an OS-chosen loopback port; stopped on drop.
struct Sc {
    base: String,
    http: reqwest::Client,
    shutdown: CancellationToken,
    _core: support::TestCore,
}

impl Drop for Sc {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// One reply: status, `X-Resource-Revision` / `X-Schema-Summary` headers, JSON body (Null
/// when empty or not JSON), raw text.
struct Reply {
    status: StatusCode,
    rev: Option<String>,
    summary: Option<String>,
    body: Value,
    text: String,
}

impl Sc {
    async fn start() -> Sc {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("127.0.0.1:{}", listener.local_addr().unwrap().port());
        let shutdown = CancellationToken::new();
        let core = support::open_core(support::current_store()).await;
        tokio::spawn(serve(listener, core.core.clone(), shutdown.clone()));
        Sc {
            base,
            http: reqwest::Client::new(),
            shutdown,
            _core: core,
        }
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        hdrs: &[(&str, &str)],
    ) -> Reply {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self
            .http
            .request(method, format!("http://{}{path}", self.base));
        if let Some(b) = body {
            req = req.json(&b);
        }
        for (k, v) in hdrs {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let h = |n: &str| {
            resp.headers()
                .get(n)
                .map(|v| v.to_str().unwrap().to_string())
        };
        let (rev, summary) = (h("x-resource-revision"), h("x-schema-summary"));
        let text = resp.text().await.unwrap();
        Reply {
            status,
            rev,
            summary,
            body: serde_json::from_str(&text).unwrap_or(Value::Null),
            text,
        }
    }

    async fn ok(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let r = self.call(method, path, body, &[]).await;
        assert_eq!(r.status, StatusCode::OK, "{method} {path}: {}", r.text);
        r.body
    }

    /// Asserts an error reply: HTTP status = code / 1000, the code as a string, and a
    /// detail containing `detail`.
    async fn err(&self, method: &str, path: &str, body: Option<Value>, code: u32, detail: &str) {
        let r = self.call(method, path, body, &[]).await;
        assert_eq!(
            r.status.as_u16() as u32,
            code / 1000,
            "{method} {path}: {}",
            r.text
        );
        assert_eq!(
            r.body["errorCode"],
            code.to_string(),
            "{method} {path}: {}",
            r.text
        );
        assert!(r.body["errorMessage"].is_string(), "{}", r.text);
        assert!(
            r.body["detail"].as_str().unwrap_or("").contains(detail),
            "{method} {path}: detail should name {detail:?}: {}",
            r.text
        );
    }

    async fn create(&self, service: Value) -> String {
        let v = self
            .ok(
                "POST",
                &format!("{P}/microservices"),
                Some(json!({ "service": service })),
            )
            .await;
        v["serviceId"].as_str().unwrap().to_string()
    }

    async fn register(&self, sid: &str, instance: Value) -> String {
        let v = self
            .ok(
                "POST",
                &format!("{P}/microservices/{sid}/instances"),
                Some(json!({ "instance": instance })),
            )
            .await;
        v["instanceId"].as_str().unwrap().to_string()
    }
}

fn inst(port: u16) -> Value {
    json!({"hostName": "h", "endpoints": [format!("rest://127.0.0.1:{port}")]})
}

#[tokio::test]
async fn microservices_are_created_read_updated_and_deleted_with_service_center_codes() {
    let sc = Sc::start().await;
    // Validation names the field.
    for (service, field) in [
        (json!({"serviceName": "-x"}), "serviceName"),
        (json!({"serviceName": "a", "appId": "a b"}), "appId"),
        (json!({"serviceName": "a", "version": "1.x"}), "version"),
        (json!({"serviceName": "a", "version": "1.32768"}), "version"),
        (json!({"serviceName": "a", "level": "TOP"}), "level"),
        (
            json!({"serviceName": "a", "environment": "prod"}),
            "environment",
        ),
        (json!({"serviceName": "a", "status": "up"}), "status"),
        (json!({"serviceName": "a".repeat(129)}), "serviceName"),
    ] {
        sc.err(
            "POST",
            &format!("{P}/microservices"),
            Some(json!({ "service": service })),
            400001,
            field,
        )
        .await;
    }
    // Create with tags, rules and an instance in one request.
    let body = json!({
        "service": {"serviceName": "orders", "appId": "shop", "version": "1.0.0"},
        "tags": {"team": "blue"},
        "rules": [{"ruleType": "BLACK", "attribute": "ServiceName", "pattern": "^evil"}],
        "instances": [inst(8080)],
    });
    let sid = sc
        .ok("POST", &format!("{P}/microservices"), Some(body))
        .await["serviceId"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        sc.ok("GET", &format!("{P}/microservices/{sid}/tags"), None)
            .await,
        json!({"tags": {"team": "blue"}})
    );
    assert_eq!(
        sc.ok("GET", &format!("{P}/microservices/{sid}/rules"), None)
            .await["rules"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        sc.ok("GET", &format!("{P}/microservices/{sid}/instances"), None)
            .await["instances"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // A chosen id that conflicts with the existing key: 400010.
    sc.err(
        "POST",
        &format!("{P}/microservices"),
        Some(json!({"service": {"serviceId": "other", "serviceName": "orders", "appId": "shop", "version": "1.0.0"}})),
        400010,
        "",
    )
    .await;
    // Properties replace the map.
    sc.ok(
        "PUT",
        &format!("{P}/microservices/{sid}/properties"),
        Some(json!({"properties": {"a": "1"}})),
    )
    .await;
    let got = sc
        .ok("GET", &format!("{P}/microservices/{sid}"), None)
        .await;
    assert_eq!(got["service"]["properties"], json!({"a": "1"}));
    sc.err(
        "PUT",
        &format!("{P}/microservices/nope/properties"),
        Some(json!({"properties": {}})),
        400012,
        "",
    )
    .await;
    // Existence.
    let q = "type=microservice&appId=shop&serviceName=orders";
    assert_eq!(
        sc.ok("GET", &format!("{P}/existence?{q}&version=1.0.0"), None)
            .await["serviceId"],
        sid.as_str()
    );
    assert_eq!(
        sc.ok("GET", &format!("{P}/existence?{q}&version=latest"), None)
            .await["serviceId"],
        sid.as_str()
    );
    sc.err(
        "GET",
        &format!("{P}/existence?{q}&version=2.0.0"),
        None,
        400012,
        "",
    )
    .await;
    sc.err(
        "GET",
        &format!("{P}/existence?{q}&version=2.0.0%2B"),
        None,
        400026,
        "",
    )
    .await;
    sc.err(
        "GET",
        &format!("{P}/existence?type=colour"),
        None,
        400001,
        "type",
    )
    .await;
    // Delete: instances block a non-forced delete; bad force is 400001.
    sc.err(
        "DELETE",
        &format!("{P}/microservices/{sid}"),
        None,
        400013,
        "",
    )
    .await;
    sc.err(
        "DELETE",
        &format!("{P}/microservices/{sid}?force=maybe"),
        None,
        400001,
        "force",
    )
    .await;
    let other = sc.create(json!({"serviceName": "other"})).await;
    // Batch delete: any failure is a 400001 naming the id; the others are deleted.
    sc.err(
        "DELETE",
        &format!("{P}/microservices"),
        Some(json!({"serviceIds": [other, "missing"], "force": false})),
        400001,
        "missing",
    )
    .await;
    sc.err(
        "GET",
        &format!("{P}/microservices/{other}"),
        None,
        400012,
        "",
    )
    .await;
    let v = sc
        .ok(
            "DELETE",
            &format!("{P}/microservices"),
            Some(json!({"serviceIds": [sid], "force": true})),
        )
        .await;
    assert_eq!(v["services"][0]["serviceId"], sid.as_str());
    // Its tags went with it.
    sc.err(
        "GET",
        &format!("{P}/microservices/{sid}/tags"),
        None,
        400012,
        "",
    )
    .await;
    assert_eq!(
        sc.ok("GET", &format!("{P}/microservices"), None).await,
        json!({})
    );
}

#[tokio::test]
async fn schemas_follow_the_edit_rule_and_carry_their_summary() {
    let sc = Sc::start().await;
    let prod = sc
        .create(json!({"serviceName": "p", "schemas": ["a"]}))
        .await;
    let dev = sc
        .create(json!({"serviceName": "d", "environment": "development"}))
        .await;
    let s = |sid: &str, id: &str| format!("{P}/microservices/{sid}/schemas/{id}");
    sc.err("GET", &s(&prod, "a"), None, 400016, "").await;
    sc.err(
        "PUT",
        &s(&prod, "b"),
        Some(json!({"schema": "x"})),
        400014,
        "",
    )
    .await;
    sc.ok(
        "PUT",
        &s(&prod, "a"),
        Some(json!({"schema": "x: 1", "summary": "abc"})),
    )
    .await;
    sc.err(
        "PUT",
        &s(&prod, "a"),
        Some(json!({"schema": "x: 2", "summary": "def"})),
        400015,
        "",
    )
    .await;
    sc.err(
        "PUT",
        &s(&prod, "a"),
        Some(json!({"schema": ""})),
        400001,
        "schema",
    )
    .await;
    sc.err(
        "PUT",
        &s(&prod, "a"),
        Some(json!({"schema": "x", "summary": "a-b"})),
        400001,
        "summary",
    )
    .await;
    sc.err(
        "PUT",
        &s("missing", "a"),
        Some(json!({"schema": "x"})),
        400012,
        "",
    )
    .await;
    let r = sc.call("GET", &s(&prod, "a"), None, &[]).await;
    assert_eq!(
        (r.status, r.body["schema"].as_str(), r.summary.as_deref()),
        (StatusCode::OK, Some("x: 1"), Some("abc"))
    );
    let r = sc
        .call(
            "GET",
            &format!("{P}/existence?type=schema&serviceId={prod}&schemaId=a"),
            None,
            &[],
        )
        .await;
    assert_eq!(
        (r.body["schemaId"].as_str(), r.summary.as_deref()),
        (Some("a"), Some("abc"))
    );
    sc.err(
        "GET",
        &format!("{P}/existence?type=schema&serviceId={prod}&schemaId=zz"),
        None,
        400016,
        "",
    )
    .await;
    // An editable service takes anything; the batch replaces the set.
    sc.ok("PUT", &s(&dev, "one"), Some(json!({"schema": "1"})))
        .await;
    sc.ok(
        "PUT",
        &s(&dev, "one"),
        Some(json!({"schema": "11", "summary": "s1"})),
    )
    .await;
    sc.ok(
        "POST",
        &format!("{P}/microservices/{dev}/schemas"),
        Some(json!({"schemas": [{"schemaId": "two", "schema": "2", "summary": "s2"}]})),
    )
    .await;
    let all = sc
        .ok("GET", &format!("{P}/microservices/{dev}/schemas"), None)
        .await;
    assert_eq!(
        all,
        json!({"schemas": [{"schemaId": "two", "summary": "s2"}]})
    );
    let all = sc
        .ok(
            "GET",
            &format!("{P}/microservices/{dev}/schemas?withSchema=1"),
            None,
        )
        .await;
    assert_eq!(all["schemas"][0]["schema"], "2");
    sc.err(
        "GET",
        &format!("{P}/microservices/{dev}/schemas?withSchema=2"),
        None,
        400001,
        "withSchema",
    )
    .await;
    assert_eq!(
        sc.ok("GET", &format!("{P}/microservices/{dev}"), None)
            .await["service"]["schemas"],
        json!(["two"])
    );
    sc.ok("DELETE", &s(&dev, "two"), None).await;
    sc.err("DELETE", &s(&dev, "two"), None, 400016, "").await;
}

#[tokio::test]
async fn tags_merge_update_and_delete_all_or_nothing() {
    let sc = Sc::start().await;
    let sid = sc.create(json!({"serviceName": "t"})).await;
    let t = format!("{P}/microservices/{sid}/tags");
    assert_eq!(sc.ok("GET", &t, None).await, json!({}));
    sc.ok("POST", &t, Some(json!({"tags": {"a": "x", "b": "y"}})))
        .await;
    sc.ok("POST", &t, Some(json!({"tags": {"c": "z"}}))).await;
    sc.err(
        "POST",
        &t,
        Some(json!({"tags": {"d": "1.0"}})),
        400001,
        "1.0",
    )
    .await;
    sc.err("POST", &t, Some(json!({"tags": {}})), 400001, "tags")
        .await;
    sc.ok("PUT", &format!("{t}/a?value=w"), None).await;
    sc.err("PUT", &format!("{t}/nope?value=w"), None, 400018, "nope")
        .await;
    sc.err("DELETE", &format!("{t}/a,nope"), None, 400018, "nope")
        .await;
    sc.ok("DELETE", &format!("{t}/a,b"), None).await;
    assert_eq!(sc.ok("GET", &t, None).await, json!({"tags": {"c": "z"}}));
    sc.err(
        "POST",
        &format!("{P}/microservices/missing/tags"),
        Some(json!({"tags": {"a": "b"}})),
        400012,
        "",
    )
    .await;
}

#[tokio::test]
async fn rules_hide_providers_from_the_consumers_they_exclude() {
    let sc = Sc::start().await;
    let provider = sc
        .create(json!({"serviceName": "prov", "appId": "a"}))
        .await;
    sc.register(&provider, inst(1)).await;
    let good = sc
        .create(json!({"serviceName": "good", "appId": "a"}))
        .await;
    let evil = sc
        .create(json!({"serviceName": "evil", "appId": "a"}))
        .await;
    let r = format!("{P}/microservices/{provider}/rules");
    let ids = sc
        .ok("POST", &r, Some(json!({"rules": [{"ruleType": "BLACK", "attribute": "ServiceName", "pattern": "^evil$"}]})))
        .await;
    let id = ids["RuleIds"][0].as_str().unwrap().to_string();
    // A duplicate is skipped (no RuleIds); mixing types is 400020; bad fields name themselves.
    assert_eq!(
        sc.ok("POST", &r, Some(json!({"rules": [{"ruleType": "BLACK", "attribute": "ServiceName", "pattern": "^evil$"}]})))
            .await,
        json!({})
    );
    sc.err(
        "POST",
        &r,
        Some(json!({"rules": [{"ruleType": "WHITE", "attribute": "AppId", "pattern": "x"}]})),
        400020,
        "",
    )
    .await;
    sc.err(
        "POST",
        &r,
        Some(json!({"rules": [{"ruleType": "BLACK", "attribute": "Colour", "pattern": "x"}]})),
        400001,
        "attribute",
    )
    .await;
    sc.err(
        "POST",
        &format!("{P}/microservices/missing/rules"),
        Some(json!({"rules": [{"ruleType": "BLACK", "attribute": "AppId", "pattern": "x"}]})),
        400001,
        "missing",
    )
    .await;
    let find = format!("{P}/instances?appId=a&serviceName=prov&version=latest");
    let seen = |cid: &str| {
        let (sc, find, cid) = (&sc, find.clone(), cid.to_string());
        async move {
            let r = sc.call("GET", &find, None, &[("X-ConsumerId", &cid)]).await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.text);
            r.body["instances"].as_array().map_or(0, Vec::len)
        }
    };
    assert_eq!(seen(&good).await, 1);
    assert_eq!(seen(&evil).await, 0);
    // A rule's type never changes, not even the only rule's (service-center 1.3.0): 400021,
    // and the black list stays.
    sc.err(
        "PUT",
        &format!("{r}/{id}"),
        Some(json!({"ruleType": "WHITE", "attribute": "ServiceName", "pattern": "^good$"})),
        400021,
        "Rule type is BLACK",
    )
    .await;
    assert_eq!((seen(&good).await, seen(&evil).await), (1, 0));
    sc.err(
        "PUT",
        &format!("{r}/nope"),
        Some(json!({"ruleType": "WHITE", "attribute": "AppId", "pattern": "x"})),
        400022,
        "",
    )
    .await;
    sc.err("DELETE", &format!("{r}/nope"), None, 400022, "")
        .await;
    sc.ok("DELETE", &format!("{r}/{id}"), None).await;
    assert_eq!(seen(&evil).await, 1);
}

#[tokio::test]
async fn find_applies_version_rules_revisions_cross_app_access_and_records_dependencies() {
    let sc = Sc::start().await;
    let mut by_version = std::collections::HashMap::new();
    for (v, port) in [("1.0.0", 1), ("1.9", 2), ("1.10", 3), ("2.0.0", 4)] {
        let sid = sc
            .create(json!({"serviceName": "calc", "appId": "math", "version": v}))
            .await;
        sc.register(&sid, inst(port)).await;
        by_version.insert(v, sid);
    }
    let ports = |v: &Value| {
        let mut p: Vec<String> = v["instances"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|i| {
                        i["endpoints"][0]
                            .as_str()
                            .unwrap()
                            .rsplit(':')
                            .next()
                            .unwrap()
                            .to_string()
                    })
                    .collect()
            })
            .unwrap_or_default();
        p.sort();
        p.join(",")
    };
    let f = |rule: &str| format!("{P}/instances?appId=math&serviceName=calc&version={rule}");
    assert_eq!(ports(&sc.ok("GET", &f("latest"), None).await), "4");
    assert_eq!(ports(&sc.ok("GET", &f("1.9"), None).await), "2");
    assert_eq!(ports(&sc.ok("GET", &f("1.9%2B"), None).await), "2,3,4");
    assert_eq!(ports(&sc.ok("GET", &f("1.0.0-1.10"), None).await), "1,2");
    assert_eq!(sc.ok("GET", &f("3.0%2B"), None).await, json!({}));
    sc.err("GET", &f("1.5"), None, 400012, "").await;
    sc.err("GET", &f("x"), None, 400001, "version").await;
    sc.err(
        "GET",
        &format!("{P}/instances?appId=math&version=latest"),
        None,
        400001,
        "serviceName",
    )
    .await;
    sc.err(
        "GET",
        &format!("{P}/instances?appId=math&serviceName=nope&version=latest"),
        None,
        400012,
        "",
    )
    .await;
    // rev: the same rev back is a 304 with an empty body (query or header); a change moves it.
    let r = sc.call("GET", &f("latest"), None, &[]).await;
    let rev = r.rev.unwrap();
    let again = sc
        .call("GET", &format!("{}&rev={rev}", f("latest")), None, &[])
        .await;
    assert_eq!(
        (again.status, again.text.as_str()),
        (StatusCode::NOT_MODIFIED, "")
    );
    let again = sc
        .call("GET", &f("latest"), None, &[("X-Resource-Revision", &rev)])
        .await;
    assert_eq!(again.status, StatusCode::NOT_MODIFIED);
    sc.register(&by_version["2.0.0"], inst(5)).await;
    let changed = sc
        .call("GET", &format!("{}&rev={rev}", f("latest")), None, &[])
        .await;
    assert_eq!(
        (changed.status, ports(&changed.body)),
        (StatusCode::OK, "4,5".to_string())
    );
    assert_ne!(changed.rev.unwrap(), rev);
    // Cross-app: a consumer of another app sees nothing until the provider allows it.
    let web = sc
        .create(json!({"serviceName": "web", "appId": "front"}))
        .await;
    let latest = f("latest");
    let as_web = [("X-ConsumerId", web.as_str())];
    assert_eq!(sc.call("GET", &latest, None, &as_web).await.body, json!({}));
    let hidden = sc
        .call(
            "GET",
            &format!("{P}/microservices/{}/instances", by_version["2.0.0"]),
            None,
            &as_web,
        )
        .await;
    assert_eq!(hidden.body["errorCode"], "400012");
    sc.ok(
        "PUT",
        &format!("{P}/microservices/{}/properties", by_version["2.0.0"]),
        Some(json!({"properties": {"allowCrossApp": "True"}})),
    )
    .await;
    assert_eq!(
        ports(&sc.call("GET", &latest, None, &as_web).await.body),
        "4,5"
    );
    let unknown = sc
        .call("GET", &latest, None, &[("X-ConsumerId", "ghost")])
        .await;
    assert_eq!(unknown.body["errorCode"], "400012");
    // The find recorded web -> calc (latest): providers, consumers, and a non-forced delete
    // of the provider is refused with 400023.
    let provs = sc
        .ok("GET", &format!("{P}/microservices/{web}/providers"), None)
        .await;
    assert_eq!(
        provs["providers"][0]["serviceId"],
        by_version["2.0.0"].as_str()
    );
    let cons = sc
        .ok(
            "GET",
            &format!("{P}/microservices/{}/consumers", by_version["2.0.0"]),
            None,
        )
        .await;
    assert_eq!(cons["consumers"][0]["serviceId"], web.as_str());
    let delete = format!("{P}/microservices/{}?force=false", by_version["2.0.0"]);
    sc.err("DELETE", &delete, None, 400023, "").await;
}

#[tokio::test]
async fn explicit_dependencies_are_added_and_replaced() {
    let sc = Sc::start().await;
    let c = sc
        .create(json!({"serviceName": "c", "appId": "a", "version": "1.0.0"}))
        .await;
    let p1 = sc.create(json!({"serviceName": "p1", "appId": "a"})).await;
    let p2 = sc.create(json!({"serviceName": "p2", "appId": "a"})).await;
    let d = format!("{P}/dependencies");
    let item = |name: &str| {
        json!({"dependencies": [{
            "consumer": {"appId": "a", "serviceName": "c", "version": "1.0.0"},
            "providers": [{"serviceName": name, "version": "latest"}],
        }]})
    };
    sc.ok("POST", &d, Some(item("p1"))).await;
    sc.ok("POST", &d, Some(item("p2"))).await;
    let ids = |v: &Value| -> Vec<String> {
        let mut x: Vec<String> = v["providers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["serviceId"].as_str().unwrap().into())
            .collect();
        x.sort();
        x
    };
    let mut both = vec![p1.clone(), p2.clone()];
    both.sort();
    assert_eq!(
        ids(&sc
            .ok("GET", &format!("{P}/microservices/{c}/providers"), None)
            .await),
        both
    );
    sc.ok("PUT", &d, Some(item("p2"))).await;
    assert_eq!(
        ids(&sc
            .ok("GET", &format!("{P}/microservices/{c}/providers"), None)
            .await),
        vec![p2.clone()]
    );
    assert_eq!(
        sc.ok("GET", &format!("{P}/microservices/{p1}/consumers"), None)
            .await,
        json!({})
    );
    // Errors: unknown consumer, no version for a provider, empty list.
    let mut bad = item("p1");
    bad["dependencies"][0]["consumer"]["version"] = json!("9.9.9");
    sc.err("POST", &d, Some(bad), 400012, "").await;
    let mut bad = item("p1");
    bad["dependencies"][0]["providers"][0]["version"] = json!("");
    sc.err("POST", &d, Some(bad), 400001, "version").await;
    sc.err(
        "POST",
        &d,
        Some(json!({"dependencies": []})),
        400001,
        "dependencies",
    )
    .await;
    sc.err(
        "GET",
        &format!("{P}/microservices/missing/providers"),
        None,
        400012,
        "",
    )
    .await;
}

#[tokio::test]
async fn instances_register_heartbeat_change_and_batch_like_service_center() {
    let sc = Sc::start().await;
    let sid = sc
        .create(json!({"serviceName": "i", "version": "1.2"}))
        .await;
    let i = |iid: &str| format!("{P}/microservices/{sid}/instances/{iid}");
    sc.err(
        "POST",
        &format!("{P}/microservices/{sid}/instances"),
        Some(json!({"instance": {"hostName": ""}})),
        400001,
        "hostName",
    )
    .await;
    sc.err(
        "POST",
        &format!("{P}/microservices/{sid}/instances"),
        Some(
            json!({"instance": {"hostName": "h", "healthCheck": {"mode": "poke", "interval": 1}}}),
        ),
        400001,
        "healthCheck.mode",
    )
    .await;
    sc.err(
        "POST",
        &format!("{P}/microservices/missing/instances"),
        Some(json!({"instance": inst(1)})),
        400012,
        "",
    )
    .await;
    let iid = sc.register(&sid, json!({"instanceId": "i1", "hostName": "h", "endpoints": ["rest://1.2.3.4:80"], "version": "9"})).await;
    assert_eq!(iid, "i1");
    let got = sc.ok("GET", &i("i1"), None).await;
    assert_eq!(
        (
            got["instance"]["version"].as_str(),
            got["instance"]["status"].as_str()
        ),
        (Some("1.2"), Some("UP"))
    );
    assert_eq!(
        got["instance"]["healthCheck"],
        json!({"mode": "push", "interval": 30, "times": 3})
    );
    sc.err("GET", &i("nope"), None, 400017, "").await;
    sc.ok("PUT", &format!("{}/heartbeat", i("i1")), None).await;
    sc.err("PUT", &format!("{}/heartbeat", i("nope")), None, 400017, "")
        .await;
    sc.ok("PUT", &format!("{}/status?value=DOWN", i("i1")), None)
        .await;
    sc.err(
        "PUT",
        &format!("{}/status?value=down", i("i1")),
        None,
        400001,
        "status",
    )
    .await;
    sc.ok(
        "PUT",
        &format!("{}/properties", i("i1")),
        Some(json!({"properties": {"k": "v"}})),
    )
    .await;
    let got = sc.ok("GET", &i("i1"), None).await;
    assert_eq!(
        (
            got["instance"]["status"].as_str(),
            &got["instance"]["properties"]
        ),
        (Some("DOWN"), &json!({"k": "v"}))
    );
    // Batch heartbeats: all known → 200 empty; any unknown → 400017; none → 400001.
    let hb = format!("{P}/heartbeats");
    let r = sc
        .call(
            "PUT",
            &hb,
            Some(json!({"Instances": [{"serviceId": sid, "instanceId": "i1"}]})),
            &[],
        )
        .await;
    assert_eq!((r.status, r.text.as_str()), (StatusCode::OK, ""));
    sc.err(
        "PUT",
        &hb,
        Some(json!({"instances": [{"serviceId": sid, "instanceId": "zz"}]})),
        400017,
        "zz",
    )
    .await;
    sc.err(
        "PUT",
        &hb,
        Some(json!({"instances": []})),
        400001,
        "instances",
    )
    .await;
    // Batch find: updated, notModified (rev current), failed.
    let act = format!("{P}/instances/action?type=query");
    let key = json!({"appId": "default", "serviceName": "i", "version": "latest"});
    let v = sc
        .ok(
            "POST",
            &act,
            Some(json!({
                "services": [{"service": key}, {"service": {"appId": "default", "serviceName": "nope", "version": "latest"}}],
                "instances": [{"instance": {"serviceId": sid, "instanceId": "i1"}}],
            })),
        )
        .await;
    assert_eq!(v["services"]["updated"][0]["index"], 0);
    assert_eq!(
        v["services"]["updated"][0]["instances"][0]["instanceId"],
        "i1"
    );
    assert_eq!(v["services"]["failed"][0]["indexes"], json!([1]));
    assert_eq!(v["services"]["failed"][0]["error"]["errorCode"], "400012");
    assert_eq!(
        v["instances"]["updated"][0]["instances"][0]["instanceId"],
        "i1"
    );
    let rev = v["services"]["updated"][0]["rev"]
        .as_str()
        .unwrap()
        .to_string();
    let v = sc
        .ok(
            "POST",
            &act,
            Some(json!({"services": [{"service": key, "rev": rev}]})),
        )
        .await;
    assert_eq!(v["services"]["notModified"], json!([0]));
    sc.err(
        "POST",
        &format!("{P}/instances/action?type=other"),
        Some(json!({})),
        400001,
        "type",
    )
    .await;
    sc.err("POST", &act, Some(json!({})), 400001, "").await;
    // Unregister.
    sc.ok("DELETE", &i("i1"), None).await;
    sc.err("DELETE", &i("i1"), None, 400017, "").await;
    let r = sc
        .call(
            "GET",
            &format!("{P}/microservices/{sid}/instances"),
            None,
            &[],
        )
        .await;
    assert_eq!((r.status, r.body.clone()), (StatusCode::OK, json!({})));
    assert!(r.rev.is_some());
}

async fn next_text(
    ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
) -> String {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a frame within 10 s")
            .expect("socket open")
            .unwrap();
        if let Message::Text(t) = msg {
            return t.to_string();
        }
    }
}

#[tokio::test]
async fn watchers_hear_about_their_providers_instances() {
    let sc = Sc::start().await;
    let provider = sc
        .create(json!({"serviceName": "prov", "appId": "w"}))
        .await;
    let consumer = sc
        .create(json!({"serviceName": "cons", "appId": "w"}))
        .await;
    sc.register(
        &provider,
        json!({"instanceId": "first", "hostName": "h", "endpoints": ["rest://1.1.1.1:1"]}),
    )
    .await;
    // The consumer depends on the provider through a find.
    let r = sc
        .call(
            "GET",
            &format!("{P}/instances?appId=w&serviceName=prov&version=latest"),
            None,
            &[("X-ConsumerId", &consumer)],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    // An unknown service gets one text frame.
    let (mut ws, _) = tokio_tungstenite::connect_async(format!(
        "ws://{}{P}/microservices/ghost/watcher",
        sc.base
    ))
    .await
    .unwrap();
    assert_eq!(next_text(&mut ws).await, "Service does not exist.");
    // list-watch: INIT for what exists, then CREATE, UPDATE, DELETE.
    let (mut ws, _) = tokio_tungstenite::connect_async(format!(
        "ws://{}{P}/microservices/{consumer}/listwatcher",
        sc.base
    ))
    .await
    .unwrap();
    let init: Value = serde_json::from_str(&next_text(&mut ws).await).unwrap();
    assert_eq!(init["action"], "INIT");
    assert_eq!(init["instance"]["instanceId"], "first");
    assert_eq!(init["key"]["serviceName"], "prov");
    assert_eq!(init["key"]["tenant"], "default/default");
    sc.register(
        &provider,
        json!({"instanceId": "second", "hostName": "h", "endpoints": ["rest://1.1.1.1:2"]}),
    )
    .await;
    let ev: Value = serde_json::from_str(&next_text(&mut ws).await).unwrap();
    assert_eq!(
        (ev["action"].as_str(), ev["instance"]["instanceId"].as_str()),
        (Some("CREATE"), Some("second"))
    );
    sc.ok(
        "PUT",
        &format!("{P}/microservices/{provider}/instances/second/status?value=DOWN"),
        None,
    )
    .await;
    let ev: Value = serde_json::from_str(&next_text(&mut ws).await).unwrap();
    assert_eq!(
        (ev["action"].as_str(), ev["instance"]["status"].as_str()),
        (Some("UPDATE"), Some("DOWN"))
    );
    sc.ok(
        "DELETE",
        &format!("{P}/microservices/{provider}/instances/first"),
        None,
    )
    .await;
    let ev: Value = serde_json::from_str(&next_text(&mut ws).await).unwrap();
    assert_eq!(
        (ev["action"].as_str(), ev["instance"]["instanceId"].as_str()),
        (Some("DELETE"), Some("first"))
    );
    // Plain watch: no INIT, live events only.
    let (mut w2, _) = tokio_tungstenite::connect_async(format!(
        "ws://{}{P}/microservices/{consumer}/watcher",
        sc.base
    ))
    .await
    .unwrap();
    sc.register(
        &provider,
        json!({"instanceId": "third", "hostName": "h", "endpoints": ["rest://1.1.1.1:3"]}),
    )
    .await;
    let ev: Value = serde_json::from_str(&next_text(&mut w2).await).unwrap();
    assert_eq!(
        (ev["action"].as_str(), ev["instance"]["instanceId"].as_str()),
        (Some("CREATE"), Some("third"))
    );
    w2.close(None).await.unwrap();
    // A plain GET without the upgrade is a 400 error body, not a 5xx.
    sc.err(
        "GET",
        &format!("{P}/microservices/{consumer}/watcher"),
        None,
        400001,
        "websocket",
    )
    .await;
}

#[tokio::test]
async fn governance_and_dump_show_the_whole_registry() {
    let sc = Sc::start().await;
    let p = sc
        .create(json!({"serviceName": "gp", "appId": "g1", "version": "1.0"}))
        .await;
    sc.create(json!({"serviceName": "gp", "appId": "g1", "version": "2.0"}))
        .await;
    let c = sc.create(json!({"serviceName": "gc", "appId": "g2"})).await;
    sc.register(&p, inst(9)).await;
    sc.ok(
        "POST",
        &format!("{P}/microservices/{p}/tags"),
        Some(json!({"tags": {"k": "v"}})),
    )
    .await;
    sc.ok(
        "PUT",
        &format!("{P}/microservices/{p}/properties"),
        Some(json!({"properties": {"allowCrossApp": "true"}})),
    )
    .await;
    sc.call(
        "GET",
        &format!("{P}/instances?appId=g1&serviceName=gp&version=1.0"),
        None,
        &[("X-ConsumerId", &c)],
    )
    .await;
    let g = "/v4/default/govern";
    let d = sc.ok("GET", &format!("{g}/microservices/{p}"), None).await;
    assert_eq!(d["service"]["microService"]["serviceId"], p.as_str());
    assert_eq!(d["service"]["instances"].as_array().unwrap().len(), 1);
    assert_eq!(d["service"]["tags"], json!({"k": "v"}));
    assert_eq!(d["service"]["consumers"][0]["serviceId"], c.as_str());
    assert_eq!(d["service"]["microServiceVersions"], json!(["2.0", "1.0"]));
    sc.err(
        "GET",
        &format!("{g}/microservices/missing"),
        None,
        400012,
        "",
    )
    .await;
    let all = sc
        .ok("GET", &format!("{g}/microservices?options=all"), None)
        .await;
    assert_eq!(all["allServicesDetail"].as_array().unwrap().len(), 3);
    assert_eq!(all["statistics"]["services"]["count"], 3);
    assert_eq!(all["statistics"]["instances"]["count"], 1);
    sc.err(
        "GET",
        &format!("{g}/microservices?options=colour"),
        None,
        400001,
        "options",
    )
    .await;
    let st = sc
        .ok("GET", &format!("{g}/microservices/statistics"), None)
        .await;
    assert_eq!(
        (
            st["services"]["onlineCount"].as_u64(),
            st["apps"]["count"].as_u64()
        ),
        (Some(1), Some(2))
    );
    let rel = sc.ok("GET", &format!("{g}/relations"), None).await;
    assert_eq!(rel["nodes"].as_array().unwrap().len(), 3);
    assert_eq!(rel["lines"][0]["from"]["id"], c.as_str());
    assert_eq!(
        sc.ok("GET", &format!("{g}/apps"), None).await,
        json!({"appIds": ["g1", "g2"]})
    );
    let dump = sc.ok("GET", "/v4/default/admin/dump", None).await;
    assert_eq!(dump["cache"]["services"].as_array().unwrap().len(), 3);
    assert_eq!(dump["cache"]["serviceTags"][0]["value"], json!({"k": "v"}));
    assert_eq!(
        dump["cache"]["dependencyRules"].as_array().unwrap().len(),
        1
    );
    let r = sc.call("GET", "/v4/other/admin/dump", None, &[]).await;
    assert_eq!(
        (r.status, r.body["errorCode"].as_str()),
        (StatusCode::FORBIDDEN, Some("403001"))
    );
}

/// Serves `core` on a fresh port: (base address, stop token, serve task).
async fn serve_core(
    core: syncer::servicecenter::Core,
) -> (
    String,
    CancellationToken,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let stop = CancellationToken::new();
    let task = tokio::spawn(serve(listener, core, stop.clone()));
    (base, stop, task)
}

#[tokio::test]
async fn schemas_tags_rules_and_dependencies_survive_a_restart_of_the_embedded_store() {
    use syncer::servicecenter::store::StoreConfig;
    use syncer::servicecenter::Core;
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig::Embedded {
        data_dir: dir.path().join("data"),
    };
    let http = reqwest::Client::new();
    let send = |method: &str, url: String, body: Option<Value>| {
        let mut req = http.request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), url);
        if let Some(b) = body {
            req = req.json(&b);
        }
        async move {
            let r = req.send().await.unwrap();
            let status = r.status();
            let text = r.text().await.unwrap();
            assert_eq!(status, StatusCode::OK, "{text}");
            serde_json::from_str::<Value>(&text).unwrap_or(Value::Null)
        }
    };
    let (base, stop, task) = serve_core(Core::open(config.clone()).await.unwrap()).await;
    let create = |name: &str| {
        send(
            "POST",
            format!("{base}{P}/microservices"),
            Some(json!({"service": {"serviceName": name, "appId": "r", "version": "1.0.0"}})),
        )
    };
    let c = create("c").await["serviceId"].as_str().unwrap().to_string();
    let p = create("p").await["serviceId"].as_str().unwrap().to_string();
    let s = format!("{base}{P}/microservices/{p}");
    send(
        "POST",
        format!("{s}/tags"),
        Some(json!({"tags": {"k": "v"}})),
    )
    .await;
    send(
        "PUT",
        format!("{s}/schemas/sch"),
        Some(json!({"schema": "body", "summary": "sum"})),
    )
    .await;
    send(
        "POST",
        format!("{s}/rules"),
        Some(json!({"rules": [{"ruleType": "BLACK", "attribute": "AppId", "pattern": "^x$"}]})),
    )
    .await;
    send(
        "POST",
        format!("{base}{P}/dependencies"),
        Some(json!({"dependencies": [{
            "consumer": {"appId": "r", "serviceName": "c", "version": "1.0.0"},
            "providers": [{"serviceName": "p", "version": "1.0.0+"}],
        }]})),
    )
    .await;
    stop.cancel();
    task.await.unwrap().unwrap();

    let (base, stop, task) = serve_core(Core::open(config).await.unwrap()).await;
    let s = format!("{base}{P}/microservices/{p}");
    assert_eq!(
        send("GET", format!("{s}/tags"), None).await,
        json!({"tags": {"k": "v"}})
    );
    let sch = send("GET", format!("{s}/schemas?withSchema=1"), None).await;
    assert_eq!(
        sch,
        json!({"schemas": [{"schemaId": "sch", "schema": "body", "summary": "sum"}]})
    );
    let rules = send("GET", format!("{s}/rules"), None).await;
    assert_eq!(rules["rules"][0]["pattern"], "^x$");
    let provs = send(
        "GET",
        format!("{base}{P}/microservices/{c}/providers"),
        None,
    )
    .await;
    assert_eq!(provs["providers"][0]["serviceId"], p.as_str());
    // Deleting the provider removes its records from the store too.
    send("DELETE", format!("{s}?force=true"), None).await;
    stop.cancel();
    task.await.unwrap().unwrap();
}
