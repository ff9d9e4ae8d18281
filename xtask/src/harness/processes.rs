//! Building `dispatch-api` and `dispatch-worker` and running them as child processes on free
//! ports of 127.0.0.1, each logging (JSON, `warn` and above) to a file of its own.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hyper::StatusCode;

use super::http::{HttpClient, get_status};
use super::procfs::{self, ProcSample};

/// How long a child gets to drain after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(15);

/// Where the built binaries are.
#[derive(Debug, Clone)]
pub struct Binaries {
    dir: PathBuf,
    pub profile: &'static str,
}

/// `cargo build [--release] -p dispatch-api -p dispatch-worker`.
pub fn build(debug: bool) -> Result<Binaries> {
    let profile = if debug { "debug" } else { "release" };
    eprintln!("xtask: building dispatch-api and dispatch-worker ({profile})");
    let mut command = crate::cargo();
    command.args(["build", "-p", "dispatch-api", "-p", "dispatch-worker"]);
    if !debug {
        command.arg("--release");
    }
    if !crate::status_of(command, "cargo build")? {
        bail!("building dispatch-api and dispatch-worker failed");
    }
    Ok(Binaries {
        dir: crate::target_dir().join(profile),
        profile,
    })
}

pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")
        .context("finding a free port")?
        .local_addr()?
        .port())
}

/// What every child of one scenario shares.
pub struct Launch<'a> {
    pub binaries: &'a Binaries,
    pub database_url: &'a str,
    pub logs: &'a Path,
    /// Prefix of the log files, e.g. `steady`.
    pub label: &'a str,
    /// The key the API accepts (`DISPATCH_API_KEYS`).
    pub api_key: &'a str,
    /// Extra `DISPATCH_*` settings (`--api-env`, `--worker-env`), applied last.
    pub api_env: &'a [(String, String)],
    pub worker_env: &'a [(String, String)],
}

/// A running `dispatch-api` or `dispatch-worker`.
pub struct Service {
    /// `api`, `worker-1`, …
    pub name: String,
    pub pid: u32,
    /// `http://127.0.0.1:<port>`: the API, or the worker's health server.
    pub base_url: String,
    pub log: PathBuf,
    child: tokio::process::Child,
}

impl Launch<'_> {
    fn spawn(
        &self,
        binary: &str,
        name: &str,
        env: &[(&str, String)],
        overrides: &[(String, String)],
    ) -> Result<Service> {
        let port = free_port()?;
        let addr = format!("127.0.0.1:{port}");
        let log = self.logs.join(format!("{}-{name}.log", self.label));
        let file =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut command = tokio::process::Command::new(self.binaries.dir.join(binary));
        // Nothing from the caller's shell may change what is measured.
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy();
            if key.starts_with("DISPATCH_") || key.starts_with("OTEL_") {
                command.env_remove(key.as_ref());
            }
        }
        command
            .env("DATABASE_URL", self.database_url)
            .env("DISPATCH_DATABASE_URL", self.database_url)
            .env("ADDR", &addr)
            .env("DISPATCH_ADDR", &addr)
            .env("DISPATCH_LOG_FORMAT", "json")
            .env("RUST_LOG", "warn")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .envs(overrides.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::from(file.try_clone()?))
            .stderr(Stdio::from(file))
            .kill_on_drop(true);
        let child = command
            .spawn()
            .with_context(|| format!("starting {}", self.binaries.dir.join(binary).display()))?;
        let pid = child.id().context("the child has no pid")?;
        Ok(Service {
            name: name.to_owned(),
            pid,
            base_url: format!("http://{addr}"),
            log,
            child,
        })
    }

    pub fn api(&self) -> Result<Service> {
        self.api_named("api")
    }

    /// An API process called `name` (its log is `<label>-<name>.log`), e.g. a second one to
    /// hand over to while the first drains.
    pub fn api_named(&self, name: &str) -> Result<Service> {
        self.spawn(
            "dispatch-api",
            name,
            &[
                ("DISPATCH_SHUTDOWN_TIMEOUT_SECS", "5".to_owned()),
                ("DISPATCH_API_KEYS", self.api_key.to_owned()),
                ("DISPATCH_SECRET_KEYS", crate::DEV_SECRET_KEYS.to_owned()),
                // Subscriptions point at the built-in receiver on loopback, which the API's SSRF
                // check refuses by default.
                ("DISPATCH_ALLOW_DESTINATIONS", "127.0.0.0/8".to_owned()),
            ],
            self.api_env,
        )
    }

    /// Worker `index` (1-based). One destination may use every slot of the worker
    /// (`max_in_flight_per_destination` = `max_in_flight`), so a single subscription can be
    /// measured at the worker's full concurrency.
    pub fn worker(&self, index: usize, max_in_flight: usize) -> Result<Service> {
        let name = format!("worker-{index}");
        self.spawn(
            "dispatch-worker",
            &name,
            &[
                ("DISPATCH_WORKER_ID", format!("{}-{index}", self.label)),
                ("DISPATCH_MAX_IN_FLIGHT", max_in_flight.to_string()),
                (
                    "DISPATCH_MAX_IN_FLIGHT_PER_DESTINATION",
                    max_in_flight.to_string(),
                ),
                ("DISPATCH_SHUTDOWN_GRACE_SECS", "5".to_owned()),
                // The built-in receiver is on loopback, which the SSRF guard refuses by default.
                ("DISPATCH_ALLOW_DESTINATIONS", "127.0.0.0/8".to_owned()),
                ("DISPATCH_SECRET_KEYS", crate::DEV_SECRET_KEYS.to_owned()),
            ],
            self.worker_env,
        )
    }
}

impl Service {
    pub fn sample(&self) -> Option<ProcSample> {
        procfs::sample(self.pid)
    }

    /// Whether the process has exited (and how).
    fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The service's name, when it has exited.
    pub fn exited_name(&mut self) -> Option<String> {
        self.exited().map(|_| self.name.clone())
    }

    /// SIGTERM, then up to [`STOP_GRACE`] to drain, then SIGKILL.
    pub async fn stop(mut self) {
        self.terminate(STOP_GRACE).await;
    }

    /// SIGTERM, then up to `grace` to drain; SIGKILL after that. Returns the exit status when
    /// the process exited by itself within `grace` (`None`: it had to be killed).
    pub async fn terminate(&mut self, grace: Duration) -> Option<ExitStatus> {
        if let Some(status) = self.exited() {
            return Some(status);
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(status) => status.ok(),
            Err(_) => {
                eprintln!(
                    "xtask: {} did not stop within {}s; killing it",
                    self.name,
                    grace.as_secs()
                );
                let _ = self.child.kill().await;
                None
            }
        }
    }

    /// SIGKILL (`kill -9`): no drain, no release of leases, nothing recorded.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }

    /// Lines the process logged (every line is `warn` or worse, given `RUST_LOG=warn`).
    pub fn log_lines(&self) -> usize {
        std::fs::read_to_string(&self.log)
            .map(|t| t.lines().filter(|l| !l.trim().is_empty()).count())
            .unwrap_or(0)
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Waits until every service answers `GET /readyz` with `200`; fails as soon as one exits, or
/// when `within` has passed.
pub async fn wait_ready(
    client: &HttpClient,
    services: &mut [Service],
    within: Duration,
) -> Result<()> {
    let deadline = Instant::now() + within;
    for service in services.iter_mut() {
        let url = format!("{}/readyz", service.base_url);
        loop {
            if let Some(status) = service.exited() {
                bail!(
                    "{} exited during start-up ({status}); its log ({}):\n{}",
                    service.name,
                    service.log.display(),
                    tail(&service.log, 20)
                );
            }
            if get_status(client, &url).await == Some(StatusCode::OK) {
                break;
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} was not ready within {}s; its log ({}):\n{}",
                    service.name,
                    within.as_secs(),
                    service.log.display(),
                    tail(&service.log, 20)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(())
}
