//! The circuit breaker's state machine, per destination, with the seed's defaults: it opens when
//! at least 50 % of at least 3 requests in its counting window failed; after 30 s it half-opens
//! and lets 5 trial requests through; 5 successes close it, any failure opens it again.
//! Pure: every method takes `now`, so tests drive the clock.

use std::time::{Duration, Instant};

/// The breaker's thresholds.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerSettings {
    /// Fraction of failed requests that opens the circuit.
    pub failure_ratio: f64,
    /// Requests needed in the window before the ratio counts.
    pub min_requests: u32,
    /// How long counts accumulate while closed before they start over.
    pub window: Duration,
    /// How long the circuit stays open before half-opening.
    pub open_for: Duration,
    /// Trial requests let through while half-open; as many successes close the circuit.
    pub half_open_trials: u32,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        Self {
            failure_ratio: 0.5,
            min_requests: 3,
            window: Duration::from_secs(60),
            open_for: Duration::from_secs(30),
            half_open_trials: 5,
        }
    }
}

/// The state as the metrics report it: 0 closed, 1 half-open, 2 open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    Closed = 0,
    HalfOpen = 1,
    Open = 2,
}

impl CircuitState {
    /// Every state, in the order of their numbers (the API documents them from this list).
    pub const ALL: [Self; 3] = [Self::Closed, Self::HalfOpen, Self::Open];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::HalfOpen => "half_open",
            Self::Open => "open",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum State {
    Closed {
        since: Instant,
        requests: u32,
        failures: u32,
    },
    Open {
        until: Instant,
    },
    HalfOpen {
        started: u32,
        succeeded: u32,
    },
}

/// Why a request may not go now, and when to ask again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejected {
    pub retry_at: Instant,
}

#[derive(Debug, Clone)]
pub struct CircuitBreaker {
    settings: BreakerSettings,
    state: State,
    trips: u64,
}

impl CircuitBreaker {
    pub fn new(settings: BreakerSettings, now: Instant) -> Self {
        Self {
            settings,
            state: State::Closed {
                since: now,
                requests: 0,
                failures: 0,
            },
            trips: 0,
        }
    }

    /// The state at `now` (an open circuit whose time is up reports half-open).
    pub fn state(&self, now: Instant) -> CircuitState {
        match self.state {
            State::Closed { .. } => CircuitState::Closed,
            State::Open { until } if now < until => CircuitState::Open,
            State::Open { .. } | State::HalfOpen { .. } => CircuitState::HalfOpen,
        }
    }

    /// How many times the circuit has opened.
    pub fn trips(&self) -> u64 {
        self.trips
    }

    /// Until when the circuit is open, if it is.
    pub fn open_until(&self, now: Instant) -> Option<Instant> {
        match self.state {
            State::Open { until } if now < until => Some(until),
            _ => None,
        }
    }

    /// Asks to send one request at `now`. A granted request must be followed by [`Self::record`].
    pub fn try_acquire(&mut self, now: Instant) -> Result<(), Rejected> {
        if let State::Open { until } = self.state {
            if now < until {
                return Err(Rejected { retry_at: until });
            }
            self.state = State::HalfOpen {
                started: 0,
                succeeded: 0,
            };
        }
        match &mut self.state {
            State::Closed { .. } | State::Open { .. } => Ok(()),
            State::HalfOpen { started, .. } if *started < self.settings.half_open_trials => {
                *started += 1;
                Ok(())
            }
            // Every trial is out: wait a moment for their verdict.
            State::HalfOpen { .. } => Err(Rejected {
                retry_at: now + Duration::from_secs(1),
            }),
        }
    }

    /// Gives back a grant that was never used (the request was held back further down).
    pub fn release(&mut self) {
        if let State::HalfOpen { started, .. } = &mut self.state {
            *started = started.saturating_sub(1);
        }
    }

    /// Adopts an open circuit another worker saw: a closed breaker opens until `until` (this is
    /// not counted as a trip here; the worker that saw the failures counted it).
    pub fn open_until_at_least(&mut self, until: Instant, now: Instant) {
        if until <= now {
            return;
        }
        match self.state {
            State::Open { until: mine } if mine >= until => {}
            State::HalfOpen { .. } => {}
            _ => self.state = State::Open { until },
        }
    }

    /// Records the result of a granted request.
    pub fn record(&mut self, now: Instant, success: bool) {
        let settings = &self.settings;
        match &mut self.state {
            State::Closed {
                since,
                requests,
                failures,
            } => {
                if now.duration_since(*since) >= settings.window {
                    (*since, *requests, *failures) = (now, 0, 0);
                }
                *requests += 1;
                if !success {
                    *failures += 1;
                }
                if *requests >= settings.min_requests
                    && f64::from(*failures) >= settings.failure_ratio * f64::from(*requests)
                {
                    self.open(now);
                }
            }
            State::HalfOpen { succeeded, .. } => {
                if !success {
                    self.open(now);
                } else {
                    *succeeded += 1;
                    if *succeeded >= settings.half_open_trials {
                        self.state = State::Closed {
                            since: now,
                            requests: 0,
                            failures: 0,
                        };
                    }
                }
            }
            // A result that arrives after the circuit opened (it was in flight) changes nothing.
            State::Open { .. } => {}
        }
    }

    fn open(&mut self, now: Instant) {
        self.state = State::Open {
            until: now + self.settings.open_for,
        };
        self.trips += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_is_listed_once_in_the_order_of_its_number() {
        for (i, state) in CircuitState::ALL.into_iter().enumerate() {
            assert_eq!(state as usize, i, "{state:?}");
        }
        let names: std::collections::HashSet<_> =
            CircuitState::ALL.map(CircuitState::as_str).into();
        assert_eq!(names.len(), CircuitState::ALL.len());
    }

    fn breaker() -> (CircuitBreaker, Instant) {
        let t0 = Instant::now();
        (CircuitBreaker::new(BreakerSettings::default(), t0), t0)
    }

    fn request(b: &mut CircuitBreaker, now: Instant, success: bool) {
        b.try_acquire(now).expect("allowed");
        b.record(now, success);
    }

    #[test]
    fn fewer_than_the_minimum_requests_never_open_the_circuit() {
        let (mut b, t0) = breaker();
        request(&mut b, t0, false);
        request(&mut b, t0, false);
        assert_eq!(b.state(t0), CircuitState::Closed);
    }

    #[test]
    fn half_failures_over_three_requests_open_it_for_thirty_seconds() {
        let (mut b, t0) = breaker();
        request(&mut b, t0, true);
        request(&mut b, t0, false);
        assert_eq!(b.state(t0), CircuitState::Closed);
        request(&mut b, t0, false);
        assert_eq!(b.state(t0), CircuitState::Open);
        assert_eq!(b.trips(), 1);
        let rejected = b
            .try_acquire(t0 + Duration::from_secs(29))
            .expect_err("open");
        assert_eq!(rejected.retry_at, t0 + Duration::from_secs(30));
    }

    #[test]
    fn a_mostly_healthy_window_stays_closed_and_old_failures_age_out() {
        let (mut b, t0) = breaker();
        for _ in 0..3 {
            request(&mut b, t0, true);
        }
        request(&mut b, t0, false);
        request(&mut b, t0, false);
        assert_eq!(b.state(t0), CircuitState::Closed, "2 of 5 failed");
        let later = t0 + Duration::from_secs(61);
        request(&mut b, later, false);
        assert_eq!(
            b.state(later),
            CircuitState::Closed,
            "the window started over"
        );
    }

    #[test]
    fn after_the_timeout_it_half_opens_and_lets_exactly_five_trials_through() {
        let (mut b, t0) = breaker();
        for _ in 0..3 {
            request(&mut b, t0, false);
        }
        let t1 = t0 + Duration::from_secs(30);
        assert_eq!(b.state(t1), CircuitState::HalfOpen);
        for _ in 0..5 {
            b.try_acquire(t1).expect("a trial");
        }
        assert!(b.try_acquire(t1).is_err(), "a sixth trial must wait");
    }

    #[test]
    fn five_trial_successes_close_it() {
        let (mut b, t0) = breaker();
        for _ in 0..3 {
            request(&mut b, t0, false);
        }
        let t1 = t0 + Duration::from_secs(30);
        for i in 0..5 {
            request(&mut b, t1, true);
            let expected = if i < 4 {
                CircuitState::HalfOpen
            } else {
                CircuitState::Closed
            };
            assert_eq!(b.state(t1), expected);
        }
        request(&mut b, t1, true);
        assert_eq!(b.trips(), 1);
    }

    #[test]
    fn a_trial_failure_opens_it_again() {
        let (mut b, t0) = breaker();
        for _ in 0..3 {
            request(&mut b, t0, false);
        }
        let t1 = t0 + Duration::from_secs(30);
        request(&mut b, t1, true);
        request(&mut b, t1, false);
        assert_eq!(b.state(t1), CircuitState::Open);
        assert_eq!(b.open_until(t1), Some(t1 + Duration::from_secs(30)));
        assert_eq!(b.trips(), 2);
    }

    #[test]
    fn an_unused_trial_grant_can_be_given_back() {
        let (mut b, t0) = breaker();
        for _ in 0..3 {
            request(&mut b, t0, false);
        }
        let t1 = t0 + Duration::from_secs(30);
        for _ in 0..5 {
            b.try_acquire(t1).expect("a trial");
        }
        b.release();
        assert!(
            b.try_acquire(t1).is_ok(),
            "the released trial is available again"
        );
    }

    #[test]
    fn an_open_circuit_seen_elsewhere_is_adopted_without_counting_a_trip() {
        let (mut b, t0) = breaker();
        b.open_until_at_least(t0 + Duration::from_secs(10), t0);
        assert_eq!(b.state(t0), CircuitState::Open);
        assert_eq!(b.trips(), 0);
        b.open_until_at_least(t0 + Duration::from_secs(5), t0);
        assert_eq!(
            b.open_until(t0),
            Some(t0 + Duration::from_secs(10)),
            "never shortened"
        );
        b.open_until_at_least(t0, t0);
        assert_eq!(b.open_until(t0), Some(t0 + Duration::from_secs(10)));
    }

    #[test]
    fn results_arriving_while_open_change_nothing() {
        let (mut b, t0) = breaker();
        b.try_acquire(t0).expect("allowed");
        for _ in 0..3 {
            request(&mut b, t0, false);
        }
        b.record(t0, true);
        assert_eq!(b.state(t0), CircuitState::Open);
    }
}
