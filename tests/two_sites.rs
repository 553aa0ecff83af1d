//! Two sites as real processes on loopback: a Eureka site (built-in core serving /eureka,
//! syncer with the eureka plugin) and a service-center site (built-in core, syncer with the
//! servicecenter plugin), with the third-party py-eureka-client registering into the Eureka
//! side.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{eventually, free_tcp_port, free_udp_port, python_with_eureka_client, Proc};

/// Tick of both syncers, seconds: `SYNCER_TEST_TICK` or 1.
fn tick() -> String {
    std::env::var("SYNCER_TEST_TICK").unwrap_or_else(|_| "1".to_owned())
}

struct Site {
    registry_port: u16,
    gossip_port: u16,
    daemon_args: Vec<String>,
}

impl Site {
    fn new(plugin: &str, cluster: &str, node: &str, join: Option<u16>) -> Site {
        let registry_port = free_tcp_port();
        let gossip_port = free_udp_port();
        let rpc_port = free_tcp_port();
        let sc_addr = match plugin {
            "eureka" => format!("http://127.0.0.1:{registry_port}/eureka"),
            _ => format!("http://127.0.0.1:{registry_port}"),
        };
        let mut daemon_args = vec![
            "daemon".to_owned(),
            "--sc-plugin".into(),
            plugin.into(),
            "--sc-addr".into(),
            sc_addr,
            "--cluster-name".into(),
            cluster.into(),
            "--node".into(),
            node.into(),
            "--bind-addr".into(),
            format!("127.0.0.1:{gossip_port}"),
            "--rpc-addr".into(),
            format!("127.0.0.1:{rpc_port}"),
            "--ticker-interval".into(),
            tick(),
        ];
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

    fn start_registry(&self, dir: &Path, name: &str) -> Proc {
        Proc::syncer(
            dir,
            name,
            &[
                "servicecenter",
                "--listen",
                &format!("127.0.0.1:{}", self.registry_port),
            ],
        )
    }

    fn start_daemon(&self, dir: &Path, name: &str) -> Proc {
        let args: Vec<&str> = self.daemon_args.iter().map(String::as_str).collect();
        Proc::syncer(dir, name, &args)
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.registry_port)
    }
}

/// Instances found through the service-center v4 find API (an empty find answers `{}`).
async fn sc_find(
    http: &reqwest::Client,
    site: &Site,
    app: &str,
    name: &str,
    version: &str,
) -> Option<Vec<Value>> {
    let resp = http
        .get(site.url("/v4/default/registry/instances"))
        .query(&[("appId", app), ("serviceName", name), ("version", version)])
        .header("X-Domain-Name", "default")
        .send()
        .await
        .ok()?;
    if !resp.status().is_success() {
        return None;
    }
    let body: Value = resp.json().await.ok()?;
    Some(body["instances"].as_array().cloned().unwrap_or_default())
}

/// Instances of `app` listed by `GET /eureka/apps` in JSON.
async fn eureka_instances(http: &reqwest::Client, site: &Site, app: &str) -> Option<Vec<Value>> {
    let body: Value = http
        .get(site.url("/eureka/apps/"))
        .header("Accept", "application/json")
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    let apps = body["applications"]["application"].as_array()?.clone();
    Some(
        apps.iter()
            .filter(|a| a["name"] == app)
            .flat_map(|a| a["instance"].as_array().cloned().unwrap_or_default())
            .collect(),
    )
}

/// Registers hello-server on the service-center side and returns (serviceId, instanceId).
async fn register_hello(http: &reqwest::Client, site: &Site) -> (String, String) {
    let sid =
        support::sc_create_service_version(http, &site.url(""), "eureka", "hello-server", "0.0.1")
            .await;
    let registered: Value = http
        .post(site.url(&format!("/v4/default/registry/microservices/{sid}/instances")))
        .header("X-Domain-Name", "default")
        .json(&serde_json::json!({"instance": {"hostName": "hello-host", "endpoints": ["rest://127.0.0.1:8091"]}}))
        .send()
        .await
        .expect("register instance")
        .json()
        .await
        .expect("register body");
    let iid = registered["instanceId"]
        .as_str()
        .expect("instanceId")
        .to_owned();
    (sid, iid)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eureka_and_service_center_sites_see_each_other_and_survive_a_syncer_kill() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");

    let eureka = Site::new("eureka", "eureka-site", "eureka-1", None);
    let sc = Site::new("servicecenter", "sc-site", "sc-1", Some(eureka.gossip_port));
    let eureka_core = eureka.start_registry(dir, "eureka-core");
    let sc_core = sc.start_registry(dir, "sc-core");
    let mut eureka_syncer = eureka.start_daemon(dir, "eureka-syncer");
    let mut sc_syncer = sc.start_daemon(dir, "sc-syncer");

    // A third-party Eureka client registers account-server on the Eureka side.
    let app_port = free_tcp_port();
    let registered_at = Instant::now();
    let mut client = Proc::spawn(
        dir,
        "py-eureka-client",
        &python_with_eureka_client(),
        &[support::test_file("clients/py_account_server.py")
            .display()
            .to_string()],
        &[
            ("EUREKA_URL", eureka.url("/eureka")),
            ("APP_NAME", "account-server".into()),
            ("APP_PORT", app_port.to_string()),
            ("INTERVAL", "2".into()),
        ],
    );

    // It shows up on the service-center side, with the right endpoint, under the Eureka
    // mapping (appId eureka, lower-case name, version 0.0.1), by latest and by exact version.
    let expected = format!("rest://127.0.0.1:{app_port}");
    let found = eventually(
        Duration::from_secs(60),
        "account-server visible through the service-center find API",
        &[&eureka_syncer, &sc_syncer, &client],
        || async {
            let list = sc_find(&http, &sc, "eureka", "account-server", "latest").await?;
            (list.len() == 1).then_some(list)
        },
    )
    .await;
    eprintln!(
        "propagation eureka -> service-center: {} ms (tick {} s)",
        registered_at.elapsed().as_millis(),
        tick()
    );
    let endpoints = found[0]["endpoints"].as_array().expect("endpoints");
    assert!(
        endpoints.iter().any(|e| e == expected.as_str()),
        "endpoints {endpoints:?} should contain {expected}"
    );
    let exact = sc_find(&http, &sc, "eureka", "account-server", "0.0.1")
        .await
        .expect("exact version find");
    assert_eq!(exact.len(), 1);

    // An instance registered on the service-center side is listed by the Eureka side.
    let hello_at = Instant::now();
    let (hello_sid, hello_iid) = register_hello(&http, &sc).await;
    let hello = eventually(
        Duration::from_secs(30),
        "HELLO-SERVER listed by GET /eureka/apps on the Eureka side",
        &[&eureka_syncer, &sc_syncer],
        || async {
            let list = eureka_instances(&http, &eureka, "HELLO-SERVER").await?;
            (list.len() == 1).then_some(list)
        },
    )
    .await;
    eprintln!(
        "propagation service-center -> eureka: {} ms (tick {} s)",
        hello_at.elapsed().as_millis(),
        tick()
    );
    assert_eq!(hello[0]["ipAddr"], "127.0.0.1");
    assert_eq!(hello[0]["port"]["$"].as_u64(), Some(8091));
    // The XML form (what py-eureka-client reads) lists it too.
    let xml = http
        .get(eureka.url("/eureka/apps/HELLO-SERVER"))
        .send()
        .await
        .expect("xml get")
        .text()
        .await
        .expect("xml body");
    assert!(xml.contains("<name>HELLO-SERVER</name>"), "{xml}");

    // Killing each syncer with SIGKILL and starting it again creates no duplicate.
    for which in ["sc", "eureka"] {
        if which == "sc" {
            sc_syncer.kill9();
            sc_syncer = sc.start_daemon(dir, "sc-syncer");
        } else {
            eureka_syncer.kill9();
            eureka_syncer = eureka.start_daemon(dir, "eureka-syncer");
        }
        // Wait for the restarted syncer to have reconciled at least once on both sides:
        // a new registration crosses only after that.
        let probe = format!("probe-{which}");
        let (probe_sid, probe_iid) = {
            let created: Value = http
                .post(sc.url("/v4/default/registry/microservices"))
                .header("X-Domain-Name", "default")
                .json(&serde_json::json!({"service": {"appId": "eureka", "serviceName": probe, "version": "0.0.1"}}))
                .send()
                .await
                .expect("create probe")
                .json()
                .await
                .expect("probe body");
            let sid = created["serviceId"].as_str().expect("sid").to_owned();
            let reg: Value = http
                .post(sc.url(&format!("/v4/default/registry/microservices/{sid}/instances")))
                .header("X-Domain-Name", "default")
                .json(&serde_json::json!({"instance": {"hostName": "probe", "endpoints": ["rest://127.0.0.1:1"]}}))
                .send()
                .await
                .expect("register probe")
                .json()
                .await
                .expect("probe body");
            (sid, reg["instanceId"].as_str().expect("iid").to_owned())
        };
        let probe_app = format!("PROBE-{}", which.to_uppercase());
        eventually(
            Duration::from_secs(30),
            "the probe crosses after the restart",
            &[&eureka_syncer, &sc_syncer],
            || async {
                (eureka_instances(&http, &eureka, &probe_app).await?.len() == 1).then_some(())
            },
        )
        .await;
        // Two more ticks for any duplicate to appear.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let copies = sc_find(&http, &sc, "eureka", "account-server", "latest")
            .await
            .expect("find after restart");
        assert_eq!(
            copies.len(),
            1,
            "account-server copies after restarting the {which} syncer: {copies:?}"
        );
        let copies = eureka_instances(&http, &eureka, "HELLO-SERVER")
            .await
            .expect("apps after restart");
        assert_eq!(
            copies.len(),
            1,
            "hello-server copies after restarting the {which} syncer: {copies:?}"
        );
        let _ = http
            .delete(sc.url(&format!(
                "/v4/default/registry/microservices/{probe_sid}/instances/{probe_iid}"
            )))
            .header("X-Domain-Name", "default")
            .send()
            .await;
    }

    // Keep hello-server alive, then check that removal crosses too: the Python client stops
    // and cancels; its copy disappears from the service-center side.
    let _ = http
        .put(sc.url(&format!(
            "/v4/default/registry/microservices/{hello_sid}/instances/{hello_iid}/heartbeat"
        )))
        .header("X-Domain-Name", "default")
        .send()
        .await;
    assert!(
        client.terminate(Duration::from_secs(10)),
        "py-eureka-client did not exit on SIGTERM"
    );
    let removed_at = Instant::now();
    eventually(
        Duration::from_secs(30),
        "account-server gone from the service-center side after the client cancelled",
        &[&eureka_syncer, &sc_syncer, &client],
        || async {
            sc_find(&http, &sc, "eureka", "account-server", "latest")
                .await?
                .is_empty()
                .then_some(())
        },
    )
    .await;
    eprintln!(
        "removal eureka -> service-center: {} ms (tick {} s)",
        removed_at.elapsed().as_millis(),
        tick()
    );
    drop((eureka_core, sc_core));
}
