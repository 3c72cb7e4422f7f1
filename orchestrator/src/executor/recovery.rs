//! After a restart: spans whose export is in doubt are emitted again, and every active saga's
//! command is re-sent (JetStream drops it if the first send got through). Meanwhile exported
//! spans are confirmed in batches, so recovery only re-emits what is really in doubt.

use super::{ExecError, Executor};
use crate::ports::{SagaStore, Transport};
use crate::spans;
use std::time::Duration;
use tokio::sync::mpsc;
use uuid::Uuid;

/// How long a transition's spans may stay pending before the sweep emits them: far longer
/// than a confirmation takes (a flush, about 200 ms), so a span is emitted twice only when
/// its first emission really is in doubt.
const STALE_SWEEP: Duration = Duration::from_secs(10);

/// At most this many transitions' spans per sweep, oldest first: while the exporter fails,
/// each sweep emits the backlog again, and it must stay a bounded amount of work.
const STALE_BATCH: i64 = 500;

impl<S: SagaStore, T: Transport> Executor<S, T> {
    /// Confirms exported spans in batches, after a flush, so recovery re-emits only spans
    /// whose export is in doubt.
    ///
    /// Every [`STALE_SWEEP`] it also emits spans left pending for longer than that: their
    /// transition was written but its writer was told it was not (the statement's answer was
    /// lost with the connection, and a retry found the version moved), so nobody emitted them.
    pub async fn confirm_exports(&self, mut rx: mpsc::Receiver<(Uuid, i64)>) {
        let mut batch = Vec::new();
        let mut sweep = tokio::time::interval(STALE_SWEEP);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                received = rx.recv_many(&mut batch, 1_024) => if received == 0 { return },
                _ = sweep.tick() => {
                    self.emit_stale().await;
                    continue;
                }
            }
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

    async fn emit_stale(&self) {
        match self
            .store
            .stale_pending_spans(STALE_SWEEP, STALE_BATCH)
            .await
        {
            Ok(stale) => {
                for (saga_id, version, pending) in stale {
                    tracing::info!(%saga_id, version, spans = pending.len(), "emitting spans left pending");
                    pending.iter().for_each(spans::emit);
                    let _ = self.exported.try_send((saga_id, version));
                }
            }
            Err(err) => tracing::warn!(error = %err, "could not look for spans left pending"),
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
