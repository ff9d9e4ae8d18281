//! Stored subscriptions.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use dispatch_domain::{DestinationUrl, OnExhausted, Ordering, Pattern, SubscriptionId, TenantId};

use crate::schema::subscriptions;

#[derive(Debug, Clone, PartialEq, Queryable, Selectable)]
#[diesel(table_name = subscriptions, check_for_backend(diesel::pg::Pg))]
pub struct SubscriptionRow {
    pub id: String,
    pub url: String,
    pub event_types: Vec<String>,
    /// Whether the subscription has a secret (sealed, or a legacy plaintext one). The secret
    /// itself is never read into a row: only the worker's claim opens it.
    #[diesel(select_expression = subscriptions::sealed_secret.is_not_null().or(subscriptions::secret.is_not_null()))]
    #[diesel(select_expression_type = HasSecret)]
    pub has_secret: bool,
    pub enabled: bool,
    pub created_at: DateTime<Utc>,
    pub rate_limit_per_sec: f64,
    pub rate_limit_burst: i32,
    /// `closed`, `half_open` or `open`, as last published by a worker.
    pub circuit_state: String,
    pub circuit_open_until: Option<DateTime<Utc>>,
    pub circuit_changed_at: Option<DateTime<Utc>>,
    pub description: Option<String>,
    /// A JSON object of strings.
    pub metadata: serde_json::Value,
    /// A JSON object: lower-case header name → value.
    pub headers: serde_json::Value,
    pub max_attempts: Option<i32>,
    pub max_delay_secs: Option<i32>,
    pub timeout_ms: Option<i32>,
    /// The payload filter as written (`None`: none).
    pub filter: Option<String>,
    /// `None`: the worker's global threshold; `Some(0)`: never auto-disabled.
    pub auto_disable_after_secs: Option<i32>,
    /// Set when Dispatch disabled it (auto-disable); cleared when it is enabled again.
    pub disabled_reason: Option<String>,
    pub disabled_at: Option<DateTime<Utc>>,
    /// When its current run of failed attempts began (`None`: healthy).
    pub failing_since: Option<DateTime<Utc>>,
    /// `none` or `per_key` ([`dispatch_domain::Ordering`]).
    pub ordering: String,
    /// `skip` or `block` ([`dispatch_domain::OnExhausted`]).
    pub on_exhausted: String,
}

type HasSecret = diesel::dsl::Or<
    diesel::dsl::IsNotNull<subscriptions::sealed_secret>,
    diesel::dsl::IsNotNull<subscriptions::secret>,
>;

/// A subscription as accepted by the API, about to be stored.
#[derive(Clone)]
pub struct NewSubscription {
    /// Whose it is: `id` is unique within this tenant.
    pub tenant: TenantId,
    pub id: SubscriptionId,
    pub url: DestinationUrl,
    pub event_types: Vec<Pattern>,
    /// The signing secret in the clear, as accepted; `queries::subscriptions::insert` seals it
    /// before it reaches the database.
    pub secret: Option<String>,
    pub rate_limit: RateLimit,
    pub settings: SubscriptionSettings,
    /// `false`: created paused (its deliveries are held until it is resumed).
    pub enabled: bool,
}

/// What a subscription may set for itself beyond its URL and patterns; `None` and empty maps
/// mean the global setting (or nothing).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SubscriptionSettings {
    pub description: Option<String>,
    pub metadata: std::collections::BTreeMap<String, String>,
    /// Lower-case header name → value.
    pub headers: std::collections::BTreeMap<String, String>,
    pub max_attempts: Option<i32>,
    pub max_delay_secs: Option<i32>,
    pub timeout_ms: Option<i32>,
    /// A SQL/JSON path predicate over `{type, source, data}` (already validated); `None`: none.
    pub filter: Option<String>,
    /// Seconds of nothing but failed attempts before it is disabled (`Some(0)`: never);
    /// `None`: the worker's `auto_disable_after_secs`.
    pub auto_disable_after_secs: Option<i32>,
    /// Whether events of one `ordering_key` are delivered one at a time, in order.
    pub ordering: Ordering,
    /// What a per-key subscription does when the head of a key fails for good.
    pub on_exhausted: OnExhausted,
}

impl SubscriptionSettings {
    pub(crate) fn metadata_json(&self) -> serde_json::Value {
        serde_json::Value::Object(
            self.metadata
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                .collect(),
        )
    }

    pub(crate) fn headers_json(&self) -> serde_json::Value {
        serde_json::Value::Object(
            self.headers
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                .collect(),
        )
    }
}

impl std::fmt::Debug for NewSubscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewSubscription")
            .field("tenant", &self.tenant)
            .field("id", &self.id)
            .field("url", &self.url)
            .field("event_types", &self.event_types)
            .field("secret", &self.secret.as_ref().map(|_| ".."))
            .field("rate_limit", &self.rate_limit)
            .field("settings", &self.settings)
            .field("enabled", &self.enabled)
            .finish()
    }
}

/// A destination's rate limit: `per_second` on average, `burst` at once (seed: 100/s, 10).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: i32,
}

impl Default for RateLimit {
    fn default() -> Self {
        Self {
            per_second: 100.0,
            burst: 10,
        }
    }
}
