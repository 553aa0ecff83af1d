//! Black and white list rules of microservices (`.../microservices/{serviceId}/rules`,
//! service-center 1.3.0 only: `server/service/rule.go`, `server/service/util/rule_util.go`).
//!
//! A provider's rules decide which consumers find it: with `WHITE` rules a consumer must
//! match one of them, with `BLACK` rules a consumer matching any of them is refused; a
//! service has rules of one type only. `attribute` names a consumer field (`ServiceId`,
//! `AppId`, `ServiceName`, `Version`, `Description`, `Level`, `Status`) or one of its tags
//! (`tag_<key>`); `pattern` is a regular expression matched against it. Main type: [`Rules`].

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::limits::{apply_quota, Quota};
use super::{MicroService, Props, Registry};
use crate::servicecenter::error::{
    ScError, BLACK_AND_WHITE_RULE, MODIFY_RULE_NOT_ALLOWED, RULE_NOT_EXISTS,
};

/// At most this many rules in one request (service-center's validator). How many a
/// service holds is the quota [`Limits::rules_per_service`](super::Limits::rules_per_service).
pub const MAX_RULES: usize = 100;

/// A rule as stored and returned.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Rule {
    /// 32 hex chars, set by the server.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub rule_id: String,
    /// `WHITE` or `BLACK`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub rule_type: String,
    /// A consumer field name or `tag_<key>`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub attribute: String,
    /// A regular expression, 1–64 chars.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub pattern: String,
    /// Free text.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Creation time, unix seconds as a string.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub timestamp: String,
    /// Last change, unix seconds as a string.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub mod_timestamp: String,
}

/// Rules per serviceId, in creation order.
#[derive(Debug, Default)]
pub struct Rules {
    by_service: HashMap<String, Vec<Rule>>,
}

impl Rules {
    /// The rules of a service (empty when none).
    pub fn of(&self, service_id: &str) -> &[Rule] {
        self.by_service.get(service_id).map_or(&[], Vec::as_slice)
    }

    /// Every service with rules (for the dump).
    pub fn all(&self) -> impl Iterator<Item = (&String, &Vec<Rule>)> {
        self.by_service.iter()
    }

    /// Sets or (`None`) removes one rule from the store; true when it changed.
    pub fn replace(&mut self, service_id: &str, rule_id: &str, rule: Option<Rule>) -> bool {
        let list = self.by_service.entry(service_id.to_string()).or_default();
        let pos = list.iter().position(|r| r.rule_id == rule_id);
        let changed = match (pos, rule) {
            (Some(i), Some(mut r)) => {
                r.rule_id = rule_id.to_string();
                let changed = list[i] != r;
                list[i] = r;
                changed
            }
            (None, Some(mut r)) => {
                r.rule_id = rule_id.to_string();
                list.push(r);
                true
            }
            (Some(i), None) => {
                list.remove(i);
                true
            }
            (None, None) => false,
        };
        if list.is_empty() {
            self.by_service.remove(service_id);
        }
        changed
    }

    /// Forgets a deleted service's rules.
    pub fn remove_service(&mut self, service_id: &str) {
        self.by_service.remove(service_id);
    }
}

const ATTRIBUTES: &[&str] = &[
    "ServiceId",
    "AppId",
    "ServiceName",
    "Version",
    "Description",
    "Level",
    "Status",
];

/// Checks one rule body (type, attribute, pattern).
///
/// # Errors
/// 400001 naming the bad field.
pub fn validate_rule(r: &Rule) -> Result<(), ScError> {
    if !matches!(r.rule_type.as_str(), "WHITE" | "BLACK") {
        return Err(ScError::invalid(format!(
            "Invalid ruleType '{}': WHITE or BLACK",
            r.rule_type
        )));
    }
    let tag_attr = r
        .attribute
        .strip_prefix("tag_")
        .is_some_and(|k| !k.is_empty());
    if !tag_attr && !ATTRIBUTES.contains(&r.attribute.as_str()) {
        return Err(ScError::invalid(format!(
            "Invalid attribute '{}': ServiceId, AppId, ServiceName, Version, Description, Level, Status or tag_<key>",
            r.attribute
        )));
    }
    let n = r.pattern.chars().count();
    if !(1..=64).contains(&n) || regex::Regex::new(&r.pattern).is_err() {
        return Err(ScError::invalid(format!(
            "Invalid pattern '{}': a regular expression of 1-64 chars",
            r.pattern
        )));
    }
    if r.description.chars().count() > 256 {
        return Err(ScError::invalid("Invalid description: up to 256 chars"));
    }
    Ok(())
}

/// The value of `attribute` for a consumer.
fn attribute_value<'a>(consumer: &'a MicroService, tags: &'a Props, attribute: &str) -> &'a str {
    match attribute {
        "ServiceId" => &consumer.service_id,
        "AppId" => &consumer.app_id,
        "ServiceName" => &consumer.service_name,
        "Version" => &consumer.version,
        "Description" => &consumer.description,
        "Level" => &consumer.level,
        "Status" => &consumer.status,
        other => other
            .strip_prefix("tag_")
            .and_then(|k| tags.get(k))
            .unwrap_or(""),
    }
}

/// Whether a consumer (with its tags) passes a provider's rules.
pub fn allows(rules: &[Rule], consumer: &MicroService, tags: &Props) -> bool {
    let Some(first) = rules.first() else {
        return true;
    };
    let matches = |r: &Rule| {
        let v = attribute_value(consumer, tags, &r.attribute);
        regex::Regex::new(&r.pattern).is_ok_and(|re| re.is_match(v))
    };
    if first.rule_type == "WHITE" {
        rules.iter().any(matches)
    } else {
        !rules.iter().any(matches)
    }
}

/// `POST .../rules`: adds rules, skipping duplicates (same attribute and pattern);
/// returns the new rule ids.
///
/// # Errors
/// 400001 bad rule, or an unknown service (a 1.3.0 quirk kept); 400020 both types;
/// 400100 more than the quota [`Limits::rules_per_service`](super::Limits::rules_per_service)
/// in all (service-center's error).
pub fn add(
    reg: &mut Registry,
    domain: &str,
    project: &str,
    service_id: &str,
    rules: Vec<Rule>,
    now_ms: i64,
) -> Result<Vec<String>, ScError> {
    if rules.is_empty() || rules.len() > MAX_RULES {
        return Err(ScError::invalid("Invalid rules: 1-100 rules"));
    }
    for r in &rules {
        validate_rule(r)?;
    }
    if reg.service(domain, project, service_id).is_err() {
        return Err(ScError::invalid(format!(
            "Invalid serviceId '{service_id}': service does not exist"
        )));
    }
    let max = reg.limits().rules_per_service;
    let current = reg
        .rules
        .by_service
        .entry(service_id.to_string())
        .or_default();
    let kind = current
        .first()
        .map_or(rules[0].rule_type.as_str(), |r| r.rule_type.as_str())
        .to_string();
    if rules.iter().any(|r| r.rule_type != kind) {
        return Err(ScError::new(
            BLACK_AND_WHITE_RULE,
            "a service's rules are all WHITE or all BLACK",
        ));
    }
    let ts = (now_ms / 1000).to_string();
    let mut ids = Vec::new();
    let mut fresh = Vec::new();
    for mut r in rules {
        let dup = current
            .iter()
            .chain(fresh.iter())
            .any(|o: &Rule| o.attribute == r.attribute && o.pattern == r.pattern);
        if dup {
            continue;
        }
        r.rule_id = uuid::Uuid::new_v4().simple().to_string();
        r.timestamp.clone_from(&ts);
        r.mod_timestamp.clone_from(&ts);
        ids.push(r.rule_id.clone());
        fresh.push(r);
    }
    if !fresh.is_empty() {
        if let Err(e) = apply_quota(Quota::Rule, max, current.len(), fresh.len()) {
            if current.is_empty() {
                reg.rules.by_service.remove(service_id);
            }
            return Err(e);
        }
    }
    current.extend(fresh);
    if current.is_empty() {
        reg.rules.by_service.remove(service_id);
    }
    for id in &ids {
        mark_rule(reg, service_id, id);
    }
    if !ids.is_empty() {
        reg.bump();
    }
    Ok(ids)
}

/// `PUT .../rules/{ruleId}`: replaces a rule's type, attribute, pattern and description.
///
/// # Errors
/// 400001 bad rule; 400012 unknown service; 400022 unknown rule; 400021 any change of
/// the rule's type (as service-center 1.3.0).
pub fn update(
    reg: &mut Registry,
    domain: &str,
    project: &str,
    service_id: &str,
    rule_id: &str,
    new: Rule,
    now_ms: i64,
) -> Result<(), ScError> {
    validate_rule(&new)?;
    reg.service(domain, project, service_id)?;
    let list = reg.rules.by_service.get_mut(service_id);
    let missing = || ScError::new(RULE_NOT_EXISTS, format!("rule {rule_id} does not exist"));
    let list = list.ok_or_else(missing)?;
    let rule = list
        .iter_mut()
        .find(|r| r.rule_id == rule_id)
        .ok_or_else(missing)?;
    // service-center 1.3.0 (`UpdateRule`): any change of type is refused, even of the
    // service's only rule (the service's rule type is that of its existing rules).
    if rule.rule_type != new.rule_type {
        return Err(ScError::new(
            MODIFY_RULE_NOT_ALLOWED,
            format!(
                "Exist multiple rules, can not change rule type. Rule type is {}",
                rule.rule_type
            ),
        ));
    }
    rule.rule_type = new.rule_type;
    rule.attribute = new.attribute;
    rule.pattern = new.pattern;
    rule.description = new.description;
    rule.mod_timestamp = (now_ms / 1000).to_string();
    mark_rule(reg, service_id, rule_id);
    reg.bump();
    Ok(())
}

/// `DELETE .../rules/{id1,id2}`: removes the rules, all or nothing.
///
/// # Errors
/// 400001 no id; 400012 unknown service; 400022 an unknown rule.
pub fn delete(
    reg: &mut Registry,
    domain: &str,
    project: &str,
    service_id: &str,
    ids: &[&str],
) -> Result<(), ScError> {
    if ids.is_empty() || ids.len() > MAX_RULES || ids.iter().any(|i| i.is_empty()) {
        return Err(ScError::invalid("Invalid rule ids: 1-100 non-empty ids"));
    }
    reg.service(domain, project, service_id)?;
    let list = reg.rules.by_service.get_mut(service_id);
    let Some(list) = list.filter(|l| ids.iter().all(|id| l.iter().any(|r| r.rule_id == *id)))
    else {
        return Err(ScError::new(RULE_NOT_EXISTS, "rule does not exist"));
    };
    list.retain(|r| !ids.contains(&r.rule_id.as_str()));
    if list.is_empty() {
        reg.rules.by_service.remove(service_id);
    }
    for id in ids {
        mark_rule(reg, service_id, id);
    }
    reg.bump();
    Ok(())
}

fn mark_rule(reg: &mut Registry, service_id: &str, rule_id: &str) {
    super::records::mark(reg, service_id, |d, p, _| {
        super::records::rule_key(d, p, service_id, rule_id)
    });
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn rule(t: &str, a: &str, p: &str) -> Rule {
        Rule {
            rule_type: t.into(),
            attribute: a.into(),
            pattern: p.into(),
            ..Rule::default()
        }
    }

    #[test]
    fn white_lists_admit_matches_and_black_lists_refuse_them() {
        let consumer = MicroService {
            service_name: "web".into(),
            app_id: "a".into(),
            ..MicroService::default()
        };
        let mut tags = Props::new();
        tags.insert("team".into(), "blue".into());
        assert!(allows(&[], &consumer, &tags));
        assert!(allows(
            &[rule("WHITE", "ServiceName", "^w")],
            &consumer,
            &tags
        ));
        assert!(!allows(
            &[rule("WHITE", "ServiceName", "^x")],
            &consumer,
            &tags
        ));
        assert!(!allows(
            &[rule("BLACK", "tag_team", "blue")],
            &consumer,
            &tags
        ));
        assert!(allows(
            &[rule("BLACK", "tag_team", "red")],
            &consumer,
            &tags
        ));
    }

    #[test]
    fn rules_are_validated_field_by_field() {
        assert!(validate_rule(&rule("WHITE", "AppId", "x")).is_ok());
        let e = validate_rule(&rule("GREY", "AppId", "x")).unwrap_err();
        assert!(e.detail.contains("ruleType"));
        let e = validate_rule(&rule("WHITE", "Colour", "x")).unwrap_err();
        assert!(e.detail.contains("attribute"));
        let e = validate_rule(&rule("WHITE", "AppId", "(")).unwrap_err();
        assert!(e.detail.contains("pattern"));
    }
}
