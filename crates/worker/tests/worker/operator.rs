//! What an operator's retry and resend (`POST /deliveries/{id}/retry`) make the worker do: a
//! failed delivery is attempted again from attempt 1, and a delivered one is sent again with
//! the same `webhook-id`, so a receiver can tell the resend from a new event.

use dispatch_store::queries::requeue::{self, Retried};
use dispatch_test_support::receiver::Reply;
use serde_json::json;

use crate::helpers::Harness;

#[tokio::test]
async fn a_resend_carries_the_original_webhook_id_and_a_retry_starts_the_schedule_again() {
    let h = Harness::new().await;
    h.subscribe("sub_ok", "/ok", None).await;
    h.subscribe("sub_down", "/down", None).await;
    h.receiver.set_default("/down", Reply::status(410));
    h.ingest("evt_1", "a.b", json!({"n": 1})).await;
    let worker = h.worker(&[]);
    worker.run_once().await.unwrap();
    let delivered = h.delivery("evt_1", "sub_ok").await;
    let failed = h.delivery("evt_1", "sub_down").await;
    assert_eq!(delivered.status, "delivered");
    assert_eq!(
        (failed.status.as_str(), failed.attempts),
        ("failed", 1),
        "410 is permanent"
    );

    // The resend: the same webhook-id as the first delivery, a new attempt row numbered 1.
    let resent = requeue::retry(
        &mut *h.conn().await,
        &dispatch_domain::TenantId::default_tenant(),
        delivered.id,
        true,
    )
    .await
    .unwrap();
    assert!(matches!(resent, Retried::Requeued { .. }), "{resent:?}");
    // The receiver recovered: the retry of the failed one goes through.
    h.receiver.set_default("/down", Reply::ok());
    let retried = requeue::retry(
        &mut *h.conn().await,
        &dispatch_domain::TenantId::default_tenant(),
        failed.id,
        false,
    )
    .await
    .unwrap();
    assert!(matches!(retried, Retried::Requeued { .. }), "{retried:?}");
    worker.run_once().await.unwrap();

    let sent = h.receiver.requests("/ok");
    assert_eq!(sent.len(), 2, "sent, then resent");
    let ids: Vec<Option<&str>> = sent.iter().map(|r| r.header("webhook-id")).collect();
    assert_eq!(ids, [Some("evt_1"), Some("evt_1")]);
    assert_eq!(sent[0].body, sent[1].body, "the same payload");
    assert_eq!(h.delivery("evt_1", "sub_ok").await.status, "delivered");
    let attempts = h.attempts_of(delivered.id).await;
    assert_eq!(
        attempts.iter().map(|a| a.attempt).collect::<Vec<_>>(),
        [1, 1]
    );

    let now = h.delivery("evt_1", "sub_down").await;
    assert_eq!((now.status.as_str(), now.attempts), ("delivered", 1));
    assert_eq!(h.receiver.requests("/down").len(), 2);
}
