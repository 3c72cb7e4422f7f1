//! The database's CHECK constraints against the state words they store: every word of
//! `SagaStatus`, `LogEvent` and `RejectionCode` is accepted, nothing else is, so a word added
//! on one side only fails here rather than on a saga in production.

use crate::support::*;
use checkout_shared::{LogEvent, RejectionCode};
use std::collections::BTreeSet;
use strum::VariantArray;

/// The words a CHECK constraint allows, as PostgreSQL prints it back:
/// `CHECK ((status = ANY (ARRAY['running'::text, ...])))`.
async fn allowed(pool: &PgPool, table: &str, constraint: &str) -> BTreeSet<String> {
    let definition: String = sqlx::query_scalar(
        "SELECT pg_get_constraintdef(c.oid) FROM pg_constraint c \
         JOIN pg_class t ON t.oid = c.conrelid JOIN pg_namespace n ON n.oid = t.relnamespace \
         WHERE n.nspname = 'saga' AND t.relname = $1 AND c.conname = $2",
    )
    .bind(table)
    .bind(constraint)
    .fetch_one(pool)
    .await
    .unwrap();
    definition
        .split('\'')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

fn words<T: Copy + std::fmt::Display>(all: &[T]) -> BTreeSet<String> {
    all.iter().map(ToString::to_string).collect()
}

#[tokio::test]
async fn the_check_constraints_allow_exactly_the_state_words() {
    let db = TestDb::create().await.unwrap();
    let pool = PgPool::connect(&db.url()).await.unwrap();
    migrate(&pool).await.unwrap();
    assert_eq!(
        allowed(&pool, "sagas", "sagas_status_check").await,
        words(SagaStatus::VARIANTS)
    );
    assert_eq!(
        allowed(&pool, "saga_log", "saga_log_event_check").await,
        words(LogEvent::VARIANTS)
    );
    assert_eq!(
        allowed(&pool, "rejections", "rejections_code_check").await,
        words(RejectionCode::VARIANTS)
    );

    // And PostgreSQL enforces them: each word goes in, a stranger does not.
    let saga_id = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO saga.sagas (saga_id, status, state, version, trace_id, saga_span_id, \
         sampled, step_span_id, step_started_at, started_at, updated_at) \
         VALUES ($1, 'running', '{}', 1, 't', 's', true, 's', now(), now(), now())",
    )
    .bind(saga_id)
    .execute(&pool)
    .await
    .unwrap();
    for status in SagaStatus::VARIANTS {
        sqlx::query("UPDATE saga.sagas SET status = $2 WHERE saga_id = $1")
            .bind(saga_id)
            .bind(status.as_str())
            .execute(&pool)
            .await
            .unwrap_or_else(|e| panic!("status {status}: {e}"));
    }
    for event in LogEvent::VARIANTS {
        sqlx::query("INSERT INTO saga.saga_log (saga_id, event) VALUES ($1, $2)")
            .bind(saga_id)
            .bind(event.as_str())
            .execute(&pool)
            .await
            .unwrap_or_else(|e| panic!("log event {event}: {e}"));
    }
    for code in RejectionCode::VARIANTS {
        sqlx::query(
            "INSERT INTO saga.rejections (saga_id, code, reason, trace_id) VALUES ($1, $2, '', '')",
        )
        .bind(Uuid::new_v4())
        .bind(code.as_str())
        .execute(&pool)
        .await
        .unwrap_or_else(|e| panic!("rejection code {code}: {e}"));
    }
    let unknown_code = sqlx::query(
        "INSERT INTO saga.rejections (saga_id, code, reason, trace_id) VALUES ($1, 'nope', '', '')",
    )
    .bind(Uuid::new_v4())
    .execute(&pool)
    .await;
    assert!(unknown_code.is_err(), "a code no enum has is refused");
    let stranger = sqlx::query("UPDATE saga.sagas SET status = 'paused' WHERE saga_id = $1")
        .bind(saga_id)
        .execute(&pool)
        .await;
    assert!(stranger.is_err(), "a status no enum has is refused");
    pool.close().await;
    db.drop_db().await.unwrap();
}
