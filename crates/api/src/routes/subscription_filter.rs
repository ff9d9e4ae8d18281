//! A subscription's payload `filter` — a SQL/JSON path predicate over `{type, source, data}`,
//! evaluated by PostgreSQL at fan-out — as creation and `PATCH` accept it, and
//! `POST /subscriptions/{id}/filter-test`, which says whether a sample event matches.

use actix_web::{HttpRequest, HttpResponse, web};
use dispatch_domain::filter::{FilterError, check_features, check_text};
use dispatch_domain::{EventType, Source, SubscriptionId};
use dispatch_store::pool;
use dispatch_store::queries::filters::{self, FilterCheck};
use dispatch_store::queries::subscriptions;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::AppState;
use super::path_id::PathId;
use crate::body::{Fields, check_storable_json, kind, read_json_body};
use crate::error::{ApiError, ErrorBody};

fn refused(e: FilterError) -> ApiError {
    ApiError::invalid("filter", e.to_string())
}

/// `filter` as given: a string that is not empty, at most 1 KiB, with no NUL. PostgreSQL's part
/// (syntax, predicate, features) is [`check`].
pub fn parse_filter(value: Value) -> Result<String, ApiError> {
    let Value::String(text) = value else {
        return Err(ApiError::invalid(
            "filter",
            format!(
                "must be a SQL/JSON path predicate as a string (e.g. \"$.data.amount > 100\"), \
                 got {}",
                kind(&value)
            ),
        ));
    };
    check_text(&text).map_err(refused)?;
    Ok(text)
}

/// Asks PostgreSQL whether `filter` parses and is a predicate, then bounds its features on the
/// text PostgreSQL prints for it. Every refusal is `422 invalid_field` naming `filter`.
pub async fn check(state: &AppState, filter: &str) -> Result<(), ApiError> {
    let mut conn = pool::connection(&state.pool).await?;
    match filters::check(&mut conn, filter).await? {
        FilterCheck::Predicate { canonical } => check_features(&canonical).map_err(refused),
        FilterCheck::Syntax(message) => Err(ApiError::invalid(
            "filter",
            format!("is not a SQL/JSON path expression: {message}"),
        )),
        FilterCheck::NotPredicate(message) => Err(ApiError::invalid(
            "filter",
            format!(
                "must be a predicate, a boolean expression such as `$.data.amount > 100` or \
                 `exists($.data.vip)`, not a path to values ({message})"
            ),
        )),
    }
}

/// `POST /subscriptions/{id}/filter-test`: a sample event, and optionally a draft filter to try
/// instead of the subscription's own.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // documentation only: never constructed
pub struct FilterTestRequest {
    /// As an event's `type`.
    #[schema(example = "order.paid")]
    pub r#type: String,
    /// As an event's `source`.
    #[schema(example = "shop")]
    pub source: String,
    /// As an event's `data`: any JSON value.
    #[schema(schema_with = crate::openapi::new_event_data)]
    pub data: Value,
    /// A filter to try instead of the subscription's (checked as `PATCH` checks one). Omitted
    /// or null: the subscription's own filter.
    #[schema(
        max_length = 1024,
        example = "$.data.amount > 100 && $.data.currency == \"EUR\""
    )]
    pub filter: Option<String>,
}

/// Whether the sample event matches.
#[derive(Debug, Serialize, ToSchema)]
pub struct FilterTestView {
    /// True when the filter selects the event (always true with no filter), exactly as fan-out
    /// decides it: an error while evaluating is no match. The subscription's `event_types` are
    /// not consulted.
    pub matches: bool,
    /// The filter that was tried; null when there is none.
    #[schema(required = true)]
    pub filter: Option<String>,
}

/// Test a payload filter against a sample event.
///
/// Evaluates the subscription's filter, or a draft given as `filter`, against the sample event
/// as fan-out would. Nothing is stored.
#[utoipa::path(
    post,
    path = "/subscriptions/{id}/filter-test",
    operation_id = "test_subscription_filter",
    tag = "subscriptions",
    params(("id" = String, Path, description = "The subscription's id.")),
    request_body(content = FilterTestRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Whether the event matches.", body = FilterTestView),
        (status = 400, description = "`malformed_json` or `duplicate_key`.", body = ErrorBody),
        (status = 404, description = "`not_found`: no such subscription, or it was deleted.", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: the body exceeds `max_body_bytes`.", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`: `Content-Type` is present and not JSON.", body = ErrorBody),
        (status = 422, description = "`invalid_field`: `type`, `source` or `data` as for an event, or a draft `filter` refused as at creation; unknown fields are refused.", body = ErrorBody),
        (status = 500, description = "`internal`: anything unexpected.", body = ErrorBody),
        (status = 503, description = "`database_unavailable`: retry later.", body = ErrorBody,
            headers(("Retry-After" = String, description = "Always `1` (seconds)."))),
    ),
)]
pub async fn test(
    auth: crate::auth::Authorized,
    id: PathId<SubscriptionId>,
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let body = read_json_body(&req, payload, state.max_body_bytes).await?;
    let mut fields = Fields::from_body(body)?;
    let event_type = fields.required_str("type")?;
    let event_type =
        EventType::parse(&event_type).map_err(|e| ApiError::invalid("type", e.to_string()))?;
    let source = fields.required_str("source")?;
    let source = Source::parse(&source).map_err(|e| ApiError::invalid("source", e.to_string()))?;
    let data = fields.required("data")?;
    check_storable_json(&data).map_err(|e| ApiError::invalid("data", e))?;
    let draft = fields.optional("filter").map(parse_filter).transpose()?;
    fields.finish()?;
    let row = {
        let mut conn = pool::connection(&state.pool).await?;
        subscriptions::find_active(&mut conn, &auth.tenant, id.as_str())
            .await?
            .ok_or_else(|| id.not_found())?
    };
    let filter = match draft {
        Some(draft) => {
            check(&state, &draft).await?;
            Some(draft)
        }
        None => row.filter,
    };
    let matches = match &filter {
        None => true,
        Some(filter) => {
            let mut conn = pool::connection(&state.pool).await?;
            filters::matches(
                &mut conn,
                filter,
                event_type.as_str(),
                source.as_str(),
                &data,
            )
            .await?
        }
    };
    Ok(HttpResponse::Ok().json(FilterTestView { matches, filter }))
}
