//! Operational events end to end in the worker, against real receivers: a delivery that fails
//! for good is reported to a subscription on `dispatch.*`, signed like any webhook; that
//! subscription's own failures feed nothing; and a destination that keeps failing is warned
//! about at 50 % and 90 % of the auto-disable threshold, then disabled with its deliveries held,
//! which enabling it again releases.

use std::time::Duration;

use dispatch_domain::{DestinationUrl, Pattern, SubscriptionId};
use dispatch_store::models::NewSubscription;
use dispatch_store::queries::subscription_changes::{
    SubscriptionChange, UpdateOutcome, held_count, update,
};
use dispatch_store::queries::subscriptions;
use dispatch_test_support::receiver::{Received, Reply};
use dispatch_test_support::secrets::test_keyring;
use serde_json::{Value, json};

use crate::helpers::{Harness, PATIENCE, Running, eventually};
use crate::signing::expected_dispatch_signature;

const OPS_SECRET: &str = "the operators' own secret";

/// A subscription with `patterns`, sending to the receiver's `path`, never rate limited.
async fn subscribe(h: &Harness, id: &str, path: &str, patterns: &[&str], secret: Option<&str>) {
    let new = NewSubscription {
        tenant: dispatch_domain::TenantId::default_tenant(),
        id: SubscriptionId::parse(id).unwrap(),
        url: DestinationUrl::parse(&h.receiver.url(path)).unwrap(),
        event_types: patterns
            .iter()
            .map(|p| Pattern::parse(p).unwrap())
            .collect(),
        secret: secret.map(str::to_owned),
        rate_limit: dispatch_store::models::RateLimit {
            per_second: 100_000.0,
            burst: 100_000,
        },
        settings: Default::default(),
        enabled: true,
    };
    subscriptions::insert(&mut *h.conn().await, &new, &test_keyring())
        .await
        .unwrap()
        .unwrap();
}

fn body(req: &Received) -> Value {
    serde_json::from_slice(&req.body).unwrap()
}

/// The operational events `path` received, as JSON, of types starting with `prefix`, by id
/// (operational ids are time-ordered).
fn received(h: &Harness, path: &str, prefix: &str) -> Vec<Value> {
    let mut events: Vec<Value> = h
        .receiver
        .requests(path)
        .iter()
        .map(body)
        .filter(|b| b["type"].as_str().unwrap_or("").starts_with(prefix))
        .collect();
    events.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    events
}

#[tokio::test]
async fn an_exhausted_delivery_reaches_dispatch_subscribers_signed_and_their_own_failures_feed_nothing()
 {
    let h = Harness::new().await;
    subscribe(&h, "sub_down", "/down", &["order.*"], None).await;
    subscribe(&h, "sub_all", "/all", &["*"], None).await;
    subscribe(&h, "sub_ops", "/ops", &["dispatch.*"], Some(OPS_SECRET)).await;
    h.receiver.set_default("/down", Reply::status(410));
    h.ingest("evt_1", "order.created", json!({"n": 1})).await;
    let worker = h.worker(&[]);
    worker.run_once().await.unwrap();
    assert_eq!(h.delivery("evt_1", "sub_down").await.status, "failed");
    worker.run_once().await.unwrap();

    let ops = h.receiver.requests("/ops");
    assert_eq!(ops.len(), 1, "one report: {ops:?}");
    let report = body(&ops[0]);
    assert_eq!(report["type"], "dispatch.delivery.exhausted");
    assert_eq!(report["source"], "dispatch");
    assert!(report["id"].as_str().unwrap().starts_with("dispatch_"));
    assert_eq!(report["data"]["subscription_id"], "sub_down");
    assert_eq!(report["data"]["event_id"], "evt_1");
    assert_eq!(report["data"]["status_code"], 410);
    assert!(report["data"]["reason"].as_str().unwrap().contains("410"));
    assert_eq!(
        ops[0].header("x-dispatch-signature").unwrap(),
        expected_dispatch_signature(OPS_SECRET, &ops[0].body),
        "signed with the operators' subscription's secret"
    );
    assert_eq!(ops[0].header("webhook-id"), report["id"].as_str());
    let all = h.receiver.requests("/all");
    assert_eq!(all.len(), 1, "`*` does not select operational events");
    assert_eq!(body(&all[0])["type"], "order.created");

    // The operators' endpoint fails for good too: its failure reports nothing more.
    h.receiver.set_default("/ops", Reply::status(410));
    h.ingest("evt_2", "order.created", json!({"n": 2})).await;
    for _ in 0..4 {
        worker.run_once().await.unwrap();
    }
    assert_eq!(
        h.receiver.requests("/ops").len(),
        2,
        "evt_2's report, failed"
    );
    assert_eq!(
        h.count_in("failed").await,
        3,
        "evt_1 and evt_2 to sub_down, and the second report"
    );
    let reports = h
        .all_deliveries()
        .await
        .into_iter()
        .filter(|d| d.event_id.starts_with("dispatch_"))
        .count();
    assert_eq!(reports, 2, "the failed report made no report of its own");
}

#[tokio::test]
async fn a_destination_failing_for_its_threshold_is_warned_about_then_disabled_and_enabling_it_releases_its_deliveries()
 {
    let h = Harness::new().await;
    subscribe(&h, "sub_flaky", "/flaky", &["order.*"], None).await;
    subscribe(&h, "sub_ops", "/ops", &["dispatch.subscription.*"], None).await;
    h.receiver.set_default("/flaky", Reply::status(503));
    h.ingest("evt_1", "order.created", json!({})).await;
    let worker = h.worker(&[
        ("DISPATCH_AUTO_DISABLE_AFTER_SECS", "2"),
        ("DISPATCH_RETRY_INITIAL_DELAY_MS", "100"),
        ("DISPATCH_RETRY_MAX_DELAY_SECS", "1"),
        ("DISPATCH_POLL_INTERVAL_MS", "50"),
        // The failures open the destination's circuit; it must not outlast the test.
        ("DISPATCH_BREAKER_OPEN_SECS", "1"),
    ]);
    let running = Running::start(&worker);
    eventually(
        "the subscription is disabled and its report delivered",
        PATIENCE,
        || async { !received(&h, "/ops", "dispatch.subscription.disabled").is_empty() },
    )
    .await;

    let reports = received(&h, "/ops", "dispatch.subscription.");
    let steps: Vec<(&str, &Value)> = reports
        .iter()
        .map(|r| (r["type"].as_str().unwrap(), &r["data"]["threshold_percent"]))
        .collect();
    assert_eq!(
        steps,
        [
            ("dispatch.subscription.failing", &json!(50)),
            ("dispatch.subscription.failing", &json!(90)),
            ("dispatch.subscription.disabled", &Value::Null),
        ],
        "warned twice, then disabled"
    );
    assert!(
        reports
            .iter()
            .all(|r| r["data"]["subscription_id"] == "sub_flaky")
    );
    let row = h.subscription("sub_flaky").await;
    assert!(!row.enabled);
    assert!(row.disabled_reason.unwrap().contains("auto-disabled"));

    // Disabled: new deliveries are held, never attempted.
    h.ingest("evt_2", "order.created", json!({})).await;
    h.notify().await;
    eventually("both deliveries are held", PATIENCE, || async {
        held_count(&mut *h.conn().await, "sub_flaky").await.unwrap() == 2
    })
    .await;
    let tried = h.receiver.requests("/flaky").len();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        h.receiver.requests("/flaky").len(),
        tried,
        "nothing is attempted"
    );

    // The destination is fixed and the subscription enabled again (as PATCH does it).
    h.receiver.set_default("/flaky", Reply::ok());
    let mut conn = h.conn().await;
    let row = subscriptions::find_active(
        &mut conn,
        &dispatch_domain::TenantId::default_tenant(),
        "sub_flaky",
    )
    .await
    .unwrap()
    .unwrap();
    let before = SubscriptionChange::of(&row);
    let after = SubscriptionChange {
        enabled: true,
        ..before.clone()
    };
    let outcome = update(
        &mut conn,
        &dispatch_domain::TenantId::default_tenant(),
        "sub_flaky",
        &before,
        &after,
    )
    .await
    .unwrap();
    assert!(
        matches!(outcome, UpdateOutcome::Updated { released: 2, .. }),
        "{outcome:?}"
    );
    drop(conn);
    h.notify().await;
    eventually("both deliveries are delivered", PATIENCE, || async {
        h.delivery("evt_1", "sub_flaky").await.status == "delivered"
            && h.delivery("evt_2", "sub_flaky").await.status == "delivered"
    })
    .await;
    running.stop().await;
    let row = h.subscription("sub_flaky").await;
    assert!(row.enabled && row.disabled_reason.is_none() && row.failing_since.is_none());
    assert_eq!(
        received(&h, "/ops", "dispatch.subscription.disabled").len(),
        1,
        "disabled once"
    );
}
