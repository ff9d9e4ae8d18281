//! Which PostgreSQL the benchmark measures, and what the report says about it. By default a
//! private cluster, `initdb`'d for this run with PostgreSQL's default settings (autovacuum,
//! fsync and synchronous_commit on); a server of your own only when asked for explicitly
//! (`--database-url URL`, or `--use-database-url` for DATABASE_URL). The server a machine
//! happens to run (with `autovacuum = off`, say) is never measured by accident.

use anyhow::{Context, Result, bail};
use dispatch_store::admin;
use dispatch_store::queries::bench::ServerFacts;

use super::args::Args;
use crate::pg::{self, Postgres};

/// The server to measure, and how the report names it.
pub async fn server(args: &Args) -> Result<(Postgres, &'static str)> {
    if let Some(url) = &args.database_url {
        return Ok((pg::given(url).await?, "the server of --database-url"));
    }
    if args.use_database_url {
        let url =
            std::env::var("DATABASE_URL").context("--use-database-url: DATABASE_URL is not set")?;
        return Ok((pg::given(&url).await?, "the server of DATABASE_URL"));
    }
    if args.pg_statements {
        let cluster = pg::start_fresh_for_bench(
            &crate::workspace_root(),
            &super::measure::statements::SETTINGS,
        )
        .await?;
        return Ok((
            cluster,
            "a private cluster (initdb, PostgreSQL's defaults but pg_stat_statements loaded)",
        ));
    }
    let cluster = pg::start_fresh_for_bench(&crate::workspace_root(), &[]).await?;
    Ok((cluster, "a private cluster (initdb, PostgreSQL's defaults)"))
}

/// `PostgreSQL <version>: autovacuum=… fsync=… …`.
pub fn describe(facts: &ServerFacts) -> String {
    format!(
        "PostgreSQL {}: autovacuum={} fsync={} synchronous_commit={} full_page_writes={} \
         shared_buffers={} max_connections={}",
        facts.version,
        facts.autovacuum,
        facts.fsync,
        facts.synchronous_commit,
        facts.full_page_writes,
        facts.shared_buffers,
        facts.max_connections
    )
}

/// One `WARNING: …` line per setting that makes the figures unlike a server with the defaults.
pub fn warnings(facts: &ServerFacts) -> Vec<String> {
    let mut out = Vec::new();
    if facts.autovacuum != "on" {
        out.push(
            "WARNING: autovacuum is off on this server: dead tuples pile up in the queue \
             tables and claims slow down run after run; the figures do not hold for a server \
             with the defaults"
                .to_owned(),
        );
    }
    if facts.fsync != "on" {
        out.push(
            "WARNING: fsync is off on this server: commits are not durable and the figures \
             are not comparable"
                .to_owned(),
        );
    }
    if facts.synchronous_commit == "off" {
        out.push(
            "WARNING: synchronous_commit is off on this server: commits do not wait for the \
             WAL flush and the figures are not comparable"
                .to_owned(),
        );
    }
    out
}

/// Refuses a concurrency the server cannot serve: the ceiling opens `concurrency` connections at
/// once, and a few more must stay free for the benchmark's own and the server's reserve.
pub fn check_connections(concurrency: usize, max_connections: i64) -> Result<()> {
    let needed = i64::try_from(concurrency)
        .unwrap_or(i64::MAX)
        .saturating_add(10);
    if needed > max_connections {
        bail!(
            "--concurrency {concurrency} needs {needed} connections but the server allows \
             max_connections = {max_connections}"
        );
    }
    Ok(())
}

/// Drops benchmark databases (named `<prefix><pid>_…`) whose process is gone (left by an
/// interrupted run).
pub async fn drop_leftovers(admin_url: &str, prefix: &str) -> Result<()> {
    let mut conn = admin::connect(admin_url).await?;
    for name in admin::databases_with_prefix(&mut conn, prefix).await? {
        let pid = name[prefix.len()..].split('_').next().unwrap_or("");
        let alive = !pid.is_empty() && std::path::Path::new("/proc").join(pid).exists();
        if !alive {
            eprintln!("bench: dropping {name}, left by an interrupted run");
            admin::drop_database(&mut conn, &name).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(autovacuum: &str, fsync: &str, synchronous_commit: &str) -> ServerFacts {
        ServerFacts {
            version: "15.10".to_owned(),
            autovacuum: autovacuum.to_owned(),
            fsync: fsync.to_owned(),
            synchronous_commit: synchronous_commit.to_owned(),
            full_page_writes: "on".to_owned(),
            shared_buffers: "128MB".to_owned(),
            max_connections: 100,
        }
    }

    #[test]
    fn the_defaults_warrant_no_warning() {
        let f = facts("on", "on", "on");
        assert!(warnings(&f).is_empty());
        assert_eq!(
            describe(&f),
            "PostgreSQL 15.10: autovacuum=on fsync=on synchronous_commit=on \
             full_page_writes=on shared_buffers=128MB max_connections=100"
        );
    }

    #[test]
    fn autovacuum_or_fsync_off_is_a_warning() {
        let w = warnings(&facts("off", "on", "on"));
        assert_eq!(w.len(), 1);
        assert!(w[0].starts_with("WARNING: autovacuum is off"));
        let w = warnings(&facts("off", "off", "off"));
        assert_eq!(w.len(), 3);
        assert!(w.iter().all(|l| l.starts_with("WARNING: ")));
    }

    #[test]
    fn concurrency_must_leave_connections_free() {
        assert!(check_connections(64, 100).is_ok());
        assert!(check_connections(90, 100).is_ok());
        let err = check_connections(91, 100).expect_err("too many");
        assert!(err.to_string().contains("max_connections = 100"));
    }
}
