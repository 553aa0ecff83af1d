//! Issue 12, part 3: service-center's RBAC in the built-in core, through the real
//! `syncer servicecenter --rbac` process: tokens, 401/403 with service-center's error
//! bodies, lockout, roles, password changes, the `/eureka` face's basic auth, and accounts
//! kept in the store (embedded across a restart; etcd shared by two cores).

mod support;

use std::path::Path;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use support::{eventually, free_tcp_port, python_with_eureka_client, test_file, Etcd, Proc};

const ROOT_PW: &str = "Root-pass-1";
const ALICE_PW: &str = "Alice-pass-1";
const BOB_PW: &str = "Bob-pass-1";

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("http client")
}

/// Starts `syncer servicecenter --rbac` on a free port with `extra` flags; waits until its
/// open `version` route answers.
async fn start_core(dir: &Path, name: &str, pw_file: &Path, extra: &[&str]) -> (Proc, String) {
    let port = free_tcp_port();
    let listen = format!("127.0.0.1:{port}");
    let mut args = vec![
        "servicecenter",
        "--listen",
        &listen,
        "--rbac",
        "--rbac-root-password-file",
        pw_file.to_str().expect("utf-8 path"),
    ];
    args.extend_from_slice(extra);
    let core = Proc::syncer(dir, name, &args);
    let base = format!("http://{listen}");
    let client = http();
    eventually(
        Duration::from_secs(20),
        "the core answers its open version route",
        &[&core],
        || async {
            let r = client
                .get(format!("{base}/v4/default/registry/version"))
                .send()
                .await
                .ok()?;
            (r.status() == StatusCode::OK).then_some(())
        },
    )
    .await;
    (core, base)
}

fn password_file(dir: &Path, pw: &str) -> std::path::PathBuf {
    let f = dir.join("root-password");
    std::fs::write(&f, format!("{pw}\n")).expect("write password file");
    f
}

/// `POST /v4/token`: the status and the body.
async fn login(base: &str, name: &str, pw: &str, ttl: Option<&str>) -> (StatusCode, Value) {
    let mut body = json!({"name": name, "password": pw});
    if let Some(ttl) = ttl {
        body["tokenExpirationTime"] = json!(ttl);
    }
    let r = http()
        .post(format!("{base}/v4/token"))
        .json(&body)
        .send()
        .await
        .expect("token request");
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn token(base: &str, name: &str, pw: &str) -> String {
    let (status, body) = login(base, name, pw, None).await;
    assert_eq!(status, StatusCode::OK, "login {name}: {body}");
    body["token"].as_str().expect("token").to_string()
}

/// A request with an optional bearer token: status and body.
async fn call(
    method: reqwest::Method,
    url: &str,
    bearer: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = http().request(method, url);
    if let Some(t) = bearer {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.expect("request");
    let status = r.status();
    let text = r.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// `POST /v4/accounts` of `name` with `password` and one role, as `bearer`: status and body.
async fn create_account(
    base: &str,
    bearer: &str,
    name: &str,
    password: &str,
    role: &str,
) -> (StatusCode, Value) {
    call(
        reqwest::Method::POST,
        &format!("{base}/v4/accounts"),
        Some(bearer),
        Some(json!({"name": name, "password": password, "roles": [role]})),
    )
    .await
}

fn code(body: &Value) -> &str {
    body["errorCode"].as_str().unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rbac_refuses_anonymous_wrong_and_unprivileged_callers_with_service_center_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pw = password_file(dir.path(), ROOT_PW);
    let data = dir.path().join("data");
    let (core, base) = start_core(
        dir.path(),
        "core",
        &pw,
        &["--data-dir", data.to_str().expect("utf-8")],
    )
    .await;
    let services = format!("{base}/v4/default/registry/microservices");
    use reqwest::Method as M;

    // Anonymous: 401 401204; health stays open.
    let (s, b) = call(M::GET, &services, None, None).await;
    assert_eq!((s, code(&b)), (StatusCode::UNAUTHORIZED, "401204"), "{b}");
    assert_eq!(b["errorMessage"], "No authorization header");
    let (s, _) = call(
        M::GET,
        &format!("{base}/v4/default/registry/health"),
        None,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    // A made-up token: 401 401201.
    let (s, b) = call(M::GET, &services, Some("a.b.c"), None).await;
    assert_eq!((s, code(&b)), (StatusCode::UNAUTHORIZED, "401201"), "{b}");

    // root (admin) manages accounts and roles.
    let root = token(&base, "root", ROOT_PW).await;
    let accounts = format!("{base}/v4/accounts");
    let (s, b) = create_account(&base, &root, "alice", ALICE_PW, "developer").await;
    assert_eq!(s, StatusCode::OK, "{b}");
    // Password rules: 400001 naming the rule.
    let (s, b) = create_account(&base, &root, "weak", "password", "developer").await;
    assert_eq!((s, code(&b)), (StatusCode::BAD_REQUEST, "400001"), "{b}");
    assert!(
        b["detail"].as_str().unwrap_or("").contains("upper-case"),
        "{b}"
    );
    // Duplicate: 409200.
    let (s, b) = create_account(&base, &root, "alice", ALICE_PW, "developer").await;
    assert_eq!((s, code(&b)), (StatusCode::CONFLICT, "409200"), "{b}");
    // Accounts are answered without their password (hash included).
    let (s, b) = call(M::GET, &format!("{accounts}/alice"), Some(&root), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["roles"], json!(["developer"]));
    assert_eq!(b["password"], "", "{b}");

    // A developer registers services but cannot manage accounts or roles (403).
    let alice = token(&base, "alice", ALICE_PW).await;
    let (s, b) = call(
        M::POST,
        &services,
        Some(&alice),
        Some(json!({"service": {"appId": "a", "serviceName": "s", "version": "1.0.0"}})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, b) = create_account(&base, &alice, "eve", "Eve-pass-12", "admin").await;
    assert_eq!((s, code(&b)), (StatusCode::FORBIDDEN, "403001"), "{b}");
    let (s, _) = call(M::GET, &format!("{base}/v4/roles"), Some(&alice), None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // ... but may read the syncer's ops extensions (developer has `ops`).
    let (s, _) = call(
        M::GET,
        &format!("{base}/v4/default/admin/dump"),
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);

    // A custom role: read-only services; no ops.
    let (s, b) = call(
        M::POST,
        &format!("{base}/v4/roles"),
        Some(&root),
        Some(json!({"name": "reader", "perms": [
            {"resources": [{"type": "service"}], "verbs": ["get"]}]})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, b) = create_account(&base, &root, "bob", BOB_PW, "reader").await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let bob = token(&base, "bob", BOB_PW).await;
    let (s, b) = call(M::GET, &services, Some(&bob), None).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["services"][0]["serviceName"], "s", "{b}");
    let (s, _) = call(
        M::POST,
        &services,
        Some(&bob),
        Some(json!({"service": {"appId": "a", "serviceName": "t", "version": "1.0.0"}})),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = call(
        M::GET,
        &format!("{base}/v4/default/admin/changes"),
        Some(&bob),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = call(
        M::POST,
        &format!("{base}/v4/default/registry/instances/action?type=register"),
        Some(&bob),
        Some(json!({"services": []})),
    )
    .await;
    assert_eq!(
        s,
        StatusCode::FORBIDDEN,
        "batch registration needs service create"
    );
    // A bound role cannot be deleted; built-in roles never.
    let (s, b) = call(
        M::DELETE,
        &format!("{base}/v4/roles/reader"),
        Some(&root),
        None,
    )
    .await;
    assert_eq!((s, code(&b)), (StatusCode::BAD_REQUEST, "400205"), "{b}");
    let (s, _) = call(
        M::DELETE,
        &format!("{base}/v4/roles/admin"),
        Some(&root),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    // The /eureka face: basic auth of an account; 401 with a challenge without.
    let apps = format!("{base}/eureka/apps");
    let r = http().get(&apps).send().await.expect("eureka");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.headers().contains_key("www-authenticate"));
    let r = http()
        .get(&apps)
        .basic_auth("bob", Some(BOB_PW))
        .header("Accept", "application/json")
        .send()
        .await
        .expect("eureka");
    assert_eq!(r.status(), StatusCode::OK);
    let r = http()
        .post(format!("{apps}/X"))
        .basic_auth("bob", Some(BOB_PW))
        .json(
            &json!({"instance": {"instanceId": "x1", "hostName": "h", "app": "X",
            "ipAddr": "127.0.0.1", "status": "UP", "port": {"$": 1, "@enabled": "true"},
            "dataCenterInfo": {"@class": "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo",
            "name": "MyOwn"}}}),
        )
        .send()
        .await
        .expect("eureka register");
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "reader cannot register");

    // A password change refuses the tokens issued before it.
    let (s, b) = call(
        M::POST,
        &format!("{accounts}/bob/password"),
        Some(&bob),
        Some(json!({"currentPassword": BOB_PW, "password": "Bob-pass-2"})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, b) = call(M::GET, &services, Some(&bob), None).await;
    assert_eq!((s, code(&b)), (StatusCode::UNAUTHORIZED, "401201"), "{b}");
    let bob = token(&base, "bob", "Bob-pass-2").await;
    // bob may not change alice's password; root may.
    let (s, _) = call(
        M::POST,
        &format!("{accounts}/alice/password"),
        Some(&bob),
        Some(json!({"password": "Alice-pass-2"})),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    // An expired token: 401 401205.
    let (s, b) = login(&base, "bob", "Bob-pass-2", Some("1s")).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let short = b["token"].as_str().expect("token").to_string();
    // Used once while valid (its signature check is then remembered), refused once expired.
    let (s, _) = call(M::GET, &services, Some(&short), None).await;
    assert_eq!(s, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (s, b) = call(M::GET, &services, Some(&short), None).await;
    assert_eq!((s, code(&b)), (StatusCode::UNAUTHORIZED, "401205"), "{b}");
    // A token whose account is deleted: 401 401206.
    let (s, _) = call(M::DELETE, &format!("{accounts}/bob"), Some(&root), None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, b) = call(M::GET, &services, Some(&bob), None).await;
    assert_eq!((s, code(&b)), (StatusCode::UNAUTHORIZED, "401206"), "{b}");
    let (s, _) = call(M::DELETE, &format!("{accounts}/root"), Some(&root), None).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "root cannot be deleted");

    // Lockout: the third wrong password blocks alice from this address for an hour, even
    // with the right password (403 403201); her token stays valid.
    for attempt in 1..=3 {
        let (s, b) = login(&base, "alice", "Wrong-pass-1", None).await;
        assert_eq!(
            (s, code(&b)),
            (StatusCode::UNAUTHORIZED, "401202"),
            "attempt {attempt}: {b}"
        );
    }
    let (s, b) = login(&base, "alice", ALICE_PW, None).await;
    assert_eq!((s, code(&b)), (StatusCode::FORBIDDEN, "403201"), "{b}");
    let (s, _) = call(M::GET, &services, Some(&alice), None).await;
    assert_eq!(s, StatusCode::OK);

    // No log line holds a password or a token.
    let log = std::fs::read_to_string(&core.log).expect("log");
    for secret in [ROOT_PW, ALICE_PW, BOB_PW, "Bob-pass-2", &root, &alice] {
        assert!(!log.contains(secret), "the log holds a secret");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_and_the_token_key_survive_a_restart_of_the_embedded_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pw = password_file(dir.path(), ROOT_PW);
    let data = dir.path().join("data");
    let data = data.to_str().expect("utf-8");
    let (mut core, base) = start_core(dir.path(), "core", &pw, &["--data-dir", data]).await;
    let root = token(&base, "root", ROOT_PW).await;
    let (s, b) = create_account(&base, &root, "alice", ALICE_PW, "developer").await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert!(core.terminate(Duration::from_secs(10)), "clean stop");
    drop(core);
    // The stored hash, never the password.
    let stored = std::fs::read(Path::new(data).join("registry.redb")).expect("store file");
    let stored = String::from_utf8_lossy(&stored);
    assert!(stored.contains("$argon2id$"), "hashes are stored");
    assert!(!stored.contains(ALICE_PW) && !stored.contains(ROOT_PW));

    // A new root password file is ignored: root exists.
    let pw = password_file(dir.path(), "Other-pass-9");
    let (_core, base) = start_core(dir.path(), "core2", &pw, &["--data-dir", data]).await;
    let (s, _) = call(
        reqwest::Method::GET,
        &format!("{base}/v4/accounts/alice"),
        Some(&root),
        None,
    )
    .await;
    assert_eq!(
        s,
        StatusCode::OK,
        "the old token verifies with the stored key"
    );
    token(&base, "alice", ALICE_PW).await;
    token(&base, "root", ROOT_PW).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_cores_on_one_etcd_share_accounts_and_accept_each_others_tokens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let etcd = Etcd::start(dir.path());
    let pw = password_file(dir.path(), ROOT_PW);
    let flags = ["--etcd-endpoints", etcd.endpoint.as_str()];
    let (_a, base_a) = start_core(dir.path(), "core-a", &pw, &flags).await;
    let (_b, base_b) = start_core(dir.path(), "core-b", &pw, &flags).await;
    let root = token(&base_a, "root", ROOT_PW).await;
    let (s, b) = create_account(&base_a, &root, "alice", ALICE_PW, "developer").await;
    assert_eq!(s, StatusCode::OK, "{b}");
    // Core B sees the account through the watch, and accepts core A's token.
    let alice = eventually(
        Duration::from_secs(10),
        "core B lets alice log in",
        &[],
        || async {
            let (s, b) = login(&base_b, "alice", ALICE_PW, None).await;
            (s == StatusCode::OK).then(|| b["token"].as_str().map(str::to_string))?
        },
    )
    .await;
    let (s, _) = call(
        reqwest::Method::GET,
        &format!("{base_a}/v4/default/registry/microservices"),
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "core A accepts core B's token");
    let (s, _) = call(
        reqwest::Method::GET,
        &format!("{base_b}/v4/accounts"),
        Some(&root),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "core B accepts core A's token");
}

/// py-eureka-client (unmodified, PyPI) with `user:password@` in its server URL, as Spring
/// Cloud's Eureka security has it: it registers, heartbeats and fetches the registry through
/// basic auth; with a wrong password its instance never appears.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn py_eureka_client_works_through_basic_auth_and_is_refused_with_a_wrong_password() {
    let python = python_with_eureka_client();
    let dir = tempfile::tempdir().expect("tempdir");
    let pw = password_file(dir.path(), ROOT_PW);
    let data = dir.path().join("data");
    let (core, base) = start_core(
        dir.path(),
        "core",
        &pw,
        &["--data-dir", data.to_str().expect("utf-8")],
    )
    .await;
    let root = token(&base, "root", ROOT_PW).await;
    let (s, b) = create_account(&base, &root, "app", ALICE_PW, "developer").await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let host = base.trim_start_matches("http://");
    // The wrong password is another account's: three failures block that account (from this
    // address), not the good client's.
    let client = |name: &str, app: &str, user: &str, pw: &str| {
        Proc::spawn(
            dir.path(),
            name,
            &python,
            &[test_file("clients/py_account_server.py")
                .to_string_lossy()
                .into_owned()],
            &[
                ("EUREKA_URL", format!("http://{user}:{pw}@{host}/eureka")),
                ("APP_NAME", app.to_string()),
                ("APP_PORT", "9090".to_string()),
                ("INTERVAL", "1".to_string()),
            ],
        )
    };
    let good = client("py-good", "good-app", "app", ALICE_PW);
    let bad = client("py-bad", "bad-app", "intruder", "Wrong-pass-1");
    let http = http();
    eventually(
        Duration::from_secs(30),
        "py-eureka-client's instance is registered and seen by the client itself",
        &[&core, &good],
        || async {
            let r = http
                .get(format!("{base}/eureka/apps/GOOD-APP"))
                .bearer_auth(&root)
                .header("Accept", "application/json")
                .send()
                .await
                .ok()?;
            let v: Value = r.json().await.ok()?;
            let registered = v["application"]["instance"]
                .as_array()
                .is_some_and(|i| !i.is_empty());
            let log = std::fs::read_to_string(&good.log).unwrap_or_default();
            (registered && log.contains("seen ")).then_some(())
        },
    )
    .await;
    let r = http
        .get(format!("{base}/eureka/apps/BAD-APP"))
        .bearer_auth(&root)
        .header("Accept", "application/json")
        .send()
        .await
        .expect("bad app");
    assert_eq!(
        r.status(),
        StatusCode::NOT_FOUND,
        "a client with a wrong password registers nothing"
    );
    drop(bad);
    let log = std::fs::read_to_string(&core.log).expect("log");
    assert!(!log.contains(ALICE_PW) && !log.contains("Wrong-pass-1"));
    assert!(
        log.lines()
            .any(|l| l.contains("wrong user name or password") && l.contains("intruder")),
        "the refusal is logged with the account name"
    );
}
