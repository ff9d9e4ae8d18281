//! Distributed tracing: the W3C `traceparent` header (parsed strictly, written for the current
//! span) and the bridge between `tracing` spans and OpenTelemetry contexts.
//!
//! Dispatch always gives its spans OpenTelemetry ids once [`crate::init`] has run, whether or
//! not spans are exported, so a producer's trace is carried through to the receiver and every
//! delivery log line can name its trace. Without an installed subscriber (a library user, most
//! tests) the helpers here return `None` and callers fall back to what they were given.

use std::fmt;

use opentelemetry::Context;
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The header's name, as sent and accepted (header names are case-insensitive).
pub const TRACEPARENT: &str = "traceparent";

/// A valid W3C Trace Context `traceparent` (version `00`): a trace id, the id of the parent span
/// and the trace flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub flags: TraceFlags,
}

/// Whether every byte is a lowercase hex digit (the header allows no uppercase).
fn is_lower_hex(s: &str) -> bool {
    s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl TraceParent {
    /// Parses a header value, or `None` when it is not valid: W3C says an invalid `traceparent`
    /// is ignored (a new trace starts), never an error.
    ///
    /// Version `00` is exactly `00-<32 hex>-<16 hex>-<2 hex>` (55 characters, lowercase hex),
    /// with neither id all zeros. A later version (not `ff`) is read the same way from its first
    /// 55 characters, as long as what follows starts with `-`. Surrounding blanks are ignored.
    pub fn parse(header: &str) -> Option<Self> {
        let s = header.trim_matches([' ', '\t']);
        if s.len() < 55 || !s.is_ascii() {
            return None;
        }
        let version = &s[0..2];
        if !is_lower_hex(version) || version == "ff" {
            return None;
        }
        if version == "00" && s.len() != 55 {
            return None;
        }
        if s.len() > 55 && s.as_bytes()[55] != b'-' {
            return None;
        }
        let bytes = s.as_bytes();
        if bytes[2] != b'-' || bytes[35] != b'-' || bytes[52] != b'-' {
            return None;
        }
        let (trace_hex, span_hex, flags_hex) = (&s[3..35], &s[36..52], &s[53..55]);
        if !is_lower_hex(trace_hex) || !is_lower_hex(span_hex) || !is_lower_hex(flags_hex) {
            return None;
        }
        let trace_id = TraceId::from_hex(trace_hex).ok()?;
        let span_id = SpanId::from_hex(span_hex).ok()?;
        let flags = u8::from_str_radix(flags_hex, 16).ok()?;
        if trace_id == TraceId::INVALID || span_id == SpanId::INVALID {
            return None;
        }
        Some(Self {
            trace_id,
            span_id,
            // Only the sampled bit has a meaning in version 00.
            flags: TraceFlags::new(flags) & TraceFlags::SAMPLED,
        })
    }

    /// The ids of a valid span context.
    pub fn of(cx: &SpanContext) -> Option<Self> {
        cx.is_valid().then(|| Self {
            trace_id: cx.trace_id(),
            span_id: cx.span_id(),
            flags: cx.trace_flags() & TraceFlags::SAMPLED,
        })
    }

    /// This parent as the context of a span in another process.
    pub fn remote_span_context(&self) -> SpanContext {
        SpanContext::new(
            self.trace_id,
            self.span_id,
            self.flags,
            true,
            TraceState::NONE,
        )
    }

    /// The trace id as 32 lowercase hex digits (as log lines and trace back-ends show it).
    pub fn trace_id_hex(&self) -> String {
        self.trace_id.to_string()
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{}-{}-{:02x}",
            self.trace_id,
            self.span_id,
            self.flags.to_u8()
        )
    }
}

/// The OpenTelemetry context a `traceparent` header names: a remote parent when the header is
/// valid, an empty context (so a new trace starts) when it is not.
pub fn extract_traceparent(header: &str) -> Context {
    match TraceParent::parse(header) {
        Some(parent) => Context::new().with_remote_span_context(parent.remote_span_context()),
        None => Context::new(),
    }
}

/// Makes `parent` (a span in another process) the OpenTelemetry parent of `span`, which must not
/// have been entered yet. Returns whether it was set: `false` when no OpenTelemetry layer is
/// installed, the span is disabled or it has already started.
pub fn set_parent(span: &tracing::Span, parent: &TraceParent) -> bool {
    span.set_parent(Context::new().with_remote_span_context(parent.remote_span_context()))
        .is_ok()
}

/// Like [`set_parent`] for a header value: `false` also for a missing or invalid one.
pub fn set_remote_parent(span: &tracing::Span, traceparent: Option<&str>) -> bool {
    traceparent
        .and_then(TraceParent::parse)
        .is_some_and(|parent| set_parent(span, &parent))
}

/// The ids of `span` in OpenTelemetry, if it has any (an OpenTelemetry layer is installed and
/// the span is enabled).
pub fn trace_parent_of(span: &tracing::Span) -> Option<TraceParent> {
    TraceParent::of(span.context().span().span_context())
}

/// The `traceparent` header naming `span` as the parent, to send on a request made within it.
pub fn traceparent_of(span: &tracing::Span) -> Option<String> {
    trace_parent_of(span).map(|p| p.to_string())
}

/// The `traceparent` of the current span.
pub fn current_traceparent() -> Option<String> {
    traceparent_of(&tracing::Span::current())
}

/// The trace id (32 hex digits) of `span`, for log lines.
pub fn trace_id_of(span: &tracing::Span) -> Option<String> {
    trace_parent_of(span).map(|p| p.trace_id_hex())
}

/// The trace id of the current span.
pub fn current_trace_id() -> Option<String> {
    trace_id_of(&tracing::Span::current())
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_header_parses_and_prints_back_unchanged() {
        let parent = TraceParent::parse(VALID).expect("valid");
        assert_eq!(
            parent.trace_id_hex(),
            "4bf92f3577b34da6a3ce929d0e0e4736",
            "trace id"
        );
        assert_eq!(parent.span_id.to_string(), "00f067aa0ba902b7");
        assert!(parent.flags.is_sampled());
        assert_eq!(parent.to_string(), VALID);
        let unsampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
        let parent = TraceParent::parse(unsampled).expect("valid");
        assert!(!parent.flags.is_sampled());
        assert_eq!(parent.to_string(), unsampled);
    }

    #[test]
    fn surrounding_blanks_are_ignored_and_unknown_flags_dropped() {
        let parent = TraceParent::parse(&format!(" \t{VALID} ")).expect("valid");
        assert_eq!(parent.to_string(), VALID);
        let odd_flags = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03";
        assert_eq!(
            TraceParent::parse(odd_flags).expect("valid").to_string(),
            VALID
        );
    }

    #[test]
    fn invalid_headers_are_refused() {
        for bad in [
            "",
            "garbage",
            // One character short and one too long for version 00.
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
            // Uppercase hex.
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0A",
            // All-zero ids.
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            // Version ff is forbidden; a version must be hex.
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            // Wrong separators, non-hex characters.
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7_01",
            "00-4bf92f3577b34da6a3ce929d0e0e473z-00f067aa0ba902b7-01",
            "00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-+0f067aa0ba902b7-01",
            // Not ASCII (a multi-byte character must not split a slice).
            "00-4bf92f3577b34da6a3ce929d0e0e47é-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad:?} must be refused");
            assert!(
                !extract_traceparent(bad).span().span_context().is_valid(),
                "{bad:?} must give an empty context"
            );
        }
    }

    #[test]
    fn later_versions_are_read_from_their_first_fields() {
        let future = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-comes-next";
        assert_eq!(
            TraceParent::parse(future).expect("valid").to_string(),
            VALID
        );
        let exact = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(TraceParent::parse(exact).expect("valid").to_string(), VALID);
        let glued = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x";
        assert_eq!(TraceParent::parse(glued), None);
    }

    #[test]
    fn a_valid_header_extracts_a_remote_parent() {
        let cx = extract_traceparent(VALID);
        let span = cx.span();
        let sc = span.span_context();
        assert!(sc.is_valid() && sc.is_remote() && sc.is_sampled());
        assert_eq!(
            sc.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(TraceParent::of(sc).expect("valid").to_string(), VALID);
    }

    #[test]
    fn without_a_subscriber_spans_have_no_trace() {
        let span = tracing::info_span!("orphan");
        assert_eq!(traceparent_of(&span), None);
        assert_eq!(current_trace_id(), None);
        assert!(!set_remote_parent(&span, Some(VALID)));
    }
}
