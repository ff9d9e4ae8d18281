//! A subscription's secret after creation: rotation with an overlap window, which keys seal the
//! stored secrets, and re-sealing them under the active key.

use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Interval, Nullable, Text, Timestamptz};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use dispatch_domain::sealing::{Keyring, SealError};

use super::{interval, seal};
use crate::StoreError;
use crate::schema::subscriptions;

/// A rotated secret: until when the one it replaced still signs (`None`: not at all, because
/// the overlap was zero or there was no secret before).
#[derive(Debug, Clone, PartialEq)]
pub struct Rotation {
    pub previous_expires_at: Option<DateTime<Utc>>,
}

#[derive(QueryableByName)]
struct Rotated {
    #[diesel(sql_type = Nullable<Timestamptz>)]
    previous_secret_expires_at: Option<DateTime<Utc>>,
}

/// Replaces an active subscription's secret with `secret` (sealed here). The secret it had
/// becomes the previous one, which keeps signing next to the new one for `overlap` (by the
/// database's clock); a previous secret still in its window is dropped at once, so at most two
/// secrets ever sign. With a zero `overlap` the old secret stops signing at once. A legacy
/// plaintext secret is sealed as it moves to the previous slot. `None` when no active
/// subscription has this id.
pub async fn rotate_secret(
    conn: &mut AsyncPgConnection,
    keyring: &Keyring,
    tenant: &dispatch_domain::TenantId,
    id: &str,
    secret: &str,
    overlap: Duration,
) -> Result<Option<Rotation>, StoreError> {
    // Sealed for the stored id, as the worker reads it (`TenantId::stored_id`).
    let id = tenant.stored_id(id);
    let sealed = seal(keyring, &id, secret)?;
    let keyring = keyring.clone();
    conn.transaction::<_, StoreError, _>(async move |conn| {
        // NO KEY UPDATE: does not wait for ingestion's key-share locks on the row.
        let current = subscriptions::table
            .filter(subscriptions::id.eq(&id))
            .filter(subscriptions::deleted_at.is_null())
            .select((subscriptions::sealed_secret, subscriptions::secret))
            .for_no_key_update()
            .first::<(Option<String>, Option<String>)>(conn)
            .await
            .optional()?;
        let Some((current, legacy)) = current else {
            return Ok(None);
        };
        let previous = match (overlap.is_zero(), current, legacy) {
            (true, _, _) => None,
            (false, Some(current), _) => Some(current),
            (false, None, Some(plain)) => Some(seal(&keyring, &id, &plain)?),
            (false, None, None) => None,
        };
        let rotated: Rotated = diesel::sql_query(
            "UPDATE subscriptions
                SET sealed_secret = $2, secret = NULL, previous_sealed_secret = $3,
                    previous_secret_expires_at =
                        CASE WHEN $3::text IS NULL THEN NULL ELSE now() + $4 END
              WHERE id = $1
             RETURNING previous_secret_expires_at",
        )
        .bind::<Text, _>(&id)
        .bind::<Text, _>(&sealed)
        .bind::<Nullable<Text>, _>(previous.as_deref())
        .bind::<Interval, _>(interval(overlap))
        .get_result(conn)
        .await?;
        Ok(Some(Rotation {
            previous_expires_at: rotated.previous_secret_expires_at,
        }))
    })
    .await
}

/// How many stored secrets are sealed under each key, and how many are still plaintext.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct SecretUsage {
    /// `current`, `previous` (still in its overlap window) or `plaintext` (legacy, unsealed).
    #[diesel(sql_type = Text)]
    pub slot: String,
    /// The key id a sealed secret names; `None` for plaintext.
    #[diesel(sql_type = Nullable<Text>)]
    pub key_id: Option<String>,
    #[diesel(sql_type = BigInt)]
    pub subscriptions: i64,
}

/// Counts stored secrets by slot and key id, deleted subscriptions included (their secrets are
/// still in the table). What must be zero before a key is removed from `secret_keys`.
pub async fn secret_usage(conn: &mut AsyncPgConnection) -> Result<Vec<SecretUsage>, StoreError> {
    Ok(diesel::sql_query(
        "SELECT slot, key_id, count(*) AS subscriptions FROM (
             SELECT 'current' AS slot, split_part(sealed_secret, ':', 2) AS key_id
               FROM subscriptions WHERE sealed_secret IS NOT NULL
             UNION ALL
             SELECT 'previous', split_part(previous_sealed_secret, ':', 2)
               FROM subscriptions
              WHERE previous_sealed_secret IS NOT NULL AND previous_secret_expires_at > now()
             UNION ALL
             SELECT 'plaintext', NULL FROM subscriptions WHERE secret IS NOT NULL
         ) AS s
         GROUP BY slot, key_id
         ORDER BY slot, key_id",
    )
    .load(conn)
    .await?)
}

/// What [`reseal`] did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ResealReport {
    /// Subscriptions whose stored secrets were rewritten.
    pub rewritten: usize,
    /// Of those, how many held a legacy plaintext secret (now sealed, the plaintext cleared).
    pub from_plaintext: usize,
    /// Expired previous secrets dropped.
    pub expired_dropped: usize,
    /// Subscriptions changed by someone else (a rotation) between read and write: left alone,
    /// already sealed by whoever changed them.
    pub changed_meanwhile: usize,
    /// Subscriptions whose secret could not be opened (a key missing from the keyring, or a value
    /// that does not authenticate): left alone.
    pub failed: Vec<(String, SealError)>,
}

#[derive(QueryableByName)]
struct StoredSecrets {
    #[diesel(sql_type = Text)]
    id: String,
    #[diesel(sql_type = Nullable<Text>)]
    secret: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    sealed_secret: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    previous_sealed_secret: Option<String>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    previous_secret_expires_at: Option<DateTime<Utc>>,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    previous_expired: bool,
}

/// The values one subscription's secrets get: sealed under the active key, plaintext cleared,
/// an expired previous secret dropped.
struct Resealed {
    sealed_secret: Option<String>,
    previous_sealed_secret: Option<String>,
    previous_secret_expires_at: Option<DateTime<Utc>>,
}

fn reseal_one(keyring: &Keyring, row: &StoredSecrets) -> Result<Resealed, SealError> {
    let fresh = |sealed: &str| -> Result<String, SealError> {
        if keyring.is_active(sealed) {
            Ok(sealed.to_owned())
        } else {
            keyring.seal(&row.id, &keyring.open(&row.id, sealed)?)
        }
    };
    let sealed_secret = match (&row.sealed_secret, &row.secret) {
        (Some(sealed), _) => Some(fresh(sealed)?),
        (None, Some(plain)) => Some(keyring.seal(&row.id, plain)?),
        (None, None) => None,
    };
    let previous_sealed_secret = match &row.previous_sealed_secret {
        Some(_) if row.previous_expired => None,
        Some(sealed) => Some(fresh(sealed)?),
        None => None,
    };
    Ok(Resealed {
        previous_secret_expires_at: previous_sealed_secret
            .as_ref()
            .and(row.previous_secret_expires_at),
        sealed_secret,
        previous_sealed_secret,
    })
}

/// Re-seals every stored secret that is not sealed under `keyring`'s active key (legacy
/// plaintext ones included, whose plaintext is then cleared) and drops expired previous secrets,
/// `batch` subscriptions at a time, deleted ones included. Each subscription is one short
/// `UPDATE`, applied only if its secrets did not change since they were read, so it is safe
/// while Dispatch serves. Run it after putting a new key first in `secret_keys` (everywhere),
/// and before removing the old one.
pub async fn reseal(
    conn: &mut AsyncPgConnection,
    keyring: &Keyring,
    batch: i64,
) -> Result<ResealReport, StoreError> {
    let active_prefix = format!(
        "{}:{}:",
        dispatch_domain::sealing::FORMAT,
        keyring.active_id()
    );
    let mut report = ResealReport::default();
    let mut after = String::new();
    loop {
        let rows: Vec<StoredSecrets> = diesel::sql_query(
            "SELECT id, secret, sealed_secret, previous_sealed_secret, previous_secret_expires_at,
                    coalesce(previous_secret_expires_at <= now(), false) AS previous_expired
               FROM subscriptions
              WHERE id > $1
                AND (secret IS NOT NULL
                     OR NOT starts_with(coalesce(sealed_secret, $2), $2)
                     OR NOT starts_with(coalesce(previous_sealed_secret, $2), $2)
                     OR previous_secret_expires_at <= now())
              ORDER BY id
              LIMIT $3",
        )
        .bind::<Text, _>(&after)
        .bind::<Text, _>(&active_prefix)
        .bind::<BigInt, _>(batch.max(1))
        .load(conn)
        .await?;
        let Some(last) = rows.last() else {
            return Ok(report);
        };
        after = last.id.clone();
        for row in &rows {
            let new = match reseal_one(keyring, row) {
                Ok(new) => new,
                Err(e) => {
                    report.failed.push((row.id.clone(), e));
                    continue;
                }
            };
            let updated = diesel::sql_query(
                "UPDATE subscriptions
                    SET secret = NULL, sealed_secret = $2, previous_sealed_secret = $3,
                        previous_secret_expires_at = $4
                  WHERE id = $1
                    AND secret IS NOT DISTINCT FROM $5
                    AND sealed_secret IS NOT DISTINCT FROM $6
                    AND previous_sealed_secret IS NOT DISTINCT FROM $7",
            )
            .bind::<Text, _>(&row.id)
            .bind::<Nullable<Text>, _>(new.sealed_secret.as_deref())
            .bind::<Nullable<Text>, _>(new.previous_sealed_secret.as_deref())
            .bind::<Nullable<Timestamptz>, _>(new.previous_secret_expires_at)
            .bind::<Nullable<Text>, _>(row.secret.as_deref())
            .bind::<Nullable<Text>, _>(row.sealed_secret.as_deref())
            .bind::<Nullable<Text>, _>(row.previous_sealed_secret.as_deref())
            .execute(conn)
            .await?;
            if updated == 0 {
                report.changed_meanwhile += 1;
                continue;
            }
            report.rewritten += 1;
            if row.secret.is_some() {
                report.from_plaintext += 1;
            }
            if row.previous_sealed_secret.is_some() && new.previous_sealed_secret.is_none() {
                report.expired_dropped += 1;
            }
        }
    }
}

/// A subscription's secret columns exactly as stored: nothing here is opened. For audits, tools
/// and tests that check what reaches the table.
#[cfg(feature = "tools")]
#[derive(Debug, Clone, PartialEq, QueryableByName)]
pub struct StoredSecretColumns {
    /// The pre-encryption plaintext column: only rows written before sealing, until resealed.
    #[diesel(sql_type = Nullable<Text>)]
    pub secret: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub sealed_secret: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub previous_sealed_secret: Option<String>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
}

/// The secret columns of subscription `id` (deleted or not), if it exists.
#[cfg(feature = "tools")]
pub async fn stored_secret_columns(
    conn: &mut AsyncPgConnection,
    id: &str,
) -> Result<Option<StoredSecretColumns>, StoreError> {
    Ok(diesel::sql_query(
        "SELECT secret, sealed_secret, previous_sealed_secret, previous_secret_expires_at
           FROM subscriptions WHERE id = $1",
    )
    .bind::<Text, _>(id)
    .get_result(conn)
    .await
    .optional()?)
}

/// Every row of `subscriptions` as PostgreSQL prints it, one per line: to check that a secret
/// appears nowhere in plaintext.
#[cfg(feature = "tools")]
pub async fn table_text(conn: &mut AsyncPgConnection) -> Result<String, StoreError> {
    #[derive(QueryableByName)]
    struct Dump {
        #[diesel(sql_type = Text)]
        dump: String,
    }
    let dump: Dump = diesel::sql_query(
        "SELECT coalesce(string_agg(s::text, E'\\n' ORDER BY s.id), '') AS dump
           FROM subscriptions s",
    )
    .get_result(conn)
    .await?;
    Ok(dump.dump)
}
