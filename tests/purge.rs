//! `syncer purge` (issue 15, item 4) against a real core (`syncer servicecenter`), through
//! both plugins: with native instances present it removes only copies (instances carrying
//! the origin markers), of one origin cluster or all, in every tenant; `--dry-run` removes
//! nothing and lists them.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::{free_tcp_port, Proc};

const ORIGIN_CLUSTER: &str = "syncerOriginCluster";

/// A core of its own, answering.
async fn core(dir: &std::path::Path, name: &str) -> (Proc, String) {
    let port = free_tcp_port();
    let base = format!("http://127.0.0.1:{port}");
    let proc = Proc::syncer(
        dir,
        name,
        &["servicecenter", "--listen", &format!("127.0.0.1:{port}")],
    );
    let http = reqwest::Client::new();
    support::wait_for_core(&http, &base, "the core answers", &[&proc]).await;
    (proc, base)
}

/// Creates service `name` in `domain`/`project` and returns its id.
async fn service(
    http: &reqwest::Client,
    base: &str,
    domain: &str,
    project: &str,
    name: &str,
) -> String {
    let created: Value = http
        .post(format!("{base}/v4/{project}/registry/microservices"))
        .header("X-Domain-Name", domain)
        .header("X-Domain-Project", project)
        .json(&json!({"service": {"appId": "purge", "serviceName": name, "version": "1.0.0"}}))
        .send()
        .await
        .expect("create service")
        .json()
        .await
        .expect("service body");
    created["serviceId"].as_str().expect("serviceId").to_owned()
}

/// Registers an instance of `sid` on `port`; a copy of `origin` when given (the markers the
/// importer writes).
async fn instance(
    http: &reqwest::Client,
    base: &str,
    (domain, project): (&str, &str),
    sid: &str,
    port: u16,
    origin: Option<&str>,
) {
    let properties = match origin {
        Some(cluster) => json!({
            ORIGIN_CLUSTER: cluster,
            "syncerOriginServiceId": "origin-svc",
            "syncerOriginInstanceId": format!("origin-{port}"),
        }),
        None => json!({"team": "native"}),
    };
    let resp = http
        .post(format!(
            "{base}/v4/{project}/registry/microservices/{sid}/instances"
        ))
        .header("X-Domain-Name", domain)
        .header("X-Domain-Project", project)
        .json(&json!({"instance": {
            "hostName": format!("host-{port}"),
            "endpoints": [format!("rest://127.0.0.1:{port}")],
            "properties": properties,
            "healthCheck": {"mode": "push", "interval": 300, "times": 1}
        }}))
        .send()
        .await
        .expect("register");
    assert!(resp.status().is_success(), "register: {}", resp.status());
}

/// The origin marker of each instance of `sid` (`native` for none), sorted.
async fn markers(
    http: &reqwest::Client,
    base: &str,
    (domain, project): (&str, &str),
    sid: &str,
) -> Vec<String> {
    let body: Value = http
        .get(format!(
            "{base}/v4/{project}/registry/microservices/{sid}/instances"
        ))
        .header("X-Domain-Name", domain)
        .header("X-Domain-Project", project)
        .send()
        .await
        .expect("instances")
        .json()
        .await
        .expect("instances body");
    let mut out: Vec<String> = body["instances"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|i| {
            i["properties"][ORIGIN_CLUSTER]
                .as_str()
                .unwrap_or("native")
                .to_owned()
        })
        .collect();
    out.sort();
    out
}

/// Runs `syncer purge args`: (success, stdout lines, stderr).
async fn purge(args: &[&str]) -> (bool, Vec<String>, String) {
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_syncer"))
        .arg("purge")
        .args(args)
        .env("SYNCER_LOG", "warn")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("purge finishes within 60 s")
        .expect("run purge");
    let stdout = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    (
        out.status.success(),
        stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn purge_removes_only_copies_by_origin_in_every_tenant_and_a_dry_run_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let http = reqwest::Client::new();
    let (_core, base) = core(dir.path(), "core").await;
    let default = ("default", "default");
    let other = ("other", "proj");
    let orders = service(&http, &base, "default", "default", "orders").await;
    let billing = service(&http, &base, "other", "proj", "billing").await;
    instance(&http, &base, default, &orders, 1001, None).await;
    instance(&http, &base, default, &orders, 1002, Some("east")).await;
    instance(&http, &base, default, &orders, 1003, Some("east")).await;
    instance(&http, &base, default, &orders, 1004, Some("west")).await;
    instance(&http, &base, other, &billing, 2001, None).await;
    instance(&http, &base, other, &billing, 2002, Some("west")).await;
    let all = |o: &'static [&'static str], b: &'static [&'static str]| {
        (
            o.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>(),
            b.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>(),
        )
    };
    let state = || async {
        (
            markers(&http, &base, default, &orders).await,
            markers(&http, &base, other, &billing).await,
        )
    };

    let (ok, lines, err) = purge(&["--sc-addr", &base, "--dry-run"]).await;
    assert!(ok, "dry run failed: {err}");
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert!(
        lines.iter().all(|l| l.ends_with("\twould remove")),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("west\tother/proj/purge/billing/1.0.0\t")),
        "{lines:?}"
    );
    assert_eq!(
        state().await,
        all(&["east", "east", "native", "west"], &["native", "west"]),
        "a dry run removed something"
    );

    let (ok, lines, err) = purge(&["--sc-addr", &base, "--origin-cluster", "east"]).await;
    assert!(ok, "purge of east failed: {err}");
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines.iter().all(
            |l| l.starts_with("east\tdefault/default/purge/orders/1.0.0\t")
                && l.ends_with("\tremoved")
        ),
        "{lines:?}"
    );
    assert_eq!(
        state().await,
        all(&["native", "west"], &["native", "west"]),
        "purge of east touched another origin or a native instance"
    );

    let (ok, lines, err) = purge(&["--sc-addr", &base]).await;
    assert!(ok, "purge of all failed: {err}");
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(
        state().await,
        all(&["native"], &["native"]),
        "purge left a copy or removed a native instance"
    );
    // Services stay, empty or not (documented): both still answer.
    assert_eq!(markers(&http, &base, default, &orders).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn purge_through_the_eureka_plugin_removes_only_copies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let http = reqwest::Client::new();
    let (_core, base) = core(dir.path(), "eureka-core").await;
    for (id, origin) in [("n-1", None), ("c-1", Some("east")), ("c-2", Some("west"))] {
        let metadata = match origin {
            Some(cluster) => json!({ORIGIN_CLUSTER: cluster, "syncerOriginInstanceId": id}),
            None => json!({"team": "native"}),
        };
        let body = json!({"instance": {
            "instanceId": id, "hostName": "host-1", "app": "SHOP",
            "ipAddr": "10.1.2.3", "status": "UP", "port": {"$": 8080, "@enabled": "true"},
            "metadata": metadata,
            "dataCenterInfo": {"@class": "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo", "name": "MyOwn"}
        }});
        let resp = http
            .post(format!("{base}/eureka/apps/SHOP"))
            .json(&body)
            .send()
            .await
            .expect("register");
        assert_eq!(resp.status().as_u16(), 204);
    }
    let ids = || async {
        let body: Value = http
            .get(format!("{base}/eureka/apps/SHOP"))
            .header("Accept", "application/json")
            .send()
            .await
            .expect("app")
            .json()
            .await
            .unwrap_or(Value::Null);
        let mut ids: Vec<String> = body["application"]["instance"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter_map(|i| i["instanceId"].as_str().map(str::to_owned))
            .collect();
        ids.sort();
        ids
    };
    let eureka = format!("{base}/eureka");
    let (ok, lines, err) =
        purge(&["--sc-plugin", "eureka", "--sc-addr", &eureka, "--dry-run"]).await;
    assert!(ok, "{err}");
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(ids().await, ["c-1", "c-2", "n-1"]);
    let (ok, lines, err) = purge(&[
        "--sc-plugin",
        "eureka",
        "--sc-addr",
        &eureka,
        "--origin-cluster",
        "west",
    ])
    .await;
    assert!(ok, "{err}");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].starts_with("west\t") && lines[0].contains("\tc-2\t"),
        "{lines:?}"
    );
    assert_eq!(ids().await, ["c-1", "n-1"]);
    let (ok, _, err) = purge(&["--sc-plugin", "eureka", "--sc-addr", &eureka]).await;
    assert!(ok, "{err}");
    assert_eq!(ids().await, ["n-1"]);
}

#[tokio::test]
async fn purge_without_a_registry_address_or_with_an_unreachable_one_fails_clearly() {
    let (ok, _, err) = purge(&[]).await;
    assert!(!ok, "purge without --sc-addr succeeded");
    assert!(err.contains("--sc-addr"), "{err}");
    let dead = format!("http://127.0.0.1:{}", free_tcp_port());
    let (ok, _, err) = purge(&["--sc-addr", &dead]).await;
    assert!(!ok, "purge of an unreachable registry succeeded");
    assert!(err.contains("cannot list the registry"), "{err}");
}
