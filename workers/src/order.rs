//! Orders: records the order once per saga, and cancels it. A customer id starting with
//! [`FAILING_CUSTOMER_PREFIX`], or a configured fraction of sagas, is refused.

use crate::config::Faults;
use crate::error::ApplyError;
use checkout_shared::messages::{LineItem, Refusal, RefusalCode};
use sqlx::PgConnection;
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

/// Creates the order, or refuses.
#[tracing::instrument(name = "order create", skip_all, fields(otel.kind = "internal"))]
pub async fn create(
    conn: &mut PgConnection,
    saga_id: Uuid,
    order: &NewOrder<'_>,
    faults: &Faults,
) -> Result<Uuid, ApplyError> {
    if order.customer_id.starts_with(FAILING_CUSTOMER_PREFIX) {
        return Err(ApplyError::Refused(Refusal::new(
            RefusalCode::OrderRefused,
            "order refused (failing test customer)",
        )));
    }
    if Faults::hits(faults.order_fail_rate, saga_id, 2) {
        return Err(ApplyError::Refused(Refusal::new(
            RefusalCode::OrderRefused,
            "order refused (injected failure rate)",
        )));
    }
    let existing: Option<String> =
        sqlx::query_scalar("SELECT status FROM orders.orders WHERE saga_id = $1")
            .bind(saga_id)
            .fetch_optional(&mut *conn)
            .await?;
    if let Some(status) = existing {
        // 'void' is the tombstone of a cancel that came first.
        let code = match status.as_str() {
            "created" => RefusalCode::AlreadyDone,
            _ => RefusalCode::CancelledBeforeDone,
        };
        return Err(ApplyError::Refused(Refusal::new(
            code,
            format!("order already {status} for this saga"),
        )));
    }
    let order_id = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO orders.orders (saga_id, order_id, customer_id, items, amount_cents, status) \
         VALUES ($1, $2, $3, $4, $5, 'created')",
    )
    .bind(saga_id)
    .bind(order_id)
    .bind(order.customer_id)
    .bind(sqlx::types::Json(order.items))
    .bind(order.amount_cents)
    .execute(&mut *conn)
    .await?;
    Ok(order_id)
}

/// Cancels the order; with none, leaves a tombstone so that a late create is refused.
#[tracing::instrument(name = "order cancel", skip_all, fields(otel.kind = "internal"))]
pub async fn cancel(conn: &mut PgConnection, saga_id: Uuid) -> Result<Option<Uuid>, ApplyError> {
    let cancelled: Option<Uuid> = sqlx::query_scalar(
        "UPDATE orders.orders SET status = 'cancelled', cancelled_at = now() \
         WHERE saga_id = $1 AND status = 'created' RETURNING order_id",
    )
    .bind(saga_id)
    .fetch_optional(&mut *conn)
    .await?;
    if cancelled.is_none() {
        sqlx::query(
            "INSERT INTO orders.orders \
             (saga_id, order_id, customer_id, items, amount_cents, status) \
             VALUES ($1, $2, '', '[]', 0, 'void') ON CONFLICT (saga_id) DO NOTHING",
        )
        .bind(saga_id)
        .bind(Uuid::new_v4())
        .execute(&mut *conn)
        .await?;
    }
    Ok(cancelled)
}
