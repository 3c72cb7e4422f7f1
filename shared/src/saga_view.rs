//! A saga as its lifecycle events tell it: the one fold from events to state, which the
//! gateway's status and event stream and `checkout watch` share.
//!
//! ```text
//!  checkout.saga.<id>.started ─┐
//!  checkout.saga.<id>.step ────┼─▶ SagaView::apply ─▶ {state, current step, steps, reason}
//!  checkout.saga.<id>.<end> ───┘   (<end>: completed, compensated, failed, stuck, rejected)
//! ```
//!
//! Each event carries the saga's status and the step it now waits for, so the fold needs no
//! copy of the orchestrator's plan: a saga started under an older plan reads right. Events
//! of releases before those fields are read by the rules those releases followed.

use crate::messages::{LifecycleEvent, LifecycleKind, StepRef};
use crate::steps::{Phase, Step};
use crate::vocabulary::{FailureCode, RejectionCode, SagaStatus, StepOutcome};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// One finished action or undo.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRecord {
    /// The step.
    pub step: Step,
    /// Action or undo.
    pub phase: Phase,
    /// How it ended.
    pub outcome: StepOutcome,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A saga's progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SagaView {
    /// The saga.
    pub saga_id: Uuid,
    /// Where it stands.
    pub state: SagaStatus,
    /// The step it waits for, if any (after completion: a follow-up being sent).
    pub current_step: Option<Step>,
    /// Whether that is the step's action or its undo.
    pub current_phase: Option<Phase>,
    /// Every action and undo finished so far, in order.
    pub steps: Vec<StepRecord>,
    /// Why the checkout failed or is stuck.
    pub reason: Option<String>,
    /// Why the checkout failed, by code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_code: Option<FailureCode>,
    /// Why the door refused the checkout, by code (`reason` then says why in words).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejection: Option<RejectionCode>,
    /// The request's field the door refused, when one is at fault.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// The saga's trace.
    pub trace_id: String,
}

impl SagaView {
    /// A saga of which nothing is known yet but its id.
    pub fn new(saga_id: Uuid) -> Self {
        SagaView {
            saga_id,
            state: SagaStatus::Running,
            current_step: None,
            current_phase: None,
            steps: Vec::new(),
            reason: None,
            failure_code: None,
            rejection: None,
            field: None,
            trace_id: String::new(),
        }
    }

    /// Folds a saga's lifecycle events, in order.
    pub fn fold<'a>(saga_id: Uuid, events: impl IntoIterator<Item = &'a LifecycleEvent>) -> Self {
        let mut view = SagaView::new(saga_id);
        for event in events {
            view.apply(event);
        }
        view
    }

    /// The action or undo in hand.
    pub fn current(&self) -> Option<StepRef> {
        Some(StepRef {
            step: self.current_step?,
            phase: self.current_phase?,
        })
    }

    /// Takes in the next event.
    pub fn apply(&mut self, event: &LifecycleEvent) {
        self.trace_id.clone_from(&event.trace_id);
        if event.failure_code.is_some() {
            self.failure_code = event.failure_code;
        }
        if event.rejection.is_some() {
            self.rejection = event.rejection;
            self.field.clone_from(&event.field);
        }
        if event.status.is_none() {
            return self.apply_legacy(event);
        }
        self.state = event.status.unwrap_or(self.state);
        self.set_current(event.next);
        match (event.kind, event.step, event.phase) {
            (LifecycleKind::Step, Some(step), Some(phase)) => {
                let outcome = event
                    .outcome
                    .unwrap_or(legacy_outcome(phase, &event.detail));
                self.record(step, phase, outcome, &event.detail);
                if outcome == StepOutcome::Failed && phase == Phase::Do && !step.is_follow_up() {
                    self.reason = Some(event.detail.clone());
                }
            }
            (LifecycleKind::Started | LifecycleKind::Step, _, _) => {}
            (_, _, _) => {
                if !event.detail.is_empty() {
                    self.reason = Some(event.detail.clone());
                }
            }
        }
    }

    fn set_current(&mut self, next: Option<StepRef>) {
        self.current_step = next.map(|n| n.step);
        self.current_phase = next.map(|n| n.phase);
    }

    fn record(&mut self, step: Step, phase: Phase, outcome: StepOutcome, detail: &str) {
        self.steps.push(StepRecord {
            step,
            phase,
            outcome,
            reason: (outcome == StepOutcome::Failed).then(|| detail.to_owned()),
        });
    }

    /// Events of releases that did not say the saga's status: the state follows the kind, and
    /// the step in hand is not known.
    fn apply_legacy(&mut self, event: &LifecycleEvent) {
        self.set_current(None);
        match (event.kind, event.step, event.phase) {
            (LifecycleKind::Step, Some(step), Some(phase)) => {
                let outcome = legacy_outcome(phase, &event.detail);
                self.record(step, phase, outcome, &event.detail);
                let fails = outcome == StepOutcome::Failed && phase == Phase::Do;
                if fails && !step.is_follow_up() {
                    self.state = SagaStatus::Compensating;
                    self.reason = Some(event.detail.clone());
                }
            }
            (LifecycleKind::Started | LifecycleKind::Step, _, _) => {}
            (kind, _, _) => {
                self.state = legacy_state(kind).unwrap_or(self.state);
                if !event.detail.is_empty() {
                    self.reason = Some(event.detail.clone());
                }
            }
        }
    }
}

/// Older releases reported a success as `ok` and a failure by its reason.
fn legacy_outcome(phase: Phase, detail: &str) -> StepOutcome {
    StepOutcome::of(phase, detail == "ok")
}

fn legacy_state(kind: LifecycleKind) -> Option<SagaStatus> {
    match kind {
        LifecycleKind::Started | LifecycleKind::Step => None,
        LifecycleKind::Completed => Some(SagaStatus::Completed),
        LifecycleKind::Compensated => Some(SagaStatus::Compensated),
        LifecycleKind::Failed => Some(SagaStatus::Failed),
        LifecycleKind::Stuck => Some(SagaStatus::Stuck),
        LifecycleKind::Rejected => Some(SagaStatus::Rejected),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: LifecycleKind, status: SagaStatus) -> LifecycleEvent {
        LifecycleEvent {
            saga_id: Uuid::nil(),
            kind,
            status: Some(status),
            step: None,
            phase: None,
            outcome: None,
            next: None,
            failure_code: None,
            rejection: None,
            field: None,
            detail: String::new(),
            trace_id: "t".into(),
        }
    }

    fn step(step: Step, phase: Phase, outcome: StepOutcome, status: SagaStatus) -> LifecycleEvent {
        LifecycleEvent {
            step: Some(step),
            phase: Some(phase),
            outcome: Some(outcome),
            detail: match outcome {
                StepOutcome::Failed => "card_declined: no".into(),
                _ => "ok".into(),
            },
            ..event(LifecycleKind::Step, status)
        }
    }

    fn next(mut event: LifecycleEvent, step: Step, phase: Phase) -> LifecycleEvent {
        event.next = Some(StepRef { step, phase });
        event
    }

    #[test]
    fn a_compensated_checkout_reads_step_by_step() {
        use {Phase::*, SagaStatus::*, Step::*, StepOutcome::Succeeded};
        const FAILED: StepOutcome = StepOutcome::Failed;
        let events = [
            next(event(LifecycleKind::Started, Running), Inventory, Do),
            next(step(Inventory, Do, Succeeded, Running), Payment, Do),
            next(step(Payment, Do, FAILED, Compensating), Inventory, Undo),
        ];
        let view = SagaView::fold(Uuid::nil(), &events);
        assert_eq!(view.state, Compensating);
        assert_eq!(
            view.current(),
            Some(StepRef {
                step: Inventory,
                phase: Undo
            })
        );
        assert_eq!(view.reason.as_deref(), Some("card_declined: no"));
        assert_eq!(view.steps.len(), 2);
        assert_eq!(view.steps[1].outcome, FAILED);

        let mut end = event(LifecycleKind::Compensated, Compensated);
        end.detail = "card_declined: no".into();
        let view = SagaView::fold(
            Uuid::nil(),
            events.iter().chain([
                &step(Inventory, Undo, StepOutcome::Compensated, Compensated),
                &end,
            ]),
        );
        assert_eq!((view.state, view.current()), (Compensated, None));
        assert_eq!(view.steps.len(), 3);
    }

    #[test]
    fn a_failed_follow_up_leaves_the_checkout_completed() {
        use {Phase::*, SagaStatus::*, Step::*, StepOutcome::Succeeded};
        const FAILED: StepOutcome = StepOutcome::Failed;
        let events = [
            next(step(Order, Do, Succeeded, Completed), Notification, Do),
            next(event(LifecycleKind::Completed, Completed), Notification, Do),
            step(Notification, Do, FAILED, Completed),
        ];
        let view = SagaView::fold(Uuid::nil(), &events);
        assert_eq!((view.state, view.current()), (Completed, None));
        assert_eq!(
            view.reason, None,
            "a follow-up's failure is not the checkout's"
        );
        assert_eq!(view.steps.last().map(|s| s.step), Some(Notification));
    }

    #[test]
    fn a_checkout_refused_at_the_door_reads_rejected_with_its_code_field_and_reason() {
        let mut refused = event(LifecycleKind::Rejected, SagaStatus::Rejected);
        refused.rejection = Some(RejectionCode::UnknownSku);
        refused.field = Some("items[1].sku".into());
        refused.detail = r#"unknown sku "SKU-NOPE""#.into();
        // A second delivery of the request gets the same event: the view stays the same.
        let view = SagaView::fold(Uuid::nil(), [&refused, &refused]);
        assert_eq!((view.state, view.current()), (SagaStatus::Rejected, None));
        assert!(view.state.is_terminal() && refused.kind.is_terminal());
        assert_eq!(view.rejection, Some(RejectionCode::UnknownSku));
        assert_eq!(view.field.as_deref(), Some("items[1].sku"));
        assert_eq!(view.reason.as_deref(), Some(r#"unknown sku "SKU-NOPE""#));
        assert!(view.steps.is_empty(), "nothing ran");
        // On the wire, the code is the gateway's `reason` word.
        let json = serde_json::to_value(&view).unwrap();
        assert_eq!(json["state"], "rejected");
        assert_eq!(json["rejection"], "unknown_sku");
        assert_eq!(json["field"], "items[1].sku");
        // An event without its status (of a release before it) still reads rejected.
        refused.status = None;
        let view = SagaView::fold(Uuid::nil(), [&refused]);
        assert_eq!(view.state, SagaStatus::Rejected);
    }

    #[test]
    fn events_of_older_releases_still_fold() {
        let raw = r#"[
            {"saga_id":"00000000-0000-0000-0000-000000000000","kind":"step","step":"payment",
             "phase":"do","detail":"card_declined: no","trace_id":"t"},
            {"saga_id":"00000000-0000-0000-0000-000000000000","kind":"compensated","step":null,
             "phase":null,"detail":"card_declined: no","trace_id":"t"}]"#;
        let events: Vec<LifecycleEvent> = serde_json::from_str(raw).unwrap();
        let view = SagaView::fold(Uuid::nil(), &events[..1]);
        assert_eq!(view.state, SagaStatus::Compensating);
        let view = SagaView::fold(Uuid::nil(), &events);
        assert_eq!(view.state, SagaStatus::Compensated);
        assert_eq!(view.steps[0].outcome, StepOutcome::Failed);
    }
}
