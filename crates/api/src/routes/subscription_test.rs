//! `POST /subscriptions/{id}/test`: one signed `dispatch.test` event to one subscription, and
//! the outcome of its first attempt, for checking a receiver after fixing it.

use dispatch_domain::TenantId;
use std::time::{Duration, Instant};

use actix_web::{HttpResponse, web};
use dispatch_domain::{EventId, EventType, Source, SubscriptionId};
use dispatch_store::models::NewEvent;
use dispatch_store::pool;
use dispatch_store::queries::listing::{self, AttemptsOf};
use dispatch_store::queries::requeue;
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use super::deliveries::DeliveryDetailView;
use super::path_id::PathId;
use crate::error::ApiError;
use crate::views::AttemptView;

/// The type of every test event.
pub const TEST_EVENT_TYPE: &str = "dispatch.test";
/// How long the request waits for a worker's first attempt before answering `202`.
pub const WAIT_FOR_ATTEMPT: Duration = Duration::from_secs(35);
const POLL: Duration = Duration::from_millis(100);
/// A worker that reported in within this long counts as running (workers report every 5 s).
const WORKER_ALIVE_SECS: i64 = 20;

/// The answer: the test delivery and, once a worker attempted it, that attempt.
#[derive(Debug, Serialize, ToSchema)]
pub struct TestDeliveryView {
    /// The stored test event's id (`GET /events/{id}`).
    #[schema(example = "evt_0193a1b2c3d4e5f6a7b8c9d0e1f2a3b4")]
    pub event_id: String,
    pub delivery: DeliveryDetailView,
    /// The first attempt: status code, failure code, duration and the start of the answer;
    /// null when no worker attempted it in time (`202`).
    #[schema(required = true)]
    pub attempt: Option<AttemptView>,
}

/// Send a test event to one subscription.
///
/// Stores a `dispatch.test` event with one delivery, to this subscription only (whatever its
/// patterns; even while it is paused), signs and sends it like any other, and waits up to 35 s
/// for a worker's first attempt (not at all when no worker reported in within 20 s).
#[utoipa::path(
    post,
    path = "/subscriptions/{id}/test",
    operation_id = "test_subscription",
    tag = "subscriptions",
    params(("id" = String, Path, description = "The subscription's id.")),
    responses(
        (status = 200, description = "Attempted: `attempt` says how it went (a failed attempt is retried like any other).", body = TestDeliveryView),
        (status = 202, description = "Stored, but no worker attempted it within 35 s (is the destination's circuit open?), or no worker is running (none reported in within 20 s; answered at once): follow `GET /deliveries/{id}`.", body = TestDeliveryView),
    ),
)]
pub async fn send(
    auth: crate::auth::Authorized,
    id: PathId<SubscriptionId>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    send_with(&state, &auth.tenant, &id).await
}

/// `POST /subscriptions/{id}/test` (the console's test button runs this too).
pub(crate) async fn send_with(
    state: &AppState,
    tenant: &TenantId,
    id: &PathId<SubscriptionId>,
) -> Result<HttpResponse, ApiError> {
    let event_id = EventId::generate();
    let event = NewEvent {
        tenant: tenant.clone(),
        id: event_id.clone(),
        event_type: EventType::parse(TEST_EVENT_TYPE).map_err(|e| ApiError::Internal(e.into()))?,
        source: Source::parse("dispatch").map_err(|e| ApiError::Internal(e.into()))?,
        data: serde_json::json!({
            "subscription_id": id.as_str(),
            "message": "A test event sent by an operator (POST /subscriptions/{id}/test).",
        }),
        traceparent: None,
        // Never ordered: a test goes out at once, whatever waits in the subscription's keys.
        ordering_key: None,
    };
    let mut conn = pool::connection(&state.pool).await?;
    let delivery = requeue::send_test(&mut conn, tenant, id.as_str(), &event)
        .await?
        .ok_or_else(|| id.not_found())?;
    tracing::info!(subscription.id = %**id, delivery.id = delivery, "test event sent");
    state.waker.wake();
    // No worker reported in lately: nothing will attempt it soon, so say so now rather than
    // hold the request for the whole wait.
    let waiting =
        if dispatch_store::queries::workers::alive(&mut conn, WORKER_ALIVE_SECS).await? > 0 {
            WAIT_FOR_ATTEMPT
        } else {
            Duration::ZERO
        };
    // The connection goes back to the pool while waiting: a few test calls must not hold
    // connections that ingestion needs for 35 s.
    drop(conn);
    let started = Instant::now();
    loop {
        let mut conn = pool::connection(&state.pool).await?;
        let attempts =
            listing::attempts(&mut conn, tenant, AttemptsOf::Delivery(delivery), None, 1).await?;
        let done = !attempts.is_empty();
        if done || started.elapsed() >= waiting {
            let item = listing::delivery(&mut conn, tenant, delivery)
                .await?
                .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("test delivery vanished")))?;
            let view = TestDeliveryView {
                event_id: event_id.into_inner(),
                delivery: DeliveryDetailView::new(item)?,
                attempt: attempts.into_iter().next().map(AttemptView::from),
            };
            return Ok(if done {
                HttpResponse::Ok().json(view)
            } else {
                HttpResponse::Accepted().json(view)
            });
        }
        drop(conn);
        tokio::time::sleep(POLL).await;
    }
}
