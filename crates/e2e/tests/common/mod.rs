//! What the end-to-end tests share: the API in-process over a test database, and a worker over
//! the same database, both allowed to send to loopback (where the receivers listen).

#![allow(clippy::unwrap_used, dead_code)]

pub mod collector;

use std::collections::HashMap;
use std::time::Duration;

use dispatch_test_support::TestDb;
use dispatch_test_support::secrets::TEST_SECRET_KEYS;

/// The API in-process over `db` (as the API's own tests start it), and a client.
pub fn start_api(db: &TestDb, patience: Duration) -> (String, reqwest::Client) {
    start_api_with(db, patience, |_| {})
}

/// Like [`start_api`], with `edit` applied to the settings first.
pub fn start_api_with(
    db: &TestDb,
    patience: Duration,
    edit: impl FnOnce(&mut dispatch_api::Settings),
) -> (String, reqwest::Client) {
    let env: HashMap<String, String> = [
        ("ADDR", "127.0.0.1:0"),
        ("DATABASE_URL", db.url()),
        ("DISPATCH_HTTP_WORKERS", "1"),
        ("DISPATCH_SHUTDOWN_TIMEOUT_SECS", "1"),
        ("DISPATCH_LOG_FORMAT", "text"),
        ("DISPATCH_API_KEYS", "e2e-test-key-0123456789"),
        ("DISPATCH_SECRET_KEYS", TEST_SECRET_KEYS),
        // The receiver is on loopback, which the API refuses as a destination by default.
        ("DISPATCH_ALLOW_DESTINATIONS", "127.0.0.0/8"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let mut settings = dispatch_api::Settings::load_from(None, &env).unwrap();
    settings.database = db.settings();
    edit(&mut settings);
    let app = dispatch_api::Application::build(&settings).unwrap();
    let base = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped());
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        reqwest::header::HeaderValue::from_static("Bearer e2e-test-key-0123456789"),
    );
    let client = reqwest::Client::builder()
        .default_headers(headers)
        .timeout(patience)
        .build()
        .unwrap();
    (base, client)
}

/// A worker over `db` that may send to loopback.
pub fn worker(db: &TestDb) -> dispatch_worker::Worker {
    let env: HashMap<String, String> = [
        ("DISPATCH_DATABASE_URL", db.url()),
        ("ADDR", "127.0.0.1:0"),
        ("DISPATCH_WORKER_ID", "worker-t"),
        ("DISPATCH_LOG_FORMAT", "text"),
        ("DISPATCH_DB_MAX_CONNECTIONS", "2"),
        ("DISPATCH_REQUEST_TIMEOUT_MS", "10000"),
        ("DISPATCH_ALLOW_DESTINATIONS", "127.0.0.0/8"),
        ("DISPATCH_SECRET_KEYS", TEST_SECRET_KEYS),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let settings = dispatch_worker::Settings::load_from(None, &env).unwrap();
    dispatch_worker::Worker::new(&settings).unwrap()
}
