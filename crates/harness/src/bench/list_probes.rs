//! The filters the `list` scenario asks for: each as the query string the API gets and as the
//! store's filter (for `EXPLAIN` when it is slow), on a database seeded by
//! `dispatch_store::queries::bench::list`.

use chrono::{DateTime, Duration as Span, SecondsFormat, Utc};
use dispatch_domain::DeliveryStatus;
use dispatch_store::queries::bench::list::ListFacts;
use dispatch_store::queries::listing::{DeliveryFilter, EventFilter};

/// The page sizes measured: the default and the largest.
pub const LIMITS: [u64; 2] = [50, 250];

/// The store's filter a probe maps to, for `EXPLAIN`.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    Events(EventFilter),
    Deliveries(DeliveryFilter),
    /// Attempts of one event: `attempts_by_event (event_id, id)`, nothing to explain.
    Attempts,
}

/// One list request the scenario times: a name for the report, the path and query without
/// `limit` and `cursor`.
#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    pub name: String,
    pub path: String,
    pub plan: Plan,
}

impl Probe {
    /// The URL path and query of a page of `limit`, after `cursor`.
    pub fn page(&self, limit: u64, cursor: Option<&str>) -> String {
        let sep = if self.path.contains('?') { '&' } else { '?' };
        let mut out = format!("{}{sep}limit={limit}", self.path);
        if let Some(c) = cursor {
            out.push_str("&cursor=");
            out.push_str(c);
        }
        out
    }
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The common filters, on a database seeded by `dispatch_store::queries::bench::list` whose
/// newest event was received at `end` (subscriptions `sub-0`, the largest, … `sub-7`).
pub fn probes(facts: &ListFacts, end: DateTime<Utc>) -> Vec<Probe> {
    // A day, fifteen days back: the middle of the history.
    let (from, to) = (end - Span::days(15), end - Span::days(14));
    let window = |field: &str| {
        format!(
            "{field}_after={}&{field}_before={}",
            rfc3339(from),
            rfc3339(to)
        )
    };
    // Named after the query string, or `unfiltered`.
    let probe = |route: &str, query: &str, plan| Probe {
        name: format!(
            "{} {}",
            &route[1..],
            if query.is_empty() {
                "unfiltered"
            } else {
                query
            }
        ),
        path: [route, query].join(if query.is_empty() { "" } else { "?" }),
        plan,
    };
    let events = |query: &str, f| probe("/events", query, Plan::Events(f));
    let deliveries = |query: &str, f| probe("/deliveries", query, Plan::Deliveries(f));
    let sub = |s: &str| Some(s.to_owned());
    let failed = vec![DeliveryStatus::Failed];
    vec![
        events("", EventFilter::default()),
        events(
            "type=invoice.*",
            EventFilter {
                type_prefix: sub("invoice."),
                ..EventFilter::default()
            },
        ),
        events(
            "type=invoice.failed",
            EventFilter {
                type_exact: sub("invoice.failed"),
                ..EventFilter::default()
            },
        ),
        events(
            "source=legacy-erp",
            EventFilter {
                source: sub("legacy-erp"),
                ..EventFilter::default()
            },
        ),
        events(
            "status=failed",
            EventFilter {
                status: Some(DeliveryStatus::Failed),
                ..EventFilter::default()
            },
        ),
        events(
            "subscription_id=sub-0",
            EventFilter {
                subscription_id: sub("sub-0"),
                ..EventFilter::default()
            },
        ),
        events(
            "subscription_id=sub-7",
            EventFilter {
                subscription_id: sub("sub-7"),
                ..EventFilter::default()
            },
        ),
        Probe {
            name: "events received 1 day".to_owned(),
            ..events(
                &window("received"),
                EventFilter {
                    received_after: Some(from),
                    received_before: Some(to),
                    ..EventFilter::default()
                },
            )
        },
        deliveries("", DeliveryFilter::default()),
        deliveries(
            "status=failed",
            DeliveryFilter {
                statuses: failed.clone(),
                ..DeliveryFilter::default()
            },
        ),
        deliveries(
            "status=failed&subscription_id=sub-2",
            DeliveryFilter {
                statuses: failed,
                subscription_id: sub("sub-2"),
                ..DeliveryFilter::default()
            },
        ),
        deliveries(
            "subscription_id=sub-7",
            DeliveryFilter {
                subscription_id: sub("sub-7"),
                ..DeliveryFilter::default()
            },
        ),
        Probe {
            name: "deliveries event_id=…".to_owned(),
            ..deliveries(
                &format!("event_id={}", facts.event_with_two_deliveries),
                DeliveryFilter {
                    event_id: Some(facts.event_with_two_deliveries.clone()),
                    ..DeliveryFilter::default()
                },
            )
        },
        deliveries(
            "status=delivered",
            DeliveryFilter {
                statuses: vec![DeliveryStatus::Delivered],
                ..DeliveryFilter::default()
            },
        ),
        deliveries(
            "status=pending&status=retrying",
            DeliveryFilter {
                statuses: vec![DeliveryStatus::Pending, DeliveryStatus::Retrying],
                ..DeliveryFilter::default()
            },
        ),
        Probe {
            name: "deliveries updated 1 day".to_owned(),
            ..deliveries(
                &window("updated"),
                DeliveryFilter {
                    updated_after: Some(from),
                    updated_before: Some(to),
                    ..DeliveryFilter::default()
                },
            )
        },
        Probe {
            name: "attempts of a failed event".to_owned(),
            path: format!("/events/{}/attempts", facts.failed_event),
            plan: Plan::Attempts,
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> ListFacts {
        ListFacts {
            events: 1,
            deliveries: 1,
            failed: 0,
            unfinished: 0,
            attempts: 0,
            event_with_two_deliveries: "evt_000000042".to_owned(),
            failed_event: "evt_000000007".to_owned(),
        }
    }

    #[test]
    fn pages_carry_limit_and_cursor_after_the_filters() {
        let end = DateTime::from_timestamp(1_764_945_000, 0).expect("valid");
        let probes = probes(&facts(), end);
        assert_eq!(probes[0].page(50, None), "/events?limit=50");
        let by_type = probes.iter().find(|p| p.name == "events type=invoice.*");
        assert_eq!(
            by_type.map(|p| p.page(250, Some("17.evt_1"))).as_deref(),
            Some("/events?type=invoice.*&limit=250&cursor=17.evt_1")
        );
        let window = probes.iter().find(|p| p.name == "deliveries updated 1 day");
        assert_eq!(
            window.map(|p| p.path.as_str()),
            Some(
                "/deliveries?updated_after=2025-11-20T14:30:00Z\
                 &updated_before=2025-11-21T14:30:00Z"
            )
        );
        let one = probes.iter().find(|p| p.name == "deliveries event_id=…");
        assert!(one.is_some_and(|p| p.path.ends_with("event_id=evt_000000042")));
        let last = probes.last().expect("probes");
        assert_eq!(last.path, "/events/evt_000000007/attempts");
        // Names are unique: they key the report.
        let mut names: Vec<&str> = probes.iter().map(|p| p.name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), probes.len());
    }
}
