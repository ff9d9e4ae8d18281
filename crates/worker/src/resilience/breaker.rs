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
