//! A tenant key in the browser: its console session shows its own tenant's events and
//! subscriptions only, never the default tenant's rows with the same ids, and another tenant's
//! pages are not found.

use serde_json::{Value, json};

use super::Stack;
use super::harness::Browser;

/// Posts as the stack's admin key into tenant `tenant` (`Dispatch-Tenant`); the status.
async fn post_as(stack: &Stack, tenant: &str, path: &str, body: Value) -> u16 {
    stack
        .client
        .post(format!("{}{path}", stack.base))
        .header("Dispatch-Tenant", tenant)
        .json(&body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn a_tenant_keys_console_shows_its_own_tenant_only() {
    let stack = Stack::start().await;
    let Some(browser) = Browser::start(&stack.base).await else {
        return;
    };
    let tenant = json!({"id": "acme", "name": "Acme"});
    assert_eq!(stack.post("/tenants", tenant).await, 201);
    let url = stack.receiver.url("/broken");
    for (tenant, data) in [("default", "the default tenant's"), ("acme", "acme's own")] {
        let sub = json!({"id": "sub_shared", "url": url, "event_types": ["order.*"],
                         "description": format!("{data} subscription")});
        assert_eq!(post_as(&stack, tenant, "/subscriptions", sub).await, 201);
        let event = json!({"id": "evt_shared", "type": "order.created", "source": "shop",
                           "data": {"owner": data}});
        assert_eq!(post_as(&stack, tenant, "/events", event).await, 202);
    }
    let only_default = json!({"id": "evt_default_only", "type": "order.created",
                              "source": "shop", "data": {}});
    assert_eq!(stack.post("/events", only_default).await, 202);
    let created: Value = stack
        .client
        .post(format!("{}/tenants/acme/keys", stack.base))
        .json(&json!({"name": "acme on-call", "scope": "tenant"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = created["key"].as_str().unwrap().to_owned();

    browser.goto("/console/").await;
    browser.wait_path("/console/sign-in").await;
    browser.fill("#api_key", &format!("{key}\u{E007}")).await;
    browser.wait_text("h1", "Overview").await;
    browser.goto("/console/events/evt_shared").await;
    let page = browser.wait_text("main", "acme's own").await;
    assert!(!page.contains("the default tenant's"), "{page}");
    assert!(
        page.contains("sub_shared") && !page.contains("acme/"),
        "{page}"
    );
    browser.goto("/console/events").await;
    let list = browser.wait_text("main", "evt_shared").await;
    assert!(!list.contains("evt_default_only"), "{list}");
    assert!(
        !browser.source().await.contains("acme/"),
        "the list and its links name the producer's ids, not stored ones"
    );
    browser.goto("/console/subscriptions/sub_shared").await;
    let sub = browser.wait_text("main", "acme's own subscription").await;
    assert!(!sub.contains("the default tenant's"), "{sub}");
    browser.goto("/console/events/evt_default_only").await;
    browser.wait_text("main", "no event").await;
    let source = browser.source().await;
    assert!(!source.contains("acme/"), "no page names a stored id");
    browser.screenshot("tenant-key-events").await;
    browser.close().await;
}
