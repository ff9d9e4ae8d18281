//! API keys kept in the database: their visible id, how a key is spelled and generated, its
//! SHA-256 (the only form stored), and what each scope may call.

use std::fmt;
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::digest::{SHA256, digest};
use ring::rand::{SecureRandom, SystemRandom};

use crate::error::ParseError;
use crate::tenant::TenantId;

/// Prefix of every database key and of its id: a leaked key is recognisable and greppable.
pub const KEY_PREFIX: &str = "dk_";
/// Characters of an id after the prefix.
const ID_CHARS: usize = 12;
const ID_ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
/// Random bytes of a key's secret part (256 bits).
const SECRET_BYTES: usize = 32;

/// A database key's id: `dk_` and 12 lowercase letters or digits. Not secret: it is the start
/// of the key, shown in lists and logs.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct ApiKeyId(String);

impl ApiKeyId {
    pub fn parse(value: &str) -> Result<Self, ParseError> {
        let body = value.strip_prefix(KEY_PREFIX).ok_or_else(|| {
            ParseError::Invalid(format!("an API key id starts with {KEY_PREFIX:?}"))
        })?;
        if body.len() != ID_CHARS || !body.bytes().all(|b| ID_ALPHABET.contains(&b)) {
            return Err(ParseError::Invalid(format!(
                "an API key id is {KEY_PREFIX:?} and {ID_CHARS} lowercase letters or digits"
            )));
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ApiKeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A key just generated: the whole key (shown once) and what is stored of it.
pub struct GeneratedKey {
    pub id: ApiKeyId,
    /// `dk_<id>_<secret>`: given to the caller once, never stored.
    pub key: String,
    pub hash: [u8; 32],
}

impl fmt::Debug for GeneratedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GeneratedKey")
            .field("id", &self.id)
            .field("key", &"..")
            .finish()
    }
}

/// A new key from the system's random generator.
pub fn generate() -> Result<GeneratedKey, ParseError> {
    let rng = SystemRandom::new();
    let failed = |_| ParseError::Invalid("the system random generator failed".to_owned());
    let mut id_bytes = [0u8; ID_CHARS];
    rng.fill(&mut id_bytes).map_err(failed)?;
    let id: String = id_bytes
        .iter()
        .map(|b| char::from(ID_ALPHABET[usize::from(*b) % ID_ALPHABET.len()]))
        .collect();
    let mut secret = [0u8; SECRET_BYTES];
    rng.fill(&mut secret).map_err(failed)?;
    let id = ApiKeyId(format!("{KEY_PREFIX}{id}"));
    let key = format!("{id}_{}", URL_SAFE_NO_PAD.encode(secret));
    Ok(GeneratedKey {
        hash: hash(&key),
        id,
        key,
    })
}

/// The SHA-256 of a presented key: what is stored and compared.
pub fn hash(key: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, key.as_bytes()).as_ref());
    out
}

/// The id of a presented key that is spelled like a database key (`dk_<12>_<secret>`).
pub fn id_of(presented: &str) -> Option<ApiKeyId> {
    let id = presented.get(..KEY_PREFIX.len() + ID_CHARS)?;
    let rest = presented.get(KEY_PREFIX.len() + ID_CHARS..)?;
    if !rest.starts_with('_') || rest.len() < 2 {
        return None;
    }
    ApiKeyId::parse(id).ok()
}

/// What a key may do, and in which tenants.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Everything in every tenant, including tenants, keys and the audit log.
    Admin,
    /// Every `GET` in every tenant but the key and audit routes: sees everything, changes
    /// nothing.
    Read,
    /// `tenant:<id>`: that tenant's events, subscriptions, deliveries and replays.
    Tenant(TenantId),
    /// `tenant:<id>:read`: the `GET`s of [`Scope::Tenant`].
    TenantRead(TenantId),
    /// `ingest:<id>`: only `POST /events` and `POST /events/batch`, into that tenant; for
    /// producers. `ingest` alone (keys made before tenants) is `ingest:default`.
    Ingest(TenantId),
}

/// Routes only an admin key may call, whatever the method.
const ADMIN_ONLY: [&str; 5] = [
    "/keys",
    "/keys/{id}",
    "/keys/{id}/rotate",
    "/audit",
    "/tenants/{id}/keys",
];

/// Routes about every tenant at once: admin keys, and `read` keys for their `GET`s.
const ALL_TENANTS: [&str; 3] = ["/tenants", "/tenants/{id}", "/stats"];

impl Scope {
    /// Whether a key of this scope may call `method` on the route pattern `route` (as routed,
    /// e.g. `/events/{id}`).
    pub fn permits(&self, method: &str, route: &str) -> bool {
        let get = method.eq_ignore_ascii_case("GET");
        match self {
            Self::Admin => true,
            _ if ADMIN_ONLY.contains(&route) => false,
            Self::Read => get,
            _ if ALL_TENANTS.contains(&route) => false,
            Self::Tenant(_) => true,
            Self::TenantRead(_) => get,
            Self::Ingest(_) => {
                method.eq_ignore_ascii_case("POST") && matches!(route, "/events" | "/events/batch")
            }
        }
    }

    /// The one tenant a key of this scope works in; `None` for the keys of every tenant
    /// (`admin`, `read`), which name one with the `Dispatch-Tenant` header.
    pub fn tenant(&self) -> Option<&TenantId> {
        match self {
            Self::Admin | Self::Read => None,
            Self::Tenant(t) | Self::TenantRead(t) | Self::Ingest(t) => Some(t),
        }
    }

    /// Whether it may change anything (a read-only scope may not).
    pub fn writes(&self) -> bool {
        !matches!(self, Self::Read | Self::TenantRead(_))
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Admin => f.write_str("admin"),
            Self::Read => f.write_str("read"),
            Self::Tenant(t) => write!(f, "tenant:{t}"),
            Self::TenantRead(t) => write!(f, "tenant:{t}:read"),
            Self::Ingest(t) => write!(f, "ingest:{t}"),
        }
    }
}

impl serde::Serialize for Scope {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl FromStr for Scope {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let tenant = |id: &str| {
            TenantId::parse(id).map_err(|e| {
                ParseError::Invalid(format!("scope {s:?} names an invalid tenant id: {e}"))
            })
        };
        match s.split(':').collect::<Vec<_>>().as_slice() {
            ["admin"] => Ok(Self::Admin),
            ["read"] => Ok(Self::Read),
            ["ingest"] => Ok(Self::Ingest(TenantId::default_tenant())),
            ["tenant", id] => Ok(Self::Tenant(tenant(id)?)),
            ["tenant", id, "read"] => Ok(Self::TenantRead(tenant(id)?)),
            ["ingest", id] => Ok(Self::Ingest(tenant(id)?)),
            _ => Err(ParseError::Invalid(format!(
                "unknown scope {s:?}: one of admin, read, tenant:<tenant id>, \
                 tenant:<tenant id>:read, ingest:<tenant id>"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_carry_their_id_and_hash_and_differ() {
        let a = generate().expect("random");
        let b = generate().expect("random");
        assert_ne!(a.key, b.key);
        assert!(a.key.starts_with(&format!("{}_", a.id)));
        assert_eq!(id_of(&a.key), Some(a.id.clone()));
        assert_eq!(a.hash, hash(&a.key));
        assert_eq!(a.key.len(), 3 + 12 + 1 + 43);
        assert!(
            !format!("{a:?}").contains(&a.key[16..]),
            "Debug hides the key"
        );
    }

    #[test]
    fn only_well_formed_ids_parse() {
        assert!(ApiKeyId::parse("dk_abcdefgh1234").is_ok());
        for bad in [
            "dk_ABCDEFGH1234",
            "dk_abc",
            "xx_abcdefgh1234",
            "dk_abcdefgh12345",
            "",
        ] {
            assert!(ApiKeyId::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(id_of("dk_abcdefgh1234"), None, "an id alone is not a key");
        assert_eq!(id_of("dk_abcdefgh1234_"), None);
        assert_eq!(id_of("a-long-environment-key"), None);
        assert!(id_of("dk_abcdefgh1234_s3cr3t").is_some());
    }

    #[test]
    fn scopes_permit_what_they_say() {
        use Scope::*;
        let acme = TenantId::parse("acme").expect("valid");
        assert!(Admin.permits("DELETE", "/keys/{id}"));
        assert!(Admin.permits("POST", "/tenants"));
        assert!(Read.permits("GET", "/events/{id}"));
        assert!(Read.permits("GET", "/tenants"));
        assert!(!Read.permits("POST", "/events"));
        assert!(!Read.permits("GET", "/keys"), "keys are for admins");
        assert!(!Read.permits("GET", "/audit"));
        assert!(!Read.permits("GET", "/tenants/{id}/keys"));
        let tenant = Tenant(acme.clone());
        assert!(tenant.permits("POST", "/subscriptions"));
        assert!(tenant.permits("POST", "/replays"));
        assert!(
            !tenant.permits("GET", "/tenants"),
            "other tenants are not its business"
        );
        assert!(!tenant.permits("GET", "/stats"), "stats span every tenant");
        assert!(!tenant.permits("POST", "/keys"));
        let reader = TenantRead(acme.clone());
        assert!(reader.permits("GET", "/deliveries/{id}"));
        assert!(!reader.permits("POST", "/deliveries/{id}/retry"));
        assert!(!reader.permits("GET", "/tenants/{id}"));
        let ingest = Ingest(acme.clone());
        assert!(ingest.permits("POST", "/events"));
        assert!(ingest.permits("POST", "/events/batch"));
        assert!(!ingest.permits("GET", "/events/{id}"));
        assert!(!ingest.permits("POST", "/subscriptions"));
        assert_eq!(tenant.tenant(), Some(&acme));
        assert_eq!(Admin.tenant(), None);
        assert!(!reader.writes() && !Read.writes() && ingest.writes());
    }

    #[test]
    fn scopes_read_back_what_they_print() {
        let acme = TenantId::parse("acme").expect("valid");
        for s in [
            Scope::Admin,
            Scope::Read,
            Scope::Tenant(acme.clone()),
            Scope::TenantRead(acme.clone()),
            Scope::Ingest(acme),
        ] {
            assert_eq!(s.to_string().parse::<Scope>(), Ok(s));
        }
        assert_eq!(
            "ingest".parse::<Scope>(),
            Ok(Scope::Ingest(TenantId::default_tenant())),
            "keys made before tenants ingest into the default tenant"
        );
        for bad in [
            "owner",
            "tenant",
            "tenant:",
            "tenant:Acme",
            "tenant:a:write",
            "ingest:a/b",
        ] {
            assert!(bad.parse::<Scope>().is_err(), "{bad}");
        }
    }
}
