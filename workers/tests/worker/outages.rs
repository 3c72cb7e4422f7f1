//! A worker's table unusable for longer than a command's whole delivery budget (the bug of
//! issue 6: a refund's failure was stored as its reply, and the customer stayed charged).
//!
//! The worker runs with a delivery budget of a fraction of a second; the table is renamed
//! away until JetStream announces that it gave the command up. Meanwhile nothing may be
//! replied or stored. Once the table is back, the command sent afresh under a new message id
//! (as the orchestrator's deadline does) must decide: an undo undoes the effect; an action
//! that got no decision is undone first, and its late copy is refused by the tombstone.

use crate::support::{World, given_up, reserve, short_budget, wait_given_up};
use checkout_shared::messages::{Command, LineItem, Outcome, RefusalCode, Reply};
use checkout_shared::{Envelope, Phase, Step};
use std::time::Duration;
use uuid::Uuid;

/// What an outage of one worker kind breaks, and how its effect is measured.
struct Case {
    kind: Step,
    /// The table its do and undo read first, as `schema.table`.
    table: &'static str,
    action: Command,
    undo: Command,
    /// The action's effect, as [`effect`] measures it.
    effect: i64,
}

fn case(kind: Step) -> Case {
    match kind {
        Step::Inventory => Case {
            kind,
            table: "inventory.reservations",
            action: reserve(4),
            undo: Command::ReleaseInventory,
            effect: 4,
        },
        Step::Payment => Case {
            kind,
            table: "payment.ledger",
            action: Command::ChargePayment {
                customer_id: "c".into(),
                payment_token: "tok_visa".into(),
                amount_cents: 500,
            },
            undo: Command::RefundPayment,
            effect: 500,
        },
        Step::Order => Case {
            kind,
            table: "orders.orders",
            action: Command::CreateOrder {
                customer_id: "c".into(),
                items: vec![LineItem {
                    sku: "SKU-A".into(),
                    quantity: 1,
                    unit_price_cents: None,
                }],
                amount_cents: 500,
            },
            undo: Command::CancelOrder,
            effect: 1,
        },
        // These cases are about an undo outlasting its budget; a fire-and-forget step has none.
        Step::Notification => panic!("notification has no undo; no outage case"),
    }
}

/// How much of the action's effect is in place for `saga`: units held, cents charged net of
/// refunds, orders standing.
async fn effect(world: &World, kind: Step, saga: Uuid) -> i64 {
    if kind == Step::Inventory {
        // Only this saga reserves in its test, so the stock taken is its holding.
        return i64::from(10 - world.stock().await);
    }
    let sql = if kind == Step::Payment {
        "SELECT coalesce(sum(CASE kind WHEN 'charge' THEN amount_cents ELSE -amount_cents END), \
         0)::bigint FROM payment.ledger WHERE saga_id = $1"
    } else {
        "SELECT count(*) FROM orders.orders WHERE saga_id = $1 AND status = 'created'"
    };
    sqlx::query_scalar(sql)
        .bind(saga)
        .fetch_one(&world.pool)
        .await
        .unwrap()
}

/// A worker of `kind` whose commands are given up on after a fraction of a second.
fn start_short(world: &World, kind: Step) -> tokio::task::JoinHandle<()> {
    let mut config = world.config(kind);
    config.consumer = Some(short_budget(kind));
    world.start_with(config)
}

fn key(saga: Uuid, kind: Step, phase: Phase) -> String {
    Envelope::command(saga, kind, phase).action_key()
}

/// Sends `command` while `table` is unusable and waits until JetStream has given it up; checks
/// that nothing was replied or stored meanwhile, then restores the table.
async fn outlast_the_budget(world: &World, case: &Case, saga: Uuid, command: Command) {
    let (_, phase) = command.step_phase();
    let (schema, name) = case.table.split_once('.').unwrap();
    world
        .execute(&format!(
            "ALTER TABLE {} RENAME TO {name}_broken",
            case.table
        ))
        .await;
    let mut advisories = given_up(world, case.kind.as_str()).await;
    world
        .send(saga, command, &key(saga, case.kind, phase))
        .await;
    let deliveries = wait_given_up(&mut advisories).await;
    assert_eq!(deliveries, 3, "every delivery was tried, and given up on");
    let during = world.replies_during(Duration::from_millis(500)).await;
    assert!(
        during.is_empty(),
        "no reply while the worker cannot act: {during:?}"
    );
    assert!(
        !world.processed(schema, &key(saga, case.kind, phase)).await,
        "a failure to act is stored nowhere"
    );
    world
        .execute(&format!(
            "ALTER TABLE {schema}.{name}_broken RENAME TO {name}"
        ))
        .await;
}

fn outcome(replies: &[Reply]) -> &Outcome {
    assert_eq!(replies.len(), 1, "{replies:?}");
    &replies[0].outcome
}

async fn an_undo_outlasting_its_delivery_budget_is_done_once_resent(kind: Step) {
    let world = World::new().await;
    let worker = start_short(&world, kind);
    let case = case(kind);
    let saga = Uuid::new_v4();
    world
        .send(saga, case.action.clone(), &key(saga, kind, Phase::Do))
        .await;
    assert!(matches!(
        outcome(&world.replies(1).await),
        Outcome::StepSucceeded { reference: Some(_) }
    ));
    assert_eq!(effect(&world, kind, saga).await, case.effect);
    outlast_the_budget(&world, &case, saga, case.undo.clone()).await;
    assert_eq!(
        effect(&world, kind, saga).await,
        case.effect,
        "nothing undone yet"
    );
    // The orchestrator's deadline sends the undo afresh, under a new message id.
    let resent = format!("{}.r1", key(saga, kind, Phase::Undo));
    world.send(saga, case.undo.clone(), &resent).await;
    assert!(matches!(
        outcome(&world.replies(1).await),
        Outcome::StepSucceeded { reference: Some(_) }
    ));
    assert_eq!(effect(&world, kind, saga).await, 0, "the effect is undone");
    world.finish(vec![worker]).await;
}

async fn an_action_outlasting_its_delivery_budget_is_undone_never_half_done(kind: Step) {
    let world = World::new().await;
    // Migrated first, so the table is there to break before the worker has started.
    world.migrate(kind).await;
    let worker = start_short(&world, kind);
    let case = case(kind);
    let saga = Uuid::new_v4();
    outlast_the_budget(&world, &case, saga, case.action.clone()).await;
    assert_eq!(effect(&world, kind, saga).await, 0);
    // The action got no decision, so the saga undoes it: the undo arrives first and leaves
    // its tombstone.
    world
        .send(saga, case.undo.clone(), &key(saga, kind, Phase::Undo))
        .await;
    assert!(matches!(
        outcome(&world.replies(1).await),
        Outcome::StepSucceeded { reference: None }
    ));
    // A late copy of the action, sent afresh, is refused: it can no longer take effect.
    let late = format!("{}.r1", key(saga, kind, Phase::Do));
    world.send(saga, case.action.clone(), &late).await;
    match outcome(&world.replies(1).await) {
        Outcome::StepFailed { reason } => {
            assert_eq!(reason.code, RefusalCode::CancelledBeforeDone, "{reason}")
        }
        other => panic!("expected the late action refused, got {other:?}"),
    }
    assert_eq!(effect(&world, kind, saga).await, 0, "never half done");
    world.finish(vec![worker]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_outlasting_its_delivery_budget_is_never_refused_and_releases_once_resent() {
    an_undo_outlasting_its_delivery_budget_is_done_once_resent(Step::Inventory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refund_outlasting_its_delivery_budget_is_never_refused_and_refunds_once_resent() {
    an_undo_outlasting_its_delivery_budget_is_done_once_resent(Step::Payment).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_outlasting_its_delivery_budget_is_never_refused_and_cancels_once_resent() {
    an_undo_outlasting_its_delivery_budget_is_done_once_resent(Step::Order).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reservation_outlasting_its_delivery_budget_is_undone_and_its_late_copy_refused() {
    an_action_outlasting_its_delivery_budget_is_undone_never_half_done(Step::Inventory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_charge_outlasting_its_delivery_budget_is_undone_and_its_late_copy_refused() {
    an_action_outlasting_its_delivery_budget_is_undone_never_half_done(Step::Payment).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_outlasting_its_delivery_budget_is_undone_and_its_late_copy_refused() {
    an_action_outlasting_its_delivery_budget_is_undone_never_half_done(Step::Order).await;
}

/// A refund refusal that an earlier version stored after an outage is forgotten when the
/// worker's schema is upgraded, so the orchestrator's retries refund the customer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undo_refusal_stored_by_an_earlier_version_is_forgotten_on_upgrade() {
    let world = World::new().await;
    let kind = Step::Payment;
    let case = case(kind);
    let saga = Uuid::new_v4();
    world.migrate(kind).await;
    let worker = world.start(kind);
    world
        .send(saga, case.action.clone(), &key(saga, kind, Phase::Do))
        .await;
    assert_eq!(world.replies(1).await.len(), 1);
    assert_eq!(effect(&world, kind, saga).await, case.effect);
    // What the old version stored on an undo's last delivery while its table was missing.
    let undo_key = key(saga, kind, Phase::Undo);
    let old_reply = serde_json::json!({
        "saga_id": saga, "step": "payment", "phase": "undo", "outcome": "step_failed",
        "reason": "gave up after 10 deliveries: relation \"payment.ledger\" does not exist",
    });
    sqlx::query("INSERT INTO payment.processed_messages (action_key, reply) VALUES ($1, $2)")
        .bind(&undo_key)
        .bind(old_reply)
        .execute(&world.pool)
        .await
        .unwrap();
    // The upgrade: the migration that forgets refused undos runs against that row.
    world
        .execute("DELETE FROM payment._sqlx_migrations WHERE version = 9")
        .await;
    world.migrate(kind).await;
    assert!(!world.processed("payment", &undo_key).await, "forgotten");
    world
        .send(saga, case.undo.clone(), &format!("{undo_key}.r7"))
        .await;
    assert!(matches!(
        outcome(&world.replies(1).await),
        Outcome::StepSucceeded { .. }
    ));
    assert_eq!(
        effect(&world, kind, saga).await,
        0,
        "the customer is refunded"
    );
    world.finish(vec![worker]).await;
}
