//! The ordering rules one at a time: one delivery of a key at a time, in ingest order; a head in
//! backoff keeps its place; `skip` and `block` on exhaustion; skipping; replays going back in
//! line; switching ordering off or a blocked subscription to `skip`.

use std::time::Duration;

use dispatch_domain::{DeliveryStatus, OnExhausted, Ordering};
use dispatch_store::pool::connection;
use dispatch_store::queries::ordering::{self, SkipRefusal, Skipped};
use dispatch_store::queries::requeue::{self, Retried};
use dispatch_store::queries::subscription_changes::{SubscriptionChange, UpdateOutcome, update};
use dispatch_store::queries::subscriptions;
use dispatch_test_support::TestDb;

use crate::helpers::*;

const NOW: Duration = Duration::ZERO;
const LATER: Duration = Duration::from_secs(3600);

#[tokio::test]
async fn a_key_goes_one_delivery_at_a_time_in_ingest_order_and_a_head_in_backoff_keeps_its_place() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let mut conn = connection(&pool).await.unwrap();
    subscribe(&mut conn, "s_ordered", "per_key", "skip").await;
    subscribe(&mut conn, "s_plain", "none", "skip").await;
    for (id, key) in [
        ("a1", Some("A")),
        ("b1", Some("B")),
        ("a2", Some("A")),
        ("n1", None),
        ("a3", Some("A")),
        ("b2", Some("B")),
    ] {
        ingest(&mut conn, id, key).await;
    }

    let first = claim(&mut conn, "w1").await;
    let ordered: Vec<_> = first
        .iter()
        .filter(|c| c.subscription_id == "s_ordered")
        .cloned()
        .collect();
    assert_eq!(
        event_ids(&ordered),
        ["a1", "b1", "n1"],
        "one per key (and every unkeyed event) of the per-key subscription"
    );
    assert_eq!(
        first.len() - ordered.len(),
        6,
        "a subscription without ordering takes every event at once"
    );
    assert!(
        claim(&mut conn, "w2").await.is_empty(),
        "nothing else is due"
    );

    let a1 = ordered.iter().find(|c| c.event_id == "a1").unwrap();
    let b1 = ordered.iter().find(|c| c.event_id == "b1").unwrap();
    let outcomes = [
        outcome(a1, DeliveryStatus::Delivered, NOW),
        outcome(b1, DeliveryStatus::Retrying, NOW),
    ];
    assert_eq!(record(&mut conn, "w1", &outcomes).await, 2);
    let second = claim(&mut conn, "w2").await;
    assert_eq!(
        event_ids(&second),
        ["a2", "b1"],
        "A moves on to a2; B's head, failed and due again, is tried again before b2"
    );
    let b1 = second.iter().find(|c| c.event_id == "b1").unwrap();
    let a2 = second.iter().find(|c| c.event_id == "a2").unwrap();
    record(
        &mut conn,
        "w2",
        &[
            outcome(b1, DeliveryStatus::Retrying, LATER),
            outcome(a2, DeliveryStatus::Delivered, NOW),
        ],
    )
    .await;
    assert_eq!(
        event_ids(&claim(&mut conn, "w1").await),
        ["a3"],
        "b2 never overtakes b1 while b1 waits for its retry"
    );
    let blocked = ordering::blocked_keys(
        &mut conn,
        &dispatch_domain::TenantId::default_tenant(),
        "s_ordered",
        None,
        10,
    )
    .await
    .unwrap();
    assert_eq!(blocked.len(), 1);
    assert_eq!(
        (
            blocked[0].ordering_key.as_str(),
            blocked[0].event_id.as_str(),
            blocked[0].status.as_str(),
            blocked[0].waiting
        ),
        ("B", "b1", "retrying", 1)
    );
    assert!(blocked[0].next_attempt_at.is_some());
}

/// Ingests `k1`, `k2`, `k3` of key K to `sub` and fails `k1` for good; returns the ids.
async fn exhaust_head(conn: &mut dispatch_store::AsyncPgConnection, sub: &str) -> [i64; 3] {
    for id in ["k1", "k2", "k3"] {
        ingest(conn, &format!("{sub}_{id}"), Some("K")).await;
    }
    let head = claim(conn, "w1").await;
    assert_eq!(head.len(), 1);
    record(
        conn,
        "w1",
        &[outcome(&head[0], DeliveryStatus::Failed, NOW)],
    )
    .await;
    let mut ids = [0; 3];
    for (i, id) in ["k1", "k2", "k3"].into_iter().enumerate() {
        ids[i] = delivery_of(conn, sub, &format!("{sub}_{id}")).await;
    }
    ids
}

#[tokio::test]
async fn an_exhausted_head_is_skipped_or_blocks_its_key_as_the_subscription_chose() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let mut conn = connection(&pool).await.unwrap();

    subscribe(&mut conn, "s_skip", "per_key", "skip").await;
    exhaust_head(&mut conn, "s_skip").await;
    assert_eq!(
        event_ids(&claim(&mut conn, "w1").await),
        ["s_skip_k2"],
        "skip: the next in line proceeds"
    );

    subscribe(&mut conn, "s_block", "per_key", "block").await;
    let [k1, k2, _] = exhaust_head(&mut conn, "s_block").await;
    assert!(
        claim(&mut conn, "w1").await.is_empty(),
        "block: the key waits"
    );
    let blocked = ordering::blocked_keys(
        &mut conn,
        &dispatch_domain::TenantId::default_tenant(),
        "s_block",
        None,
        10,
    )
    .await
    .unwrap();
    assert_eq!(
        (blocked.len(), blocked[0].delivery_id, blocked[0].waiting),
        (1, k1, 2)
    );
    assert_eq!(blocked[0].status, "failed");

    assert_eq!(
        ordering::skip(&mut conn, &dispatch_domain::TenantId::default_tenant(), k2)
            .await
            .unwrap(),
        Skipped::Refused(SkipRefusal::NotBlocking),
        "only the head can be skipped"
    );
    assert_eq!(
        ordering::skip(
            &mut conn,
            &dispatch_domain::TenantId::default_tenant(),
            987_654
        )
        .await
        .unwrap(),
        Skipped::NotFound
    );
    assert_eq!(
        ordering::skip(&mut conn, &dispatch_domain::TenantId::default_tenant(), k1)
            .await
            .unwrap(),
        Skipped::Skipped { next: Some(k2) }
    );
    assert_eq!(
        ordering::skip(&mut conn, &dispatch_domain::TenantId::default_tenant(), k1)
            .await
            .unwrap(),
        Skipped::Refused(SkipRefusal::NotBlocking),
        "skipped once: no longer the head"
    );
    let next = claim(&mut conn, "w1").await;
    assert_eq!(event_ids(&next), ["s_block_k2"]);
    assert!(
        ordering::blocked_keys(
            &mut conn,
            &dispatch_domain::TenantId::default_tenant(),
            "s_block",
            None,
            10
        )
        .await
        .unwrap()
        .is_empty()
    );
    let k1_row = rows(&mut conn, "s_block").await;
    assert_eq!(k1_row[0].status, "failed", "the skipped one stays failed");

    // A replay of the skipped one goes back in line: next after the head in flight, ahead of
    // k3, which was accepted after it.
    assert!(matches!(
        requeue::retry(
            &mut conn,
            &dispatch_domain::TenantId::default_tenant(),
            k1,
            false
        )
        .await
        .unwrap(),
        Retried::Requeued { .. }
    ));
    assert!(
        claim(&mut conn, "w1").await.is_empty(),
        "k2 is still in flight"
    );
    record(
        &mut conn,
        "w1",
        &[outcome(&next[0], DeliveryStatus::Delivered, NOW)],
    )
    .await;
    assert_eq!(event_ids(&claim(&mut conn, "w1").await), ["s_block_k1"]);
}

#[tokio::test]
async fn a_replayed_head_of_a_blocked_key_unblocks_it_and_is_sent_first() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let mut conn = connection(&pool).await.unwrap();
    subscribe(&mut conn, "s_b", "per_key", "block").await;
    let [k1, _, _] = exhaust_head(&mut conn, "s_b").await;
    assert!(matches!(
        requeue::retry(
            &mut conn,
            &dispatch_domain::TenantId::default_tenant(),
            k1,
            false
        )
        .await
        .unwrap(),
        Retried::Requeued { .. }
    ));
    let again = claim(&mut conn, "w1").await;
    assert_eq!(event_ids(&again), ["s_b_k1"]);
    record(
        &mut conn,
        "w1",
        &[outcome(&again[0], DeliveryStatus::Delivered, NOW)],
    )
    .await;
    assert_eq!(event_ids(&claim(&mut conn, "w1").await), ["s_b_k2"]);
}

async fn change(
    conn: &mut dispatch_store::AsyncPgConnection,
    id: &str,
    edit: impl FnOnce(&mut SubscriptionChange),
) {
    let row = subscriptions::find_active(conn, &dispatch_domain::TenantId::default_tenant(), id)
        .await
        .unwrap()
        .unwrap();
    let before = SubscriptionChange::of(&row);
    let mut after = before.clone();
    edit(&mut after);
    assert!(matches!(
        update(
            conn,
            &dispatch_domain::TenantId::default_tenant(),
            id,
            &before,
            &after
        )
        .await
        .unwrap(),
        UpdateOutcome::Updated { .. }
    ));
}

#[tokio::test]
async fn turning_ordering_off_or_blocking_to_skip_lets_waiting_deliveries_go() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let mut conn = connection(&pool).await.unwrap();

    subscribe(&mut conn, "s_b", "per_key", "block").await;
    exhaust_head(&mut conn, "s_b").await;
    change(&mut conn, "s_b", |c| {
        c.settings.on_exhausted = OnExhausted::Skip
    })
    .await;
    assert_eq!(
        event_ids(&claim(&mut conn, "w1").await),
        ["s_b_k2"],
        "block → skip: the blocked key moves on"
    );

    subscribe(&mut conn, "s_o", "per_key", "skip").await;
    for id in ["o1", "o2", "o3"] {
        ingest(&mut conn, id, Some("K")).await;
    }
    let rows_before = rows(&mut conn, "s_o").await;
    assert_eq!(
        rows_before.iter().filter(|r| r.live).count(),
        1,
        "{rows_before:?}"
    );
    change(&mut conn, "s_o", |c| c.settings.ordering = Ordering::None).await;
    assert_eq!(
        event_ids(&claim(&mut conn, "w1").await),
        ["o1", "o2", "o3"],
        "per_key → none: every waiting delivery is due"
    );
    ingest(&mut conn, "o4", Some("K")).await;
    ingest(&mut conn, "o5", Some("K")).await;
    assert_eq!(
        event_ids(&claim(&mut conn, "w1").await),
        ["o4", "o5"],
        "new events are not ordered either"
    );
}

#[tokio::test]
async fn retention_keeps_a_blocked_head_however_old_so_its_key_can_still_move_on() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let mut conn = connection(&pool).await.unwrap();
    subscribe(&mut conn, "s_b", "per_key", "block").await;
    let [k1, k2, _] = exhaust_head(&mut conn, "s_b").await;
    // A finished, unordered event of the same age goes; the blocked head's event stays.
    ingest(&mut conn, "done", None).await;
    let done = claim(&mut conn, "w1").await;
    record(
        &mut conn,
        "w1",
        &[outcome(&done[0], DeliveryStatus::Delivered, NOW)],
    )
    .await;
    diesel_async::RunQueryDsl::execute(
        diesel::sql_query("UPDATE events SET received_at = now() - interval '90 days'"),
        &mut conn,
    )
    .await
    .unwrap();
    let cutoff = chrono::Utc::now() - chrono::Duration::days(30);
    let report = dispatch_store::queries::ops::purge(&mut conn, cutoff, 100, |_| {})
        .await
        .unwrap();
    assert_eq!(report.purged.events, 1, "only the finished unordered event");
    assert_eq!(
        ordering::skip(&mut conn, &dispatch_domain::TenantId::default_tenant(), k1)
            .await
            .unwrap(),
        Skipped::Skipped { next: Some(k2) },
        "the head is still there to skip"
    );
}
