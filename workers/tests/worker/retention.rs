//! Retention: processed-message records past the retention go, recent ones stay, and a command
//! delivered again after its record went still has one effect (the business tables refuse
//! a second one).

use crate::support::{World, reserve};
use checkout_shared::Step;
use checkout_shared::messages::{Command, Outcome, RefusalCode};
use checkout_shared::retention::Retention;
use checkout_workers::retention::prune_pass;
use std::time::Duration;
use uuid::Uuid;

const WEEK: Retention = Retention {
    keep: Duration::from_secs(7 * 86_400),
    interval: Duration::from_secs(60),
};

/// Prunes `kind`'s records until `key`'s is gone (bounded: 50 passes, 100 ms apart). A pass
/// skips rows another transaction holds (`SKIP LOCKED`), and the worker under test prunes too
/// (its own pruner's first pass can come late on a loaded machine and take the record first):
/// what matters is that the record went, not which pass took it.
async fn prune_until_gone(world: &World, kind: Step, key: &str) -> bool {
    for _ in 0..50 {
        prune_pass(&world.pool, kind, WEEK).await.unwrap();
        if !world.processed(kind.schema(), key).await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Makes `key`'s record in `schema` look `days` old.
async fn age(world: &World, schema: &str, key: &str, days: u32) {
    let sql = format!(
        "UPDATE {schema}.processed_messages \
         SET processed_at = now() - make_interval(days => $2) WHERE action_key = $1"
    );
    let aged = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(key)
        .bind(days as i32)
        .execute(&world.pool)
        .await
        .unwrap()
        .rows_affected();
    assert_eq!(aged, 1, "{schema} has a record for {key}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_past_the_retention_go_and_recent_ones_stay_in_every_schema() {
    let world = World::new().await;
    for &kind in Step::ALL {
        world.migrate(kind).await;
        let schema = kind.schema();
        for (key, days) in [("old", 8), ("older", 30), ("recent", 6), ("new", 0)] {
            world
                .execute(&format!(
                    "INSERT INTO {schema}.processed_messages (action_key, reply, processed_at) \
                     VALUES ('{key}', '{{}}', now() - make_interval(days => {days}))"
                ))
                .await;
        }
        assert_eq!(
            prune_pass(&world.pool, kind, WEEK).await.unwrap(),
            2,
            "{schema}"
        );
        for (key, kept) in [
            ("old", false),
            ("older", false),
            ("recent", true),
            ("new", true),
        ] {
            assert_eq!(world.processed(schema, key).await, kept, "{schema}.{key}");
        }
        assert_eq!(
            prune_pass(&world.pool, kind, WEEK).await.unwrap(),
            0,
            "{schema}"
        );
    }
    world.finish(vec![]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reservation_delivered_again_after_its_record_was_pruned_reserves_nothing_more() {
    let world = World::new().await;
    let worker = world.start(Step::Inventory);
    let saga = Uuid::new_v4();
    let key = format!("{saga}.inventory.do");
    world.send(saga, reserve(3), &key).await;
    let first = world.replies(1).await;
    assert!(
        matches!(first[0].outcome, Outcome::StepSucceeded { .. }),
        "{first:?}"
    );
    assert_eq!(world.stock().await, 7);

    age(&world, "inventory", &key, 8).await;
    assert!(prune_until_gone(&world, Step::Inventory, &key).await);
    // The same action again, past JetStream's duplicate window (a new message id).
    world.send(saga, reserve(3), &format!("{key}.late")).await;
    let again = world.replies(1).await;
    // Decided afresh from the reservation: refused as done, not reserved twice.
    match &again[0].outcome {
        Outcome::StepFailed { reason } => assert_eq!(reason.code, RefusalCode::AlreadyDone),
        other => panic!("a second reservation: {other:?}"),
    }
    assert_eq!(world.stock().await, 7, "reserved once");
    world.finish(vec![worker]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_charge_delivered_again_after_its_record_was_pruned_leaves_one_charge() {
    let world = World::new().await;
    let worker = world.start(Step::Payment);
    let saga = Uuid::new_v4();
    let key = format!("{saga}.payment.do");
    let charge = || Command::ChargePayment {
        customer_id: "c-1".into(),
        payment_token: "tok_visa".into(),
        amount_cents: 1_250,
    };
    world.send(saga, charge(), &key).await;
    let first = world.replies(1).await;
    assert!(
        matches!(first[0].outcome, Outcome::StepSucceeded { .. }),
        "{first:?}"
    );

    age(&world, "payment", &key, 8).await;
    assert!(prune_until_gone(&world, Step::Payment, &key).await);
    world.send(saga, charge(), &format!("{key}.late")).await;
    // The ledger is the record: the charge already there is the answer, not a second one.
    assert_eq!(world.replies(1).await, first, "the first charge's reply");
    let charges: Vec<(String, i64)> = sqlx::query_as(
        "SELECT kind, amount_cents FROM payment.ledger WHERE saga_id = $1 ORDER BY kind",
    )
    .bind(saga)
    .fetch_all(&world.pool)
    .await
    .unwrap();
    assert_eq!(charges, vec![("charge".to_owned(), 1_250)], "charged once");
    world.finish(vec![worker]).await;
}
