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

mod database;
mod steps;

use steps::{busy, collect, earliest_retry, instant_of, listen, lock, signal_of};

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
                database_url: settings.database.url.expose().to_owned(),
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
