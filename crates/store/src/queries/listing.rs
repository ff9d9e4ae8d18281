//! Operators' lists: events and deliveries by filter, newest first, and attempts, oldest
//! first, a page at a time with keyset cursors (never OFFSET), each served by an index.
//!
//! The statements are written once with every filter as a parameter that may be NULL. They are
//! never prepared by name, so PostgreSQL plans each with its values: an absent filter folds
//! away, and the plan is the one for the filters actually given. Where a filter names a small
//! table (`failed_deliveries`, `delivery_queue`), the statement starts from it rather than from
//! the history. `plans` (with the `tools` feature) explains every combination, for the test
//! that forbids sequential scans of the big tables.

use chrono::{DateTime, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{Array, BigInt, Bool, Integer, Jsonb, Nullable, Text, Timestamptz};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use dispatch_domain::{DeliveryStatus, TenantId};

use crate::StoreError;

/// Which events `GET /events` lists. Every field narrows the list; `None` does not.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// The event type must equal this.
    pub type_exact: Option<String>,
    /// The event type must start with this (a pattern `order.*` gives `order.`).
    pub type_prefix: Option<String>,
    pub source: Option<String>,
    /// The event's status, summarised from its deliveries as the API shows it.
    pub status: Option<DeliveryStatus>,
    /// Events with a delivery to this subscription.
    pub subscription_id: Option<String>,
    pub received_after: Option<DateTime<Utc>>,
    pub received_before: Option<DateTime<Utc>>,
}

/// Where a page of events continues: after this event, in newest-first order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventCursor {
    pub received_at: DateTime<Utc>,
    pub id: String,
}

/// One event of a list; `data` only when asked for.
#[derive(Debug, Clone, PartialEq, QueryableByName)]
pub struct EventItem {
    #[diesel(sql_type = Text)]
    pub id: String,
    #[diesel(sql_type = Text)]
    pub event_type: String,
    #[diesel(sql_type = Text)]
    pub source: String,
    #[diesel(sql_type = Nullable<Jsonb>)]
    pub data: Option<serde_json::Value>,
    #[diesel(sql_type = Timestamptz)]
    pub received_at: DateTime<Utc>,
    /// Summarised as [`dispatch_domain::summarise_event_status`] does.
    #[diesel(sql_type = Text)]
    pub status: String,
}

/// [`dispatch_domain::summarise_event_status`] in SQL, over the deliveries of `e`: the first
/// status present in the order processing, retrying, pending, failed, delivered, cancelled;
/// `delivered` without deliveries. A test compares the two on every combination.
pub const EVENT_STATUS_SQL: &str = "(SELECT CASE
        WHEN bool_or(d.status = 'processing') THEN 'processing'
        WHEN bool_or(d.status = 'retrying') THEN 'retrying'
        WHEN bool_or(d.status = 'pending') THEN 'pending'
        WHEN bool_or(d.status = 'failed') THEN 'failed'
        WHEN bool_or(d.status = 'cancelled') AND NOT bool_or(d.status = 'delivered')
            THEN 'cancelled'
        ELSE 'delivered' END
     FROM deliveries d WHERE d.event_id = e.id)";

/// The events a status filter can start from: those with a delivery in the small tables that
/// hold unfinished or failed deliveries. `delivered` and `cancelled` have no such table and walk
/// the events newest first.
fn event_source(status: Option<DeliveryStatus>) -> (&'static str, &'static str) {
    match status {
        // Walked newest first along `failed_deliveries_by_event`, one row per event.
        Some(DeliveryStatus::Failed) => (
            "(SELECT DISTINCT f.event_received_at AS received_at, f.event_id AS id
                FROM failed_deliveries f ORDER BY 1 DESC, 2 DESC) c
             JOIN events e ON e.id = c.id",
            "c",
        ),
        Some(DeliveryStatus::Pending | DeliveryStatus::Processing | DeliveryStatus::Retrying) => (
            "(SELECT DISTINCT d.event_id AS id FROM delivery_queue q
                JOIN deliveries d ON d.id = q.delivery_id) c
             JOIN events e ON e.id = c.id",
            "e",
        ),
        _ => ("events e", "e"),
    }
}

pub(crate) fn events_sql(filter: &EventFilter) -> String {
    let (source, key) = event_source(filter.status);
    // A plain EXISTS when the filter is given: behind `$9 IS NULL OR …` PostgreSQL reads every
    // delivery of the subscription on every page.
    let subscription = if filter.subscription_id.is_some() {
        "EXISTS (SELECT 1 FROM deliveries s WHERE s.event_id = e.id AND s.subscription_id = $9)"
    } else {
        "$9::text IS NULL"
    };
    format!(
        "SELECT e.id, e.event_type, e.source, CASE WHEN $1 THEN e.data END AS data,
                e.received_at, {EVENT_STATUS_SQL} AS status
           FROM {source}
          WHERE ($2::timestamptz IS NULL OR ({key}.received_at, {key}.id) < ($2, $3::text))
            AND ($4::text IS NULL OR e.event_type = $4)
            AND ($5::text IS NULL OR starts_with(e.event_type, $5))
            AND ($6::text IS NULL OR e.source = $6)
            AND ($7::timestamptz IS NULL OR {key}.received_at >= $7)
            AND ($8::timestamptz IS NULL OR {key}.received_at < $8)
            AND {subscription}
            AND ($10::text IS NULL OR {EVENT_STATUS_SQL} = $10)
            AND e.tenant_id = $12
          ORDER BY {key}.received_at DESC, {key}.id DESC
          LIMIT $11"
    )
}

/// A page of `tenant`'s events matching `filter`, newest first (by `received_at`, then id), after
/// `cursor`; at most `limit`. Ids in `filter` and `cursor` are the tenant's own (external) ids.
pub async fn events(
    conn: &mut AsyncPgConnection,
    tenant: &TenantId,
    filter: &EventFilter,
    include_data: bool,
    cursor: Option<&EventCursor>,
    limit: i64,
) -> Result<Vec<EventItem>, StoreError> {
    Ok(diesel::sql_query(events_sql(filter))
        .bind::<Bool, _>(include_data)
        .bind::<Nullable<Timestamptz>, _>(cursor.map(|c| c.received_at))
        .bind::<Nullable<Text>, _>(cursor.map(|c| tenant.stored_id(&c.id)))
        .bind::<Nullable<Text>, _>(filter.type_exact.as_deref())
        .bind::<Nullable<Text>, _>(filter.type_prefix.as_deref())
        .bind::<Nullable<Text>, _>(filter.source.as_deref())
        .bind::<Nullable<Timestamptz>, _>(filter.received_after)
        .bind::<Nullable<Timestamptz>, _>(filter.received_before)
        .bind::<Nullable<Text>, _>(
            filter
                .subscription_id
                .as_deref()
                .map(|s| tenant.stored_id(s)),
        )
        .bind::<Nullable<Text>, _>(filter.status.map(DeliveryStatus::as_str))
        .bind::<BigInt, _>(limit)
        .bind::<Text, _>(tenant.as_str())
        .load(conn)
        .await?)
}

/// Which deliveries `GET /deliveries` (and a replay) selects. Every field narrows; an empty
/// `statuses` means any status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryFilter {
    pub statuses: Vec<DeliveryStatus>,
    pub subscription_id: Option<String>,
    pub event_id: Option<String>,
    pub updated_after: Option<DateTime<Utc>>,
    pub updated_before: Option<DateTime<Utc>>,
}

/// One delivery of a list, with its last attempt's outcome.
#[derive(Debug, Clone, PartialEq, QueryableByName)]
pub struct DeliveryItem {
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    #[diesel(sql_type = Text)]
    pub event_id: String,
    #[diesel(sql_type = Text)]
    pub subscription_id: String,
    #[diesel(sql_type = Text)]
    pub status: String,
    #[diesel(sql_type = Integer)]
    pub attempts: i32,
    #[diesel(sql_type = Timestamptz)]
    pub next_attempt_at: DateTime<Utc>,
    #[diesel(sql_type = Nullable<Text>)]
    pub last_error: Option<String>,
    #[diesel(sql_type = Timestamptz)]
    pub created_at: DateTime<Utc>,
    #[diesel(sql_type = Timestamptz)]
    pub updated_at: DateTime<Utc>,
    #[diesel(sql_type = Nullable<Integer>)]
    pub last_status_code: Option<i32>,
    #[diesel(sql_type = Nullable<Text>)]
    pub last_error_code: Option<String>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub last_attempt_at: Option<DateTime<Utc>>,
}

impl DeliveryItem {
    pub fn status(&self) -> Result<DeliveryStatus, StoreError> {
        self.status.parse().map_err(|e| StoreError::Corrupt {
            what: "delivery status",
            reason: format!("{e}"),
        })
    }
}

/// The small table a status filter can start from, when every status it names has one, and
/// the column that orders and bounds a page there (`c.delivery_id`; `d.id` on the history). Paging
/// by the small table's own key keeps PostgreSQL walking it rather than the history.
pub(crate) fn delivery_source(statuses: &[DeliveryStatus]) -> (&'static str, &'static str) {
    use DeliveryStatus::*;
    let unfinished = |s: &DeliveryStatus| matches!(s, Pending | Processing | Retrying);
    if statuses.is_empty() || statuses.iter().any(|s| matches!(s, Delivered | Cancelled)) {
        ("deliveries d", "d.id")
    } else if statuses.iter().all(|s| *s == Failed) {
        (
            "failed_deliveries c JOIN deliveries d ON d.id = c.delivery_id",
            "c.delivery_id",
        )
    } else if statuses.iter().all(unfinished) {
        (
            "delivery_queue c JOIN deliveries d ON d.id = c.delivery_id",
            "c.delivery_id",
        )
    } else {
        (
            "(SELECT delivery_id, subscription_id FROM delivery_queue
              UNION ALL SELECT delivery_id, subscription_id FROM failed_deliveries) c
             JOIN deliveries d ON d.id = c.delivery_id",
            "c.delivery_id",
        )
    }
}

/// The conditions of a [`DeliveryFilter`] on `d`, parameters `$1`–`$5`, and its tenant, `$6`.
pub(crate) const DELIVERY_FILTER_SQL: &str = "($1::text[] IS NULL OR d.status = ANY($1))
            AND dispatch_tenant_of(d.subscription_id) = $6
            AND ($2::text IS NULL OR d.subscription_id = $2)
            AND ($3::text IS NULL OR d.event_id = $3)
            AND ($4::timestamptz IS NULL OR d.updated_at >= $4)
            AND ($5::timestamptz IS NULL OR d.updated_at < $5)";

/// The small tables as rows of (`delivery_id`, `subscription_id`, `status`), when every status
/// asked for lives in one: `delivery_queue` knows a row's status from its flags (`leased`:
/// processing; else `retry`: retrying; else pending), `failed_deliveries` holds failed ones.
fn small_rows(statuses: &[DeliveryStatus]) -> Option<&'static str> {
    use DeliveryStatus::*;
    const QUEUE: &str = "SELECT delivery_id, subscription_id,
                CASE WHEN leased THEN 'processing' WHEN retry THEN 'retrying' ELSE 'pending' END
                    AS status
           FROM delivery_queue";
    const FAILED: &str =
        "SELECT delivery_id, subscription_id, 'failed'::text AS status FROM failed_deliveries";
    const BOTH: &str = "SELECT delivery_id, subscription_id,
                CASE WHEN leased THEN 'processing' WHEN retry THEN 'retrying' ELSE 'pending' END
                    AS status
           FROM delivery_queue
         UNION ALL
         SELECT delivery_id, subscription_id, 'failed'::text FROM failed_deliveries";
    let unfinished = |s: &DeliveryStatus| matches!(s, Pending | Processing | Retrying);
    if statuses.is_empty() || statuses.iter().any(|s| matches!(s, Delivered | Cancelled)) {
        None
    } else if statuses.iter().all(|s| *s == Failed) {
        Some(FAILED)
    } else if statuses.iter().all(unfinished) {
        Some(QUEUE)
    } else {
        Some(BOTH)
    }
}

const DELIVERY_COLUMNS: &str = "d.id, d.event_id, d.subscription_id, d.status, d.attempts,
                d.next_attempt_at, d.last_error, d.created_at, d.updated_at,
                a.status_code AS last_status_code, a.error_code AS last_error_code,
                a.created_at AS last_attempt_at";

const LAST_ATTEMPT: &str = "LEFT JOIN LATERAL (SELECT a.status_code, a.error_code, a.created_at
                                FROM attempts a WHERE a.delivery_id = d.id
                               ORDER BY a.id DESC LIMIT 1) a ON true";

pub(crate) fn deliveries_sql(filter: &DeliveryFilter) -> String {
    let narrow = filter.event_id.is_some()
        || filter.updated_after.is_some()
        || filter.updated_before.is_some();
    if let (Some(rows), false) = (small_rows(&filter.statuses), narrow) {
        // A page of the small table first, by its own key (a fence: PostgreSQL then never walks
        // the history to merge with it), then the deliveries themselves. `$3`–`$5` are NULL here.
        return format!(
            "WITH page AS MATERIALIZED (
                 SELECT c.delivery_id FROM ({rows}) c
                  WHERE c.status = ANY($1) AND ($2::text IS NULL OR c.subscription_id = $2)
                    AND dispatch_tenant_of(c.subscription_id) = $6
                    AND ($7::bigint IS NULL OR c.delivery_id < $7)
                  ORDER BY c.delivery_id DESC
                  LIMIT $8
             )
             SELECT {DELIVERY_COLUMNS}
               FROM page JOIN deliveries d ON d.id = page.delivery_id
               {LAST_ATTEMPT}
              WHERE {DELIVERY_FILTER_SQL}
              ORDER BY d.id DESC"
        );
    }
    let (source, key) = delivery_source(&filter.statuses);
    // The small tables carry the subscription too: filtering there keeps the walk on them.
    let subscription = if key == "d.id" {
        ""
    } else {
        "AND ($2::text IS NULL OR c.subscription_id = $2)"
    };
    format!(
        "SELECT {DELIVERY_COLUMNS}
           FROM {source}
           {LAST_ATTEMPT}
          WHERE {DELIVERY_FILTER_SQL} {subscription}
            AND ($7::bigint IS NULL OR {key} < $7)
          ORDER BY {key} DESC
          LIMIT $8"
    )
}

pub(crate) fn status_texts(statuses: &[DeliveryStatus]) -> Option<Vec<&'static str>> {
    (!statuses.is_empty()).then(|| statuses.iter().map(|s| s.as_str()).collect())
}

/// A page of `tenant`'s deliveries matching `filter` (its ids the tenant's own), newest first
/// (by id), with ids below `cursor`.
pub async fn deliveries(
    conn: &mut AsyncPgConnection,
    tenant: &TenantId,
    filter: &DeliveryFilter,
    cursor: Option<i64>,
    limit: i64,
) -> Result<Vec<DeliveryItem>, StoreError> {
    Ok(diesel::sql_query(deliveries_sql(filter))
        .bind::<Nullable<Array<Text>>, _>(status_texts(&filter.statuses))
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
        .bind::<Nullable<BigInt>, _>(cursor)
        .bind::<BigInt, _>(limit)
        .load(conn)
        .await?)
}

/// `tenant`'s delivery `id` with its last attempt's outcome.
pub async fn delivery(
    conn: &mut AsyncPgConnection,
    tenant: &TenantId,
    id: i64,
) -> Result<Option<DeliveryItem>, StoreError> {
    let rows: Vec<DeliveryItem> = diesel::sql_query(
        "SELECT d.id, d.event_id, d.subscription_id, d.status, d.attempts, d.next_attempt_at,
                d.last_error, d.created_at, d.updated_at,
                a.status_code AS last_status_code, a.error_code AS last_error_code,
                a.created_at AS last_attempt_at
           FROM deliveries d
           LEFT JOIN LATERAL (SELECT a.status_code, a.error_code, a.created_at FROM attempts a
                               WHERE a.delivery_id = d.id ORDER BY a.id DESC LIMIT 1) a ON true
          WHERE d.id = $1 AND dispatch_tenant_of(d.subscription_id) = $2",
    )
    .bind::<BigInt, _>(id)
    .bind::<Text, _>(tenant.as_str())
    .load(conn)
    .await?;
    Ok(rows.into_iter().next())
}

mod attempts;
pub use attempts::{AttemptsOf, attempts};

mod text;

#[cfg(feature = "tools")]
mod plans;
#[cfg(feature = "tools")]
pub use plans::plans;
