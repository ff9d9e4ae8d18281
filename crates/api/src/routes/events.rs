//! `POST /events`, `GET /events/{id}`, `GET /events/{id}/attempts`.

use actix_web::{HttpRequest, HttpResponse, web};
use dispatch_domain::TenantId;
use dispatch_domain::tenant::external_id;
use dispatch_domain::{EventId, EventType, OrderingKey, Source, operational};
use dispatch_store::models::NewEvent;
use dispatch_store::queries::events::{self, Ingested};
use dispatch_store::queries::listing::AttemptsOf;
use dispatch_store::{AsyncPgConnection, pool};
use tracing::Instrument;

use super::AppState;
use super::path_id::PathId;
use crate::body::{Fields, check_storable_json, read_json_body};
use crate::error::{ApiError, ErrorBody};
use crate::openapi::NewEventRequest;
use crate::views::{AttemptView, EventView, Page};

/// The one event id the API refuses: `/events/batch` is a route, not an event.
pub const RESERVED_EVENT_ID: &str = "batch";

/// Turns a request body into a valid new event, naming the first field at fault.
pub fn parse_new_event(tenant: &TenantId, body: serde_json::Value) -> Result<NewEvent, ApiError> {
    let mut fields = Fields::from_body(body)?;
    let id = fields.required_str("id")?;
    let id = EventId::parse(&id).map_err(|e| ApiError::invalid("id", e.to_string()))?;
    if operational::is_reserved_id(id.as_str()) {
        return Err(ApiError::invalid(
            "id",
            format!(
                "ids starting with \"{}\" are reserved for Dispatch's operational events",
                operational::ID_PREFIX
            ),
        ));
    }
    if id.as_str() == RESERVED_EVENT_ID {
        return Err(ApiError::invalid(
            "id",
            "\"batch\" is reserved: /events/batch is the batch route, so such an event could not be read",
        ));
    }
    let event_type = fields.required_str("type")?;
    let event_type =
        EventType::parse(&event_type).map_err(|e| ApiError::invalid("type", e.to_string()))?;
    if operational::is_reserved(event_type.as_str()) {
        return Err(ApiError::invalid(
            "type",
            format!(
                "types starting with \"{}\" are Dispatch's own operational events and cannot be posted",
                operational::RESERVED_PREFIX
            ),
        ));
    }
    let source = fields.required_str("source")?;
    let source = Source::parse(&source).map_err(|e| ApiError::invalid("source", e.to_string()))?;
    let data = fields.required("data")?;
    check_storable_json(&data).map_err(|e| ApiError::invalid("data", e))?;
    let ordering_key = fields
        .optional_str("ordering_key")?
        .map(|key| {
            OrderingKey::parse(&key).map_err(|e| ApiError::invalid("ordering_key", e.to_string()))
        })
        .transpose()?;
    fields.finish()?;
    Ok(NewEvent {
        tenant: tenant.clone(),
        id,
        event_type,
        source,
        data,
        traceparent: None,
        ordering_key,
    })
}

async fn view(
    conn: &mut AsyncPgConnection,
    tenant: &TenantId,
    event: dispatch_store::models::EventRow,
) -> Result<EventView, ApiError> {
    let deliveries = events::deliveries_of(conn, tenant, external_id(&event.id)).await?;
    Ok(EventView::new(event, deliveries)?)
}

/// Ingest an event.
///
/// Stores the event and, in the same statement, one `pending` delivery per active subscription
/// whose patterns select its type. Idempotent on `id`: the same content again answers `200`
/// with the stored event, other content `409 event_conflict`, so retrying after a `503` is safe.
/// A valid W3C `traceparent` header is continued (an invalid one is ignored).
#[utoipa::path(
    post,
    path = "/events",
    operation_id = "create_event",
    tag = "events",
    request_body(content = NewEventRequest, content_type = "application/json"),
    params(
        ("traceparent" = Option<String>, Header, description = "W3C Trace Context of the producer's span: `00-<32 hex>-<16 hex>-<2 hex>`. Invalid or repeated: ignored."),
    ),
    responses(
        (status = 202, description = "New event: stored with one pending delivery per matching subscription.", body = EventView),
        (status = 200, description = "The event was already stored with the same type, source and data; nothing is created. The stored event as it stands now.", body = EventView),
        (status = 400, description = "`malformed_json`: the body is not valid JSON (an empty body, data after the value, bytes that are not UTF-8 and a byte order mark are not). `duplicate_key`: an object has the same key twice (`field` is its path).", body = ErrorBody),
        (status = 409, description = "`event_conflict`: the id was already received with different content.", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: the body exceeds `max_body_bytes`.", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`: `Content-Type` is present and not JSON.", body = ErrorBody),
        (status = 422, description = "`invalid_field`: the body is not an object, or a field (named in `field`) is missing, invalid or unknown (a `type` starting with `dispatch.` or an `id` starting with `dispatch_` is reserved for operational events).", body = ErrorBody),
    ),
)]
pub async fn create(
    auth: crate::auth::Authorized,
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let limits = state.limits_of(&auth.tenant);
    state.ingest_limiter.admit(&auth.tenant, &limits, 1)?;
    let max_body = limits.max_payload_bytes.unwrap_or(state.max_body_bytes);
    let body = read_json_body(&req, payload, max_body).await?;
    let mut new = parse_new_event(&auth.tenant, body)?;
    let span = tracing::Span::current();
    span.record("event.id", new.id.as_str());
    span.record("event.type", new.event_type.as_str());
    // The delivery spans continue from the request's server span, a child of the caller's span
    // when it sent one.
    new.traceparent = crate::middleware::traceparent_to_store(&req);
    let (id, event_type) = (new.id.clone(), new.event_type.clone());
    let stored = state
        .committer
        .ingest(new)
        .instrument(tracing::info_span!(
            "db.ingest",
            otel.kind = "client",
            db.system.name = "postgresql"
        ))
        .await?;
    match stored {
        Ingested::Created { event, deliveries } => {
            tracing::info!(
                event.id = %id,
                event.type = %event_type,
                deliveries = deliveries.len(),
                trace_id = dispatch_telemetry::trace_id_of(&span),
                "event accepted"
            );
            metrics::counter!(dispatch_telemetry::metrics::EVENTS_RECEIVED).increment(1);
            crate::tenant_limits::count(&auth.tenant, "received", 1);
            Ok(HttpResponse::Accepted().json(EventView::new(event, deliveries)?))
        }
        Ingested::Duplicate(event) => {
            tracing::info!(event.id = %id, "event already received; nothing created");
            let mut conn = pool::connection(&state.pool).await?;
            Ok(HttpResponse::Ok().json(view(&mut conn, &auth.tenant, event).await?))
        }
        Ingested::Conflict(_) => Err(ApiError::EventConflict(format!(
            "event {id} was already received with different content"
        ))),
    }
}

/// Get an event and its deliveries.
#[utoipa::path(
    get,
    path = "/events/{id}",
    operation_id = "get_event",
    tag = "events",
    params(("id" = String, Path, description = "The event's id.")),
    responses(
        (status = 200, description = "The event.", body = EventView),
    ),
)]
pub async fn get(
    auth: crate::auth::Authorized,
    id: PathId<EventId>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let mut conn = pool::connection(&state.pool).await?;
    let event = events::find(&mut conn, &auth.tenant, id.as_str())
        .await?
        .ok_or_else(|| id.not_found())?;
    Ok(HttpResponse::Ok().json(view(&mut conn, &auth.tenant, event).await?))
}

/// List the recorded attempts of every delivery of an event, oldest first, a page at a time.
#[utoipa::path(
    get,
    path = "/events/{id}/attempts",
    operation_id = "list_attempts",
    tag = "events",
    params(
        ("id" = String, Path, description = "The event's id."),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 250, description = "Page size, 1–250; default 50."),
        ("cursor" = Option<String>, Query, max_length = 128, pattern = r"^[A-Za-z0-9_.:-]*$", description = "The previous page's `next_cursor`, unchanged (opaque)."),
    ),
    responses(
        (status = 200, description = "A page of attempts; `next_cursor` is null on the last one.", body = Page<AttemptView>),
        (status = 422, description = "`invalid_parameter`: `limit` or `cursor`.", body = ErrorBody),
    ),
)]
pub async fn attempts(
    auth: crate::auth::Authorized,
    id: PathId<EventId>,
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let query = crate::query::Query::parse(req.query_string())?;
    let mut conn = pool::connection(&state.pool).await?;
    if events::find(&mut conn, &auth.tenant, id.as_str())
        .await?
        .is_none()
    {
        return Err(id.not_found());
    }
    super::deliveries::attempts_page(
        &mut conn,
        &auth.tenant,
        AttemptsOf::Event(id.as_str()),
        &query,
    )
    .await
}
