//! Who may call the API: bearer API keys from `DISPATCH_API_KEYS` (admin keys), each given as
//! the key or as `sha256:<hex>` of it (so the plain key need not be stored), and keys kept in the
//! database (`dk_…`, with a scope: `key_cache.rs`). Only SHA-256 digests are kept in memory, and
//! a presented key is compared with each in constant time. `/healthz`, `/readyz`, `/metrics` and
//! `/openapi.json` need no key.

use std::fmt;

use dispatch_domain::TenantId;
use dispatch_domain::api_key::Scope;
use ring::digest::{SHA256, digest};

/// Shortest plain key accepted: a key is a password, not a name.
pub const MIN_KEY_LEN: usize = 16;

/// Routes that answer without a key.
pub const PUBLIC_PATHS: [&str; 4] = ["/healthz", "/readyz", "/metrics", "/openapi.json"];

/// How requests are authenticated.
#[derive(Clone, PartialEq, Eq)]
pub enum Auth {
    /// `DISPATCH_AUTH_DISABLED=true`: everyone may call (logged as a warning at start).
    Disabled,
    /// SHA-256 digests of the accepted keys.
    Keys(Vec<[u8; 32]>),
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Disabled => f.write_str("Auth::Disabled"),
            Self::Keys(keys) => write!(f, "Auth::Keys({} keys)", keys.len()),
        }
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, bytes).as_ref());
    out
}

fn from_hex(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Parses `DISPATCH_API_KEYS`: comma-separated keys or `sha256:<64 hex>` digests. Blank entries
/// are ignored.
/// Whether `keys` (as [`parse_keys`] returns them) accept the published development key.
pub fn accepts_development_key(keys: &[[u8; 32]]) -> bool {
    let published = sha256(dispatch_config::development::API_KEY.as_bytes());
    keys.contains(&published)
}

pub fn parse_keys(text: &str) -> Result<Vec<[u8; 32]>, String> {
    let mut keys = Vec::new();
    for (i, entry) in text.split(',').map(str::trim).enumerate() {
        if entry.is_empty() {
            continue;
        }
        if let Some(hex) = entry.strip_prefix("sha256:") {
            keys.push(from_hex(&hex.to_ascii_lowercase()).ok_or_else(|| {
                format!("entry {} must be sha256: followed by 64 hex digits", i + 1)
            })?);
        } else if entry.len() < MIN_KEY_LEN {
            return Err(format!(
                "entry {} is shorter than {MIN_KEY_LEN} characters (give a longer key, or \
                 sha256:<hex> of it)",
                i + 1
            ));
        } else if entry.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!(
                "entry {} contains whitespace or control characters",
                i + 1
            ));
        } else {
            keys.push(sha256(entry.as_bytes()));
        }
    }
    Ok(keys)
}

/// The key in an `Authorization: Bearer <key>` header's value. The scheme is case-insensitive
/// (RFC 9110, section 11.1): `Bearer`, `bearer`, `BEARER`.
pub fn bearer(authorization: Option<&str>) -> Option<&str> {
    authorization
        .and_then(|h| h.trim_start().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, key)| key.trim())
        .filter(|k| !k.is_empty())
}

impl Auth {
    /// Whether `key` (as typed into the console's sign-in form) is a key of
    /// `DISPATCH_API_KEYS` (an admin key). Keys kept in the database cannot sign in to the
    /// console yet: a session does not carry a scope.
    pub fn accepts(&self, key: &str) -> bool {
        self.allows(Some(&format!("Bearer {}", key.trim())))
    }

    /// Whether `authorization` (the header's value) carries a key of `DISPATCH_API_KEYS`.
    pub fn allows(&self, authorization: Option<&str>) -> bool {
        let keys = match self {
            Self::Disabled => return true,
            Self::Keys(keys) => keys,
        };
        let Some(presented) = bearer(authorization) else {
            return false;
        };
        let presented = sha256(presented.as_bytes());
        // Digests of equal length, compared with every key and every byte, never stopping
        // early: timing says nothing about which key (if any) matched, nor how closely.
        keys.iter().fold(false, |found, key| {
            let difference = key
                .iter()
                .zip(presented.iter())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b));
            found | (difference == 0)
        })
    }
}

/// The header an `admin` or `read` key names the tenant it works in with (absent: `default`).
pub const TENANT_HEADER: &str = "Dispatch-Tenant";

/// Extractor that lets a handler run only for a caller whose key allows this route; put it
/// first in the handler's arguments so nothing (not even the body) is read for anyone else.
/// It also decides the request's tenant: the key's own for a tenant key, else the one the
/// `Dispatch-Tenant` header names (else `default`); it must be a live tenant.
#[derive(Debug, Clone)]
pub struct Authorized {
    /// Who is calling, as the audit log names them: a database key's id, `env` for a key of
    /// `DISPATCH_API_KEYS`, `anonymous` when authentication is disabled.
    pub actor: String,
    /// What the key may do: `admin` for the keys of `DISPATCH_API_KEYS` and when
    /// authentication is disabled.
    pub scope: Scope,
    /// The tenant this request works in: every store query it makes is filtered by it.
    pub tenant: TenantId,
}

/// The caller a presented key is (`None`: no valid key), before any route or tenant is chosen:
/// `(actor, scope)`. The one place keys are resolved, for the `Authorization` header and for
/// the console's sign-in.
pub fn resolve(state: &crate::routes::AppState, key: Option<&str>) -> Option<(String, Scope)> {
    if state.auth == Auth::Disabled {
        return Some(("anonymous".to_owned(), Scope::Admin));
    }
    let key = key?;
    if state.auth.allows(Some(&format!("Bearer {key}"))) {
        return Some(("env".to_owned(), Scope::Admin));
    }
    state
        .keys
        .lookup(key)
        .map(|(id, scope)| (id.as_str().to_owned(), scope))
}

/// The tenant a caller of `scope` works in, given the `Dispatch-Tenant` header's value: the
/// key's own tenant (a header naming another is refused), else the header's, else `default`.
/// It must be live on this replica's view.
pub fn tenant_of(
    state: &crate::routes::AppState,
    scope: &Scope,
    header: Option<&str>,
) -> Result<TenantId, crate::error::ApiError> {
    use crate::error::ApiError;
    let named = header
        .map(|h| {
            TenantId::parse(h.trim()).map_err(|e| ApiError::InvalidHeader {
                header: TENANT_HEADER.to_owned(),
                message: format!("not a tenant id: {e}"),
            })
        })
        .transpose()?;
    let tenant = match (scope.tenant(), named) {
        (Some(own), Some(named)) if *own != named => {
            return Err(ApiError::Forbidden(format!(
                "a key of scope {scope} works only in tenant {own}, not {named}"
            )));
        }
        (Some(own), _) => own.clone(),
        (None, Some(named)) => named,
        (None, None) => TenantId::default_tenant(),
    };
    if state.keys.tenant(&tenant).is_none() {
        return Err(ApiError::NotFound(format!("no tenant {tenant}")));
    }
    Ok(tenant)
}

/// `401` without a valid key; `403` when the key's scope does not allow the route or names
/// another tenant; `404` for a tenant that does not exist.
fn authorize(req: &actix_web::HttpRequest) -> Result<Authorized, crate::error::ApiError> {
    use crate::error::ApiError;
    let state = req
        .app_data::<actix_web::web::Data<crate::routes::AppState>>()
        .ok_or(ApiError::Unauthorized)?;
    let header = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let (actor, scope) = resolve(state, bearer(header)).ok_or(ApiError::Unauthorized)?;
    let route = req.match_pattern().unwrap_or_else(|| req.path().to_owned());
    if !scope.permits(req.method().as_str(), &route) {
        return Err(ApiError::Forbidden(format!(
            "key {actor} has scope {scope}, which does not allow {} {route}",
            req.method()
        )));
    }
    let named = match req.headers().get(TENANT_HEADER) {
        None => None,
        Some(v) => Some(v.to_str().map_err(|_| ApiError::InvalidHeader {
            header: TENANT_HEADER.to_owned(),
            message: "not visible ASCII".to_owned(),
        })?),
    };
    let tenant = tenant_of(state, &scope, named)?;
    Ok(Authorized {
        actor,
        scope,
        tenant,
    })
}

impl actix_web::FromRequest for Authorized {
    type Error = crate::error::ApiError;
    type Future = std::future::Ready<Result<Self, Self::Error>>;

    fn from_request(req: &actix_web::HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        std::future::ready(authorize(req))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_keys_and_digests_are_both_accepted() {
        let plain = "a-long-enough-api-key";
        let digest_hex: String = sha256(plain.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        for config in [
            plain.to_owned(),
            format!("sha256:{digest_hex}"),
            format!(" other-key-of-16chars , {plain} "),
        ] {
            let auth = Auth::Keys(parse_keys(&config).expect("valid"));
            assert!(auth.allows(Some(&format!("Bearer {plain}"))), "{config}");
            assert!(!auth.allows(Some("Bearer wrong-key-wrong-key")), "{config}");
            assert!(!auth.allows(Some(plain)), "the Bearer scheme is required");
            assert!(!auth.allows(None));
            assert!(!auth.allows(Some("Bearer ")));
            for scheme in ["bearer", "BEARER", "BeArEr"] {
                assert!(
                    auth.allows(Some(&format!("{scheme} {plain}"))),
                    "the scheme is case-insensitive: {scheme}"
                );
            }
            assert!(!auth.allows(Some(&format!("Basic {plain}"))));
            assert!(!auth.allows(Some(&format!("Bearerx {plain}"))));
        }
    }

    #[test]
    fn bad_key_entries_are_refused_with_their_position() {
        assert!(
            parse_keys("short")
                .expect_err("too short")
                .contains("entry 1")
        );
        assert!(
            parse_keys("a-long-enough-api-key,sha256:abc")
                .expect_err("refused")
                .contains("entry 2")
        );
        assert!(parse_keys(&format!("sha256:{}", "g".repeat(64))).is_err());
        assert_eq!(parse_keys(" , ").expect("blank"), Vec::<[u8; 32]>::new());
    }

    #[test]
    fn disabled_auth_lets_everyone_in_and_debug_hides_keys() {
        assert!(Auth::Disabled.allows(None));
        let auth = Auth::Keys(parse_keys("a-long-enough-api-key").expect("valid"));
        assert_eq!(format!("{auth:?}"), "Auth::Keys(1 keys)");
    }
}
