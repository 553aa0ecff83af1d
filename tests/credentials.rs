//! Credentials in a registry address never leak (issue 12, part 2): a site whose `--sc-addr`
//! carries `user:password@` syncs with a second site, and no log line of any process, no
//! cluster name and nothing the other site stores contains the password.

mod support;

use std::time::Duration;

use md5::{Digest, Md5};
use support::{eventually, free_tcp_port, free_udp_port, Proc};

const PASSWORD: &str = "s3cretPW2";

/// `Some` once the service-center API at `base` answers.
async fn ready(http: &reqwest::Client, base: &str) -> Option<()> {
    let resp = http
        .get(format!("{base}/v4/default/registry/microservices"))
        .header("X-Domain-Name", "default")
        .send()
        .await
        .ok()?;
    resp.status().is_success().then_some(())
}

/// The whole text a registry answers for its services and instances of the default domain.
async fn registry_text(http: &reqwest::Client, base: &str) -> String {
    let mut text = String::new();
    for path in [
        "/v4/default/registry/microservices",
        "/v4/default/admin/dump",
    ] {
        if let Ok(resp) = http
            .get(format!("{base}{path}"))
            .header("X-Domain-Name", "default")
            .send()
            .await
        {
            text.push_str(&resp.text().await.unwrap_or_default());
        }
    }
    text
}

#[tokio::test(flavor = "multi_thread")]
async fn a_password_in_the_registry_address_reaches_no_log_cluster_name_or_peer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");

    // Site A: a service-center core (it ignores basic auth) and a syncer reaching it with
    // credentials in the address, and no --cluster-name: the default name is derived.
    let a_port = free_tcp_port();
    let a_base = format!("http://127.0.0.1:{a_port}");
    let a_gossip = free_udp_port();
    let a_core = Proc::syncer(
        dir,
        "a-core",
        &["servicecenter", "--listen", &format!("127.0.0.1:{a_port}")],
    );
    let sc_addr = format!("http://user:{PASSWORD}@127.0.0.1:{a_port}");
    let a_syncer = Proc::syncer(
        dir,
        "a-syncer",
        &[
            "daemon",
            "--sc-addr",
            &sc_addr,
            "--node",
            "a1",
            "--bind-addr",
            &format!("127.0.0.1:{a_gossip}"),
            "--rpc-addr",
            &format!("127.0.0.1:{}", free_tcp_port()),
            "--ticker-interval",
            "1",
        ],
    );
    // Site B: a daemon with its built-in core, joining A.
    let b_port = free_tcp_port();
    let b_base = format!("http://127.0.0.1:{b_port}");
    let b_syncer = Proc::syncer(
        dir,
        "b-syncer",
        &[
            "daemon",
            "--builtin-addr",
            &format!("127.0.0.1:{b_port}"),
            "--cluster-name",
            "site-b",
            "--node",
            "b1",
            "--bind-addr",
            &format!("127.0.0.1:{}", free_udp_port()),
            "--rpc-addr",
            &format!("127.0.0.1:{}", free_tcp_port()),
            "--join-addr",
            &format!("127.0.0.1:{a_gossip}"),
            "--ticker-interval",
            "1",
        ],
    );
    let procs = [&a_core, &a_syncer, &b_syncer];

    // Both ways: an instance of A is copied to B, one of B to A.
    eventually(
        Duration::from_secs(20),
        "site A's core answers",
        &procs,
        || ready(&http, &a_base),
    )
    .await;
    let a_sid = support::sc_create_service(&http, &a_base, "app", "from-a").await;
    support::sc_add_instance(&http, &a_base, &a_sid, 8081).await;
    eventually(
        Duration::from_secs(20),
        "site B's core answers",
        &procs,
        || ready(&http, &b_base),
    )
    .await;
    let b_sid = support::sc_create_service(&http, &b_base, "app", "from-b").await;
    support::sc_add_instance(&http, &b_base, &b_sid, 8082).await;

    let copy = eventually(
        Duration::from_secs(60),
        "site A's instance copied to site B",
        &procs,
        || async {
            let list = support::sc_find_instances(&http, &b_base, "app", "from-a").await?;
            list.into_iter().next()
        },
    )
    .await;
    eventually(
        Duration::from_secs(60),
        "site B's instance copied to site A",
        &procs,
        || async {
            let list = support::sc_find_instances(&http, &a_base, "app", "from-b").await?;
            (!list.is_empty()).then_some(())
        },
    )
    .await;

    // The cluster name A exports under is the MD5 of its address without credentials.
    let expected = hex::encode(Md5::digest(format!("http://127.0.0.1:{a_port}").as_bytes()));
    let raw = hex::encode(Md5::digest(sc_addr.as_bytes()));
    let origin = copy["properties"]["syncerOriginCluster"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(origin, expected, "copy at B: {copy}");
    assert_ne!(origin, raw);

    // Nothing stored at either site has the password or the hash of the raw address.
    for base in [&a_base, &b_base] {
        let text = registry_text(&http, base).await;
        assert!(!text.is_empty(), "{base} answered nothing");
        assert!(!text.contains(PASSWORD), "{base} stores the password");
        assert!(!text.contains(&raw), "{base} stores the raw address' hash");
    }

    // No log line of any process has the password; A's start-up line shows the address
    // redacted (the logs run at debug for the syncer: every registry call is logged).
    let a_log = std::fs::read_to_string(&a_syncer.log).expect("a-syncer log");
    assert!(
        a_log.contains(&format!("user:***@127.0.0.1:{a_port}")),
        "the start-up line shows the redacted address:\n{}",
        a_syncer.tail(40)
    );
    for p in procs {
        let log = std::fs::read_to_string(&p.log).expect("log");
        if let Some(line) = log.lines().find(|l| l.contains(PASSWORD)) {
            panic!("{} logged the password: {line}", p.name);
        }
    }
}

#[test]
fn an_unreachable_registry_with_credentials_is_named_without_its_password() {
    // The plugin's errors name the endpoint it tried; with nothing listening, every call
    // fails and is logged (at debug and warn).
    let dir = tempfile::tempdir().expect("tempdir");
    let dead = free_tcp_port();
    let mut syncer = Proc::syncer(
        dir.path(),
        "syncer",
        &[
            "daemon",
            "--sc-addr",
            &format!("http://user:{PASSWORD}@127.0.0.1:{dead}"),
            "--node",
            "a1",
            "--bind-addr",
            &format!("127.0.0.1:{}", free_udp_port()),
            "--rpc-addr",
            &format!("127.0.0.1:{}", free_tcp_port()),
            "--ticker-interval",
            "1",
        ],
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let unreachable = format!("127.0.0.1:{dead}");
    let mut log = String::new();
    while std::time::Instant::now() < deadline {
        log = std::fs::read_to_string(&syncer.log).unwrap_or_default();
        // The start-up line, then at least one failed call naming the endpoint.
        if log.lines().filter(|l| l.contains(&unreachable)).count() >= 2 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    syncer.kill9();
    assert!(
        log.lines().filter(|l| l.contains(&unreachable)).count() >= 2,
        "no failed call logged:\n{log}"
    );
    if let Some(line) = log.lines().find(|l| l.contains(PASSWORD)) {
        panic!("the password was logged: {line}");
    }
}
