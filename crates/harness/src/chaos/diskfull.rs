//! `postgres-disk-full`: PostgreSQL runs out of disk under load, in two phases ([`PHASES`]), each
//! with a cluster of its own on a tmpfs the scenario mounts (as root; skipped with one line where
//! mounting is not allowed). Once the API and a worker are running, the tmpfs is shrunk to what
//! is used plus [`HEADROOM_KIB`], and a paced stream of padded events fills it. In the `data`
//! phase WAL segments were recycled ahead first, so the tables run out of room: their writes
//! fail with `53100 could not extend file … No space left on device` and the server stays up. In
//! the `wal` phase the WAL runs out first: a failed WAL write is a PANIC (every session cut, a
//! crash restart) and crash recovery cannot finish on the full disk, so the postmaster exits.
//! Then the tmpfs grows again (`mount -o remount`), the server is started again if it exited
//! (as an operator would), and the queue drains.
//!
//! Checks: every refusal is a `503` (never a `500`, and no request left unanswered); the disk
//! really filled (some `503`s); nothing is `failed` (the worker stops claiming and keeps its
//! outcomes, it does not fail deliveries over the database's state); and after space returns
//! every accepted event is delivered (the accounting's "lost" covers a `2xx` for an event that
//! was not stored).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use dispatch_store::admin;
use dispatch_store::queries::chaos as queries;
use dispatch_test_support::cluster;
use serde_json::json;

use super::postgres::ChaosPostgres;
use super::report::Row;
use super::scenarios::{row, wait_until};
use super::{Chaos, Destination, with_env, worker_base_env};

/// The tmpfs's size while the cluster is set up, and again once space "returns".
const ROOMY_MIB: u64 = 512;
/// Room left once the tmpfs is shrunk: less than one WAL segment (16 MiB) beyond the padding's
/// worth of a few seconds, so both data-file and WAL writes run out.
const HEADROOM_KIB: u64 = 12 * 1024;
/// Filler per event: the disk fills in seconds, not minutes.
const PADDING: usize = 4096;
/// Events a second.
pub const PER_SEC: u64 = 200;
/// Each phase's row, and whether WAL is recycled ahead (so the tables fill first).
const PHASES: [(&str, bool); 2] = [
    ("postgres-disk-full-data", true),
    ("postgres-disk-full-wal", false),
];

/// A tmpfs mounted for the scenario, unmounted (and its folder removed) on drop.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `mib` MiB on a fresh folder, or says why it cannot.
    fn mount(dir: &Path, mib: u64) -> Result<Self, String> {
        if !cluster::is_root() {
            return Err("mounting a tmpfs needs root".to_owned());
        }
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let mut c = Command::new("mount");
        c.args([
            "-t",
            "tmpfs",
            "-o",
            &format!("size={mib}m,mode=0755"),
            "tmpfs",
        ])
        .arg(dir);
        if let Err(e) = cluster::run(c, "mount -t tmpfs") {
            let _ = std::fs::remove_dir(dir);
            return Err(e.trim().to_owned());
        }
        Ok(Self {
            dir: dir.to_owned(),
        })
    }

    fn resize_kib(&self, kib: u64) -> Result<()> {
        let mut c = Command::new("mount");
        c.args(["-o", &format!("remount,size={kib}k")])
            .arg(&self.dir);
        cluster::run(c, "mount -o remount").map_err(|e| anyhow::anyhow!(e))
    }

    /// Bytes in use on the tmpfs.
    fn used_kib(&self) -> Result<u64> {
        let out = Command::new("df")
            .args(["-k", "--output=used"])
            .arg(&self.dir)
            .output()
            .context("running df")?;
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .and_then(|l| l.trim().parse().ok())
            .context("reading df's output")
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
        let _ = std::fs::remove_dir(&self.dir);
    }
}

pub async fn postgres_disk_full(chaos: &Chaos, events: u64) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    for (name, recycle) in PHASES {
        let base =
            std::env::temp_dir().join(format!("dispatch-chaos-{}-{name}", std::process::id()));
        let tmpfs = match Tmpfs::mount(&base, ROOMY_MIB) {
            Ok(t) => t,
            Err(why) => {
                eprintln!("chaos: postgres-disk-full skipped: {why}");
                return Ok(Vec::new());
            }
        };
        eprintln!("chaos:   {name}");
        // The server's log stays off the small disk, where the `postgres` user can write it.
        let log = pg_log(name);
        std::fs::write(&log, "").with_context(|| format!("creating {}", log.display()))?;
        let mut chown = Command::new("chown");
        chown.arg("postgres:").arg(&log);
        cluster::run(chown, "chown the server log").map_err(|e| anyhow::anyhow!(e))?;
        let pg = ChaosPostgres::start_in(
            &tmpfs.dir,
            &log,
            // Few WAL segments kept, so the disk's use is the data's.
            &["min_wal_size=32MB", "max_wal_size=48MB"],
        )?;
        let outcome = run(chaos, &pg, &tmpfs, name, recycle, events).await;
        drop(pg);
        drop(tmpfs);
        rows.push(outcome?);
    }
    Ok(rows)
}

async fn run(
    chaos: &Chaos,
    pg: &ChaosPostgres,
    tmpfs: &Tmpfs,
    name: &'static str,
    recycle: bool,
    events: u64,
) -> Result<Row> {
    let stage = chaos
        .stage_on(&pg.admin_url(), name, &[Destination::healthy(0)])
        .await?;
    if recycle {
        let mut conn = admin::connect(&stage.database_url).await?;
        queries::recycle_wal(&mut conn).await?;
    }
    let api_env = with_env(&[], &[("DISPATCH_DB_CONNECT_TIMEOUT_MS", "1000")]);
    let worker_env = worker_base_env();
    let launch = chaos.launch(&stage, &api_env, &worker_env);
    let mut services = vec![
        launch.api()?,
        launch.worker(1, super::scenarios::MAX_IN_FLIGHT)?,
    ];
    chaos.ready(&mut services).await?;

    let used = tmpfs.used_kib()?;
    let small = used + HEADROOM_KIB;
    tmpfs.resize_kib(small)?;
    eprintln!(
        "chaos:   disk shrunk to {} MiB ({} MiB used)",
        small / 1024,
        used / 1024
    );

    let seconds = chaos.args.seconds;
    let per_sec = (events / seconds).max(1);
    let mut producer = chaos.producer(&stage, &services[0]);
    producer.padding = PADDING;
    let started = Instant::now();
    let sent = producer
        .paced(per_sec, seconds, super::scenarios::MAX_IN_FLIGHT)
        .await?;
    let full_for = started.elapsed();
    // What the worker did meanwhile: its deliveries must not have been failed over it.
    let failed_while_full = failed_count(&stage.database_url).await;
    let server_up_when_full = pg.is_running();

    tmpfs.resize_kib(ROOMY_MIB * 1024)?;
    let grown_at = Instant::now();
    let mut restarted = false;
    let reachable = || async { admin::connect(&stage.database_url).await.is_ok() };
    if !wait_until(Duration::from_secs(15), reachable).await {
        // Crash recovery could not finish on the full disk: the postmaster gave up.
        if pg.is_running() {
            bail!("PostgreSQL runs but accepts no connection 15 s after space returned");
        }
        tokio::task::block_in_place(|| pg.start_again())?;
        restarted = true;
    }
    let accepted = sent.accepted_ids(&producer);
    let expected = accepted.len() as u64 * stage.subscriptions.len() as u64;
    let drained = chaos
        .drain(&stage, expected, chaos.args.drain_within())
        .await;
    let drained_in = grown_at.elapsed();
    let worker_log = services[1].log.clone();
    for s in services {
        s.stop().await;
    }

    let mut row = row(&stage, sent.sent());
    // With the WAL full the server is down for longer than a lease: outcomes waiting in the
    // worker's buffer are fenced off once it is back, and those deliveries sent again.
    row.duplicates_allowed = !recycle;
    let refused = sent.refused();
    let claims_failed = count_lines(&worker_log, "claiming deliveries failed");
    let records_failed = count_lines(&worker_log, "could not record outcomes");
    let server_log = std::fs::read_to_string(pg_log(name)).unwrap_or_default();
    let extend_failed = server_log.matches("could not extend file").count();
    let panics = server_log.matches("PANIC:").count();
    let enospc = server_log.matches("No space left on device").count();
    row.notes.push(format!(
        "disk {} MiB used + {} MiB free; {} s of sending: refused {refused:?}, {} unanswered; \
         server log: {enospc} \"No space left on device\" ({extend_failed} \"could not extend \
         file\"), {panics} PANIC; server {} when \
         sending ended{}; worker: {claims_failed} failed claims, {records_failed} failed \
         records, {failed_while_full:?} failed deliveries while full; drained {:.1}s after \
         space returned",
        used / 1024,
        HEADROOM_KIB / 1024,
        full_for.as_secs(),
        sent.unanswered(),
        if server_up_when_full { "up" } else { "down" },
        if restarted {
            ", started again by hand"
        } else {
            ""
        },
        drained_in.as_secs_f64(),
    ));
    row.extra.insert(
        "disk_full".to_owned(),
        json!({
            "used_kib": used,
            "headroom_kib": HEADROOM_KIB,
            "refused_by_status": refused.iter().map(|(s, n)| (s.to_string(), json!(n))).collect::<serde_json::Map<_, _>>(),
            "unanswered": sent.unanswered(),
            "enospc_log_lines": enospc,
            "extend_failed_log_lines": extend_failed,
            "panics": panics,
            "server_restarted_by_hand": restarted,
            "worker_failed_claims": claims_failed,
            "worker_failed_records": records_failed,
            "failed_while_full": failed_while_full,
            "drained_secs_after_space": drained_in.as_secs_f64(),
        }),
    );
    if refused.get(&503).copied().unwrap_or(0) == 0 {
        row.failed_checks
            .push("the disk never filled: no 503 was answered".to_owned());
    }
    if refused.keys().any(|&s| s != 503) {
        row.failed_checks
            .push(format!("refusals other than 503: {refused:?}"));
    }
    if sent.unanswered() > 0 {
        row.failed_checks.push(format!(
            "{} requests were never answered",
            sent.unanswered()
        ));
    }
    if failed_while_full.is_some_and(|n| n > 0) {
        row.failed_checks
            .push("deliveries were marked failed while the disk was full".to_owned());
    }
    if !drained {
        row.notes.push("did not drain in time".to_owned());
    }
    chaos.finish(&stage, &mut row, &accepted, started).await?;
    Ok(row)
}

fn pg_log(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "dispatch-chaos-{}-{name}-postgres.log",
        std::process::id()
    ))
}

/// Deliveries in `failed`, if the database answers.
async fn failed_count(url: &str) -> Option<u64> {
    let mut conn = admin::connect(url).await.ok()?;
    let states = queries::delivery_states(&mut conn).await.ok()?;
    Some(states.iter().filter(|s| s.status == "failed").count() as u64)
}

fn count_lines(path: &Path, needle: &str) -> usize {
    std::fs::read_to_string(path)
        .map(|s| s.lines().filter(|l| l.contains(needle)).count())
        .unwrap_or(0)
}
