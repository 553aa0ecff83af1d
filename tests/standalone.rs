//! `syncer daemon` with no --sc-addr runs the built-in core itself: two such daemons joined
//! by gossip are two complete sites that sync each other.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::{eventually, free_tcp_port, free_udp_port, Proc};

struct Standalone {
    proc: Proc,
    registry: String,
}

fn start(dir: &std::path::Path, node: &str, gossip: u16, join: Option<u16>) -> Standalone {
    let registry_port = free_tcp_port();
    let rpc_port = free_tcp_port();
    let mut args = vec![
        "daemon".to_owned(),
        "--node".into(),
        node.into(),
        "--builtin-addr".into(),
        format!("127.0.0.1:{registry_port}"),
        "--bind-addr".into(),
        format!("127.0.0.1:{gossip}"),
        "--rpc-addr".into(),
        format!("127.0.0.1:{rpc_port}"),
        "--ticker-interval".into(),
        "1".into(),
    ];
    if let Some(j) = join {
        args.push("--join-addr".into());
        args.push(format!("127.0.0.1:{j}"));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Standalone {
        proc: Proc::syncer(dir, node, &args),
        registry: format!("http://127.0.0.1:{registry_port}"),
    }
}

/// The instances of appId `eureka`, serviceName `orders` found at `registry` (None while it
/// does not answer).
async fn find_orders(http: &reqwest::Client, registry: &str) -> Option<Vec<Value>> {
    let body: Value = http
        .get(format!("{registry}/v4/default/registry/instances"))
        .query(&[
            ("appId", "eureka"),
            ("serviceName", "orders"),
            ("version", "latest"),
        ])
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    Some(body["instances"].as_array().cloned().unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_standalone_daemons_sync_their_built_in_registries() {
    let dir = tempfile::tempdir().expect("tempdir");
    let http = reqwest::Client::new();
    let gossip_a = free_udp_port();
    let a = start(dir.path(), "site-a", gossip_a, None);
    let b = start(dir.path(), "site-b", free_udp_port(), Some(gossip_a));

    // Register on A through its Eureka API once its built-in core answers.
    let body = serde_json::json!({"instance": {
        "instanceId": "10.1.2.3:orders:8080", "hostName": "orders-host", "app": "ORDERS",
        "ipAddr": "10.1.2.3", "status": "UP", "port": {"$": 8080, "@enabled": "true"},
        "dataCenterInfo": {"@class": "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo", "name": "MyOwn"}
    }});
    eventually(
        Duration::from_secs(20),
        "site-a's built-in core accepts a registration",
        &[&a.proc],
        || async {
            let resp = http
                .post(format!("{}/eureka/apps/ORDERS", a.registry))
                .json(&body)
                .send()
                .await
                .ok()?;
            (resp.status().as_u16() == 204).then_some(())
        },
    )
    .await;

    // B imports it and serves it through its own service-center API.
    let found: Vec<Value> = eventually(
        Duration::from_secs(30),
        "ORDERS imported by site-b",
        &[&a.proc, &b.proc],
        || async {
            let list = find_orders(&http, &b.registry).await?;
            (!list.is_empty()).then_some(list)
        },
    )
    .await;
    assert_eq!(found.len(), 1);
    let props = &found[0]["properties"];
    assert_eq!(
        props["syncerOriginCluster"], "site-a",
        "origin marker: {props}"
    );
    assert_eq!(props["syncerOriginInstanceId"], "10.1.2.3:orders:8080");
    assert!(found[0]["endpoints"]
        .as_array()
        .is_some_and(|e| e.iter().any(|e| e == "rest://10.1.2.3:8080")));

    // The copy is not exported back to A (loop guard): A still has exactly one instance.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let body: Value = http
        .get(format!("{}/eureka/apps/ORDERS", a.registry))
        .header("Accept", "application/json")
        .send()
        .await
        .expect("get app")
        .json()
        .await
        .expect("json");
    let instances = body["application"]["instance"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(instances.len(), 1, "{body}");

    // A copy removed behind the syncer's back at B is registered again within a tick or
    // two (the reconcile sees it missing, or its batch heartbeat is told it is lost).
    let copy_sid = found[0]["serviceId"]
        .as_str()
        .expect("serviceId")
        .to_owned();
    let copy_iid = found[0]["instanceId"]
        .as_str()
        .expect("instanceId")
        .to_owned();
    let resp = http
        .delete(format!(
            "{}/v4/default/registry/microservices/{copy_sid}/instances/{copy_iid}",
            b.registry
        ))
        .send()
        .await
        .expect("delete the copy");
    assert_eq!(resp.status().as_u16(), 200);
    let back: Vec<Value> = eventually(
        Duration::from_secs(15),
        "the removed copy registered again at site-b",
        &[&a.proc, &b.proc],
        || async {
            let list = find_orders(&http, &b.registry).await?;
            (!list.is_empty()).then_some(list)
        },
    )
    .await;
    assert_eq!(back.len(), 1);
    assert_eq!(
        back[0]["instanceId"],
        copy_iid.as_str(),
        "same deterministic id"
    );

    // Cancel at A: the copy leaves B.
    let resp = http
        .delete(format!(
            "{}/eureka/apps/ORDERS/10.1.2.3:orders:8080",
            a.registry
        ))
        .send()
        .await
        .expect("cancel");
    assert_eq!(resp.status().as_u16(), 200);
    eventually(
        Duration::from_secs(30),
        "ORDERS removed from site-b",
        &[&a.proc, &b.proc],
        || async {
            find_orders(&http, &b.registry)
                .await?
                .is_empty()
                .then_some(())
        },
    )
    .await;
}
