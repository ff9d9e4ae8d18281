//! Tests of the bench scenarios' arguments and their defaults.

use super::super::args::parse;
use super::*;

fn run_names(a: &Args, scenario: Scenario) -> Vec<String> {
    scenario
        .expand()
        .into_iter()
        .flat_map(|s| a.specs(s))
        .flat_map(|s| (1..=s.runs).map(move |r| s.run_name(r)))
        .collect()
}

#[test]
fn scenarios_expand_into_runs() {
    let a = parse(&["--scenario", "all", "--events", "10", "--seconds", "10"]).expect("ok");
    assert_eq!(
        run_names(&a, Scenario::All),
        [
            "steady",
            "light",
            "batch",
            "fanout",
            "many-destinations",
            "many-destinations/filtered",
            "backlog",
            "mixed",
            "scale/1w",
            "scale/3w",
            "soak",
            "history/fresh",
            "history/5000000",
            "vacuum-off/1",
            "vacuum-off/2",
            "vacuum-off/3",
            "vacuum-off/4",
            "vacuum-off/5",
            "ordered",
            "tenants",
        ]
    );
    let ordered = &a.specs(Scenario::Ordered)[0];
    assert_eq!(ordered.subscriptions[0].ordering_keys, Some(ORDERED_KEYS));
    // The batch scenario posts batches of --batch-size.
    let b = parse(&["--scenario", "batch", "--events", "10", "--batch-size", "4"]).expect("ok");
    assert!(matches!(
        b.specs(Scenario::Batch)[0].work,
        Work::Ingest {
            pace: Pace::Batches {
                events: 10,
                size: 4
            },
            ..
        }
    ));
    let light = &a.specs(Scenario::Light)[0];
    assert!(matches!(
        light.work,
        Work::Ingest {
            pace: Pace::Rate {
                per_sec: 200,
                seconds: 10
            },
            ..
        }
    ));
    let scale = a.specs(Scenario::Scale);
    assert_eq!(scale[0].workers, 1);
    assert_eq!(scale[1].workers, 3);
    assert!(matches!(scale[1].work, Work::Backlog { events: 10, .. }));
    let mixed = &a.specs(Scenario::Mixed)[0];
    assert_eq!(mixed.subscriptions.len(), 2);
    assert_eq!(mixed.subscriptions[1].fail_permille, 1000);
    assert_eq!(mixed.subscriptions[1].first, MIXED_HEALTHY);
}

#[test]
fn default_sizes_apply_without_events() {
    let a = parse(&[]).expect("ok");
    assert!(matches!(
        a.specs(Scenario::Backlog)[0].work,
        Work::Backlog {
            events: BACKLOG_EVENTS,
            ..
        }
    ));
    for scenario in [Scenario::Steady, Scenario::History, Scenario::VacuumOff] {
        for spec in a.specs(scenario) {
            assert!(
                matches!(
                    spec.work,
                    Work::Ingest {
                        pace: Pace::Closed {
                            events: STEADY_EVENTS
                        },
                        ..
                    }
                ),
                "{}",
                spec.name
            );
            assert_eq!(spec.limit, Duration::from_secs(120));
        }
    }
}

#[test]
fn soak_history_and_vacuum_off_are_shaped_by_their_flags() {
    let a = parse(&[
        "--rate",
        "500",
        "--seconds",
        "60",
        "--history-rows",
        "20000",
    ])
    .expect("ok");
    let soak = &a.specs(Scenario::Soak)[0];
    assert!(matches!(
        soak.work,
        Work::Ingest {
            pace: Pace::Rate {
                per_sec: 500,
                seconds: 60
            },
            ..
        }
    ));
    assert_eq!(soak.window, Some(SOAK_WINDOW));
    assert_eq!(soak.limit, Duration::from_secs(60) + SOAK_DRAIN);
    let default_soak = &parse(&[]).expect("ok").specs(Scenario::Soak)[0];
    assert!(matches!(
        default_soak.work,
        Work::Ingest {
            pace: Pace::Rate {
                per_sec: 2000,
                seconds: 600
            },
            ..
        }
    ));
    let history = a.specs(Scenario::History);
    assert_eq!(history[0].setup, Setup::Fresh);
    assert_eq!(history[1].setup, Setup::History { rows: 20000 });
    assert_eq!(history[1].name, "history/20000");
    let vacuum = &a.specs(Scenario::VacuumOff)[0];
    assert_eq!(
        (vacuum.setup, vacuum.runs),
        (Setup::AutovacuumOff, VACUUM_OFF_RUNS)
    );
    assert_eq!(vacuum.run_name(5), "vacuum-off/5");
}

#[test]
fn tenants_are_shaped_by_their_flags() {
    let full = &parse(&["--scenario", "tenants"])
        .expect("ok")
        .specs(Scenario::Tenants)[0];
    assert!(
        full.subscriptions.is_empty(),
        "made through the API instead"
    );
    assert!(matches!(
        full.work,
        Work::Tenants {
            backlog: TENANTS_BACKLOG,
            batch_size: 500,
            per_sec: 50,
            seconds: 60,
        }
    ));
    let quick = parse(&[
        "--scenario",
        "tenants",
        "--events",
        "20000",
        "--small-rate",
        "20",
        "--small-seconds",
        "10",
    ])
    .expect("ok");
    assert!(matches!(
        quick.specs(Scenario::Tenants)[0].work,
        Work::Tenants {
            backlog: 20_000,
            per_sec: 20,
            seconds: 10,
            ..
        }
    ));
}
