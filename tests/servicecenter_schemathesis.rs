//! Conformance of the built-in core's SC v4 API to service-center's own OpenAPI
//! description (`tests/openapi/servicecomb-v4.openapi.yaml`, a copy of
//! `reference/servicecomb-v4.openapi.yaml`), checked by the third-party fuzzer schemathesis
//! (PyPI, installed into the test venv by `scripts/test.sh`).
//!
//! Every operation under `/v4/{project}/registry`, `/v4/{project}/govern` and
//! `/v4/{project}/admin/dump` is run with examples, coverage and fuzzing phases (a fixed
//! seed, 10 cases per operation in the fuzzing phase) against `syncer servicecenter`, with
//! the checks `not_a_server_error` (no 5xx for any input) and
//! `response_schema_conformance` (every documented response body matches its schema).
//! The admin clusters/alarms operations are outside the core's scope (not selected). A
//! second run turns `--rbac` on and adds the RBAC operations (token, accounts, roles),
//! authenticated as root.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use support::{eventually, free_tcp_port, Proc};

/// The `st` CLI beside the test venv's python.
fn schemathesis_cli() -> PathBuf {
    let python = support::python_with_eureka_client();
    let st = python.with_file_name("st");
    assert!(
        st.exists(),
        "{} is missing: run the suite with scripts/test.sh, which installs schemathesis",
        st.display()
    );
    st
}

/// Runs schemathesis with `extra` arguments against `syncer servicecenter` started with
/// `core_args` (after `prepare` got whatever it needs from the core, e.g. a token); asserts
/// a clean run that selected `selected` operations.
async fn run_schemathesis<F, Fut>(core_args: &[&str], selected: usize, prepare: F)
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = Vec<String>>,
{
    let st = schemathesis_cli();
    let dir = tempfile::tempdir().unwrap();
    let port = free_tcp_port();
    let listen = format!("127.0.0.1:{port}");
    let data = dir.path().join("data");
    let mut args = vec![
        "servicecenter",
        "--listen",
        &listen,
        "--data-dir",
        data.to_str().unwrap(),
    ];
    args.extend_from_slice(core_args);
    let core = Proc::syncer(dir.path(), "core", &args);
    let base = format!("http://{listen}");
    let http = reqwest::Client::new();
    eventually(
        Duration::from_secs(20),
        "core answers /version",
        &[&core],
        || {
            let http = http.clone();
            let url = format!("{base}/v4/default/registry/version");
            async move {
                http.get(url)
                    .send()
                    .await
                    .ok()
                    .filter(|r| r.status().is_success())
            }
        },
    )
    .await;
    let extra = prepare(base.clone()).await;
    let spec = support::test_file("openapi/servicecomb-v4.openapi.yaml");
    let out_dir = dir.path().to_owned();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(st)
            .current_dir(&out_dir)
            .args([
                "run",
                &spec.to_string_lossy(),
                "--url",
                &base,
                "--checks",
                "not_a_server_error,response_schema_conformance",
                "--phases",
                "examples,coverage,fuzzing",
                "--max-examples",
                "10",
                "--seed",
                "1",
                "--workers",
                "2",
                "--generation-database",
                "none",
                "--request-timeout",
                "10",
                "--no-color",
            ])
            .args(&extra)
            .env("SCHEMATHESIS_TELEMETRY", "false")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "schemathesis found failures:\n{stdout}\n{stderr}\ncore log:\n{}",
        core.tail(40)
    );
    // Guard against a run that selected nothing.
    assert!(
        stdout.contains(&format!("{selected} selected")),
        "unexpected operation selection:\n{stdout}"
    );
}

/// The registry operations of the core.
const REGISTRY_PATHS: &str = r"^/v4/\{project\}/(registry|govern|admin/dump)";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_v4_api_conforms_to_the_openapi_description_and_never_answers_5xx() {
    run_schemathesis(&[], 38, |_| async {
        vec![
            "--include-path-regex".to_string(),
            REGISTRY_PATHS.to_string(),
        ]
    })
    .await;
}

/// With `--rbac`, authenticated as root: the registry operations and the RBAC ones (token,
/// accounts, roles; 11 operations).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_rbac_on_the_v4_and_rbac_operations_conform_authenticated() {
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("root-password");
    std::fs::write(&pw, "Root-pass-1\n").unwrap();
    let pw = pw.to_str().unwrap().to_string();
    run_schemathesis(
        &["--rbac", "--rbac-root-password-file", &pw],
        49,
        |base| async move {
            let reply: serde_json::Value = reqwest::Client::new()
                .post(format!("{base}/v4/token"))
                .json(&serde_json::json!({"name": "root", "password": "Root-pass-1"}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let token = reply["token"].as_str().unwrap();
            vec![
                "--header".to_string(),
                format!("Authorization: Bearer {token}"),
                "--include-path-regex".to_string(),
                format!("{REGISTRY_PATHS}|^/v4/(token|accounts|roles)"),
            ]
        },
    )
    .await;
}
