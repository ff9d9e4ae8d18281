//! Reading events and their attempts, deliveries cancelled by a delete, concurrency, NUL characters, big numbers.

use super::*;

#[tokio::test]
async fn an_unknown_event_is_a_404_not_found() {
    let app = TestApp::spawn().await;
    let body = assert_error(
        app.get("/events/evt_nope").await,
        StatusCode::NOT_FOUND,
        "not_found",
        None,
    )
    .await;
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("evt_nope"))
    );
    // An id the API would never accept is simply not found, not an error of another kind.
    assert_error(
        app.get("/events/not%20an%20id").await,
        StatusCode::NOT_FOUND,
        "not_found",
        None,
    )
    .await;
}

#[tokio::test]
async fn deleting_a_subscription_cancels_its_pending_deliveries_which_stay_visible_on_the_event() {
    let app = TestApp::spawn().await;
    app.subscribe("sub_keep", &["order.*"]).await;
    app.subscribe("sub_drop", &["*"]).await;
    let (status, _) = json_of(app.post_event(&event("evt_x", "order.created")).await).await;
    assert_eq!(status, StatusCode::ACCEPTED);

    app.unsubscribe("sub_drop").await;
    let stored = app.event("evt_x").await;
    assert_eq!(stored["deliveries"].as_array().map(Vec::len), Some(2));
    let dropped = delivery(&stored, "sub_drop");
    assert_eq!(dropped["status"], "cancelled");
    assert!(
        dropped["next_attempt_at"].is_null(),
        "a cancelled delivery is never attempted: {dropped}"
    );
    assert_eq!(delivery(&stored, "sub_keep")["status"], "pending");
    assert_eq!(
        stored["status"], "pending",
        "one delivery is still unfinished"
    );

    app.unsubscribe("sub_keep").await;
    let stored = app.event("evt_x").await;
    assert_eq!(delivery(&stored, "sub_keep")["status"], "cancelled");
    assert_eq!(
        stored["status"], "cancelled",
        "every delivery was cancelled"
    );

    // Events received after the deletion do not go to the deleted subscriptions.
    let (status, later) = json_of(app.post_event(&event("evt_y", "order.created")).await).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(later["deliveries"], json!([]));
}

// --- GET /events/{id}/attempts ------------------------------------------------------------------

#[tokio::test]
async fn an_events_attempts_are_listed_oldest_first_across_its_deliveries() {
    let app = TestApp::spawn().await;
    app.subscribe("sub_a", &["*"]).await;
    app.subscribe("sub_b", &["order.*"]).await;
    assert_eq!(
        app.post_event(&event("evt_att", "order.created"))
            .await
            .status(),
        StatusCode::ACCEPTED
    );
    assert_eq!(
        app.post_event(&event("evt_other", "order.created"))
            .await
            .status(),
        StatusCode::ACCEPTED
    );

    let (status, empty) = json_of(app.get("/events/evt_att/attempts").await).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(empty, json!({"data": [], "next_cursor": null}));

    app.seed_attempt("evt_att", "sub_b", 1, Some(500), Some("HTTP 500"))
        .await;
    app.seed_attempt("evt_att", "sub_a", 1, None, Some("connection refused"))
        .await;
    app.seed_attempt("evt_other", "sub_a", 1, Some(200), None)
        .await;
    app.seed_attempt("evt_att", "sub_b", 2, Some(200), None)
        .await;

    let (status, body) = json_of(app.get("/events/evt_att/attempts").await).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let data = body["data"].as_array().expect("data is an array");
    let order: Vec<(String, i64)> = data
        .iter()
        .map(|a| {
            (
                a["subscription_id"].as_str().expect("id").to_owned(),
                a["attempt"].as_i64().expect("attempt"),
            )
        })
        .collect();
    assert_eq!(
        order,
        vec![
            ("sub_b".to_owned(), 1),
            ("sub_a".to_owned(), 1),
            ("sub_b".to_owned(), 2)
        ],
        "oldest first, and only this event's: {body}"
    );
    assert_eq!(data[0]["status_code"], 500);
    assert_eq!(data[0]["latency_ms"], 10);
    assert_eq!(data[0]["error_code"], "http_status");
    assert_eq!(data[0]["error"], "HTTP 500");
    assert_eq!(data[0]["response_body"], "answered 500");
    assert!(data[0]["created_at"].is_string());
    assert!(data[1]["status_code"].is_null());
    assert!(data[1]["response_body"].is_null());
    assert_eq!(data[1]["error"], "connection refused");
    assert_eq!(data[2]["status_code"], 200);
    assert!(data[2]["error"].is_null());
    let created: Vec<DateTime<Utc>> = data
        .iter()
        .map(|a| {
            a["created_at"]
                .as_str()
                .and_then(|t| t.parse().ok())
                .expect("an RFC 3339 timestamp")
        })
        .collect();
    assert!(
        created.windows(2).all(|w| w[0] <= w[1]),
        "created_at ascends: {created:?}"
    );
}

#[tokio::test]
async fn attempts_of_an_unknown_event_are_a_404_not_found() {
    let app = TestApp::spawn().await;
    assert_error(
        app.get("/events/evt_nope/attempts").await,
        StatusCode::NOT_FOUND,
        "not_found",
        None,
    )
    .await;
}

// --- Concurrency --------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_event_posted_concurrently_is_accepted_once_and_stored_once() {
    let app = TestApp::spawn().await;
    app.subscribe("sub_a", &["*"]).await;
    app.subscribe("sub_b", &["order.*"]).await;
    let body = event("evt_race", "order.created");

    let responses = futures_util::future::join_all((0..12).map(|_| app.post_event(&body))).await;
    let mut statuses: Vec<u16> = responses.iter().map(|r| r.status().as_u16()).collect();
    statuses.sort_unstable();
    let mut expected = vec![200; 11];
    expected.insert(0, 202);
    expected.sort_unstable();
    assert_eq!(
        statuses, expected,
        "exactly one acceptance, the rest duplicates"
    );

    let stored = app.event("evt_race").await;
    assert_eq!(subscription_ids(&stored), set(&["sub_a", "sub_b"]));
    assert_eq!(stored["deliveries"].as_array().map(Vec::len), Some(2));
}

// --- Known bugs (see the report): each asserts the intended behaviour --------------------------

#[tokio::test]
async fn an_event_whose_data_contains_a_nul_character_is_a_422_naming_data() {
    let app = TestApp::spawn().await;
    for data in [
        json!({"s": "a\u{0}b"}),
        json!({"k\u{0}": 1}),
        json!(["\u{0}"]),
    ] {
        let body = json!({"id": "evt_nul", "type": "t", "source": "s", "data": data});
        assert_error(
            app.post_event(&body).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            Some("data"),
        )
        .await;
    }
}

#[tokio::test]
async fn an_id_with_a_nul_character_in_the_path_is_a_404() {
    let app = TestApp::spawn().await;
    for path in [
        "/events/a%00b",
        "/events/a%00b/attempts",
        "/subscriptions/a%00b",
    ] {
        assert_error(
            app.get(path).await,
            StatusCode::NOT_FOUND,
            "not_found",
            None,
        )
        .await;
    }
    assert_error(
        app.delete("/subscriptions/a%00b").await,
        StatusCode::NOT_FOUND,
        "not_found",
        None,
    )
    .await;
}

#[tokio::test]
async fn a_number_too_large_to_read_back_is_a_422_and_a_large_one_is_stored_exactly() {
    let app = TestApp::spawn().await;
    let body = r#"{"id":"evt_max","type":"t","source":"s","data":{"x":1.7976931348623157e308}}"#;
    let response = app
        .post_raw("/events", body, Some("application/json"))
        .await;
    let (status, error) = json_of(response).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{error}");
    assert_eq!(error["field"], "data");
    assert_eq!(
        app.get("/events/evt_max").await.status(),
        StatusCode::NOT_FOUND
    );

    let body = r#"{"id":"evt_big","type":"t","source":"s","data":{"x":1e300}}"#;
    let response = app
        .post_raw("/events", body, Some("application/json"))
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert_eq!(app.event("evt_big").await["data"]["x"], json!(1e300));
}

// --- POST /events: group commit -----------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_events_stored_in_groups_each_get_their_own_answer() {
    let app = TestApp::spawn_with(|s| {
        // One committer: whatever arrives while it stores a group waits for the next one.
        s.ingest_groups.committers = 1;
        s.ingest_groups.max_events = 8;
    })
    .await;
    app.subscribe("sub_all", &["*"]).await;

    let mut bodies = Vec::new();
    for n in 0..20 {
        // Every id twice with the same content: one 202 and one 200, whichever comes first.
        bodies.push(event(&format!("evt_{n}"), "order.created"));
        bodies.push(event(&format!("evt_{n}"), "order.created"));
    }
    for n in 0..5 {
        // One id five times with different content: one 202, four 409s.
        let mut body = event("evt_x", "order.created");
        body["data"] = json!({ "variant": n });
        bodies.push(body);
    }
    let requests = bodies.len();
    let answers = futures_util::future::join_all(bodies.iter().map(|body| async {
        let (status, json) = json_of(app.post_event(body).await).await;
        (body["id"].as_str().expect("an id").to_owned(), status, json)
    }))
    .await;

    let mut per_id: std::collections::BTreeMap<String, Vec<StatusCode>> = Default::default();
    for (id, status, json) in &answers {
        per_id.entry(id.clone()).or_default().push(*status);
        match *status {
            StatusCode::ACCEPTED | StatusCode::OK => {
                assert_eq!(json["id"], id.as_str(), "{json}");
                assert_eq!(subscription_ids(json), set(&["sub_all"]), "{json}");
                assert_eq!(delivery(json, "sub_all")["attempts"], 0);
            }
            StatusCode::CONFLICT => assert_eq!(json["code"], "event_conflict", "{json}"),
            other => panic!("{id}: unexpected {other}: {json}"),
        }
    }
    for (id, mut statuses) in per_id {
        statuses.sort();
        let expected = if id == "evt_x" {
            vec![
                StatusCode::ACCEPTED,
                StatusCode::CONFLICT,
                StatusCode::CONFLICT,
                StatusCode::CONFLICT,
                StatusCode::CONFLICT,
            ]
        } else {
            vec![StatusCode::OK, StatusCode::ACCEPTED]
        };
        assert_eq!(statuses, expected, "{id}");
        // Stored once, with exactly one delivery.
        let stored = app.event(&id).await;
        assert_eq!(
            stored["deliveries"].as_array().map(Vec::len),
            Some(1),
            "{stored}"
        );
    }

    // Every request went through exactly one group.
    let metrics = app
        .get("/metrics")
        .await
        .text()
        .await
        .expect("metrics text");
    let sum = metrics
        .lines()
        .find_map(|l| l.strip_prefix("dispatch_ingest_group_size_sum "))
        .unwrap_or_else(|| panic!("no group size sum in\n{metrics}"));
    assert_eq!(sum.trim().parse::<f64>().ok(), Some(requests as f64));
}
