//! `POST /subscriptions/{id}/rotate-secret`: a new signing secret, returned once, with an
//! overlap window during which the old secret keeps signing next to it.

use dispatch_domain::TenantId;
use std::time::Duration;

use actix_web::http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use actix_web::{HttpRequest, HttpResponse, web};
use dispatch_domain::SubscriptionId;
use dispatch_domain::signature::generate_secret;
use dispatch_store::pool;
use dispatch_store::queries::subscriptions;
use serde::Deserialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::AppState;
use super::path_id::PathId;
use crate::body::{Fields, read_json_body, whole_number};
use crate::error::{ApiError, ErrorBody};
use crate::views::SecretRotationView;

/// Longest overlap a rotation may ask for (and `secret_rotation_overlap_secs` may be): 30 days.
pub const MAX_OVERLAP_SECS: u64 = 30 * 86_400;

/// A valid rotation request.
#[derive(Debug, PartialEq)]
pub struct RotationRequest {
    /// The new secret in the clear, given or generated.
    pub secret: String,
    pub overlap: Duration,
}

/// Turns the (optional) body into a rotation: `secret` as for a new subscription (generated when
/// absent), `overlap_secs` a whole number from 0 to [`MAX_OVERLAP_SECS`] (`default_overlap` when
/// absent). No body, or `null`, is the same as `{}`.
pub fn parse_rotation(
    body: Option<Value>,
    default_overlap: Duration,
) -> Result<RotationRequest, ApiError> {
    let body = match body {
        None | Some(Value::Null) => Value::Object(Default::default()),
        Some(body) => body,
    };
    let mut fields = Fields::from_body(body)?;
    let secret = match fields.optional_str("secret")? {
        Some(secret) => super::subscriptions::check_secret(secret)?,
        None => generate_secret().map_err(|e| ApiError::Internal(anyhow::anyhow!(e)))?,
    };
    let overlap = match fields.optional("overlap_secs") {
        Some(value) => whole_number(&value)
            .filter(|n| *n <= MAX_OVERLAP_SECS)
            .map(Duration::from_secs)
            .ok_or_else(|| {
                ApiError::invalid(
                    "overlap_secs",
                    format!("must be a whole number of seconds from 0 to {MAX_OVERLAP_SECS}"),
                )
            })?,
        None => default_overlap,
    };
    fields.finish()?;
    Ok(RotationRequest { secret, overlap })
}

/// Whether the request carries a body at all (an empty one counts as none).
fn has_body(req: &HttpRequest) -> bool {
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .map(str::trim);
    match declared {
        Some(len) => len != "0",
        None => req.headers().contains_key(TRANSFER_ENCODING),
    }
}

/// `POST /subscriptions/{id}/rotate-secret`, as documentation. Both fields are optional, and the
/// body itself may be left out or `null` (the same as `{}`). Unknown fields are refused.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // documentation only: never constructed
pub struct RotateSecretRequest {
    /// The new secret, with the rules of a new subscription's `secret`. Omitted or null: one is
    /// generated (`whsec_` + base64 of 24 random bytes).
    #[schema(
        min_length = 1,
        max_length = 512,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$",
        example = "whsec_Q2hhbmdlZCBzZWNyZXQgZm9yIHN1Yl8xMjM="
    )]
    pub secret: Option<String>,
    /// How long the old secret keeps signing next to the new one, in seconds, 0 to 2592000 (30
    /// days). Omitted or null: the API's `secret_rotation_overlap_secs` (default 86400, a day).
    /// 0 drops the old secret at once.
    #[schema(minimum = 0, maximum = 2592000, example = 86400)]
    pub overlap_secs: Option<u64>,
}

/// Rotate a subscription's signing secret.
///
/// Replaces the secret (given, or generated) and answers it this once. Until
/// `previous_secret_expires_at` deliveries carry two signatures in each signature header, the
/// new secret's first, so the receiver can switch to the new secret at any moment of the
/// window; then only the new one. Rotating again during a window drops the oldest secret at once
/// (at most two sign at a time).
#[utoipa::path(
    post,
    path = "/subscriptions/{id}/rotate-secret",
    operation_id = "rotate_subscription_secret",
    tag = "subscriptions",
    params(("id" = String, Path, description = "The subscription's id.")),
    request_body(content = Option<RotateSecretRequest>, content_type = "application/json",
        description = "Optional: no body, or `null`, is the same as `{}`."),
    responses(
        (status = 200, description = "Rotated; `secret` is shown this once.", body = SecretRotationView,
            headers(("Cache-Control" = String, description = "`no-store`"))),
        (status = 400, description = "`malformed_json`: the body is not valid JSON. `duplicate_key`: an object has the same key twice.", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: the body exceeds `max_body_bytes`.", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`: `Content-Type` is present and not JSON.", body = ErrorBody),
        (status = 422, description = "`invalid_field`: the body is not an object, or `secret` or `overlap_secs` (named in `field`) is invalid, or a field is unknown.", body = ErrorBody),
    ),
)]
pub async fn rotate(
    auth: crate::auth::Authorized,
    subscription: PathId<SubscriptionId>,
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let body = if has_body(&req) {
        Some(read_json_body(&req, payload, state.max_body_bytes).await?)
    } else {
        None
    };
    rotate_with(&state, &auth.tenant, &subscription, body).await
}

/// `POST /subscriptions/{id}/rotate-secret` once its body (if any) is read (the console's
/// rotation runs this too).
pub(crate) async fn rotate_with(
    state: &AppState,
    tenant: &TenantId,
    subscription: &PathId<SubscriptionId>,
    body: Option<serde_json::Value>,
) -> Result<HttpResponse, ApiError> {
    let rotation = parse_rotation(body, state.secret_rotation_overlap)?;
    let mut conn = pool::connection(&state.pool).await?;
    let rotated = subscriptions::rotate_secret(
        &mut conn,
        &state.secret_keys,
        tenant,
        subscription.as_str(),
        &rotation.secret,
        rotation.overlap,
    )
    .await?
    .ok_or_else(|| subscription.not_found())?;
    tracing::info!(
        subscription.id = %**subscription,
        overlap_secs = rotation.overlap.as_secs(),
        "subscription secret rotated"
    );
    Ok(HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .json(SecretRotationView {
            id: subscription.as_str().to_owned(),
            secret: rotation.secret,
            previous_secret_expires_at: rotated.previous_expires_at,
        }))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn no_body_rotates_to_a_generated_secret_with_the_default_overlap() {
        for body in [
            None,
            Some(Value::Null),
            Some(json!({})),
            Some(json!({"secret": null, "overlap_secs": null})),
        ] {
            let r = parse_rotation(body, DAY).expect("valid");
            assert!(r.secret.starts_with("whsec_"), "{}", r.secret);
            assert_eq!(r.overlap, DAY);
        }
    }

    #[test]
    fn a_given_secret_and_overlap_are_checked() {
        let r = parse_rotation(
            Some(json!({"secret": "a-new-secret", "overlap_secs": 0})),
            DAY,
        )
        .expect("valid");
        assert_eq!(
            r,
            RotationRequest {
                secret: "a-new-secret".to_owned(),
                overlap: Duration::ZERO
            }
        );
        let r = parse_rotation(Some(json!({"overlap_secs": MAX_OVERLAP_SECS})), DAY)
            .expect("the maximum is allowed");
        assert_eq!(r.overlap, Duration::from_secs(MAX_OVERLAP_SECS));
        // JSON Schema's `integer` includes `60.0`; the document promises it, so it is accepted.
        for (body, secs) in [
            (json!({"overlap_secs": 60.0}), 60),
            (json!({"overlap_secs": -0.0}), 0),
            (json!({"overlap_secs": 2_592_000.0}), MAX_OVERLAP_SECS),
        ] {
            let r = parse_rotation(Some(body.clone()), DAY).expect("a whole number");
            assert_eq!(r.overlap, Duration::from_secs(secs), "{body}");
        }
        for (body, field) in [
            (json!({"secret": ""}), "secret"),
            (json!({"secret": "a\u{0}b"}), "secret"),
            (json!({"secret": 42}), "secret"),
            (json!({"secret": "whsec_AAAA"}), "secret"),
            (json!({"overlap_secs": -1}), "overlap_secs"),
            (json!({"overlap_secs": 1.5}), "overlap_secs"),
            (json!({"overlap_secs": -0.5}), "overlap_secs"),
            (json!({"overlap_secs": 1e300}), "overlap_secs"),
            (json!({"overlap_secs": "60"}), "overlap_secs"),
            (
                json!({"overlap_secs": MAX_OVERLAP_SECS + 1}),
                "overlap_secs",
            ),
            (json!({"overlap": 60}), "overlap"),
            (json!([]), "body"),
        ] {
            match parse_rotation(Some(body.clone()), DAY) {
                Err(ApiError::InvalidField { field: f, .. }) => assert_eq!(f, field, "{body}"),
                other => panic!("{body}: {other:?}"),
            }
        }
    }
}
