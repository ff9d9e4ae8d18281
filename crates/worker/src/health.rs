//! The worker's own small HTTP server: `/healthz` (alive), `/readyz` (database reachable and
//! migrated, LISTEN connection up), for Kubernetes probes, and `/metrics` (Prometheus).

use std::convert::Infallible;
use std::net::SocketAddr;

use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

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
        "/healthz" => json(StatusCode::OK, r#"{"status":"ok"}"#.to_owned()),
        "/metrics" => {
            if let Err(e) = worker.observe().await {
                tracing::debug!(error = %e, "backlog gauges not refreshed for this scrape");
            }
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
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let worker = worker.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| handle(worker.clone(), req));
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    };
    Ok((bound, server))
}
