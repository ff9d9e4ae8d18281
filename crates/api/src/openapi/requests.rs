//! The request schemas, documentation only: bodies are parsed field by field by
//! `routes::events::parse_new_event`, `routes::subscriptions::parse_new_subscription` and their
//! kin, which these structs mirror (fields, types, limits). `null` counts as absent for every
//! field, so optional fields are nullable and required ones are not. Also the hand-built schemas
//! of free-form values (`data`, pattern lists, string maps) that the views share.

use serde::Deserialize;
use utoipa::ToSchema;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Schema, SchemaType, Type};

fn any_json_but_null(description: &str) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([
            Type::Object,
            Type::Array,
            Type::String,
            Type::Number,
            Type::Boolean,
        ]))
        .description(Some(description))
        .into()
}

/// `data` of a new event: any JSON value except `null`.
pub fn new_event_data() -> RefOr<Schema> {
    any_json_but_null(
        "The payload: any JSON value except `null` (object, array, string, number or boolean), \
         stored as PostgreSQL `jsonb`. Refused: a `\\u0000` character in any string or key, a \
         number larger than 1e300 in magnitude, nesting deeper than 64 arrays/objects.",
    )
}

/// `data` of a stored event, as read back.
pub fn stored_event_data() -> RefOr<Schema> {
    any_json_but_null(
        "The payload as stored in PostgreSQL `jsonb` and read back, not always byte-for-byte \
         what was sent: object keys sorted by code point at every level, the last of duplicate \
         keys kept, numbers read as 64-bit floats (`99.90` comes back as `99.9`).",
    )
}

/// `event_types` of a new subscription: 1–64 patterns (each `*`, an exact event type such as
/// `order.created`, or an event type followed by `.*`, at most 128 characters).
pub fn event_type_patterns() -> RefOr<Schema> {
    let pattern = ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(
            "`*` (every type), an exact event type (`order.created`), or an event type followed \
             by `.*` (`order.*`: every type that starts with `order.` and has at least one more \
             segment). `*` anywhere else is refused.",
        ))
        .min_length(Some(1))
        .max_length(Some(128))
        .pattern(Some(r"^(\*|[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*(\.\*)?)$"));
    ArrayBuilder::new()
        .items(pattern)
        .min_items(Some(1))
        .max_items(Some(64))
        .into()
}

/// `POST /events/batch`: 1 to 1000 events, each as for `POST /events`. Unknown fields of the
/// batch itself are refused (`422`); each item is checked on its own (see `events`).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // documentation only: never constructed
pub struct NewBatchRequest {
    #[schema(schema_with = batch_events)]
    pub events: Vec<serde_json::Value>,
}

/// `events` of a batch: 1–1000 items of any JSON. Each item is checked against
/// `NewEventRequest` on its own, and one that fails is answered in its own result (`invalid`),
/// never by refusing the batch: so the items' schema cannot forbid anything, or a client (or a
/// fuzzer) would expect the whole request to be refused.
pub fn batch_events() -> RefOr<Schema> {
    let item = ObjectBuilder::new()
        .schema_type(SchemaType::AnyValue)
        .description(Some(
            "An event as `NewEventRequest` describes it (the body of `POST /events`). Checked \
             on its own: an item that is not a valid event (unknown field, wrong type, invalid \
             value, not an object) does not fail the batch; its result has `status: invalid` \
             and an `error` whose `field` is `events[<index>].<field>`.",
        ));
    ArrayBuilder::new()
        .description(Some(
            "1 to 1000 events, each as the body of `POST /events`, stored in one transaction.",
        ))
        .items(item)
        .min_items(Some(1))
        .max_items(Some(1000))
        .into()
}

/// `POST /events`. Fields are checked in this order; the first failure is answered
/// `422 invalid_field` naming it. Unknown fields are refused.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // documentation only: never constructed
pub struct NewEventRequest {
    /// Chosen by the producer; the idempotency key. 1–128 characters from
    /// `A-Z a-z 0-9 _ - . :`, other than `.` and `..` (URLs treat those as path steps), not
    /// starting with `dispatch_` (the operational events' ids).
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = r"^(?!dispatch_)[A-Za-z0-9_.:-]{1,128}$",
        example = "evt_123"
    )]
    pub id: String,
    /// One or more segments of `A-Z a-z 0-9 _ -` separated by `.`; no empty segment, no `*`;
    /// 1–128 characters, case-sensitive; not starting with `dispatch.` (Dispatch's own
    /// operational events).
    #[serde(rename = "type")]
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = r"^(?!dispatch\.)[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$",
        example = "order.created"
    )]
    pub event_type: String,
    /// The producing system: 1–255 characters, no control characters.
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$",
        example = "billing-service"
    )]
    pub source: String,
    #[schema(schema_with = new_event_data)]
    pub data: serde_json::Value,
    /// Orders this event's deliveries to `ordering: per_key` subscriptions: those of events
    /// with the same key are attempted one at a time, in the order the events were accepted.
    /// Spelled like an id (1–128 characters from `A-Z a-z 0-9 _ - . :`, not `.` or `..`).
    /// Part of the event's content for idempotency. Omitted or null: not ordered.
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = r"^[A-Za-z0-9_.:-]{1,128}$",
        example = "customer:42"
    )]
    pub ordering_key: Option<String>,
}

/// `POST /subscriptions`. Fields are checked in this order; the first failure is answered
/// `422 invalid_field` naming it. Unknown fields are refused.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // documentation only: never constructed
pub struct NewSubscriptionRequest {
    /// Same rules as an event id. Omitted or null: generated as `sub_` + 32 lowercase hex
    /// digits. An id already used, also by a deleted subscription, is `409 subscription_exists`.
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = r"^[A-Za-z0-9_.:-]{1,128}$",
        example = "sub_123"
    )]
    pub id: Option<String>,
    /// An absolute `http` or `https` URL with a host and no `#fragment`, at most 2048
    /// characters. Answered normalised (host lower-cased, default port dropped, empty path `/`).
    #[schema(
        format = "uri",
        max_length = 2048,
        pattern = r"^[Hh][Tt][Tt][Pp][Ss]?://[^#]+$",
        example = "https://example.com/webhook"
    )]
    pub url: String,
    /// 1–64 patterns (counted as sent); duplicates are dropped, first occurrence kept. Errors
    /// name the item: `event_types[2]`.
    #[schema(schema_with = event_type_patterns, example = json!(["order.*"]))]
    pub event_types: Vec<String>,
    /// The HMAC signing key: at most 512 bytes, not empty, no control characters. A secret
    /// starting with `whsec_` must be standard base64 after the prefix, decoding to at least 16
    /// bytes. Omitted or null: one is generated. Returned only in the `201` response.
    #[schema(
        min_length = 1,
        max_length = 512,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$",
        example = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    )]
    pub secret: Option<String>,
    /// The destination's rate limit for the whole fleet of workers. Omitted or null: the
    /// defaults (100 per second, burst 10).
    pub rate_limit: Option<RateLimitRequest>,
    /// `false`: created paused (deliveries held until `PATCH` sets `true`). Default true.
    pub enabled: Option<bool>,
    /// Free text for operators: at most 1024 characters, no control characters but newline
    /// and tab.
    #[schema(max_length = 1024)]
    pub description: Option<String>,
    /// String → string labels: at most 50 keys of 1–64 characters, values of at most 512
    /// characters, no control characters. Errors name the key: `metadata.team`.
    #[schema(schema_with = metadata_schema)]
    pub metadata: Option<std::collections::BTreeMap<String, String>>,
    /// Headers sent with every attempt: at most 20; names are HTTP tokens of at most 128
    /// characters (stored lower-case, case-insensitively unique); values at most 2048 visible
    /// ASCII characters, spaces or tabs. Refused names (`422`, `field` `headers.<name>`):
    /// hop-by-hop ones (`Connection`, `Keep-Alive`, any `Proxy-*`, `TE`, `Trailer`,
    /// `Transfer-Encoding`, `Upgrade`), `Host`, `Content-Length`, `Content-Type`,
    /// `Content-Encoding`, and Dispatch's own `webhook-*` and `X-Dispatch-*`. `User-Agent` and
    /// `traceparent` may be given but Dispatch's win.
    #[schema(schema_with = headers_schema)]
    pub headers: Option<std::collections::BTreeMap<String, String>>,
    /// This subscription's retry limits. Omitted or null: the worker's global settings.
    pub retry: Option<RetryRequest>,
    /// This subscription's request timeout, 10–600 000 ms, capped at the worker's
    /// `request_timeout_ms` (on which the lease is sized). Omitted or null: the global one.
    #[schema(minimum = 10, maximum = 600000, example = 5000)]
    pub timeout_ms: Option<i64>,
    /// A payload filter: a SQL/JSON path predicate over the event `{"type", "source", "data"}`
    /// (PostgreSQL's `jsonb_path_match`); only events for which it is true get a delivery. At
    /// most 1024 bytes; must parse and be a boolean expression; `like_regex` only with a pattern
    /// anchored with `^`; no `.**`, `.datetime()` or variables. Errors are `422 invalid_field`
    /// with `field` `filter` and the reason. Omitted or null: no filter.
    #[schema(
        max_length = 1024,
        example = "$.data.amount > 100 && $.data.currency == \"EUR\""
    )]
    pub filter: Option<String>,
    /// Auto-disable: after this many seconds of nothing but failed attempts, Dispatch disables
    /// the subscription (as `enabled: false`: deliveries held, nothing lost) with a
    /// `disabled_reason`, after `dispatch.subscription.failing` warnings at 50 % and 90 %. 0:
    /// never; at most 31 536 000 (a year). Omitted or null: the worker's
    /// `auto_disable_after_secs` (default 432 000, 5 days).
    #[schema(minimum = 0, maximum = 31536000, example = 86400)]
    pub auto_disable_after_secs: Option<i64>,
    /// `per_key`: the deliveries of events with the same `ordering_key` are attempted one at a
    /// time, in the order the events were accepted. Omitted or null: `none`.
    #[schema(value_type = Option<crate::openapi::OrderingSchema>)]
    pub ordering: Option<String>,
    /// For `per_key`: what happens when a key's head fails for good. Omitted or null: `skip`.
    #[schema(value_type = Option<crate::openapi::OnExhaustedSchema>)]
    pub on_exhausted: Option<String>,
}

/// `PATCH /subscriptions/{id}`: a JSON merge patch (RFC 7396) of the fields of
/// `NewSubscriptionRequest` but `id` and `secret` (refused: ids never change, secrets rotate
/// with `POST /subscriptions/{id}/rotate-secret`). A member absent is kept; `null` resets it to
/// its default (not allowed for `url`, `event_types` and `enabled`); an object (`headers`,
/// `metadata`, `rate_limit`, `retry`) merges member by member, so `{"headers": {"x-a": null}}`
/// removes one header. The merged subscription is validated as a creation request.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // documentation only: never constructed
pub struct SubscriptionPatchRequest {
    /// As at creation, and checked against the destination policy again (`destination_refused`).
    #[schema(
        format = "uri",
        max_length = 2048,
        example = "https://example.com/webhook"
    )]
    pub url: Option<String>,
    /// Replaces the patterns whole; applies to events ingested from now on.
    #[schema(schema_with = event_type_patterns)]
    pub event_types: Option<Vec<String>>,
    pub rate_limit: Option<RateLimitRequest>,
    /// `false` pauses, `true` resumes (releasing held deliveries, oldest first; clearing
    /// `disabled_reason` and `disabled_at` when Dispatch had disabled it). Either twice is the
    /// same as once.
    pub enabled: Option<bool>,
    #[schema(max_length = 1024)]
    pub description: Option<String>,
    #[schema(schema_with = metadata_schema)]
    pub metadata: Option<std::collections::BTreeMap<String, String>>,
    #[schema(schema_with = headers_schema)]
    pub headers: Option<std::collections::BTreeMap<String, String>>,
    pub retry: Option<RetryRequest>,
    #[schema(minimum = 10, maximum = 600000)]
    pub timeout_ms: Option<i64>,
    /// As at creation; `null` removes the filter.
    #[schema(max_length = 1024)]
    pub filter: Option<String>,
    /// As at creation; `null`: back to the worker's global threshold.
    #[schema(minimum = 0, maximum = 31536000)]
    pub auto_disable_after_secs: Option<i64>,
    /// As at creation; `null` is `none`. From `per_key` to `none`: every waiting delivery is
    /// due at its own time again. From `none` to `per_key`: events accepted from then on are
    /// ordered.
    #[schema(value_type = Option<crate::openapi::OrderingSchema>)]
    pub ordering: Option<String>,
    /// As at creation; `null` is `skip`. From `block` to `skip`: every blocked key moves on.
    #[schema(value_type = Option<crate::openapi::OnExhaustedSchema>)]
    pub on_exhausted: Option<String>,
}

/// `{"max_attempts": 1–1000, "max_delay_secs": 1–604800}`, both optional (null: the global
/// setting). Errors name the member (`retry.max_attempts`); unknown members are refused.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // documentation only: never constructed
pub struct RetryRequest {
    /// Attempts in all, the first included.
    #[schema(minimum = 1, maximum = 1000, example = 5)]
    pub max_attempts: Option<i64>,
    /// Longest wait between two attempts, in seconds.
    #[schema(minimum = 1, maximum = 604800, example = 600)]
    pub max_delay_secs: Option<i64>,
}

fn string_map(max: usize, description: &str) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Object, Type::Null]))
        .additional_properties(Some(
            ObjectBuilder::new().schema_type(SchemaType::Type(Type::String)),
        ))
        .max_properties(Some(max))
        .description(Some(description))
}

fn metadata_schema() -> ObjectBuilder {
    string_map(50, "String → string labels (at most 50).")
}

fn headers_schema() -> ObjectBuilder {
    string_map(20, "Header name → value (at most 20).")
}

/// `{"per_second": <number>, "burst": <integer>}`, both optional. Errors name the member
/// (`rate_limit.per_second`); unknown members are refused.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // documentation only: never constructed
pub struct RateLimitRequest {
    /// Average requests per second: above 0, at most 100 000. Default 100.
    #[schema(exclusive_minimum = 0, maximum = 100000, example = 100.0)]
    pub per_second: Option<f64>,
    /// Most requests at once: 1–100 000, written as a whole number (`10`, not `10.0`).
    /// Default 10.
    #[schema(minimum = 1, maximum = 100000, example = 10)]
    pub burst: Option<i64>,
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    #[test]
    fn the_request_schemas_accept_the_documented_examples() {
        let event: Value = serde_json::json!({
            "id": "evt_123", "type": "order.created", "source": "billing-service",
            "data": {"order_id": "12345"}
        });
        assert!(serde_json::from_value::<NewEventRequest>(event).is_ok());
        let doc = serde_json::to_value(super::super::document()).expect("serialises");
        let event = &doc["components"]["schemas"]["NewEventRequest"];
        assert_eq!(event["additionalProperties"], false);
        assert_eq!(
            event["required"],
            serde_json::json!(["id", "type", "source", "data"])
        );
        let subscription = &doc["components"]["schemas"]["NewSubscriptionRequest"];
        assert_eq!(
            subscription["required"],
            serde_json::json!(["url", "event_types"])
        );
        assert_eq!(subscription["additionalProperties"], false);
    }
}
