//! In-memory fakes of the executor's store and transport, and of the broker and workers
//! around them, for the executor's property test.
//!
//! The fakes keep state and deliver messages; they decide nothing the executor decides.
//! The broker drops a message whose id it has seen (JetStream's duplicate window) and
//! redelivers at will (at-least-once). A worker keys its processed-message record by the
//! action key it reads from the headers the executor wrote, as the real workers do, so a
//! command sent under a new message id reaches the worker, and a command whose envelope
//! named a different action would act twice.

use crate::ports::{Locked, Planned, SagaStore, Transport};
use crate::spans::PlannedSpan;
use crate::store::{SagaRow, Write};
use bytes::Bytes;
use checkout_shared::envelope::Envelope;
use checkout_shared::messages::{CommandMessage, Outcome, Refusal, RefusalCode, Reply};
use checkout_shared::messaging::{Outgoing, PublishFailed};
use checkout_shared::{Phase, Step};
use chrono::{DateTime, Utc};
use opentelemetry::KeyValue;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use uuid::Uuid;

fn guard<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The test's clock: deadlines are judged against it, not the wall.
#[derive(Clone)]
pub struct Clock(Arc<Mutex<DateTime<Utc>>>);

impl Clock {
    pub fn new() -> Self {
        Clock(Arc::new(Mutex::new(Utc::now())))
    }
    pub fn now(&self) -> DateTime<Utc> {
        *guard(&self.0)
    }
    pub fn advance(&self, by: chrono::Duration) {
        *guard(&self.0) += by;
    }
}

#[derive(Default)]
struct Stored {
    row: Option<SagaRow>,
    deadline: Option<DateTime<Utc>>,
    pending: Vec<(i64, Vec<PlannedSpan>)>,
}

/// Sagas in memory, one lock for all.
#[derive(Clone)]
pub struct MemStore {
    sagas: Arc<Mutex<BTreeMap<Uuid, Stored>>>,
    clock: Clock,
}

impl MemStore {
    pub fn new(clock: Clock) -> Self {
        MemStore {
            sagas: Arc::default(),
            clock,
        }
    }
    pub fn row(&self, saga_id: Uuid) -> Option<SagaRow> {
        guard(&self.sagas).get(&saga_id).and_then(|s| s.row.clone())
    }
}

impl SagaStore for MemStore {
    async fn insert(&self, row: &SagaRow, write: &Write) -> Result<bool, sqlx::Error> {
        let mut sagas = guard(&self.sagas);
        if sagas.contains_key(&row.saga_id) {
            return Ok(false);
        }
        let stored = Stored {
            row: Some(row.clone()),
            deadline: write.deadline_at,
            pending: if write.pending_spans.is_empty() {
                vec![]
            } else {
                vec![(row.version, write.pending_spans.clone())]
            },
        };
        sagas.insert(row.saga_id, stored);
        Ok(true)
    }

    async fn transact<X, F>(
        &self,
        saga_id: Uuid,
        only_if_due: bool,
        plan: F,
    ) -> Result<Option<Locked<X>>, sqlx::Error>
    where
        X: Send,
        F: Fn(&SagaRow) -> Option<Planned<X>> + Send,
    {
        let now = self.clock.now();
        let mut sagas = guard(&self.sagas);
        let Some(stored) = sagas.get_mut(&saga_id) else {
            return Ok(None);
        };
        let Some(before) = stored.row.clone() else {
            return Ok(None);
        };
        if only_if_due && stored.deadline.is_none_or(|d| d >= now) {
            return Ok(Some(Locked {
                before,
                planned: None,
            }));
        }
        let planned = plan(&before);
        if let Some(p) = &planned {
            stored.row = Some(p.after.clone());
            stored.deadline = p.write.deadline_at;
            if !p.write.pending_spans.is_empty() {
                stored
                    .pending
                    .push((p.after.version, p.write.pending_spans.clone()));
            }
        }
        Ok(Some(Locked { before, planned }))
    }

    async fn due(&self, limit: i64) -> Result<Vec<Uuid>, sqlx::Error> {
        let now = self.clock.now();
        let sagas = guard(&self.sagas);
        // As the SQL: every saga with a deadline that passed. Only active sagas and completed
        // ones awaiting their fire-and-forget step keep one.
        let due = sagas
            .iter()
            .filter(|(_, s)| s.row.is_some() && s.deadline.is_some_and(|d| d < now));
        Ok(due
            .map(|(id, _)| *id)
            .take(usize::try_from(limit).unwrap_or(0))
            .collect())
    }

    async fn active(&self) -> Result<Vec<SagaRow>, sqlx::Error> {
        let sagas = guard(&self.sagas);
        let rows = sagas.values().filter_map(|s| s.row.clone());
        Ok(rows.filter(|r| r.state.status.is_active()).collect())
    }

    async fn pending_spans(&self) -> Result<Vec<(Uuid, i64, Vec<PlannedSpan>)>, sqlx::Error> {
        let sagas = guard(&self.sagas);
        let pending = sagas.iter().flat_map(|(id, s)| {
            s.pending
                .iter()
                .map(move |(version, spans)| (*id, *version, spans.clone()))
        });
        Ok(pending.collect())
    }

    async fn clear_pending(&self, exported: &[(Uuid, i64)]) -> Result<(), sqlx::Error> {
        let mut sagas = guard(&self.sagas);
        for (id, version) in exported {
            if let Some(s) = sagas.get_mut(id) {
                s.pending.retain(|(v, _)| v != version);
            }
        }
        Ok(())
    }
}

/// A broker: a work queue of commands with a duplicate window by message id.
#[derive(Clone, Default)]
pub struct Broker {
    pub queue: Arc<Mutex<Vec<Outgoing>>>,
    seen: Arc<Mutex<BTreeSet<String>>>,
    /// The next send fails as if the process died before publishing.
    pub fail_next_send: Arc<AtomicBool>,
}

impl Transport for Broker {
    async fn send_command(
        &self,
        _parent: &opentelemetry::Context,
        command: Outgoing,
        _attributes: Vec<KeyValue>,
    ) -> Result<(), PublishFailed> {
        if self.fail_next_send.swap(false, Ordering::SeqCst) {
            let kind = async_nats::jetstream::context::PublishErrorKind::TimedOut;
            return Err(PublishFailed::Publish {
                subject: command.subject,
                source: kind.into(),
            });
        }
        if guard(&self.seen).insert(command.msg_id.clone()) {
            guard(&self.queue).push(command);
        }
        Ok(())
    }

    async fn lifecycle(&self, _subject: String, _payload: Bytes) {}

    async fn flush_spans(&self) -> bool {
        true
    }
}

/// The workers of every step: effects, tombstones and processed-message records.
#[derive(Default)]
pub struct Workers {
    processed: BTreeMap<String, Reply>,
    pub effects: BTreeSet<Step>,
    tombstones: BTreeSet<Step>,
    /// The action keys each action or undo was received under, whatever its message id:
    /// the executor must name one action per step and phase, or the workers' records
    /// (keyed by it) cannot keep the action from acting twice.
    pub received: BTreeMap<(Step, Phase), BTreeSet<String>>,
    /// How many times each action key took effect (or was refused as a decision).
    pub applied: BTreeMap<String, u32>,
    /// Undos refused: business refusals the worker does not store, so that the undo sent
    /// again is decided afresh.
    pub undo_refusals: u32,
}

/// How a worker treats the command it is handed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handling {
    /// As the real workers do.
    Normal,
    /// An undo is refused (an action is handled normally).
    RefuseUndo,
    /// The database is down: nothing is decided, nothing is replied (the message is nakked).
    FailToAct,
}

impl Workers {
    /// Handles a command; `None` when nothing is replied (a failure to act).
    pub fn handle(
        &mut self,
        command: &Outgoing,
        refuse: Option<Step>,
        handling: Handling,
    ) -> Option<Reply> {
        let envelope = Envelope::read(Some(&command.headers)).expect("the executor's envelope");
        let body: CommandMessage =
            serde_json::from_slice(&command.payload).expect("the executor's body");
        assert_eq!(body.command.step_phase(), (envelope.step, envelope.phase));
        let key = envelope.action_key();
        let (step, phase) = (envelope.step, envelope.phase);
        self.received
            .entry((step, phase))
            .or_default()
            .insert(key.clone());
        if handling == Handling::FailToAct {
            return None;
        }
        if let Some(stored) = self.processed.get(&key) {
            return Some(stored.clone());
        }
        let reply = |outcome| Reply {
            saga_id: envelope.saga_id,
            step,
            phase,
            outcome,
        };
        if phase == Phase::Undo && handling == Handling::RefuseUndo {
            self.undo_refusals += 1;
            return Some(reply(Outcome::StepFailed { reason: refusal() }));
        }
        *self.applied.entry(key.clone()).or_default() += 1;
        let outcome = match phase {
            Phase::Do if self.tombstones.contains(&step) || refuse == Some(step) => {
                Outcome::StepFailed { reason: refusal() }
            }
            Phase::Do => {
                self.effects.insert(step);
                Outcome::StepSucceeded {
                    reference: Some(Uuid::new_v4()),
                }
            }
            Phase::Undo => {
                if !self.effects.remove(&step) {
                    self.tombstones.insert(step);
                }
                Outcome::StepSucceeded { reference: None }
            }
        };
        let reply = reply(outcome);
        self.processed.insert(key, reply.clone());
        Some(reply)
    }
}

fn refusal() -> Refusal {
    Refusal::new(RefusalCode::CardDeclined, "no")
}
