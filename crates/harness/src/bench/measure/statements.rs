//! `--pg-statements`: what each statement of a run cost PostgreSQL, per delivery, from
//! `pg_stat_statements` (loaded on the private cluster only when asked for), and the server's WAL
//! bytes per delivery. A diagnostic for comparing revisions on counts that do not depend on how
//! busy the machine is (buffers, rows, WAL) where CPU times are too noisy; the default run
//! measures PostgreSQL's defaults and loads nothing.

use dispatch_store::admin;
use dispatch_store::queries::bench::statements::{self, StatementCost};
use serde_json::json;

use crate::bench::report::Row;

/// The settings the private cluster starts with for `--pg-statements`.
pub const SETTINGS: [&str; 3] = [
    "shared_preload_libraries=pg_stat_statements",
    "pg_stat_statements.track=all",
    "pg_stat_statements.track_planning=on",
];

/// How many statements the report lists (the rest are summed in one line, named [`REST`]).
const LISTED: i64 = 12;
const REST: &str = "(the rest)";

/// Forgets what was counted in the database at `url` so far; returns the server's WAL position.
/// `None` (with a warning) when the server does not preload `pg_stat_statements`.
pub async fn start(url: &str) -> Option<i64> {
    let started = async {
        let mut conn = admin::connect(url).await?;
        statements::reset(&mut conn).await?;
        Ok::<_, anyhow::Error>(statements::wal_position(&mut conn).await?)
    };
    match started.await {
        Ok(wal) => Some(wal),
        Err(e) => {
            eprintln!("bench:   --pg-statements: {e:#} (is pg_stat_statements preloaded?)");
            None
        }
    }
}

/// Prints the costliest statements since [`start`] per expected delivery (`expected` of them),
/// and adds them (and the WAL per delivery) to `row`.
pub async fn report(url: &str, wal_before: i64, expected: u64, row: &mut Row) {
    let deliveries = expected.max(1) as f64;
    let read = async {
        let mut conn = admin::connect(url).await?;
        let wal = statements::wal_position(&mut conn).await? - wal_before;
        Ok::<_, anyhow::Error>((wal, statements::costliest(&mut conn, LISTED).await?))
    };
    let (wal, costs) = match read.await {
        Ok(read) => read,
        Err(e) => {
            eprintln!("bench:   --pg-statements: {e:#}");
            return;
        }
    };
    eprintln!(
        "bench:   statements of {} per delivery ({deliveries} deliveries; server WAL {:.0} \
         bytes per delivery):",
        row.scenario,
        wal as f64 / deliveries
    );
    eprintln!("{}", header());
    for cost in &costs {
        eprintln!("{}", line(cost, deliveries));
    }
    row.extra.insert(
        "wal_bytes_per_delivery".to_owned(),
        json!((wal as f64 / deliveries).round()),
    );
    row.extra.insert(
        "statements".to_owned(),
        json!(
            costs
                .iter()
                .map(|c| as_json(c, deliveries))
                .collect::<Vec<_>>()
        ),
    );
}

fn header() -> String {
    format!(
        "bench:   {:>3} {:>7} {:>6} {:>9} {:>8} {:>7} {:>7} {:>8} {:>8}  statement",
        "top", "calls", "plans", "exec µs", "plan µs", "rows", "hit", "dirtied", "WAL B"
    )
}

/// One statement: calls and plans in all, the rest per delivery.
fn line(c: &StatementCost, deliveries: f64) -> String {
    let per = |v: f64| v / deliveries;
    format!(
        "bench:   {:>3} {:>7} {:>6} {:>9.1} {:>8.2} {:>7.2} {:>7.1} {:>8.3} {:>8.0}  {}",
        match (c.query.as_str(), c.toplevel) {
            (REST, _) => "-",
            (_, true) => "yes",
            (_, false) => "no",
        },
        c.calls,
        c.plans,
        per(c.exec_ms * 1000.0),
        per(c.plan_ms * 1000.0),
        per(c.rows as f64),
        per(c.blocks_hit as f64),
        per(c.blocks_dirtied as f64),
        per(c.wal_bytes as f64),
        c.query
    )
}

fn as_json(c: &StatementCost, deliveries: f64) -> serde_json::Value {
    let per = |v: f64| (v / deliveries * 1000.0).round() / 1000.0;
    json!({
        "toplevel": c.toplevel,
        "calls": c.calls,
        "plans": c.plans,
        "exec_us_per_delivery": per(c.exec_ms * 1000.0),
        "plan_us_per_delivery": per(c.plan_ms * 1000.0),
        "rows_per_delivery": per(c.rows as f64),
        "blocks_hit_per_delivery": per(c.blocks_hit as f64),
        "blocks_read_per_delivery": per(c.blocks_read as f64),
        "blocks_dirtied_per_delivery": per(c.blocks_dirtied as f64),
        "wal_bytes_per_delivery": per(c.wal_bytes as f64),
        "query": c.query,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_shows_costs_per_delivery() {
        let cost = StatementCost {
            toplevel: true,
            calls: 1000,
            plans: 10,
            exec_ms: 200.0,
            plan_ms: 1.0,
            rows: 20_000,
            blocks_hit: 500_000,
            blocks_read: 0,
            blocks_dirtied: 100,
            wal_bytes: 24_000_000,
            query: "WITH o AS (…)".to_owned(),
        };
        let text = line(&cost, 20_000.0);
        assert!(text.contains(" 1000 "), "{text}");
        assert!(text.contains(" 10.0 "), "exec µs per delivery: {text}");
        assert!(text.contains(" 25.0 "), "buffers hit per delivery: {text}");
        assert!(text.contains(" 1200 "), "WAL bytes per delivery: {text}");
        assert!(text.ends_with("WITH o AS (…)"));
        let value = as_json(&cost, 20_000.0);
        assert_eq!(value["blocks_hit_per_delivery"], json!(25.0));
        assert_eq!(value["calls"], json!(1000));
    }
}
