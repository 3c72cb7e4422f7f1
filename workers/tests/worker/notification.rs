//! The confirmation is sent once per order, however often its command comes.

use crate::support::World;
use checkout_shared::Step;
use checkout_shared::messages::{Command, Outcome};
use uuid::Uuid;

fn confirm(order_id: Uuid) -> Command {
    Command::SendNotification {
        customer_id: "cust-n".into(),
        order_id: Some(order_id),
        amount_cents: 600,
        currency: "EUR".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirmation_delivered_again_or_sent_afresh_is_sent_once() {
    let world = World::new().await;
    let worker = world.start(Step::Notification);
    let saga = Uuid::new_v4();
    let order = Uuid::new_v4();
    let key = format!("{saga}.notification.do");
    world.send(saga, confirm(order), &key).await;
    let first = world.replies(1).await;
    let Outcome::StepSucceeded {
        reference: Some(confirmation),
    } = first[0].outcome
    else {
        panic!("sent: {first:?}");
    };
    // Sent afresh (a deadline's re-send has a new message id): the stored reply.
    world.send(saga, confirm(order), &format!("{key}.r1")).await;
    assert_eq!(world.replies(1).await, first);
    // Even with its processed-message row gone, the confirmation row keeps it to one.
    world
        .execute("DELETE FROM notification.processed_messages")
        .await;
    world.send(saga, confirm(order), &format!("{key}.r2")).await;
    assert_eq!(world.replies(1).await, first, "the same confirmation");
    let rows: Vec<(Uuid, i32)> = sqlx::query_as(
        "SELECT confirmation_id, attempts FROM notification.confirmations WHERE saga_id = $1",
    )
    .bind(saga)
    .fetch_all(&world.pool)
    .await
    .unwrap();
    assert_eq!(
        rows,
        vec![(confirmation, 1)],
        "one confirmation, sent at once"
    );
    world.finish(vec![worker]).await;
}
