//! A subscription's other changes, each through the API's own route code ([`Action`]):
//! create (its secret shown once), rotate the secret (shown once), send a test event and show
//! its outcome, and delete after a confirmation.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use askama::Template;
use dispatch_domain::tenant::external_id;
use serde_json::{Value, json};

use super::subscription_edit::edit_patch;
use super::subscriptions::find;
use crate::Console;
use crate::actions::Action;
use crate::error::{ConsoleError, html};
use crate::form::Fields;
use crate::session::Session;

#[derive(Template)]
#[template(path = "secret.html")]
struct SecretPage {
    title: &'static str,
    csrf: String,
    nav: &'static str,
    id: String,
    secret: String,
    what: &'static str,
}

#[derive(Template)]
#[template(path = "test_result.html")]
struct TestPage {
    title: &'static str,
    csrf: String,
    nav: &'static str,
    id: String,
    event_id: String,
    status: String,
    attempted: bool,
    status_code: String,
    failure: String,
    latency_ms: String,
    excerpt: String,
}

fn text_of(value: &Value, pointer: &str) -> String {
    match value.pointer(pointer) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

/// `POST /console/subscriptions/{id}/test`: sends a test event and shows its first attempt.
pub async fn test(
    session: Session,
    id: web::Path<String>,
    console: web::Data<Console>,
    body: web::Bytes,
) -> Result<HttpResponse, ConsoleError> {
    let fields = Fields::from_bytes(&body)?;
    session.check_csrf(fields.get("csrf"))?;
    let id = id.into_inner();
    let answer = session
        .run(&console, Action::SendTest { id: id.clone() })
        .await?;
    let attempted = answer.get("attempt").is_some_and(|a| !a.is_null());
    Ok(html(
        StatusCode::OK,
        &TestPage {
            title: "Test event",
            csrf: session.csrf.clone(),
            nav: "subscriptions",
            event_id: text_of(&answer, "/event_id"),
            status: text_of(&answer, "/delivery/status"),
            attempted,
            status_code: text_of(&answer, "/attempt/status_code"),
            failure: text_of(&answer, "/attempt/error_code"),
            latency_ms: text_of(&answer, "/attempt/latency_ms"),
            excerpt: text_of(&answer, "/attempt/response_body"),
            id,
        },
    ))
}

/// `POST /console/subscriptions/{id}/rotate-secret`: the new secret, shown this once.
pub async fn rotate(
    session: Session,
    id: web::Path<String>,
    console: web::Data<Console>,
    body: web::Bytes,
) -> Result<HttpResponse, ConsoleError> {
    let fields = Fields::from_bytes(&body)?;
    session.check_csrf(fields.get("csrf"))?;
    let id = id.into_inner();
    let answer = session
        .run(&console, Action::RotateSecret { id: id.clone() })
        .await?;
    Ok(html(
        StatusCode::OK,
        &SecretPage {
            title: "New secret",
            csrf: session.csrf.clone(),
            nav: "subscriptions",
            secret: text_of(&answer, "/secret"),
            what: "rotated: the previous secret keeps signing next to it for the overlap",
            id,
        },
    ))
}

#[derive(Template)]
#[template(path = "subscription_new.html")]
struct NewPage {
    title: &'static str,
    csrf: String,
    nav: &'static str,
}

/// What a read-only session is told when it asks for a form that changes something.
pub(super) fn read_only(what: &str) -> ConsoleError {
    ConsoleError::Forbidden(format!(
        "Your key's scope does not allow {what}: it can look at everything, not change it."
    ))
}

pub async fn new_form(session: Session) -> Result<HttpResponse, ConsoleError> {
    if !session.can.create {
        return Err(read_only("creating subscriptions"));
    }
    Ok(html(
        StatusCode::OK,
        &NewPage {
            title: "New subscription",
            csrf: session.csrf.clone(),
            nav: "subscriptions",
        },
    ))
}

/// `POST /console/subscriptions`: creates one; its secret is shown this once.
pub async fn create(
    session: Session,
    console: web::Data<Console>,
    body: web::Bytes,
) -> Result<HttpResponse, ConsoleError> {
    let fields = Fields::from_bytes(&body)?;
    session.check_csrf(fields.get("csrf"))?;
    let mut request = edit_patch(&fields, false)?;
    if let Some(id) = fields.get("id") {
        request["id"] = json!(id);
    }
    let answer = session
        .run(&console, Action::CreateSubscription(request))
        .await?;
    Ok(html(
        StatusCode::CREATED,
        &SecretPage {
            title: "Subscription created",
            csrf: session.csrf.clone(),
            nav: "subscriptions",
            secret: text_of(&answer, "/secret"),
            what: "created: every delivery to it is signed with this secret",
            id: text_of(&answer, "/id"),
        },
    ))
}

#[derive(Template)]
#[template(path = "subscription_delete.html")]
struct DeletePage {
    title: &'static str,
    csrf: String,
    nav: &'static str,
    id: String,
    url: String,
}

/// `GET /console/subscriptions/{id}/delete`: asks for confirmation.
pub async fn confirm_delete(
    session: Session,
    id: web::Path<String>,
    console: web::Data<Console>,
) -> Result<HttpResponse, ConsoleError> {
    if !session.can.delete {
        return Err(read_only("deleting subscriptions"));
    }
    let row = find(&console, &session, &id).await?;
    Ok(html(
        StatusCode::OK,
        &DeletePage {
            title: "Delete subscription",
            csrf: session.csrf.clone(),
            nav: "subscriptions",
            id: external_id(&row.id).to_owned(),
            url: row.url,
        },
    ))
}

/// `POST /console/subscriptions/{id}/delete`: deletes it (cancelling its unfinished deliveries).
pub async fn delete(
    session: Session,
    id: web::Path<String>,
    console: web::Data<Console>,
    body: web::Bytes,
) -> Result<HttpResponse, ConsoleError> {
    let fields = Fields::from_bytes(&body)?;
    session.check_csrf(fields.get("csrf"))?;
    if fields.get("confirm") != Some(id.as_str()) {
        return Err(ConsoleError::invalid(
            "confirm",
            "type the subscription's id to confirm its deletion",
        ));
    }
    session
        .run(
            &console,
            Action::DeleteSubscription {
                id: id.into_inner(),
            },
        )
        .await?;
    Ok(super::see_other("/console/subscriptions"))
}
