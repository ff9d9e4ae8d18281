//! Sending by hand: one delivery again (`POST /deliveries/{id}/retry`), many again (the batch
//! and count of a replay, `POST /replays`, stored in `replays`), and a test event to one
//! subscription (`POST /subscriptions/{id}/test`).

use diesel::QueryableByName;
use diesel::sql_types::{Array, BigInt, Bool, Nullable, Text, Timestamptz};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use dispatch_domain::{DeliveryStatus, TenantId};

use crate::StoreError;
use crate::queries::listing::{DELIVERY_FILTER_SQL, DeliveryFilter, delivery_source};

/// Why a delivery was not put back in the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryRefusal {
    /// A worker holds it now.
    InFlight,
    /// It is waiting for its first attempt already.
    AlreadyQueued,
    /// It was delivered: only a resend (`resend: true`) sends it again.
    Delivered,
    /// Its subscription was deleted (it is `cancelled`, or the subscription is gone).
    SubscriptionDeleted,
}

/// What [`retry`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retried {
    /// Back in the queue, due now; `from` is the status it had.
    Requeued {
        from: DeliveryStatus,
    },
    Refused(RetryRefusal),
    NotFound,
}

#[derive(QueryableByName)]
struct Locked {
    #[diesel(sql_type = Text)]
    status: String,
    #[diesel(sql_type = Bool)]
    subscription_deleted: bool,
}

/// Puts one delivery back in the queue, due now: a `failed` one (or a `delivered` one when
/// `resend`) with a fresh retry schedule (attempts counted from 1 again; its attempt rows stay),
/// a `retrying` one keeping its attempt count. In one transaction, locking the queue row (if
/// any) before the delivery, as a claim does, so the two never deadlock.
/// Only `tenant`'s deliveries: another's is [`Retried::NotFound`].
pub async fn retry(
    conn: &mut AsyncPgConnection,
    tenant: &TenantId,
    id: i64,
    resend: bool,
) -> Result<Retried, StoreError> {
    let tenant = tenant.as_str().to_owned();
    conn.transaction::<_, StoreError, _>(async move |conn| {
        diesel::sql_query(
            "SELECT 1 FROM delivery_queue
              WHERE delivery_id = $1 AND dispatch_tenant_of(subscription_id) = $2 FOR UPDATE",
        )
        .bind::<BigInt, _>(id)
        .bind::<Text, _>(&tenant)
        .execute(conn)
        .await?;
        let locked: Vec<Locked> = diesel::sql_query(
            "SELECT d.status, s.deleted_at IS NOT NULL AS subscription_deleted
               FROM deliveries d JOIN subscriptions s ON s.id = d.subscription_id
              WHERE d.id = $1 AND s.tenant_id = $2
                FOR NO KEY UPDATE OF d FOR KEY SHARE OF s",
        )
        .bind::<BigInt, _>(id)
        .bind::<Text, _>(&tenant)
        .load(conn)
        .await?;
        let Some(row) = locked.into_iter().next() else {
            return Ok(Retried::NotFound);
        };
        let from: DeliveryStatus = row.status.parse().map_err(|e| StoreError::Corrupt {
            what: "delivery status",
            reason: format!("{e}"),
        })?;
        use DeliveryStatus::*;
        let refusal = match from {
            _ if row.subscription_deleted => Some(RetryRefusal::SubscriptionDeleted),
            Cancelled => Some(RetryRefusal::SubscriptionDeleted),
            Processing => Some(RetryRefusal::InFlight),
            Pending => Some(RetryRefusal::AlreadyQueued),
            Delivered if !resend => Some(RetryRefusal::Delivered),
            Delivered | Failed | Retrying => None,
        };
        if let Some(refusal) = refusal {
            return Ok(Retried::Refused(refusal));
        }
        let sql = if from == Retrying {
            "UPDATE deliveries SET next_attempt_at = now(), updated_at = now() WHERE id = $1"
        } else {
            "UPDATE deliveries
                SET status = 'pending', attempts = 0, next_attempt_at = now(),
                    leased_by = NULL, leased_until = NULL, updated_at = now()
              WHERE id = $1"
        };
        diesel::sql_query(sql)
            .bind::<BigInt, _>(id)
            .execute(conn)
            .await?;
        Ok(Retried::Requeued { from })
    })
    .await
}

/// What a replay's batch and count share: deliveries matching the filter (its statuses are
/// `failed` and/or `delivered`) whose subscription is not deleted.
fn replay_from(filter: &DeliveryFilter) -> String {
    format!(
        "{source} JOIN subscriptions s ON s.id = d.subscription_id AND s.deleted_at IS NULL
          WHERE {DELIVERY_FILTER_SQL}",
        source = delivery_source(&filter.statuses).0,
    )
}

fn statuses(filter: &DeliveryFilter) -> Vec<&'static str> {
    filter.statuses.iter().map(|s| s.as_str()).collect()
}

#[derive(QueryableByName)]
struct Counted {
    #[diesel(sql_type = BigInt)]
    n: i64,
    #[diesel(sql_type = BigInt)]
    last_id: i64,
}

/// How many of `tenant`'s deliveries a replay of `filter` (its ids the tenant's own) would
/// re-queue now, and the highest delivery id (a replay looks at no delivery created after it).
pub async fn count_replayable(
    conn: &mut AsyncPgConnection,
    tenant: &TenantId,
    filter: &DeliveryFilter,
) -> Result<(i64, i64), StoreError> {
    let row: Counted = diesel::sql_query(format!(
        "SELECT (SELECT count(*) FROM {from}) AS n,
                coalesce((SELECT max(id) FROM deliveries), 0) AS last_id",
        from = replay_from(filter)
    ))
    .bind::<Nullable<Array<Text>>, _>(Some(statuses(filter)))
    .bind::<Nullable<Text>, _>(
        filter
            .subscription_id
            .as_deref()
            .map(|s| tenant.stored_id(s)),
    )
    .bind::<Nullable<Text>, _>(filter.event_id.as_deref().map(|e| tenant.stored_id(e)))
    .bind::<Nullable<Timestamptz>, _>(filter.updated_after)
    .bind::<Nullable<Timestamptz>, _>(filter.updated_before)
    .bind::<Text, _>(tenant.as_str())
    .get_result(conn)
    .await?;
    Ok((row.n, row.last_id))
}

/// Re-queues `tenant`'s deliveries matching `filter` among ids in (`after`, `up_to`]: each
/// becomes `pending` with a fresh retry schedule, due now. Returns how many.
pub(crate) async fn requeue_range(
    conn: &mut AsyncPgConnection,
    tenant: &TenantId,
    filter: &DeliveryFilter,
    after: i64,
    up_to: i64,
) -> Result<i64, StoreError> {
    let n = diesel::sql_query(format!(
        "WITH chosen AS MATERIALIZED (
             SELECT d.id FROM {from} AND d.id > $7 AND d.id <= $8
              ORDER BY d.id
                FOR NO KEY UPDATE OF d FOR KEY SHARE OF s
         )
         UPDATE deliveries d
            SET status = 'pending', attempts = 0, next_attempt_at = now(),
                leased_by = NULL, leased_until = NULL, updated_at = now()
           FROM chosen WHERE d.id = chosen.id",
        from = replay_from(filter)
    ))
    .bind::<Nullable<Array<Text>>, _>(Some(statuses(filter)))
    .bind::<Nullable<Text>, _>(
        filter
            .subscription_id
            .as_deref()
            .map(|s| tenant.stored_id(s)),
    )
    .bind::<Nullable<Text>, _>(filter.event_id.as_deref().map(|e| tenant.stored_id(e)))
    .bind::<Nullable<Timestamptz>, _>(filter.updated_after)
    .bind::<Nullable<Timestamptz>, _>(filter.updated_before)
    .bind::<Text, _>(tenant.as_str())
    .bind::<BigInt, _>(after)
    .bind::<BigInt, _>(up_to)
    .execute(conn)
    .await?;
    Ok(i64::try_from(n).unwrap_or(i64::MAX))
}

#[derive(QueryableByName)]
struct Created {
    #[diesel(sql_type = BigInt)]
    id: i64,
}

/// Stores `event` with one delivery, to subscription `subscription_id` only (however its
/// patterns read), due now and never held, even while the subscription is paused: an operator's
/// test of a receiver (`POST /subscriptions/{id}/test`). Returns the delivery's id, or `None`
/// when `tenant` has no such subscription (or it was deleted). One statement.
pub async fn send_test(
    conn: &mut AsyncPgConnection,
    tenant: &TenantId,
    subscription_id: &str,
    event: &crate::models::NewEvent,
) -> Result<Option<i64>, StoreError> {
    use diesel::sql_types::{Jsonb, Nullable};
    let rows: Vec<Created> = diesel::sql_query(
        "WITH s AS (
             SELECT id FROM subscriptions WHERE id = $1 AND deleted_at IS NULL FOR KEY SHARE
         ), e AS (
             INSERT INTO events (id, event_type, source, data, traceparent, tenant_id)
             SELECT $2, $3, $4, $5, $6, $7 FROM s
             RETURNING id
         )
         INSERT INTO deliveries (event_id, subscription_id, next_attempt_at, held)
         SELECT e.id, s.id, now(), false FROM e, s
         RETURNING id",
    )
    .bind::<Text, _>(tenant.stored_id(subscription_id))
    .bind::<Text, _>(tenant.stored_id(event.id.as_str()))
    .bind::<Text, _>(event.event_type.as_str())
    .bind::<Text, _>(event.source.as_str())
    .bind::<Jsonb, _>(&event.data)
    .bind::<Nullable<Text>, _>(event.traceparent.as_deref())
    .bind::<Text, _>(tenant.as_str())
    .load(conn)
    .await?;
    Ok(rows.into_iter().next().map(|r| r.id))
}
