//! service-center's error codes and error body (`1.3.0:server/error/error.go`, go-chassis/cari
//! `rbac/error.go`): HTTP status = `errorCode / 1000`, body
//! `{"errorCode":"400012","errorMessage":"Micro-service does not exist","detail":"..."}`.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Invalid parameter(s): validation, bad JSON, bad query flags.
pub const INVALID_PARAMS: u32 = 400001;
/// Micro-service already exists: a client-chosen serviceId conflicts.
pub const SERVICE_ALREADY_EXISTS: u32 = 400010;
/// Micro-service does not exist.
pub const SERVICE_NOT_EXISTS: u32 = 400012;
/// Micro-service has deployed instance(s): non-force delete.
pub const DEPLOYED_INSTANCE: u32 = 400013;
/// Instance does not exist.
pub const INSTANCE_NOT_EXISTS: u32 = 400017;
/// Undefined schema id: a new schema id not listed in a non-editable service's `schemas`.
pub const UNDEFINED_SCHEMA_ID: u32 = 400014;
/// Not allowed to modify schema: a non-editable service's existing schema.
pub const MODIFY_SCHEMA_NOT_ALLOWED: u32 = 400015;
/// Schema does not exist.
pub const SCHEMA_NOT_EXISTS: u32 = 400016;
/// Tag does not exist: update or delete of a missing tag key.
pub const TAG_NOT_EXISTS: u32 = 400018;
/// Can not have both 'BLACK' and 'WHITE' rules on one service.
pub const BLACK_AND_WHITE_RULE: u32 = 400020;
/// Not allowed to modify the type of the rule (while the service has other rules).
pub const MODIFY_RULE_NOT_ALLOWED: u32 = 400021;
/// Rule does not exist.
pub const RULE_NOT_EXISTS: u32 = 400022;
/// Consumer(s) depends on this micro-service: non-force delete of a provider.
pub const DEPENDED_ON_BY_CONSUMER: u32 = 400023;
/// Micro-service version does not exist: existence with a fuzzy rule that matches nothing.
pub const SERVICE_VERSION_NOT_EXISTS: u32 = 400026;
/// Not enough quota (schemas, tags, rules: 100 per service).
pub const NOT_ENOUGH_QUOTA: u32 = 400100;
/// Forbidden: admin dump from a tenant other than default/default.
pub const FORBIDDEN: u32 = 403001;
/// Registry service is unavailable: the store failed a write (service-center 1.3.0
/// `ErrUnavailableBackend`, answered when etcd fails a create, register, update, delete).
pub const UNAVAILABLE_BACKEND: u32 = 500011;

// RBAC (service-center 2.x, go-chassis/cari `rbac/error.go`); see `rbac/`.

/// Account not exists.
pub const ACCOUNT_NOT_EXISTS: u32 = 400200;
/// Role not exists.
pub const ROLE_NOT_EXISTS: u32 = 400201;
/// Account has invalid role(s).
pub const ACCOUNT_HAS_INVALID_ROLE: u32 = 400202;
/// No quota to create account (`rbac::MAX_ACCOUNTS`).
pub const ACCOUNT_NO_QUOTA: u32 = 400203;
/// No quota to create role (`rbac::MAX_ROLES`).
pub const ROLE_NO_QUOTA: u32 = 400204;
/// Role is bound to some user(s).
pub const ROLE_IS_BOUND: u32 = 400205;
/// Request unauthorized: a token that is malformed, badly signed, or older than its
/// account's last password change.
pub const UNAUTHORIZED: u32 = 401201;
/// User name or password is wrong.
pub const USER_OR_PASSWORD_WRONG: u32 = 401202;
/// No authorization header.
pub const NO_AUTH_HEADER: u32 = 401204;
/// Token is expired.
pub const TOKEN_EXPIRED: u32 = 401205;
/// The account that owns the token is deleted.
pub const TOKEN_ACCOUNT_DELETED: u32 = 401206;
/// Account blocked (repeated failures, `rbac::password::Blocker`) or inactive.
pub const ACCOUNT_BLOCKED: u32 = 403201;
/// Account name is duplicated.
pub const ACCOUNT_CONFLICT: u32 = 409200;
/// Role name is duplicated.
pub const ROLE_CONFLICT: u32 = 409201;
/// Changes are no longer kept: a change-log read (`GET /v4/{project}/admin/changes`, a
/// syncer extension) whose `since` the log no longer covers; list again.
pub const CHANGES_GONE: u32 = 410001;

/// The generic message of an RBAC error code (go-chassis/cari `rbac/error.go`).
pub fn rbac_message(code: u32) -> Option<&'static str> {
    Some(match code {
        ACCOUNT_NOT_EXISTS => "Account not exists",
        ROLE_NOT_EXISTS => "Role not exists",
        ACCOUNT_HAS_INVALID_ROLE => "Account has invalid role(s)",
        ACCOUNT_NO_QUOTA => "No quota to create account",
        ROLE_NO_QUOTA => "No quota to create role",
        ROLE_IS_BOUND => "Role is bound to some user(s)",
        UNAUTHORIZED => "Request unauthorized",
        USER_OR_PASSWORD_WRONG => "User name or password is wrong",
        NO_AUTH_HEADER => "No authorization header",
        TOKEN_EXPIRED => "Token is expired",
        TOKEN_ACCOUNT_DELETED => "The account that owns the token is deleted",
        ACCOUNT_BLOCKED => "Account blocked",
        ACCOUNT_CONFLICT => "account name is duplicated",
        ROLE_CONFLICT => "role name is duplicated",
        _ => return None,
    })
}

/// The generic message service-center writes for `code` (servicecomb-notes c.2).
pub fn message(code: u32) -> &'static str {
    match code {
        400001 => "Invalid parameter(s)",
        400002 => "Server is Unhealthy",
        400010 => "Micro-service already exists",
        400012 => "Micro-service does not exist",
        400013 => "Micro-service has deployed instance(s)",
        400014 => "Undefined schema id",
        400015 => "Not allowed to modify schema",
        400016 => "Schema does not exist",
        400017 => "Instance does not exist",
        400018 => "Tag does not exist",
        400019 => "Rule already exist",
        400020 => "Can not have both 'BLACK' and 'WHITE'",
        400021 => "Not allowed to modify the type of the rule",
        400022 => "Rule does not exist",
        400023 => "Consumer(s) depends on this micro-service",
        400024 => "Access micro-service refused",
        400025 => "Endpoint is already belong to other service",
        400026 => "Micro-service version does not exist",
        400100 => "Not enough quota",
        401002 => "Request unauthorized",
        403001 => "Forbidden",
        410001 => "Changes are no longer kept",
        500011 => "Registry service is unavailable",
        500101 => "Quota service is unavailable",
        503001 => "Service unavailable",
        _ => rbac_message(code).unwrap_or("Internal server error"),
    }
}

/// service-center's error body: `{"errorCode":"400012","errorMessage":"...","detail":"..."}`.
///
/// Written with `errorCode` as a string (service-center's way) and `detail` left out when
/// empty. Read leniently: `errorCode` as a string or a number; one that is neither, or not a
/// code, reads as `None` rather than failing the body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    /// The six-digit code, e.g. 400012; `None` when absent or unreadable.
    #[serde(
        default,
        deserialize_with = "lenient_code",
        serialize_with = "code_as_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub error_code: Option<u32>,
    /// The generic message of the code ([`message`]).
    #[serde(default)]
    pub error_message: String,
    /// The specific text; empty means left out.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

impl ErrorBody {
    /// The body service-center writes for `code` and `detail`.
    pub fn new(code: u32, detail: impl Into<String>) -> ErrorBody {
        ErrorBody {
            error_code: Some(code),
            error_message: message(code).to_string(),
            detail: detail.into(),
        }
    }
}

fn lenient_code<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    Ok(match serde_json::Value::deserialize(d)? {
        serde_json::Value::String(s) => s.trim().parse().ok(),
        serde_json::Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        _ => None,
    })
}

// serde's `serialize_with` hands a reference to the field.
#[allow(clippy::ref_option, clippy::trivially_copy_pass_by_ref)]
fn code_as_string<S: Serializer>(code: &Option<u32>, s: S) -> Result<S::Ok, S::Error> {
    match code {
        Some(code) => s.serialize_str(&code.to_string()),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_is_written_with_the_code_as_a_string_and_no_empty_detail() {
        let text = serde_json::to_string(&ErrorBody::new(SERVICE_NOT_EXISTS, "")).ok();
        assert_eq!(
            text.as_deref(),
            Some(r#"{"errorCode":"400012","errorMessage":"Micro-service does not exist"}"#)
        );
    }

    #[test]
    fn codes_read_from_strings_and_numbers_and_a_bad_code_is_none() {
        let read = |text: &str| {
            serde_json::from_str::<ErrorBody>(text)
                .map(|b| b.error_code)
                .ok()
        };
        assert_eq!(read(r#"{"errorCode":"400017"}"#), Some(Some(400017)));
        assert_eq!(
            read(r#"{"errorCode":400012,"detail":"x"}"#),
            Some(Some(400012))
        );
        assert_eq!(read(r#"{"errorCode":"abc"}"#), Some(None));
        assert_eq!(read(r#"{"errorCode":null}"#), Some(None));
        assert_eq!(read(r#"{"errorCode":-1}"#), Some(None));
        assert_eq!(read("{}"), Some(None));
    }

    #[test]
    fn rbac_codes_have_their_own_messages() {
        assert_eq!(message(TOKEN_EXPIRED), "Token is expired");
        assert_eq!(message(123456), "Internal server error");
    }
}
