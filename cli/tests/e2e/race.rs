//! Many checkouts racing for little stock: inventory never oversells.

use crate::support::{Options, Stack, request};
use futures::future::join_all;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_checkouts_race_for_fifty_units() {
    let options = Options {
        seed_stock: "SKU-HOT=50".into(),
        ..Options::default()
    };
    let stack = Stack::start(options).await;
    let client = stack.client().await;
    let checkouts: Vec<_> = (0..200)
        .map(|i| request(&format!("cust-{i}"), "tok_visa", &[("SKU-HOT", 1)], 1_000))
        .collect();
    let outcomes = join_all(checkouts.iter().map(|c| stack.checkout(&client, c))).await;
    let completed = outcomes.iter().filter(|(o, _)| o == "completed").count();
    let failed = outcomes.iter().filter(|(o, _)| o == "failed").count();
    assert_eq!(completed, 50, "exactly the stock completes");
    assert_eq!(
        failed, 150,
        "every other saga is refused at its first step, with nothing to undo"
    );
    assert_eq!(
        stack.stock("SKU-HOT").await,
        0,
        "stock never negative, all sold"
    );
    let orders: i64 =
        sqlx::query_scalar("SELECT count(*) FROM orders.orders WHERE status = 'created'")
            .fetch_one(&stack.pool)
            .await
            .unwrap();
    let charges: i64 =
        sqlx::query_scalar("SELECT count(*) FROM payment.ledger WHERE kind = 'charge'")
            .fetch_one(&stack.pool)
            .await
            .unwrap();
    assert_eq!((orders, charges), (50, 50));
    stack.stop().await;
}
