//! The ceiling: how many durable one-row INSERT transactions per second the same PostgreSQL
//! commits at the same concurrency, measured by `pgbench` (the machine's own, next to `initdb`).
//! Every event Dispatch accepts costs at least one such commit, so this is the rate no ingestion
//! (and no delivery, which commits its outcome) can beat for long.
//!
//! The script ([`queries::CEILING_PGBENCH_SCRIPT`]) inserts one small event-shaped row into a
//! scratch table (`bench_ceiling`) per transaction. It runs twice, with `-M simple` and
//! `-M prepared`; the ratios of the report are against the prepared figure (the services use
//! prepared statements too).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use dispatch_store::admin;
use dispatch_store::queries::bench as queries;

/// What `pgbench` reported for one protocol.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pgbench {
    pub tps: f64,
    pub transactions: u64,
    /// Failed transactions (PostgreSQL 15's pgbench counts them; 0 when not reported).
    pub failed: u64,
}

/// One measurement: both protocols, one after the other, on a fresh scratch table each.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ceiling {
    pub clients: usize,
    pub threads: usize,
    pub duration: Duration,
    pub simple: Pgbench,
    pub prepared: Pgbench,
}

/// `pgbench` next to the server binaries `initdb` and `pg_ctl` are found with, else on `PATH`.
pub fn pgbench_path() -> PathBuf {
    dispatch_test_support::cluster::server_binaries()
        .ok()
        .map(|dir| dir.join("pgbench"))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("pgbench"))
}

/// Reads `tps = …`, `number of transactions actually processed: …` and `number of failed
/// transactions: …` from pgbench's report.
pub fn parse_pgbench(report: &str) -> Option<Pgbench> {
    let number_after = |prefix: &str| {
        report.lines().find_map(|l| {
            let rest = l.trim().strip_prefix(prefix)?;
            rest.split_whitespace()
                .next()?
                .split('/')
                .next()?
                .parse::<f64>()
                .ok()
        })
    };
    Some(Pgbench {
        tps: number_after("tps = ")?,
        transactions: number_after("number of transactions actually processed:")? as u64,
        failed: number_after("number of failed transactions:").unwrap_or(0.0) as u64,
    })
}

/// Runs `pgbench -n -M <protocol> -c <clients> -j <threads> -T <secs> -f <script>` against
/// `database_url` (a libpq connection URI; pgbench is a client, any OS user may run it).
async fn pgbench(
    database_url: &str,
    protocol: &str,
    clients: usize,
    threads: usize,
    duration: Duration,
    script: &Path,
) -> Result<Pgbench> {
    let program = pgbench_path();
    let output = tokio::process::Command::new(&program)
        .args(["-n", "-M", protocol])
        .args(["-c", &clients.to_string(), "-j", &threads.to_string()])
        .args(["-T", &duration.as_secs().max(1).to_string()])
        .arg("-f")
        .arg(script)
        .arg(database_url)
        .kill_on_drop(true)
        .output()
        .await
        .with_context(|| format!("running {}", program.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "pgbench -M {protocol} failed ({}):\n{stdout}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    parse_pgbench(&stdout).with_context(|| format!("no tps in pgbench's report:\n{stdout}"))
}

/// Measures the ceiling on the (scratch) database `database_url`: `clients` pgbench clients on
/// two threads (one when there is one client), `duration` each protocol, after an unreported
/// `warm_up` run if given. The script is written to `scratch`.
pub async fn measure(
    database_url: &str,
    clients: usize,
    duration: Duration,
    warm_up: Option<Duration>,
    scratch: &Path,
) -> Result<Ceiling> {
    let script = scratch.join("ceiling.pgbench");
    std::fs::write(&script, queries::CEILING_PGBENCH_SCRIPT)
        .with_context(|| format!("writing {}", script.display()))?;
    let threads = clients.clamp(1, 2);
    let mut conn = admin::connect(database_url).await?;
    if let Some(warm_up) = warm_up {
        // A fresh cluster creates its WAL segments during its first heavy writes (later ones
        // recycle them): let that happen before anything is measured.
        queries::create_ceiling_table(&mut conn).await?;
        pgbench(database_url, "prepared", clients, threads, warm_up, &script).await?;
    }
    let mut results = Vec::with_capacity(2);
    for protocol in ["simple", "prepared"] {
        queries::drop_ceiling_table(&mut conn).await?;
        queries::create_ceiling_table(&mut conn).await?;
        results.push(pgbench(database_url, protocol, clients, threads, duration, &script).await?);
    }
    queries::drop_ceiling_table(&mut conn).await?;
    Ok(Ceiling {
        clients,
        threads,
        duration,
        simple: results[0],
        prepared: results[1],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pgbench_report_is_read() {
        let report = "pgbench (15.10 (Debian 15.10-0+deb12u1))\n\
            transaction type: ceiling.pgbench\n\
            scaling factor: 1\n\
            query mode: prepared\n\
            number of clients: 64\n\
            number of threads: 2\n\
            maximum number of tries: 1\n\
            duration: 5 s\n\
            number of transactions actually processed: 70512\n\
            number of failed transactions: 3 (0.004%)\n\
            latency average = 4.538 ms\n\
            initial connection time = 61.225 ms\n\
            tps = 14102.437061 (without initial connection time)\n";
        assert_eq!(
            parse_pgbench(report),
            Some(Pgbench {
                tps: 14102.437061,
                transactions: 70512,
                failed: 3
            })
        );
        // Older pgbench: no failure count.
        let old = "number of transactions actually processed: 10/10\ntps = 5.5 (excluding x)\n";
        assert_eq!(
            parse_pgbench(old),
            Some(Pgbench {
                tps: 5.5,
                transactions: 10,
                failed: 0
            })
        );
        assert_eq!(parse_pgbench("pgbench: error: connection failed"), None);
    }

    #[test]
    fn pgbench_is_found() {
        assert!(pgbench_path().ends_with("pgbench"));
    }
}
