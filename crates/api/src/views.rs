//! The JSON shapes the API answers with (documented field by field in docs/spec.md).

use chrono::{DateTime, Utc};
use dispatch_domain::{DeliveryStatus, summarise_event_status};
use dispatch_store::StoreError;
use dispatch_store::models::{AttemptRow, DeliveryRow, EventRow, SubscriptionRow};
use serde::Serialize;
use utoipa::ToSchema;

use crate::openapi::{AttemptErrorCode, CircuitState, DeliveryStatusSchema};

/// The id a caller knows for a stored id (`TenantId::stored_id`): every id an answer shows
/// goes through this, so no answer names a tenant's stored form.
pub(crate) fn external(stored: String) -> String {
    dispatch_domain::tenant::external_id(&stored).to_owned()
}

/// An event and its deliveries (`POST /events`, `GET /events/{id}`).
#[derive(Debug, Serialize, ToSchema)]
pub struct EventView {
    /// The producer's id.
    #[schema(example = "evt_123")]
    pub id: String,
    /// Event type.
    #[serde(rename = "type")]
    #[schema(example = "order.created")]
    pub event_type: String,
    /// Producing system.
    #[schema(example = "billing-service")]
    pub source: String,
    #[schema(schema_with = crate::openapi::stored_event_data)]
    pub data: serde_json::Value,
    /// The event's status, summarised from its deliveries.
    #[schema(value_type = DeliveryStatusSchema)]
    pub status: DeliveryStatus,
    /// When the event was first stored.
    pub received_at: DateTime<Utc>,
    /// The producer's ordering key; null: none.
    #[schema(required = true, example = "customer:42")]
    pub ordering_key: Option<String>,
    /// One per matched subscription, in creation order, including cancelled ones.
    pub deliveries: Vec<DeliveryView>,
}

/// One delivery of an event to one subscription.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryView {
    /// The subscription it goes to (it may since have been deleted).
    #[schema(example = "sub_123")]
    pub subscription_id: String,
    #[schema(value_type = DeliveryStatusSchema)]
    pub status: DeliveryStatus,
    /// Attempts recorded so far.
    #[schema(minimum = 0)]
    pub attempts: i32,
    /// When the next attempt is due; only for `pending` and `retrying`, else null.
    #[schema(required = true)]
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// Why the latest attempt failed; null once one succeeded.
    #[schema(required = true)]
    pub last_error: Option<String>,
    /// Last change of this delivery.
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
                    subscription_id: external(d.subscription_id),
                    status,
                    attempts: d.attempts,
                    last_error: d.last_error,
                    updated_at: d.updated_at,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(Self {
            status: summarise_event_status(deliveries.iter().map(|d| d.status)),
            id: external(event.id),
            event_type: event.event_type,
            source: event.source,
            data: event.data,
            received_at: event.received_at,
            ordering_key: event.ordering_key,
            deliveries,
        })
    }
}

/// One recorded attempt of a delivery (`GET /events/{id}/attempts`,
/// `GET /deliveries/{id}/attempts`).
#[derive(Debug, Serialize, ToSchema)]
pub struct AttemptView {
    /// The delivery it belongs to (`/deliveries/{id}`).
    #[schema(example = 42)]
    pub delivery_id: i64,
    /// The subscription of that delivery.
    #[schema(example = "sub_123")]
    pub subscription_id: String,
    /// 1 for the first attempt of that delivery, then 2, 3, …
    #[schema(minimum = 1)]
    pub attempt: i32,
    /// The destination's HTTP status; null when no answer came.
    #[schema(required = true, example = 500)]
    pub status_code: Option<i32>,
    /// Duration of the attempt, in milliseconds.
    #[schema(minimum = 0)]
    pub latency_ms: i32,
    /// Why the attempt failed, for programs; null on a 2xx.
    #[schema(value_type = Option<AttemptErrorCode>, required = true)]
    pub error_code: Option<String>,
    /// Why the attempt failed, for humans (`HTTP 500`, the connection error, …); null on a 2xx.
    #[schema(required = true)]
    pub error: Option<String>,
    /// The first `stored_response_bytes` bytes of the answer (UTF-8, invalid bytes replaced);
    /// null when the body was empty or no answer came.
    #[schema(required = true)]
    pub response_body: Option<String>,
    /// When the attempt was recorded.
    pub created_at: DateTime<Utc>,
}

impl From<AttemptRow> for AttemptView {
    fn from(a: AttemptRow) -> Self {
        Self {
            delivery_id: a.delivery_id,
            subscription_id: external(a.subscription_id),
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

/// A subscription (`POST /subscriptions`, `GET /subscriptions[/{id}]`).
#[derive(Debug, Serialize, ToSchema)]
pub struct SubscriptionView {
    /// Given or generated id.
    #[schema(example = "sub_123")]
    pub id: String,
    /// Normalised destination URL.
    #[schema(format = "uri", example = "https://example.com/webhook")]
    pub url: String,
    /// The patterns, de-duplicated.
    #[schema(example = json!(["order.*"]))]
    pub event_types: Vec<String>,
    /// `false`: paused (`PATCH` with `enabled`): its deliveries are created but held, never
    /// attempted, until it is resumed.
    pub enabled: bool,
    /// Free text for operators; null when none was given.
    #[schema(
        required = true,
        max_length = 1024,
        example = "Orders to the billing system"
    )]
    pub description: Option<String>,
    /// Free string → string labels for operators (at most 50); `{}` when none.
    #[schema(example = json!({"team": "billing"}))]
    pub metadata: std::collections::BTreeMap<String, String>,
    /// Headers sent with every attempt (names lower-cased; at most 20); `{}` when none.
    /// Dispatch's own headers win over them.
    #[schema(example = json!({"authorization": "Bearer s3cr3t"}))]
    pub headers: std::collections::BTreeMap<String, String>,
    /// This subscription's retry limits; a null member is the worker's global setting.
    pub retry: RetryView,
    /// This subscription's request timeout in milliseconds (capped at the worker's
    /// `request_timeout_ms`); null: the worker's global setting.
    #[schema(required = true, minimum = 10, maximum = 600000, example = 5000)]
    pub timeout_ms: Option<i32>,
    /// The payload filter (a SQL/JSON path predicate over `{type, source, data}`): only events
    /// for which it is true get a delivery. Null: none (every event its patterns match).
    #[schema(required = true, max_length = 1024, example = "$.data.amount > 100")]
    pub filter: Option<String>,
    /// Seconds of nothing but failed attempts after which Dispatch disables it (0: never); null:
    /// the worker's `auto_disable_after_secs` (default 5 days).
    #[schema(required = true, minimum = 0, maximum = 31536000, example = 86400)]
    pub auto_disable_after_secs: Option<i32>,
    /// Why Dispatch disabled it (auto-disable; `enabled` is then false); null unless it did.
    /// Cleared when `PATCH` sets `enabled: true`.
    #[schema(
        required = true,
        example = "every attempt failed for 432000 s (since 2026-12-01T10:00:00+00:00): auto-disabled"
    )]
    pub disabled_reason: Option<String>,
    /// When Dispatch disabled it; null unless it did.
    #[schema(required = true)]
    pub disabled_at: Option<DateTime<Utc>>,
    /// Since when every attempt has failed; null while its last attempt succeeded (or none was
    /// made).
    #[schema(required = true)]
    pub failing_since: Option<DateTime<Utc>>,
    /// `per_key`: events with the same `ordering_key` are delivered one at a time, in order.
    #[schema(value_type = crate::openapi::OrderingSchema)]
    pub ordering: String,
    /// What a per-key subscription does when a key's head fails for good.
    #[schema(value_type = crate::openapi::OnExhaustedSchema)]
    pub on_exhausted: String,
    /// Whether the subscription has a secret: true for every subscription created by this API.
    pub has_secret: bool,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    pub rate_limit: RateLimitView,
    pub circuit: CircuitView,
    /// The signing secret, given or generated: present only in the `201` response of the request
    /// that created the subscription; never shown again.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub secret: Option<String>,
}

/// A subscription's own retry limits (null: the worker's `retry_max_attempts` /
/// `retry_max_delay_secs`).
#[derive(Debug, Serialize, ToSchema)]
pub struct RetryView {
    /// Attempts in all, the first included.
    #[schema(required = true, minimum = 1, maximum = 1000, example = 5)]
    pub max_attempts: Option<i32>,
    /// Longest wait between two attempts, in seconds.
    #[schema(required = true, minimum = 1, maximum = 604800, example = 600)]
    pub max_delay_secs: Option<i32>,
}

/// A destination's rate limit: `per_second` on average, at most `burst` at once, for the whole
/// fleet of workers.
#[derive(Debug, Serialize, ToSchema)]
pub struct RateLimitView {
    #[schema(example = 100.0)]
    pub per_second: f64,
    #[schema(example = 10)]
    pub burst: i32,
}

/// A destination's circuit as last published by a worker.
#[derive(Debug, Serialize, ToSchema)]
pub struct CircuitView {
    #[schema(value_type = CircuitState)]
    pub state: String,
    /// While open: when it half-opens; null otherwise.
    #[schema(required = true)]
    pub open_until: Option<DateTime<Utc>>,
    /// When a worker last published a change; null until one has.
    #[schema(required = true)]
    pub changed_at: Option<DateTime<Utc>>,
}

impl SubscriptionView {
    /// The public view: the secret is withheld.
    pub fn public(row: SubscriptionRow) -> Self {
        let open = row.circuit_open_until.filter(|until| *until > Utc::now());
        let settings =
            dispatch_store::queries::subscription_changes::SubscriptionChange::of(&row).settings;
        Self {
            description: settings.description,
            metadata: settings.metadata,
            headers: settings.headers,
            retry: RetryView {
                max_attempts: settings.max_attempts,
                max_delay_secs: settings.max_delay_secs,
            },
            timeout_ms: settings.timeout_ms,
            filter: settings.filter,
            auto_disable_after_secs: settings.auto_disable_after_secs,
            disabled_reason: row.disabled_reason,
            disabled_at: row.disabled_at,
            failing_since: row.failing_since,
            ordering: settings.ordering.as_str().to_owned(),
            on_exhausted: settings.on_exhausted.as_str().to_owned(),
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
            has_secret: row.has_secret,
            id: external(row.id),
            url: row.url,
            event_types: row.event_types,
            enabled: row.enabled,
            created_at: row.created_at,
            secret: None,
        }
    }

    /// The creation response: the only time the secret (as given or generated, before it was
    /// sealed) is returned.
    pub fn created(row: SubscriptionRow, secret: Option<String>) -> Self {
        Self {
            secret,
            ..Self::public(row)
        }
    }
}

/// The answer to `POST /subscriptions/{id}/rotate-secret`: the new secret, shown this once.
#[derive(Debug, Serialize, ToSchema)]
pub struct SecretRotationView {
    /// The subscription's id.
    #[schema(example = "sub_123")]
    pub id: String,
    /// The new signing secret, given or generated. Never shown again.
    #[schema(example = "whsec_Q2hhbmdlZCBzZWNyZXQgZm9yIHN1Yl8xMjM=")]
    pub secret: String,
    /// Until when the previous secret still signs next to the new one (deliveries carry both
    /// signatures); null when it stopped at once (`overlap_secs` 0, or there was none).
    #[schema(required = true)]
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
}

/// A page of a list: `data` and the cursor to pass as `?cursor=` for the next page (null at the
/// end).
#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T> {
    pub data: Vec<T>,
    /// Pass as `?cursor=` to get the next page; null on the last page.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// The page of `rows`, read with a limit of `limit + 1`: the extra row, if any, only says
    /// that another page exists, whose cursor `cursor` makes from the page's last row.
    pub fn of<R>(
        mut rows: Vec<R>,
        limit: i64,
        cursor: impl Fn(&R) -> String,
        view: impl FnMut(R) -> T,
    ) -> Self {
        let keep = usize::try_from(limit).unwrap_or(0);
        let more = rows.len() > keep;
        rows.truncate(keep);
        let next_cursor = more.then(|| rows.last().map(&cursor)).flatten();
        Self {
            data: rows.into_iter().map(view).collect(),
            next_cursor,
        }
    }
}

/// `GET /healthz` and `GET /readyz` when all is well.
#[derive(Debug, Serialize, ToSchema)]
pub struct HealthView {
    /// `ok` (`/healthz`) or `ready` (`/readyz`).
    #[schema(example = "ok")]
    pub status: &'static str,
}
