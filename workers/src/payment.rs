//! Payment: charges a card once per saga (through the simulated [`crate::card_gateway`]) and
//! refunds it once. Declines are deterministic: test tokens always (`tok_decline`,
//! `tok_insufficient_funds`, `tok_expired`), and a configured fraction of sagas by id.

use crate::calls::{self, Db};
use crate::card_gateway::{self, Authorization};
use crate::config::Faults;
use crate::handler::{Decided, Once};
use checkout_shared::messages::Refusal;
use serde_json::json;
use uuid::Uuid;

/// The token that is always declined as `card_declined`, for demos and tests.
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

/// Charges the card, or declines. The gateway decides first (its own span, `payment gateway
/// charge`); one statement, `payment.charge_once`, then replays a stored reply, or refuses a
/// charge whose refund came first, or writes the ledger entry under the gateway's charge id,
/// or stores the decline, and records the reply.
///
/// A duplicate delivery asks the (simulated, deterministic) gateway again before the
/// statement finds the stored reply, which wins: the ledger and the reply stay those of the
/// first delivery.
#[tracing::instrument(name = "payment charge", skip_all, fields(otel.kind = "internal"))]
pub async fn charge(
    db: &Db,
    once: &Once<'_>,
    charge: &Charge<'_>,
    faults: &Faults,
) -> Result<Decided, sqlx::Error> {
    let (entry_id, declined) =
        match card_gateway::authorize(charge.payment_token, once.saga_id, faults).await {
            Authorization::Approved(charge_id) => (charge_id, None),
            // The message names the code only: the token is a secret, and this text travels
            // into spans and logs.
            Authorization::Declined(code) => (
                Uuid::new_v4(),
                Some(Refusal::new(
                    code,
                    format!("declined by the payment gateway ({code})"),
                )),
            ),
        };
    let args = json!([
        once.key,
        once.saga_id,
        once.reply,
        declined,
        entry_id,
        charge.customer_id,
        charge.amount_cents,
    ]);
    db.call(&calls::CHARGE, args).await
}

/// Refunds the charge; with no charge, records a zero refund so a late charge is refused
/// (one statement: `payment.refund_once`).
#[tracing::instrument(name = "payment refund", skip_all, fields(otel.kind = "internal"))]
pub async fn refund(db: &Db, once: &Once<'_>) -> Result<Decided, sqlx::Error> {
    let args = json!([once.key, once.saga_id, once.reply, Uuid::new_v4()]);
    db.call(&calls::REFUND, args).await
}
