//! The registry of live workers: each one reports in regularly, and learns how many share the
//! fleet-wide rate limits with it.

use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::StoreError;

#[derive(QueryableByName)]
struct Live {
    #[diesel(sql_type = BigInt)]
    live: i64,
}

/// Records that `worker` is alive and returns how many workers are (itself included): those
/// seen within `alive_for_secs`. Rows of workers gone for an hour are removed on the way.
pub async fn heartbeat(
    conn: &mut AsyncPgConnection,
    worker: &str,
    alive_for_secs: i64,
) -> Result<i64, StoreError> {
    let row: Live = crate::prepared::prepared(
        "WITH up AS (
             INSERT INTO workers (id, seen_at) VALUES ($1, now())
             ON CONFLICT (id) DO UPDATE SET seen_at = now()
         ), gone AS (
             DELETE FROM workers WHERE seen_at < now() - interval '1 hour' AND id <> $1
         )
         SELECT count(*) + 1 AS live FROM workers
          WHERE id <> $1 AND seen_at > now() - make_interval(secs => $2)",
    )
    .bind::<Text, _>(worker)
    .bind::<BigInt, _>(alive_for_secs)
    .get_result(conn)
    .await?;
    Ok(row.live)
}

/// Removes `worker` from the registry (on graceful shutdown).
pub async fn leave(conn: &mut AsyncPgConnection, worker: &str) -> Result<(), StoreError> {
    crate::prepared::prepared("DELETE FROM workers WHERE id = $1")
        .bind::<Text, _>(worker)
        .execute(conn)
        .await?;
    Ok(())
}

/// How many workers reported in within `alive_for_secs`.
pub async fn alive(conn: &mut AsyncPgConnection, alive_for_secs: i64) -> Result<i64, StoreError> {
    let row: Live = diesel::sql_query(
        "SELECT count(*) AS live FROM workers WHERE seen_at > now() - make_interval(secs => $1)",
    )
    .bind::<BigInt, _>(alive_for_secs)
    .get_result(conn)
    .await?;
    Ok(row.live)
}
