//! etcd with TLS and authentication (issue 12, part 5), against a real etcd: the built-in
//! core's etcd store (`syncer servicecenter --etcd-endpoints`) and the leader election
//! (`syncer daemon --election-etcd-endpoints`) over TLS with a client certificate
//! (`--client-cert-auth`), and with etcd's user authentication, where a wrong password stops
//! the start with a message naming the endpoint and never the password.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use support::certs::Ca;
use support::{eventually, free_tcp_port, free_udp_port, Etcd, Proc};

const ROOT_PASSWORD: &str = "r00tPW5etcd";
const WRONG_PASSWORD: &str = "wr0ngPW7etcd";

/// Runs `etcdctl` (API v3) with `global` flags (endpoints, TLS, user) then `args`; its
/// stdout when it succeeded.
fn etcdctl(global: &[String], args: &[&str]) -> Option<String> {
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(global)
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The `syncer` binary with `args` and environment `envs`, logging to `dir/name.log`.
fn syncer(dir: &Path, name: &str, args: &[String], envs: &[(&str, String)]) -> Proc {
    Proc::spawn(
        dir,
        name,
        Path::new(env!("CARGO_BIN_EXE_syncer")),
        args,
        envs,
    )
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| (*a).to_owned()).collect()
}

/// Waits up to `timeout` for `proc` to exit; its exit status and log.
fn exit_of(proc: &mut Proc, timeout: Duration) -> (Option<std::process::ExitStatus>, String) {
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Ok(Some(status)) = proc.child.try_wait() {
            break Some(status);
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    (
        status,
        std::fs::read_to_string(&proc.log).unwrap_or_default(),
    )
}

/// `syncer servicecenter` on a free port with `etcd_flags`; its base URL.
fn core_on_etcd(
    dir: &Path,
    name: &str,
    etcd_flags: &[String],
    envs: &[(&str, String)],
) -> (Proc, String) {
    let port = free_tcp_port();
    let mut args = strings(&["servicecenter", "--listen"]);
    args.push(format!("127.0.0.1:{port}"));
    args.extend(etcd_flags.iter().cloned());
    (
        syncer(dir, name, &args, envs),
        format!("http://127.0.0.1:{port}"),
    )
}

/// `syncer daemon` with its built-in core in memory-free embedded store, cluster `cluster`,
/// node `node`, and `extra` flags.
fn daemon(
    dir: &Path,
    node: &str,
    cluster: &str,
    extra: &[String],
    envs: &[(&str, String)],
) -> Proc {
    let mut args = strings(&["daemon", "--node", node, "--cluster-name", cluster]);
    for (flag, value) in [
        ("--builtin-addr", format!("127.0.0.1:{}", free_tcp_port())),
        ("--bind-addr", format!("127.0.0.1:{}", free_udp_port())),
        ("--rpc-addr", format!("127.0.0.1:{}", free_tcp_port())),
        ("--ticker-interval", "1".to_owned()),
    ] {
        args.push(flag.to_owned());
        args.push(value);
    }
    args.extend(extra.iter().cloned());
    syncer(dir, node, &args, envs)
}

/// Waits until the core at `base` answers, creates a service there; its serviceId.
async fn create_service(http: &reqwest::Client, base: &str, core: &Proc, name: &str) -> String {
    eventually(
        Duration::from_secs(20),
        "the core answers",
        &[core],
        || async {
            let resp = http
                .get(format!("{base}/v4/default/registry/microservices"))
                .header("X-Domain-Name", "default")
                .send()
                .await
                .ok()?;
            resp.status().is_success().then_some(())
        },
    )
    .await;
    support::sc_create_service(http, base, "app", name).await
}

/// etcdctl's flags for the TLS etcd at `endpoint` with a client certificate.
fn ctl_flags(endpoint: &str, ca_file: &Path, cert_file: &Path, key_file: &Path) -> Vec<String> {
    vec![
        "--endpoints".into(),
        endpoint.to_owned(),
        "--cacert".into(),
        ca_file.display().to_string(),
        "--cert".into(),
        cert_file.display().to_string(),
        "--key".into(),
        key_file.display().to_string(),
    ]
}

/// An etcd that serves clients over TLS only and requires a client certificate signed by its
/// CA, with the files a client needs.
struct TlsEtcd {
    endpoint: String,
    proc: Proc,
    ca_file: PathBuf,
    cert_file: PathBuf,
    key_file: PathBuf,
}

impl TlsEtcd {
    fn start(dir: &Path) -> TlsEtcd {
        let certs = dir.join("etcd-certs");
        std::fs::create_dir_all(&certs).expect("mkdir certs");
        let ca = Ca::new("etcd test CA");
        let write = |name: &str, text: &str| {
            let path = certs.join(name);
            std::fs::write(&path, text).expect("write pem");
            path
        };
        let ca_file = write("ca.pem", &ca.pem());
        // etcd's certificate names the address clients dial (an IP SAN) and localhost.
        let (server_cert, server_key) = ca.issue(&["127.0.0.1", "localhost"]);
        let server_cert = write("etcd.pem", &server_cert);
        let server_key = write("etcd-key.pem", &server_key);
        let (client_cert, client_key) = ca.issue(&["syncer-client"]);
        let cert_file = write("client.pem", &client_cert);
        let key_file = write("client-key.pem", &client_key);

        let tls_flags: Vec<String> = vec![
            "--cert-file".into(),
            server_cert.display().to_string(),
            "--key-file".into(),
            server_key.display().to_string(),
            "--trusted-ca-file".into(),
            ca_file.display().to_string(),
            "--client-cert-auth".into(),
        ];
        let tls_flags: Vec<&str> = tls_flags.iter().map(String::as_str).collect();
        let etcd = support::Etcd::launch(dir, "https", &tls_flags, |endpoint| {
            let ctl = ctl_flags(endpoint, &ca_file, &cert_file, &key_file);
            etcdctl(&ctl, &["endpoint", "health"]).is_some()
        });
        TlsEtcd {
            endpoint: etcd.endpoint,
            proc: etcd.proc,
            ca_file,
            cert_file,
            key_file,
        }
    }

    /// etcdctl's flags for this etcd.
    fn ctl(&self) -> Vec<String> {
        ctl_flags(
            &self.endpoint,
            &self.ca_file,
            &self.cert_file,
            &self.key_file,
        )
    }

    /// The syncer's flags for this etcd, `endpoints_flag` naming the endpoints.
    fn flags(&self, endpoints_flag: &str) -> Vec<String> {
        vec![
            endpoints_flag.into(),
            self.endpoint.clone(),
            "--etcd-ca-file".into(),
            self.ca_file.display().to_string(),
            "--etcd-cert-file".into(),
            self.cert_file.display().to_string(),
            "--etcd-key-file".into(),
            self.key_file.display().to_string(),
        ]
    }
}

/// The keys under `/cse-sr/ms/files/` (service records).
fn service_keys(global: &[String]) -> Option<String> {
    etcdctl(
        global,
        &["get", "--prefix", "/cse-sr/ms/files/", "--keys-only"],
    )
}

/// The election's leader of `cluster`: the oldest candidate key's value.
fn leader(global: &[String], cluster: &str) -> Option<String> {
    let text = etcdctl(
        global,
        &[
            "get",
            &format!("/syncer/leader/{cluster}/"),
            "--prefix",
            "--sort-by=CREATE",
            "--order=ASCEND",
            "--limit=1",
            "--print-value-only",
        ],
    )?;
    let text = text.trim().to_owned();
    (!text.is_empty()).then_some(text)
}

#[tokio::test(flavor = "multi_thread")]
async fn over_tls_with_a_client_certificate_the_store_and_the_election_work() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path();
    let http = reqwest::Client::new();
    let etcd = {
        let dir = dir.to_owned();
        tokio::task::spawn_blocking(move || TlsEtcd::start(&dir))
            .await
            .expect("etcd start task")
    };

    // The store: a service registered at the core is in etcd.
    let (core, base) = core_on_etcd(dir, "core", &etcd.flags("--etcd-endpoints"), &[]);
    let sid = create_service(&http, &base, &core, "over-tls").await;
    eventually(
        Duration::from_secs(10),
        "the service's key in etcd",
        &[&core, &etcd.proc],
        || async { service_keys(&etcd.ctl()).filter(|keys| keys.contains(&sid)) },
    )
    .await;

    // The election: a daemon leads through the same etcd.
    let member = daemon(
        dir,
        "n1",
        "tls-site",
        &etcd.flags("--election-etcd-endpoints"),
        &[],
    );
    let holder = eventually(
        Duration::from_secs(20),
        "n1 holds the leader key",
        &[&member, &etcd.proc],
        || async { leader(&etcd.ctl(), "tls-site") },
    )
    .await;
    assert_eq!(holder, "n1");

    // Without the client certificate etcd refuses the handshake: the start stops, naming
    // the endpoint.
    let mut flags = etcd.flags("--etcd-endpoints");
    flags.truncate(4);
    let (mut refused, _) = core_on_etcd(dir, "core-without-cert", &flags, &[]);
    let (status, log) = exit_of(&mut refused, Duration::from_secs(30));
    assert!(
        status.is_some_and(|s| !s.success()),
        "a core without a client certificate should stop:\n{log}"
    );
    assert!(log.contains(&etcd.endpoint), "{log}");
    assert!(
        log.contains("--etcd-cert-file"),
        "no hint at the TLS files:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn with_etcd_authentication_the_right_password_works_and_a_wrong_one_stops_the_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path();
    let http = reqwest::Client::new();
    let etcd = {
        let dir = dir.to_owned();
        tokio::task::spawn_blocking(move || Etcd::start(&dir))
            .await
            .expect("etcd start task")
    };
    let plain = vec!["--endpoints".to_owned(), etcd.endpoint.clone()];
    etcdctl(&plain, &["user", "add", &format!("root:{ROOT_PASSWORD}")]).expect("user add");
    etcdctl(&plain, &["auth", "enable"]).expect("auth enable");
    let mut as_root = plain.clone();
    as_root.extend(["--user".to_owned(), format!("root:{ROOT_PASSWORD}")]);
    // Authentication is on: a client without a user reads nothing.
    assert!(service_keys(&plain).is_none(), "auth is not enabled");

    let password_file = dir.join("etcd-password");
    std::fs::write(&password_file, format!("{ROOT_PASSWORD}\n")).expect("write password");
    let store_flags = vec![
        "--etcd-endpoints".to_owned(),
        etcd.endpoint.clone(),
        "--etcd-user".into(),
        "root".into(),
        "--etcd-password-file".into(),
        password_file.display().to_string(),
    ];

    // The right password (from a file): the store works.
    let (core, base) = core_on_etcd(dir, "core", &store_flags, &[]);
    let sid = create_service(&http, &base, &core, "with-auth").await;
    eventually(
        Duration::from_secs(10),
        "the service's key in etcd",
        &[&core, &etcd.proc],
        || async { service_keys(&as_root).filter(|keys| keys.contains(&sid)) },
    )
    .await;

    // The right password (from the environment): the election works.
    let election_flags = vec![
        "--election-etcd-endpoints".to_owned(),
        etcd.endpoint.clone(),
        "--etcd-user".into(),
        "root".into(),
    ];
    let member = daemon(
        dir,
        "n1",
        "auth-site",
        &election_flags,
        &[("SYNCER_ETCD_PASSWORD", ROOT_PASSWORD.to_owned())],
    );
    let holder = eventually(
        Duration::from_secs(20),
        "n1 holds the leader key",
        &[&member, &etcd.proc],
        || async { leader(&as_root, "auth-site") },
    )
    .await;
    assert_eq!(holder, "n1");

    // A wrong password stops both at start, naming the endpoint and never the password.
    let wrong = [("SYNCER_ETCD_PASSWORD", WRONG_PASSWORD.to_owned())];
    let (mut bad_core, _) = core_on_etcd(dir, "core-wrong-password", &store_flags[..4], &wrong);
    let mut bad_member = daemon(dir, "n2", "auth-site", &election_flags, &wrong);
    for proc in [&mut bad_core, &mut bad_member] {
        let (status, log) = exit_of(proc, Duration::from_secs(30));
        assert!(
            status.is_some_and(|s| !s.success()),
            "{} should stop on a wrong password:\n{log}",
            proc.name
        );
        assert!(
            log.contains(&format!("etcd at {} refused user \"root\"", etcd.endpoint)),
            "{}: no clear message:\n{log}",
            proc.name
        );
        assert!(log.contains("--etcd-password-file"), "{log}");
        assert!(!log.contains(WRONG_PASSWORD), "{}: {log}", proc.name);
    }
    // The leader is untouched.
    assert_eq!(leader(&as_root, "auth-site").as_deref(), Some("n1"));
    for proc in [&core, &member] {
        let log = std::fs::read_to_string(&proc.log).unwrap_or_default();
        assert!(
            !log.contains(ROOT_PASSWORD),
            "{} logged the password",
            proc.name
        );
    }
}
