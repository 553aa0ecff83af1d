//! A small harness for integration tests: real `syncer` processes on loopback, with ports
//! the OS picks, logs in a temp dir, and polling with deadlines instead of sleeps.

#![allow(dead_code)]

use std::fs::File;
use std::future::Future;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1 (bound, then released; the OS will not hand it out again
/// soon).
pub fn free_tcp_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind tcp 0");
    l.local_addr().expect("local addr").port()
}

/// A port free for both UDP and TCP on 127.0.0.1.
pub fn free_udp_port() -> u16 {
    loop {
        let u = UdpSocket::bind("127.0.0.1:0").expect("bind udp 0");
        let port = u.local_addr().expect("local addr").port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Loopback address with `port`.
pub fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A child process whose output goes to a log file; killed when dropped.
pub struct Proc {
    pub name: String,
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    /// Starts `program args` with its stdout and stderr in `dir/name.log` (appended, so a
    /// restarted process keeps one log).
    pub fn spawn(
        dir: &Path,
        name: &str,
        program: &Path,
        args: &[String],
        envs: &[(&str, String)],
    ) -> Proc {
        let log = dir.join(format!("{name}.log"));
        let out = File::options()
            .create(true)
            .append(true)
            .open(&log)
            .expect("open log");
        let err = out.try_clone().expect("clone log");
        let mut cmd = Command::new(program);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .env("SYNCER_LOG", "info,syncer=debug");
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({}): {e}", program.display()));
        Proc {
            name: name.to_owned(),
            child,
            log,
        }
    }

    /// The `syncer` binary built by cargo for this test run.
    pub fn syncer(dir: &Path, name: &str, args: &[&str]) -> Proc {
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        Proc::spawn(
            dir,
            name,
            Path::new(env!("CARGO_BIN_EXE_syncer")),
            &args,
            &[],
        )
    }

    /// SIGKILL, and wait for the exit.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, and wait up to `timeout` for a clean exit.
    pub fn terminate(&mut self, timeout: Duration) -> bool {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// The last `lines` lines of the log.
    pub fn tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `check` every 100 ms until it returns `Some`, or panics after `timeout` with `what`
/// and the tails of `logs`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, logs: &[&Proc], mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if Instant::now() > deadline {
            let mut msg = format!("timed out after {timeout:?} waiting for: {what}\n");
            for p in logs {
                msg.push_str(&format!(
                    "--- {} ({}) ---\n{}\n",
                    p.name,
                    p.log.display(),
                    p.tail(40)
                ));
            }
            panic!("{msg}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The python interpreter with py-eureka-client installed (`scripts/test.sh` sets it up).
pub fn python_with_eureka_client() -> PathBuf {
    match std::env::var_os("SYNCER_TEST_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => panic!(
            "SYNCER_TEST_PYTHON is not set: run the suite with scripts/test.sh, which installs \
             py-eureka-client into target/test-venv and sets it"
        ),
    }
}

/// Path of a file under `tests/`.
pub fn test_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(rel)
}
