//! The console's changes, run through the JSON routes' own functions: `dispatch-console` calls
//! [`ApiActions`] with an [`Action`], this runs the function the route runs once its body is
//! read, and hands back the JSON answer or the refusal as the route's caller would see them.

use actix_web::ResponseError;
use actix_web::web;
use dispatch_console::actions::{Action, Actions, Outcome, Refusal};
use dispatch_domain::TenantId;
use serde_json::Value;

use crate::error::ApiError;
use crate::routes::path_id::PathId;
use crate::routes::{
    AppState, deliveries, replays, secrets, subscription_patch, subscription_test, subscriptions,
};

/// The API's side of [`Actions`].
pub struct ApiActions {
    pub state: web::Data<AppState>,
}

/// What the route would have answered, as JSON.
async fn answer(result: Result<actix_web::HttpResponse, ApiError>) -> Result<Value, Refusal> {
    let response = result.unwrap_or_else(|e| e.error_response());
    let status = response.status();
    let bytes = actix_web::body::to_bytes(response.into_body())
        .await
        .map_err(|_| Refusal {
            status: 500,
            code: "internal".to_owned(),
            field: None,
            message: "the answer could not be read".to_owned(),
        })?;
    let body: Value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or(Value::Null)
    };
    if status.is_success() {
        return Ok(body);
    }
    let text = |name: &str| body.get(name).and_then(Value::as_str).map(str::to_owned);
    Err(Refusal {
        status: status.as_u16(),
        code: text("code").unwrap_or_else(|| "error".to_owned()),
        field: text("field"),
        message: text("message").unwrap_or_else(|| status.to_string()),
    })
}

impl Actions for ApiActions {
    fn run(&self, tenant: &TenantId, action: Action) -> Outcome {
        let state = self.state.clone();
        let tenant = tenant.clone();
        Box::pin(async move {
            let result = match action {
                Action::CreateSubscription(body) => {
                    subscriptions::create_with(&state, &tenant, body).await
                }
                Action::PatchSubscription { id, patch } => match PathId::parse(id) {
                    Ok(id) => subscription_patch::patch_with(&state, &tenant, &id, patch).await,
                    Err(e) => Err(e),
                },
                Action::DeleteSubscription { id } => match PathId::parse(id) {
                    Ok(id) => subscriptions::delete_with(&state, &tenant, &id).await,
                    Err(e) => Err(e),
                },
                Action::RotateSecret { id } => match PathId::parse(id) {
                    Ok(id) => secrets::rotate_with(&state, &tenant, &id, None).await,
                    Err(e) => Err(e),
                },
                Action::SendTest { id } => match PathId::parse(id) {
                    Ok(id) => subscription_test::send_with(&state, &tenant, &id).await,
                    Err(e) => Err(e),
                },
                Action::RetryDelivery { id } => match PathId::parse(id.to_string()) {
                    Ok(id) => deliveries::retry_with(&state, &tenant, &id, None).await,
                    Err(e) => Err(e),
                },
                Action::CreateReplay(body) => {
                    replays::create_with(&state, &tenant, None, body).await
                }
            };
            answer(result).await
        })
    }
}
