//! Notification: sends the order confirmation (simulated), once per order, after the checkout
//! has completed. Fire-and-forget for the saga: a confirmation that cannot be sent is retried
//! here within [`Faults::notification_attempts`], then refused as `notification_failed`,
//! which the orchestrator records and counts without touching the checkout.
//!
//! ```text
//!  send ─▶ sent before? ─yes─▶ the same reply, or the same confirmation (one per order)
//!            │ no
//!            ▼
//!  attempt 1 ─fail─▶ wait ─▶ attempt 2 ─fail─▶ ... ─▶ refused: notification_failed
//!     │ ok                      │ ok
//!     └──────────┬──────────────┘
//!                ▼
//!        confirmation row and processed-message row (one statement)
//! ```
//!
//! Two statements (`notification.sent_before`, `notification.confirm_once`), with the mail
//! service called between them and outside any transaction. The mail service takes the saga
//! id as its idempotency key, so two deliveries racing past the first statement still send
//! one mail; the second statement keeps the first confirmation recorded.

use crate::calls::{self, Db};
use crate::config::Faults;
use crate::handler::{Decided, Once};
use checkout_shared::messages::{Refusal, RefusalCode};
use checkout_shared::messaging::mark_error;
use serde_json::json;
use std::time::Duration;
use tracing::Instrument;
use uuid::Uuid;

/// What to confirm.
#[derive(Debug)]
pub struct Confirmation<'a> {
    /// To whom.
    pub customer_id: &'a str,
    /// Which order.
    pub order_id: Option<Uuid>,
}

/// Sends the confirmation of `once.saga_id`'s order, or refuses once every attempt failed.
#[tracing::instrument(name = "notification send", skip_all, fields(otel.kind = "internal"))]
pub async fn send(
    db: &Db,
    once: &Once<'_>,
    confirmation: &Confirmation<'_>,
    faults: &Faults,
) -> Result<Decided, sqlx::Error> {
    let (stored, sent): (
        Option<sqlx::types::Json<checkout_shared::messages::Reply>>,
        Option<Uuid>,
    ) = sqlx::query_as("SELECT reply, confirmation_id FROM notification.sent_before($1, $2)")
        .bind(once.key)
        .bind(once.saga_id)
        .fetch_one(db.pool())
        .await?;
    if let Some(reply) = stored {
        return Ok(Decided {
            reply,
            replayed: true,
            lines: None,
        });
    }
    // Sent before (its processed-message row was cleared): the customer has it already, and
    // the statement below answers with that confirmation.
    let (attempt, refusal) = if sent.is_some() {
        (0, None)
    } else {
        attempt_all(once.saga_id, faults).await
    };
    let args = json!([
        once.key,
        once.saga_id,
        once.reply,
        refusal,
        Uuid::new_v4(),
        confirmation.order_id,
        confirmation.customer_id,
        attempt,
    ]);
    db.call(&calls::CONFIRM, args).await
}

/// Tries the mail service up to `notification_attempts` times: the attempt that got through,
/// or the refusal once none did.
async fn attempt_all(saga_id: Uuid, faults: &Faults) -> (u32, Option<Refusal>) {
    let attempts = faults.notification_attempts.max(1);
    for attempt in 1..=attempts {
        if deliver(saga_id, attempt, faults).await {
            return (attempt, None);
        }
        if attempt < attempts {
            // Doubling pauses, so a mail server that is briefly down gets a chance.
            tokio::time::sleep(faults.notification_backoff * 2u32.pow(attempt - 1)).await;
        }
    }
    let refusal = Refusal::new(
        RefusalCode::NotificationFailed,
        format!("confirmation not sent after {attempts} attempts"),
    );
    (attempts, Some(refusal))
}

/// One attempt at the (simulated) mail service, as a client span of its own: whether it got
/// through. The failure is chosen by saga id and attempt, so a run is reproducible.
async fn deliver(saga_id: Uuid, attempt: u32, faults: &Faults) -> bool {
    let span = tracing::info_span!(
        "notification deliver",
        otel.kind = "client",
        notification.attempt = attempt,
        notification.channel = "email",
        notification.idempotency_key = %saga_id,
        otel.status_code = tracing::field::Empty,
        otel.status_message = tracing::field::Empty,
    );
    async {
        if !faults.notification_latency.is_zero() {
            tokio::time::sleep(faults.notification_latency).await;
        }
        // Salts 3..=7 pick independent bits of the id for the first attempts.
        let failed = Faults::hits(
            faults.notification_fail_rate,
            saga_id,
            3 + (attempt - 1) % 5,
        );
        if failed {
            mark_error(&tracing::Span::current(), "mail service unavailable");
            tracing::warn!(attempt, "confirmation attempt failed");
        }
        !failed
    }
    .instrument(span)
    .await
}

/// The pause before the second attempt when none is configured.
pub const DEFAULT_BACKOFF: Duration = Duration::from_millis(50);
