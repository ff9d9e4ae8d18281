//! The command line of `cargo xtask bench`: which scenarios, how large, against which server, and
//! which settings differ from the shipped defaults.

use clap::ValueEnum;

/// Time limit of each phase unless `--seconds` says otherwise (soak: its sending time).
pub const DEFAULT_SECONDS: u64 = 120;
pub const SOAK_SECONDS: u64 = 600;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// N events at concurrency C to one subscription: throughput.
    Steady,
    /// A fixed 200 events/s for 30 s to one subscription: latency.
    Light,
    /// N events in `POST /events/batch` requests of 500, to one subscription.
    Batch,
    /// N events, each to 100 subscriptions.
    Fanout,
    /// 10 000 subscriptions, each event matching one of them; then the same with 100 more
    /// matching every event by pattern, each with a payload filter that selects none.
    ManyDestinations,
    /// 100 000 due deliveries queued while no worker runs, then drained.
    Backlog,
    /// One destination failing every request, three healthy ones.
    Mixed,
    /// One backlog drained by 1 worker, then by 3.
    Scale,
    /// --rate events/s (2000) for --seconds (600) to one subscription, reported per 30 s.
    Soak,
    /// `steady` on a fresh database, then on one holding --history-rows finished deliveries.
    History,
    /// `steady` five times on one database whose hot tables have autovacuum off.
    VacuumOff,
    /// Pages of GET /events, /deliveries and attempts over HTTP, first and deep, for each
    /// common filter, on a seeded month of history of --list-deliveries deliveries.
    List,
    /// `steady` to one subscription with `ordering: per_key`, the events spread over 1 000
    /// ordering keys: the cost of per-key ordering.
    Ordered,
    /// Console pages (issue 18) over HTTP with a signed-in session, on the `list` scenario's
    /// seeded history (--list-deliveries deliveries), --list-samples times each.
    Console,
    /// Tenant `big` loads a backlog of N events (200 000) through the batch endpoint, then
    /// tenant `small` sends --small-rate events/s for --small-seconds: `small`'s latency.
    Tenants,
    /// Every scenario above, in that order.
    All,
}

impl Scenario {
    pub const EACH: [Scenario; 15] = [
        Scenario::Steady,
        Scenario::Light,
        Scenario::Batch,
        Scenario::Fanout,
        Scenario::ManyDestinations,
        Scenario::Backlog,
        Scenario::Mixed,
        Scenario::Scale,
        Scenario::Soak,
        Scenario::History,
        Scenario::VacuumOff,
        Scenario::List,
        Scenario::Ordered,
        Scenario::Console,
        Scenario::Tenants,
    ];

    pub fn expand(self) -> Vec<Scenario> {
        match self {
            Scenario::All => Self::EACH.to_vec(),
            one => vec![one],
        }
    }

    /// Whether it runs on the `list` scenario's seeded history.
    pub fn seeds_history(&self) -> bool {
        matches!(self, Scenario::List | Scenario::Console)
    }

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Steady => "steady",
            Scenario::Light => "light",
            Scenario::Batch => "batch",
            Scenario::Fanout => "fanout",
            Scenario::ManyDestinations => "many-destinations",
            Scenario::Backlog => "backlog",
            Scenario::Mixed => "mixed",
            Scenario::Scale => "scale",
            Scenario::Soak => "soak",
            Scenario::History => "history",
            Scenario::VacuumOff => "vacuum-off",
            Scenario::List => "list",
            Scenario::Ordered => "ordered",
            Scenario::Console => "console",
            Scenario::Tenants => "tenants",
            Scenario::All => "all",
        }
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Which scenario to run.
    #[arg(long, value_enum, default_value_t = Scenario::Steady)]
    pub scenario: Scenario,
    /// Events per scenario (default: steady, history and vacuum-off 5000, batch 50000, fanout
    /// 100 (x100 subscriptions), many-destinations 10000, backlog 100000, mixed 5000, scale
    /// 20000, tenants 200000 for `big`). `light` and `soak` send at a fixed rate instead.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub events: Option<u64>,
    /// Requests in flight from the load generator, and pgbench clients of the ceiling.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub concurrency: u32,
    /// Workers to run (`scale` always compares 1 with 3).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=16))]
    pub workers: u32,
    /// Events per request of the `batch` scenario.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub batch_size: u64,
    /// Time limit of each phase [default: 120; soak: 600]: sending stops after it, and
    /// deliveries still missing after it more are reported as missing. `light` sends for
    /// min(30, this) seconds; `soak` sends for exactly this long.
    #[arg(long, value_parser = clap::value_parser!(u64).range(5..=7200))]
    pub seconds: Option<u64>,
    /// Events a second that `soak` offers (open loop, at most --concurrency in flight).
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub rate: u64,
    /// Events a second the tenant `small` of `tenants` sends while `big`'s backlog is due.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub small_rate: u64,
    /// How long the tenant `small` of `tenants` sends, in seconds.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub small_seconds: u64,
    /// Finished deliveries (events + delivered deliveries + attempts) `history` seeds.
    #[arg(
        long,
        default_value_t = 5_000_000,
        value_parser = clap::value_parser!(u64).range(1..=100_000_000)
    )]
    pub history_rows: u64,
    /// Deliveries `list` seeds (events with one or two each, over 30 days, with their attempts).
    #[arg(
        long,
        default_value_t = 1_000_000,
        value_parser = clap::value_parser!(u64).range(1_000..=100_000_000)
    )]
    pub list_deliveries: u64,
    /// How many pages deep `list` follows `next_cursor` before timing the deep page.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(2..=100_000))]
    pub list_depth: u64,
    /// How many times `list` requests the first page, and the deep page, of each filter.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub list_samples: u64,
    /// Measure the PostgreSQL server at this URL (its user must be allowed to create databases)
    /// instead of a private cluster with PostgreSQL's default settings.
    #[arg(long, value_name = "URL", conflicts_with = "use_database_url")]
    pub database_url: Option<String>,
    /// Measure the server of the DATABASE_URL environment variable instead of a private
    /// cluster.
    #[arg(long)]
    pub use_database_url: bool,
    /// Use debug builds (a quick smoke run; the figures mean little).
    #[arg(long)]
    pub debug: bool,
    /// A diagnostic, not a measurement of the defaults: start the private cluster with
    /// `pg_stat_statements` loaded and print, after each run, what each statement cost per
    /// delivery (calls, time, buffers, WAL) and the server's WAL bytes per delivery. With
    /// --database-url the server must preload it already.
    #[arg(long)]
    pub pg_statements: bool,
    /// A setting of dispatch-api that differs from the shipped default, e.g.
    /// `--api-env DISPATCH_DB_MAX_CONNECTIONS=64` (repeatable; `DISPATCH_*` keys and RUST_LOG).
    /// Without it the shipped defaults are measured; the report lists every such setting.
    #[arg(long = "api-env", value_name = "KEY=VALUE", value_parser = parse_env)]
    pub api_env: Vec<(String, String)>,
    /// A setting of every dispatch-worker that differs from the shipped default, e.g.
    /// `--worker-env DISPATCH_MAX_IN_FLIGHT_PER_DESTINATION=64` (repeatable).
    #[arg(long = "worker-env", value_name = "KEY=VALUE", value_parser = parse_env)]
    pub worker_env: Vec<(String, String)>,
}

impl Args {
    /// The time limit of each phase (not soak's sending time).
    pub fn seconds(&self) -> u64 {
        self.seconds.unwrap_or(DEFAULT_SECONDS)
    }

    /// How long `soak` sends.
    pub fn soak_seconds(&self) -> u64 {
        self.seconds.unwrap_or(SOAK_SECONDS)
    }

    /// The settings that differ from the shipped defaults (`--api-env`, `--worker-env`), as
    /// `api: K=V, …; worker: K=V, …`, or `None` when the shipped defaults are measured.
    pub fn overrides(&self) -> Option<String> {
        let list = |env: &[(String, String)]| {
            env.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let parts: Vec<String> = [("api", &self.api_env), ("worker", &self.worker_env)]
            .into_iter()
            .filter(|(_, env)| !env.is_empty())
            .map(|(who, env)| format!("{who}: {}", list(env)))
            .collect();
        (!parts.is_empty()).then(|| parts.join("; "))
    }
}

/// Keys the benchmark sets itself: where the children listen, which database, the API key the
/// load generator presents, each worker's name.
const RESERVED_ENV: [&str; 4] = [
    "DISPATCH_DATABASE_URL",
    "DISPATCH_ADDR",
    "DISPATCH_WORKER_ID",
    "DISPATCH_API_KEYS",
];

fn parse_env(text: &str) -> Result<(String, String), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("expected KEY=VALUE, got {text:?}"))?;
    let well_formed = key == "RUST_LOG"
        || key.starts_with("DISPATCH_")
            && key
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
    if !well_formed {
        return Err(format!(
            "{key:?} is not a DISPATCH_* configuration key (nor RUST_LOG)"
        ));
    }
    if RESERVED_ENV.contains(&key) {
        return Err(format!("{key} is set by the benchmark itself"));
    }
    Ok((key.to_owned(), value.to_owned()))
}

/// `bench <argv>` parsed as the command line would be.
#[cfg(test)]
pub fn parse(argv: &[&str]) -> Result<Args, clap::Error> {
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }
    Cli::try_parse_from(std::iter::once("bench").chain(argv.iter().copied())).map(|c| c.args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let a = parse(&[]).expect("defaults parse");
        assert_eq!(a.scenario, Scenario::Steady);
        assert_eq!(a.events, None);
        assert_eq!((a.concurrency, a.workers, a.seconds()), (64, 1, 120));
        assert_eq!(
            (a.soak_seconds(), a.rate, a.history_rows),
            (600, 2000, 5_000_000)
        );
        assert!(!a.debug && !a.use_database_url && a.database_url.is_none());
        assert_eq!((a.small_rate, a.small_seconds), (50, 60));
        assert_eq!(a.overrides(), None);
        assert_eq!(
            (a.list_deliveries, a.list_depth, a.list_samples),
            (1_000_000, 200, 100)
        );
        let short = parse(&["--seconds", "60"]).expect("ok");
        assert_eq!((short.seconds(), short.soak_seconds()), (60, 60));
    }

    #[test]
    fn every_scenario_name_parses() {
        for name in [
            "steady",
            "light",
            "batch",
            "fanout",
            "many-destinations",
            "backlog",
            "mixed",
            "scale",
            "soak",
            "history",
            "vacuum-off",
            "list",
            "ordered",
            "console",
            "tenants",
            "all",
        ] {
            let a = parse(&["--scenario", name]).expect(name);
            assert_eq!(a.scenario.name(), name);
        }
        assert!(parse(&["--scenario", "batches"]).is_err());
        assert!(parse(&["--scenario", "many_destinations"]).is_err());
        assert!(parse(&["--scenario", "vacuum_off"]).is_err());
    }

    #[test]
    fn out_of_range_values_are_refused() {
        for bad in [
            &["--events", "0"][..],
            &["--events", "1000001"],
            &["--events", "-5"],
            &["--events", "many"],
            &["--concurrency", "0"],
            &["--concurrency", "257"],
            &["--workers", "0"],
            &["--workers", "17"],
            &["--seconds", "4"],
            &["--seconds", "7201"],
            &["--batch-size", "0"],
            &["--batch-size", "1001"],
            &["--rate", "0"],
            &["--history-rows", "0"],
            &["--list-deliveries", "999"],
            &["--list-depth", "1"],
            &["--list-samples", "0"],
            &["--small-rate", "0"],
            &["--small-seconds", "0"],
            &["--database-url", "postgres://x/y", "--use-database-url"],
            &["--unknown"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} was accepted");
        }
        let a = parse(&[
            "--scenario",
            "scale",
            "--events",
            "2000",
            "--concurrency",
            "8",
            "--workers",
            "2",
            "--seconds",
            "30",
            "--debug",
            "--database-url",
            "postgres://u@h/d",
        ])
        .expect("valid");
        assert_eq!(a.events, Some(2000));
        assert_eq!(a.database_url.as_deref(), Some("postgres://u@h/d"));
        assert!(a.debug);
    }

    #[test]
    fn extra_configuration_is_dispatch_keys_only_and_listed() {
        let a = parse(&[
            "--api-env",
            "DISPATCH_DB_MAX_CONNECTIONS=64",
            "--worker-env",
            "DISPATCH_MAX_IN_FLIGHT=128",
            "--worker-env",
            "RUST_LOG=warn",
        ])
        .expect("valid");
        assert_eq!(
            a.api_env,
            [("DISPATCH_DB_MAX_CONNECTIONS".to_owned(), "64".to_owned())]
        );
        assert_eq!(a.worker_env.len(), 2);
        assert_eq!(
            a.overrides().as_deref(),
            Some(
                "api: DISPATCH_DB_MAX_CONNECTIONS=64; \
                 worker: DISPATCH_MAX_IN_FLIGHT=128, RUST_LOG=warn"
            )
        );
        for bad in [
            "DISPATCH_DB_MAX_CONNECTIONS",
            "RUST_BACKTRACE=1",
            "dispatch_x=1",
            "DISPATCH_DATABASE_URL=postgres://elsewhere/x",
            "DISPATCH_ADDR=:80",
            "DISPATCH_API_KEYS=another-key-of-length",
        ] {
            assert!(parse(&["--api-env", bad]).is_err(), "{bad} was accepted");
        }
    }
}
