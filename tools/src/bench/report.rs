//! The figures of a run, computed from what was measured, and their table.

use super::drive::{Ended, Outcome, Timed};
use super::procstat::Usage;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// The `q`-quantile (0..=1) of sorted values, by nearest rank; 0 for no values.
pub fn percentile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Latency {
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Slowest.
    pub max_ms: f64,
}

impl Latency {
    /// The percentiles of these sagas' latencies.
    pub fn of<'a>(ended: impl Iterator<Item = &'a Ended>) -> Latency {
        let mut us: Vec<u64> = ended.map(|e| e.latency_us).collect();
        us.sort_unstable();
        let ms = |v: u64| v as f64 / 1000.0;
        Latency {
            p50_ms: ms(percentile(&us, 0.50)),
            p90_ms: ms(percentile(&us, 0.90)),
            p99_ms: ms(percentile(&us, 0.99)),
            max_ms: ms(us.last().copied().unwrap_or(0)),
        }
    }
}

/// One process's share of a run.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessFigures {
    /// The process (or PostgreSQL's group of them).
    pub process: String,
    /// CPU milliseconds per saga.
    pub cpu_ms_per_saga: f64,
    /// Peak memory, MiB (`VmHWM`; for PostgreSQL, the sum of its processes' private memory).
    pub memory_mib: f64,
    /// Processes counted in the row.
    pub processes: usize,
}

/// What was counted around a run.
#[derive(Debug, Clone, Default)]
pub struct Counters {
    /// CPU and memory per process.
    pub usage: Vec<Usage>,
    /// PostgreSQL commits.
    pub commits: i64,
    /// Deadlocks PostgreSQL detected in the database.
    pub deadlocks: i64,
    /// Group statements the workers logged as failed and run again one action at a time.
    pub fallbacks: u64,
    /// JetStream messages stored, per stream.
    pub messages: BTreeMap<String, u64>,
    /// Spans received, per service (`None` untraced: none are expected).
    pub spans: Option<BTreeMap<String, u64>>,
    /// Spans expected from the run's sagas, per service ([`super::spans::expected_spans`]).
    pub spans_expected: BTreeMap<String, u64>,
}

/// The figures of one run.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// `checkout` (the product) or `skeleton`.
    pub system: String,
    /// Sagas in flight.
    pub concurrency: usize,
    /// `on` or `off`.
    pub tracing: String,
    /// The measured window, seconds.
    pub duration_s: f64,
    /// Sagas ended within the window.
    pub sagas: usize,
    /// Of which completed.
    pub completed: usize,
    /// Of which compensated.
    pub compensated: usize,
    /// Sagas that failed, in the window or the drain (stuck, timed out, unpublished).
    pub failed: usize,
    /// Sagas ended within the window per second.
    pub throughput_per_s: f64,
    /// Latency (client publish to last lifecycle event) of the sagas ended in the window.
    #[serde(flatten)]
    pub latency: Latency,
    /// Every saga of the run, window and drain: the counts below are divided by these.
    pub accounted_sagas: usize,
    /// Spans received.
    pub spans_received: u64,
    /// Spans received per second of the window.
    pub spans_per_s: f64,
    /// Spans received per saga.
    pub spans_per_saga: f64,
    /// Spans expected per saga, from [`super::spans::expected_spans_per_saga`] and the outcomes.
    pub spans_expected_per_saga: f64,
    /// Expected minus received: positive means spans were lost.
    pub spans_missing: i64,
    /// Spans received minus expected, per service, where they differ.
    pub spans_off_by_service: BTreeMap<String, i64>,
    /// CPU milliseconds per saga, all processes.
    pub cpu_ms_per_saga: f64,
    /// Per process.
    pub processes: Vec<ProcessFigures>,
    /// PostgreSQL commits per saga (`xact_commit`, read-only transactions included).
    pub pg_commits_per_saga: f64,
    /// JetStream messages stored per saga.
    pub js_messages_per_saga: f64,
    /// Group statements that failed and ran again one action at a time (from the workers'
    /// logs): each is a batch that waited for a failure, often a deadlock, before its
    /// actions were done.
    pub group_fallbacks: u64,
    /// Deadlocks PostgreSQL detected in the run (`pg_stat_database.deadlocks`), each costing
    /// its `deadlock_timeout`.
    pub pg_deadlocks: i64,
    /// Per stream.
    pub js_messages_per_saga_by_stream: BTreeMap<String, f64>,
    /// The skeleton's throughput at the same concurrency, in the same invocation.
    pub skeleton_throughput_per_s: Option<f64>,
    /// The skeleton's p99 at the same concurrency.
    pub skeleton_p99_ms: Option<f64>,
    /// The skeleton's CPU per saga at the same concurrency.
    pub skeleton_cpu_ms_per_saga: Option<f64>,
    /// This run's throughput over the skeleton's.
    pub ratio_to_skeleton: Option<f64>,
    /// Where a completed saga's time went, hop by hop (`--breakdown`, traced runs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub breakdown: Option<super::breakdown::Breakdown>,
}

impl RunReport {
    /// The figures of `timed`, a run of `duration` at `concurrency`, with what was counted.
    pub fn build(
        system: &str,
        concurrency: usize,
        tracing: bool,
        duration: Duration,
        timed: &Timed,
        counters: &Counters,
    ) -> RunReport {
        let count = |o: Outcome| timed.window.iter().filter(|e| e.outcome == o).count();
        let failed = timed.all().filter(|e| e.outcome == Outcome::Failed).count() + timed.abandoned;
        let ok = |e: &&Ended| e.outcome != Outcome::Failed;
        let sagas = timed.window.iter().filter(ok).count();
        let accounted = timed.all().count() + timed.abandoned;
        let per = |n: f64| n / accounted.max(1) as f64;
        let secs = duration.as_secs_f64().max(1e-9);
        let expected = &counters.spans_expected;
        let received = counters.spans.clone().unwrap_or_default();
        let spans_received: u64 = received.values().sum();
        let spans_expected: u64 = if counters.spans.is_some() {
            expected.values().sum()
        } else {
            0
        };
        let mut off = BTreeMap::new();
        if counters.spans.is_some() {
            for service in expected.keys().chain(received.keys()) {
                let diff = received.get(service).copied().unwrap_or(0) as i64
                    - expected.get(service).copied().unwrap_or(0) as i64;
                if diff != 0 {
                    off.insert(service.clone(), diff);
                }
            }
        }
        let processes: Vec<ProcessFigures> = counters
            .usage
            .iter()
            .map(|u| ProcessFigures {
                process: u.name.clone(),
                cpu_ms_per_saga: per(u.cpu_s * 1000.0),
                memory_mib: u.memory_mib,
                processes: u.processes,
            })
            .collect();
        let messages: u64 = counters.messages.values().sum();
        RunReport {
            system: system.to_owned(),
            concurrency,
            tracing: if tracing { "on" } else { "off" }.to_owned(),
            duration_s: secs,
            sagas,
            completed: count(Outcome::Completed),
            compensated: count(Outcome::Compensated),
            failed,
            throughput_per_s: sagas as f64 / secs,
            latency: Latency::of(timed.window.iter().filter(ok)),
            accounted_sagas: accounted,
            spans_received,
            spans_per_s: spans_received as f64 / secs,
            spans_per_saga: per(spans_received as f64),
            spans_expected_per_saga: per(spans_expected as f64),
            spans_missing: spans_expected as i64 - spans_received as i64,
            spans_off_by_service: off,
            cpu_ms_per_saga: processes.iter().map(|p| p.cpu_ms_per_saga).sum(),
            processes,
            pg_commits_per_saga: per(counters.commits as f64),
            js_messages_per_saga: per(messages as f64),
            group_fallbacks: counters.fallbacks,
            pg_deadlocks: counters.deadlocks,
            js_messages_per_saga_by_stream: counters
                .messages
                .iter()
                .map(|(k, v)| (k.clone(), per(*v as f64)))
                .collect(),
            skeleton_throughput_per_s: None,
            skeleton_p99_ms: None,
            skeleton_cpu_ms_per_saga: None,
            ratio_to_skeleton: None,
            breakdown: None,
        }
    }

    /// Records the skeleton's figures at the same concurrency, and the ratio to them.
    pub fn compare(&mut self, skeleton: &RunReport) {
        self.skeleton_throughput_per_s = Some(skeleton.throughput_per_s);
        self.skeleton_p99_ms = Some(skeleton.latency.p99_ms);
        self.skeleton_cpu_ms_per_saga = Some(skeleton.cpu_ms_per_saga);
        self.ratio_to_skeleton = Some(self.throughput_per_s / skeleton.throughput_per_s.max(1e-9));
    }

    fn label(&self) -> String {
        match self.system.as_str() {
            "skeleton" => "skeleton".to_owned(),
            _ => format!("checkout, tracing {}", self.tracing),
        }
    }
}

/// The runs as a table, then where the CPU went in each.
pub fn table(runs: &[RunReport]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<22} {:>4} {:>8} {:>7} {:>7} {:>7} {:>7} {:>11} {:>8} {:>7} {:>8} {:>7} {:>10} {:>6}",
        "run",
        "conc",
        "sagas/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
        "spans/saga",
        "spans/s",
        "CPU ms",
        "commits",
        "JS msg",
        "skeleton/s",
        "ratio"
    );
    for r in runs {
        let spans = if r.tracing == "on" {
            format!("{:.1}/{:.1}", r.spans_per_saga, r.spans_expected_per_saga)
        } else {
            "-".to_owned()
        };
        let _ = writeln!(
            out,
            "{:<22} {:>4} {:>8.1} {:>7.1} {:>7.1} {:>7.1} {:>7.1} {:>11} {:>8.0} {:>7.2} {:>8.2} {:>7.2} {:>10} {:>6}",
            r.label(),
            r.concurrency,
            r.throughput_per_s,
            r.latency.p50_ms,
            r.latency.p90_ms,
            r.latency.p99_ms,
            r.latency.max_ms,
            spans,
            r.spans_per_s,
            r.cpu_ms_per_saga,
            r.pg_commits_per_saga,
            r.js_messages_per_saga,
            r.skeleton_throughput_per_s
                .map_or("-".to_owned(), |s| format!("{s:.1}")),
            r.ratio_to_skeleton
                .map_or("-".to_owned(), |s| format!("{s:.2}")),
        );
    }
    let _ = writeln!(
        out,
        "(spans/saga: received/expected; CPU ms, commits and JS msg are per saga)\n"
    );
    let _ = writeln!(out, "CPU ms per saga (peak memory MiB), per process:");
    for r in runs {
        let cells: Vec<String> = r
            .processes
            .iter()
            .map(|p| {
                format!(
                    "{} {:.2} ({:.0})",
                    p.process, p.cpu_ms_per_saga, p.memory_mib
                )
            })
            .collect();
        let _ = writeln!(
            out,
            "  {} @{}: {}",
            r.label(),
            r.concurrency,
            cells.join(", ")
        );
    }
    let _ = writeln!(
        out,
        "Group statements fallen back to one action at a time (PostgreSQL deadlocks), per run:"
    );
    for r in runs.iter().filter(|r| r.system != "skeleton") {
        let _ = writeln!(
            out,
            "  {} @{}: {} ({})",
            r.label(),
            r.concurrency,
            r.group_fallbacks,
            r.pg_deadlocks
        );
    }
    for r in runs.iter().filter(|r| r.failed > 0 || r.spans_missing != 0) {
        let _ = writeln!(
            out,
            "  ! {} @{}: {} failed sagas, {} spans missing (by service, received - expected: {:?})",
            r.label(),
            r.concurrency,
            r.failed,
            r.spans_missing,
            r.spans_off_by_service
        );
    }
    out
}

#[cfg(test)]
mod tests;
