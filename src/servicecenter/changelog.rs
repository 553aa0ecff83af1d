//! The registry's change log: which instances and services changed at which revision, so
//! a reader that knows revision R reads only what changed since R instead of the whole
//! registry (`GET /v4/default/admin/changes`, a syncer extension of the v4 API; the
//! syncer's `servicecenter` plugin uses it when the registry has it).
//!
//! Entries name what changed, not how: the reader is sent the current body of each named
//! instance or service (or its removal), so several changes of one instance since R cost
//! one entry in the reply. The log keeps the last [`CAPACITY`] entries; a reader further
//! behind is told to list everything again (410).

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::response::Response;
use serde::Serialize;

use super::error::{ScError, FORBIDDEN, INVALID_PARAMS};
use super::extract::Tenant;
use super::registry::{MicroService, MicroServiceInstance, Registry, ServiceEntry};
use super::store::keys;
use super::Core;

/// Entries kept (about 150 bytes each).
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

/// The last [`CAPACITY`] changes, by revision (see the module docs).
#[derive(Debug)]
pub struct ChangeLog {
    /// (revision, what) in revision order.
    entries: VecDeque<(u64, Changed)>,
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

    /// Notes that `what` changed at `revision` (not below the last one noted).
    pub fn note(&mut self, revision: u64, what: Changed) {
        self.entries.push_back((revision, what));
        while self.entries.len() > self.capacity {
            if let Some((r, _)) = self.entries.pop_front() {
                self.floor = self.floor.max(r);
            }
        }
    }

    /// Forgets everything up to `revision`: a change the log cannot describe (a reload
    /// from the store) happened there, so readers behind it must list again.
    pub fn reset(&mut self, revision: u64) {
        self.entries.clear();
        self.floor = self.floor.max(revision);
    }

    /// What changed after revision `since`, each named once, oldest first; `None` when
    /// entries after `since` may have been dropped (the reader must list everything).
    /// O(changes since) plus a binary search.
    pub fn since(&self, since: u64) -> Option<Vec<&Changed>> {
        if since < self.floor {
            return None;
        }
        let start = self.entries.partition_point(|(r, _)| *r <= since);
        let mut seen = HashSet::new();
        Some(
            self.entries
                .range(start..)
                .map(|(_, what)| what)
                .filter(|what| seen.insert(*what))
                .collect(),
        )
    }
}

/// The error code (and, `code / 1000`, HTTP status 410) of a change read whose `since` the
/// log no longer covers, or that is ahead of the registry (it restarted): list again.
pub const CHANGES_GONE: u32 = 410001;

/// The longest `wait` a change read may ask for, ms.
pub const MAX_WAIT_MS: u64 = 30_000;

/// One record of a reply, keyed as in the admin dump (`/cse-sr/...`).
#[derive(Debug, Serialize)]
struct Record<'a, T: Serialize> {
    key: String,
    value: &'a T,
}

/// An instance removed since `since`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Removed<'a> {
    service_id: &'a str,
    instance_id: &'a str,
}

/// The body of `GET /v4/default/admin/changes`.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
struct ChangesReply<'a> {
    revision: u64,
    services: Vec<Record<'a, MicroService>>,
    instances: Vec<Record<'a, MicroServiceInstance>>,
    removed: Vec<Removed<'a>>,
    removed_services: Vec<&'a str>,
}

/// `GET /v4/{project}/admin/changes?since=R[&wait=MS]` (syncer extension, default/default
/// only, like the admin dump): what changed after revision `R` (the `X-Resource-Revision`
/// of an admin dump, a find or an earlier change read), as the current body of each
/// changed instance and of its service, and the instances and services removed:
///
/// `{"revision": N, "services": [{"key","value"}], "instances": [{"key","value"}],
///   "removed": [{"serviceId","instanceId"}], "removedServices": [serviceId]}`
///
/// With `exceptProperty=K`, instances whose properties have key `K` are left out of
/// `instances` (a syncer leaves out the copies it imported); removals are all listed.
/// With `wait` (ms, at most [`MAX_WAIT_MS`]) and nothing changed yet, answers when
/// something changes or the wait ends (then with empty lists), so a reader follows the
/// registry with one request per change instead of polling.
///
/// # Errors
/// 400001 on a missing or malformed `since`/`wait`; 403001 outside default/default;
/// 410001 ([`CHANGES_GONE`]) when `R` is older than the log or newer than the registry.
pub async fn changes(
    State(core): State<Core>,
    Tenant { domain, project }: Tenant,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ScError> {
    if domain != "default" || project != "default" {
        return Err(ScError::new(
            FORBIDDEN,
            "changes are only readable from default/default",
        ));
    }
    let number = |name: &str| -> Result<Option<u64>, ScError> {
        q.get(name)
            .map(|v| {
                v.parse::<u64>().map_err(|_| {
                    ScError::new(
                        INVALID_PARAMS,
                        format!("{name} must be a non-negative integer, got {v:?}"),
                    )
                })
            })
            .transpose()
    };
    let since = number("since")?.ok_or_else(|| {
        ScError::new(
            INVALID_PARAMS,
            "since is required: the revision the reader holds",
        )
    })?;
    let wait = Duration::from_millis(number("wait")?.unwrap_or(0).min(MAX_WAIT_MS));
    if !wait.is_zero() {
        let mut revisions = {
            let reg = core.lock();
            if reg.revision() != since {
                None
            } else {
                Some(reg.changes.subscribe())
            }
        };
        if let Some(rx) = revisions.as_mut() {
            // Woken by the next bump; a timeout answers "nothing changed".
            let _ = tokio::time::timeout(wait, rx.wait_for(|r| *r != since)).await;
        }
    }
    let except = q.get("exceptProperty").map(String::as_str);
    let reg = core.lock();
    let body = reply(&reg, since, except)?;
    let revision = reg.revision();
    drop(reg);
    let mut resp = super::v4::json_reply(body);
    if let Ok(v) = axum::http::HeaderValue::from_str(&revision.to_string()) {
        resp.headers_mut().insert("x-resource-revision", v);
    }
    Ok(resp)
}

/// The reply's JSON text for a reader at `since`.
fn reply<'a>(
    reg: &'a Registry,
    since: u64,
    except: Option<&str>,
) -> Result<Result<Vec<u8>, ScError>, ScError> {
    let gone = || {
        ScError::new(
            CHANGES_GONE,
            format!(
                "changes since revision {since} are no longer kept (the registry is at {}): \
                 read the admin dump again",
                reg.revision()
            ),
        )
    };
    if since > reg.revision() {
        return Err(gone());
    }
    let changed = reg.changelog.since(since).ok_or_else(gone)?;
    let mut out = ChangesReply {
        revision: reg.revision(),
        ..ChangesReply::default()
    };
    let mut services_sent = HashSet::new();
    // The service once, before the first of its instances.
    let mut send_service = |out: &mut ChangesReply<'a>, e: &'a ServiceEntry| {
        if services_sent.insert(e.service.service_id.as_str()) {
            out.services.push(Record {
                key: keys::service(&e.domain, &e.project, &e.service.service_id),
                value: &e.service,
            });
        }
    };
    for what in changed {
        match what {
            Changed::Service { service_id } => match reg.entry(service_id) {
                Some(e) => send_service(&mut out, e),
                None => out.removed_services.push(service_id),
            },
            Changed::Instance {
                service_id,
                instance_id,
            } => {
                let entry = reg.entry(service_id);
                match entry.and_then(|e| e.instances.get(instance_id).map(|r| (e, r))) {
                    Some((_, rec))
                        if except.is_some_and(|k| rec.body.properties.contains_key(k)) => {}
                    Some((e, rec)) => {
                        send_service(&mut out, e);
                        out.instances.push(Record {
                            key: keys::instance(&e.domain, &e.project, service_id, instance_id),
                            value: &rec.body,
                        });
                    }
                    None => out.removed.push(Removed {
                        service_id,
                        instance_id,
                    }),
                }
            }
        }
    }
    let capacity = 64 + 600 * out.instances.len() + 300 * out.services.len();
    Ok(super::v4::to_json(&out, capacity))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inst(i: &str) -> Changed {
        Changed::Instance {
            service_id: "s".into(),
            instance_id: i.into(),
        }
    }

    #[test]
    fn changes_since_a_revision_are_named_once_in_order() {
        let mut log = ChangeLog::with_capacity(10);
        log.note(1, inst("a"));
        log.note(2, inst("b"));
        log.note(3, inst("a"));
        log.note(3, inst("c"));
        assert_eq!(log.since(0), Some(vec![&inst("a"), &inst("b"), &inst("c")]));
        assert_eq!(log.since(2), Some(vec![&inst("a"), &inst("c")]));
        assert_eq!(log.since(3), Some(vec![]));
    }

    #[test]
    fn a_reader_behind_the_dropped_entries_must_list_again() {
        let mut log = ChangeLog::with_capacity(2);
        log.note(1, inst("a"));
        log.note(2, inst("b"));
        log.note(3, inst("c"));
        assert_eq!(log.since(0), None);
        assert_eq!(log.since(1), Some(vec![&inst("b"), &inst("c")]));
        log.reset(7);
        assert_eq!(log.since(6), None);
        assert_eq!(log.since(7), Some(vec![]));
    }
}
