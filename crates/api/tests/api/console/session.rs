//! Signing in and out, the session cookie's attributes, expiry, and CSRF refusals.

use std::time::Duration;

use reqwest::StatusCode;

use super::{Browser, location, set_cookie};
use crate::helpers::TestApp;

#[tokio::test]
async fn a_page_without_a_session_redirects_to_sign_in_and_back() {
    let app = TestApp::spawn().await;
    let browser = Browser::new(&app);
    let response = browser.get("/console/?since=order.*").await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        location(&response),
        "/console/sign-in?next=%2Fconsole%2F%3Fsince%3Dorder.*"
    );
    let form = browser
        .page("/console/sign-in?next=%2Fconsole%2F%3Fsince%3Dorder.*")
        .await;
    assert!(
        form.contains("name=\"next\" value=\"/console/?since=order.*\""),
        "{form}"
    );
    // Another site is never where a sign-in leads.
    let form = browser
        .page("/console/sign-in?next=https://evil.example/")
        .await;
    assert!(form.contains("name=\"next\" value=\"/console/\""), "{form}");
}

#[tokio::test]
async fn signing_in_sets_a_strict_http_only_secure_session_cookie() {
    let app = TestApp::spawn().await;
    let mut browser = Browser::new(&app);
    let response = browser.sign_in_with(crate::helpers::TEST_API_KEY).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&response), "/console/");
    let cookie = set_cookie(&response, "dispatch_console").expect("a session cookie");
    for attribute in ["HttpOnly", "SameSite=Strict", "Secure", "Path=/console"] {
        assert!(cookie.contains(attribute), "{attribute} in {cookie}");
    }
    let token = browser.session.clone().expect("a session");
    assert_eq!(token.len(), 64);
    // Only the token's SHA-256 is stored.
    let stored = stored_sessions(&app).await;
    assert_eq!(stored.len(), 1);
    assert_ne!(stored[0], token);
    let overview = browser.page("/console/").await;
    assert!(overview.contains("<h1>Overview</h1>"), "{overview}");
}

#[tokio::test]
async fn plain_http_development_leaves_the_cookie_without_secure() {
    let app = TestApp::spawn_with(|s| s.console.secure_cookies = false).await;
    let mut browser = Browser::new(&app);
    let response = browser.sign_in_with(crate::helpers::TEST_API_KEY).await;
    let cookie = set_cookie(&response, "dispatch_console").expect("a session cookie");
    assert!(!cookie.contains("Secure"), "{cookie}");
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
}

#[tokio::test]
async fn a_wrong_key_is_refused_and_no_session_is_made() {
    let app = TestApp::spawn().await;
    let mut browser = Browser::new(&app);
    let response = browser.sign_in_with("not-the-right-key-at-all").await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(set_cookie(&response, "dispatch_console").is_none());
    let page = response.text().await.expect("a page");
    assert!(page.contains("not accepted"), "{page}");
    let response = browser.sign_in_with("").await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(browser.session.is_none());
}

#[tokio::test]
async fn sign_in_without_its_csrf_cookie_is_refused() {
    let app = TestApp::spawn().await;
    let browser = Browser::new(&app);
    let form = browser.get("/console/sign-in").await;
    let csrf = super::csrf_of(&form.text().await.expect("a page"));
    // The form's value without the cookie that must match it (a cross-site post).
    let response = browser
        .post(
            "/console/sign-in",
            &[("csrf", &csrf), ("api_key", crate::helpers::TEST_API_KEY)],
        )
        .await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert!(set_cookie(&response, "dispatch_console").is_none());
}

#[tokio::test]
async fn sign_out_needs_the_csrf_token_and_ends_the_session() {
    let app = TestApp::spawn().await;
    let mut browser = Browser::new(&app);
    browser.sign_in().await;
    let refused = browser
        .post("/console/sign-out", &[("csrf", "forged")])
        .await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let page = refused.text().await.expect("a page");
    assert!(page.contains("CSRF token"), "{page}");
    let csrf = browser.csrf().await;
    let response = browser.post("/console/sign-out", &[("csrf", &csrf)]).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let removal = set_cookie(&response, "dispatch_console").expect("the cookie is removed");
    assert!(removal.contains("Max-Age=0"), "{removal}");
    // The old token signs no one in any more.
    let response = browser.get("/console/").await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn an_idle_session_ends() {
    let app = TestApp::spawn_with(|s| s.console.session_idle = Duration::from_secs(1)).await;
    let mut browser = Browser::new(&app);
    browser.sign_in().await;
    assert_eq!(browser.get("/console/").await.status(), StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let response = browser.get("/console/").await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert!(location(&response).starts_with("/console/sign-in"));
}

#[tokio::test]
async fn a_busy_session_still_ends_at_its_absolute_expiry() {
    let app = TestApp::spawn_with(|s| s.console.session_lifetime = Duration::from_secs(2)).await;
    let mut browser = Browser::new(&app);
    browser.sign_in().await;
    for _ in 0..3 {
        assert_eq!(browser.get("/console/").await.status(), StatusCode::OK);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        browser.get("/console/").await.status(),
        StatusCode::SEE_OTHER
    );
}

#[tokio::test]
async fn a_forged_cookie_signs_no_one_in() {
    let app = TestApp::spawn().await;
    let mut browser = Browser::new(&app);
    browser.session = Some("a".repeat(64));
    assert_eq!(
        browser.get("/console/").await.status(),
        StatusCode::SEE_OTHER
    );
    browser.session = Some("<script>".to_owned());
    assert_eq!(
        browser.get("/console/").await.status(),
        StatusCode::SEE_OTHER
    );
}

#[tokio::test]
async fn a_disabled_console_is_not_served() {
    let app = TestApp::spawn_with(|s| s.console.enabled = false).await;
    let browser = Browser::new(&app);
    assert_eq!(
        browser.get("/console/sign-in").await.status(),
        StatusCode::NOT_FOUND
    );
}

#[derive(diesel::QueryableByName)]
struct StoredSession {
    #[diesel(sql_type = diesel::sql_types::Text)]
    token: String,
}

/// What `console_sessions` holds for each session, as hex.
async fn stored_sessions(app: &TestApp) -> Vec<String> {
    use diesel_async::RunQueryDsl;
    let pool = app.db.pool();
    let mut conn = dispatch_store::pool::connection(&pool)
        .await
        .expect("a connection");
    let rows: Vec<StoredSession> =
        diesel::sql_query("SELECT encode(token_sha256, 'hex') AS token FROM console_sessions")
            .load(&mut conn)
            .await
            .expect("the sessions");
    rows.into_iter().map(|r| r.token).collect()
}
