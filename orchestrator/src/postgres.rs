//! The saga store in PostgreSQL: [`SagaStore`] over the queries of [`crate::store`].

use crate::ports::{Locked, SagaStore};
use crate::spans::PlannedSpan;
use crate::store::{self, SagaRow, Write};
use sqlx::PgPool;
use uuid::Uuid;

/// Sagas in the `saga` schema; a saga's lock is its row's `FOR UPDATE` lock.
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
        let mut tx = self.pool.begin().await?;
        if !store::insert(&mut tx, row, write).await? {
            tx.rollback().await?;
            return Ok(false);
        }
        tx.commit().await?;
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
        F: FnOnce(&SagaRow) -> Option<crate::ports::Planned<X>> + Send,
    {
        let mut tx = self.pool.begin().await?;
        let Some(before) = store::lock(&mut tx, saga_id).await? else {
            tx.rollback().await?;
            return Ok(None);
        };
        if only_if_due && !store::still_due(&mut tx, saga_id).await? {
            tx.rollback().await?;
            return Ok(Some(Locked {
                before,
                planned: None,
            }));
        }
        let planned = plan(&before);
        match &planned {
            Some(p) => {
                store::save(&mut tx, &p.after, &p.write).await?;
                tx.commit().await?;
            }
            None => tx.rollback().await?,
        }
        Ok(Some(Locked { before, planned }))
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
