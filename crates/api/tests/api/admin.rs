//! `GET /stats` and the shipped binary's `dispatch-api admin …` commands against a real
//! PostgreSQL: the route answers exactly what `admin stats --json` prints, and `replay` and
//! `purge` run with nothing but `DATABASE_URL` (no API keys, no sealing keys), as a Kubernetes
//! CronJob or `kubectl exec` runs them.

use std::process::{Command, Output};

use diesel_async::RunQueryDsl;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TEST_API_KEY, TestApp, event, json_of};

/// Runs the built `dispatch-api` with only `PATH` and `extra` in its environment.
pub(crate) fn dispatch_api(args: &[&str], extra: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_dispatch-api"));
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .args(args);
    for (k, v) in extra {
        command.env(k, v);
    }
    command.output().expect("dispatch-api runs")
}

/// Runs `dispatch-api admin …` on the test's database; it must succeed. Returns stdout.
pub(crate) fn admin(app: &TestApp, args: &[&str]) -> String {
    let mut argv = vec!["admin"];
    argv.extend_from_slice(args);
    let out = dispatch_api(&argv, &[("DATABASE_URL", app.db.url())]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "admin {args:?}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

async fn sql(app: &TestApp, statement: &str) {
    let pool = app.db.pool();
    let mut conn = dispatch_store::pool::connection(&pool)
        .await
        .expect("a connection");
    diesel::sql_query(statement)
        .execute(&mut *conn)
        .await
        .expect("the statement runs");
}

/// Two subscriptions, three events (six deliveries); the delivery of `evt_1` to `sub_a` failed
/// after two failed attempts.
async fn seeded() -> TestApp {
    let app = TestApp::spawn().await;
    app.subscribe("sub_a", &["*"]).await;
    app.subscribe("sub_b", &["order.*"]).await;
    for id in ["evt_1", "evt_2", "evt_3"] {
        let response = app.post_event(&event(id, "order.created")).await;
        assert_eq!(response.status(), StatusCode::ACCEPTED);
    }
    app.seed_attempt("evt_1", "sub_a", 1, Some(500), Some("HTTP 500"))
        .await;
    app.seed_attempt("evt_1", "sub_a", 2, Some(500), Some("HTTP 500"))
        .await;
    sql(
        &app,
        "UPDATE deliveries SET status = 'failed', attempts = 2, last_error = 'HTTP 500'
          WHERE event_id = 'evt_1' AND subscription_id = 'sub_a'",
    )
    .await;
    app
}

/// The parts of a snapshot that move on their own between two reads: the oldest wait grows
/// with the clock, and PostgreSQL's row statistics are flushed in the background.
fn without_moving_parts(mut stats: Value) -> Value {
    stats["backlog"]["oldest_due_age_secs"] = Value::Null;
    stats["queue"]["live_rows"] = Value::Null;
    stats["queue"]["dead_rows"] = Value::Null;
    stats
}

#[tokio::test]
async fn get_stats_answers_what_admin_stats_json_prints() {
    let app = seeded().await;

    let (status, served) = json_of(app.get("/stats").await).await;
    assert_eq!(status, StatusCode::OK, "{served}");
    assert_eq!(
        served["deliveries_by_status"],
        json!({"pending": 5, "processing": 0, "retrying": 0, "delivered": 0, "failed": 1,
               "cancelled": 0})
    );
    assert_eq!(served["backlog"]["due"], 5);
    assert_eq!(served["window_secs"], 3600);
    assert_eq!(served["attempts"], 2);
    assert_eq!(served["failed_attempts"], 2);
    assert_eq!(served["failure_rate"], 1.0);
    let subscriptions = served["subscriptions"].as_array().expect("a list");
    let rows: Vec<(&str, i64, i64)> = subscriptions
        .iter()
        .map(|s| {
            (
                s["id"].as_str().unwrap_or_default(),
                s["due"].as_i64().unwrap_or(-1),
                s["failures"].as_i64().unwrap_or(-1),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [("sub_b", 3, 0), ("sub_a", 2, 2)],
        "most due first: {served}"
    );
    assert_eq!(subscriptions[0]["circuit_state"], "closed");

    let printed = admin(&app, &["stats", "--json"]);
    let printed: Value = serde_json::from_str(&printed).expect("stats --json prints JSON");
    assert_eq!(without_moving_parts(printed), without_moving_parts(served));

    let unauthenticated = reqwest::get(app.url("/stats")).await.expect("answered");
    assert_eq!(unauthenticated.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn admin_stats_prints_tables_without_api_or_sealing_keys() {
    let app = seeded().await;
    let text = admin(&app, &["stats"]);
    assert!(
        text.starts_with("Backlog: 5 due, oldest waiting "),
        "{text}"
    );
    assert!(
        text.contains("Attempts (last hour): 2, failed 2, failure rate 100.0 %"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["failed", "1"]),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l.starts_with("sub_a ")
            && l.split_whitespace().collect::<Vec<_>>() == ["sub_a", "closed", "2", "2", "2"]),
        "{text}"
    );
}

#[tokio::test]
async fn admin_replay_re_queues_a_failed_delivery_and_its_dry_run_changes_nothing() {
    let app = seeded().await;
    assert_eq!(
        admin(&app, &["replay", "--subscription", "sub_a", "--dry-run"]),
        "dry run: would replay 1 failed delivery to subscription sub_a\n"
    );
    assert_eq!(
        admin(&app, &["replay", "--subscription", "sub_b", "--dry-run"]),
        "dry run: would replay 0 failed deliveries to subscription sub_b\n"
    );
    let status_of = |event: &Value| {
        event["deliveries"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|d| d["subscription_id"] == "sub_a")
            .map(|d| d["status"].clone())
    };
    assert_eq!(status_of(&app.event("evt_1").await), Some(json!("failed")));

    assert_eq!(
        admin(&app, &["replay", "--event", "evt_1"]),
        "replayed 1 failed delivery of event evt_1: pending again, with a full retry schedule\n"
    );
    assert_eq!(status_of(&app.event("evt_1").await), Some(json!("pending")));
    assert_eq!(
        admin(&app, &["replay", "--event", "evt_1", "--dry-run"]),
        "dry run: would replay 0 failed deliveries of event evt_1\n"
    );
}

#[tokio::test]
async fn admin_purge_deletes_only_finished_history_past_the_retention() {
    let app = seeded().await;
    // evt_2 finished two days ago; evt_1 is as old but still has a pending delivery.
    sql(
        &app,
        "UPDATE deliveries SET status = 'delivered' WHERE event_id = 'evt_2'",
    )
    .await;
    sql(
        &app,
        "UPDATE events SET received_at = now() - interval '2 days' WHERE id IN ('evt_1', 'evt_2')",
    )
    .await;
    let dry = admin(&app, &["purge", "--older-than", "1d", "--dry-run"]);
    assert!(
        dry.starts_with(
            "dry run: would delete 1 events, 2 deliveries, 0 attempts, 0 deleted subscriptions \
             (finished before "
        ),
        "{dry}"
    );
    app.event("evt_2").await;

    let done = admin(&app, &["purge", "--older-than", "1d", "--batch-size", "10"]);
    assert_eq!(
        done,
        "deleted 1 events, 2 deliveries, 0 attempts, 0 deleted subscriptions in 1 batches\n"
    );
    assert_eq!(
        app.get("/events/evt_2").await.status(),
        StatusCode::NOT_FOUND
    );
    app.event("evt_1").await;
    app.event("evt_3").await;
}

#[tokio::test]
async fn admin_commands_refuse_bad_flags_and_check_config_reports_the_api_configuration() {
    let app = TestApp::spawn().await;
    let url = app.db.url();
    let bad = dispatch_api(
        &["admin", "purge", "--older-than", "30"],
        &[("DATABASE_URL", url)],
    );
    assert_eq!(bad.status.code(), Some(2), "a usage error");
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("has no unit"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );

    // check-config checks what `serve` needs: without API keys it says so, and exits 1.
    let invalid = dispatch_api(&["admin", "check-config"], &[("DATABASE_URL", url)]);
    assert_eq!(invalid.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&invalid.stderr);
    assert!(
        stderr.starts_with("dispatch-api: invalid configuration:"),
        "{stderr}"
    );
    assert!(stderr.contains("api_keys"), "{stderr}");
    let valid = dispatch_api(
        &["admin", "check-config"],
        &[
            ("DATABASE_URL", url),
            ("DISPATCH_API_KEYS", TEST_API_KEY),
            (
                "DISPATCH_SECRET_KEYS",
                dispatch_test_support::secrets::TEST_SECRET_KEYS,
            ),
        ],
    );
    let stdout = String::from_utf8_lossy(&valid.stdout);
    assert!(valid.status.success(), "{stdout}");
    assert!(stdout.starts_with("dispatch-api: OK\n"), "{stdout}");
    assert!(stdout.contains("1 API key(s)"), "{stdout}");
    assert!(!stdout.contains(TEST_API_KEY), "{stdout}");
}
