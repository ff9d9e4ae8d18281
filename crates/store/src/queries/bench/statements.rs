//! What each statement of a benchmark run cost PostgreSQL, from `pg_stat_statements` (only when
//! the server preloads it, which `cargo xtask bench --pg-statements` asks of its private
//! cluster): calls, plans, time, buffers and WAL of the current database's statements, and the
//! server's WAL position. Counts of buffers, rows and WAL bytes do not depend on how busy the
//! machine is, so two revisions compare on them where CPU times are too noisy.

use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Bool, Double, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::StoreError;

/// The counters of one statement (all of its executions) in the current database.
#[derive(Debug, Clone, PartialEq, QueryableByName)]
pub struct StatementCost {
    /// Run by a client (`true`), or inside another statement: a trigger's or a foreign key's.
    #[diesel(sql_type = Bool)]
    pub toplevel: bool,
    #[diesel(sql_type = BigInt)]
    pub calls: i64,
    #[diesel(sql_type = BigInt)]
    pub plans: i64,
    /// Milliseconds executing, and planning, over all calls.
    #[diesel(sql_type = Double)]
    pub exec_ms: f64,
    #[diesel(sql_type = Double)]
    pub plan_ms: f64,
    #[diesel(sql_type = BigInt)]
    pub rows: i64,
    #[diesel(sql_type = BigInt)]
    pub blocks_hit: i64,
    #[diesel(sql_type = BigInt)]
    pub blocks_read: i64,
    #[diesel(sql_type = BigInt)]
    pub blocks_dirtied: i64,
    #[diesel(sql_type = BigInt)]
    pub wal_bytes: i64,
    /// The statement's text, whitespace collapsed, at most 100 characters.
    #[diesel(sql_type = Text)]
    pub query: String,
}

/// Creates the extension in the current database (a no-op when it exists; an error when the
/// server does not preload the library) and forgets what was counted for this database so far.
pub async fn reset(conn: &mut AsyncPgConnection) -> Result<(), StoreError> {
    diesel::sql_query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        .execute(conn)
        .await?;
    diesel::sql_query(
        "SELECT pg_stat_statements_reset(0, (SELECT oid FROM pg_database
                                               WHERE datname = current_database()), 0)",
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// The `limit` statements of the current database that took the most time, and the calls,
/// buffers and WAL of the others as one more row (`query` = `(the rest)`, `toplevel` true only
/// if all of them are) when there are any.
pub async fn costliest(
    conn: &mut AsyncPgConnection,
    limit: i64,
) -> Result<Vec<StatementCost>, StoreError> {
    Ok(diesel::sql_query(
        "WITH s AS (
             SELECT toplevel, calls, plans, total_exec_time, total_plan_time, rows,
                    shared_blks_hit, shared_blks_read, shared_blks_dirtied, wal_bytes,
                    left(regexp_replace(query, '\\s+', ' ', 'g'), 100) AS query,
                    row_number() OVER (ORDER BY total_exec_time + total_plan_time DESC) AS rank
               FROM pg_stat_statements
              WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
                AND query NOT LIKE '%pg_stat_statements%'
         )
         SELECT * FROM (
         SELECT toplevel, calls, plans, total_exec_time AS exec_ms, total_plan_time AS plan_ms,
                rows, shared_blks_hit AS blocks_hit, shared_blks_read AS blocks_read,
                shared_blks_dirtied AS blocks_dirtied, wal_bytes::bigint, query
           FROM s WHERE rank <= $1
         UNION ALL
         SELECT bool_and(toplevel), sum(calls)::bigint, sum(plans)::bigint,
                sum(total_exec_time), sum(total_plan_time), sum(rows)::bigint,
                sum(shared_blks_hit)::bigint, sum(shared_blks_read)::bigint,
                sum(shared_blks_dirtied)::bigint, sum(wal_bytes)::bigint, '(the rest)'
           FROM s WHERE rank > $1 HAVING count(*) > 0
         ) costs
         ORDER BY exec_ms + plan_ms DESC",
    )
    .bind::<BigInt, _>(limit)
    .load(conn)
    .await?)
}

#[derive(QueryableByName)]
struct Lsn {
    #[diesel(sql_type = BigInt)]
    bytes: i64,
}

/// The server's current WAL insert position, in bytes since its start: the difference of two
/// readings is the WAL the whole server wrote in between.
pub async fn wal_position(conn: &mut AsyncPgConnection) -> Result<i64, StoreError> {
    let lsn: Lsn =
        diesel::sql_query("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint AS bytes")
            .get_result(conn)
            .await?;
    Ok(lsn.bytes)
}
