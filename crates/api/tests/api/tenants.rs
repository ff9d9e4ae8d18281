//! Tenants: two tenants share ids without seeing each other's rows through any route (by id,
//! list, filter, cursor, replay or batch item), every key scope is held to its tenant, the
//! `Dispatch-Tenant` header works for admin keys only, limits refuse with clear errors, and a
//! deleted tenant's keys stop working. No answer to a tenant names a stored (`<tenant>/`) id.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{TEST_API_KEY, TestApp, event};
use crate::operate::sql;

const PATIENCE: Duration = Duration::from_secs(15);

/// A caller: a key and, optionally, the `Dispatch-Tenant` header; it remembers every body it
/// was answered, to check none names a stored id.
struct Caller<'a> {
    app: &'a TestApp,
    key: String,
    tenant_header: Option<&'static str>,
    seen: std::cell::RefCell<Vec<String>>,
}

impl<'a> Caller<'a> {
    fn new(app: &'a TestApp, key: &str, tenant_header: Option<&'static str>) -> Self {
        Self {
            app,
            key: key.to_owned(),
            tenant_header,
            seen: Default::default(),
        }
    }

    async fn send(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
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

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send(Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(Method::POST, path, Some(body)).await
    }

    /// Waits until the replica's key cache knows this key.
    async fn ready(&self, path: &str) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while self.get(path).await.0 == StatusCode::UNAUTHORIZED {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the key never worked"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn never_saw(&self, text: &str) {
        for body in self.seen.borrow().iter() {
            assert!(!body.contains(text), "an answer names {text:?}: {body}");
        }
    }
}

fn admin(app: &TestApp) -> Caller<'_> {
    Caller::new(app, TEST_API_KEY, None)
}

async fn tenant(app: &TestApp, id: &str, limits: Value) {
    let (status, body) = admin(app)
        .post(
            "/tenants",
            json!({"id": id, "name": format!("Tenant {id}"), "limits": limits}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["id"], id);
}

async fn key(app: &TestApp, tenant: &str, scope: &str) -> String {
    let (status, body) = admin(app)
        .post(
            &format!("/tenants/{tenant}/keys"),
            json!({"name": format!("{tenant} {scope}"), "scope": scope}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["key"].as_str().unwrap().to_owned()
}

fn subscription(id: &str) -> Value {
    json!({"id": id, "url": format!("https://hooks.example.com/{id}"), "event_types": ["*"]})
}

#[tokio::test]
async fn two_tenants_share_ids_and_no_route_reaches_the_others_rows() {
    let app = TestApp::spawn().await;
    tenant(&app, "acme", Value::Null).await;
    tenant(&app, "globex", Value::Null).await;
    let acme = Caller::new(&app, &key(&app, "acme", "tenant").await, None);
    let globex = Caller::new(&app, &key(&app, "globex", "tenant").await, None);
    acme.ready("/subscriptions").await;
    globex.ready("/subscriptions").await;

    // The same ids in three tenants: no 409, each its own row.
    for caller in [&acme, &globex, &admin(&app)] {
        let (status, body) = caller.post("/subscriptions", subscription("sub_1")).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!(body["id"], "sub_1");
    }
    globex
        .post("/subscriptions", subscription("sub_globex"))
        .await;
    let mut acme_event = event("evt_1", "order.created");
    acme_event["data"] = json!({"who": "acme"});
    let mut globex_event = event("evt_1", "order.created");
    globex_event["data"] = json!({"who": "globex"});
    assert_eq!(
        acme.post("/events", acme_event).await.0,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        globex.post("/events", globex_event.clone()).await.0,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        globex.post("/events", globex_event).await.0,
        StatusCode::OK,
        "idempotent within the tenant"
    );
    globex
        .post("/events", event("evt_globex", "order.created"))
        .await;

    // Each sees its own event, with deliveries to its own subscription only.
    let (_, mine) = acme.get("/events/evt_1").await;
    assert_eq!(mine["data"]["who"], "acme");
    assert_eq!(mine["id"], "evt_1");
    let subs: Vec<&Value> = mine["deliveries"].as_array().unwrap().iter().collect();
    assert_eq!(
        subs.len(),
        1,
        "fanned out to acme's subscriptions only: {mine}"
    );
    assert_eq!(subs[0]["subscription_id"], "sub_1");
    assert_eq!(globex.get("/events/evt_1").await.1["data"]["who"], "globex");
    let (_, default) = admin(&app).get("/events").await;
    assert!(
        default["data"].as_array().unwrap().is_empty(),
        "the default tenant got none"
    );

    // Lists hold only the caller's rows.
    assert_eq!(
        acme.get("/events").await.1["data"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        acme.get("/subscriptions").await.1["data"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        acme.get("/deliveries").await.1["data"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert!(
        acme.get("/events?subscription_id=sub_globex").await.1["data"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    // Guessing the other tenant's ids: every route answers 404.
    let (_, theirs) = globex.get("/deliveries?event_id=evt_globex").await;
    let their_delivery = theirs["data"][0]["id"].as_i64().unwrap();
    for (method, path) in [
        (Method::GET, "/events/evt_globex".to_owned()),
        (Method::GET, "/events/evt_globex/attempts".to_owned()),
        (Method::GET, "/subscriptions/sub_globex".to_owned()),
        (Method::PATCH, "/subscriptions/sub_globex".to_owned()),
        (Method::DELETE, "/subscriptions/sub_globex".to_owned()),
        (
            Method::POST,
            "/subscriptions/sub_globex/rotate-secret".to_owned(),
        ),
        (
            Method::GET,
            "/subscriptions/sub_globex/blocked-keys".to_owned(),
        ),
        (Method::GET, format!("/deliveries/{their_delivery}")),
        (
            Method::GET,
            format!("/deliveries/{their_delivery}/attempts"),
        ),
        (Method::POST, format!("/deliveries/{their_delivery}/retry")),
        (Method::POST, format!("/deliveries/{their_delivery}/skip")),
    ] {
        let body = (method == Method::PATCH).then(|| json!({"description": "mine now"}));
        let (status, answer) = acme.send(method.clone(), &path, body).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: {answer}");
    }
    assert_eq!(
        globex.get("/subscriptions/sub_globex").await.0,
        StatusCode::OK,
        "untouched"
    );

    // Replays: selectors and ids are the tenant's own.
    sql(
        &app,
        "UPDATE deliveries SET status = 'failed' WHERE event_id LIKE 'globex/%'",
    )
    .await;
    let window = json!({"since": "2000-01-01T00:00:00Z", "dry_run": true});
    assert_eq!(acme.post("/replays", window.clone()).await.1["matched"], 0);
    // Two events, each to two subscriptions.
    assert_eq!(globex.post("/replays", window).await.1["matched"], 4);
    let (status, replay) = globex
        .post("/replays", json!({"subscription_id": "sub_globex"}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{replay}");
    let replay_id = replay["id"].as_str().unwrap();
    assert_eq!(
        acme.get(&format!("/replays/{replay_id}")).await.0,
        StatusCode::NOT_FOUND
    );
    let cancel = format!("/replays/{replay_id}/cancel");
    assert_eq!(acme.post(&cancel, json!({})).await.0, StatusCode::NOT_FOUND);
    assert_eq!(
        acme.post(
            "/replays",
            json!({"subscription_id": "sub_globex", "dry_run": true})
        )
        .await
        .1["matched"],
        0
    );

    // Another tenant's cursor is only a position: it never reveals their rows.
    let (_, page) = globex.get("/events?limit=1").await;
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();
    let (_, reused) = acme.get(&format!("/events?limit=1&cursor={cursor}")).await;
    for row in reused["data"].as_array().unwrap() {
        assert_eq!(row["id"], "evt_1");
        assert_eq!(acme.get("/events/evt_1").await.1["data"]["who"], "acme");
    }

    // A batch item with the other tenant's id is a new event of the caller's.
    let (_, batch) = acme
        .post(
            "/events/batch",
            json!({"events": [event("evt_globex", "order.created")]}),
        )
        .await;
    assert_eq!(batch["results"][0]["status"], "accepted", "{batch}");

    acme.never_saw("acme/");
    acme.never_saw("globex");
    globex.never_saw("globex/");
}

#[tokio::test]
async fn each_scope_is_held_to_its_tenant_and_the_header_names_one_for_admins_only() {
    let app = TestApp::spawn().await;
    tenant(&app, "acme", Value::Null).await;
    tenant(&app, "globex", Value::Null).await;
    let reader = Caller::new(&app, &key(&app, "acme", "read").await, None);
    let producer = Caller::new(&app, &key(&app, "acme", "ingest").await, None);
    let owner = Caller::new(&app, &key(&app, "acme", "tenant").await, None);
    reader.ready("/events").await;
    owner.ready("/events").await;

    assert_eq!(
        producer.post("/events", event("evt_p", "a.b")).await.0,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        owner.get("/events/evt_p").await.0,
        StatusCode::OK,
        "landed in acme"
    );
    assert_eq!(
        admin(&app).get("/events/evt_p").await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(producer.get("/events/evt_p").await.0, StatusCode::FORBIDDEN);
    assert_eq!(reader.get("/events/evt_p").await.0, StatusCode::OK);
    assert_eq!(
        reader.post("/subscriptions", subscription("sub_r")).await.0,
        StatusCode::FORBIDDEN
    );
    for path in [
        "/tenants",
        "/stats",
        "/keys",
        "/audit",
        "/tenants/acme/keys",
    ] {
        assert_eq!(owner.get(path).await.0, StatusCode::FORBIDDEN, "{path}");
    }

    // A tenant key cannot name another tenant; an admin key can, and must name a live one.
    let wandering = Caller::new(&app, &owner.key, Some("globex"));
    let (status, body) = wandering.get("/events").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(
        Caller::new(&app, &owner.key, Some("acme"))
            .get("/events/evt_p")
            .await
            .0,
        StatusCode::OK
    );
    let as_acme = Caller::new(&app, TEST_API_KEY, Some("acme"));
    assert_eq!(as_acme.get("/events/evt_p").await.0, StatusCode::OK);
    let (status, body) = Caller::new(&app, TEST_API_KEY, Some("nobody"))
        .get("/events")
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = Caller::new(&app, TEST_API_KEY, Some("Not A Tenant"))
        .get("/events")
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["code"], "invalid_header");
    assert_eq!(body["field"], "Dispatch-Tenant");

    // A key for a tenant that does not exist is refused; so is a scope naming another tenant.
    let (status, body) = admin(&app)
        .post("/keys", json!({"name": "x", "scope": "tenant:nobody"}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (status, _) = admin(&app)
        .post(
            "/tenants/acme/keys",
            json!({"name": "x", "scope": "tenant:globex"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (_, keys) = admin(&app).get("/tenants/acme/keys").await;
    let scopes: Vec<&str> = keys["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["scope"].as_str().unwrap())
        .collect();
    assert_eq!(scopes.len(), 3);
    assert!(scopes.iter().all(|s| s.contains(":acme")), "{scopes:?}");
}

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
