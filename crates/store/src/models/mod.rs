//! Row types read from and written to the tables, with their conversions to domain types.

mod attempt;
mod delivery;
mod event;
mod subscription;

pub use attempt::{AttemptRow, NewAttempt};
pub use delivery::DeliveryRow;
pub use event::{EventRow, NewEvent};
pub use subscription::{NewSubscription, RateLimit, SubscriptionRow, SubscriptionSettings};
