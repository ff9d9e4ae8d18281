//! CPU counters of the services, the database's backends, this process and the host, taken
//! before and after a measurement.

use dispatch_store::admin;
use dispatch_store::queries::bench::{self as queries, Activity};

use crate::processes::Service;
use crate::procfs::{self, HostCpu, ProcSample};

/// CPU counters of the services, the database's backends, this process and the host at one
/// moment.
pub struct Snapshot {
    pub services: Vec<(String, Option<ProcSample>)>,
    /// The PostgreSQL backends connected to the scenario's database (empty when the server
    /// does not run on this machine).
    pub backends: Vec<(u32, ProcSample)>,
    pub xtask: Option<ProcSample>,
    pub host: Option<HostCpu>,
    /// The database's activity counters.
    pub activity: Option<Activity>,
}

impl Snapshot {
    pub async fn take(services: &[Service], database_url: &str) -> Self {
        let (pids, activity) = match admin::connect(database_url).await {
            Ok(mut conn) => (
                queries::backend_pids(&mut conn).await.unwrap_or_default(),
                queries::activity(&mut conn).await.ok(),
            ),
            Err(_) => (Vec::new(), None),
        };
        let backends = pids
            .into_iter()
            .filter_map(|pid| u32::try_from(pid).ok())
            .filter(|&pid| procfs::is_postgres(pid))
            .filter_map(|pid| Some((pid, procfs::sample(pid)?)))
            .collect();
        Self {
            services: services
                .iter()
                .map(|s| (s.name.clone(), s.sample()))
                .collect(),
            backends,
            xtask: procfs::sample(std::process::id()),
            host: procfs::host_cpu(),
            activity,
        }
    }

    /// CPU seconds per process since `before` (`None`: since each process started). Processes
    /// that had not started at `before`'s time count from zero. `postgres` sums the database's
    /// backends (one that started and ended in between is missed).
    pub fn cpu_since(&self, before: Option<&Snapshot>, ticks_per_sec: u64) -> Vec<(String, f64)> {
        let secs = |after: Option<ProcSample>, before: Option<ProcSample>| {
            let (a, b) = (
                after.map_or(0, |s| s.cpu_ticks),
                before.map_or(0, |s| s.cpu_ticks),
            );
            a.saturating_sub(b) as f64 / ticks_per_sec as f64
        };
        let mut out: Vec<(String, f64)> = self
            .services
            .iter()
            .map(|(name, after)| {
                let earlier = before
                    .and_then(|b| b.services.iter().find(|(n, _)| n == name))
                    .and_then(|(_, s)| *s);
                (name.clone(), secs(*after, earlier))
            })
            .collect();
        if !self.backends.is_empty() {
            let postgres = self
                .backends
                .iter()
                .map(|(pid, after)| {
                    let earlier = before
                        .and_then(|b| b.backends.iter().find(|(p, _)| p == pid))
                        .map(|(_, s)| *s);
                    secs(Some(*after), earlier)
                })
                .sum();
            out.push(("postgres".to_owned(), postgres));
        }
        out.push((
            "xtask".to_owned(),
            secs(self.xtask, before.and_then(|b| b.xtask)),
        ));
        out
    }
}

/// KiB in MiB.
pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_is_counted_from_the_first_snapshot_or_from_zero() {
        let at = |ticks| ProcSample {
            cpu_ticks: ticks,
            peak_rss_kib: 1,
            rss_kib: 1,
        };
        let before = Snapshot {
            services: vec![("api".to_owned(), Some(at(100)))],
            backends: vec![(7, at(50))],
            xtask: Some(at(10)),
            host: None,
            activity: None,
        };
        let after = Snapshot {
            services: vec![
                ("api".to_owned(), Some(at(350))),
                ("worker-1".to_owned(), Some(at(40))),
            ],
            backends: vec![(7, at(150)), (8, at(100))],
            xtask: Some(at(60)),
            host: None,
            activity: None,
        };
        assert_eq!(
            after.cpu_since(Some(&before), 100),
            [
                ("api".to_owned(), 2.5),
                ("worker-1".to_owned(), 0.4),
                ("postgres".to_owned(), 2.0),
                ("xtask".to_owned(), 0.5)
            ]
        );
        let since_start = after.cpu_since(None, 100);
        assert_eq!(since_start[0], ("api".to_owned(), 3.5));
        assert_eq!(since_start[2], ("postgres".to_owned(), 2.5));
    }
}
