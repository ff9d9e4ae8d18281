//! Metrics: every name and label key Dispatch exports, their descriptions, and the Prometheus
//! recorder both binaries install once. Labels come only from closed sets, except the seed's
//! per-subscription breaker and limiter metrics (one series per active destination).

use std::sync::OnceLock;

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

// The seed's metrics.
pub const EVENTS_RECEIVED: &str = "dispatch_events_received_total";
pub const EVENTS_DELIVERED: &str = "dispatch_events_delivered_total";
pub const EVENTS_FAILED: &str = "dispatch_events_failed_total";
pub const EVENTS_RETRYING: &str = "dispatch_events_retrying_total";
pub const DELIVERY_DURATION: &str = "dispatch_delivery_duration_seconds";
pub const CIRCUIT_STATE: &str = "dispatch_circuit_breaker_state";
pub const CIRCUIT_TRIPS: &str = "dispatch_circuit_breaker_trips_total";
pub const RATE_LIMITER_REJECTIONS: &str = "dispatch_rate_limiter_rejections_total";

// What an operator needs beyond the seed's.
pub const DELIVERY_ATTEMPTS: &str = "dispatch_delivery_attempts_total";
pub const DELIVERIES_DEFERRED: &str = "dispatch_deliveries_deferred_total";
pub const DELIVERIES_IN_FLIGHT: &str = "dispatch_deliveries_in_flight";
pub const DELIVERIES_DUE: &str = "dispatch_deliveries_due";
pub const OLDEST_DUE_AGE: &str = "dispatch_oldest_due_delivery_age_seconds";
pub const CLAIM_BATCH_SIZE: &str = "dispatch_claim_batch_size";
pub const CLAIM_DURATION: &str = "dispatch_claim_duration_seconds";
pub const INGEST_GROUP_SIZE: &str = "dispatch_ingest_group_size";
pub const INGEST_SHED: &str = "dispatch_ingest_shed_total";
pub const HTTP_REQUESTS: &str = "dispatch_http_requests_total";
pub const HTTP_REQUEST_DURATION: &str = "dispatch_http_request_duration_seconds";
pub const DB_POOL_CONNECTIONS: &str = "dispatch_db_pool_connections";
pub const WORKER_LISTENING: &str = "dispatch_worker_listening";
pub const QUEUE_ROWS: &str = "dispatch_queue_rows";
pub const QUEUE_AUTOVACUUM: &str = "dispatch_queue_autovacuum_enabled";
pub const QUEUE_VACUUMS: &str = "dispatch_queue_vacuums_total";
pub const SUBSCRIPTIONS_AUTO_DISABLED: &str = "dispatch_subscriptions_auto_disabled_total";
/// Per tenant: events `received`, deliveries `delivered` and `failed`, events `rate_limited`.
/// Labelled by tenant and outcome only (never by subscription), so its series are at most
/// four per tenant.
pub const TENANT_EVENTS: &str = "dispatch_tenant_events_total";

// Label keys.
pub const SUBSCRIPTION_ID: &str = "subscription_id";
pub const OUTCOME: &str = "outcome";
pub const STATUS_CLASS: &str = "status_class";
pub const ERROR_CODE: &str = "error_code";
pub const REASON: &str = "reason";
pub const ROUTE: &str = "route";
pub const METHOD: &str = "method";
pub const STATUS: &str = "status";
pub const STATE: &str = "state";
pub const TENANT: &str = "tenant";

/// Latency buckets that suit webhook calls: a few ms on a LAN up to the 30 s timeout.
pub const DELIVERY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
/// API request latency buckets.
pub const HTTP_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];
/// Claim batch sizes.
pub const BATCH_BUCKETS: &[f64] = &[
    0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0,
];

fn describe() {
    describe_counter!(
        EVENTS_RECEIVED,
        "Events accepted by the API (first receipt only)."
    );
    describe_counter!(
        EVENTS_DELIVERED,
        "Deliveries that reached their destination (2xx)."
    );
    describe_counter!(
        EVENTS_FAILED,
        "Deliveries that failed permanently (attempts exhausted or a permanent status)."
    );
    describe_counter!(
        TENANT_EVENTS,
        "Per tenant: events received and rate-limited, deliveries delivered and failed."
    );
    describe_counter!(
        EVENTS_RETRYING,
        "Failed attempts after which a retry was scheduled."
    );
    describe_histogram!(
        DELIVERY_DURATION,
        Unit::Seconds,
        "Latency of delivery attempts, request sent to response read."
    );
    describe_gauge!(
        CIRCUIT_STATE,
        "Circuit breaker state per subscription: 0 closed, 1 half-open, 2 open."
    );
    describe_counter!(
        CIRCUIT_TRIPS,
        "Times a subscription's circuit breaker opened."
    );
    describe_counter!(
        RATE_LIMITER_REJECTIONS,
        "Requests a subscription's rate limiter held back."
    );
    describe_counter!(
        DELIVERY_ATTEMPTS,
        "Delivery attempts by outcome, status class and failure code."
    );
    describe_counter!(
        DELIVERIES_DEFERRED,
        "Deliveries put back without an attempt, by reason (rate_limited, circuit_open, busy, stalled)."
    );
    describe_gauge!(
        DELIVERIES_IN_FLIGHT,
        "Delivery attempts in flight in this worker."
    );
    describe_gauge!(
        DELIVERIES_DUE,
        "Deliveries due now and waiting to be claimed (the backlog)."
    );
    describe_gauge!(
        OLDEST_DUE_AGE,
        Unit::Seconds,
        "How long the oldest due delivery has been waiting."
    );
    describe_gauge!(
        QUEUE_ROWS,
        "Rows of the hot queue (unfinished deliveries), by state: live, or dead awaiting vacuum."
    );
    describe_gauge!(
        QUEUE_AUTOVACUUM,
        "1 when autovacuum looks after the hot queue (server setting and table option), else 0."
    );
    describe_counter!(
        QUEUE_VACUUMS,
        "Times this worker vacuumed the hot queue because dead rows piled up."
    );
    describe_counter!(
        SUBSCRIPTIONS_AUTO_DISABLED,
        "Subscriptions this worker disabled because every attempt failed for their threshold."
    );
    describe_histogram!(CLAIM_BATCH_SIZE, "Deliveries returned per claim.");
    describe_histogram!(
        INGEST_GROUP_SIZE,
        "Events stored per group commit of POST /events."
    );
    describe_counter!(
        INGEST_SHED,
        "POST /events answered 503 at once because too many events already waited to be stored."
    );
    describe_histogram!(
        CLAIM_DURATION,
        Unit::Seconds,
        "Duration of the claim statement."
    );
    describe_counter!(HTTP_REQUESTS, "API requests by route, method and status.");
    describe_histogram!(
        HTTP_REQUEST_DURATION,
        Unit::Seconds,
        "API request latency by route and method."
    );
    describe_gauge!(
        DB_POOL_CONNECTIONS,
        "Database pool connections by state (idle, active)."
    );
    describe_gauge!(
        WORKER_LISTENING,
        "1 while the worker's LISTEN connection is up."
    );
}

/// Installs the Prometheus recorder once per process and returns the handle that renders the
/// text format. Later calls return the same handle.
pub fn install() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full(DELIVERY_DURATION.to_owned()),
                DELIVERY_BUCKETS,
            )
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Full(HTTP_REQUEST_DURATION.to_owned()),
                    HTTP_BUCKETS,
                )
            })
            .and_then(|b| {
                b.set_buckets_for_metric(Matcher::Full(CLAIM_DURATION.to_owned()), HTTP_BUCKETS)
            })
            .and_then(|b| {
                b.set_buckets_for_metric(Matcher::Full(CLAIM_BATCH_SIZE.to_owned()), BATCH_BUCKETS)
            })
            .and_then(|b| {
                b.set_buckets_for_metric(Matcher::Full(INGEST_GROUP_SIZE.to_owned()), BATCH_BUCKETS)
            });
        // A gauge not updated for 15 minutes is dropped: a destination forgotten as idle (or
        // deleted) does not keep reporting its last circuit state for ever.
        let builder = builder.map(|b| {
            b.idle_timeout(
                metrics_util::MetricKindMask::GAUGE,
                Some(std::time::Duration::from_secs(900)),
            )
        });
        let recorder = match builder {
            Ok(b) => b.build_recorder(),
            // Only an empty bucket list fails, and ours are constants.
            Err(_) => PrometheusBuilder::new().build_recorder(),
        };
        let handle = recorder.handle();
        // Another recorder may already be installed (a test harness); ours then stays local
        // and /metrics shows what it recorded, which is nothing. That is visible, not silent.
        let _ = metrics::set_global_recorder(recorder);
        describe();
        spawn_upkeep(handle.clone());
        handle
    })
}

/// How often histogram samples are folded into their buckets when nobody scrapes.
pub const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Folds recorded histogram samples into their buckets every [`UPKEEP_EVERY`]. The exporter
/// keeps every sample until a render or an upkeep drains it, so a process nobody scrapes (or
/// scrapes rarely) would otherwise grow by each histogram sample for ever: 30 MiB in 10
/// minutes at 2 000 events/s.
fn spawn_upkeep(handle: PrometheusHandle) {
    let spawned = std::thread::Builder::new()
        .name("metrics-upkeep".to_owned())
        .spawn(move || {
            loop {
                std::thread::sleep(UPKEEP_EVERY);
                handle.run_upkeep();
            }
        });
    if let Err(e) = spawned {
        eprintln!(
            "metrics: could not start the upkeep thread ({e}); histograms grow until scraped"
        );
    }
}

/// Registers the API's label-less counters at zero, so they exist before the first event.
pub fn register_api_series() {
    metrics::counter!(EVENTS_RECEIVED).increment(0);
    metrics::counter!(INGEST_SHED).increment(0);
}

/// Registers the worker's label-less counters at zero, so dashboards and alerts see them
/// before the first delivery.
pub fn register_worker_series() {
    for name in [
        EVENTS_DELIVERED,
        EVENTS_FAILED,
        EVENTS_RETRYING,
        SUBSCRIPTIONS_AUTO_DISABLED,
    ] {
        metrics::counter!(name).increment(0);
    }
}

/// The `method` label of an API request: the standard methods, everything else `other` (a
/// client must not be able to mint series).
pub fn method_label(method: &str) -> &'static str {
    match method {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        _ => "other",
    }
}

/// The status class label of an HTTP status: `2xx` … `5xx`, or `none` when there was no answer.
pub fn status_class(status: Option<u16>) -> &'static str {
    match status {
        Some(200..=299) => "2xx",
        Some(300..=399) => "3xx",
        Some(400..=499) => "4xx",
        Some(500..=599) => "5xx",
        Some(_) => "other",
        None => "none",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_recorder_renders_counters_and_histograms_with_buckets() {
        let handle = install();
        metrics::counter!(EVENTS_RECEIVED).increment(2);
        metrics::histogram!(DELIVERY_DURATION).record(0.02);
        let text = handle.render();
        assert!(
            text.contains("# TYPE dispatch_events_received_total counter"),
            "{text}"
        );
        assert!(text.contains("dispatch_events_received_total 2"), "{text}");
        assert!(
            text.contains("# TYPE dispatch_delivery_duration_seconds histogram"),
            "{text}"
        );
        assert!(
            text.contains("dispatch_delivery_duration_seconds_bucket{le=\"0.025\"} 1"),
            "{text}"
        );
        assert!(std::ptr::eq(handle, install()), "installed once");
    }

    #[test]
    fn unknown_methods_fold_into_one_label() {
        assert_eq!(method_label("POST"), "POST");
        assert_eq!(method_label("FOO1"), "other");
    }

    #[test]
    fn status_classes_cover_every_answer() {
        assert_eq!(status_class(Some(204)), "2xx");
        assert_eq!(status_class(Some(302)), "3xx");
        assert_eq!(status_class(Some(429)), "4xx");
        assert_eq!(status_class(Some(503)), "5xx");
        assert_eq!(status_class(None), "none");
    }
}
