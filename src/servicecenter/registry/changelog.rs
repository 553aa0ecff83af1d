//! The registry's change log: which instances and services changed at which revision, so
//! a reader that knows revision R reads only what changed since R instead of the whole
//! registry (`GET /v4/default/admin/changes`, a syncer extension of the v4 API; the
//! syncer's `servicecenter` plugin uses it when the registry has it).
//!
//! Entries name what changed, not how: the reader is sent the current body of each named
//! instance or service (or its removal), so several changes of one instance since R cost
//! one entry in the reply. The log keeps the last [`CAPACITY`] entries; a reader further
//! behind is told to list everything again (410).

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

/// Entries kept (about 150 bytes each: 72 in the queue, the two ids' text; the tenant is
/// shared with the entry before it when equal).
pub const CAPACITY: usize = 65_536;

/// What changed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Changed {
    /// An instance was registered, changed (not renewed) or removed.
    Instance {
        /// serviceId.
        service_id: String,
        /// instanceId.
        instance_id: String,
    },
    /// A microservice was created, changed or deleted.
    Service {
        /// serviceId.
        service_id: String,
    },
}

/// Which tenants a read covers: one `(domain, project)`, or every tenant (`None`; the
/// syncer's own all-tenant read, see `api/changelog.rs`).
pub type Scope<'a> = Option<(&'a str, &'a str)>;

/// Whether `tenant` (`domain/project`, as [`ChangeLog::note`] keeps it) is in `scope`.
/// Domains never hold a `/` (the API refuses them), so the split is unambiguous.
pub fn in_scope(tenant: &str, scope: Scope<'_>) -> bool {
    scope.is_none_or(|(d, p)| {
        tenant
            .strip_prefix(d)
            .and_then(|rest| rest.strip_prefix('/'))
            == Some(p)
    })
}

/// The last [`CAPACITY`] changes, by revision (see the module docs).
#[derive(Debug)]
pub struct ChangeLog {
    /// (revision, tenant as `domain/project` (empty: unknown), what) in revision order. A
    /// tenant equal to the last one noted shares its text (most changes are of one tenant).
    entries: VecDeque<(u64, Arc<str>, Changed)>,
    /// Entries of revisions up to and including `floor` may have been dropped.
    floor: u64,
    capacity: usize,
}

impl Default for ChangeLog {
    fn default() -> ChangeLog {
        ChangeLog::with_capacity(CAPACITY)
    }
}

impl ChangeLog {
    /// An empty log keeping `capacity` entries.
    pub fn with_capacity(capacity: usize) -> ChangeLog {
        ChangeLog {
            entries: VecDeque::new(),
            floor: 0,
            capacity: capacity.max(1),
        }
    }

    /// Notes that `what` of tenant `(domain, project)` (`None`: unknown, then only an
    /// all-tenant read sees it) changed at `revision` (not below the last one noted).
    pub fn note(&mut self, revision: u64, tenant: Option<(&str, &str)>, what: Changed) {
        let tenant = match (tenant, self.entries.back()) {
            (None, _) => Arc::from(""),
            (Some((d, p)), Some((_, last, _)))
                if last.strip_prefix(d).and_then(|r| r.strip_prefix('/')) == Some(p) =>
            {
                Arc::clone(last)
            }
            (Some((d, p)), _) => format!("{d}/{p}").into(),
        };
        // Make room first: pushing the entry past `capacity` and then dropping the oldest
        // would make the queue grow its buffer to twice the capacity (72 bytes a slot,
        // 9.4 MB at 131,072 slots instead of 4.7 MB).
        while self.entries.len() >= self.capacity {
            match self.entries.pop_front() {
                Some((r, _, _)) => self.floor = self.floor.max(r),
                None => break,
            }
        }
        self.entries.push_back((revision, tenant, what));
    }

    /// Forgets everything up to `revision`: a change the log cannot describe (a reload
    /// from the store) happened there, so readers behind it must list again.
    pub fn reset(&mut self, revision: u64) {
        self.entries.clear();
        self.floor = self.floor.max(revision);
    }

    /// What changed in `scope` after revision `since`, each named once, oldest first;
    /// `None` when entries after `since` may have been dropped (the reader must list
    /// everything). O(changes since) plus a binary search.
    pub fn since(&self, since: u64, scope: Scope<'_>) -> Option<Vec<&Changed>> {
        if since < self.floor {
            return None;
        }
        let start = self.entries.partition_point(|(r, _, _)| *r <= since);
        let mut seen = HashSet::new();
        Some(
            self.entries
                .range(start..)
                .filter(|(_, tenant, _)| in_scope(tenant, scope))
                .map(|(_, _, what)| what)
                .filter(|what| seen.insert(*what))
                .collect(),
        )
    }

    /// Every entry after revision `since`, oldest first, with its revision (an entry's
    /// revision may be one past the registry's while a change is being made); `None` as for
    /// [`ChangeLog::since`].
    pub fn entries_since(&self, since: u64) -> Option<impl Iterator<Item = (u64, &Changed)>> {
        if since < self.floor {
            return None;
        }
        let start = self.entries.partition_point(|(r, _, _)| *r <= since);
        Some(self.entries.range(start..).map(|(r, _, what)| (*r, what)))
    }
}

/// Wakes watchers whenever the registry's revision changes (held by the registry).
#[derive(Debug)]
pub struct ChangeFeed {
    tx: tokio::sync::watch::Sender<u64>,
}

impl Default for ChangeFeed {
    fn default() -> ChangeFeed {
        ChangeFeed {
            tx: tokio::sync::watch::Sender::new(0),
        }
    }
}

impl ChangeFeed {
    /// Publishes the new revision (never blocks; a no-op without watchers).
    pub fn notify(&self, revision: u64) {
        self.tx.send_replace(revision);
    }

    /// A receiver that sees every later revision (at least the last one).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Scope<'static> = Some(("d", "p"));

    #[test]
    fn a_tenant_reads_only_its_own_changes() {
        let mut log = ChangeLog::with_capacity(10);
        log.note(1, Some(("d", "p")), inst("a"));
        log.note(2, Some(("d2", "p")), inst("b"));
        log.note(3, Some(("d", "p2")), inst("c"));
        log.note(4, Some(("dd", "p")), inst("d"));
        log.note(5, None, inst("e"));
        assert_eq!(log.since(0, Some(("d", "p"))), Some(vec![&inst("a")]));
        assert_eq!(log.since(0, Some(("d2", "p"))), Some(vec![&inst("b")]));
        assert_eq!(log.since(0, None).map(|v| v.len()), Some(5));
        assert!(!in_scope("d/p", Some(("d", ""))));
        assert!(!in_scope("", Some(("", ""))));
    }

    fn inst(i: &str) -> Changed {
        Changed::Instance {
            service_id: "s".into(),
            instance_id: i.into(),
        }
    }

    #[test]
    fn changes_since_a_revision_are_named_once_in_order() {
        let mut log = ChangeLog::with_capacity(10);
        log.note(1, T, inst("a"));
        log.note(2, T, inst("b"));
        log.note(3, T, inst("a"));
        log.note(3, T, inst("c"));
        assert_eq!(
            log.since(0, None),
            Some(vec![&inst("a"), &inst("b"), &inst("c")])
        );
        assert_eq!(log.since(2, T), Some(vec![&inst("a"), &inst("c")]));
        assert_eq!(log.since(3, None), Some(vec![]));
    }

    #[test]
    fn a_reader_behind_the_dropped_entries_must_list_again() {
        let mut log = ChangeLog::with_capacity(2);
        log.note(1, T, inst("a"));
        log.note(2, T, inst("b"));
        log.note(3, T, inst("c"));
        assert_eq!(log.since(0, None), None);
        assert_eq!(log.since(1, None), Some(vec![&inst("b"), &inst("c")]));
        log.reset(7);
        assert_eq!(log.since(6, None), None);
        assert_eq!(log.since(7, None), Some(vec![]));
    }
}
