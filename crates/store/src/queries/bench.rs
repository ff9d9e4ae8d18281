//! The benchmark's queries, behind `cargo xtask bench`: the "ceiling" table (durable single-row
//! inserts by `pgbench`, the yardstick every result is compared with), seeding subscriptions, due
//! deliveries and finished history in bulk, autovacuum switches and tuple counts, and counting
//! what was delivered. Never used by the services; meant for a
//! throw-away database created for one benchmark run.

use diesel::QueryableByName;
use diesel::sql_types::{Array, BigInt, Bool, Double, Integer, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::StoreError;

pub mod list;
mod seed;
pub mod statements;

pub use seed::{
    BacklogSeed, HistorySeed, SubscriptionSeed, seed_backlog, seed_history, seed_subscriptions,
    set_settings,
};

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

// ---------------------------------------------------------------------------------------------
// Ceiling
// ---------------------------------------------------------------------------------------------

/// Creates `bench_ceiling`, a scratch table shaped like `events` (a text key, a type, a source, a
/// small `jsonb` document, a receive time), logged like any other table so that its inserts are
/// as durable as the events'. `cargo xtask bench` points `pgbench` at it to measure the ceiling.
pub async fn create_ceiling_table(conn: &mut AsyncPgConnection) -> Result<(), StoreError> {
    diesel::sql_query(
        "CREATE TABLE IF NOT EXISTS bench_ceiling (
             id          text        PRIMARY KEY,
             event_type  text        NOT NULL,
             source      text        NOT NULL,
             data        jsonb       NOT NULL,
             received_at timestamptz NOT NULL DEFAULT now()
         )",
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// One single-row insert, in its own (autocommit) transaction: the statement the ceiling's
/// `pgbench` script repeats (see [`CEILING_PGBENCH_SCRIPT`]). `value` is JSON text.
pub async fn ceiling_insert(
    conn: &mut AsyncPgConnection,
    key: &str,
    value: &str,
) -> Result<(), StoreError> {
    diesel::sql_query(
        "INSERT INTO bench_ceiling (id, event_type, source, data)
         VALUES ($1, 'bench.ceiling', 'bench', $2::jsonb)",
    )
    .bind::<Text, _>(key)
    .bind::<Text, _>(value)
    .execute(conn)
    .await?;
    Ok(())
}

/// The `pgbench` script of the ceiling: one durable single-row INSERT of a small event-shaped row
/// per transaction. The key is random (a text primary key, like an event id), the document
/// about as large as a benchmark event's `data`. Works with `-M simple` and `-M prepared`.
pub const CEILING_PGBENCH_SCRIPT: &str = "\\set seq random(1, 1000000000)\n\
INSERT INTO bench_ceiling (id, event_type, source, data) VALUES (gen_random_uuid()::text, \
'bench.ceiling', 'bench', jsonb_build_object('seq', :seq::bigint, 'sent_at_ns', \
'1764412345678901234'));\n";

pub async fn drop_ceiling_table(conn: &mut AsyncPgConnection) -> Result<(), StoreError> {
    diesel::sql_query("DROP TABLE IF EXISTS bench_ceiling")
        .execute(conn)
        .await?;
    Ok(())
}

/// `VACUUM ANALYZE` of the whole database (outside any transaction).
pub async fn vacuum_analyze(conn: &mut AsyncPgConnection) -> Result<(), StoreError> {
    diesel::sql_query("VACUUM ANALYZE").execute(conn).await?;
    Ok(())
}

/// The hot tables: where deliveries are queued, claimed and recorded.
pub const HOT_TABLES: [&str; 4] = ["events", "deliveries", "delivery_queue", "attempts"];

#[derive(QueryableByName)]
struct TableName {
    #[diesel(sql_type = Text)]
    name: String,
}

/// Which of [`HOT_TABLES`] exist in this database.
async fn hot_tables(conn: &mut AsyncPgConnection) -> Result<Vec<String>, StoreError> {
    let rows: Vec<TableName> = diesel::sql_query(
        "SELECT t AS name FROM unnest($1::text[]) AS t WHERE to_regclass(t) IS NOT NULL",
    )
    .bind::<Array<Text>, _>(&HOT_TABLES[..])
    .load(conn)
    .await?;
    Ok(rows.into_iter().map(|r| r.name).collect())
}

/// Turns autovacuum (and auto-analyze) off for the hot tables of this database
/// (`autovacuum_enabled = false`, for their TOAST tables too); returns the tables changed.
pub async fn disable_autovacuum(conn: &mut AsyncPgConnection) -> Result<Vec<String>, StoreError> {
    let tables = hot_tables(conn).await?;
    for table in &tables {
        // The names come from the fixed list above, never from input.
        diesel::sql_query(format!(
            "ALTER TABLE {table} SET (autovacuum_enabled = false, \
             toast.autovacuum_enabled = false)"
        ))
        .execute(conn)
        .await?;
    }
    Ok(tables)
}

/// Dead and live tuples of one table, as the statistics collector last published them.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct TableTuples {
    #[diesel(sql_type = Text)]
    pub name: String,
    #[diesel(sql_type = BigInt)]
    pub live: i64,
    #[diesel(sql_type = BigInt)]
    pub dead: i64,
    #[diesel(sql_type = BigInt)]
    pub autovacuums: i64,
}

/// Live and dead tuples of the hot tables that exist (`pg_stat_user_tables`).
pub async fn hot_table_tuples(
    conn: &mut AsyncPgConnection,
) -> Result<Vec<TableTuples>, StoreError> {
    Ok(diesel::sql_query(
        "SELECT relname::text AS name, n_live_tup AS live, n_dead_tup AS dead,
                autovacuum_count AS autovacuums
           FROM pg_stat_user_tables
          WHERE relname = ANY($1::text[])
          ORDER BY array_position($1::text[], relname::text)",
    )
    .bind::<Array<Text>, _>(&HOT_TABLES[..])
    .load(conn)
    .await?)
}

// ---------------------------------------------------------------------------------------------
// Counting
// ---------------------------------------------------------------------------------------------

/// Where the benchmark's deliveries ended up, as the database sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryTally {
    /// Deliveries by status.
    pub pending: i64,
    pub processing: i64,
    pub retrying: i64,
    pub delivered: i64,
    pub failed: i64,
    pub cancelled: i64,
    /// Attempt rows recorded in all.
    pub attempts: i64,
    /// Deliveries with more than one successful (2xx) attempt recorded: a receiver got them
    /// twice and the store knows it.
    pub delivered_twice: i64,
}

#[derive(QueryableByName)]
struct TallyRow {
    #[diesel(sql_type = BigInt)]
    pending: i64,
    #[diesel(sql_type = BigInt)]
    processing: i64,
    #[diesel(sql_type = BigInt)]
    retrying: i64,
    #[diesel(sql_type = BigInt)]
    delivered: i64,
    #[diesel(sql_type = BigInt)]
    failed: i64,
    #[diesel(sql_type = BigInt)]
    cancelled: i64,
    #[diesel(sql_type = BigInt)]
    attempts: i64,
    #[diesel(sql_type = BigInt)]
    delivered_twice: i64,
}

pub async fn delivery_tally(conn: &mut AsyncPgConnection) -> Result<DeliveryTally, StoreError> {
    let row: TallyRow = diesel::sql_query(
        "SELECT count(*) FILTER (WHERE status = 'pending') AS pending,
                count(*) FILTER (WHERE status = 'processing') AS processing,
                count(*) FILTER (WHERE status = 'retrying') AS retrying,
                count(*) FILTER (WHERE status = 'delivered') AS delivered,
                count(*) FILTER (WHERE status = 'failed') AS failed,
                count(*) FILTER (WHERE status = 'cancelled') AS cancelled,
                (SELECT count(*) FROM attempts) AS attempts,
                (SELECT count(*) FROM (
                     SELECT delivery_id FROM attempts
                      WHERE status_code BETWEEN 200 AND 299
                      GROUP BY delivery_id HAVING count(*) > 1) AS twice) AS delivered_twice
           FROM deliveries",
    )
    .get_result(conn)
    .await?;
    Ok(DeliveryTally {
        pending: row.pending,
        processing: row.processing,
        retrying: row.retrying,
        delivered: row.delivered,
        failed: row.failed,
        cancelled: row.cancelled,
        attempts: row.attempts,
        delivered_twice: row.delivered_twice,
    })
}

/// How many deliveries are `delivered` (cheap enough to poll while a benchmark drains).
pub async fn delivered_count(conn: &mut AsyncPgConnection) -> Result<i64, StoreError> {
    let row: Count =
        diesel::sql_query("SELECT count(*) AS n FROM deliveries WHERE status = 'delivered'")
            .get_result(conn)
            .await?;
    Ok(row.n)
}

// ---------------------------------------------------------------------------------------------
// The server
// ---------------------------------------------------------------------------------------------

/// What the report says about the PostgreSQL server measured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerFacts {
    /// `server_version`, e.g. `15.20 (Debian 15.20-0+deb12u1)`.
    pub version: String,
    pub autovacuum: String,
    pub fsync: String,
    pub synchronous_commit: String,
    pub full_page_writes: String,
    /// e.g. `128MB`.
    pub shared_buffers: String,
    pub max_connections: i64,
}

#[derive(QueryableByName)]
struct FactsRow {
    #[diesel(sql_type = Text)]
    version: String,
    #[diesel(sql_type = Text)]
    autovacuum: String,
    #[diesel(sql_type = Text)]
    fsync: String,
    #[diesel(sql_type = Text)]
    synchronous_commit: String,
    #[diesel(sql_type = Text)]
    full_page_writes: String,
    #[diesel(sql_type = Text)]
    shared_buffers: String,
    #[diesel(sql_type = BigInt)]
    max_connections: i64,
}

/// The server's version, the settings that decide how durable (and how fast) a commit is, and
/// whether autovacuum runs.
pub async fn server_facts(conn: &mut AsyncPgConnection) -> Result<ServerFacts, StoreError> {
    let row: FactsRow = diesel::sql_query(
        "SELECT current_setting('server_version') AS version,
                current_setting('autovacuum') AS autovacuum,
                current_setting('fsync') AS fsync,
                current_setting('synchronous_commit') AS synchronous_commit,
                current_setting('full_page_writes') AS full_page_writes,
                current_setting('shared_buffers') AS shared_buffers,
                current_setting('max_connections')::bigint AS max_connections",
    )
    .get_result(conn)
    .await?;
    Ok(ServerFacts {
        version: row.version,
        autovacuum: row.autovacuum,
        fsync: row.fsync,
        synchronous_commit: row.synchronous_commit,
        full_page_writes: row.full_page_writes,
        shared_buffers: row.shared_buffers,
        max_connections: row.max_connections,
    })
}

#[derive(QueryableByName)]
struct Pid {
    #[diesel(sql_type = Integer)]
    pid: i32,
}

/// Process ids of the clients' backends connected to the current database, this connection's
/// own excepted (to read their CPU time from `/proc` when the server runs on this machine). An
/// autovacuum worker is not a client: counted only when a snapshot happened to catch one
/// running, it would add its CPU to some runs and not to others.
pub async fn backend_pids(conn: &mut AsyncPgConnection) -> Result<Vec<i32>, StoreError> {
    let rows: Vec<Pid> = diesel::sql_query(
        "SELECT pid FROM pg_stat_activity
          WHERE datname = current_database() AND pid <> pg_backend_pid()
            AND backend_type = 'client backend'",
    )
    .load(conn)
    .await?;
    Ok(rows.into_iter().map(|r| r.pid).collect())
}

/// The current database's cumulative activity counters (`pg_stat_database`). The server
/// publishes a backend's counts when its transactions end (at most about once a second while it
/// stays busy, and when it disconnects), so compare readings taken after the clients are gone.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, QueryableByName)]
pub struct Activity {
    #[diesel(sql_type = BigInt)]
    pub commits: i64,
    #[diesel(sql_type = BigInt)]
    pub rollbacks: i64,
    #[diesel(sql_type = BigInt)]
    pub rows_returned: i64,
    #[diesel(sql_type = BigInt)]
    pub rows_fetched: i64,
    #[diesel(sql_type = BigInt)]
    pub rows_inserted: i64,
    #[diesel(sql_type = BigInt)]
    pub rows_updated: i64,
    #[diesel(sql_type = BigInt)]
    pub rows_deleted: i64,
    #[diesel(sql_type = BigInt)]
    pub blocks_hit: i64,
    #[diesel(sql_type = BigInt)]
    pub blocks_read: i64,
}

impl Activity {
    /// The counts between `earlier` and `self`.
    pub fn since(&self, earlier: &Activity) -> Activity {
        Activity {
            commits: self.commits - earlier.commits,
            rollbacks: self.rollbacks - earlier.rollbacks,
            rows_returned: self.rows_returned - earlier.rows_returned,
            rows_fetched: self.rows_fetched - earlier.rows_fetched,
            rows_inserted: self.rows_inserted - earlier.rows_inserted,
            rows_updated: self.rows_updated - earlier.rows_updated,
            rows_deleted: self.rows_deleted - earlier.rows_deleted,
            blocks_hit: self.blocks_hit - earlier.blocks_hit,
            blocks_read: self.blocks_read - earlier.blocks_read,
        }
    }
}

pub async fn activity(conn: &mut AsyncPgConnection) -> Result<Activity, StoreError> {
    Ok(diesel::sql_query(
        "SELECT xact_commit AS commits, xact_rollback AS rollbacks,
                tup_returned AS rows_returned, tup_fetched AS rows_fetched,
                tup_inserted AS rows_inserted, tup_updated AS rows_updated,
                tup_deleted AS rows_deleted, blks_hit AS blocks_hit, blks_read AS blocks_read
           FROM pg_stat_database WHERE datname = current_database()",
    )
    .get_result(conn)
    .await?)
}
