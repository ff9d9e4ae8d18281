//! Replays as rows (`POST /replays`): created with the count they match, worked through one
//! bounded batch per transaction by whichever API replica gets to them first, cancellable, and
//! readable while they run. A crash between batches loses nothing and repeats nothing: a
//! batch's re-queued deliveries and the replay's advanced cursor commit together.

use chrono::{DateTime, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{Array, BigInt, Integer, Nullable, Text, Timestamptz};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use dispatch_domain::{DeliveryStatus, TenantId};

use crate::StoreError;
use crate::queries::listing::DeliveryFilter;
use crate::queries::requeue::{count_replayable, requeue_range};

/// Delivery ids one batch looks at: a batch's work is bounded by this however many of them
/// match, and a replay over a million deliveries is a few hundred short transactions.
pub const BATCH_IDS: i64 = 10_000;

/// A stored replay.
#[derive(Debug, Clone, PartialEq, QueryableByName)]
pub struct ReplayRow {
    #[diesel(sql_type = Text)]
    pub id: String,
    /// Whose deliveries it replays; its `event_id` and `subscription_id` are that tenant's own.
    #[diesel(sql_type = Text)]
    pub tenant_id: String,
    #[diesel(sql_type = Nullable<Text>)]
    pub event_id: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub subscription_id: Option<String>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub since: Option<DateTime<Utc>>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub until: Option<DateTime<Utc>>,
    #[diesel(sql_type = Array<Text>)]
    pub statuses: Vec<String>,
    /// `running`, `completed` or `cancelled`.
    #[diesel(sql_type = Text)]
    pub state: String,
    /// Deliveries that matched when the replay was created.
    #[diesel(sql_type = BigInt)]
    pub matched: i64,
    /// Deliveries re-queued so far.
    #[diesel(sql_type = BigInt)]
    pub requeued: i64,
    #[diesel(sql_type = Integer)]
    pub batches: i32,
    /// Deliveries with ids up to this one have been looked at.
    #[diesel(sql_type = BigInt)]
    pub cursor_id: i64,
    /// The highest delivery id when the replay was created.
    #[diesel(sql_type = BigInt)]
    pub last_id: i64,
    #[diesel(sql_type = Nullable<Text>)]
    pub request_hash: Option<String>,
    #[diesel(sql_type = Timestamptz)]
    pub created_at: DateTime<Utc>,
    #[diesel(sql_type = Timestamptz)]
    pub updated_at: DateTime<Utc>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub finished_at: Option<DateTime<Utc>>,
}

impl ReplayRow {
    /// The filter the replay was created with.
    pub fn filter(&self) -> Result<DeliveryFilter, StoreError> {
        let statuses = self
            .statuses
            .iter()
            .map(|s| s.parse::<DeliveryStatus>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| StoreError::Corrupt {
                what: "replay statuses",
                reason: e.to_string(),
            })?;
        Ok(DeliveryFilter {
            statuses,
            subscription_id: self.subscription_id.clone(),
            event_id: self.event_id.clone(),
            updated_after: self.since,
            updated_before: self.until,
        })
    }
}

const COLUMNS: &str =
    "id, tenant_id, event_id, subscription_id, since, until, statuses, state, matched,
    requeued, batches, cursor_id, last_id, request_hash, created_at, updated_at, finished_at";

/// What [`create`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Created {
    /// A new replay (already `completed` when nothing matched).
    New(ReplayRow),
    /// The idempotency key was used before for the same request: that replay.
    Existing(ReplayRow),
    /// The idempotency key was used before for a different request.
    KeyReused(ReplayRow),
}

/// A replay to create: `filter.statuses` must be non-empty, of `failed` and `delivered` only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewReplay {
    pub id: String,
    pub tenant: TenantId,
    /// Its ids are the tenant's own.
    pub filter: DeliveryFilter,
    pub idempotency_key: Option<String>,
    /// Tells a repeat of the same request from another one under the same key.
    pub request_hash: String,
}

async fn by_key(
    conn: &mut AsyncPgConnection,
    tenant: &TenantId,
    key: &str,
) -> Result<Option<ReplayRow>, StoreError> {
    let rows: Vec<ReplayRow> = diesel::sql_query(format!(
        "SELECT {COLUMNS} FROM replays WHERE tenant_id = $2 AND idempotency_key = $1"
    ))
    .bind::<Text, _>(key)
    .bind::<Text, _>(tenant.as_str())
    .load(conn)
    .await?;
    Ok(rows.into_iter().next())
}

fn classify(existing: ReplayRow, hash: &str) -> Created {
    if existing.request_hash.as_deref() == Some(hash) {
        Created::Existing(existing)
    } else {
        Created::KeyReused(existing)
    }
}

/// Stores a replay with the number of deliveries it matches now. A repeated idempotency key
/// (within its tenant) answers the replay it created (or [`Created::KeyReused`]).
pub async fn create(conn: &mut AsyncPgConnection, new: &NewReplay) -> Result<Created, StoreError> {
    if let Some(key) = &new.idempotency_key
        && let Some(existing) = by_key(conn, &new.tenant, key).await?
    {
        return Ok(classify(existing, &new.request_hash));
    }
    let (matched, last_id) = count_replayable(conn, &new.tenant, &new.filter).await?;
    let statuses: Vec<&str> = new.filter.statuses.iter().map(|s| s.as_str()).collect();
    let rows: Vec<ReplayRow> = diesel::sql_query(format!(
        "INSERT INTO replays (id, event_id, subscription_id, since, until, statuses, matched,
                              last_id, idempotency_key, request_hash, state, finished_at,
                              tenant_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10,
                 CASE WHEN $7 = 0 THEN 'completed' ELSE 'running' END,
                 CASE WHEN $7 = 0 THEN now() END, $11)
         ON CONFLICT (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
         RETURNING {COLUMNS}"
    ))
    .bind::<Text, _>(&new.id)
    .bind::<Nullable<Text>, _>(new.filter.event_id.as_deref())
    .bind::<Nullable<Text>, _>(new.filter.subscription_id.as_deref())
    .bind::<Nullable<Timestamptz>, _>(new.filter.updated_after)
    .bind::<Nullable<Timestamptz>, _>(new.filter.updated_before)
    .bind::<Array<Text>, _>(statuses)
    .bind::<BigInt, _>(matched)
    .bind::<BigInt, _>(last_id)
    .bind::<Nullable<Text>, _>(new.idempotency_key.as_deref())
    .bind::<Text, _>(&new.request_hash)
    .bind::<Text, _>(new.tenant.as_str())
    .load(conn)
    .await?;
    match (rows.into_iter().next(), &new.idempotency_key) {
        (Some(row), _) => Ok(Created::New(row)),
        // Another request with the same key won the race.
        (None, Some(key)) => match by_key(conn, &new.tenant, key).await? {
            Some(existing) => Ok(classify(existing, &new.request_hash)),
            None => Err(StoreError::Corrupt {
                what: "replay",
                reason: "an idempotency key conflicted, then was not found".to_owned(),
            }),
        },
        (None, None) => Err(StoreError::Corrupt {
            what: "replay",
            reason: "an insert without a key returned nothing".to_owned(),
        }),
    }
}

/// `tenant`'s replay `id`.
pub async fn find(
    conn: &mut AsyncPgConnection,
    tenant: &TenantId,
    id: &str,
) -> Result<Option<ReplayRow>, StoreError> {
    let rows: Vec<ReplayRow> = diesel::sql_query(format!(
        "SELECT {COLUMNS} FROM replays WHERE id = $1 AND tenant_id = $2"
    ))
    .bind::<Text, _>(id)
    .bind::<Text, _>(tenant.as_str())
    .load(conn)
    .await?;
    Ok(rows.into_iter().next())
}

/// Stops a running replay (what it re-queued stays queued). Returns the replay as it now is,
/// or `None` if `tenant` has none with this id.
pub async fn cancel(
    conn: &mut AsyncPgConnection,
    tenant: &TenantId,
    id: &str,
) -> Result<Option<ReplayRow>, StoreError> {
    diesel::sql_query(
        "UPDATE replays SET state = 'cancelled', finished_at = now(), updated_at = now()
          WHERE id = $1 AND tenant_id = $2 AND state = 'running'",
    )
    .bind::<Text, _>(id)
    .bind::<Text, _>(tenant.as_str())
    .execute(conn)
    .await?;
    find(conn, tenant, id).await
}

/// Works one batch of the oldest running replay (or of replay `only`) that no one else is
/// working on: re-queues its matching deliveries among the next [`BATCH_IDS`] ids and advances
/// it, in one transaction (the replay row stays locked meanwhile, so two replicas never work
/// the same replay at once; one finding it locked skips it). Returns the replay after the
/// batch, or `None` when no replay is waiting.
pub async fn work_batch(
    conn: &mut AsyncPgConnection,
    only: Option<&str>,
) -> Result<Option<ReplayRow>, StoreError> {
    let only = only.map(str::to_owned);
    conn.transaction::<_, StoreError, _>(async move |conn| {
        let rows: Vec<ReplayRow> = diesel::sql_query(format!(
            "SELECT {COLUMNS} FROM replays
              WHERE state = 'running' AND ($1::text IS NULL OR id = $1)
              ORDER BY created_at LIMIT 1 FOR UPDATE SKIP LOCKED"
        ))
        .bind::<Nullable<Text>, _>(only)
        .load(conn)
        .await?;
        let Some(replay) = rows.into_iter().next() else {
            return Ok(None);
        };
        let filter = replay.filter()?;
        let tenant = TenantId::parse(&replay.tenant_id).map_err(|e| StoreError::Corrupt {
            what: "replay tenant",
            reason: e.to_string(),
        })?;
        let up_to = replay
            .cursor_id
            .saturating_add(BATCH_IDS)
            .min(replay.last_id);
        let requeued = requeue_range(conn, &tenant, &filter, replay.cursor_id, up_to).await?;
        let rows: Vec<ReplayRow> = diesel::sql_query(format!(
            "UPDATE replays
                SET cursor_id = $2, requeued = requeued + $3, batches = batches + 1,
                    state = CASE WHEN $2 >= last_id THEN 'completed' ELSE 'running' END,
                    finished_at = CASE WHEN $2 >= last_id THEN now() END,
                    updated_at = now()
              WHERE id = $1
             RETURNING {COLUMNS}"
        ))
        .bind::<Text, _>(&replay.id)
        .bind::<BigInt, _>(up_to)
        .bind::<BigInt, _>(requeued)
        .load(conn)
        .await?;
        Ok(rows.into_iter().next())
    })
    .await
}
