//! The executor: applies inputs to stored sagas and carries out what each transition implies.
//!
//! A transition is written first (row and log, all or nothing, only over the version it was
//! planned from: no lock is held, and a write that finds the version moved is planned again),
//! then its command is sent with the deduplicating message id. A crash in between is healed by the
//! step deadline or by recovery at start-up, which re-send what the stored state implies.
//!
//! The executor is generic over its [`SagaStore`] and [`Transport`]: PostgreSQL and JetStream
//! in production, in-memory fakes in its tests.

use crate::machine::{Input, Policy, SagaState, SagaStatus, Transition};
use crate::ports::{Locked, Planned, SagaStore, Transport};
use crate::postgres::PgStore;
use crate::saga::{PlanId, SagaData};
use crate::spans::{self, SagaTrace};
use crate::store::{SagaRow, Write};
use crate::transport::NatsTransport;
use checkout_shared::messages::{LifecycleKind, StepRef};
use checkout_shared::messaging;
use checkout_shared::telemetry::{SpanFlusher, new_span_id};
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use std::time::Duration;
use tokio::sync::mpsc;
use uuid::Uuid;

/// Why an input could not be applied now; the message carrying it is retried.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The saga store failed.
    #[error("saga store: {0}")]
    Store(#[from] sqlx::Error),
    /// The command could not be sent (the deadline re-sends it).
    #[error(transparent)]
    Publish(#[from] messaging::PublishFailed),
    /// A message could not be serialised: a bug, never sent as an empty body.
    #[error("serialising {what}: {source}")]
    Serialize {
        /// Which message.
        what: &'static str,
        /// Why.
        source: serde_json::Error,
    },
}

/// Deadlines and bounds.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// How long a command waits for its reply before it is re-sent.
    pub step_timeout: Duration,
    /// The longest wait, however many re-sends.
    pub max_step_timeout: Duration,
    /// Sends of an action before the executor undoes it (undos are never given up on).
    pub max_attempts: u32,
    /// How long an undo may go without success before its saga is flagged stuck.
    pub stuck_after: Duration,
}

impl Timing {
    fn policy(&self) -> Policy {
        Policy {
            max_attempts: self.max_attempts,
            stuck_after: self.stuck_after,
        }
    }
}

/// Drives sagas: shared by the consumers, the deadline scanner and operators' tools.
#[derive(Clone)]
pub struct Executor<S = PgStore, T = NatsTransport> {
    store: S,
    transport: T,
    timing: Timing,
    exported: mpsc::Sender<(Uuid, i64)>,
}

impl Executor {
    /// An executor over PostgreSQL and NATS, and the receiver of (saga, version) pairs whose
    /// finished spans were emitted; [`Executor::confirm_exports`] drains it.
    pub fn new(
        pool: PgPool,
        nats: async_nats::Client,
        flusher: SpanFlusher,
        timing: Timing,
    ) -> (Self, mpsc::Receiver<(Uuid, i64)>) {
        Executor::with(
            PgStore::new(pool),
            NatsTransport::new(nats, flusher),
            timing,
        )
    }

    /// The database pool.
    pub fn pool(&self) -> &PgPool {
        self.store.pool()
    }
}

impl<S: SagaStore, T: Transport> Executor<S, T> {
    /// An executor over any store and transport.
    pub fn with(store: S, transport: T, timing: Timing) -> (Self, mpsc::Receiver<(Uuid, i64)>) {
        let (exported, rx) = mpsc::channel(16_384);
        let executor = Executor {
            store,
            transport,
            timing,
            exported,
        };
        (executor, rx)
    }

    /// The saga store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Starts a saga for an accepted checkout: records it, then sends its first command. A
    /// duplicate request changes nothing.
    pub async fn start(
        &self,
        data: SagaData,
        parent: &opentelemetry::Context,
    ) -> Result<bool, ExecError> {
        let Some((row, write)) = self.record_start(data, parent).await? else {
            return Ok(false);
        };
        self.emit(&row, &write);
        self.lifecycle(&row, LifecycleKind::Started, None, String::new())
            .await;
        self.send_current(&row).await?;
        Ok(true)
    }

    /// Records a new saga (row, log and its "started" spans, one transaction) without sending
    /// or emitting anything: what a crash between the commit and the first publish leaves, for
    /// recovery to finish. `None` when the saga already exists.
    pub async fn record_start(
        &self,
        data: SagaData,
        parent: &opentelemetry::Context,
    ) -> Result<Option<(SagaRow, Write)>, ExecError> {
        use opentelemetry::trace::TraceContextExt;
        let saga_id = data.request.checkout_id;
        let parent_sc = parent.span().span_context().clone();
        let trace = if parent_sc.is_valid() {
            SagaTrace {
                trace_id: parent_sc.trace_id(),
                parent_span_id: Some(parent_sc.span_id()),
                saga_span_id: new_span_id(),
                sampled: parent_sc.is_sampled(),
            }
        } else {
            SagaTrace {
                trace_id: checkout_shared::telemetry::new_trace_id(),
                parent_span_id: None,
                saga_span_id: new_span_id(),
                sampled: true,
            }
        };
        let now = Utc::now();
        let transition = SagaState::start(PlanId::CURRENT, data);
        let row = SagaRow {
            saga_id,
            state: transition.state,
            version: 1,
            trace,
            step_span_id: new_span_id(),
            step_started_at: now,
            failed_span_id: None,
            started_at: now,
            updated_at: now,
            stuck_reason: None,
        };
        // The saga's and its first step's "started" spans: the parents of all it does.
        let write = Write {
            log: transition.log,
            pending_spans: vec![
                spans::saga_started_span(&row),
                spans::step_started_span(&row),
            ],
            deadline_at: Some(self.deadline(now, 0)),
        };
        Ok(self
            .store
            .insert(&row, &write)
            .await?
            .then_some((row, write)))
    }

    /// Sagas whose deadline has passed, oldest first.
    pub async fn due(&self, limit: i64) -> Result<Vec<Uuid>, ExecError> {
        Ok(self.store.due(limit).await?)
    }

    /// Applies `input` to a saga; returns its status afterwards (None if unknown).
    pub async fn apply(
        &self,
        saga_id: Uuid,
        input: Input,
    ) -> Result<Option<SagaStatus>, ExecError> {
        self.apply_at(saga_id, input, Utc::now()).await
    }

    /// Times out a saga whose deadline has passed (nothing happens if it is no longer due).
    pub async fn time_out(&self, saga_id: Uuid) -> Result<Option<SagaStatus>, ExecError> {
        let input = Input::Timeout {
            waited: Duration::ZERO,
        };
        self.apply(saga_id, input).await
    }

    /// [`Executor::apply`] as of `now`, which the machine sees through a timeout's `waited`.
    pub async fn apply_at(
        &self,
        saga_id: Uuid,
        input: Input,
        now: DateTime<Utc>,
    ) -> Result<Option<SagaStatus>, ExecError> {
        let Some((before, after)) = self.apply_gated(saga_id, input, now, |_| true).await? else {
            tracing::warn!(%saga_id, "input for an unknown saga ignored");
            return Ok(None);
        };
        if after.is_none() {
            tracing::debug!(%saga_id, "stale, duplicate or no longer due input ignored");
        }
        Ok(Some(after.unwrap_or(before.state.status)))
    }

    /// Applies `input` if `gate` lets it through on the saga as it is when written (the
    /// write is conditional on the version it was judged on). `None` for an unknown saga;
    /// else the row the input was judged on and the status afterwards, `None` when nothing
    /// changed (the gate or the machine found nothing to do).
    async fn apply_gated<G>(
        &self,
        saga_id: Uuid,
        input: Input,
        now: DateTime<Utc>,
        gate: G,
    ) -> Result<Option<(SagaRow, Option<SagaStatus>)>, ExecError>
    where
        G: Fn(&SagaState) -> bool + Send + Sync,
    {
        let policy = self.timing.policy();
        let is_timeout = matches!(input, Input::Timeout { .. });
        let locked = self
            .store
            .transact(saga_id, is_timeout, |before| {
                if !gate(&before.state) {
                    return None;
                }
                let input = match &input {
                    // The machine judges how long the step has waited, not the scanner.
                    Input::Timeout { .. } => Input::Timeout {
                        waited: (now - before.step_started_at).to_std().unwrap_or_default(),
                    },
                    other => other.clone(),
                };
                let transition = before.state.next(&input, policy)?;
                let (after, write) = self.plan(before, &transition, now);
                Some(Planned {
                    after,
                    write,
                    extra: transition,
                })
            })
            .await?;
        let Some(Locked { before, planned }) = locked else {
            return Ok(None);
        };
        let Some(planned) = planned else {
            return Ok(Some((before, None)));
        };
        crate::observe::committed(&before, &planned.after, &planned.extra);
        self.carry_out(&before, &planned.after, &planned.extra, &planned.write)
            .await?;
        let status = planned.after.state.status;
        Ok(Some((before, Some(status))))
    }

    async fn carry_out(
        &self,
        before: &SagaRow,
        after: &SagaRow,
        t: &Transition,
        write: &Write,
    ) -> Result<(), ExecError> {
        self.emit(after, write);
        if let Some(finished) = &t.finished {
            let outcome = crate::observe::step_outcome(finished);
            let detail = match &finished.result {
                Ok(()) => "ok".to_owned(),
                Err(reason) => reason.clone(),
            };
            let ended = StepRef {
                step: finished.step,
                phase: finished.phase,
            };
            self.lifecycle(after, LifecycleKind::Step, Some((ended, outcome)), detail)
                .await;
        }
        let ends = before.state.status.is_active();
        let terminal = match after.state.status {
            SagaStatus::Completed if ends => Some(LifecycleKind::Completed),
            SagaStatus::Compensated if ends => Some(LifecycleKind::Compensated),
            SagaStatus::Failed if ends => Some(LifecycleKind::Failed),
            // Flagged once, when it happens; the retries that follow are in the log.
            SagaStatus::Stuck if before.state.status != SagaStatus::Stuck => {
                Some(LifecycleKind::Stuck)
            }
            _ => None,
        };
        if let Some(kind) = terminal {
            let detail = after
                .state
                .failure
                .clone()
                .or(after.stuck_reason.clone())
                .unwrap_or_default();
            if kind == LifecycleKind::Stuck {
                tracing::error!(saga_id = %after.saga_id, reason = %detail, "saga flagged stuck; its undo is still being retried");
            }
            self.lifecycle(after, kind, None, detail).await;
        }
        if t.send {
            self.send_current(after).await?;
        }
        Ok(())
    }

    /// Emits the spans a written transition planned (before its command is sent, which
    /// flushes them), and queues their confirmation.
    fn emit(&self, after: &SagaRow, write: &Write) {
        for span in &write.pending_spans {
            spans::emit(span);
        }
        if !write.pending_spans.is_empty() {
            let _ = self.exported.try_send((after.saga_id, after.version));
        }
    }
}

mod outgoing;
mod plan;
mod recovery;
mod replies;

pub use replies::Answered;

#[cfg(test)]
mod fakes;
#[cfg(test)]
mod tests;
