//! Payload filters against a real PostgreSQL: fan-out evaluates a subscription's filter in the
//! ingestion statement, silently (a filter that raises an error for an event matches nothing
//! and the ingestion goes on, the other subscriptions' deliveries created), and
//! `queries::filters` tells syntax errors from non-predicates and evaluates as fan-out does.

#![allow(clippy::unwrap_used)]

use diesel_async::RunQueryDsl;
use dispatch_domain::{EventId, EventType, Source};
use dispatch_store::AsyncPgConnection;
use dispatch_store::models::NewEvent;
use dispatch_store::pool::connection;
use dispatch_store::queries::events::{self, BatchOutcome};
use dispatch_store::queries::filters::{self, FilterCheck};
use dispatch_test_support::TestDb;
use serde_json::json;

/// A subscription to every type, its filter written straight to the row (as the API would not
/// accept it, or as an older release might have).
async fn subscribe(conn: &mut AsyncPgConnection, id: &str, filter: Option<&str>) {
    diesel::sql_query(
        "INSERT INTO subscriptions (id, url, event_types, filter)
         VALUES ($1, 'https://example.com/', '{*}', $2)",
    )
    .bind::<diesel::sql_types::Text, _>(id)
    .bind::<diesel::sql_types::Nullable<diesel::sql_types::Text>, _>(filter)
    .execute(conn)
    .await
    .unwrap();
}

fn event(id: &str, data: serde_json::Value) -> NewEvent {
    NewEvent {
        tenant: dispatch_domain::TenantId::default_tenant(),
        id: EventId::parse(id).unwrap(),
        event_type: EventType::parse("order.created").unwrap(),
        source: Source::parse("shop").unwrap(),
        data,
        traceparent: None,
        ordering_key: None,
    }
}

async fn delivered_to(conn: &mut AsyncPgConnection, event_id: &str) -> Vec<String> {
    let mut subs: Vec<String> =
        events::deliveries_of(conn, &dispatch_domain::TenantId::default_tenant(), event_id)
            .await
            .unwrap()
            .into_iter()
            .map(|d| d.subscription_id)
            .collect();
    subs.sort();
    subs
}

#[tokio::test]
async fn a_filter_that_errors_for_an_event_matches_nothing_and_the_others_still_get_theirs() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let mut conn = connection(&pool).await.unwrap();
    // `$.data.vip` is a path, not a predicate: jsonb_path_match raises "single boolean result
    // is expected" for an event without a boolean `vip` unless it runs silently.
    let raising = diesel::sql_query(
        "SELECT jsonb_path_match('{\"data\": {}}'::jsonb, '$.data.vip'::jsonpath)",
    )
    .execute(&mut conn)
    .await;
    assert!(raising.is_err(), "evaluated loudly, this filter raises");
    subscribe(&mut conn, "sub_vip", Some("$.data.vip")).await;
    subscribe(
        &mut conn,
        "sub_strict",
        Some("strict $.data.total.size() > 0"),
    )
    .await;
    subscribe(&mut conn, "sub_plain", None).await;

    events::ingest(&mut conn, &event("evt_plain", json!({"n": 1})))
        .await
        .unwrap();
    assert_eq!(delivered_to(&mut conn, "evt_plain").await, ["sub_plain"]);
    events::ingest(&mut conn, &event("evt_vip", json!({"vip": true})))
        .await
        .unwrap();
    assert_eq!(
        delivered_to(&mut conn, "evt_vip").await,
        ["sub_plain", "sub_vip"]
    );
    let outcomes = events::ingest_batch(
        &mut conn,
        &[
            event("evt_b_text", json!({"vip": "yes"})),
            event("evt_b_vip", json!({"vip": true, "total": [1]})),
        ],
    )
    .await
    .unwrap();
    assert_eq!(
        outcomes,
        [
            BatchOutcome::Created {
                event: (),
                deliveries: 1
            },
            BatchOutcome::Created {
                event: (),
                deliveries: 3
            }
        ]
    );
    assert_eq!(delivered_to(&mut conn, "evt_b_text").await, ["sub_plain"]);

    // The filter-test evaluation agrees with fan-out.
    let data = json!({"vip": "yes"});
    let m = filters::matches(&mut conn, "$.data.vip", "order.created", "shop", &data);
    assert!(!m.await.unwrap());
    let data = json!({"vip": true});
    let m = filters::matches(&mut conn, "$.data.vip", "order.created", "shop", &data);
    assert!(m.await.unwrap());
}

#[tokio::test]
async fn check_tells_syntax_errors_from_paths_that_are_not_predicates() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let mut conn = connection(&pool).await.unwrap();
    assert_eq!(
        filters::check(
            &mut conn,
            "$.data.amount > 100 && $.data.currency == \"EUR\""
        )
        .await
        .unwrap(),
        FilterCheck::Predicate {
            canonical: "($.\"data\".\"amount\" > 100 && $.\"data\".\"currency\" == \"EUR\")".into()
        }
    );
    assert!(matches!(
        filters::check(&mut conn, "$.data.amount >").await.unwrap(),
        FilterCheck::Syntax(m) if m.contains("syntax error")
    ));
    for path in [
        "$.data.vip",
        "strict $.data.vip",
        "$.data",
        "$ ? (@.type == \"a\")",
    ] {
        assert!(
            matches!(
                filters::check(&mut conn, path).await.unwrap(),
                FilterCheck::NotPredicate(_)
            ),
            "{path}"
        );
    }
    // The connection is still usable after the refused statements.
    assert!(matches!(
        filters::check(&mut conn, "exists($.data.vip)")
            .await
            .unwrap(),
        FilterCheck::Predicate { .. }
    ));
}
