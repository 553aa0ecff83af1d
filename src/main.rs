//! The `syncer` binary: parse the command line, set up logging, run the library, map the
//! result to an exit code.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use syncer::cli::{Cli, Command};
use syncer::config::DaemonConfig;
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    let cli = Cli::parse();
    syncer::logging::init(cli.log_format);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("cannot start the tokio runtime")?;
    runtime.block_on(async move {
        match cli.command {
            Command::Version => {
                println!("syncer {}", env!("CARGO_PKG_VERSION"));
                Ok(())
            }
            Command::Keygen => {
                println!("{}", syncer::membership::cipher::generate_base64());
                Ok(())
            }
            Command::Servicecenter(args) => {
                let access = syncer::etcd::Access::from_args(&args.etcd);
                let etcd = syncer::etcd::ClientConfig::resolve(
                    "--etcd-endpoints",
                    args.etcd_endpoints.as_deref(),
                    &access,
                )
                .context("invalid settings")?;
                anyhow::ensure!(
                    etcd.is_some() || access.is_empty(),
                    "invalid settings: etcd TLS or authentication settings are given without \
                     --etcd-endpoints"
                );
                let store = syncer::servicecenter::store::StoreConfig::from_flags(
                    Some(args.data_dir),
                    etcd,
                );
                let mut core = syncer::servicecenter::Core::open(store)
                    .await
                    .context("cannot open the registry store")?;
                core.set_eureka_self_preservation(args.eureka_self_preservation);
                core.set_limits(syncer::config::core_limits(&args.core_limits));
                core.set_max_watchers(args.max_watchers);
                let core = if args.rbac {
                    let mut settings =
                        syncer::servicecenter::registry::rbac::RbacSettings::resolve(
                            args.rbac_root_password_file.as_deref(),
                        )
                        .map_err(anyhow::Error::msg)
                        .context("invalid settings")?;
                    settings.token_ttl =
                        syncer::servicecenter::api::rbac::parse_ttl(&args.rbac_token_ttl)
                            .map_err(|e| anyhow::anyhow!("--rbac-token-ttl: {}", e.detail))
                            .context("invalid settings")?;
                    core.enable_rbac(&settings)
                        .await
                        .map_err(anyhow::Error::msg)
                        .context("cannot turn RBAC on")?
                } else {
                    core
                };
                let listener = tokio::net::TcpListener::bind(args.listen)
                    .await
                    .with_context(|| {
                        format!("cannot bind the service-center address {}", args.listen)
                    })?;
                let tls = syncer::config::core_tls(
                    ["--tls-cert-file", "--tls-key-file", "--tls-client-ca-file"],
                    args.tls_cert_file,
                    args.tls_key_file,
                    args.tls_client_ca_file,
                )
                .context("invalid settings")?
                .map(|settings| syncer::servicecenter::tls::CoreTls::load(&settings))
                .transpose()
                .context("cannot set up the service-center's TLS")?;
                let shutdown = shutdown_on_signal();
                let limits = syncer::servicecenter::HttpLimits {
                    max_connections: args.max_connections,
                    max_body_bytes: syncer::config::core_max_body_bytes(&args.core_limits),
                    ..Default::default()
                };
                syncer::servicecenter::serve_with(listener, core, tls, limits, shutdown)
                    .await
                    .context("built-in service-center failed")
            }
            Command::Purge(args) => {
                let settings =
                    syncer::purge::Settings::resolve(*args).context("invalid settings")?;
                syncer::purge::run(settings).await.context("purge failed")?;
                Ok(())
            }
            Command::Daemon(args) => {
                let config = DaemonConfig::resolve(*args).context("invalid settings")?;
                let shutdown = shutdown_on_signal();
                syncer::daemon::run(config, shutdown)
                    .await
                    .context("syncer daemon failed")
            }
        }
    })
}

/// A token cancelled on the first SIGINT or SIGTERM.
fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot listen for SIGTERM");
                        let _ = ctrl_c.await;
                        t.cancel();
                        return;
                    }
                };
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = ctrl_c.await;
        }
        tracing::info!("shutdown signal received");
        t.cancel();
    });
    token
}
