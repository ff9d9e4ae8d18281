//! The benchmark's queries (`queries::bench`) against a real PostgreSQL: seeded subscriptions
//! match the way ingestion expects, a seeded backlog is due and claimable, the tally counts it.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use dispatch_domain::{EventId, EventType, Source};
use dispatch_store::models::NewEvent;
use dispatch_store::pool::connection;
use dispatch_store::queries::bench::{self, BacklogSeed, DeliveryTally, SubscriptionSeed};
use dispatch_store::queries::deliveries;
use dispatch_store::queries::events::{self, IngestOutcome};
use dispatch_test_support::TestDb;
use serde_json::json;

fn seed<'a>(pattern: &'a str, per_index: bool, first: i32, count: i32) -> SubscriptionSeed<'a> {
    SubscriptionSeed {
        id_prefix: "sub-",
        url_prefix: "http://127.0.0.1:9/h/",
        url_suffix: "/0/0",
        pattern,
        pattern_per_index: per_index,
        first,
        count,
        secret: "bench-secret",
        rate_limit_per_sec: 100_000.0,
        rate_limit_burst: 100_000,
    }
}

fn event(id: &str, event_type: &str) -> NewEvent {
    NewEvent {
        tenant: dispatch_domain::TenantId::default_tenant(),
        id: EventId::parse(id).unwrap(),
        event_type: EventType::parse(event_type).unwrap(),
        source: Source::parse("bench").unwrap(),
        data: json!({"seq": 1}),
        traceparent: None,
        ordering_key: None,
    }
}

#[tokio::test]
async fn seeded_subscriptions_are_matched_by_ingestion() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let mut conn = connection(&pool).await.unwrap();
    assert_eq!(
        bench::seed_subscriptions(&mut conn, &seed("bench.d", true, 0, 50))
            .await
            .unwrap(),
        50
    );
    assert_eq!(
        bench::seed_subscriptions(&mut conn, &seed("*", false, 50, 2))
            .await
            .unwrap(),
        2
    );
    // bench.d7 matches sub-7 (its own pattern) and the two `*` subscriptions.
    match events::ingest(&mut conn, &event("e1", "bench.d7"))
        .await
        .unwrap()
    {
        IngestOutcome::Created { deliveries, .. } => assert_eq!(deliveries, 3),
        other => panic!("unexpected {other:?}"),
    }
    let tally = bench::delivery_tally(&mut conn).await.unwrap();
    assert_eq!(
        tally,
        DeliveryTally {
            pending: 3,
            ..DeliveryTally::default()
        }
    );
}

#[tokio::test]
async fn a_seeded_backlog_is_due_spread_and_claimable() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let mut conn = connection(&pool).await.unwrap();
    bench::seed_subscriptions(&mut conn, &seed("bench.*", false, 0, 3))
        .await
        .unwrap();
    let ids: Vec<String> = (0..3).map(|i| format!("sub-{i}")).collect();
    let seeded = bench::seed_backlog(
        &mut conn,
        &BacklogSeed {
            id_prefix: "bk-",
            event_type: "bench.backlog",
            count: 300,
            sent_at_ns: "1764412345678901234",
            subscription_ids: &ids,
        },
    )
    .await
    .unwrap();
    assert_eq!(seeded, 300);
    assert_eq!(deliveries::backlog(&mut conn).await.unwrap().due, 300);
    let claimed = deliveries::claim(&mut conn, "w", 30, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 30);
    // The send time survives as text, digit for digit.
    let stored = events::find(
        &mut conn,
        &dispatch_domain::TenantId::default_tenant(),
        &claimed[0].event_id,
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(stored.data["sent_at_ns"], "1764412345678901234");
    let tally = bench::delivery_tally(&mut conn).await.unwrap();
    assert_eq!((tally.pending, tally.processing), (270, 30));
    assert_eq!(bench::delivered_count(&mut conn).await.unwrap(), 0);
    // Nothing to seed: nothing happens.
    let none = bench::seed_backlog(
        &mut conn,
        &BacklogSeed {
            subscription_ids: &[],
            ..BacklogSeed {
                id_prefix: "bk-",
                event_type: "bench.backlog",
                count: 5,
                sent_at_ns: "1",
                subscription_ids: &ids,
            }
        },
    )
    .await
    .unwrap();
    assert_eq!(none, 0);
}

#[tokio::test]
async fn the_ceiling_table_takes_inserts_and_goes_away() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let mut conn = connection(&pool).await.unwrap();
    bench::create_ceiling_table(&mut conn).await.unwrap();
    bench::ceiling_insert(&mut conn, "k1", r#"{"seq":1}"#)
        .await
        .unwrap();
    // The key is unique, the value must be JSON.
    assert!(
        bench::ceiling_insert(&mut conn, "k1", r#"{"seq":1}"#)
            .await
            .is_err()
    );
    assert!(
        bench::ceiling_insert(&mut conn, "k2", "not json")
            .await
            .is_err()
    );
    bench::drop_ceiling_table(&mut conn).await.unwrap();
    bench::drop_ceiling_table(&mut conn).await.unwrap();
    // The pool's other connection is a backend of this database; ours is left out.
    let _other = connection(&pool).await.unwrap();
    let pids = bench::backend_pids(&mut conn).await.unwrap();
    assert_eq!(pids.len(), 1, "{pids:?}");
    let facts = bench::server_facts(&mut conn).await.unwrap();
    assert!(!facts.version.is_empty());
    assert!(facts.max_connections > 0);
}
