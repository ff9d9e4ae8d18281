//! The webhook request Dispatch sends: the seed's JSON envelope and its headers, signed in both
//! forms (see docs/spec.md, "Delivery contract").

use chrono::{DateTime, SecondsFormat, Utc};
use dispatch_domain::signature::SigningKey;
use dispatch_store::queries::deliveries::ClaimedDelivery;
use http::{HeaderValue, Method, Request};
use hyper::body::Bytes;
use serde::Serialize;

pub const USER_AGENT: &str = concat!("Dispatch/", env!("CARGO_PKG_VERSION"));

/// The body: `{"id","type","source","data","timestamp"}`, `timestamp` being when Dispatch received
/// the event (RFC 3339, UTC).
#[derive(Serialize)]
struct Envelope<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    event_type: &'a str,
    source: &'a str,
    data: &'a serde_json::Value,
    timestamp: String,
}

/// Serialises the envelope of a claimed delivery (the exact bytes that are signed and sent).
pub fn envelope(delivery: &ClaimedDelivery) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(&Envelope {
        id: &delivery.event_id,
        event_type: &delivery.event_type,
        source: &delivery.source,
        data: &delivery.data,
        timestamp: rfc3339(delivery.received_at),
    })
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// Why a request could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("the envelope could not be serialised: {0}")]
    Envelope(#[from] serde_json::Error),
    #[error("the subscription's secret is unusable: {0}")]
    Secret(String),
    #[error("the request could not be built: {0}")]
    Http(#[from] http::Error),
}

fn header(value: &str) -> Result<HeaderValue, BuildError> {
    HeaderValue::from_str(value).map_err(|e| BuildError::Http(e.into()))
}

/// The `traceparent` to send: the current span's (the attempt's `deliver` span, a child of the
/// event's trace), or with no tracing installed the one the event was ingested under.
fn traceparent(delivery: &ClaimedDelivery) -> Option<String> {
    dispatch_telemetry::current_traceparent().or_else(|| {
        delivery
            .traceparent
            .as_deref()
            .and_then(dispatch_telemetry::TraceParent::parse)
            .map(|p| p.to_string())
    })
}

/// Builds the signed POST for one attempt made at `now`, within the attempt's span.
pub fn build(
    delivery: &ClaimedDelivery,
    now: DateTime<Utc>,
) -> Result<Request<http_body_util::Full<Bytes>>, BuildError> {
    let body = envelope(delivery)?;
    let timestamp = now.timestamp();
    let mut request = Request::builder()
        .method(Method::POST)
        .uri(delivery.url.as_str())
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::USER_AGENT, USER_AGENT)
        .header("X-Dispatch-Event-ID", header(&delivery.event_id)?)
        .header("X-Dispatch-Event-Type", header(&delivery.event_type)?)
        .header("X-Dispatch-Timestamp", timestamp)
        .header("webhook-id", header(&delivery.event_id)?)
        .header("webhook-timestamp", timestamp);
    if let Some(traceparent) = traceparent(delivery) {
        request = request.header(dispatch_telemetry::TRACEPARENT, header(&traceparent)?);
    }
    if let Some(secret) = &delivery.secret {
        let key = SigningKey::from_secret(secret).map_err(|e| BuildError::Secret(e.to_string()))?;
        request = request
            .header(
                "X-Dispatch-Signature",
                header(&key.dispatch_signature(&body))?,
            )
            .header(
                "webhook-signature",
                header(&key.standard_signature(&delivery.event_id, timestamp, &body))?,
            );
    }
    Ok(request.body(http_body_util::Full::new(Bytes::from(body)))?)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn delivery(traceparent: Option<&str>) -> ClaimedDelivery {
        ClaimedDelivery {
            id: 1,
            event_id: "evt_1".to_owned(),
            subscription_id: "sub_1".to_owned(),
            attempts: 0,
            event_type: "order.created".to_owned(),
            source: "billing-service".to_owned(),
            data: serde_json::json!({"n": 1}),
            received_at: Utc::now(),
            url: "http://127.0.0.1:9/hook".to_owned(),
            secret: None,
            leased_until: Utc::now(),
            rate_limit_per_sec: 100.0,
            rate_limit_burst: 10,
            circuit_open_until: None,
            traceparent: traceparent.map(str::to_owned),
        }
    }

    #[test]
    fn without_tracing_installed_the_stored_traceparent_is_sent_as_it_is() {
        let stored = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let request = build(&delivery(Some(stored)), Utc::now()).unwrap();
        assert_eq!(request.headers()["traceparent"], stored);
        let request = build(&delivery(None), Utc::now()).unwrap();
        assert!(request.headers().get("traceparent").is_none());
        let request = build(&delivery(Some("not-a-traceparent")), Utc::now()).unwrap();
        assert!(request.headers().get("traceparent").is_none());
    }
}
