//! The async connection pool (bb8 over diesel-async). Connections are opened lazily, so the pool
//! starts while the database is down, and dropped once broken, so it heals when it returns.

use std::time::Duration;

use diesel_async::AsyncPgConnection;
use diesel_async::pooled_connection::AsyncDieselConnectionManager;

use crate::{DatabaseUrl, StoreError};

pub type Pool = bb8::Pool<AsyncDieselConnectionManager<AsyncPgConnection>>;
pub type PooledConnection<'a> =
    bb8::PooledConnection<'a, AsyncDieselConnectionManager<AsyncPgConnection>>;

/// How to reach PostgreSQL and how many connections to keep.
#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    /// `postgres://user:password@host:port/database?sslmode=...`, which never prints.
    pub url: DatabaseUrl,
    /// Most connections the pool opens.
    pub max_connections: u32,
    /// How long a caller waits for a connection before the database counts as unavailable.
    pub connect_timeout: Duration,
}

/// Whether a pool's commits wait for the WAL to reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Every commit is on disk before it returns: for anything that must survive a crash of
    /// PostgreSQL, above all an accepted event (the API's pool).
    #[default]
    Durable,
    /// Commits return before the WAL flush (`synchronous_commit = off`). A crash of PostgreSQL
    /// (not of a worker) may forget the last fraction of a second of them. For the delivery
    /// queue's bookkeeping only: a forgotten claim or outcome puts the delivery back as it was,
    /// so it is sent again (at least once, as after any crash); a delivery is never lost.
    Relaxed,
}

impl std::str::FromStr for Durability {
    type Err = String;

    /// PostgreSQL's own words for it: `on` is durable, `off` relaxed.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "on" | "true" => Ok(Self::Durable),
            "off" | "false" => Ok(Self::Relaxed),
            other => Err(format!("expected on or off, got {other:?}")),
        }
    }
}

/// Builds the pool without touching the database: a server that is down now is not an error
/// until a request needs a connection. Commits are durable.
pub fn build_pool(settings: &DatabaseSettings) -> Pool {
    build_pool_with(settings, Durability::Durable)
}

/// [`build_pool`] with the given commit durability.
pub fn build_pool_with(settings: &DatabaseSettings, durability: Durability) -> Pool {
    let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(
        settings.url.expose().to_owned(),
        crate::connect::manager_config(settings.url.expose(), durability),
    );
    bb8::Pool::builder()
        .max_size(settings.max_connections)
        .min_idle(Some(0))
        .connection_timeout(settings.connect_timeout)
        // No `SELECT 1` before every use: it cost a round trip and a transaction per check-out.
        // A connection whose server went away is closed (`is_broken`), which bb8 checks when it
        // comes back; the one query that finds it dead fails as `Unavailable` (503, retry).
        .test_on_check_out(false)
        .build_unchecked(manager)
}

/// Takes a connection from the pool; failing to get one means the database is unavailable.
pub async fn connection(pool: &Pool) -> Result<PooledConnection<'_>, StoreError> {
    pool.get()
        .await
        .map_err(|e| StoreError::Unavailable(e.to_string()))
}
