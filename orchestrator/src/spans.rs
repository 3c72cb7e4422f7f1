//! Saga and step spans, in two parts so that a saga's trace is one tree at every moment.
//!
//! ```text
//! publish checkout.requested             (client)
//! └ saga checkout started                 emitted when the saga starts: parents the rest
//!   ├ saga checkout                       emitted when the saga ends: start to end, outcome
//!   └ step payment.charge started         emitted when the step starts: parents its work
//!     ├ step payment.charge               emitted when the step ends: start to end, outcome
//!     └ publish checkout.cmd.payment.charge ─ process ... (worker)
//! ```
//!
//! Spans are exported when they end, so whatever parents the work must be out before the
//! work is: the short "started" spans are, the full-length ones cannot be. Every span of both
//! kinds is planned in the transition that makes it (ids and times stored in the saga row) and
//! emitted by whichever orchestrator process is alive then, before the command that names it
//! is sent. It is kept in the saga row until its export is confirmed, so a crash between the
//! transition and the export re-emits it rather than loses it.

use chrono::{DateTime, Utc};
use opentelemetry::trace::{
    Link, SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId, TraceState,
    Tracer as _,
};
use opentelemetry::{Context, KeyValue, global};
use serde::{Deserialize, Serialize};
use std::time::SystemTime;

use crate::machine::Finished;
use crate::store::SagaRow;
use checkout_shared::Phase;

/// The trace a saga belongs to and the ids of its saga-level span.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SagaTrace {
    /// The checkout's trace.
    pub trace_id: TraceId,
    /// The span the saga hangs under (the client's `publish checkout.requested`).
    pub parent_span_id: Option<SpanId>,
    /// The saga's "started" span, emitted when it starts: the parent of its steps' spans and
    /// of its full-length span.
    pub saga_span_id: SpanId,
    /// The sampling decision inherited from the client.
    pub sampled: bool,
}

impl SagaTrace {
    /// A context whose active span is `span_id` of this trace, for parenting children of a
    /// span that has not been emitted yet.
    pub fn context_of(&self, span_id: SpanId) -> Context {
        remote_context(self.trace_id, span_id, self.sampled)
    }
}

/// A context whose active span is the (possibly not yet emitted) span `span_id`.
fn remote_context(trace_id: TraceId, span_id: SpanId, sampled: bool) -> Context {
    let flags = if sampled {
        TraceFlags::SAMPLED
    } else {
        TraceFlags::default()
    };
    let sc = SpanContext::new(trace_id, span_id, flags, true, TraceState::default());
    Context::new().with_remote_span_context(sc)
}

/// A finished span, stored until its export is confirmed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedSpan {
    /// Span name.
    pub name: String,
    /// Its id, chosen when it began.
    pub span_id: String,
    /// Its parent, if any.
    pub parent_span_id: Option<String>,
    /// Its trace.
    pub trace_id: String,
    /// Whether to record it.
    pub sampled: bool,
    /// When it began.
    pub start: DateTime<Utc>,
    /// When it ended.
    pub end: DateTime<Utc>,
    /// Attributes.
    pub attributes: Vec<(String, String)>,
    /// Error status message, if it failed.
    pub error: Option<String>,
    /// A span it is linked to (a compensation's cause).
    pub link: Option<String>,
}

/// Emits a planned span with its stored ids and times.
pub fn emit(planned: &PlannedSpan) {
    if !planned.sampled {
        return;
    }
    let (Ok(trace_id), Ok(span_id)) = (
        TraceId::from_hex(&planned.trace_id),
        SpanId::from_hex(&planned.span_id),
    ) else {
        tracing::warn!(span = %planned.name, "stored span has invalid ids; not emitted");
        return;
    };
    let parent = match planned.parent_span_id.as_deref().map(SpanId::from_hex) {
        Some(Ok(parent)) => remote_context(trace_id, parent, true),
        _ => Context::new(),
    };
    let tracer = global::tracer("checkout-saga");
    let mut builder = tracer
        .span_builder(planned.name.clone())
        .with_kind(SpanKind::Internal)
        .with_start_time(SystemTime::from(planned.start))
        .with_attributes(
            planned
                .attributes
                .iter()
                .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
        );
    if let Some(Ok(link)) = planned.link.as_deref().map(SpanId::from_hex) {
        let sc = SpanContext::new(
            trace_id,
            link,
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        );
        builder = builder.with_links(vec![Link::with_context(sc)]);
    }
    let span = checkout_shared::telemetry::with_preset_ids(trace_id, span_id, || {
        tracer.build_with_context(builder, &parent)
    });
    let cx = Context::new().with_span(span);
    let span = cx.span();
    if let Some(reason) = &planned.error {
        span.set_status(Status::error(reason.clone()));
    }
    span.end_with_timestamp(SystemTime::from(planned.end));
}

/// Hex form of a span id.
pub fn hex(span_id: SpanId) -> String {
    span_id.to_string()
}

/// What ends the name of a "started" span: `saga checkout started`, `step payment.charge
/// started`, `compensate payment.charge started`.
pub const STARTED: &str = " started";

/// Whether `name` is the name of a "started" span (the short span that parents the work of a
/// saga or a step, emitted when it begins).
pub fn is_started(name: &str) -> bool {
    name.ends_with(STARTED)
}

/// The full-length span's name of the step or undo `step`/`phase`.
fn step_name(step: checkout_shared::Step, phase: Phase) -> String {
    let action = step.action_name();
    match phase {
        Phase::Do => format!("step {action}"),
        Phase::Undo => format!("compensate {action}"),
    }
}

/// The "started" span of the saga in `row`, emitted when it starts: a moment long, under the
/// client's publish span, the parent of everything the saga does.
pub fn saga_started_span(row: &SagaRow) -> PlannedSpan {
    PlannedSpan {
        name: format!("saga checkout{STARTED}"),
        span_id: hex(row.trace.saga_span_id),
        parent_span_id: row.trace.parent_span_id.map(hex),
        trace_id: row.trace.trace_id.to_string(),
        sampled: row.trace.sampled,
        start: row.started_at,
        end: row.started_at,
        attributes: vec![
            ("saga.id".into(), row.saga_id.to_string()),
            ("saga.name".into(), "checkout".into()),
            ("saga.plan".into(), row.state.plan.to_string()),
        ],
        error: None,
        link: None,
    }
}

/// The "started" span of the step (or undo) in hand in `row`, emitted when it begins: a
/// moment long, under the saga's "started" span, the parent of the step's commands (and so of
/// the workers' spans) and of its full-length span.
pub fn step_started_span(row: &SagaRow) -> PlannedSpan {
    let (step, phase) = (row.state.step(), row.state.phase);
    PlannedSpan {
        name: format!("{}{STARTED}", step_name(step, phase)),
        span_id: hex(row.step_span_id),
        parent_span_id: Some(hex(row.trace.saga_span_id)),
        trace_id: row.trace.trace_id.to_string(),
        sampled: row.trace.sampled,
        start: row.step_started_at,
        end: row.step_started_at,
        attributes: vec![
            ("saga.id".into(), row.saga_id.to_string()),
            ("checkout.step".into(), step.as_str().into()),
            ("saga.step".into(), step.as_str().into()),
            ("saga.phase".into(), phase.as_str().into()),
        ],
        error: None,
        link: None,
    }
}

/// The full-length span (id `span_id`) of the step (or undo) that `finished` ends: from the
/// step's start to `now`, under the step's "started" span, with its outcome.
pub fn step_span(
    row: &SagaRow,
    finished: &Finished,
    span_id: SpanId,
    now: DateTime<Utc>,
) -> PlannedSpan {
    let step = finished.step.as_str();
    let name = step_name(finished.step, finished.phase);
    let link = match finished.phase {
        Phase::Do => None,
        Phase::Undo => row.failed_span_id.map(hex),
    };
    let outcome = crate::observe::step_outcome(finished).as_str();
    let mut attributes: Vec<(String, String)> = vec![
        ("saga.id".into(), row.saga_id.to_string()),
        ("checkout.step".into(), step.into()),
        ("saga.step".into(), step.into()),
        ("saga.phase".into(), finished.phase.as_str().into()),
        ("saga.outcome".into(), outcome.into()),
    ];
    if let Err(reason) = &finished.result {
        attributes.push(("saga.failure_reason".into(), reason.clone()));
    }
    PlannedSpan {
        name,
        span_id: hex(span_id),
        parent_span_id: Some(hex(row.step_span_id)),
        trace_id: row.trace.trace_id.to_string(),
        sampled: row.trace.sampled,
        start: row.step_started_at,
        end: now,
        attributes,
        error: finished.result.clone().err(),
        link,
    }
}

/// The saga's full-length span (id `span_id`), from its start to `now`, under its "started"
/// span, with the business context a person debugging a checkout needs. The payment token is
/// deliberately absent: it is a secret.
pub fn saga_span(row: &SagaRow, span_id: SpanId, now: DateTime<Utc>) -> PlannedSpan {
    let outcome = row.state.status.as_str();
    let request = &row.state.data.request;
    let item_count: i64 = request.items.iter().map(|l| i64::from(l.quantity)).sum();
    let mut attributes: Vec<(String, String)> = vec![
        ("saga.id".into(), row.saga_id.to_string()),
        ("saga.name".into(), "checkout".into()),
        ("saga.plan".into(), row.state.plan.to_string()),
        ("saga.outcome".into(), outcome.into()),
        ("checkout.id".into(), request.checkout_id.to_string()),
        ("user.id".into(), request.customer_id.clone()),
        ("cart.item_count".into(), item_count.to_string()),
        (
            "checkout.amount_cents".into(),
            request.amount_cents.to_string(),
        ),
        ("checkout.currency".into(), request.currency.clone()),
        ("checkout.outcome".into(), outcome.into()),
    ];
    if let Some(reason) = &row.state.failure {
        attributes.push(("saga.failure_reason".into(), reason.clone()));
    }
    if let Some(step) = row.state.failure_step {
        attributes.push(("checkout.failure_step".into(), step.as_str().into()));
    }
    if let Some(code) = row.state.failure_code {
        attributes.push(("checkout.failure_reason".into(), code.as_str().into()));
    }
    PlannedSpan {
        name: "saga checkout".into(),
        span_id: hex(span_id),
        parent_span_id: Some(hex(row.trace.saga_span_id)),
        trace_id: row.trace.trace_id.to_string(),
        sampled: row.trace.sampled,
        start: row.started_at,
        end: now,
        attributes,
        error: None,
        link: None,
    }
}
