//! Finding or starting PostgreSQL for `dev` and `test`: use `DATABASE_URL` when that server
//! answers; otherwise start a private cluster from the machine's own `initdb`/`pg_ctl` on a free
//! port (as the `postgres` OS user when we are root, because initdb refuses to run as root).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use dispatch_store::admin::{self, url_with_database};

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

struct Cluster {
    pg_ctl: PathBuf,
    data_dir: PathBuf,
    as_postgres_user: bool,
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
        if let Some(cluster) = self.cluster.take() {
            let status = cluster
                .command(&cluster.pg_ctl)
                .arg("-D")
                .arg(&cluster.data_dir)
                .args(["-m", "fast", "-w", "stop"])
                .status();
            if !status.is_ok_and(|s| s.success()) {
                eprintln!(
                    "xtask: could not stop PostgreSQL in {}",
                    cluster.data_dir.display()
                );
            }
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Cluster {
    fn command(&self, program: &Path) -> Command {
        if self.as_postgres_user {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
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

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Directories that may hold `initdb`, `pg_ctl` and `postgres`, best first.
fn candidate_bin_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    let mut versioned: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let major = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            Some((major, e.path().join("bin")))
        })
        .collect();
    versioned.sort_by_key(|v| std::cmp::Reverse(v.0));
    dirs.extend(versioned.into_iter().map(|(_, p)| p));
    dirs.push(PathBuf::from("/usr/local/pgsql/bin"));
    dirs.push(PathBuf::from("/opt/homebrew/bin"));
    dirs
}

fn find_server_binaries() -> Option<PathBuf> {
    candidate_bin_dirs().into_iter().find(|d| {
        ["initdb", "pg_ctl", "postgres"]
            .iter()
            .all(|b| d.join(b).is_file())
    })
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn run(mut command: Command, what: &str) -> Result<()> {
    let output = command
        .output()
        .with_context(|| format!("running {what}"))?;
    if !output.status.success() {
        bail!(
            "{what} failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

async fn start_private(workspace: &Path, purpose: Purpose) -> Result<Postgres> {
    let Some(bin) = find_server_binaries() else {
        bail!(
            "PostgreSQL server binaries (initdb, pg_ctl, postgres) were not found.\n\
             Install them, e.g. `apt-get install postgresql` (Debian/Ubuntu), \
             `dnf install postgresql-server` (Fedora), `brew install postgresql@15` (macOS),\n\
             or point DATABASE_URL at a running server."
        );
    };
    let root = is_root();
    let name = match purpose {
        Purpose::Dev => "dev",
        Purpose::Test => "test",
    };
    // As root the cluster belongs to the `postgres` user, who must be able to reach it: a
    // clone under a private home or mktemp folder is not reachable, /tmp always is.
    let base = if root {
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
    std::fs::create_dir_all(&base).with_context(|| format!("creating {}", base.display()))?;
    if root {
        run(
            {
                let mut c = Command::new("chown");
                c.arg("postgres:").arg(&base);
                c
            },
            "chown of the cluster folder to the postgres user (is there a `postgres` OS user?)",
        )?;
    }
    let cluster = Cluster {
        pg_ctl: bin.join("pg_ctl"),
        data_dir: data_dir.clone(),
        as_postgres_user: root,
    };
    if !data_dir.join("PG_VERSION").is_file() {
        eprintln!("xtask: initdb {}", data_dir.display());
        let mut c = cluster.command(&bin.join("initdb"));
        c.arg("-D").arg(&data_dir).args([
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-sync",
        ]);
        run(c, "initdb")?;
    }
    // A cluster left running by an interrupted run is stopped first (its port is unknown).
    let mut stop = cluster.command(&cluster.pg_ctl);
    stop.arg("-D")
        .arg(&data_dir)
        .args(["-m", "immediate", "stop"]);
    let _ = stop.output();

    let port = free_port()?;
    let mut options =
        format!("-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories=''");
    if purpose == Purpose::Test {
        options.push_str(" -c fsync=off -c synchronous_commit=off -c full_page_writes=off");
    }
    let mut start = cluster.command(&cluster.pg_ctl);
    start
        .arg("-D")
        .arg(&data_dir)
        .arg("-l")
        .arg(base.join(format!("{name}.log")))
        .args(["-w", "-t", "60", "-o", &options, "start"]);
    run(start, "pg_ctl start")?;
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
