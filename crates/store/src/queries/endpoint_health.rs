//! Auto-disable: the sweep that warns about, then disables, subscriptions whose every attempt
//! has failed for their threshold. The failing spell itself (`failing_since`) is kept by the
//! outcome statement (`deliveries::record_outcomes`); everything lives in PostgreSQL, so every
//! worker replica sees the same health and any of them may run the sweep.

use chrono::{DateTime, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{Double, Int2, Int4, Text, Timestamptz};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use dispatch_domain::operational::Operational;

use crate::StoreError;
use crate::queries::operational::{Emission, emit};
use crate::queries::subscription_changes::hold;

/// Most subscriptions one sweep looks at (the rest wait for the next one).
const SWEEP_AT_MOST: i64 = 100;

/// What a sweep did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Subscriptions warned about (50 % or 90 % of their threshold).
    pub warned: Vec<String>,
    /// Subscriptions disabled.
    pub disabled: Vec<String>,
}

#[derive(QueryableByName)]
struct Candidate {
    #[diesel(sql_type = Text)]
    id: String,
}

#[derive(QueryableByName)]
struct Spell {
    #[diesel(sql_type = Timestamptz)]
    failing_since: DateTime<Utc>,
    #[diesel(sql_type = Int2)]
    failing_warned: i16,
    #[diesel(sql_type = Int4)]
    after_secs: i32,
    /// How far the spell is through the threshold (1.0: all of it).
    #[diesel(sql_type = Double)]
    share: f64,
}

/// What a spell this far through its threshold calls for, given what was already warned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Warn(i16),
    Disable,
}

fn step(share: f64, warned: i16) -> Option<Step> {
    if share >= 1.0 {
        Some(Step::Disable)
    } else if share >= 0.9 && warned < 90 {
        Some(Step::Warn(90))
    } else if share >= 0.5 && warned < 50 {
        Some(Step::Warn(50))
    } else {
        None
    }
}

/// Warns about and disables the enabled subscriptions whose failing spell has reached 50 %,
/// 90 % and 100 % of their threshold (`auto_disable_after_secs`, or `default_after_secs` when
/// they have none; 0: never). Each subscription is handled in its own short transaction, under
/// its row lock (the lock a pause takes): the state is re-read there, so two workers sweeping at
/// once act once. Disabling pauses it (its deliveries held, nothing lost) with
/// `disabled_reason` and `disabled_at`, and emits `dispatch.subscription.disabled`; a warning
/// emits `dispatch.subscription.failing`; both in the transaction that makes the change.
pub async fn sweep(
    conn: &mut AsyncPgConnection,
    default_after_secs: i32,
) -> Result<SweepReport, StoreError> {
    let candidates: Vec<Candidate> = crate::prepared::prepared(
        "SELECT id FROM subscriptions
          WHERE failing_since IS NOT NULL AND deleted_at IS NULL AND enabled
            AND coalesce(auto_disable_after_secs, $1) > 0
            AND failing_since + make_interval(secs => coalesce(auto_disable_after_secs, $1)
                                                       * CASE failing_warned WHEN 0 THEN 0.5
                                                                             WHEN 50 THEN 0.9
                                                                             ELSE 1.0 END)
                <= now()
          ORDER BY failing_since
          LIMIT $2",
    )
    .bind::<Int4, _>(default_after_secs)
    .bind::<diesel::sql_types::BigInt, _>(SWEEP_AT_MOST)
    .load(conn)
    .await?;
    let mut report = SweepReport::default();
    for candidate in candidates {
        match judge(conn, &candidate.id, default_after_secs).await? {
            Some(Step::Disable) => report.disabled.push(candidate.id),
            Some(Step::Warn(_)) => report.warned.push(candidate.id),
            None => {}
        }
    }
    Ok(report)
}

/// Takes the next step for one subscription, if it still calls for one, in one transaction.
async fn judge(
    conn: &mut AsyncPgConnection,
    id: &str,
    default_after_secs: i32,
) -> Result<Option<Step>, StoreError> {
    let id = id.to_owned();
    conn.transaction::<_, StoreError, _>(async move |conn| {
        let spell: Option<Spell> = crate::prepared::prepared(
            "SELECT failing_since, failing_warned,
                    coalesce(auto_disable_after_secs, $2) AS after_secs,
                    extract(epoch FROM now() - failing_since)::float8
                        / coalesce(auto_disable_after_secs, $2) AS share
               FROM subscriptions
              WHERE id = $1 AND failing_since IS NOT NULL AND deleted_at IS NULL AND enabled
                AND coalesce(auto_disable_after_secs, $2) > 0
                FOR UPDATE",
        )
        .bind::<Text, _>(&id)
        .bind::<Int4, _>(default_after_secs)
        .get_results(conn)
        .await?
        .pop();
        let Some(spell) = spell else {
            return Ok(None);
        };
        let Some(next) = step(spell.share, spell.failing_warned) else {
            return Ok(None);
        };
        let since = spell.failing_since.to_rfc3339();
        let emission = match next {
            Step::Disable => {
                let reason = format!(
                    "every attempt failed for {} s (since {since}): auto-disabled",
                    spell.after_secs
                );
                crate::prepared::prepared(
                    "UPDATE subscriptions
                        SET enabled = false, disabled_reason = $2, disabled_at = now()
                      WHERE id = $1",
                )
                .bind::<Text, _>(&id)
                .bind::<Text, _>(&reason)
                .execute(conn)
                .await?;
                let held = hold(conn, &id).await?;
                Emission::new(Operational::SubscriptionDisabled, &id, reason)
                    .with("failing_since", since)
                    .with("auto_disable_after_secs", spell.after_secs)
                    .with("held_deliveries", held)
            }
            Step::Warn(percent) => {
                crate::prepared::prepared(
                    "UPDATE subscriptions SET failing_warned = $2 WHERE id = $1",
                )
                .bind::<Text, _>(&id)
                .bind::<Int2, _>(percent)
                .execute(conn)
                .await?;
                let disable_at =
                    spell.failing_since + chrono::Duration::seconds(i64::from(spell.after_secs));
                Emission::new(
                    Operational::SubscriptionFailing,
                    &id,
                    format!(
                        "every attempt failed since {since}: {percent} % of the auto-disable \
                         threshold ({} s); it will be disabled at {} unless an attempt succeeds",
                        spell.after_secs,
                        disable_at.to_rfc3339()
                    ),
                )
                .with("failing_since", since)
                .with("threshold_percent", percent)
                .with("auto_disable_after_secs", spell.after_secs)
                .with("disable_at", disable_at.to_rfc3339())
            }
        };
        emit(conn, &[emission]).await?;
        Ok(Some(next))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spell_is_warned_at_half_and_nine_tenths_then_disabled() {
        assert_eq!(step(0.2, 0), None);
        assert_eq!(step(0.5, 0), Some(Step::Warn(50)));
        assert_eq!(step(0.6, 50), None);
        assert_eq!(step(0.9, 50), Some(Step::Warn(90)));
        // A late sweep skips the warning already overtaken.
        assert_eq!(step(0.95, 0), Some(Step::Warn(90)));
        assert_eq!(step(0.95, 90), None);
        assert_eq!(step(1.0, 0), Some(Step::Disable));
        assert_eq!(step(3.0, 90), Some(Step::Disable));
    }
}
