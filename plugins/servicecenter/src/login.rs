//! Logging in to a service-center with RBAC on (service-center 2.x): the account's token,
//! got lazily, shared by every concurrent request, and renewed before it expires.
//!
//! service-center's contract: `POST /v4/token` with `{"name": account, "password": pw}`
//! answers `{"token": JWT}`; every other `/v4` request carries `Authorization: Bearer JWT`
//! and is answered 401 when the token is missing, invalid or expired (errorCode 401201,
//! 401204, 401205, 401206), 403 without the permission. A wrong password is 401 (401202), an
//! account locked after repeated failures 403 (403201).
//!
//! How this module keeps a token ([`Session`]):
//! - the first request logs in; concurrent requests wait for that one login
//!   (one login at a time, on a task of its own), then share its token;
//! - the token is renewed by the first request after [`RENEW_SHARE`] of its lifetime, read
//!   from the token's own (unverified) JWT payload: `exp - iat`, or `exp` against this
//!   host's clock when that is sooner (the server rounds to seconds) or when `iat` is
//!   missing. A token whose payload cannot be read is renewed every [`RENEW_UNKNOWN`];
//! - a renewal that fails while the token is still valid keeps the token, retries within
//!   [`RENEW_RETRY`] and warns; once it has expired the failure is the request's error;
//! - a 401 on a request logs in again (once for all the requests that used the same token)
//!   and the caller retries that request once ([`Session::refused`]);
//! - a refused login (wrong password, locked account) is not tried again at once: for
//!   [`LOGIN_BACKOFF_MIN`], doubling up to [`LOGIN_BACKOFF_MAX`] while refusals go on, every
//!   call gets the same error without a request, so a syncer polling its registry does not
//!   hammer it (service-center locks an account after repeated failures).
//!
//! Neither the password nor the token is ever logged or put in an error: [`Password`] and
//! [`Credentials`] print `***` in `Debug`, the token's header value is marked sensitive, and
//! a refused login is reported with the endpoint (without credentials), the account name and
//! the registry's own message.

use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use reqwest::header::{self, HeaderValue};
use syncer_plugin_api::{Error, Result};
use syncer_plugin_http::client::{Client, Reply};

/// Share of a token's lifetime after which it is renewed (the rest is margin for requests in
/// flight and clock drift).
pub const RENEW_SHARE: f64 = 0.8;
/// How often a token whose payload gives no expiry is renewed.
pub const RENEW_UNKNOWN: Duration = Duration::from_secs(600);
/// After a failed renewal of a still valid token, the next attempt comes after this long at
/// most (sooner when the token expires sooner: half of its remaining life).
pub const RENEW_RETRY: Duration = Duration::from_secs(5);
/// How long after a refused login no new one is tried; doubled after each further refusal.
pub const LOGIN_BACKOFF_MIN: Duration = Duration::from_secs(5);
/// The longest wait between refused logins.
pub const LOGIN_BACKOFF_MAX: Duration = Duration::from_secs(300);
/// Longest lifetime read from a token (30 days); a longer `exp` is renewed as if it were this.
pub const MAX_LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);
/// Longest token accepted from the registry, in bytes (it is sent as a header on every
/// request; servers refuse much smaller headers).
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// A password. `Debug` prints `***`; there is no `Display`: the text is read only through
/// [`Password::expose`], where it is sent.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    /// Wraps the password text.
    pub fn new(text: impl Into<String>) -> Password {
        Password(text.into())
    }

    /// The password text, to send it; never to show it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// A service-center account (RBAC) the plugin logs in as. `Debug` shows the account name and
/// `***` for the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The account name (`name` of `POST /v4/token`).
    pub account: String,
    /// Its password.
    pub password: Password,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("account", &self.account)
            .field("password", &self.password)
            .finish()
    }
}

/// One token and when to renew it.
#[derive(Clone)]
pub(crate) struct Token {
    /// `Bearer <token>`, marked sensitive (hidden from `Debug` of headers).
    authorization: HeaderValue,
    /// Which login got it (1 for the first): tells a caller whose token was refused whether
    /// another request has logged in again since.
    generation: u64,
    /// From this instant on, the next request renews it first.
    renew_at: Instant,
    /// When it expires, when its payload says so.
    expires_at: Option<Instant>,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("generation", &self.generation)
            .field("renew_at", &self.renew_at)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

impl Token {
    /// `request` with `Authorization: Bearer <token>`.
    pub(crate) fn authorize(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        request.header(header::AUTHORIZATION, self.authorization.clone())
    }

    fn expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|at| now >= at)
    }
}

/// The logged-in state of one plugin: its account and current token. Cheap to share: one
/// `Arc` around [`SessionState`].
///
/// A login runs on a task of its own ([`detached`]), not in the future of the request that
/// needed it: it holds the login lock across its `POST /v4/token`, and a caller's future may
/// stop being polled at any time (a `select!` that took another branch and awaits something
/// else first). Inside that future, the held lock would then stop every later login and
/// every request waiting for one, for good (a futurelock: it froze the syncer at a token
/// renewal, issue 13).
pub(crate) struct Session(Arc<SessionState>);

/// What [`Session`] shares with its login tasks.
struct SessionState {
    credentials: Credentials,
    /// The current token. A std lock: held only to copy or replace it, never across an
    /// await.
    current: RwLock<Option<Token>>,
    /// Serialises logins (one at a time: concurrent requests wait for the login in flight
    /// instead of each sending their own), counts them and remembers the last refusal.
    logins: tokio::sync::Mutex<Logins>,
}

/// What the login lock guards.
#[derive(Default)]
struct Logins {
    /// Successful logins so far (the last token's generation).
    count: u64,
    /// The last refused login, while no new one may be tried.
    refused: Option<Refusal>,
}

/// A refused login: its error, and when the next may be tried.
struct Refusal {
    /// The error's text (it names no secret).
    message: String,
    /// No login before this instant.
    until: Instant,
    /// The wait that led to `until` (doubled at the next refusal).
    wait: Duration,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("account", &self.0.credentials.account)
            .finish_non_exhaustive()
    }
}

/// The body of `POST /v4/token`.
#[derive(serde::Serialize)]
struct LoginRequest<'a> {
    name: &'a str,
    password: &'a str,
}

/// The answer of `POST /v4/token`.
#[derive(serde::Deserialize)]
struct LoginReply {
    #[serde(default)]
    token: String,
}

/// The claims of a JWT payload that say how long it lives (RFC 7519 NumericDate: seconds
/// since the epoch, possibly fractional).
#[derive(serde::Deserialize)]
struct Claims {
    exp: Option<f64>,
    iat: Option<f64>,
}

/// How long a token just received lives, read from its unverified JWT payload
/// (`header.payload.signature`, base64url JSON): `exp - iat` (the server's own clock), or
/// `exp` minus `now` when that is sooner and positive (the server rounds `iat` down to a
/// second; a request takes time) or when `iat` is missing. `None` when the payload cannot be
/// read or gives no positive lifetime. At most [`MAX_LIFETIME`].
pub(crate) fn lifetime(token: &str, now: SystemTime) -> Option<Duration> {
    let mut parts = token.split('.');
    let (_header, payload, _signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: Claims = serde_json::from_slice(&bytes).ok()?;
    let exp = claims.exp.filter(|e| e.is_finite())?;
    let now = now.duration_since(UNIX_EPOCH).ok()?.as_secs_f64();
    let by_clock = exp - now;
    let by_server = claims
        .iat
        .filter(|i| i.is_finite())
        .map(|iat| exp - iat)
        .filter(|l| *l > 0.0);
    let seconds = match by_server {
        Some(life) if by_clock > 0.0 => life.min(by_clock),
        Some(life) => life,
        None if by_clock > 0.0 => by_clock,
        None => return None,
    };
    Some(Duration::from_secs_f64(
        seconds.min(MAX_LIFETIME.as_secs_f64()),
    ))
}

/// `now + d`, or far ahead when that does not fit in an `Instant`.
fn after(now: Instant, d: Duration) -> Instant {
    now.checked_add(d)
        .or_else(|| now.checked_add(MAX_LIFETIME))
        .unwrap_or(now)
}

impl Session {
    pub(crate) fn new(credentials: Credentials) -> Session {
        Session(Arc::new(SessionState {
            credentials,
            current: RwLock::new(None),
            logins: tokio::sync::Mutex::new(Logins::default()),
        }))
    }

    /// The account name.
    pub(crate) fn account(&self) -> &str {
        &self.0.credentials.account
    }

    /// The token to send: the current one, or a new one when there is none yet or it is due
    /// for renewal (see the module docs).
    ///
    /// # Errors
    /// As [`SessionState::login`], when there is no valid token to fall back on.
    pub(crate) async fn token(&self, client: &Arc<Client>) -> Result<Token> {
        if let Some(token) = self.0.fresh() {
            return Ok(token);
        }
        let (state, client) = (self.0.clone(), client.clone());
        detached(async move { state.token(&client).await }).await
    }

    /// A token after `used` was refused (401): a newer one when another request has logged
    /// in again since, else a new login.
    ///
    /// # Errors
    /// As [`SessionState::login`].
    pub(crate) async fn refused(&self, client: &Arc<Client>, used: &Token) -> Result<Token> {
        let (state, client, used) = (self.0.clone(), client.clone(), used.clone());
        detached(async move { state.refused(&client, &used).await }).await
    }
}

/// Runs `login` on a task of its own and waits for it (see [`Session`]): it goes on, and
/// releases the login lock, even if the caller's future is never polled again or dropped.
///
/// # Errors
/// `login`'s; [`Error::Unavailable`] if its task ended without an answer (the runtime is
/// shutting down).
async fn detached<F>(login: F) -> Result<Token>
where
    F: std::future::Future<Output = Result<Token>> + Send + 'static,
{
    tokio::spawn(login).await.unwrap_or_else(|e| {
        Err(Error::Unavailable {
            endpoint: "login".into(),
            message: format!("the login task ended without an answer: {e}"),
        })
    })
}

impl SessionState {
    fn current(&self) -> Option<Token> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn store(&self, token: Option<Token>) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = token;
    }

    /// The current token when it is not due for renewal.
    fn fresh(&self) -> Option<Token> {
        self.current().filter(|t| Instant::now() < t.renew_at)
    }

    /// [`Session::token`], on the login task.
    async fn token(&self, client: &Client) -> Result<Token> {
        if let Some(token) = self.fresh() {
            return Ok(token);
        }
        let mut logins = self.logins.lock().await;
        // Another request may have logged in while this one waited.
        if let Some(token) = self.fresh() {
            return Ok(token);
        }
        let old = self.current();
        match self.login(client, &mut logins).await {
            Ok(token) => Ok(token),
            Err(error) => {
                let now = Instant::now();
                match old {
                    Some(mut old) if !old.expired(now) => {
                        let retry = match old.expires_at {
                            Some(at) => RENEW_RETRY.min(at.saturating_duration_since(now) / 2),
                            None => RENEW_RETRY,
                        };
                        old.renew_at = after(now, retry);
                        tracing::warn!(
                            account = %self.credentials.account,
                            error = %error,
                            retry_in_ms = u64::try_from(retry.as_millis()).unwrap_or(u64::MAX),
                            "cannot renew the registry token; the current one is used while it is valid"
                        );
                        self.store(Some(old.clone()));
                        Ok(old)
                    }
                    _ => Err(error),
                }
            }
        }
    }

    /// [`Session::refused`], on the login task.
    async fn refused(&self, client: &Client, used: &Token) -> Result<Token> {
        let mut logins = self.logins.lock().await;
        if let Some(current) = self.current() {
            if current.generation != used.generation {
                return Ok(current);
            }
        }
        self.store(None);
        self.login(client, &mut logins).await
    }

    /// `POST /v4/token`, unless a refused login is still backing off (see the module docs);
    /// the new token becomes the current one.
    ///
    /// # Errors
    /// [`Error::Rejected`] when the registry refuses the login (wrong password, locked
    /// account, no RBAC: 404), naming the endpoint, the account and the registry's message,
    /// also while backing off; [`Error::Unavailable`] when no endpoint answers;
    /// [`Error::Malformed`] when the answer has no usable token.
    async fn login(&self, client: &Client, logins: &mut Logins) -> Result<Token> {
        let now = Instant::now();
        if let Some(refusal) = logins.refused.as_ref().filter(|r| now < r.until) {
            return Err(Error::Rejected(format!(
                "{} (next login attempt in {} s)",
                refusal.message,
                refusal
                    .until
                    .saturating_duration_since(now)
                    .as_secs()
                    .max(1)
            )));
        }
        match self.request_token(client, logins.count + 1).await {
            Ok(token) => {
                logins.count = token.generation;
                logins.refused = None;
                self.store(Some(token.clone()));
                Ok(token)
            }
            Err(Error::Rejected(message)) => {
                let wait = match &logins.refused {
                    Some(last) => (last.wait * 2).min(LOGIN_BACKOFF_MAX),
                    None => LOGIN_BACKOFF_MIN,
                };
                logins.refused = Some(Refusal {
                    message: message.clone(),
                    until: after(Instant::now(), wait),
                    wait,
                });
                Err(Error::Rejected(message))
            }
            Err(other) => Err(other),
        }
    }

    /// One `POST /v4/token`: the token, with `generation`.
    async fn request_token(&self, client: &Client, generation: u64) -> Result<Token> {
        let account = &self.credentials.account;
        let body = serde_json::to_vec(&LoginRequest {
            name: account,
            password: self.credentials.password.expose(),
        })
        .map_err(|e| {
            Error::Rejected(format!("login as account {account:?}: cannot encode: {e}"))
        })?;
        let (endpoint, reply) = client
            .send_with_endpoint(|http, base| {
                http.post(format!("{base}/v4/token"))
                    .header(header::CONTENT_TYPE, "application/json")
                    .header(header::ACCEPT, "application/json")
                    .body(body.clone())
            })
            .await
            .map_err(|e| match e {
                Error::Unavailable { endpoint, message } => Error::Unavailable {
                    endpoint,
                    message: format!("login as account {account:?}: {message}"),
                },
                other => other,
            })?;
        if !reply.status.is_success() {
            return Err(self.refusal(&endpoint, &reply));
        }
        let malformed = |why: String| {
            Error::Malformed(format!("login to {endpoint} as account {account:?}: {why}"))
        };
        // A serde error may quote the body, which holds the token: say where, not what.
        let answer: LoginReply = serde_json::from_slice(&reply.body).map_err(|e| {
            malformed(format!(
                "the answer is not {{\"token\": ...}} ({:?} error at line {} column {})",
                e.classify(),
                e.line(),
                e.column()
            ))
        })?;
        let text = answer.token.trim();
        if text.is_empty() {
            return Err(malformed("the answer has no token".into()));
        }
        if text.len() > MAX_TOKEN_BYTES {
            return Err(malformed(format!(
                "the token is longer than {MAX_TOKEN_BYTES} bytes"
            )));
        }
        let mut authorization = HeaderValue::from_str(&format!("Bearer {text}"))
            .map_err(|_| malformed("the token is not a valid header value".into()))?;
        authorization.set_sensitive(true);
        let now = Instant::now();
        let life = lifetime(text, SystemTime::now());
        let renew_after = life.map_or(RENEW_UNKNOWN, |l| l.mul_f64(RENEW_SHARE));
        let token = Token {
            authorization,
            generation,
            renew_at: after(now, renew_after),
            expires_at: life.map(|l| after(now, l)),
        };
        let valid_ms = life.map(|l| u64::try_from(l.as_millis()).unwrap_or(u64::MAX));
        if generation == 1 {
            tracing::info!(endpoint = %endpoint, account = %account, valid_ms, "logged in to the registry");
        } else {
            tracing::debug!(endpoint = %endpoint, account = %account, valid_ms, login = generation, "logged in to the registry again");
        }
        Ok(token)
    }

    /// The error of a refused login (any non-2xx below 500).
    fn refusal(&self, endpoint: &str, reply: &Reply) -> Error {
        let (_, message) = crate::wire::failure(reply);
        let hint = match reply.status {
            reqwest::StatusCode::NOT_FOUND | reqwest::StatusCode::METHOD_NOT_ALLOWED => {
                " (the registry has no POST /v4/token: is RBAC on? without RBAC, configure no account)"
            }
            _ => "",
        };
        Error::Rejected(format!(
            "login to {endpoint} as account {:?} refused: {message}{hint}",
            self.credentials.account
        ))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn jwt(payload: &str) -> String {
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        format!("{}.{}.c2ln", b64(r#"{"alg":"HS256"}"#), b64(payload))
    }

    fn at(secs: f64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs_f64(secs)
    }

    #[test]
    fn the_lifetime_is_exp_minus_iat_or_the_time_left_by_this_clock_when_sooner() {
        let t = jwt(r#"{"sub":"a","iat":1000,"exp":1600}"#);
        // The clocks agree.
        assert_eq!(lifetime(&t, at(1000.0)), Some(Duration::from_secs(600)));
        // Issued late in second 1000: less is left than exp - iat says.
        assert_eq!(
            lifetime(&t, at(1000.5)),
            Some(Duration::from_millis(599_500))
        );
        // This clock is behind or far ahead: the server's own lifetime.
        assert_eq!(lifetime(&t, at(900.0)), Some(Duration::from_secs(600)));
        assert_eq!(lifetime(&t, at(5000.0)), Some(Duration::from_secs(600)));
        // No iat: by this clock while positive.
        let t = jwt(r#"{"exp":1600.5}"#);
        assert_eq!(
            lifetime(&t, at(1000.0)),
            Some(Duration::from_millis(600_500))
        );
        assert_eq!(lifetime(&t, at(2000.0)), None);
        // A very long one is capped.
        let t = jwt(r#"{"iat":0,"exp":1e15}"#);
        assert_eq!(lifetime(&t, at(0.0)), Some(MAX_LIFETIME));
    }

    #[test]
    fn an_unreadable_payload_has_no_lifetime() {
        let now = at(1000.0);
        for token in [
            "opaque-token".to_owned(),
            "a.b".to_owned(),
            "a.!!!.c".to_owned(),
            jwt("not json"),
            jwt(r#"{"exp":"tomorrow"}"#),
            jwt(r#"{"iat":1000}"#),
            jwt(r#"{"iat":1000,"exp":1000}"#),
            format!("{}.x", jwt(r#"{"exp":2000}"#)),
        ] {
            assert_eq!(lifetime(&token, now), None, "{token}");
        }
        // Padding is tolerated.
        let padded = format!(
            "h.{}.s",
            base64::engine::general_purpose::URL_SAFE.encode(r#"{"exp":1010}"#)
        );
        assert_eq!(lifetime(&padded, now), Some(Duration::from_secs(10)));
    }

    /// A registry whose `POST /v4/token` answers after `delay`; counts the logins.
    async fn slow_login_registry(
        delay: Duration,
    ) -> (Arc<Client>, Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let logins = Arc::new(AtomicUsize::new(0));
        let counted = logins.clone();
        let token = jwt(r#"{"sub":"syncer"}"#);
        let app = axum::Router::new().route(
            "/v4/token",
            axum::routing::post(move || {
                let (counted, token) = (counted.clone(), token.clone());
                async move {
                    counted.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(delay).await;
                    axum::Json(serde_json::json!({ "token": token }))
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let client = Client::new(vec![format!("http://{addr}")], Duration::from_secs(5)).unwrap();
        (Arc::new(client), logins)
    }

    fn session() -> Session {
        Session::new(Credentials {
            account: "syncer".into(),
            password: Password::new("s3cret!"),
        })
    }

    /// The futurelock of issue 13: a caller whose future stops being polled while its login
    /// is in flight (a `select!` that took another branch) must not hold the login lock
    /// from everyone else. The login goes on by itself; the next caller shares its token.
    #[tokio::test]
    async fn a_login_whose_caller_stops_polling_ends_all_the_same_and_frees_the_next() {
        let (client, logins) = slow_login_registry(Duration::from_millis(300)).await;
        let session = session();
        let mut first = Box::pin(session.token(&client));
        // Polled until its login is in flight, then never again (and not dropped).
        assert!(
            tokio::time::timeout(Duration::from_millis(100), &mut first)
                .await
                .is_err(),
            "the login answered before its delay"
        );
        let second = tokio::time::timeout(Duration::from_secs(5), session.token(&client))
            .await
            .expect("a second caller waits for the login in flight, not for the first caller")
            .unwrap();
        assert_eq!(second.generation, 1, "one login, shared");
        assert_eq!(logins.load(std::sync::atomic::Ordering::SeqCst), 1);
        // The same after a 401: a refused token's new login does not live in its caller.
        let mut third = Box::pin(session.refused(&client, &second));
        assert!(tokio::time::timeout(Duration::from_millis(100), &mut third)
            .await
            .is_err());
        let fourth = tokio::time::timeout(Duration::from_secs(5), session.token(&client))
            .await
            .expect("a caller after a 401 is not stuck behind the login of the 401")
            .unwrap();
        assert_eq!(fourth.generation, 2);
        drop((first, third));
    }

    #[test]
    fn credentials_never_show_the_password() {
        let c = Credentials {
            account: "syncer".into(),
            password: Password::new("s3cret!"),
        };
        let shown = format!("{c:?}");
        assert!(shown.contains("syncer") && shown.contains("***"), "{shown}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert_eq!(c.password.expose(), "s3cret!");
    }
}
