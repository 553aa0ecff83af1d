//! Issue 10, item 1: an XML document nested 10,000 deep (70 KB) used to overflow the stack
//! and abort the whole process, whether a client sent it to the built-in core's Eureka API
//! or a Eureka registry served it to the `eureka` plugin. Now it is refused as nested deeper
//! than `syncer_wire_eureka::xml::MAX_DEPTH` (64) elements, and the process stays up.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use support::{eventually, free_tcp_port, free_udp_port, Proc};
use syncer_plugin_api::{Error, Plugin};
use syncer_plugin_eureka::{Config, EurekaPlugin};
use syncer_wire_eureka::xml::MAX_DEPTH;

/// How deep the attack nests.
const ATTACK_DEPTH: usize = 10_000;

/// What the core and the plugin say about it.
const TOO_DEEP: &str = "XML nested deeper than 64 elements";

/// `<a>` nested [`ATTACK_DEPTH`] deep: 70 KB.
fn deep_xml() -> String {
    format!(
        "{}{}",
        "<a>".repeat(ATTACK_DEPTH),
        "</a>".repeat(ATTACK_DEPTH)
    )
}

/// A fake Eureka registry on 127.0.0.1 that answers every request with [`deep_xml`] as
/// `application/xml` (whatever the request's `Accept`); returns its address and how many
/// requests it has answered.
async fn deep_xml_registry() -> (SocketAddr, Arc<AtomicUsize>) {
    let served = Arc::new(AtomicUsize::new(0));
    let body = deep_xml();
    let counter = served.clone();
    let app = axum::Router::new().fallback(move || {
        let body = body.clone();
        let counter = counter.clone();
        async move {
            counter.fetch_add(1, Ordering::Relaxed);
            (
                [(axum::http::header::CONTENT_TYPE, "application/xml")],
                body,
            )
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the fake registry");
    let addr = listener.local_addr().expect("fake registry address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, served)
}

#[tokio::test]
async fn the_built_in_core_answers_400_to_xml_nested_ten_thousand_deep_and_stays_up() {
    assert_eq!(MAX_DEPTH, 64);
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_tcp_port();
    let base = format!("http://127.0.0.1:{port}");
    let data = dir.path().join("data");
    let mut core = Proc::syncer(
        dir.path(),
        "core",
        &[
            "servicecenter",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
            &data.to_string_lossy(),
        ],
    );
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("http client");
    let apps_answer = || async {
        let resp = http.get(format!("{base}/eureka/apps")).send().await.ok()?;
        (resp.status() == StatusCode::OK).then_some(())
    };
    eventually(
        Duration::from_secs(20),
        "the core answers GET /eureka/apps",
        &[&core],
        apps_answer,
    )
    .await;

    let body = deep_xml();
    for content_type in [None, Some("application/xml")] {
        let mut request = http
            .post(format!("{base}/eureka/apps/X"))
            .body(body.clone());
        if let Some(ct) = content_type {
            request = request.header("Content-Type", ct);
        }
        let resp = request.send().await.expect("the core answers the attack");
        let status = resp.status();
        let text = resp.text().await.expect("the 400's body");
        assert_eq!(status, StatusCode::BAD_REQUEST, "{content_type:?}: {text}");
        assert_eq!(
            text,
            format!("Cannot parse XML body: {TOO_DEEP}"),
            "{content_type:?}"
        );
    }

    let resp = http
        .get(format!("{base}/eureka/apps"))
        .send()
        .await
        .expect("the core still answers");
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        core.child.try_wait().expect("process status").is_none(),
        "the core exited:\n{}",
        core.tail(40)
    );
}

#[tokio::test]
async fn the_eureka_plugin_refuses_a_registry_answer_nested_ten_thousand_deep() {
    let (addr, served) = deep_xml_registry().await;
    let plugin = EurekaPlugin::new(Config {
        endpoints: vec![format!("http://{addr}/eureka")],
        request_timeout: Duration::from_secs(5),
        ..Default::default()
    })
    .expect("plugin builds");
    for _ in 0..2 {
        match plugin.list().await {
            Err(Error::Malformed(message)) => {
                assert!(message.contains(TOO_DEEP), "{message}");
                assert!(message.starts_with("list apps: "), "{message}");
            }
            other => panic!("expected a malformed-response error, got {other:?}"),
        }
    }
    assert_eq!(plugin.fetch_counts(), (0, 0));
    assert!(
        served.load(Ordering::Relaxed) >= 2,
        "the registry was asked"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_whose_eureka_registry_answers_ten_thousand_deep_logs_the_error_and_stays_up() {
    let (addr, served) = deep_xml_registry().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut daemon = Proc::syncer(
        dir.path(),
        "daemon",
        &[
            "daemon",
            "--sc-plugin",
            "eureka",
            "--sc-addr",
            &format!("http://{addr}/eureka"),
            "--node",
            "deep",
            "--bind-addr",
            &format!("127.0.0.1:{}", free_udp_port()),
            "--rpc-addr",
            &format!("127.0.0.1:{}", free_tcp_port()),
            "--ticker-interval",
            "1",
        ],
    );
    // The exporter lists the registry again after a failure: two failed listings show the
    // daemon lived through the first.
    let log = daemon.log.clone();
    eventually(
        Duration::from_secs(30),
        "the daemon logs two failed listings of the too-deep registry answer",
        &[&daemon],
        || {
            let log = log.clone();
            async move {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                let failures = text
                    .lines()
                    .filter(|l| l.contains("listing the local registry failed"))
                    .filter(|l| l.contains(TOO_DEEP))
                    .count();
                (failures >= 2).then_some(())
            }
        },
    )
    .await;
    assert!(served.load(Ordering::Relaxed) >= 2);
    assert!(
        daemon.child.try_wait().expect("process status").is_none(),
        "the daemon exited:\n{}",
        daemon.tail(40)
    );
    let text = std::fs::read_to_string(&daemon.log).expect("daemon log");
    assert!(!text.contains("overflowed its stack"), "{text}");
}
