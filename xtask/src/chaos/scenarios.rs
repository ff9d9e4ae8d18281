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
use crate::harness::http::get_status;
use crate::harness::processes::{Launch, Service};
use crate::harness::receiver::Fault;

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

/// One outage of the database, as seen from outside.
struct Outage {
    mode: StopMode,
    /// From the start of sending.
    down_at: Duration,
    up_at: Duration,
    api_ready_while_down: Option<StatusCode>,
    worker_ready_while_down: Option<StatusCode>,
    /// From `up_at` until the worker's `/readyz` (database and LISTEN connection) said 200.
    worker_ready_after: Option<Duration>,
    /// LISTEN backends in the database once the worker was ready again.
    listening: i64,
}

/// The API and a worker under a steady stream of events while the private PostgreSQL is
/// stopped twice: `pg_ctl stop -m fast` at 20% of the time for 20% of it, then `-m immediate`
/// (a crash: recovery from the WAL at start) at 60% for 15%. The worker polls only once a
/// minute, so picking up events after each outage depends on its LISTEN connection coming back.
async fn postgres_restart(chaos: &Chaos, events: u64) -> Result<Row> {
    let stage = chaos
        .stage("postgres-restart", &[Destination::healthy(0)])
        .await?;
    let api_env = with_env(&[], &[("DISPATCH_DB_CONNECT_TIMEOUT_MS", "1000")]);
    let worker_env = with_env(
        &worker_base_env(),
        &[("DISPATCH_POLL_INTERVAL_MS", "60000")],
    );
    let launch = chaos.launch(&stage, &api_env, &worker_env);
    let mut services = vec![launch.api()?, launch.worker(1, MAX_IN_FLIGHT)?];
    chaos.ready(&mut services).await?;
    let api_ready = format!("{}/readyz", services[0].base_url);
    let worker_ready = format!("{}/readyz", services[1].base_url);

    let seconds = chaos.args.seconds;
    let per_sec = (events / seconds).max(1);
    let producer = chaos.producer(&stage, &services[0]);
    let started = Instant::now();
    let load = tokio::spawn({
        let producer = producer.clone();
        async move { producer.paced(per_sec, seconds, MAX_IN_FLIGHT).await }
    });
    let total = Duration::from_secs(seconds);
    let mut outages = Vec::new();
    for (mode, at, length) in [(StopMode::Fast, 0.2, 0.2), (StopMode::Immediate, 0.6, 0.15)] {
        tokio::time::sleep_until((started + total.mul_f64(at)).into()).await;
        let down_at = started.elapsed();
        tokio::task::block_in_place(|| chaos.pg.stop(mode))?;
        // A moment for the services to notice.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let api_ready_while_down = get_status(&chaos.client, &api_ready).await;
        let worker_ready_while_down = get_status(&chaos.client, &worker_ready).await;
        tokio::time::sleep_until((started + total.mul_f64(at + length)).into()).await;
        tokio::task::block_in_place(|| chaos.pg.start_again())?;
        let up_at = started.elapsed();
        let ready = wait_until(Duration::from_secs(30), || async {
            get_status(&chaos.client, &worker_ready).await == Some(StatusCode::OK)
        })
        .await;
        let worker_ready_after = ready.then(|| started.elapsed().saturating_sub(up_at));
        let listening = match admin::connect(&stage.database_url).await {
            Ok(mut conn) => queries::listening_backends(&mut conn).await.unwrap_or(-1),
            Err(_) => -1,
        };
        outages.push(Outage {
            mode,
            down_at,
            up_at,
            api_ready_while_down,
            worker_ready_while_down,
            worker_ready_after,
            listening,
        });
    }
    let sent = load.await??;
    let accepted = sent.accepted_ids(&producer);
    let expected = expected(&stage, &accepted);
    let drained = chaos
        .drain(&stage, expected, chaos.args.drain_within())
        .await;
    stop_all(services).await;

    let mut row = row(&stage, sent.sent());
    let mut json_outages = Vec::new();
    for o in &outages {
        let recovered = sent.first_accepted_after(o.up_at);
        let (refused, unanswered) = sent.failures_between(o.down_at, recovered.unwrap_or(o.up_at));
        let api_after = recovered.map(|r| r.saturating_sub(o.up_at));
        row.notes.push(format!(
            "{} stop {:.1}s: {refused} refused, {unanswered} unanswered; API /readyz {}, \
             worker /readyz {} while down; API accepting {} and worker listening {} after start",
            o.mode.name(),
            (o.up_at - o.down_at).as_secs_f64(),
            status_text(o.api_ready_while_down),
            status_text(o.worker_ready_while_down),
            secs_text(api_after),
            secs_text(o.worker_ready_after),
        ));
        if refused == 0 {
            row.failed_checks.push(format!(
                "no refusal seen during the {} outage",
                o.mode.name()
            ));
        }
        if api_after.is_none() {
            row.failed_checks.push(format!(
                "the API accepted nothing after the {} outage",
                o.mode.name()
            ));
        }
        if o.worker_ready_after.is_none() || o.listening < 1 {
            row.failed_checks.push(format!(
                "the worker's LISTEN connection did not come back after the {} outage",
                o.mode.name()
            ));
        }
        json_outages.push(json!({
            "mode": o.mode.name(),
            "down_at_secs": o.down_at.as_secs_f64(),
            "down_secs": (o.up_at - o.down_at).as_secs_f64(),
            "refused": refused,
            "unanswered": unanswered,
            "api_readyz_while_down": o.api_ready_while_down.map(|s| s.as_u16()),
            "worker_readyz_while_down": o.worker_ready_while_down.map(|s| s.as_u16()),
            "api_recovered_secs": api_after.map(|d| d.as_secs_f64()),
            "worker_ready_secs": o.worker_ready_after.map(|d| d.as_secs_f64()),
            "listening_backends": o.listening,
        }));
    }
    row.extra.insert("outages".to_owned(), json!(json_outages));
    row.extra.insert(
        "refused_by_status".to_owned(),
        json!(
            sent.refused()
                .iter()
                .map(|(s, n)| (s.to_string(), json!(n)))
                .collect::<serde_json::Map<_, _>>()
        ),
    );
    row.extra.insert("sends_late".to_owned(), json!(sent.late));
    if sent.refused().keys().any(|&s| s != 503) {
        row.failed_checks
            .push(format!("refusals other than 503: {:?}", sent.refused()));
    }
    if !drained {
        row.notes.push("did not drain in time".to_owned());
    }
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

/// A rolling restart under a steady stream of events: worker-1 runs; at a third of the time
/// worker-2 starts and worker-1 gets SIGTERM; half way the API is replaced the same way (the
/// producer moves to a second API, the first gets SIGTERM with requests in flight); at two
/// thirds worker-3 starts and worker-2 gets SIGTERM. Every receiver request takes 100 ms, so
/// each worker's SIGTERM lands with deliveries in flight: they must finish and be recorded (or
/// be handed back) — never sent twice — and each process must exit 0 by itself.
async fn sigterm(chaos: &Chaos, events: u64) -> Result<Row> {
    let stage = chaos.stage("sigterm", &[Destination::healthy(100)]).await?;
    let api_env = Vec::new();
    let worker_env = worker_base_env();
    let launch = chaos.launch(&stage, &api_env, &worker_env);
    let mut api = launch.api()?;
    let mut current = launch.worker(1, MAX_IN_FLIGHT)?;
    chaos.ready(std::slice::from_mut(&mut api)).await?;
    chaos.ready(std::slice::from_mut(&mut current)).await?;

    let seconds = chaos.args.seconds;
    let per_sec = (events / seconds).max(1);
    let producer = chaos.producer(&stage, &api);
    let started = Instant::now();
    let load = tokio::spawn({
        let producer = producer.clone();
        async move { producer.paced(per_sec, seconds, MAX_IN_FLIGHT).await }
    });
    let total = Duration::from_secs(seconds);
    let mut stops = Vec::new();
    let mut api_stop = None;
    for (next, at) in [(2, 1.0 / 3.0), (3, 2.0 / 3.0)] {
        tokio::time::sleep_until((started + total.mul_f64(at)).into()).await;
        let mut successor = launch.worker(next, MAX_IN_FLIGHT)?;
        chaos.ready(std::slice::from_mut(&mut successor)).await?;
        let in_flight = processing(&stage).await;
        let asked = Instant::now();
        let status = current.terminate(DRAIN_LIMIT).await;
        stops.push((current.name.clone(), in_flight, status, asked.elapsed()));
        current = successor;
        if next == 2 {
            // Half way: the API too, handing the producer over to a second one first.
            tokio::time::sleep_until((started + total.mul_f64(0.5)).into()).await;
            let mut successor = launch.api_named("api-2")?;
            chaos.ready(std::slice::from_mut(&mut successor)).await?;
            producer.retarget(format!("{}/events", successor.base_url));
            let asked = Instant::now();
            let status = api.terminate(DRAIN_LIMIT).await;
            api_stop = Some((api.name.clone(), status, asked.elapsed()));
            api = successor;
        }
    }
    let sent = load.await??;
    let accepted = sent.accepted_ids(&producer);
    let drained = chaos
        .drain(
            &stage,
            expected(&stage, &accepted),
            chaos.args.drain_within(),
        )
        .await;
    let asked = Instant::now();
    let last = current.terminate(DRAIN_LIMIT).await;
    stops.push((current.name.clone(), 0, last, asked.elapsed()));
    api.stop().await;

    let mut row = row(&stage, sent.sent());
    note_refusals(&mut row, &sent);
    let mut said = Vec::new();
    for (name, in_flight, status, took) in &stops {
        let exit = exit_text(*status);
        said.push(format!(
            "{name} {exit} in {:.1}s ({in_flight} processing at the signal)",
            took.as_secs_f64()
        ));
        if !status.is_some_and(|s| s.success()) {
            row.failed_checks
                .push(format!("{name} did not exit 0 after SIGTERM ({exit})"));
        }
    }
    if let Some((name, status, took)) = api_stop {
        let exit = exit_text(status);
        said.push(format!("{name} {exit} in {:.1}s", took.as_secs_f64()));
        if !status.is_some_and(|s| s.success()) {
            row.failed_checks
                .push(format!("{name} did not exit 0 after SIGTERM ({exit})"));
        }
    }
    row.notes.push(said.join(", "));
    if stops
        .iter()
        .take(2)
        .all(|(_, in_flight, _, _)| *in_flight <= 0)
    {
        row.failed_checks
            .push("no delivery was in flight at either SIGTERM".to_owned());
    }
    if !drained {
        row.notes.push("did not drain in time".to_owned());
    }
    chaos.finish(&stage, &mut row, &accepted, started).await?;
    Ok(row)
}

/// A backlog (ingested through the API with no worker running) to four subscriptions, then
/// three workers started together on it: with no crash, every delivery is claimed once, sent
/// once, and recorded with exactly one attempt.
async fn three_workers(chaos: &Chaos, events: u64) -> Result<Row> {
    let stage = chaos
        .stage("three-workers", &[Destination::healthy(2); 4])
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
    let mut workers = Vec::new();
    for i in 1..=3 {
        workers.push(launch.worker(i, MAX_IN_FLIGHT)?);
    }
    chaos.ready(&mut workers).await?;
    let drained = chaos
        .drain(
            &stage,
            expected(&stage, &accepted),
            chaos.args.drain_within(),
        )
        .await;
    workers.push(api);
    stop_all(workers).await;

    let mut row = row(&stage, sent.sent());
    note_refusals(&mut row, &sent);
    if !drained {
        row.notes.push("did not drain in time".to_owned());
    }
    let mut conn = admin::connect(&stage.database_url).await?;
    let states = queries::delivery_states(&mut conn).await?;
    drop(conn);
    let not_once = states
        .iter()
        .filter(|s| s.attempts != 1 || s.recorded_attempts != 1)
        .count();
    row.notes.push(format!(
        "{} deliveries, {not_once} with other than one attempt",
        states.len()
    ));
    if not_once > 0 {
        row.failed_checks.push(format!(
            "{not_once} deliveries were attempted other than exactly once"
        ));
    }
    chaos.finish(&stage, &mut row, &accepted, started).await?;
    Ok(row)
}
