//! Route table: every path, its handlers, and JSON answers for unknown paths and methods.
//! [`ROUTES`] is the one list of what the API serves: [`configure`] builds the app from it, and
//! the OpenAPI tests compare it with the document (so an undocumented route fails them).

pub(crate) mod batch;
pub(crate) mod deliveries;
pub(crate) mod event_list;
pub(crate) mod events;
pub(crate) mod health;
pub(crate) mod key_views;
pub(crate) mod keys;
pub(crate) mod ordering;
pub(crate) mod path_id;
pub(crate) mod replays;
pub(crate) mod secrets;
pub(crate) mod stats;
pub(crate) mod subscription_filter;
pub(crate) mod subscription_patch;
pub(crate) mod subscription_settings;
pub(crate) mod subscription_test;
pub(crate) mod subscriptions;
pub(crate) mod tenant_views;
pub(crate) mod tenants;

use actix_web::http::Method;
use actix_web::http::header::{ALLOW, HeaderValue};
use actix_web::{HttpResponse, ResponseError, web};
use dispatch_store::Pool;

use crate::error::ApiError;

/// What every handler shares.
pub struct AppState {
    pub pool: Pool,
    pub max_body_bytes: usize,
    pub max_batch_body_bytes: usize,
    /// Longest a body may take to arrive.
    pub body_read_timeout: std::time::Duration,
    pub auth: crate::auth::Auth,
    /// The database's API keys, reloaded every second.
    pub keys: std::sync::Arc<crate::key_cache::KeyCache>,
    /// Seals subscription secrets before they are stored.
    pub secret_keys: dispatch_domain::sealing::Keyring,
    /// The default overlap of `POST /subscriptions/{id}/rotate-secret`.
    pub secret_rotation_overlap: std::time::Duration,
    pub waker: crate::wake::Waker,
    /// Works stored replays in the background.
    pub replayer: crate::replayer::Replayer,
    /// Stores `POST /events` requests in groups.
    pub committer: crate::committer::Committer,
    /// Where subscriptions may point (checked at creation).
    pub destinations: dispatch_domain::destination::DestinationPolicy,
    /// Every tenant's limits unless it has its own.
    pub tenant_defaults: dispatch_store::queries::tenants::TenantLimits,
    /// The per-tenant ingest buckets of this replica.
    pub ingest_limiter: std::sync::Arc<crate::tenant_limits::IngestLimiter>,
}

impl AppState {
    /// `tenant`'s limits as they apply now (its own over the defaults).
    pub fn limits_of(&self, tenant: &dispatch_domain::TenantId) -> crate::tenant_limits::Effective {
        crate::tenant_limits::Effective::of(
            &self.keys.tenant(tenant).unwrap_or_default(),
            &self.tenant_defaults,
        )
    }
}

/// `405` with the JSON error body and, as RFC 9110 requires, an `Allow` header naming the
/// path's methods.
async fn method_not_allowed(allow: HeaderValue) -> HttpResponse {
    let mut response = ApiError::MethodNotAllowed.error_response();
    response.headers_mut().insert(ALLOW, allow);
    response
}

async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound("no such route".to_owned()))
}

/// One route: a method on a path pattern, and what handles it.
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    handler: fn(actix_web::Route) -> actix_web::Route,
}

const fn route(
    method: &'static str,
    path: &'static str,
    handler: fn(actix_web::Route) -> actix_web::Route,
) -> Route {
    Route {
        method,
        path,
        handler,
    }
}

/// Every route the API serves. Another method on one of these paths answers `405`, any other
/// path `404`. Each must be documented in [`crate::openapi::ApiDoc`].
pub const ROUTES: &[Route] = &[
    route("POST", "/events", |r| r.to(events::create)),
    route("GET", "/events", |r| r.to(event_list::list)),
    // Before `/events/{id}`: a path matches the first resource registered for it.
    route("POST", "/events/batch", |r| r.to(batch::create)),
    route("GET", "/events/{id}", |r| r.to(events::get)),
    route("GET", "/events/{id}/attempts", |r| r.to(events::attempts)),
    route("GET", "/deliveries", |r| r.to(deliveries::list)),
    route("GET", "/deliveries/{id}", |r| r.to(deliveries::get)),
    route("GET", "/deliveries/{id}/attempts", |r| {
        r.to(deliveries::attempts)
    }),
    route("POST", "/deliveries/{id}/retry", |r| {
        r.to(deliveries::retry)
    }),
    route("POST", "/deliveries/{id}/skip", |r| r.to(ordering::skip)),
    route("POST", "/replays", |r| r.to(replays::create)),
    route("GET", "/replays/{id}", |r| r.to(replays::get)),
    route("POST", "/replays/{id}/cancel", |r| r.to(replays::cancel)),
    route("POST", "/subscriptions", |r| r.to(subscriptions::create)),
    route("GET", "/subscriptions", |r| r.to(subscriptions::list)),
    route("GET", "/subscriptions/{id}", |r| r.to(subscriptions::get)),
    route("PATCH", "/subscriptions/{id}", |r| {
        r.to(subscription_patch::patch)
    }),
    route("DELETE", "/subscriptions/{id}", |r| {
        r.to(subscriptions::delete)
    }),
    route("POST", "/subscriptions/{id}/test", |r| {
        r.to(subscription_test::send)
    }),
    route("POST", "/subscriptions/{id}/filter-test", |r| {
        r.to(subscription_filter::test)
    }),
    route("GET", "/subscriptions/{id}/blocked-keys", |r| {
        r.to(ordering::blocked_keys)
    }),
    route("POST", "/subscriptions/{id}/rotate-secret", |r| {
        r.to(secrets::rotate)
    }),
    route("POST", "/keys", |r| r.to(keys::create)),
    route("GET", "/keys", |r| r.to(keys::list)),
    route("DELETE", "/keys/{id}", |r| r.to(keys::revoke)),
    route("POST", "/keys/{id}/rotate", |r| r.to(keys::rotate_key)),
    route("GET", "/audit", |r| r.to(keys::audit)),
    route("POST", "/tenants", |r| r.to(tenants::create)),
    route("GET", "/tenants", |r| r.to(tenants::list)),
    route("GET", "/tenants/{id}", |r| r.to(tenants::get)),
    route("PATCH", "/tenants/{id}", |r| r.to(tenants::update)),
    route("DELETE", "/tenants/{id}", |r| r.to(tenants::delete)),
    route("POST", "/tenants/{id}/keys", |r| r.to(tenants::create_key)),
    route("GET", "/tenants/{id}/keys", |r| r.to(tenants::list_keys)),
    route("GET", "/healthz", |r| r.to(health::healthz)),
    route("GET", "/readyz", |r| r.to(health::readyz)),
    route("GET", "/metrics", |r| r.to(health::metrics)),
    route("GET", "/stats", |r| r.to(stats::get)),
    route("GET", "/openapi.json", |r| r.to(crate::openapi::serve)),
];

pub fn configure(cfg: &mut web::ServiceConfig) {
    let mut paths: Vec<&str> = Vec::new();
    for route in ROUTES {
        if !paths.contains(&route.path) {
            paths.push(route.path);
        }
    }
    for path in paths {
        let routes = || ROUTES.iter().filter(move |r| r.path == path);
        let allow = routes().map(|r| r.method).collect::<Vec<_>>().join(", ");
        let allow = HeaderValue::from_str(&allow).expect("method names are valid header text");
        let mut resource =
            web::resource(path).default_service(web::to(move || method_not_allowed(allow.clone())));
        for route in routes() {
            let method = Method::from_bytes(route.method.as_bytes())
                .expect("ROUTES names valid HTTP methods");
            resource = resource.route((route.handler)(web::method(method)));
        }
        cfg.service(resource);
    }
    cfg.default_service(web::to(not_found));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_unique_with_valid_methods() {
        for (i, route) in ROUTES.iter().enumerate() {
            assert!(Method::from_bytes(route.method.as_bytes()).is_ok());
            assert!(
                !ROUTES[..i]
                    .iter()
                    .any(|r| r.method == route.method && r.path == route.path),
                "{} {} is listed twice",
                route.method,
                route.path
            );
        }
    }
}
