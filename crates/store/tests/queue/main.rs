//! The hot queue (`delivery_queue`) against a real PostgreSQL: it holds exactly the unfinished
//! deliveries whatever writes them, a claim takes no more of a destination than its allowance
//! and never writes back what it cannot send, and a claim's cost depends on the batch, not on
//! the history or on dead rows once the queue is vacuumed.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Bool, Text};
use diesel_async::RunQueryDsl;
use dispatch_domain::DeliveryStatus;
use dispatch_store::AsyncPgConnection;
use dispatch_store::pool::connection;
use dispatch_store::queries::deliveries::{
    self, Allowance, Allowances, CLAIM_SQL, ClaimedDelivery, Outcome, claim, claim_within,
};
use dispatch_store::queries::health;
use dispatch_test_support::TestDb;

mod buffers;
mod claims;

const LEASE: Duration = Duration::from_secs(60);

async fn raw(conn: &mut AsyncPgConnection, sql: &str) {
    diesel::sql_query(sql).execute(conn).await.unwrap();
}

/// Subscriptions `ids`, each matching every event type.
async fn subscribe(conn: &mut AsyncPgConnection, ids: &[&str]) {
    for id in ids {
        raw(
            conn,
            &format!(
                "INSERT INTO subscriptions (id, url, event_types)
                 VALUES ('{id}', 'https://example.com/{id}', '{{*}}')"
            ),
        )
        .await;
    }
}

/// `n` events `{prefix}{i}` with one pending delivery each to `sub`, in one statement (as
/// ingestion writes them: the queue's trigger sees a multi-row insert).
async fn pending(conn: &mut AsyncPgConnection, prefix: &str, sub: &str, n: u32) {
    raw(
        conn,
        &format!(
            "WITH ev AS (
                 INSERT INTO events (id, event_type, source, data)
                 SELECT '{prefix}' || i, 'order.created', 'test', '{{}}'
                   FROM generate_series(1, {n}) i
                 RETURNING id
             )
             INSERT INTO deliveries (event_id, subscription_id, next_attempt_at)
             SELECT id, '{sub}', now() - interval '1 minute' FROM ev"
        ),
    )
    .await;
}

/// `n` finished deliveries of history (delivered, one attempt each), never queued.
async fn history(conn: &mut AsyncPgConnection, sub: &str, n: u32) {
    raw(
        conn,
        &format!(
            "WITH ev AS (
                 INSERT INTO events (id, event_type, source, data, received_at)
                 SELECT 'old_' || i, 'order.created', 'test', '{{}}',
                        now() - interval '1 day'
                   FROM generate_series(1, {n}) i
                 RETURNING id
             ), d AS (
                 INSERT INTO deliveries (event_id, subscription_id, status, attempts,
                                         next_attempt_at)
                 SELECT id, '{sub}', 'delivered', 1, now() - interval '1 day' FROM ev
                 RETURNING id, event_id, subscription_id
             )
             INSERT INTO attempts (delivery_id, event_id, subscription_id, attempt, status_code,
                                   latency_ms)
             SELECT id, event_id, subscription_id, 1, 200, 3 FROM d"
        ),
    )
    .await;
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

/// Rows where the queue and `deliveries` disagree: an unfinished delivery without exactly one
/// queue row due when it is (its next attempt, or the end of its lease), or a queue row of a
/// finished delivery.
async fn disagreements(conn: &mut AsyncPgConnection) -> i64 {
    count(
        conn,
        "SELECT count(*) AS n
           FROM deliveries d FULL JOIN delivery_queue q ON q.delivery_id = d.id
          WHERE (d.status IN ('pending', 'processing', 'retrying')) IS DISTINCT FROM
                (q.delivery_id IS NOT NULL)
             OR q.due_at IS DISTINCT FROM
                CASE WHEN d.status = 'processing' THEN d.leased_until
                     WHEN d.status IN ('pending', 'retrying') THEN d.next_attempt_at END
             OR q.retry IS DISTINCT FROM
                CASE WHEN d.status IN ('pending', 'processing', 'retrying')
                     THEN d.attempts > 0 END
             OR q.leased IS DISTINCT FROM
                CASE WHEN d.status IN ('pending', 'processing', 'retrying')
                     THEN d.status = 'processing' END",
    )
    .await
}

fn outcome(c: &ClaimedDelivery, status: DeliveryStatus, attempted: bool) -> Outcome {
    Outcome {
        delivery_id: c.id,
        attempted,
        leased_until: c.leased_until,
        status,
        next_attempt_at: (status != DeliveryStatus::Delivered)
            .then(|| chrono::Utc::now() + chrono::Duration::seconds(30)),
        status_code: attempted.then_some(500),
        latency_ms: 1,
        error_code: None,
        error: None,
        response_body: None,
    }
}
