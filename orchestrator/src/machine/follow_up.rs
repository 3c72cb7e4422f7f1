//! The fire-and-forget step that follows a completed checkout (the confirmation): sent when
//! the checkout completes, its reply recorded whichever way it goes, re-sent within the
//! action's bound when it goes unanswered, and never a reason to fail or compensate.

use super::{Finished, LogEntry, Policy, SagaState, Transition};
use checkout_shared::LogEvent;
use checkout_shared::messages::Outcome;

impl SagaState {
    /// The checkout has completed; its plan's follow-ups come next, if it has any: the
    /// first is sent now, under a span of its own, and nobody waits for it.
    pub(super) fn complete(self, log: Vec<LogEntry>, finished: Finished) -> Transition {
        let first = self.plan.first_follow_up();
        self.follow_up_next(first, log, finished)
    }

    fn follow_up_next(
        mut self,
        next: Option<checkout_shared::Step>,
        mut log: Vec<LogEntry>,
        finished: Finished,
    ) -> Transition {
        let Some(next) = next else {
            self.follow_up = false;
            return self.end(log, finished);
        };
        self.step = next;
        self.attempts = 0;
        self.follow_up = true;
        log.push((Some(next), LogEvent::Started, None));
        self.advance(log, finished)
    }

    /// A follow-up's reply: recorded either way, never a reason to compensate; the next
    /// follow-up, if any, goes out.
    pub(super) fn follow_up_done(self, outcome: &Outcome) -> Transition {
        let step = self.step();
        let (result, entry) = match outcome {
            Outcome::StepSucceeded { .. } => (Ok(()), (Some(step), LogEvent::Succeeded, None)),
            Outcome::StepFailed { reason } => {
                let reason = reason.to_string();
                (
                    Err(reason.clone()),
                    (Some(step), LogEvent::Failed, Some(reason)),
                )
            }
        };
        let finished = self.finished(result);
        let next = self.plan.after(step);
        self.follow_up_next(next, vec![entry], finished)
    }

    /// A fire-and-forget step without a reply is re-sent within the same bound as an action,
    /// then given up on: the checkout stands.
    pub(super) fn on_follow_up_timeout(&self, policy: Policy) -> Transition {
        let mut next = self.clone();
        let step = self.step();
        if self.attempts + 1 < policy.max_attempts {
            next.attempts += 1;
            let detail = format!("no reply; re-sending (attempt {})", next.attempts + 1);
            return next.resend(vec![(Some(step), LogEvent::Retried, Some(detail))]);
        }
        let reason = format!("{step} got no reply after {} attempts", policy.max_attempts);
        let finished = self.finished(Err(reason.clone()));
        let log = vec![(Some(step), LogEvent::Failed, Some(reason))];
        next.follow_up_next(self.plan.after(step), log, finished)
    }
}
