//! A minimal Eureka v2 REST client: what a Spring Cloud app does for itself, by hand.
//!
//! [`Registration::run`] registers one instance (`POST {eureka}/apps/{APP}`, expecting 204),
//! retrying until the registry answers; renews the lease every heartbeat interval
//! (`PUT {eureka}/apps/{APP}/{id}`), registering again when the registry answers 404 (it forgot
//! the instance, e.g. after a restart); and cancels (`DELETE`) when told to shut down.
//! The JSON body has the shape a Spring Cloud Netflix client sends (see
//! `reference/eureka-notes.md` §4), with the constants of `syncer_wire_eureka`.

use std::time::Duration;

use anyhow::{bail, Context as _};
use reqwest::StatusCode;
use serde_json::{json, Value};
use syncer_wire_eureka::{DEFAULT_DC_CLASS, DEFAULT_LEASE_DURATION_SECS, MY_OWN_DC_NAME};
use tokio_util::sync::CancellationToken;

use crate::lifecycle::{sleep_or_shutdown, Backoff};

/// Per-request timeout of the registry calls.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait between two registration attempts.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(10);

/// What to register, and where.
#[derive(Debug, Clone)]
pub struct Config {
    /// Eureka base URL including the `/eureka` prefix, e.g. `http://127.0.0.1:8761/eureka`.
    pub eureka_url: String,
    /// Application name; Eureka upper-cases it (`ACCOUNT-SERVER`).
    pub app: String,
    /// VIP address, the lower-case service name (`account-server`).
    pub vip_address: String,
    /// Host name and IP address advertised for the instance.
    pub host: String,
    /// HTTP port advertised for the instance.
    pub port: u16,
    /// Path of the health check, appended to `http://host:port`.
    pub health_check_path: String,
    /// Time between two renewals; also sent as `leaseInfo.renewalIntervalInSecs`.
    pub heartbeat_interval: Duration,
}

impl Config {
    /// The instance id in the Spring Cloud default form `host:app-name:port`.
    pub fn instance_id(&self) -> String {
        format!("{}:{}:{}", self.host, self.vip_address, self.port)
    }

    /// The register body `{"instance":{..}}`.
    pub fn instance_body(&self) -> Value {
        let base = format!("http://{}:{}", self.host, self.port);
        json!({
            "instance": {
                "instanceId": self.instance_id(),
                "hostName": self.host,
                "app": self.app.to_uppercase(),
                "ipAddr": self.host,
                "status": "UP",
                "port": {"$": self.port, "@enabled": "true"},
                "securePort": {"$": 443, "@enabled": "false"},
                "vipAddress": self.vip_address,
                "dataCenterInfo": {"@class": DEFAULT_DC_CLASS, "name": MY_OWN_DC_NAME},
                "leaseInfo": {
                    "renewalIntervalInSecs": self.heartbeat_interval.as_secs().max(1),
                    "durationInSecs": DEFAULT_LEASE_DURATION_SECS
                },
                "healthCheckUrl": format!("{base}{}", self.health_check_path),
                "homePageUrl": format!("{base}/"),
                "statusPageUrl": format!("{base}/actuator/info"),
            }
        })
    }
}

/// The result of one renewal that reached the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    /// 200: the lease is extended.
    Renewed,
    /// 404: the registry does not know the instance (any more); register again.
    Unknown,
}

/// One instance's registration with a Eureka server.
#[derive(Debug, Clone)]
pub struct Registration {
    config: Config,
    http: reqwest::Client,
    /// `{eureka}/apps/{APP}`, without a trailing slash.
    app_url: String,
}

impl Registration {
    /// Builds the client.
    ///
    /// # Errors
    /// When the HTTP client cannot be built.
    pub fn new(config: Config) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .context("building the eureka http client")?;
        let app_url = format!(
            "{}/apps/{}",
            config.eureka_url.trim_end_matches('/'),
            config.app.to_uppercase()
        );
        Ok(Self {
            config,
            http,
            app_url,
        })
    }

    fn instance_url(&self) -> String {
        format!("{}/{}", self.app_url, self.config.instance_id())
    }

    /// `POST {eureka}/apps/{APP}` once.
    ///
    /// # Errors
    /// When the registry cannot be reached or answers anything but 2xx (Eureka answers 204).
    pub async fn register(&self) -> anyhow::Result<()> {
        let response = self
            .http
            .post(&self.app_url)
            .json(&self.config.instance_body())
            .send()
            .await
            .with_context(|| format!("registering to {}", self.app_url))?;
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            bail!("eureka refused the registration: {status} {text}");
        }
        Ok(())
    }

    /// `PUT {eureka}/apps/{APP}/{id}` once.
    ///
    /// # Errors
    /// When the registry cannot be reached or answers neither 2xx nor 404.
    pub async fn renew(&self) -> anyhow::Result<Renewal> {
        let url = self.instance_url();
        let response = self
            .http
            .put(&url)
            .send()
            .await
            .with_context(|| format!("renewing {url}"))?;
        match response.status() {
            StatusCode::NOT_FOUND => Ok(Renewal::Unknown),
            status if status.is_success() => Ok(Renewal::Renewed),
            status => bail!("eureka refused the renewal: {status}"),
        }
    }

    /// `DELETE {eureka}/apps/{APP}/{id}` once.
    ///
    /// # Errors
    /// When the registry cannot be reached or answers anything but 2xx or 404.
    pub async fn cancel(&self) -> anyhow::Result<()> {
        let url = self.instance_url();
        let response = self
            .http
            .delete(&url)
            .send()
            .await
            .with_context(|| format!("cancelling {url}"))?;
        let status = response.status();
        if status.is_success() || status == StatusCode::NOT_FOUND {
            Ok(())
        } else {
            bail!("eureka refused the cancel: {status}")
        }
    }

    /// Registers (retrying until it works), renews every heartbeat interval, registers again
    /// when the lease is lost, and cancels once `shutdown` fires. Never fails: every registry
    /// error is logged and retried.
    pub async fn run(self, shutdown: CancellationToken) {
        let id = self.config.instance_id();
        'register: loop {
            let mut backoff = Backoff::new(MAX_RETRY_DELAY);
            loop {
                let result = tokio::select! {
                    result = self.register() => result,
                    () = shutdown.cancelled() => break 'register,
                };
                match result {
                    Ok(()) => {
                        tracing::info!(instance = %id, url = %self.app_url, "registered to eureka");
                        break;
                    }
                    Err(error) => {
                        let delay = backoff.next_delay();
                        tracing::warn!(
                            error = format!("{error:#}"),
                            retry_in_secs = delay.as_secs(),
                            "eureka registration failed"
                        );
                        if !sleep_or_shutdown(delay, &shutdown).await {
                            break 'register;
                        }
                    }
                }
            }
            loop {
                if !sleep_or_shutdown(self.config.heartbeat_interval, &shutdown).await {
                    break 'register;
                }
                let result = tokio::select! {
                    result = self.renew() => result,
                    () = shutdown.cancelled() => break 'register,
                };
                match result {
                    Ok(Renewal::Renewed) => tracing::debug!(instance = %id, "lease renewed"),
                    Ok(Renewal::Unknown) => {
                        tracing::info!(instance = %id, "eureka forgot the instance, registering again");
                        continue 'register;
                    }
                    Err(error) => {
                        tracing::warn!(error = format!("{error:#}"), "eureka renewal failed")
                    }
                }
            }
        }
        // Also after a register call cut short by the shutdown: it may have landed.
        match self.cancel().await {
            Ok(()) => tracing::info!(instance = %id, "cancelled eureka registration"),
            Err(error) => tracing::warn!(error = format!("{error:#}"), "eureka cancel failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config {
            eureka_url: "http://127.0.0.1:8761/eureka/".to_owned(),
            app: "account-server".to_owned(),
            vip_address: "account-server".to_owned(),
            host: "127.0.0.1".to_owned(),
            port: 8090,
            health_check_path: "/checkHealth".to_owned(),
            heartbeat_interval: Duration::from_secs(30),
        }
    }

    #[test]
    fn register_body_has_the_spring_cloud_shape() {
        let body = config().instance_body();
        let instance = &body["instance"];
        assert_eq!(instance["instanceId"], "127.0.0.1:account-server:8090");
        assert_eq!(instance["app"], "ACCOUNT-SERVER");
        assert_eq!(instance["port"], json!({"$": 8090, "@enabled": "true"}));
        assert_eq!(instance["securePort"]["@enabled"], "false");
        assert_eq!(instance["dataCenterInfo"]["name"], "MyOwn");
        assert_eq!(instance["leaseInfo"]["renewalIntervalInSecs"], 30);
        assert_eq!(
            instance["healthCheckUrl"],
            "http://127.0.0.1:8090/checkHealth"
        );
    }

    #[test]
    fn urls_ignore_a_trailing_slash_in_the_eureka_address() {
        let registration = Registration::new(config()).expect("client builds");
        assert_eq!(
            registration.instance_url(),
            "http://127.0.0.1:8761/eureka/apps/ACCOUNT-SERVER/127.0.0.1:account-server:8090"
        );
    }
}
