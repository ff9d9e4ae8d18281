//! API keys kept in the database (only their SHA-256) and the audit log of their changes: what
//! every API replica reloads each second, and what `/keys` and `dispatch-api admin keys` write,
//! each change with its audit row in one transaction.

use chrono::{DateTime, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{Array, BigInt, Bytea, Interval, Jsonb, Nullable, Text, Timestamptz};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

use crate::StoreError;

/// A key that may be used now (not revoked, not expired), as the API's cache holds it.
#[derive(Debug, Clone, PartialEq, QueryableByName)]
pub struct ActiveKey {
    #[diesel(sql_type = Text)]
    pub id: String,
    #[diesel(sql_type = Bytea)]
    pub hash: Vec<u8>,
    #[diesel(sql_type = Text)]
    pub scope: String,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub expires_at: Option<DateTime<Utc>>,
}

/// Every key that may be used now.
pub async fn active(conn: &mut AsyncPgConnection) -> Result<Vec<ActiveKey>, StoreError> {
    Ok(crate::prepared::prepared(
        "SELECT id, hash, scope, expires_at FROM api_keys
          WHERE revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())",
    )
    .load(conn)
    .await?)
}

/// Notes that keys `ids` were used (the API batches this, once a second).
pub async fn touch(conn: &mut AsyncPgConnection, ids: &[String]) -> Result<usize, StoreError> {
    if ids.is_empty() {
        return Ok(0);
    }
    Ok(
        diesel::sql_query("UPDATE api_keys SET last_used_at = now() WHERE id = ANY ($1)")
            .bind::<Array<Text>, _>(ids)
            .execute(conn)
            .await?,
    )
}

/// A key as listed (never its secret, never its hash).
#[derive(Debug, Clone, PartialEq, QueryableByName)]
pub struct ApiKeyRow {
    #[diesel(sql_type = Text)]
    pub id: String,
    #[diesel(sql_type = Text)]
    pub name: String,
    #[diesel(sql_type = Text)]
    pub scope: String,
    #[diesel(sql_type = Timestamptz)]
    pub created_at: DateTime<Utc>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub last_used_at: Option<DateTime<Utc>>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub expires_at: Option<DateTime<Utc>>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub revoked_at: Option<DateTime<Utc>>,
    #[diesel(sql_type = Nullable<Text>)]
    pub rotated_from: Option<String>,
}

const COLUMNS: &str =
    "id, name, scope, created_at, last_used_at, expires_at, revoked_at, rotated_from";

/// A key to store: its id and hash (from `dispatch_domain::api_key::generate`), name, scope
/// and expiry.
#[derive(Debug, Clone)]
pub struct NewKey<'a> {
    pub id: &'a str,
    pub hash: &'a [u8; 32],
    pub name: &'a str,
    pub scope: &'a str,
    pub expires_at: Option<DateTime<Utc>>,
}

async fn insert(
    conn: &mut AsyncPgConnection,
    new: &NewKey<'_>,
    rotated_from: Option<&str>,
) -> Result<ApiKeyRow, StoreError> {
    Ok(diesel::sql_query(format!(
        "INSERT INTO api_keys (id, name, scope, hash, expires_at, rotated_from)
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING {COLUMNS}"
    ))
    .bind::<Text, _>(new.id)
    .bind::<Text, _>(new.name)
    .bind::<Text, _>(new.scope)
    .bind::<Bytea, _>(new.hash.as_slice())
    .bind::<Nullable<Timestamptz>, _>(new.expires_at)
    .bind::<Nullable<Text>, _>(rotated_from)
    .get_result(conn)
    .await?)
}

pub(crate) async fn audit(
    conn: &mut AsyncPgConnection,
    actor: &str,
    action: &str,
    target: &str,
    detail: serde_json::Value,
) -> Result<(), StoreError> {
    diesel::sql_query(
        "INSERT INTO audit_log (actor, action, target, detail) VALUES ($1, $2, $3, $4)",
    )
    .bind::<Text, _>(actor)
    .bind::<Text, _>(action)
    .bind::<Text, _>(target)
    .bind::<Jsonb, _>(detail)
    .execute(conn)
    .await?;
    Ok(())
}

/// Stores a new key and its audit row (`key.created`), in one transaction.
pub async fn create(
    conn: &mut AsyncPgConnection,
    actor: &str,
    new: &NewKey<'_>,
) -> Result<ApiKeyRow, StoreError> {
    let (actor, new) = (actor.to_owned(), new.clone());
    let (id, hash, name, scope) = (
        new.id.to_owned(),
        *new.hash,
        new.name.to_owned(),
        new.scope.to_owned(),
    );
    conn.transaction::<_, StoreError, _>(async move |conn| {
        let new = NewKey {
            id: &id,
            hash: &hash,
            name: &name,
            scope: &scope,
            expires_at: new.expires_at,
        };
        let row = insert(conn, &new, None).await?;
        let detail = serde_json::json!({"name": row.name, "scope": row.scope,
                                        "expires_at": row.expires_at});
        audit(conn, &actor, "key.created", &row.id, detail).await?;
        Ok(row)
    })
    .await
}

/// Keys by id, after `after`, at most `limit` (revoked and expired ones included); with
/// `tenant`, only the keys whose scope names it (`tenant:<id>`, `tenant:<id>:read`,
/// `ingest:<id>`).
pub async fn list(
    conn: &mut AsyncPgConnection,
    tenant: Option<&str>,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<ApiKeyRow>, StoreError> {
    Ok(diesel::sql_query(format!(
        "SELECT {COLUMNS} FROM api_keys
          WHERE ($1::text IS NULL OR id > $1) AND ($3::text IS NULL OR tenant_id = $3)
          ORDER BY id LIMIT $2"
    ))
    .bind::<Nullable<Text>, _>(after)
    .bind::<BigInt, _>(limit)
    .bind::<Nullable<Text>, _>(tenant)
    .load(conn)
    .await?)
}

/// Revokes key `id` (already revoked: left as it was, no audit row). `None`: no such key.
pub async fn revoke(
    conn: &mut AsyncPgConnection,
    actor: &str,
    id: &str,
) -> Result<Option<ApiKeyRow>, StoreError> {
    let (actor, id) = (actor.to_owned(), id.to_owned());
    conn.transaction::<_, StoreError, _>(async move |conn| {
        let rows: Vec<ApiKeyRow> = diesel::sql_query(format!(
            "UPDATE api_keys SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL
             RETURNING {COLUMNS}"
        ))
        .bind::<Text, _>(&id)
        .load(conn)
        .await?;
        if let Some(row) = rows.into_iter().next() {
            audit(conn, &actor, "key.revoked", &id, serde_json::json!({})).await?;
            return Ok(Some(row));
        }
        Ok(
            diesel::sql_query(format!("SELECT {COLUMNS} FROM api_keys WHERE id = $1"))
                .bind::<Text, _>(&id)
                .load::<ApiKeyRow>(conn)
                .await?
                .into_iter()
                .next(),
        )
    })
    .await
}

/// What [`rotate`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Rotated {
    /// `new` replaces `old`, which stays valid until its (new) `expires_at`.
    Rotated {
        new: Box<ApiKeyRow>,
        old: Box<ApiKeyRow>,
    },
    /// The key is revoked or expired: nothing to rotate.
    Inactive,
    NotFound,
}

/// Replaces key `old_id` with `new` (same name and scope): the old key stays valid for
/// `overlap` more (or until its own expiry, if sooner). One transaction, with the audit row.
pub async fn rotate(
    conn: &mut AsyncPgConnection,
    actor: &str,
    old_id: &str,
    new_id: &str,
    new_hash: &[u8; 32],
    overlap: std::time::Duration,
) -> Result<Rotated, StoreError> {
    let (actor, old_id, new_id, new_hash) = (
        actor.to_owned(),
        old_id.to_owned(),
        new_id.to_owned(),
        *new_hash,
    );
    let overlap = diesel::pg::data_types::PgInterval::from_microseconds(
        i64::try_from(overlap.as_micros()).unwrap_or(i64::MAX),
    );
    conn.transaction::<_, StoreError, _>(async move |conn| {
        let old: Vec<ApiKeyRow> = diesel::sql_query(format!(
            "SELECT {COLUMNS} FROM api_keys WHERE id = $1 FOR UPDATE"
        ))
        .bind::<Text, _>(&old_id)
        .load(conn)
        .await?;
        let Some(old) = old.into_iter().next() else {
            return Ok(Rotated::NotFound);
        };
        let now = Utc::now();
        if old.revoked_at.is_some() || old.expires_at.is_some_and(|at| at <= now) {
            return Ok(Rotated::Inactive);
        }
        let new = NewKey {
            id: &new_id,
            hash: &new_hash,
            name: &old.name,
            scope: &old.scope,
            expires_at: None,
        };
        let new = insert(conn, &new, Some(&old_id)).await?;
        let old: ApiKeyRow = diesel::sql_query(format!(
            "UPDATE api_keys SET expires_at = least(coalesce(expires_at, 'infinity'), now() + $2)
              WHERE id = $1 RETURNING {COLUMNS}"
        ))
        .bind::<Text, _>(&old_id)
        .bind::<Interval, _>(overlap)
        .get_result(conn)
        .await?;
        let detail = serde_json::json!({"new_key": new.id, "old_expires_at": old.expires_at});
        audit(conn, &actor, "key.rotated", &old_id, detail).await?;
        Ok(Rotated::Rotated {
            new: Box::new(new),
            old: Box::new(old),
        })
    })
    .await
}

/// One change, as the audit log keeps it.
#[derive(Debug, Clone, PartialEq, QueryableByName)]
pub struct AuditRow {
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    #[diesel(sql_type = Timestamptz)]
    pub at: DateTime<Utc>,
    #[diesel(sql_type = Text)]
    pub actor: String,
    #[diesel(sql_type = Text)]
    pub action: String,
    #[diesel(sql_type = Text)]
    pub target: String,
    #[diesel(sql_type = Jsonb)]
    pub detail: serde_json::Value,
}

/// The audit log, newest first, before id `before`, at most `limit`.
pub async fn audit_log(
    conn: &mut AsyncPgConnection,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<AuditRow>, StoreError> {
    Ok(diesel::sql_query(
        "SELECT id, at, actor, action, target, detail FROM audit_log
          WHERE ($1::bigint IS NULL OR id < $1) ORDER BY id DESC LIMIT $2",
    )
    .bind::<Nullable<BigInt>, _>(before)
    .bind::<BigInt, _>(limit)
    .load(conn)
    .await?)
}
