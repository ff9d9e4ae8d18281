//! Editing the rest of a subscription in the console (headers, retry, timeout, filter,
//! description) through `PATCH /subscriptions/{id}`, the API's refusals shown next to the form,
//! and a subscription Dispatch disabled made obvious, with resume.

use reqwest::StatusCode;
use serde_json::Value;

use super::{Browser, csrf_of};
use crate::helpers::{TestApp, json_of};

async fn stored(app: &TestApp, id: &str) -> Value {
    let (status, body) = json_of(app.get(&format!("/subscriptions/{id}")).await).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// The edit form as the page fills it, with `changes` over it.
async fn edit(browser: &Browser, id: &str, changes: &[(&str, &str)]) -> reqwest::Response {
    let html = browser.page(&format!("/console/subscriptions/{id}")).await;
    let mut form: Vec<(&str, String)> = vec![("csrf", csrf_of(&html)), ("do", "edit".into())];
    for (name, value) in changes {
        form.push((name, (*value).to_owned()));
    }
    let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    browser
        .post(&format!("/console/subscriptions/{id}"), &form)
        .await
}

#[tokio::test]
async fn the_edit_form_changes_headers_retry_timeout_filter_and_description() {
    let app = TestApp::spawn().await;
    app.subscribe("sub_edit", &["order.*"]).await;
    let mut browser = Browser::new(&app);
    browser.sign_in().await;
    let all = [
        ("url", "https://hooks.example.com/sub_edit"),
        ("event_types", "order.*"),
        ("description", "Orders to the <b>ERP</b>"),
        ("max_attempts", "5"),
        ("max_delay_secs", "600"),
        ("timeout_ms", "2500"),
        ("filter", "$.data.amount > 100"),
        ("set_headers", "X-Token: s3cr3t-value\r\nX-Env: prod"),
    ];
    let response = edit(&browser, "sub_edit", &all).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let s = stored(&app, "sub_edit").await;
    assert_eq!(s["description"], "Orders to the <b>ERP</b>");
    assert_eq!(s["retry"]["max_attempts"], 5);
    assert_eq!(s["retry"]["max_delay_secs"], 600);
    assert_eq!(s["timeout_ms"], 2500);
    assert_eq!(s["filter"], "$.data.amount > 100");
    let page = browser.page("/console/subscriptions/sub_edit").await;
    assert!(
        page.contains("x-token, x-env") || page.contains("x-env, x-token"),
        "{page}"
    );
    assert!(
        !page.contains("s3cr3t-value"),
        "header values are never shown"
    );
    assert!(
        page.contains("Orders to the &#60;b&#62;ERP&#60;/b&#62;"),
        "escaped"
    );
    assert!(
        page.contains("value=\"2500\""),
        "the form shows the settings: {page}"
    );

    // Cleared settings go back to the global ones; a ticked header is removed.
    let response = edit(
        &browser,
        "sub_edit",
        &[
            ("url", "https://hooks.example.com/sub_edit"),
            ("event_types", "order.*"),
            ("description", ""),
            ("max_attempts", ""),
            ("max_delay_secs", ""),
            ("timeout_ms", ""),
            ("filter", ""),
            ("set_headers", ""),
            ("remove_header", "x-env"),
        ],
    )
    .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let s = stored(&app, "sub_edit").await;
    for field in ["description", "timeout_ms", "filter"] {
        assert!(s.get(field).is_none_or(Value::is_null), "{field}: {s}");
    }
    assert!(
        s["retry"].get("max_attempts").is_none_or(Value::is_null),
        "{s}"
    );
    let page = browser.page("/console/subscriptions/sub_edit").await;
    assert!(
        page.contains("x-token") && !page.contains("x-env"),
        "{page}"
    );
}

#[tokio::test]
async fn a_refused_edit_shows_the_api_message_next_to_the_form_as_typed() {
    let app = TestApp::spawn().await;
    app.subscribe("sub_bad", &["order.*"]).await;
    let mut browser = Browser::new(&app);
    browser.sign_in().await;
    for (field, value, next_to) in [
        ("max_attempts", "0", "e-attempts-problem"),
        ("timeout_ms", "soon", "e-timeout-problem"),
        ("filter", "$.data.amount >", "e-filter-problem"),
        ("set_headers", "Host: evil.example", "e-headers-problem"),
        ("set_headers", "no colon", "e-headers-problem"),
    ] {
        let response = edit(&browser, "sub_bad", &[(field, value)]).await;
        assert_eq!(
            response.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "{field}={value}"
        );
        let page = response.text().await.expect("a page");
        assert!(page.contains("id=\"edit-problem\""), "{page}");
        assert!(
            page.contains(&format!("id=\"{next_to}\"")),
            "{field}: {page}"
        );
        if field != "set_headers" {
            let typed = format!("value=\"{}\"", value.replace('>', "&#62;"));
            assert!(page.contains(&typed), "kept as typed, {typed}: {page}");
        }
    }
    let s = stored(&app, "sub_bad").await;
    assert!(
        s["retry"].get("max_attempts").is_none_or(Value::is_null),
        "unchanged: {s}"
    );
}

#[tokio::test]
async fn a_subscription_dispatch_disabled_is_obvious_and_resumes() {
    let app = TestApp::spawn().await;
    app.subscribe("sub_dead", &["order.*"]).await;
    app.subscribe("sub_fine", &["order.*"]).await;
    {
        use diesel_async::RunQueryDsl;
        let pool = app.db.pool();
        let mut conn = dispatch_store::pool::connection(&pool)
            .await
            .expect("a connection");
        // What the worker's auto-disable writes.
        diesel::sql_query(
            "UPDATE subscriptions SET enabled = false, disabled_at = now(),
                    failing_since = now() - interval '3 days',
                    disabled_reason = 'every attempt failed for 259200 s: auto-disabled'
              WHERE id = 'sub_dead'",
        )
        .execute(&mut conn)
        .await
        .expect("disabled");
    }
    let mut browser = Browser::new(&app);
    browser.sign_in().await;
    let list = browser.page("/console/subscriptions").await;
    assert!(list.contains("badge disabled"), "{list}");
    assert!(list.contains("every attempt failed for 259200 s"), "{list}");
    assert!(list.contains("aria-label=\"Resume sub_dead\""), "{list}");
    assert!(!list.contains("aria-label=\"Resume sub_fine\""), "{list}");
    let page = browser.page("/console/subscriptions/sub_dead").await;
    assert!(page.contains("id=\"disabled\""), "{page}");
    assert!(page.contains("Disabled by Dispatch"), "{page}");
    assert!(page.contains("Failing since"), "{page}");
    let response = browser
        .post(
            "/console/subscriptions/sub_dead",
            &[
                ("csrf", &csrf_of(&list)),
                ("do", "resume"),
                ("back", "/console/subscriptions"),
            ],
        )
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(super::location(&response), "/console/subscriptions");
    let s = stored(&app, "sub_dead").await;
    assert_eq!(s["enabled"], true);
    assert!(s.get("disabled_reason").is_none_or(Value::is_null), "{s}");
    let page = browser.page("/console/subscriptions/sub_dead").await;
    assert!(!page.contains("id=\"disabled\""), "{page}");
}
