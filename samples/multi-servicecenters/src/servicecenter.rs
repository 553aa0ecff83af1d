//! A minimal service-center v4 REST client: what the Go chassis of the original hello-server
//! did for it (`reference/servicecomb-notes.md` b.2 and c.4).
//!
//! Every call goes to `{registry}/v4/default/registry/..` with `X-Domain-Name: default`.
//! [`ScClient`] has one method per endpoint; failures are a [`ScError`] so that callers can
//! decide by kind ([`ScError::is_instance_gone`]) and never by message text.
//! [`rest_endpoint_to_url`] turns a ServiceComb endpoint (`rest://host:port?sslEnabled=..`)
//! into an HTTP base URL.

use std::time::Duration;

use reqwest::{RequestBuilder, StatusCode};
use serde::Serialize;
use serde_json::{json, Value};

/// The tenant: domain (header) and project (path segment).
const DOMAIN: &str = "default";
const PROJECT: &str = "default";
/// Per-request timeout of the registry calls.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// service-center error code: the instance does not exist.
pub use syncer_wire_servicecenter::error::INSTANCE_NOT_EXISTS as CODE_INSTANCE_NOT_EXIST;
/// service-center error code: the microservice does not exist.
pub use syncer_wire_servicecenter::error::SERVICE_NOT_EXISTS as CODE_SERVICE_NOT_EXIST;
/// service-center error code: no version matches the version rule (existence).
pub use syncer_wire_servicecenter::error::SERVICE_VERSION_NOT_EXISTS as CODE_VERSION_NOT_EXIST;

/// A failed service-center call.
#[derive(Debug, thiserror::Error)]
pub enum ScError {
    /// The registry could not be reached, or the connection broke.
    #[error("service-center unreachable at {url}")]
    Transport {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// The registry answered with an error status.
    #[error("service-center answered {status} to {url}: code {code:?}, {message}")]
    Api {
        url: String,
        status: StatusCode,
        /// `errorCode` of the SC error body, when there was one.
        code: Option<u32>,
        /// `errorMessage` and `detail`, or the raw body.
        message: String,
    },
    /// The registry answered 200 with a body we cannot read.
    #[error("unexpected service-center answer from {url}: {reason}")]
    Decode { url: String, reason: String },
}

impl ScError {
    /// The SC error code, when the registry answered with one.
    pub fn code(&self) -> Option<u32> {
        match self {
            Self::Api { code, .. } => *code,
            _ => None,
        }
    }

    /// The instance (or its service) is unknown to the registry: register again.
    pub fn is_instance_gone(&self) -> bool {
        match self {
            Self::Api { status, code, .. } => {
                *status == StatusCode::NOT_FOUND
                    || matches!(
                        *code,
                        Some(CODE_INSTANCE_NOT_EXIST | CODE_SERVICE_NOT_EXIST)
                    )
            }
            _ => false,
        }
    }
}

/// A microservice key inside the default tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceKey {
    pub app_id: String,
    pub service_name: String,
    pub version: String,
}

/// An SC instance as the demo reads it (the wire crate's record).
pub use syncer_wire_servicecenter::MicroServiceInstance as Instance;
use syncer_wire_servicecenter::{ErrorBody, InstancesReply};

/// A client of one service-center's v4 API.
#[derive(Debug, Clone)]
pub struct ScClient {
    http: reqwest::Client,
    /// `{registry}/v4/default/registry`.
    base: String,
}

impl ScClient {
    /// A client of the registry at `registry_url` (e.g. `http://127.0.0.1:30100`).
    ///
    /// # Errors
    /// When the HTTP client cannot be built.
    pub fn new(registry_url: &str) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()?;
        Ok(Self {
            http,
            base: format!(
                "{}/v4/{PROJECT}/registry",
                registry_url.trim_end_matches('/')
            ),
        })
    }

    /// Sends one request and returns the body of a 2xx answer (`Null` when empty).
    async fn send(&self, url: String, request: RequestBuilder) -> Result<Value, ScError> {
        let response = request
            .header("X-Domain-Name", DOMAIN)
            .send()
            .await
            .map_err(|source| ScError::Transport {
                url: url.clone(),
                source,
            })?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|source| ScError::Transport {
                url: url.clone(),
                source,
            })?;
        if !status.is_success() {
            let (code, message) = parse_error_body(&bytes);
            return Err(ScError::Api {
                url,
                status,
                code,
                message,
            });
        }
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes).map_err(|error| ScError::Decode {
            url,
            reason: error.to_string(),
        })
    }

    /// `GET /existence?type=microservice&..`: the service id, or `None` when there is no such
    /// service (400012 / 400026).
    ///
    /// # Errors
    /// Any other failure.
    pub async fn service_id(&self, key: &ServiceKey) -> Result<Option<String>, ScError> {
        let url = format!("{}/existence", self.base);
        let request = self.http.get(&url).query(&[
            ("type", "microservice"),
            ("appId", &key.app_id),
            ("serviceName", &key.service_name),
            ("version", &key.version),
        ]);
        match self.send(url.clone(), request).await {
            Ok(body) => string_field(&url, &body, "serviceId").map(Some),
            Err(error)
                if matches!(
                    error.code(),
                    Some(CODE_SERVICE_NOT_EXIST | CODE_VERSION_NOT_EXIST)
                ) =>
            {
                Ok(None)
            }
            Err(error) => Err(error),
        }
    }

    /// `POST /microservices`: creates the service and returns its id.
    ///
    /// # Errors
    /// Any failure, including "already exists".
    pub async fn create_service(&self, key: &ServiceKey) -> Result<String, ScError> {
        let url = format!("{}/microservices", self.base);
        let request = self.http.post(&url).json(&json!({ "service": key }));
        let body = self.send(url.clone(), request).await?;
        string_field(&url, &body, "serviceId")
    }

    /// The id of the service, created if it does not exist yet.
    ///
    /// # Errors
    /// When either call fails.
    pub async fn ensure_service(&self, key: &ServiceKey) -> Result<String, ScError> {
        match self.service_id(key).await? {
            Some(id) => Ok(id),
            None => self.create_service(key).await,
        }
    }

    /// `POST /microservices/{sid}/instances` with a host name and endpoints; server defaults
    /// for everything else (UP, push heartbeat every 30 s, 3 misses allowed).
    ///
    /// # Errors
    /// Any failure.
    pub async fn register_instance(
        &self,
        service_id: &str,
        host_name: &str,
        endpoints: &[String],
    ) -> Result<String, ScError> {
        let url = format!("{}/microservices/{service_id}/instances", self.base);
        let request = self.http.post(&url).json(&json!({
            "instance": { "hostName": host_name, "endpoints": endpoints }
        }));
        let body = self.send(url.clone(), request).await?;
        string_field(&url, &body, "instanceId")
    }

    /// `PUT /microservices/{sid}/instances/{iid}/heartbeat`.
    ///
    /// # Errors
    /// Any failure; [`ScError::is_instance_gone`] tells when to register again.
    pub async fn heartbeat(&self, service_id: &str, instance_id: &str) -> Result<(), ScError> {
        let url = format!(
            "{}/microservices/{service_id}/instances/{instance_id}/heartbeat",
            self.base
        );
        let request = self.http.put(&url);
        self.send(url, request).await.map(drop)
    }

    /// `DELETE /microservices/{sid}/instances/{iid}`.
    ///
    /// # Errors
    /// Any failure.
    pub async fn unregister(&self, service_id: &str, instance_id: &str) -> Result<(), ScError> {
        let url = format!(
            "{}/microservices/{service_id}/instances/{instance_id}",
            self.base
        );
        let request = self.http.delete(&url);
        self.send(url, request).await.map(drop)
    }

    /// `GET /instances?appId&serviceName&version` as consumer `consumer_id`: the provider's
    /// instances (also records the dependency on the server, as the Go SDK does).
    ///
    /// # Errors
    /// Any failure; an unknown provider is a 400012 [`ScError::Api`].
    pub async fn find_instances(
        &self,
        consumer_id: &str,
        provider: &ServiceKey,
    ) -> Result<Vec<Instance>, ScError> {
        let url = format!("{}/instances", self.base);
        let request = self
            .http
            .get(&url)
            .header("X-ConsumerId", consumer_id)
            .query(&[
                ("appId", provider.app_id.as_str()),
                ("serviceName", &provider.service_name),
                ("version", &provider.version),
            ]);
        let body = self.send(url.clone(), request).await?;
        if body.is_null() {
            return Ok(Vec::new());
        }
        let body: InstancesReply =
            serde_json::from_value(body).map_err(|error| ScError::Decode {
                url,
                reason: error.to_string(),
            })?;
        Ok(body.instances)
    }
}

fn string_field(url: &str, body: &Value, field: &str) -> Result<String, ScError> {
    match body.get(field).and_then(Value::as_str) {
        Some(value) if !value.is_empty() => Ok(value.to_owned()),
        _ => Err(ScError::Decode {
            url: url.to_owned(),
            reason: format!("no {field} in {body}"),
        }),
    }
}

/// Reads `{"errorCode":"400017","errorMessage":..,"detail":..}`; the code may be a string
/// (service-center 1.x) or a number. Any other body becomes the message as is.
fn parse_error_body(bytes: &[u8]) -> (Option<u32>, String) {
    let text = String::from_utf8_lossy(bytes).trim().to_owned();
    let Ok(body) = serde_json::from_slice::<ErrorBody>(bytes) else {
        return (None, text);
    };
    let message = [body.error_message.as_str(), body.detail.as_str()]
        .into_iter()
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join(": ");
    (
        body.error_code,
        if message.is_empty() { text } else { message },
    )
}

/// Turns a ServiceComb endpoint into an HTTP base URL without a trailing slash:
/// `rest://127.0.0.1:8090?sslEnabled=false` → `http://127.0.0.1:8090`; `sslEnabled=true`
/// gives `https://`. `http://` and `https://` endpoints are kept (query stripped).
/// Returns `None` for other transports (`highway://`, ..) and for an empty address.
pub fn rest_endpoint_to_url(endpoint: &str) -> Option<String> {
    let endpoint = endpoint.trim();
    let (scheme, rest) = endpoint.split_once("://")?;
    let (address, query) = match rest.split_once('?') {
        Some((address, query)) => (address, Some(query)),
        None => (rest, None),
    };
    let address = address.trim_end_matches('/');
    if address.is_empty() {
        return None;
    }
    let ssl = query
        .into_iter()
        .flat_map(|query| query.split('&'))
        .any(|pair| pair.eq_ignore_ascii_case("sslEnabled=true"));
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "rest" if ssl => "https",
        "rest" | "http" => "http",
        "https" => "https",
        _ => return None,
    };
    Some(format!("{scheme}://{address}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rest_endpoints_become_http_urls() {
        assert_eq!(
            rest_endpoint_to_url("rest://127.0.0.1:8090").as_deref(),
            Some("http://127.0.0.1:8090")
        );
        assert_eq!(
            rest_endpoint_to_url("rest://10.0.0.10:8090/").as_deref(),
            Some("http://10.0.0.10:8090")
        );
    }

    #[test]
    fn the_query_of_an_endpoint_is_stripped() {
        assert_eq!(
            rest_endpoint_to_url("rest://127.0.0.1:8090?sslEnabled=false").as_deref(),
            Some("http://127.0.0.1:8090")
        );
        assert_eq!(
            rest_endpoint_to_url("rest://127.0.0.1:8090/?urlPrefix=%2Fapi&x=1").as_deref(),
            Some("http://127.0.0.1:8090")
        );
    }

    #[test]
    fn ssl_enabled_rest_endpoints_become_https_urls() {
        assert_eq!(
            rest_endpoint_to_url("rest://127.0.0.1:8443?sslEnabled=true").as_deref(),
            Some("https://127.0.0.1:8443")
        );
    }

    #[test]
    fn http_endpoints_are_kept() {
        assert_eq!(
            rest_endpoint_to_url("http://host:80").as_deref(),
            Some("http://host:80")
        );
        assert_eq!(
            rest_endpoint_to_url("HTTPS://host:443?a=b").as_deref(),
            Some("https://host:443")
        );
    }

    #[test]
    fn other_transports_and_garbage_are_refused() {
        for endpoint in ["highway://127.0.0.1:7070", "127.0.0.1:8090", "rest://", ""] {
            assert_eq!(rest_endpoint_to_url(endpoint), None, "{endpoint}");
        }
    }

    #[test]
    fn error_bodies_give_their_code_as_string_or_number() {
        let (code, message) = parse_error_body(
            br#"{"errorCode":"400017","errorMessage":"Instance does not exist","detail":"x"}"#,
        );
        assert_eq!(code, Some(CODE_INSTANCE_NOT_EXIST));
        assert_eq!(message, "Instance does not exist: x");
        assert_eq!(
            parse_error_body(br#"{"errorCode":400012}"#).0,
            Some(CODE_SERVICE_NOT_EXIST)
        );
        assert_eq!(
            parse_error_body(b"404 page not found"),
            (None, "404 page not found".to_owned())
        );
    }
}
