//! `/healthz` (the process answers), `/readyz` (the database answers and is migrated) and
//! `/metrics` (Prometheus text format).

use actix_web::{HttpResponse, web};
use dispatch_store::{pool, queries};
use serde_json::json;

use super::AppState;
use crate::error::ApiError;

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

pub async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let mut conn = pool::connection(&state.pool)
        .await
        .map_err(|e| ApiError::NotReady(e.to_string()))?;
    match queries::health::check_ready(&mut conn).await {
        Ok(true) => Ok(HttpResponse::Ok().json(json!({"status": "ready"}))),
        Ok(false) => Err(ApiError::NotReady(
            "database migrations are pending: run `dispatch-api migrate up`".to_owned(),
        )),
        Err(e) => Err(ApiError::NotReady(e.to_string())),
    }
}

/// Prometheus text format of everything this process recorded.
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    use dispatch_telemetry::metrics as names;
    let pool = state.pool.state();
    let idle = f64::from(pool.idle_connections);
    let active = f64::from(pool.connections.saturating_sub(pool.idle_connections));
    metrics::gauge!(names::DB_POOL_CONNECTIONS, names::STATE => "idle").set(idle);
    metrics::gauge!(names::DB_POOL_CONNECTIONS, names::STATE => "active").set(active);
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(names::install().render())
}
