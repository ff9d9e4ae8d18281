//! The ceiling: how many durable single-row INSERT transactions per second the same PostgreSQL
//! commits at the same concurrency. Every event Dispatch accepts costs at least one such commit,
//! so this is the rate no ingestion (and no delivery, which commits its outcome) can beat.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use dispatch_store::admin;
use dispatch_store::queries::bench;
use tokio::sync::Barrier;
use tokio::task::JoinSet;

use super::procfs;
use super::receiver::unix_nanos;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ceiling {
    pub concurrency: usize,
    pub commits: u64,
    pub errors: u64,
    pub elapsed: Duration,
    pub tps: f64,
    /// CPU seconds the connections' backends used (when the server runs on this machine).
    pub postgres_cpu_secs: Option<f64>,
}

/// CPU ticks of the server processes behind this database's other connections.
async fn backends_cpu_ticks(conn: &mut dispatch_store::AsyncPgConnection) -> Option<u64> {
    let pids = bench::backend_pids(conn).await.ok()?;
    let ticks: Vec<u64> = pids
        .into_iter()
        .filter_map(|pid| u32::try_from(pid).ok())
        .filter(|&pid| procfs::is_postgres(pid))
        .filter_map(|pid| Some(procfs::sample(pid)?.cpu_ticks))
        .collect();
    (!ticks.is_empty()).then(|| ticks.iter().sum())
}

/// Runs `concurrency` connections, each inserting one row per transaction (autocommit) into
/// `bench_ceiling` of `database_url` for `duration`, and counts the commits.
pub async fn measure(
    database_url: &str,
    concurrency: usize,
    duration: Duration,
) -> Result<Ceiling> {
    let mut conn = admin::connect(database_url).await?;
    bench::create_ceiling_table(&mut conn).await?;
    let mut conns = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        conns.push(
            admin::connect(database_url)
                .await
                .context("opening the ceiling's connections")?,
        );
    }
    // Everyone starts together, once connected; the clock runs from the start signal.
    let start = Arc::new(Barrier::new(concurrency + 1));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = JoinSet::new();
    for (task, mut conn) in conns.into_iter().enumerate() {
        let (start, stop) = (start.clone(), stop.clone());
        tasks.spawn(async move {
            start.wait().await;
            let (mut commits, mut errors) = (0u64, 0u64);
            while !stop.load(Ordering::Relaxed) {
                let key = format!("c{task}-{commits}-{errors}");
                let value = format!(r#"{{"seq":{commits},"sent_at_ns":"{}"}}"#, unix_nanos());
                match bench::ceiling_insert(&mut conn, &key, &value).await {
                    Ok(()) => commits += 1,
                    Err(_) => {
                        errors += 1;
                        if errors > 100 {
                            break;
                        }
                    }
                }
            }
            (commits, errors)
        });
    }
    let cpu_before = backends_cpu_ticks(&mut conn).await;
    start.wait().await;
    let started = Instant::now();
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let cpu_after = backends_cpu_ticks(&mut conn).await;
    let (mut commits, mut errors) = (0, 0);
    while let Some(joined) = tasks.join_next().await {
        let (c, e) = joined.context("a ceiling task panicked")?;
        commits += c;
        errors += e;
    }
    // The last transactions finish after the stop signal; count their time too.
    let elapsed = started.elapsed();
    bench::drop_ceiling_table(&mut conn).await?;
    Ok(Ceiling {
        concurrency,
        commits,
        errors,
        elapsed,
        tps: super::stats::per_second(commits, elapsed),
        postgres_cpu_secs: cpu_before
            .zip(cpu_after)
            .map(|(b, a)| a.saturating_sub(b) as f64 / procfs::clock_ticks_per_sec() as f64),
    })
}
