//! `POST /subscriptions`, `GET /subscriptions`, `GET /subscriptions/{id}`,
//! `DELETE /subscriptions/{id}` (`PATCH` is in `subscription_patch`).

use actix_web::{HttpRequest, HttpResponse, web};
use dispatch_domain::TenantId;
use dispatch_domain::signature::{generate_secret, validate_secret};
use dispatch_domain::tenant::external_id;
use dispatch_domain::{DestinationUrl, Pattern, SubscriptionId};
use dispatch_store::models::{NewSubscription, RateLimit};
use dispatch_store::pool;
use dispatch_store::queries::subscriptions;
use dispatch_store::queries::subscriptions::Inserted;
use serde::Deserialize;
use serde_json::Value;

use super::AppState;
use super::path_id::PathId;
use crate::body::{Fields, as_string, kind, read_json_body, whole_number};
use crate::error::{ApiError, ErrorBody};
use crate::openapi::NewSubscriptionRequest;
use crate::views::{Page, SubscriptionView};

/// Most patterns one subscription may list.
pub const MAX_PATTERNS: usize = 64;
pub const DEFAULT_PAGE_SIZE: i64 = 50;
pub const MAX_PAGE_SIZE: i64 = 500;

pub(crate) fn parse_patterns(value: Value) -> Result<Vec<Pattern>, ApiError> {
    let Value::Array(items) = value else {
        return Err(ApiError::invalid(
            "event_types",
            format!("must be an array of patterns, got {}", kind(&value)),
        ));
    };
    if items.is_empty() {
        return Err(ApiError::invalid(
            "event_types",
            "must list at least one pattern",
        ));
    }
    if items.len() > MAX_PATTERNS {
        return Err(ApiError::invalid(
            "event_types",
            format!(
                "must list at most {MAX_PATTERNS} patterns (got {})",
                items.len()
            ),
        ));
    }
    let mut patterns: Vec<Pattern> = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let field = format!("event_types[{i}]");
        let text = as_string(&field, item)?;
        let pattern =
            Pattern::parse(&text).map_err(|e| ApiError::invalid(&field, e.to_string()))?;
        if !patterns.contains(&pattern) {
            patterns.push(pattern);
        }
    }
    Ok(patterns)
}

/// Highest rate limit a destination may have, requests per second.
pub const MAX_RATE_PER_SECOND: f64 = 100_000.0;
/// Largest burst a destination may have.
pub const MAX_BURST: i64 = 100_000;

/// `{"per_second": 100, "burst": 10}`: both optional, defaults as the seed's.
pub(crate) fn parse_rate_limit(value: Value) -> Result<RateLimit, ApiError> {
    let mut fields = match value {
        Value::Object(_) => Fields::from_body(value)?,
        other => {
            return Err(ApiError::invalid(
                "rate_limit",
                format!(
                    "must be an object like {{\"per_second\": 100, \"burst\": 10}}, got {}",
                    kind(&other)
                ),
            ));
        }
    };
    let mut limit = RateLimit::default();
    if let Some(v) = fields.optional("per_second") {
        limit.per_second = v
            .as_f64()
            .filter(|n| *n > 0.0 && *n <= MAX_RATE_PER_SECOND)
            .ok_or_else(|| {
                ApiError::invalid(
                    "rate_limit.per_second",
                    format!("must be a number above 0 and at most {MAX_RATE_PER_SECOND}"),
                )
            })?;
    }
    if let Some(v) = fields.optional("burst") {
        limit.burst = whole_number(&v)
            .and_then(|n| i64::try_from(n).ok())
            .filter(|n| (1..=MAX_BURST).contains(n))
            .and_then(|n| i32::try_from(n).ok())
            .ok_or_else(|| {
                ApiError::invalid(
                    "rate_limit.burst",
                    format!("must be a whole number from 1 to {MAX_BURST}"),
                )
            })?;
    }
    fields.finish().map_err(|e| match e {
        ApiError::InvalidField { field, message } => {
            ApiError::invalid(format!("rate_limit.{field}"), message)
        }
        other => other,
    })?;
    Ok(limit)
}

/// Checks a signing secret a caller gave (for a new subscription or a rotation): no control
/// characters, and the domain's rules.
pub(crate) fn check_secret(secret: String) -> Result<String, ApiError> {
    if secret.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            "secret",
            "must not contain control characters",
        ));
    }
    validate_secret(&secret).map_err(|e| ApiError::invalid("secret", e.to_string()))?;
    Ok(secret)
}

/// Turns a request body into a valid new subscription, naming the first field at fault.
pub fn parse_new_subscription(tenant: &TenantId, body: Value) -> Result<NewSubscription, ApiError> {
    let mut fields = Fields::from_body(body)?;
    let id = match fields.optional_str("id")? {
        Some(id) => {
            SubscriptionId::parse(&id).map_err(|e| ApiError::invalid("id", e.to_string()))?
        }
        None => SubscriptionId::generate(),
    };
    let url = fields.required_str("url")?;
    let url = DestinationUrl::parse(&url).map_err(|e| ApiError::invalid("url", e.to_string()))?;
    let event_types = parse_patterns(fields.required("event_types")?)?;
    let secret = match fields.optional_str("secret")? {
        Some(secret) => check_secret(secret)?,
        // Every subscription is signed: one created without a secret gets a generated one,
        // returned once in the create response.
        None => generate_secret().map_err(|e| ApiError::Internal(anyhow::anyhow!(e)))?,
    };
    let rate_limit = match fields.optional("rate_limit") {
        Some(value) => parse_rate_limit(value)?,
        None => RateLimit::default(),
    };
    let (settings, enabled) = super::subscription_settings::take_settings(&mut fields)?;
    fields.finish()?;
    Ok(NewSubscription {
        tenant: tenant.clone(),
        rate_limit,
        id,
        url,
        event_types,
        secret: Some(secret),
        settings,
        enabled,
    })
}

/// Create a subscription.
///
/// The answer is the only one that shows the secret (given or generated).
#[utoipa::path(
    post,
    path = "/subscriptions",
    operation_id = "create_subscription",
    tag = "subscriptions",
    request_body(content = NewSubscriptionRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "Created; `secret` is shown this once.", body = SubscriptionView,
            headers(("Location" = String, description = "`/subscriptions/{id}`"))),
        (status = 400, description = "`malformed_json`: the body is not valid JSON (an empty body, data after the value, bytes that are not UTF-8 and a byte order mark are not). `duplicate_key`: an object has the same key twice (`field` is its path).", body = ErrorBody),
        (status = 409, description = "`subscription_exists`: the id is taken, possibly by a deleted subscription (ids are never reused).", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: the body exceeds `max_body_bytes`.", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`: `Content-Type` is present and not JSON.", body = ErrorBody),
        (status = 422, description = "`invalid_field`: the body is not an object, or a field (named in `field`) is missing, invalid or unknown. `destination_refused` (`field`: `url`): the URL's host is, or resolves to, a loopback, private, link-local, CGNAT, multicast, unspecified, documentation or reserved address not in `allow_destinations`.", body = ErrorBody),
    ),
)]
pub async fn create(
    auth: crate::auth::Authorized,
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let body = read_json_body(&req, payload, state.max_body_bytes).await?;
    create_with(&state, &auth.tenant, body).await
}

/// `POST /subscriptions` once its body is read (the console's create runs this too).
pub(crate) async fn create_with(
    state: &AppState,
    tenant: &TenantId,
    body: serde_json::Value,
) -> Result<HttpResponse, ApiError> {
    let new = parse_new_subscription(tenant, body)?;
    if let Some(filter) = &new.settings.filter {
        super::subscription_filter::check(state, filter).await?;
    }
    crate::destination::check(&state.destinations, &new.url).await?;
    let mut conn = pool::connection(&state.pool).await?;
    // The secret is sealed with the active key on its way into the table.
    let max = state.limits_of(tenant).max_subscriptions;
    let row = match subscriptions::insert_within(&mut conn, &new, &state.secret_keys, max).await? {
        Inserted::Created(row) => *row,
        Inserted::Taken => {
            return Err(ApiError::SubscriptionExists(format!(
                "subscription id {:?} is taken (ids of deleted subscriptions are not reused)",
                new.id.as_str()
            )));
        }
        Inserted::LimitReached(max) => {
            return Err(ApiError::Conflict {
                code: crate::error::Conflict::SubscriptionLimitReached,
                message: format!(
                    "tenant {tenant} has {max} live subscriptions, as many as its \
                     max_subscriptions allows; delete one or raise the limit"
                ),
            });
        }
    };
    tracing::info!(subscription.id = %row.id, "subscription created");
    Ok(HttpResponse::Created()
        .insert_header(("Location", format!("/subscriptions/{}", new.id)))
        .insert_header(("Cache-Control", "no-store"))
        .json(SubscriptionView::created(row, new.secret)))
}

#[derive(Debug, Deserialize)]
pub struct ListParams {
    limit: Option<String>,
    cursor: Option<String>,
}

/// List subscriptions that are not deleted, ordered by id, a page at a time.
///
/// Keyset pagination: subscriptions created or deleted while paging never make others repeat or
/// go missing. Unknown query parameters are ignored; one given twice is `422` with
/// `field: "query"`.
#[utoipa::path(
    get,
    path = "/subscriptions",
    operation_id = "list_subscriptions",
    tag = "subscriptions",
    params(
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 500, description = "Page size, 1–500; default 50."),
        ("cursor" = Option<String>, Query, max_length = 128, pattern = r"^[A-Za-z0-9_.:-]*$", description = "The previous page's `next_cursor`, unchanged (opaque). Empty or absent: the first page."),
    ),
    responses(
        (status = 200, description = "A page; `next_cursor` is null on the last one.", body = Page<SubscriptionView>),
        (status = 422, description = "`invalid_parameter`: `limit`, `cursor`, or `query` (a parameter given twice).", body = ErrorBody),
    ),
)]
pub async fn list(
    auth: crate::auth::Authorized,
    params: web::Query<ListParams>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let limit = match params.limit.as_deref() {
        None => DEFAULT_PAGE_SIZE,
        Some(text) => text
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=MAX_PAGE_SIZE).contains(n))
            .ok_or_else(|| ApiError::InvalidParam {
                param: "limit".to_owned(),
                message: format!("must be a whole number from 1 to {MAX_PAGE_SIZE}, got {text:?}"),
            })?,
    };
    let cursor = params.cursor.as_deref().filter(|c| !c.is_empty());
    if let Some(c) = cursor {
        check_cursor(c)?;
    }
    let mut conn = pool::connection(&state.pool).await?;
    // One extra row tells whether another page exists.
    let mut rows = subscriptions::list_active(&mut conn, &auth.tenant, cursor, limit + 1).await?;
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let next_cursor = more
        .then(|| rows.last().map(|r| external_id(&r.id).to_owned()))
        .flatten();
    Ok(HttpResponse::Ok().json(Page {
        data: rows.into_iter().map(SubscriptionView::public).collect(),
        next_cursor,
    }))
}

/// Longest `?cursor=` accepted: a cursor is a subscription id, and ids are at most this long.
pub const MAX_CURSOR_LEN: usize = 128;

/// A cursor is the last id of the previous page, used only as a bound (`id > cursor`), so any
/// text the document's pattern allows is a valid bound (`.` included); other text is refused.
pub(crate) fn check_cursor(cursor: &str) -> Result<(), ApiError> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-');
    if cursor.len() > MAX_CURSOR_LEN || !cursor.chars().all(allowed) {
        return Err(ApiError::InvalidParam {
            param: "cursor".to_owned(),
            message: format!(
                "is not a cursor this API returned: at most {MAX_CURSOR_LEN} characters from \
                 `A-Z a-z 0-9 _ . : -`"
            ),
        });
    }
    Ok(())
}

/// Get a subscription (without its secret).
#[utoipa::path(
    get,
    path = "/subscriptions/{id}",
    operation_id = "get_subscription",
    tag = "subscriptions",
    params(("id" = String, Path, description = "The subscription's id.")),
    responses(
        (status = 200, description = "The subscription; `secret` is never shown here.", body = SubscriptionView),
    ),
)]
pub async fn get(
    auth: crate::auth::Authorized,
    id: PathId<SubscriptionId>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let mut conn = pool::connection(&state.pool).await?;
    let row = subscriptions::find_active(&mut conn, &auth.tenant, id.as_str())
        .await?
        .ok_or_else(|| id.not_found())?;
    Ok(HttpResponse::Ok().json(SubscriptionView::public(row)))
}

/// Delete a subscription.
///
/// In one transaction: marks it deleted (kept, so event histories still name it; its id is
/// never reused) and cancels every unfinished delivery of it.
#[utoipa::path(
    delete,
    path = "/subscriptions/{id}",
    operation_id = "delete_subscription",
    tag = "subscriptions",
    params(("id" = String, Path, description = "The subscription's id.")),
    responses(
        (status = 204, description = "Deleted; unfinished deliveries cancelled."),
    ),
)]
pub async fn delete(
    auth: crate::auth::Authorized,
    id: PathId<SubscriptionId>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    delete_with(&state, &auth.tenant, &id).await
}

/// `DELETE /subscriptions/{id}` (the console's delete runs this too).
pub(crate) async fn delete_with(
    state: &AppState,
    tenant: &TenantId,
    id: &PathId<SubscriptionId>,
) -> Result<HttpResponse, ApiError> {
    let mut conn = pool::connection(&state.pool).await?;
    let cancelled = subscriptions::delete(&mut conn, tenant, id.as_str())
        .await?
        .ok_or_else(|| id.not_found())?;
    tracing::info!(subscription.id = %**id, cancelled, "subscription deleted");
    Ok(HttpResponse::NoContent().finish())
}
