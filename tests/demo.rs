//! The multi-servicecenters demo, run by its own script exactly as a user would: account-server
//! on the Eureka side, hello-server on the service-center side, a syncer beside each, and
//! `POST 127.0.0.1:8091/login` answering `welcome Jack` through hello-server's discovery of
//! account-server across the sites.

use std::path::Path;
use std::process::Command;

#[test]
fn the_multi_servicecenters_demo_answers_welcome_jack() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_syncer"))
        .parent()
        .expect("binary directory");
    for app in ["account-server", "hello-server"] {
        assert!(
            bin_dir.join(app).exists(),
            "{app} is not built in {}: run the suite with scripts/test.sh (it builds the whole workspace)",
            bin_dir.display()
        );
    }
    let out = Command::new("bash")
        .arg(root.join("samples/multi-servicecenters/run.sh"))
        .env("SKIP_BUILD", "1")
        .env("BIN_DIR", bin_dir)
        .env("DEADLINE_SECS", "90")
        .output()
        .expect("run the demo script");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("welcome Jack"),
        "demo failed ({}):\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}",
        out.status
    );
}
