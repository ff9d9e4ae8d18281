//! Finding or starting PostgreSQL for `dev` and `test`: use `DATABASE_URL` when that server
//! answers; otherwise start a private cluster from the machine's own `initdb`/`pg_ctl` on a free
//! port (`dispatch_test_support::cluster`, which the TLS tests use too).

use std::path::Path;
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

    /// Stops the private cluster, if we started one.
    pub fn stop(&mut self) {
        if let Some(mut cluster) = self.cluster.take()
            && let Err(e) = cluster.stop()
        {
            eprintln!("xtask: {e}");
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
        });
    }
    eprintln!("xtask: no PostgreSQL answers at DATABASE_URL; starting a private cluster");
    start_private(workspace, purpose).await
}

async fn start_private(workspace: &Path, purpose: Purpose) -> Result<Postgres> {
    let name = match purpose {
        Purpose::Dev => "dev",
        Purpose::Test => "test",
    };
    // As root the cluster belongs to the `postgres` user, who must be able to reach it: a
    // clone under a private home or mktemp folder is not reachable, /tmp always is.
    let base = if cluster::is_root() {
        let mut hasher = std::hash::DefaultHasher::new();
        std::hash::Hash::hash(&workspace, &mut hasher);
        std::env::temp_dir().join(format!(
            "dispatch-pg-{:x}",
            std::hash::Hasher::finish(&hasher)
        ))
    } else {
        workspace.join("target").join("dispatch-pg")
    };
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
    let admin_url = format!("postgres://postgres@127.0.0.1:{port}/postgres?sslmode=disable");
    Ok(Postgres {
        database_url: url_with_database(&admin_url, "dispatch"),
        admin_url,
        cluster: Some(cluster),
    })
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
