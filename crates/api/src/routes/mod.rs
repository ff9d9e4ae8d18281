//! Route table: every path, its handlers, and JSON answers for unknown paths and methods.

mod events;
mod health;
mod subscriptions;

use actix_web::{HttpResponse, web};
use dispatch_store::Pool;

use crate::error::ApiError;

/// What every handler shares.
pub struct AppState {
    pub pool: Pool,
    pub max_body_bytes: usize,
    pub waker: crate::wake::Waker,
}

async fn method_not_allowed() -> Result<HttpResponse, ApiError> {
    Err(ApiError::MethodNotAllowed)
}

async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound("no such route".to_owned()))
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    let resource =
        |path: &str| web::resource(path.to_owned()).default_service(web::to(method_not_allowed));
    cfg.service(resource("/events").route(web::post().to(events::create)))
        .service(resource("/events/{id}").route(web::get().to(events::get)))
        .service(resource("/events/{id}/attempts").route(web::get().to(events::attempts)))
        .service(
            resource("/subscriptions")
                .route(web::post().to(subscriptions::create))
                .route(web::get().to(subscriptions::list)),
        )
        .service(
            resource("/subscriptions/{id}")
                .route(web::get().to(subscriptions::get))
                .route(web::delete().to(subscriptions::delete)),
        )
        .service(resource("/healthz").route(web::get().to(health::healthz)))
        .service(resource("/readyz").route(web::get().to(health::readyz)))
        .service(resource("/metrics").route(web::get().to(health::metrics)))
        .default_service(web::to(not_found));
}
