//! Faults on the path to PostgreSQL, injected by the test-support TCP proxy the suite puts
//! between a service and the cluster:
//!
//! - `db-blackhole`: worker 1 reaches PostgreSQL through the proxy, which is stalled (nothing
//!   forwarded, nothing closed: packets dropped, no reset) while the worker holds leases. Worker
//!   2 (direct) takes the deliveries over once the leases expire; when the network heals, worker
//!   1's late outcomes are fenced off, and it carries on without a restart: worker 2 is stopped
//!   and a second batch is delivered by worker 1 alone. The time to detection is from the stall
//!   to worker 1's first "no answer from the database" in its log.
//! - `slow-postgres`: the API and the worker reach PostgreSQL through the proxy adding 200 ms to
//!   every round trip, under a paced stream beyond what the API can commit at that speed. Nothing
//!   may be lost, no duplicate, and every refusal must be a `503` (the API's bounded pool wait),
//!   never an unbounded queue: the slowest answer is reported.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Result;
use dispatch_store::admin;
use dispatch_store::queries::bench::delivery_tally;
use dispatch_test_support::proxy::TcpProxy;
use serde_json::json;

use super::report::Row;
use super::scenarios::{MAX_IN_FLIGHT, note_refusals, row, wait_until};
use super::{Chaos, Destination, with_env, worker_base_env};

/// The slow scenario's added latency per round trip.
pub const SLOW_ROUND_TRIP: Duration = Duration::from_millis(200);
/// Events a second in the slow scenario: twice what one worker delivers at that latency.
pub const SLOW_PER_SEC: u64 = 150;
/// The slow scenario's longest wait for the backlog (a worker delivers ~75 a second there).
const SLOW_DRAIN: Duration = Duration::from_secs(120);

fn through(proxy: &TcpProxy, url: &str) -> Vec<(String, String)> {
    let url = proxy.url_for(url);
    vec![
        ("DISPATCH_DATABASE_URL".to_owned(), url.clone()),
        ("DATABASE_URL".to_owned(), url),
    ]
}

async fn processing_by(url: &str) -> i64 {
    match admin::connect(url).await {
        Ok(mut conn) => delivery_tally(&mut conn)
            .await
            .map(|t| t.processing)
            .unwrap_or(-1),
        Err(_) => -1,
    }
}

/// How many lines of `path` contain `needle`.
fn lines_with(path: &Path, needle: &str) -> usize {
    std::fs::read_to_string(path)
        .map(|s| s.lines().filter(|l| l.contains(needle)).count())
        .unwrap_or(0)
}

pub async fn db_blackhole(chaos: &Chaos, events: u64) -> Result<Row> {
    let stage = chaos
        .stage("db-blackhole", &[Destination::healthy(100)])
        .await?;
    let proxy = TcpProxy::for_postgres(&stage.database_url).await?;
    let api_env = Vec::new();
    let direct = worker_base_env();
    let cut_off_env = {
        let mut env = direct.clone();
        env.extend(through(&proxy, &stage.database_url));
        env
    };
    let launch = chaos.launch(&stage, &api_env, &cut_off_env);
    let launch_direct = chaos.launch(&stage, &api_env, &direct);
    let mut api = launch.api()?;
    chaos.ready(std::slice::from_mut(&mut api)).await?;
    let producer = chaos.producer(&stage, &api);
    let started = Instant::now();
    // A backlog for worker 1 alone: half the events now, half after the network heals.
    let first = producer
        .closed(events / 2, super::CONCURRENCY, chaos.args.drain_within())
        .await?;
    let mut cut_off = launch.worker(1, MAX_IN_FLIGHT)?;
    chaos.ready(std::slice::from_mut(&mut cut_off)).await?;
    let first_expected = first.accepted_ids(&producer).len() as u64;
    wait_until(chaos.args.drain_within(), || async {
        stage.receiver.unique() >= first_expected / 4
    })
    .await;

    proxy.stall();
    let stalled_at = Instant::now();
    let held = processing_by(&stage.database_url).await;
    let warned_before = lines_with(&cut_off.log, "no answer from the database");
    let detected = wait_until(Duration::from_secs(120), || async {
        lines_with(&cut_off.log, "no answer from the database") > warned_before
    })
    .await
    .then(|| stalled_at.elapsed());

    let mut other = launch_direct.worker(2, MAX_IN_FLIGHT)?;
    chaos.ready(std::slice::from_mut(&mut other)).await?;
    let took_over = chaos
        .drain(&stage, first_expected, chaos.args.drain_within())
        .await;
    let took_over_in = stalled_at.elapsed();
    let stalled_for = stalled_at.elapsed();
    proxy.resume();
    let other_exit = other.terminate(Duration::from_secs(20)).await;

    // Only worker 1 runs now: the second batch proves it came back by itself.
    let resumed_at = Instant::now();
    let later = super::traffic::Producer {
        id_prefix: format!("{}after-", producer.id_prefix),
        ..producer.clone()
    };
    let second = later
        .closed(
            events - events / 2,
            super::CONCURRENCY,
            chaos.args.drain_within(),
        )
        .await?;
    let accepted: Vec<String> = first
        .accepted_ids(&producer)
        .into_iter()
        .chain(second.accepted_ids(&later))
        .collect();
    let expected = accepted.len() as u64;
    let drained = chaos
        .drain(&stage, expected, chaos.args.drain_within())
        .await;
    let back_in = resumed_at.elapsed();
    let cut_off_exit = cut_off.terminate(Duration::from_secs(20)).await;
    api.stop().await;

    let mut row = row(&stage, first.sent() + second.sent());
    row.duplicates_allowed = true;
    note_refusals(&mut row, &first);
    note_refusals(&mut row, &second);
    row.notes.push(format!(
        "worker-1 stalled holding {held} leases for {:.1}s; detected after {}; worker-2 \
         finished the first batch {:.1}s after the stall; after the network healed worker-1 \
         alone delivered the second batch ({:.1}s)",
        stalled_for.as_secs_f64(),
        detected.map_or("never".to_owned(), |d| format!("{:.1}s", d.as_secs_f64())),
        took_over_in.as_secs_f64(),
        back_in.as_secs_f64(),
    ));
    row.extra.insert(
        "blackhole".to_owned(),
        json!({
            "leases_held_at_stall": held,
            "detected_secs": detected.map(|d| d.as_secs_f64()),
            "stalled_secs": stalled_for.as_secs_f64(),
            "taken_over_secs": took_over_in.as_secs_f64(),
            "second_batch_secs": back_in.as_secs_f64(),
        }),
    );
    if held <= 0 {
        row.failed_checks
            .push("worker-1 held no lease when the network went silent".to_owned());
    }
    if detected.is_none() {
        row.failed_checks
            .push("worker-1 never noticed the silent network".to_owned());
    }
    if !took_over {
        row.failed_checks
            .push("worker-2 did not finish the first batch during the blackhole".to_owned());
    }
    if !drained {
        row.failed_checks
            .push("worker-1 did not deliver the second batch after the network healed".to_owned());
    }
    for (name, exit) in [("worker-1", cut_off_exit), ("worker-2", other_exit)] {
        if !exit.is_some_and(|s| s.success()) {
            row.failed_checks
                .push(format!("{name} did not exit 0 after SIGTERM"));
        }
    }
    chaos.finish(&stage, &mut row, &accepted, started).await?;
    Ok(row)
}

pub async fn slow_postgres(chaos: &Chaos, events: u64) -> Result<Row> {
    let stage = chaos
        .stage("slow-postgres", &[Destination::healthy(0)])
        .await?;
    let proxy = TcpProxy::for_postgres(&stage.database_url).await?;
    proxy.set_latency(SLOW_ROUND_TRIP);
    let mut api_env = with_env(&[], &[("DISPATCH_DB_CONNECT_TIMEOUT_MS", "1000")]);
    api_env.extend(through(&proxy, &stage.database_url));
    let mut worker_env = worker_base_env();
    worker_env.extend(through(&proxy, &stage.database_url));
    let launch = chaos.launch(&stage, &api_env, &worker_env);
    let mut services = vec![launch.api()?, launch.worker(1, MAX_IN_FLIGHT)?];
    chaos.ready(&mut services).await?;

    let seconds = chaos.args.seconds;
    let per_sec = (events / seconds).max(1);
    let producer = chaos.producer(&stage, &services[0]);
    let started = Instant::now();
    // Up to 512 requests in flight: more than the API can commit at this speed.
    let sent = producer.paced(per_sec, seconds, 512).await?;
    let accepted = sent.accepted_ids(&producer);
    let expected = accepted.len() as u64 * stage.subscriptions.len() as u64;
    let sent_in = started.elapsed();
    let drained = chaos
        .drain(&stage, expected, chaos.args.drain_within().max(SLOW_DRAIN))
        .await;
    let drained_in = started.elapsed();
    for s in services {
        s.stop().await;
    }

    let mut row = row(&stage, sent.sent());
    note_refusals(&mut row, &sent);
    let mut waits: Vec<Duration> = sent
        .answers
        .iter()
        .map(|a| a.answered_at.saturating_sub(a.sent_at))
        .collect();
    waits.sort();
    let pct = |p: f64| {
        waits
            .get(((waits.len() as f64 * p) as usize).min(waits.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    let refused = sent.refused();
    row.notes.push(format!(
        "{} ms per round trip: answers p50 {} ms, p99 {} ms, slowest {} ms; refused {refused:?}, \
         {} unanswered, {} sends late; sent in {:.0}s, delivered in {:.0}s ({:.0}/s)",
        SLOW_ROUND_TRIP.as_millis(),
        pct(0.5).as_millis(),
        pct(0.99).as_millis(),
        waits.last().copied().unwrap_or_default().as_millis(),
        sent.unanswered(),
        sent.late,
        sent_in.as_secs_f64(),
        drained_in.as_secs_f64(),
        expected as f64 / drained_in.as_secs_f64().max(0.001),
    ));
    row.extra.insert(
        "slow".to_owned(),
        json!({
            "round_trip_ms": SLOW_ROUND_TRIP.as_millis() as u64,
            "answer_p50_ms": pct(0.5).as_millis() as u64,
            "answer_p99_ms": pct(0.99).as_millis() as u64,
            "answer_max_ms": waits.last().copied().unwrap_or_default().as_millis() as u64,
            "refused_by_status": refused.iter().map(|(s, n)| (s.to_string(), json!(n))).collect::<serde_json::Map<_, _>>(),
            "unanswered": sent.unanswered(),
            "delivered_per_sec": expected as f64 / drained_in.as_secs_f64().max(0.001),
        }),
    );
    if refused.keys().any(|&s| s != 503) {
        row.failed_checks
            .push(format!("refusals other than 503: {refused:?}"));
    }
    if sent.unanswered() > 0 {
        row.failed_checks.push(format!(
            "{} requests were never answered (queued without bound)",
            sent.unanswered()
        ));
    }
    if !drained {
        row.notes.push("did not drain in time".to_owned());
    }
    chaos.finish(&stage, &mut row, &accepted, started).await?;
    Ok(row)
}
