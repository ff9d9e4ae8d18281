//! Payload filters: the limits on a subscription's SQL/JSON path predicate. PostgreSQL parses
//! and evaluates filters (`jsonb_path_match`); this module only bounds what one may use, reading
//! the canonical text PostgreSQL prints for a parsed `jsonpath` (keys and strings quoted).

/// Longest filter, in bytes (1 KiB).
pub const MAX_FILTER_BYTES: usize = 1024;

/// Why a filter is refused before PostgreSQL sees it, or once it has parsed it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {MAX_FILTER_BYTES} bytes (got {0})")]
    TooLong(usize),
    #[error("must not contain NUL characters")]
    Nul,
    #[error(
        "uses like_regex with a pattern not anchored with ^ ({0:?}): an unanchored regular \
         expression is tried at every position of every value; anchor it, or use `starts with`"
    )]
    UnanchoredRegex(String),
    #[error(
        "uses the recursive wildcard .** (it walks the whole event for every event): name the \
         path instead"
    )]
    RecursiveWildcard,
    #[error(
        "uses .datetime() (its comparisons depend on time zones and parse every value): compare \
         the ISO 8601 strings instead, which sort in time order"
    )]
    Datetime,
    #[error("uses the variable ${0}: filters are evaluated with no variables, only $ (the event)")]
    Variable(String),
}

/// The checks that need no parser: not empty, at most [`MAX_FILTER_BYTES`], no NUL.
pub fn check_text(filter: &str) -> Result<(), FilterError> {
    if filter.trim().is_empty() {
        return Err(FilterError::Empty);
    }
    if filter.len() > MAX_FILTER_BYTES {
        return Err(FilterError::TooLong(filter.len()));
    }
    if filter.contains('\0') {
        return Err(FilterError::Nul);
    }
    Ok(())
}

/// A piece of canonical jsonpath text: a string literal (unescaped) or the code between them.
#[derive(Debug, PartialEq)]
enum Piece {
    Code(String),
    Literal(String),
}

/// Splits canonical text into code and string literals (`"…"` with backslash escapes).
fn pieces(canonical: &str) -> Vec<Piece> {
    let mut out = Vec::new();
    let mut code = String::new();
    let mut chars = canonical.chars();
    while let Some(c) = chars.next() {
        if c != '"' {
            code.push(c);
            continue;
        }
        out.push(Piece::Code(std::mem::take(&mut code)));
        let mut literal = String::new();
        while let Some(c) = chars.next() {
            match c {
                '"' => break,
                '\\' => {
                    if let Some(next) = chars.next() {
                        literal.push('\\');
                        literal.push(next);
                    }
                }
                other => literal.push(other),
            }
        }
        out.push(Piece::Literal(literal));
    }
    out.push(Piece::Code(code));
    out
}

/// Checks the features a parsed filter uses, given the canonical text PostgreSQL prints for it
/// (`$1::jsonpath::text`): refuses what could be slow at fan-out (unanchored `like_regex`, the
/// recursive wildcard `.**`), `.datetime()`, and variables (`$"name"`), which fan-out never
/// binds. Reads code only, so a key or string that spells a keyword is not refused.
pub fn check_features(canonical: &str) -> Result<(), FilterError> {
    let pieces = pieces(canonical);
    for (i, piece) in pieces.iter().enumerate() {
        let Piece::Code(code) = piece else { continue };
        if code.contains(".**") {
            return Err(FilterError::RecursiveWildcard);
        }
        if code.contains(".datetime(") {
            return Err(FilterError::Datetime);
        }
        // `$` directly before a quoted name is a variable (the root `$` is followed by `.`,
        // `[`, a space or a parenthesis).
        if code.ends_with('$')
            && let Some(Piece::Literal(name)) = pieces.get(i + 1)
        {
            return Err(FilterError::Variable(format!("{name:?}")));
        }
        if code.trim_end().ends_with("like_regex")
            && let Some(Piece::Literal(pattern)) = pieces.get(i + 1)
            && !pattern.starts_with('^')
        {
            return Err(FilterError::UnanchoredRegex(pattern.clone()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use proptest::prelude::*;

    use super::*;

    // Canonical texts as PostgreSQL 15 prints them (`SELECT '…'::jsonpath::text`).
    #[test]
    fn bounded_features_pass() {
        for ok in [
            r#"($."data"."amount" > 100 && $."data"."currency" == "EUR")"#,
            r#"($."type" starts with "order.")"#,
            r#"exists ($."data"."vip")"#,
            r#"($."type" like_regex "^order\\.(paid|refunded)$" flag "i")"#,
            r#"strict ($."like_regex" == ".**")"#,
            r#"($."data"."items"[*]."sku" == "datetime(")"#,
        ] {
            assert_eq!(check_features(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn slow_or_unbound_features_are_refused_with_their_reason() {
        assert_eq!(
            check_features(r#"($."type" like_regex "paid" flag "i")"#),
            Err(FilterError::UnanchoredRegex("paid".into()))
        );
        assert_eq!(
            check_features(r#"($.**."a" == 1)"#),
            Err(FilterError::RecursiveWildcard)
        );
        assert_eq!(
            check_features(r#"($.**{2 to last}."a" == 1)"#),
            Err(FilterError::RecursiveWildcard)
        );
        assert_eq!(
            check_features(r#"($."a".datetime() < $."b".datetime("YYYY"))"#),
            Err(FilterError::Datetime)
        );
        assert_eq!(
            check_features(r#"($"x"."a" == 1)"#),
            Err(FilterError::Variable("\"x\"".into()))
        );
    }

    #[test]
    fn text_limits() {
        assert_eq!(check_text("  "), Err(FilterError::Empty));
        assert_eq!(check_text("a\0"), Err(FilterError::Nul));
        let long = format!("$.a == \"{}\"", "x".repeat(MAX_FILTER_BYTES));
        assert_eq!(check_text(&long), Err(FilterError::TooLong(long.len())));
        assert_eq!(check_text(&long[..MAX_FILTER_BYTES]), Ok(()));
    }

    proptest! {
        /// Whatever a string literal holds, it never trips a feature check.
        #[test]
        fn literals_never_trip_the_checks(s in "[ -~]{0,40}") {
            let escaped = s.replace('\\', "\\\\").replace('"', "\\\"");
            let canonical = format!(r#"($."type" == "{escaped}")"#);
            prop_assert_eq!(check_features(&canonical), Ok(()));
        }
    }
}
