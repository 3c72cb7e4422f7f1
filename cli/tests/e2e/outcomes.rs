//! Each way a checkout ends, and what it leaves in each service's tables.

use crate::support::{Options, Stack, request};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkout_completes_with_one_charge_and_one_order() {
    let stack = Stack::start(Options::default()).await;
    let client = stack.client().await;
    let checkout = request(
        "cust-1",
        "tok_visa",
        &[("SKU-MUG", 2), ("SKU-TEE", 1)],
        4_500,
    );
    let (outcome, _) = stack.checkout(&client, &checkout).await;
    assert_eq!(outcome, "completed");
    assert_eq!(stack.stock("SKU-MUG").await, 998);
    assert_eq!(stack.stock("SKU-TEE").await, 999);
    assert_eq!(
        stack.ledger(checkout.checkout_id).await,
        vec![("charge".into(), 4_500)]
    );
    assert_eq!(
        stack.orders(checkout.checkout_id).await,
        vec!["created".to_owned()]
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declined_payment_is_compensated_and_nothing_is_charged() {
    let stack = Stack::start(Options::default()).await;
    let client = stack.client().await;
    let checkout = request("cust-2", "tok_decline", &[("SKU-MUG", 3)], 900);
    let (outcome, _) = stack.checkout(&client, &checkout).await;
    assert_eq!(outcome, "compensated");
    assert_eq!(stack.stock("SKU-MUG").await, 1000, "stock restored");
    assert!(
        stack
            .ledger(checkout.checkout_id)
            .await
            .iter()
            .all(|(kind, _)| kind != "charge")
    );
    assert!(stack.orders(checkout.checkout_id).await.is_empty());
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_order_refunds_the_charge_and_restores_the_stock() {
    let stack = Stack::start(Options::default()).await;
    let client = stack.client().await;
    let checkout = request("order-fails-3", "tok_visa", &[("SKU-TEE", 4)], 1_200);
    let (outcome, _) = stack.checkout(&client, &checkout).await;
    assert_eq!(outcome, "compensated");
    assert_eq!(stack.stock("SKU-TEE").await, 1000, "stock restored");
    assert_eq!(
        stack.ledger(checkout.checkout_id).await,
        vec![("charge".into(), 1_200), ("refund".into(), 1_200)]
    );
    assert!(
        stack
            .orders(checkout.checkout_id)
            .await
            .iter()
            .all(|s| s != "created")
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_stock_fails_at_the_first_step_with_nothing_to_undo_and_charges_nothing() {
    let stack = Stack::start(Options::default()).await;
    let client = stack.client().await;
    let checkout = request(
        "cust-4",
        "tok_visa",
        &[("SKU-MUG", 1), ("SKU-RARE", 4)],
        5_000,
    );
    let (outcome, _) = stack.checkout(&client, &checkout).await;
    assert_eq!(
        outcome, "failed",
        "refused at the first step: nothing was compensated"
    );
    assert_eq!(stack.stock("SKU-RARE").await, 3);
    assert_eq!(
        stack.stock("SKU-MUG").await,
        1000,
        "a partial reservation is rolled back"
    );
    assert!(
        stack.ledger(checkout.checkout_id).await.is_empty(),
        "payment never asked"
    );
    assert!(stack.orders(checkout.checkout_id).await.is_empty());
    stack.stop().await;
}
