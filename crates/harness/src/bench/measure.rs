//! One run of a scenario on a prepared database: start the services with the shipped defaults
//! (plus `--api-env`/`--worker-env`), send the events or drain the seeded backlog, wait
//! (bounded) for every expected delivery, and make the result row.

use std::time::{Duration, Instant};

use anyhow::Result;
use dispatch_store::admin;
use dispatch_store::queries::bench::{self as queries, BacklogSeed};
use serde_json::json;

use super::Bench;
use super::load::{self, LoadPlan, Pace};
use super::report::Row;
use super::scenarios::{Spec, Work};
use super::snapshot::{Snapshot, mib};
use super::soak::{self, RssSampler};
use super::stats;
use super::tenants::Observed;
use crate::processes::{self, Launch, Service};
use crate::receiver::{self, Receiver};

pub(super) mod statements;

/// How long a just-started API and workers get to become ready.
pub(super) const READY_WITHIN: Duration = Duration::from_secs(60);
/// After the last expected delivery: how long to keep listening for late duplicates.
const SETTLE: Duration = Duration::from_millis(500);

/// What the work phase leaves for the row.
pub(super) struct Phase {
    pub(super) started: Instant,
    pub(super) before: Snapshot,
    pub(super) expected: u64,
    pub(super) all_arrived: bool,
    pub(super) accepted_at: Vec<Instant>,
    pub(super) rss: Option<RssSampler>,
    pub(super) tenants: Option<Observed>,
    /// `--pg-statements`: the server's WAL position when the phase started.
    pub(super) wal_before: Option<i64>,
}

impl Bench {
    /// Waits until the receiver has `expected` distinct deliveries, or `within` has passed, or
    /// a service died. Returns whether everything arrived.
    pub(super) async fn wait_for_deliveries(
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

    /// Events POSTed through the API while the workers run.
    async fn ingest(
        &self,
        spec: &Spec,
        launch: &Launch<'_>,
        receiver: &Receiver,
        url: &str,
        services: &mut Vec<Service>,
        row: &mut Row,
    ) -> Result<Phase> {
        let Work::Ingest {
            types,
            pace,
            healthy_per_event,
        } = &spec.work
        else {
            anyhow::bail!("not an ingest scenario");
        };
        services.push(launch.api_as_shipped()?);
        for i in 1..=spec.workers {
            services.push(launch.worker_as_shipped(i)?);
        }
        processes::wait_ready(&self.client, services, READY_WITHIN).await?;
        let wal_before = self.statements_start(url).await;
        let before = Snapshot::take(services, url).await;
        let plan = LoadPlan {
            url: format!("{}{}", services[0].base_url, pace.path()),
            id_prefix: format!("{}-", launch.label),
            types: types.clone(),
            pace: *pace,
            concurrency: self.args.concurrency as usize,
            time_limit: spec.limit,
            api_key: self.api_key.clone(),
            ordering_keys: spec.subscriptions.iter().find_map(|s| s.ordering_keys),
        };
        let started = Instant::now();
        let rss = spec.window.map(|every| {
            let pids = services.iter().map(|s| (s.name.clone(), s.pid)).collect();
            RssSampler::start(started, pids, every)
        });
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
        match pace {
            Pace::Batches { size, .. } => {
                row.extra.insert("batch_size".to_owned(), json!(size));
            }
            Pace::Rate { per_sec, seconds } => {
                row.extra
                    .insert("offered_per_sec".to_owned(), json!(per_sec));
                row.extra.insert("offered_secs".to_owned(), json!(seconds));
            }
            Pace::Closed { .. } => {}
        }
        let expected = (sent.accepted + sent.repeated) * healthy_per_event;
        let all_arrived = self
            .wait_for_deliveries(receiver, expected, spec.limit, services)
            .await;
        Ok(Phase {
            started,
            before,
            expected,
            all_arrived,
            accepted_at: std::mem::take(&mut sent.accepted_at),
            rss,
            tenants: None,
            wal_before,
        })
    }

    /// Due deliveries seeded in the database, then drained by workers started afterwards.
    async fn drain_backlog(
        &self,
        spec: &Spec,
        launch: &Launch<'_>,
        receiver: &Receiver,
        url: &str,
        services: &mut Vec<Service>,
        row: &mut Row,
    ) -> Result<Phase> {
        let Work::Backlog {
            events,
            subscriptions,
        } = &spec.work
        else {
            anyhow::bail!("not a backlog scenario");
        };
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
        let wal_before = self.statements_start(url).await;
        let before = Snapshot::take(&[], url).await;
        let started = Instant::now();
        for i in 1..=spec.workers {
            services.push(launch.worker_as_shipped(i)?);
        }
        let expected = u64::try_from(seeded)?;
        row.extra.insert("backlog".to_owned(), json!(expected));
        processes::wait_ready(&self.client, services, READY_WITHIN).await?;
        let all_arrived = self
            .wait_for_deliveries(receiver, expected, spec.limit, services)
            .await;
        Ok(Phase {
            started,
            before,
            expected,
            all_arrived,
            accepted_at: Vec::new(),
            rss: None,
            tenants: None,
            wal_before,
        })
    }

    /// `--pg-statements`: forgets the statements counted so far; the server's WAL position.
    pub(super) async fn statements_start(&self, url: &str) -> Option<i64> {
        match self.args.pg_statements {
            true => statements::start(url).await,
            false => None,
        }
    }

    /// Run `name` of `spec` on the database at `url`, whose subscriptions point at `receiver`.
    pub(super) async fn measure(
        &self,
        spec: &Spec,
        name: &str,
        receiver: &Receiver,
        url: &str,
    ) -> Result<Row> {
        let label = name.replace('/', "-");
        let launch = Launch {
            binaries: &self.binaries,
            database_url: url,
            logs: &self.logs,
            label: &label,
            api_key: &self.api_key,
            api_env: &self.args.api_env,
            worker_env: &self.args.worker_env,
        };
        let mut row = Row {
            scenario: name.to_owned(),
            workers: spec.workers,
            concurrency: self.args.concurrency as usize,
            ceiling_tps: self.ceiling_tps,
            ..Row::default()
        };
        let mut services: Vec<Service> = Vec::new();
        let mut phase = match &spec.work {
            Work::Ingest { .. } => {
                self.ingest(spec, &launch, receiver, url, &mut services, &mut row)
                    .await?
            }
            Work::Backlog { .. } => {
                self.drain_backlog(spec, &launch, receiver, url, &mut services, &mut row)
                    .await?
            }
            Work::Tenants { .. } => {
                self.tenants(spec, &launch, receiver, url, &mut services, &mut row)
                    .await?
            }
        };
        if phase.all_arrived {
            tokio::time::sleep(SETTLE).await;
        }
        row.elapsed_secs = phase.started.elapsed().as_secs_f64();
        let rss = phase.rss.take().map(RssSampler::finish);
        let after = Snapshot::take(&services, url).await;
        row.cpu_seconds = after.cpu_since(Some(&phase.before), self.ticks_per_sec);
        row.host_cpu_busy = phase
            .before
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
        if let Some(wal_before) = phase.wal_before {
            statements::report(url, wal_before, phase.expected, &mut row).await;
        }
        self.count_in_database(url, &phase, &mut row).await?;
        let received = receiver.received();
        let expected = phase.expected;
        row.expected = expected;
        row.delivered = received.unique;
        row.duplicates = received.duplicates;
        row.missing = expected.saturating_sub(received.unique);
        row.failed_answers = received.failed_answers;
        row.timed_out |= !phase.all_arrived;
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
            last.saturating_duration_since(phase.started)
        });
        row.delivered_per_sec = stats::per_second(received.unique.min(expected), window);
        row.latency = stats::summarize(&mut received.latencies_ns.clone());
        if let Some(tenants) = &phase.tenants {
            tenants.report(receiver, &mut row);
        }
        if let (Some(width), Some(rss)) = (spec.window, rss) {
            let since = |at: &Instant| at.saturating_duration_since(phase.started);
            let accepted: Vec<Duration> = phase.accepted_at.iter().map(since).collect();
            let delivered: Vec<(Duration, u64)> = received
                .timeline
                .iter()
                .map(|(at, latency)| (since(at), *latency))
                .collect();
            row.windows = soak::windows(width, &accepted, &delivered, &rss);
            for (key, sample) in [("rss_start_mib", rss.first()), ("rss_end_mib", rss.last())] {
                if let Some(s) = sample {
                    row.extra.insert(
                        key.to_owned(),
                        json!({"api": s.mib_of("api"), "worker": s.mib_of("worker")}),
                    );
                }
            }
        }
        Ok(row)
    }

    /// The store's view, once the services are gone (so that their backends' counters are all
    /// published): deliveries by status and the database's activity during the run.
    async fn count_in_database(&self, url: &str, phase: &Phase, row: &mut Row) -> Result<()> {
        let mut conn = admin::connect(url).await?;
        row.tally = queries::delivery_tally(&mut conn).await.ok();
        if let Ok(tables) = queries::hot_table_tuples(&mut conn).await {
            let tuples: serde_json::Map<String, serde_json::Value> = tables
                .into_iter()
                .map(|t| {
                    let counts =
                        json!({"live": t.live, "dead": t.dead, "autovacuums": t.autovacuums});
                    (t.name, counts)
                })
                .collect();
            row.extra.insert("tuples".to_owned(), tuples.into());
        }
        let (Some(b), Ok(a)) = (phase.before.activity, queries::activity(&mut conn).await) else {
            return Ok(());
        };
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
        let expected = phase.expected;
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
        Ok(())
    }
}
