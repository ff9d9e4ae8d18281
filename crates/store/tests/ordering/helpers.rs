//! What the ordering tests share: a per-key subscription, keyed ingestion, claims and outcomes
//! through the store's own functions.

use std::time::Duration;

use chrono::Utc;
use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Nullable, Text};
use diesel_async::RunQueryDsl;
use dispatch_domain::{DeliveryStatus, EventId, EventType, OrderingKey, Source};
use dispatch_store::AsyncPgConnection;
use dispatch_store::models::NewEvent;
use dispatch_store::queries::deliveries::{self, ClaimedDelivery, Outcome};
use dispatch_store::queries::events;

pub const LEASE: Duration = Duration::from_secs(60);

/// A subscription to every type with `ordering` and `on_exhausted` as given.
pub async fn subscribe(conn: &mut AsyncPgConnection, id: &str, ordering: &str, on_exhausted: &str) {
    diesel::sql_query(
        "INSERT INTO subscriptions (id, url, event_types, ordering, on_exhausted)
         VALUES ($1, 'https://example.com/', '{*}', $2, $3)",
    )
    .bind::<Text, _>(id)
    .bind::<Text, _>(ordering)
    .bind::<Text, _>(on_exhausted)
    .execute(conn)
    .await
    .unwrap();
}

pub fn event(id: &str, key: Option<&str>) -> NewEvent {
    NewEvent {
        tenant: dispatch_domain::TenantId::default_tenant(),
        id: EventId::parse(id).unwrap(),
        event_type: EventType::parse("order.updated").unwrap(),
        source: Source::parse("shop").unwrap(),
        data: serde_json::json!({"n": id}),
        traceparent: None,
        ordering_key: key.map(|k| OrderingKey::parse(k).unwrap()),
    }
}

pub async fn ingest(conn: &mut AsyncPgConnection, id: &str, key: Option<&str>) {
    events::ingest(conn, &event(id, key)).await.unwrap();
}

pub async fn claim(conn: &mut AsyncPgConnection, worker: &str) -> Vec<ClaimedDelivery> {
    deliveries::claim(conn, worker, 100, LEASE).await.unwrap()
}

pub fn event_ids(claimed: &[ClaimedDelivery]) -> Vec<&str> {
    let mut ids: Vec<&str> = claimed.iter().map(|c| c.event_id.as_str()).collect();
    ids.sort_unstable();
    ids
}

/// The outcome of an attempt at `c`: `status`, and for `retrying` due after `retry_in`.
pub fn outcome(c: &ClaimedDelivery, status: DeliveryStatus, retry_in: Duration) -> Outcome {
    let failed = status != DeliveryStatus::Delivered;
    Outcome {
        delivery_id: c.id,
        attempted: true,
        leased_until: c.leased_until,
        status,
        next_attempt_at: (status == DeliveryStatus::Retrying)
            .then(|| Utc::now() + chrono::Duration::from_std(retry_in).unwrap()),
        status_code: Some(if failed { 500 } else { 200 }),
        latency_ms: 1,
        error_code: failed.then(|| "http_status".to_owned()),
        error: failed.then(|| "HTTP 500".to_owned()),
        response_body: None,
    }
}

pub async fn record(conn: &mut AsyncPgConnection, worker: &str, outcomes: &[Outcome]) -> usize {
    deliveries::record_outcomes(conn, worker, outcomes)
        .await
        .unwrap()
        .len()
}

#[derive(QueryableByName, Debug, Clone, PartialEq)]
pub struct Row {
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    #[diesel(sql_type = Text)]
    pub event_id: String,
    #[diesel(sql_type = Nullable<Text>)]
    pub ordering_key: Option<String>,
    #[diesel(sql_type = Text)]
    pub status: String,
    /// In the queue and due at a real time (not waiting for its turn or held).
    #[diesel(sql_type = diesel::sql_types::Bool)]
    pub live: bool,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    pub queued: bool,
}

/// Every delivery of subscription `sub`, by id, with where it stands in the queue.
pub async fn rows(conn: &mut AsyncPgConnection, sub: &str) -> Vec<Row> {
    diesel::sql_query(
        "SELECT d.id, d.event_id, d.ordering_key, d.status,
                coalesce(q.due_at < 'infinity', false) AS live, q.delivery_id IS NOT NULL AS queued
           FROM deliveries d LEFT JOIN delivery_queue q ON q.delivery_id = d.id
          WHERE d.subscription_id = $1 ORDER BY d.id",
    )
    .bind::<Text, _>(sub)
    .load(conn)
    .await
    .unwrap()
}

/// The delivery id of event `event_id` to subscription `sub`.
pub async fn delivery_of(conn: &mut AsyncPgConnection, sub: &str, event_id: &str) -> i64 {
    rows(conn, sub)
        .await
        .into_iter()
        .find(|r| r.event_id == event_id)
        .unwrap()
        .id
}
