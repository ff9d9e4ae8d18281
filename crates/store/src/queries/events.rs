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
