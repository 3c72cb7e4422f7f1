//! What the executor needs from the world, as two traits: where sagas are kept
//! ([`SagaStore`]) and how commands and lifecycle events leave ([`Transport`]).
//!
//! Production uses PostgreSQL ([`crate::store::PgStore`]) and JetStream
//! ([`crate::transport::NatsTransport`]); the executor's tests use in-memory fakes, so every
//! path of the real executor (locking, the due check, plans, spans, re-sends) runs there.

use crate::spans::PlannedSpan;
use crate::store::{SagaRow, Write};
use bytes::Bytes;
use checkout_shared::messaging::{Outgoing, PublishFailed};
use opentelemetry::KeyValue;
use std::future::Future;
use uuid::Uuid;

/// A planned change of one saga: its row afterwards, what else to write, and whatever the
/// caller needs to carry the change out once it is committed.
pub struct Planned<X> {
    /// The row afterwards (version already incremented).
    pub after: SagaRow,
    /// Log entries, finished spans and the deadline.
    pub write: Write,
    /// Carried back to the caller.
    pub extra: X,
}

/// The result of [`SagaStore::transact`].
pub struct Locked<X> {
    /// The row the change was planned from (as read, or as this process last wrote it).
    pub before: SagaRow,
    /// What was written, if the plan changed anything.
    pub planned: Option<Planned<X>>,
}

/// Where sagas are kept. Every change of a saga is written whole, over the version it was planned
/// from.
pub trait SagaStore: Clone + Send + Sync + 'static {
    /// Inserts a new saga and its first log entries; false (nothing written) if it exists.
    fn insert(
        &self,
        row: &SagaRow,
        write: &Write,
    ) -> impl Future<Output = Result<bool, sqlx::Error>> + Send;

    /// Reads a saga, lets `plan` decide its change, and writes that change atomically unless
    /// the saga changed meanwhile; then `plan` runs again on the saga as it now is.
    /// With `only_if_due`, `plan` runs only if the saga's deadline has passed: another
    /// orchestrator (or a reply) may have moved it on since the scan that found it due.
    /// `None` when the saga is unknown.
    fn transact<X, F>(
        &self,
        saga_id: Uuid,
        only_if_due: bool,
        plan: F,
    ) -> impl Future<Output = Result<Option<Locked<X>>, sqlx::Error>> + Send
    where
        X: Send,
        F: Fn(&SagaRow) -> Option<Planned<X>> + Send;

    /// Active sagas whose deadline has passed, oldest first, at most `limit`.
    fn due(&self, limit: i64) -> impl Future<Output = Result<Vec<Uuid>, sqlx::Error>> + Send;

    /// Every saga still waiting for a reply, for recovery after a restart.
    fn active(&self) -> impl Future<Output = Result<Vec<SagaRow>, sqlx::Error>> + Send;

    /// Spans finished but not confirmed exported: `(saga_id, version, spans)`.
    fn pending_spans(
        &self,
    ) -> impl Future<Output = Result<Vec<(Uuid, i64, Vec<PlannedSpan>)>, sqlx::Error>> + Send;

    /// Pending spans of transitions written more than `min_age` ago, oldest first, at most
    /// `limit`: still pending that long, their emission is in doubt (a write whose answer was
    /// lost, so the process that made it never emitted them). None in a store that cannot
    /// lose answers.
    fn stale_pending_spans(
        &self,
        min_age: std::time::Duration,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<(Uuid, i64, Vec<PlannedSpan>)>, sqlx::Error>> + Send {
        let _ = (min_age, limit);
        async { Ok(Vec::new()) }
    }

    /// Forgets the pending spans of exactly these `(saga, version)` transitions: their export
    /// is confirmed. Another transition's spans stay, even an earlier one's: its writer may
    /// never have emitted them.
    fn clear_pending(
        &self,
        exported: &[(Uuid, i64)],
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send;
}

/// How the executor's messages leave.
pub trait Transport: Clone + Send + Sync + 'static {
    /// Publishes a command durably, under a producer span that is the child of `parent`;
    /// resolves once the broker has stored it (or dropped it as a duplicate of its id).
    fn send_command(
        &self,
        parent: &opentelemetry::Context,
        command: Outgoing,
        attributes: Vec<KeyValue>,
    ) -> impl Future<Output = Result<(), PublishFailed>> + Send;

    /// Publishes a lifecycle event for watchers: best effort, the saga row is the truth.
    fn lifecycle(&self, subject: String, payload: Bytes) -> impl Future<Output = ()> + Send;

    /// Whether the spans emitted so far have been exported (flushes them first).
    fn flush_spans(&self) -> impl Future<Output = bool> + Send;
}
