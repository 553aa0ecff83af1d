//! The built-in Eureka API driven by two third-party Eureka clients, unmodified:
//! py-eureka-client 0.13.3 (PyPI, reads XML) and eureka-js-client 4.5.0 (npm, reads JSON,
//! deltas on), in a two-site setup as real processes on loopback: a Eureka site (built-in
//! core + syncer with the eureka plugin) and a service-center site (built-in core + syncer
//! with the servicecenter plugin).
//!
//! Each client registers, heartbeats, fetches the registry (full, then deltas), discovers an
//! instance registered on the service-center side after it started (so through a delta, or
//! the delta's hash mismatch and a full fetch), is overridden to `OUT_OF_SERVICE` and sees
//! it, has the override removed (its next heartbeat answers 404 and it registers again, `UP`),
//! and cancels. On the way, the clients' instances cross to the service-center site and keep
//! their Eureka fields there, and an imported instance deleted behind the syncer's back is
//! registered again (its heartbeat answered 404).

mod support;

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use support::{
    eventually, free_tcp_port, free_udp_port, node_modules_with_eureka_client,
    python_with_eureka_client, test_file, Proc,
};

const WAIT: Duration = Duration::from_secs(20);

struct Site {
    registry_port: u16,
    gossip_port: u16,
    daemon_args: Vec<String>,
}

impl Site {
    fn new(plugin: &str, cluster: &str, join: Option<u16>) -> Site {
        let registry_port = free_tcp_port();
        let gossip_port = free_udp_port();
        let rpc_port = free_tcp_port();
        let sc_addr = match plugin {
            "eureka" => format!("http://127.0.0.1:{registry_port}/eureka"),
            _ => format!("http://127.0.0.1:{registry_port}"),
        };
        let mut daemon_args: Vec<String> = [
            "daemon",
            "--sc-plugin",
            plugin,
            "--sc-addr",
            &sc_addr,
            "--cluster-name",
            cluster,
            "--node",
            &format!("{cluster}-1"),
            "--bind-addr",
            &format!("127.0.0.1:{gossip_port}"),
            "--rpc-addr",
            &format!("127.0.0.1:{rpc_port}"),
            "--ticker-interval",
            "1",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        if let Some(port) = join {
            daemon_args.push("--join-addr".into());
            daemon_args.push(format!("127.0.0.1:{port}"));
        }
        Site {
            registry_port,
            gossip_port,
            daemon_args,
        }
    }

    fn start(&self, dir: &Path, name: &str) -> (Proc, Proc) {
        let core = Proc::syncer(
            dir,
            &format!("{name}-core"),
            &[
                "servicecenter",
                "--listen",
                &format!("127.0.0.1:{}", self.registry_port),
            ],
        );
        let args: Vec<&str> = self.daemon_args.iter().map(String::as_str).collect();
        (core, Proc::syncer(dir, &format!("{name}-syncer"), &args))
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.registry_port)
    }
}

/// `GET {path}` in JSON; `None` unless 200.
async fn get_json(http: &reqwest::Client, url: &str) -> Option<Value> {
    let resp = http
        .get(url)
        .header("Accept", "application/json")
        .send()
        .await
        .ok()?;
    if !resp.status().is_success() {
        return None;
    }
    resp.json().await.ok()
}

/// The instances of `app` at a site's Eureka API.
async fn app_instances(http: &reqwest::Client, site: &Site, app: &str) -> Vec<Value> {
    get_json(http, &site.url(&format!("/eureka/apps/{app}")))
        .await
        .and_then(|d| d["application"]["instance"].as_array().cloned())
        .unwrap_or_default()
}

async fn send(http: &reqwest::Client, method: reqwest::Method, url: &str) -> u16 {
    http.request(method, url)
        .send()
        .await
        .expect("request")
        .status()
        .as_u16()
}

/// Whether the client's output (after `from` bytes) has a line saying it holds an instance
/// of `app` (`id`, if given) with `status`: `found APP ID IP:PORT STATUS` for the looked-up
/// app, `seen ID IP:PORT STATUS` for its own (`app` `None`).
fn seen(client: &Proc, app: Option<&str>, id: Option<&str>, status: &str, from: usize) -> bool {
    let log = std::fs::read_to_string(&client.log).unwrap_or_default();
    log.get(from..).unwrap_or("").lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let rest = match (app, f.as_slice()) {
            (Some(app), ["found", a, rest @ ..]) if *a == app => rest,
            (None, ["seen", rest @ ..]) => rest,
            _ => return false,
        };
        matches!(rest, [i, _, s] if id.is_none_or(|id| id == *i) && *s == status)
    })
}

fn log_len(p: &Proc) -> usize {
    std::fs::metadata(&p.log).map_or(0, |m| m.len() as usize)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn py_and_js_eureka_clients_register_discover_change_status_and_cancel_across_sites() {
    // Fail early and clearly when the clients are not installed.
    let python = python_with_eureka_client();
    let node_modules = node_modules_with_eureka_client();
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("http client");

    let eureka = Site::new("eureka", "eureka-site", None);
    let sc = Site::new("servicecenter", "sc-site", Some(eureka.gossip_port));
    let (eureka_core, eureka_syncer) = eureka.start(dir, "eureka");
    let (sc_core, sc_syncer) = sc.start(dir, "sc");
    let base = eureka.url("/eureka");

    let (py_port, js_port) = (free_tcp_port(), free_tcp_port());
    let py_id = format!("127.0.0.1:py-account:{py_port}");
    let js_id = format!("127.0.0.1:js-account:{js_port}");
    let mut py = Proc::spawn(
        dir,
        "py-eureka-client",
        &python,
        &[test_file("clients/py_account_server.py")
            .display()
            .to_string()],
        &[
            ("EUREKA_URL", base.clone()),
            ("APP_NAME", "py-account".into()),
            ("APP_PORT", py_port.to_string()),
            ("LOOKUP_APP", "hello-server".into()),
            ("INTERVAL", "1".into()),
        ],
    );
    let mut js = Proc::spawn(
        dir,
        "eureka-js-client",
        Path::new("node"),
        &[test_file("clients/js_account_server.js")
            .display()
            .to_string()],
        &[
            ("EUREKA_URL", base.clone()),
            ("APP_NAME", "js-account".into()),
            ("APP_PORT", js_port.to_string()),
            ("LOOKUP_APP", "hello-server".into()),
            ("INTERVAL_MS", "1000".into()),
            ("NODE_PATH", node_modules.display().to_string()),
        ],
    );
    let procs = [&eureka_core, &eureka_syncer, &sc_core, &sc_syncer, &py, &js];

    // 1. Both register (py through XML-reading init, js answered exactly 204).
    for (app, id) in [("PY-ACCOUNT", &py_id), ("JS-ACCOUNT", &js_id)] {
        let url = eureka.url(&format!("/eureka/apps/{app}/{id}"));
        eventually(WAIT, &format!("{app} registered"), &procs, || {
            get_json(&http, &url)
        })
        .await;
    }

    // 2. Both heartbeat: the lease's lastRenewalTimestamp moves.
    for (app, id) in [("PY-ACCOUNT", &py_id), ("JS-ACCOUNT", &js_id)] {
        let url = eureka.url(&format!("/eureka/apps/{app}/{id}"));
        let first = get_json(&http, &url).await.expect("instance")["instance"]["leaseInfo"]
            ["lastRenewalTimestamp"]
            .as_i64()
            .expect("lastRenewalTimestamp");
        eventually(WAIT, &format!("{app} heartbeats"), &procs, || async {
            let now = get_json(&http, &url).await?["instance"]["leaseInfo"]["lastRenewalTimestamp"]
                .as_i64()?;
            (now > first).then_some(())
        })
        .await;
    }

    // 3. An instance registered on the service-center side after the clients started reaches
    //    them through the syncer and their registry fetches (js: deltas; py: the delta's hash
    //    mismatch and a full fetch).
    let sid = support::sc_create_service(&http, &sc.url(""), "hello", "hello-server").await;
    let status = http
        .post(sc.url(&format!(
            "/v4/default/registry/microservices/{sid}/instances"
        )))
        .header("X-Domain-Name", "default")
        .json(&serde_json::json!({"instance": {"hostName": "hello-host",
            "endpoints": ["rest://127.0.0.1:8091"],
            "healthCheck": {"mode": "push", "interval": 30, "times": 3}}}))
        .send()
        .await
        .expect("register hello")
        .status();
    assert!(status.is_success(), "register hello: {status}");
    for client in [&py, &js] {
        eventually(
            WAIT,
            &format!("{} discovers HELLO-SERVER", client.name),
            &procs,
            || async { seen(client, Some("HELLO-SERVER"), None, "UP", 0).then_some(()) },
        )
        .await;
    }
    assert!(
        std::fs::read_to_string(&eureka_core.log)
            .unwrap_or_default()
            .contains("eureka delta served"),
        "no client fetched a delta"
    );

    // 4. The clients' instances cross to the service-center site with their Eureka fields,
    //    and its Eureka view (the same core) gives them back.
    let original = get_json(
        &http,
        &eureka.url(&format!("/eureka/apps/PY-ACCOUNT/{py_id}")),
    )
    .await
    .expect("py instance")["instance"]
        .clone();
    let crossed = eventually(
        WAIT,
        "PY-ACCOUNT at the service-center site",
        &procs,
        || async { app_instances(&http, &sc, "PY-ACCOUNT").await.pop() },
    )
    .await;
    for field in [
        "vipAddress",
        "secureVipAddress",
        "homePageUrl",
        "statusPageUrl",
        "healthCheckUrl",
        "port",
        "dataCenterInfo",
        "status",
    ] {
        assert_eq!(crossed[field], original[field], "{field} after crossing");
    }
    assert_eq!(crossed["metadata"]["origin"], "py-eureka-client-test");
    assert!(
        crossed["metadata"]
            .as_object()
            .expect("metadata")
            .keys()
            .all(|k| !k.starts_with("eureka.")),
        "reserved keys are fields, not metadata: {crossed}"
    );

    // 5. Status: a server-side override reaches the client (py reads its own status from its
    //    registry copy) and survives its heartbeats; removing it makes the next heartbeat 404,
    //    the client registers again and is UP.
    for (client, app, id) in [(&py, "PY-ACCOUNT", &py_id), (&js, "JS-ACCOUNT", &js_id)] {
        let instance = eureka.url(&format!("/eureka/apps/{app}/{id}"));
        let from = log_len(client);
        let code = send(
            &http,
            reqwest::Method::PUT,
            &format!("{instance}/status?value=OUT_OF_SERVICE"),
        )
        .await;
        assert_eq!(code, 200);
        if client.name == "py-eureka-client" {
            eventually(WAIT, "py sees itself OUT_OF_SERVICE", &procs, || async {
                seen(client, None, Some(id), "OUT_OF_SERVICE", from).then_some(())
            })
            .await;
        }
        let renewed = get_json(&http, &instance).await.expect("instance")["instance"]["leaseInfo"]
            ["lastRenewalTimestamp"]
            .as_i64()
            .expect("renewal");
        eventually(
            WAIT,
            &format!("{app} heartbeats while overridden"),
            &procs,
            || async {
                let i = get_json(&http, &instance).await?["instance"].clone();
                (i["leaseInfo"]["lastRenewalTimestamp"].as_i64()? > renewed).then_some(i)
            },
        )
        .await;
        let i = get_json(&http, &instance).await.expect("instance")["instance"].clone();
        assert_eq!(i["status"], "OUT_OF_SERVICE", "{i}");
        assert_eq!(i["overriddenStatus"], "OUT_OF_SERVICE", "{i}");

        let code = send(
            &http,
            reqwest::Method::DELETE,
            &format!("{instance}/status"),
        )
        .await;
        assert_eq!(code, 200);
        eventually(
            WAIT,
            &format!("{app} registers again, UP"),
            &procs,
            || async {
                let i = get_json(&http, &instance).await?["instance"].clone();
                (i["status"] == "UP" && i["overriddenStatus"] == "UNKNOWN").then_some(())
            },
        )
        .await;
    }

    // 6. An imported instance deleted at the Eureka site behind the syncer's back: its
    //    heartbeat answers 404 and the syncer registers it again.
    let hello = eventually(WAIT, "HELLO-SERVER at the Eureka site", &procs, || async {
        app_instances(&http, &eureka, "HELLO-SERVER").await.pop()
    })
    .await;
    let hello_id = hello["instanceId"].as_str().expect("id").to_owned();
    let hello_url = eureka.url(&format!("/eureka/apps/HELLO-SERVER/{hello_id}"));
    assert_eq!(send(&http, reqwest::Method::DELETE, &hello_url).await, 200);
    eventually(WAIT, "HELLO-SERVER registered again", &procs, || {
        get_json(&http, &hello_url)
    })
    .await;

    // 7. Both cancel on SIGTERM (py registers DOWN first, then DELETE; js DELETE).
    for (client, app) in [(&mut py, "PY-ACCOUNT"), (&mut js, "JS-ACCOUNT")] {
        assert!(
            client.terminate(Duration::from_secs(10)),
            "{} did not exit",
            client.name
        );
        let status = client.child.wait().expect("exit status");
        assert!(status.success(), "{} exited with {status}", client.name);
        let url = eureka.url(&format!("/eureka/apps/{app}"));
        eventually(WAIT, &format!("{app} cancelled"), &[], || async {
            let code = send(&http, reqwest::Method::GET, &url).await;
            (code == 404).then_some(())
        })
        .await;
    }
    drop((eureka_core, eureka_syncer, sc_core, sc_syncer));
}
