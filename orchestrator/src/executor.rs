//! The executor: applies inputs to stored sagas and carries out what each transition implies.
//!
//! A transition is written first (row and log, one transaction), then its command is sent
//! with the deduplicating message id. A crash in between is healed by the step deadline or
//! by recovery at start-up, which re-send what the stored state implies.

use crate::machine::{Finished, Input, Policy, SagaState, Status, Transition};
use crate::saga::{CHECKOUT, SagaData};
use crate::spans::{self, PlannedSpan, SagaTrace};
use crate::store::{self, SagaRow, Write};
use async_nats::jetstream;
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
}

/// Deadlines and bounds.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// How long a command waits for its reply before it is re-sent.
    pub step_timeout: Duration,
    /// The longest wait, however many re-sends.
    pub max_step_timeout: Duration,
    /// Sends of one command before the executor gives up on it.
    pub max_attempts: u32,
}

/// Drives sagas: shared by the consumers, the deadline scanner and operators' tools.
#[derive(Clone)]
pub struct Executor {
    pool: PgPool,
    js: jetstream::Context,
    nats: async_nats::Client,
    flusher: SpanFlusher,
    timing: Timing,
    exported: mpsc::Sender<(Uuid, i64)>,
}

impl Executor {
    /// An executor, and the receiver of (saga, version) pairs whose finished spans were
    /// emitted; [`Executor::confirm_exports`] drains it.
    pub fn new(
        pool: PgPool,
        nats: async_nats::Client,
        flusher: SpanFlusher,
        timing: Timing,
    ) -> (Self, mpsc::Receiver<(Uuid, i64)>) {
        let (exported, rx) = mpsc::channel(16_384);
        let js = checkout_shared::connect::jetstream(nats.clone());
        (
            Executor {
                pool,
                js,
                nats,
                flusher,
                timing,
                exported,
            },
            rx,
        )
    }

    /// The database pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
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
        let mut tx = self.pool.begin().await?;
        if !store::insert(&mut tx, &row, &write).await? {
            tx.rollback().await?;
            return Ok(None);
        }
        tx.commit().await?;
        Ok(Some(row))
    }

    /// Applies `input` to a saga; returns its status afterwards (None if unknown).
    pub async fn apply(&self, saga_id: Uuid, input: Input) -> Result<Option<Status>, ExecError> {
        let policy = Policy {
            max_attempts: self.timing.max_attempts,
        };
        let mut tx = self.pool.begin().await?;
        let Some(before) = store::lock(&mut tx, saga_id).await? else {
            tx.rollback().await?;
            tracing::warn!(%saga_id, "input for an unknown saga ignored");
            return Ok(None);
        };
        // Checked under the lock: another orchestrator (or a reply) may have moved the saga on
        // since the scan that found it due.
        if input == Input::Timeout && !store::still_due(&mut tx, saga_id).await? {
            tx.rollback().await?;
            return Ok(Some(before.state.status));
        }
        let Some(transition) = before.state.next(&input, policy) else {
            tx.rollback().await?;
            tracing::debug!(%saga_id, ?input, "stale or duplicate input ignored");
            return Ok(Some(before.state.status));
        };
        let now = Utc::now();
        let (after, write) = self.plan(&before, &transition, now);
        store::save(&mut tx, &after, &write).await?;
        tx.commit().await?;
        crate::observe::committed(&before, &after, &transition);
        self.carry_out(&before, &after, &transition, &write).await?;
        Ok(Some(after.state.status))
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
            Status::Completed | Status::Compensated => pending.push(saga_span(&after, now)),
            Status::Stuck => after.stuck_reason = t.log.last().and_then(|(_, _, d)| d.clone()),
            _ => after.stuck_reason = None,
        }
        let deadline_at = t.send.then(|| self.deadline(now, after.state.attempts));
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
        let terminal = match after.state.status {
            Status::Completed => Some(LifecycleKind::Completed),
            Status::Compensated => Some(LifecycleKind::Compensated),
            Status::Stuck => Some(LifecycleKind::Stuck),
            _ => None,
        };
        if let Some(kind) = terminal {
            let detail = after
                .state
                .failure
                .clone()
                .or(after.stuck_reason.clone())
                .unwrap_or_default();
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
        let command = match state.phase {
            Phase::Do => (def.action)(&state.data),
            Phase::Undo => (def.undo)(&state.data),
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
            .unwrap_or_default();
        let subject = subjects::command(def.step, state.phase);
        let parent = row.trace.context_of(row.step_span_id);
        let extra = saga_attributes(row.saga_id, &def.step.name(), state.phase);
        let outgoing = Outgoing {
            subject,
            msg_id,
            headers,
            payload,
        };
        messaging::publish(&self.js, &self.flusher, &parent, outgoing, extra).await?;
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
        let payload = serde_json::to_vec(&event)
            .map(Bytes::from)
            .unwrap_or_default();
        // Watchers are best-effort; the saga row is the truth, so a lost event loses nothing.
        if let Err(err) = self
            .nats
            .publish(subjects::lifecycle(row.saga_id, kind.as_str()), payload)
            .await
        {
            tracing::debug!(error = %err, "lifecycle event not published");
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
            if !self.flusher.flush().await {
                // Not known to be exported: keep them in the rows and try again with the next
                // batch (recovery re-emits them if this process dies first).
                continue;
            }
            match store::clear_pending(&self.pool, &batch).await {
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
        for (saga_id, version, pending) in store::pending_spans(&self.pool).await? {
            pending.iter().for_each(spans::emit);
            let _ = self.exported.try_send((saga_id, version));
        }
        let active = store::active(&self.pool).await?;
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

fn step_span(row: &SagaRow, finished: &Finished, now: DateTime<Utc>) -> PlannedSpan {
    let step = CHECKOUT[finished.cursor].step.name();
    let (name, link) = match finished.phase {
        Phase::Do => (format!("step {step}"), None),
        Phase::Undo => (
            format!("compensate {step}"),
            row.failed_span_id.map(spans::hex),
        ),
    };
    let outcome = match &finished.result {
        Ok(()) if finished.phase == Phase::Undo => "compensated",
        Ok(()) => "succeeded",
        Err(_) => "failed",
    };
    let mut attributes: Vec<(String, String)> = vec![
        ("saga.id".into(), row.saga_id.to_string()),
        ("saga.step".into(), step),
        ("saga.phase".into(), finished.phase.as_str().into()),
        ("saga.outcome".into(), outcome.into()),
    ];
    if let Err(reason) = &finished.result {
        attributes.push(("saga.failure_reason".into(), reason.clone()));
    }
    PlannedSpan {
        name,
        span_id: spans::hex(row.step_span_id),
        parent_span_id: Some(spans::hex(row.trace.saga_span_id)),
        trace_id: row.trace.trace_id.to_string(),
        sampled: row.trace.sampled,
        start: row.step_started_at,
        end: now,
        attributes,
        error: finished.result.clone().err(),
        link,
    }
}

fn saga_span(row: &SagaRow, now: DateTime<Utc>) -> PlannedSpan {
    let outcome = row.state.status.as_str();
    let mut attributes: Vec<(String, String)> = vec![
        ("saga.id".into(), row.saga_id.to_string()),
        ("saga.name".into(), "checkout".into()),
        ("saga.outcome".into(), outcome.into()),
        (
            "checkout.customer_id".into(),
            row.state.data.request.customer_id.clone(),
        ),
        (
            "checkout.amount_cents".into(),
            row.state.data.request.amount_cents.to_string(),
        ),
    ];
    if let Some(reason) = &row.state.failure {
        attributes.push(("saga.failure_reason".into(), reason.clone()));
    }
    PlannedSpan {
        name: "saga checkout".into(),
        span_id: spans::hex(row.trace.saga_span_id),
        parent_span_id: row.trace.parent_span_id.map(spans::hex),
        trace_id: row.trace.trace_id.to_string(),
        sampled: row.trace.sampled,
        start: row.started_at,
        end: now,
        attributes,
        error: None,
        link: None,
    }
}
