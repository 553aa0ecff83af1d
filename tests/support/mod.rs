//! A small harness for integration tests: real `syncer` processes on loopback, with ports
//! the OS picks, logs in a temp dir, and polling with deadlines instead of sleeps.

#![allow(dead_code)]

pub mod certs;
pub mod fuzz;

use std::fs::File;
use std::future::Future;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1, picked at random below the kernel's ephemeral range.
///
/// Ports the OS hands out for `:0` binds and outgoing connections come from the ephemeral
/// range (`/proc/sys/net/ipv4/ip_local_port_range`), so a port taken from there and released
/// can be grabbed by any process before the test's child binds it: CI saw a daemon's
/// `127.0.0.1:0` listener take a port reserved for another daemon. Below that range only a
/// test that picks the same random port can collide, and [`reserve`] rules that out: a
/// stress run saw a site's registry port handed out again as a syncer's gRPC port before the
/// registry had bound it.
pub fn free_tcp_port() -> u16 {
    loop {
        let port = random_port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() && reserve(port) {
            return port;
        }
    }
}

/// Claims `port` for this test process: false when this process or another test process
/// (any test binary, any nextest slot) claimed it in the last 2 minutes. A port is free
/// only until the child meant for it binds it, and a free port can be picked twice before
/// then; the claim is a file created with `create_new` in a directory every test process
/// shares.
fn reserve(port: u16) -> bool {
    use std::collections::HashSet;
    use std::sync::Mutex;
    static MINE: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    const CLAIM_FOR: Duration = Duration::from_secs(120);
    let mut mine = MINE.lock().unwrap_or_else(|e| e.into_inner());
    if !mine.get_or_insert_with(HashSet::new).insert(port) {
        return false;
    }
    let dir = std::env::temp_dir().join("syncer-test-ports");
    let _ = std::fs::create_dir_all(&dir);
    let claim = dir.join(port.to_string());
    for _ in 0..2 {
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&claim)
        {
            Ok(_) => return true,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                // An old claim (its test is long over) is taken over.
                let stale = std::fs::metadata(&claim)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|at| at.elapsed().ok())
                    .is_some_and(|age| age > CLAIM_FOR);
                if !stale || std::fs::remove_file(&claim).is_err() {
                    return false;
                }
            }
            // No shared directory (read-only temp dir): this process's own claims only.
            Err(_) => return true,
        }
    }
    false
}

/// A port free for both UDP and TCP on 127.0.0.1, picked as [`free_tcp_port`] does.
pub fn free_udp_port() -> u16 {
    loop {
        let port = random_port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok()
            && TcpListener::bind(("127.0.0.1", port)).is_ok()
            && reserve(port)
        {
            return port;
        }
    }
}

/// A random port in `[10000, start of the ephemeral range)`.
fn random_port() -> u16 {
    use std::hash::{BuildHasher, RandomState};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    const LOW: u64 = 10_000;
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .filter(|start| *start > LOW + 1_000)
        .unwrap_or(32_768);
    let n = RandomState::new().hash_one((
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        Instant::now(),
    ));
    (LOW + n % (ephemeral_start - LOW)) as u16
}

/// Loopback address with `port`.
pub fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// The arguments of `syncer daemon` for `node` of `cluster` on loopback: gossip on
/// `gossip_port`, the exchange on `rpc_port`, a 1 s tick, joining `join` when given.
pub fn daemon_args(
    node: &str,
    cluster: &str,
    gossip_port: u16,
    rpc_port: u16,
    join: Option<u16>,
) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "daemon".into(),
        "--node".into(),
        node.into(),
        "--cluster-name".into(),
        cluster.into(),
        "--bind-addr".into(),
        format!("127.0.0.1:{gossip_port}"),
        "--rpc-addr".into(),
        format!("127.0.0.1:{rpc_port}"),
        "--ticker-interval".into(),
        "1".into(),
    ];
    if let Some(port) = join {
        args.extend(["--join-addr".into(), format!("127.0.0.1:{port}")]);
    }
    args
}

/// A child process whose output goes to a log file; killed when dropped.
pub struct Proc {
    pub name: String,
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    /// Starts `program args` with its stdout and stderr in `dir/name.log` (appended, so a
    /// restarted process keeps one log).
    pub fn spawn(
        dir: &Path,
        name: &str,
        program: &Path,
        args: &[String],
        envs: &[(&str, String)],
    ) -> Proc {
        let log = dir.join(format!("{name}.log"));
        let out = File::options()
            .create(true)
            .append(true)
            .open(&log)
            .expect("open log");
        let err = out.try_clone().expect("clone log");
        let mut cmd = Command::new(program);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            // `SYNCER_TEST_SYNCER_LOG` replaces the filter, e.g. to add `foca=trace`.
            .env(
                "SYNCER_LOG",
                std::env::var("SYNCER_TEST_SYNCER_LOG")
                    .unwrap_or_else(|_| "info,syncer=debug".to_owned()),
            )
            // A built-in core's embedded store of its own (a restart with the same name
            // finds its data), never `./data` of the test's working directory.
            .env("SYNCER_DATA_DIR", dir.join(format!("{name}.data")))
            // The daemon's HTTP listener on a port the OS picks (its default, 30300, would
            // be shared by every daemon of a test); a test that needs it passes --http-addr.
            .env("SYNCER_HTTP_ADDR", "127.0.0.1:0");
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({}): {e}", program.display()));
        Proc {
            name: name.to_owned(),
            child,
            log,
        }
    }

    /// The `syncer` binary built by cargo for this test run.
    pub fn syncer(dir: &Path, name: &str, args: &[&str]) -> Proc {
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        Proc::spawn(
            dir,
            name,
            Path::new(env!("CARGO_BIN_EXE_syncer")),
            &args,
            &[],
        )
    }

    /// SIGKILL, and wait for the exit.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, and wait up to `timeout` for a clean exit.
    pub fn terminate(&mut self, timeout: Duration) -> bool {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// The last `lines` lines of the log.
    pub fn tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `check` every 100 ms until it returns `Some`, or panics after `timeout` with `what`
/// and the tails of `logs` (the last 40 lines of each, or `SYNCER_TEST_LOG_LINES`).
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, logs: &[&Proc], mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if Instant::now() > deadline {
            let lines = std::env::var("SYNCER_TEST_LOG_LINES")
                .ok()
                .and_then(|n| n.parse().ok())
                .unwrap_or(40);
            let mut msg = format!("timed out after {timeout:?} waiting for: {what}\n");
            for p in logs {
                msg.push_str(&format!(
                    "--- {} ({}) ---\n{}\n",
                    p.name,
                    p.log.display(),
                    p.tail(lines)
                ));
            }
            panic!("{msg}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the service-center API at `base` lists the default tenant's microservices
/// (a core just started answers); panics with `procs`' logs after 30 s.
pub async fn wait_for_core(http: &reqwest::Client, base: &str, what: &str, procs: &[&Proc]) {
    eventually(Duration::from_secs(30), what, procs, || async {
        http.get(format!("{base}/v4/default/registry/microservices"))
            .header("X-Domain-Name", "default")
            .send()
            .await
            .ok()
            .filter(|r| r.status().is_success())
    })
    .await;
}

/// Sends SIGHUP to `proc` (`kill -HUP`).
pub fn sighup(proc: &Proc) {
    let status = Command::new("kill")
        .args(["-HUP", &proc.child.id().to_string()])
        .status()
        .expect("kill -HUP");
    assert!(status.success(), "kill -HUP {}", proc.name);
}

/// `GET url` as JSON; `None` until it answers a success with a JSON body.
pub async fn get_json(http: &reqwest::Client, url: &str) -> Option<serde_json::Value> {
    let resp = http.get(url).send().await.ok()?;
    if !resp.status().is_success() {
        return None;
    }
    resp.json().await.ok()
}

/// The python interpreter with py-eureka-client installed (`scripts/test.sh` sets it up).
pub fn python_with_eureka_client() -> PathBuf {
    match std::env::var_os("SYNCER_TEST_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => panic!(
            "SYNCER_TEST_PYTHON is not set: run the suite with scripts/test.sh, which installs \
             py-eureka-client into target/test-venv and sets it"
        ),
    }
}

/// The `node_modules` directory holding eureka-js-client (`scripts/test.sh` installs it into
/// target/test-node and sets `SYNCER_TEST_NODE_MODULES`).
pub fn node_modules_with_eureka_client() -> PathBuf {
    match std::env::var_os("SYNCER_TEST_NODE_MODULES") {
        Some(p) => PathBuf::from(p),
        None => panic!(
            "SYNCER_TEST_NODE_MODULES is not set: run the suite with scripts/test.sh, which \
             installs eureka-js-client into target/test-node and sets it"
        ),
    }
}

/// Path of a file under `tests/`.
pub fn test_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(rel)
}

/// A real etcd server (`etcd` from Debian's etcd-server) on OS-chosen loopback ports, with
/// its data and log under a directory; killed on drop. Shared by the storage tests and the
/// leader-election tests.
///
/// ```ignore
/// let etcd = Etcd::start(dir.path());
/// // etcd.endpoint == "http://127.0.0.1:PORT"
/// ```
pub struct Etcd {
    /// Client URL, `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// The process (log in `dir/etcd-PORT.log`).
    pub proc: Proc,
    /// Its `--data-dir`.
    pub data_dir: PathBuf,
}

impl Etcd {
    /// Starts etcd with its data in `dir/etcd-PORT` and waits (up to 20 s) until it answers
    /// `/health`; panics with its log tail if it never does.
    pub fn start(dir: &Path) -> Etcd {
        Etcd::start_with(dir, &[])
    }

    /// [`Etcd::start`] with `extra` flags (e.g. `--quota-backend-bytes` for a benchmark).
    pub fn start_with(dir: &Path, extra: &[&str]) -> Etcd {
        Etcd::launch(dir, "http", extra, |endpoint| {
            endpoint
                .rsplit(':')
                .next()
                .and_then(|port| port.parse().ok())
                .is_some_and(etcd_healthy)
        })
    }

    /// Starts etcd serving clients on `scheme://127.0.0.1:PORT` with `extra` flags, and waits
    /// (up to 20 s) until `healthy(endpoint)`; a port taken meanwhile is tried again with
    /// others; panics with its log tail if it never becomes healthy.
    pub fn launch(
        dir: &Path,
        scheme: &str,
        extra: &[&str],
        healthy: impl Fn(&str) -> bool,
    ) -> Etcd {
        let mut last_log = String::new();
        // A port picked here may be taken before etcd binds it: try again with others.
        for _ in 0..3 {
            let (client, peer) = (free_tcp_port(), free_tcp_port());
            let endpoint = format!("{scheme}://127.0.0.1:{client}");
            let peer_url = format!("http://127.0.0.1:{peer}");
            let data_dir = dir.join(format!("etcd-{client}"));
            let args: Vec<String> = [
                "--name",
                "default",
                "--data-dir",
                &data_dir.to_string_lossy(),
                "--listen-client-urls",
                &endpoint,
                "--advertise-client-urls",
                &endpoint,
                "--listen-peer-urls",
                &peer_url,
                "--initial-advertise-peer-urls",
                &peer_url,
                "--initial-cluster",
                &format!("default={peer_url}"),
                "--log-level",
                "warn",
            ]
            .iter()
            .chain(extra)
            .map(|s| (*s).to_owned())
            .collect();
            let mut proc = Proc::spawn(
                dir,
                &format!("etcd-{client}"),
                Path::new("etcd"),
                &args,
                &[],
            );
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = proc.child.try_wait() {
                    break;
                }
                if healthy(&endpoint) {
                    return Etcd {
                        endpoint,
                        proc,
                        data_dir,
                    };
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            last_log = proc.tail(30);
            proc.kill9();
        }
        panic!("etcd did not become healthy; last log:\n{last_log}");
    }
}

/// `GET /health` answers `"health":"true"`.
fn etcd_healthy(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&local(port), Duration::from_secs(1))
    else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text.contains("\"health\":\"true\"")
}

/// The store a built-in core under test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    /// `Core::new()`: memory only.
    Memory,
    /// The embedded store in a temp dir.
    Embedded,
    /// A fresh etcd of its own.
    Etcd,
}

tokio::task_local! {
    /// The store [`open_core`] uses when a test runs inside `STORE.scope(..)` (default
    /// memory): lets one test body run on every store.
    pub static STORE: Store;
}

/// The store of the current test ([`STORE`], else memory).
pub fn current_store() -> Store {
    STORE.try_with(|s| *s).unwrap_or(Store::Memory)
}

/// A core on some store, with what keeps that store alive (temp dir, etcd).
pub struct TestCore {
    /// The core (serve it with `syncer::servicecenter::serve`).
    pub core: syncer::servicecenter::Core,
    /// Its store's config (to open a second core on the same store).
    pub config: syncer::servicecenter::store::StoreConfig,
    /// Temp dir holding the embedded store or etcd's data and log.
    pub dir: tempfile::TempDir,
    /// The etcd server, for [`Store::Etcd`].
    pub etcd: Option<Etcd>,
}

/// Opens a core on `store`.
pub async fn open_core(store: Store) -> TestCore {
    use syncer::servicecenter::store::StoreConfig;
    let dir = tempfile::tempdir().expect("temp dir");
    let (config, etcd) = match store {
        Store::Memory => (StoreConfig::Memory, None),
        Store::Embedded => (
            StoreConfig::Embedded {
                data_dir: dir.path().join("data"),
            },
            None,
        ),
        Store::Etcd => {
            let path = dir.path().to_owned();
            let etcd = tokio::task::spawn_blocking(move || Etcd::start(&path))
                .await
                .expect("etcd start task");
            (
                StoreConfig::Etcd(syncer::etcd::ClientConfig::new(vec![etcd.endpoint.clone()])),
                Some(etcd),
            )
        }
    };
    let core = syncer::servicecenter::Core::open(config.clone())
        .await
        .expect("open core");
    TestCore {
        core,
        config,
        dir,
        etcd,
    }
}

/// The instances of Eureka app `app` at the registry at `base`, as JSON (`None` when the
/// registry does not answer, `Some(empty)` when the app does not exist).
pub async fn eureka_app_instances(
    http: &reqwest::Client,
    base: &str,
    app: &str,
) -> Option<Vec<serde_json::Value>> {
    let resp = http
        .get(format!("{base}/eureka/apps/{app}"))
        .header("Accept", "application/json")
        .send()
        .await
        .ok()?;
    if resp.status() == reqwest::StatusCode::NOT_FOUND {
        return Some(Vec::new());
    }
    let body: serde_json::Value = resp.json().await.ok()?;
    body["application"]["instance"].as_array().cloned()
}

/// The instances of `app`/`name` (version `latest`) a find at the service-center API at
/// `base` answers in the default domain; `None` until it answers 200.
pub async fn sc_find_instances(
    http: &reqwest::Client,
    base: &str,
    app: &str,
    name: &str,
) -> Option<Vec<serde_json::Value>> {
    sc_find_instances_in(http, base, ("default", "default"), app, name).await
}

/// As [`sc_find_instances`], in tenant `(domain, project)`.
pub async fn sc_find_instances_in(
    http: &reqwest::Client,
    base: &str,
    (domain, project): (&str, &str),
    app: &str,
    name: &str,
) -> Option<Vec<serde_json::Value>> {
    let resp = http
        .get(format!("{base}/v4/{project}/registry/instances"))
        .query(&[("appId", app), ("serviceName", name), ("version", "latest")])
        .header("X-Domain-Name", domain)
        .header("X-Domain-Project", project)
        .send()
        .await
        .ok()?;
    if !resp.status().is_success() {
        return None;
    }
    let body: serde_json::Value = resp.json().await.ok()?;
    Some(body["instances"].as_array().cloned().unwrap_or_default())
}

/// Creates microservice `name` (appId `app`, version 1.0.0) at the service-center API at
/// `base` and returns its serviceId.
pub async fn sc_create_service(
    http: &reqwest::Client,
    base: &str,
    app: &str,
    name: &str,
) -> String {
    sc_create_service_version(http, base, app, name, "1.0.0").await
}

/// [`sc_create_service`] with the given `version`.
pub async fn sc_create_service_version(
    http: &reqwest::Client,
    base: &str,
    app: &str,
    name: &str,
    version: &str,
) -> String {
    let created: serde_json::Value = http
        .post(format!("{base}/v4/default/registry/microservices"))
        .header("X-Domain-Name", "default")
        .json(&serde_json::json!({"service": {"appId": app, "serviceName": name, "version": version}}))
        .send()
        .await
        .expect("create service")
        .json()
        .await
        .expect("create service body");
    created["serviceId"].as_str().expect("serviceId").to_owned()
}

/// Registers an instance of `sid` at `base` on `rest://127.0.0.1:{port}` (host
/// `host-{port}`) with a 10-minute lease (interval 300 s, times 1).
pub async fn sc_add_instance(http: &reqwest::Client, base: &str, sid: &str, port: u16) {
    let resp = http
        .post(format!(
            "{base}/v4/default/registry/microservices/{sid}/instances"
        ))
        .header("X-Domain-Name", "default")
        .json(&serde_json::json!({"instance": {
            "hostName": format!("host-{port}"),
            "endpoints": [format!("rest://127.0.0.1:{port}")],
            "healthCheck": {"mode": "push", "interval": 300, "times": 1}
        }}))
        .send()
        .await
        .expect("register instance");
    assert!(resp.status().is_success(), "register: {}", resp.status());
}

/// One sample of a metrics exposition: name, labels, value.
pub type MetricSample = (String, std::collections::BTreeMap<String, String>, f64);

/// The samples of an OpenMetrics text (`/metrics`), parsed by Python's `prometheus_client`
/// (a third-party parser, strict about the format: a malformed exposition panics here).
/// Needs `SYNCER_TEST_PYTHON` (scripts/test.sh installs prometheus-client into its venv).
pub fn metric_samples(text: &str) -> Vec<MetricSample> {
    use std::io::Write;
    let python = python_with_eureka_client();
    let script = "import sys, json\n\
        from prometheus_client.openmetrics.parser import text_string_to_metric_families\n\
        out = []\n\
        for family in text_string_to_metric_families(sys.stdin.read()):\n\
        \x20   for s in family.samples:\n\
        \x20       out.append([s.name, s.labels, s.value])\n\
        print(json.dumps(out))\n";
    let mut child = Command::new(&python)
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start python");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write metrics");
    let out = child.wait_with_output().expect("python output");
    assert!(
        out.status.success(),
        "prometheus_client refused the exposition: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("samples as json")
}

/// The value of the sample `name` whose labels include all of `labels` (None: no such sample).
pub fn metric_value(samples: &[MetricSample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|(n, l, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, _, v)| *v)
}
