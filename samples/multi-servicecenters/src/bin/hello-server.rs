//! hello-server: the service-center-side app of the multi-servicecenters demo. Registers to
//! service-center, discovers account-server there and forwards `POST /login` to it.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use multi_servicecenters::{hello, lifecycle};
use tokio_util::sync::CancellationToken;

/// The service-center-side app of the multi-servicecenters demo.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address to serve HTTP on; also the registered endpoint (`rest://<listen>`).
    #[arg(long, env = "HELLO_SERVER_LISTEN", default_value = "127.0.0.1:8091")]
    listen: SocketAddr,
    /// service-center address.
    #[arg(
        long,
        env = "HELLO_SERVER_REGISTRY",
        default_value = "http://127.0.0.1:30100"
    )]
    registry: String,
    /// Seconds between two instance heartbeats.
    #[arg(
        long = "heartbeat-interval",
        env = "HELLO_SERVER_HEARTBEAT_INTERVAL",
        default_value_t = 30,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    heartbeat_interval_secs: u64,
    /// Seconds between two attempts to discover account-server.
    #[arg(
        long = "discovery-retry-interval",
        env = "HELLO_SERVER_DISCOVERY_RETRY_INTERVAL",
        default_value_t = 3,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    discovery_retry_interval_secs: u64,
    /// Seconds to wait for account-server before giving up with an error; 0 waits forever.
    #[arg(
        long = "discovery-timeout",
        env = "HELLO_SERVER_DISCOVERY_TIMEOUT",
        default_value_t = 300
    )]
    discovery_timeout_secs: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    lifecycle::init_tracing();

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let bound = listener.local_addr().context("reading the bound address")?;
    let host_name = hostname::get()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "localhost".to_owned());
    let config = hello::Config {
        registry_url: args.registry,
        advertised_endpoint: hello::advertised_endpoint(bound),
        host_name,
        heartbeat_interval: Duration::from_secs(args.heartbeat_interval_secs),
        discovery_retry_interval: Duration::from_secs(args.discovery_retry_interval_secs),
        discovery_timeout: (args.discovery_timeout_secs > 0)
            .then(|| Duration::from_secs(args.discovery_timeout_secs)),
    };
    tracing::info!(addr = %bound, registry = %config.registry_url, endpoint = %config.advertised_endpoint, heartbeat_interval_secs = args.heartbeat_interval_secs, discovery_retry_interval_secs = args.discovery_retry_interval_secs, discovery_timeout_secs = args.discovery_timeout_secs, "hello-server listening");

    let shutdown = CancellationToken::new();
    let signal = {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            lifecycle::shutdown_signal().await;
            shutdown.cancel();
        })
    };
    let result = hello::run(config, listener, shutdown).await;
    signal.abort();
    match &result {
        Ok(()) => tracing::info!("hello-server stopped"),
        Err(error) => tracing::error!(error = format!("{error:#}"), "hello-server failed"),
    }
    result
}
