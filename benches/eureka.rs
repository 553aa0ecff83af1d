//! Benchmark of the built-in core's Eureka reads (not a test; prints figures): how fast
//! `GET /eureka/apps` renders the whole registry, as XML (what py-eureka-client reads) and as
//! JSON, in process through the router (no socket, no gzip).
//!
//! ```sh
//! cargo bench --bench eureka                          # 1,000 apps x 10 instances
//! cargo bench --bench eureka -- --apps 100 --instances 10 --rounds 50
//! ```
//!
//! Setup registers `--apps` × `--instances` instances through `POST /eureka/apps/{APP}`,
//! each with three metadata entries and the usual URLs. Each round is one full `GET`:
//! the delta sync, the instance views and the rendering. Reported per format: the document
//! size, the median and fastest time per document and the throughput over `--rounds` rounds; and, as the
//! baseline, `GET /eureka/vips/none`, which builds the same views and renders nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use syncer::servicecenter::{router, Core};
use tower::ServiceExt;

/// Command-line settings.
#[derive(Debug, Clone)]
struct Settings {
    apps: usize,
    instances: usize,
    rounds: u32,
}

fn settings() -> Settings {
    let mut s = Settings {
        apps: 1_000,
        instances: 10,
        rounds: 20,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || it.next().cloned().unwrap_or_default();
        match a.as_str() {
            "--apps" => s.apps = val().parse().expect("--apps N"),
            "--instances" => s.instances = val().parse().expect("--instances N"),
            "--rounds" => s.rounds = val().parse().expect("--rounds N"),
            _ => {} // cargo passes --bench
        }
    }
    s
}

/// One request through the router: (status, body).
async fn call(app: &axum::Router, req: Request<Body>) -> (StatusCode, bytes::Bytes) {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    (status, resp.into_body().collect().await.unwrap().to_bytes())
}

fn register_body(app: &str, i: usize) -> String {
    let ip = format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255);
    let base = format!("http://{ip}:8080");
    serde_json::json!({"instance": {
        "instanceId": format!("{ip}:{app}:8080"), "hostName": ip, "app": app, "ipAddr": ip,
        "status": "UP", "port": {"$": 8080, "@enabled": "true"},
        "securePort": {"$": 443, "@enabled": "false"},
        "dataCenterInfo": {"@class": "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo",
            "name": "MyOwn"},
        "leaseInfo": {"renewalIntervalInSecs": 30, "durationInSecs": 3600},
        "metadata": {"zone": "z1", "management.port": "9090", "version_tag": "v1"},
        "homePageUrl": format!("{base}/"), "statusPageUrl": format!("{base}/info"),
        "healthCheckUrl": format!("{base}/health"), "vipAddress": app.to_lowercase(),
        "secureVipAddress": app.to_lowercase()
    }})
    .to_string()
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let s = settings();
    let app = router(Core::new());
    let started = Instant::now();
    for a in 0..s.apps {
        let name = format!("APP-{a}");
        for i in 0..s.instances {
            let req = Request::post(format!("/eureka/apps/{name}"))
                .header("content-type", "application/json")
                .body(Body::from(register_body(&name, a * s.instances + i)))
                .unwrap();
            let (status, body) = call(&app, req).await;
            assert_eq!(status, StatusCode::NO_CONTENT, "{body:?}");
        }
    }
    println!(
        "registered {} apps x {} instances in {:.1} s",
        s.apps,
        s.instances,
        started.elapsed().as_secs_f64()
    );
    println!("| document | bytes | median per GET | fastest | MB/s at the median |");
    println!("|---|---|---|---|---|");
    // `/vips/none` builds every view as `/apps` does and renders an empty document: the
    // baseline to subtract for the rendering alone.
    for (format, uri, accept) in [
        ("xml", "/eureka/apps", "application/xml"),
        ("json", "/eureka/apps", "application/json"),
        ("views only", "/eureka/vips/none", "application/xml"),
    ] {
        let get = || {
            Request::get(uri)
                .header("accept", accept)
                .body(Body::empty())
                .unwrap()
        };
        // One warm-up round, which also brings the delta queue up to date.
        let (status, body) = call(&app, get()).await;
        assert_eq!(status, StatusCode::OK);
        let mut times = Vec::new();
        for _ in 0..s.rounds.max(1) {
            let started = Instant::now();
            let (_, body) = call(&app, get()).await;
            times.push(started.elapsed());
            std::hint::black_box(body);
        }
        times.sort();
        let median = times[times.len() / 2];
        println!(
            "| {format} | {} | {:.1} ms | {:.1} ms | {:.0} |",
            body.len(),
            median.as_secs_f64() * 1e3,
            times[0].as_secs_f64() * 1e3,
            body.len() as f64 / 1e6 / median.as_secs_f64()
        );
    }
}
