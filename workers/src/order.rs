//! Orders: records the order once per saga, and cancels it. A customer id starting with
//! [`FAILING_CUSTOMER_PREFIX`], or a configured fraction of sagas, is refused.

use crate::calls::{self, Db};
use crate::config::Faults;
use crate::handler::{Decided, Once};
use checkout_shared::messages::{LineItem, Refusal, RefusalCode};
use serde_json::json;
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
    db: &Db,
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
    let args = json!([
        once.key,
        once.saga_id,
        once.reply,
        refused,
        Uuid::new_v4(),
        order.customer_id,
        order.items,
        order.amount_cents,
    ]);
    db.call(&calls::CREATE_ORDER, args).await
}

/// Cancels the order; with none, leaves a tombstone so that a late create is refused.
#[tracing::instrument(name = "order cancel", skip_all, fields(otel.kind = "internal"))]
pub async fn cancel(db: &Db, once: &Once<'_>) -> Result<Decided, sqlx::Error> {
    let args = json!([once.key, once.saga_id, once.reply, Uuid::new_v4()]);
    db.call(&calls::CANCEL_ORDER, args).await
}
