//! `GET /events`: finding events by type, source, status, subscription and time, newest first.

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use dispatch_domain::tenant::external_id;
use dispatch_domain::{DeliveryStatus, Pattern, Source, SubscriptionId};
use dispatch_store::pool;
use dispatch_store::queries::listing::{self, EventCursor, EventFilter, EventItem};
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use crate::error::{ApiError, ErrorBody};
use crate::openapi::DeliveryStatusSchema;
use crate::query::{self, MAX_LIMIT, Query};
use crate::views::Page;

/// One event of a list: `data` only with `include=data`.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventSummaryView {
    #[schema(example = "evt_123")]
    pub id: String,
    #[serde(rename = "type")]
    #[schema(example = "order.created")]
    pub event_type: String,
    #[schema(example = "billing-service")]
    pub source: String,
    /// The payload; present only when the request said `include=data`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = crate::openapi::stored_event_data)]
    pub data: Option<serde_json::Value>,
    /// The event's status, summarised from its deliveries (as in `GET /events/{id}`).
    #[schema(value_type = DeliveryStatusSchema)]
    pub status: DeliveryStatus,
    pub received_at: DateTime<Utc>,
}

impl EventSummaryView {
    fn new(item: EventItem) -> Result<Self, ApiError> {
        let status = item
            .status
            .parse()
            .map_err(|e| ApiError::Internal(anyhow::anyhow!("stored event status: {e}")))?;
        Ok(Self {
            id: crate::views::external(item.id),
            event_type: item.event_type,
            source: item.source,
            data: item.data,
            status,
            received_at: item.received_at,
        })
    }
}

/// The filters of `GET /events`, from a query string.
pub fn event_filter(query: &Query) -> Result<EventFilter, ApiError> {
    let mut filter = EventFilter::default();
    if let Some(text) = query.single("type")? {
        let pattern = Pattern::parse(text).map_err(|e| ApiError::InvalidParam {
            param: "type".to_owned(),
            message: e.to_string(),
        })?;
        filter.select_type(&pattern);
    }
    filter.source = query.id("source", Source::parse)?;
    filter.status = query
        .single("status")?
        .map(query::parse_status)
        .transpose()?;
    filter.subscription_id = query.id("subscription_id", SubscriptionId::parse)?;
    (filter.received_after, filter.received_before) =
        query.window("received_after", "received_before")?;
    Ok(filter)
}

/// List events, newest first, a page at a time.
///
/// Filters narrow the list and combine; unknown query parameters are ignored.
#[utoipa::path(
    get,
    path = "/events",
    operation_id = "list_events",
    tag = "events",
    params(
        ("type" = Option<String>, Query, description = "An event type (`order.created`) or a pattern as in subscriptions (`order.*`, `*`)."),
        ("source" = Option<String>, Query, description = "Only events from this source."),
        ("status" = Option<DeliveryStatusSchema>, Query, description = "Only events whose summarised status is this."),
        ("subscription_id" = Option<String>, Query, description = "Only events with a delivery to this subscription."),
        ("received_after" = Option<String>, Query, format = DateTime, description = "Received at or after this RFC 3339 time."),
        ("received_before" = Option<String>, Query, format = DateTime, description = "Received before this RFC 3339 time."),
        ("include" = Option<String>, Query, pattern = "^(data)?$", description = "`data` to include each event's payload."),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 250, description = "Page size, 1–250; default 50."),
        ("cursor" = Option<String>, Query, max_length = 300, pattern = r"^[A-Za-z0-9_.:-]*$", description = "The previous page's `next_cursor`, unchanged (opaque)."),
    ),
    responses(
        (status = 200, description = "A page; `next_cursor` is null on the last one.", body = Page<EventSummaryView>),
        (status = 422, description = "`invalid_parameter`: a filter, `include`, `limit` or `cursor` is invalid, or a parameter was given twice (`field` names it).", body = ErrorBody),
    ),
)]
pub async fn list(
    auth: crate::auth::Authorized,
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let query = Query::parse(req.query_string())?;
    let filter = event_filter(&query)?;
    let include_data = match query.single_or_empty("include")? {
        None => false,
        Some("data") => true,
        Some(other) => {
            return Err(ApiError::InvalidParam {
                param: "include".to_owned(),
                message: format!("may only be \"data\", got {other:?}"),
            });
        }
    };
    let limit = query.limit(MAX_LIMIT)?;
    let cursor = query::event_cursor(&query)?;
    let mut conn = pool::connection(&state.pool).await?;
    // One extra row tells whether another page exists.
    let mut rows = listing::events(
        &mut conn,
        &auth.tenant,
        &filter,
        include_data,
        cursor.as_ref(),
        limit + 1,
    )
    .await?;
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let next_cursor = more
        .then(|| {
            rows.last()
                .map(|r| EventCursor::after(r.received_at, external_id(&r.id)).text())
        })
        .flatten();
    Ok(HttpResponse::Ok().json(Page {
        data: rows
            .into_iter()
            .map(EventSummaryView::new)
            .collect::<Result<Vec<_>, _>>()?,
        next_cursor,
    }))
}
