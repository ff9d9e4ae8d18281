//! One claim of one delivery: build the signed request, send it through the destination's
//! stack, and decide what happens next — or defer it, without spending an attempt, when the
//! destination's breaker or rate limiter holds it back.

use chrono::{DateTime, Utc};
use dispatch_domain::DeliveryStatus;
use dispatch_domain::retry::{AttemptResult, Decision, FailureCode, RetryPolicy};
use dispatch_domain::sealing::Keyring;
use dispatch_store::queries::deliveries::{ClaimedDelivery, Outcome};
use ring::rand::{SecureRandom, SystemRandom};
use tracing::Instrument;

use crate::client::Sent;
use crate::request;
use crate::resilience::{Destination, Throttled, now};

/// A number in [-1, 1] for the jitter of the next wait.
fn jitter_unit() -> f64 {
    let mut bytes = [0u8; 4];
    if SystemRandom::new().fill(&mut bytes).is_err() {
        return 0.0;
    }
    f64::from(u32::from_le_bytes(bytes)) / f64::from(u32::MAX) * 2.0 - 1.0
}

/// The outcome of not sending `delivery` now: it waits until `until` with its attempts
/// unchanged (`pending` if never attempted, else `retrying`).
pub fn deferral(delivery: &ClaimedDelivery, until: DateTime<Utc>) -> Outcome {
    Outcome {
        delivery_id: delivery.id,
        leased_until: delivery.leased_until,
        attempted: false,
        status: if delivery.attempts == 0 {
            DeliveryStatus::Pending
        } else {
            DeliveryStatus::Retrying
        },
        next_attempt_at: Some(until),
        status_code: None,
        latency_ms: 0,
        error_code: None,
        error: None,
        response_body: None,
    }
}

/// Makes one attempt at `delivery` through `destination` and returns the outcome to record;
/// `keyring` opens the subscription's sealed secrets.
///
/// The attempt runs in a `deliver` span continuing the event's trace (its stored
/// `traceparent`); the webhook request carries this span as its own `traceparent`.
pub async fn attempt(
    destination: &Destination,
    policy: &RetryPolicy,
    keyring: &Keyring,
    delivery: &ClaimedDelivery,
) -> Outcome {
    let attempt_number = u32::try_from(delivery.attempts)
        .unwrap_or(0)
        .saturating_add(1);
    let span = tracing::info_span!(
        parent: None,
        "deliver",
        otel.kind = "client",
        event.id = %delivery.event_id,
        subscription.id = %delivery.subscription_id,
        attempt = attempt_number,
        http.request.method = "POST",
        http.response.status_code = tracing::field::Empty,
        outcome = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    dispatch_telemetry::set_remote_parent(&span, delivery.traceparent.as_deref());
    attempt_in(
        destination,
        policy,
        keyring,
        delivery,
        attempt_number,
        &span,
    )
    .instrument(span.clone())
    .await
}

/// The trace id for the log line: the `deliver` span's, or with no tracing installed the one
/// the event was ingested under.
fn trace_id(span: &tracing::Span, delivery: &ClaimedDelivery) -> Option<String> {
    dispatch_telemetry::trace_id_of(span).or_else(|| {
        delivery
            .traceparent
            .as_deref()
            .and_then(dispatch_telemetry::TraceParent::parse)
            .map(|p| p.trace_id_hex())
    })
}

async fn attempt_in(
    destination: &Destination,
    policy: &RetryPolicy,
    keyring: &Keyring,
    delivery: &ClaimedDelivery,
    attempt_number: u32,
    span: &tracing::Span,
) -> Outcome {
    let now_wall = Utc::now();
    let sent = match request::build(delivery, keyring, now_wall) {
        Ok(req) => match destination.call(req).await {
            Ok(sent) => sent,
            Err(throttled) => {
                span.record("outcome", "deferred");
                return deferred(delivery, throttled);
            }
        },
        Err(e) if e.is_secret() => {
            // An operator's problem (a key missing from secret_keys, or a damaged row), not the
            // destination's: said loudly, once per attempt. The message never holds a secret.
            tracing::error!(
                event.id = %delivery.event_id,
                subscription.id = %delivery.subscription_id,
                error = %e,
                "cannot sign the delivery: nothing sent"
            );
            Sent {
                result: AttemptResult::Failed(FailureCode::SecretUnavailable),
                latency: std::time::Duration::ZERO,
                body: None,
                error: Some(e.to_string()),
            }
        }
        Err(e) => Sent {
            result: AttemptResult::Failed(FailureCode::Request),
            latency: std::time::Duration::ZERO,
            body: None,
            error: Some(e.to_string()),
        },
    };
    // The subscription's own retry settings, read by the claim: changed ones apply from the
    // next attempt on.
    let policy = policy.for_subscription(
        delivery.max_attempts.and_then(|n| u32::try_from(n).ok()),
        delivery
            .max_delay_secs
            .and_then(|s| u64::try_from(s).ok())
            .map(std::time::Duration::from_secs),
    );
    let decision = policy.decide(attempt_number, &sent.result, jitter_unit());
    let status_code = match sent.result {
        AttemptResult::Response { status, .. } => Some(i32::from(status)),
        AttemptResult::Failed(_) => None,
    };
    let (status, next_attempt_at, error_code) = match &decision {
        Decision::Delivered => (DeliveryStatus::Delivered, None, None),
        Decision::Retry { delay, code } => (
            DeliveryStatus::Retrying,
            Some(after(now_wall, *delay)),
            Some(code.as_str().to_owned()),
        ),
        Decision::GiveUp { code } => (DeliveryStatus::Failed, None, Some(code.as_str().to_owned())),
    };
    record_metrics(status, status_code, error_code.as_deref(), sent.latency);
    record_tenant(status, &delivery.subscription_id);
    if let Some(code) = status_code {
        span.record("http.response.status_code", code);
    }
    span.record("outcome", status.as_str());
    if status != DeliveryStatus::Delivered {
        span.record("otel.status_code", "ERROR");
    }
    tracing::info!(
        event.id = %delivery.event_id,
        subscription.id = %delivery.subscription_id,
        attempt = attempt_number,
        status_code,
        latency_ms = sent.latency.as_millis() as u64,
        outcome = status.as_str(),
        error_code = error_code.as_deref(),
        trace_id = trace_id(span, delivery),
        "delivery attempt"
    );
    Outcome {
        delivery_id: delivery.id,
        leased_until: delivery.leased_until,
        attempted: true,
        status,
        next_attempt_at,
        status_code,
        latency_ms: i32::try_from(sent.latency.as_millis()).unwrap_or(i32::MAX),
        error_code,
        error: sent.error.map(storable),
        response_body: sent.body.map(storable),
    }
}

/// The per-tenant counter: a delivery's tenant is its stored subscription id's.
fn record_tenant(status: DeliveryStatus, subscription_id: &str) {
    use dispatch_telemetry::metrics as names;
    if matches!(status, DeliveryStatus::Delivered | DeliveryStatus::Failed) {
        metrics::counter!(
            names::TENANT_EVENTS,
            names::TENANT => dispatch_domain::tenant::tenant_of(subscription_id).to_owned(),
            names::OUTCOME => status.as_str()
        )
        .increment(1);
    }
}

fn record_metrics(
    status: DeliveryStatus,
    status_code: Option<i32>,
    error_code: Option<&str>,
    latency: std::time::Duration,
) {
    use dispatch_telemetry::metrics as names;
    let counter = match status {
        DeliveryStatus::Delivered => Some(names::EVENTS_DELIVERED),
        DeliveryStatus::Failed => Some(names::EVENTS_FAILED),
        DeliveryStatus::Retrying => Some(names::EVENTS_RETRYING),
        _ => None,
    };
    if let Some(name) = counter {
        metrics::counter!(name).increment(1);
    }
    let class = names::status_class(status_code.and_then(|c| u16::try_from(c).ok()));
    metrics::counter!(
        names::DELIVERY_ATTEMPTS,
        names::OUTCOME => status.as_str(),
        names::STATUS_CLASS => class,
        names::ERROR_CODE => error_code.unwrap_or("none").to_owned()
    )
    .increment(1);
    metrics::histogram!(names::DELIVERY_DURATION).record(latency.as_secs_f64());
}

/// Counts a delivery put back without an attempt (`reason`: rate_limited, circuit_open, busy;
/// `stalled` is counted by the claim, which parks them in bulk).
pub fn count_deferral(reason: &'static str, subscription_id: &str) {
    use dispatch_telemetry::metrics as names;
    metrics::counter!(names::DELIVERIES_DEFERRED, names::REASON => reason).increment(1);
    if reason == "rate_limited" {
        metrics::counter!(
            names::RATE_LIMITER_REJECTIONS,
            names::SUBSCRIPTION_ID => subscription_id.to_owned()
        )
        .increment(1);
    }
}

fn deferred(delivery: &ClaimedDelivery, throttled: Throttled) -> Outcome {
    count_deferral(throttled.reason(), &delivery.subscription_id);
    let wait = throttled.retry_at().saturating_duration_since(now());
    tracing::debug!(
        event.id = %delivery.event_id,
        subscription.id = %delivery.subscription_id,
        reason = throttled.reason(),
        wait_ms = wait.as_millis() as u64,
        "delivery deferred"
    );
    deferral(delivery, after(Utc::now(), wait))
}

pub fn after(now: DateTime<Utc>, delay: std::time::Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(delay)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .unwrap_or(now)
}

/// PostgreSQL text cannot hold NUL: a destination answering with one must not make the outcome
/// unrecordable.
fn storable(text: String) -> String {
    if text.contains('\0') {
        text.replace('\0', "\u{FFFD}")
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::storable;

    #[test]
    fn nul_characters_are_replaced_before_storing() {
        assert_eq!(storable("a\0b".to_owned()), "a\u{FFFD}b");
        assert_eq!(storable("plain".to_owned()), "plain");
    }
}
