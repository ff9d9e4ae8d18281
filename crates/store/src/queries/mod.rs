//! Query functions. Each takes `&mut AsyncPgConnection`; the caller decides the transaction.

pub mod api_keys;
pub mod attempts;
#[cfg(feature = "tools")]
pub mod bench;
#[cfg(feature = "tools")]
pub mod chaos;
mod circuits;
pub mod console;
pub mod deliveries;
pub mod endpoint_health;
pub mod events;
mod fan_out;
pub mod filters;
pub mod health;
pub mod listing;
pub mod operational;
pub mod ops;
pub mod ordering;
pub mod replays;
pub mod requeue;
pub mod subscription_changes;
pub mod subscriptions;
pub mod tenants;
pub mod workers;
