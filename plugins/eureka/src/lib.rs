//! The `eureka` plugin: a Eureka v2 REST client implementing [`syncer_plugin_api::Plugin`], for
//! a Netflix / Spring Cloud Eureka server or the built-in core's `/eureka` API.
//!
//! Where it sits (DESIGN.md): the exporter calls [`Plugin::list`] to read the local registry;
//! the importer calls [`Plugin::ensure_service`], [`Plugin::register`], [`Plugin::heartbeat`] and
//! [`Plugin::unregister`] to mirror the other clusters' instances into it.
//!
//! Mapping (the service-center syncer 1.3.0's, `syncer/plugins/eureka`): an Eureka app `NAME`
//! is the service appId `eureka`, serviceName and id `name` (lower case), version `0.0.1`, in
//! `default/default`; an instance's `metadata` is its properties (origin keys included), so an
//! imported instance is recognisable when read back. Differences from 1.3.0: instances of
//! every status are listed (1.3.0 kept only `UP`); the instance id is the one the importer
//! chose (1.3.0 rewrote ids not shaped `a:b:c`); `secureVipAddress` is the service name, not
//! the endpoint URL; metadata is the instance's properties (1.3.0 sent only its source id);
//! the lease comes from the health check. See `wire` for the field-level mapping.
//!
//! Requests: `Accept: application/json` and `Content-Type: application/json`, gzip accepted.
//! Endpoints are tried in order with failover to the next on transport errors and 5xx,
//! remembering the last good one (eureka-notes §8). Errors map onto
//! [`syncer_plugin_api::Error`]: transport/5xx → `Unavailable`, 404 → `NotFound`, other 4xx →
//! `Rejected` with the server's text, an undecodable body → `Malformed`.

mod wire;

use std::time::Duration;

use reqwest::{header, Method, StatusCode};
use syncer_plugin_api::{Error, Instance, Plugin, Result, Service, Snapshot};

use syncer_plugin_http::client::{segment, Client, Reply};

/// Configuration of the [`EurekaPlugin`].
#[derive(Debug, Clone)]
pub struct Config {
    /// Eureka base URLs **including** the `/eureka` path, e.g. `http://127.0.0.1:8761/eureka`
    /// (from `--sc-addr`); a missing scheme means `http://`. Tried in order, with failover.
    pub endpoints: Vec<String>,
    /// Timeout of one HTTP request to one endpoint (connect included).
    pub request_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            endpoints: vec!["http://127.0.0.1:8761/eureka".to_owned()],
            request_timeout: Duration::from_secs(10),
        }
    }
}

/// The Eureka plugin. Cheap to share behind an `Arc`; safe to call concurrently.
#[derive(Debug)]
pub struct EurekaPlugin {
    client: Client,
}

/// Normalises one `--sc-addr` entry: trimmed, `http://` when the scheme is missing, no
/// trailing `/`.
fn normalise_endpoint(endpoint: &str) -> Option<String> {
    let endpoint = endpoint.trim().trim_end_matches('/');
    if endpoint.is_empty() {
        return None;
    }
    Some(if endpoint.contains("://") {
        endpoint.to_owned()
    } else {
        format!("http://{endpoint}")
    })
}

/// The Eureka app name (upper case) of a service: its serviceName, else its id.
fn app_name(service: &Service) -> String {
    let name = if service.service_name.is_empty() {
        &service.service_id
    } else {
        &service.service_name
    };
    name.to_uppercase()
}

/// The generic mapping of a non-2xx reply: 404 → `NotFound`, anything else → `Rejected`.
fn to_error(reply: &Reply, what: &str) -> Error {
    let message = format!("{what}: {}: {}", reply.status, reply.text());
    if reply.status == StatusCode::NOT_FOUND {
        Error::NotFound(message)
    } else {
        Error::Rejected(message)
    }
}

impl EurekaPlugin {
    /// Builds the plugin; no request is sent yet.
    ///
    /// # Errors
    /// [`Error::Rejected`] when no endpoint is configured or the HTTP client cannot be built.
    pub fn new(config: Config) -> Result<Self> {
        let endpoints = config
            .endpoints
            .iter()
            .filter_map(|e| normalise_endpoint(e))
            .collect();
        Ok(EurekaPlugin {
            client: Client::new(endpoints, config.request_timeout)?,
        })
    }

    /// One request: `path` below the base URL.
    async fn request(&self, method: Method, path: &str, body: Option<Vec<u8>>) -> Result<Reply> {
        self.client
            .send(|http, base| {
                let request = http
                    .request(method.clone(), format!("{base}{path}"))
                    .header(header::ACCEPT, "application/json");
                match &body {
                    Some(body) => request
                        .header(header::CONTENT_TYPE, "application/json")
                        .body(body.clone()),
                    None => request,
                }
            })
            .await
    }

    fn instance_path(service: &Service, instance_id: &str) -> String {
        format!(
            "/apps/{}/{}",
            segment(&app_name(service)),
            segment(instance_id)
        )
    }
}

#[async_trait::async_trait]
impl Plugin for EurekaPlugin {
    fn name(&self) -> &'static str {
        "eureka"
    }

    /// `GET {base}/apps/`: every app and instance, of every status.
    async fn list(&self) -> Result<Snapshot> {
        let reply = self.request(Method::GET, "/apps/", None).await?;
        if !reply.status.is_success() {
            return Err(to_error(&reply, "list apps"));
        }
        let doc: serde_json::Value = serde_json::from_slice(&reply.body).map_err(|e| {
            Error::Malformed(format!(
                "list apps: {e}: {}",
                reply.text().chars().take(200).collect::<String>()
            ))
        })?;
        wire::apps_to_snapshot(&doc).map_err(|e| Error::Malformed(format!("list apps: {e}")))
    }

    /// Eureka creates apps implicitly: no request, the lower-case service name.
    async fn ensure_service(&self, service: &Service) -> Result<String> {
        Ok(wire::service_name(&app_name(service)))
    }

    /// `POST {base}/apps/{APP}` with the instance document; any 2xx is success (Eureka answers
    /// 204). Returns `instance.instance_id`.
    async fn register(&self, service: &Service, instance: &Instance) -> Result<String> {
        let app = app_name(service);
        let body = serde_json::to_vec(&wire::register_body(&wire::service_name(&app), instance))
            .map_err(|e| Error::Rejected(format!("cannot encode instance: {e}")))?;
        let path = format!("/apps/{}", segment(&app));
        let reply = self.request(Method::POST, &path, Some(body)).await?;
        if !reply.status.is_success() {
            return Err(to_error(&reply, "register instance"));
        }
        if reply.status != StatusCode::NO_CONTENT {
            tracing::debug!(status = %reply.status, app = %app, "register answered other than 204");
        }
        Ok(instance.instance_id.clone())
    }

    /// `PUT {base}/apps/{APP}/{id}`; 404 → [`Error::NotFound`] (register again).
    async fn heartbeat(&self, service: &Service, instance_id: &str) -> Result<()> {
        let path = Self::instance_path(service, instance_id);
        let reply = self.request(Method::PUT, &path, None).await?;
        if reply.status.is_success() {
            Ok(())
        } else {
            Err(to_error(&reply, "heartbeat"))
        }
    }

    /// `DELETE {base}/apps/{APP}/{id}`; 404 (already gone) is success.
    async fn unregister(&self, service: &Service, instance_id: &str) -> Result<()> {
        let path = Self::instance_path(service, instance_id);
        let reply = self.request(Method::DELETE, &path, None).await?;
        if reply.status.is_success() || reply.status == StatusCode::NOT_FOUND {
            Ok(())
        } else {
            Err(to_error(&reply, "unregister"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_normalised() {
        assert_eq!(
            normalise_endpoint("127.0.0.1:8761/eureka/").as_deref(),
            Some("http://127.0.0.1:8761/eureka")
        );
        assert_eq!(normalise_endpoint(""), None);
    }

    #[test]
    fn app_names_are_upper_case_service_names() {
        let service = Service {
            service_name: "account-server".into(),
            ..Service::default()
        };
        assert_eq!(app_name(&service), "ACCOUNT-SERVER");
        let service = Service {
            service_id: "hello".into(),
            ..Service::default()
        };
        assert_eq!(app_name(&service), "HELLO");
    }

    #[test]
    fn instance_paths_encode_the_id() {
        let service = Service {
            service_name: "svc".into(),
            ..Service::default()
        };
        assert_eq!(
            EurekaPlugin::instance_path(&service, "10.0.0.1:svc:80"),
            "/apps/SVC/10.0.0.1%3Asvc%3A80"
        );
    }

    #[tokio::test]
    async fn ensure_service_returns_the_lower_case_name_without_a_request() {
        let plugin = EurekaPlugin::new(Config {
            endpoints: vec!["http://127.0.0.1:1/eureka".into()],
            request_timeout: Duration::from_millis(100),
        })
        .expect("builds");
        let service = Service {
            service_name: "Account-Server".into(),
            ..Service::default()
        };
        assert_eq!(
            plugin.ensure_service(&service).await.expect("no request"),
            "account-server"
        );
    }
}
