//! The retry schedule: exponential backoff with jitter, capped, for a bounded number of
//! attempts, and what one attempt's result means for the delivery.
//!
//! Default schedule: 1 s, doubling, ±10 % jitter, each wait capped at 1 h, 20 attempts in all.
//! The waits add up to about 8 h 8 min (29 295 s), so an endpoint that is down for several hours
//! still gets the event. `Retry-After` on 429/503 is honoured up to the cap.

use std::collections::BTreeSet;
use std::time::Duration;

/// How a delivery is retried.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Wait after the first failed attempt.
    pub initial_delay: Duration,
    /// Longest wait between two attempts.
    pub max_delay: Duration,
    /// Attempts in all, the first included; after the last failure the delivery is `failed`.
    pub max_attempts: u32,
    /// Jitter as a fraction of the wait (0.1 = ±10 %).
    pub jitter: f64,
    /// Response statuses that are never retried (the destination said "never").
    pub permanent_statuses: BTreeSet<u16>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            initial_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(3600),
            max_attempts: 20,
            jitter: 0.1,
            permanent_statuses: BTreeSet::from([410]),
        }
    }
}

/// Most attempts a delivery may have: the bound of the worker's `retry_max_attempts` and of a
/// subscription's own `retry.max_attempts`.
pub const MAX_ATTEMPTS_LIMIT: u32 = 1000;
/// Longest wait between two attempts, in seconds: the bound of `retry_max_delay_secs` and of a
/// subscription's own `retry.max_delay_secs`.
pub const MAX_DELAY_SECS_LIMIT: u64 = 7 * 86_400;
/// Bounds of one webhook request's timeout, in milliseconds: of the worker's
/// `request_timeout_ms` and of a subscription's own `timeout_ms`.
pub const TIMEOUT_MS_RANGE: std::ops::RangeInclusive<u64> = 10..=600_000;

impl RetryPolicy {
    /// This policy with a subscription's own `max_attempts` and `max_delay` in place of the
    /// global ones where it has them, each kept within [`MAX_ATTEMPTS_LIMIT`] and
    /// [`MAX_DELAY_SECS_LIMIT`] (the API refuses values outside them; this guards old rows).
    pub fn for_subscription(
        &self,
        max_attempts: Option<u32>,
        max_delay: Option<Duration>,
    ) -> std::borrow::Cow<'_, Self> {
        if max_attempts.is_none() && max_delay.is_none() {
            return std::borrow::Cow::Borrowed(self);
        }
        let mut policy = self.clone();
        if let Some(n) = max_attempts {
            policy.max_attempts = n.clamp(1, MAX_ATTEMPTS_LIMIT);
        }
        if let Some(d) = max_delay {
            policy.max_delay = d.clamp(
                Duration::from_secs(1),
                Duration::from_secs(MAX_DELAY_SECS_LIMIT),
            );
        }
        std::borrow::Cow::Owned(policy)
    }
}

/// Why an attempt failed: a closed set of stable codes stored on attempts and used as labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureCode {
    /// No answer within the timeout.
    Timeout,
    /// The TCP connection could not be made or broke (refused, reset, DNS).
    Connection,
    /// The TLS handshake failed.
    Tls,
    /// The destination answered with a status other than 2xx (redirects included).
    HttpStatus,
    /// The request could not be built or sent for another reason.
    Request,
    /// The destination resolves to an address webhooks may not be sent to (SSRF guard).
    DestinationRefused,
    /// The subscription's secret could not be used to sign: it is sealed with a key missing
    /// from the worker's `secret_keys`, does not open (altered, or other key material under that
    /// id), or is unusable. Nothing was sent; retried, so an operator can restore the key.
    SecretUnavailable,
}

impl FailureCode {
    /// Every code (the API documents them from this list).
    pub const ALL: [Self; 7] = [
        Self::Timeout,
        Self::Connection,
        Self::Tls,
        Self::HttpStatus,
        Self::Request,
        Self::DestinationRefused,
        Self::SecretUnavailable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Connection => "connection",
            Self::Tls => "tls",
            Self::HttpStatus => "http_status",
            Self::Request => "request",
            Self::DestinationRefused => "destination_refused",
            Self::SecretUnavailable => "secret_unavailable",
        }
    }
}

/// What one HTTP attempt produced, as the worker observed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptResult {
    /// The destination answered.
    Response {
        status: u16,
        /// `Retry-After` in seconds, when the destination sent one.
        retry_after: Option<Duration>,
    },
    /// No answer: the attempt failed before a status was received.
    Failed(FailureCode),
}

/// What happens to the delivery after an attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// 2xx: done.
    Delivered,
    /// Try again after `delay`.
    Retry { delay: Duration, code: FailureCode },
    /// No more attempts (exhausted, a permanent status, or a refused destination).
    GiveUp { code: FailureCode },
}

impl RetryPolicy {
    /// The wait before attempt `failed_attempts + 1`, given that `failed_attempts` (≥ 1) have
    /// failed; `jitter_unit` in [-1, 1] picks the point in the jitter range (the caller draws it
    /// at random, tests pass fixed values).
    pub fn delay_after(&self, failed_attempts: u32, jitter_unit: f64) -> Duration {
        let exponent = failed_attempts.saturating_sub(1).min(63);
        let base = self
            .initial_delay
            .checked_mul(1u32.checked_shl(exponent.min(31)).unwrap_or(u32::MAX))
            .unwrap_or(self.max_delay)
            .min(self.max_delay);
        let factor = 1.0 + self.jitter * jitter_unit.clamp(-1.0, 1.0);
        base.mul_f64(factor.max(0.0))
    }

    /// Decides the delivery's next step after attempt number `attempt` (1-based).
    pub fn decide(&self, attempt: u32, result: &AttemptResult, jitter_unit: f64) -> Decision {
        let (code, retry_after) = match result {
            AttemptResult::Response { status, .. } if (200..300).contains(status) => {
                return Decision::Delivered;
            }
            AttemptResult::Response {
                status,
                retry_after,
            } => {
                if self.permanent_statuses.contains(status) {
                    return Decision::GiveUp {
                        code: FailureCode::HttpStatus,
                    };
                }
                let honoured = matches!(status, 429 | 503)
                    .then_some(*retry_after)
                    .flatten();
                (FailureCode::HttpStatus, honoured)
            }
            // The destination resolves to an address webhooks may not go to: retrying for
            // hours cannot change that, only the operator's allowlist can (and then a replay
            // sends it).
            AttemptResult::Failed(FailureCode::DestinationRefused) => {
                return Decision::GiveUp {
                    code: FailureCode::DestinationRefused,
                };
            }
            AttemptResult::Failed(code) => (*code, None),
        };
        if attempt >= self.max_attempts {
            return Decision::GiveUp { code };
        }
        let delay = match retry_after {
            Some(wait) => wait.min(self.max_delay),
            None => self.delay_after(attempt, jitter_unit),
        };
        Decision::Retry { delay, code }
    }

    /// The sum of every wait in the schedule without jitter: how long an outage it rides out.
    pub fn total_span(&self) -> Duration {
        (1..self.max_attempts)
            .map(|n| self.delay_after(n, 0.0))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn every_failure_code_is_listed_once_with_a_name_of_its_own() {
        let names: std::collections::HashSet<_> = FailureCode::ALL.map(FailureCode::as_str).into();
        assert_eq!(names.len(), FailureCode::ALL.len());
        assert!(
            names
                .iter()
                .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
        );
    }

    fn status(status: u16) -> AttemptResult {
        AttemptResult::Response {
            status,
            retry_after: None,
        }
    }

    #[test]
    fn the_seed_first_steps_start_at_one_second_and_double() {
        let p = RetryPolicy::default();
        let waits: Vec<u64> = (1..=5).map(|n| p.delay_after(n, 0.0).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16]);
        assert_eq!(p.delay_after(1, 1.0), Duration::from_millis(1100));
        assert_eq!(p.delay_after(1, -1.0), Duration::from_millis(900));
    }

    #[test]
    fn the_default_schedule_rides_out_an_outage_of_several_hours() {
        let p = RetryPolicy::default();
        assert!(
            p.total_span() > Duration::from_secs(8 * 3600),
            "{:?}",
            p.total_span()
        );
        assert_eq!(p.delay_after(30, 0.0), p.max_delay);
        assert_eq!(p.delay_after(u32::MAX, 0.0), p.max_delay);
    }

    #[test]
    fn any_2xx_is_delivered_and_others_retry_until_the_last_attempt() {
        let p = RetryPolicy::default();
        assert_eq!(p.decide(1, &status(204), 0.0), Decision::Delivered);
        assert!(matches!(
            p.decide(1, &status(500), 0.0),
            Decision::Retry {
                code: FailureCode::HttpStatus,
                ..
            }
        ));
        assert!(matches!(
            p.decide(1, &status(302), 0.0),
            Decision::Retry { .. }
        ));
        assert_eq!(
            p.decide(p.max_attempts, &status(500), 0.0),
            Decision::GiveUp {
                code: FailureCode::HttpStatus
            }
        );
        assert_eq!(
            p.decide(3, &AttemptResult::Failed(FailureCode::Timeout), 0.0),
            Decision::Retry {
                delay: Duration::from_secs(4),
                code: FailureCode::Timeout
            }
        );
    }

    #[test]
    fn a_subscription_s_own_limits_replace_the_global_ones_within_bounds() {
        let p = RetryPolicy::default();
        assert_eq!(*p.for_subscription(None, None), p);
        let own = p.for_subscription(Some(2), Some(Duration::from_secs(5)));
        assert_eq!(own.max_attempts, 2);
        assert_eq!(own.max_delay, Duration::from_secs(5));
        assert_eq!(own.initial_delay, p.initial_delay);
        assert!(matches!(
            own.decide(1, &status(500), 0.0),
            Decision::Retry { .. }
        ));
        assert_eq!(
            own.decide(2, &status(500), 0.0),
            Decision::GiveUp {
                code: FailureCode::HttpStatus
            }
        );
        assert_eq!(own.delay_after(10, 0.0), Duration::from_secs(5));
        let wild = p.for_subscription(Some(0), Some(Duration::from_secs(u64::MAX / 2)));
        assert_eq!(wild.max_attempts, 1);
        assert_eq!(wild.max_delay, Duration::from_secs(MAX_DELAY_SECS_LIMIT));
        let only_attempts = p.for_subscription(Some(MAX_ATTEMPTS_LIMIT + 5), None);
        assert_eq!(only_attempts.max_attempts, MAX_ATTEMPTS_LIMIT);
        assert_eq!(only_attempts.max_delay, p.max_delay);
    }

    #[test]
    fn permanent_statuses_give_up_at_once() {
        let p = RetryPolicy::default();
        assert_eq!(
            p.decide(1, &status(410), 0.0),
            Decision::GiveUp {
                code: FailureCode::HttpStatus
            }
        );
    }

    #[test]
    fn retry_after_is_honoured_on_429_and_503_within_the_cap() {
        let p = RetryPolicy::default();
        let with = |status, secs| AttemptResult::Response {
            status,
            retry_after: Some(Duration::from_secs(secs)),
        };
        assert_eq!(
            p.decide(1, &with(429, 120), 0.0),
            Decision::Retry {
                delay: Duration::from_secs(120),
                code: FailureCode::HttpStatus
            }
        );
        assert_eq!(
            p.decide(1, &with(503, 999_999), 0.0),
            Decision::Retry {
                delay: p.max_delay,
                code: FailureCode::HttpStatus
            }
        );
        // On other statuses Retry-After is not part of the contract.
        assert_eq!(
            p.decide(1, &with(500, 120), 0.0),
            Decision::Retry {
                delay: Duration::from_secs(1),
                code: FailureCode::HttpStatus
            }
        );
    }

    proptest! {
        #[test]
        fn waits_stay_within_jitter_of_a_capped_doubling(n in 1u32..200, j in -1.0f64..=1.0) {
            let p = RetryPolicy::default();
            let d = p.delay_after(n, j).as_secs_f64();
            let base = (2f64.powi((n - 1).min(40) as i32)).min(p.max_delay.as_secs_f64());
            prop_assert!(d >= base * 0.9 - 1e-6 && d <= base * 1.1 + 1e-6, "{d} vs {base}");
        }

        #[test]
        fn waits_never_shrink_as_attempts_grow_without_jitter(n in 1u32..100) {
            let p = RetryPolicy::default();
            prop_assert!(p.delay_after(n + 1, 0.0) >= p.delay_after(n, 0.0));
        }
    }

    #[test]
    fn a_refused_destination_fails_at_once_and_other_failures_retry() {
        let p = RetryPolicy::default();
        assert_eq!(
            p.decide(
                1,
                &AttemptResult::Failed(FailureCode::DestinationRefused),
                0.0
            ),
            Decision::GiveUp {
                code: FailureCode::DestinationRefused
            }
        );
        assert!(matches!(
            p.decide(1, &AttemptResult::Failed(FailureCode::Connection), 0.0),
            Decision::Retry { .. }
        ));
    }
}
