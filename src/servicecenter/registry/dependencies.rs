//! Consumer → provider dependency rules (`/registry/dependencies`,
//! `.../{consumerId}/providers`, `.../{providerId}/consumers`).
//!
//! A rule says "consumer C depends on the providers named (env, appId, serviceName) whose
//! version matches a rule" (service-center 1.3.0, `server/service/dependency.go`,
//! `server/service/util/dependency*.go`). Rules come from `POST`/`PUT
//! /registry/dependencies` and from a find sent with `X-ConsumerId`. The providers of a
//! consumer are resolved when asked, so a provider version created later is included, as in
//! service-center. Unlike 1.3.0 (an asynchronous queue), rules apply at once.
//! Main type: [`Dependencies`].

use std::collections::{BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use super::{MicroService, Registry};
use crate::servicecenter::error::{ScError, SERVICE_NOT_EXISTS};

/// A provider key of a dependency rule (and the consumer key of a request).
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DependencyKey {
    /// Environment; a provider takes its consumer's.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub environment: String,
    /// Application id; empty in a provider means the consumer's.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub app_id: String,
    /// Service name; `*` in a provider means every service of the consumer's environment.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub service_name: String,
    /// Exact version for a consumer; a version rule for a provider.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub version: String,
}

/// One item of a `/registry/dependencies` request.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct DependencyItem {
    /// The consumer's full key.
    pub consumer: Option<DependencyKey>,
    /// Its providers.
    pub providers: Vec<DependencyKey>,
}

/// Dependency rules per consumer serviceId.
#[derive(Debug, Default)]
pub struct Dependencies {
    by_consumer: HashMap<String, BTreeSet<DependencyKey>>,
}

impl Dependencies {
    /// The rules of a consumer.
    pub fn of(&self, consumer_id: &str) -> Option<&BTreeSet<DependencyKey>> {
        self.by_consumer.get(consumer_id)
    }

    /// Every consumer with rules (for the dump and the consumers lookup).
    pub fn all(&self) -> impl Iterator<Item = (&String, &BTreeSet<DependencyKey>)> {
        self.by_consumer.iter()
    }

    /// Adds one rule; true when it is new.
    pub fn add(&mut self, consumer_id: &str, key: DependencyKey) -> bool {
        self.by_consumer
            .entry(consumer_id.to_string())
            .or_default()
            .insert(key)
    }

    /// Sets a consumer's rules from the store (empty: none); true when they changed.
    pub fn replace(&mut self, consumer_id: &str, set: BTreeSet<DependencyKey>) -> bool {
        if set.is_empty() {
            return self.by_consumer.remove(consumer_id).is_some();
        }
        if self.by_consumer.get(consumer_id) == Some(&set) {
            return false;
        }
        self.by_consumer.insert(consumer_id.to_string(), set);
        true
    }

    /// Forgets a deleted consumer's rules.
    pub fn remove_service(&mut self, service_id: &str) {
        self.by_consumer.remove(service_id);
    }
}

/// The serviceIds a consumer's rules resolve to now, sorted, without duplicates.
pub fn providers_of(reg: &Registry, consumer_id: &str) -> Vec<String> {
    let Some(rules) = reg.dependencies.of(consumer_id) else {
        return Vec::new();
    };
    let Some(consumer) = reg.entry(consumer_id) else {
        return Vec::new();
    };
    let (domain, project) = (consumer.domain.clone(), consumer.project.clone());
    let mut out = BTreeSet::new();
    for r in rules {
        if r.service_name == "*" {
            out.extend(
                reg.all_services()
                    .filter(|e| {
                        e.domain == domain
                            && e.project == project
                            && e.service.environment == r.environment
                    })
                    .map(|e| e.service.service_id.clone()),
            );
            continue;
        }
        let key = (
            domain.to_string(),
            project.to_string(),
            r.environment.clone(),
            r.app_id.clone(),
            r.service_name.clone(),
        );
        if let Ok(ids) = reg.resolve(&key, &r.version) {
            out.extend(ids);
        }
    }
    out.into_iter().collect()
}

/// The consumers whose rules resolve to `provider_id` now, sorted.
pub fn consumers_of(reg: &Registry, provider_id: &str) -> Vec<String> {
    let mut out: Vec<String> = reg
        .dependencies
        .all()
        .filter(|(c, _)| providers_of(reg, c).iter().any(|p| p == provider_id))
        .map(|(c, _)| c.clone())
        .collect();
    out.sort();
    out
}

/// The services of `ids`, in that order, skipping the unknown ones.
pub fn services(reg: &Registry, ids: &[String]) -> Vec<MicroService> {
    ids.iter()
        .filter_map(|id| reg.entry(id).map(|e| (*e.service).clone()))
        .collect()
}

fn check_name(field: &str, v: &str, allow_star: bool) -> Result<(), ScError> {
    let b = v.as_bytes();
    let ok = (allow_star && v == "*")
        || (!b.is_empty()
            && v.chars().count() <= 128
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.')));
    if ok {
        Ok(())
    } else {
        Err(ScError::invalid(format!("Invalid {field} '{v}'")))
    }
}

/// `POST` (`replace` false: add) or `PUT` (`replace` true: overwrite) `/registry/dependencies`.
///
/// # Errors
/// 400001 bad items (1–100; consumer key with an exact version; provider version required,
/// `*` allowed as provider name; no duplicate provider); 400012 an unknown consumer.
/// Nothing is changed when an item fails.
pub fn put_rules(
    reg: &mut Registry,
    domain: &str,
    project: &str,
    items: Vec<DependencyItem>,
    replace: bool,
) -> Result<(), ScError> {
    if items.is_empty() || items.len() > 100 {
        return Err(ScError::invalid("Invalid dependencies: 1-100 items"));
    }
    let mut plan = Vec::new();
    for (n, it) in items.into_iter().enumerate() {
        let c = it.consumer.ok_or_else(|| {
            ScError::invalid(format!("Invalid dependencies[{n}].consumer: missing"))
        })?;
        check_name("consumer.appId", &c.app_id, false)?;
        check_name("consumer.serviceName", &c.service_name, false)?;
        if super::parse_version(&c.version).is_none() {
            return Err(ScError::invalid(format!(
                "Invalid consumer.version '{}': an exact version x[.y[.z[.w]]]",
                c.version
            )));
        }
        let key = (
            domain.to_string(),
            project.to_string(),
            c.environment.clone(),
            c.app_id.clone(),
            c.service_name.clone(),
        );
        let consumer_id = reg
            .resolve(&key, &c.version)
            .ok()
            .and_then(|ids| ids.into_iter().next())
            .ok_or_else(|| {
                ScError::new(
                    SERVICE_NOT_EXISTS,
                    format!(
                        "consumer {}/{}/{} does not exist",
                        c.app_id, c.service_name, c.version
                    ),
                )
            })?;
        if it.providers.is_empty() {
            return Err(ScError::invalid("Invalid providers: at least one"));
        }
        let mut set = BTreeSet::new();
        for p in it.providers {
            let app = if p.app_id.is_empty() {
                c.app_id.clone()
            } else {
                p.app_id
            };
            check_name("provider.appId", &app, false)?;
            check_name("provider.serviceName", &p.service_name, true)?;
            let name = if p.service_name == "*" {
                "x"
            } else {
                p.service_name.as_str()
            };
            {
                super::validate_find(&app, name, &p.version).map_err(|_| {
                    ScError::invalid(format!(
                        "Invalid provider.version '{}': latest, x.y.z, x.y.z+ or a-b",
                        p.version
                    ))
                })?;
            }
            let rule = DependencyKey {
                environment: c.environment.clone(),
                app_id: app,
                service_name: p.service_name,
                version: p.version,
            };
            if !set.insert(rule.clone()) {
                return Err(ScError::invalid(format!(
                    "Invalid providers: {}/{} given twice",
                    rule.app_id, rule.service_name
                )));
            }
        }
        plan.push((consumer_id, set));
    }
    for (consumer_id, set) in plan {
        let slot = reg
            .dependencies
            .by_consumer
            .entry(consumer_id.clone())
            .or_default();
        if replace {
            *slot = set;
        } else {
            slot.extend(set);
        }
        mark_consumer(reg, &consumer_id);
    }
    reg.bump();
    Ok(())
}

/// Notes a consumer's dependency rules for the store.
pub(crate) fn mark_consumer(reg: &mut Registry, consumer_id: &str) {
    super::records::mark(reg, consumer_id, super::records::dep_key);
}
