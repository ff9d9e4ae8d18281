//! What `cargo xtask bench` prints: a header (where it ran, which settings differ from the
//! shipped defaults, the server's settings, the ceiling, warnings), the table of rows, soak's
//! windows, the comparisons between runs, and one JSON line per row (also written to a file).

use std::path::Path;

use dispatch_store::queries::bench::ServerFacts;
use serde_json::{Map, Value, json};

use super::args::Args;
use super::ceiling::Ceiling;
use super::report::{self, Row};
use super::{cluster, soak};
use crate::git_revision;
use crate::processes::REQUIRED_SETTINGS;

pub struct Report<'a> {
    pub args: &'a Args,
    /// How the server was chosen (`a private cluster …`).
    pub origin: &'a str,
    pub facts: &'a ServerFacts,
    pub profile: &'a str,
    pub rows: &'a [Row],
    /// Before and after the scenarios.
    pub ceilings: &'a [Ceiling],
    pub ceiling_secs: u64,
    pub failures: &'a [String],
    pub logs: &'a Path,
}

pub fn summary_line(row: &Row) -> String {
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

fn rate_of(rows: &[Row], name: &str) -> Option<f64> {
    rows.iter()
        .find(|r| r.scenario == name)
        .map(|r| r.delivered_per_sec)
        .filter(|&r| r > 0.0)
}

fn rounded(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

/// Figures that compare one run with another of the same invocation.
pub fn relate(rows: &mut [Row]) {
    let steady = rate_of(rows, "steady");
    let one_worker = rate_of(rows, "scale/1w");
    let fresh = rate_of(rows, "history/fresh");
    let first = rate_of(rows, "vacuum-off/1");
    for row in rows.iter_mut() {
        let rate = row.delivered_per_sec;
        let mut relate_to = |key: &str, reference: Option<f64>, digits| {
            if let Some(reference) = reference {
                row.extra
                    .insert(key.to_owned(), json!(rounded(rate / reference, digits)));
            }
        };
        match row.scenario.as_str() {
            "mixed" => relate_to("healthy_vs_steady", steady, 3),
            "scale/3w" => relate_to("speedup_vs_1_worker", one_worker, 2),
            "history/fresh" => {}
            name if name.starts_with("history/") => relate_to("vs_fresh", fresh, 3),
            name if name.starts_with("vacuum-off/") => relate_to("vs_first", first, 3),
            _ => {}
        }
    }
}

/// The lines under the table that compare runs: history against fresh, vacuum-off's trend.
fn comparisons(rows: &[Row]) -> Vec<String> {
    let mut out = Vec::new();
    let fresh = rate_of(rows, "history/fresh");
    for row in rows
        .iter()
        .filter(|r| r.scenario.starts_with("history/") && r.scenario != "history/fresh")
    {
        out.push(format!(
            "history: steady on {} finished deliveries {:.0}/s, on a fresh database {}; \
             ratio {}",
            row.scenario.trim_start_matches("history/"),
            row.delivered_per_sec,
            fresh.map_or_else(|| "-".to_owned(), |f| format!("{f:.0}/s")),
            row.extra
                .get("vs_fresh")
                .map_or_else(|| "-".to_owned(), Value::to_string)
        ));
    }
    let vacuum: Vec<&Row> = rows
        .iter()
        .filter(|r| r.scenario.starts_with("vacuum-off/"))
        .collect();
    if let (Some(first), Some(last)) = (vacuum.first(), vacuum.last()) {
        let rates: Vec<String> = vacuum
            .iter()
            .map(|r| format!("{:.0}", r.delivered_per_sec))
            .collect();
        out.push(format!(
            "vacuum-off: delivered/s by run {}; run {} / run 1 = {}",
            rates.join(", "),
            vacuum.len(),
            super::stats::ratio(last.delivered_per_sec, first.delivered_per_sec)
                .map_or_else(|| "-".to_owned(), |r| format!("{r:.3}"))
        ));
    }
    out.extend(rows.iter().filter_map(super::tenants::summary));
    out
}

fn header(r: &Report<'_>) -> Vec<String> {
    let mut lines = vec![format!(
        "Dispatch bench: git {}, {} build, {} CPUs, {}",
        git_revision().unwrap_or_else(|| "-".to_owned()),
        r.profile,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ")
    )];
    lines.push(format!(
        "Settings: {}",
        r.args.overrides().map_or_else(
            || "shipped defaults".to_owned(),
            |o| format!("differ from the shipped defaults: {o}")
        )
    ));
    lines.push(format!(
        "  (set by the harness, to run here: {REQUIRED_SETTINGS})"
    ));
    lines.push(format!(
        "Server: {}; {}",
        r.origin,
        cluster::describe(r.facts)
    ));
    if let Some(first) = r.ceilings.first() {
        let each: Vec<String> = r
            .ceilings
            .iter()
            .zip(["before", "after"])
            .map(|(c, when)| {
                format!(
                    "{when}: simple {:.0}, prepared {:.0}",
                    c.simple.tps, c.prepared.tps
                )
            })
            .collect();
        lines.push(format!(
            "Ceiling (pgbench, one-row INSERT of a small jsonb event row, durable, -c {} -j {}, \
             {} s each): {} TPS",
            first.clients,
            first.threads,
            r.ceiling_secs,
            each.join("; ")
        ));
        let mean = r
            .rows
            .first()
            .map_or(first.prepared.tps, |row| row.ceiling_tps);
        lines.push(format!(
            "  %ceil = rate / the mean prepared figure ({mean:.0} TPS)"
        ));
    }
    lines.extend(cluster::warnings(r.facts));
    lines
}

fn context(r: &Report<'_>) -> Map<String, Value> {
    let f = r.facts;
    let mut context = Map::new();
    context.insert("git".to_owned(), json!(git_revision()));
    context.insert("build".to_owned(), json!(r.profile));
    context.insert("server".to_owned(), json!(r.origin));
    context.insert("postgres".to_owned(), json!(f.version));
    context.insert(
        "postgres_settings".to_owned(),
        json!({
            "autovacuum": f.autovacuum,
            "fsync": f.fsync,
            "synchronous_commit": f.synchronous_commit,
            "full_page_writes": f.full_page_writes,
            "shared_buffers": f.shared_buffers,
            "max_connections": f.max_connections,
        }),
    );
    context.insert(
        "cpus".to_owned(),
        json!(std::thread::available_parallelism().map_or(0, |n| n.get())),
    );
    let ceilings: Vec<Value> = r
        .ceilings
        .iter()
        .map(|c| {
            json!({
                "simple_tps": rounded(c.simple.tps, 1),
                "prepared_tps": rounded(c.prepared.tps, 1),
                "failed": c.simple.failed + c.prepared.failed,
            })
        })
        .collect();
    context.insert("ceiling_measured".to_owned(), Value::Array(ceilings));
    context.insert("ceiling_secs".to_owned(), json!(r.ceiling_secs));
    context.insert(
        "ceiling_basis".to_owned(),
        json!("pgbench -M prepared, mean"),
    );
    context.insert(
        "settings".to_owned(),
        json!(
            r.args
                .overrides()
                .unwrap_or_else(|| "shipped defaults".to_owned())
        ),
    );
    for (key, overrides) in [
        ("api_env", &r.args.api_env),
        ("worker_env", &r.args.worker_env),
    ] {
        if !overrides.is_empty() {
            let map: Map<String, Value> = overrides
                .iter()
                .map(|(k, v)| (k.clone(), json!(v)))
                .collect();
            context.insert(key.to_owned(), Value::Object(map));
        }
    }
    context.insert(
        "time".to_owned(),
        json!(chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()),
    );
    context
}

/// Prints the report; returns whether the run was clean (no failure, nothing missing,
/// duplicated or refused, no time limit hit).
pub fn print(r: &Report<'_>) -> bool {
    println!();
    for line in header(r) {
        println!("{line}");
    }
    println!();
    print!("{}", report::table(r.rows));
    for row in r.rows.iter().filter(|row| !row.windows.is_empty()) {
        println!();
        println!("{} per window:", row.scenario);
        print!("{}", soak::table(&row.windows));
    }
    let compared = comparisons(r.rows);
    if !compared.is_empty() {
        println!();
        for line in compared {
            println!("{line}");
        }
    }
    println!();
    let context = context(r);
    let mut lines = String::new();
    for row in r.rows {
        let line = row.to_json(&context).to_string();
        println!("{line}");
        lines.push_str(&line);
        lines.push('\n');
    }
    let file = r.logs.join(format!(
        "results-{}.jsonl",
        chrono::Utc::now().format("%Y%m%dT%H%M%SZ")
    ));
    match std::fs::write(&file, lines) {
        Ok(()) => eprintln!(
            "bench: results in {}; process logs in {}",
            file.display(),
            r.logs.display()
        ),
        Err(e) => eprintln!("bench: could not write {}: {e}", file.display()),
    }
    for failure in r.failures {
        eprintln!("bench: {failure}");
    }
    r.failures.is_empty()
        && r.rows
            .iter()
            .all(|r| r.missing == 0 && r.duplicates == 0 && !r.timed_out && r.events_failed == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, rate: f64) -> Row {
        Row {
            scenario: name.to_owned(),
            delivered_per_sec: rate,
            ..Row::default()
        }
    }

    #[test]
    fn runs_are_related_to_their_references() {
        let mut rows = vec![
            row("steady", 1000.0),
            row("mixed", 950.0),
            row("scale/1w", 800.0),
            row("scale/3w", 1200.0),
            row("history/fresh", 1000.0),
            row("history/5000000", 900.0),
            row("vacuum-off/1", 1000.0),
            row("vacuum-off/2", 950.0),
            row("vacuum-off/5", 800.0),
        ];
        relate(&mut rows);
        assert_eq!(rows[1].extra["healthy_vs_steady"], 0.95);
        assert_eq!(rows[3].extra["speedup_vs_1_worker"], 1.5);
        assert!(!rows[4].extra.contains_key("vs_fresh"));
        assert_eq!(rows[5].extra["vs_fresh"], 0.9);
        assert_eq!(rows[6].extra["vs_first"], 1.0);
        assert_eq!(rows[8].extra["vs_first"], 0.8);
        let lines = comparisons(&rows);
        assert_eq!(lines.len(), 2);
        assert!(lines[0].contains("5000000 finished deliveries 900/s"));
        assert!(lines[0].ends_with("ratio 0.9"));
        assert_eq!(
            lines[1],
            "vacuum-off: delivered/s by run 1000, 950, 800; run 3 / run 1 = 0.800"
        );
        assert!(comparisons(&[row("steady", 1.0)]).is_empty());
    }
}
