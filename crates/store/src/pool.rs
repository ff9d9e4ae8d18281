//! The async connection pool (bb8 over diesel-async). Connections are opened lazily, so the pool
//! starts while the database is down, and dropped once broken, so it heals when it returns.

use std::time::Duration;

use diesel_async::AsyncPgConnection;
use diesel_async::pooled_connection::AsyncDieselConnectionManager;

use crate::StoreError;

pub type Pool = bb8::Pool<AsyncDieselConnectionManager<AsyncPgConnection>>;
pub type PooledConnection<'a> =
    bb8::PooledConnection<'a, AsyncDieselConnectionManager<AsyncPgConnection>>;

/// How to reach PostgreSQL and how many connections to keep.
#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    /// `postgres://user:password@host:port/database?sslmode=...`
    pub url: String,
    /// Most connections the pool opens.
    pub max_connections: u32,
    /// How long a caller waits for a connection before the database counts as unavailable.
    pub connect_timeout: Duration,
}

/// Builds the pool without touching the database: a server that is down now is not an error
/// until a request needs a connection.
pub fn build_pool(settings: &DatabaseSettings) -> Pool {
    let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(
        settings.url.clone(),
        crate::connect::manager_config(&settings.url),
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
