//! Tenant limits (rate, subscriptions, payload) with their errors and metrics, deleting a
//! tenant, and the admin command.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::{Caller, PATIENCE, admin, key, subscription, tenant};
use crate::helpers::{TEST_API_KEY, TestApp, event};

#[tokio::test]
async fn tenant_limits_refuse_with_clear_errors_and_are_counted_per_tenant() {
    let app = TestApp::spawn().await;
    tenant(
        &app,
        "small",
        json!({"max_subscriptions": 1, "ingest_rate_per_sec": 0.01, "ingest_burst": 2}),
    )
    .await;
    let small = Caller::new(&app, &key(&app, "small", "tenant").await, None);
    small.ready("/events").await;
    assert_eq!(
        small.post("/subscriptions", subscription("s1")).await.0,
        StatusCode::CREATED
    );
    let (status, body) = small.post("/subscriptions", subscription("s2")).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["code"], "subscription_limit_reached");
    assert_eq!(
        admin(&app)
            .post("/subscriptions", subscription("s2"))
            .await
            .0,
        StatusCode::CREATED,
        "the default tenant has no such limit"
    );

    assert_eq!(
        small.post("/events", event("e1", "a.b")).await.0,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        small.post("/events", event("e2", "a.b")).await.0,
        StatusCode::ACCEPTED
    );
    let response = reqwest::Client::new()
        .post(app.url("/events"))
        .bearer_auth(&small.key)
        .json(&event("e3", "a.b"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=100).contains(&retry_after), "{retry_after}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "rate_limited");
    assert_eq!(
        admin(&app).post("/events", event("e3", "a.b")).await.0,
        StatusCode::ACCEPTED,
        "another tenant's bucket is its own"
    );

    // New limits take effect at once on this replica: a payload ceiling, a generous rate.
    let (status, body) = admin(&app)
        .send(
            Method::PATCH,
            "/tenants/small",
            Some(json!({"limits": {"ingest_rate_per_sec": 1000, "max_payload_bytes": 300}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["limits"]["max_subscriptions"], Value::Null);
    let mut big = event("e4", "a.b");
    big["data"] = json!({"pad": "x".repeat(400)});
    let (status, body) = small.post("/events", big.clone()).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    let (_, batch) = small
        .post(
            "/events/batch",
            json!({"events": [big, event("e5", "a.b")]}),
        )
        .await;
    assert_eq!(
        batch["results"][0]["error"]["code"], "payload_too_large",
        "{batch}"
    );
    assert_eq!(batch["results"][1]["status"], "accepted", "{batch}");
    let (status, body) = admin(&app)
        .send(
            Method::PATCH,
            "/tenants/small",
            Some(json!({"limits": {"ingest_burst": 0}})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["field"], "limits.ingest_burst");

    let metrics = app.get("/metrics").await.text().await.unwrap();
    for outcome in ["received", "rate_limited"] {
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("dispatch_tenant_events_total")
                    && l.contains(&format!("outcome=\"{outcome}\""))
                    && l.contains("tenant=\"small\"")),
            "no {outcome} series for tenant small"
        );
    }
}

#[tokio::test]
async fn a_deleted_tenant_loses_its_keys_and_subscriptions_and_its_id_stays_taken() {
    let app = TestApp::spawn().await;
    tenant(&app, "gone", Value::Null).await;
    let gone = Caller::new(&app, &key(&app, "gone", "tenant").await, None);
    gone.ready("/subscriptions").await;
    gone.post("/subscriptions", subscription("sub_1")).await;
    assert_eq!(
        gone.post("/events", event("e1", "a.b")).await.0,
        StatusCode::ACCEPTED
    );

    let (status, _) = admin(&app)
        .send(Method::DELETE, "/tenants/gone", None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        gone.get("/subscriptions").await.0,
        StatusCode::UNAUTHORIZED,
        "revoked at once"
    );
    let as_gone = Caller::new(&app, TEST_API_KEY, Some("gone"));
    assert_eq!(as_gone.get("/events").await.0, StatusCode::NOT_FOUND);
    let (status, body) = admin(&app)
        .send(Method::DELETE, "/tenants/default", None)
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::CONFLICT, Some("default_tenant"))
    );
    let (status, body) = admin(&app)
        .post("/tenants", json!({"id": "gone", "name": "again"}))
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::CONFLICT, Some("tenant_exists"))
    );
    let (_, tenants) = admin(&app).get("/tenants").await;
    let ids: Vec<&str> = tenants["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["default"]);
    let (_, audit) = admin(&app).get("/audit").await;
    let actions: Vec<&str> = audit["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["action"].as_str().unwrap())
        .collect();
    for action in ["tenant.created", "key.created", "tenant.deleted"] {
        assert!(actions.contains(&action), "{actions:?}");
    }
}

#[tokio::test]
async fn the_admin_command_manages_the_same_tenants_as_the_api() {
    let app = TestApp::spawn().await;
    let created: Value = serde_json::from_str(&crate::admin::admin(
        &app,
        &[
            "tenants",
            "create",
            "--id",
            "cli-t",
            "--name",
            "From the CLI",
            "--max-subscriptions",
            "1",
        ],
    ))
    .unwrap();
    assert_eq!(created["limits"]["max_subscriptions"], 1);
    let key: Value = serde_json::from_str(&crate::admin::admin(
        &app,
        &[
            "keys",
            "create",
            "--name",
            "cli-t owner",
            "--scope",
            "tenant:cli-t",
        ],
    ))
    .unwrap();
    let owner = Caller::new(&app, key["key"].as_str().unwrap(), None);
    owner.ready("/subscriptions").await;
    assert_eq!(
        owner.post("/subscriptions", subscription("s1")).await.0,
        StatusCode::CREATED
    );
    let (status, body) = owner.post("/subscriptions", subscription("s2")).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::CONFLICT, Some("subscription_limit_reached"))
    );
    assert!(crate::admin::admin(&app, &["tenants", "list"]).contains("\"cli-t\""));
    let out = crate::admin::dispatch_api(
        &[
            "admin",
            "keys",
            "create",
            "--name",
            "x",
            "--scope",
            "tenant:nobody",
        ],
        &[("DATABASE_URL", app.db.url())],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("there is no tenant nobody"));
    let deleted = crate::admin::admin(&app, &["tenants", "delete", "cli-t"]);
    assert!(
        deleted.contains("1 subscriptions deleted, 1 keys revoked"),
        "{deleted}"
    );
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while owner.get("/subscriptions").await.0 != StatusCode::UNAUTHORIZED {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the key still works"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
