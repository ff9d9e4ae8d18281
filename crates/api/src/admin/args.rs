//! The admin commands' flags (`replay`, `purge`, `stats`), shared by `dispatch-api admin` and
//! `cargo xtask`, which embed these structs in their own command lines.

use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::{ArgGroup, Args};
use dispatch_store::queries::ops::ReplaySelector;

use super::parse;

#[derive(Debug, Args)]
#[command(group(
    ArgGroup::new("selector")
        .required(true)
        .multiple(false)
        .args(["event", "subscription", "since"])
))]
pub struct ReplayArgs {
    /// Replay the failed deliveries of this event.
    #[arg(long, value_name = "EVENT_ID", value_parser = parse::event_id)]
    pub event: Option<String>,
    /// Replay the failed deliveries to this subscription.
    #[arg(long, value_name = "SUBSCRIPTION_ID", value_parser = parse::subscription_id)]
    pub subscription: Option<String>,
    /// Replay deliveries that failed at or after this time (RFC 3339, e.g. 2026-12-01T08:00:00Z).
    #[arg(long, value_name = "RFC3339", value_parser = parse::rfc3339)]
    pub since: Option<DateTime<Utc>>,
    /// With --since: only those that failed before this time (RFC 3339).
    #[arg(long, value_name = "RFC3339", requires = "since",
          conflicts_with_all = ["event", "subscription"], value_parser = parse::rfc3339)]
    pub until: Option<DateTime<Utc>>,
    /// Print how many deliveries would be replayed and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// The tenant whose deliveries to replay (its own event and subscription ids).
    #[arg(long, value_name = "TENANT_ID", default_value = "default", value_parser = parse::tenant_id)]
    pub tenant: dispatch_domain::TenantId,
}

impl ReplayArgs {
    /// The selector the flags name (clap has already made sure exactly one was given).
    pub fn selector(&self) -> Result<ReplaySelector, String> {
        if self.until.is_some() && self.since.is_none() {
            return Err("--until needs --since".to_owned());
        }
        match (&self.event, &self.subscription, self.since) {
            (Some(id), None, None) => Ok(ReplaySelector::Event(id.clone())),
            (None, Some(id), None) => Ok(ReplaySelector::Subscription(id.clone())),
            (None, None, Some(since)) => {
                if let Some(until) = self.until
                    && until <= since
                {
                    return Err(format!(
                        "--until ({}) must be later than --since ({})",
                        parse::timestamp(until),
                        parse::timestamp(since)
                    ));
                }
                Ok(ReplaySelector::FailedBetween {
                    since,
                    until: self.until,
                })
            }
            _ => Err("give exactly one of --event, --subscription or --since".to_owned()),
        }
    }
}

#[derive(Debug, Args)]
pub struct PurgeArgs {
    /// Delete finished history older than this: a whole number and a unit, s, m, h or d
    /// (e.g. 30d, 12h, 90m).
    #[arg(long, value_name = "DURATION", value_parser = parse::age)]
    pub older_than: Duration,
    /// Events deleted per batch (each batch is its own short transaction).
    #[arg(long, value_name = "N", default_value_t = 1000,
          value_parser = clap::value_parser!(i64).range(1..=100_000))]
    pub batch_size: i64,
    /// Print what would be deleted and change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Print JSON (what `GET /stats` answers) instead of tables.
    #[arg(long)]
    pub json: bool,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use clap::Parser;
    use clap::error::ErrorKind;

    use super::*;
    use crate::admin::Command;
    use crate::cli::{Cli, Command as Top};

    fn parse(args: &[&str]) -> Result<Command, clap::Error> {
        let mut argv = vec!["dispatch-api", "admin"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).map(|cli| match cli.command {
            Some(Top::Admin { command }) => command,
            other => panic!("not an admin command: {other:?}"),
        })
    }

    fn replay_args(args: &[&str]) -> ReplayArgs {
        let mut argv = vec!["replay"];
        argv.extend_from_slice(args);
        match parse(&argv) {
            Ok(Command::Replay(args)) => args,
            Ok(_) => panic!("not a replay"),
            Err(e) => panic!("{e}"),
        }
    }

    fn error(args: &[&str]) -> clap::Error {
        match parse(args) {
            Ok(_) => panic!("{args:?} should be refused"),
            Err(e) => e,
        }
    }

    #[test]
    fn purge_flags_are_checked() {
        match parse(&["purge", "--older-than", "30d"]).unwrap() {
            Command::Purge(args) => {
                assert_eq!(args.older_than, Duration::from_secs(30 * 86_400));
                assert_eq!(args.batch_size, 1000, "the default batch");
                assert!(!args.dry_run);
            }
            _ => panic!("not a purge"),
        }
        let argv = [
            "purge",
            "--older-than",
            "12h",
            "--batch-size",
            "2",
            "--dry-run",
        ];
        match parse(&argv).unwrap() {
            Command::Purge(args) => {
                assert_eq!(args.batch_size, 2);
                assert!(args.dry_run);
            }
            _ => panic!("not a purge"),
        }
        assert_eq!(
            error(&["purge"]).kind(),
            ErrorKind::MissingRequiredArgument,
            "no default retention: the operator names it"
        );
        let e = error(&["purge", "--older-than", "30"]);
        assert_eq!(e.kind(), ErrorKind::ValueValidation);
        assert!(e.to_string().contains("has no unit"), "{e}");
        for bad in ["0", "-1", "100001", "many"] {
            let e = error(&["purge", "--older-than", "30d", "--batch-size", bad]);
            assert!(
                matches!(
                    e.kind(),
                    ErrorKind::ValueValidation | ErrorKind::UnknownArgument
                ),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn replay_takes_exactly_one_selector() {
        assert_eq!(
            replay_args(&["--event", "evt_1"]).selector(),
            Ok(ReplaySelector::Event("evt_1".to_owned()))
        );
        let args = replay_args(&["--subscription", "sub_1", "--dry-run"]);
        assert!(args.dry_run);
        assert_eq!(
            args.selector(),
            Ok(ReplaySelector::Subscription("sub_1".to_owned()))
        );
        assert_eq!(
            replay_args(&["--since", "2026-12-01T08:00:00+02:00"]).selector(),
            Ok(ReplaySelector::FailedBetween {
                since: "2026-12-01T06:00:00Z".parse().unwrap(),
                until: None
            })
        );
        let window = [
            "--since",
            "2026-12-01T06:00:00Z",
            "--until",
            "2026-12-02T06:00:00Z",
        ];
        assert_eq!(
            replay_args(&window).selector(),
            Ok(ReplaySelector::FailedBetween {
                since: "2026-12-01T06:00:00Z".parse().unwrap(),
                until: Some("2026-12-02T06:00:00Z".parse().unwrap())
            })
        );

        for argv in [&["replay"][..], &["replay", "--dry-run"]] {
            assert_eq!(error(argv).kind(), ErrorKind::MissingRequiredArgument);
        }
        for pair in [
            ["--event", "e", "--subscription", "s"],
            ["--event", "e", "--since", "2026-12-01T00:00:00Z"],
            ["--subscription", "s", "--since", "2026-12-01T00:00:00Z"],
        ] {
            let mut argv = vec!["replay"];
            argv.extend_from_slice(&pair);
            let e = error(&argv);
            assert_eq!(e.kind(), ErrorKind::ArgumentConflict, "{pair:?}: {e}");
            assert!(e.to_string().contains("cannot be used with"), "{e}");
        }
        let e = error(&["replay", "--event", "e", "--until", "2026-12-01T00:00:00Z"]);
        assert_eq!(e.kind(), ErrorKind::ArgumentConflict, "{e}");
        let e = error(&["replay", "--until", "2026-12-01T00:00:00Z"]);
        assert_eq!(e.kind(), ErrorKind::MissingRequiredArgument, "{e}");
        assert!(e.to_string().contains("--since"), "{e}");
    }

    #[test]
    fn replay_times_must_be_rfc3339_and_in_order() {
        for bad in [
            "yesterday",
            "2026-12-01",
            "2026-12-01 08:00:00",
            "2026-12-01T08:00:00",
            "2026-13-01T08:00:00Z",
            "1733040000",
        ] {
            let e = error(&["replay", "--since", bad]);
            assert_eq!(e.kind(), ErrorKind::ValueValidation, "{bad}");
            assert!(e.to_string().contains("RFC 3339"), "{bad}: {e}");
        }
        let e = error(&[
            "replay",
            "--since",
            "2026-12-01T00:00:00Z",
            "--until",
            "tomorrow",
        ]);
        assert!(e.to_string().contains("RFC 3339"), "{e}");

        for until in ["2026-12-01T00:00:00Z", "2026-11-30T00:00:00Z"] {
            let err = replay_args(&["--since", "2026-12-01T00:00:00Z", "--until", until])
                .selector()
                .expect_err(until);
            assert!(err.contains("must be later than --since"), "{err}");
        }
    }

    #[test]
    fn replay_ids_are_checked_like_the_api_checks_them() {
        let e = error(&["replay", "--event", ""]);
        assert_eq!(e.kind(), ErrorKind::ValueValidation, "{e}");
        assert!(e.to_string().contains("not an event id"), "{e}");
        let long = "x".repeat(10_000);
        let e = error(&["replay", "--subscription", &long]);
        assert!(e.to_string().contains("not a subscription id"), "{e}");
    }

    #[test]
    fn stats_and_check_config_take_their_flags() {
        assert!(matches!(
            parse(&["stats", "--json"]).unwrap(),
            Command::Stats(StatsArgs { json: true })
        ));
        assert!(matches!(
            parse(&["stats"]).unwrap(),
            Command::Stats(StatsArgs { json: false })
        ));
        assert!(matches!(
            parse(&["check-config"]).unwrap(),
            Command::CheckConfig
        ));
        let e = error(&["check-config", "--worker"]);
        assert_eq!(e.kind(), ErrorKind::UnknownArgument, "{e}");
    }
}
