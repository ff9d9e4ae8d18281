//! Two tenants share ids and no route reaches the other's rows; each key scope is held to its
//! tenant and the `Dispatch-Tenant` header names one for admin keys only.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::{Caller, admin, key, subscription, tenant};
use crate::helpers::{TEST_API_KEY, TestApp, event};
use crate::operate::sql;

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
    acme.never_saw("globex/");
    acme.never_saw(r#""who":"globex""#);
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
