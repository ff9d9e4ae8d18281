//! Waking the delivery workers after new deliveries commit. NOTIFY serialises commits on a
//! global lock, so wake-ups are coalesced: however many events arrive, at most one NOTIFY is sent
//! per `notify_interval`. A lost wake-up costs at most the workers' poll interval.

use std::sync::Arc;
use std::time::Duration;

use dispatch_store::{Pool, notify, pool};
use tokio::sync::Notify;

/// A cheap, clonable handle: [`Waker::wake`] never blocks and never touches the database.
#[derive(Clone)]
pub struct Waker {
    pending: Arc<Notify>,
}

impl Waker {
    /// Starts the background task that turns wake requests into NOTIFYs. Must be called inside a
    /// tokio runtime; the task lives as long as that runtime.
    pub fn spawn(pool: Pool, interval: Duration) -> Self {
        let pending = Arc::new(Notify::new());
        let requests = pending.clone();
        tokio::spawn(async move {
            loop {
                // Many wake() calls while we sleep leave one permit: that is the coalescing.
                requests.notified().await;
                let sent = match pool::connection(&pool).await {
                    Ok(mut conn) => notify::notify(&mut conn).await,
                    Err(e) => Err(e),
                };
                if let Err(e) = sent {
                    tracing::warn!(error = %e, "could not wake the workers; they will poll");
                }
                tokio::time::sleep(interval).await;
            }
        });
        Self { pending }
    }

    /// Asks for a NOTIFY to be sent soon.
    pub fn wake(&self) {
        self.pending.notify_one();
    }
}
