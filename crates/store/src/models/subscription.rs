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
}

/// A subscription as accepted by the API, about to be stored.
#[derive(Debug, Clone)]
pub struct NewSubscription {
    pub id: SubscriptionId,
    pub url: DestinationUrl,
    pub event_types: Vec<Pattern>,
    pub secret: Option<String>,
}
