//! Steering a running daemon (issue 15): resync, suspend with copies kept or dropped,
//! resume, who may call the admin endpoints, the log filter at run time, and reloading the
//! `--config` file on SIGHUP and when it changes (a broken file keeps the settings in use).

mod support;

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use support::{
    daemon_args, eventually, free_tcp_port, free_udp_port, get_json, sc_add_instance,
    sc_create_service, sc_find_instances, Proc,
};

/// A daemon with its own built-in core at `registry` and its HTTP listener at `http`.
struct Site {
    proc: Proc,
    registry: String,
    http: String,
}

fn start(dir: &Path, node: &str, cluster: &str, gossip: u16, join: Option<u16>) -> Site {
    let registry_port = free_tcp_port();
    let http_port = free_tcp_port();
    let mut args = daemon_args(node, cluster, gossip, free_tcp_port(), join);
    args.extend([
        "--builtin-addr".into(),
        format!("127.0.0.1:{registry_port}"),
        "--http-addr".into(),
        format!("127.0.0.1:{http_port}"),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Site {
        proc: Proc::syncer(dir, node, &args),
        registry: format!("http://127.0.0.1:{registry_port}"),
        http: format!("http://127.0.0.1:{http_port}"),
    }
}

/// `POST {url}`: the status and the JSON body.
async fn post(http: &reqwest::Client, url: &str) -> (u16, Value) {
    let resp = http.post(url).send().await.expect("post");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn copies(http: &reqwest::Client, site: &Site) -> Option<usize> {
    sc_find_instances(http, &site.registry, "shop", "orders")
        .await
        .map(|found| found.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspend_keeps_or_drops_copies_and_resume_brings_back_the_current_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let http = reqwest::Client::new();
    let gossip_a = free_udp_port();
    let a = start(dir.path(), "a1", "site-a", gossip_a, None);
    let b = start(dir.path(), "b1", "site-b", free_udp_port(), Some(gossip_a));
    let logs = [&a.proc, &b.proc];
    eventually(Duration::from_secs(20), "site-a answers", &logs, || async {
        get_json(
            &http,
            &format!("{}/v4/default/registry/microservices", a.registry),
        )
        .await
    })
    .await;
    let sid = sc_create_service(&http, &a.registry, "shop", "orders").await;
    sc_add_instance(&http, &a.registry, &sid, 9001).await;
    eventually(
        Duration::from_secs(30),
        "the instance crosses",
        &logs,
        || async { (copies(&http, &b).await? == 1).then_some(()) },
    )
    .await;

    // Keep: the copy stays past its lease (4 ticks of 1 s), and nothing new crosses.
    let (status, body) = post(&http, &format!("{}/v1/syncer/suspend?copies=keep", b.http)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["suspended"]["copies"], "keep", "{body}");
    let status = get_json(&http, &format!("{}/v1/syncer/status", b.http))
        .await
        .expect("status");
    assert_eq!(status["suspended"]["copies"], "keep", "{status}");
    let metrics = http
        .get(format!("{}/metrics", b.http))
        .send()
        .await
        .expect("scrape")
        .text()
        .await
        .expect("metrics");
    assert!(metrics.contains("\nsyncer_suspended 1\n"), "{metrics}");
    sc_add_instance(&http, &a.registry, &sid, 9002).await;
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert_eq!(
        copies(&http, &b).await,
        Some(1),
        "suspended: kept, nothing new"
    );

    // Resume: the current state comes over.
    let (status, body) = post(&http, &format!("{}/v1/syncer/resume", b.http)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["resumed"], true, "{body}");
    assert_eq!(body["resync"]["is_leader"], true, "{body}");
    eventually(
        Duration::from_secs(20),
        "both instances cross",
        &logs,
        || async { (copies(&http, &b).await? == 2).then_some(()) },
    )
    .await;

    // Drop: the copies go at once, each with an event, and stay gone.
    let (status, body) = post(&http, &format!("{}/v1/syncer/suspend?copies=drop", b.http)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["removed"], 2, "{body}");
    assert_eq!(copies(&http, &b).await, Some(0));
    let events = get_json(&http, &format!("{}/v1/syncer/events", b.http))
        .await
        .expect("events");
    let dropped = events["events"]
        .as_array()
        .expect("events list")
        .iter()
        .filter(|e| e["reason"] == "suspend" && e["op"] == "unregister")
        .count();
    assert_eq!(dropped, 2, "{events}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        copies(&http, &b).await,
        Some(0),
        "suspended with drop: nothing written"
    );
    let (status, body) = post(&http, &format!("{}/v1/syncer/resume", b.http)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["resync"]["registered"], 2, "{body}");
    assert_eq!(copies(&http, &b).await, Some(2));

    // Resync, of all or of one peer; an unknown peer or a bad parameter is refused.
    let (status, body) = post(&http, &format!("{}/v1/syncer/resync", b.http)).await;
    assert_eq!(
        (status, &body["resync"]["is_leader"]),
        (200, &Value::Bool(true)),
        "{body}"
    );
    let (status, body) = post(
        &http,
        &format!("{}/v1/syncer/resync?cluster=site-a", b.http),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = post(&http, &format!("{}/v1/syncer/resync?cluster=nope", b.http)).await;
    assert_eq!(status, 404, "{body}");
    assert!(
        body["error"].as_str().is_some_and(|e| e.contains("nope")),
        "{body}"
    );
    let (status, body) = post(&http, &format!("{}/v1/syncer/suspend?copies=some", b.http)).await;
    assert_eq!(status, 400, "{body}");
    let full = get_json(&http, &format!("{}/v1/syncer/full-synchronization", b.http))
        .await
        .expect("service-center syncer's path answers");
    assert_eq!(full["resync"]["is_leader"], true, "{full}");
    // After all that, the copies are still exactly the two instances.
    eventually(Duration::from_secs(10), "two copies", &logs, || async {
        (copies(&http, &b).await? == 2).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoints_need_their_token_and_refuse_browsers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let http = reqwest::Client::new();
    let admin_file = dir.path().join("admin-token");
    std::fs::write(&admin_file, "admin-secret\n").expect("write token");
    let read_file = dir.path().join("read-token");
    std::fs::write(&read_file, "read-secret\n").expect("write token");

    // With --admin-token-file: its token, as a bearer token, and nothing else.
    let http_port = free_tcp_port();
    let mut args = daemon_args("t1", "site-t", free_udp_port(), free_tcp_port(), None);
    args.extend([
        "--builtin-addr".into(),
        format!("127.0.0.1:{}", free_tcp_port()),
        "--http-addr".into(),
        format!("127.0.0.1:{http_port}"),
        "--admin-token-file".into(),
        admin_file.display().to_string(),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let with_token = Proc::syncer(dir.path(), "t1", &args);
    let with_token_http = format!("http://127.0.0.1:{http_port}");
    let url = format!("{}/v1/syncer/resync", with_token_http);
    eventually(
        Duration::from_secs(20),
        "the listener answers",
        &[&with_token],
        || async { get_json(&http, &format!("{}/healthz", with_token_http)).await },
    )
    .await;
    let call = |bearer: Option<&'static str>, browser: bool| {
        let mut request = http.post(&url);
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        if browser {
            request = request.header("Sec-Fetch-Site", "same-origin");
        }
        async move { request.send().await.expect("post").status().as_u16() }
    };
    assert_eq!(call(None, false).await, 401);
    assert_eq!(call(Some("wrong"), false).await, 401);
    assert_eq!(call(Some("read-secret"), false).await, 401);
    assert_eq!(call(Some("admin-secret"), true).await, 403);
    assert_eq!(call(Some("admin-secret"), false).await, 200);
    let resp = http
        .put(format!("{}/v1/syncer/log-level", with_token_http))
        .header("Origin", "http://evil.example")
        .bearer_auth("admin-secret")
        .body("debug")
        .send()
        .await
        .expect("put");
    assert_eq!(resp.status().as_u16(), 403);
    let config = get_json(&http, &format!("{}/v1/syncer/config", with_token_http))
        .await
        .expect("config");
    assert_eq!(config["admin_token"], true, "{config}");
    assert!(!config.to_string().contains("admin-secret"), "{config}");

    // Beyond loopback without --admin-token-file: refused even with the read token.
    let http_port = free_tcp_port();
    let mut args = daemon_args("w1", "site-w", free_udp_port(), free_tcp_port(), None);
    args.extend([
        "--builtin-addr".into(),
        format!("127.0.0.1:{}", free_tcp_port()),
        "--http-addr".into(),
        format!("0.0.0.0:{http_port}"),
        "--http-token-file".into(),
        read_file.display().to_string(),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let wide = Proc::syncer(dir.path(), "w1", &args);
    let base = format!("http://127.0.0.1:{http_port}");
    eventually(
        Duration::from_secs(20),
        "the wide listener answers",
        &[&wide],
        || async { get_json(&http, &format!("{base}/healthz")).await },
    )
    .await;
    let resp = http
        .post(format!("{base}/v1/syncer/resync"))
        .bearer_auth("read-secret")
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status().as_u16(), 403);
    let body: Value = resp.json().await.expect("json");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("--admin-token-file")),
        "{body}"
    );
    // Reading still works with the read token.
    let resp = http
        .get(format!("{base}/v1/syncer/status"))
        .bearer_auth("read-secret")
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status().as_u16(), 200);
}

/// Replaces `path` by a new file (a rename, as config management tools do).
fn rewrite(path: &Path, text: &str) {
    let next = path.with_extension("new");
    std::fs::write(&next, text).expect("write config");
    std::fs::rename(&next, path).expect("rename config");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_apply_the_ticker_and_log_filter_and_a_broken_file_keeps_the_old_settings() {
    let dir = tempfile::tempdir().expect("tempdir");
    let http = reqwest::Client::new();
    let config = dir.path().join("syncer.yaml");
    std::fs::write(&config, "ticker_interval: 30\nlog_filter: info\n").expect("write config");
    let http_port = free_tcp_port();
    let args = [
        "daemon".to_owned(),
        "--node".into(),
        "r1".into(),
        "--cluster-name".into(),
        "site-r".into(),
        "--bind-addr".into(),
        format!("127.0.0.1:{}", free_udp_port()),
        "--rpc-addr".into(),
        format!("127.0.0.1:{}", free_tcp_port()),
        "--builtin-addr".into(),
        format!("127.0.0.1:{}", free_tcp_port()),
        "--http-addr".into(),
        format!("127.0.0.1:{http_port}"),
        "--config".into(),
        config.display().to_string(),
    ];
    // No SYNCER_LOG: the file's log_filter is the one in use.
    let proc = Proc::spawn(
        dir.path(),
        "r1",
        Path::new(env!("CARGO_BIN_EXE_syncer")),
        &args,
        &[("SYNCER_LOG", String::new())],
    );
    let base = format!("http://127.0.0.1:{http_port}");
    let logs = [&proc];
    let settings = || async { get_json(&http, &format!("{base}/v1/syncer/config")).await };
    let first = eventually(
        Duration::from_secs(20),
        "the listener answers",
        &logs,
        || async { settings().await },
    )
    .await;
    assert_eq!(first["ticker_interval_secs"], 30, "{first}");
    assert_eq!(first["reload"]["revision"], 0, "{first}");
    let level = get_json(&http, &format!("{base}/v1/syncer/log-level"))
        .await
        .expect("log-level");
    assert_eq!(level["filter"], "info", "{level}");

    // A changed file is seen without a signal.
    rewrite(
        &config,
        "ticker_interval: 2\nlog_filter: info,syncer::sync=debug\n",
    );
    let reloaded = eventually(
        Duration::from_secs(10),
        "the file's change applies",
        &logs,
        || async {
            let s = settings().await?;
            (s["reload"]["revision"] == 1).then_some(s)
        },
    )
    .await;
    assert_eq!(reloaded["ticker_interval_secs"], 2, "{reloaded}");
    assert_eq!(reloaded["reload"]["last"]["trigger"], "file", "{reloaded}");
    let applied = reloaded["reload"]["last"]["applied"].to_string();
    assert!(
        applied.contains("ticker_interval_secs") && applied.contains("log_filter"),
        "{reloaded}"
    );
    eventually(
        Duration::from_secs(10),
        "copies' lease follows the tick",
        &logs,
        || async {
            let status = get_json(&http, &format!("{base}/v1/syncer/status")).await?;
            (status["lease_secs"] == 8).then_some(())
        },
    )
    .await;
    // The new filter logs the loop's DEBUG lines, which "info" did not.
    eventually(
        Duration::from_secs(10),
        "debug lines of syncer::sync",
        &logs,
        || async {
            let text = std::fs::read_to_string(&proc.log).ok()?;
            text.contains("DEBUG sync{cluster=site-r}").then_some(())
        },
    )
    .await;

    // SIGHUP reloads too; a setting that needs a restart is named, not applied.
    std::fs::write(
        &config,
        "ticker_interval: 2\nlog_filter: info,syncer::sync=debug\ngrace_period: 99\n",
    )
    .expect("write config");
    support::sighup(&proc);
    let signalled = eventually(
        Duration::from_secs(10),
        "the signal reloads",
        &logs,
        || async {
            let s = settings().await?;
            (s["reload"]["revision"] == 2 && s["reload"]["last"]["trigger"] == "signal")
                .then_some(s)
        },
    )
    .await;
    assert!(
        signalled["reload"]["last"]["restart_needed"]
            .to_string()
            .contains("grace_period_secs"),
        "{signalled}"
    );

    // A broken file is refused and says why; the settings in use stay.
    rewrite(&config, "ticker_interval: [oops\n");
    let refused = eventually(
        Duration::from_secs(10),
        "the broken file is refused",
        &logs,
        || async {
            let s = settings().await?;
            (s["reload"]["last"]["ok"] == false).then_some(s)
        },
    )
    .await;
    assert_eq!(refused["reload"]["revision"], 2, "{refused}");
    assert_eq!(refused["ticker_interval_secs"], 2, "{refused}");
    assert!(
        refused["reload"]["last"]["error"]
            .as_str()
            .is_some_and(|e| !e.is_empty()),
        "{refused}"
    );
    let log = std::fs::read_to_string(&proc.log).expect("log");
    assert!(
        log.contains("config file refused; keeping the settings in use"),
        "{log}"
    );

    // The log filter at run time: a bad one is a 400, a good one applies.
    let put = |body: &'static str| {
        let request = http.put(format!("{base}/v1/syncer/log-level")).body(body);
        async move {
            let resp = request.send().await.expect("put");
            (
                resp.status().as_u16(),
                resp.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let (status, body) = put("info,syncer=[=").await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = put(r#"{"filter": "warn"}"#).await;
    assert_eq!(
        (status, &body["filter"]),
        (200, &Value::from("warn")),
        "{body}"
    );
    let level = get_json(&http, &format!("{base}/v1/syncer/log-level"))
        .await
        .expect("log-level");
    assert_eq!(level["filter"], "warn", "{level}");
}
