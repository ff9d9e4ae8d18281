//! A subscription's own settings as the worker honours them: its headers on every attempt
//! (Dispatch's own win), its timeout, its retry limits — read at each claim, so a change applies
//! to the next attempt — and a pause that holds its deliveries until it is resumed.

use std::time::Duration;

use chrono::Utc;
use dispatch_store::queries::subscription_changes::{SubscriptionChange, UpdateOutcome, update};
use dispatch_test_support::receiver::Reply;
use serde_json::json;

use crate::helpers::Harness;

/// Pauses or resumes through the store function `PATCH /subscriptions/{id}` uses.
async fn set_enabled(h: &Harness, id: &str, enabled: bool) {
    let row = h.subscription(id).await;
    let before = SubscriptionChange::of(&row);
    let after = SubscriptionChange {
        enabled,
        ..before.clone()
    };
    let outcome = update(
        &mut *h.conn().await,
        &dispatch_domain::TenantId::default_tenant(),
        id,
        &before,
        &after,
    )
    .await
    .unwrap();
    assert!(
        matches!(outcome, UpdateOutcome::Updated { .. }),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn a_subscription_s_headers_are_sent_with_each_attempt_and_a_change_applies_to_the_next() {
    let h = Harness::new().await;
    h.receiver.script("/h", [Reply::status(500), Reply::ok()]);
    h.subscribe("sub_h", "/h", Some("s3cret")).await;
    h.execute(
        r#"UPDATE subscriptions SET headers = '{"authorization": "Bearer t0ken",
             "x-tenant": "acme", "user-agent": "spoofed"}' WHERE id = 'sub_h'"#,
    )
    .await;
    h.ingest("evt_1", "order.created", json!({})).await;
    let worker = h.worker(&[]);
    assert_eq!(worker.run_once().await.unwrap(), 1);

    h.execute(r#"UPDATE subscriptions SET headers = '{"x-tenant": "globex"}' WHERE id = 'sub_h'"#)
        .await;
    h.make_due().await;
    assert_eq!(worker.run_once().await.unwrap(), 1);
    let got = h.receiver.requests("/h");
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].header("authorization"), Some("Bearer t0ken"));
    assert_eq!(got[0].header("x-tenant"), Some("acme"));
    assert!(
        got[0]
            .header("user-agent")
            .is_some_and(|ua| ua.starts_with("Dispatch/")),
        "Dispatch's own header wins: {:?}",
        got[0].header("user-agent")
    );
    assert!(got[0].header("webhook-signature").is_some());
    assert_eq!(
        got[1].header("x-tenant"),
        Some("globex"),
        "the retry sends the new headers"
    );
    assert_eq!(got[1].header("authorization"), None);
    assert_eq!(h.delivery("evt_1", "sub_h").await.status, "delivered");
}

#[tokio::test]
async fn a_subscription_s_timeout_ms_cuts_a_slow_answer_short() {
    let h = Harness::new().await;
    h.receiver
        .set_default("/slow", Reply::ok().delay(Duration::from_secs(5)));
    h.subscribe("sub_slow", "/slow", None).await;
    h.execute("UPDATE subscriptions SET timeout_ms = 200 WHERE id = 'sub_slow'")
        .await;
    h.ingest("evt_1", "order.created", json!({})).await;
    // The worker's own timeout is 10 s.
    assert_eq!(h.worker(&[]).run_once().await.unwrap(), 1);
    let delivery = h.delivery("evt_1", "sub_slow").await;
    assert_eq!(delivery.status, "retrying");
    let attempts = h.attempts_of(delivery.id).await;
    assert_eq!(attempts[0].error_code.as_deref(), Some("timeout"));
    assert_eq!(
        attempts[0].error.as_deref(),
        Some("no complete answer within 200 ms")
    );
}

#[tokio::test]
async fn a_subscription_s_retry_limits_replace_the_global_ones() {
    let h = Harness::new().await;
    h.receiver.set_default("/down", Reply::status(500));
    h.receiver
        .set_default("/busy", Reply::status(503).retry_after("3600"));
    h.subscribe("sub_down", "/down", None).await;
    h.subscribe("sub_busy", "/busy", None).await;
    h.execute("UPDATE subscriptions SET max_attempts = 2 WHERE id = 'sub_down'")
        .await;
    h.execute("UPDATE subscriptions SET max_delay_secs = 30 WHERE id = 'sub_busy'")
        .await;
    h.ingest("evt_1", "order.created", json!({})).await;
    let worker = h.worker(&[]);
    let before = Utc::now();
    assert_eq!(worker.run_once().await.unwrap(), 2);

    let busy = h.delivery("evt_1", "sub_busy").await;
    assert_eq!(busy.status, "retrying");
    assert!(
        busy.next_attempt_at <= Utc::now() + chrono::Duration::seconds(31)
            && busy.next_attempt_at >= before + chrono::Duration::seconds(29),
        "Retry-After: 3600 is capped at the subscription's 30 s: {}",
        busy.next_attempt_at
    );

    h.make_due().await;
    worker.run_once().await.unwrap();
    let down = h.delivery("evt_1", "sub_down").await;
    assert_eq!(
        down.status, "failed",
        "given up after its own 2 attempts (global: 20)"
    );
    assert_eq!(down.attempts, 2);
}

#[tokio::test]
async fn a_paused_subscription_gets_no_attempt_until_resumed_then_every_held_delivery_goes() {
    let h = Harness::new().await;
    h.subscribe_unlimited("sub_p", "/p").await;
    h.subscribe_unlimited("sub_q", "/q").await;
    set_enabled(&h, "sub_p", false).await;
    for i in 1..=3 {
        h.ingest(&format!("evt_{i}"), "order.created", json!({"n": i}))
            .await;
    }
    let worker = h.worker(&[]);
    let mut claimed = 0;
    for _ in 0..10 {
        claimed += worker.run_once().await.unwrap();
    }
    assert_eq!(claimed, 3, "only sub_q's");
    assert_eq!(h.receiver.requests("/q").len(), 3);
    assert!(h.receiver.requests("/p").is_empty());
    for i in 1..=3 {
        let held = h.delivery(&format!("evt_{i}"), "sub_p").await;
        assert_eq!(held.status, "pending");
        assert_eq!(held.attempts, 0);
    }
    let circuit = h.subscription("sub_p").await;
    assert_eq!(circuit.circuit_state, "closed");

    set_enabled(&h, "sub_p", true).await;
    let mut released = 0;
    for _ in 0..10 {
        released += worker.run_once().await.unwrap();
    }
    assert_eq!(released, 3);
    let got = h.receiver.requests("/p");
    assert_eq!(got.len(), 3);
    for i in 1..=3 {
        let d = h.delivery(&format!("evt_{i}"), "sub_p").await;
        assert_eq!(d.status, "delivered");
        assert_eq!(d.attempts, 1, "no attempt was spent while paused");
    }
}
