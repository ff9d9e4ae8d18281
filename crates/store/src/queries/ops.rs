//! Operators' queries, behind `dispatch-api admin replay | purge | stats`: re-queueing failed
//! deliveries, deleting finished history past a retention period, and a snapshot of the queue.
//! Nothing here runs in the services; every function is meant for a connection outside any
//! transaction (each statement is then a short transaction of its own).

use chrono::{DateTime, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Interval, Nullable, Text, Timestamptz};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use dispatch_domain::DeliveryStatus;

use crate::StoreError;
use crate::queries::listing::DeliveryFilter;
use crate::queries::{deliveries, replays, requeue};

fn interval(d: std::time::Duration) -> diesel::pg::data_types::PgInterval {
    diesel::pg::data_types::PgInterval::from_microseconds(
        i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
    )
}

// ---------------------------------------------------------------------------------------------
// Replay
// ---------------------------------------------------------------------------------------------

/// Which failed deliveries to replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplaySelector {
    /// Every failed delivery of one event.
    Event(String),
    /// Every failed delivery to one subscription.
    Subscription(String),
    /// Every delivery that failed (its `updated_at`) at or after `since`, and before `until`
    /// when given.
    FailedBetween {
        since: DateTime<Utc>,
        until: Option<DateTime<Utc>>,
    },
}

impl ReplaySelector {
    /// The same selection as a [`DeliveryFilter`], the one `GET /deliveries` and `POST /replays`
    /// take: failed deliveries only.
    pub fn filter(&self) -> DeliveryFilter {
        let mut filter = DeliveryFilter {
            statuses: vec![DeliveryStatus::Failed],
            ..DeliveryFilter::default()
        };
        match self {
            Self::Event(id) => filter.event_id = Some(id.clone()),
            Self::Subscription(id) => filter.subscription_id = Some(id.clone()),
            Self::FailedBetween { since, until } => {
                filter.updated_after = Some(*since);
                filter.updated_before = *until;
            }
        }
        filter
    }
}

/// How many deliveries [`replay`] would re-queue now (the dry run): failed deliveries matching
/// `selector` whose subscription is not deleted.
pub async fn count_replayable(
    conn: &mut AsyncPgConnection,
    selector: &ReplaySelector,
) -> Result<i64, StoreError> {
    Ok(requeue::count_replayable(conn, &selector.filter()).await?.0)
}

/// Replays the failed deliveries matching `selector` whose subscription is not deleted, as
/// `POST /replays` does: a stored replay (visible at `GET /replays/{id}`), worked here batch by
/// batch until it completes (an API replica may work some of its batches meanwhile). Each
/// becomes `pending` with `attempts = 0` (a full new retry schedule), due now; `last_error` and
/// the attempt rows are kept. Returns how many were re-queued.
pub async fn replay(
    conn: &mut AsyncPgConnection,
    selector: &ReplaySelector,
) -> Result<usize, StoreError> {
    let new = replays::NewReplay {
        id: dispatch_domain::ReplayId::generate().into_inner(),
        filter: selector.filter(),
        idempotency_key: None,
        request_hash: String::new(),
    };
    let id = match replays::create(conn, &new).await? {
        replays::Created::New(row)
        | replays::Created::Existing(row)
        | replays::Created::KeyReused(row) => row.id,
    };
    loop {
        let now = match replays::work_batch(conn, Some(&id)).await? {
            Some(row) => row,
            // Another replica holds it for a batch: look again shortly.
            None => {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                replays::find(conn, &id)
                    .await?
                    .ok_or_else(|| StoreError::Corrupt {
                        what: "replay",
                        reason: format!("replay {id} vanished while it ran"),
                    })?
            }
        };
        if now.state != "running" {
            return Ok(usize::try_from(now.requeued).unwrap_or(usize::MAX));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Purge (retention)
// ---------------------------------------------------------------------------------------------

/// What a purge deleted (or, for [`count_purgeable`], would delete).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, QueryableByName)]
pub struct Purged {
    #[diesel(sql_type = BigInt)]
    pub events: i64,
    #[diesel(sql_type = BigInt)]
    pub deliveries: i64,
    #[diesel(sql_type = BigInt)]
    pub attempts: i64,
    #[diesel(sql_type = BigInt)]
    pub subscriptions: i64,
}

impl Purged {
    fn add(&mut self, other: Purged) {
        self.events += other.events;
        self.deliveries += other.deliveries;
        self.attempts += other.attempts;
        self.subscriptions += other.subscriptions;
    }

    fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// The totals of a whole [`purge`], and how many batches deleted something.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PurgeReport {
    pub purged: Purged,
    /// Batches of events (with their deliveries and attempts) that deleted anything.
    pub event_batches: u32,
    /// Batches of deleted subscriptions that deleted anything.
    pub subscription_batches: u32,
}

/// Statuses after which nothing happens to a delivery by itself.
const FINISHED: &str = "('delivered', 'failed', 'cancelled')";

/// Counts what [`purge`] would delete with this `cutoff` (the dry run): events received before
/// it whose deliveries are all finished (or that have none), their deliveries and attempts, and
/// subscriptions deleted before it that would be left without deliveries.
pub async fn count_purgeable(
    conn: &mut AsyncPgConnection,
    cutoff: DateTime<Utc>,
) -> Result<Purged, StoreError> {
    Ok(diesel::sql_query(format!(
        "WITH ev AS MATERIALIZED (
             SELECT e.id FROM events e
              WHERE e.received_at < $1
                AND NOT EXISTS (SELECT 1 FROM deliveries d
                                 WHERE d.event_id = e.id AND d.status NOT IN {FINISHED})
         ), dl AS MATERIALIZED (
             SELECT d.id FROM deliveries d JOIN ev ON ev.id = d.event_id
         )
         SELECT (SELECT count(*) FROM ev) AS events,
                (SELECT count(*) FROM dl) AS deliveries,
                (SELECT count(*) FROM attempts a WHERE a.delivery_id IN (SELECT id FROM dl))
                    AS attempts,
                (SELECT count(*) FROM subscriptions s
                  WHERE s.deleted_at < $1
                    AND NOT EXISTS (SELECT 1 FROM deliveries d
                                     WHERE d.subscription_id = s.id
                                       AND d.id NOT IN (SELECT id FROM dl)))
                    AS subscriptions"
    ))
    .bind::<Timestamptz, _>(cutoff)
    .get_result(conn)
    .await?)
}

/// Deletes one batch of at most `limit` finished events received before `cutoff`, oldest
/// first, with their deliveries and attempts, in one statement. Events locked by someone else
/// are skipped (`SKIP LOCKED`), so a batch never waits on a busy row for long.
///
/// The deliveries are deleted explicitly, each only if it is still finished when its row is
/// reached; an event goes only once every delivery of it went. So a delivery replayed while
/// the batch runs (its snapshot still saw it `failed`) survives with its event.
pub async fn purge_events_batch(
    conn: &mut AsyncPgConnection,
    cutoff: DateTime<Utc>,
    limit: i64,
) -> Result<Purged, StoreError> {
    Ok(diesel::sql_query(format!(
        "WITH cand AS MATERIALIZED (
             SELECT e.id FROM events e
              WHERE e.received_at < $1
                AND NOT EXISTS (SELECT 1 FROM deliveries d
                                 WHERE d.event_id = e.id AND d.status NOT IN {FINISHED})
              ORDER BY e.received_at
              LIMIT $2
                FOR UPDATE SKIP LOCKED
         ), gone_deliveries AS (
             DELETE FROM deliveries d USING cand
              WHERE d.event_id = cand.id AND d.status IN {FINISHED}
             RETURNING d.id
         ), gone_attempts AS (
             DELETE FROM attempts a USING gone_deliveries g
              WHERE a.delivery_id = g.id
             RETURNING a.id
         ), gone_events AS (
             DELETE FROM events e USING cand
              WHERE e.id = cand.id
                AND NOT EXISTS (SELECT 1 FROM deliveries d
                                 WHERE d.event_id = e.id
                                   AND d.id NOT IN (SELECT id FROM gone_deliveries))
             RETURNING e.id
         )
         SELECT (SELECT count(*) FROM gone_events) AS events,
                (SELECT count(*) FROM gone_deliveries) AS deliveries,
                (SELECT count(*) FROM gone_attempts) AS attempts,
                0::bigint AS subscriptions"
    ))
    .bind::<Timestamptz, _>(cutoff)
    .bind::<BigInt, _>(limit)
    .get_result(conn)
    .await?)
}

/// Deletes one batch of at most `limit` subscriptions deleted before `cutoff` that no delivery
/// refers to any more (their history was purged). Their ids become free again.
pub async fn purge_subscriptions_batch(
    conn: &mut AsyncPgConnection,
    cutoff: DateTime<Utc>,
    limit: i64,
) -> Result<i64, StoreError> {
    let deleted = diesel::sql_query(
        "WITH cand AS MATERIALIZED (
             SELECT s.id FROM subscriptions s
              WHERE s.deleted_at < $1
                AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.subscription_id = s.id)
              ORDER BY s.deleted_at
              LIMIT $2
                FOR UPDATE SKIP LOCKED
         )
         DELETE FROM subscriptions s USING cand WHERE s.id = cand.id",
    )
    .bind::<Timestamptz, _>(cutoff)
    .bind::<BigInt, _>(limit)
    .execute(conn)
    .await?;
    Ok(i64::try_from(deleted).unwrap_or(i64::MAX))
}

/// Retention: deletes finished history older than `cutoff` in batches of `batch_size`, each
/// batch its own short transaction (call this outside a transaction), until a batch deletes
/// nothing — first events with their deliveries and attempts, then deleted subscriptions left
/// without deliveries. Events with any unfinished delivery are never touched. `on_batch` sees
/// the running totals after every batch that deleted something.
pub async fn purge(
    conn: &mut AsyncPgConnection,
    cutoff: DateTime<Utc>,
    batch_size: i64,
    mut on_batch: impl FnMut(&PurgeReport),
) -> Result<PurgeReport, StoreError> {
    let limit = batch_size.max(1);
    let mut report = PurgeReport::default();
    loop {
        let batch = purge_events_batch(conn, cutoff, limit).await?;
        if batch.is_empty() {
            break;
        }
        report.purged.add(batch);
        report.event_batches += 1;
        on_batch(&report);
    }
    loop {
        let subscriptions = purge_subscriptions_batch(conn, cutoff, limit).await?;
        if subscriptions == 0 {
            break;
        }
        report.purged.subscriptions += subscriptions;
        report.subscription_batches += 1;
        on_batch(&report);
    }
    Ok(report)
}

// ---------------------------------------------------------------------------------------------
// Stats
// ---------------------------------------------------------------------------------------------

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
    let recent: AttemptCounts = diesel::sql_query(
        "SELECT count(*) AS attempts, count(*) FILTER (WHERE error_code IS NOT NULL) AS failed
           FROM attempts WHERE created_at > now() - $1",
    )
    .bind::<Interval, _>(interval(window))
    .get_result(conn)
    .await?;
    let subscriptions: Vec<SubscriptionStats> = diesel::sql_query(
        "SELECT s.id, s.circuit_state, s.circuit_open_until,
                coalesce(due.n, 0) AS due, coalesce(a.attempts, 0) AS attempts,
                coalesce(a.failures, 0) AS failures
           FROM subscriptions s
           LEFT JOIN (SELECT subscription_id, count(*) AS n FROM delivery_queue
                       WHERE due_at <= now()
                       GROUP BY subscription_id) due ON due.subscription_id = s.id
           LEFT JOIN (SELECT subscription_id, count(*) AS attempts,
                             count(*) FILTER (WHERE error_code IS NOT NULL) AS failures
                        FROM attempts WHERE created_at > now() - $1
                       GROUP BY subscription_id) a ON a.subscription_id = s.id
          WHERE s.deleted_at IS NULL
          ORDER BY due DESC, failures DESC, s.id",
    )
    .bind::<Interval, _>(interval(window))
    .load(conn)
    .await?;
    let queue = crate::queries::health::queue_health(conn).await?;
    Ok(Stats {
        queue,
        backlog,
        by_status,
        window,
        attempts: recent.attempts,
        failed_attempts: recent.failed,
        subscriptions,
    })
}
