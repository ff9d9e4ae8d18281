//! Finishing claims: writing many attempts' outcomes in one statement fenced on the lease, and
//! handing claimed deliveries that were never started back to the queue (graceful shutdown).

use chrono::{DateTime, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{Array, BigInt, Int4, Nullable, Text, Timestamptz};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use dispatch_domain::DeliveryStatus;

use crate::StoreError;

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
}

/// Writes the outcomes of many attempts in one statement: each delivery's next state and one
/// attempt row. Fenced on the lease: a delivery no longer `processing` under this very lease
/// (`worker` and `leased_until`; its lease expired and it was claimed again, or it was cancelled)
/// is left alone and its attempt is not recorded. Returns the ids of the deliveries updated
/// (attempts and deferrals).
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
    let rows: Vec<Recorded> = crate::prepared::prepared(
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
             RETURNING d.id, d.event_id, d.subscription_id, d.attempts
         ), recorded AS (
         INSERT INTO attempts (delivery_id, event_id, subscription_id, attempt, status_code,
                               latency_ms, error_code, error, response_body)
         SELECT upd.id, upd.event_id, upd.subscription_id, upd.attempts, o.status_code,
                o.latency_ms, o.error_code, o.error, o.body
           FROM upd JOIN o ON o.id = upd.id
          WHERE o.attempted
         RETURNING delivery_id
         )
         SELECT id AS delivery_id FROM upd",
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
    .bind::<Array<diesel::sql_types::Bool>, _>(attempted)
    .load(conn)
    .await?;
    Ok(rows.into_iter().map(|r| r.delivery_id).collect())
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
