//! The queue's snapshot, behind `dispatch-api admin stats` and `GET /stats`: backlog,
//! deliveries by status, recent attempts and failures, each subscription's share and circuit,
//! and the hot queue's health. The recent parts are shared with the console, which reads only
//! the window's attempts, found along the primary key ([`recent_floor`]).

use chrono::{DateTime, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Interval, Nullable, Text, Timestamptz};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use dispatch_domain::DeliveryStatus;

use crate::StoreError;
use crate::queries::deliveries;

fn interval(d: std::time::Duration) -> diesel::pg::data_types::PgInterval {
    diesel::pg::data_types::PgInterval::from_microseconds(
        i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
    )
}

/// One active subscription's share of the queue.
#[derive(Debug, Clone, PartialEq, QueryableByName)]
pub struct SubscriptionStats {
    #[diesel(sql_type = Text)]
    pub id: String,
    /// `closed`, `half_open` or `open`, as a worker last published it.
    #[diesel(sql_type = Text)]
    pub circuit_state: String,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub circuit_open_until: Option<DateTime<Utc>>,
    /// Deliveries due now (pending or retrying, `next_attempt_at` reached).
    #[diesel(sql_type = BigInt)]
    pub due: i64,
    /// Attempts recorded within the window.
    #[diesel(sql_type = BigInt)]
    pub attempts: i64,
    /// Failed attempts (anything but a 2xx) recorded within the window.
    #[diesel(sql_type = BigInt)]
    pub failures: i64,
}

/// A snapshot of the queue and of recent attempts.
#[derive(Debug, Clone, PartialEq)]
pub struct Stats {
    /// Deliveries due now, and how long the oldest of them has waited (0 when none).
    pub backlog: deliveries::Backlog,
    /// Deliveries by status, every status listed (zeros included), in lifecycle order.
    pub by_status: Vec<(DeliveryStatus, i64)>,
    /// The window the attempt counts cover.
    pub window: std::time::Duration,
    /// Attempts recorded within the window.
    pub attempts: i64,
    /// Failed attempts (anything but a 2xx) recorded within the window.
    pub failed_attempts: i64,
    /// Every subscription that is not deleted: most due first, then most failures, then id.
    pub subscriptions: Vec<SubscriptionStats>,
    /// The hot queue's dead rows and vacuum coverage.
    pub queue: crate::queries::health::QueueHealth,
}

impl Stats {
    /// Failed attempts / attempts within the window; `None` without attempts.
    pub fn failure_rate(&self) -> Option<f64> {
        (self.attempts > 0).then(|| self.failed_attempts as f64 / self.attempts as f64)
    }
}

#[derive(QueryableByName)]
struct StatusCount {
    #[diesel(sql_type = Text)]
    status: String,
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[derive(QueryableByName)]
struct AttemptCounts {
    #[diesel(sql_type = BigInt)]
    attempts: i64,
    #[diesel(sql_type = BigInt)]
    failed: i64,
}

/// Reads [`Stats`]; attempt counts cover the last `window` (by `attempts.created_at`). Counting
/// by status reads every delivery, and the attempt counts every attempt row: cheap enough for
/// an operator's command, not for a scrape.
pub async fn stats(
    conn: &mut AsyncPgConnection,
    window: std::time::Duration,
) -> Result<Stats, StoreError> {
    let backlog = deliveries::backlog(conn).await?;
    let counted: Vec<StatusCount> =
        diesel::sql_query("SELECT status, count(*) AS n FROM deliveries GROUP BY status")
            .load(conn)
            .await?;
    let mut by_status: Vec<(DeliveryStatus, i64)> =
        DeliveryStatus::ALL.iter().map(|s| (*s, 0)).collect();
    for row in counted {
        let status: DeliveryStatus = row.status.parse().map_err(|e| StoreError::Corrupt {
            what: "delivery status",
            reason: format!("{e}"),
        })?;
        if let Some(entry) = by_status.iter_mut().find(|(s, _)| *s == status) {
            entry.1 = row.n;
        }
    }
    // Exact: every attempt of the window, however recorded (the console passes a floor).
    let recent = recent_attempts(conn, window, 0).await?;
    let subscriptions = subscription_stats(conn, window, 0).await?;
    let queue = crate::queries::health::queue_health(conn).await?;
    Ok(Stats {
        queue,
        backlog,
        by_status,
        window,
        attempts: recent.0,
        failed_attempts: recent.1,
        subscriptions,
    })
}

#[derive(QueryableByName)]
struct Floor {
    #[diesel(sql_type = BigInt)]
    id: i64,
}

/// The lowest attempt id recorded within `window`, found by bisecting the primary key (about
/// 30 index probes) instead of reading every attempt: a worker appends attempts as they happen,
/// so ids grow with `created_at`, and `id >= floor AND created_at > now() - window` reads only
/// the window's rows. Rows written out of that order (seeded history, say) can be missed: fine
/// for the console's glance, not for `stats`, which counts exactly.
pub async fn recent_floor(
    conn: &mut AsyncPgConnection,
    window: std::time::Duration,
) -> Result<i64, StoreError> {
    let floor: Floor = diesel::sql_query(
        "WITH RECURSIVE b(lo, hi) AS (
             SELECT coalesce(min(id), 1), coalesce(max(id), 0) + 1 FROM attempts
           UNION ALL
             SELECT CASE WHEN p.id IS NULL OR p.id >= b.hi OR p.created_at > now() - $1
                         THEN b.lo ELSE p.id + 1 END,
                    CASE WHEN p.id IS NULL OR p.id >= b.hi THEN (b.lo + b.hi) / 2
                         WHEN p.created_at > now() - $1 THEN p.id ELSE b.hi END
               FROM b
               LEFT JOIN LATERAL (SELECT a.id, a.created_at FROM attempts a
                                   WHERE a.id >= (b.lo + b.hi) / 2
                                   ORDER BY a.id LIMIT 1) p ON true
              WHERE b.lo < b.hi
         )
         SELECT min(hi) AS id FROM b WHERE lo >= hi",
    )
    .bind::<Interval, _>(interval(window))
    .get_result(conn)
    .await?;
    Ok(floor.id)
}

/// Attempts recorded within `window` with ids from `floor` on (0: all of them; or
/// [`recent_floor`], to read only the window's rows), and how many of them failed.
pub async fn recent_attempts(
    conn: &mut AsyncPgConnection,
    window: std::time::Duration,
    floor: i64,
) -> Result<(i64, i64), StoreError> {
    let recent: AttemptCounts = diesel::sql_query(
        "SELECT count(*) AS attempts, count(*) FILTER (WHERE error_code IS NOT NULL) AS failed
           FROM attempts WHERE id >= $2 AND created_at > now() - $1",
    )
    .bind::<Interval, _>(interval(window))
    .bind::<BigInt, _>(floor)
    .get_result(conn)
    .await?;
    Ok((recent.attempts, recent.failed))
}

/// Every subscription that is not deleted with its circuit, due deliveries and attempts within
/// `window` (ids from `floor` on, as for [`recent_attempts`]): most due first, then most
/// failures, then id.
pub async fn subscription_stats(
    conn: &mut AsyncPgConnection,
    window: std::time::Duration,
    floor: i64,
) -> Result<Vec<SubscriptionStats>, StoreError> {
    Ok(diesel::sql_query(
        "SELECT s.id, s.circuit_state, s.circuit_open_until,
                coalesce(due.n, 0) AS due, coalesce(a.attempts, 0) AS attempts,
                coalesce(a.failures, 0) AS failures
           FROM subscriptions s
           LEFT JOIN (SELECT subscription_id, count(*) AS n FROM delivery_queue
                       WHERE due_at <= now()
                       GROUP BY subscription_id) due ON due.subscription_id = s.id
           LEFT JOIN (SELECT subscription_id, count(*) AS attempts,
                             count(*) FILTER (WHERE error_code IS NOT NULL) AS failures
                        FROM attempts WHERE id >= $2 AND created_at > now() - $1
                       GROUP BY subscription_id) a ON a.subscription_id = s.id
          WHERE s.deleted_at IS NULL
          ORDER BY due DESC, failures DESC, s.id",
    )
    .bind::<Interval, _>(interval(window))
    .bind::<BigInt, _>(floor)
    .load(conn)
    .await?)
}
