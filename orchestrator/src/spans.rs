//! Saga and step spans whose ids and start times are chosen when they begin and stored with
//! the saga, and which are emitted when they end, by whichever orchestrator process is alive
//! then. A finished span is kept in the saga row until its export is confirmed, so a crash
//! between the transition and the export re-emits it rather than loses it.

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
    /// The span the saga span hangs under (the orchestrator's `process checkout.requested`).
    pub parent_span_id: Option<SpanId>,
    /// The saga-level span.
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

/// The span of a step (or undo) that `finished` ends.
pub fn step_span(row: &SagaRow, finished: &Finished, now: DateTime<Utc>) -> PlannedSpan {
    let step = finished.step.as_str();
    let action = finished.step.action_name();
    let (name, link) = match finished.phase {
        Phase::Do => (format!("step {action}"), None),
        Phase::Undo => (format!("compensate {action}"), row.failed_span_id.map(hex)),
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
        span_id: hex(row.step_span_id),
        parent_span_id: Some(hex(row.trace.saga_span_id)),
        trace_id: row.trace.trace_id.to_string(),
        sampled: row.trace.sampled,
        start: row.step_started_at,
        end: now,
        attributes,
        error: finished.result.clone().err(),
        link,
    }
}

/// The saga-level span, ended `now`, with the business context a person debugging a
/// checkout needs. The payment token is deliberately absent: it is a secret.
pub fn saga_span(row: &SagaRow, now: DateTime<Utc>) -> PlannedSpan {
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
        span_id: hex(row.trace.saga_span_id),
        parent_span_id: row.trace.parent_span_id.map(hex),
        trace_id: row.trace.trace_id.to_string(),
        sampled: row.trace.sampled,
        start: row.started_at,
        end: now,
        attributes,
        error: None,
        link: None,
    }
}
