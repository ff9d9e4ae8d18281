//! What each scenario is made of: its subscriptions, the work (events POSTed through the API, or
//! a backlog seeded in the database), how its database is prepared, and how many runs it makes.

use std::time::Duration;

use super::args::{Args, Scenario};
use super::load::{EventTypes, Pace};

/// Events each scenario sends unless `--events` says otherwise.
pub const STEADY_EVENTS: u64 = 5_000;
const BATCH_EVENTS: u64 = 50_000;
const FANOUT_EVENTS: u64 = 100;
const FANOUT_SUBSCRIPTIONS: u32 = 100;
const MANY_EVENTS: u64 = 10_000;
const MANY_SUBSCRIPTIONS: u32 = 10_000;
/// `many-destinations/filtered`: this many more subscriptions to every event (`bench.*`), each
/// with a payload filter that selects none of the load's events (their `seq` is never negative).
const FILTERED_SUBSCRIPTIONS: u32 = 100;
const NEVER_MATCHING_FILTER: &str = "$.data.seq < 0 && $.source == \"bench\"";
pub const BACKLOG_EVENTS: u64 = 100_000;
/// `ordered`: the load's events spread over this many ordering keys.
const ORDERED_KEYS: u64 = 1_000;
const MIXED_EVENTS: u64 = 5_000;
pub const MIXED_HEALTHY: u32 = 3;
const SCALE_EVENTS: u64 = 20_000;
/// `light`: this many events a second, for this long (or `--seconds`, if shorter).
const LIGHT_RATE: u64 = 200;
const LIGHT_SECS: u64 = 30;
/// `tenants`: the backlog the tenant `big` loads unless `--events` says otherwise.
pub const TENANTS_BACKLOG: u64 = 200_000;
/// `vacuum-off`: runs of `steady` on the one database.
pub const VACUUM_OFF_RUNS: usize = 5;
/// `soak`: the width of a reported window.
pub const SOAK_WINDOW: Duration = Duration::from_secs(30);
/// `soak`: how long after the sending time the last deliveries may take.
const SOAK_DRAIN: Duration = Duration::from_secs(120);

/// One subscription range to seed: `sub-{first}` … pointing at the receiver.
#[derive(Debug, Clone)]
pub struct Subscriptions {
    pub first: u32,
    pub count: u32,
    /// The pattern, or `{pattern}{i}` per subscription when `per_index`.
    pub pattern: &'static str,
    pub per_index: bool,
    pub fail_permille: u32,
    /// A payload filter set on every subscription of the range.
    pub filter: Option<&'static str>,
    /// `ordering: per_key` on every subscription of the range, and the load's events spread
    /// over this many ordering keys.
    pub ordering_keys: Option<u64>,
}

#[derive(Debug, Clone)]
pub enum Work {
    /// Events POSTed through the API while the workers run.
    Ingest {
        types: EventTypes,
        pace: Pace,
        /// Deliveries to healthy destinations per accepted event.
        healthy_per_event: u64,
    },
    /// Due deliveries seeded in the database before any worker starts.
    Backlog { events: u64, subscriptions: u32 },
    /// Two tenants made through the API, one subscription each: `big` loads `backlog` events
    /// through `POST /events/batch` (`batch_size` each), then `small` sends `per_sec` events a
    /// second for `seconds` while the workers work through `big`'s backlog (issue 17).
    Tenants {
        backlog: u64,
        batch_size: u64,
        per_sec: u64,
        seconds: u64,
    },
}

/// How the scenario's database is prepared once its subscriptions are seeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setup {
    /// Nothing more: an empty, migrated database.
    Fresh,
    /// `rows` finished deliveries (events, deliveries, attempts), then `VACUUM ANALYZE`.
    History { rows: u64 },
    /// Autovacuum off for the hot tables.
    AutovacuumOff,
}

#[derive(Debug, Clone)]
pub struct Spec {
    pub name: String,
    pub workers: usize,
    pub subscriptions: Vec<Subscriptions>,
    pub work: Work,
    pub setup: Setup,
    /// Runs on the one database, one after the other (named `<name>/1` … when more than one).
    pub runs: usize,
    /// Time limit of each phase: sending, then waiting for the deliveries.
    pub limit: Duration,
    /// Report figures per window of this width (soak).
    pub window: Option<Duration>,
}

impl Spec {
    /// The name of run `run` (1-based).
    pub fn run_name(&self, run: usize) -> String {
        if self.runs > 1 {
            format!("{}/{run}", self.name)
        } else {
            self.name.clone()
        }
    }
}

fn one(pattern: &'static str) -> Subscriptions {
    Subscriptions {
        first: 0,
        count: 1,
        pattern,
        per_index: false,
        fail_permille: 0,
        filter: None,
        ordering_keys: None,
    }
}

fn closed(types: &str, events: u64, per_event: u64) -> Work {
    Work::Ingest {
        types: EventTypes::Fixed(types.to_owned()),
        pace: Pace::Closed { events },
        healthy_per_event: per_event,
    }
}

impl Args {
    fn events_or(&self, default: u64) -> u64 {
        self.events.unwrap_or(default)
    }

    /// The runs a scenario is made of (`scale` and `history` are two).
    pub fn specs(&self, scenario: Scenario) -> Vec<Spec> {
        let spec = |subscriptions, work| Spec {
            name: scenario.name().to_owned(),
            workers: self.workers as usize,
            subscriptions,
            work,
            setup: Setup::Fresh,
            runs: 1,
            limit: Duration::from_secs(self.seconds()),
            window: None,
        };
        let steady = |types: &str| {
            spec(
                vec![one("bench.*")],
                closed(types, self.events_or(STEADY_EVENTS), 1),
            )
        };
        match scenario {
            Scenario::Steady => vec![steady("bench.steady")],
            Scenario::Ordered => vec![spec(
                vec![Subscriptions {
                    ordering_keys: Some(ORDERED_KEYS),
                    ..one("bench.*")
                }],
                closed("bench.ordered", self.events_or(STEADY_EVENTS), 1),
            )],
            Scenario::Light => vec![spec(
                vec![one("bench.*")],
                Work::Ingest {
                    types: EventTypes::Fixed("bench.light".to_owned()),
                    pace: Pace::Rate {
                        per_sec: LIGHT_RATE,
                        seconds: LIGHT_SECS.min(self.seconds()),
                    },
                    healthy_per_event: 1,
                },
            )],
            Scenario::Batch => vec![spec(
                vec![one("bench.*")],
                Work::Ingest {
                    types: EventTypes::Fixed("bench.batch".to_owned()),
                    pace: Pace::Batches {
                        events: self.events_or(BATCH_EVENTS),
                        size: self.batch_size,
                    },
                    healthy_per_event: 1,
                },
            )],
            Scenario::Fanout => vec![spec(
                vec![Subscriptions {
                    count: FANOUT_SUBSCRIPTIONS,
                    ..one("*")
                }],
                closed(
                    "bench.fanout",
                    self.events_or(FANOUT_EVENTS),
                    u64::from(FANOUT_SUBSCRIPTIONS),
                ),
            )],
            Scenario::ManyDestinations => {
                let many = Subscriptions {
                    count: MANY_SUBSCRIPTIONS,
                    per_index: true,
                    ..one("bench.d")
                };
                let work = Work::Ingest {
                    types: EventTypes::Spread {
                        prefix: "bench.d".to_owned(),
                        count: u64::from(MANY_SUBSCRIPTIONS),
                    },
                    pace: Pace::Closed {
                        events: self.events_or(MANY_EVENTS),
                    },
                    healthy_per_event: 1,
                };
                // The same, with 100 filtered candidates per event that the filters prune: the
                // fan-out cost of evaluating filters (issue 16).
                let filtered = Subscriptions {
                    first: MANY_SUBSCRIPTIONS,
                    count: FILTERED_SUBSCRIPTIONS,
                    filter: Some(NEVER_MATCHING_FILTER),
                    ..one("bench.*")
                };
                vec![
                    spec(vec![many.clone()], work.clone()),
                    Spec {
                        name: "many-destinations/filtered".to_owned(),
                        ..spec(vec![many, filtered], work)
                    },
                ]
            }
            Scenario::Backlog => vec![spec(
                vec![one("bench.*")],
                Work::Backlog {
                    events: self.events_or(BACKLOG_EVENTS),
                    subscriptions: 1,
                },
            )],
            Scenario::Mixed => vec![spec(
                vec![
                    Subscriptions {
                        count: MIXED_HEALTHY,
                        per_index: true,
                        ..one("bench.h")
                    },
                    Subscriptions {
                        first: MIXED_HEALTHY,
                        fail_permille: 1000,
                        ..one("*")
                    },
                ],
                Work::Ingest {
                    types: EventTypes::Spread {
                        prefix: "bench.h".to_owned(),
                        count: u64::from(MIXED_HEALTHY),
                    },
                    pace: Pace::Closed {
                        events: self.events_or(MIXED_EVENTS),
                    },
                    healthy_per_event: 1,
                },
            )],
            Scenario::Scale => [1, 3]
                .into_iter()
                .map(|n| Spec {
                    name: format!("scale/{n}w"),
                    workers: n,
                    ..spec(
                        vec![one("bench.*")],
                        Work::Backlog {
                            events: self.events_or(SCALE_EVENTS),
                            subscriptions: 1,
                        },
                    )
                })
                .collect(),
            Scenario::Soak => {
                let seconds = self.soak_seconds();
                vec![Spec {
                    limit: Duration::from_secs(seconds) + SOAK_DRAIN,
                    window: Some(SOAK_WINDOW),
                    ..spec(
                        vec![one("bench.*")],
                        Work::Ingest {
                            types: EventTypes::Fixed("bench.soak".to_owned()),
                            pace: Pace::Rate {
                                per_sec: self.rate,
                                seconds,
                            },
                            healthy_per_event: 1,
                        },
                    )
                }]
            }
            Scenario::History => vec![
                Spec {
                    name: "history/fresh".to_owned(),
                    ..steady("bench.history")
                },
                Spec {
                    name: format!("history/{}", self.history_rows),
                    setup: Setup::History {
                        rows: self.history_rows,
                    },
                    ..steady("bench.history")
                },
            ],
            Scenario::VacuumOff => vec![Spec {
                setup: Setup::AutovacuumOff,
                runs: VACUUM_OFF_RUNS,
                ..steady("bench.vacuum")
            }],
            // The tenants and their subscriptions are made through the API (`super::tenants`).
            Scenario::Tenants => vec![spec(
                Vec::new(),
                Work::Tenants {
                    backlog: self.events_or(TENANTS_BACKLOG),
                    batch_size: self.batch_size,
                    per_sec: self.small_rate,
                    seconds: self.small_seconds,
                },
            )],
            // Not a delivery run: `list` runs on its own (see `super::list`).
            Scenario::List | Scenario::Console => Vec::new(),
            Scenario::All => Scenario::EACH.iter().flat_map(|s| self.specs(*s)).collect(),
        }
    }
}

#[cfg(test)]
mod tests;
