//! The SQL migrations in `migrations/`, embedded in every binary, and the commands that apply,
//! revert and report them. They run only when an operator (or a Helm hook) asks: never at start-up.

use diesel::QueryableByName;
use diesel::migration::{Migration, MigrationSource};
use diesel::pg::Pg;
use diesel::sql_types::Text;
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

use crate::StoreError;

pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations");

/// One migration and whether the database has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationStatus {
    pub version: String,
    pub name: String,
    pub applied: bool,
}

fn embedded() -> Result<Vec<Box<dyn Migration<Pg>>>, StoreError> {
    MigrationSource::<Pg>::migrations(&MIGRATIONS).map_err(|e| StoreError::Corrupt {
        what: "embedded migrations",
        reason: e.to_string(),
    })
}

/// The versions of the migrations built into this binary, oldest first.
pub fn embedded_versions() -> Result<Vec<String>, StoreError> {
    Ok(embedded()?
        .iter()
        .map(|m| m.name().version().to_string())
        .collect())
}

/// Runs a migration command on a blocking thread with a synchronous wrapper around an async
/// connection opened here (TLS as the URL asks; no libpq, and no `block_in_place`, so it works
/// on any runtime).
async fn with_sync_connection<T, F>(database_url: &str, job: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce(&mut AsyncConnectionWrapper<AsyncPgConnection>) -> Result<T, StoreError>
        + Send
        + 'static,
{
    let conn = crate::connect::establish(database_url).await?;
    tokio::task::spawn_blocking(move || {
        let mut conn = AsyncConnectionWrapper::<AsyncPgConnection>::from(conn);
        job(&mut conn)
    })
    .await
    .map_err(|e| StoreError::Unavailable(format!("migration task failed: {e}")))?
}

fn migration_error(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        what: "migration",
        reason: e.to_string(),
    }
}

/// Applies every pending migration; returns the versions applied.
pub async fn run_pending(database_url: &str) -> Result<Vec<String>, StoreError> {
    with_sync_connection(database_url, |conn| {
        let applied = conn
            .run_pending_migrations(MIGRATIONS)
            .map_err(migration_error)?;
        Ok(applied.iter().map(ToString::to_string).collect())
    })
    .await
}

/// Reverts the most recent migration; returns its version.
pub async fn revert_last(database_url: &str) -> Result<String, StoreError> {
    with_sync_connection(database_url, |conn| {
        conn.revert_last_migration(MIGRATIONS)
            .map(|v| v.to_string())
            .map_err(migration_error)
    })
    .await
}

/// Every embedded migration with whether the database has applied it.
pub async fn status(database_url: &str) -> Result<Vec<MigrationStatus>, StoreError> {
    let applied = with_sync_connection(database_url, |conn| {
        conn.applied_migrations()
            .map(|v| v.iter().map(ToString::to_string).collect::<Vec<_>>())
            .map_err(migration_error)
    })
    .await?;
    Ok(embedded()?
        .iter()
        .map(|m| {
            let version = m.name().version().to_string();
            MigrationStatus {
                applied: applied.contains(&version),
                name: m.name().to_string(),
                version,
            }
        })
        .collect())
}

#[derive(QueryableByName)]
struct AppliedVersion {
    #[diesel(sql_type = Text)]
    version: String,
}

/// Whether every embedded migration is applied, checked over an ordinary async connection
/// (this is what `/readyz` asks).
pub async fn is_up_to_date(conn: &mut AsyncPgConnection) -> Result<bool, StoreError> {
    let applied: Vec<AppliedVersion> =
        diesel::sql_query("SELECT version FROM __diesel_schema_migrations")
            .load(conn)
            .await
            .map_err(|e| match StoreError::from(e) {
                StoreError::Query(_) => StoreError::Corrupt {
                    what: "migration table",
                    reason: "missing: run `dispatch-api migrate up`".to_owned(),
                },
                other => other,
            })?;
    let wanted = embedded_versions()?;
    Ok(wanted
        .iter()
        .all(|w| applied.iter().any(|a| &a.version == w)))
}
