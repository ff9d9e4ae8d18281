//! Dispatch's PostgreSQL store: schema, row models, queries, the connection pool and the embedded
//! migrations. This is the only crate that speaks SQL; callers own their transactions and pass
//! `&mut AsyncPgConnection` to the query functions.

#[cfg(feature = "tools")]
pub mod admin;
pub mod connect;
pub mod database_url;
pub mod error;
pub mod migrations;
pub mod models;
pub mod notify;
pub mod pool;
pub mod prepared;
pub mod queries;
pub mod schema;

pub use database_url::DatabaseUrl;
pub use diesel_async::AsyncPgConnection;
pub use error::StoreError;
pub use pool::{DatabaseSettings, Pool, PooledConnection};
