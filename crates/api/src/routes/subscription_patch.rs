//! `PATCH /subscriptions/{id}`: a JSON merge patch (RFC 7396) of a subscription's URL, patterns,
//! rate limit and settings, and pausing (`enabled: false`) and resuming (`enabled: true`) it.
//! The patch is merged into what the subscription holds and the result validated as a creation
//! request would be.

use actix_web::{HttpRequest, HttpResponse, web};
use dispatch_domain::TenantId;
use dispatch_domain::{DestinationUrl, SubscriptionId};
use dispatch_store::models::SubscriptionRow;
use dispatch_store::pool;
use dispatch_store::queries::subscription_changes::{self, SubscriptionChange, UpdateOutcome};
use dispatch_store::queries::subscriptions;
use serde_json::{Map, Value, json};

use super::AppState;
use super::path_id::PathId;
use super::subscription_settings::take_settings;
use super::subscriptions::{parse_patterns, parse_rate_limit};
use crate::body::{Fields, kind, read_json_body};
use crate::error::{ApiError, ErrorBody};
use crate::openapi::SubscriptionPatchRequest;
use crate::views::SubscriptionView;

/// How often a patch is merged again when the subscription changed between read and write.
const ATTEMPTS: usize = 5;

/// The whole subscription once `patch` is merged into what `current` holds, validated as a
/// creation request would be (errors name the field).
fn merged(
    current: &dispatch_store::models::SubscriptionRow,
    patch: &Value,
) -> Result<SubscriptionChange, ApiError> {
    let mut doc = patchable(current);
    merge(&mut doc, patch.clone());
    let mut fields = Fields::from_body(doc)?;
    let url = fields.required_str("url")?;
    let url = DestinationUrl::parse(&url).map_err(|e| ApiError::invalid("url", e.to_string()))?;
    let event_types = parse_patterns(fields.required("event_types")?)?;
    let rate_limit = match fields.optional("rate_limit") {
        Some(value) => parse_rate_limit(value)?,
        None => Default::default(),
    };
    let (settings, enabled) = take_settings(&mut fields)?;
    fields.finish()?;
    Ok(SubscriptionChange {
        url: url.as_str().to_owned(),
        event_types: event_types.iter().map(|p| p.as_str().to_owned()).collect(),
        rate_limit,
        settings,
        enabled,
    })
}

/// Change a subscription (JSON merge patch).
///
/// Members present are changed, members absent are kept, and `null` resets a setting to its
/// default (`headers`/`metadata` members: removes that one; `retry`, `rate_limit` members: back
/// to the global setting). `enabled: false` pauses: new deliveries are still created but held,
/// never attempted, until `enabled: true` resumes and releases them oldest first. Changes apply
/// to every delivery not yet attempted and to the next attempt of retrying ones. Resuming a
/// subscription Dispatch disabled (auto-disable) clears `disabled_reason` and `disabled_at` and
/// starts its health afresh.
#[utoipa::path(
    patch,
    path = "/subscriptions/{id}",
    operation_id = "update_subscription",
    tag = "subscriptions",
    params(("id" = String, Path, description = "The subscription's id.")),
    request_body(content = SubscriptionPatchRequest, content_type = "application/merge-patch+json",
        description = "A JSON merge patch; `application/json` is accepted too."),
    responses(
        (status = 200, description = "The subscription as changed; `secret` is never shown here.", body = SubscriptionView),
        (status = 400, description = "`malformed_json` or `duplicate_key`, as for creation.", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: the body exceeds `max_body_bytes`.", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`: `Content-Type` is present and not JSON.", body = ErrorBody),
        (status = 422, description = "`invalid_field`: the body is not an object; `id` or `secret` is given; `url`, `event_types` or `enabled` is null; or the merged subscription has a missing, invalid or unknown field (named in `field`, e.g. `headers.Host`, `retry.max_attempts`). `destination_refused` (`field`: `url`): the new URL's host is, or resolves to, a refused address, as at creation.", body = ErrorBody),
    ),
)]
pub async fn patch(
    auth: crate::auth::Authorized,
    path: PathId<SubscriptionId>,
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let body = read_json_body(&req, payload, state.max_body_bytes).await?;
    patch_with(&state, &auth.tenant, &path, body).await
}

/// `PATCH /subscriptions/{id}` once its body is read (the console's edit, pause and resume run
/// this too).
pub(crate) async fn patch_with(
    state: &AppState,
    tenant: &TenantId,
    path: &PathId<SubscriptionId>,
    body: Value,
) -> Result<HttpResponse, ApiError> {
    let id = path.as_str();
    let patch = check_patch(body)?;
    let mut checked_url = false;
    let mut checked_filter = false;
    for _ in 0..ATTEMPTS {
        let current = {
            let mut conn = pool::connection(&state.pool).await?;
            subscriptions::find_active(&mut conn, tenant, id)
                .await?
                .ok_or_else(|| path.not_found())?
        };
        let change = merged(&current, &patch)?;
        // A new URL is checked as at creation, once (resolving may take a while: no
        // transaction is open meanwhile).
        if !checked_url && patch.get("url").is_some() {
            let url = DestinationUrl::parse(&change.url)
                .map_err(|e| ApiError::invalid("url", e.to_string()))?;
            crate::destination::check(&state.destinations, &url).await?;
            checked_url = true;
        }
        // A new filter is parsed by PostgreSQL, once.
        if !checked_filter && let Some(filter) = patch.get("filter").and_then(Value::as_str) {
            super::subscription_filter::check(state, filter).await?;
            checked_filter = true;
        }
        let expected = SubscriptionChange::of(&current);
        let mut conn = pool::connection(&state.pool).await?;
        match subscription_changes::update(&mut conn, tenant, id, &expected, &change).await? {
            UpdateOutcome::Updated {
                row,
                held,
                released,
            } => {
                tracing::info!(
                    subscription.id = %id,
                    enabled = row.enabled,
                    held,
                    released,
                    "subscription changed"
                );
                return Ok(HttpResponse::Ok()
                    .insert_header(("Cache-Control", "no-store"))
                    .json(SubscriptionView::public(*row)));
            }
            UpdateOutcome::NotFound => return Err(path.not_found()),
            // Changed by someone else since it was read: merge into the new state.
            UpdateOutcome::Stale => continue,
        }
    }
    Err(ApiError::Internal(anyhow::anyhow!(
        "subscription {id} kept changing while it was patched"
    )))
}

/// What `PATCH` merges into: the subscription's changeable fields as a creation request would
/// give them (a field at its default is absent).
fn patchable(row: &SubscriptionRow) -> Value {
    let mut doc = json!({
        "url": row.url,
        "event_types": row.event_types,
        "rate_limit": {"per_second": row.rate_limit_per_sec, "burst": row.rate_limit_burst},
        "headers": row.headers,
        "metadata": row.metadata,
        "enabled": row.enabled,
        "retry": {},
    });
    if let Some(description) = &row.description {
        doc["description"] = json!(description);
    }
    if let Some(n) = row.max_attempts {
        doc["retry"]["max_attempts"] = json!(n);
    }
    if let Some(n) = row.max_delay_secs {
        doc["retry"]["max_delay_secs"] = json!(n);
    }
    if let Some(n) = row.timeout_ms {
        doc["timeout_ms"] = json!(n);
    }
    if let Some(filter) = &row.filter {
        doc["filter"] = json!(filter);
    }
    if let Some(secs) = row.auto_disable_after_secs {
        doc["auto_disable_after_secs"] = json!(secs);
    }
    doc["ordering"] = json!(row.ordering);
    doc["on_exhausted"] = json!(row.on_exhausted);
    doc
}

/// RFC 7396: an object patch merges member by member (`null` removes a member, which is its
/// default); anything else replaces the target whole.
pub fn merge(target: &mut Value, patch: Value) {
    let Value::Object(patch) = patch else {
        *target = patch;
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(map) = target {
        for (key, value) in patch {
            if value.is_null() {
                map.remove(&key);
            } else {
                merge(map.entry(key).or_insert(Value::Null), value);
            }
        }
    }
}

/// Checks a patch before it is merged: an object; `id` and `secret` are not changed here;
/// `enabled`, `url` and `event_types` cannot be reset; header names in `headers` are
/// lower-cased (they are case-insensitive), refusing one given twice.
/// The members a patch may name, with the members of those that are fixed-shape objects
/// (`headers` and `metadata` are open maps: any member).
const PATCHABLE: &[(&str, &[&str])] = &[
    ("url", &[]),
    ("event_types", &[]),
    ("rate_limit", &["per_second", "burst"]),
    ("headers", ANY),
    ("description", &[]),
    ("metadata", ANY),
    ("enabled", &[]),
    ("retry", &["max_attempts", "max_delay_secs"]),
    ("timeout_ms", &[]),
    ("filter", &[]),
    ("auto_disable_after_secs", &[]),
    ("ordering", &[]),
    ("on_exhausted", &[]),
];
/// Stands for "any member" in [`PATCHABLE`].
const ANY: &[&str] = &["*"];

pub fn check_patch(patch: Value) -> Result<Value, ApiError> {
    let Value::Object(mut map) = patch else {
        return Err(ApiError::invalid(
            "body",
            format!("must be a JSON merge patch object, got {}", kind(&patch)),
        ));
    };
    if map.contains_key("id") {
        return Err(ApiError::invalid("id", "cannot be changed"));
    }
    // Unknown members are refused even as `null` (which would remove nothing): a typo must not
    // pass silently.
    for (key, members) in PATCHABLE {
        if let Some(Value::Object(inner)) = map.get(*key)
            && *members != ANY
            && let Some(unknown) = inner.keys().find(|k| !members.contains(&k.as_str()))
        {
            return Err(ApiError::invalid(
                format!("{key}.{unknown}"),
                "is not a known field",
            ));
        }
    }
    if let Some(unknown) = map
        .keys()
        .find(|k| k.as_str() != "secret" && !PATCHABLE.iter().any(|(key, _)| key == k))
    {
        return Err(ApiError::invalid(unknown.clone(), "is not a known field"));
    }
    if map.contains_key("secret") {
        return Err(ApiError::invalid(
            "secret",
            "is changed with POST /subscriptions/{id}/rotate-secret",
        ));
    }
    for required in ["url", "event_types", "enabled"] {
        if map.get(required).is_some_and(Value::is_null) {
            return Err(ApiError::invalid(required, "cannot be reset (null)"));
        }
    }
    if let Some(Value::Object(headers)) = map.get_mut("headers") {
        let mut lowered = Map::new();
        for (name, value) in std::mem::take(headers) {
            let lower = name.to_ascii_lowercase();
            if lowered.contains_key(&lower) {
                return Err(ApiError::invalid(
                    format!("headers.{name}"),
                    "is given twice (header names are case-insensitive)",
                ));
            }
            lowered.insert(lower, value);
        }
        *headers = lowered;
    }
    Ok(Value::Object(map))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn merge_follows_rfc_7396_appendix_a() {
        let cases = [
            (json!({"a": "b"}), json!({"a": "c"}), json!({"a": "c"})),
            (
                json!({"a": "b"}),
                json!({"b": "c"}),
                json!({"a": "b", "b": "c"}),
            ),
            (json!({"a": "b"}), json!({"a": null}), json!({})),
            (
                json!({"a": {"b": "c"}}),
                json!({"a": {"b": "d", "c": null}}),
                json!({"a": {"b": "d"}}),
            ),
            (
                json!({"a": [{"b": "c"}]}),
                json!({"a": [1]}),
                json!({"a": [1]}),
            ),
            (
                json!({"e": null}),
                json!({"a": 1}),
                json!({"e": null, "a": 1}),
            ),
            (
                json!([1, 2]),
                json!({"a": "b", "c": null}),
                json!({"a": "b"}),
            ),
            (
                json!({}),
                json!({"a": {"bb": {"ccc": null}}}),
                json!({"a": {"bb": {}}}),
            ),
        ];
        for (mut target, patch, expected) in cases {
            merge(&mut target, patch.clone());
            assert_eq!(target, expected, "patch {patch}");
        }
    }
}
