//! The store's error: either the database could not be reached (retry later) or a query failed.

use diesel::result::{DatabaseErrorKind, Error as DieselError};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum StoreError {
    /// The database is down, unreachable or shutting down; the caller may retry later.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The database URL or a file it names (`sslrootcert`) is unusable: fix the configuration.
    #[error("invalid database URL: {0}")]
    InvalidUrl(String),
    /// A query failed for another reason (a bug or a broken invariant).
    #[error("database query failed")]
    Query(#[source] DieselError),
    /// A stored value does not satisfy the domain's rules (the row was written by something else).
    #[error("stored {what} is invalid: {reason}")]
    Corrupt { what: &'static str, reason: String },
    /// A subscription's secret could not be sealed (or, re-sealing, opened) with the keyring.
    #[error("the secret of subscription {subscription_id:?} could not be sealed")]
    Seal {
        subscription_id: String,
        #[source]
        source: dispatch_domain::sealing::SealError,
    },
}

/// Messages PostgreSQL sends when it is shutting down, starting up or killed the session, or
/// cannot go on for want of a resource (SQLSTATE class 53, "insufficient resources": 53100
/// `disk_full`, 53200 `out_of_memory`, 53300 `too_many_connections`; and a failed WAL or data
/// file write, which says "No space left on device" and, for WAL, ends in a PANIC and a crash
/// restart, seen as the first two). diesel-async does not pass the SQLSTATE on, so the server's
/// (English, `lc_messages=C`) wording is what is matched. Each is the database's state, not the
/// request's fault: the caller may retry later (the API answers `503 database_unavailable`).
const UNAVAILABLE_MESSAGES: [&str; 9] = [
    "terminating connection",
    "the database system is",
    "connection closed",
    "server closed the connection",
    "No space left on device",
    "could not extend file",
    "out of memory",
    "too many clients",
    "remaining connection slots are reserved",
];

/// Hints PostgreSQL adds to the same errors (disk full: `could not extend file …`).
const UNAVAILABLE_HINTS: [&str; 1] = ["Check free disk space"];

impl From<DieselError> for StoreError {
    fn from(error: DieselError) -> Self {
        match &error {
            DieselError::DatabaseError(
                DatabaseErrorKind::UnableToSendCommand | DatabaseErrorKind::ClosedConnection,
                info,
            ) => Self::Unavailable(info.message().to_owned()),
            DieselError::DatabaseError(_, info)
                if UNAVAILABLE_MESSAGES
                    .iter()
                    .any(|m| info.message().contains(m))
                    || info
                        .hint()
                        .is_some_and(|h| UNAVAILABLE_HINTS.iter().any(|m| h.contains(m))) =>
            {
                Self::Unavailable(info.message().to_owned())
            }
            DieselError::BrokenTransactionManager => {
                Self::Unavailable("the connection's transaction state was lost".to_owned())
            }
            _ => Self::Query(error),
        }
    }
}

impl StoreError {
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

#[cfg(test)]
mod tests {
    use diesel::result::DatabaseErrorInformation;

    use super::*;

    /// A server error as diesel-async hands it over: a message and maybe a hint, no SQLSTATE.
    struct ServerError {
        message: &'static str,
        hint: Option<&'static str>,
    }

    impl DatabaseErrorInformation for ServerError {
        fn message(&self) -> &str {
            self.message
        }
        fn details(&self) -> Option<&str> {
            None
        }
        fn hint(&self) -> Option<&str> {
            self.hint
        }
        fn table_name(&self) -> Option<&str> {
            None
        }
        fn column_name(&self) -> Option<&str> {
            None
        }
        fn constraint_name(&self) -> Option<&str> {
            None
        }
        fn statement_position(&self) -> Option<i32> {
            None
        }
    }

    fn from_server(message: &'static str, hint: Option<&'static str>) -> StoreError {
        DieselError::DatabaseError(
            DatabaseErrorKind::Unknown,
            Box::new(ServerError { message, hint }),
        )
        .into()
    }

    #[test]
    fn out_of_disk_and_other_resource_shortages_are_unavailable() {
        // PostgreSQL 15's own wording (53100 disk_full from a table or WAL write, 53200, 53300,
        // and what a session sees when a WAL write PANICs and the server restarts).
        for (message, hint) in [
            (
                "could not extend file \"base/16384/16390\": No space left on device",
                Some("Check free disk space."),
            ),
            (
                "could not write to file \"pg_wal/xlogtemp.123\": No space left on device",
                None,
            ),
            (
                "could not extend file \"base/16384/16390\": wrote only 4096 of 8192 bytes at block 7",
                Some("Check free disk space."),
            ),
            ("out of memory", Some("Failed on request of size 1024.")),
            ("sorry, too many clients already", None),
            (
                "remaining connection slots are reserved for non-replication superuser connections",
                None,
            ),
            (
                "terminating connection because of crash of another server process",
                Some(
                    "In a moment you should be able to reconnect to the database and repeat your command.",
                ),
            ),
            ("the database system is in recovery mode", None),
        ] {
            let error = from_server(message, hint);
            assert!(error.is_unavailable(), "{message:?} gave {error:?}");
        }
    }

    #[test]
    fn lost_connections_are_unavailable_and_query_faults_are_not() {
        let closed: StoreError = DieselError::DatabaseError(
            DatabaseErrorKind::ClosedConnection,
            Box::new("connection closed".to_owned()),
        )
        .into();
        assert!(closed.is_unavailable());
        assert!(StoreError::from(DieselError::BrokenTransactionManager).is_unavailable());
        for message in [
            "syntax error at or near \"SELEC\"",
            "value too long for type character varying(64)",
            "duplicate key value violates unique constraint \"events_pkey\"",
        ] {
            let error = from_server(message, None);
            assert!(
                matches!(error, StoreError::Query(_)),
                "{message:?} gave {error:?}"
            );
        }
        assert!(matches!(
            StoreError::from(DieselError::NotFound),
            StoreError::Query(_)
        ));
    }
}
