//! Orders: records the order once per saga, and cancels it. A customer id starting with
//! [`FAILING_CUSTOMER_PREFIX`], or a configured fraction of sagas, is refused.

use crate::config::Faults;
use crate::handler::{Decided, Once};
use checkout_shared::messages::{LineItem, Refusal, RefusalCode};
use sqlx::PgPool;
use uuid::Uuid;

/// Customers whose orders are always refused, for demos and tests.
pub const FAILING_CUSTOMER_PREFIX: &str = "order-fails";

/// What to record.
#[derive(Debug)]
pub struct NewOrder<'a> {
    /// Who ordered.
    pub customer_id: &'a str,
    /// What.
    pub items: &'a [LineItem],
    /// For how much.
    pub amount_cents: i64,
}

/// Creates the order, or refuses (one statement: `orders.create_once`).
#[tracing::instrument(name = "order create", skip_all, fields(otel.kind = "internal"))]
pub async fn create(
    pool: &PgPool,
    once: &Once<'_>,
    order: &NewOrder<'_>,
    faults: &Faults,
) -> Result<Decided, sqlx::Error> {
    // Decided here, stored by the statement like any decision (after its replay check).
    let refused = if order.customer_id.starts_with(FAILING_CUSTOMER_PREFIX) {
        Some(Refusal::new(
            RefusalCode::OrderRefused,
            "order refused (failing test customer)",
        ))
    } else if Faults::hits(faults.order_fail_rate, once.saga_id, 2) {
        Some(Refusal::new(
            RefusalCode::OrderRefused,
            "order refused (injected failure rate)",
        ))
    } else {
        None
    };
    sqlx::query_as("SELECT reply, replayed FROM orders.create_once($1, $2, $3, $4, $5, $6, $7, $8)")
        .bind(once.key)
        .bind(once.saga_id)
        .bind(&once.reply)
        .bind(refused.as_ref().map(sqlx::types::Json))
        .bind(Uuid::new_v4())
        .bind(order.customer_id)
        .bind(sqlx::types::Json(order.items))
        .bind(order.amount_cents)
        .fetch_one(pool)
        .await
}

/// Cancels the order; with none, leaves a tombstone so that a late create is refused.
#[tracing::instrument(name = "order cancel", skip_all, fields(otel.kind = "internal"))]
pub async fn cancel(pool: &PgPool, once: &Once<'_>) -> Result<Decided, sqlx::Error> {
    sqlx::query_as("SELECT reply, replayed FROM orders.cancel_once($1, $2, $3, $4)")
        .bind(once.key)
        .bind(once.saga_id)
        .bind(&once.reply)
        .bind(Uuid::new_v4())
        .fetch_one(pool)
        .await
}
