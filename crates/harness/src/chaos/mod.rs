//! `cargo xtask chaos`: faults injected into a running Dispatch, and an account of every
//! accepted event afterwards.
//!
//! Each scenario runs the real binaries (`dispatch-api`, `dispatch-worker`, built as for
//! `bench`) against a private PostgreSQL cluster of its own ([`postgres`], never the machine's
//! shared server, since one scenario stops it) and the counting receiver of
//! [`crate::receiver`] on 127.0.0.1, in a fresh database. Events are POSTed by
//! [`traffic`], which keeps each one's answer; then the fault (see [`scenarios`], the overload
//! scenarios [`slow`] and [`flood`], and the database's side: [`diskfull`] and [`network`]); then a bounded wait until nothing is queued; then
//! [`report::account`] checks every accepted event against what the receiver got and what the
//! database says. docs/reliability.md describes the guarantees, the scenarios and the latest
//! results.

mod diskfull;
mod flood;
mod latency;
mod network;
mod port;
mod postgres;
mod report;
mod scenarios;
mod slow;
mod stage;
mod traffic;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::ValueEnum;
use dispatch_store::admin::{self, url_with_database};
use dispatch_store::migrations;
use dispatch_store::queries::bench::{self as bench_queries, SubscriptionSeed};
use dispatch_store::queries::chaos as queries;
use serde_json::{Map, json};

use self::postgres::ChaosPostgres;
use self::report::Row;
use self::traffic::Producer;
use crate::git_revision;
use crate::http::{self, HttpClient};
use crate::processes::{self, Binaries, Launch, Service};
use crate::receiver::{self, Fault, Receiver};

/// Prefix of every database the suite creates (then `<pid>_<scenario>`).
const DB_PREFIX: &str = "dispatch_chaos_";
/// How long a just-started API or worker gets to become ready.
const READY_WITHIN: Duration = Duration::from_secs(60);
/// After everything arrived: how long to keep listening for late duplicates.
const SETTLE: Duration = Duration::from_secs(1);
/// Requests in flight from the producer.
const CONCURRENCY: usize = 32;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// `kill -9` of a worker in the middle of a busy backlog; a second worker finishes it.
    KillWorker,
    /// PostgreSQL stopped (fast, then as a crash) and started again under load.
    PostgresRestart,
    /// Receivers that answer 500, hang past the timeout, reset connections, trickle bytes.
    BadReceivers,
    /// Workers stopped with SIGTERM under load (a rolling restart): drained, no duplicates.
    Sigterm,
    /// Three workers on one backlog: every delivery exactly once.
    ThreeWorkers,
    /// 1, 4, then 16 destinations that never answer beside a healthy one (worker with shipped
    /// defaults): the healthy one's latency from acceptance to arrival (target p99 < 1 s).
    SlowDestinations,
    /// Thousands of connections held open to the worker's health/metrics port, and /metrics
    /// hammered, while it delivers: deliveries, /healthz probes, the worker's descriptors.
    WorkerPortFlood,
    /// PostgreSQL on a small tmpfs filled under load (needs root to mount; skipped otherwise),
    /// then given room again: only 503s, nothing failed, everything accepted delivered.
    PostgresDiskFull,
    /// The network between a worker and PostgreSQL goes silent (a stalling proxy) while the
    /// worker holds leases: another worker takes over, the first comes back by itself.
    DbBlackhole,
    /// 200 ms added to every round trip to PostgreSQL, for the API and the worker.
    SlowPostgres,
    /// Every scenario above, in that order.
    All,
}

impl Scenario {
    const EACH: [Scenario; 10] = [
        Scenario::KillWorker,
        Scenario::PostgresRestart,
        Scenario::BadReceivers,
        Scenario::Sigterm,
        Scenario::ThreeWorkers,
        Scenario::SlowDestinations,
        Scenario::WorkerPortFlood,
        Scenario::PostgresDiskFull,
        Scenario::DbBlackhole,
        Scenario::SlowPostgres,
    ];

    fn expand(self) -> Vec<Scenario> {
        match self {
            Scenario::All => Self::EACH.to_vec(),
            one => vec![one],
        }
    }

    fn name(self) -> &'static str {
        match self {
            Scenario::KillWorker => "kill-worker",
            Scenario::PostgresRestart => "postgres-restart",
            Scenario::BadReceivers => "bad-receivers",
            Scenario::Sigterm => "sigterm",
            Scenario::ThreeWorkers => "three-workers",
            Scenario::SlowDestinations => "slow-destinations",
            Scenario::WorkerPortFlood => "worker-port-flood",
            Scenario::PostgresDiskFull => "postgres-disk-full",
            Scenario::DbBlackhole => "db-blackhole",
            Scenario::SlowPostgres => "slow-postgres",
            Scenario::All => "all",
        }
    }

    /// Events sent when `--events` is not given.
    fn default_events(self, seconds: u64) -> u64 {
        match self {
            Scenario::KillWorker => 2_000,
            // Paced: 150 events a second.
            Scenario::PostgresRestart => 150 * seconds,
            Scenario::BadReceivers => 300,
            Scenario::Sigterm => 150 * seconds,
            Scenario::ThreeWorkers => 1_500,
            // Paced, per phase: 50 a second to every destination.
            Scenario::SlowDestinations => slow::PER_SEC * seconds,
            Scenario::WorkerPortFlood => flood::PER_SEC * flood::stream_secs(seconds),
            // Paced, padded events until the disk is full.
            Scenario::PostgresDiskFull => diskfull::PER_SEC * seconds,
            // Half before the blackhole, half after it.
            Scenario::DbBlackhole => 2_000,
            Scenario::SlowPostgres => network::SLOW_PER_SEC * seconds,
            Scenario::All => 0,
        }
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Which scenario to run.
    #[arg(long, value_enum, default_value_t = Scenario::All)]
    pub scenario: Scenario,
    /// Events per scenario (default: kill-worker 2000, bad-receivers 300, three-workers 1500;
    /// postgres-restart and sigterm send 150 a second for --seconds; slow-destinations 50 a
    /// second for --seconds in each phase; worker-port-flood 50 a second for --seconds + 5;
    /// postgres-disk-full 200 a second and slow-postgres 150 a second for --seconds;
    /// db-blackhole 2000, half before the blackhole and half after).
    #[arg(long, value_parser = clap::value_parser!(u64).range(10..=100_000))]
    pub events: Option<u64>,
    /// How long the paced scenarios (postgres-restart, sigterm, each phase of
    /// slow-destinations) send; worker-port-flood floods for this minus 5 s (at least 5), with
    /// 5 s of sending before and after. Also the longest wait for the deliveries after sending
    /// (at least 30 s).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(5..=600))]
    pub seconds: u64,
    /// Use debug builds (quicker to build; the suite checks correctness, not speed).
    #[arg(long)]
    pub debug: bool,
}

impl Args {
    fn events(&self, scenario: Scenario) -> u64 {
        self.events
            .unwrap_or_else(|| scenario.default_events(self.seconds))
    }

    /// How long to wait for deliveries once sending is over.
    fn drain_within(&self) -> Duration {
        Duration::from_secs(self.seconds.max(30))
    }
}

/// What every scenario shares.
pub struct Chaos {
    args: Args,
    binaries: Binaries,
    pg: ChaosPostgres,
    client: HttpClient,
    api_key: String,
    logs: PathBuf,
}

/// One scenario's database, receiver and subscriptions.
pub struct Stage {
    pub name: &'static str,
    pub database_url: String,
    pub receiver: Receiver,
    /// (`sub-<n>`, n) of every subscription; each matches every event.
    pub subscriptions: Vec<(String, u32)>,
}

/// A subscription to seed: its receiver fault, the share of requests it hits, a delay.
#[derive(Debug, Clone, Copy)]
pub struct Destination {
    pub fault: Fault,
    pub fail_permille: u32,
    pub delay_ms: u64,
}

impl Destination {
    pub const fn healthy(delay_ms: u64) -> Self {
        Self {
            fault: Fault::Status500,
            fail_permille: 0,
            delay_ms,
        }
    }
}

/// The worker configuration every scenario starts from: retries and circuits quick enough to
/// settle within the scenario's bounds, a lease of 10 s (5 s request timeout + 5 s margin), a
/// fast database connect timeout so an outage is noticed at once, a poll every 200 ms.
pub fn worker_base_env() -> Vec<(String, String)> {
    [
        ("DISPATCH_REQUEST_TIMEOUT_MS", "5000"),
        ("DISPATCH_LEASE_MARGIN_MS", "5000"),
        ("DISPATCH_RETRY_INITIAL_DELAY_MS", "100"),
        ("DISPATCH_RETRY_MAX_DELAY_SECS", "1"),
        ("DISPATCH_RETRY_MAX_ATTEMPTS", "30"),
        ("DISPATCH_BREAKER_OPEN_SECS", "1"),
        ("DISPATCH_DB_CONNECT_TIMEOUT_MS", "1000"),
        ("DISPATCH_SHUTDOWN_GRACE_SECS", "10"),
        ("DISPATCH_POLL_INTERVAL_MS", "200"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// `base` with `overrides` replacing or adding keys.
pub fn with_env(base: &[(String, String)], overrides: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = base
        .iter()
        .filter(|(k, _)| !overrides.iter().any(|(o, _)| o == k))
        .cloned()
        .collect();
    out.extend(
        overrides
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    out
}

pub async fn run(args: Args) -> Result<bool> {
    let binaries = processes::build(args.debug)?;
    let pg = ChaosPostgres::start(&crate::workspace_root())?;
    // The cluster is the suite's own: whatever an interrupted run left in it can go.
    let mut conn = admin::connect(&pg.admin_url()).await?;
    for name in admin::databases_with_prefix(&mut conn, DB_PREFIX).await? {
        eprintln!("chaos: dropping {name}, left by an interrupted run");
        admin::drop_database(&mut conn, &name).await?;
    }
    drop(conn);
    let logs = crate::target_dir().join("chaos");
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    let chaos = Chaos {
        args: args.clone(),
        binaries,
        pg,
        client: http::client(CONCURRENCY + 8),
        api_key: format!(
            "chaos-{:x}-{:016x}",
            std::process::id(),
            receiver::unix_nanos()
        ),
        logs: logs.clone(),
    };
    let started = chrono::Utc::now();
    let mut rows = Vec::new();
    let mut errors = Vec::new();
    for scenario in args.scenario.expand() {
        let events = args.events(scenario);
        eprintln!("chaos: {} ({events} events)", scenario.name());
        let outcome = tokio::select! {
            outcome = scenarios::run(&chaos, scenario, events) => outcome,
            _ = tokio::signal::ctrl_c() => {
                chaos.drop_database(scenario.name()).await;
                bail!("interrupted");
            }
        };
        chaos.drop_database(scenario.name()).await;
        match outcome {
            Ok(each) => {
                for row in each {
                    eprintln!(
                        "chaos: {}: {}/{} delivered, {} duplicates, {} lost: {}",
                        row.scenario,
                        row.accounting.delivered,
                        row.accounting.expected,
                        row.accounting.duplicates,
                        row.accounting.lost,
                        row.verdict()
                    );
                    for check in &row.failed_checks {
                        eprintln!("chaos:   check failed: {check}");
                    }
                    rows.push(row);
                }
            }
            Err(e) => errors.push(format!("{} could not run: {e:#}", scenario.name())),
        }
    }
    let mut context = Map::new();
    context.insert("git".to_owned(), json!(git_revision()));
    context.insert("build".to_owned(), json!(chaos.binaries.profile));
    context.insert(
        "cpus".to_owned(),
        json!(std::thread::available_parallelism().map_or(0, |n| n.get())),
    );
    context.insert(
        "time".to_owned(),
        json!(started.format("%Y-%m-%dT%H:%M:%SZ").to_string()),
    );
    println!();
    print!("{}", report::table(&rows));
    println!();
    let mut lines = String::new();
    for row in &rows {
        let line = row.to_json(&context).to_string();
        println!("{line}");
        lines.push_str(&line);
        lines.push('\n');
    }
    let file = logs.join(format!(
        "results-{}.jsonl",
        started.format("%Y%m%dT%H%M%SZ")
    ));
    match std::fs::write(&file, lines) {
        Ok(()) => eprintln!(
            "chaos: results in {}; process logs in {}",
            file.display(),
            logs.display()
        ),
        Err(e) => eprintln!("chaos: could not write {}: {e}", file.display()),
    }
    for e in &errors {
        eprintln!("chaos: {e}");
    }
    Ok(errors.is_empty() && rows.iter().all(Row::passed))
}

#[cfg(test)]
mod tests;
