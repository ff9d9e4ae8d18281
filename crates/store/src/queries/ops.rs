//! Operators' queries, behind `dispatch-api admin replay | purge | stats`: re-queueing failed
//! deliveries (here), deleting finished history past a retention period (`purge.rs`), and a
//! snapshot of the queue (`stats.rs`, also `GET /stats`). Every function is meant for a
//! connection outside any transaction (each statement is then a short transaction of its own).

use chrono::{DateTime, Utc};
use diesel_async::AsyncPgConnection;
use dispatch_domain::{DeliveryStatus, TenantId};

use crate::StoreError;
use crate::queries::listing::DeliveryFilter;
use crate::queries::{replays, requeue};

mod purge;
mod stats;

pub use purge::{
    PurgeReport, Purged, count_purgeable, purge, purge_events_batch, purge_subscriptions_batch,
};
pub use stats::{
    Stats, SubscriptionStats, recent_attempts, recent_floor, stats, subscription_stats,
};

// ---------------------------------------------------------------------------------------------
// Replay
// ---------------------------------------------------------------------------------------------

/// Which failed deliveries to replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplaySelector {
    /// Every failed delivery of one event.
    Event(String),
    /// Every failed delivery to one subscription.
    Subscription(String),
    /// Every delivery that failed (its `updated_at`) at or after `since`, and before `until`
    /// when given.
    FailedBetween {
        since: DateTime<Utc>,
        until: Option<DateTime<Utc>>,
    },
}

impl ReplaySelector {
    /// The same selection as a [`DeliveryFilter`], the one `GET /deliveries` and `POST /replays`
    /// take: failed deliveries only.
    pub fn filter(&self) -> DeliveryFilter {
        let mut filter = DeliveryFilter {
            statuses: vec![DeliveryStatus::Failed],
            ..DeliveryFilter::default()
        };
        match self {
            Self::Event(id) => filter.event_id = Some(id.clone()),
            Self::Subscription(id) => filter.subscription_id = Some(id.clone()),
            Self::FailedBetween { since, until } => {
                filter.updated_after = Some(*since);
                filter.updated_before = *until;
            }
        }
        filter
    }
}

/// How many deliveries [`replay`] would re-queue now (the dry run): `tenant`'s failed
/// deliveries matching `selector` whose subscription is not deleted.
pub async fn count_replayable(
    conn: &mut AsyncPgConnection,
    tenant: &TenantId,
    selector: &ReplaySelector,
) -> Result<i64, StoreError> {
    Ok(requeue::count_replayable(conn, tenant, &selector.filter())
        .await?
        .0)
}

/// Replays the failed deliveries matching `selector` whose subscription is not deleted, as
/// `POST /replays` does: a stored replay (visible at `GET /replays/{id}`), worked here batch by
/// batch until it completes (an API replica may work some of its batches meanwhile). Each
/// becomes `pending` with `attempts = 0` (a full new retry schedule), due now; `last_error` and
/// the attempt rows are kept. Returns how many were re-queued.
pub async fn replay(
    conn: &mut AsyncPgConnection,
    tenant: &TenantId,
    selector: &ReplaySelector,
) -> Result<usize, StoreError> {
    let new = replays::NewReplay {
        id: dispatch_domain::ReplayId::generate().into_inner(),
        tenant: tenant.clone(),
        filter: selector.filter(),
        idempotency_key: None,
        request_hash: String::new(),
    };
    let id = match replays::create(conn, &new).await? {
        replays::Created::New(row)
        | replays::Created::Existing(row)
        | replays::Created::KeyReused(row) => row.id,
    };
    loop {
        let now = match replays::work_batch(conn, Some(&id)).await? {
            Some(row) => row,
            // Another replica holds it for a batch: look again shortly.
            None => {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                replays::find(conn, tenant, &id)
                    .await?
                    .ok_or_else(|| StoreError::Corrupt {
                        what: "replay",
                        reason: format!("replay {id} vanished while it ran"),
                    })?
            }
        };
        if now.state != "running" {
            return Ok(usize::try_from(now.requeued).unwrap_or(usize::MAX));
        }
    }
}
