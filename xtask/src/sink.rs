//! `cargo xtask sink`: a local webhook receiver for trying Dispatch out. It prints every delivery
//! it gets and whether each signature verifies against the secret it was given.

use std::convert::Infallible;
use std::net::SocketAddr;

use anyhow::{Context, Result};
use dispatch_domain::signature::SigningKey;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

/// How far a `webhook-timestamp` may be from now before the sink calls it stale (as the
/// Standard Webhooks libraries do).
const TOLERANCE_SECS: i64 = 300;

fn header<'a>(req: &'a Request<Incoming>, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

fn verdict(expected: Option<String>, got: Option<&str>) -> &'static str {
    match (expected, got) {
        (_, None) => "absent",
        (None, Some(_)) => "not checked (start the sink with --secret)",
        // Standard Webhooks allows several space-separated signatures.
        (Some(want), Some(got)) if got.split(' ').any(|g| g == want) => "valid",
        (Some(_), Some(_)) => "INVALID",
    }
}

async fn handle(
    key: Option<SigningKey>,
    status: StatusCode,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_owned();
    let event_id = header(&req, "x-dispatch-event-id")
        .unwrap_or("-")
        .to_owned();
    let event_type = header(&req, "x-dispatch-event-type")
        .unwrap_or("-")
        .to_owned();
    let seed_sig = header(&req, "x-dispatch-signature").map(str::to_owned);
    let webhook_id = header(&req, "webhook-id").unwrap_or("").to_owned();
    let timestamp = header(&req, "webhook-timestamp").and_then(|t| t.parse::<i64>().ok());
    let std_sig = header(&req, "webhook-signature").map(str::to_owned);
    let body = match req.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => {
            println!("! {path}: could not read the body: {e}");
            return Ok(Response::new(Full::new(Bytes::new())));
        }
    };
    let seed = verdict(
        key.as_ref().map(|k| k.dispatch_signature(&body)),
        seed_sig.as_deref(),
    );
    let standard = verdict(
        key.as_ref()
            .zip(timestamp)
            .map(|(k, t)| k.standard_signature(&webhook_id, t, &body)),
        std_sig.as_deref(),
    );
    let age = timestamp.map(|t| chrono::Utc::now().timestamp() - t);
    let fresh = match age {
        Some(a) if a.abs() <= TOLERANCE_SECS => "fresh",
        Some(_) => "STALE",
        None => "no timestamp",
    };
    println!(
        "<- {path} event={event_id} type={event_type}\n   X-Dispatch-Signature: {seed}\n   \
         webhook-signature: {standard} (timestamp {fresh})\n   body: {}",
        String::from_utf8_lossy(&body)
    );
    let mut response = Response::new(Full::new(Bytes::from_static(b"ok")));
    *response.status_mut() = status;
    Ok(response)
}

pub async fn run(addr: SocketAddr, secret: Option<String>, status: u16) -> Result<bool> {
    let key = secret
        .map(|s| SigningKey::from_secret(&s))
        .transpose()
        .map_err(|e| anyhow::anyhow!("--secret: {e}"))?;
    let status = StatusCode::from_u16(status).context("--status must be an HTTP status")?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    println!(
        "sink: listening on http://{} (answering {status}); point a subscription at it, e.g. \
         http://127.0.0.1:{}/webhook",
        listener.local_addr()?,
        listener.local_addr()?.port()
    );
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = accepted?;
                let key = key.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| handle(key.clone(), status, req));
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            _ = tokio::signal::ctrl_c() => return Ok(true),
        }
    }
}
