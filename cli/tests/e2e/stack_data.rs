//! What tests put into a stack and read out of it: checkout requests; stock, ledger, orders.

use crate::support::Stack;
use checkout_shared::messages::{CheckoutRequested, LineItem};
use uuid::Uuid;

impl Stack {
    /// Available stock of a SKU.
    pub async fn stock(&self, sku: &str) -> i32 {
        sqlx::query_scalar("SELECT available FROM inventory.stock WHERE sku = $1")
            .bind(sku)
            .fetch_one(&self.pool)
            .await
            .expect("stock")
    }

    /// Ledger entries of a saga: (kind, amount).
    pub async fn ledger(&self, saga_id: Uuid) -> Vec<(String, i64)> {
        sqlx::query_as(
            "SELECT kind, amount_cents FROM payment.ledger WHERE saga_id = $1 ORDER BY kind",
        )
        .bind(saga_id)
        .fetch_all(&self.pool)
        .await
        .expect("ledger")
    }

    /// Order statuses of a saga.
    pub async fn orders(&self, saga_id: Uuid) -> Vec<String> {
        sqlx::query_scalar("SELECT status FROM orders.orders WHERE saga_id = $1")
            .bind(saga_id)
            .fetch_all(&self.pool)
            .await
            .expect("orders")
    }
}

/// A checkout of the given lines.
pub fn request(
    customer: &str,
    token: &str,
    items: &[(&str, i32)],
    amount_cents: i64,
) -> CheckoutRequested {
    CheckoutRequested {
        checkout_id: Uuid::new_v4(),
        customer_id: customer.to_owned(),
        items: items
            .iter()
            .map(|(sku, quantity)| LineItem {
                sku: (*sku).to_owned(),
                quantity: *quantity,
                unit_price_cents: None,
            })
            .collect(),
        payment_token: token.to_owned(),
        amount_cents,
        currency: String::new(),
    }
}
