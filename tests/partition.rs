//! A network partition between two sites, with real processes in network namespaces.
//!
//! Site A and site B each get a namespace with a registry (`syncer servicecenter`) and two
//! syncers, each syncer on its own address on the namespace's loopback (10.77.1.x in A,
//! 10.77.2.x in B). The sites reach each other over one veth pair (10.77.0.0/30) with a route
//! each way; the test reaches the registries over a management veth per namespace
//! (10.77.9.0/30, 10.77.9.4/30) that routes nothing between the sites. The cut sets the
//! inter-site veth down; the heal sets it up and restores the routes.
//!
//! Needs root (CI runs as root). When namespaces cannot be created the test fails, saying so.

#[path = "support/netns.rs"]
mod netns;
mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use netns::{run_tag, veth, Netns, RootLink};
use support::{eventually, sc_add_instance, sc_create_service, Proc};

/// Both ends of the inter-site link and the namespaces, torn down on drop.
struct Sites {
    a: Netns,
    b: Netns,
    /// The inter-site veth ends (in A, in B).
    link: (String, String),
    _mgmt: (RootLink, RootLink),
}

impl Sites {
    fn create() -> Result<Sites, String> {
        let tag = run_tag();
        let a = Netns::add(&format!("syncer-{tag}-a"))?;
        let b = Netns::add(&format!("syncer-{tag}-b"))?;
        let link = (format!("sy{tag}xa"), format!("sy{tag}xb"));
        veth(
            (&link.0, Some(&a), "10.77.0.1/30"),
            (&link.1, Some(&b), "10.77.0.2/30"),
        )?;
        let mgmt_a = format!("sy{tag}ma");
        let mgmt_b = format!("sy{tag}mb");
        veth(
            (&mgmt_a, None, "10.77.9.1/30"),
            (&format!("sy{tag}na"), Some(&a), "10.77.9.2/30"),
        )?;
        let mgmt_a = RootLink(mgmt_a);
        veth(
            (&mgmt_b, None, "10.77.9.5/30"),
            (&format!("sy{tag}nb"), Some(&b), "10.77.9.6/30"),
        )?;
        let mgmt_b = RootLink(mgmt_b);
        for i in 1..=2 {
            a.add_loopback_addr(&format!("10.77.1.{i}/32"))?;
            b.add_loopback_addr(&format!("10.77.2.{i}/32"))?;
        }
        let sites = Sites {
            a,
            b,
            link,
            _mgmt: (mgmt_a, mgmt_b),
        };
        sites.routes()?;
        Ok(sites)
    }

    /// Routes each site's loopback range over the inter-site link.
    fn routes(&self) -> Result<(), String> {
        self.a
            .ip(&["route", "replace", "10.77.2.0/24", "via", "10.77.0.2"])?;
        self.b
            .ip(&["route", "replace", "10.77.1.0/24", "via", "10.77.0.1"])
    }

    fn cut(&self) -> Result<(), String> {
        self.a.ip(&["link", "set", &self.link.0, "down"])?;
        self.b.ip(&["link", "set", &self.link.1, "down"])
    }

    fn heal(&self) -> Result<(), String> {
        self.a.ip(&["link", "set", &self.link.0, "up"])?;
        self.b.ip(&["link", "set", &self.link.1, "up"])?;
        // Routes through a link that went down are gone; put them back.
        self.routes()
    }
}

/// Runs `syncer args...` inside `ns`.
fn syncer_in(dir: &Path, ns: &Netns, name: &str, args: &[&str]) -> Proc {
    let mut all = ns.exec_prefix();
    all.push(env!("CARGO_BIN_EXE_syncer").to_owned());
    all.extend(args.iter().map(|a| (*a).to_owned()));
    Proc::spawn(dir, name, Path::new("ip"), &all, &[])
}

/// The gossip key and each site's certificate files (made by the test): the sites listen on
/// addresses that are not loopback, which a syncer does only with gossip encryption and
/// exchange TLS.
struct Secrets {
    key: String,
    sites: std::collections::BTreeMap<String, support::certs::SiteFiles>,
}

impl Secrets {
    fn new(dir: &Path, clusters: &[&str]) -> Secrets {
        use base64::Engine;
        let ca = support::certs::Ca::new("partition test CA");
        Secrets {
            key: base64::engine::general_purpose::STANDARD.encode([3u8; 32]),
            sites: clusters
                .iter()
                .map(|c| {
                    (
                        (*c).to_owned(),
                        ca.site(&dir.join(format!("certs-{c}")), &[c]),
                    )
                })
                .collect(),
        }
    }

    fn flags(&self, cluster: &str) -> Vec<String> {
        let mut flags = self.sites[cluster].flags();
        flags.extend(["--encrypt".to_owned(), self.key.clone()]);
        flags
    }
}

fn daemon_in(
    dir: &Path,
    ns: &Netns,
    secrets: &Secrets,
    cluster: &str,
    node: &str,
    ip: &str,
) -> Proc {
    let secure = secrets.flags(cluster);
    let (bind, rpc) = (format!("{ip}:30190"), format!("{ip}:30191"));
    let mut args: Vec<&str> = vec![
        "daemon",
        "--mode",
        "cluster",
        "--sc-addr",
        "http://127.0.0.1:30100",
        "--cluster-name",
        cluster,
        "--node",
        node,
        "--bind-addr",
        &bind,
        "--rpc-addr",
        &rpc,
        "--join-addr",
        "10.77.1.1:30190,10.77.2.1:30190",
        "--ticker-interval",
        "1",
    ];
    args.extend(secure.iter().map(String::as_str));
    syncer_in(dir, ns, node, &args)
}

/// Creates `service` with `count` instances at the registry at `base`.
async fn register(http: &reqwest::Client, base: &str, service: &str, ports: &[u16]) -> String {
    let sid = sc_create_service(http, base, "partition-test", service).await;
    for port in ports {
        sc_add_instance(http, base, &sid, *port).await;
    }
    sid
}

/// The instances of `app` at `base` as `host-{port}` (`Some(empty)` when none).
async fn hosts(http: &reqwest::Client, base: &str, app: &str) -> Option<Vec<String>> {
    let list = support::eureka_app_instances(http, base, app).await?;
    Some(
        list.iter()
            .map(|i| format!("host-{}", i["port"]["$"].as_u64().unwrap_or_default()))
            .collect(),
    )
}

/// Exactly `want` (no duplicates) is at `base` under `app`.
async fn exactly(http: &reqwest::Client, base: &str, app: &str, want: &[&str]) -> bool {
    let Some(found) = hosts(http, base, app).await else {
        return false;
    };
    let distinct: BTreeSet<&str> = found.iter().map(String::as_str).collect();
    distinct.len() == found.len() && distinct == want.iter().copied().collect()
}

fn log_of(p: &Proc) -> String {
    std::fs::read_to_string(&p.log).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sites_split_by_a_partition_keep_their_membership_and_converge_after_the_heal() {
    let sites = match Sites::create() {
        Ok(sites) => sites,
        Err(e) => panic!(
            "cannot set up network namespaces for the partition test (needs root and \
             iproute2; CI runs as root): {e}"
        ),
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .expect("client");
    let (reg_a, reg_b) = ("http://10.77.9.2:30100", "http://10.77.9.6:30100");

    let _core_a = syncer_in(
        dir,
        &sites.a,
        "registry-a",
        &["servicecenter", "--listen", "0.0.0.0:30100"],
    );
    let _core_b = syncer_in(
        dir,
        &sites.b,
        "registry-b",
        &["servicecenter", "--listen", "0.0.0.0:30100"],
    );
    let secrets = Secrets::new(dir, &["site-a", "site-b"]);
    let a1 = daemon_in(dir, &sites.a, &secrets, "site-a", "a1", "10.77.1.1");
    let a2 = daemon_in(dir, &sites.a, &secrets, "site-a", "a2", "10.77.1.2");
    let b1 = daemon_in(dir, &sites.b, &secrets, "site-b", "b1", "10.77.2.1");
    let b2 = daemon_in(dir, &sites.b, &secrets, "site-b", "b2", "10.77.2.2");
    let procs = [&_core_a, &_core_b, &a1, &a2, &b1, &b2];

    eventually(
        Duration::from_secs(20),
        "both registries up",
        &procs,
        || async {
            (hosts(&http, reg_a, "NONE").await.is_some()
                && hosts(&http, reg_b, "NONE").await.is_some())
            .then_some(())
        },
    )
    .await;
    let sid_a = register(&http, reg_a, "svc-a", &[9001, 9002]).await;
    let sid_b = register(&http, reg_b, "svc-b", &[9011, 9012]).await;
    eventually(
        Duration::from_secs(30),
        "each site imports the other",
        &procs,
        || async {
            (exactly(&http, reg_a, "SVC-B", &["host-9011", "host-9012"]).await
                && exactly(&http, reg_b, "SVC-A", &["host-9001", "host-9002"]).await)
                .then_some(())
        },
    )
    .await;

    let members = [(&a1, "a1"), (&a2, "a2"), (&b1, "b1"), (&b2, "b2")];
    eventually(
        Duration::from_secs(20),
        "every member knows every other",
        &procs,
        || {
            let ok = members.iter().all(|(p, me)| {
                let log = log_of(p);
                members
                    .iter()
                    .filter(|(_, other)| other != me)
                    .all(|(_, other)| log.contains(&format!("member up member={other} ")))
            });
            async move { ok.then_some(()) }
        },
    )
    .await;

    // Cut: each site sees the other's members go down, and keeps its own.
    let before_cut = [&a1, &a2, &b1, &b2].map(|p| log_of(p).len());
    sites.cut().expect("cut the link");
    let cut_at = Instant::now();
    eventually(
        Duration::from_secs(20),
        "the cut detected on both sides",
        &procs,
        || {
            let since = |i: usize, p: &Proc| log_of(p)[before_cut[i]..].to_owned();
            let a_side = since(0, &a1);
            let b_side = since(2, &b1);
            let ok = a_side.contains("member down member=b1")
                && a_side.contains("member down member=b2")
                && b_side.contains("member down member=a1")
                && b_side.contains("member down member=a2");
            async move { ok.then_some(()) }
        },
    )
    .await;
    // Changes on both sides while split; and membership inside each site goes on.
    sc_add_instance(&http, reg_a, &sid_a, 9003).await;
    sc_add_instance(&http, reg_b, &sid_b, 9013).await;
    let split_for = Duration::from_secs(8);
    tokio::time::sleep(split_for.saturating_sub(cut_at.elapsed())).await;
    for (i, p, own) in [
        (0, &a1, "a2"),
        (1, &a2, "a1"),
        (2, &b1, "b2"),
        (3, &b2, "b1"),
    ] {
        let since = &log_of(p)[before_cut[i]..];
        assert!(
            !since.contains(&format!("member down member={own} ")),
            "{} lost its own site's member {own} during the cut:\n{since}",
            p.name
        );
    }
    assert!(
        !exactly(
            &http,
            reg_a,
            "SVC-B",
            &["host-9011", "host-9012", "host-9013"]
        )
        .await,
        "a change crossed a cut link"
    );

    // Heal: both sites converge, with no duplicates.
    sites.heal().expect("heal the link");
    let healed_at = Instant::now();
    eventually(
        Duration::from_secs(30),
        "convergence after the heal",
        &procs,
        || async {
            (exactly(
                &http,
                reg_a,
                "SVC-B",
                &["host-9011", "host-9012", "host-9013"],
            )
            .await
                && exactly(
                    &http,
                    reg_b,
                    "SVC-A",
                    &["host-9001", "host-9002", "host-9003"],
                )
                .await)
                .then_some(())
        },
    )
    .await;
    println!(
        "converged {} ms after the heal",
        healed_at.elapsed().as_millis()
    );
}
