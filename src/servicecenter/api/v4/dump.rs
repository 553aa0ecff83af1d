//! `GET /v4/{project}/admin/dump`: the whole registry as service-center's admin dump.

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::servicecenter::core::CONCURRENT_DUMPS;
use crate::servicecenter::registry::{Registry, ServiceEntry};
use crate::servicecenter::store::keys;

/// Our error when every dump slot stays taken for [`DUMP_SLOT_WAIT`] (HTTP 503; not a
/// service-center code: service-center does not limit dumps).
pub const DUMPS_BUSY: u32 = 503001;

#[derive(Serialize)]
pub(super) struct KeyValue<T: Serialize, K: Serialize = String> {
    key: K,
    rev: u64,
    value: T,
}

/// Which list of a dump a [`DumpChunks`] is writing.
#[derive(Clone, Copy, PartialEq, Eq)]
enum DumpPart {
    Services,
    Indexes,
    Instances,
    Done,
}

/// A dump's JSON text in chunks of about [`DUMP_CHUNK_BYTES`], rendered from a snapshot
/// ([`Registry::snapshot`](crate::servicecenter::registry::Registry::snapshot)) as the
/// client reads, without the registry lock: memory stays one chunk per dump, whatever the
/// registry's size, and writers wait for no reader.
struct DumpChunks {
    /// Every service of the dump, by serviceId.
    entries: Vec<Arc<ServiceEntry>>,
    rev: u64,
    part: DumpPart,
    /// The next entry of `part` to write.
    at: usize,
    /// The small lists (tags, rules, rule indexes, dependency rules, summaries) as the
    /// members of a JSON object without its braces, written before `instances`.
    middle: Vec<u8>,
    /// Whether `part` has written an element yet (a comma goes before the next).
    wrote: bool,
    /// Dropped when the reply ends or its reader goes away, which frees the dump's slot
    /// (see [`hold_slot`]).
    _done: tokio::sync::oneshot::Sender<()>,
}

/// The size a dump's chunk grows to before it is sent, in bytes.
const DUMP_CHUNK_BYTES: usize = 64 * 1024;

impl DumpChunks {
    /// Appends one element of the current part to `buf`.
    fn element(&self, buf: &mut Vec<u8>, e: &ServiceEntry) -> serde_json::Result<()> {
        let rev = self.rev;
        let s = &e.service;
        let comma = |buf: &mut Vec<u8>, wrote: bool| {
            if wrote {
                buf.push(b',');
            }
        };
        match self.part {
            DumpPart::Services => {
                comma(buf, self.wrote);
                serde_json::to_writer(
                    &mut *buf,
                    &KeyValue {
                        key: keys::service_key(&e.domain, &e.project, &s.service_id),
                        rev,
                        value: s,
                    },
                )
            }
            DumpPart::Indexes => {
                comma(buf, self.wrote);
                serde_json::to_writer(
                    &mut *buf,
                    &KeyValue {
                        key: keys::service_index_key(
                            &e.domain,
                            &e.project,
                            &s.environment,
                            &s.app_id,
                            &s.service_name,
                            &s.version,
                        ),
                        rev,
                        value: s.service_id.as_str(),
                    },
                )
            }
            DumpPart::Instances => {
                let mut wrote = self.wrote;
                for (iid, r) in &e.instances {
                    comma(buf, wrote);
                    wrote = true;
                    serde_json::to_writer(
                        &mut *buf,
                        &KeyValue {
                            key: keys::instance_key(&e.domain, &e.project, &s.service_id, iid),
                            rev,
                            value: &r.body,
                        },
                    )?;
                }
                Ok(())
            }
            DumpPart::Done => Ok(()),
        }
    }

    /// Moves to the next part, writing what goes between the two.
    fn next_part(&mut self, buf: &mut Vec<u8>) {
        let (next, between): (DumpPart, &[u8]) = match self.part {
            DumpPart::Services => (DumpPart::Indexes, b"],\"serviceIndexes\":["),
            DumpPart::Indexes => {
                buf.extend_from_slice(b"],");
                buf.extend_from_slice(&self.middle);
                self.entries.reverse();
                (DumpPart::Instances, b",\"instances\":[")
            }
            DumpPart::Instances | DumpPart::Done => (DumpPart::Done, b"]}}\n"),
        };
        buf.extend_from_slice(between);
        self.part = next;
        self.at = 0;
        self.wrote = false;
    }
}

impl Iterator for DumpChunks {
    type Item = Result<Vec<u8>, std::io::Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.part == DumpPart::Done {
            return None;
        }
        let mut buf = Vec::with_capacity(DUMP_CHUNK_BYTES + 4096);
        if self.at == 0 && self.part == DumpPart::Services && !self.wrote {
            buf.extend_from_slice(b"{\"cache\":{\"services\":[");
        }
        while buf.len() < DUMP_CHUNK_BYTES && self.part != DumpPart::Done {
            // The last part takes the entries (reversed for it): the snapshot's share of an
            // entry ends once it is written, so a write meanwhile copies less.
            let next = match self.part {
                DumpPart::Instances => self.entries.pop(),
                _ => self.entries.get(self.at).cloned(),
            };
            match next {
                Some(e) => {
                    if let Err(err) = self.element(&mut buf, &e) {
                        // Cannot happen for these types (string keys, no floats); end the
                        // body so the reader sees a broken reply rather than a short one.
                        return Some(Err(std::io::Error::other(err)));
                    }
                    self.wrote |= self.part != DumpPart::Instances || !e.instances.is_empty();
                    self.at += 1;
                }
                None => self.next_part(&mut buf),
            }
        }
        Some(Ok(buf))
    }
}

/// The small lists of a dump, written between `serviceIndexes` and `instances`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DumpMiddle {
    service_tags: Vec<KeyValue<Value>>,
    service_rules: Vec<KeyValue<Value>>,
    service_rule_indexes: Vec<KeyValue<Value>>,
    dependency_rules: Vec<KeyValue<Value>>,
    summaries: Vec<KeyValue<Value>>,
}

/// How long a dump waits for a slot before it is refused (503, retry later).
const DUMP_SLOT_WAIT: Duration = Duration::from_secs(30);
/// How long a dump keeps its slot at most: a reader that stalls keeps its snapshot, not a
/// slot that others wait for.
const DUMP_SLOT_HOLD: Duration = Duration::from_secs(30);

/// Keeps `slot` until the returned sender is dropped (the reply ended) or
/// [`DUMP_SLOT_HOLD`] passed, whichever comes first.
fn hold_slot(slot: tokio::sync::OwnedSemaphorePermit) -> tokio::sync::oneshot::Sender<()> {
    let (done, ended) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = tokio::time::timeout(DUMP_SLOT_HOLD, ended).await;
        drop(slot);
    });
    done
}

/// `GET /v4/{project}/admin/dump[?scope=all]`: the cache of the caller's tenant, or with
/// `scope=all` of every tenant (service-center 1.3.0 always dumps every tenant; the
/// syncer's plugin asks for that explicitly, [`all_tenants`]); only from default/default,
/// with the registry revision it was read at in `X-Resource-Revision`.
///
/// # Errors
/// 403001 outside default/default; 400001 for a bad `scope`.
pub(super) async fn dump(
    State(core): State<Core>,
    Tenant { domain, project }: Tenant,
    Query(q): Query_,
) -> Result<Response, ScError> {
    let all = all_tenants(&q)?;
    let dom = domain.clone();
    if dom != "default" || project != "default" {
        return Err(ScError::new(
            FORBIDDEN,
            "dump is only allowed for default/default",
        ));
    }
    // A slot first: at most CONCURRENT_DUMPS render at once.
    let slot = match tokio::time::timeout(DUMP_SLOT_WAIT, core.dump_slots().acquire_owned()).await {
        Ok(Ok(slot)) => slot,
        _ => {
            return Err(ScError::new(
                DUMPS_BUSY,
                format!(
                    "{CONCURRENT_DUMPS} dumps are being read already and none ended \
                     within {} s: retry later",
                    DUMP_SLOT_WAIT.as_secs()
                ),
            ))
        }
    };
    // Under the lock: the snapshot (shared records) and the small lists only.
    let (rev, entries, middle) = {
        let reg = core.lock();
        let entries = reg.snapshot((!all).then_some((dom.as_str(), project.as_str())));
        let middle = small_lists(&reg, &entries);
        (reg.revision(), entries, middle)
    };
    let mut middle = serde_json::to_vec(&middle)
        .map_err(|e| ScError::new(500003, format!("encoding the reply: {e}")))?;
    // The members without the object's braces.
    middle.pop();
    middle.remove(0);
    let chunks = DumpChunks {
        entries,
        rev,
        part: DumpPart::Services,
        at: 0,
        middle,
        wrote: false,
        _done: hold_slot(slot),
    };
    let mut resp = (
        [(
            axum::http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=UTF-8"),
        )],
        axum::body::Body::from_stream(rendered_off_the_runtime(chunks)),
    )
        .into_response();
    // The revision of this dump, for `admin/changes?since=` (`changelog.rs`).
    if let Ok(v) = HeaderValue::from_str(&rev.to_string()) {
        resp.headers_mut().insert("x-resource-revision", v);
    }
    Ok(resp)
}

/// The chunks of a dump, each rendered on tokio's blocking pool: rendering 20 MB of JSON is
/// seconds of CPU, and on the runtime's workers it held up every other request (the hostile
/// bench's finding 7: heartbeat p99 10 s while four clients dumped in a loop). On the
/// blocking pool the OS shares the CPUs between the renders and the workers.
fn rendered_off_the_runtime(
    chunks: DumpChunks,
) -> impl futures::Stream<Item = Result<Vec<u8>, std::io::Error>> + Send {
    futures::stream::unfold(Some(chunks), |state| async move {
        let mut chunks = state?;
        let (chunks, item) = tokio::task::spawn_blocking(move || {
            let item = chunks.next();
            (chunks, item)
        })
        .await
        .ok()?;
        item.map(|item| (item, Some(chunks)))
    })
}

/// The tags, rules, rule indexes, dependency rules and schema summaries of `entries`, with
/// the registry's revision as each record's `rev`.
fn small_lists(reg: &Registry, entries: &[Arc<ServiceEntry>]) -> DumpMiddle {
    let rev = reg.revision();
    let mut tags = Vec::new();
    let mut rules = Vec::new();
    let mut rule_indexes = Vec::new();
    let mut dependency_rules = Vec::new();
    let mut summaries = Vec::new();
    for e in entries {
        let s = &e.service;
        let (d, p, sid) = (&e.domain, &e.project, &s.service_id);
        let t = reg.tags.of(sid);
        if !t.is_empty() {
            tags.push(KeyValue {
                key: format!("/cse-sr/ms/tags/{d}/{p}/{sid}"),
                rev,
                value: serde_json::to_value(&t).unwrap_or_default(),
            });
        }
        for r in reg.rules.of(sid) {
            rules.push(KeyValue {
                key: format!("/cse-sr/ms/rules/{d}/{p}/{sid}/{}", r.rule_id),
                rev,
                value: serde_json::to_value(r).unwrap_or_default(),
            });
            rule_indexes.push(KeyValue {
                key: format!(
                    "/cse-sr/ms/rule-indexes/{d}/{p}/{sid}/{}/{}",
                    r.attribute, r.pattern
                ),
                rev,
                value: Value::String(r.rule_id.clone()),
            });
        }
        if let Some(deps) = reg.dependencies.of(sid) {
            dependency_rules.push(KeyValue {
                key: format!(
                    "/cse-sr/ms/dep-rules/{d}/{p}/c/{}/{}/{}/{}",
                    s.environment, s.app_id, s.service_name, s.version
                ),
                rev,
                value: serde_json::json!({ "Dependency": deps }),
            });
        }
        if let Some(schemas) = reg.schemas.of(sid) {
            for (schema_id, rec) in schemas.iter().filter(|(_, r)| !r.summary.is_empty()) {
                summaries.push(KeyValue {
                    key: format!("/cse-sr/ms/schema-sum/{d}/{p}/{sid}/{schema_id}"),
                    rev,
                    value: Value::String(rec.summary.clone()),
                });
            }
        }
    }
    DumpMiddle {
        service_tags: tags,
        service_rules: rules,
        service_rule_indexes: rule_indexes,
        dependency_rules,
        summaries,
    }
}
