//! A deleted subscription's deliveries are cancelled: never sent, and an attempt already in
//! flight when it was deleted does not revive it.

use dispatch_store::queries::subscriptions;
use dispatch_test_support::receiver::Reply;
use serde_json::json;

use crate::helpers::{Harness, PATIENCE};

#[tokio::test]
async fn deliveries_of_a_deleted_subscription_are_never_sent() {
    let h = Harness::new().await;
    h.subscribe("sub_keep", "/keep", None).await;
    h.subscribe("sub_gone", "/gone", None).await;
    h.ingest("evt_1", "order.created", json!({})).await;
    let cancelled = subscriptions::delete(
        &mut *h.conn().await,
        &dispatch_domain::TenantId::default_tenant(),
        "sub_gone",
    )
    .await
    .unwrap();
    assert_eq!(cancelled, Some(1));

    let worker = h.worker(&[]);
    assert_eq!(worker.run_once().await.unwrap(), 1);
    h.make_due().await;
    assert_eq!(worker.run_once().await.unwrap(), 0);

    assert_eq!(h.receiver.requests("/keep").len(), 1);
    assert!(h.receiver.requests("/gone").is_empty());
    let gone = h.delivery("evt_1", "sub_gone").await;
    assert_eq!((gone.status.as_str(), gone.attempts), ("cancelled", 0));
    assert!(h.attempts_of(gone.id).await.is_empty());
    assert_eq!(h.delivery("evt_1", "sub_keep").await.status, "delivered");
}

#[tokio::test]
async fn a_retry_of_a_deleted_subscription_is_never_sent() {
    let h = Harness::new().await;
    h.receiver.script("/gone", [Reply::status(500)]);
    h.subscribe("sub_gone", "/gone", None).await;
    h.ingest("evt_1", "order.created", json!({})).await;
    let worker = h.worker(&[]);
    assert_eq!(worker.run_once().await.unwrap(), 1);
    assert_eq!(h.delivery("evt_1", "sub_gone").await.status, "retrying");

    subscriptions::delete(
        &mut *h.conn().await,
        &dispatch_domain::TenantId::default_tenant(),
        "sub_gone",
    )
    .await
    .unwrap();
    h.make_due().await;
    assert_eq!(worker.run_once().await.unwrap(), 0);
    assert_eq!(h.receiver.requests("/gone").len(), 1);
    let gone = h.delivery("evt_1", "sub_gone").await;
    assert_eq!((gone.status.as_str(), gone.attempts), ("cancelled", 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_in_flight_when_its_subscription_is_deleted_does_not_revive_it() {
    let h = Harness::new().await;
    h.receiver.set_default("/gone", Reply::ok().held());
    h.subscribe("sub_gone", "/gone", None).await;
    h.ingest("evt_1", "order.created", json!({})).await;
    let worker = h.worker(&[]);
    let step = tokio::spawn({
        let worker = worker.clone();
        async move { worker.run_once().await }
    });

    h.receiver.wait_for("/gone", 1, PATIENCE).await;
    let cancelled = subscriptions::delete(
        &mut *h.conn().await,
        &dispatch_domain::TenantId::default_tenant(),
        "sub_gone",
    )
    .await
    .unwrap();
    assert_eq!(cancelled, Some(1), "the processing delivery is cancelled");
    h.receiver.release(1);
    assert_eq!(step.await.unwrap().unwrap(), 1);

    let gone = h.delivery("evt_1", "sub_gone").await;
    assert_eq!((gone.status.as_str(), gone.attempts), ("cancelled", 0));
    assert!(h.attempts_of(gone.id).await.is_empty());
}
