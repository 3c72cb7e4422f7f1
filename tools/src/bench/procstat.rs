//! CPU time and memory of processes, read from `/proc`, and the machine's description.
//!
//! CPU is `utime + stime` of `/proc/<pid>/stat`, which sums every thread of the process (the
//! services are multi-threaded Tokio runtimes, so a per-thread figure would miss most of it).
//! Peak memory is `VmHWM` of `/proc/<pid>/status`: the largest resident set since the process
//! started.

use std::collections::BTreeMap;

/// `/proc/<pid>/stat` counts CPU time in `USER_HZ` ticks, which the kernel fixes at 100 on
/// every architecture this runs on (it is the ABI value, independent of `CONFIG_HZ`).
pub const TICKS_PER_SECOND: f64 = 100.0;

/// One process at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcSample {
    /// User plus system CPU time, in ticks.
    pub cpu_ticks: u64,
    /// Peak resident set size (`VmHWM`), KiB.
    pub peak_kib: u64,
    /// Current resident set size (`VmRSS`), KiB.
    pub rss_kib: u64,
    /// Private anonymous memory (`RssAnon`), KiB: for PostgreSQL backends, whose resident sets
    /// all include the same shared buffers, the part that is really theirs.
    pub anon_kib: u64,
}

/// `utime + stime` from the text of `/proc/<pid>/stat`.
///
/// The command name (field 2) is in parentheses and may itself contain spaces and
/// parentheses, so the fields are counted from the last `)`.
pub fn parse_stat_ticks(text: &str) -> Option<u64> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, so utime (field 14) and stime (field 15) are at 11, 12.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// The parent pid (field 4) from the text of `/proc/<pid>/stat`.
pub fn parse_ppid(text: &str) -> Option<u32> {
    let rest = &text[text.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// The value in KiB of a `Key:   123 kB` line of `/proc/<pid>/status` (or `/proc/meminfo`).
pub fn parse_kib(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let value = line.strip_prefix(key)?.strip_prefix(':')?;
        value.split_whitespace().next()?.parse().ok()
    })
}

/// Reads one process; `None` when it is gone (or `/proc` is not readable).
pub fn sample(pid: u32) -> Option<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    Some(ProcSample {
        cpu_ticks: parse_stat_ticks(&stat)?,
        peak_kib: parse_kib(&status, "VmHWM").unwrap_or(0),
        rss_kib: parse_kib(&status, "VmRSS").unwrap_or(0),
        anon_kib: parse_kib(&status, "RssAnon").unwrap_or(0),
    })
}

/// The processes of one row of the report: a service is one pid; PostgreSQL is every backend
/// of the benchmark's database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// The row's name.
    pub name: String,
    /// Its processes.
    pub pids: Vec<u32>,
    /// Whether its processes share memory (PostgreSQL): then its memory is the sum of their
    /// private memory, not of their resident sets.
    pub shared_memory: bool,
}

/// Samples of every process of every group at one moment.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// `(group, pid) -> sample`.
    pub samples: BTreeMap<(String, u32), ProcSample>,
}

impl Snapshot {
    /// Reads every process of `groups` now.
    pub fn take(groups: &[Group]) -> Snapshot {
        let mut samples = BTreeMap::new();
        for group in groups {
            for &pid in &group.pids {
                if let Some(s) = sample(pid) {
                    samples.insert((group.name.clone(), pid), s);
                }
            }
        }
        Snapshot { samples }
    }
}

/// What one group used between two snapshots.
#[derive(Debug, Clone, PartialEq)]
pub struct Usage {
    /// The group.
    pub name: String,
    /// CPU seconds between the snapshots.
    pub cpu_s: f64,
    /// Peak memory at the end, MiB: the largest `VmHWM`, or for groups sharing memory the sum
    /// of their private memory.
    pub memory_mib: f64,
    /// Processes sampled at the end.
    pub processes: usize,
}

/// CPU used per group from `before` to `after`, in the order of `groups`. A process that is
/// new at the end (a backend connected during the run) counts from zero; one that is gone
/// at the end is lost, which is why the end is sampled before anything is stopped.
pub fn usage(groups: &[Group], before: &Snapshot, after: &Snapshot) -> Vec<Usage> {
    groups
        .iter()
        .map(|group| {
            let mut ticks = 0u64;
            let mut memory_kib = 0u64;
            let mut processes = 0;
            for ((name, pid), end) in &after.samples {
                if name != &group.name {
                    continue;
                }
                processes += 1;
                let start = before
                    .samples
                    .get(&(name.clone(), *pid))
                    .map_or(0, |s| s.cpu_ticks);
                ticks += end.cpu_ticks.saturating_sub(start);
                memory_kib = if group.shared_memory {
                    memory_kib + end.anon_kib
                } else {
                    memory_kib.max(end.peak_kib)
                };
            }
            Usage {
                name: group.name.clone(),
                cpu_s: ticks as f64 / TICKS_PER_SECOND,
                memory_mib: memory_kib as f64 / 1024.0,
                processes,
            }
        })
        .collect()
}

/// This machine: cores, CPU model, memory, and the load when the benchmark began (the
/// figures of a shared machine are only as good as its quiet).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Machine {
    /// Cores available to this process.
    pub cores: usize,
    /// `model name` of `/proc/cpuinfo`.
    pub cpu: String,
    /// `MemTotal`, GiB.
    pub memory_gib: f64,
    /// The 1-minute load average at the start.
    pub load_at_start: f64,
}

impl Machine {
    /// Reads it from `/proc`; unknown parts stay empty or zero.
    pub fn read() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let loadavg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        Machine {
            cores: std::thread::available_parallelism().map_or(0, usize::from),
            cpu: cpu_model(&cpuinfo),
            memory_gib: parse_kib(&meminfo, "MemTotal").unwrap_or(0) as f64 / 1024.0 / 1024.0,
            load_at_start: loadavg
                .split_whitespace()
                .next()
                .and_then(|l| l.parse().ok())
                .unwrap_or(0.0),
        }
    }
}

/// The first `model name` of `/proc/cpuinfo`.
pub fn cpu_model(cpuinfo: &str) -> String {
    cpuinfo
        .lines()
        .find_map(|line| {
            let (key, value) = line.split_once(':')?;
            (key.trim() == "model name").then(|| value.trim().to_owned())
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_ticks_are_utime_plus_stime_even_with_odd_names() {
        let stat = "4242 (tokio (rt) x) S 1 4242 4242 0 -1 4194560 1000 0 0 0 \
                    250 75 3 4 20 0 8 0 123456 1000000 2000 18446744073709551615";
        assert_eq!(parse_stat_ticks(stat), Some(325));
        assert_eq!(parse_ppid(stat), Some(1));
        assert_eq!(parse_stat_ticks("4242 (short) S 1"), None);
        assert_eq!(parse_stat_ticks("no parenthesis"), None);
    }

    #[test]
    fn status_values_are_read_by_key_not_by_prefix() {
        let status = "Name:\tpostgres\nVmHWMX:\t1 kB\nVmHWM:\t   20480 kB\nVmRSS:\t 1024 kB\n\
                      RssAnon:\t  512 kB\n";
        assert_eq!(parse_kib(status, "VmHWM"), Some(20_480));
        assert_eq!(parse_kib(status, "VmRSS"), Some(1_024));
        assert_eq!(parse_kib(status, "RssAnon"), Some(512));
        assert_eq!(parse_kib(status, "VmSwap"), None);
    }

    #[test]
    fn the_cpu_model_is_the_first_model_name() {
        let cpuinfo = "processor\t: 0\nmodel name\t: AMD EPYC 7B13\nprocessor\t: 1\n\
                       model name\t: AMD EPYC 7B13\n";
        assert_eq!(cpu_model(cpuinfo), "AMD EPYC 7B13");
        assert_eq!(cpu_model(""), "");
    }

    fn sample(cpu_ticks: u64, peak_kib: u64, anon_kib: u64) -> ProcSample {
        ProcSample {
            cpu_ticks,
            peak_kib,
            rss_kib: peak_kib,
            anon_kib,
        }
    }

    #[test]
    fn usage_counts_new_processes_from_zero_and_sums_private_memory_of_shared_groups() {
        let groups = [
            Group {
                name: "orchestrator".into(),
                pids: vec![10],
                shared_memory: false,
            },
            Group {
                name: "postgres".into(),
                pids: vec![20, 21],
                shared_memory: true,
            },
        ];
        let mut before = Snapshot::default();
        before
            .samples
            .insert(("orchestrator".into(), 10), sample(100, 1024, 0));
        before
            .samples
            .insert(("postgres".into(), 20), sample(50, 2048, 512));
        let mut after = Snapshot::default();
        after
            .samples
            .insert(("orchestrator".into(), 10), sample(300, 4096, 0));
        after
            .samples
            .insert(("postgres".into(), 20), sample(150, 2048, 1024));
        // Connected during the run: all of its time is the run's.
        after
            .samples
            .insert(("postgres".into(), 21), sample(40, 2048, 1024));
        let usage = usage(&groups, &before, &after);
        assert_eq!(usage[0].cpu_s, 2.0);
        assert_eq!(usage[0].memory_mib, 4.0);
        assert_eq!(usage[1].cpu_s, 1.4);
        assert_eq!(usage[1].memory_mib, 2.0);
        assert_eq!(usage[1].processes, 2);
    }
}
