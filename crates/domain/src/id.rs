//! Event and subscription identifiers: short, printable, URL-safe strings.

use std::fmt;

use crate::error::{ParseError, check_length};

/// Longest identifier accepted, in characters.
pub const MAX_ID_LEN: usize = 128;
const ID_ALLOWED: &str = "ASCII letters, digits, '_', '-', '.', ':'";

fn validate_id(value: &str) -> Result<(), ParseError> {
    check_length(value, MAX_ID_LEN)?;
    if let Some((position, found)) = value
        .chars()
        .enumerate()
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':')))
    {
        return Err(ParseError::InvalidChar {
            found,
            position,
            allowed: ID_ALLOWED,
        });
    }
    if value == "." || value == ".." {
        // Clients resolve them as path steps: `/events/..` is `/`, so such a resource could
        // never be read.
        return Err(ParseError::Invalid(format!(
            "{value:?} is not an id: URLs treat it as a path step, so it could never be read back"
        )));
    }
    Ok(())
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Parses an identifier: 1–128 characters from `[A-Za-z0-9_.:-]`, not `.` or `..`.
            pub fn parse(value: &str) -> Result<Self, ParseError> {
                validate_id(value)?;
                Ok(Self(value.to_owned()))
            }

            /// A new, unique, time-ordered identifier (UUIDv7 with a readable prefix).
            pub fn generate() -> Self {
                Self(format!(concat!($prefix, "{}"), uuid::Uuid::now_v7().simple()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_inner(self) -> String {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

string_id!(
    /// The producer's identifier of an event; the idempotency key of ingestion.
    EventId,
    "evt_"
);
string_id!(
    /// A subscription's identifier, chosen by the caller or generated.
    SubscriptionId,
    "sub_"
);
string_id!(
    /// An event's ordering key (`ordering_key`): a per-key subscription receives the events of
    /// one key one at a time, in the order they were accepted.
    OrderingKey,
    "key_"
);
string_id!(
    /// A replay's identifier (`POST /replays`), always generated.
    ReplayId,
    "rpl_"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_accept_the_documented_alphabet() {
        assert!(EventId::parse("evt_123").is_ok());
        assert!(EventId::parse("a.b:c-d_E9").is_ok());
        assert!(SubscriptionId::parse(&"x".repeat(MAX_ID_LEN)).is_ok());
        assert!(OrderingKey::parse("customer:42").is_ok());
        assert!(OrderingKey::parse("a b").is_err());
    }

    #[test]
    fn ids_reject_empty_long_and_foreign_characters() {
        assert_eq!(EventId::parse(""), Err(ParseError::Empty));
        assert_eq!(
            EventId::parse(&"x".repeat(MAX_ID_LEN + 1)),
            Err(ParseError::TooLong {
                max: MAX_ID_LEN,
                len: MAX_ID_LEN + 1
            })
        );
        assert!(matches!(
            EventId::parse("evt 1"),
            Err(ParseError::InvalidChar {
                found: ' ',
                position: 3,
                ..
            })
        ));
        assert!(SubscriptionId::parse("sub/1").is_err());
        // Found by fuzzing: an event "." was accepted, then unreadable (`/events/.` is
        // `/events/` to every client).
        for dots in [".", ".."] {
            assert!(matches!(EventId::parse(dots), Err(ParseError::Invalid(_))));
            assert!(SubscriptionId::parse(dots).is_err());
        }
        assert!(EventId::parse("...").is_ok());
        assert!(EventId::parse(".a").is_ok());
        assert!(SubscriptionId::parse("é").is_err());
    }

    #[test]
    fn generated_ids_are_valid_prefixed_and_distinct() {
        let a = SubscriptionId::generate();
        let b = SubscriptionId::generate();
        assert!(a.as_str().starts_with("sub_"));
        assert!(SubscriptionId::parse(a.as_str()).is_ok());
        assert_ne!(a, b);
        assert!(EventId::generate().as_str().starts_with("evt_"));
    }
}
