//! Validation of microservice and instance bodies and find queries, with service-center's
//! rules (servicecomb-notes part d), and version rules.

use super::*;

/// Parses `x[.y[.z[.w]]]`, each part 0–32767.
pub fn parse_version(v: &str) -> Option<[u16; 4]> {
    let mut out = [0u16; 4];
    for (n, part) in v.split('.').enumerate() {
        if n == 4 || part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let x: u32 = part.parse().ok()?;
        if x > 32767 {
            return None;
        }
        out[n] = u16::try_from(x).ok()?;
    }
    Some(out)
}

pub(super) fn name_ok(s: &str, allow_colon: bool) -> bool {
    let b = s.as_bytes();
    if b.iter().all(|c| c.is_ascii_alphanumeric()) {
        return true;
    }
    let inner_ok = |c: &u8| {
        c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.') || (allow_colon && *c == b':')
    };
    b.len() >= 2
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(inner_ok)
}

pub(super) fn chars(s: &str) -> usize {
    s.chars().count()
}

pub(super) fn check(ok: bool, detail: impl FnOnce() -> String) -> Result<(), ScError> {
    if ok {
        Ok(())
    } else {
        Err(ScError::invalid(detail()))
    }
}

pub(super) fn env_ok(env: &str) -> bool {
    // The upstream regex is `^((development|testing|acceptance|production)*)$`.
    let mut rest = env;
    while !rest.is_empty() {
        let next = ["development", "testing", "acceptance", "production"]
            .iter()
            .find_map(|w| rest.strip_prefix(w));
        match next {
            Some(r) => rest = r,
            None => return false,
        }
    }
    true
}

/// Checks a microservice body at create (servicecomb-notes part d).
///
/// # Errors
/// 400001 naming the first bad field.
pub fn validate_service(s: &MicroService) -> Result<(), ScError> {
    check(
        (1..=128).contains(&chars(&s.service_name)) && name_ok(&s.service_name, false),
        || {
            format!(
                "Invalid serviceName '{}': 1-128 chars, letters, digits and inner '_-.'",
                s.service_name
            )
        },
    )?;
    check(chars(&s.app_id) <= 160 && name_ok(&s.app_id, false), || {
        format!(
            "Invalid appId '{}': up to 160 chars, letters, digits and inner '_-.'",
            s.app_id
        )
    })?;
    check(
        chars(&s.version) <= 64 && parse_version(&s.version).is_some(),
        || {
            format!(
                "Invalid version '{}': x[.y[.z[.w]]], each part 0-32767",
                s.version
            )
        },
    )?;
    // No `/` either (a syncer limit; service-center takes it and cannot read the keys of
    // the service's tags, rules and schemas back): every store key holds the serviceId.
    check(
        chars(&s.service_id) <= 64 && !s.service_id.chars().any(|c| c.is_whitespace() || c == '/'),
        || "Invalid serviceId: up to 64 chars without whitespace or '/'".to_string(),
    )?;
    check(env_ok(&s.environment), || {
        format!("Invalid environment '{}'", s.environment)
    })?;
    check(
        matches!(s.level.as_str(), "FRONT" | "MIDDLE" | "BACK"),
        || format!("Invalid level '{}': FRONT, MIDDLE or BACK", s.level),
    )?;
    check(matches!(s.status.as_str(), "UP" | "DOWN"), || {
        format!("Invalid status '{}': UP or DOWN", s.status)
    })?;
    check(chars(&s.description) <= 256, || {
        "Invalid description: up to 256 chars".to_string()
    })?;
    check(
        chars(&s.alias) <= 128
            && s.alias
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.' | b':')),
        || format!("Invalid alias '{}'", s.alias),
    )?;
    check(s.schemas.len() <= 100, || {
        "Invalid schemas: at most 100".to_string()
    })?;
    for id in &s.schemas {
        check((1..=160).contains(&chars(id)) && name_ok(id, false), || {
            format!("Invalid schemas item '{id}'")
        })?;
    }
    if let Some(f) = &s.framework {
        check(chars(&f.name) <= 64 && name_ok(&f.name, false), || {
            format!("Invalid framework.name '{}'", f.name)
        })?;
        check(chars(&f.version) <= 64, || {
            "Invalid framework.version: up to 64 chars".to_string()
        })?;
    }
    Ok(())
}

/// Checks an instanceId as service-center 1.3.0 does at registration and on a heartbeat
/// (`instanceIdRule`: up to 64 chars of `[A-Za-z0-9_.-]`; empty passes, a registration
/// then gets a generated one).
///
/// # Errors
/// 400001 naming the id.
pub fn check_instance_id(id: &str) -> Result<(), ScError> {
    check(
        chars(id) <= 64
            && id
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.')),
        || format!("Invalid instanceId '{id}': up to 64 chars of [A-Za-z0-9_.-]"),
    )
}

/// Checks an instance body at registration (servicecomb-notes part d).
///
/// # Errors
/// 400001 naming the first bad field.
pub fn validate_instance(i: &MicroServiceInstance) -> Result<(), ScError> {
    check_instance_id(&i.instance_id)?;
    check(
        (1..=64).contains(&chars(&i.host_name)) && !i.host_name.trim().is_empty(),
        || "Invalid hostName: 1-64 chars, not blank".to_string(),
    )?;
    for e in &i.endpoints {
        check(!e.trim().is_empty(), || {
            "Invalid endpoints: blank item".to_string()
        })?;
    }
    check(
        matches!(
            i.status.as_str(),
            "UP" | "DOWN" | "STARTING" | "TESTING" | "OUTOFSERVICE"
        ),
        || {
            format!(
                "Invalid status '{}': UP, DOWN, STARTING, TESTING or OUTOFSERVICE",
                i.status
            )
        },
    )?;
    if let Some(hc) = &i.health_check {
        check(matches!(hc.mode.as_str(), "push" | "pull"), || {
            format!("Invalid healthCheck.mode '{}': push or pull", hc.mode)
        })?;
        check((0..=65535).contains(&hc.port), || {
            format!("Invalid healthCheck.port {}", hc.port)
        })?;
        check(hc.interval >= 1, || {
            format!("Invalid healthCheck.interval {}: must be >= 1", hc.interval)
        })?;
        check(hc.times >= 0, || {
            format!("Invalid healthCheck.times {}: must be >= 0", hc.times)
        })?;
        let ttl = hc.interval.saturating_mul(hc.times.saturating_add(1));
        check(ttl > 0 && ttl < i64::from(i32::MAX), || {
            "Invalid healthCheck: interval * (times + 1) out of range".to_string()
        })?;
        check(!hc.url.chars().any(char::is_whitespace), || {
            "Invalid healthCheck.url: contains whitespace".to_string()
        })?;
    }
    if let Some(dc) = &i.data_center_info {
        for (field, v) in [
            ("name", &dc.name),
            ("region", &dc.region),
            ("availableZone", &dc.available_zone),
        ] {
            check(
                (1..=128).contains(&chars(v))
                    && v.bytes()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.')),
                || format!("Invalid dataCenterInfo.{field} '{v}'"),
            )?;
        }
    }
    Ok(())
}

/// Checks the find/existence query fields (appId 1–160, serviceName 1–289 with `:`, a version rule).
///
/// # Errors
/// 400001 naming the first bad field.
pub fn validate_find(app_id: &str, service_name: &str, version: &str) -> Result<(), ScError> {
    check(
        (1..=160).contains(&chars(app_id)) && name_ok(app_id, false),
        || format!("Invalid appId '{app_id}'"),
    )?;
    check(
        (1..=289).contains(&chars(service_name)) && name_ok(service_name, true),
        || format!("Invalid serviceName '{service_name}'"),
    )?;
    check(
        (1..=129).contains(&chars(version)) && VersionRule::parse(version).is_some(),
        || format!("Invalid version '{version}': latest, x.y.z, x.y.z+ or a-b"),
    )?;
    Ok(())
}

/// A version rule of find/existence (`1.3.0:server/service/util/versionrule.go`).
#[derive(Debug, Clone, PartialEq)]
pub(super) enum VersionRule {
    Latest,
    AtLeast([u16; 4]),
    Range([u16; 4], [u16; 4]),
    Exact(String),
}

impl VersionRule {
    pub(super) fn parse(v: &str) -> Option<VersionRule> {
        if v == "latest" {
            return Some(VersionRule::Latest);
        }
        if let Some(a) = v.strip_suffix('+') {
            return parse_version(a).map(VersionRule::AtLeast);
        }
        if let Some((a, b)) = v.split_once('-') {
            let (a, b) = (parse_version(a)?, parse_version(b)?);
            return Some(if a > b {
                VersionRule::Range(b, a)
            } else {
                VersionRule::Range(a, b)
            });
        }
        parse_version(v).map(|_| VersionRule::Exact(v.to_string()))
    }
}
