//! `cargo xtask schemathesis`: fuzzes the running API against its own OpenAPI document with
//! Schemathesis, bounded by an example count so it fits in CI. It installs Schemathesis into a
//! venv under `~/.cache/dispatch/tools` when missing, starts `dispatch-api` on a scratch
//! database and a free port, runs `st run --checks all`, stops the API by its PID and drops the
//! database; any finding fails the command.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use dispatch_store::{admin, migrations};

use dispatch_harness::http;
use dispatch_harness::pg;
use dispatch_harness::processes::{self, Launch};

/// The Schemathesis release CI runs (a newer one may add checks: move deliberately).
const SCHEMATHESIS: &str = "schemathesis==4.32.5";

/// The check left out, and why: a few rules cannot be written in JSON Schema, so a schema-valid
/// body can still be refused with `422` (see the README's fuzzing section).
const EXCLUDED_CHECK: &str = "positive_data_acceptance";

#[derive(clap::Args)]
pub struct Args {
    /// Examples per operation and phase (Schemathesis's `--max-examples`): 150 takes about a
    /// minute on 2 cores.
    #[arg(long, default_value_t = 150)]
    max_examples: u32,
    /// Reproduce a run: the seed Schemathesis printed.
    #[arg(long)]
    seed: Option<u128>,
}

/// `~/.cache/dispatch/tools/schemathesis-venv`.
fn venv() -> Result<PathBuf> {
    let home = std::env::var_os("HOME").context("HOME is not set")?;
    Ok(PathBuf::from(home).join(".cache/dispatch/tools/schemathesis-venv"))
}

fn run_printed(mut command: Command, shown: &str) -> Result<bool> {
    eprintln!("xtask: {shown}");
    Ok(command
        .status()
        .with_context(|| format!("starting {shown}"))?
        .success())
}

/// The `st` executable, installing the pinned Schemathesis into the venv first when needed.
fn ensure_schemathesis() -> Result<PathBuf> {
    let venv = venv()?;
    let st = venv.join("bin/st");
    let pinned = SCHEMATHESIS.trim_start_matches("schemathesis==");
    let installed = Command::new(&st)
        .arg("--version")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(pinned));
    if installed {
        return Ok(st);
    }
    if !venv.join("bin/pip").is_file() {
        let mut create = Command::new("python3");
        create.args(["-m", "venv"]).arg(&venv);
        if !run_printed(create, &format!("python3 -m venv {}", venv.display()))? {
            bail!(
                "creating a Python venv failed: install python3 with its venv module (Debian and \
                 Ubuntu: `sudo apt-get install -y python3-venv`), then run this again"
            );
        }
    }
    let mut pip = Command::new(venv.join("bin/pip"));
    pip.args(["install", "--quiet", SCHEMATHESIS]);
    if !run_printed(
        pip,
        &format!("{}/bin/pip install {SCHEMATHESIS}", venv.display()),
    )? {
        bail!("installing {SCHEMATHESIS} failed (it needs PyPI)");
    }
    Ok(st)
}

pub async fn run(args: Args) -> Result<bool> {
    let st = ensure_schemathesis()?;
    let binaries = processes::build(true)?;
    let mut pg = pg::find_or_start(&crate::workspace_root(), pg::Purpose::Test).await?;
    let database = format!("dispatch_fuzz_{}", std::process::id());
    let outcome = fuzz_on(&st, &binaries, &pg, &database, &args).await;
    match admin::connect(&pg.admin_url).await {
        Ok(mut conn) => {
            if let Err(e) = admin::drop_database(&mut conn, &database).await {
                eprintln!("xtask: could not drop {database}: {e}");
            }
        }
        Err(e) => eprintln!("xtask: could not drop {database}: {e}"),
    }
    pg.stop();
    outcome
}

async fn fuzz_on(
    st: &std::path::Path,
    binaries: &processes::Binaries,
    pg: &pg::Postgres,
    database: &str,
    args: &Args,
) -> Result<bool> {
    let database_url = admin::url_with_database(&pg.admin_url, database);
    let mut conn = admin::connect(&pg.admin_url).await?;
    admin::create_database(&mut conn, database, None)
        .await
        .with_context(|| format!("creating the scratch database {database}"))?;
    drop(conn);
    migrations::run_pending(&database_url).await?;
    let logs = crate::target_dir().join("dispatch-schemathesis");
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    let api_key = crate::dev_api_key();
    let launch = Launch {
        binaries,
        database_url: &database_url,
        logs: &logs,
        label: "schemathesis",
        api_key: &api_key,
        api_env: &[],
        worker_env: &[],
    };
    let mut api = launch.api()?;
    let client = http::client(1);
    let ready = processes::wait_ready(
        &client,
        std::slice::from_mut(&mut api),
        Duration::from_secs(30),
    )
    .await;
    if let Err(e) = ready {
        api.stop().await;
        return Err(e);
    }
    eprintln!(
        "xtask: dispatch-api (pid {}) on {} over database {database}; its log: {}",
        api.pid,
        api.base_url,
        api.log.display()
    );
    let mut command = Command::new(st);
    // Schemathesis keeps a cache in `.schemathesis/` of its working directory: not the clone.
    command
        .current_dir(&logs)
        .args(["run", &format!("{}/openapi.json", api.base_url)])
        .args(["-H", &format!("Authorization: Bearer {api_key}")])
        .args(["--checks", "all", "--exclude-checks", EXCLUDED_CHECK])
        .args(["--max-examples", &args.max_examples.to_string()])
        .args(["--workers", "1"]);
    if let Some(seed) = args.seed {
        command.args(["--seed", &seed.to_string()]);
    }
    let shown = format!(
        "st run {}/openapi.json --checks all --exclude-checks {EXCLUDED_CHECK} --max-examples {}{}",
        api.base_url,
        args.max_examples,
        args.seed
            .map(|s| format!(" --seed {s}"))
            .unwrap_or_default()
    );
    let passed = run_printed(command, &shown);
    eprintln!("xtask: stopping dispatch-api (pid {})", api.pid);
    api.stop().await;
    let passed = passed?;
    if !passed {
        eprintln!(
            "xtask: schemathesis found a problem (above; `--seed` reproduces the run). The API's \
             log: {}",
            logs.join("schemathesis-api.log").display()
        );
    }
    Ok(passed)
}
