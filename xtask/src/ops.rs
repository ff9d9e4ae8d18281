//! Operator commands: `replay`, `purge`, `stats` against `DATABASE_URL` (or the development
//! default), and `check-config` for both binaries. Thin wrappers: the flags, the work and the
//! output are `dispatch_api::admin` (what `dispatch-api admin` runs in the image) and
//! `dispatch_worker::cli::check_config`.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use dispatch_api::admin::{self, Command};

pub use dispatch_api::admin::{PurgeArgs, ReplayArgs, StatsArgs};

use crate::pg::DEFAULT_DATABASE_URL;

#[derive(Debug, Args)]
pub struct CheckConfigArgs {
    /// Check only the API's configuration.
    #[arg(long, conflicts_with = "worker")]
    api: bool,
    /// Check only the worker's configuration.
    #[arg(long)]
    worker: bool,
    /// TOML configuration file, as the binaries' --config (overridden by the environment).
    #[arg(long, value_name = "FILE", env = "DISPATCH_CONFIG")]
    config: Option<PathBuf>,
}

/// Runs `replay`, `purge` or `stats` on `DATABASE_URL` (or the development default).
pub async fn run(command: Command) -> Result<bool> {
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_DATABASE_URL.to_owned());
    admin::run_on(&url, command).await
}

/// `dispatch-api admin check-config` and `dispatch-worker check-config` in one go.
pub fn check_config(args: CheckConfigArgs) -> Result<bool> {
    let file = args.config.as_deref();
    let env = std::env::vars().collect();
    let both = !args.api && !args.worker;
    let mut reports = Vec::new();
    if args.api || both {
        reports.push(admin::check_config::check(file, &env));
    }
    if args.worker || both {
        reports.push(dispatch_worker::cli::check_config(file, &env));
    }
    let mut ok = true;
    for (i, (fine, text)) in reports.iter().enumerate() {
        if i > 0 {
            println!();
        }
        if *fine {
            print!("{text}");
        } else {
            eprint!("{text}");
        }
        ok &= fine;
    }
    Ok(ok)
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use clap::error::ErrorKind;
    use dispatch_api::admin;

    use crate::{Cli, Task};

    #[test]
    fn check_config_takes_one_binary_or_both() {
        for (argv, api, worker) in [
            (vec!["cargo xtask", "check-config"], false, false),
            (vec!["cargo xtask", "check-config", "--api"], true, false),
            (vec!["cargo xtask", "check-config", "--worker"], false, true),
        ] {
            match Cli::try_parse_from(argv).map(|c| c.command) {
                Ok(Task::CheckConfig(args)) => assert_eq!((args.api, args.worker), (api, worker)),
                _ => panic!("not check-config"),
            }
        }
        let e = Cli::try_parse_from(["cargo xtask", "check-config", "--api", "--worker"])
            .err()
            .map(|e| e.kind());
        assert_eq!(e, Some(ErrorKind::ArgumentConflict));
    }

    #[test]
    fn the_admin_flags_are_the_shipped_binarys() {
        let parsed = Cli::try_parse_from(["cargo xtask", "purge", "--older-than", "30"]);
        let e = parsed.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("has no unit"), "{e}");
        assert!(matches!(
            Cli::try_parse_from(["cargo xtask", "stats", "--json"]).map(|c| c.command),
            Ok(Task::Stats(admin::StatsArgs { json: true }))
        ));
    }
}
