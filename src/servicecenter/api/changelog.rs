//! `GET /v4/{project}/admin/changes`: the registry's change log
//! ([`ChangeLog`](crate::servicecenter::registry::changelog::ChangeLog)) read over HTTP, so a
//! reader that knows revision R reads only what changed since R (a syncer extension of the
//! v4 API; the syncer's `servicecenter` plugin uses it when the registry has it).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::response::Response;
use serde::Serialize;

use super::extract::{all_tenants, Tenant};
use crate::servicecenter::core::Core;
use crate::servicecenter::error::{ScError, FORBIDDEN, INVALID_PARAMS};
use crate::servicecenter::registry::changelog::{Changed, Scope};
use crate::servicecenter::registry::{MicroService, MicroServiceInstance, Registry, ServiceEntry};
use crate::servicecenter::store::keys;

/// The error code (and, `code / 1000`, HTTP status 410) of a change read whose `since` the
/// log no longer covers, or that is ahead of the registry (it restarted): list again.
pub use crate::servicecenter::error::CHANGES_GONE;

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

/// The change-log route.
pub fn routes() -> axum::Router<Core> {
    axum::Router::new().route("/v4/{project}/admin/changes", axum::routing::get(changes))
}

/// `GET /v4/{project}/admin/changes?since=R[&wait=MS][&scope=all]` (syncer extension,
/// default/default only, like the admin dump): what changed in the caller's tenant (with
/// `scope=all`, in every tenant: [`all_tenants`]) after revision `R` (the
/// `X-Resource-Revision` of an admin dump, a find or an earlier change read), as the
/// current body of each changed instance and of its service, and the instances and
/// services removed:
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
/// 400001 on a missing or malformed `since`/`wait`/`scope`; 403001 outside default/default;
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
    let scope = (!all_tenants(&q)?).then_some((domain.as_str(), project.as_str()));
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
    // Under the lock only what changed is gathered (shared records); the reply is written
    // after it is released.
    let gathered = gather(&core.lock(), since, except, scope)?;
    let revision = gathered.revision;
    let mut resp = super::body::json_reply(gathered.render());
    if let Ok(v) = axum::http::HeaderValue::from_str(&revision.to_string()) {
        resp.headers_mut().insert("x-resource-revision", v);
    }
    Ok(resp)
}

/// What changed since a reader's revision, gathered under the lock: the records are shared
/// with the registry ([`Registry::shared_entry`]), not copied.
struct Gathered {
    revision: u64,
    /// Changed services (each once), in the order of their first change.
    services: Vec<Arc<ServiceEntry>>,
    /// Changed instances: their service and instanceId.
    instances: Vec<(Arc<ServiceEntry>, String)>,
    removed: Vec<(String, String)>,
    removed_services: Vec<String>,
}

/// What changed for a reader at `since`, in `scope` (one tenant, or all when `None`).
///
/// # Errors
/// [`CHANGES_GONE`] when the log no longer covers `since` or `since` is ahead.
fn gather(
    reg: &Registry,
    since: u64,
    except: Option<&str>,
    scope: Scope<'_>,
) -> Result<Gathered, ScError> {
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
    let changed = reg.changelog.since(since, scope).ok_or_else(gone)?;
    let mut out = Gathered {
        revision: reg.revision(),
        services: Vec::new(),
        instances: Vec::new(),
        removed: Vec::new(),
        removed_services: Vec::new(),
    };
    let mut services_sent = HashSet::new();
    // The service once, before the first of its instances.
    let mut send_service = |out: &mut Gathered, e: &Arc<ServiceEntry>| {
        if services_sent.insert(e.service.service_id.clone()) {
            out.services.push(Arc::clone(e));
        }
    };
    // The entry of a serviceId, when it is in the scope (an id removed from one tenant
    // may since live in another: the reader is told it is removed, nothing more).
    let entry = |sid: &str| {
        reg.shared_entry(sid)
            .filter(|e| scope.is_none_or(|(d, p)| e.domain == d && e.project == p))
    };
    for what in changed {
        match what {
            Changed::Service { service_id } => match entry(service_id) {
                Some(e) => send_service(&mut out, &e),
                None => out.removed_services.push(service_id.clone()),
            },
            Changed::Instance {
                service_id,
                instance_id,
            } => match entry(service_id).filter(|e| e.instances.contains_key(instance_id)) {
                Some(e)
                    if except.is_some_and(|k| {
                        e.instances
                            .get(instance_id)
                            .is_some_and(|r| r.body.properties.contains_key(k))
                    }) => {}
                Some(e) => {
                    send_service(&mut out, &e);
                    out.instances.push((e, instance_id.clone()));
                }
                None => out.removed.push((service_id.clone(), instance_id.clone())),
            },
        }
    }
    Ok(out)
}

impl Gathered {
    /// The reply's JSON text.
    fn render(&self) -> Result<Vec<u8>, ScError> {
        let mut out = ChangesReply {
            revision: self.revision,
            ..ChangesReply::default()
        };
        for e in &self.services {
            out.services.push(Record {
                key: keys::service(&e.domain, &e.project, &e.service.service_id),
                value: &e.service,
            });
        }
        for (e, iid) in &self.instances {
            if let Some(rec) = e.instances.get(iid) {
                out.instances.push(Record {
                    key: keys::instance(&e.domain, &e.project, &e.service.service_id, iid),
                    value: &rec.body,
                });
            }
        }
        out.removed = self
            .removed
            .iter()
            .map(|(service_id, instance_id)| Removed {
                service_id,
                instance_id,
            })
            .collect();
        out.removed_services = self.removed_services.iter().map(String::as_str).collect();
        let capacity = 64 + 600 * out.instances.len() + 300 * out.services.len();
        super::body::to_json(&out, capacity)
    }
}
