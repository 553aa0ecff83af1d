//! Pacing of registry writes: a token bucket every write goes through
//! ([`RateLimitedPlugin`], `--registry-write-rate`, `--registry-write-burst`), and the
//! heartbeats of copies spread over the first half of each tick ([`HeartbeatPacer`]) instead
//! of sent in one burst.
//!
//! Where it sits: the daemon wraps its plugin once, so the importer's registrations and
//! removals, the heartbeats of copies and the exporter (which only reads, and is not limited)
//! share one bucket. The reconcile loop ([`super::Syncer`]) hands each tick's heartbeats to
//! the pacer's task and goes on; registrations of new copies and the changes of the peers'
//! streams never wait behind heartbeats.
//!
//! Why a restart storm stays within the rate: only the leader of a cluster writes, each
//! member's writes pass its own bucket, and a member that finds out it is not the leader
//! stops its paced round at once; so while gossip settles after many syncers start at once,
//! each early self-believed leader sends at most the first slot of its round.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use prometheus_client::metrics::counter::Counter;
use syncer_plugin_api::{
    Changes, Error as PluginError, Instance, Listed, Plugin, Result as PluginResult, Service,
    Snapshot,
};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn, Instrument};

use crate::config::WriteRate;
use crate::sync::mapping::{LocalCopy, OriginKey};

/// A token bucket on registry writes, shared by every clone: `per_sec` writes per second,
/// `burst` at once (governor's GCRA, which is a token bucket without a refill task).
#[derive(Debug, Clone)]
pub struct WriteLimiter {
    limiter: Arc<DefaultDirectRateLimiter>,
    clock: DefaultClock,
    /// Tokens taken at once: a tenth of a second's worth, at most the burst, at least 1. Small
    /// parts keep a large batch from starving behind single writes (governor checks `n`
    /// tokens at once, and a busy bucket rarely holds many) and spread its items out.
    part: NonZeroU32,
    /// Seconds spent waiting for tokens, all callers together
    /// (`syncer_registry_write_wait_seconds_total`).
    waited: Counter<f64, AtomicU64>,
}

impl WriteLimiter {
    /// A full bucket of `rate`; time spent waiting is added to `waited`.
    pub fn new(rate: WriteRate, waited: Counter<f64, AtomicU64>) -> WriteLimiter {
        let quota = Quota::per_second(rate.per_sec).allow_burst(rate.burst);
        let part = (rate.per_sec.get() / 10).clamp(1, rate.burst.get());
        WriteLimiter {
            limiter: Arc::new(RateLimiter::direct(quota)),
            clock: DefaultClock::default(),
            part: NonZeroU32::new(part).unwrap_or(NonZeroU32::MIN),
            waited,
        }
    }

    /// Items of a batch sent in one call: [`WriteLimiter::take`]'s part.
    pub fn part(&self) -> usize {
        self.part.get() as usize
    }

    /// Waits until `n` writes may go (taken in parts of a tenth of a second's worth, so a
    /// batch larger than the bucket still goes, at the rate). `n == 0` returns at once.
    pub async fn take(&self, n: usize) {
        let mut left = u32::try_from(n).unwrap_or(u32::MAX);
        let started = tokio::time::Instant::now();
        let mut slept = false;
        while left > 0 {
            let part = left.min(self.part.get());
            let Some(want) = NonZeroU32::new(part) else {
                break;
            };
            loop {
                match self.limiter.check_n(want) {
                    Ok(Ok(())) => break,
                    Ok(Err(not_until)) => {
                        let wait = not_until.wait_time_from(self.clock.now());
                        // At least a millisecond: never spin on a rounding error.
                        tokio::time::sleep(wait.max(Duration::from_millis(1))).await;
                        slept = true;
                    }
                    // `part` is at most the burst: cannot happen; do not spin if it does.
                    Err(_) => break,
                }
            }
            left -= part;
        }
        if slept {
            self.waited.inc_by(started.elapsed().as_secs_f64());
        }
    }
}

/// Whether the registry answered a batch call with `Ok(None)` (no batch form).
const UNKNOWN: u8 = 0;
const BATCHES: u8 = 1;
const NO_BATCHES: u8 = 2;

/// The registry plugin with every write waiting for its tokens first: one per
/// registration, removal, heartbeat or service creation, one per item of a batch. Reads pass
/// through. Wrap it around the metered plugin, so request durations do not include the wait.
#[derive(Debug)]
pub struct RateLimitedPlugin {
    inner: Arc<dyn Plugin>,
    limiter: WriteLimiter,
    /// Per batch call (ensure_services, register_batch, heartbeat_batch): whether the
    /// registry has it. A registry without batches answers `Ok(None)` and the importer writes
    /// the items one by one: those are charged then, not twice. Only the first batch call of
    /// each kind is charged before its answer is known.
    batches: [AtomicU8; 3],
}

impl RateLimitedPlugin {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Plugin>, limiter: WriteLimiter) -> RateLimitedPlugin {
        RateLimitedPlugin {
            inner,
            limiter,
            batches: [
                AtomicU8::new(UNKNOWN),
                AtomicU8::new(UNKNOWN),
                AtomicU8::new(UNKNOWN),
            ],
        }
    }

    /// A batch call `kind` over `items`, cut into parts of [`WriteLimiter::part`] items,
    /// each sent once its tokens are taken, so the registry sees the batch at the rate, not
    /// at once. Unless the registry is known to have no such call (then `call` answers
    /// `Ok(None)` at once and the importer writes the items one by one, charged then). A part
    /// that fails after others went through fails its items and the rest (one by one
    /// follows); a failure of the first part fails the call.
    async fn batch<'a, I, T, F, Fut>(
        &self,
        kind: usize,
        items: &'a [I],
        call: F,
    ) -> PluginResult<Option<Vec<PluginResult<T>>>>
    where
        F: Fn(&'a [I]) -> Fut,
        Fut: std::future::Future<Output = PluginResult<Option<Vec<PluginResult<T>>>>>,
    {
        if self.batches[kind].load(Ordering::Relaxed) == NO_BATCHES {
            return call(items).await;
        }
        let mut results = Vec::with_capacity(items.len());
        for part in items.chunks(self.limiter.part()) {
            self.limiter.take(part.len()).await;
            match call(part).await {
                Ok(Some(r)) if r.len() == part.len() => {
                    self.batches[kind].store(BATCHES, Ordering::Relaxed);
                    results.extend(r);
                }
                Ok(Some(_)) => {
                    return Err(PluginError::Malformed(
                        "batch answer with another number of results than items".into(),
                    ))
                }
                Ok(None) => {
                    self.batches[kind].store(NO_BATCHES, Ordering::Relaxed);
                    if results.is_empty() {
                        return Ok(None);
                    }
                    // Cannot happen (a registry has a batch call or not): the rest alone.
                    let message = "the registry stopped taking batches".to_owned();
                    results.extend(part.iter().map(|_| Err(unavailable(&message))));
                }
                Err(e) if results.is_empty() => return Err(e),
                Err(e) => {
                    let message = e.to_string();
                    let done = results.len();
                    results.extend(items[done..].iter().map(|_| Err(unavailable(&message))));
                    return Ok(Some(results));
                }
            }
        }
        Ok(Some(results))
    }
}

/// The error of an item whose part of a batch failed (the items go one by one next).
fn unavailable(message: &str) -> PluginError {
    PluginError::Unavailable {
        endpoint: String::new(),
        message: message.to_owned(),
    }
}

#[async_trait::async_trait]
impl Plugin for RateLimitedPlugin {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    async fn list(&self) -> PluginResult<Snapshot> {
        self.inner.list().await
    }

    async fn revision(&self) -> PluginResult<Option<String>> {
        self.inner.revision().await
    }

    async fn list_with_revision(&self) -> PluginResult<(Snapshot, Option<u64>)> {
        self.inner.list_with_revision().await
    }

    async fn list_each(&self, visit: &mut (dyn FnMut(Listed) + Send)) -> PluginResult<Option<u64>> {
        self.inner.list_each(visit).await
    }

    async fn changes(
        &self,
        since: u64,
        wait: Duration,
        imported: bool,
    ) -> PluginResult<Option<Changes>> {
        self.inner.changes(since, wait, imported).await
    }

    async fn ensure_service(&self, service: &Service) -> PluginResult<String> {
        self.limiter.take(1).await;
        self.inner.ensure_service(service).await
    }

    async fn register(&self, service: &Service, instance: &Instance) -> PluginResult<String> {
        self.limiter.take(1).await;
        self.inner.register(service, instance).await
    }

    async fn ensure_services(
        &self,
        services: &[&Service],
    ) -> PluginResult<Option<Vec<PluginResult<String>>>> {
        self.batch(0, services, |part| self.inner.ensure_services(part))
            .await
    }

    async fn register_batch(
        &self,
        items: &[(&Service, &Instance)],
    ) -> PluginResult<Option<Vec<PluginResult<String>>>> {
        self.batch(1, items, |part| self.inner.register_batch(part))
            .await
    }

    async fn heartbeat(&self, service: &Service, instance_id: &str) -> PluginResult<()> {
        self.limiter.take(1).await;
        self.inner.heartbeat(service, instance_id).await
    }

    async fn heartbeat_batch(
        &self,
        items: &[(&Service, &str)],
    ) -> PluginResult<Option<Vec<PluginResult<()>>>> {
        self.batch(2, items, |part| self.inner.heartbeat_batch(part))
            .await
    }

    async fn unregister(&self, service: &Service, instance_id: &str) -> PluginResult<()> {
        self.limiter.take(1).await;
        self.inner.unregister(service, instance_id).await
    }
}

/// Time between two slots of a paced round: a round of n copies over `spread` sends
/// `n / (spread / SLOT)` heartbeats every `SLOT` (at least [`MIN_SLOT_HEARTBEATS`] a slot).
pub const SLOT: Duration = Duration::from_millis(100);

/// Fewest heartbeats a slot sends (one batch call): a round of up to this many copies goes
/// at once, as it did before pacing, and a larger one in fewer, fuller slots rather than in
/// many calls of a few heartbeats.
pub const MIN_SLOT_HEARTBEATS: usize = 100;

/// Heartbeats per batch call of a slot (as [`super::importer::HEARTBEAT_BATCH`]).
const SLOT_BATCH: usize = super::importer::HEARTBEAT_BATCH;

/// One tick's heartbeats.
#[derive(Debug)]
struct Round {
    /// Which round: a new number is a new round.
    number: u64,
    copies: Vec<(OriginKey, LocalCopy)>,
    /// The tick it belongs to (the ticker interval may change on a config reload); the
    /// round is spread over half of it.
    tick: Duration,
}

/// Spreads each tick's heartbeats of copies over the first half of the tick, in its own
/// task, so the reconcile loop never waits for them.
///
/// Safe against expiry: a copy's lease is 4 ticks, and a round starts every tick and is
/// spread over half of one, so a copy is renewed at most 1.5 ticks after its last renewal
/// (a round slowed by the write rate delays the next one: a warning says when a round takes
/// longer than 2 ticks). A round runs to its end even when the next one is handed over
/// meanwhile (so the last copies of a long list are not starved); only the newest waiting
/// round runs next. [`HeartbeatPacer::stop`] (not leading any more) ends the running round
/// at its next slot.
///
/// A heartbeat answered not-found (the registry lost the copy) is not registered again
/// here: the pacer reports it ([`HeartbeatPacer::lost`]) and the loop runs a full
/// reconcile, which registers what its listing misses.
#[derive(Debug)]
pub struct HeartbeatPacer {
    rounds: watch::Sender<Option<Arc<Round>>>,
    next: u64,
    /// Signals of lost copies (capacity [`LOST_SIGNALS`]).
    lost: mpsc::Receiver<()>,
    /// The pacer's task, spawned by the loop's `run` and ended with it
    /// ([`HeartbeatPacer::finish`]).
    task: tokio::task::JoinHandle<()>,
}

/// Capacity of the lost-copy signal channel: one pending signal is all the loop needs.
pub const LOST_SIGNALS: usize = 1;

impl HeartbeatPacer {
    /// Starts the pacer's task (it ends with `shutdown`): heartbeats through `plugin`,
    /// `concurrency` calls at a time where the registry has no batch heartbeat.
    pub fn spawn(
        plugin: Arc<dyn Plugin>,
        concurrency: usize,
        shutdown: CancellationToken,
    ) -> HeartbeatPacer {
        let (rounds, rx) = watch::channel(None);
        let (lost_tx, lost) = mpsc::channel(LOST_SIGNALS);
        let task = Pace {
            plugin,
            concurrency: concurrency.max(1),
            rounds: rx,
            lost: lost_tx,
        };
        let task = tokio::spawn(
            async move {
                tokio::select! {
                    () = shutdown.cancelled() => {}
                    () = task.run() => {}
                }
            }
            .instrument(tracing::debug_span!("heartbeat_pacer")),
        );
        HeartbeatPacer {
            rounds,
            next: 0,
            lost,
            task,
        }
    }

    /// Ends the task (at once: a heartbeat in flight is dropped) and waits for it.
    pub async fn finish(self) {
        self.task.abort();
        let _ = self.task.await;
    }

    /// Hands over the heartbeats of a tick of length `tick` (spread over half of it);
    /// returns at once.
    pub fn submit(&mut self, copies: Vec<(OriginKey, LocalCopy)>, tick: Duration) {
        self.next += 1;
        self.rounds.send_replace(Some(Arc::new(Round {
            number: self.next,
            copies,
            tick,
        })));
    }

    /// Ends the running round at its next slot and drops the waiting one.
    pub fn stop(&mut self) {
        self.rounds.send_replace(None);
    }

    /// Resolves when a paced heartbeat found a copy the registry lost (reconcile then).
    pub async fn lost(&mut self) {
        if self.lost.recv().await.is_none() {
            // The task ended (shutdown): never again.
            std::future::pending::<()>().await;
        }
    }
}

/// The pacer's task.
struct Pace {
    plugin: Arc<dyn Plugin>,
    concurrency: usize,
    rounds: watch::Receiver<Option<Arc<Round>>>,
    lost: mpsc::Sender<()>,
}

impl Pace {
    async fn run(mut self) {
        let mut last = 0;
        loop {
            let round = self.rounds.borrow_and_update().clone();
            match round {
                Some(round) if round.number != last => {
                    last = round.number;
                    self.round(&round).await;
                }
                _ => {
                    if self.rounds.changed().await.is_err() {
                        return;
                    }
                }
            }
        }
    }

    /// Whether the loop stopped the pacing (not leading any more).
    fn stopped(&self) -> bool {
        self.rounds.borrow().is_none()
    }

    async fn round(&mut self, round: &Round) {
        let n = round.copies.len();
        if n == 0 {
            return;
        }
        let started = tokio::time::Instant::now();
        let spread = round.tick / 2;
        let slots = usize::try_from(spread.as_millis() / SLOT.as_millis().max(1))
            .unwrap_or(usize::MAX)
            .clamp(1, n.div_ceil(MIN_SLOT_HEARTBEATS));
        let per_slot = n.div_ceil(slots);
        let mut lost = 0usize;
        for (i, chunk) in round.copies.chunks(per_slot).enumerate() {
            let at = started + spread.mul_f64(i as f64 / slots as f64);
            loop {
                tokio::select! {
                    () = tokio::time::sleep_until(at) => break,
                    changed = self.rounds.changed() => if changed.is_err() { return },
                }
                if self.stopped() {
                    debug!(sent = i * per_slot, copies = n, "paced heartbeats stopped");
                    return;
                }
            }
            if self.stopped() {
                return;
            }
            for part in chunk.chunks(SLOT_BATCH) {
                lost += self.heartbeat(part).await;
            }
            if lost > 0 {
                // The loop reconciles and registers them again; one signal is enough.
                let _ = self.lost.try_send(());
            }
        }
        let took = started.elapsed();
        if took > round.tick * 2 {
            warn!(
                copies = n,
                took_secs = took.as_secs(),
                tick_secs = round.tick.as_secs(),
                "heartbeating every copy took over 2 ticks (leases are 4): raise --registry-write-rate"
            );
        }
        debug!(
            copies = n,
            lost,
            took_ms = took.as_millis() as u64,
            "paced heartbeats done"
        );
    }

    /// Heartbeats `part` (a batch call where the registry has one); returns how many the
    /// registry lost.
    async fn heartbeat(&self, part: &[(OriginKey, LocalCopy)]) -> usize {
        let services: Vec<Service> = part.iter().map(|(_, c)| c.service.unpack()).collect();
        let items: Vec<(&Service, &str)> = part
            .iter()
            .zip(&services)
            .map(|((_, c), s)| (s, c.instance_id.as_str()))
            .collect();
        let one_by_one: Vec<(&Service, &str)> = match self.plugin.heartbeat_batch(&items).await {
            Ok(Some(results)) if results.len() == items.len() => {
                let mut lost = 0;
                let mut left = Vec::new();
                for (item, r) in items.iter().zip(results) {
                    match r {
                        Ok(()) => {}
                        Err(PluginError::NotFound(_)) => lost += 1,
                        Err(_) => left.push(*item),
                    }
                }
                if left.is_empty() {
                    return lost;
                }
                return lost + heartbeat_each(self.plugin.as_ref(), left, self.concurrency).await;
            }
            Ok(_) => items,
            Err(e) => {
                debug!(error = %e, heartbeats = items.len(), "batch heartbeat failed; heartbeating one by one");
                items
            }
        };
        heartbeat_each(self.plugin.as_ref(), one_by_one, self.concurrency).await
    }
}

/// Heartbeats `items` one by one, `concurrency` at a time; returns how many the registry
/// lost. (An explicit loop over `FuturesUnordered`, not stream combinators: closures over
/// borrows hide from the compiler that the future is Send, rust-lang/rust#102211.)
async fn heartbeat_each(
    plugin: &dyn Plugin,
    items: Vec<(&Service, &str)>,
    concurrency: usize,
) -> usize {
    let mut items = items.into_iter();
    let mut in_flight = FuturesUnordered::new();
    let mut lost = 0;
    loop {
        while in_flight.len() < concurrency {
            let Some((service, id)) = items.next() else {
                break;
            };
            in_flight.push(plugin.heartbeat(service, id));
        }
        let Some(result) = in_flight.next().await else {
            return lost;
        };
        if matches!(result, Err(PluginError::NotFound(_))) {
            lost += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(per_sec: u32, burst: u32) -> WriteRate {
        WriteRate {
            per_sec: NonZeroU32::new(per_sec).expect("non-zero"),
            burst: NonZeroU32::new(burst).expect("non-zero"),
        }
    }

    #[tokio::test]
    async fn the_bucket_lets_its_burst_through_then_the_rate() {
        let waited = Counter::<f64, AtomicU64>::default();
        let limiter = WriteLimiter::new(rate(100, 10), waited.clone());
        let started = std::time::Instant::now();
        limiter.take(10).await;
        // 20 more at 100/s: about 200 ms.
        limiter.take(20).await;
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(150),
            "20 writes at 100/s took {took:?}"
        );
        assert!(waited.get() > 0.1, "waiting not counted: {}", waited.get());
    }

    /// A registry that records the size of each batch heartbeat, or has no batches.
    #[derive(Debug, Default)]
    struct Recording {
        batches: std::sync::Mutex<Vec<usize>>,
        no_batches: bool,
    }

    #[async_trait::async_trait]
    impl Plugin for Recording {
        fn name(&self) -> &'static str {
            "recording"
        }
        async fn list(&self) -> PluginResult<Snapshot> {
            Ok(Snapshot::default())
        }
        async fn ensure_service(&self, service: &Service) -> PluginResult<String> {
            Ok(service.service_id.clone())
        }
        async fn register(&self, _: &Service, instance: &Instance) -> PluginResult<String> {
            Ok(instance.instance_id.clone())
        }
        async fn heartbeat(&self, _: &Service, _: &str) -> PluginResult<()> {
            Ok(())
        }
        async fn heartbeat_batch(
            &self,
            items: &[(&Service, &str)],
        ) -> PluginResult<Option<Vec<PluginResult<()>>>> {
            if self.no_batches {
                return Ok(None);
            }
            self.batches.lock().expect("lock").push(items.len());
            Ok(Some(items.iter().map(|_| Ok(())).collect()))
        }
        async fn unregister(&self, _: &Service, _: &str) -> PluginResult<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_batch_goes_out_in_parts_of_a_tenth_of_a_second_and_is_charged_once() {
        let inner = Arc::new(Recording::default());
        let waited = Counter::<f64, AtomicU64>::default();
        let plugin =
            RateLimitedPlugin::new(inner.clone(), WriteLimiter::new(rate(1000, 1000), waited));
        let service = Service::default();
        let ids: Vec<String> = (0..250).map(|i| format!("i{i}")).collect();
        let items: Vec<(&Service, &str)> = ids.iter().map(|id| (&service, id.as_str())).collect();
        let results = plugin
            .heartbeat_batch(&items)
            .await
            .expect("call")
            .expect("batch");
        assert_eq!(results.len(), 250);
        assert_eq!(*inner.batches.lock().expect("lock"), vec![100, 100, 50]);

        // Without batches at the registry the answer is Ok(None), and once known, free.
        let none = Arc::new(Recording {
            no_batches: true,
            ..Recording::default()
        });
        let waited = Counter::<f64, AtomicU64>::default();
        let plugin = RateLimitedPlugin::new(none, WriteLimiter::new(rate(1, 1), waited.clone()));
        assert!(plugin
            .heartbeat_batch(&items)
            .await
            .expect("call")
            .is_none());
        assert!(plugin
            .heartbeat_batch(&items)
            .await
            .expect("call")
            .is_none());
        // Only the first part of the first call took a token (the full bucket's one).
        assert!(
            waited.get() == 0.0,
            "a batch the registry does not take was charged"
        );
    }

    #[tokio::test]
    async fn a_batch_larger_than_the_bucket_still_goes_at_the_rate() {
        let limiter = WriteLimiter::new(rate(1000, 5), Counter::default());
        let started = std::time::Instant::now();
        limiter.take(105).await;
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(80),
            "105 at 1000/s burst 5 took {took:?}"
        );
    }
}
