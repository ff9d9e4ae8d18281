//! Signing in with an API key (exchanged for a session that remembers which database key it
//! was, so its scope applies and its revocation ends it), and signing out.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;

use crate::Console;
use crate::access::reads;
use crate::error::{ConsoleError, html};
use crate::form::Fields;
use crate::session::{self, SIGN_IN_COOKIE, Session};

#[derive(Template)]
#[template(path = "sign_in.html")]
struct SignInPage {
    title: &'static str,
    csrf: String,
    nav: &'static str,
    next: String,
    /// Why the last attempt was refused.
    problem: Option<&'static str>,
}

/// Where a sign-in may lead: a console page, never another site.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with(crate::PREFIX)
                && !n.contains("//")
                && !n.contains('\\')
                && !n.starts_with(&format!("{}/sign-", crate::PREFIX)) =>
        {
            n.to_owned()
        }
        _ => format!("{}/", crate::PREFIX),
    }
}

fn page(
    console: &Console,
    status: StatusCode,
    next: String,
    problem: Option<&'static str>,
) -> Result<HttpResponse, ConsoleError> {
    // Double submit: the form and a cookie carry the same random value.
    let token = session::random_token()?;
    let mut response = html(
        status,
        &SignInPage {
            title: "Sign in",
            csrf: token.clone(),
            nav: "",
            next,
            problem,
        },
    );
    response
        .add_cookie(&session::cookie(console, SIGN_IN_COOKIE, token))
        .map_err(|e| ConsoleError::Internal(format!("cookie: {e}")))?;
    Ok(response)
}

pub async fn form(
    req: HttpRequest,
    console: web::Data<Console>,
) -> Result<HttpResponse, ConsoleError> {
    let fields = Fields::parse(req.query_string())?;
    page(
        &console,
        StatusCode::OK,
        safe_next(fields.get("next")),
        None,
    )
}

pub async fn submit(
    req: HttpRequest,
    console: web::Data<Console>,
    body: web::Bytes,
) -> Result<HttpResponse, ConsoleError> {
    let fields = Fields::from_bytes(&body)?;
    let cookie = req.cookie(SIGN_IN_COOKIE).map(|c| c.value().to_owned());
    match (cookie, fields.get("csrf")) {
        (Some(c), Some(f)) if session::same(f, &c) => {}
        _ => return Err(ConsoleError::Csrf),
    }
    let next = safe_next(fields.get("next"));
    let Some(key) = fields.get("api_key") else {
        return page(
            &console,
            StatusCode::UNPROCESSABLE_ENTITY,
            next,
            Some("Enter an API key."),
        );
    };
    let Some(signer) = console.access.sign_in(key) else {
        return page(
            &console,
            StatusCode::UNAUTHORIZED,
            next,
            Some("That API key is not accepted here."),
        );
    };
    if !reads(&signer.scope) {
        return page(
            &console,
            StatusCode::FORBIDDEN,
            next,
            Some(
                "That key's scope only sends events (ingest): it can read nothing in the \
                 console. Sign in with a read or admin key.",
            ),
        );
    }
    let token = session::random_token()?;
    let mut conn = dispatch_store::pool::connection(&console.pool).await?;
    dispatch_store::queries::console::create_session(
        &mut conn,
        &session::token_sha256(&token),
        console.settings.session_lifetime,
        signer.key_id.as_deref(),
    )
    .await?;
    let mut response = super::see_other(&next);
    for cookie in [
        session::cookie(&console, session::COOKIE, token),
        session::removal(&console, SIGN_IN_COOKIE),
    ] {
        response
            .add_cookie(&cookie)
            .map_err(|e| ConsoleError::Internal(format!("cookie: {e}")))?;
    }
    Ok(response)
}

pub async fn sign_out(
    session: Session,
    console: web::Data<Console>,
    body: web::Bytes,
) -> Result<HttpResponse, ConsoleError> {
    let fields = Fields::from_bytes(&body)?;
    session.check_csrf(fields.get("csrf"))?;
    let mut conn = dispatch_store::pool::connection(&console.pool).await?;
    dispatch_store::queries::console::end_session(&mut conn, &session.token_sha256()).await?;
    let mut response = super::see_other(&format!("{}/sign-in", crate::PREFIX));
    response
        .add_cookie(&session::removal(&console, session::COOKIE))
        .map_err(|e| ConsoleError::Internal(format!("cookie: {e}")))?;
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::safe_next;

    #[test]
    fn only_console_pages_are_followed_after_sign_in() {
        assert_eq!(
            safe_next(Some("/console/events?type=a")),
            "/console/events?type=a"
        );
        for bad in [
            "https://evil.example/",
            "//evil.example/console",
            "/console//evil",
            "/consolex\\evil",
            "/other",
            "/console/sign-out",
        ] {
            assert_eq!(safe_next(Some(bad)), "/console/", "{bad}");
        }
        assert_eq!(safe_next(None), "/console/");
    }
}
