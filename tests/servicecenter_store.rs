//! The built-in core's storage adaptors with real stores: the embedded store across a
//! restart of the `syncer servicecenter` process, and two cores sharing one real etcd
//! (writes visible at the other within a second; etcd lease expiry seen by both).
#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};
use support::{free_tcp_port, open_core, Etcd, Proc, Store};
use syncer::servicecenter::{serve, Core};
use tokio_util::sync::CancellationToken;

/// A v4 client of one core.
struct Sc {
    base: String,
    http: reqwest::Client,
}

impl Sc {
    fn new(base: String) -> Sc {
        Sc {
            base,
            http: reqwest::Client::new(),
        }
    }

    async fn send(&self, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req.json(&b);
        }
        match req.send().await {
            Ok(resp) => {
                let status = resp.status();
                let text = resp.text().await.unwrap_or_default();
                (status, serde_json::from_str(&text).unwrap_or(Value::Null))
            }
            Err(_) => (StatusCode::SERVICE_UNAVAILABLE, Value::Null),
        }
    }

    async fn create_service(&self, name: &str) -> String {
        let (s, v) = self
            .send(
                "POST",
                "/v4/default/registry/microservices",
                Some(json!({"service": {"appId": "app", "serviceName": name, "version": "1.0.0"}})),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v["serviceId"].as_str().unwrap().to_string()
    }

    /// Registers `id` with a lease of `interval × (times + 1)` seconds.
    async fn register(&self, sid: &str, id: &str, interval: u64, times: u64) {
        let (s, v) = self
            .send(
                "POST",
                &format!("/v4/default/registry/microservices/{sid}/instances"),
                Some(json!({"instance": {"instanceId": id, "hostName": "h",
                    "endpoints": ["rest://127.0.0.1:8080"],
                    "healthCheck": {"mode": "push", "interval": interval, "times": times}}})),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }

    async fn heartbeat(&self, sid: &str, id: &str) -> StatusCode {
        self.send(
            "PUT",
            &format!("/v4/default/registry/microservices/{sid}/instances/{id}/heartbeat"),
            None,
        )
        .await
        .0
    }

    /// The instance ids `find` answers (empty on any error).
    async fn found(&self, name: &str) -> Vec<String> {
        let (_, v) = self
            .send(
                "GET",
                &format!(
                    "/v4/default/registry/instances?appId=app&serviceName={name}&version=latest"
                ),
                None,
            )
            .await;
        let mut ids: Vec<String> = v["instances"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|i| i["instanceId"].as_str().unwrap_or("").to_string())
                    .collect()
            })
            .unwrap_or_default();
        ids.sort();
        ids
    }
}

/// Polls `cond` every 20 ms until it holds; panics after `limit`.
async fn within<F, Fut>(limit: Duration, what: &str, mut cond: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if cond().await {
            return started.elapsed();
        }
        assert!(started.elapsed() < limit, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Serves `core` on a loopback port; stopped when the token is cancelled.
async fn serve_core(core: Core) -> (Sc, CancellationToken) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    tokio::spawn(serve(listener, core, stop.clone()));
    (Sc::new(base), stop)
}

#[tokio::test]
async fn two_cores_on_one_etcd_see_each_others_writes_within_a_second() {
    let a = open_core(Store::Etcd).await;
    let b = Core::open(a.config.clone()).await.unwrap();
    let (sc_a, stop_a) = serve_core(a.core.clone()).await;
    let (sc_b, stop_b) = serve_core(b).await;

    let sid = sc_a.create_service("shared").await;
    sc_a.register(&sid, "i1", 30, 3).await;
    let took = within(
        Duration::from_secs(1),
        "B finds the instance registered at A",
        || async { sc_b.found("shared").await == ["i1"] },
    )
    .await;
    eprintln!("register at A visible at B after {took:?}");

    // The other way round, and a heartbeat at B of A's instance.
    sc_b.register(&sid, "i2", 30, 3).await;
    within(
        Duration::from_secs(1),
        "A finds the instance registered at B",
        || async { sc_a.found("shared").await == ["i1", "i2"] },
    )
    .await;
    assert_eq!(sc_b.heartbeat(&sid, "i1").await, StatusCode::OK);

    let (s, _) = sc_a
        .send(
            "DELETE",
            &format!("/v4/default/registry/microservices/{sid}/instances/i1"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    within(
        Duration::from_secs(1),
        "the instance unregistered at A is gone at B",
        || async { sc_b.found("shared").await == ["i2"] },
    )
    .await;

    // Service deletion (force) crosses too.
    let (s, _) = sc_b
        .send(
            "DELETE",
            &format!("/v4/default/registry/microservices/{sid}?force=true"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    within(
        Duration::from_secs(1),
        "the service deleted at B is gone at A",
        || async {
            sc_a.send(
                "GET",
                &format!("/v4/default/registry/microservices/{sid}"),
                None,
            )
            .await
            .0 == StatusCode::BAD_REQUEST
        },
    )
    .await;
    stop_a.cancel();
    stop_b.cancel();
}

/// The watch brings back a core's own writes; an echo older than a local change must not
/// undo it. Registering and unregistering within one write interval (10 ms) used to show
/// the unregistered instance again for a moment when its registration's echo arrived.
#[tokio::test]
async fn an_etcd_core_never_steps_back_to_its_own_older_writes() {
    let a = open_core(Store::Etcd).await;
    let (sc, stop) = serve_core(a.core.clone()).await;
    let sid = sc.create_service("echo").await;
    let mut stepped_back = Vec::new();
    for round in 0..40 {
        let id = format!("i{round}");
        sc.register(&sid, &id, 30, 3).await;
        // Let some rounds' registration reach etcd first, others not.
        tokio::time::sleep(Duration::from_millis(round % 4 * 4)).await;
        let (s, _) = sc
            .send(
                "DELETE",
                &format!("/v4/default/registry/microservices/{sid}/instances/{id}"),
                None,
            )
            .await;
        assert_eq!(s, StatusCode::OK);
        // Watch for 60 ms whether the instance comes back.
        let until = Instant::now() + Duration::from_millis(60);
        while Instant::now() < until {
            if !sc.found("echo").await.is_empty() {
                stepped_back.push(round);
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    assert!(
        stepped_back.is_empty(),
        "unregistered instances came back in rounds {stepped_back:?}"
    );
    // And the store agrees: a second core loading from etcd sees no instance.
    let b = Core::open(a.config.clone()).await.unwrap();
    let (sc_b, stop_b) = serve_core(b).await;
    assert!(sc_b.found("echo").await.is_empty());
    stop.cancel();
    stop_b.cancel();
}

#[tokio::test]
async fn etcd_lease_expiry_removes_the_instance_at_both_cores_and_any_core_keeps_it_alive() {
    let a = open_core(Store::Etcd).await;
    let b = Core::open(a.config.clone()).await.unwrap();
    let (sc_a, stop_a) = serve_core(a.core.clone()).await;
    let (sc_b, stop_b) = serve_core(b).await;
    let sid = sc_a.create_service("leased").await;
    // A 2 s lease (interval 1, times 1), registered at A, kept alive by heartbeats at B.
    sc_a.register(&sid, "short", 1, 1).await;
    within(Duration::from_secs(1), "B sees the instance", || async {
        sc_b.found("leased").await == ["short"]
    })
    .await;
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        assert_eq!(sc_b.heartbeat(&sid, "short").await, StatusCode::OK);
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    assert_eq!(
        sc_a.found("leased").await,
        ["short"],
        "heartbeats at B keep the etcd lease alive for everyone"
    );
    // No more heartbeats: etcd expires the lease, both caches drop the instance.
    let stopped = Instant::now();
    within(
        Duration::from_secs(6),
        "the expired instance is gone at A and B",
        || async { sc_a.found("leased").await.is_empty() && sc_b.found("leased").await.is_empty() },
    )
    .await;
    assert!(
        stopped.elapsed() >= Duration::from_millis(1500),
        "expired before its lease ran out"
    );
    stop_a.cancel();
    stop_b.cancel();
}

/// `syncer servicecenter` on `port` with its embedded store in `data`.
fn start_core_process(dir: &std::path::Path, port: u16, data: &std::path::Path) -> Proc {
    Proc::syncer(
        dir,
        "core",
        &[
            "servicecenter",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
            &data.to_string_lossy(),
        ],
    )
}

#[tokio::test]
async fn embedded_store_keeps_services_instances_and_remaining_lease_time_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = free_tcp_port();
    let sc = Sc::new(format!("http://127.0.0.1:{port}"));
    let mut core = start_core_process(dir.path(), port, &data);
    within(Duration::from_secs(20), "the core answers", || async {
        sc.send("GET", "/v4/default/registry/version", None).await.0 == StatusCode::OK
    })
    .await;

    let sid = sc.create_service("kept").await;
    let t0 = Instant::now();
    sc.register(&sid, "long", 30, 3).await; // 120 s lease
    sc.register(&sid, "mid", 3, 1).await; // 6 s lease
    sc.register(&sid, "short", 1, 1).await; // 2 s lease
    assert_eq!(sc.heartbeat(&sid, "long").await, StatusCode::OK);
    assert!(core.terminate(Duration::from_secs(10)), "clean stop");

    // Down for longer than `short`'s lease.
    while t0.elapsed() < Duration::from_millis(2500) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut core = start_core_process(dir.path(), port, &data);
    within(
        Duration::from_secs(20),
        "the restarted core answers",
        || async { sc.send("GET", "/v4/default/registry/version", None).await.0 == StatusCode::OK },
    )
    .await;
    let (s, v) = sc
        .send(
            "GET",
            &format!("/v4/default/registry/microservices/{sid}"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "the service survives: {v}");
    assert_eq!(v["service"]["serviceName"], "kept");
    assert_eq!(
        sc.found("kept").await,
        ["long", "mid"],
        "instances with lease left survive; the one whose lease ran out while down is gone\n{}",
        core.tail(20)
    );
    // `mid` keeps its remaining time (expires ~6 s after registration), not a fresh 6 s.
    within(Duration::from_secs(8), "mid expires", || async {
        !sc.found("kept").await.contains(&"mid".to_string())
    })
    .await;
    let gone_after = t0.elapsed();
    assert!(
        gone_after >= Duration::from_millis(5500) && gone_after < Duration::from_millis(8500),
        "mid expired {gone_after:?} after registration, expected ~6 s (its remaining time)"
    );

    // A hard kill shortly after a write keeps it too (written within milliseconds).
    sc.register(&sid, "late", 30, 3).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    core.kill9();
    let _core = start_core_process(dir.path(), port, &data);
    within(
        Duration::from_secs(20),
        "the core answers after kill -9",
        || async { sc.found("kept").await == ["late", "long"] },
    )
    .await;
}

#[tokio::test]
async fn a_second_core_on_the_same_data_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = syncer::servicecenter::store::StoreConfig::Embedded {
        data_dir: dir.path().to_owned(),
    };
    let _first = Core::open(config.clone()).await.unwrap();
    let second = Core::open(config).await;
    assert!(second.is_err(), "two cores on one redb file");
}

#[test]
fn etcd_starter_gives_a_working_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let etcd = Etcd::start(dir.path());
    assert!(etcd.endpoint.starts_with("http://127.0.0.1:"));
    let out = std::process::Command::new("etcdctl")
        .args(["--endpoints", &etcd.endpoint, "put", "/k", "v"])
        .env("ETCDCTL_API", "3")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}
