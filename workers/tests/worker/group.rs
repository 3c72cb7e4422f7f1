//! Group commit: actions queued together share one statement, and each still gets its own
//! answer; an action that makes the statement fail fails alone.

use crate::support::World;
use checkout_shared::messages::{Command, Outcome};
use checkout_shared::{Envelope, Step};
use checkout_workers::calls::Db;
use checkout_workers::{Faults, handler};
use uuid::Uuid;

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
    let calls = sagas.iter().map(|&saga| {
        let (db, handler) = (db.clone(), handler.clone());
        tokio::spawn(async move {
            let command = Command::ChargePayment {
                customer_id: "c".into(),
                payment_token: "tok_visa".into(),
                amount_cents: if saga == bad { -5 } else { 700 },
            };
            let (step, phase) = command.step_phase();
            let envelope = Envelope::command(saga, step, phase);
            (
                saga,
                handler::apply_once(&db, &handler, &envelope, &command).await,
            )
        })
    });
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
