//! Tenants (migration 000023): created, listed, limited and deleted by admin keys, each change
//! with its audit row in one transaction; what every API replica reloads each second.

use chrono::{DateTime, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Float8, Integer, Nullable, Text, Timestamptz};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use dispatch_domain::TenantId;

use crate::StoreError;
use crate::queries::api_keys::audit;

/// A tenant's limits; `None`: the configured default.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct TenantLimits {
    pub ingest_rate_per_sec: Option<f64>,
    pub ingest_burst: Option<i32>,
    pub max_subscriptions: Option<i32>,
    pub max_payload_bytes: Option<i32>,
}

/// A stored tenant.
#[derive(Debug, Clone, PartialEq, QueryableByName)]
pub struct TenantRow {
    #[diesel(sql_type = Text)]
    pub id: String,
    #[diesel(sql_type = Text)]
    pub name: String,
    #[diesel(sql_type = Timestamptz)]
    pub created_at: DateTime<Utc>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub deleted_at: Option<DateTime<Utc>>,
    #[diesel(sql_type = Nullable<Float8>)]
    pub ingest_rate_per_sec: Option<f64>,
    #[diesel(sql_type = Nullable<Integer>)]
    pub ingest_burst: Option<i32>,
    #[diesel(sql_type = Nullable<Integer>)]
    pub max_subscriptions: Option<i32>,
    #[diesel(sql_type = Nullable<Integer>)]
    pub max_payload_bytes: Option<i32>,
}

impl TenantRow {
    pub fn limits(&self) -> TenantLimits {
        TenantLimits {
            ingest_rate_per_sec: self.ingest_rate_per_sec,
            ingest_burst: self.ingest_burst,
            max_subscriptions: self.max_subscriptions,
            max_payload_bytes: self.max_payload_bytes,
        }
    }
}

const COLUMNS: &str = "id, name, created_at, deleted_at, ingest_rate_per_sec, ingest_burst,
    max_subscriptions, max_payload_bytes";

fn limits_json(limits: &TenantLimits) -> serde_json::Value {
    serde_json::to_value(limits).unwrap_or_default()
}

/// Creates tenant `id` and its audit row (`tenant.created`). `None`: the id is taken (also by
/// a deleted tenant: ids are never reused, so stored ids stay unambiguous).
pub async fn create(
    conn: &mut AsyncPgConnection,
    actor: &str,
    id: &TenantId,
    name: &str,
    limits: &TenantLimits,
) -> Result<Option<TenantRow>, StoreError> {
    let (actor, id, name, limits) = (actor.to_owned(), id.clone(), name.to_owned(), *limits);
    conn.transaction::<_, StoreError, _>(async move |conn| {
        let rows: Vec<TenantRow> = diesel::sql_query(format!(
            "INSERT INTO tenants (id, name, ingest_rate_per_sec, ingest_burst,
                                  max_subscriptions, max_payload_bytes)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (id) DO NOTHING RETURNING {COLUMNS}"
        ))
        .bind::<Text, _>(id.as_str())
        .bind::<Text, _>(&name)
        .bind::<Nullable<Float8>, _>(limits.ingest_rate_per_sec)
        .bind::<Nullable<Integer>, _>(limits.ingest_burst)
        .bind::<Nullable<Integer>, _>(limits.max_subscriptions)
        .bind::<Nullable<Integer>, _>(limits.max_payload_bytes)
        .load(conn)
        .await?;
        let Some(row) = rows.into_iter().next() else {
            return Ok(None);
        };
        let detail = serde_json::json!({"name": row.name, "limits": limits_json(&limits)});
        audit(conn, &actor, "tenant.created", &row.id, detail).await?;
        Ok(Some(row))
    })
    .await
}

/// Replaces tenant `id`'s limits (`None` members: the configured default) and writes its audit
/// row (`tenant.limits_changed`). `None`: no live tenant has this id.
pub async fn set_limits(
    conn: &mut AsyncPgConnection,
    actor: &str,
    id: &TenantId,
    limits: &TenantLimits,
) -> Result<Option<TenantRow>, StoreError> {
    let (actor, id, limits) = (actor.to_owned(), id.clone(), *limits);
    conn.transaction::<_, StoreError, _>(async move |conn| {
        let rows: Vec<TenantRow> = diesel::sql_query(format!(
            "UPDATE tenants SET ingest_rate_per_sec = $2, ingest_burst = $3,
                                max_subscriptions = $4, max_payload_bytes = $5
              WHERE id = $1 AND deleted_at IS NULL RETURNING {COLUMNS}"
        ))
        .bind::<Text, _>(id.as_str())
        .bind::<Nullable<Float8>, _>(limits.ingest_rate_per_sec)
        .bind::<Nullable<Integer>, _>(limits.ingest_burst)
        .bind::<Nullable<Integer>, _>(limits.max_subscriptions)
        .bind::<Nullable<Integer>, _>(limits.max_payload_bytes)
        .load(conn)
        .await?;
        let Some(row) = rows.into_iter().next() else {
            return Ok(None);
        };
        let detail = serde_json::json!({"limits": limits_json(&limits)});
        audit(conn, &actor, "tenant.limits_changed", &row.id, detail).await?;
        Ok(Some(row))
    })
    .await
}

/// Tenant `id`, deleted or not.
pub async fn find(
    conn: &mut AsyncPgConnection,
    id: &TenantId,
) -> Result<Option<TenantRow>, StoreError> {
    let rows: Vec<TenantRow> =
        diesel::sql_query(format!("SELECT {COLUMNS} FROM tenants WHERE id = $1"))
            .bind::<Text, _>(id.as_str())
            .load(conn)
            .await?;
    Ok(rows.into_iter().next())
}

/// Live tenants by id, after `after`, at most `limit`.
pub async fn list(
    conn: &mut AsyncPgConnection,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<TenantRow>, StoreError> {
    Ok(diesel::sql_query(format!(
        "SELECT {COLUMNS} FROM tenants
          WHERE deleted_at IS NULL AND ($1::text IS NULL OR id > $1) ORDER BY id LIMIT $2"
    ))
    .bind::<Nullable<Text>, _>(after)
    .bind::<BigInt, _>(limit)
    .load(conn)
    .await?)
}

/// Every live tenant, as the API's cache holds them.
pub async fn active(conn: &mut AsyncPgConnection) -> Result<Vec<TenantRow>, StoreError> {
    Ok(crate::prepared::prepared(format!(
        "SELECT {COLUMNS} FROM tenants WHERE deleted_at IS NULL"
    ))
    .load(conn)
    .await?)
}

/// What [`delete`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Deleted {
    Deleted {
        tenant: TenantRow,
        /// Its subscriptions, now deleted (their unfinished deliveries cancelled).
        subscriptions: usize,
        /// Its keys, now revoked.
        keys: usize,
    },
    /// The default tenant is never deleted.
    Default,
    NotFound,
}

/// Marks tenant `id` deleted, revokes its keys and deletes its subscriptions (cancelling their
/// unfinished deliveries, as `DELETE /subscriptions/{id}` does), with its audit row
/// (`tenant.deleted`), in one transaction. Its events stay until retention removes them.
pub async fn delete(
    conn: &mut AsyncPgConnection,
    actor: &str,
    id: &TenantId,
) -> Result<Deleted, StoreError> {
    if id.is_default() {
        return Ok(Deleted::Default);
    }
    let (actor, id) = (actor.to_owned(), id.clone());
    conn.transaction::<_, StoreError, _>(async move |conn| {
        let rows: Vec<TenantRow> = diesel::sql_query(format!(
            "UPDATE tenants SET deleted_at = now()
              WHERE id = $1 AND deleted_at IS NULL RETURNING {COLUMNS}"
        ))
        .bind::<Text, _>(id.as_str())
        .load(conn)
        .await?;
        let Some(tenant) = rows.into_iter().next() else {
            return Ok(Deleted::NotFound);
        };
        let keys = diesel::sql_query(
            "UPDATE api_keys SET revoked_at = now() WHERE tenant_id = $1 AND revoked_at IS NULL",
        )
        .bind::<Text, _>(id.as_str())
        .execute(conn)
        .await?;
        let live: Vec<LiveSubscription> = diesel::sql_query(
            "SELECT id FROM subscriptions WHERE tenant_id = $1 AND deleted_at IS NULL ORDER BY id",
        )
        .bind::<Text, _>(id.as_str())
        .load(conn)
        .await?;
        for subscription in &live {
            let external = dispatch_domain::tenant::external_id(&subscription.id);
            crate::queries::subscriptions::delete(conn, &id, external).await?;
        }
        let detail = serde_json::json!({"subscriptions": live.len(), "keys": keys});
        audit(conn, &actor, "tenant.deleted", id.as_str(), detail).await?;
        Ok(Deleted::Deleted {
            tenant,
            subscriptions: live.len(),
            keys,
        })
    })
    .await
}

#[derive(QueryableByName)]
struct LiveSubscription {
    #[diesel(sql_type = Text)]
    id: String,
}

/// How many live subscriptions tenant `id` has, locking the tenant's row until the caller's
/// transaction ends, so two concurrent creations cannot both pass its `max_subscriptions`.
pub async fn lock_and_count_subscriptions(
    conn: &mut AsyncPgConnection,
    id: &TenantId,
) -> Result<i64, StoreError> {
    #[derive(QueryableByName)]
    struct Count {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    diesel::sql_query("SELECT 1 FROM tenants WHERE id = $1 FOR NO KEY UPDATE")
        .bind::<Text, _>(id.as_str())
        .execute(conn)
        .await?;
    let row: Count = diesel::sql_query(
        "SELECT count(*) AS n FROM subscriptions WHERE tenant_id = $1 AND deleted_at IS NULL",
    )
    .bind::<Text, _>(id.as_str())
    .get_result(conn)
    .await?;
    Ok(row.n)
}
