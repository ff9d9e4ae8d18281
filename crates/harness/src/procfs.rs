//! CPU time, memory and open descriptors of a process, the host's CPU use and a TCP port's
//! sockets, from Linux's `/proc`.

use std::process::Command;

/// A process's CPU time (user + system) and memory at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcSample {
    /// `utime + stime`, in clock ticks.
    pub cpu_ticks: u64,
    /// Peak resident set size so far (`VmHWM`), KiB.
    pub peak_rss_kib: u64,
    /// Resident set size now (`VmRSS`), KiB.
    pub rss_kib: u64,
}

/// The host's CPU counters (all CPUs), in clock ticks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostCpu {
    pub busy: u64,
    pub total: u64,
}

impl HostCpu {
    /// Share of the CPUs' time spent busy between `earlier` and `self` (0..=1).
    pub fn busy_since(&self, earlier: &HostCpu) -> Option<f64> {
        let total = self.total.checked_sub(earlier.total)?;
        let busy = self.busy.checked_sub(earlier.busy)?;
        (total > 0).then(|| busy as f64 / total as f64)
    }
}

/// `utime + stime` from the text of `/proc/<pid>/stat`. The command name (field 2) is in
/// parentheses and may itself hold spaces and parentheses, so fields are counted after the last
/// `)`: there the state is field 3, `utime` field 14 and `stime` field 15.
pub fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(14 - 3)?.parse().ok()?;
    let stime: u64 = fields.get(15 - 3)?.parse().ok()?;
    Some(utime + stime)
}

/// A `kB` value of `/proc/<pid>/status`, e.g. `VmHWM:     12345 kB`.
pub fn parse_status_kib(status: &str, key: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let value = line.strip_prefix(key)?.strip_prefix(':')?;
        let mut parts = value.split_whitespace();
        let n = parts.next()?.parse().ok()?;
        (parts.next() == Some("kB")).then_some(n)
    })
}

/// The aggregate `cpu` line of `/proc/stat`: busy is everything but `idle` and `iowait`
/// (`guest` times are already inside `user`/`nice`, so they are not added again).
pub fn parse_host_cpu(stat: &str) -> Option<HostCpu> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let values: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    // user nice system idle iowait irq softirq steal [guest guest_nice]
    let counted = values.len().min(8);
    if counted < 4 {
        return None;
    }
    let total: u64 = values[..counted].iter().sum();
    let idle = values[3] + values.get(4).copied().unwrap_or(0);
    Some(HostCpu {
        busy: total - idle,
        total,
    })
}

pub fn sample(pid: u32) -> Option<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    Some(ProcSample {
        cpu_ticks: parse_stat_cpu_ticks(&stat)?,
        peak_rss_kib: parse_status_kib(&status, "VmHWM").unwrap_or(0),
        rss_kib: parse_status_kib(&status, "VmRSS").unwrap_or(0),
    })
}

/// Whether `pid` is a PostgreSQL process on this machine (a server elsewhere reports pids that
/// mean nothing here).
pub fn is_postgres(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "postgres")
}

/// File descriptors `pid` has open now (entries of `/proc/<pid>/fd`).
pub fn open_fds(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

/// The soft limit of `Max open files` in the text of `/proc/<pid>/limits` (`None`: unlimited or
/// unreadable).
pub fn parse_open_files_limit(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// This process's soft limit of open files.
pub fn own_open_files_limit() -> Option<u64> {
    parse_open_files_limit(&std::fs::read_to_string("/proc/self/limits").ok()?)
}

/// The sockets of one local TCP port of 127.0.0.1 (IPv4) at one moment, from `/proc/net/tcp`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortSockets {
    /// Connections completed by the kernel, waiting for the listener's `accept` (its queue).
    pub accept_queue: u64,
    /// Handshakes under way (`SYN_RECV`).
    pub syn_recv: u64,
    /// Established connections on the port, accepted or still queued.
    pub established: u64,
}

/// [`PortSockets`] of local `port` from the text of `/proc/net/tcp` (`None`: nothing listens).
pub fn parse_port_sockets(tcp: &str, port: u16) -> Option<PortSockets> {
    let mut out = PortSockets::default();
    let mut listening = false;
    let wanted = format!(":{port:04X}");
    for line in tcp.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(local), Some(state), Some(queues)) =
            (fields.get(1), fields.get(3), fields.get(4))
        else {
            continue;
        };
        if !local.ends_with(&wanted) {
            continue;
        }
        match *state {
            "0A" => {
                listening = true;
                let rx = queues.split(':').nth(1).unwrap_or("0");
                out.accept_queue += u64::from_str_radix(rx, 16).unwrap_or(0);
            }
            "03" => out.syn_recv += 1,
            "01" => out.established += 1,
            _ => {}
        }
    }
    listening.then_some(out)
}

pub fn port_sockets(port: u16) -> Option<PortSockets> {
    parse_port_sockets(&std::fs::read_to_string("/proc/net/tcp").ok()?, port)
}

pub fn host_cpu() -> Option<HostCpu> {
    parse_host_cpu(&std::fs::read_to_string("/proc/stat").ok()?)
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on every Linux we know of).
pub fn clock_ticks_per_sec() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .filter(|&n: &u64| n > 0)
        .unwrap_or(100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let stat = "4242 (dispatch-api) S 1 4242 4242 0 -1 4194560 2403 0 0 0 \
                    150 37 0 0 20 0 9 0 12345 1020000000 5000 18446744073709551615";
        assert_eq!(parse_stat_cpu_ticks(stat), Some(187));
        // A name with spaces and parentheses does not shift the fields.
        let odd = "7 (a) b (c)) R 1 7 7 0 -1 0 0 0 0 0 9 1 0 0 20 0 1 0 5 1 1 1";
        assert_eq!(parse_stat_cpu_ticks(odd), Some(10));
        assert_eq!(parse_stat_cpu_ticks("7 (x) S 1 2"), None);
        assert_eq!(parse_stat_cpu_ticks("no parenthesis"), None);
    }

    #[test]
    fn status_values_in_kib() {
        let status = "Name:\tdispatch-worker\nVmPeak:\t  900000 kB\nVmHWM:\t   23456 kB\n\
                      VmRSS:\t   20000 kB\nThreads:\t5\n";
        assert_eq!(parse_status_kib(status, "VmHWM"), Some(23456));
        assert_eq!(parse_status_kib(status, "VmRSS"), Some(20000));
        assert_eq!(parse_status_kib(status, "Threads"), None);
        assert_eq!(parse_status_kib(status, "VmSwap"), None);
        // `VmHWM` must not match a longer key that starts with it.
        assert_eq!(parse_status_kib("VmHWMx:\t1 kB\n", "VmHWM"), None);
    }

    #[test]
    fn host_cpu_busy_share() {
        let before =
            parse_host_cpu("cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 50 0 25 400 25 0 0 0 0 0\n")
                .expect("parsed");
        assert_eq!(
            before,
            HostCpu {
                busy: 150,
                total: 1000
            }
        );
        let after = parse_host_cpu("cpu  400 0 150 1200 50 0 0 0 0 0\n").expect("parsed");
        assert_eq!(after.busy_since(&before), Some(0.5));
        assert_eq!(before.busy_since(&after), None);
        assert_eq!(parse_host_cpu("intr 1 2 3\n"), None);
    }

    #[test]
    fn this_process_can_be_sampled() {
        let s = sample(std::process::id()).expect("/proc is readable on Linux");
        assert!(s.peak_rss_kib > 0);
        assert!(s.rss_kib > 0 && s.rss_kib <= s.peak_rss_kib);
        assert!(clock_ticks_per_sec() > 0);
        assert!(host_cpu().is_some_and(|h| h.total > 0));
        assert!(open_fds(std::process::id()).is_some_and(|n| n >= 3));
        assert!(own_open_files_limit().is_some_and(|n| n > 0));
    }

    #[test]
    fn a_ports_sockets_are_counted_by_state() {
        let tcp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt\n\
           0: 0100007F:1F90 00000000:0000 0A 00000000:00000081 00:00000000 00000000 0 0 1\n\
           1: 0100007F:1F90 0100007F:D431 03 00000000:00000000 01:00000064 00000000 0 0 0\n\
           2: 0100007F:1F90 0100007F:D432 01 00000000:00000000 00:00000000 00000000 0 0 2\n\
           3: 0100007F:1F90 0100007F:D433 01 00000000:00000000 00:00000000 00000000 0 0 3\n\
           4: 0100007F:D433 0100007F:1F90 01 00000000:00000000 00:00000000 00000000 0 0 4\n\
           5: 0100007F:1F91 00000000:0000 0A 00000000:00000005 00:00000000 00000000 0 0 5\n";
        assert_eq!(
            parse_port_sockets(tcp, 8080),
            Some(PortSockets {
                accept_queue: 129,
                syn_recv: 1,
                established: 2,
            })
        );
        assert_eq!(parse_port_sockets(tcp, 8082), None, "nothing listens");
    }

    #[test]
    fn open_files_limit_is_the_soft_one() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max processes             127573               127573               processes \n\
                      Max open files            1024                 524288               files     \n";
        assert_eq!(parse_open_files_limit(limits), Some(1024));
        let unlimited =
            "Max open files            unlimited            unlimited            files\n";
        assert_eq!(parse_open_files_limit(unlimited), None);
        assert_eq!(
            parse_open_files_limit("Max processes 1 1 processes\n"),
            None
        );
    }
}
