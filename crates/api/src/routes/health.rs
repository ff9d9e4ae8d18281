//! `/healthz` (the process answers) and `/readyz` (the database answers and is migrated).

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
