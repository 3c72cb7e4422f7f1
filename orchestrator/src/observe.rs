//! What operators see of saga transitions besides spans: metrics and log lines, recorded
//! once per transition, after it commits.
//!
//! ```text
//!  executor::apply ─ commit ─▶ committed(before, after, transition)
//!                                 ├─ checkout.step.duration / compensations / abandoned
//!                                 ├─ checkout.sagas / duration / value on a terminal state
//!                                 └─ log lines in the context of the (deferred) step or saga span
//!  poll_in_flight ─ every few seconds: count of running + compensating rows ─▶ checkout.in_flight
//! ```
//!
//! Counting after the commit means each transition is counted by exactly the one process
//! whose commit made it (the version check serialises orchestrators), never by one that lost a
//! race or rolled back. `checkout.in_flight` is not a sum of +1/-1 per process at all: a
//! process killed after counting a start loses its series with it, while the process that
//! counts the end keeps its -1, so such a sum drifts for good. It is read from the saga table
//! instead, which every orchestrator reports identically (dashboards take the `max`).

use crate::machine::{Finished, SagaStatus, Transition};
use crate::store::SagaRow;
use checkout_shared::metrics::{self, SagaOutcome};
use checkout_shared::{Phase, StepOutcome};
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often the saga table is counted for `checkout.in_flight`.
pub const IN_FLIGHT_POLL: Duration = Duration::from_secs(2);

/// How a step span ends: the `saga.outcome` of step spans and of `checkout.step.duration`.
pub fn step_outcome(finished: &Finished) -> StepOutcome {
    StepOutcome::of(finished.phase, finished.result.is_ok())
}

/// The outcome a transition ends a saga with, if it does.
fn saga_outcome(before: SagaStatus, after: SagaStatus) -> Option<SagaOutcome> {
    if !before.is_active() {
        return None;
    }
    match after {
        SagaStatus::Completed => Some(SagaOutcome::Completed),
        SagaStatus::Compensated => Some(SagaOutcome::Compensated),
        SagaStatus::Failed => Some(SagaOutcome::Failed),
        // Stuck is a flag on a saga whose undo is still being retried, not an end; a
        // rejected checkout never became a saga (counted as `checkout.rejections`).
        SagaStatus::Running
        | SagaStatus::Compensating
        | SagaStatus::Stuck
        | SagaStatus::Rejected => None,
    }
}

fn since(start: DateTime<Utc>, end: DateTime<Utc>) -> Duration {
    (end - start).to_std().unwrap_or_default()
}

/// Records a committed transition from `before` to `after`.
///
/// Log lines are written with the OpenTelemetry context of the span they are about (the step's,
/// the compensation's or the saga's "started" span, out from their start), which the log
/// bridge stamps on the record: so a saga's logs are found by its trace id, and on a span a
/// trace UI already shows, even when the transition was driven by a deadline (whose own span
/// is not part of the saga's trace).
pub fn committed(before: &SagaRow, after: &SagaRow, t: &Transition) {
    let m = metrics::get();
    let saga_id = after.saga_id;
    let now = after.updated_at;
    if let Some(finished) = &t.finished {
        let step = finished.step;
        let outcome = step_outcome(finished);
        let took = since(before.step_started_at, now);
        m.step_finished(step, finished.phase, outcome, took);
        let _cx = before.trace.context_of(before.step_span_id).attach();
        match (finished.phase, &finished.result) {
            // A fire-and-forget step ends after its checkout: counted, never abandoning it.
            (Phase::Do, result) if step.is_follow_up() => {
                m.notification(if result.is_ok() { "sent" } else { "failed" });
                if let Err(reason) = result {
                    tracing::warn!(%saga_id, %step, %reason, "confirmation not sent; the checkout stands");
                }
            }
            (Phase::Do, Err(reason)) => {
                m.abandoned(step);
                tracing::warn!(%saga_id, %step, %reason, "step failed; compensating");
            }
            (Phase::Undo, Ok(())) => {
                m.compensated(step);
                tracing::info!(%saga_id, %step, "compensation done");
            }
            (Phase::Undo, Err(reason)) => {
                tracing::error!(%saga_id, %step, %reason, "compensation failed");
            }
            (Phase::Do, Ok(())) => {}
        }
    }
    if t.started && after.state.phase == Phase::Undo {
        let _cx = after.trace.context_of(after.step_span_id).attach();
        let step = after.state.step();
        tracing::info!(%saga_id, %step, "compensation started");
    }
    if let Some(outcome) = saga_outcome(before.state.status, after.state.status) {
        let amount = after.state.data.request.amount_cents;
        m.saga_finished(outcome, since(after.started_at, now), amount);
        let _cx = after.trace.context_of(after.trace.saga_span_id).attach();
        let outcome = outcome.as_str();
        if outcome == "completed" {
            tracing::info!(%saga_id, outcome, "saga ended");
        } else {
            let reason = after.state.failure.as_deref().unwrap_or_default();
            tracing::warn!(%saga_id, outcome, %reason, "saga ended");
        }
    }
}

/// Counts active sagas every [`IN_FLIGHT_POLL`] for `checkout.in_flight`, until `shutdown`.
pub async fn poll_in_flight(pool: PgPool, shutdown: CancellationToken) {
    // Negative until the first count: reporting 0 before knowing would be a lie.
    let count = Arc::new(AtomicI64::new(-1));
    metrics::get().observe_in_flight(count.clone());
    let mut tick = tokio::time::interval(IN_FLIGHT_POLL);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let counted: Result<i64, _> = sqlx::query_scalar(
            "SELECT count(*) FROM saga.sagas WHERE status IN ('running', 'compensating', 'stuck')",
        )
        .fetch_one(&pool)
        .await;
        match counted {
            Ok(n) => count.store(n, Ordering::Relaxed),
            Err(err) => tracing::debug!(error = %err, "counting sagas in flight failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_transition_out_of_an_active_state_ends_a_saga() {
        use SagaStatus::*;
        assert_eq!(
            saga_outcome(Running, Completed),
            Some(SagaOutcome::Completed)
        );
        assert_eq!(
            saga_outcome(Compensating, Compensated),
            Some(SagaOutcome::Compensated)
        );
        assert_eq!(
            saga_outcome(Compensating, Stuck),
            None,
            "flagged, not ended"
        );
        assert_eq!(saga_outcome(Running, Compensating), None);
        assert_eq!(saga_outcome(Running, Failed), Some(SagaOutcome::Failed));
        assert_eq!(
            saga_outcome(Completed, Completed),
            None,
            "a follow-up's reply does not end the saga again"
        );
        assert_eq!(saga_outcome(Completed, Completed), None);
        assert_eq!(saga_outcome(Stuck, Compensating), None);
        assert_eq!(
            saga_outcome(Stuck, Compensated),
            Some(SagaOutcome::Compensated)
        );
    }
}
