//! Building `dispatch-api` and `dispatch-worker` and running them as child processes on free
//! ports of 127.0.0.1, each logging to a file of its own: with the shipped defaults
//! (`*_as_shipped`, for `bench`) or with the harness's quieter settings (for `chaos`).

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

/// What a child needs to run here at all, and nothing else: its database and address, the API
/// key the load generator presents, the keys that open the subscriptions' sealed secrets,
/// loopback destinations allowed (the receiver listens there; the SSRF guard refuses it by
/// default) and each worker's name on its leases.
pub const REQUIRED_SETTINGS: &str = "DISPATCH_DATABASE_URL, DISPATCH_ADDR, DISPATCH_API_KEYS \
     (generated), DISPATCH_SECRET_KEYS (dev keys) with DISPATCH_DEVELOPMENT=true, DISPATCH_ALLOW_DESTINATIONS=127.0.0.0/8 (the \
     receiver), DISPATCH_WORKER_ID";

/// The harness's own choices for `chaos` (not for `bench`, which measures the shipped
/// defaults): JSON logs at `warn`, short shutdown grace periods.
const QUIET: [(&str, &str); 2] = [("DISPATCH_LOG_FORMAT", "json"), ("RUST_LOG", "warn")];

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
            if key.starts_with("DISPATCH_") || key.starts_with("OTEL_") || key == "RUST_LOG" {
                command.env_remove(key.as_ref());
            }
        }
        command
            .env("DATABASE_URL", self.database_url)
            .env("DISPATCH_DATABASE_URL", self.database_url)
            .env("ADDR", &addr)
            .env("DISPATCH_ADDR", &addr)
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

    /// The API's part of [`REQUIRED_SETTINGS`].
    fn required_api(&self) -> Vec<(&'static str, String)> {
        vec![
            ("DISPATCH_API_KEYS", self.api_key.to_owned()),
            (
                "DISPATCH_SECRET_KEYS",
                dispatch_config::development::SECRET_KEYS.to_owned(),
            ),
            // The development sealing key is refused without it.
            ("DISPATCH_DEVELOPMENT", "true".to_owned()),
            ("DISPATCH_ALLOW_DESTINATIONS", "127.0.0.0/8".to_owned()),
        ]
    }

    /// A worker's part of [`REQUIRED_SETTINGS`].
    fn required_worker(&self, index: usize) -> Vec<(&'static str, String)> {
        vec![
            ("DISPATCH_WORKER_ID", format!("{}-{index}", self.label)),
            ("DISPATCH_ALLOW_DESTINATIONS", "127.0.0.0/8".to_owned()),
            (
                "DISPATCH_SECRET_KEYS",
                dispatch_config::development::SECRET_KEYS.to_owned(),
            ),
            ("DISPATCH_DEVELOPMENT", "true".to_owned()),
        ]
    }

    fn quiet(mut env: Vec<(&'static str, String)>) -> Vec<(&'static str, String)> {
        env.extend(QUIET.iter().map(|(k, v)| (*k, (*v).to_owned())));
        env
    }

    /// The API with the shipped defaults: only [`REQUIRED_SETTINGS`], then `--api-env`.
    pub fn api_as_shipped(&self) -> Result<Service> {
        self.spawn("dispatch-api", "api", &self.required_api(), self.api_env)
    }

    /// Worker `index` (1-based) with the shipped defaults: only [`REQUIRED_SETTINGS`], then
    /// `--worker-env`.
    pub fn worker_as_shipped(&self, index: usize) -> Result<Service> {
        let name = format!("worker-{index}");
        self.spawn(
            "dispatch-worker",
            &name,
            &self.required_worker(index),
            self.worker_env,
        )
    }

    /// The API as `chaos` runs it ([`QUIET`], a 5 s shutdown timeout).
    pub fn api(&self) -> Result<Service> {
        self.api_named("api")
    }

    /// Like [`Launch::api`], called `name` (its log is `<label>-<name>.log`), e.g. a second one
    /// to hand over to while the first drains.
    pub fn api_named(&self, name: &str) -> Result<Service> {
        let mut env = Self::quiet(self.required_api());
        env.push(("DISPATCH_SHUTDOWN_TIMEOUT_SECS", "5".to_owned()));
        self.spawn("dispatch-api", name, &env, self.api_env)
    }

    /// Worker `index` (1-based) as `chaos` runs it ([`QUIET`], a 5 s shutdown grace): one
    /// destination may use every slot of the worker (`max_in_flight_per_destination` =
    /// `max_in_flight`).
    pub fn worker(&self, index: usize, max_in_flight: usize) -> Result<Service> {
        let name = format!("worker-{index}");
        let mut env = Self::quiet(self.required_worker(index));
        env.extend([
            ("DISPATCH_MAX_IN_FLIGHT", max_in_flight.to_string()),
            (
                "DISPATCH_MAX_IN_FLIGHT_PER_DESTINATION",
                max_in_flight.to_string(),
            ),
            ("DISPATCH_SHUTDOWN_GRACE_SECS", "5".to_owned()),
        ]);
        self.spawn("dispatch-worker", &name, &env, self.worker_env)
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

    /// Lines the process logged at `WARN` or `ERROR` (JSON or text format), read line by line
    /// (the log of a long run at the default `info` level is large).
    pub fn log_lines(&self) -> usize {
        use std::io::BufRead;
        let Ok(file) = std::fs::File::open(&self.log) else {
            return 0;
        };
        std::io::BufReader::new(file)
            .lines()
            .map_while(Result::ok)
            .filter(|l| is_warning(l))
            .count()
    }
}

/// Whether a log line is at `WARN` or `ERROR` (`"level":"WARN"` in JSON, ` WARN ` in text).
fn is_warning(line: &str) -> bool {
    ["WARN", "ERROR"].iter().any(|level| {
        line.contains(&format!("\"level\":\"{level}\"")) || line.contains(&format!(" {level} "))
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_are_told_from_other_lines() {
        assert!(is_warning(
            r#"{"timestamp":"t","level":"WARN","fields":{"message":"slow"}}"#
        ));
        assert!(is_warning(r#"{"level":"ERROR","fields":{}}"#));
        assert!(is_warning(
            "2026-12-05T10:00:00Z  WARN dispatch_worker: slow"
        ));
        assert!(!is_warning(
            r#"{"level":"INFO","fields":{"message":"delivery attempt"}}"#
        ));
        assert!(!is_warning(
            "2026-12-05T10:00:00Z  INFO dispatch_api: listening"
        ));
    }
}
