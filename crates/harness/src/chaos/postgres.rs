//! The chaos suite's own PostgreSQL: a private, durable cluster (never the machine's shared
//! server) that scenarios may stop — cleanly or as a crash — and start again on the same port.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use dispatch_test_support::cluster::{self, Cluster};

/// How the server is stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// `pg_ctl stop -m fast`: sessions are ended, a shutdown checkpoint is written.
    Fast,
    /// `pg_ctl stop -m immediate`: every process quits at once, as in a crash; the next start
    /// runs crash recovery from the WAL.
    Immediate,
}

impl StopMode {
    pub fn name(self) -> &'static str {
        match self {
            StopMode::Fast => "fast",
            StopMode::Immediate => "immediate",
        }
    }
}

pub struct ChaosPostgres {
    cluster: Cluster,
    port: u16,
    log: PathBuf,
    /// `-c name=value` settings, given again at every start.
    settings: Vec<String>,
}

/// What every start of a chaos cluster is given.
const BASE_SETTINGS: [&str; 1] = ["max_connections=200"];

impl ChaosPostgres {
    /// Creates (once) and starts the cluster under the temporary folder (reachable by the
    /// `postgres` OS user when we run as root), on a free port.
    pub fn start(workspace: &Path) -> Result<Self> {
        let mut hasher = std::hash::DefaultHasher::new();
        std::hash::Hash::hash(&workspace, &mut hasher);
        let base = std::env::temp_dir().join(format!(
            "dispatch-chaos-{:x}",
            std::hash::Hasher::finish(&hasher)
        ));
        Self::start_in(&base, &base.join("postgres.log"), &[])
    }

    /// The cluster in `base/data` (created unless it exists), logging to `log` (outside `base`
    /// when `base` may fill up), with `settings` on top of the suite's own.
    pub fn start_in(base: &Path, log: &Path, settings: &[&str]) -> Result<Self> {
        let data_dir = base.join("data");
        if !data_dir.join("PG_VERSION").is_file() {
            eprintln!("chaos: initdb {}", data_dir.display());
        }
        let mut cluster = Cluster::init(&data_dir).map_err(|e| anyhow!(e))?;
        let settings: Vec<String> = BASE_SETTINGS
            .iter()
            .chain(settings)
            .map(|s| (*s).to_owned())
            .collect();
        let as_str: Vec<&str> = settings.iter().map(String::as_str).collect();
        // Durable commits, as in production: a crash must not lose what was acknowledged.
        let port = cluster.start(log, &as_str).map_err(|e| anyhow!(e))?;
        eprintln!(
            "chaos: private PostgreSQL on 127.0.0.1:{port} ({}, log {})",
            data_dir.display(),
            log.display()
        );
        Ok(Self {
            cluster,
            port,
            log: log.to_owned(),
            settings,
        })
    }

    /// Whether the server is running (`pg_ctl status`): after a PANIC whose crash recovery
    /// failed (no space for it, say) the postmaster has exited.
    pub fn is_running(&self) -> bool {
        let mut c = self.cluster.command("pg_ctl");
        c.arg("-D").arg(self.cluster.data_dir()).arg("status");
        cluster::run(c, "pg_ctl status").is_ok()
    }

    pub fn admin_url(&self) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/postgres?sslmode=disable",
            self.port
        )
    }

    /// Stops the server; returns how long `pg_ctl` took.
    pub fn stop(&self, mode: StopMode) -> Result<Duration> {
        let started = Instant::now();
        let mut c = self.cluster.command("pg_ctl");
        c.arg("-D").arg(self.cluster.data_dir()).args([
            "-m",
            mode.name(),
            "-w",
            "-t",
            "60",
            "stop",
        ]);
        cluster::run(c, "pg_ctl stop").map_err(|e| anyhow!(e))?;
        Ok(started.elapsed())
    }

    /// Starts the stopped server again on the same port (the services keep their URLs);
    /// returns how long `pg_ctl` took (crash recovery included).
    pub fn start_again(&self) -> Result<Duration> {
        let started = Instant::now();
        let mut options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories=''",
            self.port
        );
        for setting in &self.settings {
            options.push_str(" -c ");
            options.push_str(setting);
        }
        let mut c = self.cluster.command("pg_ctl");
        c.arg("-D")
            .arg(self.cluster.data_dir())
            .arg("-l")
            .arg(&self.log)
            .args(["-w", "-t", "60", "-o", &options, "start"]);
        cluster::run(c, "pg_ctl start").map_err(|e| anyhow!(e))?;
        Ok(started.elapsed())
    }
}
