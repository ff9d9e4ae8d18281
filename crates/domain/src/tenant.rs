//! Tenants: who owns events and subscriptions, and the stored form of ids that keeps tenants
//! apart (ADR 014).
//!
//! Event and subscription ids are unique per tenant. The store keeps one text key per row: the
//! producer's id itself for the `default` tenant (so a single-tenant installation's rows are
//! exactly what they were before tenants existed), and `<tenant>/<id>` for every other tenant.
//! `/` is allowed neither in ids nor in tenant ids, so two tenants' stored ids never collide and
//! the external id is always what follows the last `/`.

use std::fmt;

use crate::error::{ParseError, check_length};

/// Longest tenant id accepted, in characters.
pub const MAX_TENANT_ID_LEN: usize = 40;
const TENANT_ALLOWED: &str =
    "lower-case ASCII letters, digits, '_', '-' (starting with a letter or digit)";

/// A tenant's identifier: 1–40 characters from `[a-z0-9_-]`, starting with a letter or digit.
/// No `:` (scopes such as `tenant:<id>:read` name it) and no `/` (stored ids qualify with it).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct TenantId(String);

impl TenantId {
    /// The tenant every row belongs to unless a key or header names another.
    pub const DEFAULT: &'static str = "default";

    pub fn parse(value: &str) -> Result<Self, ParseError> {
        check_length(value, MAX_TENANT_ID_LEN)?;
        if let Some((position, found)) = value.chars().enumerate().find(|(i, c)| {
            !(c.is_ascii_lowercase() || c.is_ascii_digit() || (*i > 0 && matches!(c, '_' | '-')))
        }) {
            return Err(ParseError::InvalidChar {
                found,
                position,
                allowed: TENANT_ALLOWED,
            });
        }
        Ok(Self(value.to_owned()))
    }

    /// The `default` tenant.
    pub fn default_tenant() -> Self {
        Self(Self::DEFAULT.to_owned())
    }

    pub fn is_default(&self) -> bool {
        self.0 == Self::DEFAULT
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key a row of this tenant with the (already validated) id `id` is stored under.
    pub fn stored_id(&self, id: &str) -> String {
        if self.is_default() {
            id.to_owned()
        } else {
            format!("{}/{id}", self.0)
        }
    }

    /// [`Self::stored_id`] of each id.
    pub fn stored_ids<'a>(&self, ids: impl IntoIterator<Item = &'a str>) -> Vec<String> {
        ids.into_iter().map(|id| self.stored_id(id)).collect()
    }
}

impl Default for TenantId {
    fn default() -> Self {
        Self::default_tenant()
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The id a producer or an API caller knows for the stored id `stored`: what follows the
/// tenant's `/`, or all of it for the default tenant's rows.
pub fn external_id(stored: &str) -> &str {
    stored.rsplit_once('/').map_or(stored, |(_, id)| id)
}

/// The tenant a stored id belongs to: what precedes its `/`, or `default` without one.
pub fn tenant_of(stored: &str) -> &str {
    stored
        .rsplit_once('/')
        .map_or(TenantId::DEFAULT, |(tenant, _)| tenant)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EventId;

    #[test]
    fn tenant_ids_are_lower_case_words_without_separators() {
        for good in ["default", "acme", "a", "team-7", "x_y", &"a".repeat(40)] {
            assert!(TenantId::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "Acme",
            "a/b",
            "a:b",
            "-a",
            "_a",
            "a b",
            "é",
            &"a".repeat(41),
        ] {
            assert!(TenantId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn stored_ids_keep_the_default_tenant_unchanged_and_qualify_the_others() {
        let default = TenantId::default_tenant();
        let acme = TenantId::parse("acme").expect("valid");
        assert_eq!(default.stored_id("evt_1"), "evt_1");
        assert_eq!(acme.stored_id("evt_1"), "acme/evt_1");
        assert_ne!(default.stored_id("evt_1"), acme.stored_id("evt_1"));
        for id in ["evt_1", "a:b.c-d_e"] {
            assert_eq!(external_id(&acme.stored_id(id)), id);
            assert_eq!(external_id(&default.stored_id(id)), id);
            assert_eq!(tenant_of(&acme.stored_id(id)), "acme");
            assert_eq!(tenant_of(&default.stored_id(id)), "default");
        }
    }

    #[test]
    fn no_valid_id_can_spell_another_tenants_stored_id() {
        // The separator is not an id character: a default-tenant id can never be `acme/evt_1`.
        assert!(EventId::parse("acme/evt_1").is_err());
        assert!(TenantId::parse("acme/evt").is_err());
    }
}
