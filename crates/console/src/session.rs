//! Sessions: the cookie holds 32 random bytes (hex); PostgreSQL holds only their SHA-256, with
//! idle and absolute expiry. A form's CSRF token is an HMAC of the fixed text `csrf` keyed by
//! the session's token, so it needs no storage and a forged page cannot know it.

use std::future::Future;
use std::pin::Pin;

use actix_web::cookie::{Cookie, SameSite};
use actix_web::{FromRequest, HttpRequest, web};
use ring::rand::{SecureRandom, SystemRandom};
use ring::{digest, hmac};

use crate::Console;
use crate::error::ConsoleError;

/// The session cookie's name.
pub const COOKIE: &str = "dispatch_console";
/// The sign-in form's own CSRF cookie (double submit: there is no session yet).
pub const SIGN_IN_COOKIE: &str = "dispatch_console_sign_in";

/// 32 random bytes as 64 lower-case hex digits.
pub fn random_token() -> Result<String, ConsoleError> {
    let mut bytes = [0u8; 32];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| ConsoleError::Internal("the system's random source failed".to_owned()))?;
    Ok(hex(&bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What the database stores for a token.
pub fn token_sha256(token: &str) -> Vec<u8> {
    digest::digest(&digest::SHA256, token.as_bytes())
        .as_ref()
        .to_vec()
}

/// The CSRF token of the session whose cookie holds `token`.
pub fn csrf_for(token: &str) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, token.as_bytes());
    hex(hmac::sign(&key, b"csrf").as_ref())
}

/// Whether `presented` equals `expected`, in time that does not depend on where they differ.
pub fn same(presented: &str, expected: &str) -> bool {
    let (a, b) = (presented.as_bytes(), expected.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A cookie the console sets: `HttpOnly`, `SameSite=Strict`, scoped to the console, `Secure`
/// unless the settings say plain HTTP.
pub fn cookie(console: &Console, name: &'static str, value: String) -> Cookie<'static> {
    Cookie::build(name, value)
        .path(crate::PREFIX)
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(console.settings.secure_cookies)
        .finish()
}

/// The same cookie, expired (sign-out).
pub fn removal(console: &Console, name: &'static str) -> Cookie<'static> {
    let mut cookie = cookie(console, name, String::new());
    cookie.make_removal();
    cookie
}

/// A signed-in operator: the extractor answers every other request with a redirect to the
/// sign-in page (which comes back to the page asked for).
pub struct Session {
    token: String,
    /// The token every form of this session posts.
    pub csrf: String,
    /// The tenant whose rows the console shows and changes: every store call filters by it.
    /// Sessions are signed in with admin keys, which work in the default tenant.
    pub tenant: dispatch_domain::TenantId,
}

impl Session {
    /// Refuses a form whose `csrf` field is not this session's token (`403`).
    pub fn check_csrf(&self, presented: Option<&str>) -> Result<(), ConsoleError> {
        match presented {
            Some(p) if same(p, &self.csrf) => Ok(()),
            _ => Err(ConsoleError::Csrf),
        }
    }

    pub fn token_sha256(&self) -> Vec<u8> {
        token_sha256(&self.token)
    }
}

/// Where to come back to after signing in: this request's path and query, if it is a page.
fn return_to(req: &HttpRequest) -> String {
    match req.method().as_str() {
        "GET" => req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_else(|| crate::PREFIX.to_owned()),
        _ => format!("{}/", crate::PREFIX),
    }
}

impl FromRequest for Session {
    type Error = ConsoleError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ConsoleError>>>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let console = req.app_data::<web::Data<Console>>().cloned();
        let token = req.cookie(COOKIE).map(|c| c.value().to_owned());
        let next = return_to(req);
        Box::pin(async move {
            let console =
                console.ok_or_else(|| ConsoleError::Internal("console state missing".into()))?;
            let Some(token) = token.filter(|t| t.len() == 64) else {
                return Err(ConsoleError::SignIn { next });
            };
            let mut conn = dispatch_store::pool::connection(&console.pool).await?;
            let alive = dispatch_store::queries::console::touch_session(
                &mut conn,
                &token_sha256(&token),
                console.settings.session_idle,
            )
            .await?;
            if !alive {
                return Err(ConsoleError::SignIn { next });
            }
            let csrf = csrf_for(&token);
            Ok(Self {
                token,
                csrf,
                tenant: dispatch_domain::TenantId::default_tenant(),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_hex_and_csrf_tokens_depend_on_them() {
        let (a, b) = (
            random_token().expect("random"),
            random_token().expect("random"),
        );
        assert_eq!(a.len(), 64);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
        assert_ne!(csrf_for(&a), csrf_for(&b));
        assert_eq!(csrf_for(&a), csrf_for(&a));
        assert_ne!(token_sha256(&a), a.as_bytes());
    }

    #[test]
    fn comparison_needs_equal_text() {
        assert!(same("abc", "abc"));
        assert!(!same("abc", "abd"));
        assert!(!same("ab", "abc"));
        assert!(!same("", "abc"));
    }
}
