//! The `list` scenario's report: one row per filter and page size, an aligned table, and one
//! JSON line per row.

use serde_json::{Value, json};

use super::stats::Latency;

/// A page slower than this at its 99th percentile is called slow in the report.
pub const SLOW_P99_MS: f64 = 50.0;

/// The figures of one probe at one page size.
#[derive(Debug, Clone, PartialEq)]
pub struct ListRow {
    pub name: String,
    pub limit: u64,
    /// Items on the first page.
    pub first_rows: usize,
    pub first: Option<Latency>,
    /// The page reached by following `next_cursor` (1: there was no second page).
    pub depth: u64,
    /// Every page of the walk after the first, once each.
    pub walk: Option<Latency>,
    /// The page at `depth`, requested again and again (when `depth` > 1).
    pub deep: Option<Latency>,
    /// Requests answered other than 200, or not at all.
    pub errors: u64,
}

impl ListRow {
    /// The slowest 99th percentile of the first and the deep page, ms.
    pub fn worst_p99(&self) -> f64 {
        [self.first, self.deep]
            .iter()
            .flatten()
            .map(|l| l.p99)
            .fold(0.0, f64::max)
    }

    pub fn is_slow(&self) -> bool {
        self.worst_p99() > SLOW_P99_MS
    }

    /// The deep page's median over the first page's.
    pub fn deep_vs_first(&self) -> Option<f64> {
        let (d, f) = (self.deep?, self.first?);
        (f.p50 > 0.0).then(|| d.p50 / f.p50)
    }

    pub fn to_json(&self) -> Value {
        let l = |l: &Option<Latency>| match l {
            Some(l) => json!({"count": l.count, "p50": round(l.p50), "p99": round(l.p99),
                              "max": round(l.max)}),
            None => Value::Null,
        };
        json!({
            "scenario": "list",
            "filter": self.name,
            "limit": self.limit,
            "first_page_rows": self.first_rows,
            "first_page_ms": l(&self.first),
            "deep_page": self.depth,
            "deep_page_ms": l(&self.deep),
            "walk_ms": l(&self.walk),
            "deep_vs_first": self.deep_vs_first().map(round),
            "errors": self.errors,
            "slow": self.is_slow(),
        })
    }
}

fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

const HEADERS: [&str; 12] = [
    "filter",
    "limit",
    "rows",
    "first p50",
    "first p99",
    "deep page",
    "deep p50",
    "deep p99",
    "walk p50",
    "walk p99",
    "deep/first",
    "slow",
];

fn ms(l: Option<Latency>, pick: fn(&Latency) -> f64) -> String {
    l.map_or_else(|| "-".to_owned(), |l| format!("{:.1}", pick(&l)))
}

fn cells(r: &ListRow) -> Vec<String> {
    vec![
        r.name.clone(),
        r.limit.to_string(),
        r.first_rows.to_string(),
        ms(r.first, |l| l.p50),
        ms(r.first, |l| l.p99),
        if r.depth > 1 {
            r.depth.to_string()
        } else {
            "-".to_owned()
        },
        ms(r.deep, |l| l.p50),
        ms(r.deep, |l| l.p99),
        ms(r.walk, |l| l.p50),
        ms(r.walk, |l| l.p99),
        r.deep_vs_first()
            .map_or_else(|| "-".to_owned(), |x| format!("{x:.2}")),
        if r.errors > 0 {
            format!("{} errors", r.errors)
        } else if r.is_slow() {
            "SLOW".to_owned()
        } else {
            String::new()
        },
    ]
}

/// The rows as an aligned table (milliseconds per page, as the client saw them).
pub fn table(rows: &[ListRow]) -> String {
    crate::table::render(&HEADERS, rows.iter().map(cells).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lat(p50: f64, p99: f64) -> Option<Latency> {
        Some(Latency {
            count: 100,
            p50,
            p90: p99,
            p99,
            max: p99,
        })
    }

    #[test]
    fn slow_rows_and_deep_ratios() {
        let row = ListRow {
            name: "events unfiltered".to_owned(),
            limit: 50,
            first_rows: 50,
            first: lat(2.0, 4.0),
            depth: 200,
            walk: lat(2.1, 5.0),
            deep: lat(3.0, 51.0),
            errors: 0,
        };
        assert!(row.is_slow());
        assert_eq!(row.worst_p99(), 51.0);
        assert_eq!(row.deep_vs_first(), Some(1.5));
        let shallow = ListRow {
            depth: 1,
            deep: None,
            walk: None,
            ..row.clone()
        };
        assert!(!shallow.is_slow());
        assert_eq!(shallow.deep_vs_first(), None);
        let t = table(&[row.clone(), shallow]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(lines[2].ends_with("SLOW"));
        assert!(lines[2].contains(" 1.50 "));
        let v = row.to_json();
        assert_eq!(v["deep_page_ms"]["p99"], 51.0);
        assert_eq!(v["slow"], true);
        assert!(!v.to_string().contains('\n'));
    }
}
