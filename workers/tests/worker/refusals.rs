//! Refusals decided inside the one statement of an action: a refused cart leaves every stock
//! row as it was, even the lines checked (and fitting) before the line that refused it.

use crate::support::World;
use checkout_shared::messages::{Command, LineItem, Outcome, RefusalCode};
use checkout_shared::{Envelope, Step};
use checkout_workers::calls::Db;
use checkout_workers::{Faults, handler};
use uuid::Uuid;

fn line(sku: &str, quantity: i32) -> LineItem {
    LineItem {
        sku: sku.into(),
        quantity,
        unit_price_cents: None,
    }
}

async fn reserve(world: &World, items: Vec<LineItem>) -> Outcome {
    let handler = handler::Handler::new(Step::Inventory, Faults::default());
    let command = Command::ReserveInventory { items };
    let (step, phase) = command.step_phase();
    let envelope = Envelope::command(Uuid::new_v4(), step, phase);
    handler::apply_once(&Db::new(world.pool.clone()), &handler, &envelope, &command)
        .await
        .unwrap()
        .outcome
}

fn refusal(outcome: &Outcome) -> Option<RefusalCode> {
    match outcome {
        Outcome::StepFailed { reason } => Some(reason.code),
        Outcome::StepSucceeded { .. } => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_cart_changes_no_stock_and_a_sku_listed_twice_counts_twice() {
    let world = World::new().await;
    world.migrate(Step::Inventory).await;
    // SKU-A (10 units) sorts first and fits; the unknown SKU after it refuses the whole cart.
    let unknown = reserve(&world, vec![line("SKU-ZZ", 1), line("SKU-A", 4)]).await;
    assert_eq!(
        refusal(&unknown),
        Some(RefusalCode::UnknownSku),
        "{unknown:?}"
    );
    assert_eq!(world.stock().await, 10, "nothing held for a refused cart");
    // Each line fits alone; together they do not.
    let short = reserve(&world, vec![line("SKU-A", 6), line("SKU-A", 6)]).await;
    assert_eq!(refusal(&short), Some(RefusalCode::OutOfStock), "{short:?}");
    assert_eq!(world.stock().await, 10);
    let fits = reserve(&world, vec![line("SKU-A", 4), line("SKU-A", 5)]).await;
    assert_eq!(refusal(&fits), None, "{fits:?}");
    assert_eq!(world.stock().await, 1);
    world.finish(vec![]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_statement_reports_each_lines_decision_for_its_span() {
    let world = World::new().await;
    world.migrate(Step::Inventory).await;
    let saga = Uuid::new_v4();
    let items = serde_json::json!([
        {"sku": "SKU-A", "quantity": 6},
        {"sku": "SKU-A", "quantity": 6},
        {"sku": "SKU-ZZ", "quantity": 1},
    ]);
    let reply = serde_json::json!({"saga_id": saga, "step": "inventory", "phase": "action"});
    let (lines, replayed): (serde_json::Value, bool) =
        sqlx::query_as("SELECT lines, replayed FROM inventory.reserve_once($1, $2, $3, $4, $5)")
            .bind(format!("{saga}.inventory.action"))
            .bind(saga)
            .bind(&reply)
            .bind(&items)
            .bind(Uuid::new_v4())
            .fetch_one(&world.pool)
            .await
            .unwrap();
    assert!(!replayed);
    // The second SKU-A line can take what the first leaves; the unknown SKU has no stock.
    assert_eq!(
        lines,
        serde_json::json!([
            {"sku": "SKU-A", "requested": 6, "available": 10, "ok": true},
            {"sku": "SKU-A", "requested": 6, "available": 4, "ok": false},
            {"sku": "SKU-ZZ", "requested": 1, "available": null, "ok": false},
        ])
    );
    assert_eq!(world.stock().await, 10, "a refused cart holds nothing");
    // Its duplicate replays the stored refusal and decides no line again.
    let (lines, replayed): (Option<serde_json::Value>, bool) =
        sqlx::query_as("SELECT lines, replayed FROM inventory.reserve_once($1, $2, $3, $4, $5)")
            .bind(format!("{saga}.inventory.action"))
            .bind(saga)
            .bind(&reply)
            .bind(&items)
            .bind(Uuid::new_v4())
            .fetch_one(&world.pool)
            .await
            .unwrap();
    assert!(replayed);
    assert_eq!(lines, None);
    world.finish(vec![]).await;
}
