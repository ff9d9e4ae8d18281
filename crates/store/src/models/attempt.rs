//! Stored delivery attempts: what each HTTP call to a destination returned.

use chrono::{DateTime, Utc};
use diesel::prelude::*;

use crate::schema::attempts;

#[derive(Debug, Clone, PartialEq, Queryable, Selectable)]
#[diesel(table_name = attempts, check_for_backend(diesel::pg::Pg))]
pub struct AttemptRow {
    pub id: i64,
    pub delivery_id: i64,
    pub event_id: String,
    pub subscription_id: String,
    pub attempt: i32,
    pub status_code: Option<i32>,
    pub latency_ms: i32,
    pub error_code: Option<String>,
    pub error: Option<String>,
    pub response_body: Option<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = attempts)]
pub struct NewAttempt {
    pub delivery_id: i64,
    pub event_id: String,
    pub subscription_id: String,
    pub attempt: i32,
    pub status_code: Option<i32>,
    pub latency_ms: i32,
    pub error_code: Option<String>,
    pub error: Option<String>,
    pub response_body: Option<String>,
}
