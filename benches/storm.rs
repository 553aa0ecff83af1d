//! Restart-storm benchmark of issue 15 (not a test; prints figures): ten syncers of one site
//! holding 10,000 copies are killed and started again at once; what does their registry see?
//!
//! ```sh
//! cargo bench --bench storm
//! cargo bench --bench storm -- --copies 10000 --syncers 10 --rate 1000 --tick 10 --observe-secs 60
//! cargo bench --bench storm -- --burst 1000    # a whole second's worth at once
//! cargo bench --bench storm -- --rate 0      # no write limit, for comparison
//! ```
//!
//! Setup, all processes on loopback: site A is a core (`syncer servicecenter`) holding
//! `--copies` instances (`--per-service` per service) and one syncer; site B is one core and
//! `--syncers` syncers of one cluster, each with `--registry-write-rate` `--rate`,
//! `--registry-write-burst` `--burst` (default: the daemon's, a tenth of the rate) and
//! `--ticker-interval` `--tick`. The bench waits until B's core holds every copy
//! and a tick more, then SIGKILLs every B syncer at once (a crash, so no handover heartbeat)
//! and starts them all again at once, and samples B's core every 250 ms for
//! `--observe-secs` (longer than a copy's lease, 4 ticks, by default).
//!
//! Figures, from the core's own `/metrics` (service-center's names):
//! * writes per second seen by the registry, peak over any 1 s window: heartbeats renewed or
//!   refused (`service_center_db_heartbeat_total`, one per instance of a batch) plus
//!   instances added (growth of `service_center_db_instance_total`), against `--rate`; and
//!   write requests per second (`service_center_http_request_total` of POST, PUT, DELETE);
//! * writes per second as the syncers count them (`syncer_registry_writes_total` summed over
//!   the B syncers, one per item), peak over any 1 s window;
//! * time until steady state: from the restart until the registry has renewed as many
//!   heartbeats as there are copies (the new leader's first whole round);
//! * expired copies: copies minus the fewest instances the core held while observed
//!   (target 0), and duplicates: instances beyond the copies, and at the end, origins with
//!   more than one copy in a full listing (target 0).
//!
//! `BENCH_KEEP_LOGS=1` keeps the processes' logs (the directory is printed).

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};
use serde_json::json;
use support::{free_tcp_port, free_udp_port, Proc};
use syncer_plugin_api::{Plugin, ORIGIN_CLUSTER, ORIGIN_INSTANCE_ID};

/// Command-line settings.
#[derive(Debug, Clone)]
struct Settings {
    copies: usize,
    per_service: usize,
    syncers: usize,
    rate: u32,
    /// `None`: the daemon's default burst.
    burst: Option<u32>,
    tick: u64,
    observe_secs: u64,
}

fn settings() -> Settings {
    let mut s = Settings {
        copies: 10_000,
        per_service: 10,
        syncers: 10,
        rate: 1000,
        burst: None,
        tick: 10,
        observe_secs: 60,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || it.next().cloned().unwrap_or_default();
        match a.as_str() {
            "--copies" => s.copies = val().parse().expect("--copies N"),
            "--per-service" => s.per_service = val().parse().expect("--per-service N"),
            "--syncers" => s.syncers = val().parse().expect("--syncers N"),
            "--rate" => s.rate = val().parse().expect("--rate N"),
            "--burst" => s.burst = Some(val().parse().expect("--burst N")),
            "--tick" => s.tick = val().parse().expect("--tick SECS"),
            "--observe-secs" => s.observe_secs = val().parse().expect("--observe-secs N"),
            _ => {} // cargo passes --bench
        }
    }
    s
}

fn syncer_bin() -> &'static std::path::Path {
    std::path::Path::new(env!("CARGO_BIN_EXE_syncer"))
}

fn start_core(dir: &std::path::Path, name: &str, port: u16) -> Proc {
    Proc::spawn(
        dir,
        name,
        syncer_bin(),
        &[
            "servicecenter".into(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
        ],
        &[("SYNCER_LOG", "warn".into())],
    )
}

/// One B syncer's fixed ports, reused across the restart.
#[derive(Debug, Clone, Copy)]
struct Ports {
    gossip: u16,
    rpc: u16,
    http: u16,
}

fn start_syncer(
    dir: &std::path::Path,
    name: &str,
    cluster: &str,
    core: u16,
    ports: Ports,
    join: Option<u16>,
    s: &Settings,
) -> Proc {
    let mut args: Vec<String> = vec![
        "daemon".into(),
        "--sc-addr".into(),
        format!("http://127.0.0.1:{core}"),
        "--cluster-name".into(),
        cluster.into(),
        "--node".into(),
        name.into(),
        "--bind-addr".into(),
        format!("127.0.0.1:{}", ports.gossip),
        "--rpc-addr".into(),
        format!("127.0.0.1:{}", ports.rpc),
        "--http-addr".into(),
        format!("127.0.0.1:{}", ports.http),
        "--ticker-interval".into(),
        s.tick.to_string(),
        "--registry-write-rate".into(),
        s.rate.to_string(),
    ];
    if let Some(burst) = s.burst {
        args.extend(["--registry-write-burst".into(), burst.to_string()]);
    }
    if let Some(j) = join {
        args.extend(["--join-addr".into(), format!("127.0.0.1:{j}")]);
    }
    Proc::spawn(
        dir,
        name,
        syncer_bin(),
        &args,
        &[(
            "SYNCER_LOG",
            std::env::var("BENCH_SYNCER_LOG").unwrap_or_else(|_| "warn".into()),
        )],
    )
}

async fn wait_ready(http: &reqwest::Client, url: &str, proc: &Proc) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if http
            .get(format!("{url}/v4/default/registry/microservices"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("core {url} did not start: {}", proc.tail(20));
}

/// Registers `total` instances at `url`, `per_service` per service, 64 requests in flight,
/// with a 40-minute lease (they outlive the bench without heartbeats).
async fn load(http: &reqwest::Client, url: &str, total: usize, per_service: usize) {
    let services = total.div_ceil(per_service);
    stream::iter(0..services)
        .map(|s| async move {
            let sid = support::sc_create_service(http, url, "storm", &format!("svc-{s}")).await;
            for k in 0..per_service {
                let n = s * per_service + k;
                if n >= total {
                    break;
                }
                let resp = http
                    .post(format!("{url}/v4/default/registry/microservices/{sid}/instances"))
                    .json(&json!({"instance": {
                        "hostName": format!("host-{n}"),
                        "endpoints": [format!("rest://10.{}.{}.{}:8080", (n >> 16) & 255, (n >> 8) & 255, n & 255)],
                        "healthCheck": {"mode": "push", "interval": 600, "times": 3}
                    }}))
                    .send()
                    .await
                    .expect("register");
                assert!(resp.status().is_success(), "register: {}", resp.status());
            }
        })
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await;
}

/// What one scrape of B's core says.
#[derive(Debug, Clone, Copy, Default)]
struct CoreSample {
    /// Heartbeats renewed and refused since the core started.
    heartbeats: f64,
    /// Instances held.
    instances: f64,
    /// POST, PUT and DELETE requests since the core started.
    write_requests: f64,
}

/// The sum of the samples of `name` in an exposition whose labels contain all of `labels`.
fn sum(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let metric = series.split('{').next()?;
            if metric != name || !labels.iter().all(|want| series.contains(want)) {
                return None;
            }
            value.parse::<f64>().ok()
        })
        .sum()
}

async fn scrape(http: &reqwest::Client, url: &str) -> Option<String> {
    let resp = http
        .get(url)
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?;
    resp.text().await.ok()
}

async fn core_sample(http: &reqwest::Client, core: &str) -> Option<CoreSample> {
    let text = scrape(http, &format!("{core}/metrics")).await?;
    Some(CoreSample {
        heartbeats: sum(&text, "service_center_db_heartbeat_total", &[]),
        instances: sum(&text, "service_center_db_instance_total", &[]),
        write_requests: ["POST", "PUT", "DELETE"]
            .iter()
            .map(|m| {
                sum(
                    &text,
                    "service_center_http_request_total",
                    &[&format!("method=\"{m}\"")],
                )
            })
            .sum(),
    })
}

/// Write items the B syncers counted, summed; a syncer not answering counts 0 (its counter
/// starts again after a restart: [`Totals`] handles the reset).
async fn syncer_writes(http: &reqwest::Client, ports: &[Ports]) -> Vec<f64> {
    let mut out = Vec::with_capacity(ports.len());
    for p in ports {
        let text = scrape(http, &format!("http://127.0.0.1:{}/metrics", p.http))
            .await
            .unwrap_or_default();
        out.push(sum(&text, "syncer_registry_writes_total", &[]));
    }
    out
}

/// Running totals of per-process counters across restarts (a smaller value is a reset).
#[derive(Default)]
struct Totals {
    last: Vec<f64>,
    total: f64,
}

impl Totals {
    fn add(&mut self, now: &[f64]) -> f64 {
        if self.last.len() != now.len() {
            self.last = vec![0.0; now.len()];
        }
        for (last, &v) in self.last.iter_mut().zip(now) {
            self.total += if v >= *last { v - *last } else { v };
            *last = v;
        }
        self.total
    }
}

/// The highest rate of `series` (time, cumulative value) over any window of at least 1 s.
fn peak_per_sec(series: &[(f64, f64)]) -> f64 {
    let mut peak = 0.0f64;
    let mut j = 0;
    for i in 0..series.len() {
        while j < i && series[i].0 - series[j + 1].0 >= 1.0 {
            j += 1;
        }
        let dt = series[i].0 - series[j].0;
        if dt >= 1.0 {
            peak = peak.max((series[i].1 - series[j].1) / dt);
        }
    }
    peak
}

#[tokio::main]
async fn main() {
    let s = settings();
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let http = reqwest::Client::new();
    let (a_port, b_port) = (free_tcp_port(), free_tcp_port());
    let (a_url, b_url) = (
        format!("http://127.0.0.1:{a_port}"),
        format!("http://127.0.0.1:{b_port}"),
    );
    let a_core = start_core(dir.path(), "core-a", a_port);
    let b_core = start_core(dir.path(), "core-b", b_port);
    wait_ready(&http, &a_url, &a_core).await;
    wait_ready(&http, &b_url, &b_core).await;
    let loaded = Instant::now();
    load(&http, &a_url, s.copies, s.per_service).await;
    println!(
        "setup         {} instances at site A in {:.1} s",
        s.copies,
        loaded.elapsed().as_secs_f64()
    );
    let a_gossip = free_udp_port();
    let a_ports = Ports {
        gossip: a_gossip,
        rpc: free_tcp_port(),
        http: free_tcp_port(),
    };
    let _a = start_syncer(dir.path(), "a1", "site-a", a_port, a_ports, None, &s);
    let ports: Vec<Ports> = (0..s.syncers)
        .map(|_| Ports {
            gossip: free_udp_port(),
            rpc: free_tcp_port(),
            http: free_tcp_port(),
        })
        .collect();
    let names: Vec<String> = (0..s.syncers).map(|i| format!("b{i:02}")).collect();
    let start_all = |ports: &[Ports]| -> Vec<Proc> {
        names
            .iter()
            .zip(ports)
            .map(|(name, p)| {
                start_syncer(dir.path(), name, "site-b", b_port, *p, Some(a_gossip), &s)
            })
            .collect()
    };
    let started = Instant::now();
    let mut b = start_all(&ports);
    let total = s.copies as f64;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        if core_sample(&http, &b_url)
            .await
            .is_some_and(|c| c.instances >= total)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "site B never held every copy\n{}",
            b[0].tail(20)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    println!(
        "initial       {} copies at site B in {:.1} s ({} syncers, --registry-write-rate {}, tick {} s)",
        s.copies,
        started.elapsed().as_secs_f64(),
        s.syncers,
        s.rate,
        s.tick
    );
    tokio::time::sleep(Duration::from_secs(s.tick + 1)).await;

    // The storm: every B syncer killed at once, then all started at once.
    for p in &mut b {
        let _ = p.child.kill();
    }
    for p in &mut b {
        let _ = p.child.wait();
    }
    let restart = Instant::now();
    b = start_all(&ports);
    let before = core_sample(&http, &b_url).await.unwrap_or_default();
    let mut core_series: Vec<(f64, CoreSample)> = Vec::new();
    let mut syncer_series: Vec<(f64, f64)> = Vec::new();
    let mut totals = Totals::default();
    let mut steady: Option<f64> = None;
    let mut min_instances = f64::MAX;
    let mut max_instances = 0.0f64;
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut n = 0u64;
    while restart.elapsed() < Duration::from_secs(s.observe_secs) {
        tick.tick().await;
        let t = restart.elapsed().as_secs_f64();
        if let Some(c) = core_sample(&http, &b_url).await {
            min_instances = min_instances.min(c.instances);
            max_instances = max_instances.max(c.instances);
            if steady.is_none() && c.heartbeats - before.heartbeats >= total && c.instances >= total
            {
                steady = Some(t);
            }
            core_series.push((t, c));
        }
        // The syncers' own counts once a second (ten scrapes).
        if n.is_multiple_of(4) {
            let now = syncer_writes(&http, &ports).await;
            syncer_series.push((restart.elapsed().as_secs_f64(), totals.add(&now)));
        }
        n += 1;
    }
    // Registry-side writes: heartbeats plus instances added.
    let mut added = 0.0;
    let mut last_instances = before.instances;
    let writes: Vec<(f64, f64)> = core_series
        .iter()
        .map(|(t, c)| {
            added += (c.instances - last_instances).max(0.0);
            last_instances = c.instances;
            (*t, c.heartbeats - before.heartbeats + added)
        })
        .collect();
    let requests: Vec<(f64, f64)> = core_series
        .iter()
        .map(|(t, c)| (*t, c.write_requests))
        .collect();

    // A full listing at the end: copies by origin instance.
    let plugin = syncer_plugin_servicecenter::ServiceCenterPlugin::new(
        syncer_plugin_servicecenter::Config {
            endpoints: vec![b_url.clone()],
            use_admin_dump: true,
            request_timeout: Duration::from_secs(60),
            ..Default::default()
        },
    )
    .expect("plugin");
    let listed = plugin.list().await.expect("list site B");
    let mut by_origin: HashMap<(String, String), usize> = HashMap::new();
    for i in &listed.instances {
        if let (Some(c), Some(o)) = (
            i.properties.get(ORIGIN_CLUSTER),
            i.properties.get(ORIGIN_INSTANCE_ID),
        ) {
            *by_origin.entry((c.clone(), o.clone())).or_default() += 1;
        }
    }
    let duplicated = by_origin.values().filter(|&&n| n > 1).count();

    println!(
        "storm         {} syncers SIGKILLed and restarted at once, {} copies, --registry-write-rate {} (burst {}), tick {} s, observed {} s",
        s.syncers,
        s.copies,
        s.rate,
        match (s.burst, std::env::var("SYNCER_REGISTRY_WRITE_BURST")) {
            (Some(b), _) => b.to_string(),
            (None, Ok(b)) => b,
            (None, Err(_)) => "default".to_owned(),
        },
        s.tick,
        s.observe_secs
    );
    println!(
        "registry      peak writes/s {:.0} (heartbeats + instances added, any 1 s window) against the configured {}; peak write requests/s {:.0}",
        peak_per_sec(&writes),
        if s.rate == 0 { "unlimited".to_owned() } else { s.rate.to_string() },
        peak_per_sec(&requests),
    );
    println!(
        "syncers       peak writes/s {:.0} (syncer_registry_writes_total of all {} syncers, 1 s samples)",
        peak_per_sec(&syncer_series),
        s.syncers
    );
    println!(
        "steady state  {} after the restart (the registry renewed as many heartbeats as copies)",
        match steady {
            Some(t) => format!("{t:.1} s"),
            None => "not reached".to_owned(),
        }
    );
    println!(
        "expired       {:.0} (copies {} minus the fewest instances held: {:.0})",
        (total - min_instances).max(0.0),
        s.copies,
        min_instances
    );
    println!(
        "duplicates    {:.0} instances beyond the copies at most; {} origins with more than one copy in the final listing of {} instances ({} origins)",
        (max_instances - total).max(0.0),
        duplicated,
        listed.instances.len(),
        by_origin.len()
    );
    if std::env::var_os("BENCH_KEEP_LOGS").is_some() {
        println!("logs in {}", dir.keep().display());
    }
    drop(b);
}
