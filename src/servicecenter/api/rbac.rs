//! The RBAC routes (`/v4/token`, `/v4/accounts...`, `/v4/roles...`) and the guard every
//! request of a core with RBAC on passes ([`guard`]).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::Digest;

use super::body::{decode, empty, json};
use crate::servicecenter::core::Core;
use crate::servicecenter::error::{ScError, FORBIDDEN};
use crate::servicecenter::registry::rbac;
use crate::servicecenter::registry::rbac::password;
use crate::servicecenter::registry::rbac::{
    verb, AccountView, Guard, Resource, Role, ACCOUNT_BLOCKED, ACCOUNT_CONFLICT,
    ACCOUNT_NOT_EXISTS, ADMIN, DEFAULT_TOKEN_TTL, MAX_TOKEN_TTL, NO_AUTH_HEADER, ROLE_NOT_EXISTS,
    USER_OR_PASSWORD_WRONG,
};

/// How long a login or basic auth waits for a free hashing slot before 503.
const HASH_WAIT: Duration = Duration::from_secs(10);

/// The account a request was authenticated as (a request extension set by [`guard`]).
#[derive(Debug, Clone)]
pub struct Caller {
    /// Account name.
    pub name: String,
    /// Its current roles.
    pub roles: Vec<String>,
}

/// The RBAC routes (merged into the core's router only when RBAC is on).
pub fn routes(core: Core) -> Router {
    Router::new()
        .route("/v4/token", post(token))
        .route("/v4/accounts", get(list_accounts).post(create_account))
        .route(
            "/v4/accounts/{name}",
            get(get_account).delete(delete_account),
        )
        .route("/v4/accounts/{name}/password", post(change_password))
        .route("/v4/roles", get(list_roles).post(create_role))
        .route(
            "/v4/roles/{name}",
            get(get_role).put(update_role).delete(delete_role),
        )
        .with_state(core)
}

/// What a request needs.
#[derive(Debug, PartialEq, Eq)]
enum Need {
    /// Nothing: the token route, version (`/version` too) and health.
    Open,
    /// An authenticated caller (changing a password: the handler decides).
    Caller,
    /// A caller allowed `verb` on a resource.
    Allowed(Resource, &'static str),
}

fn classify(method: &Method, path: &str, query: Option<&str>) -> Need {
    let verb = verb(method);
    if path == "/v4/token" || path == "/version" {
        return Need::Open;
    }
    if path == "/v4/accounts" || path.starts_with("/v4/accounts/") {
        if path.ends_with("/password") && path.matches('/').count() == 4 {
            return Need::Caller;
        }
        return Need::Allowed(Resource::Account, verb);
    }
    if path == "/v4/roles" || path.starts_with("/v4/roles/") {
        return Need::Allowed(Resource::Role, verb);
    }
    // "/v4/{project}/{area}/{p4}/{p5}/{p6}...", without allocating.
    let mut parts = path.trim_end_matches('/').split('/').skip(1);
    let (v4, area) = (parts.next(), parts.nth(1));
    let (p4, p5, p6) = (parts.next(), parts.next(), parts.next());
    if v4 == Some("v4") {
        match (area, p4) {
            (Some("registry"), Some("version" | "health")) if p5.is_none() => return Need::Open,
            (Some("registry"), Some("instances")) if p5 == Some("action") => {
                let register = query.is_some_and(|q| {
                    form_pairs(q).any(|(k, v)| k == "type" && v.eq_ignore_ascii_case("register"))
                });
                return Need::Allowed(Resource::Service, if register { "create" } else { "get" });
            }
            (Some("registry"), Some("microservices")) if p6 == Some("schemas") => {
                return Need::Allowed(Resource::Schema, verb)
            }
            (Some("govern"), _) => return Need::Allowed(Resource::Governance, verb),
            (Some("admin"), _) => return Need::Allowed(Resource::Ops, verb),
            _ => {}
        }
    }
    Need::Allowed(Resource::Service, verb)
}

fn form_pairs(q: &str) -> impl Iterator<Item = (&str, &str)> {
    q.split('&').filter_map(|kv| {
        let mut it = kv.splitn(2, '=');
        Some((it.next()?, it.next().unwrap_or("")))
    })
}

/// The client's IP, from the listener's connect info (`listener::http` serves both HTTP and
/// HTTPS with a `SocketAddr`).
fn client_ip(ext: &axum::http::Extensions) -> Option<IpAddr> {
    ext.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip())
}

/// The guard: authenticates the caller (bearer token; basic auth too on `/eureka`) and
/// checks the caller's roles allow the request. See the module docs for the codes.
pub async fn guard(State(core): State<Core>, mut req: Request, next: Next) -> Response {
    let Some(rbac) = core.rbac.clone() else {
        return next.run(req).await;
    };
    let path = req.uri().path();
    let eureka = path == "/eureka" || path.starts_with("/eureka/");
    // The status page and the metrics take basic auth too: a browser asks for it, and
    // Prometheus can send it (a token expires).
    let basic = eureka || path == "/" || path == "/metrics";
    // A browser opening the status page is asked for basic auth, as a Eureka client is.
    let realm = if eureka {
        Some("Basic realm=\"eureka\"")
    } else if path == "/" {
        Some("Basic realm=\"service-center core\"")
    } else {
        None
    };
    let need = classify(req.method(), path, req.uri().query());
    if need == Need::Open {
        return next.run(req).await;
    }
    let ip = client_ip(req.extensions());
    match admit(&core, &rbac, req.headers(), basic, ip, &need).await {
        Ok(caller) => {
            if let Some(caller) = caller {
                req.extensions_mut().insert(caller);
            }
            next.run(req).await
        }
        Err(e) => refuse(e, realm),
    }
}

/// `e` as a response; a 401 asks for basic auth in `realm` when there is one.
fn refuse(e: ScError, realm: Option<&'static str>) -> Response {
    let unauthorized = e.status() == StatusCode::UNAUTHORIZED;
    let mut resp = e.into_response();
    if let Some(realm) = realm.filter(|_| unauthorized) {
        resp.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(realm));
    }
    resp
}

/// 403001 naming the account, its roles, the verb and the resource.
fn no_permission(name: &str, roles: &[String], resource: Resource, verb: &str) -> ScError {
    ScError::new(
        FORBIDDEN,
        format!(
            "no permission: account {name} (roles {}) may not {verb} {}",
            roles.join(","),
            resource.name()
        ),
    )
}

/// Authenticates the request and checks `need`; returns the caller when the handler needs
/// it ([`Need::Caller`]).
async fn admit(
    core: &Core,
    rbac: &Arc<Guard>,
    headers: &HeaderMap,
    basic_allowed: bool,
    ip: Option<IpAddr>,
    need: &Need,
) -> Result<Option<Caller>, ScError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| {
            ScError::new(
                NO_AUTH_HEADER,
                if basic_allowed {
                    "send HTTP basic auth of an account, or Authorization: Bearer <token>"
                } else {
                    "send Authorization: Bearer <token> (POST /v4/token gives one)"
                },
            )
        })?;
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    if scheme.eq_ignore_ascii_case("bearer") {
        let verified = rbac::verify_signature(|| core.lock().rbac.keys(), rbac, rest.trim())?;
        // One lock: the account behind the token, and its permission.
        let reg = core.lock();
        let account = reg.rbac.account_of(&verified)?;
        return match need {
            Need::Allowed(resource, verb) => {
                if reg.rbac.allowed(&account.roles, *resource, verb) {
                    Ok(None)
                } else {
                    Err(no_permission(
                        &account.name,
                        &account.roles,
                        *resource,
                        verb,
                    ))
                }
            }
            Need::Caller | Need::Open => Ok(Some(Caller {
                name: account.name.clone(),
                roles: account.roles.clone(),
            })),
        };
    }
    if basic_allowed && scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| ScError::new(rbac::UNAUTHORIZED, "malformed basic auth"))?;
        let (name, pw) = decoded
            .split_once(':')
            .ok_or_else(|| ScError::new(rbac::UNAUTHORIZED, "malformed basic auth"))?;
        let roles = check_password(core, rbac, name, pw, ip, true).await?;
        if let Need::Allowed(resource, verb) = need {
            if !core.lock().rbac.allowed(&roles, *resource, verb) {
                return Err(no_permission(name, &roles, *resource, verb));
            }
        }
        return Ok(Some(Caller {
            name: name.to_string(),
            roles,
        }));
    }
    Err(ScError::new(
        rbac::UNAUTHORIZED,
        "unsupported authorization scheme: use Bearer",
    ))
}

/// Checks `name`'s password (lockout, hashing limit, basic auth cache when `cache`);
/// returns the account's roles.
async fn check_password(
    core: &Core,
    rbac: &Arc<Guard>,
    name: &str,
    pw: &str,
    ip: Option<IpAddr>,
    cache: bool,
) -> Result<Vec<String>, ScError> {
    if name.is_empty() || pw.is_empty() || pw.len() > 256 || name.len() > 256 {
        return Err(ScError::new(USER_OR_PASSWORD_WRONG, ""));
    }
    if rbac.blocker.is_blocked(name, ip) {
        return Err(ScError::new(
            ACCOUNT_BLOCKED,
            "too many failed attempts from this address; try again in an hour",
        ));
    }
    let fingerprint: [u8; 32] = {
        let mut h = sha2::Sha256::new();
        h.update(rbac.cache_salt);
        h.update(pw.as_bytes());
        h.finalize().into()
    };
    // Basic auth comes with every Eureka request: a password verified before is compared by
    // its salted digest, without a hash or a copy of the account.
    if cache {
        let cached = rbac
            .basic_cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .filter(|(f, _)| *f == fingerprint)
            .map(|(_, hash)| hash.clone());
        if let Some(hash) = cached {
            let reg = core.lock();
            if let Some(a) = reg.rbac.account(name).filter(|a| *a.password == *hash) {
                return active(a);
            }
        }
    }
    let stored: Option<Arc<str>> = core
        .lock()
        .rbac
        .account(name)
        .map(|a| Arc::from(a.password.as_str()));
    let permit = tokio::time::timeout(HASH_WAIT, rbac.hashing.acquire())
        .await
        .map_err(|_| ScError::new(503001, "too many logins at once; retry later"))?
        .map_err(|_| ScError::new(503001, "shutting down"))?;
    let pw_owned = pw.to_string();
    // An unknown account is checked against a dummy hash: a miss takes as long as a wrong
    // password.
    let checked = stored.clone();
    let ok = tokio::task::spawn_blocking(move || match checked.as_deref() {
        Some(hash) => password::verify(hash, &pw_owned),
        None => password::verify(password::dummy_hash(), &pw_owned),
    })
    .await
    .unwrap_or(false);
    drop(permit);
    match stored {
        Some(hash) if ok => {
            rbac.blocker.succeed(name, ip);
            if cache {
                let mut c = rbac.basic_cache.lock().unwrap_or_else(|e| e.into_inner());
                if c.len() >= rbac::MAX_ACCOUNTS {
                    c.clear();
                }
                c.insert(name.to_string(), (fingerprint, hash));
            }
            let reg = core.lock();
            let a = reg
                .rbac
                .account(name)
                .ok_or_else(|| ScError::new(USER_OR_PASSWORD_WRONG, ""))?;
            active(a)
        }
        _ => {
            let blocked = rbac.blocker.fail(name, ip);
            tracing::info!(account = name, ip = ?ip, blocked, "RBAC: wrong user name or password");
            Err(ScError::new(USER_OR_PASSWORD_WRONG, ""))
        }
    }
}

fn active(a: &rbac::Account) -> Result<Vec<String>, ScError> {
    if a.status == "inactive" {
        return Err(ScError::new(ACCOUNT_BLOCKED, "the account is inactive"));
    }
    Ok(a.roles.clone())
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct AccountRequest {
    name: String,
    password: String,
    roles: Vec<String>,
    /// Deprecated single role (service-center 2.0).
    role: String,
    token_expiration_time: String,
    current_password: String,
    status: String,
}

#[derive(Serialize)]
struct TokenReply {
    token: String,
}

/// `"90s"`, `"15m"`, `"2h"` → a duration of 1 s to [`MAX_TOKEN_TTL`].
///
/// # Errors
/// 400001 for anything else.
pub fn parse_ttl(s: &str) -> Result<Duration, ScError> {
    if s.is_empty() {
        return Ok(DEFAULT_TOKEN_TTL);
    }
    let bad = || {
        ScError::invalid(format!(
            "tokenExpirationTime {s:?}: use a number with s, m or h, from 1s to 24h"
        ))
    };
    let Some((last, _)) = s.char_indices().last() else {
        return Err(bad());
    };
    let (n, unit) = s.split_at(last);
    let n: u64 = n.parse().map_err(|_| bad())?;
    let secs = match unit {
        "s" => n,
        "m" => n.checked_mul(60).ok_or_else(bad)?,
        "h" => n.checked_mul(3600).ok_or_else(bad)?,
        _ => return Err(bad()),
    };
    let ttl = Duration::from_secs(secs);
    if secs == 0 || ttl > MAX_TOKEN_TTL {
        return Err(bad());
    }
    Ok(ttl)
}

/// `POST /v4/token`: `{"name","password","tokenExpirationTime"?}` → `{"token"}`.
async fn token(
    State(core): State<Core>,
    ext: axum::http::Extensions,
    body: Bytes,
) -> Result<Response, ScError> {
    let Some(rbac) = core.rbac.clone() else {
        return Err(ScError::invalid("RBAC is off on this core"));
    };
    let req: AccountRequest = decode(&body)?;
    if req.name.is_empty() || req.password.is_empty() {
        return Err(ScError::invalid("name and password are required"));
    }
    let ttl = if req.token_expiration_time.is_empty() {
        rbac.token_ttl
    } else {
        parse_ttl(&req.token_expiration_time)?
    };
    let ip = client_ip(&ext);
    check_password(&core, &rbac, &req.name, &req.password, ip, false).await?;
    let token = core.lock().issue_token(&req.name, ttl)?;
    tracing::info!(account = %req.name, ttl_s = ttl.as_secs(), "RBAC: token issued");
    Ok(json(&TokenReply { token }))
}

#[derive(Serialize)]
struct Listing<T> {
    total: usize,
    data: Vec<T>,
}

async fn list_accounts(State(core): State<Core>) -> Response {
    let reg = core.lock();
    let data: Vec<AccountView> = reg.rbac.accounts().into_iter().map(Into::into).collect();
    json(&Listing {
        total: data.len(),
        data,
    })
}

async fn get_account(
    State(core): State<Core>,
    Path(name): Path<String>,
) -> Result<Response, ScError> {
    let reg = core.lock();
    let a = reg
        .rbac
        .account(&name)
        .ok_or_else(|| ScError::new(ACCOUNT_NOT_EXISTS, format!("account {name}")))?;
    Ok(json(&AccountView::from(a)))
}

async fn hash_limited(core: &Core, pw: &str) -> Result<String, ScError> {
    let rbac = core
        .rbac
        .clone()
        .ok_or_else(|| ScError::invalid("RBAC is off on this core"))?;
    let _permit = tokio::time::timeout(HASH_WAIT, rbac.hashing.acquire())
        .await
        .map_err(|_| ScError::new(503001, "too many password changes at once; retry later"))?
        .map_err(|_| ScError::new(503001, "shutting down"))?;
    let pw = pw.to_string();
    tokio::task::spawn_blocking(move || password::hash(&pw))
        .await
        .map_err(|e| ScError::new(500003, format!("hashing: {e}")))?
}

async fn create_account(State(core): State<Core>, body: Bytes) -> Result<Response, ScError> {
    let mut req: AccountRequest = decode(&body)?;
    rbac::check_name("account name", &req.name)?;
    password::check(&req.name, &req.password)?;
    if req.roles.is_empty() && !req.role.is_empty() {
        req.roles.push(std::mem::take(&mut req.role));
    }
    let status = match req.status.as_str() {
        "" | "active" => "active",
        "inactive" => "inactive",
        other => {
            return Err(ScError::invalid(format!(
                "status {other:?}: use active or inactive"
            )))
        }
    };
    // Cheap refusals before the expensive hash.
    {
        let reg = core.lock();
        if reg.rbac.account(&req.name).is_some() {
            return Err(ScError::new(
                ACCOUNT_CONFLICT,
                format!("account {}", req.name),
            ));
        }
    }
    let hash = hash_limited(&core, &req.password).await?;
    core.lock()
        .create_account(&req.name, hash, req.roles, status)?;
    tracing::info!(account = %req.name, "RBAC: account created");
    Ok(empty())
}

async fn delete_account(
    State(core): State<Core>,
    Path(name): Path<String>,
) -> Result<Response, ScError> {
    core.lock().delete_account(&name)?;
    if let Some(rbac) = &core.rbac {
        rbac.basic_cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&name);
    }
    tracing::info!(account = %name, "RBAC: account deleted");
    Ok(empty())
}

/// `POST /v4/accounts/{name}/password`: yourself with `currentPassword`, or anyone's as an
/// `admin`. Tokens issued before are refused afterwards.
async fn change_password(
    State(core): State<Core>,
    Path(name): Path<String>,
    caller: Option<Extension<Caller>>,
    ext: axum::http::Extensions,
    body: Bytes,
) -> Result<Response, ScError> {
    let Some(rbac) = core.rbac.clone() else {
        return Err(ScError::invalid("RBAC is off on this core"));
    };
    let Some(Extension(caller)) = caller else {
        return Err(ScError::new(NO_AUTH_HEADER, ""));
    };
    let req: AccountRequest = decode(&body)?;
    password::check(&name, &req.password)?;
    if core.lock().rbac.account(&name).is_none() {
        return Err(ScError::new(ACCOUNT_NOT_EXISTS, format!("account {name}")));
    }
    if caller.name == name {
        if req.current_password.is_empty() {
            return Err(ScError::invalid("currentPassword is required"));
        }
        if req.current_password == req.password {
            return Err(ScError::invalid(
                "the new password must differ from the current one",
            ));
        }
        let ip = client_ip(&ext);
        check_password(&core, &rbac, &name, &req.current_password, ip, false).await?;
    } else if !caller.roles.iter().any(|r| r == ADMIN) {
        return Err(ScError::new(
            FORBIDDEN,
            "only an admin may change another account's password",
        ));
    }
    let hash = hash_limited(&core, &req.password).await?;
    core.lock().set_password(&name, hash)?;
    rbac.basic_cache
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&name);
    tracing::info!(account = %name, by = %caller.name, "RBAC: password changed");
    Ok(empty())
}

async fn list_roles(State(core): State<Core>) -> Response {
    let data = core.lock().rbac.roles();
    json(&Listing {
        total: data.len(),
        data,
    })
}

async fn get_role(State(core): State<Core>, Path(name): Path<String>) -> Result<Response, ScError> {
    let role = core
        .lock()
        .rbac
        .role(&name)
        .ok_or_else(|| ScError::new(ROLE_NOT_EXISTS, format!("role {name}")))?;
    Ok(json(&role))
}

#[derive(Deserialize)]
struct RoleRequest {
    #[serde(default)]
    name: String,
    #[serde(default)]
    perms: Vec<rbac::Permission>,
}

fn role_from(req: RoleRequest) -> Role {
    Role {
        id: String::new(),
        name: req.name,
        perms: req.perms,
        create_time: String::new(),
        update_time: String::new(),
    }
}

async fn create_role(State(core): State<Core>, body: Bytes) -> Result<Response, ScError> {
    let req: RoleRequest = decode(&body)?;
    let role = role_from(req);
    let name = role.name.clone();
    core.lock().put_role(role, true)?;
    tracing::info!(role = %name, "RBAC: role created");
    Ok(empty())
}

async fn update_role(
    State(core): State<Core>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ScError> {
    let mut req: RoleRequest = decode(&body)?;
    req.name = name.clone();
    core.lock().put_role(role_from(req), false)?;
    tracing::info!(role = %name, "RBAC: role updated");
    Ok(empty())
}

async fn delete_role(
    State(core): State<Core>,
    Path(name): Path<String>,
) -> Result<Response, ScError> {
    core.lock().delete_role(&name)?;
    tracing::info!(role = %name, "RBAC: role deleted");
    Ok(empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_requests() {
        let c = |m: Method, p: &str, q: Option<&str>| classify(&m, p, q);
        assert_eq!(c(Method::POST, "/v4/token", None), Need::Open);
        assert_eq!(
            c(Method::GET, "/v4/default/registry/version", None),
            Need::Open
        );
        assert_eq!(
            c(Method::GET, "/v4/default/registry/health", None),
            Need::Open
        );
        assert_eq!(
            c(Method::POST, "/v4/accounts", None),
            Need::Allowed(Resource::Account, "create")
        );
        assert_eq!(
            c(Method::POST, "/v4/accounts/bob/password", None),
            Need::Caller
        );
        assert_eq!(
            c(Method::DELETE, "/v4/roles/x", None),
            Need::Allowed(Resource::Role, "delete")
        );
        assert_eq!(
            c(
                Method::PUT,
                "/v4/default/registry/microservices/a/instances/b/heartbeat",
                None
            ),
            Need::Allowed(Resource::Service, "update")
        );
        assert_eq!(
            c(
                Method::POST,
                "/v4/default/registry/microservices/a/schemas",
                None
            ),
            Need::Allowed(Resource::Schema, "create")
        );
        assert_eq!(
            c(
                Method::POST,
                "/v4/default/registry/instances/action",
                Some("type=query")
            ),
            Need::Allowed(Resource::Service, "get")
        );
        assert_eq!(
            c(
                Method::POST,
                "/v4/default/registry/instances/action",
                Some("type=register")
            ),
            Need::Allowed(Resource::Service, "create")
        );
        assert_eq!(
            c(Method::GET, "/v4/default/admin/dump", None),
            Need::Allowed(Resource::Ops, "get")
        );
        assert_eq!(
            c(Method::GET, "/v4/default/govern/microservices", None),
            Need::Allowed(Resource::Governance, "get")
        );
        assert_eq!(
            c(Method::POST, "/eureka/apps/X", None),
            Need::Allowed(Resource::Service, "create")
        );
    }

    #[test]
    fn ttl() {
        assert_eq!(parse_ttl("").ok(), Some(DEFAULT_TOKEN_TTL));
        assert_eq!(parse_ttl("90s").ok(), Some(Duration::from_secs(90)));
        assert_eq!(parse_ttl("2h").ok(), Some(Duration::from_secs(7200)));
        for bad in ["0s", "25h", "x", "1d", "m", "1é", "99999999999999999999h"] {
            assert!(parse_ttl(bad).is_err(), "{bad}");
        }
    }
}
