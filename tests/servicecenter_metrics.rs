//! Issue 14, items 3 and 7: the built-in core's `/metrics` with service-center's metric names
//! and its status page at `/`, against a real `syncer servicecenter` process on loopback.
//! The scrape is parsed by Python's `prometheus_client` (the venv of `scripts/test.sh`):
//! its Prometheus text parser for the values, and its strict OpenMetrics parser for the
//! format the core declares.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeSet;
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use support::{eventually, free_tcp_port, Proc};

const ROOT_PW: &str = "Root-pass-1";
const HEARTBEAT_API: &str =
    "/v4/{project}/registry/microservices/{service_id}/instances/{instance_id}/heartbeat";

/// A `syncer servicecenter` process with `extra` flags; killed when dropped.
struct Core {
    _proc: Proc,
    listen: String,
    base: String,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Core {
    async fn start(extra: &[&str]) -> Core {
        let dir = tempfile::tempdir().unwrap();
        let listen = format!("127.0.0.1:{}", free_tcp_port());
        let pw = dir.path().join("root-password");
        std::fs::write(&pw, format!("{ROOT_PW}\n")).unwrap();
        let mut args = vec!["servicecenter", "--listen", &listen];
        let pw = pw.to_str().unwrap().to_owned();
        if extra.contains(&"--rbac") {
            args.extend(["--rbac-root-password-file", &pw]);
        }
        args.extend_from_slice(extra);
        let proc = Proc::syncer(dir.path(), "core", &args);
        let base = format!("http://{listen}");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap();
        let version = format!("{base}/v4/default/registry/version");
        eventually(
            Duration::from_secs(60),
            "the core answers",
            &[&proc],
            || {
                let req = http.get(&version).send();
                async move { req.await.ok().filter(|r| r.status().is_success()) }
            },
        )
        .await;
        Core {
            _proc: proc,
            listen,
            base,
            http,
            _dir: dir,
        }
    }

    /// `method path` in domain `domain` with a JSON body: (status, JSON or text).
    async fn send(
        &self,
        domain: Option<&str>,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(d) = domain {
            req = req.header("X-Domain-Name", d);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn create_service(&self, name: &str) -> String {
        let (s, v) = self
            .send(
                None,
                reqwest::Method::POST,
                "/v4/default/registry/microservices",
                Some(json!({"service": {"appId": "app", "serviceName": name, "version": "1.0.0"}})),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v["serviceId"].as_str().unwrap().to_owned()
    }

    async fn register(&self, sid: &str, host: &str) -> String {
        let (s, v) = self
            .send(
                None,
                reqwest::Method::POST,
                &format!("/v4/default/registry/microservices/{sid}/instances"),
                Some(json!({"instance": {"hostName": host,
                    "endpoints": [format!("rest://127.0.0.1:80/{host}")]}})),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v["instanceId"].as_str().unwrap().to_owned()
    }

    async fn heartbeat(&self, sid: &str, iid: &str) -> (StatusCode, Value) {
        self.send(
            None,
            reqwest::Method::PUT,
            &format!("/v4/default/registry/microservices/{sid}/instances/{iid}/heartbeat"),
            None,
        )
        .await
    }

    /// `GET path` with `auth` (a full `Authorization` value): status, headers, body.
    async fn get(
        &self,
        path: &str,
        auth: Option<&str>,
    ) -> (StatusCode, reqwest::header::HeaderMap, String) {
        let mut req = self.http.get(format!("{}{path}", self.base));
        if let Some(a) = auth {
            req = req.header("Authorization", a);
        }
        let resp = req.send().await.unwrap();
        let (status, headers) = (resp.status(), resp.headers().clone());
        (status, headers, resp.text().await.unwrap())
    }

    async fn scrape(&self) -> String {
        let (s, headers, text) = self.get("/metrics", None).await;
        assert_eq!(s, StatusCode::OK, "{text}");
        assert!(
            headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/openmetrics-text"),
            "{headers:?}"
        );
        text
    }
}

/// One sample of a scrape, as Python's parser read it.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: serde_json::Map<String, Value>,
    value: f64,
}

/// The interpreter of the test venv, or `None` (the test is then skipped, said on stderr).
fn python() -> Option<String> {
    let p = std::env::var("SYNCER_TEST_PYTHON").ok();
    if p.is_none() {
        eprintln!(
            "SKIPPED: SYNCER_TEST_PYTHON is not set; run `scripts/test.sh`, which creates \
             target/test-venv with prometheus_client and exports it"
        );
    }
    p
}

/// Parses `text` with `prometheus_client.parser.text_string_to_metric_families` (the
/// samples), and checks it with the strict OpenMetrics parser, whose error fails the test.
fn parse(python: &str, text: &str) -> Vec<Sample> {
    const SCRIPT: &str = r#"
import json, math, sys
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.openmetrics.parser import text_string_to_metric_families as strict
text = sys.stdin.read()
error = None
try:
    list(strict(text))
except Exception as e:
    error = repr(e)
samples = [{"name": s.name, "labels": s.labels, "value": None if math.isnan(s.value) else s.value}
           for f in text_string_to_metric_families(text) for s in f.samples]
print(json.dumps({"error": error, "samples": samples}))
"#;
    let mut child = Command::new(python)
        .args(["-c", SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {python}: {e}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the parser failed: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        v["error"].is_null(),
        "not valid OpenMetrics: {}\n{text}",
        v["error"]
    );
    v["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| Sample {
            name: s["name"].as_str().unwrap().to_owned(),
            labels: s["labels"].as_object().unwrap().clone(),
            value: s["value"].as_f64().unwrap_or(f64::NAN),
        })
        .collect()
}

/// The samples named `name` whose labels include `labels`.
fn find<'a>(samples: &'a [Sample], name: &str, labels: &[(&str, &str)]) -> Vec<&'a Sample> {
    samples
        .iter()
        .filter(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).and_then(Value::as_str) == Some(*v))
        })
        .collect()
}

/// The value of the one sample named `name` with `labels`.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    let found = find(samples, name, labels);
    assert_eq!(found.len(), 1, "{name} {labels:?}: {found:?}");
    found[0].value
}

#[tokio::test]
async fn metrics_count_known_actions_under_service_center_names() {
    let Some(python) = python() else { return };
    let core = Core::start(&[]).await;
    let a = core.create_service("alpha").await;
    let b = core.create_service("beta").await;
    let a1 = core.register(&a, "a1").await;
    core.register(&a, "a2").await;
    core.register(&b, "b1").await;
    for _ in 0..5 {
        let (s, v) = core.heartbeat(&a, &a1).await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    // One bad request: a heartbeat of an instance nobody registered.
    let (s, v) = core.heartbeat(&a, "no-such-instance").await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    // Paths no route matches all count as one `api` value.
    for path in ["/nope", "/nope/again", "/v4/default/registry/nothing-here"] {
        let (s, _) = core.send(None, reqwest::Method::GET, path, None).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{path}");
    }

    let text = core.scrape().await;
    let samples = parse(&python, &text);
    let me = [("instance", core.listen.as_str())];
    let default = [("instance", core.listen.as_str()), ("domain", "default")];
    assert_eq!(
        value(&samples, "service_center_db_service_total", &default),
        2.0
    );
    assert_eq!(
        value(&samples, "service_center_db_instance_total", &default),
        3.0
    );
    assert_eq!(
        value(&samples, "service_center_db_schema_total", &default),
        0.0
    );
    assert_eq!(value(&samples, "service_center_db_domain_total", &me), 1.0);
    let ok = [("instance", core.listen.as_str()), ("status", "success")];
    assert_eq!(
        value(&samples, "service_center_db_heartbeat_total", &ok),
        5.0
    );
    let failed = [("instance", core.listen.as_str()), ("status", "failure")];
    assert_eq!(
        value(&samples, "service_center_db_heartbeat_total", &failed),
        1.0
    );

    // Requests by method, code and route template, never the concrete path.
    let hb = |code: &'static str| {
        [
            ("method", "PUT"),
            ("code", code),
            ("instance", core.listen.as_str()),
            ("api", HEARTBEAT_API),
            ("domain", "default"),
        ]
    };
    assert_eq!(
        value(&samples, "service_center_http_request_total", &hb("200")),
        5.0
    );
    assert_eq!(
        value(&samples, "service_center_http_success_total", &hb("200")),
        5.0
    );
    assert_eq!(
        value(&samples, "service_center_http_request_total", &hb("400")),
        1.0
    );
    // service-center counts every code below 500 as a success.
    assert_eq!(
        value(&samples, "service_center_http_success_total", &hb("400")),
        1.0
    );
    let created = [
        ("method", "POST"),
        ("code", "200"),
        ("api", "/v4/{project}/registry/microservices"),
    ];
    assert_eq!(
        value(&samples, "service_center_http_request_total", &created),
        2.0
    );
    let unmatched = [("method", "GET"), ("code", "404"), ("api", "unmatched")];
    assert_eq!(
        value(&samples, "service_center_http_request_total", &unmatched),
        3.0
    );
    for s in &samples {
        if let Some(api) = s.labels.get("api").and_then(Value::as_str) {
            assert!(
                !api.contains(&a) && !api.contains("no-such-instance"),
                "a concrete path as a label: {s:?}"
            );
        }
    }

    // The duration summary: service-center's quantiles, a sum and a count per series.
    let durations = "service_center_http_request_durations_microseconds";
    let series = [
        ("method", "PUT"),
        ("api", HEARTBEAT_API),
        ("domain", "default"),
    ];
    assert_eq!(value(&samples, &format!("{durations}_count"), &series), 6.0);
    assert!(value(&samples, &format!("{durations}_sum"), &series) > 0.0);
    for q in ["0.5", "0.9", "0.99"] {
        let mut labels = series.to_vec();
        labels.push(("quantile", q));
        let v = value(&samples, durations, &labels);
        assert!(v > 0.0 && v < 10_000_000.0, "{q}: {v}");
    }

    // Process metrics, read from /proc.
    let rss = value(&samples, "process_resident_memory_bytes", &[]);
    assert!(rss > 1e6, "{rss}");
    assert!(value(&samples, "process_open_fds", &[]) > 0.0);
    assert!(value(&samples, "process_cpu_seconds_total", &[]) >= 0.0);
    assert!(find(&samples, "service_center_notify_subscriber_total", &[]).is_empty());
}

#[tokio::test]
async fn requests_in_200_domains_keep_at_most_the_cap_plus_other() {
    let core = Core::start(&[]).await;
    for i in 0..200 {
        let domain = format!("tenant-{i}");
        let (s, v) = core
            .send(
                Some(&domain),
                reqwest::Method::GET,
                "/v4/default/registry/microservices",
                None,
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    let text = core.scrape().await;
    let label = regex::Regex::new(r#"domain="([^"]*)""#).unwrap();
    let domains: BTreeSet<&str> = text
        .lines()
        .filter(|l| l.starts_with("service_center_http_request_total{"))
        .filter_map(|l| label.captures(l).map(|c| c.get(1).unwrap().as_str()))
        .collect();
    // 64 kept (the 63 first tenants and `default`, of the health check), and `other`.
    assert_eq!(domains.len(), 65, "{domains:?}");
    assert!(domains.contains("other") && domains.contains("default"));
    assert!(domains.contains("tenant-0") && !domains.contains("tenant-199"));
    let other: f64 = text
        .lines()
        .filter(|l| {
            l.starts_with("service_center_http_request_total{") && l.contains("domain=\"other\"")
        })
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    assert_eq!(other, 137.0, "200 tenants, 63 kept");
}

#[tokio::test]
async fn with_rbac_the_metrics_and_the_status_page_need_credentials() {
    let core = Core::start(&["--rbac"]).await;
    for path in ["/metrics", "/"] {
        let (s, _, body) = core.get(path, None).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{path}: {body}");
        let (s, _, body) = core.get(path, Some("Bearer not-a-token")).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{path}: {body}");
    }
    let (_, headers, _) = core.get("/", None).await;
    assert!(
        headers
            .get("www-authenticate")
            .is_some_and(|v| v.to_str().unwrap().starts_with("Basic")),
        "a browser is asked for basic auth: {headers:?}"
    );
    let (s, v) = core
        .send(
            None,
            reqwest::Method::POST,
            "/v4/token",
            Some(json!({"name": "root", "password": ROOT_PW})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let bearer = format!("Bearer {}", v["token"].as_str().unwrap());
    let (s, _, text) = core.get("/metrics", Some(&bearer)).await;
    assert_eq!(s, StatusCode::OK, "{text}");
    assert!(
        text.contains("service_center_http_request_total{"),
        "{text}"
    );
    // The refusals above were counted too, with their template.
    assert!(
        text.lines()
            .any(|l| l.starts_with("service_center_http_request_total{")
                && l.contains("code=\"401\"")
                && l.contains("api=\"/metrics\"")),
        "{text}"
    );
    let (s, _, html) = core.get("/", Some(&bearer)).await;
    assert_eq!(s, StatusCode::OK, "{html}");
    // Basic auth, as Prometheus' `basic_auth` or a browser sends it.
    use base64::Engine as _;
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("root:{ROOT_PW}"))
    );
    for path in ["/metrics", "/"] {
        let (s, _, body) = core.get(path, Some(&basic)).await;
        assert_eq!(s, StatusCode::OK, "{path}: {body}");
    }
}

#[tokio::test]
async fn the_status_page_lists_instances_and_escapes_what_clients_chose() {
    let core = Core::start(&[]).await;
    let (s, _, html) = core.get("/", None).await;
    assert_eq!(s, StatusCode::OK, "{html}");
    assert!(html.contains("No instances available"), "{html}");

    let a = core.create_service("alpha").await;
    let a1 = core.register(&a, "a1").await;
    let a2 = core.register(&a, "a2").await;
    for _ in 0..3 {
        core.heartbeat(&a, &a1).await;
    }
    // A Eureka app and an instance id with markup in them.
    let app = "<script>alert(1)";
    let body = json!({"instance": {"instanceId": "i-<b>1</b>", "hostName": "h", "app": app,
        "ipAddr": "10.0.0.5", "status": "UP", "port": {"$": 8080, "@enabled": "true"},
        "dataCenterInfo": {"name": "MyOwn"}}});
    let url = format!("{}/eureka/apps/%3Cscript%3Ealert(1)", core.base);
    let resp = core.http.post(url).json(&body).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);

    let (s, headers, html) = core.get("/", None).await;
    assert_eq!(s, StatusCode::OK, "{html}");
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(html.contains("Instances currently registered"), "{html}");
    assert!(html.contains("Renews (last min)"), "{html}");
    assert!(html.contains("<b>ALPHA</b>"), "{html}");
    assert!(html.contains(&a1) && html.contains(&a2), "{html}");
    assert!(html.contains("<b>UP</b> (2)"), "{html}");
    // The markup comes back as text.
    assert!(html.contains("&lt;SCRIPT&gt;ALERT(1)"), "{html}");
    assert!(html.contains("i-&lt;b&gt;1&lt;/b&gt;"), "{html}");
    assert!(!html.to_ascii_lowercase().contains("<script"), "{html}");
    assert!(!html.contains("<b>1</b>"), "{html}");
}

#[tokio::test]
async fn open_watchers_are_counted_until_they_close() {
    let core = Core::start(&[]).await;
    let sid = core.create_service("watched").await;
    let url = format!(
        "ws://{}/v4/default/registry/microservices/{sid}/watcher",
        core.listen
    );
    let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let line = "service_center_notify_subscriber_total{";
    // The handshake's 101 leaves before the upgraded connection's task counts the watcher:
    // wait for it, then check it is the only series.
    let text = eventually(
        Duration::from_secs(10),
        "the open watcher is counted",
        &[&core._proc],
        || async {
            let text = core.scrape().await;
            text.lines().any(|l| l.starts_with(line)).then_some(text)
        },
    )
    .await;
    let open: Vec<&str> = text.lines().filter(|l| l.starts_with(line)).collect();
    assert_eq!(open.len(), 1, "{text}");
    assert!(
        open[0].contains("domain=\"default\"")
            && open[0].contains("scheme=\"websocket\"")
            && open[0].ends_with(" 1"),
        "{text}"
    );
    drop(ws);
    eventually(
        Duration::from_secs(10),
        "the closed watcher is no longer counted",
        &[&core._proc],
        || async {
            let text = core.scrape().await;
            (!text.lines().any(|l| l.starts_with(line))).then_some(())
        },
    )
    .await;
}
