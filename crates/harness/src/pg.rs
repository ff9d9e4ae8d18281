//! Finding or starting PostgreSQL for `dev` and `test`: use `DATABASE_URL` when that server
//! answers; otherwise start a private cluster from the machine's own `initdb`/`pg_ctl` (installed
//! first when missing and allowed: [`crate::setup`]) on a free port (`dispatch_test_support::cluster`, which the TLS tests use too). `bench` always starts a
//! fresh cluster of its own with PostgreSQL's default settings ([`start_fresh_for_bench`]),
//! unless it is given a server explicitly ([`given`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use dispatch_store::admin::{self, url_with_database};
use dispatch_test_support::cluster::{self, Cluster};

pub const DEFAULT_DATABASE_URL: &str =
    "postgres://postgres:postgres@localhost:5432/dispatch?sslmode=disable";

/// A PostgreSQL server we can use, and the private cluster to stop afterwards, if we started one.
pub struct Postgres {
    /// URL of the `dispatch` (or `DATABASE_URL`'s) database on this server.
    pub database_url: String,
    /// URL of the maintenance database (`postgres`), for creating databases.
    pub admin_url: String,
    cluster: Option<Cluster>,
    /// A data directory to delete once its server has stopped (a throw-away cluster).
    remove_on_stop: Option<PathBuf>,
}

/// What the cluster is for: tests trade durability for speed, dev keeps it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Dev,
    Test,
}

impl Postgres {
    pub fn started_privately(&self) -> bool {
        self.cluster.is_some()
    }

    /// Stops the private cluster, if we started one (and deletes it, if it was a throw-away).
    pub fn stop(&mut self) {
        if let Some(mut cluster) = self.cluster.take() {
            match cluster.stop() {
                Ok(()) => {
                    if let Some(dir) = self.remove_on_stop.take()
                        && let Err(e) = std::fs::remove_dir_all(&dir)
                    {
                        eprintln!("xtask: could not remove {}: {e}", dir.display());
                    }
                }
                Err(e) => eprintln!("xtask: {e}"),
            }
        }
    }
}

async fn answers(url: &str) -> bool {
    matches!(
        tokio::time::timeout(Duration::from_secs(3), admin::connect(url)).await,
        Ok(Ok(_))
    )
}

/// Uses `DATABASE_URL` (or the seed's default) when its server answers, else starts a cluster.
pub async fn find_or_start(workspace: &Path, purpose: Purpose) -> Result<Postgres> {
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_DATABASE_URL.to_owned());
    let admin_url = url_with_database(&url, "postgres");
    if answers(&admin_url).await {
        eprintln!("xtask: using the PostgreSQL server of DATABASE_URL");
        return Ok(Postgres {
            database_url: url,
            admin_url,
            cluster: None,
            remove_on_stop: None,
        });
    }
    eprintln!("xtask: no PostgreSQL answers at DATABASE_URL; starting a private cluster");
    start_private(workspace, purpose).await
}

/// Where private clusters live. As root the cluster belongs to the `postgres` user, who must be
/// able to reach it: a clone under a private home or mktemp folder is not reachable, /tmp always
/// is.
fn cluster_base(workspace: &Path) -> PathBuf {
    if cluster::is_root() {
        let mut hasher = std::hash::DefaultHasher::new();
        std::hash::Hash::hash(&workspace, &mut hasher);
        std::env::temp_dir().join(format!(
            "dispatch-pg-{:x}",
            std::hash::Hasher::finish(&hasher)
        ))
    } else {
        workspace.join("target").join("dispatch-pg")
    }
}

async fn start_private(workspace: &Path, purpose: Purpose) -> Result<Postgres> {
    let name = match purpose {
        Purpose::Dev => "dev",
        Purpose::Test => "test",
    };
    crate::setup::ensure_postgres_server()?;
    let base = cluster_base(workspace);
    let data_dir = base.join(name);
    if !data_dir.join("PG_VERSION").is_file() {
        eprintln!("xtask: initdb {}", data_dir.display());
    }
    let mut cluster = Cluster::init(&data_dir).map_err(|e| anyhow!(e))?;
    let fast: &[&str] = match purpose {
        Purpose::Test => &[
            "fsync=off",
            "synchronous_commit=off",
            "full_page_writes=off",
        ],
        Purpose::Dev => &[],
    };
    let port = cluster
        .start(&base.join(format!("{name}.log")), fast)
        .map_err(|e| anyhow!(e))?;
    eprintln!(
        "xtask: PostgreSQL started on 127.0.0.1:{port} ({})",
        data_dir.display()
    );
    Ok(private(port, cluster, None))
}

fn private(port: u16, cluster: Cluster, remove_on_stop: Option<PathBuf>) -> Postgres {
    let admin_url = format!("postgres://postgres@127.0.0.1:{port}/postgres?sslmode=disable");
    Postgres {
        database_url: url_with_database(&admin_url, "dispatch"),
        admin_url,
        cluster: Some(cluster),
        remove_on_stop,
    }
}

/// The server at `url`, used as it is (nothing is started, nothing is stopped).
pub async fn given(url: &str) -> Result<Postgres> {
    let admin_url = url_with_database(url, "postgres");
    if !answers(&admin_url).await {
        anyhow::bail!("the PostgreSQL server of the given URL does not answer");
    }
    Ok(Postgres {
        database_url: url.to_owned(),
        admin_url,
        cluster: None,
        remove_on_stop: None,
    })
}

/// A new cluster for one benchmark run: `initdb` into `bench-<pid>` (a fresh data directory,
/// so every setting is PostgreSQL's default: autovacuum on, fsync on, synchronous_commit on),
/// started with no setting of ours but its address (and `settings`, only for a diagnostic run),
/// and deleted when stopped. Clusters left by runs whose process is gone are stopped and deleted
/// first.
pub async fn start_fresh_for_bench(workspace: &Path, settings: &[&str]) -> Result<Postgres> {
    crate::setup::ensure_postgres_server()?;
    let base = cluster_base(workspace);
    remove_dead_bench_clusters(&base);
    let data_dir = base.join(format!("bench-{}", std::process::id()));
    if data_dir.exists() {
        std::fs::remove_dir_all(&data_dir)
            .with_context(|| format!("removing {}", data_dir.display()))?;
    }
    eprintln!(
        "xtask: initdb {} (PostgreSQL's defaults)",
        data_dir.display()
    );
    let mut cluster = Cluster::init(&data_dir).map_err(|e| anyhow!(e))?;
    let log = base.join("bench.log");
    if log.exists() {
        std::fs::remove_file(&log).with_context(|| format!("removing {}", log.display()))?;
    }
    let port = cluster.start(&log, settings).map_err(|e| anyhow!(e))?;
    eprintln!(
        "xtask: PostgreSQL started on 127.0.0.1:{port} ({}; log {})",
        data_dir.display(),
        log.display()
    );
    Ok(private(port, cluster, Some(data_dir)))
}

/// Stops and deletes `bench-<pid>` clusters under `base` whose process no longer runs.
fn remove_dead_bench_clusters(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix("bench-") else {
            continue;
        };
        if pid.parse::<u32>().is_err() || Path::new("/proc").join(pid).exists() {
            continue;
        }
        let dir = entry.path();
        if dir.join("PG_VERSION").is_file()
            && let Ok(leftover) = Cluster::init(&dir)
        {
            let mut stop = leftover.command("pg_ctl");
            stop.arg("-D").arg(&dir).args(["-m", "immediate", "stop"]);
            let _ = stop.output();
        }
        eprintln!(
            "xtask: removing {}, left by an interrupted bench",
            dir.display()
        );
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            eprintln!("xtask: could not remove {}: {e}", dir.display());
        }
    }
}

/// Creates the database `database_url` names when it does not exist yet.
pub async fn ensure_database(pg: &Postgres) -> Result<()> {
    let name = admin::database_of(&pg.database_url)
        .context("DATABASE_URL names no database")?
        .to_owned();
    let mut conn = admin::connect(&pg.admin_url).await?;
    if !admin::database_exists(&mut conn, &name).await? {
        admin::create_database(&mut conn, &name, None)
            .await
            .with_context(|| format!("creating database {name}"))?;
        eprintln!("xtask: created database {name}");
    }
    Ok(())
}

/// Drops per-test databases and templates left by interrupted runs (only on a private cluster).
pub async fn drop_leftover_test_databases(pg: &Postgres) -> Result<()> {
    let mut conn = admin::connect(&pg.admin_url).await?;
    for prefix in ["dispatch_test_", "dispatch_tmpl_"] {
        for name in admin::databases_with_prefix(&mut conn, prefix).await? {
            admin::drop_database(&mut conn, &name).await?;
        }
    }
    Ok(())
}

/// PostgreSQL for the test suite: found or started (fast, not durable), with the leftovers of
/// interrupted runs cleared when the cluster is our own.
pub async fn for_tests(workspace: &Path) -> Result<Postgres> {
    let pg = find_or_start(workspace, Purpose::Test).await?;
    if pg.started_privately() {
        // Nobody else uses this cluster: clear what interrupted runs left behind.
        drop_leftover_test_databases(&pg).await?;
    }
    Ok(pg)
}
