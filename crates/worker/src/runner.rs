//! The worker's loop: claim due deliveries up to the in-flight limit, deliver them concurrently,
//! record outcomes in batches, and wake on NOTIFY or the poll timer. [`Worker::run_once`] is the
//! single step tests drive; [`Worker::run`] is the production loop with graceful drain.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use dispatch_domain::DeliveryStatus;
use dispatch_domain::retry::{FailureCode, RetryPolicy};
use dispatch_store::notify::Listener;
use dispatch_store::pool::{self, build_pool_with};
use dispatch_store::queries::deliveries::{self, ClaimedDelivery, Outcome};
use dispatch_store::{Pool, StoreError};
use tokio::sync::Notify;
use tokio::task::JoinSet;

use crate::client::WebhookClient;
use crate::config::Settings;
use crate::deliver;
use crate::resilience::Destinations;
use crate::resilience::concurrency::{SLOW_ANSWER, Signal};

/// How long a delivery waits when its destination already has its share of requests in flight
/// (a fallback: the claim takes only what fits), and how long a slow or silent destination's
/// blocked deliveries are parked.
const BUSY_DESTINATION_WAIT: Duration = Duration::from_secs(1);
/// How long the delivery loop may go without progress (beyond one poll interval) before the
/// worker reports itself not alive.
pub const LIVENESS_STALL: Duration = Duration::from_secs(60);
/// The longest a stalled destination's deliveries are put off at once.
const MAX_PARK: Duration = Duration::from_secs(30);
/// Most deliveries one claim puts off for stalled destinations.
const PARK_AT_MOST: i64 = 10_000;
/// How often a running worker reports in (and learns the fleet's size).
const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);
/// A worker not heard from for this long no longer counts towards the fleet.
const ALIVE_FOR_SECS: i64 = 20;
/// The longest one step of the loop (a claim, a record, a hand-back) waits for PostgreSQL; the
/// lease, when shorter: a claim answered after its leases expired is worthless.
const DATABASE_DEADLINE: Duration = Duration::from_secs(30);

/// What a run of the loop did, reported when it stops.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RunSummary {
    /// Attempts whose outcome was recorded.
    pub recorded: usize,
    /// Deliveries put back to wait (busy, throttled or open destination) without an attempt.
    pub deferred: usize,
    /// Claimed deliveries handed back unfinished at shutdown.
    pub released: usize,
}

#[derive(Clone)]
pub struct Worker {
    inner: Arc<Inner>,
}

struct Inner {
    id: String,
    pool: Pool,
    database_url: String,
    destinations: Destinations,
    policy: RetryPolicy,
    /// Opens the subscriptions' sealed secrets.
    keyring: dispatch_domain::sealing::Keyring,
    max_in_flight: usize,
    poll_interval: Duration,
    lease: Duration,
    /// How long a step of the loop waits for the database before it counts as unavailable.
    db_deadline: Duration,
    shutdown_grace: Duration,
    queue_vacuum_every: Option<Duration>,
    /// The global auto-disable threshold (`None`: never).
    auto_disable_after: Option<Duration>,
    /// When the delivery loop last went round (none before it started).
    progress: std::sync::Mutex<Option<std::time::Instant>>,
    /// How long the due deliveries of a stalled destination are put off.
    park_for: Duration,
    listening: AtomicBool,
}

impl Worker {
    pub fn new(settings: &Settings) -> Result<Self, rustls::Error> {
        dispatch_telemetry::metrics::install();
        let client = WebhookClient::new(
            settings.destinations.clone(),
            settings.request_timeout,
            settings.connect_timeout,
            settings.max_response_bytes,
            settings.stored_response_bytes,
        )?;
        Ok(Self {
            inner: Arc::new(Inner {
                id: settings.worker_id.clone(),
                pool: build_pool_with(&settings.database, settings.synchronous_commit),
                database_url: settings.database.url.clone(),
                destinations: Destinations::new(client, settings.resilience.clone()),
                policy: settings.retry.clone(),
                keyring: settings.secret_keys.clone(),
                max_in_flight: settings.max_in_flight,
                poll_interval: settings.poll_interval,
                lease: settings.lease,
                db_deadline: settings.lease.min(DATABASE_DEADLINE),
                shutdown_grace: settings.shutdown_grace,
                queue_vacuum_every: settings.queue_vacuum_every,
                auto_disable_after: settings.auto_disable_after,
                progress: std::sync::Mutex::new(None),
                park_for: settings
                    .request_timeout
                    .clamp(BUSY_DESTINATION_WAIT, MAX_PARK),
                listening: AtomicBool::new(false),
            }),
        })
    }

    pub fn id(&self) -> &str {
        &self.inner.id
    }

    pub fn pool(&self) -> &Pool {
        &self.inner.pool
    }

    /// The global auto-disable threshold (`None`: never; a subscription's own one wins).
    pub fn auto_disable_after(&self) -> Option<Duration> {
        self.inner.auto_disable_after
    }

    /// The destinations this worker is talking to (their stacks, limits and circuits).
    pub fn destinations(&self) -> &Destinations {
        &self.inner.destinations
    }

    /// Reports this worker alive and learns how many workers share the destinations' rate
    /// limits. [`Worker::run`] does this every few seconds.
    pub async fn report_in(&self) -> Result<i64, StoreError> {
        let mut conn = pool::connection(&self.inner.pool).await?;
        let live =
            dispatch_store::queries::workers::heartbeat(&mut conn, &self.inner.id, ALIVE_FOR_SECS)
                .await?;
        self.inner.destinations.set_fleet_size(live);
        Ok(live)
    }

    async fn leave(&self) -> Result<(), StoreError> {
        let mut conn = pool::connection(&self.inner.pool).await?;
        dispatch_store::queries::workers::leave(&mut conn, &self.inner.id).await
    }

    /// Whether the LISTEN connection is up (part of readiness).
    pub fn is_listening(&self) -> bool {
        self.inner.listening.load(Ordering::Relaxed)
    }

    #[tracing::instrument(
        name = "claim",
        skip_all,
        fields(worker.id = %self.inner.id, limit, claimed = tracing::field::Empty)
    )]
    async fn claim(&self, limit: usize) -> Result<Vec<ClaimedDelivery>, StoreError> {
        self.bounded(self.claim_unbounded(limit)).await
    }

    /// `step`, given up (as [`StoreError::Unavailable`]) once it waited [`Inner::db_deadline`]
    /// for the database: a network to PostgreSQL that went silent without a reset would
    /// otherwise hold the loop until TCP gives up (hours, unless `DATABASE_URL` sets
    /// `keepalives_idle` or `tcp_user_timeout`).
    async fn bounded<T>(
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

    async fn claim_unbounded(&self, limit: usize) -> Result<Vec<ClaimedDelivery>, StoreError> {
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
    async fn record(&self, outcomes: &[Outcome]) -> Result<(usize, usize), StoreError> {
        self.bounded(self.record_unbounded(outcomes)).await
    }

    async fn record_unbounded(&self, outcomes: &[Outcome]) -> Result<(usize, usize), StoreError> {
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

    async fn release(&self, ids: &[i64]) -> Result<usize, StoreError> {
        self.bounded(async {
            let mut conn = pool::connection(&self.inner.pool).await?;
            deliveries::release(&mut conn, &self.inner.id, ids).await
        })
        .await
    }

    /// The earlier of "one poll interval from now" and "when the next delivery falls due", as
    /// the database sees it (any worker's retries and deferrals).
    async fn next_look(&self) -> tokio::time::Instant {
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

    /// One step, the one the production loop is made of: claim what can start now (at most
    /// the in-flight limit, no more of a destination than its room), attempt them all
    /// concurrently, record every outcome in one statement. Returns how many deliveries were
    /// claimed. [`Worker::run`] performs the same three parts, overlapping the attempts of one
    /// claim with the next claims.
    pub async fn run_once(&self) -> Result<usize, StoreError> {
        let claimed = self.claim(self.inner.max_in_flight).await?;
        let count = claimed.len();
        let mut attempts = Vec::new();
        let mut outcomes = Vec::new();
        for delivery in claimed {
            match self.start(delivery) {
                Ok(attempt) => attempts.push(attempt),
                Err(deferral) => outcomes.push(deferral),
            }
        }
        outcomes.extend(futures_util::future::join_all(attempts).await);
        self.record(&outcomes).await?;
        Ok(count)
    }

    /// Starts the attempt at a claimed delivery: takes one of its destination's slots and
    /// returns the attempt, which frees the slot and adapts the destination's limit when it
    /// ends. Returns the deferral instead when the destination has no room (the claim takes
    /// only what fits, so this happens only if a limit shrank in between).
    fn start(
        &self,
        delivery: ClaimedDelivery,
    ) -> Result<impl Future<Output = Outcome> + Send + 'static, Outcome> {
        let destination = self.inner.destinations.get(&delivery);
        if !destination.try_start() {
            return Err(busy(&delivery));
        }
        let worker = self.clone();
        Ok(async move {
            let outcome = deliver::attempt(
                &destination,
                &worker.inner.policy,
                &worker.inner.keyring,
                &delivery,
            )
            .await;
            destination.finish(signal_of(&outcome));
            outcome
        })
    }

    /// Writes buffered outcomes; on a database error they stay buffered for the next try.
    async fn flush(&self, buffer: &mut Vec<Outcome>, summary: &mut RunSummary) {
        if buffer.is_empty() {
            return;
        }
        match self.record(buffer).await {
            Ok((attempts, deferrals)) => {
                summary.recorded += attempts;
                summary.deferred += deferrals;
                buffer.clear();
            }
            Err(e) => {
                tracing::warn!(error = %e, pending = buffer.len(), "could not record outcomes; will retry")
            }
        }
    }

    /// Runs until `shutdown` resolves, then stops claiming, lets in-flight deliveries finish for
    /// the grace period, hands back the leases of the rest, and returns.
    pub async fn run(&self, shutdown: impl Future<Output = ()>) -> RunSummary {
        let wake = Arc::new(Notify::new());
        let listener = tokio::spawn(listen(self.clone(), wake.clone()));
        let heartbeat = tokio::spawn({
            let worker = self.clone();
            async move {
                let mut every = tokio::time::interval(HEARTBEAT_EVERY);
                loop {
                    every.tick().await;
                    if let Err(e) = worker.report_in().await {
                        tracing::warn!(error = %e, "could not report in");
                    }
                    if let Err(e) = worker.observe().await {
                        tracing::debug!(error = %e, "could not refresh the backlog gauges");
                    }
                }
            }
        });
        let maintenance = tokio::spawn({
            let worker = self.clone();
            async move {
                let mut warned = false;
                let every = worker.inner.queue_vacuum_every.unwrap_or(HEARTBEAT_EVERY);
                let mut every = tokio::time::interval(every);
                every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    every.tick().await;
                    match worker.maintain_queue().await {
                        Ok(_) => {}
                        Err(e) if !warned => {
                            warned = true;
                            tracing::warn!(error = %e, "could not look after the hot queue");
                        }
                        Err(_) => {}
                    }
                }
            }
        });
        let sweeper = tokio::spawn(crate::health_sweep::sweep_forever(self.clone()));
        let mut in_flight: JoinSet<Outcome> = JoinSet::new();
        let mut ids: HashMap<tokio::task::Id, i64> = HashMap::new();
        let mut buffer: Vec<Outcome> = Vec::new();
        let mut summary = RunSummary::default();
        // When to look again without a wake-up: the poll interval, or sooner when a retry falls
        // due sooner.
        let mut next_look = tokio::time::Instant::now() + self.inner.poll_interval;
        let mut shutdown = std::pin::pin!(shutdown);
        // `backlog`: more work is probably due than we could take; claim again as slots free up.
        let (mut claim_now, mut backlog) = (true, true);
        let mut waiting_for_room = false;
        // Whether the next claim that leaves work unclaimed should ask when more falls due.
        let mut refresh_look = true;

        loop {
            self.note_progress();
            metrics::gauge!(dispatch_telemetry::metrics::DELIVERIES_IN_FLIGHT)
                .set(in_flight.len() as f64);
            // Every branch of the select below decides `claim_now` afresh.
            if claim_now {
                let free = self.inner.max_in_flight.saturating_sub(in_flight.len());
                if free > 0 {
                    match self.claim(free).await {
                        Ok(batch) => {
                            backlog = batch.len() == free;
                            for delivery in batch {
                                let delivery_id = delivery.id;
                                match self.start(delivery) {
                                    Ok(attempt) => {
                                        ids.insert(in_flight.spawn(attempt).id(), delivery_id);
                                    }
                                    Err(deferral) => buffer.push(deferral),
                                }
                            }
                            // A short claim while a destination has no room (counting what was
                            // just started): its deliveries may be waiting, due now, for one of
                            // its requests to finish; claim again when one does, rather than
                            // asking when work is due (now, for them) and spinning.
                            waiting_for_room =
                                !backlog && self.inner.destinations.any_without_room();
                            // Asking the database when work falls due costs a transaction:
                            // only after the poll timer fired. Retries and deferrals of this
                            // worker's own outcomes are known without asking (below).
                            if !backlog && !waiting_for_room && refresh_look {
                                next_look = self.next_look().await;
                            }
                            refresh_look = false;
                            if let Some(due) = earliest_retry(&buffer) {
                                next_look = next_look.min(due);
                            }
                            self.flush(&mut buffer, &mut summary).await;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "claiming deliveries failed; will retry")
                        }
                    }
                }
            }
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                Some(joined) = in_flight.join_next_with_id(), if !in_flight.is_empty() => {
                    collect(joined, &mut ids, &mut buffer);
                    while let Some(joined) = in_flight.try_join_next_with_id() {
                        collect(joined, &mut ids, &mut buffer);
                    }
                    // A failed or deferred attempt just scheduled a retry that may fall due
                    // before next_look.
                    if let Some(due) = earliest_retry(&buffer) {
                        next_look = next_look.min(due);
                    }
                    self.flush(&mut buffer, &mut summary).await;
                    claim_now = backlog || waiting_for_room;
                }
                () = wake.notified() => { claim_now = true; backlog = true; }
                () = tokio::time::sleep_until(next_look) => {
                    claim_now = true;
                    refresh_look = true;
                    next_look = tokio::time::Instant::now() + self.inner.poll_interval;
                    self.inner.destinations.evict_idle();
                    self.flush(&mut buffer, &mut summary).await;
                }
            }
        }

        tracing::info!(
            in_flight = in_flight.len(),
            "stopping: draining in-flight deliveries"
        );
        let deadline = tokio::time::sleep(self.inner.shutdown_grace);
        let mut deadline = std::pin::pin!(deadline);
        while !in_flight.is_empty() {
            tokio::select! {
                Some(joined) = in_flight.join_next_with_id() => {
                    collect(joined, &mut ids, &mut buffer);
                    self.flush(&mut buffer, &mut summary).await;
                }
                () = &mut deadline => break,
            }
        }
        in_flight.abort_all();
        while let Some(joined) = in_flight.join_next_with_id().await {
            collect(joined, &mut ids, &mut buffer);
        }
        for _ in 0..3 {
            self.flush(&mut buffer, &mut summary).await;
            if buffer.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // Whatever is left was claimed but not finished: hand it back at once rather than make
        // it wait for its lease to expire.
        let unfinished: Vec<i64> = ids.into_values().collect();
        match self.release(&unfinished).await {
            Ok(n) => summary.released = n,
            Err(e) => tracing::warn!(error = %e, "could not release leases; they will expire"),
        }
        listener.abort();
        heartbeat.abort();
        maintenance.abort();
        sweeper.abort();
        self.inner.listening.store(false, Ordering::Relaxed);
        if let Err(e) = self.leave().await {
            tracing::warn!(error = %e, "could not leave the worker registry; the entry will age out");
        }
        tracing::info!(
            recorded = summary.recorded,
            released = summary.released,
            "worker stopped"
        );
        summary
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// When the earliest retry or deferral among `outcomes` falls due, as a timer instant.
fn earliest_retry(outcomes: &[Outcome]) -> Option<tokio::time::Instant> {
    outcomes
        .iter()
        .filter(|o| o.status != DeliveryStatus::Delivered)
        .filter_map(|o| o.next_attempt_at)
        .min()
        .map(instant_of)
}

/// The timer instant of a wall-clock time (now, when it is already past).
fn instant_of(at: chrono::DateTime<chrono::Utc>) -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    (at - chrono::Utc::now())
        .to_std()
        .map_or(now, |wait| now + wait)
}

/// What an attempt's outcome tells its destination's concurrency limit.
fn signal_of(outcome: &Outcome) -> Signal {
    match (outcome.attempted, outcome.error_code.as_deref()) {
        (false, _) => Signal::NotSent,
        (true, Some(code)) if code == FailureCode::Timeout.as_str() => Signal::TimedOut,
        // A connection that hung until its own timeout is no answer either.
        (true, Some(code))
            if code == FailureCode::Connection.as_str()
                && u64::try_from(outcome.latency_ms).unwrap_or(0)
                    >= u64::try_from(SLOW_ANSWER.as_millis()).unwrap_or(u64::MAX) =>
        {
            Signal::TimedOut
        }
        (true, _) => Signal::Answered(Duration::from_millis(
            u64::try_from(outcome.latency_ms).unwrap_or(0),
        )),
    }
}

/// The deferral of a delivery whose destination already has its share of requests in flight.
fn busy(delivery: &ClaimedDelivery) -> Outcome {
    deliver::count_deferral("busy", &delivery.subscription_id);
    deliver::deferral(
        delivery,
        deliver::after(chrono::Utc::now(), BUSY_DESTINATION_WAIT),
    )
}

/// Moves a finished attempt's outcome into the buffer; a cancelled or panicked one stays in
/// `ids` so its lease is handed back.
fn collect(
    joined: Result<(tokio::task::Id, Outcome), tokio::task::JoinError>,
    ids: &mut HashMap<tokio::task::Id, i64>,
    buffer: &mut Vec<Outcome>,
) {
    match joined {
        Ok((id, outcome)) => {
            ids.remove(&id);
            buffer.push(outcome);
        }
        Err(e) if e.is_panic() => tracing::error!(error = %e, "a delivery task panicked"),
        Err(_) => {}
    }
}

/// Keeps a LISTEN connection open, turning notifications into wake-ups; reconnects with backoff
/// when it drops and wakes once after each (re)connect, since NOTIFYs sent meanwhile are lost.
async fn listen(worker: Worker, wake: Arc<Notify>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        match Listener::connect(&worker.inner.database_url).await {
            Ok(mut listener) => {
                worker.inner.listening.store(true, Ordering::Relaxed);
                backoff = Duration::from_millis(100);
                wake.notify_one();
                loop {
                    match listener.next().await {
                        Ok(()) => wake.notify_one(),
                        Err(e) => {
                            tracing::warn!(error = %e, "the LISTEN connection dropped; reconnecting");
                            break;
                        }
                    }
                }
                worker.inner.listening.store(false, Ordering::Relaxed);
            }
            Err(e) => tracing::warn!(error = %e, "cannot LISTEN for wake-ups; retrying"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}
