//! The HTTP client the harness talks to the services with: pooled HTTP/1.1 keep-alive
//! connections (or none: [`client`]`(0)`), `GET` for health checks (timed: [`timed_get`]) and,
//! with the API key, for lists ([`get_authorized`]), and `POST` of JSON with the API key.

use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

pub fn client(max_idle: usize) -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(max_idle)
        .build(connector)
}

/// The status of `GET url`, if it answered in time.
pub async fn get_status(client: &HttpClient, url: &str) -> Option<StatusCode> {
    let req = Request::get(url).body(Full::new(Bytes::new())).ok()?;
    status_of(client, req, Duration::from_secs(2)).await
}

/// `GET url` with everything (the answer's body too) within `timeout`: its status (`None`: no
/// full answer in time) and how long it took. With a client of [`client`]`(0)` every request
/// opens a connection of its own, as a kubelet's probe does.
pub async fn timed_get(
    client: &HttpClient,
    url: &str,
    timeout: Duration,
) -> (Option<StatusCode>, Duration) {
    let started = std::time::Instant::now();
    let status = match Request::get(url).body(Full::new(Bytes::new())) {
        Ok(req) => tokio::time::timeout(timeout, status_of(client, req, timeout))
            .await
            .ok()
            .flatten(),
        Err(_) => None,
    };
    (status, started.elapsed())
}

/// Sends `req` and reads the answer to the end (so the connection goes back to the pool);
/// its status, or `None` when no answer came within `timeout`.
async fn status_of(
    client: &HttpClient,
    req: Request<Full<Bytes>>,
    timeout: Duration,
) -> Option<StatusCode> {
    let res = tokio::time::timeout(timeout, client.request(req))
        .await
        .ok()?
        .ok()?;
    let status = res.status();
    let _ = res.into_body().collect().await;
    Some(status)
}

/// A `POST url` of a JSON `body` with `Authorization: Bearer <api_key>`.
fn json_post(url: &str, api_key: &str, body: String) -> Option<Request<Full<Bytes>>> {
    Request::builder()
        .method(Method::POST)
        .uri(url)
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {api_key}"))
        .body(Full::new(Bytes::from(body)))
        .ok()
}

/// Like [`post_json`], with the answer's body too.
pub async fn post_json_answer(
    client: &HttpClient,
    url: &str,
    api_key: &str,
    body: String,
    timeout: Duration,
) -> Option<(StatusCode, Bytes)> {
    let req = json_post(url, api_key, body)?;
    let answer = async {
        let res = client.request(req).await.ok()?;
        let status = res.status();
        let body = res.into_body().collect().await.ok()?.to_bytes();
        Some((status, body))
    };
    tokio::time::timeout(timeout, answer).await.ok()?
}

/// `GET url` with `Authorization: Bearer <api_key>`: the answer's status and body, or `None`
/// when no full answer came within `timeout` (or the connection failed).
pub async fn get_authorized(
    client: &HttpClient,
    url: &str,
    api_key: &str,
    timeout: Duration,
) -> Option<(StatusCode, Bytes)> {
    let req = Request::get(url)
        .header("authorization", format!("Bearer {api_key}"))
        .body(Full::new(Bytes::new()))
        .ok()?;
    let answer = async {
        let res = client.request(req).await.ok()?;
        let status = res.status();
        let body = res.into_body().collect().await.ok()?.to_bytes();
        Some((status, body))
    };
    tokio::time::timeout(timeout, answer).await.ok()?
}

/// `POST url` with a JSON `body` and `Authorization: Bearer <api_key>`: the answer's status, or
/// `None` when no answer came within `timeout` (or the connection failed).
pub async fn post_json(
    client: &HttpClient,
    url: &str,
    api_key: &str,
    body: String,
    timeout: Duration,
) -> Option<StatusCode> {
    let req = json_post(url, api_key, body)?;
    status_of(client, req, timeout).await
}
