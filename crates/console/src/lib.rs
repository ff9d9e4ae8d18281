//! Dispatch's operator console: HTML pages under `/console`, mounted by `dispatch-api`.
//!
//! Every page is rendered on the server from an askama template (checked at compile time,
//! escaping every value) and reads and changes Dispatch through the same store functions the
//! JSON API calls. A vendored htmx (embedded, see `static/NOTICE.md`) only adds live refresh:
//! every page reads and every form posts without JavaScript. Operators sign in with an API key,
//! exchanged for a server-side session (a row in `console_sessions`, shared by every replica);
//! the key's scope, looked up again on every request, limits what the console offers and does.

pub mod access;
pub mod actions;
pub mod assets;
mod chart;
pub mod error;
mod form;
mod pages;
pub mod security;
pub mod session;

use std::sync::Arc;
use std::time::Duration;

use actix_web::web;
use dispatch_store::Pool;

/// Where the console is mounted.
pub const PREFIX: &str = "/console";

/// How the console behaves, from the API's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleSettings {
    /// Whether `/console` is served at all (`DISPATCH_CONSOLE_ENABLED`).
    pub enabled: bool,
    /// Whether the session cookie is marked `Secure` (off only for plain-HTTP development).
    pub secure_cookies: bool,
    /// A session ends after this long without a request.
    pub session_idle: Duration,
    /// A session ends this long after sign-in, however busy.
    pub session_lifetime: Duration,
}

impl Default for ConsoleSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            secure_cookies: true,
            session_idle: Duration::from_secs(30 * 60),
            session_lifetime: Duration::from_secs(12 * 60 * 60),
        }
    }
}

/// What every console handler shares.
pub struct Console {
    pub pool: Pool,
    /// The API's resolution of keys: who signs in, and who a session's key is now.
    pub access: Arc<dyn access::Access>,
    pub settings: ConsoleSettings,
    /// Seals the secret a rotation creates.
    pub secret_keys: dispatch_domain::sealing::Keyring,
    /// Where a subscription may point (checked when its URL is changed).
    pub destinations: dispatch_domain::destination::DestinationPolicy,
    /// The API's own route code, for every change the console makes.
    pub actions: Arc<dyn actions::Actions>,
}

/// Mounts the console's routes under [`PREFIX`] (nothing when it is disabled).
pub fn configure(console: web::Data<Console>) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        if !console.settings.enabled {
            return;
        }
        cfg.service(
            web::scope(PREFIX)
                .app_data(console.clone())
                .app_data(web::FormConfig::default().limit(64 * 1024))
                .wrap(security::headers())
                .configure(pages::routes),
        );
    }
}
