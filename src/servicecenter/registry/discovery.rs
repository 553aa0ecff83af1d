//! Find: which provider instances a request (and its consumer) may see
//! (`GET /registry/instances`, `POST /registry/instances/action`, and the consumer-aware
//! reads of one service's instances).
//!
//! Service-center 1.3.0's order (`server/service/instance.go`, `cache/filter_*.go`,
//! servicecomb-notes c.5): version rule → tags (the provider carries every listed key) →
//! access check → the instances of what is left; status is not filtered. The access check,
//! with a consumer: a provider of another app only when its property `allowCrossApp` is
//! `true` (any case), the same environment, and the provider's black/white rules
//! ([`super::rules::allows`]). Refused providers are left out silently. A find with a
//! consumer that keeps at least one provider records the dependency consumer → (env,
//! appId, serviceName, version rule).

use std::collections::HashMap;

use bytes::Bytes;
use serde::{Serialize, Serializer};

use super::dependencies::DependencyKey;
use super::{validate_find, MicroServiceInstance, Registry, ServiceEntry};
use crate::servicecenter::error::{ScError, SERVICE_NOT_EXISTS};

/// What a find asks for.
#[derive(Debug, Clone, Default)]
pub struct FindQuery {
    /// `env`; replaced by the consumer's environment when there is a consumer.
    pub env: String,
    /// `appId` (required).
    pub app_id: String,
    /// `serviceName` (required).
    pub service_name: String,
    /// `version`: `latest`, exact, `x+` or `a-b`.
    pub version: String,
    /// `tags`: keys the provider must all carry.
    pub tags: Vec<String>,
}

/// Splits a `tags=a,b` query value into keys.
pub fn tag_keys(q: &str) -> Vec<String> {
    q.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

/// Whether `consumer` may see `provider` (the access check above).
pub fn accessible(reg: &Registry, consumer: &ServiceEntry, provider: &ServiceEntry) -> bool {
    let (c, p) = (&consumer.service, &provider.service);
    if c.service_id == p.service_id {
        return true;
    }
    if c.app_id != p.app_id
        && !p
            .properties
            .get("allowCrossApp")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    {
        return false;
    }
    if c.environment != p.environment {
        return false;
    }
    let tags = reg.tags.of(&c.service_id);
    super::rules::allows(reg.rules.of(&p.service_id), c, &tags)
}

/// The consumer of `X-ConsumerId`, when one is given.
///
/// # Errors
/// 400012 when it is not a service of this tenant.
pub fn consumer<'a>(
    reg: &'a Registry,
    domain: &str,
    project: &str,
    consumer_id: Option<&str>,
) -> Result<Option<&'a ServiceEntry>, ScError> {
    match consumer_id.filter(|c| !c.is_empty()) {
        None => Ok(None),
        Some(cid) => reg.service(domain, project, cid).map(Some).map_err(|_| {
            ScError::new(SERVICE_NOT_EXISTS, format!("consumer {cid} does not exist"))
        }),
    }
}

/// Runs a find; records the dependency when a consumer is given and a provider is found.
///
/// Returns the serviceIds of the providers found (highest version first); their instances
/// are read, without copying, through [`Found`] while the registry lock is still held.
///
/// # Errors
/// 400001 bad fields; 400012 unknown consumer, no service by that name, or no exact version.
pub fn find(
    reg: &mut Registry,
    domain: &str,
    project: &str,
    q: &FindQuery,
    consumer_id: Option<&str>,
) -> Result<Vec<String>, ScError> {
    validate_find(&q.app_id, &q.service_name, &q.version)?;
    let (ids, dependency) = {
        let reg_ro: &Registry = reg;
        let consumer = consumer(reg_ro, domain, project, consumer_id)?;
        let env = consumer.map_or(q.env.as_str(), |c| c.service.environment.as_str());
        let key = (
            domain.to_string(),
            project.to_string(),
            env.to_string(),
            q.app_id.clone(),
            q.service_name.clone(),
        );
        let mut ids = reg_ro.resolve(&key, &q.version)?;
        ids.retain(|id| {
            reg_ro.tags.has_all(id, &q.tags)
                && match (consumer, reg_ro.entry(id)) {
                    (Some(c), Some(p)) => accessible(reg_ro, c, p),
                    (None, Some(_)) => true,
                    (_, None) => false,
                }
        });
        let dependency = consumer.filter(|_| !ids.is_empty()).map(|c| {
            (
                c.service.service_id.clone(),
                DependencyKey {
                    environment: key.2,
                    app_id: q.app_id.clone(),
                    service_name: q.service_name.clone(),
                    version: q.version.clone(),
                },
            )
        });
        (ids, dependency)
    };
    if let Some((cid, key)) = dependency {
        if reg.dependencies.add(&cid, key) {
            super::dependencies::mark_consumer(reg, &cid);
            reg.bump();
        }
    }
    Ok(ids)
}

/// The instances of some providers, borrowed from the registry: serializes as the JSON
/// array of their bodies (provider by provider, instances by id) without cloning them.
#[derive(Clone, Copy)]
pub struct Found<'a> {
    reg: &'a Registry,
    ids: &'a [String],
}

impl<'a> Found<'a> {
    /// The instances of the providers `ids` (as returned by [`find`]).
    pub fn new(reg: &'a Registry, ids: &'a [String]) -> Found<'a> {
        Found { reg, ids }
    }

    /// Every instance body, in reply order.
    pub fn iter(&self) -> impl Iterator<Item = &'a MicroServiceInstance> + 'a {
        let reg = self.reg;
        self.ids
            .iter()
            .filter_map(move |id| reg.entry(id))
            .flat_map(|e| e.instances.values().map(|r| &r.body))
    }
}

impl Serialize for Found<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

/// Each service's instance bodies as JSON text, kept for one registry revision: the items
/// of the `instances` array (comma-separated, no brackets), by serviceId, made on first
/// find. Every change of a service or instance bumps the revision (heartbeats change no
/// body), so a part made at the current revision is exact; at the first use after a bump
/// the whole cache is dropped (amortized over the finds that filled it). Its size is at
/// most the JSON of every instance.
#[derive(Debug, Default)]
pub struct FoundCache {
    rev: u64,
    parts: HashMap<String, Bytes>,
}

/// The JSON parts ([`FoundCache`]) of the providers `ids` that have instances, in order;
/// made (serialized from the stored bodies, nothing cloned) and kept when missing.
///
/// # Errors
/// The JSON encoder's (not expected: the bodies are plain data).
pub fn found_parts(reg: &mut Registry, ids: &[String]) -> Result<Vec<Bytes>, serde_json::Error> {
    let mut cache = std::mem::take(&mut reg.found);
    if cache.rev != reg.revision() {
        cache.parts.clear();
        cache.rev = reg.revision();
    }
    let out = fill_parts(reg, &mut cache, ids);
    reg.found = cache;
    out
}

fn fill_parts(
    reg: &Registry,
    cache: &mut FoundCache,
    ids: &[String],
) -> Result<Vec<Bytes>, serde_json::Error> {
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let Some(entry) = reg.entry(id).filter(|e| !e.instances.is_empty()) else {
            continue;
        };
        if let Some(part) = cache.parts.get(id) {
            out.push(part.clone());
            continue;
        }
        let mut buf = Vec::with_capacity(512 * entry.instances.len());
        for (n, rec) in entry.instances.values().enumerate() {
            if n > 0 {
                buf.push(b',');
            }
            serde_json::to_writer(&mut buf, &rec.body)?;
        }
        let part = Bytes::from(buf);
        cache.parts.insert(id.clone(), part.clone());
        out.push(part);
    }
    Ok(out)
}

/// The find reply of `parts` ([`found_parts`]): `{"instances":[...]}` with service-center's
/// trailing newline, `{}` when there is no instance.
pub fn found_json(parts: &[Bytes]) -> Vec<u8> {
    if parts.is_empty() {
        return b"{}\n".to_vec();
    }
    let len: usize = parts.iter().map(|p| p.len() + 1).sum();
    let mut out = Vec::with_capacity(len + 20);
    out.extend_from_slice(b"{\"instances\":[");
    for (n, part) in parts.iter().enumerate() {
        if n > 0 {
            out.push(b',');
        }
        out.extend_from_slice(part);
    }
    out.extend_from_slice(b"]}\n");
    out
}

/// The provider `service_id` as the consumer of `X-ConsumerId` sees it (reads of one
/// service's instances).
///
/// # Errors
/// 400012 unknown consumer or provider, or a provider the access check hides.
pub fn visible_provider<'a>(
    reg: &'a Registry,
    domain: &str,
    project: &str,
    service_id: &str,
    consumer_id: Option<&str>,
) -> Result<&'a ServiceEntry, ScError> {
    let consumer = consumer(reg, domain, project, consumer_id)?;
    let provider = reg.service(domain, project, service_id)?;
    if let Some(c) = consumer {
        if !accessible(reg, c, provider) {
            return Err(ScError::new(
                SERVICE_NOT_EXISTS,
                format!(
                    "provider {service_id} is not accessible to consumer {}",
                    c.service.service_id
                ),
            ));
        }
    }
    Ok(provider)
}
