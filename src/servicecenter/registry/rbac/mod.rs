//! service-center's role-based access control (RBAC) in the built-in core, as
//! service-center 2.x has it: accounts, roles with resource/verb permissions, signed tokens.
//!
//! Off by default; [`crate::servicecenter::core::Core::enable_rbac`] (`--rbac`) turns it on. Then:
//!
//! - `POST /v4/token` with `{"name","password"}` answers `{"token"}`: a JWT (HS256, key kept
//!   in the store so every core on one etcd accepts it) whose `exp` is 30 minutes away unless
//!   the body's `tokenExpirationTime` (`"15m"`, `"2h"`, `"90s"`; 1 s to 24 h) says otherwise.
//! - Every other `/v4` request needs `Authorization: Bearer <token>`, except `GET
//!   /v4/{project}/registry/version` and `.../health` (service-center's white list). The
//!   `/eureka` face takes HTTP basic auth of an account instead (what Spring Cloud's Eureka
//!   security does) or a bearer token.
//! - A request is allowed when one of the account's roles has a permission whose resources
//!   include the request's resource and whose verbs include its verb ([`Resource`], [`verb`]).
//!   The built-in roles: `admin` (every resource, `*`) and `developer` (every resource but
//!   `account` and `role`), as service-center's `AdminPerms`/`DevPerms`. A permission with
//!   `labels` is kept but grants nothing here (service-center matches labels against the
//!   target service; we refuse rather than guess).
//! - Errors are service-center's bodies ([`crate::servicecenter::error`]): 401 with 401201 (bad token),
//!   401202 (user name or password is wrong), 401204 (no authorization header), 401205
//!   (token expired), 401206 (the token's account is deleted); 403 with 403001 (no
//!   permission) or 403201 (account blocked after repeated failures).
//!
//! Accounts (`/cse-sr/accounts/{name}`), roles (`/cse-sr/roles/{name}`) and the token key
//! (`/cse-sr/rbac/secret`) are records of the registry's store (embedded or etcd), written
//! through the journal like every other record; passwords are kept as Argon2id hashes
//! ([`password`]). The first start with `--rbac` creates the account `root` (role `admin`)
//! with the password given by file or environment; later starts leave it as stored.

pub mod password;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::servicecenter::error::{ScError, FORBIDDEN};
use crate::servicecenter::registry::{now_ms, Registry};

pub use crate::servicecenter::error::{
    rbac_message as message, ACCOUNT_BLOCKED, ACCOUNT_CONFLICT, ACCOUNT_HAS_INVALID_ROLE,
    ACCOUNT_NOT_EXISTS, ACCOUNT_NO_QUOTA, NO_AUTH_HEADER, ROLE_CONFLICT, ROLE_IS_BOUND,
    ROLE_NOT_EXISTS, ROLE_NO_QUOTA, TOKEN_ACCOUNT_DELETED, TOKEN_EXPIRED, UNAUTHORIZED,
    USER_OR_PASSWORD_WRONG,
};

/// The account created at the first start with RBAC on.
pub const ROOT: &str = "root";
/// The built-in role with every permission.
pub const ADMIN: &str = "admin";
/// The built-in role with every permission but accounts and roles.
pub const DEVELOPER: &str = "developer";
/// The most accounts a core keeps (service-center's default account quota).
pub const MAX_ACCOUNTS: usize = 10_000;
/// The most roles besides the built-in ones.
pub const MAX_ROLES: usize = 100;
/// The most roles one account may have.
pub const MAX_ROLES_PER_ACCOUNT: usize = 16;
/// The most permissions one role may have, resources per permission, labels per resource.
pub const MAX_PERMS: usize = 32;
/// A token's lifetime unless `tokenExpirationTime` says otherwise (service-center: 30m).
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(30 * 60);
/// The longest `tokenExpirationTime` accepted.
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);

const ACCOUNTS: &str = "/cse-sr/accounts/";
const ROLES: &str = "/cse-sr/roles/";
/// Where the token signing key is kept.
pub const SECRET_KEY: &str = "/cse-sr/rbac/secret";

/// `/cse-sr/accounts/{name}`.
pub fn account_key(name: &str) -> String {
    format!("{ACCOUNTS}{name}")
}

/// `/cse-sr/roles/{name}`.
pub fn role_key(name: &str) -> String {
    format!("{ROLES}{name}")
}

/// What a request acts on (service-center's resource types).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Resource {
    /// `/v4/accounts...`.
    Account,
    /// `/v4/roles...`.
    Role,
    /// Microservices, instances, tags, rules, dependencies, discovery, the `/eureka` face.
    Service,
    /// `.../microservices/{id}/schemas...`.
    Schema,
    /// `/v4/{project}/govern/...`.
    Governance,
    /// `/v4/{project}/admin/...` (dump, changes).
    Ops,
}

impl Resource {
    /// Every resource type, in service-center's order.
    pub const ALL: [Resource; 6] = [
        Resource::Account,
        Resource::Role,
        Resource::Service,
        Resource::Governance,
        Resource::Schema,
        Resource::Ops,
    ];

    /// The type's name in a role's `perms[].resources[].type`.
    pub fn name(self) -> &'static str {
        match self {
            Resource::Account => "account",
            Resource::Role => "role",
            Resource::Service => "service",
            Resource::Schema => "service/schema",
            Resource::Governance => "governance",
            Resource::Ops => "ops",
        }
    }

    /// The type named `s`, if any.
    pub fn parse(s: &str) -> Option<Resource> {
        Resource::ALL.into_iter().find(|r| r.name() == s)
    }
}

/// The verb of an HTTP method, as service-center maps them: GET → `get`, POST → `create`,
/// PUT/PATCH → `update`, DELETE → `delete`.
pub fn verb(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::POST => "create",
        Method::PUT | Method::PATCH => "update",
        Method::DELETE => "delete",
        _ => "get",
    }
}

const VERBS: [&str; 5] = ["get", "create", "update", "delete", "*"];

/// One resource of a permission.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RoleResource {
    /// A [`Resource`] name.
    #[serde(rename = "type")]
    pub kind: String,
    /// Label selectors (kept; see the module docs).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// Resources and the verbs allowed on them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Permission {
    /// What it covers.
    pub resources: Vec<RoleResource>,
    /// `get`, `create`, `update`, `delete` or `*`.
    pub verbs: Vec<String>,
}

/// A role: a name and its permissions.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Role {
    /// The role id (its name, as the built-in roles have none other).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    /// Unique name.
    pub name: String,
    /// What it allows.
    pub perms: Vec<Permission>,
    /// Unix seconds, as a string (service-center's shape).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub create_time: String,
    /// Unix seconds, as a string.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub update_time: String,
}

impl Role {
    /// Whether this role allows `verb` on `resource`. Permissions with labels grant nothing.
    pub fn allows(&self, resource: Resource, verb: &str) -> bool {
        self.perms.iter().any(|p| {
            p.verbs.iter().any(|v| v == "*" || v == verb)
                && p.resources
                    .iter()
                    .any(|r| r.labels.is_empty() && (r.kind == "*" || r.kind == resource.name()))
        })
    }

    /// Checks a role given by a client: name, resource types, verbs and sizes.
    ///
    /// # Errors
    /// 400001 naming what is wrong.
    pub fn check(&self) -> Result<(), ScError> {
        check_name("role name", &self.name)?;
        if self.perms.len() > MAX_PERMS {
            return Err(ScError::invalid(format!(
                "a role has at most {MAX_PERMS} perms"
            )));
        }
        for p in &self.perms {
            if p.resources.is_empty() || p.resources.len() > MAX_PERMS {
                return Err(ScError::invalid(format!(
                    "a perm names 1 to {MAX_PERMS} resources"
                )));
            }
            if p.verbs.is_empty() || p.verbs.len() > VERBS.len() {
                return Err(ScError::invalid("a perm names 1 to 5 verbs"));
            }
            for v in &p.verbs {
                if !VERBS.contains(&v.as_str()) {
                    return Err(ScError::invalid(format!(
                        "unknown verb {v:?}: use get, create, update, delete or *"
                    )));
                }
            }
            for r in &p.resources {
                if r.kind != "*" && Resource::parse(&r.kind).is_none() {
                    return Err(ScError::invalid(format!(
                        "unknown resource type {:?}: use account, role, service, \
                         service/schema, governance, ops or *",
                        r.kind
                    )));
                }
                if r.labels.len() > MAX_PERMS
                    || r.labels.iter().any(|(k, v)| k.len() > 128 || v.len() > 128)
                {
                    return Err(ScError::invalid(format!(
                        "a resource has at most {MAX_PERMS} labels of 128 bytes"
                    )));
                }
            }
        }
        Ok(())
    }
}

/// The built-in roles (service-center's `AdminPerms` and `DevPerms`); they cannot be
/// changed or deleted.
pub fn builtin_roles() -> &'static [Role; 2] {
    static ROLES: std::sync::OnceLock<[Role; 2]> = std::sync::OnceLock::new();
    ROLES.get_or_init(make_builtin_roles)
}

fn make_builtin_roles() -> [Role; 2] {
    let perm = |kinds: &[Resource]| Permission {
        resources: kinds
            .iter()
            .map(|r| RoleResource {
                kind: r.name().to_string(),
                labels: BTreeMap::new(),
            })
            .collect(),
        verbs: vec!["*".to_string()],
    };
    [
        Role {
            id: ADMIN.to_string(),
            name: ADMIN.to_string(),
            perms: vec![perm(&Resource::ALL)],
            create_time: String::new(),
            update_time: String::new(),
        },
        Role {
            id: DEVELOPER.to_string(),
            name: DEVELOPER.to_string(),
            perms: vec![perm(&[
                Resource::Service,
                Resource::Governance,
                Resource::Ops,
                Resource::Schema,
            ])],
            create_time: String::new(),
            update_time: String::new(),
        },
    ]
}

/// An account as stored: the password is an Argon2id PHC string, never the password.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Account {
    /// Account id (a UUID).
    pub id: String,
    /// Unique name.
    pub name: String,
    /// The Argon2id hash of the password (PHC string).
    pub password: String,
    /// Role names.
    pub roles: Vec<String>,
    /// `active` or `inactive` (an inactive account cannot get a token).
    pub status: String,
    /// Unix seconds, as a string.
    pub create_time: String,
    /// Unix seconds, as a string.
    pub update_time: String,
    /// Tokens issued before this (unix ms) are refused: set by a password change.
    #[serde(default)]
    pub tokens_after_ms: i64,
}

/// An account as answered to clients: `password` is always empty (the v4 description
/// requires the field in `Account`; service-center leaves it out).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountView {
    /// Account id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Always `""`.
    pub password: &'static str,
    /// Role names.
    pub roles: Vec<String>,
    /// `active` or `inactive`.
    pub status: String,
    /// Unix seconds, as a string.
    pub create_time: String,
    /// Unix seconds, as a string.
    pub update_time: String,
}

impl From<&Account> for AccountView {
    fn from(a: &Account) -> AccountView {
        AccountView {
            id: a.id.clone(),
            name: a.name.clone(),
            password: "",
            roles: a.roles.clone(),
            status: a.status.clone(),
            create_time: a.create_time.clone(),
            update_time: a.update_time.clone(),
        }
    }
}

/// Checks an account or role name: 1 to 64 characters, a letter first, then letters,
/// digits, `_`, `-` and `.` (service-center's name rule; also keeps keys free of `/`).
///
/// # Errors
/// 400001 naming `what`.
pub fn check_name(what: &str, name: &str) -> Result<(), ScError> {
    let ok = (1..=64).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(ScError::invalid(format!(
            "{what} must be 1 to 64 characters: a letter, then letters, digits, '_', '-' or '.'"
        )))
    }
}

/// `N` bytes from the operating system's random source.
///
/// # Errors
/// 500 when the OS has none to give.
pub(crate) fn random_bytes<const N: usize>() -> Result<[u8; N], ScError> {
    use rand::TryRng;
    let mut buf = [0u8; N];
    rand::rngs::SysRng
        .try_fill_bytes(&mut buf)
        .map_err(|e| ScError::new(500003, format!("no randomness from the OS: {e}")))?;
    Ok(buf)
}

/// The RBAC records of the registry: accounts, custom roles and the token key.
#[derive(Default)]
pub struct RbacState {
    accounts: HashMap<String, Account>,
    roles: BTreeMap<String, Role>,
    secret: Option<Arc<Keys>>,
}

/// The token signing key.
pub struct Keys {
    encoding: jsonwebtoken::EncodingKey,
    decoding: jsonwebtoken::DecodingKey,
    raw: Vec<u8>,
}

impl std::fmt::Debug for RbacState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RbacState")
            .field("accounts", &self.accounts.len())
            .field("roles", &self.roles.len())
            .finish_non_exhaustive()
    }
}

impl Keys {
    fn new(raw: Vec<u8>) -> Keys {
        Keys {
            encoding: jsonwebtoken::EncodingKey::from_secret(&raw),
            decoding: jsonwebtoken::DecodingKey::from_secret(&raw),
            raw,
        }
    }
}

/// The claims of a token.
#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    /// The account name.
    pub sub: String,
    /// The account name (service-center's claim name).
    pub account: String,
    /// The account's roles when the token was made (informative; the current roles decide).
    #[serde(default)]
    pub roles: Vec<String>,
    /// Issued at, unix seconds.
    pub iat: i64,
    /// Issued at, unix ms (compared with a password change).
    #[serde(default)]
    pub iat_ms: i64,
    /// Expires at, unix seconds.
    pub exp: i64,
}

fn seconds_string(ms: i64) -> String {
    (ms / 1000).to_string()
}

impl RbacState {
    /// The role named `name`: built-in or custom.
    pub fn role(&self, name: &str) -> Option<Role> {
        builtin_roles()
            .iter()
            .find(|r| r.name == name)
            .or_else(|| self.roles.get(name))
            .cloned()
    }

    /// Every role, built-in first.
    pub fn roles(&self) -> Vec<Role> {
        let mut v: Vec<Role> = builtin_roles().to_vec();
        v.extend(self.roles.values().cloned());
        v
    }

    /// The account named `name`.
    pub fn account(&self, name: &str) -> Option<&Account> {
        self.accounts.get(name)
    }

    /// Every account, by name.
    pub fn accounts(&self) -> Vec<&Account> {
        let mut v: Vec<&Account> = self.accounts.values().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// The signing key, once made or loaded.
    pub fn keys(&self) -> Option<Arc<Keys>> {
        self.secret.clone()
    }

    /// Whether an account with `roles` may do `verb` on `resource`.
    pub fn allowed(&self, roles: &[String], resource: Resource, verb: &str) -> bool {
        roles.iter().any(|r| {
            builtin_roles()
                .iter()
                .find(|b| b.name == *r)
                .map(|b| b.allows(resource, verb))
                .or_else(|| self.roles.get(r).map(|c| c.allows(resource, verb)))
                .unwrap_or(false)
        })
    }
}

impl Registry {
    /// Stores a new account. `password_hash` is already hashed ([`password::hash`]).
    ///
    /// # Errors
    /// 409200 when the name is taken, 400202 for an unknown role, 400203 over
    /// [`MAX_ACCOUNTS`].
    pub fn create_account(
        &mut self,
        name: &str,
        password_hash: String,
        roles: Vec<String>,
        status: &str,
    ) -> Result<(), ScError> {
        if self.rbac.accounts.contains_key(name) {
            return Err(ScError::new(ACCOUNT_CONFLICT, format!("account {name}")));
        }
        if self.rbac.accounts.len() >= MAX_ACCOUNTS {
            return Err(ScError::new(
                ACCOUNT_NO_QUOTA,
                format!("at most {MAX_ACCOUNTS} accounts"),
            ));
        }
        self.check_roles(&roles)?;
        let now = seconds_string(now_ms());
        let account = Account {
            id: uuid::Uuid::new_v4().simple().to_string(),
            name: name.to_string(),
            password: password_hash,
            roles,
            status: status.to_string(),
            create_time: now.clone(),
            update_time: now,
            tokens_after_ms: 0,
        };
        self.rbac.accounts.insert(name.to_string(), account);
        self.journal.key(account_key(name));
        Ok(())
    }

    fn check_roles(&self, roles: &[String]) -> Result<(), ScError> {
        if roles.is_empty() || roles.len() > MAX_ROLES_PER_ACCOUNT {
            return Err(ScError::invalid(format!(
                "an account has 1 to {MAX_ROLES_PER_ACCOUNT} roles"
            )));
        }
        if let Some(bad) = roles.iter().find(|r| self.rbac.role(r).is_none()) {
            return Err(ScError::new(
                ACCOUNT_HAS_INVALID_ROLE,
                format!("role {bad:?} does not exist"),
            ));
        }
        Ok(())
    }

    /// Deletes an account; `root` cannot be deleted.
    ///
    /// # Errors
    /// 400200 when missing, 403001 for `root`.
    pub fn delete_account(&mut self, name: &str) -> Result<(), ScError> {
        if name == ROOT {
            return Err(ScError::new(
                FORBIDDEN,
                "the root account cannot be deleted",
            ));
        }
        self.rbac
            .accounts
            .remove(name)
            .ok_or_else(|| ScError::new(ACCOUNT_NOT_EXISTS, format!("account {name}")))?;
        self.journal.key(account_key(name));
        Ok(())
    }

    /// Replaces an account's password hash; tokens issued before now are refused from then on.
    ///
    /// # Errors
    /// 400200 when missing.
    pub fn set_password(&mut self, name: &str, password_hash: String) -> Result<(), ScError> {
        let a = self
            .rbac
            .accounts
            .get_mut(name)
            .ok_or_else(|| ScError::new(ACCOUNT_NOT_EXISTS, format!("account {name}")))?;
        let now = now_ms();
        a.password = password_hash;
        a.update_time = seconds_string(now);
        a.tokens_after_ms = now;
        self.journal.key(account_key(name));
        Ok(())
    }

    /// Creates (`create`) or replaces a custom role.
    ///
    /// # Errors
    /// 400001 for a bad role or a built-in name on update, 409201 when created twice,
    /// 400201 when updating a missing role, 400204 over [`MAX_ROLES`], 403001 for the
    /// built-in roles.
    pub fn put_role(&mut self, mut role: Role, create: bool) -> Result<(), ScError> {
        role.check()?;
        if role.name == ADMIN || role.name == DEVELOPER {
            return Err(if create {
                ScError::new(ROLE_CONFLICT, format!("role {}", role.name))
            } else {
                ScError::new(FORBIDDEN, "the built-in roles cannot be changed")
            });
        }
        let now = seconds_string(now_ms());
        match (self.rbac.roles.get(&role.name), create) {
            (Some(_), true) => {
                return Err(ScError::new(ROLE_CONFLICT, format!("role {}", role.name)))
            }
            (None, false) => {
                return Err(ScError::new(ROLE_NOT_EXISTS, format!("role {}", role.name)))
            }
            (None, true) if self.rbac.roles.len() >= MAX_ROLES => {
                return Err(ScError::new(
                    ROLE_NO_QUOTA,
                    format!("at most {MAX_ROLES} roles"),
                ))
            }
            (Some(old), false) => role.create_time = old.create_time.clone(),
            (None, true) => role.create_time = now.clone(),
        }
        role.id = role.name.clone();
        role.update_time = now;
        self.journal.key(role_key(&role.name));
        self.rbac.roles.insert(role.name.clone(), role);
        Ok(())
    }

    /// Deletes a custom role no account has.
    ///
    /// # Errors
    /// 403001 for the built-in roles, 400205 while an account has it, 400201 when missing.
    pub fn delete_role(&mut self, name: &str) -> Result<(), ScError> {
        if name == ADMIN || name == DEVELOPER {
            return Err(ScError::new(
                FORBIDDEN,
                "the built-in roles cannot be deleted",
            ));
        }
        let bound: HashSet<&str> = self
            .rbac
            .accounts
            .values()
            .filter(|a| a.roles.iter().any(|r| r == name))
            .map(|a| a.name.as_str())
            .collect();
        if !bound.is_empty() {
            return Err(ScError::new(
                ROLE_IS_BOUND,
                format!("{} account(s) have role {name}", bound.len()),
            ));
        }
        self.rbac
            .roles
            .remove(name)
            .ok_or_else(|| ScError::new(ROLE_NOT_EXISTS, format!("role {name}")))?;
        self.journal.key(role_key(name));
        Ok(())
    }

    /// The token signing key, made (32 random bytes, stored) when there is none yet.
    ///
    /// # Errors
    /// 500 when the OS gives no randomness.
    pub(crate) fn ensure_keys(&mut self) -> Result<Arc<Keys>, ScError> {
        if let Some(k) = &self.rbac.secret {
            return Ok(k.clone());
        }
        let raw: [u8; 32] = random_bytes()?;
        let keys = Arc::new(Keys::new(raw.to_vec()));
        self.rbac.secret = Some(keys.clone());
        self.journal.key(SECRET_KEY.to_string());
        Ok(keys)
    }

    /// Signs a token for `account` valid for `ttl`.
    ///
    /// # Errors
    /// 500 when signing fails.
    pub(crate) fn issue_token(&mut self, account: &str, ttl: Duration) -> Result<String, ScError> {
        let keys = self.ensure_keys()?;
        let roles = self
            .rbac
            .accounts
            .get(account)
            .map(|a| a.roles.clone())
            .unwrap_or_default();
        let now = now_ms();
        let claims = Claims {
            sub: account.to_string(),
            account: account.to_string(),
            roles,
            iat: now / 1000,
            iat_ms: now,
            exp: now / 1000 + i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX / 2),
        };
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &keys.encoding,
        )
        .map_err(|e| ScError::new(500003, format!("signing the token: {e}")))
    }
}

/// What the guard keeps of a token whose signature it checked (cached per token text).
#[derive(Clone)]
pub(crate) struct Verified {
    /// The account name (shared: a cache hit copies no string).
    pub(crate) sub: Arc<str>,
    /// Issued at, unix ms.
    iat_ms: i64,
    /// Expires at, unix seconds.
    exp: i64,
    /// The key that checked it: a token checked by a key since replaced is checked again.
    key: Arc<Keys>,
}

/// The most checked tokens [`Guard`] remembers (then it forgets them all and starts over).
pub const MAX_CACHED_TOKENS: usize = 10_000;

/// Checks a token's signature and expiry; the signature check of a token text is done once
/// and remembered in `guard` while its key stays the same. `current_key` gives the
/// registry's signing key (`RbacState::keys`), asked only on a cache miss.
///
/// # Errors
/// 401201 (malformed, badly signed), 401205 (expired).
pub(crate) fn verify_signature(
    current_key: impl FnOnce() -> Option<Arc<Keys>>,
    guard: &Guard,
    token: &str,
) -> Result<Verified, ScError> {
    let cached = guard
        .tokens
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(token)
        .cloned();
    let verified = match cached {
        Some(v) => v,
        None => {
            let key = current_key()
                .ok_or_else(|| ScError::new(UNAUTHORIZED, "no token was ever issued here"))?;
            let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
            validation.leeway = 0;
            validation.set_required_spec_claims(&["exp", "sub"]);
            let claims = jsonwebtoken::decode::<Claims>(token, &key.decoding, &validation)
                .map_err(|e| match e.kind() {
                    jsonwebtoken::errors::ErrorKind::ExpiredSignature => {
                        ScError::new(TOKEN_EXPIRED, "the token is expired: get a new one")
                    }
                    _ => ScError::new(UNAUTHORIZED, format!("invalid token: {e}")),
                })?
                .claims;
            let v = Verified {
                sub: claims.sub.into(),
                iat_ms: claims.iat_ms,
                exp: claims.exp,
                key,
            };
            let mut tokens = guard.tokens.lock().unwrap_or_else(|e| e.into_inner());
            if tokens.len() >= MAX_CACHED_TOKENS {
                tokens.clear();
            }
            tokens.insert(token.to_string(), v.clone());
            v
        }
    };
    if verified.exp <= now_ms() / 1000 {
        return Err(ScError::new(
            TOKEN_EXPIRED,
            "the token is expired: get a new one",
        ));
    }
    Ok(verified)
}

impl RbacState {
    /// The account of a checked token, if the token still speaks for it: same key, account
    /// there, not changed since, active.
    ///
    /// # Errors
    /// 401201 (key replaced, or issued before a password change), 401206 (account
    /// deleted), 403201 (inactive).
    pub(crate) fn account_of(&self, v: &Verified) -> Result<&Account, ScError> {
        if !self.secret.as_ref().is_some_and(|k| Arc::ptr_eq(k, &v.key)) {
            return Err(ScError::new(
                UNAUTHORIZED,
                "the token was signed with a key this core no longer uses: get a new one",
            ));
        }
        let account = self
            .accounts
            .get(&*v.sub)
            .ok_or_else(|| ScError::new(TOKEN_ACCOUNT_DELETED, format!("account {}", v.sub)))?;
        if v.iat_ms < account.tokens_after_ms {
            return Err(ScError::new(
                UNAUTHORIZED,
                "the token was issued before the account's password changed: get a new one",
            ));
        }
        if account.status == "inactive" {
            return Err(ScError::new(ACCOUNT_BLOCKED, "the account is inactive"));
        }
        Ok(account)
    }
}

/// The RBAC record keys and values, for `records.rs`'s dispatch.
pub(crate) fn stored_value(reg: &Registry, key: &str) -> Option<Option<Vec<u8>>> {
    if let Some(name) = key.strip_prefix(ACCOUNTS) {
        return Some(
            reg.rbac
                .accounts
                .get(name)
                .and_then(|a| serde_json::to_vec(a).ok()),
        );
    }
    if let Some(name) = key.strip_prefix(ROLES) {
        return Some(
            reg.rbac
                .roles
                .get(name)
                .and_then(|r| serde_json::to_vec(r).ok()),
        );
    }
    if key == SECRET_KEY {
        use base64::Engine;
        return Some(reg.rbac.secret.as_ref().map(|k| {
            base64::engine::general_purpose::STANDARD
                .encode(&k.raw)
                .into_bytes()
        }));
    }
    None
}

/// Applies a stored RBAC record (load, etcd watch); `None` when `key` is not one.
pub(crate) fn apply(reg: &mut Registry, key: &str, value: Option<&[u8]>) -> Option<bool> {
    if let Some(name) = key.strip_prefix(ACCOUNTS) {
        return Some(match value.map(serde_json::from_slice::<Account>) {
            Some(Ok(a)) => {
                reg.rbac.accounts.insert(name.to_string(), a);
                true
            }
            Some(Err(e)) => {
                tracing::warn!(key, error = %e, "unreadable stored account skipped");
                false
            }
            None => reg.rbac.accounts.remove(name).is_some(),
        });
    }
    if let Some(name) = key.strip_prefix(ROLES) {
        return Some(match value.map(serde_json::from_slice::<Role>) {
            Some(Ok(r)) => {
                reg.rbac.roles.insert(name.to_string(), r);
                true
            }
            Some(Err(e)) => {
                tracing::warn!(key, error = %e, "unreadable stored role skipped");
                false
            }
            None => reg.rbac.roles.remove(name).is_some(),
        });
    }
    if key == SECRET_KEY {
        use base64::Engine;
        let raw = value.and_then(|v| base64::engine::general_purpose::STANDARD.decode(v).ok());
        return Some(match raw {
            Some(raw) if raw.len() >= 32 => {
                reg.rbac.secret = Some(Arc::new(Keys::new(raw)));
                true
            }
            _ => false,
        });
    }
    None
}

/// How RBAC is set up: `--rbac` and where the first root password comes from.
#[derive(Clone)]
pub struct RbacSettings {
    /// The password given to `root` when the store has no root account yet (`None`: not
    /// given; then the store must have one).
    pub root_password: Option<String>,
    /// A token's lifetime when `POST /v4/token` names none (default [`DEFAULT_TOKEN_TTL`]).
    pub token_ttl: Duration,
}

impl std::fmt::Debug for RbacSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RbacSettings")
            .field("root_password", &"***")
            .finish()
    }
}

impl RbacSettings {
    /// The root password from `file` (its first line), else the environment variable
    /// `SYNCER_RBAC_ROOT_PASSWORD`, else `SC_INIT_ROOT_PASSWORD` (service-center's name);
    /// none is fine when the store already has `root`.
    ///
    /// # Errors
    /// When the file cannot be read or its first line is empty.
    pub fn resolve(file: Option<&std::path::Path>) -> Result<RbacSettings, String> {
        let password = match file {
            Some(path) => std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read the root password file {}: {e}", path.display()))?
                .lines()
                .next()
                .unwrap_or_default()
                .to_string(),
            None => std::env::var("SYNCER_RBAC_ROOT_PASSWORD")
                .or_else(|_| std::env::var("SC_INIT_ROOT_PASSWORD"))
                .unwrap_or_default(),
        };
        if password.is_empty() && file.is_some() {
            return Err("the root password file is empty".to_string());
        }
        Ok(RbacSettings {
            root_password: (!password.is_empty()).then_some(password),
            token_ttl: DEFAULT_TOKEN_TTL,
        })
    }
}

/// What basic auth remembers of an account: the salted SHA-256 of the password last verified,
/// and the stored hash it was verified against (a password change makes it stale).
pub(crate) type BasicAuthEntry = ([u8; 32], Arc<str>);

/// The RBAC runtime of a core: settings, the lockout table, the hashing limit, the basic
/// auth cache. Shared by all requests.
pub struct Guard {
    pub(crate) token_ttl: Duration,
    pub(crate) tokens: Mutex<HashMap<String, Verified>>,
    pub(crate) blocker: password::Blocker,
    pub(crate) hashing: tokio::sync::Semaphore,
    pub(crate) basic_cache: Mutex<HashMap<String, BasicAuthEntry>>,
    pub(crate) cache_salt: [u8; 32],
}

impl Guard {
    pub(crate) fn new(settings: &RbacSettings) -> Result<Guard, String> {
        Ok(Guard {
            token_ttl: settings.token_ttl,
            tokens: Mutex::new(HashMap::new()),
            blocker: password::Blocker::default(),
            hashing: tokio::sync::Semaphore::new(password::MAX_CONCURRENT_HASHES),
            basic_cache: Mutex::new(HashMap::new()),
            cache_salt: random_bytes().map_err(|e| e.detail)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role(kind: &str, verbs: &[&str], labels: &[(&str, &str)]) -> Role {
        Role {
            id: String::new(),
            name: "r".into(),
            perms: vec![Permission {
                resources: vec![RoleResource {
                    kind: kind.into(),
                    labels: labels
                        .iter()
                        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
                        .collect(),
                }],
                verbs: verbs.iter().map(|v| (*v).to_string()).collect(),
            }],
            create_time: String::new(),
            update_time: String::new(),
        }
    }

    #[test]
    fn a_permission_allows_its_resource_and_verbs_and_labels_grant_nothing() {
        let reader = role("service", &["get"], &[]);
        assert!(reader.allows(Resource::Service, "get"));
        assert!(!reader.allows(Resource::Service, "create"));
        assert!(!reader.allows(Resource::Schema, "get"));
        assert!(role("*", &["*"], &[]).allows(Resource::Account, "delete"));
        let labelled = role("service", &["*"], &[("serviceName", "orders")]);
        assert!(!labelled.allows(Resource::Service, "get"));
    }

    #[test]
    fn built_in_developers_cannot_touch_accounts_or_roles() {
        let state = RbacState::default();
        let dev = [DEVELOPER.to_string()];
        assert!(state.allowed(&dev, Resource::Ops, "get"));
        assert!(state.allowed(&dev, Resource::Service, "delete"));
        assert!(!state.allowed(&dev, Resource::Account, "get"));
        assert!(!state.allowed(&dev, Resource::Role, "create"));
        assert!(state.allowed(&[ADMIN.to_string()], Resource::Role, "create"));
        assert!(!state.allowed(&["nobody".to_string()], Resource::Service, "get"));
    }

    #[test]
    fn bad_roles_are_refused_with_the_reason() {
        let err = |r: Role| r.check().expect_err("refused").detail;
        assert!(err(role("service", &["write"], &[])).contains("unknown verb"));
        assert!(err(role("database", &["get"], &[])).contains("unknown resource type"));
        let mut many = role("service", &["get"], &[]);
        many.perms = vec![many.perms[0].clone(); MAX_PERMS + 1];
        assert!(err(many).contains("at most"));
        let mut bad_name = role("service", &["get"], &[]);
        bad_name.name = "1x/y".into();
        assert!(err(bad_name).contains("role name"));
    }
}
