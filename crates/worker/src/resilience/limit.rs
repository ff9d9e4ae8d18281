//! The rate limiter as a tower `Layer` + `Service`: a token bucket per destination that answers
//! "not before T" at once rather than waiting, so no worker slot is held while throttled.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use dispatch_domain::bucket::TokenBucket;
use tower::{Layer, Service};

use super::{Throttled, now};
use crate::client::Sent;

pub type SharedBucket = Arc<Mutex<TokenBucket>>;

#[derive(Clone)]
pub struct RateLimitLayer {
    bucket: SharedBucket,
}

impl RateLimitLayer {
    pub fn new(bucket: SharedBucket) -> Self {
        Self { bucket }
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimitService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimitService {
            inner,
            bucket: self.bucket.clone(),
        }
    }
}

#[derive(Clone)]
pub struct RateLimitService<S> {
    inner: S,
    bucket: SharedBucket,
}

impl<S, R> Service<R> for RateLimitService<S>
where
    S: Service<R, Response = Sent, Error = Throttled>,
    S::Future: Send + 'static,
{
    type Response = Sent;
    type Error = Throttled;
    type Future = Pin<Box<dyn Future<Output = Result<Sent, Throttled>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> Self::Future {
        let taken = self
            .bucket
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .try_take(now());
        match taken {
            Ok(()) => Box::pin(self.inner.call(request)),
            Err(retry_at) => Box::pin(std::future::ready(Err(Throttled::RateLimited { retry_at }))),
        }
    }
}
