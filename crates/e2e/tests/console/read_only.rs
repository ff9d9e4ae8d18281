//! A read-only key in the browser: it signs in and sees every page, no page offers it a button
//! or field that would change anything, and a form it forges anyway is refused by the API's
//! scope check.

use std::time::Duration;

use serde_json::json;

use super::harness::Browser;
use super::{PATIENCE, Stack};

/// Enabled controls of forms that post, but signing out.
const CHANGE_CONTROLS: &str = "return Array.from(document.querySelectorAll(
        'form[method=post] button, form[method=post] input:not([type=hidden]), \
         form[method=post] textarea, form[method=post] select'))
    .filter(e => !e.disabled && !e.closest('.sign-out'))
    .map(e => e.outerHTML);";

/// A `read` key, once the API accepts it.
async fn read_key(stack: &Stack) -> String {
    let created: serde_json::Value = stack
        .client
        .post(format!("{}/keys", stack.base))
        .json(&json!({"name": "on-call (read)", "scope": "read"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = created["key"].as_str().unwrap().to_owned();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let status = reqwest::Client::new()
            .get(format!("{}/subscriptions", stack.base))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap()
            .status();
        if status.is_success() {
            return key;
        }
        assert!(tokio::time::Instant::now() < deadline, "never accepted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_read_only_key_sees_every_page_with_nothing_to_change_and_a_forged_post_is_refused() {
    let stack = Stack::start().await;
    let Some(browser) = Browser::start(&stack.base).await else {
        return;
    };
    let url = stack.receiver.url("/broken");
    let created = stack
        .post(
            "/subscriptions",
            json!({"id": "sub_ro", "url": url, "event_types": ["order.*"]}),
        )
        .await;
    assert_eq!(created, 201);
    let event = json!({"id": "evt_ro", "type": "order.created", "source": "shop", "data": {}});
    assert_eq!(stack.post("/events", event).await, 202);
    stack.wait_for_status("evt_ro", "failed").await;
    let key = read_key(&stack).await;

    browser.goto("/console/").await;
    browser.wait_path("/console/sign-in").await;
    browser.fill("#api_key", &format!("{key}\u{E007}")).await;
    browser.wait_text("h1", "Overview").await;
    for (page, heading) in [
        ("/console/", "Overview"),
        ("/console/events", "Events"),
        ("/console/events/evt_ro", "evt_ro"),
        ("/console/subscriptions", "Subscriptions"),
        ("/console/subscriptions/sub_ro", "sub_ro"),
        ("/console/failed", "Failed deliveries"),
        ("/console/replays/new?subscription_id=sub_ro", "Replay"),
    ] {
        browser.goto(page).await;
        browser.wait_text("h1", heading).await;
        let controls = browser
            .client
            .execute(CHANGE_CONTROLS, vec![])
            .await
            .unwrap();
        assert_eq!(
            controls.as_array().map(Vec::len),
            Some(0),
            "{page} offers a read key a change: {controls}"
        );
    }
    browser.goto("/console/subscriptions/sub_ro").await;
    browser.wait_text("main", "read-only").await;
    browser.check_accessibility("read-only subscription").await;
    browser.screenshot("read-only-subscription").await;

    // A form built by hand, with the session's own CSRF token (as a script or a curious
    // operator could post it): the API's scope check refuses it.
    browser
        .client
        .execute(
            "const csrf = document.querySelector('.sign-out input[name=csrf]').value;
             const form = document.createElement('form');
             form.method = 'post';
             form.action = '/console/subscriptions/sub_ro';
             for (const [name, value] of [['csrf', csrf], ['do', 'pause']]) {
                 const input = document.createElement('input');
                 input.type = 'hidden'; input.name = name; input.value = value;
                 form.appendChild(input);
             }
             document.body.appendChild(form);
             form.submit();",
            vec![],
        )
        .await
        .unwrap();
    let refused = browser.wait_text("main", "has scope read").await;
    assert!(refused.contains("HTTP 403"), "{refused}");
    assert!(refused.contains("PATCH /subscriptions/{id}"), "{refused}");
    browser.screenshot("read-only-refused").await;
    let subscription: serde_json::Value = stack
        .client
        .get(format!("{}/subscriptions/sub_ro", stack.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(subscription["enabled"], true, "nothing changed");
    browser.close().await;
}
