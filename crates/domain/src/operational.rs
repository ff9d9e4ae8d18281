//! Operational events: the `dispatch.*` events Dispatch emits about its own subscriptions, their
//! types, the patterns that select them, and how often each may be emitted.
//!
//! They travel the same pipeline as producers' events (stored, fanned out, signed, retried), with
//! three differences that keep them trustworthy and quiet: producers may not post a type under
//! [`RESERVED_PREFIX`]; the catch-all pattern `*` does not select them (a subscription asks for
//! them by naming `dispatch.`: `dispatch.*`, `dispatch.circuit.*`, an exact type); and the
//! deliveries of an operational event never cause another one.

use std::time::Duration;

use crate::EventType;

/// Event types under this prefix are Dispatch's own.
pub const RESERVED_PREFIX: &str = "dispatch.";
/// The `source` of every operational event.
pub const SOURCE: &str = "dispatch";
/// The prefix of every operational event's id (producers' ids never start with it: see
/// [`is_reserved_id`]).
pub const ID_PREFIX: &str = "dispatch_";

/// A new operational event id: [`ID_PREFIX`] and a UUIDv7, so ids sort by time.
pub fn new_event_id() -> String {
    format!("{ID_PREFIX}{}", uuid::Uuid::now_v7().simple())
}

/// Whether `event_type` is one of Dispatch's own (reserved for operational and test events).
pub fn is_reserved(event_type: &str) -> bool {
    event_type.starts_with(RESERVED_PREFIX)
}

/// Whether an event id is in the operational events' namespace.
pub fn is_reserved_id(id: &str) -> bool {
    id.starts_with(ID_PREFIX)
}

/// The kinds of operational event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operational {
    /// A subscription was disabled (auto-disable: every attempt failed for too long).
    SubscriptionDisabled,
    /// A subscription has failed for 50 % or 90 % of its auto-disable threshold.
    SubscriptionFailing,
    /// A delivery failed for good (attempts exhausted, or a permanent failure).
    DeliveryExhausted,
    /// A destination's circuit opened.
    CircuitOpened,
    /// A destination's circuit closed again.
    CircuitClosed,
}

/// At most `max` events of one kind about one subscription per `per`; the rest are counted and
/// the count is reported by the next one sent (`suppressed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateBound {
    pub max: u32,
    pub per: Duration,
}

impl Operational {
    pub const ALL: [Operational; 5] = [
        Self::SubscriptionDisabled,
        Self::SubscriptionFailing,
        Self::DeliveryExhausted,
        Self::CircuitOpened,
        Self::CircuitClosed,
    ];

    pub fn event_type(self) -> &'static str {
        match self {
            Self::SubscriptionDisabled => "dispatch.subscription.disabled",
            Self::SubscriptionFailing => "dispatch.subscription.failing",
            Self::DeliveryExhausted => "dispatch.delivery.exhausted",
            Self::CircuitOpened => "dispatch.circuit.opened",
            Self::CircuitClosed => "dispatch.circuit.closed",
        }
    }

    /// How often it may be emitted about one subscription. A flapping circuit reports one
    /// opening (and one closing) per five minutes; a failing destination at most ten exhausted
    /// deliveries a minute. Disabling and its two warnings happen once per failing spell
    /// anyway; the bound only stops a subscription re-enabled over and over from flooding.
    pub fn rate_bound(self) -> RateBound {
        let (max, secs) = match self {
            Self::CircuitOpened | Self::CircuitClosed => (1, 300),
            Self::DeliveryExhausted => (10, 60),
            Self::SubscriptionDisabled | Self::SubscriptionFailing => (10, 3600),
        };
        RateBound {
            max,
            per: Duration::from_secs(secs),
        }
    }

    /// The patterns that select it, for the fan-out's array overlap: those of
    /// [`EventType::matching_patterns`] without the catch-all `*`.
    pub fn matching_patterns(self) -> Vec<String> {
        operational_patterns(self.event_type())
    }
}

/// The patterns selecting an operational event of `event_type`: every matching pattern but `*`.
pub fn operational_patterns(event_type: &str) -> Vec<String> {
    match EventType::parse(event_type) {
        Ok(t) => t
            .matching_patterns()
            .into_iter()
            .filter(|p| p != "*")
            .collect(),
        Err(_) => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Pattern;

    #[test]
    fn every_kind_is_a_valid_reserved_type() {
        for kind in Operational::ALL {
            let t = EventType::parse(kind.event_type()).expect("a valid type");
            assert!(is_reserved(t.as_str()), "{t}");
            assert!(kind.rate_bound().max >= 1);
        }
        assert!(!is_reserved("dispatcher.created"));
        assert!(!is_reserved("order.dispatch.sent"));
    }

    #[test]
    fn the_catch_all_does_not_select_operational_events_but_named_patterns_do() {
        let patterns = Operational::CircuitOpened.matching_patterns();
        assert_eq!(
            patterns,
            [
                "dispatch.*",
                "dispatch.circuit.*",
                "dispatch.circuit.opened"
            ]
        );
        assert!(!patterns.contains(&"*".to_owned()));
        // Every listed pattern really matches the type.
        let t = EventType::parse("dispatch.circuit.opened").expect("valid");
        for p in &patterns {
            assert!(Pattern::parse(p).expect("valid").matches(&t), "{p}");
        }
    }

    #[test]
    fn operational_ids_have_their_own_prefix() {
        assert!(is_reserved_id("dispatch_0193"));
        assert!(!is_reserved_id("evt_1"));
        assert!(is_reserved_id(&new_event_id()));
        assert_ne!(new_event_id(), new_event_id());
    }
}
