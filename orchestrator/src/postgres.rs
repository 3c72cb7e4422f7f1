//! The saga store in PostgreSQL: [`SagaStore`] over the queries of [`crate::store`].

use crate::group_writes::GroupWrites;
use crate::ports::{Locked, SagaStore};
use crate::spans::PlannedSpan;
use crate::store::{self, SagaRow, Write};
use sqlx::PgPool;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use uuid::Uuid;

/// Rows remembered at most; past it the memory starts again empty (it is only a guess).
const REMEMBERED: usize = 65_536;

/// Sagas in the `saga` schema; a transition is written only over the version it was planned
/// from, which serializes a saga's transitions without a lock held across round trips.
///
/// The store remembers the row it last wrote for each saga still awaiting a reply (an active
/// saga, or a completed one awaiting its confirmation), and plans the next
/// transition from it without reading: one round trip per transition. The memory is only a
/// guess (another orchestrator may have moved the saga on): a write over a version that is no
/// longer the row's writes nothing, and the transition is planned again from the row as read.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    known: Arc<Mutex<HashMap<Uuid, SagaRow>>>,
    writes: GroupWrites,
}

impl PgStore {
    /// A store over `pool` (migrated by [`store::migrate`]); starts its group-commit
    /// writers, so it must be made inside the Tokio runtime.
    pub fn new(pool: PgPool) -> Self {
        PgStore {
            writes: GroupWrites::start(pool.clone()),
            pool,
            known: Arc::default(),
        }
    }

    /// The pool, for operators' read-only queries.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    fn known(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, SagaRow>> {
        // The map holds no invariant a panic could break: a guess at worst.
        self.known.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn remember(&self, row: &SagaRow) {
        let mut known = self.known();
        if !row.state.status.is_active() && !row.state.follow_up {
            // No input moves a finished saga on; its inputs are read from the database. A
            // completed saga awaiting its confirmation is still moved on by that reply.
            known.remove(&row.saga_id);
            return;
        }
        if known.len() >= REMEMBERED && !known.contains_key(&row.saga_id) {
            known.clear();
        }
        known.insert(row.saga_id, row.clone());
    }
}

impl SagaStore for PgStore {
    async fn insert(&self, row: &SagaRow, write: &Write) -> Result<bool, sqlx::Error> {
        let inserted = self.writes.insert(row, write).await?;
        if inserted {
            self.remember(row);
        }
        Ok(inserted)
    }

    async fn transact<X, F>(
        &self,
        saga_id: Uuid,
        only_if_due: bool,
        plan: F,
    ) -> Result<Option<Locked<X>>, sqlx::Error>
    where
        X: Send,
        F: Fn(&SagaRow) -> Option<crate::ports::Planned<X>> + Send,
    {
        // Plan, then write only if nothing committed in between (the version is unchanged):
        // no row lock held across round trips. Timeouts always read: whether the deadline
        // passed is the database's to say.
        let mut guess = if only_if_due {
            None
        } else {
            self.known().get(&saga_id).cloned()
        };
        loop {
            let guessed = guess.is_some();
            let (before, due) = match guess.take() {
                Some(row) => (row, true),
                None => match store::read(&self.pool, saga_id).await? {
                    Some(read) => read,
                    None => return Ok(None),
                },
            };
            // Another orchestrator (or a reply) may have moved the saga on since the scan
            // that found it due.
            let planned = if only_if_due && !due {
                None
            } else {
                plan(&before)
            };
            let Some(p) = planned else {
                if guessed {
                    // Ignoring an input is decided on the row as stored, never on a guess.
                    continue;
                }
                return Ok(Some(Locked {
                    before,
                    planned: None,
                }));
            };
            if self.writes.save(before.version, &p.after, &p.write).await? {
                self.remember(&p.after);
                return Ok(Some(Locked {
                    before,
                    planned: Some(p),
                }));
            }
            // A lost race (a timeout or a duplicate meeting a reply, another orchestrator) or
            // a stale guess: plan again on the row as it now is.
            self.known().remove(&saga_id);
            tracing::debug!(%saga_id, "saga changed since it was read; planning again");
        }
    }

    async fn due(&self, limit: i64) -> Result<Vec<Uuid>, sqlx::Error> {
        store::due(&self.pool, limit).await
    }

    async fn active(&self) -> Result<Vec<SagaRow>, sqlx::Error> {
        store::active(&self.pool).await
    }

    async fn pending_spans(&self) -> Result<Vec<(Uuid, i64, Vec<PlannedSpan>)>, sqlx::Error> {
        store::pending_spans(&self.pool).await
    }

    async fn stale_pending_spans(
        &self,
        min_age: std::time::Duration,
        limit: i64,
    ) -> Result<Vec<(Uuid, i64, Vec<PlannedSpan>)>, sqlx::Error> {
        store::stale_pending_spans(&self.pool, min_age, limit).await
    }

    async fn clear_pending(&self, exported: &[(Uuid, i64)]) -> Result<(), sqlx::Error> {
        store::clear_pending(&self.pool, exported).await
    }
}
