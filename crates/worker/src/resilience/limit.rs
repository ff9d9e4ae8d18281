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

#[cfg(test)]
mod tests {
    //! The rate limiter layer on tokio's paused clock: `advance` moves `resilience::now()`.

    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use dispatch_domain::bucket::TokenBucket;
    use dispatch_domain::retry::AttemptResult;
    use tokio::time::advance;
    use tower::{Layer, Service, ServiceExt};

    use super::RateLimitLayer;
    use crate::client::Sent;
    use crate::resilience::{Throttled, now};

    fn ok() -> Sent {
        Sent {
            result: AttemptResult::Response {
                status: 200,
                retry_after: None,
            },
            latency: Duration::ZERO,
            body: None,
            error: None,
        }
    }

    /// A destination behind a limiter of `rate`/s and `burst`, counting the requests that
    /// reach it.
    fn limited(
        rate: f64,
        burst: u32,
    ) -> (
        impl Service<(), Response = Sent, Error = Throttled> + Clone,
        Arc<AtomicUsize>,
    ) {
        let calls = Arc::new(AtomicUsize::new(0));
        let bucket = Arc::new(Mutex::new(TokenBucket::new(rate, burst, now())));
        let counted = calls.clone();
        let service = RateLimitLayer::new(bucket).layer(tower::service_fn(move |()| {
            counted.fetch_add(1, Ordering::SeqCst);
            std::future::ready(Ok::<_, Throttled>(ok()))
        }));
        (service, calls)
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_of_ten_passes_and_the_eleventh_is_rate_limited_until_its_token_is_there() {
        let (service, calls) = limited(100.0, 10);
        let t0 = now();
        for i in 0..10 {
            assert_eq!(service.clone().oneshot(()).await, Ok(ok()), "request {i}");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 10);

        assert_eq!(
            service.clone().oneshot(()).await,
            Err(Throttled::RateLimited {
                retry_at: t0 + Duration::from_millis(10)
            })
        );
        assert_eq!(
            now(),
            t0,
            "a throttled request is answered at once, not made to wait"
        );
        assert_eq!(
            calls.load(Ordering::SeqCst),
            10,
            "it never reached the destination"
        );

        // Coming back when told to, the request passes.
        advance(Duration::from_millis(10)).await;
        assert_eq!(service.clone().oneshot(()).await, Ok(ok()));
        assert_eq!(calls.load(Ordering::SeqCst), 11);
    }

    #[tokio::test(start_paused = true)]
    async fn tokens_come_back_at_the_rate_and_never_beyond_the_burst() {
        let (service, calls) = limited(100.0, 10);
        for _ in 0..10 {
            service.clone().oneshot(()).await.expect("the burst");
        }
        // 50 ms at 100/s: five requests.
        advance(Duration::from_millis(50)).await;
        for _ in 0..5 {
            service.clone().oneshot(()).await.expect("a refilled token");
        }
        assert!(service.clone().oneshot(()).await.is_err());

        // A long pause fills the bucket only up to the burst.
        advance(Duration::from_secs(3600)).await;
        let mut passed = 0;
        while service.clone().oneshot(()).await.is_ok() {
            passed += 1;
        }
        assert_eq!(passed, 10);
        assert_eq!(calls.load(Ordering::SeqCst), 10 + 5 + 10);
    }
}
