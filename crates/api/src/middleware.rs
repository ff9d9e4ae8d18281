//! What every request passes through, whatever its route: one server span (continuing a valid
//! caller `traceparent`), the request metrics and the header limits. Handlers add their own
//! attributes to the span with `tracing::Span::current().record(..)`, never a span of their own.

use std::time::Instant;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::http::header::HeaderMap;
use actix_web::middleware::Next;
use actix_web::{Error, HttpRequest, ResponseError};
use dispatch_telemetry::TraceParent;
use dispatch_telemetry::metrics as names;
use tracing::Instrument;
use tracing::field::Empty;

/// The metric label of a request no route matched (ids must never become labels).
const UNMATCHED: &str = "unmatched";

/// The caller's `traceparent` when there is exactly one and it is valid; W3C says anything else
/// is ignored (a new trace starts here), never an error.
fn caller_traceparent(headers: &HeaderMap) -> Option<TraceParent> {
    let mut values = headers.get_all(dispatch_telemetry::TRACEPARENT);
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    TraceParent::parse(value.to_str().ok()?)
}

/// The `traceparent` an event received by this request is stored with (its deliveries continue
/// it): the request's server span; with no tracing installed, the caller's own header as it came.
pub(crate) fn traceparent_to_store(req: &HttpRequest) -> Option<String> {
    dispatch_telemetry::current_traceparent()
        .or_else(|| caller_traceparent(req.headers()).map(|parent| parent.to_string()))
}

/// The server span of one request, named as OpenTelemetry's HTTP conventions say
/// (`{method} {route}`, or the method alone when no route matched). The ingest routes record
/// `event.id`, `event.type` (`POST /events`) and `events` (`POST /events/batch`) into it.
fn server_span(method: &'static str, route: Option<&str>) -> tracing::Span {
    let name = match route {
        Some(route) => format!("{method} {route}"),
        None => method.to_owned(),
    };
    tracing::info_span!(
        "request",
        otel.name = name,
        otel.kind = "server",
        http.request.method = method,
        http.route = route,
        http.response.status_code = Empty,
        otel.status_code = Empty,
        event.id = Empty,
        event.type = Empty,
        events = Empty,
    )
}

/// Records the answer on the span (`http.response.status_code`, ERROR on a 5xx) and in the
/// request metrics.
fn record(span: &tracing::Span, route: &str, method: &'static str, status: StatusCode) {
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    metrics::counter!(
        names::HTTP_REQUESTS,
        names::ROUTE => route.to_owned(),
        names::METHOD => names::method_label(method),
        names::STATUS => status.as_u16().to_string()
    )
    .increment(1);
}

/// The middleware: `App::new().wrap(actix_web::middleware::from_fn(observe))`. A request over
/// the header limits is answered `431` here, inside the span and counted like any other.
pub async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody + 'static>>, Error> {
    let started = Instant::now();
    // Before routing, this is the pattern of the resource the router will pick.
    let pattern = req.match_pattern();
    let method = names::method_label(req.method().as_str());
    let span_method = if method == "other" { "_OTHER" } else { method };
    let span = server_span(span_method, pattern.as_deref());
    if let Some(parent) = caller_traceparent(req.headers()) {
        dispatch_telemetry::set_parent(&span, &parent);
    }
    let route = pattern.unwrap_or_else(|| UNMATCHED.to_owned());
    let path = req.path().to_owned();

    let result = match crate::headers::check(req.headers()) {
        Ok(()) => next
            .call(req)
            .instrument(span.clone())
            .await
            .map(ServiceResponse::map_into_left_body),
        Err(error) => Ok(req
            .into_response(error.error_response())
            .map_into_right_body()),
    };
    let status = match &result {
        Ok(response) => response.status(),
        Err(error) => error.as_response_error().status_code(),
    };
    let elapsed = started.elapsed();
    record(&span, &route, method, status);
    metrics::histogram!(
        names::HTTP_REQUEST_DURATION,
        names::ROUTE => route,
        names::METHOD => method
    )
    .record(elapsed.as_secs_f64());
    span.in_scope(|| {
        tracing::debug!(
            http.path = %path,
            http.status = status.as_u16(),
            duration_ms = elapsed.as_secs_f64() * 1000.0,
            "request"
        );
    });
    result
}
