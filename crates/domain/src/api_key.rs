//! API keys kept in the database: their visible id, how a key is spelled and generated, its
//! SHA-256 (the only form stored), and what each scope may call.

use std::fmt;
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::digest::{SHA256, digest};
use ring::rand::{SecureRandom, SystemRandom};

use crate::error::ParseError;

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

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Everything, including managing keys and reading the audit log.
    Admin,
    /// Every `GET` but the key and audit routes: sees everything, changes nothing.
    Read,
    /// Only `POST /events` and `POST /events/batch`: for producers.
    Ingest,
}

/// Routes only an admin key may call, whatever the method.
const ADMIN_ONLY: [&str; 4] = ["/keys", "/keys/{id}", "/keys/{id}/rotate", "/audit"];

impl Scope {
    pub const ALL: [Self; 3] = [Self::Admin, Self::Read, Self::Ingest];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Read => "read",
            Self::Ingest => "ingest",
        }
    }

    /// Whether a key of this scope may call `method` on the route pattern `route` (as routed,
    /// e.g. `/events/{id}`).
    pub fn permits(self, method: &str, route: &str) -> bool {
        match self {
            Self::Admin => true,
            _ if ADMIN_ONLY.contains(&route) => false,
            Self::Read => method.eq_ignore_ascii_case("GET"),
            Self::Ingest => {
                method.eq_ignore_ascii_case("POST") && matches!(route, "/events" | "/events/batch")
            }
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scope {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| {
                ParseError::Invalid(format!("unknown scope {s:?}: one of admin, read, ingest"))
            })
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
        assert!(Admin.permits("DELETE", "/keys/{id}"));
        assert!(Read.permits("GET", "/events/{id}"));
        assert!(!Read.permits("POST", "/events"));
        assert!(!Read.permits("GET", "/keys"), "keys are for admins");
        assert!(!Read.permits("GET", "/audit"));
        assert!(Ingest.permits("POST", "/events"));
        assert!(Ingest.permits("POST", "/events/batch"));
        assert!(!Ingest.permits("GET", "/events/{id}"));
        assert!(!Ingest.permits("POST", "/subscriptions"));
        for s in Scope::ALL {
            assert_eq!(s.as_str().parse::<Scope>(), Ok(s));
        }
        assert!("owner".parse::<Scope>().is_err());
    }
}
