//! The delivery lifecycle: statuses, the legal transitions between them, and how an event's
//! status summarises the statuses of its deliveries.
//!
//! ```text
//! pending ──claim──▶ processing ──2xx──▶ delivered
//!                     │  ▲   │
//!          failure,   │  │   └─failure, no attempts left──▶ failed
//!       attempts left ▼  │claim
//!                    retrying
//! pending | processing | retrying ──subscription deleted──▶ cancelled
//! failed | delivered ──replayed or retried by an operator (`POST /replays`, `POST
//!                       /deliveries/{id}/retry`, `dispatch-api admin replay`; delivered only as a
//!                       resend)──▶ pending
//! ```
//! `processing → processing` is a re-claim after a lease expired (the worker holding it died);
//! `processing → pending` hands a claimed, unstarted delivery back on graceful shutdown.
//! `failed → pending` (and `delivered → pending`, a resend) are the only ways out of a terminal
//! status, and only an operator takes them: no worker ever leaves `delivered`, `failed` or
//! `cancelled`, and `cancelled` is never left.

use std::fmt;
use std::str::FromStr;

use crate::error::ParseError;

/// Where one delivery (one event × one subscription) stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    /// Waiting for its first attempt.
    Pending,
    /// Claimed by a worker, which holds a lease on it.
    Processing,
    /// An attempt failed; the next is scheduled.
    Retrying,
    /// A 2xx answer was received. Terminal.
    Delivered,
    /// Every attempt failed (or the destination answered a permanent status). Terminal: only
    /// an operator's replay moves it back to `pending`.
    Failed,
    /// Its subscription was deleted before it was delivered. Terminal.
    Cancelled,
}

impl DeliveryStatus {
    pub const ALL: [Self; 6] = [
        Self::Pending,
        Self::Processing,
        Self::Retrying,
        Self::Delivered,
        Self::Failed,
        Self::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Processing => "processing",
            Self::Retrying => "retrying",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// No automatic transition leaves a terminal status (an operator may replay a failed one).
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Delivered | Self::Failed | Self::Cancelled)
    }

    /// Whether the lifecycle allows moving from `self` to `next`.
    pub fn can_transition_to(self, next: Self) -> bool {
        use DeliveryStatus::*;
        matches!(
            (self, next),
            (Pending, Processing | Cancelled)
                | (
                    Processing,
                    Processing | Pending | Delivered | Retrying | Failed | Cancelled
                )
                | (Retrying, Processing | Cancelled)
                // An operator's replay or retry: a fresh start with a full retry schedule; a
                // resend of a delivered one (`resend: true`); a retry brought forward.
                | (Failed | Delivered, Pending)
                | (Retrying, Retrying)
        )
    }
}

impl fmt::Display for DeliveryStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DeliveryStatus {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| ParseError::Invalid(format!("unknown delivery status {s:?}")))
    }
}

/// An event's status, from the statuses of its deliveries:
///
/// 1. while any delivery is unfinished: `processing` if any is processing, else `retrying` if
///    any is retrying, else `pending`;
/// 2. once all are finished: `failed` if any failed, else `delivered` if any was delivered,
///    else `cancelled` (every delivery was cancelled);
/// 3. an event that matched no subscription has nothing left to do: `delivered`.
pub fn summarise_event_status(
    deliveries: impl IntoIterator<Item = DeliveryStatus>,
) -> DeliveryStatus {
    use DeliveryStatus::*;
    let mut seen = [false; 6];
    let mut any = false;
    for status in deliveries {
        seen[status as usize] = true;
        any = true;
    }
    if !any {
        return Delivered;
    }
    [Processing, Retrying, Pending, Failed, Delivered, Cancelled]
        .into_iter()
        .find(|s| seen[*s as usize])
        .unwrap_or(Delivered)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::DeliveryStatus::*;
    use super::*;

    #[test]
    fn the_seed_lifecycle_is_allowed() {
        assert!(Pending.can_transition_to(Processing));
        assert!(Processing.can_transition_to(Delivered));
        assert!(Processing.can_transition_to(Retrying));
        assert!(Retrying.can_transition_to(Processing));
        assert!(Processing.can_transition_to(Failed));
    }

    #[test]
    fn shortcuts_and_resurrections_are_refused() {
        assert!(!Pending.can_transition_to(Delivered));
        assert!(!Pending.can_transition_to(Retrying));
        assert!(!Retrying.can_transition_to(Delivered));
        assert!(!Retrying.can_transition_to(Failed));
        assert!(!Delivered.can_transition_to(Retrying));
        assert!(!Cancelled.can_transition_to(Processing));
        assert!(
            !Cancelled.can_transition_to(Pending),
            "only failed and delivered ones are replayed"
        );
        assert!(
            !Failed.can_transition_to(Retrying),
            "a replay starts afresh"
        );
        assert!(!Failed.can_transition_to(Processing));
    }

    #[test]
    fn an_operator_may_replay_a_failed_delivery_or_resend_a_delivered_one() {
        assert!(Failed.can_transition_to(Pending));
        assert!(Delivered.can_transition_to(Pending));
        assert!(
            Failed.is_terminal(),
            "still terminal for workers and event summaries"
        );
    }

    #[test]
    fn terminal_statuses_have_no_way_out_but_an_operators_replay() {
        for from in DeliveryStatus::ALL.into_iter().filter(|s| s.is_terminal()) {
            for to in DeliveryStatus::ALL {
                let replay = matches!((from, to), (Failed | Delivered, Pending));
                assert_eq!(from.can_transition_to(to), replay, "{from} -> {to}");
            }
        }
        for from in DeliveryStatus::ALL.into_iter().filter(|s| !s.is_terminal()) {
            assert!(from.can_transition_to(Cancelled), "{from} can be cancelled");
        }
    }

    #[test]
    fn statuses_round_trip_through_text() {
        for status in DeliveryStatus::ALL {
            assert_eq!(status.as_str().parse::<DeliveryStatus>(), Ok(status));
            assert_eq!(
                serde_json::to_string(&status).expect("serialises"),
                format!("\"{}\"", status.as_str())
            );
        }
        assert!("done".parse::<DeliveryStatus>().is_err());
    }

    #[test]
    fn event_status_summarises_deliveries() {
        assert_eq!(summarise_event_status([]), Delivered);
        assert_eq!(summarise_event_status([Delivered, Delivered]), Delivered);
        assert_eq!(summarise_event_status([Delivered, Pending]), Pending);
        assert_eq!(
            summarise_event_status([Retrying, Pending, Delivered]),
            Retrying
        );
        assert_eq!(summarise_event_status([Retrying, Processing]), Processing);
        assert_eq!(summarise_event_status([Delivered, Failed]), Failed);
        assert_eq!(summarise_event_status([Delivered, Cancelled]), Delivered);
        assert_eq!(summarise_event_status([Cancelled, Cancelled]), Cancelled);
        assert_eq!(summarise_event_status([Failed, Pending]), Pending);
    }

    fn status() -> impl Strategy<Value = DeliveryStatus> {
        prop::sample::select(DeliveryStatus::ALL.to_vec())
    }

    proptest! {
        #[test]
        fn summary_is_terminal_exactly_when_every_delivery_is(
            statuses in prop::collection::vec(status(), 0..8)
        ) {
            let summary = summarise_event_status(statuses.iter().copied());
            prop_assert_eq!(summary.is_terminal(), statuses.iter().all(|s| s.is_terminal()));
            prop_assert!(statuses.is_empty() || statuses.contains(&summary));
        }
    }
}
