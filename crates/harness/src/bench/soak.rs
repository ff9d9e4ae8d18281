//! `soak`: a fixed offered rate for a long time, reported per window: what was ingested and
//! delivered in each window, the backlog at its end, the latency of the deliveries that arrived
//! in it, and the resident memory of the API and the workers.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::task::JoinHandle;

use super::stats::{per_second, percentile};
use crate::procfs;

/// Resident memory (`VmRSS`, KiB) of each service at one moment, `elapsed` after the start.
#[derive(Debug, Clone, PartialEq)]
pub struct RssSample {
    pub elapsed: Duration,
    /// `(service name, KiB)`; a service that could not be read is left out.
    pub rss_kib: Vec<(String, u64)>,
}

impl RssSample {
    pub fn take(started: Instant, services: &[(String, u32)]) -> Self {
        Self {
            elapsed: started.elapsed(),
            rss_kib: services
                .iter()
                .filter_map(|(name, pid)| Some((name.clone(), procfs::sample(*pid)?.rss_kib)))
                .collect(),
        }
    }

    /// MiB of the API (`api`) or of the workers (`worker…`, summed).
    pub fn mib_of(&self, prefix: &str) -> Option<f64> {
        let matching: Vec<u64> = self
            .rss_kib
            .iter()
            .filter(|(n, _)| n.starts_with(prefix))
            .map(|(_, k)| *k)
            .collect();
        (!matching.is_empty()).then(|| matching.iter().sum::<u64>() as f64 / 1024.0)
    }
}

/// Samples the services' RSS at the start and at every window boundary, until stopped.
pub struct RssSampler {
    samples: Arc<Mutex<Vec<RssSample>>>,
    task: JoinHandle<()>,
    started: Instant,
    services: Vec<(String, u32)>,
}

impl RssSampler {
    pub fn start(started: Instant, services: Vec<(String, u32)>, every: Duration) -> Self {
        let samples = Arc::new(Mutex::new(vec![RssSample::take(started, &services)]));
        let task = tokio::spawn({
            let (samples, services) = (samples.clone(), services.clone());
            async move {
                let start = tokio::time::Instant::from_std(started);
                for n in 1u32.. {
                    tokio::time::sleep_until(start + every * n).await;
                    let sample = RssSample::take(started, &services);
                    samples
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(sample);
                }
            }
        });
        Self {
            samples,
            task,
            started,
            services,
        }
    }

    /// Stops sampling, takes one last sample, and returns them all in time order.
    pub fn finish(self) -> Vec<RssSample> {
        self.task.abort();
        let mut samples = self
            .samples
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        samples.push(RssSample::take(self.started, &self.services));
        samples
    }
}

/// One window's figures.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    pub start_secs: u64,
    pub ingested_per_sec: f64,
    pub delivered_per_sec: f64,
    /// Accepted events minus first deliveries, from the start to the window's end.
    pub backlog: i64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub api_rss_mib: Option<f64>,
    pub worker_rss_mib: Option<f64>,
}

/// The windows of width `width` from the start to the last acceptance or delivery. `accepted`
/// holds when each event was accepted and `delivered` when each first delivery arrived, with
/// its latency in ns; both are offsets from the start, in any order. The RSS of a window is the
/// first sample taken at or after its end (the last one, for the last window). The last window
/// ends with the last event, and its rates are over that shorter time.
pub fn windows(
    width: Duration,
    accepted: &[Duration],
    delivered: &[(Duration, u64)],
    rss: &[RssSample],
) -> Vec<Window> {
    let width_ns = width.as_nanos().max(1);
    let index = |d: &Duration| usize::try_from(d.as_nanos() / width_ns).unwrap_or(usize::MAX);
    let last = accepted
        .iter()
        .chain(delivered.iter().map(|(d, _)| d))
        .max()
        .copied();
    let end = last.map_or(0, |d| index(&d).saturating_add(1));
    let mut ingested = vec![0u64; end];
    let mut arrived = vec![0u64; end];
    let mut latencies: Vec<Vec<u64>> = vec![Vec::new(); end];
    for d in accepted {
        ingested[index(d)] += 1;
    }
    for (d, latency) in delivered {
        arrived[index(d)] += 1;
        latencies[index(d)].push(*latency);
    }
    let (mut total_in, mut total_out) = (0i64, 0i64);
    let mut out = Vec::with_capacity(end);
    for (i, lat) in latencies.iter_mut().enumerate() {
        total_in += i64::try_from(ingested[i]).unwrap_or(i64::MAX);
        total_out += i64::try_from(arrived[i]).unwrap_or(i64::MAX);
        lat.sort_unstable();
        let window_end = width * u32::try_from(i + 1).unwrap_or(u32::MAX);
        let sample = rss
            .iter()
            .find(|s| s.elapsed >= window_end)
            .or_else(|| rss.last());
        // The last window ends with the last event: its rates are over the time it covers.
        let start = width * u32::try_from(i).unwrap_or(u32::MAX);
        let covered = last.map_or(width, |l| {
            l.saturating_sub(start)
                .clamp(Duration::from_millis(1), width)
        });
        let length = if i + 1 == end { covered } else { width };
        out.push(Window {
            start_secs: start.as_secs(),
            ingested_per_sec: per_second(ingested[i], length),
            delivered_per_sec: per_second(arrived[i], length),
            backlog: total_in - total_out,
            p50_ms: percentile(lat, 50.0).map(|ns| ns as f64 / 1e6),
            p99_ms: percentile(lat, 99.0).map(|ns| ns as f64 / 1e6),
            api_rss_mib: sample.and_then(|s| s.mib_of("api")),
            worker_rss_mib: sample.and_then(|s| s.mib_of("worker")),
        });
    }
    out
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.digits$}"))
}

/// The windows as an aligned table.
pub fn table(windows: &[Window]) -> String {
    let rows = windows
        .iter()
        .map(|w| {
            vec![
                format!("{}s", w.start_secs),
                format!("{:.0}", w.ingested_per_sec),
                format!("{:.0}", w.delivered_per_sec),
                w.backlog.to_string(),
                opt(w.p50_ms, 1),
                opt(w.p99_ms, 1),
                opt(w.api_rss_mib, 1),
                opt(w.worker_rss_mib, 1),
            ]
        })
        .collect();
    crate::table::render(
        &[
            "from", "ingest/s", "deliv/s", "backlog", "p50 ms", "p99 ms", "api MiB", "wk MiB",
        ],
        rows,
    )
}

pub fn to_json(windows: &[Window]) -> Value {
    let r = |v: f64| (v * 10.0).round() / 10.0;
    Value::Array(
        windows
            .iter()
            .map(|w| {
                json!({
                    "from_secs": w.start_secs,
                    "ingest_per_sec": r(w.ingested_per_sec),
                    "delivered_per_sec": r(w.delivered_per_sec),
                    "backlog": w.backlog,
                    "p50_ms": w.p50_ms.map(r),
                    "p99_ms": w.p99_ms.map(r),
                    "api_rss_mib": w.api_rss_mib.map(r),
                    "worker_rss_mib": w.worker_rss_mib.map(r),
                })
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn figures_fall_into_their_windows() {
        let w = Duration::from_secs(10);
        // 20 accepted in the first window, 10 in the second.
        let accepted: Vec<Duration> = (0..20)
            .map(|i| secs(f64::from(i) * 0.5))
            .chain((0..10).map(|i| secs(10.0 + f64::from(i))))
            .collect();
        // 15 delivered in the first window (1 ms … 15 ms), 15 in the second (100 ms), none later.
        let delivered: Vec<(Duration, u64)> = (1..=15u64)
            .map(|i| (secs(i as f64 * 0.5), i * 1_000_000))
            .chain((0..15).map(|i| (secs(10.0 + f64::from(i) * 0.5), 100_000_000)))
            .collect();
        let rss = vec![
            RssSample {
                elapsed: Duration::ZERO,
                rss_kib: vec![("api".to_owned(), 1024), ("worker-1".to_owned(), 2048)],
            },
            RssSample {
                elapsed: secs(10.001),
                rss_kib: vec![("api".to_owned(), 2048), ("worker-1".to_owned(), 4096)],
            },
            RssSample {
                elapsed: secs(19.5),
                rss_kib: vec![
                    ("api".to_owned(), 3072),
                    ("worker-1".to_owned(), 1024),
                    ("worker-2".to_owned(), 1024),
                ],
            },
        ];
        let out = windows(w, &accepted, &delivered, &rss);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].start_secs, 0);
        assert_eq!(out[0].ingested_per_sec, 2.0);
        assert_eq!(out[0].delivered_per_sec, 1.5);
        assert_eq!(out[0].backlog, 5);
        assert_eq!(out[0].p50_ms, Some(8.0));
        assert_eq!(out[0].p99_ms, Some(15.0));
        assert_eq!(
            (out[0].api_rss_mib, out[0].worker_rss_mib),
            (Some(2.0), Some(4.0))
        );
        assert_eq!(out[1].start_secs, 10);
        assert_eq!(out[1].backlog, 0);
        // The last window covers 10 s … 19 s, the last acceptance.
        assert_eq!(out[1].ingested_per_sec, 10.0 / 9.0);
        assert_eq!(out[1].delivered_per_sec, 15.0 / 9.0);
        assert_eq!(out[1].p99_ms, Some(100.0));
        // No sample after the last window's end: the last one; workers are summed.
        assert_eq!(
            (out[1].api_rss_mib, out[1].worker_rss_mib),
            (Some(3.0), Some(2.0))
        );
        let t = table(&out);
        assert_eq!(t.lines().count(), 4);
        assert!(t.lines().nth(3).is_some_and(|l| l.starts_with("10s")));
        assert_eq!(to_json(&out)[1]["backlog"], 0);
    }

    #[test]
    fn nothing_happened_no_windows() {
        assert!(windows(Duration::from_secs(30), &[], &[], &[]).is_empty());
    }
}
