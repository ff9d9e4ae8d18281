//! Building and running the HTTP server. Tests start it in-process on port 0.

use std::net::TcpListener;

use actix_web::dev::Server;
use actix_web::{App, HttpServer, web};
use dispatch_store::pool::build_pool;

use crate::Settings;
use crate::committer::Committer;
use crate::error::ApiError;
use crate::routes::{self, AppState};
use crate::wake::Waker;

/// Connections one actix worker thread serves at once; more wait in the listen backlog.
pub const MAX_CONNECTIONS_PER_WORKER: usize = 4096;

pub struct Application {
    port: u16,
    server: Server,
}

impl Application {
    /// Binds the listener and prepares the server; the database is not contacted here, so the
    /// API starts (and answers 503) while PostgreSQL is down. Must run inside a tokio runtime
    /// (the workers' wake-up task is spawned on it).
    pub fn build(settings: &Settings) -> std::io::Result<Self> {
        let listener = TcpListener::bind(settings.addr)?;
        let port = listener.local_addr()?.port();
        dispatch_telemetry::metrics::install();
        dispatch_telemetry::metrics::register_api_series();
        let pool = build_pool(&settings.database);
        let waker = Waker::spawn(pool.clone(), settings.notify_interval);
        let keys = std::sync::Arc::new(crate::key_cache::KeyCache::default());
        keys.spawn_reloads(pool.clone());
        let state = web::Data::new(AppState {
            committer: Committer::spawn(pool.clone(), waker.clone(), settings.ingest_groups),
            replayer: crate::replayer::Replayer::spawn(pool.clone(), waker.clone()),
            waker,
            pool,
            max_body_bytes: settings.max_body_bytes,
            max_batch_body_bytes: settings.max_batch_body_bytes,
            body_read_timeout: settings.body_read_timeout,
            auth: settings.auth.clone(),
            keys,
            secret_keys: settings.secret_keys.clone(),
            secret_rotation_overlap: settings.secret_rotation_overlap,
            destinations: settings.destinations.clone(),
            tenant_defaults: settings.tenant_defaults,
            ingest_limiter: Default::default(),
        });
        let console = web::Data::new(dispatch_console::Console {
            pool: state.pool.clone(),
            keys: {
                let auth = settings.auth.clone();
                std::sync::Arc::new(move |key: &str| auth.accepts(key))
            },
            settings: settings.console.clone(),
            secret_keys: settings.secret_keys.clone(),
            destinations: settings.destinations.clone(),
            actions: std::sync::Arc::new(crate::console_actions::ApiActions {
                state: state.clone(),
            }),
        });
        let mut server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .app_data(web::QueryConfig::default().error_handler(|err, _| {
                    ApiError::InvalidParam {
                        param: "query".to_owned(),
                        message: err.to_string(),
                    }
                    .into()
                }))
                // Every request, matched or not, refused or not: span, metrics, header limits.
                .wrap(actix_web::middleware::from_fn(crate::middleware::observe))
                // The console's scope first: the API's routes end with a catch-all 404.
                .configure(dispatch_console::configure(console.clone()))
                .configure(routes::configure)
        })
        // A client gets 5 s to send a request's head (else 408 and the connection closed) and
        // `body_read_timeout` for its body; each worker thread holds at most
        // MAX_CONNECTIONS_PER_WORKER connections and leaves the rest in the listen backlog.
        .client_request_timeout(std::time::Duration::from_secs(5))
        .client_disconnect_timeout(std::time::Duration::from_secs(1))
        .max_connections(MAX_CONNECTIONS_PER_WORKER)
        .listen(listener)?
        .shutdown_timeout(settings.shutdown_timeout.as_secs());
        if settings.http_workers > 0 {
            server = server.workers(settings.http_workers);
        }
        Ok(Self {
            port,
            server: server.run(),
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until SIGINT/SIGTERM, then lets in-flight requests finish.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }
}
