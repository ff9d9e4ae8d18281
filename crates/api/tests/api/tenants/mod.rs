//! Tenants: two tenants share ids without seeing each other's rows through any route
//! (`isolation.rs`: by id, list, filter, cursor, replay or batch item; every key scope held to
//! its tenant; `Dispatch-Tenant` for admin keys only), and limits, deletion and the admin
//! command (`limits.rs`). No answer to a tenant names a stored (`<tenant>/`) id.

#![allow(clippy::unwrap_used)]

mod isolation;
mod limits;

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{TEST_API_KEY, TestApp};

pub(super) const PATIENCE: Duration = Duration::from_secs(15);

/// A caller: a key and, optionally, the `Dispatch-Tenant` header; it remembers every body it
/// was answered, to check none names a stored id.
pub(super) struct Caller<'a> {
    app: &'a TestApp,
    pub(super) key: String,
    tenant_header: Option<&'static str>,
    seen: std::cell::RefCell<Vec<String>>,
}

impl<'a> Caller<'a> {
    pub(super) fn new(app: &'a TestApp, key: &str, tenant_header: Option<&'static str>) -> Self {
        Self {
            app,
            key: key.to_owned(),
            tenant_header,
            seen: Default::default(),
        }
    }

    pub(super) async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = reqwest::Client::new()
            .request(method, self.app.url(path))
            .bearer_auth(&self.key);
        if let Some(tenant) = self.tenant_header {
            request = request.header("Dispatch-Tenant", tenant);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("answered");
        let status = response.status();
        let text = response.text().await.expect("a body");
        self.seen.borrow_mut().push(text.clone());
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub(super) async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send(Method::GET, path, None).await
    }

    pub(super) async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(Method::POST, path, Some(body)).await
    }

    /// Waits until the replica's key cache knows this key.
    pub(super) async fn ready(&self, path: &str) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while self.get(path).await.0 == StatusCode::UNAUTHORIZED {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the key never worked"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub(super) fn never_saw(&self, text: &str) {
        for body in self.seen.borrow().iter() {
            assert!(!body.contains(text), "an answer names {text:?}: {body}");
        }
    }
}

pub(super) fn admin(app: &TestApp) -> Caller<'_> {
    Caller::new(app, TEST_API_KEY, None)
}

pub(super) async fn tenant(app: &TestApp, id: &str, limits: Value) {
    let (status, body) = admin(app)
        .post(
            "/tenants",
            json!({"id": id, "name": format!("Tenant {id}"), "limits": limits}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["id"], id);
}

pub(super) async fn key(app: &TestApp, tenant: &str, scope: &str) -> String {
    let (status, body) = admin(app)
        .post(
            &format!("/tenants/{tenant}/keys"),
            json!({"name": format!("{tenant} {scope}"), "scope": scope}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["key"].as_str().unwrap().to_owned()
}

pub(super) fn subscription(id: &str) -> Value {
    json!({"id": id, "url": format!("https://hooks.example.com/{id}"), "event_types": ["*"]})
}
