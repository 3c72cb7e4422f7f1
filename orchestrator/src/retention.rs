//! The saga table's retention: ended sagas, with their log, are deleted once they have been
//! over for longer than the retention, a bounded batch at a time
//! ([`checkout_shared::retention`]).
//!
//! ```text
//!  every period ─▶ prune_pass ─▶ DELETE ≤ 2,000 sagas ended before now() - keep, log first
//!                          (completed, compensated or failed, no deadline, no pending span)
//!                    ─▶ DELETE ≤ 2,000 refused checkouts recorded before now() - keep
//! ```
//!
//! Only a saga that nothing can move on any more goes: its status is an end and it has no
//! deadline. A running or compensating saga, a stuck one (an undo still retried) and a
//! completed one still awaiting its confirmation all have a deadline, and the status check
//! keeps them even if one had none. Nor does a saga whose spans are not yet confirmed
//! exported (the sweep still owes them to its trace). A reply that arrives for a deleted saga is ignored as an
//! input for an unknown saga, as it would be for a saga that ended.
//!
//! What a deleted saga takes with it: `checkout show` and `checkout stuck` no longer find it,
//! and a checkout request with its id (an Idempotency-Key retried after the retention) would
//! start it afresh, so the retention must outlast the gateway's idempotency keys and any
//! client's retries; the default (a week) does, by far.

use checkout_shared::retention::{self, Retention, Target};
use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// What the pruner counts: sagas (their log rows go with them).
const SAGAS: Target = Target {
    schema: "saga",
    table: "sagas",
};

/// Deletes one batch: the oldest `$2` prunable sagas ended more than `$1` seconds ago, and
/// their log rows and id claims in the same statement (the log references the saga). `SKIP LOCKED`: a row
/// another orchestrator is pruning (or, however unlikely, writing) is left for a later pass
/// rather than waited for. Only the pruner deletes rows, and only rows past the retention.
const DELETE_BATCH: &str = "\
    WITH doomed AS ( \
        SELECT saga_id FROM saga.sagas \
        WHERE deadline_at IS NULL AND finished_at IS NOT NULL \
          AND finished_at < now() - make_interval(secs => $1) \
          AND status IN ('completed', 'compensated', 'failed') \
          AND pending_spans IS NULL \
        ORDER BY finished_at LIMIT $2 \
        FOR UPDATE SKIP LOCKED \
    ), log AS ( \
        DELETE FROM saga.saga_log l USING doomed d WHERE l.saga_id = d.saga_id \
    ), claims AS ( \
        DELETE FROM saga.checkout_ids c USING doomed d WHERE c.saga_id = d.saga_id \
    ) \
    DELETE FROM saga.sagas s USING doomed d WHERE s.saga_id = d.saga_id";

/// Deletes one batch of refused checkouts recorded more than `$1` seconds ago: they are kept
/// as long as sagas, for the same reasons (`show`, and the same answer to a late retry).
const DELETE_REJECTIONS: &str = "\
    WITH doomed AS ( \
        SELECT saga_id FROM saga.rejections WHERE at < now() - make_interval(secs => $1) \
        ORDER BY at LIMIT $2 FOR UPDATE SKIP LOCKED \
    ), claims AS ( \
        DELETE FROM saga.checkout_ids c USING doomed d WHERE c.saga_id = d.saga_id \
    ) \
    DELETE FROM saga.rejections r USING doomed d WHERE r.saga_id = d.saga_id";

/// One bounded pass: deletes the sagas (and their log) past `retention`, then the refused
/// checkouts past it. Returns how many sagas and refused checkouts went.
pub async fn prune_pass(pool: &PgPool, retention: Retention) -> Result<u64, sqlx::Error> {
    let mut deleted = 0;
    for statement in [DELETE_BATCH, DELETE_REJECTIONS] {
        deleted += retention::pass(|batch| async move {
            let done = sqlx::query(statement)
                .bind(retention.keep_secs())
                .bind(batch)
                .execute(pool)
                .await?;
            Ok::<_, sqlx::Error>(done.rows_affected())
        })
        .await?;
    }
    Ok(deleted)
}

/// Starts the pruner as one of the service's supervised tasks; it ends on `shutdown`.
pub fn spawn(
    pool: PgPool,
    retention: Retention,
    shutdown: CancellationToken,
) -> JoinHandle<Result<(), String>> {
    tokio::spawn(async move {
        retention::every(SAGAS, retention, shutdown, || prune_pass(&pool, retention)).await;
        Ok(())
    })
}
