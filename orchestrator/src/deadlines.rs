//! The deadline scanner: sagas whose command got no reply in time are timed out, a batch at a
//! time (the executor re-sends, undoes, or flags them; see the machine).

use crate::executor::Executor;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Times out commands whose reply is late, a batch at a time.
pub async fn scan(executor: &Executor, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let due = match executor.due(256).await {
            Ok(due) => due,
            Err(err) => {
                tracing::warn!(error = %err, "deadline scan failed");
                continue;
            }
        };
        for saga_id in due {
            if shutdown.is_cancelled() {
                return;
            }
            let span = tracing::info_span!("saga deadline", saga.id = %saga_id);
            if let Err(err) = executor.time_out(saga_id).instrument(span).await {
                tracing::warn!(%saga_id, error = %err, "timeout not applied; will retry");
            }
        }
    }
}
