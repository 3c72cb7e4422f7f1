//! Retention: one pass deletes exactly the sagas that ended long enough ago and can no longer
//! move, with their log, and nothing that is still running, stuck or awaiting a reply; and the
//! refused checkouts recorded long enough ago.

use crate::support::*;
use checkout_orchestrator::retention::prune_pass;
use checkout_shared::retention::Retention;

const DAY: f64 = 86_400.0;

/// Inserts a saga as the store would leave it (with two log rows): `status`, ended (or last
/// changed) `age_days` ago, with a deadline `deadline` days ahead if any. An ended saga, and
/// any saga without a deadline (so that only its status can keep it), has a `finished_at`.
async fn saga(pool: &PgPool, status: &str, age_days: f64, deadline: Option<f64>) -> Uuid {
    let saga_id = Uuid::new_v4();
    let ended = matches!(status, "completed" | "compensated" | "failed") || deadline.is_none();
    sqlx::query(
        "INSERT INTO saga.sagas (saga_id, status, state, version, trace_id, saga_span_id, \
             sampled, step_span_id, step_started_at, deadline_at, started_at, updated_at, \
             finished_at) \
         VALUES ($1, $2, '{}', 3, '0af7651916cd43dd8448eb211c80319c', 'b7ad6b7169203331', true, \
             'b7ad6b7169203332', now() - make_interval(secs => $3), \
             now() + make_interval(secs => $4), now() - make_interval(secs => $3 + 10), \
             now() - make_interval(secs => $3), \
             CASE WHEN $5 THEN now() - make_interval(secs => $3) END)",
    )
    .bind(saga_id)
    .bind(status)
    .bind(age_days * DAY)
    .bind(deadline.map(|days| days * DAY))
    .bind(ended)
    .execute(pool)
    .await
    .unwrap();
    claim(pool, saga_id).await;
    for event in ["started", "succeeded"] {
        sqlx::query(
            "INSERT INTO saga.saga_log (saga_id, step, event, at) \
             VALUES ($1, 'inventory', $2, now() - make_interval(secs => $3))",
        )
        .bind(saga_id)
        .bind(event)
        .bind(age_days * DAY)
        .execute(pool)
        .await
        .unwrap();
    }
    saga_id
}

/// Claims the id as a saga or a refusal does (`saga.checkout_ids`).
async fn claim(pool: &PgPool, saga_id: Uuid) {
    sqlx::query("INSERT INTO saga.checkout_ids (saga_id) VALUES ($1)")
        .bind(saga_id)
        .execute(pool)
        .await
        .unwrap();
}

/// The claimed ids, sorted.
async fn claims(pool: &PgPool) -> Vec<Uuid> {
    sqlx::query_scalar("SELECT saga_id FROM saga.checkout_ids ORDER BY saga_id")
        .fetch_all(pool)
        .await
        .unwrap()
}

async fn kept(pool: &PgPool) -> Vec<(Uuid, i64)> {
    sqlx::query_as(
        "SELECT s.saga_id, (SELECT count(*) FROM saga.saga_log l WHERE l.saga_id = s.saga_id) \
         FROM saga.sagas s ORDER BY s.saga_id",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_deletes_only_sagas_that_ended_before_the_retention_with_their_log() {
    let db = TestDb::create().await.unwrap();
    let pool = PgPool::connect(&db.url()).await.unwrap();
    migrate(&pool).await.unwrap();
    let week = Retention {
        keep: Duration::from_secs(7 * 86_400),
        interval: Duration::from_secs(60),
    };
    let old_ended = [
        saga(&pool, "completed", 8.0, None).await,
        saga(&pool, "compensated", 30.0, None).await,
        saga(&pool, "failed", 7.5, None).await,
    ];
    let mut survivors = vec![
        // Ended, but within the retention.
        saga(&pool, "completed", 6.0, None).await,
        // Old, but an undo is still retried (a stuck saga keeps its deadline), or still in
        // flight, or completed and still awaiting its confirmation.
        saga(&pool, "stuck", 20.0, Some(0.001)).await,
        saga(&pool, "running", 20.0, Some(0.001)).await,
        saga(&pool, "compensating", 20.0, Some(0.001)).await,
        saga(&pool, "completed", 20.0, Some(0.001)).await,
        // Old and without a deadline, yet not ended: never the pruner's to judge.
        saga(&pool, "running", 20.0, None).await,
    ];
    survivors.sort();

    assert_eq!(
        prune_pass(&pool, week).await.unwrap(),
        3,
        "the three old ended sagas"
    );
    let left = kept(&pool).await;
    let ids: Vec<Uuid> = left.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, survivors);
    assert_eq!(
        claims(&pool).await,
        survivors,
        "the pruned ids' claims went too"
    );
    assert!(
        left.iter().all(|(_, log)| *log == 2),
        "their log is whole: {left:?}"
    );
    let orphans: i64 =
        sqlx::query_scalar("SELECT count(*) FROM saga.saga_log WHERE saga_id = ANY($1)")
            .bind(&old_ended[..])
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(orphans, 0, "the pruned sagas' log went with them");
    assert_eq!(
        prune_pass(&pool, week).await.unwrap(),
        0,
        "nothing more is due"
    );

    pool.close().await;
    db.drop_db().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_larger_than_a_pass_is_worked_off_over_several_passes() {
    let db = TestDb::create().await.unwrap();
    let pool = PgPool::connect(&db.url()).await.unwrap();
    migrate(&pool).await.unwrap();
    let bound = checkout_shared::retention::BATCH as u64
        * checkout_shared::retention::BATCHES_PER_PASS as u64;
    sqlx::query(
        "INSERT INTO saga.sagas (saga_id, status, state, version, trace_id, saga_span_id, \
             sampled, step_span_id, step_started_at, started_at, updated_at, finished_at) \
         SELECT gen_random_uuid(), 'completed', '{}', 3, 't', 's', true, 's', \
             now() - interval '9 days', now() - interval '9 days', now() - interval '9 days', \
             now() - interval '9 days' \
         FROM generate_series(1, $1)",
    )
    .bind(bound as i64 + 5)
    .execute(&pool)
    .await
    .unwrap();
    let retention = Retention::default();
    assert_eq!(
        prune_pass(&pool, retention).await.unwrap(),
        bound,
        "one pass is bounded"
    );
    assert_eq!(
        prune_pass(&pool, retention).await.unwrap(),
        5,
        "the next takes the rest"
    );
    pool.close().await;
    db.drop_db().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_checkouts_are_kept_as_long_as_sagas() {
    let db = TestDb::create().await.unwrap();
    let pool = PgPool::connect(&db.url()).await.unwrap();
    migrate(&pool).await.unwrap();
    let refused = |age_days: f64| {
        let pool = pool.clone();
        async move {
            let saga_id = Uuid::new_v4();
            sqlx::query(
                "INSERT INTO saga.rejections (saga_id, code, reason, trace_id, at) \
                 VALUES ($1, 'unknown_sku', 'unknown sku', '', now() - make_interval(secs => $2))",
            )
            .bind(saga_id)
            .bind(age_days * DAY)
            .execute(&pool)
            .await
            .unwrap();
            claim(&pool, saga_id).await;
            saga_id
        }
    };
    refused(8.0).await;
    let recent = refused(6.0).await;
    assert_eq!(prune_pass(&pool, Retention::default()).await.unwrap(), 1);
    let left: Vec<Uuid> = sqlx::query_scalar("SELECT saga_id FROM saga.rejections")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(left, vec![recent], "only the one past the week went");
    assert_eq!(claims(&pool).await, vec![recent], "and its claim with it");
    pool.close().await;
    db.drop_db().await.unwrap();
}
