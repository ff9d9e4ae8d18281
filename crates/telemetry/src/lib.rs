//! Telemetry shared by Dispatch's binaries: structured logs through `tracing` (JSON for machines,
//! text for terminals), filtered by `RUST_LOG`; OpenTelemetry traces, exported over OTLP/HTTP
//! when the standard `OTEL_*` variables ask for it, with the W3C `traceparent` helpers
//! ([`trace`]); and the Prometheus metrics ([`metrics`]).

pub mod metrics;
pub mod trace;

pub use trace::{
    TRACEPARENT, TraceParent, current_trace_id, current_traceparent, extract_traceparent,
    set_parent, set_remote_parent, trace_id_of, trace_parent_of, traceparent_of,
};

use std::io::IsTerminal;
use std::str::FromStr;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line (for log collectors).
    Json,
    /// Human-readable lines.
    Text,
    /// Text when stderr is a terminal, JSON otherwise.
    Auto,
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "json" => Ok(Self::Json),
            "text" | "pretty" => Ok(Self::Text),
            "auto" => Ok(Self::Auto),
            other => Err(format!("expected json, text or auto, got {other:?}")),
        }
    }
}

/// Where spans go.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Export {
    /// Nowhere: spans still get ids (so traces propagate and logs name them), nothing is sent.
    Off,
    /// OTLP/HTTP protobuf, to the endpoint the standard `OTEL_EXPORTER_OTLP_*` variables name.
    FromEnv,
    /// OTLP/HTTP protobuf, to this traces URL (used verbatim, `/v1/traces` included).
    Endpoint(String),
}

/// Whether the standard variables ask for span export: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or
/// `OTEL_EXPORTER_OTLP_ENDPOINT` set and non-empty, unless `OTEL_SDK_DISABLED=true` or
/// `OTEL_TRACES_EXPORTER=none`.
fn export_from(var: impl Fn(&str) -> Option<String>) -> Export {
    let set = |name: &str| var(name).is_some_and(|v| !v.trim().is_empty());
    let is =
        |name: &str, value: &str| var(name).is_some_and(|v| v.trim().eq_ignore_ascii_case(value));
    if is("OTEL_SDK_DISABLED", "true") || is("OTEL_TRACES_EXPORTER", "none") {
        return Export::Off;
    }
    if set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") || set("OTEL_EXPORTER_OTLP_ENDPOINT") {
        Export::FromEnv
    } else {
        Export::Off
    }
}

fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Keeps span export alive: dropping it flushes the spans still buffered and shuts the exporter
/// down (waiting at most the exporter's timeout). Hold it in `main` until the process is done.
#[must_use = "dropping the guard shuts span export down"]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
    exporting: bool,
}

impl TelemetryGuard {
    /// Whether spans are being exported over OTLP.
    pub fn is_exporting(&self) -> bool {
        self.exporting
    }

    /// Exports every finished span now. Blocks the calling thread until the exporter answered
    /// (so inside an async runtime call it from `spawn_blocking`).
    pub fn force_flush(&self) -> Result<(), String> {
        match &self.provider {
            Some(provider) if self.exporting => provider.force_flush().map_err(|e| e.to_string()),
            _ => Ok(()),
        }
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && self.exporting
            && let Err(e) = provider.shutdown()
        {
            eprintln!("dispatch-telemetry: could not flush spans at shutdown: {e}");
        }
    }
}

/// Installs the global subscriber once per process: log lines to stderr (level from `RUST_LOG`,
/// default `info`, with the OpenTelemetry crates' own lines at `warn`) and OpenTelemetry spans, exported over OTLP/HTTP (protobuf) only when
/// `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set. The service
/// name is `OTEL_SERVICE_NAME` (or `service.name` in `OTEL_RESOURCE_ATTRIBUTES`), else
/// `service_name_default`. Sets the W3C Trace Context propagator globally. A second call installs
/// nothing and returns an inert guard.
pub fn init(service_name_default: &str, format: LogFormat) -> TelemetryGuard {
    install(service_name_default, format, export_from(env_var))
}

/// Like [`init`], exporting spans to `traces_endpoint` (the full URL, e.g.
/// `http://127.0.0.1:4318/v1/traces`) whatever the environment says. For tests and embedders.
pub fn init_with_endpoint(
    service_name_default: &str,
    format: LogFormat,
    traces_endpoint: &str,
) -> TelemetryGuard {
    install(
        service_name_default,
        format,
        Export::Endpoint(traces_endpoint.to_owned()),
    )
}

/// Installs the global subscriber once per process, without span export (spans still carry
/// trace ids). The level comes from `RUST_LOG` (default `info`); a second call is a no-op so
/// tests may call it freely.
pub fn init_logging(format: LogFormat) {
    let _inert = install("dispatch", format, Export::Off);
}

fn resource(service_name_default: &str) -> Resource {
    let detected = Resource::builder().build();
    let named = detected
        .get(&opentelemetry::Key::from_static_str("service.name"))
        .is_some_and(|name| !name.as_str().starts_with("unknown_service"));
    let builder = Resource::builder();
    if named {
        builder.build()
    } else {
        builder
            .with_service_name(service_name_default.to_owned())
            .build()
    }
}

fn span_exporter(export: &Export) -> Result<Option<opentelemetry_otlp::SpanExporter>, String> {
    use opentelemetry_otlp::{Protocol, WithExportConfig};
    let builder = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary);
    let builder = match export {
        Export::Off => return Ok(None),
        Export::FromEnv => builder,
        Export::Endpoint(url) => builder.with_endpoint(url.clone()),
    };
    builder.build().map(Some).map_err(|e| e.to_string())
}

fn install(service_name_default: &str, format: LogFormat, export: Export) -> TelemetryGuard {
    let (exporter, export_error) = match span_exporter(&export) {
        Ok(exporter) => (exporter, None),
        Err(e) => (None, Some(e)),
    };
    let exporting = exporter.is_some();
    let mut builder = SdkTracerProvider::builder().with_resource(resource(service_name_default));
    if let Some(exporter) = exporter {
        builder = builder.with_batch_exporter(exporter);
    }
    let provider = builder.build();
    let scope = opentelemetry::InstrumentationScope::builder("dispatch")
        .with_version(env!("CARGO_PKG_VERSION"))
        .build();
    let tracer = provider.tracer_with_scope(scope);

    // Spans at info and above become OpenTelemetry spans whatever `RUST_LOG` says; the
    // OpenTelemetry crates' own diagnostics never do (they would feed back into the exporter).
    let otel_filter = Targets::new()
        .with_default(LevelFilter::INFO)
        .with_target("opentelemetry", LevelFilter::OFF);
    let otel = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_threads(false)
        .with_filter(otel_filter);

    // The OpenTelemetry crates log their set-up at info; only their warnings matter by default.
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,opentelemetry=warn"));
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let fmt: Box<dyn Layer<Registry> + Send + Sync> = if json {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_filter(filter)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed()
    };

    let installed = tracing_subscriber::registry()
        .with(fmt)
        .with(otel)
        .try_init()
        .is_ok();
    if !installed {
        // Someone else's subscriber is in place: ours would receive nothing.
        let _ = provider.shutdown();
        return TelemetryGuard {
            provider: None,
            exporting: false,
        };
    }
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    opentelemetry::global::set_tracer_provider(provider.clone());
    if let Some(e) = export_error {
        tracing::warn!(error = %e, "OTLP span export is configured but could not start; spans are not exported");
    } else if exporting {
        tracing::debug!("exporting spans over OTLP/HTTP");
    }
    TelemetryGuard {
        provider: Some(provider),
        exporting,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_formats_parse_and_reject_unknown_names() {
        assert_eq!("JSON".parse::<LogFormat>(), Ok(LogFormat::Json));
        assert_eq!("text".parse::<LogFormat>(), Ok(LogFormat::Text));
        assert_eq!("auto".parse::<LogFormat>(), Ok(LogFormat::Auto));
        assert!("xml".parse::<LogFormat>().is_err());
    }

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: std::collections::HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn a_span_under_a_remote_parent_continues_its_trace_and_names_itself() {
        use opentelemetry::trace::TracerProvider as _;
        let provider = SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, || {
            let producer = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
            let span = tracing::info_span!("child");
            assert!(set_remote_parent(&span, Some(producer)));
            let own = traceparent_of(&span).expect("the span has ids");
            let own = TraceParent::parse(&own).expect("a valid traceparent");
            assert_eq!(own.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
            assert_ne!(
                own.span_id.to_string(),
                "00f067aa0ba902b7",
                "its own span id"
            );
            assert!(own.flags.is_sampled());
            let _entered = span.enter();
            assert_eq!(current_traceparent(), Some(own.to_string()));
            assert_eq!(
                current_trace_id().as_deref(),
                Some("4bf92f3577b34da6a3ce929d0e0e4736")
            );

            // Invalid or missing headers leave the span a root of a trace of its own.
            let root = tracing::info_span!(parent: None, "root");
            assert!(!set_remote_parent(&root, Some("00-bad")));
            assert!(!set_remote_parent(&root, None));
            let root = trace_parent_of(&root).expect("the span has ids");
            assert_ne!(root.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        });
    }

    #[test]
    fn spans_are_exported_only_when_an_endpoint_is_configured() {
        assert_eq!(export_from(vars(&[])), Export::Off);
        assert_eq!(
            export_from(vars(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "")])),
            Export::Off
        );
        assert_eq!(
            export_from(vars(&[(
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                "http://127.0.0.1:4318"
            )])),
            Export::FromEnv
        );
        assert_eq!(
            export_from(vars(&[(
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://127.0.0.1:4318/v1/traces"
            )])),
            Export::FromEnv
        );
        for off in [
            ("OTEL_SDK_DISABLED", "true"),
            ("OTEL_TRACES_EXPORTER", "none"),
        ] {
            assert_eq!(
                export_from(vars(&[
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                    off
                ])),
                Export::Off,
                "{off:?}"
            );
        }
    }
}
