//! Trust between sites (issue 10): mutual TLS on the exchange with certificates that name
//! their site, members that count for a cluster only once their certificate proves it, and
//! secure defaults. Real processes on loopback, certificates made by the test (rcgen).

mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use support::certs::{Ca, SiteFiles};
use support::{eventually, free_tcp_port, free_udp_port, sc_add_instance, sc_create_service, Proc};
use syncer::exchange::client::ExchangeClient;
use syncer::tls::{ExchangeTls, TlsConfig, TlsVersion};

/// One syncer with its built-in core, on loopback ports of its own.
struct Member {
    proc: Proc,
    core_port: u16,
    gossip_port: u16,
    rpc_port: u16,
}

impl Member {
    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.core_port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.proc.log).unwrap_or_default()
    }
}

/// Starts `node` of `cluster` with `extra` flags, joining `join`.
fn start(dir: &Path, node: &str, cluster: &str, join: Option<u16>, extra: &[String]) -> Member {
    let (core_port, gossip_port, rpc_port) = (free_tcp_port(), free_udp_port(), free_tcp_port());
    let mut args = support::daemon_args(node, cluster, gossip_port, rpc_port, join);
    args.extend(["--builtin-addr".into(), format!("127.0.0.1:{core_port}")]);
    args.extend(extra.iter().cloned());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Member {
        proc: Proc::syncer(dir, node, &args),
        core_port,
        gossip_port,
        rpc_port,
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("http client")
}

/// The ids of the instances of Eureka app `app` at `base` (`None`: no answer).
async fn ids(http: &reqwest::Client, base: &str, app: &str) -> Option<Vec<String>> {
    let list = support::eureka_app_instances(http, base, app).await?;
    Some(
        list.iter()
            .map(|i| i["instanceId"].as_str().unwrap_or_default().to_owned())
            .collect(),
    )
}

/// Creates `service` at `member`'s core (once it answers) with one instance on `port`.
async fn register(http: &reqwest::Client, member: &Member, service: &str, port: u16) {
    eventually(
        Duration::from_secs(20),
        "the core answers",
        &[&member.proc],
        || async { ids(http, &member.base(), "NONE").await.map(|_| ()) },
    )
    .await;
    let sid = sc_create_service(http, &member.base(), "trust-test", service).await;
    sc_add_instance(http, &member.base(), &sid, port).await;
}

/// Waits until `app` has `n` instances at `member`.
async fn copies(http: &reqwest::Client, member: &Member, app: &str, n: usize, logs: &[&Proc]) {
    eventually(
        Duration::from_secs(30),
        &format!("{n} instance(s) of {app} at {}", member.proc.name),
        logs,
        || async {
            ids(http, &member.base(), app)
                .await
                .filter(|l| l.len() == n)
        },
    )
    .await;
}

/// A `tls_config` block (the service-center syncer's keys) for `files`.
fn tls_yaml(files: &SiteFiles) -> String {
    format!(
        "tls_config:\n  enabled: true\n  verify_peer: true\n  min_version: TLSv1.2\n  ca_file: {}\n  cert_file: {}\n  key_file: {}\n",
        files.ca_file.display(),
        files.cert_file.display(),
        files.key_file.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sites_sync_with_mutual_tls_configured_through_the_tls_config_block() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path();
    let ca = Ca::new("syncer test CA");
    let mut members = Vec::new();
    let mut join = None;
    for (node, cluster) in [("a1", "site-a"), ("b1", "site-b")] {
        let files = ca.site(&dir.join(format!("certs-{cluster}")), &[cluster]);
        let config = dir.join(format!("{node}.yaml"));
        std::fs::write(&config, tls_yaml(&files)).expect("write config");
        let member = start(
            dir,
            node,
            cluster,
            join,
            &["--config".into(), config.display().to_string()],
        );
        join = Some(member.gossip_port);
        members.push(member);
    }
    let (a, b) = (&members[0], &members[1]);
    let http = http();
    register(&http, a, "payments", 9101).await;
    register(&http, b, "orders", 9201).await;
    copies(&http, b, "PAYMENTS", 1, &[&a.proc, &b.proc]).await;
    copies(&http, a, "ORDERS", 1, &[&a.proc, &b.proc]).await;
    for m in [a, b] {
        let log = m.log();
        assert!(
            log.contains("exchange (grpc) listening") && log.contains("tls=true"),
            "{log}"
        );
        assert!(log.contains("member verified"), "{log}");
    }
}

/// TLS settings with `files`, TLS 1.2 and up, the default cipher suites.
fn settings(files: &SiteFiles) -> TlsConfig {
    TlsConfig {
        ca_file: files.ca_file.clone(),
        cert_file: files.cert_file.clone(),
        key_file: files.key_file.clone(),
        passphrase: None,
        min_version: TlsVersion::Tls12,
        ciphers: Vec::new(),
    }
}

/// A client of the exchange at `addr` with `files` (its own certificate) and CA.
fn client_with(files: &SiteFiles, cluster: &str) -> ExchangeClient {
    let tls = ExchangeTls::load(settings(files), cluster).expect("client tls");
    ExchangeClient::new(cluster.into(), Duration::from_secs(5)).with_tls(Some(tls))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_exchange_refuses_plaintext_no_client_certificate_another_ca_and_a_false_claim() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path();
    let ca = Ca::new("syncer test CA");
    let files = ca.site(&dir.join("certs-a"), &["site-a"]);
    let a = start(dir, "a1", "site-a", None, &files.flags());
    let http = http();
    register(&http, &a, "payments", 9101).await;
    let addr = support::local(a.rpc_port);

    // A certificate of the same CA naming site-b, asking as site-b: served (the control).
    let b_files = ca.site(&dir.join("certs-b"), &["site-b"]);
    let pulled = eventually(
        Duration::from_secs(20),
        "a pull with a site-b certificate",
        &[&a.proc],
        || async {
            client_with(&b_files, "site-b")
                .pull(addr, "site-a")
                .await
                .ok()
        },
    )
    .await;
    assert_eq!(pulled.cluster, "site-a");
    assert_eq!(pulled.snapshot.instances.len(), 1);

    // The same certificate, claiming to be site-c: refused by the server.
    let err = ExchangeClient::new("site-c".into(), Duration::from_secs(5))
        .with_tls(client_with(&b_files, "site-b").tls().cloned())
        .pull(addr, "site-a")
        .await
        .expect_err("a false claim");
    let text = err.to_string();
    assert!(
        text.contains("PermissionDenied") || text.contains("permission"),
        "{text}"
    );
    assert!(text.contains("site-c") && text.contains("site-b"), "{text}");

    // Expecting site-a from a server whose certificate names it: fine; expecting site-z
    // from the same server fails the client's own check (its certificate does not name it).
    let err = client_with(&b_files, "site-b")
        .pull(addr, "site-z")
        .await
        .expect_err("wrong server name");
    assert!(
        err.to_string().contains("site-a"),
        "names what it carries: {err}"
    );

    // Plaintext.
    let err = ExchangeClient::new("site-b".into(), Duration::from_secs(5))
        .pull(addr, "site-a")
        .await
        .expect_err("plaintext");
    assert!(!err.to_string().is_empty());

    // TLS that trusts the CA but presents no client certificate.
    let roots = {
        let mut roots = rustls::RootCertStore::empty();
        for cert in syncer::tls::read_certs(&files.ca_file).expect("ca") {
            roots.add(cert).expect("add ca");
        }
        roots
    };
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = rustls_pki_types::ServerName::try_from("site-a").expect("name");
    let outcome = async {
        let mut stream = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await?;
        // TLS 1.3 reports the refused client certificate at the first read.
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        stream
            .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await?;
        let mut buf = [0u8; 64];
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Err(std::io::Error::other("closed"));
        }
        Ok(n)
    }
    .await;
    assert!(
        outcome.is_err(),
        "a TLS client without a certificate got an answer"
    );

    // A client certificate from another CA naming site-b.
    let other = Ca::new("another CA");
    let mut other_files = other.site(&dir.join("certs-other"), &["site-b"]);
    // It trusts the real CA, so only the server's verdict on its certificate matters.
    other_files.ca_file = files.ca_file.clone();
    let err = client_with(&other_files, "site-b")
        .pull(addr, "site-a")
        .await
        .expect_err("another CA");
    assert!(!err.to_string().is_empty());

    eventually(
        Duration::from_secs(10),
        "the server warns about refused handshakes",
        &[&a.proc],
        || {
            let ok = a.log().contains("TLS handshake refused");
            async move { ok.then_some(()) }
        },
    )
    .await;
    assert!(
        a.log()
            .contains("refused a peer whose certificate does not name the cluster it claims"),
        "{}",
        a.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_that_cannot_prove_the_cluster_they_claim_never_lead_it_nor_are_imported() {
    use base64::Engine;
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path();
    let key = base64::engine::general_purpose::STANDARD.encode([5u8; 32]);
    let ca = Ca::new("syncer test CA");
    let with = |files: &SiteFiles| -> Vec<String> {
        let mut flags = files.flags();
        flags.extend(["--encrypt".into(), key.clone()]);
        flags
    };
    let a_files = ca.site(&dir.join("certs-a"), &["site-a"]);
    let b_files = ca.site(&dir.join("certs-b"), &["site-b"]);
    let a = start(dir, "a1", "site-a", None, &with(&a_files));
    let b = start(dir, "b1", "site-b", Some(a.gossip_port), &with(&b_files));
    let http = http();
    register(&http, &a, "payments", 9101).await;
    copies(&http, &b, "PAYMENTS", 1, &[&a.proc, &b.proc]).await;

    // Two impostors hold the gossip key and claim site-a with node names that sort first:
    // 0000 is a syncer without TLS; 0001 serves the exchange over TLS with a real
    // certificate of the CA, but one naming site-b (a syncer refuses to start so; an
    // attacker runs its own code, here the library's parts put together by hand). Both
    // export an instance of PAYMENTS on port 6666.
    let plain = start(
        dir,
        "0000",
        "site-a",
        Some(a.gossip_port),
        &["--encrypt".into(), key.clone()],
    );
    register(&http, &plain, "payments", 6666).await;
    let forged_files = ca.site(&dir.join("certs-forged"), &["site-b"]);
    let _forged = forged_member(
        &forged_files,
        "0001",
        "site-a",
        a.gossip_port,
        &key,
        &plain.base(),
    )
    .await;

    // Both appear in gossip and are refused by the real members.
    for m in [&a, &b] {
        eventually(
            Duration::from_secs(20),
            "the impostor is refused",
            &[&a.proc, &b.proc, &plain.proc],
            || {
                let log = m.log();
                let ok = log.contains("member refused") && log.contains("claimed_cluster=site-a");
                async move { ok.then_some(()) }
            },
        )
        .await;
    }
    // The real site keeps syncing: a change at A still crosses, and only A's instance does.
    register(&http, &a, "ledger", 9102).await;
    copies(&http, &b, "LEDGER", 1, &[&a.proc, &b.proc]).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let at_b = ids(&http, &b.base(), "PAYMENTS").await.expect("b answers");
    assert_eq!(at_b.len(), 1, "only a1's PAYMENTS at b: {at_b:?}");
    // Both were refused for what they are: no certificate, and one naming site-b.
    let refusals: Vec<String> = b
        .log()
        .lines()
        .filter(|l| l.contains("member refused"))
        .map(str::to_owned)
        .collect();
    assert!(
        refusals.iter().any(|l| l.contains("node=0000")),
        "{refusals:?}"
    );
    assert!(
        refusals
            .iter()
            .any(|l| l.contains("node=0001") && l.contains("site-b")),
        "the refusal names the certificate's names: {refusals:?}"
    );
    let a_log = a.log();
    assert!(
        !a_log.contains("is_leader=false"),
        "a1 lost the lead: {a_log}"
    );
    assert!(!a_log.contains("leader=0000"), "{a_log}");
    let b_log = b.log();
    assert!(!b_log.contains("member verified node=0000"), "{b_log}");
    assert!(!b_log.contains("member verified node=0001"), "{b_log}");
}

/// Gossips as `node` of `cluster` (with the gossip `key`, joining `join`) and serves the
/// exchange over TLS with `files`, exporting the registry at `registry`: what an attacker
/// holding another site's certificate and the gossip key can run. Runs until the returned
/// guard drops.
async fn forged_member(
    files: &SiteFiles,
    node: &str,
    cluster: &str,
    join: u16,
    key: &str,
    registry: &str,
) -> tokio_util::sync::DropGuard {
    use syncer::membership::{self, cipher, Membership};
    let shutdown = tokio_util::sync::CancellationToken::new();
    let names =
        syncer::tls::dns_names(&syncer::tls::read_certs(&files.cert_file).expect("cert")[0]);
    let tls =
        ExchangeTls::load(settings(files), &names[0]).expect("tls for the certificate's own name");
    let plugin = syncer::daemon::build_plugin(
        syncer::cli::PluginKind::Servicecenter,
        vec![registry.to_owned()],
    )
    .expect("plugin");
    let exporter = Arc::new(syncer::sync::exporter::Exporter::new(plugin));
    tokio::spawn(
        exporter
            .clone()
            .follow(None, Duration::from_millis(200), shutdown.clone()),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let rpc_addr = listener.local_addr().expect("addr");
    let server = syncer::exchange::server::ExchangeServer::new(
        cluster.to_owned(),
        "servicecenter",
        exporter,
    )
    .with_node(node.to_owned())
    .with_tls(Some(tls));
    tokio::spawn(server.run(listener, shutdown.clone()));
    let membership = Membership::bind(membership::Config {
        bind_addr: "127.0.0.1:0".parse().expect("addr"),
        rpc_addr,
        join_addrs: vec![support::local(join)],
        keyring: Some(cipher::Keyring::single(
            cipher::GossipKey::from_base64(key).expect("key"),
        )),
        ..membership::Config::new(node, cluster)
    })
    .await
    .expect("gossip");
    tokio::spawn(membership.run(shutdown.clone()));
    shutdown.drop_guard()
}

/// The certificate the exchange at `addr` presents to a new connection, as a client of
/// `files` expecting `cluster`.
async fn presented(
    files: &SiteFiles,
    client_cluster: &str,
    addr: std::net::SocketAddr,
    cluster: &str,
) -> Vec<u8> {
    let tls = client_with(files, client_cluster)
        .tls()
        .cloned()
        .expect("tls");
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = rustls_pki_types::ServerName::try_from(cluster.to_owned()).expect("name");
    let stream = tokio_rustls::TlsConnector::from(tls.client_config())
        .connect(name, tcp)
        .await
        .expect("handshake");
    stream.get_ref().1.peer_certificates().expect("certs")[0].to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_certificate_is_used_by_the_next_connection_and_sync_goes_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path();
    let ca = Ca::new("syncer test CA");
    let a_files = ca.site(&dir.join("certs-a"), &["site-a"]);
    let b_files = ca.site(&dir.join("certs-b"), &["site-b"]);
    let a = start(dir, "a1", "site-a", None, &a_files.flags());
    let b = start(dir, "b1", "site-b", Some(a.gossip_port), &b_files.flags());
    let logs = [&a.proc, &b.proc];
    let http = http();
    register(&http, &b, "orders", 9201).await;
    copies(&http, &a, "ORDERS", 1, &logs).await;
    let b_addr = support::local(b.rpc_port);
    let before = presented(&a_files, "site-a", b_addr, "site-b").await;

    ca.rotate(&b_files, &["site-b", "b1.site-b"]);
    let rotated = syncer::tls::read_certs(&b_files.cert_file).expect("new cert")[0].to_vec();
    assert_ne!(before, rotated);
    eventually(
        Duration::from_secs(15),
        "b reloads its certificate",
        &logs,
        || {
            let log = b.log();
            let ok = log.contains("exchange TLS certificate reloaded") && log.contains("b1.site-b");
            async move { ok.then_some(()) }
        },
    )
    .await;
    assert_eq!(
        presented(&a_files, "site-a", b_addr, "site-b").await,
        rotated
    );

    // The stream a follows b with carries on (or reconnects once), and new changes cross.
    register(&http, &b, "invoices", 9202).await;
    copies(&http, &a, "INVOICES", 1, &logs).await;
    register(&http, &a, "payments", 9101).await;
    copies(&http, &b, "PAYMENTS", 1, &logs).await;

    // A bad new file is refused and the certificate in use stays.
    std::fs::write(&b_files.cert_file, "not a certificate").expect("write junk");
    eventually(Duration::from_secs(15), "b refuses the junk", &logs, || {
        let ok = b.log().contains("exchange TLS certificate files refused");
        async move { ok.then_some(()) }
    })
    .await;
    assert_eq!(
        presented(&a_files, "site-a", b_addr, "site-b").await,
        rotated
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_loopback_listener_without_encryption_and_tls_needs_insecure() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path();
    let args = |extra: &[&str]| -> Vec<String> {
        let mut args: Vec<String> = vec![
            "daemon".into(),
            "--node".into(),
            "open".into(),
            "--builtin-addr".into(),
            format!("127.0.0.1:{}", free_tcp_port()),
            "--bind-addr".into(),
            format!("0.0.0.0:{}", free_udp_port()),
            "--rpc-addr".into(),
            format!("127.0.0.1:{}", free_tcp_port()),
        ];
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        args
    };
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_syncer"))
        .args(args(&[]))
        .env("SYNCER_DATA_DIR", dir.join("refused.data"))
        .output()
        .expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--bind-addr"), "{stderr}");
    assert!(
        stderr.contains("--keyring-file")
            && stderr.contains("--tls-enabled")
            && stderr.contains("--insecure"),
        "the refusal names the flags to set: {stderr}"
    );

    let args = args(&["--insecure"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let open = Proc::syncer(dir, "open", &args);
    eventually(
        Duration::from_secs(15),
        "it starts and warns",
        &[&open],
        || {
            let log = std::fs::read_to_string(&open.log).unwrap_or_default();
            let ok = log.contains("exchange (grpc) listening")
                && log.contains("WARN")
                && log.contains("--insecure");
            async move { ok.then_some(()) }
        },
    )
    .await;
}

/// Runs `openssl args` in `dir`, panicking with its output on failure.
fn openssl(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl (scripts/test.sh installs it)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// docs/security.md's openssl procedure, step by step, makes certificates two sites sync with
/// (an encrypted PKCS#8 key with its passphrase on one of them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openssl_procedure_of_the_security_guide_makes_working_certificates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path();
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "3650",
            "-subj",
            "/CN=syncer CA",
            "-keyout",
            "ca.key",
            "-out",
            "trust.cer",
        ],
    );
    let mut sites = Vec::new();
    for cluster in ["site-a", "site-b"] {
        let site = dir.join(cluster);
        std::fs::create_dir_all(&site).expect("mkdir");
        std::fs::copy(dir.join("trust.cer"), site.join("trust.cer")).expect("copy ca");
        std::fs::write(
            site.join("ext.cnf"),
            format!("subjectAltName=DNS:{cluster}\nextendedKeyUsage=serverAuth,clientAuth\nkeyUsage=digitalSignature\n"),
        )
        .expect("ext");
        openssl(
            &site,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-subj",
                &format!("/CN={cluster}"),
                "-keyout",
                "server_key.pem",
                "-out",
                "site.csr",
            ],
        );
        openssl(
            &site,
            &[
                "x509",
                "-req",
                "-in",
                "site.csr",
                "-CA",
                "../trust.cer",
                "-CAkey",
                "../ca.key",
                "-CAcreateserial",
                "-days",
                "365",
                "-out",
                "server.cer",
                "-extfile",
                "ext.cnf",
            ],
        );
        sites.push((cluster, site));
    }
    // Site b's key encrypted, as `openssl pkcs8 -topk8 -v2 aes-256-cbc` makes it.
    openssl(
        &sites[1].1,
        &[
            "pkcs8",
            "-topk8",
            "-v2",
            "aes-256-cbc",
            "-in",
            "server_key.pem",
            "-out",
            "enc.pem",
            "-passout",
            "pass:s3cret",
        ],
    );
    std::fs::rename(
        sites[1].1.join("enc.pem"),
        sites[1].1.join("server_key.pem"),
    )
    .expect("mv");

    // SSL_ROOT and the default file names, as the service-center syncer looks them up.
    let start_with = |node: &str, cluster: &str, join: Option<u16>, envs: &[(&str, String)]| {
        let (core, gossip, rpc) = (free_tcp_port(), free_udp_port(), free_tcp_port());
        let mut args = support::daemon_args(node, cluster, gossip, rpc, join);
        args.extend([
            "--builtin-addr".into(),
            format!("127.0.0.1:{core}"),
            "--tls-enabled".into(),
        ]);
        let proc = Proc::spawn(
            dir,
            node,
            Path::new(env!("CARGO_BIN_EXE_syncer")),
            &args,
            envs,
        );
        Member {
            proc,
            core_port: core,
            gossip_port: gossip,
            rpc_port: rpc,
        }
    };
    let a = start_with(
        "a1",
        "site-a",
        None,
        &[("SSL_ROOT", sites[0].1.display().to_string())],
    );
    let b = start_with(
        "b1",
        "site-b",
        Some(a.gossip_port),
        &[
            ("SSL_ROOT", sites[1].1.display().to_string()),
            ("SYNCER_TLS_PASSPHRASE", "s3cret".into()),
        ],
    );
    let http = http();
    register(&http, &a, "payments", 9101).await;
    copies(&http, &b, "PAYMENTS", 1, &[&a.proc, &b.proc]).await;
    assert!(
        !b.log().contains("s3cret"),
        "the passphrase stays out of the log"
    );
}
