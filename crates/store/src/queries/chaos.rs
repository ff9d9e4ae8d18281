//! The fault-injection suite's queries, behind `cargo xtask chaos`: where every delivery of a
//! throw-away database ended up, attempts by failure code, whether a worker is listening, and
//! WAL recycled ahead for the disk-full scenario.
//! Never used by the services.

use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Integer, Nullable, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::StoreError;

/// One delivery as the database sees it after a scenario.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct DeliveryState {
    #[diesel(sql_type = Text)]
    pub event_id: String,
    #[diesel(sql_type = Text)]
    pub subscription_id: String,
    #[diesel(sql_type = Text)]
    pub status: String,
    /// The delivery's attempt counter.
    #[diesel(sql_type = Integer)]
    pub attempts: i32,
    /// Attempt rows recorded for it.
    #[diesel(sql_type = BigInt)]
    pub recorded_attempts: i64,
    /// Of those, answered 2xx.
    #[diesel(sql_type = BigInt)]
    pub successes: i64,
}

/// Every delivery with its status and recorded attempts.
pub async fn delivery_states(
    conn: &mut AsyncPgConnection,
) -> Result<Vec<DeliveryState>, StoreError> {
    Ok(diesel::sql_query(
        "SELECT d.event_id, d.subscription_id, d.status, d.attempts,
                count(a.id) AS recorded_attempts,
                count(a.id) FILTER (WHERE a.status_code BETWEEN 200 AND 299) AS successes
           FROM deliveries d LEFT JOIN attempts a ON a.delivery_id = d.id
          GROUP BY d.id",
    )
    .load(conn)
    .await?)
}

/// Attempts recorded per failure code (`None`: the attempt succeeded).
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct FailureCount {
    #[diesel(sql_type = Nullable<Text>)]
    pub error_code: Option<String>,
    #[diesel(sql_type = BigInt)]
    pub attempts: i64,
}

pub async fn attempts_by_failure(
    conn: &mut AsyncPgConnection,
) -> Result<Vec<FailureCount>, StoreError> {
    Ok(diesel::sql_query(
        "SELECT error_code, count(*) AS attempts FROM attempts
          GROUP BY error_code ORDER BY error_code NULLS FIRST",
    )
    .load(conn)
    .await?)
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// Backends of the current database whose last statement was a LISTEN: the workers' wake-up
/// connections.
pub async fn listening_backends(conn: &mut AsyncPgConnection) -> Result<i64, StoreError> {
    let row: Count = diesel::sql_query(
        "SELECT count(*) AS n FROM pg_stat_activity
          WHERE datname = current_database() AND query ILIKE 'LISTEN%'
            AND pid <> pg_backend_pid()",
    )
    .get_result(conn)
    .await?;
    Ok(row.n)
}

/// Writes and frees about 25 MiB (a table created and dropped), then switches the WAL file and
/// checkpoints twice, so the server holds WAL segments recycled ahead of need: on a disk about to
/// fill, the tables then run out of room (`53100 could not extend file`) before the WAL does
/// (a PANIC). Used by the disk-full scenario on its own cluster.
pub async fn recycle_wal(conn: &mut AsyncPgConnection) -> Result<(), StoreError> {
    use diesel_async::SimpleAsyncConnection;
    conn.batch_execute(
        "CREATE TABLE chaos_wal_filler AS \
           SELECT g, repeat('x', 200) AS pad FROM generate_series(1, 100000) g; \
         DROP TABLE chaos_wal_filler; \
         SELECT pg_switch_wal(); \
         CHECKPOINT; \
         CHECKPOINT;",
    )
    .await?;
    Ok(())
}
