//! The executor: applies inputs to stored sagas and carries out what each transition implies.
//!
//! A transition is written first (row and log, under the saga's lock, all or nothing), then
//! its command is sent with the deduplicating message id. A crash in between is healed by the
//! step deadline or by recovery at start-up, which re-send what the stored state implies.
//!
//! The executor is generic over its [`SagaStore`] and [`Transport`]: PostgreSQL and JetStream
//! in production, in-memory fakes in its tests.

use crate::machine::{Input, Policy, SagaState, Status, Transition};
use crate::ports::{Locked, Planned, SagaStore, Transport};
use crate::postgres::PgStore;
use crate::saga::{CHECKOUT, SagaData};
use crate::spans::{self, SagaTrace, saga_span, step_span};
use crate::store::{SagaRow, Write};
use crate::transport::NatsTransport;
use bytes::Bytes;
use checkout_shared::envelope::Envelope;
use checkout_shared::messages::{CommandMessage, LifecycleEvent, LifecycleKind};
use checkout_shared::messaging::{self, Outgoing};
use checkout_shared::telemetry::{SpanFlusher, new_span_id};
use checkout_shared::{Phase, subjects};
use chrono::{DateTime, Utc};
use opentelemetry::KeyValue;
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
        let Some(row) = self.record_start(data, parent).await? else {
            return Ok(false);
        };
        self.lifecycle(&row, LifecycleKind::Started, None, String::new())
            .await;
        self.send_current(&row).await?;
        Ok(true)
    }

    /// Records a new saga (row and log, one transaction) without sending anything: what a
    /// crash between the commit and the first publish leaves, for recovery to finish.
    /// `None` when the saga already exists.
    pub async fn record_start(
        &self,
        data: SagaData,
        parent: &opentelemetry::Context,
    ) -> Result<Option<SagaRow>, ExecError> {
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
        let transition = SagaState::start(data);
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
        let write = Write {
            log: transition.log,
            pending_spans: vec![],
            deadline_at: Some(self.deadline(now, 0)),
        };
        Ok(self.store.insert(&row, &write).await?.then_some(row))
    }

    /// Sagas whose deadline has passed, oldest first.
    pub async fn due(&self, limit: i64) -> Result<Vec<Uuid>, ExecError> {
        Ok(self.store.due(limit).await?)
    }

    /// Applies `input` to a saga; returns its status afterwards (None if unknown).
    pub async fn apply(&self, saga_id: Uuid, input: Input) -> Result<Option<Status>, ExecError> {
        self.apply_at(saga_id, input, Utc::now()).await
    }

    /// Times out a saga whose deadline has passed (nothing happens if it is no longer due).
    pub async fn time_out(&self, saga_id: Uuid) -> Result<Option<Status>, ExecError> {
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
    ) -> Result<Option<Status>, ExecError> {
        let policy = self.timing.policy();
        let is_timeout = matches!(input, Input::Timeout { .. });
        let locked = self
            .store
            .transact(saga_id, is_timeout, |before| {
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
            tracing::warn!(%saga_id, "input for an unknown saga ignored");
            return Ok(None);
        };
        let Some(planned) = planned else {
            tracing::debug!(%saga_id, "stale, duplicate or no longer due input ignored");
            return Ok(Some(before.state.status));
        };
        crate::observe::committed(&before, &planned.after, &planned.extra);
        self.carry_out(&before, &planned.after, &planned.extra, &planned.write)
            .await?;
        Ok(Some(planned.after.state.status))
    }

    /// The row and writes a transition implies, with the spans it finishes.
    fn plan(&self, before: &SagaRow, t: &Transition, now: DateTime<Utc>) -> (SagaRow, Write) {
        let mut after = before.clone();
        after.state = t.state.clone();
        after.version += 1;
        after.updated_at = now;
        let mut pending = Vec::new();
        if let Some(finished) = &t.finished {
            pending.push(step_span(before, finished, now));
            if finished.phase == Phase::Do && finished.result.is_err() {
                after.failed_span_id = Some(before.step_span_id);
            }
        }
        if t.started {
            after.step_span_id = new_span_id();
            after.step_started_at = now;
        }
        match after.state.status {
            // The saga span ends when the saga does, once: a fire-and-forget step's reply
            // that comes later changes nothing about it.
            Status::Completed | Status::Compensated | Status::Failed
                if before.state.status.is_active() =>
            {
                pending.push(saga_span(&after, now))
            }
            Status::Completed | Status::Compensated | Status::Failed => {}
            Status::Stuck if before.state.status != Status::Stuck => {
                after.stuck_reason = flag_reason(t);
            }
            Status::Stuck => {}
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

    async fn carry_out(
        &self,
        before: &SagaRow,
        after: &SagaRow,
        t: &Transition,
        write: &Write,
    ) -> Result<(), ExecError> {
        for span in &write.pending_spans {
            spans::emit(span);
        }
        if !write.pending_spans.is_empty() {
            let _ = self.exported.try_send((after.saga_id, after.version));
        }
        if let Some(finished) = &t.finished {
            let detail = match &finished.result {
                Ok(()) => "ok".to_owned(),
                Err(reason) => reason.clone(),
            };
            let step = CHECKOUT[finished.cursor].step;
            self.lifecycle(
                before,
                LifecycleKind::Step,
                Some((step, finished.phase)),
                detail,
            )
            .await;
        }
        let ends = before.state.status.is_active();
        let terminal = match after.state.status {
            Status::Completed if ends => Some(LifecycleKind::Completed),
            Status::Compensated if ends => Some(LifecycleKind::Compensated),
            Status::Failed if ends => Some(LifecycleKind::Failed),
            // Flagged once, when it happens; the retries that follow are in the log.
            Status::Stuck if before.state.status != Status::Stuck => Some(LifecycleKind::Stuck),
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

    /// Sends the command the stored state implies, under the current step's span.
    pub async fn send_current(&self, row: &SagaRow) -> Result<(), ExecError> {
        let state = &row.state;
        let def = &CHECKOUT[state.cursor];
        let command = match (state.phase, def.undo) {
            (Phase::Do, _) => (def.action)(&state.data),
            (Phase::Undo, Some(undo)) => undo(&state.data),
            (Phase::Undo, None) => {
                // The machine never undoes a fire-and-forget step; a state that asks for it
                // is a bug, reported rather than sent as a command no worker knows.
                tracing::error!(saga_id = %row.saga_id, step = %def.step, "no undo to send");
                return Ok(());
            }
        };
        let envelope = Envelope::command(row.saga_id, def.step, state.phase);
        let msg_id = state.msg_id(row.saga_id);
        let mut headers = async_nats::HeaderMap::new();
        envelope.write(&mut headers, &msg_id);
        let body = CommandMessage {
            saga_id: row.saga_id,
            command,
        };
        let payload = serde_json::to_vec(&body)
            .map(Bytes::from)
            .map_err(|source| ExecError::Serialize {
                what: "a command",
                source,
            })?;
        let subject = subjects::command(def.step, state.phase);
        let parent = row.trace.context_of(row.step_span_id);
        let extra = saga_attributes(row.saga_id, &def.step.name(), state.phase);
        let outgoing = Outgoing {
            subject,
            msg_id,
            headers,
            payload,
        };
        self.transport
            .send_command(&parent, outgoing, extra)
            .await?;
        Ok(())
    }

    async fn lifecycle(
        &self,
        row: &SagaRow,
        kind: LifecycleKind,
        step: Option<(checkout_shared::Step, Phase)>,
        detail: String,
    ) {
        let event = LifecycleEvent {
            saga_id: row.saga_id,
            kind,
            step: step.map(|(s, _)| s),
            phase: step.map(|(_, p)| p),
            detail,
            trace_id: row.trace.trace_id.to_string(),
        };
        match serde_json::to_vec(&event) {
            Ok(payload) => {
                let subject = subjects::lifecycle(row.saga_id, kind.as_str());
                self.transport
                    .lifecycle(subject, Bytes::from(payload))
                    .await;
            }
            // Watchers are best-effort (the saga row is the truth), but a bug is not hidden.
            Err(err) => tracing::error!(error = %err, "lifecycle event not serialisable"),
        }
    }

    fn deadline(&self, now: DateTime<Utc>, attempts: u32) -> DateTime<Utc> {
        let backoff = self
            .timing
            .step_timeout
            .saturating_mul(2u32.saturating_pow(attempts.min(16)));
        let wait = backoff.min(self.timing.max_step_timeout);
        now + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::seconds(60))
    }

    /// Confirms exported spans in batches, after a flush, so recovery re-emits only spans
    /// whose export is in doubt.
    pub async fn confirm_exports(&self, mut rx: mpsc::Receiver<(Uuid, i64)>) {
        let mut batch = Vec::new();
        while rx.recv_many(&mut batch, 1_024).await > 0 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            while let Ok(more) = rx.try_recv() {
                batch.push(more);
            }
            if !self.transport.flush_spans().await {
                // Not known to be exported: keep them in the rows and try again with the next
                // batch (recovery re-emits them if this process dies first).
                continue;
            }
            match self.store.clear_pending(&batch).await {
                Ok(()) => batch.clear(),
                Err(err) => {
                    tracing::warn!(error = %err, "could not confirm span exports; will retry")
                }
            }
        }
    }

    /// Recovery after a restart: re-emits spans whose export is in doubt and re-sends the
    /// command of every active saga (JetStream drops it if the first send got through).
    pub async fn recover(&self) -> Result<usize, ExecError> {
        for (saga_id, version, pending) in self.store.pending_spans().await? {
            pending.iter().for_each(spans::emit);
            let _ = self.exported.try_send((saga_id, version));
        }
        let active = self.store.active().await?;
        let count = active.len();
        for row in &active {
            if let Err(err) = self.send_current(row).await {
                tracing::warn!(saga_id = %row.saga_id, error = %err, "re-send failed; its deadline will retry");
            }
        }
        Ok(count)
    }
}

fn saga_attributes(saga_id: Uuid, step: &str, phase: Phase) -> Vec<KeyValue> {
    vec![
        KeyValue::new("saga.id", saga_id.to_string()),
        KeyValue::new("saga.step", step.to_owned()),
        KeyValue::new("saga.phase", phase.as_str()),
    ]
}

fn flag_reason(t: &Transition) -> Option<String> {
    t.log
        .iter()
        .rev()
        .find(|(_, event, _)| *event == "stuck")
        .and_then(|(_, _, detail)| detail.clone())
}

#[cfg(test)]
mod fakes;
#[cfg(test)]
mod tests;
