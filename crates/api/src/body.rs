//! Reading and parsing request bodies: size limit, content type, strict JSON syntax (see
//! [`crate::json`]), then field-by-field extraction so every missing or invalid field is named in
//! the error.

use actix_web::HttpRequest;
use actix_web::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use actix_web::web::{Bytes, BytesMut, Payload};
use futures_util::StreamExt;
use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::json::JsonError;

/// How long a body may take when no application state says otherwise.
const DEFAULT_BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Like [`read_json_body`] for routes whose body is optional: no body (no `Content-Length`
/// and no `Transfer-Encoding`, or a length of 0) and a body of `null` are both `None`.
pub async fn read_optional_json_body(
    req: &HttpRequest,
    payload: Payload,
    limit: usize,
) -> Result<Option<Value>, ApiError> {
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .map(str::trim);
    let present = match declared {
        Some(len) => len != "0",
        None => req
            .headers()
            .contains_key(actix_web::http::header::TRANSFER_ENCODING),
    };
    if !present {
        return Ok(None);
    }
    let body = read_json_body(req, payload, limit).await?;
    Ok((!body.is_null()).then_some(body))
}

/// Reads the whole body within the body-read timeout, refusing more than `limit` bytes (early, from Content-Length, when the
/// client declares it) and any declared content type other than JSON.
pub async fn read_json_body(
    req: &HttpRequest,
    mut payload: Payload,
    limit: usize,
) -> Result<Value, ApiError> {
    if let Some(content_type) = req.headers().get(CONTENT_TYPE) {
        let text = content_type.to_str().unwrap_or("");
        let mime = text
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if !(mime == "application/json" || mime.ends_with("+json")) {
            return Err(ApiError::UnsupportedMediaType(text.to_owned()));
        }
    }
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    let timeout = req
        .app_data::<actix_web::web::Data<crate::routes::AppState>>()
        .map_or(DEFAULT_BODY_READ_TIMEOUT, |state| state.body_read_timeout);
    let read = async {
        let mut body = BytesMut::with_capacity(declared.unwrap_or(1024).min(limit));
        while let Some(chunk) = payload.next().await {
            let chunk: Bytes = chunk.map_err(|e| ApiError::MalformedJson(e.to_string()))?;
            if body.len() + chunk.len() > limit {
                return Err(ApiError::PayloadTooLarge { limit });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    };
    // A body trickled in (or never finished) must not hold a connection and a handler.
    let body = tokio::time::timeout(timeout, read)
        .await
        .map_err(|_| ApiError::RequestTimeout(timeout))??;
    crate::json::parse(&body).map_err(|e| match e {
        JsonError::Syntax(message) => ApiError::MalformedJson(message),
        JsonError::DuplicateKey(path) => ApiError::DuplicateKey(path),
    })
}

/// A JSON object whose fields are taken one by one; whatever is left is an unknown field.
pub struct Fields {
    map: Map<String, Value>,
}

impl Fields {
    pub fn from_body(body: Value) -> Result<Self, ApiError> {
        match body {
            Value::Object(map) => Ok(Self { map }),
            other => Err(ApiError::invalid(
                "body",
                format!("must be a JSON object, got {}", kind(&other)),
            )),
        }
    }

    /// Removes and returns a field that may be absent (`null` counts as absent).
    pub fn optional(&mut self, name: &str) -> Option<Value> {
        self.map.remove(name).filter(|v| !v.is_null())
    }

    /// Removes and returns a field that must be present and not `null`.
    pub fn required(&mut self, name: &str) -> Result<Value, ApiError> {
        self.optional(name)
            .ok_or_else(|| ApiError::invalid(name, "is required"))
    }

    pub fn required_str(&mut self, name: &str) -> Result<String, ApiError> {
        as_string(name, self.required(name)?)
    }

    pub fn optional_str(&mut self, name: &str) -> Result<Option<String>, ApiError> {
        self.optional(name).map(|v| as_string(name, v)).transpose()
    }

    /// Fails on the first field nobody asked for, so typos do not pass silently.
    pub fn finish(self) -> Result<(), ApiError> {
        match self.map.keys().next() {
            Some(unknown) => Err(ApiError::invalid(unknown.clone(), "is not a known field")),
            None => Ok(()),
        }
    }
}

pub fn as_string(field: &str, value: Value) -> Result<String, ApiError> {
    match value {
        Value::String(s) => Ok(s),
        other => Err(ApiError::invalid(
            field,
            format!("must be a string, got {}", kind(&other)),
        )),
    }
}

/// A JSON number that is a whole number from 0 up, as JSON Schema's `integer` understands it:
/// `60`, but also `60.0` and `6e1` (a number with no fractional part).
pub fn whole_number(value: &Value) -> Option<u64> {
    if let Some(n) = value.as_u64() {
        return Some(n);
    }
    let f = value.as_f64()?;
    // 2^64 as f64: every whole float below it converts exactly.
    (f.fract() == 0.0 && (0.0..18_446_744_073_709_551_616.0).contains(&f)).then_some(f as u64)
}

pub fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Deepest nesting accepted in an event's `data`.
pub const MAX_JSON_DEPTH: usize = 64;
/// Largest magnitude of a number in `data`: beyond it PostgreSQL's numeric text no longer
/// reads back as a double.
pub const MAX_NUMBER_MAGNITUDE: f64 = 1e300;

/// Checks what PostgreSQL's jsonb (and our own limits) cannot take: NUL characters in strings or
/// keys, numbers too large to read back, more than [`MAX_JSON_DEPTH`] arrays/objects nested in
/// one another.
pub fn check_storable_json(value: &Value) -> Result<(), String> {
    /// `depth`: how many arrays/objects enclose `value`.
    fn walk(value: &Value, depth: usize) -> Result<(), String> {
        if matches!(value, Value::Array(_) | Value::Object(_)) && depth >= MAX_JSON_DEPTH {
            return Err(format!("is nested deeper than {MAX_JSON_DEPTH} levels"));
        }
        match value {
            Value::String(s) if s.contains('\0') => {
                Err("contains a NUL character (\\u0000), which cannot be stored".to_owned())
            }
            Value::Number(n) if n.as_f64().is_some_and(|f| f.abs() > MAX_NUMBER_MAGNITUDE) => Err(
                format!("contains a number larger than {MAX_NUMBER_MAGNITUDE:e} in magnitude"),
            ),
            Value::Array(items) => items.iter().try_for_each(|v| walk(v, depth + 1)),
            Value::Object(map) => map.iter().try_for_each(|(k, v)| {
                if k.contains('\0') {
                    return Err("has a key containing a NUL character (\\u0000)".to_owned());
                }
                walk(v, depth + 1)
            }),
            _ => Ok(()),
        }
    }
    walk(value, 0)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn whole_numbers_are_those_without_a_fraction_however_written() {
        for (value, expected) in [
            (json!(0), Some(0)),
            (json!(60), Some(60)),
            (json!(60.0), Some(60)),
            (json!(-0.0), Some(0)),
            (json!(u64::MAX), Some(u64::MAX)),
            (json!(1.5), None),
            (json!(-1), None),
            (json!(-1.0), None),
            (json!(1e300), None),
            (json!("60"), None),
            (json!(null), None),
        ] {
            assert_eq!(whole_number(&value), expected, "{value}");
        }
    }

    #[test]
    fn storable_json_refuses_nul_huge_numbers_and_deep_nesting() {
        assert!(check_storable_json(&json!({"a": [1, "x", {"b": null}], "n": 1e300})).is_ok());
        assert!(check_storable_json(&json!({"a": "x\u{0}y"})).is_err());
        assert!(check_storable_json(&json!({"a\u{0}": 1})).is_err());
        assert!(check_storable_json(&json!([1.7976931348623157e308])).is_err());
        let mut deep = json!(1);
        for _ in 0..=MAX_JSON_DEPTH {
            deep = json!([deep]);
        }
        assert!(check_storable_json(&deep).is_err());
        // 64 arrays/objects are accepted, 65 are not, whatever is (or is not) inside: an empty
        // innermost array used to slip through one level deeper.
        for inner in [json!([]), json!({}), json!("x")] {
            let mut deep = inner.clone();
            let wraps = if inner.is_string() { 64 } else { 63 };
            for i in 0..wraps {
                deep = if i % 2 == 0 {
                    json!([deep])
                } else {
                    json!({"k": deep})
                };
            }
            assert!(check_storable_json(&deep).is_ok(), "64 levels: {deep}");
            let deeper = json!([deep]);
            assert!(check_storable_json(&deeper).is_err(), "65 levels: {deeper}");
        }
    }
}
