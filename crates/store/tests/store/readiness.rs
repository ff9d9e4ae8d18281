//! Migrations (apply, revert, reapply) and readiness: unavailable versus query errors.

use super::*;

/// A database created through `dispatch_store::admin`, dropped through it however the test ends.
struct FreshDb {
    name: String,
}

impl FreshDb {
    async fn create() -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let name = format!("{TEST_DB_PREFIX}fresh_{}_{nanos}", std::process::id());
        let mut admin_conn = admin::connect(&admin_url()).await.unwrap();
        assert!(
            !admin::database_exists(&mut admin_conn, &name)
                .await
                .unwrap()
        );
        admin::create_database(&mut admin_conn, &name, None)
            .await
            .unwrap();
        assert!(
            admin::database_exists(&mut admin_conn, &name)
                .await
                .unwrap()
        );
        Self { name }
    }

    fn url(&self) -> String {
        admin::url_with_database(&admin_url(), &self.name)
    }
}

impl Drop for FreshDb {
    fn drop(&mut self) {
        // Drop cannot await inside the test's runtime: use a thread with a runtime of its own.
        let name = self.name.clone();
        let gone = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let mut conn = admin::connect(&admin_url()).await?;
                admin::drop_database(&mut conn, &name).await?;
                admin::database_exists(&mut conn, &name).await
            })
        })
        .join();
        match gone {
            Ok(Ok(false)) => {}
            other if std::thread::panicking() => {
                eprintln!("could not drop {}: {other:?}", self.name)
            }
            other => panic!("could not drop {}: {other:?}", self.name),
        }
    }
}

async fn ready(url: &str) -> Result<bool, StoreError> {
    let mut conn = admin::connect(url).await.unwrap();
    health::check_ready(&mut conn).await
}

async fn applied(url: &str) -> Vec<bool> {
    migrations::status(url)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.applied)
        .collect()
}

#[tokio::test]
async fn migrations_apply_revert_and_reapply_on_a_fresh_database() {
    let db = FreshDb::create().await;
    let url = db.url();
    let embedded = migrations::embedded_versions().unwrap();
    assert!(!embedded.is_empty());
    let n = embedded.len();

    let before = ready(&url).await;
    assert!(
        matches!(
            before,
            Err(StoreError::Corrupt {
                what: "migration table",
                ..
            })
        ),
        "a database without migrations is not ready: {before:?}"
    );
    let status = migrations::status(&url).await.unwrap();
    assert_eq!(
        status.iter().map(|m| m.version.clone()).collect::<Vec<_>>(),
        embedded,
        "status lists every embedded migration, oldest first"
    );
    assert!(status.iter().all(|m| !m.applied), "{status:?}");
    // The name is the migration's directory, e.g. `2026-11-29-000001_create_core_tables`
    // for version `20261129000001`.
    for m in &status {
        let digits: String = m
            .name
            .chars()
            .take_while(|c| *c != '_')
            .filter(char::is_ascii_digit)
            .collect();
        assert_eq!(digits, m.version, "{m:?}");
    }
    assert!(
        !ready(&url).await.unwrap(),
        "status leaves an empty migration table: still not ready"
    );

    assert_eq!(migrations::run_pending(&url).await.unwrap(), embedded);
    assert_eq!(applied(&url).await, vec![true; n]);
    assert!(ready(&url).await.unwrap());
    assert_eq!(
        migrations::run_pending(&url).await.unwrap(),
        Vec::<String>::new(),
        "running again applies nothing"
    );

    // The schema really is there: the store works on it.
    {
        let pool = pool_with(&url, 1, Duration::from_secs(5));
        let mut conn = connection(&pool).await.unwrap();
        // Without a secret: reverting the secret-sealing migration refuses while a
        // subscription holds only a sealed secret (tested on its own below).
        let mut unsigned = new_sub("s_1", &["*"]);
        unsigned.secret = None;
        subscriptions::insert(&mut conn, &unsigned, &test_keyring())
            .await
            .unwrap()
            .unwrap();
        let (_, n) = ingest_created(&mut conn, &new_event("e_1", "a", json!({}))).await;
        assert_eq!(n, 1);
    }

    let last = embedded.last().unwrap().clone();
    assert_eq!(migrations::revert_last(&url).await.unwrap(), last);
    let mut expected = vec![true; n];
    expected[n - 1] = false;
    assert_eq!(applied(&url).await, expected);
    assert!(
        !ready(&url).await.unwrap(),
        "a database missing a migration is not ready"
    );

    if n == 1 {
        // Reverting the only migration drops the tables again.
        let mut conn = admin::connect(&url).await.unwrap();
        let err = events::find(
            &mut conn,
            &dispatch_domain::TenantId::default_tenant(),
            "e_1",
        )
        .await
        .unwrap_err();
        assert!(matches!(err, StoreError::Query(_)), "got {err:?}");
    }

    assert_eq!(migrations::run_pending(&url).await.unwrap(), vec![last]);
    assert_eq!(applied(&url).await, vec![true; n]);
    assert!(ready(&url).await.unwrap());
    let mut conn = admin::connect(&url).await.unwrap();
    let found = events::find(
        &mut conn,
        &dispatch_domain::TenantId::default_tenant(),
        "e_1",
    )
    .await
    .unwrap();
    if n == 1 {
        assert_eq!(found, None, "a re-created, empty schema");
    } else {
        // Reverting and re-applying the latest migration keeps the data of the earlier ones.
        assert!(found.is_some(), "the event survived the round trip");
    }
    drop(conn);
    drop(db);
}

#[tokio::test]
async fn a_test_database_is_ready() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let mut conn = connection(&pool).await.unwrap();
    assert!(health::check_ready(&mut conn).await.unwrap());
    assert!(migrations::is_up_to_date(&mut conn).await.unwrap());
}

// ---------------------------------------------------------------------------------------------
// 8. Error classification
// ---------------------------------------------------------------------------------------------

fn dead_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test]
async fn a_database_nobody_listens_for_is_unavailable() {
    let port = dead_port();
    let url = format!("postgres://postgres@127.0.0.1:{port}/postgres?sslmode=disable");
    let pool = pool_with(&url, 2, Duration::from_secs(1));

    let started = Instant::now();
    let err = connection(&pool).await.map(|_| ()).unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "got {err:?}");
    assert!(err.is_unavailable());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the pool gives up after its connect timeout, took {:?}",
        started.elapsed()
    );

    let err = admin::connect(&url).await.map(|_| ()).unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "got {err:?}");
    let err = migrations::status(&url).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "got {err:?}");
}

#[derive(QueryableByName)]
struct Pid {
    #[diesel(sql_type = Integer)]
    pid: i32,
}

#[tokio::test]
async fn a_session_killed_by_the_server_is_unavailable_not_a_query_error() {
    let db = TestDb::new().await;
    let mut victim = admin::connect(db.url()).await.unwrap();
    let Pid { pid } = diesel::sql_query("SELECT pg_backend_pid() AS pid")
        .get_result(&mut victim)
        .await
        .unwrap();
    let mut killer = admin::connect(db.url()).await.unwrap();
    diesel::sql_query("SELECT pg_terminate_backend($1)")
        .bind::<Integer, _>(pid)
        .execute(&mut killer)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let err = subscriptions::find_active(
        &mut victim,
        &dispatch_domain::TenantId::default_tenant(),
        "s_1",
    )
    .await
    .unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "got {err:?}");
}

#[tokio::test]
async fn a_query_against_a_missing_table_is_a_query_error() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let mut conn = connection(&pool).await.unwrap();
    raw(&mut conn, "DROP TABLE attempts").await;
    let err = attempts::of_event(&mut conn, "e_1").await.unwrap_err();
    assert!(matches!(err, StoreError::Query(_)), "got {err:?}");
    assert!(!err.is_unavailable());
}
