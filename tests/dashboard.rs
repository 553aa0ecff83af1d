//! The daemon's web dashboard (`GET /` of `--http-addr`) in a real browser: headless
//! Chromium (Debian's `chromium`, installed by scripts/test.sh) driven over the DevTools
//! protocol, against real daemons on loopback.
//!
//! Why not `chromium --dump-dom --virtual-time-budget=..`: virtual time stops while a fetch is
//! pending, and the dashboard's live stream (an EventSource) always is, so such a run never
//! ends; without the budget the DOM is dumped at `load`, before any data arrived. Over the
//! DevTools protocol the test instead asks the page (`Runtime.evaluate`) until what it
//! expects is drawn, and can act while the page stays open (a registration appearing live).
//!
//! A screenshot of the Sites tab is saved to `target/dashboard.png` (not committed).

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use support::{eventually, free_tcp_port, free_udp_port, get_json, Proc};
use tokio_tungstenite::tungstenite::Message;

/// Longest wait for one answer of the browser, or for the page to draw what is expected.
const BROWSER_WAIT: Duration = Duration::from_secs(30);

/// The app whose name is markup: if the dashboard ever inserted it as HTML, the image would
/// fail to load and its handler would rename the page. Eureka upper-cases app names and the
/// built-in core turns them into lower-case service names.
const HOSTILE_APP: &str = "<IMG SRC=X ONERROR=DOCUMENT.TITLE='PWNED'>";
/// [`HOSTILE_APP`] as the service name the syncer reports.
const HOSTILE_NAME: &str = "<img src=x onerror=document.title='pwned'>";

struct Site {
    proc: Proc,
    registry: String,
    http: Option<String>,
}

/// A standalone daemon (built-in core) of cluster `name`, with its HTTP listener on a port
/// of its own when `http` is set, and `extra` arguments.
fn start(
    dir: &Path,
    name: &str,
    gossip: u16,
    join: Option<u16>,
    http: bool,
    extra: &[String],
) -> Site {
    let registry_port = free_tcp_port();
    let mut args = support::daemon_args(name, name, gossip, free_tcp_port(), join);
    args.extend([
        "--builtin-addr".into(),
        format!("127.0.0.1:{registry_port}"),
    ]);
    let http = http.then(|| {
        let port = free_tcp_port();
        args.extend(["--http-addr".into(), format!("127.0.0.1:{port}")]);
        format!("http://127.0.0.1:{port}")
    });
    args.extend(extra.iter().cloned());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Site {
        proc: Proc::syncer(dir, name, &args),
        registry: format!("http://127.0.0.1:{registry_port}"),
        http,
    }
}

/// The Chromium binary: `SYNCER_TEST_CHROMIUM`, else `chromium` or `chromium-browser` on the
/// path; `None` (the test is skipped, saying so) when there is none.
fn chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("SYNCER_TEST_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    let found = ["chromium", "chromium-browser"].into_iter().find(|name| {
        Command::new(name)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    if found.is_none() {
        eprintln!(
            "SKIPPED: no chromium on the path (run scripts/test.sh, which installs Debian's \
             chromium, or set SYNCER_TEST_CHROMIUM)"
        );
    }
    found.map(PathBuf::from)
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// One headless Chromium showing one page, driven over the DevTools protocol; killed on drop.
struct Browser {
    proc: Proc,
    page: Socket,
    next_id: u64,
}

impl Browser {
    /// Starts Chromium on `url` (profile in `dir/profile-{label}`, 1280x900) and connects to
    /// the page's DevTools socket.
    async fn open(chromium: &Path, dir: &Path, label: &str, url: &str) -> Browser {
        let profile = dir.join(format!("profile-{label}"));
        let args: Vec<String> = vec![
            "--headless".into(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--no-first-run".into(),
            "--hide-scrollbars".into(),
            "--window-size=1280,900".into(),
            "--remote-debugging-address=127.0.0.1".into(),
            "--remote-debugging-port=0".into(),
            format!("--user-data-dir={}", profile.display()),
            url.into(),
        ];
        let proc = Proc::spawn(dir, &format!("chromium-{label}"), chromium, &args, &[]);
        // Chromium writes the port it chose into the profile.
        let port: u16 = eventually(BROWSER_WAIT, "chromium's DevTools port", &[&proc], || {
            let file = profile.join("DevToolsActivePort");
            async move {
                std::fs::read_to_string(file)
                    .ok()?
                    .lines()
                    .next()?
                    .parse()
                    .ok()
            }
        })
        .await;
        let http = reqwest::Client::new();
        let socket: String = eventually(BROWSER_WAIT, "chromium's page target", &[&proc], || {
            let http = http.clone();
            async move {
                let targets: Value = http
                    .get(format!("http://127.0.0.1:{port}/json/list"))
                    .send()
                    .await
                    .ok()?
                    .json()
                    .await
                    .ok()?;
                targets.as_array()?.iter().find(|t| t["type"] == "page")?["webSocketDebuggerUrl"]
                    .as_str()
                    .map(str::to_owned)
            }
        })
        .await;
        let (page, _) = tokio_tungstenite::connect_async(socket.as_str())
            .await
            .expect("connect to the page's DevTools socket");
        Browser {
            proc,
            page,
            next_id: 0,
        }
    }

    /// Calls DevTools `method` and returns its `result`; panics on an error answer or when
    /// none comes within [`BROWSER_WAIT`].
    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let request = json!({"id": id, "method": method, "params": params}).to_string();
        self.page
            .send(Message::text(request))
            .await
            .expect("send to chromium");
        let deadline = tokio::time::Instant::now() + BROWSER_WAIT;
        loop {
            let message = tokio::time::timeout_at(deadline, self.page.next())
                .await
                .unwrap_or_else(|_| panic!("chromium did not answer {method} in time"))
                .unwrap_or_else(|| panic!("chromium closed its socket during {method}"))
                .expect("read from chromium");
            let Message::Text(text) = message else {
                continue;
            };
            let answer: Value = serde_json::from_str(text.as_str()).expect("DevTools JSON");
            // Anything else is an event of the protocol, not the answer.
            if answer["id"] != id {
                continue;
            }
            assert!(answer.get("error").is_none(), "{method} failed: {answer}");
            return answer["result"].clone();
        }
    }

    /// The value of the JavaScript `expression` in the page (JSON-serializable); panics
    /// when it throws.
    async fn eval(&mut self, expression: &str) -> Value {
        match self.try_eval(expression).await {
            Ok(value) => value,
            Err(thrown) => panic!("{expression} threw: {thrown}"),
        }
    }

    /// The value of `expression`, or what it threw (e.g. while the page is still loading).
    async fn try_eval(&mut self, expression: &str) -> Result<Value, Value> {
        let result = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true}),
            )
            .await;
        match result.get("exceptionDetails") {
            Some(thrown) => Err(thrown.clone()),
            None => Ok(result["result"]["value"].clone()),
        }
    }

    /// Waits until `expression` is true in the page; panics after [`BROWSER_WAIT`] with
    /// `what`, the page's text and the logs of `logs` and of the browser.
    async fn wait_for(&mut self, what: &str, expression: &str, logs: &[&Proc]) {
        let deadline = Instant::now() + BROWSER_WAIT;
        loop {
            let last = self.try_eval(expression).await;
            if last == Ok(Value::Bool(true)) {
                return;
            }
            if Instant::now() > deadline {
                let text = self.try_eval("document.body.innerText").await;
                let mut message =
                    format!(
                    "the dashboard did not show {what} within {BROWSER_WAIT:?} (last: {last:?})\n\
                     --- page ---\n{}\n",
                    text.ok().as_ref().and_then(Value::as_str).unwrap_or_default()
                );
                for p in logs.iter().chain([&&self.proc]) {
                    message.push_str(&format!("--- {} ---\n{}\n", p.name, p.tail(30)));
                }
                panic!("{message}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Saves a PNG of what the page shows to `path`.
    async fn screenshot(&mut self, path: &Path) {
        let shot = self
            .call("Page.captureScreenshot", json!({"format": "png"}))
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().expect("screenshot data"))
            .expect("screenshot base64");
        std::fs::write(path, png).expect("write the screenshot");
    }
}

/// A JavaScript expression: whether a row of table body `body` has text `needle` in a cell
/// (`needle` goes in as a JSON string).
fn cell_with(body: &str, needle: &str) -> String {
    format!(
        "[...document.querySelectorAll('#{body} td')].some(td => td.textContent.includes({}))",
        json!(needle)
    )
}

/// A JavaScript expression: whether the events table has a `kind` event of a service whose
/// name contains `service`.
fn event_of(kind: &str, service: &str) -> String {
    format!(
        "[...document.querySelectorAll('#events-rows tr[data-kind={}]')]\
         .some(tr => tr.textContent.includes({}))",
        json!(kind),
        json!(service)
    )
}

/// Registers instance `id` of Eureka app `app` at the built-in core at `registry`; whether
/// it answered 204.
async fn eureka_register(http: &reqwest::Client, registry: &str, app: &str, id: &str) -> bool {
    let body = json!({"instance": {
        "instanceId": id, "hostName": "host-1", "app": app,
        "ipAddr": "10.1.2.3", "status": "UP", "port": {"$": 8080, "@enabled": "true"},
        "dataCenterInfo": {"@class": "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo", "name": "MyOwn"}
    }});
    let path: String = app
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect();
    http.post(format!("{registry}/eureka/apps/{path}"))
        .json(&body)
        .send()
        .await
        .is_ok_and(|r| r.status().as_u16() == 204)
}

/// `GET url` as JSON, `None` until it answers 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_the_peer_its_services_and_live_events_and_keeps_markup_as_text() {
    let Some(chromium) = chromium() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let http = reqwest::Client::new();
    let gossip_east = free_udp_port();
    let east = start(dir.path(), "east", gossip_east, None, false, &[]);
    let west = start(
        dir.path(),
        "west",
        free_udp_port(),
        Some(gossip_east),
        true,
        &[],
    );
    let dashboard = west.http.clone().expect("west's HTTP listener");
    let logs = [&east.proc, &west.proc];

    // ORDERS and the app named with markup registered at east.
    eventually(
        Duration::from_secs(20),
        "east's built-in core accepts ORDERS",
        &logs,
        || async {
            eureka_register(&http, &east.registry, "ORDERS", "10.1.2.3:orders:8080")
                .await
                .then_some(())
        },
    )
    .await;
    assert!(
        eureka_register(&http, &east.registry, HOSTILE_APP, "hostile-1").await,
        "east's built-in core accepts the app named {HOSTILE_APP}"
    );

    // ORDERS crossed to west, and west's status API knows both services of east.
    eventually(
        Duration::from_secs(30),
        "ORDERS copied to west's registry",
        &logs,
        || async {
            let url = format!(
                "{}/v4/default/registry/instances?appId=eureka&serviceName=orders&version=latest",
                west.registry
            );
            let found = get_json(&http, &url).await?;
            found["instances"]
                .as_array()
                .is_some_and(|a| !a.is_empty())
                .then_some(())
        },
    )
    .await;
    eventually(
        Duration::from_secs(30),
        "west's /v1/syncer/services lists both services of east",
        &logs,
        || async {
            let services = get_json(&http, &format!("{dashboard}/v1/syncer/services")).await?;
            let names: Vec<&str> = services["services"]
                .as_array()?
                .iter()
                .filter_map(|s| s["service"].as_str())
                .collect();
            (names.iter().any(|n| n.contains("/orders/"))
                && names.iter().any(|n| n.contains(HOSTILE_NAME)))
            .then_some(())
        },
    )
    .await;

    // West's dashboard, Services tab shown (Sites and Events are live whatever is shown).
    let mut page = Browser::open(
        &chromium,
        dir.path(),
        "west",
        &format!("{dashboard}/#services"),
    )
    .await;
    page.wait_for(
        "the live stream connected",
        "document.getElementById('live').textContent === 'live'",
        &logs,
    )
    .await;
    page.wait_for(
        "the peer cluster east (Sites)",
        &format!(
            "[...document.querySelectorAll('#peers-rows td:first-child')].some(td => td.textContent === {})",
            json!("east")
        ),
        &logs,
    )
    .await;
    page.wait_for(
        "the crossed service (Services)",
        &cell_with("services-rows", "default/default/eureka/orders/0.0.1"),
        &logs,
    )
    .await;
    page.wait_for(
        "orders' register event (Events)",
        &event_of("register", "/orders/"),
        &logs,
    )
    .await;

    // The name with markup arrives as text: shown in a cell, escaped when serialized, no
    // <img> element anywhere (the dashboard has none of its own), its handler never ran.
    page.wait_for(
        "the service named with markup, as text (Services)",
        &cell_with("services-rows", HOSTILE_NAME),
        &logs,
    )
    .await;
    let html = page.eval("document.documentElement.outerHTML").await;
    let html = html.as_str().expect("outerHTML");
    assert!(
        html.contains("&lt;img src=x onerror=document.title='pwned'&gt;"),
        "the name with markup is escaped in the page:\n{html}"
    );
    assert_eq!(
        page.eval("document.getElementsByTagName('img').length")
            .await,
        json!(0),
        "an element was made of data from the API:\n{html}"
    );
    assert_eq!(page.eval("document.title").await, json!("syncer west"));

    // A registration at east appears live: no reload (the page keeps a mark it was given).
    page.eval("window.stillTheSamePage = true").await;
    assert!(
        eureka_register(&http, &east.registry, "PAYMENTS", "10.1.2.5:payments:8080").await,
        "east accepts PAYMENTS"
    );
    page.wait_for(
        "payments' register event, live (Events)",
        &event_of("register", "/payments/"),
        &logs,
    )
    .await;
    assert_eq!(
        page.eval("window.stillTheSamePage === true").await,
        json!(true),
        "the page was not reloaded"
    );

    // The status follows live too: east exports three instances, two of them copied here
    // (the one named with markup cannot be: service-center's name rule refuses it).
    page.wait_for(
        "east's export and copies (Sites)",
        "[...document.querySelectorAll('#peers-rows tr')].some(tr => \
         tr.cells[0].textContent === 'east' && tr.cells[7].textContent === '3' \
         && tr.cells[8].textContent === '2')",
        &logs,
    )
    .await;

    // The Sites tab, for the closing note.
    page.eval("location.hash = 'sites'").await;
    page.wait_for(
        "the Sites tab",
        "!document.getElementById('sites').hidden && document.getElementById('services').hidden",
        &logs,
    )
    .await;
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    std::fs::create_dir_all(&target).expect("target dir");
    let shot = target.join("dashboard.png");
    page.screenshot(&shot).await;
    eprintln!("dashboard screenshot: {}", shot.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_token_the_dashboard_asks_for_it_once_and_then_goes_live() {
    let Some(chromium) = chromium() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "dash-Token_42\n").expect("token file");
    let solo = start(
        dir.path(),
        "solo",
        free_udp_port(),
        None,
        true,
        &["--http-token-file".into(), token_file.display().to_string()],
    );
    let dashboard = solo.http.clone().expect("solo's HTTP listener");
    let http = reqwest::Client::new();
    eventually(
        Duration::from_secs(20),
        "solo's status API refuses a request without the token",
        &[&solo.proc],
        || async {
            let resp = http
                .get(format!("{dashboard}/v1/syncer/status"))
                .send()
                .await
                .ok()?;
            (resp.status().as_u16() == 401).then_some(())
        },
    )
    .await;

    let mut page = Browser::open(&chromium, dir.path(), "solo", &format!("{dashboard}/")).await;
    let logs = [&solo.proc];
    page.wait_for(
        "the token form",
        "!document.getElementById('token-form').hidden \
         && document.getElementById('live').textContent === 'token needed'",
        &logs,
    )
    .await;
    assert_eq!(
        page.eval("document.getElementById('where').textContent")
            .await,
        json!(""),
        "nothing shown without the token"
    );

    // A wrong token is refused and asked again.
    let submit = |token: &str| {
        format!(
            "document.getElementById('token').value = {}; \
             document.getElementById('token-form').requestSubmit()",
            json!(token)
        )
    };
    page.eval(&submit("wrong")).await;
    page.wait_for(
        "the wrong token refused",
        "!document.getElementById('token-form').hidden \
         && document.getElementById('token-error').textContent.includes('refused')",
        &logs,
    )
    .await;

    // The right one goes into the cookie, which the live stream sends too.
    page.eval(&submit("dash-Token_42")).await;
    page.wait_for(
        "the status with the token, and the live stream",
        "document.getElementById('token-form').hidden \
         && document.getElementById('where').textContent === 'solo / solo' \
         && document.getElementById('live').textContent === 'live'",
        &logs,
    )
    .await;
    assert_eq!(
        page.eval("document.cookie").await,
        json!("syncer_token=dash-Token_42")
    );
    page.wait_for(
        "the effective settings (Config)",
        &cell_with("config-rows", "http_token"),
        &logs,
    )
    .await;
}
