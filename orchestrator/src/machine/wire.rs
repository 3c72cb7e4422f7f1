//! A saga's state as stored, read back whatever release wrote it.
//!
//! Releases before plans kept the step in hand as a position in the one list of steps there
//! was (`cursor`) and no plan: such a state is read as the first plan's, whose order that
//! list was, so a saga in flight across the upgrade goes on with the step it was at. A state
//! whose step its plan does not have is refused rather than guessed at.

use super::SagaState;
use crate::saga::{PlanId, SagaData};
use checkout_shared::{FailureCode, Phase, SagaStatus, Step};
use serde::Deserialize;

/// The plan every state written before plans existed ran under.
const PLAN_BEFORE_PLANS: PlanId = PlanId::CheckoutV1;

#[derive(Deserialize)]
pub(super) struct StateWire {
    status: SagaStatus,
    #[serde(default)]
    plan: Option<PlanId>,
    #[serde(default)]
    step: Option<Step>,
    #[serde(default)]
    cursor: Option<usize>,
    phase: Phase,
    attempts: u32,
    generation: u32,
    failure: Option<String>,
    #[serde(default)]
    failure_step: Option<Step>,
    #[serde(default)]
    failure_code: Option<String>,
    #[serde(default)]
    follow_up: bool,
    data: SagaData,
}

/// Why a stored state cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Neither a step nor a position.
    #[error("a saga state names no step")]
    NoStep,
    /// A position past the end of the plan.
    #[error("a saga state's position {0} is past the end of plan {1}")]
    PastTheEnd(usize, PlanId),
    /// A step the plan does not run.
    #[error("a saga state's step {0} is not one of plan {1}'s")]
    NotInPlan(Step, PlanId),
}

impl TryFrom<StateWire> for SagaState {
    type Error = StateError;

    fn try_from(wire: StateWire) -> Result<Self, Self::Error> {
        let plan = wire.plan.unwrap_or(PLAN_BEFORE_PLANS);
        let step = match (wire.step, wire.cursor) {
            (Some(step), _) => step,
            (None, Some(cursor)) => *plan
                .steps()
                .get(cursor)
                .ok_or(StateError::PastTheEnd(cursor, plan))?,
            (None, None) => return Err(StateError::NoStep),
        };
        if !plan.contains(step) {
            return Err(StateError::NotInPlan(step, plan));
        }
        Ok(SagaState {
            status: wire.status,
            plan,
            step,
            phase: wire.phase,
            attempts: wire.attempts,
            generation: wire.generation,
            failure: wire.failure,
            failure_step: wire.failure_step,
            // A code this release does not know is dropped, not a reason to lose the saga.
            failure_code: wire
                .failure_code
                .and_then(|code| code.parse::<FailureCode>().ok()),
            follow_up: wire.follow_up,
            data: wire.data,
        })
    }
}
