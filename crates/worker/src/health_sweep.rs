//! Auto-disable in the worker: every replica sweeps the failing subscriptions now and then (the
//! state and the decision live in PostgreSQL, so they agree), warning at 50 % and 90 % of the
//! threshold and disabling at 100 %; see `dispatch_store::queries::endpoint_health`.

use std::time::Duration;

use dispatch_store::queries::endpoint_health::{self, SweepReport};
use dispatch_store::{StoreError, pool};

use crate::runner::Worker;

/// How often the sweep runs, at most.
const SWEEP_EVERY: Duration = Duration::from_secs(5);
/// How often the sweep runs, at least (for tiny thresholds, as in tests).
const SWEEP_AT_MOST_EVERY: Duration = Duration::from_millis(100);

/// How often to sweep: every 5 s, or a tenth of a global threshold under 50 s, so the 50 % and
/// 90 % warnings come before the disabling.
pub fn sweep_every(auto_disable_after: Option<Duration>) -> Duration {
    auto_disable_after
        .map_or(SWEEP_EVERY, |after| (after / 10).min(SWEEP_EVERY))
        .max(SWEEP_AT_MOST_EVERY)
}

impl Worker {
    /// One sweep: warns about and disables the subscriptions whose failing spell calls for it
    /// (a subscription's own threshold wins over the worker's `auto_disable_after_secs`).
    pub async fn sweep_health(&self) -> Result<SweepReport, StoreError> {
        let default_secs = self
            .auto_disable_after()
            .map_or(0, |d| i32::try_from(d.as_secs()).unwrap_or(i32::MAX));
        let mut conn = pool::connection(self.pool()).await?;
        let report = endpoint_health::sweep(&mut conn, default_secs).await?;
        for id in &report.warned {
            tracing::warn!(subscription.id = %id, "every attempt of this subscription has failed for a while: it will be disabled unless one succeeds");
        }
        for id in &report.disabled {
            metrics::counter!(dispatch_telemetry::metrics::SUBSCRIPTIONS_AUTO_DISABLED)
                .increment(1);
            tracing::warn!(subscription.id = %id, "subscription auto-disabled: every attempt failed for its threshold; its deliveries are held until it is enabled again");
        }
        Ok(report)
    }
}

/// Sweeps until aborted; a failing sweep is logged once per run of failures.
pub async fn sweep_forever(worker: Worker) {
    let mut every = tokio::time::interval(sweep_every(worker.auto_disable_after()));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut warned = false;
    loop {
        every.tick().await;
        match worker.sweep_health().await {
            Ok(_) => warned = false,
            Err(e) if !warned => {
                warned = true;
                tracing::warn!(error = %e, "could not sweep the failing subscriptions");
            }
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sweep_runs_every_five_seconds_or_ten_times_per_short_threshold() {
        assert_eq!(sweep_every(None), SWEEP_EVERY);
        assert_eq!(sweep_every(Some(Duration::from_secs(432_000))), SWEEP_EVERY);
        assert_eq!(
            sweep_every(Some(Duration::from_secs(2))),
            Duration::from_millis(200)
        );
        assert_eq!(
            sweep_every(Some(Duration::from_millis(10))),
            SWEEP_AT_MOST_EVERY
        );
    }
}
