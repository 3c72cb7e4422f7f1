//! The trace audit: every saga's trace is one whole tree, and nothing is hidden by counting a
//! span id once.
//!
//! A trace is whole when it is one tree (one trace id, one root, no missing parent), has its
//! saga span covering its steps, one compensation span per undo, every step span of a
//! completed saga, and every command's publish span has its worker's process span beneath it.
//!
//! Span ids seen more than once are counted, never silently merged. The orchestrator emits
//! its saga, step and compensation spans (the "started" ones when they begin, the full-length
//! ones when they end) and re-emits them after a crash if their export was in doubt (same ids,
//! same content): such identical copies are one span delivered twice, reported as a figure of
//! their own. Copies that differ (another name, parent, time or
//! attribute under the same id) are two spans sharing an id: a violation.

use super::commands;
use checkout_harness::trace_check::check_tree;
use checkout_harness::{OtlpReceiver, ReceivedSpan};
use checkout_orchestrator::saga::PlanId;
use checkout_orchestrator::spans::{STARTED, is_started};
use checkout_shared::SagaStatus;
use sqlx::PgPool;
use std::collections::{HashMap, HashSet};
use std::time::Duration;
use uuid::Uuid;

/// What the trace audit found.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct TraceAudit {
    /// Sagas whose trace is not whole.
    pub incomplete: usize,
    /// Examples of what was wrong.
    pub problems: Vec<String>,
    /// Extra identical copies of the orchestrator's deferred spans (saga, step, compensation),
    /// re-emitted by recovery.
    pub reemitted_copies: usize,
    /// Extra identical copies of any other span (an export retried after a lost response).
    pub other_identical_copies: usize,
    /// Span ids shared by spans that differ: a violation.
    pub conflicting_span_ids: usize,
    /// Command messages published and never processed.
    pub unprocessed_commands: usize,
    /// Command publishes that did not reach the stream (a `send failed` span beneath them):
    /// not a hole in the trace, as nothing was there to process; the saga re-sent them.
    pub unsent_commands: usize,
    /// Command messages the broker lost after accepting them (killed before its write reached
    /// the disk), whose re-send did the work: not a hole either (`chaos::commands`).
    pub broker_lost_commands: usize,
}

/// The orchestrator's saga, step and compensation spans, "started" and full-length.
fn is_deferred(span: &ReceivedSpan) -> bool {
    span.name.starts_with("saga checkout")
        || span.name.starts_with("step ")
        || span.name.starts_with("compensate ")
}

/// A full-length compensation span (not its "started" span).
fn is_compensation(span: &ReceivedSpan) -> bool {
    span.name.starts_with("compensate ") && !is_started(&span.name)
}

/// Waits (bounded) until every ended saga's span arrived and every command publish has a
/// process span, so that a slow export is not mistaken for a broken trace.
pub async fn wait_for_spans(pool: &PgPool, receiver: &OtlpReceiver) -> anyhow::Result<()> {
    let traces: HashSet<String> = sqlx::query_scalar::<_, String>(
        "SELECT trace_id FROM saga.sagas WHERE status IN ('completed', 'compensated', 'failed')",
    )
    .fetch_all(pool)
    .await?
    .into_iter()
    .collect();
    let whole = |spans: &[ReceivedSpan]| {
        let done: HashSet<&str> = spans
            .iter()
            .filter(|s| s.name == "saga checkout")
            .map(|s| s.trace_id.as_str())
            .collect();
        traces.iter().all(|t| done.contains(t.as_str())) && commands::audit(spans).holes.is_empty()
    };
    // Checked once a second rather than at the receiver's 50 ms: the check is a pass over
    // every span, on cores the services share.
    for _ in 0..30 {
        if receiver.wait_for(Duration::ZERO, whole).await {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    // Let the last groups of worker spans land.
    tokio::time::sleep(Duration::from_secs(1)).await;
    Ok(())
}

/// A saga as the trace audit reads it from the saga store.
#[derive(Debug, Clone)]
pub struct AuditedSaga {
    /// Its id.
    pub saga_id: Uuid,
    /// Its trace.
    pub trace_id: String,
    /// How it stands.
    pub status: SagaStatus,
    /// The undos it finished (its saga log's `undo_finished` entries).
    pub undos: usize,
}

/// Audits every saga's trace.
pub async fn audit(pool: &PgPool, receiver: &OtlpReceiver) -> anyhow::Result<TraceAudit> {
    let rows: Vec<(Uuid, String, String)> =
        sqlx::query_as("SELECT saga_id, trace_id, status FROM saga.sagas")
            .fetch_all(pool)
            .await?;
    let undone: HashMap<Uuid, usize> = sqlx::query_as::<_, (Uuid, i64)>(
        "SELECT saga_id, count(*) FROM saga.saga_log WHERE event = 'undo_finished' GROUP BY saga_id",
    )
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(|(id, n)| (id, usize::try_from(n).unwrap_or(0)))
    .collect();
    let mut sagas = Vec::with_capacity(rows.len());
    for (saga_id, trace_id, status) in rows {
        sagas.push(AuditedSaga {
            saga_id,
            trace_id,
            status: status.parse()?,
            undos: undone.get(&saga_id).copied().unwrap_or(0),
        });
    }
    Ok(audit_spans(&sagas, receiver.spans()))
}

/// Audits the traces of `sagas` among `all` the spans received: the pure part of [`audit`].
pub fn audit_spans(sagas: &[AuditedSaga], all: Vec<ReceivedSpan>) -> TraceAudit {
    let mut audit = TraceAudit::default();
    let mut unprocessed_by_trace: HashMap<String, Vec<String>> = HashMap::new();
    let commands = commands::audit(&all);
    audit.unsent_commands = commands.unsent;
    audit.broker_lost_commands = commands.lost_by_broker;
    for (id, trace) in commands.holes {
        audit.unprocessed_commands += 1;
        unprocessed_by_trace.entry(trace).or_default().push(id);
    }
    let mut by_trace: HashMap<String, Vec<ReceivedSpan>> = HashMap::new();
    for span in all {
        by_trace
            .entry(span.trace_id.clone())
            .or_default()
            .push(span);
    }
    for saga in sagas {
        let (saga_id, trace_id) = (saga.saga_id, &saga.trace_id);
        let spans = by_trace.remove(trace_id).unwrap_or_default();
        let (spans, mut problems) = dedupe(spans, &mut audit);
        problems.extend(check_tree(&spans));
        problems.extend(saga_problems(&spans, saga.status, saga.undos));
        for id in unprocessed_by_trace.remove(trace_id).unwrap_or_default() {
            let seen = commands::message_spans(&spans, &id);
            problems.push(format!("command {id} published, never processed ({seen})"));
        }
        if !problems.is_empty() {
            audit.incomplete += 1;
            if audit.problems.len() < 5 {
                audit.problems.push(format!(
                    "saga {saga_id} trace {trace_id}: {}",
                    problems.join("; ")
                ));
            }
        }
    }
    audit
}

/// Keeps one of each set of identical copies (counting the extra ones); keeps every copy of
/// an id shared by different spans (so the tree check sees them), and names it.
fn dedupe(spans: Vec<ReceivedSpan>, audit: &mut TraceAudit) -> (Vec<ReceivedSpan>, Vec<String>) {
    let mut problems = Vec::new();
    let mut by_id: HashMap<String, Vec<ReceivedSpan>> = HashMap::new();
    for span in spans {
        by_id.entry(span.span_id.clone()).or_default().push(span);
    }
    let mut kept = Vec::new();
    for (id, mut copies) in by_id {
        let first = copies.remove(0);
        let (same, different): (Vec<_>, Vec<_>) = copies.into_iter().partition(|c| *c == first);
        if is_deferred(&first) {
            audit.reemitted_copies += same.len();
        } else {
            audit.other_identical_copies += same.len();
        }
        if !different.is_empty() {
            audit.conflicting_span_ids += 1;
            let names: Vec<&str> = different.iter().map(|s| s.name.as_str()).collect();
            problems.push(format!(
                "span id {id} shared by '{}' and different spans {names:?}",
                first.name
            ));
        }
        kept.push(first);
        kept.extend(different);
    }
    (kept, problems)
}

/// The saga-level shape: saga span covering its steps (a fire-and-forget one may outlast it),
/// compensations matching undos (none for a failed saga), and a completed saga's step spans,
/// one per step of the saga.
fn saga_problems(spans: &[ReceivedSpan], status: SagaStatus, undos: usize) -> Vec<String> {
    let mut problems = Vec::new();
    match spans.iter().find(|s| s.name == "saga checkout") {
        None => problems.push("no saga span".to_owned()),
        Some(saga) => {
            // A fire-and-forget step starts as the checkout ends and may outlast it.
            let follow_ups: Vec<String> = checkout_shared::Step::ALL
                .iter()
                .filter(|s| s.is_follow_up())
                .map(|s| format!("step {}", s.action_name()))
                .collect();
            let uncovered = spans
                .iter()
                .filter(|s| is_deferred(s) && s.name != saga.name)
                .filter(|s| {
                    let full_name = s.name.trim_end_matches(STARTED);
                    !follow_ups.iter().any(|f| f == full_name)
                })
                .any(|s| {
                    s.start_unix_nanos < saga.start_unix_nanos
                        || s.end_unix_nanos > saga.end_unix_nanos
                });
            if uncovered {
                problems.push("the saga span does not cover its steps".to_owned());
            }
        }
    }
    let compensations = spans.iter().filter(|s| is_compensation(s)).count();
    if matches!(status, SagaStatus::Compensated | SagaStatus::Failed) && compensations != undos {
        problems.push(format!(
            "{compensations} compensation spans for {undos} undos"
        ));
    }
    if status == SagaStatus::Completed {
        // One step span per step of the plan the saga ran under, as its saga span says.
        let plan = spans
            .iter()
            .find(|s| s.name == "saga checkout")
            .and_then(|s| s.attr("saga.plan"))
            .and_then(|plan| plan.parse::<PlanId>().ok())
            .unwrap_or(PlanId::CURRENT);
        for step in plan.steps() {
            let name = format!("step {}", step.action_name());
            let n = spans.iter().filter(|s| s.name == name).count();
            if n != 1 {
                problems.push(format!("{n} '{name}' spans in a completed saga"));
            }
        }
    }
    problems
}

#[cfg(test)]
#[path = "traces_tests.rs"]
mod tests;
