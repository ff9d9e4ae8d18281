//! `cargo xtask bench`: a reproducible benchmark of Dispatch on 127.0.0.1.
//!
//! The server is a private PostgreSQL cluster `initdb`'d for the run with PostgreSQL's default
//! settings, unless one is given explicitly ([`cluster`]). For each scenario ([`scenarios`]): a
//! fresh database, migrated; subscriptions seeded straight into it, pointing at a receiver built
//! in here ([`receiver`]); the database prepared (history seeded, autovacuum off) when the
//! scenario asks; `dispatch-api` and N `dispatch-worker`s as real child processes with the
//! shipped defaults ([`processes`]); events POSTed by [`load`] (or a backlog seeded in the
//! database); a wait, bounded, until every expected delivery has arrived; then one
//! [`report::Row`] per run ([`measure`]). Before and after the scenarios, [`ceiling`] measures
//! durable one-row inserts per second with `pgbench` at the same concurrency on the same server,
//! and every rate is also reported as a share of it ([`output`]); docs/performance.md has the
//! method and results. `list` ([`list`]) times list pages over a seeded month of history instead
//! (no worker, no ceiling); `tenants` ([`tenants`]) makes its tenants through the API.

mod args;
mod ceiling;
mod cluster;
mod console;
mod list;
mod list_probes;
mod list_report;
mod load;
mod measure;
mod output;
mod report;
mod scenarios;
mod snapshot;
mod soak;
mod stats;
mod tenants;

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use dispatch_store::admin::{self, url_with_database};
use dispatch_store::migrations;
use dispatch_store::queries::bench::{self as queries, HistorySeed, SubscriptionSeed};
use serde_json::{Map, Value, json};

use crate::{processes, procfs, receiver};

pub use self::args::Args;
use self::args::Scenario;
use self::load::HttpClient;
use self::processes::Binaries;
use self::receiver::Receiver;
use self::report::Row;
use self::scenarios::{Setup, Spec};

/// Prefix of every database the benchmark creates (then `<pid>_<what>`).
const DB_PREFIX: &str = "dispatch_bench_";
/// How long the ceiling is measured, per protocol, before and after the scenarios.
const CEILING_SECS: u64 = 5;
/// An unreported pgbench run before the first ceiling (a fresh cluster's first writes are slow).
const CEILING_WARM_UP: Duration = Duration::from_secs(5);
/// The seeded subscriptions' rate limit: the schema's highest (the limiter's cost is still paid).
const RATE_LIMIT: f64 = 100_000.0;
const RATE_BURST: i32 = 100_000;
/// `history` seeds this many finished deliveries per statement.
const HISTORY_BATCH: u64 = 500_000;

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
    /// The ceiling (prepared) the rows are compared with.
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
            (when == "before").then_some(CEILING_WARM_UP),
            &self.logs,
        )
        .await;
        self.drop_database(&name).await;
        let c = measured?;
        eprintln!(
            "bench: ceiling ({when}): pgbench one-row INSERT, {} clients: simple {:.0} TPS, \
             prepared {:.0} TPS ({} + {} failed transactions)",
            c.clients, c.simple.tps, c.prepared.tps, c.simple.failed, c.prepared.failed
        );
        Ok(c)
    }

    /// Runs `spec` on a database of its own; pushes one row per run to `rows`.
    async fn run_spec(&self, spec: &Spec, rows: &mut Vec<Row>) -> Result<()> {
        let receiver = Receiver::start().await?;
        let name = self.database_name(&spec.name);
        let url = self.create_database(&name).await?;
        let ran = self.run_on(spec, &receiver, &url, rows).await;
        self.drop_database(&name).await;
        ran
    }

    async fn run_on(
        &self,
        spec: &Spec,
        receiver: &Receiver,
        url: &str,
        rows: &mut Vec<Row>,
    ) -> Result<()> {
        self.seed_subscriptions(spec, receiver, url).await?;
        let prepared = self.prepare(spec, url).await?;
        for run in 1..=spec.runs {
            let name = spec.run_name(run);
            if spec.runs > 1 {
                eprintln!("bench:   run {run} of {}", spec.runs);
            }
            receiver.reset();
            let mut row = self.measure(spec, &name, receiver, url).await?;
            row.extra.extend(prepared.clone());
            eprintln!("{}", output::summary_line(&row));
            rows.push(row);
        }
        Ok(())
    }

    async fn seed_subscriptions(&self, spec: &Spec, receiver: &Receiver, url: &str) -> Result<()> {
        let mut conn = admin::connect(url).await?;
        let url_prefix = receiver.url_prefix();
        for s in &spec.subscriptions {
            let suffix = Receiver::suffix(s.fail_permille, 0);
            let (first, count) = (i32::try_from(s.first)?, i32::try_from(s.count)?);
            let seeded = queries::seed_subscriptions(
                &mut conn,
                &SubscriptionSeed {
                    id_prefix: "sub-",
                    url_prefix: &url_prefix,
                    url_suffix: &suffix,
                    pattern: s.pattern,
                    pattern_per_index: s.per_index,
                    first,
                    count,
                    secret: "bench-secret",
                    rate_limit_per_sec: RATE_LIMIT,
                    rate_limit_burst: RATE_BURST,
                },
            )
            .await?;
            if seeded != s.count as usize {
                bail!("seeded {seeded} subscriptions instead of {}", s.count);
            }
            let ordering = s.ordering_keys.map(|_| "per_key");
            queries::set_settings(&mut conn, "sub-", (first, count), s.filter, ordering).await?;
        }
        Ok(())
    }

    /// Prepares the database as `spec.setup` says; returns what the rows should say about it.
    async fn prepare(&self, spec: &Spec, url: &str) -> Result<Map<String, Value>> {
        let mut facts = Map::new();
        let mut conn = admin::connect(url).await?;
        match spec.setup {
            Setup::Fresh => {}
            Setup::History { rows } => {
                let ids: Vec<String> = spec
                    .subscriptions
                    .iter()
                    .flat_map(|s| (s.first..s.first + s.count).map(|i| format!("sub-{i}")))
                    .collect();
                let seeding = Instant::now();
                let mut first = 1;
                while first <= rows {
                    let count = HISTORY_BATCH.min(rows - first + 1);
                    queries::seed_history(
                        &mut conn,
                        &HistorySeed {
                            id_prefix: "hist-",
                            first: i64::try_from(first)?,
                            count: i64::try_from(count)?,
                            subscription_ids: &ids,
                        },
                    )
                    .await
                    .context("seeding history")?;
                    first += count;
                    eprintln!(
                        "bench:   seeded {} of {rows} finished deliveries ({:.0}s)",
                        first - 1,
                        seeding.elapsed().as_secs_f64()
                    );
                }
                let seeded = seeding.elapsed();
                queries::vacuum_analyze(&mut conn).await?;
                eprintln!(
                    "bench:   VACUUM ANALYZE took {:.1}s",
                    (seeding.elapsed() - seeded).as_secs_f64()
                );
                facts.insert("history_rows".to_owned(), json!(rows));
                facts.insert(
                    "history_seed_secs".to_owned(),
                    json!((seeding.elapsed().as_secs_f64() * 10.0).round() / 10.0),
                );
            }
            Setup::AutovacuumOff => {
                let tables = queries::disable_autovacuum(&mut conn).await?;
                eprintln!("bench:   autovacuum off for {}", tables.join(", "));
                facts.insert("autovacuum_off_for".to_owned(), json!(tables));
            }
        }
        Ok(facts)
    }
}

pub async fn run(args: Args) -> Result<bool> {
    let specs = args
        .scenario
        .expand()
        .into_iter()
        .flat_map(|s| args.specs(s))
        .collect::<Vec<_>>();
    let list = (args.scenario.expand().iter()).any(Scenario::seeds_history);
    let binaries = processes::build(args.debug)?;
    let (mut pg, origin) = cluster::server(&args).await?;
    let outcome = run_on_server(&args, &pg.admin_url, origin, binaries, &specs, list).await;
    pg.stop();
    outcome
}

async fn run_on_server(
    args: &Args,
    admin_url: &str,
    origin: &str,
    binaries: Binaries,
    specs: &[Spec],
    list: bool,
) -> Result<bool> {
    let mut conn = admin::connect(admin_url).await?;
    let facts = queries::server_facts(&mut conn).await?;
    drop(conn);
    cluster::check_connections(args.concurrency as usize, facts.max_connections)?;
    eprintln!("bench: measuring {origin}; {}", cluster::describe(&facts));
    for warning in cluster::warnings(&facts) {
        eprintln!("bench: {warning}");
    }
    cluster::drop_leftovers(admin_url, DB_PREFIX).await?;
    let logs = crate::target_dir().join("bench");
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    let mut bench = Bench {
        args: args.clone(),
        binaries,
        admin_url: admin_url.to_owned(),
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
        outcome = run_all(&mut bench, specs, list) => outcome,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    // Children were stopped (or, on Ctrl-C, killed when their handles were dropped).
    bench.drop_all_created().await;
    let (rows, ceilings, failures, listed) = outcome?;
    if let Some(listed) = &listed {
        list::print(
            listed,
            &format!("{origin}; {}", cluster::describe(&facts)),
            &logs,
        );
    }
    if specs.is_empty() {
        failures.iter().for_each(|f| eprintln!("bench: {f}"));
        return Ok(failures.is_empty());
    }
    Ok(output::print(&output::Report {
        args,
        origin,
        facts: &facts,
        profile: bench.binaries.profile,
        rows: &rows,
        ceilings: &ceilings,
        ceiling_secs: CEILING_SECS,
        failures: &failures,
        logs: &logs,
    }))
}

type Outcome = (
    Vec<Row>,
    Vec<ceiling::Ceiling>,
    Vec<String>,
    Option<list::Outcome>,
);

/// The delivery scenarios between two ceilings (none without them), then `list`.
async fn run_all(bench: &mut Bench, specs: &[Spec], list: bool) -> Result<Outcome> {
    let mut out = Outcome::default();
    if !specs.is_empty() {
        out = run_specs(bench, specs).await?;
    }
    if list {
        out.3 = bench.list_or_failure(&mut out.2).await;
    }
    Ok(out)
}

async fn run_specs(bench: &mut Bench, specs: &[Spec]) -> Result<Outcome> {
    let before = bench.measure_ceiling("before").await?;
    bench.ceiling_tps = before.prepared.tps;
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
        if let Err(e) = bench.run_spec(spec, &mut rows).await {
            failures.push(format!("{} failed: {e:#}", spec.name));
        }
    }
    let after = bench.measure_ceiling("after").await?;
    // Every ratio is against the mean of the two prepared measurements.
    let mean = (before.prepared.tps + after.prepared.tps) / 2.0;
    for row in &mut rows {
        row.ceiling_tps = mean;
    }
    output::relate(&mut rows);
    Ok((rows, vec![before, after], failures, None))
}
