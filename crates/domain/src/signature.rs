//! Webhook signatures, both forms Dispatch sends:
//!
//! - the seed's `X-Dispatch-Signature: sha256=<lowercase hex HMAC-SHA256(key, body)>`, which
//!   existing receivers verify;
//! - Standard Webhooks' `webhook-signature: v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`,
//!   which signs the timestamp too, so receivers can reject replays.
//!
//! The key is the base64-decoded part of a `whsec_<base64>` secret, or else the secret's UTF-8
//! bytes.
//!
//! While a subscription's secret is being rotated both headers carry one signature per secret,
//! space-separated, the new secret's first (Standard Webhooks' convention, applied to the seed's
//! header too): [`dispatch_signature_header`], [`standard_signature_header`]. A receiver accepts
//! the request when any of them verifies ([`verify_dispatch_signature`],
//! [`verify_standard_signature`]).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

use crate::error::ParseError;

const WHSEC_PREFIX: &str = "whsec_";

/// The HMAC key derived from a subscription's secret. Its Debug output hides the bytes.
#[derive(Clone)]
pub struct SigningKey(hmac::Key);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(..)")
    }
}

impl SigningKey {
    /// Derives the key from a secret as stored: `whsec_<base64>` or any other text.
    pub fn from_secret(secret: &str) -> Result<Self, ParseError> {
        let bytes = match secret.strip_prefix(WHSEC_PREFIX) {
            Some(encoded) => STANDARD.decode(encoded).map_err(|e| {
                ParseError::Invalid(format!(
                    "a whsec_ secret must be base64 after the prefix: {e}"
                ))
            })?,
            None => secret.as_bytes().to_vec(),
        };
        if bytes.is_empty() {
            return Err(ParseError::Empty);
        }
        Ok(Self(hmac::Key::new(hmac::HMAC_SHA256, &bytes)))
    }

    /// `sha256=<lowercase hex HMAC-SHA256(key, body)>`, the seed's `X-Dispatch-Signature`.
    pub fn dispatch_signature(&self, body: &[u8]) -> String {
        let tag = hmac::sign(&self.0, body);
        let mut out = String::with_capacity(7 + 64);
        out.push_str("sha256=");
        for byte in tag.as_ref() {
            out.push_str(&format!("{byte:02x}"));
        }
        out
    }

    /// `v1,<base64 HMAC-SHA256(key, "{webhook_id}.{timestamp}.{body}")>`, Standard Webhooks'
    /// `webhook-signature`.
    pub fn standard_signature(&self, webhook_id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut ctx = hmac::Context::with_key(&self.0);
        ctx.update(webhook_id.as_bytes());
        ctx.update(b".");
        ctx.update(timestamp.to_string().as_bytes());
        ctx.update(b".");
        ctx.update(body);
        format!("v1,{}", STANDARD.encode(ctx.sign().as_ref()))
    }
}

/// `X-Dispatch-Signature` for every key, in order, space-separated (one key: one signature, the
/// seed's form exactly).
pub fn dispatch_signature_header(keys: &[SigningKey], body: &[u8]) -> String {
    keys.iter()
        .map(|k| k.dispatch_signature(body))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `webhook-signature` for every key, in order, space-separated.
pub fn standard_signature_header(
    keys: &[SigningKey],
    webhook_id: &str,
    timestamp: i64,
    body: &[u8],
) -> String {
    keys.iter()
        .map(|k| k.standard_signature(webhook_id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

fn from_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Whether any `sha256=<hex>` entry of an `X-Dispatch-Signature` value is `key`'s signature of
/// `body` (compared in constant time).
pub fn verify_dispatch_signature(key: &SigningKey, header: &str, body: &[u8]) -> bool {
    header
        .split(' ')
        .filter_map(|s| s.strip_prefix("sha256="))
        .filter_map(from_hex)
        .any(|tag| hmac::verify(&key.0, body, &tag).is_ok())
}

/// Whether any `v1,<base64>` entry of a `webhook-signature` value is `key`'s signature of
/// `{webhook_id}.{timestamp}.{body}` (compared in constant time). The timestamp's age is the
/// caller's to check.
pub fn verify_standard_signature(
    key: &SigningKey,
    header: &str,
    webhook_id: &str,
    timestamp: i64,
    body: &[u8],
) -> bool {
    let mut signed = format!("{webhook_id}.{timestamp}.").into_bytes();
    signed.extend_from_slice(body);
    header
        .split(' ')
        .filter_map(|s| s.strip_prefix("v1,"))
        .filter_map(|b64| STANDARD.decode(b64).ok())
        .any(|tag| hmac::verify(&key.0, &signed, &tag).is_ok())
}

/// A fresh `whsec_` secret of 24 random bytes, for subscriptions created without one.
pub fn generate_secret() -> Result<String, ParseError> {
    let mut bytes = [0u8; 24];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| ParseError::Invalid("the system random generator failed".to_owned()))?;
    Ok(format!("{WHSEC_PREFIX}{}", STANDARD.encode(bytes)))
}

/// Checks a secret a caller supplied: non-empty, at most 512 bytes, and a `whsec_` secret must
/// decode to at least 16 bytes.
pub fn validate_secret(secret: &str) -> Result<(), ParseError> {
    if secret.len() > 512 {
        return Err(ParseError::TooLong {
            max: 512,
            len: secret.len(),
        });
    }
    SigningKey::from_secret(secret)?;
    if let Some(encoded) = secret.strip_prefix(WHSEC_PREFIX) {
        let len = STANDARD.decode(encoded).map(|b| b.len()).unwrap_or(0);
        if len < 16 {
            return Err(ParseError::Invalid(format!(
                "a whsec_ secret must decode to at least 16 bytes (got {len})"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_secrets_are_valid_whsec_secrets_and_differ() {
        let a = generate_secret().expect("random");
        let b = generate_secret().expect("random");
        assert!(a.starts_with("whsec_"));
        assert_ne!(a, b);
        assert!(validate_secret(&a).is_ok());
    }

    #[test]
    fn bad_secrets_are_refused() {
        assert!(validate_secret("").is_err());
        assert!(validate_secret("whsec_!!!").is_err());
        assert!(
            validate_secret("whsec_AAAA").is_err(),
            "too short once decoded"
        );
        assert!(validate_secret(&"x".repeat(513)).is_err());
        assert!(validate_secret("my-secret-key").is_ok());
    }

    #[test]
    fn several_keys_give_several_signatures_each_verifiable_by_its_own_key() {
        let new = SigningKey::from_secret("the-new-secret").expect("key");
        let old = SigningKey::from_secret("the-old-secret").expect("key");
        let other = SigningKey::from_secret("somebody-else").expect("key");
        let body = br#"{"id":"evt_1"}"#;
        let keys = [new.clone(), old.clone()];

        let dispatch = dispatch_signature_header(&keys, body);
        assert_eq!(
            dispatch,
            format!(
                "{} {}",
                new.dispatch_signature(body),
                old.dispatch_signature(body)
            )
        );
        assert_eq!(
            dispatch_signature_header(&keys[..1], body),
            new.dispatch_signature(body),
            "one key: the seed's single value"
        );
        assert!(verify_dispatch_signature(&new, &dispatch, body));
        assert!(verify_dispatch_signature(&old, &dispatch, body));
        assert!(!verify_dispatch_signature(&other, &dispatch, body));
        assert!(!verify_dispatch_signature(&new, &dispatch, b"{}"));

        let standard = standard_signature_header(&keys, "evt_1", 1_700_000_000, body);
        assert_eq!(standard.split(' ').count(), 2);
        assert!(standard.starts_with(&new.standard_signature("evt_1", 1_700_000_000, body)));
        assert!(verify_standard_signature(
            &new,
            &standard,
            "evt_1",
            1_700_000_000,
            body
        ));
        assert!(verify_standard_signature(
            &old,
            &standard,
            "evt_1",
            1_700_000_000,
            body
        ));
        assert!(!verify_standard_signature(
            &other,
            &standard,
            "evt_1",
            1_700_000_000,
            body
        ));
        assert!(!verify_standard_signature(
            &new,
            &standard,
            "evt_1",
            1_700_000_001,
            body
        ));
        assert!(!verify_standard_signature(
            &new,
            "v1,!!! garbage",
            "evt_1",
            1,
            body
        ));
    }

    #[test]
    fn debug_output_hides_the_key() {
        let key = SigningKey::from_secret("my-secret-key").expect("key");
        assert_eq!(format!("{key:?}"), "SigningKey(..)");
    }
}
