//! The worker's own small HTTP server: `/healthz` (alive: the delivery loop makes progress),
//! `/readyz` (database reachable and migrated, LISTEN connection up), for Kubernetes probes, and
//! `/metrics` (Prometheus, from values the loop already has: a scrape never queries the
//! database). Bounded so that clients holding connections cannot starve the probes nor take the
//! descriptors deliveries need: it always accepts (so the kernel's listen queue never fills),
//! serves at most [`MAX_CONNECTIONS`] at once and closes the rest at once, gives a client
//! [`FIRST_BYTE_TIMEOUT`] to start and [`HEAD_TIMEOUT`] to finish a request head, keeps a
//! connection at most [`CONNECTION_LIFETIME`], and pauses after a failed accept (such as "too
//! many open files") instead of spinning.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Connections served at once (Prometheus and the kubelet need a handful); more are closed as
/// soon as they are accepted.
pub const MAX_CONNECTIONS: usize = 256;
/// How long a client may take to send its first byte.
pub const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a client may take to send a whole request head.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest one connection (keep-alive included) is kept.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);

use crate::runner::Worker;
use dispatch_store::{pool, queries};

fn json(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

async fn readiness(worker: &Worker) -> Result<(), String> {
    let mut conn = pool::connection(worker.pool())
        .await
        .map_err(|e| e.to_string())?;
    match queries::health::check_ready(&mut conn).await {
        Ok(true) => {}
        Ok(false) => return Err("database migrations are pending".to_owned()),
        Err(e) => return Err(e.to_string()),
    }
    if !worker.is_listening() {
        return Err("the LISTEN connection is down".to_owned());
    }
    Ok(())
}

async fn handle(
    worker: Worker,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(match req.uri().path() {
        "/healthz" => match worker.stalled_for() {
            None => json(StatusCode::OK, r#"{"status":"ok"}"#.to_owned()),
            Some(stalled) => json(
                StatusCode::SERVICE_UNAVAILABLE,
                serde_json::json!({
                    "code": "stalled",
                    "message": format!(
                        "the delivery loop has made no progress for {} s",
                        stalled.as_secs()
                    ),
                })
                .to_string(),
            ),
        },
        "/metrics" => {
            // The database-backed gauges are refreshed by the loop's heartbeat; a scrape only
            // reads what is in memory.
            worker.observe_local();
            let mut response = Response::new(Full::new(Bytes::from(
                dispatch_telemetry::metrics::install().render(),
            )));
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            response
        }
        "/readyz" => match readiness(&worker).await {
            Ok(()) => json(StatusCode::OK, r#"{"status":"ready"}"#.to_owned()),
            Err(reason) => json(
                StatusCode::SERVICE_UNAVAILABLE,
                serde_json::json!({"code": "not_ready", "message": format!("not ready: {reason}")})
                    .to_string(),
            ),
        },
        _ => json(
            StatusCode::NOT_FOUND,
            r#"{"code":"not_found","message":"no such route"}"#.to_owned(),
        ),
    })
}

/// Binds `addr` and returns the bound address and the serving future.
pub async fn serve(
    addr: SocketAddr,
    worker: Worker,
) -> std::io::Result<(SocketAddr, impl std::future::Future<Output = ()>)> {
    dispatch_telemetry::metrics::register_worker_series();
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let server = async move {
        let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let mut backoff = Duration::from_millis(10);
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => {
                    backoff = Duration::from_millis(10);
                    stream
                }
                Err(e) => {
                    // Out of descriptors, or the like: wait instead of spinning on the error.
                    tracing::warn!(error = %e, wait_ms = backoff.as_millis() as u64, "accepting a health/metrics connection failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            };
            // Past the cap, close at once: the listen queue keeps moving, so a probe that
            // arrives once the slow clients' time is up gets through.
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                drop(stream);
                continue;
            };
            let worker = worker.clone();
            tokio::spawn(async move {
                // The first bytes within the head timeout too: a client that connects and says
                // nothing would otherwise hold its slot (the protocol sniffing waits for ever).
                let mut first = [0u8; 1];
                match tokio::time::timeout(FIRST_BYTE_TIMEOUT, stream.peek(&mut first)).await {
                    Ok(Ok(n)) if n > 0 => {}
                    _ => return,
                }
                let service = service_fn(move |req| handle(worker.clone(), req));
                let mut builder = auto::Builder::new(TokioExecutor::new());
                builder
                    .http1()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEAD_TIMEOUT);
                let connection = builder.serve_connection(TokioIo::new(stream), service);
                let _ = tokio::time::timeout(CONNECTION_LIFETIME, connection).await;
                drop(permit);
            });
        }
    };
    Ok((bound, server))
}
