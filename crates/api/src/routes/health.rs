//! `/healthz` (the process answers), `/readyz` (the database answers and is migrated) and
//! `/metrics` (Prometheus text format).

use actix_web::{HttpResponse, web};
use dispatch_store::{pool, queries};

use super::AppState;
use crate::error::{ApiError, ErrorBody};
use crate::views::HealthView;

/// Liveness: the process answers. Never touches the database.
#[utoipa::path(
    get,
    path = "/healthz",
    operation_id = "healthz",
    tag = "operations",
    responses(
        (status = 200, description = "`{\"status\": \"ok\"}`", body = HealthView,
            example = json!({"status": "ok"})),
    ),
)]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(HealthView { status: "ok" })
}

/// Readiness: a database connection, `SELECT 1`, and every migration built into the binary is
/// applied.
#[utoipa::path(
    get,
    path = "/readyz",
    operation_id = "readyz",
    tag = "operations",
    responses(
        (status = 200, description = "`{\"status\": \"ready\"}`", body = HealthView,
            example = json!({"status": "ready"})),
        (status = 503, description = "`not_ready`: the message says why (database unavailable, migrations pending, migration table missing). No `Retry-After`.", body = ErrorBody),
    ),
)]
pub async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let mut conn = pool::connection(&state.pool)
        .await
        .map_err(|e| ApiError::NotReady(e.to_string()))?;
    match queries::health::check_ready(&mut conn).await {
        Ok(true) => Ok(HttpResponse::Ok().json(HealthView { status: "ready" })),
        Ok(false) => Err(ApiError::NotReady(
            "database migrations are pending: run `dispatch-api migrate up`".to_owned(),
        )),
        Err(e) => Err(ApiError::NotReady(e.to_string())),
    }
}

/// Prometheus metrics of this process, in the text exposition format 0.0.4.
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    tag = "operations",
    responses(
        (status = 200, description = "Prometheus text format.", body = String,
            content_type = "text/plain; version=0.0.4; charset=utf-8"),
    ),
)]
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
