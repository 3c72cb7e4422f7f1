//! The processed-message records' retention: a worker deletes its schema's records older than
//! the retention, a bounded batch at a time ([`checkout_shared::retention`]).
//!
//! ```text
//!  every period ─▶ prune_pass ─▶ DELETE ≤ 2,000 <schema>.processed_messages
//!                                   WHERE processed_at < now() - keep
//! ```
//!
//! Only the records of what was processed go. The business records (stock, reservations,
//! the payment ledger, orders, confirmations) are never pruned here: they are the business's
//! own records, and they also hold the tombstones (a void reservation or order, a zero
//! refund) that refuse an action arriving after its undo.
//!
//! Why deleting a record after the retention is safe: a record only spares a later delivery
//! of the same command the work of deciding again; the one-effect guarantee rests on the
//! business tables, which every `*_once` function reads under the saga's lock after missing
//! the record (workers/migrations/*/0010, notification's 0002):
//!
//! - `inventory.reserve_once`: a reservation (or tombstone) for the saga exists, so it
//!   refuses (`already_done` / `cancelled_before_done`) without touching stock;
//!   `release_once`: the reservation is no longer `held`, so nothing is given back twice;
//! - `orders.create_once`: an order per saga exists, so it refuses (`already_done`);
//!   `cancel_once`: only a `created` order is cancelled, the tombstone insert conflicts;
//! - `payment.refund_once`: one refund per saga (the ledger's key), `ON CONFLICT DO NOTHING`;
//!   `payment.charge_once` (since payment's 0012): the saga's charge in the ledger is the
//!   answer, replied as the first delivery's success (the simulated card gateway, asked
//!   before the statement as for any duplicate, is asked again);
//! - `notification.sent_before` finds the confirmation of the saga, so no mail is sent again
//!   and `confirm_once` answers with that confirmation.
//!
//! A decision that left no business row (a refusal: a decline, an unknown SKU, a failed
//! confirmation) is decided afresh, as deterministically as its inputs. So a replay after the
//! retention may answer differently (a refusal where the first delivery succeeded) but never
//! acts twice; and with a retention of days, no command of the saga is still travelling.

use checkout_shared::Step;
use checkout_shared::retention::{self, Retention, Target};
use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The batch delete of `schema`'s records past `$1` seconds, at most `$2` rows. `SKIP LOCKED`:
/// the instances of one worker kind all prune the same table, and none waits for another.
fn delete_batch(schema: &str) -> String {
    format!(
        "DELETE FROM {schema}.processed_messages WHERE action_key IN ( \
             SELECT action_key FROM {schema}.processed_messages \
             WHERE processed_at < now() - make_interval(secs => $1) \
             ORDER BY processed_at LIMIT $2 FOR UPDATE SKIP LOCKED)"
    )
}

/// One bounded pass over `kind`'s processed-message records. Returns how many went.
pub async fn prune_pass(
    pool: &PgPool,
    kind: Step,
    retention: Retention,
) -> Result<u64, sqlx::Error> {
    // The schema comes from the step table's constants, never from input.
    let statement = delete_batch(kind.schema());
    retention::pass(|batch| {
        let statement = statement.clone();
        async move {
            let done = sqlx::query(sqlx::AssertSqlSafe(statement))
                .bind(retention.keep_secs())
                .bind(batch)
                .execute(pool)
                .await?;
            Ok(done.rows_affected())
        }
    })
    .await
}

/// Starts the pruner of `kind`'s records; it ends on `shutdown`.
pub fn spawn(
    pool: PgPool,
    kind: Step,
    retention: Retention,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    let target = Target {
        schema: kind.schema(),
        table: "processed_messages",
    };
    tokio::spawn(async move {
        retention::every(target, retention, shutdown, || {
            prune_pass(&pool, kind, retention)
        })
        .await;
    })
}
