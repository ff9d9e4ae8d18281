//! Readiness: can we reach the database, and does it have every migration?

use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::{StoreError, migrations};

/// Whether the database answers and has every embedded migration applied.
pub async fn check_ready(conn: &mut AsyncPgConnection) -> Result<bool, StoreError> {
    crate::prepared::prepared("SELECT 1").execute(conn).await?;
    migrations::is_up_to_date(conn).await
}

/// The hot queue (`delivery_queue`) as PostgreSQL's statistics see it: rows that are live and
/// dead, whether autovacuum looks after it, and whether this role may vacuum it itself.
#[derive(Debug, Clone, PartialEq, diesel::QueryableByName, serde::Serialize)]
pub struct QueueHealth {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub live_rows: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub dead_rows: i64,
    /// The server's `autovacuum` and the table's `autovacuum_enabled` are both on.
    #[diesel(sql_type = diesel::sql_types::Bool)]
    pub autovacuum: bool,
    /// Seconds since the table was last vacuumed, by anyone (none: never, since the statistics
    /// were reset).
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Double>)]
    pub last_vacuum_age_secs: Option<f64>,
    /// This role owns the table (or inherits from its owner, or is a superuser), so `VACUUM`
    /// will do something.
    #[diesel(sql_type = diesel::sql_types::Bool)]
    pub can_vacuum: bool,
}

/// Dead rows past which the queue is worth vacuuming even when few rows are live.
pub const QUEUE_DEAD_ROWS_WORTH_VACUUM: i64 = 2_000;
/// Dead rows past which (and past twice the live rows) the queue counts as bloated.
pub const QUEUE_DEAD_ROWS_BLOATED: i64 = 50_000;

impl QueueHealth {
    /// Enough dead rows (at least 2 000, and a quarter of the live ones) that claims, which
    /// start at the oldest due rows where the dead ones gather, walk noticeably more than they
    /// take.
    pub fn worth_vacuum(&self) -> bool {
        self.dead_rows >= QUEUE_DEAD_ROWS_WORTH_VACUUM && self.dead_rows * 4 >= self.live_rows
    }

    /// Far more dead rows than live ones: vacuum is falling behind.
    pub fn bloated(&self) -> bool {
        self.dead_rows >= QUEUE_DEAD_ROWS_BLOATED && self.dead_rows >= 2 * self.live_rows
    }

    /// What an operator should hear about (empty when healthy).
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !self.autovacuum {
            out.push(
                "autovacuum is off for the hot queue (server setting or table option): claims \
                 slow down as dead rows pile up unless the workers vacuum it \
                 (queue_vacuum_secs > 0 and a role that owns delivery_queue)"
                    .to_owned(),
            );
        }
        if self.bloated() {
            out.push(format!(
                "the hot queue is bloated: {} dead rows for {} live; vacuum is falling behind",
                self.dead_rows, self.live_rows
            ));
        }
        out
    }
}

/// Reads [`QueueHealth`] (one catalog query; statistics lag by up to a second).
pub async fn queue_health(conn: &mut AsyncPgConnection) -> Result<QueueHealth, StoreError> {
    Ok(crate::prepared::prepared(
        "SELECT coalesce(s.n_live_tup, 0) AS live_rows, coalesce(s.n_dead_tup, 0) AS dead_rows,
                current_setting('autovacuum')::bool
                  AND coalesce((SELECT o.option_value::bool
                                  FROM pg_options_to_table(c.reloptions) o
                                 WHERE o.option_name = 'autovacuum_enabled'), true)
                    AS autovacuum,
                extract(epoch FROM now() - greatest(s.last_vacuum, s.last_autovacuum))::float8
                    AS last_vacuum_age_secs,
                pg_has_role(c.relowner, 'USAGE')
                  OR coalesce((SELECT r.rolsuper FROM pg_roles r
                                WHERE r.rolname = current_user), false) AS can_vacuum
           FROM pg_class c
           LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
          WHERE c.oid = 'delivery_queue'::regclass",
    )
    .get_result(conn)
    .await?)
}

/// Key of the advisory lock that lets one session at a time vacuum the queue.
const QUEUE_VACUUM_LOCK: i64 = 0x6469_7370_7163_7661; // "dispqcva"

/// Vacuums and analyzes the hot queue (its indexes too, however few pages hold dead rows)
/// unless another session is doing so; returns whether this one did. Must run outside a
/// transaction.
pub async fn vacuum_queue(conn: &mut AsyncPgConnection) -> Result<bool, StoreError> {
    #[derive(diesel::QueryableByName)]
    struct Locked {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        locked: bool,
    }
    let got: Locked = crate::prepared::prepared("SELECT pg_try_advisory_lock($1) AS locked")
        .bind::<diesel::sql_types::BigInt, _>(QUEUE_VACUUM_LOCK)
        .get_result(conn)
        .await?;
    if !got.locked {
        return Ok(false);
    }
    let vacuumed = diesel_async::SimpleAsyncConnection::batch_execute(
        conn,
        "VACUUM (ANALYZE, INDEX_CLEANUP ON, SKIP_LOCKED) delivery_queue",
    )
    .await;
    let unlocked = crate::prepared::prepared("SELECT pg_advisory_unlock($1) AS locked")
        .bind::<diesel::sql_types::BigInt, _>(QUEUE_VACUUM_LOCK)
        .get_result::<Locked>(conn)
        .await;
    vacuumed?;
    unlocked?;
    Ok(true)
}
