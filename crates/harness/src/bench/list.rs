//! The `list` scenario (issue 15): a database holding a month of history of
//! `--list-deliveries` deliveries, seeded in set-based statements
//! (`dispatch_store::queries::bench::list`) and `VACUUM ANALYZE`d; `dispatch-api` with the
//! shipped defaults; then, one request at a time over HTTP, for each common filter
//! ([`list_probes::probes`]) and page size: the first page `--list-samples` times, a walk of
//! `--list-depth` pages along `next_cursor`, and the page the walk reached `--list-samples`
//! times. Keyset cursors make the deep page cost what the first does; the report shows whether
//! it does, and prints the plan of any filter slower than [`list_report::SLOW_P99_MS`].

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use chrono::{DateTime, SubsecRound, Utc};
use dispatch_store::admin;
use dispatch_store::queries::bench::list::{self as seeding, ListFacts, ListSeed};
use dispatch_store::queries::bench::{self as queries, SubscriptionSeed};
use dispatch_store::queries::listing::{self, DeliveryFilter, EventFilter};
use hyper::StatusCode;
use serde_json::Value;

use super::Bench;
use super::list_probes::{self, LIMITS, Plan, Probe};
use super::list_report::{self, ListRow};
use super::stats;
use crate::http::get_authorized;
use crate::processes::{self, Launch};

/// Events seeded per statement.
const SEED_BATCH: i64 = 200_000;
/// The history spans this long, up to the moment of seeding.
const SPAN_SECS: i64 = 30 * 24 * 3600;
/// Longest wait for one page.
const PAGE_TIMEOUT: Duration = Duration::from_secs(30);
const READY_WITHIN: Duration = Duration::from_secs(60);

/// What the scenario leaves for the report.
pub struct Outcome {
    pub facts: ListFacts,
    pub seed_secs: f64,
    pub vacuum_secs: f64,
    pub rows: Vec<ListRow>,
    /// `(filter, plan)` of each slow filter.
    pub plans: Vec<(String, String)>,
}

/// Events to seed for about `deliveries` deliveries (1.3 a event).
pub fn events_for(deliveries: u64) -> u64 {
    let per_thousand = 1000 + u64::from(seeding::SECOND_DELIVERY_PERMILLE);
    (deliveries * 1000).div_ceil(per_thousand)
}

/// One page: its status, how long it took, its items and its `next_cursor`.
struct Page {
    took_ns: u64,
    items: usize,
    next: Option<String>,
}

impl Bench {
    async fn page(&self, base: &str, path: &str) -> Option<Page> {
        let started = Instant::now();
        let (status, body) = get_authorized(
            &self.client,
            &format!("{base}{path}"),
            &self.api_key,
            PAGE_TIMEOUT,
        )
        .await?;
        let took_ns = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        if status != StatusCode::OK {
            eprintln!("bench:   {path}: {status}");
            return None;
        }
        let page: Value = serde_json::from_slice(&body).ok()?;
        Some(Page {
            took_ns,
            items: page["data"].as_array().map_or(0, Vec::len),
            next: page["next_cursor"].as_str().map(str::to_owned),
        })
    }

    /// `samples` requests of one page: their latencies, and how many failed.
    async fn repeat(&self, base: &str, path: &str) -> (Option<stats::Latency>, u64, usize) {
        let (mut took, mut errors, mut items) = (Vec::new(), 0, 0);
        for _ in 0..self.args.list_samples {
            match self.page(base, path).await {
                Some(p) => {
                    took.push(p.took_ns);
                    items = p.items;
                }
                None => errors += 1,
            }
        }
        (stats::summarize(&mut took), errors, items)
    }

    async fn measure_probe(&self, base: &str, probe: &Probe, limit: u64) -> ListRow {
        // One unmeasured request first: the API's connection and the plan's pages warm.
        let _ = self.page(base, &probe.page(limit, None)).await;
        let (first, mut errors, first_rows) = self.repeat(base, &probe.page(limit, None)).await;
        let (mut depth, mut cursor, mut walk) = (1, None::<String>, Vec::new());
        let mut next = self
            .page(base, &probe.page(limit, None))
            .await
            .and_then(|p| p.next);
        while depth < self.args.list_depth {
            let Some(c) = next.take() else { break };
            match self.page(base, &probe.page(limit, Some(&c))).await {
                Some(p) => {
                    walk.push(p.took_ns);
                    next = p.next;
                }
                None => errors += 1,
            }
            cursor = Some(c);
            depth += 1;
        }
        let deep = match &cursor {
            Some(c) => {
                let (deep, failed, _) = self.repeat(base, &probe.page(limit, Some(c))).await;
                errors += failed;
                deep
            }
            None => None,
        };
        ListRow {
            name: probe.name.clone(),
            limit,
            first_rows,
            first,
            depth,
            walk: stats::summarize(&mut walk),
            deep,
            errors,
        }
    }

    /// Seeds `count` events (and their deliveries and attempts) received over 30 days up to now.
    async fn seed_list(&self, url: &str) -> Result<(f64, f64)> {
        let mut conn = admin::connect(url).await?;
        let subscriptions = queries::seed_subscriptions(
            &mut conn,
            &SubscriptionSeed {
                id_prefix: "sub-",
                // Nothing is delivered: no worker runs.
                url_prefix: "http://127.0.0.1:9/",
                url_suffix: "",
                pattern: "*",
                pattern_per_index: false,
                first: 0,
                count: i32::try_from(seeding::SUBSCRIPTION_SHARES.len())?,
                secret: "bench-secret",
                rate_limit_per_sec: 100.0,
                rate_limit_burst: 100,
            },
        )
        .await?;
        let ids: Vec<String> = (0..subscriptions).map(|i| format!("sub-{i}")).collect();
        let total = i64::try_from(events_for(self.args.list_deliveries))?;
        let end: DateTime<Utc> = Utc::now().trunc_subsecs(0);
        let started = Instant::now();
        let (mut first, mut deliveries) = (1, 0);
        while first <= total {
            let count = SEED_BATCH.min(total - first + 1);
            let seed = ListSeed {
                first,
                count,
                total,
                end,
                span_secs: SPAN_SECS,
                subscription_ids: &ids,
            };
            deliveries += seeding::seed(&mut conn, &seed)
                .await
                .context("seeding the list history")?;
            first += count;
            eprintln!(
                "bench:   seeded {} of {total} events, {deliveries} deliveries ({:.0}s)",
                first - 1,
                started.elapsed().as_secs_f64()
            );
        }
        let seeded = started.elapsed().as_secs_f64();
        queries::vacuum_analyze(&mut conn).await?;
        let vacuum = started.elapsed().as_secs_f64() - seeded;
        eprintln!("bench:   VACUUM ANALYZE took {vacuum:.1}s");
        Ok((seeded, vacuum))
    }

    /// The `list` scenario, or `None` with its failure added to `failures`.
    pub(super) async fn list_or_failure(&self, failures: &mut Vec<String>) -> Option<Outcome> {
        eprintln!("bench: list ({} deliveries)", self.args.list_deliveries);
        self.run_list()
            .await
            .map_err(|e| failures.push(format!("list failed: {e:#}")))
            .ok()
    }

    /// The `list` scenario on a database of its own.
    async fn run_list(&self) -> Result<Outcome> {
        let name = self.database_name("list");
        let url = self.create_database(&name).await?;
        let outcome = self.list_on(&url).await;
        self.drop_database(&name).await;
        outcome
    }

    async fn list_on(&self, url: &str) -> Result<Outcome> {
        let (seed_secs, vacuum_secs) = self.seed_list(url).await?;
        let mut conn = admin::connect(url).await?;
        let facts = seeding::facts(&mut conn).await?;
        eprintln!(
            "bench:   {} events, {} deliveries ({} failed, {} unfinished), {} attempts",
            facts.events, facts.deliveries, facts.failed, facts.unfinished, facts.attempts
        );
        let launch = Launch {
            binaries: &self.binaries,
            database_url: url,
            logs: &self.logs,
            label: "list",
            api_key: &self.api_key,
            api_env: &self.args.api_env,
            worker_env: &self.args.worker_env,
        };
        let mut services = vec![launch.api_as_shipped()?];
        processes::wait_ready(&self.client, &mut services, READY_WITHIN).await?;
        let base = services[0].base_url.clone();
        let end = Utc::now();
        let mut rows = Vec::new();
        for probe in list_probes::probes(&facts, end) {
            for limit in LIMITS {
                let row = self.measure_probe(&base, &probe, limit).await;
                let p50 = |l: Option<stats::Latency>| {
                    l.map_or_else(|| "-".to_owned(), |l| format!("{:.1} ms", l.p50))
                };
                eprintln!(
                    "bench:   {} limit={limit}: first page p50 {}, page {} p50 {}{}",
                    row.name,
                    p50(row.first),
                    row.depth,
                    p50(row.deep),
                    if row.errors > 0 { " (errors)" } else { "" }
                );
                rows.push(row);
            }
        }
        for service in services {
            service.stop().await;
        }
        let mut plans = Vec::new();
        for probe in list_probes::probes(&facts, end) {
            if !rows.iter().any(|r| r.name == probe.name && r.is_slow()) {
                continue;
            }
            let (events, deliveries, which) = match &probe.plan {
                Plan::Events(f) => (f.clone(), DeliveryFilter::default(), 0),
                Plan::Deliveries(f) => (EventFilter::default(), f.clone(), 1),
                Plan::Attempts => continue,
            };
            let plan = listing::plans(&mut conn, &events, &deliveries, false).await?;
            plans.push((probe.name.clone(), plan[which].clone()));
        }
        if rows.iter().any(|r| r.errors > 0) {
            bail!(
                "some list requests failed; see the API's log in {}",
                self.logs.display()
            );
        }
        Ok(Outcome {
            facts,
            seed_secs,
            vacuum_secs,
            rows,
            plans,
        })
    }
}

/// Prints the list report under the server line, and one JSON line per row (also written to
/// a file in `logs`).
pub fn print(outcome: &Outcome, server: &str, logs: &std::path::Path) {
    let f = &outcome.facts;
    println!();
    println!("list: {server}");
    println!(
        "list: {} events, {} deliveries ({} failed, {} pending or retrying), {} attempts, over \
         30 days; seeded in {:.0} s, VACUUM ANALYZE {:.0} s; dispatch-api with the shipped \
         defaults, one request at a time; ms per page as the client saw it",
        f.events,
        f.deliveries,
        f.failed,
        f.unfinished,
        f.attempts,
        outcome.seed_secs,
        outcome.vacuum_secs
    );
    println!();
    print!("{}", list_report::table(&outcome.rows));
    for (name, plan) in &outcome.plans {
        println!();
        println!(
            "list: {name} is slow (p99 > {} ms); its plan:",
            list_report::SLOW_P99_MS
        );
        println!("{plan}");
    }
    println!();
    let mut lines = String::new();
    for row in &outcome.rows {
        let line = row.to_json().to_string();
        println!("{line}");
        lines.push_str(&line);
        lines.push('\n');
    }
    let file = logs.join(format!(
        "list-{}.jsonl",
        Utc::now().format("%Y%m%dT%H%M%SZ")
    ));
    match std::fs::write(&file, lines) {
        Ok(()) => eprintln!("bench: list results in {}", file.display()),
        Err(e) => eprintln!("bench: could not write {}: {e}", file.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_million_deliveries_take_about_770_thousand_events() {
        assert_eq!(events_for(1_300), 1_000);
        assert_eq!(events_for(1_000_000), 769_231);
        assert_eq!(events_for(1_000), 770);
    }
}
