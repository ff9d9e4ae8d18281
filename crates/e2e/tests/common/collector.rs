//! A test OTLP/HTTP collector on 127.0.0.1 (a tiny hyper server decoding the protobuf export
//! requests) and the process's telemetry exporting to it.
//!
//! The process has one global subscriber and tracer provider, exporting to one collector: both
//! are set up once (on a thread of their own, so they outlive each test's runtime) and tests tell
//! their spans apart by trace id.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dispatch_telemetry::{LogFormat, TelemetryGuard, TraceParent};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode as SpanStatus;
use prost::Message;

pub const PATIENCE: Duration = Duration::from_secs(30);
pub const SERVICE: &str = "dispatch-tracing-test";

/// A span as the collector received it (ids in lowercase hex, as in `traceparent`).
#[derive(Debug, Clone)]
pub struct ExportedSpan {
    pub name: String,
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    pub service: String,
    pub attributes: HashMap<String, String>,
    pub kind: SpanKind,
    /// The span's status is ERROR.
    pub error: bool,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn value_text(kv: &KeyValue) -> String {
    match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(AnyValue::StringValue(s)) => s.clone(),
        Some(AnyValue::IntValue(i)) => i.to_string(),
        Some(AnyValue::BoolValue(b)) => b.to_string(),
        Some(AnyValue::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

fn spans_of(request: ExportTraceServiceRequest) -> Vec<ExportedSpan> {
    let mut out = Vec::new();
    for resource_spans in request.resource_spans {
        let service = resource_spans
            .resource
            .iter()
            .flat_map(|r| r.attributes.iter())
            .find(|kv| kv.key == "service.name")
            .map(value_text)
            .unwrap_or_default();
        for scope_spans in resource_spans.scope_spans {
            for span in scope_spans.spans {
                out.push(ExportedSpan {
                    name: span.name.clone(),
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    service: service.clone(),
                    attributes: span
                        .attributes
                        .iter()
                        .map(|kv| (kv.key.clone(), value_text(kv)))
                        .collect(),
                    kind: span.kind(),
                    error: span
                        .status
                        .as_ref()
                        .is_some_and(|s| s.code() == SpanStatus::Error),
                });
            }
        }
    }
    out
}

/// The test OTLP/HTTP receiver: `POST /v1/traces` with an `application/x-protobuf`
/// `ExportTraceServiceRequest`, answered with an empty `ExportTraceServiceResponse`.
struct Collector {
    addr: SocketAddr,
    spans: Arc<Mutex<Vec<ExportedSpan>>>,
}

async fn handle(
    request: Request<Incoming>,
    spans: Arc<Mutex<Vec<ExportedSpan>>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let reply = |status: StatusCode, body: Vec<u8>| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/x-protobuf"),
        );
        Ok(response)
    };
    if request.method() != Method::POST || request.uri().path() != "/v1/traces" {
        return reply(StatusCode::NOT_FOUND, Vec::new());
    }
    let body = match request.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => return reply(StatusCode::BAD_REQUEST, Vec::new()),
    };
    match ExportTraceServiceRequest::decode(body) {
        Ok(export) => {
            spans.lock().unwrap().extend(spans_of(export));
            reply(
                StatusCode::OK,
                ExportTraceServiceResponse::default().encode_to_vec(),
            )
        }
        Err(_) => reply(StatusCode::BAD_REQUEST, Vec::new()),
    }
}

impl Collector {
    /// Serves on a free port of 127.0.0.1 from a thread (and runtime) of its own.
    fn start() -> Self {
        let spans = Arc::new(Mutex::new(Vec::new()));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::clone(&spans);
        std::thread::Builder::new()
            .name("otlp-collector".to_owned())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                    loop {
                        let Ok((stream, _)) = listener.accept().await else {
                            continue;
                        };
                        let spans = Arc::clone(&shared);
                        tokio::spawn(async move {
                            let service =
                                service_fn(move |request| handle(request, Arc::clone(&spans)));
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        });
                    }
                });
            })
            .unwrap();
        Self { addr, spans }
    }

    fn spans_in(&self, trace_id: &str) -> Vec<ExportedSpan> {
        self.spans
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.trace_id == trace_id)
            .cloned()
            .collect()
    }
}

pub struct Telemetry {
    collector: Collector,
    guard: TelemetryGuard,
}

/// The process's collector and telemetry, exporting to it (set up by the first test to ask).
pub fn telemetry() -> &'static Telemetry {
    static TELEMETRY: OnceLock<Telemetry> = OnceLock::new();
    TELEMETRY.get_or_init(|| {
        let collector = Collector::start();
        let endpoint = format!("http://{}/v1/traces", collector.addr);
        let guard = dispatch_telemetry::init_with_endpoint(SERVICE, LogFormat::Text, &endpoint);
        assert!(guard.is_exporting(), "spans are exported to {endpoint}");
        Telemetry { collector, guard }
    })
}

impl Telemetry {
    /// Exports every finished span (blocking, so off the runtime's threads), then waits until
    /// the collector holds spans named `names` in `trace_id`, and returns that trace's spans.
    pub async fn trace(&'static self, trace_id: &str, names: &[&str]) -> Vec<ExportedSpan> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            tokio::task::spawn_blocking(move || self.guard.force_flush())
                .await
                .unwrap()
                .unwrap();
            let spans = self.collector.spans_in(trace_id);
            if names.iter().all(|n| spans.iter().any(|s| s.name == *n)) {
                return spans;
            }
            assert!(
                Instant::now() < deadline,
                "trace {trace_id} lacks some of {names:?}: {spans:#?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

pub fn the<'a>(spans: &'a [ExportedSpan], name: &str) -> &'a ExportedSpan {
    let named: Vec<&ExportedSpan> = spans.iter().filter(|s| s.name == name).collect();
    assert_eq!(named.len(), 1, "one {name} span expected: {spans:#?}");
    named[0]
}

/// SplitMix64: spreads a counter over all 64 bits.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A fresh producer context: ids made from the clock, the process and a counter, never zero.
pub fn producer_traceparent() -> TraceParent {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let seed = nanos ^ (u64::from(std::process::id()) << 32) ^ n;
    let (high, low, span) = (mix(seed), mix(seed ^ 1), mix(seed ^ 2) | 1);
    TraceParent::parse(&format!("00-{high:016x}{low:016x}-{span:016x}-01")).unwrap()
}
