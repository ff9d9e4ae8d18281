//! Server-level administration used by tooling (xtask, the test harness): creating, cloning and
//! dropping databases. Never used by the running services.

use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Bool, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::StoreError;

/// Opens a single connection (not pooled) to `url`, with TLS as its `sslmode` asks.
pub async fn connect(url: &str) -> Result<AsyncPgConnection, StoreError> {
    crate::connect::establish(url).await
}

/// Database names we create are plain identifiers; anything else is refused rather than quoted.
fn checked_name(name: &str) -> Result<&str, StoreError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(name)
    } else {
        Err(StoreError::Corrupt {
            what: "database name",
            reason: format!("{name:?} must be 1-63 characters of [a-z0-9_]"),
        })
    }
}

#[derive(QueryableByName)]
struct Exists {
    #[diesel(sql_type = Bool)]
    exists: bool,
}

pub async fn database_exists(conn: &mut AsyncPgConnection, name: &str) -> Result<bool, StoreError> {
    let row: Exists =
        diesel::sql_query("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1) AS exists")
            .bind::<Text, _>(name)
            .get_result(conn)
            .await?;
    Ok(row.exists)
}

/// `CREATE DATABASE name [TEMPLATE template]`.
pub async fn create_database(
    conn: &mut AsyncPgConnection,
    name: &str,
    template: Option<&str>,
) -> Result<(), StoreError> {
    let sql = match template {
        Some(t) => format!(
            "CREATE DATABASE \"{}\" TEMPLATE \"{}\"",
            checked_name(name)?,
            checked_name(t)?
        ),
        None => format!("CREATE DATABASE \"{}\"", checked_name(name)?),
    };
    diesel::sql_query(sql).execute(conn).await?;
    Ok(())
}

/// Marks a database as a template so others can be cloned from it.
pub async fn mark_template(conn: &mut AsyncPgConnection, name: &str) -> Result<(), StoreError> {
    diesel::sql_query(format!(
        "ALTER DATABASE \"{}\" WITH IS_TEMPLATE true",
        checked_name(name)?
    ))
    .execute(conn)
    .await?;
    Ok(())
}

/// Drops a database, disconnecting its sessions (`WITH (FORCE)`); a template is unmarked first.
pub async fn drop_database(conn: &mut AsyncPgConnection, name: &str) -> Result<(), StoreError> {
    let name = checked_name(name)?;
    if database_exists(conn, name).await? {
        diesel::sql_query(format!("ALTER DATABASE \"{name}\" WITH IS_TEMPLATE false"))
            .execute(conn)
            .await?;
    }
    diesel::sql_query(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .execute(conn)
        .await?;
    Ok(())
}

#[derive(QueryableByName)]
struct Name {
    #[diesel(sql_type = Text)]
    datname: String,
}

/// Names of the databases whose name starts with `prefix`.
pub async fn databases_with_prefix(
    conn: &mut AsyncPgConnection,
    prefix: &str,
) -> Result<Vec<String>, StoreError> {
    let rows: Vec<Name> =
        diesel::sql_query("SELECT datname FROM pg_database WHERE starts_with(datname, $1)")
            .bind::<Text, _>(prefix)
            .load(conn)
            .await?;
    Ok(rows.into_iter().map(|r| r.datname).collect())
}

/// Holds a session-level advisory lock while `job` runs, so concurrent processes (nextest runs
/// each test in its own) serialise on it.
pub async fn with_advisory_lock<T>(
    conn: &mut AsyncPgConnection,
    key: i64,
    job: impl AsyncFnOnce(&mut AsyncPgConnection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    diesel::sql_query("SELECT pg_advisory_lock($1)")
        .bind::<BigInt, _>(key)
        .execute(conn)
        .await?;
    let result = job(conn).await;
    diesel::sql_query("SELECT pg_advisory_unlock($1)")
        .bind::<BigInt, _>(key)
        .execute(conn)
        .await?;
    result
}

/// Replaces the database name in a `postgres://` URL, keeping credentials and parameters.
pub fn url_with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let authority_end = base
        .find("://")
        .map(|i| i + 3)
        .and_then(|start| base[start..].find('/').map(|j| start + j))
        .unwrap_or(base.len());
    let mut out = format!("{}/{}", &base[..authority_end], database);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// The database name in a `postgres://` URL, if it names one.
pub fn database_of(url: &str) -> Option<&str> {
    let base = url.split('?').next()?;
    let rest = &base[base.find("://")? + 3..];
    let name = &rest[rest.find('/')? + 1..];
    (!name.is_empty()).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_database_is_replaced_keeping_parameters() {
        assert_eq!(
            url_with_database("postgres://u:p@h:5432/dispatch?sslmode=disable", "other"),
            "postgres://u:p@h:5432/other?sslmode=disable"
        );
        assert_eq!(url_with_database("postgres://h:1", "x"), "postgres://h:1/x");
        assert_eq!(database_of("postgres://h:1/x?a=b"), Some("x"));
        assert_eq!(database_of("postgres://h:1"), None);
        assert_eq!(database_of("postgres://h:1/"), None);
    }

    #[test]
    fn only_plain_database_names_are_accepted() {
        assert!(checked_name("dispatch_test_1").is_ok());
        assert!(checked_name("x\"; DROP").is_err());
        assert!(checked_name("").is_err());
    }
}
