//! The core's own measurements, kept for its `/metrics` (service-center's metric names,
//! rendered by [`api::metrics`](crate::servicecenter::api::metrics)) and its status page:
//! HTTP requests by method, status code, route template and domain, with their durations;
//! heartbeats; renewals of the last minute; open watchers per domain.
//!
//! Every label takes a bounded set of values, whatever the clients send:
//! - `api` is the route template axum matched (`MatchedPath`), never the concrete path;
//!   requests that match no route count under [`UNMATCHED`]; at most [`MAX_APIS`] templates
//!   (more than the core has), beyond them [`OTHER`];
//! - `domain` is the `X-Domain-Name` a client chose: the first [`MAX_DOMAINS`] distinct
//!   domains seen keep their names (`default` among them), every later one counts as
//!   [`OTHER`];
//! - `method` is one of [`METHODS`] (an extension method counts as `OTHER`);
//! - at most [`MAX_SERIES`] (method, api, domain) series; beyond, a new combination counts
//!   under `api="other", domain="other"`.
//!
//! The hot path (a heartbeat) allocates nothing once its series exists: the series is found
//! by a small numeric key under a read lock, counted with atomics, and its duration goes
//! into fixed buckets ([`Summary`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

/// Distinct `domain` label values kept, `default` included; later domains count as
/// [`OTHER`], so a scrape shows at most `MAX_DOMAINS + 1` domains.
pub const MAX_DOMAINS: usize = 64;
/// Distinct `api` label values (route templates) kept, [`UNMATCHED`] included; the core has
/// fewer routes, so [`OTHER`] only appears if that changes.
pub const MAX_APIS: usize = 256;
/// (method, api, domain) series kept for the HTTP metrics; beyond, new combinations count
/// under `api="other", domain="other"`. Each series takes about 2 KiB (its duration
/// buckets), so at most about 4 MiB.
pub const MAX_SERIES: usize = 2_048;
/// The label value of everything over a bound.
pub const OTHER: &str = "other";
/// The `api` label of a request that matched no route.
pub const UNMATCHED: &str = "unmatched";
/// The domain of a request without `X-Domain-Name` (service-center HEAD's default).
pub const DEFAULT_DOMAIN: &str = "default";
/// The `method` label values; any other method counts as the last, `OTHER`.
pub const METHODS: [&str; 9] = [
    "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "TRACE", "OTHER",
];
/// The quantiles reported for each duration summary: service-center's objectives
/// (`pkg/metrics` `Pxx`: 0.5, 0.9, 0.99).
pub const QUANTILES: [f64; 3] = [0.5, 0.9, 0.99];
/// How long one window of durations lasts; quantiles cover the current and the previous
/// window (5 to 10 minutes; service-center's Go summaries cover 8 to 10).
pub const WINDOW: Duration = Duration::from_secs(300);

/// Status codes counted separately per series; a series that sees more distinct codes
/// counts the rest as `code="other"`.
const CODE_SLOTS: usize = 8;
/// Durations below this many microseconds each have their own bucket.
const EXACT_US: u64 = 16;
/// Buckets per power of two above [`EXACT_US`] (2^3: at most 12.5 % wide).
const SUB_BITS: u32 = 3;
/// The largest power of two measured (2^32 µs, about 71 minutes); longer counts there.
const MAX_OCTAVE: u32 = 32;
/// Buckets of a duration window.
const BUCKETS: usize =
    EXACT_US as usize + (MAX_OCTAVE - EXACT_US.trailing_zeros()) as usize * (1 << SUB_BITS);

/// The id of [`OTHER`] in both name tables.
const OTHER_ID: u16 = 0;
/// The id of [`DEFAULT_DOMAIN`] among domains and of [`UNMATCHED`] among apis.
const FIRST_ID: u16 = 1;

/// A table of label values: name ↔ small id, at most `cap` names besides [`OTHER`].
struct Names {
    cap: usize,
    table: RwLock<NameTable>,
}

#[derive(Default)]
struct NameTable {
    ids: HashMap<Box<str>, u16>,
    /// By id: `names[0]` is [`OTHER`].
    names: Vec<Arc<str>>,
}

impl Names {
    fn new(cap: usize, first: &str) -> Names {
        let mut table = NameTable::default();
        for name in [OTHER, first] {
            table.ids.insert(name.into(), table.names.len() as u16);
            table.names.push(name.into());
        }
        Names {
            cap,
            table: RwLock::new(table),
        }
    }

    /// The id of `name`, added when there is room, else [`OTHER_ID`].
    fn id(&self, name: &str) -> u16 {
        if let Some(id) = read(&self.table).ids.get(name) {
            return *id;
        }
        let mut t = self.table.write().unwrap_or_else(|e| e.into_inner());
        if let Some(id) = t.ids.get(name) {
            return *id;
        }
        // names[0] is OTHER, which does not count against the cap.
        if t.names.len() > self.cap {
            return OTHER_ID;
        }
        let id = t.names.len() as u16;
        t.ids.insert(name.into(), id);
        t.names.push(name.into());
        id
    }

    /// Every name, by id.
    fn all(&self) -> Vec<Arc<str>> {
        read(&self.table).names.clone()
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}

/// The packed key of a series: method, api id, domain id.
fn series_key(method: u8, api: u16, domain: u16) -> u64 {
    (u64::from(method) << 32) | (u64::from(api) << 16) | u64::from(domain)
}

/// The index in [`METHODS`] of `method`.
pub fn method_index(method: &axum::http::Method) -> u8 {
    use axum::http::Method;
    match *method {
        Method::GET => 0,
        Method::POST => 1,
        Method::PUT => 2,
        Method::DELETE => 3,
        Method::HEAD => 4,
        Method::OPTIONS => 5,
        Method::PATCH => 6,
        Method::TRACE => 7,
        _ => 8,
    }
}

/// One status code's count in a [`Series`]; `code` 0 is a free slot.
#[derive(Default)]
struct CodeSlot {
    code: AtomicU16,
    count: AtomicU64,
}

/// The requests of one (method, api, domain): counts per status code and durations.
pub struct Series {
    codes: [CodeSlot; CODE_SLOTS],
    /// Requests whose code found no free slot: below 500, and 500 or more.
    other_codes: [AtomicU64; 2],
    durations: Summary,
}

impl Series {
    fn new() -> Series {
        Series {
            codes: Default::default(),
            other_codes: Default::default(),
            durations: Summary::new(),
        }
    }

    /// Counts one request answered with `code`, which took `took`, ending in window
    /// `epoch`.
    pub fn record(&self, code: u16, epoch: u64, took: Duration) {
        self.count(code);
        self.durations.observe(epoch, took);
    }

    fn count(&self, code: u16) {
        for slot in &self.codes {
            let held = slot.code.load(Ordering::Acquire);
            let mine = held == code
                || (held == 0
                    && match slot.code.compare_exchange(
                        0,
                        code,
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    ) {
                        Ok(_) => true,
                        Err(now) => now == code,
                    });
            if mine {
                slot.count.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        self.other_codes[usize::from(code >= 500)].fetch_add(1, Ordering::Relaxed);
    }

    /// (code, count) of every code seen; `None` stands for `code="other"` (with whether
    /// those were failures, 500 or more).
    pub fn codes(&self) -> Vec<(Option<u16>, bool, u64)> {
        let mut out = Vec::new();
        for slot in &self.codes {
            let code = slot.code.load(Ordering::Acquire);
            if code != 0 {
                out.push((Some(code), code >= 500, slot.count.load(Ordering::Relaxed)));
            }
        }
        for (failed, n) in self.other_codes.iter().enumerate() {
            let n = n.load(Ordering::Relaxed);
            if n > 0 {
                out.push((None, failed == 1, n));
            }
        }
        out
    }

    /// The durations of this series.
    pub fn durations(&self) -> &Summary {
        &self.durations
    }
}

/// One window of durations: its epoch and a count per bucket.
struct Window {
    /// The [`WINDOW`] number these counts belong to (`u64::MAX`: never used).
    epoch: AtomicU64,
    buckets: [AtomicU32; BUCKETS],
}

/// A duration summary in service-center's shape (quantiles 0.5, 0.9, 0.99 over the last
/// minutes, a sum and a count in microseconds), kept in log-linear buckets: every
/// observation is one atomic add, a quantile is read from the buckets at scrape time with
/// at most about 6 % error in value (a bucket's middle), where service-center's Go summary
/// bounds the error in rank instead. Two windows of [`WINDOW`]: the current and the
/// previous one are read.
pub struct Summary {
    windows: [Window; 2],
    /// Taken only to clear a window that starts a new epoch.
    rotate: Mutex<()>,
    /// Every observation's duration, nanoseconds (the count is the series' request count).
    sum_ns: AtomicU64,
    count: AtomicU64,
}

/// The bucket of a duration of `us` microseconds.
fn bucket(us: u64) -> usize {
    if us < EXACT_US {
        return us as usize;
    }
    let octave = 63 - us.leading_zeros();
    if octave >= MAX_OCTAVE {
        return BUCKETS - 1;
    }
    let sub = (us >> (octave - SUB_BITS)) & ((1 << SUB_BITS) - 1);
    EXACT_US as usize
        + (octave - EXACT_US.trailing_zeros()) as usize * (1 << SUB_BITS)
        + sub as usize
}

/// The value a bucket stands for, microseconds: the middle of its range.
fn bucket_value(i: usize) -> f64 {
    if i < EXACT_US as usize {
        return i as f64;
    }
    let rel = i - EXACT_US as usize;
    let octave = (rel >> SUB_BITS) as u32 + EXACT_US.trailing_zeros();
    let sub = (rel & ((1 << SUB_BITS) - 1)) as u64;
    let width = 1u64 << (octave - SUB_BITS);
    let low = ((1u64 << SUB_BITS) + sub) * width;
    low as f64 + width as f64 / 2.0
}

impl Summary {
    fn new() -> Summary {
        let window = || Window {
            epoch: AtomicU64::new(u64::MAX),
            buckets: std::array::from_fn(|_| AtomicU32::new(0)),
        };
        Summary {
            windows: [window(), window()],
            rotate: Mutex::new(()),
            sum_ns: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    /// Adds one duration, observed in window `epoch`.
    fn observe(&self, epoch: u64, took: Duration) {
        let w = &self.windows[(epoch & 1) as usize];
        if w.epoch.load(Ordering::Acquire) != epoch {
            let _rotating = self.rotate.lock().unwrap_or_else(|e| e.into_inner());
            if w.epoch.load(Ordering::Acquire) != epoch {
                for b in &w.buckets {
                    b.store(0, Ordering::Relaxed);
                }
                w.epoch.store(epoch, Ordering::Release);
            }
        }
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        w.buckets[bucket(us)].fetch_add(1, Ordering::Relaxed);
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// The [`QUANTILES`] of the durations of windows `epoch` and `epoch - 1`, microseconds;
    /// NaN when there were none (as a Go summary reports).
    pub fn quantiles(&self, epoch: u64) -> [f64; 3] {
        let mut merged = [0u64; BUCKETS];
        for w in &self.windows {
            let e = w.epoch.load(Ordering::Acquire);
            if e == epoch || e.checked_add(1) == Some(epoch) {
                for (m, b) in merged.iter_mut().zip(&w.buckets) {
                    *m += u64::from(b.load(Ordering::Relaxed));
                }
            }
        }
        let total: u64 = merged.iter().sum();
        QUANTILES.map(|q| {
            if total == 0 {
                return f64::NAN;
            }
            let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
            let mut seen = 0;
            for (i, n) in merged.iter().enumerate() {
                seen += n;
                if seen >= rank {
                    return bucket_value(i);
                }
            }
            bucket_value(BUCKETS - 1)
        })
    }

    /// The sum of every duration observed, microseconds.
    pub fn sum_us(&self) -> f64 {
        self.sum_ns.load(Ordering::Relaxed) as f64 / 1_000.0
    }

    /// How many durations were observed.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

/// Renewals per minute, as Eureka's `MeasuredRate` counts them: the count of the current
/// minute, and of the last full one.
#[derive(Default)]
struct RenewRate {
    minute: AtomicU64,
    current: AtomicU64,
    last: AtomicU64,
}

impl RenewRate {
    fn note(&self, minute: u64, n: u64) {
        let held = self.minute.load(Ordering::Acquire);
        if held != minute
            && self
                .minute
                .compare_exchange(held, minute, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            let previous = self.current.swap(0, Ordering::AcqRel);
            let last = if held + 1 == minute { previous } else { 0 };
            self.last.store(last, Ordering::Release);
        }
        self.current.fetch_add(n, Ordering::Relaxed);
    }

    fn last_minute(&self, minute: u64) -> u64 {
        let held = self.minute.load(Ordering::Acquire);
        if held == minute {
            self.last.load(Ordering::Acquire)
        } else if held + 1 == minute {
            self.current.load(Ordering::Relaxed)
        } else {
            0
        }
    }
}

/// The measurements of one core (see the module docs). One per [`Core`](super::Core),
/// shared by its clones.
pub struct CoreMetrics {
    /// When the core was built: uptime, and the origin of windows and minutes.
    started: Instant,
    /// The core's listen address, the `instance` label (set by `serve`).
    instance: OnceLock<String>,
    domains: Names,
    apis: Names,
    series: RwLock<HashMap<u64, Arc<Series>>>,
    /// Heartbeats renewed, and refused (unknown instance).
    heartbeats: [AtomicU64; 2],
    renewals: RenewRate,
    /// Open watchers per domain id.
    subscribers: [AtomicU64; MAX_DOMAINS + 1],
}

impl Default for CoreMetrics {
    fn default() -> CoreMetrics {
        CoreMetrics {
            started: Instant::now(),
            instance: OnceLock::new(),
            domains: Names::new(MAX_DOMAINS, DEFAULT_DOMAIN),
            apis: Names::new(MAX_APIS, UNMATCHED),
            series: RwLock::new(HashMap::new()),
            heartbeats: Default::default(),
            renewals: RenewRate::default(),
            subscribers: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

/// One (method, api, domain) series of the HTTP metrics, with its label values.
#[derive(Clone)]
pub struct SeriesView {
    /// The `method` label.
    pub method: &'static str,
    /// The `api` label: a route template, [`UNMATCHED`] or [`OTHER`].
    pub api: Arc<str>,
    /// The `domain` label: a domain or [`OTHER`].
    pub domain: Arc<str>,
    /// Its counts and durations.
    pub series: Arc<Series>,
}

/// Holds one watcher's place in `service_center_notify_subscriber_total` until dropped.
pub struct Subscribed {
    metrics: Arc<CoreMetrics>,
    domain: u16,
}

impl Drop for Subscribed {
    fn drop(&mut self) {
        self.metrics.subscribers[usize::from(self.domain)].fetch_sub(1, Ordering::Relaxed);
    }
}

impl CoreMetrics {
    /// Sets the `instance` label (the listen address); the first call wins.
    pub fn set_instance(&self, instance: String) {
        let _ = self.instance.set(instance);
    }

    /// The `instance` label, `None` until the core serves.
    pub fn instance(&self) -> Option<&str> {
        self.instance.get().map(String::as_str)
    }

    /// How long the core has been up.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// The duration window `at` falls in ([`WINDOW`]).
    pub fn epoch(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.started).as_secs() / WINDOW.as_secs()
    }

    fn minute(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.started).as_secs() / 60
    }

    /// The id of domain `name` (an `X-Domain-Name`; see the module docs for the bound).
    fn domain_id(&self, name: &str) -> u16 {
        if name == DEFAULT_DOMAIN || name.is_empty() {
            FIRST_ID
        } else {
            self.domains.id(name)
        }
    }

    /// The series of a request: `method` ([`method_index`]), the route template it matched
    /// (`None`: no route), its `X-Domain-Name` (`None`: absent, i.e. `default`).
    pub fn series(&self, method: u8, api: Option<&str>, domain: Option<&str>) -> Arc<Series> {
        let api = api.map_or(FIRST_ID, |a| self.apis.id(a));
        let domain = domain.map_or(FIRST_ID, |d| self.domain_id(d));
        let key = series_key(method, api, domain);
        if let Some(s) = read(&self.series).get(&key) {
            return s.clone();
        }
        let mut all = self.series.write().unwrap_or_else(|e| e.into_inner());
        let key = if all.len() >= MAX_SERIES && !all.contains_key(&key) {
            series_key(method, OTHER_ID, OTHER_ID)
        } else {
            key
        };
        all.entry(key)
            .or_insert_with(|| Arc::new(Series::new()))
            .clone()
    }

    /// Every HTTP series with its label values.
    pub fn all_series(&self) -> Vec<SeriesView> {
        let (apis, domains) = (self.apis.all(), self.domains.all());
        let name = |names: &[Arc<str>], id: u64| {
            names
                .get(id as usize)
                .cloned()
                .unwrap_or_else(|| OTHER.into())
        };
        let mut out: Vec<SeriesView> = read(&self.series)
            .iter()
            .map(|(key, s)| SeriesView {
                method: METHODS[((key >> 32) as usize).min(METHODS.len() - 1)],
                api: name(&apis, (key >> 16) & 0xffff),
                domain: name(&domains, key & 0xffff),
                series: s.clone(),
            })
            .collect();
        out.sort_by(|a, b| (a.method, &a.api, &a.domain).cmp(&(b.method, &b.api, &b.domain)));
        out
    }

    /// Counts heartbeats taken at `now`: `renewed` renewed, `refused` refused.
    pub fn heartbeats(&self, now: Instant, renewed: u64, refused: u64) {
        if renewed > 0 {
            self.heartbeats[0].fetch_add(renewed, Ordering::Relaxed);
            self.renewals.note(self.minute(now), renewed);
        }
        if refused > 0 {
            self.heartbeats[1].fetch_add(refused, Ordering::Relaxed);
        }
    }

    /// Heartbeats renewed and refused since the core started.
    pub fn heartbeat_totals(&self) -> (u64, u64) {
        (
            self.heartbeats[0].load(Ordering::Relaxed),
            self.heartbeats[1].load(Ordering::Relaxed),
        )
    }

    /// Renewals in the last full minute (Eureka's "Renews (last min)").
    pub fn renewals_last_minute(&self) -> u64 {
        self.renewals.last_minute(self.minute(Instant::now()))
    }

    /// One more open watcher of `domain`, counted until the returned value is dropped.
    pub fn subscribe(self: &Arc<Self>, domain: &str) -> Subscribed {
        let domain = self.domain_id(domain);
        self.subscribers[usize::from(domain)].fetch_add(1, Ordering::Relaxed);
        Subscribed {
            metrics: self.clone(),
            domain,
        }
    }

    /// Open watchers per domain (domains with none left out).
    pub fn subscribers(&self) -> Vec<(Arc<str>, u64)> {
        let names = self.domains.all();
        self.subscribers
            .iter()
            .enumerate()
            .filter_map(|(id, n)| {
                let n = n.load(Ordering::Relaxed);
                (n > 0).then(|| (names.get(id).cloned().unwrap_or_else(|| OTHER.into()), n))
            })
            .collect()
    }

    /// The `domain` label of `domain`: its own name while there is room for it, else
    /// [`OTHER`] (the registry's totals use the same table, so the two agree).
    pub fn domain_label(&self, domain: &str) -> Arc<str> {
        let id = self.domain_id(domain);
        read(&self.domains.table)
            .names
            .get(usize::from(id))
            .cloned()
            .unwrap_or_else(|| OTHER.into())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_every_duration_in_order_within_their_width() {
        let mut last = 0;
        for us in (0..200_000u64).chain([1 << 31, (1 << 32) - 1, 1 << 32, u64::MAX]) {
            let b = bucket(us);
            assert!(b >= last && b < BUCKETS, "{us}: {b}");
            last = b;
            if (1..1 << 32).contains(&us) {
                let v = bucket_value(b);
                assert!(
                    (v - us as f64).abs() / us as f64 <= 0.0625 + 1e-9,
                    "{us}: {v}"
                );
            }
        }
    }

    #[test]
    fn quantiles_read_the_current_and_previous_window_only() {
        let s = Summary::new();
        for us in 1..=100u64 {
            s.observe(7, Duration::from_micros(us * 100));
        }
        let [p50, p90, p99] = s.quantiles(7);
        assert!((p50 - 5_000.0).abs() < 350.0, "{p50}");
        assert!((p90 - 9_000.0).abs() < 600.0, "{p90}");
        assert!((p99 - 9_900.0).abs() < 650.0, "{p99}");
        assert_eq!(s.quantiles(8), [p50, p90, p99]);
        assert!(s.quantiles(9)[0].is_nan());
        assert_eq!(s.count(), 100);
        assert!((s.sum_us() - 505_000.0).abs() < 1e-6);
        // Epoch 9 reuses epoch 7's window: its old counts go.
        s.observe(9, Duration::from_micros(3));
        assert_eq!(s.quantiles(9), [3.0, 3.0, 3.0]);
    }

    #[test]
    fn domains_beyond_the_cap_count_as_other() {
        let m = CoreMetrics::default();
        let mut labels = std::collections::BTreeSet::new();
        for i in 0..200 {
            let d = format!("tenant-{i}");
            let s = m.series(0, Some("/v4/{project}/registry/microservices"), Some(&d));
            s.record(200, 0, Duration::from_micros(5));
            labels.insert(m.domain_label(&d));
        }
        m.series(0, None, None)
            .record(404, 0, Duration::from_micros(5));
        let domains: std::collections::BTreeSet<_> =
            m.all_series().into_iter().map(|s| s.domain).collect();
        assert_eq!(domains.len(), MAX_DOMAINS + 1, "{domains:?}");
        assert!(domains.contains(OTHER) && domains.contains(DEFAULT_DOMAIN));
        assert_eq!(labels.len(), MAX_DOMAINS);
    }

    #[test]
    fn codes_beyond_the_slots_count_as_other() {
        let s = Series::new();
        for code in 200..200 + CODE_SLOTS as u16 {
            s.count(code);
        }
        s.count(200);
        s.count(499);
        s.count(503);
        let codes = s.codes();
        assert!(codes.contains(&(Some(200), false, 2)));
        assert!(codes.contains(&(None, false, 1)));
        assert!(codes.contains(&(None, true, 1)));
    }

    #[test]
    fn renewals_of_the_last_full_minute() {
        let r = RenewRate::default();
        r.note(0, 5);
        assert_eq!(r.last_minute(0), 0);
        assert_eq!(r.last_minute(1), 5);
        r.note(1, 2);
        assert_eq!(r.last_minute(1), 5);
        assert_eq!(r.last_minute(2), 2);
        assert_eq!(r.last_minute(3), 0);
        r.note(5, 1);
        assert_eq!(r.last_minute(5), 0);
    }
}
