//! Stored deliveries: one per event and matching subscription.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use dispatch_domain::DeliveryStatus;

use crate::StoreError;
use crate::schema::deliveries;

#[derive(Debug, Clone, PartialEq, Queryable, Selectable)]
#[diesel(table_name = deliveries, check_for_backend(diesel::pg::Pg))]
pub struct DeliveryRow {
    pub id: i64,
    pub event_id: String,
    pub subscription_id: String,
    pub status: String,
    pub attempts: i32,
    pub next_attempt_at: DateTime<Utc>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl DeliveryRow {
    pub fn status(&self) -> Result<DeliveryStatus, StoreError> {
        self.status.parse().map_err(|e| StoreError::Corrupt {
            what: "delivery status",
            reason: format!("{e}"),
        })
    }
}
