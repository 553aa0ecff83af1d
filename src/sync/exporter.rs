//! The exporter: what this cluster offers its peers.
//!
//! A cluster exports its own (origin) instances and the services they belong to, never an
//! instance it imported (one carrying an origin marker): that is the loop guard of DESIGN.md
//! decision 2 ([`ExportFeed::update_at`] and [`ExportFeed::apply`] apply it, and export a
//! service while it has an exported instance: an empty one would only create empty services
//! at a peer). [`Exporter`] keeps an [`ExportFeed`]: the
//! export numbered by revision, with the change between consecutive revisions, which the
//! exchange streams to peers and serves pulls from (DESIGN.md decision 4). Records are kept
//! packed ([`crate::records::packed`]) and a listing is read record by record
//! ([`Plugin::list_each`]), never held whole: at 100,000 instances one is a hundred MB.
//!
//! The export filter ([`super::filter`], `--export-include`/`--export-exclude`) leaves out
//! the services and instances it does not pass, so peers see them as removed. It is held
//! behind a watch ([`Exporter::with_filters`]): a new value is applied to the feed and the
//! registry listed again at once, and the difference crosses as one change.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use syncer_plugin_api::{ChangeSet, Changes, Instance, Listed, Plugin, Service, Snapshot};
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::filter::{Filter, Filters, ServiceMatch};
use crate::membership::notice::ExportRevision;

use crate::records::packed::{
    instance_key, service_key, InstanceKey, PackedInstance, PackedService, ServiceKey,
};
use crate::records::ExportChange;

/// What a listing holds beyond the export, handed to the caller of [`Exporter::refresh`]:
/// every service (exported or not) and every copy (never exported, DESIGN.md decision 2).
pub trait Unexported: Send {
    /// A listed service, with its packed form (shared with the export's).
    fn service(&mut self, service: &Service, packed: &PackedService);
    /// A listed copy: an instance carrying an origin marker.
    fn copy(&mut self, instance: &Instance);
}

/// Nobody needs the rest of the listing.
impl Unexported for () {
    fn service(&mut self, _: &Service, _: &PackedService) {}
    fn copy(&mut self, _: &Instance) {}
}

/// Lists the local registry on behalf of the importer, and keeps the export current for
/// peers' watch streams and pulls.
#[derive(Debug)]
pub struct Exporter {
    plugin: Arc<dyn Plugin>,
    /// Held across a listing, so concurrent callers wait for the one listing in flight
    /// instead of each starting their own.
    listing: tokio::sync::Mutex<()>,
    /// The export by revision; every listing and change read updates it.
    feed: ExportFeed,
    /// The filters as they may change at run time ([`Exporter::with_filters`]); `None`:
    /// everything is exported.
    filters: Option<watch::Receiver<Arc<Filters>>>,
}

impl Exporter {
    /// An exporter over `plugin`.
    pub fn new(plugin: Arc<dyn Plugin>) -> Exporter {
        Exporter {
            plugin,
            listing: tokio::sync::Mutex::new(()),
            feed: ExportFeed::new(FEED_CAPACITY),
            filters: None,
        }
    }

    /// Exports only what `filters`' export filter passes, as it is now and as it changes:
    /// [`Exporter::follow`] applies each new value and lists the registry again, so what a
    /// new filter leaves out is removed from the export (peers see it as removed) and what
    /// it lets in is added, in one change.
    pub fn with_filters(mut self, filters: watch::Receiver<Arc<Filters>>) -> Exporter {
        self.feed.set_filter(filters.borrow().export.clone());
        self.filters = Some(filters);
        self
    }

    /// The export by revision.
    pub fn feed(&self) -> &ExportFeed {
        &self.feed
    }

    /// Lists the local registry, record by record: its exported part updates the feed, and
    /// every service and every copy (an instance carrying an origin) is handed to `rest`
    /// (the importer reads its view of "actual" from it: one listing serves both; `&mut ()`
    /// when nobody needs it). No whole listing is held at any time.
    ///
    /// # Errors
    /// The plugin's listing error (nothing is updated then).
    pub async fn refresh(&self, rest: &mut impl Unexported) -> syncer_plugin_api::Result<()> {
        let one = self.listing.lock().await;
        let mut export = ExportListing::default();
        let revision = self
            .plugin
            .list_each(&mut |record| match record {
                Listed::Service(s) => {
                    let packed = PackedService::new(&s);
                    rest.service(&s, &packed);
                    export.service(&s.service_id, packed);
                }
                Listed::Instance(i) => {
                    if i.origin_cluster().is_some() {
                        rest.copy(&i);
                    } else {
                        export.instance(&i);
                    }
                }
            })
            .await?;
        if let Some(change) = self.feed.update_at(export, revision) {
            debug!(
                revision = change.revision,
                changed = change.instances.len(),
                removed = change.removed.len(),
                "export changed"
            );
        }
        // Released once the feed holds the listing (see `listed`).
        drop(one);
        Ok(())
    }

    /// Returns once the feed holds a listing: at once when it does, after the listing in
    /// flight (the follower's first) when there is one, else after a listing made now.
    ///
    /// # Errors
    /// The plugin's listing error.
    pub async fn listed(&self) -> syncer_plugin_api::Result<()> {
        let mut revisions = self.feed.revisions();
        if *revisions.borrow_and_update() == 0 {
            let listed = tokio::select! {
                listed = revisions.wait_for(|r| *r > 0) => listed.is_ok(),
                _ = self.listing.lock() => false,
            };
            if !listed && *self.feed.revisions().borrow() == 0 {
                self.refresh(&mut ()).await?;
            }
        }
        Ok(())
    }

    /// Keeps the feed current until `shutdown`. When the registry keeps a change log
    /// ([`Plugin::changes`]: the built-in core) it lists once and then reads only the
    /// changes, one waiting request per change; otherwise it lists the registry:
    /// * whenever `local_revision` moves (the built-in core's change counter, in process),
    ///   and every `list_interval` as a backstop;
    /// * otherwise (an external registry) whenever the plugin's revision token
    ///   ([`Plugin::revision`], read every [`REVISION_POLL`]) changes, and every
    ///   [`TOKEN_BACKSTOP`]; or every `list_interval` when the registry gives no token.
    ///
    /// Meanwhile it applies each new value of the filters ([`Exporter::with_filters`]).
    pub async fn follow(
        self: Arc<Self>,
        local_revision: Option<watch::Receiver<u64>>,
        list_interval: Duration,
        shutdown: CancellationToken,
    ) {
        tokio::join!(
            self.follow_filters(&shutdown),
            self.follow_registry(local_revision, list_interval, &shutdown)
        );
    }

    /// Applies each new value of the filters until `shutdown` (at once when there are
    /// none): the feed takes the new export filter and the registry is listed again, retried
    /// every [`CHANGE_RETRY`] until a listing succeeds (or the filters change again).
    async fn follow_filters(&self, shutdown: &CancellationToken) {
        let Some(mut filters) = self.filters.clone() else {
            return;
        };
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                changed = filters.changed() => if changed.is_err() {
                    return;
                },
            }
            let filter = filters.borrow_and_update().export.clone();
            debug!(include = ?filter.spec().include, exclude = ?filter.spec().exclude, "export filter changed; listing again");
            self.feed.set_filter(filter);
            while let Err(e) = self.refresh(&mut ()).await {
                warn!(error = %e, "listing the local registry after a filter change failed; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(CHANGE_RETRY) => {}
                }
                if filters.has_changed().unwrap_or(false) {
                    break;
                }
            }
        }
    }

    /// The registry side of [`Exporter::follow`].
    async fn follow_registry(
        &self,
        mut local_revision: Option<watch::Receiver<u64>>,
        list_interval: Duration,
        shutdown: &CancellationToken,
    ) {
        let shutdown = shutdown.clone();
        if self.follow_changes(&shutdown).await {
            return;
        }
        let mut poll = tokio::time::interval(REVISION_POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_token: Option<String> = None;
        let mut last_listing: Option<Instant> = None;
        loop {
            let due = |every: Duration| last_listing.is_none_or(|at| at.elapsed() >= every);
            let list = match local_revision.as_mut() {
                Some(rx) => {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        changed = rx.changed() => {
                            if changed.is_err() {
                                return;
                            }
                            rx.borrow_and_update();
                            true
                        }
                        _ = poll.tick() => due(list_interval),
                    }
                }
                None => {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = poll.tick() => {}
                    }
                    match self.plugin.revision().await {
                        Ok(Some(token)) => {
                            let moved = last_token.as_ref() != Some(&token);
                            last_token = Some(token);
                            moved || due(TOKEN_BACKSTOP)
                        }
                        Ok(None) => due(list_interval),
                        Err(e) => {
                            debug!(error = %e, "reading the registry's revision failed");
                            due(list_interval)
                        }
                    }
                }
            };
            if !list {
                continue;
            }
            last_listing = Some(Instant::now());
            if let Err(e) = self.refresh(&mut ()).await {
                warn!(error = %e, "listing the local registry failed");
            }
        }
    }
}

impl Exporter {
    /// Follows the registry's change log until `shutdown` (returns `true`), or returns
    /// `false` at once when the registry has none. Lists again when told to (410) or when
    /// a listing gives no revision; a failing read is retried every [`CHANGE_RETRY`].
    async fn follow_changes(&self, shutdown: &CancellationToken) -> bool {
        let mut failing = false;
        loop {
            let at = self.feed.source();
            let read = async {
                let Some(at) = at else {
                    // Not listed at a known revision yet.
                    return self.refresh(&mut ()).await.map(|()| None);
                };
                self.plugin.changes(at, CHANGE_WAIT, false).await.map(Some)
            };
            let outcome = tokio::select! {
                _ = shutdown.cancelled() => return true,
                outcome = read => outcome,
            };
            let pause = match outcome {
                Ok(None) => {
                    // Listed: go on with changes, if the listing told its revision (0 is one:
                    // an empty registry's).
                    if self.feed.source().is_none() {
                        return false;
                    }
                    failing = false;
                    continue;
                }
                Ok(Some(None)) => return false,
                Ok(Some(Some(Changes::Since(set)))) => {
                    failing = false;
                    if let Some(change) = self.feed.apply(&set) {
                        debug!(
                            revision = change.revision,
                            registry_revision = set.revision,
                            changed = change.instances.len(),
                            removed = change.removed.len(),
                            "export changed"
                        );
                    }
                    continue;
                }
                Ok(Some(Some(Changes::Relist))) => {
                    debug!(
                        since = at,
                        "registry change log passed us by; listing again"
                    );
                    self.feed.forget_source();
                    continue;
                }
                Err(e) => {
                    if !failing {
                        warn!(error = %e, "following the local registry's changes failed; retrying");
                    }
                    failing = true;
                    CHANGE_RETRY
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return true,
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }
}

/// How long one change read waits for a change (the plugin may wait less).
pub const CHANGE_WAIT: Duration = Duration::from_secs(5);

/// Pause after a failed change read.
pub const CHANGE_RETRY: Duration = Duration::from_secs(1);

/// How often an external registry's revision token is read.
pub const REVISION_POLL: Duration = Duration::from_millis(20);

/// With a revision token, how often the registry is listed anyway (a real service-center's
/// token covers one service only).
pub const TOKEN_BACKSTOP: Duration = Duration::from_secs(5);

/// Changes kept for slow watchers before they are sent the whole export again.
pub const FEED_CAPACITY: usize = 1024;

/// The exported part of one listing of the local registry, packed as it is read (imported
/// instances left out), for [`ExportFeed::update_at`].
#[derive(Debug, Default)]
pub struct ExportListing {
    services: HashMap<ServiceKey, PackedService>,
    instances: HashMap<InstanceKey, (PackedInstance, ServiceKey)>,
}

impl ExportListing {
    /// Notes a listed service (exported if it has an exported instance).
    pub fn service(&mut self, service_id: &str, packed: PackedService) {
        self.services.insert(service_key(service_id), packed);
    }

    /// Notes a listed instance; an imported one (carrying an origin) is left out.
    pub fn instance(&mut self, instance: &Instance) {
        if instance.origin_cluster().is_some() {
            return;
        }
        self.instances.insert(
            instance_key(&instance.service_id, &instance.instance_id),
            (
                PackedInstance::new(instance),
                service_key(&instance.service_id),
            ),
        );
    }

    /// Leaves out the instances `filter` does not pass (reading an instance's metadata only
    /// when the verdict depends on it; the service globs once per service). An instance
    /// whose service was not listed is left out.
    pub fn retain(&mut self, filter: &Filter) {
        if filter.is_everything() {
            return;
        }
        let mut verdicts: HashMap<ServiceKey, Option<ServiceMatch>> = HashMap::new();
        let services = &self.services;
        self.instances.retain(|_, (packed, service)| {
            let m = *verdicts.entry(*service).or_insert_with(|| {
                services
                    .get(service)
                    .map(|p| service_match(filter, &p.unpack()))
            });
            m.is_some_and(|m| {
                filter.passes_with(m, || -> BTreeMap<String, String> {
                    packed.unpack().properties
                })
            })
        });
    }

    /// The exported part of `listing`.
    pub fn of(listing: &Snapshot) -> ExportListing {
        let mut out = ExportListing::default();
        for s in &listing.services {
            out.service(&s.service_id, PackedService::new(s));
        }
        for i in &listing.instances {
            out.instance(i);
        }
        out
    }
}

/// What `filter`'s service globs say of `service`.
fn service_match(filter: &Filter, service: &Service) -> ServiceMatch {
    filter.service(
        &service.domain_project,
        &service.app_id,
        &service.service_name,
    )
}

/// The export, numbered by revision, and the changes between revisions.
///
/// Revision 0 means "not listed yet": nothing is known, which is not the same as an empty
/// registry, so watchers are only served from revision 1 on.
#[derive(Debug)]
pub struct ExportFeed {
    /// Identifies this run: a restarted exporter numbers revisions from 1 again.
    epoch: u64,
    /// The export at the current revision. A std mutex: held only to diff and copy.
    state: Mutex<FeedState>,
    /// Every change, for the exchange's watch streams; capacity [`FEED_CAPACITY`].
    changes: broadcast::Sender<Arc<ExportChange>>,
    /// The current revision, for waiting until the first listing.
    revision: watch::Sender<u64>,
    /// The epoch and current revision, for gossip ([`crate::membership::notice`]).
    at: watch::Sender<ExportRevision>,
    /// Changes kept for watchers (broadcast, and for resuming).
    capacity: usize,
}

#[derive(Debug, Default)]
struct FeedState {
    /// The export filter (the default passes everything).
    filter: Arc<Filter>,
    revision: u64,
    /// The registry revision the export reflects (`None`: not known).
    source: Option<u64>,
    services: HashMap<ServiceKey, PackedService>,
    instances: HashMap<InstanceKey, (PackedInstance, ServiceKey)>,
    /// Exported instances per service (a service is exported while it has one).
    counts: HashMap<ServiceKey, u32>,
    /// The last changes (as many as the feed's capacity), oldest first, for watchers that
    /// resume.
    recent: std::collections::VecDeque<Arc<ExportChange>>,
}

impl FeedState {
    /// Records an instance as exported; whether it differs from what was there.
    fn put(&mut self, key: InstanceKey, packed: &PackedInstance, service: ServiceKey) -> bool {
        match self.instances.get_mut(&key) {
            Some((old, _)) if old == packed => false,
            Some(old) => {
                *old = (packed.clone(), service);
                true
            }
            None => {
                *self.counts.entry(service).or_default() += 1;
                self.instances.insert(key, (packed.clone(), service));
                true
            }
        }
    }

    /// Removes an exported instance; its ids if it was there.
    fn remove(&mut self, key: &InstanceKey) -> Option<(String, String)> {
        let (packed, service) = self.instances.remove(key)?;
        if let Some(n) = self.counts.get_mut(&service) {
            *n -= 1;
            if *n == 0 {
                self.counts.remove(&service);
                self.services.remove(&service);
            }
        }
        let i = packed.unpack();
        Some((i.service_id, i.instance_id))
    }

    /// Exports `packed` as service `key` if it has exported instances and differs.
    fn put_service(&mut self, key: ServiceKey, packed: &PackedService, change: &mut ExportChange) {
        if self.counts.contains_key(&key) && self.services.get(&key) != Some(packed) {
            self.services.insert(key, packed.clone());
            change.services.push(packed.clone());
        }
    }

    /// Bumps the revision and publishes `change` unless it is empty (and not the first).
    /// The first revision's change is published without records: a watcher starts from the
    /// whole export, and the channel would keep them alive for [`FEED_CAPACITY`] changes.
    fn publish(
        &mut self,
        feed: &ExportFeed,
        mut change: ExportChange,
    ) -> Option<Arc<ExportChange>> {
        let first = self.revision == 0;
        if !first
            && change.services.is_empty()
            && change.instances.is_empty()
            && change.removed.is_empty()
        {
            return None;
        }
        self.revision += 1;
        change.revision = self.revision;
        change.changed_at_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(0));
        if first {
            change = ExportChange {
                revision: self.revision,
                ..ExportChange::default()
            };
        }
        let change = Arc::new(change);
        if self.recent.len() >= feed.capacity {
            self.recent.pop_front();
        }
        self.recent.push_back(change.clone());
        // Nobody watching is fine.
        let _ = feed.changes.send(change.clone());
        feed.revision.send_replace(self.revision);
        feed.at.send_replace(ExportRevision {
            epoch: feed.epoch,
            revision: self.revision,
        });
        Some(change)
    }
}

impl ExportFeed {
    /// An empty feed at revision 0 that keeps `capacity` changes for slow watchers.
    pub fn new(capacity: usize) -> ExportFeed {
        let epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
            .max(1);
        ExportFeed {
            epoch,
            state: Mutex::new(FeedState::default()),
            changes: broadcast::channel(capacity.max(1)).0,
            revision: watch::channel(0).0,
            at: watch::channel(ExportRevision { epoch, revision: 0 }).0,
            capacity: capacity.max(1),
        }
    }

    /// The epoch and the current revision, as a watch (what gossip tells the peers).
    pub fn export_revisions(&self) -> watch::Receiver<ExportRevision> {
        self.at.subscribe()
    }

    /// This run's epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Changes from now on; a receiver that lags gets `Lagged` and should resend the whole
    /// export ([`ExportFeed::current`]).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<ExportChange>> {
        self.changes.subscribe()
    }

    /// The current revision, as a watch (0 until the first listing).
    pub fn revisions(&self) -> watch::Receiver<u64> {
        self.revision.subscribe()
    }

    /// The current revision, the services exported (those with an exported instance) and
    /// the instances exported.
    pub fn sizes(&self) -> (u64, usize, usize) {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        (state.revision, state.counts.len(), state.instances.len())
    }

    /// The current revision and the whole export at it, as shared packed records (taking
    /// them costs a reference count each; unpack them outside).
    pub fn current_packed(&self) -> (u64, Vec<PackedService>, Vec<PackedInstance>) {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        (
            state.revision,
            state.services.values().cloned().collect(),
            state.instances.values().map(|(i, _)| i.clone()).collect(),
        )
    }

    /// The current revision and the changes after `revision` that lead to it, when the
    /// feed still holds all of them (as many as its capacity); `None` when it does not, or
    /// `revision` is not one it reached. What a watcher that resumes from `revision` needs.
    pub fn changes_since(&self, revision: u64) -> Option<(u64, Vec<Arc<ExportChange>>)> {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if revision == 0 || revision > state.revision {
            return None;
        }
        let changes: Vec<Arc<ExportChange>> = state
            .recent
            .iter()
            .filter(|c| c.revision > revision)
            .cloned()
            .collect();
        let contiguous = changes
            .first()
            .map_or(revision == state.revision, |c| c.revision == revision + 1);
        contiguous.then_some((state.revision, changes))
    }

    /// The current revision and the whole export at it.
    pub fn current(&self) -> (u64, Snapshot) {
        let (revision, services, instances) = self.current_packed();
        let snapshot = Snapshot {
            services: services.iter().map(PackedService::unpack).collect(),
            instances: instances.iter().map(PackedInstance::unpack).collect(),
        };
        (revision, snapshot)
    }

    /// The registry revision the export reflects; `None` when not known (never listed, or
    /// listed from a registry without revisions). An empty built-in core is at revision 0,
    /// which is known: taking it for "unknown" made the exporter list the whole registry at
    /// every change of a daemon started empty (the hostile bench's finding 3).
    pub fn source(&self) -> Option<u64> {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).source
    }

    /// Takes a new export filter. What it leaves out or lets in changes with the next
    /// listing ([`ExportFeed::update_at`]), and the changes read after it are filtered by it.
    pub fn set_filter(&self, filter: Arc<Filter>) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).filter = filter;
    }

    /// Forgets the registry revision (its change log passed us by): the next
    /// [`ExportFeed::update_at`] is taken whatever its revision.
    pub fn forget_source(&self) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).source = None;
    }

    /// [`ExportFeed::update_at`] of a whole listing without a registry revision.
    pub fn update(&self, listing: &Snapshot) -> Option<Arc<ExportChange>> {
        self.update_at(ExportListing::of(listing), None)
    }

    /// Applies changes read from the registry's change log ([`Plugin::changes`]): imported
    /// instances are left out (and dropped if they were exported), a service is exported
    /// while it has an exported instance. Changes at or below the revision the export
    /// already reflects are ignored. O(changes).
    pub fn apply(&self, set: &ChangeSet) -> Option<Arc<ExportChange>> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match state.source {
            Some(source) if set.revision >= source => state.source = Some(set.revision),
            _ => return None,
        }
        let mut change = ExportChange::default();
        let filter = state.filter.clone();
        let listed: HashMap<ServiceKey, &Service> = if filter.is_everything() {
            HashMap::new()
        } else {
            set.services
                .iter()
                .map(|s| (service_key(&s.service_id), s))
                .collect()
        };
        let mut verdicts: HashMap<ServiceKey, Option<ServiceMatch>> = HashMap::new();
        for i in &set.instances {
            let key = instance_key(&i.service_id, &i.instance_id);
            let service = service_key(&i.service_id);
            let passes = filter.is_everything() || {
                let m = *verdicts
                    .entry(service)
                    .or_insert_with(|| match listed.get(&service) {
                        Some(s) => Some(service_match(&filter, s)),
                        None => state
                            .services
                            .get(&service)
                            .map(|p| service_match(&filter, &p.unpack())),
                    });
                // A service not known is not exported (the next listing tells).
                m.is_some_and(|m| filter.passes(m, &i.properties))
            };
            if i.origin_cluster().is_some() || !passes {
                if let Some(ids) = state.remove(&key) {
                    change.removed.push(ids);
                }
                continue;
            }
            let packed = PackedInstance::new(i);
            if state.put(key, &packed, service_key(&i.service_id)) {
                change.instances.push(packed);
            }
        }
        for (service_id, instance_id) in &set.removed {
            if let Some(ids) = state.remove(&instance_key(service_id, instance_id)) {
                change.removed.push(ids);
            }
        }
        for s in &set.services {
            state.put_service(
                service_key(&s.service_id),
                &PackedService::new(s),
                &mut change,
            );
        }
        state.publish(self, change)
    }

    /// Makes the export what `listing` exports (a service while it has an exported
    /// instance), listed at registry revision `source` when known (a listing older than
    /// the export's is ignored); when anything differs (and always on the first call),
    /// bumps the revision and publishes the change. Records that did not change are kept as
    /// they are (compared packed).
    ///
    /// Instances the export filter ([`ExportFeed::set_filter`]) does not pass are left out
    /// (and removed, if they were exported).
    pub fn update_at(
        &self,
        mut listing: ExportListing,
        source: Option<u64>,
    ) -> Option<Arc<ExportChange>> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(source) = source {
            if state.source.is_some_and(|held| source < held) {
                return None;
            }
            state.source = Some(source);
        }
        listing.retain(&state.filter);
        let mut change = ExportChange::default();
        for (key, (packed, service)) in &listing.instances {
            if state.put(*key, packed, *service) {
                change.instances.push(packed.clone());
            }
        }
        let gone: Vec<InstanceKey> = state
            .instances
            .keys()
            .filter(|key| !listing.instances.contains_key(key))
            .copied()
            .collect();
        for key in gone {
            if let Some(ids) = state.remove(&key) {
                change.removed.push(ids);
            }
        }
        for (key, packed) in &listing.services {
            state.put_service(*key, packed, &mut change);
        }
        state.publish(self, change)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use syncer_plugin_api::{ORIGIN_CLUSTER, ORIGIN_INSTANCE_ID, ORIGIN_SERVICE_ID};

    fn instance(id: &str, port: u16) -> Instance {
        Instance {
            instance_id: id.into(),
            service_id: "s1".into(),
            endpoints: vec![format!("http://127.0.0.1:{port}")],
            ..Default::default()
        }
    }

    /// An instance carrying an origin marker (a copy this cluster imported).
    fn imported(id: &str, service_id: &str) -> Instance {
        let mut copy = Instance {
            instance_id: id.into(),
            service_id: service_id.into(),
            ..Default::default()
        };
        for (key, value) in [
            (ORIGIN_CLUSTER, "c"),
            (ORIGIN_SERVICE_ID, "o"),
            (ORIGIN_INSTANCE_ID, "i"),
        ] {
            copy.properties.insert(key.to_owned(), value.to_owned());
        }
        copy
    }

    #[test]
    fn the_feed_numbers_changes_and_publishes_only_differences() {
        let feed = ExportFeed::new(8);
        let mut rx = feed.subscribe();
        let service = Service {
            service_id: "s1".into(),
            ..Default::default()
        };
        let mut snap = Snapshot {
            services: vec![service],
            instances: vec![instance("a", 1), instance("b", 2)],
        };
        let first = feed.update(&snap).expect("first listing is revision 1");
        assert_eq!(first.revision, 1);
        assert!(
            first.instances.is_empty(),
            "watchers start from the whole export"
        );
        assert_eq!(feed.current().1.instances.len(), 2);
        assert!(feed.update(&snap).is_none(), "no change, no revision");

        snap.instances[0].endpoints = vec!["http://127.0.0.1:9".into()];
        snap.instances.pop();
        snap.instances.push(instance("c", 3));
        let change = feed.update(&snap).expect("changed");
        assert_eq!(change.revision, 2);
        let mut ids: Vec<_> = change
            .instances
            .iter()
            .map(|i| i.unpack().instance_id)
            .collect();
        ids.sort();
        assert_eq!(ids, vec!["a", "c"]);
        assert_eq!(change.removed, vec![("s1".to_string(), "b".to_string())]);
        assert!(change.services.is_empty());

        assert_eq!(rx.try_recv().expect("rev 1").revision, 1);
        assert_eq!(rx.try_recv().expect("rev 2").revision, 2);
        let (revision, current) = feed.current();
        assert_eq!(revision, 2);
        assert_eq!(current.instances.len(), 2);
    }

    #[test]
    fn changes_from_the_registry_log_update_the_export_in_place() {
        let feed = ExportFeed::new(8);
        let service = Service {
            service_id: "s1".into(),
            ..Default::default()
        };
        let snap = Snapshot {
            services: vec![service.clone()],
            instances: vec![instance("a", 1)],
        };
        let set = ChangeSet {
            revision: 5,
            services: vec![service.clone()],
            instances: vec![instance("b", 2)],
            ..Default::default()
        };
        assert!(
            feed.apply(&set).is_none(),
            "no listing at a known revision yet"
        );
        feed.update_at(ExportListing::of(&snap), Some(4))
            .expect("first listing");
        assert_eq!(feed.source(), Some(4));

        let change = feed.apply(&set).expect("b is new");
        assert_eq!(change.revision, 2);
        assert_eq!(
            change.instances,
            vec![PackedInstance::new(&instance("b", 2))]
        );
        assert!(change.services.is_empty(), "s1 was exported already");
        assert_eq!(feed.source(), Some(5));
        assert!(
            feed.apply(&set).is_none(),
            "the same change again is no change"
        );

        // A copy imported under s2 is not exported, nor is s2; removals cross.
        let copy = imported("copy", "s2");
        let s2 = Service {
            service_id: "s2".into(),
            ..Default::default()
        };
        let set = ChangeSet {
            revision: 7,
            services: vec![s2, service],
            instances: vec![copy],
            removed: vec![("s1".into(), "a".into())],
            ..Default::default()
        };
        let change = feed.apply(&set).expect("a removed");
        assert_eq!(change.removed, vec![("s1".to_string(), "a".to_string())]);
        assert!(change.instances.is_empty() && change.services.is_empty());
        let (_, current) = feed.current();
        assert_eq!(current.instances, vec![instance("b", 2)]);
        assert_eq!(current.services.len(), 1);

        // Older than the export: ignored; a listing at an older revision too.
        let stale = ChangeSet {
            revision: 6,
            removed: vec![("s1".into(), "b".into())],
            ..Default::default()
        };
        assert!(feed.apply(&stale).is_none());
        assert!(feed
            .update_at(ExportListing::of(&Snapshot::default()), Some(6))
            .is_none());
        assert_eq!(feed.current().1.instances.len(), 1);

        // The last instance of a service going takes the service out of the export.
        let gone = ChangeSet {
            revision: 8,
            removed: vec![("s1".into(), "b".into())],
            ..Default::default()
        };
        feed.apply(&gone).expect("b removed");
        let (_, current) = feed.current();
        assert!(current.instances.is_empty() && current.services.is_empty());
    }

    #[test]
    fn a_watcher_can_resume_from_any_revision_the_feed_still_holds() {
        let feed = ExportFeed::new(8);
        let mut snap = Snapshot {
            services: vec![Service {
                service_id: "s1".into(),
                ..Default::default()
            }],
            instances: vec![instance("a", 1)],
        };
        feed.update(&snap).expect("revision 1");
        for port in 2..5 {
            snap.instances[0].endpoints = vec![format!("http://127.0.0.1:{port}")];
            feed.update(&snap).expect("a change");
        }
        let (revision, changes) = feed.changes_since(2).expect("held");
        assert_eq!(revision, 4);
        let revisions: Vec<u64> = changes.iter().map(|c| c.revision).collect();
        assert_eq!(revisions, vec![3, 4]);
        assert_eq!(
            feed.changes_since(4).map(|(r, c)| (r, c.len())),
            Some((4, 0))
        );
        assert!(feed.changes_since(5).is_none(), "never reached");
        assert!(
            feed.changes_since(0).is_none(),
            "nothing held: whole export"
        );
        for port in 5..13 {
            snap.instances[0].endpoints = vec![format!("http://127.0.0.1:{port}")];
            feed.update(&snap).expect("a change");
        }
        assert!(feed.changes_since(2).is_none(), "fell out of the feed");
        assert!(feed.changes_since(10).is_some());
    }

    #[test]
    fn an_empty_first_listing_is_still_a_revision() {
        let feed = ExportFeed::new(8);
        assert_eq!(*feed.revisions().borrow(), 0);
        assert!(feed.update(&Snapshot::default()).is_some());
        assert_eq!(*feed.revisions().borrow(), 1);
    }

    #[test]
    fn imported_instances_and_their_empty_services_are_not_exported() {
        let imported = imported("copy", "s2");
        let local = Snapshot {
            services: vec![
                Service {
                    service_id: "s1".into(),
                    ..Default::default()
                },
                Service {
                    service_id: "s2".into(),
                    ..Default::default()
                },
                Service {
                    service_id: "s3".into(),
                    ..Default::default()
                },
            ],
            instances: vec![
                Instance {
                    instance_id: "own".into(),
                    service_id: "s1".into(),
                    ..Default::default()
                },
                imported,
            ],
        };
        let feed = ExportFeed::new(8);
        feed.update(&local);
        let (_, out) = feed.current();
        assert_eq!(out.instances.len(), 1);
        assert_eq!(out.instances[0].instance_id, "own");
        let ids: Vec<_> = out.services.iter().map(|s| s.service_id.as_str()).collect();
        assert_eq!(ids, vec!["s1"]);
    }

    fn filters(include: &[&str], exclude: &[&str]) -> Arc<Filters> {
        let spec = super::super::filter::FiltersSpec {
            export: super::super::filter::FilterSpec {
                include: include.iter().map(|s| (*s).to_owned()).collect(),
                exclude: exclude.iter().map(|s| (*s).to_owned()).collect(),
            },
            ..Default::default()
        };
        Arc::new(Filters::new(&spec).expect("filters"))
    }

    /// Services `orders` (s1) and `payments` (s2) of app `shop`; `a` of orders, `dev` and
    /// `prod` of payments with metadata `env`.
    fn shop() -> Snapshot {
        let service = |id: &str, name: &str| Service {
            domain_project: "default/default".into(),
            service_id: id.into(),
            app_id: "shop".into(),
            service_name: name.into(),
            ..Default::default()
        };
        let mut dev = instance("dev", 2);
        dev.service_id = "s2".into();
        dev.properties.insert("env".into(), "dev".into());
        let mut prod = instance("prod", 3);
        prod.service_id = "s2".into();
        prod.properties.insert("env".into(), "prod".into());
        Snapshot {
            services: vec![service("s1", "orders"), service("s2", "payments")],
            instances: vec![instance("a", 1), dev, prod],
        }
    }

    fn exported_ids(feed: &ExportFeed) -> Vec<String> {
        let mut ids: Vec<String> = feed
            .current()
            .1
            .instances
            .into_iter()
            .map(|i| i.instance_id)
            .collect();
        ids.sort();
        ids
    }

    #[test]
    fn the_export_filter_leaves_out_what_it_does_not_pass_from_listings_and_changes() {
        let feed = ExportFeed::new(8);
        feed.set_filter(
            filters(&[], &["default/default/shop/payments"])
                .export
                .clone(),
        );
        feed.update_at(ExportListing::of(&shop()), Some(1))
            .expect("first listing");
        assert_eq!(exported_ids(&feed), vec!["a"]);
        assert_eq!(
            feed.current().1.services.len(),
            1,
            "payments is not exported"
        );

        // A new filter: orders, and whatever runs in prod.
        feed.set_filter(
            filters(&["default/default/*/orders", "meta:env=prod"], &[])
                .export
                .clone(),
        );
        let change = feed
            .update_at(ExportListing::of(&shop()), Some(2))
            .expect("prod comes in");
        assert_eq!(change.instances.len(), 1);
        assert!(change.removed.is_empty());
        assert_eq!(exported_ids(&feed), vec!["a", "prod"]);

        // Changes read from the change log are filtered too: a dev instance stays out, a
        // prod one turning dev goes.
        let mut turned = shop().instances[2].clone();
        turned.properties.insert("env".into(), "dev".into());
        let mut new_dev = instance("dev-2", 4);
        new_dev.service_id = "s2".into();
        let set = ChangeSet {
            revision: 3,
            services: vec![shop().services[1].clone()],
            instances: vec![turned, new_dev],
            ..Default::default()
        };
        let change = feed.apply(&set).expect("prod removed");
        assert_eq!(change.removed, vec![("s2".to_string(), "prod".to_string())]);
        assert!(change.instances.is_empty());
        assert_eq!(exported_ids(&feed), vec!["a"]);
    }

    /// A registry that only answers listings, of a fixed snapshot.
    #[derive(Debug, Default)]
    struct Listing {
        snapshot: Snapshot,
    }

    #[async_trait::async_trait]
    impl Plugin for Listing {
        fn name(&self) -> &'static str {
            "listing"
        }
        async fn list(&self) -> syncer_plugin_api::Result<Snapshot> {
            Ok(self.snapshot.clone())
        }
        async fn ensure_service(&self, _: &Service) -> syncer_plugin_api::Result<String> {
            Err(syncer_plugin_api::Error::Rejected("read only".into()))
        }
        async fn register(&self, _: &Service, _: &Instance) -> syncer_plugin_api::Result<String> {
            Err(syncer_plugin_api::Error::Rejected("read only".into()))
        }
        async fn heartbeat(&self, _: &Service, _: &str) -> syncer_plugin_api::Result<()> {
            Err(syncer_plugin_api::Error::Rejected("read only".into()))
        }
        async fn unregister(&self, _: &Service, _: &str) -> syncer_plugin_api::Result<()> {
            Err(syncer_plugin_api::Error::Rejected("read only".into()))
        }
    }

    #[tokio::test]
    async fn a_new_export_filter_sent_through_the_watch_is_applied_at_once() {
        let plugin = Arc::new(Listing { snapshot: shop() });
        let (tx, rx) = watch::channel(filters(&[], &[]));
        let exporter = Arc::new(Exporter::new(plugin).with_filters(rx));
        let shutdown = CancellationToken::new();
        let following = tokio::spawn(exporter.clone().follow(
            None,
            Duration::from_secs(3600),
            shutdown.clone(),
        ));
        let mut revisions = exporter.feed().revisions();
        let wait = Duration::from_secs(5);
        tokio::time::timeout(wait, revisions.wait_for(|r| *r >= 1))
            .await
            .expect("listed in time")
            .expect("feed alive");
        assert_eq!(exported_ids(exporter.feed()), vec!["a", "dev", "prod"]);

        tx.send_replace(filters(&[], &["meta:env=dev"]));
        tokio::time::timeout(wait, revisions.wait_for(|r| *r >= 2))
            .await
            .expect("the new filter applied in time")
            .expect("feed alive");
        assert_eq!(exported_ids(exporter.feed()), vec!["a", "prod"]);
        shutdown.cancel();
        tokio::time::timeout(wait, following)
            .await
            .expect("follow stops")
            .expect("follow task");
    }
}
