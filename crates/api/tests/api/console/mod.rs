//! The console over plain HTTP (the browser tests are in `crates/e2e/tests/console/`): sign-in,
//! session cookies and expiry, CSRF refusals, security headers and escaping.

mod edit;
mod pages;
mod scopes;
mod session;

use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use reqwest::{Client, Response, StatusCode};

use crate::helpers::{TEST_API_KEY, TestApp};

/// A browser without a cookie jar of its own: the test sees and sends every cookie itself.
pub struct Browser {
    pub client: Client,
    pub base: String,
    pub session: Option<String>,
}

impl Browser {
    pub fn new(app: &TestApp) -> Self {
        Self {
            client: Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("a client"),
            base: app.base.clone(),
            session: None,
        }
    }

    fn with_session(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.session {
            Some(token) => request.header(COOKIE, format!("dispatch_console={token}")),
            None => request,
        }
    }

    pub async fn get(&self, path: &str) -> Response {
        self.with_session(self.client.get(format!("{}{path}", self.base)))
            .send()
            .await
            .expect("GET is answered")
    }

    pub async fn post(&self, path: &str, form: &[(&str, &str)]) -> Response {
        self.with_session(self.client.post(format!("{}{path}", self.base)))
            .form(form)
            .send()
            .await
            .expect("POST is answered")
    }

    /// Signs in with `key`; returns the sign-in POST's answer (the session is kept on a 303).
    pub async fn sign_in_with(&mut self, key: &str) -> Response {
        let form = self.get("/console/sign-in").await;
        let cookie = set_cookie(&form, "dispatch_console_sign_in").expect("a sign-in cookie");
        let csrf = csrf_of(&form.text().await.expect("a page"));
        let response = self
            .client
            .post(format!("{}/console/sign-in", self.base))
            .header(
                COOKIE,
                format!("dispatch_console_sign_in={}", cookie_value(&cookie)),
            )
            .form(&[
                ("csrf", csrf.as_str()),
                ("api_key", key),
                ("next", "/console/"),
            ])
            .send()
            .await
            .expect("POST is answered");
        if response.status() == StatusCode::SEE_OTHER
            && let Some(cookie) = set_cookie(&response, "dispatch_console")
        {
            self.session = Some(cookie_value(&cookie).to_owned());
        }
        response
    }

    pub async fn sign_in(&mut self) {
        let response = self.sign_in_with(TEST_API_KEY).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        assert!(self.session.is_some(), "signed in");
    }

    /// A page's HTML, asserting it answered 200.
    pub async fn page(&self, path: &str) -> String {
        let response = self.get(path).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        response.text().await.expect("a page")
    }

    /// The CSRF token of this session's pages.
    pub async fn csrf(&self) -> String {
        csrf_of(&self.page("/console/").await)
    }
}

/// The `Set-Cookie` header that sets `name`, whole (attributes included).
pub fn set_cookie(response: &Response, name: &str) -> Option<String> {
    response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(str::to_owned)
}

pub fn cookie_value(set_cookie: &str) -> &str {
    let pair = set_cookie.split(';').next().unwrap_or_default();
    pair.split_once('=').map(|(_, v)| v).unwrap_or_default()
}

/// The first `csrf` hidden field's value in `html`.
pub fn csrf_of(html: &str) -> String {
    let marker = "name=\"csrf\" value=\"";
    let start = html.find(marker).expect("a form with a CSRF field") + marker.len();
    html[start..].split('"').next().expect("a value").to_owned()
}

pub fn location(response: &Response) -> String {
    response
        .headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}
