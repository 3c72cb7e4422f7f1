//! Notification: sends the order confirmation (simulated), once per order, after the checkout
//! has completed. Fire-and-forget for the saga: a confirmation that cannot be sent is retried
//! here within [`Faults::notification_attempts`], then refused as `notification_failed`,
//! which the orchestrator records and counts without touching the checkout.
//!
//! ```text
//!  send ─▶ already confirmed? ─yes─▶ the same confirmation (one per order)
//!            │ no
//!            ▼
//!  attempt 1 ─fail─▶ wait ─▶ attempt 2 ─fail─▶ ... ─▶ refused: notification_failed
//!     │ ok                      │ ok
//!     └──────────┬──────────────┘
//!                ▼
//!        confirmation row (with the processed-message row, one transaction)
//! ```

use crate::config::Faults;
use crate::error::ApplyError;
use checkout_shared::messages::{Refusal, RefusalCode};
use checkout_shared::messaging::mark_error;
use sqlx::PgConnection;
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

/// Sends the confirmation of `saga_id`'s order, or refuses once every attempt failed.
#[tracing::instrument(name = "notification send", skip_all, fields(otel.kind = "internal"))]
pub async fn send(
    conn: &mut PgConnection,
    saga_id: Uuid,
    confirmation: &Confirmation<'_>,
    faults: &Faults,
) -> Result<Uuid, ApplyError> {
    let existing: Option<Uuid> = sqlx::query_scalar(
        "SELECT confirmation_id FROM notification.confirmations WHERE saga_id = $1",
    )
    .bind(saga_id)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(id) = existing {
        // Sent before (its processed-message row was cleared): the customer has it already.
        return Ok(id);
    }
    let attempts = faults.notification_attempts.max(1);
    let mut sent_on = None;
    for attempt in 1..=attempts {
        if deliver(saga_id, attempt, faults).await {
            sent_on = Some(attempt);
            break;
        }
        if attempt < attempts {
            // Doubling pauses, so a mail server that is briefly down gets a chance.
            tokio::time::sleep(faults.notification_backoff * 2u32.pow(attempt - 1)).await;
        }
    }
    let Some(attempt) = sent_on else {
        return Err(ApplyError::Refused(Refusal::new(
            RefusalCode::NotificationFailed,
            format!("confirmation not sent after {attempts} attempts"),
        )));
    };
    let confirmation_id = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO notification.confirmations \
         (saga_id, confirmation_id, order_id, customer_id, attempts) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(saga_id)
    .bind(confirmation_id)
    .bind(confirmation.order_id)
    .bind(confirmation.customer_id)
    .bind(attempt as i32)
    .execute(&mut *conn)
    .await?;
    Ok(confirmation_id)
}

/// One attempt at the (simulated) mail service, as a client span of its own: whether it got
/// through. The failure is chosen by saga id and attempt, so a run is reproducible.
async fn deliver(saga_id: Uuid, attempt: u32, faults: &Faults) -> bool {
    let span = tracing::info_span!(
        "notification deliver",
        otel.kind = "client",
        notification.attempt = attempt,
        notification.channel = "email",
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
