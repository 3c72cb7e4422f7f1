//! A checkout id goes to a saga or to a refusal, never to both, even when the two are
//! written at the same moment by two orchestrators (a valid and a refused copy of one id).

use crate::support::*;
use checkout_door::validate::Rejection;
use checkout_orchestrator::rejections::{self, RejectionRow};

/// Sessions of this database waiting for a lock, polled until one is (bounded): the saga
/// insert should be queued behind the refusal's uncommitted claim.
async fn wait_for_a_lock_wait(pool: &PgPool) -> bool {
    for _ in 0..100 {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(pool)
        .await
        .unwrap();
        if waiting > 0 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

async fn sagas_with(pool: &PgPool, saga_id: Uuid) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM saga.sagas WHERE saga_id = $1")
        .bind(saga_id)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_saga_racing_an_uncommitted_refusal_for_its_id_is_not_started() {
    let (nats, _db, pool, _js) = setup().await;
    let client = nats.admin_client().await.unwrap();
    let (executor, _exported) = Executor::new(pool.clone(), client, SpanFlusher::disabled(), SLOW);
    let data = data();
    let saga_id = data.request.checkout_id;
    let refusal = RejectionRow::new(
        saga_id,
        &Rejection::UnknownSku {
            field: "items[0].sku".into(),
            sku: "SKU-NOPE".into(),
        },
        String::new(),
    );

    let mut refusing = pool.begin().await.unwrap();
    let stored = rejections::record(&mut *refusing, &refusal).await.unwrap();
    assert_eq!(
        stored.map(|row| (row.saga_id, row.code)),
        Some((saga_id, refusal.code)),
        "the refusal claims the id"
    );

    let starting = tokio::spawn(async move {
        executor
            .record_start(data, &opentelemetry::Context::new())
            .await
            .unwrap()
    });
    let queued = wait_for_a_lock_wait(&pool).await;
    refusing.commit().await.unwrap();
    let started = starting.await.unwrap();

    assert!(
        started.is_none(),
        "a saga was started for an id refused at the same moment"
    );
    assert_eq!(sagas_with(&pool, saga_id).await, 0);
    assert!(queued, "the saga insert waited for the refusal's claim");
}

#[tokio::test]
async fn a_refusal_for_the_id_of_a_started_saga_is_not_recorded() {
    let (nats, _db, pool, _js) = setup().await;
    let client = nats.admin_client().await.unwrap();
    let (executor, _exported) = Executor::new(pool.clone(), client, SpanFlusher::disabled(), SLOW);
    let data = data();
    let saga_id = data.request.checkout_id;
    let started = executor
        .record_start(data, &opentelemetry::Context::new())
        .await
        .unwrap();
    assert!(started.is_some());
    let refusal = RejectionRow::new(
        saga_id,
        &Rejection::UnknownSku {
            field: "items[0].sku".into(),
            sku: "SKU-NOPE".into(),
        },
        String::new(),
    );
    assert_eq!(rejections::record(&pool, &refusal).await.unwrap(), None);
    assert_eq!(sagas_with(&pool, saga_id).await, 1);
}
