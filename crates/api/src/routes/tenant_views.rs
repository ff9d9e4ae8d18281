//! What `/tenants` answers and accepts: a tenant with its own limits, and the documented
//! request bodies.

use dispatch_store::queries::tenants::TenantRow;
use serde::Serialize;
use utoipa::ToSchema;

/// A tenant.
#[derive(Debug, Serialize, ToSchema)]
pub struct TenantView {
    #[schema(example = "acme")]
    pub id: String,
    #[schema(example = "Acme Corp")]
    pub name: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// Its own limits; a null member: the configured default (`DISPATCH_TENANT_*`).
    pub limits: LimitsView,
}

/// A tenant's own limits (null: the configured default applies).
#[derive(Debug, Serialize, ToSchema)]
pub struct LimitsView {
    #[schema(required = true)]
    pub ingest_rate_per_sec: Option<f64>,
    #[schema(required = true)]
    pub ingest_burst: Option<i32>,
    #[schema(required = true)]
    pub max_subscriptions: Option<i32>,
    #[schema(required = true)]
    pub max_payload_bytes: Option<i32>,
}

impl From<TenantRow> for TenantView {
    fn from(row: TenantRow) -> Self {
        let limits = row.limits();
        Self {
            id: row.id,
            name: row.name,
            created_at: row.created_at,
            limits: LimitsView {
                ingest_rate_per_sec: limits.ingest_rate_per_sec,
                ingest_burst: limits.ingest_burst,
                max_subscriptions: limits.max_subscriptions,
                max_payload_bytes: limits.max_payload_bytes,
            },
        }
    }
}

/// `POST /tenants`.
#[derive(serde::Deserialize, ToSchema)]
#[allow(dead_code)] // documentation only: the handler reads the body field by field
pub struct NewTenantRequest {
    /// 1–40 characters from `[a-z0-9_-]`, starting with a letter or digit; never reused.
    #[schema(example = "acme")]
    pub id: String,
    /// 1–128 characters.
    #[schema(example = "Acme Corp")]
    pub name: String,
    /// Its own limits; absent or null members: the configured defaults.
    pub limits: Option<LimitsRequest>,
}

/// Limits: each a positive number, or null for the configured default.
#[derive(serde::Deserialize, ToSchema)]
#[allow(dead_code)] // documentation only
pub struct LimitsRequest {
    pub ingest_rate_per_sec: Option<f64>,
    pub ingest_burst: Option<i32>,
    pub max_subscriptions: Option<i32>,
    pub max_payload_bytes: Option<i32>,
}

/// `PATCH /tenants/{id}`: the limits replace the tenant's own.
#[derive(serde::Deserialize, ToSchema)]
#[allow(dead_code)] // documentation only
pub struct TenantPatchRequest {
    pub limits: LimitsRequest,
}

/// `POST /tenants/{id}/keys`.
#[derive(serde::Deserialize, ToSchema)]
#[allow(dead_code)] // documentation only
pub struct NewTenantKeyRequest {
    #[schema(example = "billing producer")]
    pub name: String,
    /// `tenant` (everything in the tenant), `read` (its `GET`s) or `ingest` (only
    /// `POST /events` and `/events/batch`).
    #[schema(example = "ingest")]
    pub scope: String,
    /// RFC 3339, in the future; absent: never expires.
    pub expires_at: Option<String>,
}
