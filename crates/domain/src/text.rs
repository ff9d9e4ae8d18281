//! Free-text fields with bounds: an event's `source`.

use std::fmt;

use crate::error::{ParseError, check_length};

/// Longest `source` accepted, in characters.
pub const MAX_SOURCE_LEN: usize = 255;

/// The producing system's name, e.g. `billing-service`: 1–255 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct Source(String);

impl Source {
    pub fn parse(value: &str) -> Result<Self, ParseError> {
        check_length(value, MAX_SOURCE_LEN)?;
        if let Some((position, found)) = value.chars().enumerate().find(|(_, c)| c.is_control()) {
            return Err(ParseError::InvalidChar {
                found,
                position,
                allowed: "any character except control characters",
            });
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_accepts_unicode_and_rejects_control_characters() {
        assert!(Source::parse("billing-service").is_ok());
        assert!(Source::parse("café ☕").is_ok());
        assert!(Source::parse("a\nb").is_err());
        assert_eq!(Source::parse(""), Err(ParseError::Empty));
        assert!(Source::parse(&"s".repeat(MAX_SOURCE_LEN + 1)).is_err());
    }
}
