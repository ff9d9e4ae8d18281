//! Per-key ordering for operators: `GET /subscriptions/{id}/blocked-keys` (keys held by a failing
//! head) and `POST /deliveries/{id}/skip` (move a blocked key on past its failed head).

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use dispatch_domain::SubscriptionId;
use dispatch_store::pool;
use dispatch_store::queries::ordering::{self, BlockedKey, SkipRefusal, Skipped};
use dispatch_store::queries::{listing, subscriptions};
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use super::deliveries::DeliveryDetailView;
use super::path_id::{DeliveryId, PathId};
use crate::error::{ApiError, Conflict, ErrorBody};
use crate::openapi::DeliveryStatusSchema;
use crate::query::{MAX_LIMIT, Query};
use crate::views::Page;

/// A key whose head delivery has failed: the deliveries of the key behind it wait.
#[derive(Debug, Serialize, ToSchema)]
pub struct BlockedKeyView {
    #[schema(example = "customer:42")]
    pub ordering_key: String,
    /// The head: the delivery the key waits for (`/deliveries/{id}`).
    #[schema(example = 42)]
    pub delivery_id: i64,
    #[schema(example = "evt_123")]
    pub event_id: String,
    /// `retrying` (waiting for its next attempt), `processing` (being retried now) or `failed`
    /// (for good: with `on_exhausted: block`, the key waits until the head is replayed, retried
    /// or skipped).
    #[schema(value_type = DeliveryStatusSchema)]
    pub status: String,
    /// Attempts made so far.
    pub attempts: i32,
    #[schema(required = true)]
    pub last_error: Option<String>,
    /// When the head is tried again (`retrying` only).
    #[schema(required = true)]
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// Deliveries of the key waiting behind the head.
    pub waiting: i64,
}

impl From<BlockedKey> for BlockedKeyView {
    fn from(k: BlockedKey) -> Self {
        Self {
            ordering_key: k.ordering_key,
            delivery_id: k.delivery_id,
            event_id: crate::views::external(k.event_id),
            status: k.status,
            attempts: k.attempts,
            last_error: k.last_error,
            next_attempt_at: k.next_attempt_at,
            waiting: k.waiting,
        }
    }
}

/// List a per-key subscription's blocked keys.
///
/// Keys whose head delivery has failed at least once (waiting for its retry, being retried, or
/// failed for good), by key. Every other key flows. Empty for a subscription that does not
/// order by key. Paged by `cursor` (the last key of the previous page).
#[utoipa::path(
    get,
    path = "/subscriptions/{id}/blocked-keys",
    operation_id = "list_blocked_keys",
    tag = "subscriptions",
    params(
        ("id" = String, Path, description = "The subscription's id."),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 250, description = "Page size, 1–250 (default 50)."),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page; empty or omitted: the first page."),
    ),
    responses(
        (status = 200, description = "A page of blocked keys.", body = Page<BlockedKeyView>),
        (status = 422, description = "`invalid_param`: `limit` out of range, `cursor` not one this API returned, or a parameter given twice.", body = ErrorBody),
    ),
)]
pub async fn blocked_keys(
    auth: crate::auth::Authorized,
    id: PathId<SubscriptionId>,
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let query = Query::parse(req.query_string())?;
    let (limit, cursor) = query.id_page(MAX_LIMIT)?;
    let mut conn = pool::connection(&state.pool).await?;
    if subscriptions::find_active(&mut conn, &auth.tenant, id.as_str())
        .await?
        .is_none()
    {
        return Err(id.not_found());
    }
    // One extra row tells whether another page exists.
    let rows =
        ordering::blocked_keys(&mut conn, &auth.tenant, id.as_str(), cursor, limit + 1).await?;
    Ok(HttpResponse::Ok().json(Page::of(
        rows,
        limit,
        |k| k.ordering_key.clone(),
        BlockedKeyView::from,
    )))
}

/// Skip a blocked key's failed head.
///
/// For a subscription with `ordering: per_key` and `on_exhausted: block`: the delivery at the
/// head of its key failed for good, and the key waits. Skipping lets the next delivery of the
/// key proceed; the skipped one stays `failed` (a replay or retry puts it back in line, next).
#[utoipa::path(
    post,
    path = "/deliveries/{id}/skip",
    operation_id = "skip_delivery",
    tag = "deliveries",
    params(("id" = i64, Path, description = "The delivery's id.")),
    responses(
        (status = 200, description = "Skipped: the delivery as it stands (still `failed`); the key's next delivery, if any, is due.", body = DeliveryDetailView),
        (status = 409, description = "`delivery_not_blocking`: the delivery is not the failed head of a blocked key (not ordered, not the head, or not failed for good).", body = ErrorBody),
    ),
)]
pub async fn skip(
    auth: crate::auth::Authorized,
    path: PathId<DeliveryId>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let DeliveryId(id) = *path;
    let mut conn = pool::connection(&state.pool).await?;
    match ordering::skip(&mut conn, &auth.tenant, id).await? {
        Skipped::NotFound => Err(path.not_found()),
        Skipped::Refused(SkipRefusal::NotBlocking) => Err(ApiError::Conflict {
            code: Conflict::DeliveryNotBlocking,
            message: format!(
                "delivery {id} is not the failed head of a blocked key: only a delivery that \
                 failed for good at the head of its key (ordering per_key, on_exhausted block) \
                 can be skipped"
            ),
        }),
        Skipped::Skipped { next } => {
            tracing::info!(delivery.id = id, next = ?next, "blocked key skipped by an operator");
            state.waker.wake();
            let item = listing::delivery(&mut conn, &auth.tenant, id)
                .await?
                .ok_or_else(|| path.not_found())?;
            Ok(HttpResponse::Ok().json(DeliveryDetailView::new(item)?))
        }
    }
}
