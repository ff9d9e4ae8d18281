//! Stored events.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use dispatch_domain::{EventId, EventType, OrderingKey, Source, TenantId};

use crate::schema::events;

#[derive(Debug, Clone, PartialEq, Queryable, QueryableByName, Selectable)]
#[diesel(table_name = events, check_for_backend(diesel::pg::Pg))]
pub struct EventRow {
    pub id: String,
    pub event_type: String,
    pub source: String,
    pub data: serde_json::Value,
    pub received_at: DateTime<Utc>,
    /// The W3C `traceparent` the event was ingested under, continued by its deliveries.
    pub traceparent: Option<String>,
    /// The producer's ordering key (per-key subscriptions receive one key's events in order).
    pub ordering_key: Option<String>,
}

/// An event as accepted by the API, about to be stored.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// Whose it is: `id` is unique (and idempotent) within this tenant.
    pub tenant: TenantId,
    pub id: EventId,
    pub event_type: EventType,
    pub source: Source,
    pub data: serde_json::Value,
    /// The W3C `traceparent` to store with the event (already validated). Not part of the
    /// event's content: a repeat with another (or no) traceparent is still the same event.
    pub traceparent: Option<String>,
    /// Orders the event's deliveries to per-key subscriptions. Part of the event's content.
    pub ordering_key: Option<OrderingKey>,
}
