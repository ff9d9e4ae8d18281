//! Stored subscriptions.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use dispatch_domain::{DestinationUrl, Pattern, SubscriptionId};

use crate::schema::subscriptions;

#[derive(Debug, Clone, PartialEq, Queryable, Selectable)]
#[diesel(table_name = subscriptions, check_for_backend(diesel::pg::Pg))]
pub struct SubscriptionRow {
    pub id: String,
    pub url: String,
    pub event_types: Vec<String>,
    pub secret: Option<String>,
    pub enabled: bool,
    pub created_at: DateTime<Utc>,
    pub rate_limit_per_sec: f64,
    pub rate_limit_burst: i32,
    /// `closed`, `half_open` or `open`, as last published by a worker.
    pub circuit_state: String,
    pub circuit_open_until: Option<DateTime<Utc>>,
    pub circuit_changed_at: Option<DateTime<Utc>>,
}

/// A subscription as accepted by the API, about to be stored.
#[derive(Debug, Clone)]
pub struct NewSubscription {
    pub id: SubscriptionId,
    pub url: DestinationUrl,
    pub event_types: Vec<Pattern>,
    pub secret: Option<String>,
    pub rate_limit: RateLimit,
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
