//! How many requests one destination may have in flight from this worker: a limit that adapts
//! (one more on every answered request, so it doubles each round trip; halved on every
//! timeout), bounded by the configured ceiling, so a fast destination can use the whole worker
//! while a slow one is held to a few slots; and whether the destination is proven (its last
//! answer came, and fast), which decides whether it may use the slots kept for those.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Instant;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The limit a destination starts from (or the ceiling, when lower): few enough that many
/// destinations that hang cannot take every slot before their first timeout; a fast one
/// doubles it every round trip.
pub const INITIAL_LIMIT: usize = 2;

/// An answer slower than this does not prove a destination.
pub const SLOW_ANSWER: std::time::Duration = std::time::Duration::from_millis(250);

/// What an attempt tells the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// The destination answered (any status) or refused, after this long: one more slot.
    Answered(std::time::Duration),
    /// No answer within the timeout: half the slots.
    TimedOut,
    /// No request was made (deferred): no change.
    NotSent,
}

/// The next limit after `signal`, within 1..=`ceiling`.
pub fn next_limit(current: usize, signal: Signal, ceiling: usize) -> usize {
    let ceiling = ceiling.max(1);
    let next = match signal {
        Signal::Answered(_) => current.saturating_add(1),
        Signal::TimedOut => current / 2,
        Signal::NotSent => current,
    };
    next.clamp(1, ceiling)
}

/// A destination's requests in flight and its current limit, shared by the stacks that replace
/// one another when its rate limit changes.
#[derive(Debug)]
pub struct Concurrency {
    in_flight: AtomicUsize,
    limit: AtomicUsize,
    ceiling: usize,
    /// The last attempt was answered within [`SLOW_ANSWER`].
    proven: AtomicBool,
    /// When an attempt last ended (or the destination was first used).
    last_finish: Mutex<Instant>,
}

impl Concurrency {
    pub fn new(ceiling: usize) -> Self {
        let ceiling = ceiling.max(1);
        Self {
            in_flight: AtomicUsize::new(0),
            limit: AtomicUsize::new(INITIAL_LIMIT.min(ceiling)),
            ceiling,
            proven: AtomicBool::new(false),
            last_finish: Mutex::new(super::now()),
        }
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    pub fn limit(&self) -> usize {
        self.limit.load(Ordering::Acquire)
    }

    /// Its last attempt was answered, and fast.
    pub fn proven(&self) -> bool {
        self.proven.load(Ordering::Acquire)
    }

    /// Not proven, and nothing has finished for [`SLOW_ANSWER`]: its requests hang or crawl,
    /// so its blocked deliveries should make way (a new destination is given that long).
    pub fn stalled(&self, now: Instant) -> bool {
        !self.proven() && now.saturating_duration_since(*lock(&self.last_finish)) >= SLOW_ANSWER
    }

    /// An attempt ended within `within` of `now`.
    pub fn finished_within(&self, now: Instant, within: std::time::Duration) -> bool {
        now.saturating_duration_since(*lock(&self.last_finish)) < within
    }

    /// Requests that may start now (limit minus in flight, never negative).
    pub fn room(&self) -> usize {
        self.limit().saturating_sub(self.in_flight())
    }

    /// Takes a slot unless the destination is at its limit.
    pub fn try_start(&self) -> bool {
        let limit = self.limit();
        self.in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .is_ok()
    }

    /// Frees a slot and adapts the limit to what the request showed.
    pub fn finish(&self, signal: Signal) {
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
        *lock(&self.last_finish) = super::now();
        match signal {
            Signal::Answered(took) => self.proven.store(took < SLOW_ANSWER, Ordering::Release),
            Signal::TimedOut => self.proven.store(false, Ordering::Release),
            Signal::NotSent => {}
        }
        let ceiling = self.ceiling;
        // A lost race only means one adjustment is applied to a fresher value.
        let _ = self
            .limit
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |l| {
                Some(next_limit(l, signal, ceiling))
            });
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn answers_add_one_slot_up_to_the_ceiling() {
        let fast = Signal::Answered(Duration::from_millis(3));
        assert_eq!(next_limit(8, fast, 64), 9);
        assert_eq!(next_limit(64, fast, 64), 64);
        assert_eq!(next_limit(1, fast, 1), 1);
    }

    #[test]
    fn a_timeout_halves_the_limit_but_never_below_one() {
        assert_eq!(next_limit(64, Signal::TimedOut, 64), 32);
        assert_eq!(next_limit(3, Signal::TimedOut, 64), 1);
        assert_eq!(next_limit(1, Signal::TimedOut, 64), 1);
        assert_eq!(next_limit(5, Signal::NotSent, 64), 5);
    }

    #[test]
    fn a_destination_starts_small_and_grows_with_answers() {
        let fast = Signal::Answered(Duration::from_millis(3));
        let c = Concurrency::new(64);
        assert_eq!(c.limit(), INITIAL_LIMIT);
        assert!(!c.proven(), "new destinations prove themselves first");
        for _ in 0..INITIAL_LIMIT {
            assert!(c.try_start());
        }
        assert!(!c.try_start(), "at its limit");
        assert_eq!(c.room(), 0);
        c.finish(fast);
        assert!(c.proven());
        assert_eq!(
            (c.in_flight(), c.limit()),
            (INITIAL_LIMIT - 1, INITIAL_LIMIT + 1)
        );
        assert_eq!(c.room(), 2);
        c.finish(Signal::TimedOut);
        assert!(!c.proven(), "a timeout unproves it");
        assert_eq!(c.limit(), 1, "three halved");
        assert!(c.try_start());
        c.finish(Signal::Answered(SLOW_ANSWER));
        assert!(!c.proven(), "a slow answer does not prove it");
        assert_eq!(
            Concurrency::new(1).limit(),
            1,
            "a ceiling below the start wins"
        );
        let fresh = Concurrency::new(8);
        let t = crate::resilience::now();
        assert!(!fresh.stalled(t), "a new destination is given time");
        assert!(fresh.stalled(t + SLOW_ANSWER));
        assert!(
            c.stalled(t + SLOW_ANSWER),
            "unproven, nothing finished since"
        );
        c.finish(Signal::Answered(Duration::from_millis(1)));
        assert!(!c.stalled(t + SLOW_ANSWER * 10), "proven again");
    }
}
