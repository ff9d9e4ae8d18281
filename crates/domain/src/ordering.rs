//! Per-key ordering: the settings a subscription chooses (`ordering`, `on_exhausted`); the key
//! itself is [`crate::id::OrderingKey`]. The rule — one delivery of a key at a time, in ingest
//! order — is kept by the store's queue (ADR 011).

use std::fmt;
use std::str::FromStr;

use crate::error::ParseError;

/// Whether a subscription receives the events of one `ordering_key` one at a time, in order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Ordering {
    /// No ordering: deliveries are attempted concurrently, as they fall due (the default).
    #[default]
    None,
    /// Deliveries of events with the same `ordering_key` are attempted one at a time, in the
    /// order the events were accepted; events without a key are not ordered.
    PerKey,
}

/// What a per-key subscription does when the delivery at the head of a key fails for good.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnExhausted {
    /// The next delivery of the key proceeds; the failed one stays `failed` and replayable
    /// (the default).
    #[default]
    Skip,
    /// The key waits until an operator replays the failed delivery or skips it.
    Block,
}

macro_rules! named_enum {
    ($name:ident, $what:literal, [$($variant:ident => $text:literal),+ $(,)?]) => {
        impl $name {
            pub const ALL: [Self; [$($text),+].len()] = [$(Self::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text),+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = ParseError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::ALL.into_iter().find(|v| v.as_str() == s).ok_or_else(|| {
                    let names: Vec<&str> = Self::ALL.into_iter().map(Self::as_str).collect();
                    ParseError::Invalid(format!(
                        concat!("unknown ", $what, " {:?}: one of {}"),
                        s,
                        names.join(", ")
                    ))
                })
            }
        }
    };
}

named_enum!(Ordering, "ordering", [None => "none", PerKey => "per_key"]);
named_enum!(OnExhausted, "on_exhausted", [Skip => "skip", Block => "block"]);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_match_serde() {
        for o in Ordering::ALL {
            assert_eq!(o.as_str().parse::<Ordering>(), Ok(o));
            assert_eq!(serde_json::to_value(o).ok(), Some(o.as_str().into()));
        }
        for o in OnExhausted::ALL {
            assert_eq!(o.as_str().parse::<OnExhausted>(), Ok(o));
            assert_eq!(serde_json::to_value(o).ok(), Some(o.as_str().into()));
        }
    }

    #[test]
    fn unknown_names_say_what_is_allowed() {
        let err = "perkey".parse::<Ordering>().err().map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("unknown ordering \"perkey\": one of none, per_key")
        );
        assert!("Skip".parse::<OnExhausted>().is_err());
        assert_eq!(Ordering::default(), Ordering::None);
        assert_eq!(OnExhausted::default(), OnExhausted::Skip);
    }
}
