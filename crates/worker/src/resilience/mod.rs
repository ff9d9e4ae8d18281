//! Per-destination resilience as tower layers: circuit breaker → rate limiter → client. A
//! request the breaker or the limiter holds back is answered at once with [`Throttled`] and the
//! time to come back, so a throttled delivery is deferred instead of occupying a worker's slot.

pub mod breaker;
pub mod concurrency;
pub mod destinations;
pub mod limit;

use std::time::Instant;

pub use breaker::{BreakerLayer, BreakerService};
pub use destinations::{Destination, Destinations, ResilienceSettings};
pub use limit::{RateLimitLayer, RateLimitService};

/// Why a request was held back, and when it may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Throttled {
    #[error("the destination's circuit is open")]
    CircuitOpen { retry_at: Instant },
    #[error("the destination's rate limit is reached")]
    RateLimited { retry_at: Instant },
}

impl Throttled {
    pub fn retry_at(self) -> Instant {
        match self {
            Self::CircuitOpen { retry_at } | Self::RateLimited { retry_at } => retry_at,
        }
    }

    /// A stable name for logs and metric labels.
    pub fn reason(self) -> &'static str {
        match self {
            Self::CircuitOpen { .. } => "circuit_open",
            Self::RateLimited { .. } => "rate_limited",
        }
    }
}

/// The clock of the layers: tokio's, so tests can pause and advance it.
pub fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}
