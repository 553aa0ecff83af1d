//! account-server: the Eureka-side app of the multi-servicecenters demo. Serves
//! `GET /checkHealth` and `POST /login`, and registers itself to Eureka as `ACCOUNT-SERVER`.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use multi_servicecenters::{account, eureka, lifecycle};
use tokio_util::sync::CancellationToken;

/// The Eureka-side app of the multi-servicecenters demo.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address to serve HTTP on.
    #[arg(long, env = "ACCOUNT_SERVER_LISTEN", default_value = "127.0.0.1:8090")]
    listen: SocketAddr,
    /// Eureka base URL, including the `/eureka` prefix.
    #[arg(
        long,
        env = "ACCOUNT_SERVER_EUREKA",
        default_value = "http://127.0.0.1:8761/eureka"
    )]
    eureka: String,
    /// Host name and IP address advertised to Eureka.
    #[arg(long, env = "ACCOUNT_SERVER_HOST", default_value = "127.0.0.1")]
    host: String,
    /// Seconds between two lease renewals.
    #[arg(
        long = "heartbeat-interval",
        env = "ACCOUNT_SERVER_HEARTBEAT_INTERVAL",
        default_value_t = 30,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    heartbeat_interval_secs: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    lifecycle::init_tracing();

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let bound = listener.local_addr().context("reading the bound address")?;
    tracing::info!(addr = %bound, eureka = %args.eureka, host = %args.host, heartbeat_interval_secs = args.heartbeat_interval_secs, "account-server listening");

    let registration = eureka::Registration::new(eureka::Config {
        eureka_url: args.eureka,
        app: "ACCOUNT-SERVER".to_owned(),
        vip_address: "account-server".to_owned(),
        host: args.host,
        port: bound.port(),
        health_check_path: "/checkHealth".to_owned(),
        heartbeat_interval: Duration::from_secs(args.heartbeat_interval_secs),
    })?;

    let shutdown = CancellationToken::new();
    let registering = tokio::spawn(registration.run(shutdown.clone()));
    let signal = {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            lifecycle::shutdown_signal().await;
            shutdown.cancel();
        })
    };

    let served = axum::serve(listener, account::router())
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .await
        .context("serving account-server");
    shutdown.cancel();
    signal.abort();
    let _ = registering.await;
    tracing::info!("account-server stopped");
    served
}
