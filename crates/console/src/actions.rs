//! What the console changes, it asks the JSON API's own code to change: [`Actions`] is handed in
//! by `dispatch-api` (which mounts the console, so the console cannot depend on it), and runs an
//! [`Action`] through the same function the route runs, body parsing and checks included. So
//! every action the console offers exists in the API, with the same rules and the same errors.

use std::future::Future;
use std::pin::Pin;

use serde_json::Value;

/// One change, as the API's JSON route would receive it.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// `POST /subscriptions` with this body.
    CreateSubscription(Value),
    /// `PATCH /subscriptions/{id}` with this merge patch (`{"enabled": false}` pauses).
    PatchSubscription { id: String, patch: Value },
    /// `DELETE /subscriptions/{id}`.
    DeleteSubscription { id: String },
    /// `POST /subscriptions/{id}/rotate-secret` without a body (the default overlap).
    RotateSecret { id: String },
    /// `POST /subscriptions/{id}/test` without a body (the default test event).
    SendTest { id: String },
    /// `POST /deliveries/{id}/retry` without a body (a failed delivery, sent again).
    RetryDelivery { id: i64 },
    /// `POST /replays` with this body.
    CreateReplay(Value),
}

/// How the API refused an action: its status and its error body's message and field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    /// The error's stable code (`invalid_field`, `destination_refused`, …).
    pub code: String,
    /// The field at fault, when the API names one.
    pub field: Option<String>,
    pub message: String,
}

/// The API's answer: its JSON body (`null` for an empty one), or its refusal.
pub type Outcome = Pin<Box<dyn Future<Output = Result<Value, Refusal>>>>;

/// Runs actions through the API's route code.
pub trait Actions: Send + Sync {
    fn run(&self, tenant: &dispatch_domain::TenantId, action: Action) -> Outcome;
}
