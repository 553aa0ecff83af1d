//! The built-in core's admin dump under load (issue 13, finding 7): a dump is a snapshot of
//! the registry taken under the lock and streamed without it, so writes go on while a
//! reader is slow, the reader still gets the registry as it was at the dump's revision, and
//! a half-read dump costs the server a chunk, not the whole reply.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use syncer::servicecenter::serve;
use tokio_util::sync::CancellationToken;

const P: &str = "/v4/default/registry";

/// Services in the registry, each with one instance of [`PROPERTY_BYTES`] of properties:
/// about 25 MB of dump, more than loopback's socket buffers hold, so a reader that stops
/// reading stops the dump half-way.
const SERVICES: usize = 1_500;
const PROPERTY_BYTES: usize = 16 * 1024;

/// This process's resident set size (the core runs in it), bytes.
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kib * 1024
}

async fn ok(http: &reqwest::Client, method: reqwest::Method, url: &str, body: Value) -> Value {
    let resp = http.request(method, url).json(&body).send().await.unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    assert!(status.is_success(), "{url}: {status} {text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

async fn create_with_instance(http: &reqwest::Client, base: &str, name: &str) -> String {
    let blob = "x".repeat(PROPERTY_BYTES);
    let body = json!({
        "service": {"serviceName": name, "appId": "dump", "version": "1.0.0"},
        "instances": [{
            "hostName": name,
            "endpoints": [format!("rest://127.0.0.1:8080/{name}")],
            "properties": {"blob": blob},
        }],
    });
    let r = ok(
        http,
        reqwest::Method::POST,
        &format!("{base}{P}/microservices"),
        body,
    )
    .await;
    r["serviceId"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_13_7_a_dump_is_a_snapshot_streamed_while_writes_go_on() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let stop = CancellationToken::new();
    let core = support::open_core(support::Store::Memory).await;
    tokio::spawn(serve(listener, core.core.clone(), stop.clone()));
    let http = reqwest::Client::new();
    let mut ids = Vec::new();
    for i in 0..SERVICES {
        ids.push(create_with_instance(&http, &base, &format!("svc-{i:05}")).await);
    }

    // A reader that takes the head and one chunk, then stops reading.
    let rss_before = rss_bytes();
    let mut dump = reqwest::Client::new()
        .get(format!("{base}/v4/default/admin/dump"))
        .send()
        .await
        .unwrap();
    assert!(dump.status().is_success());
    let revision: u64 = dump.headers()["x-resource-revision"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let mut text = dump.chunk().await.unwrap().unwrap().to_vec();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Streamed from the snapshot: the server holds a chunk, not the ~25 MB reply (a dump
    // written whole into one buffer grew this process by more than 25 MB).
    let grown = rss_bytes().saturating_sub(rss_before);
    assert!(
        grown < 12 << 20,
        "a half-read dump grew the server by {} MiB",
        grown >> 20
    );

    // Writes while the dump is half-read: each answers at once (the lock is free).
    let started = Instant::now();
    let late = create_with_instance(&http, &base, "late").await;
    let gone = &ids[0];
    ok(
        &http,
        reqwest::Method::DELETE,
        &format!("{base}{P}/microservices/{gone}?force=true"),
        Value::Null,
    )
    .await;
    let writes = started.elapsed();
    assert!(
        writes < Duration::from_secs(10),
        "two writes took {writes:?} while a dump was half-read"
    );

    // The rest of the dump: the registry as it was at `revision`.
    while let Some(chunk) = dump.chunk().await.unwrap() {
        text.extend_from_slice(&chunk);
    }
    let dump: Value = serde_json::from_slice(&text).unwrap();
    let services = dump["cache"]["services"].as_array().unwrap();
    let instances = dump["cache"]["instances"].as_array().unwrap();
    assert_eq!((services.len(), instances.len()), (SERVICES, SERVICES));
    let has = |id: &str| services.iter().any(|s| s["value"]["serviceId"] == id);
    assert!(
        has(gone),
        "the service deleted after the dump began is in it"
    );
    assert!(
        !has(&late),
        "the service created after the dump began is not"
    );
    assert!(services.iter().all(|s| s["rev"] == revision));
    let sorted: Vec<&str> = services
        .iter()
        .map(|s| s["value"]["serviceId"].as_str().unwrap())
        .collect();
    assert!(
        sorted.windows(2).all(|w| w[0] < w[1]),
        "ordered by serviceId"
    );
    let blob = &instances[1]["value"]["properties"]["blob"];
    assert_eq!(blob.as_str().map(str::len), Some(PROPERTY_BYTES));

    // And the change log from the dump's revision has what the dump missed.
    let changes = ok(
        &http,
        reqwest::Method::GET,
        &format!("{base}/v4/default/admin/changes?since={revision}"),
        Value::Null,
    )
    .await;
    assert_eq!(changes["removedServices"], json!([gone]));
    assert_eq!(changes["services"][0]["value"]["serviceId"], late.as_str());
    assert_eq!(changes["instances"].as_array().map(Vec::len), Some(1));
    stop.cancel();
}
