//! Ingesting events (with their deliveries) and reading an event, its deliveries and attempts.

use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Jsonb, Nullable, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use dispatch_domain::TenantId;

use crate::StoreError;
use crate::models::{DeliveryRow, EventRow, NewEvent};
use crate::schema::{deliveries, events};

/// What ingesting an event did: one type for every way of ingesting, which differ only in what
/// they return of the stored event (`E`) and of the deliveries created with it (`D`):
/// [`Ingested`] (rows, for the API's answers), [`IngestOutcome`] (the event and a count) and
/// [`BatchOutcome`] (a count only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ingestion<E, D> {
    /// First receipt: the event and its delivery rows were stored.
    Created { event: E, deliveries: D },
    /// The id was already stored (earlier, or by an earlier item of the same group or batch) with
    /// the same content: nothing new was created.
    Duplicate(E),
    /// The id was already stored with different content: nothing was changed.
    Conflict(E),
}

impl<E, D> Ingestion<E, D> {
    /// The same outcome, its deliveries (when created) turned into `f` of them.
    pub fn map_deliveries<T>(self, f: impl FnOnce(D) -> T) -> Ingestion<E, T> {
        match self {
            Self::Created { event, deliveries } => Ingestion::Created {
                event,
                deliveries: f(deliveries),
            },
            Self::Duplicate(event) => Ingestion::Duplicate(event),
            Self::Conflict(event) => Ingestion::Conflict(event),
        }
    }
}

/// [`ingest`]'s outcome: the stored event and how many delivery rows were created.
pub type IngestOutcome = Ingestion<EventRow, i64>;

/// [`ingest_group`]'s outcome for one event: the stored event and its new delivery rows (in
/// creation order).
pub type Ingested = Ingestion<EventRow, Vec<DeliveryRow>>;

/// [`ingest_batch`]'s outcome for one event: how many delivery rows were created.
pub type BatchOutcome = Ingestion<(), i64>;

/// Inserts the event and one pending delivery per active subscription whose patterns select
/// its type (held if the subscription is paused), in one statement (hence one transaction and one round trip). A repeated id creates
/// nothing: the stored event is returned and compared with the new content (its traceparent is
/// not content: the first receipt's is kept).
#[tracing::instrument(name = "db.ingest", skip_all, fields(otel.kind = "client", db.system.name = "postgresql"))]
pub async fn ingest(
    conn: &mut AsyncPgConnection,
    new: &NewEvent,
) -> Result<IngestOutcome, StoreError> {
    let outcome = ingest_group(conn, std::slice::from_ref(new))
        .await?
        .pop()
        .ok_or_else(|| StoreError::Corrupt {
            what: "ingestion",
            reason: format!("{} was neither stored nor found", new.id),
        })?;
    Ok(outcome.map_deliveries(|rows| i64::try_from(rows.len()).unwrap_or(i64::MAX)))
}

/// The columns of one created event, its place in the input, and its deliveries as JSON.
#[derive(QueryableByName)]
struct GroupCreated {
    #[diesel(sql_type = BigInt)]
    idx: i64,
    #[diesel(embed)]
    event: EventRow,
    #[diesel(sql_type = Nullable<Jsonb>)]
    deliveries: Option<serde_json::Value>,
}

/// A delivery row as `to_jsonb` spells it.
#[derive(serde::Deserialize)]
struct DeliveryJson {
    id: i64,
    event_id: String,
    subscription_id: String,
    status: String,
    attempts: i32,
    next_attempt_at: chrono::DateTime<chrono::Utc>,
    last_error: Option<String>,
    created_at: chrono::DateTime<chrono::Utc>,
    updated_at: chrono::DateTime<chrono::Utc>,
}

impl From<DeliveryJson> for DeliveryRow {
    fn from(d: DeliveryJson) -> Self {
        Self {
            id: d.id,
            event_id: d.event_id,
            subscription_id: d.subscription_id,
            status: d.status,
            attempts: d.attempts,
            next_attempt_at: d.next_attempt_at,
            last_error: d.last_error,
            created_at: d.created_at,
            updated_at: d.updated_at,
        }
    }
}

/// The events of a group, with their candidate patterns, as the array parameters `$1`–`$7` of
/// [`INSERT_GROUP`].
struct GroupColumns<'a> {
    /// Stored ids (`TenantId::stored_id`): unique per tenant.
    ids: Vec<String>,
    tenants: Vec<&'a str>,
    types: Vec<&'a str>,
    sources: Vec<&'a str>,
    data: Vec<&'a serde_json::Value>,
    traceparents: Vec<Option<&'a str>>,
    patterns: Vec<String>,
    ordering_keys: Vec<Option<&'a str>>,
}

impl<'a> GroupColumns<'a> {
    fn of(batch: &'a [NewEvent]) -> Self {
        Self {
            ids: batch
                .iter()
                .map(|e| e.tenant.stored_id(e.id.as_str()))
                .collect(),
            tenants: batch.iter().map(|e| e.tenant.as_str()).collect(),
            types: batch.iter().map(|e| e.event_type.as_str()).collect(),
            sources: batch.iter().map(|e| e.source.as_str()).collect(),
            data: batch.iter().map(|e| &e.data).collect(),
            traceparents: batch.iter().map(|e| e.traceparent.as_deref()).collect(),
            // Patterns contain no spaces, so each event's candidate patterns travel as one text.
            patterns: batch
                .iter()
                .map(|e| e.event_type.matching_patterns().join(" "))
                .collect(),
            ordering_keys: batch
                .iter()
                .map(|e| e.ordering_key.as_ref().map(|k| k.as_str()))
                .collect(),
        }
    }
}

/// The common part of group and batch ingestion: the input (`$1`–`$8`) numbered from 1, the
/// first item of each id, the events inserted (in id order, so two groups sharing ids wait for
/// each other instead of deadlocking) and their deliveries. The caller appends its `SELECT`.
const INSERT_GROUP: &str = concat!(
    "WITH input AS (
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::jsonb[],
                              $5::text[], $6::text[], $7::text[], $8::text[])
             WITH ORDINALITY AS i(id, event_type, source, data, traceparent, patterns,
                                  ordering_key, tenant_id, idx)
     ), first AS (
         SELECT DISTINCT ON (id) * FROM input ORDER BY id, idx
     ), ev AS (
         INSERT INTO events (id, event_type, source, data, traceparent, ordering_key, tenant_id)
         SELECT id, event_type, source, data, traceparent, ordering_key, tenant_id
           FROM first ORDER BY id
         ON CONFLICT (id) DO NOTHING
         RETURNING id, event_type, source, data, received_at, traceparent, ordering_key
     ), fan AS (
         SELECT ev.id, f.event_type, f.source, f.data, f.patterns, ev.ordering_key,
                NULL::text AS subject, f.tenant_id
           FROM ev JOIN first f ON f.id = ev.id
     ), dl AS (",
    super::fan_out::fan_out_sql!(),
    "
     )"
);

/// Marks every item not created by [`INSERT_GROUP`] as a duplicate or a conflict, comparing
/// with the stored event in SQL: jsonb equality compares numbers by value (1e17 =
/// 100000000000000000), which a comparison of re-parsed JSON values would not. Needs no
/// transaction: an id the insert skipped is committed by the time the insert returns (a
/// concurrent insert of it was waited for), so this read sees it. With `rows`, the stored event
/// comes back too.
async fn compare_existing(
    conn: &mut AsyncPgConnection,
    columns: &GroupColumns<'_>,
    created_idx: &[i64],
) -> Result<Vec<BatchCompared>, StoreError> {
    Ok(crate::prepared::prepared(
        "SELECT i.idx, e.id, e.event_type, e.source, e.data, e.received_at, e.traceparent,
                e.ordering_key,
                (e.event_type = i.event_type AND e.source = i.source AND e.data = i.data
                 AND e.ordering_key IS NOT DISTINCT FROM i.ordering_key) AS same
           FROM unnest($1::text[], $2::text[], $3::text[], $4::jsonb[], $6::text[])
                WITH ORDINALITY AS i(id, event_type, source, data, ordering_key, idx)
           JOIN events e ON e.id = i.id
          WHERE i.idx <> ALL($5::int8[])",
    )
    .bind::<Array<Text>, _>(&columns.ids)
    .bind::<Array<Text>, _>(&columns.types)
    .bind::<Array<Text>, _>(&columns.sources)
    .bind::<Array<Jsonb>, _>(&columns.data)
    .bind::<Array<BigInt>, _>(created_idx)
    .bind::<Array<Nullable<Text>>, _>(&columns.ordering_keys)
    .load(conn)
    .await?)
}

/// Puts each outcome in its input slot; an item with none is a broken invariant.
fn in_order<T>(slots: Vec<Option<T>>) -> Result<Vec<T>, StoreError> {
    slots
        .into_iter()
        .enumerate()
        .map(|(i, o)| {
            o.ok_or_else(|| StoreError::Corrupt {
                what: "ingestion",
                reason: format!("item {i} was neither stored nor found"),
            })
        })
        .collect()
}

/// The slot of a 1-based `idx` among `len` items.
fn slot(idx: i64, len: usize) -> Option<usize> {
    usize::try_from(idx - 1).ok().filter(|&i| i < len)
}

/// Ingests a group of events, usually concurrent single-event requests committed together:
/// events and all their deliveries in one statement (one round trip and one commit, atomic
/// without an explicit transaction), then — only when some id already existed — one comparison.
/// Returns one outcome per event, in order, with the rows an answer shows. The seed's
/// idempotency holds per event, also between two items of the group (the first one counts).
#[tracing::instrument(name = "db.ingest_group", skip_all, fields(otel.kind = "client", db.system.name = "postgresql", events = batch.len()))]
pub async fn ingest_group(
    conn: &mut AsyncPgConnection,
    batch: &[NewEvent],
) -> Result<Vec<Ingested>, StoreError> {
    if batch.is_empty() {
        return Ok(Vec::new());
    }
    let columns = GroupColumns::of(batch);
    let created: Vec<GroupCreated> = crate::prepared::prepared(format!(
        "{INSERT_GROUP}
         SELECT f.idx, ev.*, d.deliveries
           FROM ev JOIN first f ON f.id = ev.id
           LEFT JOIN (SELECT event_id, jsonb_agg(to_jsonb(dl) ORDER BY dl.id) AS deliveries
                        FROM dl GROUP BY event_id) d ON d.event_id = ev.id"
    ))
    .bind::<Array<Text>, _>(&columns.ids)
    .bind::<Array<Text>, _>(&columns.types)
    .bind::<Array<Text>, _>(&columns.sources)
    .bind::<Array<Jsonb>, _>(&columns.data)
    .bind::<Array<Nullable<Text>>, _>(&columns.traceparents)
    .bind::<Array<Text>, _>(&columns.patterns)
    .bind::<Array<Nullable<Text>>, _>(&columns.ordering_keys)
    .bind::<Array<Text>, _>(&columns.tenants)
    .load(conn)
    .await?;
    let mut outcomes: Vec<Option<Ingested>> = vec![None; batch.len()];
    let created_idx: Vec<i64> = created.iter().map(|r| r.idx).collect();
    for row in created {
        let deliveries: Vec<DeliveryJson> = match row.deliveries {
            None => Vec::new(),
            Some(json) => serde_json::from_value(json).map_err(|e| StoreError::Corrupt {
                what: "delivery",
                reason: e.to_string(),
            })?,
        };
        if let Some(i) = slot(row.idx, batch.len()) {
            outcomes[i] = Some(Ingested::Created {
                event: row.event,
                deliveries: deliveries.into_iter().map(DeliveryRow::from).collect(),
            });
        }
    }
    if created_idx.len() < batch.len() {
        for row in compare_existing(conn, &columns, &created_idx).await? {
            if let Some(i) = slot(row.idx, batch.len()) {
                outcomes[i] = Some(if row.same {
                    Ingested::Duplicate(row.event)
                } else {
                    Ingested::Conflict(row.event)
                });
            }
        }
    }
    in_order(outcomes)
}

/// `tenant`'s event `id`.
#[tracing::instrument(name = "db.find_event", skip_all, fields(otel.kind = "client", db.system.name = "postgresql"))]
pub async fn find(
    conn: &mut AsyncPgConnection,
    tenant: &TenantId,
    id: &str,
) -> Result<Option<EventRow>, StoreError> {
    Ok(events::table
        .find(tenant.stored_id(id))
        .select(EventRow::as_select())
        .first(conn)
        .await
        .optional()?)
}

/// The deliveries of `tenant`'s event `event_id` in the order they were created.
#[tracing::instrument(name = "db.deliveries_of", skip_all, fields(otel.kind = "client", db.system.name = "postgresql"))]
pub async fn deliveries_of(
    conn: &mut AsyncPgConnection,
    tenant: &TenantId,
    event_id: &str,
) -> Result<Vec<DeliveryRow>, StoreError> {
    Ok(deliveries::table
        .filter(deliveries::event_id.eq(tenant.stored_id(event_id)))
        .order(deliveries::id)
        .select(DeliveryRow::as_select())
        .load(conn)
        .await?)
}

#[derive(QueryableByName)]
struct BatchCreated {
    #[diesel(sql_type = BigInt)]
    idx: i64,
    #[diesel(sql_type = BigInt)]
    deliveries: i64,
}

#[derive(QueryableByName)]
struct BatchCompared {
    #[diesel(sql_type = BigInt)]
    idx: i64,
    #[diesel(embed)]
    event: EventRow,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    same: bool,
}

/// Ingests the events of `POST /events/batch` like [`ingest_group`], answering counts rather than
/// rows: one statement stores every event and delivery atomically, then one comparison of
/// every event that already existed. Returns one outcome per event, in order.
#[tracing::instrument(name = "db.ingest_batch", skip_all, fields(otel.kind = "client", db.system.name = "postgresql", events = batch.len()))]
pub async fn ingest_batch(
    conn: &mut AsyncPgConnection,
    batch: &[NewEvent],
) -> Result<Vec<BatchOutcome>, StoreError> {
    if batch.is_empty() {
        return Ok(Vec::new());
    }
    let columns = GroupColumns::of(batch);
    let created: Vec<BatchCreated> = crate::prepared::prepared(format!(
        "{INSERT_GROUP}
         SELECT f.idx, count(dl.event_id) AS deliveries
           FROM ev JOIN first f ON f.id = ev.id LEFT JOIN dl ON dl.event_id = ev.id
          GROUP BY f.idx"
    ))
    .bind::<Array<Text>, _>(&columns.ids)
    .bind::<Array<Text>, _>(&columns.types)
    .bind::<Array<Text>, _>(&columns.sources)
    .bind::<Array<Jsonb>, _>(&columns.data)
    .bind::<Array<Nullable<Text>>, _>(&columns.traceparents)
    .bind::<Array<Text>, _>(&columns.patterns)
    .bind::<Array<Nullable<Text>>, _>(&columns.ordering_keys)
    .bind::<Array<Text>, _>(&columns.tenants)
    .load(conn)
    .await?;
    let mut outcomes: Vec<Option<BatchOutcome>> = vec![None; batch.len()];
    for row in &created {
        if let Some(i) = slot(row.idx, batch.len()) {
            outcomes[i] = Some(BatchOutcome::Created {
                event: (),
                deliveries: row.deliveries,
            });
        }
    }
    let created_idx: Vec<i64> = created.iter().map(|r| r.idx).collect();
    if created_idx.len() < batch.len() {
        for row in compare_existing(conn, &columns, &created_idx).await? {
            if let Some(i) = slot(row.idx, batch.len()) {
                outcomes[i] = Some(if row.same {
                    BatchOutcome::Duplicate(())
                } else {
                    BatchOutcome::Conflict(())
                });
            }
        }
    }
    in_order(outcomes)
}
