//! `GET /stats`: the queue's snapshot, exactly what `dispatch-api admin stats --json` prints
//! (both call [`crate::admin::stats::snapshot`]).

use actix_web::{HttpResponse, web};
use dispatch_store::pool;

use super::AppState;
use crate::admin::stats::{self, StatsView};
use crate::error::ApiError;

/// The queue's snapshot: what `dispatch-api admin stats --json` prints.
///
/// The backlog, deliveries by status, the last hour's attempts and failure rate, the hot
/// queue's health and each subscription's circuit, due deliveries and failures. Counts every delivery by status: meant for an operator or a dashboard refreshing every few
/// seconds, not for a high-frequency scrape (`/metrics` is for that).
#[utoipa::path(
    get,
    path = "/stats",
    operation_id = "stats",
    tag = "operations",
    responses(
        (status = 200, description = "The snapshot.", body = StatsView),
    ),
)]
pub async fn get(
    _auth: crate::auth::Authorized,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let mut conn = pool::connection(&state.pool).await?;
    Ok(HttpResponse::Ok().json(stats::snapshot(&mut conn).await?))
}
