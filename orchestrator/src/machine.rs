//! The saga executor's state machine: pure, with no transport and no store, so that every
//! path (failures at any step, duplicate and stale replies, lost commands, timeouts) is
//! tested here in memory.
//!
//! ```text
//!  running(inventory) ─ok─▶ running(payment) ─ok─▶ running(order) ─ok─▶ completed ─▶ follow-ups
//!        │ no                  │ no                    │ no / timed out   (the confirmation: its
//!        ▼                     ▼                       ▼ undo from the    reply is recorded, never
//!     failed         compensating(inventory) ◀─ok─ compensating(payment)  waited for, never
//!   (nothing to undo)          │ ok                                        compensated)
//!                              ▼
//!   compensated ◀──────────────┘
//!        ▲                 │ no reply for `stuck_after`: flagged, still retried
//!        └──────ok──────  stuck ◀─┐ re-sent at the capped interval; an operator's retry
//!                                 └─ sends it now
//! ```
//!
//! A saga is where it is by name (its plan, its step, its phase), never by a position in a
//! list: what it does next is read from the plan it started under, which a new release
//! keeps. Compensation walks that plan backwards and skips steps with nothing to undo.
//!
//! An undo has no refusal: whatever happens to it (lost, unanswered, a worker that cannot
//! reach its database), it is sent again until it succeeds. Only a business decision ends a
//! step; a failure to act never does.

use crate::saga::{PlanId, SagaData};
use checkout_shared::messages::{Outcome, StepRef};
use checkout_shared::{CommandId, FailureCode, LogEvent, Phase, Step};
use serde::{Deserialize, Serialize};
use std::time::Duration;

pub use answers::ReplyRefusal;
pub use checkout_shared::SagaStatus;

/// The whole state of one saga.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "wire::StateWire")]
pub struct SagaState {
    /// Where it stands.
    pub status: SagaStatus,
    /// The plan it started under, and finishes under.
    pub plan: PlanId,
    /// The step in hand, one of its plan's.
    pub step: Step,
    /// Doing or undoing it.
    pub phase: Phase,
    /// Sends of the current command so far, beyond the first.
    pub attempts: u32,
    /// Bumped when a command is sent afresh at once rather than re-sent at a deadline (an
    /// operator's retry): its message id then changes, so JetStream's duplicate window does
    /// not drop it, and its attempts count from 0 again. Only the current generation's
    /// replies are applied ([`SagaState::answers`]).
    pub generation: u32,
    /// Why the saga is compensating.
    pub failure: Option<String>,
    /// The step whose failure ended the checkout (for `checkout.failure_step`).
    pub failure_step: Option<Step>,
    /// The stable code of that failure.
    pub failure_code: Option<FailureCode>,
    /// Whether a follow-up step's reply is still expected (the saga has completed; the step
    /// in hand is the follow-up).
    pub follow_up: bool,
    /// What the steps created.
    pub data: SagaData,
}

/// What can happen to a saga.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A worker replied.
    Reply {
        /// For which step.
        step: Step,
        /// Action or undo.
        phase: Phase,
        /// How it went.
        outcome: Outcome,
    },
    /// The current command's deadline passed with no reply.
    Timeout {
        /// How long ago the current step (or undo) began, across all its sends.
        waited: Duration,
    },
    /// An operator asked a stuck saga to try its undo now.
    OperatorRetry,
}

/// The bounds of the executor.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Sends of an action (the first included) before the executor gives up on it and
    /// undoes it. Undos are never given up on.
    pub max_attempts: u32,
    /// How long an undo may go without success before the saga is flagged stuck.
    pub stuck_after: Duration,
}

/// A step span that ends with this transition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    /// The step.
    pub step: Step,
    /// Action or undo.
    pub phase: Phase,
    /// `Err(reason)` when it failed.
    pub result: Result<(), String>,
}

/// A log entry: the step concerned, the event and a detail.
pub type LogEntry = (Option<Step>, LogEvent, Option<String>);

/// The effects of one input on one saga.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// The state afterwards.
    pub state: SagaState,
    /// What to append to the saga log.
    pub log: Vec<LogEntry>,
    /// The step span that ends, if any.
    pub finished: Option<Finished>,
    /// Whether a new step (or undo) begins, with a new span.
    pub started: bool,
    /// Whether to send the current command of the new state.
    pub send: bool,
    /// Whether to wait for the next deadline without sending now (the deadline is re-armed).
    pub rearm: bool,
}

impl SagaState {
    /// The state of a new saga under `plan`, about to send its first command.
    pub fn start(plan: PlanId, data: SagaData) -> Transition {
        let state = SagaState {
            status: SagaStatus::Running,
            plan,
            step: plan.first(),
            phase: Phase::Do,
            attempts: 0,
            generation: 0,
            failure: None,
            failure_step: None,
            failure_code: None,
            follow_up: false,
            data,
        };
        Transition {
            log: vec![(Some(plan.first()), LogEvent::Started, None)],
            state,
            finished: None,
            started: true,
            send: true,
            rearm: false,
        }
    }

    /// The step in hand.
    pub fn step(&self) -> Step {
        self.step
    }

    /// The action or undo the saga waits for, if any.
    pub fn waiting_for(&self) -> Option<StepRef> {
        (self.status.is_active() || self.follow_up).then_some(StepRef {
            step: self.step,
            phase: self.phase,
        })
    }

    /// The JetStream message id of the current command: the action key, then the generation
    /// once the command had to be sent afresh, then the attempt once a deadline re-sent it.
    ///
    /// A re-send after a crash (same state) keeps the id, so JetStream drops it if the first
    /// send got through. A deadline's re-send gets a new id: the first copy may be gone from
    /// the work queue (consumed, its reply lost) while its id is still in the duplicate
    /// window, and the worker answers a copy from its processed-message row anyway.
    pub fn msg_id(&self, saga_id: uuid::Uuid) -> String {
        self.command_id(saga_id).to_string()
    }

    /// The current command: its action key and its place in the attempt series, which its
    /// reply must carry back ([`SagaState::answers`]).
    pub fn command_id(&self, saga_id: uuid::Uuid) -> CommandId {
        CommandId {
            saga_id,
            step: self.step,
            phase: self.phase,
            generation: self.generation,
            attempt: self.attempts,
        }
    }

    /// Applies `input`. `None` means the input changes nothing: a duplicate or stale reply,
    /// or an input for a saga that has ended. The state afterwards keeps the payment token
    /// only if the saga may still send the charge.
    pub fn next(&self, input: &Input, policy: Policy) -> Option<Transition> {
        let mut transition = self.decide(input, policy)?;
        transition.state.forget_token_unless_charging();
        Some(transition)
    }

    /// Clears the payment token unless a command the saga may still send carries it: the
    /// saga runs forward and the charge is the step in hand or one still ahead. Once the
    /// charge has decided (or will never be sent) the token is a secret the saga no longer
    /// needs, and the refund needs only the charge's reference.
    fn forget_token_unless_charging(&mut self) {
        let forward = self.status == SagaStatus::Running && self.phase == Phase::Do;
        let mut ahead = self.plan.steps().iter().skip_while(|s| **s != self.step);
        let may_charge =
            forward && !self.follow_up && ahead.any(|s| crate::saga::carries_token(*s, Phase::Do));
        if !may_charge && !self.data.request.payment_token.is_empty() {
            self.data.request.payment_token.clear();
        }
    }

    fn decide(&self, input: &Input, policy: Policy) -> Option<Transition> {
        match input {
            Input::Reply {
                step,
                phase,
                outcome,
            } => {
                let current = (self.status.is_active() || self.follow_up)
                    && *step == self.step
                    && *phase == self.phase;
                current.then(|| self.on_reply(outcome))
            }
            Input::Timeout { .. } if self.follow_up => Some(self.on_follow_up_timeout(policy)),
            Input::Timeout { waited } => self
                .status
                .is_active()
                .then(|| self.on_timeout(*waited, policy)),
            Input::OperatorRetry => (self.status == SagaStatus::Stuck).then(|| self.on_retry()),
        }
    }

    fn on_reply(&self, outcome: &Outcome) -> Transition {
        let mut next = self.clone();
        let step = self.step();
        if self.follow_up {
            return next.follow_up_done(outcome);
        }
        match (self.phase, outcome) {
            (Phase::Do, Outcome::StepSucceeded { reference }) => {
                next.data.record(step, *reference);
                let finished = self.finished(Ok(()));
                match self.plan.after(step).filter(|s| !s.is_follow_up()) {
                    Some(following) => {
                        next.step = following;
                        next.attempts = 0;
                        let log = vec![
                            (Some(step), LogEvent::Succeeded, None),
                            (Some(following), LogEvent::Started, None),
                        ];
                        next.advance(log, finished)
                    }
                    None => {
                        next.status = SagaStatus::Completed;
                        let log = vec![
                            (Some(step), LogEvent::Succeeded, None),
                            (None, LogEvent::Completed, None),
                        ];
                        next.complete(log, finished)
                    }
                }
            }
            (Phase::Do, Outcome::StepFailed { reason }) => {
                // The step said no, so it did not happen: undo the steps before it.
                next.failure_code = Some(FailureCode::Refused(reason.code));
                let reason = reason.to_string();
                let undo = self.plan.undoable_before(step, false);
                next.compensate_from(undo, &reason, self.finished(Err(reason.clone())))
            }
            (Phase::Undo, Outcome::StepSucceeded { .. }) => {
                let finished = self.finished(Ok(()));
                let log = vec![(Some(step), LogEvent::UndoFinished, None)];
                next.undo_next(log, finished)
            }
            (Phase::Undo, Outcome::StepFailed { reason }) => {
                // Workers never refuse an undo; a failure reply can only come from an undo
                // command that could not be delivered. It is not a decision: keep the undo
                // pending, send it again at the next deadline, never give up on it. That
                // re-send is the next attempt, under a message id of its own; no new
                // generation, which would name a command not sent yet (the reply gate would
                // take an answer to it) and turn the answers to the copies already sent into
                // superseded ones.
                let log = vec![(Some(step), LogEvent::UndoFailed, Some(reason.to_string()))];
                Transition {
                    state: next,
                    log,
                    finished: None,
                    started: false,
                    send: false,
                    rearm: true,
                }
            }
        }
    }

    fn on_timeout(&self, waited: Duration, policy: Policy) -> Transition {
        let mut next = self.clone();
        let step = self.step();
        if self.phase == Phase::Undo {
            return next.resend_undo(waited, policy);
        }
        if self.attempts + 1 < policy.max_attempts {
            next.attempts += 1;
            let detail = format!("no reply; re-sending (attempt {})", next.attempts + 1);
            return next.resend(vec![(Some(step), LogEvent::Retried, Some(detail))]);
        }
        // The action got no decision: it may have happened, so undo it too, from itself.
        let reason = format!(
            "{} {} got no reply after {} attempts",
            step, self.phase, policy.max_attempts
        );
        next.failure_code = Some(FailureCode::Timeout);
        let undo = self.plan.undoable_before(step, true);
        next.compensate_from(undo, &reason, self.finished(Err(reason.clone())))
    }

    pub(super) fn resend(self, log: Vec<LogEntry>) -> Transition {
        Transition {
            state: self,
            log,
            finished: None,
            started: false,
            send: true,
            rearm: false,
        }
    }

    pub(super) fn advance(self, log: Vec<LogEntry>, finished: Finished) -> Transition {
        Transition {
            state: self,
            log,
            finished: Some(finished),
            started: true,
            send: true,
            rearm: false,
        }
    }

    pub(super) fn end(self, log: Vec<LogEntry>, finished: Finished) -> Transition {
        Transition {
            state: self,
            log,
            finished: Some(finished),
            started: false,
            send: false,
            rearm: false,
        }
    }

    pub(super) fn finished(&self, result: Result<(), String>) -> Finished {
        Finished {
            step: self.step,
            phase: self.phase,
            result,
        }
    }
}

mod answers;
mod follow_up;
mod undo;
mod wire;

#[cfg(test)]
mod tests;
