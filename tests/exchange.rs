//! The gRPC exchange between leaders, over loopback: a watch stream starts with the whole
//! export (in parts), carries each change with its revision, and a watcher that reconnects
//! with the epoch and revision it holds gets only the changes it missed.

use std::sync::Arc;
use std::time::Duration;

use syncer::exchange::client::ExchangeClient;
use syncer::exchange::proto::ExportEvent;
use syncer::exchange::server::ExchangeServer;
use syncer::sync::exporter::Exporter;
use syncer_plugin_api::{Instance, Service, Snapshot};
use syncer_plugin_servicecenter::{Config, ServiceCenterPlugin};
use tokio_util::sync::CancellationToken;

fn export(ports: &[u16]) -> Snapshot {
    Snapshot {
        services: vec![Service {
            domain_project: "default/default".into(),
            service_id: "s1".into(),
            app_id: "app".into(),
            service_name: "hello".into(),
            version: "1.0.0".into(),
            ..Default::default()
        }],
        instances: ports
            .iter()
            .map(|port| Instance {
                instance_id: format!("i{port}"),
                service_id: "s1".into(),
                endpoints: vec![format!("http://127.0.0.1:{port}")],
                ..Default::default()
            })
            .collect(),
    }
}

async fn next(stream: &mut tonic::Streaming<ExportEvent>) -> ExportEvent {
    tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("an event within 10 s")
        .expect("stream ok")
        .expect("stream open")
}

#[tokio::test]
async fn a_reconnecting_watcher_resumes_with_the_changes_it_missed() {
    // The feed is driven directly; the plugin (no registry behind it) is never called.
    let plugin = ServiceCenterPlugin::new(Config {
        endpoints: vec!["http://127.0.0.1:9".into()],
        ..Config::default()
    })
    .expect("plugin");
    let exporter = Arc::new(Exporter::new(Arc::new(plugin)));
    let feed = exporter.feed();
    feed.update(&export(&[1, 2, 3])).expect("revision 1");
    let epoch = feed.epoch();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let shutdown = CancellationToken::new();
    let server = ExchangeServer::new("east".into(), "servicecenter", exporter.clone());
    let serving = tokio::spawn(server.run(listener, shutdown.clone()));
    let client = ExchangeClient::new("west".into(), Duration::from_secs(5));

    // From nothing: the whole export, then each change.
    let mut stream = client.watch(addr, "east", 0, 0).await.expect("watch");
    let whole = next(&mut stream).await;
    assert!(whole.full && !whole.more);
    assert_eq!((whole.epoch, whole.revision), (epoch, 1));
    assert_eq!(whole.data.as_ref().map(|d| d.instances.len()), Some(3));
    feed.update(&export(&[1, 2])).expect("revision 2");
    let change = next(&mut stream).await;
    assert!(!change.full);
    assert_eq!(change.revision, 2);
    assert_eq!(change.removed.len(), 1);
    drop(stream);

    // Missed while away: revisions 3 and 4.
    feed.update(&export(&[1, 2, 4])).expect("revision 3");
    feed.update(&export(&[2, 4])).expect("revision 4");
    let mut stream = client
        .watch(addr, "east", epoch, 2)
        .await
        .expect("watch again");
    let third = next(&mut stream).await;
    let fourth = next(&mut stream).await;
    assert!(
        !third.full && !fourth.full,
        "only the changes, not the whole export"
    );
    assert_eq!((third.revision, fourth.revision), (3, 4));
    assert_eq!(
        third
            .data
            .as_ref()
            .map(|d| d.instances[0].instance_id.as_str()),
        Some("i4")
    );
    assert_eq!(fourth.removed[0].instance_id, "i1");
    feed.update(&export(&[2])).expect("revision 5");
    assert_eq!(next(&mut stream).await.revision, 5);
    drop(stream);

    // Another run's epoch (the exporter restarted since): the whole export again.
    let mut stream = client
        .watch(addr, "east", epoch + 1, 2)
        .await
        .expect("watch");
    let whole = next(&mut stream).await;
    assert!(whole.full);
    assert_eq!(whole.revision, 5);
    assert_eq!(whole.data.as_ref().map(|d| d.instances.len()), Some(1));

    shutdown.cancel();
    drop(stream);
    let _ = serving.await;
}
