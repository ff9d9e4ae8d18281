//! The operators' queries (`queries::ops`: replay, purge, stats) against a real PostgreSQL, one
//! database per test. Rows are seeded with plain SQL so each test states exactly the history it
//! starts from (ages, statuses, attempts), independent of the ingestion and worker paths.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Double, Nullable, Text, Timestamptz};
use diesel_async::RunQueryDsl;
use dispatch_domain::DeliveryStatus;
use dispatch_store::queries::ops::{self, Purged, ReplaySelector};
use dispatch_store::{AsyncPgConnection, admin};
use dispatch_test_support::TestDb;

mod purge;
mod replay;
mod stats;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

const DAY: f64 = 86_400.0;

async fn connect(db: &TestDb) -> AsyncPgConnection {
    admin::connect(db.url()).await.unwrap()
}

async fn exec(conn: &mut AsyncPgConnection, sql: &str) {
    diesel::sql_query(sql).execute(conn).await.unwrap();
}

async fn sub(conn: &mut AsyncPgConnection, id: &str) {
    diesel::sql_query(
        "INSERT INTO subscriptions (id, url, event_types)
         VALUES ($1, 'https://example.com/' || $1, '{*}')",
    )
    .bind::<Text, _>(id)
    .execute(conn)
    .await
    .unwrap();
}

/// A subscription deleted `age_secs` ago.
async fn deleted_sub(conn: &mut AsyncPgConnection, id: &str, age_secs: f64) {
    sub(conn, id).await;
    diesel::sql_query(
        "UPDATE subscriptions SET deleted_at = now() - make_interval(secs => $2) WHERE id = $1",
    )
    .bind::<Text, _>(id)
    .bind::<Double, _>(age_secs)
    .execute(conn)
    .await
    .unwrap();
}

/// An event received `age_secs` ago.
async fn event(conn: &mut AsyncPgConnection, id: &str, age_secs: f64) {
    diesel::sql_query(
        "INSERT INTO events (id, event_type, source, data, received_at)
         VALUES ($1, 'order.created', 'tests', '{}', now() - make_interval(secs => $2))",
    )
    .bind::<Text, _>(id)
    .bind::<Double, _>(age_secs)
    .execute(conn)
    .await
    .unwrap();
}

#[derive(QueryableByName)]
struct Id {
    #[diesel(sql_type = BigInt)]
    id: i64,
}

/// A delivery in `status` (with a lease when `processing`, as the table requires), `attempts`
/// made, a `last_error` when it has attempts, and last changed `age_secs` ago.
async fn delivery(
    conn: &mut AsyncPgConnection,
    event_id: &str,
    sub_id: &str,
    status: &str,
    attempts: i32,
    age_secs: f64,
) -> i64 {
    let row: Id = diesel::sql_query(
        "INSERT INTO deliveries (event_id, subscription_id, status, attempts, leased_by,
                                 leased_until, last_error, next_attempt_at, updated_at)
         VALUES ($1, $2, $3, $4,
                 CASE WHEN $3 = 'processing' THEN 'worker-1' END,
                 CASE WHEN $3 = 'processing' THEN now() + interval '5 minutes' END,
                 CASE WHEN $4 > 0 THEN 'HTTP 500 from the destination' END,
                 now() - make_interval(secs => $5), now() - make_interval(secs => $5))
         RETURNING id",
    )
    .bind::<Text, _>(event_id)
    .bind::<Text, _>(sub_id)
    .bind::<Text, _>(status)
    .bind::<diesel::sql_types::Int4, _>(attempts)
    .bind::<Double, _>(age_secs)
    .get_result(conn)
    .await
    .unwrap();
    row.id
}

/// Attempt rows 1..=n of a delivery, `failed` ones answered 500, made `age_secs` ago.
async fn attempts(
    conn: &mut AsyncPgConnection,
    delivery_id: i64,
    n: i32,
    failed: bool,
    age_secs: f64,
) {
    diesel::sql_query(
        "INSERT INTO attempts (delivery_id, event_id, subscription_id, attempt, status_code,
                               latency_ms, error_code, created_at)
         SELECT d.id, d.event_id, d.subscription_id, g, CASE WHEN $3 THEN 500 ELSE 200 END, 12,
                CASE WHEN $3 THEN 'http_status' END, now() - make_interval(secs => $4)
           FROM deliveries d, generate_series(1, $2) g
          WHERE d.id = $1",
    )
    .bind::<BigInt, _>(delivery_id)
    .bind::<diesel::sql_types::Int4, _>(n)
    .bind::<diesel::sql_types::Bool, _>(failed)
    .bind::<Double, _>(age_secs)
    .execute(conn)
    .await
    .unwrap();
}

#[derive(Debug, Clone, PartialEq, QueryableByName)]
struct DeliveryState {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Text)]
    status: String,
    #[diesel(sql_type = diesel::sql_types::Int4)]
    attempts: i32,
    #[diesel(sql_type = Timestamptz)]
    next_attempt_at: DateTime<Utc>,
    #[diesel(sql_type = Nullable<Text>)]
    leased_by: Option<String>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    leased_until: Option<DateTime<Utc>>,
    #[diesel(sql_type = Nullable<Text>)]
    last_error: Option<String>,
    #[diesel(sql_type = Timestamptz)]
    updated_at: DateTime<Utc>,
}

async fn state(conn: &mut AsyncPgConnection, id: i64) -> DeliveryState {
    diesel::sql_query(
        "SELECT id, status, attempts, next_attempt_at, leased_by, leased_until, last_error,
                updated_at
           FROM deliveries WHERE id = $1",
    )
    .bind::<BigInt, _>(id)
    .get_result(conn)
    .await
    .unwrap()
}

async fn all_states(conn: &mut AsyncPgConnection) -> Vec<DeliveryState> {
    diesel::sql_query(
        "SELECT id, status, attempts, next_attempt_at, leased_by, leased_until, last_error,
                updated_at
           FROM deliveries ORDER BY id",
    )
    .load(conn)
    .await
    .unwrap()
}

#[derive(QueryableByName)]
struct Name {
    #[diesel(sql_type = Text)]
    name: String,
}

async fn names(conn: &mut AsyncPgConnection, sql: &str) -> BTreeSet<String> {
    diesel::sql_query(sql)
        .load::<Name>(conn)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

async fn count(conn: &mut AsyncPgConnection, sql: &str) -> i64 {
    diesel::sql_query(sql)
        .get_result::<Count>(conn)
        .await
        .unwrap()
        .n
}

/// Waits until some session of this database waits for a lock (the statement under test
/// reached the row another transaction holds).
async fn wait_for_a_lock_wait(conn: &mut AsyncPgConnection) {
    for _ in 0..200 {
        let waiting = count(
            conn,
            "SELECT count(*) AS n FROM pg_stat_activity
              WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .await;
        if waiting > 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("no session started waiting for a lock");
}

fn days_ago(days: i64) -> DateTime<Utc> {
    Utc::now() - chrono::Duration::days(days)
}
