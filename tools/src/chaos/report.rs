//! The outcome of a chaos run, as JSON and as a table.

pub use super::broker_report::BrokerReport;
use super::faults::{self, Fault, FaultKind};
use super::outage::OutageReport;
use super::sampler::SagaWaits;
use super::traces::TraceAudit;
use serde::Serialize;
use std::collections::BTreeMap;

/// The outcome of a chaos run.
#[derive(Debug, Default, Serialize)]
pub struct ChaosReport {
    /// The fault kinds enabled.
    pub fault_kinds: Vec<String>,
    /// Checkouts acknowledged by JetStream.
    pub published: usize,
    /// Checkouts the runner could not publish at all.
    pub publish_failures: usize,
    /// Sagas the orchestrator started.
    pub sagas: i64,
    /// Ended completed.
    pub completed: i64,
    /// Ended compensated.
    pub compensated: i64,
    /// Ended failed: refused at the first step, nothing to undo (a good end, like the two
    /// above).
    pub failed: i64,
    /// Stuck in compensation.
    pub stuck: i64,
    /// Still running or compensating when the runner gave up waiting.
    pub unfinished: i64,
    /// Published but never started.
    pub lost: i64,
    /// Faults injected per kind (worker, orchestrator, broker, database, network), every kind
    /// asked for listed, 0 included; failed injections are not counted.
    pub faults: BTreeMap<String, usize>,
    /// Kinds asked for but never injected (fails the run: it did not try what it was asked).
    pub never_injected: Vec<String>,
    /// Injections that failed, with why.
    pub failed_injections: Vec<String>,
    /// Processes killed with SIGKILL, every kind included.
    pub kills: usize,
    /// Kills of the broker.
    pub broker_restarts: usize,
    /// Kills per kind of process (`inventory`, ..., `nats`, `postgres`).
    pub kills_by_kind: BTreeMap<String, usize>,
    /// The broker (nodes, version) and the cluster faults.
    pub broker: BrokerReport,
    /// The table made unusable, with `database`.
    pub outage: Option<OutageReport>,
    /// Sagas whose effects disagree with how they ended, by check (see `audit.rs`).
    pub effect_violations: BTreeMap<String, i64>,
    /// The sum of `effect_violations`.
    pub bad_effects: i64,
    /// Initial stock = available + held by completed orders, for every SKU.
    pub stock_ok: bool,
    /// Charges − refunds = the total of completed orders.
    pub money_ok: bool,
    /// The trace audit.
    pub traces: TraceAudit,
    /// Sagas whose trace is not whole (also in `traces`).
    pub incomplete_traces: usize,
    /// Longest time from a fault until sagas ended again.
    pub max_recovery_ms: u64,
    /// Faults after which no saga ever ended again.
    pub unrecovered_faults: Vec<String>,
    /// Each saga's wait from publication to end, and the slowest beyond the median.
    pub saga_waits: SagaWaits,
    /// Why the progress sampler cannot be trusted, if it cannot (fails the run).
    pub sampler_failure: Option<String>,
    /// Samples the sampler could not take (the database was down).
    pub sampler_errors: usize,
    /// Services that did not exit 0 on SIGTERM at the end.
    pub unclean_exits: Vec<String>,
    /// Spans received.
    pub spans: usize,
    /// Process spans of redelivered messages (they carry `messaging.nats.delivery_count`).
    pub redelivered_process_spans: usize,
    /// Wall-clock seconds of the whole run.
    pub elapsed_s: f64,
    /// Every invariant held.
    pub invariants_ok: bool,
}

impl ChaosReport {
    /// Records what the run tried: the faults injected per kind (of those `enabled`), the kinds
    /// never injected and the injections that failed.
    pub fn account_faults(&mut self, enabled: &[FaultKind], injected: &[Fault]) {
        self.faults = faults::count(enabled, injected);
        self.never_injected = faults::never_injected(&self.faults);
        self.failed_injections = injected
            .iter()
            .filter(|f| f.error.is_some())
            .map(|f| f.action.clone())
            .collect();
    }

    /// Whether every invariant held.
    pub fn holds(&self) -> bool {
        self.lost == 0
            && self.stuck == 0
            && self.unfinished == 0
            && self.publish_failures == 0
            && self.bad_effects == 0
            && self.stock_ok
            && self.money_ok
            && self.incomplete_traces == 0
            && self.traces.conflicting_span_ids == 0
            && self.unrecovered_faults.is_empty()
            && self.sampler_failure.is_none()
            && self.outage.as_ref().is_none_or(|o| o.restored)
            && self.unclean_exits.is_empty()
            && self.never_injected.is_empty()
    }
}

/// Prints the report as a table.
pub fn print(report: &ChaosReport, faults: &[Fault], say: &impl Fn(String)) {
    let mark = |ok: bool| if ok { "ok" } else { "FAILED" };
    let row = |label: &str, value: String| say(format!("{label:<36} {value:>10}"));
    let check = |label: &str, value: String, ok: bool| {
        say(format!("{label:<36} {value:>10}  {}", mark(ok)));
    };
    say(String::new());
    row("fault kinds", report.fault_kinds.join(","));
    row("checkouts published", report.published.to_string());
    check(
        "  not published",
        report.publish_failures.to_string(),
        report.publish_failures == 0,
    );
    row("sagas started", report.sagas.to_string());
    row("  completed", report.completed.to_string());
    row("  compensated", report.compensated.to_string());
    row("  failed (nothing to undo)", report.failed.to_string());
    check("  stuck", report.stuck.to_string(), report.stuck == 0);
    check(
        "  unfinished",
        report.unfinished.to_string(),
        report.unfinished == 0,
    );
    check(
        "lost (published, never started)",
        report.lost.to_string(),
        report.lost == 0,
    );
    check(
        "bad effects",
        report.bad_effects.to_string(),
        report.bad_effects == 0,
    );
    for (name, n) in report.effect_violations.iter().filter(|(_, n)| **n != 0) {
        say(format!("    {name}: {n}"));
    }
    check("stock adds up", String::new(), report.stock_ok);
    check("charges − refunds = orders", String::new(), report.money_ok);
    let t = &report.traces;
    check(
        "incomplete traces",
        t.incomplete.to_string(),
        t.incomplete == 0,
    );
    for problem in &t.problems {
        say(format!("    {problem}"));
    }
    check(
        "  span ids shared by different spans",
        t.conflicting_span_ids.to_string(),
        t.conflicting_span_ids == 0,
    );
    row(
        "  commands never processed",
        t.unprocessed_commands.to_string(),
    );
    row(
        "  sends that failed (re-sent)",
        t.unsent_commands.to_string(),
    );
    row(
        "  lost by the broker (re-sent)",
        t.broker_lost_commands.to_string(),
    );
    row(
        "  re-emitted saga/step span copies",
        t.reemitted_copies.to_string(),
    );
    row(
        "  other identical span copies",
        t.other_identical_copies.to_string(),
    );
    row("spans received", report.spans.to_string());
    row(
        "  of redelivered messages",
        report.redelivered_process_spans.to_string(),
    );
    let injected = report.faults.values().sum::<usize>();
    row("faults injected", injected.to_string());
    for (kind, n) in &report.faults {
        check(&format!("  {kind}"), n.to_string(), *n > 0);
    }
    if !report.never_injected.is_empty() {
        say(format!(
            "    never injected: {}",
            report.never_injected.join(", ")
        ));
    }
    for failed in &report.failed_injections {
        say(format!("    {failed}"));
    }
    say(format!(
        "{:<36} {:?}",
        "kills by process", report.kills_by_kind
    ));
    let b = &report.broker;
    row(
        "nats-server nodes / version",
        format!("{} / {}", b.nats_nodes, b.version),
    );
    row("  acked = on disk (sync always)", b.sync_always.to_string());
    if b.nats_nodes > 1 {
        row("  node kills", b.node_kills.to_string());
        row(
            "    of the busiest leader",
            b.busiest_leader_kills.to_string(),
        );
        row("  nodes cut off", b.route_cuts.to_string());
    }
    if b.orchestrators > 1 {
        row(
            "orchestrator kills, another running",
            b.orchestrator_kills_with_another_running.to_string(),
        );
    }
    if let Some(o) = &report.outage {
        check(
            &format!("{} unusable (s)", o.table),
            format!("{:.1}", o.seconds),
            o.restored,
        );
        row(
            "  undos started meanwhile",
            o.undos_started_during.to_string(),
        );
        if let Some(err) = &o.error {
            say(format!("    {err}"));
        }
    }
    check(
        "longest hold-up after a fault (ms)",
        report.max_recovery_ms.to_string(),
        report.unrecovered_faults.is_empty(),
    );
    for fault in &report.unrecovered_faults {
        say(format!("    no progress after: {fault}"));
    }
    let w = &report.saga_waits;
    row(
        "saga wait p50 / p99 (ms)",
        format!("{} / {}", w.median_ms, w.p99_ms),
    );
    row("slowest saga beyond median (ms)", w.holdup_ms.to_string());
    check(
        "progress sampler",
        format!("{} failed", report.sampler_errors),
        report.sampler_failure.is_none(),
    );
    if let Some(failure) = &report.sampler_failure {
        say(format!("    {failure}"));
    }
    check(
        "unclean exits on SIGTERM",
        report.unclean_exits.len().to_string(),
        report.unclean_exits.is_empty(),
    );
    let log: Vec<String> = faults
        .iter()
        .map(|f| format!("{} ({} ms)", f.action, f.down.as_millis()))
        .collect();
    say(format!("{:<36} {}", "fault log", log.join(", ")));
    row("elapsed (s)", format!("{:.1}", report.elapsed_s));
    row(
        "INVARIANTS",
        if report.invariants_ok {
            "HOLD"
        } else {
            "VIOLATED"
        }
        .to_owned(),
    );
}

#[cfg(test)]
#[path = "report_tests.rs"]
mod tests;
