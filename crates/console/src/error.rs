//! What a console request can fail with, and the HTML page (or redirect) each answers: never a
//! JSON body, never a stack of causes (those are logged once, here).

use actix_web::http::StatusCode;
use actix_web::http::header::{CACHE_CONTROL, CONTENT_TYPE, LOCATION};
use actix_web::{HttpResponse, ResponseError};
use askama::Template;
use dispatch_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// No live session: go to the sign-in page, then back to `next`.
    #[error("sign in first")]
    SignIn { next: String },
    /// A form without this session's CSRF token.
    #[error("the form's CSRF token is missing or wrong")]
    Csrf,
    /// A filter or form field is invalid: `field` names it, `message` says why.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error("{0}")]
    NotFound(String),
    /// The session's key may not do this (a read-only key asking for a form that changes).
    #[error("{0}")]
    Forbidden(String),
    /// The API refused an action (its status and message, shown as they are).
    #[error("{}", .0.message)]
    Refused(crate::actions::Refusal),
    #[error("the database is unavailable")]
    Unavailable,
    #[error("{0}")]
    Internal(String),
}

impl From<StoreError> for ConsoleError {
    fn from(error: StoreError) -> Self {
        if error.is_unavailable() {
            tracing::warn!(error = %error, "console: database unavailable");
            Self::Unavailable
        } else {
            let mut chain = error.to_string();
            let mut source = std::error::Error::source(&error);
            while let Some(cause) = source {
                chain.push_str(": ");
                chain.push_str(&cause.to_string());
                source = cause.source();
            }
            tracing::error!(error = %chain, "console: store error");
            Self::Internal("the database query failed".to_owned())
        }
    }
}

impl ConsoleError {
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.to_owned(),
            message: message.into(),
        }
    }
}

/// The page every error is shown on.
#[derive(Template)]
#[template(path = "error.html")]
pub struct ErrorPage {
    pub title: String,
    pub status: u16,
    pub message: String,
    pub csrf: String,
    pub nav: &'static str,
}

/// Renders `page` as HTML (a template error becomes a plain-text 500 and is logged).
pub fn html(status: StatusCode, page: &impl Template) -> HttpResponse {
    match page.render() {
        Ok(body) => HttpResponse::build(status)
            .insert_header((CONTENT_TYPE, "text/html; charset=utf-8"))
            .insert_header((CACHE_CONTROL, "no-store"))
            .body(body),
        Err(e) => {
            tracing::error!(error = %e, "console: template failed");
            HttpResponse::InternalServerError()
                .insert_header((CONTENT_TYPE, "text/plain; charset=utf-8"))
                .body("the page could not be rendered")
        }
    }
}

impl ResponseError for ConsoleError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::SignIn { .. } => StatusCode::SEE_OTHER,
            Self::Csrf => StatusCode::FORBIDDEN,
            Self::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::Refused(r) => {
                StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
            }
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let Self::SignIn { next } = self {
            let query = serde_urlencoded::to_string([("next", next.as_str())]).unwrap_or_default();
            return HttpResponse::SeeOther()
                .insert_header((LOCATION, format!("{}/sign-in?{query}", crate::PREFIX)))
                .insert_header((CACHE_CONTROL, "no-store"))
                .finish();
        }
        let (title, message) = match self {
            Self::Csrf => (
                "Form refused",
                "This form did not come from your current console session (its CSRF token is \
                 missing or wrong). Reload the page and submit it again."
                    .to_owned(),
            ),
            Self::Invalid { field, message } => ("Invalid input", format!("{field}: {message}")),
            Self::NotFound(what) => ("Not found", what.clone()),
            Self::Forbidden(what) => ("Not allowed", what.clone()),
            Self::Refused(r) => (
                "Refused",
                match &r.field {
                    Some(field) => format!("{field}: {} ({})", r.message, r.code),
                    None => format!("{} ({})", r.message, r.code),
                },
            ),
            Self::Unavailable => (
                "Database unavailable",
                "PostgreSQL cannot be reached right now; this page will work again once it is \
                 back."
                    .to_owned(),
            ),
            Self::Internal(what) => (
                "Something went wrong",
                format!("{what} (see the API's log)"),
            ),
            Self::SignIn { .. } => ("Sign in", String::new()),
        };
        let status = self.status_code();
        html(
            status,
            &ErrorPage {
                title: title.to_owned(),
                status: status.as_u16(),
                message,
                csrf: String::new(),
                nav: "",
            },
        )
    }
}
