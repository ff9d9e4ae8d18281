//! What `/keys` and `/audit` answer and accept: a key as listed (never its secret), a key just
//! created (the only answer with the key), an audit entry, and the documented request bodies.

use chrono::{DateTime, Utc};
use dispatch_store::queries::api_keys::{ApiKeyRow, AuditRow};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

/// A key as listed: never its secret.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyView {
    /// The key's id: the visible start of the key (`dk_` and 12 characters).
    #[schema(example = "dk_3kq9x0m2a7bz")]
    pub id: String,
    #[schema(example = "billing producer")]
    pub name: String,
    /// `admin`, `read` or `ingest`.
    #[schema(example = "ingest")]
    pub scope: String,
    pub created_at: DateTime<Utc>,
    /// When a request last used it (written about once a second); null: never.
    #[schema(required = true)]
    pub last_used_at: Option<DateTime<Utc>>,
    /// After this it is refused; null: never.
    #[schema(required = true)]
    pub expires_at: Option<DateTime<Utc>>,
    /// When it was revoked; null: it was not.
    #[schema(required = true)]
    pub revoked_at: Option<DateTime<Utc>>,
    /// The key this one replaced, when it was made by a rotation.
    #[schema(required = true)]
    pub rotated_from: Option<String>,
}

impl From<ApiKeyRow> for KeyView {
    fn from(r: ApiKeyRow) -> Self {
        Self {
            id: r.id,
            name: r.name,
            scope: r.scope,
            created_at: r.created_at,
            last_used_at: r.last_used_at,
            expires_at: r.expires_at,
            revoked_at: r.revoked_at,
            rotated_from: r.rotated_from,
        }
    }
}

/// A key just created: the only answer that holds the key itself.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedKeyView {
    #[serde(flatten)]
    pub view: KeyView,
    /// The key, `dk_<id>_<secret>`: shown once, never again (only its SHA-256 is stored).
    pub key: String,
}

/// One change of a key, as the audit log keeps it.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditView {
    pub id: i64,
    pub at: DateTime<Utc>,
    /// Who: a key's id, `env` (a key of `DISPATCH_API_KEYS`), `cli` (`dispatch-api admin`) or
    /// `anonymous` (authentication disabled).
    pub actor: String,
    /// `key.created`, `key.revoked` or `key.rotated`.
    pub action: String,
    /// The key concerned.
    pub target: String,
    pub detail: Value,
}

impl From<AuditRow> for AuditView {
    fn from(r: AuditRow) -> Self {
        Self {
            id: r.id,
            at: r.at,
            actor: r.actor,
            action: r.action,
            target: r.target,
            detail: r.detail,
        }
    }
}

/// `POST /keys`: `{"name", "scope", "expires_at"?}`.
#[derive(serde::Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // documentation only: the handler reads the body field by field
pub struct NewKeyRequest {
    /// For people: what the key is for. 1–128 characters, no control characters.
    #[schema(min_length = 1, max_length = 128, example = "billing producer")]
    pub name: String,
    /// `admin` (everything, including keys and the audit log), `read` (every `GET` but keys and
    /// the audit log) or `ingest` (only `POST /events` and `POST /events/batch`).
    #[schema(example = "ingest")]
    pub scope: String,
    /// When it stops working (RFC 3339, in the future). Omitted or null: never.
    pub expires_at: Option<DateTime<Utc>>,
}

/// `POST /keys/{id}/rotate`: how long the old key keeps working.
#[derive(serde::Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // documentation only
pub struct RotateKeyRequest {
    #[schema(minimum = 0, maximum = 2592000, example = 3600)]
    pub overlap_secs: Option<u64>,
}
