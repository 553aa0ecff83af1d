//! Benchmark of the built-in service-center core (not a test; prints figures).
//!
//! ```sh
//! cargo bench --bench servicecenter                 # 10,000 services x 10 instances
//! cargo bench --bench servicecenter -- --services 1000 --secs 5 --stores embedded
//! cargo bench --bench servicecenter -- --stores embedded --rbac off,on
//! ```
//!
//! `--rbac off,on` (the default) measures each store twice: without RBAC, and with
//! `--rbac` where every request carries `Authorization: Bearer` of a root token (the
//! guard verifies the token's signature and the account's roles on each request).
//!
//! For each target, in one run: a minimal hyper server that answers 200 with nothing (the
//! ceiling), `syncer servicecenter` on the embedded store, and on etcd (a real `etcd`
//! started here). Each core runs as its own process (the release `syncer` binary); the
//! load generator is the same for all: `--connections` keep-alive HTTP/1.1 connections
//! (hyper), each sending one request at a time for `--secs` seconds.
//!
//! Phases per target: setup (create the services, register the instances, concurrently;
//! skipped for the ceiling), heartbeats (`PUT .../heartbeat` of random instances), finds
//! (`GET /instances?appId=..&serviceName=..&version=latest` of random services). Reported:
//! the setup's writes per second, requests per second, p50/p99 latency, and the server's
//! peak RSS (`VmHWM`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;

/// Command-line settings.
#[derive(Debug, Clone)]
struct Settings {
    services: usize,
    instances: usize,
    connections: usize,
    secs: u64,
    stores: Vec<String>,
    /// The project in `/v4/{project}/...` (domain `default`).
    project: String,
    /// RBAC settings to measure: `off`, `on`.
    rbac: Vec<String>,
}

fn settings() -> Settings {
    let mut s = Settings {
        services: 10_000,
        instances: 10,
        connections: 64,
        secs: 10,
        stores: vec!["embedded".into(), "etcd".into()],
        project: "default".into(),
        rbac: vec!["off".into(), "on".into()],
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || it.next().cloned().unwrap_or_default();
        match a.as_str() {
            "--services" => s.services = val().parse().expect("--services N"),
            "--instances" => s.instances = val().parse().expect("--instances N"),
            "--connections" => s.connections = val().parse().expect("--connections N"),
            "--secs" => s.secs = val().parse().expect("--secs N"),
            "--stores" => s.stores = val().split(',').map(str::to_owned).collect(),
            "--project" => s.project = val(),
            "--rbac" => s.rbac = val().split(',').map(str::to_owned).collect(),
            _ => {} // cargo passes --bench
        }
    }
    s
}

/// A child process killed on drop.
struct Server {
    name: String,
    child: Child,
    addr: SocketAddr,
    /// `Authorization` header value sent with every request (RBAC on).
    auth: Option<Arc<str>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn peak_rss_mb(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn spawn(name: &str, program: &Path, args: &[String], log: &Path) -> Child {
    let out = std::fs::File::create(log).unwrap();
    Command::new(program)
        .args(args)
        .env("SYNCER_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {name} ({}): {e}", program.display()))
}

/// The minimal server of the ceiling: 200, empty body, for every request.
async fn ceiling_server(addr: SocketAddr) {
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(|_req| async {
                Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::new())))
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// One keep-alive HTTP/1.1 connection.
struct Conn {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    host: String,
    auth: Option<Arc<str>>,
}

impl Conn {
    async fn open(addr: SocketAddr) -> Conn {
        Conn::open_as(addr, None).await
    }

    async fn open_as(addr: SocketAddr, auth: Option<Arc<str>>) -> Conn {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        Conn {
            sender,
            host: addr.to_string(),
            auth,
        }
    }

    async fn call(
        &mut self,
        method: Method,
        path: &str,
        body: Option<String>,
    ) -> (StatusCode, Bytes) {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", &self.host);
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        if let Some(auth) = &self.auth {
            req = req.header("authorization", &**auth);
        }
        let req = req
            .body(Full::new(body.map(Bytes::from).unwrap_or_default()))
            .unwrap();
        self.sender.ready().await.unwrap();
        let resp = self.sender.send_request(req).await.unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (status, bytes)
    }
}

/// Figures of one load phase.
#[derive(Debug, Default, Clone, Copy)]
struct Figures {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: usize,
}

/// Runs `connections` workers for `secs`; `request(worker, n)` names each request.
async fn load<F>(
    addr: SocketAddr,
    auth: Option<Arc<str>>,
    connections: usize,
    secs: u64,
    request: F,
) -> Figures
where
    F: Fn(usize, u64) -> (Method, String) + Send + Sync + 'static,
{
    let request = Arc::new(request);
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for w in 0..connections {
        let (request, stop, errors) = (request.clone(), stop.clone(), errors.clone());
        let auth = auth.clone();
        workers.push(tokio::spawn(async move {
            let mut conn = Conn::open_as(addr, auth).await;
            let mut lat = Vec::with_capacity(100_000);
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let (method, path) = request(w, n);
                n += 1;
                let t = Instant::now();
                let (status, _) = conn.call(method, &path, None).await;
                lat.push(u32::try_from(t.elapsed().as_micros()).unwrap_or(u32::MAX));
                if !(status.is_success() || status == StatusCode::NOT_MODIFIED) {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            lat
        }));
    }
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for w in workers {
        all.extend(w.await.unwrap());
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_unstable();
    let pct = |p: f64| -> f64 {
        if all.is_empty() {
            return f64::NAN;
        }
        let i = ((all.len() as f64 - 1.0) * p).round() as usize;
        f64::from(all[i]) / 1000.0
    };
    Figures {
        rps: all.len() as f64 / elapsed,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        errors: errors.load(Ordering::Relaxed),
    }
}

/// Cheap deterministic pseudo-random numbers (xorshift) for picking targets.
fn pick(worker: usize, n: u64, modulo: usize) -> usize {
    let mut x = (worker as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ n.wrapping_add(1);
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    (x % modulo as u64) as usize
}

async fn wait_ready(addr: SocketAddr, path: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(stream) = tokio::net::TcpStream::connect(addr).await {
            drop(stream);
            let mut c = Conn::open(addr).await;
            if c.call(Method::GET, path, None).await.0.is_success() {
                return;
            }
        }
        assert!(Instant::now() < deadline, "{what} did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Creates the services and registers the instances over `connections` connections.
/// Returns the serviceIds (index = service number) and the setup time.
async fn setup(
    addr: SocketAddr,
    auth: Option<Arc<str>>,
    s: &Settings,
) -> (Arc<Vec<String>>, Duration) {
    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let ids = Arc::new(std::sync::Mutex::new(vec![String::new(); s.services]));
    let mut workers = Vec::new();
    for _ in 0..s.connections {
        let (next, ids, services, instances) = (next.clone(), ids.clone(), s.services, s.instances);
        let project = s.project.clone();
        let auth = auth.clone();
        workers.push(tokio::spawn(async move {
            let mut conn = Conn::open_as(addr, auth).await;
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= services {
                    return;
                }
                let body = format!(
                    r#"{{"service":{{"appId":"bench","serviceName":"svc-{n}","version":"1.0.0"}}}}"#
                );
                let (st, bytes) = conn
                    .call(
                        Method::POST,
                        &format!("/v4/{project}/registry/microservices"),
                        Some(body),
                    )
                    .await;
                assert!(st.is_success(), "create: {st} {bytes:?}");
                let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
                let sid = v["serviceId"].as_str().unwrap().to_owned();
                for k in 0..instances {
                    let body = format!(
                        r#"{{"instance":{{"instanceId":"i{n}-{k}","hostName":"host-{n}-{k}","endpoints":["rest://10.0.{}.{}:8080"],"healthCheck":{{"mode":"push","interval":30,"times":3}},"properties":{{"zone":"z1"}}}}}}"#,
                        n % 250,
                        k
                    );
                    let (st, bytes) = conn
                        .call(
                            Method::POST,
                            &format!("/v4/{project}/registry/microservices/{sid}/instances"),
                            Some(body),
                        )
                        .await;
                    assert!(st.is_success(), "register: {st} {bytes:?}");
                }
                ids.lock().unwrap()[n] = sid;
            }
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
    let ids = std::mem::take(&mut *ids.lock().unwrap());
    (Arc::new(ids), started.elapsed())
}

/// One row of the report.
struct Row {
    target: String,
    setup: Option<Duration>,
    heartbeat: Figures,
    find: Figures,
    rss_mb: f64,
}

async fn measure(server: &Server, s: &Settings, ceiling: bool) -> Row {
    let (ids, setup_time) = if ceiling {
        (Arc::new(vec!["0".repeat(40); s.services]), None)
    } else {
        let (ids, t) = setup(server.addr, server.auth.clone(), s).await;
        eprintln!(
            "  {}: setup of {} services x {} instances took {:.1} s",
            server.name,
            s.services,
            s.instances,
            t.as_secs_f64()
        );
        (ids, Some(t))
    };
    let (services, instances) = (s.services, s.instances);
    let hb_ids = ids.clone();
    let (p1, p2) = (s.project.clone(), s.project.clone());
    let heartbeat = load(
        server.addr,
        server.auth.clone(),
        s.connections,
        s.secs,
        move |w, n| {
            let i = pick(w, n, services * instances);
            let (svc, k) = (i / instances, i % instances);
            (
                Method::PUT,
                format!(
                    "/v4/{p1}/registry/microservices/{}/instances/i{svc}-{k}/heartbeat",
                    hb_ids[svc]
                ),
            )
        },
    )
    .await;
    let find =
        load(
            server.addr,
            server.auth.clone(),
            s.connections,
            s.secs,
            move |w, n| {
                let svc = pick(w, n ^ 0x5555, services);
                (
            Method::GET,
            format!("/v4/{p2}/registry/instances?appId=bench&serviceName=svc-{svc}&version=latest"),
        )
            },
        )
        .await;
    Row {
        target: server.name.clone(),
        setup: setup_time,
        heartbeat,
        find,
        rss_mb: server.peak_rss_mb(),
    }
}

/// `Bearer <token>` of root (password `Bench-root-1`), valid for 24 h.
async fn root_token(addr: SocketAddr) -> Arc<str> {
    let mut c = Conn::open(addr).await;
    let (st, body) = c
        .call(
            Method::POST,
            "/v4/token",
            Some(
                r#"{"name":"root","password":"Bench-root-1","tokenExpirationTime":"24h"}"#
                    .to_string(),
            ),
        )
        .await;
    assert!(st.is_success(), "login: {st} {body:?}");
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    format!("Bearer {}", v["token"].as_str().unwrap()).into()
}

fn syncer_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_syncer"))
}

/// One row; `writes` is how many writes the setup made (creates and registrations).
fn print_row(r: &Row, ceiling: &Row, writes: usize) {
    let pct = |v: f64, c: f64| if c > 0.0 { 100.0 * v / c } else { f64::NAN };
    println!(
        "| {} | {} | {:.0} ({:.0}%) | {:.2} / {:.2} | {:.0} ({:.0}%) | {:.2} / {:.2} | {:.0} | {} |",
        r.target,
        r.setup.map_or("-".to_string(), |d| format!(
            "{:.2} s ({:.0} writes/s)",
            d.as_secs_f64(),
            writes as f64 / d.as_secs_f64()
        )),
        r.heartbeat.rps,
        pct(r.heartbeat.rps, ceiling.heartbeat.rps),
        r.heartbeat.p50_ms,
        r.heartbeat.p99_ms,
        r.find.rps,
        pct(r.find.rps, ceiling.find.rps),
        r.find.p50_ms,
        r.find.p99_ms,
        r.rss_mb,
        r.heartbeat.errors + r.find.errors,
    );
}

fn main() {
    // Child mode: the ceiling server.
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--ceiling-server") {
        let addr: SocketAddr = args[2].parse().unwrap();
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(ceiling_server(addr));
        return;
    }
    let s = settings();
    let tmp = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    eprintln!(
        "servicecenter bench: {} services x {} instances, {} connections, {} s per phase, \
         {} CPUs; logs in {}",
        s.services,
        s.instances,
        s.connections,
        s.secs,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        tmp.path().display()
    );
    let mut rows = Vec::new();

    let port = free_port();
    let ceiling = Server {
        name: "ceiling (hyper, 200 empty)".into(),
        child: spawn(
            "ceiling",
            &std::env::current_exe().unwrap(),
            &["--ceiling-server".into(), format!("127.0.0.1:{port}")],
            &tmp.path().join("ceiling.log"),
        ),
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        auth: None,
    };
    rt.block_on(wait_ready(ceiling.addr, "/", "ceiling"));
    rows.push(rt.block_on(measure(&ceiling, &s, true)));
    drop(ceiling);

    let mut etcd = None;
    let root_password = tmp.path().join("root-password");
    std::fs::write(&root_password, "Bench-root-1\n").unwrap();
    let runs: Vec<(&String, bool)> = s
        .stores
        .iter()
        .flat_map(|store| s.rbac.iter().map(move |r| (store, r == "on")))
        .collect();
    for (run, (store, rbac)) in runs.into_iter().enumerate() {
        let port = free_port();
        let mut args = vec![
            "servicecenter".to_string(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
        ];
        if rbac {
            args.push("--rbac".into());
            args.push("--rbac-root-password-file".into());
            args.push(root_password.to_string_lossy().into_owned());
        }
        match store.as_str() {
            "embedded" => {
                args.push("--data-dir".into());
                args.push(
                    tmp.path()
                        .join(format!("data-{run}"))
                        .to_string_lossy()
                        .into_owned(),
                );
            }
            "etcd" => {
                let e =
                    support::Etcd::start_with(tmp.path(), &["--quota-backend-bytes", "8589934592"]);
                args.push("--etcd-endpoints".into());
                args.push(e.endpoint.clone());
                etcd = Some(e);
            }
            other => panic!("unknown store {other}"),
        }
        let mut server = Server {
            name: format!(
                "syncer servicecenter, {store}, RBAC {}",
                if rbac { "on" } else { "off" }
            ),
            child: spawn(
                store,
                &syncer_bin(),
                &args,
                &tmp.path().join(format!("{store}-{run}.log")),
            ),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            auth: None,
        };
        rt.block_on(wait_ready(
            server.addr,
            "/v4/default/registry/version",
            store,
        ));
        if rbac {
            server.auth = Some(rt.block_on(root_token(server.addr)));
        }
        rows.push(rt.block_on(measure(&server, &s, false)));
        drop(server);
        // Stopped (and its process reaped) when dropped.
        drop(etcd.take());
    }

    println!();
    println!(
        "{} services x {} instances in project {}, {} connections, {} s per phase",
        s.services, s.instances, s.project, s.connections, s.secs
    );
    println!();
    println!("| target | setup (creates + registrations) | heartbeats/s (of ceiling) | heartbeat p50 / p99 ms | finds/s (of ceiling) | find p50 / p99 ms | peak RSS MB | errors |");
    println!("|---|---|---|---|---|---|---|---|");
    for r in &rows {
        print_row(r, &rows[0], s.services * (1 + s.instances));
    }
}
