//! An operator's day end to end, with the real API, a real worker and real receivers: a
//! receiver breaks, its deliveries fail; the operator finds them (`GET /deliveries`), points the
//! subscription at a working receiver (`PATCH`), checks it (`POST /subscriptions/{id}/test`)
//! and replays what failed (`POST /replays`): everything arrives.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use dispatch_test_support::TestDb;
use dispatch_test_support::receiver::{Receiver, Reply};
use serde_json::{Value, json};

const PATIENCE: Duration = Duration::from_secs(60);

async fn call(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = client.request(method, url);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn find_fix_test_and_replay_failed_deliveries() {
    use reqwest::Method;
    let db = TestDb::new().await;
    let (base, client) = common::start_api(&db, PATIENCE);
    let receiver = Receiver::start().await;
    // The broken receiver answers 410 Gone: permanent, so its deliveries fail at once.
    receiver.set_default("/broken", Reply::status(410));
    let (status, _) = call(
        &client,
        Method::POST,
        format!("{base}/subscriptions"),
        Some(json!({
            "id": "sub_orders", "url": receiver.url("/broken"), "event_types": ["order.*"],
        })),
    )
    .await;
    assert_eq!(status, 201);
    let (status, _) = call(
        &client,
        Method::POST,
        format!("{base}/subscriptions"),
        Some(json!({
            "id": "sub_audit", "url": receiver.url("/audit"), "event_types": ["*"],
        })),
    )
    .await;
    assert_eq!(status, 201);
    for i in 0..3 {
        let event = json!({"id": format!("evt_{i}"), "type": "order.created", "source": "shop", "data": {"n": i}});
        assert_eq!(
            call(&client, Method::POST, format!("{base}/events"), Some(event))
                .await
                .0,
            202
        );
    }
    // Find: three failed deliveries to sub_orders.
    let worker = common::worker(&db);
    // A new destination starts with two requests in flight: a few rounds attempt all three.
    let mut failed = Value::Null;
    for _ in 0..10 {
        worker.run_once().await.unwrap();
        failed = call(
            &client,
            Method::GET,
            format!("{base}/deliveries?status=failed"),
            None,
        )
        .await
        .1;
        if failed["data"].as_array().map(Vec::len) == Some(3) {
            break;
        }
    }
    let failed = failed["data"].as_array().unwrap().clone();
    assert_eq!(failed.len(), 3, "{failed:?}");
    assert!(
        failed.iter().all(
            |d| d["subscription_id"] == "sub_orders" && d["last_attempt"]["status_code"] == 410
        )
    );

    // Fix: a working URL. Test it: one signed dispatch.test event, to this subscription only.
    let (status, patched) = call(
        &client,
        Method::PATCH,
        format!("{base}/subscriptions/sub_orders"),
        Some(json!({"url": receiver.url("/fixed")})),
    )
    .await;
    assert_eq!(status, 200, "{patched}");
    // No worker running: the test event is stored and the answer comes at once, unattempted.
    let (status, queued) = call(
        &client,
        Method::POST,
        format!("{base}/subscriptions/sub_orders/test"),
        None,
    )
    .await;
    assert_eq!(status, 202, "{queued}");
    assert!(queued["attempt"].is_null(), "{queued}");
    let running = worker.clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let loop_task = tokio::spawn(async move {
        running
            .run(async {
                stopped.await.ok();
            })
            .await
    });
    // Until the worker's first heartbeat, the API cannot know it runs.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let pool = db.pool();
        let mut conn = dispatch_store::pool::connection(&pool).await.unwrap();
        if dispatch_store::queries::workers::alive(&mut conn, 20)
            .await
            .unwrap()
            > 0
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the worker never reported in"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, tested) = call(
        &client,
        Method::POST,
        format!("{base}/subscriptions/sub_orders/test"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{tested}");
    assert_eq!(tested["attempt"]["status_code"], 200);
    assert!(tested["attempt"]["error_code"].is_null());
    assert_eq!(tested["delivery"]["status"], "delivered");
    let sent = receiver.requests("/fixed");
    let test = sent
        .iter()
        .find(|r| r.header("webhook-id") == tested["event_id"].as_str())
        .expect("the test event arrived");
    let body: Value = serde_json::from_slice(&test.body).unwrap();
    assert_eq!(body["type"], "dispatch.test");
    assert!(
        test.header("webhook-signature")
            .is_some_and(|s| s.starts_with("v1,"))
    );
    assert_eq!(
        receiver
            .requests("/audit")
            .iter()
            .filter(|r| String::from_utf8_lossy(&r.body).contains("dispatch.test"))
            .count(),
        0,
        "only the tested subscription gets it"
    );
    let (status, _) = call(
        &client,
        Method::POST,
        format!("{base}/subscriptions/sub_nope/test"),
        None,
    )
    .await;
    assert_eq!(status, 404);

    // Replay what failed: all three arrive at the fixed receiver.
    let (status, replay) = call(
        &client,
        Method::POST,
        format!("{base}/replays"),
        Some(json!({"subscription_id": "sub_orders"})),
    )
    .await;
    assert_eq!(
        (status, replay["matched"].as_i64()),
        (202, Some(3)),
        "{replay}"
    );
    let deadline = tokio::time::Instant::now() + PATIENCE;
    // Three replayed, two test events (the first went once a worker ran).
    while receiver.requests("/fixed").len() < 5 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the replayed deliveries did not arrive"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, left) = call(
        &client,
        Method::GET,
        format!("{base}/deliveries?status=failed"),
        None,
    )
    .await;
    assert_eq!(left["data"].as_array().map(Vec::len), Some(0), "{left}");
    let id = replay["id"].as_str().unwrap();
    let (_, replay) = call(&client, Method::GET, format!("{base}/replays/{id}"), None).await;
    assert_eq!(
        (replay["state"].as_str(), replay["requeued"].as_i64()),
        (Some("completed"), Some(3))
    );
    stop.send(()).unwrap();
    loop_task.await.unwrap();
}
