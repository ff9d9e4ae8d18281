//! Subscription secrets sealed at rest: AES-256-GCM (ring) under a keyring of named keys.
//!
//! A sealed secret is stored as `v1:<key id>:<base64(nonce ‖ ciphertext ‖ tag)>`: the format
//! version, the id of the key that sealed it, then a fresh random 96-bit nonce, the ciphertext and
//! the 128-bit tag. The additional authenticated data binds the value to its key id and to the
//! subscription it belongs to, so a sealed value copied to another subscription's row (or
//! relabelled with another key id) does not open.
//!
//! The keyring (`secret_keys`: `id:base64,id:base64,…`) holds every key that may still be needed
//! to open stored values; the first seals new ones. Keys rotate by putting a new key first,
//! re-sealing what the old one sealed, then removing the old one (docs/operations.md). Random
//! nonces are safe for far more values than a subscriptions table holds (NIST's bound for one key
//! is 2^32 seals).

use std::fmt;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

/// The format version every sealed value starts with.
pub const FORMAT: &str = "v1";
/// Bytes of an AES-256 key.
pub const KEY_LEN: usize = 32;
/// Longest key id.
pub const MAX_KEY_ID_LEN: usize = 32;
const TAG_LEN: usize = 16;
/// Separates these values from anything else the same keys might ever protect.
const AAD_LABEL: &str = "dispatch.subscription-secret";

/// Why a keyring could not be built from configuration. Messages never contain key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyringError {
    #[error(
        "at least one key is required: `<id>:<base64 of 32 random bytes>`, e.g. \
         `k1:$(openssl rand -base64 32)`"
    )]
    Empty,
    #[error("entry {entry} must be `<id>:<base64 of 32 bytes>`")]
    NotAPair { entry: usize },
    #[error("entry {entry}: the key id must be 1-{MAX_KEY_ID_LEN} characters from A-Z a-z 0-9 _ -")]
    BadId { entry: usize },
    #[error(
        "entry {entry} ({id:?}): the key must be standard base64 of exactly {KEY_LEN} bytes{detail}"
    )]
    BadKey {
        entry: usize,
        id: String,
        detail: String,
    },
    #[error("entry {entry}: the key id {id:?} is listed twice")]
    DuplicateId { entry: usize, id: String },
}

/// Why a secret could not be sealed or opened. Messages never contain the secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("the stored value is not a sealed secret (expected `v1:<key id>:<base64>`)")]
    Malformed,
    #[error("sealed with key {0:?}, which is not in secret_keys")]
    UnknownKey(String),
    #[error(
        "does not open with key {0:?}: other key material under that id, an altered value, or a \
         value belonging to another subscription"
    )]
    NotAuthentic(String),
    #[error("the opened secret is not UTF-8")]
    NotUtf8,
    #[error("the system random generator failed")]
    Random,
}

struct Entry {
    id: String,
    key: LessSafeKey,
}

/// The keys that seal and open subscription secrets; the first one seals. Cheap to clone; its
/// `Debug` output names the key ids only.
#[derive(Clone)]
pub struct Keyring {
    entries: Arc<[Entry]>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("active", &self.active_id())
            .field("ids", &self.ids().collect::<Vec<_>>())
            .finish()
    }
}

impl PartialEq for Keyring {
    /// Same ids in the same order (the key bytes cannot be compared, nor need to be).
    fn eq(&self, other: &Self) -> bool {
        self.ids().eq(other.ids())
    }
}

fn valid_id(id: &str) -> bool {
    (1..=MAX_KEY_ID_LEN).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn aad(key_id: &str, subscription_id: &str) -> Vec<u8> {
    format!("{AAD_LABEL}:{FORMAT}:{key_id}:{subscription_id}").into_bytes()
}

impl Keyring {
    /// Parses `secret_keys`: comma-separated `<id>:<standard base64 of 32 bytes>` entries (blank
    /// entries and surrounding spaces ignored). The first entry seals new secrets; every entry
    /// opens what it sealed.
    pub fn parse(text: &str) -> Result<Self, KeyringError> {
        let mut keys: Vec<(String, [u8; KEY_LEN])> = Vec::new();
        for (i, entry) in text.split(',').map(str::trim).enumerate() {
            let entry_no = i + 1;
            if entry.is_empty() {
                continue;
            }
            let (id, encoded) = entry
                .split_once(':')
                .ok_or(KeyringError::NotAPair { entry: entry_no })?;
            let id = id.trim();
            if !valid_id(id) {
                return Err(KeyringError::BadId { entry: entry_no });
            }
            let bad_key = |detail: String| KeyringError::BadKey {
                entry: entry_no,
                id: id.to_owned(),
                detail,
            };
            let bytes = STANDARD
                .decode(encoded.trim())
                .map_err(|_| bad_key(String::new()))?;
            let key: [u8; KEY_LEN] = bytes
                .as_slice()
                .try_into()
                .map_err(|_| bad_key(format!(" (got {})", bytes.len())))?;
            if keys.iter().any(|(known, _)| known == id) {
                return Err(KeyringError::DuplicateId {
                    entry: entry_no,
                    id: id.to_owned(),
                });
            }
            keys.push((id.to_owned(), key));
        }
        Self::from_keys(keys)
    }

    /// What is wrong with the entries of `secret_keys` text whose key is all zeros or is
    /// `published` (standard base64 of a key anyone can read): keys that protect nothing.
    /// `None` when there are none.
    pub fn weak_keys(text: &str, published: &str) -> Option<String> {
        let published = STANDARD.decode(published.trim()).unwrap_or_default();
        let weak: Vec<&str> = text
            .split(',')
            .map(str::trim)
            .filter_map(|entry| entry.split_once(':'))
            .filter(|(_, encoded)| {
                STANDARD.decode(encoded.trim()).is_ok_and(|bytes| {
                    bytes.iter().all(|b| *b == 0) || (!published.is_empty() && bytes == published)
                })
            })
            .map(|(id, _)| id.trim())
            .collect();
        (!weak.is_empty()).then(|| {
            format!(
                "key {} is all zeros or the development key",
                weak.join(", ")
            )
        })
    }

    /// A keyring of the given `(id, key)` pairs; the first seals.
    pub fn from_keys(
        keys: impl IntoIterator<Item = (String, [u8; KEY_LEN])>,
    ) -> Result<Self, KeyringError> {
        let mut entries = Vec::new();
        for (i, (id, bytes)) in keys.into_iter().enumerate() {
            if !valid_id(&id) {
                return Err(KeyringError::BadId { entry: i + 1 });
            }
            if entries.iter().any(|e: &Entry| e.id == id) {
                return Err(KeyringError::DuplicateId { entry: i + 1, id });
            }
            let unbound =
                UnboundKey::new(&AES_256_GCM, &bytes).map_err(|_| KeyringError::BadKey {
                    entry: i + 1,
                    id: id.clone(),
                    detail: String::new(),
                })?;
            entries.push(Entry {
                id,
                key: LessSafeKey::new(unbound),
            });
        }
        if entries.is_empty() {
            return Err(KeyringError::Empty);
        }
        Ok(Self {
            entries: entries.into(),
        })
    }

    /// The id of the key that seals new secrets.
    pub fn active_id(&self) -> &str {
        &self.entries[0].id
    }

    /// Every key id, the active one first.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|e| e.id.as_str())
    }

    fn key(&self, id: &str) -> Option<&LessSafeKey> {
        self.entries.iter().find(|e| e.id == id).map(|e| &e.key)
    }

    /// Seals `secret` for the subscription `subscription_id` under the active key.
    pub fn seal(&self, subscription_id: &str, secret: &str) -> Result<String, SealError> {
        let active = &self.entries[0];
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| SealError::Random)?;
        let mut in_out = secret.as_bytes().to_vec();
        active
            .key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad(&active.id, subscription_id)),
                &mut in_out,
            )
            .map_err(|_| SealError::Random)?;
        let mut payload = Vec::with_capacity(NONCE_LEN + in_out.len());
        payload.extend_from_slice(&nonce);
        payload.extend_from_slice(&in_out);
        Ok(format!(
            "{FORMAT}:{}:{}",
            active.id,
            STANDARD.encode(payload)
        ))
    }

    /// Opens a value [`Keyring::seal`] produced for `subscription_id`, with the key it names.
    pub fn open(&self, subscription_id: &str, sealed: &str) -> Result<String, SealError> {
        let (key_id, encoded) = split(sealed)?;
        let key = self
            .key(key_id)
            .ok_or_else(|| SealError::UnknownKey(key_id.to_owned()))?;
        let payload = STANDARD.decode(encoded).map_err(|_| SealError::Malformed)?;
        if payload.len() < NONCE_LEN + TAG_LEN {
            return Err(SealError::Malformed);
        }
        let (nonce, rest) = payload.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| SealError::Malformed)?;
        let mut in_out = rest.to_vec();
        let plain = key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad(key_id, subscription_id)),
                &mut in_out,
            )
            .map_err(|_| SealError::NotAuthentic(key_id.to_owned()))?;
        String::from_utf8(plain.to_vec()).map_err(|_| SealError::NotUtf8)
    }

    /// Whether `sealed` was sealed with the active key (so re-sealing it would change nothing
    /// but its nonce).
    pub fn is_active(&self, sealed: &str) -> bool {
        key_id_of(sealed).is_ok_and(|id| id == self.active_id())
    }
}

fn split(sealed: &str) -> Result<(&str, &str), SealError> {
    let rest = sealed
        .strip_prefix(FORMAT)
        .and_then(|r| r.strip_prefix(':'))
        .ok_or(SealError::Malformed)?;
    let (key_id, encoded) = rest.split_once(':').ok_or(SealError::Malformed)?;
    if !valid_id(key_id) {
        return Err(SealError::Malformed);
    }
    Ok((key_id, encoded))
}

/// The id of the key that sealed `sealed`.
pub fn key_id_of(sealed: &str) -> Result<&str, SealError> {
    split(sealed).map(|(id, _)| id)
}

/// 32 fresh random bytes as standard base64: a new key for `secret_keys`.
pub fn generate_key() -> Result<String, SealError> {
    let mut key = [0u8; KEY_LEN];
    SystemRandom::new()
        .fill(&mut key)
        .map_err(|_| SealError::Random)?;
    Ok(STANDARD.encode(key))
}

#[cfg(test)]
mod tests;
