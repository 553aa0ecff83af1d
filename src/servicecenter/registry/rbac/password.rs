//! Passwords: service-center's rules, Argon2id hashes, and the lockout after repeated
//! failures.
//!
//! Rules (the v4 description's `Account.password`): 8 to 32 characters with at least one
//! upper-case letter, one lower-case letter, one digit and one special character (printable
//! ASCII, no space); not the account name, nor the name reversed.
//!
//! Lockout (service-center's `blocker.go`): failures are counted per account name and
//! client IP; the [`MAX_FAILURES`]th failure within [`FAILURE_WINDOW`] blocks that pair for
//! [`BLOCK_TIME`] (403201 "Account blocked", even with the right password). Another IP is
//! not blocked, so nobody can lock an account out from elsewhere.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

use crate::servicecenter::error::ScError;

/// Failures within [`FAILURE_WINDOW`] that block a name and IP.
pub const MAX_FAILURES: usize = 3;
/// The window failures are counted in.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(3600);
/// How long a blocked name and IP stay blocked.
pub const BLOCK_TIME: Duration = Duration::from_secs(3600);
/// The most (name, IP) pairs tracked; beyond, the oldest unblocked entries are dropped.
pub const MAX_TRACKED: usize = 65_536;
/// Password hashes computed at once (each takes ~19 MiB and tens of ms); more wait.
pub const MAX_CONCURRENT_HASHES: usize = 4;
/// The longest password accepted.
pub const MAX_LEN: usize = 32;

/// Checks `password` against the rules for account `name`.
///
/// # Errors
/// 400001 saying which rule is broken.
pub fn check(name: &str, password: &str) -> Result<(), ScError> {
    let len = password.chars().count();
    let has = |f: fn(&char) -> bool| password.chars().any(|c| f(&c));
    let rule = if !(8..=MAX_LEN).contains(&len) {
        "have 8 to 32 characters"
    } else if !has(char::is_ascii_uppercase) {
        "have at least one upper-case letter"
    } else if !has(char::is_ascii_lowercase) {
        "have at least one lower-case letter"
    } else if !has(char::is_ascii_digit) {
        "have at least one digit"
    } else if !has(char::is_ascii_punctuation) {
        "have at least one special character"
    } else if password.chars().any(|c| !c.is_ascii_graphic()) {
        "use printable ASCII characters without spaces"
    } else if password == name {
        "not be the account name"
    } else if password.chars().rev().eq(name.chars()) {
        "not be the account name reversed"
    } else {
        return Ok(());
    };
    Err(ScError::invalid(format!("the password must {rule}")))
}

fn hasher() -> argon2::Argon2<'static> {
    // OWASP's Argon2id minimum: 19 MiB, 2 passes, 1 lane.
    let params = argon2::Params::new(19 * 1024, 2, 1, None).unwrap_or_default();
    argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
}

/// The Argon2id PHC string of `password` with a random salt. CPU heavy: call it on a
/// blocking thread.
///
/// # Errors
/// 500 when hashing fails.
pub fn hash(password: &str) -> Result<String, ScError> {
    let salt_bytes: [u8; 16] = super::random_bytes()?;
    let salt = SaltString::encode_b64(&salt_bytes)
        .map_err(|e| ScError::new(500003, format!("password salt: {e}")))?;
    hasher()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| ScError::new(500003, format!("hashing the password: {e}")))
}

/// Whether `password` matches the PHC string `stored`. CPU heavy: call it on a blocking
/// thread. An unreadable `stored` never matches.
pub fn verify(stored: &str, password: &str) -> bool {
    match PasswordHash::new(stored) {
        Ok(h) => hasher().verify_password(password.as_bytes(), &h).is_ok(),
        Err(_) => false,
    }
}

/// A hash that matches nothing, verified for unknown accounts so that a miss takes as long
/// as a wrong password.
pub fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| hash("Dummy-password-1").unwrap_or_default())
}

#[derive(Default)]
struct Entry {
    failures: Vec<Instant>,
    blocked_until: Option<Instant>,
    last: Option<Instant>,
}

/// Failed logins per (account name, client IP), and who is blocked.
#[derive(Default)]
pub struct Blocker {
    entries: Mutex<HashMap<(String, Option<IpAddr>), Entry>>,
}

impl Blocker {
    /// Whether `name` from `ip` is blocked now.
    pub fn is_blocked(&self, name: &str, ip: Option<IpAddr>) -> bool {
        let now = Instant::now();
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(&(name.to_string(), ip))
            .and_then(|e| e.blocked_until)
            .is_some_and(|until| until > now)
    }

    /// Counts a failure; returns whether the pair is now blocked.
    pub fn fail(&self, name: &str, ip: Option<IpAddr>) -> bool {
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= MAX_TRACKED && !entries.contains_key(&(name.to_string(), ip)) {
            entries.retain(|_, e| {
                e.blocked_until.is_some_and(|u| u > now)
                    || e.last
                        .is_some_and(|l| now.duration_since(l) < FAILURE_WINDOW)
            });
            if entries.len() >= MAX_TRACKED {
                // Still full of recent failures: forget the oldest unblocked ones.
                let mut unblocked: Vec<_> = entries
                    .iter()
                    .filter(|(_, e)| e.blocked_until.is_none())
                    .map(|(k, e)| (e.last, k.clone()))
                    .collect();
                unblocked.sort();
                for (_, k) in unblocked.into_iter().take(MAX_TRACKED / 8) {
                    entries.remove(&k);
                }
            }
        }
        let e = entries.entry((name.to_string(), ip)).or_default();
        e.failures
            .retain(|t| now.duration_since(*t) < FAILURE_WINDOW);
        e.failures.push(now);
        e.last = Some(now);
        if e.failures.len() >= MAX_FAILURES {
            e.blocked_until = Some(now + BLOCK_TIME);
            e.failures.clear();
            tracing::warn!(account = name, ip = ?ip, "RBAC: too many failed logins; blocked for an hour");
            true
        } else {
            false
        }
    }

    /// Forgets the failures of a pair after a success.
    pub fn succeed(&self, name: &str, ip: Option<IpAddr>) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = entries.get(&(name.to_string(), ip)) {
            if e.blocked_until.is_none() {
                entries.remove(&(name.to_string(), ip));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules() {
        assert!(check("alice", "Abcdef1!").is_ok());
        for bad in [
            "Abcde1!",
            "abcdefg1!",
            "ABCDEFG1!",
            "Abcdefgh!",
            "Abcdefgh1",
            "Abc def1!",
            "Abcdefgh1!Abcdefgh1!Abcdefgh1!xyz",
        ] {
            assert!(check("alice", bad).is_err(), "{bad}");
        }
        assert!(check("Abcdef1!", "Abcdef1!").is_err());
        assert!(check("!1fedcbA", "Abcdef1!").is_err());
    }

    #[test]
    fn hash_and_verify() {
        let h = hash("Abcdef1!").expect("hash");
        assert!(h.starts_with("$argon2id$"));
        assert!(verify(&h, "Abcdef1!"));
        assert!(!verify(&h, "Abcdef1?"));
        assert!(!verify("garbage", "Abcdef1!"));
    }

    #[test]
    fn blocks_after_three_failures_per_ip() {
        let b = Blocker::default();
        let ip: Option<IpAddr> = "10.0.0.1".parse().ok();
        let other: Option<IpAddr> = "10.0.0.2".parse().ok();
        assert!(!b.fail("alice", ip));
        assert!(!b.fail("alice", ip));
        assert!(!b.is_blocked("alice", ip));
        assert!(b.fail("alice", ip));
        assert!(b.is_blocked("alice", ip));
        assert!(!b.is_blocked("alice", other));
        b.succeed("alice", ip);
        assert!(
            b.is_blocked("alice", ip),
            "a block outlives a later success"
        );
    }

    #[test]
    fn a_full_table_forgets_old_unblocked_failures_and_keeps_blocks() {
        let b = Blocker::default();
        let ip: Option<IpAddr> = "10.0.0.1".parse().ok();
        for _ in 0..MAX_FAILURES {
            b.fail("victim", ip);
        }
        for i in 0..MAX_TRACKED {
            b.fail(&format!("name-{i}"), ip);
        }
        let tracked = b.entries.lock().map(|e| e.len()).unwrap_or(usize::MAX);
        assert!(tracked <= MAX_TRACKED, "{tracked} pairs tracked");
        assert!(b.is_blocked("victim", ip), "a block is never evicted");
    }
}
