//! Claims: the queue mirrors every transition, allowances, budgets, parking, expired leases, retries.

use super::*;

#[tokio::test]
async fn the_queue_holds_exactly_the_unfinished_deliveries_through_every_transition() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let mut conn = connection(&pool).await.unwrap();
    subscribe(&mut conn, &["s_a", "s_b"]).await;
    pending(&mut conn, "a", "s_a", 10).await;
    pending(&mut conn, "b", "s_b", 4).await;
    assert_eq!(
        count(&mut conn, "SELECT count(*) AS n FROM delivery_queue").await,
        14
    );
    assert_eq!(disagreements(&mut conn).await, 0);

    // Claimed: the row stays, due when the lease ends.
    let claimed = claim(&mut conn, "w", 6, LEASE).await.unwrap();
    assert_eq!(claimed.len(), 6);
    assert_eq!(disagreements(&mut conn).await, 0);

    // Delivered leaves the queue; a retry and a deferral stay, due at their new time.
    let mut outcomes = vec![
        outcome(&claimed[0], DeliveryStatus::Delivered, true),
        outcome(&claimed[1], DeliveryStatus::Retrying, true),
        outcome(&claimed[2], DeliveryStatus::Pending, false),
        outcome(&claimed[3], DeliveryStatus::Failed, true),
    ];
    outcomes[3].next_attempt_at = None;
    deliveries::record_outcomes(&mut conn, "w", &outcomes)
        .await
        .unwrap();
    assert_eq!(
        count(&mut conn, "SELECT count(*) AS n FROM delivery_queue").await,
        12
    );
    assert_eq!(disagreements(&mut conn).await, 0);

    // Released at shutdown: due at once again.
    let released = deliveries::release(&mut conn, "w", &[claimed[4].id, claimed[5].id])
        .await
        .unwrap();
    assert_eq!(released, 2);
    assert_eq!(disagreements(&mut conn).await, 0);

    // A replay puts the failed one back; deleting a subscription cancels its queued ones.
    let replayed = dispatch_store::queries::ops::replay(
        &mut conn,
        &dispatch_domain::TenantId::default_tenant(),
        &dispatch_store::queries::ops::ReplaySelector::Subscription(
            claimed[3].subscription_id.clone(),
        ),
    )
    .await
    .unwrap();
    assert_eq!(replayed, 1);
    assert_eq!(disagreements(&mut conn).await, 0);
    let cancelled = dispatch_store::queries::subscriptions::delete(
        &mut conn,
        &dispatch_domain::TenantId::default_tenant(),
        "s_b",
    )
    .await
    .unwrap();
    assert_eq!(cancelled, Some(4));
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM delivery_queue WHERE subscription_id = 's_b'"
        )
        .await,
        0
    );
    assert_eq!(disagreements(&mut conn).await, 0);
}

#[tokio::test]
async fn a_claim_takes_no_more_of_a_destination_than_its_allowance_and_leaves_the_rest_untouched() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let mut conn = connection(&pool).await.unwrap();
    subscribe(&mut conn, &["s_busy", "s_full", "s_new"]).await;
    pending(&mut conn, "busy", "s_busy", 30).await;
    pending(&mut conn, "full", "s_full", 30).await;
    pending(&mut conn, "new", "s_new", 30).await;
    let before = count(
        &mut conn,
        "SELECT count(*) AS n FROM deliveries WHERE updated_at < now()",
    )
    .await;

    let allowances = Allowances {
        known: vec![allowance("s_busy", 3, true), allowance("s_full", 0, true)],
        otherwise: 5,
        unproven_budget: 64,
    };
    let claimed = claim_within(&mut conn, "w", 64, LEASE, &allowances)
        .await
        .unwrap();
    let of = |sub: &str| claimed.iter().filter(|c| c.subscription_id == sub).count();
    assert_eq!(
        (of("s_busy"), of("s_full"), of("s_new")),
        (3, 0, 5),
        "{claimed:?}"
    );
    // Nothing else was written: the 82 others are exactly as they were.
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM deliveries WHERE status = 'pending' AND attempts = 0
                AND leased_by IS NULL AND next_attempt_at < now() - interval '59 seconds'"
        )
        .await,
        82
    );
    assert_eq!(before, 90);

    // Without per-destination limits, one destination may take the whole claim.
    let rest = claim(&mut conn, "w", 64, LEASE).await.unwrap();
    assert_eq!(rest.len(), 64);
}

fn allowance(sub: &str, room: i32, proven: bool) -> Allowance {
    Allowance {
        subscription_id: sub.to_owned(),
        room,
        proven,
    }
}

#[tokio::test]
async fn destinations_not_proven_take_at_most_their_budget_and_proven_ones_the_rest() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let mut conn = connection(&pool).await.unwrap();
    subscribe(&mut conn, &["s_new1", "s_new2", "s_unproven", "s_proven"]).await;
    for sub in ["s_new1", "s_new2", "s_unproven", "s_proven"] {
        pending(&mut conn, sub, sub, 10).await;
    }
    let allowances = Allowances {
        known: vec![
            allowance("s_unproven", 5, false),
            allowance("s_proven", 5, true),
        ],
        otherwise: 5,
        unproven_budget: 4,
    };
    let claimed = claim_within(&mut conn, "w", 64, LEASE, &allowances)
        .await
        .unwrap();
    let proven = claimed
        .iter()
        .filter(|c| c.subscription_id == "s_proven")
        .count();
    assert_eq!(
        (claimed.len() - proven, proven),
        (4, 5),
        "the budget holds across new and known destinations that are not proven: {claimed:?}"
    );
}

#[tokio::test]
async fn parking_puts_off_a_stalled_destinations_due_deliveries_so_others_reach_the_window() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let mut conn = connection(&pool).await.unwrap();
    subscribe(&mut conn, &["s_stalled", "s_ok"]).await;
    pending(&mut conn, "stalled", "s_stalled", 100).await;
    pending(&mut conn, "ok", "s_ok", 100).await;
    let allowances = Allowances {
        known: vec![allowance("s_stalled", 0, false)],
        otherwise: 10,
        unproven_budget: 64,
    };
    // Its 100 deliveries are due first and fill the candidate window: nothing to claim.
    let claimed = claim_within(&mut conn, "w", 10, LEASE, &allowances)
        .await
        .unwrap();
    assert!(claimed.is_empty(), "{claimed:?}");
    let untouched = "SELECT count(*) AS n FROM deliveries
                      WHERE status = 'pending' AND next_attempt_at < now()";
    assert_eq!(
        count(&mut conn, untouched).await,
        200,
        "and nothing was written"
    );

    let parked = deliveries::park(&mut conn, &["s_stalled"], Duration::from_secs(30), 1_000)
        .await
        .unwrap();
    assert_eq!(parked, 100);
    let put_off = "SELECT count(*) AS n FROM deliveries
                    WHERE subscription_id = 's_stalled' AND status = 'pending' AND attempts = 0
                      AND next_attempt_at > now() + interval '29 seconds'";
    assert_eq!(count(&mut conn, put_off).await, 100, "no attempt spent");
    assert_eq!(disagreements(&mut conn).await, 0);
    let claimed = claim_within(&mut conn, "w", 10, LEASE, &allowances)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 10);
    assert!(claimed.iter().all(|c| c.subscription_id == "s_ok"));
}

#[tokio::test]
async fn a_dead_workers_expired_leases_are_claimed_before_an_older_backlog() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let mut conn = connection(&pool).await.unwrap();
    subscribe(&mut conn, &["s"]).await;
    // A backlog due for ten minutes, and two deliveries a worker claimed and died holding,
    // whose leases ended a second ago: due later than the whole backlog.
    pending(&mut conn, "old", "s", 300).await;
    raw(
        &mut conn,
        "UPDATE deliveries SET next_attempt_at = now() - interval '10 minutes'",
    )
    .await;
    pending(&mut conn, "held", "s", 2).await;
    raw(
        &mut conn,
        "UPDATE deliveries SET status = 'processing', leased_by = 'dead',
                leased_until = now() - interval '1 second'
          WHERE event_id LIKE 'held%'",
    )
    .await;
    assert_eq!(disagreements(&mut conn).await, 0);

    let claimed = claim(&mut conn, "w", 10, LEASE).await.unwrap();
    assert_eq!(claimed.len(), 10);
    let reclaimed: Vec<&str> = claimed
        .iter()
        .filter(|c| c.event_id.starts_with("held"))
        .map(|c| c.event_id.as_str())
        .collect();
    assert_eq!(
        reclaimed.len(),
        2,
        "the dead worker's deliveries go first: {claimed:?}"
    );
    assert_eq!(disagreements(&mut conn).await, 0);
}

#[tokio::test]
async fn retries_take_at_most_half_of_a_claim_when_first_attempts_wait() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let mut conn = connection(&pool).await.unwrap();
    subscribe(&mut conn, &["s"]).await;
    pending(&mut conn, "r", "s", 40).await;
    // The retries are older than every first attempt, so due order alone would take only them.
    raw(
        &mut conn,
        "UPDATE deliveries SET status = 'retrying', attempts = 1,
                next_attempt_at = now() - interval '1 hour'",
    )
    .await;
    pending(&mut conn, "f", "s", 40).await;

    let claimed = claim(&mut conn, "w", 20, LEASE).await.unwrap();
    let retries = claimed.iter().filter(|c| c.attempts > 0).count();
    assert_eq!((claimed.len(), retries), (20, 10), "{claimed:?}");

    // With no first attempt waiting, retries still take at most half (at least one).
    raw(
        &mut conn,
        "DELETE FROM deliveries WHERE attempts = 0 AND status <> 'processing'",
    )
    .await;
    let claimed = claim(&mut conn, "w", 1, LEASE).await.unwrap();
    assert_eq!(claimed.len(), 1, "at least one");
}

#[tokio::test]
async fn a_tenants_backlog_does_not_hide_another_tenants_first_attempts() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let mut conn = connection(&pool).await.unwrap();
    raw(
        &mut conn,
        "INSERT INTO tenants (id, name) VALUES ('big', 'b'), ('small', 's')",
    )
    .await;
    subscribe(&mut conn, &["big/s", "small/s"]).await;
    raw(
        &mut conn,
        "UPDATE subscriptions SET tenant_id = split_part(id, '/', 1)",
    )
    .await;
    // The big tenant's backlog fell due long before the small tenant's events.
    pending(&mut conn, "big/e", "big/s", 200).await;
    raw(
        &mut conn,
        "UPDATE deliveries SET next_attempt_at = now() - interval '1 hour'
          WHERE subscription_id = 'big/s'",
    )
    .await;
    pending(&mut conn, "small/e", "small/s", 3).await;

    let claimed = claim(&mut conn, "w", 6, LEASE).await.unwrap();
    let small = claimed
        .iter()
        .filter(|c| c.subscription_id == "small/s")
        .count();
    assert_eq!(
        small, 3,
        "dealt round-robin: every small event in a batch of six"
    );
    assert_eq!(claimed.len(), 6);
    assert_eq!(disagreements(&mut conn).await, 0);

    // With the small tenant served, the big one gets whole batches again, oldest first.
    let next = claim(&mut conn, "w", 6, LEASE).await.unwrap();
    assert!(next.iter().all(|c| c.subscription_id == "big/s"));
    assert_eq!(next.len(), 6);
}
