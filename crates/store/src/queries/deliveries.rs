//! The delivery queue: claiming due deliveries under a lease, recording outcomes fenced on the
//! lease holder, and handing claimed work back on shutdown.

use chrono::{DateTime, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{Array, BigInt, Int4, Interval, Jsonb, Nullable, Text, Timestamptz};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use dispatch_domain::DeliveryStatus;

use crate::StoreError;

/// A delivery claimed by a worker, with everything needed to send it.
#[derive(Debug, Clone, PartialEq, QueryableByName)]
pub struct ClaimedDelivery {
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    #[diesel(sql_type = Text)]
    pub event_id: String,
    #[diesel(sql_type = Text)]
    pub subscription_id: String,
    /// Attempts made before this one.
    #[diesel(sql_type = Int4)]
    pub attempts: i32,
    #[diesel(sql_type = Text)]
    pub event_type: String,
    #[diesel(sql_type = Text)]
    pub source: String,
    #[diesel(sql_type = Jsonb)]
    pub data: serde_json::Value,
    #[diesel(sql_type = Timestamptz)]
    pub received_at: DateTime<Utc>,
    #[diesel(sql_type = Text)]
    pub url: String,
    /// The subscription's secret, sealed (`v1:<key id>:…`); the worker opens it with its
    /// keyring.
    #[diesel(sql_type = Nullable<Text>)]
    pub sealed_secret: Option<String>,
    /// A plaintext secret stored before secrets were sealed (only when `sealed_secret` is null
    /// and `dispatch-api secrets reseal` has not run yet).
    #[diesel(sql_type = Nullable<Text>)]
    pub legacy_secret: Option<String>,
    /// The secret being rotated out, sealed, while its overlap window lasts (else null): it
    /// signs too.
    #[diesel(sql_type = Nullable<Text>)]
    pub previous_sealed_secret: Option<String>,
    #[diesel(sql_type = Timestamptz)]
    pub leased_until: DateTime<Utc>,
    /// The destination's rate limit.
    #[diesel(sql_type = diesel::sql_types::Double)]
    pub rate_limit_per_sec: f64,
    #[diesel(sql_type = Int4)]
    pub rate_limit_burst: i32,
    /// Until when another worker saw the destination's circuit open (already past, or none).
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub circuit_open_until: Option<DateTime<Utc>>,
    /// The W3C `traceparent` the event was ingested under: the parent of the delivery's spans.
    #[diesel(sql_type = Nullable<Text>)]
    pub traceparent: Option<String>,
}

fn interval(d: std::time::Duration) -> diesel::pg::data_types::PgInterval {
    diesel::pg::data_types::PgInterval::from_microseconds(
        i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
    )
}

/// Claims up to `limit` due deliveries for `worker`, marking them `processing` with a lease of
/// `lease`. Due means: pending or retrying with `next_attempt_at` reached, or processing with an
/// expired lease (its worker died) — unless the destination's circuit is open, which every
/// worker's claim respects. Retries take at most half of every batch (at least one), so a
/// storm of retries cannot starve new events; expired leases come last. Each candidate set is materialised
/// with its own LIMIT, so the statement never locks more rows than it returns.
#[tracing::instrument(name = "db.claim", skip_all, fields(otel.kind = "client", db.system.name = "postgresql"))]
pub async fn claim(
    conn: &mut AsyncPgConnection,
    worker: &str,
    limit: i64,
    lease: std::time::Duration,
) -> Result<Vec<ClaimedDelivery>, StoreError> {
    if limit <= 0 {
        return Ok(Vec::new());
    }
    let rows = crate::prepared::prepared(
        "WITH retry AS MATERIALIZED (
             SELECT id FROM deliveries
              WHERE status = 'retrying' AND next_attempt_at <= now()
                AND NOT EXISTS (SELECT 1 FROM subscriptions s
                                 WHERE s.id = deliveries.subscription_id
                                   AND s.circuit_open_until > now())
              ORDER BY next_attempt_at, id
              LIMIT greatest($2 / 2, 1)
              FOR UPDATE SKIP LOCKED
         ), fresh AS MATERIALIZED (
             SELECT id FROM deliveries
              WHERE status = 'pending' AND next_attempt_at <= now()
                AND NOT EXISTS (SELECT 1 FROM subscriptions s
                                 WHERE s.id = deliveries.subscription_id
                                   AND s.circuit_open_until > now())
              ORDER BY next_attempt_at, id
              LIMIT $2 - (SELECT count(*) FROM retry)
              FOR UPDATE SKIP LOCKED
         ), expired AS MATERIALIZED (
             SELECT id FROM deliveries
              WHERE status = 'processing' AND leased_until < now()
                AND NOT EXISTS (SELECT 1 FROM subscriptions s
                                 WHERE s.id = deliveries.subscription_id
                                   AND s.circuit_open_until > now())
              ORDER BY leased_until
              LIMIT $2 - (SELECT count(*) FROM retry) - (SELECT count(*) FROM fresh)
              FOR UPDATE SKIP LOCKED
         ), due AS (
             SELECT id FROM retry UNION ALL SELECT id FROM fresh UNION ALL SELECT id FROM expired
         )
         UPDATE deliveries d
            SET status = 'processing', leased_by = $1, leased_until = now() + $3,
                updated_at = now()
           FROM events e, subscriptions s
          -- `= ANY (ARRAY(...))`, not a join with `due`: the planner cannot estimate the
          -- computed LIMITs and would hash-join a sequential scan of every delivery.
          WHERE d.id = ANY (ARRAY(SELECT id FROM due))
            AND e.id = d.event_id AND s.id = d.subscription_id
         RETURNING d.id, d.event_id, d.subscription_id, d.attempts, e.event_type, e.source,
                   e.data, e.received_at, s.url, s.sealed_secret, s.secret AS legacy_secret,
                   CASE WHEN s.previous_secret_expires_at > now()
                        THEN s.previous_sealed_secret END AS previous_sealed_secret,
                   d.leased_until,
                   s.rate_limit_per_sec, s.rate_limit_burst, s.circuit_open_until,
                   e.traceparent",
    )
    .bind::<Text, _>(worker)
    .bind::<BigInt, _>(limit)
    .bind::<Interval, _>(interval(lease))
    .load(conn)
    .await?;
    Ok(rows)
}

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
        "UPDATE deliveries
            SET status = CASE WHEN attempts = 0 THEN 'pending' ELSE 'retrying' END,
                leased_by = NULL, leased_until = NULL, next_attempt_at = now(), updated_at = now()
          WHERE id = ANY($2) AND status = 'processing' AND leased_by = $1",
    )
    .bind::<Text, _>(worker)
    .bind::<Array<BigInt>, _>(ids)
    .execute(conn)
    .await?)
}

#[derive(QueryableByName)]
struct NextDue {
    #[diesel(sql_type = Nullable<Timestamptz>)]
    at: Option<DateTime<Utc>>,
}

/// When the next waiting delivery (or lease) falls due, so an idle worker can sleep until then.
/// Deliveries of a destination whose circuit is open count from when it half-opens, since no
/// claim takes them before.
pub async fn next_due_at(
    conn: &mut AsyncPgConnection,
) -> Result<Option<DateTime<Utc>>, StoreError> {
    let row: NextDue = crate::prepared::prepared(
        "SELECT least(
             -- One scan per status, each along its own partial index.
             (SELECT min(d.next_attempt_at) FROM deliveries d
               WHERE d.status = 'pending'
                 AND NOT EXISTS (SELECT 1 FROM subscriptions s
                                  WHERE s.id = d.subscription_id
                                    AND s.circuit_open_until > now())),
             (SELECT min(d.next_attempt_at) FROM deliveries d
               WHERE d.status = 'retrying'
                 AND NOT EXISTS (SELECT 1 FROM subscriptions s
                                  WHERE s.id = d.subscription_id
                                    AND s.circuit_open_until > now())),
             -- Deliveries held by an open circuit fall due when it half-opens.
             (SELECT min(circuit_open_until) FROM subscriptions WHERE circuit_open_until > now()),
             (SELECT min(leased_until) FROM deliveries WHERE status = 'processing')
         ) AS at",
    )
    .get_result(conn)
    .await?;
    Ok(row.at)
}

/// The backlog: deliveries due now and how long the oldest has waited.
#[derive(Debug, Clone, PartialEq, QueryableByName)]
pub struct Backlog {
    #[diesel(sql_type = BigInt)]
    pub due: i64,
    #[diesel(sql_type = diesel::sql_types::Double)]
    pub oldest_due_age_secs: f64,
}

/// Counts due deliveries (pending or retrying with `next_attempt_at` reached) and the age of the
/// oldest, from the due index.
pub async fn backlog(conn: &mut AsyncPgConnection) -> Result<Backlog, StoreError> {
    Ok(crate::prepared::prepared(
        "SELECT count(*) AS due,
                coalesce(extract(epoch FROM now() - min(next_attempt_at)), 0)::float8
                    AS oldest_due_age_secs
           FROM deliveries
          WHERE status IN ('pending', 'retrying') AND next_attempt_at <= now()",
    )
    .get_result(conn)
    .await?)
}
