//! Outbound HTTP: one pooled hyper client (keep-alive, HTTP/1.1 and HTTP/2 by ALPN, rustls with
//! the ring provider and webpki roots) that sends one attempt and classifies what happened.
//! Redirects are never followed: a 3xx is a failed attempt like any other non-2xx.

use std::error::Error as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::net::SocketAddr;

use dispatch_domain::destination::{DestinationPolicy, Refusal};
use dispatch_domain::retry::{AttemptResult, FailureCode};
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::rt::TokioExecutor;

type Connector = hyper_rustls::HttpsConnector<HttpConnector<GuardedResolver>>;

/// The error a refused destination fails its connection with (found again by `classify`).
#[derive(Debug)]
pub struct DestinationRefused {
    pub address: std::net::IpAddr,
    pub reason: Refusal,
}

impl std::fmt::Display for DestinationRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "destination refused: {} is a {} address (allow it with DISPATCH_ALLOW_DESTINATIONS)",
            self.address, self.reason
        )
    }
}

impl std::error::Error for DestinationRefused {}

/// The system resolver, keeping only the addresses the destination policy allows: the check
/// happens on the addresses actually connected to, so DNS rebinding cannot get around it.
#[derive(Clone)]
pub struct GuardedResolver {
    policy: Arc<DestinationPolicy>,
}

impl tower::Service<Name> for GuardedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = std::io::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let policy = self.policy.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refused = None;
            let allowed: Vec<SocketAddr> = resolved
                .into_iter()
                .filter(|a| match policy.check(a.ip()) {
                    Ok(()) => true,
                    Err(reason) => {
                        refused.get_or_insert(DestinationRefused {
                            address: a.ip(),
                            reason,
                        });
                        false
                    }
                })
                .collect();
            match (allowed.is_empty(), refused) {
                (true, Some(refused)) => Err(std::io::Error::other(refused)),
                _ => Ok(allowed.into_iter()),
            }
        })
    }
}

/// What one attempt produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    pub result: AttemptResult,
    pub latency: Duration,
    /// The first bytes of the response body (lossy UTF-8), if any.
    pub body: Option<String>,
    /// A short human description of a failure.
    pub error: Option<String>,
}

impl Sent {
    /// Whether the destination answered 2xx.
    pub fn is_success(&self) -> bool {
        matches!(self.result, AttemptResult::Response { status, .. } if (200..300).contains(&status))
    }
}

/// A request extension: this request's own timeout (a subscription's `timeout_ms`), capped
/// at the client's, on which the lease is sized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestTimeout(pub Duration);

#[derive(Clone)]
pub struct WebhookClient {
    client: Client<Connector, Full<Bytes>>,
    /// Also checked here: a URL with an IP-literal host never reaches the resolver.
    policy: Arc<DestinationPolicy>,
    timeout: Duration,
    max_response_bytes: usize,
    stored_response_bytes: usize,
}

impl WebhookClient {
    pub fn new(
        policy: DestinationPolicy,
        timeout: Duration,
        connect_timeout: Duration,
        max_response_bytes: usize,
        stored_response_bytes: usize,
    ) -> Result<Self, rustls::Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let policy = Arc::new(policy);
        let mut http = HttpConnector::new_with_resolver(GuardedResolver {
            policy: policy.clone(),
        });
        http.enforce_http(false);
        http.set_connect_timeout(Some(connect_timeout));
        http.set_nodelay(true);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(provider)?
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(32)
            .build(https);
        Ok(Self {
            client,
            policy,
            timeout,
            max_response_bytes,
            stored_response_bytes,
        })
    }

    /// Sends the request and reads up to the response cap, all within the timeout.
    pub async fn send(&self, request: Request<Full<Bytes>>) -> Sent {
        let literal = request
            .uri()
            .host()
            .map(|h| h.trim_start_matches('[').trim_end_matches(']'))
            .and_then(|h| h.parse::<std::net::IpAddr>().ok());
        if let Some(address) = literal
            && let Err(reason) = self.policy.check(address)
        {
            return Sent {
                result: AttemptResult::Failed(FailureCode::DestinationRefused),
                latency: Duration::ZERO,
                body: None,
                error: Some(DestinationRefused { address, reason }.to_string()),
            };
        }
        let timeout = request
            .extensions()
            .get::<RequestTimeout>()
            .map_or(self.timeout, |own| own.0.min(self.timeout));
        let started = Instant::now();
        let outcome = tokio::time::timeout(timeout, async {
            let response = self.client.request(request).await?;
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get(http::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let body = read_capped(response.into_body(), self.max_response_bytes).await;
            Ok::<_, hyper_util::client::legacy::Error>((status, retry_after, body))
        })
        .await;
        let latency = started.elapsed();
        match outcome {
            Ok(Ok((status, retry_after, body))) => Sent {
                result: AttemptResult::Response {
                    status,
                    retry_after,
                },
                latency,
                body: (!body.is_empty()).then(|| {
                    let kept = &body[..body.len().min(self.stored_response_bytes)];
                    String::from_utf8_lossy(kept).into_owned()
                }),
                error: (!(200..300).contains(&status)).then(|| format!("HTTP {status}")),
            },
            Ok(Err(e)) => Sent {
                result: AttemptResult::Failed(classify(&e)),
                latency,
                body: None,
                error: Some(describe(&e)),
            },
            Err(_) => Sent {
                result: AttemptResult::Failed(FailureCode::Timeout),
                latency,
                body: None,
                error: Some(format!(
                    "no complete answer within {} ms",
                    timeout.as_millis()
                )),
            },
        }
    }
}

/// Reads the body up to `cap` bytes; the rest is dropped (and with it the connection).
async fn read_capped(mut body: hyper::body::Incoming, cap: usize) -> Vec<u8> {
    let mut out = Vec::new();
    while out.len() < cap {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    let take = data.len().min(cap - out.len());
                    out.extend_from_slice(&data[..take]);
                }
            }
            // A body cut short after a complete status line still counts as answered.
            Some(Err(_)) | None => break,
        }
    }
    out
}

fn chain(e: &hyper_util::client::legacy::Error) -> Vec<&(dyn std::error::Error + 'static)> {
    let mut sources = Vec::new();
    let mut current = e.source();
    while let Some(source) = current {
        sources.push(source);
        current = source.source();
    }
    sources
}

/// Maps a client error onto the closed set of failure codes.
fn classify(e: &hyper_util::client::legacy::Error) -> FailureCode {
    let is_tls = |s: &(dyn std::error::Error + 'static)| {
        s.is::<rustls::Error>()
            || s.downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .is_some_and(|inner| inner.is::<rustls::Error>())
    };
    let is_refused = |s: &(dyn std::error::Error + 'static)| {
        s.is::<DestinationRefused>()
            || s.downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .is_some_and(|inner| inner.is::<DestinationRefused>())
    };
    if chain(e).into_iter().any(is_refused) {
        return FailureCode::DestinationRefused;
    }
    if chain(e).into_iter().any(is_tls) {
        return FailureCode::Tls;
    }
    if e.is_connect()
        || chain(e).into_iter().any(|s| {
            s.downcast_ref::<hyper::Error>()
                .is_some_and(|h| h.is_closed() || h.is_incomplete_message() || h.is_canceled())
                || s.downcast_ref::<std::io::Error>().is_some()
        })
    {
        return FailureCode::Connection;
    }
    FailureCode::Request
}

fn describe(e: &hyper_util::client::legacy::Error) -> String {
    let mut text = e.to_string();
    for source in chain(e) {
        text.push_str(": ");
        text.push_str(&source.to_string());
    }
    text.chars().take(500).collect()
}
