//! `GET /deliveries`, `GET /deliveries/{id}`, `GET /deliveries/{id}/attempts` and
//! `POST /deliveries/{id}/retry`: finding deliveries and sending one again.

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use dispatch_domain::TenantId;
use dispatch_domain::{DeliveryStatus, EventId, SubscriptionId};
use dispatch_store::pool;
use dispatch_store::queries::listing::{self, AttemptsOf, DeliveryFilter, DeliveryItem};
use dispatch_store::queries::requeue::{self, Retried, RetryRefusal};
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use super::path_id::{DeliveryId, PathId};
use crate::body::Fields;
use crate::error::{ApiError, ErrorBody};
use crate::openapi::{AttemptErrorCode, DeliveryStatusSchema};
use crate::query::{self, MAX_LIMIT, Query};
use crate::views::{AttemptView, Page};

/// One delivery with its last attempt's outcome (`GET /deliveries[/{id}]`).
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryDetailView {
    /// The delivery's id (`/deliveries/{id}`).
    #[schema(example = 42)]
    pub id: i64,
    #[schema(example = "evt_123")]
    pub event_id: String,
    #[schema(example = "sub_123")]
    pub subscription_id: String,
    #[schema(value_type = DeliveryStatusSchema)]
    pub status: DeliveryStatus,
    /// Attempts since it was created or last replayed.
    #[schema(minimum = 0)]
    pub attempts: i32,
    /// When the next attempt is due; only for `pending` and `retrying`, else null.
    #[schema(required = true)]
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// Why the latest attempt failed; null once one succeeded.
    #[schema(required = true)]
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    /// Last change of this delivery.
    pub updated_at: DateTime<Utc>,
    /// The most recent attempt's outcome; null before the first attempt.
    #[schema(required = true)]
    pub last_attempt: Option<LastAttemptView>,
}

/// How the most recent attempt of a delivery ended.
#[derive(Debug, Serialize, ToSchema)]
pub struct LastAttemptView {
    /// The destination's HTTP status; null when no answer came.
    #[schema(required = true, example = 500)]
    pub status_code: Option<i32>,
    /// Why it failed; null on a 2xx.
    #[schema(value_type = Option<AttemptErrorCode>, required = true)]
    pub error_code: Option<String>,
    /// When it was recorded.
    pub at: DateTime<Utc>,
}

impl DeliveryDetailView {
    pub fn new(item: DeliveryItem) -> Result<Self, ApiError> {
        let status = item.status()?;
        Ok(Self {
            next_attempt_at: matches!(status, DeliveryStatus::Pending | DeliveryStatus::Retrying)
                .then_some(item.next_attempt_at),
            last_attempt: item.last_attempt_at.map(|at| LastAttemptView {
                status_code: item.last_status_code,
                error_code: item.last_error_code,
                at,
            }),
            id: item.id,
            event_id: crate::views::external(item.event_id),
            subscription_id: crate::views::external(item.subscription_id),
            status,
            attempts: item.attempts,
            last_error: item.last_error,
            created_at: item.created_at,
            updated_at: item.updated_at,
        })
    }
}

/// The filters `GET /deliveries` and `POST /replays` share, from a query string.
pub fn delivery_filter(query: &Query) -> Result<DeliveryFilter, ApiError> {
    let (updated_after, updated_before) = query.window("updated_after", "updated_before")?;
    Ok(DeliveryFilter {
        statuses: query.statuses()?,
        subscription_id: query.id("subscription_id", SubscriptionId::parse)?,
        event_id: query.id("event_id", EventId::parse)?,
        updated_after,
        updated_before,
    })
}

/// List deliveries, newest first, a page at a time.
///
/// Filters narrow the list and combine; unknown query parameters are ignored.
#[utoipa::path(
    get,
    path = "/deliveries",
    operation_id = "list_deliveries",
    tag = "deliveries",
    params(
        ("status" = Option<Vec<DeliveryStatusSchema>>, Query, explode = true, description = "Only deliveries in these statuses (repeat the parameter for several)."),
        ("subscription_id" = Option<String>, Query, description = "Only deliveries to this subscription."),
        ("event_id" = Option<String>, Query, description = "Only deliveries of this event."),
        ("updated_after" = Option<String>, Query, format = DateTime, description = "Last changed at or after this RFC 3339 time."),
        ("updated_before" = Option<String>, Query, format = DateTime, description = "Last changed before this RFC 3339 time."),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 250, description = "Page size, 1–250; default 50."),
        ("cursor" = Option<String>, Query, max_length = 128, pattern = r"^[A-Za-z0-9_.:-]*$", description = "The previous page's `next_cursor`, unchanged (opaque)."),
    ),
    responses(
        (status = 200, description = "A page; `next_cursor` is null on the last one.", body = Page<DeliveryDetailView>),
        (status = 422, description = "`invalid_parameter`: a filter, `limit` or `cursor` is invalid, or a parameter that is not repeatable was given twice (`field` names it).", body = ErrorBody),
    ),
)]
pub async fn list(
    auth: crate::auth::Authorized,
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let query = Query::parse(req.query_string())?;
    let filter = delivery_filter(&query)?;
    let limit = query.limit(MAX_LIMIT)?;
    let cursor = query::id_cursor(&query)?;
    let mut conn = pool::connection(&state.pool).await?;
    // One extra row tells whether another page exists.
    let mut rows = listing::deliveries(&mut conn, &auth.tenant, &filter, cursor, limit + 1).await?;
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let next_cursor = more
        .then(|| rows.last().map(|r| r.id.to_string()))
        .flatten();
    Ok(HttpResponse::Ok().json(Page {
        data: rows
            .into_iter()
            .map(DeliveryDetailView::new)
            .collect::<Result<Vec<_>, _>>()?,
        next_cursor,
    }))
}

/// Get one delivery.
#[utoipa::path(
    get,
    path = "/deliveries/{id}",
    operation_id = "get_delivery",
    tag = "deliveries",
    params(("id" = i64, Path, description = "The delivery's id.")),
    responses(
        (status = 200, description = "The delivery.", body = DeliveryDetailView),
    ),
)]
pub async fn get(
    auth: crate::auth::Authorized,
    path: PathId<DeliveryId>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let DeliveryId(id) = *path;
    let mut conn = pool::connection(&state.pool).await?;
    let item = listing::delivery(&mut conn, &auth.tenant, id)
        .await?
        .ok_or_else(|| path.not_found())?;
    Ok(HttpResponse::Ok().json(DeliveryDetailView::new(item)?))
}

/// A page of attempts, oldest first: shared by `/events/{id}/attempts` and
/// `/deliveries/{id}/attempts`.
pub(crate) async fn attempts_page(
    conn: &mut dispatch_store::AsyncPgConnection,
    tenant: &TenantId,
    of: AttemptsOf<'_>,
    query: &Query,
) -> Result<HttpResponse, ApiError> {
    let limit = query.limit(MAX_LIMIT)?;
    let cursor = query::id_cursor(query)?;
    let mut rows = listing::attempts(conn, tenant, of, cursor, limit + 1).await?;
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let next_cursor = more
        .then(|| rows.last().map(|r| r.id.to_string()))
        .flatten();
    Ok(HttpResponse::Ok().json(Page {
        data: rows.into_iter().map(AttemptView::from).collect(),
        next_cursor,
    }))
}

/// List a delivery's attempts, oldest first, a page at a time.
#[utoipa::path(
    get,
    path = "/deliveries/{id}/attempts",
    operation_id = "list_delivery_attempts",
    tag = "deliveries",
    params(
        ("id" = i64, Path, description = "The delivery's id."),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 250, description = "Page size, 1–250; default 50."),
        ("cursor" = Option<String>, Query, max_length = 128, pattern = r"^[A-Za-z0-9_.:-]*$", description = "The previous page's `next_cursor`, unchanged (opaque)."),
    ),
    responses(
        (status = 200, description = "A page of attempts.", body = Page<AttemptView>),
        (status = 422, description = "`invalid_parameter`: `limit` or `cursor`.", body = ErrorBody),
    ),
)]
pub async fn attempts(
    auth: crate::auth::Authorized,
    path: PathId<DeliveryId>,
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let DeliveryId(id) = *path;
    let query = Query::parse(req.query_string())?;
    let mut conn = pool::connection(&state.pool).await?;
    if listing::delivery(&mut conn, &auth.tenant, id)
        .await?
        .is_none()
    {
        return Err(path.not_found());
    }
    attempts_page(&mut conn, &auth.tenant, AttemptsOf::Delivery(id), &query).await
}

/// `POST /deliveries/{id}/retry`: `{"resend": true}` to send a delivered one again.
#[derive(serde::Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // documentation only: the handler reads the body field by field
pub struct RetryRequest {
    /// Send a `delivered` delivery again (same `webhook-id`, so receivers can dedupe).
    #[schema(default = false)]
    pub resend: Option<bool>,
}

/// Retry one delivery now.
///
/// A `failed` one (or a `delivered` one with `resend: true`) goes back in the queue with a
/// fresh retry schedule, due now; a `retrying` one is due now, keeping its attempt count. The
/// body is optional.
#[utoipa::path(
    post,
    path = "/deliveries/{id}/retry",
    operation_id = "retry_delivery",
    tag = "deliveries",
    params(("id" = i64, Path, description = "The delivery's id.")),
    request_body(content = Option<RetryRequest>, content_type = "application/json"),
    responses(
        (status = 202, description = "Queued, due now: the delivery as it now is.", body = DeliveryDetailView),
        (status = 400, description = "`malformed_json` or `duplicate_key`.", body = ErrorBody),
        (status = 409, description = "`delivery_in_flight`: a worker holds it now. `delivery_queued`: it waits for its first attempt already. `delivery_delivered`: it was delivered; send `{\"resend\": true}` to send it again. `subscription_deleted`: its subscription was deleted.", body = ErrorBody),
        (status = 413, description = "`payload_too_large`.", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`.", body = ErrorBody),
        (status = 422, description = "`invalid_field`: `resend` is not a boolean, or an unknown field.", body = ErrorBody),
    ),
)]
pub async fn retry(
    auth: crate::auth::Authorized,
    path: PathId<DeliveryId>,
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let body = crate::body::read_optional_json_body(&req, payload, state.max_body_bytes).await?;
    retry_with(&state, &auth.tenant, &path, body).await
}

/// `POST /deliveries/{id}/retry` once its body (if any) is read (the console's retry runs this
/// too).
pub(crate) async fn retry_with(
    state: &AppState,
    tenant: &TenantId,
    path: &PathId<DeliveryId>,
    body: Option<serde_json::Value>,
) -> Result<HttpResponse, ApiError> {
    let DeliveryId(id) = **path;
    let resend = match body {
        None => false,
        Some(body) => {
            let mut fields = Fields::from_body(body)?;
            let resend = match fields.optional("resend") {
                None => false,
                Some(value) => value
                    .as_bool()
                    .ok_or_else(|| ApiError::invalid("resend", "must be true or false"))?,
            };
            fields.finish()?;
            resend
        }
    };
    let mut conn = pool::connection(&state.pool).await?;
    use crate::error::Conflict;
    let conflict = |code: Conflict, message: String| ApiError::Conflict { code, message };
    match requeue::retry(&mut conn, tenant, id, resend).await? {
        Retried::NotFound => Err(path.not_found()),
        Retried::Refused(refusal) => Err(match refusal {
            RetryRefusal::InFlight => conflict(
                Conflict::DeliveryInFlight,
                format!("delivery {id} is being attempted now"),
            ),
            RetryRefusal::AlreadyQueued => conflict(
                Conflict::DeliveryQueued,
                format!("delivery {id} is waiting for its first attempt already"),
            ),
            RetryRefusal::Delivered => conflict(
                Conflict::DeliveryDelivered,
                format!("delivery {id} was delivered; send {{\"resend\": true}} to send it again"),
            ),
            RetryRefusal::SubscriptionDeleted => conflict(
                Conflict::SubscriptionDeleted,
                format!("delivery {id}'s subscription was deleted"),
            ),
        }),
        Retried::Requeued { from } => {
            tracing::info!(delivery.id = id, from = %from, "delivery retried by an operator");
            state.waker.wake();
            let item = listing::delivery(&mut conn, tenant, id)
                .await?
                .ok_or_else(|| path.not_found())?;
            Ok(HttpResponse::Accepted().json(DeliveryDetailView::new(item)?))
        }
    }
}
