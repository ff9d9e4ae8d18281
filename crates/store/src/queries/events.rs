//! Ingesting events (with their deliveries) and reading an event, its deliveries and attempts.

use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Jsonb, Nullable, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::StoreError;
use crate::models::{DeliveryRow, EventRow, NewEvent};
use crate::schema::{deliveries, events};

/// What ingesting an event did.
#[derive(Debug, Clone, PartialEq)]
pub enum IngestOutcome {
    /// First receipt: the event and `deliveries` delivery rows were stored.
    Created { event: EventRow, deliveries: i64 },
    /// The id was already stored with the same content: nothing new was created.
    Duplicate(EventRow),
    /// The id was already stored with different content: nothing was changed.
    Conflict(EventRow),
}

#[derive(QueryableByName)]
struct InsertedEvent {
    #[diesel(embed)]
    event: EventRow,
    #[diesel(sql_type = BigInt)]
    deliveries: i64,
}

/// Inserts the event and one pending delivery per active subscription whose patterns select
/// its type, in one statement (hence one transaction and one round trip). A repeated id creates
/// nothing: the stored event is returned and compared with the new content (its traceparent is
/// not content: the first receipt's is kept).
#[tracing::instrument(name = "db.ingest", skip_all, fields(otel.kind = "client", db.system.name = "postgresql"))]
pub async fn ingest(
    conn: &mut AsyncPgConnection,
    new: &NewEvent,
) -> Result<IngestOutcome, StoreError> {
    let inserted: Option<InsertedEvent> = diesel::sql_query(
        "WITH ev AS (
             INSERT INTO events (id, event_type, source, data, traceparent)
             VALUES ($1, $2, $3, $4, $6)
             ON CONFLICT (id) DO NOTHING
             RETURNING id, event_type, source, data, received_at, traceparent
         ), dl AS (
             INSERT INTO deliveries (event_id, subscription_id)
             SELECT ev.id, s.id
               FROM ev, subscriptions s
              WHERE s.deleted_at IS NULL AND s.enabled AND s.event_types && $5
             -- The key-share lock the foreign key takes anyway, taken while choosing: a
             -- concurrent delete (which locks the row FOR UPDATE) either waits for this
             -- ingestion and then cancels its deliveries, or commits first and is seen here.
             FOR KEY SHARE OF s
             RETURNING 1
         )
         SELECT ev.*, (SELECT count(*) FROM dl) AS deliveries FROM ev",
    )
    .bind::<Text, _>(new.id.as_str())
    .bind::<Text, _>(new.event_type.as_str())
    .bind::<Text, _>(new.source.as_str())
    .bind::<Jsonb, _>(&new.data)
    .bind::<Array<Text>, _>(new.event_type.matching_patterns())
    .bind::<Nullable<Text>, _>(new.traceparent.as_deref())
    .get_result(conn)
    .await
    .optional()?;

    if let Some(row) = inserted {
        return Ok(IngestOutcome::Created {
            deliveries: row.deliveries,
            event: row.event,
        });
    }
    // Compared in SQL: jsonb equality compares numbers by value (1e17 = 100000000000000000),
    // which a comparison of re-parsed JSON values would not.
    let existing: StoredEvent = diesel::sql_query(
        "SELECT id, event_type, source, data, received_at, traceparent,
                (event_type = $2 AND source = $3 AND data = $4) AS same
           FROM events WHERE id = $1",
    )
    .bind::<Text, _>(new.id.as_str())
    .bind::<Text, _>(new.event_type.as_str())
    .bind::<Text, _>(new.source.as_str())
    .bind::<Jsonb, _>(&new.data)
    .get_result(conn)
    .await
    .optional()?
    .ok_or_else(|| StoreError::Corrupt {
        what: "event",
        reason: format!("{} conflicted on insert but cannot be read", new.id),
    })?;
    Ok(if existing.same {
        IngestOutcome::Duplicate(existing.event)
    } else {
        IngestOutcome::Conflict(existing.event)
    })
}

#[derive(QueryableByName)]
struct StoredEvent {
    #[diesel(embed)]
    event: EventRow,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    same: bool,
}

#[tracing::instrument(name = "db.find_event", skip_all, fields(otel.kind = "client", db.system.name = "postgresql"))]
pub async fn find(conn: &mut AsyncPgConnection, id: &str) -> Result<Option<EventRow>, StoreError> {
    Ok(events::table
        .find(id)
        .select(EventRow::as_select())
        .first(conn)
        .await
        .optional()?)
}

/// The event's deliveries in the order they were created.
#[tracing::instrument(name = "db.deliveries_of", skip_all, fields(otel.kind = "client", db.system.name = "postgresql"))]
pub async fn deliveries_of(
    conn: &mut AsyncPgConnection,
    event_id: &str,
) -> Result<Vec<DeliveryRow>, StoreError> {
    Ok(deliveries::table
        .filter(deliveries::event_id.eq(event_id))
        .order(deliveries::id)
        .select(DeliveryRow::as_select())
        .load(conn)
        .await?)
}

/// What ingesting one event of a batch did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchOutcome {
    /// First receipt: stored with `deliveries` delivery rows.
    Created { deliveries: i64 },
    /// Already stored with the same content (earlier, or earlier in this batch).
    Duplicate,
    /// Already stored with different content.
    Conflict,
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
    #[diesel(sql_type = diesel::sql_types::Bool)]
    same: bool,
}

/// Ingests many events in one transaction and two statements, whatever their number: the
/// events and all their deliveries in one multi-row statement, then one comparison of every
/// event that already existed. The seed's idempotency holds per event, also between two items
/// of the same batch (the first one counts). Returns one outcome per event, in order.
#[tracing::instrument(name = "db.ingest_batch", skip_all, fields(otel.kind = "client", db.system.name = "postgresql", events = batch.len()))]
pub async fn ingest_batch(
    conn: &mut AsyncPgConnection,
    batch: &[NewEvent],
) -> Result<Vec<BatchOutcome>, StoreError> {
    use diesel_async::AsyncConnection;
    if batch.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<&str> = batch.iter().map(|e| e.id.as_str()).collect();
    let types: Vec<&str> = batch.iter().map(|e| e.event_type.as_str()).collect();
    let sources: Vec<&str> = batch.iter().map(|e| e.source.as_str()).collect();
    let data: Vec<&serde_json::Value> = batch.iter().map(|e| &e.data).collect();
    let traceparents: Vec<Option<&str>> = batch.iter().map(|e| e.traceparent.as_deref()).collect();
    // Patterns contain no spaces, so each event's candidate patterns travel as one text.
    let patterns: Vec<String> = batch
        .iter()
        .map(|e| e.event_type.matching_patterns().join(" "))
        .collect();
    conn.transaction::<_, StoreError, _>(async move |conn| {
        let created: Vec<BatchCreated> = diesel::sql_query(
            "WITH input AS (
                 SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::jsonb[],
                                      $5::text[], $6::text[])
                     WITH ORDINALITY AS i(id, event_type, source, data, traceparent, patterns, idx)
             ), first AS (
                 SELECT DISTINCT ON (id) * FROM input ORDER BY id, idx
             ), ev AS (
                 INSERT INTO events (id, event_type, source, data, traceparent)
                 SELECT id, event_type, source, data, traceparent FROM first ORDER BY idx
                 ON CONFLICT (id) DO NOTHING
                 RETURNING id
             ), dl AS (
                 INSERT INTO deliveries (event_id, subscription_id)
                 SELECT ev.id, s.id
                   FROM ev JOIN first f ON f.id = ev.id, subscriptions s
                  WHERE s.deleted_at IS NULL AND s.enabled
                    AND s.event_types && string_to_array(f.patterns, ' ')
                 -- As in single ingestion: a concurrent delete waits or is seen.
                 FOR KEY SHARE OF s
                 RETURNING event_id
             )
             SELECT f.idx, count(dl.event_id) AS deliveries
               FROM ev JOIN first f ON f.id = ev.id LEFT JOIN dl ON dl.event_id = ev.id
              GROUP BY f.idx",
        )
        .bind::<Array<Text>, _>(&ids)
        .bind::<Array<Text>, _>(&types)
        .bind::<Array<Text>, _>(&sources)
        .bind::<Array<Jsonb>, _>(&data)
        .bind::<Array<Nullable<Text>>, _>(&traceparents)
        .bind::<Array<Text>, _>(&patterns)
        .load(conn)
        .await?;
        let mut outcomes: Vec<Option<BatchOutcome>> = vec![None; ids.len()];
        for row in &created {
            if let Some(slot) = usize::try_from(row.idx - 1)
                .ok()
                .and_then(|i| outcomes.get_mut(i))
            {
                *slot = Some(BatchOutcome::Created {
                    deliveries: row.deliveries,
                });
            }
        }
        let created_idx: Vec<i64> = created.iter().map(|r| r.idx).collect();
        // Everything not created now already exists (or was created by an earlier item):
        // compare in SQL, as single ingestion does.
        let compared: Vec<BatchCompared> = diesel::sql_query(
            "SELECT i.idx, (e.event_type = i.event_type AND e.source = i.source
                            AND e.data = i.data) AS same
               FROM unnest($1::text[], $2::text[], $3::text[], $4::jsonb[])
                    WITH ORDINALITY AS i(id, event_type, source, data, idx)
               JOIN events e ON e.id = i.id
              WHERE i.idx <> ALL($5::int8[])",
        )
        .bind::<Array<Text>, _>(&ids)
        .bind::<Array<Text>, _>(&types)
        .bind::<Array<Text>, _>(&sources)
        .bind::<Array<Jsonb>, _>(&data)
        .bind::<Array<BigInt>, _>(&created_idx)
        .load(conn)
        .await?;
        for row in compared {
            if let Some(slot) = usize::try_from(row.idx - 1)
                .ok()
                .and_then(|i| outcomes.get_mut(i))
            {
                *slot = Some(if row.same {
                    BatchOutcome::Duplicate
                } else {
                    BatchOutcome::Conflict
                });
            }
        }
        outcomes
            .into_iter()
            .enumerate()
            .map(|(i, o)| {
                o.ok_or_else(|| StoreError::Corrupt {
                    what: "batch ingestion",
                    reason: format!("item {i} was neither stored nor found"),
                })
            })
            .collect()
    })
    .await
}
