//! The checkouts a gateway has accepted, so that their status answers at once.
//!
//! ```text
//!  POST /checkout ─▶ checks ─▶ record (saga id, trace id) ─▶ publish ─▶ 202 Location
//!  GET /checkouts/{id} ─▶ lifecycle events? ─yes─▶ their fold (running, completed, ...)
//!                                  │ no
//!                                  └─▶ recorded? ─yes─▶ 200 `accepted`   ─no─▶ 404
//! ```
//!
//! A client that follows the `Location` of a `202` may arrive before the orchestrator has said
//! anything about the saga; the lifecycle stream alone would answer 404. The record lives in
//! the shared `gateway` schema, so a read that lands on another gateway finds it too. It is
//! written before the checkout is published: a publish that fails leaves a record of a saga
//! that never starts, whose id only a client with an `Idempotency-Key` can know (it retries
//! and publishes again); a record written after the publish could be missing when the saga
//! already runs. Records are pruned after the idempotency keys' retention.

use checkout_shared::retention::{self, Retention};
use sqlx::PgPool;
use uuid::Uuid;

/// Records that the gateway accepted `saga_id` in trace `trace_id` (again: no change).
pub async fn record(pool: &PgPool, saga_id: Uuid, trace_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO gateway.accepted_checkouts (saga_id, trace_id) VALUES ($1, $2) \
         ON CONFLICT (saga_id) DO NOTHING",
    )
    .bind(saga_id)
    .bind(trace_id)
    .execute(pool)
    .await?;
    Ok(())
}

/// The trace of an accepted checkout, if a gateway accepted it (and its record is kept).
pub async fn trace_of(pool: &PgPool, saga_id: Uuid) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT trace_id FROM gateway.accepted_checkouts WHERE saga_id = $1")
        .bind(saga_id)
        .fetch_optional(pool)
        .await
}

/// One bounded pass: deletes the records older than `retention.keep`, as
/// [`crate::idempotency::prune_pass`] does for the keys.
pub async fn prune_pass(pool: &PgPool, retention: Retention) -> Result<u64, sqlx::Error> {
    retention::pass(|batch| async move {
        let done = sqlx::query(
            "DELETE FROM gateway.accepted_checkouts WHERE saga_id IN ( \
                 SELECT saga_id FROM gateway.accepted_checkouts \
                 WHERE accepted_at < now() - make_interval(secs => $1) \
                 ORDER BY accepted_at LIMIT $2 FOR UPDATE SKIP LOCKED)",
        )
        .bind(retention.keep_secs())
        .bind(batch)
        .execute(pool)
        .await?;
        Ok(done.rows_affected())
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_record_is_found_by_its_saga_and_goes_after_its_retention() {
        let db = checkout_harness::TestDb::create().await.unwrap();
        let pool = PgPool::connect(&db.url()).await.unwrap();
        crate::migrate(&pool).await.unwrap();
        let (old, new) = (Uuid::new_v4(), Uuid::new_v4());
        record(&pool, old, "t-old").await.unwrap();
        record(&pool, new, "t-new").await.unwrap();
        record(&pool, new, "t-replay").await.unwrap();
        assert_eq!(
            trace_of(&pool, new).await.unwrap().as_deref(),
            Some("t-new")
        );
        assert_eq!(trace_of(&pool, Uuid::new_v4()).await.unwrap(), None);
        sqlx::query(
            "UPDATE gateway.accepted_checkouts SET accepted_at = now() - interval '25 hours' \
             WHERE saga_id = $1",
        )
        .bind(old)
        .execute(&pool)
        .await
        .unwrap();
        let day = Retention {
            keep: std::time::Duration::from_secs(86_400),
            interval: std::time::Duration::from_secs(60),
        };
        assert_eq!(prune_pass(&pool, day).await.unwrap(), 1);
        assert_eq!(trace_of(&pool, old).await.unwrap(), None);
        assert!(trace_of(&pool, new).await.unwrap().is_some());
        pool.close().await;
        db.drop_db().await.unwrap();
    }
}
