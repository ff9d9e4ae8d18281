//! API keys kept in the database — `POST /keys`, `GET /keys`, `DELETE /keys/{id}`,
//! `POST /keys/{id}/rotate` — and `GET /audit`, for admin keys only. The same functions serve
//! `dispatch-api admin keys`.

use std::time::Duration;

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use dispatch_domain::api_key::{self, ApiKeyId, Scope};
use dispatch_store::AsyncPgConnection;
use dispatch_store::pool;
use dispatch_store::queries::api_keys::{self, ApiKeyRow, NewKey, Rotated};
use serde_json::Value;

use super::AppState;
use super::key_views::{AuditView, CreatedKeyView, KeyView};
use super::path_id::PathId;
use crate::body::{Fields, whole_number};
use crate::error::{ApiError, ErrorBody};
use crate::query::{MAX_LIMIT, Query};
use crate::views::Page;

/// Overlap of a rotation unless the request says otherwise: a day.
pub const DEFAULT_KEY_OVERLAP: Duration = Duration::from_secs(86_400);
/// Longest overlap a key rotation may ask for: 30 days.
pub const MAX_KEY_OVERLAP_SECS: u64 = 30 * 86_400;

/// Issues a new key for `actor`: generated, stored as its hash, audited. Returns the row and the
/// key, which is never available again.
pub async fn issue(
    conn: &mut AsyncPgConnection,
    actor: &str,
    name: &str,
    scope: &Scope,
    expires_at: Option<DateTime<Utc>>,
) -> Result<(ApiKeyRow, String), ApiError> {
    let scope = scope.to_string();
    let generated = api_key::generate().map_err(|e| ApiError::Internal(e.into()))?;
    let row = api_keys::create(
        conn,
        actor,
        &NewKey {
            id: generated.id.as_str(),
            hash: &generated.hash,
            name,
            scope: &scope,
            expires_at,
        },
    )
    .await?;
    Ok((row, generated.key))
}

/// Replaces key `id` with a new one of the same name and scope; the old one stays valid for
/// `overlap`. `Ok(None)`: no such key.
pub async fn rotate(
    conn: &mut AsyncPgConnection,
    actor: &str,
    id: &ApiKeyId,
    overlap: Duration,
) -> Result<Option<(ApiKeyRow, String)>, ApiError> {
    let generated = api_key::generate().map_err(|e| ApiError::Internal(e.into()))?;
    let rotated = api_keys::rotate(
        conn,
        actor,
        id.as_str(),
        generated.id.as_str(),
        &generated.hash,
        overlap,
    )
    .await?;
    match rotated {
        Rotated::Rotated { new, .. } => Ok(Some((*new, generated.key))),
        Rotated::NotFound => Ok(None),
        Rotated::Inactive => Err(ApiError::Conflict {
            code: crate::error::Conflict::KeyInactive,
            message: format!("key {id} is revoked or expired: create a new one instead"),
        }),
    }
}

/// A name: 1–128 characters, no control characters.
pub fn check_name(name: &str) -> Result<(), String> {
    let len = name.chars().count();
    if !(1..=128).contains(&len) {
        return Err(format!("must be 1 to 128 characters, got {len}"));
    }
    if name.chars().any(char::is_control) {
        return Err("must not contain control characters".to_owned());
    }
    Ok(())
}

/// An expiry: an RFC 3339 time in the future.
pub fn check_expiry(text: &str) -> Result<DateTime<Utc>, String> {
    let at = DateTime::parse_from_rfc3339(text)
        .map_err(|e| format!("must be an RFC 3339 time such as 2027-01-01T00:00:00Z ({e})"))?
        .with_timezone(&Utc);
    if at <= Utc::now() {
        return Err("must be in the future".to_owned());
    }
    Ok(at)
}

fn parse_new_key(body: Value) -> Result<(String, Scope, Option<DateTime<Utc>>), ApiError> {
    let mut fields = Fields::from_body(body)?;
    let name = fields.required_str("name")?;
    check_name(&name).map_err(|e| ApiError::invalid("name", e))?;
    let scope: Scope = fields
        .required_str("scope")?
        .parse()
        .map_err(|e: dispatch_domain::ParseError| ApiError::invalid("scope", e.to_string()))?;
    let expires_at = fields
        .optional_str("expires_at")?
        .map(|t| check_expiry(&t).map_err(|e| ApiError::invalid("expires_at", e)))
        .transpose()?;
    fields.finish()?;
    Ok((name, scope, expires_at))
}

/// Create an API key.
///
/// The key is generated, answered once and stored only as its SHA-256. It works on every API
/// replica within about a second. Admin keys only.
#[utoipa::path(
    post,
    path = "/keys",
    operation_id = "create_key",
    tag = "keys",
    request_body(content = super::key_views::NewKeyRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "Created: the key, shown this once.", body = CreatedKeyView),
        (status = 400, description = "`malformed_json` or `duplicate_key`.", body = ErrorBody),
        (status = 403, description = "`forbidden`: not an admin key.", body = ErrorBody),
        (status = 413, description = "`payload_too_large`.", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`.", body = ErrorBody),
        (status = 422, description = "`invalid_field`: `name`, `scope` or `expires_at` is missing or invalid, or an unknown field.", body = ErrorBody),
    ),
)]
pub async fn create(
    auth: crate::auth::Authorized,
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let body = crate::body::read_json_body(&req, payload, state.max_body_bytes).await?;
    let (name, scope, expires_at) = parse_new_key(body)?;
    if let Some(tenant) = scope.tenant()
        && state.keys.tenant(tenant).is_none()
    {
        return Err(ApiError::invalid(
            "scope",
            format!("there is no tenant {tenant}"),
        ));
    }
    let mut conn = pool::connection(&state.pool).await?;
    let (row, key) = issue(&mut conn, &auth.actor, &name, &scope, expires_at).await?;
    state.keys.note_issued(&row, &key);
    tracing::info!(key.id = %row.id, scope = %row.scope, actor = %auth.actor, "API key created");
    Ok(HttpResponse::Created()
        .insert_header(("Cache-Control", "no-store"))
        .json(CreatedKeyView {
            view: row.into(),
            key,
        }))
}

/// List API keys.
///
/// Every key of the database, revoked and expired ones included, by id; never a key itself.
/// Keys of `DISPATCH_API_KEYS` are not listed. Admin keys only.
#[utoipa::path(
    get,
    path = "/keys",
    operation_id = "list_keys",
    tag = "keys",
    params(
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 250, description = "Page size, 1–250 (default 50)."),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page."),
    ),
    responses(
        (status = 200, description = "A page of keys.", body = Page<KeyView>),
        (status = 403, description = "`forbidden`: not an admin key.", body = ErrorBody),
        (status = 422, description = "`invalid_parameter`.", body = ErrorBody),
    ),
)]
pub async fn list(
    _auth: crate::auth::Authorized,
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let query = Query::parse(req.query_string())?;
    let (limit, cursor) = query.id_page(MAX_LIMIT)?;
    let mut conn = pool::connection(&state.pool).await?;
    let rows = api_keys::list(&mut conn, None, cursor, limit + 1).await?;
    Ok(HttpResponse::Ok().json(Page::of(rows, limit, |r| r.id.clone(), KeyView::from)))
}

/// Revoke an API key.
///
/// It stops working on every API replica within about a second. Revoking a revoked key changes
/// nothing. Admin keys only.
#[utoipa::path(
    delete,
    path = "/keys/{id}",
    operation_id = "revoke_key",
    tag = "keys",
    params(("id" = String, Path, description = "The key's id (`dk_…`).")),
    responses(
        (status = 200, description = "Revoked: the key as it now is.", body = KeyView),
        (status = 403, description = "`forbidden`: not an admin key.", body = ErrorBody),
    ),
)]
pub async fn revoke(
    auth: crate::auth::Authorized,
    id: PathId<ApiKeyId>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let mut conn = pool::connection(&state.pool).await?;
    let row = api_keys::revoke(&mut conn, &auth.actor, id.as_str())
        .await?
        .ok_or_else(|| id.not_found())?;
    tracing::info!(key.id = %row.id, actor = %auth.actor, "API key revoked");
    Ok(HttpResponse::Ok().json(KeyView::from(row)))
}

/// Rotate an API key.
///
/// Issues a new key with the same name and scope (shown once); the old one keeps working for
/// `overlap_secs` (0–2592000, default 86400: a day), or until its own expiry if sooner. Admin
/// keys only.
#[utoipa::path(
    post,
    path = "/keys/{id}/rotate",
    operation_id = "rotate_key",
    tag = "keys",
    params(("id" = String, Path, description = "The key's id (`dk_…`).")),
    request_body(content = Option<super::key_views::RotateKeyRequest>, content_type = "application/json"),
    responses(
        (status = 201, description = "The new key, shown this once.", body = CreatedKeyView),
        (status = 400, description = "`malformed_json` or `duplicate_key`.", body = ErrorBody),
        (status = 403, description = "`forbidden`: not an admin key.", body = ErrorBody),
        (status = 409, description = "`key_inactive`: the key is revoked or expired.", body = ErrorBody),
        (status = 413, description = "`payload_too_large`.", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`.", body = ErrorBody),
        (status = 422, description = "`invalid_field`: `overlap_secs` out of range, or an unknown field.", body = ErrorBody),
    ),
)]
pub async fn rotate_key(
    auth: crate::auth::Authorized,
    id: PathId<ApiKeyId>,
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let body = crate::body::read_optional_json_body(&req, payload, state.max_body_bytes).await?;
    let mut fields = Fields::from_body(body.unwrap_or_else(|| Value::Object(Default::default())))?;
    let overlap = match fields.optional("overlap_secs") {
        None => DEFAULT_KEY_OVERLAP,
        Some(v) => whole_number(&v)
            .filter(|n| *n <= MAX_KEY_OVERLAP_SECS)
            .map(Duration::from_secs)
            .ok_or_else(|| {
                ApiError::invalid(
                    "overlap_secs",
                    format!("must be a whole number of seconds from 0 to {MAX_KEY_OVERLAP_SECS}"),
                )
            })?,
    };
    fields.finish()?;
    let mut conn = pool::connection(&state.pool).await?;
    let (row, key) = rotate(&mut conn, &auth.actor, &id, overlap)
        .await?
        .ok_or_else(|| id.not_found())?;
    state.keys.note_issued(&row, &key);
    tracing::info!(key.id = %*id, new_key.id = %row.id, actor = %auth.actor, "API key rotated");
    Ok(HttpResponse::Created()
        .insert_header(("Cache-Control", "no-store"))
        .json(CreatedKeyView {
            view: row.into(),
            key,
        }))
}

/// Read the audit log.
///
/// Every change of a key — created, revoked, rotated — with who made it, newest first. Admin
/// keys only.
#[utoipa::path(
    get,
    path = "/audit",
    operation_id = "list_audit",
    tag = "keys",
    params(
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 250, description = "Page size, 1–250 (default 50)."),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page."),
    ),
    responses(
        (status = 200, description = "A page of the audit log, newest first.", body = Page<AuditView>),
        (status = 403, description = "`forbidden`: not an admin key.", body = ErrorBody),
        (status = 422, description = "`invalid_parameter`.", body = ErrorBody),
    ),
)]
pub async fn audit(
    _auth: crate::auth::Authorized,
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let query = Query::parse(req.query_string())?;
    let limit = query.limit(MAX_LIMIT)?;
    let before = crate::query::id_cursor(&query)?;
    let mut conn = pool::connection(&state.pool).await?;
    let rows = api_keys::audit_log(&mut conn, before, limit + 1).await?;
    Ok(HttpResponse::Ok().json(Page::of(rows, limit, |r| r.id.to_string(), AuditView::from)))
}
