//! `slow-destinations`: destinations that never answer beside one that does, on a worker with
//! its shipped defaults. For N in [`PHASES`] (1, 4, 16) hanging destinations, each phase in a
//! fresh database with a fresh worker: every event goes to the healthy destination and to the N
//! hanging ones (whose receiver holds each request for minutes), a paced stream (50 events/s
//! for `--seconds`, 20 by default). The hanging requests stay in flight for the whole phase (the
//! shipped 30 s request timeout outlasts it), so what is measured is how much of the worker the
//! hanging destinations take from the healthy one: its latency from the producer's acceptance
//! of an event to the arrival of its delivery, against the target of p99 < 1 s.
//!
//! At the end of a phase the worker gets SIGTERM (it lets the hanging requests run into their
//! timeout within its shutdown grace, records them and exits). Every accepted event's delivery
//! to the healthy destination must have arrived; its deliveries to the hanging ones are still
//! queued (`pending`, parked or never tried; `retrying` after the timeout; `processing`): those
//! are accounted for as queued to a hanging destination ([`Row::queued_allowed`]), not as lost.

use std::time::{Duration, Instant};

use anyhow::Result;
use dispatch_store::admin;
use dispatch_store::queries::bench::{DeliveryTally, delivery_tally};
use serde_json::json;

use super::latency::{self, Summary, ms_text};
use super::report::{Row, exit_text};
use super::scenarios::{MAX_IN_FLIGHT, note_refusals, row, wait_until};
use super::{Chaos, Destination};
use crate::receiver::Fault;

/// Hanging destinations in each phase, and the phase's name (its database and row).
pub const PHASES: [(usize, &str); 3] = [
    (1, "slow-destinations-1"),
    (4, "slow-destinations-4"),
    (16, "slow-destinations-16"),
];
/// Events a second to every destination, by default.
pub const PER_SEC: u64 = 50;
/// The target for the healthy destination.
const TARGET_P99: Duration = Duration::from_secs(1);
/// After sending: how long the healthy destination's last deliveries may take to arrive.
const TAIL: Duration = Duration::from_secs(5);
/// The worker's shipped request timeout and shutdown grace.
const SHIPPED_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const SHIPPED_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// The request timeout to set, when the shipped one would end hanging requests before the
/// phase does (sending for `seconds`, then up to [`TAIL`]): `None` keeps the shipped 30 s.
pub fn request_timeout(seconds: u64) -> Option<Duration> {
    let phase = Duration::from_secs(seconds) + TAIL;
    (phase + Duration::from_secs(5) > SHIPPED_REQUEST_TIMEOUT)
        .then(|| phase + Duration::from_secs(10))
}

pub async fn slow_destinations(chaos: &Chaos, events: u64) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    for (hanging, name) in PHASES {
        eprintln!("chaos:   {name}: {hanging} hanging destination(s) beside a healthy one");
        let outcome = phase(chaos, name, hanging, events).await;
        chaos.drop_database(name).await;
        rows.push(outcome?);
    }
    Ok(rows)
}

async fn tally(database_url: &str) -> Option<DeliveryTally> {
    let mut conn = admin::connect(database_url).await.ok()?;
    delivery_tally(&mut conn).await.ok()
}

fn tally_json(t: &DeliveryTally) -> serde_json::Value {
    json!({
        "pending": t.pending,
        "processing": t.processing,
        "retrying": t.retrying,
        "delivered": t.delivered,
        "failed": t.failed,
    })
}

async fn phase(chaos: &Chaos, name: &'static str, hanging: usize, events: u64) -> Result<Row> {
    let seconds = chaos.args.seconds;
    let per_sec = (events / seconds).max(1);
    let mut destinations = vec![Destination::healthy(0)];
    destinations.extend(std::iter::repeat_n(
        Destination {
            fault: Fault::Hang,
            fail_permille: 1000,
            delay_ms: 0,
        },
        hanging,
    ));
    let stage = chaos.stage(name, &destinations).await?;
    let timeout = request_timeout(seconds);
    // The shipped defaults: nothing but what the worker needs to run here (and the timeout).
    let worker_env: Vec<(String, String)> = timeout
        .map(|t| {
            (
                "DISPATCH_REQUEST_TIMEOUT_MS".to_owned(),
                t.as_millis().to_string(),
            )
        })
        .into_iter()
        .collect();
    let api_env = Vec::new();
    let launch = chaos.launch(&stage, &api_env, &worker_env);
    let mut api = launch.api()?;
    let mut worker = launch.worker_as_shipped(1)?;
    chaos.ready(std::slice::from_mut(&mut api)).await?;
    chaos.ready(std::slice::from_mut(&mut worker)).await?;

    let producer = chaos.producer(&stage, &api);
    let started = Instant::now();
    let sent = producer.paced(per_sec, seconds, MAX_IN_FLIGHT).await?;
    let accepted = sent.accepted_ids(&producer);
    let accepted_at = sent.accepted_at(&producer);
    // Only the healthy destination answers 200: every pair the receiver has is its.
    let complete = wait_until(TAIL, || async {
        stage.receiver.unique() >= accepted.len() as u64
    })
    .await;
    let phase_secs = started.elapsed().as_secs_f64();
    let at_stop = tally(&stage.database_url).await;
    let held = stage.receiver.received().hung;
    let asked = Instant::now();
    let exit = worker
        .terminate(SHIPPED_SHUTDOWN_GRACE + Duration::from_secs(15))
        .await;
    let took = asked.elapsed();
    api.stop().await;
    let after_stop = tally(&stage.database_url).await;

    let mut row = row(&stage, sent.sent());
    row.queued_allowed = (accepted.len() * hanging) as u64;
    note_refusals(&mut row, &sent);
    chaos.finish(&stage, &mut row, &accepted, started).await?;

    let healthy = latency::join(&accepted_at, &stage.receiver.arrivals(0));
    let summary = Summary::of(&healthy, None, None);
    let over_target = healthy
        .iter()
        .filter(|e| e.latency.is_some_and(|l| l >= TARGET_P99))
        .count();
    let timeout_text = timeout.map_or_else(
        || "the shipped 30 s".to_owned(),
        |t| format!("DISPATCH_REQUEST_TIMEOUT_MS={}", t.as_millis()),
    );
    row.notes.push(format!(
        "{hanging} hanging + 1 healthy, {per_sec}/s for {seconds}s, request timeout {timeout_text}: \
         healthy delivered {}/{}, acceptance→arrival {} ({over_target} ≥ 1 s)",
        summary.delivered,
        summary.accepted,
        summary.text()
    ));
    let (pending, processing, retrying) = at_stop
        .as_ref()
        .map_or((-1, -1, -1), |t| (t.pending, t.processing, t.retrying));
    row.notes.push(format!(
        "hanging: {held} requests held by the receiver; after {phase_secs:.1}s {processing} \
         processing, {pending} pending, {retrying} retrying; {} {} {:.1}s after SIGTERM, leaving \
         {}",
        worker.name,
        exit_text(exit),
        took.as_secs_f64(),
        after_stop.as_ref().map_or_else(
            || "?".to_owned(),
            |t| format!(
                "{} processing, {} pending, {} retrying",
                t.processing, t.pending, t.retrying
            )
        ),
    ));
    if summary.delivered < summary.accepted || !complete {
        row.failed_checks.push(format!(
            "the healthy destination got {} of {} accepted events",
            summary.delivered, summary.accepted
        ));
    }
    if summary.p99.is_none_or(|p99| p99 >= TARGET_P99) {
        row.failed_checks.push(format!(
            "healthy p99 {} is not under the 1 s target",
            ms_text(summary.p99)
        ));
    }
    if held < hanging as u64 {
        row.failed_checks.push(format!(
            "the {hanging} hanging destinations got only {held} requests"
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
        "slow_destinations".to_owned(),
        json!({
            "hanging_destinations": hanging,
            "events_per_sec": per_sec,
            "send_secs": seconds,
            "request_timeout_ms": timeout.unwrap_or(SHIPPED_REQUEST_TIMEOUT).as_millis() as u64,
            "request_timeout_shipped": timeout.is_none(),
            "healthy": summary.to_json(),
            "healthy_at_or_over_1s": over_target,
            "hanging_requests_held": held,
            "at_sigterm": at_stop.map(|t| tally_json(&t)),
            "after_stop": after_stop.map(|t| tally_json(&t)),
            "worker_stop_secs": took.as_secs_f64(),
            "worker_exit": exit.and_then(|s| s.code()),
        }),
    );
    Ok(row)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_timeout_is_kept_while_it_outlasts_the_phase() {
        assert_eq!(request_timeout(20), None);
        assert_eq!(request_timeout(5), None);
        assert_eq!(request_timeout(21), Some(Duration::from_secs(36)));
        assert_eq!(request_timeout(60), Some(Duration::from_secs(75)));
        assert_eq!(PHASES.map(|(n, _)| n), [1, 4, 16]);
    }
}
