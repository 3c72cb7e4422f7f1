//! Each check of the trace audit, seen to fire on a trace with exactly that violation planted
//! in a whole one, and to stay silent on the whole trace.

use super::*;
use checkout_harness::SpanKind;
use checkout_shared::{Phase, Step};

fn span(trace: &str, id: &str, parent: Option<&str>, name: &str, service: &str) -> ReceivedSpan {
    ReceivedSpan {
        trace_id: trace.to_owned(),
        span_id: format!("{trace}-{id}"),
        parent_span_id: parent.map(|p| format!("{trace}-{p}")),
        name: name.to_owned(),
        kind: SpanKind::Internal,
        service_name: service.to_owned(),
        attributes: Default::default(),
        error: false,
        status_message: String::new(),
        start_unix_nanos: 0,
        end_unix_nanos: 0,
        links: vec![],
        events: vec![],
    }
}

fn timed(mut span: ReceivedSpan, start: u64, end: u64) -> ReceivedSpan {
    (span.start_unix_nanos, span.end_unix_nanos) = (start, end);
    span
}

/// A step's "started" span at `start` (id `<do|undo>-<step>`) with, beneath it, its
/// full-length span (`step <action>` or `compensate <action>`, id `...-full`) over
/// `[start, end]`, its command's publish, and the worker's process span beneath that.
fn step_spans(trace: &str, step: Step, phase: Phase, start: u64, end: u64) -> Vec<ReceivedSpan> {
    let (prefix, tag) = match phase {
        Phase::Do => ("step", "do"),
        Phase::Undo => ("compensate", "undo"),
    };
    let name = format!("{prefix} {}", step.action_name());
    let id = format!("{tag}-{step}");
    let verb = step.verb(phase).unwrap_or("none");
    let subject = format!("checkout.cmd.{step}.{verb}");
    let message = [(
        "messaging.message.id".to_owned(),
        format!("{trace}.{step}.{tag}"),
    )];
    let mut publish = span(
        trace,
        &format!("publish-{id}"),
        Some(&id),
        &format!("publish {subject}"),
        "orchestrator",
    );
    publish.kind = SpanKind::Producer;
    publish.attributes = message.clone().into();
    let mut process = span(
        trace,
        &format!("process-{id}"),
        Some(&format!("publish-{id}")),
        &format!("process {subject}"),
        step.as_str(),
    );
    process.kind = SpanKind::Consumer;
    process.attributes = message.into();
    let started = format!("{name} started");
    vec![
        timed(
            span(trace, &id, Some("saga"), &started, "orchestrator"),
            start,
            start,
        ),
        timed(
            span(
                trace,
                &format!("{id}-full"),
                Some(&id),
                &name,
                "orchestrator",
            ),
            start,
            end,
        ),
        timed(publish, start + 1, start + 2),
        timed(process, start + 3, end - 1),
    ]
}

/// The client's publish, the saga's "started" span at 10 (id `saga`) and beneath it the
/// saga span over `[10, 1000]` (id `saga-full`).
fn saga_spans(trace: &str) -> Vec<ReceivedSpan> {
    let mut root = span(trace, "root", None, "publish checkout.requested", "client");
    root.kind = SpanKind::Producer;
    let started = span(
        trace,
        "saga",
        Some("root"),
        "saga checkout started",
        "orchestrator",
    );
    let mut saga = span(
        trace,
        "saga-full",
        Some("saga"),
        "saga checkout",
        "orchestrator",
    );
    saga.attributes = [("saga.plan".to_owned(), PlanId::CURRENT.to_string())].into();
    vec![
        timed(root, 0, 10),
        timed(started, 10, 10),
        timed(saga, 10, 1000),
    ]
}

/// A whole trace of a completed saga: every step of the plan, a follow-up ending after the
/// saga span (which it may).
fn completed(trace: &str) -> Vec<ReceivedSpan> {
    let mut spans = saga_spans(trace);
    let mut at = 100;
    for &step in PlanId::CURRENT.steps() {
        let end = if step.is_follow_up() { 1500 } else { at + 50 };
        spans.extend(step_spans(trace, step, Phase::Do, at, end));
        at += 100;
    }
    spans
}

/// A whole trace of a saga compensated after its card was declined: one undo.
fn compensated(trace: &str) -> Vec<ReceivedSpan> {
    let mut spans = saga_spans(trace);
    spans.extend(step_spans(trace, Step::Inventory, Phase::Do, 100, 150));
    let mut payment = step_spans(trace, Step::Payment, Phase::Do, 200, 250);
    payment[1].error = true;
    spans.extend(payment);
    spans.extend(step_spans(trace, Step::Inventory, Phase::Undo, 300, 350));
    spans
}

fn saga(trace: &str, status: SagaStatus, undos: usize) -> AuditedSaga {
    AuditedSaga {
        saga_id: Uuid::new_v4(),
        trace_id: trace.to_owned(),
        status,
        undos,
    }
}

/// A completed saga (trace `c`) and a compensated one (trace `k`), both whole.
fn whole() -> (Vec<AuditedSaga>, Vec<ReceivedSpan>) {
    let sagas = vec![
        saga("c", SagaStatus::Completed, 0),
        saga("k", SagaStatus::Compensated, 1),
    ];
    let mut spans = completed("c");
    spans.extend(compensated("k"));
    (sagas, spans)
}

/// Audits the whole traces after `plant`, and checks that the planted violation made exactly
/// one trace incomplete with a problem that says `expected`.
fn planted(
    expected: &str,
    plant: impl FnOnce(&mut Vec<AuditedSaga>, &mut Vec<ReceivedSpan>),
) -> TraceAudit {
    let (mut sagas, mut spans) = whole();
    plant(&mut sagas, &mut spans);
    let audit = audit_spans(&sagas, spans);
    assert_eq!(audit.incomplete, 1, "{expected}: {audit:#?}");
    assert!(
        audit.problems.iter().any(|p| p.contains(expected)),
        "'{expected}' not reported: {audit:#?}"
    );
    audit
}

fn id(trace: &str, id: &str) -> String {
    format!("{trace}-{id}")
}

fn find<'a>(spans: &'a mut [ReceivedSpan], span_id: &str) -> &'a mut ReceivedSpan {
    spans
        .iter_mut()
        .find(|s| s.span_id == span_id)
        .unwrap_or_else(|| panic!("no span {span_id}"))
}

fn remove(spans: &mut Vec<ReceivedSpan>, span_id: &str) -> ReceivedSpan {
    let at = spans.iter().position(|s| s.span_id == span_id);
    spans.remove(at.unwrap_or_else(|| panic!("no span {span_id}")))
}

#[test]
fn whole_traces_pass_the_audit() {
    let (sagas, spans) = whole();
    let audit = audit_spans(&sagas, spans);
    assert_eq!(audit.incomplete, 0, "{audit:#?}");
    assert!(audit.problems.is_empty(), "{audit:#?}");
    assert_eq!(audit.conflicting_span_ids, 0);
    assert_eq!(audit.unprocessed_commands, 0);
    assert_eq!(audit.reemitted_copies + audit.other_identical_copies, 0);
}

#[test]
fn a_completed_saga_missing_any_step_span_of_its_plan_is_reported() {
    for &step in PlanId::CURRENT.steps() {
        let name = format!("step {}", step.action_name());
        let audit = planted(
            &format!("0 '{name}' spans in a completed saga"),
            |_, spans| {
                // Its started span parents its command: only the full-length span is missing.
                remove(spans, &id("c", &format!("do-{step}-full")));
            },
        );
        // Nothing else is wrong with the trace.
        assert_eq!(audit.problems.len(), 1, "{audit:#?}");
        assert_eq!(audit.problems[0].matches("; ").count(), 0, "{audit:#?}");
    }
}

#[test]
fn a_completed_saga_with_a_step_span_twice_is_reported() {
    planted(
        "2 'step payment.charge' spans in a completed saga",
        |_, spans| {
            let mut again = find(spans, &id("c", "do-payment-full")).clone();
            again.span_id = id("c", "do-payment-again");
            spans.push(again);
        },
    );
}

#[test]
fn a_trace_that_lost_a_parent_is_incomplete() {
    planted("which is not among the spans", |_, spans| {
        remove(spans, &id("c", "do-order"));
    });
}

#[test]
fn a_trace_whose_work_hangs_under_a_full_length_span_is_incomplete_until_it_ends() {
    // The shape before "started" spans: the work under the step's full-length span, which is
    // out only once the step ends. Mid-step, the command's spans are orphans.
    planted("which is not among the spans", |_, spans| {
        find(spans, &id("c", "publish-do-order")).parent_span_id = Some(id("c", "do-order-full"));
        remove(spans, &id("c", "do-order-full"));
    });
    planted("which is not among the spans", |_, spans| {
        remove(spans, &id("k", "saga"));
    });
}

#[test]
fn a_trace_without_its_root_is_incomplete() {
    let audit = planted("expected exactly one root span, found 0", |_, spans| {
        remove(spans, &id("k", "root"));
    });
    assert!(
        audit.problems[0].contains("not among the spans"),
        "{audit:#?}"
    );
}

#[test]
fn a_trace_with_two_roots_is_incomplete() {
    planted("expected exactly one root span, found 2", |_, spans| {
        spans.push(span("k", "stray", None, "stray", "client"));
    });
}

#[test]
fn a_saga_with_no_spans_at_all_is_incomplete() {
    planted("no spans to check", |sagas, _| {
        sagas.push(saga("never-exported", SagaStatus::Compensated, 0));
    });
}

#[test]
fn a_trace_without_its_saga_span_is_incomplete() {
    let audit = planted("no saga span", |_, spans| {
        remove(spans, &id("k", "saga-full"));
    });
    assert_eq!(audit.problems[0].matches("; ").count(), 0, "{audit:#?}");
}

#[test]
fn a_step_span_outside_its_saga_span_is_incomplete() {
    // An awaited step may not outlast its saga (the follow-up in the whole trace does).
    planted("the saga span does not cover its steps", |_, spans| {
        find(spans, &id("c", "do-order-full")).end_unix_nanos = 1001;
    });
    planted("the saga span does not cover its steps", |_, spans| {
        find(spans, &id("k", "undo-inventory-full")).start_unix_nanos = 5;
    });
}

#[test]
fn compensation_spans_other_than_the_undos_are_incomplete() {
    planted("1 compensation spans for 2 undos", |sagas, _| {
        sagas[1].undos = 2;
    });
    // A failed saga had nothing to undo.
    planted("1 compensation spans for 0 undos", |sagas, _| {
        (sagas[1].status, sagas[1].undos) = (SagaStatus::Failed, 0);
    });
}

#[test]
fn a_command_published_and_never_processed_is_incomplete() {
    let audit = planted("published, never processed", |_, spans| {
        remove(spans, &id("k", "process-undo-inventory"));
    });
    assert_eq!(audit.unprocessed_commands, 1);
}

#[test]
fn different_spans_sharing_an_id_are_a_violation() {
    // A worker's span and an orchestrator's deferred span, each given a different twin.
    for (trace, of) in [
        ("c", "process-do-payment"),
        ("k", "do-payment-full"),
        ("k", "do-payment"),
    ] {
        let audit = planted("shared by", |_, spans| {
            let mut twin = find(spans, &id(trace, of)).clone();
            twin.end_unix_nanos += 1;
            spans.push(twin);
        });
        assert_eq!(audit.conflicting_span_ids, 1, "{audit:#?}");
        assert_eq!(audit.reemitted_copies + audit.other_identical_copies, 0);
    }
}

#[test]
fn identical_copies_of_a_span_are_counted_not_a_violation() {
    let (sagas, mut spans) = whole();
    let deferred = find(&mut spans, &id("c", "do-payment-full")).clone();
    let started = find(&mut spans, &id("c", "do-payment")).clone();
    let other = find(&mut spans, &id("k", "process-do-payment")).clone();
    spans.extend([deferred.clone(), deferred, started, other]);
    let audit = audit_spans(&sagas, spans);
    assert_eq!(audit.incomplete, 0, "{audit:#?}");
    assert_eq!(audit.conflicting_span_ids, 0);
    assert_eq!(
        (audit.reemitted_copies, audit.other_identical_copies),
        (3, 1)
    );
}
