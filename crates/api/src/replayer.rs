//! Works stored replays (`POST /replays`) in the background of every API replica: one bounded
//! batch per transaction, the oldest running replay first, until none is left; then it waits
//! for a new replay here, or polls for one created on another replica.

use std::sync::Arc;
use std::time::Duration;

use dispatch_store::queries::replays;
use dispatch_store::{Pool, pool};
use tokio::sync::Notify;

use crate::wake::Waker;

/// How often an idle replica looks for replays created elsewhere (or left by a dead replica).
pub const IDLE_POLL: Duration = Duration::from_secs(1);

/// A handle to the background task: [`Replayer::wake`] starts work on a new replay at once.
#[derive(Clone)]
pub struct Replayer {
    pending: Arc<Notify>,
}

impl Replayer {
    /// Starts the task; must be called inside a tokio runtime, and lives as long as it.
    pub fn spawn(pool: Pool, workers: Waker) -> Self {
        let pending = Arc::new(Notify::new());
        let requests = pending.clone();
        tokio::spawn(async move {
            loop {
                let worked = match pool::connection(&pool).await {
                    Ok(mut conn) => replays::work_batch(&mut conn, None).await,
                    Err(e) => Err(e),
                };
                match worked {
                    Ok(Some(replay)) => {
                        if replay.requeued > 0 {
                            workers.wake();
                        }
                        if replay.state != "running" {
                            tracing::info!(
                                replay.id = %replay.id, state = %replay.state,
                                requeued = replay.requeued, batches = replay.batches,
                                "replay finished"
                            );
                        }
                        // Let requests have the pool between batches.
                        tokio::task::yield_now().await;
                    }
                    Ok(None) => {
                        let _ = tokio::time::timeout(IDLE_POLL, requests.notified()).await;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "could not work on replays; trying again");
                        tokio::time::sleep(IDLE_POLL).await;
                    }
                }
            }
        });
        Self { pending }
    }

    /// Asks the task to look for work now.
    pub fn wake(&self) {
        self.pending.notify_one();
    }
}
