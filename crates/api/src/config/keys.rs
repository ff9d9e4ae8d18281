//! Every key the API reads, with its environment variable, default and help: the table
//! `check-config` and the README document, and the defaults layered under the file and the
//! environment.

use dispatch_config::Key;

pub const DEFAULT_DATABASE_URL: &str =
    "postgres://postgres:postgres@localhost:5432/dispatch?sslmode=disable";
pub const DEFAULT_ADDR: &str = ":8080";
pub const DEFAULT_MAX_BODY_BYTES: usize = 256 * 1024;

/// Every key the API reads: the table the README documents.
pub const KEYS: &[Key] = &[
    Key {
        name: "addr",
        env: "ADDR / DISPATCH_ADDR",
        default: DEFAULT_ADDR,
        help: "where the API listens (`:port` = all interfaces)",
    },
    Key {
        name: "database_url",
        env: "DATABASE_URL / DISPATCH_DATABASE_URL",
        default: DEFAULT_DATABASE_URL,
        help: "PostgreSQL connection string",
    },
    Key {
        name: "max_body_bytes",
        env: "DISPATCH_MAX_BODY_BYTES",
        default: "262144",
        help: "largest request body; larger gets 413",
    },
    Key {
        name: "max_batch_body_bytes",
        env: "DISPATCH_MAX_BATCH_BODY_BYTES",
        default: "1048576",
        help: "largest POST /events/batch body; larger gets 413",
    },
    Key {
        name: "tenant_ingest_rate_per_sec",
        env: "DISPATCH_TENANT_INGEST_RATE_PER_SEC",
        default: "0",
        help: "events per second each tenant may ingest per API replica (0 = no limit; a tenant's own limit wins)",
    },
    Key {
        name: "tenant_ingest_burst",
        env: "DISPATCH_TENANT_INGEST_BURST",
        default: "0",
        help: "events a tenant may ingest at once above its rate (0 = one second's worth)",
    },
    Key {
        name: "tenant_max_subscriptions",
        env: "DISPATCH_TENANT_MAX_SUBSCRIPTIONS",
        default: "0",
        help: "live subscriptions per tenant (0 = no limit; a tenant's own limit wins)",
    },
    Key {
        name: "tenant_max_payload_bytes",
        env: "DISPATCH_TENANT_MAX_PAYLOAD_BYTES",
        default: "0",
        help: "largest event a tenant may send, in bytes (0 = max_body_bytes; a tenant's own limit wins)",
    },
    Key {
        name: "db_max_connections",
        env: "DISPATCH_DB_MAX_CONNECTIONS",
        default: "16",
        help: "database pool size",
    },
    Key {
        name: "db_connect_timeout_ms",
        env: "DISPATCH_DB_CONNECT_TIMEOUT_MS",
        default: "5000",
        help: "wait for a pooled connection before answering 503",
    },
    Key {
        name: "http_workers",
        env: "DISPATCH_HTTP_WORKERS",
        default: "0",
        help: "HTTP worker threads (0 = one per CPU)",
    },
    Key {
        name: "body_read_timeout_ms",
        env: "DISPATCH_BODY_READ_TIMEOUT_MS",
        default: "10000",
        help: "longest a client may take to send a request body (408 request_timeout after)",
    },
    Key {
        name: "shutdown_timeout_secs",
        env: "DISPATCH_SHUTDOWN_TIMEOUT_SECS",
        default: "30",
        help: "grace period for in-flight requests on SIGTERM",
    },
    Key {
        name: "notify_interval_ms",
        env: "DISPATCH_NOTIFY_INTERVAL_MS",
        default: "2",
        help: "shortest gap between wake-ups sent to workers",
    },
    Key {
        name: "ingest_group_max_events",
        env: "DISPATCH_INGEST_GROUP_MAX_EVENTS",
        default: "256",
        help: "most concurrent POST /events requests stored in one commit",
    },
    Key {
        name: "ingest_committers",
        env: "DISPATCH_INGEST_COMMITTERS",
        default: "1",
        help: "groups of POST /events requests stored at the same time",
    },
    Key {
        name: "log_format",
        env: "DISPATCH_LOG_FORMAT",
        default: "auto",
        help: "json, text or auto (text on a terminal)",
    },
    Key {
        name: "api_keys",
        env: "DISPATCH_API_KEYS",
        default: "",
        help: "comma-separated API keys (at least 16 characters each) or sha256:<hex> of them",
    },
    Key {
        name: "development",
        env: "DISPATCH_DEVELOPMENT",
        default: "false",
        help: "true allows the published development API and sealing keys (never in production)",
    },
    Key {
        name: "auth_disabled",
        env: "DISPATCH_AUTH_DISABLED",
        default: "false",
        help: "true lets anyone call the API without a key (development only)",
    },
    Key {
        name: "secret_keys",
        env: "DISPATCH_SECRET_KEYS",
        default: "",
        help: "required: comma-separated <id>:<base64 of 32 bytes> keys sealing subscription \
               secrets at rest; the first seals, all open",
    },
    Key {
        name: "secret_rotation_overlap_secs",
        env: "DISPATCH_SECRET_ROTATION_OVERLAP_SECS",
        default: "86400",
        help: "default time a rotated-out secret keeps signing (0 to 2592000)",
    },
    Key {
        name: "allow_destinations",
        env: "DISPATCH_ALLOW_DESTINATIONS",
        default: "",
        help: "comma-separated CIDR ranges subscriptions may point to although private, etc.",
    },
    Key {
        name: "console_enabled",
        env: "DISPATCH_CONSOLE_ENABLED",
        default: "true",
        help: "serve the operator console under /console",
    },
    Key {
        name: "console_secure_cookies",
        env: "DISPATCH_CONSOLE_SECURE_COOKIES",
        default: "true",
        help: "mark the console's session cookie Secure (false only for plain-HTTP development)",
    },
    Key {
        name: "console_session_idle_secs",
        env: "DISPATCH_CONSOLE_SESSION_IDLE_SECS",
        default: "1800",
        help: "a console session ends after this long without a request (60 to 86400)",
    },
    Key {
        name: "console_session_max_secs",
        env: "DISPATCH_CONSOLE_SESSION_MAX_SECS",
        default: "43200",
        help: "a console session ends this long after sign-in (300 to 604800)",
    },
];
