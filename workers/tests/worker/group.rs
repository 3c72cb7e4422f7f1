//! Group commit: actions queued together share one statement and one transaction, and each
//! still gets its own answer; an action that makes the statement fail fails alone.

use crate::support::World;
use checkout_shared::messages::{Command, Outcome, Reply};
use checkout_shared::{Envelope, Step};
use checkout_workers::calls::Db;
use checkout_workers::error::Failure;
use checkout_workers::{Faults, handler};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use uuid::Uuid;

/// Charges `amount_cents` for `saga` through the group commit, as a worker would.
fn charge(
    db: &Db,
    handler: &handler::Handler,
    saga: Uuid,
    amount_cents: i64,
) -> JoinHandle<(Uuid, Result<Reply, Failure>)> {
    let (db, handler) = (db.clone(), handler.clone());
    tokio::spawn(async move {
        let command = Command::ChargePayment {
            customer_id: "c".into(),
            payment_token: "tok_visa".into(),
            amount_cents,
        };
        let (step, phase) = command.step_phase();
        let envelope = Envelope::command(saga, step, phase);
        (
            saga,
            handler::apply_once(&db, &handler, &envelope, &command).await,
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actions_queued_behind_a_batch_commit_together_in_one_transaction() {
    let world = World::new().await;
    world.migrate(Step::Payment).await;
    let db = Db::new(world.pool.clone());
    let handler = handler::Handler::new(Step::Payment, Faults::default());
    // The ledger locked against inserts: the first batch waits inside its statement, as a slow
    // commit would, and every charge submitted meanwhile queues behind it.
    let mut blocker = world.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE payment.ledger IN SHARE MODE")
        .execute(&mut *blocker)
        .await
        .unwrap();
    let sagas: Vec<Uuid> = (0..24).map(|_| Uuid::new_v4()).collect();
    let calls: Vec<_> = sagas
        .iter()
        .map(|&saga| charge(&db, &handler, saga, 700))
        .collect();
    let waited = Instant::now();
    loop {
        let (waiting,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM pg_locks \
             WHERE relation = 'payment.ledger'::regclass AND NOT granted",
        )
        .fetch_one(&world.pool)
        .await
        .unwrap();
        if waiting > 0 {
            break;
        }
        assert!(waited.elapsed() < Duration::from_secs(10), "no batch ran");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Time for the other tasks to submit (they do no I/O before); a late one only makes a
    // batch more.
    tokio::time::sleep(Duration::from_millis(300)).await;
    blocker.commit().await.unwrap();

    for joined in futures::future::join_all(calls).await {
        let (saga, result) = joined.unwrap();
        let reply = result.unwrap();
        assert_eq!(reply.saga_id, saga, "each caller gets its own reply");
        assert!(
            matches!(reply.outcome, Outcome::StepSucceeded { .. }),
            "{reply:?}"
        );
    }
    // A row's `xmin` is the transaction that inserted it: rows that share one were committed by
    // one statement. One action per batch would give each charge its own.
    let per_transaction: Vec<(i64,)> = sqlx::query_as(
        "SELECT count(*) FROM payment.ledger WHERE kind = 'charge' \
         GROUP BY xmin::text ORDER BY 1 DESC",
    )
    .fetch_all(&world.pool)
    .await
    .unwrap();
    let sizes: Vec<i64> = per_transaction.into_iter().map(|(n,)| n).collect();
    assert_eq!(sizes.iter().sum::<i64>(), 24, "each charge once: {sizes:?}");
    assert!(
        sizes.len() < sagas.len() && sizes[0] > 1,
        "24 charges committed by fewer transactions, one of several: {sizes:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_bad_action_in_a_batch_fails_alone_and_the_others_are_done_once() {
    let world = World::new().await;
    world.migrate(Step::Payment).await;
    let db = Db::new(world.pool.clone());
    let handler = handler::Handler::new(Step::Payment, Faults::default());
    let sagas: Vec<Uuid> = (0..24).map(|_| Uuid::new_v4()).collect();
    // A negative amount breaks the ledger's check: the whole statement fails, then each of
    // its actions runs alone.
    let bad = sagas[7];
    let calls = sagas
        .iter()
        .map(|&saga| charge(&db, &handler, saga, if saga == bad { -5 } else { 700 }));
    for joined in futures::future::join_all(calls).await {
        let (saga, result) = joined.unwrap();
        if saga == bad {
            assert!(result.is_err(), "the bad charge fails: {result:?}");
            continue;
        }
        let reply = result.unwrap();
        assert_eq!(reply.saga_id, saga, "each caller gets its own reply");
        assert!(
            matches!(reply.outcome, Outcome::StepSucceeded { .. }),
            "{reply:?}"
        );
    }
    let (charges, total): (i64, Option<i64>) = sqlx::query_as(
        "SELECT count(*), sum(amount_cents)::bigint FROM payment.ledger WHERE kind = 'charge'",
    )
    .fetch_one(&world.pool)
    .await
    .unwrap();
    assert_eq!(
        (charges, total),
        (23, Some(23 * 700)),
        "each good charge once"
    );
}
