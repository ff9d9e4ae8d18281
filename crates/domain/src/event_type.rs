//! Event types (`order.created`) and the subscription patterns that select them (`order.*`, `*`).
//!
//! An event type is one or more dot-separated segments of `[A-Za-z0-9_-]`. A pattern is either
//! `*` (every type), an exact type, or a type prefix followed by `.*`, which matches every type
//! that starts with that prefix and has at least one more segment. Matching is case-sensitive.
//!
//! Because a type has only a handful of patterns that can match it
//! ([`EventType::matching_patterns`]), the store finds the subscriptions for an event with one
//! indexed array-overlap query instead of scanning every subscription.

use std::fmt;

use crate::error::{ParseError, check_length};

/// Longest event type or pattern accepted, in characters.
pub const MAX_TYPE_LEN: usize = 128;
const SEGMENT_ALLOWED: &str = "segments of ASCII letters, digits, '_' or '-' separated by '.'";

fn validate_segment(segment: &str, offset: usize) -> Result<(), ParseError> {
    if segment.is_empty() {
        return Err(ParseError::Invalid(format!(
            "has an empty segment at position {offset}; {SEGMENT_ALLOWED}"
        )));
    }
    if let Some((i, found)) = segment
        .chars()
        .enumerate()
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-')))
    {
        return Err(ParseError::InvalidChar {
            found,
            position: offset + i,
            allowed: SEGMENT_ALLOWED,
        });
    }
    Ok(())
}

fn validate_segments(value: &str) -> Result<(), ParseError> {
    let mut offset = 0;
    for segment in value.split('.') {
        validate_segment(segment, offset)?;
        offset += segment.chars().count() + 1;
    }
    Ok(())
}

/// A validated event type such as `order.created`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct EventType(String);

impl EventType {
    pub fn parse(value: &str) -> Result<Self, ParseError> {
        check_length(value, MAX_TYPE_LEN)?;
        validate_segments(value)?;
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Every pattern text that matches this type: `*`, each `prefix.*` of a proper prefix, and
    /// the type itself. For `a.b.c`: `["*", "a.*", "a.b.*", "a.b.c"]`.
    pub fn matching_patterns(&self) -> Vec<String> {
        let mut patterns = vec!["*".to_owned()];
        for (i, c) in self.0.char_indices() {
            if c == '.' {
                patterns.push(format!("{}.*", &self.0[..i]));
            }
        }
        patterns.push(self.0.clone());
        patterns
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A subscription's selector of event types: `*`, `order.*` or an exact `order.created`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct Pattern(String);

impl Pattern {
    pub fn parse(value: &str) -> Result<Self, ParseError> {
        check_length(value, MAX_TYPE_LEN)?;
        if value == "*" {
            return Ok(Self(value.to_owned()));
        }
        let exact = value.strip_suffix(".*").unwrap_or(value);
        if exact.contains('*') {
            return Err(ParseError::Invalid(
                "'*' is allowed only as the whole pattern or as a final '.*' segment".to_owned(),
            ));
        }
        validate_segments(exact)?;
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether an event of type `event_type` is selected by this pattern.
    pub fn matches(&self, event_type: &EventType) -> bool {
        let t = event_type.as_str();
        if self.0 == "*" {
            return true;
        }
        match self.0.strip_suffix('*') {
            // `prefix.*`: the type must start with `prefix.` and have something after it.
            Some(prefix_with_dot) => {
                t.len() > prefix_with_dot.len() && t.starts_with(prefix_with_dot)
            }
            None => self.0 == t,
        }
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn ty(s: &str) -> EventType {
        EventType::parse(s).expect("valid type")
    }
    fn pat(s: &str) -> Pattern {
        Pattern::parse(s).expect("valid pattern")
    }

    #[test]
    fn event_types_are_dot_separated_segments() {
        assert!(EventType::parse("order.created").is_ok());
        assert!(EventType::parse("Order_v2.line-item.added").is_ok());
        assert!(EventType::parse("single").is_ok());
        for bad in ["", ".a", "a.", "a..b", "a b", "a.*", "*", "ä"] {
            assert!(EventType::parse(bad).is_err(), "{bad:?} must be refused");
        }
        assert!(EventType::parse(&"a".repeat(MAX_TYPE_LEN + 1)).is_err());
    }

    #[test]
    fn patterns_allow_a_wildcard_only_as_the_last_segment() {
        for good in ["*", "order.*", "order.created", "a.b.*"] {
            assert!(Pattern::parse(good).is_ok(), "{good:?} must be accepted");
        }
        for bad in [
            "",
            "order*",
            "*.created",
            "a.*.b",
            "**",
            "a.**",
            ".*",
            "a..*",
        ] {
            assert!(Pattern::parse(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn wildcard_patterns_match_as_documented() {
        assert!(pat("*").matches(&ty("anything.at.all")));
        assert!(pat("order.*").matches(&ty("order.created")));
        assert!(pat("order.*").matches(&ty("order.item.added")));
        assert!(!pat("order.*").matches(&ty("order")));
        assert!(!pat("order.*").matches(&ty("orders.created")));
        assert!(pat("order.created").matches(&ty("order.created")));
        assert!(!pat("order.created").matches(&ty("order.created.late")));
        assert!(!pat("Order.*").matches(&ty("order.created")));
    }

    #[test]
    fn matching_patterns_lists_every_selector_of_a_type() {
        assert_eq!(
            ty("a.b.c").matching_patterns(),
            ["*", "a.*", "a.b.*", "a.b.c"]
        );
        assert_eq!(ty("a").matching_patterns(), ["*", "a"]);
    }

    fn segment() -> impl Strategy<Value = String> {
        // A small alphabet so that generated types and patterns often share prefixes.
        "[ab_-]{1,3}"
    }

    fn event_type() -> impl Strategy<Value = EventType> {
        prop::collection::vec(segment(), 1..5).prop_map(|s| ty(&s.join(".")))
    }

    fn pattern() -> impl Strategy<Value = Pattern> {
        prop_oneof![
            Just(pat("*")),
            prop::collection::vec(segment(), 1..5).prop_map(|s| pat(&s.join("."))),
            prop::collection::vec(segment(), 1..4).prop_map(|s| pat(&format!("{}.*", s.join(".")))),
        ]
    }

    proptest! {
        #[test]
        fn matches_agrees_with_matching_patterns(p in pattern(), t in event_type()) {
            let listed = t.matching_patterns().iter().any(|m| m == p.as_str());
            prop_assert_eq!(p.matches(&t), listed);
        }

        #[test]
        fn every_type_matches_itself_and_the_catch_all(t in event_type()) {
            prop_assert!(pat(t.as_str()).matches(&t));
            prop_assert!(pat("*").matches(&t));
        }

        #[test]
        fn prefix_pattern_matches_exactly_the_longer_types_under_it(
            prefix in prop::collection::vec(segment(), 1..3),
            t in event_type(),
        ) {
            let prefix = prefix.join(".");
            let p = pat(&format!("{prefix}.*"));
            let expected = t.as_str().len() > prefix.len() + 1
                && t.as_str().starts_with(&format!("{prefix}."));
            prop_assert_eq!(p.matches(&t), expected);
        }

        #[test]
        fn parsing_never_panics_and_accepted_text_round_trips(s in "\\PC{0,40}") {
            if let Ok(t) = EventType::parse(&s) { prop_assert_eq!(t.as_str(), s.as_str()); }
            if let Ok(p) = Pattern::parse(&s) { prop_assert_eq!(p.as_str(), s.as_str()); }
        }
    }
}
