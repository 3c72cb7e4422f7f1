//! Delivery: duplicates, redeliveries after a committed effect, a worker that died between
//! its commit and its ack, undecodable commands, races and dropped connections.

use crate::support::{World, reserve};
use async_nats::jetstream::AckKind;
use checkout_shared::envelope::{Envelope, REASON};
use checkout_shared::messages::{Command, CommandMessage, Outcome, RefusalCode};
use checkout_shared::{Phase, Step, subjects};
use checkout_workers::calls::Db;
use checkout_workers::{Faults, handler};
use futures::StreamExt;
use std::time::Duration;
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_command_twice_has_one_effect_and_the_same_reply() {
    let world = World::new().await;
    let saga = Uuid::new_v4();
    let key = format!("{saga}.inventory.do");
    assert!(!world.send(saga, reserve(3), &key).await);
    assert!(
        world.send(saga, reserve(3), &key).await,
        "JetStream drops a republish with the same id"
    );
    let worker = world.start(Step::Inventory);
    let first = world.replies(1).await;
    // A duplicate that outlived the window (a new message id, the same action).
    assert!(!world.send(saga, reserve(3), &format!("{key}.late")).await);
    let second = world.replies(1).await;
    assert_eq!(first.len(), 1);
    assert_eq!(second, first, "the stored reply is re-sent");
    assert!(matches!(
        first[0].outcome,
        Outcome::StepSucceeded { reference: Some(_) }
    ));
    assert_eq!(world.stock().await, 7, "reserved once");
    world.finish(vec![worker]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_redelivered_after_its_effect_committed_has_one_effect() {
    let world = World::new().await;
    let worker = world.start(Step::Inventory);
    // A first command answered: the worker has provisioned the streams and is consuming.
    let first = Uuid::new_v4();
    world
        .send(first, reserve(1), &format!("{first}.inventory.do"))
        .await;
    assert_eq!(world.replies(1).await.len(), 1);
    // Now replies cannot be stored: the worker commits its effect, fails to publish the reply,
    // and naks, so the command comes back after its effect.
    world.js.delete_stream("CHECKOUT_EVENTS").await.unwrap();
    let saga = Uuid::new_v4();
    world
        .send(saga, reserve(2), &format!("{saga}.inventory.do"))
        .await;
    let consumer = world.consumer("inventory").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let delivered = consumer
            .clone()
            .info()
            .await
            .unwrap()
            .delivered
            .consumer_sequence;
        // One delivery for the first command, at least two for this one.
        if world.stock().await == 7 && delivered >= 3 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the reservation committed and the command was delivered again"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    checkout_shared::streams::provision(&world.js, 1)
        .await
        .unwrap();
    let replies = world.replies(1).await;
    assert_eq!(replies.len(), 1, "the redelivery sends the stored reply");
    assert_eq!(replies[0].saga_id, saga);
    assert!(matches!(
        replies[0].outcome,
        Outcome::StepSucceeded { reference: Some(_) }
    ));
    assert_eq!(
        world.stock().await,
        7,
        "reserved once, though handled again"
    );
    world.finish(vec![worker]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_after_its_commit_and_before_its_ack_does_not_repeat_the_effect() {
    let world = World::new().await;
    world.migrate(Step::Inventory).await;
    let saga = Uuid::new_v4();
    world
        .send(saga, reserve(4), &format!("{saga}.inventory.do"))
        .await;
    // What a worker does before it dies: take the message, commit the effect, never ack.
    let consumer = world.consumer("inventory").await;
    let mut batch = consumer.fetch().max_messages(1).messages().await.unwrap();
    let message = batch.next().await.unwrap().unwrap();
    let envelope = Envelope::read(message.headers.as_ref()).unwrap();
    let body: CommandMessage = serde_json::from_slice(&message.payload).unwrap();
    let handler = handler::Handler::new(Step::Inventory, Faults::default());
    let db = Db::new(world.pool.clone());
    let committed = handler::apply_once(&db, &handler, &envelope, &body.command)
        .await
        .unwrap();
    assert_eq!(world.stock().await, 6);
    // The broker redelivers it (a nak stands in for the ack_wait running out).
    message.ack_with(AckKind::Nak(None)).await.unwrap();
    let worker = world.start(Step::Inventory);
    let replies = world.replies(1).await;
    assert_eq!(
        replies,
        vec![committed],
        "the redelivery re-sends the committed reply"
    );
    assert_eq!(world.stock().await, 6, "and does not reserve again");
    world.finish(vec![worker]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_command_is_dead_lettered_with_its_reason_and_the_saga_told() {
    let world = World::new().await;
    let saga = Uuid::new_v4();
    let garbage =
        serde_json::json!({"saga_id": saga, "type": "charge_payment", "amount_cents": "lots"});
    world
        .send_raw(
            saga,
            (Step::Payment, Phase::Do),
            &format!("{saga}.payment.do"),
            &garbage,
        )
        .await;
    let worker = world.start(Step::Payment);
    let replies = world.replies(1).await;
    assert_eq!(
        replies.len(),
        1,
        "the saga hears of it, rather than hanging"
    );
    match &replies[0].outcome {
        Outcome::StepFailed { reason } => {
            assert_eq!(reason.code, RefusalCode::Undeliverable, "{reason}");
            assert!(reason.message.contains("malformed body"), "{reason}");
        }
        other => panic!("expected a failure, got {other:?}"),
    }
    let dlq = world.js.get_stream("CHECKOUT_DLQ").await.unwrap();
    let letter = dlq
        .get_last_raw_message_by_subject(&subjects::dead_letter("checkout.cmd.payment.charge"))
        .await
        .unwrap();
    let reason = letter
        .headers
        .get(REASON)
        .map(|v| v.as_str().to_owned())
        .unwrap_or_default();
    assert!(reason.contains("malformed body"), "{reason}");
    let pending = world
        .js
        .get_stream("CHECKOUT_COMMANDS")
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .state
        .messages;
    assert_eq!(pending, 0, "terminated, not looping");
    let charges: i64 = sqlx::query_scalar("SELECT count(*) FROM payment.ledger")
        .fetch_one(&world.pool)
        .await
        .unwrap();
    assert_eq!(charges, 0);
    world.finish(vec![worker]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_undo_is_dead_lettered_and_never_refused() {
    let world = World::new().await;
    let saga = Uuid::new_v4();
    let garbage = serde_json::json!({"saga_id": "not a uuid", "type": "refund_payment"});
    world
        .send_raw(
            saga,
            (Step::Payment, Phase::Undo),
            &format!("{saga}.payment.undo"),
            &garbage,
        )
        .await;
    let worker = world.start(Step::Payment);
    let dlq = world.js.get_stream("CHECKOUT_DLQ").await.unwrap();
    let subject = subjects::dead_letter("checkout.cmd.payment.refund");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let letter = loop {
        if let Ok(letter) = dlq.get_last_raw_message_by_subject(&subject).await {
            break letter;
        }
        assert!(tokio::time::Instant::now() < deadline, "no dead letter");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let reason = letter.headers.get(REASON).map(|v| v.as_str().to_owned());
    assert!(
        reason
            .as_deref()
            .is_some_and(|r| r.contains("malformed body")),
        "{reason:?}"
    );
    // An undo has no refusal: the saga keeps re-sending it and flags itself for an operator.
    let replies = world.replies_during(Duration::from_millis(1_500)).await;
    assert!(replies.is_empty(), "an undo is never refused: {replies:?}");
    world.finish(vec![worker]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undo_that_fails_transiently_is_retried_until_it_succeeds_once() {
    let world = World::new().await;
    world.migrate(Step::Inventory).await;
    let worker = world.start(Step::Inventory);
    let saga = Uuid::new_v4();
    world
        .send(saga, reserve(5), &format!("{saga}.inventory.do"))
        .await;
    assert_eq!(world.replies(1).await.len(), 1);
    assert_eq!(world.stock().await, 5);
    // The database fails the release: the table it needs is briefly gone.
    world
        .execute("ALTER TABLE inventory.stock RENAME TO stock_away")
        .await;
    world
        .send(
            saga,
            Command::ReleaseInventory,
            &format!("{saga}.inventory.undo"),
        )
        .await;
    let during = world.replies_during(Duration::from_millis(1_500)).await;
    assert!(
        during.is_empty(),
        "no reply while the undo cannot be done: {during:?}"
    );
    let delivered = world
        .consumer("inventory")
        .await
        .info()
        .await
        .unwrap()
        .delivered
        .consumer_sequence;
    assert!(
        delivered >= 3,
        "the release was tried, and again: {delivered}"
    );
    assert!(
        !world
            .processed("inventory", &format!("{saga}.inventory.undo"))
            .await,
        "a failure to act is stored nowhere"
    );
    world
        .execute("ALTER TABLE inventory.stock_away RENAME TO stock")
        .await;
    let replies = world.replies(1).await;
    assert_eq!(replies.len(), 1);
    assert!(matches!(replies[0].outcome, Outcome::StepSucceeded { .. }));
    assert_eq!(world.stock().await, 10, "released exactly once");
    world.finish(vec![worker]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_charge_racing_its_refund_never_leaves_money_taken() {
    let world = World::new().await;
    world.migrate(Step::Payment).await;
    let handler = handler::Handler::new(Step::Payment, Faults::default());
    // Two queues, as two worker instances have: charges and refunds race on separate
    // connections, and each queue batches its own.
    let (charges, refunds) = (Db::new(world.pool.clone()), Db::new(world.pool.clone()));
    let sagas: Vec<Uuid> = (0..40).map(|_| Uuid::new_v4()).collect();
    let mut races = Vec::new();
    for saga in &sagas {
        let charge = Command::ChargePayment {
            customer_id: "c".into(),
            payment_token: "tok_visa".into(),
            amount_cents: 500,
        };
        for command in [charge, Command::RefundPayment] {
            let db = match command {
                Command::RefundPayment => refunds.clone(),
                _ => charges.clone(),
            };
            let (handler, saga) = (handler.clone(), *saga);
            races.push(tokio::spawn(async move {
                let (step, phase) = command.step_phase();
                let envelope = Envelope::command(saga, step, phase);
                handler::apply_once(&db, &handler, &envelope, &command)
                    .await
                    .unwrap()
            }));
        }
    }
    for race in races {
        race.await.unwrap();
    }
    for saga in sagas {
        let net: i64 = sqlx::query_scalar(
            "SELECT coalesce(sum(CASE kind WHEN 'charge' THEN amount_cents ELSE -amount_cents END), 0)::bigint \
             FROM payment.ledger WHERE saga_id = $1",
        )
        .bind(saga)
        .fetch_one(&world.pool)
        .await
        .unwrap();
        assert_eq!(
            net, 0,
            "saga {saga}: a refund raced its charge and money stayed taken"
        );
    }
    world.finish(vec![]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_survives_its_database_connections_being_dropped() {
    let world = World::new().await;
    let worker = world.start(Step::Inventory);
    let first = Uuid::new_v4();
    world
        .send(first, reserve(1), &format!("{first}.inventory.do"))
        .await;
    assert_eq!(world.replies(1).await.len(), 1);
    // Every connection of the worker's pool is cut, as a database restart would.
    let cut: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()) t",
    )
    .fetch_one(&world.pool)
    .await
    .unwrap();
    assert!(cut > 0, "the worker held connections");
    let second = Uuid::new_v4();
    world
        .send(second, reserve(2), &format!("{second}.inventory.do"))
        .await;
    let replies = world.replies(1).await;
    assert_eq!(replies.len(), 1, "the worker reconnects and goes on");
    assert!(matches!(replies[0].outcome, Outcome::StepSucceeded { .. }));
    assert_eq!(world.stock().await, 7);
    world.finish(vec![worker]).await;
}
