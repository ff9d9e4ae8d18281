//! The console's changes, run through the JSON routes' own functions: `dispatch-console` calls
//! [`ApiActions`] with an [`Action`], this resolves the session's key ([`auth::resolve`]),
//! checks its scope against the route the action performs (method and route pattern, as the
//! bearer-header extractor does), runs the function the route runs once its body is read, and
//! hands back the JSON answer or the refusal as the route's caller would see them. It also
//! answers the console's [`Access`] questions (who signs in, who a session's key is now)
//! through the same [`auth::resolve`].

use actix_web::ResponseError;
use actix_web::web;
use dispatch_console::access::{Access, Signer};
use dispatch_console::actions::{Action, Actions, Outcome, Refusal};
use serde_json::Value;

use crate::auth::{self, Authorized, Credential};
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

/// What the console needs to know of a resolved caller.
fn signer(authorized: Authorized) -> Signer {
    Signer {
        key_id: authorized.key_id.map(|id| id.as_str().to_owned()),
        scope: authorized.scope,
        tenant: authorized.tenant,
    }
}

/// A console session's caller now: its key resolved again, in its own tenant (`default` for
/// an admin or read key: the console has no `Dispatch-Tenant`), which must be live.
fn authorized(state: &AppState, key_id: Option<&str>) -> Option<Authorized> {
    auth::resolve(state, Credential::Session(key_id))?
        .in_tenant(state, None)
        .ok()
}

impl Access for ApiActions {
    fn sign_in(&self, key: &str) -> Option<Signer> {
        auth::resolve(&self.state, Credential::Key(Some(key)))?
            .in_tenant(&self.state, None)
            .ok()
            .map(signer)
    }

    fn current(&self, key_id: Option<&str>) -> Option<Signer> {
        authorized(&self.state, key_id).map(signer)
    }
}

impl Actions for ApiActions {
    fn run(&self, key_id: Option<&str>, action: Action) -> Outcome {
        let state = self.state.clone();
        // The action boundary: the key as it is now (and its tenant), and the scope of the
        // route the action performs.
        let allowed = authorized(&state, key_id)
            .ok_or(ApiError::Unauthorized)
            .and_then(|authorized| {
                let (method, route) = action.route();
                authorized.permit(method, route)?;
                Ok(authorized.tenant)
            });
        Box::pin(async move {
            let tenant = match allowed {
                Ok(tenant) => tenant,
                Err(refused) => return answer(Err(refused)).await,
            };
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

#[cfg(test)]
mod tests {
    use dispatch_console::actions::routes;

    #[test]
    fn every_console_action_names_a_route_the_api_serves() {
        for (method, path) in [
            routes::CREATE_SUBSCRIPTION,
            routes::PATCH_SUBSCRIPTION,
            routes::DELETE_SUBSCRIPTION,
            routes::ROTATE_SECRET,
            routes::SEND_TEST,
            routes::RETRY_DELIVERY,
            routes::CREATE_REPLAY,
        ] {
            assert!(
                crate::routes::ROUTES
                    .iter()
                    .any(|r| r.method == method && r.path == path),
                "{method} {path} is not in ROUTES"
            );
        }
    }
}
