//! The pages themselves: security headers on every one, no inline script, and what they show.

use reqwest::StatusCode;

use super::Browser;
use crate::helpers::TestApp;

#[tokio::test]
async fn every_console_answer_carries_a_strict_content_security_policy() {
    let app = TestApp::spawn().await;
    let mut browser = Browser::new(&app);
    let sign_in = browser.get("/console/sign-in").await;
    browser.sign_in().await;
    let overview = browser.get("/console/").await;
    for response in [&sign_in, &overview] {
        let csp = response
            .headers()
            .get("content-security-policy")
            .and_then(|v| v.to_str().ok())
            .expect("a CSP");
        assert!(csp.contains("script-src 'self'"), "{csp}");
        assert!(!csp.contains("unsafe-inline"), "{csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert_eq!(
            response
                .headers()
                .get("x-content-type-options")
                .expect("nosniff"),
            "nosniff"
        );
    }
    let html = overview.text().await.expect("a page");
    // Every script is a file of the console's own: none inline.
    for tag in html.split("<script").skip(1) {
        let head = tag.split('>').next().expect("a tag");
        assert!(
            head.contains("src=\"/console/assets/"),
            "inline script: {head}"
        );
        assert!(tag.starts_with(|c: char| c.is_whitespace()));
    }
    assert!(!html.contains(" style="), "no inline style");
    assert!(!html.contains("onclick"), "no inline handlers");
}

#[tokio::test]
async fn the_assets_are_served_from_the_binary() {
    let app = TestApp::spawn().await;
    let browser = Browser::new(&app);
    let version = env!("CARGO_PKG_VERSION");
    let htmx = browser
        .get(&format!("/console/assets/{version}/htmx.min.js"))
        .await;
    assert_eq!(htmx.status(), StatusCode::OK);
    assert!(
        htmx.headers()["content-type"]
            .to_str()
            .expect("text")
            .starts_with("text/javascript")
    );
    assert!(htmx.text().await.expect("a script").contains("htmx"));
    let css = browser
        .get(&format!("/console/assets/{version}/console.css"))
        .await;
    assert_eq!(css.status(), StatusCode::OK);
    let missing = browser
        .get(&format!("/console/assets/{version}/nothing.js"))
        .await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_overview_shows_the_backlog_and_the_subscriptions_failing_most() {
    let app = TestApp::spawn().await;
    app.subscribe("sub_failing", &["order.*"]).await;
    let response = app
        .post_event(&crate::helpers::event("evt_overview_1", "order.created"))
        .await;
    assert!(response.status().is_success());
    app.seed_attempt(
        "evt_overview_1",
        "sub_failing",
        1,
        Some(500),
        Some("HTTP 500"),
    )
    .await;
    let mut browser = Browser::new(&app);
    browser.sign_in().await;
    let html = browser.page("/console/").await;
    assert!(html.contains("Ingested events: 1 in the hour"), "{html}");
    assert!(html.contains("Failed attempts: 1 in the hour"), "{html}");
    assert!(
        html.contains("<a href=\"/console/subscriptions/sub_failing\">sub_failing</a>"),
        "{html}"
    );
    assert!(html.contains("hx-trigger=\"every 5s\""), "live refresh");
}

#[tokio::test]
async fn markup_in_an_event_is_shown_as_text_never_as_markup() {
    let app = TestApp::spawn().await;
    app.subscribe("sub_markup", &["order.*"]).await;
    let mut body = crate::helpers::event("evt_markup_1", "order.created");
    body["source"] = serde_json::json!("<script>alert('source')</script>");
    body["data"] =
        serde_json::json!({"note": "<img src=x onerror=alert(1)>", "q": "\"quoted\" & 'single'"});
    let response = app.post_event(&body).await;
    assert!(response.status().is_success(), "{response:?}");
    let mut browser = Browser::new(&app);
    browser.sign_in().await;
    let event = browser.page("/console/events/evt_markup_1").await;
    assert!(!event.contains("<script>alert"), "{event}");
    assert!(!event.contains("<img src=x"), "{event}");
    // askama escapes `<` and `>` as numeric references.
    assert!(
        event.contains("&#60;script&#62;alert(&#39;source&#39;)&#60;/script&#62;"),
        "{event}"
    );
    assert!(
        event.contains("&#60;img src=x onerror=alert(1)&#62;"),
        "{event}"
    );
    assert!(event.contains("&#38;"), "{event}");
    let list = browser.page("/console/events?type=order.*").await;
    assert!(list.contains("evt_markup_1"), "{list}");
    assert!(!list.contains("<script>alert"), "{list}");
    // The source filter echoes the markup back escaped too.
    let filtered = browser
        .page("/console/events?source=%3Cscript%3Ealert('source')%3C%2Fscript%3E")
        .await;
    assert!(filtered.contains("evt_markup_1"), "{filtered}");
    assert!(!filtered.contains("<script>alert"), "{filtered}");
}

#[tokio::test]
async fn the_event_list_filters_and_pages_with_links_that_keep_the_filters() {
    let app = TestApp::spawn().await;
    for i in 0..55 {
        let response = app
            .post_event(&crate::helpers::event(
                &format!("evt_page_{i:02}"),
                "order.created",
            ))
            .await;
        assert!(response.status().is_success());
    }
    let response = app
        .post_event(&crate::helpers::event("evt_other", "user.created"))
        .await;
    assert!(response.status().is_success());
    let mut browser = Browser::new(&app);
    browser.sign_in().await;
    let first = browser.page("/console/events?type=order.*").await;
    assert!(!first.contains("evt_other"), "filtered by type");
    let marker = "href=\"/console/events?";
    let next = first
        .split(marker)
        .find(|part| part.contains("rel=\"next\""))
        .and_then(|part| part.split('"').next())
        .expect("a next page link")
        .replace("&#38;", "&");
    assert!(
        next.contains("type=order.*") && next.contains("cursor="),
        "{next}"
    );
    let second = browser.page(&format!("/console/events?{next}")).await;
    let ids = |html: &str| -> Vec<String> {
        html.split("<a href=\"/console/events/")
            .skip(1)
            .filter_map(|part| part.split('"').next().map(str::to_owned))
            .collect()
    };
    let (one, two) = (ids(&first), ids(&second));
    assert_eq!((one.len(), two.len()), (50, 5), "{one:?} {two:?}");
    let mut all: Vec<String> = one.into_iter().chain(two).collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 55, "every event once: {all:?}");
    assert!(!second.contains("rel=\"next\""), "the last page");
}

#[tokio::test]
async fn a_bad_filter_is_refused_with_what_and_why() {
    let app = TestApp::spawn().await;
    let mut browser = Browser::new(&app);
    browser.sign_in().await;
    for (query, expected) in [
        ("status=lost", "status: must be one of pending"),
        (
            "received_after=yesterday",
            "received_after: must be an RFC 3339 time",
        ),
        ("cursor=nonsense", "cursor: is not a link this console made"),
    ] {
        let response = browser.get(&format!("/console/events?{query}")).await;
        assert_eq!(
            response.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "{query}"
        );
        let page = response.text().await.expect("a page");
        assert!(page.contains(expected), "{query}: {page}");
    }
    let missing = browser.get("/console/events/evt_nowhere").await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn an_event_page_shows_every_attempt_and_a_large_payload_collapsed() {
    let app = TestApp::spawn().await;
    app.subscribe("sub_attempts", &["order.*"]).await;
    let mut body = crate::helpers::event("evt_attempts", "order.created");
    body["data"] = serde_json::json!({"blob": "x".repeat(4000)});
    assert!(app.post_event(&body).await.status().is_success());
    app.seed_attempt(
        "evt_attempts",
        "sub_attempts",
        1,
        Some(503),
        Some("HTTP 503"),
    )
    .await;
    app.seed_attempt(
        "evt_attempts",
        "sub_attempts",
        2,
        Some(500),
        Some("HTTP 500"),
    )
    .await;
    let mut browser = Browser::new(&app);
    browser.sign_in().await;
    let page = browser.page("/console/events/evt_attempts").await;
    assert!(
        page.contains("<details><summary>Show the payload"),
        "collapsed"
    );
    assert!(
        page.contains("answered 503") && page.contains("answered 500"),
        "{page}"
    );
    assert!(page.contains("http_status"), "the failure code");
    assert!(page.contains("<td class=\"num\">20</td>"), "the duration");
}
