//! The registry of destinations this worker talks to: one tower stack per subscription
//! (breaker → rate limiter → client), created on first use, rebuilt when its limits change and
//! dropped when idle, so a worker serving many subscriptions stays small. It also counts each
//! destination's in-flight requests and collects circuit changes to publish.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use dispatch_domain::breaker::{BreakerSettings, CircuitBreaker, CircuitState};
use dispatch_domain::bucket::TokenBucket;
use dispatch_store::queries::deliveries::{Allowance, Allowances, ClaimedDelivery};
use dispatch_store::queries::subscriptions::CircuitUpdate;
use http::Request;
use http_body_util::Full;
use hyper::body::Bytes;
use tower::util::BoxCloneSyncService;
use tower::{ServiceBuilder, ServiceExt};

use dispatch_telemetry::metrics as names;

use super::breaker::SharedBreaker;
use super::concurrency::{Concurrency, INITIAL_LIMIT, Signal};
use super::{BreakerLayer, RateLimitLayer, Throttled, now};
use crate::client::{Sent, WebhookClient};

type Stack = BoxCloneSyncService<Request<Full<Bytes>>, Sent, Throttled>;

/// How destinations are protected.
#[derive(Debug, Clone, PartialEq)]
pub struct ResilienceSettings {
    pub breaker: BreakerSettings,
    /// Most requests in flight to one destination from this worker (the ceiling of its
    /// adaptive limit, see [`super::concurrency`]); the claim takes no more than a destination
    /// can start, so the rest wait in the queue.
    pub max_in_flight_per_destination: usize,
    /// A destination unused this long is forgotten (its stack and counters dropped).
    pub idle_after: Duration,
}

impl Default for ResilienceSettings {
    fn default() -> Self {
        Self {
            breaker: BreakerSettings::default(),
            max_in_flight_per_destination: 64,
            idle_after: Duration::from_secs(600),
        }
    }
}

/// One destination's stack and bookkeeping.
pub struct Destination {
    stack: Stack,
    breaker: SharedBreaker,
    /// (rate per second, burst, fleet size) the stack's bucket was built for.
    built_for: (f64, i32, i64),
    /// Shared with the stacks this one replaces, so requests started on an older stack free
    /// their slot here when they finish.
    concurrency: Arc<Concurrency>,
    /// The claim showed a published circuit (open, or open until a time now past): publish
    /// this worker's view at the next chance so a stale `open` does not linger.
    saw_published_circuit: std::sync::atomic::AtomicBool,
    last_used: Mutex<Instant>,
    published: Mutex<CircuitState>,
    /// Breaker trips already counted in the metrics.
    counted_trips: Mutex<u64>,
}

/// How lately a destination's last attempt must have ended for its grown limit to count in a
/// claim although nothing is in flight.
const RECENTLY: Duration = Duration::from_secs(2);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Destination {
    /// Sends through the breaker and the limiter.
    pub async fn call(&self, request: Request<Full<Bytes>>) -> Result<Sent, Throttled> {
        *lock(&self.last_used) = now();
        self.stack.clone().oneshot(request).await
    }

    pub fn circuit_state(&self) -> CircuitState {
        lock(&self.breaker).state(now())
    }

    /// Requests in flight and the adaptive limit.
    pub fn concurrency(&self) -> &Concurrency {
        &self.concurrency
    }

    /// Takes an in-flight slot unless the destination is at its limit.
    pub fn try_start(&self) -> bool {
        self.concurrency.try_start()
    }

    /// Frees the slot and adapts the limit to what the request showed.
    pub fn finish(&self, signal: Signal) {
        self.concurrency.finish(signal);
    }
}

pub struct Destinations {
    client: WebhookClient,
    settings: ResilienceSettings,
    map: Mutex<HashMap<String, Arc<Destination>>>,
    /// Live workers sharing each destination's rate limit (≥ 1).
    fleet: AtomicI64,
}

/// What a stack's rate limit is for this worker: the destination's limit shared out across the
/// live workers.
fn share(rate: f64, burst: i32, fleet: i64) -> (f64, u32) {
    let n = fleet.max(1);
    let per_worker_rate = rate / n as f64;
    let per_worker_burst = u32::try_from(burst.max(1))
        .unwrap_or(1)
        .div_ceil(u32::try_from(n).unwrap_or(1));
    (per_worker_rate, per_worker_burst.max(1))
}

impl Destinations {
    pub fn new(client: WebhookClient, settings: ResilienceSettings) -> Self {
        Self {
            client,
            settings,
            map: Mutex::new(HashMap::new()),
            fleet: AtomicI64::new(1),
        }
    }

    pub fn settings(&self) -> &ResilienceSettings {
        &self.settings
    }

    /// Sets how many live workers share the rate limits.
    pub fn set_fleet_size(&self, workers: i64) {
        self.fleet.store(workers.max(1), Ordering::Relaxed);
    }

    pub fn fleet_size(&self) -> i64 {
        self.fleet.load(Ordering::Relaxed)
    }

    fn build(
        &self,
        rate: f64,
        burst: i32,
        fleet: i64,
        breaker: SharedBreaker,
        concurrency: Arc<Concurrency>,
    ) -> Destination {
        let (rate_share, burst_share) = share(rate, burst, fleet);
        let bucket = Arc::new(Mutex::new(TokenBucket::new(rate_share, burst_share, now())));
        let client = self.client.clone();
        let stack = ServiceBuilder::new()
            .layer(BreakerLayer::new(breaker.clone()))
            .layer(RateLimitLayer::new(bucket))
            .service(tower::service_fn(move |request: Request<Full<Bytes>>| {
                let client = client.clone();
                async move { Ok::<_, Throttled>(client.send(request).await) }
            }));
        Destination {
            stack: BoxCloneSyncService::new(stack),
            breaker,
            built_for: (rate, burst, fleet),
            concurrency,
            saw_published_circuit: std::sync::atomic::AtomicBool::new(false),
            last_used: Mutex::new(now()),
            published: Mutex::new(CircuitState::Closed),
            counted_trips: Mutex::new(0),
        }
    }

    /// The destination of a claimed delivery, created on first use and rebuilt when its limits
    /// or the fleet changed (the breaker survives a rebuild). An open circuit that another
    /// worker published is adopted.
    pub fn get(&self, delivery: &ClaimedDelivery) -> Arc<Destination> {
        let fleet = self.fleet_size();
        let wanted = (
            delivery.rate_limit_per_sec,
            delivery.rate_limit_burst,
            fleet,
        );
        let mut map = lock(&self.map);
        let destination = match map.get(&delivery.subscription_id) {
            Some(existing) if existing.built_for == wanted => existing.clone(),
            existing => {
                let breaker = existing.map(|d| d.breaker.clone()).unwrap_or_else(|| {
                    Arc::new(Mutex::new(CircuitBreaker::new(
                        self.settings.breaker.clone(),
                        now(),
                    )))
                });
                let concurrency = existing.map(|d| d.concurrency.clone()).unwrap_or_else(|| {
                    Arc::new(Concurrency::new(
                        self.settings.max_in_flight_per_destination,
                    ))
                });
                let rebuilt =
                    Arc::new(self.build(wanted.0, wanted.1, wanted.2, breaker, concurrency));
                if let Some(old) = existing {
                    *lock(&rebuilt.published) = *lock(&old.published);
                    *lock(&rebuilt.counted_trips) = *lock(&old.counted_trips);
                }
                map.insert(delivery.subscription_id.clone(), rebuilt.clone());
                rebuilt
            }
        };
        drop(map);
        if let Some(until) = delivery.circuit_open_until {
            destination
                .saw_published_circuit
                .store(true, Ordering::Relaxed);
            let t = now();
            if let Ok(ahead) = (until - chrono::Utc::now()).to_std() {
                lock(&destination.breaker).open_until_at_least(t + ahead, t);
            }
        }
        destination
    }

    /// Forgets destinations idle for `idle_after` with nothing in flight; returns how many.
    pub fn evict_idle(&self) -> usize {
        let t = now();
        let mut map = lock(&self.map);
        let before = map.len();
        map.retain(|_, d| {
            d.concurrency.in_flight() > 0
                || t.duration_since(*lock(&d.last_used)) < self.settings.idle_after
        });
        before - map.len()
    }

    pub fn len(&self) -> usize {
        lock(&self.map).len()
    }

    /// The current concurrency limit of a destination this worker knows (`None`: unknown).
    pub fn limit_of(&self, subscription_id: &str) -> Option<usize> {
        lock(&self.map)
            .get(subscription_id)
            .map(|d| d.concurrency.limit())
    }

    /// What one claim may hand each destination, for a worker of `max_in_flight` slots: the
    /// room under its limit for the destinations with requests in flight, a limit below the
    /// start or a grown limit and an attempt that ended lately, the starting limit for the rest; deliveries of destinations not proven at most
    /// three quarters of the slots less what those already hold, so a quarter stays for
    /// destinations that answer. Also the destinations with no room that are stalled
    /// (unproven, nothing finished lately), whose due deliveries should be parked.
    pub fn allowances(&self, max_in_flight: usize) -> (Allowances, Vec<String>) {
        let start = INITIAL_LIMIT.min(self.settings.max_in_flight_per_destination.max(1));
        let to_i32 = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
        let t = now();
        let map = lock(&self.map);
        let mut unproven_in_flight = 0;
        let mut known = Vec::new();
        let mut stalled = Vec::new();
        for (id, d) in map.iter() {
            let c = &d.concurrency;
            let proven = c.proven();
            if !proven {
                unproven_in_flight += c.in_flight();
            }
            // Those in use, those below the start, and those that grew and were busy a moment
            // ago (between two bursts a fast destination often has nothing in flight: the next
            // claim must still give it its whole room, not the start).
            let grown_and_recent = c.limit() > start && c.finished_within(t, RECENTLY);
            if c.in_flight() > 0 || c.limit() < start || grown_and_recent {
                if c.room() == 0 && c.stalled(t) {
                    stalled.push(id.clone());
                }
                known.push(Allowance {
                    subscription_id: id.clone(),
                    room: to_i32(c.room()),
                    proven,
                });
            }
        }
        let unproven_slots = max_in_flight - max_in_flight / 4;
        let allowances = Allowances {
            known,
            otherwise: to_i32(start),
            unproven_budget: to_i32(unproven_slots.saturating_sub(unproven_in_flight)),
        };
        (allowances, stalled)
    }

    /// Whether some destination has requests in flight and no room for more.
    pub fn any_without_room(&self) -> bool {
        lock(&self.map)
            .values()
            .any(|d| d.concurrency.in_flight() > 0 && d.concurrency.room() == 0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Circuit changes since the last call, to publish for the other workers.
    pub fn take_circuit_updates(&self) -> Vec<CircuitUpdate> {
        let t = now();
        let wall = chrono::Utc::now();
        let map = lock(&self.map);
        let mut updates = Vec::new();
        for (id, destination) in map.iter() {
            let breaker = lock(&destination.breaker);
            let state = breaker.state(t);
            let mut counted = lock(&destination.counted_trips);
            if breaker.trips() > *counted {
                metrics::counter!(names::CIRCUIT_TRIPS, names::SUBSCRIPTION_ID => id.clone())
                    .increment(breaker.trips() - *counted);
                *counted = breaker.trips();
            }
            metrics::gauge!(names::CIRCUIT_STATE, names::SUBSCRIPTION_ID => id.clone())
                .set(f64::from(state as u8));
            let mut published = lock(&destination.published);
            let stale = state == CircuitState::Closed
                && destination
                    .saw_published_circuit
                    .swap(false, Ordering::Relaxed);
            if *published != state || stale {
                *published = state;
                let open_until = breaker.open_until(t).and_then(|until| {
                    chrono::Duration::from_std(until.duration_since(t))
                        .ok()
                        .map(|d| wall + d)
                });
                updates.push(CircuitUpdate {
                    subscription_id: id.clone(),
                    state: state.as_str(),
                    open_until,
                });
            }
        }
        updates
    }
}

#[cfg(test)]
mod tests {
    use super::share;

    #[test]
    fn a_destination_limit_is_shared_out_across_the_fleet() {
        assert_eq!(share(100.0, 10, 1), (100.0, 10));
        assert_eq!(share(100.0, 10, 4), (25.0, 3));
        assert_eq!(share(100.0, 1, 3).1, 1, "burst never drops below one");
        assert_eq!(
            share(100.0, 10, 0),
            (100.0, 10),
            "an empty count means just us"
        );
    }
}
