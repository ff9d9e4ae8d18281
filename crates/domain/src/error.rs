//! The one error every domain constructor returns: what was wrong with the input and why.

use thiserror::Error;

/// Why a piece of input was refused. The message is written for the person who sent it.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ParseError {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {max} characters long (got {len})")]
    TooLong { max: usize, len: usize },
    #[error("contains {found:?} at position {position}; allowed: {allowed}")]
    InvalidChar {
        found: char,
        position: usize,
        allowed: &'static str,
    },
    #[error("{0}")]
    Invalid(String),
}

/// Checks the length bounds shared by every textual type: non-empty and at most `max` chars.
pub(crate) fn check_length(value: &str, max: usize) -> Result<(), ParseError> {
    if value.is_empty() {
        return Err(ParseError::Empty);
    }
    let len = value.chars().count();
    if len > max {
        return Err(ParseError::TooLong { max, len });
    }
    Ok(())
}
