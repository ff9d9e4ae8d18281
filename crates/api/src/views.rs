//! The JSON shapes the API answers with (documented field by field in docs/spec.md).

use chrono::{DateTime, Utc};
use dispatch_domain::{DeliveryStatus, summarise_event_status};
use dispatch_store::StoreError;
use dispatch_store::models::{AttemptRow, DeliveryRow, EventRow, SubscriptionRow};
use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct EventView {
    pub id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub source: String,
    pub data: serde_json::Value,
    /// The event's status, summarised from its deliveries.
    pub status: DeliveryStatus,
    pub received_at: DateTime<Utc>,
    pub deliveries: Vec<DeliveryView>,
}

#[derive(Debug, Serialize)]
pub struct DeliveryView {
    pub subscription_id: String,
    pub status: DeliveryStatus,
    pub attempts: i32,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub updated_at: DateTime<Utc>,
}

impl EventView {
    pub fn new(event: EventRow, deliveries: Vec<DeliveryRow>) -> Result<Self, StoreError> {
        let deliveries = deliveries
            .into_iter()
            .map(|d| {
                let status = d.status()?;
                Ok(DeliveryView {
                    next_attempt_at: (!status.is_terminal()
                        && status != DeliveryStatus::Processing)
                        .then_some(d.next_attempt_at),
                    subscription_id: d.subscription_id,
                    status,
                    attempts: d.attempts,
                    last_error: d.last_error,
                    updated_at: d.updated_at,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(Self {
            status: summarise_event_status(deliveries.iter().map(|d| d.status)),
            id: event.id,
            event_type: event.event_type,
            source: event.source,
            data: event.data,
            received_at: event.received_at,
            deliveries,
        })
    }
}

#[derive(Debug, Serialize)]
pub struct AttemptView {
    pub subscription_id: String,
    pub attempt: i32,
    pub status_code: Option<i32>,
    pub latency_ms: i32,
    pub error_code: Option<String>,
    pub error: Option<String>,
    pub response_body: Option<String>,
    pub created_at: DateTime<Utc>,
}

impl From<AttemptRow> for AttemptView {
    fn from(a: AttemptRow) -> Self {
        Self {
            subscription_id: a.subscription_id,
            attempt: a.attempt,
            status_code: a.status_code,
            latency_ms: a.latency_ms,
            error_code: a.error_code,
            error: a.error,
            response_body: a.response_body,
            created_at: a.created_at,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct SubscriptionView {
    pub id: String,
    pub url: String,
    pub event_types: Vec<String>,
    pub enabled: bool,
    pub has_secret: bool,
    pub created_at: DateTime<Utc>,
    pub rate_limit: RateLimitView,
    pub circuit: CircuitView,
    /// Present only in the response that created the subscription; never shown again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

/// A destination's rate limit: `per_second` on average, at most `burst` at once, for the whole
/// fleet of workers.
#[derive(Debug, Serialize)]
pub struct RateLimitView {
    pub per_second: f64,
    pub burst: i32,
}

/// A destination's circuit as last published by a worker.
#[derive(Debug, Serialize)]
pub struct CircuitView {
    /// `closed`, `half_open` or `open`.
    pub state: String,
    /// While open: when it half-opens.
    pub open_until: Option<DateTime<Utc>>,
    pub changed_at: Option<DateTime<Utc>>,
}

impl SubscriptionView {
    /// The public view: the secret is withheld.
    pub fn public(row: SubscriptionRow) -> Self {
        let open = row.circuit_open_until.filter(|until| *until > Utc::now());
        Self {
            rate_limit: RateLimitView {
                per_second: row.rate_limit_per_sec,
                burst: row.rate_limit_burst,
            },
            circuit: CircuitView {
                // An open circuit whose time is up lets trial requests through: half-open.
                state: match (row.circuit_state.as_str(), open) {
                    ("open", None) => "half_open".to_owned(),
                    (state, _) => state.to_owned(),
                },
                open_until: open,
                changed_at: row.circuit_changed_at,
            },
            has_secret: row.secret.is_some(),
            id: row.id,
            url: row.url,
            event_types: row.event_types,
            enabled: row.enabled,
            created_at: row.created_at,
            secret: None,
        }
    }

    /// The creation response: the only time the secret is returned.
    pub fn created(row: SubscriptionRow) -> Self {
        let secret = row.secret.clone();
        Self {
            secret,
            ..Self::public(row)
        }
    }
}

/// A page of a list: `data` and the cursor to pass as `?cursor=` for the next page (null at the
/// end).
#[derive(Debug, Serialize)]
pub struct Page<T> {
    pub data: Vec<T>,
    pub next_cursor: Option<String>,
}

/// A list that is returned whole.
#[derive(Debug, Serialize)]
pub struct List<T> {
    pub data: Vec<T>,
}
