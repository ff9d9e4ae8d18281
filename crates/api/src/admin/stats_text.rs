//! The queue's snapshot as aligned tables: what `dispatch-api admin stats` prints.

use std::time::Duration;

use dispatch_store::queries::ops::Stats;

use super::parse::timestamp;

/// A short human age: `0s`, `42s`, `3m 20s`, `2h 5m`, `3d 4h`.
pub fn age_text(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        3600..86_400 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
    }
}

fn window_text(window: Duration) -> String {
    match window.as_secs() {
        3600 => "last hour".to_owned(),
        s => format!("last {}", age_text(s as f64)),
    }
}

/// Lays out rows under headers, columns padded to their widest cell; `numeric` columns are
/// right-aligned.
fn table(headers: &[&str], numeric: &[bool], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .zip(numeric)
            .map(|((cell, w), right)| {
                if *right {
                    format!("{cell:>w$}")
                } else {
                    format!("{cell:<w$}")
                }
            })
            .collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    let mut out = line(headers.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

fn rate_text(stats: &Stats) -> String {
    match stats.failure_rate() {
        Some(rate) => format!("{:.1} %", rate * 100.0),
        None => "n/a (no attempts)".to_owned(),
    }
}

/// The snapshot as a summary, warnings and two tables (deliveries by status; subscriptions).
pub fn stats_text(stats: &Stats) -> String {
    let window = window_text(stats.window);
    let mut out = String::new();
    out.push_str(&format!(
        "Backlog: {} due, oldest waiting {}\n",
        stats.backlog.due,
        age_text(stats.backlog.oldest_due_age_secs)
    ));
    out.push_str(&format!(
        "Attempts ({window}): {}, failed {}, failure rate {}\n",
        stats.attempts,
        stats.failed_attempts,
        rate_text(stats)
    ));
    out.push_str(&format!(
        "Hot queue: {} live rows, {} dead, autovacuum {}\n",
        stats.queue.live_rows,
        stats.queue.dead_rows,
        if stats.queue.autovacuum { "on" } else { "off" }
    ));
    for warning in stats.queue.warnings() {
        out.push_str(&format!("WARNING: {warning}\n"));
    }
    out.push('\n');
    let statuses: Vec<Vec<String>> = stats
        .by_status
        .iter()
        .map(|(status, n)| vec![status.as_str().to_owned(), n.to_string()])
        .collect();
    out.push_str(&table(&["STATUS", "DELIVERIES"], &[false, true], &statuses));
    out.push('\n');
    if stats.subscriptions.is_empty() {
        out.push_str("No subscriptions.\n");
        return out;
    }
    let attempts_header = format!("ATTEMPTS ({window})");
    let failures_header = format!("FAILURES ({window})");
    let rows: Vec<Vec<String>> = stats
        .subscriptions
        .iter()
        .map(|s| {
            vec![
                s.id.clone(),
                s.circuit_state.clone(),
                s.circuit_open_until.map(timestamp).unwrap_or_default(),
                s.due.to_string(),
                s.attempts.to_string(),
                s.failures.to_string(),
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "SUBSCRIPTION",
            "CIRCUIT",
            "OPEN UNTIL",
            "DUE",
            &attempts_header,
            &failures_header,
        ],
        &[false, false, false, true, true, true],
        &rows,
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::stats::tests::sample;

    #[test]
    fn stats_print_as_aligned_tables() {
        let text = stats_text(&sample());
        let expected = "\
Backlog: 3 due, oldest waiting 3m 20s
Attempts (last hour): 5, failed 3, failure rate 60.0 %
Hot queue: 5 live rows, 120000 dead, autovacuum off
WARNING: autovacuum is off for the hot queue (server setting or table option): claims slow down as dead rows pile up unless the workers vacuum it (queue_vacuum_secs > 0 and a role that owns delivery_queue)
WARNING: the hot queue is bloated: 120000 dead rows for 5 live; vacuum is falling behind

STATUS      DELIVERIES
pending              2
processing           1
retrying             2
delivered         1234
failed               1
cancelled            0

SUBSCRIPTION  CIRCUIT  OPEN UNTIL            DUE  ATTEMPTS (last hour)  FAILURES (last hour)
sub_payments  open     2026-12-01T08:00:30Z    2                     4                     3
s_b           closed                           1                     1                     0
";
        assert_eq!(text, expected, "\n{text}");

        let empty = Stats {
            attempts: 0,
            failed_attempts: 0,
            subscriptions: Vec::new(),
            ..sample()
        };
        let text = stats_text(&empty);
        assert!(text.contains("failure rate n/a (no attempts)"), "{text}");
        assert!(text.ends_with("No subscriptions.\n"), "{text}");
    }

    #[test]
    fn ages_read_naturally() {
        assert_eq!(age_text(0.0), "0s");
        assert_eq!(age_text(-3.0), "0s");
        assert_eq!(age_text(42.4), "42s");
        assert_eq!(age_text(200.0), "3m 20s");
        assert_eq!(age_text(7500.0), "2h 5m");
        assert_eq!(age_text(3.0 * 86_400.0 + 4.0 * 3600.0), "3d 4h");
        assert_eq!(window_text(Duration::from_secs(600)), "last 10m 0s");
    }
}
