//! `/healthz` and `/readyz`.

use dispatch_store::admin;
use dispatch_test_support::{TEST_DB_PREFIX, admin_url};
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{TestApp, assert_error, client, json_of, settings_for, start_server};

#[tokio::test]
async fn healthz_answers_200_ok() {
    let app = TestApp::spawn().await;
    let (status, body) = json_of(app.get("/healthz").await).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"status": "ok"}));
}

#[tokio::test]
async fn readyz_answers_200_on_a_migrated_database() {
    let app = TestApp::spawn().await;
    let (status, body) = json_of(app.get("/readyz").await).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({"status": "ready"}));
}

/// A database without any migration, dropped when the guard goes (also when the test fails).
struct BareDb {
    name: String,
}

impl BareDb {
    async fn create() -> Self {
        let name = format!(
            "{TEST_DB_PREFIX}bare_{}_{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0)
        );
        let mut conn = admin::connect(&admin_url())
            .await
            .expect("admin connection");
        admin::create_database(&mut conn, &name, None)
            .await
            .expect("create a bare database");
        Self { name }
    }

    fn url(&self) -> String {
        admin::url_with_database(&admin_url(), &self.name)
    }
}

impl Drop for BareDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs inside the test's runtime: drop the database from a thread of its own.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async {
                let mut conn = admin::connect(&admin_url())
                    .await
                    .map_err(|e| e.to_string())?;
                admin::drop_database(&mut conn, &name)
                    .await
                    .map_err(|e| e.to_string())
            })
        })
        .join();
        if let Ok(Err(e)) = dropped {
            eprintln!("warning: could not drop {}: {e}", self.name);
        }
    }
}

#[tokio::test]
async fn readyz_answers_503_not_ready_on_a_database_without_migrations_while_healthz_stays_200() {
    let bare = BareDb::create().await;
    let mut settings = settings_for(dispatch_store::DatabaseSettings {
        url: bare.url().into(),
        max_connections: 2,
        connect_timeout: std::time::Duration::from_secs(5),
    });
    settings.http_workers = 1;
    let base = start_server(&settings);
    let client = client();

    let response = client
        .get(format!("{base}/readyz"))
        .send()
        .await
        .expect("answered");
    let body = assert_error(response, StatusCode::SERVICE_UNAVAILABLE, "not_ready", None).await;
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("migrat")),
        "the message points at the migrations: {body}"
    );

    let response = client
        .get(format!("{base}/healthz"))
        .send()
        .await
        .expect("answered");
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn with_the_database_unreachable_the_api_starts_readyz_is_503_and_writes_are_503_with_retry_after()
 {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let app = TestApp::spawn_with(|s| {
        s.database.url =
            format!("postgres://postgres@127.0.0.1:{port}/dispatch?sslmode=disable").into();
        s.database.connect_timeout = std::time::Duration::from_millis(500);
    })
    .await;

    let (status, _) = json_of(app.get("/healthz").await).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the process answers without its database"
    );
    assert_error(
        app.get("/readyz").await,
        StatusCode::SERVICE_UNAVAILABLE,
        "not_ready",
        None,
    )
    .await;

    let response = app
        .post_event(&crate::helpers::event("evt_down", "order.created"))
        .await;
    assert_eq!(
        response
            .headers()
            .get("Retry-After")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    assert_error(
        response,
        StatusCode::SERVICE_UNAVAILABLE,
        "database_unavailable",
        None,
    )
    .await;
    for response in [
        app.get("/events/evt_down").await,
        app.get("/events/evt_down/attempts").await,
        app.get("/subscriptions").await,
        app.get("/subscriptions/sub_x").await,
        app.delete("/subscriptions/sub_x").await,
        app.create_subscription(&json!({"url": "https://example.com/", "event_types": ["*"]}))
            .await,
    ] {
        assert!(response.headers().contains_key("Retry-After"));
        assert_error(
            response,
            StatusCode::SERVICE_UNAVAILABLE,
            "database_unavailable",
            None,
        )
        .await;
    }
    // Validation does not need the database: bad input is still told apart from an outage.
    assert_error(
        app.post_event(&json!({"id": "evt_1"})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
        Some("type"),
    )
    .await;
}

#[tokio::test]
async fn the_binary_migrates_with_only_a_database_url() {
    let bare = BareDb::create().await;
    let run = |action: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_dispatch-api"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", bare.url())
            .args(["migrate", action])
            .output()
            .expect("dispatch-api runs")
    };
    // No DISPATCH_API_KEYS, no DISPATCH_SECRET_KEYS: a migration job has neither.
    let up = run("up");
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    let status = run("status");
    let listed = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success(), "{listed}");
    assert!(listed.lines().count() >= 10, "{listed}");
    assert!(listed.lines().all(|l| l.starts_with("[x]")), "{listed}");
}
