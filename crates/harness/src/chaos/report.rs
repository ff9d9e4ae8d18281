//! What a chaos scenario found: the per-(event, subscription) accounting of accepted events
//! against what the receiver got and what the database says ([`account`]), and one [`Row`]
//! per scenario, as an aligned table and as JSON lines.

use std::collections::{HashMap, HashSet};
use std::process::ExitStatus;
use std::time::Duration;

use dispatch_store::queries::chaos::DeliveryState;
use hyper::StatusCode;
use serde_json::{Map, Value, json};

/// The accounting of one scenario's accepted events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Accounting {
    /// Accepted events × the subscriptions each one matches.
    pub expected: u64,
    /// Of those, pairs the receiver answered 200 at least once.
    pub delivered: u64,
    /// Extra 200s beyond the first, summed over every pair the receiver got (accepted or not).
    pub duplicates: u64,
    /// Expected pairs never received and whose delivery will not be made: no row, a row that
    /// claims `delivered`, or a `failed` row whose attempts were not all recorded.
    pub lost: u64,
    /// Expected pairs never received but still queued (`pending`, `retrying`, `processing`).
    pub queued: u64,
    /// Expected pairs never received whose delivery `failed` with every attempt recorded.
    pub failed: u64,
    /// Pairs the receiver got for events whose POST was not answered 2xx (the answer was lost,
    /// the event was stored): allowed, and shown.
    pub unacknowledged_delivered: u64,
    /// Deliveries the database recorded as answered 2xx more than once.
    pub db_delivered_twice: u64,
}

/// Accounts for every accepted event to each subscription: `subscriptions` maps the id stored
/// in the database (`sub-<n>`) to the receiver's number `n`; `received` is how often the
/// receiver answered 200 per (number, event id); `states` is every delivery row.
pub fn account(
    accepted: &[String],
    subscriptions: &[(String, u32)],
    received: &HashMap<(u32, Box<str>), u32>,
    states: &[DeliveryState],
) -> Accounting {
    let by_pair: HashMap<(&str, &str), &DeliveryState> = states
        .iter()
        .map(|s| ((s.event_id.as_str(), s.subscription_id.as_str()), s))
        .collect();
    let mut out = Accounting {
        expected: (accepted.len() * subscriptions.len()) as u64,
        duplicates: received
            .values()
            .map(|&n| u64::from(n.saturating_sub(1)))
            .sum(),
        db_delivered_twice: states.iter().filter(|s| s.successes > 1).count() as u64,
        ..Accounting::default()
    };
    let accepted_set: HashSet<&str> = accepted.iter().map(String::as_str).collect();
    out.unacknowledged_delivered = received
        .keys()
        .filter(|(_, event)| !accepted_set.contains(event.as_ref()))
        .count() as u64;
    for event in accepted {
        for (subscription, number) in subscriptions {
            if received
                .get(&(*number, Box::from(event.as_str())))
                .is_some_and(|&n| n > 0)
            {
                out.delivered += 1;
                continue;
            }
            match by_pair.get(&(event.as_str(), subscription.as_str())) {
                Some(s) if matches!(s.status.as_str(), "pending" | "retrying" | "processing") => {
                    out.queued += 1;
                }
                Some(s)
                    if s.status == "failed"
                        && s.attempts > 0
                        && i64::from(s.attempts) == s.recorded_attempts =>
                {
                    out.failed += 1;
                }
                _ => out.lost += 1,
            }
        }
    }
    out
}

/// One scenario's result.
#[derive(Debug, Clone, Default)]
pub struct Row {
    pub scenario: String,
    /// Events POSTed, and answered 202/200.
    pub sent: u64,
    pub accepted: u64,
    pub accounting: Accounting,
    /// Whether the scenario may deliver twice (a worker killed mid-request).
    pub duplicates_allowed: bool,
    /// Pairs that may still be queued at the end (deliveries to destinations that never answer
    /// within the scenario): accounted for, not lost, and not expected to arrive.
    pub queued_allowed: u64,
    pub elapsed_secs: f64,
    /// What happened, for people (e.g. 503s seen during an outage, time to recover).
    pub notes: Vec<String>,
    /// Scenario-specific expectations that did not hold (each fails the run).
    pub failed_checks: Vec<String>,
    /// Scenario-specific figures for the JSON line.
    pub extra: Map<String, Value>,
}

impl Row {
    /// Zero lost, duplicates only where allowed, everything delivered (or queued, where the
    /// scenario allows it), every check held.
    pub fn passed(&self) -> bool {
        let a = &self.accounting;
        a.lost == 0
            && (self.duplicates_allowed || (a.duplicates == 0 && a.db_delivered_twice == 0))
            && a.queued <= self.queued_allowed
            && a.failed == 0
            && a.delivered + a.queued == a.expected
            && self.failed_checks.is_empty()
    }

    /// Why it did not pass, in a few words.
    pub fn verdict(&self) -> String {
        if self.passed() {
            return "ok".to_owned();
        }
        let a = &self.accounting;
        let mut why = Vec::new();
        if a.lost > 0 {
            why.push(format!("{} lost", a.lost));
        }
        if !self.duplicates_allowed && (a.duplicates > 0 || a.db_delivered_twice > 0) {
            why.push("duplicates".to_owned());
        }
        if a.queued > self.queued_allowed {
            why.push(format!("{} still queued", a.queued - self.queued_allowed));
        }
        if a.failed > 0 {
            why.push(format!("{} failed", a.failed));
        }
        if !self.failed_checks.is_empty() {
            why.push(format!("{} check(s)", self.failed_checks.len()));
        }
        format!("FAIL: {}", why.join(", "))
    }

    pub fn to_json(&self, context: &Map<String, Value>) -> Value {
        let a = &self.accounting;
        let mut out = json!({
            "scenario": self.scenario,
            "events_sent": self.sent,
            "events_accepted": self.accepted,
            "deliveries_expected": a.expected,
            "delivered": a.delivered,
            "duplicates": a.duplicates,
            "duplicates_allowed": self.duplicates_allowed,
            "lost": a.lost,
            "queued": a.queued,
            "queued_allowed": self.queued_allowed,
            "failed": a.failed,
            "unacknowledged_delivered": a.unacknowledged_delivered,
            "db_delivered_twice": a.db_delivered_twice,
            "elapsed_secs": (self.elapsed_secs * 10.0).round() / 10.0,
            "passed": self.passed(),
            "notes": self.notes,
            "failed_checks": self.failed_checks,
        });
        if let Some(obj) = out.as_object_mut() {
            for (k, v) in self.extra.iter().chain(context) {
                obj.insert(k.clone(), v.clone());
            }
        }
        out
    }
}

/// `exit 0`, or `killed` when the process had to be killed.
pub fn exit_text(status: Option<ExitStatus>) -> String {
    status
        .and_then(|s| s.code())
        .map_or_else(|| "killed".to_owned(), |c| format!("exit {c}"))
}

pub fn status_text(status: Option<StatusCode>) -> String {
    status.map_or_else(|| "no answer".to_owned(), |s| s.as_u16().to_string())
}

pub fn secs_text(d: Option<Duration>) -> String {
    d.map_or_else(
        || "never".to_owned(),
        |d| format!("{:.1}s", d.as_secs_f64()),
    )
}

const HEADERS: [&str; 8] = [
    "scenario",
    "sent",
    "accepted",
    "delivered",
    "dup",
    "lost",
    "secs",
    "result",
];

/// The rows as an aligned table, then each scenario's notes.
pub fn table(rows: &[Row]) -> String {
    let cells = rows
        .iter()
        .map(|r| {
            let a = &r.accounting;
            vec![
                r.scenario.clone(),
                r.sent.to_string(),
                r.accepted.to_string(),
                if r.queued_allowed > 0 {
                    format!("{}/{} (+{} queued)", a.delivered, a.expected, a.queued)
                } else {
                    format!("{}/{}", a.delivered, a.expected)
                },
                if r.duplicates_allowed {
                    format!("{} (allowed)", a.duplicates)
                } else {
                    a.duplicates.to_string()
                },
                a.lost.to_string(),
                format!("{:.0}", r.elapsed_secs),
                r.verdict(),
            ]
        })
        .collect();
    let mut out = crate::table::render(&HEADERS, cells);
    for r in rows {
        for note in r.notes.iter().chain(&r.failed_checks) {
            out.push_str(&format!("\n{}: {note}", r.scenario));
        }
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(event: &str, sub: &str, status: &str, attempts: i32, recorded: i64) -> DeliveryState {
        DeliveryState {
            event_id: event.to_owned(),
            subscription_id: sub.to_owned(),
            status: status.to_owned(),
            attempts,
            recorded_attempts: recorded,
            successes: i64::from(status == "delivered"),
        }
    }

    #[test]
    fn every_accepted_pair_is_delivered_queued_failed_or_lost() {
        let accepted: Vec<String> = ["e1", "e2", "e3", "e4", "e5", "e6"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        let subs = vec![("sub-0".to_owned(), 0)];
        let received: HashMap<(u32, Box<str>), u32> = [
            ((0, Box::from("e1")), 1),
            ((0, Box::from("e2")), 3),
            // Stored although its POST got no answer.
            ((0, Box::from("x9")), 1),
        ]
        .into_iter()
        .collect();
        let states = vec![
            state("e1", "sub-0", "delivered", 1, 1),
            state("e2", "sub-0", "delivered", 1, 1),
            state("e3", "sub-0", "retrying", 2, 2),
            state("e4", "sub-0", "failed", 3, 3),
            // Claims delivered, never arrived: lost.
            state("e5", "sub-0", "delivered", 1, 1),
            // e6 has no row at all: lost.
        ];
        let a = account(&accepted, &subs, &received, &states);
        assert_eq!(
            a,
            Accounting {
                expected: 6,
                delivered: 2,
                duplicates: 2,
                lost: 2,
                queued: 1,
                failed: 1,
                unacknowledged_delivered: 1,
                db_delivered_twice: 0,
            }
        );
        // A failed delivery whose attempts were not all recorded is lost, not failed.
        let a = account(
            &accepted[3..4],
            &subs,
            &HashMap::new(),
            &[state("e4", "sub-0", "failed", 3, 2)],
        );
        assert_eq!((a.failed, a.lost), (0, 1));
    }

    #[test]
    fn a_row_passes_only_with_everything_delivered_once_unless_duplicates_are_allowed() {
        let clean = Row {
            scenario: "sigterm".to_owned(),
            sent: 10,
            accepted: 10,
            accounting: Accounting {
                expected: 10,
                delivered: 10,
                ..Accounting::default()
            },
            ..Row::default()
        };
        assert!(clean.passed());
        assert_eq!(clean.verdict(), "ok");
        let mut twice = clean.clone();
        twice.accounting.duplicates = 2;
        assert!(!twice.passed());
        assert_eq!(twice.verdict(), "FAIL: duplicates");
        twice.duplicates_allowed = true;
        assert!(twice.passed());
        let mut lost = clean.clone();
        lost.accounting.delivered = 9;
        lost.accounting.lost = 1;
        assert_eq!(lost.verdict(), "FAIL: 1 lost");
        let mut hanging = clean.clone();
        hanging.accounting.expected = 30;
        hanging.accounting.queued = 20;
        assert_eq!(hanging.verdict(), "FAIL: 20 still queued");
        hanging.queued_allowed = 20;
        assert!(
            hanging.passed(),
            "queued to hanging destinations, as allowed"
        );
        hanging.accounting.queued = 19;
        assert!(!hanging.passed(), "one pair neither delivered nor queued");
        let mut checked = clean.clone();
        checked.failed_checks.push("exit status 1".to_owned());
        assert!(!checked.passed());

        let mut noted = twice.clone();
        noted.notes.push("worker-1 killed".to_owned());
        let table = table(&[clean.clone(), noted]);
        assert!(table.contains("10/10"), "{table}");
        assert!(table.contains("2 (allowed)"), "{table}");
        assert!(table.ends_with("\nsigterm: worker-1 killed\n"), "{table}");
        let line = clean.to_json(&Map::new());
        assert_eq!(line["lost"], 0);
        assert_eq!(line["passed"], true);
        assert!(!line.to_string().contains('\n'));
    }
}
