//! The HTTP transport: a list of registry endpoints tried in order, with failover.
//!
//! Each request goes first to the endpoint that answered last; a transport error, a timeout or
//! a 5xx moves it on to the next one, wrapping round, until every endpoint has been tried once.
//! Any other answer (2xx, 4xx) is returned to the caller, and its endpoint becomes the
//! preferred one. This fixes the 1.3.0 client, which went round-robin and had no "last good".

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

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

/// Endpoints plus the HTTP client that talks to them.
#[derive(Debug)]
pub struct Client {
    http: reqwest::Client,
    /// Base URLs without a trailing `/`.
    endpoints: Vec<String>,
    /// Index of the endpoint that answered last; where the next request starts. Shared by
    /// concurrent calls, hence atomic; a race only costs one extra failover.
    preferred: AtomicUsize,
}

impl Client {
    /// Builds the client. `endpoints` must be non-empty, already normalised base URLs.
    ///
    /// # Errors
    /// [`Error::Rejected`] when the list is empty or the HTTP client cannot be built.
    pub fn new(endpoints: Vec<String>, request_timeout: Duration) -> Result<Self, Error> {
        if endpoints.is_empty() {
            return Err(Error::Rejected("no registry endpoint configured".into()));
        }
        let http = reqwest::Client::builder()
            .timeout(request_timeout)
            .connect_timeout(request_timeout)
            .build()
            .map_err(|e| Error::Rejected(format!("cannot build http client: {e}")))?;
        Ok(Client {
            http,
            endpoints,
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
        let start = self.preferred.load(Ordering::Relaxed);
        let n = self.endpoints.len();
        let mut last = None;
        for i in 0..n {
            let index = (start + i) % n;
            let base = &self.endpoints[index];
            match self.try_one(build(&self.http, base)).await {
                Ok(reply) if !reply.status.is_server_error() => {
                    if index != start {
                        self.preferred.store(index, Ordering::Relaxed);
                        tracing::debug!(endpoint = %base, "registry endpoint switched");
                    }
                    return Ok(reply);
                }
                Ok(reply) => {
                    let message = format!("{}: {}", reply.status, reply.text());
                    tracing::debug!(endpoint = %base, %message, "registry answered 5xx");
                    last = Some(Error::Unavailable {
                        endpoint: base.clone(),
                        message,
                    });
                }
                Err(e) => {
                    tracing::debug!(endpoint = %base, error = %e, "registry unreachable");
                    last = Some(Error::Unavailable {
                        endpoint: base.clone(),
                        message: e.to_string(),
                    });
                }
            }
        }
        Err(last.unwrap_or_else(|| Error::Unavailable {
            endpoint: String::new(),
            message: "no endpoint".into(),
        }))
    }

    async fn try_one(&self, request: reqwest::RequestBuilder) -> Result<Reply, reqwest::Error> {
        let response = request.send().await?;
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
