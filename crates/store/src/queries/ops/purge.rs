//! Retention, behind `dispatch-api admin purge`: deleting finished events (with their deliveries
//! and attempts) and deleted subscriptions past a cutoff, in small batches each its own short
//! transaction, and counting what that would delete (the dry run).

use chrono::{DateTime, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Timestamptz};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::StoreError;

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

/// A delivery of event `e` that is the head of an ordered key (a failed head blocking its key,
/// `on_exhausted: block`): its event is kept, however old, so the key can still be skipped or
/// replayed (migration 000016).
const HOLDS_A_KEY: &str =
    "SELECT 1 FROM deliveries h JOIN ordered_keys k ON k.head = h.id WHERE h.event_id = e.id";

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
                AND NOT EXISTS ({HOLDS_A_KEY})
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
                AND NOT EXISTS ({HOLDS_A_KEY})
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
