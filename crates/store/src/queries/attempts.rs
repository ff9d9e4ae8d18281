//! Recording delivery attempts; listing an event's attempts for tests (behind the `tools` feature).

use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::StoreError;
use crate::models::NewAttempt;
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
#[cfg(feature = "tools")]
pub async fn of_event(
    conn: &mut AsyncPgConnection,
    event_id: &str,
) -> Result<Vec<crate::models::AttemptRow>, StoreError> {
    use crate::models::AttemptRow;
    use diesel::{ExpressionMethods, QueryDsl, SelectableHelper};
    Ok(attempts::table
        .filter(attempts::event_id.eq(event_id))
        .order(attempts::id)
        .select(AttemptRow::as_select())
        .load(conn)
        .await?)
}
