//! `worker-port-flood`: the worker's health/metrics port flooded while it delivers. A paced
//! stream of events (50 a second) goes to one healthy destination for the whole scenario: 5 s
//! before the flood, the flood (`--seconds` − 5 s, 15 s by default), 5 s after. During the
//! flood this process opens and holds up to [`HOLD`] TCP connections to the port (half send
//! nothing, half a partial request head, and keep quiet until the flood ends or the worker cuts
//! them off) and asks for `/metrics` 200 times a second (each on a connection of its own, at most
//! 100 at once). Throughout, `/healthz` is probed every 500 ms on a fresh
//! connection, as a kubelet does, and the worker's open descriptors are counted.
//!
//! What must hold: every accepted event delivered (deliveries go on during the flood, p99 under
//! 1 s), every `/healthz` probe answered `200` within [`PROBE_TIMEOUT`], the worker's
//! descriptors bounded (its cap is 32 connections), and the flood really held more connections
//! than that cap. All traffic stays on 127.0.0.1 and is bounded in count and time.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use hyper::StatusCode;
use serde_json::json;
use tokio::task::JoinSet;

use super::latency::{self, Summary, ms, ms_text};
use super::port::{HOLD, Holding, PROBE_TIMEOUT, get_every, hold, hold_count};
use super::report::{Row, exit_text, secs_text};
use super::scenarios::{MAX_IN_FLIGHT, note_refusals, row};
use super::{Chaos, Destination, worker_base_env};
use crate::procfs::{self, PortSockets};

/// Events a second, by default.
pub const PER_SEC: u64 = 50;
/// Sending before and after the flood.
const BEFORE: Duration = Duration::from_secs(5);
const AFTER: Duration = Duration::from_secs(5);
const METRICS_PER_SEC: u32 = 200;
const METRICS_IN_FLIGHT: usize = 100;
const PROBE_EVERY: Duration = Duration::from_millis(500);
const FD_EVERY: Duration = Duration::from_millis(250);
/// The worker's connection cap on its health/metrics port.
const WORKER_CAP: usize = dispatch_worker::health::MAX_CONNECTIONS;
/// The longest /healthz may fail in a row during the flood: far inside a kubelet's liveness
/// window (3 failures 10 s apart by default), so a flood never gets the worker restarted.
const MAX_FAILING: Duration = Duration::from_secs(5);
/// Descriptors the worker may add during the flood: its cap, and some slack.
const FD_GROWTH_LIMIT: usize = WORKER_CAP + 32;

/// How long the flood lasts for `--seconds`.
pub fn flood_secs(seconds: u64) -> u64 {
    seconds.max(10) - 5
}

/// How long the stream runs for `--seconds`: before, during and after the flood.
pub fn stream_secs(seconds: u64) -> u64 {
    BEFORE.as_secs() + flood_secs(seconds) + AFTER.as_secs()
}

fn opt_text<T: ToString>(value: Option<T>) -> String {
    value.map_or_else(|| "?".to_owned(), |v| v.to_string())
}

fn cpu_secs(pid: u32) -> Option<f64> {
    let ticks = procfs::sample(pid)?.cpu_ticks;
    Some(ticks as f64 / procfs::clock_ticks_per_sec() as f64)
}

pub async fn worker_port_flood(chaos: &Chaos, events: u64) -> Result<Row> {
    let seconds = chaos.args.seconds;
    let (flood, total) = (flood_secs(seconds), stream_secs(seconds));
    let per_sec = (events / total).max(1);
    let stage = chaos
        .stage("worker-port-flood", &[Destination::healthy(0)])
        .await?;
    let api_env = Vec::new();
    let worker_env = worker_base_env();
    let launch = chaos.launch(&stage, &api_env, &worker_env);
    let mut services = vec![launch.api()?, launch.worker(1, MAX_IN_FLIGHT)?];
    chaos.ready(&mut services).await?;
    let worker_url = services[1].base_url.clone();
    let worker_pid = services[1].pid;
    let addr: SocketAddr = worker_url
        .trim_start_matches("http://")
        .parse()
        .context("the worker's address")?;
    let own_limit = procfs::own_open_files_limit();
    let count = hold_count(own_limit, procfs::open_fds(std::process::id()).unwrap_or(0));

    let producer = chaos.producer(&stage, &services[0]);
    let started = Instant::now();
    let start = tokio::time::Instant::from_std(started);
    let stream_end = start + Duration::from_secs(total);
    let (flood_start, flood_end) = (start + BEFORE, start + BEFORE + Duration::from_secs(flood));
    let load = tokio::spawn({
        let producer = producer.clone();
        async move { producer.paced(per_sec, total, MAX_IN_FLIGHT).await }
    });
    let probes = tokio::spawn(get_every(
        format!("{worker_url}/healthz"),
        PROBE_EVERY,
        start,
        stream_end,
        8,
    ));
    let fds = tokio::spawn(async move {
        let mut seen = Vec::new();
        while tokio::time::Instant::now() < stream_end {
            if let Some(n) = procfs::open_fds(worker_pid) {
                let port = procfs::port_sockets(addr.port()).unwrap_or_default();
                seen.push((started.elapsed(), n, port));
            }
            tokio::time::sleep(FD_EVERY).await;
        }
        seen
    });

    tokio::time::sleep_until(flood_start).await;
    let cpu_flood_start = cpu_secs(worker_pid);
    let holding = Arc::new(Holding::default());
    let mut holders = JoinSet::new();
    for i in 0..count {
        holders.spawn(hold(addr, i % 2 == 1, flood_end, holding.clone()));
    }
    let hammer = tokio::spawn(get_every(
        format!("{worker_url}/metrics"),
        Duration::from_secs(1) / METRICS_PER_SEC,
        flood_start,
        flood_end,
        METRICS_IN_FLIGHT,
    ));
    tokio::time::sleep_until(flood_end).await;
    let cpu_flood_end = cpu_secs(worker_pid);
    while holders.join_next().await.is_some() {}
    let metrics = hammer.await.context("the /metrics task")?;
    let sent = load.await.context("the producer task")??;
    let probes = probes.await.context("the probe task")?;
    let fds = fds.await.context("the descriptor task")?;
    let accepted = sent.accepted_ids(&producer);
    let drained = chaos
        .drain(&stage, accepted.len() as u64, chaos.args.drain_within())
        .await;
    let mut worker = services.pop().context("the worker")?;
    let exit = worker.terminate(Duration::from_secs(20)).await;
    for s in services {
        s.stop().await;
    }

    let mut row = row(&stage, sent.sent());
    note_refusals(&mut row, &sent);
    if !drained {
        row.notes.push("did not drain in time".to_owned());
    }
    chaos.finish(&stage, &mut row, &accepted, started).await?;

    // Windows, from the start of sending.
    let (b, f, e) = (BEFORE, BEFORE + Duration::from_secs(flood), Duration::MAX);
    let timed = latency::join(&sent.accepted_at(&producer), &stage.receiver.arrivals(0));
    let window = |from: tokio::time::Instant, to: Option<tokio::time::Instant>| {
        Summary::of(&timed, Some(from.into_std()), to.map(|t| t.into_std()))
    };
    let (before, during, after) = (
        window(start, Some(flood_start)),
        window(flood_start, Some(flood_end)),
        window(flood_end, None),
    );
    let fd_before = fds
        .iter()
        .filter(|(at, ..)| *at < b)
        .map(|(_, n, _)| *n)
        .max();
    let in_flood: Vec<_> = fds
        .iter()
        .filter(|(at, ..)| *at >= b && *at < f + Duration::from_secs(1))
        .collect();
    let fd_flood = in_flood.iter().map(|(_, n, _)| *n).max();
    let peak_of = |pick: fn(&PortSockets) -> u64| in_flood.iter().map(|(.., p)| pick(p)).max();
    let (queue_peak, syn_peak, established_peak) = (
        peak_of(|p| p.accept_queue),
        peak_of(|p| p.syn_recv),
        peak_of(|p| p.established),
    );
    let cpu_flood = cpu_flood_start.zip(cpu_flood_end).map(|(a, z)| z - a);
    let (probe_ok_before, probe_before, _) = probes.ok_of(Duration::ZERO, b);
    let (probe_ok, probe_total, probe_slowest) = probes.ok_of(b, f);
    let (probe_ok_after, probe_after, _) = probes.ok_of(f, e);
    let first_ok_after = probes
        .answers
        .iter()
        .find(|(at, s, _)| *at >= f && *s == Some(StatusCode::OK))
        .map(|(at, _, _)| *at - f);
    let (metrics_ok, metrics_total, _) = metrics.ok_of(Duration::ZERO, Duration::MAX);
    let metrics_ok_at: Vec<Duration> = metrics
        .answers
        .iter()
        .filter(|(_, s, _)| *s == Some(StatusCode::OK))
        .map(|(at, ..)| *at)
        .collect();
    let h = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let cut_off = h(&holding.cut_off);
    let held_peak = holding.peak.load(Ordering::Relaxed);
    row.notes.push(format!(
        "{per_sec} events/s for {total}s, flood {flood}s from {}s: delivered before {}/{} ({}), \
         during {}/{} ({}), after {}/{} ({})",
        BEFORE.as_secs(),
        before.delivered,
        before.accepted,
        before.text(),
        during.delivered,
        during.accepted,
        during.text(),
        after.delivered,
        after.accepted,
        after.text()
    ));
    row.notes.push(format!(
        "flood: {count} connections asked for{}, {} opened (peak {held_peak} held at once), {} \
         never got through, {cut_off} cut off by the worker (after {} ms on average, at most {} \
         ms); /metrics {metrics_ok}/{metrics_total} answered 200 within {} s ({} skipped, slots \
         busy), answer p99 {}",
        if count < HOLD {
            format!(" (not {HOLD}: this process may open {own_limit:?} files)")
        } else {
            String::new()
        },
        h(&holding.connected),
        h(&holding.never_connected),
        h(&holding.cut_after_ms_sum)
            .checked_div(cut_off)
            .unwrap_or(0),
        h(&holding.cut_after_ms_max),
        PROBE_TIMEOUT.as_secs(),
        metrics.skipped,
        ms_text(metrics.p99_answered(Duration::ZERO, Duration::MAX)),
    ));
    row.notes.push(format!(
        "/healthz: {probe_ok_before}/{probe_before} before, {probe_ok}/{probe_total} during \
         (slowest {}), {probe_ok_after}/{probe_after} after (first 200 {} after the flood); \
         worker fds {} before, {} at the flood's peak; worker CPU {} s during the flood; {} {}; \
         the port at the flood's peak: accept queue {}, {} SYN_RECV, {} established",
        ms_text(probe_slowest),
        secs_text(first_ok_after),
        opt_text(fd_before),
        opt_text(fd_flood),
        cpu_flood.map_or_else(|| "?".to_owned(), |s| format!("{s:.2}")),
        worker.name,
        exit_text(exit),
        opt_text(queue_peak),
        opt_text(syn_peak),
        opt_text(established_peak),
    ));
    if during.accepted == 0 || during.delivered < during.accepted {
        row.failed_checks.push(format!(
            "deliveries did not go on during the flood: {}/{} of its events delivered",
            during.delivered, during.accepted
        ));
    }
    if during.p99.is_none_or(|p| p >= Duration::from_secs(1)) {
        row.failed_checks.push(format!(
            "delivery p99 during the flood {} (before: {}) is not under 1 s",
            ms_text(during.p99),
            ms_text(before.p99)
        ));
    }
    let failing_run =
        PROBE_EVERY * u32::try_from(probes.longest_failing_run(b, f)).unwrap_or(u32::MAX);
    if probe_total == 0 || probe_ok == 0 || failing_run > MAX_FAILING {
        row.failed_checks.push(format!(
            "/healthz answered 200 to {probe_ok} of {probe_total} probes during the flood, \
             failing for up to {} ms in a row (at most {} ms allowed)",
            failing_run.as_millis(),
            MAX_FAILING.as_millis()
        ));
    }
    if held_peak <= WORKER_CAP as i64 {
        row.failed_checks.push(format!(
            "the flood held at most {held_peak} connections: not past the worker's cap"
        ));
    }
    if let (Some(before), Some(peak)) = (fd_before, fd_flood)
        && peak > before + FD_GROWTH_LIMIT
    {
        row.failed_checks.push(format!(
            "the worker's descriptors grew from {before} to {peak} during the flood"
        ));
    }
    if !exit.is_some_and(|s| s.success()) {
        row.failed_checks.push(format!(
            "{} did not exit 0 after SIGTERM ({})",
            worker.name,
            exit_text(exit)
        ));
    }
    row.extra.insert(
        "flood".to_owned(),
        json!({
            "events_per_sec": per_sec,
            "stream_secs": total,
            "flood_secs": flood,
            "deliveries": {
                "before": before.to_json(),
                "during": during.to_json(),
                "after": after.to_json(),
            },
            "connections": {
                "asked": count,
                "own_fd_limit": own_limit,
                "opened": h(&holding.connected),
                "never_connected": h(&holding.never_connected),
                "peak_held": held_peak,
                "cut_off_by_worker": cut_off,
                "cut_after_ms_max": h(&holding.cut_after_ms_max),
            },
            "metrics": {
                "per_sec": METRICS_PER_SEC,
                "asked": metrics_total,
                "ok": metrics_ok,
                "skipped": metrics.skipped,
                "p99_ms": ms(metrics.p99_answered(Duration::ZERO, Duration::MAX)),
                // From the flood's start: when the first and the last 200 were asked for.
                "answered_200_asked_at_secs": [
                    metrics_ok_at.first().map(Duration::as_secs_f64),
                    metrics_ok_at.last().map(Duration::as_secs_f64),
                ],
            },
            "healthz": {
                "before": [probe_ok_before, probe_before],
                "during": [probe_ok, probe_total],
                "after": [probe_ok_after, probe_after],
                "slowest_during_ms": ms(probe_slowest),
                "first_ok_after_flood_secs": first_ok_after.map(|d| d.as_secs_f64()),
                // Each probe: [sent at (s from the start of sending), status or null, ms].
                "probes": probes
                    .answers
                    .iter()
                    .map(|(at, s, took)| json!([at.as_secs_f64(), s.map(|s| s.as_u16()), ms(Some(*took))]))
                    .collect::<Vec<_>>(),
            },
            "worker_fds": { "before": fd_before, "flood_peak": fd_flood },
            "port_at_flood_peak": {
                "accept_queue": queue_peak,
                "syn_recv": syn_peak,
                "established": established_peak,
            },
            "worker_cpu_secs_during_flood": cpu_flood,
        }),
    );
    Ok(row)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flood_fits_the_seconds() {
        assert_eq!((flood_secs(20), stream_secs(20)), (15, 25));
        assert_eq!((flood_secs(5), stream_secs(5)), (5, 15));
        assert_eq!(flood_secs(60), 55);
    }
}
