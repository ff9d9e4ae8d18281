//! The harness: worker settings over a test database, subscriptions and events stored through
//! the store, reads of deliveries and attempts, and a worker loop run in the background.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Integer, Text};
use diesel_async::RunQueryDsl;
use dispatch_domain::{
    DestinationUrl, EventId, EventType, OrderingKey, Pattern, Source, SubscriptionId,
};
use dispatch_store::models::{
    AttemptRow, DeliveryRow, EventRow, NewEvent, NewSubscription, RateLimit, SubscriptionRow,
};
use dispatch_store::queries::events::IngestOutcome;
use dispatch_store::queries::{events, subscriptions};
use dispatch_store::schema::{attempts, deliveries};
use dispatch_store::{Pool, PooledConnection};
use dispatch_test_support::TestDb;
use dispatch_test_support::receiver::Receiver;
use dispatch_test_support::secrets::{TEST_SECRET_KEYS, test_keyring};
use dispatch_worker::{RunSummary, Settings, Worker};
use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A generous bound on any wait, only there to stop a broken test from hanging.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// A database of one's own, a pool on it and a receiver.
pub struct Harness {
    pub db: TestDb,
    pub pool: Pool,
    pub receiver: Receiver,
}

impl Harness {
    pub async fn new() -> Self {
        let db = TestDb::new().await;
        let pool = db.pool();
        let receiver = Receiver::start().await;
        Self { db, pool, receiver }
    }

    pub async fn conn(&self) -> PooledConnection<'_> {
        dispatch_store::pool::connection(&self.pool)
            .await
            .expect("a connection to the test database")
    }

    /// Worker settings over this database, loaded through the real configuration code with
    /// `overrides` on top of: worker id `worker-a`, text logs, a 10 s request timeout.
    pub fn settings(&self, overrides: &[(&str, &str)]) -> Settings {
        let mut env: HashMap<String, String> = [
            ("DISPATCH_DATABASE_URL", self.db.url()),
            ("ADDR", "127.0.0.1:0"),
            ("DISPATCH_WORKER_ID", "worker-a"),
            ("DISPATCH_LOG_FORMAT", "text"),
            ("DISPATCH_DB_MAX_CONNECTIONS", "4"),
            ("DISPATCH_REQUEST_TIMEOUT_MS", "10000"),
            // The receivers run on 127.0.0.1, which the SSRF guard refuses by default.
            ("DISPATCH_ALLOW_DESTINATIONS", "127.0.0.0/8"),
            ("DISPATCH_SECRET_KEYS", TEST_SECRET_KEYS),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        for (k, v) in overrides {
            env.insert((*k).to_owned(), (*v).to_owned());
        }
        Settings::load_from(None, &env).expect("the test settings are valid")
    }

    pub fn worker(&self, overrides: &[(&str, &str)]) -> Worker {
        Worker::new(&self.settings(overrides)).expect("the worker's HTTP client builds")
    }

    /// A subscription to every event type, sending to the receiver's `path`.
    pub async fn subscribe(&self, id: &str, path: &str, secret: Option<&str>) {
        let url = self.receiver.url(path);
        self.subscribe_url(id, &url, secret).await;
    }

    /// A subscription to every event type, sending to `url`.
    pub async fn subscribe_url(&self, id: &str, url: &str, secret: Option<&str>) {
        self.subscribe_url_limited(id, url, secret, RateLimit::default())
            .await;
    }

    /// A subscription to every event type, sending to the receiver's `path` under `rate_limit`.
    pub async fn subscribe_limited(&self, id: &str, path: &str, rate_limit: RateLimit) {
        let url = self.receiver.url(path);
        self.subscribe_url_limited(id, &url, None, rate_limit).await;
    }

    /// A subscription to every event type, sending to the receiver's `path`, whose rate limit
    /// never holds anything back (a deferred delivery would lose its place in the queue).
    pub async fn subscribe_unlimited(&self, id: &str, path: &str) {
        self.subscribe_limited(
            id,
            path,
            RateLimit {
                per_second: 100_000.0,
                burst: 100_000,
            },
        )
        .await;
    }

    async fn subscribe_url_limited(
        &self,
        id: &str,
        url: &str,
        secret: Option<&str>,
        rate_limit: RateLimit,
    ) {
        let new = NewSubscription {
            tenant: dispatch_domain::TenantId::default_tenant(),
            id: SubscriptionId::parse(id).expect("a valid subscription id"),
            url: DestinationUrl::parse(url).expect("a valid destination URL"),
            event_types: vec![Pattern::parse("*").expect("a valid pattern")],
            secret: secret.map(str::to_owned),
            rate_limit,
            settings: Default::default(),
            enabled: true,
        };
        subscriptions::insert(&mut *self.conn().await, &new, &test_keyring())
            .await
            .expect("the subscription is stored")
            .unwrap_or_else(|| panic!("subscription {id} should be new"));
    }

    /// Stores a new event (with its deliveries) and returns the stored row.
    pub async fn ingest(&self, id: &str, event_type: &str, data: Value) -> EventRow {
        self.ingest_keyed(id, event_type, None, data).await
    }

    /// [`Harness::ingest`] with an ordering key.
    pub async fn ingest_keyed(
        &self,
        id: &str,
        event_type: &str,
        key: Option<&str>,
        data: Value,
    ) -> EventRow {
        let new = NewEvent {
            tenant: dispatch_domain::TenantId::default_tenant(),
            id: EventId::parse(id).expect("a valid event id"),
            event_type: EventType::parse(event_type).expect("a valid event type"),
            source: Source::parse("shop-service").expect("a valid source"),
            data,
            traceparent: None,
            ordering_key: key.map(|k| OrderingKey::parse(k).expect("a valid ordering key")),
        };
        match events::ingest(&mut *self.conn().await, &new)
            .await
            .expect("the event is stored")
        {
            IngestOutcome::Created { event, .. } => event,
            other => panic!("event {id} should be new, got {other:?}"),
        }
    }

    /// Sends a wake-up as the API does after ingesting.
    pub async fn notify(&self) {
        dispatch_store::notify::notify(&mut *self.conn().await)
            .await
            .expect("NOTIFY is sent");
    }

    /// An active subscription as stored (with its rate limit and published circuit).
    pub async fn subscription(&self, id: &str) -> SubscriptionRow {
        subscriptions::find_active(
            &mut *self.conn().await,
            &dispatch_domain::TenantId::default_tenant(),
            id,
        )
        .await
        .expect("subscriptions are readable")
        .unwrap_or_else(|| panic!("no active subscription {id}"))
    }

    /// Runs a statement behind the code's back; returns the rows it changed.
    pub async fn execute(&self, sql: &str) -> usize {
        diesel::sql_query(sql)
            .execute(&mut self.conn().await)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    pub async fn delivery(&self, event_id: &str, subscription_id: &str) -> DeliveryRow {
        deliveries::table
            .filter(deliveries::event_id.eq(event_id))
            .filter(deliveries::subscription_id.eq(subscription_id))
            .select(DeliveryRow::as_select())
            .first(&mut self.conn().await)
            .await
            .unwrap_or_else(|e| panic!("no delivery of {event_id} to {subscription_id}: {e}"))
    }

    pub async fn all_deliveries(&self) -> Vec<DeliveryRow> {
        deliveries::table
            .order(deliveries::id)
            .select(DeliveryRow::as_select())
            .load(&mut self.conn().await)
            .await
            .expect("deliveries are readable")
    }

    /// A delivery's attempts, oldest first.
    pub async fn attempts_of(&self, delivery_id: i64) -> Vec<AttemptRow> {
        attempts::table
            .filter(attempts::delivery_id.eq(delivery_id))
            .order(attempts::id)
            .select(AttemptRow::as_select())
            .load(&mut self.conn().await)
            .await
            .expect("attempts are readable")
    }

    pub async fn attempt_count(&self) -> i64 {
        attempts::table
            .count()
            .get_result(&mut self.conn().await)
            .await
            .expect("attempts are countable")
    }

    /// How many deliveries are in each status (absent statuses are absent).
    pub async fn status_counts(&self) -> BTreeMap<String, i64> {
        #[derive(QueryableByName)]
        struct Count {
            #[diesel(sql_type = Text)]
            status: String,
            #[diesel(sql_type = BigInt)]
            n: i64,
        }
        let rows: Vec<Count> =
            diesel::sql_query("SELECT status, count(*) AS n FROM deliveries GROUP BY status")
                .load(&mut self.conn().await)
                .await
                .expect("deliveries are countable");
        rows.into_iter().map(|r| (r.status, r.n)).collect()
    }

    pub async fn count_in(&self, status: &str) -> i64 {
        self.status_counts().await.get(status).copied().unwrap_or(0)
    }

    /// Makes every waiting delivery due now (instead of waiting out its backoff).
    pub async fn make_due(&self) {
        diesel::sql_query(
            "UPDATE deliveries SET next_attempt_at = now() WHERE status IN ('pending', 'retrying')",
        )
        .execute(&mut self.conn().await)
        .await
        .expect("deliveries are made due");
    }

    /// The pids of the backends that last ran a LISTEN on this database.
    pub async fn listen_backends(&self) -> Vec<i32> {
        #[derive(QueryableByName)]
        struct Backend {
            #[diesel(sql_type = Integer)]
            pid: i32,
        }
        let rows: Vec<Backend> = diesel::sql_query(
            "SELECT pid FROM pg_stat_activity
              WHERE datname = current_database() AND query ILIKE 'LISTEN%'",
        )
        .load(&mut self.conn().await)
        .await
        .expect("pg_stat_activity is readable");
        rows.into_iter().map(|r| r.pid).collect()
    }

    /// Terminates every LISTEN backend of this database; returns how many were terminated.
    pub async fn terminate_listen_backends(&self) -> usize {
        #[derive(QueryableByName)]
        struct Terminated {
            #[diesel(sql_type = diesel::sql_types::Bool)]
            terminated: bool,
        }
        let rows: Vec<Terminated> = diesel::sql_query(
            "SELECT pg_terminate_backend(pid) AS terminated FROM pg_stat_activity
              WHERE datname = current_database() AND query ILIKE 'LISTEN%'",
        )
        .load(&mut self.conn().await)
        .await
        .expect("backends can be terminated");
        rows.iter().filter(|r| r.terminated).count()
    }
}

/// Polls `check` every 20 ms until it holds.
///
/// # Panics
/// When it still does not hold after `timeout` (a bound against hanging, not an assertion on
/// how fast anything is).
pub async fn eventually<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not so after {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// [`Worker::run`] in the background, stopped by [`Running::stop`].
pub struct Running {
    stop: watch::Sender<bool>,
    handle: JoinHandle<RunSummary>,
}

impl Running {
    pub fn start(worker: &Worker) -> Self {
        let (stop, mut stopped) = watch::channel(false);
        let worker = worker.clone();
        let handle = tokio::spawn(async move {
            worker
                .run(async move {
                    // A dropped sender counts as "stop" too.
                    let _ = stopped.wait_for(|stop| *stop).await;
                })
                .await
        });
        Self { stop, handle }
    }

    /// Triggers the shutdown and waits for `run` to return.
    pub async fn stop(self) -> RunSummary {
        let _ = self.stop.send(true);
        tokio::time::timeout(Duration::from_secs(60), self.handle)
            .await
            .expect("run returns after the shutdown signal")
            .expect("run does not panic")
    }
}

/// Checks that a retry was scheduled `[lo, hi]` after the attempt was made. The worker takes
/// "now" inside `run_once`, between `before` and `after` (read by the test around it); the
/// attempt row's `created_at` is the database's clock when the outcome was written, at most
/// `after - before` later than that. Timestamps are stored to the microsecond, hence 2 ms of
/// rounding slack.
pub fn assert_scheduled_within(
    next_attempt_at: DateTime<Utc>,
    attempt_created_at: DateTime<Utc>,
    before: DateTime<Utc>,
    after: DateTime<Utc>,
    lo: Duration,
    hi: Duration,
) {
    let slack = chrono::Duration::milliseconds(2);
    let lo = chrono::Duration::from_std(lo).expect("small duration");
    let hi = chrono::Duration::from_std(hi).expect("small duration");
    let step = after - before;
    // Bracketed by the test's own clock readings.
    assert!(
        next_attempt_at - before >= lo - slack,
        "next attempt at {next_attempt_at} is less than {lo} after the step started ({before})"
    );
    assert!(
        next_attempt_at - after <= hi + slack,
        "next attempt at {next_attempt_at} is more than {hi} after the step ended ({after})"
    );
    // Against the attempt row, allowing for the time between the attempt and its recording.
    let gap = next_attempt_at - attempt_created_at;
    assert!(
        gap <= hi + slack && gap >= lo - step - slack,
        "next attempt {gap} after the recorded attempt, expected {lo}..={hi} (step took {step})"
    );
}
