//! The gossip keyring as real processes on loopback: a key rotation across three sites
//! without a member marked down or a copy lost, then a member holding only the retired key
//! shut out; and `syncer keygen`.
//!
//! Each site is one `syncer daemon` with its built-in core (`--builtin-addr`, its own data
//! dir) and a `--keyring-file` of its own. The rotation rewrites the files (by rename, as an
//! operator's `mv` would) and waits for every member's "gossip keyring reloaded" line before
//! the next step; one step is announced by SIGHUP, the others found by the file poll.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::{eventually, free_tcp_port, free_udp_port, sc_add_instance, sc_create_service, Proc};
use tokio_util::sync::CancellationToken;

const DEADLINE: Duration = Duration::from_secs(20);

/// A new key from `syncer keygen`.
fn keygen() -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_syncer"))
        .arg("keygen")
        .output()
        .expect("run syncer keygen");
    assert!(out.status.success(), "keygen failed: {out:?}");
    let text = String::from_utf8(out.stdout).expect("utf-8");
    assert_eq!(text.lines().count(), 1, "one line: {text:?}");
    assert!(text.ends_with('\n'));
    text.trim().to_owned()
}

/// Replaces `path` with `keys`, one per line, by rename (the watch sees a new inode).
fn write_keyring(path: &Path, keys: &[&str]) {
    let next = path.with_extension("new");
    let mut text = String::from("# gossip keyring: the first key seals\n");
    for key in keys {
        text.push_str(key);
        text.push('\n');
    }
    std::fs::write(&next, text).expect("write keyring");
    std::fs::rename(&next, path).expect("replace keyring");
}

fn log(p: &Proc) -> String {
    std::fs::read_to_string(&p.log).unwrap_or_default()
}

/// One site: a syncer with its built-in core.
struct Member {
    proc: Proc,
    gossip: u16,
    registry: String,
    keyring: PathBuf,
}

impl Member {
    fn start(dir: &Path, node: &str, join: &[u16], keys: &[&str]) -> Member {
        let gossip = free_udp_port();
        let builtin = free_tcp_port();
        let keyring = dir.join(format!("{node}.keyring"));
        write_keyring(&keyring, keys);
        let mut args = vec![
            "daemon".to_owned(),
            "--node".into(),
            node.into(),
            "--cluster-name".into(),
            format!("site-{node}"),
            "--builtin-addr".into(),
            format!("127.0.0.1:{builtin}"),
            "--bind-addr".into(),
            format!("127.0.0.1:{gossip}"),
            "--rpc-addr".into(),
            format!("127.0.0.1:{}", free_tcp_port()),
            "--keyring-file".into(),
            keyring.display().to_string(),
            // Copies are heartbeated every second and a silent site's copies go after 10 s:
            // a gossip outage during the rotation would show at the registries.
            "--ticker-interval".into(),
            "1".into(),
            "--grace-period".into(),
            "10".into(),
        ];
        if !join.is_empty() {
            let addrs: Vec<String> = join.iter().map(|p| format!("127.0.0.1:{p}")).collect();
            args.extend(["--join-addr".into(), addrs.join(",")]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Member {
            proc: Proc::syncer(dir, node, &args),
            gossip,
            registry: format!("http://127.0.0.1:{builtin}"),
            keyring,
        }
    }

    fn reloads(&self) -> usize {
        log(&self.proc).matches("gossip keyring reloaded").count()
    }

    fn sighup(&self) {
        let status = Command::new("kill")
            .args(["-HUP", &self.proc.child.id().to_string()])
            .status()
            .expect("kill -HUP");
        assert!(status.success());
    }
}

/// Polls the copies of `app` at `base` every 100 ms until stopped, keeping every answer.
struct Watcher {
    seen: Arc<Mutex<Vec<Vec<String>>>>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Watcher {
    fn start(http: reqwest::Client, base: String, app: &'static str) -> Watcher {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = CancellationToken::new();
        let (s, st) = (seen.clone(), stop.clone());
        let task = tokio::spawn(async move {
            while !st.is_cancelled() {
                if let Some(list) = support::eureka_app_instances(&http, &base, app).await {
                    let ids = list
                        .iter()
                        .map(|i| i["instanceId"].as_str().unwrap_or_default().to_owned())
                        .collect();
                    s.lock().expect("lock").push(ids);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        Watcher { seen, stop, task }
    }

    async fn finish(self) -> Vec<Vec<String>> {
        self.stop.cancel();
        let _ = self.task.await;
        let seen = self.seen.lock().expect("lock");
        seen.clone()
    }
}

#[test]
fn keygen_prints_one_new_valid_key_per_run() {
    let one = keygen();
    let key = syncer::membership::cipher::GossipKey::from_base64(&one);
    assert!(key.is_ok(), "not a valid key: {one:?}");
    assert_eq!(one.len(), 44, "32 bytes in padded base64");
    assert_ne!(one, keygen());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_rotate_across_three_sites_without_a_member_down_and_a_retired_key_cannot_join() {
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .expect("client");
    let (old, new) = (keygen(), keygen());

    let a = Member::start(dir, "a", &[], &[&old]);
    let b = Member::start(dir, "b", &[a.gossip], &[&old]);
    let c = Member::start(dir, "c", &[a.gossip], &[&old]);
    let members = [&a, &b, &c];
    let procs: Vec<&Proc> = members.iter().map(|m| &m.proc).collect();
    let names = ["a", "b", "c"];

    eventually(DEADLINE, "all three members see each other", &procs, || {
        let ok = members.iter().zip(names).all(|(m, me)| {
            let text = log(&m.proc);
            names
                .iter()
                .filter(|n| **n != me)
                .all(|n| text.contains(&format!("member up member={n} ")))
        });
        async move { ok.then_some(()) }
    })
    .await;

    // An instance registered at site a is copied to b and c.
    eventually(DEADLINE, "site a's registry answers", &procs, || async {
        support::eureka_app_instances(&http, &a.registry, "NONE")
            .await
            .map(|_| ())
    })
    .await;
    let sid = sc_create_service(&http, &a.registry, "keyring-test", "svc").await;
    sc_add_instance(&http, &a.registry, &sid, 9000).await;
    let mut copies = Vec::new();
    for importer in [&b, &c] {
        copies.push(
            eventually(DEADLINE, "the copy at the other sites", &procs, || async {
                let list = support::eureka_app_instances(&http, &importer.registry, "SVC").await?;
                (list.len() == 1).then(|| list[0]["instanceId"].as_str().map(str::to_owned))?
            })
            .await,
        );
    }
    let watchers = [
        Watcher::start(http.clone(), b.registry.clone(), "SVC"),
        Watcher::start(http.clone(), c.registry.clone(), "SVC"),
    ];

    // The rotation: new as a second key, then first, then alone. Each step reaches every
    // member before the next one starts.
    let steps: [(&str, Vec<&str>, bool); 3] = [
        ("add the new key second", vec![&old, &new], false),
        ("make the new key first", vec![&new, &old], true),
        ("remove the old key", vec![&new], false),
    ];
    for (step, keys, by_signal) in &steps {
        let before: Vec<usize> = members.iter().map(|m| m.reloads()).collect();
        for member in members {
            write_keyring(&member.keyring, keys);
            if *by_signal {
                member.sighup();
            }
        }
        let wanted = format!("gossip keyring reloaded keys={}", keys.len());
        eventually(DEADLINE, step, &procs, || {
            let ok = members
                .iter()
                .zip(&before)
                .all(|(m, before)| m.reloads() > *before && log(&m.proc).contains(&wanted));
            async move { ok.then_some(()) }
        })
        .await;
        eprintln!("{step}: reloaded everywhere after {:?}", started.elapsed());
    }

    // A member holding only the new key joins: gossip sealed with it works everywhere.
    let d = Member::start(dir, "d", &[a.gossip], &[&new]);
    let mut procs = procs;
    procs.push(&d.proc);
    eventually(DEADLINE, "d joins with the new key", &procs, || {
        let ok = members
            .iter()
            .all(|m| log(&m.proc).contains("member up member=d "))
            && names
                .iter()
                .all(|n| log(&d.proc).contains(&format!("member up member={n} ")));
        async move { ok.then_some(()) }
    })
    .await;

    // Nothing failed to decrypt, no one went down, the copies never moved.
    for member in members.iter().chain([&&d]) {
        let text = log(&member.proc);
        assert!(
            !text.contains("member down"),
            "{}:\n{text}",
            member.proc.name
        );
        assert!(
            !text.contains("declared this member down"),
            "{}:\n{text}",
            member.proc.name
        );
        assert!(
            !text.contains("failed to decrypt"),
            "{}:\n{text}",
            member.proc.name
        );
        assert!(
            !text.contains("gossip keyring not reloaded"),
            "{}:\n{text}",
            member.proc.name
        );
    }
    for (watcher, copy) in watchers.into_iter().zip(&copies) {
        let seen = watcher.finish().await;
        assert!(seen.len() >= 10, "too few observations: {}", seen.len());
        for ids in &seen {
            assert_eq!(
                ids,
                &vec![copy.clone()],
                "the copy changed during the rotation"
            );
        }
    }

    // A member still holding only the retired key cannot join any more: every member it
    // announces to refuses what it sends, and it never shows up as a member.
    let outsider = Member::start(dir, "e", &[a.gossip, b.gossip, c.gossip], &[&old]);
    let refused = format!("from=127.0.0.1:{}", outsider.gossip);
    procs.push(&outsider.proc);
    eventually(
        DEADLINE,
        "the others refuse the retired key",
        &procs,
        || {
            let ok = members.iter().all(|m| {
                log(&m.proc)
                    .lines()
                    .any(|l| l.contains("failed to decrypt") && l.contains(&refused))
            });
            async move { ok.then_some(()) }
        },
    )
    .await;
    eventually(
        DEADLINE,
        "the outsider says no member answers",
        &procs,
        || {
            let ok = log(&outsider.proc).contains("no member answers");
            async move { ok.then_some(()) }
        },
    )
    .await;
    for member in members.iter().chain([&&d]) {
        let text = log(&member.proc);
        assert!(!text.contains("member up member=e "), "{text}");
        assert!(!text.contains("member down"), "{text}");
    }
    assert!(!log(&outsider.proc).contains("member up"));
    eprintln!("done after {:?}", started.elapsed());
}
