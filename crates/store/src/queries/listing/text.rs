//! The event list's filters and cursor as operators write them: a type pattern becomes an
//! exact type or a prefix, and the opaque cursor is `<received_at in microseconds>.<event id>`.
//! The JSON list and the console both read and write them here.

use chrono::{DateTime, Utc};
use dispatch_domain::Pattern;

use super::{EventCursor, EventFilter};

impl EventFilter {
    /// Narrows to events whose type `pattern` selects (`*` selects every type).
    pub fn select_type(&mut self, pattern: &Pattern) {
        match pattern.as_str().strip_suffix('*') {
            Some("") => {}
            Some(prefix) => self.type_prefix = Some(prefix.to_owned()),
            None => self.type_exact = Some(pattern.as_str().to_owned()),
        }
    }
}

impl EventCursor {
    /// The cursor after the event received at `received_at` with `id`.
    pub fn after(received_at: DateTime<Utc>, id: &str) -> Self {
        Self {
            received_at,
            id: id.to_owned(),
        }
    }

    /// Its opaque text.
    pub fn text(&self) -> String {
        format!("{}.{}", self.received_at.timestamp_micros(), self.id)
    }

    /// Reads a cursor [`EventCursor::text`] wrote; `None` for anything else.
    pub fn parse(text: &str) -> Option<Self> {
        let (micros, id) = text.split_once('.')?;
        let received_at = DateTime::from_timestamp_micros(micros.parse::<i64>().ok()?)?;
        dispatch_domain::EventId::parse(id).ok()?;
        Some(Self::after(received_at, id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_become_exact_types_or_prefixes() {
        let mut f = EventFilter::default();
        f.select_type(&Pattern::parse("order.*").expect("valid"));
        assert_eq!(f.type_prefix.as_deref(), Some("order."));
        let mut f = EventFilter::default();
        f.select_type(&Pattern::parse("order.created").expect("valid"));
        assert_eq!(f.type_exact.as_deref(), Some("order.created"));
        let mut f = EventFilter::default();
        f.select_type(&Pattern::parse("*").expect("valid"));
        assert_eq!(f, EventFilter::default());
    }

    #[test]
    fn cursors_round_trip_and_foreign_text_is_refused() {
        let t = DateTime::from_timestamp_micros(1_764_950_400_123_456).expect("valid");
        let cursor = EventCursor::after(t, "evt.1:a");
        assert_eq!(EventCursor::parse(&cursor.text()), Some(cursor));
        for bad in [".", "x.evt", "12", "1.a b"] {
            assert_eq!(EventCursor::parse(bad), None, "{bad}");
        }
    }
}
