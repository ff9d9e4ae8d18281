//! The API's OpenAPI 3.1 document, generated from the code with `utoipa`: the handlers'
//! `#[utoipa::path]` annotations, the response types in [`crate::views`] and [`ErrorBody`], the
//! answers every protected route shares (`shared.rs`), the enum schemas built from the domain's
//! lists (`enums.rs`) and the documentation-only request schemas (`requests.rs`). Served at
//! `GET /openapi.json` and checked in as `docs/openapi.json` (regenerate with
//! `cargo xtask openapi`); a test fails when either disagrees with the routes the server really
//! has.

mod enums;
mod requests;
mod shared;

use std::sync::OnceLock;

use actix_web::HttpResponse;
use utoipa::OpenApi;

pub use enums::{
    AttemptErrorCode, CircuitState, DeliveryStatusSchema, ErrorCode, OnExhaustedSchema,
    OrderingSchema,
};
pub use requests::{
    NewBatchRequest, NewEventRequest, NewSubscriptionRequest, SubscriptionPatchRequest,
    new_event_data, stored_event_data,
};
use requests::{RateLimitRequest, RetryRequest};
use shared::SharedResponses;

use crate::error::ErrorBody;
use crate::routes;
use crate::views::{
    AttemptView, CircuitView, DeliveryView, EventView, HealthView, Page, RateLimitView, RetryView,
    SecretRotationView, SubscriptionView,
};

/// The OpenAPI document of `dispatch-api`.
#[derive(OpenApi)]
#[openapi(
    modifiers(&SharedResponses),
    info(
        title = "Dispatch API",
        description = "Dispatch's ingestion API: producers POST events, which are fanned out \
            into one delivery per matching subscription and POSTed, signed, to each \
            subscription's URL. docs/spec.md is the prose reference for every route, field, \
            error and the delivery contract. An unknown path answers `404 not_found` (\"no \
            such route\"); a known path with another method (including `HEAD`) answers \
            `405 method_not_allowed` with an `Allow` header naming the path's methods.",
        license(name = "MIT", identifier = "MIT"),
    ),
    paths(
        routes::events::create,
        routes::batch::create,
        routes::events::get,
        routes::events::attempts,
        routes::event_list::list,
        routes::deliveries::list,
        routes::deliveries::get,
        routes::deliveries::attempts,
        routes::deliveries::retry,
        routes::ordering::skip,
        routes::replays::create,
        routes::replays::get,
        routes::replays::cancel,
        routes::subscriptions::create,
        routes::subscriptions::list,
        routes::subscriptions::get,
        routes::subscription_patch::patch,
        routes::subscriptions::delete,
        routes::secrets::rotate,
        routes::subscription_test::send,
        routes::subscription_filter::test,
        routes::ordering::blocked_keys,
        routes::keys::create,
        routes::keys::list,
        routes::keys::revoke,
        routes::keys::rotate_key,
        routes::keys::audit,
        routes::tenants::create,
        routes::tenants::list,
        routes::tenants::get,
        routes::tenants::update,
        routes::tenants::delete,
        routes::tenants::create_key,
        routes::tenants::list_keys,
        routes::health::healthz,
        routes::health::readyz,
        routes::health::metrics,
        routes::stats::get,
        serve,
    ),
    components(schemas(
        NewEventRequest,
        NewBatchRequest,
        routes::batch::BatchResponse,
        routes::batch::BatchItemResult,
        routes::batch::BatchItemError,
        EventView,
        DeliveryView,
        Page<AttemptView>,
        AttemptView,
        routes::event_list::EventSummaryView,
        Page<routes::event_list::EventSummaryView>,
        routes::deliveries::DeliveryDetailView,
        routes::deliveries::LastAttemptView,
        Page<routes::deliveries::DeliveryDetailView>,
        routes::ordering::BlockedKeyView,
        routes::key_views::KeyView,
        routes::key_views::CreatedKeyView,
        routes::tenant_views::TenantView,
        routes::tenant_views::LimitsView,
        routes::tenant_views::NewTenantRequest,
        routes::tenant_views::LimitsRequest,
        routes::tenant_views::TenantPatchRequest,
        routes::tenant_views::NewTenantKeyRequest,
        Page<routes::tenant_views::TenantView>,
        routes::key_views::AuditView,
        routes::key_views::NewKeyRequest,
        routes::key_views::RotateKeyRequest,
        Page<routes::key_views::KeyView>,
        Page<routes::key_views::AuditView>,
        Page<routes::ordering::BlockedKeyView>,
        routes::deliveries::RetryRequest,
        routes::replays::NewReplayRequest,
        routes::replays::ReplayView,
        routes::replays::ReplaySelectorView,
        routes::replays::ReplayCountView,
        routes::subscription_test::TestDeliveryView,
        routes::subscription_filter::FilterTestRequest,
        routes::subscription_filter::FilterTestView,
        NewSubscriptionRequest,
        SubscriptionPatchRequest,
        RateLimitRequest,
        RetryRequest,
        SubscriptionView,
        RateLimitView,
        RetryView,
        CircuitView,
        Page<SubscriptionView>,
        routes::secrets::RotateSecretRequest,
        SecretRotationView,
        HealthView,
        crate::admin::stats::StatsView,
        crate::admin::stats::BacklogView,
        crate::admin::stats::QueueView,
        crate::admin::stats::SubscriptionStatsView,
        ErrorBody,
        ErrorCode,
        DeliveryStatusSchema,
        CircuitState,
        AttemptErrorCode,
        OrderingSchema,
        OnExhaustedSchema,
    )),
    tags(
        (name = "events", description = "Ingesting events and reading their deliveries and attempts."),
        (name = "deliveries", description = "Finding deliveries, retrying one, and replaying many."),
        (name = "subscriptions", description = "Where events are delivered."),
        (name = "keys", description = "API keys kept in the database, and the audit log of their changes (admin keys only)."),
        (name = "tenants", description = "Tenants, their limits and their keys (admin keys; read keys may read tenants). A tenant key works only in its tenant; an admin key names one with the `Dispatch-Tenant` header."),
        (name = "operations", description = "Health, readiness, metrics, the queue's stats and this document."),
    ),
)]
pub struct ApiDoc;

/// The document as a value.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The document as pretty-printed JSON with a final newline: the exact content of
/// `docs/openapi.json`.
pub fn pretty_json() -> String {
    let mut text = document()
        .to_pretty_json()
        .expect("the OpenAPI document serialises to JSON");
    text.push('\n');
    text
}

/// The OpenAPI document of this API (the same as `docs/openapi.json`).
#[utoipa::path(
    get,
    path = "/openapi.json",
    operation_id = "openapi",
    tag = "operations",
    responses(
        (status = 200, description = "This document, OpenAPI 3.1.", content_type = "application/json", body = Object),
    ),
)]
pub async fn serve() -> HttpResponse {
    static JSON: OnceLock<String> = OnceLock::new();
    HttpResponse::Ok()
        .content_type("application/json")
        .body(JSON.get_or_init(pretty_json).as_str())
}
