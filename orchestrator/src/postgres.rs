//! The saga store in PostgreSQL: [`SagaStore`] over the queries of [`crate::store`].

use crate::ports::{Locked, SagaStore};
use crate::spans::PlannedSpan;
use crate::store::{self, SagaRow, Write};
use sqlx::PgPool;
use uuid::Uuid;

/// Sagas in the `saga` schema; a transition is written only over the version it was planned
/// from, which serializes a saga's transitions without a lock held across round trips.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// A store over `pool` (migrated by [`store::migrate`]).
    pub fn new(pool: PgPool) -> Self {
        PgStore { pool }
    }

    /// The pool, for operators' read-only queries.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

impl SagaStore for PgStore {
    async fn insert(&self, row: &SagaRow, write: &Write) -> Result<bool, sqlx::Error> {
        store::insert(&self.pool, row, write).await
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
        // Read, plan, then write only if nothing committed in between (the version is
        // unchanged): two round trips and no row lock held across them. A lost race is rare
        // (a timeout or a duplicate meeting a reply) and plans again on the row it left.
        loop {
            let Some((before, due)) = store::read(&self.pool, saga_id).await? else {
                return Ok(None);
            };
            // Another orchestrator (or a reply) may have moved the saga on since the scan
            // that found it due.
            let planned = if only_if_due && !due {
                None
            } else {
                plan(&before)
            };
            let Some(p) = planned else {
                return Ok(Some(Locked {
                    before,
                    planned: None,
                }));
            };
            if store::save(&self.pool, before.version, &p.after, &p.write).await? {
                return Ok(Some(Locked {
                    before,
                    planned: Some(p),
                }));
            }
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

    async fn clear_pending(&self, exported: &[(Uuid, i64)]) -> Result<(), sqlx::Error> {
        store::clear_pending(&self.pool, exported).await
    }
}
