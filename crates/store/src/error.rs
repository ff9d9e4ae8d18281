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

/// Messages PostgreSQL sends when it is shutting down, starting up or killed the session.
const UNAVAILABLE_MESSAGES: [&str; 4] = [
    "terminating connection",
    "the database system is",
    "connection closed",
    "server closed the connection",
];

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
                    .any(|m| info.message().contains(m)) =>
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
