//! `GET /metrics` of the core, in the OpenMetrics text format (which Prometheus scrapes),
//! with service-center's own metric names (family `service_center`, its
//! `server/metrics/{http,meta,pubsub}.go`), so a service-center dashboard keeps working;
//! and `MeasureLayer`, which counts and times every request for it.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `service_center_http_request_total` | counter | `method`, `code`, `instance`, `api`, `domain` |
//! | `service_center_http_success_total` | counter | the same; codes below 500, as service-center counts |
//! | `service_center_http_request_durations_microseconds` | summary (0.5, 0.9, 0.99) | `method`, `instance`, `api`, `domain` |
//! | `service_center_db_domain_total` | gauge | `instance` |
//! | `service_center_db_service_total` | gauge | `instance`, `domain` |
//! | `service_center_db_instance_total` | gauge | `instance`, `domain` |
//! | `service_center_db_schema_total` | gauge | `instance`, `domain` |
//! | `service_center_db_heartbeat_total` | counter | `instance`, `status` (`success`, `failure`) |
//! | `service_center_db_sc_total` | counter | `instance` (1: this core) |
//! | `service_center_notify_subscriber_total` | gauge | `instance`, `domain`, `scheme` (`websocket`) |
//! | `process_resident_memory_bytes`, `process_virtual_memory_bytes`, `process_cpu_seconds_total`, `process_open_fds`, `process_max_fds`, `process_start_time_seconds` | gauge / counter | none |
//!
//! `instance` is the core's listen address. Label bounds: [`crate::servicecenter::core::metrics`].
//! The `db_*` gauges are counted from the registry at each scrape (one pass over the services
//! under the lock, about a millisecond per 10^5 services); their domains share the bound of
//! the HTTP metrics' domains (the rest are summed under `domain="other"`).
//!
//! prometheus-client has no summary type, so the one summary is written here in the same
//! text format, after the crate's families and before `# EOF`. Label values are escaped
//! here (`\`, `"`, newline): prometheus-client writes them as given, and `domain` is
//! client input.

use std::borrow::Cow;
use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeLabelValue, EncodeMetric, LabelSetEncoder,
    LabelValueEncoder,
};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::servicecenter::core::metrics::{method_index, CoreMetrics, Series, SeriesView, OTHER};
use crate::servicecenter::core::Core;

/// The content type of the reply (OpenMetrics text 1.0.0, which Prometheus prefers).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The layer that counts and times every request of the core's router for `/metrics`: the
/// series (method, route template, domain) is found before the request runs, its status
/// code and duration recorded when the response is ready. Nothing is allocated per
/// request once the series exists.
#[derive(Clone)]
pub(crate) struct MeasureLayer {
    metrics: Arc<CoreMetrics>,
}

impl MeasureLayer {
    /// The layer recording into `core`'s metrics.
    pub(crate) fn new(core: &Core) -> MeasureLayer {
        MeasureLayer {
            metrics: core.metrics().clone(),
        }
    }
}

impl<S> tower::Layer<S> for MeasureLayer {
    type Service = Measure<S>;

    fn layer(&self, inner: S) -> Measure<S> {
        Measure {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// The service of [`MeasureLayer`] around the routes `S`.
#[derive(Clone)]
pub(crate) struct Measure<S> {
    inner: S,
    metrics: Arc<CoreMetrics>,
}

impl<S> tower::Service<Request> for Measure<S>
where
    S: tower::Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Measured<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let started = Instant::now();
        let api = req
            .extensions()
            .get::<MatchedPath>()
            .map(MatchedPath::as_str);
        let domain = req
            .headers()
            .get("x-domain-name")
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty());
        let series = self.metrics.series(method_index(req.method()), api, domain);
        let epoch = self.metrics.epoch(started);
        Measured {
            inner: self.inner.call(req),
            series: Some(series),
            started,
            epoch,
        }
    }
}

pin_project_lite::pin_project! {
    /// A request being answered: records its code and duration when its response is ready.
    pub(crate) struct Measured<F> {
        #[pin]
        inner: F,
        series: Option<Arc<Series>>,
        started: Instant,
        epoch: u64,
    }
}

impl<F> Future for Measured<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let resp = match this.inner.poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Ok(resp)) => resp,
            Poll::Ready(Err(e)) => match e {},
        };
        if let Some(series) = this.series.take() {
            series.record(resp.status().as_u16(), *this.epoch, this.started.elapsed());
        }
        Poll::Ready(Ok(resp))
    }
}

/// `GET /metrics`: every metric of the module docs. With RBAC on it needs, like any read,
/// a token (or basic auth) of an account allowed to read services.
pub(crate) async fn scrape(State(core): State<Core>) -> Response {
    let text = render(&core);
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE))],
        text,
    )
        .into_response()
}

/// The registry's counts for the `db_*` gauges, per domain.
#[derive(Default, Clone, Copy)]
struct Held {
    services: u64,
    instances: u64,
    schemas: u64,
}

/// The whole `/metrics` text.
pub fn render(core: &Core) -> String {
    let metrics = core.metrics();
    // One pass under the lock, keyed by the registry's own strings; labels after.
    let (domains_total, per_domain) = {
        let reg = core.lock();
        let mut per: HashMap<&str, Held> = HashMap::new();
        for e in reg.all_services() {
            let h = per.entry(e.domain.as_str()).or_default();
            h.services += 1;
            h.instances += e.instances.len() as u64;
        }
        for (sid, schemas) in reg.schemas.all() {
            if let Some(e) = reg.shared_entry(sid) {
                if let Some(h) = per.get_mut(e.domain.as_str()) {
                    h.schemas += schemas.len() as u64;
                }
            }
        }
        let owned: Vec<(String, Held)> = per.into_iter().map(|(d, h)| (d.to_owned(), h)).collect();
        (owned.len() as u64, owned)
    };
    let mut by_label: HashMap<Arc<str>, Held> = HashMap::new();
    for (domain, h) in per_domain {
        let sum = by_label.entry(metrics.domain_label(&domain)).or_default();
        sum.services += h.services;
        sum.instances += h.instances;
        sum.schemas += h.schemas;
    }
    let mut db: Vec<(Arc<str>, Held)> = by_label.into_iter().collect();
    db.sort_by(|a, b| a.0.cmp(&b.0));

    let series = metrics.all_series();
    let instance = metrics.instance().unwrap_or("").to_owned();
    // No `instance` label before the core serves (a router used without a listener).
    let mut registry = if instance.is_empty() {
        Registry::default()
    } else {
        Registry::with_labels(
            [(Cow::Borrowed("instance"), Cow::Owned(escape(&instance)))].into_iter(),
        )
    };
    registry.register_collector(Box::new(ServiceCenterFamilies {
        series: series.clone(),
        db,
        domains_total,
        heartbeats: metrics.heartbeat_totals(),
        subscribers: metrics.subscribers(),
    }));
    let mut process = Registry::default();
    process.register_collector(Box::new(ProcessFamilies));
    let mut out = String::with_capacity(4096 + series.len() * 600);
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode_registry(&mut out, &registry);
    let _ = prometheus_client::encoding::text::encode_registry(&mut out, &process);
    let _ = write_durations(&mut out, &instance, &series, metrics.epoch(Instant::now()));
    let _ = prometheus_client::encoding::text::encode_eof(&mut out);
    out
}

/// `service_center_http_request_durations_microseconds` (a summary) in the text format.
fn write_durations(
    out: &mut String,
    instance: &str,
    series: &[SeriesView],
    epoch: u64,
) -> std::fmt::Result {
    const NAME: &str = "service_center_http_request_durations_microseconds";
    writeln!(
        out,
        "# HELP {NAME} HTTP request latency summary of ROA handler."
    )?;
    writeln!(out, "# TYPE {NAME} summary")?;
    let instance = if instance.is_empty() {
        String::new()
    } else {
        format!("instance=\"{}\",", escape(instance))
    };
    for s in series {
        let labels = format!(
            "method=\"{}\",{instance}api=\"{}\",domain=\"{}\"",
            s.method,
            escape(&s.api),
            escape(&s.domain)
        );
        let d = s.series.durations();
        for (q, v) in crate::servicecenter::core::metrics::QUANTILES
            .iter()
            .zip(d.quantiles(epoch))
        {
            writeln!(out, "{NAME}{{{labels},quantile=\"{q}\"}} {}", float(v))?;
        }
        writeln!(out, "{NAME}_sum{{{labels}}} {}", float(d.sum_us()))?;
        writeln!(out, "{NAME}_count{{{labels}}} {}", d.count())?;
    }
    Ok(())
}

/// A float as the text format writes it (`NaN`, `+Inf`).
fn float(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{v:?}")
    }
}

/// A label value escaped for the text format: `\` → `\\`, `"` → `\"`, newline → `\n`.
pub fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// A label value written escaped ([`escape`]).
struct Escaped<'a>(&'a str);

impl EncodeLabelValue for Escaped<'_> {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        encoder.write_str(&escape(self.0))
    }
}

/// A label set of (name, value) pairs, values escaped.
struct Labels<'a>(&'a [(&'static str, &'a str)]);

impl EncodeLabelSet for Labels<'_> {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> std::fmt::Result {
        for (k, v) in self.0 {
            prometheus_client::encoding::EncodeLabel::encode(
                &(*k, Escaped(v)),
                encoder.encode_label(),
            )?;
        }
        Ok(())
    }
}

/// The `service_center_*` families but the summary, from one scrape's readings.
struct ServiceCenterFamilies {
    series: Vec<SeriesView>,
    db: Vec<(Arc<str>, Held)>,
    domains_total: u64,
    heartbeats: (u64, u64),
    subscribers: Vec<(Arc<str>, u64)>,
}

impl std::fmt::Debug for ServiceCenterFamilies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceCenterFamilies")
            .field("series", &self.series.len())
            .finish_non_exhaustive()
    }
}

impl Collector for ServiceCenterFamilies {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        for (name, help, successes_only) in [
            (
                "service_center_http_request",
                "Counter of requests received into ROA handler",
                false,
            ),
            (
                "service_center_http_success",
                "Counter of successful requests processed by ROA handler",
                true,
            ),
        ] {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for s in &self.series {
                for (code, failed, n) in s.series.codes() {
                    if successes_only && failed {
                        continue;
                    }
                    let code = code.map_or(Cow::Borrowed(OTHER), |c| c.to_string().into());
                    let labels = [
                        ("method", s.method),
                        ("code", &code),
                        ("api", &s.api),
                        ("domain", &s.domain),
                    ];
                    ConstCounter::new(n).encode(family.encode_family(&Labels(&labels))?)?;
                }
            }
        }
        {
            let family = encoder.encode_descriptor(
                "service_center_db_domain_total",
                "Gauge of domain created in Service Center",
                None,
                MetricType::Gauge,
            )?;
            ConstGauge::new(self.domains_total as i64).encode(family)?;
        }
        type Pick = fn(&Held) -> u64;
        let gauges: [(&str, &str, Pick); 3] = [
            (
                "service_center_db_service_total",
                "Gauge of microservice created in Service Center",
                |h| h.services,
            ),
            (
                "service_center_db_instance_total",
                "Gauge of microservice instance created in Service Center",
                |h| h.instances,
            ),
            (
                "service_center_db_schema_total",
                "Gauge of schema created in Service Center",
                |h| h.schemas,
            ),
        ];
        for (name, help, pick) in gauges {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (domain, held) in &self.db {
                let labels = [("domain", &**domain)];
                ConstGauge::new(pick(held) as i64)
                    .encode(family.encode_family(&Labels(&labels))?)?;
            }
        }
        {
            let mut family = encoder.encode_descriptor(
                "service_center_db_heartbeat",
                "Counter of heartbeat renew",
                None,
                MetricType::Counter,
            )?;
            for (status, n) in [
                ("success", self.heartbeats.0),
                ("failure", self.heartbeats.1),
            ] {
                let labels = [("status", status)];
                ConstCounter::new(n).encode(family.encode_family(&Labels(&labels))?)?;
            }
        }
        {
            let family = encoder.encode_descriptor(
                "service_center_db_sc",
                "Counter of the Service Center instance",
                None,
                MetricType::Counter,
            )?;
            ConstCounter::new(1u64).encode(family)?;
        }
        let mut family = encoder.encode_descriptor(
            "service_center_notify_subscriber_total",
            "Gauge of subscribers",
            None,
            MetricType::Gauge,
        )?;
        for (domain, n) in &self.subscribers {
            let labels = [("domain", &**domain), ("scheme", "websocket")];
            ConstGauge::new(*n as i64).encode(family.encode_family(&Labels(&labels))?)?;
        }
        Ok(())
    }
}

/// The process metrics Prometheus' client libraries export, read from `/proc/self` at each
/// scrape (Linux; elsewhere none). prometheus-client has no process collector.
#[derive(Debug)]
struct ProcessFamilies;

/// Clock ticks per second of `/proc/self/stat`'s times (`USER_HZ`, 100 on Linux's common
/// architectures; `sysconf(_SC_CLK_TCK)` would need libc).
const TICKS_PER_SEC: f64 = 100.0;

/// What `/proc/self` says about this process.
#[derive(Debug, Default, PartialEq)]
pub struct ProcessReading {
    /// `VmRSS`, bytes.
    pub resident_bytes: Option<u64>,
    /// `VmSize`, bytes.
    pub virtual_bytes: Option<u64>,
    /// User and system CPU time, seconds.
    pub cpu_seconds: Option<f64>,
    /// Start time, seconds since the epoch.
    pub start_time_seconds: Option<f64>,
    /// Open file descriptors.
    pub open_fds: Option<u64>,
    /// The soft limit of open files.
    pub max_fds: Option<u64>,
}

/// Reads [`ProcessReading`] from `/proc/self`; a file that cannot be read or parsed leaves
/// its fields `None`.
pub fn read_process() -> ProcessReading {
    let mut r = ProcessReading::default();
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        let kb = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
                .map(|v| v * 1024)
        };
        r.resident_bytes = kb("VmRSS:");
        r.virtual_bytes = kb("VmSize:");
    }
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
        // Fields after the command name (which may hold spaces and parentheses).
        if let Some((_, rest)) = stat.rsplit_once(')') {
            let f: Vec<&str> = rest.split_whitespace().collect();
            // rest[0] is field 3 (state): utime is field 14, stime 15, starttime 22.
            let field = |n: usize| f.get(n - 3).and_then(|v| v.parse::<u64>().ok());
            if let (Some(u), Some(s)) = (field(14), field(15)) {
                r.cpu_seconds = Some((u + s) as f64 / TICKS_PER_SEC);
            }
            let boot = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("btime "))
                    .and_then(|v| v.trim().parse::<u64>().ok())
            });
            if let (Some(start), Some(boot)) = (field(22), boot) {
                r.start_time_seconds = Some(boot as f64 + start as f64 / TICKS_PER_SEC);
            }
        }
    }
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        r.open_fds = Some(dir.count() as u64);
    }
    if let Ok(limits) = std::fs::read_to_string("/proc/self/limits") {
        r.max_fds = limits
            .lines()
            .find_map(|l| l.strip_prefix("Max open files"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok());
    }
    r
}

impl Collector for ProcessFamilies {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let r = read_process();
        let gauges = [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                r.resident_bytes,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                r.virtual_bytes,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors.",
                r.open_fds,
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors.",
                r.max_fds,
            ),
        ];
        for (name, help, value) in gauges {
            if let Some(v) = value {
                let family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
                ConstGauge::new(v as i64).encode(family)?;
            }
        }
        if let Some(v) = r.start_time_seconds {
            let family = encoder.encode_descriptor(
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                None,
                MetricType::Gauge,
            )?;
            ConstGauge::new(v).encode(family)?;
        }
        if let Some(v) = r.cpu_seconds {
            let family = encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds.",
                None,
                MetricType::Counter,
            )?;
            ConstCounter::new(v).encode(family)?;
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape("x\ny"), "x\\ny");
    }

    #[test]
    fn the_process_reads_itself() {
        let r = read_process();
        assert!(r.resident_bytes.unwrap() > 0);
        assert!(r.open_fds.unwrap() > 0);
        assert!(r.cpu_seconds.is_some() && r.max_fds.is_some());
        assert!(r.start_time_seconds.unwrap() > 1.0e9);
    }
}
