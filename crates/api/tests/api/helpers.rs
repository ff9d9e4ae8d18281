//! The harness: a real server on `127.0.0.1:<free port>` over a database of its own, and a
//! client with shorthands for the routes.

use std::collections::HashMap;
use std::time::Duration;

use dispatch_api::{Application, Settings};
use dispatch_store::models::NewAttempt;
use dispatch_store::pool;
use dispatch_store::queries::{attempts, events};
use dispatch_test_support::TestDb;
use dispatch_test_support::secrets::TEST_SECRET_KEYS;
use reqwest::{Client, Response, StatusCode};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const DEFAULT_MAX_BODY_BYTES: usize = 256 * 1024;

/// Settings for a server on a free port of 127.0.0.1 over `database`: one HTTP worker, text logs,
/// a short shutdown, and every other key at its default (loaded through the real configuration
/// code, so keys added later need no change here).
pub fn settings_for(database: dispatch_store::DatabaseSettings) -> Settings {
    let env: HashMap<String, String> = [
        ("ADDR", "127.0.0.1:0"),
        ("DATABASE_URL", database.url.expose()),
        ("DISPATCH_HTTP_WORKERS", "1"),
        ("DISPATCH_SHUTDOWN_TIMEOUT_SECS", "1"),
        ("DISPATCH_LOG_FORMAT", "text"),
        ("DISPATCH_API_KEYS", TEST_API_KEY),
        ("DISPATCH_SECRET_KEYS", TEST_SECRET_KEYS),
        // Test receivers live on loopback, which the SSRF check refuses by default.
        ("DISPATCH_ALLOW_DESTINATIONS", "127.0.0.0/8,::1"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let mut settings = Settings::load_from(None, &env).expect("test settings are valid");
    settings.database = database;
    settings.max_body_bytes = DEFAULT_MAX_BODY_BYTES;
    settings
}

/// Starts the API in-process and returns its base URL (`http://127.0.0.1:<port>`).
pub fn start_server(settings: &Settings) -> String {
    let app = Application::build(settings).expect("the server binds its listener");
    let port = app.port();
    tokio::spawn(app.run_until_stopped());
    format!("http://127.0.0.1:{port}")
}

/// The API key every test server accepts and every test client sends.
pub const TEST_API_KEY: &str = "test-api-key-0123456789";

/// A client that sends [`TEST_API_KEY`].
pub fn client() -> Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        reqwest::header::HeaderValue::from_static("Bearer test-api-key-0123456789"),
    );
    Client::builder()
        .default_headers(headers)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("a reqwest client")
}

/// A running API over a database of its own (dropped with it).
pub struct TestApp {
    pub base: String,
    pub client: Client,
    pub db: TestDb,
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    /// Like [`TestApp::spawn`], after `customise` had its say on the settings.
    pub async fn spawn_with(customise: impl FnOnce(&mut Settings)) -> Self {
        let db = TestDb::new().await;
        let mut settings = settings_for(db.settings());
        customise(&mut settings);
        let base = start_server(&settings);
        Self {
            base,
            client: client(),
            db,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get(&self, path: &str) -> Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("GET is answered")
    }

    pub async fn delete(&self, path: &str) -> Response {
        self.client
            .delete(self.url(path))
            .send()
            .await
            .expect("DELETE is answered")
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("POST is answered")
    }

    /// POSTs raw bytes with the given Content-Type (none when `None`).
    pub async fn post_raw(
        &self,
        path: &str,
        body: impl Into<reqwest::Body>,
        content_type: Option<&str>,
    ) -> Response {
        let mut request = self.client.post(self.url(path)).body(body);
        if let Some(content_type) = content_type {
            request = request.header("Content-Type", content_type);
        }
        request.send().await.expect("POST is answered")
    }

    pub async fn post_event(&self, body: &Value) -> Response {
        self.post_json("/events", body).await
    }

    pub async fn create_subscription(&self, body: &Value) -> Response {
        self.post_json("/subscriptions", body).await
    }

    /// Creates a subscription that must be accepted; returns the creation response's body.
    pub async fn subscribe(&self, id: &str, patterns: &[&str]) -> Value {
        let (status, body) = json_of(
            self.create_subscription(&json!({
                "id": id,
                "url": format!("https://hooks.example.com/{id}"),
                "event_types": patterns,
            }))
            .await,
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "subscription {id}: {body}");
        body
    }

    /// Deletes a subscription that must exist.
    pub async fn unsubscribe(&self, id: &str) {
        let response = self.delete(&format!("/subscriptions/{id}")).await;
        assert_eq!(response.status(), StatusCode::NO_CONTENT, "deleting {id}");
    }

    /// GET /events/{id}, which must answer 200.
    pub async fn event(&self, id: &str) -> Value {
        let (status, body) = json_of(self.get(&format!("/events/{id}")).await).await;
        assert_eq!(status, StatusCode::OK, "GET /events/{id}: {body}");
        body
    }

    /// Stores an attempt for the delivery of `event_id` to `subscription_id` (the delivery worker
    /// that would record them does not exist yet).
    pub async fn seed_attempt(
        &self,
        event_id: &str,
        subscription_id: &str,
        attempt: i32,
        status_code: Option<i32>,
        error: Option<&str>,
    ) {
        let pool = self.db.pool();
        let mut conn = pool::connection(&pool).await.expect("a connection");
        let delivery = events::deliveries_of(
            &mut conn,
            &dispatch_domain::TenantId::default_tenant(),
            event_id,
        )
        .await
        .expect("deliveries are readable")
        .into_iter()
        .find(|d| d.subscription_id == subscription_id)
        .unwrap_or_else(|| panic!("no delivery of {event_id} to {subscription_id}"));
        attempts::record(
            &mut conn,
            &[NewAttempt {
                delivery_id: delivery.id,
                event_id: event_id.to_owned(),
                subscription_id: subscription_id.to_owned(),
                attempt,
                status_code,
                latency_ms: 10 * attempt,
                error_code: error.map(|_| "http_status".to_owned()),
                error: error.map(str::to_owned),
                response_body: status_code.map(|c| format!("answered {c}")),
            }],
        )
        .await
        .expect("the attempt is stored");
    }
}

/// A valid event body.
pub fn event(id: &str, event_type: &str) -> Value {
    json!({
        "id": id,
        "type": event_type,
        "source": "billing-service",
        "data": {"amount": 42, "currency": "EUR", "lines": [{"sku": "a"}, {"sku": "b"}]},
    })
}

/// The status and JSON body of a response (panics on a body that is not JSON).
pub async fn json_of(response: Response) -> (StatusCode, Value) {
    let status = response.status();
    let text = response.text().await.expect("the body is readable");
    let body = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{status}: body is not JSON ({e}): {text:?}"));
    (status, body)
}

/// Asserts the API's error shape: status, `code`, a non-empty `message`, and `field` when given
/// (absent otherwise). Returns the body.
pub async fn assert_error(
    response: Response,
    status: StatusCode,
    code: &str,
    field: Option<&str>,
) -> Value {
    let content_type = response
        .headers()
        .get("Content-Type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let (actual, body) = json_of(response).await;
    assert_eq!(actual, status, "unexpected status; body: {body}");
    assert!(
        content_type.starts_with("application/json"),
        "errors are JSON, got Content-Type {content_type:?}"
    );
    assert_eq!(body["code"], code, "unexpected code in {body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "errors carry a message: {body}"
    );
    match field {
        Some(field) => assert_eq!(body["field"], field, "unexpected field in {body}"),
        None => assert!(body.get("field").is_none(), "no field expected in {body}"),
    }
    body
}

/// A raw HTTP/1.1 exchange (for what reqwest without its `stream` feature cannot send, such as a
/// chunked body): writes `head` then each of `chunks` in chunked encoding, reads until the server
/// closes, and returns the status and the body.
pub async fn raw_chunked_post(
    base: &str,
    path: &str,
    content_type: &str,
    chunks: &[&[u8]],
) -> (u16, String) {
    let authority = base.trim_start_matches("http://");
    let mut stream = TcpStream::connect(authority).await.expect("connect");
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: {content_type}\r\n\
         Authorization: Bearer {TEST_API_KEY}\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.expect("write head");
    for chunk in chunks {
        let framed = [format!("{:x}\r\n", chunk.len()).as_bytes(), chunk, b"\r\n"].concat();
        // The server may answer (and close) before reading everything: that is fine.
        if stream.write_all(&framed).await.is_err() {
            break;
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw).await;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status line in {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}
