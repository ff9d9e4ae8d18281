//! Test-only helpers: every test gets its own PostgreSQL database, cloned in ~0.1 s from a
//! template that has every migration applied. The template is built once per migration set (its
//! name carries a hash of `migrations/`), guarded by an advisory lock because nextest runs tests
//! as separate processes. Each database is dropped when its [`TestDb`] goes out of scope.

pub mod cluster;
pub mod faults;
pub mod proxy;
pub mod receiver;
pub mod secrets;

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dispatch_store::admin::{self, url_with_database};
use dispatch_store::pool::build_pool;
use dispatch_store::{DatabaseSettings, Pool, migrations};

/// Prefix of every per-test database (`cargo xtask test` drops leftovers with it on a private
/// cluster; on a shared server each test drops its own).
pub const TEST_DB_PREFIX: &str = "dispatch_test_";
const TEMPLATE_LOCK_KEY: i64 = 0x0d15_7a7c;

/// The server the tests create their databases on: `DISPATCH_TEST_DATABASE_URL` (set by
/// `cargo xtask test`), else `DATABASE_URL`, else the seed's default.
pub fn admin_url() -> String {
    let url = std::env::var("DISPATCH_TEST_DATABASE_URL")
        .or_else(|_| std::env::var("DATABASE_URL"))
        .unwrap_or_else(|_| {
            "postgres://postgres:postgres@localhost:5432/postgres?sslmode=disable".to_owned()
        });
    url_with_database(&url, "postgres")
}

fn migrations_hash() -> u64 {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../migrations");
    let mut files: Vec<_> = walk(&dir);
    files.sort();
    let mut hasher = DefaultHasher::new();
    for file in files {
        file.strip_prefix(&dir).unwrap_or(&file).hash(&mut hasher);
        std::fs::read(&file)
            .unwrap_or_else(|e| panic!("cannot read migration {}: {e}", file.display()))
            .hash(&mut hasher);
    }
    hasher.finish()
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let entries =
        std::fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()));
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

fn unique_name() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{TEST_DB_PREFIX}{}_{}_{}",
        std::process::id(),
        nanos,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A database of one's own, with every migration applied, dropped on `Drop`.
pub struct TestDb {
    name: String,
    admin_url: String,
    url: String,
}

impl TestDb {
    pub async fn new() -> Self {
        let admin_url = admin_url();
        let template = format!("dispatch_tmpl_{:016x}", migrations_hash());
        let name = unique_name();
        let mut conn = admin::connect(&admin_url)
            .await
            .unwrap_or_else(|e| panic!("test PostgreSQL at {admin_url} is not reachable: {e}"));
        let template_url = url_with_database(&admin_url, &template);
        admin::with_advisory_lock(&mut conn, TEMPLATE_LOCK_KEY, async |conn| {
            if !admin::database_exists(conn, &template).await? {
                admin::create_database(conn, &template, None).await?;
                if let Err(e) = migrations::run_pending(&template_url).await {
                    admin::drop_database(conn, &template).await?;
                    return Err(e);
                }
                admin::mark_template(conn, &template).await?;
            }
            admin::create_database(conn, &name, Some(&template)).await
        })
        .await
        .unwrap_or_else(|e| panic!("cannot create test database {name}: {e:?}"));
        let url = url_with_database(&admin_url, &name);
        Self {
            name,
            admin_url,
            url,
        }
    }

    /// The connection URL of this test's database.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn settings(&self) -> DatabaseSettings {
        DatabaseSettings {
            url: self.url.clone().into(),
            max_connections: 4,
            connect_timeout: Duration::from_secs(5),
        }
    }

    /// A fresh pool on this database, owned by the calling test's runtime.
    pub fn pool(&self) -> Pool {
        build_pool(&self.settings())
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        // Drop runs inside the test's runtime, which cannot block on async work: use a thread
        // with a runtime of its own.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async {
                let mut conn = admin::connect(&admin_url)
                    .await
                    .map_err(|e| e.to_string())?;
                admin::drop_database(&mut conn, &name)
                    .await
                    .map_err(|e| e.to_string())
            })
        })
        .join();
        if let Ok(Err(e)) = dropped {
            eprintln!("warning: could not drop test database {}: {e}", self.name);
        }
    }
}
