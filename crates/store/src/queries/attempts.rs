//! Recording delivery attempts and listing an event's attempts.

use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::StoreError;
use crate::models::{AttemptRow, NewAttempt};
use crate::schema::attempts;

/// Stores attempts (one multi-row INSERT however many there are).
pub async fn record(conn: &mut AsyncPgConnection, new: &[NewAttempt]) -> Result<(), StoreError> {
    if new.is_empty() {
        return Ok(());
    }
    diesel::insert_into(attempts::table)
        .values(new)
        .execute(conn)
        .await?;
    Ok(())
}

/// An event's attempts across all its deliveries, oldest first.
pub async fn of_event(
    conn: &mut AsyncPgConnection,
    event_id: &str,
) -> Result<Vec<AttemptRow>, StoreError> {
    Ok(attempts::table
        .filter(attempts::event_id.eq(event_id))
        .order(attempts::id)
        .select(AttemptRow::as_select())
        .load(conn)
        .await?)
}
