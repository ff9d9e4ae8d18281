//! Per-key ordering as operators see it: keys held by a failing head, skipping a blocked head,
//! and what changing a subscription's `ordering` or `on_exhausted` does to its keys. The rule
//! itself is kept by the queue's trigger (migration 000016, ADR 011).

use chrono::{DateTime, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Int4, Nullable, Text, Timestamptz};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

use dispatch_domain::TenantId;

use crate::StoreError;

/// A key of a per-key subscription whose head has failed (and is waiting for its next retry, is
/// being retried, or failed for good and blocks the key): the deliveries behind it wait.
#[derive(Debug, Clone, PartialEq, QueryableByName)]
pub struct BlockedKey {
    #[diesel(sql_type = Text)]
    pub ordering_key: String,
    /// The head: the delivery the key waits for.
    #[diesel(sql_type = BigInt)]
    pub delivery_id: i64,
    #[diesel(sql_type = Text)]
    pub event_id: String,
    /// `retrying`, `processing` (a retry in flight) or `failed` (for good).
    #[diesel(sql_type = Text)]
    pub status: String,
    #[diesel(sql_type = Int4)]
    pub attempts: i32,
    #[diesel(sql_type = Nullable<Text>)]
    pub last_error: Option<String>,
    /// When the head is tried again (`retrying` only).
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// Deliveries of the key waiting behind the head.
    #[diesel(sql_type = BigInt)]
    pub waiting: i64,
}

/// The blocked keys of subscription `subscription_id`, by key, after `after`, at most `limit`.
/// Reads only the subscription's keys with unfinished work (`ordered_keys`), never its history.
pub async fn blocked_keys(
    conn: &mut AsyncPgConnection,
    tenant: &TenantId,
    subscription_id: &str,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<BlockedKey>, StoreError> {
    Ok(crate::prepared::prepared(
        "SELECT k.ordering_key, d.id AS delivery_id, d.event_id, d.status, d.attempts,
                d.last_error,
                CASE WHEN d.status = 'retrying' THEN d.next_attempt_at END AS next_attempt_at,
                (SELECT count(*) FROM delivery_queue q
                  WHERE q.subscription_id = k.subscription_id
                    AND q.ordering_key = k.ordering_key AND q.delivery_id <> k.head) AS waiting
           FROM ordered_keys k
           JOIN deliveries d ON d.id = k.head
          WHERE k.subscription_id = $1 AND ($2::text IS NULL OR k.ordering_key > $2)
            AND (d.attempts > 0 OR d.status = 'failed')
          ORDER BY k.ordering_key
          LIMIT $3",
    )
    .bind::<Text, _>(tenant.stored_id(subscription_id))
    .bind::<Nullable<Text>, _>(after)
    .bind::<BigInt, _>(limit)
    .load(conn)
    .await?)
}

/// Why [`skip`] refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipRefusal {
    /// The delivery is not the failed head of a key: not ordered, not (or no longer) the
    /// head, or not failed for good (a retrying head is tried again on its own).
    NotBlocking,
}

/// What [`skip`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skipped {
    /// The key moved on; `next` is its new head, if any delivery was waiting.
    Skipped {
        next: Option<i64>,
    },
    Refused(SkipRefusal),
    NotFound,
}

#[derive(QueryableByName)]
struct Line {
    #[diesel(sql_type = Text)]
    subscription_id: String,
    #[diesel(sql_type = Nullable<Text>)]
    ordering_key: Option<String>,
}

#[derive(QueryableByName)]
struct Head {
    #[diesel(sql_type = Nullable<BigInt>)]
    head: Option<i64>,
}

/// Skips delivery `id`, the head of its key that failed for good and blocks it
/// (`on_exhausted: block`): the next delivery of the key becomes the head. The skipped one
/// stays `failed` and replayable (a replay puts it back in line, next). One transaction, under
/// the key's row lock, so no outcome or ingestion decides the key's head meanwhile.
/// Only `tenant`'s deliveries: another's is [`Skipped::NotFound`].
pub async fn skip(
    conn: &mut AsyncPgConnection,
    tenant: &TenantId,
    id: i64,
) -> Result<Skipped, StoreError> {
    let tenant = tenant.as_str().to_owned();
    conn.transaction::<_, StoreError, _>(async move |conn| {
        let line: Vec<Line> = diesel::sql_query(
            "SELECT subscription_id, ordering_key FROM deliveries
              WHERE id = $1 AND dispatch_tenant_of(subscription_id) = $2",
        )
        .bind::<BigInt, _>(id)
        .bind::<Text, _>(&tenant)
        .load(conn)
        .await?;
        let Some(line) = line.into_iter().next() else {
            return Ok(Skipped::NotFound);
        };
        let Some(key) = line.ordering_key else {
            return Ok(Skipped::Refused(SkipRefusal::NotBlocking));
        };
        let blocking: Vec<Head> = diesel::sql_query(
            "SELECT k.head FROM ordered_keys k
               JOIN deliveries d ON d.id = k.head
              WHERE k.subscription_id = $1 AND k.ordering_key = $2 AND k.head = $3
                AND d.status = 'failed'
                FOR UPDATE OF k",
        )
        .bind::<Text, _>(&line.subscription_id)
        .bind::<Text, _>(&key)
        .bind::<BigInt, _>(id)
        .load(conn)
        .await?;
        if blocking.is_empty() {
            return Ok(Skipped::Refused(SkipRefusal::NotBlocking));
        }
        diesel::sql_query("SELECT dispatch_ordering_advance($1, $2)")
            .bind::<Text, _>(&line.subscription_id)
            .bind::<Text, _>(&key)
            .execute(conn)
            .await?;
        // A new statement: it sees what the function just wrote.
        let next: Vec<Head> = diesel::sql_query(
            "SELECT head FROM ordered_keys WHERE subscription_id = $1 AND ordering_key = $2",
        )
        .bind::<Text, _>(&line.subscription_id)
        .bind::<Text, _>(&key)
        .load(conn)
        .await?;
        Ok(Skipped::Skipped {
            next: next.into_iter().next().and_then(|h| h.head),
        })
    })
    .await
}

/// Subscription `id` stops ordering by key (the caller holds its row lock): every waiting
/// delivery is due at its own time again, and its keys are forgotten.
pub(crate) async fn stop_ordering(
    conn: &mut AsyncPgConnection,
    id: &str,
) -> Result<usize, StoreError> {
    diesel::sql_query("DELETE FROM ordered_keys WHERE subscription_id = $1")
        .bind::<Text, _>(id)
        .execute(conn)
        .await?;
    Ok(diesel::sql_query(
        "UPDATE delivery_queue q
            SET ordering_key = NULL,
                due_at = CASE WHEN d.held THEN 'infinity'::timestamptz
                              WHEN d.status = 'processing' THEN d.leased_until
                              ELSE d.next_attempt_at END
           FROM deliveries d
          WHERE q.subscription_id = $1 AND q.ordering_key IS NOT NULL AND d.id = q.delivery_id",
    )
    .bind::<Text, _>(id)
    .execute(conn)
    .await?)
}

/// Subscription `id` now skips a head that failed for good (the caller holds its row lock):
/// every key blocked by one moves on. Returns how many keys did.
pub(crate) async fn unblock_all(
    conn: &mut AsyncPgConnection,
    id: &str,
) -> Result<usize, StoreError> {
    Ok(diesel::sql_query(
        "SELECT dispatch_ordering_advance(b.subscription_id, b.ordering_key)
           FROM (SELECT k.subscription_id, k.ordering_key
                   FROM ordered_keys k JOIN deliveries d ON d.id = k.head
                  WHERE k.subscription_id = $1 AND d.status = 'failed'
                  ORDER BY k.ordering_key
                    FOR UPDATE OF k) b",
    )
    .bind::<Text, _>(id)
    .execute(conn)
    .await?)
}
