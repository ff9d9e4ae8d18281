//! `POST /replays`, `GET /replays/{id}`, `POST /replays/{id}/cancel`: re-queueing many
//! deliveries as a stored, resumable job (worked by [`crate::replayer`]).

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use dispatch_domain::TenantId;
use dispatch_domain::{DeliveryStatus, EventId, ReplayId, SubscriptionId};
use dispatch_store::pool;
use dispatch_store::queries::listing::DeliveryFilter;
use dispatch_store::queries::replays::{self, Created, NewReplay, ReplayRow};
use dispatch_store::queries::requeue;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::AppState;
use super::path_id::PathId;
use crate::body::{Fields, as_string, kind, read_json_body};
use crate::error::{ApiError, ErrorBody};
use crate::openapi::DeliveryStatusSchema;

/// `POST /replays`: exactly one selector (`event_id`, `subscription_id`, or a `since` window),
/// the statuses to replay, and whether only to count.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // documentation only: the handler reads the body field by field
pub struct NewReplayRequest {
    /// Every matching delivery of this event.
    pub event_id: Option<String>,
    /// Every matching delivery to this subscription (optionally within `since`/`until`).
    pub subscription_id: Option<String>,
    /// Deliveries last changed at or after this time (RFC 3339).
    #[schema(format = DateTime)]
    pub since: Option<String>,
    /// Deliveries last changed before this time (RFC 3339); needs `since` or `subscription_id`.
    #[schema(format = DateTime)]
    pub until: Option<String>,
    /// Which deliveries: `failed` (the default) and/or `delivered` (a resend).
    #[schema(value_type = Option<Vec<DeliveryStatusSchema>>, example = json!(["failed"]))]
    pub statuses: Option<Vec<String>>,
    /// Only count what would be replayed; nothing is stored or changed.
    #[schema(default = false)]
    pub dry_run: Option<bool>,
}

/// A replay and its progress.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReplayView {
    #[schema(example = "rpl_0193a1b2c3d4e5f6a7b8c9d0e1f2a3b4")]
    pub id: String,
    /// `running` until every matching delivery was looked at, then `completed`; or `cancelled`.
    #[schema(pattern = "^(running|completed|cancelled)$", example = "running")]
    pub state: String,
    /// The selector and statuses it was created with.
    pub selector: ReplaySelectorView,
    /// Deliveries that matched when it was created.
    pub matched: i64,
    /// Deliveries put back in the queue so far (fewer than `matched` if some changed meanwhile).
    pub requeued: i64,
    /// Batches worked so far.
    pub batches: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// When it completed or was cancelled; null while running.
    #[schema(required = true)]
    pub finished_at: Option<DateTime<Utc>>,
}

/// What a replay selects.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReplaySelectorView {
    #[schema(required = true)]
    pub event_id: Option<String>,
    #[schema(required = true)]
    pub subscription_id: Option<String>,
    #[schema(required = true)]
    pub since: Option<DateTime<Utc>>,
    #[schema(required = true)]
    pub until: Option<DateTime<Utc>>,
    #[schema(value_type = Vec<DeliveryStatusSchema>)]
    pub statuses: Vec<String>,
}

impl From<ReplayRow> for ReplayView {
    fn from(r: ReplayRow) -> Self {
        Self {
            id: r.id,
            state: r.state,
            selector: ReplaySelectorView {
                event_id: r.event_id,
                subscription_id: r.subscription_id,
                since: r.since,
                until: r.until,
                statuses: r.statuses,
            },
            matched: r.matched,
            requeued: r.requeued,
            batches: r.batches,
            created_at: r.created_at,
            updated_at: r.updated_at,
            finished_at: r.finished_at,
        }
    }
}

/// The answer to a dry run.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReplayCountView {
    /// Always true.
    pub dry_run: bool,
    /// Deliveries a replay would re-queue now.
    pub matched: i64,
}

fn time(fields: &mut Fields, name: &str) -> Result<Option<DateTime<Utc>>, ApiError> {
    fields
        .optional_str(name)?
        .map(|text| {
            DateTime::parse_from_rfc3339(&text)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|e| {
                    ApiError::invalid(
                        name,
                        format!("must be an RFC 3339 time such as 2026-12-01T08:00:00Z ({e})"),
                    )
                })
        })
        .transpose()
}

fn statuses(value: Option<Value>) -> Result<Vec<DeliveryStatus>, ApiError> {
    let Some(value) = value else {
        return Ok(vec![DeliveryStatus::Failed]);
    };
    let Value::Array(items) = value else {
        return Err(ApiError::invalid(
            "statuses",
            format!(
                "must be an array such as [\"failed\"], got {}",
                kind(&value)
            ),
        ));
    };
    if items.is_empty() {
        return Err(ApiError::invalid(
            "statuses",
            "must name at least one status",
        ));
    }
    let mut out = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        let field = format!("statuses[{i}]");
        let status = match as_string(&field, item)?.as_str() {
            "failed" => DeliveryStatus::Failed,
            "delivered" => DeliveryStatus::Delivered,
            other => {
                return Err(ApiError::invalid(
                    field,
                    format!(
                        "must be \"failed\" or \"delivered\" (only finished deliveries are \
                         replayed), got {other:?}"
                    ),
                ));
            }
        };
        if !out.contains(&status) {
            out.push(status);
        }
    }
    out.sort();
    Ok(out)
}

/// A replay request: its filter and whether it is a dry run.
pub fn parse_replay(body: Value) -> Result<(DeliveryFilter, bool), ApiError> {
    let mut fields = Fields::from_body(body)?;
    let event_id = fields.optional_str("event_id")?;
    if let Some(id) = &event_id {
        EventId::parse(id).map_err(|e| ApiError::invalid("event_id", e.to_string()))?;
    }
    let subscription_id = fields.optional_str("subscription_id")?;
    if let Some(id) = &subscription_id {
        SubscriptionId::parse(id)
            .map_err(|e| ApiError::invalid("subscription_id", e.to_string()))?;
    }
    let since = time(&mut fields, "since")?;
    let until = time(&mut fields, "until")?;
    let statuses = statuses(fields.optional("statuses"))?;
    let dry_run = match fields.optional("dry_run") {
        None => false,
        Some(v) => v
            .as_bool()
            .ok_or_else(|| ApiError::invalid("dry_run", "must be true or false"))?,
    };
    fields.finish()?;
    let selectors = [
        event_id.is_some(),
        subscription_id.is_some(),
        since.is_some(),
    ]
    .into_iter()
    .filter(|s| *s)
    .count();
    let window_with_subscription = subscription_id.is_some() && since.is_some();
    if selectors == 0 || (selectors > 1 && !window_with_subscription) {
        return Err(ApiError::invalid(
            "body",
            "give exactly one selector: event_id, subscription_id (optionally with since/until) \
             or since (optionally with until)",
        ));
    }
    if until.is_some() && event_id.is_some() {
        return Err(ApiError::invalid("until", "does not go with event_id"));
    }
    if let (Some(since), Some(until)) = (since, until)
        && since >= until
    {
        return Err(ApiError::invalid("until", "must be later than since"));
    }
    Ok((
        DeliveryFilter {
            statuses,
            subscription_id,
            event_id,
            updated_after: since,
            updated_before: until,
        },
        dry_run,
    ))
}

/// The `Idempotency-Key` header: 1–255 visible ASCII characters.
fn idempotency_key(req: &HttpRequest) -> Result<Option<String>, ApiError> {
    let Some(value) = req.headers().get("idempotency-key") else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .filter(|k| (1..=255).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_graphic()))
        .map(|k| Some(k.to_owned()))
        .ok_or_else(|| ApiError::InvalidParam {
            param: "Idempotency-Key".to_owned(),
            message: "must be 1 to 255 visible ASCII characters".to_owned(),
        })
}

/// Tells one request body from another under the same `Idempotency-Key`: SHA-256 of its JSON
/// text (as parsed, so key order and spacing count).
fn request_hash(body: &Value) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, body.to_string().as_bytes());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Replay many deliveries.
///
/// Counts the matching deliveries, stores the replay and answers at once; any API replica then
/// re-queues them in bounded batches (each one short transaction), so a replay of millions
/// never holds a long transaction and survives restarts. Only deliveries whose subscription is
/// not deleted are replayed. With the same `Idempotency-Key` the same replay is answered again.
#[utoipa::path(
    post,
    path = "/replays",
    operation_id = "create_replay",
    tag = "deliveries",
    params(("Idempotency-Key" = Option<String>, Header, description = "Repeat a request safely: the same key answers the replay it created.")),
    request_body(content = NewReplayRequest, content_type = "application/json"),
    responses(
        (status = 202, description = "Stored; it runs in the background (`GET /replays/{id}`). Also the answer to a repeated `Idempotency-Key`.", body = ReplayView,
            headers(("Location" = String, description = "`/replays/{id}`"))),
        (status = 200, description = "`dry_run`: the count only; nothing stored.", body = ReplayCountView),
        (status = 400, description = "`malformed_json` or `duplicate_key`.", body = ErrorBody),
        (status = 409, description = "`idempotency_key_reused`: the key was used for a different request.", body = ErrorBody),
        (status = 413, description = "`payload_too_large`.", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`.", body = ErrorBody),
        (status = 422, description = "`invalid_field`: no selector or more than one, a bad id, time or status, or an unknown field. `invalid_parameter`: a bad `Idempotency-Key`.", body = ErrorBody),
    ),
)]
pub async fn create(
    auth: crate::auth::Authorized,
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let key = idempotency_key(&req)?;
    let body = read_json_body(&req, payload, state.max_body_bytes).await?;
    create_with(&state, &auth.tenant, key, body).await
}

/// `POST /replays` once its `Idempotency-Key` and body are read (the console's replay runs
/// this too).
pub(crate) async fn create_with(
    state: &AppState,
    tenant: &TenantId,
    key: Option<String>,
    body: serde_json::Value,
) -> Result<HttpResponse, ApiError> {
    let request_hash = request_hash(&body);
    let (filter, dry_run) = parse_replay(body)?;
    let mut conn = pool::connection(&state.pool).await?;
    if dry_run {
        let (matched, _) = requeue::count_replayable(&mut conn, tenant, &filter).await?;
        return Ok(HttpResponse::Ok().json(ReplayCountView {
            dry_run: true,
            matched,
        }));
    }
    let new = NewReplay {
        id: ReplayId::generate().into_inner(),
        tenant: tenant.clone(),
        filter,
        idempotency_key: key,
        request_hash,
    };
    let row = match replays::create(&mut conn, &new).await? {
        Created::New(row) => {
            tracing::info!(replay.id = %row.id, matched = row.matched, "replay created");
            state.replayer.wake();
            row
        }
        Created::Existing(row) => row,
        Created::KeyReused(_) => {
            return Err(ApiError::Conflict {
                code: crate::error::Conflict::IdempotencyKeyReused,
                message: "this Idempotency-Key was used for a different replay request".to_owned(),
            });
        }
    };
    Ok(HttpResponse::Accepted()
        .insert_header(("Location", format!("/replays/{}", row.id)))
        .json(ReplayView::from(row)))
}

/// Get a replay and its progress.
#[utoipa::path(
    get,
    path = "/replays/{id}",
    operation_id = "get_replay",
    tag = "deliveries",
    params(("id" = String, Path, description = "The replay's id.")),
    responses(
        (status = 200, description = "The replay.", body = ReplayView),
    ),
)]
pub async fn get(
    auth: crate::auth::Authorized,
    id: PathId<ReplayId>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let mut conn = pool::connection(&state.pool).await?;
    let row = replays::find(&mut conn, &auth.tenant, id.as_str())
        .await?
        .ok_or_else(|| id.not_found())?;
    Ok(HttpResponse::Ok().json(ReplayView::from(row)))
}

/// Cancel a running replay.
///
/// What it re-queued so far stays queued. Cancelling a finished replay changes nothing and
/// answers it as it is.
#[utoipa::path(
    post,
    path = "/replays/{id}/cancel",
    operation_id = "cancel_replay",
    tag = "deliveries",
    params(("id" = String, Path, description = "The replay's id.")),
    responses(
        (status = 200, description = "The replay as it now is.", body = ReplayView),
    ),
)]
pub async fn cancel(
    auth: crate::auth::Authorized,
    id: PathId<ReplayId>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let mut conn = pool::connection(&state.pool).await?;
    let row = replays::cancel(&mut conn, &auth.tenant, id.as_str())
        .await?
        .ok_or_else(|| id.not_found())?;
    Ok(HttpResponse::Ok().json(ReplayView::from(row)))
}
