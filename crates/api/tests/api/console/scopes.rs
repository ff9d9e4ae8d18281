//! Database keys in the console: a `read` key signs in, sees every page and changes nothing
//! (every action refused `403` by the API at the action boundary), an `ingest` key is refused
//! at sign-in, an `admin` key changes things, a tenant key stays in its tenant, and revoking a
//! key ends its sessions.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use super::{Browser, csrf_of, location};
use crate::helpers::{TestApp, event, json_of};

/// How long a new key may take to reach the API's key cache (reloaded every second).
const PATIENCE: Duration = Duration::from_secs(15);

/// Creates a database key of `scope` and waits until the API accepts it; returns the key.
pub async fn key_of_scope(app: &TestApp, scope: &str) -> (String, String) {
    let (status, created) = json_of(
        app.post_json(
            "/keys",
            &json!({"name": format!("console-{scope}"), "scope": scope}),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let key = created["key"].as_str().expect("a key").to_owned();
    let id = created["id"].as_str().expect("an id").to_owned();
    let deadline = Instant::now() + PATIENCE;
    loop {
        let answer = reqwest::Client::new()
            .post(app.url("/events"))
            .bearer_auth(&key)
            .json(&json!({}))
            .send()
            .await
            .expect("answered");
        // Known keys get past authentication: 403 (scope) or 422 (the empty event).
        if answer.status() != StatusCode::UNAUTHORIZED {
            return (id, key);
        }
        assert!(Instant::now() < deadline, "{scope} key never accepted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A subscription with one failed delivery (of `evt_failed`), for the pages to show.
async fn seeded(app: &TestApp) -> i64 {
    app.subscribe("sub_ro", &["order.*"]).await;
    assert_eq!(
        app.post_event(&event("evt_failed", "order.created"))
            .await
            .status(),
        StatusCode::ACCEPTED
    );
    app.seed_attempt("evt_failed", "sub_ro", 1, Some(500), Some("HTTP 500"))
        .await;
    let (_, body) = json_of(app.get("/deliveries?status=pending").await).await;
    let id = body["data"][0]["id"].as_i64().expect("a delivery");
    let pool = app.db.pool();
    let mut conn = dispatch_store::pool::connection(&pool)
        .await
        .expect("a connection");
    use diesel_async::RunQueryDsl;
    diesel::sql_query("UPDATE deliveries SET status = 'failed', attempts = 1 WHERE id = $1")
        .bind::<diesel::sql_types::BigInt, _>(id)
        .execute(&mut conn)
        .await
        .expect("failed");
    id
}

#[tokio::test]
async fn a_read_key_sees_every_page_and_every_action_is_refused_with_403() {
    let app = TestApp::spawn().await;
    let delivery = seeded(&app).await;
    let (_, key) = key_of_scope(&app, "read").await;
    let mut browser = Browser::new(&app);
    let response = browser.sign_in_with(&key).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    for page in [
        "/console/",
        "/console/events",
        "/console/events/evt_failed",
        "/console/subscriptions",
        "/console/subscriptions/sub_ro",
        "/console/failed",
        "/console/replays/new?subscription_id=sub_ro",
    ] {
        let html = browser.page(page).await;
        // The only form that posts is signing out: no button that could change anything.
        assert_eq!(
            html.matches("method=\"post\"").count(),
            1,
            "{page} offers a change to a read key: {html}"
        );
    }
    let wizard = browser
        .page("/console/replays/new?subscription_id=sub_ro")
        .await;
    assert!(wizard.contains("read-only"), "{wizard}");
    for page in [
        "/console/subscriptions/new",
        "/console/subscriptions/sub_ro/delete",
    ] {
        assert_eq!(browser.get(page).await.status(), StatusCode::FORBIDDEN);
    }
    // Forged posts (with the session's own CSRF token) are refused by the API's scope check.
    let csrf = browser.csrf().await;
    let delivery = delivery.to_string();
    let posts: Vec<(String, Vec<(&str, &str)>)> = vec![
        (
            "/console/subscriptions".into(),
            vec![("url", "https://a.example/h"), ("event_types", "a.b")],
        ),
        (
            "/console/subscriptions/sub_ro".into(),
            vec![("do", "pause")],
        ),
        (
            "/console/subscriptions/sub_ro".into(),
            vec![("do", "edit"), ("url", "https://evil.example/")],
        ),
        ("/console/subscriptions/sub_ro/test".into(), vec![]),
        ("/console/subscriptions/sub_ro/rotate-secret".into(), vec![]),
        (
            "/console/subscriptions/sub_ro/delete".into(),
            vec![("confirm", "sub_ro")],
        ),
        (
            "/console/failed/retry".into(),
            vec![("delivery", delivery.as_str())],
        ),
        (format!("/console/deliveries/{delivery}/retry"), vec![]),
        (
            "/console/replays".into(),
            vec![("subscription_id", "sub_ro")],
        ),
    ];
    for (path, mut form) in posts {
        form.push(("csrf", &csrf));
        let response = browser.post(&path, &form).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "POST {path}");
        let page = response.text().await.expect("a page");
        assert!(page.contains("has scope read"), "POST {path}: {page}");
    }
    // Nothing changed.
    let (_, subscription) = json_of(app.get("/subscriptions/sub_ro").await).await;
    assert_eq!(subscription["enabled"], true);
    assert_eq!(subscription["url"], "https://hooks.example.com/sub_ro");
    let (_, failed) = json_of(app.get("/deliveries?status=failed").await).await;
    assert_eq!(failed["data"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn an_ingest_key_is_refused_at_sign_in_with_a_clear_message() {
    let app = TestApp::spawn().await;
    let (_, key) = key_of_scope(&app, "ingest").await;
    let mut browser = Browser::new(&app);
    let response = browser.sign_in_with(&key).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert!(browser.session.is_none());
    let page = response.text().await.expect("a page");
    assert!(page.contains("only sends events (ingest)"), "{page}");
}

#[tokio::test]
async fn an_admin_database_key_signs_in_and_changes_things() {
    let app = TestApp::spawn().await;
    app.subscribe("sub_admin", &["order.*"]).await;
    let (_, key) = key_of_scope(&app, "admin").await;
    let mut browser = Browser::new(&app);
    assert_eq!(
        browser.sign_in_with(&key).await.status(),
        StatusCode::SEE_OTHER
    );
    let html = browser.page("/console/subscriptions/sub_admin").await;
    let response = browser
        .post(
            "/console/subscriptions/sub_admin",
            &[("csrf", &csrf_of(&html)), ("do", "pause")],
        )
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let (_, subscription) = json_of(app.get("/subscriptions/sub_admin").await).await;
    assert_eq!(subscription["enabled"], false);
}

#[tokio::test]
async fn revoking_a_key_ends_its_console_sessions_at_their_next_request() {
    let app = TestApp::spawn().await;
    let (id, key) = key_of_scope(&app, "read").await;
    let mut browser = Browser::new(&app);
    assert_eq!(
        browser.sign_in_with(&key).await.status(),
        StatusCode::SEE_OTHER
    );
    assert_eq!(browser.get("/console/").await.status(), StatusCode::OK);
    let (status, revoked) = json_of(app.delete(&format!("/keys/{id}")).await).await;
    assert_eq!(status, StatusCode::OK, "{revoked}");
    let revoked_at = Instant::now();
    let ended = loop {
        let response = browser.get("/console/events").await;
        if response.status() == StatusCode::SEE_OTHER {
            break response;
        }
        assert_eq!(response.status(), StatusCode::OK);
        assert!(
            revoked_at.elapsed() < PATIENCE,
            "the session outlived its key"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let took = revoked_at.elapsed();
    eprintln!("the session ended {took:?} after its key was revoked");
    assert!(
        location(&ended).starts_with("/console/sign-in"),
        "{}",
        location(&ended)
    );
    // The key cache reloads every second; a loaded test machine gets some slack.
    assert!(took < Duration::from_secs(5), "took {took:?}");
    // The session itself is gone: signing in again is the only way back.
    let stored: Value = json!(sessions(&app).await);
    assert_eq!(stored, json!(0), "the ended session's row is deleted");
    assert_eq!(
        browser.get("/console/").await.status(),
        StatusCode::SEE_OTHER
    );
    assert_eq!(
        browser.sign_in_with(&key).await.status(),
        StatusCode::UNAUTHORIZED,
        "a revoked key signs no one in"
    );
}

async fn sessions(app: &TestApp) -> i64 {
    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    use diesel_async::RunQueryDsl;
    let pool = app.db.pool();
    let mut conn = dispatch_store::pool::connection(&pool)
        .await
        .expect("a connection");
    let row: Count = diesel::sql_query("SELECT count(*) AS n FROM console_sessions")
        .get_result(&mut conn)
        .await
        .expect("counted");
    row.n
}

#[tokio::test]
async fn a_tenant_key_sees_and_changes_only_its_own_tenant_in_the_console() {
    let app = TestApp::spawn().await;
    let (status, body) = json_of(
        app.post_json("/tenants", &json!({"id": "acme", "name": "Acme"}))
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    app.subscribe("sub_default", &["order.*"]).await;
    let (status, body) = json_of(
        app.post_json(
            "/tenants/acme/keys",
            &json!({"name": "acme operator", "scope": "tenant:acme"}),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let key = body["key"].as_str().expect("a key").to_owned();
    let deadline = Instant::now() + PATIENCE;
    loop {
        let answer = reqwest::Client::new()
            .post(app.url("/subscriptions"))
            .bearer_auth(&key)
            .json(
                &json!({"id": "sub_acme", "url": "https://hooks.example.com/acme",
                          "event_types": ["*"]}),
            )
            .send()
            .await
            .expect("answered");
        if answer.status() == StatusCode::CREATED {
            break;
        }
        assert!(Instant::now() < deadline, "the tenant key never worked");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut browser = Browser::new(&app);
    assert_eq!(
        browser.sign_in_with(&key).await.status(),
        StatusCode::SEE_OTHER
    );
    let list = browser.page("/console/subscriptions").await;
    assert!(list.contains("sub_acme"), "{list}");
    assert!(
        !list.contains("sub_default"),
        "another tenant's row: {list}"
    );
    assert_eq!(
        browser
            .get("/console/subscriptions/sub_default")
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    // Its changes run in its tenant: pausing the other tenant's id finds nothing.
    let csrf = browser.csrf().await;
    let response = browser
        .post(
            "/console/subscriptions/sub_default",
            &[("csrf", csrf.as_str()), ("do", "pause")],
        )
        .await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let (_, theirs) = json_of(app.get("/subscriptions/sub_default").await).await;
    assert_eq!(theirs["enabled"], true);
    let response = browser
        .post(
            "/console/subscriptions/sub_acme",
            &[("csrf", csrf.as_str()), ("do", "pause")],
        )
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
}
