//! HTTPS toward registries (issue 12, parts 1 and 6): a daemon syncs with a service-center
//! core served over HTTPS by a private CA, refuses a registry whose certificate another CA
//! signed (naming the address and the reason), presents a client certificate to a core that
//! requires one, and runs its own built-in core over HTTPS. Real processes on loopback,
//! certificates made by the test (rcgen).

mod support;

use std::path::Path;
use std::time::Duration;

use support::certs::{Ca, SiteFiles};
use support::{eventually, free_tcp_port, free_udp_port, sc_add_instance, sc_create_service, Proc};
use syncer::registry_tls::{client_config, RegistryTlsConfig};

/// The names a registry on loopback is reached by.
const LOOPBACK: &[&str] = &["localhost", "127.0.0.1"];

/// An HTTP client trusting `ca_file`, presenting `client` (certificate, key) if given.
fn https(ca_file: &Path, client: Option<&SiteFiles>) -> reqwest::Client {
    let config = client_config(&RegistryTlsConfig {
        ca_file: Some(ca_file.to_owned()),
        cert_file: client.map(|c| c.cert_file.clone()),
        key_file: client.map(|c| c.key_file.clone()),
        ..RegistryTlsConfig::default()
    })
    .expect("client tls");
    reqwest::Client::builder()
        .use_preconfigured_tls(config)
        .timeout(Duration::from_secs(5))
        .build()
        .expect("http client")
}

/// `syncer servicecenter` over HTTPS with `files`, requiring client certificates signed by
/// `client_ca` if given.
fn https_core(
    dir: &Path,
    name: &str,
    port: u16,
    files: &SiteFiles,
    client_ca: Option<&Path>,
) -> Proc {
    let mut args = vec![
        "servicecenter".to_owned(),
        "--listen".into(),
        format!("127.0.0.1:{port}"),
        "--tls-cert-file".into(),
        files.cert_file.display().to_string(),
        "--tls-key-file".into(),
        files.key_file.display().to_string(),
    ];
    if let Some(ca) = client_ca {
        args.extend(["--tls-client-ca-file".into(), ca.display().to_string()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Proc::syncer(dir, name, &args)
}

/// A daemon of `cluster` with `extra` flags (the registry: `--sc-addr ...` or the built-in
/// core's), joining `join`; returns it and its gossip port.
fn daemon(
    dir: &Path,
    node: &str,
    cluster: &str,
    join: Option<u16>,
    extra: &[String],
) -> (Proc, u16) {
    let (gossip_port, rpc_port) = (free_udp_port(), free_tcp_port());
    let mut args = support::daemon_args(node, cluster, gossip_port, rpc_port, join);
    args.extend(extra.iter().cloned());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    (Proc::syncer(dir, node, &args), gossip_port)
}

/// `--sc-addr https://127.0.0.1:{port}` with the servicecenter plugin, trusting `ca_file`.
fn external(port: u16, ca_file: &Path) -> Vec<String> {
    vec![
        "--sc-plugin".into(),
        "servicecenter".into(),
        "--sc-addr".into(),
        format!("https://127.0.0.1:{port}"),
        "--sc-tls-ca-file".into(),
        ca_file.display().to_string(),
    ]
}

/// The built-in core on `port` over HTTPS with `files`.
fn builtin(port: u16, files: &SiteFiles) -> Vec<String> {
    vec![
        "--builtin-addr".into(),
        format!("127.0.0.1:{port}"),
        "--builtin-tls-cert-file".into(),
        files.cert_file.display().to_string(),
        "--builtin-tls-key-file".into(),
        files.key_file.display().to_string(),
    ]
}

/// Waits until the core at `base` answers, then registers `service` with one instance.
async fn register(http: &reqwest::Client, base: &str, service: &str, port: u16, logs: &[&Proc]) {
    eventually(
        Duration::from_secs(20),
        &format!("{base} answers"),
        logs,
        || async {
            support::eureka_app_instances(http, base, "NONE")
                .await
                .map(|_| ())
        },
    )
    .await;
    let sid = sc_create_service(http, base, "tls-test", service).await;
    sc_add_instance(http, base, &sid, port).await;
}

/// Waits until `app` has `n` instances at `base`.
async fn copies(http: &reqwest::Client, base: &str, app: &str, n: usize, logs: &[&Proc]) {
    eventually(
        Duration::from_secs(30),
        &format!("{n} instance(s) of {app} at {base}"),
        logs,
        || async {
            support::eureka_app_instances(http, base, app)
                .await
                .filter(|l| l.len() == n)
        },
    )
    .await;
}

fn log(p: &Proc) -> String {
    std::fs::read_to_string(&p.log).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_syncs_with_a_core_served_over_https_by_a_private_ca() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path();
    let ca = Ca::new("registry test CA");
    let a_files = ca.site(&dir.join("certs-a"), LOOPBACK);
    let b_files = ca.site(&dir.join("certs-b"), LOOPBACK);
    let (a_port, b_port) = (free_tcp_port(), free_tcp_port());
    // Site A: a service-center over HTTPS, and a daemon reaching it with --sc-tls-ca-file.
    let core_a = https_core(dir, "core-a", a_port, &a_files, None);
    let (a1, a_gossip) = daemon(
        dir,
        "a1",
        "site-a",
        None,
        &external(a_port, &a_files.ca_file),
    );
    // Site B: a daemon with its built-in core over HTTPS.
    let (b1, _) = daemon(
        dir,
        "b1",
        "site-b",
        Some(a_gossip),
        &builtin(b_port, &b_files),
    );
    let logs = [&core_a, &a1, &b1];
    let http = https(&a_files.ca_file, None);
    let (a_base, b_base) = (
        format!("https://127.0.0.1:{a_port}"),
        format!("https://127.0.0.1:{b_port}"),
    );
    register(&http, &a_base, "payments", 9101, &logs).await;
    register(&http, &b_base, "orders", 9201, &logs).await;
    copies(&http, &b_base, "PAYMENTS", 1, &logs).await;
    copies(&http, &a_base, "ORDERS", 1, &logs).await;
    // The start-up probe retries until the core answers (with a backoff).
    eventually(
        Duration::from_secs(20),
        "the probe's handshake succeeds",
        &logs,
        || async {
            log(&a1)
                .contains("registry TLS handshake succeeded")
                .then_some(())
        },
    )
    .await;
    let b_log = log(&b1);
    assert!(
        b_log.contains("built-in service-center serves HTTPS"),
        "{b_log}"
    );
    // The core refuses plaintext.
    let plain = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    assert!(plain
        .get(format!(
            "http://127.0.0.1:{a_port}/v4/default/registry/microservices"
        ))
        .send()
        .await
        .is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_certificate_of_another_ca_is_refused_with_the_address_and_the_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path();
    let ca = Ca::new("registry test CA");
    let other = Ca::new("another CA");
    let a_files = ca.site(&dir.join("certs-a"), LOOPBACK);
    let wrong = other.site(&dir.join("certs-other"), LOOPBACK);
    let (a_port, b_port) = (free_tcp_port(), free_tcp_port());
    let core_a = https_core(dir, "core-a", a_port, &a_files, None);
    let (b1, b_gossip) = daemon(
        dir,
        "b1",
        "site-b",
        None,
        &["--builtin-addr".into(), format!("127.0.0.1:{b_port}")],
    );
    let plain = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    register(
        &plain,
        &format!("http://127.0.0.1:{b_port}"),
        "orders",
        9201,
        &[&b1],
    )
    .await;
    let (a1, _) = daemon(
        dir,
        "a1",
        "site-a",
        Some(b_gossip),
        &external(a_port, &wrong.ca_file),
    );
    let logs = [&core_a, &a1, &b1];
    let address = format!("https://127.0.0.1:{a_port}");
    eventually(
        Duration::from_secs(20),
        "the start-up probe names the address and the certificate problem",
        &logs,
        || async {
            let text = log(&a1);
            text.lines()
                .any(|l| {
                    l.contains("registry TLS handshake failed")
                        && l.contains(&address)
                        && l.contains("UnknownIssuer")
                        && l.contains("not signed by a trusted CA")
                })
                .then_some(())
        },
    )
    .await;
    // The requests themselves say why they fail, not just "error sending request".
    eventually(
        Duration::from_secs(20),
        "a failed listing names the certificate problem",
        &logs,
        || async {
            let text = log(&a1);
            text.lines()
                .filter(|l| {
                    l.contains("listing the local registry failed")
                        && l.contains(&address)
                        && l.contains("UnknownIssuer")
                })
                .nth(1)
                .map(|_| ())
        },
    )
    .await;
    // Nothing reached the registry: B's instance was not imported into A.
    let http = https(&a_files.ca_file, None);
    let at_a = support::eureka_app_instances(&http, &address, "ORDERS")
        .await
        .expect("core A answers");
    assert!(at_a.is_empty(), "{at_a:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_core_requiring_client_certificates_syncs_with_one_and_refuses_a_daemon_without() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path();
    let ca = Ca::new("registry test CA");
    let a_files = ca.site(&dir.join("certs-a"), LOOPBACK);
    let client = ca.site(&dir.join("certs-client"), &["syncer-a"]);
    let (a_port, b_port) = (free_tcp_port(), free_tcp_port());
    let core_a = https_core(dir, "core-a", a_port, &a_files, Some(&a_files.ca_file));
    let address = format!("https://127.0.0.1:{a_port}");

    // Without a client certificate: refused, and the log says so.
    let (mut refused, _) = daemon(
        dir,
        "a0",
        "site-a",
        None,
        &external(a_port, &a_files.ca_file),
    );
    eventually(
        Duration::from_secs(20),
        "the daemon without a client certificate is refused",
        &[&core_a, &refused],
        || async {
            log(&refused)
                .lines()
                .any(|l| {
                    l.contains("registry TLS handshake failed")
                        && l.contains(&address)
                        && l.contains("client certificate")
                })
                .then_some(())
        },
    )
    .await;
    refused.kill9();
    let http_without = https(&a_files.ca_file, None);
    assert!(
        support::eureka_app_instances(&http_without, &address, "NONE")
            .await
            .is_none()
    );

    // With one: the sites sync both ways.
    let (b1, b_gossip) = daemon(
        dir,
        "b1",
        "site-b",
        None,
        &["--builtin-addr".into(), format!("127.0.0.1:{b_port}")],
    );
    let mut with_cert = external(a_port, &a_files.ca_file);
    with_cert.extend([
        "--sc-tls-cert-file".into(),
        client.cert_file.display().to_string(),
        "--sc-tls-key-file".into(),
        client.key_file.display().to_string(),
    ]);
    let (a1, _) = daemon(dir, "a1", "site-a", Some(b_gossip), &with_cert);
    let logs = [&core_a, &a1, &b1];
    let http = https(&a_files.ca_file, Some(&client));
    let plain = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let b_base = format!("http://127.0.0.1:{b_port}");
    register(&http, &address, "payments", 9101, &logs).await;
    register(&plain, &b_base, "orders", 9201, &logs).await;
    copies(&plain, &b_base, "PAYMENTS", 1, &logs).await;
    copies(&http, &address, "ORDERS", 1, &logs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_builtin_core_requiring_client_certificates_still_syncs_its_own_daemon() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path();
    let ca = Ca::new("registry test CA");
    // The core's certificate names neither localhost nor 127.0.0.1: the daemon trusts it as
    // its own, not by name.
    let core_files = ca.site(&dir.join("certs-core"), &["registry.site-a.example"]);
    let client = ca.site(&dir.join("certs-client"), &["app"]);
    let (a_port, b_port) = (free_tcp_port(), free_tcp_port());
    let mut args = builtin(a_port, &core_files);
    args.extend([
        "--builtin-tls-client-ca-file".into(),
        core_files.ca_file.display().to_string(),
    ]);
    let (a1, a_gossip) = daemon(dir, "a1", "site-a", None, &args);
    let (b1, _) = daemon(
        dir,
        "b1",
        "site-b",
        Some(a_gossip),
        &["--builtin-addr".into(), format!("127.0.0.1:{b_port}")],
    );
    let logs = [&a1, &b1];
    // An application with a client certificate of the CA, reaching the core by its name.
    let config = client_config(&RegistryTlsConfig {
        ca_file: Some(core_files.ca_file.clone()),
        cert_file: Some(client.cert_file.clone()),
        key_file: Some(client.key_file.clone()),
        ..RegistryTlsConfig::default()
    })
    .expect("client tls");
    let http = reqwest::Client::builder()
        .use_preconfigured_tls(config)
        .resolve("registry.site-a.example", support::local(a_port))
        .timeout(Duration::from_secs(5))
        .build()
        .expect("http client");
    let a_base = format!("https://registry.site-a.example:{a_port}");
    let b_base = format!("http://127.0.0.1:{b_port}");
    let plain = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    register(&http, &a_base, "payments", 9101, &logs).await;
    register(&plain, &b_base, "orders", 9201, &logs).await;
    copies(&plain, &b_base, "PAYMENTS", 1, &logs).await;
    copies(&http, &a_base, "ORDERS", 1, &logs).await;
    // Without a client certificate the core refuses.
    let without = reqwest::Client::builder()
        .use_preconfigured_tls(
            client_config(&RegistryTlsConfig {
                ca_file: Some(core_files.ca_file.clone()),
                ..RegistryTlsConfig::default()
            })
            .expect("client tls"),
        )
        .resolve("registry.site-a.example", support::local(a_port))
        .timeout(Duration::from_secs(5))
        .build()
        .expect("http client");
    assert!(support::eureka_app_instances(&without, &a_base, "PAYMENTS")
        .await
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_eureka_plugin_syncs_with_an_https_registry_too() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path();
    let ca = Ca::new("registry test CA");
    let a_files = ca.site(&dir.join("certs-a"), LOOPBACK);
    let (a_port, b_port) = (free_tcp_port(), free_tcp_port());
    // Site A: Eureka (the core's /eureka API) over HTTPS, synced by the eureka plugin.
    let core_a = https_core(dir, "core-a", a_port, &a_files, None);
    let (a1, a_gossip) = daemon(
        dir,
        "a1",
        "site-a",
        None,
        &[
            "--sc-plugin".into(),
            "eureka".into(),
            "--sc-addr".into(),
            format!("https://127.0.0.1:{a_port}/eureka"),
            "--sc-tls-ca-file".into(),
            a_files.ca_file.display().to_string(),
        ],
    );
    let (b1, _) = daemon(
        dir,
        "b1",
        "site-b",
        Some(a_gossip),
        &["--builtin-addr".into(), format!("127.0.0.1:{b_port}")],
    );
    let logs = [&core_a, &a1, &b1];
    let http = https(&a_files.ca_file, None);
    let plain = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let b_base = format!("http://127.0.0.1:{b_port}");
    register(&plain, &b_base, "orders", 9201, &logs).await;
    copies(
        &http,
        &format!("https://127.0.0.1:{a_port}"),
        "ORDERS",
        1,
        &logs,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_certificate_for_another_name_is_refused_naming_the_mismatch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path();
    let ca = Ca::new("registry test CA");
    let files = ca.site(&dir.join("certs-a"), &["registry.elsewhere.example"]);
    let a_port = free_tcp_port();
    let core_a = https_core(dir, "core-a", a_port, &files, None);
    let (a1, _) = daemon(dir, "a1", "site-a", None, &external(a_port, &files.ca_file));
    let address = format!("https://127.0.0.1:{a_port}");
    eventually(
        Duration::from_secs(20),
        "the probe names the name mismatch",
        &[&core_a, &a1],
        || async {
            log(&a1)
                .lines()
                .any(|l| {
                    l.contains("registry TLS handshake failed")
                        && l.contains(&address)
                        && l.contains("not valid for name")
                        && l.contains("does not name the host")
                })
                .then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cores_certificate_is_reloaded_when_its_files_change_and_sync_goes_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path();
    let ca = Ca::new("registry test CA");
    let next_ca = Ca::new("the next CA");
    let next_ca_file = dir.join("next-ca.pem");
    std::fs::write(&next_ca_file, next_ca.pem()).expect("write ca");
    // Site B's built-in core over HTTPS, requiring client certificates of `ca`.
    let b_files = ca.site(&dir.join("certs-b"), LOOPBACK);
    let client = ca.site(&dir.join("certs-client"), &["app"]);
    let (a_port, b_port) = (free_tcp_port(), free_tcp_port());
    let (a1, a_gossip) = daemon(
        dir,
        "a1",
        "site-a",
        None,
        &["--builtin-addr".into(), format!("127.0.0.1:{a_port}")],
    );
    let mut args = builtin(b_port, &b_files);
    args.extend([
        "--builtin-tls-client-ca-file".into(),
        b_files.ca_file.display().to_string(),
    ]);
    let (b1, _) = daemon(dir, "b1", "site-b", Some(a_gossip), &args);
    let logs = [&a1, &b1];
    let plain = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let (a_base, b_base) = (
        format!("http://127.0.0.1:{a_port}"),
        format!("https://127.0.0.1:{b_port}"),
    );
    register(&plain, &a_base, "payments", 9101, &logs).await;
    copies(
        &https(&b_files.ca_file, Some(&client)),
        &b_base,
        "PAYMENTS",
        1,
        &logs,
    )
    .await;

    // A certificate of another CA replaces the core's: new connections get it, and the
    // daemon's own plugin follows (it trusts whatever its core serves).
    next_ca.rotate(&b_files, LOOPBACK);
    let after = https(&next_ca_file, Some(&client));
    eventually(
        Duration::from_secs(20),
        "the core serves the new certificate",
        &logs,
        || async {
            support::eureka_app_instances(&after, &b_base, "NONE")
                .await
                .map(|_| ())
        },
    )
    .await;
    eventually(
        Duration::from_secs(5),
        "the reload is logged",
        &logs,
        || async {
            log(&b1)
                .contains("service-center core TLS certificate reloaded")
                .then_some(())
        },
    )
    .await;
    register(&plain, &a_base, "orders", 9201, &logs).await;
    copies(&after, &b_base, "ORDERS", 1, &logs).await;
    copies(&after, &b_base, "PAYMENTS", 1, &logs).await;
}
