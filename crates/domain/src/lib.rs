//! Dispatch's domain: validated identifiers, event types and subscription patterns, destination
//! URLs, the delivery lifecycle, signatures and sealed secrets. Pure types and rules — no I/O,
//! no async, no SQL (the only system call is ring's random generator, for secrets and nonces).
//!
//! Every type here is "parse, don't validate": a value that exists is valid, so the store and the
//! API never re-check what a constructor already checked.

pub mod api_key;
pub mod breaker;
pub mod bucket;
pub mod destination;
pub mod error;
pub mod event_type;
pub mod filter;
pub mod id;
pub mod lifecycle;
pub mod operational;
pub mod ordering;
pub mod retry;
pub mod sealing;
pub mod signature;
pub mod tenant;
pub mod text;
pub mod url;

pub use error::ParseError;
pub use event_type::{EventType, Pattern};
pub use id::{EventId, OrderingKey, ReplayId, SubscriptionId};
pub use lifecycle::{DeliveryStatus, summarise_event_status};
pub use ordering::{OnExhausted, Ordering};
pub use tenant::TenantId;
pub use text::Source;
pub use url::DestinationUrl;
