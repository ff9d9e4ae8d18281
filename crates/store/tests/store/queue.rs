//! The queue: lease fencing, published circuits that claims respect, worker heartbeats.

use super::*;

fn outcome_for(
    claimed: &dispatch_store::queries::deliveries::ClaimedDelivery,
) -> dispatch_store::queries::deliveries::Outcome {
    dispatch_store::queries::deliveries::Outcome {
        delivery_id: claimed.id,
        leased_until: claimed.leased_until,
        attempted: true,
        status: dispatch_domain::DeliveryStatus::Delivered,
        next_attempt_at: None,
        status_code: Some(200),
        latency_ms: 3,
        error_code: None,
        error: None,
        response_body: Some("ok".to_owned()),
    }
}

#[tokio::test]
async fn an_outcome_from_an_older_lease_of_the_same_worker_is_not_applied() {
    use dispatch_store::queries::deliveries::{claim, record_outcomes};
    let db = TestDb::new().await;
    let pool = db.pool();
    let mut conn = connection(&pool).await.unwrap();
    add_sub(&mut conn, "s_1", &["*"]).await;
    ingest_created(&mut conn, &new_event("e_1", "a.b", json!({}))).await;

    let first = claim(&mut conn, "w", 10, Duration::from_millis(200))
        .await
        .unwrap();
    assert_eq!(first.len(), 1);
    // The lease expires and the same worker claims the delivery again: a new lease.
    let deadline = Instant::now() + Duration::from_secs(10);
    let second = loop {
        let again = claim(&mut conn, "w", 10, Duration::from_secs(60))
            .await
            .unwrap();
        if !again.is_empty() {
            break again;
        }
        assert!(Instant::now() < deadline, "the first lease never expired");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_ne!(first[0].leased_until, second[0].leased_until);

    let stale = record_outcomes(&mut conn, "w", &[outcome_for(&first[0])])
        .await
        .unwrap();
    assert!(
        stale.is_empty(),
        "the outcome of the expired lease was applied"
    );
    assert_eq!(delivery(&mut conn, "e_1", "s_1").await.status, "processing");

    let current = record_outcomes(&mut conn, "w", &[outcome_for(&second[0])])
        .await
        .unwrap();
    assert_eq!(current, [second[0].id]);
    let row = delivery(&mut conn, "e_1", "s_1").await;
    assert_eq!((row.status.as_str(), row.attempts), ("delivered", 1));
    assert_eq!(attempts::of_event(&mut conn, "e_1").await.unwrap().len(), 1);
}

// ---------------------------------------------------------------------------------------------
// 9. Destination resilience: published circuits, rate limits, the worker registry
// ---------------------------------------------------------------------------------------------

#[derive(Debug, PartialEq, QueryableByName)]
struct Circuit {
    #[diesel(sql_type = diesel::sql_types::Text)]
    state: String,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Timestamptz>)]
    open_until: Option<DateTime<Utc>>,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Timestamptz>)]
    changed_at: Option<DateTime<Utc>>,
}

async fn circuit_of(conn: &mut AsyncPgConnection, id: &str) -> Circuit {
    let row = subscriptions::find_active(conn, &dispatch_domain::TenantId::default_tenant(), id)
        .await
        .unwrap()
        .unwrap();
    Circuit {
        state: row.circuit_state,
        open_until: row.circuit_open_until,
        changed_at: row.circuit_changed_at,
    }
}

async fn publish(
    conn: &mut AsyncPgConnection,
    updates: &[(&str, &'static str, Option<DateTime<Utc>>)],
) {
    let updates: Vec<subscriptions::CircuitUpdate> = updates
        .iter()
        .map(|(id, state, open_until)| subscriptions::CircuitUpdate {
            subscription_id: (*id).to_owned(),
            state,
            open_until: *open_until,
        })
        .collect();
    subscriptions::publish_circuits(conn, &updates)
        .await
        .unwrap();
}

/// Timestamps go through PostgreSQL at microsecond precision.
fn same_instant(a: Option<DateTime<Utc>>, b: DateTime<Utc>) -> bool {
    a.is_some_and(|a| (a - b).abs() < chrono::Duration::microseconds(1))
}

#[tokio::test]
async fn publishing_circuits_never_shortens_an_open_one_and_closing_clears_its_end() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let mut conn = connection(&pool).await.unwrap();
    add_sub(&mut conn, "s_a", &["*"]).await;
    add_sub(&mut conn, "s_b", &["*"]).await;
    let closed = Circuit {
        state: "closed".to_owned(),
        open_until: None,
        changed_at: None,
    };
    assert_eq!(circuit_of(&mut conn, "s_a").await, closed, "the default");

    let now = Utc::now();
    let (soon, later, latest) = (
        now + chrono::Duration::seconds(10),
        now + chrono::Duration::seconds(60),
        now + chrono::Duration::seconds(120),
    );
    publish(&mut conn, &[("s_a", "open", Some(later))]).await;
    let c = circuit_of(&mut conn, "s_a").await;
    assert_eq!(c.state, "open");
    assert!(same_instant(c.open_until, later), "{c:?}");
    assert!(c.changed_at.is_some());
    assert_eq!(
        circuit_of(&mut conn, "s_b").await,
        closed,
        "only s_a changed"
    );

    // Another worker's older news (it opened a little earlier) does not shorten it.
    publish(&mut conn, &[("s_a", "open", Some(soon))]).await;
    let c = circuit_of(&mut conn, "s_a").await;
    assert!(same_instant(c.open_until, later), "shortened: {c:?}");
    // Longer news extends it.
    publish(&mut conn, &[("s_a", "open", Some(latest))]).await;
    assert!(same_instant(
        circuit_of(&mut conn, "s_a").await.open_until,
        latest
    ));

    // A worker whose own breaker half-opened cannot clear a circuit that is still open.
    publish(&mut conn, &[("s_a", "half_open", None)]).await;
    let c = circuit_of(&mut conn, "s_a").await;
    assert_eq!(c.state, "open", "cleared while still open: {c:?}");
    assert!(same_instant(c.open_until, latest));
    publish(&mut conn, &[("s_a", "closed", None)]).await;
    assert_eq!(circuit_of(&mut conn, "s_a").await.state, "open");

    // Once the open time is over, half-open and closed are published and have no end.
    raw(
        &mut conn,
        "UPDATE subscriptions SET circuit_open_until = now() - interval '1 second' WHERE id = 's_a'",
    )
    .await;
    publish(&mut conn, &[("s_a", "half_open", Some(latest))]).await;
    let c = circuit_of(&mut conn, "s_a").await;
    assert_eq!((c.state.as_str(), c.open_until), ("half_open", None));
    // Opened afresh, the new end counts (nothing of the old one is left to keep).
    publish(&mut conn, &[("s_a", "open", Some(soon))]).await;
    assert!(same_instant(
        circuit_of(&mut conn, "s_a").await.open_until,
        soon
    ));
    raw(
        &mut conn,
        "UPDATE subscriptions SET circuit_open_until = now() - interval '1 second' WHERE id = 's_a'",
    )
    .await;
    publish(&mut conn, &[("s_a", "closed", None)]).await;
    let c = circuit_of(&mut conn, "s_a").await;
    assert_eq!((c.state.as_str(), c.open_until), ("closed", None));
    assert!(c.changed_at.is_some());

    // Several in one statement; unknown ids and nothing at all are no-ops.
    publish(
        &mut conn,
        &[
            ("s_a", "open", Some(later)),
            ("s_b", "open", Some(soon)),
            ("s_unknown", "open", Some(soon)),
        ],
    )
    .await;
    assert!(same_instant(
        circuit_of(&mut conn, "s_a").await.open_until,
        later
    ));
    assert!(same_instant(
        circuit_of(&mut conn, "s_b").await.open_until,
        soon
    ));
    publish(&mut conn, &[]).await;
}

#[tokio::test]
async fn claims_skip_every_delivery_of_a_destination_whose_circuit_is_open() {
    use dispatch_store::queries::deliveries::claim;

    let db = TestDb::new().await;
    let pool = db.pool();
    let mut conn = connection(&pool).await.unwrap();
    let mut limited = new_sub("s_open", &["*"]);
    limited.rate_limit = dispatch_store::models::RateLimit {
        per_second: 2.5,
        burst: 4,
    };
    subscriptions::insert(&mut conn, &limited, &test_keyring())
        .await
        .unwrap()
        .unwrap();
    add_sub(&mut conn, "s_ok", &["*"]).await;
    for id in ["e_pending", "e_retrying", "e_expired"] {
        ingest_created(&mut conn, &new_event(id, "a.b", json!({}))).await;
    }
    // Due in every way a delivery can be due.
    raw(
        &mut conn,
        "UPDATE deliveries SET status = 'retrying', attempts = 2 WHERE event_id = 'e_retrying'",
    )
    .await;
    raw(
        &mut conn,
        "UPDATE deliveries SET status = 'processing', leased_by = 'gone',
                leased_until = now() - interval '1 minute'
          WHERE event_id = 'e_expired'",
    )
    .await;
    let until = Utc::now() + chrono::Duration::minutes(5);
    publish(&mut conn, &[("s_open", "open", Some(until))]).await;
    // Its waiting deliveries were put off until the circuit half-opens, without an attempt;
    // the other destination's and the leased one were not touched.
    for (event, sub, put_off) in [
        ("e_pending", "s_open", true),
        ("e_retrying", "s_open", true),
        ("e_expired", "s_open", false),
        ("e_pending", "s_ok", false),
    ] {
        let d = delivery(&mut conn, event, sub).await;
        assert_eq!(
            same_instant(Some(d.next_attempt_at), until),
            put_off,
            "{d:?}"
        );
        assert!(d.attempts <= 2, "{d:?}");
    }

    let claimed = claim(&mut conn, "w", 100, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 3, "{claimed:?}");
    assert!(
        claimed.iter().all(|c| c.subscription_id == "s_ok"),
        "{claimed:?}"
    );
    assert!(claimed.iter().all(|c| c.circuit_open_until.is_none()));
    assert!(
        claimed
            .iter()
            .all(|c| (c.rate_limit_per_sec, c.rate_limit_burst) == (100.0, 10))
    );

    // Once its time is up, they are claimable again, with the destination's limits. (Time
    // passes: the circuit's end and the deliveries put off until it move into the past.)
    raw(
        &mut conn,
        "UPDATE subscriptions SET circuit_open_until = now() - interval '1 second'
          WHERE id = 's_open'",
    )
    .await;
    raw(
        &mut conn,
        "UPDATE deliveries SET next_attempt_at = now() - interval '1 second'
          WHERE subscription_id = 's_open' AND status <> 'processing'",
    )
    .await;
    let claimed = claim(&mut conn, "w", 100, Duration::from_secs(60))
        .await
        .unwrap();
    let mut events: Vec<&str> = claimed.iter().map(|c| c.event_id.as_str()).collect();
    events.sort_unstable();
    assert_eq!(events, ["e_expired", "e_pending", "e_retrying"]);
    for c in &claimed {
        assert_eq!(c.subscription_id, "s_open");
        assert_eq!((c.rate_limit_per_sec, c.rate_limit_burst), (2.5, 4));
        assert!(c.circuit_open_until.is_some_and(|u| u < Utc::now()));
    }
}

#[tokio::test]
async fn the_next_due_time_waits_for_an_open_circuit_to_end() {
    use dispatch_store::queries::deliveries::next_due_at;

    let db = TestDb::new().await;
    let pool = db.pool();
    let mut conn = connection(&pool).await.unwrap();
    add_sub(&mut conn, "s_open", &["*"]).await;
    ingest_created(&mut conn, &new_event("e_1", "a.b", json!({}))).await;
    let until = Utc::now() + chrono::Duration::minutes(5);
    publish(&mut conn, &[("s_open", "open", Some(until))]).await;

    let due = next_due_at(&mut conn).await.unwrap();
    assert!(
        due.is_some_and(|at| at >= until - chrono::Duration::milliseconds(1)),
        "the delivery cannot be claimed before {until}, yet it is due at {due:?}"
    );
}

async fn worker_rows(conn: &mut AsyncPgConnection) -> BTreeSet<String> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Text)]
        id: String,
    }
    let rows: Vec<Row> = diesel::sql_query("SELECT id FROM workers")
        .load(conn)
        .await
        .unwrap();
    rows.into_iter().map(|r| r.id).collect()
}

#[tokio::test]
async fn heartbeats_count_the_live_workers_and_a_worker_that_leaves_is_no_longer_counted() {
    use dispatch_store::queries::workers::{heartbeat, leave};

    let db = TestDb::new().await;
    let pool = db.pool();
    let mut conn = connection(&pool).await.unwrap();
    assert_eq!(heartbeat(&mut conn, "w_1", 20).await.unwrap(), 1, "alone");
    assert_eq!(heartbeat(&mut conn, "w_2", 20).await.unwrap(), 2);
    assert_eq!(
        heartbeat(&mut conn, "w_1", 20).await.unwrap(),
        2,
        "counted once"
    );
    assert_eq!(heartbeat(&mut conn, "w_3", 20).await.unwrap(), 3);

    // w_3 leaves; w_2 falls silent for longer than the window.
    leave(&mut conn, "w_3").await.unwrap();
    raw(
        &mut conn,
        "UPDATE workers SET seen_at = now() - interval '30 seconds' WHERE id = 'w_2'",
    )
    .await;
    assert_eq!(heartbeat(&mut conn, "w_1", 20).await.unwrap(), 1);
    assert_eq!(
        heartbeat(&mut conn, "w_1", 60).await.unwrap(),
        2,
        "within a longer window w_2 still counts"
    );
    assert_eq!(
        heartbeat(&mut conn, "w_2", 20).await.unwrap(),
        2,
        "w_2 is back"
    );

    // A worker gone for over an hour is removed on the way; leaving twice is harmless.
    raw(
        &mut conn,
        "INSERT INTO workers (id, seen_at) VALUES ('w_old', now() - interval '2 hours')",
    )
    .await;
    heartbeat(&mut conn, "w_1", 20).await.unwrap();
    assert_eq!(worker_rows(&mut conn).await, set(&["w_1", "w_2"]));
    leave(&mut conn, "w_2").await.unwrap();
    leave(&mut conn, "w_2").await.unwrap();
    assert_eq!(heartbeat(&mut conn, "w_1", 20).await.unwrap(), 1);
    assert_eq!(worker_rows(&mut conn).await, set(&["w_1"]));
}
