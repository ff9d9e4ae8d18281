//! Delivery latencies as the overload scenarios measure them: from the producer's acceptance
//! of an event (its `202` came back) to the arrival of its first `200` at the receiver, both on
//! this process's monotonic clock, and their percentiles.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// One accepted event, delivered or not.
#[derive(Debug, Clone, Copy)]
pub struct Timed {
    pub accepted: Instant,
    /// Acceptance to arrival (`None`: it never arrived). An arrival before the producer saw the
    /// `202` (the worker can be that quick) counts as 0.
    pub latency: Option<Duration>,
}

/// `accepted` (event id, acceptance) joined with `arrivals` (event id → first arrival).
pub fn join(accepted: &[(String, Instant)], arrivals: &HashMap<Box<str>, Instant>) -> Vec<Timed> {
    accepted
        .iter()
        .map(|(id, at)| Timed {
            accepted: *at,
            latency: arrivals
                .get(id.as_str())
                .map(|arrived| arrived.saturating_duration_since(*at)),
        })
        .collect()
}

/// The nearest-rank percentile `p` (0 < p <= 100) of `sorted` (ascending).
pub fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    if sorted.is_empty() || !(p > 0.0 && p <= 100.0) {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

/// The events of one window, summed up.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Summary {
    pub accepted: usize,
    pub delivered: usize,
    pub p50: Option<Duration>,
    pub p99: Option<Duration>,
    pub max: Option<Duration>,
}

impl Summary {
    /// The events accepted within `[from, to)` (all of them: `None`, `None`).
    pub fn of(events: &[Timed], from: Option<Instant>, to: Option<Instant>) -> Self {
        let within: Vec<&Timed> = events
            .iter()
            .filter(|e| from.is_none_or(|f| e.accepted >= f) && to.is_none_or(|t| e.accepted < t))
            .collect();
        let mut latencies: Vec<Duration> = within.iter().filter_map(|e| e.latency).collect();
        latencies.sort_unstable();
        Self {
            accepted: within.len(),
            delivered: latencies.len(),
            p50: percentile(&latencies, 50.0),
            p99: percentile(&latencies, 99.0),
            max: latencies.last().copied(),
        }
    }

    /// `p50 12 ms, p99 340 ms, max 512 ms`.
    pub fn text(&self) -> String {
        format!(
            "p50 {}, p99 {}, max {}",
            ms_text(self.p50),
            ms_text(self.p99),
            ms_text(self.max)
        )
    }

    pub fn to_json(self) -> Value {
        json!({
            "accepted": self.accepted,
            "delivered": self.delivered,
            "p50_ms": ms(self.p50),
            "p99_ms": ms(self.p99),
            "max_ms": ms(self.max),
        })
    }
}

/// Milliseconds with one decimal.
pub fn ms(d: Option<Duration>) -> Option<f64> {
    d.map(|d| (d.as_secs_f64() * 10_000.0).round() / 10.0)
}

pub fn ms_text(d: Option<Duration>) -> String {
    ms(d).map_or_else(|| "-".to_owned(), |ms| format!("{ms:.0} ms"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_run_from_acceptance_to_arrival() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let accepted: Vec<(String, Instant)> =
            (0..5u64).map(|i| (format!("e{i}"), at(i * 100))).collect();
        let arrivals: HashMap<Box<str>, Instant> = [
            (Box::from("e0"), at(10)),
            (Box::from("e1"), at(130)),
            // Arrived before the producer saw its 202.
            (Box::from("e2"), at(150)),
            (Box::from("e3"), at(1300)),
            (Box::from("other"), at(1)),
        ]
        .into_iter()
        .collect();
        let events = join(&accepted, &arrivals);
        let all = Summary::of(&events, None, None);
        assert_eq!((all.accepted, all.delivered), (5, 4));
        assert_eq!(all.p50, Some(Duration::from_millis(10)));
        assert_eq!(all.p99, Some(Duration::from_millis(1000)));
        assert_eq!(all.max, Some(Duration::from_millis(1000)));
        let early = Summary::of(&events, None, Some(at(200)));
        assert_eq!((early.accepted, early.delivered), (2, 2));
        assert_eq!(early.p99, Some(Duration::from_millis(30)));
        let late = Summary::of(&events, Some(at(200)), None);
        assert_eq!((late.accepted, late.delivered), (3, 2));
        assert_eq!(late.p50, Some(Duration::ZERO));
        assert_eq!(late.text(), "p50 0 ms, p99 1000 ms, max 1000 ms");
        assert_eq!(Summary::of(&[], None, None).text(), "p50 -, p99 -, max -");
        assert_eq!(late.to_json()["p99_ms"], 1000.0);
    }

    #[test]
    fn nearest_rank_percentiles() {
        let ten: Vec<Duration> = (1..=10).map(Duration::from_millis).collect();
        assert_eq!(percentile(&ten, 50.0), Some(Duration::from_millis(5)));
        assert_eq!(percentile(&ten, 99.0), Some(Duration::from_millis(10)));
        assert_eq!(percentile(&ten, 0.0), None);
        assert_eq!(percentile(&[], 50.0), None);
    }
}
