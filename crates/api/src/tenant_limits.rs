//! Per-tenant ingest limits on one API replica: a token bucket per tenant for `POST /events`
//! and `/events/batch` (429 `rate_limited` with `Retry-After`), and the payload and
//! subscription ceilings, each a tenant's own value or the configured default.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use dispatch_domain::TenantId;
use dispatch_domain::bucket::TokenBucket;
use dispatch_store::queries::tenants::TenantLimits;

use crate::error::ApiError;

/// A tenant's limits as they apply: its own where it has them, else the defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Effective {
    /// Events per second (`None`: no limit) and the burst allowed at once.
    pub rate: Option<(f64, u32)>,
    pub max_subscriptions: Option<i32>,
    /// Largest `POST /events` body and largest `data` of one batch item, in bytes, when one
    /// is set (else `POST /events` takes up to `max_body_bytes`, as without tenants).
    pub max_payload_bytes: Option<usize>,
}

impl Effective {
    /// `own` over `defaults`.
    pub fn of(own: &TenantLimits, defaults: &TenantLimits) -> Self {
        let rate = own.ingest_rate_per_sec.or(defaults.ingest_rate_per_sec);
        let burst = own.ingest_burst.or(defaults.ingest_burst);
        Self {
            rate: rate.map(|rate| {
                // No burst given: a second's worth, at least one event.
                let fallback = rate.ceil().clamp(1.0, f64::from(u32::MAX)) as u32;
                let burst = burst
                    .and_then(|b| u32::try_from(b).ok())
                    .unwrap_or(fallback);
                (rate, burst.max(1))
            }),
            max_subscriptions: own.max_subscriptions.or(defaults.max_subscriptions),
            max_payload_bytes: own
                .max_payload_bytes
                .or(defaults.max_payload_bytes)
                .and_then(|n| usize::try_from(n).ok()),
        }
    }
}

/// One bucket per tenant, refilled as time passes; a tenant whose limit changed gets a fresh
/// bucket at its new rate.
#[derive(Default)]
pub struct IngestLimiter {
    buckets: Mutex<HashMap<String, Bucket>>,
}

/// A tenant's bucket and the (rate, burst) it was made for.
type Bucket = ((f64, u32), TokenBucket);

impl IngestLimiter {
    /// Admits `n` events for `tenant` now, or refuses with `429` and the seconds until they
    /// would be admitted (`Retry-After`, at least 1).
    pub fn admit(&self, tenant: &TenantId, limits: &Effective, n: u32) -> Result<(), ApiError> {
        let result = self.take(tenant, limits, n);
        if result.is_err() {
            count(tenant, "rate_limited", u64::from(n));
        }
        result
    }

    fn take(&self, tenant: &TenantId, limits: &Effective, n: u32) -> Result<(), ApiError> {
        let Some((rate, burst)) = limits.rate else {
            return Ok(());
        };
        if n > burst {
            return Err(ApiError::RateLimited {
                retry_after_secs: 1,
                message: format!(
                    "{n} events at once exceed tenant {tenant}'s ingest burst of {burst}: send \
                     smaller batches"
                ),
            });
        }
        let now = Instant::now();
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let entry = buckets
            .entry(tenant.as_str().to_owned())
            .or_insert_with(|| ((rate, burst), TokenBucket::new(rate, burst, now)));
        if entry.0 != (rate, burst) {
            *entry = ((rate, burst), TokenBucket::new(rate, burst, now));
        }
        entry.1.try_take_n(n, now).map_err(|at| {
            let wait = at.saturating_duration_since(now);
            ApiError::RateLimited {
                retry_after_secs: wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
                message: format!(
                    "tenant {tenant} sends more than its ingest rate of {rate} events/s \
                     (burst {burst}); retry after the Retry-After seconds"
                ),
            }
        })
    }
}

/// Adds `n` to the tenant's `dispatch_tenant_events_total{outcome}`.
pub fn count(tenant: &TenantId, outcome: &'static str, n: u64) {
    use dispatch_telemetry::metrics as names;
    metrics::counter!(
        names::TENANT_EVENTS,
        names::TENANT => tenant.as_str().to_owned(),
        names::OUTCOME => outcome
    )
    .increment(n);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(rate: Option<f64>, burst: Option<i32>) -> TenantLimits {
        TenantLimits {
            ingest_rate_per_sec: rate,
            ingest_burst: burst,
            ..TenantLimits::default()
        }
    }

    #[test]
    fn a_tenants_own_limits_win_over_the_defaults() {
        let defaults = TenantLimits {
            ingest_rate_per_sec: Some(100.0),
            max_subscriptions: Some(10),
            ..TenantLimits::default()
        };
        let own = TenantLimits {
            ingest_burst: Some(7),
            max_payload_bytes: Some(2048),
            ..TenantLimits::default()
        };
        let e = Effective::of(&own, &defaults);
        assert_eq!(e.rate, Some((100.0, 7)));
        assert_eq!(e.max_subscriptions, Some(10));
        assert_eq!(e.max_payload_bytes, Some(2048));
        let none = Effective::of(&TenantLimits::default(), &TenantLimits::default());
        assert_eq!(none.rate, None, "no rate anywhere: no limit");
        assert_eq!(none.max_payload_bytes, None);
        assert_eq!(
            Effective::of(&limits(Some(2.5), None), &TenantLimits::default()).rate,
            Some((2.5, 3)),
            "no burst: a second's worth"
        );
    }

    #[test]
    fn each_tenant_has_its_own_bucket_and_a_refusal_says_when_to_come_back() {
        let limiter = IngestLimiter::default();
        let (a, b) = (
            TenantId::parse("a").expect("valid"),
            TenantId::parse("b").expect("valid"),
        );
        let slow = Effective::of(&limits(Some(0.5), Some(2)), &TenantLimits::default());
        limiter.admit(&a, &slow, 2).expect("the burst");
        match limiter.admit(&a, &slow, 1) {
            Err(ApiError::RateLimited {
                retry_after_secs, ..
            }) => assert_eq!(retry_after_secs, 2, "one token at 0.5/s"),
            other => panic!("expected 429, got {other:?}"),
        }
        limiter
            .admit(&b, &slow, 2)
            .expect("b has a bucket of its own");
        assert!(
            matches!(
                limiter.admit(&b, &slow, 3),
                Err(ApiError::RateLimited { .. })
            ),
            "a batch above the burst is refused"
        );
        let unlimited = Effective::of(&TenantLimits::default(), &TenantLimits::default());
        limiter.admit(&a, &unlimited, 1000).expect("no limit");
    }
}
