//! Latency percentiles and rates.

use std::time::Duration;

/// A latency distribution, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Latency {
    pub count: usize,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

/// The nearest-rank percentile `p` (0 < p <= 100) of `sorted` (ascending): the smallest value
/// such that at least `p` % of the values are less than or equal to it.
pub fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() || !(p > 0.0 && p <= 100.0) {
        return None;
    }
    let n = sorted.len();
    // ceil(p/100 * n) as a 1-based rank; the float product is exact enough for n < 2^50.
    let rank = ((p / 100.0) * n as f64).ceil() as usize;
    sorted.get(rank.clamp(1, n) - 1).copied()
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// Sorts `values_ns` (nanoseconds) and summarises them; `None` when there are none.
pub fn summarize(values_ns: &mut [u64]) -> Option<Latency> {
    values_ns.sort_unstable();
    Some(Latency {
        count: values_ns.len(),
        p50: ms(percentile(values_ns, 50.0)?),
        p90: ms(percentile(values_ns, 90.0)?),
        p99: ms(percentile(values_ns, 99.0)?),
        max: ms(*values_ns.last()?),
    })
}

/// `count` per second over `elapsed`; 0 when nothing happened or no time passed.
pub fn per_second(count: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if count == 0 || secs <= 0.0 {
        0.0
    } else {
        count as f64 / secs
    }
}

/// `value / ceiling`, when there is a ceiling to compare with.
pub fn ratio(value: f64, ceiling: f64) -> Option<f64> {
    (ceiling > 0.0 && value.is_finite()).then(|| value / ceiling)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), Some(50));
        assert_eq!(percentile(&v, 90.0), Some(90));
        assert_eq!(percentile(&v, 99.0), Some(99));
        assert_eq!(percentile(&v, 100.0), Some(100));
        assert_eq!(percentile(&v, 0.1), Some(1));
        // Ten values: p99 is the largest, p50 the fifth.
        let v: Vec<u64> = (1..=10).map(|x| x * 10).collect();
        assert_eq!(percentile(&v, 50.0), Some(50));
        assert_eq!(percentile(&v, 99.0), Some(100));
        assert_eq!(percentile(&v, 91.0), Some(100));
        assert_eq!(percentile(&v, 90.0), Some(90));
    }

    #[test]
    fn percentile_edge_cases() {
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&[7], 50.0), Some(7));
        assert_eq!(percentile(&[7], 99.9), Some(7));
        assert_eq!(percentile(&[1, 2], 0.0), None);
        assert_eq!(percentile(&[1, 2], 100.1), None);
        assert_eq!(percentile(&[1, 2], f64::NAN), None);
    }

    #[test]
    fn summary_sorts_and_converts_to_milliseconds() {
        let mut v: Vec<u64> = (1..=1000).rev().map(|x| x * 1_000_000).collect();
        let s = summarize(&mut v).expect("values");
        assert_eq!(s.count, 1000);
        assert_eq!(s.p50, 500.0);
        assert_eq!(s.p90, 900.0);
        assert_eq!(s.p99, 990.0);
        assert_eq!(s.max, 1000.0);
        assert!(summarize(&mut []).is_none());
    }

    #[test]
    fn rates_and_ratios() {
        assert_eq!(per_second(500, Duration::from_millis(250)), 2000.0);
        assert_eq!(per_second(0, Duration::from_secs(1)), 0.0);
        assert_eq!(per_second(5, Duration::ZERO), 0.0);
        assert_eq!(ratio(50.0, 200.0), Some(0.25));
        assert_eq!(ratio(50.0, 0.0), None);
    }
}
