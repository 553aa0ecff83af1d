//! Filters and dry run (issue 15, items 1 and 2), as real processes on loopback: two sites,
//! each a `syncer servicecenter` registry with a `syncer daemon` beside it (so a syncer can
//! restart while its registry and the copies in it stay).
//!
//! * an export exclude keeps a service at home while an unfiltered one crosses, and an
//!   import exclude on metadata keeps `env=dev` instances out while `env=prod` ones cross;
//! * an import exclude keeps a service out; restarted with the exclusion moved, the
//!   receiving syncer removes the copies it now excludes (one `filter` event each) and
//!   brings over the service no longer excluded;
//! * with `--dry-run` the same restart removes nothing, and the status API, `/metrics` and
//!   the events report the pending removals.

mod support;

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use support::{
    eventually, free_tcp_port, free_udp_port, get_json, metric_samples, metric_value, Proc,
};

/// One site: a registry process and a syncer daemon syncing it.
struct Site {
    node: String,
    cluster: String,
    registry: String,
    registry_port: u16,
    gossip_port: u16,
    rpc_port: u16,
    http: String,
    http_port: u16,
    join: Option<u16>,
}

impl Site {
    fn new(node: &str, cluster: &str, join: Option<u16>) -> Site {
        let registry_port = free_tcp_port();
        let http_port = free_tcp_port();
        Site {
            node: node.into(),
            cluster: cluster.into(),
            registry: format!("http://127.0.0.1:{registry_port}"),
            registry_port,
            gossip_port: free_udp_port(),
            rpc_port: free_tcp_port(),
            http: format!("http://127.0.0.1:{http_port}"),
            http_port,
            join,
        }
    }

    fn start_registry(&self, dir: &Path) -> Proc {
        Proc::syncer(
            dir,
            &format!("{}-registry", self.cluster),
            &[
                "servicecenter",
                "--listen",
                &format!("127.0.0.1:{}", self.registry_port),
            ],
        )
    }

    /// The daemon with `extra` flags. A 10 s tick: copies live 40 s without a heartbeat,
    /// longer than a restart (and than a dry run, which heartbeats nothing); changes cross
    /// over the export streams meanwhile, and a restart reconciles at once.
    fn start_daemon(&self, dir: &Path, extra: &[&str]) -> Proc {
        let mut args: Vec<String> = vec![
            "daemon".into(),
            "--sc-addr".into(),
            self.registry.clone(),
            "--node".into(),
            self.node.clone(),
            "--cluster-name".into(),
            self.cluster.clone(),
            "--bind-addr".into(),
            format!("127.0.0.1:{}", self.gossip_port),
            "--rpc-addr".into(),
            format!("127.0.0.1:{}", self.rpc_port),
            "--http-addr".into(),
            format!("127.0.0.1:{}", self.http_port),
            "--ticker-interval".into(),
            "10".into(),
        ];
        if let Some(port) = self.join {
            args.extend(["--join-addr".into(), format!("127.0.0.1:{port}")]);
        }
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Proc::syncer(dir, &self.node, &args)
    }
}

/// Registers an instance of `sid` at `registry` on `port` with metadata `properties`
/// (a 10-minute lease); returns its instanceId.
async fn register(
    http: &reqwest::Client,
    registry: &str,
    sid: &str,
    port: u16,
    properties: Value,
) -> String {
    let body: Value = http
        .post(format!(
            "{registry}/v4/default/registry/microservices/{sid}/instances"
        ))
        .header("X-Domain-Name", "default")
        .json(&serde_json::json!({"instance": {
            "hostName": format!("host-{port}"),
            "endpoints": [format!("rest://127.0.0.1:{port}")],
            "healthCheck": {"mode": "push", "interval": 300, "times": 1},
            "properties": properties,
        }}))
        .send()
        .await
        .expect("register")
        .json()
        .await
        .expect("register body");
    body["instanceId"].as_str().expect("instanceId").to_owned()
}

/// The ports (`rest://127.0.0.1:PORT`) of `shop/name`'s instances at `registry` (version
/// latest), sorted; empty when the service does not exist there (service-center's 400012);
/// `None` until it answers.
async fn ports(http: &reqwest::Client, registry: &str, name: &str) -> Option<Vec<u16>> {
    let resp = http
        .get(format!("{registry}/v4/default/registry/instances"))
        .query(&[
            ("appId", "shop"),
            ("serviceName", name),
            ("version", "latest"),
        ])
        .header("X-Domain-Name", "default")
        .send()
        .await
        .ok()?;
    let success = resp.status().is_success();
    let body: Value = resp.json().await.ok()?;
    if !success {
        return (body["errorCode"] == "400012").then(Vec::new);
    }
    let mut ports: Vec<u16> = body["instances"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|i| i["endpoints"][0].as_str())
        .filter_map(|e| e.rsplit(':').next()?.parse().ok())
        .collect();
    ports.sort_unstable();
    Some(ports)
}

/// Waits until `site`'s syncer leads and follows `peer`'s export stream.
async fn wait_following(http: &reqwest::Client, site: &Site, peer: &str, logs: &[&Proc]) {
    eventually(
        Duration::from_secs(30),
        &format!("{} follows {peer}", site.cluster),
        logs,
        || async {
            let status = get_json(http, &format!("{}/v1/syncer/status", site.http)).await?;
            let following = status["peers"]
                .as_array()?
                .iter()
                .any(|p| p["cluster"] == peer && p["state"] == "following");
            (following && status["is_leader"] == true).then_some(())
        },
    )
    .await;
}

/// The events `site`'s syncer recorded.
async fn events(http: &reqwest::Client, site: &Site) -> Vec<Value> {
    get_json(http, &format!("{}/v1/syncer/events?limit=1000", site.http))
        .await
        .and_then(|e| e["events"].as_array().cloned())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_exclude_keeps_a_service_home_and_an_import_exclude_on_metadata_keeps_dev_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path();
    let http = reqwest::Client::new();
    let a = Site::new("a1", "site-a", None);
    let b = Site::new("b1", "site-b", Some(a.gossip_port));
    let _registries = (a.start_registry(dir), b.start_registry(dir));
    let a_syncer = a.start_daemon(dir, &["--export-exclude", "default/default/*/secret-*"]);
    let b_syncer = b.start_daemon(dir, &["--import-exclude", "meta:env=dev"]);
    let logs = [&a_syncer, &b_syncer];
    wait_following(&http, &b, "site-a", &logs).await;

    // What must not cross is registered first: had it crossed, it would be there before
    // what crosses.
    let secret = support::sc_create_service(&http, &a.registry, "shop", "secret-keys").await;
    register(
        &http,
        &a.registry,
        &secret,
        7001,
        serde_json::json!({"env": "prod"}),
    )
    .await;
    let orders = support::sc_create_service(&http, &a.registry, "shop", "orders").await;
    register(
        &http,
        &a.registry,
        &orders,
        7002,
        serde_json::json!({"env": "dev"}),
    )
    .await;
    register(
        &http,
        &a.registry,
        &orders,
        7003,
        serde_json::json!({"env": "prod"}),
    )
    .await;
    register(&http, &a.registry, &orders, 7004, serde_json::json!({})).await;

    let crossed = eventually(
        Duration::from_secs(30),
        "orders' prod and unlabelled instances at site-b",
        &logs,
        || async {
            let p = ports(&http, &b.registry, "orders").await?;
            (p.len() >= 2).then_some(p)
        },
    )
    .await;
    assert_eq!(crossed, vec![7003, 7004], "env=dev must stay out");
    // A reconcile later, still so (the full reconcile filters as the stream does).
    let reconciles = get_json(&http, &format!("{}/v1/syncer/status", b.http))
        .await
        .and_then(|s| s["reconciles"].as_u64())
        .unwrap_or(0);
    eventually(
        Duration::from_secs(30),
        "a full reconcile at site-b",
        &logs,
        || async {
            let s = get_json(&http, &format!("{}/v1/syncer/status", b.http)).await?;
            (s["reconciles"].as_u64()? > reconciles).then_some(())
        },
    )
    .await;
    assert_eq!(
        ports(&http, &b.registry, "orders").await,
        Some(vec![7003, 7004])
    );
    assert_eq!(
        ports(&http, &b.registry, "secret-keys").await,
        Some(vec![]),
        "an export-excluded service crossed"
    );
    // Site-a does not even offer it: its export holds orders alone.
    let status = get_json(&http, &format!("{}/v1/syncer/status", a.http))
        .await
        .expect("status of site-a");
    assert_eq!(status["export"]["services"], 1, "{status}");
    assert_eq!(status["export"]["instances"], 3, "{status}");
    // The effective config shows the filters.
    let config = get_json(&http, &format!("{}/v1/syncer/config", b.http))
        .await
        .expect("config");
    let shown = serde_json::to_string(&config).expect("json");
    assert!(shown.contains("meta:env=dev"), "{config}");
    assert!(shown.contains("\"dry_run\":false"), "{config}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_exclude_keeps_a_service_out_and_a_restart_with_it_removes_the_copies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path();
    let http = reqwest::Client::new();
    let a = Site::new("a1", "site-a", None);
    let b = Site::new("b1", "site-b", Some(a.gossip_port));
    let _registries = (a.start_registry(dir), b.start_registry(dir));
    let a_syncer = a.start_daemon(dir, &[]);
    let mut b_syncer = b.start_daemon(dir, &["--import-exclude", "default/default/shop/secret-*"]);
    wait_following(&http, &b, "site-a", &[&a_syncer, &b_syncer]).await;

    let secret = support::sc_create_service(&http, &a.registry, "shop", "secret-keys").await;
    register(&http, &a.registry, &secret, 7001, serde_json::json!({})).await;
    let orders = support::sc_create_service(&http, &a.registry, "shop", "orders").await;
    register(&http, &a.registry, &orders, 7002, serde_json::json!({})).await;
    register(&http, &a.registry, &orders, 7003, serde_json::json!({})).await;
    eventually(
        Duration::from_secs(30),
        "orders at site-b",
        &[&a_syncer, &b_syncer],
        || async { (ports(&http, &b.registry, "orders").await? == [7002, 7003]).then_some(()) },
    )
    .await;
    assert_eq!(
        ports(&http, &b.registry, "secret-keys").await,
        Some(vec![]),
        "an import-excluded service crossed"
    );

    // Restarted with the exclusion moved from secret-keys to orders, while orders' copies
    // exist: they go, secret-keys comes.
    assert!(
        b_syncer.terminate(Duration::from_secs(15)),
        "site-b's syncer did not stop"
    );
    let b_syncer = b.start_daemon(dir, &["--import-exclude", "default/default/shop/orders"]);
    let logs = [&a_syncer, &b_syncer];
    eventually(
        Duration::from_secs(40),
        "orders' copies removed and secret-keys copied at site-b",
        &logs,
        || async {
            let orders = ports(&http, &b.registry, "orders").await?;
            let secret = ports(&http, &b.registry, "secret-keys").await?;
            (orders.is_empty() && secret == [7001]).then_some(())
        },
    )
    .await;
    let removed: Vec<Value> = events(&http, &b)
        .await
        .into_iter()
        .filter(|e| e["kind"] == "unregister")
        .collect();
    // One event per copy (a removal that races a full reconcile may be made, and recorded,
    // twice: removals are idempotent).
    let copies: std::collections::BTreeSet<&str> = removed
        .iter()
        .filter_map(|e| e["instance_id"].as_str())
        .collect();
    assert_eq!(copies.len(), 2, "one event per copy removed: {removed:?}");
    for e in &removed {
        assert_eq!(e["reason"], "filter", "{e}");
        assert_eq!(e["origin_cluster"], "site-a", "{e}");
        assert_eq!(e["service"], "default/default/shop/orders/1.0.0", "{e}");
        assert_eq!(e["dry_run"], false, "{e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_restart_with_an_exclusion_removes_nothing_and_reports_the_removals() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path();
    let http = reqwest::Client::new();
    let a = Site::new("a1", "site-a", None);
    let b = Site::new("b1", "site-b", Some(a.gossip_port));
    let _registries = (a.start_registry(dir), b.start_registry(dir));
    let a_syncer = a.start_daemon(dir, &[]);
    let mut b_syncer = b.start_daemon(dir, &[]);
    wait_following(&http, &b, "site-a", &[&a_syncer, &b_syncer]).await;
    let orders = support::sc_create_service(&http, &a.registry, "shop", "orders").await;
    register(&http, &a.registry, &orders, 7002, serde_json::json!({})).await;
    register(&http, &a.registry, &orders, 7003, serde_json::json!({})).await;
    eventually(
        Duration::from_secs(30),
        "orders at site-b",
        &[&a_syncer, &b_syncer],
        || async { (ports(&http, &b.registry, "orders").await? == [7002, 7003]).then_some(()) },
    )
    .await;

    assert!(
        b_syncer.terminate(Duration::from_secs(15)),
        "site-b's syncer did not stop"
    );
    let b_syncer = b.start_daemon(
        dir,
        &[
            "--dry-run",
            "--import-exclude",
            "default/default/shop/orders",
        ],
    );
    let logs = [&a_syncer, &b_syncer];
    // A new instance at the origin while in dry run: it would be registered, and is not.
    let payments = support::sc_create_service(&http, &a.registry, "shop", "payments").await;
    register(&http, &a.registry, &payments, 7004, serde_json::json!({})).await;
    let pending = eventually(
        Duration::from_secs(40),
        "site-b's status reports the pending writes",
        &logs,
        || async {
            let status = get_json(&http, &format!("{}/v1/syncer/status", b.http)).await?;
            let pending = status["pending"].clone();
            (status["dry_run"] == true && pending["unregister"] == 2 && pending["register"] == 1)
                .then_some((status["reconciles"].as_u64()?, pending))
        },
    )
    .await;
    let (reconciles, pending) = pending;
    let items = pending["items"].as_array().expect("items");
    assert_eq!(items.len(), 3, "{pending}");
    for item in items.iter().filter(|i| i["op"] == "unregister") {
        assert_eq!(item["reason"], "filter", "{item}");
        assert_eq!(item["origin_cluster"], "site-a", "{item}");
        assert_eq!(
            item["service"], "default/default/shop/orders/1.0.0",
            "{item}"
        );
        assert_eq!(
            item["instance_id"].as_str().map(str::len),
            Some(32),
            "{item}"
        );
    }
    assert!(
        items
            .iter()
            .any(|i| i["op"] == "register" && i["service"] == "default/default/shop/payments/1.0.0"),
        "{pending}"
    );

    // /metrics, through prometheus_client's parser.
    let text = http
        .get(format!("{}/metrics", b.http))
        .send()
        .await
        .expect("scrape")
        .text()
        .await
        .expect("metrics body");
    let samples = metric_samples(&text);
    assert_eq!(
        metric_value(&samples, "syncer_dry_run_pending", &[("op", "unregister")]),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        metric_value(&samples, "syncer_dry_run_pending", &[("op", "register")]),
        Some(1.0)
    );

    // Events: recorded once each, marked as not done.
    let recorded = events(&http, &b).await;
    let would_remove: Vec<&Value> = recorded
        .iter()
        .filter(|e| e["kind"] == "unregister" && e["reason"] == "filter")
        .collect();
    assert_eq!(would_remove.len(), 2, "{recorded:?}");
    assert!(
        recorded.iter().all(|e| e["dry_run"] == true),
        "{recorded:?}"
    );

    // Nothing was written: a full reconcile later the copies are all there, and the new
    // instance was not copied.
    eventually(
        Duration::from_secs(30),
        "another full reconcile at site-b",
        &logs,
        || async {
            let s = get_json(&http, &format!("{}/v1/syncer/status", b.http)).await?;
            (s["reconciles"].as_u64()? > reconciles).then_some(())
        },
    )
    .await;
    assert_eq!(
        ports(&http, &b.registry, "orders").await,
        Some(vec![7002, 7003]),
        "a dry run removed copies"
    );
    assert_eq!(
        ports(&http, &b.registry, "payments").await,
        Some(vec![]),
        "a dry run registered a copy"
    );
    assert_eq!(
        events(&http, &b).await.len(),
        recorded.len(),
        "a pending write was recorded again"
    );
    let text = http
        .get(format!("{}/metrics", b.http))
        .send()
        .await
        .expect("scrape")
        .text()
        .await
        .expect("metrics body");
    let samples = metric_samples(&text);
    for op in ["register", "unregister", "heartbeat", "ensure_service"] {
        for result in ["ok", "not_found", "error"] {
            assert_eq!(
                metric_value(
                    &samples,
                    "syncer_registry_writes_total",
                    &[("op", op), ("result", result)]
                ),
                None,
                "a dry run wrote ({op}, {result})"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_with_a_new_filter_applies_it_and_a_broken_file_keeps_the_old_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path();
    let http = reqwest::Client::new();
    let a = Site::new("a1", "site-a", None);
    let b = Site::new("b1", "site-b", Some(a.gossip_port));
    let _registries = (a.start_registry(dir), b.start_registry(dir));
    let config = dir.join("site-b.yaml");
    let filter = |service: &str| {
        format!("filters:\n  import:\n    exclude: [\"default/default/shop/{service}\"]\n")
    };
    std::fs::write(&config, filter("secret-*")).expect("write config");
    let a_syncer = a.start_daemon(dir, &[]);
    let b_syncer = b.start_daemon(dir, &["--config", &config.display().to_string()]);
    let logs = [&a_syncer, &b_syncer];
    wait_following(&http, &b, "site-a", &logs).await;

    let secret = support::sc_create_service(&http, &a.registry, "shop", "secret-keys").await;
    register(&http, &a.registry, &secret, 7001, serde_json::json!({})).await;
    let orders = support::sc_create_service(&http, &a.registry, "shop", "orders").await;
    register(&http, &a.registry, &orders, 7002, serde_json::json!({})).await;
    eventually(
        Duration::from_secs(30),
        "orders at site-b",
        &logs,
        || async { (ports(&http, &b.registry, "orders").await? == [7002]).then_some(()) },
    )
    .await;
    assert_eq!(ports(&http, &b.registry, "secret-keys").await, Some(vec![]));

    // SIGHUP with the exclusion moved to orders: its copy goes, secret-keys comes, without
    // a restart.
    std::fs::write(&config, filter("orders")).expect("write config");
    support::sighup(&b_syncer);
    eventually(
        Duration::from_secs(30),
        "the new filter applied at site-b",
        &logs,
        || async {
            let orders = ports(&http, &b.registry, "orders").await?;
            let secret = ports(&http, &b.registry, "secret-keys").await?;
            (orders.is_empty() && secret == [7001]).then_some(())
        },
    )
    .await;
    let config_shown = get_json(&http, &format!("{}/v1/syncer/config", b.http))
        .await
        .expect("config");
    assert_eq!(config_shown["reload"]["revision"], 1, "{config_shown}");
    assert!(
        config_shown["reload"]["last"]["applied"]
            .to_string()
            .contains("filters"),
        "{config_shown}"
    );
    assert!(
        events(&http, &b)
            .await
            .iter()
            .any(|e| e["reason"] == "filter" && e["service"] == "default/default/shop/orders/1.0.0"),
        "no filter event for orders' copy"
    );

    // A broken file is refused, says why, and the filter in use stays.
    std::fs::write(
        &config,
        "filters:\n  import:\n    exclude: [\"default/default/[\"]\n",
    )
    .expect("write config");
    let refused = eventually(
        Duration::from_secs(10),
        "the broken filter refused",
        &logs,
        || async {
            let c = get_json(&http, &format!("{}/v1/syncer/config", b.http)).await?;
            (c["reload"]["last"]["ok"] == false).then_some(c)
        },
    )
    .await;
    assert!(
        refused["reload"]["last"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("default/default/[")),
        "{refused}"
    );
    assert!(
        refused.to_string().contains("default/default/shop/orders"),
        "the filter in use is still shown: {refused}"
    );
    register(&http, &a.registry, &orders, 7003, serde_json::json!({})).await;
    register(&http, &a.registry, &secret, 7004, serde_json::json!({})).await;
    eventually(
        Duration::from_secs(30),
        "the new secret-keys instance crosses",
        &logs,
        || async {
            (ports(&http, &b.registry, "secret-keys").await? == [7001, 7004]).then_some(())
        },
    )
    .await;
    assert_eq!(ports(&http, &b.registry, "orders").await, Some(vec![]));
}
