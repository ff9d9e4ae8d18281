//! The enum schemas: the delivery status, circuit state and attempt failure code are built
//! from the domain's own lists (`DeliveryStatus::ALL`, `CircuitState::ALL`, `FailureCode::ALL`),
//! so the document cannot drift from what is stored; the API's error codes are listed here and
//! a test ties them to every `ApiError` variant.

use std::borrow::Cow;

use dispatch_domain::DeliveryStatus;
use dispatch_domain::breaker::CircuitState as DomainCircuitState;
use dispatch_domain::retry::FailureCode;
use utoipa::ToSchema;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};

/// A string schema that allows exactly `values`.
fn string_enum(description: &str, values: impl IntoIterator<Item = &'static str>) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(description))
        .enum_values(Some(values))
        .into()
}

/// A documentation-only type whose schema, named `$name`, lists the values of a domain list.
macro_rules! domain_enum {
    ($(#[$doc:meta])* $api:ident as $name:literal, $values:expr, $description:expr) => {
        $(#[$doc])*
        pub struct $api;

        impl utoipa::PartialSchema for $api {
            fn schema() -> RefOr<Schema> {
                string_enum($description, $values)
            }
        }

        impl ToSchema for $api {
            fn name() -> Cow<'static, str> {
                Cow::Borrowed($name)
            }
        }
    };
}

domain_enum!(
    /// `DeliveryStatus` in the document.
    DeliveryStatusSchema as "DeliveryStatus",
    DeliveryStatus::ALL.map(DeliveryStatus::as_str),
    "A delivery's status, and an event's status summarised from its deliveries. `pending`, \
     `processing` and `retrying` are unfinished; `delivered`, `failed` and `cancelled` are \
     terminal."
);

domain_enum!(
    /// `CircuitState` in the document: the domain's states.
    CircuitState as "CircuitState",
    DomainCircuitState::ALL.map(DomainCircuitState::as_str),
    "A destination's circuit: `closed`, `open` (no worker sends to it until `open_until`) or \
     `half_open` (trial requests go through; also shown once `open_until` has passed)."
);

domain_enum!(
    /// `AttemptErrorCode` in the document: the domain's failure codes.
    AttemptErrorCode as "AttemptErrorCode",
    FailureCode::ALL.map(FailureCode::as_str),
    "Why an attempt failed: `timeout` (no complete answer in time), `connection` (not made, or \
     broken before an answer), `tls`, `http_status` (a non-2xx answer), `request` (the request \
     could not be built or sent otherwise), `destination_refused` (the destination resolves to \
     a private, loopback, link-local, … address that is not allowed; nothing was sent) or \
     `secret_unavailable` (the subscription's secret could not be opened to sign with: a key \
     missing from the worker's `secret_keys`, or a damaged value; nothing was sent)."
);

domain_enum!(
    /// `Ordering` in the document: the domain's orderings.
    OrderingSchema as "Ordering",
    dispatch_domain::Ordering::ALL.map(dispatch_domain::Ordering::as_str),
    "`none`: deliveries are attempted concurrently as they fall due. `per_key`: the deliveries \
     of events with the same `ordering_key` are attempted one at a time, in the order the events \
     were accepted (events without a key are not ordered)."
);

domain_enum!(
    /// `OnExhausted` in the document: what a per-key subscription does with a failed head.
    OnExhaustedSchema as "OnExhausted",
    dispatch_domain::OnExhausted::ALL.map(dispatch_domain::OnExhausted::as_str),
    "What a per-key subscription does when the delivery at the head of a key fails for good: \
     `skip` (the next one proceeds; the failed one stays replayable) or `block` (the key waits \
     until the failed one is replayed or skipped with `POST /deliveries/{id}/skip`)."
);

/// The stable, machine-readable error code. Program against this, not the message.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
pub enum ErrorCode {
    /// 400: the body is not valid JSON: a syntax error, data after the value, bytes that are
    /// not UTF-8, a lone surrogate escape, a byte order mark, or nesting deeper than 128 levels.
    MalformedJson,
    /// 400: an object in the body has the same key twice; `field` is the repeated key's path.
    DuplicateKey,
    /// 422: a body field is missing, of the wrong type, invalid or unknown; or the body is not
    /// an object.
    InvalidField,
    /// 422: a query parameter is invalid.
    InvalidParameter,
    /// 422: the subscription's `url` host is, or resolves to, a loopback, private, link-local,
    /// CGNAT, multicast, unspecified, documentation, benchmarking or reserved address that
    /// `allow_destinations` does not allow.
    DestinationRefused,
    /// 431: more than 64 request headers, or more than 32 KiB of them.
    HeadersTooLarge,
    /// 413: the body exceeds `max_body_bytes`.
    PayloadTooLarge,
    /// 415: `Content-Type` is present and not JSON.
    UnsupportedMediaType,
    /// 401: no valid API key (`WWW-Authenticate: Bearer realm="dispatch"`).
    Unauthorized,
    /// 403: the key is valid, but its scope does not allow this route.
    Forbidden,
    /// 404: no such event, subscription (deleted ones included) or route.
    NotFound,
    /// 405: the path exists, not with this method (`Allow` names the path's methods).
    MethodNotAllowed,
    /// 409: the event id was already received with different content.
    EventConflict,
    /// 409: the subscription id is taken, possibly by a deleted subscription.
    SubscriptionExists,
    /// 400: a request header is invalid; `field` names it (`Dispatch-Tenant`: not a tenant id).
    InvalidHeader,
    /// 429: the tenant's ingest rate is exceeded; `Retry-After` says when to try again.
    RateLimited,
    /// 409: `POST /deliveries/{id}/retry`: a worker is attempting the delivery now.
    DeliveryInFlight,
    /// 409: `POST /deliveries/{id}/retry`: the delivery waits for its first attempt already.
    DeliveryQueued,
    /// 409: `POST /deliveries/{id}/retry`: the delivery was delivered; `resend: true` sends it
    /// again.
    DeliveryDelivered,
    /// 409: the delivery's subscription was deleted.
    SubscriptionDeleted,
    /// 409: the `Idempotency-Key` was used before for a different request.
    IdempotencyKeyReused,
    /// 409: `POST /deliveries/{id}/skip`: the delivery is not the failed head of a blocked key.
    DeliveryNotBlocking,
    /// 409: `POST /keys/{id}/rotate`: the key is revoked or expired.
    KeyInactive,
    /// 409: `POST /tenants`: the tenant id is taken, possibly by a deleted tenant.
    TenantExists,
    /// 409: `POST /subscriptions`: the tenant has as many live subscriptions as its
    /// `max_subscriptions` allows.
    SubscriptionLimitReached,
    /// 409: `DELETE /tenants/default`: the default tenant cannot be deleted.
    DefaultTenant,
    /// 408: the request body did not arrive within `body_read_timeout_ms`.
    RequestTimeout,
    /// 503: no database connection; retrying is safe (sent with `Retry-After: 1`).
    DatabaseUnavailable,
    /// 503: `/readyz` only.
    NotReady,
    /// 500: anything unexpected.
    Internal,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enum_values(name: &str) -> Vec<String> {
        let doc = serde_json::to_value(super::super::document()).expect("serialises");
        doc["components"]["schemas"][name]["enum"]
            .as_array()
            .unwrap_or_else(|| panic!("{name} is an enum schema"))
            .iter()
            .map(|v| v.as_str().expect("string values").to_owned())
            .collect()
    }

    #[test]
    fn the_status_circuit_and_failure_schemas_list_the_domains_values() {
        assert_eq!(
            enum_values("DeliveryStatus"),
            DeliveryStatus::ALL.map(|s| s.as_str().to_owned())
        );
        assert_eq!(
            enum_values("CircuitState"),
            DomainCircuitState::ALL.map(|s| s.as_str().to_owned())
        );
        assert_eq!(
            enum_values("AttemptErrorCode"),
            FailureCode::ALL.map(|c| c.as_str().to_owned())
        );
    }

    #[test]
    fn the_error_code_schema_lists_every_code_the_api_answers() {
        use crate::error::ApiError;
        let conflicts = crate::error::Conflict::ALL.map(|code| ApiError::Conflict {
            code,
            message: String::new(),
        });
        let every = [
            ApiError::MalformedJson(String::new()),
            ApiError::DuplicateKey(String::new()),
            ApiError::invalid("f", "m"),
            ApiError::InvalidParam {
                param: String::new(),
                message: String::new(),
            },
            ApiError::DestinationRefused(String::new()),
            ApiError::HeadersTooLarge(String::new()),
            ApiError::PayloadTooLarge { limit: 1 },
            ApiError::UnsupportedMediaType(String::new()),
            ApiError::Unauthorized,
            ApiError::Forbidden(String::new()),
            ApiError::NotFound(String::new()),
            ApiError::MethodNotAllowed,
            ApiError::EventConflict(String::new()),
            ApiError::SubscriptionExists(String::new()),
            ApiError::InvalidHeader {
                header: String::new(),
                message: String::new(),
            },
            ApiError::RateLimited {
                retry_after_secs: 1,
                message: String::new(),
            },
        ];
        let last = [
            ApiError::RequestTimeout(std::time::Duration::ZERO),
            ApiError::DatabaseUnavailable,
            ApiError::NotReady(String::new()),
            ApiError::Internal(anyhow::anyhow!("x")),
        ];
        let actual: Vec<String> = every
            .iter()
            .chain(&conflicts)
            .chain(&last)
            .map(|e| e.code().to_owned())
            .collect();
        assert_eq!(enum_values("ErrorCode"), actual);
    }
}
