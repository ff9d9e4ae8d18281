//! How many requests one destination may have in flight from this worker: a limit that adapts
//! (additive increase on every answered request, halved on every timeout), bounded by the
//! configured ceiling, so a fast destination can use the whole worker while a slow one is held
//! to a few slots.

use std::sync::atomic::{AtomicUsize, Ordering};

/// The limit a destination starts from (or the ceiling, when lower): enough for a fast
/// destination to be busy at once, few enough that a handful of destinations that hang cannot
/// take every slot before their first timeout.
pub const INITIAL_LIMIT: usize = 8;

/// What an attempt tells the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// The destination answered (any status) or refused at once: one more slot.
    Answered,
    /// No answer within the timeout: half the slots.
    TimedOut,
    /// No request was made (deferred): no change.
    NotSent,
}

/// The next limit after `signal`, within 1..=`ceiling`.
pub fn next_limit(current: usize, signal: Signal, ceiling: usize) -> usize {
    let ceiling = ceiling.max(1);
    let next = match signal {
        Signal::Answered => current.saturating_add(1),
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
}

impl Concurrency {
    pub fn new(ceiling: usize) -> Self {
        let ceiling = ceiling.max(1);
        Self {
            in_flight: AtomicUsize::new(0),
            limit: AtomicUsize::new(INITIAL_LIMIT.min(ceiling)),
            ceiling,
        }
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    pub fn limit(&self) -> usize {
        self.limit.load(Ordering::Acquire)
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
    use super::*;

    #[test]
    fn answers_add_one_slot_up_to_the_ceiling() {
        assert_eq!(next_limit(8, Signal::Answered, 64), 9);
        assert_eq!(next_limit(64, Signal::Answered, 64), 64);
        assert_eq!(next_limit(1, Signal::Answered, 1), 1);
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
        let c = Concurrency::new(64);
        assert_eq!(c.limit(), INITIAL_LIMIT);
        for _ in 0..INITIAL_LIMIT {
            assert!(c.try_start());
        }
        assert!(!c.try_start(), "at its limit");
        assert_eq!(c.room(), 0);
        c.finish(Signal::Answered);
        assert_eq!(
            (c.in_flight(), c.limit()),
            (INITIAL_LIMIT - 1, INITIAL_LIMIT + 1)
        );
        assert_eq!(c.room(), 2);
        c.finish(Signal::TimedOut);
        assert_eq!(c.limit(), INITIAL_LIMIT.div_ceil(2), "9 halved");
        assert_eq!(
            Concurrency::new(2).limit(),
            2,
            "a ceiling below the start wins"
        );
    }
}
