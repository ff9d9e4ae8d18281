//! A token bucket per destination: `rate` requests per second on average, at most `burst` at
//! once (seed default 100/s, burst 10). Pure: it takes `now`, and says when to come back instead
//! of sleeping, so a throttled delivery never holds a worker's slot.

use std::time::{Duration, Instant};

#[derive(Debug, Clone, PartialEq)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    updated: Instant,
}

impl TokenBucket {
    /// A full bucket. `rate` > 0 requests per second, `burst` ≥ 1.
    pub fn new(rate: f64, burst: u32, now: Instant) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            rate: rate.max(f64::MIN_POSITIVE),
            burst,
            tokens: burst,
            updated: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.updated = self.updated.max(now);
    }

    /// Takes one token at `now`, or says when one will be there.
    pub fn try_take(&mut self, now: Instant) -> Result<(), Instant> {
        self.try_take_n(1, now)
    }

    /// Takes `n` tokens at once at `now` (a batch of requests), or says when they will be
    /// there. `n` above the burst can never be taken: the caller refuses such a batch.
    pub fn try_take_n(&mut self, n: u32, now: Instant) -> Result<(), Instant> {
        self.refill(now);
        let n = f64::from(n);
        // The epsilon absorbs floating-point error, so a token is there at the promised time.
        if self.tokens >= n - 1e-9 {
            self.tokens = (self.tokens - n).max(0.0);
            Ok(())
        } else {
            let wait = (n - self.tokens) / self.rate;
            Err(now + Duration::from_secs_f64(wait.min(86_400.0)))
        }
    }

    /// The most tokens it ever holds.
    pub fn burst(&self) -> u32 {
        // A whole number from `new`.
        self.burst as u32
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn a_batch_takes_its_tokens_at_once_or_waits_for_all_of_them() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10.0, 5, t0);
        b.try_take_n(4, t0).expect("within the burst");
        let next = b.try_take_n(3, t0).expect_err("one token left");
        assert_eq!(
            next,
            t0 + Duration::from_millis(200),
            "two more tokens at 10/s"
        );
        assert!(b.try_take_n(3, next).is_ok());
        assert_eq!(b.burst(), 5);
    }

    #[test]
    fn a_full_bucket_allows_a_burst_then_one_request_per_interval() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(100.0, 10, t0);
        for _ in 0..10 {
            b.try_take(t0).expect("burst");
        }
        let next = b.try_take(t0).expect_err("empty");
        assert_eq!(next, t0 + Duration::from_millis(10));
        assert!(b.try_take(next).is_ok());
    }

    proptest! {
        /// Never more than burst + rate × t requests in any window of length t.
        #[test]
        fn no_window_ever_exceeds_burst_plus_rate_times_its_length(
            rate in 1.0f64..200.0,
            burst in 1u32..20,
            gaps_us in prop::collection::vec(0u64..50_000, 1..400),
        ) {
            let t0 = Instant::now();
            let mut bucket = TokenBucket::new(rate, burst, t0);
            let mut now = t0;
            let mut granted: Vec<Instant> = Vec::new();
            for gap in gaps_us {
                now += Duration::from_micros(gap);
                if bucket.try_take(now).is_ok() {
                    granted.push(now);
                }
            }
            for (i, start) in granted.iter().enumerate() {
                for (j, end) in granted.iter().enumerate().skip(i) {
                    let t = end.duration_since(*start).as_secs_f64();
                    let count = (j - i + 1) as f64;
                    prop_assert!(
                        count <= f64::from(burst) + rate * t + 1e-6,
                        "{count} requests in {t}s (rate {rate}, burst {burst})"
                    );
                }
            }
        }

        /// A refused request is told a time at which it will be allowed.
        #[test]
        fn the_time_given_on_refusal_is_when_a_token_is_there(rate in 0.5f64..500.0, burst in 1u32..5) {
            let t0 = Instant::now();
            let mut bucket = TokenBucket::new(rate, burst, t0);
            for _ in 0..burst {
                bucket.try_take(t0).expect("burst");
            }
            let at = bucket.try_take(t0).expect_err("empty");
            prop_assert!(bucket.try_take(at + Duration::from_micros(1)).is_ok());
        }
    }
}
