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

/// Builds the signed POST for one attempt made at `now`.
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
