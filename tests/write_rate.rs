//! Issue 15, items 6 and 7, as real processes on loopback: a low `--registry-write-rate`
//! really throttles an import (the copies appear at the rate, never faster), and a Eureka
//! site's apps land in the tenant of `--eureka-domain-project` at a service-center site.

mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{
    daemon_args, eventually, free_tcp_port, free_udp_port, sc_add_instance, sc_create_service,
    sc_find_instances, Proc,
};

/// Services and instances per service registered at the origin.
const SERVICES: usize = 10;
const PER_SERVICE: usize = 10;
/// The importing site's write rate, writes per second, and its burst.
const RATE: f64 = 20.0;
const BURST: f64 = 1.0;

/// `daemon_args` with the tick set to `tick` seconds.
fn args_with_tick(mut args: Vec<String>, tick: &str) -> Vec<String> {
    if let Some(i) = args.iter().position(|a| a == "--ticker-interval") {
        args[i + 1] = tick.to_owned();
    }
    args
}

/// Copies of the origin's services at the core at `base`, all services together; `None`
/// while the core does not answer.
async fn copies_at(http: &reqwest::Client, base: &str) -> Option<usize> {
    let mut n = 0;
    for s in 0..SERVICES {
        n += sc_find_instances(http, base, "rate", &format!("svc-{s}"))
            .await?
            .len();
    }
    Some(n)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_low_write_rate_makes_copies_appear_at_that_rate_and_never_faster() {
    let dir = tempfile::tempdir().expect("tempdir");
    let http = reqwest::Client::new();
    let (a_core, b_core) = (free_tcp_port(), free_tcp_port());
    let (a_gossip, b_gossip) = (free_udp_port(), free_udp_port());
    let b_http = free_tcp_port();
    let a_base = format!("http://127.0.0.1:{a_core}");
    let b_base = format!("http://127.0.0.1:{b_core}");

    let mut a_args = daemon_args("a1", "site-a", a_gossip, free_tcp_port(), None);
    a_args.extend(["--builtin-addr".into(), format!("127.0.0.1:{a_core}")]);
    let a = Proc::spawn(
        dir.path(),
        "a1",
        std::path::Path::new(env!("CARGO_BIN_EXE_syncer")),
        &a_args,
        &[],
    );
    support::wait_for_core(&http, &a_base, "site a's core answers", &[&a]).await;
    for s in 0..SERVICES {
        let sid = sc_create_service(&http, &a_base, "rate", &format!("svc-{s}")).await;
        for i in 0..PER_SERVICE {
            sc_add_instance(&http, &a_base, &sid, 20_000 + (s * PER_SERVICE + i) as u16).await;
        }
    }

    // A 30 s tick: the copies' leases (4 ticks) need no heartbeat during the test, so every
    // token goes to the import.
    let mut b_args = args_with_tick(
        daemon_args("b1", "site-b", b_gossip, free_tcp_port(), Some(a_gossip)),
        "30",
    );
    b_args.extend([
        "--builtin-addr".into(),
        format!("127.0.0.1:{b_core}"),
        "--http-addr".into(),
        format!("127.0.0.1:{b_http}"),
        "--registry-write-rate".into(),
        "20".into(),
        "--registry-write-burst".into(),
        "1".into(),
    ]);
    let b = Proc::spawn(
        dir.path(),
        "b1",
        std::path::Path::new(env!("CARGO_BIN_EXE_syncer")),
        &b_args,
        &[],
    );

    // The last moment no copy existed: every registration happens after it.
    let mut none_since = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let asked = Instant::now();
        match copies_at(&http, &b_base).await {
            Some(0) | None => none_since = asked,
            Some(_) => break,
        }
        assert!(
            Instant::now() < deadline,
            "no copy reached site b\n{}\n{}",
            a.tail(30),
            b.tail(30)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // From then on, every count is within what the rate allows since `none_since` (plus the
    // burst and a margin), and the import finishes.
    let total = SERVICES * PER_SERVICE;
    let mut partial_counts = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let n = copies_at(&http, &b_base).await.unwrap_or(0);
        let allowed = RATE * none_since.elapsed().as_secs_f64() + BURST + 10.0;
        assert!(
            n as f64 <= allowed,
            "{n} copies {:?} after the last count of 0: more than {allowed:.0} at {RATE}/s\n{}",
            none_since.elapsed(),
            b.tail(30)
        );
        if n == total {
            break;
        }
        partial_counts.push(n);
        assert!(
            Instant::now() < deadline,
            "{n} of {total} copies after 90 s\n{}",
            b.tail(30)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Writes arrived over time, not in one batch.
    assert!(
        partial_counts.iter().any(|&n| n > 0 && n < total),
        "never saw a partial import: {partial_counts:?}"
    );
    // At 20/s, 100 registrations (and 10 services) took seconds of waiting for tokens.
    let metrics = http
        .get(format!("http://127.0.0.1:{b_http}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics body");
    let waited: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("syncer_registry_write_wait_seconds_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("syncer_registry_write_wait_seconds_total in /metrics");
    assert!(waited > 1.0, "writes waited only {waited} s for tokens");
}

/// Registers instance `id` of Eureka app `app` at the core at `base`; whether it answered
/// 204.
async fn eureka_register(http: &reqwest::Client, base: &str, app: &str, id: &str) -> bool {
    let body = json!({"instance": {
        "instanceId": id, "hostName": "host-1", "app": app,
        "ipAddr": "10.1.2.3", "status": "UP", "port": {"$": 8080, "@enabled": "true"},
        "dataCenterInfo": {"@class": "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo", "name": "MyOwn"}
    }});
    http.post(format!("{base}/eureka/apps/{app}"))
        .json(&body)
        .send()
        .await
        .is_ok_and(|r| r.status().as_u16() == 204)
}

/// The instances of `eureka`/`name` in `domain`/`project` at the service-center API at
/// `base`; `None` until it answers 200.
async fn find_in(
    http: &reqwest::Client,
    base: &str,
    domain: &str,
    project: &str,
    name: &str,
) -> Option<Vec<Value>> {
    support::sc_find_instances_in(http, base, (domain, project), "eureka", name).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_eureka_sites_apps_land_in_the_domain_and_project_it_names() {
    let dir = tempfile::tempdir().expect("tempdir");
    let http = reqwest::Client::new();
    let (eureka_port, sc_core) = (free_tcp_port(), free_tcp_port());
    let (e_gossip, s_gossip) = (free_udp_port(), free_udp_port());
    let eureka_base = format!("http://127.0.0.1:{eureka_port}");
    let sc_base = format!("http://127.0.0.1:{sc_core}");
    let registry = Proc::syncer(
        dir.path(),
        "eureka-registry",
        &[
            "servicecenter",
            "--listen",
            &format!("127.0.0.1:{eureka_port}"),
        ],
    );
    let mut e_args = daemon_args("e1", "eureka-site", e_gossip, free_tcp_port(), None);
    e_args.extend([
        "--sc-plugin".into(),
        "eureka".into(),
        "--sc-addr".into(),
        format!("{eureka_base}/eureka"),
        "--eureka-domain-project".into(),
        "a/b".into(),
    ]);
    let syncer = std::path::Path::new(env!("CARGO_BIN_EXE_syncer"));
    let e = Proc::spawn(dir.path(), "e1", syncer, &e_args, &[]);
    let mut s_args = daemon_args("s1", "sc-site", s_gossip, free_tcp_port(), Some(e_gossip));
    s_args.extend(["--builtin-addr".into(), format!("127.0.0.1:{sc_core}")]);
    let s = Proc::spawn(dir.path(), "s1", syncer, &s_args, &[]);

    eventually(
        Duration::from_secs(30),
        "the Eureka registry takes a registration",
        &[&registry],
        || async {
            eureka_register(&http, &eureka_base, "ORDERS", "orders-1")
                .await
                .then_some(())
        },
    )
    .await;
    let found = eventually(
        Duration::from_secs(60),
        "the copy in domain a, project b at the service-center site",
        &[&e, &s],
        || async {
            find_in(&http, &sc_base, "a", "b", "orders")
                .await
                .filter(|i| i.len() == 1)
        },
    )
    .await;
    assert_eq!(
        found[0]["endpoints"][0], "rest://10.1.2.3:8080",
        "{found:?}"
    );
    // And not in the default tenant.
    let default = find_in(&http, &sc_base, "default", "default", "orders")
        .await
        .unwrap_or_default();
    assert!(default.is_empty(), "a copy in default/default: {default:?}");
}

#[test]
fn a_bad_eureka_domain_project_is_a_config_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut p = Proc::syncer(
        dir.path(),
        "bad",
        &[
            "daemon",
            "--sc-plugin",
            "eureka",
            "--sc-addr",
            "http://127.0.0.1:1/eureka",
            "--eureka-domain-project",
            "just-a-domain",
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Ok(Some(status)) = p.child.try_wait() {
            break status;
        }
        assert!(Instant::now() < deadline, "still running: {}", p.tail(10));
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success(), "accepted a bad --eureka-domain-project");
    let log = p.tail(10);
    assert!(log.contains("--eureka-domain-project"), "{log}");
    p.kill9();
}
