//! The worker's calls to PostgreSQL (claims, records, hand-backs, heartbeats, queue upkeep), each
//! bounded by the database deadline, and the loop's liveness clock.

use super::*;

impl Worker {
    /// The global auto-disable threshold (`None`: never; a subscription's own one wins), for
    /// the health sweep (`crate::health_sweep`).
    pub fn auto_disable_after(&self) -> Option<Duration> {
        self.inner.auto_disable_after
    }

    #[tracing::instrument(
        name = "claim",
        skip_all,
        fields(worker.id = %self.inner.id, limit, claimed = tracing::field::Empty)
    )]
    pub(super) async fn claim(&self, limit: usize) -> Result<Vec<ClaimedDelivery>, StoreError> {
        self.bounded(self.claim_unbounded(limit)).await
    }

    /// `step`, given up (as [`StoreError::Unavailable`]) once it waited [`Inner::db_deadline`]
    /// for the database: a network to PostgreSQL that went silent without a reset would
    /// otherwise hold the loop until TCP gives up (hours, unless `DATABASE_URL` sets
    /// `keepalives_idle` or `tcp_user_timeout`).
    pub(super) async fn bounded<T>(
        &self,
        step: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        tokio::time::timeout(self.inner.db_deadline, step)
            .await
            .unwrap_or_else(|_| {
                Err(StoreError::Unavailable(format!(
                    "no answer from the database within {} ms",
                    self.inner.db_deadline.as_millis()
                )))
            })
    }

    pub(super) async fn claim_unbounded(
        &self,
        limit: usize,
    ) -> Result<Vec<ClaimedDelivery>, StoreError> {
        use dispatch_telemetry::metrics as names;
        let mut conn = pool::connection(&self.inner.pool).await?;
        let started = std::time::Instant::now();
        let (allowances, stalled) = self.inner.destinations.allowances(self.inner.max_in_flight);
        if !stalled.is_empty() {
            // Their deliveries cannot go before a slot frees, a timeout away: out of the way of
            // the claim's candidates until then.
            let subs: Vec<&str> = stalled.iter().map(String::as_str).collect();
            let parked =
                deliveries::park(&mut conn, &subs, self.inner.park_for, PARK_AT_MOST).await?;
            if parked > 0 {
                metrics::counter!(dispatch_telemetry::metrics::DELIVERIES_DEFERRED,
                    dispatch_telemetry::metrics::REASON => "stalled")
                .increment(parked as u64);
            }
        }
        let claimed = deliveries::claim_within(
            &mut conn,
            &self.inner.id,
            i64::try_from(limit).unwrap_or(i64::MAX),
            self.inner.lease,
            &allowances,
        )
        .await?;
        metrics::histogram!(names::CLAIM_DURATION).record(started.elapsed().as_secs_f64());
        metrics::histogram!(names::CLAIM_BATCH_SIZE).record(claimed.len() as f64);
        tracing::Span::current().record("claimed", claimed.len());
        Ok(claimed)
    }

    /// Refreshes the gauges read from the database (backlog, oldest due age) and those in
    /// memory ([`Worker::observe_local`]).
    pub async fn observe(&self) -> Result<(), StoreError> {
        use dispatch_telemetry::metrics as names;
        self.observe_local();
        let mut conn = pool::connection(&self.inner.pool).await?;
        let backlog = deliveries::backlog(&mut conn).await?;
        metrics::gauge!(names::DELIVERIES_DUE).set(backlog.due as f64);
        metrics::gauge!(names::OLDEST_DUE_AGE).set(backlog.oldest_due_age_secs);
        Ok(())
    }

    /// Refreshes the gauges this process knows without asking the database (pool usage,
    /// listener): what a `/metrics` scrape does.
    pub fn observe_local(&self) {
        use dispatch_telemetry::metrics as names;
        let pool_state = self.inner.pool.state();
        metrics::gauge!(names::DB_POOL_CONNECTIONS, names::STATE => "idle")
            .set(f64::from(pool_state.idle_connections));
        metrics::gauge!(names::DB_POOL_CONNECTIONS, names::STATE => "active").set(f64::from(
            pool_state
                .connections
                .saturating_sub(pool_state.idle_connections),
        ));
        metrics::gauge!(names::WORKER_LISTENING).set(if self.is_listening() { 1.0 } else { 0.0 });
    }

    /// Notes that the delivery loop went round once (what liveness reads).
    pub fn note_progress(&self) {
        *lock(&self.inner.progress) = Some(std::time::Instant::now());
    }

    /// How long the running loop has made no progress, once that is more than
    /// [`LIVENESS_STALL`] (`None`: alive, or the loop has not started).
    pub fn stalled_for(&self) -> Option<Duration> {
        self.stalled_at(std::time::Instant::now())
    }

    /// [`Worker::stalled_for`] as of `now`.
    pub fn stalled_at(&self, now: std::time::Instant) -> Option<Duration> {
        let last = (*lock(&self.inner.progress))?;
        let quiet = now.saturating_duration_since(last);
        (quiet > LIVENESS_STALL + self.inner.poll_interval).then_some(quiet)
    }

    /// Looks after the hot queue: publishes its live and dead rows and whether autovacuum
    /// covers it, and vacuums it when dead rows pile up (`queue_vacuum_secs`; one worker of
    /// the fleet at a time), so a claim keeps walking only what is due even where autovacuum is
    /// off or behind. Returns whether this call vacuumed.
    pub async fn maintain_queue(&self) -> Result<bool, StoreError> {
        use dispatch_store::queries::health;
        use dispatch_telemetry::metrics as names;
        let mut conn = pool::connection(&self.inner.pool).await?;
        let queue = health::queue_health(&mut conn).await?;
        metrics::gauge!(names::QUEUE_ROWS, names::STATE => "live").set(queue.live_rows as f64);
        metrics::gauge!(names::QUEUE_ROWS, names::STATE => "dead").set(queue.dead_rows as f64);
        metrics::gauge!(names::QUEUE_AUTOVACUUM).set(if queue.autovacuum { 1.0 } else { 0.0 });
        if self.inner.queue_vacuum_every.is_none() || !queue.worth_vacuum() {
            return Ok(false);
        }
        if !queue.can_vacuum {
            tracing::debug!(
                dead_rows = queue.dead_rows,
                "the hot queue needs a vacuum this role may not run (it does not own delivery_queue)"
            );
            return Ok(false);
        }
        let vacuumed = health::vacuum_queue(&mut conn).await?;
        if vacuumed {
            metrics::counter!(names::QUEUE_VACUUMS).increment(1);
            tracing::debug!(dead_rows = queue.dead_rows, "vacuumed the hot queue");
        }
        Ok(vacuumed)
    }

    /// Records outcomes and publishes circuit changes; returns (attempts, deferrals) written.
    pub(super) async fn record(&self, outcomes: &[Outcome]) -> Result<(usize, usize), StoreError> {
        self.bounded(self.record_unbounded(outcomes)).await
    }

    pub(super) async fn record_unbounded(
        &self,
        outcomes: &[Outcome],
    ) -> Result<(usize, usize), StoreError> {
        let mut conn = pool::connection(&self.inner.pool).await?;
        let ids = deliveries::record_outcomes(&mut conn, &self.inner.id, outcomes).await?;
        let attempted = outcomes
            .iter()
            .filter(|o| o.attempted && ids.contains(&o.delivery_id))
            .count();
        let circuits = self.inner.destinations.take_circuit_updates();
        if let Err(e) =
            dispatch_store::queries::subscriptions::publish_circuits(&mut conn, &circuits).await
        {
            tracing::warn!(error = %e, "could not publish circuit changes");
        }
        Ok((attempted, ids.len() - attempted))
    }

    pub(super) async fn release(&self, ids: &[i64]) -> Result<usize, StoreError> {
        self.bounded(async {
            let mut conn = pool::connection(&self.inner.pool).await?;
            deliveries::release(&mut conn, &self.inner.id, ids).await
        })
        .await
    }

    /// The earlier of "one poll interval from now" and "when the next delivery falls due", as
    /// the database sees it (any worker's retries and deferrals).
    pub(super) async fn next_look(&self) -> tokio::time::Instant {
        let poll = tokio::time::Instant::now() + self.inner.poll_interval;
        let due = self
            .bounded(async {
                let mut conn = pool::connection(&self.inner.pool).await?;
                deliveries::next_due_at(&mut conn).await
            })
            .await
            .ok()
            .flatten();
        due.map_or(poll, |at| poll.min(instant_of(at)))
    }
}
