//! `/tenants`: creating, listing, limiting and deleting tenants, and issuing and listing their
//! keys (admin keys; `read` keys may read tenants, not their keys). Every change is audited in
//! its transaction, and noted in this replica's cache at once (the others within a second).

use actix_web::{HttpRequest, HttpResponse, web};
use dispatch_domain::TenantId;
use dispatch_domain::api_key::Scope;
use dispatch_store::pool;
use dispatch_store::queries::api_keys;
use dispatch_store::queries::tenants::{self, Deleted, TenantLimits};
use serde_json::Value;

use super::AppState;
use super::key_views::{CreatedKeyView, KeyView};
use super::path_id::PathId;
use super::tenant_views::TenantView;
use crate::body::Fields;
use crate::error::{ApiError, Conflict, ErrorBody};
use crate::query::Query;
use crate::views::Page;

const MAX_LIMIT: i64 = 250;

fn limits_of(value: Option<Value>) -> Result<TenantLimits, ApiError> {
    let Some(value) = value.filter(|v| !v.is_null()) else {
        return Ok(TenantLimits::default());
    };
    let mut fields = Fields::from_body(value).map_err(|_| {
        ApiError::invalid("limits", "must be an object of ingest_rate_per_sec, ingest_burst, max_subscriptions, max_payload_bytes")
    })?;
    let mut whole = |name: &str, min: i64, max: i64| -> Result<Option<i32>, ApiError> {
        match fields.optional(name) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_i64()
                .filter(|n| (min..=max).contains(n))
                .and_then(|n| i32::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| {
                    ApiError::invalid(
                        format!("limits.{name}"),
                        format!("must be a whole number from {min} to {max}, or null"),
                    )
                }),
        }
    };
    let ingest_burst = whole("ingest_burst", 1, 1_000_000)?;
    let max_subscriptions = whole("max_subscriptions", 0, 1_000_000)?;
    let max_payload_bytes = whole("max_payload_bytes", 1, 64 << 20)?;
    let ingest_rate_per_sec = match fields.optional("ingest_rate_per_sec") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_f64()
                .filter(|r| *r > 0.0 && *r <= 1_000_000.0)
                .ok_or_else(|| {
                    ApiError::invalid(
                        "limits.ingest_rate_per_sec",
                        "must be a number above 0 and at most 1000000, or null",
                    )
                })?,
        ),
    };
    fields.finish()?;
    Ok(TenantLimits {
        ingest_rate_per_sec,
        ingest_burst,
        max_subscriptions,
        max_payload_bytes,
    })
}

/// Create a tenant.
#[utoipa::path(
    post,
    path = "/tenants",
    operation_id = "create_tenant",
    tag = "tenants",
    request_body(content = super::tenant_views::NewTenantRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "Created.", body = TenantView),
        (status = 400, description = "`malformed_json` or `duplicate_key`.", body = ErrorBody),
        (status = 413, description = "`payload_too_large`.", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`.", body = ErrorBody),
        (status = 403, description = "`forbidden`: not an admin key.", body = ErrorBody),
        (status = 409, description = "`tenant_exists`: the id is taken (ids are never reused).", body = ErrorBody),
        (status = 422, description = "`invalid_field`: `id`, `name` or a limit is missing or invalid, or an unknown field.", body = ErrorBody),
    ),
)]
pub async fn create(
    auth: crate::auth::Authorized,
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let body = crate::body::read_json_body(&req, payload, state.max_body_bytes).await?;
    let mut fields = Fields::from_body(body)?;
    let id = TenantId::parse(&fields.required_str("id")?)
        .map_err(|e| ApiError::invalid("id", e.to_string()))?;
    let name = fields.required_str("name")?;
    super::keys::check_name(&name).map_err(|e| ApiError::invalid("name", e))?;
    let limits = limits_of(fields.optional("limits"))?;
    fields.finish()?;
    let mut conn = pool::connection(&state.pool).await?;
    let row = tenants::create(&mut conn, &auth.actor, &id, &name, &limits)
        .await?
        .ok_or_else(|| ApiError::Conflict {
            code: Conflict::TenantExists,
            message: format!("tenant id {id} is taken (ids of deleted tenants are not reused)"),
        })?;
    state.keys.note_tenant(&row);
    tracing::info!(tenant = %row.id, actor = %auth.actor, "tenant created");
    Ok(HttpResponse::Created()
        .insert_header(("Location", format!("/tenants/{}", row.id)))
        .json(TenantView::from(row)))
}

/// List tenants.
#[utoipa::path(
    get,
    path = "/tenants",
    operation_id = "list_tenants",
    tag = "tenants",
    params(
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 250, description = "Page size, 1–250 (default 50)."),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page."),
    ),
    responses(
        (status = 200, description = "A page of live tenants, by id.", body = Page<TenantView>),
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
    let rows = tenants::list(&mut conn, cursor, limit + 1).await?;
    Ok(HttpResponse::Ok().json(Page::of(rows, limit, |r| r.id.clone(), TenantView::from)))
}

/// Get a tenant.
#[utoipa::path(
    get,
    path = "/tenants/{id}",
    operation_id = "get_tenant",
    tag = "tenants",
    params(("id" = String, Path, description = "The tenant's id.")),
    responses((status = 200, description = "The tenant.", body = TenantView)),
)]
pub async fn get(
    _auth: crate::auth::Authorized,
    id: PathId<TenantId>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let mut conn = pool::connection(&state.pool).await?;
    let row = tenants::find(&mut conn, &id)
        .await?
        .filter(|r| r.deleted_at.is_none())
        .ok_or_else(|| id.not_found())?;
    Ok(HttpResponse::Ok().json(TenantView::from(row)))
}

/// Change a tenant's limits.
#[utoipa::path(
    patch,
    path = "/tenants/{id}",
    operation_id = "update_tenant",
    tag = "tenants",
    params(("id" = String, Path, description = "The tenant's id.")),
    request_body(content = super::tenant_views::TenantPatchRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The tenant with its new limits.", body = TenantView),
        (status = 400, description = "`malformed_json` or `duplicate_key`.", body = ErrorBody),
        (status = 413, description = "`payload_too_large`.", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`.", body = ErrorBody),
        (status = 422, description = "`invalid_field`: a limit is invalid, or an unknown field.", body = ErrorBody),
    ),
)]
pub async fn update(
    auth: crate::auth::Authorized,
    id: PathId<TenantId>,
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let body = crate::body::read_json_body(&req, payload, state.max_body_bytes).await?;
    let mut fields = Fields::from_body(body)?;
    let limits = limits_of(Some(fields.required("limits")?))?;
    fields.finish()?;
    let mut conn = pool::connection(&state.pool).await?;
    let row = tenants::set_limits(&mut conn, &auth.actor, &id, &limits)
        .await?
        .ok_or_else(|| id.not_found())?;
    state.keys.note_tenant(&row);
    Ok(HttpResponse::Ok().json(TenantView::from(row)))
}

/// Delete a tenant.
///
/// In one transaction: marks it deleted (its id is never reused), revokes its keys and deletes
/// its subscriptions (their unfinished deliveries cancelled). Its events stay until retention.
#[utoipa::path(
    delete,
    path = "/tenants/{id}",
    operation_id = "delete_tenant",
    tag = "tenants",
    params(("id" = String, Path, description = "The tenant's id.")),
    responses(
        (status = 204, description = "Deleted."),
        (status = 409, description = "`default_tenant`: the default tenant cannot be deleted.", body = ErrorBody),
    ),
)]
pub async fn delete(
    auth: crate::auth::Authorized,
    id: PathId<TenantId>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let mut conn = pool::connection(&state.pool).await?;
    match tenants::delete(&mut conn, &auth.actor, &id).await? {
        Deleted::Deleted {
            tenant,
            subscriptions,
            keys,
        } => {
            state.keys.note_tenant(&tenant);
            state.keys.reload(&state.pool).await?;
            tracing::info!(tenant = %tenant.id, subscriptions, keys, "tenant deleted");
            Ok(HttpResponse::NoContent().finish())
        }
        Deleted::Default => Err(ApiError::Conflict {
            code: Conflict::DefaultTenant,
            message: "the default tenant cannot be deleted".to_owned(),
        }),
        Deleted::NotFound => Err(id.not_found()),
    }
}

/// A tenant key's scope from the short form `tenant`, `read` or `ingest` (or the full form,
/// naming this tenant).
fn tenant_scope(tenant: &TenantId, text: &str) -> Result<Scope, ApiError> {
    let scope = match text {
        "tenant" => Scope::Tenant(tenant.clone()),
        "read" => Scope::TenantRead(tenant.clone()),
        "ingest" => Scope::Ingest(tenant.clone()),
        other => other
            .parse::<Scope>()
            .map_err(|e| ApiError::invalid("scope", e.to_string()))?,
    };
    if scope.tenant() != Some(tenant) {
        return Err(ApiError::invalid(
            "scope",
            format!("must be tenant, read or ingest (a key of tenant {tenant}), got {text:?}"),
        ));
    }
    Ok(scope)
}

/// Issue a key for a tenant.
///
/// The key is answered once and stored only as its SHA-256; it works on every API replica
/// within about a second, only in this tenant.
#[utoipa::path(
    post,
    path = "/tenants/{id}/keys",
    operation_id = "create_tenant_key",
    tag = "tenants",
    params(("id" = String, Path, description = "The tenant's id.")),
    request_body(content = super::tenant_views::NewTenantKeyRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "Created: the key, shown this once.", body = CreatedKeyView),
        (status = 400, description = "`malformed_json` or `duplicate_key`.", body = ErrorBody),
        (status = 413, description = "`payload_too_large`.", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`.", body = ErrorBody),
        (status = 422, description = "`invalid_field`: `name`, `scope` or `expires_at`.", body = ErrorBody),
    ),
)]
pub async fn create_key(
    auth: crate::auth::Authorized,
    id: PathId<TenantId>,
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    if state.keys.tenant(&id).is_none() {
        return Err(id.not_found());
    }
    let body = crate::body::read_json_body(&req, payload, state.max_body_bytes).await?;
    let mut fields = Fields::from_body(body)?;
    let name = fields.required_str("name")?;
    super::keys::check_name(&name).map_err(|e| ApiError::invalid("name", e))?;
    let scope = tenant_scope(&id, &fields.required_str("scope")?)?;
    let expires_at = fields
        .optional_str("expires_at")?
        .map(|t| super::keys::check_expiry(&t).map_err(|e| ApiError::invalid("expires_at", e)))
        .transpose()?;
    fields.finish()?;
    let mut conn = pool::connection(&state.pool).await?;
    let (row, key) = super::keys::issue(&mut conn, &auth.actor, &name, &scope, expires_at).await?;
    state.keys.note_issued(&row, &key);
    tracing::info!(key.id = %row.id, scope = %row.scope, actor = %auth.actor, "tenant key created");
    Ok(HttpResponse::Created()
        .insert_header(("Cache-Control", "no-store"))
        .json(CreatedKeyView {
            view: row.into(),
            key,
        }))
}

/// List a tenant's keys.
#[utoipa::path(
    get,
    path = "/tenants/{id}/keys",
    operation_id = "list_tenant_keys",
    tag = "tenants",
    params(
        ("id" = String, Path, description = "The tenant's id."),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 250, description = "Page size, 1–250 (default 50)."),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page."),
    ),
    responses(
        (status = 200, description = "A page of the tenant's keys, by id (revoked and expired included).", body = Page<KeyView>),
        (status = 422, description = "`invalid_parameter`: `limit` or `cursor`.", body = ErrorBody),
    ),
)]
pub async fn list_keys(
    _auth: crate::auth::Authorized,
    id: PathId<TenantId>,
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let query = Query::parse(req.query_string())?;
    let (limit, cursor) = query.id_page(MAX_LIMIT)?;
    let mut conn = pool::connection(&state.pool).await?;
    if tenants::find(&mut conn, &id).await?.is_none() {
        return Err(id.not_found());
    }
    let rows = api_keys::list(&mut conn, Some(id.as_str()), cursor, limit + 1).await?;
    Ok(HttpResponse::Ok().json(Page::of(rows, limit, |r| r.id.clone(), KeyView::from)))
}
