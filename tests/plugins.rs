//! The registry plugins against the real built-in core over loopback: the `servicecenter`
//! plugin through `/v4`, the `eureka` plugin through `/eureka`.
//!
//! Each test starts its own core on `127.0.0.1:0`. A "dead" endpoint is a port that was bound
//! and released, so connecting to it is refused at once.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use syncer::servicecenter::{serve, Core};
use syncer_plugin_api::{
    Changes, Error, HealthCheck, Instance, InstanceStatus, Plugin, Service, ORIGIN_CLUSTER,
    ORIGIN_INSTANCE_ID, ORIGIN_SERVICE_ID,
};
use syncer_plugin_eureka::EurekaPlugin;
use syncer_plugin_servicecenter::ServiceCenterPlugin;
use tokio_util::sync::CancellationToken;

const TIMEOUT: Duration = Duration::from_secs(5);

/// A running built-in core; stops when dropped.
struct RunningCore {
    addr: SocketAddr,
    shutdown: CancellationToken,
}

impl Drop for RunningCore {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn start_core() -> RunningCore {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    let shutdown = CancellationToken::new();
    tokio::spawn(serve(listener, Core::new(), shutdown.clone()));
    RunningCore { addr, shutdown }
}

/// An address nothing listens on.
async fn dead_addr() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    listener.local_addr().expect("local addr")
}

fn servicecenter(endpoints: Vec<String>) -> ServiceCenterPlugin {
    ServiceCenterPlugin::new(syncer_plugin_servicecenter::Config {
        endpoints,
        request_timeout: TIMEOUT,
        ..Default::default()
    })
    .expect("plugin builds")
}

fn eureka(endpoints: Vec<String>) -> EurekaPlugin {
    EurekaPlugin::new(syncer_plugin_eureka::Config {
        endpoints,
        request_timeout: TIMEOUT,
        ..Default::default()
    })
    .expect("plugin builds")
}

fn origin(cluster: &str, service_id: &str, instance_id: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (ORIGIN_CLUSTER.to_owned(), cluster.to_owned()),
        (ORIGIN_SERVICE_ID.to_owned(), service_id.to_owned()),
        (ORIGIN_INSTANCE_ID.to_owned(), instance_id.to_owned()),
    ])
}

fn hello_service() -> Service {
    Service {
        domain_project: "default/default".into(),
        service_id: String::new(),
        app_id: "demo".into(),
        service_name: "hello-server".into(),
        version: "1.0.0".into(),
        environment: String::new(),
        properties: BTreeMap::new(),
    }
}

fn imported_instance(instance_id: &str) -> Instance {
    Instance {
        instance_id: instance_id.into(),
        service_id: "origin-service".into(),
        host_name: "node-1".into(),
        endpoints: vec![
            "http://10.0.0.1:8080".into(),
            "https://10.0.0.1:8443".into(),
        ],
        status: InstanceStatus::Up,
        health_check: Some(HealthCheck {
            interval_secs: 30,
            times: 3,
            url: String::new(),
        }),
        properties: origin("dc-east", "origin-service", "origin-instance"),
    }
}

#[tokio::test]
async fn servicecenter_plugin_registers_lists_heartbeats_and_unregisters() {
    let core = start_core().await;
    let dead = dead_addr().await;
    // The dead endpoint is listed first: every call must fail over to the live one.
    let plugin = servicecenter(vec![
        format!("http://{dead}"),
        core.addr.to_string(), // no scheme: http:// is assumed
    ]);

    let service_id = plugin
        .ensure_service(&hello_service())
        .await
        .expect("ensure service");
    assert!(!service_id.is_empty());
    assert_eq!(
        plugin
            .ensure_service(&hello_service())
            .await
            .expect("ensure again"),
        service_id
    );
    let local = Service {
        service_id: service_id.clone(),
        ..hello_service()
    };

    let instance = imported_instance("dc-east-0001");
    let instance_id = plugin.register(&local, &instance).await.expect("register");
    assert_eq!(instance_id, "dc-east-0001");
    // Registering the same id again renews instead of duplicating.
    plugin
        .register(&local, &instance)
        .await
        .expect("register again");

    for snapshot in [
        plugin.list().await.expect("list"),
        servicecenter(vec![core.addr.to_string()])
            .list()
            .await
            .expect("list"),
    ] {
        let service = snapshot
            .services
            .iter()
            .find(|s| s.service_id == service_id)
            .expect("service listed");
        assert_eq!(service.app_id, "demo");
        assert_eq!(service.service_name, "hello-server");
        assert_eq!(service.version, "1.0.0");
        assert_eq!(service.domain_project, "default/default");
        let listed: Vec<&Instance> = snapshot
            .instances
            .iter()
            .filter(|i| i.instance_id == instance_id)
            .collect();
        assert_eq!(listed.len(), 1, "one instance, not a duplicate");
        let listed = listed[0];
        assert_eq!(listed.service_id, service_id);
        assert_eq!(listed.endpoints, instance.endpoints);
        assert_eq!(listed.properties, instance.properties);
        assert_eq!(listed.status, InstanceStatus::Up);
        assert!(snapshot
            .services
            .iter()
            .all(|s| s.service_name != "SERVICECENTER"));
    }

    plugin
        .heartbeat(&local, &instance_id)
        .await
        .expect("heartbeat");
    plugin
        .unregister(&local, &instance_id)
        .await
        .expect("unregister");
    assert!(matches!(
        plugin.heartbeat(&local, &instance_id).await,
        Err(Error::NotFound(_))
    ));
    // Removing what is gone is not an error.
    plugin
        .unregister(&local, &instance_id)
        .await
        .expect("unregister again");
    let snapshot = plugin.list().await.expect("list");
    assert!(snapshot
        .instances
        .iter()
        .all(|i| i.instance_id != instance_id));
}

#[tokio::test]
async fn servicecenter_plugin_uses_the_chosen_service_id_and_reads_the_admin_dump() {
    let core = start_core().await;
    let plugin = ServiceCenterPlugin::new(syncer_plugin_servicecenter::Config {
        endpoints: vec![format!("http://{}", core.addr)],
        request_timeout: TIMEOUT,
        use_admin_dump: true,
        ..Default::default()
    })
    .expect("plugin builds");
    let service = Service {
        service_id: "chosen-service-id".into(),
        properties: BTreeMap::from([("team".to_owned(), "blue".to_owned())]),
        ..hello_service()
    };
    let service_id = plugin.ensure_service(&service).await.expect("ensure");
    assert_eq!(service_id, "chosen-service-id");
    plugin
        .register(&service, &imported_instance("dc-east-0002"))
        .await
        .expect("register");
    // Another tenant's service: the plugin reads every tenant (`scope=all`; the core's
    // dump is the caller's tenant only without it, issue 13 finding 8).
    let other = Service {
        service_id: "other-tenant-service".into(),
        domain_project: "t2/p2".into(),
        ..hello_service()
    };
    plugin.ensure_service(&other).await.expect("ensure t2/p2");

    let snapshot = plugin.list().await.expect("dump");
    assert!(
        snapshot
            .services
            .iter()
            .any(|s| s.service_id == "other-tenant-service" && s.domain_project == "t2/p2"),
        "every tenant is listed: {:?}",
        snapshot.services
    );
    let listed = snapshot
        .services
        .iter()
        .find(|s| s.service_id == service_id)
        .expect("service in dump");
    assert_eq!(listed.domain_project, "default/default");
    assert_eq!(listed.properties["team"], "blue");
    let instance = snapshot
        .instances
        .iter()
        .find(|i| i.instance_id == "dc-east-0002")
        .expect("instance in dump");
    assert_eq!(instance.service_id, service_id);
    assert_eq!(instance.properties[ORIGIN_CLUSTER], "dc-east");
}

fn dump_plugin(addr: SocketAddr) -> ServiceCenterPlugin {
    ServiceCenterPlugin::new(syncer_plugin_servicecenter::Config {
        endpoints: vec![format!("http://{addr}")],
        request_timeout: TIMEOUT,
        use_admin_dump: true,
        ..Default::default()
    })
    .expect("plugin builds")
}

/// [`hello_service`] as ensured at `plugin`'s registry (with its local serviceId).
async fn ensured_hello(plugin: &ServiceCenterPlugin) -> Service {
    Service {
        service_id: plugin
            .ensure_service(&hello_service())
            .await
            .expect("ensure"),
        ..hello_service()
    }
}

#[tokio::test]
async fn servicecenter_plugin_follows_the_core_change_log_from_a_dump_revision() {
    let core = start_core().await;
    let plugin = std::sync::Arc::new(dump_plugin(core.addr));
    let service = ensured_hello(&plugin).await;
    plugin
        .register(&service, &imported_instance("one"))
        .await
        .expect("register");
    let (snapshot, revision) = plugin.list_with_revision().await.expect("dump");
    assert_eq!(snapshot.instances.len(), 1);
    let revision = revision.expect("the built-in core numbers its dump");

    // Nothing changed: the read waits, then answers with nothing at the same revision.
    let started = std::time::Instant::now();
    let idle = plugin
        .changes(revision, Duration::from_millis(300), true)
        .await
        .expect("read");
    assert!(started.elapsed() >= Duration::from_millis(250));
    assert_eq!(
        idle,
        Some(Changes::Since(syncer_plugin_api::ChangeSet {
            revision,
            ..Default::default()
        }))
    );

    // A waiting read is answered by the next change, long before its wait ends.
    let waiting = {
        let plugin = plugin.clone();
        tokio::spawn(async move { plugin.changes(revision, Duration::from_secs(2), true).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = std::time::Instant::now();
    plugin
        .register(&service, &imported_instance("two"))
        .await
        .expect("register");
    plugin
        .unregister(&service, "one")
        .await
        .expect("unregister");
    let Some(Changes::Since(set)) = waiting.await.expect("joined").expect("read") else {
        panic!("expected changes");
    };
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(set.revision > revision);
    // Everything since `revision`, read again: "two" registered (with its service), "one" gone.
    let Some(Changes::Since(set)) = plugin
        .changes(revision, Duration::ZERO, true)
        .await
        .expect("read")
    else {
        panic!("expected changes");
    };
    let ids: Vec<_> = set
        .instances
        .iter()
        .map(|i| i.instance_id.as_str())
        .collect();
    assert_eq!(ids, vec!["two"]);
    assert_eq!(set.instances[0].properties[ORIGIN_CLUSTER], "dc-east");
    assert_eq!(set.services.len(), 1);
    assert_eq!(set.services[0].service_name, "hello-server");
    assert_eq!(set.removed.len(), 1);
    assert_eq!(set.removed[0].1, "one");

    // Without the imported copies' bodies (what an exporter reads): "two" is a copy (it
    // carries an origin marker), so only the removal is left.
    let Some(Changes::Since(local)) = plugin
        .changes(revision, Duration::ZERO, false)
        .await
        .expect("read")
    else {
        panic!("expected changes");
    };
    assert!(local.instances.is_empty(), "{:?}", local.instances);
    assert_eq!(local.removed, set.removed);
    assert_eq!(local.revision, set.revision);

    // A revision the core never had (it restarted): list again.
    assert_eq!(
        plugin
            .changes(set.revision + 100, Duration::ZERO, true)
            .await
            .expect("read"),
        Some(Changes::Relist)
    );
    // Without the admin dump (a real service-center's per-tenant listing), no change log.
    let plain = servicecenter(vec![format!("http://{}", core.addr)]);
    assert_eq!(
        plain
            .changes(revision, Duration::ZERO, true)
            .await
            .expect("read"),
        None
    );
}

#[tokio::test]
async fn servicecenter_plugin_registers_in_batches_and_reports_each_item() {
    let core = start_core().await;
    let plugin = dump_plugin(core.addr);
    let service = ensured_hello(&plugin).await;
    let gone = Service {
        service_id: "no-such-service".into(),
        ..hello_service()
    };
    let instances: Vec<Instance> = (0..1500)
        .map(|n| imported_instance(&format!("batch-{n:04}")))
        .collect();
    let mut items: Vec<(&Service, &Instance)> = instances.iter().map(|i| (&service, i)).collect();
    let orphan = imported_instance("orphan");
    items.push((&gone, &orphan));
    let results = plugin
        .register_batch(&items)
        .await
        .expect("batch call")
        .expect("the built-in core registers in batches");
    assert_eq!(results.len(), 1501);
    for (n, r) in results[..1500].iter().enumerate() {
        assert_eq!(r.as_deref().ok(), Some(format!("batch-{n:04}").as_str()));
    }
    assert!(
        matches!(results[1500], Err(Error::NotFound(_))),
        "{:?}",
        results[1500]
    );
    let listed = plugin.list().await.expect("dump");
    assert_eq!(listed.instances.len(), 1500);
    let one = listed
        .instances
        .iter()
        .find(|i| i.instance_id == "batch-0007")
        .expect("listed");
    assert_eq!(one.properties[ORIGIN_CLUSTER], "dc-east");
    assert_eq!(one.endpoints, imported_instance("x").endpoints);
    // Registering again renews, no duplicates.
    plugin
        .register_batch(&items[..10])
        .await
        .expect("again")
        .expect("batched");
    assert_eq!(plugin.list().await.expect("dump").instances.len(), 1500);
}

#[tokio::test]
async fn servicecenter_plugin_heartbeats_in_batches_and_names_the_lost() {
    let core = start_core().await;
    let plugin = dump_plugin(core.addr);
    let service = ensured_hello(&plugin).await;
    for id in ["hb-1", "hb-2"] {
        plugin
            .register(&service, &imported_instance(id))
            .await
            .expect("register");
    }
    let items = [(&service, "hb-1"), (&service, "lost"), (&service, "hb-2")];
    let results = plugin
        .heartbeat_batch(&items)
        .await
        .expect("batch call")
        .expect("service-center heartbeats in batches");
    assert!(results[0].is_ok() && results[2].is_ok(), "{results:?}");
    assert!(matches!(results[1], Err(Error::NotFound(_))), "{results:?}");
    let all_known = plugin
        .heartbeat_batch(&[(&service, "hb-2")])
        .await
        .expect("batch call")
        .expect("batched");
    assert!(all_known[0].is_ok());
}

#[tokio::test]
async fn servicecenter_plugin_creates_services_in_batches() {
    let core = start_core().await;
    let plugin = dump_plugin(core.addr);
    // One exists already under a server-made id; a chosen id that another key holds fails.
    let existing = plugin
        .ensure_service(&Service {
            service_name: "svc-0".into(),
            ..hello_service()
        })
        .await
        .expect("ensure");
    let services: Vec<Service> = (0..1200)
        .map(|n| Service {
            service_id: format!("chosen-{n:04}"),
            service_name: format!("svc-{n}"),
            ..hello_service()
        })
        .collect();
    let taken = Service {
        service_id: "chosen-0001".into(),
        service_name: "another-name".into(),
        ..hello_service()
    };
    let mut refs: Vec<&Service> = services.iter().collect();
    refs.push(&taken);
    let results = plugin
        .ensure_services(&refs)
        .await
        .expect("batch call")
        .expect("the built-in core creates in batches");
    assert_eq!(results.len(), 1201);
    assert_eq!(
        results[0].as_deref().ok(),
        Some(existing.as_str()),
        "an existing key answers its own id"
    );
    assert_eq!(results[7].as_deref().ok(), Some("chosen-0007"));
    assert!(results[1200].is_err(), "{:?}", results[1200]);
    let listed = plugin.list().await.expect("dump");
    // Services without instances are listed too (the dump lists every service).
    assert!(listed
        .services
        .iter()
        .any(|s| s.service_id == "chosen-1199"));
}

#[tokio::test]
async fn batch_registration_refuses_malformed_batches_with_400() {
    let core = start_core().await;
    let http = reqwest::Client::new();
    let url = format!(
        "http://{}/v4/default/registry/instances/action?type=register",
        core.addr
    );
    let too_many: Vec<serde_json::Value> = (0..1001)
        .map(|n| serde_json::json!({"serviceId": "s", "instanceId": format!("i{n}")}))
        .collect();
    for body in [
        "not json".to_owned(),
        r#"{"instances":[]}"#.to_owned(),
        r#"{"services":[],"instances":[]}"#.to_owned(),
        serde_json::json!({ "instances": too_many }).to_string(),
    ] {
        let resp = http.post(&url).body(body).send().await.expect("answered");
        assert_eq!(resp.status().as_u16(), 400);
        let v: serde_json::Value = resp.json().await.expect("json");
        assert_eq!(v["errorCode"], "400001");
    }
    let resp = http
        .post(url.replace("register", "bogus"))
        .body("{}")
        .send()
        .await
        .expect("answered");
    assert_eq!(resp.status().as_u16(), 400);
}

#[tokio::test]
async fn the_change_log_endpoint_refuses_bad_input_with_400() {
    let core = start_core().await;
    let http = reqwest::Client::new();
    for (query, status) in [
        ("", 400),
        ("?since=abc", 400),
        ("?since=0&wait=-1", 400),
        ("?since=0&wait=10", 200),
    ] {
        let resp = http
            .get(format!(
                "http://{}/v4/default/admin/changes{query}",
                core.addr
            ))
            .send()
            .await
            .expect("answered");
        assert_eq!(resp.status().as_u16(), status, "{query}");
        let body: serde_json::Value = resp.json().await.expect("json body");
        if status == 400 {
            assert_eq!(body["errorCode"], "400001", "{query}: {body}");
        }
    }
    let resp = http
        .get(format!(
            "http://{}/v4/other/admin/changes?since=0",
            core.addr
        ))
        .send()
        .await
        .expect("answered");
    assert_eq!(resp.status().as_u16(), 403);
}

#[tokio::test]
async fn servicecenter_plugin_heartbeat_of_an_unknown_instance_is_not_found() {
    let core = start_core().await;
    let plugin = servicecenter(vec![format!("http://{}", core.addr)]);
    let service_id = plugin
        .ensure_service(&hello_service())
        .await
        .expect("ensure");
    let local = Service {
        service_id,
        ..hello_service()
    };
    assert!(matches!(
        plugin.heartbeat(&local, "no-such-instance").await,
        Err(Error::NotFound(_))
    ));
    let gone = Service {
        service_id: "no-such-service".into(),
        ..hello_service()
    };
    assert!(matches!(
        plugin.heartbeat(&gone, "no-such-instance").await,
        Err(Error::NotFound(_))
    ));
}

#[tokio::test]
async fn servicecenter_plugin_recreates_a_deleted_service_when_registering() {
    let core = start_core().await;
    let plugin = servicecenter(vec![format!("http://{}", core.addr)]);
    let service_id = plugin
        .ensure_service(&hello_service())
        .await
        .expect("ensure");
    let local = Service {
        service_id: service_id.clone(),
        ..hello_service()
    };
    // An operator deletes the service behind the plugin's back; its id stays cached.
    let deleted = reqwest::Client::new()
        .delete(format!(
            "http://{}/v4/default/registry/microservices/{service_id}?force=true",
            core.addr
        ))
        .header("X-Domain-Name", "default")
        .send()
        .await
        .expect("delete service");
    assert!(deleted.status().is_success(), "{}", deleted.status());

    plugin
        .register(&local, &imported_instance("dc-east-0005"))
        .await
        .expect("register recreates the service");
    let snapshot = plugin.list().await.expect("list");
    let instance = snapshot
        .instances
        .iter()
        .find(|i| i.instance_id == "dc-east-0005")
        .expect("instance listed");
    // The local service id is the one asked for, so the importer's mapping still holds.
    assert_eq!(instance.service_id, service_id);
}

#[tokio::test]
async fn eureka_plugin_registers_lists_heartbeats_and_unregisters() {
    let core = start_core().await;
    let dead = dead_addr().await;
    let plugin = eureka(vec![
        format!("http://{dead}/eureka"),
        format!("http://{}/eureka/", core.addr),
    ]);
    let service = Service {
        domain_project: "default/default".into(),
        service_id: String::new(),
        app_id: "demo".into(),
        service_name: "account-server".into(),
        version: "1.0.0".into(),
        environment: String::new(),
        properties: BTreeMap::new(),
    };
    let service_id = plugin.ensure_service(&service).await.expect("ensure");
    assert_eq!(service_id, "account-server");
    let local = Service {
        service_id: service_id.clone(),
        ..service
    };

    let instance = Instance {
        health_check: Some(HealthCheck {
            interval_secs: 10,
            times: 2,
            url: "http://10.0.0.1:8080/health".into(),
        }),
        ..imported_instance("dc-east-0003")
    };
    let instance_id = plugin.register(&local, &instance).await.expect("register");
    assert_eq!(instance_id, "dc-east-0003");

    let snapshot = plugin.list().await.expect("list");
    let listed_service = snapshot
        .services
        .iter()
        .find(|s| s.service_id == "account-server")
        .expect("app listed");
    assert_eq!(listed_service.app_id, "eureka");
    assert_eq!(listed_service.version, "0.0.1");
    let listed = snapshot
        .instances
        .iter()
        .find(|i| i.instance_id == instance_id)
        .expect("instance listed");
    assert_eq!(listed.service_id, "account-server");
    assert_eq!(listed.endpoints, instance.endpoints);
    // The metadata, plus the Eureka-only fields under reserved `eureka.*` keys.
    let metadata: BTreeMap<String, String> = listed
        .properties
        .iter()
        .filter(|(k, _)| !k.starts_with(syncer_plugin_eureka::keys::PREFIX))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert_eq!(metadata, instance.properties);
    assert_eq!(
        listed.properties[syncer_plugin_eureka::keys::VIP_ADDRESS],
        "account-server"
    );
    assert_eq!(listed.status, InstanceStatus::Up);

    plugin
        .heartbeat(&local, &instance_id)
        .await
        .expect("heartbeat");
    plugin
        .unregister(&local, &instance_id)
        .await
        .expect("unregister");
    assert!(matches!(
        plugin.heartbeat(&local, &instance_id).await,
        Err(Error::NotFound(_))
    ));
    plugin
        .unregister(&local, &instance_id)
        .await
        .expect("unregister again");
}

#[tokio::test]
async fn an_eureka_registration_is_an_eureka_app_service_to_the_servicecenter_plugin() {
    let core = start_core().await;
    let eureka = eureka(vec![format!("http://{}/eureka", core.addr)]);
    let sc = servicecenter(vec![format!("http://{}", core.addr)]);
    let service = Service {
        service_name: "account-server".into(),
        ..Service::default()
    };
    eureka
        .register(&service, &imported_instance("dc-east-0004"))
        .await
        .expect("register through eureka");

    let snapshot = sc.list().await.expect("list through v4");
    let listed = snapshot
        .services
        .iter()
        .find(|s| s.app_id == "eureka" && s.service_name == "account-server")
        .expect("eureka app as a microservice");
    assert_eq!(listed.version, "0.0.1");
    let instance = snapshot
        .instances
        .iter()
        .find(|i| i.instance_id == "dc-east-0004")
        .expect("instance through v4");
    assert_eq!(instance.service_id, listed.service_id);
    assert_eq!(instance.properties[ORIGIN_INSTANCE_ID], "origin-instance");
}

#[tokio::test]
async fn eureka_plugin_follows_the_registry_with_deltas_checked_by_the_hash() {
    let core = start_core().await;
    let plugin = eureka(vec![format!("http://{}/eureka", core.addr)]);
    let service = Service {
        service_name: "account-server".into(),
        ..hello_service()
    };
    assert!(plugin
        .list()
        .await
        .expect("first list")
        .instances
        .is_empty());
    assert_eq!(
        plugin.fetch_counts(),
        (1, 0),
        "the first list is a full fetch"
    );
    let instance = imported_instance("dc-east-0004");
    plugin
        .register(&service, &instance)
        .await
        .expect("register");
    let listed = plugin.list().await.expect("list after register");
    assert_eq!(listed.instances.len(), 1);
    assert_eq!(listed.instances[0].instance_id, "dc-east-0004");
    assert_eq!(plugin.fetch_counts(), (1, 1), "the change came as a delta");
    plugin
        .unregister(&service, "dc-east-0004")
        .await
        .expect("unregister");
    assert!(plugin.list().await.expect("list").instances.is_empty());
    assert_eq!(plugin.fetch_counts(), (1, 2));
}

#[tokio::test]
async fn an_unreachable_registry_is_unavailable() {
    let dead = dead_addr().await;
    let sc = servicecenter(vec![format!("http://{dead}")]);
    assert!(matches!(sc.list().await, Err(Error::Unavailable { .. })));
    assert!(matches!(
        sc.ensure_service(&hello_service()).await,
        Err(Error::Unavailable { .. })
    ));
    let eureka = eureka(vec![format!("http://{dead}/eureka")]);
    assert!(matches!(
        eureka.list().await,
        Err(Error::Unavailable { .. })
    ));
    assert!(matches!(
        eureka.heartbeat(&hello_service(), "x").await,
        Err(Error::Unavailable { .. })
    ));
}
