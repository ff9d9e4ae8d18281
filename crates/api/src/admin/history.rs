//! `replay` (failed deliveries back in the queue) and `purge` (finished history past a
//! retention period): they check their flags, call `dispatch_store::queries::ops` (the only
//! place with SQL) and say what they did.

use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::Utc;
use dispatch_store::queries::ops::{self, PurgeReport, Purged, ReplaySelector};
use dispatch_store::{AsyncPgConnection, notify};

use super::args::{PurgeArgs, ReplayArgs};
use super::parse::timestamp;

/// What a selector picks, as the output says it: `of event evt_1`, `that failed since …`.
pub fn describe(selector: &ReplaySelector) -> String {
    match selector {
        ReplaySelector::Event(id) => format!("of event {id}"),
        ReplaySelector::Subscription(id) => format!("to subscription {id}"),
        ReplaySelector::FailedBetween { since, until } => match until {
            Some(until) => format!(
                "that failed from {} to {}",
                timestamp(*since),
                timestamp(*until)
            ),
            None => format!("that failed since {}", timestamp(*since)),
        },
    }
}

fn failed_deliveries(n: i64) -> String {
    match n {
        1 => "1 failed delivery".to_owned(),
        n => format!("{n} failed deliveries"),
    }
}

/// Re-queues (or, with `--dry-run`, counts) the failed deliveries the flags select; returns
/// the line to print.
pub async fn replay(conn: &mut AsyncPgConnection, args: &ReplayArgs) -> anyhow::Result<String> {
    let selector = args.selector().map_err(anyhow::Error::msg)?;
    let what = describe(&selector);
    if args.dry_run {
        let n = ops::count_replayable(conn, &args.tenant, &selector).await?;
        return Ok(format!(
            "dry run: would replay {} {what}",
            failed_deliveries(n)
        ));
    }
    let n = ops::replay(conn, &args.tenant, &selector).await?;
    if n > 0 {
        // Wake the workers now rather than at their next poll.
        notify::notify(conn).await?;
    }
    Ok(format!(
        "replayed {} {what}: pending again, with a full retry schedule",
        failed_deliveries(i64::try_from(n).unwrap_or(i64::MAX))
    ))
}

fn purged_text(p: &Purged) -> String {
    format!(
        "{} events, {} deliveries, {} attempts, {} deleted subscriptions",
        p.events, p.deliveries, p.attempts, p.subscriptions
    )
}

/// Deletes (or, with `--dry-run`, counts) finished history older than `--older-than`, in
/// batches; `progress` hears a line every 5 seconds. Returns the line to print.
pub async fn purge(
    conn: &mut AsyncPgConnection,
    args: &PurgeArgs,
    mut progress: impl FnMut(String),
) -> anyhow::Result<String> {
    let age = chrono::Duration::from_std(args.older_than).context("--older-than")?;
    let cutoff = Utc::now()
        .checked_sub_signed(age)
        .context("--older-than reaches before the calendar")?;
    if args.dry_run {
        let would = ops::count_purgeable(conn, cutoff).await?;
        return Ok(format!(
            "dry run: would delete {} (finished before {})",
            purged_text(&would),
            timestamp(cutoff)
        ));
    }
    progress(format!(
        "deleting finished history received before {} in batches of {}",
        timestamp(cutoff),
        args.batch_size
    ));
    let mut last_progress = Instant::now();
    let report: PurgeReport = ops::purge(conn, cutoff, args.batch_size, |so_far| {
        if last_progress.elapsed() >= Duration::from_secs(5) {
            last_progress = Instant::now();
            progress(format!("so far {}", purged_text(&so_far.purged)));
        }
    })
    .await?;
    Ok(format!(
        "deleted {} in {} batches",
        purged_text(&report.purged),
        report.event_batches + report.subscription_batches
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_and_counts_read_as_sentences() {
        let since = "2026-12-01T06:00:00Z".parse().ok();
        let until = "2026-12-02T06:00:00Z".parse().ok();
        assert_eq!(
            describe(&ReplaySelector::Event("evt_1".to_owned())),
            "of event evt_1"
        );
        assert_eq!(
            describe(&ReplaySelector::Subscription("sub_1".to_owned())),
            "to subscription sub_1"
        );
        let window = |until| ReplaySelector::FailedBetween {
            since: since.unwrap_or_default(),
            until,
        };
        assert_eq!(
            describe(&window(None)),
            "that failed since 2026-12-01T06:00:00Z"
        );
        assert_eq!(
            describe(&window(until)),
            "that failed from 2026-12-01T06:00:00Z to 2026-12-02T06:00:00Z"
        );
        assert_eq!(failed_deliveries(1), "1 failed delivery");
        assert_eq!(failed_deliveries(0), "0 failed deliveries");
        let p = Purged {
            events: 1,
            deliveries: 2,
            attempts: 3,
            subscriptions: 4,
        };
        assert_eq!(
            purged_text(&p),
            "1 events, 2 deliveries, 3 attempts, 4 deleted subscriptions"
        );
    }
}
