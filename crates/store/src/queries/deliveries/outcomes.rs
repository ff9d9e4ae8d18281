//! Finishing claims: writing many attempts' outcomes in one statement fenced on the lease, and
//! handing claimed deliveries that were never started back to the queue (graceful shutdown).

use chrono::{DateTime, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{Array, BigInt, Int4, Nullable, Text, Timestamptz};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use dispatch_domain::DeliveryStatus;
use dispatch_domain::operational::{self, Operational};

use crate::StoreError;
use crate::queries::operational::{Emission, emit};

/// How one claim ended (an attempt, or a deferral), to be written by [`record_outcomes`].
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub delivery_id: i64,
    /// Whether a request was made. `false` is a deferral (rate limit, open circuit, the
    /// destination's in-flight cap): the delivery waits until `next_attempt_at` without spending
    /// an attempt, and no attempt row is written.
    pub attempted: bool,
    /// The lease this attempt was made under (`ClaimedDelivery::leased_until`): with the worker's
    /// id it fences the write, so an outcome from an older claim — even by the same worker — is
    /// never applied to a newer one.
    pub leased_until: DateTime<Utc>,
    /// `delivered`, `retrying` or `failed`.
    pub status: DeliveryStatus,
    /// When to try again (for `retrying`).
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub status_code: Option<i32>,
    pub latency_ms: i32,
    pub error_code: Option<String>,
    pub error: Option<String>,
    pub response_body: Option<String>,
}

#[derive(QueryableByName)]
struct Recorded {
    #[diesel(sql_type = BigInt)]
    delivery_id: i64,
    #[diesel(sql_type = Text)]
    subscription_id: String,
    #[diesel(sql_type = Text)]
    event_id: String,
    #[diesel(sql_type = Int4)]
    attempts: i32,
    /// The event's type, read only for a delivery that failed for good.
    #[diesel(sql_type = Nullable<Text>)]
    failed_type: Option<String>,
}

/// The `dispatch.delivery.exhausted` events of the deliveries that `rows` finished as failed,
/// but none for a delivery of an operational (or test) event: those never cause another one.
fn exhausted(rows: &[Recorded], outcomes: &[Outcome]) -> Vec<Emission> {
    rows.iter()
        .filter_map(|row| {
            let event_type = row.failed_type.as_deref()?;
            if operational::is_reserved(event_type) {
                return None;
            }
            let outcome = outcomes.iter().find(|o| o.delivery_id == row.delivery_id)?;
            let error = outcome.error.as_deref().unwrap_or("no error recorded");
            Some(
                Emission::new(
                    Operational::DeliveryExhausted,
                    &row.subscription_id,
                    format!(
                        "the delivery failed for good after {} attempt(s): {error}",
                        row.attempts
                    ),
                )
                .with("delivery_id", row.delivery_id)
                .with("event_id", row.event_id.clone())
                .with("event_type", event_type)
                .with("attempts", row.attempts)
                .with("error_code", outcome.error_code.clone())
                .with("status_code", outcome.status_code),
            )
        })
        .collect()
}

/// Writes the outcomes of many attempts in one statement: each delivery's next state and one
/// attempt row. Fenced on the lease: a delivery no longer `processing` under this very lease
/// (`worker` and `leased_until`; its lease expired and it was claimed again, or it was cancelled)
/// is left alone and its attempt is not recorded. Returns the ids of the deliveries updated
/// (attempts and deferrals).
///
/// The same statement keeps each subscription's health: a successful attempt ends its failing
/// spell (`failing_since`), a batch of only failed attempts starts one if none is running. A
/// subscription row someone else holds locked (being changed) is skipped rather than waited for
/// — the queue rows are locked here, and a pause locks the subscription, then the queue rows —
/// and its next outcome catches up. When some delivery fails for good, the statement and the
/// `dispatch.delivery.exhausted` events it causes ([`emit`]) share a transaction:
/// either both are written or neither.
#[tracing::instrument(name = "db.record_outcomes", skip_all, fields(otel.kind = "client", db.system.name = "postgresql", outcomes = outcomes.len()))]
pub async fn record_outcomes(
    conn: &mut AsyncPgConnection,
    worker: &str,
    outcomes: &[Outcome],
) -> Result<Vec<i64>, StoreError> {
    if outcomes.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<i64> = outcomes.iter().map(|o| o.delivery_id).collect();
    let leases: Vec<DateTime<Utc>> = outcomes.iter().map(|o| o.leased_until).collect();
    let attempted: Vec<bool> = outcomes.iter().map(|o| o.attempted).collect();
    let statuses: Vec<&str> = outcomes.iter().map(|o| o.status.as_str()).collect();
    let next: Vec<Option<DateTime<Utc>>> = outcomes.iter().map(|o| o.next_attempt_at).collect();
    let codes: Vec<Option<i32>> = outcomes.iter().map(|o| o.status_code).collect();
    let latencies: Vec<i32> = outcomes.iter().map(|o| o.latency_ms).collect();
    let error_codes: Vec<Option<&str>> = outcomes.iter().map(|o| o.error_code.as_deref()).collect();
    let errors: Vec<Option<&str>> = outcomes.iter().map(|o| o.error.as_deref()).collect();
    let bodies: Vec<Option<&str>> = outcomes
        .iter()
        .map(|o| o.response_body.as_deref())
        .collect();
    let statement = crate::prepared::prepared(
        "WITH o AS (
             SELECT * FROM unnest($2::bigint[], $3::text[], $4::timestamptz[], $5::int4[],
                                  $6::int4[], $7::text[], $8::text[], $9::text[],
                                  $10::timestamptz[], $11::bool[])
                 AS o(id, status, next_at, status_code, latency_ms, error_code, error, body,
                      lease, attempted)
         ), queued AS MATERIALIZED (
             -- The queue rows first, in id order, as a claim locks them: a claim of the same
             -- rows (their lease just expired) then waits for this or is skipped, and never
             -- deadlocks with the queue's trigger below.
             SELECT q.delivery_id FROM delivery_queue q
              WHERE q.delivery_id = ANY ($2::bigint[])
              ORDER BY q.delivery_id
              FOR UPDATE
         ), upd AS (
             UPDATE deliveries d
                SET status = o.status,
                    attempts = d.attempts + CASE WHEN o.attempted THEN 1 ELSE 0 END,
                    next_attempt_at = coalesce(o.next_at, d.next_attempt_at),
                    leased_by = NULL,
                    leased_until = NULL,
                    last_error = CASE WHEN o.attempted THEN o.error ELSE d.last_error END,
                    updated_at = now()
               FROM o
              WHERE d.id = o.id AND d.status = 'processing' AND d.leased_by = $1
                AND d.leased_until = o.lease
                AND d.id IN (SELECT delivery_id FROM queued)
             RETURNING d.id, d.event_id, d.subscription_id, d.attempts, d.status
         ), recorded AS (
         INSERT INTO attempts (delivery_id, event_id, subscription_id, attempt, status_code,
                               latency_ms, error_code, error, response_body)
         SELECT upd.id, upd.event_id, upd.subscription_id, upd.attempts, o.status_code,
                o.latency_ms, o.error_code, o.error, o.body
           FROM upd JOIN o ON o.id = upd.id
          WHERE o.attempted
         RETURNING delivery_id
         ), health AS (
             -- Per subscription attempted: whether any attempt of this batch succeeded.
             SELECT upd.subscription_id, bool_or(o.status = 'delivered') AS ok
               FROM upd JOIN o ON o.id = upd.id
              WHERE o.attempted
              GROUP BY upd.subscription_id
         ), tracked AS (
             -- Only rows whose spell starts or ends are written (usually none).
             UPDATE subscriptions s
                SET failing_since = CASE WHEN h.ok THEN NULL ELSE now() END,
                    failing_warned = 0
               FROM health h
              WHERE s.id = h.subscription_id
                AND s.id IN (SELECT s2.id FROM subscriptions s2
                               JOIN health h2 ON h2.subscription_id = s2.id
                              WHERE CASE WHEN h2.ok THEN s2.failing_since IS NOT NULL
                                         ELSE s2.failing_since IS NULL END
                              FOR NO KEY UPDATE OF s2 SKIP LOCKED)
             RETURNING s.id
         )
         SELECT upd.id AS delivery_id, upd.subscription_id, upd.event_id, upd.attempts,
                CASE WHEN upd.status = 'failed'
                     THEN (SELECT e.event_type FROM events e WHERE e.id = upd.event_id)
                END AS failed_type
           FROM upd",
    )
    .bind::<Text, _>(worker)
    .bind::<Array<BigInt>, _>(ids)
    .bind::<Array<Text>, _>(statuses)
    .bind::<Array<Nullable<Timestamptz>>, _>(next)
    .bind::<Array<Nullable<Int4>>, _>(codes)
    .bind::<Array<Int4>, _>(latencies)
    .bind::<Array<Nullable<Text>>, _>(error_codes)
    .bind::<Array<Nullable<Text>>, _>(errors)
    .bind::<Array<Nullable<Text>>, _>(bodies)
    .bind::<Array<Timestamptz>, _>(leases)
    .bind::<Array<diesel::sql_types::Bool>, _>(attempted);
    if !outcomes.iter().any(|o| o.status == DeliveryStatus::Failed) {
        let rows: Vec<Recorded> = statement.load(conn).await?;
        return Ok(rows.into_iter().map(|r| r.delivery_id).collect());
    }
    conn.transaction::<_, StoreError, _>(async move |conn| {
        let rows: Vec<Recorded> = statement.load(conn).await?;
        emit(conn, &exhausted(&rows, outcomes)).await?;
        Ok(rows.into_iter().map(|r| r.delivery_id).collect())
    })
    .await
}

/// Hands claimed deliveries that were never started back to the queue (graceful shutdown):
/// `pending` again if never attempted, else `retrying`, due at once. Fenced on the lease holder.
#[tracing::instrument(name = "db.release", skip_all, fields(otel.kind = "client", db.system.name = "postgresql", deliveries = ids.len()))]
pub async fn release(
    conn: &mut AsyncPgConnection,
    worker: &str,
    ids: &[i64],
) -> Result<usize, StoreError> {
    if ids.is_empty() {
        return Ok(0);
    }
    Ok(crate::prepared::prepared(
        "WITH queued AS MATERIALIZED (
             SELECT q.delivery_id FROM delivery_queue q
              WHERE q.delivery_id = ANY ($2::bigint[])
              ORDER BY q.delivery_id
              FOR UPDATE
         )
         UPDATE deliveries
            SET status = CASE WHEN attempts = 0 THEN 'pending' ELSE 'retrying' END,
                leased_by = NULL, leased_until = NULL, next_attempt_at = now(), updated_at = now()
          WHERE id IN (SELECT delivery_id FROM queued) AND status = 'processing'
            AND leased_by = $1",
    )
    .bind::<Text, _>(worker)
    .bind::<Array<BigInt>, _>(ids)
    .execute(conn)
    .await?)
}
