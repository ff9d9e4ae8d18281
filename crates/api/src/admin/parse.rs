//! The values of the admin commands' flags: ids checked as the API checks them, RFC 3339 times
//! and retention ages (`30d`). Each is checked while the flags are parsed, so a mistake is
//! reported before anything touches the database.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use dispatch_domain::{EventId, SubscriptionId};

/// The longest `--older-than` accepted (100 years): enough for any retention, far from overflow.
pub const MAX_AGE_DAYS: u64 = 36_500;

/// A tenant id (`[a-z0-9_-]`, 1–40 characters).
pub fn tenant_id(text: &str) -> Result<dispatch_domain::TenantId, String> {
    dispatch_domain::TenantId::parse(text).map_err(|e| e.to_string())
}

pub fn event_id(value: &str) -> Result<String, String> {
    EventId::parse(value)
        .map(|id| id.into_inner())
        .map_err(|e| format!("not an event id: {e}"))
}

pub fn subscription_id(value: &str) -> Result<String, String> {
    SubscriptionId::parse(value)
        .map(|id| id.into_inner())
        .map_err(|e| format!("not a subscription id: {e}"))
}

/// An RFC 3339 timestamp with its offset (`2026-12-01T08:00:00Z`, `…+02:00`).
pub fn rfc3339(value: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(value.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            format!(
                "expected an RFC 3339 time with a date, a time and an offset, such as \
                 2026-12-01T08:00:00Z or 2026-12-01T10:00:00+02:00 ({e})"
            )
        })
}

/// A positive whole number with a unit: `90s`, `90m`, `12h`, `30d`.
pub fn age(value: &str) -> Result<Duration, String> {
    let value = value.trim();
    let digits = value.chars().take_while(char::is_ascii_digit).count();
    let (number, unit) = value.split_at(digits);
    if number.is_empty() {
        return Err(format!(
            "expected a whole number and a unit (s, m, h or d), such as 30d, 12h or 90m; \
             got {value:?}"
        ));
    }
    let seconds_per_unit: u64 = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "" => {
            return Err(format!(
                "{value:?} has no unit: add s, m, h or d (e.g. {value}d)"
            ));
        }
        other => {
            return Err(format!(
                "unknown unit {other:?} in {value:?}: use s, m, h or d (e.g. 30d)"
            ));
        }
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{value:?} is too large"))?;
    let seconds = n
        .checked_mul(seconds_per_unit)
        .filter(|s| *s <= MAX_AGE_DAYS * 86_400)
        .ok_or_else(|| format!("{value:?} is too large: at most {MAX_AGE_DAYS}d"))?;
    if seconds == 0 {
        return Err(format!("{value:?} must be longer than zero"));
    }
    Ok(Duration::from_secs(seconds))
}

/// A time as the commands print it: `2026-12-01T08:00:00Z`.
pub fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_take_a_whole_number_and_a_unit() {
        assert_eq!(age("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(age("90m"), Ok(Duration::from_secs(90 * 60)));
        assert_eq!(age("12h"), Ok(Duration::from_secs(12 * 3600)));
        assert_eq!(age("30d"), Ok(Duration::from_secs(30 * 86_400)));
        assert_eq!(age(" 7d "), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(age("36500d"), Ok(Duration::from_secs(36_500 * 86_400)));
    }

    #[test]
    fn bad_ages_are_refused_with_a_reason() {
        let refused = |value: &str, needle: &str| {
            let err = age(value).expect_err(value);
            assert!(err.contains(needle), "{value:?}: {err}");
        };
        refused("30", "has no unit");
        refused("30y", "unknown unit \"y\"");
        refused("30 d", "unknown unit \" d\"");
        refused("30D", "unknown unit \"D\"");
        refused("1h30m", "unknown unit \"h30m\"");
        refused("d", "expected a whole number and a unit");
        refused("", "expected a whole number and a unit");
        refused("-5d", "expected a whole number and a unit");
        refused("1.5h", "unknown unit \".5h\"");
        refused("0d", "longer than zero");
        refused("0s", "longer than zero");
        refused("36501d", "at most 36500d");
        refused("99999999999999999999999d", "too large");
        refused("999999999999999999h", "too large");
    }

    #[test]
    fn times_keep_their_offset_and_print_in_utc() {
        let t = rfc3339("2026-12-01T10:00:00+02:00").expect("valid");
        assert_eq!(timestamp(t), "2026-12-01T08:00:00Z");
        assert!(rfc3339("2026-12-01").is_err());
    }
}
