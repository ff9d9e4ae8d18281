//! `cargo xtask`: the one entry point for developing and operating Dispatch.
//! `dev` runs it locally, `test` runs the whole suite, `lint`, `cover`, `migrate`; the operator
//! commands `replay`, `purge`, `stats` and `check-config` are `ops`, thin wrappers over what
//! `dispatch-api admin` and `dispatch-worker check-config` run in the image; `bench`, `chaos`
//! and PostgreSQL for `dev` and `test` are dispatch-harness's, called with the arguments parsed
//! here.

mod lint;
mod openapi;
mod ops;
mod schemathesis;
mod sink;
mod tidy;

use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use dispatch_harness::{bench, cargo, chaos, pg, setup, status_of, target_dir, workspace_root};
use dispatch_store::migrations;

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "Dispatch's development and operations tasks"
)]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Run Dispatch locally: find or start PostgreSQL, migrate, start the API; Ctrl-C stops all.
    Dev,
    /// Find or start PostgreSQL and run the whole test suite with cargo-nextest (installed when
    /// missing; `cargo test` when it cannot be).
    Test {
        /// Extra arguments for `cargo nextest run` (e.g. a test name filter).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Check formatting, clippy with -D warnings, that no C TLS/libpq crates crept in, licences
    /// and advisories (cargo-deny, installed when missing) and the API docs (rustdoc, warnings
    /// denied).
    Lint,
    /// A local webhook receiver that prints each delivery and whether its signatures verify.
    Sink {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:9999")]
        addr: std::net::SocketAddr,
        /// The subscription's secret, to verify signatures with.
        #[arg(long, env = "DISPATCH_SINK_SECRET")]
        secret: Option<String>,
        /// Status to answer with (e.g. 500 to watch retries).
        #[arg(long, default_value_t = 200)]
        status: u16,
    },
    /// Line coverage of the test suite (cargo-llvm-cov).
    Cover,
    /// Regenerate docs/openapi.json from the API's code (`--check`: fail if it is stale).
    Openapi {
        /// Do not write; fail when docs/openapi.json differs from the generated document.
        #[arg(long)]
        check: bool,
    },
    /// Apply, revert or list migrations on DATABASE_URL.
    Migrate {
        #[arg(value_enum)]
        action: MigrateAction,
    },
    /// Re-queue failed deliveries (by event, subscription or failure time) with a fresh retry
    /// schedule, on DATABASE_URL (as `dispatch-api admin replay`).
    Replay(ops::ReplayArgs),
    /// Delete finished events (with their deliveries and attempts) and deleted subscriptions
    /// older than a retention period, in small batches, on DATABASE_URL (as `dispatch-api admin
    /// purge`).
    Purge(ops::PurgeArgs),
    /// Backlog, deliveries by status, the last hour's failure rate and each subscription's
    /// circuit, due deliveries and failures, from DATABASE_URL (as `dispatch-api admin stats`).
    Stats(ops::StatsArgs),
    /// Load and validate the API's and/or the worker's configuration as the binaries do, and
    /// print the effective values (passwords masked) or every problem.
    CheckConfig(ops::CheckConfigArgs),
    /// Benchmark Dispatch on 127.0.0.1 (fresh database, API, workers, a built-in receiver)
    /// against the ceiling of durable single-row inserts; prints a table and JSON lines.
    Bench(bench::Args),
    /// Fuzz the API against its OpenAPI document with Schemathesis (installed into
    /// ~/.cache/dispatch/tools when missing) on a scratch database; fails on any finding.
    Schemathesis(schemathesis::Args),
    /// Faults on 127.0.0.1 (worker killed, PostgreSQL restarted, misbehaving receivers,
    /// SIGTERM, three workers, hanging destinations, a flood of the worker's port) with every
    /// accepted event accounted for; prints a table.
    Chaos(chaos::Args),
}

#[derive(Clone, Copy, ValueEnum)]
enum MigrateAction {
    Up,
    Down,
    Status,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("xtask: cannot start a runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(task: Task) -> Result<bool> {
    match task {
        Task::Dev => dev().await,
        Task::Test { args } => test(args).await,
        Task::Lint => lint::run(),
        Task::Cover => cover().await,
        Task::Sink {
            addr,
            secret,
            status,
        } => sink::run(addr, secret, status).await,
        Task::Migrate { action } => migrate(action).await,
        Task::Openapi { check } => openapi::run(check),
        Task::Replay(args) => ops::run(dispatch_api::admin::Command::Replay(args)).await,
        Task::Purge(args) => ops::run(dispatch_api::admin::Command::Purge(args)).await,
        Task::Stats(args) => ops::run(dispatch_api::admin::Command::Stats(args)).await,
        Task::CheckConfig(args) => ops::check_config(args),
        Task::Bench(args) => bench::run(args).await,
        Task::Chaos(args) => chaos::run(args).await,
        Task::Schemathesis(args) => schemathesis::run(args).await,
    }
}

async fn test(args: Vec<String>) -> Result<bool> {
    let nextest = setup::ensure_cargo_tool("nextest", "cargo-nextest");
    if !nextest {
        eprintln!(
            "xtask: cargo-nextest is not available: running the suite with `cargo test` \
             instead (tests of one binary share a process; `cargo install cargo-nextest --locked` \
             restores the usual runner)"
        );
    }
    let mut pg = pg::for_tests(&workspace_root()).await?;
    let mut command = cargo();
    if nextest {
        command.args(["nextest", "run"]);
    } else {
        command.arg("test");
    }
    command
        .args(["--workspace", "--all-targets", "--no-fail-fast"])
        .args(&args)
        .env("DISPATCH_TEST_DATABASE_URL", &pg.admin_url);
    let passed = status_of(
        command,
        if nextest {
            "cargo nextest"
        } else {
            "cargo test"
        },
    );
    pg.stop();
    passed
}

async fn cover() -> Result<bool> {
    if !setup::ensure_cargo_tool("nextest", "cargo-nextest") {
        bail!("cargo-nextest is not installed: `cargo install cargo-nextest --locked`");
    }
    let has_llvm_cov = cargo()
        .args(["llvm-cov", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !has_llvm_cov {
        bail!(
            "cargo-llvm-cov is not installed: `cargo install cargo-llvm-cov --locked`, plus LLVM \
             tools (`rustup component add llvm-tools-preview`, or Debian's llvm-22 with \
             LLVM_COV=/usr/bin/llvm-cov-22 LLVM_PROFDATA=/usr/bin/llvm-profdata-22)"
        );
    }
    let mut pg = pg::for_tests(&workspace_root()).await?;
    let mut command = cargo();
    command
        .args([
            "llvm-cov",
            "nextest",
            "--workspace",
            "--all-targets",
            "--summary-only",
        ])
        .env("DISPATCH_TEST_DATABASE_URL", &pg.admin_url);
    for (var, tool) in [
        ("LLVM_COV", "llvm-cov-22"),
        ("LLVM_PROFDATA", "llvm-profdata-22"),
    ] {
        let path = Path::new("/usr/bin").join(tool);
        if std::env::var_os(var).is_none() && path.is_file() {
            command.env(var, path);
        }
    }
    let passed = status_of(command, "cargo llvm-cov");
    pg.stop();
    passed
}

async fn migrate(action: MigrateAction) -> Result<bool> {
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| pg::DEFAULT_DATABASE_URL.to_owned());
    match action {
        MigrateAction::Up => {
            let applied = migrations::run_pending(&url).await?;
            if applied.is_empty() {
                println!("database is up to date");
            }
            for v in applied {
                println!("applied {v}");
            }
        }
        MigrateAction::Down => println!("reverted {}", migrations::revert_last(&url).await?),
        MigrateAction::Status => {
            for m in migrations::status(&url).await? {
                println!("{} {}", if m.applied { "[x]" } else { "[ ]" }, m.name);
            }
        }
    }
    Ok(true)
}

fn spawn_binary(name: &str, database_url: &str, addr: &str) -> Result<tokio::process::Child> {
    tokio::process::Command::new(target_dir().join("debug").join(name))
        .env("DATABASE_URL", database_url)
        .env("ADDR", addr)
        // The DISPATCH_ names win over the seed's: set them too, so a shell that exports one
        // cannot send both binaries to the same port or another database.
        .env("DISPATCH_DATABASE_URL", database_url)
        .env("DISPATCH_ADDR", addr)
        .env("DISPATCH_LOG_FORMAT", "text")
        .env("DISPATCH_API_KEYS", dev_api_key())
        .env("DISPATCH_SECRET_KEYS", dev_secret_keys())
        // The published development keys are refused without it.
        .env("DISPATCH_DEVELOPMENT", "true")
        // `cargo xtask sink` and other local receivers live on loopback.
        .env("DISPATCH_ALLOW_DESTINATIONS", "127.0.0.0/8,::1")
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {name}"))
}

/// The API key `cargo xtask dev` starts the API with: `DISPATCH_DEV_API_KEY`, or the README's
/// development key.
fn dev_api_key() -> String {
    std::env::var("DISPATCH_DEV_API_KEY").unwrap_or_else(|_| DEV_API_KEY.to_owned())
}

/// The development key the README's examples send. Never use it outside a laptop.
const DEV_API_KEY: &str = dispatch_config::development::API_KEY;

/// The keys `cargo xtask dev` seals subscription secrets with: `DISPATCH_DEV_SECRET_KEYS`, or
/// [`DEV_SECRET_KEYS`]. The same every run, so a development database stays readable.
fn dev_secret_keys() -> String {
    std::env::var("DISPATCH_DEV_SECRET_KEYS").unwrap_or_else(|_| DEV_SECRET_KEYS.to_owned())
}

/// A development key for subscription secrets (`DISPATCH_SECRET_KEYS`), published here: never
/// use it outside a laptop. `cargo xtask bench` and the other local harnesses use it too.
pub(crate) const DEV_SECRET_KEYS: &str = dispatch_config::development::SECRET_KEYS;

/// Asks a child to stop with SIGTERM and waits for its graceful drain (then kills it).
async fn terminate(child: &mut tokio::process::Child) {
    if let Some(pid) = child.id() {
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
    }
    if tokio::time::timeout(Duration::from_secs(35), child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
}

fn port_of(addr: &str) -> &str {
    addr.rsplit(':').next().unwrap_or(addr)
}

async fn dev() -> Result<bool> {
    let mut pg = pg::find_or_start(&workspace_root(), pg::Purpose::Dev).await?;
    pg::ensure_database(&pg).await?;
    for v in migrations::run_pending(&pg.database_url).await? {
        eprintln!("xtask: applied migration {v}");
    }
    if !status_of(
        {
            let mut c = cargo();
            c.args([
                "build",
                "--quiet",
                "-p",
                "dispatch-api",
                "-p",
                "dispatch-worker",
            ]);
            c
        },
        "cargo build",
    )? {
        bail!("building dispatch-api and dispatch-worker failed");
    }
    let api_addr = std::env::var("ADDR").unwrap_or_else(|_| ":8080".to_owned());
    let worker_addr = std::env::var("WORKER_ADDR").unwrap_or_else(|_| ":8081".to_owned());
    let mut api = spawn_binary("dispatch-api", &pg.database_url, &api_addr)?;
    let mut worker = spawn_binary("dispatch-worker", &pg.database_url, &worker_addr)?;
    let (api_port, worker_port) = (port_of(&api_addr), port_of(&worker_addr));
    println!();
    println!("  Dispatch is running");
    println!(
        "  API:          http://localhost:{api_port}  (try: curl http://localhost:{api_port}/readyz)"
    );
    println!(
        "  API key:      {}  (send: -H \"Authorization: Bearer {}\")",
        dev_api_key(),
        dev_api_key()
    );
    println!("  Worker:       http://localhost:{worker_port}/readyz");
    println!("  DATABASE_URL: {}", pg.database_url);
    if pg.started_privately() {
        println!("  PostgreSQL:   private cluster started by xtask (stopped on Ctrl-C)");
    }
    println!("  Watch deliveries: cargo xtask sink --secret <the subscription's secret>");
    println!("  Press Ctrl-C to stop.");
    println!();
    let outcome = tokio::select! {
        status = api.wait() => {
            eprintln!("xtask: dispatch-api exited ({})", status?);
            false
        }
        status = worker.wait() => {
            eprintln!("xtask: dispatch-worker exited ({})", status?);
            false
        }
        _ = tokio::signal::ctrl_c() => {
            eprintln!("xtask: stopping");
            true
        }
    };
    terminate(&mut api).await;
    terminate(&mut worker).await;
    pg.stop();
    Ok(outcome)
}
