//! What the gateway says about a checkout: its status (`GET /checkouts/{id}`) and each of its
//! server-sent events, as the gateway's own types, with their OpenAPI schemas.
//!
//! ```text
//!  gateway.accepted_checkouts ─▶ CheckoutStatus::accepted   state `accepted`
//!  SagaView (the shared fold)  ─▶ CheckoutStatus::from       state running, completed, ...
//!  LifecycleEvent              ─▶ CheckoutEvent::from        the data of one event
//! ```
//!
//! The shared types ([`SagaView`], [`LifecycleEvent`]) know nothing of HTTP, OpenAPI or of a
//! checkout the gateway accepted but the orchestrator has not started: `accepted` is a state
//! word of the gateway alone ([`CheckoutState`]), not one of the saga's. Each conversion names
//! every field of the shared type, so a field added there does not compile here until it is
//! carried (and so described); the enums' schemas list their variants from the enums
//! themselves (strum's `VARIANTS`). Apart from `accepted`, the JSON is the shared types' own
//! (a test holds it).

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use checkout_shared::messages::{LifecycleEvent, LifecycleKind, RefusalCode, StepRef};
use checkout_shared::saga_view::{SagaView, StepRecord};
use checkout_shared::{FailureCode, Phase, RejectionCode, SagaStatus, Step, StepOutcome};
use serde::{Serialize, Serializer};
use strum::VariantArray;
use utoipa::ToSchema;
use utoipa::openapi::schema::{Object, ObjectBuilder, SchemaType, Type};
use uuid::Uuid;

/// Where a checkout stands, as the gateway says it: `accepted` until the saga's first event,
/// then the saga's own status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckoutState {
    /// The gateway accepted it (202); the orchestrator has not started it yet.
    Accepted,
    /// The saga's status, from its lifecycle events.
    Saga(SagaStatus),
}

impl CheckoutState {
    /// The text form of [`CheckoutState::Accepted`].
    pub const ACCEPTED: &'static str = "accepted";

    /// The state's one text form.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckoutState::Accepted => Self::ACCEPTED,
            CheckoutState::Saga(status) => status.as_str(),
        }
    }
}

impl Serialize for CheckoutState {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// A checkout's progress (`GET /checkouts/{id}`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CheckoutStatus {
    /// The checkout's saga id.
    saga_id: Uuid,
    /// Where it stands.
    #[schema(schema_with = state_schema)]
    state: CheckoutState,
    /// The step it waits for, if any (after completion: a follow-up being sent).
    #[schema(schema_with = step_or_null, required = true)]
    current_step: Option<Step>,
    /// Whether that is the step's action (`do`) or its undo.
    #[schema(schema_with = phase_or_null, required = true)]
    current_phase: Option<Phase>,
    /// Every action and undo finished so far, in order.
    steps: Vec<StepDone>,
    /// Why the checkout failed or is stuck.
    #[schema(required = true)]
    reason: Option<String>,
    /// Why the checkout failed, by code.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = failure_code_schema)]
    failure_code: Option<FailureCode>,
    /// Why the door refused the checkout, by code (`reason` then says why in words).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = rejection_schema)]
    rejection: Option<RejectionCode>,
    /// The request's field the door refused, when one is at fault (`items[1].sku`).
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<String>,
    /// The checkout's trace (the caller's, when it sent a `traceparent`).
    trace_id: String,
}

impl CheckoutStatus {
    /// A checkout the gateway accepted and whose saga has said nothing yet.
    pub fn accepted(saga_id: Uuid, trace_id: String) -> Self {
        CheckoutStatus {
            saga_id,
            state: CheckoutState::Accepted,
            current_step: None,
            current_phase: None,
            steps: Vec::new(),
            reason: None,
            failure_code: None,
            rejection: None,
            field: None,
            trace_id,
        }
    }
}

impl From<SagaView> for CheckoutStatus {
    fn from(view: SagaView) -> Self {
        let SagaView {
            saga_id,
            state,
            current_step,
            current_phase,
            steps,
            reason,
            failure_code,
            rejection,
            field,
            trace_id,
        } = view;
        CheckoutStatus {
            saga_id,
            state: CheckoutState::Saga(state),
            current_step,
            current_phase,
            steps: steps.into_iter().map(StepDone::from).collect(),
            reason,
            failure_code,
            rejection,
            field,
            trace_id,
        }
    }
}

/// One finished action or undo.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StepDone {
    /// The step.
    #[schema(schema_with = step_schema)]
    step: Step,
    /// Action (`do`) or undo.
    #[schema(schema_with = phase_schema)]
    phase: Phase,
    /// How it ended.
    #[schema(schema_with = outcome_schema)]
    outcome: StepOutcome,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

impl From<StepRecord> for StepDone {
    fn from(record: StepRecord) -> Self {
        let StepRecord {
            step,
            phase,
            outcome,
            reason,
        } = record;
        StepDone {
            step,
            phase,
            outcome,
            reason,
        }
    }
}

/// The data of one server-sent event of `GET /checkouts/{id}/events` (the event's name is
/// its `kind`): a lifecycle event of the saga.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CheckoutEvent {
    /// The checkout's saga id.
    saga_id: Uuid,
    /// What happened; also the event's name.
    #[schema(schema_with = kind_schema)]
    kind: LifecycleKind,
    /// The saga's status after it.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = status_schema)]
    status: Option<SagaStatus>,
    /// The step concerned, for `step` events.
    #[schema(schema_with = step_or_null, required = true)]
    step: Option<Step>,
    /// Action or undo, for `step` events.
    #[schema(schema_with = phase_or_null, required = true)]
    phase: Option<Phase>,
    /// How the step's action or undo ended, for `step` events.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = outcome_schema)]
    outcome: Option<StepOutcome>,
    /// The action or undo the saga now waits for, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<StepInHand>,
    /// Why the checkout failed, by code, once it has.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = failure_code_schema)]
    failure_code: Option<FailureCode>,
    /// Why the door refused the checkout, by code, for `rejected` events.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = rejection_schema)]
    rejection: Option<RejectionCode>,
    /// The request's field at fault, for `rejected` events that name one.
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<String>,
    /// A human-readable detail (the failure reason), or `ok`.
    detail: String,
    /// The saga's trace id.
    trace_id: String,
}

impl CheckoutEvent {
    /// Whether this is the saga's last event (the stream ends with it): it has ended and
    /// waits for nothing more. A completed checkout's `completed` says it still waits for its
    /// confirmation (`next`), so its stream ends with that step's event instead, and names
    /// every step the saga ran. An ended saga's event without a `next` (from a release before
    /// `next`) is its last, as it was then.
    pub fn is_last(&self) -> bool {
        let ended = self.kind.is_terminal() || self.status.is_some_and(|s| s.is_terminal());
        ended && self.next.is_none()
    }

    /// The event's name.
    pub fn name(&self) -> &'static str {
        self.kind.as_str()
    }
}

impl From<LifecycleEvent> for CheckoutEvent {
    fn from(event: LifecycleEvent) -> Self {
        let LifecycleEvent {
            saga_id,
            kind,
            status,
            step,
            phase,
            outcome,
            next,
            failure_code,
            rejection,
            field,
            detail,
            trace_id,
        } = event;
        CheckoutEvent {
            saga_id,
            kind,
            status,
            step,
            phase,
            outcome,
            next: next.map(StepInHand::from),
            failure_code,
            rejection,
            field,
            detail,
            trace_id,
        }
    }
}

/// An action or undo a saga waits for.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
pub struct StepInHand {
    /// The step.
    #[schema(schema_with = step_schema)]
    step: Step,
    /// Action (`do`) or undo.
    #[schema(schema_with = phase_schema)]
    phase: Phase,
}

impl From<StepRef> for StepInHand {
    fn from(next: StepRef) -> Self {
        let StepRef { step, phase } = next;
        StepInHand { step, phase }
    }
}

/// A JSON response of `status` (axum's `Json` is not built in: its feature is off).
pub fn json(status: StatusCode, body: &impl Serialize) -> Response {
    let body = serde_json::to_string(body).unwrap_or_default();
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

mod schemas;
use schemas::*;

#[cfg(test)]
mod tests {
    use super::*;
    use checkout_shared::saga_view::StepRecord;

    #[test]
    fn the_gateway_says_what_the_shared_types_say_and_accepted_before_them() {
        let event = LifecycleEvent {
            saga_id: Uuid::new_v4(),
            kind: LifecycleKind::Step,
            status: Some(SagaStatus::Compensating),
            step: Some(Step::Payment),
            phase: Some(Phase::Do),
            outcome: Some(StepOutcome::Failed),
            next: Some(StepRef {
                step: Step::Inventory,
                phase: Phase::Undo,
            }),
            failure_code: Some(FailureCode::Refused(RefusalCode::CardDeclined)),
            rejection: None,
            field: None,
            detail: "card_declined: no".into(),
            trace_id: "t".into(),
        };
        let rejected = LifecycleEvent {
            kind: LifecycleKind::Rejected,
            status: Some(SagaStatus::Rejected),
            rejection: Some(RejectionCode::UnknownSku),
            field: Some("items[0].sku".into()),
            ..event.clone()
        };
        let sparse = LifecycleEvent {
            kind: LifecycleKind::Started,
            status: None,
            step: None,
            phase: None,
            outcome: None,
            next: None,
            failure_code: None,
            ..event.clone()
        };
        for event in [event.clone(), sparse, rejected] {
            let ours = serde_json::to_value(CheckoutEvent::from(event.clone())).unwrap();
            assert_eq!(ours, serde_json::to_value(&event).unwrap());
        }
        let mut view = SagaView::fold(event.saga_id, [&event]);
        view.steps.push(StepRecord {
            step: Step::Inventory,
            phase: Phase::Undo,
            outcome: StepOutcome::Compensated,
            reason: None,
        });
        let ours = serde_json::to_value(CheckoutStatus::from(view.clone())).unwrap();
        assert_eq!(ours, serde_json::to_value(&view).unwrap());

        let accepted = CheckoutStatus::accepted(event.saga_id, "t".into());
        let json = serde_json::to_value(accepted).unwrap();
        assert_eq!(json["state"], "accepted");
        assert_eq!(json["steps"], serde_json::json!([]));
        assert_eq!(json["current_step"], serde_json::Value::Null);
    }
}
