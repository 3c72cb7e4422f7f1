//! After a restart: spans whose export is in doubt are emitted again, and every active saga's
//! command is re-sent (JetStream drops it if the first send got through). Meanwhile exported
//! spans are confirmed in batches, so recovery only re-emits what is really in doubt.

use super::{ExecError, Executor};
use crate::ports::{SagaStore, Transport};
use crate::spans;
use std::time::Duration;
use tokio::sync::mpsc;
use uuid::Uuid;

impl<S: SagaStore, T: Transport> Executor<S, T> {
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
