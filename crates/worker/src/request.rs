//! The webhook request Dispatch sends: the seed's JSON envelope and its headers, signed in both
//! forms (see docs/spec.md, "Delivery contract").

use chrono::{DateTime, SecondsFormat, Utc};
use dispatch_domain::sealing::{Keyring, SealError};
use dispatch_domain::signature::{
    SigningKey, dispatch_signature_header, standard_signature_header,
};
use dispatch_domain::tenant::external_id;
use dispatch_store::queries::deliveries::ClaimedDelivery;
use http::{HeaderValue, Method, Request};
use hyper::body::Bytes;
use serde::Serialize;

pub const USER_AGENT: &str = concat!("Dispatch/", env!("CARGO_PKG_VERSION"));

/// The body: `{"id","type","source","data","timestamp"}`, `timestamp` being when Dispatch received
/// the event (RFC 3339, UTC). Ids are the producer's own: a tenant's stored prefix never leaves
/// Dispatch (`webhook-id` and the signatures use the same id).
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
        id: external_id(&delivery.event_id),
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
    #[error("the subscription's {which} secret cannot be opened: {source}")]
    Sealed {
        which: &'static str,
        #[source]
        source: SealError,
    },
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

impl BuildError {
    /// Whether the subscription's secret is at fault (the attempt fails with
    /// `secret_unavailable`, and nothing is sent).
    pub fn is_secret(&self) -> bool {
        matches!(self, Self::Secret(_) | Self::Sealed { .. })
    }
}

/// The keys a delivery is signed with, opened with `keyring`: the current secret (sealed, or a
/// legacy plaintext one), then the previous one while its rotation overlap lasts. Empty for a
/// subscription without a secret.
pub fn signing_keys(
    delivery: &ClaimedDelivery,
    keyring: &Keyring,
) -> Result<Vec<SigningKey>, BuildError> {
    let open = |which: &'static str, sealed: &str| -> Result<SigningKey, BuildError> {
        let secret = keyring
            .open(&delivery.subscription_id, sealed)
            .map_err(|source| BuildError::Sealed { which, source })?;
        SigningKey::from_secret(&secret).map_err(|e| BuildError::Secret(e.to_string()))
    };
    let mut keys = Vec::with_capacity(2);
    match (&delivery.sealed_secret, &delivery.legacy_secret) {
        (Some(sealed), _) => keys.push(open("current", sealed)?),
        (None, Some(plain)) => keys
            .push(SigningKey::from_secret(plain).map_err(|e| BuildError::Secret(e.to_string()))?),
        (None, None) => {}
    }
    if let Some(previous) = &delivery.previous_sealed_secret {
        keys.push(open("previous", previous)?);
    }
    Ok(keys)
}

/// Builds the signed POST for one attempt made at `now`, within the attempt's span. During a
/// secret rotation both signature headers carry two signatures, the new secret's first.
pub fn build(
    delivery: &ClaimedDelivery,
    keyring: &Keyring,
    now: DateTime<Utc>,
) -> Result<Request<http_body_util::Full<Bytes>>, BuildError> {
    let keys = signing_keys(delivery, keyring)?;
    let body = envelope(delivery)?;
    let timestamp = now.timestamp();
    let mut request = Request::builder()
        .method(Method::POST)
        .uri(delivery.url.as_str())
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::USER_AGENT, USER_AGENT)
        .header(
            "X-Dispatch-Event-ID",
            header(external_id(&delivery.event_id))?,
        )
        .header("X-Dispatch-Event-Type", header(&delivery.event_type)?)
        .header("X-Dispatch-Timestamp", timestamp)
        .header("webhook-id", header(external_id(&delivery.event_id))?)
        .header("webhook-timestamp", timestamp);
    if let Some(traceparent) = traceparent(delivery) {
        request = request.header(dispatch_telemetry::TRACEPARENT, header(&traceparent)?);
    }
    if let Some(key) = &delivery.ordering_key {
        request = request.header("X-Dispatch-Ordering-Key", header(key)?);
    }
    if !keys.is_empty() {
        request = request
            .header(
                "X-Dispatch-Signature",
                header(&dispatch_signature_header(&keys, &body))?,
            )
            .header(
                "webhook-signature",
                header(&standard_signature_header(
                    &keys,
                    external_id(&delivery.event_id),
                    timestamp,
                    &body,
                ))?,
            );
    }
    let mut request = request.body(http_body_util::Full::new(Bytes::from(body)))?;
    add_subscription_headers(&mut request, &delivery.headers);
    if let Some(ms) = delivery.timeout_ms.and_then(|ms| u64::try_from(ms).ok()) {
        request
            .extensions_mut()
            .insert(crate::client::RequestTimeout(
                std::time::Duration::from_millis(ms),
            ));
    }
    Ok(request)
}

/// Adds the subscription's own headers (a JSON object of strings, checked by the API when
/// stored) to a request: a name Dispatch already sets keeps Dispatch's value, and a name or
/// value that is not valid HTTP (a row written some other way) is left out.
fn add_subscription_headers<B>(request: &mut Request<B>, headers: &serde_json::Value) {
    let Some(headers) = headers.as_object() else {
        return;
    };
    for (name, value) in headers {
        let (Ok(name), Some(Ok(value))) = (
            http::HeaderName::from_bytes(name.as_bytes()),
            value.as_str().map(HeaderValue::from_str),
        ) else {
            tracing::debug!(header = %name, "subscription header is not valid HTTP: not sent");
            continue;
        };
        if !request.headers().contains_key(&name) {
            request.headers_mut().insert(name, value);
        }
    }
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
            sealed_secret: None,
            legacy_secret: None,
            previous_sealed_secret: None,
            leased_until: Utc::now(),
            rate_limit_per_sec: 100.0,
            rate_limit_burst: 10,
            circuit_open_until: None,
            traceparent: traceparent.map(str::to_owned),
            headers: serde_json::json!({}),
            max_attempts: None,
            max_delay_secs: None,
            timeout_ms: None,
            ordering_key: None,
        }
    }

    #[test]
    fn an_event_s_ordering_key_is_sent_in_its_own_header_and_only_then() {
        let keyring = keyring();
        let plain = build(&delivery(None), &keyring, Utc::now()).unwrap();
        assert!(!plain.headers().contains_key("x-dispatch-ordering-key"));
        let mut keyed = delivery(None);
        keyed.ordering_key = Some("customer:42".to_owned());
        let request = build(&keyed, &keyring, Utc::now()).unwrap();
        assert_eq!(request.headers()["x-dispatch-ordering-key"], "customer:42");
    }

    #[test]
    fn a_subscription_s_headers_are_sent_but_dispatch_s_own_win() {
        let mut d = delivery(None);
        d.headers = serde_json::json!({
            "x-tenant": "acme",
            "authorization": "Bearer t0ken",
            "user-agent": "not-dispatch",
            "bad name": "dropped",
        });
        d.timeout_ms = Some(250);
        let request = build(&d, &keyring(), Utc::now()).unwrap();
        assert_eq!(request.headers()["x-tenant"], "acme");
        assert_eq!(request.headers()["authorization"], "Bearer t0ken");
        let agents: Vec<_> = request.headers().get_all("user-agent").iter().collect();
        assert_eq!(agents, [USER_AGENT]);
        assert_eq!(request.headers().len(), 9, "{:?}", request.headers());
        assert_eq!(
            request.extensions().get::<crate::client::RequestTimeout>(),
            Some(&crate::client::RequestTimeout(
                std::time::Duration::from_millis(250)
            ))
        );
        let plain = build(&delivery(None), &keyring(), Utc::now()).unwrap();
        assert!(
            plain
                .extensions()
                .get::<crate::client::RequestTimeout>()
                .is_none()
        );
    }

    #[test]
    fn a_tenants_delivery_is_sent_and_signed_with_the_producers_own_event_id() {
        let keys = keyring();
        let now = Utc::now();
        let mut d = delivery(None);
        d.legacy_secret = Some("whsec_dGVzdC1zZWNyZXQtMzItYnl0ZXMtbG9uZy4uLi4=".to_owned());
        let default_tenant = build(&d, &keys, now).unwrap();
        d.event_id = "acme/evt_1".to_owned();
        d.subscription_id = "acme/sub_1".to_owned();
        let tenant = build(&d, &keys, now).unwrap();
        for name in ["webhook-id", "x-dispatch-event-id"] {
            assert_eq!(tenant.headers()[name], "evt_1", "{name}");
        }
        let sent = envelope(&d).unwrap();
        let body: serde_json::Value = serde_json::from_slice(&sent).unwrap();
        assert_eq!(body["id"], "evt_1");
        assert!(!String::from_utf8_lossy(&sent).contains("acme/"));
        assert_eq!(
            tenant.headers()["webhook-signature"],
            default_tenant.headers()["webhook-signature"],
            "signed over the same id, body and time as the same event of the default tenant"
        );
    }

    fn keyring() -> Keyring {
        Keyring::parse("k1:AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=").unwrap()
    }

    #[test]
    fn without_tracing_installed_the_stored_traceparent_is_sent_as_it_is() {
        let stored = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let keys = keyring();
        let request = build(&delivery(Some(stored)), &keys, Utc::now()).unwrap();
        assert_eq!(request.headers()["traceparent"], stored);
        let request = build(&delivery(None), &keys, Utc::now()).unwrap();
        assert!(request.headers().get("traceparent").is_none());
        let request = build(&delivery(Some("not-a-traceparent")), &keys, Utc::now()).unwrap();
        assert!(request.headers().get("traceparent").is_none());
    }

    #[test]
    fn the_current_then_the_previous_secret_sign_and_an_unopenable_one_is_a_secret_error() {
        let keys = keyring();
        let mut d = delivery(None);
        d.sealed_secret = Some(keys.seal("sub_1", "new-secret").unwrap());
        d.previous_sealed_secret = Some(keys.seal("sub_1", "old-secret").unwrap());
        let request = build(&d, &keys, Utc::now()).unwrap();
        let body = envelope(&d).unwrap();
        let new = SigningKey::from_secret("new-secret").unwrap();
        let old = SigningKey::from_secret("old-secret").unwrap();
        assert_eq!(
            request.headers()["x-dispatch-signature"],
            format!(
                "{} {}",
                new.dispatch_signature(&body),
                old.dispatch_signature(&body)
            )
            .as_str()
        );
        let standard = request.headers()["webhook-signature"].to_str().unwrap();
        assert_eq!(standard.split(' ').count(), 2);

        // A legacy plaintext secret still signs, alone.
        let mut legacy = delivery(None);
        legacy.legacy_secret = Some("old-secret".to_owned());
        let request = build(&legacy, &keys, Utc::now()).unwrap();
        assert_eq!(
            request.headers()["x-dispatch-signature"],
            old.dispatch_signature(&envelope(&legacy).unwrap()).as_str()
        );

        // Sealed for another subscription, or with a key this worker does not have.
        let mut swapped = delivery(None);
        swapped.sealed_secret = Some(keys.seal("sub_2", "new-secret").unwrap());
        let err = build(&swapped, &keys, Utc::now()).unwrap_err();
        assert!(err.is_secret(), "{err}");
        assert!(!err.to_string().contains("new-secret"), "{err}");
        let other = Keyring::parse("k9:AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=").unwrap();
        let err = build(&d, &other, Utc::now()).unwrap_err();
        assert!(err.is_secret());
        assert!(err.to_string().contains("\"k1\""), "{err}");
    }
}
