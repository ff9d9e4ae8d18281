//! One result row per scenario: an aligned table for people, one JSON line each for tools.

use dispatch_store::queries::bench::DeliveryTally;
use serde_json::{Map, Value, json};

use super::soak::{self, Window};
use super::stats::{Latency, ratio};

#[derive(Debug, Clone, Default)]
pub struct Row {
    pub scenario: String,
    pub workers: usize,
    pub concurrency: usize,
    pub events_sent: u64,
    pub events_accepted: u64,
    /// Events answered neither 202 nor 200, or not answered at all.
    pub events_failed: u64,
    /// Deliveries that should reach a healthy destination.
    pub expected: u64,
    /// Distinct (subscription, event) pairs the receiver answered 200.
    pub delivered: u64,
    pub duplicates: u64,
    pub missing: u64,
    /// Ingestion rate (events accepted per second while sending); `None` when the scenario
    /// does not ingest through the API (backlogs are seeded in the database).
    pub ingest_per_sec: Option<f64>,
    pub delivered_per_sec: f64,
    /// Send → receive latency.
    pub latency: Option<Latency>,
    /// `POST /events` round trips as the load generator saw them.
    pub ingest_round_trip: Option<Latency>,
    /// CPU seconds used during the measurement, per process (`api`, `worker-1`, …, `xtask`).
    pub cpu_seconds: Vec<(String, f64)>,
    /// Share of the host's CPU time spent busy during the measurement.
    pub host_cpu_busy: Option<f64>,
    /// The largest peak RSS among the workers, MiB.
    pub worker_peak_rss_mib: f64,
    pub api_peak_rss_mib: Option<f64>,
    /// The ceiling the rates are compared with: pgbench's prepared-statement figure.
    pub ceiling_tps: f64,
    pub elapsed_secs: f64,
    /// A deadline passed: sending was cut short or deliveries were still missing.
    pub timed_out: bool,
    pub failed_answers: u64,
    pub tally: Option<DeliveryTally>,
    pub log_lines: usize,
    /// Scenario-specific figures (e.g. `healthy_vs_steady`, `speedup_vs_1_worker`).
    pub extra: Map<String, Value>,
    /// Per-window figures (soak).
    pub windows: Vec<Window>,
}

fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

pub(super) fn latency_json(l: &Option<Latency>) -> Value {
    match l {
        Some(l) => json!({
            "count": l.count,
            "p50": round(l.p50, 3),
            "p90": round(l.p90, 3),
            "p99": round(l.p99, 3),
            "max": round(l.max, 3),
        }),
        None => Value::Null,
    }
}

impl Row {
    pub fn ingest_vs_ceiling(&self) -> Option<f64> {
        self.ingest_per_sec.and_then(|v| ratio(v, self.ceiling_tps))
    }

    pub fn delivered_vs_ceiling(&self) -> Option<f64> {
        ratio(self.delivered_per_sec, self.ceiling_tps)
    }

    fn cpu_of(&self, prefix: &str) -> Option<f64> {
        let matching: Vec<f64> = self
            .cpu_seconds
            .iter()
            .filter(|(name, _)| name.starts_with(prefix))
            .map(|(_, s)| *s)
            .collect();
        (!matching.is_empty()).then(|| matching.iter().sum())
    }

    pub fn to_json(&self, context: &Map<String, Value>) -> Value {
        let cpu: Map<String, Value> = self
            .cpu_seconds
            .iter()
            .map(|(name, s)| (name.clone(), json!(round(*s, 3))))
            .collect();
        let mut out = json!({
            "scenario": self.scenario,
            "workers": self.workers,
            "concurrency": self.concurrency,
            "events_sent": self.events_sent,
            "events_accepted": self.events_accepted,
            "events_failed": self.events_failed,
            "deliveries_expected": self.expected,
            "delivered": self.delivered,
            "duplicates": self.duplicates,
            "missing": self.missing,
            "ingest_per_sec": self.ingest_per_sec.map(|v| round(v, 1)),
            "delivered_per_sec": round(self.delivered_per_sec, 1),
            "latency_ms": latency_json(&self.latency),
            "ingest_round_trip_ms": latency_json(&self.ingest_round_trip),
            "cpu_seconds": cpu,
            "host_cpu_busy": self.host_cpu_busy.map(|v| round(v, 3)),
            "worker_peak_rss_mib": round(self.worker_peak_rss_mib, 1),
            "api_peak_rss_mib": self.api_peak_rss_mib.map(|v| round(v, 1)),
            "ceiling_tps": round(self.ceiling_tps, 1),
            "ingest_vs_ceiling": self.ingest_vs_ceiling().map(|v| round(v, 3)),
            "delivered_vs_ceiling": self.delivered_vs_ceiling().map(|v| round(v, 3)),
            "elapsed_secs": round(self.elapsed_secs, 3),
            "timed_out": self.timed_out,
            "receiver_failed_answers": self.failed_answers,
            "logged_lines": self.log_lines,
        });
        if let (Some(obj), Some(t)) = (out.as_object_mut(), &self.tally) {
            obj.insert(
                "db".to_owned(),
                json!({
                    "pending": t.pending,
                    "processing": t.processing,
                    "retrying": t.retrying,
                    "delivered": t.delivered,
                    "failed": t.failed,
                    "cancelled": t.cancelled,
                    "attempts": t.attempts,
                    "delivered_twice": t.delivered_twice,
                }),
            );
        }
        if let Some(obj) = out.as_object_mut() {
            if !self.windows.is_empty() {
                obj.insert("windows".to_owned(), soak::to_json(&self.windows));
            }
            for (k, v) in &self.extra {
                obj.insert(k.clone(), v.clone());
            }
            for (k, v) in context {
                obj.insert(k.clone(), v.clone());
            }
        }
        out
    }
}

const HEADERS: [&str; 20] = [
    "scenario",
    "wk",
    "C",
    "sent",
    "accepted",
    "ingest/s",
    "%ceil",
    "delivered",
    "deliv/s",
    "%ceil",
    "p50 ms",
    "p90 ms",
    "p99 ms",
    "max ms",
    "dup",
    "miss",
    "cpu api s",
    "cpu wk s",
    "cpu pg s",
    "wk rss MiB",
];

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.digits$}"))
}

fn percent(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{:.0}%", v * 100.0))
}

fn cells(row: &Row) -> Vec<String> {
    let l = row.latency.as_ref();
    vec![
        row.scenario.clone(),
        row.workers.to_string(),
        row.concurrency.to_string(),
        row.events_sent.to_string(),
        row.events_accepted.to_string(),
        opt(row.ingest_per_sec, 0),
        percent(row.ingest_vs_ceiling()),
        format!("{}/{}", row.delivered, row.expected),
        format!("{:.0}", row.delivered_per_sec),
        percent(row.delivered_vs_ceiling()),
        opt(l.map(|l| l.p50), 1),
        opt(l.map(|l| l.p90), 1),
        opt(l.map(|l| l.p99), 1),
        opt(l.map(|l| l.max), 1),
        row.duplicates.to_string(),
        row.missing.to_string(),
        opt(row.cpu_of("api"), 1),
        opt(row.cpu_of("worker"), 1),
        opt(row.cpu_of("postgres"), 1),
        format!("{:.0}", row.worker_peak_rss_mib),
    ]
}

/// The rows as an aligned table (first column left-aligned, the others right-aligned).
pub fn table(rows: &[Row]) -> String {
    crate::table::render(&HEADERS, rows.iter().map(cells).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> Row {
        Row {
            scenario: "steady".to_owned(),
            workers: 1,
            concurrency: 64,
            events_sent: 2000,
            events_accepted: 2000,
            expected: 2000,
            delivered: 2000,
            ingest_per_sec: Some(1500.0),
            delivered_per_sec: 1000.0,
            latency: Some(Latency {
                count: 2000,
                p50: 3.25,
                p90: 7.0,
                p99: 12.5,
                max: 40.0,
            }),
            cpu_seconds: vec![
                ("api".to_owned(), 1.5),
                ("worker-1".to_owned(), 1.0),
                ("worker-2".to_owned(), 0.5),
            ],
            worker_peak_rss_mib: 21.4,
            ceiling_tps: 2000.0,
            ..Row::default()
        }
    }

    #[test]
    fn ratios_are_against_the_ceiling() {
        let r = row();
        assert_eq!(r.ingest_vs_ceiling(), Some(0.75));
        assert_eq!(r.delivered_vs_ceiling(), Some(0.5));
        let backlog = Row {
            ingest_per_sec: None,
            ..row()
        };
        assert_eq!(backlog.ingest_vs_ceiling(), None);
    }

    #[test]
    fn json_line_has_every_field() {
        let mut context = Map::new();
        context.insert("git".to_owned(), json!("abc1234"));
        let v = row().to_json(&context);
        assert_eq!(v["scenario"], "steady");
        assert_eq!(v["ingest_vs_ceiling"], 0.75);
        assert_eq!(v["latency_ms"]["p99"], 12.5);
        assert_eq!(v["cpu_seconds"]["worker-2"], 0.5);
        assert_eq!(v["git"], "abc1234");
        assert_eq!(v["ingest_round_trip_ms"], Value::Null);
        // One line.
        assert!(!v.to_string().contains('\n'));
    }

    #[test]
    fn table_columns_line_up() {
        let t = table(&[
            row(),
            Row {
                scenario: "many-destinations".to_owned(),
                ..row()
            },
        ]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(lines[0].starts_with("scenario"));
        assert!(lines[1].starts_with("-----"));
        assert!(lines[2].contains("2000/2000"));
        assert!(lines[2].contains("75%"));
        // Right-aligned last column: every line ends at the same width.
        assert_eq!(lines[2].len(), lines[3].len());
        assert_eq!(lines[0].len(), lines[2].len());
        // Workers' CPU is summed.
        assert!(lines[2].contains(" 1.5  "));
    }
}
