//! `dispatch-worker`: loads configuration, serves health probes and runs the delivery loop until
//! SIGTERM or SIGINT, then drains.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use dispatch_worker::{Settings, Worker, health};

#[derive(Parser)]
#[command(
    name = "dispatch-worker",
    version,
    about = "Dispatch's delivery worker"
)]
struct Cli {
    /// Optional TOML configuration file (overridden by the environment).
    #[arg(long, env = "DISPATCH_CONFIG")]
    config: Option<PathBuf>,
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    tracing::info!("shutdown signal received");
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let settings = Settings::load(cli.config.as_deref())?;
    // Held until the worker drained: dropping it flushes the spans still buffered.
    let _telemetry = dispatch_telemetry::init("dispatch-worker", settings.log_format);
    let worker = Worker::new(&settings).context("building the HTTP client")?;
    let (bound, server) = health::serve(settings.addr, worker.clone())
        .await
        .with_context(|| format!("binding {}", settings.addr))?;
    tokio::spawn(server);
    tracing::info!(addr = %bound, worker.id = worker.id(), "dispatch-worker started");
    worker.run(shutdown_signal()).await;
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dispatch-worker: {e:#}");
            ExitCode::FAILURE
        }
    }
}
