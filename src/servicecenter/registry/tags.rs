//! Tags of microservices (`/v4/{project}/registry/microservices/{serviceId}/tags`).
//!
//! A service's tags are a string map, merged by `POST`, one key replaced by `PUT`, keys
//! removed all-or-nothing by `DELETE` (service-center 1.3.0,
//! `server/service/tag.go`). Find's `tags=a,b` keeps the providers that carry every listed
//! key, whatever its value. Main type: [`Tags`].

use std::collections::HashMap;

use super::limits::{apply_quota, Quota};
use super::{Props, Registry};
use crate::servicecenter::error::{ScError, TAG_NOT_EXISTS};

/// At most this many tags in one request (service-center's validator). How many a service
/// holds is the quota [`Limits::tags_per_service`](super::Limits::tags_per_service).
pub const MAX_TAGS: usize = 100;

/// Tags per serviceId.
#[derive(Debug, Default)]
pub struct Tags {
    by_service: HashMap<String, Props>,
}

impl Tags {
    /// The tags of a service (empty when none).
    pub fn of(&self, service_id: &str) -> Props {
        self.by_service.get(service_id).cloned().unwrap_or_default()
    }

    /// Whether the service carries every key of `keys`.
    pub fn has_all(&self, service_id: &str, keys: &[String]) -> bool {
        if keys.is_empty() {
            return true;
        }
        let Some(t) = self.by_service.get(service_id) else {
            return false;
        };
        keys.iter().all(|k| t.contains_key(k))
    }

    /// Every service with tags, by serviceId (for the dump).
    pub fn all(&self) -> impl Iterator<Item = (&String, &Props)> {
        self.by_service.iter()
    }

    /// Sets a service's tags from the store (empty: none); true when they changed.
    pub fn replace(&mut self, service_id: &str, tags: Props) -> bool {
        if tags.is_empty() {
            return self.by_service.remove(service_id).is_some();
        }
        if self.by_service.get(service_id) == Some(&tags) {
            return false;
        }
        self.by_service.insert(service_id.to_string(), tags);
        true
    }

    /// Forgets a deleted service's tags.
    pub fn remove_service(&mut self, service_id: &str) {
        self.by_service.remove(service_id);
    }
}

fn mark_tags(reg: &mut Registry, service_id: &str) {
    super::records::mark(reg, service_id, |d, p, _| {
        super::records::tags_key(d, p, service_id)
    });
}

/// `^[a-zA-Z][a-zA-Z0-9_\-.]{0,63}$`, the rule for tag keys and values.
pub fn tag_ok(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && b[0].is_ascii_alphabetic()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.'))
}

/// Checks a tag map to add: 1–100 entries, keys and values [`tag_ok`].
///
/// # Errors
/// 400001 naming the bad key or value.
pub fn validate_tags(tags: &Props) -> Result<(), ScError> {
    if tags.is_empty() || tags.len() > MAX_TAGS {
        return Err(ScError::invalid("Invalid tags: 1-100 entries"));
    }
    for (k, v) in tags {
        if !tag_ok(k) {
            return Err(ScError::invalid(format!(
                "Invalid tags key '{k}': a letter then up to 63 of [a-zA-Z0-9_-.]"
            )));
        }
        if !tag_ok(v) {
            return Err(ScError::invalid(format!(
                "Invalid tags value '{v}' of key '{k}': a letter then up to 63 of [a-zA-Z0-9_-.]"
            )));
        }
    }
    Ok(())
}

/// `POST .../tags`: merges `tags` into the service's tags.
///
/// # Errors
/// 400001 bad tags; 400012 unknown service; 400100 more than the quota
/// [`Limits::tags_per_service`](super::Limits::tags_per_service) in all (service-center's
/// error).
pub fn add(
    reg: &mut Registry,
    domain: &str,
    project: &str,
    service_id: &str,
    tags: Props,
) -> Result<(), ScError> {
    validate_tags(&tags)?;
    reg.service(domain, project, service_id)?;
    let max = reg.limits().tags_per_service;
    let current = reg
        .tags
        .by_service
        .entry(service_id.to_string())
        .or_default();
    let added = tags.keys().filter(|k| !current.contains_key(k)).count();
    if added > 0 {
        if let Err(e) = apply_quota(Quota::Tag, max, current.len(), added) {
            if current.is_empty() {
                reg.tags.by_service.remove(service_id);
            }
            return Err(e);
        }
    }
    current.extend(tags);
    mark_tags(reg, service_id);
    reg.bump();
    Ok(())
}

/// `PUT .../tags/{key}?value=`: replaces the value of an existing key.
///
/// # Errors
/// 400001 bad key or value; 400012 unknown service; 400018 the key is not set.
pub fn update(
    reg: &mut Registry,
    domain: &str,
    project: &str,
    service_id: &str,
    key: &str,
    value: &str,
) -> Result<(), ScError> {
    if !tag_ok(key) {
        return Err(ScError::invalid(format!("Invalid tag key '{key}'")));
    }
    if !tag_ok(value) {
        return Err(ScError::invalid(format!(
            "Invalid value '{value}' of tag '{key}'"
        )));
    }
    reg.service(domain, project, service_id)?;
    let tags = reg
        .tags
        .by_service
        .get_mut(service_id)
        .filter(|t| t.contains_key(key))
        .ok_or_else(|| ScError::new(TAG_NOT_EXISTS, format!("tag {key} does not exist")))?;
    tags.insert(key.to_string(), value.to_string());
    mark_tags(reg, service_id);
    reg.bump();
    Ok(())
}

/// `DELETE .../tags/{k1,k2}`: removes the keys, all or nothing.
///
/// # Errors
/// 400001 no key or more than 100; 400012 unknown service; 400018 a key is not set.
pub fn delete(
    reg: &mut Registry,
    domain: &str,
    project: &str,
    service_id: &str,
    keys: &[&str],
) -> Result<(), ScError> {
    if keys.is_empty() || keys.len() > MAX_TAGS || keys.iter().any(|k| k.is_empty()) {
        return Err(ScError::invalid("Invalid tag keys: 1-100 non-empty keys"));
    }
    reg.service(domain, project, service_id)?;
    let current = reg.tags.by_service.get_mut(service_id);
    let missing = keys
        .iter()
        .find(|k| !current.as_ref().is_some_and(|t| t.contains_key(k)));
    if let Some(k) = missing {
        return Err(ScError::new(
            TAG_NOT_EXISTS,
            format!("tag {k} does not exist"),
        ));
    }
    if let Some(t) = current {
        for k in keys {
            t.remove(k);
        }
        if t.is_empty() {
            reg.tags.by_service.remove(service_id);
        }
    }
    mark_tags(reg, service_id);
    reg.bump();
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn tag_keys_and_values_must_start_with_a_letter() {
        assert!(tag_ok("a") && tag_ok("env-1.x_y"));
        assert!(!tag_ok("1.0") && !tag_ok("") && !tag_ok("a b"));
        assert!(!tag_ok(&"a".repeat(65)));
    }
}
