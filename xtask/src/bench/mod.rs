//! `cargo xtask bench`: a reproducible benchmark of Dispatch on 127.0.0.1.
//!
//! For each scenario: a fresh database on the PostgreSQL `pg::find_or_start` finds (or starts,
//! durable), migrated; subscriptions seeded straight into it, pointing at a receiver built in
//! here ([`receiver`]); `dispatch-api` and N `dispatch-worker`s as real child processes
//! ([`processes`]); events POSTed by [`load`] (or a backlog seeded in the database); a wait,
//! bounded, until every expected delivery has arrived; then one [`report::Row`]. Before and after
//! the scenarios, [`ceiling`] measures durable single-row inserts per second at the same
//! concurrency on the same server, and every rate is also reported as a share of it.
//! docs/performance.md describes the method and the latest results.

mod ceiling;
mod load;
mod report;
mod stats;

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::ValueEnum;
use dispatch_store::admin::{self, url_with_database};
use dispatch_store::migrations;
use dispatch_store::queries::bench::{self as queries, Activity, BacklogSeed, SubscriptionSeed};
use serde_json::{Map, json};

use crate::harness::{git_revision, processes, procfs, receiver};

use self::load::{EventTypes, HttpClient, LoadPlan, Pace};
use self::processes::{Binaries, Launch, Service};
use self::procfs::{HostCpu, ProcSample};
use self::receiver::Receiver;
use self::report::Row;

/// Prefix of every database the benchmark creates (then `<pid>_<what>`).
const DB_PREFIX: &str = "dispatch_bench_";
/// How long the ceiling is measured, before and after the scenarios.
const CEILING_SECS: u64 = 5;
/// Events each scenario sends unless `--events` says otherwise.
const STEADY_EVENTS: u64 = 5_000;
const BATCH_EVENTS: u64 = 50_000;
const FANOUT_EVENTS: u64 = 100;
const FANOUT_SUBSCRIPTIONS: u32 = 100;
const MANY_EVENTS: u64 = 10_000;
const MANY_SUBSCRIPTIONS: u32 = 10_000;
const BACKLOG_EVENTS: u64 = 100_000;
const MIXED_EVENTS: u64 = 5_000;
const MIXED_HEALTHY: u32 = 3;
const SCALE_EVENTS: u64 = 20_000;
/// `light`: this many events a second, for this long (or `--seconds`, if shorter).
const LIGHT_RATE: u64 = 200;
const LIGHT_SECS: u64 = 30;
/// The worker's own default; the ceiling of the backlog scenarios is measured at `--concurrency`.
const WORKER_MAX_IN_FLIGHT: usize = 64;
/// Rate limit of the seeded subscriptions: the highest the schema allows, so that the limiter
/// never holds the benchmark back (its cost is still paid).
const RATE_LIMIT: f64 = 100_000.0;
const RATE_BURST: i32 = 100_000;
/// How long a just-started API and workers get to become ready.
const READY_WITHIN: Duration = Duration::from_secs(60);
/// After the last expected delivery: how long to keep listening for late duplicates.
const SETTLE: Duration = Duration::from_millis(500);

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// N events at concurrency C to one subscription: throughput.
    Steady,
    /// A fixed 200 events/s for 30 s to one subscription: latency.
    Light,
    /// N events in `POST /events/batch` requests of 500, to one subscription.
    Batch,
    /// N events, each to 100 subscriptions.
    Fanout,
    /// 10 000 subscriptions, each event matching one of them.
    ManyDestinations,
    /// 100 000 due deliveries queued while no worker runs, then drained.
    Backlog,
    /// One destination failing every request, three healthy ones.
    Mixed,
    /// One backlog drained by 1 worker, then by 3.
    Scale,
    /// Every scenario above, in that order.
    All,
}

impl Scenario {
    const EACH: [Scenario; 8] = [
        Scenario::Steady,
        Scenario::Light,
        Scenario::Batch,
        Scenario::Fanout,
        Scenario::ManyDestinations,
        Scenario::Backlog,
        Scenario::Mixed,
        Scenario::Scale,
    ];

    fn expand(self) -> Vec<Scenario> {
        match self {
            Scenario::All => Self::EACH.to_vec(),
            one => vec![one],
        }
    }

    fn name(self) -> &'static str {
        match self {
            Scenario::Steady => "steady",
            Scenario::Light => "light",
            Scenario::Batch => "batch",
            Scenario::Fanout => "fanout",
            Scenario::ManyDestinations => "many-destinations",
            Scenario::Backlog => "backlog",
            Scenario::Mixed => "mixed",
            Scenario::Scale => "scale",
            Scenario::All => "all",
        }
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Which scenario to run.
    #[arg(long, value_enum, default_value_t = Scenario::Steady)]
    pub scenario: Scenario,
    /// Events per scenario (default: steady 5000, batch 50000, fanout 100
    /// (x100 subscriptions), many-destinations 10000, backlog 100000, mixed 5000, scale
    /// 20000). `light` always sends 200 events/s for its time.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub events: Option<u64>,
    /// Requests in flight from the load generator, and connections of the ceiling measurement.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub concurrency: u32,
    /// Workers to run (`scale` always compares 1 with 3).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=16))]
    pub workers: u32,
    /// Events per request of the `batch` scenario.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub batch_size: u64,
    /// Time limit of each phase: sending stops after it, and deliveries still missing after
    /// it more are reported as missing. `light` sends for min(30, this) seconds.
    #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u64).range(5..=3600))]
    pub seconds: u64,
    /// Use debug builds (a quick smoke run; the figures mean little).
    #[arg(long)]
    pub debug: bool,
    /// Extra configuration for dispatch-api, e.g. `--api-env DISPATCH_DB_MAX_CONNECTIONS=64`
    /// (repeatable; `DISPATCH_*` keys only). Without it the defaults are measured.
    #[arg(long = "api-env", value_name = "KEY=VALUE", value_parser = parse_env)]
    pub api_env: Vec<(String, String)>,
    /// Extra configuration for every dispatch-worker, e.g.
    /// `--worker-env DISPATCH_MAX_IN_FLIGHT=128` (repeatable; `DISPATCH_*` keys only).
    #[arg(long = "worker-env", value_name = "KEY=VALUE", value_parser = parse_env)]
    pub worker_env: Vec<(String, String)>,
}

/// Keys the benchmark sets itself: where the children listen, which database, how they log,
/// the API key the load generator presents.
const RESERVED_ENV: [&str; 5] = [
    "DISPATCH_DATABASE_URL",
    "DISPATCH_ADDR",
    "DISPATCH_LOG_FORMAT",
    "DISPATCH_WORKER_ID",
    "DISPATCH_API_KEYS",
];

fn parse_env(text: &str) -> Result<(String, String), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("expected KEY=VALUE, got {text:?}"))?;
    let well_formed = key.starts_with("DISPATCH_")
        && key
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
    if !well_formed {
        return Err(format!("{key:?} is not a DISPATCH_* configuration key"));
    }
    if RESERVED_ENV.contains(&key) {
        return Err(format!("{key} is set by the benchmark itself"));
    }
    Ok((key.to_owned(), value.to_owned()))
}

/// Refuses a concurrency the server cannot serve: the ceiling opens `concurrency` connections at
/// once, and a few more must stay free for the benchmark's own and the server's reserve.
fn check_connections(concurrency: usize, max_connections: i64) -> Result<()> {
    let needed = i64::try_from(concurrency)
        .unwrap_or(i64::MAX)
        .saturating_add(10);
    if needed > max_connections {
        bail!(
            "--concurrency {concurrency} needs {needed} connections but the server allows \
             max_connections = {max_connections}"
        );
    }
    Ok(())
}

/// One subscription range to seed: `sub-{first}` … pointing at the receiver.
#[derive(Debug, Clone)]
struct Subscriptions {
    first: u32,
    count: u32,
    /// The pattern, or `{pattern}{i}` per subscription when `per_index`.
    pattern: &'static str,
    per_index: bool,
    fail_permille: u32,
}

#[derive(Debug, Clone)]
enum Work {
    /// Events POSTed through the API while the workers run.
    Ingest {
        types: EventTypes,
        pace: Pace,
        /// Deliveries to healthy destinations per accepted event.
        healthy_per_event: u64,
    },
    /// Due deliveries seeded in the database before any worker starts.
    Backlog { events: u64, subscriptions: u32 },
}

#[derive(Debug, Clone)]
struct Spec {
    name: String,
    workers: usize,
    subscriptions: Vec<Subscriptions>,
    work: Work,
}

impl Args {
    fn events_or(&self, default: u64) -> u64 {
        self.events.unwrap_or(default)
    }

    /// The runs a scenario is made of (`scale` is two).
    fn specs(&self, scenario: Scenario) -> Vec<Spec> {
        let workers = self.workers as usize;
        let one = |pattern| Subscriptions {
            first: 0,
            count: 1,
            pattern,
            per_index: false,
            fail_permille: 0,
        };
        let ingest = |types: &str, events: u64, per_event: u64| Work::Ingest {
            types: EventTypes::Fixed(types.to_owned()),
            pace: Pace::Closed { events },
            healthy_per_event: per_event,
        };
        let spec = |subscriptions, work| Spec {
            name: scenario.name().to_owned(),
            workers,
            subscriptions,
            work,
        };
        match scenario {
            Scenario::Steady => vec![spec(
                vec![one("bench.*")],
                ingest("bench.steady", self.events_or(STEADY_EVENTS), 1),
            )],
            Scenario::Light => vec![spec(
                vec![one("bench.*")],
                Work::Ingest {
                    types: EventTypes::Fixed("bench.light".to_owned()),
                    pace: Pace::Rate {
                        per_sec: LIGHT_RATE,
                        seconds: LIGHT_SECS.min(self.seconds),
                    },
                    healthy_per_event: 1,
                },
            )],
            Scenario::Batch => vec![spec(
                vec![one("bench.*")],
                Work::Ingest {
                    types: EventTypes::Fixed("bench.batch".to_owned()),
                    pace: Pace::Batches {
                        events: self.events_or(BATCH_EVENTS),
                        size: self.batch_size,
                    },
                    healthy_per_event: 1,
                },
            )],
            Scenario::Fanout => vec![spec(
                vec![Subscriptions {
                    count: FANOUT_SUBSCRIPTIONS,
                    ..one("*")
                }],
                ingest(
                    "bench.fanout",
                    self.events_or(FANOUT_EVENTS),
                    u64::from(FANOUT_SUBSCRIPTIONS),
                ),
            )],
            Scenario::ManyDestinations => vec![spec(
                vec![Subscriptions {
                    count: MANY_SUBSCRIPTIONS,
                    per_index: true,
                    ..one("bench.d")
                }],
                Work::Ingest {
                    types: EventTypes::Spread {
                        prefix: "bench.d".to_owned(),
                        count: u64::from(MANY_SUBSCRIPTIONS),
                    },
                    pace: Pace::Closed {
                        events: self.events_or(MANY_EVENTS),
                    },
                    healthy_per_event: 1,
                },
            )],
            Scenario::Backlog => vec![spec(
                vec![one("bench.*")],
                Work::Backlog {
                    events: self.events_or(BACKLOG_EVENTS),
                    subscriptions: 1,
                },
            )],
            Scenario::Mixed => vec![spec(
                vec![
                    Subscriptions {
                        count: MIXED_HEALTHY,
                        per_index: true,
                        ..one("bench.h")
                    },
                    Subscriptions {
                        first: MIXED_HEALTHY,
                        fail_permille: 1000,
                        ..one("*")
                    },
                ],
                Work::Ingest {
                    types: EventTypes::Spread {
                        prefix: "bench.h".to_owned(),
                        count: u64::from(MIXED_HEALTHY),
                    },
                    pace: Pace::Closed {
                        events: self.events_or(MIXED_EVENTS),
                    },
                    healthy_per_event: 1,
                },
            )],
            Scenario::Scale => [1, 3]
                .into_iter()
                .map(|n| Spec {
                    name: format!("scale/{n}w"),
                    workers: n,
                    subscriptions: vec![one("bench.*")],
                    work: Work::Backlog {
                        events: self.events_or(SCALE_EVENTS),
                        subscriptions: 1,
                    },
                })
                .collect(),
            Scenario::All => Scenario::EACH.iter().flat_map(|s| self.specs(*s)).collect(),
        }
    }
}

/// CPU counters of the services, the database's backends, this process and the host at one
/// moment.
struct Snapshot {
    services: Vec<(String, Option<ProcSample>)>,
    /// The PostgreSQL backends connected to the scenario's database (empty when the server
    /// does not run on this machine).
    backends: Vec<(u32, ProcSample)>,
    xtask: Option<ProcSample>,
    host: Option<HostCpu>,
    /// The database's activity counters.
    activity: Option<Activity>,
}

impl Snapshot {
    async fn take(services: &[Service], database_url: &str) -> Self {
        let (pids, activity) = match admin::connect(database_url).await {
            Ok(mut conn) => (
                queries::backend_pids(&mut conn).await.unwrap_or_default(),
                queries::activity(&mut conn).await.ok(),
            ),
            Err(_) => (Vec::new(), None),
        };
        let backends = pids
            .into_iter()
            .filter_map(|pid| u32::try_from(pid).ok())
            .filter(|&pid| procfs::is_postgres(pid))
            .filter_map(|pid| Some((pid, procfs::sample(pid)?)))
            .collect();
        Self {
            services: services
                .iter()
                .map(|s| (s.name.clone(), s.sample()))
                .collect(),
            backends,
            xtask: procfs::sample(std::process::id()),
            host: procfs::host_cpu(),
            activity,
        }
    }

    /// CPU seconds per process since `before` (`None`: since each process started). Processes
    /// that had not started at `before`'s time count from zero. `postgres` sums the database's
    /// backends (one that started and ended in between is missed).
    fn cpu_since(&self, before: Option<&Snapshot>, ticks_per_sec: u64) -> Vec<(String, f64)> {
        let secs = |after: Option<ProcSample>, before: Option<ProcSample>| {
            let (a, b) = (
                after.map_or(0, |s| s.cpu_ticks),
                before.map_or(0, |s| s.cpu_ticks),
            );
            a.saturating_sub(b) as f64 / ticks_per_sec as f64
        };
        let mut out: Vec<(String, f64)> = self
            .services
            .iter()
            .map(|(name, after)| {
                let earlier = before
                    .and_then(|b| b.services.iter().find(|(n, _)| n == name))
                    .and_then(|(_, s)| *s);
                (name.clone(), secs(*after, earlier))
            })
            .collect();
        if !self.backends.is_empty() {
            let postgres = self
                .backends
                .iter()
                .map(|(pid, after)| {
                    let earlier = before
                        .and_then(|b| b.backends.iter().find(|(p, _)| p == pid))
                        .map(|(_, s)| *s);
                    secs(Some(*after), earlier)
                })
                .sum();
            out.push(("postgres".to_owned(), postgres));
        }
        out.push((
            "xtask".to_owned(),
            secs(self.xtask, before.and_then(|b| b.xtask)),
        ));
        out
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

struct Bench {
    args: Args,
    binaries: Binaries,
    /// URL of the `postgres` database of the server, for creating and dropping databases.
    admin_url: String,
    logs: PathBuf,
    client: HttpClient,
    ticks_per_sec: u64,
    /// Databases created and not dropped yet.
    created: Mutex<Vec<String>>,
    /// The API key of this run (the API is measured with authentication on, as deployed).
    api_key: String,
    ceiling_tps: f64,
}

impl Bench {
    fn database_name(&self, what: &str) -> String {
        let what: String = what
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        format!("{DB_PREFIX}{}_{}", std::process::id(), what.to_lowercase())
    }

    /// A fresh, migrated database; returns its URL.
    async fn create_database(&self, name: &str) -> Result<String> {
        let mut conn = admin::connect(&self.admin_url).await?;
        admin::drop_database(&mut conn, name).await?;
        admin::create_database(&mut conn, name, None)
            .await
            .with_context(|| format!("creating database {name}"))?;
        self.created
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(name.to_owned());
        let url = url_with_database(&self.admin_url, name);
        migrations::run_pending(&url)
            .await
            .with_context(|| format!("migrating {name}"))?;
        Ok(url)
    }

    async fn drop_database(&self, name: &str) {
        let dropped = async {
            let mut conn = admin::connect(&self.admin_url).await?;
            admin::drop_database(&mut conn, name).await
        }
        .await;
        match dropped {
            Ok(()) => self
                .created
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .retain(|n| n != name),
            Err(e) => eprintln!("bench: could not drop database {name}: {e}"),
        }
    }

    async fn drop_all_created(&self) {
        let names = self
            .created
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        for name in names {
            self.drop_database(&name).await;
        }
    }

    async fn measure_ceiling(&self, when: &str) -> Result<ceiling::Ceiling> {
        let name = self.database_name(&format!("ceiling_{when}"));
        let url = self.create_database(&name).await?;
        let measured = ceiling::measure(
            &url,
            self.args.concurrency as usize,
            Duration::from_secs(CEILING_SECS),
        )
        .await;
        self.drop_database(&name).await;
        let c = measured?;
        let cpu = c.postgres_cpu_secs.map_or_else(String::new, |s| {
            format!(
                ", PostgreSQL CPU {s:.1}s = {:.2} ms a commit",
                s * 1000.0 / c.commits.max(1) as f64
            )
        });
        eprintln!(
            "bench: ceiling ({when}): {:.0} durable single-row inserts/s at {} connections \
             ({} commits in {:.1}s, {} errors{cpu})",
            c.tps,
            c.concurrency,
            c.commits,
            c.elapsed.as_secs_f64(),
            c.errors
        );
        Ok(c)
    }

    async fn run_spec(&self, spec: &Spec) -> Result<Row> {
        let receiver = Receiver::start().await?;
        let name = self.database_name(&spec.name);
        let url = self.create_database(&name).await?;
        let row = self.measure(spec, &receiver, &url).await;
        self.drop_database(&name).await;
        row
    }

    async fn seed_subscriptions(&self, spec: &Spec, receiver: &Receiver, url: &str) -> Result<()> {
        let mut conn = admin::connect(url).await?;
        let url_prefix = receiver.url_prefix();
        for s in &spec.subscriptions {
            let suffix = Receiver::suffix(s.fail_permille, 0);
            let seeded = queries::seed_subscriptions(
                &mut conn,
                &SubscriptionSeed {
                    id_prefix: "sub-",
                    url_prefix: &url_prefix,
                    url_suffix: &suffix,
                    pattern: s.pattern,
                    pattern_per_index: s.per_index,
                    first: i32::try_from(s.first)?,
                    count: i32::try_from(s.count)?,
                    secret: "bench-secret",
                    rate_limit_per_sec: RATE_LIMIT,
                    rate_limit_burst: RATE_BURST,
                },
            )
            .await?;
            if seeded != s.count as usize {
                bail!("seeded {seeded} subscriptions instead of {}", s.count);
            }
        }
        Ok(())
    }

    /// Waits until the receiver has `expected` distinct deliveries, or `within` has passed, or
    /// a service died. Returns whether everything arrived.
    async fn wait_for_deliveries(
        &self,
        receiver: &Receiver,
        expected: u64,
        within: Duration,
        services: &mut [Service],
    ) -> bool {
        let deadline = Instant::now() + within;
        let mut last_report = Instant::now();
        loop {
            let got = receiver.unique();
            if got >= expected {
                return true;
            }
            if Instant::now() >= deadline {
                eprintln!("bench: gave up waiting: {got} of {expected} deliveries arrived");
                return false;
            }
            if let Some(dead) = services.iter_mut().find_map(|s| s.exited_name()) {
                eprintln!("bench: {dead} exited; {got} of {expected} deliveries arrived");
                return false;
            }
            if last_report.elapsed() >= Duration::from_secs(10) {
                eprintln!("bench:   … {got} of {expected} deliveries so far");
                last_report = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn measure(&self, spec: &Spec, receiver: &Receiver, url: &str) -> Result<Row> {
        self.seed_subscriptions(spec, receiver, url).await?;
        let launch = Launch {
            binaries: &self.binaries,
            database_url: url,
            logs: &self.logs,
            label: &spec.name.replace('/', "-"),
            api_key: &self.api_key,
            api_env: &self.args.api_env,
            worker_env: &self.args.worker_env,
        };
        let limit = Duration::from_secs(self.args.seconds);
        let mut row = Row {
            scenario: spec.name.clone(),
            workers: spec.workers,
            concurrency: self.args.concurrency as usize,
            ceiling_tps: self.ceiling_tps,
            ..Row::default()
        };
        let mut services: Vec<Service> = Vec::new();
        let (started, before, expected, all_arrived) = match &spec.work {
            Work::Ingest {
                types,
                pace,
                healthy_per_event,
            } => {
                services.push(launch.api()?);
                for i in 1..=spec.workers {
                    services.push(launch.worker(i, WORKER_MAX_IN_FLIGHT)?);
                }
                processes::wait_ready(&self.client, &mut services, READY_WITHIN).await?;
                let before = Snapshot::take(&services, url).await;
                let plan = LoadPlan {
                    url: format!("{}{}", services[0].base_url, pace.path()),
                    id_prefix: format!("{}-", launch.label),
                    types: types.clone(),
                    pace: *pace,
                    concurrency: self.args.concurrency as usize,
                    time_limit: limit,
                    api_key: self.api_key.clone(),
                };
                let started = Instant::now();
                let mut sent = load::run(&self.client, &plan).await?;
                row.events_sent = sent.sent;
                row.events_accepted = sent.accepted;
                row.events_failed = sent.refused + sent.errors;
                row.ingest_per_sec = Some(stats::per_second(sent.accepted, sent.elapsed));
                row.ingest_round_trip = stats::summarize(&mut sent.round_trips_ns);
                row.timed_out |= sent.cut_short;
                if sent.refused + sent.errors > 0 {
                    eprintln!(
                        "bench:   {} events refused (last status {:?}), {} unanswered",
                        sent.refused, sent.last_refusal, sent.errors
                    );
                }
                if sent.late > 0 {
                    row.extra.insert("sends_late".to_owned(), json!(sent.late));
                }
                if let Pace::Batches { size, .. } = pace {
                    row.extra.insert("batch_size".to_owned(), json!(size));
                }
                let expected = (sent.accepted + sent.repeated) * healthy_per_event;
                let arrived = self
                    .wait_for_deliveries(receiver, expected, limit, &mut services)
                    .await;
                (started, before, expected, arrived)
            }
            Work::Backlog {
                events,
                subscriptions,
            } => {
                let mut conn = admin::connect(url).await?;
                let ids: Vec<String> = (0..*subscriptions).map(|i| format!("sub-{i}")).collect();
                let seeding = Instant::now();
                let seeded = queries::seed_backlog(
                    &mut conn,
                    &BacklogSeed {
                        id_prefix: &format!("{}-", launch.label),
                        event_type: "bench.backlog",
                        count: i64::try_from(*events)?,
                        sent_at_ns: &receiver::unix_nanos().to_string(),
                        subscription_ids: &ids,
                    },
                )
                .await?;
                eprintln!(
                    "bench:   seeded {seeded} due deliveries in {:.1}s",
                    seeding.elapsed().as_secs_f64()
                );
                drop(conn);
                let before = Snapshot::take(&[], url).await;
                let started = Instant::now();
                for i in 1..=spec.workers {
                    services.push(launch.worker(i, WORKER_MAX_IN_FLIGHT)?);
                }
                let expected = u64::try_from(seeded)?;
                row.extra.insert("backlog".to_owned(), json!(expected));
                processes::wait_ready(&self.client, &mut services, READY_WITHIN).await?;
                let arrived = self
                    .wait_for_deliveries(receiver, expected, limit, &mut services)
                    .await;
                (started, before, expected, arrived)
            }
        };
        if all_arrived {
            tokio::time::sleep(SETTLE).await;
        }
        row.elapsed_secs = started.elapsed().as_secs_f64();
        let after = Snapshot::take(&services, url).await;
        row.cpu_seconds = after.cpu_since(Some(&before), self.ticks_per_sec);
        row.host_cpu_busy = before
            .host
            .zip(after.host)
            .and_then(|(b, a)| a.busy_since(&b));
        for (name, sample) in &after.services {
            let peak = mib(sample.map_or(0, |s| s.peak_rss_kib));
            if name.starts_with("worker") {
                row.worker_peak_rss_mib = row.worker_peak_rss_mib.max(peak);
            } else {
                row.api_peak_rss_mib = Some(peak);
            }
        }
        row.log_lines = services.iter().map(Service::log_lines).sum();
        for service in services {
            service.stop().await;
        }
        // After the services are gone, so that their backends' counters are all published.
        let mut conn = admin::connect(url).await?;
        row.tally = queries::delivery_tally(&mut conn).await.ok();
        if let (Some(b), Ok(a)) = (before.activity, queries::activity(&mut conn).await) {
            let d = a.since(&b);
            row.extra.insert(
                "db_activity".to_owned(),
                json!({
                    "commits": d.commits,
                    "rollbacks": d.rollbacks,
                    "rows_returned": d.rows_returned,
                    "rows_fetched": d.rows_fetched,
                    "rows_inserted": d.rows_inserted,
                    "rows_updated": d.rows_updated,
                    "rows_deleted": d.rows_deleted,
                    "blocks_hit": d.blocks_hit,
                    "blocks_read": d.blocks_read,
                }),
            );
            if expected > 0 {
                if let Some((_, pg)) = row.cpu_seconds.iter().find(|(n, _)| n == "postgres") {
                    row.extra.insert(
                        "postgres_cpu_ms_per_delivery".to_owned(),
                        json!((pg * 1e6 / expected as f64).round() / 1000.0),
                    );
                }
                row.extra.insert(
                    "commits_per_delivery".to_owned(),
                    json!((d.commits as f64 / expected as f64 * 100.0).round() / 100.0),
                );
            }
        }
        drop(conn);
        let received = receiver.received();
        row.expected = expected;
        row.delivered = received.unique;
        row.duplicates = received.duplicates;
        row.missing = expected.saturating_sub(received.unique);
        row.failed_answers = received.failed_answers;
        row.timed_out |= !all_arrived;
        if received.unique > expected {
            row.extra.insert(
                "unexpected_deliveries".to_owned(),
                json!(received.unique - expected),
            );
        }
        if received.unreadable > 0 {
            row.extra
                .insert("unreadable_requests".to_owned(), json!(received.unreadable));
        }
        let window = received.last.map_or(Duration::ZERO, |last| {
            last.saturating_duration_since(started)
        });
        row.delivered_per_sec = stats::per_second(received.unique.min(expected), window);
        row.latency = stats::summarize(&mut received.latencies_ns.clone());
        Ok(row)
    }
}

/// Drops benchmark databases whose process is gone (left by an interrupted run).
async fn drop_leftovers(admin_url: &str) -> Result<()> {
    let mut conn = admin::connect(admin_url).await?;
    for name in admin::databases_with_prefix(&mut conn, DB_PREFIX).await? {
        let pid = name[DB_PREFIX.len()..].split('_').next().unwrap_or("");
        let alive = !pid.is_empty() && std::path::Path::new("/proc").join(pid).exists();
        if !alive {
            eprintln!("bench: dropping {name}, left by an interrupted run");
            admin::drop_database(&mut conn, &name).await?;
        }
    }
    Ok(())
}

fn summary_line(row: &Row) -> String {
    let latency = row.latency.map_or_else(
        || "no latency".to_owned(),
        |l| format!("p50 {:.1} ms, p99 {:.1} ms", l.p50, l.p99),
    );
    format!(
        "bench: {}: {}/{} delivered, {:.0}/s, {latency}, {} missing, {} duplicates",
        row.scenario,
        row.delivered,
        row.expected,
        row.delivered_per_sec,
        row.missing,
        row.duplicates
    )
}

pub async fn run(args: Args) -> Result<bool> {
    let specs = args
        .scenario
        .expand()
        .into_iter()
        .flat_map(|s| args.specs(s))
        .collect::<Vec<_>>();
    let binaries = processes::build(args.debug)?;
    // Purpose::Dev: a private cluster, if one must be started, is durable like production
    // (a test cluster runs with fsync off, which would inflate every figure).
    let mut pg =
        crate::pg::find_or_start(&crate::workspace_root(), crate::pg::Purpose::Dev).await?;
    let mut conn = admin::connect(&pg.admin_url).await?;
    let facts = queries::server_facts(&mut conn).await?;
    drop(conn);
    check_connections(args.concurrency as usize, facts.max_connections)?;
    if facts.fsync != "on" || facts.synchronous_commit == "off" {
        eprintln!(
            "bench: warning: this server runs with fsync={} synchronous_commit={}: commits are \
             not durable and the figures are not comparable",
            facts.fsync, facts.synchronous_commit
        );
    }
    drop_leftovers(&pg.admin_url).await?;
    let logs = crate::target_dir().join("bench");
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    let mut bench = Bench {
        args: args.clone(),
        binaries,
        admin_url: pg.admin_url.clone(),
        logs: logs.clone(),
        client: load::client(args.concurrency as usize + 8),
        ticks_per_sec: procfs::clock_ticks_per_sec(),
        created: Mutex::new(Vec::new()),
        api_key: format!(
            "bench-{:x}-{:016x}",
            std::process::id(),
            receiver::unix_nanos()
        ),
        ceiling_tps: 0.0,
    };
    let outcome = tokio::select! {
        outcome = run_all(&mut bench, &specs) => outcome,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    // Children were stopped (or, on Ctrl-C, killed when their handles were dropped).
    bench.drop_all_created().await;
    pg.stop();
    let (rows, ceilings, failures) = outcome?;
    let mut context = Map::new();
    context.insert("git".to_owned(), json!(git_revision()));
    context.insert("build".to_owned(), json!(bench.binaries.profile));
    context.insert("postgres".to_owned(), json!(facts.version));
    context.insert(
        "postgres_durability".to_owned(),
        json!(format!(
            "fsync={} synchronous_commit={} full_page_writes={}",
            facts.fsync, facts.synchronous_commit, facts.full_page_writes
        )),
    );
    context.insert(
        "cpus".to_owned(),
        json!(std::thread::available_parallelism().map_or(0, |n| n.get())),
    );
    context.insert(
        "ceiling_tps_measured".to_owned(),
        json!(
            ceilings
                .iter()
                .map(|c| (c.tps * 10.0).round() / 10.0)
                .collect::<Vec<_>>()
        ),
    );
    context.insert("ceiling_secs".to_owned(), json!(CEILING_SECS));
    context.insert(
        "ceiling_postgres_cpu_ms_per_commit".to_owned(),
        json!(
            ceilings
                .iter()
                .map(|c| c
                    .postgres_cpu_secs
                    .map(|s| (s * 1e6 / c.commits.max(1) as f64).round() / 1000.0))
                .collect::<Vec<_>>()
        ),
    );
    for (key, overrides) in [("api_env", &args.api_env), ("worker_env", &args.worker_env)] {
        if !overrides.is_empty() {
            let map: Map<String, serde_json::Value> = overrides
                .iter()
                .map(|(k, v)| (k.clone(), json!(v)))
                .collect();
            context.insert(key.to_owned(), serde_json::Value::Object(map));
        }
    }
    context.insert(
        "time".to_owned(),
        json!(chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()),
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
        chrono::Utc::now().format("%Y%m%dT%H%M%SZ")
    ));
    match std::fs::write(&file, lines) {
        Ok(()) => eprintln!(
            "bench: results in {}; process logs in {}",
            file.display(),
            logs.display()
        ),
        Err(e) => eprintln!("bench: could not write {}: {e}", file.display()),
    }
    for failure in &failures {
        eprintln!("bench: {failure}");
    }
    let clean = failures.is_empty()
        && rows
            .iter()
            .all(|r| r.missing == 0 && r.duplicates == 0 && !r.timed_out && r.events_failed == 0);
    Ok(clean)
}

type Outcome = (Vec<Row>, Vec<ceiling::Ceiling>, Vec<String>);

async fn run_all(bench: &mut Bench, specs: &[Spec]) -> Result<Outcome> {
    let before = bench.measure_ceiling("before").await?;
    bench.ceiling_tps = before.tps;
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    for spec in specs {
        eprintln!(
            "bench: {} ({} worker{}, concurrency {})",
            spec.name,
            spec.workers,
            if spec.workers == 1 { "" } else { "s" },
            bench.args.concurrency
        );
        match bench.run_spec(spec).await {
            Ok(row) => {
                eprintln!("{}", summary_line(&row));
                rows.push(row);
            }
            Err(e) => failures.push(format!("{} failed: {e:#}", spec.name)),
        }
    }
    let after = bench.measure_ceiling("after").await?;
    // Every ratio is against the mean of the two measurements.
    let mean = (before.tps + after.tps) / 2.0;
    for row in &mut rows {
        row.ceiling_tps = mean;
    }
    relate(&mut rows);
    Ok((rows, vec![before, after], failures))
}

/// Figures that compare one scenario with another of the same run.
fn relate(rows: &mut [Row]) {
    let rate_of = |rows: &[Row], name: &str| {
        rows.iter()
            .find(|r| r.scenario == name)
            .map(|r| r.delivered_per_sec)
            .filter(|&r| r > 0.0)
    };
    let steady = rate_of(rows, "steady");
    let one_worker = rate_of(rows, "scale/1w");
    for row in rows.iter_mut() {
        if row.scenario == "mixed"
            && let Some(steady) = steady
        {
            row.extra.insert(
                "healthy_vs_steady".to_owned(),
                json!((row.delivered_per_sec / steady * 1000.0).round() / 1000.0),
            );
        }
        if row.scenario == "scale/3w"
            && let Some(one) = one_worker
        {
            row.extra.insert(
                "speedup_vs_1_worker".to_owned(),
                json!((row.delivered_per_sec / one * 100.0).round() / 100.0),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn parse(argv: &[&str]) -> Result<Args, clap::Error> {
        Cli::try_parse_from(std::iter::once("bench").chain(argv.iter().copied())).map(|c| c.args)
    }

    #[test]
    fn defaults() {
        let a = parse(&[]).expect("defaults parse");
        assert_eq!(a.scenario, Scenario::Steady);
        assert_eq!(a.events, None);
        assert_eq!((a.concurrency, a.workers, a.seconds), (64, 1, 120));
        assert!(!a.debug);
    }

    #[test]
    fn every_scenario_name_parses() {
        for name in [
            "steady",
            "light",
            "batch",
            "fanout",
            "many-destinations",
            "backlog",
            "mixed",
            "scale",
            "all",
        ] {
            let a = parse(&["--scenario", name]).expect(name);
            assert_eq!(a.scenario.name(), name);
        }
        assert!(parse(&["--scenario", "batches"]).is_err());
        assert!(parse(&["--scenario", "many_destinations"]).is_err());
    }

    #[test]
    fn out_of_range_values_are_refused() {
        for bad in [
            &["--events", "0"][..],
            &["--events", "1000001"],
            &["--events", "-5"],
            &["--events", "many"],
            &["--concurrency", "0"],
            &["--concurrency", "257"],
            &["--workers", "0"],
            &["--workers", "17"],
            &["--seconds", "4"],
            &["--batch-size", "0"],
            &["--batch-size", "1001"],
            &["--seconds", "3601"],
            &["--unknown"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} was accepted");
        }
        let a = parse(&[
            "--scenario",
            "scale",
            "--events",
            "2000",
            "--concurrency",
            "8",
            "--workers",
            "2",
            "--seconds",
            "30",
            "--debug",
        ])
        .expect("valid");
        assert_eq!(a.events, Some(2000));
        assert!(a.debug);
    }

    #[test]
    fn extra_configuration_is_dispatch_keys_only() {
        let a = parse(&[
            "--api-env",
            "DISPATCH_DB_MAX_CONNECTIONS=64",
            "--worker-env",
            "DISPATCH_MAX_IN_FLIGHT=128",
            "--worker-env",
            "DISPATCH_POLL_INTERVAL_MS=100",
        ])
        .expect("valid");
        assert_eq!(
            a.api_env,
            [("DISPATCH_DB_MAX_CONNECTIONS".to_owned(), "64".to_owned())]
        );
        assert_eq!(a.worker_env.len(), 2);
        for bad in [
            "DISPATCH_DB_MAX_CONNECTIONS",
            "RUST_LOG=debug",
            "dispatch_x=1",
            "DISPATCH_DATABASE_URL=postgres://elsewhere/x",
            "DISPATCH_ADDR=:80",
            "DISPATCH_API_KEYS=another-key-of-length",
        ] {
            assert!(parse(&["--api-env", bad]).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn concurrency_must_leave_connections_free() {
        assert!(check_connections(64, 100).is_ok());
        assert!(check_connections(90, 100).is_ok());
        let err = check_connections(91, 100).expect_err("too many");
        assert!(err.to_string().contains("max_connections = 100"));
    }

    #[test]
    fn scenarios_expand_into_runs() {
        let a = parse(&["--scenario", "all", "--events", "10", "--seconds", "10"]).expect("ok");
        let names: Vec<String> = Scenario::All
            .expand()
            .into_iter()
            .flat_map(|s| a.specs(s))
            .map(|s| s.name)
            .collect();
        assert_eq!(
            names,
            [
                "steady",
                "light",
                "batch",
                "fanout",
                "many-destinations",
                "backlog",
                "mixed",
                "scale/1w",
                "scale/3w"
            ]
        );
        // The batch scenario posts batches of --batch-size.
        let b = parse(&["--scenario", "batch", "--events", "10", "--batch-size", "4"]).expect("ok");
        assert!(matches!(
            b.specs(Scenario::Batch)[0].work,
            Work::Ingest {
                pace: Pace::Batches {
                    events: 10,
                    size: 4
                },
                ..
            }
        ));
        let light = &a.specs(Scenario::Light)[0];
        assert!(matches!(
            light.work,
            Work::Ingest {
                pace: Pace::Rate {
                    per_sec: 200,
                    seconds: 10
                },
                ..
            }
        ));
        let scale = a.specs(Scenario::Scale);
        assert_eq!(scale[0].workers, 1);
        assert_eq!(scale[1].workers, 3);
        assert!(matches!(scale[1].work, Work::Backlog { events: 10, .. }));
        let mixed = &a.specs(Scenario::Mixed)[0];
        assert_eq!(mixed.subscriptions.len(), 2);
        assert_eq!(mixed.subscriptions[1].fail_permille, 1000);
        assert_eq!(mixed.subscriptions[1].first, MIXED_HEALTHY);
    }

    #[test]
    fn default_sizes_apply_without_events() {
        let a = parse(&[]).expect("ok");
        assert!(matches!(
            a.specs(Scenario::Backlog)[0].work,
            Work::Backlog {
                events: BACKLOG_EVENTS,
                ..
            }
        ));
        assert!(matches!(
            a.specs(Scenario::Steady)[0].work,
            Work::Ingest {
                pace: Pace::Closed {
                    events: STEADY_EVENTS
                },
                ..
            }
        ));
    }

    #[test]
    fn cpu_is_counted_from_the_first_snapshot_or_from_zero() {
        let at = |ticks| ProcSample {
            cpu_ticks: ticks,
            peak_rss_kib: 1,
        };
        let before = Snapshot {
            services: vec![("api".to_owned(), Some(at(100)))],
            backends: vec![(7, at(50))],
            xtask: Some(at(10)),
            host: None,
            activity: None,
        };
        let after = Snapshot {
            services: vec![
                ("api".to_owned(), Some(at(350))),
                ("worker-1".to_owned(), Some(at(40))),
            ],
            backends: vec![(7, at(150)), (8, at(100))],
            xtask: Some(at(60)),
            host: None,
            activity: None,
        };
        assert_eq!(
            after.cpu_since(Some(&before), 100),
            [
                ("api".to_owned(), 2.5),
                ("worker-1".to_owned(), 0.4),
                ("postgres".to_owned(), 2.0),
                ("xtask".to_owned(), 0.5)
            ]
        );
        let since_start = after.cpu_since(None, 100);
        assert_eq!(since_start[0], ("api".to_owned(), 3.5));
        assert_eq!(since_start[2], ("postgres".to_owned(), 2.5));
    }

    #[test]
    fn mixed_and_scale_are_related_to_their_references() {
        let row = |name: &str, rate: f64| Row {
            scenario: name.to_owned(),
            delivered_per_sec: rate,
            ..Row::default()
        };
        let mut rows = vec![
            row("steady", 1000.0),
            row("mixed", 950.0),
            row("scale/1w", 800.0),
            row("scale/3w", 1200.0),
        ];
        relate(&mut rows);
        assert_eq!(rows[1].extra["healthy_vs_steady"], 0.95);
        assert_eq!(rows[3].extra["speedup_vs_1_worker"], 1.5);
    }
}
