//! Retention: how long each service keeps what it no longer needs (ended sagas and their log,
//! processed-message records, idempotency keys), and the one loop every pruner shares.
//!
//! ```text
//!  every period ─▶ pass: delete one batch ─▶ a full batch? ─yes─▶ another (at most
//!                          (≤ BATCH rows)        │ no                BATCHES_PER_PASS)
//!                                                ▼
//!                            log and count what went (checkout.pruned)
//! ```
//!
//! A pass is bounded (at most `BATCH × BATCHES_PER_PASS` rows, each batch its own short
//! statement), so pruning a backlog never holds locks or a transaction for long, and a
//! backlog left by a long outage is worked off over a few periods instead of in one go.
//! Which rows may go is each owner's business; this module only knows how often and how many.
//! The statements themselves live with their schemas (no schema in this crate).

use std::future::Future;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Rows deleted by one statement.
pub const BATCH: i64 = 2_000;

/// Statements in one pass at most.
pub const BATCHES_PER_PASS: usize = 10;

/// The default retention of sagas and processed messages: a week.
pub const DEFAULT_KEEP: Duration = Duration::from_secs(7 * 24 * 3600);

/// The default pause between two passes.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);

/// How long to keep rows, and how often to look for rows past it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Rows older than this go.
    pub keep: Duration,
    /// The pause between passes (shortened for a short `keep`: see [`Retention::period`]).
    pub interval: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            keep: DEFAULT_KEEP,
            interval: DEFAULT_INTERVAL,
        }
    }
}

impl Retention {
    /// The pause between passes: `interval`, but at most half of `keep` (so nothing outlives
    /// its retention by more than half of it) and at least a second (so a tiny retention
    /// does not spin).
    pub fn period(&self) -> Duration {
        self.interval.min(self.keep / 2).max(Duration::from_secs(1))
    }

    /// `keep` in seconds, as the pruning statements bind it (`make_interval(secs => $1)`).
    pub fn keep_secs(&self) -> f64 {
        self.keep.as_secs_f64()
    }
}

/// One bounded pass: calls `delete_batch(BATCH)` until a batch deletes fewer than `BATCH`
/// rows (nothing more is due) or [`BATCHES_PER_PASS`] statements ran. Returns the rows
/// deleted; an error ends the pass, keeping what earlier batches deleted.
pub async fn pass<E, F, Fut>(mut delete_batch: F) -> Result<u64, E>
where
    F: FnMut(i64) -> Fut,
    Fut: Future<Output = Result<u64, E>>,
{
    let mut deleted = 0;
    for _ in 0..BATCHES_PER_PASS {
        let rows = delete_batch(BATCH).await?;
        deleted += rows;
        if rows < BATCH as u64 {
            break;
        }
    }
    Ok(deleted)
}

/// What a pruner deletes, for its log line and the `checkout.pruned` metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    /// The schema (`db.namespace`).
    pub schema: &'static str,
    /// The table whose rows are counted (`db.collection.name`).
    pub table: &'static str,
}

/// Runs `prune` (one pass) every [`Retention::period`] until `shutdown`. A pass that fails
/// (the database is down) is logged and tried again at the next period: pruning is never
/// urgent, and a failing pass must not stop the service it runs in.
pub async fn every<E, F, Fut>(
    target: Target,
    retention: Retention,
    shutdown: CancellationToken,
    mut prune: F,
) where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<u64, E>>,
{
    let mut tick = tokio::time::interval(retention.period());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        // A pass is bounded, so shutdown waits at most one pass of a few short statements.
        match prune().await {
            Ok(0) => {}
            Ok(rows) => {
                tracing::info!(
                    schema = target.schema,
                    table = target.table,
                    rows,
                    keep_secs = retention.keep.as_secs(),
                    "pruned rows past their retention"
                );
                crate::metrics::get().pruned(target.schema, target.table, rows);
            }
            Err(err) => {
                tracing::warn!(
                    schema = target.schema,
                    table = target.table,
                    error = %err,
                    "pruning failed; will try again"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn the_period_is_the_interval_but_at_most_half_the_retention_and_at_least_a_second() {
        let at = |keep, interval| {
            Retention {
                keep: Duration::from_secs(keep),
                interval: Duration::from_secs(interval),
            }
            .period()
        };
        assert_eq!(at(604_800, 60), Duration::from_secs(60));
        assert_eq!(at(30, 60), Duration::from_secs(15));
        assert_eq!(at(30, 5), Duration::from_secs(5));
        assert_eq!(at(1, 60), Duration::from_secs(1), "never spins");
        assert_eq!(at(600, 0), Duration::from_secs(1), "never spins");
    }

    #[tokio::test]
    async fn a_pass_stops_at_a_short_batch_or_at_its_bound() {
        // A backlog of 4,500 rows: two full batches and a short one.
        let left = Cell::new(4_500u64);
        let calls = Cell::new(0);
        let deleted = pass(|batch| {
            calls.set(calls.get() + 1);
            let rows = left.get().min(batch as u64);
            left.set(left.get() - rows);
            async move { Ok::<_, String>(rows) }
        })
        .await
        .unwrap();
        assert_eq!((deleted, calls.get()), (4_500, 3));

        // A backlog larger than a pass: the pass stops at its bound and leaves the rest.
        let calls = Cell::new(0);
        let deleted = pass(|batch| {
            calls.set(calls.get() + 1);
            async move { Ok::<_, String>(batch as u64) }
        })
        .await
        .unwrap();
        assert_eq!(calls.get(), BATCHES_PER_PASS);
        assert_eq!(deleted, BATCH as u64 * BATCHES_PER_PASS as u64);

        let failed = pass(|_| async { Err::<u64, _>("down") }).await;
        assert_eq!(failed, Err("down"));
    }
}
