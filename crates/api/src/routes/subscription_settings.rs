//! A subscription's own settings — `headers`, `description`, `metadata`, `retry`, `timeout_ms`,
//! `filter` (its text; PostgreSQL's checks are `subscription_filter::check`),
//! `auto_disable_after_secs`, `ordering`, `on_exhausted`, `enabled` — as `POST /subscriptions`
//! and `PATCH /subscriptions/{id}` accept them.

use std::collections::BTreeMap;

use dispatch_domain::retry::{MAX_ATTEMPTS_LIMIT, MAX_DELAY_SECS_LIMIT, TIMEOUT_MS_RANGE};
use dispatch_store::models::SubscriptionSettings;
use serde_json::Value;

use crate::body::{Fields, as_string, kind};
use crate::error::ApiError;

/// Most headers a subscription may add to its requests.
pub const MAX_HEADERS: usize = 20;
/// Longest header name and value, in bytes.
pub const MAX_HEADER_NAME: usize = 128;
pub const MAX_HEADER_VALUE: usize = 2048;
/// Most metadata keys, and the longest key and value, in characters.
pub const MAX_METADATA: usize = 50;
pub const MAX_METADATA_KEY: usize = 64;
pub const MAX_METADATA_VALUE: usize = 512;
/// Longest description, in characters.
pub const MAX_DESCRIPTION: usize = 1024;
/// Longest auto-disable threshold a subscription may set: a year, in seconds.
pub const MAX_AUTO_DISABLE_AFTER_SECS: u64 = 31_536_000;

/// Header names a subscription may not set: hop-by-hop headers, those describing the body or
/// the connection, and Dispatch's own (signatures, `webhook-*`, `x-dispatch-*`).
const REFUSED_HEADERS: &[&str] = &[
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
    "content-type",
    "content-encoding",
];

/// Why a header name is refused, if it is.
fn refused_header(name: &str) -> Option<&'static str> {
    if REFUSED_HEADERS.contains(&name) || name.starts_with("proxy-") {
        Some("is set by Dispatch or by HTTP itself (hop-by-hop, Host, body framing)")
    } else if name.starts_with("webhook-") || name.starts_with("x-dispatch-") {
        Some("is one of Dispatch's own headers (signatures, ids, timestamps)")
    } else {
        None
    }
}

/// An RFC 9110 token: what a header name may be.
fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn has_control(text: &str) -> bool {
    text.chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
}

/// `headers`: an object of at most [`MAX_HEADERS`] names (stored lower-case) to string values.
pub fn parse_headers(value: Value) -> Result<BTreeMap<String, String>, ApiError> {
    let Value::Object(map) = value else {
        return Err(ApiError::invalid(
            "headers",
            format!(
                "must be an object of header names to values, got {}",
                kind(&value)
            ),
        ));
    };
    if map.len() > MAX_HEADERS {
        return Err(ApiError::invalid(
            "headers",
            format!(
                "must have at most {MAX_HEADERS} headers (got {})",
                map.len()
            ),
        ));
    }
    let mut headers = BTreeMap::new();
    for (name, value) in map {
        // Named lower-case, as stored (and as a patch's names are merged).
        let field = format!("headers.{}", name.to_ascii_lowercase());
        if name.len() > MAX_HEADER_NAME || !is_token(&name) {
            return Err(ApiError::invalid(
                field,
                format!(
                    "is not a valid header name (1–{MAX_HEADER_NAME} letters, digits or \
                     !#$%&'*+-.^_`|~)"
                ),
            ));
        }
        let lower = name.to_ascii_lowercase();
        if let Some(why) = refused_header(&lower) {
            return Err(ApiError::invalid(field, format!("cannot be set: it {why}")));
        }
        let Value::String(text) = value else {
            return Err(ApiError::invalid(
                field,
                format!("must be a string, got {}", kind(&value)),
            ));
        };
        if text.len() > MAX_HEADER_VALUE
            || !text
                .bytes()
                .all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
        {
            return Err(ApiError::invalid(
                field,
                format!(
                    "must be at most {MAX_HEADER_VALUE} visible ASCII characters, spaces or tabs"
                ),
            ));
        }
        if headers.insert(lower, text).is_some() {
            return Err(ApiError::invalid(
                field,
                "is given twice (header names are case-insensitive)",
            ));
        }
    }
    Ok(headers)
}

/// `metadata`: an object of at most [`MAX_METADATA`] string keys to string values.
pub fn parse_metadata(value: Value) -> Result<BTreeMap<String, String>, ApiError> {
    let Value::Object(map) = value else {
        return Err(ApiError::invalid(
            "metadata",
            format!("must be an object of strings, got {}", kind(&value)),
        ));
    };
    if map.len() > MAX_METADATA {
        return Err(ApiError::invalid(
            "metadata",
            format!("must have at most {MAX_METADATA} keys (got {})", map.len()),
        ));
    }
    let mut metadata = BTreeMap::new();
    for (key, value) in map {
        let field = format!("metadata.{key}");
        let count = key.chars().count();
        if count == 0 || count > MAX_METADATA_KEY || key.chars().any(char::is_control) {
            return Err(ApiError::invalid(
                field,
                format!("keys must be 1–{MAX_METADATA_KEY} characters, no control characters"),
            ));
        }
        let Value::String(text) = value else {
            return Err(ApiError::invalid(
                field,
                format!("must be a string, got {}", kind(&value)),
            ));
        };
        if text.chars().count() > MAX_METADATA_VALUE || text.chars().any(char::is_control) {
            return Err(ApiError::invalid(
                field,
                format!("must be at most {MAX_METADATA_VALUE} characters, no control characters"),
            ));
        }
        metadata.insert(key, text);
    }
    Ok(metadata)
}

fn parse_description(value: Value) -> Result<String, ApiError> {
    let Value::String(text) = value else {
        return Err(ApiError::invalid(
            "description",
            format!("must be a string, got {}", kind(&value)),
        ));
    };
    if text.chars().count() > MAX_DESCRIPTION || has_control(&text) {
        return Err(ApiError::invalid(
            "description",
            format!(
                "must be at most {MAX_DESCRIPTION} characters, no control characters but newline \
                 and tab"
            ),
        ));
    }
    Ok(text)
}

fn whole_number(field: &str, value: &Value, min: u64, max: u64) -> Result<i32, ApiError> {
    value
        .as_u64()
        .filter(|n| (min..=max).contains(n))
        .and_then(|n| i32::try_from(n).ok())
        .ok_or_else(|| {
            ApiError::invalid(field, format!("must be a whole number from {min} to {max}"))
        })
}

/// `retry`: `{"max_attempts": 1–1000, "max_delay_secs": 1–604800}`, both optional.
fn parse_retry(value: Value, settings: &mut SubscriptionSettings) -> Result<(), ApiError> {
    if !value.is_object() {
        return Err(ApiError::invalid(
            "retry",
            format!(
                "must be an object like {{\"max_attempts\": 5, \"max_delay_secs\": 600}}, got {}",
                kind(&value)
            ),
        ));
    }
    let mut fields = Fields::from_body(value)?;
    if let Some(v) = fields.optional("max_attempts") {
        settings.max_attempts = Some(whole_number(
            "retry.max_attempts",
            &v,
            1,
            u64::from(MAX_ATTEMPTS_LIMIT),
        )?);
    }
    if let Some(v) = fields.optional("max_delay_secs") {
        settings.max_delay_secs = Some(whole_number(
            "retry.max_delay_secs",
            &v,
            1,
            MAX_DELAY_SECS_LIMIT,
        )?);
    }
    fields.finish().map_err(|e| match e {
        ApiError::InvalidField { field, message } => {
            ApiError::invalid(format!("retry.{field}"), message)
        }
        other => other,
    })
}

/// One of a setting's names (`ordering`, `on_exhausted`): the error lists them.
fn parse_name<T>(field: &str, value: Value) -> Result<T, ApiError>
where
    T: std::str::FromStr<Err = dispatch_domain::ParseError>,
{
    as_string(field, value)?
        .parse()
        .map_err(|e: dispatch_domain::ParseError| ApiError::invalid(field, e.to_string()))
}

/// Takes the settings fields out of a request (creation) or a merged document (PATCH): absent
/// or null is the global default. Returns them with `enabled` (absent: true).
pub fn take_settings(fields: &mut Fields) -> Result<(SubscriptionSettings, bool), ApiError> {
    let mut settings = SubscriptionSettings::default();
    if let Some(v) = fields.optional("description") {
        settings.description = Some(parse_description(v)?);
    }
    if let Some(v) = fields.optional("metadata") {
        settings.metadata = parse_metadata(v)?;
    }
    if let Some(v) = fields.optional("headers") {
        settings.headers = parse_headers(v)?;
    }
    if let Some(v) = fields.optional("retry") {
        parse_retry(v, &mut settings)?;
    }
    if let Some(v) = fields.optional("timeout_ms") {
        settings.timeout_ms = Some(whole_number(
            "timeout_ms",
            &v,
            *TIMEOUT_MS_RANGE.start(),
            *TIMEOUT_MS_RANGE.end(),
        )?);
    }
    if let Some(v) = fields.optional("filter") {
        settings.filter = Some(super::subscription_filter::parse_filter(v)?);
    }
    if let Some(v) = fields.optional("auto_disable_after_secs") {
        settings.auto_disable_after_secs = Some(whole_number(
            "auto_disable_after_secs",
            &v,
            0,
            MAX_AUTO_DISABLE_AFTER_SECS,
        )?);
    }
    if let Some(v) = fields.optional("ordering") {
        settings.ordering = parse_name("ordering", v)?;
    }
    if let Some(v) = fields.optional("on_exhausted") {
        settings.on_exhausted = parse_name("on_exhausted", v)?;
    }
    let enabled = match fields.optional("enabled") {
        None => true,
        Some(Value::Bool(b)) => b,
        Some(other) => {
            return Err(ApiError::invalid(
                "enabled",
                format!("must be true or false, got {}", kind(&other)),
            ));
        }
    };
    Ok((settings, enabled))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::json;

    use super::*;

    #[test]
    fn refused_and_odd_header_names_are_named_in_the_error() {
        for name in [
            "Host",
            "Content-Length",
            "connection",
            "Transfer-Encoding",
            "webhook-id",
            "Webhook-Signature",
            "X-Dispatch-Signature",
            "bad name",
            "",
            "x:y",
        ] {
            let err = parse_headers(json!({ name: "v" })).unwrap_err();
            assert!(
                matches!(&err, ApiError::InvalidField { field, .. }
                    if *field == format!("headers.{}", name.to_ascii_lowercase())),
                "{name}: {err:?}"
            );
        }
        let ok = parse_headers(json!({"X-Tenant": "acme", "Authorization": "Bearer t"})).unwrap();
        assert_eq!(ok["x-tenant"], "acme");
        assert_eq!(ok["authorization"], "Bearer t");
    }
}
