//! The HTTP transport: a list of registry endpoints tried in order, with failover.
//!
//! Each request goes first to the endpoint that answered last; a transport error, a timeout or
//! a 5xx moves it on to the next one, wrapping round, until every endpoint has been tried once.
//! Any other answer (2xx, 4xx) is returned to the caller, and its endpoint becomes the
//! preferred one. This fixes the 1.3.0 client, which went round-robin and had no "last good".
//!
//! Credentials in an endpoint URL (`http://user:pass@host:8761/eureka`, percent-encoded as in
//! any URL) are taken out of it and sent as `Authorization: Basic` on every request to that
//! endpoint, as the Eureka Java client does; the URL used in requests, logs and errors has no
//! credentials. gzip answers are decoded transparently (`Accept-Encoding: gzip` is sent).
//!
//! `https://` endpoints use rustls with the [`rustls::ClientConfig`] given to
//! [`Client::with_tls`] (trusted CAs, client certificate, versions, cipher suites; the daemon
//! builds it from `servicecenter.tls_config` / `--sc-tls-*`). Without one, an `https://`
//! endpoint is refused at build time: no built-in root store is ever used silently. A
//! failure is reported with its whole cause chain, so a certificate problem names itself
//! (`invalid peer certificate: UnknownIssuer`), not just "error sending request".

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub use rustls;

use syncer_plugin_api::Error;

/// An answer that was not a transport failure or a 5xx.
#[derive(Debug)]
pub struct Reply {
    /// HTTP status.
    pub status: reqwest::StatusCode,
    /// The whole body (gzip already undone).
    pub body: Vec<u8>,
    /// Response headers.
    pub headers: reqwest::header::HeaderMap,
}

impl Reply {
    /// The body as text, for error messages (lossy, trimmed, at most 512 bytes).
    pub fn text(&self) -> String {
        let text = String::from_utf8_lossy(&self.body);
        let text = text.trim();
        match text.char_indices().nth(512) {
            Some((cut, _)) => format!("{}...", &text[..cut]),
            None => text.to_owned(),
        }
    }
}

/// One endpoint: its base URL without credentials, and the credentials.
struct Target {
    /// Base URL without a trailing `/` and without `user:pass@`.
    base: String,
    /// (user, password) from the URL, percent-decoded.
    auth: Option<(String, String)>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the password.
        f.debug_struct("Target")
            .field("base", &self.base)
            .field("user", &self.auth.as_ref().map(|(u, _)| u))
            .finish()
    }
}

/// Decodes `%XX` escapes (invalid ones are kept as written).
fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// Splits `scheme://user:pass@host/...` into the URL without credentials and the credentials.
fn split_credentials(url: &str) -> Target {
    if let Some((scheme, rest)) = url.split_once("://") {
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        if let Some(at) = rest[..authority_end].rfind('@') {
            let userinfo = &rest[..at];
            let (user, pass) = userinfo.split_once(':').unwrap_or((userinfo, ""));
            return Target {
                base: format!("{scheme}://{}", &rest[at + 1..]),
                auth: Some((percent_decode(user), percent_decode(pass))),
            };
        }
    }
    Target {
        base: url.to_owned(),
        auth: None,
    }
}

/// Endpoints plus the HTTP client that talks to them.
#[derive(Debug)]
pub struct Client {
    http: reqwest::Client,
    /// The endpoints, in the configured order.
    endpoints: Vec<Target>,
    /// Index of the endpoint that answered last; where the next request starts. Shared by
    /// concurrent calls, hence atomic; a race only costs one extra failover.
    preferred: AtomicUsize,
}

impl Client {
    /// Builds the client. `endpoints` must be non-empty, already normalised base URLs; they
    /// may carry `user:pass@` (see the module docs).
    ///
    /// # Errors
    /// [`Error::Rejected`] when the list is empty or the HTTP client cannot be built.
    pub fn new(endpoints: Vec<String>, request_timeout: Duration) -> Result<Self, Error> {
        Client::with_tls(endpoints, request_timeout, None)
    }

    /// [`Client::new`], with `tls` for `https://` endpoints (trusted CAs, client
    /// certificate, versions, cipher suites).
    ///
    /// # Errors
    /// [`Error::Rejected`] when the list is empty, when an endpoint is `https://` and `tls` is
    /// `None`, or when the HTTP client cannot be built.
    pub fn with_tls(
        endpoints: Vec<String>,
        request_timeout: Duration,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Result<Self, Error> {
        if endpoints.is_empty() {
            return Err(Error::Rejected("no registry endpoint configured".into()));
        }
        let mut builder = reqwest::Client::builder()
            .timeout(request_timeout)
            .connect_timeout(request_timeout);
        match tls {
            Some(config) => builder = builder.use_preconfigured_tls((*config).clone()),
            None => {
                if let Some(https) = endpoints.iter().find(|e| is_https(e)) {
                    return Err(Error::Rejected(format!(
                        "{} is an https:// endpoint but no TLS client configuration was given",
                        split_credentials(https).base
                    )));
                }
            }
        }
        let http = builder
            .build()
            .map_err(|e| Error::Rejected(format!("cannot build http client: {}", chain(&e))))?;
        Ok(Client {
            http,
            endpoints: endpoints.iter().map(|e| split_credentials(e)).collect(),
            preferred: AtomicUsize::new(0),
        })
    }

    /// Sends the request that `build` makes for a base URL, failing over as the module doc
    /// says.
    ///
    /// # Errors
    /// [`Error::Unavailable`] (naming the last endpoint tried) when no endpoint answered below 500.
    pub async fn send<F>(&self, build: F) -> Result<Reply, Error>
    where
        F: Fn(&reqwest::Client, &str) -> reqwest::RequestBuilder,
    {
        Ok(self.send_with_endpoint(build).await?.1)
    }

    /// [`Client::send`], and the endpoint that answered: its base URL as configured, without
    /// credentials (safe to show in logs and errors).
    ///
    /// # Errors
    /// As [`Client::send`].
    pub async fn send_with_endpoint<F>(&self, build: F) -> Result<(String, Reply), Error>
    where
        F: Fn(&reqwest::Client, &str) -> reqwest::RequestBuilder,
    {
        let (index, answer) = self.attempt(build).await?;
        let base = self.endpoints[index].base.clone();
        match answer {
            Err(reply) => Ok((base, reply)),
            Ok(response) => {
                let endpoint = response.url().origin().ascii_serialization();
                match Self::read(response).await {
                    Ok(reply) => Ok((base, reply)),
                    Err(e) => Err(Error::Unavailable {
                        endpoint,
                        message: format!("reading the answer: {}", chain(&e)),
                    }),
                }
            }
        }
    }

    /// [`Client::send`], but a successful (2xx) answer comes back with its body unread, for
    /// the caller to read a chunk at a time (`reqwest::Response::chunk`): a listing of a
    /// large registry is never held whole. Any other answer is read whole, as `send` does.
    ///
    /// # Errors
    /// As [`Client::send`].
    pub async fn send_streaming<F>(
        &self,
        build: F,
    ) -> Result<Result<reqwest::Response, Reply>, Error>
    where
        F: Fn(&reqwest::Client, &str) -> reqwest::RequestBuilder,
    {
        Ok(self.attempt(build).await?.1)
    }

    /// [`Client::send_streaming`], and the index of the endpoint that answered.
    async fn attempt<F>(&self, build: F) -> Result<(usize, Result<reqwest::Response, Reply>), Error>
    where
        F: Fn(&reqwest::Client, &str) -> reqwest::RequestBuilder,
    {
        let start = self.preferred.load(Ordering::Relaxed);
        let n = self.endpoints.len();
        let mut last = None;
        for i in 0..n {
            let index = (start + i) % n;
            let target = &self.endpoints[index];
            let base = &target.base;
            let mut request = build(&self.http, base);
            if let Some((user, pass)) = &target.auth {
                request = request.basic_auth(user, Some(pass));
            }
            let outcome = match request.send().await {
                Ok(response) if response.status().is_success() => Ok(Ok(response)),
                Ok(response) => Self::read(response).await.map(Err),
                Err(e) => Err(e),
            };
            match outcome {
                Ok(Err(reply)) if reply.status.is_server_error() => {
                    let message = format!("{}: {}", reply.status, reply.text());
                    tracing::debug!(endpoint = %base, %message, "registry answered 5xx");
                    last = Some(Error::Unavailable {
                        endpoint: base.clone(),
                        message,
                    });
                }
                Ok(answer) => {
                    if index != start {
                        self.preferred.store(index, Ordering::Relaxed);
                        tracing::debug!(endpoint = %base, "registry endpoint switched");
                    }
                    return Ok((index, answer));
                }
                Err(e) => {
                    let message = chain(&e);
                    tracing::debug!(endpoint = %base, error = %message, "registry unreachable");
                    last = Some(Error::Unavailable {
                        endpoint: base.clone(),
                        message,
                    });
                }
            }
        }
        Err(last.unwrap_or_else(|| Error::Unavailable {
            endpoint: String::new(),
            message: "no endpoint".into(),
        }))
    }

    async fn read(response: reqwest::Response) -> Result<Reply, reqwest::Error> {
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.bytes().await?.to_vec();
        Ok(Reply {
            status,
            body,
            headers,
        })
    }
}

/// Whether `url` has the `https` scheme.
pub fn is_https(url: &str) -> bool {
    url.split_once("://")
        .is_some_and(|(scheme, _)| scheme.eq_ignore_ascii_case("https"))
}

/// Renders a transport error with its causes (`a: b: c`): reqwest's own text says only
/// "error sending request for url (...)", the reason (refused, timed out, a TLS alert, a
/// certificate the CA did not sign) is in the sources. A certificate problem gets a hint
/// naming the settings to check.
pub fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = error.to_string();
    let mut hint = rustls_error(error).and_then(tls_hint);
    let mut source = error.source();
    while let Some(e) = source {
        let text = e.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        if let Some(tls) = rustls_error(e) {
            hint = tls_hint(tls);
        }
        source = e.source();
    }
    if let Some(hint) = hint {
        out.push_str(" (");
        out.push_str(hint);
        out.push(')');
    }
    out
}

/// The rustls error `e` is or wraps: an io::Error shows its inner error's text but does not
/// return it as a source, and the connector nests one io::Error in another.
fn rustls_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut current = e;
    for _ in 0..8 {
        if let Some(tls) = current.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        let inner = current.downcast_ref::<std::io::Error>()?.get_ref()?;
        current = inner;
    }
    None
}

/// What to check for a TLS error a registry connection ended with.
fn tls_hint(error: &rustls::Error) -> Option<&'static str> {
    use rustls::CertificateError as C;
    match error {
        rustls::Error::InvalidCertificate(cert) => Some(match cert {
            C::UnknownIssuer | C::BadSignature => {
                "the registry's certificate is not signed by a trusted CA: check --sc-tls-ca-file / servicecenter.tls_config.ca_file"
            }
            C::NotValidForName | C::NotValidForNameContext { .. } => {
                "the registry's certificate does not name the host of the address: use a name or IP the certificate carries"
            }
            C::Expired | C::ExpiredContext { .. } => "the registry's certificate has expired",
            C::NotValidYet | C::NotValidYetContext { .. } => {
                "the registry's certificate is not valid yet (clock skew?)"
            }
            C::Revoked => "the registry's certificate is revoked",
            _ => "the registry's certificate was refused",
        }),
        rustls::Error::AlertReceived(_) => Some(
            "the registry refused the handshake: does it require a client certificate (--sc-tls-cert-file, --sc-tls-key-file) or another TLS version or cipher?",
        ),
        _ => None,
    }
}

/// Percent-encodes one path segment (everything but RFC 3986 unreserved characters).
pub fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_encodes_reserved_characters() {
        assert_eq!(segment("a-b_c.d~e"), "a-b_c.d~e");
        assert_eq!(segment("10.0.0.1:app:80"), "10.0.0.1%3Aapp%3A80");
        assert_eq!(segment("a/b c"), "a%2Fb%20c");
    }

    #[test]
    fn credentials_are_split_out_of_the_url() {
        let t = split_credentials("http://us%40er:p%3Ass@h:8761/eureka");
        assert_eq!(t.base, "http://h:8761/eureka");
        assert_eq!(t.auth, Some(("us@er".into(), "p:ss".into())));
        let t = split_credentials("http://h:8761/eureka?a=b@c");
        assert_eq!(
            (t.base.as_str(), t.auth),
            ("http://h:8761/eureka?a=b@c", None)
        );
        assert!(!format!("{:?}", split_credentials("http://u:secret@h")).contains("secret"));
        assert_eq!(percent_decode("a%2"), "a%2");
    }

    #[tokio::test]
    async fn credentials_in_the_url_are_sent_as_basic_auth_and_gzip_is_decoded() {
        use std::io::Write;
        let app = axum::Router::new().fallback(|headers: axum::http::HeaderMap| async move {
            let auth = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            let gzip = headers
                .get("accept-encoding")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.contains("gzip"));
            // "user:pa ss" in base64.
            if auth != "Basic dXNlcjpwYSBzcw==" || !gzip {
                return (axum::http::StatusCode::UNAUTHORIZED, Vec::new()).into_response();
            }
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            enc.write_all(b"zipped").expect("gzip");
            (
                [(axum::http::header::CONTENT_ENCODING, "gzip")],
                enc.finish().expect("gzip"),
            )
                .into_response()
        });
        use axum::response::IntoResponse;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        let client = Client::new(
            vec![format!("http://user:pa%20ss@{addr}/eureka")],
            Duration::from_secs(5),
        )
        .expect("client");
        let reply = client
            .send(|http, base| {
                assert!(!base.contains("user"), "{base}");
                http.get(format!("{base}/apps/"))
            })
            .await
            .expect("answered");
        assert_eq!(reply.status, reqwest::StatusCode::OK);
        assert_eq!(reply.body, b"zipped");
    }

    #[test]
    fn an_https_endpoint_without_a_tls_configuration_is_rejected() {
        let err = Client::new(
            vec!["https://u:secret@registry:30100".into()],
            Duration::from_secs(1),
        )
        .expect_err("no tls");
        let text = err.to_string();
        assert!(text.contains("https://registry:30100"), "{text}");
        assert!(!text.contains("secret"), "{text}");
        assert!(is_https("HTTPS://h") && !is_https("http://h"));
    }

    #[test]
    fn an_empty_endpoint_list_is_rejected() {
        assert!(matches!(
            Client::new(Vec::new(), Duration::from_secs(1)),
            Err(Error::Rejected(_))
        ));
    }

    /// Serves `status` on every path of a loopback port, counting hits.
    async fn fixed(status: u16) -> (String, std::sync::Arc<AtomicUsize>) {
        let hits = std::sync::Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        let app = axum::Router::new().fallback(move || {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                (
                    axum::http::StatusCode::from_u16(status).expect("valid status"),
                    "body",
                )
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        (format!("http://{addr}"), hits)
    }

    #[tokio::test]
    async fn a_5xx_fails_over_and_the_good_endpoint_is_remembered() {
        let (bad, bad_hits) = fixed(503).await;
        let (good, good_hits) = fixed(200).await;
        let client = Client::new(vec![bad, good], Duration::from_secs(5)).expect("client");
        for _ in 0..3 {
            let reply = client
                .send(|http, base| http.get(format!("{base}/x")))
                .await
                .expect("fails over");
            assert_eq!(reply.status, reqwest::StatusCode::OK);
        }
        assert_eq!(bad_hits.load(Ordering::SeqCst), 1);
        assert_eq!(good_hits.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn the_endpoint_that_answered_is_named_without_its_credentials() {
        let (bad, _) = fixed(503).await;
        let (good, _) = fixed(401).await;
        let with_credentials = good.replace("http://", "http://user:pw@");
        let client =
            Client::new(vec![bad, with_credentials], Duration::from_secs(5)).expect("client");
        let (endpoint, reply) = client
            .send_with_endpoint(|http, base| http.get(format!("{base}/x")))
            .await
            .expect("answered");
        assert_eq!(reply.status, reqwest::StatusCode::UNAUTHORIZED);
        assert_eq!(endpoint, good);
    }

    #[tokio::test]
    async fn a_4xx_is_an_answer_not_a_failover() {
        let (rejecting, _) = fixed(400).await;
        let (good, good_hits) = fixed(200).await;
        let client = Client::new(vec![rejecting, good], Duration::from_secs(5)).expect("client");
        let reply = client
            .send(|http, base| http.get(format!("{base}/x")))
            .await
            .expect("answered");
        assert_eq!(reply.status, reqwest::StatusCode::BAD_REQUEST);
        assert_eq!(reply.text(), "body");
        assert_eq!(good_hits.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn all_endpoints_failing_is_unavailable() {
        let (bad, _) = fixed(500).await;
        let client = Client::new(vec![bad.clone()], Duration::from_secs(5)).expect("client");
        let error = client
            .send(|http, base| http.get(format!("{base}/x")))
            .await
            .expect_err("unavailable");
        assert!(
            matches!(&error, Error::Unavailable { endpoint, .. } if *endpoint == bad),
            "{error}"
        );
    }
}
