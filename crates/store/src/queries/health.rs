//! Readiness: can we reach the database, and does it have every migration?

use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::{StoreError, migrations};

/// Whether the database answers and has every embedded migration applied.
pub async fn check_ready(conn: &mut AsyncPgConnection) -> Result<bool, StoreError> {
    crate::prepared::prepared("SELECT 1").execute(conn).await?;
    migrations::is_up_to_date(conn).await
}
