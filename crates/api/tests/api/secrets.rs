//! Subscription secrets at rest and `POST /subscriptions/{id}/rotate-secret`: the table is read
//! behind the API's back to prove the plaintext never reaches it.

use std::time::Duration;

use chrono::{DateTime, Utc};
use dispatch_domain::sealing::SealError;
use dispatch_store::pool;
use dispatch_store::queries::subscriptions::{self, StoredSecretColumns};
use dispatch_test_support::secrets::test_keyring;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_error, json_of};

/// The secret columns of a subscription as PostgreSQL holds them, and the whole table as text.
#[derive(Debug)]
struct Raw {
    secret: Option<String>,
    sealed_secret: Option<String>,
    previous_sealed_secret: Option<String>,
    previous_secret_expires_at: Option<DateTime<Utc>>,
    whole_row: String,
}

async fn raw(app: &TestApp, id: &str) -> Raw {
    let pool = app.db.pool();
    let mut conn = pool::connection(&pool).await.expect("a connection");
    let StoredSecretColumns {
        secret,
        sealed_secret,
        previous_sealed_secret,
        previous_secret_expires_at,
    } = subscriptions::stored_secret_columns(&mut conn, id)
        .await
        .expect("the row is readable")
        .expect("the subscription exists");
    Raw {
        secret,
        sealed_secret,
        previous_sealed_secret,
        previous_secret_expires_at,
        whole_row: subscriptions::table_text(&mut conn)
            .await
            .expect("the table is readable"),
    }
}

async fn rotate(app: &TestApp, id: &str, body: Option<Value>) -> reqwest::Response {
    let mut request = app
        .client
        .post(app.url(&format!("/subscriptions/{id}/rotate-secret")));
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.expect("an answer")
}

fn close_to(at: DateTime<Utc>, expected: DateTime<Utc>) -> bool {
    (at - expected).num_seconds().abs() <= 5
}

#[tokio::test]
async fn a_created_subscriptions_secret_is_sealed_in_the_database_not_stored_in_plaintext() {
    let app = TestApp::spawn().await;
    let plaintext = "whsec_YS12ZXJ5LXJlY29nbmlzYWJsZS1wbGFpbnRleHQ=";
    let response = app
        .create_subscription(&json!({
            "id": "sub_sealed",
            "url": "https://hooks.example.com/sealed",
            "event_types": ["*"],
            "secret": plaintext,
        }))
        .await;
    assert_eq!(
        response
            .headers()
            .get("Cache-Control")
            .and_then(|v| v.to_str().ok()),
        Some("no-store"),
        "an answer with a secret must not be cached"
    );
    let (status, created) = json_of(response).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["secret"], plaintext, "shown once, as given");

    let row = raw(&app, "sub_sealed").await;
    assert_eq!(row.secret, None, "the plaintext column stays empty");
    let sealed = row.sealed_secret.expect("a sealed secret");
    assert!(sealed.starts_with("v1:test:"), "{sealed}");
    for needle in [
        plaintext,
        "YS12ZXJ5LXJlY29nbmlzYWJsZS1wbGFpbnRleHQ",
        "a-very-recognisable",
    ] {
        assert!(
            !row.whole_row.contains(needle),
            "{needle:?} is in the stored row: {}",
            row.whole_row
        );
    }
    // Decryptable with the key, and only for this subscription.
    let keys = test_keyring();
    assert_eq!(keys.open("sub_sealed", &sealed).expect("opens"), plaintext);
    assert!(matches!(
        keys.open("sub_other", &sealed),
        Err(SealError::NotAuthentic(_))
    ));

    // A generated secret is sealed too.
    let created = app.subscribe("sub_generated", &["*"]).await;
    let generated = created["secret"].as_str().expect("a generated secret");
    let row = raw(&app, "sub_generated").await;
    assert!(!row.whole_row.contains(generated), "{}", row.whole_row);
    assert_eq!(
        keys.open("sub_generated", &row.sealed_secret.expect("sealed"))
            .expect("opens"),
        generated
    );
}

#[tokio::test]
async fn rotating_returns_the_new_secret_once_and_keeps_the_old_one_for_the_overlap() {
    let app = TestApp::spawn().await;
    let (status, _) = json_of(
        app.create_subscription(&json!({
            "id": "sub_rot",
            "url": "https://hooks.example.com/rot",
            "event_types": ["*"],
            "secret": "the-first-secret",
        }))
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);

    let before = Utc::now();
    let response = rotate(
        &app,
        "sub_rot",
        Some(json!({"secret": "the-second-secret", "overlap_secs": 3600})),
    )
    .await;
    assert_eq!(
        response
            .headers()
            .get("Cache-Control")
            .and_then(|v| v.to_str().ok()),
        Some("no-store")
    );
    let (status, rotated) = json_of(response).await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    assert_eq!(rotated["id"], "sub_rot");
    assert_eq!(rotated["secret"], "the-second-secret");
    let expires: DateTime<Utc> = rotated["previous_secret_expires_at"]
        .as_str()
        .expect("an expiry")
        .parse()
        .expect("RFC 3339");
    assert!(
        close_to(expires, before + chrono::Duration::hours(1)),
        "{expires}"
    );

    let row = raw(&app, "sub_rot").await;
    let keys = test_keyring();
    assert_eq!(
        keys.open("sub_rot", row.sealed_secret.as_deref().expect("sealed"))
            .expect("opens"),
        "the-second-secret"
    );
    assert_eq!(
        keys.open(
            "sub_rot",
            row.previous_sealed_secret.as_deref().expect("kept")
        )
        .expect("opens"),
        "the-first-secret"
    );
    assert_eq!(row.previous_secret_expires_at, Some(expires));
    assert!(!row.whole_row.contains("the-second"), "{}", row.whole_row);
    assert!(!row.whole_row.contains("the-first"), "{}", row.whole_row);

    // Never shown again.
    let (status, fetched) = json_of(app.get("/subscriptions/sub_rot").await).await;
    assert_eq!(status, StatusCode::OK);
    assert!(fetched.get("secret").is_none(), "{fetched}");
    assert_eq!(fetched["has_secret"], true);
}

#[tokio::test]
async fn rotating_without_a_body_generates_a_secret_and_uses_the_configured_overlap() {
    let app = TestApp::spawn_with(|s| s.secret_rotation_overlap = Duration::from_secs(120)).await;
    app.subscribe("sub_gen", &["*"]).await;

    let before = Utc::now();
    let (status, rotated) = json_of(rotate(&app, "sub_gen", None).await).await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let secret = rotated["secret"].as_str().expect("a secret");
    assert!(
        secret.starts_with("whsec_") && secret.len() > 30,
        "{secret}"
    );
    let expires: DateTime<Utc> = rotated["previous_secret_expires_at"]
        .as_str()
        .expect("an expiry")
        .parse()
        .expect("RFC 3339");
    assert!(
        close_to(expires, before + chrono::Duration::seconds(120)),
        "{expires}"
    );

    // `{}` is the same as no body; each rotation makes a new secret.
    let (status, again) = json_of(rotate(&app, "sub_gen", Some(json!({}))).await).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_ne!(again["secret"], rotated["secret"]);

    // A zero overlap drops the old secret at once.
    let (status, at_once) =
        json_of(rotate(&app, "sub_gen", Some(json!({"overlap_secs": 0}))).await).await;
    assert_eq!(status, StatusCode::OK, "{at_once}");
    assert_eq!(at_once["previous_secret_expires_at"], Value::Null);
    let row = raw(&app, "sub_gen").await;
    assert_eq!(row.previous_sealed_secret, None);
    assert_eq!(
        test_keyring()
            .open("sub_gen", row.sealed_secret.as_deref().expect("sealed"))
            .expect("opens"),
        at_once["secret"].as_str().expect("a secret")
    );
}

#[tokio::test]
async fn rotating_an_unknown_or_deleted_subscription_is_404_and_needs_a_key() {
    let app = TestApp::spawn().await;
    app.subscribe("sub_gone", &["*"]).await;
    app.unsubscribe("sub_gone").await;
    for id in ["sub_missing", "sub_gone", "not%20an%20id"] {
        assert_error(
            rotate(&app, id, None).await,
            StatusCode::NOT_FOUND,
            "not_found",
            None,
        )
        .await;
    }

    app.subscribe("sub_kept", &["*"]).await;
    let before = raw(&app, "sub_kept").await.sealed_secret;
    let anonymous = reqwest::Client::new()
        .post(app.url("/subscriptions/sub_kept/rotate-secret"))
        .send()
        .await
        .expect("an answer");
    assert_error(anonymous, StatusCode::UNAUTHORIZED, "unauthorized", None).await;
    assert_eq!(
        raw(&app, "sub_kept").await.sealed_secret,
        before,
        "nothing changed"
    );
}

#[tokio::test]
async fn a_bad_rotation_body_is_refused_naming_the_field_and_changes_nothing() {
    let app = TestApp::spawn().await;
    app.subscribe("sub_bad", &["*"]).await;
    let before = raw(&app, "sub_bad").await.sealed_secret;

    let malformed = app
        .post_raw(
            "/subscriptions/sub_bad/rotate-secret",
            "{\"secret\": ",
            Some("application/json"),
        )
        .await;
    assert_error(malformed, StatusCode::BAD_REQUEST, "malformed_json", None).await;
    let wrong_type = app
        .post_raw(
            "/subscriptions/sub_bad/rotate-secret",
            "secret=x",
            Some("application/x-www-form-urlencoded"),
        )
        .await;
    assert_error(
        wrong_type,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        None,
    )
    .await;
    for (body, field) in [
        (json!({"overlap_secs": -5}), "overlap_secs"),
        (json!({"overlap_secs": 2_592_001}), "overlap_secs"),
        (json!({"overlap_secs": "3600"}), "overlap_secs"),
        (json!({"secret": ""}), "secret"),
        (json!({"secret": "whsec_c2hvcnQ="}), "secret"),
        (json!({"secret": "tab\there"}), "secret"),
        (json!({"secret": "x", "extra": 1}), "extra"),
        (json!(["not", "an", "object"]), "body"),
    ] {
        assert_error(
            rotate(&app, "sub_bad", Some(body)).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            Some(field),
        )
        .await;
    }
    assert_eq!(raw(&app, "sub_bad").await.sealed_secret, before);
}
