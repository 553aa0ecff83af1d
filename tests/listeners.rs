//! The built-in core's HTTP listener under slow, idle and excess connections (issue 13
//! finding 5), over real sockets on loopback: slowloris clients and idle connections are
//! closed, connections over the limit wait, an ordinary request is still answered, and
//! `syncer servicecenter` out of file descriptors backs off and warns once, not every second.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use syncer::servicecenter::{serve_with, HttpLimits};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

const LIST: &str = "/v4/default/registry/microservices";

/// A core on loopback within `limits`: its address, its shutdown, what keeps it alive.
async fn start(limits: HttpLimits) -> (SocketAddr, CancellationToken, support::TestCore) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let shutdown = CancellationToken::new();
    let core = support::open_core(support::Store::Memory).await;
    tokio::spawn(serve_with(
        listener,
        core.core.clone(),
        None,
        limits,
        shutdown.clone(),
    ));
    (addr, shutdown, core)
}

/// An ordinary request, waiting up to `timeout`: its status.
async fn list(addr: SocketAddr, timeout: Duration) -> Result<u16, reqwest::Error> {
    let http = reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .expect("client");
    let response = http.get(format!("http://{addr}{LIST}")).send().await?;
    Ok(response.status().as_u16())
}

/// A slowloris client: one header line every 100 ms, never the end of the head. True when
/// the server closed the connection (within 30 s).
async fn slowloris(addr: SocketAddr) -> bool {
    let Ok(mut tcp) = TcpStream::connect(addr).await else {
        return false;
    };
    trickle_head(&mut tcp, Duration::from_secs(30)).await
}

/// Sends a request head's first line, then one header line every 100 ms and never its end,
/// on `tcp`: true when the server closed the connection within `within`.
async fn trickle_head(tcp: &mut TcpStream, within: Duration) -> bool {
    let head = format!("GET {LIST} HTTP/1.1\r\nHost: core\r\n");
    if tcp.write_all(head.as_bytes()).await.is_err() {
        return true;
    }
    let deadline = tokio::time::Instant::now() + within;
    let mut buf = [0u8; 256];
    while tokio::time::Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_millis(100), tcp.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
            Err(_) => {
                if tcp.write_all(b"X-Slow: 1\r\n").await.is_err() {
                    return true;
                }
            }
        }
    }
    false
}

#[tokio::test]
async fn regression_13_slowloris_connections_are_closed_and_real_requests_served() {
    let limits = HttpLimits {
        max_connections: 8,
        header_read_timeout: Duration::from_secs(1),
        ..HttpLimits::default()
    };
    let (addr, shutdown, _core) = start(limits).await;
    // Twice the connection limit of slowloris clients.
    let slow: Vec<_> = (0..16).map(|_| tokio::spawn(slowloris(addr))).collect();
    // An ordinary request gets its turn.
    assert_eq!(
        list(addr, Duration::from_secs(30)).await.expect("served"),
        200
    );
    for client in slow {
        assert!(
            client.await.expect("task"),
            "a slowloris connection is still open after 30 s"
        );
    }
    shutdown.cancel();
}

/// One `GET` on `tcp` (HTTP/1.1, kept alive): the status line of its answer, read whole
/// (its head, then `content-length` bytes).
async fn get_on(tcp: &mut TcpStream) -> String {
    let request = format!("GET {LIST} HTTP/1.1\r\nHost: core\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.expect("request");
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let read = async {
        loop {
            let n = tcp.read(&mut buf).await.expect("read");
            assert!(n > 0, "closed before the whole answer");
            answer.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&answer);
            let Some((head, body)) = text.split_once("\r\n\r\n") else {
                continue;
            };
            let length = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(str::to_owned)
                })
                .and_then(|n| n.trim().parse::<usize>().ok())
                .expect("a content-length");
            if body.len() >= length {
                return head.lines().next().unwrap_or_default().to_owned();
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .expect("answered within 30 s")
}

#[tokio::test]
async fn regression_13_an_idle_keep_alive_connection_is_closed() {
    let limits = HttpLimits {
        idle_timeout: Duration::from_millis(500),
        ..HttpLimits::default()
    };
    let (addr, shutdown, _core) = start(limits).await;
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    assert!(get_on(&mut tcp).await.starts_with("HTTP/1.1 200"));
    // Then nothing: the connection waits for another request head, and is closed when none
    // comes within the idle timeout.
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), tcp.read_to_end(&mut rest))
        .await
        .expect("the server closes an idle keep-alive connection")
        .ok();
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
    shutdown.cancel();
}

/// A kept-alive connection that pauses longer than the request head timeout (but not the
/// idle timeout) still serves its next request: hyper's head timer alone closed it then, and
/// a client reusing it at that moment got a broken request (`IncompleteMessage`, a flake of
/// `tests/rbac_sites.rs`, whose client paused 10 s). A head that then trickles in is still
/// bounded by the head timeout.
#[tokio::test]
async fn a_keep_alive_connection_outlives_the_head_timeout_but_not_a_slow_head() {
    let limits = HttpLimits {
        header_read_timeout: Duration::from_millis(500),
        ..HttpLimits::default()
    };
    let (addr, shutdown, _core) = start(limits).await;
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    assert!(get_on(&mut tcp).await.starts_with("HTTP/1.1 200"));
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(
        get_on(&mut tcp).await.starts_with("HTTP/1.1 200"),
        "the kept-alive connection serves a request after a 1.5 s pause"
    );
    // A third request whose head never ends: closed about 0.5 s after its first byte.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let started = std::time::Instant::now();
    let closed = trickle_head(&mut tcp, Duration::from_secs(10)).await;
    assert!(closed, "a slow head on a kept-alive connection is closed");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "closed after {:?}: the head timeout, not the 60 s idle timeout",
        started.elapsed()
    );
    shutdown.cancel();
}

#[tokio::test]
async fn regression_13_an_idle_http2_connection_is_closed() {
    let limits = HttpLimits {
        idle_timeout: Duration::from_millis(300),
        ..HttpLimits::default()
    };
    let (addr, shutdown, _core) = start(limits).await;
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (send, connection) = h2::client::handshake(tcp).await.expect("h2 handshake");
    let connection = tokio::spawn(connection);
    let mut send = send.ready().await.expect("ready");
    let request = axum::http::Request::get(format!("http://{addr}{LIST}"))
        .body(())
        .expect("request");
    let (response, _) = send.send_request(request, true).expect("send");
    let response = response.await.expect("response");
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    while let Some(chunk) = body.data().await {
        chunk.expect("body");
    }
    drop((send, body));
    // No request since: closed after the idle timeout, though it answers every ping.
    tokio::time::timeout(Duration::from_secs(30), connection)
        .await
        .expect("the server closes an idle HTTP/2 connection")
        .expect("task")
        .ok();
    shutdown.cancel();
}

#[tokio::test]
async fn regression_13_at_the_limit_the_connection_idle_the_longest_makes_room() {
    // Hostile bench finding 5: slowloris clients held every place until their head timeout,
    // and a real client connecting meanwhile waited for it (11 s p50). Here the head timeout
    // is 60 s: without making room the request below times out.
    let limits = HttpLimits {
        max_connections: 4,
        header_read_timeout: Duration::from_secs(60),
        ..HttpLimits::default()
    };
    let (addr, shutdown, _core) = start(limits).await;
    let slow: Vec<_> = (0..4).map(|_| tokio::spawn(slowloris(addr))).collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        list(addr, Duration::from_secs(20))
            .await
            .expect("served well before the slowloris clients' head timeout"),
        200
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let closed = slow.iter().filter(|t| t.is_finished()).count();
    assert!(
        (1..4).contains(&closed),
        "{closed} of 4 slowloris connections closed; one (not all) makes room"
    );
    for t in slow {
        t.abort();
    }
    shutdown.cancel();
}

#[tokio::test]
async fn core_connections_over_the_limit_wait_until_one_closes() {
    let limits = HttpLimits {
        max_connections: 2,
        ..HttpLimits::default()
    };
    let (addr, shutdown, _core) = start(limits).await;
    let held = [
        TcpStream::connect(addr).await.expect("connect"),
        TcpStream::connect(addr).await.expect("connect"),
    ];
    assert!(
        list(addr, Duration::from_millis(800)).await.is_err(),
        "a third connection is served beyond the limit"
    );
    drop(held);
    assert_eq!(
        list(addr, Duration::from_secs(30))
            .await
            .expect("served once the held connections closed"),
        200
    );
    shutdown.cancel();
}

#[tokio::test]
async fn regression_13_out_of_file_descriptors_the_core_backs_off_warns_once_and_recovers() {
    // Issue 13 finding 5: at the file descriptor limit, `accept error: Too many open files`
    // was logged every second and real requests timed out.
    let dir = tempfile::tempdir().expect("temp dir");
    let port = support::free_tcp_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let data = dir.path().join("data");
    let args: Vec<String> = [
        "--nofile=64",
        "--",
        env!("CARGO_BIN_EXE_syncer"),
        "servicecenter",
        "--listen",
        &addr.to_string(),
        "--data-dir",
        &data.display().to_string(),
    ]
    .iter()
    .map(|a| (*a).to_owned())
    .collect();
    let core = support::Proc::spawn(dir.path(), "core", Path::new("prlimit"), &args, &[]);
    support::eventually(
        Duration::from_secs(30),
        "the core answers",
        &[&core],
        || async { list(addr, Duration::from_secs(5)).await.ok() },
    )
    .await;
    // Far more idle connections than descriptors: accept fails with EMFILE for a while.
    let flooded = std::time::Instant::now();
    let mut flood = Vec::new();
    for _ in 0..200 {
        if let Ok(tcp) = TcpStream::connect(addr).await {
            flood.push(tcp);
        }
    }
    support::eventually(
        Duration::from_secs(30),
        "accept fails for want of descriptors",
        &[&core],
        || async {
            std::fs::read_to_string(&core.log)
                .ok()
                .filter(|log| log.contains("accept failed"))
        },
    )
    .await;
    // While the flood lasts (at least one warning period), then it goes.
    tokio::time::sleep(Duration::from_secs(3)).await;
    drop(flood);
    let status = support::eventually(
        Duration::from_secs(60),
        "the core answers after the flood",
        &[&core],
        || async { list(addr, Duration::from_secs(5)).await.ok() },
    )
    .await;
    assert_eq!(status, 200);
    // One warning per 10 s at most (the old accept loop logged every second).
    let log = std::fs::read_to_string(&core.log).expect("log");
    let warnings = log.matches("accept failed").count();
    let allowed = flooded.elapsed().as_secs() / 10 + 1;
    assert!(
        warnings as u64 <= allowed,
        "{warnings} accept warnings in {:?}:\n{}",
        flooded.elapsed(),
        core.tail(20)
    );
}
