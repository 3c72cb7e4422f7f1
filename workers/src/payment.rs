//! Payment: charges a card once per saga and refunds it once. Declines are deterministic:
//! the token `tok_decline` always, and a configured fraction of sagas by id.

use crate::config::Faults;
use crate::error::ApplyError;
use checkout_shared::messages::{Refusal, RefusalCode};
use sqlx::PgConnection;
use uuid::Uuid;

/// The token that is always declined, for demos and tests.
pub const DECLINED_TOKEN: &str = "tok_decline";

/// What to charge.
#[derive(Debug)]
pub struct Charge<'a> {
    /// Who pays.
    pub customer_id: &'a str,
    /// How.
    pub payment_token: &'a str,
    /// How much.
    pub amount_cents: &'a i64,
}

/// Charges the card, or declines.
#[tracing::instrument(name = "payment charge", skip_all, fields(otel.kind = "internal"))]
pub async fn charge(
    conn: &mut PgConnection,
    saga_id: Uuid,
    charge: &Charge<'_>,
    faults: &Faults,
) -> Result<Uuid, ApplyError> {
    if charge.payment_token == DECLINED_TOKEN {
        return Err(ApplyError::Refused(Refusal::new(
            RefusalCode::CardDeclined,
            "card declined (token tok_decline)",
        )));
    }
    if Faults::hits(faults.decline_rate, saga_id, 1) {
        return Err(ApplyError::Refused(Refusal::new(
            RefusalCode::CardDeclined,
            "card declined (injected decline rate)",
        )));
    }
    let refunded: Option<i64> = sqlx::query_scalar(
        "SELECT amount_cents FROM payment.ledger WHERE saga_id = $1 AND kind = 'refund'",
    )
    .bind(saga_id)
    .fetch_optional(&mut *conn)
    .await?;
    if refunded.is_some() {
        // The refund came first and left its zero-amount tombstone.
        return Err(ApplyError::Refused(Refusal::new(
            RefusalCode::CancelledBeforeDone,
            "payment already voided for this saga",
        )));
    }
    let entry_id = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO payment.ledger (saga_id, kind, entry_id, customer_id, amount_cents) \
         VALUES ($1, 'charge', $2, $3, $4)",
    )
    .bind(saga_id)
    .bind(entry_id)
    .bind(charge.customer_id)
    .bind(charge.amount_cents)
    .execute(&mut *conn)
    .await?;
    Ok(entry_id)
}

/// Refunds the charge; with no charge, records a zero refund so a late charge is refused.
#[tracing::instrument(name = "payment refund", skip_all, fields(otel.kind = "internal"))]
pub async fn refund(conn: &mut PgConnection, saga_id: Uuid) -> Result<Option<Uuid>, ApplyError> {
    let charged: Option<(String, i64)> = sqlx::query_as(
        "SELECT customer_id, amount_cents FROM payment.ledger \
         WHERE saga_id = $1 AND kind = 'charge' FOR UPDATE",
    )
    .bind(saga_id)
    .fetch_optional(&mut *conn)
    .await?;
    let (customer_id, amount) = charged.unwrap_or_else(|| (String::new(), 0));
    let entry_id = Uuid::new_v4();
    let inserted = sqlx::query(
        "INSERT INTO payment.ledger (saga_id, kind, entry_id, customer_id, amount_cents) \
         VALUES ($1, 'refund', $2, $3, $4) ON CONFLICT (saga_id, kind) DO NOTHING",
    )
    .bind(saga_id)
    .bind(entry_id)
    .bind(customer_id)
    .bind(amount)
    .execute(&mut *conn)
    .await?;
    Ok((inserted.rows_affected() == 1 && amount > 0).then_some(entry_id))
}
