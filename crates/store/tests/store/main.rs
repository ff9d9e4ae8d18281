//! Integration tests of the store against a real PostgreSQL: every test gets a database of its
//! own (`TestDb`), cloned from a migrated template.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel::sql_types::Integer;
use diesel_async::RunQueryDsl;
use dispatch_domain::{DestinationUrl, EventId, EventType, Pattern, Source, SubscriptionId};
use dispatch_store::models::{DeliveryRow, EventRow, NewAttempt, NewEvent, NewSubscription};
use dispatch_store::pool::{build_pool, connection};
use dispatch_store::queries::events::IngestOutcome;
use dispatch_store::queries::{attempts, events, health, subscriptions};
use dispatch_store::schema::{deliveries, subscriptions as subscriptions_table};
use dispatch_store::{AsyncPgConnection, DatabaseSettings, Pool, StoreError, admin, migrations};
use dispatch_test_support::secrets::test_keyring;
use dispatch_test_support::{TEST_DB_PREFIX, TestDb, admin_url};
use serde_json::{Value, json};

mod attempt_log;
mod deletion;
mod fanout;
mod groups;
mod idempotency;
mod queue;
mod readiness;
mod subscription_rows;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn new_sub(id: &str, patterns: &[&str]) -> NewSubscription {
    NewSubscription {
        tenant: dispatch_domain::TenantId::default_tenant(),
        id: SubscriptionId::parse(id).unwrap(),
        url: DestinationUrl::parse(&format!("https://example.com/hooks/{id}")).unwrap(),
        event_types: patterns
            .iter()
            .map(|p| Pattern::parse(p).unwrap())
            .collect(),
        secret: Some(format!("secret-of-{id}")),
        rate_limit: dispatch_store::models::RateLimit::default(),
        settings: Default::default(),
        enabled: true,
    }
}

fn new_event(id: &str, event_type: &str, data: Value) -> NewEvent {
    NewEvent {
        tenant: dispatch_domain::TenantId::default_tenant(),
        id: EventId::parse(id).unwrap(),
        event_type: EventType::parse(event_type).unwrap(),
        source: Source::parse("billing-service").unwrap(),
        data,
        traceparent: None,
        ordering_key: None,
    }
}

async fn add_sub(conn: &mut AsyncPgConnection, id: &str, patterns: &[&str]) {
    subscriptions::insert(conn, &new_sub(id, patterns), &test_keyring())
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("subscription {id} should be new"));
}

async fn ingest(conn: &mut AsyncPgConnection, event: &NewEvent) -> IngestOutcome {
    events::ingest(conn, event).await.unwrap()
}

/// Ingests an event that must be new; returns the stored row and the delivery count reported.
async fn ingest_created(conn: &mut AsyncPgConnection, event: &NewEvent) -> (EventRow, i64) {
    match ingest(conn, event).await {
        IngestOutcome::Created { event, deliveries } => (event, deliveries),
        other => panic!("expected Created, got {other:?}"),
    }
}

async fn deliveries_of(conn: &mut AsyncPgConnection, event_id: &str) -> Vec<DeliveryRow> {
    events::deliveries_of(conn, &dispatch_domain::TenantId::default_tenant(), event_id)
        .await
        .unwrap()
}

fn subscription_ids(rows: &[DeliveryRow]) -> BTreeSet<String> {
    rows.iter().map(|d| d.subscription_id.clone()).collect()
}

fn set(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|s| (*s).to_owned()).collect()
}

async fn delivery_count(conn: &mut AsyncPgConnection) -> i64 {
    deliveries::table.count().get_result(conn).await.unwrap()
}

/// Forces a delivery into `status` behind the store's back (as the dispatcher would), with a
/// lease when the status is `processing` (the table requires one) and an old `updated_at`.
async fn force_status(conn: &mut AsyncPgConnection, event_id: &str, sub_id: &str, status: &str) {
    let leased = status == "processing";
    let old = DateTime::parse_from_rfc3339("2000-01-01T00:00:00Z")
        .unwrap()
        .with_timezone(&Utc);
    let changed = diesel::update(deliveries::table)
        .filter(deliveries::event_id.eq(event_id))
        .filter(deliveries::subscription_id.eq(sub_id))
        .set((
            deliveries::status.eq(status),
            deliveries::leased_by.eq(leased.then_some("worker-1")),
            deliveries::leased_until.eq(leased.then(|| Utc::now() + chrono::Duration::minutes(5))),
            deliveries::updated_at.eq(old),
        ))
        .execute(conn)
        .await
        .unwrap();
    assert_eq!(changed, 1, "no delivery of {event_id} to {sub_id}");
}

async fn delivery(conn: &mut AsyncPgConnection, event_id: &str, sub_id: &str) -> DeliveryRow {
    deliveries_of(conn, event_id)
        .await
        .into_iter()
        .find(|d| d.subscription_id == sub_id)
        .unwrap_or_else(|| panic!("no delivery of {event_id} to {sub_id}"))
}

async fn lease_of(
    conn: &mut AsyncPgConnection,
    event_id: &str,
    sub_id: &str,
) -> (Option<String>, Option<DateTime<Utc>>) {
    deliveries::table
        .filter(deliveries::event_id.eq(event_id))
        .filter(deliveries::subscription_id.eq(sub_id))
        .select((deliveries::leased_by, deliveries::leased_until))
        .first(conn)
        .await
        .unwrap()
}

async fn raw(conn: &mut AsyncPgConnection, sql: &str) {
    diesel::sql_query(sql).execute(conn).await.unwrap();
}

fn pool_with(url: &str, max_connections: u32, connect_timeout: Duration) -> Pool {
    build_pool(&DatabaseSettings {
        url: url.into(),
        max_connections,
        connect_timeout,
    })
}
