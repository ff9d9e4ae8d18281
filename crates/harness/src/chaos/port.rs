//! Traffic against the worker's health/metrics port for `worker-port-flood`: connections opened
//! and held without a complete request head ([`hold`], counted in [`Holding`]), and `GET`s at a
//! fixed rate, each on a connection of its own ([`get_every`], answers in [`Gets`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hyper::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::latency::percentile;
use crate::http::{self, HttpClient, timed_get};

/// Connections held open to the worker's port during the flood (fewer when this process's
/// descriptor limit would not allow them).
pub const HOLD: usize = 2_000;
/// Descriptors this process keeps for everything else (producer, receiver, probes, database).
const FD_RESERVE: usize = 1_000;
/// What half the held connections send: the start of a request head, never finished.
const PARTIAL_HEAD: &[u8] = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ";
/// The longest a `/healthz` probe or `/metrics` request may take to count as answered.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Connections to hold: [`HOLD`], or fewer when `limit` (this process's descriptors) minus
/// `open` and [`FD_RESERVE`] would not allow it.
pub fn hold_count(limit: Option<u64>, open: usize) -> usize {
    let limit = limit.map_or(usize::MAX, |l| usize::try_from(l).unwrap_or(usize::MAX));
    HOLD.min(limit.saturating_sub(open + FD_RESERVE))
}

/// What the held connections met.
#[derive(Default)]
pub struct Holding {
    /// Connections opened (the handshake completed, as this side sees it).
    pub connected: AtomicU64,
    /// Never opened before the flood ended (the kernel dropped their handshakes).
    pub never_connected: AtomicU64,
    /// Held now, and the most held at once.
    pub now: AtomicI64,
    pub peak: AtomicI64,
    /// Closed by the worker before the flood ended, and after how long (sum and max, ms).
    pub cut_off: AtomicU64,
    pub cut_after_ms_sum: AtomicU64,
    pub cut_after_ms_max: AtomicU64,
}

/// One connection: opened (waiting, if need be, until `until`), a partial head sent or nothing,
/// then held until `until` or until the worker closes it.
pub async fn hold(addr: SocketAddr, partial: bool, until: tokio::time::Instant, c: Arc<Holding>) {
    let Ok(Ok(mut stream)) = tokio::time::timeout_at(until, TcpStream::connect(addr)).await else {
        c.never_connected.fetch_add(1, Ordering::Relaxed);
        return;
    };
    c.connected.fetch_add(1, Ordering::Relaxed);
    let now = c.now.fetch_add(1, Ordering::Relaxed) + 1;
    c.peak.fetch_max(now, Ordering::Relaxed);
    let opened = Instant::now();
    if partial {
        let _ = stream.write_all(PARTIAL_HEAD).await;
    }
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout_at(until, stream.read(&mut buf)).await {
            // The flood is over: still held.
            Err(_) => break,
            Ok(Ok(0) | Err(_)) => {
                let after = u64::try_from(opened.elapsed().as_millis()).unwrap_or(u64::MAX);
                c.cut_off.fetch_add(1, Ordering::Relaxed);
                c.cut_after_ms_sum.fetch_add(after, Ordering::Relaxed);
                c.cut_after_ms_max.fetch_max(after, Ordering::Relaxed);
                break;
            }
            // An answer (a 408, say): read on until the worker closes.
            Ok(Ok(_)) => {}
        }
    }
    c.now.fetch_sub(1, Ordering::Relaxed);
}

/// Answers to a series of `GET`s.
#[derive(Debug, Default)]
pub struct Gets {
    /// (sent at, from the start; status; how long the answer took).
    pub answers: Vec<(Duration, Option<StatusCode>, Duration)>,
    /// Not sent: every slot was busy.
    pub skipped: u64,
}

impl Gets {
    fn within(
        &self,
        from: Duration,
        to: Duration,
    ) -> Vec<&(Duration, Option<StatusCode>, Duration)> {
        self.answers
            .iter()
            .filter(|(at, _, _)| *at >= from && *at < to)
            .collect()
    }

    /// (answered 200, asked, slowest) of those sent within `[from, to)`.
    pub fn ok_of(&self, from: Duration, to: Duration) -> (usize, usize, Option<Duration>) {
        let within = self.within(from, to);
        let ok = within
            .iter()
            .filter(|(_, s, _)| *s == Some(StatusCode::OK))
            .count();
        let slowest = within.iter().map(|(_, _, took)| *took).max();
        (ok, within.len(), slowest)
    }

    /// The most requests in a row within `[from, to)` that did not get a 200.
    pub fn longest_failing_run(&self, from: Duration, to: Duration) -> usize {
        let mut within = self.within(from, to);
        within.sort_by_key(|(at, _, _)| *at);
        let (mut longest, mut run) = (0, 0);
        for (_, status, _) in within {
            run = if *status == Some(StatusCode::OK) {
                0
            } else {
                run + 1
            };
            longest = longest.max(run);
        }
        longest
    }

    /// p99 of the answered ones' times within `[from, to)`.
    pub fn p99_answered(&self, from: Duration, to: Duration) -> Option<Duration> {
        let mut took: Vec<Duration> = self
            .within(from, to)
            .iter()
            .filter(|(_, s, _)| s.is_some())
            .map(|(_, _, t)| *t)
            .collect();
        took.sort_unstable();
        percentile(&took, 99.0)
    }
}

/// `GET url` every `every` from `start` until `until`, each on a connection of its own, at most
/// `in_flight` at once (a request whose slot is not free is skipped).
pub async fn get_every(
    url: String,
    every: Duration,
    start: tokio::time::Instant,
    until: tokio::time::Instant,
    in_flight: usize,
) -> Gets {
    let client: HttpClient = http::client(0);
    let slots = Arc::new(Semaphore::new(in_flight));
    let mut tasks = JoinSet::new();
    let mut out = Gets::default();
    for n in 0u32.. {
        let at = start + every * n;
        if at >= until {
            break;
        }
        tokio::time::sleep_until(at).await;
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            out.skipped += 1;
            continue;
        };
        let (client, url) = (client.clone(), url.clone());
        tasks.spawn(async move {
            let (status, took) = timed_get(&client, &url, PROBE_TIMEOUT).await;
            drop(permit);
            (at - start, status, took)
        });
    }
    while let Some(joined) = tasks.join_next().await {
        if let Ok(answer) = joined {
            out.answers.push(answer);
        }
    }
    out.answers.sort_by_key(|a| a.0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_held_connections_fit_the_descriptor_limit() {
        assert_eq!(hold_count(Some(20_000), 50), HOLD);
        assert_eq!(hold_count(None, 50), HOLD);
        assert_eq!(hold_count(Some(1024), 24), 0);
        assert_eq!(hold_count(Some(2_500), 100), 1_400);
    }

    #[test]
    fn gets_are_counted_by_window() {
        let s = |ms| Duration::from_millis(ms);
        let gets = Gets {
            answers: vec![
                (s(0), Some(StatusCode::OK), s(3)),
                (s(500), Some(StatusCode::OK), s(40)),
                (s(1000), None, s(2000)),
                (s(1500), Some(StatusCode::SERVICE_UNAVAILABLE), s(5)),
            ],
            skipped: 0,
        };
        assert_eq!(gets.ok_of(s(0), s(600)), (2, 2, Some(s(40))));
        assert_eq!(gets.ok_of(s(600), s(2000)), (0, 2, Some(s(2000))));
        assert_eq!(gets.p99_answered(s(0), s(2000)), Some(s(40)));
    }
}
