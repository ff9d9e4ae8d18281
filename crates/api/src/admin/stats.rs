//! The queue's snapshot as JSON: [`StatsView`], what `GET /stats` answers and
//! `dispatch-api admin stats --json` prints, both from [`snapshot`].

use std::collections::BTreeMap;
use std::time::Duration;

use dispatch_store::queries::ops::{self, Stats, SubscriptionStats};
use dispatch_store::{AsyncPgConnection, StoreError};
use serde::Serialize;
use utoipa::ToSchema;

use super::parse::timestamp;

/// The window of the attempt and failure counts.
pub const STATS_WINDOW: Duration = Duration::from_secs(3600);

/// Reads the queue's snapshot, attempt counts over [`STATS_WINDOW`]. Counting by status reads
/// every delivery: cheap enough for an operator, not for a scrape (use `/metrics` for that).
pub async fn read(conn: &mut AsyncPgConnection) -> Result<Stats, StoreError> {
    ops::stats(conn, STATS_WINDOW).await
}

/// [`read`] as JSON.
pub async fn snapshot(conn: &mut AsyncPgConnection) -> Result<StatsView, StoreError> {
    Ok(StatsView::from(&read(conn).await?))
}

/// A snapshot of the queue and of the last hour's attempts.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[schema(as = Stats)]
pub struct StatsView {
    pub backlog: BacklogView,
    /// Deliveries by status: every status of `DeliveryStatus` is a key, zeros included.
    #[schema(example = json!({"cancelled": 0, "delivered": 1234, "failed": 1, "pending": 2,
        "processing": 1, "retrying": 2}))]
    pub deliveries_by_status: BTreeMap<String, i64>,
    /// The window `attempts`, `failed_attempts` and each subscription's counts cover, in
    /// seconds (3600).
    pub window_secs: u64,
    /// Attempts recorded within the window.
    pub attempts: i64,
    /// Failed attempts (anything but a 2xx, or nothing sent) within the window.
    pub failed_attempts: i64,
    /// `failed_attempts / attempts`, from 0 to 1; `null` without attempts.
    pub failure_rate: Option<f64>,
    pub queue: QueueView,
    /// Every subscription that is not deleted: most due first, then most failures, then id.
    pub subscriptions: Vec<SubscriptionStatsView>,
}

/// Deliveries due now (waiting with their time reached, or with an expired lease).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[schema(as = StatsBacklog)]
pub struct BacklogView {
    pub due: i64,
    /// How long the oldest due delivery has waited, in seconds (0 when none is due).
    pub oldest_due_age_secs: f64,
}

/// The hot queue table (`delivery_queue`) as PostgreSQL's statistics see it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[schema(as = StatsQueue)]
pub struct QueueView {
    pub live_rows: i64,
    pub dead_rows: i64,
    /// The server's `autovacuum` and the table's `autovacuum_enabled` are both on.
    pub autovacuum: bool,
    /// What an operator should hear about (autovacuum off, bloat); empty when healthy.
    pub warnings: Vec<String>,
}

/// One subscription's share of the queue and of the window's attempts.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[schema(as = StatsSubscription)]
pub struct SubscriptionStatsView {
    pub id: String,
    /// `closed`, `open` or `half_open`, as a worker last published it.
    pub circuit_state: String,
    /// While open: until when (RFC 3339, whole seconds, UTC).
    pub circuit_open_until: Option<String>,
    /// Deliveries due now.
    pub due: i64,
    /// Attempts within the window.
    pub attempts: i64,
    /// Failed attempts within the window.
    pub failures: i64,
}

impl From<&SubscriptionStats> for SubscriptionStatsView {
    fn from(s: &SubscriptionStats) -> Self {
        Self {
            id: s.id.clone(),
            circuit_state: s.circuit_state.clone(),
            circuit_open_until: s.circuit_open_until.map(timestamp),
            due: s.due,
            attempts: s.attempts,
            failures: s.failures,
        }
    }
}

impl From<&Stats> for StatsView {
    fn from(stats: &Stats) -> Self {
        Self {
            backlog: BacklogView {
                due: stats.backlog.due,
                oldest_due_age_secs: stats.backlog.oldest_due_age_secs,
            },
            deliveries_by_status: stats
                .by_status
                .iter()
                .map(|(status, n)| (status.as_str().to_owned(), *n))
                .collect(),
            window_secs: stats.window.as_secs(),
            attempts: stats.attempts,
            failed_attempts: stats.failed_attempts,
            failure_rate: stats.failure_rate(),
            queue: QueueView {
                live_rows: stats.queue.live_rows,
                dead_rows: stats.queue.dead_rows,
                autovacuum: stats.queue.autovacuum,
                warnings: stats.queue.warnings(),
            },
            subscriptions: stats.subscriptions.iter().map(Into::into).collect(),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use dispatch_domain::DeliveryStatus;
    use dispatch_store::queries::deliveries::Backlog;
    use dispatch_store::queries::health::QueueHealth;

    use super::*;

    /// A snapshot with every kind of row: an open circuit, a bloated queue, autovacuum off.
    pub(crate) fn sample() -> Stats {
        Stats {
            backlog: Backlog {
                due: 3,
                oldest_due_age_secs: 200.4,
            },
            by_status: DeliveryStatus::ALL
                .iter()
                .zip([2, 1, 2, 1234, 1, 0])
                .map(|(s, n)| (*s, n))
                .collect(),
            window: STATS_WINDOW,
            attempts: 5,
            failed_attempts: 3,
            queue: QueueHealth {
                live_rows: 5,
                dead_rows: 120_000,
                autovacuum: false,
                last_vacuum_age_secs: None,
                can_vacuum: true,
            },
            subscriptions: vec![
                SubscriptionStats {
                    id: "sub_payments".to_owned(),
                    circuit_state: "open".to_owned(),
                    circuit_open_until: "2026-12-01T08:00:30Z".parse().ok(),
                    due: 2,
                    attempts: 4,
                    failures: 3,
                },
                SubscriptionStats {
                    id: "s_b".to_owned(),
                    circuit_state: "closed".to_owned(),
                    circuit_open_until: None,
                    due: 1,
                    attempts: 1,
                    failures: 0,
                },
            ],
        }
    }

    fn json(stats: &Stats) -> serde_json::Value {
        serde_json::to_value(StatsView::from(stats)).expect("serialises")
    }

    #[test]
    fn stats_print_as_json() {
        assert_eq!(
            json(&sample()),
            serde_json::json!({
                "backlog": {"due": 3, "oldest_due_age_secs": 200.4},
                "deliveries_by_status": {
                    "pending": 2, "processing": 1, "retrying": 2,
                    "delivered": 1234, "failed": 1, "cancelled": 0
                },
                "window_secs": 3600,
                "attempts": 5,
                "failed_attempts": 3,
                "failure_rate": 0.6,
                "queue": {
                    "live_rows": 5, "dead_rows": 120000, "autovacuum": false,
                    "warnings": sample().queue.warnings(),
                },
                "subscriptions": [
                    {"id": "sub_payments", "circuit_state": "open",
                     "circuit_open_until": "2026-12-01T08:00:30Z",
                     "due": 2, "attempts": 4, "failures": 3},
                    {"id": "s_b", "circuit_state": "closed", "circuit_open_until": null,
                     "due": 1, "attempts": 1, "failures": 0}
                ]
            })
        );
        assert_eq!(
            sample().queue.warnings().len(),
            2,
            "autovacuum off and bloat"
        );
        let none = Stats {
            attempts: 0,
            failed_attempts: 0,
            ..sample()
        };
        assert_eq!(json(&none)["failure_rate"], serde_json::Value::Null);
    }
}
