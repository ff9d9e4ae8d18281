//! TLS to PostgreSQL, against a private cluster that accepts TLS connections only (`hostssl` in
//! pg_hba.conf), with a CA and a server certificate for `localhost` made at test time by the
//! `openssl` command. Each test starts its own cluster (nextest runs tests as separate
//! processes) and removes it when done.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use diesel::QueryableByName;
use diesel::sql_types::Bool;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use dispatch_store::notify::{self, Listener};
use dispatch_store::pool::{build_pool, connection};
use dispatch_store::{DatabaseSettings, admin, migrations};
use dispatch_test_support::cluster::{Cluster, run};

/// A running TLS-only cluster and the certificates around it.
struct TlsPostgres {
    cluster: Cluster,
    base: PathBuf,
    port: u16,
    /// The CA that signed the server's certificate.
    ca: PathBuf,
    /// A CA that signed nothing the server has.
    other_ca: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let mut c = Command::new("openssl");
    c.current_dir(dir).args(args);
    run(c, &format!("openssl {}", args[0]))
        .unwrap_or_else(|e| panic!("making test certificates needs the openssl command: {e}"));
}

/// A self-signed CA (`name.pem`, `name.key`) on the P-256 curve.
fn make_ca(dir: &Path, name: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
            "-days",
            "2",
            "-subj",
            &format!("/CN=Dispatch test {name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
}

/// `server.pem`/`server.key`, signed by `ca`, valid for the host name `localhost` only.
fn make_server_cert(dir: &Path) {
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=DNS:localhost\nbasicConstraints=critical,CA:FALSE\n\
         keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-set_serial",
            "2",
            "-days",
            "2",
            "-extfile",
            "server.ext",
            "-out",
            "server.pem",
        ],
    );
}

impl TlsPostgres {
    fn start() -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        // Under /tmp: as root, the cluster runs as the `postgres` user, who must reach it.
        let base = std::env::temp_dir().join(format!(
            "dispatch-tls-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&base);
        let certs = base.join("certs");
        std::fs::create_dir_all(&certs).unwrap();
        make_ca(&certs, "ca");
        make_ca(&certs, "other-ca");
        make_server_cert(&certs);

        let mut cluster = Cluster::init(&base.join("data"))
            .unwrap_or_else(|e| panic!("the TLS tests need a private PostgreSQL cluster: {e}"));
        // PostgreSQL refuses a key file others can read, or that belongs to someone else.
        let key = certs.join("server.key");
        std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        cluster.give_to_server_user(&key).unwrap();
        // TCP with TLS only: a plain connection finds no pg_hba.conf entry.
        std::fs::write(
            cluster.data_dir().join("pg_hba.conf"),
            "hostssl all all 127.0.0.1/32 trust\n",
        )
        .unwrap();
        let cert_setting = format!("ssl_cert_file={}", certs.join("server.pem").display());
        let key_setting = format!("ssl_key_file={}", key.display());
        let port = cluster
            .start(
                &base.join("server.log"),
                &[
                    "ssl=on",
                    &cert_setting,
                    &key_setting,
                    "fsync=off",
                    "synchronous_commit=off",
                    "full_page_writes=off",
                ],
            )
            .unwrap_or_else(|e| panic!("starting the TLS cluster: {e}"));
        Self {
            cluster,
            port,
            ca: certs.join("ca.pem"),
            other_ca: certs.join("other-ca.pem"),
            base,
        }
    }

    /// A URL of database `db` through `host`; `localhost` is dialled at 127.0.0.1 (the server
    /// listens there only) while TLS checks the name `localhost`.
    fn url(&self, host: &str, db: &str, params: &str) -> String {
        let hostaddr = if host == "localhost" {
            "hostaddr=127.0.0.1&"
        } else {
            ""
        };
        format!(
            "postgres://postgres@{host}:{}/{db}?{hostaddr}{params}",
            self.port
        )
    }

    fn verify_full_url(&self, db: &str) -> String {
        self.url(
            "localhost",
            db,
            &format!("sslmode=verify-full&sslrootcert={}", self.ca.display()),
        )
    }
}

impl Drop for TlsPostgres {
    fn drop(&mut self) {
        if let Err(e) = self.cluster.stop() {
            eprintln!("{e}");
        }
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

#[derive(QueryableByName)]
struct Ssl {
    #[diesel(sql_type = Bool)]
    ssl: bool,
}

async fn is_encrypted(conn: &mut AsyncPgConnection) -> bool {
    let row: Ssl = diesel::sql_query("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .get_result(conn)
        .await
        .unwrap();
    row.ssl
}

/// Connects to `url` and checks that the session is encrypted.
async fn assert_encrypted(url: &str) {
    let mut conn = admin::connect(url)
        .await
        .unwrap_or_else(|e| panic!("{url} should connect: {e}"));
    assert!(is_encrypted(&mut conn).await, "{url}");
}

async fn connect_error(url: &str) -> String {
    match admin::connect(url).await {
        Ok(_) => panic!("{url} should not connect"),
        Err(e) => e.to_string(),
    }
}

#[tokio::test]
async fn require_encrypts_without_checking_the_certificate() {
    let pg = TlsPostgres::start();
    // No root certificate given: encryption only, as libpq does, so any CA will do.
    assert_encrypted(&pg.url("127.0.0.1", "postgres", "sslmode=require")).await;
}

#[tokio::test]
async fn require_with_a_root_certificate_checks_the_chain_as_libpq_does() {
    let pg = TlsPostgres::start();
    let wrong = format!("sslmode=require&sslrootcert={}", pg.other_ca.display());
    let err = connect_error(&pg.url("127.0.0.1", "postgres", &wrong)).await;
    assert!(err.contains("invalid peer certificate"), "{err}");
    let right = format!("sslmode=require&sslrootcert={}", pg.ca.display());
    assert_encrypted(&pg.url("127.0.0.1", "postgres", &right)).await;
}

#[tokio::test]
async fn verify_full_accepts_a_server_certified_by_the_given_ca_for_its_name() {
    let pg = TlsPostgres::start();
    assert_encrypted(&pg.verify_full_url("postgres")).await;
    // A bundle of several CAs (a provider's global bundle) works as long as one signed it.
    let bundle = pg.base.join("certs/bundle.pem");
    let mut pem = std::fs::read(&pg.other_ca).unwrap();
    pem.extend(std::fs::read(&pg.ca).unwrap());
    std::fs::write(&bundle, pem).unwrap();
    let params = format!("sslmode=verify-full&sslrootcert={}", bundle.display());
    assert_encrypted(&pg.url("localhost", "postgres", &params)).await;
}

#[tokio::test]
async fn verify_full_and_verify_ca_refuse_a_certificate_from_another_ca() {
    let pg = TlsPostgres::start();
    for mode in ["verify-full", "verify-ca"] {
        let params = format!("sslmode={mode}&sslrootcert={}", pg.other_ca.display());
        let err = connect_error(&pg.url("localhost", "postgres", &params)).await;
        assert!(
            err.contains("invalid peer certificate") && err.contains("UnknownIssuer"),
            "{mode}: {err}"
        );
    }
    // Without sslrootcert the built-in public roots are used, and they do not know our CA.
    let err = connect_error(&pg.url("localhost", "postgres", "sslmode=verify-full")).await;
    assert!(err.contains("UnknownIssuer"), "{err}");
}

#[tokio::test]
async fn verify_full_refuses_a_host_the_certificate_does_not_name_and_verify_ca_accepts_it() {
    let pg = TlsPostgres::start();
    let root = format!("sslrootcert={}", pg.ca.display());
    // The certificate names `localhost` only; dialling 127.0.0.1 checks the name "127.0.0.1".
    let err = connect_error(&pg.url(
        "127.0.0.1",
        "postgres",
        &format!("sslmode=verify-full&{root}"),
    ))
    .await;
    assert!(err.contains("not valid for name"), "{err}");
    assert_encrypted(&pg.url(
        "127.0.0.1",
        "postgres",
        &format!("sslmode=verify-ca&{root}"),
    ))
    .await;
}

#[tokio::test]
async fn a_tls_only_server_refuses_sslmode_disable_and_prefer_upgrades() {
    let pg = TlsPostgres::start();
    let err = connect_error(&pg.url("127.0.0.1", "postgres", "sslmode=disable")).await;
    assert!(
        err.contains("no pg_hba.conf entry") && err.contains("no encryption"),
        "{err}"
    );
    assert_encrypted(&pg.url("127.0.0.1", "postgres", "sslmode=prefer")).await;
    // Without any sslmode, libpq's default (prefer) applies.
    assert_encrypted(&pg.url("127.0.0.1", "postgres", "")).await;
}

#[tokio::test]
async fn migrations_run_over_verify_full() {
    let pg = TlsPostgres::start();
    let mut conn = admin::connect(&pg.verify_full_url("postgres"))
        .await
        .unwrap();
    admin::create_database(&mut conn, "dispatch", None)
        .await
        .unwrap();
    let url = pg.verify_full_url("dispatch");
    let embedded = migrations::embedded_versions().unwrap();
    assert_eq!(migrations::run_pending(&url).await.unwrap(), embedded);
    let status = migrations::status(&url).await.unwrap();
    assert!(status.iter().all(|m| m.applied), "{status:?}");
    let mut conn = admin::connect(&url).await.unwrap();
    assert!(migrations::is_up_to_date(&mut conn).await.unwrap());
}

#[tokio::test]
async fn the_listener_hears_a_notification_over_tls() {
    let pg = TlsPostgres::start();
    let url = pg.verify_full_url("postgres");
    let mut listener = Listener::connect(&url).await.unwrap();
    let mut sender = admin::connect(&url).await.unwrap();
    notify::notify(&mut sender).await.unwrap();
    // The bound only keeps a broken build from hanging; the wake-up arrives at once.
    tokio::time::timeout(Duration::from_secs(60), listener.next())
        .await
        .expect("the notification arrives")
        .unwrap();
}

#[tokio::test]
async fn pooled_connections_use_tls() {
    let pg = TlsPostgres::start();
    let settings = DatabaseSettings {
        url: pg.verify_full_url("postgres").into(),
        max_connections: 2,
        connect_timeout: Duration::from_secs(30),
    };
    let pool = build_pool(&settings);
    for _ in 0..3 {
        let mut conn = connection(&pool).await.unwrap();
        assert!(is_encrypted(&mut conn).await);
    }
}
