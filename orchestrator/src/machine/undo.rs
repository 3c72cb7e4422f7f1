//! The way back: a failed checkout's undos, walked backwards through the saga's own plan
//! (steps without an undo skipped), each re-sent until it succeeds, flagged stuck past the
//! policy's bound, and hurried by an operator's retry.

use super::{Finished, LogEntry, Policy, SagaState, SagaStatus, Transition};
use checkout_shared::{LogEvent, Phase, Step};
use std::time::Duration;

impl SagaState {
    /// An undo with no success yet is sent again, however long it takes; past `stuck_after`
    /// the saga is flagged for an operator, once.
    pub(super) fn resend_undo(mut self, waited: Duration, policy: Policy) -> Transition {
        let step = self.step();
        self.attempts = self.attempts.saturating_add(1);
        let detail = format!("no reply; re-sending (attempt {})", self.attempts + 1);
        let mut log = vec![(Some(step), LogEvent::Retried, Some(detail))];
        if self.status == SagaStatus::Compensating && waited >= policy.stuck_after {
            self.status = SagaStatus::Stuck;
            let reason = format!(
                "{step} undo has not succeeded for {}s; still retrying",
                waited.as_secs()
            );
            log.push((Some(step), LogEvent::Stuck, Some(reason)));
        }
        self.resend(log)
    }

    /// Sends a flagged saga's undo now, afresh; it stays flagged until the undo succeeds.
    pub(super) fn on_retry(&self) -> Transition {
        let mut next = self.clone();
        next.attempts = 0;
        next.generation += 1;
        let log = vec![(
            Some(self.step()),
            LogEvent::Retried,
            Some("operator retry".to_owned()),
        )];
        next.resend(log)
    }

    /// Starts undoing from `undo` backwards, the saga having failed at the step in hand;
    /// with nothing to undo, the saga ends failed.
    pub(super) fn compensate_from(
        mut self,
        undo: Option<Step>,
        reason: &str,
        finished: Finished,
    ) -> Transition {
        let step = self.step();
        self.failure = Some(reason.to_owned());
        self.failure_step = Some(step);
        let mut log = vec![(Some(step), LogEvent::Failed, Some(reason.to_owned()))];
        let Some(undo) = undo else {
            // Nothing that happened needs undoing.
            self.status = SagaStatus::Failed;
            log.push((None, LogEvent::Failed, Some(reason.to_owned())));
            return self.end(log, finished);
        };
        self.status = SagaStatus::Compensating;
        self.step = undo;
        self.phase = Phase::Undo;
        self.attempts = 0;
        log.push((Some(undo), LogEvent::UndoStarted, None));
        self.advance(log, finished)
    }

    pub(super) fn undo_next(mut self, mut log: Vec<LogEntry>, finished: Finished) -> Transition {
        let Some(undo) = self.plan.undoable_before(self.step, false) else {
            self.status = SagaStatus::Compensated;
            log.push((None, LogEvent::Compensated, self.failure.clone()));
            return self.end(log, finished);
        };
        self.step = undo;
        self.attempts = 0;
        // The flag belongs to the undo that would not finish; the next one starts afresh.
        self.status = SagaStatus::Compensating;
        log.push((Some(undo), LogEvent::UndoStarted, None));
        self.advance(log, finished)
    }
}
