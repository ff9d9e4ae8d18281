//! Query strings of the list routes: page size, opaque cursors, RFC 3339 times and repeatable
//! filters, each refused with `422 invalid_parameter` naming the parameter and why.

use chrono::{DateTime, Utc};
use dispatch_domain::DeliveryStatus;

use crate::error::ApiError;

/// Page size when `limit` is absent.
pub const DEFAULT_LIMIT: i64 = 50;
/// Largest page of events, deliveries and attempts.
pub const MAX_LIMIT: i64 = 250;

fn invalid(param: &str, message: impl Into<String>) -> ApiError {
    ApiError::InvalidParam {
        param: param.to_owned(),
        message: message.into(),
    }
}

/// A time window: from (inclusive), to (exclusive); either may be open.
pub type Window = (Option<DateTime<Utc>>, Option<DateTime<Utc>>);

/// A parsed query string. Unknown parameters are ignored; a parameter that is not repeatable
/// given twice is refused.
pub struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    pub fn parse(query_string: &str) -> Result<Self, ApiError> {
        let pairs = serde_urlencoded::from_str::<Vec<(String, String)>>(query_string)
            .map_err(|e| invalid("query", format!("is not a valid query string: {e}")))?;
        Ok(Self { pairs })
    }

    /// The one value of `name`, if given (an empty value is a value: a filter given empty is
    /// refused by its own check, as the document's formats and enums say).
    pub fn single<'a>(&'a self, name: &'a str) -> Result<Option<&'a str>, ApiError> {
        let mut values = self.all(name);
        let first = values.next();
        if values.next().is_some() {
            return Err(invalid(name, "may be given only once"));
        }
        Ok(first)
    }

    /// Like [`Query::single`], an empty value counting as absent (`cursor=`: the first page).
    pub fn single_or_empty<'a>(&'a self, name: &'a str) -> Result<Option<&'a str>, ApiError> {
        Ok(self.single(name)?.filter(|v| !v.is_empty()))
    }

    /// Every value of `name`, in order.
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.pairs
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// `limit`: 1 to `max`, default [`DEFAULT_LIMIT`].
    pub fn limit(&self, max: i64) -> Result<i64, ApiError> {
        match self.single("limit")? {
            None => Ok(DEFAULT_LIMIT.min(max)),
            Some(text) => text
                .parse::<i64>()
                .ok()
                .filter(|n| (1..=max).contains(n))
                .ok_or_else(|| {
                    invalid(
                        "limit",
                        format!("must be a whole number from 1 to {max}, got {text:?}"),
                    )
                }),
        }
    }

    /// A keyset page by text id: `limit` (1 to `max`) and the `cursor` (the previous page's
    /// last id, checked as `GET /subscriptions` checks it; absent or empty: the first page).
    pub fn id_page(&self, max: i64) -> Result<(i64, Option<&str>), ApiError> {
        let limit = self.limit(max)?;
        let cursor = self.single_or_empty("cursor")?;
        if let Some(c) = cursor {
            crate::routes::subscriptions::check_cursor(c)?;
        }
        Ok((limit, cursor))
    }

    /// An RFC 3339 time, such as `2026-12-01T08:00:00Z`.
    pub fn time(&self, name: &str) -> Result<Option<DateTime<Utc>>, ApiError> {
        self.single(name)?
            .map(|text| {
                DateTime::parse_from_rfc3339(text)
                    .map(|t| t.with_timezone(&Utc))
                    .map_err(|e| {
                        invalid(
                            name,
                            format!(
                                "must be an RFC 3339 time such as 2026-12-01T08:00:00Z, got \
                                 {text:?} ({e})"
                            ),
                        )
                    })
            })
            .transpose()
    }

    /// An id as the API accepts them (else no row can match: refused rather than answered empty).
    pub fn id<T>(
        &self,
        name: &str,
        parse: impl Fn(&str) -> Result<T, dispatch_domain::ParseError>,
    ) -> Result<Option<String>, ApiError> {
        self.single(name)?
            .map(|text| {
                parse(text)
                    .map(|_| text.to_owned())
                    .map_err(|e| invalid(name, e.to_string()))
            })
            .transpose()
    }

    /// Every `status` given (repeatable), de-duplicated, in lifecycle order.
    pub fn statuses(&self) -> Result<Vec<DeliveryStatus>, ApiError> {
        let mut statuses = Vec::new();
        for text in self.all("status") {
            let status = parse_status(text)?;
            if !statuses.contains(&status) {
                statuses.push(status);
            }
        }
        statuses.sort();
        Ok(statuses)
    }

    /// `received_after` < `received_before` (or the like), when both are given.
    pub fn window(&self, after: &str, before: &str) -> Result<Window, ApiError> {
        let (from, to) = (self.time(after)?, self.time(before)?);
        if let (Some(from), Some(to)) = (from, to)
            && from >= to
        {
            return Err(invalid(before, format!("must be later than {after}")));
        }
        Ok((from, to))
    }
}

/// A delivery status by name.
pub fn parse_status(text: &str) -> Result<DeliveryStatus, ApiError> {
    text.parse::<DeliveryStatus>().map_err(|_| {
        invalid(
            "status",
            format!(
                "must be one of {}, got {text:?}",
                DeliveryStatus::ALL.map(DeliveryStatus::as_str).join(", ")
            ),
        )
    })
}

/// A cursor that is a row id (deliveries, attempts): its decimal text.
pub fn id_cursor(query: &Query) -> Result<Option<i64>, ApiError> {
    query
        .single_or_empty("cursor")?
        .map(|text| {
            text.parse::<i64>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| invalid("cursor", "is not a cursor this API returned"))
        })
        .transpose()
}

/// Reads an event cursor (its text is [`dispatch_store::queries::listing::EventCursor::text`]).
pub fn event_cursor(
    query: &Query,
) -> Result<Option<dispatch_store::queries::listing::EventCursor>, ApiError> {
    let Some(text) = query.single_or_empty("cursor")? else {
        return Ok(None);
    };
    dispatch_store::queries::listing::EventCursor::parse(text)
        .map(Some)
        .ok_or_else(|| invalid("cursor", "is not a cursor this API returned"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(text: &str) -> Query {
        Query::parse(text).expect("parses")
    }

    #[test]
    fn limits_default_and_are_bounded() {
        assert_eq!(q("").limit(250).ok(), Some(50));
        assert_eq!(q("limit=250").limit(250).ok(), Some(250));
        for bad in ["limit=0", "limit=251", "limit=x", "limit=1&limit=2"] {
            assert!(q(bad).limit(250).is_err(), "{bad}");
        }
    }

    #[test]
    fn statuses_repeat_and_unknown_ones_are_refused() {
        let statuses = q("status=failed&status=pending&status=failed")
            .statuses()
            .expect("valid");
        assert_eq!(
            statuses,
            vec![DeliveryStatus::Pending, DeliveryStatus::Failed]
        );
        let e = q("status=lost").statuses().expect_err("unknown");
        assert!(e.to_string().contains("pending, processing"), "{e}");
    }

    #[test]
    fn empty_filters_are_refused_and_an_empty_cursor_is_the_first_page() {
        assert!(q("received_before=").time("received_before").is_err());
        assert!(q("limit=").limit(250).is_err());
        assert!(q("status=").statuses().is_err());
        assert_eq!(id_cursor(&q("cursor=")).ok(), Some(None));
        assert!(matches!(event_cursor(&q("cursor=")), Ok(None)));
    }

    #[test]
    fn times_are_rfc3339_and_windows_ordered() {
        assert!(
            q("received_after=2026-12-01T08:00:00Z")
                .time("received_after")
                .is_ok()
        );
        assert!(
            q("received_after=yesterday")
                .time("received_after")
                .is_err()
        );
        let e = q("a=2026-12-02T00:00:00Z&b=2026-12-01T00:00:00Z")
            .window("a", "b")
            .expect_err("reversed");
        assert!(e.to_string().contains("later than a"), "{e}");
    }

    #[test]
    fn event_cursors_round_trip_and_foreign_ones_are_refused() {
        let t = DateTime::from_timestamp_micros(1_764_950_400_123_456).expect("valid");
        let text = dispatch_store::queries::listing::EventCursor::after(t, "evt.1:a").text();
        let cursor = event_cursor(&q(&format!("cursor={text}")))
            .expect("valid")
            .expect("given");
        assert_eq!((cursor.received_at, cursor.id.as_str()), (t, "evt.1:a"));
        for bad in ["cursor=.", "cursor=x.evt", "cursor=12", "cursor=1.a%20b"] {
            assert!(event_cursor(&q(bad)).is_err(), "{bad}");
        }
        assert!(id_cursor(&q("cursor=-4")).is_err());
        assert_eq!(id_cursor(&q("cursor=17")).ok(), Some(Some(17)));
    }
}
