//! The axum extractors of the v4 API: who the request is for (domain and project) and which
//! microservice or instance its path names, checked once here instead of in every handler.
//!
//! - [`Tenant`]: the domain from `X-Domain-Name` (default `default`, service-center HEAD's
//!   tenant default) and the path's `{project}`.
//! - [`ServiceAt`]: a [`Tenant`] and the path's `{service_id}`.
//! - [`InstanceAt`]: what [`ServiceAt`] has, and the path's `{instance_id}`.
//!
//! A path id must be 1 to 64 characters without whitespace; otherwise the request is
//! refused with 400001 naming the field, as service-center does.

use axum::extract::{FromRequestParts, RawPathParams};
use axum::http::request::Parts;

use crate::servicecenter::error::ScError;

/// The tenant of a request.
#[derive(Debug, Clone)]
pub struct Tenant {
    /// `X-Domain-Name`, default `default`.
    pub domain: String,
    /// The path's `{project}`.
    pub project: String,
}

/// A request for one microservice: its tenant and serviceId.
#[derive(Debug, Clone)]
pub struct ServiceAt {
    /// Domain and project.
    pub tenant: Tenant,
    /// The path's `{service_id}`, checked.
    pub service_id: String,
}

/// A request for one instance: its tenant, serviceId and instanceId.
#[derive(Debug, Clone)]
pub struct InstanceAt {
    /// Domain and project.
    pub tenant: Tenant,
    /// The path's `{service_id}`, checked.
    pub service_id: String,
    /// The path's `{instance_id}`, checked.
    pub instance_id: String,
}

/// A bad path id: 1-64 chars without whitespace (400001).
///
/// # Errors
/// 400001 naming `field`.
pub fn check_id(field: &str, id: &str) -> Result<(), ScError> {
    if id.is_empty() || id.chars().count() > 64 || id.chars().any(char::is_whitespace) {
        return Err(ScError::invalid(format!(
            "Invalid {field} '{id}': 1-64 chars without whitespace"
        )));
    }
    Ok(())
}

/// The tenant's domain from the headers: `X-Domain-Name`, default `default`.
pub fn domain(headers: &axum::http::HeaderMap) -> String {
    headers
        .get("x-domain-name")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .unwrap_or("default")
        .to_string()
}

/// The value of path parameter `name` (percent-decoded by axum).
async fn param<S: Send + Sync>(
    parts: &mut Parts,
    state: &S,
    name: &str,
) -> Result<String, ScError> {
    let params = RawPathParams::from_request_parts(parts, state)
        .await
        .map_err(|e| ScError::invalid(format!("Invalid path: {e}")))?;
    params
        .iter()
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
        .ok_or_else(|| ScError::invalid(format!("Invalid path: no {name}")))
}

/// A domain or project the registry cannot keep: one with a `/` (its store keys
/// `/cse-sr/.../{domain}/{project}/...` would not read back, and no `{project}` path
/// segment can name it) is refused with 400001 rather than acknowledged and lost at the
/// next restart.
///
/// # Errors
/// 400001 naming `field`.
pub fn check_tenant_part(field: &str, value: &str) -> Result<(), ScError> {
    if value.contains('/') {
        return Err(ScError::invalid(format!(
            "Invalid {field} '{value}': must not contain '/'"
        )));
    }
    Ok(())
}

impl<S: Send + Sync> FromRequestParts<S> for Tenant {
    type Rejection = ScError;

    /// # Errors
    /// 400001 for a domain or project with a `/` ([`check_tenant_part`]).
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Tenant, ScError> {
        let domain = domain(&parts.headers);
        check_tenant_part("domain (X-Domain-Name)", &domain)?;
        let project = param(parts, state, "project").await?;
        check_tenant_part("project", &project)?;
        Ok(Tenant { domain, project })
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ServiceAt {
    type Rejection = ScError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<ServiceAt, ScError> {
        let tenant = Tenant::from_request_parts(parts, state).await?;
        let service_id = param(parts, state, "service_id").await?;
        check_id("serviceId", &service_id)?;
        Ok(ServiceAt { tenant, service_id })
    }
}

impl<S: Send + Sync> FromRequestParts<S> for InstanceAt {
    type Rejection = ScError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<InstanceAt, ScError> {
        let ServiceAt { tenant, service_id } = ServiceAt::from_request_parts(parts, state).await?;
        let instance_id = param(parts, state, "instance_id").await?;
        check_id("instanceId", &instance_id)?;
        Ok(InstanceAt {
            tenant,
            service_id,
            instance_id,
        })
    }
}

/// The `scope` query parameter of the admin reads (`admin/dump`, `admin/changes`, syncer
/// extension): absent → the caller's tenant only; `all` → every tenant (the syncer's
/// `servicecenter` plugin reads the whole registry this way, as service-center 1.3.0's
/// dump always did). Who may read at all is decided before (default/default only; with
/// RBAC on, an account allowed `get` on `ops`).
///
/// # Errors
/// 400001 for any other value.
pub fn all_tenants(query: &std::collections::HashMap<String, String>) -> Result<bool, ScError> {
    match query.get("scope").map(String::as_str) {
        None | Some("") => Ok(false),
        Some("all") => Ok(true),
        Some(other) => Err(ScError::invalid(format!(
            "Invalid scope '{other}': 'all' or nothing (the caller's tenant)"
        ))),
    }
}
