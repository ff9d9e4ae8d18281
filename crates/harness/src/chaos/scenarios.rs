//! The five fault scenarios (the overload ones are in [`super::slow`] and [`super::flood`], the
//! database's disk and network in [`super::diskfull`] and [`super::network`]). Each sets its
//! stage (database, subscriptions, receiver faults), starts the real services, sends events,
//! injects its fault, waits (bounded) for the queue to drain, stops the services and returns its
//! [`Row`], with notes saying what the fault looked like from outside and checks that the fault
//! really happened as intended.

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use dispatch_store::admin;
use dispatch_store::queries::bench::delivery_tally;
use dispatch_store::queries::chaos as queries;
use hyper::StatusCode;
use serde_json::json;

use super::postgres::StopMode;
use super::report::{Row, exit_text, secs_text, status_text};
use super::traffic::Sent;
use super::{CONCURRENCY, Chaos, Destination, Scenario, Stage, with_env, worker_base_env};
use crate::http::get_status;
use crate::processes::{Launch, Service};
use crate::receiver::Fault;

mod restart;
mod workers;

use restart::postgres_restart;
use workers::{sigterm, three_workers};

/// Deliveries a worker may have in flight (its default).
pub(super) const MAX_IN_FLIGHT: usize = 64;
/// How long a SIGTERMed worker may take to drain before it counts as hung.
const DRAIN_LIMIT: Duration = Duration::from_secs(20);

/// The scenario's rows: one, or one per phase.
pub async fn run(chaos: &Chaos, scenario: Scenario, events: u64) -> Result<Vec<Row>> {
    let row = match scenario {
        Scenario::KillWorker => kill_worker(chaos, events).await,
        Scenario::PostgresRestart => postgres_restart(chaos, events).await,
        Scenario::BadReceivers => bad_receivers(chaos, events).await,
        Scenario::Sigterm => sigterm(chaos, events).await,
        Scenario::ThreeWorkers => three_workers(chaos, events).await,
        Scenario::SlowDestinations => return super::slow::slow_destinations(chaos, events).await,
        Scenario::WorkerPortFlood => super::flood::worker_port_flood(chaos, events).await,
        Scenario::PostgresDiskFull => {
            return super::diskfull::postgres_disk_full(chaos, events).await;
        }
        Scenario::DbBlackhole => super::network::db_blackhole(chaos, events).await,
        Scenario::SlowPostgres => super::network::slow_postgres(chaos, events).await,
        Scenario::All => bail!("`all` is a list of scenarios, not one"),
    };
    Ok(vec![row?])
}

/// Polls `check` every 50 ms until it holds or `within` passed; returns whether it held.
pub(super) async fn wait_until<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn processing(stage: &Stage) -> i64 {
    match admin::connect(&stage.database_url).await {
        Ok(mut conn) => delivery_tally(&mut conn)
            .await
            .map(|t| t.processing)
            .unwrap_or(-1),
        Err(_) => -1,
    }
}

pub(super) fn row(stage: &Stage, sent: u64) -> Row {
    Row {
        scenario: stage.name.to_owned(),
        sent,
        ..Row::default()
    }
}

fn expected(stage: &Stage, accepted: &[String]) -> u64 {
    (accepted.len() * stage.subscriptions.len()) as u64
}

pub(super) fn note_refusals(row: &mut Row, sent: &Sent) {
    let refused = sent.refused();
    if !refused.is_empty() || sent.unanswered() > 0 {
        row.notes.push(format!(
            "API refused {refused:?}, {} unanswered",
            sent.unanswered()
        ));
    }
}

/// The API, started and ready, and `events` POSTed to it as fast as [`CONCURRENCY`] requests
/// in flight allow.
struct Ingested {
    api: Service,
    sent: Sent,
    accepted: Vec<String>,
    /// When sending began.
    started: Instant,
}

async fn ingest(
    chaos: &Chaos,
    stage: &Stage,
    launch: &Launch<'_>,
    events: u64,
) -> Result<Ingested> {
    let mut api = launch.api()?;
    chaos.ready(std::slice::from_mut(&mut api)).await?;
    let started = Instant::now();
    let producer = chaos.producer(stage, &api);
    let sent = producer
        .closed(events, CONCURRENCY, chaos.args.drain_within())
        .await?;
    let accepted = sent.accepted_ids(&producer);
    Ok(Ingested {
        api,
        sent,
        accepted,
        started,
    })
}

async fn stop_all(services: Vec<Service>) {
    for s in services {
        s.stop().await;
    }
}

/// A backlog ingested through the API with no worker running; worker-1 starts on it and is
/// killed with SIGKILL a third of the way through, its leases still held; worker-2 starts and
/// finishes, taking the dead worker's deliveries over once their leases expire. Requests that
/// were in flight at the kill may have reached the receiver without their outcome being
/// recorded: those are delivered again (at-least-once), counted as duplicates.
async fn kill_worker(chaos: &Chaos, events: u64) -> Result<Row> {
    let stage = chaos
        .stage("kill-worker", &[Destination::healthy(20)])
        .await?;
    let api_env = Vec::new();
    let worker_env = worker_base_env();
    let launch = chaos.launch(&stage, &api_env, &worker_env);
    let Ingested {
        api,
        sent,
        accepted,
        started,
    } = ingest(chaos, &stage, &launch, events).await?;
    let expected = expected(&stage, &accepted);

    let mut first = launch.worker(1, MAX_IN_FLIGHT)?;
    chaos.ready(std::slice::from_mut(&mut first)).await?;
    let reached = wait_until(chaos.args.drain_within(), || async {
        stage.receiver.unique() >= expected / 3
    })
    .await;
    first.kill().await;
    let killed = Instant::now();
    let at_kill = stage.receiver.unique();
    let leased = processing(&stage).await;

    let mut second = launch.worker(2, MAX_IN_FLIGHT)?;
    chaos.ready(std::slice::from_mut(&mut second)).await?;
    let drained = chaos
        .drain(&stage, expected, chaos.args.drain_within())
        .await;
    let finished_in = killed.elapsed();
    stop_all(vec![second, api]).await;

    let mut row = row(&stage, sent.sent());
    row.duplicates_allowed = true;
    row.notes.push(format!(
        "worker-1 killed at {at_kill}/{expected} delivered, holding {leased} leases; \
         worker-2 finished {:.1}s later",
        finished_in.as_secs_f64()
    ));
    note_refusals(&mut row, &sent);
    if !reached {
        row.failed_checks
            .push("worker-1 never delivered a third of the backlog".to_owned());
    }
    if leased <= 0 {
        row.failed_checks
            .push("worker-1 held no lease when it was killed: nothing was in flight".to_owned());
    }
    if !drained {
        row.notes.push("did not drain in time".to_owned());
    }
    row.extra.insert(
        "killed_at_delivered".to_owned(),
        json!({ "delivered": at_kill, "leased": leased, "finished_secs": finished_in.as_secs_f64() }),
    );
    chaos.finish(&stage, &mut row, &accepted, started).await?;
    Ok(row)
}

/// Five subscriptions per event: one healthy, and four whose receivers misbehave on 30% of
/// requests: answer 500, hang past the worker's 1 s timeout, reset the connection, or trickle
/// the answer a byte every 100 ms. Retries (100 ms doubling to 1 s) deliver everything; each
/// kind of fault must be recorded under its failure code, one attempt per misbehaving request.
async fn bad_receivers(chaos: &Chaos, events: u64) -> Result<Row> {
    let faulty = |fault| Destination {
        fault,
        fail_permille: 300,
        delay_ms: 0,
    };
    let stage = chaos
        .stage(
            "bad-receivers",
            &[
                Destination::healthy(0),
                faulty(Fault::Status500),
                faulty(Fault::Hang),
                faulty(Fault::Reset),
                faulty(Fault::Trickle),
            ],
        )
        .await?;
    let api_env = Vec::new();
    let worker_env = with_env(
        &worker_base_env(),
        &[
            ("DISPATCH_REQUEST_TIMEOUT_MS", "1000"),
            ("DISPATCH_LEASE_MARGIN_MS", "1000"),
            ("DISPATCH_POLL_INTERVAL_MS", "200"),
        ],
    );
    let launch = chaos.launch(&stage, &api_env, &worker_env);
    let mut worker = launch.worker(1, MAX_IN_FLIGHT)?;
    chaos.ready(std::slice::from_mut(&mut worker)).await?;
    let Ingested {
        api,
        sent,
        accepted,
        started,
    } = ingest(chaos, &stage, &launch, events).await?;
    let services = vec![worker, api];
    let drained = chaos
        .drain(
            &stage,
            expected(&stage, &accepted),
            chaos.args.drain_within(),
        )
        .await;
    stop_all(services).await;

    let mut row = row(&stage, sent.sent());
    note_refusals(&mut row, &sent);
    if !drained {
        row.notes.push("did not drain in time".to_owned());
    }
    chaos.finish(&stage, &mut row, &accepted, started).await?;
    let r = stage.receiver.received();
    let attempts = |code: &str| {
        row.extra["attempts_by_outcome"]
            .get(code)
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0)
    };
    let pairs = [
        (
            "500",
            "http_status",
            r.failed_answers,
            attempts("http_status"),
        ),
        (
            "hang+trickle",
            "timeout",
            r.hung + r.trickled,
            attempts("timeout"),
        ),
        ("reset", "connection", r.reset, attempts("connection")),
    ];
    let mut seen = Vec::new();
    for (fault, code, made, recorded) in pairs {
        seen.push(format!("{fault}→{code} {recorded}/{made}"));
        if made == 0 {
            row.failed_checks
                .push(format!("the receiver never misbehaved with {fault}"));
        } else if made != recorded {
            row.failed_checks.push(format!(
                "{made} {fault} faults but {recorded} attempts recorded as {code}"
            ));
        }
    }
    row.notes.push(format!("attempts {}", seen.join(", ")));
    Ok(row)
}
