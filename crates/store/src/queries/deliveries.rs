//! The delivery queue: claiming due deliveries under a lease (here), recording outcomes fenced
//! on the lease holder and handing claimed work back on shutdown (`outcomes.rs`), and when work
//! falls due (`due.rs`).

use chrono::{DateTime, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{Array, BigInt, Int4, Interval, Jsonb, Nullable, Text, Timestamptz};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::StoreError;

mod due;
mod outcomes;

pub use due::{Backlog, backlog, next_due_at};
pub use outcomes::{Outcome, record_outcomes, release};

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
    /// The subscription's own headers (a JSON object, name → value), sent with each attempt.
    #[diesel(sql_type = Jsonb)]
    pub headers: serde_json::Value,
    /// The subscription's retry and timeout settings; null: the worker's global setting.
    #[diesel(sql_type = Nullable<Int4>)]
    pub max_attempts: Option<i32>,
    #[diesel(sql_type = Nullable<Int4>)]
    pub max_delay_secs: Option<i32>,
    #[diesel(sql_type = Nullable<Int4>)]
    pub timeout_ms: Option<i32>,
    /// The event's ordering key, sent as `X-Dispatch-Ordering-Key`.
    #[diesel(sql_type = Nullable<Text>)]
    pub ordering_key: Option<String>,
}

fn interval(d: std::time::Duration) -> diesel::pg::data_types::PgInterval {
    diesel::pg::data_types::PgInterval::from_microseconds(
        i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
    )
}

/// What one claim may hand one destination the worker knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowance {
    pub subscription_id: String,
    /// How many more requests it can start now (≤ 0: none this time).
    pub room: i32,
    /// It answers, and fast: its deliveries do not count against
    /// [`Allowances::unproven_budget`].
    pub proven: bool,
}

/// How many deliveries one claim may hand each destination: what the worker can start now, so
/// nothing is claimed only to be written back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowances {
    /// Destinations with an allowance of their own.
    pub known: Vec<Allowance>,
    /// The room of every other destination (unproven: new to this worker).
    pub otherwise: i32,
    /// Most deliveries of destinations that are not proven in this claim, so some slots stay
    /// for destinations that answer however many others hang.
    pub unproven_budget: i32,
}

impl Allowances {
    /// No per-destination limit: any destination may take the whole claim.
    pub fn unlimited() -> Self {
        Self {
            known: Vec::new(),
            otherwise: i32::MAX,
            unproven_budget: i32::MAX,
        }
    }
}

/// Claims up to `limit` due deliveries for `worker`, marking them `processing` with a lease of
/// `lease`, with no per-destination limit (see [`claim_within`]).
pub async fn claim(
    conn: &mut AsyncPgConnection,
    worker: &str,
    limit: i64,
    lease: std::time::Duration,
) -> Result<Vec<ClaimedDelivery>, StoreError> {
    claim_within(conn, worker, limit, lease, &Allowances::unlimited()).await
}

/// The claim statement of [`claim_within`]: `$1` worker, `$2` limit, `$3` lease, `$4`
/// candidate window per kind, `$5`–`$7` the known destinations (subscription, room, proven),
/// `$8` the room of every other destination, `$9` the unproven budget. Public so tests and the
/// benchmark can `EXPLAIN` it.
pub const CLAIM_SQL: &str = "WITH cand AS MATERIALIZED (
         -- Expired leases (their worker died): the oldest work there is, taken first.
         (SELECT q.delivery_id, q.subscription_id, q.due_at, 0 AS kind
            FROM delivery_queue q
           WHERE q.leased AND q.due_at <= now()
           ORDER BY q.due_at, q.delivery_id
           LIMIT $4)
         UNION ALL
         (SELECT q.delivery_id, q.subscription_id, q.due_at, 1 AS kind
            FROM delivery_queue q
           WHERE q.retry AND NOT q.leased AND q.due_at <= now()
           ORDER BY q.due_at, q.delivery_id
           LIMIT $4)
         UNION ALL
         -- First tries: each tenant's earliest, along its own part of the index, so a tenant
         -- with a huge backlog never hides another's new events from the window.
         (SELECT f.delivery_id, f.subscription_id, f.due_at, 2 AS kind
            FROM tenants t CROSS JOIN LATERAL dispatch_first_due(t.id, $4) f)
     ), ranked AS (
         SELECT c.delivery_id, c.due_at, c.kind, dispatch_tenant_of(c.subscription_id) AS tenant,
                row_number() OVER (PARTITION BY c.subscription_id
                                   ORDER BY c.kind, c.due_at, c.delivery_id) AS nth,
                coalesce(a.room, $8) AS room,
                coalesce(a.proven, false) AS proven
           FROM cand c
           LEFT JOIN unnest($5::text[], $6::int4[], $7::bool[])
                  AS a(subscription_id, room, proven)
                  ON a.subscription_id = c.subscription_id
     ), fits AS (
         SELECT delivery_id, due_at, kind, proven,
                row_number() OVER (PARTITION BY kind ORDER BY due_at, delivery_id) AS kth,
                -- Its turn within its tenant: the batch is dealt round-robin across tenants
                -- (with one tenant, this is the due order itself).
                row_number() OVER (PARTITION BY tenant ORDER BY kind = 0 DESC, due_at,
                                                                delivery_id) AS tth
           FROM ranked
          WHERE nth <= room
     ), allowed AS (
         SELECT delivery_id, due_at, kind, proven, tth,
                row_number() OVER (PARTITION BY proven ORDER BY kind = 0 DESC, tth, due_at,
                                                                delivery_id) AS pth
           FROM fits
          WHERE NOT (kind = 1 AND kth > greatest($2 / 2, 1))
     ), chosen AS (
         SELECT delivery_id FROM allowed
          WHERE proven OR pth <= $9
          ORDER BY kind = 0 DESC, tth, due_at, delivery_id
          LIMIT $2
     ), locked AS MATERIALIZED (
         SELECT q.delivery_id FROM delivery_queue q
          WHERE q.delivery_id = ANY (ARRAY(SELECT delivery_id FROM chosen))
            -- Still due once locked (another claim may have just taken it). `IS TRUE` keeps
            -- the planner on the primary key: along the due index it would read every due row.
            AND (q.due_at <= now()) IS TRUE
            -- Checked on the chosen rows only: when a circuit opens, its waiting deliveries
            -- are put off until it half-opens (`publish_circuits`), so few ever get this far;
            -- a paused subscription's are held (due at 'infinity'), so none should.
            AND NOT EXISTS (SELECT 1 FROM subscriptions s
                             WHERE s.id = q.subscription_id
                               AND (s.circuit_open_until > now() OR NOT s.enabled))
          FOR UPDATE OF q SKIP LOCKED
     )
     UPDATE deliveries d
        SET status = 'processing', leased_by = $1, leased_until = now() + $3,
            updated_at = now()
       FROM events e, subscriptions s
      -- `= ANY (ARRAY(...))`, not a join: the planner cannot estimate the computed LIMITs
      -- and would hash-join a sequential scan of every delivery.
      WHERE d.id = ANY (ARRAY(SELECT delivery_id FROM locked))
        AND d.status IN ('pending', 'retrying', 'processing')
        AND e.id = d.event_id AND s.id = d.subscription_id
     RETURNING d.id, d.event_id, d.subscription_id, d.attempts, e.event_type, e.source,
               e.data, e.received_at, s.url, s.sealed_secret, s.secret AS legacy_secret,
               CASE WHEN s.previous_secret_expires_at > now()
                    THEN s.previous_sealed_secret END AS previous_sealed_secret,
               d.leased_until,
               s.rate_limit_per_sec, s.rate_limit_burst, s.circuit_open_until,
               e.traceparent, s.headers, s.max_attempts, s.max_delay_secs, s.timeout_ms,
               e.ordering_key";

/// Claims up to `limit` due deliveries for `worker`, marking them `processing` with a lease of
/// `lease`, and no more of one destination than its allowance. Due means a row of the hot
/// `delivery_queue` (unfinished deliveries only) whose `due_at` has come: a waiting delivery
/// whose time has come, or a processing one whose lease expired (its worker died) — unless the
/// destination's circuit is open, which every worker's claim respects.
///
/// The candidates are the earliest due rows of the queue, read without locks along the
/// `(due_at, delivery_id)` index of their kind, a window of twice the batch of each kind
/// (expired leases, retries and, per tenant, first tries); among them the claim takes expired
/// leases first (a dead worker's deliveries are the oldest work there is), then — dealt
/// round-robin across tenants, each tenant's in due order (ADR 014) — what the
/// allowances let through, with retries at most half of the batch (at least one) so a storm of
/// retries cannot starve new events, and
/// deliveries of destinations that are not proven at most `unproven_budget`, so slots stay for
/// destinations that answer. Only the chosen rows are locked (`SKIP LOCKED`, re-checked as
/// still due), so the statement never locks more than it returns; a destination at its
/// allowance keeps its rows in the queue untouched (see [`park`] for a destination that is
/// slow or silent, whose rows would otherwise hold the head of the queue). The queue's triggers move the claimed rows' `due_at` to the end of their lease.
#[tracing::instrument(name = "db.claim", skip_all, fields(otel.kind = "client", db.system.name = "postgresql"))]
pub async fn claim_within(
    conn: &mut AsyncPgConnection,
    worker: &str,
    limit: i64,
    lease: std::time::Duration,
    allowances: &Allowances,
) -> Result<Vec<ClaimedDelivery>, StoreError> {
    if limit <= 0 {
        return Ok(Vec::new());
    }
    // Candidates of each kind: enough that a few busy destinations at the head of the queue
    // do not hide the others, few enough that reading them costs about as much as the batch.
    let window = limit.saturating_mul(2).max(32);
    let subs: Vec<&str> = allowances
        .known
        .iter()
        .map(|a| a.subscription_id.as_str())
        .collect();
    let rooms: Vec<i32> = allowances.known.iter().map(|a| a.room).collect();
    let proven: Vec<bool> = allowances.known.iter().map(|a| a.proven).collect();
    let rows = crate::prepared::prepared(CLAIM_SQL)
        .bind::<Text, _>(worker)
        .bind::<BigInt, _>(limit)
        .bind::<Interval, _>(interval(lease))
        .bind::<BigInt, _>(window)
        .bind::<Array<Text>, _>(subs)
        .bind::<Array<Int4>, _>(rooms)
        .bind::<Array<diesel::sql_types::Bool>, _>(proven)
        .bind::<Int4, _>(allowances.otherwise)
        .bind::<Int4, _>(allowances.unproven_budget)
        .load(conn)
        .await?;
    Ok(rows)
}

/// Puts off by `wait` (without an attempt) up to `limit` due deliveries, oldest first, of the
/// destinations `subscriptions` — destinations at their limit that hang or answer slowly —
/// so they stop holding the head of the queue, where every claim's candidates come from, for
/// the destinations behind them. Rows a claim holds are skipped. Returns how many were put
/// off; `limit` of them means more may wait.
#[tracing::instrument(name = "db.park", skip_all, fields(otel.kind = "client", db.system.name = "postgresql"))]
pub async fn park(
    conn: &mut AsyncPgConnection,
    subscriptions: &[&str],
    wait: std::time::Duration,
    limit: i64,
) -> Result<usize, StoreError> {
    if subscriptions.is_empty() || limit <= 0 {
        return Ok(0);
    }
    Ok(crate::prepared::prepared(
        "WITH blocked AS MATERIALIZED (
             SELECT q.delivery_id FROM delivery_queue q
              WHERE q.due_at <= now() AND NOT q.leased
                AND q.subscription_id = ANY ($1::text[])
              ORDER BY q.due_at, q.delivery_id
              LIMIT $3
              FOR UPDATE SKIP LOCKED
         )
         UPDATE deliveries d
            SET next_attempt_at = now() + $2, updated_at = now()
          WHERE d.id = ANY (ARRAY(SELECT delivery_id FROM blocked))
            AND d.status IN ('pending', 'retrying')",
    )
    .bind::<Array<Text>, _>(subscriptions)
    .bind::<Interval, _>(interval(wait))
    .bind::<BigInt, _>(limit)
    .execute(conn)
    .await?)
}
