//! Every key the worker reads, with its environment variable, default and help: the table
//! `check-config` and the README document, and the defaults layered under the file and the
//! environment.

use dispatch_config::Key;

pub const DEFAULT_DATABASE_URL: &str =
    "postgres://postgres:postgres@localhost:5432/dispatch?sslmode=disable";

/// Every key the worker reads: the table the README documents.
pub const KEYS: &[Key] = &[
    Key {
        name: "addr",
        env: "ADDR / DISPATCH_ADDR",
        default: ":8081",
        help: "where /healthz and /readyz are served",
    },
    Key {
        name: "database_url",
        env: "DATABASE_URL / DISPATCH_DATABASE_URL",
        default: DEFAULT_DATABASE_URL,
        help: "PostgreSQL connection string",
    },
    Key {
        name: "db_max_connections",
        env: "DISPATCH_DB_MAX_CONNECTIONS",
        default: "8",
        help: "database pool size (the LISTEN connection is extra)",
    },
    Key {
        name: "db_connect_timeout_ms",
        env: "DISPATCH_DB_CONNECT_TIMEOUT_MS",
        default: "5000",
        help: "wait for a pooled connection",
    },
    Key {
        name: "synchronous_commit",
        env: "DISPATCH_SYNCHRONOUS_COMMIT",
        default: "on",
        help: "off: claims and outcomes do not wait for the WAL flush (events are always durable)",
    },
    Key {
        name: "worker_id",
        env: "DISPATCH_WORKER_ID",
        default: "",
        help: "name on the leases (default: host-pid-random)",
    },
    Key {
        name: "max_in_flight",
        env: "DISPATCH_MAX_IN_FLIGHT",
        default: "64",
        help: "deliveries in flight at once",
    },
    Key {
        name: "poll_interval_ms",
        env: "DISPATCH_POLL_INTERVAL_MS",
        default: "1000",
        help: "look for due retries this often without a wake-up",
    },
    Key {
        name: "request_timeout_ms",
        env: "DISPATCH_REQUEST_TIMEOUT_MS",
        default: "30000",
        help: "timeout of one webhook request",
    },
    Key {
        name: "connect_timeout_ms",
        env: "DISPATCH_CONNECT_TIMEOUT_MS",
        default: "10000",
        help: "timeout of the TCP connect (TLS counts against the request timeout)",
    },
    Key {
        name: "lease_margin_ms",
        env: "DISPATCH_LEASE_MARGIN_MS",
        default: "30000",
        help: "lease = request timeout + this margin",
    },
    Key {
        name: "max_response_bytes",
        env: "DISPATCH_MAX_RESPONSE_BYTES",
        default: "65536",
        help: "response bytes read from a destination",
    },
    Key {
        name: "stored_response_bytes",
        env: "DISPATCH_STORED_RESPONSE_BYTES",
        default: "1024",
        help: "response bytes kept on the attempt",
    },
    Key {
        name: "retry_initial_delay_ms",
        env: "DISPATCH_RETRY_INITIAL_DELAY_MS",
        default: "1000",
        help: "wait after the first failure (then doubling)",
    },
    Key {
        name: "retry_max_delay_secs",
        env: "DISPATCH_RETRY_MAX_DELAY_SECS",
        default: "3600",
        help: "longest wait between attempts",
    },
    Key {
        name: "retry_max_attempts",
        env: "DISPATCH_RETRY_MAX_ATTEMPTS",
        default: "20",
        help: "attempts in all before `failed`",
    },
    Key {
        name: "retry_jitter_percent",
        env: "DISPATCH_RETRY_JITTER_PERCENT",
        default: "10",
        help: "± jitter on each wait",
    },
    Key {
        name: "permanent_statuses",
        env: "DISPATCH_PERMANENT_STATUSES",
        default: "410",
        help: "comma-separated statuses never retried",
    },
    Key {
        name: "allow_destinations",
        env: "DISPATCH_ALLOW_DESTINATIONS",
        default: "",
        help: "comma-separated CIDR ranges webhooks may reach although private/loopback/etc.",
    },
    Key {
        name: "secret_keys",
        env: "DISPATCH_SECRET_KEYS",
        default: "",
        help: "required: comma-separated <id>:<base64 of 32 bytes> keys that open the \
               subscriptions' sealed secrets (the API's, every key still in use)",
    },
    Key {
        name: "breaker_failure_percent",
        env: "DISPATCH_BREAKER_FAILURE_PERCENT",
        default: "50",
        help: "failed share of requests that opens a destination's circuit",
    },
    Key {
        name: "breaker_min_requests",
        env: "DISPATCH_BREAKER_MIN_REQUESTS",
        default: "3",
        help: "requests in the window before the share counts",
    },
    Key {
        name: "breaker_window_secs",
        env: "DISPATCH_BREAKER_WINDOW_SECS",
        default: "60",
        help: "how long the breaker's counts accumulate while closed",
    },
    Key {
        name: "breaker_open_secs",
        env: "DISPATCH_BREAKER_OPEN_SECS",
        default: "30",
        help: "how long an open circuit stays open before half-opening",
    },
    Key {
        name: "breaker_half_open_trials",
        env: "DISPATCH_BREAKER_HALF_OPEN_TRIALS",
        default: "5",
        help: "trial requests while half-open; as many successes close it",
    },
    Key {
        name: "max_in_flight_per_destination",
        env: "DISPATCH_MAX_IN_FLIGHT_PER_DESTINATION",
        default: "64",
        help: "most requests in flight to one destination from one worker (the ceiling of its adaptive limit)",
    },
    Key {
        name: "destination_idle_secs",
        env: "DISPATCH_DESTINATION_IDLE_SECS",
        default: "600",
        help: "forget a destination's stack after this long unused",
    },
    Key {
        name: "queue_vacuum_secs",
        env: "DISPATCH_QUEUE_VACUUM_SECS",
        default: "1",
        help: "vacuum the hot queue at most this often when dead rows pile up (0: never, autovacuum only)",
    },
    Key {
        name: "auto_disable_after_secs",
        env: "DISPATCH_AUTO_DISABLE_AFTER_SECS",
        default: "432000",
        help: "disable a subscription whose every attempt failed this long, warning at 50 % and 90 % (0: never; a subscription's own setting wins)",
    },
    Key {
        name: "development",
        env: "DISPATCH_DEVELOPMENT",
        default: "false",
        help: "true allows the published development sealing key (never in production)",
    },
    Key {
        name: "shutdown_grace_secs",
        env: "DISPATCH_SHUTDOWN_GRACE_SECS",
        default: "30",
        help: "time for in-flight deliveries on SIGTERM",
    },
    Key {
        name: "log_format",
        env: "DISPATCH_LOG_FORMAT",
        default: "auto",
        help: "json, text or auto",
    },
];
