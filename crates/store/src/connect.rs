//! Opening PostgreSQL connections, with TLS as the URL's `sslmode` and `sslrootcert` ask (libpq's
//! meaning, over rustls with the ring provider): every connection the store makes comes from here.
//!
//! | `sslmode` | TLS | server certificate checked |
//! |---|---|---|
//! | `disable` | never | – |
//! | `prefer` (the default) | when the server offers it, else plain | chain, only if `sslrootcert` is given |
//! | `require` | always | chain, only if `sslrootcert` is given (as libpq does) |
//! | `verify-ca` | always | chain up to a trusted root; any host name |
//! | `verify-full` | always | chain, and the certificate names the host connected to |
//!
//! `sslrootcert=/path/to/ca.pem` names a PEM file of trusted root certificates (a managed
//! database's CA bundle); the path is taken as written (no percent-decoding). Without it, or with
//! `sslrootcert=system`, `verify-ca` and `verify-full` trust the Mozilla root set that
//! `webpki-roots` ships. Every other URL parameter is tokio-postgres's (libpq's names).

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use diesel::ConnectionError;
use diesel_async::AsyncPgConnection;
use diesel_async::pooled_connection::ManagerConfig;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::StoreError;

/// libpq's `sslmode` values this build honours (`allow` is refused: it tries plain text first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    /// Every accepted value, as written in a URL.
    pub const NAMES: [&str; 5] = ["disable", "prefer", "require", "verify-ca", "verify-full"];

    fn parse(value: &str) -> Result<Self, String> {
        match value {
            "disable" => Ok(Self::Disable),
            "prefer" => Ok(Self::Prefer),
            "require" => Ok(Self::Require),
            "verify-ca" => Ok(Self::VerifyCa),
            "verify-full" => Ok(Self::VerifyFull),
            other => Err(format!(
                "sslmode={other} is not supported: use one of {}",
                Self::NAMES.join(", ")
            )),
        }
    }
}

/// Where trusted root certificates come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootCerts {
    /// `sslrootcert` absent or `system`: the Mozilla roots built into the binary.
    BuiltIn,
    /// `sslrootcert=/path`: the PEM certificates in that file.
    File(PathBuf),
}

/// The TLS parameters of a `postgres://` URL, split from the ones tokio-postgres reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlTls {
    pub mode: SslMode,
    /// Given only when the URL has `sslrootcert`.
    pub root_cert: Option<RootCerts>,
    /// The URL without `sslmode` and `sslrootcert`.
    pub rest: String,
}

/// Splits `sslmode` and `sslrootcert` out of a URL (no I/O).
pub fn parse_url_tls(url: &str) -> Result<UrlTls, String> {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut mode = SslMode::Prefer;
    let mut root_cert = None;
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("sslmode", value)) => mode = SslMode::parse(value)?,
            Some(("sslrootcert", "")) => return Err("sslrootcert is empty".to_owned()),
            Some(("sslrootcert", "system")) => root_cert = Some(RootCerts::BuiltIn),
            Some(("sslrootcert", path)) => root_cert = Some(RootCerts::File(PathBuf::from(path))),
            _ => kept.push(pair),
        }
    }
    let rest = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok(UrlTls {
        mode,
        root_cert,
        rest,
    })
}

/// Reads a PEM file of root certificates; every problem names the file.
pub fn load_root_certs(path: &Path) -> Result<RootCertStore, String> {
    let bytes = std::fs::read(path)
        .map_err(|e| format!("sslrootcert {}: cannot read: {e}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("sslrootcert {}: not PEM: {e}", path.display()))?;
    // A bundle (a system store, a provider's global bundle) may hold a certificate webpki cannot
    // use as a root; like libpq, skip it rather than refuse the rest.
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(certs);
    if roots.is_empty() {
        return Err(format!(
            "sslrootcert {}: holds no usable PEM certificate",
            path.display()
        ));
    }
    Ok(roots)
}

/// A parsed database URL and the TLS setup it asks for; opens connections to it.
#[derive(Clone)]
pub struct Connector {
    config: tokio_postgres::Config,
    tls: MakeRustlsConnect,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // tokio-postgres redacts the password in its Config's Debug.
        f.debug_struct("Connector")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Connector {
    /// Parses `url` and loads the root certificates it names: a bad URL or CA file fails here.
    pub fn from_url(url: &str) -> Result<Self, StoreError> {
        let tls = parse_url_tls(url).map_err(StoreError::InvalidUrl)?;
        let mut config = tokio_postgres::Config::from_str(&tls.rest)
            .map_err(|e| StoreError::InvalidUrl(with_causes(&e)))?;
        config.ssl_mode(match tls.mode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
                tokio_postgres::config::SslMode::Require
            }
        });
        let client_config =
            client_config(tls.mode, tls.root_cert.as_ref()).map_err(StoreError::InvalidUrl)?;
        Ok(Self {
            config,
            tls: MakeRustlsConnect::new(client_config),
        })
    }

    /// Sessions opened from now on commit without waiting for the WAL flush
    /// (`synchronous_commit = off`): a PostgreSQL crash may lose the last fraction of a second,
    /// never corrupt it. Only for writes safe to lose ([`crate::pool::Durability::Relaxed`]).
    pub fn relaxed(self) -> Self {
        self.with_setting("synchronous_commit=off")
    }

    /// Sessions opened from now on never JIT-compile (`jit = off`): Dispatch's statements are
    /// short, and a claim whose cost estimate passed `jit_above_cost` spent 100 ms compiling.
    pub fn without_jit(self) -> Self {
        self.with_setting("jit=off")
    }

    fn with_setting(mut self, setting: &str) -> Self {
        let options = match self.config.get_options() {
            Some(existing) if !existing.trim().is_empty() => format!("{existing} -c {setting}"),
            _ => format!("-c {setting}"),
        };
        self.config.options(&options);
        self
    }

    /// Opens one connection (TLS as configured) and hands it to diesel-async.
    pub async fn connect(&self) -> Result<AsyncPgConnection, ConnectionError> {
        let (client, connection) = self
            .config
            .connect(self.tls.clone())
            .await
            .map_err(|e| ConnectionError::BadConnection(with_causes(&e)))?;
        AsyncPgConnection::try_from_client_and_connection(client, connection).await
    }
}

/// tokio-postgres's messages say only what kind of step failed ("error performing TLS
/// handshake"); the reason (which certificate check, which pg_hba.conf refusal) is in the causes.
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        message.push_str(": ");
        message.push_str(&c.to_string());
        cause = c.source();
    }
    message
}

/// Opens a single connection to `url`, as the pool, the listener, migrations and tools do.
pub async fn establish(url: &str) -> Result<AsyncPgConnection, StoreError> {
    Connector::from_url(url)?
        .connect()
        .await
        .map_err(|e| StoreError::Unavailable(e.to_string()))
}

/// The pool's connection recipe: `url` is parsed and its CA file read once, here; if that fails,
/// every connection attempt reports why (the pool is built without touching the database, and
/// configuration checks at start-up have already refused such a URL).
pub fn manager_config(
    url: &str,
    durability: crate::pool::Durability,
) -> ManagerConfig<AsyncPgConnection> {
    let connector = Connector::from_url(url)
        .map(Connector::without_jit)
        .map(|c| match durability {
            crate::pool::Durability::Durable => c,
            crate::pool::Durability::Relaxed => c.relaxed(),
        })
        .map_err(|e| e.to_string());
    let mut config = ManagerConfig::default();
    config.custom_setup = Box::new(move |_url| {
        let connector = connector.clone();
        Box::pin(async move {
            match connector {
                Ok(connector) => connector.connect().await,
                Err(reason) => Err(ConnectionError::BadConnection(reason)),
            }
        })
    });
    config
}

fn client_config(mode: SslMode, root_cert: Option<&RootCerts>) -> Result<ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    // libpq checks the chain in `prefer` and `require` too when it has a root certificate.
    let roots = match (mode, root_cert) {
        (SslMode::Disable, _) | (SslMode::Prefer | SslMode::Require, None) => None,
        (_, Some(RootCerts::File(path))) => Some(load_root_certs(path)?),
        (_, None | Some(RootCerts::BuiltIn)) => Some(RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        }),
    };
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?;
    let mut config = match (mode, roots) {
        (SslMode::VerifyFull, Some(roots)) => {
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        (_, roots) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(ChainOnly {
                roots: roots.map(Arc::new),
                algorithms: provider.signature_verification_algorithms,
            }))
            .with_no_client_auth(),
    };
    // PostgreSQL 17 checks ALPN on direct TLS; older servers ignore it.
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(config)
}

/// The certificate check below `verify-full`: the chain up to a trusted root when there are
/// roots (`verify-ca`, or `sslrootcert` with `prefer`/`require`), nothing when there are none
/// (`prefer`/`require`: encrypted, not authenticated). Handshake signatures are always checked.
#[derive(Debug)]
struct ChainOnly {
    roots: Option<Arc<RootCertStore>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(roots) = &self.roots {
            let cert = ParsedCertificate::try_from(end_entity)?;
            rustls::client::verify_server_cert_signed_by_trust_anchor(
                &cert,
                roots,
                intermediates,
                now,
                self.algorithms.all,
            )?;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_parameters_are_split_from_the_rest_of_the_url() {
        let tls = parse_url_tls(
            "postgres://u:p@db:5432/d?sslmode=verify-full&application_name=x&sslrootcert=/ca.pem",
        )
        .expect("parses");
        assert_eq!(tls.mode, SslMode::VerifyFull);
        assert_eq!(
            tls.root_cert,
            Some(RootCerts::File(PathBuf::from("/ca.pem")))
        );
        assert_eq!(tls.rest, "postgres://u:p@db:5432/d?application_name=x");

        let plain = parse_url_tls("postgres://db/d").expect("parses");
        assert_eq!(plain.mode, SslMode::Prefer, "libpq's default");
        assert_eq!(plain.root_cert, None);
        assert_eq!(plain.rest, "postgres://db/d");

        let system = parse_url_tls("postgres://db/d?sslrootcert=system").expect("parses");
        assert_eq!(system.root_cert, Some(RootCerts::BuiltIn));
    }

    #[test]
    fn unknown_sslmodes_and_empty_root_cert_are_refused_by_name() {
        let err = parse_url_tls("postgres://db/d?sslmode=allow").expect_err("allow");
        assert!(
            err.contains("sslmode=allow") && err.contains("verify-full"),
            "{err}"
        );
        let err = parse_url_tls("postgres://db/d?sslmode=Require").expect_err("case");
        assert!(err.contains("sslmode=Require"), "{err}");
        assert!(parse_url_tls("postgres://db/d?sslrootcert=").is_err());
    }

    #[tokio::test]
    async fn a_missing_or_empty_ca_file_is_named_in_the_error() {
        let url = "postgres://db/d?sslmode=verify-ca&sslrootcert=/nonexistent/ca.pem";
        let err = Connector::from_url(url).expect_err("missing file");
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
        // The pool reports it on every attempt, without trying the network.
        let pool_err = (manager_config(url, crate::pool::Durability::Durable).custom_setup)(url)
            .await
            .map(|_| ())
            .expect_err("missing file");
        assert!(
            pool_err.to_string().contains("/nonexistent/ca.pem"),
            "{pool_err}"
        );

        let dir = std::env::temp_dir().join(format!("dispatch-connect-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").expect("write");
        let err = load_root_certs(&empty).expect_err("no certificate");
        assert!(err.contains("holds no usable PEM certificate"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn other_parameters_still_reach_tokio_postgres() {
        let err = Connector::from_url("postgres://db/d?sslmode=require&sslcert=/c.pem")
            .expect_err("client certificates are not supported");
        assert!(err.to_string().contains("sslcert"), "{err}");
        assert!(Connector::from_url("postgres://db/d?sslmode=require&connect_timeout=5").is_ok());
    }
}
