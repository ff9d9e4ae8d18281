//! Tests of the chaos command's arguments and the worker environment it builds.

use clap::Parser;

use super::*;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: Args,
}

fn parse(argv: &[&str]) -> Result<Args, clap::Error> {
    Cli::try_parse_from(std::iter::once("chaos").chain(argv.iter().copied())).map(|c| c.args)
}

#[test]
fn every_scenario_runs_by_default_with_bounded_sizes() {
    let a = parse(&[]).expect("defaults");
    assert_eq!(a.scenario, Scenario::All);
    let names: Vec<&str> = a.scenario.expand().iter().map(|s| s.name()).collect();
    assert_eq!(
        names,
        [
            "kill-worker",
            "postgres-restart",
            "bad-receivers",
            "sigterm",
            "three-workers",
            "slow-destinations",
            "worker-port-flood",
            "postgres-disk-full",
            "db-blackhole",
            "slow-postgres"
        ]
    );
    assert_eq!(a.events(Scenario::SlowDestinations), 1000);
    assert_eq!(a.events(Scenario::WorkerPortFlood), 1250);
    assert_eq!(a.events(Scenario::PostgresRestart), 3000);
    assert_eq!(a.events(Scenario::PostgresDiskFull), 4000);
    assert_eq!(a.events(Scenario::DbBlackhole), 2000);
    assert_eq!(a.events(Scenario::SlowPostgres), 3000);
    assert_eq!(a.drain_within(), Duration::from_secs(30));
    let a = parse(&[
        "--scenario",
        "sigterm",
        "--events",
        "500",
        "--seconds",
        "60",
    ])
    .expect("valid");
    assert_eq!(a.scenario.expand(), [Scenario::Sigterm]);
    assert_eq!(a.events(Scenario::Sigterm), 500);
    assert_eq!(a.drain_within(), Duration::from_secs(60));
}

#[test]
fn out_of_range_values_are_refused() {
    for bad in [
        &["--events", "9"][..],
        &["--events", "100001"],
        &["--seconds", "4"],
        &["--seconds", "601"],
        &["--scenario", "kill_worker"],
        &["--scenario", "steady"],
    ] {
        assert!(parse(bad).is_err(), "{bad:?} was accepted");
    }
}

#[test]
fn overrides_replace_base_settings() {
    let base = worker_base_env();
    let env = with_env(
        &base,
        &[
            ("DISPATCH_REQUEST_TIMEOUT_MS", "1000"),
            ("DISPATCH_POLL_INTERVAL_MS", "200"),
        ],
    );
    let get = |k: &str| {
        env.iter()
            .filter(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
            .collect::<Vec<_>>()
    };
    assert_eq!(get("DISPATCH_REQUEST_TIMEOUT_MS"), ["1000"]);
    assert_eq!(get("DISPATCH_POLL_INTERVAL_MS"), ["200"]);
    assert_eq!(get("DISPATCH_LEASE_MARGIN_MS"), ["5000"]);
    assert_eq!(env.len(), base.len());
}
