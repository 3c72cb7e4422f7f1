//! The saga executor's state machine: pure, with no transport and no store, so that every
//! path (failures at any step, duplicate and stale replies, lost commands, timeouts) is
//! tested here in memory.
//!
//! ```text
//!  running(0,do) ─ok─▶ running(1,do) ─ok─▶ running(2,do) ─ok─▶ completed ─▶ notification sent,
//!        │ no             │ no                  │ no / timed out     (follow-up: its reply is
//!        ▼                ▼                     ▼ undo from the       recorded, never waited
//!     failed         compensating(0,undo) ◀─ok─ compensating(1,undo) for, never compensated)
//!   (nothing to undo)     │ ok
//!                         ▼
//!   compensated ◀─────────┘
//!        ▲                 │ no reply for `stuck_after`: flagged, still retried
//!        └──────ok──────  stuck ◀─┐ re-sent at the capped interval; an operator's retry
//!                                 └─ sends it now
//! ```
//!
//! An undo has no refusal: whatever happens to it (lost, unanswered, a worker that cannot
//! reach its database), it is sent again until it succeeds. Only a business decision ends a
//! step; a failure to act never does.

use crate::saga::{CHECKOUT, SagaData, blocking_steps, index_of};
use checkout_shared::messages::Outcome;
use checkout_shared::{Phase, Step};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The whole state of one saga.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SagaState {
    /// Where it stands.
    pub status: Status,
    /// The index of the step in hand.
    pub cursor: usize,
    /// Doing or undoing it.
    pub phase: Phase,
    /// Sends of the current command so far, beyond the first.
    pub attempts: u32,
    /// Bumped when a command must be sent afresh rather than re-sent: its message id then
    /// changes, so JetStream's duplicate window does not drop it.
    pub generation: u32,
    /// Why the saga is compensating.
    pub failure: Option<String>,
    /// The step whose failure ended the checkout (for `checkout.failure_step`).
    #[serde(default)]
    pub failure_step: Option<Step>,
    /// The stable code of that failure: a refusal's code, or `timeout`.
    #[serde(default)]
    pub failure_code: Option<String>,
    /// Whether a fire-and-forget step's reply is still expected (the saga has completed; the
    /// step in hand is the follow-up).
    #[serde(default)]
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
    pub cursor: usize,
    /// Action or undo.
    pub phase: Phase,
    /// `Err(reason)` when it failed.
    pub result: Result<(), String>,
}

/// A log entry: the step concerned, the event and a detail.
pub type LogEntry = (Option<Step>, &'static str, Option<String>);

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
    /// The state of a new saga, about to send its first command.
    pub fn start(data: SagaData) -> Transition {
        let state = SagaState {
            status: Status::Running,
            cursor: 0,
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
            log: vec![(Some(CHECKOUT[0].step), "started", None)],
            state,
            finished: None,
            started: true,
            send: true,
            rearm: false,
        }
    }

    /// The step in hand.
    pub fn step(&self) -> Step {
        CHECKOUT[self.cursor.min(CHECKOUT.len() - 1)].step
    }

    /// The JetStream message id of the current command: the action key, then the generation
    /// once the command had to be sent afresh, then the attempt once a deadline re-sent it.
    ///
    /// A re-send after a crash (same state) keeps the id, so JetStream drops it if the first
    /// send got through. A deadline's re-send gets a new id: the first copy may be gone from
    /// the work queue (consumed, its reply lost) while its id is still in the duplicate
    /// window, and the worker answers a copy from its processed-message row anyway.
    pub fn msg_id(&self, saga_id: uuid::Uuid) -> String {
        let mut id = format!("{saga_id}.{}.{}", self.step(), self.phase);
        if self.generation > 0 {
            id.push_str(&format!(".g{}", self.generation));
        }
        if self.attempts > 0 {
            id.push_str(&format!(".r{}", self.attempts));
        }
        id
    }

    /// Applies `input`. `None` means the input changes nothing: a duplicate or stale reply,
    /// or an input for a saga that has ended.
    pub fn next(&self, input: &Input, policy: Policy) -> Option<Transition> {
        match input {
            Input::Reply {
                step,
                phase,
                outcome,
            } => {
                let current = (self.status.is_active() || self.follow_up)
                    && index_of(*step) == self.cursor
                    && *phase == self.phase;
                current.then(|| self.on_reply(outcome))
            }
            Input::Timeout { .. } if self.follow_up => Some(self.on_follow_up_timeout(policy)),
            Input::Timeout { waited } => self
                .status
                .is_active()
                .then(|| self.on_timeout(*waited, policy)),
            Input::OperatorRetry => (self.status == Status::Stuck).then(|| self.on_retry()),
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
                (CHECKOUT[self.cursor].record)(&mut next.data, *reference);
                let finished = self.finished(Ok(()));
                if self.cursor + 1 < blocking_steps() {
                    next.cursor += 1;
                    next.attempts = 0;
                    let log = vec![
                        (Some(step), "succeeded", None),
                        (Some(next.step()), "started", None),
                    ];
                    next.advance(log, finished)
                } else {
                    next.status = Status::Completed;
                    let log = vec![(Some(step), "succeeded", None), (None, "completed", None)];
                    next.complete(log, finished)
                }
            }
            (Phase::Do, Outcome::StepFailed { reason }) => {
                // The step said no, so it did not happen: undo the steps before it.
                next.failure_code = Some(reason.code.as_str().to_owned());
                let reason = reason.to_string();
                next.compensate_from(self.cursor, &reason, self.finished(Err(reason.clone())))
            }
            (Phase::Undo, Outcome::StepSucceeded { .. }) => {
                let finished = self.finished(Ok(()));
                let log = vec![(Some(step), "undo_finished", None)];
                next.undo_next(log, finished)
            }
            (Phase::Undo, Outcome::StepFailed { reason }) => {
                // Workers never refuse an undo; a failure reply can only come from an undo
                // command that could not be delivered. It is not a decision: keep the undo
                // pending, send it afresh at the next deadline, never give up on it.
                next.generation += 1;
                let log = vec![(Some(step), "undo_failed", Some(reason.to_string()))];
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
            return next.resend(vec![(Some(step), "retried", Some(detail))]);
        }
        // The action got no decision: it may have happened, so undo it too, from itself.
        let reason = format!(
            "{} {} got no reply after {} attempts",
            step, self.phase, policy.max_attempts
        );
        next.failure_code = Some("timeout".to_owned());
        next.compensate_from(self.cursor + 1, &reason, self.finished(Err(reason.clone())))
    }

    /// An undo with no success yet is sent again, however long it takes; past `stuck_after`
    /// the saga is flagged for an operator, once.
    fn resend_undo(mut self, waited: Duration, policy: Policy) -> Transition {
        let step = self.step();
        self.attempts = self.attempts.saturating_add(1);
        let detail = format!("no reply; re-sending (attempt {})", self.attempts + 1);
        let mut log = vec![(Some(step), "retried", Some(detail))];
        if self.status == Status::Compensating && waited >= policy.stuck_after {
            self.status = Status::Stuck;
            let reason = format!(
                "{step} undo has not succeeded for {}s; still retrying",
                waited.as_secs()
            );
            log.push((Some(step), "stuck", Some(reason)));
        }
        self.resend(log)
    }

    fn resend(self, log: Vec<LogEntry>) -> Transition {
        Transition {
            state: self,
            log,
            finished: None,
            started: false,
            send: true,
            rearm: false,
        }
    }

    /// Sends a flagged saga's undo now, afresh; it stays flagged until the undo succeeds.
    fn on_retry(&self) -> Transition {
        let mut next = self.clone();
        next.attempts = 0;
        next.generation += 1;
        let log = vec![(
            Some(self.step()),
            "retried",
            Some("operator retry".to_owned()),
        )];
        next.resend(log)
    }

    /// Starts undoing every step before `upto` (exclusive), last first.
    fn compensate_from(mut self, upto: usize, reason: &str, finished: Finished) -> Transition {
        let step = self.step();
        self.failure = Some(reason.to_owned());
        self.failure_step = Some(step);
        self.status = Status::Compensating;
        let log = vec![(Some(step), "failed", Some(reason.to_owned()))];
        if upto == 0 {
            // Refused at the first step: nothing happened, so nothing is compensated.
            self.status = Status::Failed;
            let mut log = log;
            log.push((None, "failed", Some(reason.to_owned())));
            return self.end(log, finished);
        }
        self.cursor = upto - 1;
        self.phase = Phase::Undo;
        self.attempts = 0;
        let mut log = log;
        log.push((Some(self.step()), "undo_started", None));
        self.advance(log, finished)
    }

    fn undo_next(mut self, mut log: Vec<LogEntry>, finished: Finished) -> Transition {
        if self.cursor == 0 {
            self.status = Status::Compensated;
            log.push((None, "compensated", self.failure.clone()));
            return self.end(log, finished);
        }
        self.cursor -= 1;
        self.attempts = 0;
        // The flag belongs to the undo that would not finish; the next one starts afresh.
        self.status = Status::Compensating;
        log.push((Some(self.step()), "undo_started", None));
        self.advance(log, finished)
    }

    fn advance(self, log: Vec<LogEntry>, finished: Finished) -> Transition {
        Transition {
            state: self,
            log,
            finished: Some(finished),
            started: true,
            send: true,
            rearm: false,
        }
    }

    fn end(self, log: Vec<LogEntry>, finished: Finished) -> Transition {
        Transition {
            state: self,
            log,
            finished: Some(finished),
            started: false,
            send: false,
            rearm: false,
        }
    }

    fn finished(&self, result: Result<(), String>) -> Finished {
        Finished {
            cursor: self.cursor,
            phase: self.phase,
            result,
        }
    }
}

mod follow_up;
mod status;

pub use status::Status;
#[cfg(test)]
mod tests;
