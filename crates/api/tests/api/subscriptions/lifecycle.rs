//! Reading and deleting a subscription by id, concurrent creation, a secret with a NUL character.

use super::*;

#[tokio::test]
async fn a_subscription_is_read_by_id_and_an_unknown_one_is_a_404() {
    let app = TestApp::spawn().await;
    let created = app.subscribe("sub_read", &["order.*"]).await;
    let (status, fetched) = json_of(app.get("/subscriptions/sub_read").await).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(fetched["id"], "sub_read");
    assert_eq!(fetched["url"], created["url"]);
    assert_eq!(fetched["event_types"], json!(["order.*"]));
    assert_eq!(fetched["enabled"], true);
    assert_eq!(fetched["has_secret"], true, "a generated secret");
    assert!(fetched.get("secret").is_none());
    assert_eq!(fetched["created_at"], created["created_at"]);

    let body = assert_error(
        app.get("/subscriptions/sub_unknown").await,
        StatusCode::NOT_FOUND,
        "not_found",
        None,
    )
    .await;
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("sub_unknown"))
    );
}

#[tokio::test]
async fn deleting_a_subscription_answers_204_once_and_404_afterwards() {
    let app = TestApp::spawn().await;
    app.subscribe("sub_del", &["*"]).await;
    app.subscribe("sub_stays", &["*"]).await;

    let response = app.delete("/subscriptions/sub_del").await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert!(response.text().await.expect("body").is_empty());

    assert_error(
        app.delete("/subscriptions/sub_del").await,
        StatusCode::NOT_FOUND,
        "not_found",
        None,
    )
    .await;
    assert_error(
        app.get("/subscriptions/sub_del").await,
        StatusCode::NOT_FOUND,
        "not_found",
        None,
    )
    .await;
    assert_error(
        app.delete("/subscriptions/sub_never").await,
        StatusCode::NOT_FOUND,
        "not_found",
        None,
    )
    .await;
    let (status, _) = json_of(app.get("/subscriptions/sub_stays").await).await;
    assert_eq!(status, StatusCode::OK, "deleting one leaves the others");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_subscription_id_created_concurrently_is_created_once() {
    let app = TestApp::spawn().await;
    let bodies: Vec<Value> = (0..8)
        .map(|i| {
            json!({
                "id": "sub_race",
                "url": format!("https://example.com/{i}"),
                "event_types": ["*"],
            })
        })
        .collect();
    let responses =
        futures_util::future::join_all(bodies.iter().map(|b| app.create_subscription(b))).await;
    let mut statuses: Vec<u16> = responses.iter().map(|r| r.status().as_u16()).collect();
    statuses.sort_unstable();
    assert_eq!(statuses, [201, 409, 409, 409, 409, 409, 409, 409]);
    let (_, list) = json_of(app.get("/subscriptions").await).await;
    assert_eq!(ids_of(&list), ["sub_race"]);
}

#[tokio::test]
async fn a_secret_with_a_nul_character_is_a_422_naming_secret() {
    let app = TestApp::spawn().await;
    let body = json!({"url": "https://example.com/", "event_types": ["*"], "secret": "a\u{0}b"});
    assert_error(
        app.create_subscription(&body).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
        Some("secret"),
    )
    .await;
}
