//! What a transition writes: the row afterwards, the spans it finishes, its log entries and
//! its next deadline.

use super::Executor;
use crate::machine::{SagaStatus, Transition};
use crate::ports::{SagaStore, Transport};
use crate::spans::{saga_span, step_span, step_started_span};
use crate::store::{SagaRow, Write};
use checkout_shared::LogEvent;
use checkout_shared::Phase;
use checkout_shared::telemetry::new_span_id;
use chrono::{DateTime, Utc};

impl<S: SagaStore, T: Transport> Executor<S, T> {
    /// The row and writes a transition implies, with the spans it finishes.
    pub(super) fn plan(
        &self,
        before: &SagaRow,
        t: &Transition,
        now: DateTime<Utc>,
    ) -> (SagaRow, Write) {
        let mut after = before.clone();
        after.state = t.state.clone();
        after.version += 1;
        after.updated_at = now;
        let mut pending = Vec::new();
        if let Some(finished) = &t.finished {
            let span_id = new_span_id();
            pending.push(step_span(before, finished, span_id, now));
            if finished.phase == Phase::Do && finished.result.is_err() {
                // Compensations link to the failed step's full-length span, which has the
                // error status and the reason.
                after.failed_span_id = Some(span_id);
            }
        }
        if t.started {
            after.step_span_id = new_span_id();
            after.step_started_at = now;
            // Out before the step's command is sent: it parents the command's spans.
            pending.push(step_started_span(&after));
        }
        match after.state.status {
            // The saga span ends when the saga does, once: a fire-and-forget step's reply
            // that comes later changes nothing about it.
            SagaStatus::Completed | SagaStatus::Compensated | SagaStatus::Failed
                if before.state.status.is_active() =>
            {
                pending.push(saga_span(&after, new_span_id(), now))
            }
            SagaStatus::Completed | SagaStatus::Compensated | SagaStatus::Failed => {}
            SagaStatus::Stuck if before.state.status != SagaStatus::Stuck => {
                after.stuck_reason = flag_reason(t);
            }
            SagaStatus::Stuck => {}
            _ => after.stuck_reason = None,
        }
        let deadline_at = (t.send || t.rearm).then(|| self.deadline(now, after.state.attempts));
        (
            after,
            Write {
                log: t.log.clone(),
                pending_spans: pending,
                deadline_at,
            },
        )
    }

    pub(super) fn deadline(&self, now: DateTime<Utc>, attempts: u32) -> DateTime<Utc> {
        let backoff = self
            .timing
            .step_timeout
            .saturating_mul(2u32.saturating_pow(attempts.min(16)));
        let wait = backoff.min(self.timing.max_step_timeout);
        now + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::seconds(60))
    }
}

fn flag_reason(t: &Transition) -> Option<String> {
    t.log
        .iter()
        .rev()
        .find(|(_, event, _)| *event == LogEvent::Stuck)
        .and_then(|(_, _, detail)| detail.clone())
}
