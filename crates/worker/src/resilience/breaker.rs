//! The circuit breaker as a tower `Layer` + `Service`: the gate in front of a destination. The
//! state machine itself is `dispatch_domain::breaker`; this layer asks it before each request
//! and tells it each result (2xx = success).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use dispatch_domain::breaker::CircuitBreaker;
use tower::{Layer, Service};

use super::{Throttled, now};
use crate::client::Sent;

/// Shared breaker state of one destination.
pub type SharedBreaker = Arc<Mutex<CircuitBreaker>>;

#[derive(Clone)]
pub struct BreakerLayer {
    breaker: SharedBreaker,
}

impl BreakerLayer {
    pub fn new(breaker: SharedBreaker) -> Self {
        Self { breaker }
    }
}

impl<S> Layer<S> for BreakerLayer {
    type Service = BreakerService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BreakerService {
            inner,
            breaker: self.breaker.clone(),
        }
    }
}

#[derive(Clone)]
pub struct BreakerService<S> {
    inner: S,
    breaker: SharedBreaker,
}

fn lock(breaker: &SharedBreaker) -> std::sync::MutexGuard<'_, CircuitBreaker> {
    // A panic while holding this lock leaves a consistent state machine: keep using it.
    breaker
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl<S, R> Service<R> for BreakerService<S>
where
    S: Service<R, Response = Sent, Error = Throttled> + Clone + Send + 'static,
    S::Future: Send + 'static,
    R: Send + 'static,
{
    type Response = Sent;
    type Error = Throttled;
    type Future = Pin<Box<dyn Future<Output = Result<Sent, Throttled>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> Self::Future {
        if let Err(rejected) = lock(&self.breaker).try_acquire(now()) {
            return Box::pin(std::future::ready(Err(Throttled::CircuitOpen {
                retry_at: rejected.retry_at,
            })));
        }
        let breaker = self.breaker.clone();
        let response = self.inner.call(request);
        Box::pin(async move {
            let result = response.await;
            match &result {
                Ok(sent) => lock(&breaker).record(now(), sent.is_success()),
                // Held back further down: the grant was never used.
                Err(_) => lock(&breaker).release(),
            }
            result
        })
    }
}

#[cfg(test)]
mod tests {
    //! The breaker layer on tokio's paused clock: `advance` moves `resilience::now()`.

    use std::collections::VecDeque;
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use dispatch_domain::breaker::{BreakerSettings, CircuitBreaker, CircuitState};
    use dispatch_domain::bucket::TokenBucket;
    use dispatch_domain::retry::AttemptResult;
    use tokio::time::advance;
    use tower::{Layer, Service, ServiceBuilder, ServiceExt};

    use super::{BreakerLayer, SharedBreaker, lock};
    use crate::client::Sent;
    use crate::resilience::limit::SharedBucket;
    use crate::resilience::{RateLimitLayer, Throttled, now};

    type Answer = Pin<Box<dyn Future<Output = Result<Sent, Throttled>> + Send>>;

    const OPEN_FOR: Duration = Duration::from_secs(30);

    fn sent(status: u16) -> Sent {
        Sent {
            result: AttemptResult::Response {
                status,
                retry_after: None,
            },
            latency: Duration::ZERO,
            body: None,
            error: None,
        }
    }

    fn status_of(answer: Result<Sent, Throttled>) -> u16 {
        match answer.expect("the request reached the destination").result {
            AttemptResult::Response { status, .. } => status,
            AttemptResult::Failed(code) => panic!("expected a response, got {code:?}"),
        }
    }

    /// A destination behind a breaker with the seed's settings (3 requests, 50 %, 30 s, 5
    /// trials). The destination answers each request with the next scripted status (200 once
    /// the script is empty) and counts the requests that reach it.
    struct Rig {
        breaker: SharedBreaker,
        script: Arc<Mutex<VecDeque<u16>>>,
        calls: Arc<AtomicUsize>,
    }

    impl Rig {
        fn new() -> Self {
            Self {
                breaker: Arc::new(Mutex::new(CircuitBreaker::new(
                    BreakerSettings::default(),
                    now(),
                ))),
                script: Arc::default(),
                calls: Arc::default(),
            }
        }

        fn script(&self, statuses: &[u16]) {
            self.script
                .lock()
                .expect("the script")
                .extend(statuses.iter().copied());
        }

        fn destination(
            &self,
        ) -> impl Service<(), Response = Sent, Error = Throttled, Future: Send + 'static>
        + Clone
        + Send
        + 'static {
            let (script, calls) = (self.script.clone(), self.calls.clone());
            tower::service_fn(move |()| {
                calls.fetch_add(1, Ordering::SeqCst);
                let status = script
                    .lock()
                    .expect("the script")
                    .pop_front()
                    .unwrap_or(200);
                std::future::ready(Ok::<_, Throttled>(sent(status)))
            })
        }

        /// Starts one request: the breaker decides when it is called; the answer is the
        /// returned future (not yet awaited, so the request counts as in flight).
        async fn start(&self) -> Answer {
            let mut service = BreakerLayer::new(self.breaker.clone()).layer(self.destination());
            service.ready().await.expect("the breaker is always ready");
            service.call(())
        }

        async fn send(&self) -> Result<Sent, Throttled> {
            self.start().await.await
        }

        fn calls(&self) -> usize {
            self.calls.load(Ordering::SeqCst)
        }

        fn state(&self) -> CircuitState {
            lock(&self.breaker).state(now())
        }

        /// Three failed requests: the circuit opens.
        async fn trip(&self) {
            self.script(&[500, 500, 500]);
            for _ in 0..3 {
                assert_eq!(status_of(self.send().await), 500);
            }
            assert_eq!(self.state(), CircuitState::Open);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn three_failures_open_the_circuit_and_it_answers_circuit_open_without_calling_the_destination()
     {
        let rig = Rig::new();
        rig.script(&[500, 500]);
        assert_eq!(status_of(rig.send().await), 500);
        assert_eq!(status_of(rig.send().await), 500);
        assert_eq!(
            rig.state(),
            CircuitState::Closed,
            "two requests are too few"
        );
        rig.script(&[500]);
        let opened_at = now();
        assert_eq!(status_of(rig.send().await), 500);
        assert_eq!(rig.state(), CircuitState::Open);
        assert_eq!(rig.calls(), 3);

        for _ in 0..4 {
            assert_eq!(
                rig.send().await,
                Err(Throttled::CircuitOpen {
                    retry_at: opened_at + OPEN_FOR
                })
            );
        }
        advance(OPEN_FOR - Duration::from_millis(1)).await;
        assert!(matches!(
            rig.send().await,
            Err(Throttled::CircuitOpen { .. })
        ));
        assert_eq!(rig.calls(), 3, "no request reached the open destination");
    }

    #[tokio::test(start_paused = true)]
    async fn after_thirty_seconds_it_half_opens_and_lets_exactly_five_trials_through() {
        let rig = Rig::new();
        rig.trip().await;
        advance(OPEN_FOR).await;
        assert_eq!(rig.state(), CircuitState::HalfOpen);

        // Five trials in flight at once; a sixth is held back until their verdict.
        let mut trials = Vec::new();
        for _ in 0..5 {
            trials.push(rig.start().await);
        }
        assert_eq!(rig.calls(), 3 + 5);
        let sixth = rig.send().await;
        assert!(
            matches!(sixth, Err(Throttled::CircuitOpen { retry_at }) if retry_at > now()),
            "a sixth trial must wait, got {sixth:?}"
        );
        assert_eq!(
            rig.calls(),
            3 + 5,
            "the sixth never reached the destination"
        );
        assert_eq!(rig.state(), CircuitState::HalfOpen);

        for trial in trials {
            assert_eq!(status_of(trial.await), 200);
        }
        assert_eq!(rig.state(), CircuitState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn five_trial_successes_close_it_and_it_then_lets_everything_through() {
        let rig = Rig::new();
        rig.trip().await;
        advance(OPEN_FOR).await;
        for i in 1..=5 {
            assert_eq!(status_of(rig.send().await), 200);
            let expected = if i < 5 {
                CircuitState::HalfOpen
            } else {
                CircuitState::Closed
            };
            assert_eq!(rig.state(), expected, "after {i} successful trial(s)");
        }
        for _ in 0..20 {
            assert_eq!(status_of(rig.send().await), 200);
        }
        assert_eq!(rig.calls(), 3 + 5 + 20);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_trial_opens_it_again_for_another_thirty_seconds() {
        let rig = Rig::new();
        rig.trip().await;
        advance(OPEN_FOR).await;
        assert_eq!(status_of(rig.send().await), 200);
        rig.script(&[503]);
        let reopened_at = now();
        assert_eq!(status_of(rig.send().await), 503);
        assert_eq!(rig.state(), CircuitState::Open);
        assert_eq!(lock(&rig.breaker).trips(), 2);

        assert_eq!(
            rig.send().await,
            Err(Throttled::CircuitOpen {
                retry_at: reopened_at + OPEN_FOR
            })
        );
        assert_eq!(rig.calls(), 3 + 2);
        advance(OPEN_FOR).await;
        assert_eq!(rig.state(), CircuitState::HalfOpen);
        assert_eq!(status_of(rig.send().await), 200);
    }

    #[tokio::test(start_paused = true)]
    async fn a_trial_the_rate_limiter_throttles_is_given_back_to_the_breaker() {
        let rig = Rig::new();
        let bucket: SharedBucket = Arc::new(Mutex::new(TokenBucket::new(1.0, 10, now())));
        let stack = ServiceBuilder::new()
            .layer(BreakerLayer::new(rig.breaker.clone()))
            .layer(RateLimitLayer::new(bucket.clone()))
            .service(rig.destination());
        let send = || stack.clone().oneshot(());

        rig.script(&[500, 500, 500]);
        for _ in 0..3 {
            assert_eq!(status_of(send().await), 500);
        }
        assert_eq!(rig.state(), CircuitState::Open);
        advance(OPEN_FOR).await;
        // Someone else used up the bucket meanwhile.
        while bucket.lock().expect("bucket").try_take(now()).is_ok() {}

        // Twice as many requests as there are trials: each is rate limited, none is told the
        // circuit is open, so every trial grant went back.
        for i in 0..10 {
            let answer = send().await;
            assert!(
                matches!(answer, Err(Throttled::RateLimited { .. })),
                "request {i} while the bucket is empty: {answer:?}"
            );
        }
        assert_eq!(
            rig.calls(),
            3,
            "throttled requests never reach the destination"
        );
        assert_eq!(rig.state(), CircuitState::HalfOpen);

        // With tokens again, five trials go through and close the circuit.
        advance(Duration::from_secs(10)).await;
        for _ in 0..5 {
            assert_eq!(status_of(send().await), 200);
        }
        assert_eq!(rig.state(), CircuitState::Closed);
        assert_eq!(rig.calls(), 3 + 5);
    }
}
