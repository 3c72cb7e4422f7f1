//! The fire-and-forget step that follows a completed checkout (the confirmation): sent when
//! the checkout completes, its reply recorded whichever way it goes, re-sent within the
//! action's bound when it goes unanswered, and never a reason to fail or compensate.

use super::{Finished, LogEntry, Policy, SagaState, Transition};
use crate::saga::CHECKOUT;
use checkout_shared::messages::Outcome;

impl SagaState {
    /// The checkout has completed; a fire-and-forget step follows, if the saga has one: it
    /// is sent now, under a span of its own, and nobody waits for it.
    pub(super) fn complete(mut self, mut log: Vec<LogEntry>, finished: Finished) -> Transition {
        if self.cursor + 1 >= CHECKOUT.len() {
            return self.end(log, finished);
        }
        self.cursor += 1;
        self.attempts = 0;
        self.follow_up = true;
        log.push((Some(self.step()), "started", None));
        self.advance(log, finished)
    }

    /// A fire-and-forget step's reply: recorded either way, never a reason to compensate.
    pub(super) fn follow_up_done(mut self, outcome: &Outcome) -> Transition {
        let step = self.step();
        self.follow_up = false;
        let (result, log) = match outcome {
            Outcome::StepSucceeded { .. } => (Ok(()), (Some(step), "succeeded", None)),
            Outcome::StepFailed { reason } => {
                let reason = reason.to_string();
                (Err(reason.clone()), (Some(step), "failed", Some(reason)))
            }
        };
        let finished = self.finished(result);
        self.end(vec![log], finished)
    }

    /// A fire-and-forget step without a reply is re-sent within the same bound as an action,
    /// then given up on: the checkout stands.
    pub(super) fn on_follow_up_timeout(&self, policy: Policy) -> Transition {
        let mut next = self.clone();
        let step = self.step();
        if self.attempts + 1 < policy.max_attempts {
            next.attempts += 1;
            let detail = format!("no reply; re-sending (attempt {})", next.attempts + 1);
            return next.resend(vec![(Some(step), "retried", Some(detail))]);
        }
        next.follow_up = false;
        let reason = format!("{step} got no reply after {} attempts", policy.max_attempts);
        let finished = self.finished(Err(reason.clone()));
        next.end(vec![(Some(step), "failed", Some(reason))], finished)
    }
}
