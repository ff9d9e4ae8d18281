//! `POST /events/batch`: many events in one request and one transaction, with one result per
//! event in order. The seed's idempotency holds per event.

use actix_web::{HttpRequest, HttpResponse, web};
use dispatch_store::pool;
use dispatch_store::queries::events::{self, BatchOutcome};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::AppState;
use super::events::parse_new_event;
use crate::body::{Fields, kind, read_json_body};
use crate::error::{ApiError, ErrorBody};

/// Why one event of a batch was not accepted, in the API's error shape.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchItemError {
    #[schema(value_type = crate::openapi::ErrorCode)]
    pub code: &'static str,
    pub message: String,
    /// For `invalid_field`: `events[<index>].<field>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub field: Option<String>,
}
use crate::openapi::NewBatchRequest;

/// Most events one batch may hold.
pub const MAX_BATCH_EVENTS: usize = 1000;

/// What became of one event of a batch.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchItemResult {
    /// The event's id, when the item had a valid one.
    #[schema(nullable)]
    pub id: Option<String>,
    /// `accepted` (new, stored), `replayed` (already stored with the same content),
    /// `conflict` (already stored with other content) or `invalid` (see `error`).
    #[schema(example = "accepted")]
    pub status: &'static str,
    /// For `accepted`: how many deliveries were created.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deliveries: Option<i64>,
    /// For `conflict` and `invalid`: why, in the API's error shape.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<BatchItemError>,
}

/// The answer to a batch: one result per event, in the order they were sent.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchResponse {
    pub results: Vec<BatchItemResult>,
}

fn invalid(index: usize, error: &ApiError) -> BatchItemResult {
    let field = match error {
        ApiError::InvalidField { field, .. } => format!("events[{index}].{field}"),
        _ => format!("events[{index}]"),
    };
    let message = match error {
        ApiError::InvalidField { message, .. } => message.clone(),
        other => other.to_string(),
    };
    BatchItemResult {
        id: None,
        status: "invalid",
        deliveries: None,
        error: Some(BatchItemError {
            code: error.code(),
            message: format!("{field}: {message}"),
            field: Some(field),
        }),
    }
}

/// Ingest a batch of events.
///
/// Up to 1000 events and `max_batch_body_bytes` (1 MiB) in `{"events": [...]}`, stored in one
/// transaction. Each event follows the rules of `POST /events`; an invalid one does not stop the
/// others. The answer lists one result per event, in order. A `503` stores nothing: retrying is
/// safe.
#[utoipa::path(
    post,
    path = "/events/batch",
    operation_id = "create_event_batch",
    tag = "events",
    request_body(content = NewBatchRequest, content_type = "application/json"),
    params(
        ("traceparent" = Option<String>, Header, description = "W3C Trace Context of the producer's span, continued by every event of the batch."),
    ),
    responses(
        (status = 200, description = "The batch was processed: one result per event, in order.", body = BatchResponse),
        (status = 400, description = "`malformed_json`: the body is not valid JSON (an empty body, data after the value, bytes that are not UTF-8 and a byte order mark are not). `duplicate_key`: an object has the same key twice (`field` is its path).", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: the body exceeds `max_batch_body_bytes`.", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`.", body = ErrorBody),
        (status = 422, description = "`invalid_field`: the body is not `{\"events\": [...]}` with 1 to 1000 items.", body = ErrorBody),
    ),
)]
pub async fn create(
    auth: crate::auth::Authorized,
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let body = read_json_body(&req, payload, state.max_batch_body_bytes).await?;
    let mut fields = Fields::from_body(body)?;
    let items = match fields.required("events")? {
        Value::Array(items) => items,
        other => {
            return Err(ApiError::invalid(
                "events",
                format!("must be an array of events, got {}", kind(&other)),
            ));
        }
    };
    fields.finish()?;
    if items.is_empty() || items.len() > MAX_BATCH_EVENTS {
        return Err(ApiError::invalid(
            "events",
            format!(
                "must hold 1 to {MAX_BATCH_EVENTS} events (got {})",
                items.len()
            ),
        ));
    }
    tracing::Span::current().record("events", items.len());
    let limits = state.limits_of(&auth.tenant);
    state.ingest_limiter.admit(
        &auth.tenant,
        &limits,
        u32::try_from(items.len()).unwrap_or(u32::MAX),
    )?;
    let traceparent = crate::middleware::traceparent_to_store(&req);
    let mut results: Vec<Option<BatchItemResult>> = Vec::with_capacity(items.len());
    let mut valid = Vec::new();
    let mut positions = Vec::new();
    for (index, item) in items.into_iter().enumerate() {
        match parse_new_event(&auth.tenant, item).and_then(|e| within(e, &limits)) {
            Ok(mut event) => {
                event.traceparent.clone_from(&traceparent);
                positions.push(index);
                valid.push(event);
                results.push(None);
            }
            Err(e) => results.push(Some(invalid(index, &e))),
        }
    }
    let mut conn = pool::connection(&state.pool).await?;
    let outcomes = events::ingest_batch(&mut conn, &valid).await?;
    let (mut accepted, mut woke) = (0u64, false);
    for ((index, event), outcome) in positions.into_iter().zip(&valid).zip(outcomes) {
        let id = Some(event.id.as_str().to_owned());
        results[index] = Some(match outcome {
            BatchOutcome::Created { deliveries, .. } => {
                accepted += 1;
                woke |= deliveries > 0;
                BatchItemResult {
                    id,
                    status: "accepted",
                    deliveries: Some(deliveries),
                    error: None,
                }
            }
            BatchOutcome::Duplicate(()) => BatchItemResult {
                id,
                status: "replayed",
                deliveries: None,
                error: None,
            },
            BatchOutcome::Conflict(()) => {
                let error = ApiError::EventConflict(format!(
                    "event {} was already received with different content",
                    event.id
                ));
                BatchItemResult {
                    id,
                    status: "conflict",
                    deliveries: None,
                    error: Some(BatchItemError {
                        code: error.code(),
                        message: error.to_string(),
                        field: None,
                    }),
                }
            }
        });
    }
    metrics::counter!(dispatch_telemetry::metrics::EVENTS_RECEIVED).increment(accepted);
    crate::tenant_limits::count(&auth.tenant, "received", accepted);
    if woke {
        state.waker.wake();
    }
    tracing::info!(events = results.len(), accepted, "batch ingested");
    Ok(HttpResponse::Ok().json(BatchResponse {
        results: results.into_iter().flatten().collect(),
    }))
}

/// `event`, unless its `data` is larger than the tenant's `max_payload_bytes` (when it has one).
fn within(
    event: dispatch_store::models::NewEvent,
    limits: &crate::tenant_limits::Effective,
) -> Result<dispatch_store::models::NewEvent, ApiError> {
    match limits.max_payload_bytes {
        Some(max) if serde_json::to_vec(&event.data).map_or(0, |b| b.len()) > max => {
            Err(ApiError::PayloadTooLarge { limit: max })
        }
        _ => Ok(event),
    }
}
