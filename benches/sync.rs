//! Sync benchmark: two sites on loopback, each a built-in core (`syncer servicecenter`) with a
//! syncer beside it (`syncer daemon --sc-plugin servicecenter`), as separate processes.
//!
//! Reports, for each size:
//! * initial sync: the time from starting both syncers (site A already holding N instances)
//!   until site B holds all N copies, next to the baseline of registering the same N
//!   instances directly into a fresh core with the same client, measured in the same run;
//! * steady-state propagation of a single register and a single unregister from A to B
//!   (p50, p99, max over `--samples` samples) with N instances resident;
//! * each syncer's CPU seconds and peak RSS (VmHWM), the registries excluded;
//! * with `--tls off,on` (the default), all of it once in plaintext and once with mutual TLS
//!   on the exchange (certificates made by the bench), then what TLS costs: the ratio of
//!   the initial syncs and the difference of the propagation percentiles;
//! * what scraping costs: the propagation samples are taken in alternating blocks of
//!   [`SCRAPE_BLOCK`], with both syncers' `/metrics` (and `/v1/syncer/status`) scraped every
//!   second during every other block; p50/p99 and the syncers' CPU seconds per sample of the
//!   scraped blocks against the others, in the same run.
//!
//! Run: `cargo bench --bench sync` (all sizes) or
//! `cargo bench --bench sync -- --sizes 1000,10000 --per-service 10 --samples 200`.
//! `BENCH_KEEP_LOGS=1` keeps the processes' logs (the directory is printed) and
//! `BENCH_SYNCER_LOG=info,syncer=debug` sets the syncers' log filter (default `warn`).

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};
use serde_json::{json, Value};
use support::{free_tcp_port, free_udp_port, Proc};
use syncer_plugin_api::{Changes, Instance, Plugin};
use syncer_plugin_servicecenter::ServiceCenterPlugin;

const CONCURRENCY: usize = 64;

/// Propagation samples per block, scraped and not scraped in turn.
const SCRAPE_BLOCK: usize = 10;

struct Options {
    sizes: Vec<usize>,
    per_service: Vec<usize>,
    samples: usize,
    propagation_sizes: Vec<usize>,
    /// Exchange modes to run, in order: false plaintext, true mutual TLS.
    tls: Vec<bool>,
}

/// What one run measured, for the TLS comparison.
#[derive(Debug, Default, Clone, Copy)]
struct Figures {
    initial: Duration,
    register_p50: Duration,
    register_p99: Duration,
}

fn options() -> Options {
    let mut o = Options {
        sizes: vec![1_000, 10_000, 100_000],
        per_service: vec![1, 10],
        samples: 200,
        propagation_sizes: vec![10_000, 100_000],
        tls: vec![false, true],
    };
    let args: Vec<String> = std::env::args().collect();
    let list =
        |v: &str| -> Vec<usize> { v.split(',').filter_map(|x| x.trim().parse().ok()).collect() };
    let mut i = 1;
    while i < args.len() {
        let value = args.get(i + 1).cloned().unwrap_or_default();
        match args[i].as_str() {
            "--sizes" => o.sizes = list(&value),
            "--per-service" => o.per_service = list(&value),
            "--samples" => o.samples = value.parse().unwrap_or(o.samples),
            "--propagation-sizes" => o.propagation_sizes = list(&value),
            "--tls" => {
                o.tls = value
                    .split(',')
                    .filter_map(|m| match m.trim() {
                        "on" => Some(true),
                        "off" => Some(false),
                        _ => None,
                    })
                    .collect()
            }
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    o
}

/// A core process and its URL.
struct Core {
    proc: Proc,
    url: String,
}

fn start_core(dir: &std::path::Path, name: &str) -> Core {
    let port = free_tcp_port();
    let proc = Proc::spawn(
        dir,
        name,
        std::path::Path::new(env!("CARGO_BIN_EXE_syncer")),
        &[
            "servicecenter".into(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            // Above service-center's default quotas (50,000 services, 150,000 instances):
            // the largest size has 100,000 services, and 200,000 instances while a test
            // holds both sites' instances.
            "--quota-services".into(),
            "1000000".into(),
            "--quota-instances".into(),
            "1000000".into(),
        ],
        &[("SYNCER_LOG", "warn".into())],
    );
    Core {
        proc,
        url: format!("http://127.0.0.1:{port}"),
    }
}

fn start_syncer(
    dir: &std::path::Path,
    name: &str,
    core: &Core,
    gossip: u16,
    join: Option<u16>,
    tls: Option<&support::certs::SiteFiles>,
    http_port: u16,
) -> Proc {
    let mut args: Vec<String> = vec![
        "daemon".into(),
        "--http-addr".into(),
        format!("127.0.0.1:{http_port}"),
        "--sc-plugin".into(),
        "servicecenter".into(),
        "--sc-addr".into(),
        core.url.clone(),
        "--cluster-name".into(),
        name.into(),
        "--node".into(),
        name.into(),
        "--bind-addr".into(),
        format!("127.0.0.1:{gossip}"),
        "--rpc-addr".into(),
        format!("127.0.0.1:{}", free_tcp_port()),
    ];
    if let Some(j) = join {
        args.push("--join-addr".into());
        args.push(format!("127.0.0.1:{j}"));
    }
    if let Some(files) = tls {
        args.extend(files.flags());
    }
    Proc::spawn(
        dir,
        name,
        std::path::Path::new(env!("CARGO_BIN_EXE_syncer")),
        &args,
        &[(
            "SYNCER_LOG",
            std::env::var("BENCH_SYNCER_LOG").unwrap_or_else(|_| "warn".into()),
        )],
    )
}

async fn wait_ready(http: &reqwest::Client, core: &Core) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if http
            .get(format!("{}/v4/default/registry/microservices", core.url))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("core {} did not start: {}", core.url, core.proc.tail(20));
}

async fn create_service(http: &reqwest::Client, url: &str, name: &str) -> String {
    support::sc_create_service(http, url, "bench", name).await
}

async fn register(http: &reqwest::Client, url: &str, sid: &str, n: usize) -> String {
    let body: Value = http
        .post(format!("{url}/v4/default/registry/microservices/{sid}/instances"))
        .json(&json!({"instance": {
            "hostName": format!("host-{n}"),
            "endpoints": [format!("rest://10.{}.{}.{}:8080", (n >> 16) & 255, (n >> 8) & 255, n & 255)],
            "healthCheck": {"mode": "push", "interval": 600, "times": 3}
        }}))
        .send()
        .await
        .expect("register")
        .json()
        .await
        .expect("register body");
    body["instanceId"].as_str().expect("instanceId").to_owned()
}

/// Registers `total` instances, `per_service` per service, with [`CONCURRENCY`] requests in
/// flight; returns the time taken.
async fn load(http: &reqwest::Client, url: &str, total: usize, per_service: usize) -> Duration {
    let started = Instant::now();
    let services = total.div_ceil(per_service);
    stream::iter(0..services)
        .map(|s| async move {
            let sid = create_service(http, url, &format!("svc-{s}")).await;
            for k in 0..per_service {
                let n = s * per_service + k;
                if n < total {
                    register(http, url, &sid, n).await;
                }
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect::<Vec<_>>()
        .await;
    started.elapsed()
}

/// Waits until the core at `url` holds `total` imported copies (instances with an origin
/// marker), following its change log (`admin/changes`) after one dump, so watching costs
/// the core O(change), not a dump per poll. Panics after `limit`.
async fn wait_for_copies(
    url: &str,
    total: usize,
    limit: Duration,
    on_timeout: impl Fn() -> String,
) {
    let plugin = ServiceCenterPlugin::new(syncer_plugin_servicecenter::Config {
        endpoints: vec![url.to_owned()],
        request_timeout: Duration::from_secs(60),
        use_admin_dump: true,
        ..Default::default()
    })
    .expect("plugin");
    let started = Instant::now();
    let is_copy = |i: &Instance| i.origin_cluster().is_some();
    let mut have: HashSet<(String, String)> = HashSet::new();
    let mut at = None;
    while have.len() < total {
        assert!(
            started.elapsed() < limit,
            "initial sync did not finish: {}",
            on_timeout()
        );
        let Some(since) = at else {
            let (snapshot, revision) = plugin.list_with_revision().await.expect("dump");
            have = snapshot
                .instances
                .iter()
                .filter(|i| is_copy(i))
                .map(|i| (i.service_id.clone(), i.instance_id.clone()))
                .collect();
            at = Some(revision.expect("the built-in core numbers its dump"));
            continue;
        };
        match plugin.changes(since, Duration::from_secs(1), true).await {
            Ok(Some(Changes::Since(set))) => {
                for i in set.instances.iter().filter(|i| is_copy(i)) {
                    have.insert((i.service_id.clone(), i.instance_id.clone()));
                }
                for key in &set.removed {
                    have.remove(key);
                }
                at = Some(set.revision);
            }
            Ok(Some(Changes::Relist)) => at = None,
            Ok(None) => panic!("the core has no change log"),
            Err(e) => panic!("reading the core's changes: {e}"),
        }
    }
}

async fn find_count(http: &reqwest::Client, url: &str, name: &str) -> usize {
    let Ok(resp) = http
        .get(format!("{url}/v4/default/registry/instances"))
        .query(&[
            ("appId", "bench"),
            ("serviceName", name),
            ("version", "latest"),
        ])
        .send()
        .await
    else {
        return 0;
    };
    resp.json::<Value>()
        .await
        .ok()
        .and_then(|b| b["instances"].as_array().map(Vec::len))
        .unwrap_or(0)
}

/// Scrapes `/metrics` and `/v1/syncer/status` of each of `bases` every second while
/// `scraping` is set (what a Prometheus and an open dashboard would do).
async fn scrape_loop(
    http: reqwest::Client,
    bases: Vec<String>,
    scraping: std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        if !scraping.load(std::sync::atomic::Ordering::Relaxed) {
            continue;
        }
        for base in &bases {
            for path in ["/metrics", "/v1/syncer/status"] {
                if let Ok(resp) = http.get(format!("{base}{path}")).send().await {
                    let _ = resp.bytes().await;
                }
            }
        }
    }
}

/// CPU seconds of a process to the nanosecond: the sum of its threads' time on a CPU
/// (`/proc/PID/task/*/schedstat`; `/proc/PID/stat` counts in 10 ms ticks, too coarse for
/// blocks of a few milliseconds). Threads that ended are not counted.
fn cpu_ns(pid: u32) -> f64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0.0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .sum::<f64>()
        / 1e9
}

/// (CPU seconds, peak RSS in MiB) of a process, from /proc.
fn usage(pid: u32) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    // After the command: state is field 3; utime and stime are fields 14 and 15.
    let ticks = |i: usize| {
        fields
            .get(i - 3)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let cpu = (ticks(14) + ticks(15)) / 100.0;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hwm_kib = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    (cpu, hwm_kib / 1024.0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

async fn wait_for(what: &str, timeout: Duration, mut check: impl AsyncFnMut() -> bool) -> Duration {
    let started = Instant::now();
    loop {
        if check().await {
            return started.elapsed();
        }
        if started.elapsed() > timeout {
            panic!("timed out after {timeout:?}: {what}");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn run_size(opts: &Options, total: usize, per_service: usize, tls: bool) -> Figures {
    let mut figures = Figures::default();
    let mode = if tls { "tls=on " } else { "tls=off" };
    let dir = tempfile::tempdir().expect("tempdir");
    // BENCH_KEEP_LOGS=1 keeps the processes' logs (with BENCH_SYNCER_LOG=info, say).
    let dir = if std::env::var_os("BENCH_KEEP_LOGS").is_some() {
        let kept = dir.keep();
        println!("logs in {}", kept.display());
        kept
    } else {
        dir.path().to_path_buf()
    };
    let dir = dir.as_path();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(CONCURRENCY)
        .timeout(Duration::from_secs(60))
        .build()
        .expect("http client");

    // Baseline: the same registrations straight into a fresh core.
    let baseline_core = start_core(dir, "baseline-core");
    wait_ready(&http, &baseline_core).await;
    let baseline = load(&http, &baseline_core.url, total, per_service).await;
    drop(baseline_core);

    let a = start_core(dir, "core-a");
    let b = start_core(dir, "core-b");
    wait_ready(&http, &a).await;
    wait_ready(&http, &b).await;
    let loaded = load(&http, &a.url, total, per_service).await;

    let ca = support::certs::Ca::new("bench CA");
    let (files_a, files_b) = if tls {
        (
            Some(ca.site(&dir.join("certs-a"), &["site-a"])),
            Some(ca.site(&dir.join("certs-b"), &["site-b"])),
        )
    } else {
        (None, None)
    };
    let gossip_a = free_udp_port();
    let started = Instant::now();
    let (http_a, http_b) = (free_tcp_port(), free_tcp_port());
    let syncer_a = start_syncer(dir, "site-a", &a, gossip_a, None, files_a.as_ref(), http_a);
    let syncer_b = start_syncer(
        dir,
        "site-b",
        &b,
        free_udp_port(),
        Some(gossip_a),
        files_b.as_ref(),
        http_b,
    );
    wait_for_copies(&b.url, total, Duration::from_secs(900), || {
        format!("{}\n{}", syncer_a.tail(20), syncer_b.tail(20))
    })
    .await;
    let initial = started.elapsed();
    figures.initial = initial;
    println!(
        "initial sync  {mode} n={total:>6} per_service={per_service:>2}  sync {:>8} ms  baseline (direct registration) {:>8} ms  ratio {:.2}  (loading site A took {} ms)",
        ms(initial),
        ms(baseline),
        initial.as_secs_f64() / baseline.as_secs_f64(),
        ms(loaded)
    );

    if opts.propagation_sizes.contains(&total) && opts.samples > 0 {
        let probe_sid = create_service(&http, &a.url, "probe").await;
        let mut up = Vec::with_capacity(opts.samples);
        let mut down = Vec::with_capacity(opts.samples);
        // Scraping in every other block: (register latencies, syncer CPU seconds) per mode.
        let scraping = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let scraper = tokio::spawn(scrape_loop(
            http.clone(),
            vec![
                format!("http://127.0.0.1:{http_a}"),
                format!("http://127.0.0.1:{http_b}"),
            ],
            scraping.clone(),
        ));
        let syncer_pids = [syncer_a.child.id(), syncer_b.child.id()];
        let cpu_now = || -> f64 { syncer_pids.iter().map(|pid| cpu_ns(*pid)).sum() };
        let mut by_mode: [(Vec<Duration>, f64); 2] = [(Vec::new(), 0.0), (Vec::new(), 0.0)];
        let mut block_cpu = cpu_now();
        for n in 0..opts.samples {
            let scraped = (n / SCRAPE_BLOCK) % 2 == 1;
            if n % SCRAPE_BLOCK == 0 {
                scraping.store(scraped, std::sync::atomic::Ordering::Relaxed);
            }
            let t = Instant::now();
            let iid = register(&http, &a.url, &probe_sid, 1_000_000 + n).await;
            wait_for(
                "probe registered at B",
                Duration::from_secs(60),
                async || find_count(&http, &b.url, "probe").await == 1,
            )
            .await;
            up.push(t.elapsed());
            by_mode[usize::from(scraped)].0.push(t.elapsed());
            let t = Instant::now();
            http.delete(format!(
                "{}/v4/default/registry/microservices/{probe_sid}/instances/{iid}",
                a.url
            ))
            .send()
            .await
            .expect("unregister");
            wait_for("probe removed at B", Duration::from_secs(60), async || {
                find_count(&http, &b.url, "probe").await == 0
            })
            .await;
            down.push(t.elapsed());
            if (n + 1) % SCRAPE_BLOCK == 0 || n + 1 == opts.samples {
                let cpu = cpu_now();
                by_mode[usize::from(scraped)].1 += cpu - block_cpu;
                block_cpu = cpu;
            }
        }
        scraper.abort();
        // The cost of one scrape itself: 200 of them back to back at site B.
        let before = cpu_ns(syncer_b.child.id());
        let t = Instant::now();
        for _ in 0..200 {
            for path in ["/metrics", "/v1/syncer/status"] {
                let resp = http
                    .get(format!("http://127.0.0.1:{http_b}{path}"))
                    .send()
                    .await
                    .expect("scrape");
                let _ = resp.bytes().await;
            }
        }
        let per_scrape = (cpu_ns(syncer_b.child.id()) - before) * 1000.0 / 200.0;
        println!(
            "scrape cost   {mode} n={total:>6} per_service={per_service:>2}  /metrics + /v1/syncer/status at site-b: {per_scrape:.2} ms cpu per pair ({:.2} ms wall); scraped every second that is {:.3} % of one core",
            t.elapsed().as_secs_f64() * 1000.0 / 200.0,
            per_scrape / 10.0,
        );
        up.sort();
        down.sort();
        for (list, _) in by_mode.iter_mut() {
            list.sort();
        }
        let [(off, cpu_off), (on, cpu_on)] = &by_mode;
        if !off.is_empty() && !on.is_empty() {
            let per = |cpu: f64, n: usize| cpu * 1000.0 / n as f64;
            println!(
                "metrics cost  {mode} n={total:>6} per_service={per_service:>2}  register p50 {} / {} ms, p99 {} / {} ms, syncers' cpu {:.1} / {:.1} ms per sample (scraped every 1 s / not; {} / {} samples)  p50 ratio {:.2}  cpu ratio {:.2}",
                ms(percentile(on, 0.5)),
                ms(percentile(off, 0.5)),
                ms(percentile(on, 0.99)),
                ms(percentile(off, 0.99)),
                per(*cpu_on, on.len()),
                per(*cpu_off, off.len()),
                on.len(),
                off.len(),
                percentile(on, 0.5).as_secs_f64() / percentile(off, 0.5).as_secs_f64(),
                per(*cpu_on, on.len()) / per(*cpu_off, off.len()),
            );
        }
        figures.register_p50 = percentile(&up, 0.5);
        figures.register_p99 = percentile(&up, 0.99);
        for (what, list) in [("register", &up), ("unregister", &down)] {
            println!(
                "propagation   {mode} n={total:>6} per_service={per_service:>2}  {what:<10} p50 {:>7} ms  p99 {:>7} ms  max {:>7} ms  ({} samples)",
                ms(percentile(list, 0.5)),
                ms(percentile(list, 0.99)),
                ms(list[list.len() - 1]),
                list.len()
            );
        }
    }
    for (name, p) in [("site-a", &syncer_a), ("site-b", &syncer_b)] {
        let (cpu, rss) = usage(p.child.id());
        println!(
            "syncer usage  {mode} n={total:>6} per_service={per_service:>2}  {name}  cpu {cpu:>7.2} s  peak rss {rss:>7.1} MiB"
        );
    }
    let (_, core_rss) = usage(b.proc.child.id());
    println!("registry      {mode} n={total:>6} per_service={per_service:>2}  core-b peak rss {core_rss:.1} MiB (for scale)");
    figures
}

#[tokio::main]
async fn main() {
    let opts = options();
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    for &total in &opts.sizes {
        for &per_service in &opts.per_service {
            let mut runs = Vec::new();
            for &tls in &opts.tls {
                runs.push((tls, run_size(&opts, total, per_service, tls).await));
            }
            let off = runs.iter().find(|(tls, _)| !tls).map(|(_, f)| *f);
            let on = runs.iter().find(|(tls, _)| *tls).map(|(_, f)| *f);
            if let (Some(off), Some(on)) = (off, on) {
                let diff =
                    |a: Duration, b: Duration| a.as_secs_f64() * 1000.0 - b.as_secs_f64() * 1000.0;
                println!(
                    "tls cost      n={total:>6} per_service={per_service:>2}  initial sync on/off {:.2}  propagation p50 {:+.1} ms  p99 {:+.1} ms",
                    on.initial.as_secs_f64() / off.initial.as_secs_f64(),
                    diff(on.register_p50, off.register_p50),
                    diff(on.register_p99, off.register_p99),
                );
            }
        }
    }
}
