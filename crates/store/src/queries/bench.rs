//! The benchmark's queries, behind `cargo xtask bench`: the "ceiling" table (durable single-row
//! inserts, the yardstick every result is compared with), seeding subscriptions and due
//! deliveries in bulk, and counting what was delivered. Never used by the services; meant for a
//! throw-away database created for one benchmark run.

use diesel::QueryableByName;
use diesel::sql_types::{Array, BigInt, Bool, Double, Integer, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::StoreError;

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

// ---------------------------------------------------------------------------------------------
// Ceiling
// ---------------------------------------------------------------------------------------------

/// Creates `bench_ceiling`: a tiny table with a text key and a `jsonb` column, logged like any
/// other table (so its inserts are as durable as the events').
pub async fn create_ceiling_table(conn: &mut AsyncPgConnection) -> Result<(), StoreError> {
    diesel::sql_query(
        "CREATE TABLE IF NOT EXISTS bench_ceiling (k text PRIMARY KEY, v jsonb NOT NULL)",
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// One single-row insert, in its own (autocommit) transaction. `value` is JSON text.
pub async fn ceiling_insert(
    conn: &mut AsyncPgConnection,
    key: &str,
    value: &str,
) -> Result<(), StoreError> {
    diesel::sql_query("INSERT INTO bench_ceiling (k, v) VALUES ($1, $2::jsonb)")
        .bind::<Text, _>(key)
        .bind::<Text, _>(value)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn drop_ceiling_table(conn: &mut AsyncPgConnection) -> Result<(), StoreError> {
    diesel::sql_query("DROP TABLE IF EXISTS bench_ceiling")
        .execute(conn)
        .await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Seeding
// ---------------------------------------------------------------------------------------------

/// `count` subscriptions numbered `first .. first + count`: subscription `i` has the id
/// `{id_prefix}{i}`, the URL `{url_prefix}{i}{url_suffix}` and the single pattern `pattern`, or
/// `{pattern}{i}` when `pattern_per_index`.
#[derive(Debug, Clone, PartialEq)]
pub struct SubscriptionSeed<'a> {
    pub id_prefix: &'a str,
    pub url_prefix: &'a str,
    pub url_suffix: &'a str,
    pub pattern: &'a str,
    pub pattern_per_index: bool,
    pub first: i32,
    pub count: i32,
    pub secret: &'a str,
    pub rate_limit_per_sec: f64,
    pub rate_limit_burst: i32,
}

/// Inserts the subscriptions in one statement; returns how many were stored.
pub async fn seed_subscriptions(
    conn: &mut AsyncPgConnection,
    seed: &SubscriptionSeed<'_>,
) -> Result<usize, StoreError> {
    Ok(diesel::sql_query(
        "INSERT INTO subscriptions (id, url, event_types, secret, rate_limit_per_sec,
                                    rate_limit_burst)
         SELECT $1 || g, $2 || g || $3,
                ARRAY[CASE WHEN $5 THEN $4 || g ELSE $4 END],
                $6, $7, $8
           FROM generate_series($9, $9 + $10 - 1) AS g",
    )
    .bind::<Text, _>(seed.id_prefix)
    .bind::<Text, _>(seed.url_prefix)
    .bind::<Text, _>(seed.url_suffix)
    .bind::<Text, _>(seed.pattern)
    .bind::<Bool, _>(seed.pattern_per_index)
    .bind::<Text, _>(seed.secret)
    .bind::<Double, _>(seed.rate_limit_per_sec)
    .bind::<Integer, _>(seed.rate_limit_burst)
    .bind::<Integer, _>(seed.first)
    .bind::<Integer, _>(seed.count)
    .execute(conn)
    .await?)
}

/// `count` events numbered `1 ..= count` (id `{id_prefix}{i}`, type `event_type`, source
/// `bench`, data `{"seq": i, "sent_at_ns": "<sent_at_ns>"}`), each with one delivery that is due
/// now, to `subscription_ids[i % len]`: a backlog as if it had been ingested while no worker ran.
#[derive(Debug, Clone, PartialEq)]
pub struct BacklogSeed<'a> {
    pub id_prefix: &'a str,
    pub event_type: &'a str,
    pub count: i64,
    /// Unix time in nanoseconds, as decimal text (a JSON number would lose digits in `jsonb`).
    pub sent_at_ns: &'a str,
    pub subscription_ids: &'a [String],
}

/// Inserts the events and their deliveries in one statement; returns the deliveries stored.
pub async fn seed_backlog(
    conn: &mut AsyncPgConnection,
    seed: &BacklogSeed<'_>,
) -> Result<i64, StoreError> {
    if seed.subscription_ids.is_empty() || seed.count <= 0 {
        return Ok(0);
    }
    let row: Count = diesel::sql_query(
        "WITH ev AS (
             INSERT INTO events (id, event_type, source, data)
             SELECT $1 || g, $2, 'bench',
                    jsonb_build_object('seq', g, 'sent_at_ns', $4::text)
               FROM generate_series(1, $3) AS g
             RETURNING id, (data ->> 'seq')::bigint AS seq
         ), dl AS (
             INSERT INTO deliveries (event_id, subscription_id)
             SELECT ev.id, ($5::text[])[1 + ev.seq % cardinality($5::text[])]
               FROM ev
             RETURNING 1
         )
         SELECT count(*) AS n FROM dl",
    )
    .bind::<Text, _>(seed.id_prefix)
    .bind::<Text, _>(seed.event_type)
    .bind::<BigInt, _>(seed.count)
    .bind::<Text, _>(seed.sent_at_ns)
    .bind::<Array<Text>, _>(seed.subscription_ids)
    .get_result(conn)
    .await?;
    Ok(row.n)
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
    pub fsync: String,
    pub synchronous_commit: String,
    pub full_page_writes: String,
    pub max_connections: i64,
}

#[derive(QueryableByName)]
struct FactsRow {
    #[diesel(sql_type = Text)]
    version: String,
    #[diesel(sql_type = Text)]
    fsync: String,
    #[diesel(sql_type = Text)]
    synchronous_commit: String,
    #[diesel(sql_type = Text)]
    full_page_writes: String,
    #[diesel(sql_type = BigInt)]
    max_connections: i64,
}

/// The server's version and the settings that decide how durable (and how fast) a commit is.
pub async fn server_facts(conn: &mut AsyncPgConnection) -> Result<ServerFacts, StoreError> {
    let row: FactsRow = diesel::sql_query(
        "SELECT current_setting('server_version') AS version,
                current_setting('fsync') AS fsync,
                current_setting('synchronous_commit') AS synchronous_commit,
                current_setting('full_page_writes') AS full_page_writes,
                current_setting('max_connections')::bigint AS max_connections",
    )
    .get_result(conn)
    .await?;
    Ok(ServerFacts {
        version: row.version,
        fsync: row.fsync,
        synchronous_commit: row.synchronous_commit,
        full_page_writes: row.full_page_writes,
        max_connections: row.max_connections,
    })
}

#[derive(QueryableByName)]
struct Pid {
    #[diesel(sql_type = Integer)]
    pid: i32,
}

/// Process ids of the server's backends connected to the current database, this connection's
/// own excepted (to read their CPU time from `/proc` when the server runs on this machine).
pub async fn backend_pids(conn: &mut AsyncPgConnection) -> Result<Vec<i32>, StoreError> {
    let rows: Vec<Pid> = diesel::sql_query(
        "SELECT pid FROM pg_stat_activity
          WHERE datname = current_database() AND pid <> pg_backend_pid()",
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
