//! The gRPC exchange between leaders, over loopback: a watch stream starts with the whole
//! export (in parts), carries each change with its revision, and a watcher that reconnects
//! with the epoch and revision it holds gets only the changes it missed.

use std::sync::Arc;
use std::time::Duration;

use syncer::exchange::client::ExchangeClient;
use syncer::exchange::proto::ExportEvent;
use syncer::exchange::server::{ExchangeServer, Limits};
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

/// A server for `exporter` on loopback within `limits`: its address, shutdown and task.
async fn serve(
    exporter: Arc<Exporter>,
    limits: Limits,
) -> (
    std::net::SocketAddr,
    CancellationToken,
    impl Fn() -> usize,
    tokio::task::JoinHandle<Result<(), syncer::exchange::server::Error>>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let shutdown = CancellationToken::new();
    let server = ExchangeServer::new("east".into(), "servicecenter", exporter).with_limits(limits);
    let watching = server.watch_count();
    let serving = tokio::spawn(server.run(listener, shutdown.clone()));
    (addr, shutdown, watching, serving)
}

fn exporter_of(instances: usize) -> Arc<Exporter> {
    let plugin = ServiceCenterPlugin::new(Config {
        endpoints: vec!["http://127.0.0.1:9".into()],
        ..Config::default()
    })
    .expect("plugin");
    let exporter = Arc::new(Exporter::new(Arc::new(plugin)));
    let ports: Vec<u16> = (0..instances).map(|i| 10_000 + i as u16).collect();
    exporter.feed().update(&export(&ports)).expect("revision 1");
    exporter
}

#[tokio::test]
async fn a_request_larger_than_the_request_limit_is_refused() {
    let (addr, shutdown, _, serving) = serve(exporter_of(3), Limits::default()).await;
    // Issue 13 finding 1: a Pull whose cluster string is huge was decoded whole (512 MiB).
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let mut raw = syncer::exchange::proto::sync_client::SyncClient::new(channel);
    let status = raw
        .pull(syncer::exchange::proto::PullRequest {
            cluster: "x".repeat(1024 * 1024),
            ..Default::default()
        })
        .await
        .expect_err("too large");
    assert!(
        matches!(
            status.code(),
            tonic::Code::OutOfRange | tonic::Code::ResourceExhausted
        ),
        "{status:?}"
    );
    // An ordinary request on the same connection still works.
    let reply = raw
        .pull(syncer::exchange::proto::PullRequest {
            cluster: "west".into(),
            ..Default::default()
        })
        .await
        .expect("a small request");
    assert_eq!(reply.get_ref().instances.len(), 3);
    shutdown.cancel();
    let _ = serving.await;
}

#[tokio::test]
async fn watch_streams_per_peer_are_capped_and_a_closed_one_frees_its_place() {
    let limits = Limits {
        max_watches_per_peer: 2,
        ..Limits::default()
    };
    let (addr, shutdown, watching, serving) = serve(exporter_of(3), limits).await;
    let client = ExchangeClient::new("west".into(), Duration::from_secs(5));
    let mut first = client.watch(addr, "east", 0, 0).await.expect("first");
    let mut second = client.watch(addr, "east", 0, 0).await.expect("second");
    next(&mut first).await;
    next(&mut second).await;
    let err = client
        .watch(addr, "east", 0, 0)
        .await
        .expect_err("a third from the same peer");
    assert!(err.to_string().contains("too many watch streams"), "{err}");
    assert_eq!(watching(), 2);
    drop(first);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while watching() != 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "the place is given back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut third = client.watch(addr, "east", 0, 0).await.expect("room again");
    next(&mut third).await;
    shutdown.cancel();
    drop((second, third));
    let _ = serving.await;
}

#[tokio::test]
async fn watch_streams_from_many_addresses_are_capped_in_all() {
    // The hostile bench's finding 2b: the per-peer cap counts an address, so 500 stalled
    // streams from 63 loopback addresses held 4 GB. Streams from all peers are capped too.
    let limits = Limits {
        max_watches_per_peer: 8,
        max_watches: 2,
        ..Limits::default()
    };
    let (addr, shutdown, watching, serving) = serve(exporter_of(3), limits).await;
    let from = |last: u8| {
        tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .expect("uri")
            .local_address(Some(std::net::IpAddr::from([127, 0, 0, last])))
    };
    let watch = |endpoint: tonic::transport::Endpoint| async move {
        let channel = endpoint.connect().await.expect("connect");
        syncer::exchange::proto::sync_client::SyncClient::new(channel)
            .watch(syncer::exchange::proto::WatchRequest {
                cluster: "west".into(),
                ..Default::default()
            })
            .await
    };
    let mut first = watch(from(2)).await.expect("a first peer").into_inner();
    let mut second = watch(from(3)).await.expect("a second peer").into_inner();
    next(&mut first).await;
    next(&mut second).await;
    let refused = watch(from(4)).await.expect_err("a third address");
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
    assert!(refused.message().contains("in all"), "{refused}");
    assert_eq!(watching(), 2);
    shutdown.cancel();
    drop((first, second));
    let _ = serving.await;
}

#[tokio::test]
async fn a_watcher_that_reads_nothing_is_dropped_after_the_stall_timeout() {
    // Issue 13 finding 2: streams that never read held megabytes each, for ever.
    let limits = Limits {
        stall_timeout: Duration::from_millis(500),
        ..Limits::default()
    };
    let exporter = exporter_of(20_000);
    let (addr, shutdown, watching, serving) = serve(exporter.clone(), limits).await;
    let client = ExchangeClient::new("west".into(), Duration::from_secs(5));
    // A peer that grants HTTP/2's initial 64 KiB window and never more (it never reads): the
    // whole export (20 parts of 1,000 records) is far more than that and the stream's
    // buffer, so the server's sends stop, then time out.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("uri")
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(65_535)
        .connect()
        .await
        .expect("connect");
    let stalled = syncer::exchange::proto::sync_client::SyncClient::new(channel)
        .watch(syncer::exchange::proto::WatchRequest {
            cluster: "west".into(),
            ..Default::default()
        })
        .await
        .expect("watch");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while watching() != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "a stalled watch stream is still open after 20 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A reader is served as before.
    let mut reader = client.watch(addr, "east", 0, 0).await.expect("watch");
    let mut records = 0;
    loop {
        let event = next(&mut reader).await;
        records += event.data.as_ref().map_or(0, |d| d.instances.len());
        if !event.more {
            break;
        }
    }
    assert_eq!(records, 20_000);
    shutdown.cancel();
    drop((stalled, reader));
    let _ = serving.await;
}

#[tokio::test]
async fn connections_over_the_limit_wait_until_one_closes() {
    // Issue 13 finding 5: idle connections were never bounded.
    let limits = Limits {
        max_connections: 1,
        ..Limits::default()
    };
    let (addr, shutdown, _, serving) = serve(exporter_of(3), limits).await;
    let first = ExchangeClient::new("west".into(), Duration::from_secs(5));
    let mut held = first
        .watch(addr, "east", 0, 0)
        .await
        .expect("first connection");
    next(&mut held).await;
    let second = ExchangeClient::new("north".into(), Duration::from_millis(800));
    assert!(
        second.pull(addr, "east").await.is_err(),
        "a second connection is served beyond the limit"
    );
    drop(held);
    drop(first);
    let second = ExchangeClient::new("north".into(), Duration::from_secs(5));
    let pulled = second
        .pull(addr, "east")
        .await
        .expect("served once the first closed");
    assert_eq!(pulled.snapshot.instances.len(), 3);
    shutdown.cancel();
    let _ = serving.await;
}

/// A raw HTTP/2 connection to `addr` whose receive windows are HTTP/2's initial 64 KiB and
/// never grow: it never reads what it is sent, so it never sends WINDOW_UPDATE.
async fn raw_h2(
    addr: std::net::SocketAddr,
) -> (
    h2::client::SendRequest<bytes::Bytes>,
    tokio::task::JoinHandle<Result<(), h2::Error>>,
) {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (send, connection) = h2::client::Builder::new()
        .handshake(tcp)
        .await
        .expect("h2 handshake");
    (send, tokio::spawn(connection))
}

/// Opens a `Watch` stream on `send` as a raw gRPC request; its response, unread.
async fn raw_watch(send: &mut h2::client::SendRequest<bytes::Bytes>) -> h2::client::ResponseFuture {
    let message = prost::Message::encode_to_vec(&syncer::exchange::proto::WatchRequest {
        cluster: "west".into(),
        ..Default::default()
    });
    let mut body = vec![0u8];
    body.extend_from_slice(&u32::try_from(message.len()).expect("small").to_be_bytes());
    body.extend_from_slice(&message);
    let request = axum::http::Request::post("/proto.Sync/Watch")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .expect("request");
    let ready = send.clone().ready().await.expect("stream slot");
    *send = ready;
    let (response, mut stream) = send.send_request(request, false).expect("send");
    stream
        .send_data(bytes::Bytes::from(body), true)
        .expect("request body");
    response
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: not after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn regression_13_stalled_raw_h2_watch_streams_are_bounded_and_their_connection_dropped() {
    // Issue 13 finding 2: 500 raw HTTP/2 Watch streams that never sent WINDOW_UPDATE held
    // about 15 MB each, for ever.
    let limits = Limits {
        max_watches_per_peer: 4,
        max_streams_per_connection: 8,
        stall_timeout: Duration::from_millis(500),
        ..Limits::default()
    };
    let (addr, shutdown, watching, serving) = serve(exporter_of(20_000), limits).await;
    let (mut send, connection) = raw_h2(addr).await;
    let mut responses = Vec::new();
    for _ in 0..6 {
        responses.push(raw_watch(&mut send).await);
    }
    // Four watch streams per peer; the others are refused with RESOURCE_EXHAUSTED.
    let mut refused = 0;
    let mut streaming = Vec::new();
    for response in responses {
        let response = response.await.expect("response head");
        match response.headers().get("grpc-status") {
            Some(status) => {
                assert_eq!(status, "8", "{:?}", response.headers());
                refused += 1;
            }
            None => streaming.push(response),
        }
    }
    assert_eq!((streaming.len(), refused), (4, 2));
    // The server's SETTINGS bound the streams of one connection.
    assert_eq!(send.current_max_send_streams(), 8);
    // Nothing is read: the streams stall, the server drops the connection with them.
    let connection = tokio::time::timeout(Duration::from_secs(30), connection)
        .await
        .expect("the server closes a connection whose streams read nothing");
    drop(connection);
    wait_until("the stalled streams are given back", || watching() == 0).await;
    // Ordinary peers are still served.
    let client = ExchangeClient::new("north".into(), Duration::from_secs(5));
    let pulled = client.pull(addr, "east").await.expect("pull");
    assert_eq!(pulled.snapshot.instances.len(), 20_000);
    shutdown.cancel();
    drop(streaming);
    let _ = serving.await;
}

#[tokio::test]
async fn regression_13_idle_exchange_connections_are_closed_and_free_their_place() {
    // Issue 13 finding 5: 1,000 idle gRPC connections were never closed.
    let limits = Limits {
        idle_timeout: Duration::from_millis(300),
        first_request_timeout: Duration::from_millis(300),
        max_connections: 8,
        ..Limits::default()
    };
    let exporter = exporter_of(3);
    let (addr, shutdown, _, serving) = serve(exporter.clone(), limits).await;
    // Twice the connection limit of idle HTTP/2 connections (they answer pings, send
    // nothing); those over the limit wait in the backlog.
    let mut idle = Vec::new();
    for _ in 0..16 {
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        idle.push(tokio::spawn(async move {
            let (_send, connection) = h2::client::handshake(tcp).await?;
            connection.await
        }));
    }
    for connection in idle {
        tokio::time::timeout(Duration::from_secs(30), connection)
            .await
            .expect("the server closes an idle connection")
            .expect("task")
            .ok();
    }
    let client = ExchangeClient::new("north".into(), Duration::from_secs(5));
    let pulled = client.pull(addr, "east").await.expect("pull");
    assert_eq!(pulled.snapshot.instances.len(), 3);
    // A watch stream is a call in flight: its connection is not idle.
    let mut watch = client.watch(addr, "east", 0, 0).await.expect("watch");
    next(&mut watch).await;
    // Three idle timeouts pass; the stream still carries the next change.
    tokio::time::sleep(Duration::from_millis(900)).await;
    exporter
        .feed()
        .update(&export(&[1, 2]))
        .expect("revision 2");
    assert_eq!(next(&mut watch).await.revision, 2);
    shutdown.cancel();
    drop(watch);
    let _ = serving.await;
}
