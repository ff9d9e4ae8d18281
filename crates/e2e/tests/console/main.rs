//! The console in a real browser (headless Chromium over WebDriver), against the real API, a
//! real worker, a real receiver and PostgreSQL: an operator finds a failing subscription, fixes
//! its URL, tests it, replays its failures and watches them delivered; pauses and resumes; a
//! forged form is refused; signing out ends the session; a read-only key sees everything and
//! changes nothing (`read_only.rs`). axe-core checks every page, and each
//! test saves screenshots under `target/console-screenshots/`.

#![allow(clippy::unwrap_used)]

#[path = "../common/mod.rs"]
mod common;
mod harness;
mod read_only;
mod tenants;

use std::time::Duration;

use dispatch_test_support::TestDb;
use dispatch_test_support::receiver::{Receiver, Reply};
use harness::Browser;
use serde_json::json;

const PATIENCE: Duration = Duration::from_secs(60);
const KEY: &str = "e2e-test-key-0123456789";

/// The API (plain HTTP, so cookies without `Secure`), a worker running, and a receiver whose
/// `/broken` answers 410 Gone (a permanent failure).
struct Stack {
    db: TestDb,
    base: String,
    client: reqwest::Client,
    receiver: Receiver,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Stack {
    async fn start() -> Self {
        let db = TestDb::new().await;
        let (base, client) =
            common::start_api_with(&db, PATIENCE, |s| s.console.secure_cookies = false);
        let receiver = Receiver::start().await;
        receiver.set_default("/broken", Reply::status(410));
        let worker = common::worker(&db);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            worker
                .run(async {
                    stopped.await.ok();
                })
                .await
        });
        Self {
            db,
            base,
            client,
            receiver,
            stop: Some(stop),
        }
    }

    async fn post(&self, path: &str, body: serde_json::Value) -> u16 {
        self.client
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    async fn event_status(&self, id: &str) -> String {
        let event: serde_json::Value = self
            .client
            .get(format!("{}/events/{id}", self.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        event["status"].as_str().unwrap_or_default().to_owned()
    }

    async fn wait_for_status(&self, id: &str, status: &str) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while self.event_status(id).await != status {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{id} never became {status}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = &self.db;
    }
}

/// Signs in by keyboard alone: the key field has the focus, Enter submits.
async fn sign_in(browser: &Browser, shot: Option<&str>) {
    browser.goto("/console/").await;
    browser.wait_path("/console/sign-in").await;
    browser.check_accessibility("sign-in").await;
    if let Some(name) = shot {
        browser.screenshot(name).await;
    }
    let focused = browser.client.active_element().await.unwrap();
    assert_eq!(
        focused.attr("id").await.unwrap().as_deref(),
        Some("api_key")
    );
    focused.send_keys(&format!("{KEY}\u{E007}")).await.unwrap();
    browser.wait_text("h1", "Overview").await;
    assert_eq!(browser.path().await, "/console/");
}

#[tokio::test]
async fn an_operator_fixes_a_failing_subscription_and_replays_its_failures() {
    let stack = Stack::start().await;
    let Some(browser) = Browser::start(&stack.base).await else {
        return;
    };
    let broken = stack.receiver.url("/broken");
    let created = stack
        .post(
            "/subscriptions",
            json!({"id": "sub_orders", "url": broken, "event_types": ["order.*"]}),
        )
        .await;
    assert_eq!(created, 201);
    for i in 1..=3 {
        let status = stack
            .post(
                "/events",
                json!({"id": format!("evt_order_{i}"), "type": "order.created",
                       "source": "shop <main>", "data": {"order": i, "note": "<b>bold</b>"}}),
            )
            .await;
        assert_eq!(status, 202);
    }
    for i in 1..=3 {
        stack
            .wait_for_status(&format!("evt_order_{i}"), "failed")
            .await;
    }

    sign_in(&browser, Some("sign-in")).await;
    let overview = browser.wait_text("main", "sub_orders").await;
    assert!(overview.contains("Failed attempts: 3"), "{overview}");
    browser.check_accessibility("overview").await;
    browser.screenshot("overview").await;

    // Find the failures.
    browser.click_link("Failed deliveries").await;
    let failed = browser.wait_text("main", "evt_order_1").await;
    assert!(failed.contains("http_status"), "{failed}");
    browser.check_accessibility("failed deliveries").await;
    browser.screenshot("failed").await;

    // Why: the event's attempts.
    browser.click_link("evt_order_1").await;
    browser.wait_text("h1", "evt_order_1").await;
    let event = browser.text("main").await;
    assert!(event.contains("410"), "the attempt's status: {event}");
    assert!(
        event.contains("<b>bold</b>"),
        "the payload as text: {event}"
    );
    browser.check_accessibility("event").await;

    // Fix the subscription's URL, then check it with a test event.
    browser
        .click("td a[href='/console/subscriptions/sub_orders']")
        .await;
    browser.wait_text("h1", "Subscription sub_orders").await;
    browser.check_accessibility("subscription").await;
    browser.fill("#e-url", &stack.receiver.url("/fixed")).await;
    browser.click("form.stacked button[type=submit]").await;
    browser.wait_text("dl.facts", "/fixed").await;
    browser.click("form[action$='/test'] button").await;
    let outcome = browser.wait_text("#outcome", "delivered").await;
    assert!(outcome.contains("200"), "{outcome}");
    browser.check_accessibility("test result").await;
    browser.screenshot("test-event").await;

    // Replay every failure of the subscription: filter, dry-run count, confirm, progress.
    browser
        .goto("/console/failed?subscription_id=sub_orders")
        .await;
    browser
        .click_link("Replay every failed delivery matching these filters…")
        .await;
    browser.wait_text("#matched", "3").await;
    browser.check_accessibility("replay wizard").await;
    browser.screenshot("replay-confirm").await;
    browser
        .click("form[action='/console/replays'] button")
        .await;
    let progress = browser.wait_path("/console/replays/rpl_").await;
    browser.wait_text("h1", "Replay").await;
    browser.check_accessibility("replay progress").await;
    browser
        .reload_until(&progress, PATIENCE, |html| html.contains(">completed<"))
        .await;
    browser.screenshot("replay-progress").await;

    // Watch them delivered.
    for i in 1..=3 {
        stack
            .wait_for_status(&format!("evt_order_{i}"), "delivered")
            .await;
    }
    browser
        .reload_until("/console/events/evt_order_1", PATIENCE, |html| {
            html.contains("badge delivered")
        })
        .await;
    browser.check_accessibility("event, delivered").await;
    browser.screenshot("event").await;
    assert_eq!(
        stack.receiver.requests("/fixed").len(),
        4,
        "3 replayed, 1 test"
    );

    browser
        .goto("/console/events?subscription_id=sub_orders")
        .await;
    browser.wait_text("main", "evt_order_3").await;
    browser.check_accessibility("events").await;
    browser.screenshot("events").await;
    browser.close().await;
}

#[tokio::test]
async fn pausing_holds_deliveries_and_resuming_sends_them() {
    let stack = Stack::start().await;
    let Some(browser) = Browser::start(&stack.base).await else {
        return;
    };
    let url = stack.receiver.url("/ok");
    let created = stack
        .post(
            "/subscriptions",
            json!({"id": "sub_pause", "url": url, "event_types": ["user.*"]}),
        )
        .await;
    assert_eq!(created, 201);
    sign_in(&browser, None).await;
    browser.goto("/console/subscriptions").await;
    browser.wait_text("main", "sub_pause").await;
    browser.check_accessibility("subscriptions").await;
    browser.screenshot("subscriptions").await;
    browser.click_link("sub_pause").await;
    browser.wait_text("h1", "sub_pause").await;
    browser.click("form input[value=pause] + button").await;
    browser.wait_text("dl.facts", "paused").await;
    let event = json!({"id": "evt_held", "type": "user.created", "source": "s", "data": {}});
    assert_eq!(stack.post("/events", event).await, 202);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(stack.receiver.requests("/ok").len(), 0, "held while paused");
    browser.click("form input[value=resume] + button").await;
    browser.wait_text("dl.facts", "active").await;
    stack.wait_for_status("evt_held", "delivered").await;
    browser.close().await;
}

#[tokio::test]
async fn a_forged_form_is_refused_and_signing_out_ends_the_session() {
    let stack = Stack::start().await;
    let Some(browser) = Browser::start(&stack.base).await else {
        return;
    };
    let url = stack.receiver.url("/ok");
    let created = stack
        .post(
            "/subscriptions",
            json!({"id": "sub_csrf", "url": url, "event_types": ["*"]}),
        )
        .await;
    assert_eq!(created, 201);
    sign_in(&browser, None).await;
    browser.goto("/console/subscriptions/sub_csrf").await;
    browser.wait_text("h1", "sub_csrf").await;
    // A form whose CSRF token is not this session's (as a forged page would post it).
    browser
        .client
        .execute(
            "document.querySelectorAll('input[name=csrf]').forEach(i => i.value = 'forged');",
            vec![],
        )
        .await
        .unwrap();
    browser.click("form input[value=pause] + button").await;
    let refused = browser.wait_text("main", "Form refused").await;
    assert!(refused.contains("HTTP 403"), "{refused}");
    browser.check_accessibility("refusal").await;
    browser.screenshot("csrf-refused").await;
    browser.goto("/console/subscriptions/sub_csrf").await;
    let facts = browser.wait_text("dl.facts", "State").await;
    assert!(facts.contains("active"), "nothing changed: {facts}");

    browser.click(".sign-out button").await;
    browser.wait_text("h1", "Sign in").await;
    browser.goto("/console/subscriptions").await;
    // Signed out: the pages ask to sign in again.
    browser.wait_path("/console/sign-in").await;
    browser.close().await;
}
