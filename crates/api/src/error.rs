//! The API's one error type and its single JSON shape:
//! `{"code": "<stable machine code>", "message": "<for humans>", "field": "<when one is at fault>"}`.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use dispatch_store::StoreError;
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not JSON (400).
    #[error("request body is not valid JSON: {0}")]
    MalformedJson(String),
    /// An object in the body has the same key twice (400); the path of the repeated key.
    #[error("request body has the key {0} twice: keys must be unique within each JSON object")]
    DuplicateKey(String),
    /// The request's headers are too many or too large (431).
    #[error("{0}")]
    HeadersTooLarge(String),
    /// A field is missing or invalid (422).
    #[error("{field}: {message}")]
    InvalidField { field: String, message: String },
    /// The destination URL's host is, or resolves to, an address webhooks may not reach (422).
    #[error("{0}")]
    DestinationRefused(String),
    /// A query parameter is invalid (422).
    #[error("query parameter {param}: {message}")]
    InvalidParam { param: String, message: String },
    /// The body exceeds the configured limit (413).
    #[error("request body is larger than the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    /// The body is not declared as JSON (415).
    #[error("Content-Type must be application/json, got {0:?}")]
    UnsupportedMediaType(String),
    /// No valid API key (401).
    #[error("a valid API key is required: send `Authorization: Bearer <key>`")]
    Unauthorized,
    /// The key is valid but its scope does not allow this route (403).
    #[error("{0}")]
    Forbidden(String),
    /// No such resource (404).
    #[error("{0}")]
    NotFound(String),
    /// The route exists but not for this method (405).
    #[error("method not allowed on this path")]
    MethodNotAllowed,
    /// The event id was already received with different content (409).
    #[error("{0}")]
    EventConflict(String),
    /// The subscription id is taken (409).
    #[error("{0}")]
    SubscriptionExists(String),
    /// A request header is invalid (400).
    #[error("header {header}: {message}")]
    InvalidHeader { header: String, message: String },
    /// The tenant's ingest rate is exceeded (429); retry after this many seconds.
    #[error("{message}")]
    RateLimited {
        retry_after_secs: u64,
        message: String,
    },
    /// The request conflicts with the resource's state (409); `code` says how.
    #[error("{message}")]
    Conflict { code: Conflict, message: String },
    /// The body did not arrive in time (408).
    #[error("the request body did not arrive within {} ms", .0.as_millis())]
    RequestTimeout(std::time::Duration),
    /// The database cannot be reached (503); the caller should retry.
    #[error("the database is unavailable; retry later")]
    DatabaseUnavailable,
    /// The service is up but not ready (503).
    #[error("not ready: {0}")]
    NotReady(String),
    /// Anything unexpected (500): logged with its cause, answered opaquely.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

/// How a request conflicts with a resource's state (`409`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conflict {
    /// A worker is attempting the delivery now.
    DeliveryInFlight,
    /// The delivery waits for its first attempt already.
    DeliveryQueued,
    /// The delivery was delivered; only a resend sends it again.
    DeliveryDelivered,
    /// The delivery's subscription was deleted.
    SubscriptionDeleted,
    /// The `Idempotency-Key` was used for a different request.
    IdempotencyKeyReused,
    /// The delivery is not the failed head of a blocked key (`POST /deliveries/{id}/skip`).
    DeliveryNotBlocking,
    /// The API key is revoked or expired (`POST /keys/{id}/rotate`).
    KeyInactive,
    /// The tenant id is taken, possibly by a deleted tenant (`POST /tenants`).
    TenantExists,
    /// The tenant has as many subscriptions as its `max_subscriptions` allows.
    SubscriptionLimitReached,
    /// The default tenant cannot be deleted.
    DefaultTenant,
}

impl Conflict {
    pub const ALL: [Self; 10] = [
        Self::DeliveryInFlight,
        Self::DeliveryQueued,
        Self::DeliveryDelivered,
        Self::SubscriptionDeleted,
        Self::IdempotencyKeyReused,
        Self::DeliveryNotBlocking,
        Self::KeyInactive,
        Self::TenantExists,
        Self::SubscriptionLimitReached,
        Self::DefaultTenant,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::DeliveryInFlight => "delivery_in_flight",
            Self::DeliveryQueued => "delivery_queued",
            Self::DeliveryDelivered => "delivery_delivered",
            Self::SubscriptionDeleted => "subscription_deleted",
            Self::IdempotencyKeyReused => "idempotency_key_reused",
            Self::DeliveryNotBlocking => "delivery_not_blocking",
            Self::KeyInactive => "key_inactive",
            Self::TenantExists => "tenant_exists",
            Self::SubscriptionLimitReached => "subscription_limit_reached",
            Self::DefaultTenant => "default_tenant",
        }
    }
}

/// Every error answer: `{"code": …, "message": …, "field": …}`.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(example = json!({"code": "invalid_field", "message": "event_types[0]: '*' is allowed only as the whole pattern or as a final '.*' segment", "field": "event_types[0]"}))]
pub struct ErrorBody<'a> {
    #[schema(value_type = crate::openapi::ErrorCode)]
    pub code: &'a str,
    /// For humans; wording may change.
    pub message: String,
    /// Only for `invalid_field` (the body field, `body`, or `event_types[i]`),
    /// `invalid_parameter` (`limit`, `cursor` or `query`), `duplicate_key` (the repeated key's
    /// path, such as `data.items[2].sku`), `destination_refused` (`url`) and `invalid_header`
    /// (the header's name).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub field: Option<&'a str>,
}

impl ApiError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::InvalidField {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The stable, machine-readable code of this error (documented in docs/spec.md).
    pub fn code(&self) -> &'static str {
        match self {
            Self::MalformedJson(_) => "malformed_json",
            Self::DuplicateKey(_) => "duplicate_key",
            Self::HeadersTooLarge(_) => "headers_too_large",
            Self::DestinationRefused(_) => "destination_refused",
            Self::InvalidField { .. } => "invalid_field",
            Self::InvalidParam { .. } => "invalid_parameter",
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::UnsupportedMediaType(_) => "unsupported_media_type",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden(_) => "forbidden",
            Self::NotFound(_) => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::EventConflict(_) => "event_conflict",
            Self::SubscriptionExists(_) => "subscription_exists",
            Self::InvalidHeader { .. } => "invalid_header",
            Self::RateLimited { .. } => "rate_limited",
            Self::Conflict { code, .. } => code.as_str(),
            Self::RequestTimeout(_) => "request_timeout",
            Self::DatabaseUnavailable => "database_unavailable",
            Self::NotReady(_) => "not_ready",
            Self::Internal(_) => "internal",
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        if error.is_unavailable() {
            tracing::warn!(error = %error, "database unavailable");
            Self::DatabaseUnavailable
        } else {
            Self::Internal(error.into())
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::MalformedJson(_) | Self::DuplicateKey(_) | Self::InvalidHeader { .. } => {
                StatusCode::BAD_REQUEST
            }
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::HeadersTooLarge(_) => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::InvalidField { .. } | Self::InvalidParam { .. } | Self::DestinationRefused(_) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::EventConflict(_) | Self::SubscriptionExists(_) | Self::Conflict { .. } => {
                StatusCode::CONFLICT
            }
            Self::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::DatabaseUnavailable | Self::NotReady(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let Self::Internal(cause) = self {
            tracing::error!(error = ?cause, "request failed unexpectedly");
        }
        let field = match self {
            Self::InvalidField { field, .. } => Some(field.as_str()),
            Self::InvalidParam { param, .. } => Some(param.as_str()),
            Self::DuplicateKey(path) => Some(path.as_str()),
            Self::DestinationRefused(_) => Some("url"),
            Self::InvalidHeader { header, .. } => Some(header.as_str()),
            _ => None,
        };
        let mut response = HttpResponse::build(self.status_code());
        if matches!(self, Self::Unauthorized) {
            response.insert_header(("WWW-Authenticate", "Bearer realm=\"dispatch\""));
        }
        if matches!(self, Self::DatabaseUnavailable) {
            response.insert_header(("Retry-After", "1"));
        }
        if let Self::RateLimited {
            retry_after_secs, ..
        } = self
        {
            response.insert_header(("Retry-After", retry_after_secs.to_string()));
        }
        response.json(ErrorBody {
            code: self.code(),
            message: self.to_string(),
            field,
        })
    }
}

#[cfg(test)]
mod tests {
    use diesel::result::{DatabaseErrorInformation, DatabaseErrorKind, Error as DieselError};

    use super::*;

    struct DiskFull;

    impl DatabaseErrorInformation for DiskFull {
        fn message(&self) -> &str {
            "could not extend file \"base/16384/16390\": No space left on device"
        }
        fn details(&self) -> Option<&str> {
            None
        }
        fn hint(&self) -> Option<&str> {
            Some("Check free disk space.")
        }
        fn table_name(&self) -> Option<&str> {
            None
        }
        fn column_name(&self) -> Option<&str> {
            None
        }
        fn constraint_name(&self) -> Option<&str> {
            None
        }
        fn statement_position(&self) -> Option<i32> {
            None
        }
    }

    #[test]
    fn a_full_disk_is_answered_503_database_unavailable_not_500() {
        let store: StoreError =
            DieselError::DatabaseError(DatabaseErrorKind::Unknown, Box::new(DiskFull)).into();
        let error = ApiError::from(store);
        assert_eq!(error.code(), "database_unavailable");
        let response = error.error_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            response
                .headers()
                .get("Retry-After")
                .and_then(|v| v.to_str().ok()),
            Some("1")
        );
    }

    #[test]
    fn a_query_bug_stays_an_opaque_500() {
        let store: StoreError = DieselError::NotFound.into();
        let error = ApiError::from(store);
        assert_eq!(error.code(), "internal");
        assert_eq!(
            error.error_response().status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
}
