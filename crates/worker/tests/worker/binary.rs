//! The real `dispatch-worker` binary: JSON logs whose delivery lines carry the fields an operator
//! searches by (and never a secret or a payload), and a graceful exit 0 on SIGTERM.

use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::AsyncReadExt;

use crate::helpers::{Harness, PATIENCE};

#[tokio::test]
async fn the_binary_logs_json_delivery_lines_without_secrets_and_exits_cleanly_on_sigterm() {
    let h = Harness::new().await;
    h.subscribe("sub_logged", "/hook", Some("never-log-this-secret"))
        .await;
    h.ingest(
        "evt_logged",
        "order.created",
        json!({"card": "payload-must-not-be-logged"}),
    )
    .await;

    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_dispatch-worker"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", h.db.url())
        .env("ADDR", "127.0.0.1:0")
        .env("DISPATCH_LOG_FORMAT", "json")
        .env("DISPATCH_ALLOW_DESTINATIONS", "127.0.0.0/8")
        .env(
            "DISPATCH_SECRET_KEYS",
            dispatch_test_support::secrets::TEST_SECRET_KEYS,
        )
        .env("RUST_LOG", "info")
        .env("DISPATCH_SHUTDOWN_GRACE_SECS", "5")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    h.receiver.wait_for("/hook", 1, PATIENCE).await;
    // Let the outcome be recorded and logged before stopping.
    crate::helpers::eventually("the delivery is recorded", PATIENCE, || async {
        h.delivery("evt_logged", "sub_logged").await.status == "delivered"
    })
    .await;

    let pid = child.id().unwrap();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(PATIENCE, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "exit status {status}");

    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .await
        .unwrap();
    let lines: Vec<Value> = stderr
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect();
    let delivery = lines
        .iter()
        .find(|l| l["message"] == "delivery attempt")
        .unwrap_or_else(|| panic!("no delivery line in:\n{stderr}"));
    assert_eq!(delivery["event.id"], "evt_logged", "{delivery}");
    assert_eq!(delivery["subscription.id"], "sub_logged", "{delivery}");
    assert_eq!(delivery["attempt"], 1, "{delivery}");
    assert_eq!(delivery["status_code"], 200, "{delivery}");
    assert!(delivery["latency_ms"].is_u64(), "{delivery}");
    let trace_id = delivery["trace_id"].as_str().unwrap_or("");
    assert!(
        trace_id.len() == 32 && trace_id.chars().all(|c| c.is_ascii_hexdigit()),
        "trace id {trace_id:?} in {delivery}"
    );
    assert_eq!(delivery["level"], "INFO");
    assert!(
        lines.iter().any(|l| l["message"] == "worker stopped"),
        "no drain line in:\n{stderr}"
    );
    assert!(
        !stderr.contains("never-log-this-secret"),
        "a secret was logged"
    );
    assert!(
        !stderr.contains("payload-must-not-be-logged"),
        "a payload was logged"
    );
    tokio::time::sleep(Duration::from_millis(1)).await;
}

#[test]
fn check_config_prints_the_effective_values_or_every_problem_and_exits_1() {
    let run = |vars: &[(&str, &str)]| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_dispatch-worker"));
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .arg("check-config");
        for (k, v) in vars {
            command.env(k, v);
        }
        command.output().unwrap()
    };
    let url = "postgres://app:s3cret@db.example:5432/dispatch";
    let valid = run(&[
        ("DATABASE_URL", url),
        (
            "DISPATCH_SECRET_KEYS",
            dispatch_test_support::secrets::TEST_SECRET_KEYS,
        ),
    ]);
    let stdout = String::from_utf8_lossy(&valid.stdout);
    assert!(valid.status.success(), "{stdout}");
    assert!(stdout.starts_with("dispatch-worker: OK\n"), "{stdout}");
    assert!(
        stdout.contains("postgres://app:***@db.example:5432/dispatch"),
        "{stdout}"
    );
    assert!(!stdout.contains("s3cret"), "{stdout}");

    let invalid = run(&[("DATABASE_URL", url), ("DISPATCH_MAX_IN_FLIGHT", "0")]);
    assert_eq!(invalid.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&invalid.stderr);
    assert!(
        stderr.starts_with("dispatch-worker: invalid configuration:"),
        "{stderr}"
    );
    assert!(stderr.contains("max_in_flight"), "{stderr}");
    assert!(stderr.contains("secret_keys"), "{stderr}");
}
